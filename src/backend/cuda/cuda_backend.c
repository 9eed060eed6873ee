/* cuda_backend.c — lmx_backend_ops over the CUDA kernels of cuda_kernels.h (see cuda_backend.h).
 *
 * Host-side positions and token ids (the seam passes them on the host) are uploaded into small
 * device arrays that grow only when a longer batch arrives; an unchanged position array (the same
 * forward step calling rope, kv_write and attention for every layer) is not uploaded again.
 * Matmuls with T >= LMX_CUDA_GEMM_MIN_T rows (prefill) use lmx_cuda_gemm: cuBLASLt when the
 * library loads at run time, else the built-in tensor-core GEMM (both bf16 operands, fp32
 * accumulation); shorter ones (decode) lmx_cuda_gemv (fp32-exact; batch-1 q4 on the tensor cores).
 *
 * KV caches come from kv_buf_alloc in fp16 by default (LMX_CUDA_KV=bf16|f16|f32; kv_elem_bytes reports
 * the size); kv_write and attention read the buffer's element type. Decode attention runs the grouped
 * kernel with the fused split merge (cuda_attn_decode.cu; LMX_CUDA_DECODE_ATTN=split keeps the split-K
 * kernel + merge launch), prefill the tensor-core flash kernel over a 16-bit cache.
 *
 * Ops run in order on one backend-owned blocking stream. Decode steps (the step hooks of backend.h)
 * are CUDA graphs: the first single-token forward on a (kv, variant) runs eagerly and records a
 * signature (a hash of every op's arguments); the second is captured into a graph; later ones
 * upload {token id, position} into a 2-int device array the captured kernels read (embed ids,
 * rope/kv_write/attention positions — the attention grid is sized from the cache capacity and
 * each row derives its split count from its position, so the launch is replay-invariant) and
 * launch the graph. A signature mismatch (other buffers, shapes, weights) or any capture error
 * makes the caller redo the step eagerly and the graph is recaptured; a failed capture disables
 * graphs for that slot. Four graph slots (round-robin). Graphs are ON by default; LMX_CUDA_GRAPH=0
 * turns them off (bench/notes/cuda-kernels.md: decode 183 vs 172 tok/s q4 with bit-identical
 * logits; on 2026-11-28 at cfe0439 the whole GPU suite — ctest -L gpu and the 22 GPU goldens —
 * passed on the H200 with graphs on).
 */
#include "backend/cuda/cuda_backend.h"

#include "util/env.h"
#include "util/error.h"

#ifdef LMX_HAVE_CUDA
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend_check.h"
#include "backend/backend_fuse.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_upload.h"
#include "util/log.h"

#define LMX_CUDA_GEMM_MIN_T 16
/* KV cache element type unless LMX_CUDA_KV says otherwise: fp16 (bf16's coarser rounding of Q and K
 * failed the qwen2-bias golden on 2026-11-28, fp16 passes 23/23; bench/notes/cuda-kernels.md, attn) */
#define LMX_CUDA_KV_DEFAULT LMX_DTYPE_F16

struct lmx_buf {
    size_t n;
    float *d;     /* device [n] */
    bool view;    /* buf_view: d belongs to another buffer */
    lmx_dtype dt; /* F32; a kv_buf_alloc cache: its element type (d then points to n such elements) */
};

struct lmx_bweight {
    lmx_wkind kind;
    int64_t rows, cols;
    lmx_cuda_matrix m; /* dense / quant: device pointers below */
    void *dw, *ds, *db;  /* device: weights (dtype or packed u32), scales, biases */
    float *dbias;        /* device fp32 [rows] or NULL */
    float *vec;          /* vector: device fp32 [cols] */
    bool view;           /* a view of a fused weight: the pointers belong to the fused weight */
};

#define GRAPH_SLOTS 4

typedef enum { STEP_NONE = 0, STEP_WARM, STEP_CAPTURE, STEP_REPLAY } step_mode;

typedef struct graph_slot {
    const void *key;
    int variant;
    bool used, failed;
    uint64_t sig;  /* signature of the op sequence recorded at the warm step */
    void *exec;    /* cudaGraphExec_t or NULL */
} graph_slot;

typedef struct cuda_backend {
    lmx_backend base;
    int device;
    lmx_cuda_stream stream; /* every op runs here */
    bool graphs;            /* unless LMX_CUDA_GRAPH=0 */
    int32_t *d_step;        /* device [2]: token id, position of the current decode step */
    int32_t h_step[2];
    step_mode mode;
    graph_slot *slot;       /* the current step's slot */
    uint64_t sig;           /* running signature of this step's ops */
    bool step_bad;          /* an op that cannot be captured ran inside the step */
    graph_slot slots[GRAPH_SLOTS];
    int next_victim;
    int32_t *d_pos;   /* device [pos_cap] */
    int32_t *h_pos;   /* host copy of what d_pos holds, [pos_cap] */
    int pos_cap, pos_n;
    int32_t *d_ids;   /* device [ids_cap] */
    int ids_cap;
    float *d_ws;      /* attention workspace, device [ws_cap] */
    size_t ws_cap;
    lmx_cuda_sampler *sampler; /* device sampling (cu_sample): workspace for the current vocab/window */
    bool samp_pending;         /* a sample was enqueued and its result not yet read */
    bool samp_host;            /* the last sample is undecided without device work (unsupported params) */
    /* weight uploads: the pinned staging ring (cuda_upload.h), created at the first upload unless
     * LMX_CUDA_STAGING=0; without it (or if creating it failed) pageable copies as before */
    pthread_mutex_t up_lock;
    lmx_cuda_uploader *up;
    bool staging, up_failed, staged_any;
    /* upload statistics, logged at destroy (info): bytes, ns in weight cudaMallocs, ns in copies */
    atomic_uint_least64_t up_bytes, up_malloc_ns, up_copy_ns;
    lmx_dtype kv_dt;  /* element type of kv_buf_alloc caches: LMX_CUDA_KV_DEFAULT or LMX_CUDA_KV */
    int32_t *d_cnt;   /* decode attention split counters, device [cnt_cap], zero between launches */
    size_t cnt_cap;
    bool decode_split; /* LMX_CUDA_DECODE_ATTN=split: decode through the split-K kernel + merge launch */
    bool flash;        /* prefill attention through the flash kernels unless LMX_CUDA_FLASH=0 */
} cuda_backend;

