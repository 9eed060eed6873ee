/* sampler.c — repetition penalty, top-p / min-p / top-k filters, temperature and a seeded
 * categorical draw (order and RNG documented in sampler.h). */
#include "generate/sampler.h"
#include "util/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

typedef struct cand {
    float v;
    int32_t id;
} cand;

struct lmx_sampler {
    int vocab;
    uint64_t rng[4];   /* xoshiro256** state */
    float *lp;         /* [vocab] working logprobs; -inf = filtered out */
    float *tmp;        /* [vocab] quickselect scratch */
    struct cand *pairs;/* [vocab] (logprob, id) candidates for top_p */
    uint8_t *mark;     /* [vocab] penalty de-duplication marks, all zero between calls */
};

/* ---- RNG ---- */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lmx_sampler_next_u64(lmx_sampler *s) {
    uint64_t *r = s->rng;
    uint64_t result = rotl(r[1] * 5, 7) * 9;
    uint64_t t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return result;
}

double lmx_sampler_uniform(lmx_sampler *s) { return (double)(lmx_sampler_next_u64(s) >> 11) * 0x1.0p-53; }

void lmx_sampler_seed(lmx_sampler *s, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

void lmx_sampler_seed_entropy(lmx_sampler *s) {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ (uint64_t)(uintptr_t)s;
    }
    lmx_sampler_seed(s, seed);
}

/* ---- lifecycle ---- */
lmx_status lmx_sampler_create(int vocab, lmx_sampler **out) {
    *out = NULL;
    if (vocab <= 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "sampler: vocab size %d", vocab);
    lmx_sampler *s = calloc(1, sizeof *s);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "sampler: allocation failed");
    s->vocab = vocab;
    s->lp = malloc((size_t)vocab * sizeof *s->lp);
    s->tmp = malloc((size_t)vocab * sizeof *s->tmp);
    s->pairs = malloc((size_t)vocab * sizeof *s->pairs);
    s->mark = calloc((size_t)vocab, 1);
    if (!s->lp || !s->tmp || !s->pairs || !s->mark) {
        lmx_sampler_destroy(s);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "sampler: cannot allocate scratch for %d tokens", vocab);
    }
    lmx_sampler_seed(s, 0);
    *out = s;
    return LMX_OK;
}

void lmx_sampler_destroy(lmx_sampler *s) {
    if (!s) return;
    free(s->lp);
    free(s->tmp);
    free(s->pairs);
    free(s->mark);
    free(s);
}

lmx_status lmx_sampler_params_validate(const lmx_sampler_params *p) {
    if (!p) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "sampler: NULL parameters");
    if (!isfinite(p->temperature) || p->temperature < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "temperature %g: must be >= 0", (double)p->temperature);
    if (!isfinite(p->top_p) || p->top_p < 0 || p->top_p > 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "top_p %g: must be in [0, 1]", (double)p->top_p);
    if (!isfinite(p->min_p) || p->min_p < 0 || p->min_p > 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "min_p %g: must be in [0, 1]", (double)p->min_p);
    if (p->top_k < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "top_k %d: must be >= 0", p->top_k);
    if (!isfinite(p->repetition_penalty) || p->repetition_penalty < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "repetition_penalty %g: must be >= 0",
                         (double)p->repetition_penalty);
    if (p->repetition_context < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "repetition_context %d: must be >= 0", p->repetition_context);
    return LMX_OK;
}

/* ---- steps ---- */
void lmx_sampler_apply_penalty(lmx_sampler *s, const lmx_sampler_params *p, float *logits,
                               const int32_t *history, size_t n_history) {
    float pen = p->repetition_penalty;
    if (pen == 0.0f || pen == 1.0f || p->repetition_context <= 0 || !history || n_history == 0) return;
    size_t ctx = (size_t)p->repetition_context;
    size_t first = n_history > ctx ? n_history - ctx : 0;
    for (size_t i = first; i < n_history; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->vocab || s->mark[id]) continue;
        s->mark[id] = 1;
        float l = logits[id];
        logits[id] = l < 0 ? l * pen : l / pen;
    }
    for (size_t i = first; i < n_history; i++) {
        int32_t id = history[i];
        if (id >= 0 && id < s->vocab) s->mark[id] = 0;
    }
}

/* Index of the largest value (lowest index on ties); -1 when none is above -inf (or all NaN). */
static int32_t argmax(const float *x, int n) {
    int32_t best = -1;
    float bv = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > bv) {
            bv = x[i];
            best = i;
        }
    return best;
}

/* Quickselect: the value of rank k (0 = largest) among a[0..n), reordering a. */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k];
    }
    return a[k];
}

