/* runtime.c — the lmx.h facade: runtime object, configuration, lazy loading through the model
 * cache, generation and metrics. Everything model-specific goes through the engine seam
 * (engine/engine.h).
 *
 * Locking: rt->mu guards the configuration only (held briefly, never across a load or a
 * generation); the cache and the monitor have their own mutexes (order cache → monitor).
 */
#include "cache/model_cache.h"
#include "generate/generate.h"
#include "monitor/monitor.h"
#include "registry/registry.h"
#include "runtime/batcher.h"
#include "runtime/config.h"
#include "runtime/runtime.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/error.h"
#include "util/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct old_string {
    char *s;
    struct old_string *next;
} old_string;

struct lmx_runtime {
    pthread_mutex_t mu;        /* guards cfg, models_dir, retired */
    lmx_config cfg;            /* cfg.models_dir == models_dir */
    char *models_dir;          /* copy of the configured directory, or NULL */
    old_string *retired;       /* models_dir copies handed out by lmx_config_get, freed at destroy */
    const lmx_engine *engine;
    lmx_model_cache *cache;
    lmx_monitor *mon;
};

/* Runs under the cache mutex, so the monitor sees loads/evictions/unloads in their true order. */
static void on_cache_event(void *user, const char *id, lmx_cache_event ev, double load_ms, int64_t bytes) {
    lmx_monitor *mon = user;
    switch (ev) {
    case LMX_CACHE_HIT: lmx_monitor_record_hit(mon, id); break;
    case LMX_CACHE_MISS: lmx_monitor_record_miss(mon, id); break;
    case LMX_CACHE_LOADED: lmx_monitor_record_load(mon, id, load_ms, bytes); break;
    case LMX_CACHE_EVICT: lmx_monitor_record_eviction(mon, id); break;
    case LMX_CACHE_UNLOAD: lmx_monitor_record_unload(mon, id); break;
    }
}

/* The prompt cache's byte budget of a config: -1 = 25 % of max_memory_bytes (1 GiB when that is 0);
 * off without a KV cache. */
static int64_t prompt_cache_bytes_of(const lmx_config *c) {
    if (!c->kv_cache) return 0;
    if (c->prompt_cache_bytes >= 0) return c->prompt_cache_bytes;
    return c->max_memory_bytes > 0 ? c->max_memory_bytes / 4 : (int64_t)1 << 30;
}

static lmx_cache_limits limits_of(const lmx_config *c) {
    lmx_cache_limits l = {.max_models = c->max_cached_models,
                          .max_memory_bytes = c->max_memory_bytes,
                          .prompt_cache_bytes = prompt_cache_bytes_of(c)};
    return l;
}

/* The generation loop hands its KV cache back here (generate.h's kv_keep). */
typedef struct keep_ctx {
    lmx_model_cache *cache;
    lmx_cache_entry *entry;
    int capacity;
} keep_ctx;

static void keep_kv(void *user, lmx_engine_kv *kv, const int32_t *ids, size_t n, size_t n_prefilled) {
    keep_ctx *k = user;
    lmx_model_cache_kv_put(k->cache, k->entry, kv, ids, n, n_prefilled, k->capacity);
}

/* Takes the cached KV sharing the longest (exactly resumable) prefix with ids and truncates it to
 * that prefix, keeping at least the last prompt token to forward (its logits are needed) and moving
 * back to the engine's exact resume point. *kv NULL: nothing cached. */
