/* cpu_attention.c — the CPU backend's attention op (cpu_attention.h): tiles of query rows × the
 * query heads of a KV head on the thread pool, key blocks aligned to absolute positions with an
 * online softmax, the level's kernels for the dots, the exps and the weighted sums of values; and
 * the scalar level's kernels, the plain reference. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_attention.h"
#include "backend/cpu/cpu_backend_internal.h"

#define BLK LMX_ATTN_BLOCK
/* queries (rows × heads) per tile: its queries, accumulators and one block's scores stay in L1/L2
 * while each key/value row of the block serves all of them */
#define ATTN_TILE_Q 64

typedef struct attn_ctx {
    const lmx_attn_kernels *k;
    const float *q, *kc, *vc; /* q [T][n_heads][D]; caches [n_kv][capacity][D] */
    float *out;               /* [T][n_heads][D] */
    const lmx_attn_params *p;
    const int32_t *pos;       /* [T] */
    int shift;                /* paged: log2 block size */
    int hp;                   /* query heads per item (a divisor of the group) */
    int rows;                 /* query rows per tile */
    int n_tiles, n_hc;        /* tiles of rows; head chunks per kv head */
    float *const *scratch;    /* per thread: attn_scratch_floats */
} attn_ctx;

static inline int attn_lo(const lmx_attn_params *p, int pt) {
    return p->window > 0 && pt - p->window + 1 > 0 ? pt - p->window + 1 : 0;
}

/* floats of per-thread scratch for tiles of up to nq queries */
static size_t attn_scratch_floats(int nq, int D) { return (size_t)nq * (2 * (size_t)D + BLK + 2) + 16; }

/* The part [*j0, *j1] of block [b0, b0 + BLK) that the query at pt sees (empty: *j0 > *j1). */
static inline void attn_clip(const lmx_attn_params *p, int pt, int b0, int *j0, int *j1) {
    const int lo = attn_lo(p, pt);
    *j0 = lo > b0 ? lo : b0;
    *j1 = pt < b0 + BLK - 1 ? pt : b0 + BLK - 1;
}

/* the key and value rows of block b's positions in [tlo, thi] (kv[0][j], kv[1][j]: position
 * b·BLK + j); prefetch: their cache lines are requested into L2 (the next block's, while this one
 * is computed) */
static void attn_block_rows(const attn_ctx *a, int sq, int kh, int tlo, int thi, int b, const float *kv[2][BLK],
                            bool prefetch) {
    const lmx_attn_params *p = a->p;
    const int D = p->head_dim, cap = p->capacity, b0 = b * BLK;
    const int klo = b0 > tlo ? b0 : tlo, khi = b0 + BLK - 1 < thi ? b0 + BLK - 1 : thi;
    const float *kb = a->kc + (size_t)kh * cap * D, *vb = a->vc + (size_t)kh * cap * D;
    for (int j = klo; j <= khi; j++) {
        const size_t slot = p->map ? map_slot(p->map, a->shift, sq, j) : (size_t)(j % cap);
        kv[0][j - b0] = kb + slot * D;
        kv[1][j - b0] = vb + slot * D;
        if (prefetch)
            for (int d = 0; d < D; d += 16) {
                __builtin_prefetch(kv[0][j - b0] + d, 0, 2);
                __builtin_prefetch(kv[1][j - b0] + d, 0, 2);
            }
    }
}

/* rows [r0, r1) of one sequence, query heads [h0, h0 + hp) of kv head kh: the online softmax over
 * the union of the rows' key ranges, block by block; rows whose part of a block is the same share
 * the kernel calls (the kernels compute each query alone) */
