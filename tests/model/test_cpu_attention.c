/* test_cpu_attention.c — the CPU attention op (src/backend/cpu/cpu_attention.c) at every kernel
 * level (scalar, AVX2, AVX-VNNI, AVX-512) with 1 and 3 threads against a double-precision
 * reference: head_dim 64/128/256 and odd ones (5, 24, 72: off the 8-lane vectors), GQA groups
 * 1/2/4/8, decode rows and prefill chunks whose spans cross the 64-key blocks, sliding windows
 * (over exact rings of window + T - 1 slots), softcap, attention sinks. And the determinism
 * contract: every row of a call equals that row alone (T = 1) bit for bit, the same rows through a
 * paged cache (scrambled 16-slot blocks, the rows in a shuffled order) equal the ring's bit for bit,
 * 1 and 3 threads agree bit for bit, and the SIMD levels (one set of attention kernels) agree bit
 * for bit. Tolerance against the reference: 2e-5 absolute (values in [-1, 1]). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "lmx_test.h"
#include "model/cpu_levels.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

typedef struct attn_case {
    int D, NH, NKV, T, ctx, window;
    float softcap;
    bool sinks;
} attn_case;

static int lo_of(const attn_case *c, int pt) {
    return c->window > 0 && pt - c->window + 1 > 0 ? pt - c->window + 1 : 0;
}

/* softmax attention of row t (position ctx + t) over keys K/V [NKV][P][D] in double */
static void reference(const attn_case *c, const float *q, const float *K, const float *V, const float *sk, int P,
                      double *out) {
    const int D = c->D, grp = c->NH / c->NKV;
    double *s = malloc(sizeof(double) * (size_t)P);
    for (int t = 0; t < c->T; t++)
        for (int h = 0; h < c->NH; h++) {
            const int pt = c->ctx + t, lo = lo_of(c, pt), kh = h / grp;
            double mx = c->sinks ? sk[h] : -INFINITY, sum = 0;
            for (int j = lo; j <= pt; j++) {
                double d = 0;
                for (int e = 0; e < D; e++)
                    d += (double)q[((size_t)t * c->NH + h) * D + e] * K[((size_t)kh * P + j) * D + e];
                d *= 1.0 / sqrt((double)D);
                if (c->softcap > 0) d = c->softcap * tanh(d / c->softcap);
                s[j] = d;
                mx = fmax(mx, d);
            }
            for (int j = lo; j <= pt; j++) sum += s[j] = exp(s[j] - mx);
            if (c->sinks) sum += exp(sk[h] - mx);
            for (int e = 0; e < D; e++) {
                double o = 0;
                for (int j = lo; j <= pt; j++) o += s[j] * V[((size_t)kh * P + j) * D + e];
                out[((size_t)t * c->NH + h) * D + e] = o / sum;
            }
        }
    free(s);
}

/* rows [0, n) at positions pos through backend b: the cache [NKV][cap][D] filled from K/V by slot(j) */
static void run(lmx_backend *b, const attn_case *c, const float *q, const float *K, const float *V, const float *sk,
                int P, int cap, const lmx_kv_map *map, const int32_t *slot_of, const int32_t *pos, const int *rows,
                int n, float *out) {
    const size_t D = (size_t)c->D, cn = (size_t)c->NKV * cap * D;
    float *kc = calloc(cn, sizeof(float)), *vc = calloc(cn, sizeof(float));
    float *qr = malloc(sizeof(float) * (size_t)n * c->NH * D);
    for (int h = 0; h < c->NKV; h++)
        for (int j = 0; j < P; j++) {
            memcpy(kc + ((size_t)h * cap + slot_of[j]) * D, K + ((size_t)h * P + j) * D, D * sizeof(float));
            memcpy(vc + ((size_t)h * cap + slot_of[j]) * D, V + ((size_t)h * P + j) * D, D * sizeof(float));
        }
    for (int r = 0; r < n; r++)
        memcpy(qr + (size_t)r * c->NH * D, q + (size_t)rows[r] * c->NH * D, (size_t)c->NH * D * sizeof(float));
    lmx_buf *bq = buf_from(b, qr, (size_t)n * c->NH * D), *bk = buf_from(b, kc, cn), *bv = buf_from(b, vc, cn);
    lmx_buf *bo = buf_from(b, NULL, (size_t)n * c->NH * D);
    lmx_weight_desc dsk = {.name = "sinks", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = c->NH,
                           .dtype = LMX_DTYPE_F32, .data = sk};
    lmx_bweight *wsk = NULL;
    if (c->sinks) CHECK(b->ops->weight_upload(b, &dsk, &wsk) == LMX_OK);
    const lmx_attn_params p = {.n_tokens = n, .n_heads = c->NH, .n_kv_heads = c->NKV, .head_dim = c->D,
                               .capacity = cap, .window = c->window, .scale = (float)(1.0 / sqrt((double)c->D)),
                               .softcap = c->softcap, .map = map, .sinks = wsk};
    CHECK(b->ops->attention(b, bq, bk, bv, bo, &p, pos) == LMX_OK);
    b->ops->buf_read(b, bo, 0, out, (size_t)n * c->NH * D);
    b->ops->weight_free(b, wsk);
    lmx_buf *all[] = {bq, bk, bv, bo};
    for (int i = 0; i < 4; i++) b->ops->buf_free(b, all[i]);
    free(kc), free(vc), free(qr);
}

