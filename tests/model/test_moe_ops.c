/* test_moe_ops.c — the CPU backend's mixture-of-experts ops (cpu_moe.c) on the generated problems of
 * moe_ops_cases.h (and the CPU-only cases below) at every kernel level with 1 and 3 threads: the
 * routing table (experts, weights, the stable grouping by expert) and every output against the
 * double-precision reference; experts that receive no row hold NaN weights and must not be read; a
 * row's results do not depend on the thread count (bit for bit); every expert's rows equal, bit for
 * bit, the sequence the ops stand for (the backend's matmul through that expert alone over its
 * gathered rows, act_mul, matmul) whatever the grouping into pool runs; a token's combined row of a
 * T-token run equals the 1-token run of that token (bit for bit); the ops refuse what they cannot
 * take. */
#include "model/cpu_levels.h"
#include "model/moe_ops_cases.h"

/* CPU-only cases for the grouped tile run (4/8-bit at the SIMD levels): top-k 1 and k = E, a single
 * expert, one expert for every token, experts without rows, many tokens on few experts, shapes of
 * a few tiles (R and C are multiples of the group: whole 16-row tiles) */
static const moe_case CPU_CASES[] = {
    {1, 5, 1, 64, 192, MF_Q4, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_SILU_MUL},
    {1, 3, 3, 96, 32, MF_Q8, LMX_MOE_SOFTMAX_TOPK, LG_RANDOM, LMX_BACT_GELU_TANH_MUL},
    {2, 33, 8, 64, 128, MF_Q4, LMX_MOE_TOPK_SOFTMAX, LG_SOME_EMPTY, LMX_BACT_SILU_MUL},
    {5, 9, 4, 64, 64, MF_Q4, LMX_MOE_SOFTMAX_TOPK, LG_ONE_EXPERT, LMX_BACT_SILU_MUL},
    {7, 1, 1, 32, 96, MF_Q8, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_SILU_MUL},
    {37, 3, 2, 96, 64, MF_Q8, LMX_MOE_TOPK_SOFTMAX, LG_TIES, LMX_BACT_SILU_MUL},
    {129, 5, 1, 64, 128, MF_Q4, LMX_MOE_SOFTMAX_TOPK, LG_ONE_EXPERT, LMX_BACT_GELU_TANH_MUL},
};
#define N_CPU_CASES (sizeof CPU_CASES / sizeof CPU_CASES[0])

/* out [n, rows] = matmul through expert e of stack s alone over x [n, cols] (a plain upload) */
static void expert_matmul(lmx_backend *b, const moe_stack *s, int e, const float *x, int n, float *out) {
    run_matmul(b, &s->parts[e], x, n, NULL, out);
}

