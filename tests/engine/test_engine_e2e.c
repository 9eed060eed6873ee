/* test_engine_e2e.c — the public API (lmx.h) over the real engine: tiny random-weight models of
 * real shapes (qwen3 q4, llama-3.2 q8, llama-3 bf16; 2 layers, hidden 64) with the real qwen3 /
 * llama3 tokenizers (built by the engine_models_setup fixture). Covers lazy loading and counters,
 * streaming == non-streaming, seed determinism, stop strings across tokens with holdback,
 * cancellation, chat templates, EOS sources, max_tokens, metrics, model info, unload, memory-budget
 * eviction, validation failures, device selection, models without a tokenizer and the prompt cache
 * (multi-turn chat: same replies with it on and off, cached_tokens). */
#include "lmx_test.h"
#include "engine/engine.h"
#include "engine/engine_lm.h"
#include "backend/backend.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* real qwen3/llama3 tokenizers + templates (big vocabularies) */
static char QWEN[1024], LLAMA32[1024];
/* the llama2 tokenizer (vocab 32000) in three shapes: cheap to load and run */
static char SQWEN[1024], SLLAMA32[1024], SLLAMA3[1024], NOTOK[1024];
static char g_tmp[256];

/* ---- helpers ---- */

typedef struct pieces {
    char text[65536];
    size_t len;
    int n;                 /* callbacks */
    size_t ends[4096];     /* text length after each callback */
    int cancel_after;      /* > 0: return 1 at that callback */
} pieces;

static int on_piece(const char *t, size_t len, void *user) {
    pieces *p = user;
    if (p->len + len < sizeof p->text) {
        memcpy(p->text + p->len, t, len);
        p->len += len;
        p->text[p->len] = '\0';
    }
    if (p->n < 4096) p->ends[p->n] = p->len;
    p->n++;
    return p->cancel_after > 0 && p->n >= p->cancel_after;
}

static lmx_runtime *mkrt(int max_models, int64_t max_mem, int ctx, int threads) {
    lmx_config c = lmx_config_default();
    c.device = LMX_DEVICE_CPU;
    c.max_cached_models = max_models;
    c.max_memory_bytes = max_mem;
    c.max_context_length = ctx;
    c.n_threads = threads;
    c.models_dir = g_tmp; /* nothing registered there: ids are directories */
    lmx_runtime *rt = NULL;
    lmx_status st = lmx_runtime_create(&c, &rt);
    CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
    return rt;
}

static lmx_gen_options seeded(float temp, int max_tokens, uint64_t seed) {
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = temp;
    o.sampling.top_p = 0.95f;
    o.max_tokens = max_tokens;
    o.seed = seed;
    o.use_seed = true;
    return o;
}

static void write_file(const char *dir, const char *name, const char *text, size_t len) {
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(text, 1, len, f) == len);
    fclose(f);
}

/* A copy of model dir `src` at g_tmp/name: every file symlinked except those later rewritten. */
static void variant(const char *src, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", g_tmp, name);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && for f in '%s'/*; do ln -s \"$f\" '%s'/; done", out, out,
             src, out);
    CHECK(system(cmd) == 0);
}

/* Replaces a symlinked file by a real copy whose bytes are `text`. */
static void replace_file(const char *dir, const char *name, const char *text) {
    write_file(dir, name, text, strlen(text));
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = '\0';
    if (len) *len = (size_t)n;
    return b;
}

/* ---- tests ---- */

static void test_lazy_load_counters(void) {
    lmx_runtime *rt = mkrt(3, 0, 256, 1);
    CHECK(!lmx_model_is_loaded(rt, SQWEN));
    lmx_gen_options o = seeded(0, 4, 1);
    char *text = NULL;
    lmx_gen_result r;
    lmx_status st = lmx_generate(rt, SQWEN, "Hello", &o, &text, &r);
    CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
    CHECK(lmx_model_is_loaded(rt, SQWEN));
    CHECK(r.load_ms > 0); /* this call loaded it */
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK_EQ_INT(m.cache_misses, 1);
    CHECK_EQ_INT(m.cache_hits, 0);
    lmx_free(text);
    text = NULL;
    CHECK(lmx_generate(rt, SQWEN, "Hello", &o, &text, &r) == LMX_OK);
    CHECK(r.load_ms == 0); /* a hit */
    CHECK(lmx_model_load(rt, SQWEN, NULL) == LMX_OK);
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK_EQ_INT(m.cache_misses, 1);
    CHECK_EQ_INT(m.cache_hits, 2);
    CHECK_NEAR(m.cache_hit_rate, 2.0 / 3.0, 1e-9);
    CHECK_EQ_INT(m.n_models_loaded, 1);
    CHECK_EQ_INT(m.n_inferences, 2);
    CHECK_EQ_INT(m.total_tokens, 8);
    lmx_free(text);
    lmx_runtime_destroy(rt);
}

