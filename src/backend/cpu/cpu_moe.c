/* cpu_moe.c — the CPU backend's mixture-of-experts ops (backend.h: weight_upload_experts, moe_route,
 * moe_matmul, moe_combine; the table layout is lmx_moe_routing's).
 *
 *   routing   per row: the k largest logits (ties to the lower index, NaN as -inf), weights
 *             exp(r - max) / Σ in double (Σ over all E, or over the k in choice order); then a
 *             counting sort of the T*k slots by expert, stable, so each expert's rows are increasing;
 *   experts   a stack keeps each expert as its own uploaded weight (a row range of the stored
 *             [E, rows, cols] tensor, or the Hub's per-expert tensor; the SIMD levels repack each);
 *   grouped   4/8-bit experts in tiles (cpu_qtile.h): the rows' int16 activations are quantized
 *             once (the token rows once for gate and up; the experts' gathered rows are copies of
 *             them), then ONE pool run covers the 16-row tiles of every expert that received rows
 *             (gate and up of the k experts together; down of the k experts), each item a tile
 *             range of one expert calling the level's tile kernel as a per-expert matmul would: a
 *             decode layer's experts are 2 pool runs, not 3k;
 *   other     weights without tiles (scalar level, 2/3/5/6 bits, fp modes, dense): moe_matmul runs
 *             the backend's matmul once per expert that received rows, over those rows (gathered
 *             into a scratch when they are token rows; one row is read in place);
 *   gate_up   the two expert matmuls over the token rows, then the backend's act_mul;
 *   combine   the backend's rows_axpy once per expert in increasing expert order.
 * That is the sequence the model ran on the host before these ops existed (the same matmuls over the
 * same rows, the same additions in the same order), so results are bit for bit the same; a row's
 * matmul result never depends on the other rows of the call or on the split of its tiles
 * (cpu_compute.c, cpu_qtile.c), so neither the grouping nor the pool items change a row. The
 * scratch (gathered rows, their activations, the run's items, one expert's row indices and weights)
 * is grow-only and guarded by its own lock, taken before the op lock.
 */
#include <math.h>

#include "backend/backend_fuse.h"
#include "backend/cpu/cpu_backend_internal.h"
#include "backend/cpu/cpu_qtile.h"

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
    free(m->xq);
    free(m->xds);
    free(m->jobs);
    free(m->chunks);
    memset(m, 0, sizeof *m);
}

/* *p [*len] of elem-byte elements grown to at least n (never shrinks) */
static lmx_status grow(void **p, size_t *len, size_t n, size_t elem) {
    if (n <= *len) return LMX_OK;
    void *q = realloc(*p, n * elem);
    if (!q) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: moe scratch of %zu x %zu bytes", n, elem);
    *p = q;
    *len = n;
    return LMX_OK;
}

static lmx_status grow_x(cpu_moe_scratch *m, size_t n) { return grow((void **)&m->x, &m->x_len, n, sizeof *m->x); }

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

/* ---- the grouped tile run ---- */

/* one expert's matmul over its rows, as cpu_matmul_qtile would run it */
typedef struct cpu_moe_job {
    const lmx_bweight *w;   /* the expert's repacked [rows, cols] weight */
    const int16_t *xq;      /* [n, cols] its rows' int16 activations */
    const float *xd, *xs;   /* [n, groups] their steps and scaled sums */
    float *y;               /* [n, rows] */
    int n;
} cpu_moe_job;

/* tiles [b0, b1) of jobs[job]: one pool item */
typedef struct cpu_moe_chunk {
    int32_t job, b0, b1;
} cpu_moe_chunk;

/* the activations one stack reads: the quantized rows, [rows, cols] and [rows, groups] x2 */
typedef struct moe_acts {
    int16_t *xq;
    float *xd, *xs;
    int64_t cols;
    int groups;
} moe_acts;

static inline const int16_t *acts_xq(const moe_acts *a, size_t row) { return a->xq + row * (size_t)a->cols; }
static inline const float *acts_xd(const moe_acts *a, size_t row) { return a->xd + row * (size_t)a->groups; }
static inline const float *acts_xs(const moe_acts *a, size_t row) { return a->xs + row * (size_t)a->groups; }

/* true when every expert of w that received rows is in 16-row tiles at the backend's level */
static bool tiled(const cpu_backend *c, const lmx_bweight *w, const table_view *v, int n_experts) {
    if (!c->qt) return false;
    for (int e = 0; e < n_experts; e++)
        if (v->start[e + 1] > v->start[e] && !w->experts[e]->pk) return false;
    return true;
}

typedef struct quant_ctx {
    const lmx_qtile_kernels *k;
    const float *x; /* [rows, cols] */
    const moe_acts *a;
    int G;
} quant_ctx;

