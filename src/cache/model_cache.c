/* model_cache.c — LRU model cache with memory budget, pinning and OOM evict-and-retry
 * (see model_cache.h). The table is a short linked list: caches hold a handful of models. */
#include "cache/model_cache.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LMX_CACHE_MAX_ATTEMPTS 3

enum { ENTRY_LOADING, ENTRY_READY };

/* One prompt-cache entry: a finished generation's KV cache and the ids whose K/V it holds. */
typedef struct pc_entry {
    lmx_engine_kv *kv;
    int32_t *ids;
    size_t n;
    size_t n_exact;            /* ids[0..n_exact) were written by a prefill: the reusable prefix */
    int capacity;              /* positions the KV was created for */
    int64_t bytes;
    uint64_t tick;             /* LRU order, shared with nothing else */
    struct pc_entry *next;
} pc_entry;

struct lmx_cache_entry {
    char *id;
    char *path;
    lmx_engine_model *model;   /* NULL while loading */
    lmx_model_facts facts;     /* the engine's, state released */
    int max_context;
    bool kv_cache;
    int64_t bytes;             /* reserved estimate */
    int state;
    bool detached;             /* unloaded while pinned: not findable, closed at last release */
    int refs;                  /* pins */
    double loaded_at, last_access, load_ms;
    uint64_t access_count;
    uint64_t tick;             /* LRU order: larger = more recent */
    pc_entry *pc;              /* prompt-cache entries of this model (counted in reserved unless detached) */
    void *aux;                 /* the companion object (lmx_model_cache_entry_aux) or NULL */
    lmx_cache_aux_destroy_fn aux_destroy;
    int aux_state;             /* AUX_NONE, AUX_CREATING, AUX_DONE (aux may be NULL: creation failed) */
    struct lmx_cache_entry *next;
};

enum { AUX_NONE = 0, AUX_CREATING, AUX_DONE };

struct lmx_model_cache {
    const lmx_engine *engine;
    pthread_mutex_t mu;
    pthread_cond_t changed;    /* a load finished or failed */
    lmx_cache_limits lim;
    lmx_cache_entry *head;
    uint64_t tick;
    int64_t reserved;
    lmx_cache_stats st;
    uint64_t pc_tick;
    int64_t pc_bytes;          /* prompt-cache bytes held (in reserved too) */
    int pc_entries;
    lmx_cache_event_fn on_event;
    void *user;
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t budget_of(const lmx_cache_limits *l) {
    return l->max_memory_bytes > 0 ? (int64_t)((double)l->max_memory_bytes * 0.8) : 0;
}

static void event(lmx_model_cache *c, const char *id, lmx_cache_event ev, double load_ms, int64_t bytes) {
    if (c->on_event) c->on_event(c->user, id, ev, load_ms, bytes);
}

static lmx_status check_limits(lmx_cache_limits l) {
    if (l.max_models < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "max_cached_models %d: must be >= 1", l.max_models);
    if (l.prompt_cache_bytes < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "prompt_cache_bytes %lld: must be >= 0 (0 = off)",
                         (long long)l.prompt_cache_bytes);
    if (l.max_memory_bytes < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "max_memory_bytes %lld: must be >= 0 (0 = no limit)",
                         (long long)l.max_memory_bytes);
    return LMX_OK;
}

lmx_status lmx_model_cache_create(const lmx_engine *engine, lmx_cache_limits limits,
                                  lmx_cache_event_fn on_event, void *user, lmx_model_cache **out) {
    *out = NULL;
    lmx_status st = check_limits(limits);
    if (st != LMX_OK) return st;
    lmx_model_cache *c = calloc(1, sizeof *c);
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "model cache: allocation failed");
    c->engine = engine;
    c->lim = limits;
    c->on_event = on_event;
    c->user = user;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->changed, NULL);
    *out = c;
    return LMX_OK;
}

static void pc_free_chain(lmx_model_cache *c, pc_entry *p) {
    while (p) {
        pc_entry *n = p->next;
        if (c->engine) c->engine->kv_destroy(p->kv);
        free(p->ids);
        free(p);
        p = n;
    }
}

