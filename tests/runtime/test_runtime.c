/* test_runtime.c — the lmx.h facade over the fake engine: config, load/unload/info, lazy loading
 * through the registry, generate / stream / chat, cancellation, metrics, LMX_VERIFY. */
#include "lmx_test.h"
#include "fake_engine/fake_engine.h"
#include "runtime/runtime.h"

#include <stdlib.h>
#include <unistd.h>

static lmx_engine E;
static fake_engine_ctx C;
static char *tmp;
static char models[1100];

static char *mkmodel(const char *rel, const char *json) {
    static char paths[8][1200];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 1200, "%s/%s", models, rel);
    fake_model_write(p, json);
    return p;
}

static lmx_runtime *mkrt(lmx_config *cfg) {
    lmx_config c = cfg ? *cfg : lmx_config_default();
    c.models_dir = models;
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

static void test_config(void) {
    lmx_config c = lmx_config_default();
    CHECK(c.device == LMX_DEVICE_AUTO && c.max_memory_bytes == 0 && c.use_mmap && c.max_cached_models == 3);
    CHECK(c.max_context_length == 4096 && c.kv_cache && c.n_threads == 0 && c.models_dir == NULL);
    CHECK_NEAR(c.default_temperature, 0.7, 1e-6);
    CHECK_NEAR(c.default_top_p, 0.9, 1e-6);
    CHECK_EQ_INT(c.default_max_tokens, 512);
    lmx_gen_options o = lmx_gen_options_default();
    CHECK(o.sampling.top_k == 0 && o.sampling.min_p == 0 && o.max_tokens == 512 && o.n_stop == 0 && o.sampling.repetition_context == 20);
    CHECK_NEAR(o.sampling.temperature, 0.7, 1e-6);
    CHECK_NEAR(o.sampling.top_p, 0.9, 1e-6);
    CHECK_NEAR(o.sampling.repetition_penalty, 1.0, 1e-6);
    CHECK(!o.use_seed);

    lmx_runtime *rt = (lmx_runtime *)0x1;
    lmx_config bad[10];
    for (int i = 0; i < 10; i++) bad[i] = lmx_config_default();
    bad[0].max_cached_models = 0;
    bad[1].max_memory_bytes = -1;
    bad[2].max_context_length = 0;
    bad[3].n_threads = -1;
    bad[4].default_temperature = -0.5f;
    bad[5].default_top_p = 1.5f;
    bad[6].device = (lmx_device)7;
    bad[8].tensor_parallel = -1;
    bad[9].tensor_parallel = 65;
    bad[7].default_max_tokens = -2;
    CHECK_EQ_INT(lmx_config_default().tensor_parallel, 0);
    for (int i = 0; i < 10; i++) {
        CHECK(lmx_runtime_create(&bad[i], &rt) == LMX_ERR_INVALID_ARGUMENT);
        CHECK(rt == (lmx_runtime *)0x1);
    }
    CHECK(strstr(lmx_last_error_detail(), "tensor_parallel 65 must be in [0, 64]") != NULL);
    /* the build's default engine */
    rt = NULL;
    CHECK(lmx_runtime_create(NULL, &rt) == LMX_OK);
    char *dir = mkmodel("x/unsupported", "{}");
    lmx_status st = lmx_model_load(rt, dir, "u");
    /* the real engine: a fake-engine directory is not an MLX model */
    CHECK(lmx_engine_default() != NULL);
    CHECK(st == LMX_ERR_INVALID_MODEL_FORMAT || st == LMX_ERR_MODEL_NOT_FOUND);
    if (st != LMX_ERR_INVALID_MODEL_FORMAT && st != LMX_ERR_MODEL_NOT_FOUND)
        fprintf(stderr, "default engine on a fake model: %s: %s\n", lmx_status_str(st), lmx_last_error_detail());
    lmx_runtime_destroy(rt);
    lmx_runtime_destroy(NULL);

    rt = mkrt(NULL);
    lmx_config got;
    CHECK(lmx_config_get(rt, &got) == LMX_OK);
    CHECK_EQ_STR(got.models_dir, models);
    CHECK(got.models_dir != models); /* a copy */
    got.max_context_length = 1234;
    got.models_dir = "/elsewhere";
    CHECK(lmx_config_update(rt, &got) == LMX_OK);
    lmx_config got2;
    CHECK(lmx_config_get(rt, &got2) == LMX_OK);
    CHECK_EQ_INT(got2.max_context_length, 1234);
    CHECK_EQ_STR(got2.models_dir, "/elsewhere");
    CHECK_EQ_STR(got.models_dir, "/elsewhere");
    got2.max_cached_models = -3;
    CHECK(lmx_config_update(rt, &got2) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_config_get(rt, &got) == LMX_OK && got.max_cached_models == 3); /* unchanged */
    CHECK(lmx_config_update(rt, NULL) == LMX_ERR_INVALID_ARGUMENT);
    lmx_runtime_destroy(rt);
}

static void test_load_info_unload(void) {
    lmx_runtime *rt = mkrt(NULL);
    char *a = mkmodel("org/a", "{\"script\":\"Quick brown#\",\"weight_bytes\":5000,\"kv_bytes_per_token\":2}");
    CHECK(lmx_registry_add(models, a, NULL) == LMX_OK);
    CHECK(!lmx_model_is_loaded(rt, "org/a"));
    CHECK(lmx_model_load(rt, "org/a", NULL) == LMX_OK); /* registered name, id = name */
    CHECK(lmx_model_is_loaded(rt, "org/a"));
    lmx_model_info info;
    CHECK(lmx_model_get_info(rt, "org/a", &info) == LMX_OK);
    CHECK_EQ_STR(info.model_id, "org/a");
    CHECK_EQ_STR(info.model_type, "fake");
    CHECK_EQ_INT(info.vocab_size, FAKE_VOCAB);
    CHECK_EQ_INT(info.weight_bytes, 5000);
    CHECK_EQ_INT(info.estimated_bytes, 5000 + 2 * 4096);
    CHECK_EQ_INT(info.max_context, 4096);
    CHECK(info.device == LMX_DEVICE_CPU);
    CHECK_EQ_INT(info.access_count, 1);
    char *real = realpath(a, NULL);
    CHECK_EQ_STR(info.path, real);
    free(real);
    int opens = atomic_load(&C.open_calls);
    CHECK(lmx_model_load(rt, "org/a", NULL) == LMX_OK); /* hit: no disk */
    CHECK_EQ_INT(atomic_load(&C.open_calls), opens);
    CHECK(lmx_model_get_info(rt, "org/a", &info) == LMX_OK && info.access_count == 2);
    /* a directory path under another id; the same id from another dir is refused */
    char *b = mkmodel("org/b", "{\"script\":\"xyz\"}");
    CHECK(lmx_model_load(rt, b, "bee") == LMX_OK);
    CHECK(lmx_model_load(rt, b, "bee") == LMX_OK);
    CHECK(lmx_model_load(rt, a, "bee") == LMX_ERR_INVALID_ARGUMENT);
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK_EQ_INT(m.cache_misses, 2);
    CHECK_EQ_INT(m.cache_hits, 3);
    CHECK_EQ_INT(m.n_models_loaded, 2);
    CHECK_EQ_INT(m.n_loads, 2);
    CHECK_NEAR(m.cache_hit_rate, 3.0 / 5.0, 1e-9);
    /* the registry recorded the use */
    lmx_registry_entry *list;
    int n;
    CHECK(lmx_registry_list(models, &list, &n) == LMX_OK && n >= 1);
    CHECK(n >= 1 && list[0].last_used > 1e9);
    lmx_registry_entries_free(list, n);
    /* errors */
    CHECK(lmx_model_load(rt, "nobody/nothing", NULL) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(lmx_model_get_info(rt, "nothing", &info) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(lmx_model_load(rt, NULL, NULL) == LMX_ERR_INVALID_ARGUMENT);
    char *inv = mkmodel("org/invalid", "{\"invalid\":true}");
    CHECK(lmx_model_load(rt, inv, "inv") == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(!lmx_model_is_loaded(rt, "inv"));
    CHECK(lmx_model_unload(rt, "bee") == LMX_OK);
    CHECK(!lmx_model_is_loaded(rt, "bee"));
    CHECK(lmx_model_unload(rt, "bee") == LMX_ERR_MODEL_NOT_FOUND);
    lmx_runtime_destroy(rt);
    CHECK_EQ_INT(atomic_load(&C.live_models), 0);
}

typedef struct collect_t {
    char text[512];
    size_t len;
    int calls, cancel_at;
} collect_t;

static int collect(const char *t, size_t len, void *user) {
    collect_t *c = user;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, t, len);
        c->len += len;
        c->text[c->len] = '\0';
    }
    return ++c->calls == c->cancel_at;
}

static void test_generate_lazy_and_stream(void) {
    lmx_config cfg = lmx_config_default();
    cfg.default_max_tokens = 3;
    lmx_runtime *rt = mkrt(&cfg);
    char *q = mkmodel("org/quick", "{\"script\":\"Quick brown#\"}");
    CHECK(lmx_registry_add(models, q, NULL) == LMX_OK);
    /* lazy load from the registered name */
    lmx_gen_options o = greedy(-1);
    char *text = NULL;
    lmx_gen_result res;
    CHECK(lmx_generate(rt, "org/quick", "Q", &o, &text, &res) == LMX_OK);
    CHECK_EQ_STR(text, "uick brown");
    lmx_free(text);
    CHECK(res.finish_reason == LMX_FINISH_STOP && res.n_generated_tokens == 10 && res.n_prompt_tokens == 1);
    CHECK(res.load_ms > 0);
    CHECK(lmx_model_is_loaded(rt, "org/quick"));
    /* opt NULL: the runtime's defaults (0.7 / 0.9 / 3 tokens; peak 10 leaves one token after top_p) */
    CHECK(lmx_generate(rt, "org/quick", "Q", NULL, &text, &res) == LMX_OK);
    CHECK_EQ_STR(text, "uic");
    CHECK(res.load_ms == 0);
    lmx_free(text);
    /* streaming with a stop string across tokens */
    const char *stops[] = {"bro"};
    o.stop = stops;
    o.n_stop = 1;
    collect_t c = {0};
    CHECK(lmx_generate_stream(rt, "org/quick", "Q", &o, collect, &c, &res) == LMX_OK);
    CHECK_EQ_STR(c.text, "uick ");
    CHECK(res.finish_reason == LMX_FINISH_STOP);
    /* cancellation from the callback */
    o.n_stop = 0;
    memset(&c, 0, sizeof c);
    c.cancel_at = 2;
    CHECK(lmx_generate_stream(rt, "org/quick", "Q", &o, collect, &c, &res) == LMX_ERR_CANCELLED);
    CHECK(res.finish_reason == LMX_FINISH_CANCELLED && c.calls == 2);
    CHECK_EQ_STR(c.text, "ui");
    /* chat */
    lmx_message msgs[] = {{"system", "be brief"}, {"user", "hi"}};
    memset(&c, 0, sizeof c);
    CHECK(lmx_chat_stream(rt, "org/quick", msgs, 2, &o, collect, &c, &res) == LMX_OK);
    CHECK_EQ_STR(c.text, "Quick brown"); /* '>' is not in the script → 'Q' first */
    CHECK_EQ_INT(res.n_prompt_tokens, (int)strlen("<|system|>be brief\n<|user|>hi\n<|assistant|>"));
    CHECK(lmx_chat_stream(rt, "org/quick", msgs, 0, &o, collect, &c, &res) == LMX_ERR_INVALID_ARGUMENT);
    char *nt = mkmodel("org/notemplate", "{\"script\":\"ab\",\"template\":false}");
    CHECK(lmx_chat_stream(rt, nt, msgs, 2, &o, collect, &c, &res) == LMX_ERR_TEMPLATE);
    /* a directory path as the model id */
    char *b = mkmodel("org/b2", "{\"script\":\"xyz#\"}");
    CHECK(lmx_generate(rt, b, "x", &o, &text, &res) == LMX_OK);
    CHECK_EQ_STR(text, "yz");
    lmx_free(text);
    /* errors */
    CHECK(lmx_generate(rt, "no/such", "x", &o, &text, &res) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(text == NULL);
    o.sampling.temperature = -1;
    CHECK(lmx_generate(rt, "org/quick", "x", &o, &text, &res) == LMX_ERR_INVALID_ARGUMENT);
    o = greedy(5);
    lmx_config small;
    lmx_config_get(rt, &small);
    small.max_context_length = 8;
    CHECK(lmx_config_update(rt, &small) == LMX_OK);
    CHECK(lmx_model_unload(rt, "org/quick") == LMX_OK);
    CHECK(lmx_generate(rt, "org/quick", "Quick brown fox", &o, &text, &res) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "15 tokens") != NULL);
    CHECK(lmx_generate(rt, "org/quick", NULL, &o, &text, &res) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_generate(rt, "org/quick", "", &o, &text, &res) == LMX_ERR_INVALID_ARGUMENT);
    lmx_runtime_destroy(rt); /* the prompt cache keeps KV caches until then */
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
}

static void test_metrics(void) {
    lmx_runtime *rt = mkrt(NULL);
    char *q = mkmodel("org/mq", "{\"script\":\"Quick brown#\",\"weight_bytes\":777}");
    lmx_gen_options o = greedy(-1);
    lmx_gen_result res;
    char *text;
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, "mq", &m) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(lmx_model_load(rt, q, "mq") == LMX_OK);
    for (int i = 0; i < 3; i++) {
        CHECK(lmx_generate(rt, "mq", "Q", &o, &text, &res) == LMX_OK);
        lmx_free(text);
    }
    CHECK(lmx_metrics_get(rt, "mq", &m) == LMX_OK);
    CHECK_EQ_INT(m.n_inferences, 3);
    CHECK_EQ_INT(m.total_tokens, 30);
    CHECK_EQ_INT(m.total_prompt_tokens, 3);
    CHECK_EQ_INT(m.cache_misses, 1);
    CHECK_EQ_INT(m.cache_hits, 3);
    CHECK_EQ_INT(m.n_loads, 1);
    CHECK(m.load_ms > 0 && m.total_inference_ms > 0 && m.avg_tokens_per_second > 0 && m.avg_ttft_ms >= 0);
    CHECK_EQ_INT(m.current_memory_bytes, 777 + 0);
    CHECK(m.avg_gpu_utilization == -1);
    CHECK_EQ_INT(m.n_models_loaded, 1);
    lmx_metrics all;
    CHECK(lmx_metrics_get(rt, NULL, &all) == LMX_OK);
    CHECK_EQ_INT(all.n_inferences, 3);
    CHECK(all.current_memory_bytes > 777); /* RSS + device bytes */
    CHECK(all.peak_memory_bytes >= all.current_memory_bytes);
    /* a failed generation counts as an error */
    o.max_tokens = -7;
    CHECK(lmx_generate(rt, "mq", "Q", &o, &text, &res) == LMX_ERR_INVALID_ARGUMENT);
    lmx_metrics_reset(rt, "mq");
    CHECK(lmx_metrics_get(rt, "mq", &m) == LMX_OK);
    CHECK(m.n_inferences == 0 && m.cache_hits == 0 && m.total_tokens == 0);
    CHECK_EQ_INT(m.current_memory_bytes, 777); /* still loaded */
    CHECK(lmx_metrics_get(rt, NULL, &all) == LMX_OK && all.n_inferences == 3); /* overall kept */
    lmx_metrics_reset(rt, NULL);
    CHECK(lmx_metrics_get(rt, NULL, &all) == LMX_OK);
    CHECK(all.n_inferences == 0 && all.cache_hits == 0 && all.load_ms == 0);
    /* evicted → per-model memory 0, eviction counted */
    CHECK(lmx_model_unload(rt, "mq") == LMX_OK);
    CHECK(lmx_metrics_get(rt, "mq", &m) == LMX_OK && m.current_memory_bytes == 0);
    lmx_runtime_destroy(rt);
}

static void test_lru_through_facade(void) {
    lmx_config cfg = lmx_config_default();
    cfg.max_cached_models = 2;
    lmx_runtime *rt = mkrt(&cfg);
    char *d1 = mkmodel("l/1", "{\"script\":\"ab#\"}"), *d2 = mkmodel("l/2", "{\"script\":\"ab#\"}"),
         *d3 = mkmodel("l/3", "{\"script\":\"ab#\"}");
    CHECK(lmx_model_load(rt, d1, "m1") == LMX_OK);
    CHECK(lmx_model_load(rt, d2, "m2") == LMX_OK);
    lmx_gen_options o = greedy(4);
    char *text;
    CHECK(lmx_generate(rt, "m1", "a", &o, &text, NULL) == LMX_OK); /* generate counts as use */
    lmx_free(text);
    CHECK(lmx_model_load(rt, d3, "m3") == LMX_OK); /* evicts m2 */
    CHECK(lmx_model_is_loaded(rt, "m1") && !lmx_model_is_loaded(rt, "m2") && lmx_model_is_loaded(rt, "m3"));
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, "m2", &m) == LMX_OK && m.cache_evictions == 1);
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK && m.cache_evictions == 1);
    /* lowering the limit through the config evicts now */
    lmx_config c;
    lmx_config_get(rt, &c);
    c.max_cached_models = 1;
    CHECK(lmx_config_update(rt, &c) == LMX_OK);
    CHECK(!lmx_model_is_loaded(rt, "m1") && lmx_model_is_loaded(rt, "m3"));
    /* memory budget that can never fit */
    c.max_memory_bytes = 1000;
    CHECK(lmx_config_update(rt, &c) == LMX_OK);
    char *big = mkmodel("l/big", "{\"script\":\"ab\",\"weight_bytes\":5000}");
    CHECK(lmx_model_load(rt, big, "big") == LMX_ERR_OUT_OF_MEMORY);
    CHECK(!lmx_model_is_loaded(rt, "big"));
    lmx_runtime_destroy(rt);
}

