/* cuda_kernels.h — the CUDA backend's kernels and device helpers, as a plain C API.
 *
 * Usable from C: no CUDA header is needed to include this file. The functions exist only in builds
 * with LMX_HAVE_CUDA defined, except the probe (lmx_cuda_available, lmx_cuda_get_device_info),
 * which a build without CUDA also provides (always "no device"). Callers guard other uses with
 * #ifdef LMX_HAVE_CUDA.
 *
 * Conventions
 *   - Pointers named d_* / documented "device" point to device memory (lmx_cuda_malloc or an arena).
 *   - Activations are fp32 on the device; weights are dense F32/F16/BF16 or MLX affine-quantized
 *     (uint32 words, LSB-first bitstream per row, per-group scales and biases of F16/BF16/F32).
 *   - Every kernel wrapper is asynchronous on `stream` (NULL = the legacy default stream) and returns
 *     LMX_OK, LMX_ERR_INVALID_ARGUMENT (bad shape/dtype, with a detail), or LMX_ERR_INFERENCE_FAILURE
 *     when the launch failed. Launch errors are checked; execution errors surface at the next sync.
 *   - Nothing here allocates per call (workspaces are passed in), so wrappers are graph-capturable.
 * Ownership: device memory from lmx_cuda_malloc is the caller's (lmx_cuda_free); an arena owns its
 * block. Thread-safety: the wrappers are reentrant; one stream must be used by one thread at a time.
 */
#ifndef LMX_BACKEND_CUDA_KERNELS_H
#define LMX_BACKEND_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lmx.h"
#include "formats/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *lmx_cuda_stream; /* a cudaStream_t; NULL = default stream */

/* ---- probe (present in every build) ---- */

/* True if the CUDA runtime finds at least one device. Without a driver or device it returns false
 * and logs the reason at debug level; never aborts. *n_devices (optional) receives the count. */
bool lmx_cuda_available(int *n_devices);

typedef struct lmx_cuda_device_info {
    char name[256];
    int cc_major, cc_minor;  /* compute capability, e.g. 9.0 */
    int sm_count;            /* multiprocessors */
    size_t total_mem;        /* bytes of device memory */
    size_t l2_bytes;
    size_t smem_per_block_optin; /* max dynamic shared memory per block after opt-in */
} lmx_cuda_device_info;

/* Fills *out for `device`. LMX_ERR_GPU_NOT_AVAILABLE when there is no such device or no CUDA. */
lmx_status lmx_cuda_get_device_info(int device, lmx_cuda_device_info *out);

/* Utilisation over NVML's last sample period, and device memory as NVML sees it (all processes). */
typedef struct lmx_cuda_util {
    unsigned gpu_percent;    /* time a kernel was running */
    unsigned mem_bw_percent; /* time device memory was read or written */
    unsigned long long mem_used, mem_total; /* bytes */
} lmx_cuda_util;
/* NVML is loaded with dlopen at first use (never a link-time dependency). LMX_ERR_GPU_NOT_AVAILABLE
 * without NVML, without the device, or in a build without CUDA. */
lmx_status lmx_cuda_utilization(int device, lmx_cuda_util *out);

#ifdef LMX_HAVE_CUDA
/* PCI bus id of CUDA device `device` ("0000:1B:00.0"). */
lmx_status lmx_cuda_pci_bus_id(int device, char *buf, size_t size);

/* ---- NCCL (cuda_nccl.cu: libnccl.so.2 loaded with dlopen; LMX_ERR_UNSUPPORTED without it) ---- */
/* communicators of devices 0 .. n-1 into comms[n] (ncclCommInitAll; NCCL_NVLS_ENABLE=0 first) */
lmx_status lmx_cuda_nccl_init_all(int n, void **comms);
/* d[n] = the sum over the ranks' d[n], in place, on `stream` */
lmx_status lmx_cuda_nccl_all_reduce_sum(void *comm, float *d, size_t n, lmx_cuda_stream stream);
/* dst[r * n, (r + 1) * n) = rank r's src[n], on `stream` */
lmx_status lmx_cuda_nccl_all_gather(void *comm, const float *src, float *dst, size_t n, lmx_cuda_stream stream);
void lmx_cuda_nccl_destroy(void *comm); /* NULL-safe */
void lmx_cuda_nccl_abort(void *comm);   /* NULL-safe; any thread */