static void entry_free(lmx_model_cache *c, lmx_cache_entry *e) {
    if (!e) return;
    if (e->aux) e->aux_destroy(e->aux); /* the companion (KV pool) before the model */
    pc_free_chain(c, e->pc); /* the KV caches before their model */
    e->pc = NULL;
    if (e->model && c->engine) c->engine->close(e->model);
    free(e->id);
    free(e->path);
    free(e);
}

void lmx_model_cache_destroy(lmx_model_cache *c) {
    if (!c) return;
    for (lmx_cache_entry *e = c->head, *n; e; e = n) {
        n = e->next;
        entry_free(c, e);
    }
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- table helpers (mutex held) ---- */
static lmx_cache_entry *find(lmx_model_cache *c, const char *id) {
    for (lmx_cache_entry *e = c->head; e; e = e->next)
        if (!e->detached && strcmp(e->id, id) == 0) return e;
    return NULL;
}

static void unlink_entry(lmx_model_cache *c, lmx_cache_entry *t) {
    for (lmx_cache_entry **pp = &c->head; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            t->next = NULL;
            return;
        }
}

static int count_models(lmx_model_cache *c) {
    int n = 0;
    for (lmx_cache_entry *e = c->head; e; e = e->next) n += !e->detached;
    return n;
}

static lmx_cache_entry *lru_victim(lmx_model_cache *c) {
    lmx_cache_entry *best = NULL;
    for (lmx_cache_entry *e = c->head; e; e = e->next)
        if (e->state == ENTRY_READY && !e->detached && e->refs == 0 && (!best || e->tick < best->tick))
            best = e;
    return best;
}

/* Stops counting e's prompt-cache entries (they stay on e->pc, freed with e): the model goes. */
static void pc_uncount_all(lmx_model_cache *c, lmx_cache_entry *e) {
    for (pc_entry *p = e->pc; p; p = p->next) {
        c->reserved -= p->bytes;
        c->pc_bytes -= p->bytes;
        c->pc_entries--;
    }
}

/* Unlinks the least recently used prompt-cache entry of any model (mutex held; the caller frees it
 * outside the mutex) or returns NULL. */
static pc_entry *pc_evict_one(lmx_model_cache *c) {
    pc_entry **best = NULL;
    for (lmx_cache_entry *e = c->head; e; e = e->next) {
        if (e->detached) continue;
        for (pc_entry **pp = &e->pc; *pp; pp = &(*pp)->next)
            if (!best || (*pp)->tick < (*best)->tick) best = pp;
    }
    if (!best) return NULL;
    pc_entry *v = *best;
    *best = v->next;
    v->next = NULL;
    c->reserved -= v->bytes;
    c->pc_bytes -= v->bytes;
    c->pc_entries--;
    c->st.pc_evictions++;
    return v;
}

/* Unlinks the LRU victim (to be closed by the caller outside the mutex) or returns NULL. */
static lmx_cache_entry *evict_one(lmx_model_cache *c) {
    lmx_cache_entry *v = lru_victim(c);
    if (!v) return NULL;
    unlink_entry(c, v);
    pc_uncount_all(c, v);
    c->reserved -= v->bytes;
    c->st.evictions++;
    LMX_LOG_I("model cache: evicting %s (%lld bytes)", v->id, (long long)v->bytes);
    event(c, v->id, LMX_CACHE_EVICT, 0, 0);
    return v;
}

/* Evicts while over the limits (needing `extra` more bytes): prompt-cache entries first (while
 * over their own budget or the memory budget), then models; victims are chained onto *victims and
 * *pcv. */
static void evict_to_fit(lmx_model_cache *c, int64_t extra, lmx_cache_entry **victims, pc_entry **pcv) {
    int64_t budget = budget_of(&c->lim);
    while (c->pc_bytes > c->lim.prompt_cache_bytes || (budget > 0 && c->reserved + extra > budget)) {
        pc_entry *p = pc_evict_one(c);
        if (!p) break;
        p->next = *pcv;
        *pcv = p;
    }
    while (count_models(c) > c->lim.max_models || (budget > 0 && c->reserved + extra > budget)) {
        lmx_cache_entry *v = evict_one(c);
        if (!v) break;
        v->next = *victims;
        *victims = v;
    }
}

static void free_chain(lmx_model_cache *c, lmx_cache_entry *v) {
    while (v) {
        lmx_cache_entry *n = v->next;
        entry_free(c, v);
        v = n;
    }
}

static void touch(lmx_model_cache *c, lmx_cache_entry *e) {
    e->tick = ++c->tick;
    e->last_access = wall_now();
    e->access_count++;
}

lmx_status lmx_model_cache_set_limits(lmx_model_cache *c, lmx_cache_limits limits) {
    lmx_status st = check_limits(limits);
    if (st != LMX_OK) return st;
    lmx_cache_entry *victims = NULL;
    pc_entry *pcv = NULL;
    pthread_mutex_lock(&c->mu);
    c->lim = limits;
    evict_to_fit(c, 0, &victims, &pcv);
    pthread_mutex_unlock(&c->mu);
    pc_free_chain(c, pcv);
    free_chain(c, victims);
    return LMX_OK;
}

/* Drops a placeholder whose load failed (mutex NOT held on entry). */
static void drop_placeholder(lmx_model_cache *c, lmx_cache_entry *e) {
    pthread_mutex_lock(&c->mu);
    unlink_entry(c, e);
    c->reserved -= e->bytes;
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->mu);
    entry_free(c, e);
}