static void take_cached_kv(lmx_runtime *rt, lmx_cache_entry *e, const int32_t *ids, size_t n, int capacity,
                           lmx_engine_kv **kv, size_t *n_cached) {
    *kv = NULL;
    *n_cached = 0;
    const lmx_engine *eng = rt->engine;
    size_t match = 0;
    lmx_engine_kv *k = lmx_model_cache_kv_take(rt->cache, e, ids, n, capacity, &match);
    if (!k) return;
    size_t keep = match < n ? match : n - 1;
    if (eng->kv_resume_point && keep > 0) keep = (size_t)eng->kv_resume_point(k, (int)keep);
    if (keep > 0 && eng->kv_truncate(k, (int)keep) != LMX_OK) {
        LMX_LOG_D("prompt cache: cannot truncate to %zu positions (%s); prefilling everything", keep,
                  lmx_last_error_detail());
        keep = 0;
    }
    if (keep == 0) eng->kv_reset(k);
    *kv = k;
    *n_cached = keep;
}

/* ---- batching: the model cache entry's companion (lmx_model_cache_entry_aux) ---- */

/* The pool of a batched model: max_batch sequences of the full context plus the prompt cache, within
 * what the memory budget has left; the bytes the pool reports are reserved with the model. */
static lmx_status create_batcher(void *user, lmx_cache_entry *e, int64_t avail, void **aux, int64_t *bytes) {
    lmx_runtime *rt = user;
    const lmx_model_facts *f = lmx_cache_entry_facts(e);
    pthread_mutex_lock(&rt->mu);
    lmx_batcher_opts o = {.max_batch = rt->cfg.max_batch,
                          .prefill_chunk = rt->cfg.prefill_chunk,
                          .max_context = lmx_cache_entry_max_context(e),
                          .prompt_cache_bytes = prompt_cache_bytes_of(&rt->cfg)};
    pthread_mutex_unlock(&rt->mu);
    const int64_t per_pos = f->kv_bytes_per_token > 0 ? f->kv_bytes_per_token : 1;
    int64_t want = per_pos * o.max_context * o.max_batch;
    if (want > INT64_MAX - o.prompt_cache_bytes) want = INT64_MAX;
    else want += o.prompt_cache_bytes;
    o.pool_bytes = want < avail ? want : avail;
    if (o.prompt_cache_bytes > o.pool_bytes / 2) o.prompt_cache_bytes = o.pool_bytes / 2;
    lmx_batcher *b = NULL;
    lmx_status st = lmx_batcher_create(rt->engine, lmx_cache_entry_model(e), f, &o, &b);
    if (st != LMX_OK) return st;
    lmx_batcher_stats bs = {0};
    lmx_batcher_stats_add(b, &bs);
    *aux = b;
    *bytes = bs.pool_bytes > 0 ? bs.pool_bytes : o.pool_bytes;
    return LMX_OK;
}

static void destroy_batcher(void *aux) { lmx_batcher_destroy(aux); }

/* The model's batcher, or NULL: the engine has no batched steps, the model runs without a KV
 * cache, or the pool could not be created. */
static lmx_batcher *batcher_of(lmx_runtime *rt, lmx_cache_entry *e) {
    if (!rt->engine->step || !lmx_cache_entry_kv_cache(e)) return NULL;
    return lmx_model_cache_entry_aux(rt->cache, e, create_batcher, destroy_batcher, rt);
}

lmx_status lmx_runtime_create_with_engine(const lmx_config *cfg, const lmx_engine *engine, lmx_runtime **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_runtime_create: NULL output");
    lmx_config c = cfg ? *cfg : lmx_config_default();
    lmx_status st = lmx_config_validate(&c);
    if (st != LMX_OK) return st;
    lmx_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "runtime: allocation failed");
    pthread_mutex_init(&rt->mu, NULL);
    rt->engine = engine;
    if (c.models_dir && !(rt->models_dir = strdup(c.models_dir))) {
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "runtime: allocation failed");
        goto fail;
    }
    c.models_dir = rt->models_dir;
    rt->cfg = c;
    if ((st = lmx_monitor_create(&rt->mon)) != LMX_OK) goto fail;
    if ((st = lmx_model_cache_create(engine, limits_of(&c), on_cache_event, rt->mon, &rt->cache)) != LMX_OK)
        goto fail;
    *out = rt;
    return LMX_OK;