/* ---- device, memory, streams ---- */
lmx_status lmx_cuda_set_device(int device);
lmx_status lmx_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* cudaMalloc; failure -> LMX_ERR_OUT_OF_MEMORY (so a cache can evict and retry). bytes==0 -> NULL. */
lmx_status lmx_cuda_malloc(void **d_ptr, size_t bytes);
void lmx_cuda_free(void *d_ptr); /* NULL-safe */
/* Pinned host memory for staging copies. */
lmx_status lmx_cuda_malloc_host(void **ptr, size_t bytes);
void lmx_cuda_free_host(void *ptr); /* NULL-safe */
lmx_status lmx_cuda_memcpy_h2d(void *d_dst, const void *src, size_t bytes, lmx_cuda_stream stream);
lmx_status lmx_cuda_memcpy_d2h(void *dst, const void *d_src, size_t bytes, lmx_cuda_stream stream);
lmx_status lmx_cuda_memcpy_d2d(void *d_dst, const void *d_src, size_t bytes, lmx_cuda_stream stream);
lmx_status lmx_cuda_memset(void *d_dst, int value, size_t bytes, lmx_cuda_stream stream);
lmx_status lmx_cuda_stream_create(lmx_cuda_stream *out);
void lmx_cuda_stream_destroy(lmx_cuda_stream stream); /* NULL-safe */
/* Waits for all work on `stream`; reports kernel execution errors. */
lmx_status lmx_cuda_stream_sync(lmx_cuda_stream stream);

/* CUDA graphs by stream capture (cuda_device.cu). A blocking stream (synchronizes with the legacy
 * stream); capture in thread-local mode; capture_end instantiates the captured work into *exec_out
 * when keep (else discards it, e.g. after a failed op), clearing any capture error. */
lmx_status lmx_cuda_stream_create_blocking(lmx_cuda_stream *out);
lmx_status lmx_cuda_capture_begin(lmx_cuda_stream stream);
lmx_status lmx_cuda_capture_end(lmx_cuda_stream stream, bool keep, void **exec_out);
lmx_status lmx_cuda_graph_launch(void *exec, lmx_cuda_stream stream);
void lmx_cuda_graph_destroy(void *exec); /* NULL-safe */

/* A device-memory arena: one cudaMalloc, bump allocation, reset as a whole. Not thread-safe. */
typedef struct lmx_cuda_arena lmx_cuda_arena;
lmx_status lmx_cuda_arena_create(size_t capacity, lmx_cuda_arena **out);
void lmx_cuda_arena_destroy(lmx_cuda_arena *arena); /* NULL-safe; frees the block */
/* Alignment: a power of two (0 = 256). LMX_ERR_OUT_OF_MEMORY when the arena is full. */
lmx_status lmx_cuda_arena_alloc(lmx_cuda_arena *arena, size_t bytes, size_t align, void **d_out);
void lmx_cuda_arena_reset(lmx_cuda_arena *arena);
size_t lmx_cuda_arena_used(const lmx_cuda_arena *arena);
size_t lmx_cuda_arena_capacity(const lmx_cuda_arena *arena);

/* ---- matrices ---- */

/* A weight matrix W of logical shape [n, k] (out x in) in device memory, applied as y = x·W^T.
 *   bits == 0: dense; w is [n, k] of `dtype` (F32, F16 or BF16).
 *   bits in {2,3,4,5,6,8}: MLX affine; w is uint32 [n, k*bits/32] (LSB-first bitstream per row),
 *     scales and biases are [n, k/group_size] of `dtype` (F16, BF16 or F32), group_size in
 *     {32, 64, 128}, k a multiple of group_size; w[r,i] = scale*q + bias.
 *   bias: optional [n] of bias_dtype (Linear bias), NULL if none. */
typedef struct lmx_cuda_matrix {
    const void *w;
    const void *scales;
    const void *biases;
    const void *bias;
    lmx_dtype dtype;
    lmx_dtype bias_dtype;
    int bits;
    int group_size;
    int64_t n, k;
} lmx_cuda_matrix;

/* Checks the fields of *m (not the memory). LMX_ERR_INVALID_ARGUMENT with a detail otherwise. */
lmx_status lmx_cuda_matrix_check(const lmx_cuda_matrix *m);

/* y[b, :] = x[b, :]·W^T (+ bias) (+ y[b, :] if accumulate), for b < batch; fp32 accumulation.
 * x: device [batch, k] fp32; y: device [batch, n] fp32 (must not alias x). Any batch >= 1 (rows are
 * processed 4 at a time; for large batches this re-reads W per 4 rows: a correctness path for
 * prefill, not a fast GEMM). */
