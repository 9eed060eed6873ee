/* lm_forward.c — KV caches and the forward pass shared by every family. Family differences are
 * data (config flags), following the HF modeling files:
 *
 *   h = embed(ids) [* sqrt(hidden)]
 *   per layer:
 *     a = input_layernorm(h)
 *     q, k, v = a·Wqᵀ(+b), a·Wkᵀ(+b), a·Wvᵀ(+b)          (phi3: rows of the fused qkv_proj)
 *     [q, k = q_norm(q), k_norm(k) per head]               (qwen3, gemma3)
 *     q, k = rope(q), rope(k)                              (layer's table; longrope short/long)
 *     cache k, v; o = attention(q, cache) · Woᵀ(+b)        (causal, window on sliding layers)
 *     [o = post_attention_layernorm(o)]; h += o            (gemma3 sandwich)
 *     m = (gemma3 ? pre_feedforward_layernorm : post_attention_layernorm)(h)
 *     f = down(act(gate(m)) * up(m)); [f = post_feedforward_layernorm(f)]; h += f
 *   logits = head(norm(h_last)) [softcap]
 * The backend's fused ops carry steps of it as one launch each: q/k norm + RoPE + cache store as
 * rope_qk_store, h += o and h += f as matmul_add (not with gemma3's sandwich norms, where a norm
 * comes between the projection and the add). Fused q|k|v and gate|up weights (where the backend
 * uploads them fused) make a one-token step one matmul each, and a prefill one gate|up GEMM plus
 * act_mul_split.
 */
#include <stdlib.h>
#include <string.h>

#include "model/lm_internal.h"
#include "util/error.h"

#define KV_CHUNK 128 /* prefill rows per backend call, unless the backend states its own (prefill_chunk) */

lmx_status lmx_kv_create(lmx_lm *lm, int max_ctx, lmx_kv **out) { return lmx_kv_create_ex(lm, max_ctx, 0, out); }

