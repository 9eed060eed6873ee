/* cpu_backend.c — the reference CPU backend: readable fp32-accumulating kernels, parallelized over
 * rows/heads with a small thread pool owned by the backend (see backend.h for the op contracts).
 *
 * Weights stay in their stored dtype: dense F16/BF16/F32 matrices are referenced in place (the
 * mmapped bytes, possibly unaligned) and converted row by row into per-thread scratch; quantized
 * matrices keep their packed words and get fp32 copies of scales/biases at upload.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/backend_check.h"
#include "backend/backend_fuse.h"
#include "backend/cpu/cpu_quant.h"
#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/thread_pool.h"
#include "util/env.h"
#include "util/error.h"

struct lmx_buf {
    size_t n;
    float *data; /* [n] */
    bool view;   /* buf_view: data belongs to another buffer */
};

struct lmx_bweight {
    lmx_wkind kind;
    int64_t rows, cols;
    lmx_dtype dtype;      /* dense: element type of `data` */
    const uint8_t *data;   /* dense: first selected row; quant: packed bytes of the first selected row */
    size_t row_bytes;      /* bytes per stored row */
    float *vec;            /* vector: own fp32 copy [cols] */
    float *scales, *biases; /* quant: own fp32 [rows, groups] */
    int bits, group_size, groups;
    float *bias;           /* optional own fp32 [rows] */
    uint8_t *own;          /* fused (test-only weight_upload_fused): own copy of the rows `data` points to */
    bool view;             /* a view of a fused weight: frees only the handle */
};

typedef struct cpu_backend {
    lmx_backend base;
    lmx_thread_pool *pool;
    int n_threads;
    float **scratch;       /* [n_threads][scratch_len] per-thread scratch */
    size_t scratch_len;
    float *shared;         /* [shared_len] scratch used by one op at a time (e.g. group sums of x) */
    size_t shared_len;
    lmx_cpu_kernels k;     /* inner kernels (scalar or AVX2), chosen at creation */
    pthread_mutex_t op_lock; /* one pool/scratch-using op at a time (callers on several threads are safe) */
    size_t mem_limit;        /* bytes of physical memory: buffers beyond it are refused */
    atomic_size_t buf_bytes; /* bytes held by live lmx_bufs */
} cpu_backend;

static cpu_backend *CPU(lmx_backend *be) { return (cpu_backend *)be; }

static lmx_status ensure_scratch(cpu_backend *c, size_t per_thread) {
    if (per_thread <= c->scratch_len) return LMX_OK;
    for (int i = 0; i < c->n_threads; i++) {
        float *p = realloc(c->scratch[i], per_thread * sizeof(float));
        if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: scratch of %zu floats", per_thread);
        c->scratch[i] = p;
    }
    c->scratch_len = per_thread;
    return LMX_OK;
}

static lmx_status ensure_shared(cpu_backend *c, size_t n) {
    if (n <= c->shared_len) return LMX_OK;
    float *p = realloc(c->shared, n * sizeof(float));
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: scratch of %zu floats", n);
    c->shared = p;
    c->shared_len = n;
    return LMX_OK;
}

/* ---- element conversion ---- */

static size_t wdtype_size(lmx_dtype t) { return t == LMX_DTYPE_F32 ? 4 : 2; }

static void convert_row(const lmx_cpu_kernels *k, const uint8_t *src, lmx_dtype t, int64_t n, float *dst) {
    if (t == LMX_DTYPE_F32) memcpy(dst, src, (size_t)n * 4);
    else if (t == LMX_DTYPE_BF16) k->bf16_row(src, n, dst);
    else k->f16_row(src, n, dst);
}

static float *convert_copy(const lmx_cpu_kernels *k, const void *src, lmx_dtype t, int64_t n) {
    float *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    if (d) convert_row(k, src, t, n, d);
    return d;
}

/* ---- memory ---- */

/* Buffers are calloc'd, so the kernel only backs the pages a forward pass touches; a KV cache for
 * --ctx 2^31 would still "succeed" (or abort under ASan) and fail much later. Buffers that together
 * exceed physical memory are refused up front. */
static lmx_status cpu_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out) {
    cpu_backend *c = CPU(be);
    *out = NULL;
    size_t bytes = n <= SIZE_MAX / sizeof(float) ? n * sizeof(float) : SIZE_MAX;
    size_t held = bytes <= c->mem_limit ? atomic_fetch_add(&c->buf_bytes, bytes) : atomic_load(&c->buf_bytes);
    if (bytes > c->mem_limit || held > c->mem_limit - bytes) {
        if (bytes <= c->mem_limit) atomic_fetch_sub(&c->buf_bytes, bytes);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY,
                         "cpu backend: a buffer of %zu floats on top of %zu bytes held exceeds the %zu bytes of "
                         "physical memory",
                         n, held, c->mem_limit);
    }
    lmx_buf *b = malloc(sizeof *b);
    float *d = calloc(n ? n : 1, sizeof(float));
    if (!b || !d) {
        free(b);
        free(d);
        atomic_fetch_sub(&c->buf_bytes, bytes);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: buffer of %zu floats", n);
    }
    b->n = n;
    b->data = d;
    b->view = false;
    *out = b;
    return LMX_OK;
}

