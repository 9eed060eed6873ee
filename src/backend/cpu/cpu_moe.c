/* cpu_moe.c — the CPU backend's mixture-of-experts ops (backend.h: weight_upload_experts, moe_route,
 * moe_matmul, moe_combine; the table layout is lmx_moe_routing's).
 *
 *   routing   per row: the k largest logits (ties to the lower index, NaN as -inf), weights
 *             exp(r - max) / Σ in double (Σ over all E, or over the k in choice order); then a
 *             counting sort of the T*k slots by expert, stable, so each expert's rows are increasing;
 *   experts   a stack keeps each expert as its own uploaded weight (a row range of the stored
 *             [E, rows, cols] tensor, or the Hub's per-expert tensor; 4/8-bit experts are repacked, each);
 *             moe_matmul runs the backend's matmul once per expert that received rows, over those
 *             rows (gathered into a scratch when they are token rows; one row is read in place);
 *   gate_up   the two expert matmuls over the token rows, then the backend's act_mul;
 *   combine   the backend's rows_axpy once per expert in increasing expert order.
 * That is the sequence the model ran on the host before these ops existed (the same matmuls over the
 * same rows, the same additions in the same order), so results are bit for bit the same; a row's
 * matmul result never depends on the other rows of the call (cpu_compute.c), so the grouping does
 * not change a row either. The scratch (gathered rows, one expert's row indices and weights) is
 * grow-only and guarded by its own lock, taken before the op lock of the matmuls it calls.
 */
#include <math.h>

#include "backend/backend_fuse.h"
#include "backend/cpu/cpu_backend_internal.h"

/* ---- scratch ---- */

void lmx_cpu_moe_init(cpu_moe_scratch *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
}

void lmx_cpu_moe_free(cpu_moe_scratch *m) {
    pthread_mutex_destroy(&m->lock);
    free(m->x);
    free(m->rows);
    free(m->w);
    memset(m, 0, sizeof *m);
}

static lmx_status grow_x(cpu_moe_scratch *m, size_t n) {
    if (n <= m->x_len) return LMX_OK;
    float *p = realloc(m->x, n * sizeof *p);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: moe scratch of %zu floats", n);
    m->x = p;
    m->x_len = n;
    return LMX_OK;
}

static lmx_status grow_rows(cpu_moe_scratch *m, size_t n) {
    if (n <= m->rows_len) return LMX_OK;
    int32_t *r = realloc(m->rows, n * sizeof *r);
    if (r) m->rows = r;
    float *w = r ? realloc(m->w, n * sizeof *w) : NULL;
    if (w) m->w = w;
    if (!r || !w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: moe scratch of %zu rows", n);
    m->rows_len = n;
    return LMX_OK;
}

/* ---- the table (backend.h lmx_moe_routing) ---- */

typedef struct table_view {
    float *w;
    int32_t *ids, *order, *pos, *start;
    int S;
} table_view;

static table_view table_of(const lmx_moe_routing *r) {
    const int S = r->n_tokens * r->top_k;
    float *b = r->table->data;
    table_view v = {b, (int32_t *)(void *)(b + S), (int32_t *)(void *)(b + 2 * (size_t)S),
                    (int32_t *)(void *)(b + 3 * (size_t)S), (int32_t *)(void *)(b + 4 * (size_t)S), S};
    return v;
}

static lmx_status check_routing(const lmx_moe_routing *r) {
    LMX_BACKEND_TRY(lmx_backend_check_moe_routing("cpu", r));
    CHECK_RANGE(r->table, 0, lmx_moe_table_floats(r->n_tokens, r->top_k, r->n_experts), "moe table");
    return LMX_OK;
}

/* a table moe_route wrote for r (moe_matmul / moe_combine index memory with it) */
static lmx_status check_table(const lmx_moe_routing *r) {
    const table_view v = table_of(r);
    bool ok = v.start[0] == 0 && v.start[r->n_experts] == v.S;
    for (int e = 0; ok && e < r->n_experts; e++) ok = v.start[e] <= v.start[e + 1];
    for (int i = 0; ok && i < v.S; i++) ok = v.order[i] >= 0 && v.order[i] < v.S;
    return ok ? LMX_OK : lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: the moe table was not written by moe_route");
}

/* ---- moe_route ---- */

static inline float rank_of(float v) { return isnan(v) ? -INFINITY : v; }

/* One row: logits [E] → the k chosen experts idx[k] and their weights w[k] by the rule. */
static void route_row(const float *logits, int E, int k, lmx_moe_rule rule, int32_t *idx, float *w) {
    float mx = logits[0];
    for (int e = 1; e < E; e++)
        if (logits[e] > mx) mx = logits[e];
    double all = 0;
    for (int e = 0; e < E; e++) all += exp((double)logits[e] - mx);
    for (int j = 0; j < k; j++) { /* the largest remaining logit (softmax is monotonic), ties to the lower index */
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int i = 0; i < j && !taken; i++) taken = idx[i] == e;
            if (!taken && (best < 0 || rank_of(logits[e]) > rank_of(logits[best]))) best = e;
        }
        idx[j] = best;
    }
    double top = 0;
    for (int j = 0; j < k; j++) top += exp((double)logits[idx[j]] - mx);
    const double den = rule == LMX_MOE_TOPK_SOFTMAX ? top : all;
    for (int j = 0; j < k; j++) w[j] = (float)(exp((double)logits[idx[j]] - mx) / den);
}

