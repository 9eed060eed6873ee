/* st_writer.c — safetensors writer: header building, sharding, and a worker pool that fills and
 * pwrite()s tensor data in row-aligned chunks into temp files that are renamed into place.
 */
#include "formats/st_writer.h"
#include "util/error.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CHUNK (16u << 20)
#define MAX_THREADS 64

typedef struct {
    char *name;
    lmx_dtype dtype;
    int ndim;
    int64_t shape[LMX_MAX_DIMS];
    uint64_t nbytes;
    uint64_t row_bytes; /* fill granule: nbytes / shape[0], or nbytes when there is no row axis */
    const void *data;   /* borrowed, or NULL with fill */
    lmx_st_fill_fn fill;
    void *ctx;
    size_t idx;         /* insertion index: fill tasks are dispatched in this order */
} wtensor;

struct lmx_st_writer {
    wtensor *t; /* [n] insertion order */
    size_t n, cap;
    char **meta; /* [2 * n_meta]: key, value, … */
    size_t n_meta;
    uint64_t total;
    uint64_t total_params;
};

/* ---- growable string ---- */

typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->len + n + 1) nc *= 2;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, unsigned long long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    sb_put(b, tmp, (size_t)n);
}

/* A JSON string literal (quotes, backslashes and control characters escaped; UTF-8 passes). */
static void sb_json(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", *p);
            sb_put(b, e, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* ---- building the tensor list ---- */

lmx_status lmx_st_writer_create(lmx_st_writer **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: NULL out");
    *out = calloc(1, sizeof **out);
    if (!*out) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    return LMX_OK;
}

void lmx_st_writer_destroy(lmx_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    for (size_t i = 0; i < 2 * w->n_meta; i++) free(w->meta[i]);
    free(w->meta);
    free(w);
}

static lmx_status add_common(lmx_st_writer *w, const char *name, lmx_dtype dtype, int ndim, const int64_t *shape,
                             const void *data, lmx_st_fill_fn fill, void *ctx) {
    if (!w || !name) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: NULL writer or name");
    if (!*name || !strcmp(name, "__metadata__"))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: invalid tensor name \"%s\"", name);
    if ((unsigned)dtype >= LMX_DTYPE_COUNT)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: tensor %s: invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > LMX_MAX_DIMS || (ndim > 0 && !shape))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: tensor %s: bad ndim %d", name, ndim);
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || shape[d] > (int64_t)1 << 53)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: tensor %s: bad dimension %lld", name,
                             (long long)shape[d]);
        uint64_t dim = (uint64_t)shape[d];
        if (dim && numel > ((uint64_t)1 << 53) / dim)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: tensor %s: size overflows", name);
        numel *= dim;
    }
    uint64_t nbytes = numel * lmx_dtype_size(dtype);
    if (nbytes && !data && !fill)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: tensor %s: no data", name);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name))
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: tensor %s added twice", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        wtensor *p = realloc(w->t, nc * sizeof *p);
        if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
        w->t = p;
        w->cap = nc;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->nbytes = nbytes;
    t->row_bytes = (ndim > 0 && shape[0] > 0) ? nbytes / (uint64_t)shape[0] : nbytes;
    t->data = data;
    t->fill = data ? NULL : fill;
    t->ctx = ctx;
    t->idx = w->n;
    w->n++;
    w->total += nbytes;
    return LMX_OK;
}

lmx_status lmx_st_writer_add(lmx_st_writer *w, const char *name, lmx_dtype dtype, int ndim, const int64_t *shape,
                             const void *data) {
    return add_common(w, name, dtype, ndim, shape, data, NULL, NULL);
}

lmx_status lmx_st_writer_add_fill(lmx_st_writer *w, const char *name, lmx_dtype dtype, int ndim,
                                  const int64_t *shape, lmx_st_fill_fn fill, void *ctx) {
    if (!fill) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: tensor %s: NULL fill", name ? name : "?");
    return add_common(w, name, dtype, ndim, shape, NULL, fill, ctx);
}

lmx_status lmx_st_writer_set_metadata(lmx_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: NULL metadata argument");
    for (size_t i = 0; i < w->n_meta; i++) {
        if (!strcmp(w->meta[2 * i], key)) {
            char *v = strdup(value);
            if (!v) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return LMX_OK;
        }
    }
    char **p = realloc(w->meta, 2 * (w->n_meta + 1) * sizeof *p);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    w->meta = p;
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    }
    p[2 * w->n_meta] = k;
    p[2 * w->n_meta + 1] = v;
    w->n_meta++;
    return LMX_OK;
}