static void test_stream_equals_nonstream(void) {
    lmx_runtime *rt = mkrt(3, 0, 256, 1);
    const char *models[2] = {SQWEN, SLLAMA32};
    for (int k = 0; k < 2; k++) {
        lmx_gen_options o = seeded(0.9f, 24, 42);
        char *text = NULL;
        lmx_gen_result r1, r2;
        CHECK(lmx_generate(rt, models[k], "The quick brown fox", &o, &text, &r1) == LMX_OK);
        pieces *p = calloc(1, sizeof *p);
        CHECK(lmx_generate_stream(rt, models[k], "The quick brown fox", &o, on_piece, p, &r2) == LMX_OK);
        CHECK(text && strlen(text) > 0);
        CHECK_EQ_STR(p->text, text);
        CHECK_EQ_INT(r1.n_generated_tokens, r2.n_generated_tokens);
        CHECK(p->n >= 2); /* really streamed in pieces */
        /* and both equal decoding the ids lmx_generate_ids produces from the same prompt ids */
        int32_t *ids = NULL, *out = NULL;
        size_t n = 0, n_out = 0;
        CHECK(lmx_tokenize(rt, models[k], "The quick brown fox", true, &ids, &n) == LMX_OK);
        CHECK_EQ_INT(n, r1.n_prompt_tokens);
        CHECK(lmx_generate_ids(rt, models[k], ids, n, &o, NULL, NULL, &out, &n_out, NULL) == LMX_OK);
        CHECK_EQ_INT(n_out, r1.n_generated_tokens);
        char *dec = NULL;
        CHECK(lmx_detokenize(rt, models[k], out, n_out, &dec) == LMX_OK);
        CHECK_EQ_STR(dec, text);
        lmx_free(dec);
        lmx_free(ids);
        lmx_free(out);
        lmx_free(text);
        free(p);
    }
    lmx_runtime_destroy(rt);
}

typedef struct det_job {
    lmx_runtime *rt;
    const char *model;
    char *text;
} det_job;

static void *det_worker(void *arg) {
    det_job *j = arg;
    lmx_gen_options o = seeded(1.0f, 32, 1234);
    o.sampling.top_k = 50;
    o.sampling.min_p = 0.01f;
    o.sampling.repetition_penalty = 1.1f;
    if (lmx_generate(j->rt, j->model, "Once upon a time", &o, &j->text, NULL) != LMX_OK) j->text = NULL;
    return NULL;
}

static void test_seed_determinism(void) {
    /* the same seed: byte-identical text across runs, calling threads and runtimes with another
     * CPU thread count; another seed: different text */
    lmx_runtime *rt1 = mkrt(3, 0, 256, 1), *rt2 = mkrt(3, 0, 256, 2);
    det_job jobs[4] = {{rt1, SLLAMA3, NULL}, {rt1, SLLAMA3, NULL}, {rt2, SLLAMA3, NULL}, {rt2, SLLAMA3, NULL}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&th[i], NULL, det_worker, &jobs[i]) == 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    det_job again = {rt1, SLLAMA3, NULL};
    det_worker(&again);
    CHECK(jobs[0].text && strlen(jobs[0].text) > 0);
    for (int i = 1; i < 4; i++) CHECK_EQ_STR(jobs[i].text, jobs[0].text);
    CHECK_EQ_STR(again.text, jobs[0].text);
    lmx_gen_options o = seeded(1.0f, 32, 99);
    char *other = NULL;
    CHECK(lmx_generate(rt1, SLLAMA3, "Once upon a time", &o, &other, NULL) == LMX_OK);
    CHECK(other && jobs[0].text && strcmp(other, jobs[0].text) != 0);
    lmx_free(other);
    for (int i = 0; i < 4; i++) lmx_free(jobs[i].text);
    lmx_free(again.text);
    lmx_runtime_destroy(rt1);
    lmx_runtime_destroy(rt2);
}

