/* test_generate.c — the prefill/decode loop over the fake engine: EOS, max_tokens, context,
 * stop strings across tokens with hold-back, cancellation, seeds, results. */
#include "lmx_test.h"
#include "fake_engine/fake_engine.h"
#include "generate/generate.h"

#include <pthread.h>
#include <stdlib.h>

static lmx_engine E;
static fake_engine_ctx C;
static char *tmp;

typedef struct log_t {
    char text[1024];
    size_t len;
    char pieces[64][32];
    int n;
    int cancel_after; /* return 1 on this piece (1-based), 0 = never */
} log_t;

static int on_piece(const char *t, size_t len, void *user) {
    log_t *l = user;
    if (l->len + len < sizeof l->text) {
        memcpy(l->text + l->len, t, len);
        l->len += len;
        l->text[l->len] = '\0';
    }
    if (l->n < 64) snprintf(l->pieces[l->n], sizeof l->pieces[0], "%.*s", (int)len, t);
    l->n++;
    return l->cancel_after && l->n >= l->cancel_after;
}

static lmx_engine_model *open_model(const char *name, const char *json, lmx_model_facts *info) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    if (fake_model_write(dir, json) != 0) return NULL;
    lmx_engine_load_opts o = {.device = LMX_DEVICE_CPU, .use_mmap = true, .max_context = 64, .kv_cache = true};
    lmx_engine_model *m = NULL;
    if (E.open(E.ctx, dir, &o, &m, info) != LMX_OK) return NULL;
    return m;
}

static lmx_status gen(lmx_engine_model *m, const lmx_model_facts *info, const char *prompt, const lmx_gen_options *o,
                      int max_context, log_t *log, lmx_gen_result *res) {
    int32_t ids[256];
    size_t n = strlen(prompt);
    for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)prompt[i];
    lmx_generate_request r = {.engine = &E, .model = m, .facts = info, .prompt = ids, .n_prompt = n, .opt = o,
                              .max_context = max_context, .fn = on_piece, .user = log};
    return lmx_generate_run(&r, res);
}

static lmx_gen_options greedy(void) {
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 0;
    return o;
}