static cuda_backend *CB(lmx_backend *be) { return (cuda_backend *)be; }

/* ---- decode-step signature ---- */
static void sig_mix(cuda_backend *c, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        c->sig ^= (v >> (8 * i)) & 0xffu;
        c->sig *= 0x100000001b3ull;
    }
}
static uint64_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
#define SIGP(p) sig_mix(c, (uint64_t)(uintptr_t)(p))
#define SIGI(v) sig_mix(c, (uint64_t)(int64_t)(v))
/* in a step: true when the op must launch nothing (the graph replays it) */
static bool replaying(const cuda_backend *c) { return c->mode == STEP_REPLAY; }
static bool stepping(const cuda_backend *c) { return c->mode != STEP_NONE; }

static void graphs_clear(cuda_backend *c) {
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        lmx_cuda_graph_destroy(c->slots[i].exec);
        c->slots[i].exec = NULL;
        c->slots[i].used = false;
    }
}

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

/* host bytes (mmapped, any alignment) into device memory: through the staging ring (asynchronous:
 * upload_fence orders the op stream after it) or a pageable copy */
static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

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
static lmx_status cu_upload_end(lmx_backend *be) {
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

static lmx_status upload_bytes(cuda_backend *c, const void *src, size_t bytes, void **out) {
    lmx_status st = weight_malloc(c, out, bytes);
    if (st == LMX_OK) st = stage_copy(c, *out, src, bytes);
    return st;
}

/* ---- memory ---- */

static lmx_status cu_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out) {
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

static void cu_buf_free(lmx_backend *be, lmx_buf *b) {
    (void)be;
    if (!b) return;
    if (!b->view) lmx_cuda_free(b->d);
    free(b);
}

static size_t kv_dt_bytes(lmx_dtype t) { return t == LMX_DTYPE_F32 ? 4 : 2; }

static size_t cu_kv_elem_bytes(const lmx_backend *be) { return kv_dt_bytes(((const cuda_backend *)be)->kv_dt); }

/* a k or v cache of n elements in the backend's KV dtype (zeroed) */
static lmx_status cu_kv_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out) {
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

#define CHECK_RANGE(buf_, off_, cnt_, what_)                                                                  \
    do {                                                                                                     \
        if ((buf_)->dt != LMX_DTYPE_F32) /* a bf16 KV cache: only kv_write and attention take it */          \
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: %s: a KV cache buffer", (what_));      \
        LMX_BACKEND_CHECK_RANGE("cuda", buf_, off_, cnt_, what_);                                            \
    } while (0)

static lmx_status cu_buf_write(lmx_backend *be, lmx_buf *dst, size_t off, const float *src, size_t n) {
    cuda_backend *c = CB(be);
    if (stepping(c)) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: buf_write inside a decode step");
    }
    CHECK_RANGE(dst, off, n, "buf_write");
    return lmx_cuda_memcpy_h2d(dst->d + off, src, n * sizeof(float), c->stream);
}

static lmx_status cu_buf_read(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n) {
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

static lmx_status cu_buf_copy(lmx_backend *be, lmx_buf *dst, size_t dst_off, const lmx_buf *src, size_t src_off,
                              size_t n) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(dst, dst_off, n, "buf_copy");
    CHECK_RANGE(src, src_off, n, "buf_copy");
    if (dst == src && dst_off != src_off && (dst_off < src_off + n && src_off < dst_off + n))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: overlapping buf_copy");
    if (stepping(c)) {
        SIGI(1); SIGP(dst->d + dst_off); SIGP(src->d + src_off); SIGI(n);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_memcpy_d2d(dst->d + dst_off, src->d + src_off, n * sizeof(float), c->stream);
}

static lmx_status cu_buf_view(lmx_backend *be, lmx_buf *parent, size_t off, size_t n, lmx_buf **out) {
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

static void cu_weight_free(lmx_backend *be, lmx_bweight *w) {
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

static lmx_status cu_weight_upload(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out) {
    cuda_backend *c = CB(be);
    *out = NULL;
    LMX_BACKEND_TRY(lmx_backend_check_weight_desc(d));
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight", d->name);
    w->kind = d->kind;
    w->rows = d->rows;
    w->cols = d->cols;
    lmx_status st = LMX_OK;
    if (d->kind == LMX_WEIGHT_VECTOR) {
        st = upload_f32(c, d->data, d->dtype, d->cols, &w->vec);
    } else {
        w->m.dtype = (lmx_dtype)d->dtype;
        w->m.n = d->rows;
        w->m.k = d->cols;
        if (d->kind == LMX_WEIGHT_DENSE) {
            size_t row_bytes = (size_t)d->cols * wsize(d->dtype);
            st = upload_bytes(c, (const uint8_t *)d->data + (size_t)d->row0 * row_bytes, row_bytes * (size_t)d->rows,
                              &w->dw);
        } else {
            size_t row_bytes = (size_t)d->cols * (size_t)d->bits / 8;
            size_t groups = (size_t)(d->cols / d->group_size), sb = wsize(d->dtype);
            size_t soff = (size_t)d->row0 * groups * sb;
            st = upload_bytes(c, (const uint8_t *)d->data + (size_t)d->row0 * row_bytes, row_bytes * (size_t)d->rows,
                              &w->dw);
            if (st == LMX_OK)
                st = upload_bytes(c, (const uint8_t *)d->scales + soff, groups * sb * (size_t)d->rows, &w->ds);
            if (st == LMX_OK)
                st = upload_bytes(c, (const uint8_t *)d->biases + soff, groups * sb * (size_t)d->rows, &w->db);
            w->m.bits = d->bits;
            w->m.group_size = d->group_size;
        }
        if (st == LMX_OK && d->bias)
            st = upload_f32(c, (const uint8_t *)d->bias + (size_t)d->row0 * wsize(d->bias_dtype), d->bias_dtype,
                            d->rows, &w->dbias);
        w->m.w = w->dw;
        w->m.scales = w->ds;
        w->m.biases = w->db;
        w->m.bias = w->dbias;
        w->m.bias_dtype = LMX_DTYPE_F32;
        if (st == LMX_OK) st = lmx_cuda_matrix_check(&w->m);
    }
    if (st == LMX_OK) st = upload_fence(c);
    if (st != LMX_OK) {
        cu_weight_free(be, w);
        return lmx_error_prefix(st, "%s", d->name);
    }
    *out = w;
    return LMX_OK;
}

/* backend.h weight_upload_fused: one device allocation per component (packed words / dense
 * elements, scales, biases, fp32 bias), the parts' rows copied in order; views at row offsets */
static lmx_status cu_weight_upload_fused(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                                         lmx_bweight **views) {
    cuda_backend *c = CB(be);
    *fused = NULL;
    for (int i = 0; i < n && views; i++) views[i] = NULL;
    int64_t rows = 0;
    LMX_BACKEND_TRY(lmx_backend_check_fused_parts("cuda", parts, n, &rows));
    const lmx_weight_desc *p0 = &parts[0];
    const bool quant = p0->kind == LMX_WEIGHT_QUANT;
    const size_t row_bytes = quant ? (size_t)p0->cols * (size_t)p0->bits / 8 : (size_t)p0->cols * wsize(p0->dtype);
    const size_t sbytes = quant ? (size_t)(p0->cols / p0->group_size) * wsize(p0->dtype) : 0; /* per row */
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: fused weight", p0->name);
    w->kind = p0->kind;
    w->rows = rows;
    w->cols = p0->cols;
    w->m.dtype = (lmx_dtype)p0->dtype;
    w->m.n = rows;
    w->m.k = p0->cols;
    if (quant) {
        w->m.bits = p0->bits;
        w->m.group_size = p0->group_size;
    }
    lmx_status st = weight_malloc(c, &w->dw, (size_t)rows * row_bytes);
    if (st == LMX_OK && quant) st = weight_malloc(c, &w->ds, (size_t)rows * sbytes);
    if (st == LMX_OK && quant) st = weight_malloc(c, &w->db, (size_t)rows * sbytes);
    if (st == LMX_OK && p0->bias) st = weight_malloc(c, (void **)&w->dbias, (size_t)rows * sizeof(float));
    int64_t r = 0;
    for (int i = 0; st == LMX_OK && i < n; i++) {
        const lmx_weight_desc *p = &parts[i];
        st = stage_copy(c, (uint8_t *)w->dw + (size_t)r * row_bytes,
                        (const uint8_t *)p->data + (size_t)p->row0 * row_bytes, (size_t)p->rows * row_bytes);
        if (st == LMX_OK && quant)
            st = stage_copy(c, (uint8_t *)w->ds + (size_t)r * sbytes,
                            (const uint8_t *)p->scales + (size_t)p->row0 * sbytes, (size_t)p->rows * sbytes);
        if (st == LMX_OK && quant)
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
    if (st == LMX_OK) st = lmx_cuda_matrix_check(&w->m);
    if (st == LMX_OK) st = upload_fence(c);
    r = 0;
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
            cu_weight_free(be, views[i]);
            views[i] = NULL;
        }
        cu_weight_free(be, w);
        return lmx_error_prefix(st, "%s (fused)", p0->name);
    }
    *fused = w;
    return LMX_OK;
}

/* ---- host arrays to the device ---- */

static lmx_status upload_pos(cuda_backend *c, const int32_t *pos, int T, const int32_t **d_out) {
    if (T > c->pos_cap) {
        int cap = T < 256 ? 256 : T;
        int32_t *d = NULL, *h = malloc((size_t)cap * sizeof *h);
        lmx_status st = h ? lmx_cuda_malloc((void **)&d, (size_t)cap * sizeof *d) : LMX_ERR_OUT_OF_MEMORY;
        if (st != LMX_OK) {
            free(h);
            return lmx_error(st, "cuda backend: position array of %d", T);
        }
        lmx_cuda_stream_sync(c->stream); /* the old array may still be read by queued kernels */
        lmx_cuda_free(c->d_pos);
        free(c->h_pos);
        c->d_pos = d;
        c->h_pos = h;
        c->pos_cap = cap;
        c->pos_n = 0;
    }
    if (c->pos_n != T || memcmp(c->h_pos, pos, (size_t)T * sizeof *pos) != 0) {
        memcpy(c->h_pos, pos, (size_t)T * sizeof *pos);
        c->pos_n = T;
        /* from c->h_pos, which stays unchanged until the next different array: safe for async copy */
        lmx_status st = lmx_cuda_memcpy_h2d(c->d_pos, c->h_pos, (size_t)T * sizeof *pos, c->stream);
        if (st != LMX_OK) {
            c->pos_n = 0;
            return st;
        }
    }
    *d_out = c->d_pos;
    return LMX_OK;
}

/* positions of a decode step: d_step + 1 (checked against the host array) */
static lmx_status step_pos(cuda_backend *c, const int32_t *pos, int T, const int32_t **d_out) {
    if (T != 1 || pos[0] != c->h_step[1]) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: another position inside a decode step");
    }
    *d_out = c->d_step + 1;
    return LMX_OK;
}

/* ---- ops ---- */

static lmx_status cu_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                            lmx_buf *y) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_matmul("cuda", w->kind, w->rows, w->cols, x->n, x_off, T, y->n));
    if (stepping(c)) {
        SIGI(2); SIGP(w->dw); SIGP(w->dbias); SIGP(x->d + x_off); SIGP(y->d); SIGI(T); SIGI(w->rows);
        if (replaying(c)) return LMX_OK;
    }
    const float *xp = x->d + x_off;
    /* prefill: the tensor-core GEMM (bf16 operands, fp32 accumulation); decode: the fp32 GEMV */
    if (T >= LMX_CUDA_GEMM_MIN_T && w->cols % 32 == 0 && ((uintptr_t)xp & 15) == 0)
        return lmx_cuda_gemm(&w->m, xp, y->d, T, false, c->stream);
    return lmx_cuda_gemv(&w->m, xp, y->d, T, false, c->stream);
}