static void test_stop_across_tokens(void) {
    lmx_runtime *rt = mkrt(3, 0, 256, 1);
    lmx_gen_options o = seeded(1.0f, 40, 11);
    pieces *ref = calloc(1, sizeof *ref);
    CHECK(lmx_generate_stream(rt, SQWEN, "Stop me", &o, on_piece, ref, NULL) == LMX_OK);
    /* the stop string: the last character of piece k-1 + the whole pieces k and k+1, i.e. it
     * spans three tokens and starts inside one */
    int k = ref->n >= 6 ? ref->n / 2 : -1;
    for (; k > 0 && k + 1 < ref->n; k++)
        if (ref->ends[k - 1] > (k >= 2 ? ref->ends[k - 2] : 0) && ref->ends[k] > ref->ends[k - 1] &&
            ref->ends[k + 1] > ref->ends[k])
            break;
    CHECK_MSG(k > 0 && k + 1 < ref->n, "no three non-empty pieces in \"%s\"", ref->text);
    if (k > 0 && k + 1 < ref->n) {
        size_t start = ref->ends[k - 1] - 1, end = ref->ends[k + 1];
        while (start > 0 && ((unsigned char)ref->text[start] & 0xC0) == 0x80) start--; /* a whole character */
        char stop[512];
        size_t sl = end - start;
        if (sl >= sizeof stop) sl = sizeof stop - 1;
        memcpy(stop, ref->text + start, sl);
        stop[sl] = '\0';
        const char *stops[2] = {"\x01never", stop};
        o.stop = stops;
        o.n_stop = 2;
        pieces *p = calloc(1, sizeof *p);
        lmx_gen_result r;
        CHECK(lmx_generate_stream(rt, SQWEN, "Stop me", &o, on_piece, p, &r) == LMX_OK);
        const char *at = strstr(ref->text, stop);
        size_t want = at ? (size_t)(at - ref->text) : 0;
        CHECK_EQ_INT(p->len, want);
        CHECK(strncmp(p->text, ref->text, want) == 0);
        CHECK(strstr(p->text, stop) == NULL);
        CHECK_EQ_INT(r.finish_reason, LMX_FINISH_STOP);
        /* non-streaming gives the same */
        char *text = NULL;
        CHECK(lmx_generate(rt, SQWEN, "Stop me", &o, &text, NULL) == LMX_OK);
        CHECK_EQ_STR(text, p->text);
        lmx_free(text);
        free(p);
    }
    free(ref);
    lmx_runtime_destroy(rt);
}

static void test_cancel(void) {
    lmx_runtime *rt = mkrt(3, 0, 256, 1);
    lmx_gen_options o = seeded(0.8f, 50, 5);
    pieces *p = calloc(1, sizeof *p);
    p->cancel_after = 3;
    lmx_gen_result r;
    int32_t *out = NULL;
    size_t n_out = 0;
    int32_t prompt[3] = {9707, 11, 1879};
    lmx_status st = lmx_generate_ids(rt, SQWEN, prompt, 3, &o, on_piece, p, &out, &n_out, &r);
    CHECK_EQ_INT(st, LMX_ERR_CANCELLED);
    CHECK_EQ_INT(r.finish_reason, LMX_FINISH_CANCELLED);
    CHECK_EQ_INT(p->n, 3); /* no callback after the one that said stop */
    CHECK(n_out >= 3 && n_out < 50);
    CHECK_EQ_INT(n_out, r.n_generated_tokens);
    lmx_free(out);
    /* the model stays usable */
    char *text = NULL;
    CHECK(lmx_generate(rt, SQWEN, "again", &o, &text, NULL) == LMX_OK);
    lmx_free(text);
    free(p);
    lmx_runtime_destroy(rt);
}

