/* lm_forward.c — KV caches and the forward pass shared by every family. Family differences are
 * data (config flags), following the HF modeling files:
 *
 *   h = embed(ids) [* sqrt(hidden)]
 *   per layer:
 *     a = input_layernorm(h)
 *     q, k, v = a·Wqᵀ(+b), a·Wkᵀ(+b), a·Wvᵀ(+b)          (phi3: rows of the fused qkv_proj)
 *     [q, k = q_norm(q), k_norm(k) per head]               (qwen3, gemma3)
 *     q, k = rope(q), rope(k)                              (layer's table; longrope short/long)
 *     cache k, v; o = attention(q, cache) · Woᵀ(+b)        (causal, window on sliding layers; gpt_oss:
 *                                                          a sink logit per head in the softmax)
 *     [o = post_attention_layernorm(o)]; h += o            (gemma3 sandwich)
 *     m = (gemma3 ? pre_feedforward_layernorm : post_attention_layernorm)(h)
 *     f = down(act(gate(m)) * up(m)); [f = post_feedforward_layernorm(f)]; h += f
 *   logits = head(norm(h_last)) [softcap]
 * The backend's fused ops carry steps of it as one launch each: q/k norm + RoPE + cache store as
 * rope_qk_store, h += o and h += f as matmul_add (not with gemma3's sandwich norms, where a norm
 * comes between the projection and the add). Fused q|k|v and gate|up weights (where the backend
 * uploads them fused) make a one-token step one matmul each, and a prefill one gate|up GEMM plus
 * act_mul_split.
 *
 * Tensor parallel (lm_shard.h): a rank's model holds its heads, intermediate rows and vocabulary
 * rows, and every shape here is the shard's; the collectives go where the split sums: after the
 * embedding lookup (all-reduce of [T, hidden]), after o_proj and down_proj (all-reduce of the
 * residual update), and after the head (all-gather of the logits). A model on one backend is the
 * one-rank shard: none of them.
 */
#include <stdlib.h>
#include <string.h>

#include "model/lm_internal.h"
#include "util/error.h"

#define KV_CHUNK 128 /* prefill rows per backend call, unless the backend states its own (prefill_chunk) */

lmx_status lmx_kv_create(lmx_lm *lm, int max_ctx, lmx_kv **out) { return lmx_kv_create_ex(lm, max_ctx, 0, out); }

lmx_status lm_scratch_alloc(lmx_lm *lm, int rows, lm_scratch *s) {
    memset(s, 0, sizeof *s);
    const lmx_model_config *c = lm->cfg;
    const lm_shard *sh = &lm->shard;
    lmx_backend *be = lm->be;
    const size_t C = (size_t)rows, H = (size_t)c->hidden_size, D = (size_t)c->head_dim;
    const size_t NQ = (size_t)sh->n_heads * D, NKV = (size_t)sh->n_kv_heads * D, I = (size_t)sh->inter;
    s->rows = rows;
    struct {
        lmx_buf **b;
        size_t n;
    } bufs[] = {{&s->x, C * H},    {&s->xn, C * H},   {&s->q, C * NQ}, {&s->att, C * NQ}, {&s->kk, C * NKV},
                {&s->vv, C * NKV}, {&s->o, C * H},    {&s->g, C * I},  {&s->u, C * I}};
    lmx_status st = LMX_OK;
    for (size_t i = 0; st == LMX_OK && i < sizeof bufs / sizeof bufs[0]; i++) {
        st = be->ops->buf_alloc(be, bufs[i].n, bufs[i].b);
        s->floats += bufs[i].n;
    }
    /* one-token steps through fused weights: [NQ+2NKV] and [2I] outputs with views per projection */
    bool fused = false, fused_gu = false;
    for (int l = 0; l < c->n_layers; l++) {
        fused = fused || lm->layers[l].qkv || lm->layers[l].gate_up;
        fused_gu = fused_gu || lm->layers[l].gate_up;
    }
    if (st == LMX_OK && fused && be->ops->buf_view) {
        st = be->ops->buf_alloc(be, NQ + 2 * NKV, &s->qkv1);
        if (st == LMX_OK) st = be->ops->buf_view(be, s->qkv1, 0, NQ, &s->q1);
        if (st == LMX_OK) st = be->ops->buf_view(be, s->qkv1, NQ, NKV, &s->k1);
        if (st == LMX_OK) st = be->ops->buf_view(be, s->qkv1, NQ + NKV, NKV, &s->v1);
        if (st == LMX_OK) st = be->ops->buf_alloc(be, 2 * I, &s->gu1);
        if (st == LMX_OK) st = be->ops->buf_view(be, s->gu1, 0, I, &s->g1);
        if (st == LMX_OK) st = be->ops->buf_view(be, s->gu1, I, I, &s->u1);
        s->floats += NQ + 2 * NKV + 2 * I;
    }
    /* T > 1 through fused gate|up weights: one [rows, 2*inter] GEMM output, split by act_mul_split */
    if (st == LMX_OK && fused_gu && rows > 1 && be->ops->act_mul_split) {
        st = be->ops->buf_alloc(be, C * 2 * I, &s->gu);
        s->floats += C * 2 * I;
    }
    /* sparse layers: router logits, the routing table, the expert rows (lm_moe.c) */
    if (st == LMX_OK && lm->cfg->layer_moe) st = lmx_moe_scratch_create(lm, rows, &s->moe, &s->moe_bytes);
    if (st != LMX_OK) lm_scratch_free(lm, s);
    return st;
}

