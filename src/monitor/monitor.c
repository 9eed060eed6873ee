/* monitor.c — counters and memory probes (see monitor.h). */
#include "monitor/monitor.h"
#include "util/error.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct counters {
    double load_ms;
    uint64_t n_loads, n_inferences, n_errors;
    double total_inference_ms, sum_tps, sum_ttft;
    uint64_t total_tokens, total_prompt_tokens;
    uint64_t hits, misses, evictions;
    int64_t bytes; /* per model: the estimate while cached */
    int64_t peak;
} counters;

typedef struct model_stats {
    char *id;
    counters c;
} model_stats;

struct lmx_monitor {
    pthread_mutex_t mu;
    model_stats *models; /* [n] */
    int n, cap;
    counters all;        /* the whole runtime; bytes/peak = the last memory sample */
    double gpu_sum;
    uint64_t gpu_n;
};

int64_t lmx_process_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    long long size = 0, resident = 0;
    int got = fscanf(f, "%lld %lld", &size, &resident);
    fclose(f);
    if (got != 2) return 0;
    long page = sysconf(_SC_PAGESIZE);
    return (int64_t)resident * (page > 0 ? page : 4096);
}

lmx_status lmx_monitor_create(lmx_monitor **out) {
    *out = NULL;
    lmx_monitor *m = calloc(1, sizeof *m);
    if (!m) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "monitor: allocation failed");
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return LMX_OK;
}

void lmx_monitor_destroy(lmx_monitor *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) free(m->models[i].id);
    free(m->models);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* mutex held; NULL only when out of memory (the sample is then dropped) */
static counters *model_counters(lmx_monitor *m, const char *id, bool create) {
    if (!id) return NULL;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->models[i].id, id) == 0) return &m->models[i].c;
    if (!create) return NULL;
    if (m->n == m->cap) {
        int cap = m->cap ? m->cap * 2 : 8;
        model_stats *nm = realloc(m->models, (size_t)cap * sizeof *nm);
        if (!nm) return NULL;
        m->models = nm;
        m->cap = cap;
    }
    char *copy = strdup(id);
    if (!copy) return NULL;
    m->models[m->n].id = copy;
    memset(&m->models[m->n].c, 0, sizeof(counters));
    return &m->models[m->n++].c;
}

static void sample_locked(lmx_monitor *m, int64_t device_bytes) {
    int64_t cur = lmx_process_rss_bytes() + (device_bytes > 0 ? device_bytes : 0);
    m->all.bytes = cur;
    if (cur > m->all.peak) m->all.peak = cur;
}

void lmx_monitor_sample_memory(lmx_monitor *m, int64_t device_bytes) {
    pthread_mutex_lock(&m->mu);
    sample_locked(m, device_bytes);
    pthread_mutex_unlock(&m->mu);
}

#define BUMP(field)                                                                                \
    do {                                                                                           \
        pthread_mutex_lock(&m->mu);                                                                \
        counters *c = model_counters(m, id, true);                                                 \
        if (c) c->field++;                                                                         \
        m->all.field++;                                                                            \
        pthread_mutex_unlock(&m->mu);                                                              \
    } while (0)

void lmx_monitor_record_hit(lmx_monitor *m, const char *id) { BUMP(hits); }
void lmx_monitor_record_miss(lmx_monitor *m, const char *id) { BUMP(misses); }

void lmx_monitor_record_eviction(lmx_monitor *m, const char *id) {
    pthread_mutex_lock(&m->mu);
    counters *c = model_counters(m, id, true);
    if (c) {
        c->evictions++;
        c->bytes = 0;
    }
    m->all.evictions++;
    pthread_mutex_unlock(&m->mu);
}

void lmx_monitor_record_load(lmx_monitor *m, const char *id, double load_ms, int64_t bytes) {
    pthread_mutex_lock(&m->mu);
    counters *c = model_counters(m, id, true);
    if (c) {
        c->load_ms += load_ms;
        c->n_loads++;
        c->bytes = bytes;
        if (bytes > c->peak) c->peak = bytes;
    }
    m->all.load_ms += load_ms;
    m->all.n_loads++;
    pthread_mutex_unlock(&m->mu);
}

