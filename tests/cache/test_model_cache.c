/* test_model_cache.c — LRU order, count and memory evictions, can-never-fit, OOM evict-and-retry,
 * pinning, unload while pinned, validation failures, hit/miss counters, concurrent loads of one id. */
#include "lmx_test.h"
#include "cache/model_cache.h"
#include "fake_engine/fake_engine.h"

#include <pthread.h>
#include <stdlib.h>

static lmx_engine E;
static fake_engine_ctx C;
static char *tmp;
static lmx_engine_load_opts OPTS = {.device = LMX_DEVICE_CPU, .use_mmap = true, .max_context = 100, .kv_cache = true};

/* a model dir named `name` whose estimate is weight + 10 * 100 bytes */
static char *model(const char *name, long weight) {
    static char paths[16][1100];
    static int next;
    char *p = paths[next++ % 16];
    snprintf(p, 1100, "%s/%s", tmp, name);
    char json[256];
    snprintf(json, sizeof json, "{\"script\":\"ab\",\"weight_bytes\":%ld,\"kv_bytes_per_token\":10}", weight);
    fake_model_write(p, json);
    return p;
}

static lmx_model_cache *mk(int max_models, int64_t max_mem) {
    lmx_model_cache *c = NULL;
    lmx_cache_limits l = {max_models, max_mem, 0};
    CHECK(lmx_model_cache_create(&E, l, NULL, NULL, &c) == LMX_OK);
    return c;
}

/* acquire + release; returns the status */
static lmx_status use(lmx_model_cache *c, const char *id, const char *path, bool *hit) {
    lmx_cache_entry *e = NULL;
    bool h = false;
    lmx_status st = lmx_model_cache_acquire(c, id, path, &OPTS, &e, &h, NULL);
    if (hit) *hit = h;
    lmx_model_cache_release(c, e);
    return st;
}

static void check_lru(lmx_model_cache *c, const char *expect) {
    char *ids[8];
    int n = lmx_model_cache_lru_ids(c, ids, 8);
    char buf[256] = "";
    for (int i = 0; i < n; i++) {
        if (i) strcat(buf, ",");
        strncat(buf, ids[i], 32);
        free(ids[i]);
    }
    CHECK_EQ_STR(buf, expect);
}

static void test_lru_order_and_count_eviction(void) {
    lmx_model_cache *c = mk(2, 0);
    char *a = model("a", 100), *b = model("b", 100), *cc = model("c", 100);
    bool hit;
    int opens = atomic_load(&C.open_calls);
    CHECK(use(c, "A", a, &hit) == LMX_OK && !hit);
    CHECK(use(c, "B", b, &hit) == LMX_OK && !hit);
    check_lru(c, "A,B");
    CHECK(use(c, "A", a, &hit) == LMX_OK && hit); /* a hit: no open, bumps A */
    CHECK(use(c, "A", NULL, &hit) == LMX_OK && hit);
    check_lru(c, "B,A");
    CHECK_EQ_INT(atomic_load(&C.open_calls) - opens, 2);
    CHECK(use(c, "C", cc, &hit) == LMX_OK && !hit); /* evicts B, the least recently used */
    check_lru(c, "A,C");
    CHECK(!lmx_model_cache_contains(c, "B"));
    lmx_cache_stats st;
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.hits, 2);
    CHECK_EQ_INT(st.misses, 3);
    CHECK_EQ_INT(st.evictions, 1);
    CHECK_EQ_INT(st.n_models, 2);
    lmx_model_info info;
    CHECK(lmx_model_cache_info(c, "A", &info) == LMX_OK);
    CHECK_EQ_INT(info.access_count, 3);
    CHECK(info.last_access >= info.loaded_at && info.loaded_at > 1e9);
    CHECK_EQ_STR(info.model_type, "fake");
    CHECK_EQ_INT(info.estimated_bytes, 100 + 10 * 100);
    CHECK_EQ_INT(info.max_context, 100);
    /* not cached + no path: not found, not a miss */
    CHECK(use(c, "B", NULL, &hit) == LMX_ERR_MODEL_NOT_FOUND);
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.misses, 3);
    /* the same id from another directory */
    CHECK(use(c, "A", b, &hit) == LMX_ERR_INVALID_ARGUMENT);
    /* lowering the limit evicts */
    lmx_cache_limits l = {1, 0, 0};
    CHECK(lmx_model_cache_set_limits(c, l) == LMX_OK);
    check_lru(c, "C");
    l.max_models = 0;
    CHECK(lmx_model_cache_set_limits(c, l) == LMX_ERR_INVALID_ARGUMENT);
    lmx_model_cache_destroy(c);
    CHECK_EQ_INT(atomic_load(&C.live_models), 0);
}

