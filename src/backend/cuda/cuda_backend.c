/* cuda_backend.c — lmx_backend_ops over the CUDA kernels of cuda_kernels.h (see cuda_backend.h):
 * creation, destruction and the ops table. The ops live by concern in cuda_backend_mem.c (buffers,
 * weight uploads), cuda_backend_ops.c (compute) and cuda_backend_step.c (step graphs, device
 * sampling); their shared state is cuda_backend_internal.h.
 *
 * Ops run in order on one backend-owned blocking stream. KV caches come from kv_buf_alloc in fp16
 * (fp32 with lmx_cuda_options.f32_kv; kv_elem_bytes reports the size); rope_qk_store and attention
 * read the buffer's element type.
 */
#include "backend/cuda/cuda_backend.h"

#include "util/env.h"
#include "util/error.h"

#ifdef LMX_HAVE_CUDA
#include <stdlib.h>

#include "backend/cuda/cuda_backend_internal.h"
#include "util/log.h"

static void cu_destroy(lmx_backend *be) {
    cuda_backend *c = CB(be);
    if (!c) return;
    lmx_cuda_stream_sync(c->stream);
    lmx_cub_graphs_clear(c);
    lmx_cuda_stream_destroy(c->stream);
    lmx_cub_stage_free(&c->step_stage);
    lmx_cub_stage_free(&c->ids);
    lmx_cub_stage_free(&c->pos);
    lmx_cub_stage_free(&c->map);
    free(c->map_tmp);
    lmx_cuda_free(c->mx_scratch);
    lmx_cuda_free(c->d_ws);
    lmx_cuda_sampler_destroy(c->sampler);
    if (c->counts.captured || c->counts.redone)
        LMX_LOG_I("cuda backend: steps captured into graphs %llu, replayed %llu, redone eagerly %llu",
                  (unsigned long long)c->counts.captured, (unsigned long long)c->counts.replayed,
                  (unsigned long long)c->counts.redone);
    uint64_t ub = atomic_load(&c->up_bytes);
    if (ub)
        LMX_LOG_I("cuda backend: uploaded %.3f GB (%s): %.3f s in copies, %.3f s in cudaMalloc", ub / 1e9,
                  c->staged_any ? "pinned staging" : "pageable", atomic_load(&c->up_copy_ns) / 1e9,
                  atomic_load(&c->up_malloc_ns) / 1e9);
    lmx_cuda_uploader_destroy(c->up);
    pthread_mutex_destroy(&c->up_lock);
    pthread_mutex_destroy(&c->comm_mu);
    lmx_cuda_free(c->d_cnt);
    lmx_cuda_free(c->d_gws);
    for (int i = 0; i < c->n_retired; i++) lmx_cuda_free(c->retired[i]);
    free(c->retired);
    lmx_cub_rows_free(c);
    lmx_cub_comm_free(c);
    free(c);
}

static const lmx_backend_ops CUDA_OPS = {
    .name = "cuda",
    .destroy = cu_destroy,
    .buf_alloc = lmx_cub_buf_alloc,
    .buf_free = lmx_cub_buf_free,
    .buf_write = lmx_cub_buf_write,
    .buf_read = lmx_cub_buf_read,
    .buf_copy = lmx_cub_buf_copy,
    .weight_upload = lmx_cub_weight_upload,
    .weight_free = lmx_cub_weight_free,
    .matmul = lmx_cub_matmul,
    .embed = lmx_cub_embed,
    .rmsnorm = lmx_cub_rmsnorm,
    .attention = lmx_cub_attention,
    .act_mul = lmx_cub_act_mul,
    .add = lmx_cub_add,
    .softcap = lmx_cub_softcap,
    .step_begin = lmx_cub_step_begin,
    .step_end = lmx_cub_step_end,
    .matmul_add = lmx_cub_matmul_add,
    .rope_qk_store = lmx_cub_rope_qk_store,
    .sample = lmx_cub_sample,
    .sample_result = lmx_cub_sample_result,
    .buf_view = lmx_cub_buf_view,
    .weight_upload_fused = lmx_cub_weight_upload_fused,
    .prefill_chunk = 512, /* one GEMM per weight for a 512-token prompt (quantized weights expand once) */
    .upload_end = lmx_cub_upload_end,
    .kv_buf_alloc = lmx_cub_kv_buf_alloc,
    .kv_elem_bytes = lmx_cub_kv_elem_bytes,
    .act_mul_split = lmx_cub_act_mul_split,
    .paged_kv = true,
    .sample_rows = lmx_cub_sample_rows,
    .sample_rows_result = lmx_cub_sample_rows_result,
    .weight_upload_experts = lmx_cub_weight_upload_experts,
    .moe_route = lmx_cub_moe_route,
    .moe_matmul = lmx_cub_moe_matmul,
    .moe_gate_up = lmx_cub_moe_gate_up,
    .moe_combine = lmx_cub_moe_combine,
    .all_reduce_sum = lmx_cub_all_reduce_sum,
    .all_gather = lmx_cub_all_gather,
    .upload_copies = true, /* weight bytes are in pinned staging (or copied pageable) when an upload returns */
};

