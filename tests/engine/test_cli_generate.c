/* test_cli_generate.c — `lmx generate`, `lmx run` and `lmx info` on a tiny real-shaped model
 * with a real tokenizer (and on a golden fixture without one): the --json contract with metrics,
 * text prompts, sampling options, stop strings, seeds, the chat template, the REPL and usage
 * errors. The library computes the expected outputs in-process. */
#include "lmx.h"
#include "lmx_test.h"
#include "lmx_test_cmd.h"
#include "util/json.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char QWEN[1024], LLAMA[1024], NOTOK[1024];

/* Runs a shell command; returns its stdout (malloc'd) and exit status. */
static char *run(const char *cmd, int *status) {
    char full[8192];
    snprintf(full, sizeof full, "LMX_LOG=error %s", cmd);
    return lmx_test_cmd(full, status);
}

static cJSON *run_json(const char *args, int *status) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s", LMX_CLI_PATH, args);
    char *out = run(cmd, status);
    cJSON *j = out && *status == 0 ? lmx_json_parse(out, strlen(out), NULL) : NULL;
    if (!j) fprintf(stderr, "command: %s\noutput: %s\n", cmd, out ? out : "(none)");
    free(out);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1e300;
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static lmx_runtime *mkrt(void) {
    lmx_config c = lmx_config_default();
    c.device = LMX_DEVICE_CPU;
    c.models_dir = "/nonexistent-lmx-models";
    lmx_runtime *rt = NULL;
    CHECK(lmx_runtime_create(&c, &rt) == LMX_OK);
    return rt;
}

static void test_generate_text_json(void) {
    int status;
    char args[2048];
    snprintf(args, sizeof args,
             "generate '%s' --prompt 'The weather today' --max-tokens 12 --temp 0.8 --top-k 30 --top-p 0.9 "
             "--min-p 0.02 --repetition-penalty 1.1 --seed 5 --threads 1 --device cpu --json",
             QWEN);
    cJSON *j = run_json(args, &status);
    CHECK_EQ_INT(status, 0);
    CHECK(j != NULL);
    if (!j) return;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "token_ids");
    CHECK(cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 12);
    CHECK_EQ_STR(str(j, "finish_reason"), "length");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "metrics");
    CHECK(cJSON_IsObject(m));
    CHECK(num(m, "ttft_ms") > 0 && num(m, "ttft_ms") <= num(m, "total_ms"));
    CHECK(num(m, "tokens_per_second") > 0);
    CHECK(num(m, "prompt_tokens_per_second") > 0);
    CHECK_EQ_INT(num(m, "n_generated_tokens"), 12);
    CHECK(num(m, "n_prompt_tokens") >= 2);
    CHECK(num(m, "load_ms") > 0);
    /* the same generation through the library: identical ids and text */
    lmx_runtime *rt = mkrt();
    lmx_gen_options o = lmx_gen_options_default();
    o.max_tokens = 12;
    o.sampling.temperature = 0.8f;
    o.sampling.top_k = 30;
    o.sampling.top_p = 0.9f;
    o.sampling.min_p = 0.02f;
    o.sampling.repetition_penalty = 1.1f;
    o.seed = 5;
    o.use_seed = true;
    char *text = NULL;
    lmx_gen_result r;
    CHECK(lmx_generate(rt, QWEN, "The weather today", &o, &text, &r) == LMX_OK);
    CHECK_EQ_STR(str(j, "text"), text);
    CHECK_EQ_INT(num(m, "n_prompt_tokens"), r.n_prompt_tokens);
    char *dec = NULL;
    int32_t got[12];
    for (int i = 0; i < 12 && cJSON_IsArray(ids); i++) got[i] = (int32_t)cJSON_GetArrayItem(ids, i)->valueint;
    CHECK(lmx_detokenize(rt, QWEN, got, 12, &dec) == LMX_OK);
    CHECK_EQ_STR(dec, text);
    lmx_free(dec);
    /* plain output streams the same text */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' generate '%s' --prompt 'The weather today' --max-tokens 12 --temp 0.8 --top-k 30 --top-p 0.9 "
             "--min-p 0.02 --repetition-penalty 1.1 --seed 5",
             LMX_CLI_PATH, QWEN);
    char *out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    size_t tl = text ? strlen(text) : 0;
    CHECK(out && text && strlen(out) == tl + 1 && !strncmp(out, text, tl) && out[tl] == '\n');
    free(out);
    /* a stop string: the output ends before it, finish_reason stop */
    size_t at3 = 0; /* three printable ASCII bytes (no quotes) past the first third */
    for (size_t i = tl / 3; text && i + 3 <= tl && !at3; i++) {
        bool ok = true;
        for (size_t k = 0; k < 3; k++) ok = ok && text[i + k] > 0x20 && text[i + k] < 0x7f && text[i + k] != '\'';
        if (ok) at3 = i;
    }
    CHECK_MSG(at3 > 0, "no ASCII run in \"%s\"", text ? text : "");
    if (at3 > 0) {
        char stop[4];
        memcpy(stop, text + at3, 3);
        stop[3] = '\0';
        char sargs[4096];
        snprintf(sargs, sizeof sargs,
                 "generate '%s' --prompt 'The weather today' --max-tokens 12 --temp 0.8 --top-k 30 --top-p 0.9 "
                 "--min-p 0.02 --repetition-penalty 1.1 --seed 5 --stop 'zzzzq' --stop '%s' --json",
                 QWEN, stop);
        cJSON *js = run_json(sargs, &status);
        CHECK(js != NULL);
        if (js) {
            const char *t2 = str(js, "text");
            const char *at = strstr(text, stop);
            CHECK(t2 && at && strlen(t2) == (size_t)(at - text) && !strncmp(t2, text, strlen(t2)));
            CHECK_EQ_STR(str(js, "finish_reason"), "stop");
            cJSON_Delete(js);
        }
    }
    lmx_free(text);
    lmx_runtime_destroy(rt);
    cJSON_Delete(j);
}

