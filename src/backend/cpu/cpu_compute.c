/* cpu_compute.c — the CPU backend's compute ops: readable fp32-accumulating kernels over rows or
 * heads on the backend's thread pool, one op at a time (the op lock), with the inner loops from
 * cpu_simd.h (scalar, AVX2 or AVX-512) and, for 4/8-bit weights, the repacked tiles of cpu_qtile.h
 * at the backend's level. The fused ops (matmul_add, rope_qk_store, act_mul_split) run the
 * unfused ops' arithmetic, bit for bit. Attention is cpu_attention.c's. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/cpu_backend_internal.h"
#include "backend/cpu/cpu_mx.h"
#include "backend/cpu/cpu_qtile.h"
#include "backend/cpu/cpu_quant.h"

/* ---- matmul ---- */

typedef struct matmul_ctx {
    cpu_backend *c;
    const lmx_bweight *w;
    const float *x; /* [T, cols] */
    const float *xsum; /* quant: [T, groups] per-group sums of x */
    const uint16_t *xh, *xl; /* bf16 weights with dot4xn_bf16: [T, cols] x split in bf16 hi + lo, else NULL */
    float *y;       /* [T, rows] */
    int T;
    bool acc;       /* matmul_add: y += result (the result rounded to float first, as matmul then add) */
} matmul_ctx;

static inline void mm_put(const matmul_ctx *m, size_t i, float v) {
    if (m->acc) m->y[i] += v;
    else m->y[i] = v;
}

/* Every (row, token) result is computed by one arithmetic whatever T, the tile or the thread split
 * (cpu_simd.h's matmul kernels share one dot order per set): row t of a T-token matmul equals the
 * 1-token matmul of x[t] bit for bit, which batched decode and the prompt cache rely on. */

/* dense rows [r, r+nb), nb <= 4, one token, read in place (16-bit converted in registers); a
 * partial block computes each row alone (stride 0: the four lanes are the same row) */
static void dense_rows_1(const matmul_ctx *m, int64_t r, int nb, float *blk /* [4][cols] scratch */) {
    const lmx_bweight *w = m->w;
    const lmx_cpu_kernels *k = &m->c->k;
    const int64_t K = w->cols;
    float out[4];
    for (int i = 0; i < nb; i += nb == 4 ? 4 : 1) {
        const uint8_t *src = w->data + (size_t)(r + i) * w->row_bytes;
        const size_t ws = nb == 4 ? w->row_bytes : 0;
        if (w->dtype == LMX_DTYPE_F32 && ((uintptr_t)src & (sizeof(float) - 1))) {
            /* fp32 rows at an unaligned file offset: the same values copied aligned, the same dot */
            const int n = nb == 4 ? 4 : 1;
            for (int j = 0; j < n; j++) memcpy(blk + (size_t)j * K, src + (size_t)j * w->row_bytes, (size_t)K * sizeof(float));
            k->dot4(m->x, blk, n == 4 ? (size_t)K : 0, K, out);
        } else if (w->dtype == LMX_DTYPE_F32) {
            k->dot4(m->x, (const float *)(const void *)src, ws / sizeof(float), K, out);
        } else {
            k->dot4_w16(m->x, src, ws, K, w->dtype == LMX_DTYPE_BF16, out);
        }
        for (int j = 0; j < (nb == 4 ? 4 : 1); j++)
            mm_put(m, (size_t)(r + i + j), out[j] + (w->bias ? w->bias[r + i + j] : 0.0f));
    }
}

/* bf16 rows [r, r+nb) × every token by the bf16 dot products (a partial block: each row alone) */
static void dense_rows_bf16(const matmul_ctx *m, int64_t r, int nb) {
    const lmx_bweight *w = m->w;
    const int64_t K = w->cols;
    for (int t = 0; t < m->T; t += 4) {
        const int nt = m->T - t < 4 ? m->T - t : 4;
        for (int i = 0; i < nb; i += nb == 4 ? 4 : 1) {
            float out[16];
            m->c->k.dot4xn_bf16(m->xh + (size_t)t * K, m->xl + (size_t)t * K, (size_t)K, nt,
                                w->data + (size_t)(r + i) * w->row_bytes, nb == 4 ? w->row_bytes : 0, K, out);
            for (int j = 0; j < nt; j++)
                for (int u = 0; u < (nb == 4 ? 4 : 1); u++)
                    mm_put(m, (size_t)(t + j) * w->rows + r + i + u, out[j * 4 + u] + (w->bias ? w->bias[r + i + u] : 0.0f));
        }
    }
}

