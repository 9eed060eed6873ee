/* sampler.c — repetition penalty, top-p / min-p / top-k filters, temperature and a seeded
 * categorical draw (order and RNG documented in sampler.h). */
#include "generate/sampler.h"
#include "util/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define TOPP_BUCKETS 1024
#define TOPP_RANGE 32.0f /* logits more than 32 below the max share the last bucket */

typedef struct cand {
    float v;
    int32_t id;
} cand;

struct lmx_sampler {
    int vocab;
    uint64_t rng[4];   /* xoshiro256** state */
    float *tmp;        /* [vocab] quickselect scratch */
    struct cand *pairs;/* [2 * vocab] (logit, id) survivors; the second half: top_p's boundary bucket */
    double *bucket_mass; /* [TOPP_BUCKETS] top_p mass per bucket */
    uint8_t *mark;     /* [vocab] penalty de-duplication marks, all zero between calls */
    int32_t *count;    /* [vocab] generated-token counts of the frequency/presence penalty, zero between calls */
    size_t n_prompt;   /* history[0..n_prompt) is the prompt: those two penalties skip it */
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
    s->tmp = malloc((size_t)vocab * sizeof *s->tmp);
    s->pairs = malloc(2 * (size_t)vocab * sizeof *s->pairs);
    s->bucket_mass = malloc(TOPP_BUCKETS * sizeof *s->bucket_mass);
    s->mark = calloc((size_t)vocab, 1);
    s->count = calloc((size_t)vocab, sizeof *s->count);
    if (!s->tmp || !s->pairs || !s->bucket_mass || !s->mark || !s->count) {
        lmx_sampler_destroy(s);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "sampler: cannot allocate scratch for %d tokens", vocab);
    }
    lmx_sampler_seed(s, 0);
    *out = s;
    return LMX_OK;
}

void lmx_sampler_destroy(lmx_sampler *s) {
    if (!s) return;
    free(s->tmp);
    free(s->pairs);
    free(s->bucket_mass);
    free(s->mark);
    free(s->count);
    free(s);
}

lmx_status lmx_sampling_validate(const lmx_sampling *p) {
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
    if (!isfinite(p->frequency_penalty) || p->frequency_penalty < -2 || p->frequency_penalty > 2)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "frequency_penalty %g: must be in [-2, 2]",
                         (double)p->frequency_penalty);
    if (!isfinite(p->presence_penalty) || p->presence_penalty < -2 || p->presence_penalty > 2)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "presence_penalty %g: must be in [-2, 2]",
                         (double)p->presence_penalty);
    return LMX_OK;
}

void lmx_sampler_set_prompt_len(lmx_sampler *s, size_t n_prompt) { s->n_prompt = n_prompt; }

/* OpenAI's frequency / presence penalties over history[n_prompt..n_history) (the generated ids). */
static void apply_count_penalties(lmx_sampler *s, const lmx_sampling *p, float *logits, const int32_t *history,
                                  size_t n_history) {
    const float fp = p->frequency_penalty, pp = p->presence_penalty;
    if ((fp == 0.0f && pp == 0.0f) || !history || n_history <= s->n_prompt) return;
    for (size_t i = s->n_prompt; i < n_history; i++)
        if (history[i] >= 0 && history[i] < s->vocab) s->count[history[i]]++;
    for (size_t i = s->n_prompt; i < n_history; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->vocab || s->count[id] == 0) continue;
        logits[id] -= (float)s->count[id] * fp + pp;
        s->count[id] = 0; /* once per distinct id; also restores the all-zero invariant */
    }
}

/* ---- steps ---- */
void lmx_sampler_apply_penalty(lmx_sampler *s, const lmx_sampling *p, float *logits,
                               const int32_t *history, size_t n_history) {
    float pen = p->repetition_penalty;
    if (pen == 0.0f || pen == 1.0f || p->repetition_context <= 0 || !history || n_history == 0) {
        apply_count_penalties(s, p, logits, history, n_history);
        return;
    }
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
    apply_count_penalties(s, p, logits, history, n_history);
}

lmx_status lmx_sampler_logprobs(const lmx_sampler *s, const float *logits, int32_t token, int n_top,
                                float *logprob, lmx_token_logprob *top) {
    const int V = s->vocab;
    if (token < 0 || token >= V || n_top < 0 || n_top > LMX_MAX_TOP_LOGPROBS)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "logprobs: token %d, %d alternatives", token, n_top);
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    if (!isfinite(mx)) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "logprobs: the largest logit is %g", (double)mx);
    double z = 0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - mx);
    const double lse = (double)mx + log(z);
    *logprob = (float)((double)logits[token] - lse);
    /* the n_top largest by insertion into top[0..n) (descending value, ascending id on ties) */
    int n = 0;
    for (int i = 0; i < V && n_top > 0; i++) {
        float v = logits[i];
        if (n == n_top && !(v > top[n - 1].logprob)) continue;
        int j = n < n_top ? n++ : n - 1;
        while (j > 0 && v > top[j - 1].logprob) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].id = i;
        top[j].logprob = v;
    }
    for (int i = 0; i < n; i++) top[i].logprob = (float)((double)top[i].logprob - lse);
    return LMX_OK;
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