static void check_case(attn_case c) {
    const int P = c.ctx + c.T, D = c.D, nq = c.T * c.NH * D;
    const int ring = c.window > 0 && c.window + c.T - 1 < P ? c.window + c.T - 1 : P;
    float *q = malloc(sizeof(float) * (size_t)nq), *K = malloc(sizeof(float) * (size_t)c.NKV * P * D);
    float *V = malloc(sizeof(float) * (size_t)c.NKV * P * D), sk[32];
    for (int i = 0; i < nq; i++) q[i] = frand();
    for (size_t i = 0; i < (size_t)c.NKV * P * D; i++) K[i] = frand(), V[i] = frand();
    for (int h = 0; h < 32; h++) sk[h] = 3.0f * frand();
    double *ref = malloc(sizeof(double) * (size_t)nq);
    reference(&c, q, K, V, sk, P, ref);
    /* the ring: slot j % ring; the paged cache: 16-slot blocks handed out in a scrambled order */
    const int BS = 16, nb = (P + BS - 1) / BS;
    int32_t *ring_slot = malloc(sizeof(int32_t) * (size_t)P), *page_slot = malloc(sizeof(int32_t) * (size_t)P);
    int32_t *table = malloc(sizeof(int32_t) * (size_t)nb), *pos = malloc(sizeof(int32_t) * (size_t)c.T);
    int32_t *ppos = malloc(sizeof(int32_t) * (size_t)c.T), *seq = calloc((size_t)c.T, sizeof(int32_t));
    int *rows = malloc(sizeof(int) * (size_t)c.T), *prow = malloc(sizeof(int) * (size_t)c.T);
    for (int b = 0; b < nb; b++) table[b] = (int32_t)((b * 7 + 3) % nb);
    for (int i = 0; i < nb; i++) /* 7 may share a factor with nb: then the identity */
        for (int j = 0; j < i; j++)
            if (table[i] == table[j]) {
                for (int b = 0; b < nb; b++) table[b] = nb - 1 - b;
                i = nb;
                break;
            }
    for (int j = 0; j < P; j++) ring_slot[j] = j % ring, page_slot[j] = table[j / BS] * BS + j % BS;
    for (int t = 0; t < c.T; t++) rows[t] = t, pos[t] = c.ctx + t, prow[t] = (t * 5 + 2) % c.T;
    if (c.T % 5 == 0)
        for (int t = 0; t < c.T; t++) prow[t] = c.T - 1 - t;
    for (int t = 0; t < c.T; t++) ppos[t] = c.ctx + prow[t];
    const lmx_kv_map map = {.tables = table, .seq = seq, .n_seqs = 1, .stride = nb, .block_size = BS};
    float *out[N_LEVELS][2], *alone = malloc(sizeof(float) * (size_t)c.NH * D);
    float *paged = malloc(sizeof(float) * (size_t)nq);
    for (int L = 0; L < N_LEVELS; L++)
        for (int i = 0; i < 2; i++) {
            out[L][i] = malloc(sizeof(float) * (size_t)nq);
            run(be[L][i], &c, q, K, V, sk, P, ring, NULL, ring_slot, pos, rows, c.T, out[L][i]);
            double err = 0;
            for (int e = 0; e < nq; e++) err = fmax(err, fabs(out[L][i][e] - ref[e]));
            CHECK_MSG(err < 2e-5, "%s, %d thread(s): D %d heads %d/%d T %d ctx %d window %d softcap %g sinks %d: err %g",
                      level_name[L], i ? 3 : 1, D, c.NH, c.NKV, c.T, c.ctx, c.window, c.softcap, c.sinks, err);
            if (i) {
                CHECK_MSG(!memcmp(out[L][0], out[L][1], sizeof(float) * (size_t)nq),
                          "%s: 1 and 3 threads differ (D %d heads %d/%d T %d ctx %d)", level_name[L], D, c.NH, c.NKV,
                          c.T, c.ctx);
                continue;
            }
            int differ = 0;
            for (int t = 0; t < c.T; t++) { /* each row alone */
                run(be[L][0], &c, q, K, V, sk, P, ring, NULL, ring_slot, pos + t, rows + t, 1, alone);
                differ += memcmp(alone, out[L][0] + (size_t)t * c.NH * D, sizeof(float) * (size_t)c.NH * D) != 0;
            }
            run(be[L][0], &c, q, K, V, sk, P, nb * BS, &map, page_slot, ppos, prow, c.T, paged);
            int pdiffer = 0;
            for (int t = 0; t < c.T; t++)
                pdiffer += memcmp(paged + (size_t)t * c.NH * D, out[L][0] + (size_t)prow[t] * c.NH * D,
                                  sizeof(float) * (size_t)c.NH * D) != 0;
            CHECK_MSG(differ == 0 && pdiffer == 0,
                      "%s: D %d heads %d/%d T %d ctx %d window %d: %d rows differ alone, %d paged, of %d",
                      level_name[L], D, c.NH, c.NKV, c.T, c.ctx, c.window, differ, pdiffer, c.T);
            if (L > 1)
                CHECK_MSG(!memcmp(out[L][0], out[1][0], sizeof(float) * (size_t)nq),
                          "%s and avx2 attention differ (D %d heads %d/%d T %d)", level_name[L], D, c.NH, c.NKV, c.T);
        }
    for (int L = 0; L < N_LEVELS; L++) free(out[L][0]), free(out[L][1]);
    free(q), free(K), free(V), free(ref), free(ring_slot), free(page_slot), free(table), free(pos), free(ppos);
    free(seq), free(rows), free(prow), free(alone), free(paged);
}