lmx_status lmx_kv_create_ex(lmx_lm *lm, int max_ctx, int chunk, lmx_kv **out) {
    *out = NULL;
    if (max_ctx < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv cache: max_ctx %d", max_ctx);
    if (chunk < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv cache: chunk %d", chunk);
    if (chunk == 0) chunk = lm->be->ops->prefill_chunk > 0 ? lm->be->ops->prefill_chunk : KV_CHUNK;
    if (!lm->be->ops->matmul_add || !lm->be->ops->rope_qk_store)
        return lmx_error(LMX_ERR_UNSUPPORTED, "kv cache: backend %s lacks matmul_add / rope_qk_store",
                         lm->be->ops->name);
    const lmx_model_config *c = lm->cfg;
    lmx_backend *be = lm->be;
    lmx_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv cache");
    kv->lm = lm;
    kv->capacity = max_ctx;
    kv->chunk = max_ctx < chunk ? max_ctx : chunk;
    const size_t C = (size_t)kv->chunk, H = (size_t)c->hidden_size, D = (size_t)c->head_dim;
    const size_t NQ = (size_t)c->n_heads * D, NKV = (size_t)c->n_kv_heads * D, I = (size_t)c->intermediate_size;
    kv->k = calloc((size_t)c->n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)c->n_layers, sizeof *kv->v);
    kv->posv = calloc(C, sizeof *kv->posv);
    kv->slots = calloc((size_t)c->n_layers, sizeof *kv->slots);
    lmx_status st =
        (kv->k && kv->v && kv->posv && kv->slots) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv cache");
    size_t cache_floats = 0;
    for (int l = 0; st == LMX_OK && l < c->n_layers; l++) {
        /* a sliding layer only ever needs the last window positions plus one chunk being written */
        int64_t slots = max_ctx;
        if (lm->layers[l].sliding && (int64_t)c->sliding_window + kv->chunk - 1 < slots)
            slots = (int64_t)c->sliding_window + kv->chunk - 1;
        kv->slots[l] = (int)slots;
        size_t per_layer = NKV * (size_t)slots;
        cache_floats += 2 * per_layer;
        /* caches in the backend's KV element type (kv_buf_alloc; NULL: fp32 buffers) */
        lmx_status (*kv_alloc)(lmx_backend *, size_t, lmx_buf **) =
            be->ops->kv_buf_alloc ? be->ops->kv_buf_alloc : be->ops->buf_alloc;
        st = kv_alloc(be, per_layer, &kv->k[l]);
        if (st == LMX_OK) st = kv_alloc(be, per_layer, &kv->v[l]);
    }
    struct {
        lmx_buf **b;
        size_t n;
    } bufs[] = {{&kv->x, C * H},    {&kv->xn, C * H}, {&kv->q, C * NQ}, {&kv->att, C * NQ},
                {&kv->kk, C * NKV}, {&kv->vv, C * NKV}, {&kv->o, C * H}, {&kv->g, C * I},
                {&kv->u, C * I},    {&kv->last, H},   {&kv->logits, (size_t)c->vocab_size}};
    size_t scratch = 0;
    for (size_t i = 0; st == LMX_OK && i < sizeof bufs / sizeof bufs[0]; i++) {
        st = be->ops->buf_alloc(be, bufs[i].n, bufs[i].b);
        scratch += bufs[i].n;
    }
    /* one-token steps through fused weights: [NQ+2NKV] and [2I] outputs with views per projection */
    bool fused = false;
    for (int l = 0; l < c->n_layers; l++) fused = fused || lm->layers[l].qkv || lm->layers[l].gate_up;
    if (st == LMX_OK && fused && be->ops->buf_view) {
        st = be->ops->buf_alloc(be, NQ + 2 * NKV, &kv->qkv1);
        if (st == LMX_OK) st = be->ops->buf_view(be, kv->qkv1, 0, NQ, &kv->q1);
        if (st == LMX_OK) st = be->ops->buf_view(be, kv->qkv1, NQ, NKV, &kv->k1);
        if (st == LMX_OK) st = be->ops->buf_view(be, kv->qkv1, NQ + NKV, NKV, &kv->v1);
        if (st == LMX_OK) st = be->ops->buf_alloc(be, 2 * I, &kv->gu1);
        if (st == LMX_OK) st = be->ops->buf_view(be, kv->gu1, 0, I, &kv->g1);
        if (st == LMX_OK) st = be->ops->buf_view(be, kv->gu1, I, I, &kv->u1);
        scratch += NQ + 2 * NKV + 2 * I;
    }
    /* prefill through fused gate|up weights: one [chunk, 2*inter] GEMM output, split by act_mul_split */
    bool fused_gu = false;
    for (int l = 0; l < c->n_layers; l++) fused_gu = fused_gu || lm->layers[l].gate_up;
    if (st == LMX_OK && fused_gu && kv->chunk > 1 && be->ops->act_mul_split) {
        st = be->ops->buf_alloc(be, C * 2 * I, &kv->gu);
        scratch += C * 2 * I;
    }
    uint64_t moe_bytes = 0; /* sparse layers: router logits, gathered rows, expert outputs (lm_moe.c) */
    if (st == LMX_OK && c->layer_moe) st = lmx_moe_scratch_create(lm, kv->chunk, &kv->moe, &moe_bytes);
    if (st != LMX_OK) {
        lmx_kv_destroy(kv);
        return lmx_error_prefix(st, "kv cache for %d positions", max_ctx);
    }
    const size_t kv_elem = be->ops->kv_elem_bytes ? be->ops->kv_elem_bytes(be) : sizeof(float);
    kv->bytes = cache_floats * kv_elem + scratch * sizeof(float) + moe_bytes;
    *out = kv;
    return LMX_OK;
}

uint64_t lmx_kv_scratch_bound(const lmx_model_config *c, int chunk) {
    /* lmx_kv_create_ex's scratch with every optional buffer present: the table (x, xn, o [C, H]; q, att
     * [C, NQ]; kk, vv [C, NKV]; g, u [C, I]; last [H]; logits [vocab]), the one-token fused outputs
     * [NQ + 2 NKV] and [2 I], and the prefill gate|up output [C, 2 I] */
    const uint64_t C = (uint64_t)chunk, H = (uint64_t)c->hidden_size, D = (uint64_t)c->head_dim;
    const uint64_t NQ = (uint64_t)c->n_heads * D, NKV = (uint64_t)c->n_kv_heads * D, I = (uint64_t)c->intermediate_size;
    return sizeof(float) *
               (C * (3 * H + 2 * NQ + 2 * NKV + 4 * I) + (NQ + 2 * NKV) + 2 * I + H + (uint64_t)c->vocab_size) +
           lmx_moe_scratch_bound(c, chunk);
}

void lmx_kv_destroy(lmx_kv *kv) {
    if (!kv) return;
    lmx_backend *be = kv->lm->be;
    if (kv->k)
        for (int l = 0; l < kv->lm->cfg->n_layers; l++) be->ops->buf_free(be, kv->k[l]);
    if (kv->v)
        for (int l = 0; l < kv->lm->cfg->n_layers; l++) be->ops->buf_free(be, kv->v[l]);
    /* views before the buffers they alias */
    lmx_buf *bs[] = {kv->x,      kv->xn,   kv->q,  kv->att, kv->kk, kv->vv, kv->o,  kv->g,   kv->u,
                     kv->last,   kv->logits, kv->q1, kv->k1,  kv->v1, kv->g1, kv->u1, kv->qkv1, kv->gu1,
                     kv->gu};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) be->ops->buf_free(be, bs[i]);
    lmx_moe_scratch_destroy(kv->lm, kv->moe);
    free(kv->k);
    free(kv->v);
    free(kv->posv);
    free(kv->slots);
    free(kv);
}

