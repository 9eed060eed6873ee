/* test_cli_bench.c — `lmx bench MODEL --device cpu --prompt 16 --gen 8 --reps N --json` on tiny
 * random-weight models (bf16 and q4): every field of the lmx-bench/1 schema (docs/BENCHMARKS.md) is
 * present with the right type, token counts are exact, rates are positive and consistent with the
 * times, the medians are medians of the runs, the command line is recorded, LMX_COMMIT is honoured;
 * the text table; usage errors. */
#include "lmx_test.h"
#include "lmx_test_cmd.h"
#include "util/json.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static double num(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}
static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static bool close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) + 1e-12; }

static void check_bench(const char *model, const char *dtype, const char *quantization, int quant_bits, int reps) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "LMX_LOG=error LMX_COMMIT=abc1234-test '%s' bench '%s/%s' --device cpu --prompt 16 --gen 8 --reps %d "
             "--threads 1 --seed 3 --json",
             LMX_CLI_PATH, LMX_ENGINE_MODELS, model, reps);
    int status = -1;
    char *out = lmx_test_cmd(cmd, &status);
    CHECK_EQ_INT(status, 0);
    cJSON *j = out ? lmx_json_parse(out, strlen(out), NULL) : NULL;
    CHECK(j != NULL);
    if (!j) {
        fprintf(stderr, "output: %s\n", out ? out : "(none)");
        free(out);
        return;
    }
    CHECK_EQ_STR(str(j, "schema"), "lmx-bench/1");
    const char *c = str(j, "command");
    CHECK(c && !strncmp(c, "lmx bench ", 10) && strstr(c, "--prompt 16 --gen 8") && strstr(c, model));
    CHECK(str(j, "lmx_version") && !strcmp(str(j, "lmx_version"), "0.1.0"));
    CHECK_EQ_STR(str(j, "commit"), "abc1234-test");
    CHECK(str(j, "date") && strlen(str(j, "date")) == 20);

    const cJSON *hw = get(j, "hardware"), *mo = get(j, "model"), *pa = get(j, "params"), *re = get(j, "results"),
                *runs = get(j, "runs");
    CHECK(cJSON_IsObject(hw) && cJSON_IsObject(mo) && cJSON_IsObject(pa) && cJSON_IsObject(re) && cJSON_IsArray(runs));
    CHECK_EQ_STR(str(hw, "device"), "cpu");
    CHECK(cJSON_IsNull(get(hw, "gpu_name")));
    CHECK(str(hw, "cpu_model") != NULL);
    CHECK(num(hw, "cpu_cores") >= 1);
    CHECK(num(hw, "threads") == 1);

    CHECK_EQ_STR(str(mo, "dtype"), dtype);
    CHECK(num(mo, "quant_bits") == quant_bits);
    CHECK_EQ_STR(str(mo, "quantization"), quantization);
    CHECK(num(mo, "n_layers") == 2);
    CHECK(num(mo, "hidden_size") == 64);
    CHECK(num(mo, "vocab_size") == 32000);
    CHECK(num(mo, "n_params") > 0 && num(mo, "weight_bytes") > 0);
    CHECK(num(mo, "num_attention_heads") >= 1 && num(mo, "num_key_value_heads") >= 1);
    CHECK(num(mo, "intermediate_size") > 0);
    CHECK(str(mo, "path") && strstr(str(mo, "path"), model));

    CHECK(num(pa, "prompt_tokens") == 16 && num(pa, "gen_tokens") == 8 && num(pa, "reps") == reps);
    CHECK(num(pa, "warmup_reps") == 1 && num(pa, "seed") == 3 && num(pa, "batch") == 1);

    double load = num(re, "load_s"), l2ft = num(re, "load_to_first_token_s");
    CHECK(load > 0 && l2ft > load);
    CHECK(num(re, "prefill_tok_s") > 0 && num(re, "decode_tok_s") > 0);
    CHECK(num(re, "prefill_ms") > 0 && num(re, "decode_ms") > 0 && num(re, "ttft_ms") >= num(re, "prefill_ms"));
    CHECK(close_rel(num(re, "effective_decode_gb_s"), num(mo, "weight_bytes") * num(re, "decode_tok_s") / 1e9, 1e-9));
    CHECK(num(re, "bytes_per_decode_token") == num(mo, "weight_bytes"));
    CHECK(cJSON_IsNull(get(re, "peak_device_bytes")));
    CHECK(num(re, "peak_rss_bytes") > 0);

    CHECK_EQ_INT(cJSON_GetArraySize(runs), reps + 1);
    double dec[16];
    int nd = 0;
    for (int i = 0; i < cJSON_GetArraySize(runs); i++) {
        const cJSON *r = cJSON_GetArrayItem(runs, i);
        CHECK(cJSON_IsTrue(get(r, "warmup")) == (i == 0));
        CHECK(num(r, "n_prompt_tokens") == 16); /* exact: EOS never cuts a run short */
        CHECK(num(r, "n_generated_tokens") == 8);
        CHECK(num(r, "prefill_ms") > 0 && num(r, "decode_ms") > 0);
        CHECK(num(r, "total_ms") >= num(r, "decode_ms") && num(r, "total_ms") >= num(r, "prefill_ms"));
        CHECK(close_rel(num(r, "prefill_tok_s"), 16 / (num(r, "prefill_ms") / 1e3), 1e-9));
        CHECK(close_rel(num(r, "decode_tok_s"), 7 / (num(r, "decode_ms") / 1e3), 1e-9));
        if (i > 0 && nd < 16) dec[nd++] = num(r, "decode_tok_s");
    }
    /* the reported decode rate is the median of the timed runs (not the warm-up) */
    if (nd == 3) {
        double lo = fmin(dec[0], fmin(dec[1], dec[2])), hi = fmax(dec[0], fmax(dec[1], dec[2]));
        double med = dec[0] + dec[1] + dec[2] - lo - hi;
        CHECK(close_rel(num(re, "decode_tok_s"), med, 1e-12));
    } else if (nd == 1) {
        CHECK(close_rel(num(re, "decode_tok_s"), dec[0], 1e-12));
    }
    cJSON_Delete(j);
    free(out);
}