lmx_status lmx_cuda_gemv(const lmx_cuda_matrix *m, const float *x, float *y, int batch,
                         bool accumulate, lmx_cuda_stream stream);
/* The same with the number of warps that split K per row group of the scalar kernel forced (1, 2
 * or 4; 0 = the automatic choice, which includes the tensor-core kernel for batch-1 quantized
 * shapes where it measured faster; -1 = the tensor-core kernel wherever it applies, else automatic;
 * -2 = never the tensor-core kernel): a tuning knob for benchmarks. */
lmx_status lmx_cuda_gemv_ksplit(const lmx_cuda_matrix *m, const float *x, float *y, int batch,
                                bool accumulate, int ksplit, lmx_cuda_stream stream);

/* Batch-1 GEMV of 4-/8-bit MLX weights and dense bf16 weights on the tensor cores
 * (cuda_gemv_mma.cu): a persistent kernel streaming the weights through a register ring; fp16 mma
 * with exact q and x split into two fp16 parts per segment (bf16: weights as stored, x in three bf16
 * parts), fp32 accumulation (~fp32 accuracy; deterministic). lmx_cuda_gemv uses it automatically
 * (ksplit 0, batch 1) when lmx_cuda_gemv_mma_applies(); callable directly for benchmarks
 * (LMX_ERR_INVALID_ARGUMENT when it does not apply). */
bool lmx_cuda_gemv_mma_applies(const lmx_cuda_matrix *m, const float *x, int batch);
lmx_status lmx_cuda_gemv_mma(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                             lmx_cuda_stream stream);
/* All knobs of the batch-1 streaming kernel (0 = default for each): mode 1 = direct loads into a
 * register ring (4 super-steps per warp), 2 = staged: cp.async of whole 128-byte lines into a
 * per-warp shared-memory ring of `depth` units (3, 4 or 6; a unit is 16 rows x 128 B); warps per
 * block (4, 8, 16); blocks_per_sm (1..8) sizes the persistent grid. Knobs whose staging ring does not
 * fit next to the x fragments give LMX_ERR_INVALID_ARGUMENT (the defaults fall back to direct loads). */
typedef struct lmx_cuda_gemv_tune {
    int depth, warps, blocks_per_sm, mode;
} lmx_cuda_gemv_tune;
lmx_status lmx_cuda_gemv_mma_tuned(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                                   const lmx_cuda_gemv_tune *tune, lmx_cuda_stream stream);

/* y[t, :] = x[t, :]·W^T (+ bias) (+ y[t, :] if accumulate) for t < T on the tensor cores, for
 * prefill: x is rounded to bf16 and W dequantized to bf16 tile by tile, products accumulate in
 * fp32 (so expect bf16-level error, ~1e-3 relative, unlike lmx_cuda_gemv). Needs k % 32 == 0 and
 * x 16-byte aligned (LMX_ERR_INVALID_ARGUMENT otherwise). */
lmx_status lmx_cuda_gemm(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate,
                         lmx_cuda_stream stream);
/* The same choosing the implementation: 0 = automatic (cuBLASLt for T >= 16 when the library loads,
 * else the built-in mma.sync kernel), 1 = the built-in kernel, 2 = cuBLASLt only
 * (LMX_ERR_UNSUPPORTED without it). */
lmx_status lmx_cuda_gemm_ex(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate,
                            int impl, lmx_cuda_stream stream);
/* Few-row GEMM (cuda_gemm_small.cu; batched decode steps): y[t, :] = x[t, :]·W^T (+ bias) (+ y if
 * accumulate) for MLX affine 4/8-bit W (group 32/64/128, k % 128 == 0: lmx_cuda_gemm_small_supported),
 * the weights read once per 64 rows of x, dequantized to bf16(fmaf(s, q, b)) in registers, x rounded to
 * bf16, fp32 accumulation (bf16-level error like lmx_cuda_gemm). Split-K over about two blocks per SM
 * when a workspace of lmx_cuda_gemm_small_workspace(m, T) floats is given (ws NULL or smaller: one
 * slice, slower for short matrices); the slices are added in a fixed order (deterministic; a row's
 * result does not depend on T). x 16-byte aligned. LMX_ERR_UNSUPPORTED for other formats. */