static void cpu_buf_free(lmx_backend *be, lmx_buf *b) {
    if (!b) return;
    if (b->view) {
        free(b);
        return;
    }
    atomic_fetch_sub(&CPU(be)->buf_bytes, b->n * sizeof(float));
    free(b->data);
    free(b);
}

#define CHECK_RANGE(buf_, off_, cnt_, what_) LMX_BACKEND_CHECK_RANGE("cpu", buf_, off_, cnt_, what_)

static lmx_status cpu_buf_write(lmx_backend *be, lmx_buf *dst, size_t off, const float *src, size_t n) {
    (void)be;
    CHECK_RANGE(dst, off, n, "buf_write");
    memcpy(dst->data + off, src, n * sizeof(float));
    return LMX_OK;
}

static lmx_status cpu_buf_read(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n) {
    (void)be;
    CHECK_RANGE(src, off, n, "buf_read");
    memcpy(dst, src->data + off, n * sizeof(float));
    return LMX_OK;
}

static lmx_status cpu_buf_copy(lmx_backend *be, lmx_buf *dst, size_t dst_off, const lmx_buf *src, size_t src_off,
                               size_t n) {
    (void)be;
    CHECK_RANGE(dst, dst_off, n, "buf_copy");
    CHECK_RANGE(src, src_off, n, "buf_copy");
    memmove(dst->data + dst_off, src->data + src_off, n * sizeof(float));
    return LMX_OK;
}

static lmx_status cpu_buf_view(lmx_backend *be, lmx_buf *parent, size_t off, size_t n, lmx_buf **out) {
    (void)be;
    *out = NULL;
    if (!parent) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: buf_view of NULL");
    CHECK_RANGE(parent, off, n, "buf_view");
    lmx_buf *b = malloc(sizeof *b);
    if (!b) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: buffer view");
    b->n = n;
    b->data = parent->data + off;
    b->view = true;
    *out = b;
    return LMX_OK;
}

static void cpu_weight_free(lmx_backend *be, lmx_bweight *w) {
    (void)be;
    if (!w) return;
    if (w->view) {
        free(w);
        return;
    }
    free(w->own);
    free(w->vec);
    free(w->scales);
    free(w->biases);
    free(w->bias);
    free(w);
}

static lmx_status cpu_weight_upload_impl(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out) {
    cpu_backend *c = CPU(be);
    *out = NULL;
    LMX_BACKEND_TRY(lmx_backend_check_weight_desc(d));
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight", d->name);
    w->kind = d->kind;
    w->rows = d->rows;
    w->cols = d->cols;
    w->dtype = d->dtype;
    const char *what = d->name;
    if (d->kind == LMX_WEIGHT_VECTOR) {
        w->vec = convert_copy(&c->k, d->data, d->dtype, d->cols);
        if (!w->vec) goto oom;
    } else if (d->kind == LMX_WEIGHT_DENSE) {
        w->row_bytes = (size_t)d->cols * wdtype_size(d->dtype);
        w->data = (const uint8_t *)d->data + (size_t)d->row0 * w->row_bytes;
    } else {
        w->bits = d->bits;
        w->group_size = d->group_size;
        w->groups = (int)(d->cols / d->group_size);
        w->row_bytes = (size_t)d->cols * (size_t)d->bits / 8;
        w->data = (const uint8_t *)d->data + (size_t)d->row0 * w->row_bytes;
        size_t sb = wdtype_size(d->dtype);
        size_t off = (size_t)d->row0 * (size_t)w->groups * sb;
        w->scales = convert_copy(&c->k, (const uint8_t *)d->scales + off, d->dtype, d->rows * w->groups);
        w->biases = convert_copy(&c->k, (const uint8_t *)d->biases + off, d->dtype, d->rows * w->groups);
        if (!w->scales || !w->biases) goto oom;
    }
    if (d->bias) {
        w->bias = convert_copy(&c->k, (const uint8_t *)d->bias + (size_t)d->row0 * wdtype_size(d->bias_dtype),
                               d->bias_dtype, d->rows);
        if (!w->bias) goto oom;
    }
    /* per-thread scratch: a block of 4 converted/decoded rows */
    lmx_status st = ensure_scratch(c, 4 * (size_t)d->cols + 64);
    if (st != LMX_OK) {
        cpu_weight_free(be, w);
        return st;
    }
    *out = w;
    return LMX_OK;
oom:
    cpu_weight_free(be, w);
    return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight copy", what);
}

/* Test-only (lmx_backend_cpu_enable_fused): the parts' rows copied into one owned matrix (dense:
 * stored bytes; quant: packed words, fp32 scales/biases), views pointing into it. */
