/* backend_check.c — shared argument checks of the backend seam (see backend_check.h). */
#include "backend/backend_check.h"

#include <stdint.h>

#include "util/error.h"

lmx_status lmx_backend_check_range(const char *backend, const char *what, size_t off, size_t cnt, size_t n) {
    if (off <= n && cnt <= n - off) return LMX_OK;
    return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: %s: range [%zu, +%zu) outside a buffer of %zu", backend,
                     what, off, cnt, n);
}

lmx_status lmx_backend_check_weight_desc(const lmx_weight_desc *d) {
    if (d->kind == LMX_WEIGHT_EXPERTS)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: an expert stack is uploaded by weight_upload_experts", d->name);
    if (d->rows < 1 || d->cols < 1 || d->row0 < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: bad weight shape", d->name);
    if (d->kind == LMX_WEIGHT_QUANT && (d->group_size < 1 || d->cols % d->group_size || (d->cols * d->bits) % 32))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: %lld columns do not fit group %d / %d bits", d->name,
                         (long long)d->cols, d->group_size, d->bits);
    if (d->kind == LMX_WEIGHT_QUANT && lmx_quant_mode_is_fp(d->mode) &&
        ((unsigned)d->mode >= LMX_QUANT_N_MODES || d->bits != lmx_quant_mode_bits(d->mode) ||
         d->group_size != lmx_quant_mode_group(d->mode) || !d->scales))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: mode %s needs bits %d, group %d and scales", d->name,
                         lmx_quant_mode_name(d->mode), lmx_quant_mode_bits(d->mode), lmx_quant_mode_group(d->mode));
    return LMX_OK;
}

lmx_status lmx_backend_check_matmul(const char *backend, lmx_wkind w_kind, int64_t w_rows, int64_t w_cols,
                                    size_t x_n, size_t x_off, int T, size_t y_n) {
    if (w_kind == LMX_WEIGHT_VECTOR) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "matmul with a vector weight");
    if (w_kind == LMX_WEIGHT_EXPERTS)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "matmul with an expert stack (moe_matmul takes it)");
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "matmul x", x_off, (size_t)T * (size_t)w_cols, x_n));
    return lmx_backend_check_range(backend, "matmul y", 0, (size_t)T * (size_t)w_rows, y_n);
}

lmx_status lmx_backend_check_embed_ids(const int32_t *ids, int T, int64_t vocab) {
    for (int t = 0; t < T; t++)
        if (ids[t] < -1 || ids[t] >= vocab)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "token id %d outside the vocabulary of %lld", ids[t],
                             (long long)vocab);
    return LMX_OK;
}

lmx_status lmx_backend_check_rmsnorm(const char *backend, size_t x_n, size_t y_n, int rows, int dim,
                                     lmx_wkind w_kind, int64_t w_cols) {
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "rmsnorm x", 0, (size_t)rows * dim, x_n));
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "rmsnorm y", 0, (size_t)rows * dim, y_n));
    if (w_kind != LMX_WEIGHT_VECTOR || w_cols != dim)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rmsnorm: weight of %lld for dim %d", (long long)w_cols, dim);
    return LMX_OK;
}



lmx_status lmx_backend_check_attention(const char *backend, const lmx_attn_params *p, size_t q_n, size_t out_n,
                                       size_t kc_n, size_t vc_n, lmx_wkind sink_kind, int64_t sink_cols) {
    if (p->n_kv_heads < 1 || p->n_heads % p->n_kv_heads || p->head_dim < 1 || p->capacity < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: bad head configuration");
    if (p->sinks && (sink_kind != LMX_WEIGHT_VECTOR || sink_cols != p->n_heads))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: sinks of %lld for %d heads", (long long)sink_cols,
                         p->n_heads);
    size_t qn = (size_t)p->n_tokens * p->n_heads * p->head_dim;
    size_t cn = (size_t)p->n_kv_heads * p->capacity * p->head_dim;
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "attention q", 0, qn, q_n));
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "attention out", 0, qn, out_n));
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "attention k cache", 0, cn, kc_n));
    return lmx_backend_check_range(backend, "attention v cache", 0, cn, vc_n);
}

/* rows of `per` elements at off + t * stride (stride 0 = per), t < T, inside a buffer of n */
static lmx_status check_rows(const char *backend, const char *what, size_t off, size_t stride, size_t per, int T,
                             size_t n) {
    if (stride == 0) stride = per;
    if (stride < per)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: %s: row stride %zu below a row of %zu", backend, what,
                         stride, per);
    if (T > 1 && stride > (SIZE_MAX - per) / (size_t)(T - 1))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: %s: %d rows of stride %zu", backend, what, T, stride);
    return lmx_backend_check_range(backend, what, off, (size_t)(T - 1) * stride + per, n);
}

