/* test_safetensors.c — one safetensors file: valid images round-trip (dtypes, shapes, unaligned data,
 * metadata, padding, gaps), every malformed input gives LMX_ERR_INVALID_MODEL_FORMAT with a detail
 * naming the file and the tensor, and mmap/read-in give identical views. */
#include "lmx_test.h"
#include "formats/safetensors.h"
#include "st_build.h"

#include <stdint.h>
#include <stdlib.h>

static const char *detail(void) { return lmx_last_error_detail(); }

/* ---- valid files ---- */

static void test_roundtrip_multi_dtype(void) {
    float f32[6] = {1.5f, -2.25f, 3e-8f, 65504.f, -0.f, 1e30f};
    uint16_t f16[3] = {0x3c00, 0xc000, 0x0001}; /* 1, -2, smallest subnormal */
    uint16_t bf16[4] = {0x3f80, 0xbf80, 0x7f80, 0x4049};
    uint32_t u32[2] = {0xdeadbeefu, 7};
    int8_t i8[5] = {-128, -1, 0, 1, 127};
    uint8_t u8[3] = {1, 2, 3};
    int64_t i64[1] = {-1234567890123LL};
    uint8_t b[2] = {1, 0};
    float scalar = 42.f;
    st_tensor t[] = {
        {"model.embed_tokens.weight", "F32", 2, {2, 3}, f32, sizeof f32},
        {"h", "F16", 1, {3}, f16, sizeof f16},
        {"b.bf16", "BF16", 2, {2, 2}, bf16, sizeof bf16},
        {"q.weight", "U32", 2, {1, 2}, u32, sizeof u32},
        {"i8", "I8", 1, {5}, i8, sizeof i8},
        {"u8", "U8", 3, {1, 1, 3}, u8, sizeof u8},
        {"i64", "I64", 1, {1}, i64, sizeof i64},
        {"bool", "BOOL", 1, {2}, b, sizeof b},
        {"scalar", "F32", 0, {0}, &scalar, sizeof scalar},
        {"empty", "BF16", 2, {0, 4}, NULL, 0},
    };
    size_t n = sizeof t / sizeof t[0];
    for (int variant = 0; variant < 3; variant++) {
        size_t gap = variant == 1 ? 3 : 0, pad = variant == 2 ? 5 : 0, len;
        uint8_t *img = st_build_ex(t, n, "{\"format\":\"mlx\",\"note\":\"h\\u00e9\"}", gap, pad, &len);
        lmx_safetensors *st = NULL;
        lmx_status s = lmx_safetensors_open_memory(img, len, "mem.safetensors", &st);
        CHECK_MSG(s == LMX_OK, "variant %d: %s", variant, detail());
        if (s != LMX_OK) {
            free(img);
            continue;
        }
        CHECK_EQ_INT(lmx_safetensors_count(st), n);
        CHECK_EQ_STR(lmx_safetensors_metadata(st, "format"), "mlx");
        CHECK_EQ_STR(lmx_safetensors_metadata(st, "note"), "h\xc3\xa9");
        CHECK(lmx_safetensors_metadata(st, "absent") == NULL);
        CHECK_EQ_INT(lmx_safetensors_metadata_count(st), 2);
        CHECK_EQ_STR(lmx_safetensors_metadata_key(st, 0), "format");
        CHECK_EQ_STR(lmx_safetensors_path(st), "mem.safetensors");
        bool any_unaligned = false;
        for (size_t i = 0; i < n; i++) {
            const lmx_tensor_view *v = lmx_safetensors_get(st, i);
            CHECK_EQ_STR(v->name, t[i].name); /* header order */
            CHECK(lmx_safetensors_find(st, t[i].name) == v);
            CHECK_EQ_STR(v->file, "mem.safetensors");
            CHECK_EQ_STR(lmx_dtype_name(v->dtype), t[i].dtype);
            CHECK_EQ_INT(v->ndim, t[i].ndim);
            int64_t numel = 1;
            for (int d = 0; d < v->ndim; d++) {
                CHECK_EQ_INT(v->shape[d], t[i].shape[d]);
                numel *= t[i].shape[d];
            }
            CHECK_EQ_INT(v->numel, numel);
            CHECK_EQ_INT(v->nbytes, t[i].nbytes);
            CHECK(v->data >= img && v->data + v->nbytes <= img + len);
            if (t[i].nbytes) CHECK(memcmp(v->data, t[i].data, t[i].nbytes) == 0);
            if (((uintptr_t)v->data & 3) && v->nbytes) any_unaligned = true;
        }
        CHECK(any_unaligned);
        CHECK(lmx_safetensors_get(st, n) == NULL);
        CHECK(lmx_safetensors_find(st, "nope") == NULL);
        CHECK(lmx_safetensors_find(st, "") == NULL);

        float out[6];
        const lmx_tensor_view *v = lmx_safetensors_find(st, "model.embed_tokens.weight");
        CHECK(lmx_tensor_to_f32(v, 0, 6, out) == LMX_OK);
        CHECK(memcmp(out, f32, sizeof f32) == 0);
        v = lmx_safetensors_find(st, "h");
        CHECK(lmx_tensor_to_f32(v, 0, 3, out) == LMX_OK);
        CHECK(out[0] == 1.f && out[1] == -2.f && out[2] == ldexpf(1.f, -24));
        v = lmx_safetensors_find(st, "b.bf16");
        CHECK(lmx_tensor_to_f32(v, 1, 3, out) == LMX_OK);
        CHECK(out[0] == -1.f && isinf(out[1]) && out[2] == 3.140625f);
        v = lmx_safetensors_find(st, "scalar");
        CHECK(v->ndim == 0 && v->numel == 1);
        CHECK(lmx_tensor_to_f32(v, 0, 1, out) == LMX_OK && out[0] == 42.f);
        lmx_safetensors_close(st);
        free(img);
    }
}