fail:
    lmx_runtime_destroy(rt);
    return st;
}

LMX_API lmx_status lmx_runtime_create(const lmx_config *cfg, lmx_runtime **out) {
    return lmx_runtime_create_with_engine(cfg, lmx_engine_default(), out);
}

LMX_API void lmx_runtime_destroy(lmx_runtime *rt) {
    if (!rt) return;
    lmx_model_cache_destroy(rt->cache);
    lmx_monitor_destroy(rt->mon);
    free(rt->models_dir);
    for (old_string *o = rt->retired, *n; o; o = n) {
        n = o->next;
        free(o->s);
        free(o);
    }
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

LMX_API lmx_status lmx_config_get(lmx_runtime *rt, lmx_config *out) {
    if (!rt || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_config_get: NULL argument");
    pthread_mutex_lock(&rt->mu);
    *out = rt->cfg;
    pthread_mutex_unlock(&rt->mu);
    return LMX_OK;
}

LMX_API lmx_status lmx_config_update(lmx_runtime *rt, const lmx_config *cfg) {
    if (!rt || !cfg) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_config_update: NULL argument");
    lmx_status st = lmx_config_validate(cfg);
    if (st != LMX_OK) return st;
    char *dir = NULL;
    old_string *old = calloc(1, sizeof *old);
    if (!old || (cfg->models_dir && !(dir = strdup(cfg->models_dir)))) {
        free(old);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "runtime: allocation failed");
    }
    if ((st = lmx_model_cache_set_limits(rt->cache, limits_of(cfg))) != LMX_OK) {
        free(old);
        free(dir);
        return st;
    }
    pthread_mutex_lock(&rt->mu);
    /* lmx_config_get handed out pointers to the old string: keep it alive until destroy */
    old->s = rt->models_dir;
    old->next = rt->retired;
    rt->retired = old;
    rt->models_dir = dir;
    rt->cfg = *cfg;
    rt->cfg.models_dir = dir;
    pthread_mutex_unlock(&rt->mu);
    return LMX_OK;
}

/* ---- loading ---- */

/* Snapshot of what a load needs (models_dir copied: the config may change meanwhile). */
typedef struct load_ctx {
    lmx_engine_load_opts opts;
    char *models_dir;
    lmx_gen_options defaults;
} load_ctx;

static lmx_status snapshot(lmx_runtime *rt, load_ctx *lc) {
    memset(lc, 0, sizeof *lc);
    pthread_mutex_lock(&rt->mu);
    lc->opts.device = rt->cfg.device;
    lc->opts.use_mmap = rt->cfg.use_mmap;
    lc->opts.max_context = rt->cfg.max_context_length;
    lc->opts.kv_cache = rt->cfg.kv_cache;
    lc->opts.n_threads = rt->cfg.n_threads;
    lc->opts.tensor_parallel = rt->cfg.tensor_parallel;
    lc->defaults = lmx_gen_options_default();
    lc->defaults.sampling.temperature = rt->cfg.default_temperature;
    lc->defaults.sampling.top_p = rt->cfg.default_top_p;
    lc->defaults.max_tokens = rt->cfg.default_max_tokens;
    bool oom = rt->models_dir && !(lc->models_dir = strdup(rt->models_dir));
    pthread_mutex_unlock(&rt->mu);
    return oom ? lmx_error(LMX_ERR_OUT_OF_MEMORY, "runtime: allocation failed") : LMX_OK;
}

static bool verify_requested(void) {
    return lmx_env_flag(LMX_ENV_VERIFY);
}

/* Resolves `source` and loads it as `id` (a miss), or finds `id` (a hit). Pinned on success. */
static lmx_status acquire(lmx_runtime *rt, const char *id, const char *source, lmx_cache_entry **out,
                          bool *hit, double *load_ms) {
    *hit = false;
    *load_ms = 0;
    lmx_status st = lmx_model_cache_acquire(rt->cache, id, NULL, NULL, out, hit, NULL);
    if (st == LMX_OK) return LMX_OK;
    if (st != LMX_ERR_MODEL_NOT_FOUND) return st;
    load_ctx lc;
    if ((st = snapshot(rt, &lc)) != LMX_OK) return st;
    char *path = NULL;
    lmx_registry_entry *reg = NULL;
    bool registered = lmx_registry_lookup(lc.models_dir, source, &reg) == LMX_OK;
    st = lmx_registry_resolve(lc.models_dir, source, &path);
    if (st == LMX_OK && registered && verify_requested()) {
        st = lmx_registry_verify(lc.models_dir, source, NULL);
        if (st != LMX_OK) lmx_error_prefix(st, "LMX_VERIFY");
    }
    if (st == LMX_OK) st = lmx_model_cache_acquire(rt->cache, id, path, &lc.opts, out, hit, load_ms);
    if (st == LMX_OK && !*hit) {
        lmx_monitor_sample_memory(rt->mon, rt->engine && rt->engine->device_bytes
                                               ? rt->engine->device_bytes(rt->engine->ctx)
                                               : 0);
        if (registered && lmx_registry_touch(lc.models_dir, source) != LMX_OK)
            LMX_LOG_W("registry: could not record last_used for %s: %s", source, lmx_last_error_detail());
    }
    lmx_registry_entries_free(reg, reg ? 1 : 0);
    free(path);
    free(lc.models_dir);
    return st;
}

LMX_API lmx_status lmx_model_load(lmx_runtime *rt, const char *path_or_name, const char *model_id) {
    if (!rt || !path_or_name || !*path_or_name)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_model_load: NULL runtime or empty model name");
    const char *id = model_id && *model_id ? model_id : path_or_name;
    lmx_cache_entry *e = NULL;
    bool hit;
    double ms;
    lmx_status st = acquire(rt, id, path_or_name, &e, &hit, &ms);
    if (st != LMX_OK) return st;
    if (hit && strcmp(id, path_or_name) != 0) {
        /* the same id from another directory is an error, not a silent reuse */
        lmx_model_info info;
        char *path = NULL;
        load_ctx lc;
        st = snapshot(rt, &lc);
        if (st == LMX_OK && lmx_model_cache_info(rt->cache, id, &info) == LMX_OK &&
            strcmp(path_or_name, info.path) != 0 && /* the usual case needs no lookup */
            lmx_registry_resolve(lc.models_dir, path_or_name, &path) == LMX_OK && strcmp(path, info.path) != 0)
            st = lmx_error(LMX_ERR_INVALID_ARGUMENT, "model id %s is already loaded from %s, not %s", id, info.path,
                           path);
        free(path);
        free(lc.models_dir);
    }
    lmx_model_cache_release(rt->cache, e);
    return st;
}

LMX_API lmx_status lmx_model_unload(lmx_runtime *rt, const char *model_id) {
    if (!rt || !model_id) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_model_unload: NULL argument");
    return lmx_model_cache_unload(rt->cache, model_id);
}

LMX_API bool lmx_model_is_loaded(lmx_runtime *rt, const char *model_id) {
    return rt && model_id && lmx_model_cache_contains(rt->cache, model_id);
}

LMX_API lmx_status lmx_model_get_info(lmx_runtime *rt, const char *model_id, lmx_model_info *out) {
    if (!rt || !model_id || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_model_get_info: NULL argument");
    return lmx_model_cache_info(rt->cache, model_id, out);
}

/* ---- generation ---- */

typedef struct prompt_src {
    const char *text;          /* raw prompt (add special tokens) … */
    const lmx_message *msgs;   /* … or chat messages (template, no extra special tokens) … */
    int n_msgs;
    const int32_t *ids;        /* … or token ids as they are */
    size_t n_ids;
    int32_t **out_ids;         /* optional: generated ids */
    size_t *n_out;
} prompt_src;

static lmx_status run_generation(lmx_runtime *rt, const char *model_id, const prompt_src *src,
                                 const lmx_gen_options *opt, lmx_token_fn fn, void *user, lmx_gen_result *res_out) {
    uint64_t t0 = lmx_now_ns();
    lmx_gen_result local;
    lmx_gen_result *res = res_out ? res_out : &local;
    memset(res, 0, sizeof *res);
    if (!rt || !model_id || !*model_id)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "generate: NULL runtime or empty model id");
    lmx_gen_options o;
    if (opt) {
        o = *opt;
    } else {
        load_ctx lc;
        lmx_status st = snapshot(rt, &lc);
        if (st != LMX_OK) return st;
        free(lc.models_dir);
        o = lc.defaults;
    }
    lmx_status st = lmx_gen_options_validate(&o);
    if (st != LMX_OK) return st;

    lmx_cache_entry *e = NULL;
    bool hit;
    double load_ms;
    if ((st = acquire(rt, model_id, model_id, &e, &hit, &load_ms)) != LMX_OK) return st;
    const lmx_engine *eng = rt->engine;
    lmx_engine_model *m = lmx_cache_entry_model(e);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *rendered = NULL;
    if (src->ids) {
        ids = malloc((src->n_ids ? src->n_ids : 1) * sizeof *ids);
        if (ids) memcpy(ids, src->ids, src->n_ids * sizeof *ids);
        else st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "generate: allocation failed");
        n_ids = src->n_ids;
    } else if (src->msgs) {
        st = eng->chat_render(m, src->msgs, src->n_msgs, &rendered);
        if (st == LMX_OK) st = eng->tokenize(m, rendered, strlen(rendered), false, &ids, &n_ids);
    } else {
        st = eng->tokenize(m, src->text, strlen(src->text), true, &ids, &n_ids);
    }
    keep_ctx keep = {.cache = rt->cache, .entry = e, .capacity = lmx_cache_entry_max_context(e)};
    lmx_batcher *bat = st == LMX_OK ? batcher_of(rt, e) : NULL;
    const bool pcache = st == LMX_OK && !bat && lmx_cache_entry_kv_cache(e) && n_ids > 0 &&
                        n_ids <= (size_t)keep.capacity && lmx_model_cache_prompt_cache_on(rt->cache);
    lmx_engine_kv *kv = NULL;
    size_t n_cached = 0;
    if (pcache) take_cached_kv(rt, e, ids, n_ids, keep.capacity, &kv, &n_cached);
    if (st == LMX_OK) {
        lmx_generate_request req = {
            .engine = eng,
            .model = m,
            .facts = lmx_cache_entry_facts(e),
            .prompt = ids,
            .n_prompt = n_ids,
            .opt = &o,
            .max_context = lmx_cache_entry_max_context(e),
            .no_kv_cache = !lmx_cache_entry_kv_cache(e),
            .fn = fn,
            .user = user,
            .t_start_ns = t0,
            .out_ids = src->out_ids,
            .n_out = src->n_out,
            .kv = kv,
            .n_cached = n_cached,
            .kv_keep = pcache ? keep_kv : NULL,
            .keep_user = &keep,
        };
        st = bat ? lmx_batcher_run(bat, &req, res) : lmx_generate_run(&req, res);
        if (st != LMX_OK) lmx_error_prefix(st, "model %s", model_id);
    } else {
        lmx_error_prefix(st, "model %s: prompt", model_id);
    }
    res->load_ms = load_ms;
    free(rendered);
    free(ids);
    lmx_model_cache_release(rt->cache, e);
    bool ok = st == LMX_OK || st == LMX_ERR_CANCELLED;
    lmx_monitor_record_inference(rt->mon, model_id, ok ? res : NULL, ok);
    if (eng->gpu_utilization) lmx_monitor_record_gpu_utilization(rt->mon, eng->gpu_utilization(eng->ctx));
    lmx_monitor_sample_memory(rt->mon, eng->device_bytes ? eng->device_bytes(eng->ctx) : 0);
    return st;
}