bool lmx_cuda_gemm_small_supported(const lmx_cuda_matrix *m);
size_t lmx_cuda_gemm_small_workspace(const lmx_cuda_matrix *m, int T);
lmx_status lmx_cuda_gemm_small(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate, float *ws,
                               size_t ws_floats, lmx_cuda_stream stream);
/* cuBLASLt (dlopen'ed once per process, cuda_gemm_lt.cu; unavailable when the library does not load):
 * bf16 operands (weights expanded to a bf16 scratch, x rounded), fp32 accumulation and output. */
bool lmx_cuda_gemm_lt_available(void);
lmx_status lmx_cuda_gemm_lt(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate,
                            lmx_cuda_stream stream);
/* Expands W (any format lmx_cuda_gemm_lt takes) into a dense bf16 [n, k] at out (device, 16-byte
 * aligned): the prologue of lmx_cuda_gemm_lt, 8 elements per thread; output bf16_rn(fmaf(scale, q,
 * bias)) (dense: bf16_rn(w)). */
lmx_status lmx_cuda_expand_bf16(const lmx_cuda_matrix *m, void *out, lmx_cuda_stream stream);

/* ---- elementwise and normalisation (all fp32 activations) ---- */

/* y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * (one_plus_w ? 1 + w : w)
 * x, y: device [rows, dim] (may alias); w: device [dim] of w_dtype (F32/F16/BF16). */
lmx_status lmx_cuda_rmsnorm(const float *x, const void *w, lmx_dtype w_dtype, float eps,
                            bool one_plus_w, float *y, int rows, int dim, lmx_cuda_stream stream);

/* Rotary embedding, half-split (mlx traditional=False), in place on x [T, n_heads, head_dim]:
 * for i < rot_dims/2, the pair (x[i], x[i + rot_dims/2]) is rotated by angle
 * positions[t] * inv_freq[i], with cos and sin multiplied by mscale (1 = plain; yarn's attention
 * factor otherwise). Features >= rot_dims are untouched (partial rotary).
 * positions: device int32 [T]; inv_freq: device fp32 [rot_dims/2] (any scaling folded in: llama3,
 * linear `1/factor`, …). rot_dims even, <= head_dim. */
lmx_status lmx_cuda_rope(float *x, const int32_t *positions, const float *inv_freq, float mscale,
                         int T, int n_heads, int head_dim, int rot_dims, lmx_cuda_stream stream);

/* out[i] = silu(gate[i]) * up[i]   (out may alias gate or up) */
lmx_status lmx_cuda_swiglu(const float *gate, const float *up, float *out, int64_t n,
                           lmx_cuda_stream stream);
/* out[t, i] = act(gu[t, i]) * gu[t, inter + i] for gu [T, 2*inter] (one fused gate|up GEMM's output)
 * -> out [T, inter] (must not overlap gu); act 0 = silu (as lmx_cuda_swiglu), 1 = gelu_tanh (as
 * lmx_cuda_geglu_tanh): the same arithmetic as those on separate buffers (cuda_act.cu). */
lmx_status lmx_cuda_act_mul_split(const float *gu, float *out, int T, int64_t inter, int act,
                                  lmx_cuda_stream stream);
/* gpt-oss's clamped SwiGLU: g = min(gate[i], limit), u = clamp(up[i], -limit, limit),
 * out[i] = g * sigmoid(alpha * g) * (u + 1)   (out may alias gate or up) */
lmx_status lmx_cuda_swiglu_oai(const float *gate, const float *up, float *out, int64_t n, float alpha, float limit,
                               lmx_cuda_stream stream);
/* out[i] = gelu_tanh(gate[i]) * up[i] */
lmx_status lmx_cuda_geglu_tanh(const float *gate, const float *up, float *out, int64_t n,
                               lmx_cuda_stream stream);
/* y[i] += x[i] */
lmx_status lmx_cuda_add(float *y, const float *x, int64_t n, lmx_cuda_stream stream);
/* x[i] = cap * tanh(x[i] / cap)  (final-logit soft-capping) */
lmx_status lmx_cuda_softcap(float *x, int64_t n, float cap, lmx_cuda_stream stream);

/* out[t, :] = scale * row ids[t] of `table` (dense or quantized; table->n = vocab, ->k = hidden).
 * ids: device int32 [T] (out-of-range ids give zero rows); out: device fp32 [T, k]. */
lmx_status lmx_cuda_embed(const lmx_cuda_matrix *table, const int32_t *ids, int T, float scale,
                          float *out, lmx_cuda_stream stream);

/* ---- attention ---- */

