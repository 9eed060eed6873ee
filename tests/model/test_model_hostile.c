/* test_model_hostile.c — real fixture models (tests/fixtures/models) with one config.json value
 * changed to something that parses but is degenerate. lmx_lm_open must answer a typed error naming
 * config.json — never load a model whose forward pass returns NaN. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmx_test.h"
#include "model/lm.h"
#include "util/fs.h"

#define FIXTURES LMX_SOURCE_DIR "/tests/fixtures/models"

/* A temp copy of fixture `name` (weights symlinked) whose config.json has `from` replaced by `to`. */
static char *patched(const char *name, const char *from, const char *to) {
    char src[1024], path[1200];
    snprintf(src, sizeof src, "%s/%s", FIXTURES, name);
    snprintf(path, sizeof path, "%s/config.json", src);
    char *text = NULL;
    size_t len = 0;
    if (lmx_fs_read_file(path, 1 << 20, &text, &len) != LMX_OK) return NULL;
    char *at = strstr(text, from);
    CHECK_MSG(at != NULL, "%s: \"%s\" not in config.json", name, from);
    char tmpl[] = "/tmp/lmx_hostile_XXXXXX";
    char *dir = mkdtemp(tmpl) ? strdup(tmpl) : NULL;
    if (!at || !dir) {
        free(text);
        free(dir);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        fclose(f);
    }
    free(text);
    static const char *const links[] = {"model.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        char a[1200], b[1200];
        snprintf(a, sizeof a, "%s/%s", src, links[i]);
        snprintf(b, sizeof b, "%s/%s", dir, links[i]);
        if (lmx_fs_is_file(a) && symlink(a, b) != 0) CHECK_MSG(0, "symlink %s", b);
    }
    return dir;
}

static void cleanup(char *dir) {
    if (!dir) return;
    char p[1200];
    static const char *const files[] = {"config.json", "model.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    free(dir);
}

static void expect_open_error(char *dir, lmx_status want, const char *detail) {
    if (!dir) return;
    lmx_lm *lm = NULL;
    lmx_status st = lmx_lm_open(dir, NULL, &lm);
    CHECK_MSG(st == want && !lm, "%s: %s (%s)", dir, lmx_status_str(st), lmx_last_error_detail());
    CHECK_MSG(strstr(lmx_last_error_detail(), detail) != NULL, "detail \"%s\" lacks \"%s\"", lmx_last_error_detail(),
              detail);
    lmx_lm_close(lm);
    cleanup(dir);
}

/* A longrope short factor of 1e-300 rounds to 0 in float: inv_freq = 1/0 = inf, and the model used
 * to load and answer NaN logits. */
static void test_rope_table_not_finite(void) {
    expect_open_error(patched("phi3-longrope", "\"short_factor\": [\n            1.0,", "\"short_factor\": [1e-300,"),
                      LMX_ERR_INVALID_MODEL_FORMAT, "rope");
}

/* Sanity: the unpatched fixture opens and gives finite logits (the helper copies correctly). */
static void test_unpatched_opens(void) {
    char *dir = patched("phi3-longrope", "\"model_type\"", "\"model_type\"");
    if (!dir) return;
    lmx_lm *lm = NULL;
    CHECK(lmx_lm_open(dir, NULL, &lm) == LMX_OK);
    lmx_kv *kv = NULL;
    if (lm && lmx_kv_create(lm, 8, &kv) == LMX_OK) {
        int v = lmx_lm_vocab_size(lm);
        float *logits = malloc((size_t)v * sizeof *logits);
        int32_t ids[] = {1, 2, 3};
        CHECK(lmx_lm_forward(lm, kv, ids, 3, logits) == LMX_OK);
        for (int i = 0; i < v; i++) CHECK(isfinite(logits[i]));
        free(logits);
    }
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    cleanup(dir);
}

/* A KV cache of about 2.8 x the machine's memory, each buffer 0.7 x of it: calloc hands out the
 * address space lazily, so this used to "succeed" and fail only once the cache filled (and a
 * 2^31-position cache aborted under ASan). Now a clear LMX_ERR_OUT_OF_MEMORY up front. */
static void test_kv_beyond_memory(void) {
    lmx_lm *lm = NULL;
    lmx_lm_options opt = {.n_threads = 1};
    CHECK(lmx_lm_open(FIXTURES "/llama-tiny", &opt, &lm) == LMX_OK);
    if (!lm) return;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double ram = (double)pages * (double)page;
    double per_pos = (double)lmx_lm_kv_bytes_per_position(lm);
    double ctx = 2.8 * ram / per_pos; /* 4 buffers (k, v of 2 layers) of 0.7 x RAM each */
    int sizes[] = {ctx < 2147483647.0 ? (int)ctx : 2147483647, 2147483647};
    for (int i = 0; i < 2; i++) {
        lmx_kv *kv = NULL;
        lmx_status st = lmx_kv_create(lm, sizes[i], &kv);
        CHECK_MSG(st == LMX_ERR_OUT_OF_MEMORY && !kv, "ctx %d: %s", sizes[i], lmx_status_str(st));
        CHECK_MSG(strstr(lmx_last_error_detail(), "memory") != NULL, "%s", lmx_last_error_detail());
        lmx_kv_destroy(kv);
    }
    /* the accounting returns to zero: an ordinary cache still fits afterwards, twice */
    for (int i = 0; i < 2; i++) {
        lmx_kv *kv = NULL;
        CHECK(lmx_kv_create(lm, 4096, &kv) == LMX_OK);
        lmx_kv_destroy(kv);
    }
    lmx_lm_close(lm);
}

int main(void) {
    RUN(test_unpatched_opens);
    RUN(test_rope_table_not_finite);
    RUN(test_kv_beyond_memory);
    return lmx_test_summary();
}