static void matmul_rows_dense(void *vctx, int64_t r0, int64_t r1, int thread) {
    matmul_ctx *m = vctx;
    const lmx_bweight *w = m->w;
    const int64_t K = w->cols;
    const lmx_cpu_kernels *k = &m->c->k;
    float *blk = m->c->scratch[thread]; /* [4][cols] the block's rows as fp32 */
    for (int64_t r = r0; r < r1; r += 4) {
        const int nb = r1 - r < 4 ? (int)(r1 - r) : 4;
        if (m->xh) {
            dense_rows_bf16(m, r, nb);
            continue;
        }
        if (m->T == 1) {
            dense_rows_1(m, r, nb, blk);
            continue;
        }
        /* a partial block repeats its last row (each row's dot is independent of the others) */
        for (int i = 0; i < 4; i++)
            convert_row(k, w->data + (size_t)(r + (i < nb ? i : nb - 1)) * w->row_bytes, w->dtype, K, blk + (size_t)i * K);
        int t = 0;
        if (k->dot4x4)
            for (; t + 4 <= m->T; t += 4) {
                float out[16];
                k->dot4x4(m->x + (size_t)t * K, (size_t)K, blk, K, out);
                for (int j = 0; j < 4; j++)
                    for (int i = 0; i < nb; i++)
                        mm_put(m, (size_t)(t + j) * w->rows + r + i, out[j * 4 + i] + (w->bias ? w->bias[r + i] : 0.0f));
            }
        for (; t < m->T; t++) {
            float out[4];
            k->dot4(m->x + (size_t)t * K, blk, (size_t)K, K, out);
            for (int i = 0; i < nb; i++)
                mm_put(m, (size_t)t * w->rows + r + i, out[i] + (w->bias ? w->bias[r + i] : 0.0f));
        }
    }
}

/* quantized rows without repacked tiles (2/3/5/6 bits): one token decodes a row's codes (qdot); more
 * decode a block of 4 rows' codes once and run qdotf4 / qdotf per token (the same arithmetic),
 * so each token's x is read once per 4 rows */
static void matmul_rows_quant(void *vctx, int64_t r0, int64_t r1, int thread) {
    matmul_ctx *m = vctx;
    const lmx_bweight *w = m->w;
    float *qb = m->c->scratch[thread]; /* [4][cols] the block's codes as fp32 */
    const int64_t K = w->cols;
    const int G = w->groups, gs = w->group_size;
    const lmx_cpu_kernels *k = &m->c->k;
    for (int64_t r = r0; r < r1; r += 4) {
        const int nb = r1 - r < 4 ? (int)(r1 - r) : 4;
        if (m->T == 1) {
            for (int i = 0; i < nb; i++) {
                const size_t ri = (size_t)(r + i);
                mm_put(m, ri, k->qdot(m->x, w->data + ri * w->row_bytes, w->bits, gs, G, w->scales + ri * G,
                                      w->biases + ri * G, m->xsum, qb) + (w->bias ? w->bias[ri] : 0.0f));
            }
            continue;
        }
        for (int i = 0; i < nb; i++) k->quant_row(w->data + (size_t)(r + i) * w->row_bytes, w->bits, K, qb + (size_t)i * K);
        int t = 0;
        if (k->qdotf4)
            for (; t + 4 <= m->T; t += 4)
                for (int i = 0; i < nb; i++) {
                    const size_t ri = (size_t)(r + i);
                    float out[4];
                    k->qdotf4(m->x + (size_t)t * K, (size_t)K, qb + (size_t)i * K, gs, G, w->scales + ri * G,
                              w->biases + ri * G, m->xsum + (size_t)t * G, out);
                    for (int j = 0; j < 4; j++) mm_put(m, (size_t)(t + j) * w->rows + ri, out[j] + (w->bias ? w->bias[ri] : 0.0f));
                }
        for (; t < m->T; t++)
            for (int i = 0; i < nb; i++) {
                const size_t ri = (size_t)(r + i);
                mm_put(m, (size_t)t * w->rows + ri,
                       k->qdotf(m->x + (size_t)t * K, qb + (size_t)i * K, gs, G, w->scales + ri * G, w->biases + ri * G,
                                m->xsum + (size_t)t * G) + (w->bias ? w->bias[ri] : 0.0f));
            }
    }
}