void lmx_kv_reset(lmx_kv *kv) { kv->pos = 0; }
int lmx_kv_pos(const lmx_kv *kv) { return kv->pos; }
int lmx_kv_capacity(const lmx_kv *kv) { return kv->capacity; }
uint64_t lmx_kv_bytes(const lmx_kv *kv) { return kv->bytes; }
int lmx_kv_chunk(const lmx_kv *kv) { return kv->chunk; }

lmx_status lmx_kv_truncate(lmx_kv *kv, int n) {
    if (n < 0 || n > kv->pos) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv truncate to %d of %d", n, kv->pos);
    /* ring layers: the window before n must not have been overwritten (position j survives while
     * j >= pos - slots) */
    const lmx_model_config *c = kv->lm->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        if (kv->slots[l] >= kv->capacity) continue;
        int need = n - c->sliding_window > 0 ? n - c->sliding_window : 0;
        if (need < kv->pos - kv->slots[l])
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "kv truncate to %d: the sliding-window cache no longer holds position %d (reset and "
                             "re-run the prefix)",
                             n, need);
    }
    kv->pos = n;
    return LMX_OK;
}

#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        lmx_status st_ = (x);                                                                                  \
        if (st_ != LMX_OK) return st_;                                                                         \
    } while (0)

/* [q, k per-head norm], RoPE of q and k, k/v into the cache, as one backend op (rope_qk_store) */
static lmx_status fused_qk_rope_store(lmx_lm *lm, lmx_kv *kv, int l, int T, const lmx_bweight *rt, float ms,
                                      lmx_buf *q, lmx_buf *kk, const lmx_buf *vv) {
    const lmx_model_config *c = lm->cfg;
    const lm_layer *L = &lm->layers[l];
    lmx_qk_rope_params p = {.n_tokens = T,
                            .n_heads = c->n_heads,
                            .n_kv_heads = c->n_kv_heads,
                            .head_dim = c->head_dim,
                            .rot_dim = c->rotary_dim,
                            .capacity = kv->slots[l],
                            .inv_freq = rt,
                            .mscale = ms,
                            .q_norm = c->qk_norm ? L->q_norm : NULL,
                            .k_norm = c->qk_norm ? L->k_norm : NULL,
                            .eps = (float)c->rms_norm_eps,
                            .norm_plus_one = c->norm_plus_one};
    return lm->be->ops->rope_qk_store(lm->be, q, kk, vv, kv->k[l], kv->v[l], &p, kv->posv);
}