void lmx_st_writer_set_total_parameters(lmx_st_writer *w, uint64_t n) {
    if (w) w->total_params = n;
}

size_t lmx_st_writer_count(const lmx_st_writer *w) { return w ? w->n : 0; }
uint64_t lmx_st_writer_total_bytes(const lmx_st_writer *w) { return w ? w->total : 0; }

/* ---- one output file ---- */

typedef struct {
    char *path;           /* final path */
    char *tmp;            /* temp path while writing (NULL once renamed or removed) */
    int fd;
    const wtensor **t;    /* [n] sorted by name: header and data order */
    size_t n;
    uint64_t *begin;      /* [n] data offsets relative to the data region */
    uint64_t data_start;  /* 8 + header length */
    uint64_t data_bytes;
} ofile;

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    return strcmp((*(const wtensor *const *)a)->name, (*(const wtensor *const *)b)->name);
}

static int cmp_meta_ptr(const void *a, const void *b) {
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

/* Builds the header of f (its tensors already listed) and lays out the data offsets. */
static lmx_status build_header(const lmx_st_writer *w, ofile *f, sbuf *h) {
    qsort(f->t, f->n, sizeof *f->t, cmp_tensor_ptr);
    sb_str(h, "{");
    bool first = true;
    if (w->n_meta) {
        char **keys[w->n_meta];
        for (size_t i = 0; i < w->n_meta; i++) keys[i] = &w->meta[2 * i];
        qsort(keys, w->n_meta, sizeof keys[0], cmp_meta_ptr);
        sb_str(h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) sb_str(h, ",");
            sb_json(h, keys[i][0]);
            sb_str(h, ":");
            sb_json(h, keys[i][1]);
        }
        sb_str(h, "}");
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < f->n; i++) {
        const wtensor *t = f->t[i];
        if (!first) sb_str(h, ",");
        first = false;
        sb_json(h, t->name);
        f->begin[i] = off;
        sb_fmt(h, ":{\"data_offsets\":[%llu,", (unsigned long long)off);
        off += t->nbytes;
        sb_fmt(h, "%llu],\"dtype\":", (unsigned long long)off);
        sb_json(h, lmx_dtype_name(t->dtype));
        sb_str(h, ",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) sb_fmt(h, d ? ",%llu" : "%llu", (unsigned long long)t->shape[d]);
        sb_str(h, "]}");
    }
    sb_str(h, "}");
    while (h->len % 8) sb_str(h, " ");
    if (h->oom) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory building the header", f->path);
    f->data_start = 8 + h->len;
    f->data_bytes = off;
    return LMX_OK;
}

static lmx_status pwrite_all(int fd, const void *buf, size_t len, uint64_t off, const char *path) {
    const uint8_t *p = buf;
    while (len) {
        size_t n = len > (1u << 30) ? (1u << 30) : len;
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return lmx_error(LMX_ERR_IO, "%s: write failed: %s", path, lmx_errno_str(errno));
        }
        if (r == 0) return lmx_error(LMX_ERR_IO, "%s: write returned 0", path);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return LMX_OK;
}

static lmx_status open_tmp(ofile *f) {
    size_t n = strlen(f->path);
    f->tmp = malloc(n + 16);
    if (!f->tmp) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path);
    memcpy(f->tmp, f->path, n);
    memcpy(f->tmp + n, ".tmp.XXXXXX", 12);
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        lmx_status s = lmx_error(LMX_ERR_IO, "%s: cannot create: %s", f->tmp, lmx_errno_str(errno));
        free(f->tmp);
        f->tmp = NULL;
        return s;
    }
    if (fchmod(f->fd, 0644) != 0) LMX_LOG_W("%s: chmod failed: %s", f->tmp, lmx_errno_str(errno));
    return LMX_OK;
}

/* Closes (and removes the temp file of) a file that is not being committed. */
static void discard(ofile *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    f->tmp = NULL;
}

static void ofile_free(ofile *f) {
    discard(f);
    free(f->path);
    free(f->t);
    free(f->begin);
}