static lmx_status cpu_weight_upload_fused_impl(lmx_backend *be, const lmx_weight_desc *parts, int n,
                                               lmx_bweight **fused, lmx_bweight **views) {
    cpu_backend *c = CPU(be);
    *fused = NULL;
    for (int i = 0; i < n && views; i++) views[i] = NULL;
    int64_t rows = 0;
    LMX_BACKEND_TRY(lmx_backend_check_fused_parts("cpu", parts, n, &rows));
    const lmx_weight_desc *p0 = &parts[0];
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: fused weight", p0->name);
    w->kind = p0->kind;
    w->rows = rows;
    w->cols = p0->cols;
    w->dtype = p0->dtype;
    w->row_bytes = p0->kind == LMX_WEIGHT_DENSE ? (size_t)p0->cols * wdtype_size(p0->dtype)
                                                : (size_t)p0->cols * (size_t)p0->bits / 8;
    if (p0->kind == LMX_WEIGHT_QUANT) {
        w->bits = p0->bits;
        w->group_size = p0->group_size;
        w->groups = (int)(p0->cols / p0->group_size);
    }
    const size_t G = (size_t)w->groups, sb = wdtype_size(p0->dtype);
    w->own = malloc((size_t)rows * w->row_bytes);
    if (p0->kind == LMX_WEIGHT_QUANT) {
        w->scales = malloc((size_t)rows * G * sizeof(float));
        w->biases = malloc((size_t)rows * G * sizeof(float));
    }
    if (p0->bias) w->bias = malloc((size_t)rows * sizeof(float));
    if (!w->own || (p0->kind == LMX_WEIGHT_QUANT && (!w->scales || !w->biases)) || (p0->bias && !w->bias)) {
        cpu_weight_free(be, w);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: fused weight copy", p0->name);
    }
    w->data = w->own;
    int64_t r = 0;
    for (int i = 0; i < n; i++) {
        const lmx_weight_desc *p = &parts[i];
        memcpy(w->own + (size_t)r * w->row_bytes, (const uint8_t *)p->data + (size_t)p->row0 * w->row_bytes,
               (size_t)p->rows * w->row_bytes);
        if (p->kind == LMX_WEIGHT_QUANT) {
            size_t off = (size_t)p->row0 * G * sb;
            convert_row(&c->k, (const uint8_t *)p->scales + off, p->dtype, p->rows * (int64_t)G, w->scales + r * G);
            convert_row(&c->k, (const uint8_t *)p->biases + off, p->dtype, p->rows * (int64_t)G, w->biases + r * G);
        }
        if (p->bias)
            convert_row(&c->k, (const uint8_t *)p->bias + (size_t)p->row0 * wdtype_size(p->bias_dtype),
                        p->bias_dtype, p->rows, w->bias + r);
        r += p->rows;
    }
    lmx_status st = ensure_scratch(c, 4 * (size_t)w->cols + 64);
    r = 0;
    for (int i = 0; st == LMX_OK && i < n; i++) {
        lmx_bweight *v = malloc(sizeof *v);
        if (!v) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight view", parts[i].name);
            break;
        }
        *v = *w;
        v->own = NULL;
        v->view = true;
        v->rows = parts[i].rows;
        v->data = w->data + (size_t)r * w->row_bytes;
        if (w->scales) v->scales = w->scales + (size_t)r * G;
        if (w->biases) v->biases = w->biases + (size_t)r * G;
        if (w->bias) v->bias = w->bias + r;
        views[i] = v;
        r += parts[i].rows;
    }
    if (st != LMX_OK) {
        for (int i = 0; i < n; i++) {
            cpu_weight_free(be, views[i]);
            views[i] = NULL;
        }
        cpu_weight_free(be, w);
        return st;
    }
    *fused = w;
    return LMX_OK;
}

/* ---- matmul ---- */

typedef struct matmul_ctx {
    cpu_backend *c;
    const lmx_bweight *w;
    const float *x; /* [T, cols] */
    const float *xsum; /* quant: [T, groups] per-group sums of x */
    float *y;       /* [T, rows] */
    int T;
    bool acc;       /* matmul_add: y += result (the result rounded to float first, as matmul then add) */
} matmul_ctx;

static inline void mm_put(const matmul_ctx *m, size_t i, float v) {
    if (m->acc) m->y[i] += v;
    else m->y[i] = v;
}

static void matmul_rows(void *vctx, int64_t r0, int64_t r1, int thread) {
    matmul_ctx *m = vctx;
    const lmx_bweight *w = m->w;
    float *row = m->c->scratch[thread]; /* [cols] */
    const int64_t K = w->cols;
    const lmx_cpu_kernels *k = &m->c->k;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *src = w->data + (size_t)r * w->row_bytes;
        float b = w->bias ? w->bias[r] : 0.0f;
        if (w->kind == LMX_WEIGHT_DENSE && m->T == 1 && w->dtype != LMX_DTYPE_F32) {
            /* decode: read the stored half-precision row once, converting in registers */
            float d = w->dtype == LMX_DTYPE_BF16 ? k->dot_bf16(m->x, src, K) : k->dot_f16(m->x, src, K);
            mm_put(m, (size_t)r, d + b);
        } else if (w->kind == LMX_WEIGHT_DENSE) {
            convert_row(k, src, w->dtype, K, row);
            for (int t = 0; t < m->T; t++) mm_put(m, (size_t)t * w->rows + r, k->dot(m->x + (size_t)t * K, row, K) + b);
        } else {
            /* Σ_g s_g·Σ_k x_k q_k + b_g·Σ_k x_k */
            const float *s = w->scales + (size_t)r * w->groups, *bb = w->biases + (size_t)r * w->groups;
            for (int t = 0; t < m->T; t++)
                mm_put(m, (size_t)t * w->rows + r,
                       k->qdot(m->x + (size_t)t * K, src, w->bits, w->group_size, w->groups, s, bb,
                               m->xsum + (size_t)t * w->groups, row) + b);
        }
    }
}