/* The estimate, eviction and open of a placeholder. facts: the probe's, handed to every open
 * attempt; released by the caller. */
static lmx_status load_with(lmx_model_cache *c, lmx_cache_entry *e, const lmx_engine_load_opts *opts,
                            lmx_model_facts *facts) {
    const lmx_engine *eng = c->engine;
    lmx_status st = eng->probe(eng->ctx, e->path, opts, facts);
    if (st != LMX_OK) return lmx_error_prefix(st, "model %s", e->id);
    /* As in mlx-lm / HF, the context may exceed the model's max_position (quality may degrade):
     * only a warning. */
    if (facts->max_position > 0 && facts->max_position < opts->max_context)
        LMX_LOG_W("model %s: context %d is longer than its max_position_embeddings %d", e->id,
                  opts->max_context, facts->max_position);
    /* one device's share (tensor parallel: a rank's; the budget counts one device) */
    const int64_t probe_total = facts->info.weight_bytes;
    const int64_t probe_weights = facts->device_weight_bytes > 0 ? facts->device_weight_bytes : facts->info.weight_bytes;
    int64_t est = probe_weights + facts->kv_bytes_per_token * (int64_t)opts->max_context + facts->scratch_bytes;
    lmx_cache_entry *victims = NULL;
    pthread_mutex_lock(&c->mu);
    int64_t budget = budget_of(&c->lim);
    if (budget > 0 && est > budget) {
        pthread_mutex_unlock(&c->mu);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY,
                         "model %s needs about %lld bytes (weights %lld + KV cache for %d tokens + scratch), more "
                         "than the budget of %lld bytes (80%% of max_memory_bytes %lld)",
                         e->id, (long long)est, (long long)probe_weights, opts->max_context,
                         (long long)budget, (long long)c->lim.max_memory_bytes);
    }
    pc_entry *pcv = NULL;
    evict_to_fit(c, est, &victims, &pcv);
    if (budget > 0 && c->reserved + est > budget) {
        int64_t held = c->reserved;
        pthread_mutex_unlock(&c->mu);
        pc_free_chain(c, pcv);
        free_chain(c, victims);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY,
                         "model %s needs about %lld bytes; %lld of the %lld-byte budget are held by "
                         "models in use that cannot be evicted now",
                         e->id, (long long)est, (long long)held, (long long)budget);
    }
    c->reserved += est;
    e->bytes = est;
    pthread_mutex_unlock(&c->mu);
    pc_free_chain(c, pcv);
    free_chain(c, victims);

    lmx_engine_model *m = NULL;
    int attempt;
    for (attempt = 1;; attempt++) {
        pthread_mutex_lock(&c->mu);
        c->st.load_attempts++;
        pthread_mutex_unlock(&c->mu);
        st = eng->open(eng->ctx, e->path, opts, &m, facts);
        if (st != LMX_ERR_OUT_OF_MEMORY || attempt >= LMX_CACHE_MAX_ATTEMPTS) break;
        pthread_mutex_lock(&c->mu);
        pc_entry *pv = NULL;
        for (pc_entry *p; (p = pc_evict_one(c));) { /* the prompt cache goes first, all of it */
            p->next = pv;
            pv = p;
        }
        lmx_cache_entry *v = pv ? NULL : evict_one(c);
        pthread_mutex_unlock(&c->mu);
        if (pv) {
            LMX_LOG_W("model cache: out of memory loading %s (attempt %d); dropped the prompt cache, retrying",
                      e->id, attempt);
            pc_free_chain(c, pv);
            continue;
        }
        if (!v) break; /* nothing left to free: retrying cannot help */
        LMX_LOG_W("model cache: out of memory loading %s (attempt %d); evicted %s, retrying", e->id,
                  attempt, v->id);
        entry_free(c, v);
    }
    if (st != LMX_OK) {
        if (st == LMX_ERR_OUT_OF_MEMORY)
            lmx_error_prefix(st, "model %s: allocation failed after %d attempt%s", e->id, attempt,
                             attempt == 1 ? "" : "s");
        else
            lmx_error_prefix(st, "model %s", e->id);
        return st;
    }
    if (facts->info.vocab_size <= 0) {
        eng->close(m);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model %s: engine reports vocab size %d", e->id,
                         facts->info.vocab_size);
    }
    lmx_model_facts_release(facts);
    if (facts->info.weight_bytes <= 0) facts->info.weight_bytes = probe_total;
    pthread_mutex_lock(&c->mu);
    e->model = m;
    e->facts = *facts;
    e->max_context = opts->max_context;
    e->kv_cache = opts->kv_cache;
    e->state = ENTRY_READY;
    e->loaded_at = wall_now();
    pthread_mutex_unlock(&c->mu);
    return LMX_OK;
}

