/* test_sampler.c — sampler order, filters against analytic probabilities, penalty, determinism. */
#include "lmx_test.h"
#include "generate/sampler.h"

#include <pthread.h>
#include <stdlib.h>

#define V 8

/* logits whose softmax is exactly p (up to rounding) */
static void logits_from_probs(const double *p, int n, float *out) {
    for (int i = 0; i < n; i++) out[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

static lmx_sampling base(void) {
    lmx_sampling p = {.temperature = 1.0f, .top_p = 1.0f, .min_p = 0, .top_k = 0,
                            .repetition_penalty = 1.0f, .repetition_context = 20};
    return p;
}

/* chi-square critical values at p = 0.001 for df 1..7 */
static const double chi_crit[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32};

/* Checks lmx_sampler_probs against `expect` and the empirical frequencies of n draws. */
static void check_distribution(const lmx_sampling *p, const double *probs_in, const double *expect,
                               uint64_t seed, int draws) {
    lmx_sampler *s;
    CHECK(lmx_sampler_create(V, &s) == LMX_OK);
    float logits[V];
    double got[V];
    logits_from_probs(probs_in, V, logits);
    CHECK(lmx_sampler_probs(s, p, logits, NULL, 0, got) == LMX_OK);
    for (int i = 0; i < V; i++) CHECK_NEAR(got[i], expect[i], 1e-5);
    lmx_sampler_seed(s, seed);
    int counts[V] = {0};
    for (int d = 0; d < draws; d++) {
        logits_from_probs(probs_in, V, logits);
        int32_t t = -1;
        CHECK(lmx_sampler_sample(s, p, logits, NULL, 0, &t) == LMX_OK);
        if (t >= 0 && t < V) counts[t]++;
    }
    double x2 = 0;
    int df = -1;
    for (int i = 0; i < V; i++) {
        if (expect[i] == 0) {
            CHECK_MSG(counts[i] == 0, "token %d has probability 0 but was drawn %d times", i, counts[i]);
            continue;
        }
        double e = expect[i] * draws;
        x2 += (counts[i] - e) * (counts[i] - e) / e;
        df++;
    }
    if (df >= 1 && df <= 7) CHECK_MSG(x2 < chi_crit[df], "chi-square %.2f with %d df", x2, df);
    lmx_sampler_destroy(s);
}

static const double P[V] = {0.40, 0.20, 0.15, 0.10, 0.06, 0.05, 0.03, 0.01};

static void test_plain_temperature_one(void) {
    lmx_sampling p = base();
    check_distribution(&p, P, P, 1, 20000);
}

static void test_top_k(void) {
    lmx_sampling p = base();
    p.top_k = 3;
    double e[V] = {0};
    double z = P[0] + P[1] + P[2];
    for (int i = 0; i < 3; i++) e[i] = P[i] / z;
    check_distribution(&p, P, e, 2, 20000);
}

static void test_top_p(void) {
    /* descending mass before each token: 0, .40, .60, .75, .85 …; top_p .7 keeps the first 3
     * (the boundary token .15 is kept: mass before it .60 < .7) */
    lmx_sampling p = base();
    p.top_p = 0.7f;
    double e[V] = {0};
    double z = P[0] + P[1] + P[2];
    for (int i = 0; i < 3; i++) e[i] = P[i] / z;
    check_distribution(&p, P, e, 3, 20000);
    /* just past the next boundary: mass before token 3 is .75 < .76 → 4 tokens */
    p.top_p = 0.76f;
    double e4[V] = {0};
    z = P[0] + P[1] + P[2] + P[3];
    for (int i = 0; i < 4; i++) e4[i] = P[i] / z;
    check_distribution(&p, P, e4, 4, 20000);
}

static void test_min_p(void) {
    /* min_p 0.2: threshold 0.2 * 0.40 = 0.08 → keep .40 .20 .15 .10 */
    lmx_sampling p = base();
    p.min_p = 0.2f;
    double e[V] = {0};
    double z = P[0] + P[1] + P[2] + P[3];
    for (int i = 0; i < 4; i++) e[i] = P[i] / z;
    check_distribution(&p, P, e, 5, 20000);
}

static void test_order_filters_then_temperature(void) {
    /* top_p sees the untempered distribution; temperature 2 then flattens the survivors:
     * p_i ∝ sqrt(P_i) over {0,1,2}. (Tempering first would keep 4 tokens at top_p .7.) */
    lmx_sampling p = base();
    p.top_p = 0.7f;
    p.temperature = 2.0f;
    double e[V] = {0}, z = 0;
    for (int i = 0; i < 3; i++) z += sqrt(P[i]);
    for (int i = 0; i < 3; i++) e[i] = sqrt(P[i]) / z;
    check_distribution(&p, P, e, 6, 20000);
    /* all three filters: top_p .9 keeps 5 (.40…06), min_p .3 keeps ≥ .12 (3), top_k 2 keeps 2 */
    p = base();
    p.top_p = 0.9f;
    p.min_p = 0.3f;
    p.top_k = 2;
    p.temperature = 0.5f;
    double e2[V] = {0};
    z = P[0] * P[0] + P[1] * P[1];
    e2[0] = P[0] * P[0] / z;
    e2[1] = P[1] * P[1] / z;
    check_distribution(&p, P, e2, 7, 20000);
}

static void test_greedy(void) {
    lmx_sampler *s;
    CHECK(lmx_sampler_create(V, &s) == LMX_OK);
    lmx_sampling p = base();
    p.temperature = 0;
    float l[V] = {1, 5, 3, 5, 0, 0, 0, 0};
    int32_t t = -1;
    CHECK(lmx_sampler_sample(s, &p, l, NULL, 0, &t) == LMX_OK);
    CHECK_EQ_INT(t, 1); /* tie → lowest id */
    /* penalty applies before argmax: 1 and 3 penalized → 2 wins */
    float l2[V] = {1, 5, 3, 5, 0, 0, 0, 0};
    int32_t hist[] = {1, 3};
    p.repetition_penalty = 2.0f;
    CHECK(lmx_sampler_sample(s, &p, l2, hist, 2, &t) == LMX_OK);
    CHECK_EQ_INT(t, 2);
    lmx_sampler_destroy(s);
}

static void test_repetition_penalty(void) {
    lmx_sampler *s;
    CHECK(lmx_sampler_create(V, &s) == LMX_OK);
    lmx_sampling p = base();
    p.repetition_penalty = 2.0f;
    p.repetition_context = 3;
    float l[V] = {2, -2, 1, 0.5f, 4, 0, 0, 0};
    int32_t hist[] = {4, 0, 1, 0, 1}; /* the last 3: 0, 1, 0 — 4 is out of the window */
    lmx_sampler_apply_penalty(s, &p, l, hist, 5);
    CHECK_NEAR(l[0], 1.0, 1e-6);  /* positive: divided once, duplicates do not compound */
    CHECK_NEAR(l[1], -4.0, 1e-6); /* negative: multiplied */
    CHECK_NEAR(l[2], 1.0, 1e-6);
    CHECK_NEAR(l[4], 4.0, 1e-6);  /* outside the context */
    /* the de-duplication marks are cleared: a second application penalizes again */
    lmx_sampler_apply_penalty(s, &p, l, hist, 5);
    CHECK_NEAR(l[0], 0.5, 1e-6);
    /* off for 1 and 0 */
    p.repetition_penalty = 1.0f;
    lmx_sampler_apply_penalty(s, &p, l, hist, 5);
    CHECK_NEAR(l[0], 0.5, 1e-6);
    lmx_sampler_destroy(s);
}

static void draw_seq(uint64_t seed, int32_t *out, int n) {
    lmx_sampler *s;
    if (lmx_sampler_create(V, &s) != LMX_OK) return;
    lmx_sampler_seed(s, seed);
    lmx_sampling p = base();
    p.top_p = 0.95f;
    for (int i = 0; i < n; i++) {
        float l[V];
        logits_from_probs(P, V, l);
        lmx_sampler_sample(s, &p, l, out, (size_t)i, &out[i]);
    }
    lmx_sampler_destroy(s);
}

#define SEQ 500
typedef struct {
    int32_t seq[SEQ];
} seq_t;

static void *thread_draw(void *arg) {
    draw_seq(42, ((seq_t *)arg)->seq, SEQ);
    return NULL;
}

static void test_seed_determinism(void) {
    int32_t a[SEQ], b[SEQ], c[SEQ];
    draw_seq(42, a, SEQ);
    draw_seq(42, b, SEQ);
    draw_seq(43, c, SEQ);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    seq_t t[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, thread_draw, &t[i]);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) CHECK(memcmp(a, t[i].seq, sizeof a) == 0);
    /* the PRNG itself: splitmix64-seeded xoshiro256**, first output for seed 0 is fixed */
    lmx_sampler *s;
    CHECK(lmx_sampler_create(1, &s) == LMX_OK);
    lmx_sampler_seed(s, 0);
    uint64_t x1 = lmx_sampler_next_u64(s);
    lmx_sampler_seed(s, 0);
    CHECK(lmx_sampler_next_u64(s) == x1);
    lmx_sampler_seed_entropy(s);
    uint64_t e1 = lmx_sampler_next_u64(s);
    lmx_sampler_seed_entropy(s);
    CHECK(lmx_sampler_next_u64(s) != e1); /* 2^-64 chance of a false failure */
    double u = lmx_sampler_uniform(s);
    CHECK(u >= 0 && u < 1);
    lmx_sampler_destroy(s);
}

/* top_p over a large vocabulary against a brute-force sort */
static int desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static void test_top_p_large_vocab(void) {
    enum { N = 50000 };
    float *l = malloc(N * sizeof *l);
    double *probs = malloc(N * sizeof *probs), *sorted = malloc(N * sizeof *sorted);
    lmx_sampler *s;
    CHECK(lmx_sampler_create(N, &s) == LMX_OK);
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 12.0);
    }
    /* reference: softmax, keep while the mass before is < 0.9 */
    double mx = -1e30, z = 0;
    for (int i = 0; i < N; i++) mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < N; i++) z += exp(l[i] - mx);
    for (int i = 0; i < N; i++) sorted[i] = exp(l[i] - mx) / z;
    qsort(sorted, N, sizeof *sorted, desc);
    double before = 0;
    int keep = 0;
    while (keep < N && before < 0.9) before += sorted[keep++];
    lmx_sampling p = base();
    p.top_p = 0.9f;
    CHECK(lmx_sampler_probs(s, &p, l, NULL, 0, probs) == LMX_OK);
    int nz = 0;
    double sum = 0;
    for (int i = 0; i < N; i++) {
        nz += probs[i] > 0;
        sum += probs[i];
    }
    CHECK_MSG(abs(nz - keep) <= 1, "kept %d tokens, reference %d", nz, keep);
    CHECK_NEAR(sum, 1.0, 1e-9);
    /* top_k 50 over the whole vocabulary, then after top_p (list mode): exactly 50 survivors,
     * each at least as likely as every dropped token */
    for (int mode = 0; mode < 2; mode++) {
        p = base();
        p.top_k = 50;
        p.top_p = mode ? 0.9f : 1.0f;
        CHECK(lmx_sampler_probs(s, &p, l, NULL, 0, probs) == LMX_OK);
        int kept = 0;
        float min_kept = INFINITY, max_dropped = -INFINITY;
        for (int i = 0; i < N; i++) {
            if (probs[i] > 0) {
                kept++;
                min_kept = l[i] < min_kept ? l[i] : min_kept;
            } else {
                max_dropped = l[i] > max_dropped ? l[i] : max_dropped;
            }
        }
        CHECK_EQ_INT(kept, 50);
        CHECK(min_kept >= max_dropped);
    }
    /* min_p 0.5 over the whole vocabulary: exactly the tokens within ln 2 of the max logit */
    p = base();
    p.min_p = 0.5f;
    CHECK(lmx_sampler_probs(s, &p, l, NULL, 0, probs) == LMX_OK);
    float lmax = -INFINITY;
    for (int i = 0; i < N; i++) lmax = l[i] > lmax ? l[i] : lmax;
    int wrong = 0;
    for (int i = 0; i < N; i++) wrong += (probs[i] > 0) != (l[i] >= lmax + logf(0.5f));
    CHECK_EQ_INT(wrong, 0);
    lmx_sampler_destroy(s);
    free(l);
    free(probs);
    free(sorted);
}