lmx_status lmx_cpu_moe_route(lmx_backend *be, const lmx_buf *logits, const lmx_moe_routing *r) {
    (void)be;
    LMX_BACKEND_TRY(check_routing(r));
    const int T = r->n_tokens, K = r->top_k, E = r->n_experts;
    CHECK_RANGE(logits, 0, (size_t)T * (size_t)E, "moe_route logits");
    table_view v = table_of(r);
    for (int t = 0; t < T; t++)
        route_row(logits->data + (size_t)t * E, E, K, r->rule, v.ids + (size_t)t * K, v.w + (size_t)t * K);
    /* counting sort of the slots by expert, in slot order (so each expert's rows are increasing) */
    memset(v.start, 0, (size_t)(E + 1) * sizeof *v.start);
    for (int s = 0; s < v.S; s++) v.start[v.ids[s] + 1]++;
    for (int e = 0; e < E; e++) v.start[e + 1] += v.start[e];
    for (int s = 0; s < v.S; s++) { /* start[e] advances while expert e's slots are placed, then is restored */
        const int p = v.start[v.ids[s]]++;
        v.order[p] = s;
        v.pos[s] = p;
    }
    for (int e = E; e > 0; e--) v.start[e] = v.start[e - 1];
    v.start[0] = 0;
    return LMX_OK;
}

/* ---- weight_upload_experts ---- */

lmx_status lmx_cpu_weight_upload_experts(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **out) {
    *out = NULL;
    LMX_BACKEND_TRY(lmx_backend_check_expert_parts("cpu", parts, n));
    lmx_bweight *w = calloc(1, sizeof *w);
    lmx_bweight **ex = calloc((size_t)n, sizeof *ex);
    if (!w || !ex) {
        free(w);
        free(ex);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: expert stack", parts[0].name);
    }
    w->kind = LMX_WEIGHT_EXPERTS;
    w->rows = parts[0].rows;
    w->cols = parts[0].cols;
    w->n_experts = n;
    w->experts = ex;
    for (int e = 0; e < n; e++) {
        lmx_status st = be->ops->weight_upload(be, &parts[e], &ex[e]);
        if (st != LMX_OK) {
            be->ops->weight_free(be, w);
            return lmx_error_prefix(st, "expert %d", e);
        }
    }
    *out = w;
    return LMX_OK;
}

/* ---- moe_matmul ---- */

/* a view of floats [off, off + n) of b (stack storage: the ops take it like any buffer) */
static inline lmx_buf view_of(const lmx_buf *b, size_t off, size_t n) {
    return (lmx_buf){.n = n, .data = b->data + off, .view = true};
}