/*
 * The filters work on the penalized logits l directly: logprob_i = l_i - lse, so every test that
 * compares logprobs (min_p, top_k, the order of top_p) is the same test on logits, and only top_p
 * needs the normalizer. The survivors are either "all tokens" (n_kept = -1) or the list
 * s->pairs[0..n_kept) of (logit, id) — usually short, which keeps the final draw cheap.
 */
typedef struct kept {
    float mx;    /* the largest logit (always kept) */
    int n;       /* -1 = every token with a finite logit; else s->pairs[0..n) */
} kept;


static inline int bucket_of(float d) {
    float b = d * (TOPP_BUCKETS / TOPP_RANGE);
    return b >= TOPP_BUCKETS - 1 ? TOPP_BUCKETS - 1 : (int)b;
}

/* top_p without sorting the vocabulary: bucket the probability mass by distance below the max
 * logit. Buckets wholly above the cut are kept, buckets below it dropped, and only the one bucket
 * the cut falls into is sorted to place the cut exactly (mass of more likely tokens < top_p). */
static void keep_top_p(lmx_sampler *s, const float *l, float mx, double top_p, kept *k) {
    int V = s->vocab;
    double *bm = s->bucket_mass; /* [TOPP_BUCKETS] */
    memset(bm, 0, TOPP_BUCKETS * sizeof *bm);
    double z = 0;
    for (int i = 0; i < V; i++) {
        float w = expf(l[i] - mx); /* 0 for -inf */
        s->tmp[i] = w;
        z += w;
        if (w > 0) bm[bucket_of(mx - l[i])] += w;
    }
    double target = top_p * z, before = 0;
    int cut = 0;
    while (cut < TOPP_BUCKETS - 1 && before + bm[cut] < target) before += bm[cut++];
    /* kept: every token of the buckets above `cut`, then the sorted head of bucket `cut` */
    int n = 0, nb = 0;
    cand *boundary = s->pairs + V; /* second half of pairs [2 * vocab] */
    for (int i = 0; i < V; i++) {
        if (!(s->tmp[i] > 0)) continue;
        int b = bucket_of(mx - l[i]);
        if (b < cut) {
            s->pairs[n].v = l[i];
            s->pairs[n].id = i;
            n++;
        } else if (b == cut) {
            boundary[nb].v = l[i];
            boundary[nb].id = i;
            nb++;
        }
    }
    qsort(boundary, (size_t)nb, sizeof *boundary, cand_desc);
    double higher = before;
    for (int j = 0; j < nb && higher < target; j++) {
        higher += expf(boundary[j].v - mx);
        s->pairs[n++] = boundary[j];
    }
    k->n = n;
}

static void keep_min_p(lmx_sampler *s, const float *l, float mx, double min_p, kept *k) {
    float thr = (float)((double)mx + log(min_p)); /* logprob < max + ln(min_p) is dropped */
    if (k->n >= 0) {
        int w = 0;
        for (int i = 0; i < k->n; i++)
            if (s->pairs[i].v >= thr || s->pairs[i].v == mx) s->pairs[w++] = s->pairs[i];
        k->n = w;
        return;
    }
    int n = 0;
    for (int i = 0; i < s->vocab; i++)
        if (l[i] >= thr && l[i] > -INFINITY) {
            s->pairs[n].v = l[i];
            s->pairs[n].id = i;
            n++;
        }
    k->n = n;
}

static void keep_top_k(lmx_sampler *s, const float *l, int topk, kept *k) {
    int n = k->n < 0 ? s->vocab : k->n;
    if (k->n >= 0 && n <= topk) return;
    /* the k-th largest value by quickselect on a copy (tmp [vocab]) */
    if (k->n < 0) memcpy(s->tmp, l, (size_t)n * sizeof *l);
    else
        for (int i = 0; i < n; i++) s->tmp[i] = s->pairs[i].v;
    float kth = kth_largest(s->tmp, n, topk - 1);
    int above = 0;
    for (int i = 0; i < n; i++) above += (k->n < 0 ? l[i] : s->pairs[i].v) > kth;
    int ties_left = topk - above, w = 0;
    /* ties at the k-th value: the first ones in list order (ascending ids over the vocabulary) */
    for (int i = 0; i < n; i++) {
        float v = k->n < 0 ? l[i] : s->pairs[i].v;
        int32_t id = k->n < 0 ? i : s->pairs[i].id;
        if ((v > kth || (v == kth && ties_left-- > 0)) && v > -INFINITY) {
            s->pairs[w].v = v;
            s->pairs[w].id = id;
            w++;
        }
    }
    k->n = w;
}