/* rows [t0, t1) of the int16 activation quantization (a row's result does not depend on the others) */
static void quant_run(void *vctx, int64_t t0, int64_t t1, int thread) {
    (void)thread;
    const quant_ctx *q = vctx;
    const moe_acts *a = q->a;
    q->k->quant_x(q->x + (size_t)t0 * (size_t)a->cols, (int)(t1 - t0), a->cols, q->G, a->xq + (size_t)t0 * (size_t)a->cols,
                  a->xd + (size_t)t0 * (size_t)a->groups, a->xs + (size_t)t0 * (size_t)a->groups);
}

/* The activations of the S route-order rows of a stack of [*, cols] experts with groups of G, into
 * the scratch: gather: x [T, cols] token rows quantized once (rows 0..T), and the rows of experts
 * with more than one row copied into route order (rows T + i); else x [S, cols] quantized as it is.
 * Run under op_lock (prefill quantizes on the pool). */
static lmx_status quantize_acts(cpu_backend *c, cpu_moe_scratch *ms, const float *x, bool gather, int64_t cols, int G,
                                const lmx_moe_routing *r, moe_acts *a) {
    const table_view v = table_of(r);
    const size_t T = (size_t)r->n_tokens, S = (size_t)v.S, rows = gather ? T + S : S, groups = (size_t)(cols / G);
    LMX_BACKEND_TRY(grow((void **)&ms->xq, &ms->xq_len, rows * (size_t)cols, sizeof *ms->xq));
    LMX_BACKEND_TRY(grow((void **)&ms->xds, &ms->xds_len, 2 * rows * groups, sizeof *ms->xds));
    *a = (moe_acts){ms->xq, ms->xds, ms->xds + rows * groups, cols, (int)groups};
    quant_ctx q = {c->qt, x, a, G};
    lmx_thread_pool_run(c->pool, gather ? (int64_t)T : (int64_t)S, 4, quant_run, &q);
    if (!gather) return LMX_OK;
    for (int e = 0; e < r->n_experts; e++) {
        const int i0 = v.start[e], n = v.start[e + 1] - i0;
        for (int i = 0; n > 1 && i < n; i++) { /* one row is read in place (expert_job) */
            const size_t t = (size_t)(v.order[i0 + i] / r->top_k), d = T + (size_t)i0 + (size_t)i;
            memcpy(a->xq + d * (size_t)cols, acts_xq(a, t), (size_t)cols * sizeof *a->xq);
            memcpy(a->xd + d * groups, acts_xd(a, t), groups * sizeof *a->xd);
            memcpy(a->xs + d * groups, acts_xs(a, t), groups * sizeof *a->xs);
        }
    }
    return LMX_OK;
}

/* expert e of w over its n >= 1 rows from i0 (route order) of a, into y [S, rows] */
static cpu_moe_job expert_job(const lmx_bweight *w, int e, int i0, int n, const moe_acts *a, bool gather,
                              const lmx_moe_routing *r, float *y) {
    const table_view v = table_of(r);
    size_t row = (size_t)i0;
    if (gather) row = n == 1 ? (size_t)(v.order[i0] / r->top_k) : (size_t)r->n_tokens + (size_t)i0;
    return (cpu_moe_job){w->experts[e], acts_xq(a, row), acts_xd(a, row), acts_xs(a, row),
                         y + (size_t)i0 * (size_t)w->rows, n};
}

typedef struct group_ctx {
    const lmx_qtile_kernels *k;
    const cpu_moe_job *jobs;
    const cpu_moe_chunk *chunks;
} group_ctx;

static void group_run(void *vctx, int64_t c0, int64_t c1, int thread) {
    (void)thread;
    const group_ctx *g = vctx;
    for (int64_t i = c0; i < c1; i++) {
        const cpu_moe_chunk *ch = &g->chunks[i];
        const cpu_moe_job *j = &g->jobs[ch->job];
        g->k->rows(j->w, ch->b0, ch->b1, j->xq, j->xd, j->xs, j->n, j->y, false);
    }
}

/* tiles per pool item of job j for about `target` tiles × rows an item: at least 2 tiles (a multiple
 * of 4 with several rows: the multi-token kernel's run of tiles) */
static int64_t job_grain(const cpu_moe_job *j, int64_t target) {
    const int64_t unit = j->n > 1 ? 4 : 2, g = (target + j->n - 1) / j->n;
    return g < unit ? unit : (g + unit - 1) / unit * unit;
}

/* jobs[0..nj) as pool items of about equal work, ~16 per thread, none across two jobs; then the one
 * pool run. Under op_lock. */
static lmx_status run_jobs(cpu_backend *c, cpu_moe_scratch *ms, int nj) {
    int64_t work = 0;
    for (int j = 0; j < nj; j++) work += ms->jobs[j].w->pk_blocks * ms->jobs[j].n;
    const int64_t target = work / (16 * (int64_t)c->n_threads);
    size_t n = 0;
    for (int j = 0; j < nj; j++) {
        const int64_t g = job_grain(&ms->jobs[j], target);
        n += (size_t)((ms->jobs[j].w->pk_blocks + g - 1) / g);
    }
    LMX_BACKEND_TRY(grow((void **)&ms->chunks, &ms->chunks_len, n, sizeof *ms->chunks));
    size_t i = 0;
    for (int j = 0; j < nj; j++) {
        const int64_t g = job_grain(&ms->jobs[j], target), nb = ms->jobs[j].w->pk_blocks;
        for (int64_t b = 0; b < nb; b += g) ms->chunks[i++] = (cpu_moe_chunk){j, (int32_t)b, (int32_t)(b + g < nb ? b + g : nb)};
    }
    group_ctx gc = {c->qt, ms->jobs, ms->chunks};
    lmx_thread_pool_run(c->pool, (int64_t)n, 1, group_run, &gc);
    return LMX_OK;
}