static void test_generate_ids_contract(void) {
    /* a model without tokenizer: ids in, ids out, text "" */
    int status;
    char args[2048];
    snprintf(args, sizeof args, "generate '%s' --prompt-ids 1,2,3 --max-tokens 5 --temp 0 --json", NOTOK);
    cJSON *j = run_json(args, &status);
    CHECK(j != NULL);
    if (j) {
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "token_ids")) == 5 ||
              !strcmp(str(j, "finish_reason"), "stop"));
        CHECK_EQ_STR(str(j, "text"), "");
        CHECK_EQ_INT(num(cJSON_GetObjectItemCaseSensitive(j, "metrics"), "n_prompt_tokens"), 3);
    }
    /* the same through lmx_generate_ids, greedy */
    lmx_runtime *rt = mkrt();
    int32_t prompt[3] = {1, 2, 3}, *out = NULL;
    size_t n = 0;
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 0;
    o.max_tokens = 5;
    CHECK(lmx_generate_ids(rt, NOTOK, prompt, 3, &o, NULL, NULL, &out, &n, NULL) == LMX_OK);
    const cJSON *ids = j ? cJSON_GetObjectItemCaseSensitive(j, "token_ids") : NULL;
    CHECK(ids && (size_t)cJSON_GetArraySize(ids) == n);
    for (size_t i = 0; ids && i < n && i < (size_t)cJSON_GetArraySize(ids); i++)
        CHECK_EQ_INT(cJSON_GetArrayItem(ids, (int)i)->valueint, out[i]);
    lmx_free(out);
    lmx_runtime_destroy(rt);
    cJSON_Delete(j);
    /* plain output without a tokenizer: the ids */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' generate '%s' --prompt-ids 1,2,3 --max-tokens 3 --temp 0", LMX_CLI_PATH, NOTOK);
    char *txt = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    int a, b, c;
    CHECK(txt && sscanf(txt, "%d %d %d", &a, &b, &c) == 3);
    free(txt);
    /* text prompt on a model without tokenizer: a clear error */
    snprintf(cmd, sizeof cmd, "'%s' generate '%s' --prompt hi 2>&1", LMX_CLI_PATH, NOTOK);
    txt = run(cmd, &status);
    CHECK_EQ_INT(status, 1);
    CHECK(txt && strstr(txt, "tokenizer"));
    free(txt);
    /* usage errors */
    const char *bad[] = {"generate", "generate X", "generate X --prompt a --prompt-ids 1", "generate X --prompt a --temp -1",
                         "generate X --prompt a --top-p 2", "generate X --prompt a --device tpu",
                         "generate X --prompt a --bogus 1", "generate X --prompt a --seed"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", LMX_CLI_PATH, bad[i]);
        free(run(cmd, &status));
        CHECK_MSG(status == 2, "%s: exit %d", bad[i], status);
    }
    /* forced GPU without CUDA */
    snprintf(cmd, sizeof cmd, "'%s' generate '%s' --prompt-ids 1 --max-tokens 1 --device gpu 2>&1", LMX_CLI_PATH, NOTOK);
    txt = run(cmd, &status);
    CHECK(status == 1 ? strstr(txt, "GPU") != NULL : status == 0);
    free(txt);
}