/* Penalty, checks, filters (temperature > 0). */
static lmx_status filter(lmx_sampler *s, const lmx_sampling *p, float *logits, const int32_t *history,
                         size_t n_history, kept *k) {
    lmx_sampler_apply_penalty(s, p, logits, history, n_history);
    int V = s->vocab;
    float mx = -INFINITY;
    bool nan = false;
    for (int i = 0; i < V; i++) {
        nan |= isnan(logits[i]);
        mx = logits[i] > mx ? logits[i] : mx;
    }
    if (nan) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: a logit is NaN");
    if (!isfinite(mx)) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: the largest logit is %g", (double)mx);
    k->mx = mx;
    k->n = -1;
    if (p->top_p > 0 && p->top_p < 1) keep_top_p(s, logits, mx, p->top_p, k);
    if (p->min_p > 0) keep_min_p(s, logits, mx, p->min_p, k);
    if (p->top_k > 0 && p->top_k < V) keep_top_k(s, logits, p->top_k, k);
    return LMX_OK;
}

lmx_status lmx_sampler_probs(lmx_sampler *s, const lmx_sampling *p, float *logits,
                             const int32_t *history, size_t n_history, double *probs) {
    int V = s->vocab;
    memset(probs, 0, (size_t)V * sizeof *probs);
    if (p->temperature == 0) {
        lmx_sampler_apply_penalty(s, p, logits, history, n_history);
        int32_t t = argmax(logits, V);
        if (t < 0) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: logits are all NaN or -inf");
        probs[t] = 1.0;
        return LMX_OK;
    }
    kept k;
    lmx_status st = filter(s, p, logits, history, n_history, &k);
    if (st != LMX_OK) return st;
    double inv_t = 1.0 / p->temperature, sum = 0;
    if (k.n < 0) {
        for (int i = 0; i < V; i++) sum += probs[i] = exp(((double)logits[i] - k.mx) * inv_t);
    } else {
        for (int i = 0; i < k.n; i++) sum += probs[s->pairs[i].id] = exp(((double)s->pairs[i].v - k.mx) * inv_t);
    }
    for (int i = 0; i < V; i++) probs[i] /= sum;
    return LMX_OK;
}

/* The draw with a given uniform (u_given) or the generator's next one, at the same point of the
 * computation as always (after the filters: an error before it consumes no uniform). */
static lmx_status sample_impl(lmx_sampler *s, const lmx_sampling *p, float *logits, const int32_t *history,
                              size_t n_history, const double *u_given, int32_t *token) {
    int V = s->vocab;
    if (p->temperature == 0) {
        lmx_sampler_apply_penalty(s, p, logits, history, n_history);
        int32_t t = argmax(logits, V);
        if (t < 0) return lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampler: logits are all NaN or -inf");
        *token = t;
        return LMX_OK;
    }
    kept k;
    lmx_status st = filter(s, p, logits, history, n_history, &k);
    if (st != LMX_OK) return st;
    float inv_t = 1.0f / p->temperature;
    double sum = 0;
    if (k.n < 0) { /* weights of every token into tmp [vocab] */
        for (int i = 0; i < V; i++) sum += s->tmp[i] = expf((logits[i] - k.mx) * inv_t);
        double u = (u_given ? *u_given : lmx_sampler_uniform(s)) * sum, acc = 0;
        int32_t last = 0;
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
    for (int i = 0; i < k.n; i++) sum += s->tmp[i] = expf((s->pairs[i].v - k.mx) * inv_t);
    double u = (u_given ? *u_given : lmx_sampler_uniform(s)) * sum, acc = 0;
    for (int i = 0; i < k.n; i++) {
        acc += s->tmp[i];
        if (u < acc) {
            *token = s->pairs[i].id;
            return LMX_OK;
        }
    }
    *token = s->pairs[k.n - 1].id;
    return LMX_OK;
}

lmx_status lmx_sampler_sample(lmx_sampler *s, const lmx_sampling *p, float *logits,
                              const int32_t *history, size_t n_history, int32_t *token) {
    return sample_impl(s, p, logits, history, n_history, NULL, token);
}

lmx_status lmx_sampler_sample_u(lmx_sampler *s, const lmx_sampling *p, float *logits,
                                const int32_t *history, size_t n_history, double u, int32_t *token) {
    return sample_impl(s, p, logits, history, n_history, &u, token);
}
