/* model_cache.h — the LRU cache of loaded models, keyed by model_id, with a memory budget.
 *
 * - acquire(id, path): a cached id is a hit (no disk access; bumps last_access/access_count and
 *   its LRU position). Otherwise a miss: the engine's probe gives the model's facts and an estimate
 *   (weights + KV cache for max_context + scratch), and those facts (with the config the probe
 *   parsed) go to every open attempt; least-recently-used unpinned models are evicted while the
 *   count would exceed max_models or the reserved bytes would exceed 80 % of max_memory_bytes (when
 *   > 0). An estimate
 *   that alone exceeds that budget → LMX_ERR_OUT_OF_MEMORY before anything is loaded. If the open
 *   fails with LMX_ERR_OUT_OF_MEMORY, the LRU unpinned model is evicted and the open retried (at
 *   most 3 attempts in all; no retry when nothing could be evicted). A failed load leaves nothing
 *   behind.
 * - Every acquire pins the entry (refcount); release unpins. A pinned model is never evicted;
 *   unload of a pinned model detaches it (no longer findable) and it is closed at the last release.
 *   When every model is pinned, the count limit may be exceeded temporarily (trimmed on release);
 *   the memory budget is never exceeded: that acquire fails with LMX_ERR_OUT_OF_MEMORY.
 * - Concurrency: one mutex guards the table; it is NOT held while the engine probes, opens or
 *   closes a model, so loads of different models run in parallel and a hit never waits for another
 *   model's load. Acquiring an id whose load is in progress waits for it (then it is a hit).
 *   The event callback runs with the cache mutex held: it must not call back into the cache (the
 *   runtime's monitor only takes its own lock; lock order cache → monitor).
 *
 * Ownership: the cache owns every engine model; entry pointers stay valid while pinned.
 */
#ifndef LMX_CACHE_MODEL_CACHE_H
#define LMX_CACHE_MODEL_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include "lmx.h"
#include "engine/engine.h"

typedef struct lmx_model_cache lmx_model_cache;
typedef struct lmx_cache_entry lmx_cache_entry;

typedef struct lmx_cache_limits {
    int max_models;           /* >= 1 */
    int64_t max_memory_bytes; /* 0 = no limit; the budget is 80 % of it */
    int64_t prompt_cache_bytes; /* >= 0: bytes of KV the prompt cache keeps over all models (0 = off) */
} lmx_cache_limits;

/* Events, reported in the order they happen (under the cache mutex): MISS when a load starts,
 * LOADED when it succeeded (load_ms, bytes = the reserved estimate), HIT, EVICT (LRU, count or
 * memory), UNLOAD (explicit). load_ms and bytes are 0 except for LOADED. */
typedef enum lmx_cache_event {
    LMX_CACHE_HIT,
    LMX_CACHE_MISS,
    LMX_CACHE_LOADED,
    LMX_CACHE_EVICT,
    LMX_CACHE_UNLOAD
} lmx_cache_event;
typedef void (*lmx_cache_event_fn)(void *user, const char *model_id, lmx_cache_event ev, double load_ms,
                                   int64_t bytes);

typedef struct lmx_cache_stats {
    uint64_t hits, misses, evictions;
    uint64_t load_attempts;   /* engine open calls */
    int n_models;             /* cached (ready or loading), detached ones excluded */
    int64_t reserved_bytes;   /* estimates of everything held, detached included (prompt cache too) */
    uint64_t pc_hits, pc_misses, pc_evictions; /* prompt cache: takes that found / did not find a
                                                  prefix; entries evicted for room */
    int pc_entries;           /* prompt-cache entries held */
    int64_t pc_bytes;         /* their bytes */
} lmx_cache_stats;

lmx_status lmx_model_cache_create(const lmx_engine *engine, lmx_cache_limits limits,
                                  lmx_cache_event_fn on_event, void *user, lmx_model_cache **out);
/* Closes every model. No acquire/release may be running. NULL-safe. */
void lmx_model_cache_destroy(lmx_model_cache *c);

/* New limits; evicts unpinned LRU models down to them. Invalid → INVALID_ARGUMENT. */
lmx_status lmx_model_cache_set_limits(lmx_model_cache *c, lmx_cache_limits limits);

/* Finds or loads `id`. path NULL = hit only (not cached → LMX_ERR_MODEL_NOT_FOUND, not counted as
 * a miss). A cached id with a different path → INVALID_ARGUMENT. On success *out is pinned;
 * *hit (may be NULL) tells hit/miss, *load_ms (may be NULL) the time spent loading (0 on a hit). */
