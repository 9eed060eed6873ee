/* cpu_backend_internal.h — the CPU backend's state and what its two files share: cpu_backend.c
 * (buffers, weight uploads, creation, the ops table) and cpu_compute.c (the compute ops), and the
 * fp-mode kernels of cpu_mx.c and the mixture-of-experts ops of cpu_moe.c. Not an interface: only those files include it. */
#ifndef LMX_BACKEND_CPU_BACKEND_INTERNAL_H
#define LMX_BACKEND_CPU_BACKEND_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/backend_check.h"
#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/thread_pool.h"
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
    uint8_t *pk;           /* SIMD levels, 4/8 bits: codes repacked in 16-row tiles (cpu_qtile.h), or NULL */
    int64_t pk_blocks;     /* tiles of 16 rows */
    size_t pk_block_bytes; /* bytes per tile (codes, scales and biases of every group) */
    bool pk_sb16;          /* the tiles hold 16-bit scales/biases (else fp32) */
    bool pk_sbh;           /* those are f16 (else bf16) */
    bool pk_own;           /* a view that owns pk (its rows do not start at a tile of the fused weight) */
    bool view;             /* a view of a fused weight: frees only the handle */
    lmx_quant_mode mode;   /* quant: affine, or an fp mode (cpu_mx.h: codes `data`, scale codes `mx_scales`) */
    const uint8_t *mx_scales; /* fp modes: the stored uint8 scale codes of the first selected row [rows, groups] */
    int n_experts;         /* LMX_WEIGHT_EXPERTS (cpu_moe.c): experts[n_experts], each an uploaded [rows, cols] */
    lmx_bweight **experts;
};

/* The mixture-of-experts ops' scratch (cpu_moe.c): grow-only, one moe op at a time under `lock`
 * (taken before op_lock: the ops call the locking matmul / rows_axpy entry points, or take op_lock
 * themselves around the grouped tile run). */
typedef struct cpu_moe_scratch {
    pthread_mutex_t lock;
    float *x;     /* [x_len] one expert's token rows, gathered */
    size_t x_len;
    int32_t *rows; /* [rows_len] one expert's residual rows */
    float *w;      /* [rows_len] their routing weights */
    size_t rows_len;
    /* the grouped tile run (cpu_moe.c) */
    int16_t *xq;   /* [xq_len] int16 activations: the token rows, then the experts' rows in route order */
    size_t xq_len;
    float *xds;    /* [xds_len] their steps and scaled sums, [rows, groups] each */
    size_t xds_len;
    struct cpu_moe_job *jobs;     /* [jobs_len] one expert's matmul each */
    size_t jobs_len;
    struct cpu_moe_chunk *chunks; /* [chunks_len] tile ranges of the jobs: the pool's items */
    size_t chunks_len;
} cpu_moe_scratch;

typedef struct cpu_backend {
    lmx_backend base;
    lmx_thread_pool *pool;
    int n_threads;
    float **scratch;       /* [n_threads][scratch_len] per-thread scratch */
    size_t scratch_len;
    float *shared;         /* [shared_len] scratch used by one op at a time (e.g. group sums of x) */
    size_t shared_len;
    lmx_cpu_kernels k;     /* inner kernels (scalar, AVX2 or AVX-512), chosen at creation */
    lmx_cpu_level level;   /* k's level */
    const struct lmx_qtile_kernels *qt; /* the level's repacked 4/8-bit kernels (cpu_qtile.h); NULL: no tiles */
    int16_t *xq;           /* [xq_len] int16 activations of the repacked-weight matmul (grows, never per token) */
    size_t xq_len;
    pthread_mutex_t op_lock; /* one pool/scratch-using op at a time (callers on several threads are safe) */
    size_t mem_limit;        /* bytes of physical memory: buffers beyond it are refused */
    atomic_size_t buf_bytes; /* bytes held by live lmx_bufs */
    cpu_moe_scratch moe;
    struct lmx_cpu_coll *coll; /* the group this backend is a rank of (cpu_collective.h), or NULL */
    int rank;                  /* its rank there */
} cpu_backend;

static inline cpu_backend *CPU(lmx_backend *be) { return (cpu_backend *)be; }

static inline lmx_status ensure_scratch(cpu_backend *c, size_t per_thread) {
    if (per_thread <= c->scratch_len) return LMX_OK;
    for (int i = 0; i < c->n_threads; i++) {
        float *p = realloc(c->scratch[i], per_thread * sizeof(float));
        if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: scratch of %zu floats", per_thread);
        c->scratch[i] = p;
    }
    c->scratch_len = per_thread;
    return LMX_OK;
}

static inline lmx_status ensure_shared(cpu_backend *c, size_t n) {
    if (n <= c->shared_len) return LMX_OK;
    float *p = realloc(c->shared, n * sizeof(float));
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: scratch of %zu floats", n);
    c->shared = p;
    c->shared_len = n;
    return LMX_OK;
}