/* One decoder layer over T rows at positions kv->posv[0..T). */
static lmx_status layer_forward(lmx_lm *lm, lmx_kv *kv, int l, int T, bool use_long) {
    const lmx_model_config *c = lm->cfg;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const lm_layer *L = &lm->layers[l];
    const int H = c->hidden_size, D = c->head_dim, NH = c->n_heads, NKV = c->n_kv_heads;
    const float eps = (float)c->rms_norm_eps;
    const bool p1 = c->norm_plus_one;

    /* attention block */
    TRY(op->rmsnorm(be, kv->x, kv->xn, T, H, L->in_norm, eps, p1));            /* [T, hidden] */
    /* one token through the fused q|k|v weight: one matmul into qkv1, whose views are q, k, v (a
     * T > 1 output would interleave the rows, so prefill keeps one matmul per view) */
    lmx_buf *q = kv->q, *kk = kv->kk, *vv = kv->vv;
    if (T == 1 && L->qkv && kv->qkv1) {
        q = kv->q1;
        kk = kv->k1;
        vv = kv->v1;
        TRY(op->matmul(be, L->qkv, kv->xn, 0, 1, kv->qkv1)); /* [NH*D + 2*NKV*D] */
    } else {
        TRY(op->matmul(be, L->q, kv->xn, 0, T, q));  /* [T, NH*D] */
        TRY(op->matmul(be, L->k, kv->xn, 0, T, kk)); /* [T, NKV*D] */
        TRY(op->matmul(be, L->v, kv->xn, 0, T, vv)); /* [T, NKV*D] */
    }
    const lmx_bweight *rt = L->sliding ? lm->rope_sliding : (use_long ? lm->rope_full_long : lm->rope_full);
    float ms = L->sliding ? lm->mscale_sliding : lm->mscale_full;
    TRY(fused_qk_rope_store(lm, kv, l, T, rt, ms, q, kk, vv));
    lmx_attn_params ap = {.n_tokens = T,
                          .n_heads = NH,
                          .n_kv_heads = NKV,
                          .head_dim = D,
                          .capacity = kv->slots[l],
                          .window = L->sliding ? c->sliding_window : 0,
                          .scale = c->attn_scale,
                          .softcap = c->attn_logit_softcap};
    TRY(op->attention(be, q, kv->k[l], kv->v[l], kv->att, &ap, kv->posv)); /* [T, NH*D] */
    if (!c->sandwich_norms) {
        TRY(op->matmul_add(be, L->o, kv->att, 0, T, kv->x)); /* h += o */
    } else { /* gemma3: h += post_attention_layernorm(o) */
        TRY(op->matmul(be, L->o, kv->att, 0, T, kv->o)); /* [T, hidden] */
        TRY(op->rmsnorm(be, kv->o, kv->o, T, H, L->post_attn_norm, eps, p1));
        TRY(op->add(be, kv->x, kv->o, (size_t)T * H));
    }

    /* MLP block */
    const lmx_bweight *pre = c->sandwich_norms ? L->pre_ff_norm : L->post_attn_norm;
    TRY(op->rmsnorm(be, kv->x, kv->xn, T, H, pre, eps, p1));
    if (L->moe) return lmx_moe_forward(lm, kv, l, T); /* sparse block: h += Σ w_e · expert_e(m) */
    lmx_buf *g = kv->g, *u = kv->u;
    const lmx_act_kind act = c->act == LMX_ACT_SILU ? LMX_BACT_SILU_MUL : LMX_BACT_GELU_TANH_MUL;
    if (T == 1 && L->gate_up && kv->gu1) { /* one token: one fused gate|up matmul into gu1 = [g1 | u1] */
        g = kv->g1;
        u = kv->u1;
        TRY(op->matmul(be, L->gate_up, kv->xn, 0, 1, kv->gu1)); /* [2*inter] */
        TRY(op->act_mul(be, g, u, (size_t)T * c->intermediate_size, act));
    } else if (T > 1 && L->gate_up && kv->gu) { /* prefill: one fused GEMM, then act(gate) * up into g */
        TRY(op->matmul(be, L->gate_up, kv->xn, 0, T, kv->gu)); /* [T, 2*inter] */
        TRY(op->act_mul_split(be, kv->gu, T, c->intermediate_size, act, g)); /* [T, inter] */
    } else {
        TRY(op->matmul(be, L->gate, kv->xn, 0, T, g)); /* [T, inter] */
        TRY(op->matmul(be, L->up, kv->xn, 0, T, u));   /* [T, inter] */
        TRY(op->act_mul(be, g, u, (size_t)T * c->intermediate_size, act));
    }
    if (!c->sandwich_norms) {
        TRY(op->matmul_add(be, L->down, g, 0, T, kv->x)); /* h += f */
    } else { /* gemma3: h += post_feedforward_layernorm(f) */
        TRY(op->matmul(be, L->down, g, 0, T, kv->o)); /* [T, hidden] */
        TRY(op->rmsnorm(be, kv->o, kv->o, T, H, L->post_ff_norm, eps, p1));
        TRY(op->add(be, kv->x, kv->o, (size_t)T * H));
    }
    return LMX_OK;
}