/* repacked 4/8-bit weights: int16 activations, 16-row tiles, the level's kernels */
typedef struct qtile_ctx {
    const lmx_qtile_kernels *k;
    const lmx_bweight *w;
    const int16_t *xq;
    const float *xd, *xs;
    float *y;
    int T;
    bool acc;
} qtile_ctx;

static void qtile_run(void *vctx, int64_t b0, int64_t b1, int thread) {
    (void)thread;
    const qtile_ctx *q = vctx;
    q->k->rows(q->w, b0, b1, q->xq, q->xd, q->xs, q->T, q->y, q->acc);
}

typedef struct qx_ctx {
    const lmx_qtile_kernels *k;
    const float *x;
    int64_t K;
    int G, groups;
    int16_t *xq;
    float *xd, *xs;
} qx_ctx;

/* tokens [t0, t1) of the int16 activation quantization (prefill: on the pool, one token per chunk) */
static void qx_run(void *vctx, int64_t t0, int64_t t1, int thread) {
    (void)thread;
    const qx_ctx *q = vctx;
    q->k->quant_x(q->x + (size_t)t0 * q->K, (int)(t1 - t0), q->K, q->G, q->xq + (size_t)t0 * q->K,
                  q->xd + (size_t)t0 * q->groups, q->xs + (size_t)t0 * q->groups);
}

static lmx_status cpu_matmul_qtile(cpu_backend *c, const lmx_bweight *w, const float *x, int T, float *y, bool acc) {
    const size_t G = (size_t)w->groups;
    LMX_BACKEND_TRY(ensure_xq(c, (size_t)T * (size_t)w->cols));
    LMX_BACKEND_TRY(ensure_shared(c, 2 * (size_t)T * G));
    float *xd = c->shared, *xs = c->shared + (size_t)T * G;
    qx_ctx qx = {c->qt, x, w->cols, w->group_size, w->groups, c->xq, xd, xs};
    lmx_thread_pool_run(c->pool, T, 4, qx_run, &qx);
    qtile_ctx q = {c->qt, w, c->xq, xd, xs, y, T, acc};
    /* ~4 chunks per thread; a chunk of 16-row tiles is at least 2 tiles */
    int64_t grain = w->pk_blocks / (c->n_threads * 4);
    if (grain < 2) grain = 2;
    lmx_thread_pool_run(c->pool, w->pk_blocks, grain, qtile_run, &q);
    return LMX_OK;
}

static lmx_status cpu_matmul_impl(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                             lmx_buf *y, bool acc) {
    cpu_backend *c = CPU(be);
    LMX_BACKEND_TRY(lmx_backend_check_matmul("cpu", w->kind, w->rows, w->cols, x->n, x_off, T, y->n));
    if (acc && x == y) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: matmul_add with y == x");
    if (w->kind == LMX_WEIGHT_QUANT && w->pk) return cpu_matmul_qtile(c, w, x->data + x_off, T, y->data, acc);
    if (w->kind == LMX_WEIGHT_QUANT && lmx_quant_mode_is_fp(w->mode))
        return lmx_cpu_mx_matmul(c, w, x->data + x_off, T, y->data, acc);
    if (!w->data) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: matmul through a weight without source rows");
    matmul_ctx m = {c, w, x->data + x_off, NULL, NULL, NULL, y->data, T, acc};
    int64_t grain = w->rows / (c->n_threads * 4);
    if (grain < 16) grain = 16;
    if (w->kind == LMX_WEIGHT_DENSE && w->dtype == LMX_DTYPE_BF16 && c->k.dot4xn_bf16) {
        const size_t n = (size_t)T * (size_t)w->cols;
        LMX_BACKEND_TRY(ensure_xq(c, 2 * n));
        uint16_t *xh = (uint16_t *)(void *)c->xq, *xl = xh + n; /* [T, cols] each */
        c->k.bf16_split(m.x, (int64_t)n, xh, xl);
        m.xh = xh, m.xl = xl;
    }
    if (w->kind == LMX_WEIGHT_DENSE) {
        lmx_thread_pool_run(c->pool, w->rows, (grain + 3) & ~(int64_t)3, matmul_rows_dense, &m);
        return LMX_OK;
    }
    LMX_BACKEND_TRY(ensure_shared(c, (size_t)T * (size_t)w->groups));
    float *xs = c->shared; /* [T, groups] Σ x per group, summed in order */
    for (int t = 0; t < T; t++)
        for (int g = 0; g < w->groups; g++) {
            const float *p = m.x + (size_t)t * w->cols + (size_t)g * w->group_size;
            float s = 0;
            for (int k = 0; k < w->group_size; k++) s += p[k];
            xs[(size_t)t * w->groups + g] = s;
        }
    m.xsum = xs;
    lmx_thread_pool_run(c->pool, w->rows, (grain + 3) & ~(int64_t)3, matmul_rows_quant, &m);
    return LMX_OK;
}