static lmx_status load_into(lmx_model_cache *c, lmx_cache_entry *e, const lmx_engine_load_opts *opts) {
    lmx_model_facts facts;
    memset(&facts, 0, sizeof facts);
    lmx_status st = load_with(c, e, opts, &facts);
    lmx_model_facts_release(&facts);
    return st;
}

lmx_status lmx_model_cache_acquire(lmx_model_cache *c, const char *id, const char *path,
                                   const lmx_engine_load_opts *opts, lmx_cache_entry **out, bool *hit,
                                   double *load_ms) {
    *out = NULL;
    if (hit) *hit = false;
    if (load_ms) *load_ms = 0;
    if (!id || !*id) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "model id is NULL or empty");
    pthread_mutex_lock(&c->mu);
    lmx_cache_entry *e;
    while ((e = find(c, id)) && e->state == ENTRY_LOADING) pthread_cond_wait(&c->changed, &c->mu);
    if (e) {
        if (path && strcmp(path, e->path) != 0) {
            pthread_mutex_unlock(&c->mu);
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "model id %s is already loaded from %s, not %s", id,
                             e->path, path);
        }
        e->refs++;
        touch(c, e);
        c->st.hits++;
        event(c, id, LMX_CACHE_HIT, 0, 0);
        pthread_mutex_unlock(&c->mu);
        if (hit) *hit = true;
        *out = e;
        return LMX_OK;
    }
    if (!path) {
        pthread_mutex_unlock(&c->mu);
        return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "model %s is not loaded", id);
    }
    if (!c->engine) {
        pthread_mutex_unlock(&c->mu);
        return lmx_error(LMX_ERR_UNSUPPORTED, "model %s: no inference engine is wired into this build", id);
    }
    e = calloc(1, sizeof *e);
    if (e) {
        e->id = strdup(id);
        e->path = strdup(path);
    }
    if (!e || !e->id || !e->path) {
        pthread_mutex_unlock(&c->mu);
        entry_free(c, e);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "model cache: allocation failed");
    }
    e->state = ENTRY_LOADING;
    e->refs = 1;
    e->next = c->head;
    c->head = e;
    c->st.misses++;
    event(c, id, LMX_CACHE_MISS, 0, 0);
    pthread_mutex_unlock(&c->mu);

    uint64_t t0 = lmx_now_ns();
    lmx_status st = load_into(c, e, opts);
    if (st != LMX_OK) {
        drop_placeholder(c, e);
        return st;
    }
    double ms = (double)(lmx_now_ns() - t0) / 1e6;
    pthread_mutex_lock(&c->mu);
    e->load_ms = ms;
    touch(c, e);
    event(c, id, LMX_CACHE_LOADED, ms, e->bytes);
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->mu);
    LMX_LOG_I("model cache: loaded %s from %s in %.1f ms (%lld bytes reserved)", id, path, ms,
              (long long)e->bytes);
    if (load_ms) *load_ms = ms;
    *out = e;
    return LMX_OK;
}