LMX_API lmx_status lmx_generate_stream(lmx_runtime *rt, const char *model_id, const char *prompt,
                                       const lmx_gen_options *opt, lmx_token_fn fn, void *user,
                                       lmx_gen_result *res) {
    if (!prompt) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "generate: NULL prompt");
    prompt_src src = {.text = prompt};
    return run_generation(rt, model_id, &src, opt, fn, user, res);
}

typedef struct text_buf {
    char *p;
    size_t len, cap;
    bool oom;
} text_buf;

static int collect(const char *text, size_t len, void *user) {
    text_buf *b = user;
    if (b->len + len + 1 > b->cap) {
        size_t cap = (b->len + len + 1) * 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return 1;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, text, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

LMX_API lmx_status lmx_generate(lmx_runtime *rt, const char *model_id, const char *prompt,
                                const lmx_gen_options *opt, char **out_text, lmx_gen_result *res) {
    if (!out_text) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_generate: NULL out_text");
    *out_text = NULL;
    text_buf b = {0};
    lmx_status st = lmx_generate_stream(rt, model_id, prompt, opt, collect, &b, res);
    if (b.oom) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "lmx_generate: cannot grow the output text");
    if (st == LMX_OK && !b.p) {
        b.p = calloc(1, 1);
        if (!b.p) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "lmx_generate: allocation failed");
    }
    if (st != LMX_OK) {
        free(b.p);
        return st;
    }
    *out_text = b.p;
    return LMX_OK;
}

