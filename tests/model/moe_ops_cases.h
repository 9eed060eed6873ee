/* moe_ops_cases.h — the mixture-of-experts ops (backend.h: weight_upload_experts, moe_route,
 * moe_matmul, moe_combine) on generated problems, shared by the CPU op test (tests/model/
 * test_moe_ops.c: the CPU backend against a double-precision reference) and the GPU one
 * (tests/cuda/test_cuda_moe.c: the CUDA backend against the reference and the CPU backend).
 *
 * A problem: T rows of logits [T, E] and x [T, C], a residual x0 [T, C], two expert stacks A (E × [R,
 * C], applied to the gathered token rows), U (likewise: the up projection) and B (E × [C, R], applied
 * in route order) in one storage format; one run is route → A (moe_matmul, gathered) → act(A) * U
 * (moe_gate_up) → B over those rows → combine, as the model's sparse block does. The logits are made so that routing is unambiguous (distinct values 0.1 apart), or
 * send every row to one expert first, or leave experts without rows — whose stored weights are then
 * NaN, so a backend that reads them gives a non-finite result — or tie everywhere (lowest index
 * first). Test-only, single-threaded.
 */
#ifndef LMX_TESTS_MODEL_MOE_OPS_CASES_H
#define LMX_TESTS_MODEL_MOE_OPS_CASES_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "formats/mlx_mx.h"
#include "formats/safetensors.h"
#include "lmx_test.h"
#include "model/mlx_pack.h"

typedef enum { MF_BF16, MF_F32, MF_F16, MF_Q4, MF_Q8, MF_Q3, MF_Q2, MF_MXFP4, MF_MXFP8, MF_NVFP4 } moe_fmt;
static const char *const moe_fmt_name[] = {"bf16", "f32", "f16", "q4", "q8", "q3", "q2", "mxfp4", "mxfp8", "nvfp4"};
typedef enum { LG_RANDOM, LG_ONE_EXPERT, LG_SOME_EMPTY, LG_TIES } moe_logits;
static const char *const moe_logits_name[] = {"random", "one-expert", "some-empty", "ties"};

typedef struct moe_case {
    int T, E, k, R, C;
    moe_fmt fmt;
    lmx_moe_rule rule;
    moe_logits lg;
    lmx_act_kind act; /* of moe_gate_up */
} moe_case;

/* one stored stack [E, rows, cols] and its dequantized values */
typedef struct moe_stack {
    int rows, cols;
    void *data, *scales, *biases; /* as stored: elements / packed codes, scales, biases (affine) */
    double *deq;                  /* [E * rows * cols] (NaN rows for poisoned experts) */
    lmx_weight_desc *parts;       /* [E] */
} moe_stack;

typedef struct moe_problem {
    moe_case c;
    float *logits, *x, *x0;   /* [T, E], [T, C], [T, C] */
    bool *poisoned;           /* [E] experts that get no row and hold NaN weights */
    moe_stack a, u, b;        /* gate-like and up-like E × [R, C], down-like E × [C, R] */
    /* the reference */
    int32_t *ids;             /* [S] */
    double *w;                /* [S] */
    double *ya, *h, *yb, *out; /* A rows and act(A rows) * U rows [S, R], B rows [S, C] by slot; [T, C] */
} moe_problem;

typedef struct moe_result {
    float *table;             /* [lmx_moe_table_floats] */
    float *ya, *h, *yb, *out; /* [S, R] (moe_matmul of A), [S, R] (moe_gate_up of A, U), [S, C] in route
                                 order; [T, C] */
} moe_result;

static uint64_t moe_rng = 88172645463325252ull;
static inline double moe_urand(void) {
    moe_rng ^= moe_rng << 13;
    moe_rng ^= moe_rng >> 7;
    moe_rng ^= moe_rng << 17;
    return (double)(moe_rng >> 11) / 9007199254740992.0;
}
static inline float moe_frand(void) { return (float)(moe_urand() * 2 - 1); }