static lmx_status moe_matmul_locked(lmx_backend *be, cpu_moe_scratch *ms, const lmx_bweight *w, const lmx_buf *x,
                                    bool gather, const lmx_moe_routing *r, lmx_buf *y) {
    const table_view v = table_of(r);
    const size_t rows = (size_t)w->rows, cols = (size_t)w->cols;
    for (int e = 0; e < r->n_experts; e++) {
        const int i0 = v.start[e], n = v.start[e + 1] - i0;
        if (n == 0) continue; /* an expert without rows is never read */
        lmx_buf yv = view_of(y, (size_t)i0 * rows, (size_t)n * rows);
        const lmx_buf *src = x;
        size_t off = (size_t)i0 * cols;
        lmx_buf xg;
        if (gather && n == 1) { /* one token row: read in place */
            off = (size_t)(v.order[i0] / r->top_k) * cols;
        } else if (gather) { /* the expert's token rows, gathered: xg[i] = x[order[i0 + i] / k] */
            LMX_BACKEND_TRY(grow_x(ms, (size_t)n * cols));
            for (int i = 0; i < n; i++)
                memcpy(ms->x + (size_t)i * cols, x->data + (size_t)(v.order[i0 + i] / r->top_k) * cols,
                       cols * sizeof(float));
            xg = (lmx_buf){.n = (size_t)n * cols, .data = ms->x, .view = true};
            src = &xg;
            off = 0;
        }
        LMX_BACKEND_TRY(lmx_cpu_matmul(be, w->experts[e], src, off, n, &yv));
    }
    return LMX_OK;
}

lmx_status lmx_cpu_moe_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, bool gather,
                              const lmx_moe_routing *r, lmx_buf *y) {
    LMX_BACKEND_TRY(check_routing(r));
    LMX_BACKEND_TRY(check_table(r));
    LMX_BACKEND_TRY(lmx_backend_check_moe_matmul("cpu", r, w->kind, w->n_experts, w->rows, w->cols, x->n, gather,
                                                 y->n));
    if (x == y || x->data == y->data) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: moe_matmul with y == x");
    cpu_moe_scratch *ms = &CPU(be)->moe;
    pthread_mutex_lock(&ms->lock);
    lmx_status st = moe_matmul_locked(be, ms, w, x, gather, r, y);
    pthread_mutex_unlock(&ms->lock);
    return st;
}

/* ---- moe_gate_up: the sequence it stands for ---- */

lmx_status lmx_cpu_moe_gate_up(lmx_backend *be, const lmx_bweight *gate, const lmx_bweight *up, const lmx_buf *x,
                               const lmx_moe_routing *r, lmx_act_kind act, lmx_buf *h, lmx_buf *u) {
    if (gate->rows != up->rows || gate->cols != up->cols || h == u)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: moe_gate_up: gate [%lld, %lld] and up [%lld, %lld]",
                         (long long)gate->rows, (long long)gate->cols, (long long)up->rows, (long long)up->cols);
    LMX_BACKEND_TRY(lmx_cpu_moe_matmul(be, gate, x, true, r, h));
    LMX_BACKEND_TRY(lmx_cpu_moe_matmul(be, up, x, true, r, u));
    return lmx_cpu_act_mul(be, h, u, (size_t)r->n_tokens * (size_t)r->top_k * (size_t)gate->rows, act);
}

/* ---- moe_combine ---- */

static lmx_status moe_combine_locked(lmx_backend *be, cpu_moe_scratch *ms, lmx_buf *x, const lmx_buf *y, int dim,
                                     const lmx_moe_routing *r) {
    const table_view v = table_of(r);
    LMX_BACKEND_TRY(grow_rows(ms, (size_t)v.S));
    for (int e = 0; e < r->n_experts; e++) { /* experts in increasing order: each row's terms likewise */
        const int i0 = v.start[e], n = v.start[e + 1] - i0;
        if (n == 0) continue;
        for (int i = 0; i < n; i++) {
            const int s = v.order[i0 + i];
            ms->rows[i] = s / r->top_k;
            ms->w[i] = v.w[s];
        }
        const lmx_buf yv = view_of(y, (size_t)i0 * (size_t)dim, (size_t)n * (size_t)dim);
        LMX_BACKEND_TRY(lmx_cpu_rows_axpy(be, x, &yv, n, dim, ms->rows, ms->w));
    }
    return LMX_OK;
}

lmx_status lmx_cpu_moe_combine(lmx_backend *be, lmx_buf *x, const lmx_buf *y, int dim, const lmx_moe_routing *r) {
    LMX_BACKEND_TRY(check_routing(r));
    LMX_BACKEND_TRY(check_table(r));
    LMX_BACKEND_TRY(lmx_backend_check_moe_combine("cpu", r, x->n, y->n, dim));
    cpu_moe_scratch *ms = &CPU(be)->moe;
    pthread_mutex_lock(&ms->lock);
    lmx_status st = moe_combine_locked(be, ms, x, y, dim, r);
    pthread_mutex_unlock(&ms->lock);
    return st;
}
