/* test_eos.c — EOS set precedence: generation_config.json > config.json > tokenizer. */
#include "lmx_test.h"
#include "fake_engine/fake_engine.h"
#include "model/eos.h"

#include <stdlib.h>

static char *tmp;

static void put(const char *dir, const char *name, const char *text) {
    char p[1300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static int read_ids(const char *sub, int32_t fallback, int32_t *ids) {
    char d[1200];
    snprintf(d, sizeof d, "%s/%s", tmp, sub);
    int n = -1;
    lmx_status st = lmx_eos_ids_read(d, fallback, ids, 16, &n);
    return st == LMX_OK ? n : -100 - (int)st;
}

static void test_precedence(void) {
    char d[1200];
    int32_t ids[16];
    /* llama-3 style: generation_config list overrides config int */
    snprintf(d, sizeof d, "%s/llama", tmp);
    fake_model_write(d, "{}");
    put(d, "config.json", "{\"eos_token_id\": 128001}");
    put(d, "generation_config.json", "{\"eos_token_id\": [128001, 128008, 128009, 128008]}");
    CHECK_EQ_INT(read_ids("llama", 2, ids), 3);
    CHECK(ids[0] == 128001 && ids[1] == 128008 && ids[2] == 128009);
    /* config only (int) */
    snprintf(d, sizeof d, "%s/cfg", tmp);
    fake_model_write(d, "{}");
    put(d, "config.json", "{\"eos_token_id\": 151645}");
    CHECK_EQ_INT(read_ids("cfg", 7, ids), 1);
    CHECK_EQ_INT(ids[0], 151645);
    /* generation_config falsy (0 / []) → config.json */
    put(d, "generation_config.json", "{\"eos_token_id\": []}");
    CHECK_EQ_INT(read_ids("cfg", 7, ids), 1);
    CHECK_EQ_INT(ids[0], 151645);
    /* nested text_config (multimodal configs) */
    snprintf(d, sizeof d, "%s/gemma", tmp);
    fake_model_write(d, "{}");
    put(d, "config.json", "{\"text_config\": {\"eos_token_id\": [1, 106]}}");
    CHECK_EQ_INT(read_ids("gemma", 5, ids), 2);
    CHECK(ids[0] == 1 && ids[1] == 106);
    /* neither → the tokenizer's */
    snprintf(d, sizeof d, "%s/none", tmp);
    fake_model_write(d, "{}");
    put(d, "config.json", "{\"model_type\": \"llama\"}");
    CHECK_EQ_INT(read_ids("none", 2, ids), 1);
    CHECK_EQ_INT(ids[0], 2);
    CHECK_EQ_INT(read_ids("none", -1, ids), 0);
    /* malformed generation_config.json: ignored, as transformers / mlx-lm do (issue 15 item 8) */
    put(d, "generation_config.json", "{oops");
    CHECK_EQ_INT(read_ids("none", 2, ids), 1);
    CHECK_EQ_INT(ids[0], 2);
    put(d, "generation_config.json", "[1, 2]"); /* not an object */
    CHECK_EQ_INT(read_ids("none", 2, ids), 1);
    /* ids that are no int32 are skipped, not converted (float-cast-overflow) */
    put(d, "generation_config.json", "{\"eos_token_id\": [1e300, -1e300, 2.5, 7]}");
    CHECK_EQ_INT(read_ids("none", 2, ids), 1);
    CHECK_EQ_INT(ids[0], 7);
    /* a duplicate key: the last value, as Python's json (issue 15 item 7) */
    put(d, "generation_config.json", "{\"eos_token_id\": 5, \"eos_token_id\": 9}");
    CHECK_EQ_INT(read_ids("none", 2, ids), 1);
    CHECK_EQ_INT(ids[0], 9);
    /* a 60 MB config.json (a big embedded table) is read: the limit is config.c's 64 MB, not 16 */
    put(d, "generation_config.json", "{}");
    char p[1300];
    snprintf(p, sizeof p, "%s/config.json", d);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs("{\"eos_token_id\": 11, \"pad\": \"", f);
        static char chunk[1 << 16];
        memset(chunk, 'x', sizeof chunk);
        for (int i = 0; i < 60 * 16; i++) fwrite(chunk, 1, sizeof chunk, f);
        fputs("\"}", f);
        fclose(f);
    }
    CHECK_EQ_INT(read_ids("none", 2, ids), 1);
    CHECK_EQ_INT(ids[0], 11);
}

int main(void) {
    tmp = fake_tmpdir("eos");
    if (!tmp) return 1;
    RUN(test_precedence);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
