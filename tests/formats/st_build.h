/* st_build.h — test-only helpers that build safetensors images in memory and files in a temp dir.
 *
 * st_build(): a well-formed image from tensor specs (header not padded, so data is unaligned unless
 * the header happens to be a multiple of 8 long). st_raw(): an image from a literal header string
 * and a data region of a given size, optionally with a lying length field. All returned buffers
 * are malloc'd; the caller frees them. Not thread-safe (tests only).
 */
#ifndef LMX_TESTS_ST_WRITER_H
#define LMX_TESTS_ST_WRITER_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[8];
    const void *data; /* nbytes bytes */
    size_t nbytes;
} st_tensor;

static inline void st_put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Image with header text `hdr` (length field = n_field) followed by data_len bytes (i & 0xff). */
static inline uint8_t *st_raw_n(uint64_t n_field, const char *hdr, size_t data_len, size_t *len) {
    size_t h = strlen(hdr);
    *len = 8 + h + data_len;
    uint8_t *b = malloc(*len ? *len : 1);
    st_put_le64(b, n_field);
    memcpy(b + 8, hdr, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (uint8_t)i;
    return b;
}

static inline uint8_t *st_raw(const char *hdr, size_t data_len, size_t *len) {
    return st_raw_n(strlen(hdr), hdr, data_len, len);
}

/* Well-formed image. Tensors are stored in the data region in reverse order of the header (JSON
 * order need not follow data order) with `gap` unused bytes before each. `metadata` is a JSON
 * object text or NULL. `pad` spaces are appended to the header (the HF writer pads to 8). */
static inline uint8_t *st_build_ex(const st_tensor *t, size_t n, const char *metadata, size_t gap, size_t pad,
                                   size_t *len) {
    size_t cap = 256 + (metadata ? strlen(metadata) : 0) + pad;
    for (size_t i = 0; i < n; i++) cap += strlen(t[i].name) + 160;
    char *hdr = malloc(cap);
    size_t *begin = calloc(n ? n : 1, sizeof *begin);
    size_t pos = 0;
    for (size_t i = n; i-- > 0;) {
        pos += gap;
        begin[i] = pos;
        pos += t[i].nbytes;
    }
    size_t data_len = pos;
    int o = sprintf(hdr, "{");
    if (metadata) o += sprintf(hdr + o, "\"__metadata__\":%s", metadata);
    for (size_t i = 0; i < n; i++) {
        o += sprintf(hdr + o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", (metadata || i) ? "," : "", t[i].name,
                     t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) o += sprintf(hdr + o, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        o += sprintf(hdr + o, "],\"data_offsets\":[%zu,%zu]}", begin[i], begin[i] + t[i].nbytes);
    }
    o += sprintf(hdr + o, "}");
    for (size_t i = 0; i < pad; i++) hdr[o++] = ' ';
    hdr[o] = '\0';
    uint8_t *img = st_raw(hdr, data_len, len);
    uint8_t *data = img + 8 + o;
    memset(data, 0xEE, data_len);
    for (size_t i = 0; i < n; i++)
        if (t[i].nbytes) memcpy(data + begin[i], t[i].data, t[i].nbytes);
    free(hdr);
    free(begin);
    return img;
}

static inline uint8_t *st_build(const st_tensor *t, size_t n, const char *metadata, size_t *len) {
    return st_build_ex(t, n, metadata, 0, 0, len);
}

static inline int st_write_file(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(buf, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

/* Writes `text` to dir/name. */
static inline int st_write_text(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return st_write_file(path, text, strlen(text));
}

/* Writes a one-tensor F32 file dir/name holding tensor `tensor` = {value, value+1}. */
static inline int st_write_one(const char *dir, const char *name, const char *tensor, float value) {
    float v[2] = {value, value + 1};
    st_tensor t = {tensor, "F32", 1, {2}, v, sizeof v};
    size_t len;
    uint8_t *img = st_build(&t, 1, "{\"format\":\"mlx\"}", &len);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int r = st_write_file(path, img, len);
    free(img);
    return r;
}

/* A fresh temp directory (static buffer of the caller); NULL on failure. */
static inline char *st_tmpdir(char *buf, size_t cap) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, cap, "%s/lmx_st_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(buf);
}

/* Removes the files in `dir` (one level) and the directory. */
static inline void st_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char path[4096];
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) != 0) rmdir(path);
    }
    closedir(d);
    rmdir(dir);
}

#endif