static lmx_status cu_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale,
                           lmx_buf *y) {
    cuda_backend *c = CB(be);
    if (w->kind == LMX_WEIGHT_VECTOR) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "embed with a vector weight");
    CHECK_RANGE(y, 0, (size_t)T * (size_t)w->cols, "embed y");
    LMX_BACKEND_TRY(lmx_backend_check_embed_ids(ids, T, w->rows));
    if (stepping(c)) { /* the id is in d_step[0] (uploaded at step_begin) */
        if (T != 1 || ids[0] != c->h_step[0]) {
            c->step_bad = true;
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: embed of another token inside a decode step");
        }
        SIGI(3); SIGP(w->dw); SIGI(fbits(scale)); SIGP(y->d);
        if (replaying(c)) return LMX_OK;
        return lmx_cuda_embed(&w->m, c->d_step, 1, scale, y->d, c->stream);
    }
    if (T > c->ids_cap) {
        int cap = T < 256 ? 256 : T;
        int32_t *d = NULL;
        lmx_status st = lmx_cuda_malloc((void **)&d, (size_t)cap * sizeof *d);
        if (st != LMX_OK) return st;
        lmx_cuda_stream_sync(c->stream);
        lmx_cuda_free(c->d_ids);
        c->d_ids = d;
        c->ids_cap = cap;
    }
    /* ids is the caller's memory: a pageable host-to-device copy is staged before the call returns */
    lmx_status st = lmx_cuda_memcpy_h2d(c->d_ids, ids, (size_t)T * sizeof *ids, c->stream);
    if (st != LMX_OK) return st;
    return lmx_cuda_embed(&w->m, c->d_ids, T, scale, y->d, c->stream);
}

