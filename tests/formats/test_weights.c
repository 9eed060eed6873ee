/* test_weights.c — weight-file discovery in a model directory: index json, shards, the older
 * weights[.NN].safetensors names, adapters skipped, and the errors (missing file, tensor in the
 * wrong file, a tensor in two files, no weight files). */
#include "lmx_test.h"
#include "formats/safetensors.h"
#include "st_build.h"

#include <stdlib.h>
#include <sys/stat.h>

static const char *detail(void) { return lmx_last_error_detail(); }

static bool has(const char *needle) {
    if (strstr(detail(), needle)) return true;
    fprintf(stderr, "  detail lacks \"%s\": %s\n", needle, detail());
    return false;
}

/* Opens dir both ways; checks count and that every name in `names` is found with its value. */
static void expect_ok(const char *dir, size_t n_files, const char *const *names, const float *values, size_t n) {
    for (int m = 0; m < 2; m++) {
        lmx_weights *w = NULL;
        lmx_status s = lmx_weights_open(dir, m == 0, &w);
        CHECK_MSG(s == LMX_OK, "%s: %s", dir, detail());
        if (s != LMX_OK) continue;
        CHECK_EQ_INT(lmx_weights_file_count(w), n_files);
        CHECK_EQ_INT(lmx_weights_count(w), n);
        CHECK_EQ_INT(lmx_weights_total_bytes(w), 8 * n);
        for (size_t i = 0; i < n; i++) {
            const lmx_tensor_view *v = lmx_weights_find(w, names[i]);
            CHECK_MSG(v != NULL, "%s not found", names[i]);
            if (!v) continue;
            float out[2];
            CHECK(lmx_tensor_to_f32(v, 0, 2, out) == LMX_OK);
            CHECK(out[0] == values[i] && out[1] == values[i] + 1);
            CHECK(strncmp(v->file, dir, strlen(dir)) == 0);
        }
        for (size_t i = 0; i < lmx_weights_count(w); i++) CHECK(lmx_weights_get(w, i) != NULL);
        CHECK(lmx_weights_get(w, n) == NULL);
        CHECK(lmx_weights_find(w, "absent") == NULL);
        CHECK(lmx_weights_file_path(w, n_files) == NULL);
        for (size_t i = 1; i < n_files; i++) /* sorted by file name */
            CHECK(strcmp(lmx_weights_file_path(w, i - 1), lmx_weights_file_path(w, i)) < 0);
        lmx_weights_close(w);
    }
}

static void expect_err(const char *dir, lmx_status want, const char *a, const char *b, const char *c) {
    lmx_weights *w = (lmx_weights *)1;
    lmx_status s = lmx_weights_open(dir, true, &w);
    CHECK_MSG(s == want, "status %d, want %d (%s)", (int)s, (int)want, detail());
    CHECK(w == NULL);
    if (a) CHECK(has(a));
    if (b) CHECK(has(b));
    if (c) CHECK(has(c));
    if (s == LMX_OK) lmx_weights_close(w);
}

static void test_single_and_shards(void) {
    char dir[256];
    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    CHECK(st_write_one(dir, "model.safetensors", "model.norm.weight", 1) == 0);
    CHECK(st_write_text(dir, "config.json", "{}") == 0);
    const char *n1[] = {"model.norm.weight"};
    const float v1[] = {1};
    expect_ok(dir, 1, n1, v1, 1);
    st_rmdir(dir);

    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    CHECK(st_write_one(dir, "model-00002-of-00002.safetensors", "lm_head.weight", 5) == 0);
    CHECK(st_write_one(dir, "model-00001-of-00002.safetensors", "model.embed_tokens.weight", 3) == 0);
    const char *n2[] = {"lm_head.weight", "model.embed_tokens.weight"};
    const float v2[] = {5, 3};
    expect_ok(dir, 2, n2, v2, 2);
    /* with the index json; a stray file not in the index is then ignored */
    CHECK(st_write_text(dir, "model.safetensors.index.json",
                        "{\"metadata\":{\"total_size\":16},\"weight_map\":{"
                        "\"lm_head.weight\":\"model-00002-of-00002.safetensors\","
                        "\"model.embed_tokens.weight\":\"model-00001-of-00002.safetensors\"}}") == 0);
    CHECK(st_write_one(dir, "consolidated.safetensors", "lm_head.weight", 9) == 0);
    expect_ok(dir, 2, n2, v2, 2);
    st_rmdir(dir);
}