lmx_status lmx_model_cache_acquire(lmx_model_cache *c, const char *id, const char *path,
                                   const lmx_engine_load_opts *opts, lmx_cache_entry **out, bool *hit,
                                   double *load_ms);
void lmx_model_cache_release(lmx_model_cache *c, lmx_cache_entry *e); /* NULL-safe */

/* Forgets id (closed now, or at its last release when pinned). Not cached → MODEL_NOT_FOUND. */
lmx_status lmx_model_cache_unload(lmx_model_cache *c, const char *id);
bool lmx_model_cache_contains(lmx_model_cache *c, const char *id); /* ready and findable */
/* Info of a cached model; no access is counted. */
lmx_status lmx_model_cache_info(lmx_model_cache *c, const char *id, lmx_model_info *out);
void lmx_model_cache_stats_get(lmx_model_cache *c, lmx_cache_stats *out);
void lmx_model_cache_stats_reset(lmx_model_cache *c);
/* Writes up to cap ids, least recently used first, into ids[] as malloc'd strings; returns the
 * number written (for tests and `lmx ps`-like listings). */
int lmx_model_cache_lru_ids(lmx_model_cache *c, char **ids, int cap);

/* ---- prompt cache ----
 * Per model, the KV caches of finished generations with the ids whose K/V they hold (prompt +
 * generated tokens that were forwarded), LRU over all models, bounded by prompt_cache_bytes and
 * counted in reserved_bytes: a load needing room evicts prompt-cache entries before models, an
 * evicted or unloaded model drops its entries. A KV object belongs to one generation at a time:
 * take moves it out of the cache, put moves it in. Both on a pinned entry e. */

/* true when the limits keep a prompt cache and the engine can truncate a KV cache. */
bool lmx_model_cache_prompt_cache_on(lmx_model_cache *c);
/* The stored KV of e whose ids share the longest common prefix (>= 1 token, counted only within
 * the entry's prefilled positions) with ids[0..n), among those created for >= min_capacity
 * positions, or NULL (a miss). *n_match = that prefix length; the KV still holds all its positions
 * (the caller truncates). */
lmx_engine_kv *lmx_model_cache_kv_take(lmx_model_cache *c, lmx_cache_entry *e, const int32_t *ids, size_t n,
                                       int min_capacity, size_t *n_match);
/* Gives kv (created for `capacity` positions, holding the K/V of ids[0..n), the first n_prefilled
 * of them written by a prefill: generate.h's kv_keep) to the cache, which
 * now owns it: kept as e's most recent entry (an entry whose ids are a prefix of these is dropped;
 * LRU entries are evicted to make room), or destroyed when it cannot fit, the cache is off or e
 * was unloaded. */
void lmx_model_cache_kv_put(lmx_model_cache *c, lmx_cache_entry *e, lmx_engine_kv *kv, const int32_t *ids,
                            size_t n, size_t n_prefilled, int capacity);

/* ---- companion object ----
 * One object per loaded model that lives and dies with it (the runtime's batcher, which owns the
 * model's KV pool): created by the first caller on a pinned entry, outside the cache mutex (others
 * asking meanwhile wait), destroyed when the entry is freed, before its prompt-cache entries and
 * its model. create gets the bytes the memory budget has left (INT64_MAX without a budget) and
 * reports what it holds; that is added to the model's reserved estimate. A failed create is
 * remembered: the entry gets no companion (NULL) until it is loaded again. */
typedef lmx_status (*lmx_cache_aux_create_fn)(void *user, lmx_cache_entry *e, int64_t avail_bytes, void **aux,
                                              int64_t *bytes);
typedef void (*lmx_cache_aux_destroy_fn)(void *aux);
void *lmx_model_cache_entry_aux(lmx_model_cache *c, lmx_cache_entry *e, lmx_cache_aux_create_fn create,
                                lmx_cache_aux_destroy_fn destroy, void *user);
/* Calls fn on the companion of model id (NULL: of every cached model) under the cache mutex (fn
 * must not call into the cache). */
void lmx_model_cache_each_aux(lmx_model_cache *c, const char *id, void (*fn)(void *aux, void *user), void *user);

/* Accessors of a pinned entry. */
lmx_engine_model *lmx_cache_entry_model(const lmx_cache_entry *e);
const lmx_model_facts *lmx_cache_entry_facts(const lmx_cache_entry *e);
int lmx_cache_entry_max_context(const lmx_cache_entry *e); /* config's max_context at load */
bool lmx_cache_entry_kv_cache(const lmx_cache_entry *e);   /* the kv_cache option it was loaded with */

#endif
