/* safetensors.c — one safetensors file: header parsing and validation, then mmap'd or read-in data.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data region; every
 * tensor's data_offsets [begin, end) count from byte 8+N. Nothing is exposed until the whole header
 * has been checked (see safetensors.h); after that the object is immutable.
 */
#include "formats/safetensors.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull   /* same limit as MLX and the Rust reference (exclusive) */
#define ST_MAX_INT 9007199254740992.0 /* 2^53: the largest integer a JSON double holds exactly */

struct lmx_safetensors {
    char *label;                     /* path (or caller's label); every view's `file` points here */
    const uint8_t *image;            /* [len] bytes: the whole file */
    size_t len;
    void *map;                       /* mmap'd image (use_mmap) or NULL */
    size_t map_len;
    uint8_t *copy;                   /* read-in image (mmap off) or NULL */
    lmx_tensor_view *views;          /* [n] in header order */
    size_t n;
    const lmx_tensor_view **by_name; /* [n] sorted by name, for bsearch */
    char *names;                     /* arena: the n names, NUL-terminated */
    char **meta;                     /* [2 * n_meta]: key, value, key, value … sorted by key */
    size_t n_meta;
};

/* ---- small helpers ---- */

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF). Returns the offset of the first
 * bad byte, or len when the text is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (len - i <= need) return i;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += need + 1;
    }
    return len;
}

/* A JSON number that is a non-negative integer a double holds exactly. */
static bool json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double d = item->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_INT)) return false; /* also rejects NaN */
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return false;
    *out = u;
    return true;
}

/* The single member `key` of object `obj`; *dup is set when it appears more than once. */
static const cJSON *member(const cJSON *obj, const char *key, bool *dup) {
    const cJSON *found = NULL;
    *dup = false;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (c->string && strcmp(c->string, key) == 0) {
            if (found) *dup = true;
            else found = c;
        }
    }
    return found;
}

/* ---- one tensor entry ---- */

typedef struct {
    uint64_t begin, end; /* data_offsets, relative to the data region */
    size_t index;        /* position in header order */
} span;

static lmx_status parse_entry(const cJSON *e, const char *label, const char *name, uint64_t data_len,
                              lmx_tensor_view *v, span *sp) {
    if (!cJSON_IsObject(e))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: entry is not a JSON object", label, name);
    static const char *const keys[3] = {"dtype", "shape", "data_offsets"};
    const cJSON *f[3];
    for (int k = 0; k < 3; k++) {
        bool dup;
        f[k] = member(e, keys[k], &dup);
        if (!f[k])
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: missing \"%s\"", label, name, keys[k]);
        if (dup)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: \"%s\" appears twice", label, name,
                             keys[k]);
    }
    const cJSON *dt = f[0], *shape = f[1], *offs = f[2];

    if (!cJSON_IsString(dt) || !dt->valuestring)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: dtype is not a string", label, name);
    if (!lmx_dtype_from_name(dt->valuestring, &v->dtype))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: dtype %.40s is not supported", label, name,
                         dt->valuestring);

    if (!cJSON_IsArray(shape))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: shape is not an array", label, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > LMX_MAX_DIMS)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: %d dimensions (at most %d supported)", label,
                         name, ndim, LMX_MAX_DIMS);
    v->ndim = ndim;
    int64_t numel = 1;
    int d = 0;
    for (const cJSON *c = shape->child; c; c = c->next, d++) {
        uint64_t dim;
        if (!json_uint(c, &dim)) {
            if (cJSON_IsNumber(c) && c->valuedouble > ST_MAX_INT && c->valuedouble == floor(c->valuedouble))
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                                 "%s: tensor %s: shape[%d] = %.17g is larger than 2^53 (the largest integer a JSON "
                                 "number holds exactly; no real tensor has such a dimension)",
                                 label, name, d, c->valuedouble);
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                             "%s: tensor %s: shape[%d] is not a non-negative integer", label, name, d);
        }
        v->shape[d] = (int64_t)dim;
        if (dim != 0 && (uint64_t)numel > (uint64_t)INT64_MAX / dim)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: shape product overflows", label, name);
        numel *= (int64_t)dim;
    }
    for (int k = ndim; k < LMX_MAX_DIMS; k++) v->shape[k] = 0;
    v->numel = numel;

    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &b) ||
        !json_uint(offs->child->next, &en))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: tensor %s: data_offsets is not [begin, end] with non-negative integers of at most 2^53",
                         label, name);
    if (b > en)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] has begin > end",
                         label, name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_len)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu] run past the %llu-byte data region", label, name,
                         (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_len);
    size_t es = lmx_dtype_size(v->dtype);
    if ((uint64_t)numel > UINT64_MAX / es || (uint64_t)numel * es != en - b)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: tensor %s: shape holds %lld %s elements but data_offsets span %llu bytes", label, name,
                         (long long)numel, lmx_dtype_name(v->dtype), (unsigned long long)(en - b));
    v->nbytes = (size_t)(en - b);
    sp->begin = b;
    sp->end = en;
    return LMX_OK;
}

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_view_name(const void *a, const void *b) {
    const lmx_tensor_view *x = *(const lmx_tensor_view *const *)a, *y = *(const lmx_tensor_view *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((char *const *)a)[0], ((char *const *)b)[0]);
}