static inline int moe_bits(moe_fmt f) { return f == MF_Q4 ? 4 : f == MF_Q8 ? 8 : f == MF_Q3 ? 3 : f == MF_Q2 ? 2 : 0; }
static inline lmx_quant_mode moe_mode(moe_fmt f) {
    return f == MF_MXFP4 ? LMX_QUANT_MXFP4 : f == MF_MXFP8 ? LMX_QUANT_MXFP8 : f == MF_NVFP4 ? LMX_QUANT_NVFP4
                                                                                      : LMX_QUANT_AFFINE;
}

/* E random matrices [rows, cols] stored in fmt (affine: g64 for 4-bit, g32 else; scales/biases F32) */
static void moe_stack_make(moe_stack *s, const moe_case *c, int rows, int cols, const bool *poisoned) {
    const int E = c->E;
    const size_t n = (size_t)E * rows * cols, R = (size_t)E * rows;
    s->rows = rows;
    s->cols = cols;
    float *w = malloc(n * sizeof *w);
    s->deq = malloc(n * sizeof *s->deq);
    s->parts = calloc((size_t)E, sizeof *s->parts);
    for (size_t i = 0; i < n; i++) w[i] = 0.25f * moe_frand();
    lmx_weight_desc d = {.name = "experts", .rows = rows, .cols = cols};
    const int bits = moe_bits(c->fmt);
    const lmx_quant_mode mode = moe_mode(c->fmt);
    if (c->fmt == MF_BF16 || c->fmt == MF_F16 || c->fmt == MF_F32) {
        d.kind = LMX_WEIGHT_DENSE;
        d.dtype = c->fmt == MF_BF16 ? LMX_DTYPE_BF16 : c->fmt == MF_F16 ? LMX_DTYPE_F16 : LMX_DTYPE_F32;
        const size_t es = c->fmt == MF_F32 ? 4 : 2;
        s->data = malloc(n * es);
        for (size_t i = 0; i < n; i++) {
            if (c->fmt == MF_F32) {
                ((float *)s->data)[i] = w[i];
                s->deq[i] = w[i];
            } else {
                const uint16_t h = c->fmt == MF_BF16 ? lmx_f32_to_bf16(w[i]) : lmx_f32_to_f16(w[i]);
                ((uint16_t *)s->data)[i] = h;
                s->deq[i] = c->fmt == MF_BF16 ? lmx_bf16_to_f32(h) : lmx_f16_to_f32(h);
            }
        }
        for (size_t r = 0; r < R; r++) /* poisoned experts: NaN rows */
            if (poisoned[r / rows])
                for (int j = 0; j < cols; j++) {
                    if (c->fmt == MF_F32) ((float *)s->data)[r * cols + j] = NAN;
                    else ((uint16_t *)s->data)[r * cols + j] = 0x7fc0; /* bf16 and f16 NaN alike */
                    s->deq[r * cols + j] = NAN;
                }
    } else if (bits) {
        const int gs = bits == 4 ? 64 : 32;
        qmat q = quantize(w, (int)R, cols, bits, gs);
        d.kind = LMX_WEIGHT_QUANT;
        d.dtype = LMX_DTYPE_F32;
        d.bits = bits;
        d.group_size = gs;
        d.mode = LMX_QUANT_AFFINE;
        for (size_t i = 0; i < n; i++) s->deq[i] = q.deq[i];
        for (size_t r = 0; r < R; r++)
            if (poisoned[r / rows]) {
                for (int g = 0; g < cols / gs; g++) q.scales[r * (cols / gs) + g] = NAN;
                for (int j = 0; j < cols; j++) s->deq[r * cols + j] = NAN;
            }
        s->data = q.packed;
        s->scales = q.scales;
        s->biases = q.biases;
        free(q.deq);
    } else {
        const int gs = lmx_quant_mode_group(mode), mb = lmx_quant_mode_bits(mode);
        d.kind = LMX_WEIGHT_QUANT;
        d.dtype = LMX_DTYPE_U8;
        d.bits = mb;
        d.group_size = gs;
        d.mode = mode;
        uint8_t *codes = malloc(n * (size_t)mb / 8), *sc = malloc(n / (size_t)gs);
        CHECK(lmx_mx_quantize_matrix(w, (int64_t)R, cols, mode, codes, sc, 1) == LMX_OK);
        float *row = malloc((size_t)cols * sizeof *row);
        for (size_t r = 0; r < R; r++) {
            if (poisoned[r / rows]) /* E8M0 0xFF is infinite, E4M3 0x7F NaN: every product non-finite */
                memset(sc + r * (cols / gs), mode == LMX_QUANT_NVFP4 ? 0x7f : 0xff, (size_t)(cols / gs));
            lmx_mx_dequantize_row(codes + r * (size_t)cols * mb / 8, sc + r * (cols / gs), mode, 0, cols, row);
            for (int j = 0; j < cols; j++) s->deq[r * cols + j] = poisoned[r / rows] ? NAN : row[j];
        }
        free(row);
        s->data = codes;
        s->scales = sc;
    }
    d.data = s->data;
    d.scales = s->scales;
    d.biases = s->biases;
    for (int e = 0; e < E; e++) {
        s->parts[e] = d;
        s->parts[e].row0 = (int64_t)e * rows;
    }
    free(w);
}