/* ---- embedding ---- */

static lmx_status cpu_embed_impl(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale,
                            lmx_buf *y) {
    cpu_backend *c = CPU(be);
    CHECK_RANGE(y, 0, (size_t)T * (size_t)w->cols, "embed y");
    if (w->kind == LMX_WEIGHT_VECTOR) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "embed with a vector weight");
    if (!w->data) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "embed through a fused weight (no source rows)");
    LMX_BACKEND_TRY(lmx_backend_check_embed_ids(ids, T, w->rows));
    for (int t = 0; t < T; t++) {
        float *dst = y->data + (size_t)t * w->cols;
        if (ids[t] < 0) { /* another rank's token (backend.h embed) */
            memset(dst, 0, (size_t)w->cols * sizeof *dst);
            continue;
        }
        const uint8_t *src = w->data + (size_t)ids[t] * w->row_bytes;
        if (w->kind == LMX_WEIGHT_DENSE) {
            convert_row(&c->k, src, w->dtype, w->cols, dst);
        } else if (lmx_quant_mode_is_fp(w->mode)) {
            lmx_cpu_mx_row(c, w, ids[t], dst);
        } else {
            float *q = c->scratch[0]; /* [cols] codes, then [2, groups] the row's scales and biases */
            c->k.quant_row(src, w->bits, w->cols, q);
            const float *s = w->scales + (size_t)ids[t] * w->groups, *b = w->biases + (size_t)ids[t] * w->groups;
            if (!w->scales) { /* a repacked weight: its scales and biases live in the tiles only */
                lmx_cpu_qtile_row_sb(w, ids[t], q + w->cols, q + w->cols + w->groups);
                s = q + w->cols, b = q + w->cols + w->groups;
            }
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

/* ---- paged KV addressing (lmx_kv_map; the helpers in cpu_backend_internal.h) ---- */

lmx_status lmx_cpu_kv_map_check(const char *op, const lmx_kv_map *m, int T, const int32_t *pos, int capacity) {
    if (!m->tables || !m->seq || m->n_seqs < 1 || m->stride < 1 || map_shift(m) < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: bad kv map (%d sequences, stride %d, block size %d)", op,
                         m->n_seqs, m->stride, m->block_size);
    const int64_t blocks = capacity / m->block_size;
    for (int t = 0; t < T; t++) {
        const int s = m->seq[t];
        if (s < 0 || s >= m->n_seqs)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: row %d names table row %d of %d", op, t, s, m->n_seqs);
        if (pos[t] < 0 || pos[t] / m->block_size >= m->stride)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: row %d position %d outside a table of %d blocks of %d",
                             op, t, pos[t], m->stride, m->block_size);
        for (int b = 0; b <= pos[t] / m->block_size; b++) {
            const int32_t phys = m->tables[(size_t)s * (size_t)m->stride + (size_t)b];
            if (phys < 0 || phys >= blocks)
                return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: row %d block %d is physical block %d of %lld", op, t,
                                 b, phys, (long long)blocks);
        }
    }
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
    } else if (c->act == LMX_BACT_SWIGLU_OAI) {
        const float L = LMX_SWIGLU_OAI_LIMIT;
        for (int64_t i = b; i < e; i++) {
            float g = c->x[i], u = c->y[i];
            g = g > L ? L : g; /* comparisons, not fminf: a NaN stays NaN */
            u = u > L ? L : (u < -L ? -L : u);
            c->x[i] = g / (1.0f + expf(-LMX_SWIGLU_OAI_ALPHA * g)) * (u + 1.0f);
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
    if ((unsigned)act > LMX_BACT_SWIGLU_OAI) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "act_mul: activation %d", (int)act);
    CHECK_RANGE(gate, 0, n, "act gate");
    CHECK_RANGE(up, 0, n, "act up");
    ew_ctx e = {gate->data, up->data, act, 0};
    lmx_thread_pool_run(CPU(be)->pool, (int64_t)n, 8192, act_range, &e);
    return LMX_OK;
}