lmx_cuda_options lmx_cuda_options_default(void) {
    return (lmx_cuda_options){.graphs = lmx_env_flag(LMX_ENV_CUDA_GRAPH), .f32_kv = false, .pageable = false};
}

lmx_cuda_graph_stats lmx_backend_cuda_graph_stats(const lmx_backend *be) {
    if (!be || be->ops != &CUDA_OPS) return (lmx_cuda_graph_stats){0};
    return ((const cuda_backend *)be)->counts;
}

lmx_status lmx_backend_cuda_create(int device, lmx_backend **out) {
    const lmx_cuda_options o = lmx_cuda_options_default();
    return lmx_backend_cuda_create_ex(device, &o, out);
}

lmx_status lmx_backend_cuda_create_ex(int device, const lmx_cuda_options *opt, lmx_backend **out) {
    if (!out || !opt) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: NULL output or options");
    *out = NULL;
    int n = 0;
    if (!lmx_cuda_available(&n)) return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "no usable CUDA device");
    if (device < 0 || device >= n)
        return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "no CUDA device %d (%d present)", device, n);
    lmx_status st = lmx_cuda_set_device(device);
    if (st != LMX_OK) return st;
    cuda_backend *c = calloc(1, sizeof *c);
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend");
    c->base.ops = &CUDA_OPS;
    c->device = device;
    pthread_mutex_init(&c->up_lock, NULL);
    pthread_mutex_init(&c->comm_mu, NULL);
    atomic_init(&c->up_bytes, 0);
    atomic_init(&c->up_malloc_ns, 0);
    atomic_init(&c->up_copy_ns, 0);
    c->staging = !opt->pageable;
    st = lmx_cuda_stream_create_blocking(&c->stream);
    if (st != LMX_OK) {
        lmx_cuda_stream_destroy(c->stream);
        pthread_mutex_destroy(&c->up_lock);
        pthread_mutex_destroy(&c->comm_mu);
        free(c);
        return lmx_error_prefix(st, "cuda backend");
    }
    c->graphs = opt->graphs;
    /* fp16 KV cache: half the attention bytes and KV memory of fp32 (bf16's coarser rounding failed a
     * GPU golden, fp16 passes them all); fp32 keeps the exact path for the CPU-vs-GPU tests */
    c->kv_dt = opt->f32_kv ? LMX_DTYPE_F32 : LMX_DTYPE_F16;
    lmx_cuda_device_info info;
    if (lmx_cuda_get_device_info(device, &info) == LMX_OK)
        LMX_LOG_I("cuda backend: device %d: %s (cc %d.%d, %d SMs, %.1f GiB)", device, info.name, info.cc_major,
                  info.cc_minor, info.sm_count, info.total_mem / 1073741824.0);
    *out = &c->base;
    return LMX_OK;
}

#else /* no CUDA in this build */

lmx_cuda_options lmx_cuda_options_default(void) {
    return (lmx_cuda_options){.graphs = lmx_env_flag(LMX_ENV_CUDA_GRAPH), .f32_kv = false, .pageable = false};
}

lmx_cuda_graph_stats lmx_backend_cuda_graph_stats(const lmx_backend *be) {
    (void)be;
    return (lmx_cuda_graph_stats){0};
}

lmx_status lmx_backend_cuda_create(int device, lmx_backend **out) {
    if (out) *out = NULL;
    return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "CUDA device %d: this build has no CUDA backend", device);
}

lmx_status lmx_backend_cuda_create_ex(int device, const lmx_cuda_options *opt, lmx_backend **out) {
    (void)opt;
    return lmx_backend_cuda_create(device, out);
}

lmx_status lmx_cuda_comms_create(int n, void **comms) {
    (void)comms;
    return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "tensor parallel over %d GPUs: this build has no CUDA backend", n);
}

void lmx_cuda_comm_destroy(void *comm) { (void)comm; }

lmx_status lmx_backend_cuda_create_rank(int device, int n_ranks, void *comm, lmx_backend **out) {
    (void)comm;
    (void)n_ranks;
    return lmx_backend_cuda_create(device, out);
}

void lmx_backend_cuda_comm_abort(lmx_backend *be) { (void)be; }

#endif