static void test_chat_template(void) {
    lmx_runtime *rt = mkrt(3, 0, 512, 1);
    lmx_message msgs[2] = {{"system", "You are terse."}, {"user", "Hi there"}};
    /* qwen3: ChatML, no BOS */
    const char *qwen_prompt = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                              "<|im_start|>assistant\n";
    /* llama3 (Meta-Llama-3 template): it writes BOS itself */
    const char *llama_prompt = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse."
                               "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                               "<|start_header_id|>assistant<|end_header_id|>\n\n";
    const char *models[2] = {QWEN, LLAMA32};
    const char *expect[2] = {qwen_prompt, llama_prompt};
    for (int k = 0; k < 2; k++) {
        lmx_gen_options o = seeded(0, 12, 0);
        pieces *p = calloc(1, sizeof *p);
        lmx_gen_result r;
        lmx_status st = lmx_chat_stream(rt, models[k], msgs, 2, &o, on_piece, p, &r);
        CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
        int32_t *ids = NULL, *out = NULL;
        size_t n = 0, n_out = 0;
        CHECK(lmx_tokenize(rt, models[k], expect[k], false, &ids, &n) == LMX_OK);
        CHECK_EQ_INT(r.n_prompt_tokens, n); /* the rendered prompt, no second BOS */
        CHECK(lmx_generate_ids(rt, models[k], ids, n, &o, NULL, NULL, &out, &n_out, NULL) == LMX_OK);
        char *dec = NULL;
        CHECK(lmx_detokenize(rt, models[k], out, n_out, &dec) == LMX_OK);
        CHECK_EQ_STR(p->text, dec);
        lmx_free(dec);
        lmx_free(ids);
        lmx_free(out);
        free(p);
    }
    /* the mlx-lm BOS rule, with a tokenizer whose post-processor adds BOS (llama2's <s>): text
     * that already starts with the BOS text gets no second one */
    char dir[1400], cmd[3000];
    variant(NOTOK, "bos-rule", dir, sizeof dir);
    snprintf(cmd, sizeof cmd, "ln -s '%s/tokenizer_fixtures/llama2/tokenizer.json' '%s/tokenizer_fixtures/llama2/tokenizer_config.json' '%s/'",
             LMX_BINARY_DIR, LMX_BINARY_DIR, dir);
    CHECK(system(cmd) == 0);
    int32_t *a = NULL, *b = NULL, *c = NULL;
    size_t na = 0, nb = 0, nc = 0;
    CHECK(lmx_tokenize(rt, dir, "Hello", true, &a, &na) == LMX_OK);
    CHECK(lmx_tokenize(rt, dir, "<s>Hello", true, &b, &nb) == LMX_OK);
    CHECK(lmx_tokenize(rt, dir, "Hello", false, &c, &nc) == LMX_OK);
    CHECK(na >= 2 && a[0] == 1);
    CHECK_EQ_INT(nb, na);
    CHECK(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    CHECK(nc + 1 == na && nc && memcmp(a + 1, c, nc * sizeof *c) == 0);
    lmx_free(a);
    lmx_free(b);
    lmx_free(c);
    lmx_runtime_destroy(rt);
}

static void test_eos_and_length(void) {
    lmx_runtime *rt = mkrt(4, 0, 256, 1);
    lmx_gen_options o = seeded(0, 10, 0);
    int32_t prompt[4] = {785, 3974, 13876, 3835};
    int32_t *out = NULL;
    size_t n_out = 0;
    lmx_gen_result r;
    CHECK(lmx_generate_ids(rt, SQWEN, prompt, 4, &o, NULL, NULL, &out, &n_out, &r) == LMX_OK);
    CHECK_EQ_INT(r.finish_reason, LMX_FINISH_LENGTH);
    CHECK_EQ_INT(n_out, 10);
    CHECK_EQ_INT(r.n_generated_tokens, 10);
    /* make the 4th greedy token an EOS id through generation_config.json: generation stops before
     * it and it is not reported */
    int stop_at = 3;
    for (int i = 0; i < stop_at; i++)
        if (out[i] == out[stop_at]) stop_at = i;
    char dir[1400], gc[256];
    variant(SQWEN, "eos-gen", dir, sizeof dir);
    snprintf(gc, sizeof gc, "{\"eos_token_id\": [%d, 5]}", out[stop_at]);
    replace_file(dir, "generation_config.json", gc);
    int32_t *out2 = NULL;
    size_t n2 = 0;
    CHECK(lmx_generate_ids(rt, dir, prompt, 4, &o, NULL, NULL, &out2, &n2, &r) == LMX_OK);
    CHECK_EQ_INT(r.finish_reason, LMX_FINISH_STOP);
    CHECK_EQ_INT(n2, stop_at);
    CHECK(n2 == (size_t)stop_at && memcmp(out2, out, n2 * sizeof *out) == 0);
    lmx_free(out2);
    /* precedence at the engine: generation_config.json > config.json > tokenizer eos_token */
    const lmx_engine *e = lmx_engine_lm();
    lmx_engine_load_opts lo = {.device = LMX_DEVICE_CPU, .use_mmap = true, .max_context = 64, .kv_cache = true};
    lmx_engine_model *m = NULL;
    lmx_model_facts info = {0}; /* no probe: open probes itself */
    CHECK(e->open(e->ctx, dir, &lo, &m, &info) == LMX_OK);
    CHECK_EQ_INT(info.n_eos, 2);
    CHECK_EQ_INT(info.eos_ids[0], out[stop_at]);
    e->close(m);
    replace_file(dir, "generation_config.json", "{\"temperature\": 0.6}");
    CHECK(e->open(e->ctx, dir, &lo, &m, &info) == LMX_OK);
    CHECK_EQ_INT(info.n_eos, 1);
    CHECK_EQ_INT(info.eos_ids[0], 151645); /* config.json */
    e->close(m);
    size_t cl = 0;
    char src[1400];
    snprintf(src, sizeof src, "%s/config.json", SQWEN);
    char *cfg = slurp(src, &cl);
    CHECK(cfg != NULL);
    char *p = cfg ? strstr(cfg, "\"eos_token_id\"") : NULL;
    CHECK(p != NULL);
    if (p) {
        memcpy(p, "\"xos_token_id\"", 14); /* drop it from config.json */
        replace_file(dir, "config.json", cfg);
        CHECK(e->open(e->ctx, dir, &lo, &m, &info) == LMX_OK);
        CHECK_EQ_INT(info.n_eos, 1);
        CHECK_EQ_INT(info.eos_ids[0], 2); /* the tokenizer's eos_token </s> */
        CHECK(info.has_chat_template && !info.no_tokenizer);
        e->close(m);
    }
    free(cfg);
    lmx_free(out);
    lmx_runtime_destroy(rt);
}

static void test_metrics_and_info(void) {
    lmx_runtime *rt = mkrt(3, 0, 300, 1);
    double t0 = (double)time(NULL);
    CHECK(lmx_model_load(rt, SQWEN, "q") == LMX_OK);
    lmx_model_info mi;
    CHECK(lmx_model_get_info(rt, "q", &mi) == LMX_OK);
    CHECK_EQ_STR(mi.model_id, "q");
    CHECK(strstr(mi.path, "tiny-qwen-q4") != NULL);
    CHECK_EQ_STR(mi.model_type, "qwen3");
    CHECK_EQ_INT(mi.n_layers, 2);
    CHECK_EQ_INT(mi.hidden_size, 64);
    CHECK_EQ_INT(mi.vocab_size, 32000);
    CHECK_EQ_INT(mi.quant_bits, 4);
    CHECK_EQ_INT(mi.group_size, 64);
    /* 32000 x 64 tied embedding + 2 layers (head_dim 128, intermediate 192) */
    CHECK(mi.n_params >= 32000LL * 64 && mi.n_params < 32000LL * 64 * 2);
    CHECK(mi.weight_bytes > 32000LL * 64 / 2 && mi.weight_bytes < 32000LL * 64 * 2);
    CHECK(mi.estimated_bytes > mi.weight_bytes);
    CHECK_EQ_INT(mi.device, LMX_DEVICE_CPU);
    CHECK_EQ_INT(mi.max_context, 300);
    CHECK(mi.loaded_at >= t0 - 1 && mi.loaded_at <= t0 + 60);
    CHECK(mi.last_access >= mi.loaded_at);
    CHECK_EQ_INT(mi.access_count, 1);
    lmx_gen_options o = seeded(0.7f, 16, 3);
    lmx_gen_result r;
    char *text = NULL;
    CHECK(lmx_generate(rt, "q", "Measure me please", &o, &text, &r) == LMX_OK);
    lmx_free(text);
    CHECK(r.ttft_ms > 0 && r.ttft_ms <= r.total_ms && r.total_ms < 60000);
    CHECK(r.tokens_per_second > 1 && r.tokens_per_second < 1e7);
    CHECK(r.prompt_tokens_per_second > 1);
    CHECK(r.n_prompt_tokens >= 3 && r.n_prompt_tokens <= 6);
    CHECK_EQ_INT(r.load_ms, 0);
    lmx_model_info mi2;
    CHECK(lmx_model_get_info(rt, "q", &mi2) == LMX_OK);
    CHECK_EQ_INT(mi2.access_count, 2);
    CHECK(mi2.last_access >= mi.last_access);
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, "q", &m) == LMX_OK);
    CHECK(m.load_ms > 0 && m.load_ms < 60000);
    CHECK_EQ_INT(m.n_loads, 1);
    CHECK_EQ_INT(m.n_inferences, 1);
    CHECK_EQ_INT(m.total_tokens, r.n_generated_tokens);
    CHECK_EQ_INT(m.total_prompt_tokens, r.n_prompt_tokens);
    CHECK_NEAR(m.avg_tokens_per_second, r.tokens_per_second, 1e-6 * r.tokens_per_second);
    CHECK_NEAR(m.avg_ttft_ms, r.ttft_ms, 1e-9 + 1e-6 * r.ttft_ms);
    CHECK_EQ_INT(m.current_memory_bytes, mi.estimated_bytes);
    lmx_metrics all;
    CHECK(lmx_metrics_get(rt, NULL, &all) == LMX_OK);
    CHECK(all.current_memory_bytes > 1 << 20); /* process RSS */
    CHECK(all.peak_memory_bytes >= all.current_memory_bytes);
    CHECK(all.avg_gpu_utilization == -1);       /* CPU: unknown */
    /* unload */
    CHECK(lmx_model_unload(rt, "q") == LMX_OK);
    CHECK(!lmx_model_is_loaded(rt, "q"));
    CHECK_EQ_INT(lmx_model_get_info(rt, "q", &mi), LMX_ERR_MODEL_NOT_FOUND);
    CHECK_EQ_INT(lmx_model_unload(rt, "q"), LMX_ERR_MODEL_NOT_FOUND);
    CHECK(lmx_metrics_get(rt, "q", &m) == LMX_OK);
    CHECK_EQ_INT(m.current_memory_bytes, 0);
    lmx_runtime_destroy(rt);
}