void lmx_model_cache_release(lmx_model_cache *c, lmx_cache_entry *e) {
    if (!e) return;
    lmx_cache_entry *victims = NULL;
    pc_entry *pcv = NULL;
    pthread_mutex_lock(&c->mu);
    e->refs--;
    if (e->refs == 0 && e->detached) {
        unlink_entry(c, e);
        c->reserved -= e->bytes;
        e->next = victims;
        victims = e;
    }
    evict_to_fit(c, 0, &victims, &pcv); /* the count limit may have been exceeded while all were pinned */
    pthread_mutex_unlock(&c->mu);
    pc_free_chain(c, pcv);
    free_chain(c, victims);
}

lmx_status lmx_model_cache_unload(lmx_model_cache *c, const char *id) {
    if (!id) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "model id is NULL");
    lmx_cache_entry *victim = NULL;
    pthread_mutex_lock(&c->mu);
    lmx_cache_entry *e = find(c, id);
    if (!e || e->state != ENTRY_READY) {
        pthread_mutex_unlock(&c->mu);
        return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "model %s is not loaded", id);
    }
    event(c, id, LMX_CACHE_UNLOAD, 0, 0);
    pc_uncount_all(c, e); /* its prompt-cache entries go with it (freed with the entry) */
    if (e->refs > 0) {
        e->detached = true;
    } else {
        unlink_entry(c, e);
        c->reserved -= e->bytes;
        victim = e;
    }
    pthread_mutex_unlock(&c->mu);
    entry_free(c, victim);
    return LMX_OK;
}

bool lmx_model_cache_contains(lmx_model_cache *c, const char *id) {
    if (!id) return false;
    pthread_mutex_lock(&c->mu);
    lmx_cache_entry *e = find(c, id);
    bool r = e && e->state == ENTRY_READY;
    pthread_mutex_unlock(&c->mu);
    return r;
}

static void copy_str(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

lmx_status lmx_model_cache_info(lmx_model_cache *c, const char *id, lmx_model_info *out) {
    if (!id || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "model info: NULL argument");
    pthread_mutex_lock(&c->mu);
    lmx_cache_entry *e = find(c, id);
    if (!e || e->state != ENTRY_READY) {
        pthread_mutex_unlock(&c->mu);
        return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "model %s is not loaded", id);
    }
    *out = e->facts.info; /* the model's facts; what the cache knows follows */
    copy_str(out->model_id, sizeof out->model_id, e->id);
    copy_str(out->path, sizeof out->path, e->path);
    out->estimated_bytes = e->bytes;
    out->max_context = e->max_context;
    out->loaded_at = e->loaded_at;
    out->last_access = e->last_access;
    out->access_count = e->access_count;
    pthread_mutex_unlock(&c->mu);
    return LMX_OK;
}