static void sync_dir_of(const char *path) {
    char *d = strdup(path);
    if (!d) return;
    char *s = strrchr(d, '/');
    if (s == d) s[1] = '\0';
    else if (s) *s = '\0';
    else strcpy(d, ".");
    int fd = open(d, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(d);
}

static lmx_status commit(ofile *f, bool sync) {
    if (sync && fsync(f->fd) != 0) return lmx_error(LMX_ERR_IO, "%s: fsync failed: %s", f->tmp, lmx_errno_str(errno));
    int r = close(f->fd);
    f->fd = -1;
    if (r != 0) return lmx_error(LMX_ERR_IO, "%s: close failed: %s", f->tmp, lmx_errno_str(errno));
    if (rename(f->tmp, f->path) != 0)
        return lmx_error(LMX_ERR_IO, "%s: rename to %s failed: %s", f->tmp, f->path, lmx_errno_str(errno));
    free(f->tmp);
    f->tmp = NULL;
    if (sync) sync_dir_of(f->path);
    return LMX_OK;
}

/* ---- the worker pool ---- */

typedef struct {
    const ofile *f;
    const wtensor *t;
    uint64_t offset; /* within the tensor */
    size_t len;
    uint64_t file_off;
} task;

typedef struct {
    task *tasks;
    size_t n_tasks;
    size_t buf_bytes; /* largest fill task */
    atomic_size_t next;
    atomic_bool failed;
    pthread_mutex_t lock; /* guards status/detail/done and serialises progress */
    lmx_status status;
    char detail[LMX_ERROR_DETAIL_MAX];
    uint64_t done, total;
    lmx_st_progress_fn progress;
    void *progress_ctx;
} pool;

static void pool_fail(pool *p, lmx_status s) {
    pthread_mutex_lock(&p->lock);
    if (p->status == LMX_OK) {
        p->status = s;
        const char *d = lmx_last_error_detail();
        snprintf(p->detail, sizeof p->detail, "%s", d ? d : "");
    }
    pthread_mutex_unlock(&p->lock);
    atomic_store(&p->failed, true);
}

static void *worker(void *arg) {
    pool *p = arg;
    uint8_t *buf = NULL;
    for (;;) {
        if (atomic_load(&p->failed)) break;
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n_tasks) break;
        const task *k = &p->tasks[i];
        lmx_status s;
        if (k->t->data) {
            s = pwrite_all(k->f->fd, (const uint8_t *)k->t->data + k->offset, k->len, k->file_off, k->f->tmp);
        } else {
            if (!buf) {
                buf = malloc(p->buf_bytes ? p->buf_bytes : 1);
                if (!buf) {
                    pool_fail(p, lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory (%zu-byte buffer)",
                                           p->buf_bytes));
                    break;
                }
            }
            s = k->t->fill(k->t->ctx, k->t->name, k->offset, buf, k->len);
            if (s != LMX_OK) s = lmx_error_prefix(s, "%s: tensor %s", k->f->path, k->t->name);
            else s = pwrite_all(k->f->fd, buf, k->len, k->file_off, k->f->tmp);
        }
        if (s != LMX_OK) {
            pool_fail(p, s);
            break;
        }
        if (p->progress) {
            pthread_mutex_lock(&p->lock);
            p->done += k->len;
            p->progress(p->progress_ctx, p->done, p->total);
            pthread_mutex_unlock(&p->lock);
        }
    }
    free(buf);
    return NULL;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    return (int)n;
}

static int cmp_task(const void *a, const void *b) {
    const task *x = a, *y = b;
    if (x->t->idx != y->t->idx) return x->t->idx < y->t->idx ? -1 : 1;
    return x->offset < y->offset ? -1 : (x->offset > y->offset);
}

