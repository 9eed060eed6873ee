/* test_generate_device_sample.c — the generate loop over an engine with forward_sample (the GPU
 * sampling seam, engine/engine.h), on the CPU: a stand-in "device" wraps the fake engine and picks
 * tokens with the host sampler and the uniform it is given, declining (token -1, logits written)
 * on every third call. Checks: the same seed gives the same ids as the plain forward path for every
 * parameter set (the uniforms are drawn in the same sequence), the fallback steps are taken,
 * the penalty history reaches forward_sample, and a
 * stand-in that picks with the wrong uniform is noticed (the test can fail). */
#include "lmx_test.h"
#include "fake_engine/fake_engine.h"
#include "generate/generate.h"
#include "generate/sampler.h"

#include <stdlib.h>

static lmx_engine E;        /* the fake engine, forward only */
static lmx_engine EDEV;     /* the same with forward_sample */
static fake_engine_ctx C;
static char *tmp;
static int calls, declined, hist_ok, wrong_u;
static lmx_sampler *dev_sampler;

static lmx_status dev_forward_sample(lmx_engine_model *m, lmx_engine_kv *kv, const int32_t *ids, size_t n,
                                     const lmx_engine_sample *s, float *logits, int32_t *token) {
    *token = -1;
    lmx_status st = E.forward(m, kv, ids, n, logits);
    if (st != LMX_OK) return st;
    calls++;
    /* the history ends with the ids just run */
    if (s->history && s->n_history >= n && s->history[s->n_history - 1] == ids[n - 1]) hist_ok++;
    if (calls % 3 == 0) { /* decline: the caller samples the logits on the host */
        declined++;
        return LMX_OK;
    }
    float copy[FAKE_VOCAB];
    memcpy(copy, logits, sizeof copy);
    for (int i = 0; i < FAKE_VOCAB; i++) logits[i] = NAN; /* a decided step leaves no logits behind */
    double u = wrong_u ? (s->u < 0.5 ? s->u + 0.5 : s->u - 0.5) : s->u;
    return lmx_sampler_sample_u(dev_sampler, &s->sampling, copy, s->history, s->n_history, u, token);
}

static lmx_engine_model *open_model(const char *name, const char *json, lmx_model_facts *info) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    if (fake_model_write(dir, json) != 0) return NULL;
    lmx_engine_load_opts o = {.device = LMX_DEVICE_CPU, .use_mmap = true, .max_context = 256, .kv_cache = true};
    lmx_engine_model *m = NULL;
    if (E.open(E.ctx, dir, &o, &m, info) != LMX_OK) return NULL;
    return m;
}

static lmx_status run(const lmx_engine *e, lmx_engine_model *m, const lmx_model_facts *info, const lmx_gen_options *o,
                      bool no_kv, int32_t **ids, size_t *n) {
    const int32_t prompt[] = {'a', 'b', 'c', 'a', 'b'};
    lmx_generate_request r = {.engine = e, .model = m, .facts = info, .prompt = prompt, .n_prompt = 5, .opt = o,
                              .max_context = 200, .no_kv_cache = no_kv, .out_ids = ids, .n_out = n};
    lmx_gen_result res;
    return lmx_generate_run(&r, &res);
}

static void test_same_ids(void) {
    lmx_model_facts info;
    /* a flat-ish distribution: the draws depend on every uniform */
    lmx_engine_model *m =
        open_model("flat", "{\"script\":\"abcdefgh\", \"peak\": 1.5, \"second\": \"z\", \"second_logit\": 1.0}", &info);
    CHECK(m != NULL);
    if (!m) return;
    struct {
        float t, top_p, min_p, pen;
        int top_k;
    } sets[] = {{0, 0, 0, 0, 0},      {0, 0, 0, 1.3f, 0},     {1.0f, 0, 0, 0, 0},   {0.7f, 0.9f, 0, 0, 0},
                {1.0f, 0, 0.05f, 0, 0}, {1.0f, 0.95f, 0, 1.2f, 0}, {1.0f, 0, 0, 0, 40}, {2.0f, 0.99f, 0.01f, 1.1f, 5}};
    for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++)
        for (int nokv = 0; nokv < 2; nokv++) {
            lmx_gen_options o = lmx_gen_options_default();
            o.sampling.temperature = sets[k].t;
            o.sampling.top_p = sets[k].top_p;
            o.sampling.min_p = sets[k].min_p;
            o.sampling.repetition_penalty = sets[k].pen;
            o.sampling.top_k = sets[k].top_k;
            o.max_tokens = 60;
            o.ignore_eos = true;
            o.use_seed = true;
            o.seed = 11 + k;
            int32_t *a = NULL, *b = NULL;
            size_t na = 0, nb = 0;
            calls = declined = hist_ok = 0;
            CHECK(run(&E, m, &info, &o, nokv, &a, &na) == LMX_OK);
            CHECK_EQ_INT(calls, 0);
            CHECK(run(&EDEV, m, &info, &o, nokv, &b, &nb) == LMX_OK);
            CHECK_EQ_INT(na, 60);
            CHECK_EQ_INT(nb, na);
            CHECK_MSG(na == nb && a && b && memcmp(a, b, na * sizeof *a) == 0, "set %zu (no_kv %d): ids differ", k,
                      nokv);
            CHECK_EQ_INT(calls, 60); /* the prefill and 59 decode steps */
            CHECK(declined >= 19);
            CHECK_EQ_INT(hist_ok, calls);
            free(a);
            free(b);
        }
    E.close(m);
}

static void test_wrong_u(void) {
    lmx_model_facts info;
    lmx_engine_model *m =
        open_model("flat2", "{\"script\":\"abcdefgh\", \"peak\": 1.0, \"second\": \"z\", \"second_logit\": 0.9}", &info);
    CHECK(m != NULL);
    if (!m) return;
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 1.0f;
    o.sampling.top_p = 1.0f;
    o.max_tokens = 80;
    o.ignore_eos = true;
    o.use_seed = true;
    o.seed = 3;
    int32_t *a = NULL, *b = NULL, *c = NULL;
    size_t na = 0, nb = 0, nc = 0;
    CHECK(run(&E, m, &info, &o, false, &a, &na) == LMX_OK);
    calls = 0;
    CHECK(run(&EDEV, m, &info, &o, false, &b, &nb) == LMX_OK);
    CHECK(calls > 0);
    CHECK(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    /* a device that used another uniform would give other ids: the comparison above can fail */
    calls = 0;
    wrong_u = 1;
    CHECK(run(&EDEV, m, &info, &o, false, &c, &nc) == LMX_OK);
    wrong_u = 0;
    CHECK(calls > 0);
    CHECK(nc == na && memcmp(a, c, na * sizeof *a) != 0);
    free(a);
    free(b);
    free(c);
    E.close(m);
}

int main(void) {
    fake_engine_init(&E, &C);
    EDEV = E;
    EDEV.forward_sample = dev_forward_sample;
    tmp = fake_tmpdir("gendev");
    if (lmx_sampler_create(FAKE_VOCAB, &dev_sampler) != LMX_OK) return 1;
    RUN(test_same_ids);
    RUN(test_wrong_u);
    lmx_sampler_destroy(dev_sampler);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
