/* lm_moe.c — the sparse MLP block of qwen3_moe and mixtral:
 *
 *   r = xn · Wrᵀ                                   router logits [T, n_experts]
 *   per row t: top-k experts of softmax(r[t]), weights p_e / Σ (over the k if renormalised, else all)
 *   per expert e with rows R_e routed to it:
 *     f = down_e(act(gate_e(xn[R_e])) * up_e(xn[R_e]))       [|R_e|, hidden]
 *     x[R_e] += w · f                                        (backend op rows_axpy)
 *
 * Routing runs on the host: the [T, n_experts] logits are read back (buf_read) once per layer, so a
 * one-token step cannot be captured by the backend's step hooks (lm_forward.c skips them for sparse
 * models). Only the selected experts' weights are read: a decode step touches k experts per layer.
 * Rows of an expert are gathered into a scratch block with buf_copy (one row needs no copy: matmul
 * reads it at its offset). Experts run in increasing index order for prefill and decode alike, so a
 * row's sum does not depend on which other rows share the call.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/lm_internal.h"
#include "util/error.h"

struct lm_moe_scratch {
    int chunk;
    lmx_buf *logits;  /* [chunk, n_experts] router output */
    lmx_buf *xe;      /* [chunk, hidden] the rows routed to one expert, gathered */
    lmx_buf *ge, *ue; /* [chunk, moe_inter] gate (then act(gate) * up) and up */
    lmx_buf *de;      /* [chunk, hidden] the expert's output rows */
    float *logits_h;  /* host [chunk * n_experts] */
    int32_t *top;     /* host [chunk * k] chosen experts of each row */
    float *topw;      /* host [chunk * k] their weights */
    int32_t *start;   /* host [n_experts + 1] counting sort: expert e's entries are [start[e], start[e+1]) */
    int32_t *rows;    /* host [chunk * k] rows, grouped by expert */
    float *roww;      /* host [chunk * k] their weights */
};

#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        lmx_status st_ = (x);                                                                                  \
        if (st_ != LMX_OK) return st_;                                                                         \
    } while (0)

void lmx_moe_route(const float *logits, int n_experts, int k, bool renorm, int32_t *idx, float *w) {
    float mx = logits[0];
    for (int e = 1; e < n_experts; e++)
        if (logits[e] > mx) mx = logits[e];
    double all = 0;
    for (int e = 0; e < n_experts; e++) all += exp((double)logits[e] - mx);
    /* top-k by logit (softmax is monotonic), ties to the lower index */
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n_experts; e++) {
            bool taken = false;
            for (int i = 0; i < j && !taken; i++) taken = idx[i] == e;
            if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
        }
        idx[j] = best;
    }
    double top = 0;
    for (int j = 0; j < k; j++) top += exp((double)logits[idx[j]] - mx);
    const double den = renorm ? top : all;
    for (int j = 0; j < k; j++) w[j] = (float)(exp((double)logits[idx[j]] - mx) / den);
}

uint64_t lmx_moe_scratch_bound(const lmx_model_config *c, int chunk) {
    if (!c->layer_moe) return 0;
    const uint64_t C = (uint64_t)chunk, H = (uint64_t)c->hidden_size, I = (uint64_t)c->moe_intermediate_size;
    return sizeof(float) * C * ((uint64_t)c->n_experts + 2 * H + 2 * I);
}

lmx_status lmx_moe_scratch_create(lmx_lm *lm, int chunk, lm_moe_scratch **out, uint64_t *bytes) {
    *out = NULL;
    *bytes = 0;
    const lmx_model_config *c = lm->cfg;
    lmx_backend *be = lm->be;
    lm_moe_scratch *s = calloc(1, sizeof *s);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "moe scratch");
    s->chunk = chunk;
    const size_t C = (size_t)chunk, E = (size_t)c->n_experts, K = (size_t)c->n_experts_per_tok;
    const size_t H = (size_t)c->hidden_size, I = (size_t)c->moe_intermediate_size;
    s->logits_h = malloc(C * E * sizeof *s->logits_h);
    s->top = malloc(C * K * sizeof *s->top);
    s->topw = malloc(C * K * sizeof *s->topw);
    s->start = malloc((E + 1) * sizeof *s->start);
    s->rows = malloc(C * K * sizeof *s->rows);
    s->roww = malloc(C * K * sizeof *s->roww);
    lmx_status st = (s->logits_h && s->top && s->topw && s->start && s->rows && s->roww)
                        ? LMX_OK
                        : lmx_error(LMX_ERR_OUT_OF_MEMORY, "moe scratch");
    struct {
        lmx_buf **b;
        size_t n;
    } bufs[] = {{&s->logits, C * E}, {&s->xe, C * H}, {&s->ge, C * I}, {&s->ue, C * I}, {&s->de, C * H}};
    for (size_t i = 0; st == LMX_OK && i < sizeof bufs / sizeof bufs[0]; i++) {
        st = be->ops->buf_alloc(be, bufs[i].n, bufs[i].b);
        *bytes += bufs[i].n * sizeof(float);
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
    lmx_buf *bs[] = {s->logits, s->xe, s->ge, s->ue, s->de};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) be->ops->buf_free(be, bs[i]);
    free(s->logits_h);
    free(s->top);
    free(s->topw);
    free(s->start);
    free(s->rows);
    free(s->roww);
    free(s);
}