static void test_validation_and_bad_logits(void) {
    lmx_sampling p = base();
    CHECK(lmx_sampling_validate(&p) == LMX_OK);
    p.temperature = -1;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "temperature") != NULL);
    p = base();
    p.top_p = 1.5f;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    p = base();
    p.min_p = NAN;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    p = base();
    p.top_k = -2;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    p = base();
    p.repetition_penalty = -1;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    lmx_sampler *s;
    CHECK(lmx_sampler_create(0, &s) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_sampler_create(V, &s) == LMX_OK);
    p = base();
    float l[V] = {0, NAN, 0, 0, 0, 0, 0, 0};
    int32_t t;
    CHECK(lmx_sampler_sample(s, &p, l, NULL, 0, &t) == LMX_ERR_INFERENCE_FAILURE);
    float l2[V];
    for (int i = 0; i < V; i++) l2[i] = -INFINITY;
    CHECK(lmx_sampler_sample(s, &p, l2, NULL, 0, &t) == LMX_ERR_INFERENCE_FAILURE);
    p.temperature = 0;
    CHECK(lmx_sampler_sample(s, &p, l2, NULL, 0, &t) == LMX_ERR_INFERENCE_FAILURE);
    lmx_sampler_destroy(s);
    lmx_sampler_destroy(NULL);
}