LMX_API lmx_status lmx_chat_stream(lmx_runtime *rt, const char *model_id, const lmx_message *msgs, int n_msgs,
                                   const lmx_gen_options *opt, lmx_token_fn fn, void *user, lmx_gen_result *res) {
    if (!msgs || n_msgs < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat: no messages");
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role || !msgs[i].content)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat: message %d has a NULL role or content", i);
    prompt_src src = {.msgs = msgs, .n_msgs = n_msgs};
    return run_generation(rt, model_id, &src, opt, fn, user, res);
}

LMX_API lmx_status lmx_generate_ids(lmx_runtime *rt, const char *model_id, const int32_t *prompt_ids,
                                    size_t n_prompt, const lmx_gen_options *opt, lmx_token_fn fn, void *user,
                                    int32_t **out_ids, size_t *n_out, lmx_gen_result *res) {
    if (out_ids) *out_ids = NULL;
    if (n_out) *n_out = 0;
    if (!prompt_ids && n_prompt) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "generate: NULL prompt ids");
    static const int32_t none[1] = {0};
    prompt_src src = {.ids = prompt_ids ? prompt_ids : none, .n_ids = n_prompt, .out_ids = out_ids, .n_out = n_out};
    return run_generation(rt, model_id, &src, opt, fn, user, res);
}