static lmx_status cu_rmsnorm(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w,
                             float eps, bool plus_one) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_rmsnorm("cuda", x->n, y->n, rows, dim, w->kind, w->cols));
    if (stepping(c)) {
        SIGI(4); SIGP(x->d); SIGP(y->d); SIGI(rows); SIGI(dim); SIGP(w->vec); SIGI(fbits(eps)); SIGI(plus_one);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_rmsnorm(x->d, w->vec, LMX_DTYPE_F32, eps, plus_one, y->d, rows, dim, c->stream);
}

static lmx_status cu_rope(lmx_backend *be, lmx_buf *x, int T, int n_heads, int head_dim, int rot_dim,
                          const lmx_bweight *inv_freq, float mscale, const int32_t *pos) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(
        lmx_backend_check_rope("cuda", x->n, T, n_heads, head_dim, rot_dim, inv_freq->kind, inv_freq->cols));
    if (rot_dim == 0) return LMX_OK;
    const int32_t *dp;
    if (stepping(c)) {
        lmx_status st = step_pos(c, pos, T, &dp);
        if (st != LMX_OK) return st;
        SIGI(5); SIGP(x->d); SIGI(n_heads); SIGI(head_dim); SIGI(rot_dim); SIGP(inv_freq->vec); SIGI(fbits(mscale));
        if (replaying(c)) return LMX_OK;
        return lmx_cuda_rope(x->d, dp, inv_freq->vec, mscale, T, n_heads, head_dim, rot_dim, c->stream);
    }
    lmx_status st = upload_pos(c, pos, T, &dp);
    if (st != LMX_OK) return st;
    return lmx_cuda_rope(x->d, dp, inv_freq->vec, mscale, T, n_heads, head_dim, rot_dim, c->stream);
}

static lmx_status cu_kv_write(lmx_backend *be, lmx_buf *kc, lmx_buf *vc, const lmx_buf *k, const lmx_buf *v, int T,
                              int n_kv, int head_dim, int capacity, const int32_t *pos) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_kv_write_bufs("cuda", kc->n, vc->n, k->n, v->n, T, n_kv, head_dim, capacity));
    if (T > capacity) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv_write: %d rows into a ring of %d", T, capacity);
    for (int t = 0; t < T; t++) /* position j goes to slot j % capacity (a ring on sliding layers) */
        if (pos[t] < 0)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv_write: position %d", pos[t]);
    if (kc->dt != vc->dt || k->dt != LMX_DTYPE_F32 || v->dt != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv_write: caches of different element types or a cache as input");
    lmx_cuda_attn a = {.n_heads = n_kv, .n_kv_heads = n_kv, .head_dim = head_dim, .capacity = capacity,
                       .kv_dtype = kc->dt};
    const int32_t *dp;
    if (stepping(c)) {
        lmx_status st = step_pos(c, pos, T, &dp);
        if (st != LMX_OK) return st;
        SIGI(6); SIGP(kc->d); SIGP(vc->d); SIGP(k->d); SIGP(v->d); SIGI(n_kv); SIGI(head_dim); SIGI(capacity);
        if (replaying(c)) return LMX_OK;
        return lmx_cuda_kv_store(&a, k->d, v->d, kc->d, vc->d, dp, T, c->stream);
    }
    lmx_status st = upload_pos(c, pos, T, &dp);
    if (st != LMX_OK) return st;
    return lmx_cuda_kv_store(&a, k->d, v->d, kc->d, vc->d, dp, T, c->stream);
}

/* Replaces an attention scratch array (device, zero-filled: the decode counters must start at zero)
 * by one of `need` elements of `elem` bytes. Not inside a captured step (the graph holds the old
 * address); outside one, every captured graph is dropped since it references the old array. */
static lmx_status grow_scratch(cuda_backend *c, void **buf, size_t *cap, size_t need, size_t elem, const char *what) {
    void *d = NULL;
    lmx_status st = lmx_cuda_malloc(&d, need * elem);
    if (st == LMX_OK) st = lmx_cuda_memset(d, 0, need * elem, c->stream);
    if (st != LMX_OK || c->mode == STEP_CAPTURE || c->mode == STEP_REPLAY) {
        lmx_cuda_free(d);
        if (st != LMX_OK) return st;
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: attention %s growth inside a captured step", what);
    }
    lmx_cuda_stream_sync(c->stream);
    graphs_clear(c);
    lmx_cuda_free(*buf);
    *buf = d;
    *cap = need;
    return LMX_OK;
}

