/* lm_moe.c — the sparse MLP block of qwen3_moe and mixtral, on the backend's mixture-of-experts ops:
 *
 *   r = xn · Wrᵀ (+ b)                                    router logits [T, n_experts]
 *   route(r): per row the k experts and their weights     (moe_route: the family's rule, a table on
 *                                                          the device: expert ids, weights, the rows
 *                                                          grouped by expert)
 *   h = act(gate_e(xn)) * up_e(xn)                        [T*k, moe_inter] per (row, expert) in
 *                                                          route order, over the gathered rows
 *                                                          (moe_gate_up, the layer's activation kind)
 *   f = down_e(h)                                         [T*k, hidden] (moe_matmul)
 *   x[t] += Σ_j w[t, j] · f[(t, j)]                       (moe_combine, experts in increasing order)
 *
 * Nothing is read back to the host: a one-token step is the same op sequence for every token (the
 * expert choice lives in the table), so the backend's step hooks capture it. Only the chosen experts'
 * weights are read (a decode step touches k experts per layer); a prefill multiplies each expert's
 * rows at once (a grouped GEMM on the GPU). Family specifics are data of the layer: the activation
 * kind and, where a checkpoint has them, per-expert biases inside the expert stacks.
 */
#include <stdlib.h>
#include <string.h>

#include "model/lm_internal.h"
#include "util/error.h"

struct lm_moe_scratch {
    int chunk;
    lmx_buf *logits; /* [chunk, n_experts] router output */
    lmx_buf *table;  /* [lmx_moe_table_floats(chunk, k, n_experts)] the routing (backend.h lmx_moe_routing) */
    lmx_buf *g, *u;  /* [chunk * k, moe_inter] act(gate) * up of each expert row; the up rows (scratch) */
    lmx_buf *f;      /* [chunk * k, hidden] each expert row's output */
};

lmx_moe_rule lmx_moe_rule_of(const lmx_model_config *c) {
    return c->moe_norm_topk ? LMX_MOE_TOPK_SOFTMAX : LMX_MOE_SOFTMAX_TOPK;
}

/* the scratch buffers' sizes (elements), one table of them for create and bound */
static void scratch_sizes(const lmx_model_config *c, int chunk, size_t n[5]) {
    const size_t C = (size_t)chunk, E = (size_t)c->n_experts, S = C * (size_t)c->n_experts_per_tok;
    n[0] = C * E;
    n[1] = lmx_moe_table_floats(chunk, c->n_experts_per_tok, c->n_experts);
    n[2] = n[3] = S * (size_t)c->moe_intermediate_size;
    n[4] = S * (size_t)c->hidden_size;
}

uint64_t lmx_moe_scratch_bound(const lmx_model_config *c, int chunk) {
    if (!c->layer_moe) return 0;
    size_t n[5];
    scratch_sizes(c, chunk, n);
    uint64_t sum = 0;
    for (int i = 0; i < 5; i++) sum += n[i];
    return sizeof(float) * sum;
}

lmx_status lmx_moe_scratch_create(lmx_lm *lm, int chunk, lm_moe_scratch **out, uint64_t *bytes) {
    *out = NULL;
    *bytes = 0;
    lmx_backend *be = lm->be;
    lm_moe_scratch *s = calloc(1, sizeof *s);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "moe scratch");
    s->chunk = chunk;
    size_t n[5];
    scratch_sizes(lm->cfg, chunk, n);
    lmx_buf **bufs[5] = {&s->logits, &s->table, &s->g, &s->u, &s->f};
    lmx_status st = LMX_OK;
    for (int i = 0; st == LMX_OK && i < 5; i++) {
        st = be->ops->buf_alloc(be, n[i], bufs[i]);
        *bytes += n[i] * sizeof(float);
    }
    if (st != LMX_OK) {
        lmx_moe_scratch_destroy(lm, s);
        return st;
    }
    *out = s;
    return LMX_OK;
}

void lmx_moe_scratch_destroy(lmx_lm *lm, lm_moe_scratch *s) {
    if (!s) return;
    lmx_backend *be = lm->be;
    lmx_buf *bs[] = {s->logits, s->table, s->g, s->u, s->f};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) be->ops->buf_free(be, bs[i]);
    free(s);
}

void lmx_moe_layer_free(lmx_lm *lm, lm_moe_layer *m) {
    if (!m) return;
    lmx_backend *be = lm->be;
    lmx_bweight *ws[] = {m->router, m->gate, m->up, m->down};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) be->ops->weight_free(be, ws[i]);
    free(m);
}

lmx_status lmx_moe_forward(lmx_lm *lm, lm_scratch *ls, int l, int T) {
    const lmx_model_config *c = lm->cfg;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const lm_moe_layer *m = lm->layers[l].moe;
    lm_moe_scratch *s = ls->moe;
    if (!m || !s || T < 1 || T > s->chunk)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "moe forward: layer %d is not ready (T %d)", l, T);
    const int H = c->hidden_size, K = c->n_experts_per_tok;
    const lmx_moe_routing r = {.table = s->table, .n_tokens = T, .top_k = K, .n_experts = c->n_experts,
                               .rule = lmx_moe_rule_of(c)};
    LMX_TRY(op->matmul(be, m->router, ls->xn, 0, T, s->logits));         /* [T, E] */
    LMX_TRY(op->moe_route(be, s->logits, &r));                            /* the table */
    LMX_TRY(op->moe_gate_up(be, m->gate, m->up, ls->xn, &r, m->act, s->g, s->u)); /* g = act(gate) * up [T*k, I] */
    LMX_TRY(op->moe_matmul(be, m->down, s->g, false, &r, s->f));                  /* [T*k, H] */
    return op->moe_combine(be, ls->x, s->f, H, &r);                   /* x += Σ w · f */
}