static void test_memory_budget(void) {
    /* budget = 80 % of 10000 = 8000; each model 3000 + 1000 KV = 4000 */
    lmx_model_cache *c = mk(10, 10000);
    char *a = model("ma", 3000), *b = model("mb", 3000), *d = model("md", 3000);
    CHECK(use(c, "A", a, NULL) == LMX_OK);
    CHECK(use(c, "B", b, NULL) == LMX_OK);
    lmx_cache_stats st;
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.reserved_bytes, 8000);
    CHECK(use(c, "D", d, NULL) == LMX_OK); /* 12000 > 8000 → A goes */
    check_lru(c, "B,D");
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.reserved_bytes, 8000);
    CHECK_EQ_INT(st.evictions, 1);
    /* can never fit: 9000 + 1000 > 8000 → OOM before any open, nothing evicted */
    char *big = model("big", 9000);
    int opens = atomic_load(&C.open_calls), live = atomic_load(&C.live_models);
    CHECK(use(c, "BIG", big, NULL) == LMX_ERR_OUT_OF_MEMORY);
    CHECK(strstr(lmx_last_error_detail(), "budget") != NULL);
    CHECK_EQ_INT(atomic_load(&C.open_calls), opens);
    CHECK_EQ_INT(atomic_load(&C.live_models), live);
    CHECK(!lmx_model_cache_contains(c, "BIG"));
    check_lru(c, "B,D");
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.reserved_bytes, 8000);
    lmx_model_cache_destroy(c);
}

static void test_oom_retry(void) {
    lmx_model_cache *c = mk(5, 0);
    char *a = model("oa", 100), *b = model("ob", 100), *d = model("od", 100), *e = model("oe", 100);
    CHECK(use(c, "A", a, NULL) == LMX_OK);
    CHECK(use(c, "B", b, NULL) == LMX_OK);
    CHECK(use(c, "D", d, NULL) == LMX_OK);
    /* two injected failures: evict A, retry, evict B, retry, success on attempt 3 */
    atomic_store(&C.fail_open_oom, 2);
    int opens = atomic_load(&C.open_calls);
    CHECK(use(c, "E", e, NULL) == LMX_OK);
    CHECK_EQ_INT(atomic_load(&C.open_calls) - opens, 3);
    check_lru(c, "D,E");
    /* failures beyond 3 attempts: OOM, nothing half-loaded */
    char *f = model("of", 100);
    CHECK(use(c, "A", a, NULL) == LMX_OK); /* now D, E, A */
    atomic_store(&C.fail_open_oom, 10);
    opens = atomic_load(&C.open_calls);
    CHECK(use(c, "F", f, NULL) == LMX_ERR_OUT_OF_MEMORY);
    CHECK_EQ_INT(atomic_load(&C.open_calls) - opens, 3);
    CHECK(strstr(lmx_last_error_detail(), "3 attempts") != NULL);
    CHECK(!lmx_model_cache_contains(c, "F"));
    check_lru(c, "A"); /* D and E were evicted by the two retries */
    lmx_cache_stats st;
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.reserved_bytes, 1100);
    /* nothing left to evict: no pointless retries */
    CHECK(lmx_model_cache_unload(c, "A") == LMX_OK);
    atomic_store(&C.fail_open_oom, 10);
    opens = atomic_load(&C.open_calls);
    CHECK(use(c, "F", f, NULL) == LMX_ERR_OUT_OF_MEMORY);
    CHECK_EQ_INT(atomic_load(&C.open_calls) - opens, 1);
    atomic_store(&C.fail_open_oom, 0);
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.reserved_bytes, 0);
    CHECK_EQ_INT(atomic_load(&C.live_models), 0);
    lmx_model_cache_destroy(c);
}

static void test_pinned_never_evicted(void) {
    lmx_model_cache *c = mk(1, 0);
    char *a = model("pa", 100), *b = model("pb", 100);
    lmx_cache_entry *ea = NULL;
    CHECK(lmx_model_cache_acquire(c, "A", a, &OPTS, &ea, NULL, NULL) == LMX_OK);
    int closes = atomic_load(&C.close_calls);
    CHECK(use(c, "B", b, NULL) == LMX_OK);          /* over the count while A is pinned */
    CHECK(lmx_model_cache_contains(c, "A"));        /* A survived */
    CHECK(!lmx_model_cache_contains(c, "B"));       /* B trimmed at its release */
    CHECK_EQ_INT(atomic_load(&C.close_calls) - closes, 1);
    CHECK(lmx_cache_entry_model(ea) != NULL);
    lmx_model_cache_release(c, ea);
    lmx_model_cache_destroy(c);
    /* memory: a pinned model that fills the budget makes the next load fail, not evict it */
    c = mk(5, 5000); /* budget 4000 */
    char *m1 = model("p1", 2500), *m2 = model("p2", 2500);
    CHECK(lmx_model_cache_acquire(c, "M1", m1, &OPTS, &ea, NULL, NULL) == LMX_OK);
    CHECK(use(c, "M2", m2, NULL) == LMX_ERR_OUT_OF_MEMORY);
    CHECK(strstr(lmx_last_error_detail(), "in use") != NULL);
    CHECK(lmx_model_cache_contains(c, "M1"));
    lmx_model_cache_release(c, ea);
    CHECK(use(c, "M2", m2, NULL) == LMX_OK); /* unpinned now: evicted for M2 */
    check_lru(c, "M2");
    lmx_model_cache_destroy(c);
}