static void moe_stack_free(moe_stack *s) {
    free(s->data);
    free(s->scales);
    free(s->biases);
    free(s->deq);
    free(s->parts);
}

/* the reference routing of one row (the rule's arithmetic in double; ties to the lower index) */
static void moe_ref_route(const float *l, int E, int k, lmx_moe_rule rule, int32_t *ids, double *w) {
    double mx = -INFINITY, all = 0, top = 0;
    for (int e = 0; e < E; e++) mx = fmax(mx, l[e]);
    for (int e = 0; e < E; e++) all += exp(l[e] - mx);
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++) taken = taken || ids[i] == e;
            if (!taken && (best < 0 || l[e] > l[best])) best = e;
        }
        ids[j] = best;
        top += exp(l[best] - mx);
    }
    for (int j = 0; j < k; j++) w[j] = exp(l[ids[j]] - mx) / (rule == LMX_MOE_TOPK_SOFTMAX ? top : all);
}

static void moe_problem_make(moe_problem *p, const moe_case *c, uint64_t seed) {
    memset(p, 0, sizeof *p);
    p->c = *c;
    moe_rng = seed * 2654435761ull + 1;
    const int T = c->T, E = c->E, k = c->k, S = T * k;
    p->logits = malloc((size_t)T * E * sizeof *p->logits);
    p->x = malloc((size_t)T * c->C * sizeof *p->x);
    p->x0 = malloc((size_t)T * c->C * sizeof *p->x0);
    p->poisoned = calloc((size_t)E, sizeof *p->poisoned);
    int *perm = malloc((size_t)E * sizeof *perm);
    for (int t = 0; t < T; t++) {
        for (int e = 0; e < E; e++) perm[e] = e;
        for (int e = E - 1; e > 0; e--) { /* a random permutation: distinct logits 0.1 apart */
            const int j = (int)(moe_urand() * (e + 1));
            const int tmp = perm[e];
            perm[e] = perm[j];
            perm[j] = tmp;
        }
        float *l = p->logits + (size_t)t * E;
        for (int e = 0; e < E; e++) l[e] = c->lg == LG_TIES ? 0.0f : 0.1f * (float)(perm[e] - E / 2);
        if (c->lg == LG_ONE_EXPERT) l[E / 2] = 50.0f;
        if (c->lg == LG_SOME_EMPTY)
            for (int e = 1; e < E; e += 3) l[e] = -50.0f;
    }
    free(perm);
    for (size_t i = 0; i < (size_t)T * c->C; i++) {
        p->x[i] = moe_frand();
        p->x0[i] = 0.5f * moe_frand();
    }
    p->ids = malloc((size_t)S * sizeof *p->ids);
    p->w = malloc((size_t)S * sizeof *p->w);
    for (int t = 0; t < T; t++)
        moe_ref_route(p->logits + (size_t)t * E, E, k, c->rule, p->ids + (size_t)t * k, p->w + (size_t)t * k);
    for (int e = 0; e < E; e++) p->poisoned[e] = true;
    for (int s = 0; s < S; s++) p->poisoned[p->ids[s]] = false;
    moe_stack_make(&p->a, c, c->R, c->C, p->poisoned);
    moe_stack_make(&p->u, c, c->R, c->C, p->poisoned);
    moe_stack_make(&p->b, c, c->C, c->R, p->poisoned);
    p->ya = calloc((size_t)S * c->R, sizeof *p->ya);
    p->h = calloc((size_t)S * c->R, sizeof *p->h);
    p->yb = calloc((size_t)S * c->C, sizeof *p->yb);
    p->out = malloc((size_t)T * c->C * sizeof *p->out);
    for (size_t i = 0; i < (size_t)T * c->C; i++) p->out[i] = p->x0[i];
    for (int s = 0; s < S; s++) {
        const int t = s / k, e = p->ids[s];
        const double *A = p->a.deq + (size_t)e * c->R * c->C, *U = p->u.deq + (size_t)e * c->R * c->C;
        const double *B = p->b.deq + (size_t)e * c->C * c->R;
        for (int r = 0; r < c->R; r++) {
            double acc = 0, up = 0;
            for (int j = 0; j < c->C; j++) {
                acc += A[(size_t)r * c->C + j] * p->x[(size_t)t * c->C + j];
                up += U[(size_t)r * c->C + j] * p->x[(size_t)t * c->C + j];
            }
            p->ya[(size_t)s * c->R + r] = acc;
            const double act = c->act == LMX_BACT_SILU_MUL
                                   ? acc / (1 + exp(-acc))
                                   : 0.5 * acc * (1 + tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)));
            p->h[(size_t)s * c->R + r] = act * up;
        }
        for (int o = 0; o < c->C; o++) {
            double acc = 0;
            for (int r = 0; r < c->R; r++) acc += B[(size_t)o * c->R + r] * p->h[(size_t)s * c->R + r];
            p->yb[(size_t)s * c->C + o] = acc;
            p->out[(size_t)t * c->C + o] += p->w[s] * acc;
        }
    }
}