/* Paged KV addressing (backend.h's lmx_kv_map with the arrays in device memory): position j of
 * query row t lives in slot tables[seq[t] * stride + (j >> block_shift)] << block_shift |
 * (j & (block_size - 1)). The attention launches also take the work split of the call's rows:
 *   rows:  decode kernel (lmx_cuda_attention_decode): the query rows it computes (others untouched);
 *          NULL = all T rows. Its workspace and counters then need only n_rows rows (pass n_rows as
 *          T to lmx_cuda_attention_workspace_floats / _decode_counters).
 *   tiles: prefill kernels (lmx_cuda_attention_prefill, lmx_cuda_flash_tc): (first row, row count
 *          <= 64) pairs, each tile rows of ONE sequence at consecutive positions; NULL = tiles of 64
 *          over all T rows (then all rows must belong to one sequence).
 * rope_qk_store reads only tables, seq, stride and block_shift; lmx_cuda_kv_store and the split-K
 * lmx_cuda_attention refuse a map (LMX_ERR_UNSUPPORTED). */
typedef struct lmx_cuda_kv_map {
    const int32_t *tables; /* device [n_seqs * stride] */
    const int32_t *seq;    /* device [T] */
    int stride;            /* table entries per sequence */
    int block_shift;       /* log2(block size), 4..8 */
    const int32_t *rows;   /* device [n_rows] or NULL */
    int n_rows;
    const int32_t *tiles;  /* device [n_tiles][2] or NULL */
    int n_tiles;
} lmx_cuda_kv_map;

/* KV cache layout: [n_kv_heads][capacity][head_dim] of kv_dtype (F32, F16 or BF16), K and V apart;
 * position j in slot j % capacity (a ring), or paged through `map`. */
typedef struct lmx_cuda_attn {
    int n_heads, n_kv_heads, head_dim; /* head_dim <= 256, multiple of 8; n_heads % n_kv_heads == 0 */
    int64_t capacity;                  /* positions the cache holds */
    lmx_dtype kv_dtype;
    float scale;                       /* score = scale * q·k, e.g. 1/sqrt(head_dim) */
    float softcap;                     /* 0 = off; else score = softcap * tanh(score / softcap) */
    int window;                        /* 0 = full causal; else keys in (pos - window, pos] */
    const lmx_cuda_kv_map *map;        /* NULL: ring slots; else paged (host struct, device arrays) */
    const float *sinks;                /* NULL = none; else device fp32 [n_heads]: head h's softmax
                                          denominator gains exp(sinks[h]) (a logit without a value) */
} lmx_cuda_attn;

/* Writes k, v ([T, n_kv_heads, head_dim] fp32) into the caches at positions[t] (< capacity). */
lmx_status lmx_cuda_kv_store(const lmx_cuda_attn *a, const float *k, const float *v,
                             void *k_cache, void *v_cache, const int32_t *positions, int T,
                             lmx_cuda_stream stream);

/* Floats of workspace lmx_cuda_attention needs for T queries. */
size_t lmx_cuda_attention_workspace_floats(const lmx_cuda_attn *a, int T);

/* Split-K (flash-decoding) attention: for each query t (at absolute position positions[t]) and head
 * h, out[t, h] = softmax over keys j in [max(0, pos - window + 1), pos] of score(q[t, h], K[g, j]),
 * times V[g, j], with g = h / (n_heads / n_kv_heads) (GQA). q, out: device fp32
 * [T, n_heads, head_dim]. max_len: a host-side bound on positions[t] + 1 (the cache length; it sets
 * the split count, keys past each query's position are ignored). workspace: device fp32 of
 * lmx_cuda_attention_workspace_floats(a, T). */
lmx_status lmx_cuda_attention(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                              const void *v_cache, const int32_t *positions, int T,
                              int64_t max_len, float *workspace, float *out,
                              lmx_cuda_stream stream);

/* Tiled (flash) attention for prefill, T >= 1 queries, same semantics as lmx_cuda_attention (GQA,
 * causal by positions[t], window, softcap, scale) with the cache read at slot j % capacity; no
 * workspace. kv_dtype F32: fp32 FMA kernel (exact to fp32 rounding); BF16 or F16: lmx_cuda_flash_tc
 * (tensor cores). Supported: those dtypes and head_dim a multiple of 16 up to 256 (check with
 * lmx_cuda_attention_prefill_supported; otherwise LMX_ERR_UNSUPPORTED and the caller uses
 * lmx_cuda_attention). The keys a query tile may see (from the smallest lo to the largest position of
 * its 64 rows) must all be present in the cache. q, out: device fp32 [T, n_heads, head_dim]. */