/* logits [vocab] (in kv->logits) of row `row` of kv->x: final norm, head, soft-capping */
static lmx_status head_forward(lmx_lm *lm, lmx_kv *kv, int row) {
    const lmx_model_config *c = lm->cfg;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const int H = c->hidden_size;
    if (row == 0) { /* decode: normalise row 0 of x straight into last (no copy) */
        TRY(op->rmsnorm(be, kv->x, kv->last, 1, H, lm->final_norm, (float)c->rms_norm_eps, c->norm_plus_one));
    } else {
        TRY(op->buf_copy(be, kv->last, 0, kv->x, (size_t)row * H, (size_t)H));
        TRY(op->rmsnorm(be, kv->last, kv->last, 1, H, lm->final_norm, (float)c->rms_norm_eps, c->norm_plus_one));
    }
    TRY(op->matmul(be, lm->head, kv->last, 0, 1, kv->logits)); /* [vocab] */
    if (c->final_logit_softcap > 0) TRY(op->softcap(be, kv->logits, (size_t)c->vocab_size, c->final_logit_softcap));
    return LMX_OK;
}

/* the arguments of a forward over ids[n] (LMX_ERR_INVALID_ARGUMENT with a detail otherwise) */
static lmx_status forward_check(const lmx_lm *lm, const lmx_kv *kv, const int32_t *ids, int n) {
    if (!lm || !kv || !ids || n < 1 || kv->lm != lm)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward: bad arguments (n=%d)", n);
    if (n > kv->capacity - kv->pos)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "context full: %d positions cached, %d more do not fit in %d",
                         kv->pos, n, kv->capacity);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= lm->cfg->vocab_size)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "token id %d at index %d is outside the vocabulary (%d)",
                             ids[i], i, lm->cfg->vocab_size);
    return LMX_OK;
}