/* Prefill form (T >= MATMUL_BLOCK_T): rows are materialized as fp32 in blocks of 4 (dequantized for
 * quantized weights) and each x row is read once per block. A partial block repeats its last row,
 * so every row is computed by the same dot4 arithmetic whatever the thread split. */
#define MATMUL_BLOCK_T 4

static void matmul_rows_blocked(void *vctx, int64_t r0, int64_t r1, int thread) {
    matmul_ctx *m = vctx;
    const lmx_bweight *w = m->w;
    const int64_t K = w->cols;
    const lmx_cpu_kernels *k = &m->c->k;
    float *blk = m->c->scratch[thread]; /* [4][cols] */
    for (int64_t r = r0; r < r1; r += 4) {
        int nb = r1 - r < 4 ? (int)(r1 - r) : 4;
        for (int i = 0; i < 4; i++) {
            int64_t rr = r + (i < nb ? i : nb - 1);
            float *row = blk + (size_t)i * K;
            const uint8_t *src = w->data + (size_t)rr * w->row_bytes;
            if (w->kind == LMX_WEIGHT_DENSE) {
                convert_row(k, src, w->dtype, K, row);
            } else {
                k->quant_row(src, w->bits, K, row);
                const float *s = w->scales + (size_t)rr * w->groups, *bb = w->biases + (size_t)rr * w->groups;
                const int G = w->group_size;
                for (int g = 0; g < w->groups; g++)
                    for (int j = 0; j < G; j++) row[g * G + j] = s[g] * row[g * G + j] + bb[g];
            }
        }
        for (int t = 0; t < m->T; t++) {
            float out[4];
            k->dot4(m->x + (size_t)t * K, blk, K, out);
            for (int i = 0; i < nb; i++)
                mm_put(m, (size_t)t * w->rows + r + i, out[i] + (w->bias ? w->bias[r + i] : 0.0f));
        }
    }
}

static lmx_status cpu_matmul_impl(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                             lmx_buf *y, bool acc) {
    cpu_backend *c = CPU(be);
    LMX_BACKEND_TRY(lmx_backend_check_matmul("cpu", w->kind, w->rows, w->cols, x->n, x_off, T, y->n));
    if (acc && x == y) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: matmul_add with y == x");
    matmul_ctx m = {c, w, x->data + x_off, NULL, y->data, T, acc};
    int64_t grain = w->rows / (c->n_threads * 4);
    if (grain < 16) grain = 16;
    if (T >= MATMUL_BLOCK_T) {
        lmx_thread_pool_run(c->pool, w->rows, (grain + 3) & ~(int64_t)3, matmul_rows_blocked, &m);
        return LMX_OK;
    }
    if (w->kind == LMX_WEIGHT_QUANT) {
        lmx_status st = ensure_shared(c, (size_t)T * (size_t)w->groups);
        if (st != LMX_OK) return st;
        float *xs = c->shared;
        for (int t = 0; t < T; t++)
            for (int g = 0; g < w->groups; g++) {
                const float *p = m.x + (size_t)t * w->cols + (size_t)g * w->group_size;
                float s = 0;
                for (int k = 0; k < w->group_size; k++) s += p[k];
                xs[(size_t)t * w->groups + g] = s;
            }
        m.xsum = xs;
    }
    lmx_thread_pool_run(c->pool, w->rows, grain, matmul_rows, &m);
    return LMX_OK;
}

/* ---- embedding ---- */

static lmx_status cpu_embed_impl(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale,
                            lmx_buf *y) {
    cpu_backend *c = CPU(be);
    CHECK_RANGE(y, 0, (size_t)T * (size_t)w->cols, "embed y");
    if (w->kind == LMX_WEIGHT_VECTOR) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "embed with a vector weight");
    LMX_BACKEND_TRY(lmx_backend_check_embed_ids(ids, T, w->rows));
    for (int t = 0; t < T; t++) {
        float *dst = y->data + (size_t)t * w->cols;
        const uint8_t *src = w->data + (size_t)ids[t] * w->row_bytes;
        if (w->kind == LMX_WEIGHT_DENSE) {
            convert_row(&c->k, src, w->dtype, w->cols, dst);
        } else {
            float *q = c->scratch[0];
            c->k.quant_row(src, w->bits, w->cols, q);
            const float *s = w->scales + (size_t)ids[t] * w->groups, *b = w->biases + (size_t)ids[t] * w->groups;
            for (int64_t k = 0; k < w->cols; k++) dst[k] = s[k / w->group_size] * q[k] + b[k / w->group_size];
        }
        if (scale != 1.0f)
            for (int64_t k = 0; k < w->cols; k++) dst[k] *= scale;
    }
    return LMX_OK;
}