lmx_status lmx_cpu_add(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n) {
    (void)be;
    CHECK_RANGE(x, 0, n, "add x");
    CHECK_RANGE(y, 0, n, "add y");
    for (size_t i = 0; i < n; i++) x->data[i] += y->data[i];
    return LMX_OK;
}

lmx_status lmx_cpu_softcap(lmx_backend *be, lmx_buf *x, size_t n, float cap) {
    (void)be;
    CHECK_RANGE(x, 0, n, "softcap");
    if (!(cap > 0)) return LMX_OK;
    for (size_t i = 0; i < n; i++) x->data[i] = cap * tanhf(x->data[i] / cap);
    return LMX_OK;
}


lmx_status lmx_cpu_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T, lmx_buf *y) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_matmul_impl(be, w, x, x_off, T, y, false);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

lmx_status lmx_cpu_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale, lmx_buf *y) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_embed_impl(be, w, ids, T, scale, y);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

lmx_status lmx_cpu_rmsnorm(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w, float eps, bool plus_one) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_rmsnorm_impl(be, x, y, rows, dim, w, eps, plus_one);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}


lmx_status lmx_cpu_act_mul(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_act_mul_impl(be, gate, up, n, act);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}


/* ---- fused ops (backend.h): the unfused ops' arithmetic, bit for bit ---- */

/* act_mul_split: per row, the gate half is copied into out and act_range (act_mul's own loop) runs
 * on it with the up half, so the arithmetic is act_mul's exactly */
lmx_status lmx_cpu_act_mul_split(lmx_backend *be, const lmx_buf *gu, int T, int inter, lmx_act_kind act,
                                    lmx_buf *out) {
    cpu_backend *c = CPU(be);
    if (T < 1 || inter < 1 || (unsigned)act > LMX_BACT_SWIGLU_OAI)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "act_mul_split: T %d inter %d activation %d", T, inter, (int)act);
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

lmx_status lmx_cpu_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
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
    int shift;                /* paged: log2 block size */
} qk_ctx;

/* tokens t0..t1: per-head norm (norm_rows), rotation (rope_rows) of q and k, then the k/v rows into the caches */
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
        const size_t slot = p->map ? map_slot(p->map, f->shift, p->map->seq[t], f->pos[t])
                                   : (size_t)(f->pos[t] % p->capacity);
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
    if (p->map) LMX_BACKEND_TRY(lmx_cpu_kv_map_check("rope_qk_store", p->map, p->n_tokens, pos, p->capacity));
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
                pos,
                p->map ? map_shift(p->map) : 0};
    lmx_thread_pool_run(c->pool, p->n_tokens, 4, qk_rows, &f);
    return LMX_OK;
}

lmx_status lmx_cpu_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc,
                                    lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_rope_qk_store_impl(be, q, k, v, kc, vc, p, pos);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

/* ---- mixture of experts: y[idx[i]] += w[i] * x[i] (rows of dim floats) ---- */
lmx_status lmx_cpu_rows_axpy(lmx_backend *be, lmx_buf *y, const lmx_buf *x, int n, int dim, const int32_t *idx,
                             const float *w) {
    (void)be;
    if (n < 0 || dim < 1 || (n > 0 && (!idx || !w)))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: rows_axpy: bad arguments (n %d, dim %d)", n, dim);
    CHECK_RANGE(x, 0, (size_t)n * (size_t)dim, "rows_axpy x");
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: rows_axpy: row index %d at %d", idx[i], i);
        CHECK_RANGE(y, (size_t)idx[i] * (size_t)dim, (size_t)dim, "rows_axpy y");
    }
    for (int i = 0; i < n; i++) {
        float *yr = y->data + (size_t)idx[i] * (size_t)dim;
        const float *xr = x->data + (size_t)i * (size_t)dim;
        const float wi = w[i];
        for (int j = 0; j < dim; j++) yr[j] += wi * xr[j];
    }
    return LMX_OK;
}