static void test_shapes(void) {
    /* head_dim: the real ones and odd ones; GQA groups 1/2/4/8; decode and prefill chunks */
    const int dims[] = {64, 128, 5, 24, 72};
    const int heads[][2] = {{4, 4}, {4, 2}, {8, 2}, {8, 1}};
    for (int d = 0; d < 5; d++)
        for (int h = 0; h < 4; h++) {
            check_case((attn_case){dims[d], heads[h][0], heads[h][1], 1, 150, 0, 0, false});
            check_case((attn_case){dims[d], heads[h][0], heads[h][1], 13, 0, 0, 0, false});
        }
    check_case((attn_case){256, 16, 2, 3, 70, 0, 0, false});
    check_case((attn_case){64, 32, 8, 1, 200, 0, 0, false}); /* the llama-3.2-1b shape */
    check_case((attn_case){64, 32, 8, 37, 100, 0, 0, false});
}

static void test_long_spans(void) {
    /* prefill chunks over cached positions: spans crossing several 64-key blocks, the chunk's rows
     * in different blocks */
    check_case((attn_case){64, 8, 2, 37, 190, 0, 0, false});
    check_case((attn_case){72, 4, 1, 70, 0, 0, 0, false});
    check_case((attn_case){128, 8, 1, 1, 300, 0, 0, false});
    check_case((attn_case){5, 2, 2, 66, 64, 0, 0, false});
}

static void test_window_softcap_sinks(void) {
    check_case((attn_case){64, 8, 2, 9, 200, 20, 0, false});  /* a window inside one block or two */
    check_case((attn_case){64, 4, 2, 37, 150, 100, 0, false}); /* a window over several blocks */
    check_case((attn_case){24, 8, 1, 1, 260, 64, 0, false});   /* decode, a window of exactly one block */
    check_case((attn_case){64, 8, 2, 11, 40, 0, 5.0f, false}); /* softcap */
    check_case((attn_case){128, 8, 8, 5, 90, 30, 2.0f, false});
    check_case((attn_case){64, 8, 2, 7, 100, 0, 0, true});    /* sinks */
    check_case((attn_case){64, 16, 2, 1, 180, 0, 0, true});
    check_case((attn_case){72, 8, 4, 20, 120, 33, 4.0f, true});
    check_case((attn_case){64, 4, 4, 3, 0, 0, 0, true}); /* the sink beside the first key */
}

int main(void) {
    if (!levels_create()) return 1;
    RUN(test_shapes);
    RUN(test_long_spans);
    RUN(test_window_softcap_sinks);
    levels_destroy();
    return lmx_test_summary();
}