/* The two replies `lmx run LLAMA --system 'Be brief.' --temp 0 --max-tokens 8` must give to "What is
 * 2+2?" and then "And 3+3?" (the second turn sees the first reply), through lmx_chat_stream. */
static void two_turn_replies(char reply1[4096], char reply2[4096]) {
    lmx_runtime *rt = mkrt();
    lmx_message msgs[4] = {{"system", "Be brief."}, {"user", "What is 2+2?"}, {"assistant", ""}, {"user", "And 3+3?"}};
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 0;
    o.max_tokens = 8;
    int append(const char *, size_t, void *);
    reply1[0] = reply2[0] = '\0';
    CHECK(lmx_chat_stream(rt, LLAMA, msgs, 2, &o, append, reply1, NULL) == LMX_OK);
    msgs[2].content = reply1;
    CHECK(lmx_chat_stream(rt, LLAMA, msgs, 4, &o, append, reply2, NULL) == LMX_OK);
    lmx_runtime_destroy(rt);
}

static void test_run_and_info(void) {
    int status;
    char cmd[4096];
    /* one turn: the reply equals lmx_chat_stream with the same options */
    snprintf(cmd, sizeof cmd, "'%s' run '%s' 'What is 2+2?' --system 'Be brief.' --temp 0 --max-tokens 8", LMX_CLI_PATH,
             LLAMA);
    char *out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    char reply1[4096], reply2[4096];
    two_turn_replies(reply1, reply2);
    char want[8300];
    snprintf(want, sizeof want, "%s\n", reply1);
    CHECK_EQ_STR(out, want);
    free(out);
    /* the REPL: two messages on stdin, the second turn sees the first reply */
    snprintf(cmd, sizeof cmd,
             "printf 'What is 2+2?\\n\\nAnd 3+3?\\n/bye\\nignored\\n' | '%s' run '%s' --system 'Be brief.' --temp 0 "
             "--max-tokens 8",
             LMX_CLI_PATH, LLAMA);
    out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    char want2[8300];
    snprintf(want2, sizeof want2, "%s\n%s\n", reply1, reply2);
    CHECK_EQ_STR(out, want2);
    free(out);
    /* a model without a chat template: `run` continues the raw text (mlx-lm's fallback) */
    char notmpl[] = "/tmp/lmx-notmpl-XXXXXX";
    CHECK(mkdtemp(notmpl) != NULL);
    snprintf(cmd, sizeof cmd, "for f in '%s'/*; do ln -s \"$f\" '%s'/; done && rm '%s/chat_template.jinja'", QWEN,
             notmpl, notmpl);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "'%s' run '%s' 'Plain text' --temp 0 --max-tokens 8 2>/dev/null", LMX_CLI_PATH, notmpl);
    out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    lmx_runtime *rt = mkrt();
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 0;
    o.max_tokens = 8;
    char *raw = NULL;
    CHECK(lmx_generate(rt, notmpl, "Plain text", &o, &raw, NULL) == LMX_OK);
    snprintf(want, sizeof want, "%s\n", raw ? raw : "");
    CHECK_EQ_STR(out, want);
    lmx_message one = {"user", "Plain text"};
    CHECK_EQ_INT(lmx_chat_stream(rt, notmpl, &one, 1, &o, NULL, NULL, NULL), LMX_ERR_TEMPLATE);
    lmx_free(raw);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", notmpl);
    CHECK(system(cmd) == 0);
    lmx_runtime_destroy(rt);
    /* info --json */
    snprintf(cmd, sizeof cmd, "info '%s' --json", QWEN);
    cJSON *j = run_json(cmd, &status);
    CHECK(j != NULL);
    if (j) {
        CHECK_EQ_STR(str(j, "model_type"), "qwen3");
        CHECK_EQ_INT(num(j, "n_layers"), 2);
        CHECK_EQ_INT(num(j, "hidden_size"), 64);
        CHECK_EQ_INT(num(j, "vocab_size"), 32000);
        CHECK_EQ_INT(num(j, "quant_bits"), 4);
        CHECK_EQ_INT(num(j, "group_size"), 64);
        CHECK_EQ_STR(str(j, "quantization"), "q4 g64");
        CHECK(num(j, "n_params") > 32000.0 * 64);
        CHECK(num(j, "weight_bytes") > 0);
        CHECK_EQ_STR(str(j, "device"), "cpu");
        cJSON_Delete(j);
    }
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", LMX_CLI_PATH, LLAMA);
    out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    CHECK(out && strstr(out, "\nquantization q8 g64\n") && strstr(out, "llama"));
    free(out);
}