/* ---- __metadata__ ---- */

static lmx_status parse_metadata(lmx_safetensors *st, const cJSON *m) {
    if (cJSON_IsNull(m)) return LMX_OK;
    if (!cJSON_IsObject(m))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: __metadata__ is not a JSON object", st->label);
    size_t n = 0;
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c) || !c->valuestring)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: __metadata__ key %s: value is not a string",
                             st->label, c->string ? c->string : "?");
        n++;
    }
    if (n == 0) return LMX_OK;
    st->meta = calloc(2 * n, sizeof *st->meta);
    if (!st->meta) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory for __metadata__", st->label);
    for (const cJSON *c = m->child; c; c = c->next) {
        char *k = strdup(c->string ? c->string : ""), *v = strdup(c->valuestring);
        st->meta[2 * st->n_meta] = k;
        st->meta[2 * st->n_meta + 1] = v;
        st->n_meta++;
        if (!k || !v) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory for __metadata__", st->label);
    }
    qsort(st->meta, st->n_meta, 2 * sizeof *st->meta, cmp_meta);
    for (size_t i = 1; i < st->n_meta; i++) {
        if (strcmp(st->meta[2 * i - 2], st->meta[2 * i]) == 0)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: __metadata__ key %s appears twice", st->label,
                             st->meta[2 * i]);
    }
    return LMX_OK;
}

/* ---- the header ---- */

static lmx_status parse_header(lmx_safetensors *st) {
    const char *label = st->label;
    if (st->len < 8)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: file is %zu bytes, too short for the 8-byte header length (truncated?)", label, st->len);
    uint64_t hlen = read_le64(st->image);
    if (hlen < 2)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: header length %llu is too small for a JSON object",
                         label, (unsigned long long)hlen);
    if (hlen >= ST_MAX_HEADER)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: header length %llu is over the 100,000,000-byte limit (not a safetensors file?)", label,
                         (unsigned long long)hlen);
    if (hlen > st->len - 8)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: header length %llu runs past the end of the %zu-byte file (truncated?)", label,
                         (unsigned long long)hlen, st->len);
    const uint8_t *hdr = st->image + 8;     /* [hlen] bytes of JSON */
    const uint8_t *data = hdr + hlen;       /* [data_len] bytes */
    uint64_t data_len = st->len - 8 - hlen;

    size_t bad = utf8_invalid_at(hdr, hlen);
    if (bad != hlen)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: header is not valid UTF-8 (byte %zu)", label, bad);
    /* cJSON gets its own NUL-terminated copy: it never reads past hlen, whatever the bytes are */
    char *text = malloc(hlen + 1);
    if (!text) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory for the header", label);
    memcpy(text, hdr, hlen);
    text[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = lmx_json_parse_keep_dups(text, hlen, &end); /* repeated keys are rejected below */
    if (!root) {
        size_t at = end && end >= text && end <= text + hlen ? (size_t)(end - text) : 0;
        char why[160];
        lmx_json_error(text, hlen, end, why, sizeof why);
        free(text);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: header JSON is malformed: %s (near byte %zu)", label, why, at);
    }
    for (const char *p = end; p && p < text + hlen; p++) { /* the HF writer pads with spaces */
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            size_t at = (size_t)(p - text);
            cJSON_Delete(root);
            free(text);
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: header has trailing bytes after the JSON (byte %zu)",
                             label, at);
        }
    }
    free(text);

    lmx_status s = LMX_OK;
    span *spans = NULL;
    if (!cJSON_IsObject(root)) {
        s = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: header JSON is not an object", label);
        goto done;
    }
    /* pass 1: count tensors, size the name arena, read __metadata__ */
    size_t n = 0, name_bytes = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        const char *name = c->string ? c->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            if (meta) {
                s = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: __metadata__ appears twice", label);
                goto done;
            }
            meta = c;
            continue;
        }
        n++;
        name_bytes += strlen(name) + 1;
    }
    if (meta && (s = parse_metadata(st, meta)) != LMX_OK) goto done;
    if (n == 0) goto done;

    st->views = calloc(n, sizeof *st->views);
    st->by_name = calloc(n, sizeof *st->by_name);
    st->names = malloc(name_bytes);
    spans = calloc(n, sizeof *spans);
    if (!st->views || !st->by_name || !st->names || !spans) {
        s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu tensor entries", label, n);
        goto done;
    }
    /* pass 2: every entry */
    char *np = st->names;
    size_t i = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        const char *name = c->string ? c->string : "";
        if (c == meta) continue;
        size_t nl = strlen(name) + 1;
        memcpy(np, name, nl);
        lmx_tensor_view *v = &st->views[i];
        v->name = np;
        v->file = st->label;
        np += nl;
        if ((s = parse_entry(c, label, name, data_len, v, &spans[i])) != LMX_OK) goto done;
        v->data = data + spans[i].begin;
        spans[i].index = i;
        st->by_name[i] = v;
        i++;
    }
    st->n = n;

    /* names are unique */
    qsort(st->by_name, n, sizeof *st->by_name, cmp_view_name);
    for (i = 1; i < n; i++) {
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0) {
            s = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s appears twice in the header", label,
                          st->by_name[i]->name);
            goto done;
        }
    }
    /* byte ranges do not overlap (empty ranges touch no bytes) */
    qsort(spans, n, sizeof *spans, cmp_span);
    uint64_t max_end = 0;
    size_t max_idx = 0;
    for (i = 0; i < n; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (spans[i].begin < max_end) {
            const lmx_tensor_view *a = &st->views[max_idx], *b = &st->views[spans[i].index];
            s = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                          "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s (ends at %llu)", label, b->name,
                          (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end, a->name,
                          (unsigned long long)max_end);
            goto done;
        }
        max_end = spans[i].end;
        max_idx = spans[i].index;
    }