/* Writes headers and data of files[0..nf) (their tmp files open), using the options' pool. */
static lmx_status write_files(ofile *files, size_t nf, const sbuf *headers, const lmx_st_write_options *o) {
    size_t chunk = o->chunk_bytes ? o->chunk_bytes : DEFAULT_CHUNK;
    for (size_t i = 0; i < nf; i++) {
        uint8_t len8[8];
        uint64_t hl = headers[i].len;
        for (int b = 0; b < 8; b++) len8[b] = (uint8_t)(hl >> (8 * b));
        lmx_status s = pwrite_all(files[i].fd, len8, 8, 0, files[i].tmp);
        if (s == LMX_OK) s = pwrite_all(files[i].fd, headers[i].s, headers[i].len, 8, files[i].tmp);
        if (s != LMX_OK) return s;
        if (ftruncate(files[i].fd, (off_t)(files[i].data_start + files[i].data_bytes)) != 0)
            return lmx_error(LMX_ERR_IO, "%s: cannot size the file: %s", files[i].tmp, lmx_errno_str(errno));
    }
    /* split every tensor into row-aligned chunks */
    pool p;
    memset(&p, 0, sizeof p);
    size_t cap = 0;
    for (size_t i = 0; i < nf; i++) {
        for (size_t j = 0; j < files[i].n; j++) {
            const wtensor *t = files[i].t[j];
            if (!t->nbytes) continue;
            uint64_t rows_per = t->row_bytes >= chunk ? 1 : chunk / t->row_bytes;
            uint64_t step = rows_per * t->row_bytes;
            for (uint64_t off = 0; off < t->nbytes; off += step) {
                if (p.n_tasks == cap) {
                    size_t nc = cap ? cap * 2 : 256;
                    task *q = realloc(p.tasks, nc * sizeof *q);
                    if (!q) {
                        free(p.tasks);
                        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
                    }
                    p.tasks = q;
                    cap = nc;
                }
                uint64_t len = t->nbytes - off < step ? t->nbytes - off : step;
                if (len > SIZE_MAX) {
                    free(p.tasks);
                    return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: tensor %s: row too large", files[i].path,
                                     t->name);
                }
                p.tasks[p.n_tasks++] = (task){&files[i], t, off, (size_t)len, files[i].data_start + files[i].begin[j] + off};
                if (t->fill && len > p.buf_bytes) p.buf_bytes = (size_t)len;
            }
            p.total += t->nbytes;
        }
    }
    qsort(p.tasks, p.n_tasks, sizeof *p.tasks, cmp_task); /* insertion order, then offset */
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, false);
    pthread_mutex_init(&p.lock, NULL);
    p.progress = o->progress;
    p.progress_ctx = o->progress_ctx;
    int nt = o->threads > 0 ? o->threads : default_threads();
    if ((size_t)nt > p.n_tasks) nt = p.n_tasks ? (int)p.n_tasks : 1;
    pthread_t tids[MAX_THREADS];
    int started = 0;
    for (int i = 1; i < nt && i < MAX_THREADS; i++) {
        if (pthread_create(&tids[started], NULL, worker, &p) != 0) break;
        started++;
    }
    worker(&p); /* the calling thread works too */
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
    pthread_mutex_destroy(&p.lock);
    free(p.tasks);
    if (p.status != LMX_OK) return lmx_error(p.status, "%s", p.detail);
    return LMX_OK;
}

static const lmx_st_write_options *opts_or_default(const lmx_st_write_options *o, lmx_st_write_options *d) {
    if (o) return o;
    memset(d, 0, sizeof *d);
    return d;
}

/* Writes files[0..nf) completely and renames them into place; on failure removes the temp files. */
static lmx_status write_and_commit(const lmx_st_writer *w, ofile *files, size_t nf, const lmx_st_write_options *o) {
    sbuf *headers = calloc(nf ? nf : 1, sizeof *headers);
    if (!headers) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    lmx_status s = LMX_OK;
    for (size_t i = 0; i < nf && s == LMX_OK; i++) s = build_header(w, &files[i], &headers[i]);
    for (size_t i = 0; i < nf && s == LMX_OK; i++) s = open_tmp(&files[i]);
    if (s == LMX_OK) s = write_files(files, nf, headers, o);
    for (size_t i = 0; i < nf && s == LMX_OK; i++) s = commit(&files[i], o->sync);
    for (size_t i = 0; i < nf; i++) {
        discard(&files[i]);
        free(headers[i].s);
    }
    free(headers);
    return s;
}

lmx_status lmx_st_writer_write_file(lmx_st_writer *w, const char *path, const lmx_st_write_options *opts) {
    if (!w || !path) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: NULL writer or path");
    lmx_st_write_options dflt;
    const lmx_st_write_options *o = opts_or_default(opts, &dflt);
    ofile f = {.fd = -1};
    f.path = strdup(path);
    f.t = malloc((w->n ? w->n : 1) * sizeof *f.t);
    f.begin = malloc((w->n ? w->n : 1) * sizeof *f.begin);
    if (!f.path || !f.t || !f.begin) {
        ofile_free(&f);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    }
    for (size_t i = 0; i < w->n; i++) f.t[i] = &w->t[i];
    f.n = w->n;
    lmx_status s = write_and_commit(w, &f, 1, o);
    ofile_free(&f);
    return s;
}

/* model.safetensors.index.json as mlx-lm writes it (json.dump(indent=4), weight_map sorted). */
typedef struct {
    const char *name, *file;
} index_entry;

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const index_entry *)a)->name, ((const index_entry *)b)->name);
}