bool lmx_cuda_attention_prefill_supported(const lmx_cuda_attn *a);
lmx_status lmx_cuda_attention_prefill(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                      const void *v_cache, const int32_t *positions, int T, float *out,
                                      lmx_cuda_stream stream);

/* Tensor-core flash prefill over a BF16 or F16 cache (what lmx_cuda_attention_prefill runs for those):
 * Q rounded to the cache's type, S = QKᵀ and P·V on mma.sync m16n8k16 (bf16/fp16 operands, fp32
 * accumulation), P rounded likewise, softmax statistics in fp32. Supported: kv_dtype BF16 or F16,
 * head_dim a multiple of 16 in [16, 256] (and the shared memory granted). Same arguments as
 * lmx_cuda_attention_prefill. */
bool lmx_cuda_flash_tc_supported(const lmx_cuda_attn *a);
lmx_status lmx_cuda_flash_tc(const lmx_cuda_attn *a, const float *q, const void *k_cache, const void *v_cache,
                             const int32_t *positions, int T, float *out, lmx_cuda_stream stream);

/* Decode attention with the GQA group read once and the split merge fused into the same launch
 * (cuda_attn_decode.cu): same semantics and arguments as lmx_cuda_attention (max_len sizes the grid
 * only: pass the capacity for a replay-invariant launch) plus `counters`, device int32 of
 * lmx_cuda_attention_decode_counters(a, T) elements that must be zero before the first call (each
 * call leaves them zero; calls on one stream may share them). workspace: device fp32 of
 * lmx_cuda_attention_workspace_floats(a, T). Supported (lmx_cuda_attention_decode_supported):
 * kv_dtype F32, F16 or BF16, head_dim a multiple of 8 up to 256; otherwise use lmx_cuda_attention. Any T, but
 * meant for few rows (decode); prefill has lmx_cuda_attention_prefill. */
bool lmx_cuda_attention_decode_supported(const lmx_cuda_attn *a);
size_t lmx_cuda_attention_decode_counters(const lmx_cuda_attn *a, int T);
lmx_status lmx_cuda_attention_decode(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                     const void *v_cache, const int32_t *positions, int T, int64_t max_len,
                                     float *workspace, int32_t *counters, float *out, lmx_cuda_stream stream);
/* The same with the launch shape chosen (tuning and tests): warps per block 4 or 8, about
 * target_blocks blocks in all, at least min_keys keys per split. lmx_cuda_attention_decode is
 * (4, 264, 64). */
lmx_status lmx_cuda_attention_decode_ex(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                        const void *v_cache, const int32_t *positions, int T, int64_t max_len,
                                        float *workspace, int32_t *counters, float *out, int warps,
                                        int target_blocks, int min_keys, lmx_cuda_stream stream);

/* ---- mixture of experts (cuda_moe.cu, cuda_moe_gemv.cu, the grouped form of cuda_gemm_small.cu) ----
 * The routing table of backend.h (lmx_moe_routing) in device memory: S = T*k slots, w [S] fp32, then
 * int32 ids [S], order [S], pos [S], start [E + 1]. Every launch below has a grid that depends only
 * on (T, k, E) and the matrix shapes: the routing itself is read on the device (capturable). */
typedef struct lmx_cuda_moe {
    float *table; /* device [4*T*k + E + 1] */
    int T, k, E;
} lmx_cuda_moe;

/* The int32 arrays of a table. */
static inline void lmx_cuda_moe_arrays(const lmx_cuda_moe *r, int32_t **ids, int32_t **order, int32_t **pos,
                                       int32_t **start) {
    const size_t S = (size_t)r->T * (size_t)r->k;
    int32_t *b = (int32_t *)(void *)(r->table + S);
    *ids = b;
    *order = b + S;
    *pos = b + 2 * S;
    *start = b + 3 * S;
}

/* The routing of logits [T, E] (device fp32) into r->table: per row the k largest logits (ties to
 * the lower index, NaN as -inf) with weights exp(l - max) / Σ in double (Σ over all E when
 * topk_softmax is false, over the k when true), then the slots grouped by expert (stable). One launch
 * for T = 1, two otherwise. k <= 32, E <= 1024. */