done:
    free(spans);
    cJSON_Delete(root);
    return s;
}

/* ---- public API ---- */

void lmx_safetensors_close(lmx_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->map_len);
    free(st->copy);
    for (size_t i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->meta);
    free(st->views);
    free(st->by_name);
    free(st->names);
    free(st->label);
    free(st);
}

lmx_status lmx_safetensors_open_memory(const uint8_t *image, size_t len, const char *label,
                                       lmx_safetensors **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_safetensors_open_memory: NULL out");
    *out = NULL;
    if (!label) label = "<memory>";
    if (!image && len) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: NULL image", label);
    lmx_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->label = strdup(label))) {
        free(st);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    }
    st->image = image;
    st->len = len;
    lmx_status s = parse_header(st);
    if (s != LMX_OK) {
        lmx_safetensors_close(st);
        return s;
    }
    *out = st;
    return LMX_OK;
}

lmx_status lmx_safetensors_open(const char *path, bool use_mmap, lmx_safetensors **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_safetensors_open: NULL out");
    *out = NULL;
    if (!path) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_safetensors_open: NULL path");
    int fd;
    lmx_status os = lmx_fs_open_regular(path, &fd); /* says what a FIFO / directory / device is */
    if (os != LMX_OK) return os;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return lmx_error(LMX_ERR_IO, "%s: %s", path, lmx_errno_str(e));
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return lmx_error(LMX_ERR_IO, "%s: file is too large to address", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    uint8_t *copy = NULL;
    const uint8_t *image;
    if (use_mmap && len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lmx_error(e == ENOMEM ? LMX_ERR_OUT_OF_MEMORY : LMX_ERR_IO, "%s: mmap of %zu bytes failed: %s",
                             path, len, lmx_errno_str(e));
        }
        image = map;
    } else {
        copy = malloc(len ? len : 1);
        if (!copy) {
            close(fd);
            return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes to read the file", path, len);
        }
        size_t got = 0;
        while (got < len) {
            ssize_t r = pread(fd, copy + got, len - got, (off_t)got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                int e = r < 0 ? errno : 0;
                free(copy);
                close(fd);
                return lmx_error(LMX_ERR_IO, "%s: read failed after %zu of %zu bytes%s%s", path, got, len,
                                 e ? ": " : " (file shrank?)", e ? lmx_errno_str(e) : "");
            }
            got += (size_t)r;
        }
        image = copy;
    }
    close(fd);
    lmx_safetensors *st = NULL;
    lmx_status s = lmx_safetensors_open_memory(image, len, path, &st);
    if (s != LMX_OK) {
        if (map) munmap(map, len);
        free(copy);
        return s;
    }
    st->map = map;
    st->map_len = len;
    st->copy = copy;
    *out = st;
    return LMX_OK;
}

size_t lmx_safetensors_count(const lmx_safetensors *st) { return st ? st->n : 0; }

const lmx_tensor_view *lmx_safetensors_get(const lmx_safetensors *st, size_t i) {
    return st && i < st->n ? &st->views[i] : NULL;
}

const lmx_tensor_view *lmx_safetensors_find(const lmx_safetensors *st, const char *name) {
    if (!st || !name || st->n == 0) return NULL;
    lmx_tensor_view key = {.name = name};
    const lmx_tensor_view *kp = &key;
    const lmx_tensor_view **hit = bsearch(&kp, st->by_name, st->n, sizeof *st->by_name, cmp_view_name);
    return hit ? *hit : NULL;
}

const char *lmx_safetensors_metadata(const lmx_safetensors *st, const char *key) {
    if (!st || !key || st->n_meta == 0) return NULL;
    const char *k[2] = {key, NULL};
    char **hit = bsearch(k, st->meta, st->n_meta, 2 * sizeof *st->meta, cmp_meta);
    return hit ? hit[1] : NULL;
}

const char *lmx_safetensors_path(const lmx_safetensors *st) { return st ? st->label : NULL; }

size_t lmx_safetensors_metadata_count(const lmx_safetensors *st) { return st ? st->n_meta : 0; }

const char *lmx_safetensors_metadata_key(const lmx_safetensors *st, size_t i) {
    return st && i < st->n_meta ? st->meta[2 * i] : NULL;
}
