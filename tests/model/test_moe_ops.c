/* test_moe_ops.c — the CPU backend's mixture-of-experts ops (cpu_moe.c) on the generated problems of
 * moe_ops_cases.h at every kernel level with 1 and 3 threads: the routing table (experts, weights, the
 * stable grouping by expert) and every output against the double-precision reference; experts that
 * receive no row hold NaN weights and must not be read; a row's results do not depend on the thread
 * count (bit for bit); the ops refuse what they cannot take. */
#include "model/cpu_levels.h"
#include "model/moe_ops_cases.h"

static void test_cases(void) {
    for (size_t i = 0; i < N_MOE_CASES; i++) {
        const moe_case *c = &MOE_CASES[i];
        moe_problem p;
        moe_problem_make(&p, c, 1000 + i);
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
                if (ok[th]) moe_check_run(&p, &r[th], 2e-3, who);
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
    RUN(test_refusals);
    levels_destroy();
    return lmx_test_summary();
}
