/* test_st_writer.c — the library safetensors writer, checked by reading its output back with the
 * reader (lmx_safetensors_open / lmx_weights_open) and by parsing the index JSON. */
#include "formats/st_writer.h"
#include "formats/safetensors.h"
#include "lmx_test.h"
#include "st_build.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdlib.h>

static int count_files(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, needle)) n++;
    closedir(d);
    return n;
}

static void test_single_file_roundtrip(void) {
    char buf[256];
    char *dir = st_tmpdir(buf, sizeof buf);
    CHECK(dir != NULL);
    if (!dir) return;
    lmx_st_writer *w = NULL;
    CHECK_EQ_INT(lmx_st_writer_create(&w), LMX_OK);
    float a[6] = {1, 2, 3, 4, 5, -6.5f};
    uint16_t b[4] = {0x3f80, 0x4000, 0xbf80, 0};
    uint32_t c[6] = {0xdeadbeef, 1, 2, 3, 4, 0xffffffff};
    int64_t s_scalar = -42;
    int64_t sa[2] = {2, 3}, sb[1] = {4}, sc[2] = {3, 2}, sz[2] = {0, 5};
    CHECK_EQ_INT(lmx_st_writer_add(w, "model.b", LMX_DTYPE_BF16, 1, sb, b), LMX_OK);
    CHECK_EQ_INT(lmx_st_writer_add(w, "model.a", LMX_DTYPE_F32, 2, sa, a), LMX_OK);
    CHECK_EQ_INT(lmx_st_writer_add(w, "packed \"q\"\\", LMX_DTYPE_U32, 2, sc, c), LMX_OK);
    CHECK_EQ_INT(lmx_st_writer_add(w, "scalar", LMX_DTYPE_I64, 0, NULL, &s_scalar), LMX_OK);
    CHECK_EQ_INT(lmx_st_writer_add(w, "empty", LMX_DTYPE_F16, 2, sz, NULL), LMX_OK);
    CHECK_EQ_INT(lmx_st_writer_set_metadata(w, "format", "pt"), LMX_OK);
    CHECK_EQ_INT(lmx_st_writer_set_metadata(w, "format", "mlx"), LMX_OK); /* replaced */
    CHECK_EQ_INT(lmx_st_writer_set_metadata(w, "note", "tab\there \"quoted\""), LMX_OK);
    CHECK_EQ_INT(lmx_st_writer_count(w), 5);
    CHECK_EQ_INT(lmx_st_writer_total_bytes(w), 24 + 8 + 24 + 8);
    /* bad additions */
    CHECK_EQ_INT(lmx_st_writer_add(w, "model.a", LMX_DTYPE_F32, 2, sa, a), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_st_writer_add(w, "__metadata__", LMX_DTYPE_F32, 2, sa, a), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_st_writer_add(w, "", LMX_DTYPE_F32, 2, sa, a), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_st_writer_add(w, "nodata", LMX_DTYPE_F32, 2, sa, NULL), LMX_ERR_INVALID_ARGUMENT);
    int64_t neg[1] = {-1};
    CHECK_EQ_INT(lmx_st_writer_add(w, "neg", LMX_DTYPE_F32, 1, neg, a), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_st_writer_add(w, "dims", LMX_DTYPE_F32, 9, sa, a), LMX_ERR_INVALID_ARGUMENT);

    char path[512];
    snprintf(path, sizeof path, "%s/one.safetensors", dir);
    CHECK_EQ_INT(lmx_st_writer_write_file(w, path, NULL), LMX_OK);
    lmx_st_writer_destroy(w);
    CHECK_EQ_INT(count_files(dir, ".tmp."), 0);

    lmx_safetensors *st = NULL;
    CHECK_EQ_INT(lmx_safetensors_open(path, true, &st), LMX_OK);
    if (st) {
        CHECK_EQ_INT(lmx_safetensors_count(st), 5);
        const lmx_tensor_view *v = lmx_safetensors_find(st, "model.a");
        CHECK(v && v->dtype == LMX_DTYPE_F32 && v->ndim == 2 && v->shape[0] == 2 && v->shape[1] == 3);
        CHECK(v && v->nbytes == sizeof a && memcmp(v->data, a, sizeof a) == 0);
        v = lmx_safetensors_find(st, "model.b");
        CHECK(v && v->dtype == LMX_DTYPE_BF16 && v->ndim == 1 && v->shape[0] == 4 && !memcmp(v->data, b, 8));
        v = lmx_safetensors_find(st, "packed \"q\"\\");
        CHECK(v && v->dtype == LMX_DTYPE_U32 && v->shape[0] == 3 && v->shape[1] == 2 && !memcmp(v->data, c, 24));
        v = lmx_safetensors_find(st, "scalar");
        CHECK(v && v->ndim == 0 && v->numel == 1 && !memcmp(v->data, &s_scalar, 8));
        v = lmx_safetensors_find(st, "empty");
        CHECK(v && v->ndim == 2 && v->shape[0] == 0 && v->shape[1] == 5 && v->nbytes == 0);
        CHECK_EQ_STR(lmx_safetensors_metadata(st, "format"), "mlx");
        CHECK_EQ_STR(lmx_safetensors_metadata(st, "note"), "tab\there \"quoted\"");
        /* header order is sorted by name and data follows it contiguously */
        CHECK_EQ_STR(lmx_safetensors_get(st, 0)->name, "empty");
        CHECK_EQ_STR(lmx_safetensors_get(st, 4)->name, "scalar");
        lmx_safetensors_close(st);
    }
    /* header length is padded to a multiple of 8 */
    char *raw = NULL;
    size_t len = 0;
    CHECK_EQ_INT(lmx_fs_read_file(path, 1 << 20, &raw, &len), LMX_OK);
    if (raw) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | (uint8_t)raw[i];
        CHECK_EQ_INT(n % 8, 0);
        CHECK_EQ_INT(len, 8 + n + 64);
        free(raw);
    }
    st_rmdir(dir);
}