static void test_json_bf16(void) { check_bench("tiny-llama3-bf16", "bf16", "none", 0, 1); }
static void test_json_q4_three_reps(void) { check_bench("tiny-qwen-q4", "q4", "q4 g64", 4, 3); }

static void test_text_table(void) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "LMX_LOG=error '%s' bench '%s/tiny-llama32-q8' --device cpu --prompt 16 --gen 8 --reps 1",
             LMX_CLI_PATH, LMX_ENGINE_MODELS);
    int status = -1;
    char *out = lmx_test_cmd(cmd, &status);
    CHECK_EQ_INT(status, 0);
    CHECK(out && strstr(out, "decode (tok/s)") && strstr(out, "prefill (tok/s)") && strstr(out, "load (s)") &&
          strstr(out, "q8 g64") && strstr(out, "commit unknown"));
    free(out);
}

static void test_usage_errors(void) {
    static const char *const bad[] = {"", "--gen 1", "--reps 0", "--device tpu", "--prompt x", "--bogus"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "'%s' bench %s%s%s %s 2>/dev/null", LMX_CLI_PATH, i ? "'" : "", i ? LMX_ENGINE_MODELS : "",
                 i ? "/tiny-qwen-q4'" : "", bad[i]);
        int status = -1;
        free(lmx_test_cmd(cmd, &status));
        CHECK_EQ_INT(status, 2);
    }
    /* a model that does not exist: a runtime failure (1), not a usage error */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' bench /nonexistent-lmx-model --device cpu 2>/dev/null", LMX_CLI_PATH);
    int status = -1;
    free(lmx_test_cmd(cmd, &status));
    CHECK_EQ_INT(status, 1);
}

int main(void) {
    char probe[2048];
    snprintf(probe, sizeof probe, "%s/tiny-qwen-q4/config.json", LMX_ENGINE_MODELS);
    if (access(probe, R_OK) != 0) {
        SKIP("no engine models in %s (real tokenizer fixtures absent)", LMX_ENGINE_MODELS);
        return lmx_test_summary();
    }
    RUN(test_json_bf16);
    RUN(test_json_q4_three_reps);
    RUN(test_text_table);
    RUN(test_usage_errors);
    return lmx_test_summary();
}
