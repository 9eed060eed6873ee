/* cuda_backend_moe.c — the CUDA backend's mixture-of-experts ops (backend.h: moe_route, moe_matmul,
 * moe_gate_up, moe_combine; the expert stacks come from cuda_backend_mem.c's weight_upload_experts) over the
 * kernels of cuda_moe.cu, cuda_moe_gemv.cu and cuda_gemm_small.cu.
 *
 * The routing table stays on the device: no op reads back or synchronises, and each launch's grid is
 * a function of (T, k, E) and the shapes only, so inside a decode step the ops are recorded, captured
 * and replayed like every other op (their arguments enter the step's signature). moe_matmul takes the
 * grouped tensor-core GEMM for 4/8-bit affine experts from 16 rows on (prefill: each expert's weights
 * read once per 64 of its rows), the expert GEMV otherwise (decode: the k chosen experts' rows read
 * once; other formats' prefill: once per 8 rows); moe_gate_up is one launch for decode (both
 * projections of a row in one warp, the activation in its epilogue).
 */
#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"

#include "util/error.h"

static lmx_status check_routing(const lmx_moe_routing *r, lmx_cuda_moe *dr) {
    LMX_BACKEND_TRY(lmx_backend_check_moe_routing("cuda", r));
    CHECK_RANGE(r->table, 0, lmx_moe_table_floats(r->n_tokens, r->top_k, r->n_experts), "moe table");
    *dr = (lmx_cuda_moe){r->table->d, r->n_tokens, r->top_k, r->n_experts};
    return LMX_OK;
}

lmx_status lmx_cub_moe_route(lmx_backend *be, const lmx_buf *logits, const lmx_moe_routing *r) {
    cuda_backend *c = CB(be);
    lmx_cuda_moe dr;
    LMX_BACKEND_TRY(check_routing(r, &dr));
    CHECK_RANGE(logits, 0, (size_t)r->n_tokens * (size_t)r->n_experts, "moe_route logits");
    if (stepping(c)) {
        SIGI(20); SIGP(logits->d); SIGP(dr.table); SIGI(dr.T); SIGI(dr.k); SIGI(dr.E); SIGI(r->rule);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_moe_route(logits->d, &dr, r->rule == LMX_MOE_TOPK_SOFTMAX, c->stream);
}

lmx_status lmx_cub_moe_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, bool gather,
                              const lmx_moe_routing *r, lmx_buf *y) {
    cuda_backend *c = CB(be);
    lmx_cuda_moe dr;
    LMX_BACKEND_TRY(check_routing(r, &dr));
    LMX_BACKEND_TRY(lmx_backend_check_moe_matmul("cuda", r, w->kind, w->n_experts, w->rows, w->cols, x->n, gather,
                                                 y->n));
    if (x->dt != LMX_DTYPE_F32 || y->dt != LMX_DTYPE_F32 || x->d == y->d)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: moe_matmul: a KV cache buffer, or y == x");
    const bool grouped = dr.T >= LMX_CUDA_GEMM_MIN_T && w->ex.mode == LMX_QUANT_AFFINE &&
                         lmx_cuda_gemm_small_supported(&w->ex.m) && ((uintptr_t)x->d & 15) == 0;
    if (stepping(c)) {
        SIGI(21); SIGP(w->dw); SIGP(x->d); SIGP(y->d); SIGP(dr.table); SIGI(gather); SIGI(dr.T); SIGI(dr.k);
        SIGI(grouped);
        if (replaying(c)) return LMX_OK;
    }
    if (grouped) return lmx_cuda_moe_gemm(&w->ex, x->d, gather, &dr, y->d, c->stream);
    return lmx_cuda_moe_gemv(&w->ex, x->d, gather, &dr, y->d, c->stream);
}

/* decode (T < 16, stacks of one format): one launch for both projections and the activation; else
 * the two moe_matmuls and the act_mul kernel */
lmx_status lmx_cub_moe_gate_up(lmx_backend *be, const lmx_bweight *gate, const lmx_bweight *up, const lmx_buf *x,
                               const lmx_moe_routing *r, lmx_act_kind act, lmx_buf *h, lmx_buf *u) {
    cuda_backend *c = CB(be);
    lmx_cuda_moe dr;
    LMX_BACKEND_TRY(check_routing(r, &dr));
    if (gate->rows != up->rows || gate->cols != up->cols || h == u || h->d == u->d)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: moe_gate_up: gate and up of other shapes, or h == u");
    /* the fused launch has silu and gelu_tanh; other activations (gpt_oss's clamped SwiGLU) take act_mul */
    const bool fused_act = act == LMX_BACT_SILU_MUL || act == LMX_BACT_GELU_TANH_MUL;
    if (!fused_act || !lmx_cuda_moe_gate_up_fuses(&gate->ex, &up->ex, &dr)) {
        LMX_BACKEND_TRY(lmx_cub_moe_matmul(be, gate, x, true, r, h));
        LMX_BACKEND_TRY(lmx_cub_moe_matmul(be, up, x, true, r, u));
        return lmx_cub_act_mul(be, h, u, (size_t)dr.T * (size_t)dr.k * (size_t)gate->rows, act);
    }
    LMX_BACKEND_TRY(lmx_backend_check_moe_matmul("cuda", r, gate->kind, gate->n_experts, gate->rows, gate->cols, x->n,
                                                 true, h->n));
    LMX_BACKEND_TRY(lmx_backend_check_moe_matmul("cuda", r, up->kind, up->n_experts, up->rows, up->cols, x->n, true,
                                                 u->n));
    if (x->dt != LMX_DTYPE_F32 || h->dt != LMX_DTYPE_F32 || x->d == h->d)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: moe_gate_up: a KV cache buffer, or h == x");
    if (stepping(c)) {
        SIGI(23); SIGP(gate->dw); SIGP(up->dw); SIGP(x->d); SIGP(h->d); SIGP(dr.table); SIGI(dr.T); SIGI(dr.k);
        SIGI(act);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_moe_gate_up(&gate->ex, &up->ex, x->d, &dr, act == LMX_BACT_SILU_MUL ? 0 : 1, h->d, c->stream);
}

lmx_status lmx_cub_moe_combine(lmx_backend *be, lmx_buf *x, const lmx_buf *y, int dim, const lmx_moe_routing *r) {
    cuda_backend *c = CB(be);
    lmx_cuda_moe dr;
    LMX_BACKEND_TRY(check_routing(r, &dr));
    LMX_BACKEND_TRY(lmx_backend_check_moe_combine("cuda", r, x->n, y->n, dim));
    if (x->dt != LMX_DTYPE_F32 || y->dt != LMX_DTYPE_F32 || x->d == y->d)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: moe_combine: a KV cache buffer, or y == x");
    if (stepping(c)) {
        SIGI(22); SIGP(x->d); SIGP(y->d); SIGP(dr.table); SIGI(dim); SIGI(dr.T); SIGI(dr.k);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_moe_combine(x->d, y->d, dim, &dr, c->stream);
}
#else
typedef int lmx_cuda_backend_moe_unused; /* keep the translation unit non-empty */
#endif