/* ---- rmsnorm ---- */

typedef struct norm_ctx {
    const float *x;
    float *y;
    int dim;
    const float *w;
    float eps;
    bool plus_one;
} norm_ctx;

static void norm_rows(void *vctx, int64_t r0, int64_t r1, int thread) {
    (void)thread;
    norm_ctx *n = vctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = n->x + (size_t)r * n->dim;
        float *y = n->y + (size_t)r * n->dim;
        double ss = 0;
        for (int i = 0; i < n->dim; i++) ss += (double)x[i] * x[i];
        float inv = (float)(1.0 / sqrt(ss / n->dim + n->eps));
        for (int i = 0; i < n->dim; i++) y[i] = (x[i] * inv) * (n->plus_one ? 1.0f + n->w[i] : n->w[i]);
    }
}

static lmx_status cpu_rmsnorm_impl(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim,
                              const lmx_bweight *w, float eps, bool plus_one) {
    cpu_backend *c = CPU(be);
    LMX_BACKEND_TRY(lmx_backend_check_rmsnorm("cpu", x->n, y->n, rows, dim, w->kind, w->cols));
    norm_ctx n = {x->data, y->data, dim, w->vec, eps, plus_one};
    lmx_thread_pool_run(c->pool, rows, 64, norm_rows, &n);
    return LMX_OK;
}

/* ---- rope ---- */

typedef struct rope_ctx {
    float *x;
    int n_heads, head_dim, rot_dim;
    const float *inv_freq;
    float mscale;
    const int32_t *pos;
    cpu_backend *c;
} rope_ctx;