/* ---- tokenizer access ---- */

LMX_API lmx_status lmx_tokenize(lmx_runtime *rt, const char *model_id, const char *text, bool add_special,
                                int32_t **ids, size_t *n) {
    if (!rt || !model_id || !text || !ids || !n) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_tokenize: NULL argument");
    *ids = NULL;
    *n = 0;
    lmx_cache_entry *e;
    bool hit;
    double ms;
    lmx_status st = acquire(rt, model_id, model_id, &e, &hit, &ms);
    if (st != LMX_OK) return st;
    st = rt->engine->tokenize(lmx_cache_entry_model(e), text, strlen(text), add_special, ids, n);
    lmx_model_cache_release(rt->cache, e);
    return st;
}

LMX_API lmx_status lmx_detokenize(lmx_runtime *rt, const char *model_id, const int32_t *ids, size_t n, char **text) {
    if (!rt || !model_id || (!ids && n) || !text)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_detokenize: NULL argument");
    *text = NULL;
    lmx_cache_entry *e;
    bool hit;
    double ms;
    lmx_status st = acquire(rt, model_id, model_id, &e, &hit, &ms);
    if (st != LMX_OK) return st;
    const lmx_engine *eng = rt->engine;
    const lmx_model_facts *facts = lmx_cache_entry_facts(e);
    lmx_engine_detok *d = NULL;
    text_buf b = {0};
    if (facts->no_tokenizer)
        st = lmx_error(LMX_ERR_UNSUPPORTED, "lmx_detokenize: model %s has no tokenizer", model_id);
    else if ((st = eng->detok_create(lmx_cache_entry_model(e), &d)) == LMX_OK) {
        const char *piece;
        size_t len;
        for (size_t i = 0; i <= n && st == LMX_OK; i++) {
            if (i < n && (ids[i] < 0 || ids[i] >= facts->info.vocab_size)) {
                st = lmx_error(LMX_ERR_INVALID_ARGUMENT, "token %zu is %d, outside the vocabulary [0, %d)", i, ids[i],
                               facts->info.vocab_size);
                break;
            }
            st = i < n ? eng->detok_push(d, ids[i], &piece, &len) : eng->detok_flush(d, &piece, &len);
            if (st == LMX_OK && len && collect(piece, len, &b)) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "detokenize");
        }
        eng->detok_destroy(d);
    }
    lmx_model_cache_release(rt->cache, e);
    if (st == LMX_OK && !b.p && !(b.p = calloc(1, 1))) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "detokenize");
    if (st != LMX_OK) {
        free(b.p);
        return st;
    }
    *text = b.p;
    return LMX_OK;
}

