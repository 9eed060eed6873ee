/* test_engine_threads.c — 8 threads × 3 real tiny models (qwen3 q4, llama-3.2 q8, llama-3 bf16 with
 * real tokenizers) through lmx.h on the real engine: lazy loads racing on the same ids, seeded
 * generations, chat, tokenize/detokenize, info/metrics reads, and unloads of models other threads
 * are using (llama2 tokenizer, vocab 32000, so that a ThreadSanitizer build stays fast). Every generation must reproduce its single-threaded text byte for byte.
 * The ThreadSanitizer proof: built with -DLMX_TSAN=ON, `ctest -L tsan` (see README). */
#include "lmx.h"
#include "lmx_test.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define THREADS 8
#define ITERS 3

static char dirs[3][1024];
static char *expect_text[3], *expect_chat[3];
static const char *prompts[3] = {"Tell me", "A short story:", "Numbers 1 2 3"};

static lmx_gen_options opts(void) {
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 0.9f;
    o.sampling.top_k = 40;
    o.max_tokens = 6;
    o.seed = 77;
    o.use_seed = true;
    return o;
}

static int append(const char *t, size_t len, void *user) {
    char *buf = user;
    size_t have = strlen(buf);
    if (have + len >= 4096) return 1;
    memcpy(buf + have, t, len);
    buf[have + len] = '\0';
    return 0;
}

typedef struct worker {
    lmx_runtime *rt;
    int t;
    int bad;
} worker;

static void *run(void *arg) {
    worker *w = arg;
    lmx_gen_options o = opts();
    for (int i = 0; i < ITERS; i++) {
        int k = (w->t + i) % 3;
        char *text = NULL;
        lmx_status st = lmx_generate(w->rt, dirs[k], prompts[k], &o, &text, NULL);
        if (st != LMX_OK || strcmp(text, expect_text[k]) != 0) {
            fprintf(stderr, "thread %d model %d: %s %s\n", w->t, k, lmx_status_str(st), lmx_last_error_detail());
            w->bad++;
        }
        lmx_free(text);
        switch ((w->t + i) % 4) {
        case 0: { /* chat */
            lmx_message m = {"user", prompts[k]};
            char buf[4096];
            buf[0] = '\0';
            st = lmx_chat_stream(w->rt, dirs[k], &m, 1, &o, append, buf, NULL);
            if (st != LMX_OK || strcmp(buf, expect_chat[k]) != 0) w->bad++;
            break;
        }
        case 1: { /* tokenizer round trip */
            int32_t *ids = NULL;
            size_t n = 0;
            char *back = NULL;
            if (lmx_tokenize(w->rt, dirs[k], prompts[k], false, &ids, &n) != LMX_OK ||
                lmx_detokenize(w->rt, dirs[k], ids, n, &back) != LMX_OK || strcmp(back, prompts[k]) != 0)
                w->bad++;
            lmx_free(ids);
            lmx_free(back);
            break;
        }
        case 2: { /* readers */
            lmx_model_info mi;
            lmx_metrics m;
            if (lmx_model_get_info(w->rt, dirs[k], &mi) == LMX_OK && mi.n_layers != 2) w->bad++;
            if (lmx_metrics_get(w->rt, NULL, &m) != LMX_OK) w->bad++;
            (void)lmx_model_is_loaded(w->rt, dirs[(k + 1) % 3]);
            break;
        }
        default: /* unload a model others may be generating with (they keep it until they end) */
            if (w->t == 3 && i == 1) {
                lmx_status u = lmx_model_unload(w->rt, dirs[(k + 1) % 3]);
                if (u != LMX_OK && u != LMX_ERR_MODEL_NOT_FOUND) w->bad++;
            }
            break;
        }
    }
    return NULL;
}

int main(void) {
    const char *names[3] = {"tiny-qwen-q4", "tiny-llama32-q8", "tiny-llama3-bf16"};
    for (int k = 0; k < 3; k++) snprintf(dirs[k], sizeof dirs[k], "%s/%s", LMX_ENGINE_MODELS, names[k]);
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/tokenizer.json", dirs[2]);
    if (access(probe, R_OK) != 0) {
        SKIP("engine test models missing (%s): see engine_models_setup", LMX_ENGINE_MODELS);
        return lmx_test_summary();
    }
    lmx_log_set_level(LMX_LOG_ERROR);
    lmx_config c = lmx_config_default();
    c.device = LMX_DEVICE_CPU;
    c.max_context_length = 128;
    c.n_threads = 2;
    c.models_dir = "/nonexistent-lmx-models";
    lmx_runtime *rt = NULL;
    CHECK(lmx_runtime_create(&c, &rt) == LMX_OK);
    /* single-threaded references */
    lmx_gen_options o = opts();
    for (int k = 0; k < 3; k++) {
        CHECK(lmx_generate(rt, dirs[k], prompts[k], &o, &expect_text[k], NULL) == LMX_OK);
        lmx_message m = {"user", prompts[k]};
        expect_chat[k] = calloc(1, 4096);
        CHECK(lmx_chat_stream(rt, dirs[k], &m, 1, &o, append, expect_chat[k], NULL) == LMX_OK);
    }
    lmx_runtime_destroy(rt);
    /* a fresh runtime: the threads race on the first loads too */
    CHECK(lmx_runtime_create(&c, &rt) == LMX_OK);
    lmx_test_run++;
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (worker){rt, t, 0};
        CHECK(pthread_create(&th[t], NULL, run, &w[t]) == 0);
    }
    int bad = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        bad += w[t].bad;
    }
    CHECK_EQ_INT(bad, 0);
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    /* every generate/chat call finished and was counted */
    uint64_t chats = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < ITERS; i++) chats += (t + i) % 4 == 0;
    CHECK_EQ_INT(m.n_inferences, THREADS * ITERS + chats);
    CHECK(m.cache_misses >= 3);
    CHECK(m.n_models_loaded >= 1 && m.n_models_loaded <= 3);
    lmx_runtime_destroy(rt);
    for (int k = 0; k < 3; k++) {
        lmx_free(expect_text[k]);
        free(expect_chat[k]);
    }
    return lmx_test_summary();
}