lmx_status lmx_cuda_moe_route(const float *logits, const lmx_cuda_moe *r, bool topk_softmax, lmx_cuda_stream stream);
/* x[t, :] += Σ_j w[t*k + j] · y[pos[t*k + j], :] (the k terms in increasing expert order); x [T, dim],
 * y [T*k, dim] device fp32. */
lmx_status lmx_cuda_moe_combine(float *x, const float *y, int dim, const lmx_cuda_moe *r, lmx_cuda_stream stream);

/* A stack of n_experts matrices [m.n, m.k] stored back to back (expert e's rows at e * m.n): `m`
 * describes expert 0 as lmx_cuda_matrix does (dense bits 0, or MLX affine), or in an fp mode
 * (mode != affine) m.w the codes (bits 4 or 8), m.scales the uint8 scale codes [rows, k / group],
 * m.biases NULL. m.bias: fp32 (bias_dtype F32) [n_experts * m.n] or NULL. */
typedef struct lmx_cuda_experts {
    lmx_cuda_matrix m;
    int mode;      /* lmx_quant_mode */
    int n_experts;
} lmx_cuda_experts;

/* y[i, :] = x_i · W_{e(i)}ᵀ (+ bias) for the T*k rows i of the route order (e(i) the expert of entry
 * i; x_i = x[order[i] / k] when gather, else x[i]); y [T*k, m.n]. GEMV kernels, fp32 accumulation of
 * exactly decoded weights, every format: for T < 16 one block column per entry (decode: the k
 * experts' rows read once each), else blocks of up to 8 entries of one expert (weights read once per
 * 8 rows). x rows of m.k floats, 16-byte aligned where m.k % 4 == 0. */
lmx_status lmx_cuda_moe_gemv(const lmx_cuda_experts *w, const float *x, bool gather, const lmx_cuda_moe *r, float *y,
                             lmx_cuda_stream stream);
/* h[i, :] = act(x_i · G_{e(i)}ᵀ) * (x_i · U_{e(i)}ᵀ) (x_i = x[order[i] / k]) in one launch for
 * T < 16 (decode), when the two stacks pair (lmx_cuda_moe_gate_up_fuses: one format and shape); act 0
 * silu, 1 gelu_tanh. LMX_ERR_UNSUPPORTED otherwise (the caller runs two GEMVs and the activation). */
bool lmx_cuda_moe_gate_up_fuses(const lmx_cuda_experts *gate, const lmx_cuda_experts *up, const lmx_cuda_moe *r);
lmx_status lmx_cuda_moe_gate_up(const lmx_cuda_experts *gate, const lmx_cuda_experts *up, const float *x,
                                const lmx_cuda_moe *r, int act, float *h, lmx_cuda_stream stream);
/* The same through the tensor-core few-row GEMM of cuda_gemm_small.cu, grouped: one block per (256
 * weight rows, expert, 64 of its entries), experts' weights read once per 64 rows, bf16 operands,
 * fp32 accumulation (bf16-level error). Affine 4/8-bit experts with lmx_cuda_gemm_small_supported(&m)
 * (else LMX_ERR_UNSUPPORTED); x 16-byte aligned. */
lmx_status lmx_cuda_moe_gemm(const lmx_cuda_experts *w, const float *x, bool gather, const lmx_cuda_moe *r, float *y,
                             lmx_cuda_stream stream);

/* ---- sampling ---- */

/* ids[r] = argmax over logits[r, :n] (first index on ties; NaNs ignored). logits: device fp32
 * [rows, n]; ids: device int32 [rows]. */
lmx_status lmx_cuda_argmax(const float *logits, int rows, int64_t n, int32_t *ids,
                           lmx_cuda_stream stream);
/* The k largest logits of each row, sorted by value descending (index ascending among equal
 * values; when more than k elements tie at the k-th value, which of them are kept is unspecified).
 * NaNs rank below everything. k <= 256 and k <= n. vals: device fp32 [rows, k]; ids: device int32
 * [rows, k]. Lets a sampler (top-k/top-p/min-p/temperature) work on k candidates on the host. */
lmx_status lmx_cuda_topk(const float *logits, int rows, int64_t n, int k, float *vals, int32_t *ids,
                         lmx_cuda_stream stream);
/* ids[i] = the greedy choice over row rows[i] of logits [*, n] by the device sampler's rule (the
 * largest value, the lowest id among equal ones, NaN skipped; -1 when no value is above -inf), for
 * i < n_rows, in one launch (cuda_sample_rows.cu). rows, ids: device int32 [n_rows]; rows NULL = rows
 * 0 .. n_rows-1. */