static void attn_tile(const attn_ctx *a, int r0, int r1, int kh, int h0, float *ws) {
    const lmx_attn_params *p = a->p;
    const lmx_attn_kernels *K = a->k;
    const lmx_kv_map *m = p->map;
    const int D = p->head_dim, hp = a->hp, nr = r1 - r0, nq = nr * hp;
    const int sq = m ? m->seq[r0] : 0;
    float *qt = ws;                   /* [nq][D] the tile's queries, by (row, head) */
    float *acc = qt + (size_t)nq * D; /* [nq][D] the accumulators */
    float *sc = acc + (size_t)nq * D; /* [nq][BLK] one block's scores, then weights */
    float *mx = sc + (size_t)nq * BLK; /* [nq] running max */
    float *den = mx + nq;             /* [nq] running denominator */
    int tlo = INT_MAX, thi = -1;
    for (int r = 0; r < nr; r++) {
        const int pt = a->pos[r0 + r], lo = attn_lo(p, pt);
        if (lo < tlo) tlo = lo;
        if (pt > thi) thi = pt;
        memcpy(qt + (size_t)r * hp * D, a->q + ((size_t)(r0 + r) * p->n_heads + h0) * D,
               (size_t)hp * D * sizeof(float));
        for (int i = 0; i < hp; i++) {
            /* an attention sink starts the softmax: a logit of weight exp(sink − max), no value */
            mx[r * hp + i] = p->sinks ? p->sinks->vec[h0 + i] : -INFINITY;
            den[r * hp + i] = p->sinks ? 1.0f : 0.0f;
        }
    }
    memset(acc, 0, (size_t)nq * D * sizeof(float));
    const float *rows[2][2][BLK]; /* [block parity][k, v][j]: the rows of positions b·BLK + j */
    attn_block_rows(a, sq, kh, tlo, thi, tlo / BLK, rows[(tlo / BLK) & 1], false);
    for (int b = tlo / BLK; b <= thi / BLK; b++) {
        const int b0 = b * BLK;
        const float *const *kp = rows[b & 1][0], *const *vp = rows[b & 1][1];
        if (b < thi / BLK) attn_block_rows(a, sq, kh, tlo, thi, b + 1, rows[(b + 1) & 1], true);
        for (int r = 0, e; r < nr; r = e) {
            int j0, j1, e0, e1;
            attn_clip(p, a->pos[r0 + r], b0, &j0, &j1);
            for (e = r + 1; e < nr; e++) {
                attn_clip(p, a->pos[r0 + e], b0, &e0, &e1);
                if (e0 != j0 || e1 != j1) break;
            }
            if (j0 > j1) continue;
            const int n = j1 - j0 + 1, qi = r * hp, nb = (e - r) * hp;
            K->scores(qt + (size_t)qi * D, nb, kp + (j0 - b0), n, D, p->scale, sc + (size_t)qi * BLK, BLK);
            for (int i = qi; i < qi + nb; i++) {
                float *s = sc + (size_t)i * BLK, alpha;
                if (p->softcap > 0)
                    for (int j = 0; j < n; j++) s[j] = p->softcap * tanhf(s[j] / p->softcap);
                const float sum = K->softmax(s, n, &mx[i], &alpha);
                if (alpha != 1.0f) {
                    float *ai = acc + (size_t)i * D;
                    for (int d = 0; d < D; d++) ai[d] *= alpha;
                }
                den[i] = den[i] * alpha + sum;
            }
            K->pv(acc + (size_t)qi * D, nb, sc + (size_t)qi * BLK, BLK, vp + (j0 - b0), n, D);
        }
    }
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < hp; i++) {
            float *o = a->out + ((size_t)(r0 + r) * p->n_heads + h0 + i) * D;
            const float *ai = acc + (size_t)(r * hp + i) * D, inv = 1.0f / den[r * hp + i];
            for (int d = 0; d < D; d++) o[d] = ai[d] * inv;
        }
}

/* items: (tile, kv head, head chunk), the latest tiles first (under a causal mask they see the most
 * keys); a tile's rows split into runs of one sequence */
static void attn_items(void *vctx, int64_t i0, int64_t i1, int thread) {
    const attn_ctx *a = vctx;
    const lmx_attn_params *p = a->p;
    const int group = p->n_heads / p->n_kv_heads;
    const int64_t per_tile = (int64_t)p->n_kv_heads * a->n_hc;
    for (int64_t it = i0; it < i1; it++) {
        const int tile = a->n_tiles - 1 - (int)(it / per_tile), rest = (int)(it % per_tile);
        const int kh = rest / a->n_hc, h0 = kh * group + (rest % a->n_hc) * a->hp;
        const int rb = tile * a->rows, re = rb + a->rows < p->n_tokens ? rb + a->rows : p->n_tokens;
        for (int r = rb, e; r < re; r = e) {
            for (e = r + 1; p->map && e < re && p->map->seq[e] == p->map->seq[r]; e++) {}
            if (!p->map) e = re;
            attn_tile(a, r, e, kh, h0, a->scratch[thread]);
        }
    }
}