/* Issues the ops of a forward over ids[n] at kv->pos (the caller advances kv->pos): with `head`, the
 * last row's logits into kv->logits; with `a`, also the device sampling of the next token from them.
 * A one-token step is bracketed by the backend's step hooks (captured/replayed; variant bits: 1 long
 * rope factors, 2 head, 4 sampling); a step the backend asks to redo, and every prefill, runs chunked. */
static lmx_status forward_ops(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, bool head,
                              const lmx_sample_args *a) {
    const lmx_model_config *c = lm->cfg;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    /* longrope (HF): the long factors apply when this call's last position + 1 exceeds the original
     * context; the choice is per call, earlier cached keys keep theirs. */
    const bool use_long = lm->rope_full_long && (double)(kv->pos + n) > c->rope.original_max_position;
    /* sparse models route on the host (a buf_read inside the step): no captured steps */
    if (n == 1 && op->step_begin && op->step_end && !kv->moe) {
        kv->posv[0] = kv->pos;
        bool redo = true;
        const int variant = (use_long ? 1 : 0) | (head ? 2 : 0) | (a ? 4 : 0);
        lmx_status st = op->step_begin(be, kv, variant, ids[0], kv->pos);
        if (st == LMX_OK) {
            st = op->embed(be, lm->embed, ids, 1, lm->embed_scale, kv->x); /* [1, hidden] */
            for (int l = 0; st == LMX_OK && l < c->n_layers; l++) st = layer_forward(lm, kv, l, 1, use_long);
            if (st == LMX_OK && head) st = head_forward(lm, kv, 0);
            if (st == LMX_OK && a) st = op->sample(be, kv->logits, c->vocab_size, a);
            lmx_status se = op->step_end(be, st == LMX_OK, &redo);
            if (st == LMX_OK) st = se;
        }
        if (st != LMX_OK && !redo) return st;
        if (!redo) return LMX_OK;
        /* fall through: the plain path below */
    }
    int pos = kv->pos;
    for (int done = 0; done < n;) {
        int T = n - done < kv->chunk ? n - done : kv->chunk;
        for (int t = 0; t < T; t++) kv->posv[t] = pos + t;
        TRY(op->embed(be, lm->embed, ids + done, T, lm->embed_scale, kv->x)); /* [T, hidden] */
        for (int l = 0; l < c->n_layers; l++) TRY(layer_forward(lm, kv, l, T, use_long));
        done += T;
        pos += T;
        if (done == n && head) TRY(head_forward(lm, kv, T - 1));
    }
    if (a) TRY(op->sample(be, kv->logits, c->vocab_size, a));
    return LMX_OK;
}

lmx_status lmx_lm_forward(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, float *logits) {
    TRY(forward_check(lm, kv, ids, n));
    TRY(forward_ops(lm, kv, ids, n, logits != NULL, NULL));
    if (logits) TRY(lm->be->ops->buf_read(lm->be, kv->logits, 0, logits, (size_t)lm->cfg->vocab_size));
    kv->pos += n;
    return LMX_OK;
}

bool lmx_lm_can_sample(const lmx_lm *lm) { return lm && lm->be->ops->sample && lm->be->ops->sample_result; }

lmx_status lmx_lm_forward_sample(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, const lmx_sample_args *a,
                                 float *logits, int32_t *token) {
    if (!token || !logits || !a) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward_sample: NULL argument");
    *token = -1;
    if (!lmx_lm_can_sample(lm)) return lmx_lm_forward(lm, kv, ids, n, logits);
    TRY(forward_check(lm, kv, ids, n));
    TRY(forward_ops(lm, kv, ids, n, true, a));
    kv->pos += n;
    const lmx_backend_ops *op = lm->be->ops;
    TRY(op->sample_result(lm->be, token));
    if (*token < 0 || *token >= lm->cfg->vocab_size) { /* undecided on the device: the host samples */
        *token = -1;
        TRY(op->buf_read(lm->be, kv->logits, 0, logits, (size_t)lm->cfg->vocab_size));
    }
    return LMX_OK;
}