static void test_unload_while_pinned(void) {
    lmx_model_cache *c = mk(3, 0);
    char *a = model("ua", 100);
    lmx_cache_entry *ea = NULL;
    CHECK(lmx_model_cache_acquire(c, "A", a, &OPTS, &ea, NULL, NULL) == LMX_OK);
    int live = atomic_load(&C.live_models);
    CHECK(lmx_model_cache_unload(c, "A") == LMX_OK);
    CHECK(!lmx_model_cache_contains(c, "A"));
    CHECK_EQ_INT(atomic_load(&C.live_models), live); /* still open for the running user */
    lmx_model_cache_release(c, ea);
    CHECK_EQ_INT(atomic_load(&C.live_models), live - 1);
    CHECK(lmx_model_cache_unload(c, "A") == LMX_ERR_MODEL_NOT_FOUND);
    lmx_cache_stats st;
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.reserved_bytes, 0);
    lmx_model_cache_destroy(c);
}

static void test_validation_failures(void) {
    lmx_model_cache *c = mk(3, 0);
    char p[1100];
    snprintf(p, sizeof p, "%s/invalid", tmp);
    fake_model_write(p, "{\"invalid\":true}");
    int live = atomic_load(&C.live_models);
    CHECK(use(c, "X", p, NULL) == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(strstr(lmx_last_error_detail(), "lm_head.weight") != NULL);
    CHECK(strstr(lmx_last_error_detail(), "model X") != NULL);
    CHECK(!lmx_model_cache_contains(c, "X"));
    CHECK_EQ_INT(atomic_load(&C.live_models), live);
    snprintf(p, sizeof p, "%s/notjson", tmp);
    fake_model_write(p, "{nope");
    CHECK(use(c, "Y", p, NULL) == LMX_ERR_INVALID_MODEL_FORMAT);
    snprintf(p, sizeof p, "%s/absent", tmp);
    CHECK(use(c, "Z", p, NULL) == LMX_ERR_MODEL_NOT_FOUND);
    lmx_cache_stats st;
    lmx_model_cache_stats_get(c, &st);
    CHECK_EQ_INT(st.n_models, 0);
    CHECK_EQ_INT(st.reserved_bytes, 0);
    CHECK_EQ_INT(st.misses, 3);
    lmx_model_cache_destroy(c);
}

typedef struct {
    lmx_model_cache *c;
    const char *path;
    lmx_status st;
    bool hit;
} job;

static void *acquire_thread(void *arg) {
    job *j = arg;
    j->st = use(j->c, "S", j->path, &j->hit);
    return NULL;
}

static void test_concurrent_same_id(void) {
    lmx_model_cache *c = mk(3, 0);
    char *s = model("same", 100);
    atomic_store(&C.open_delay_ms, 30);
    int opens = atomic_load(&C.open_calls);
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){c, s, LMX_ERR_IO, false};
        pthread_create(&th[i], NULL, acquire_thread, &jobs[i]);
    }
    int hits = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].st == LMX_OK);
        hits += jobs[i].hit;
    }
    atomic_store(&C.open_delay_ms, 0);
    CHECK_EQ_INT(atomic_load(&C.open_calls) - opens, 1); /* loaded once */
    CHECK_EQ_INT(hits, 3);
    lmx_model_cache_destroy(c);
}

static char events[512];
static void on_event(void *user, const char *id, lmx_cache_event ev, double load_ms, int64_t bytes) {
    static const char *names[] = {"hit", "miss", "loaded", "evict", "unload"};
    char one[64];
    snprintf(one, sizeof one, "%s%s:%s", events[0] ? " " : "", id, names[ev]);
    if (ev == LMX_CACHE_LOADED) {
        CHECK(load_ms > 0);
        snprintf(one + strlen(one), sizeof one - strlen(one), "(%lld)", (long long)bytes);
    }
    strncat(events, one, sizeof events - strlen(events) - 1);
    (void)user;
}

static void test_events(void) {
    lmx_model_cache *c = NULL;
    lmx_cache_limits l = {1, 0, 0};
    CHECK(lmx_model_cache_create(&E, l, on_event, NULL, &c) == LMX_OK);
    char *a = model("ea", 100), *b = model("eb", 200);
    events[0] = '\0';
    CHECK(use(c, "A", a, NULL) == LMX_OK);
    CHECK(use(c, "A", a, NULL) == LMX_OK);
    CHECK(use(c, "B", b, NULL) == LMX_OK);
    CHECK(lmx_model_cache_unload(c, "B") == LMX_OK);
    CHECK_EQ_STR(events, "A:miss A:loaded(1100) A:hit B:miss A:evict B:loaded(1200) B:unload");
    lmx_model_cache_destroy(c);
}

int main(void) {
    fake_engine_init(&E, &C);
    tmp = fake_tmpdir("cache");
    if (!tmp) return 1;
    RUN(test_lru_order_and_count_eviction);
    RUN(test_memory_budget);
    RUN(test_oom_retry);
    RUN(test_pinned_never_evicted);
    RUN(test_unload_while_pinned);
    RUN(test_validation_failures);
    RUN(test_concurrent_same_id);
    RUN(test_events);
    CHECK_EQ_INT(atomic_load(&C.live_models), 0);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