static void moe_problem_free(moe_problem *p) {
    free(p->logits);
    free(p->x);
    free(p->x0);
    free(p->poisoned);
    moe_stack_free(&p->a);
    moe_stack_free(&p->u);
    moe_stack_free(&p->b);
    free(p->ids);
    free(p->w);
    free(p->ya);
    free(p->h);
    free(p->yb);
    free(p->out);
}

static void moe_result_free(moe_result *r) {
    free(r->table);
    free(r->ya);
    free(r->h);
    free(r->yb);
    free(r->out);
    memset(r, 0, sizeof *r);
}

static lmx_buf *moe_buf(lmx_backend *b, const float *x, size_t n) {
    lmx_buf *r = NULL;
    CHECK(b->ops->buf_alloc(b, n, &r) == LMX_OK);
    if (r && x) CHECK(b->ops->buf_write(b, r, 0, x, n) == LMX_OK);
    return r;
}

/* One run on backend b: route, A over the gathered rows (moe_matmul), act(A) * U over them
 * (moe_gate_up), B over those rows, combine into x0. */
static bool moe_run(lmx_backend *b, const moe_problem *p, moe_result *res) {
    const moe_case *c = &p->c;
    const int S = c->T * c->k;
    const size_t tn = lmx_moe_table_floats(c->T, c->k, c->E);
    memset(res, 0, sizeof *res);
    lmx_bweight *wa = NULL, *wu = NULL, *wb = NULL;
    lmx_status st = b->ops->weight_upload_experts(b, p->a.parts, c->E, &wa);
    if (st == LMX_OK) st = b->ops->weight_upload_experts(b, p->u.parts, c->E, &wu);
    if (st == LMX_OK) st = b->ops->weight_upload_experts(b, p->b.parts, c->E, &wb);
    if (b->ops->upload_end && st == LMX_OK) st = b->ops->upload_end(b);
    CHECK_MSG(st == LMX_OK, "upload: %s", lmx_last_error_detail());
    lmx_buf *bl = moe_buf(b, p->logits, (size_t)c->T * c->E), *bt = moe_buf(b, NULL, tn);
    lmx_buf *bx = moe_buf(b, p->x, (size_t)c->T * c->C), *bx0 = moe_buf(b, p->x0, (size_t)c->T * c->C);
    lmx_buf *ba = moe_buf(b, NULL, (size_t)S * c->R), *bb = moe_buf(b, NULL, (size_t)S * c->C);
    lmx_buf *bh = moe_buf(b, NULL, (size_t)S * c->R), *bu = moe_buf(b, NULL, (size_t)S * c->R);
    const lmx_moe_routing r = {.table = bt, .n_tokens = c->T, .top_k = c->k, .n_experts = c->E, .rule = c->rule};
    if (st == LMX_OK) st = b->ops->moe_route(b, bl, &r);
    if (st == LMX_OK) st = b->ops->moe_matmul(b, wa, bx, true, &r, ba);
    if (st == LMX_OK) st = b->ops->moe_gate_up(b, wa, wu, bx, &r, c->act, bh, bu);
    if (st == LMX_OK) st = b->ops->moe_matmul(b, wb, bh, false, &r, bb);
    if (st == LMX_OK) st = b->ops->moe_combine(b, bx0, bb, c->C, &r);
    CHECK_MSG(st == LMX_OK, "ops: %s", lmx_last_error_detail());
    res->table = malloc(tn * sizeof *res->table);
    res->ya = malloc((size_t)S * c->R * sizeof *res->ya);
    res->h = malloc((size_t)S * c->R * sizeof *res->h);
    res->yb = malloc((size_t)S * c->C * sizeof *res->yb);
    res->out = malloc((size_t)c->T * c->C * sizeof *res->out);
    if (st == LMX_OK) st = b->ops->buf_read(b, bt, 0, res->table, tn);
    if (st == LMX_OK) st = b->ops->buf_read(b, ba, 0, res->ya, (size_t)S * c->R);
    if (st == LMX_OK) st = b->ops->buf_read(b, bh, 0, res->h, (size_t)S * c->R);
    if (st == LMX_OK) st = b->ops->buf_read(b, bb, 0, res->yb, (size_t)S * c->C);
    if (st == LMX_OK) st = b->ops->buf_read(b, bx0, 0, res->out, (size_t)c->T * c->C);
    lmx_buf *bs[] = {bl, bt, bx, bx0, ba, bb, bh, bu};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) b->ops->buf_free(b, bs[i]);
    b->ops->weight_free(b, wa);
    b->ops->weight_free(b, wu);
    b->ops->weight_free(b, wb);
    return st == LMX_OK;
}