static void test_legacy_names_and_adapters(void) {
    char dir[256];
    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    CHECK(st_write_one(dir, "weights.safetensors", "a", 1) == 0);
    CHECK(st_write_one(dir, "adapters.safetensors", "a", 2) == 0);      /* would duplicate "a" */
    CHECK(st_write_one(dir, "adapter_model.safetensors", "a", 3) == 0);
    CHECK(st_write_one(dir, "._weights.safetensors", "a", 4) == 0);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/dir.safetensors", dir); /* a directory is not a weight file */
    CHECK(mkdir(sub, 0700) == 0);
    const char *n1[] = {"a"};
    const float v1[] = {1};
    expect_ok(dir, 1, n1, v1, 1);
    rmdir(sub);
    st_rmdir(dir);

    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    CHECK(st_write_one(dir, "weights.01.safetensors", "b", 2) == 0);
    CHECK(st_write_one(dir, "weights.00.safetensors", "a", 1) == 0);
    const char *n2[] = {"a", "b"};
    const float v2[] = {1, 2};
    expect_ok(dir, 2, n2, v2, 2);
    lmx_weights *w = NULL;
    CHECK(lmx_weights_open(dir, true, &w) == LMX_OK);
    if (w) {
        CHECK(strstr(lmx_weights_file_path(w, 0), "weights.00.safetensors") != NULL);
        CHECK_EQ_STR(lmx_weights_get(w, 0)->name, "a");
        CHECK_EQ_STR(lmx_weights_get(w, 1)->name, "b");
    }
    lmx_weights_close(w);
    lmx_weights_close(NULL);
    st_rmdir(dir);

    /* only adapters: no weight files */
    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    CHECK(st_write_one(dir, "adapters.safetensors", "a", 2) == 0);
    expect_err(dir, LMX_ERR_MODEL_NOT_FOUND, dir, "no *.safetensors", NULL);
    st_rmdir(dir);
}

static void test_index_errors(void) {
    char dir[256];
    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    CHECK(st_write_one(dir, "model-00001-of-00002.safetensors", "x.weight", 1) == 0);
    /* a file the index lists is absent */
    CHECK(st_write_text(dir, "model.safetensors.index.json",
                        "{\"weight_map\":{\"x.weight\":\"model-00001-of-00002.safetensors\","
                        "\"y.weight\":\"model-00002-of-00002.safetensors\"}}") == 0);
    expect_err(dir, LMX_ERR_MODEL_NOT_FOUND, "model-00002-of-00002.safetensors", "y.weight",
               "model.safetensors.index.json");
    /* a tensor the index places in a file that does not hold it */
    CHECK(st_write_one(dir, "model-00002-of-00002.safetensors", "z.weight", 2) == 0);
    expect_err(dir, LMX_ERR_MODEL_VALIDATION_FAILED, "tensor y.weight", "model-00002-of-00002.safetensors", NULL);
    /* malformed index, missing weight_map, non-string entry, escaping path, empty map */
    CHECK(st_write_text(dir, "model.safetensors.index.json", "{\"weight_map\":") == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "model.safetensors.index.json", NULL, NULL);
    CHECK(st_write_text(dir, "model.safetensors.index.json", "{\"metadata\":{}}") == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "weight_map", NULL, NULL);
    CHECK(st_write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x.weight\":3}}") == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "x.weight", NULL, NULL);
    CHECK(st_write_text(dir, "model.safetensors.index.json",
                        "{\"weight_map\":{\"x.weight\":\"../model-00001-of-00002.safetensors\"}}") == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "outside", "x.weight", NULL);
    CHECK(st_write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{}}") == 0);
    expect_err(dir, LMX_ERR_MODEL_NOT_FOUND, "model.safetensors.index.json", NULL, NULL);
    st_rmdir(dir);
}