static lmx_status cu_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc,
                               lmx_buf *out, const lmx_attn_params *p, const int32_t *pos) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_attention("cuda", p, q->n, out->n, kc->n, vc->n));
    /* positions inside the cache; beyond it only on a sliding layer whose ring (position j in slot
     * j % capacity) holds the window plus this call's rows */
    const bool ring_ok = p->window > 0 && (int64_t)p->window + p->n_tokens - 1 <= p->capacity;
    for (int t = 0; t < p->n_tokens; t++)
        if (pos[t] < 0 || (pos[t] >= p->capacity && !ring_ok))
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: position %d outside the cache of %d (window %d)",
                             pos[t], p->capacity, p->window);
    if (kc->dt != vc->dt || q->dt != LMX_DTYPE_F32 || out->dt != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: caches of different element types or a cache as q/out");
    lmx_cuda_attn a = {.n_heads = p->n_heads, .n_kv_heads = p->n_kv_heads, .head_dim = p->head_dim,
                       .capacity = p->capacity, .kv_dtype = kc->dt, .scale = p->scale,
                       .softcap = p->softcap, .window = p->window};
    /* prefill: tiled flash attention (LMX_CUDA_FLASH=0 keeps the split-K kernel per query row) */
    if (p->n_tokens >= 2 && c->flash && lmx_cuda_attention_prefill_supported(&a)) {
        const int32_t *dpf;
        lmx_status st = upload_pos(c, pos, p->n_tokens, &dpf);
        if (st != LMX_OK) return st;
        return lmx_cuda_attention_prefill(&a, q->d, kc->d, vc->d, dpf, p->n_tokens, out->d, c->stream);
    }
    /* decode: the GQA-grouped kernel with the fused merge (LMX_CUDA_DECODE_ATTN=split keeps the split-K
     * kernel + merge launch) */
    const bool grouped = !c->decode_split && lmx_cuda_attention_decode_supported(&a);
    const size_t need_cnt = grouped ? lmx_cuda_attention_decode_counters(&a, p->n_tokens) : 0;
    if (need_cnt > c->cnt_cap)
        LMX_BACKEND_TRY(grow_scratch(c, (void **)&c->d_cnt, &c->cnt_cap, need_cnt, sizeof(int32_t), "counter"));
    size_t need = lmx_cuda_attention_workspace_floats(&a, p->n_tokens);
    if (need > c->ws_cap) LMX_BACKEND_TRY(grow_scratch(c, (void **)&c->d_ws, &c->ws_cap, need, sizeof(float), "workspace"));
    /* the grid is sized for the whole cache (each row uses the splits its own length needs): the
     * same launch for every position, as a captured graph requires */
    const int32_t *dp;
    if (stepping(c)) {
        lmx_status st = step_pos(c, pos, p->n_tokens, &dp);
        if (st != LMX_OK) return st;
        SIGI(7); SIGP(q->d); SIGP(kc->d); SIGP(vc->d); SIGP(out->d); SIGI(p->n_heads); SIGI(p->n_kv_heads);
        SIGI(p->head_dim); SIGI(p->capacity); SIGI(p->window); SIGI(fbits(p->scale)); SIGI(fbits(p->softcap));
        SIGP(c->d_ws);
        SIGP(c->d_cnt);
        SIGI(grouped);
        if (replaying(c)) return LMX_OK;
    } else {
        lmx_status st = upload_pos(c, pos, p->n_tokens, &dp);
        if (st != LMX_OK) return st;
    }
    if (grouped)
        return lmx_cuda_attention_decode(&a, q->d, kc->d, vc->d, dp, p->n_tokens, (int64_t)p->capacity, c->d_ws,
                                         c->d_cnt, out->d, c->stream);
    return lmx_cuda_attention(&a, q->d, kc->d, vc->d, dp, p->n_tokens, (int64_t)p->capacity, c->d_ws, out->d,
                              c->stream);
}

static lmx_status cu_act_mul(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(gate, 0, n, "act_mul gate");
    CHECK_RANGE(up, 0, n, "act_mul up");
    if (stepping(c)) {
        SIGI(8); SIGP(gate->d); SIGP(up->d); SIGI(n); SIGI(act);
        if (replaying(c)) return LMX_OK;
    }
    if (act == LMX_BACT_SILU_MUL) return lmx_cuda_swiglu(gate->d, up->d, gate->d, (int64_t)n, c->stream);
    if (act == LMX_BACT_GELU_TANH_MUL) return lmx_cuda_geglu_tanh(gate->d, up->d, gate->d, (int64_t)n, c->stream);
    return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: activation %d", (int)act);
}