/* every expert's rows of r against the sequence moe_gate_up and moe_matmul stand for, bit for bit */
static void check_sequence(lmx_backend *b, const moe_problem *p, const moe_result *r, const char *who) {
    const moe_case *c = &p->c;
    const int32_t *order = moe_tab_i32(r, c, 2), *start = moe_tab_i32(r, c, 4);
    int bad_a = -1, bad_h = -1, bad_b = -1;
    for (int e = 0; e < c->E; e++) {
        const int i0 = start[e], n = start[e + 1] - i0;
        if (n == 0) continue;
        float *xg = malloc((size_t)n * c->C * sizeof *xg), *ya = malloc((size_t)n * c->R * sizeof *ya);
        float *yu = malloc((size_t)n * c->R * sizeof *yu), *yb = malloc((size_t)n * c->C * sizeof *yb);
        for (int i = 0; i < n; i++)
            memcpy(xg + (size_t)i * c->C, p->x + (size_t)(order[i0 + i] / c->k) * c->C, (size_t)c->C * sizeof *xg);
        expert_matmul(b, &p->a, e, xg, n, ya);
        if (memcmp(ya, r->ya + (size_t)i0 * c->R, (size_t)n * c->R * sizeof *ya) && bad_a < 0) bad_a = e;
        expert_matmul(b, &p->u, e, xg, n, yu);
        lmx_buf *bg = buf_from(b, ya, (size_t)n * c->R), *bu = buf_from(b, yu, (size_t)n * c->R);
        CHECK(b->ops->act_mul(b, bg, bu, (size_t)n * c->R, c->act) == LMX_OK);
        b->ops->buf_read(b, bg, 0, ya, (size_t)n * c->R);
        b->ops->buf_free(b, bg);
        b->ops->buf_free(b, bu);
        if (memcmp(ya, r->h + (size_t)i0 * c->R, (size_t)n * c->R * sizeof *ya) && bad_h < 0) bad_h = e;
        expert_matmul(b, &p->b, e, r->h + (size_t)i0 * c->R, n, yb);
        if (memcmp(yb, r->yb + (size_t)i0 * c->C, (size_t)n * c->C * sizeof *yb) && bad_b < 0) bad_b = e;
        free(xg);
        free(ya);
        free(yu);
        free(yb);
    }
    CHECK_MSG(bad_a < 0, "%s: expert %d: moe_matmul rows differ from its own matmul", who, bad_a);
    CHECK_MSG(bad_h < 0, "%s: expert %d: moe_gate_up rows differ from matmul, matmul, act_mul", who, bad_h);
    CHECK_MSG(bad_b < 0, "%s: expert %d: moe_matmul (route order) rows differ from its own matmul", who, bad_b);
}

/* tokens 0, T/2 and T-1 of a T-token run alone: their combined rows equal those of the run */
static void check_rows_alone(lmx_backend *b, const moe_problem *p, const moe_result *r, const char *who) {
    const moe_case *c = &p->c;
    const int ts[3] = {0, c->T / 2, c->T - 1};
    for (int i = 0; i < (c->T > 1 ? 3 : 0); i++) {
        const int t = ts[i];
        moe_problem one = *p; /* moe_run reads c, logits, x, x0 and the stacks */
        one.c.T = 1;
        one.logits = p->logits + (size_t)t * c->E;
        one.x = p->x + (size_t)t * c->C;
        one.x0 = p->x0 + (size_t)t * c->C;
        moe_result r1;
        CHECK_MSG(moe_run(b, &one, &r1), "%s: token %d alone: run failed", who, t);
        CHECK_MSG(!memcmp(r1.out, r->out + (size_t)t * c->C, (size_t)c->C * sizeof *r1.out),
                  "%s: token %d alone differs from its row of the %d-token run", who, t, c->T);
        moe_result_free(&r1);
    }
}

static void run_cases(const moe_case *cases, size_t n, uint64_t seed0) {
    for (size_t i = 0; i < n; i++) {
        const moe_case *c = &cases[i];
        moe_problem p;
        moe_problem_make(&p, c, seed0 + i);
        char label[160];
        moe_case_label(c, label, sizeof label);
        for (int L = 0; L < N_LEVELS; L++) {
            moe_result r[2];
            bool ok[2];
            for (int th = 0; th < 2; th++) {
                char who[240];
                snprintf(who, sizeof who, "%s, %s, %d thread(s)", label, level_name[L], th ? 3 : 1);
                ok[th] = moe_run(be[L][th], &p, &r[th]);
                CHECK_MSG(ok[th], "%s: run failed", who);
                if (!ok[th]) continue;
                moe_check_run(&p, &r[th], 2e-3, who);
                check_sequence(be[L][th], &p, &r[th], who);
                if (th) check_rows_alone(be[L][th], &p, &r[th], who);
            }
            if (ok[0] && ok[1]) {
                const size_t S = (size_t)c->T * c->k;
                CHECK_MSG(!memcmp(r[0].yb, r[1].yb, S * c->C * sizeof(float)) &&
                              !memcmp(r[0].out, r[1].out, (size_t)c->T * c->C * sizeof(float)),
                          "%s, %s: 1 and 3 threads differ", label, level_name[L]);
            }
            moe_result_free(&r[0]);
            moe_result_free(&r[1]);
        }
        moe_problem_free(&p);
    }
}