static void rope_rows(void *vctx, int64_t t0, int64_t t1, int thread) {
    rope_ctx *r = vctx;
    const int half = r->rot_dim / 2;
    float *cs = r->c->scratch[thread]; /* [half] cos, [half] sin */
    float *sn = cs + half;
    for (int64_t t = t0; t < t1; t++) {
        float p = (float)r->pos[t];
        for (int i = 0; i < half; i++) {
            float a = p * r->inv_freq[i]; /* fp32 angle, as transformers computes it */
            cs[i] = (float)cos((double)a) * r->mscale;
            sn[i] = (float)sin((double)a) * r->mscale;
        }
        for (int h = 0; h < r->n_heads; h++) {
            float *v = r->x + ((size_t)t * r->n_heads + h) * r->head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

static lmx_status cpu_rope_impl(lmx_backend *be, lmx_buf *x, int T, int n_heads, int head_dim, int rot_dim,
                           const lmx_bweight *inv_freq, float mscale, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    LMX_BACKEND_TRY(
        lmx_backend_check_rope("cpu", x->n, T, n_heads, head_dim, rot_dim, inv_freq->kind, inv_freq->cols));
    lmx_status st = ensure_scratch(c, (size_t)rot_dim + 8);
    if (st != LMX_OK) return st;
    rope_ctx r = {x->data, n_heads, head_dim, rot_dim, inv_freq->vec, mscale, pos, c};
    lmx_thread_pool_run(c->pool, T, 4, rope_rows, &r);
    return LMX_OK;
}

/* ---- kv cache ---- */

static lmx_status cpu_kv_write(lmx_backend *be, lmx_buf *kc, lmx_buf *vc, const lmx_buf *k, const lmx_buf *v, int T,
                               int n_kv, int head_dim, int capacity, const int32_t *pos) {
    (void)be;
    if (capacity < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv_write: capacity %d", capacity);
    LMX_BACKEND_TRY(lmx_backend_check_kv_write_bufs("cpu", kc->n, vc->n, k->n, v->n, T, n_kv, head_dim, capacity));
    for (int t = 0; t < T; t++) {
        if (pos[t] < 0)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv_write: negative position %d", pos[t]);
        for (int h = 0; h < n_kv; h++) {
            size_t dst = ((size_t)h * capacity + (size_t)(pos[t] % capacity)) * head_dim;
            size_t src = ((size_t)t * n_kv + h) * head_dim;
            memcpy(kc->data + dst, k->data + src, (size_t)head_dim * sizeof(float));
            memcpy(vc->data + dst, v->data + src, (size_t)head_dim * sizeof(float));
        }
    }
    return LMX_OK;
}

/* ---- attention ---- */

typedef struct attn_ctx {
    cpu_backend *c;
    const float *q, *kc, *vc;
    float *out;
    const lmx_attn_params *p;
    const int32_t *pos;
} attn_ctx;

static void attn_rows(void *vctx, int64_t i0, int64_t i1, int thread) {
    attn_ctx *a = vctx;
    const lmx_attn_params *p = a->p;
    const int D = p->head_dim, group = p->n_heads / p->n_kv_heads, cap = p->capacity;
    float *sc = a->c->scratch[thread]; /* [capacity] scores of positions lo..pt, then [D] accumulator */
    for (int64_t i = i0; i < i1; i++) {
        int t = (int)(i / p->n_heads), h = (int)(i % p->n_heads), kh = h / group;
        int pt = a->pos[t];
        int lo = p->window > 0 && pt - p->window + 1 > 0 ? pt - p->window + 1 : 0;
        const float *q = a->q + ((size_t)t * p->n_heads + h) * D;
        const float *K = a->kc + (size_t)kh * cap * D, *V = a->vc + (size_t)kh * cap * D;
        float mx = -INFINITY;
        for (int j = lo; j <= pt; j++) {
            float s = a->c->k.dot(q, K + (size_t)(j % cap) * D, D) * p->scale;
            if (p->softcap > 0) s = p->softcap * tanhf(s / p->softcap);
            sc[j - lo] = s;
            if (s > mx) mx = s;
        }
        float sum = 0;
        for (int j = 0; j <= pt - lo; j++) {
            sc[j] = expf(sc[j] - mx);
            sum += sc[j];
        }
        float *acc = sc + cap;
        memset(acc, 0, (size_t)D * sizeof(float));
        for (int j = lo; j <= pt; j++) a->c->k.axpy(acc, V + (size_t)(j % cap) * D, sc[j - lo], D);
        float *o = a->out + ((size_t)t * p->n_heads + h) * D;
        float inv = 1.0f / sum;
        for (int d = 0; d < D; d++) o[d] = acc[d] * inv;
    }
}

static lmx_status cpu_attention_impl(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc,
                                lmx_buf *out, const lmx_attn_params *p, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    LMX_BACKEND_TRY(lmx_backend_check_attention("cpu", p, q->n, out->n, kc->n, vc->n));
    /* every key a query sees must still be in its slot: the newest position written by this call
     * minus the oldest visible one must fit in the ring (full caches: positions < capacity) */
    int max_pos = -1;
    for (int t = 0; t < p->n_tokens; t++) {
        if (pos[t] < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: negative position %d", pos[t]);
        if (pos[t] > max_pos) max_pos = pos[t];
    }
    for (int t = 0; t < p->n_tokens; t++) {
        int lo = p->window > 0 && pos[t] - p->window + 1 > 0 ? pos[t] - p->window + 1 : 0;
        if (max_pos - lo >= p->capacity)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                             "attention: positions %d..%d do not fit in a cache of %d slots (window %d)", lo, max_pos,
                             p->capacity, p->window);
    }
    lmx_status st = ensure_scratch(c, (size_t)p->capacity + (size_t)p->head_dim + 8);
    if (st != LMX_OK) return st;
    attn_ctx a = {c, q->data, kc->data, vc->data, out->data, p, pos};
    lmx_thread_pool_run(c->pool, (int64_t)p->n_tokens * p->n_heads, 1, attn_rows, &a);
    return LMX_OK;
}

/* ---- elementwise ---- */

typedef struct ew_ctx {
    float *x;
    const float *y;
    lmx_act_kind act;
    float cap;
} ew_ctx;

static void act_range(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    ew_ctx *c = vctx;
    if (c->act == LMX_BACT_SILU_MUL) {
        for (int64_t i = b; i < e; i++) {
            float g = c->x[i];
            c->x[i] = g / (1.0f + expf(-g)) * c->y[i];
        }
    } else {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        for (int64_t i = b; i < e; i++) {
            float g = c->x[i];
            c->x[i] = 0.5f * g * (1.0f + tanhf(k * (g + 0.044715f * g * g * g))) * c->y[i];
        }
    }
}

static lmx_status cpu_act_mul_impl(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act) {
    CHECK_RANGE(gate, 0, n, "act gate");
    CHECK_RANGE(up, 0, n, "act up");
    ew_ctx e = {gate->data, up->data, act, 0};
    lmx_thread_pool_run(CPU(be)->pool, (int64_t)n, 8192, act_range, &e);
    return LMX_OK;
}

static lmx_status cpu_add(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n) {
    (void)be;
    CHECK_RANGE(x, 0, n, "add x");
    CHECK_RANGE(y, 0, n, "add y");
    for (size_t i = 0; i < n; i++) x->data[i] += y->data[i];
    return LMX_OK;
}

static lmx_status cpu_softcap(lmx_backend *be, lmx_buf *x, size_t n, float cap) {
    (void)be;
    CHECK_RANGE(x, 0, n, "softcap");
    if (!(cap > 0)) return LMX_OK;
    for (size_t i = 0; i < n; i++) x->data[i] = cap * tanhf(x->data[i] / cap);
    return LMX_OK;
}

/* ---- serialized entry points ---- */

static lmx_status cpu_weight_upload(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_weight_upload_impl(be, d, out);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_weight_upload_fused(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                                          lmx_bweight **views) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_weight_upload_fused_impl(be, parts, n, fused, views);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T, lmx_buf *y) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_matmul_impl(be, w, x, x_off, T, y, false);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale, lmx_buf *y) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_embed_impl(be, w, ids, T, scale, y);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_rmsnorm(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w, float eps, bool plus_one) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_rmsnorm_impl(be, x, y, rows, dim, w, eps, plus_one);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_rope(lmx_backend *be, lmx_buf *x, int T, int n_heads, int head_dim, int rot_dim, const lmx_bweight *inv_freq, float mscale, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_rope_impl(be, x, T, n_heads, head_dim, rot_dim, inv_freq, mscale, pos);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc, lmx_buf *out, const lmx_attn_params *p, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_attention_impl(be, q, kc, vc, out, p, pos);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_act_mul(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_act_mul_impl(be, gate, up, n, act);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

/* ---- fused ops (backend.h): the unfused ops' arithmetic, bit for bit ---- */

/* act_mul_split: per row, the gate half is copied into out and act_range (act_mul's own loop) runs
 * on it with the up half, so the arithmetic is act_mul's exactly */
static lmx_status cpu_act_mul_split(lmx_backend *be, const lmx_buf *gu, int T, int inter, lmx_act_kind act,
                                    lmx_buf *out) {
    cpu_backend *c = CPU(be);
    if (T < 1 || inter < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "act_mul_split: T %d inter %d", T, inter);
    const size_t I = (size_t)inter;
    CHECK_RANGE(gu, 0, (size_t)T * 2 * I, "act_mul_split gu");
    CHECK_RANGE(out, 0, (size_t)T * I, "act_mul_split out");
    const uintptr_t g0 = (uintptr_t)gu->data, o0 = (uintptr_t)out->data;
    if (g0 < o0 + (size_t)T * I * sizeof(float) && o0 < g0 + (size_t)T * 2 * I * sizeof(float))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "act_mul_split: out overlaps gu");
    pthread_mutex_lock(&c->op_lock);
    for (int t = 0; t < T; t++) {
        memcpy(out->data + (size_t)t * I, gu->data + (size_t)t * 2 * I, I * sizeof(float)); /* [inter] gate row */
        ew_ctx e = {out->data + (size_t)t * I, gu->data + (size_t)t * 2 * I + I, act, 0};
        lmx_thread_pool_run(c->pool, (int64_t)I, 8192, act_range, &e);
    }
    pthread_mutex_unlock(&c->op_lock);
    return LMX_OK;
}

static lmx_status cpu_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                                 lmx_buf *y) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_matmul_impl(be, w, x, x_off, T, y, true);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

typedef struct qk_ctx {
    cpu_backend *c;
    float *q, *k;             /* row 0 of q / k */
    const float *v;           /* row 0 of v */
    size_t qs, ks, vs;        /* row strides */
    float *kc, *vc;           /* caches [n_kv][capacity][head_dim] */
    const lmx_qk_rope_params *p;
    const int32_t *pos;       /* [T] */
} qk_ctx;

/* tokens t0..t1: per-head norm (norm_rows), rotation (rope_rows) of q and k, then the kv_write copy */
static void qk_rows(void *vctx, int64_t t0, int64_t t1, int thread) {
    qk_ctx *f = vctx;
    const lmx_qk_rope_params *p = f->p;
    const int D = p->head_dim, NH = p->n_heads, NKV = p->n_kv_heads;
    for (int64_t t = t0; t < t1; t++) {
        float *q = f->q + (size_t)t * f->qs, *k = f->k + (size_t)t * f->ks;
        if (p->q_norm) {
            norm_ctx nq = {q, q, D, p->q_norm->vec, p->eps, p->norm_plus_one};
            norm_ctx nk = {k, k, D, p->k_norm->vec, p->eps, p->norm_plus_one};
            norm_rows(&nq, 0, NH, thread);
            norm_rows(&nk, 0, NKV, thread);
        }
        rope_ctx rq = {q, NH, D, p->rot_dim, p->inv_freq->vec, p->mscale, f->pos + t, f->c};
        rope_ctx rk = {k, NKV, D, p->rot_dim, p->inv_freq->vec, p->mscale, f->pos + t, f->c};
        rope_rows(&rq, 0, 1, thread);
        rope_rows(&rk, 0, 1, thread);
        const float *v = f->v + (size_t)t * f->vs;
        const size_t slot = (size_t)(f->pos[t] % p->capacity);
        for (int h = 0; h < NKV; h++) {
            size_t dst = ((size_t)h * p->capacity + slot) * D;
            memcpy(f->kc + dst, k + (size_t)h * D, (size_t)D * sizeof(float));
            memcpy(f->vc + dst, v + (size_t)h * D, (size_t)D * sizeof(float));
        }
    }
}

static lmx_status cpu_rope_qk_store_impl(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc,
                                         lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    if (!p->inv_freq) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: no inv_freq");
    LMX_BACKEND_TRY(lmx_backend_check_rope_qk_store(
        "cpu", p, q->n, k->n, v->n, kc->n, vc->n, p->inv_freq->kind, p->inv_freq->cols,
        p->q_norm ? p->q_norm->kind : LMX_WEIGHT_VECTOR, p->q_norm ? p->q_norm->cols : 0,
        p->k_norm ? p->k_norm->kind : LMX_WEIGHT_VECTOR, p->k_norm ? p->k_norm->cols : 0));
    for (int t = 0; t < p->n_tokens; t++)
        if (pos[t] < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: negative position %d", pos[t]);
    lmx_status st = ensure_scratch(c, (size_t)p->rot_dim + 8);
    if (st != LMX_OK) return st;
    const size_t D = (size_t)p->head_dim;
    qk_ctx f = {c,
                q->data + p->q_off,
                k->data + p->k_off,
                v->data + p->v_off,
                p->q_stride ? p->q_stride : (size_t)p->n_heads * D,
                p->k_stride ? p->k_stride : (size_t)p->n_kv_heads * D,
                p->v_stride ? p->v_stride : (size_t)p->n_kv_heads * D,
                kc->data,
                vc->data,
                p,
                pos};
    lmx_thread_pool_run(c->pool, p->n_tokens, 4, qk_rows, &f);
    return LMX_OK;
}

static lmx_status cpu_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc,
                                    lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_rope_qk_store_impl(be, q, k, v, kc, vc, p, pos);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

/* ---- lifecycle ---- */

static void cpu_destroy(lmx_backend *be) {
    cpu_backend *c = CPU(be);
    if (!c) return;
    lmx_thread_pool_destroy(c->pool);
    pthread_mutex_destroy(&c->op_lock);
    if (c->scratch)
        for (int i = 0; i < c->n_threads; i++) free(c->scratch[i]);
    free(c->scratch);
    free(c->shared);
    free(c);
}

#define CPU_OPS_COMMON                     \
    .name = "cpu",                         \
    .destroy = cpu_destroy,                \
    .buf_alloc = cpu_buf_alloc,            \
    .buf_free = cpu_buf_free,              \
    .buf_write = cpu_buf_write,            \
    .buf_read = cpu_buf_read,              \
    .buf_copy = cpu_buf_copy,              \
    .weight_upload = cpu_weight_upload,    \
    .weight_free = cpu_weight_free,        \
    .matmul = cpu_matmul,                  \
    .embed = cpu_embed,                    \
    .rmsnorm = cpu_rmsnorm,                \
    .rope = cpu_rope,                      \
    .kv_write = cpu_kv_write,              \
    .attention = cpu_attention,            \
    .act_mul = cpu_act_mul,                \
    .add = cpu_add,                        \
    .softcap = cpu_softcap,                \
    .matmul_add = cpu_matmul_add,          \
    .rope_qk_store = cpu_rope_qk_store,    \
    .buf_view = cpu_buf_view,              \
    .act_mul_split = cpu_act_mul_split

static const lmx_backend_ops cpu_ops = {CPU_OPS_COMMON};
/* the same plus the test-only fused upload (lmx_backend_cpu_enable_fused) */
static const lmx_backend_ops cpu_ops_fused = {CPU_OPS_COMMON, .weight_upload_fused = cpu_weight_upload_fused};

lmx_status lmx_backend_cpu_enable_fused(lmx_backend *be) {
    if (!be || (be->ops != &cpu_ops && be->ops != &cpu_ops_fused))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "enable_fused: not a cpu backend");
    be->ops = &cpu_ops_fused;
    return LMX_OK;
}

lmx_status lmx_backend_cpu_create(int n_threads, lmx_backend **out) {
    return lmx_backend_cpu_create_ex(n_threads, !lmx_env_off("LMX_CPU_SIMD"), out);
}

const char *lmx_backend_cpu_kernels(const lmx_backend *be) {
    return be && (be->ops == &cpu_ops || be->ops == &cpu_ops_fused) ? ((const cpu_backend *)be)->k.name : NULL;
}

lmx_status lmx_backend_cpu_create_ex(int n_threads, bool allow_simd, lmx_backend **out) {
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 64) n_threads = 64;
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend");
    c->base.ops = &cpu_ops;
    c->n_threads = n_threads;
    lmx_cpu_kernels_select(&c->k, allow_simd);
    pthread_mutex_init(&c->op_lock, NULL);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    c->mem_limit = pages > 0 && page > 0 && (size_t)pages <= SIZE_MAX / (size_t)page ? (size_t)pages * (size_t)page
                                                                                     : SIZE_MAX;
    atomic_init(&c->buf_bytes, 0);
    c->scratch = calloc((size_t)n_threads, sizeof *c->scratch);
    lmx_status st = c->scratch ? lmx_thread_pool_create(n_threads, &c->pool)
                               : lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend");
    if (st == LMX_OK) st = ensure_scratch(c, 1024);
    if (st != LMX_OK) {
        cpu_destroy(&c->base);
        return st;
    }
    *out = &c->base;
    return LMX_OK;
}