/* the table's int32 arrays */
static inline const int32_t *moe_tab_i32(const moe_result *r, const moe_case *c, int which /* 1 ids .. 4 start */) {
    return (const int32_t *)(const void *)(r->table + (size_t)which * c->T * c->k);
}

/* The table against the reference: ids exactly, weights to 1e-6, a stable grouping by expert. */
static void moe_check_table(const moe_problem *p, const moe_result *r, const char *who) {
    const moe_case *c = &p->c;
    const int S = c->T * c->k, E = c->E;
    const int32_t *ids = moe_tab_i32(r, c, 1), *order = moe_tab_i32(r, c, 2), *pos = moe_tab_i32(r, c, 3),
                  *start = moe_tab_i32(r, c, 4);
    int bad_id = -1, bad_w = -1;
    for (int s = 0; s < S; s++) {
        if (ids[s] != p->ids[s] && bad_id < 0) bad_id = s;
        if (fabs(r->table[s] - p->w[s]) > 1e-6 * (1 + fabs(p->w[s])) && bad_w < 0) bad_w = s;
    }
    CHECK_MSG(bad_id < 0, "%s: slot %d: expert %d, want %d", who, bad_id, bad_id >= 0 ? ids[bad_id] : 0,
              bad_id >= 0 ? p->ids[bad_id] : 0);
    CHECK_MSG(bad_w < 0, "%s: slot %d: weight %g, want %g", who, bad_w, bad_w >= 0 ? r->table[bad_w] : 0.0,
              bad_w >= 0 ? p->w[bad_w] : 0.0);
    bool ok = start[0] == 0 && start[E] == S;
    for (int e = 0; ok && e < E; e++) {
        int n = 0;
        for (int s = 0; s < S; s++) n += p->ids[s] == e;
        ok = start[e + 1] - start[e] == n;
        for (int i = start[e]; ok && i < start[e + 1]; i++)
            ok = order[i] >= 0 && order[i] < S && p->ids[order[i]] == e && pos[order[i]] == i &&
                 (i == start[e] || order[i] > order[i - 1]);
    }
    CHECK_MSG(ok, "%s: the grouping by expert (order / pos / start) is wrong", who);
}