/* The experts of `n_stacks` tiled stacks ws[] (one shape and group size) over the routed rows of x
 * in one pool run: ys[s] [S, rows] receives stack s's rows (jobs interleaved by expert: e's gate,
 * e's up, ...). Under ms->lock. */
static lmx_status grouped_locked(cpu_backend *c, cpu_moe_scratch *ms, const lmx_bweight *const *ws, int n_stacks,
                                 const lmx_buf *x, bool gather, const lmx_moe_routing *r, lmx_buf *const *ys) {
    const table_view v = table_of(r);
    const lmx_bweight *e0 = ws[0]->experts[0];
    LMX_BACKEND_TRY(grow((void **)&ms->jobs, &ms->jobs_len, (size_t)n_stacks * (size_t)r->n_experts, sizeof *ms->jobs));
    pthread_mutex_lock(&c->op_lock);
    moe_acts a;
    lmx_status st = quantize_acts(c, ms, x->data, gather, e0->cols, e0->group_size, r, &a);
    int nj = 0;
    for (int e = 0; st == LMX_OK && e < r->n_experts; e++) {
        const int i0 = v.start[e], n = v.start[e + 1] - i0;
        for (int s = 0; n > 0 && s < n_stacks; s++) ms->jobs[nj++] = expert_job(ws[s], e, i0, n, &a, gather, r, ys[s]->data);
    }
    if (st == LMX_OK) st = run_jobs(c, ms, nj);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status check_moe_matmul(const lmx_bweight *w, const lmx_buf *x, bool gather, const lmx_moe_routing *r,
                                   const lmx_buf *y) {
    LMX_BACKEND_TRY(lmx_backend_check_moe_matmul("cpu", r, w->kind, w->n_experts, w->rows, w->cols, x->n, gather,
                                                 y->n));
    if (x == y || x->data == y->data) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: moe_matmul with y == x");
    return LMX_OK;
}

lmx_status lmx_cpu_moe_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, bool gather,
                              const lmx_moe_routing *r, lmx_buf *y) {
    LMX_BACKEND_TRY(check_routing(r));
    LMX_BACKEND_TRY(check_table(r));
    LMX_BACKEND_TRY(check_moe_matmul(w, x, gather, r, y));
    cpu_backend *c = CPU(be);
    cpu_moe_scratch *ms = &c->moe;
    const table_view v = table_of(r);
    pthread_mutex_lock(&ms->lock);
    lmx_status st = tiled(c, w, &v, r->n_experts) ? grouped_locked(c, ms, &w, 1, x, gather, r, &y)
                                                  : moe_matmul_locked(be, ms, w, x, gather, r, y);
    pthread_mutex_unlock(&ms->lock);
    return st;
}

/* ---- moe_gate_up: the sequence it stands for ---- */

lmx_status lmx_cpu_moe_gate_up(lmx_backend *be, const lmx_bweight *gate, const lmx_bweight *up, const lmx_buf *x,
                               const lmx_moe_routing *r, lmx_act_kind act, lmx_buf *h, lmx_buf *u) {
    if (gate->rows != up->rows || gate->cols != up->cols || h == u)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: moe_gate_up: gate [%lld, %lld] and up [%lld, %lld]",
                         (long long)gate->rows, (long long)gate->cols, (long long)up->rows, (long long)up->cols);
    LMX_BACKEND_TRY(check_routing(r));
    LMX_BACKEND_TRY(check_table(r));
    LMX_BACKEND_TRY(check_moe_matmul(gate, x, true, r, h));
    LMX_BACKEND_TRY(check_moe_matmul(up, x, true, r, u));
    cpu_backend *c = CPU(be);
    const table_view v = table_of(r);
    if (tiled(c, gate, &v, r->n_experts) && tiled(c, up, &v, r->n_experts) &&
        gate->experts[0]->group_size == up->experts[0]->group_size) { /* gate and up of the k experts: one run */
        const lmx_bweight *ws[2] = {gate, up};
        lmx_buf *ys[2] = {h, u};
        pthread_mutex_lock(&c->moe.lock);
        lmx_status st = grouped_locked(c, &c->moe, ws, 2, x, true, r, ys);
        pthread_mutex_unlock(&c->moe.lock);
        LMX_BACKEND_TRY(st);
    } else {
        LMX_BACKEND_TRY(lmx_cpu_moe_matmul(be, gate, x, true, r, h));
        LMX_BACKEND_TRY(lmx_cpu_moe_matmul(be, up, x, true, r, u));
    }
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