void lmx_moe_layer_free(lmx_lm *lm, lm_moe_layer *m) {
    if (!m) return;
    lmx_backend *be = lm->be;
    be->ops->weight_free(be, m->router);
    for (int e = 0; e < lm->cfg->n_experts; e++) {
        if (m->gate) be->ops->weight_free(be, m->gate[e]);
        if (m->up) be->ops->weight_free(be, m->up[e]);
        if (m->down) be->ops->weight_free(be, m->down[e]);
    }
    free(m->gate);
    free(m->up);
    free(m->down);
    free(m);
}

/* Routes rows 0..T of the read-back logits and groups the (row, weight) pairs by expert. */
static void group_by_expert(const lmx_model_config *c, lm_moe_scratch *s, int T) {
    const int E = c->n_experts, K = c->n_experts_per_tok;
    for (int t = 0; t < T; t++)
        lmx_moe_route(s->logits_h + (size_t)t * E, E, K, c->moe_norm_topk, s->top + (size_t)t * K,
                      s->topw + (size_t)t * K);
    memset(s->start, 0, (size_t)(E + 1) * sizeof *s->start);
    for (int i = 0; i < T * K; i++) s->start[s->top[i] + 1]++;
    for (int e = 0; e < E; e++) s->start[e + 1] += s->start[e];
    /* fill in row order, so each expert's rows are increasing; start[e] advances, then is restored */
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++) {
            int e = s->top[t * K + j], at = s->start[e]++;
            s->rows[at] = t;
            s->roww[at] = s->topw[t * K + j];
        }
    for (int e = E; e > 0; e--) s->start[e] = s->start[e - 1];
    s->start[0] = 0;
}

lmx_status lmx_moe_forward(lmx_lm *lm, lm_scratch *ls, int l, int T) {
    const lmx_model_config *c = lm->cfg;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const lm_moe_layer *m = lm->layers[l].moe;
    lm_moe_scratch *s = ls->moe;
    if (!m || !s || T > s->chunk || !op->rows_axpy)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "moe forward: layer %d is not ready (T %d)", l, T);
    const int E = c->n_experts, H = c->hidden_size, I = c->moe_intermediate_size;
    const lmx_act_kind act = lm_act_kind(c); /* gpt_oss: the clamped SwiGLU */
    TRY(op->matmul(be, m->router, ls->xn, 0, T, s->logits));                     /* [T, E] */
    TRY(op->buf_read(be, s->logits, 0, s->logits_h, (size_t)T * (size_t)E));     /* synchronises */
    group_by_expert(c, s, T);
    for (int e = 0; e < E; e++) {
        const int n = s->start[e + 1] - s->start[e];
        if (n == 0) continue;
        const int32_t *rows = s->rows + s->start[e];
        const lmx_buf *src = ls->xn;
        size_t off = (size_t)rows[0] * H;
        if (n > 1) { /* gather the expert's rows: xe[i] = xn[rows[i]] */
            for (int i = 0; i < n; i++)
                TRY(op->buf_copy(be, s->xe, (size_t)i * H, ls->xn, (size_t)rows[i] * H, (size_t)H));
            src = s->xe;
            off = 0;
        }
        TRY(op->matmul(be, m->gate[e], src, off, n, s->ge)); /* [n, I] */
        TRY(op->matmul(be, m->up[e], src, off, n, s->ue));   /* [n, I] */
        TRY(op->act_mul(be, s->ge, s->ue, (size_t)n * I, act));
        TRY(op->matmul(be, m->down[e], s->ge, 0, n, s->de)); /* [n, H] */
        TRY(op->rows_axpy(be, ls->x, s->de, n, H, rows, s->roww + s->start[e]));
    }
    return LMX_OK;
}