/* OpenAI's frequency / presence penalties: only the generated part of the history (after the
 * prompt length) counts; each distinct id is penalized once by count * frequency + presence. */
static void test_frequency_presence_penalty(void) {
    lmx_sampler *s;
    CHECK(lmx_sampler_create(V, &s) == LMX_OK);
    lmx_sampling p = base();
    p.temperature = 0;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    /* prompt {1, 1, 2}, then generated {3, 3, 3, 4} */
    const int32_t hist[] = {1, 1, 2, 3, 3, 3, 4};
    lmx_sampler_set_prompt_len(s, 3);
    float l[V] = {0, 1, 2, 3, 4, 5, 6, 7};
    lmx_sampler_apply_penalty(s, &p, l, hist, 7);
    CHECK_NEAR(l[1], 1.0, 0);                  /* prompt ids are not penalized */
    CHECK_NEAR(l[2], 2.0, 0);
    CHECK_NEAR(l[3], 3.0 - 3 * 0.5 - 0.25, 1e-6);
    CHECK_NEAR(l[4], 4.0 - 1 * 0.5 - 0.25, 1e-6);
    CHECK_NEAR(l[7], 7.0, 0);
    /* the scratch counts are back to zero: the same call again gives the same result */
    float l2[V] = {0, 1, 2, 3, 4, 5, 6, 7};
    lmx_sampler_apply_penalty(s, &p, l2, hist, 7);
    for (int i = 0; i < V; i++) CHECK(l2[i] == l[i]);
    /* negative values reward repeats; a greedy choice flips */
    p.frequency_penalty = -2.0f;
    p.presence_penalty = 0;
    float l3[V] = {0, 0, 0, 3, 0, 0, 0, 5};
    int32_t t = -1;
    CHECK(lmx_sampler_sample(s, &p, l3, hist, 7, &t) == LMX_OK);
    CHECK_EQ_INT(t, 3); /* 3 + 3 * 2 = 9 > 5 */
    /* ranges */
    p.frequency_penalty = 2.5f;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    p.frequency_penalty = 0;
    p.presence_penalty = -2.01f;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    p.presence_penalty = NAN;
    CHECK(lmx_sampling_validate(&p) == LMX_ERR_INVALID_ARGUMENT);
    lmx_sampler_destroy(s);
}