/* prefill through a fused gate|up weight: gu [T, 2*inter] -> out [T, inter] (lmx_cuda_act_mul_split) */
static lmx_status cu_act_mul_split(lmx_backend *be, const lmx_buf *gu, int T, int inter, lmx_act_kind act,
                                   lmx_buf *out) {
    cuda_backend *c = CB(be);
    if (T < 1 || inter < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "act_mul_split: T %d inter %d", T, inter);
    CHECK_RANGE(gu, 0, (size_t)T * 2 * (size_t)inter, "act_mul_split gu");
    CHECK_RANGE(out, 0, (size_t)T * (size_t)inter, "act_mul_split out");
    const uintptr_t g0 = (uintptr_t)gu->d, o0 = (uintptr_t)out->d;
    if (g0 < o0 + (size_t)T * (size_t)inter * sizeof(float) && o0 < g0 + (size_t)T * 2 * (size_t)inter * sizeof(float))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: act_mul_split: out overlaps gu");
    if (act != LMX_BACT_SILU_MUL && act != LMX_BACT_GELU_TANH_MUL)
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: activation %d", (int)act);
    if (stepping(c)) {
        SIGI(13); SIGP(gu->d); SIGP(out->d); SIGI(T); SIGI(inter); SIGI(act);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_act_mul_split(gu->d, out->d, T, inter, act == LMX_BACT_SILU_MUL ? 0 : 1, c->stream);
}

static lmx_status cu_add(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(x, 0, n, "add x");
    CHECK_RANGE(y, 0, n, "add y");
    if (stepping(c)) {
        SIGI(9); SIGP(x->d); SIGP(y->d); SIGI(n);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_add(x->d, y->d, (int64_t)n, c->stream);
}

static lmx_status cu_softcap(lmx_backend *be, lmx_buf *x, size_t n, float cap) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(x, 0, n, "softcap x");
    if (stepping(c)) {
        SIGI(10); SIGP(x->d); SIGI(n); SIGI(fbits(cap));
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_softcap(x->d, (int64_t)n, cap, c->stream);
}

/* ---- fused ops (backend.h; kernels in cuda_fused.cu and the GEMV/GEMM accumulate mode) ---- */

/* y += x·Wᵀ + bias: lmx_cuda_gemv / lmx_cuda_gemm with accumulate (every path — scalar and
 * tensor-core GEMV, the mma.sync GEMM, cuBLASLt with beta = 1 — adds into y) */
static lmx_status cu_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                                lmx_buf *y) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_matmul("cuda", w->kind, w->rows, w->cols, x->n, x_off, T, y->n));
    if (x == y || x->d == y->d) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: matmul_add with y == x");
    if (stepping(c)) {
        SIGI(11); SIGP(w->dw); SIGP(w->dbias); SIGP(x->d + x_off); SIGP(y->d); SIGI(T);
        if (replaying(c)) return LMX_OK;
    }
    const float *xp = x->d + x_off;
    if (T >= LMX_CUDA_GEMM_MIN_T && w->cols % 32 == 0 && ((uintptr_t)xp & 15) == 0)
        return lmx_cuda_gemm(&w->m, xp, y->d, T, true, c->stream);
    return lmx_cuda_gemv(&w->m, xp, y->d, T, true, c->stream);
}