/* ---- metrics ---- */

static void add_batcher_stats(void *aux, void *user) { lmx_batcher_stats_add(aux, user); }

LMX_API lmx_status lmx_metrics_get(lmx_runtime *rt, const char *model_id, lmx_metrics *out) {
    if (!rt || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_metrics_get: NULL argument");
    int64_t dev = rt->engine && rt->engine->device_bytes ? rt->engine->device_bytes(rt->engine->ctx) : 0;
    lmx_status st = lmx_monitor_get(rt->mon, model_id, dev, out);
    if (st != LMX_OK) return st;
    lmx_batcher_stats bs = {0};
    lmx_model_cache_each_aux(rt->cache, model_id, add_batcher_stats, &bs);
    if (!model_id) {
        lmx_cache_stats cs;
        lmx_model_cache_stats_get(rt->cache, &cs);
        out->n_models_loaded = cs.n_models;
        /* the prompt cache of models without batching (whole KV objects, in the model cache) */
        bs.pc_hits += cs.pc_hits;
        bs.pc_misses += cs.pc_misses;
        bs.pc_evictions += cs.pc_evictions;
        bs.pc_bytes += cs.pc_bytes;
    } else {
        out->n_models_loaded = lmx_model_cache_contains(rt->cache, model_id) ? 1 : 0;
    }
    out->prompt_cache_hits = bs.pc_hits;
    out->prompt_cache_misses = bs.pc_misses;
    out->prompt_cache_evictions = bs.pc_evictions;
    out->prompt_cache_bytes = bs.pc_bytes;
    out->kv_pool_bytes = bs.pool_bytes;
    out->kv_pool_used_bytes = bs.pool_used_bytes;
    out->batch_steps = bs.steps;
    out->batch_rows = bs.rows;
    memcpy(out->batch_size_hist, bs.hist, sizeof out->batch_size_hist);
    return LMX_OK;
}

LMX_API void lmx_metrics_reset(lmx_runtime *rt, const char *model_id) {
    if (!rt) return;
    lmx_monitor_reset(rt->mon, model_id);
    if (!model_id) lmx_model_cache_stats_reset(rt->cache);
}