int append(const char *t, size_t len, void *user) {
    char *buf = user;
    size_t have = strlen(buf);
    if (have + len >= 4096) return 1;
    memcpy(buf + have, t, len);
    buf[have + len] = '\0';
    return 0;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

/* issue 15 item 9: one bad line does not end an interactive `lmx run`: invalid UTF-8 and an
 * over-long line are refused, a history that outgrows --ctx loses its oldest exchanges (said on
 * stderr), a message too long even alone is refused; the conversation goes on, exit status 0 */
static void test_run_keeps_conversation(void) {
    const char *base = getenv("TMPDIR");
    char dir[1024], in[1100], err[1100], cmd[4096];
    snprintf(dir, sizeof dir, "%s/lmx-repl-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) { CHECK(!"mkdtemp"); return; }
    snprintf(in, sizeof in, "%s/in.txt", dir);
    snprintf(err, sizeof err, "%s/err.txt", dir);
    FILE *f = fopen(in, "wb");
    fputs("What is 2+2?\n\xff\xfe not text\n", f);
    for (int i = 0; i < (1 << 20) + 10; i++) fputc('a', f); /* over the 1 MiB line limit */
    fputs("\nAnd 3+3?\n", f);
    fclose(f);
    /* the refused lines leave no trace: the replies are those of the two good messages alone */
    char reply1[4096], reply2[4096];
    two_turn_replies(reply1, reply2);
    int status;
    snprintf(cmd, sizeof cmd, "'%s' run '%s' --system 'Be brief.' --temp 0 --max-tokens 8 <'%s' 2>'%s'", LMX_CLI_PATH,
             LLAMA, in, err);
    char *out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    char want[8300];
    snprintf(want, sizeof want, "%s\n%s\n", reply1, reply2);
    CHECK_EQ_STR(out, want);
    free(out);
    char *e = slurp(err);
    CHECK(e && strstr(e, "not valid UTF-8") && strstr(e, "byte 0xFF at offset 0"));
    CHECK(e && strstr(e, "more than the 1048576-byte limit"));
    CHECK(e && strstr(e, "the conversation goes on"));
    free(e);
    /* a history that outgrows --ctx: the oldest exchanges go, every message gets a reply */
    f = fopen(in, "wb");
    fputs("What is 2+2?\nAnd 3+3?\nAnd 4+4?\nAnd 5+5?\nAnd 6+6?\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' run '%s' --system 'Be brief.' --temp 0 --max-tokens 8 --ctx 80 <'%s' 2>'%s'",
             LMX_CLI_PATH, LLAMA, in, err);
    out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(count_lines(out), 5);
    free(out);
    e = slurp(err);
    CHECK(e && strstr(e, "the conversation outgrew the context (--ctx 80); dropped the"));
    free(e);
    /* a message too long even alone is refused; the next one is answered */
    f = fopen(in, "wb");
    for (int i = 0; i < 300; i++) fputs("word ", f);
    fputs("\nWhat is 2+2?\n", f);
    fclose(f);
    out = run(cmd, &status);
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(count_lines(out), 1);
    CHECK(out && strlen(out) > 1);
    free(out);
    e = slurp(err);
    CHECK(e && strstr(e, "does not fit the context (--ctx 80) even alone"));
    free(e);
    unlink(in);
    unlink(err);
    rmdir(dir);
}

int main(void) {
    snprintf(QWEN, sizeof QWEN, "%s/tiny-qwen-q4", LMX_ENGINE_MODELS);
    snprintf(LLAMA, sizeof LLAMA, "%s/tiny-llama32-q8", LMX_ENGINE_MODELS);
    snprintf(NOTOK, sizeof NOTOK, "%s/tests/fixtures/models/llama-tiny", LMX_SOURCE_DIR);
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/tokenizer.json", QWEN);
    if (access(probe, R_OK) != 0) {
        SKIP("engine test models missing (%s): see engine_models_setup", LMX_ENGINE_MODELS);
        return lmx_test_summary();
    }
    lmx_log_set_level(LMX_LOG_ERROR);
    setenv("LMX_HOME", "/nonexistent-lmx-home", 1);
    RUN(test_generate_text_json);
    RUN(test_generate_ids_contract);
    RUN(test_run_and_info);
    RUN(test_run_keeps_conversation);
    return lmx_test_summary();
}