static void test_minimal_files(void) {
    const char *ok[] = {"{}", "{\"__metadata__\":{\"format\":\"pt\"}}", "{\"__metadata__\":null}", "{}      ",
                        "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                        "{\"x\":{\"shape\":[1],\"data_offsets\":[4,6],\"dtype\":\"U16\",\"extra\":1}}"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t len;
        uint8_t *img = st_raw(ok[i], 8, &len);
        lmx_safetensors *st = NULL;
        CHECK_MSG(lmx_safetensors_open_memory(img, len, "min.st", &st) == LMX_OK, "%s: %s", ok[i], detail());
        lmx_safetensors_close(st);
        free(img);
    }
    /* empty data region */
    size_t len;
    uint8_t *img = st_raw("{}", 0, &len);
    lmx_safetensors *st = NULL;
    CHECK(lmx_safetensors_open_memory(img, len, "e", &st) == LMX_OK);
    CHECK_EQ_INT(lmx_safetensors_count(st), 0);
    CHECK(lmx_safetensors_find(st, "x") == NULL);
    CHECK(lmx_safetensors_metadata(st, "format") == NULL);
    lmx_safetensors_close(st);
    free(img);
    lmx_safetensors_close(NULL);
}

/* ---- malformed files ---- */

typedef struct {
    const char *what;
    const char *hdr;
    size_t data_len;
    const char *tensor; /* must appear in the detail (NULL: file-level error) */
    const char *also;   /* another substring the detail must contain */
} bad_case;

static const bad_case bad_cases[] = {
    {"out of range", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "w", "data region"},
    {"begin > end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8, "w", "begin > end"},
    {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "b", "overlap tensor a"},
    {"overlap reversed", "{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
                         "\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}", 16, "b", "overlap"},
    {"same range", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8, "a", "overlap"},
    {"shape/byte mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16, "w", "3 F32"},
    {"dtype size mismatch", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, "w", "span 16"},
    {"F8", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8, "w",
     "dtype F8_E4M3 is not supported"},
    {"F8_E5M2", "{\"w\":{\"dtype\":\"F8_E5M2\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8, "w", "F8_E5M2"},
    {"F4", "{\"w\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", 8, "w", "dtype F4 is not"},
    {"C64", "{\"w\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "w", "C64"},
    {"lowercase dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "w", "not supported"},
    {"dtype not string", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "w", "dtype"},
    {"duplicate key", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 8, "w", "twice"},
    {"duplicate field", "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 8, "w",
     "twice"},
    {"fractional dim", "{\"w\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,2]}}", 8, "w", "shape[0]"},
    {"negative dim", "{\"w\":{\"dtype\":\"U8\",\"shape\":[2,-1],\"data_offsets\":[0,2]}}", 8, "w", "shape[1]"},
    {"string dim", "{\"w\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]}}", 8, "w", "shape[0]"},
    {"huge dim", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1e300],\"data_offsets\":[0,2]}}", 8, "w", "shape[0]"},
    {"2^62 dim", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4611686018427387904],\"data_offsets\":[0,2]}}", 8, "w",
     "larger than 2^53"},
    {"shape not array", "{\"w\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", 8, "w", "shape"},
    {"too many dims", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 8, "w",
     "dimensions"},
    {"shape overflow", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
                       "\"data_offsets\":[0,1]}}", 8, "w", "overflow"},
    {"byte overflow", "{\"w\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", 8, "w",
     "span 8"},
    {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 8, "w", "missing \"dtype\""},
    {"missing shape", "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 8, "w", "missing \"shape\""},
    {"missing offsets", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 8, "w", "missing \"data_offsets\""},
    {"offsets arity", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 8, "w", "data_offsets"},
    {"offsets arity 3", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 8, "w", "data_offsets"},
    {"negative offset", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 8, "w", "data_offsets"},
    {"offset beyond 2^53", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1e17,1e17]}}", 8, "w",
     "data_offsets"},
    {"entry not object", "{\"w\":[1,2]}", 8, "w", "not a JSON object"},
    {"malformed JSON", "{\"w\":{\"dtype\":\"U8\",", 8, NULL, "malformed"},
    {"malformed JSON 2", "{\"w\" {}}", 8, NULL, "malformed"},
    {"trailing bytes", "{} x", 8, NULL, "trailing"},
    {"embedded NUL", "{}\0  ", 8, NULL, NULL},
    {"not an object", "[1,2,3]", 8, NULL, "not an object"},
    {"bare string", "\"abc\"", 8, NULL, "not an object"},
    {"invalid UTF-8", "{\"w\xff\":{}}", 8, NULL, "UTF-8"},
    {"overlong UTF-8", "{\"\xc0\xaf\":{}}", 8, NULL, "UTF-8"},
    {"metadata not map", "{\"__metadata__\":[1]}", 8, NULL, "__metadata__"},
    {"metadata value", "{\"__metadata__\":{\"format\":1}}", 8, "format", "not a string"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 8, NULL, "twice"},
    {"metadata dup key", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 8, "k", "twice"},
};

static void check_bad(const char *what, const uint8_t *img, size_t len, const char *tensor, const char *also) {
    lmx_safetensors *st = (lmx_safetensors *)1;
    lmx_status s = lmx_safetensors_open_memory(img, len, "bad/model.safetensors", &st);
    CHECK_MSG(s == LMX_ERR_INVALID_MODEL_FORMAT, "%s: status %d (%s)", what, (int)s, detail());
    CHECK_MSG(st == NULL, "%s: out not cleared", what);
    CHECK_MSG(strstr(detail(), "bad/model.safetensors") != NULL, "%s: file not named: %s", what, detail());
    if (tensor) {
        char quoted[128];
        snprintf(quoted, sizeof quoted, " %s", tensor);
        CHECK_MSG(strstr(detail(), quoted) != NULL, "%s: tensor %s not named: %s", what, tensor, detail());
    }
    if (also) CHECK_MSG(strstr(detail(), also) != NULL, "%s: '%s' not in: %s", what, also, detail());
    if (s == LMX_OK) lmx_safetensors_close(st);
}

static void test_bad_headers(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        size_t len;
        uint8_t *img;
        if (strcmp(c->what, "embedded NUL") == 0) { /* strlen would stop at the NUL */
            len = 8 + 5 + 8;
            img = calloc(1, len);
            st_put_le64(img, 5);
            memcpy(img + 8, "{}\0  ", 5);
        } else {
            img = st_raw(c->hdr, c->data_len, &len);
        }
        check_bad(c->what, img, len, c->tensor, c->also);
        free(img);
    }
}