/* [per-head norm], RoPE of q and k, k/v into the cache: one launch (lmx_cuda_rope_qk_store) */
static lmx_status cu_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc,
                                   lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos) {
    cuda_backend *c = CB(be);
    if (!p->inv_freq) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: no inv_freq");
    LMX_BACKEND_TRY(lmx_backend_check_rope_qk_store(
        "cuda", p, q->n, k->n, v->n, kc->n, vc->n, p->inv_freq->kind, p->inv_freq->cols,
        p->q_norm ? p->q_norm->kind : LMX_WEIGHT_VECTOR, p->q_norm ? p->q_norm->cols : 0,
        p->k_norm ? p->k_norm->kind : LMX_WEIGHT_VECTOR, p->k_norm ? p->k_norm->cols : 0));
    if (p->n_tokens > p->capacity)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: %d rows into a ring of %d", p->n_tokens,
                         p->capacity);
    for (int t = 0; t < p->n_tokens; t++) /* position j goes to slot j % capacity (a ring on sliding layers) */
        if (pos[t] < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: position %d", pos[t]);
    /* the cache dtype as in cu_kv_write (kv_buf_alloc caches: fp16 by default) */
    if (kc->dt != vc->dt || q->dt != LMX_DTYPE_F32 || k->dt != LMX_DTYPE_F32 || v->dt != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: k/v caches of different types or a cache as q/k/v");
    lmx_cuda_attn a = {.n_heads = p->n_heads, .n_kv_heads = p->n_kv_heads, .head_dim = p->head_dim,
                       .capacity = p->capacity, .kv_dtype = kc->dt};
    lmx_cuda_qk_rope r = {.rot_dims = p->rot_dim, .inv_freq = p->inv_freq->vec, .mscale = p->mscale,
                          .q_norm = p->q_norm ? p->q_norm->vec : NULL, .k_norm = p->k_norm ? p->k_norm->vec : NULL,
                          .eps = p->eps, .norm_plus_one = p->norm_plus_one, .q_stride = (int64_t)p->q_stride,
                          .k_stride = (int64_t)p->k_stride, .v_stride = (int64_t)p->v_stride};
    float *qp = q->d + p->q_off, *kp = k->d + p->k_off;
    const float *vp = v->d + p->v_off;
    const int32_t *dp;
    if (stepping(c)) {
        lmx_status st = step_pos(c, pos, p->n_tokens, &dp);
        if (st != LMX_OK) return st;
        SIGI(12); SIGP(qp); SIGP(kp); SIGP(vp); SIGP(kc->d); SIGP(vc->d); SIGI(p->q_stride); SIGI(p->k_stride);
        SIGI(p->v_stride); SIGI(p->n_heads); SIGI(p->n_kv_heads); SIGI(p->head_dim); SIGI(p->rot_dim);
        SIGI(p->capacity); SIGP(r.inv_freq); SIGI(fbits(p->mscale)); SIGP(r.q_norm); SIGP(r.k_norm);
        SIGI(fbits(p->eps)); SIGI(p->norm_plus_one);
        if (replaying(c)) return LMX_OK;
    } else {
        lmx_status st = upload_pos(c, pos, p->n_tokens, &dp);
        if (st != LMX_OK) return st;
    }
    return lmx_cuda_rope_qk_store(&a, &r, qp, kp, vp, kc->d, vc->d, dp, p->n_tokens, c->stream);
}

/* ---- sampling on the device (backend.h: sample / sample_result) ---- */

static lmx_status cu_sample(lmx_backend *be, const lmx_buf *logits, int vocab, const lmx_sample_args *a) {
    cuda_backend *c = CB(be);
    if (!a || vocab <= 0 || a->sampling.repetition_context < 0 || a->n_window < 0 || a->n_window > a->sampling.repetition_context)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample: bad arguments (vocab %d)", vocab);
    CHECK_RANGE(logits, 0, (size_t)vocab, "sample logits");
    if (c->samp_pending) { /* the previous result was never read: its work may still use the staging */
        lmx_status st = lmx_cuda_stream_sync(c->stream);
        if (st != LMX_OK) return st;
        c->samp_pending = false;
    }
    const bool pen = a->sampling.repetition_penalty != 0.0f && a->sampling.repetition_penalty != 1.0f;
    const int wcap = pen ? a->sampling.repetition_context : 0;
    lmx_cuda_sample_params p = {.vocab = vocab, .sampling = a->sampling};
    c->samp_host = !lmx_cuda_sample_supported(&p);
    if (c->samp_host) return LMX_OK; /* nothing on the device: the caller samples on the host */
    if (!c->sampler || lmx_cuda_sampler_vocab(c->sampler) != vocab || lmx_cuda_sampler_window_cap(c->sampler) < wcap) {
        if (c->mode == STEP_CAPTURE || c->mode == STEP_REPLAY) {
            c->step_bad = true;
            return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: sampler growth inside a captured step");
        }
        lmx_cuda_sampler *ns = NULL;
        lmx_status st = lmx_cuda_sampler_create(vocab, wcap, &ns);
        if (st != LMX_OK) return st;
        lmx_cuda_stream_sync(c->stream);
        if (c->mode == STEP_NONE) graphs_clear(c); /* captured graphs reference the old sampler */
        lmx_cuda_sampler_destroy(c->sampler);
        c->sampler = ns;
    }
    lmx_status st = lmx_cuda_sample_set_input(c->sampler, a->u, pen ? a->window : NULL, pen ? a->n_window : 0);
    if (st != LMX_OK) return st;
    if (stepping(c)) {
        SIGI(12); SIGP(logits->d); SIGP(c->sampler); SIGI(vocab); SIGI(fbits(a->sampling.temperature)); SIGI(fbits(a->sampling.top_p));
        SIGI(fbits(a->sampling.min_p)); SIGI(a->sampling.top_k); SIGI(fbits(a->sampling.repetition_penalty)); SIGI(wcap);
        c->samp_pending = true;
        if (replaying(c)) return LMX_OK;
    }
    c->samp_pending = true;
    return lmx_cuda_sample_enqueue(c->sampler, &p, logits->d, c->stream);
}

static lmx_status cu_sample_result(lmx_backend *be, int32_t *token) {
    cuda_backend *c = CB(be);
    *token = -1;
    if (c->samp_host) {
        c->samp_host = false;
        return LMX_OK;
    }
    if (!c->samp_pending || !c->sampler) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample_result: no sample");
    lmx_status st = lmx_cuda_stream_sync(c->stream);
    c->samp_pending = false;
    if (st != LMX_OK) return st;
    *token = lmx_cuda_sample_read(c->sampler);
    return LMX_OK;
}

/* ---- decode-step hooks (backend.h) ---- */

static lmx_status cu_step_begin(lmx_backend *be, const void *key, int variant, int32_t id, int32_t pos) {
    cuda_backend *c = CB(be);
    if (c->mode != STEP_NONE) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: nested decode step");
    if (!c->graphs) return LMX_OK; /* mode stays NONE: the ops run eagerly as usual */
    graph_slot *g = NULL;
    for (int i = 0; i < GRAPH_SLOTS && !g; i++)
        if (c->slots[i].used && c->slots[i].key == key && c->slots[i].variant == variant) g = &c->slots[i];
    step_mode mode = STEP_WARM;
    if (!g) {
        g = &c->slots[c->next_victim];
        c->next_victim = (c->next_victim + 1) % GRAPH_SLOTS;
        lmx_cuda_graph_destroy(g->exec);
        *g = (graph_slot){.key = key, .variant = variant, .used = true};
    } else if (g->exec) {
        mode = STEP_REPLAY;
    } else if (g->sig && !g->failed) {
        mode = STEP_CAPTURE;
    }
    /* {id, pos} to the device (a pageable copy is staged before the call returns, so h_step may
     * change afterwards); outside the capture, ahead of the work that reads it */
    c->h_step[0] = id;
    c->h_step[1] = pos;
    lmx_status st = lmx_cuda_memcpy_h2d(c->d_step, c->h_step, sizeof c->h_step, c->stream);
    if (st != LMX_OK) return st;
    if (mode == STEP_CAPTURE && lmx_cuda_capture_begin(c->stream) != LMX_OK) {
        LMX_LOG_D("cuda backend: graph capture unavailable (%s); decode runs eagerly", lmx_last_error_detail());
        g->failed = true;
        mode = STEP_WARM;
    }
    c->slot = g;
    c->mode = mode;
    c->sig = 0xcbf29ce484222325ull;
    c->step_bad = false;
    return LMX_OK;
}

static lmx_status cu_step_end(lmx_backend *be, bool ok, bool *redo) {
    cuda_backend *c = CB(be);
    *redo = false;
    step_mode mode = c->mode;
    graph_slot *g = c->slot;
    c->mode = STEP_NONE;
    c->slot = NULL;
    if (mode == STEP_NONE) return LMX_OK;
    ok = ok && !c->step_bad;
    if (mode == STEP_WARM) {
        /* the ops ran eagerly; a failed one is redone eagerly to report its error */
        if (ok && !g->failed) g->sig = c->sig;
        *redo = !ok;
        return LMX_OK;
    }
    if (mode == STEP_CAPTURE) {
        void *exec = NULL;
        bool match = ok && c->sig == g->sig;
        lmx_status st = lmx_cuda_capture_end(c->stream, match, &exec);
        if (st != LMX_OK || (match && !exec)) {
            LMX_LOG_D("cuda backend: graph capture failed (%s); decode runs eagerly", lmx_last_error_detail());
            g->failed = true;
        }
        if (!exec) {
            if (!match) g->sig = 0; /* the sequence changed since the warm step: warm up again */
            *redo = true;         /* nothing ran */
            return LMX_OK;
        }
        g->exec = exec;
    } else if (!ok || c->sig != g->sig) { /* replay: the recorded sequence does not fit this step */
        lmx_cuda_graph_destroy(g->exec);
        g->exec = NULL;
        g->sig = 0;
        *redo = true;
        return LMX_OK;
    }
    lmx_status st = lmx_cuda_graph_launch(g->exec, c->stream);
    if (st != LMX_OK) {
        LMX_LOG_D("cuda backend: graph launch failed (%s); decode runs eagerly", lmx_last_error_detail());
        lmx_cuda_graph_destroy(g->exec);
        g->exec = NULL;
        g->failed = true;
        *redo = true;
    }
    return LMX_OK;
}

static void cu_destroy(lmx_backend *be) {
    cuda_backend *c = CB(be);
    if (!c) return;
    lmx_cuda_stream_sync(c->stream);
    graphs_clear(c);
    lmx_cuda_free(c->d_step);
    lmx_cuda_stream_destroy(c->stream);
    lmx_cuda_free(c->d_pos);
    free(c->h_pos);
    lmx_cuda_free(c->d_ids);
    lmx_cuda_free(c->d_ws);
    lmx_cuda_sampler_destroy(c->sampler);
    uint64_t ub = atomic_load(&c->up_bytes);
    if (ub)
        LMX_LOG_I("cuda backend: uploaded %.3f GB (%s): %.3f s in copies, %.3f s in cudaMalloc", ub / 1e9,
                  c->staged_any ? "pinned staging" : "pageable", atomic_load(&c->up_copy_ns) / 1e9,
                  atomic_load(&c->up_malloc_ns) / 1e9);
    lmx_cuda_uploader_destroy(c->up);
    pthread_mutex_destroy(&c->up_lock);
    lmx_cuda_free(c->d_cnt);
    free(c);
}

static const lmx_backend_ops CUDA_OPS = {
    .name = "cuda",
    .destroy = cu_destroy,
    .buf_alloc = cu_buf_alloc,
    .buf_free = cu_buf_free,
    .buf_write = cu_buf_write,
    .buf_read = cu_buf_read,
    .buf_copy = cu_buf_copy,
    .weight_upload = cu_weight_upload,
    .weight_free = cu_weight_free,
    .matmul = cu_matmul,
    .embed = cu_embed,
    .rmsnorm = cu_rmsnorm,
    .rope = cu_rope,
    .kv_write = cu_kv_write,
    .attention = cu_attention,
    .act_mul = cu_act_mul,
    .add = cu_add,
    .softcap = cu_softcap,
    .step_begin = cu_step_begin,
    .step_end = cu_step_end,
    .matmul_add = cu_matmul_add,
    .rope_qk_store = cu_rope_qk_store,
    .sample = cu_sample,
    .sample_result = cu_sample_result,
    .buf_view = cu_buf_view,
    .weight_upload_fused = cu_weight_upload_fused,
    .prefill_chunk = 512, /* one GEMM per weight for a 512-token prompt (quantized weights expand once) */
    .upload_end = cu_upload_end,
    .kv_buf_alloc = cu_kv_buf_alloc,
    .kv_elem_bytes = cu_kv_elem_bytes,
    .act_mul_split = cu_act_mul_split,
};

lmx_status lmx_backend_cuda_create(int device, lmx_backend **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: NULL output");
    *out = NULL;
    int n = 0;
    if (!lmx_cuda_available(&n)) return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "no usable CUDA device");
    if (device < 0 || device >= n)
        return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "no CUDA device %d (%d present)", device, n);
    lmx_status st = lmx_cuda_set_device(device);
    if (st != LMX_OK) return st;
    cuda_backend *c = calloc(1, sizeof *c);
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend");
    c->base.ops = &CUDA_OPS;
    c->device = device;
    pthread_mutex_init(&c->up_lock, NULL);
    atomic_init(&c->up_bytes, 0);
    atomic_init(&c->up_malloc_ns, 0);
    atomic_init(&c->up_copy_ns, 0);
    c->staging = !lmx_env_off("LMX_CUDA_STAGING"); /* 0: pageable uploads (A/B measurements) */
    st = lmx_cuda_stream_create_blocking(&c->stream);
    if (st == LMX_OK) st = lmx_cuda_malloc((void **)&c->d_step, 2 * sizeof(int32_t));
    if (st != LMX_OK) {
        lmx_cuda_stream_destroy(c->stream);
        pthread_mutex_destroy(&c->up_lock);
        free(c);
        return lmx_error_prefix(st, "cuda backend");
    }
    /* on by default (the GPU suite passed with graphs on, 2026-11-28); LMX_CUDA_GRAPH=0 disables */
    c->graphs = !lmx_env_off("LMX_CUDA_GRAPH");
    c->flash = !lmx_env_off("LMX_CUDA_FLASH");
    /* KV cache element type (LMX_CUDA_KV=bf16|f16|f32): 16-bit halves attention bytes and KV memory; f32
     * keeps the exact path */
    const char *kve = getenv("LMX_CUDA_KV");
    c->kv_dt = LMX_CUDA_KV_DEFAULT;
    if (kve && (strcmp(kve, "f32") == 0 || strcmp(kve, "fp32") == 0)) c->kv_dt = LMX_DTYPE_F32;
    else if (kve && (strcmp(kve, "f16") == 0 || strcmp(kve, "fp16") == 0)) c->kv_dt = LMX_DTYPE_F16;
    else if (kve && strcmp(kve, "bf16") == 0) c->kv_dt = LMX_DTYPE_BF16;
    else if (kve && *kve) LMX_LOG_W("cuda backend: LMX_CUDA_KV=%s is not bf16, f16 or f32; using the default", kve);
    const char *dae = getenv("LMX_CUDA_DECODE_ATTN");
    c->decode_split = dae && strcmp(dae, "split") == 0;
    lmx_cuda_device_info info;
    if (lmx_cuda_get_device_info(device, &info) == LMX_OK)
        LMX_LOG_I("cuda backend: device %d: %s (cc %d.%d, %d SMs, %.1f GiB)", device, info.name, info.cc_major,
                  info.cc_minor, info.sm_count, info.total_mem / 1073741824.0);
    *out = &c->base;
    return LMX_OK;
}

#else /* no CUDA in this build */

lmx_status lmx_backend_cuda_create(int device, lmx_backend **out) {
    if (out) *out = NULL;
    return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "CUDA device %d: this build has no CUDA backend", device);
}

#endif