static void test_greedy_eos(void) {
    lmx_model_facts info;
    lmx_engine_model *m = open_model("hello", "{\"script\":\"Quick brown#\"}", &info);
    CHECK(m != NULL);
    if (!m) return;
    lmx_gen_options o = greedy();
    log_t log = {0};
    lmx_gen_result res;
    CHECK(gen(m, &info, "Q", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "uick brown");
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_STOP);
    CHECK_EQ_INT(res.n_generated_tokens, 10); /* EOS not counted, not emitted */
    CHECK_EQ_INT(res.n_prompt_tokens, 1);
    CHECK(res.total_ms >= res.ttft_ms && res.ttft_ms >= 0);
    CHECK(res.tokens_per_second > 0);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
    /* max_tokens → LENGTH */
    o.max_tokens = 3;
    memset(&log, 0, sizeof log);
    CHECK(gen(m, &info, "Q", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "uic");
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_LENGTH);
    CHECK_EQ_INT(res.n_generated_tokens, 3);
    /* max_tokens 0: nothing */
    o.max_tokens = 0;
    memset(&log, 0, sizeof log);
    CHECK(gen(m, &info, "Q", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_INT(log.len, 0);
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_LENGTH);
    E.close(m);
}

/* ignore_eos (benchmarks): EOS is generated like any other token, the loop runs to max_tokens;
 * prefill_ms / decode_ms are filled and consistent with the rates. */
static void test_ignore_eos(void) {
    lmx_model_facts info;
    lmx_engine_model *m = open_model("hello_ie", "{\"script\":\"Quick brown#\"}", &info);
    CHECK(m != NULL);
    if (!m) return;
    lmx_gen_options o = greedy();
    CHECK(!o.ignore_eos); /* default: EOS ends the generation */
    o.ignore_eos = true;
    o.max_tokens = 14;
    log_t log = {0};
    lmx_gen_result res;
    CHECK(gen(m, &info, "Q", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_LENGTH);
    CHECK_EQ_INT(res.n_generated_tokens, 14); /* "uick brown" + EOS + "Qui" */
    CHECK(strncmp(log.text, "uick brown", 10) == 0);
    CHECK(strstr(log.text, "Qui") != NULL);
    CHECK(res.prefill_ms >= 0 && res.decode_ms >= 0);
    CHECK(res.decode_ms <= res.total_ms && res.prefill_ms <= res.ttft_ms + 1e-9);
    CHECK(res.prompt_tokens_per_second > 0 && res.tokens_per_second > 0);
    /* without max_tokens, ignore_eos runs until the context is full */
    o.max_tokens = -1;
    memset(&log, 0, sizeof log);
    CHECK(gen(m, &info, "Q", &o, 20, &log, &res) == LMX_OK);
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_LENGTH);
    CHECK_EQ_INT(res.n_generated_tokens, 20);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
    E.close(m);
}

static void test_stop_across_tokens_and_holdback(void) {
    lmx_model_facts info;
    lmx_engine_model *m = open_model("hello2", "{\"script\":\"Quick brown#\"}", &info);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    /* one byte per token: "row" spans three tokens */
    const char *stops[] = {"row"};
    lmx_gen_options o = greedy();
    o.stop = stops;
    o.n_stop = 1;
    log_t log = {0};
    lmx_gen_result res;
    CHECK(gen(m, &info, "Q", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "uick b");
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_STOP);
    for (int i = 0; i < log.n && i < 64; i++) CHECK(strchr(log.pieces[i], 'r') == NULL);
    /* stops that never complete: "w" is held until "n" arrives, then "wn" is released; "c" is
     * held until "k" */
    const char *stops2[] = {"wx", "cz"};
    o.stop = stops2;
    o.n_stop = 2;
    memset(&log, 0, sizeof log);
    CHECK(gen(m, &info, "Q", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "uick brown");
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_STOP);
    bool saw_wo = false, saw_lone_w = false;
    for (int i = 0; i < log.n && i < 64; i++) {
        if (!strcmp(log.pieces[i], "wn")) saw_wo = true;
        if (!strcmp(log.pieces[i], "w")) saw_lone_w = true;
    }
    CHECK(saw_wo && !saw_lone_w);
    CHECK(log.n == 8 && !strcmp(log.pieces[0], "u") && !strcmp(log.pieces[1], "i") && !strcmp(log.pieces[2], "ck"));
    E.close(m);
}

static void test_cancellation(void) {
    lmx_model_facts info;
    lmx_engine_model *m = open_model("hello3", "{\"script\":\"Quick brown#\"}", &info);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    lmx_gen_options o = greedy();
    log_t log = {0};
    log.cancel_after = 3;
    lmx_gen_result res;
    int fwd0 = atomic_load(&C.forward_calls);
    CHECK(gen(m, &info, "Q", &o, 64, &log, &res) == LMX_ERR_CANCELLED);
    CHECK_EQ_INT(log.n, 3); /* no callback after the one that asked to stop */
    CHECK_EQ_STR(log.text, "uic");
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_CANCELLED);
    CHECK_EQ_INT(res.n_generated_tokens, 3);
    CHECK_EQ_INT(atomic_load(&C.forward_calls) - fwd0, 3); /* prefill + 2 decode steps, none after */
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
    E.close(m);
}