static void test_bad_lengths(void) {
    uint8_t small[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    for (size_t n = 0; n < 8; n++) check_bad("shorter than 8 bytes", small, n, NULL, "too short");
    check_bad("no buffer", NULL, 0, NULL, "too short");
    size_t len;
    uint8_t *img = st_raw_n(1000, "{}", 8, &len);
    check_bad("header length past EOF", img, len, NULL, "runs past the end");
    st_put_le64(img, 11);
    check_bad("header length past EOF by one", img, len, NULL, "runs past the end");
    st_put_le64(img, 10); /* header "{}" + 8 data bytes taken as JSON */
    check_bad("header length swallows data", img, len, NULL, NULL);
    st_put_le64(img, 0);
    check_bad("header length 0", img, len, NULL, "too small");
    st_put_le64(img, 1);
    check_bad("header length 1", img, len, NULL, "too small");
    st_put_le64(img, 100000000);
    check_bad("header length at limit", img, len, NULL, "limit");
    st_put_le64(img, UINT64_MAX);
    check_bad("header length 2^64-1", img, len, NULL, "limit");
    st_put_le64(img, (uint64_t)1 << 63);
    check_bad("header length 2^63", img, len, NULL, "limit");
    free(img);

    /* a valid file truncated anywhere in its data or header */
    float v[4] = {1, 2, 3, 4};
    st_tensor t[2] = {{"a.weight", "F32", 1, {4}, v, 16}, {"b.weight", "F32", 2, {2, 2}, v, 16}};
    img = st_build(t, 2, NULL, &len);
    size_t hlen = len - 32 - 8;
    for (size_t cut = 0; cut < len; cut++) {
        lmx_safetensors *st = NULL;
        lmx_status s = lmx_safetensors_open_memory(img, cut, "trunc.safetensors", &st);
        CHECK_MSG(s == LMX_ERR_INVALID_MODEL_FORMAT, "cut %zu: %d", cut, (int)s);
        CHECK(strstr(detail(), "trunc.safetensors") != NULL);
        if (cut > 8 + hlen) /* header intact: the tensor whose bytes are cut is named */
            CHECK_MSG(strstr(detail(), "tensor a.weight") || strstr(detail(), "tensor b.weight"), "cut %zu: %s",
                      cut, detail());
        lmx_safetensors_close(st);
    }
    free(img);
}

/* ---- files on disk ---- */

static void test_mmap_and_read_agree(void) {
    char dir[256];
    if (!st_tmpdir(dir, sizeof dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    uint16_t bf[300];
    for (int i = 0; i < 300; i++) bf[i] = (uint16_t)(i * 211);
    float f[7] = {0, 1, 2, 3, 4, 5, 6};
    st_tensor t[] = {{"x", "BF16", 2, {30, 10}, bf, sizeof bf}, {"y", "F32", 1, {7}, f, sizeof f}};
    size_t len;
    uint8_t *img = st_build_ex(t, 2, "{\"format\":\"mlx\"}", 1, 0, &len);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(st_write_file(path, img, len) == 0);
    lmx_safetensors *a = NULL, *b = NULL;
    CHECK(lmx_safetensors_open(path, true, &a) == LMX_OK);
    CHECK(lmx_safetensors_open(path, false, &b) == LMX_OK);
    if (a && b) {
        CHECK_EQ_INT(lmx_safetensors_count(a), lmx_safetensors_count(b));
        CHECK_EQ_STR(lmx_safetensors_metadata(a, "format"), lmx_safetensors_metadata(b, "format"));
        for (size_t i = 0; i < lmx_safetensors_count(a); i++) {
            const lmx_tensor_view *x = lmx_safetensors_get(a, i), *y = lmx_safetensors_get(b, i);
            CHECK_EQ_STR(x->name, y->name);
            CHECK_EQ_STR(x->file, path);
            CHECK(x->dtype == y->dtype && x->ndim == y->ndim && x->numel == y->numel && x->nbytes == y->nbytes);
            CHECK(memcmp(x->shape, y->shape, sizeof x->shape) == 0);
            CHECK(x->data != y->data && memcmp(x->data, y->data, x->nbytes) == 0);
        }
        const lmx_tensor_view *x = lmx_safetensors_find(a, "x");
        CHECK(x && memcmp(x->data, bf, sizeof bf) == 0);
    }
    lmx_safetensors_close(a);
    lmx_safetensors_close(b);
    /* a truncated file on disk, both ways */
    CHECK(st_write_file(path, img, len - 3) == 0);
    for (int m = 0; m < 2; m++) {
        lmx_safetensors *st = NULL;
        CHECK(lmx_safetensors_open(path, m == 0, &st) == LMX_ERR_INVALID_MODEL_FORMAT);
        CHECK(st == NULL && strstr(detail(), path) && strstr(detail(), "tensor "));
    }
    /* an empty file */
    CHECK(st_write_file(path, img, 0) == 0);
    for (int m = 0; m < 2; m++) {
        lmx_safetensors *st = NULL;
        CHECK(lmx_safetensors_open(path, m == 0, &st) == LMX_ERR_INVALID_MODEL_FORMAT);
        CHECK(strstr(detail(), path) != NULL);
    }
    free(img);
    /* missing file, a directory */
    lmx_safetensors *st = NULL;
    snprintf(path, sizeof path, "%s/absent.safetensors", dir);
    CHECK(lmx_safetensors_open(path, true, &st) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(strstr(detail(), "absent.safetensors") != NULL);
    CHECK(lmx_safetensors_open(dir, false, &st) == LMX_ERR_IO);
    CHECK(strstr(detail(), dir) != NULL);
    CHECK(lmx_safetensors_open(NULL, false, &st) == LMX_ERR_INVALID_ARGUMENT);
    st_rmdir(dir);
}

/* the fuzz seed corpus is what its names say: valid_* and empty open, the rest are rejected */
static void test_seed_corpus(void) {
    static const struct {
        const char *file;
        lmx_status want;
        size_t count;
    } seeds[] = {{"valid_mlx.st", LMX_OK, 4},       {"valid_padded.st", LMX_OK, 3},
                 {"empty.st", LMX_OK, 0},           {"overlap.st", LMX_ERR_INVALID_MODEL_FORMAT, 0},
                 {"f8.st", LMX_ERR_INVALID_MODEL_FORMAT, 0}, {"truncated.st", LMX_ERR_INVALID_MODEL_FORMAT, 0}};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/fuzz/corpus/safetensors/%s", LMX_SOURCE_DIR, seeds[i].file);
        lmx_safetensors *st = NULL;
        lmx_status s = lmx_safetensors_open(path, true, &st);
        CHECK_MSG(s == seeds[i].want, "%s: %d (%s)", seeds[i].file, (int)s, detail());
        CHECK_EQ_INT(lmx_safetensors_count(st), seeds[i].count);
        lmx_safetensors_close(st);
    }
}

int main(void) {
    RUN(test_roundtrip_multi_dtype);
    RUN(test_minimal_files);
    RUN(test_bad_headers);
    RUN(test_bad_lengths);
    RUN(test_mmap_and_read_agree);
    RUN(test_seed_corpus);
    return lmx_test_summary();
}