static lmx_status cpu_attention_impl(cpu_backend *c, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc,
                                     lmx_buf *out, const lmx_attn_params *p, const int32_t *pos) {
    LMX_BACKEND_TRY(lmx_backend_check_attention("cpu", p, q->n, out->n, kc->n, vc->n,
                                                p->sinks ? p->sinks->kind : LMX_WEIGHT_VECTOR,
                                                p->sinks ? p->sinks->cols : 0));
    int max_pos = -1;
    for (int t = 0; t < p->n_tokens; t++) {
        if (pos[t] < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: negative position %d", pos[t]);
        if (pos[t] > max_pos) max_pos = pos[t];
    }
    if (p->map) {
        LMX_BACKEND_TRY(lmx_cpu_kv_map_check("attention", p->map, p->n_tokens, pos, p->capacity));
    } else {
        /* every key a query sees must still be in its slot: the newest position written by this call
         * minus the oldest visible one must fit in the ring (full caches: positions < capacity) */
        for (int t = 0; t < p->n_tokens; t++) {
            const int lo = attn_lo(p, pos[t]);
            if (max_pos - lo >= p->capacity)
                return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                                 "attention: positions %d..%d do not fit in a cache of %d slots (window %d)", lo,
                                 max_pos, p->capacity, p->window);
        }
    }
    if (p->n_tokens < 1) return LMX_OK;
    /* the split only decides which queries share a kernel call, never a query's arithmetic: fewer
     * than 2 items per thread (decode) splits the group's heads */
    const int group = p->n_heads / p->n_kv_heads;
    int hp = group, rows = 1, n_tiles = p->n_tokens;
    for (;;) {
        rows = hp < ATTN_TILE_Q ? ATTN_TILE_Q / hp : 1;
        n_tiles = (p->n_tokens + rows - 1) / rows;
        if (hp % 2 || (int64_t)n_tiles * p->n_kv_heads * (group / hp) >= 2 * (int64_t)c->n_threads) break;
        hp /= 2;
    }
    LMX_BACKEND_TRY(ensure_scratch(c, attn_scratch_floats(rows * hp, p->head_dim)));
    attn_ctx a = {lmx_cpu_attn_kernels(c->level), q->data, kc->data, vc->data, out->data, p, pos,
                  p->map ? map_shift(p->map) : 0, hp, rows, n_tiles, group / hp, c->scratch};
    lmx_thread_pool_run(c->pool, (int64_t)n_tiles * p->n_kv_heads * (group / hp), 1, attn_items, &a);
    return LMX_OK;
}

lmx_status lmx_cpu_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc, lmx_buf *out,
                             const lmx_attn_params *p, const int32_t *pos) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_attention_impl(c, q, kc, vc, out, p, pos);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

/* ---- the scalar level: the plain reference ---- */

static void scores_scalar(const float *q, int nq, const float *const *k, int n, int D, float scale, float *s,
                          size_t ss) {
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < n; j++) {
            const float *qi = q + (size_t)i * D, *kj = k[j];
            float r = 0.0f;
            for (int d = 0; d < D; d++) r += qi[d] * kj[d];
            s[(size_t)i * ss + j] = r * scale;
        }
}

static float softmax_scalar(float *s, int n, float *m, float *alpha) {
    float mb = *m;
    for (int j = 0; j < n; j++)
        if (s[j] > mb) mb = s[j];
    *alpha = mb > *m ? expf(*m - mb) : 1.0f;
    *m = mb;
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - mb);
        sum += s[j];
    }
    return sum;
}

static void pv_scalar(float *acc, int nq, const float *p, size_t ps, const float *const *v, int n, int D) {
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < n; j++) {
            float *ai = acc + (size_t)i * D;
            const float w = p[(size_t)i * ps + j], *vj = v[j];
            for (int d = 0; d < D; d++) ai[d] += w * vj[d];
        }
}

const lmx_attn_kernels lmx_attn_scalar = {scores_scalar, softmax_scalar, pv_scalar};

const lmx_attn_kernels *lmx_cpu_attn_kernels(lmx_cpu_level level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (level >= LMX_CPU_AVX2) return &lmx_attn_avx2;
#endif
    (void)level;
    return &lmx_attn_scalar;
}