static void test_memory_eviction(void) {
    /* each model's estimate (weights + KV for the context) from a first runtime */
    lmx_runtime *rt = mkrt(3, 0, 128, 1);
    const char *models[3] = {SQWEN, SLLAMA32, SLLAMA3};
    int64_t est[3] = {0};
    for (int i = 0; i < 3; i++) {
        lmx_model_info mi;
        CHECK(lmx_model_load(rt, models[i], NULL) == LMX_OK);
        CHECK(lmx_model_get_info(rt, models[i], &mi) == LMX_OK);
        est[i] = mi.estimated_bytes;
    }
    lmx_runtime_destroy(rt);
    /* a budget whose 80 % holds any two of them, never all three */
    CHECK(est[2] > est[1] && est[1] > est[0]);
    int64_t budget80 = est[2] + est[1] + 1024;
    int64_t max_mem = budget80 * 5 / 4 + 4;
    rt = mkrt(3, max_mem, 128, 1);
    CHECK(lmx_model_load(rt, SQWEN, NULL) == LMX_OK);
    CHECK(lmx_model_load(rt, SLLAMA32, NULL) == LMX_OK);
    CHECK(lmx_model_load(rt, SQWEN, NULL) == LMX_OK); /* qwen is now the most recently used */
    CHECK(lmx_model_load(rt, SLLAMA3, NULL) == LMX_OK); /* evicts the LRU model, llama32, only */
    CHECK(!lmx_model_is_loaded(rt, SLLAMA32));
    CHECK(lmx_model_is_loaded(rt, SQWEN) && lmx_model_is_loaded(rt, SLLAMA3));
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK_EQ_INT(m.cache_evictions, 1);
    CHECK_EQ_INT(m.n_models_loaded, 2);
    /* generating with the evicted one reloads it (a miss) and evicts the LRU again (qwen) */
    char *t = NULL;
    lmx_gen_options o = seeded(0, 3, 0);
    CHECK(lmx_generate(rt, SLLAMA32, "x", &o, &t, NULL) == LMX_OK);
    lmx_free(t);
    CHECK(lmx_model_is_loaded(rt, SLLAMA32) && lmx_model_is_loaded(rt, SLLAMA3) && !lmx_model_is_loaded(rt, SQWEN));
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK_EQ_INT(m.cache_evictions, 2);
    CHECK_EQ_INT(m.cache_misses, 4);
    lmx_runtime_destroy(rt);
    /* a budget that can never hold the model: OUT_OF_MEMORY, nothing cached */
    rt = mkrt(3, est[2] / 2, 128, 1);
    CHECK_EQ_INT(lmx_model_load(rt, SLLAMA3, NULL), LMX_ERR_OUT_OF_MEMORY);
    CHECK(!lmx_model_is_loaded(rt, SLLAMA3));
    char *text = NULL;
    CHECK_EQ_INT(lmx_generate(rt, SLLAMA3, "x", NULL, &text, NULL), LMX_ERR_OUT_OF_MEMORY);
    CHECK(text == NULL);
    lmx_runtime_destroy(rt);
}

