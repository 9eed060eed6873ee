/* test_concurrency.c — 8 threads × 3 models through lmx.h on the fake engine, with a cache of 2
 * so that loads, hits, evictions, unloads and generations interleave. Every generation must
 * produce its model's exact text; counters must add up. Built with -DLMX_TSAN=ON it is the
 * ThreadSanitizer proof (ctest -L tsan). */
#include "lmx_test.h"
#include "fake_engine/fake_engine.h"
#include "runtime/runtime.h"

#include <pthread.h>
#include <stdlib.h>

#define THREADS 8
#define ITERS 25

static lmx_engine E;
static fake_engine_ctx C;
static char *tmp;
static char dirs[3][1200];
static const char *scripts[3] = {"Quick brown#", "jumps over#", "lazy dogs#"};
static const char *expect[3] = {"uick brown", "umps over", "azy dogs"};
static const char *prompts[3] = {"Q", "j", "l"};
static const char *ids[3] = {dirs[0], dirs[1], dirs[2]}; /* ids are directories: lazy loads work */

typedef struct worker {
    lmx_runtime *rt;
    int t;
    int ok, bad, gens;
} worker;

static int sink(const char *text, size_t len, void *user) {
    (void)text;
    *(size_t *)user += len;
    return 0;
}

static void *run(void *arg) {
    worker *w = arg;
    for (int i = 0; i < ITERS; i++) {
        int k = (w->t + i) % 3;
        lmx_gen_options o = lmx_gen_options_default();
        o.sampling.temperature = (i % 2) ? 0.0f : 0.8f; /* peak 10 + top_p .9: sampling keeps the script */
        o.seed = (uint64_t)(w->t * 1000 + i);
        o.use_seed = true;
        o.max_tokens = 64;
        lmx_status st;
        if (i % 5 == 4) {
            size_t n = 0;
            lmx_gen_result res;
            st = lmx_generate_stream(w->rt, ids[k], prompts[k], &o, sink, &n, &res);
            if (st == LMX_OK && n == strlen(expect[k]) && res.n_generated_tokens == (int)n) {
                w->ok++;
            } else {
                w->bad++;
                fprintf(stderr, "stream %s: %s: %s\n", ids[k], lmx_status_str(st), lmx_last_error_detail());
            }
        } else {
            if (i % 3 == 0 && (st = lmx_model_load(w->rt, dirs[k], NULL)) != LMX_OK) {
                w->bad++;
                fprintf(stderr, "load %s: %s: %s\n", ids[k], lmx_status_str(st), lmx_last_error_detail());
                continue;
            }
            char *text = NULL;
            st = lmx_generate(w->rt, ids[k], prompts[k], &o, &text, NULL);
            if (st == LMX_OK && strcmp(text, expect[k]) == 0) {
                w->ok++;
            } else {
                w->bad++;
                fprintf(stderr, "generate %s: %s: %s [%s]\n", ids[k], lmx_status_str(st), lmx_last_error_detail(),
                        text ? text : "");
            }
            lmx_free(text);
        }
        w->gens++;
        /* readers that race with everything else */
        lmx_model_info info;
        lmx_metrics m;
        (void)lmx_model_is_loaded(w->rt, ids[(k + 1) % 3]);
        (void)lmx_model_get_info(w->rt, ids[(k + 2) % 3], &info);
        lmx_metrics_get(w->rt, (i % 2) ? NULL : ids[k], &m);
        if (w->t == 0 && i % 7 == 6) lmx_model_unload(w->rt, ids[(k + 1) % 3]);
        if (w->t == 1 && i % 4 == 3) { /* limits change under everyone's feet */
            lmx_config c;
            lmx_config_get(w->rt, &c);
            c.max_cached_models = 1 + (i / 4) % 3;
            if (lmx_config_update(w->rt, &c) != LMX_OK) w->bad++;
        }
    }
    return NULL;
}

static void test_threads_models(void) {
    lmx_config cfg = lmx_config_default();
    cfg.max_cached_models = 2;
    cfg.max_context_length = 128;
    lmx_runtime *rt = NULL;
    CHECK(lmx_runtime_create_with_engine(&cfg, &E, &rt) == LMX_OK);
    if (!rt) return;
    atomic_store(&C.forward_delay_us, 50);
    atomic_store(&C.open_delay_ms, 1);
    worker w[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (worker){rt, t, 0, 0, 0};
        pthread_create(&th[t], NULL, run, &w[t]);
    }
    int ok = 0, bad = 0, gens = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        ok += w[t].ok;
        bad += w[t].bad;
        gens += w[t].gens;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(ok, THREADS * ITERS);
    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK_EQ_INT(m.n_inferences, gens);
    CHECK(m.cache_evictions > 0);
    lmx_config final;
    CHECK(lmx_config_get(rt, &final) == LMX_OK);
    CHECK(m.n_models_loaded <= final.max_cached_models);
    CHECK_EQ_INT(atomic_load(&C.live_models), m.n_models_loaded);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
    fprintf(stderr, "generations %d, hits %llu, misses %llu, evictions %llu\n", gens,
            (unsigned long long)m.cache_hits, (unsigned long long)m.cache_misses,
            (unsigned long long)m.cache_evictions);
    lmx_runtime_destroy(rt);
    CHECK_EQ_INT(atomic_load(&C.live_models), 0);
}

int main(void) {
    fake_engine_init(&E, &C);
    tmp = fake_tmpdir("conc");
    if (!tmp) return 1;
    for (int k = 0; k < 3; k++) {
        snprintf(dirs[k], sizeof dirs[k], "%s/m%d", tmp, k);
        char json[128];
        snprintf(json, sizeof json, "{\"script\":\"%s\"}", scripts[k]);
        fake_model_write(dirs[k], json);
    }
    RUN(test_threads_models);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