lmx_status lmx_backend_check_rope_qk_store(const char *backend, const lmx_qk_rope_params *p, size_t q_n, size_t k_n,
                                           size_t v_n, size_t kc_n, size_t vc_n, lmx_wkind inv_kind,
                                           int64_t inv_cols, lmx_wkind qn_kind, int64_t qn_cols, lmx_wkind kn_kind,
                                           int64_t kn_cols) {
    if (p->n_tokens < 1 || p->n_heads < 1 || p->n_kv_heads < 1 || p->head_dim < 1 || p->capacity < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: T %d, heads %d/%d, head_dim %d, capacity %d",
                         p->n_tokens, p->n_heads, p->n_kv_heads, p->head_dim, p->capacity);
    if (p->rot_dim < 0 || p->rot_dim > p->head_dim || p->rot_dim % 2 || inv_kind != LMX_WEIGHT_VECTOR ||
        inv_cols < p->rot_dim / 2)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: rot_dim %d, head_dim %d", p->rot_dim, p->head_dim);
    if (!p->q_norm != !p->k_norm)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: q_norm and k_norm go together");
    if (p->q_norm && (qn_kind != LMX_WEIGHT_VECTOR || kn_kind != LMX_WEIGHT_VECTOR || qn_cols != p->head_dim ||
                      kn_cols != p->head_dim))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: norm weights of %lld/%lld for head_dim %d",
                         (long long)qn_cols, (long long)kn_cols, p->head_dim);
    const size_t D = (size_t)p->head_dim;
    LMX_BACKEND_TRY(check_rows(backend, "rope_qk_store q", p->q_off, p->q_stride, (size_t)p->n_heads * D, p->n_tokens,
                               q_n));
    LMX_BACKEND_TRY(check_rows(backend, "rope_qk_store k", p->k_off, p->k_stride, (size_t)p->n_kv_heads * D,
                               p->n_tokens, k_n));
    LMX_BACKEND_TRY(check_rows(backend, "rope_qk_store v", p->v_off, p->v_stride, (size_t)p->n_kv_heads * D,
                               p->n_tokens, v_n));
    size_t per = (size_t)p->n_kv_heads * (size_t)p->capacity * D;
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "rope_qk_store k cache", 0, per, kc_n));
    return lmx_backend_check_range(backend, "rope_qk_store v cache", 0, per, vc_n);
}

lmx_status lmx_backend_check_moe_routing(const char *backend, const lmx_moe_routing *r) {
    if (!r || !r->table || r->n_tokens < 1 || r->n_experts < 1 || r->n_experts > LMX_MOE_MAX_EXPERTS || r->top_k < 1 ||
        r->top_k > r->n_experts || r->top_k > LMX_MOE_MAX_TOPK ||
        (r->rule != LMX_MOE_SOFTMAX_TOPK && r->rule != LMX_MOE_TOPK_SOFTMAX))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: moe routing of %d rows, top-%d of %d experts, rule %d",
                         backend, r ? r->n_tokens : 0, r ? r->top_k : 0, r ? r->n_experts : 0, r ? (int)r->rule : -1);
    if ((size_t)r->n_tokens * (size_t)r->top_k > (size_t)INT32_MAX / 4)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: moe routing of %d rows is too large", backend, r->n_tokens);
    return LMX_OK;
}

lmx_status lmx_backend_check_moe_matmul(const char *backend, const lmx_moe_routing *r, lmx_wkind w_kind,
                                        int w_experts, int64_t w_rows, int64_t w_cols, size_t x_n, bool gather,
                                        size_t y_n) {
    if (w_kind != LMX_WEIGHT_EXPERTS || w_experts != r->n_experts)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: moe_matmul needs a stack of %d experts (got kind %d, %d)",
                         backend, r->n_experts, (int)w_kind, w_experts);
    const size_t S = (size_t)r->n_tokens * (size_t)r->top_k;
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "moe_matmul x", 0,
                                            (gather ? (size_t)r->n_tokens : S) * (size_t)w_cols, x_n));
    return lmx_backend_check_range(backend, "moe_matmul y", 0, S * (size_t)w_rows, y_n);
}

lmx_status lmx_backend_check_moe_combine(const char *backend, const lmx_moe_routing *r, size_t x_n, size_t y_n,
                                         int dim) {
    if (dim < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: moe_combine of dim %d", backend, dim);
    LMX_BACKEND_TRY(lmx_backend_check_range(backend, "moe_combine x", 0, (size_t)r->n_tokens * (size_t)dim, x_n));
    return lmx_backend_check_range(backend, "moe_combine y", 0,
                                   (size_t)r->n_tokens * (size_t)r->top_k * (size_t)dim, y_n);
}
