/* cuda_backend_mem.c — the CUDA backend's memory: activation and KV buffers (fp32; caches in the
 * backend's KV element type), host <-> device copies, and weight uploads (dense kept in their dtype,
 * MLX-quantized kept packed, vectors and biases converted to fp32; fused q|k|v and gate|up as one
 * matrix with views). Uploads go through a ring of pinned staging buffers (cuda_upload.h) filled by
 * copy threads while earlier buffers DMA; pageable copies where the ring is off or failed. */
#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "backend/backend_fuse.h"
#include "util/error.h"
#include "util/log.h"

static size_t wsize(lmx_dtype t) { return t == LMX_DTYPE_F32 ? 4 : 2; }

static float host_to_f32(const uint8_t *p, lmx_dtype t) {
    if (t == LMX_DTYPE_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    if (t == LMX_DTYPE_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, ex = (h >> 10) & 31u, mant = h & 1023u, u;
    if (ex == 0) {
        float f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    if (ex == 31) u = sign | 0x7f800000u | (mant << 13);
    else u = sign | ((ex + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* 4 pinned buffers of 32 MiB: a buffer DMAs in ~0.6 ms at PCIe 5 rates while the next is filled */
#define STAGE_BUF_BYTES ((size_t)32 << 20)
#define STAGE_BUFS 4

/* the staging ring, created on first use (c->up_lock held by the caller; NULL = pageable copies) */
static lmx_cuda_uploader *uploader_locked(cuda_backend *c) {
    if (!c->up && c->staging && !c->up_failed) {
        if (lmx_cuda_uploader_create(STAGE_BUF_BYTES, STAGE_BUFS, 0, &c->up) != LMX_OK) {
            LMX_LOG_W("cuda backend: no pinned staging buffers (%s); weights upload through pageable copies",
                      lmx_last_error_detail());
            c->up_failed = true;
        }
        if (c->up) c->staged_any = true;
    }
    return c->up;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* host bytes (mmapped, any alignment) into device memory: through the staging ring (asynchronous:
 * upload_fence orders the op stream after it) or a pageable copy */
static lmx_status stage_copy(cuda_backend *c, void *d_dst, const void *src, size_t bytes) {
    uint64_t t0 = now_ns();
    pthread_mutex_lock(&c->up_lock);
    lmx_cuda_uploader *u = uploader_locked(c);
    lmx_status st = u ? lmx_cuda_uploader_copy(u, d_dst, src, bytes) : lmx_cuda_memcpy_h2d(d_dst, src, bytes, NULL);
    pthread_mutex_unlock(&c->up_lock);
    atomic_fetch_add(&c->up_copy_ns, now_ns() - t0);
    atomic_fetch_add(&c->up_bytes, bytes);
    return st;
}

/* lmx_cuda_malloc of weight memory, timed */
static lmx_status weight_malloc(cuda_backend *c, void **out, size_t bytes) {
    uint64_t t0 = now_ns();
    lmx_status st = lmx_cuda_malloc(out, bytes);
    atomic_fetch_add(&c->up_malloc_ns, now_ns() - t0);
    return st;
}

/* every later op (on the op stream, or the legacy stream, which waits for it) after the uploads */
static lmx_status upload_fence(cuda_backend *c) {
    pthread_mutex_lock(&c->up_lock);
    lmx_status st = c->up ? lmx_cuda_uploader_fence(c->up, c->stream) : LMX_OK;
    pthread_mutex_unlock(&c->up_lock);
    return st;
}

/* backend.h upload_end: waits for the copies in flight, then releases the ring (4 x 32 MiB pinned
 * and the copy threads) until the next upload */
lmx_status lmx_cub_upload_end(lmx_backend *be) {
    cuda_backend *c = CB(be);
    pthread_mutex_lock(&c->up_lock);
    lmx_status st = LMX_OK;
    if (c->up) {
        uint64_t t0 = now_ns();
        st = lmx_cuda_uploader_sync(c->up);
        lmx_cuda_uploader_destroy(c->up);
        c->up = NULL;
        atomic_fetch_add(&c->up_copy_ns, now_ns() - t0);
    }
    pthread_mutex_unlock(&c->up_lock);
    return st;
}

/* n elements of dtype t (possibly unaligned host bytes) as fp32 into device d_dst [n] */
static lmx_status upload_f32_into(cuda_backend *c, const void *src, lmx_dtype t, int64_t n, float *d_dst) {
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof *h);
    if (!h) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend: host staging of %lld floats", (long long)n);
    for (int64_t i = 0; i < n; i++) h[i] = host_to_f32((const uint8_t *)src + (size_t)i * wsize(t), t);
    lmx_status st = stage_copy(c, d_dst, h, (size_t)n * sizeof(float)); /* h is staged before it returns */
    free(h);
    return st;
}

/* uploads n elements of dtype t (possibly unaligned host bytes) as fp32 */
static lmx_status upload_f32(cuda_backend *c, const void *src, lmx_dtype t, int64_t n, float **out) {
    *out = NULL;
    lmx_status st = weight_malloc(c, (void **)out, (size_t)n * sizeof(float));
    if (st == LMX_OK) st = upload_f32_into(c, src, t, n, *out);
    return st;
}


/* ---- memory ---- */

lmx_status lmx_cub_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out) {
    (void)be;
    *out = NULL;
    lmx_buf *b = calloc(1, sizeof *b);
    if (!b) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend: buffer");
    lmx_status st = lmx_cuda_malloc((void **)&b->d, (n ? n : 1) * sizeof(float));
    if (st == LMX_OK) st = lmx_cuda_memset(b->d, 0, (n ? n : 1) * sizeof(float), NULL);
    if (st != LMX_OK) {
        lmx_cuda_free(b->d);
        free(b);
        return lmx_error_prefix(st, "cuda backend: buffer of %zu floats", n);
    }
    b->n = n;
    *out = b;
    return LMX_OK;
}

void lmx_cub_buf_free(lmx_backend *be, lmx_buf *b) {
    (void)be;
    if (!b) return;
    if (!b->view) lmx_cuda_free(b->d);
    free(b);
}

static size_t kv_dt_bytes(lmx_dtype t) { return t == LMX_DTYPE_F32 ? 4 : 2; }

size_t lmx_cub_kv_elem_bytes(const lmx_backend *be) { return kv_dt_bytes(((const cuda_backend *)be)->kv_dt); }

/* a k or v cache of n elements in the backend's KV dtype (zeroed) */
lmx_status lmx_cub_kv_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out) {
    cuda_backend *c = CB(be);
    *out = NULL;
    lmx_buf *b = calloc(1, sizeof *b);
    if (!b) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend: kv buffer");
    const size_t bytes = (n ? n : 1) * kv_dt_bytes(c->kv_dt);
    lmx_status st = lmx_cuda_malloc((void **)&b->d, bytes);
    if (st == LMX_OK) st = lmx_cuda_memset(b->d, 0, bytes, NULL);
    if (st != LMX_OK) {
        lmx_cuda_free(b->d);
        free(b);
        return lmx_error_prefix(st, "cuda backend: kv buffer of %zu elements", n);
    }
    b->n = n;
    b->dt = c->kv_dt;
    *out = b;
    return LMX_OK;
}

lmx_status lmx_cub_buf_write(lmx_backend *be, lmx_buf *dst, size_t off, const float *src, size_t n) {
    cuda_backend *c = CB(be);
    if (stepping(c)) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: buf_write inside a decode step");
    }
    CHECK_RANGE(dst, off, n, "buf_write");
    return lmx_cuda_memcpy_h2d(dst->d + off, src, n * sizeof(float), c->stream);
}

lmx_status lmx_cub_buf_read(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n) {
    cuda_backend *c = CB(be);
    if (stepping(c)) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: buf_read inside a decode step");
    }
    CHECK_RANGE(src, off, n, "buf_read");
    lmx_status st = lmx_cuda_memcpy_d2h(dst, src->d + off, n * sizeof(float), c->stream);
    if (st == LMX_OK) st = lmx_cuda_stream_sync(c->stream);
    return st;
}

lmx_status lmx_cub_buf_copy(lmx_backend *be, lmx_buf *dst, size_t dst_off, const lmx_buf *src, size_t src_off,
                              size_t n) {
    cuda_backend *c = CB(be);
    /* two KV cache buffers (the pool's fork and copy-on-write): offsets and counts in their element
     * type; a KV buffer and an activation buffer never mix */
    const bool kv = dst->dt != LMX_DTYPE_F32 || src->dt != LMX_DTYPE_F32;
    size_t es = sizeof(float);
    if (kv) {
        if (dst->dt != src->dt)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: buf_copy between a KV cache and another buffer");
        LMX_BACKEND_CHECK_RANGE("cuda", dst, dst_off, n, "buf_copy");
        LMX_BACKEND_CHECK_RANGE("cuda", src, src_off, n, "buf_copy");
        es = kv_dt_bytes(dst->dt);
    } else {
        CHECK_RANGE(dst, dst_off, n, "buf_copy");
        CHECK_RANGE(src, src_off, n, "buf_copy");
    }
    if (dst == src && dst_off != src_off && (dst_off < src_off + n && src_off < dst_off + n))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: overlapping buf_copy");
    char *dd = (char *)dst->d + dst_off * es;
    const char *sd = (const char *)src->d + src_off * es;
    if (stepping(c)) {
        SIGI(1); SIGP(dd); SIGP(sd); SIGI(n * es);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_memcpy_d2d(dd, sd, n * es, c->stream);
}

lmx_status lmx_cub_buf_view(lmx_backend *be, lmx_buf *parent, size_t off, size_t n, lmx_buf **out) {
    (void)be;
    *out = NULL;
    if (!parent) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: buf_view of NULL");
    CHECK_RANGE(parent, off, n, "buf_view");
    lmx_buf *b = calloc(1, sizeof *b);
    if (!b) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend: buffer view");
    b->n = n;
    b->d = parent->d + off;
    b->view = true;
    *out = b;
    return LMX_OK;
}

void lmx_cub_weight_free(lmx_backend *be, lmx_bweight *w) {
    (void)be;
    if (!w) return;
    if (w->view) {
        free(w);
        return;
    }
    lmx_cuda_free(w->dw);
    lmx_cuda_free(w->ds);
    lmx_cuda_free(w->db);
    lmx_cuda_free(w->dbias);
    lmx_cuda_free(w->vec);
    free(w);
}

/* bytes per row of a matrix part: packed words / dense elements, and scales (= biases; 0 if dense) */
static void matrix_row_bytes(const lmx_weight_desc *p, size_t *row_bytes, size_t *sbytes) {
    const bool quant = p->kind == LMX_WEIGHT_QUANT;
    *row_bytes = quant ? (size_t)p->cols * (size_t)p->bits / 8 : (size_t)p->cols * wsize(p->dtype);
    *sbytes = quant ? (size_t)(p->cols / p->group_size) * (lmx_quant_mode_is_fp(p->mode) ? 1 : wsize(p->dtype)) : 0;
}

/* A matrix of `rows` rows into w: one device allocation per component (packed words / dense
 * elements, scales, biases, fp32 bias), the n parts' rows [row0, row0 + rows) copied in order
 * (weight_upload: one part; weight_upload_fused: the parts of the fused matrix). */
static lmx_status matrix_upload(cuda_backend *c, const lmx_weight_desc *parts, int n, int64_t rows, lmx_bweight *w) {
    const lmx_weight_desc *p0 = &parts[0];
    const bool quant = p0->kind == LMX_WEIGHT_QUANT, fp = quant && lmx_quant_mode_is_fp(p0->mode);
    size_t row_bytes, sbytes;
    matrix_row_bytes(p0, &row_bytes, &sbytes);
    w->kind = p0->kind;
    w->rows = rows;
    w->cols = p0->cols;
    w->fp32_x = p0->fp32_x;
    w->m.dtype = (lmx_dtype)p0->dtype;
    w->m.n = rows;
    w->m.k = p0->cols;
    if (quant) {
        w->m.bits = p0->bits;
        w->m.group_size = p0->group_size;
    }
    lmx_status st = weight_malloc(c, &w->dw, (size_t)rows * row_bytes);
    if (st == LMX_OK && quant) st = weight_malloc(c, &w->ds, (size_t)rows * sbytes);
    if (st == LMX_OK && quant && !fp) st = weight_malloc(c, &w->db, (size_t)rows * sbytes);
    if (st == LMX_OK && p0->bias) st = weight_malloc(c, (void **)&w->dbias, (size_t)rows * sizeof(float));
    int64_t r = 0;
    for (int i = 0; st == LMX_OK && i < n; i++) {
        const lmx_weight_desc *p = &parts[i];
        st = stage_copy(c, (uint8_t *)w->dw + (size_t)r * row_bytes,
                        (const uint8_t *)p->data + (size_t)p->row0 * row_bytes, (size_t)p->rows * row_bytes);
        if (st == LMX_OK && quant)
            st = stage_copy(c, (uint8_t *)w->ds + (size_t)r * sbytes,
                            (const uint8_t *)p->scales + (size_t)p->row0 * sbytes, (size_t)p->rows * sbytes);
        if (st == LMX_OK && quant && !fp)
            st = stage_copy(c, (uint8_t *)w->db + (size_t)r * sbytes,
                            (const uint8_t *)p->biases + (size_t)p->row0 * sbytes, (size_t)p->rows * sbytes);
        if (st == LMX_OK && p->bias)
            st = upload_f32_into(c, (const uint8_t *)p->bias + (size_t)p->row0 * wsize(p->bias_dtype), p->bias_dtype,
                                 p->rows, w->dbias + r);
        r += p->rows;
    }
    w->m.w = w->dw;
    w->m.scales = w->ds;
    w->m.biases = w->db;
    w->m.bias = w->dbias;
    w->m.bias_dtype = LMX_DTYPE_F32;
    if (fp) { /* cuda_mx.cu's kernels: codes, uint8 scales, no biases */
        w->mode = p0->mode;
        w->mx = (lmx_cuda_mx){w->dw, (const uint8_t *)w->ds, w->dbias, p0->mode, rows, p0->cols};
        return st == LMX_OK ? lmx_cuda_mx_check(&w->mx) : st;
    }
    if (st == LMX_OK) st = lmx_cuda_matrix_check(&w->m);
    return st;
}

lmx_status lmx_cub_weight_upload(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out) {
    cuda_backend *c = CB(be);
    *out = NULL;
    LMX_BACKEND_TRY(lmx_backend_check_weight_desc(d));
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight", d->name);
    lmx_status st = LMX_OK;
    if (d->kind == LMX_WEIGHT_VECTOR) {
        w->kind = d->kind;
        w->rows = d->rows;
        w->cols = d->cols;
        st = upload_f32(c, d->data, d->dtype, d->cols, &w->vec);
    } else {
        st = matrix_upload(c, d, 1, d->rows, w);
    }
    if (st == LMX_OK) st = upload_fence(c);
    if (st != LMX_OK) {
        lmx_cub_weight_free(be, w);
        return lmx_error_prefix(st, "%s", d->name);
    }
    *out = w;
    return LMX_OK;
}

/* backend.h weight_upload_fused: the parts as one matrix (matrix_upload); views at row offsets */
lmx_status lmx_cub_weight_upload_fused(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                                       lmx_bweight **views) {
    cuda_backend *c = CB(be);
    *fused = NULL;
    for (int i = 0; i < n && views; i++) views[i] = NULL;
    int64_t rows = 0;
    LMX_BACKEND_TRY(lmx_backend_check_fused_parts("cuda", parts, n, &rows));
    const lmx_weight_desc *p0 = &parts[0];
    if (p0->kind == LMX_WEIGHT_QUANT && lmx_quant_mode_is_fp(p0->mode))
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: cuda backend keeps %s weights separate", p0->name,
                         lmx_quant_mode_name(p0->mode));
    const bool quant = p0->kind == LMX_WEIGHT_QUANT;
    size_t row_bytes, sbytes;
    matrix_row_bytes(p0, &row_bytes, &sbytes);
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: fused weight", p0->name);
    lmx_status st = matrix_upload(c, parts, n, rows, w);
    if (st == LMX_OK) st = upload_fence(c);
    int64_t r = 0;
    for (int i = 0; st == LMX_OK && i < n; i++) {
        lmx_bweight *v = calloc(1, sizeof *v);
        if (!v) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight view", parts[i].name);
            break;
        }
        *v = *w;
        v->view = true;
        v->rows = parts[i].rows;
        v->m.n = parts[i].rows;
        v->dw = (uint8_t *)w->dw + (size_t)r * row_bytes;
        v->ds = quant ? (uint8_t *)w->ds + (size_t)r * sbytes : NULL;
        v->db = quant ? (uint8_t *)w->db + (size_t)r * sbytes : NULL;
        v->dbias = w->dbias ? w->dbias + r : NULL;
        v->m.w = v->dw;
        v->m.scales = v->ds;
        v->m.biases = v->db;
        v->m.bias = v->dbias;
        views[i] = v;
        r += parts[i].rows;
    }
    if (st != LMX_OK) {
        for (int i = 0; i < n; i++) {
            lmx_cub_weight_free(be, views[i]);
            views[i] = NULL;
        }
        lmx_cub_weight_free(be, w);
        return lmx_error_prefix(st, "%s (fused)", p0->name);
    }
    *fused = w;
    return LMX_OK;
}

/* backend.h weight_upload_experts: the experts' matrices back to back as one allocation per component
 * (matrix_upload of the E parts), described for the moe kernels by w->ex */
lmx_status lmx_cub_weight_upload_experts(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **out) {
    cuda_backend *c = CB(be);
    *out = NULL;
    LMX_BACKEND_TRY(lmx_backend_check_expert_parts("cuda", parts, n));
    const lmx_weight_desc *p0 = &parts[0];
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: expert stack", p0->name);
    lmx_status st = matrix_upload(c, parts, n, (int64_t)n * p0->rows, w);
    if (st == LMX_OK) st = upload_fence(c);
    if (st != LMX_OK) {
        lmx_cub_weight_free(be, w);
        return lmx_error_prefix(st, "%s (%d experts)", p0->name, n);
    }
    w->ex.m = w->m;
    w->ex.m.n = p0->rows; /* one expert's matrix; the others follow it */
    w->ex.mode = p0->kind == LMX_WEIGHT_QUANT ? (int)p0->mode : (int)LMX_QUANT_AFFINE;
    w->ex.n_experts = n;
    w->kind = LMX_WEIGHT_EXPERTS;
    w->rows = p0->rows;
    w->n_experts = n;
    *out = w;
    return LMX_OK;
}

#else
typedef int lmx_cuda_backend_mem_unused; /* keep the translation unit non-empty */
#endif