void lm_scratch_free(lmx_lm *lm, lm_scratch *s) {
    lmx_backend *be = lm->be;
    /* views before the buffers they alias */
    lmx_buf *bs[] = {s->x,  s->xn, s->q,  s->att, s->kk, s->vv,   s->o,   s->g, s->u,
                     s->q1, s->k1, s->v1, s->g1,  s->u1, s->qkv1, s->gu1, s->gu};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) be->ops->buf_free(be, bs[i]);
    lmx_moe_scratch_destroy(lm, s->moe);
    memset(s, 0, sizeof *s);
}

lmx_status lmx_kv_create_ex(lmx_lm *lm, int max_ctx, int chunk, lmx_kv **out) {
    *out = NULL;
    if (max_ctx < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv cache: max_ctx %d", max_ctx);
    if (chunk < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv cache: chunk %d", chunk);
    if (lm->tp) return lm_tp_kv_create(lm, max_ctx, chunk, out); /* each rank's chunk as its backend says */
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
    const lm_shard *sh = &lm->shard;
    const size_t C = (size_t)kv->chunk, NKV = (size_t)sh->n_kv_heads * (size_t)c->head_dim;
    kv->k = calloc((size_t)c->n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)c->n_layers, sizeof *kv->v);
    kv->posv = calloc(C, sizeof *kv->posv);
    kv->longv = calloc(C, sizeof *kv->longv);
    kv->slots = calloc((size_t)c->n_layers, sizeof *kv->slots);
    if (sh->vocab_split) kv->lids = calloc(C, sizeof *kv->lids);
    lmx_status st = (kv->k && kv->v && kv->posv && kv->longv && kv->slots && (kv->lids || !sh->vocab_split))
                        ? LMX_OK
                        : lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv cache");
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
    if (st == LMX_OK) st = lm_scratch_alloc(lm, kv->chunk, &kv->s);
    if (st == LMX_OK) st = be->ops->buf_alloc(be, (size_t)c->hidden_size, &kv->last);      /* [hidden] */
    /* [vocab], or [n_ranks * vocab_slot] gathered from the ranks' [vocab_slot] */
    const size_t n_logits = sh->vocab_split ? (size_t)sh->n_ranks * (size_t)sh->vocab_slot : (size_t)c->vocab_size;
    if (st == LMX_OK) st = be->ops->buf_alloc(be, n_logits, &kv->logits);
    if (st == LMX_OK && sh->vocab_split) st = be->ops->buf_alloc(be, (size_t)sh->vocab_slot, &kv->logits_part);
    if (st != LMX_OK) {
        lmx_kv_destroy(kv);
        return lmx_error_prefix(st, "kv cache for %d positions", max_ctx);
    }
    const size_t kv_elem = be->ops->kv_elem_bytes ? be->ops->kv_elem_bytes(be) : sizeof(float);
    const uint64_t scratch = kv->s.floats + (uint64_t)c->hidden_size + n_logits +
                             (sh->vocab_split ? (uint64_t)sh->vocab_slot : 0);
    kv->bytes = cache_floats * kv_elem + scratch * sizeof(float) + kv->s.moe_bytes;
    *out = kv;
    return LMX_OK;
}

uint64_t lmx_kv_scratch_bound(const lmx_model_config *c, const lm_shard *sh, int chunk) {
    /* lmx_kv_create_ex's scratch with every optional buffer present: the table (x, xn, o [C, H]; q, att
     * [C, NQ]; kk, vv [C, NKV]; g, u [C, I]; last [H]; logits [vocab], split: gathered [n * slot] and
     * the rank's [slot]), the one-token fused outputs [NQ + 2 NKV] and [2 I], and the prefill gate|up
     * output [C, 2 I] */
    const uint64_t C = (uint64_t)chunk, H = (uint64_t)c->hidden_size, D = (uint64_t)c->head_dim;
    const uint64_t NQ = (uint64_t)sh->n_heads * D, NKV = (uint64_t)sh->n_kv_heads * D, I = (uint64_t)sh->inter;
    const uint64_t logits = sh->vocab_split ? (uint64_t)(sh->n_ranks + 1) * (uint64_t)sh->vocab_slot
                                            : (uint64_t)c->vocab_size;
    return sizeof(float) * (C * (3 * H + 2 * NQ + 2 * NKV + 4 * I) + (NQ + 2 * NKV) + 2 * I + H + logits) +
           lmx_moe_scratch_bound(c, chunk);
}

void lmx_kv_destroy(lmx_kv *kv) {
    if (!kv) return;
    if (kv->ranks) {
        lm_tp_kv_destroy(kv);
        return;
    }
    lmx_backend *be = kv->lm->be;
    if (kv->k)
        for (int l = 0; l < kv->lm->cfg->n_layers; l++) be->ops->buf_free(be, kv->k[l]);
    if (kv->v)
        for (int l = 0; l < kv->lm->cfg->n_layers; l++) be->ops->buf_free(be, kv->v[l]);
    lm_scratch_free(kv->lm, &kv->s);
    be->ops->buf_free(be, kv->last);
    be->ops->buf_free(be, kv->logits);
    be->ops->buf_free(be, kv->logits_part);
    free(kv->lids);
    free(kv->k);
    free(kv->v);
    free(kv->posv);
    free(kv->longv);
    free(kv->slots);
    free(kv);
}

void lmx_kv_reset(lmx_kv *kv) {
    kv->pos = 0;
    for (int r = 0; kv->ranks && r < kv->n_ranks; r++) kv->ranks[r]->pos = 0;
}
int lmx_kv_pos(const lmx_kv *kv) { return kv->pos; }
int lmx_kv_capacity(const lmx_kv *kv) { return kv->capacity; }
uint64_t lmx_kv_bytes(const lmx_kv *kv) { return kv->bytes; }
int lmx_kv_chunk(const lmx_kv *kv) { return kv->chunk; }

lmx_status lmx_kv_truncate(lmx_kv *kv, int n) {
    if (n < 0 || n > kv->pos) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv truncate to %d of %d", n, kv->pos);
    if (kv->ranks) { /* the ranks' caches hold the same positions: all keep them, or rank 0 says why not */
        for (int r = 0; r < kv->n_ranks; r++) LMX_TRY(lmx_kv_truncate(kv->ranks[r], n));
        kv->pos = n;
        return LMX_OK;
    }
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

/* [q, k per-head norm], RoPE of q and k, k/v into the cache, as one backend op (rope_qk_store) per run
 * of rows with the same rope table (longrope: a batched step may mix sequences on either side of
 * the original context; a single-sequence forward is one run). q, kk, vv: [T, *] rows. */
static lmx_status fused_qk_rope_store(lmx_lm *lm, const lm_pass *ps, int l, lmx_buf *q, lmx_buf *kk,
                                      const lmx_buf *vv) {
    const lmx_model_config *c = lm->cfg;
    const lm_shard *sh = &lm->shard;
    const lm_layer *L = &lm->layers[l];
    const size_t D = (size_t)c->head_dim, NQ = (size_t)sh->n_heads * D, NKV = (size_t)sh->n_kv_heads * D;
    for (int t0 = 0; t0 < ps->T;) {
        const bool lg = ps->use_long && ps->use_long[t0];
        int t1 = t0 + 1;
        while (t1 < ps->T && (ps->use_long && ps->use_long[t1]) == lg) t1++;
        const lmx_bweight *rt = L->sliding ? lm->rope_sliding : (lg ? lm->rope_full_long : lm->rope_full);
        lmx_kv_map m;
        if (ps->map) {
            m = *ps->map;
            m.seq += t0;
        }
        lmx_qk_rope_params p = {.n_tokens = t1 - t0,
                                .n_heads = sh->n_heads,
                                .n_kv_heads = sh->n_kv_heads,
                                .head_dim = c->head_dim,
                                .rot_dim = c->rotary_dim,
                                .capacity = ps->slots[l],
                                .q_off = (size_t)t0 * NQ,
                                .k_off = (size_t)t0 * NKV,
                                .v_off = (size_t)t0 * NKV,
                                .inv_freq = rt,
                                .mscale = L->sliding ? lm->mscale_sliding : lm->mscale_full,
                                .q_norm = c->qk_norm ? L->q_norm : NULL,
                                .k_norm = c->qk_norm ? L->k_norm : NULL,
                                .eps = (float)c->rms_norm_eps,
                                .norm_plus_one = c->norm_plus_one,
                                .map = ps->map ? &m : NULL};
        LMX_TRY(lm->be->ops->rope_qk_store(lm->be, q, kk, vv, ps->k[l], ps->v[l], &p, ps->pos + t0));
        t0 = t1;
    }
    return LMX_OK;
}

/* h[T, hidden] += x·Wᵀ (+ bias) through a row-parallel projection (o_proj, down_proj). Whole: one
 * matmul_add. Split over the ranks (W holds this rank's input columns, rank 0 the bias): rank 0 adds
 * its part into h and every other rank writes its part over h, so that the all-reduce leaves
 * h + Σ parts on every rank. */
static lmx_status residual_matmul(lmx_lm *lm, const lmx_bweight *w, const lmx_buf *x, int T, lmx_buf *h,
                                  bool split) {
    const lmx_backend_ops *op = lm->be->ops;
    if (!split) return op->matmul_add(lm->be, w, x, 0, T, h);
    if (lm->shard.rank == 0) LMX_TRY(op->matmul_add(lm->be, w, x, 0, T, h));
    else LMX_TRY(op->matmul(lm->be, w, x, 0, T, h));
    return op->all_reduce_sum(lm->be, h, 0, (size_t)T * (size_t)lm->cfg->hidden_size);
}

/* o[T, hidden] = x·Wᵀ (+ bias) summed over the ranks when split (gemma3's sandwich norms normalise
 * the whole projection before the residual add) */
static lmx_status full_matmul(lmx_lm *lm, const lmx_bweight *w, const lmx_buf *x, int T, lmx_buf *o, bool split) {
    const lmx_backend_ops *op = lm->be->ops;
    LMX_TRY(op->matmul(lm->be, w, x, 0, T, o));
    return split ? op->all_reduce_sum(lm->be, o, 0, (size_t)T * (size_t)lm->cfg->hidden_size) : LMX_OK;
}

/* The MLP block over T rows of s: s->x += mlp(norm(s->x)) (gemma3: with its sandwich norms). The
 * seam where a mixture-of-experts layer branches off (router + experts instead of gate/up/down). */
static lmx_status mlp_forward(lmx_lm *lm, lm_scratch *s, int l, int T) {
    const lmx_model_config *c = lm->cfg;
    const lm_shard *sh = &lm->shard;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const lm_layer *L = &lm->layers[l];
    const int H = c->hidden_size;
    const float eps = (float)c->rms_norm_eps;
    const bool p1 = c->norm_plus_one;
    const lmx_bweight *pre = c->sandwich_norms ? L->pre_ff_norm : L->post_attn_norm;
    LMX_TRY(op->rmsnorm(be, s->x, s->xn, T, H, pre, eps, p1)); /* [T, hidden] */
    if (L->moe) return lmx_moe_forward(lm, s, l, T); /* sparse block: h += Σ w_e · expert_e(m) */
    lmx_buf *g = s->g, *u = s->u;
    const lmx_act_kind act = lm_act_kind(c);
    if (T == 1 && L->gate_up && s->gu1) { /* one token: one fused gate|up matmul into gu1 = [g1 | u1] */
        g = s->g1;
        u = s->u1;
        LMX_TRY(op->matmul(be, L->gate_up, s->xn, 0, 1, s->gu1)); /* [2*inter] */
        LMX_TRY(op->act_mul(be, g, u, (size_t)T * sh->inter, act));
    } else if (T > 1 && L->gate_up && s->gu) { /* T > 1: one fused GEMM, then act(gate) * up into g */
        LMX_TRY(op->matmul(be, L->gate_up, s->xn, 0, T, s->gu));      /* [T, 2*inter] */
        LMX_TRY(op->act_mul_split(be, s->gu, T, sh->inter, act, g)); /* [T, inter] */
    } else {
        LMX_TRY(op->matmul(be, L->gate, s->xn, 0, T, g)); /* [T, inter] */
        LMX_TRY(op->matmul(be, L->up, s->xn, 0, T, u));   /* [T, inter] */
        LMX_TRY(op->act_mul(be, g, u, (size_t)T * sh->inter, act));
    }
    if (!c->sandwich_norms) {
        LMX_TRY(residual_matmul(lm, L->down, g, T, s->x, sh->mlp_split)); /* h += f */
    } else { /* gemma3: h += post_feedforward_layernorm(f) */
        LMX_TRY(full_matmul(lm, L->down, g, T, s->o, sh->mlp_split)); /* [T, hidden] */
        LMX_TRY(op->rmsnorm(be, s->o, s->o, T, H, L->post_ff_norm, eps, p1));
        LMX_TRY(op->add(be, s->x, s->o, (size_t)T * H));
    }
    return LMX_OK;
}

/* One decoder layer over the T rows of ps->s at positions ps->pos: the single-sequence forward (ring
 * caches) and the batched step (the pool's paged caches through ps->map) both run this. */
lmx_status lm_layer_forward(lmx_lm *lm, const lm_pass *ps, int l) {
    const lmx_model_config *c = lm->cfg;
    const lm_shard *sh = &lm->shard;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const lm_layer *L = &lm->layers[l];
    lm_scratch *s = ps->s;
    const int T = ps->T, H = c->hidden_size;
    const float eps = (float)c->rms_norm_eps;
    const bool p1 = c->norm_plus_one;

    /* attention block */
    LMX_TRY(op->rmsnorm(be, s->x, s->xn, T, H, L->in_norm, eps, p1)); /* [T, hidden] */
    /* one token through the fused q|k|v weight: one matmul into qkv1, whose views are q, k, v (a
     * T > 1 output would interleave the rows, so T > 1 keeps one matmul per view) */
    lmx_buf *q = s->q, *kk = s->kk, *vv = s->vv;
    if (T == 1 && L->qkv && s->qkv1) {
        q = s->q1;
        kk = s->k1;
        vv = s->v1;
        LMX_TRY(op->matmul(be, L->qkv, s->xn, 0, 1, s->qkv1)); /* [NH*D + 2*NKV*D] */
    } else {
        LMX_TRY(op->matmul(be, L->q, s->xn, 0, T, q));  /* [T, NH*D] */
        LMX_TRY(op->matmul(be, L->k, s->xn, 0, T, kk)); /* [T, NKV*D] */
        LMX_TRY(op->matmul(be, L->v, s->xn, 0, T, vv)); /* [T, NKV*D] */
    }
    LMX_TRY(fused_qk_rope_store(lm, ps, l, q, kk, vv));
    lmx_attn_params ap = {.n_tokens = T,
                          .n_heads = sh->n_heads,
                          .n_kv_heads = sh->n_kv_heads,
                          .head_dim = c->head_dim,
                          .capacity = ps->slots[l],
                          .window = L->sliding ? c->sliding_window : 0,
                          .scale = c->attn_scale,
                          .softcap = c->attn_logit_softcap,
                          .map = ps->map,
                          .sinks = L->sinks};
    LMX_TRY(op->attention(be, q, ps->k[l], ps->v[l], s->att, &ap, ps->pos)); /* [T, NH*D] */
    if (!c->sandwich_norms) {
        LMX_TRY(residual_matmul(lm, L->o, s->att, T, s->x, sh->attn_split)); /* h += o */
    } else { /* gemma3: h += post_attention_layernorm(o) */
        LMX_TRY(full_matmul(lm, L->o, s->att, T, s->o, sh->attn_split)); /* [T, hidden] */
        LMX_TRY(op->rmsnorm(be, s->o, s->o, T, H, L->post_attn_norm, eps, p1));
        LMX_TRY(op->add(be, s->x, s->o, (size_t)T * H));
    }
    return mlp_forward(lm, s, l, T);
}

/* logits [vocab] (in kv->logits) of row `row` of kv->x: final norm, head, soft-capping; a
 * vocabulary-split rank computes its rows' logits and all-gathers every rank's */
static lmx_status head_forward(lmx_lm *lm, lmx_kv *kv, int row) {
    const lmx_model_config *c = lm->cfg;
    const lm_shard *sh = &lm->shard;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const int H = c->hidden_size;
    if (row == 0) { /* decode: normalise row 0 of x straight into last (no copy) */
        LMX_TRY(op->rmsnorm(be, kv->s.x, kv->last, 1, H, lm->final_norm, (float)c->rms_norm_eps, c->norm_plus_one));
    } else {
        LMX_TRY(op->buf_copy(be, kv->last, 0, kv->s.x, (size_t)row * H, (size_t)H));
        LMX_TRY(op->rmsnorm(be, kv->last, kv->last, 1, H, lm->final_norm, (float)c->rms_norm_eps, c->norm_plus_one));
    }
    lmx_buf *out = sh->vocab_split ? kv->logits_part : kv->logits;
    LMX_TRY(op->matmul(be, lm->head, kv->last, 0, 1, out)); /* [vocab rows held] */
    if (c->final_logit_softcap > 0) LMX_TRY(op->softcap(be, out, (size_t)sh->vocab, c->final_logit_softcap));
    /* [n_ranks * vocab_slot]: rank r's rows at r * vocab_slot, so the first vocab_size are the logits */
    if (sh->vocab_split) LMX_TRY(op->all_gather(be, kv->logits_part, (size_t)sh->vocab_slot, kv->logits));
    return LMX_OK;
}

/* The ids of an embedding lookup of ids[T]: a vocabulary-split rank's own rows (lids [T]), else ids */
static const int32_t *embed_ids(const lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int T) {
    if (!lm->shard.vocab_split) return ids;
    lm_shard_local_ids(&lm->shard, ids, T, kv->lids);
    return kv->lids;
}

/* x[T, hidden] = the embedding rows of eids (embed_ids), × embed_scale; a vocabulary-split rank's
 * lookup leaves the other ranks' tokens zero and the all-reduce adds their rows */
static lmx_status embed_rows(lmx_lm *lm, const int32_t *eids, int T, lmx_buf *x) {
    const lmx_backend_ops *op = lm->be->ops;
    LMX_TRY(op->embed(lm->be, lm->embed, eids, T, lm->embed_scale, x)); /* [T, hidden] */
    if (!lm->shard.vocab_split) return LMX_OK;
    return op->all_reduce_sum(lm->be, x, 0, (size_t)T * (size_t)lm->cfg->hidden_size);
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
    lm_pass ps = {.s = &kv->s, .T = 1, .pos = kv->posv, .k = kv->k, .v = kv->v, .slots = kv->slots,
                  .use_long = kv->longv};
    for (int t = 0; t < kv->chunk && t < n; t++) kv->longv[t] = use_long; /* one rope table per call */
    if (n == 1 && op->step_begin && op->step_end) {
        kv->posv[0] = kv->pos;
        bool redo = true;
        const int variant = (use_long ? 1 : 0) | (head ? 2 : 0) | (a ? 4 : 0);
        const int32_t *eids = embed_ids(lm, kv, ids, 1);
        const lmx_step_inputs in = {.n_tokens = 1, .ids = eids, .pos = kv->posv};
        lmx_status st = op->step_begin(be, kv, variant, &in);
        if (st == LMX_OK) {
            st = embed_rows(lm, eids, 1, kv->s.x); /* [1, hidden] */
            for (int l = 0; st == LMX_OK && l < c->n_layers; l++) st = lm_layer_forward(lm, &ps, l);
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
        LMX_TRY(embed_rows(lm, embed_ids(lm, kv, ids + done, T), T, kv->s.x)); /* [T, hidden] */
        ps.T = T;
        for (int l = 0; l < c->n_layers; l++) LMX_TRY(lm_layer_forward(lm, &ps, l));
        done += T;
        pos += T;
        if (done == n && head) LMX_TRY(head_forward(lm, kv, T - 1));
    }
    if (a) LMX_TRY(op->sample(be, kv->logits, c->vocab_size, a));
    return LMX_OK;
}

lmx_status lm_forward_run(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, bool head, const lmx_sample_args *a,
                          float *logits, int32_t *token) {
    const lmx_backend_ops *op = lm->be->ops;
    const int vocab = lm->cfg->vocab_size;
    LMX_TRY(forward_ops(lm, kv, ids, n, head, a));
    if (a) {
        LMX_TRY(op->sample_result(lm->be, token));
        if (*token < 0 || *token >= vocab) *token = -1; /* undecided on the device: the host samples */
    }
    if (logits && (!a || *token < 0)) LMX_TRY(op->buf_read(lm->be, kv->logits, 0, logits, (size_t)vocab));
    kv->pos += n;
    return LMX_OK;
}

lmx_status lmx_lm_forward(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, float *logits) {
    LMX_TRY(forward_check(lm, kv, ids, n));
    if (lm->tp) return lm_tp_forward(lm, kv, ids, n, logits != NULL, NULL, logits, NULL);
    return lm_forward_run(lm, kv, ids, n, logits != NULL, NULL, logits, NULL);
}

bool lmx_lm_can_sample(const lmx_lm *lm) {
    const lmx_lm *r = lm && lm->tp ? lm_tp_rank(lm, 0) : lm; /* rank 0 samples the gathered logits */
    return r && r->be->ops->sample && r->be->ops->sample_result;
}

lmx_status lmx_lm_forward_sample(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, const lmx_sample_args *a,
                                 float *logits, int32_t *token) {
    if (!token || !logits || !a) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward_sample: NULL argument");
    *token = -1;
    if (!lmx_lm_can_sample(lm)) return lmx_lm_forward(lm, kv, ids, n, logits);
    LMX_TRY(forward_check(lm, kv, ids, n));
    if (lm->tp) return lm_tp_forward(lm, kv, ids, n, true, a, logits, token);
    return lm_forward_run(lm, kv, ids, n, true, a, logits, token);
}
