/* test_prompt_cache.c — the prompt cache's policy over the fake engine (whose forward depends only
 * on the last token, so any resume point is exact): a multi-turn chat reuses the previous turns'
 * prompt (cached_tokens, tokens the engine processed), the same output as with the cache off, the
 * whole prompt cached keeps its last token to forward, LRU eviction by bytes, the accounting in the
 * model cache (entries evicted before models, a model eviction drops its entries), capacity, off
 * switches, and several threads on one model (label tsan). */
#include "lmx_test.h"
#include "cache/model_cache.h"
#include "fake_engine/fake_engine.h"
#include "runtime/runtime.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static lmx_engine E;
static fake_engine_ctx C;
static char *tmp;
static char models[1100];
static char chatm[1200];

static lmx_runtime *mkrt(int64_t pc_bytes, int ctx) {
    lmx_config c = lmx_config_default();
    c.models_dir = models;
    c.prompt_cache_bytes = pc_bytes;
    c.max_context_length = ctx;
    lmx_runtime *rt = NULL;
    CHECK(lmx_runtime_create_with_engine(&c, &E, &rt) == LMX_OK);
    return rt;
}

static lmx_gen_options greedy(int max_tokens) {
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 0;
    o.max_tokens = max_tokens;
    return o;
}

typedef struct buf {
    char s[200];
    size_t n;
} buf;
static int on_text(const char *t, size_t len, void *user) {
    buf *b = user;
    if (b->n + len < sizeof b->s) {
        memcpy(b->s + b->n, t, len);
        b->n += len;
        b->s[b->n] = 0;
    }
    return 0;
}

/* Runs a 4-turn chat; replies[t] gets each reply, cached[t] its cached_tokens, prompt[t] its
 * n_prompt_tokens, processed[t] the tokens the engine forwarded. */
static void conversation(lmx_runtime *rt, char replies[4][256], int cached[4], int prompt[4], int processed[4]) {
    static const char *users[4] = {"hi there", "tell me more", "and then?", "thanks"};
    lmx_message msgs[8];
    int n = 0;
    for (int t = 0; t < 4; t++) {
        msgs[n++] = (lmx_message){"user", users[t]};
        buf b = {.n = 0};
        lmx_gen_result res;
        lmx_gen_options o = greedy(40);
        int before = atomic_load(&C.tokens_processed);
        CHECK(lmx_chat_stream(rt, chatm, msgs, n, &o, on_text, &b, &res) == LMX_OK);
        processed[t] = atomic_load(&C.tokens_processed) - before;
        snprintf(replies[t], 256, "%s", b.s);
        cached[t] = res.cached_tokens;
        prompt[t] = res.n_prompt_tokens;
        msgs[n++] = (lmx_message){"assistant", replies[t]};
    }
}

static void test_multi_turn(void) {
    char on[4][256], off[4][256];
    int c_on[4], c_off[4], p_on[4], p_off[4], f_on[4], f_off[4];
    lmx_runtime *rt = mkrt(-1, 512);
    conversation(rt, on, c_on, p_on, f_on);
    lmx_runtime_destroy(rt);
    rt = mkrt(0, 512);
    conversation(rt, off, c_off, p_off, f_off);
    lmx_runtime_destroy(rt);
    for (int t = 0; t < 4; t++) {
        CHECK_EQ_STR(on[t], off[t]);
        CHECK_EQ_INT(p_on[t], p_off[t]);
        CHECK_EQ_INT(c_off[t], 0);
        CHECK_EQ_INT(f_on[t], f_off[t] - c_on[t]); /* the cached tokens were not forwarded */
    }
    CHECK_EQ_STR(on[0], "Howdy");
    CHECK_EQ_INT(c_on[0], 0);
    /* turn t reuses turn t-1's whole prompt: "<|user|>hi there\n<|assistant|>" … (the reply's
     * decoded positions are not reused: only prefilled ones are) */
    for (int t = 1; t < 4; t++) CHECK_EQ_INT(c_on[t], p_on[t - 1]);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
}