static void test_context_limits(void) {
    lmx_model_facts info;
    lmx_engine_model *m = open_model("abc", "{\"script\":\"abcdefgh\"}", &info);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    lmx_gen_options o = greedy();
    log_t log = {0};
    lmx_gen_result res;
    CHECK(gen(m, &info, "abcde", &o, 4, &log, &res) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "5 tokens") && strstr(lmx_last_error_detail(), "4"));
    CHECK(gen(m, &info, "", &o, 4, &log, &res) == LMX_ERR_INVALID_ARGUMENT);
    /* context 4, prompt 1: positions 0..3 hold the prompt and 3 fed tokens; a 4th is sampled */
    o.max_tokens = -1;
    CHECK(gen(m, &info, "a", &o, 4, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "bcde");
    CHECK_EQ_INT(res.finish_reason, LMX_FINISH_LENGTH);
    CHECK_EQ_INT(res.n_generated_tokens, 4);
    /* a prompt exactly filling the context still yields one token */
    memset(&log, 0, sizeof log);
    CHECK(gen(m, &info, "abcd", &o, 4, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "e");
    /* bad options are refused before anything runs */
    o.sampling.temperature = -1;
    CHECK(gen(m, &info, "a", &o, 4, &log, &res) == LMX_ERR_INVALID_ARGUMENT);
    o = greedy();
    o.max_tokens = -5;
    CHECK(gen(m, &info, "a", &o, 4, &log, &res) == LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(atomic_load(&C.live_kv), 0);
    E.close(m);
}

typedef struct seed_job {
    lmx_engine_model *m;
    lmx_model_facts *info;
    uint64_t seed;
    log_t log;
} seed_job;

static void *seed_thread(void *arg) {
    seed_job *j = arg;
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 1.0f;
    o.sampling.top_p = 1.0f;
    o.max_tokens = 40;
    o.seed = j->seed;
    o.use_seed = true;
    lmx_gen_result res;
    gen(j->m, j->info, "a", &o, 64, &j->log, &res);
    return NULL;
}

static void test_seeded_generation(void) {
    lmx_model_facts info;
    /* peak 1.0: the scripted token is only mildly preferred, so sampling wanders */
    lmx_engine_model *m = open_model("soft", "{\"script\":\"abcdefghij\",\"peak\":1.0}", &info);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    seed_job jobs[5];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < 5; i++) {
        jobs[i].m = m;
        jobs[i].info = &info;
        jobs[i].seed = i == 4 ? 8 : 7;
    }
    seed_thread(&jobs[0]);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, seed_thread, &jobs[i + 1]);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK(jobs[0].log.len > 0);
    for (int i = 1; i < 4; i++) CHECK_EQ_STR(jobs[i].log.text, jobs[0].log.text);
    CHECK(strcmp(jobs[4].log.text, jobs[0].log.text) != 0);
    E.close(m);
}

static void test_repetition_penalty_changes_greedy(void) {
    lmx_model_facts info;
    /* after 'a' the target is 'a' (logit 1.0); 'z' always has 0.8 */
    lmx_engine_model *m = open_model("rep", "{\"script\":\"aab\",\"peak\":1.0,\"second\":\"z\",\"second_logit\":0.8}", &info);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    lmx_gen_options o = greedy();
    o.max_tokens = 3;
    log_t log = {0};
    lmx_gen_result res;
    CHECK(gen(m, &info, "a", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "aaa");
    /* penalty 2 over the prompt + generated history: 'a' 1.0 → 0.5 < 0.8 → 'z'; then both are
     * penalized ('a' 0.5 > 'z' 0.4) → 'a', 'a' */
    o.sampling.repetition_penalty = 2.0f;
    memset(&log, 0, sizeof log);
    CHECK(gen(m, &info, "a", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "zaa");
    /* a context of 0 tokens disables it */
    o.sampling.repetition_context = 0;
    memset(&log, 0, sizeof log);
    CHECK(gen(m, &info, "a", &o, 64, &log, &res) == LMX_OK);
    CHECK_EQ_STR(log.text, "aaa");
    E.close(m);
}

int main(void) {
    fake_engine_init(&E, &C);
    tmp = fake_tmpdir("gen");
    if (!tmp) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    RUN(test_greedy_eos);
    RUN(test_ignore_eos);
    RUN(test_stop_across_tokens_and_holdback);
    RUN(test_cancellation);
    RUN(test_context_limits);
    RUN(test_seeded_generation);
    RUN(test_repetition_penalty_changes_greedy);
    CHECK_EQ_INT(atomic_load(&C.live_models), 0);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