/* log-softmax of the (penalized) logits and the top alternatives, most likely first */
static void test_logprobs(void) {
    lmx_sampler *s;
    CHECK(lmx_sampler_create(V, &s) == LMX_OK);
    float l[V];
    logits_from_probs(P, V, l);
    for (int i = 0; i < V; i++) l[i] += 3.0f; /* a shift changes nothing */
    float lp = 0;
    lmx_token_logprob top[LMX_MAX_TOP_LOGPROBS];
    CHECK(lmx_sampler_logprobs(s, l, 2, 3, &lp, top) == LMX_OK);
    CHECK_NEAR(lp, log(0.15), 1e-5);
    CHECK_EQ_INT(top[0].id, 0);
    CHECK_EQ_INT(top[1].id, 1);
    CHECK_EQ_INT(top[2].id, 2);
    CHECK_NEAR(top[0].logprob, log(0.40), 1e-5);
    CHECK_NEAR(top[1].logprob, log(0.20), 1e-5);
    /* ties: the lower id first; all V asked for */
    float flat[V] = {1, 2, 2, 0, 2, 0, 0, 0};
    CHECK(lmx_sampler_logprobs(s, flat, 7, V, &lp, top) == LMX_OK);
    CHECK_EQ_INT(top[0].id, 1);
    CHECK_EQ_INT(top[1].id, 2);
    CHECK_EQ_INT(top[2].id, 4);
    CHECK_EQ_INT(top[3].id, 0);
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp(top[i].logprob);
    CHECK_NEAR(sum, 1.0, 1e-5);
    CHECK(lmx_sampler_logprobs(s, flat, V, 1, &lp, top) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_sampler_logprobs(s, flat, 0, LMX_MAX_TOP_LOGPROBS + 1, &lp, top) == LMX_ERR_INVALID_ARGUMENT);
    /* after a sample the buffer holds the penalized logits: logprobs follow the penalty */
    lmx_sampling p = base();
    p.temperature = 0;
    p.presence_penalty = 2.0f;
    const int32_t hist[] = {0};
    float l2[V];
    logits_from_probs(P, V, l2);
    int32_t t = -1;
    CHECK(lmx_sampler_sample(s, &p, l2, hist, 1, &t) == LMX_OK); /* prompt length 0: id 0 is generated */
    CHECK_EQ_INT(t, 1);
    CHECK(lmx_sampler_logprobs(s, l2, t, 1, &lp, top) == LMX_OK);
    double z = 0.40 * exp(-2.0) + 0.60;
    CHECK_NEAR(lp, log(0.20 / z), 1e-5);
    lmx_sampler_destroy(s);
}

int main(void) {
    RUN(test_plain_temperature_one);
    RUN(test_top_k);
    RUN(test_top_p);
    RUN(test_min_p);
    RUN(test_order_filters_then_temperature);
    RUN(test_greedy);
    RUN(test_repetition_penalty);
    RUN(test_seed_determinism);
    RUN(test_top_p_large_vocab);
    RUN(test_validation_and_bad_logits);
    RUN(test_frequency_presence_penalty);
    RUN(test_logprobs);
    return lmx_test_summary();
}