static void test_same_prompt_twice(void) {
    lmx_runtime *rt = mkrt(-1, 512);
    lmx_gen_options o = greedy(3);
    char *a = NULL, *b = NULL;
    lmx_gen_result r1, r2;
    CHECK(lmx_generate(rt, chatm, "Hello", &o, &a, &r1) == LMX_OK);
    CHECK(lmx_generate(rt, chatm, "Hello", &o, &b, &r2) == LMX_OK);
    CHECK_EQ_INT(r1.cached_tokens, 0);
    CHECK_EQ_INT(r2.cached_tokens, 4); /* all but the last prompt token, whose logits are needed */
    CHECK(a && b && strcmp(a, b) == 0);
    free(a);
    free(b);
    /* a prompt that extends the first one's prefix only partly */
    lmx_gen_result r3;
    CHECK(lmx_generate(rt, chatm, "Help", &o, &a, &r3) == LMX_OK);
    CHECK_EQ_INT(r3.cached_tokens, 3);
    free(a);
    lmx_runtime_destroy(rt);
}

/* kv_bytes_per_token 10 × context 100 = 1000 bytes an entry; a budget of 2500 holds two */
static void test_lru_bytes(void) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/lru", models);
    fake_model_write(dir, "{\"script\":\"abc#\",\"kv_bytes_per_token\":10}");
    lmx_runtime *rt = mkrt(2500, 100);
    lmx_gen_options o = greedy(2);
    lmx_gen_result r;
    char *t = NULL;
#define GEN(p, expect)                                                        \
    do {                                                                      \
        CHECK(lmx_generate(rt, dir, p, &o, &t, &r) == LMX_OK);                \
        free(t);                                                              \
        t = NULL;                                                             \
        CHECK_MSG(r.cached_tokens == (expect), "%s: cached %d, expected %d", p, r.cached_tokens, expect); \
    } while (0)
    GEN("Axxxx", 0);
    GEN("Bxxxx", 0);
    GEN("Cxxxx", 0); /* evicts A (LRU) */
    GEN("Bxxxx", 4); /* B was kept; back in as the most recent */
    GEN("Axxxx", 0); /* evicts C */
    GEN("Cxxxx", 0); /* evicts B */
    GEN("Axxxx", 4);
#undef GEN
    lmx_runtime_destroy(rt);
    /* an entry larger than the whole budget is not kept */
    rt = mkrt(999, 100);
    CHECK(lmx_generate(rt, dir, "Axxxx", &o, &t, &r) == LMX_OK);
    free(t);
    CHECK(lmx_generate(rt, dir, "Axxxx", &o, &t, &r) == LMX_OK);
    free(t);
    CHECK_EQ_INT(r.cached_tokens, 0);
    lmx_runtime_destroy(rt);
    /* kv_cache off: no prompt cache */
    lmx_config c = lmx_config_default();
    c.models_dir = models;
    c.kv_cache = false;
    CHECK(lmx_runtime_create_with_engine(&c, &E, &rt) == LMX_OK);
    CHECK(lmx_generate(rt, dir, "Axxxx", &o, &t, &r) == LMX_OK);
    free(t);
    CHECK(lmx_generate(rt, dir, "Axxxx", &o, &t, &r) == LMX_OK);
    free(t);
    CHECK_EQ_INT(r.cached_tokens, 0);
    lmx_runtime_destroy(rt);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
    c.prompt_cache_bytes = -2;
    CHECK(lmx_runtime_create_with_engine(&c, &E, &rt) == LMX_ERR_INVALID_ARGUMENT);
}

/* The model cache's accounting, directly: entries in reserved_bytes, evicted before models, dropped
 * with their model; take moves ownership; capacity. */