static lmx_status write_index(const lmx_st_writer *w, const char *dir, const ofile *files, size_t nf, bool sync) {
    size_t n = 0;
    for (size_t i = 0; i < nf; i++) n += files[i].n;
    index_entry *e = malloc((n ? n : 1) * sizeof *e);
    if (!e) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < nf; i++)
        for (size_t j = 0; j < files[i].n; j++) e[k++] = (index_entry){files[i].t[j]->name, base_name(files[i].path)};
    qsort(e, n, sizeof *e, cmp_entry);
    sbuf b = {0};
    sb_str(&b, "{\n    \"metadata\": {\n        \"total_size\": ");
    sb_fmt(&b, "%llu", (unsigned long long)w->total);
    if (w->total_params) {
        sb_str(&b, ",\n        \"total_parameters\": ");
        sb_fmt(&b, "%llu", (unsigned long long)w->total_params);
    }
    sb_str(&b, "\n    },\n    \"weight_map\": {");
    for (size_t i = 0; i < n; i++) {
        sb_str(&b, i ? ",\n        " : "\n        ");
        sb_json(&b, e[i].name);
        sb_str(&b, ": ");
        sb_json(&b, e[i].file);
    }
    sb_str(&b, n ? "\n    }\n}" : "}\n}");
    free(e);
    if (b.oom) {
        free(b.s);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    }
    ofile f = {.fd = -1};
    f.path = malloc(strlen(dir) + 40);
    if (!f.path) {
        free(b.s);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    }
    sprintf(f.path, "%s/model.safetensors.index.json", dir);
    lmx_status s = open_tmp(&f);
    if (s == LMX_OK) s = pwrite_all(f.fd, b.s, b.len, 0, f.tmp);
    if (s == LMX_OK) s = commit(&f, sync);
    ofile_free(&f);
    free(b.s);
    return s;
}

lmx_status lmx_st_writer_write_model(lmx_st_writer *w, const char *dir, uint64_t max_shard_bytes,
                                     const lmx_st_write_options *opts, int *n_shards) {
    if (!w || !dir) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "st_writer: NULL writer or directory");
    lmx_st_write_options dflt;
    const lmx_st_write_options *o = opts_or_default(opts, &dflt);
    struct stat stt;
    if (stat(dir, &stt) != 0 || !S_ISDIR(stt.st_mode))
        return lmx_error(LMX_ERR_IO, "%s: not a directory", dir);
    /* shard assignment in insertion order (mlx-lm make_shards, never an empty shard) */
    size_t *shard_of = malloc((w->n ? w->n : 1) * sizeof *shard_of);
    if (!shard_of) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    size_t nf = 1;
    uint64_t cur = 0;
    size_t in_cur = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (max_shard_bytes && in_cur && cur + w->t[i].nbytes > max_shard_bytes) {
            nf++;
            cur = 0;
            in_cur = 0;
        }
        shard_of[i] = nf - 1;
        cur += w->t[i].nbytes;
        in_cur++;
    }
    if (nf > 99999) {
        free(shard_of);
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: %zu shards is too many", dir, nf);
    }
    ofile *files = calloc(nf, sizeof *files);
    lmx_status s = LMX_OK;
    if (!files) s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
    for (size_t i = 0; files && i < nf; i++) files[i].fd = -1;
    for (size_t i = 0; s == LMX_OK && i < nf; i++) {
        ofile *f = &files[i];
        f->path = malloc(strlen(dir) + 48);
        f->t = malloc((w->n ? w->n : 1) * sizeof *f->t);
        f->begin = malloc((w->n ? w->n : 1) * sizeof *f->begin);
        if (!f->path || !f->t || !f->begin) {
            s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "st_writer: out of memory");
            break;
        }
        if (nf == 1) sprintf(f->path, "%s/model.safetensors", dir);
        else sprintf(f->path, "%s/model-%05zu-of-%05zu.safetensors", dir, i + 1, nf);
    }
    if (s == LMX_OK) {
        for (size_t i = 0; i < w->n; i++) {
            ofile *f = &files[shard_of[i]];
            f->t[f->n++] = &w->t[i];
        }
        s = write_and_commit(w, files, nf, o);
    }
    if (s == LMX_OK) s = write_index(w, dir, files, nf, o->sync);
    if (s == LMX_OK && n_shards) *n_shards = (int)nf;
    for (size_t i = 0; files && i < nf; i++) ofile_free(&files[i]);
    free(files);
    free(shard_of);
    return s;
}