/* Descending value, ties by ascending id (a total order: results do not depend on qsort). */
static int cand_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void filter_top_p(lmx_sampler *s, float top_p) {
    float *lp = s->lp;
    int V = s->vocab;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (lp[i] > mx) mx = lp[i];
    /* Candidates: tokens with logprob >= thr, lowering thr until their mass reaches top_p. Every
     * non-candidate is less likely than every candidate, so the cut falls inside the candidates
     * and only they need sorting. */
    double thr = (double)mx + log(1e-4), mass = 0;
    int n = 0;
    for (;;) {
        n = 0;
        mass = 0;
        for (int i = 0; i < V; i++)
            if ((double)lp[i] >= thr && lp[i] > -INFINITY) {
                s->pairs[n].v = lp[i];
                s->pairs[n].id = i;
                n++;
                mass += exp((double)lp[i]);
            }
        if (mass >= top_p || thr == -INFINITY) break;
        thr -= log(1e3);
        if (thr < (double)mx - 200.0) thr = -INFINITY;
    }
    qsort(s->pairs, (size_t)n, sizeof *s->pairs, cand_desc);
    /* ascending cumsum > 1 - top_p  <=>  mass of the more likely tokens < top_p */
    double higher = 0;
    int keep = 0;
    while (keep < n && higher < top_p) {
        higher += exp((double)s->pairs[keep].v);
        keep++;
    }
    for (int i = 0; i < keep; i++) s->mark[s->pairs[i].id] = 1;
    for (int i = 0; i < V; i++)
        if (!s->mark[i]) lp[i] = -INFINITY;
    for (int i = 0; i < keep; i++) s->mark[s->pairs[i].id] = 0;
}

static void filter_min_p(lmx_sampler *s, float min_p) {
    float *lp = s->lp;
    int V = s->vocab;
    int32_t top = argmax(lp, V);
    double thr = (double)lp[top] + log((double)min_p);
    for (int i = 0; i < V; i++)
        if (i != top && (double)lp[i] < thr) lp[i] = -INFINITY;
}

static void filter_top_k(lmx_sampler *s, int k) {
    float *lp = s->lp;
    int V = s->vocab;
    memcpy(s->tmp, lp, (size_t)V * sizeof *lp);
    float kth = kth_largest(s->tmp, V, k - 1);
    int above = 0;
    for (int i = 0; i < V; i++)
        if (lp[i] > kth) above++;
    int ties_left = k - above;
    for (int i = 0; i < V; i++) {
        if (lp[i] > kth) continue;
        if (lp[i] == kth && ties_left > 0) {
            ties_left--;
            continue;
        }
        lp[i] = -INFINITY;
    }
}

/* Steps 1-3 into s->lp (greedy handled by the callers). */
static lmx_status prepare(lmx_sampler *s, const lmx_sampler_params *p, float *logits,
                          const int32_t *history, size_t n_history) {
    lmx_sampler_apply_penalty(s, p, logits, history, n_history);
    int V = s->vocab;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) {
        if (isnan(logits[i])) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: logit %d is NaN", i);
        if (logits[i] > mx) mx = logits[i];
    }
    if (!(mx > -INFINITY) || isinf(mx))
        return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: logits are not finite (max %g)", (double)mx);
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    float lse = (float)((double)mx + log(sum));
    for (int i = 0; i < V; i++) s->lp[i] = logits[i] - lse;
    if (p->top_p > 0 && p->top_p < 1) filter_top_p(s, p->top_p);
    if (p->min_p > 0) filter_min_p(s, p->min_p);
    if (p->top_k > 0 && p->top_k < V) filter_top_k(s, p->top_k);
    return LMX_OK;
}

lmx_status lmx_sampler_probs(lmx_sampler *s, const lmx_sampler_params *p, float *logits,
                             const int32_t *history, size_t n_history, double *probs) {
    int V = s->vocab;
    if (p->temperature == 0) {
        lmx_sampler_apply_penalty(s, p, logits, history, n_history);
        int32_t t = argmax(logits, V);
        if (t < 0) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: logits are all NaN or -inf");
        memset(probs, 0, (size_t)V * sizeof *probs);
        probs[t] = 1.0;
        return LMX_OK;
    }
    lmx_status st = prepare(s, p, logits, history, n_history);
    if (st != LMX_OK) return st;
    float mx = s->lp[argmax(s->lp, V)];
    double inv_t = 1.0 / p->temperature, sum = 0;
    for (int i = 0; i < V; i++) {
        probs[i] = s->lp[i] > -INFINITY ? exp(((double)s->lp[i] - mx) * inv_t) : 0.0;
        sum += probs[i];
    }
    for (int i = 0; i < V; i++) probs[i] /= sum;
    return LMX_OK;
}

lmx_status lmx_sampler_sample(lmx_sampler *s, const lmx_sampler_params *p, float *logits,
                              const int32_t *history, size_t n_history, int32_t *token) {
    int V = s->vocab;
    if (p->temperature == 0) {
        lmx_sampler_apply_penalty(s, p, logits, history, n_history);
        int32_t t = argmax(logits, V);
        if (t < 0) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: logits are all NaN or -inf");
        *token = t;
        return LMX_OK;
    }
    lmx_status st = prepare(s, p, logits, history, n_history);
    if (st != LMX_OK) return st;
    int32_t top = argmax(s->lp, V);
    double mx = s->lp[top], inv_t = 1.0 / p->temperature, sum = 0;
    /* weights into tmp (float is enough for the draw's resolution; the sum is double) */
    for (int i = 0; i < V; i++) {
        float w = s->lp[i] > -INFINITY ? (float)exp(((double)s->lp[i] - mx) * inv_t) : 0.0f;
        s->tmp[i] = w;
        sum += w;
    }
    double u = lmx_sampler_uniform(s) * sum, acc = 0;
    int32_t last = top;
    for (int i = 0; i < V; i++) {
        if (s->tmp[i] <= 0) continue;
        last = i;
        acc += s->tmp[i];
        if (u < acc) {
            *token = i;
            return LMX_OK;
        }
    }
    *token = last; /* rounding: u landed at the very end */
    return LMX_OK;
}