static void test_accounting(void) {
    char d1[1200], d2[1200];
    snprintf(d1, sizeof d1, "%s/acc1", models);
    snprintf(d2, sizeof d2, "%s/acc2", models);
    fake_model_write(d1, "{\"script\":\"abc#\",\"weight_bytes\":1000,\"kv_bytes_per_token\":10}");
    fake_model_write(d2, "{\"script\":\"abc#\",\"weight_bytes\":1000,\"kv_bytes_per_token\":10}");
    /* budget 80 % of 5000 = 4000; a model = 1000 + 10 × 100 = 2000; an entry = 1000 */
    lmx_cache_limits lim = {.max_models = 4, .max_memory_bytes = 5000, .prompt_cache_bytes = 3000};
    lmx_model_cache *mc = NULL;
    CHECK(lmx_model_cache_create(&E, lim, NULL, NULL, &mc) == LMX_OK);
    if (!mc) return;
    lmx_engine_load_opts lo = {.device = LMX_DEVICE_CPU, .max_context = 100, .kv_cache = true};
    lmx_cache_entry *e1 = NULL, *e2 = NULL;
    CHECK(lmx_model_cache_acquire(mc, "m1", d1, &lo, &e1, NULL, NULL) == LMX_OK);
    if (!e1) return;
    lmx_engine_model *m1 = lmx_cache_entry_model(e1);
    int32_t ids[3][4] = {{1, 2, 3, 4}, {1, 2, 9, 9}, {7, 7, 7, 7}};
    for (int i = 0; i < 2; i++) {
        lmx_engine_kv *kv = NULL;
        CHECK(E.kv_create(m1, 100, &kv) == LMX_OK);
        lmx_model_cache_kv_put(mc, e1, kv, ids[i], 4, 4, 100);
    }
    lmx_cache_stats st;
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.pc_entries, 2);
    CHECK_EQ_INT(st.pc_bytes, 2000);
    CHECK_EQ_INT(st.reserved_bytes, 4000);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 2);
    /* longest prefix wins; capacity too small → not used; the entry leaves the cache */
    size_t m = 0;
    int32_t q[4] = {1, 2, 9, 5};
    CHECK(lmx_model_cache_kv_take(mc, e1, q, 4, 101, &m) == NULL);
    lmx_engine_kv *kv = lmx_model_cache_kv_take(mc, e1, q, 4, 100, &m);
    CHECK(kv != NULL);
    CHECK_EQ_INT(m, 3);
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.pc_entries, 1);
    CHECK_EQ_INT(st.reserved_bytes, 3000);
    /* only the prefilled positions count: an entry with n_exact 2 matches 2 at most */
    lmx_model_cache_kv_put(mc, e1, kv, ids[1], 4, 2, 100);
    kv = lmx_model_cache_kv_take(mc, e1, q, 4, 100, &m); /* {1,2,3,4} and {1,2|9,9} both match 2 */
    CHECK(kv != NULL);
    CHECK_EQ_INT(m, 2);
    E.kv_destroy(kv);
    kv = lmx_model_cache_kv_take(mc, e1, ids[0], 4, 100, &m);
    CHECK(kv != NULL);
    E.kv_destroy(kv);
    lmx_model_cache_stats_get(mc, &st);
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.pc_entries, 0);
    CHECK_EQ_INT(st.reserved_bytes, 2000);
    /* two entries again, then a second model needs 2000: entries go first, the model stays */
    for (int i = 0; i < 2; i++) {
        lmx_engine_kv *k = NULL;
        CHECK(E.kv_create(m1, 100, &k) == LMX_OK);
        lmx_model_cache_kv_put(mc, e1, k, ids[i == 0 ? 0 : 2], 4, 4, 100);
    }
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.reserved_bytes, 4000);
    lmx_model_cache_release(mc, e1);
    CHECK(lmx_model_cache_acquire(mc, "m2", d2, &lo, &e2, NULL, NULL) == LMX_OK);
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.n_models, 2);
    CHECK_EQ_INT(st.pc_entries, 0);
    CHECK_EQ_INT(st.pc_evictions, 2);
    CHECK_EQ_INT(st.reserved_bytes, 4000);
    CHECK_EQ_INT(st.evictions, 0);
    /* a put that cannot fit without evicting a model is dropped */
    lmx_engine_kv *k2 = NULL;
    CHECK(E.kv_create(lmx_cache_entry_model(e2), 100, &k2) == LMX_OK);
    lmx_model_cache_kv_put(mc, e2, k2, ids[0], 4, 4, 100);
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.pc_entries, 0);
    lmx_model_cache_release(mc, e2);
    /* unloading a model drops its entries */
    lim.max_memory_bytes = 0;
    CHECK(lmx_model_cache_set_limits(mc, lim) == LMX_OK);
    CHECK(lmx_model_cache_acquire(mc, "m2", d2, &lo, &e2, NULL, NULL) == LMX_OK);
    CHECK(E.kv_create(lmx_cache_entry_model(e2), 100, &k2) == LMX_OK);
    lmx_model_cache_kv_put(mc, e2, k2, ids[0], 4, 4, 100);
    lmx_model_cache_release(mc, e2);
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.pc_entries, 1);
    CHECK(lmx_model_cache_unload(mc, "m2") == LMX_OK);
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.pc_entries, 0);
    CHECK_EQ_INT(st.pc_bytes, 0);
    CHECK_EQ_INT(st.reserved_bytes, 2000);
    /* lowering the prompt-cache budget evicts */
    CHECK(lmx_model_cache_acquire(mc, "m1", d1, &lo, &e1, NULL, NULL) == LMX_OK);
    CHECK(E.kv_create(lmx_cache_entry_model(e1), 100, &k2) == LMX_OK);
    lmx_model_cache_kv_put(mc, e1, k2, ids[0], 4, 4, 100);
    lmx_model_cache_release(mc, e1);
    lim.prompt_cache_bytes = 0;
    CHECK(lmx_model_cache_set_limits(mc, lim) == LMX_OK);
    lmx_model_cache_stats_get(mc, &st);
    CHECK_EQ_INT(st.pc_entries, 0);
    lmx_model_cache_destroy(mc);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
}