/* got[i] (route order when by_slot: row order[i]) against ref rows: max |Δ| <= tol * max |ref| */
static void moe_check_rows(const moe_problem *p, const moe_result *r, const float *got, const double *ref, int n_rows,
                           int width, bool by_slot, double tol, const char *what, const char *who) {
    const int32_t *order = moe_tab_i32(r, &p->c, 2);
    double mx = 0, err = 0;
    bool finite = true;
    for (int i = 0; i < n_rows; i++) {
        const int s = by_slot ? order[i] : i;
        for (int j = 0; j < width; j++) {
            const double g = got[(size_t)i * width + j], w = ref[(size_t)s * width + j];
            finite = finite && isfinite(g);
            mx = fmax(mx, fabs(w));
            err = fmax(err, fabs(g - w));
        }
    }
    CHECK_MSG(finite, "%s: %s has non-finite values (an expert without rows was read?)", who, what);
    CHECK_MSG(err <= tol * mx, "%s: %s: max |diff| %g > %g * max |ref| %g", who, what, err, tol, mx);
    CHECK_MSG(mx > 0, "%s: %s is all zero", who, what);
}

/* The combine on its own: out[t] against x0[t] + Σ_j w[s] · (the backend's own B row of slot s), in
 * double: only the float additions differ (1e-5 of the largest term). */
static void moe_check_combine(const moe_problem *p, const moe_result *r, const char *who) {
    const moe_case *c = &p->c;
    const int32_t *pos = moe_tab_i32(r, c, 3);
    double err = 0, mx = 0;
    for (int t = 0; t < c->T; t++)
        for (int o = 0; o < c->C; o++) {
            double want = p->x0[(size_t)t * c->C + o];
            for (int j = 0; j < c->k; j++) {
                const int s = t * c->k + j;
                const double term = p->w[s] * r->yb[(size_t)pos[s] * c->C + o];
                want += term;
                mx = fmax(mx, fabs(term));
            }
            err = fmax(err, fabs(want - r->out[(size_t)t * c->C + o]));
        }
    CHECK_MSG(err <= 1e-5 * (1 + mx), "%s: combine: max |diff| %g (largest term %g)", who, err, mx);
}

/* A whole run against the reference. tol: relative to each output's largest value. */
static void moe_check_run(const moe_problem *p, const moe_result *r, double tol, const char *who) {
    const moe_case *c = &p->c;
    moe_check_table(p, r, who);
    moe_check_rows(p, r, r->ya, p->ya, c->T * c->k, c->R, true, tol, "A rows", who);
    moe_check_rows(p, r, r->h, p->h, c->T * c->k, c->R, true, 2 * tol, "act(A) * U rows", who);
    moe_check_rows(p, r, r->yb, p->yb, c->T * c->k, c->C, true, 3 * tol, "B rows", who);
    moe_check_rows(p, r, r->out, p->out, c->T, c->C, false, 3 * tol, "combined rows", who);
    moe_check_combine(p, r, who);
}

