/* metrics.c — the server's counters and histograms, and GET /metrics in the Prometheus text
 * format (version 0.0.4). The runtime's own counters (model cache hits/misses/evictions, loaded
 * models, memory) come from lmx_metrics_get; the scheduler's gauges from srv_sched_gauges. */
#include "server/server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ep_names[SRV_EP_COUNT] = {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                                   "/health", "/metrics", "other"};
static const int statuses[] = {200, 400, 401, 404, 405, 413, 500, 503};
#define N_STATUS (int)(sizeof statuses / sizeof statuses[0])

static const double ttft_b[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double itl_b[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define N_TTFT (int)(sizeof ttft_b / sizeof ttft_b[0])
#define N_ITL (int)(sizeof itl_b / sizeof itl_b[0])

typedef struct hist {
    uint64_t bucket[16]; /* cumulative counts are computed when rendering */
    uint64_t count;
    double sum;
} hist;

static struct {
    pthread_mutex_t mu;
    uint64_t req[SRV_EP_COUNT][N_STATUS + 1]; /* the last column: any other status */
    uint64_t prompt, cached, generated, cancelled;
    hist ttft, itl;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

void srv_metrics_init(void) {
    pthread_mutex_lock(&M.mu);
    memset(M.req, 0, sizeof M.req);
    M.prompt = M.cached = M.generated = M.cancelled = 0;
    memset(&M.ttft, 0, sizeof M.ttft);
    memset(&M.itl, 0, sizeof M.itl);
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_request(srv_endpoint ep, int status) {
    int k = N_STATUS;
    for (int i = 0; i < N_STATUS; i++)
        if (statuses[i] == status) k = i;
    pthread_mutex_lock(&M.mu);
    M.req[ep][k]++;
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_tokens(int prompt, int cached, int generated) {
    pthread_mutex_lock(&M.mu);
    M.prompt += (uint64_t)(prompt > 0 ? prompt : 0);
    M.cached += (uint64_t)(cached > 0 ? cached : 0);
    M.generated += (uint64_t)(generated > 0 ? generated : 0);
    pthread_mutex_unlock(&M.mu);
}

static void observe(hist *h, const double *b, int nb, double v) {
    int i = 0;
    while (i < nb && v > b[i]) i++;
    h->bucket[i]++; /* i == nb: only +Inf */
    h->count++;
    h->sum += v;
}

void srv_metrics_ttft(double s) {
    pthread_mutex_lock(&M.mu);
    observe(&M.ttft, ttft_b, N_TTFT, s);
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_itl(double s) {
    pthread_mutex_lock(&M.mu);
    observe(&M.itl, itl_b, N_ITL, s);
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_cancelled(void) {
    pthread_mutex_lock(&M.mu);
    M.cancelled++;
    pthread_mutex_unlock(&M.mu);
}

typedef struct out {
    char *p;
    size_t len, cap;
    bool fail;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...) {
    if (o->fail) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->fail = true;
            return;
        }
        if (o->p && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap ? o->cap * 2 : 8192;
        while (cap < o->len + (size_t)n + 1) cap *= 2;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->fail = true;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

static void put_hist(out *o, const char *name, const char *help, const hist *h, const double *b, int nb) {
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < nb; i++) {
        cum += h->bucket[i];
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, b[i], (unsigned long long)cum);
    }
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)h->count, name,
        h->sum, name, (unsigned long long)h->count);
}

static void counter(out *o, const char *name, const char *help, double v) {
    put(o, "# HELP %s %s\n# TYPE %s counter\n%s %.0f\n", name, help, name, name, v);
}

static void gauge(out *o, const char *name, const char *help, double v) {
    put(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.0f\n", name, help, name, name, v);
}

/* A label value with \\, \" and newlines escaped (model names have no control bytes). */
static void put_label(out *o, const char *v) {
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') put(o, "\\%c", *v);
        else if (*v == '\n') put(o, "\\n");
        else put(o, "%c", *v);
    }
}

static void lane_queued(const char *model, int queued, int busy, void *user) {
    out *o = user;
    put(o, "lmx_model_queue_depth{model=\"");
    put_label(o, model);
    put(o, "\"} %d\n", queued);
}

static void lane_busy(const char *model, int queued, int busy, void *user) {
    out *o = user;
    put(o, "lmx_model_busy_slots{model=\"");
    put_label(o, model);
    put(o, "\"} %d\n", busy);
}

char *srv_metrics_render(lmx_runtime *rt) {
    out o = {0};
    pthread_mutex_lock(&M.mu);
    put(&o, "# HELP lmx_requests_total HTTP requests by endpoint and status.\n# TYPE lmx_requests_total counter\n");
    for (int e = 0; e < SRV_EP_COUNT; e++)
        for (int k = 0; k <= N_STATUS; k++)
            if (M.req[e][k]) {
                if (k < N_STATUS)
                    put(&o, "lmx_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", ep_names[e], statuses[k],
                        (unsigned long long)M.req[e][k]);
                else
                    put(&o, "lmx_requests_total{endpoint=\"%s\",status=\"other\"} %llu\n", ep_names[e],
                        (unsigned long long)M.req[e][k]);
            }
    counter(&o, "lmx_prompt_tokens_total", "Prompt tokens of finished generations.", (double)M.prompt);
    counter(&o, "lmx_cached_prompt_tokens_total", "Prompt tokens served from the prompt cache.",
            (double)M.cached);
    counter(&o, "lmx_generated_tokens_total", "Generated tokens.", (double)M.generated);
    counter(&o, "lmx_streams_cancelled_total", "Streams that ended because the client went away.",
            (double)M.cancelled);
    hist ttft = M.ttft, itl = M.itl;
    pthread_mutex_unlock(&M.mu);
    put_hist(&o, "lmx_time_to_first_token_seconds", "Request arrival to the first generated text.", &ttft, ttft_b,
             N_TTFT);
    put_hist(&o, "lmx_inter_token_latency_seconds", "Time between successive pieces of generated text.", &itl,
             itl_b, N_ITL);
    int queued = 0, busy = 0, lanes = 0;
    srv_sched_gauges(g_srv.sched, &queued, &busy, &lanes);
    gauge(&o, "lmx_queue_depth", "Requests waiting for a slot (all models).", queued);
    gauge(&o, "lmx_busy_slots", "Generations running now (all models).", busy);
    gauge(&o, "lmx_slots", "Slots: --parallel per model with workers.", (double)lanes * g_srv.opt->parallel);
    put(&o, "# HELP lmx_model_queue_depth Requests waiting for a slot, per model.\n"
            "# TYPE lmx_model_queue_depth gauge\n");
    srv_sched_each_lane(g_srv.sched, lane_queued, &o);
    put(&o, "# HELP lmx_model_busy_slots Generations running now, per model.\n# TYPE lmx_model_busy_slots gauge\n");
    srv_sched_each_lane(g_srv.sched, lane_busy, &o);
    lmx_metrics m;
    if (lmx_metrics_get(rt, NULL, &m) == LMX_OK) {
        gauge(&o, "lmx_models_loaded", "Models in the runtime's cache.", m.n_models_loaded);
        counter(&o, "lmx_model_cache_hits_total", "Model cache hits.", (double)m.cache_hits);
        counter(&o, "lmx_model_cache_misses_total", "Model cache misses (loads).", (double)m.cache_misses);
        counter(&o, "lmx_model_cache_evictions_total", "Models evicted from the cache.", (double)m.cache_evictions);
        counter(&o, "lmx_model_loads_total", "Model loads.", (double)m.n_loads);
        counter(&o, "lmx_generation_errors_total", "Generations that failed.", (double)m.n_errors);
        counter(&o, "lmx_prompt_cache_hits_total", "Generations that reused a cached prefix.",
                (double)m.prompt_cache_hits);
        counter(&o, "lmx_prompt_cache_misses_total", "Generations that found no cached prefix.",
                (double)m.prompt_cache_misses);
        counter(&o, "lmx_prompt_cache_evictions_total", "Prompt-cache entries dropped for room.",
                (double)m.prompt_cache_evictions);
        gauge(&o, "lmx_prompt_cache_bytes", "KV bytes held by prompt-cache entries.", (double)m.prompt_cache_bytes);
        gauge(&o, "lmx_kv_pool_bytes", "Bytes of the KV pools of batched models.", (double)m.kv_pool_bytes);
        gauge(&o, "lmx_kv_pool_used_bytes", "KV pool bytes held by sequences (running and cached).",
              (double)m.kv_pool_used_bytes);
        gauge(&o, "lmx_kv_pool_free_bytes", "KV pool bytes free.", (double)(m.kv_pool_bytes - m.kv_pool_used_bytes));
        put(&o, "# HELP lmx_batch_size Sequences per batched step.\n# TYPE lmx_batch_size histogram\n");
        uint64_t cum = 0;
        for (int i = 0; i < LMX_BATCH_HIST_BUCKETS; i++) {
            cum += m.batch_size_hist[i];
            if (i < LMX_BATCH_HIST_BUCKETS - 1) put(&o, "lmx_batch_size_bucket{le=\"%d\"} %llu\n", 1 << i, (unsigned long long)cum);
        }
        put(&o, "lmx_batch_size_bucket{le=\"+Inf\"} %llu\nlmx_batch_size_sum %llu\nlmx_batch_size_count %llu\n",
            (unsigned long long)cum, (unsigned long long)m.batch_rows, (unsigned long long)m.batch_steps);
        gauge(&o, "lmx_memory_bytes", "Process RSS + device bytes.", (double)m.current_memory_bytes);
        gauge(&o, "lmx_memory_peak_bytes", "Highest lmx_memory_bytes seen.", (double)m.peak_memory_bytes);
    }
    if (o.fail) {
        free(o.p);
        return NULL;
    }
    return o.p;
}