/* several threads, each its own conversation, on one model with the cache on (run under TSan) */
enum { THREADS = 4, ROUNDS = 6 };
typedef struct worker {
    lmx_runtime *rt;
    int id, bad, cached;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    char sys[64];
    snprintf(sys, sizeof sys, "you are bot %d", w->id % 2); /* two shared system prompts */
    lmx_message msgs[2 + 2 * ROUNDS];
    int n = 0;
    msgs[n++] = (lmx_message){"system", sys};
    char users[ROUNDS][32], replies[ROUNDS][256];
    for (int r = 0; r < ROUNDS; r++) {
        snprintf(users[r], sizeof users[r], "turn %d of %d", r, w->id);
        msgs[n++] = (lmx_message){"user", users[r]};
        buf b = {.n = 0};
        lmx_gen_result res;
        lmx_gen_options o = greedy(20);
        if (lmx_chat_stream(w->rt, chatm, msgs, n, &o, on_text, &b, &res) != LMX_OK || strcmp(b.s, "Howdy") != 0)
            w->bad++;
        w->cached += res.cached_tokens;
        snprintf(replies[r], sizeof replies[r], "%s", b.s);
        msgs[n++] = (lmx_message){"assistant", replies[r]};
    }
    return NULL;
}

static void test_threads(void) {
    lmx_runtime *rt = mkrt(-1, 1024);
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.rt = rt, .id = i};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    int bad = 0, cached = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        bad += w[i].bad;
        cached += w[i].cached;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(cached > 0);
    lmx_runtime_destroy(rt);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
}

int main(void) {
    fake_engine_init(&E, &C);
    tmp = fake_tmpdir("pcache");
    if (!tmp) return 1;
    snprintf(models, sizeof models, "%s/models", tmp);
    snprintf(chatm, sizeof chatm, "%s/chat", models);
    fake_model_write(chatm, "{\"script\":\"Howdy#\",\"template\":true}");
    RUN(test_multi_turn);
    RUN(test_same_prompt_twice);
    RUN(test_lru_bytes);
    RUN(test_accounting);
    RUN(test_threads);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