static void test_verify_at_load(void) {
    lmx_runtime *rt = mkrt(NULL);
    char *v = mkmodel("org/verified", "{\"script\":\"ab#\"}");
    CHECK(lmx_registry_add(models, v, NULL) == LMX_OK);
    fake_model_write(v, "{\"script\":\"ba#\"}"); /* changed after registration */
    setenv("LMX_VERIFY", "1", 1);
    CHECK(lmx_model_load(rt, "org/verified", NULL) == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(strstr(lmx_last_error_detail(), "fake.json") != NULL);
    CHECK(!lmx_model_is_loaded(rt, "org/verified"));
    unsetenv("LMX_VERIFY");
    CHECK(lmx_model_load(rt, "org/verified", NULL) == LMX_OK);
    lmx_runtime_destroy(rt);
}

static void test_kv_cache_off_and_max_position(void) {
    lmx_config cfg = lmx_config_default();
    cfg.kv_cache = false;
    lmx_runtime *rt = mkrt(&cfg);
    char *q = mkmodel("org/nokv", "{\"script\":\"Quick brown#\",\"max_position\":64}");
    lmx_gen_options o = greedy(-1);
    char *text = NULL;
    int before = atomic_load(&C.tokens_processed);
    CHECK(lmx_generate(rt, q, "Q", &o, &text, NULL) == LMX_OK);
    CHECK_EQ_STR(text, "uick brown"); /* same text as with the cache */
    lmx_free(text);
    /* prefill 1, then steps over 2..11 tokens: 1 + (2 + … + 11) = 66 (vs 11 with the cache) */
    CHECK_EQ_INT(atomic_load(&C.tokens_processed) - before, 66);
    lmx_model_info info;
    CHECK(lmx_model_get_info(rt, q, &info) == LMX_OK);
    CHECK_EQ_INT(info.max_context, 4096); /* not capped by max_position (mlx-lm/HF allow longer) */
    lmx_runtime_destroy(rt);
    rt = mkrt(NULL);
    before = atomic_load(&C.tokens_processed);
    CHECK(lmx_generate(rt, q, "Q", &o, &text, NULL) == LMX_OK);
    CHECK_EQ_STR(text, "uick brown");
    lmx_free(text);
    CHECK_EQ_INT(atomic_load(&C.tokens_processed) - before, 11);
    lmx_runtime_destroy(rt);
}

static void test_ids_and_tokenizer(void) {
    lmx_runtime *rt = mkrt(NULL);
    char *q = mkmodel("org/ids", "{\"script\":\"Quick brown#\"}");
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(lmx_tokenize(rt, q, "Qu", true, &ids, &n) == LMX_OK); /* lazy load */
    CHECK(n == 2 && ids[0] == 'Q' && ids[1] == 'u');
    lmx_gen_options o = greedy(5);
    int32_t *out = NULL;
    size_t n_out = 0;
    lmx_gen_result res;
    CHECK(lmx_generate_ids(rt, q, ids, n, &o, NULL, NULL, &out, &n_out, &res) == LMX_OK);
    CHECK_EQ_INT(n_out, 5);
    CHECK(n_out == 5 && out[0] == 'i' && out[4] == 'b');
    CHECK(res.n_prompt_tokens == 2 && res.n_generated_tokens == 5 && res.finish_reason == LMX_FINISH_LENGTH);
    char *text = NULL;
    CHECK(lmx_detokenize(rt, q, out, n_out, &text) == LMX_OK);
    CHECK_EQ_STR(text, "ick b");
    lmx_free(text);
    lmx_free(out);
    /* EOS is not among the returned ids */
    o.max_tokens = -1;
    CHECK(lmx_generate_ids(rt, q, ids, n, &o, NULL, NULL, &out, &n_out, &res) == LMX_OK);
    CHECK_EQ_INT(n_out, 9);
    CHECK(res.finish_reason == LMX_FINISH_STOP);
    lmx_free(out);
    /* out-of-vocabulary prompt ids, empty prompt */
    int32_t bad[] = {'Q', 9999};
    CHECK(lmx_generate_ids(rt, q, bad, 2, &o, NULL, NULL, &out, &n_out, &res) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL && strstr(lmx_last_error_detail(), "9999"));
    CHECK(lmx_generate_ids(rt, q, NULL, 0, &o, NULL, NULL, &out, &n_out, &res) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_detokenize(rt, q, bad, 2, &text) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_detokenize(rt, q, NULL, 0, &text) == LMX_OK && text && text[0] == '\0');
    lmx_free(text);
    /* cancelled: the ids so far are returned */
    collect_t c = {0};
    c.cancel_at = 3;
    CHECK(lmx_generate_ids(rt, q, ids, n, &o, collect, &c, &out, &n_out, &res) == LMX_ERR_CANCELLED);
    CHECK_EQ_INT(n_out, 3);
    lmx_free(out);
    lmx_free(ids);
    CHECK(lmx_tokenize(rt, "no/such", "x", true, &ids, &n) == LMX_ERR_MODEL_NOT_FOUND);
    lmx_runtime_destroy(rt);
}

int main(void) {
    fake_engine_init(&E, &C);
    tmp = fake_tmpdir("rt");
    if (!tmp) return 1;
    snprintf(models, sizeof models, "%s/models", tmp);
    RUN(test_config);
    RUN(test_load_info_unload);
    RUN(test_generate_lazy_and_stream);
    RUN(test_metrics);
    RUN(test_lru_through_facade);
    RUN(test_verify_at_load);
    RUN(test_kv_cache_off_and_max_position);
    RUN(test_ids_and_tokenizer);
    CHECK_EQ_INT(atomic_load(&C.live_models), 0);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