lmx_status lmx_cuda_greedy_rows(const float *logits, int64_t n, const int32_t *rows, int n_rows, int32_t *ids,
                                lmx_cuda_stream stream);
/* ---- fused ops (cuda_fused.cu) ---- */

/* Arguments of lmx_cuda_rope_qk_store besides the cache descriptor. */
typedef struct lmx_cuda_qk_rope {
    int rot_dims;                 /* rotated features per head: even, <= head_dim; 0 = no rotation */
    const float *inv_freq;        /* device fp32 [rot_dims/2] (as lmx_cuda_rope) */
    float mscale;                 /* multiplies cos and sin */
    const float *q_norm, *k_norm; /* device fp32 [head_dim] per-head RMSNorm weights, or both NULL */
    float eps;
    bool norm_plus_one;           /* scale by 1 + w */
    int64_t q_stride, k_stride, v_stride; /* elements between token rows; 0 = packed (heads * head_dim) */
} lmx_cuda_qk_rope;

/* One launch for T tokens: q [T, a->n_heads, head_dim] and k [T, a->n_kv_heads, head_dim] (device fp32,
 * rows r->*_stride apart) are, per head, RMS-normalised when r->q_norm/k_norm are given
 * (x * rsqrt(mean(x^2) + eps) * (w or 1 + w)) and rotated like lmx_cuda_rope (angle positions[t] *
 * inv_freq[i], cos/sin times mscale), in place; the rotated k rows and the v rows (device fp32, same
 * shape as k) are stored into the caches (layout and dtype of `a`: [n_kv_heads][capacity][head_dim]
 * of a->kv_dtype, slot positions[t] % a->capacity; a negative position stores nothing). positions:
 * device int32 [T]. head_dim * 4 bytes <= 48 KB. Only the fields n_heads, n_kv_heads, head_dim,
 * capacity, kv_dtype and map (paged: the slot of positions[t] through row t's table) of `a` are used. */
lmx_status lmx_cuda_rope_qk_store(const lmx_cuda_attn *a, const lmx_cuda_qk_rope *r, float *q, float *k,
                                  const float *v, void *k_cache, void *v_cache, const int32_t *positions, int T,
                                  lmx_cuda_stream stream);

/* ---- sampling the next token on the device (cuda_sample.cu; the host sampler's semantics, see
 * src/generate/sampler.h and the file's header) ---- */
typedef struct lmx_cuda_sampler lmx_cuda_sampler; /* device workspace + pinned staging */
typedef struct lmx_cuda_sample_params {
    int vocab;
    lmx_sampling sampling;    /* lmx.h; repetition_context is not read (the window is staged) */
} lmx_cuda_sample_params;
/* A sampler for logits [vocab] and a penalty window of up to window_cap ids. */
lmx_status lmx_cuda_sampler_create(int vocab, int window_cap, lmx_cuda_sampler **out);
void lmx_cuda_sampler_destroy(lmx_cuda_sampler *s); /* NULL-safe; no work may be in flight */
int lmx_cuda_sampler_vocab(const lmx_cuda_sampler *s);
int lmx_cuda_sampler_window_cap(const lmx_cuda_sampler *s);
/* False when the device cannot sample with *p (invalid values): the caller samples on the host. */
bool lmx_cuda_sample_supported(const lmx_cuda_sample_params *p);
/* Writes the per-token inputs (uniform u, the penalty window ids [n_window]) into pinned staging.
 * Host memory only: call it when no enqueued sample is still in flight. */
lmx_status lmx_cuda_sample_set_input(lmx_cuda_sampler *s, double u, const int32_t *window, int n_window);
/* Enqueues on `stream`: the upload of the staged inputs, the kernels over logits (device [vocab], not
 * modified), the download of the result to pinned memory. Capturable: a captured sequence reads the
 * staging when it runs, so a replay only needs set_input before its launch. */
lmx_status lmx_cuda_sample_enqueue(lmx_cuda_sampler *s, const lmx_cuda_sample_params *p, const float *logits,
                                   lmx_cuda_stream stream);
/* After the stream has synchronized: the id, or -1 when the device could not decide (NaN/inf logits,
 * a top_p cut bucket or top_k candidates of more than 4096 tokens, greedy over logits all NaN/-inf). */
int32_t lmx_cuda_sample_read(const lmx_cuda_sampler *s);
#endif /* LMX_HAVE_CUDA */

#ifdef __cplusplus
}
#endif
#endif