void lmx_monitor_record_unload(lmx_monitor *m, const char *id) {
    pthread_mutex_lock(&m->mu);
    counters *c = model_counters(m, id, false);
    if (c) c->bytes = 0;
    pthread_mutex_unlock(&m->mu);
}

static void add_inference(counters *c, const lmx_gen_result *r, bool ok) {
    if (!ok || !r) {
        c->n_errors++;
        return;
    }
    c->n_inferences++;
    c->total_inference_ms += r->total_ms;
    c->total_tokens += (uint64_t)(r->n_generated_tokens > 0 ? r->n_generated_tokens : 0);
    c->total_prompt_tokens += (uint64_t)(r->n_prompt_tokens > 0 ? r->n_prompt_tokens : 0);
    c->sum_tps += r->tokens_per_second;
    c->sum_ttft += r->ttft_ms;
}

void lmx_monitor_record_inference(lmx_monitor *m, const char *id, const lmx_gen_result *res, bool ok) {
    pthread_mutex_lock(&m->mu);
    counters *c = model_counters(m, id, true);
    if (c) add_inference(c, res, ok);
    add_inference(&m->all, res, ok);
    pthread_mutex_unlock(&m->mu);
}

void lmx_monitor_record_gpu_utilization(lmx_monitor *m, double percent) {
    if (!(percent >= 0)) return;
    pthread_mutex_lock(&m->mu);
    m->gpu_sum += percent;
    m->gpu_n++;
    pthread_mutex_unlock(&m->mu);
}

static void fill(const counters *c, lmx_metrics *out) {
    memset(out, 0, sizeof *out);
    out->load_ms = c->load_ms;
    out->n_loads = c->n_loads;
    out->n_inferences = c->n_inferences;
    out->n_errors = c->n_errors;
    out->total_inference_ms = c->total_inference_ms;
    out->total_tokens = c->total_tokens;
    out->total_prompt_tokens = c->total_prompt_tokens;
    out->avg_tokens_per_second = c->n_inferences ? c->sum_tps / (double)c->n_inferences : 0;
    out->avg_ttft_ms = c->n_inferences ? c->sum_ttft / (double)c->n_inferences : 0;
    out->current_memory_bytes = c->bytes;
    out->peak_memory_bytes = c->peak;
    out->cache_hits = c->hits;
    out->cache_misses = c->misses;
    out->cache_evictions = c->evictions;
    uint64_t tot = c->hits + c->misses;
    out->cache_hit_rate = tot ? (double)c->hits / (double)tot : 0;
    out->avg_gpu_utilization = -1;
}

lmx_status lmx_monitor_get(lmx_monitor *m, const char *id, int64_t device_bytes, lmx_metrics *out) {
    pthread_mutex_lock(&m->mu);
    if (id) {
        counters *c = model_counters(m, id, false);
        if (!c) {
            pthread_mutex_unlock(&m->mu);
            return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "no metrics for model %s", id);
        }
        fill(c, out);
    } else {
        sample_locked(m, device_bytes);
        fill(&m->all, out);
    }
    out->avg_gpu_utilization = m->gpu_n ? m->gpu_sum / (double)m->gpu_n : -1;
    pthread_mutex_unlock(&m->mu);
    return LMX_OK;
}

static void reset_counters(counters *c) {
    int64_t bytes = c->bytes;
    memset(c, 0, sizeof *c);
    c->bytes = bytes;
    c->peak = bytes;
}

void lmx_monitor_reset(lmx_monitor *m, const char *id) {
    pthread_mutex_lock(&m->mu);
    if (id) {
        counters *c = model_counters(m, id, false);
        if (c) reset_counters(c);
    } else {
        for (int i = 0; i < m->n; i++) reset_counters(&m->models[i].c);
        reset_counters(&m->all);
        m->gpu_sum = 0;
        m->gpu_n = 0;
    }
    pthread_mutex_unlock(&m->mu);
}