static void test_validation(void) {
    lmx_runtime *rt = mkrt(3, 0, 64, 1);
    char dir[1400], src[1400];
    size_t len = 0;
    /* a config whose shapes disagree with the tensors → VALIDATION_FAILED naming the tensor */
    variant(SQWEN, "bad-shape", dir, sizeof dir);
    snprintf(src, sizeof src, "%s/config.json", SQWEN);
    char *cfg = slurp(src, &len);
    char *p = cfg ? strstr(cfg, "\"intermediate_size\"") : NULL;
    CHECK(p != NULL);
    if (p) {
        p = strchr(p, ':');
        /* 192 → 320: the MLP tensors no longer match */
        char *num = p + 1;
        while (*num == ' ' || *num == '\t') num++;
        CHECK(strncmp(num, "192", 3) == 0);
        memcpy(num, "320", 3);
        replace_file(dir, "config.json", cfg);
        lmx_status st = lmx_model_load(rt, dir, NULL);
        CHECK_MSG(st == LMX_ERR_MODEL_VALIDATION_FAILED, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
        CHECK(strstr(lmx_last_error_detail(), "mlp") != NULL);
        CHECK(!lmx_model_is_loaded(rt, dir));
    }
    free(cfg);
    /* a truncated safetensors file → INVALID_MODEL_FORMAT */
    variant(SQWEN, "truncated", dir, sizeof dir);
    snprintf(src, sizeof src, "%s/model.safetensors", SQWEN);
    char *st_bytes = slurp(src, &len);
    CHECK(st_bytes != NULL);
    if (st_bytes) {
        write_file(dir, "model.safetensors", st_bytes, len / 2);
        lmx_status st = lmx_model_load(rt, dir, NULL);
        CHECK_MSG(st == LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
        CHECK(strstr(lmx_last_error_detail(), "model.safetensors") != NULL);
    }
    free(st_bytes);
    /* a broken tokenizer.json fails the load (validation before caching) */
    variant(SQWEN, "bad-tokenizer", dir, sizeof dir);
    replace_file(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2");
    lmx_status st = lmx_model_load(rt, dir, NULL);
    CHECK_MSG(st == LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
    CHECK(strstr(lmx_last_error_detail(), "tokenizer.json") != NULL);
    /* a missing directory */
    CHECK_EQ_INT(lmx_model_load(rt, "/nonexistent/model/dir", NULL), LMX_ERR_MODEL_NOT_FOUND);
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK_EQ_INT(m.n_models_loaded, 0);
    lmx_runtime_destroy(rt);
}

static void test_device(void) {
    lmx_config c = lmx_config_default();
    c.models_dir = g_tmp;
    c.device = LMX_DEVICE_GPU;
    c.max_context_length = 64;
    lmx_runtime *rt = NULL;
    CHECK(lmx_runtime_create(&c, &rt) == LMX_OK);
    lmx_status st = lmx_model_load(rt, SQWEN, NULL);
    if (!lmx_gpu_available()) {
        CHECK_EQ_INT(st, LMX_ERR_GPU_NOT_AVAILABLE);
        CHECK(!lmx_model_is_loaded(rt, SQWEN));
    }
    lmx_runtime_destroy(rt);
    c.device = LMX_DEVICE_AUTO; /* falls back to the CPU without a GPU */
    CHECK(lmx_runtime_create(&c, &rt) == LMX_OK);
    CHECK(lmx_model_load(rt, SQWEN, NULL) == LMX_OK);
    lmx_model_info mi;
    CHECK(lmx_model_get_info(rt, SQWEN, &mi) == LMX_OK);
    CHECK_EQ_INT(mi.device, lmx_gpu_available() ? LMX_DEVICE_GPU : LMX_DEVICE_CPU);
    lmx_runtime_destroy(rt);
}

static void test_no_tokenizer(void) {
    /* a golden fixture: weights and config only */
    lmx_runtime *rt = mkrt(3, 0, 64, 1);
    CHECK(lmx_model_load(rt, NOTOK, NULL) == LMX_OK);
    char *text = NULL;
    CHECK_EQ_INT(lmx_generate(rt, NOTOK, "hello", NULL, &text, NULL), LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error_detail(), "tokenizer") != NULL);
    lmx_message msg = {"user", "hi"};
    CHECK_EQ_INT(lmx_chat_stream(rt, NOTOK, &msg, 1, NULL, NULL, NULL, NULL), LMX_ERR_UNSUPPORTED);
    int32_t prompt[3] = {1, 2, 3}, *out = NULL;
    size_t n_out = 0;
    lmx_gen_options o = seeded(0, 5, 0);
    pieces *p = calloc(1, sizeof *p);
    CHECK(lmx_generate_ids(rt, NOTOK, prompt, 3, &o, on_piece, p, &out, &n_out, NULL) == LMX_OK);
    CHECK(n_out >= 1 && n_out <= 5);
    CHECK_EQ_INT(p->len, 0);
    char *dec = NULL;
    CHECK_EQ_INT(lmx_detokenize(rt, NOTOK, out, n_out, &dec), LMX_ERR_UNSUPPORTED);
    int32_t big = 1 << 20;
    CHECK_EQ_INT(lmx_generate_ids(rt, NOTOK, &big, 1, &o, NULL, NULL, NULL, NULL, NULL), LMX_ERR_INVALID_ARGUMENT);
    lmx_free(out);
    free(p);
    lmx_runtime_destroy(rt);
}

/* The prompt cache (issue 10): a 4-turn chat with a long system prompt on real tokenizers and chat
 * templates gives the same greedy replies with the cache on and off; from turn 2 on the previous
 * turn's prompt is served from the cache, rounded down to the prefill chunk (128 rows on the CPU:
 * the exact resume point). */
static void test_prompt_cache_chat(void) {
    char sys[4096] = "";
    for (int i = 0; i < 40; i++) strcat(sys, "Answer briefly and politely. ");
    static const char *users[4] = {"What is the capital of France?", "And of Italy?", "Which is larger?",
                                   "Thanks, bye."};
    const char *models[3] = {QWEN, LLAMA32, SLLAMA3};
    for (int k = 0; k < 3; k++) {
        char replies[2][4][1024];
        int cached[2][4], prompt[2][4];
        for (int on = 0; on < 2; on++) {
            lmx_config c = lmx_config_default();
            c.device = LMX_DEVICE_CPU;
            c.max_context_length = 1024;
            c.n_threads = 2;
            c.models_dir = g_tmp;
            c.prompt_cache_bytes = on ? -1 : 0;
            lmx_runtime *rt = NULL;
            CHECK(lmx_runtime_create(&c, &rt) == LMX_OK);
            if (!rt) return;
            lmx_message msgs[9];
            int n = 0;
            msgs[n++] = (lmx_message){"system", sys};
            for (int t = 0; t < 4; t++) {
                msgs[n++] = (lmx_message){"user", users[t]};
                lmx_gen_options o = seeded(0, 12, 0);
                o.ignore_eos = true;
                pieces *p = calloc(1, sizeof *p);
                lmx_gen_result r;
                lmx_status st = lmx_chat_stream(rt, models[k], msgs, n, &o, on_piece, p, &r);
                CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
                size_t len = p->len < sizeof replies[on][t] - 1 ? p->len : sizeof replies[on][t] - 1;
                memcpy(replies[on][t], p->text, len);
                replies[on][t][len] = '\0';
                free(p);
                cached[on][t] = r.cached_tokens;
                prompt[on][t] = r.n_prompt_tokens;
                msgs[n++] = (lmx_message){"assistant", replies[on][t]};
            }
            lmx_runtime_destroy(rt);
        }
        for (int t = 0; t < 4; t++) {
            CHECK_EQ_STR(replies[1][t], replies[0][t]);
            CHECK_EQ_INT(prompt[1][t], prompt[0][t]);
            CHECK_EQ_INT(cached[0][t], 0);
            int expect = 0;
            if (t > 0) {
                /* the previous turn (prompt and reply) stays in the pool and is reused at any position
                 * (a row's K/V do not depend on the step it ran in); at most all but the last token,
                 * and at least a good part of the history (templates may re-render its end) */
                expect = prompt[1][t] - 1;
                CHECK_MSG(cached[1][t] <= expect && cached[1][t] >= prompt[1][t - 1] / 2,
                          "%s turn %d: cached %d (prompt %d, previous %d)",
                          models[k], t, cached[1][t], prompt[1][t], prompt[1][t - 1]);
            } else {
                CHECK_EQ_INT(cached[1][t], 0);
            }
            (void)expect;
        }
        fprintf(stderr, "prompt cache %s: prompts %d %d %d %d, cached %d %d %d %d\n", models[k], prompt[1][0], prompt[1][1],
                prompt[1][2], prompt[1][3], cached[1][0], cached[1][1], cached[1][2], cached[1][3]);
    }
}

int main(void) {
    snprintf(QWEN, sizeof QWEN, "%s/qwen3-q4", LMX_ENGINE_MODELS);
    snprintf(LLAMA32, sizeof LLAMA32, "%s/llama32-q8", LMX_ENGINE_MODELS);
    snprintf(SQWEN, sizeof SQWEN, "%s/tiny-qwen-q4", LMX_ENGINE_MODELS);
    snprintf(SLLAMA32, sizeof SLLAMA32, "%s/tiny-llama32-q8", LMX_ENGINE_MODELS);
    snprintf(SLLAMA3, sizeof SLLAMA3, "%s/tiny-llama3-bf16", LMX_ENGINE_MODELS);
    snprintf(NOTOK, sizeof NOTOK, "%s/tests/fixtures/models/qwen3-q8-g32", LMX_SOURCE_DIR);
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/tokenizer.json", SLLAMA3);
    if (access(probe, R_OK) != 0) {
        SKIP("engine test models missing (%s): see engine_models_setup", LMX_ENGINE_MODELS);
        return lmx_test_summary();
    }
    setenv("LMX_LOG", "error", 1);
    lmx_log_set_level(LMX_LOG_ERROR);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/lmx-engine-XXXXXX");
    if (!mkdtemp(g_tmp)) return 1;
    RUN(test_lazy_load_counters);
    RUN(test_stream_equals_nonstream);
    RUN(test_seed_determinism);
    RUN(test_stop_across_tokens);
    RUN(test_cancel);
    RUN(test_chat_template);
    RUN(test_eos_and_length);
    RUN(test_metrics_and_info);
    RUN(test_memory_eviction);
    RUN(test_validation);
    RUN(test_device);
    RUN(test_no_tokenizer);
    RUN(test_prompt_cache_chat);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return lmx_test_summary();
}