static void test_cases(void) { run_cases(MOE_CASES, N_MOE_CASES, 1000); }
static void test_cpu_cases(void) { run_cases(CPU_CASES, N_CPU_CASES, 2000); }

/* what the ops refuse: a matmul through an expert stack, experts that do not stack, a table that
 * moe_route did not write, a routing beyond the limits, short buffers, gate and up that do not pair */
static void test_refusals(void) {
    lmx_backend *b = be[0][0];
    const moe_case c = {3, 5, 2, 32, 64, MF_BF16, LMX_MOE_TOPK_SOFTMAX, LG_RANDOM, LMX_BACT_SILU_MUL};
    moe_problem p;
    moe_problem_make(&p, &c, 7);
    lmx_bweight *w = NULL;
    CHECK(b->ops->weight_upload_experts(b, p.a.parts, c.E, &w) == LMX_OK);
    lmx_buf *x = moe_buf(b, p.x, (size_t)c.T * c.C), *y = moe_buf(b, NULL, (size_t)c.T * c.k * c.R);
    lmx_buf *tab = moe_buf(b, NULL, lmx_moe_table_floats(c.T, c.k, c.E));
    CHECK(b->ops->matmul(b, w, x, 0, c.T, y) == LMX_ERR_INVALID_ARGUMENT);
    lmx_moe_routing r = {.table = tab, .n_tokens = c.T, .top_k = c.k, .n_experts = c.E, .rule = c.rule};
    CHECK(b->ops->moe_matmul(b, w, x, true, &r, y) == LMX_ERR_INVALID_ARGUMENT); /* a zeroed table */
    lmx_weight_desc parts[5];
    memcpy(parts, p.a.parts, sizeof parts);
    parts[3].rows = 16;
    lmx_bweight *bad = NULL;
    CHECK(b->ops->weight_upload_experts(b, parts, c.E, &bad) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "expert 3") != NULL);
    CHECK(bad == NULL);
    lmx_moe_routing big = r;
    big.top_k = 6; /* more than the experts */
    lmx_buf *lg = moe_buf(b, p.logits, (size_t)c.T * c.E);
    CHECK(b->ops->moe_route(b, lg, &big) == LMX_ERR_INVALID_ARGUMENT);
    lmx_moe_routing more = r;
    more.n_tokens = 9; /* the table and the logits are for 3 rows */
    CHECK(b->ops->moe_route(b, lg, &more) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(b->ops->moe_route(b, lg, &r) == LMX_OK);
    lmx_buf *short_y = moe_buf(b, NULL, (size_t)c.T * c.R);
    CHECK(b->ops->moe_matmul(b, w, x, true, &r, short_y) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(b->ops->moe_matmul(b, w, x, true, &r, y) == LMX_OK);
    lmx_bweight *down = NULL; /* [C, R] experts: not the gate's shape */
    CHECK(b->ops->weight_upload_experts(b, p.b.parts, c.E, &down) == LMX_OK);
    lmx_buf *u = moe_buf(b, NULL, (size_t)c.T * c.k * c.R);
    CHECK(b->ops->moe_gate_up(b, w, down, x, &r, LMX_BACT_SILU_MUL, y, u) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(b->ops->moe_gate_up(b, w, w, x, &r, LMX_BACT_SILU_MUL, y, y) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(b->ops->moe_gate_up(b, w, w, x, &r, LMX_BACT_SILU_MUL, y, u) == LMX_OK);
    b->ops->weight_free(b, down);
    lmx_buf *bs[] = {x, y, tab, lg, short_y, u};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) b->ops->buf_free(b, bs[i]);
    b->ops->weight_free(b, w);
    moe_problem_free(&p);
}

int main(void) {
    if (!levels_create()) return 1;
    RUN(test_cases);
    RUN(test_cpu_cases);
    RUN(test_refusals);
    levels_destroy();
    return lmx_test_summary();
}