static void test_set_errors(void) {
    char dir[256];
    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    expect_err(dir, LMX_ERR_MODEL_NOT_FOUND, dir, NULL, NULL); /* empty */
    /* one tensor in two files */
    CHECK(st_write_one(dir, "model-00001-of-00002.safetensors", "dup.weight", 1) == 0);
    CHECK(st_write_one(dir, "model-00002-of-00002.safetensors", "dup.weight", 2) == 0);
    expect_err(dir, LMX_ERR_MODEL_VALIDATION_FAILED, "dup.weight", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors");
    /* a broken file in the set is reported with its path */
    char path[512];
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(st_write_file(path, "\x40\0\0\0\0\0\0\0{}", 10) == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, path, "runs past the end", NULL);
    st_rmdir(dir);
    expect_err(dir, LMX_ERR_MODEL_NOT_FOUND, dir, NULL, NULL); /* gone */
    expect_err("/dev/null", LMX_ERR_MODEL_NOT_FOUND, "/dev/null", NULL, NULL);
    lmx_weights *w = NULL;
    CHECK(lmx_weights_open(NULL, true, &w) == LMX_ERR_INVALID_ARGUMENT);
}

/* a model-sized tensor count: every name found through the sorted lookup */
static void test_many_tensors(void) {
    enum { N = 1500 };
    static st_tensor t[N];
    static char names[N][48];
    static float vals[N][2];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.w%d.weight", i / 7, i % 7);
        vals[i][0] = (float)i, vals[i][1] = (float)i + 1;
        t[i] = (st_tensor){names[i], "F32", 2, {1, 2}, vals[i], 8};
    }
    char dir[256];
    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    size_t len;
    uint8_t *img = st_build(t, N, "{\"format\":\"mlx\"}", &len);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(st_write_file(path, img, len) == 0);
    free(img);
    lmx_weights *w = NULL;
    CHECK(lmx_weights_open(dir, true, &w) == LMX_OK);
    int missing = 0, wrong = 0;
    for (int i = 0; i < N && w; i++) {
        const lmx_tensor_view *v = lmx_weights_find(w, names[i]);
        float out[2];
        if (!v) missing++;
        else if (lmx_tensor_to_f32(v, 0, 2, out) != LMX_OK || out[0] != (float)i) wrong++;
    }
    CHECK_EQ_INT(missing, 0);
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(lmx_weights_total_bytes(w), 8 * N);
    lmx_weights_close(w);
    st_rmdir(dir);
}

/* issue 15 item 10: a model.safetensors that is not a regular file is named, not "no weight files";
 * a FIFO / device never blocks the open */
static void test_not_regular_named(void) {
    char dir[256], p[512], p2[512];
    if (!st_tmpdir(dir, sizeof dir)) { CHECK(!"mkdtemp"); return; }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(mkdir(p, 0700) == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "model.safetensors is a directory", NULL, NULL);
    rmdir(p);
    snprintf(p2, sizeof p2, "%s/loop.safetensors", dir);
    CHECK(symlink(p2, p) == 0 && symlink(p, p2) == 0); /* model -> loop -> model */
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "symlink loop", NULL, NULL);
    unlink(p);
    unlink(p2);
    CHECK(symlink("/dev/zero", p) == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "model.safetensors is a character device", NULL, NULL);
    unlink(p);
    CHECK(mkfifo(p, 0600) == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "is a FIFO", NULL, NULL);
    unlink(p);
    /* through an index: the shard is a FIFO / the index itself is a directory */
    CHECK(st_write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"model.safetensors\"}}") == 0);
    CHECK(mkfifo(p, 0600) == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "is a FIFO", "tensor x", NULL);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    unlink(p);
    CHECK(mkdir(p, 0700) == 0);
    expect_err(dir, LMX_ERR_IO, "is a directory", NULL, NULL);
    rmdir(p);
    /* an index nested deeper than the JSON parser's limit says so */
    char deep[3100] = "{\"weight_map\":";
    for (int i = 0; i < 1100; i++) strcat(deep, "[");
    CHECK(st_write_text(dir, "model.safetensors.index.json", deep) == 0);
    expect_err(dir, LMX_ERR_INVALID_MODEL_FORMAT, "nested deeper than the parser's limit", NULL, NULL);
    st_rmdir(dir);
}

int main(void) {
    RUN(test_not_regular_named);
    RUN(test_single_and_shards);
    RUN(test_legacy_names_and_adapters);
    RUN(test_index_errors);
    RUN(test_set_errors);
    RUN(test_many_tensors);
    return lmx_test_summary();
}