void lmx_model_cache_stats_get(lmx_model_cache *c, lmx_cache_stats *out) {
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    out->n_models = 0;
    for (lmx_cache_entry *e = c->head; e; e = e->next) out->n_models += !e->detached && e->state == ENTRY_READY;
    out->reserved_bytes = c->reserved;
    out->pc_entries = c->pc_entries;
    out->pc_bytes = c->pc_bytes;
    pthread_mutex_unlock(&c->mu);
}

void lmx_model_cache_stats_reset(lmx_model_cache *c) {
    pthread_mutex_lock(&c->mu);
    memset(&c->st, 0, sizeof c->st);
    pthread_mutex_unlock(&c->mu);
}

int lmx_model_cache_lru_ids(lmx_model_cache *c, char **ids, int cap) {
    pthread_mutex_lock(&c->mu);
    int n = 0;
    uint64_t after = 0;
    while (n < cap) { /* selection by increasing tick: the list is short */
        lmx_cache_entry *best = NULL;
        for (lmx_cache_entry *e = c->head; e; e = e->next)
            if (e->state == ENTRY_READY && !e->detached && e->tick > after && (!best || e->tick < best->tick))
                best = e;
        if (!best) break;
        ids[n] = strdup(best->id);
        if (!ids[n]) break;
        n++;
        after = best->tick;
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

lmx_engine_model *lmx_cache_entry_model(const lmx_cache_entry *e) { return e->model; }
const lmx_model_facts *lmx_cache_entry_facts(const lmx_cache_entry *e) { return &e->facts; }
int lmx_cache_entry_max_context(const lmx_cache_entry *e) { return e->max_context; }
bool lmx_cache_entry_kv_cache(const lmx_cache_entry *e) { return e->kv_cache; }

/* ---- prompt cache ---- */

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

lmx_engine_kv *lmx_model_cache_kv_take(lmx_model_cache *c, lmx_cache_entry *e, const int32_t *ids, size_t n,
                                       int min_capacity, size_t *n_match) {
    *n_match = 0;
    if (n == 0) return NULL;
    pthread_mutex_lock(&c->mu);
    pc_entry **best = NULL;
    size_t best_n = 0;
    if (!e->detached && c->lim.prompt_cache_bytes > 0)
        for (pc_entry **pp = &e->pc; *pp; pp = &(*pp)->next) {
            if ((*pp)->capacity < min_capacity) continue; /* too small for this request */
            size_t m = common_prefix((*pp)->ids, (*pp)->n_exact, ids, n);
            if (m > best_n || (m == best_n && m > 0 && (*pp)->tick > (*best)->tick)) {
                best = pp;
                best_n = m;
            }
        }
    pc_entry *p = NULL;
    if (best && best_n > 0) {
        p = *best;
        *best = p->next;
        c->reserved -= p->bytes;
        c->pc_bytes -= p->bytes;
        c->pc_entries--;
        c->st.pc_hits++;
    } else {
        c->st.pc_misses++;
    }
    pthread_mutex_unlock(&c->mu);
    if (!p) return NULL;
    lmx_engine_kv *kv = p->kv;
    *n_match = best_n;
    free(p->ids);
    free(p);
    return kv;
}

void lmx_model_cache_kv_put(lmx_model_cache *c, lmx_cache_entry *e, lmx_engine_kv *kv, const int32_t *ids,
                            size_t n, size_t n_prefilled, int capacity) {
    if (!kv) return;
    const lmx_engine *eng = c->engine;
    int64_t bytes = eng->kv_bytes ? eng->kv_bytes(kv)
                                  : e->facts.kv_bytes_per_token * (int64_t)capacity + e->facts.scratch_bytes;
    if (bytes < 1) bytes = 1;
    pc_entry *p = NULL;
    if (n > 0 && eng->kv_truncate) {
        p = calloc(1, sizeof *p);
        if (p && !(p->ids = malloc(n * sizeof *p->ids))) {
            free(p);
            p = NULL;
        }
    }
    if (!p) {
        eng->kv_destroy(kv);
        return;
    }
    memcpy(p->ids, ids, n * sizeof *ids);
    p->kv = kv;
    p->n = n;
    p->n_exact = n_prefilled < n ? n_prefilled : n;
    p->capacity = capacity;
    p->bytes = bytes;
    pc_entry *victims = NULL;
    pthread_mutex_lock(&c->mu);
    const int64_t budget = budget_of(&c->lim), pc_budget = c->lim.prompt_cache_bytes;
    bool keep = !e->detached && pc_budget > 0 && bytes <= pc_budget;
    if (keep) {
        /* an entry whose ids are a prefix of the new one's is subsumed by it */
        for (pc_entry **pp = &e->pc; *pp;) {
            pc_entry *q = *pp;
            if (q->n_exact <= p->n_exact && q->capacity <= capacity &&
                common_prefix(q->ids, q->n_exact, ids, p->n_exact) == q->n_exact) {
                *pp = q->next;
                c->reserved -= q->bytes;
                c->pc_bytes -= q->bytes;
                c->pc_entries--;
                q->next = victims;
                victims = q;
            } else {
                pp = &q->next;
            }
        }
        while (c->pc_bytes + bytes > pc_budget || (budget > 0 && c->reserved + bytes > budget)) {
            pc_entry *v = pc_evict_one(c);
            if (!v) break;
            v->next = victims;
            victims = v;
        }
        keep = c->pc_bytes + bytes <= pc_budget && (budget <= 0 || c->reserved + bytes <= budget);
    }
    if (keep) {
        p->tick = ++c->pc_tick;
        p->next = e->pc;
        e->pc = p;
        c->reserved += bytes;
        c->pc_bytes += bytes;
        c->pc_entries++;
        p = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (p) p->next = victims, victims = p; /* no room: dropped */
    pc_free_chain(c, victims);
}

bool lmx_model_cache_prompt_cache_on(lmx_model_cache *c) {
    pthread_mutex_lock(&c->mu);
    bool on = c->lim.prompt_cache_bytes > 0 && c->engine && c->engine->kv_truncate;
    pthread_mutex_unlock(&c->mu);
    return on;
}

/* ---- companion object ---- */

void *lmx_model_cache_entry_aux(lmx_model_cache *c, lmx_cache_entry *e, lmx_cache_aux_create_fn create,
                                lmx_cache_aux_destroy_fn destroy, void *user) {
    pthread_mutex_lock(&c->mu);
    while (e->aux_state == AUX_CREATING) pthread_cond_wait(&c->changed, &c->mu);
    if (e->aux_state == AUX_DONE) {
        void *a = e->aux;
        pthread_mutex_unlock(&c->mu);
        return a;
    }
    e->aux_state = AUX_CREATING;
    int64_t budget = budget_of(&c->lim);
    int64_t avail = budget > 0 ? (budget > c->reserved ? budget - c->reserved : 0) : INT64_MAX;
    pthread_mutex_unlock(&c->mu);
    void *a = NULL;
    int64_t bytes = 0;
    if (create(user, e, avail, &a, &bytes) != LMX_OK) {
        LMX_LOG_W("model %s: no batching (%s); generations run one at a time each", e->id, lmx_last_error_detail());
        a = NULL;
    }
    pthread_mutex_lock(&c->mu);
    e->aux = a;
    e->aux_destroy = destroy;
    e->aux_state = AUX_DONE;
    if (a && bytes > 0) {
        e->bytes += bytes; /* reserved holds e->bytes until the entry goes (detached ones too) */
        c->reserved += bytes;
    }
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->mu);
    return a;
}

void lmx_model_cache_each_aux(lmx_model_cache *c, const char *id, void (*fn)(void *aux, void *user), void *user) {
    pthread_mutex_lock(&c->mu);
    for (lmx_cache_entry *e = c->head; e; e = e->next)
        if (!e->detached && e->aux && (!id || strcmp(e->id, id) == 0)) fn(e->aux, user);
    pthread_mutex_unlock(&c->mu);
}