/* ---- fill callbacks ---- */

typedef struct {
    atomic_int calls, misaligned;
    uint64_t row_bytes;
    int fail_at; /* calls at byte offset >= this fail (-1: never) */
} fill_ctx;

static uint8_t pattern(uint64_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

static lmx_status fill_pattern(void *vctx, const char *name, uint64_t offset, void *dst, size_t len) {
    fill_ctx *c = vctx;
    atomic_fetch_add(&c->calls, 1);
    if (offset % c->row_bytes || len % c->row_bytes) atomic_fetch_add(&c->misaligned, 1);
    if (c->fail_at >= 0 && offset >= (uint64_t)c->fail_at)
        return lmx_error(LMX_ERR_CANCELLED, "fill %s stopped at %llu", name, (unsigned long long)offset);
    uint8_t *d = dst;
    for (size_t i = 0; i < len; i++) d[i] = pattern(offset + i);
    return LMX_OK;
}

typedef struct {
    atomic_ullong last;
    atomic_int calls;
    uint64_t total;
} progress_ctx;

static void on_progress(void *vctx, uint64_t done, uint64_t total) {
    progress_ctx *p = vctx;
    uint64_t prev = atomic_load(&p->last);
    if (done < prev) p->total = 1; /* not monotonic: poison */
    atomic_store(&p->last, done);
    atomic_fetch_add(&p->calls, 1);
    if (p->total != 1) p->total = total;
}

static void test_fill_threads(void) {
    char buf[256];
    char *dir = st_tmpdir(buf, sizeof buf);
    CHECK(dir != NULL);
    if (!dir) return;
    lmx_st_writer *w = NULL;
    CHECK_EQ_INT(lmx_st_writer_create(&w), LMX_OK);
    int64_t shape[2] = {1000, 37}; /* 37-byte rows: chunks must never split one */
    fill_ctx fc = {.row_bytes = 37, .fail_at = -1};
    atomic_init(&fc.calls, 0);
    atomic_init(&fc.misaligned, 0);
    CHECK_EQ_INT(lmx_st_writer_add_fill(w, "big", LMX_DTYPE_U8, 2, shape, fill_pattern, &fc), LMX_OK);
    uint16_t small[3] = {1, 2, 3};
    int64_t s3[1] = {3};
    CHECK_EQ_INT(lmx_st_writer_add(w, "small", LMX_DTYPE_U16, 1, s3, small), LMX_OK);
    progress_ctx pc;
    atomic_init(&pc.last, 0);
    atomic_init(&pc.calls, 0);
    pc.total = 0;
    lmx_st_write_options o = {.threads = 4, .chunk_bytes = 1000, .progress = on_progress, .progress_ctx = &pc};
    char path[512];
    snprintf(path, sizeof path, "%s/fill.safetensors", dir);
    CHECK_EQ_INT(lmx_st_writer_write_file(w, path, &o), LMX_OK);
    CHECK(atomic_load(&fc.calls) >= 37); /* 1000 rows / 27 rows per chunk */
    CHECK_EQ_INT(atomic_load(&fc.misaligned), 0);
    CHECK_EQ_INT(atomic_load(&pc.last), 37000 + 6);
    CHECK_EQ_INT(pc.total, 37000 + 6);
    lmx_safetensors *st = NULL;
    CHECK_EQ_INT(lmx_safetensors_open(path, false, &st), LMX_OK);
    if (st) {
        const lmx_tensor_view *v = lmx_safetensors_find(st, "big");
        CHECK(v && v->nbytes == 37000);
        int bad = 0;
        for (size_t i = 0; v && i < v->nbytes; i++) bad += v->data[i] != pattern(i);
        CHECK_EQ_INT(bad, 0);
        v = lmx_safetensors_find(st, "small");
        CHECK(v && !memcmp(v->data, small, 6));
        lmx_safetensors_close(st);
    }

    /* a failing fill: the error comes back with its detail, and nothing is left behind */
    fc.fail_at = 20000;
    snprintf(path, sizeof path, "%s/fail.safetensors", dir);
    lmx_status s = lmx_st_writer_write_file(w, path, &o);
    CHECK_EQ_INT(s, LMX_ERR_CANCELLED);
    CHECK(strstr(lmx_last_error_detail(), "big") != NULL);
    CHECK(!lmx_fs_is_file(path));
    CHECK_EQ_INT(count_files(dir, ".tmp."), 0);
    /* an unwritable destination */
    CHECK_EQ_INT(lmx_st_writer_write_file(w, "/nonexistent-dir/x.safetensors", &o), LMX_ERR_IO);
    lmx_st_writer_destroy(w);
    st_rmdir(dir);
}

/* ---- sharding + index ---- */

static cJSON *read_json(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (lmx_fs_read_file(path, 1 << 20, &text, &len) != LMX_OK) return NULL;
    cJSON *j = lmx_json_parse(text, len, NULL);
    free(text);
    return j;
}

static void test_sharded_model(void) {
    char buf[256];
    char *dir = st_tmpdir(buf, sizeof buf);
    CHECK(dir != NULL);
    if (!dir) return;
    lmx_st_writer *w = NULL;
    CHECK_EQ_INT(lmx_st_writer_create(&w), LMX_OK);
    static float data[5][25];
    const char *names[5] = {"z.first", "a.second", "m.third", "b.fourth", "y.fifth"};
    int64_t shape[1] = {25};
    for (int i = 0; i < 5; i++) {
        for (int k = 0; k < 25; k++) data[i][k] = (float)(i * 100 + k);
        CHECK_EQ_INT(lmx_st_writer_add(w, names[i], LMX_DTYPE_F32, 1, shape, data[i]), LMX_OK);
    }
    CHECK_EQ_INT(lmx_st_writer_set_metadata(w, "format", "mlx"), LMX_OK);
    lmx_st_writer_set_total_parameters(w, 125);
    int n_shards = 0;
    /* 100-byte tensors, 250-byte limit → [z.first a.second] [m.third b.fourth] [y.fifth] */
    CHECK_EQ_INT(lmx_st_writer_write_model(w, dir, 250, NULL, &n_shards), LMX_OK);
    CHECK_EQ_INT(n_shards, 3);
    char path[512];
    snprintf(path, sizeof path, "%s/model-00002-of-00003.safetensors", dir);
    CHECK(lmx_fs_is_file(path));
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    cJSON *idx = read_json(path);
    CHECK(idx != NULL);
    if (idx) {
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(idx, "metadata");
        CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(md, "total_size")->valuedouble, 500);
        CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(md, "total_parameters")->valuedouble, 125);
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
        CHECK_EQ_INT(cJSON_GetArraySize(wm), 5);
        const char *prev = "";
        for (const cJSON *c = wm ? wm->child : NULL; c; c = c->next) {
            CHECK(strcmp(prev, c->string) < 0); /* sorted keys */
            prev = c->string;
        }
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(wm, "z.first")->valuestring, "model-00001-of-00003.safetensors");
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(wm, "a.second")->valuestring, "model-00001-of-00003.safetensors");
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(wm, "m.third")->valuestring, "model-00002-of-00003.safetensors");
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(wm, "b.fourth")->valuestring, "model-00002-of-00003.safetensors");
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(wm, "y.fifth")->valuestring, "model-00003-of-00003.safetensors");
        cJSON_Delete(idx);
    }
    lmx_weights *ws = NULL;
    CHECK_EQ_INT(lmx_weights_open(dir, true, &ws), LMX_OK);
    if (ws) {
        CHECK_EQ_INT(lmx_weights_count(ws), 5);
        CHECK_EQ_INT(lmx_weights_file_count(ws), 3);
        CHECK_EQ_INT(lmx_weights_total_bytes(ws), 500);
        for (int i = 0; i < 5; i++) {
            const lmx_tensor_view *v = lmx_weights_find(ws, names[i]);
            CHECK(v && v->nbytes == 100 && !memcmp(v->data, data[i], 100));
        }
        lmx_weights_close(ws);
    }
    st_rmdir(dir);

    /* no limit → one model.safetensors, index still written; a tensor larger than the limit gets
     * a shard of its own and no empty shard appears */
    dir = st_tmpdir(buf, sizeof buf);
    CHECK(dir != NULL);
    if (!dir) {
        lmx_st_writer_destroy(w);
        return;
    }
    CHECK_EQ_INT(lmx_st_writer_write_model(w, dir, 0, NULL, &n_shards), LMX_OK);
    CHECK_EQ_INT(n_shards, 1);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(lmx_fs_is_file(path));
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    CHECK(lmx_fs_is_file(path));
    CHECK_EQ_INT(lmx_st_writer_write_model(w, dir, 50, NULL, &n_shards), LMX_OK);
    CHECK_EQ_INT(n_shards, 5);
    lmx_weights *ws2 = NULL;
    CHECK_EQ_INT(lmx_weights_open(dir, true, &ws2), LMX_OK); /* the index selects the 5 new shards */
    if (ws2) {
        CHECK_EQ_INT(lmx_weights_file_count(ws2), 5);
        lmx_weights_close(ws2);
    }
    CHECK_EQ_INT(lmx_st_writer_write_model(w, "/nonexistent-dir", 0, NULL, NULL), LMX_ERR_IO);
    lmx_st_writer_destroy(w);
    st_rmdir(dir);
}

int main(void) {
    RUN(test_single_file_roundtrip);
    RUN(test_fill_threads);
    RUN(test_sharded_model);
    return lmx_test_summary();
}