/* The cases every backend runs: odd expert counts, top-k 1/2/4/8, T = 1, 3, 64, 300, every format,
 * all rows to one expert, experts without rows (NaN weights), ties. R and C multiples of 128 where
 * the GPU's grouped GEMM applies (4/8-bit, T >= 16). */
static const moe_case MOE_CASES[] = {
    {1, 5, 2, 64, 64, MF_BF16, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_SILU_MUL},
    {1, 128, 8, 128, 256, MF_Q4, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_SILU_MUL},
    {1, 7, 4, 64, 128, MF_Q8, LMX_MOE_SOFTMAX_TOPK, LG_SOME_EMPTY, LMX_BACT_SILU_MUL},
    {1, 9, 1, 32, 64, MF_F32, LMX_MOE_TOPK_SOFTMAX, LG_TIES, LMX_BACT_GELU_TANH_MUL},
    {3, 7, 2, 96, 64, MF_F16, LMX_MOE_SOFTMAX_TOPK, LG_RANDOM, LMX_BACT_SILU_MUL},
    {3, 5, 4, 64, 96, MF_Q3, LMX_MOE_TOPK_SOFTMAX, LG_ONE_EXPERT, LMX_BACT_SILU_MUL},
    {3, 11, 8, 64, 96, MF_Q2, LMX_MOE_SOFTMAX_TOPK, LG_RANDOM, LMX_BACT_SILU_MUL},
    {3, 6, 2, 64, 64, MF_MXFP4, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_GELU_TANH_MUL},
    {3, 13, 4, 64, 96, MF_MXFP8, LMX_MOE_TOPK_SOFTMAX, LG_SOME_EMPTY, LMX_BACT_SILU_MUL},
    {3, 5, 1, 64, 64, MF_NVFP4, LMX_MOE_SOFTMAX_TOPK, LG_RANDOM, LMX_BACT_SILU_MUL},
    {64, 9, 8, 128, 256, MF_Q4, LMX_MOE_SOFTMAX_TOPK, LG_RANDOM, LMX_BACT_SILU_MUL},
    {64, 127, 4, 128, 128, MF_Q8, LMX_MOE_TOPK_SOFTMAX, LG_SOME_EMPTY, LMX_BACT_GELU_TANH_MUL},
    {64, 7, 2, 128, 256, MF_Q4, LMX_MOE_TOPK_SOFTMAX, LG_ONE_EXPERT, LMX_BACT_SILU_MUL},
    {64, 5, 2, 64, 96, MF_BF16, LMX_MOE_TOPK_SOFTMAX, LG_TIES, LMX_BACT_SILU_MUL},
    {64, 6, 4, 64, 64, MF_MXFP4, LMX_MOE_SOFTMAX_TOPK, LG_ONE_EXPERT, LMX_BACT_SILU_MUL},
    {64, 7, 1, 64, 96, MF_Q3, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_GELU_TANH_MUL},
    {300, 128, 8, 128, 256, MF_Q4, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_SILU_MUL},
    {300, 9, 2, 128, 128, MF_Q8, LMX_MOE_SOFTMAX_TOPK, LG_SOME_EMPTY, LMX_BACT_SILU_MUL},
    {300, 5, 4, 64, 64, MF_BF16, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_SILU_MUL},
    {300, 7, 2, 64, 64, MF_NVFP4, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_GELU_TANH_MUL},
};
#define N_MOE_CASES (sizeof MOE_CASES / sizeof MOE_CASES[0])

static inline void moe_case_label(const moe_case *c, char *buf, size_t n) {
    snprintf(buf, n, "T %d, top-%d of %d, [%d, %d] %s, %s, %s, %s", c->T, c->k, c->E, c->R, c->C,
             moe_fmt_name[c->fmt], c->rule == LMX_MOE_TOPK_SOFTMAX ? "topk-softmax" : "softmax-topk",
             moe_logits_name[c->lg], c->act == LMX_BACT_SILU_MUL ? "silu" : "gelu-tanh");
}

#endif