static inline lmx_status ensure_xq(cpu_backend *c, size_t n) {
    if (n <= c->xq_len) return LMX_OK;
    int16_t *p = realloc(c->xq, n * sizeof *p);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: scratch of %zu int16", n);
    c->xq = p;
    c->xq_len = n;
    return LMX_OK;
}

/* ---- element conversion ---- */

static inline size_t wdtype_size(lmx_dtype t) { return t == LMX_DTYPE_F32 ? 4 : 2; }

static inline void convert_row(const lmx_cpu_kernels *k, const uint8_t *src, lmx_dtype t, int64_t n, float *dst) {
    if (t == LMX_DTYPE_F32) memcpy(dst, src, (size_t)n * 4);
    else if (t == LMX_DTYPE_BF16) k->bf16_row(src, n, dst);
    else k->f16_row(src, n, dst);
}

static inline float *convert_copy(const lmx_cpu_kernels *k, const void *src, lmx_dtype t, int64_t n) {
    float *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    if (d) convert_row(k, src, t, n, d);
    return d;
}

/* ---- paged KV addressing (lmx_kv_map): the attention op (cpu_attention.c) and rope_qk_store ---- */

/* log2 of the map's block size, or -1 when it is not a power of two */
static inline int map_shift(const lmx_kv_map *m) {
    if (m->block_size < 1 || (m->block_size & (m->block_size - 1))) return -1;
    int sh = 0;
    while ((1 << sh) < m->block_size) sh++;
    return sh;
}

/* slot of position j of table row s (lmx_kv_map) */
static inline size_t map_slot(const lmx_kv_map *m, int shift, int s, int j) {
    return (size_t)m->tables[(size_t)s * (size_t)m->stride + (size_t)(j >> shift)] * (size_t)m->block_size +
           (size_t)(j & (m->block_size - 1));
}

/* Every row's sequence is a table row and every block its positions 0..pos[t] use lies inside a
 * cache of `capacity` slots (so the ops read and write nothing else); `op` names the op in the error. */
lmx_status lmx_cpu_kv_map_check(const char *op, const lmx_kv_map *m, int T, const int32_t *pos, int capacity);

#define CHECK_RANGE(buf_, off_, cnt_, what_) LMX_BACKEND_CHECK_RANGE("cpu", buf_, off_, cnt_, what_)

/* ---- the compute ops (cpu_compute.c; each takes the op lock itself) ---- */
lmx_status lmx_cpu_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T, lmx_buf *y);
lmx_status lmx_cpu_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale, lmx_buf *y);
lmx_status lmx_cpu_rmsnorm(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w, float eps, bool plus_one);
lmx_status lmx_cpu_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc, lmx_buf *out, const lmx_attn_params *p, const int32_t *pos);
lmx_status lmx_cpu_act_mul(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act);
lmx_status lmx_cpu_add(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n);
lmx_status lmx_cpu_rows_axpy(lmx_backend *be, lmx_buf *y, const lmx_buf *x, int n, int dim, const int32_t *idx,
                             const float *w);
lmx_status lmx_cpu_softcap(lmx_backend *be, lmx_buf *x, size_t n, float cap);
lmx_status lmx_cpu_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T, lmx_buf *y);
lmx_status lmx_cpu_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc, lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos);
lmx_status lmx_cpu_all_reduce_sum(lmx_backend *be, lmx_buf *x, size_t off, size_t n); /* cpu_collective.c */
lmx_status lmx_cpu_all_gather(lmx_backend *be, const lmx_buf *src, size_t n, lmx_buf *dst);
lmx_status lmx_cpu_act_mul_split(lmx_backend *be, const lmx_buf *gu, int T, int inter, lmx_act_kind act, lmx_buf *out);

/* ---- mixture of experts (cpu_moe.c) ---- */
void lmx_cpu_moe_init(cpu_moe_scratch *m);
void lmx_cpu_moe_free(cpu_moe_scratch *m);
lmx_status lmx_cpu_weight_upload_experts(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **out);
lmx_status lmx_cpu_moe_route(lmx_backend *be, const lmx_buf *logits, const lmx_moe_routing *r);
lmx_status lmx_cpu_moe_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, bool gather,
                              const lmx_moe_routing *r, lmx_buf *y);
lmx_status lmx_cpu_moe_gate_up(lmx_backend *be, const lmx_bweight *gate, const lmx_bweight *up, const lmx_buf *x,
                               const lmx_moe_routing *r, lmx_act_kind act, lmx_buf *h, lmx_buf *u);
lmx_status lmx_cpu_moe_combine(lmx_backend *be, lmx_buf *x, const lmx_buf *y, int dim, const lmx_moe_routing *r);

#endif
