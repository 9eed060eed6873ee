/* test_cuda_paged.c — the CUDA backend's batched-step ops against its single-sequence ones:
 *   - paged KV (lmx_kv_map): several sequences of different lengths prefilled in ONE rope_qk_store +
 *     attention call over a block pool (shuffled physical blocks; block sizes 16, 64, 256), then decode
 *     steps with one row per sequence (rows in another order than the sequences), give the rotated
 *     q rows and attention outputs of one ring-cache call per sequence (fp16 and fp32 caches, GQA
 *     head_dim 64 and 128, full causal and a sliding window) to 1e-6 (the same kernels with the same
 *     splits run: expected bit for bit); a prefill chunk beside decode rows in one call;
 *     a bad table entry is refused, eagerly and inside a bracketed step (which is then redone); a
 *     paged op given other arrays than the step's inputs makes the step redo; with the step's map it
 *     runs inside the bracket and gives the eager output;
 *   - sample_rows: n rows with per-row parameters (plain greedy, greedy with penalty, temperature,
 *     top_p, top_k, unsupported) give the ids of the single-row device sampler row by row, -1 where
 *     it gives -1 (all -inf).
 * Exits 77 (skipped) without a CUDA device. Label: gpu. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "cuda_test_util.h"
#include "lmx_test.h"

#ifdef LMX_HAVE_CUDA
static tu_rng rng = {12345};

typedef struct shape {
    int n_heads, n_kv, hd, window;
    bool sinks; /* attention-sink logits (gpt-oss), the same in the paged and the ring calls */
} shape;

static lmx_backend *gpu_create(bool f32_kv) {
    lmx_cuda_options o = lmx_cuda_options_default();
    o.f32_kv = f32_kv;
    lmx_backend *be = NULL;
    lmx_status s = lmx_backend_cuda_create_ex(0, &o, &be);
    CHECK_MSG(s == LMX_OK, "cuda backend: %s", lmx_last_error_detail());
    return be;
}

static lmx_buf *buf_with(lmx_backend *be, const float *x, size_t n) {
    lmx_buf *b = NULL;
    CHECK(be->ops->buf_alloc(be, n, &b) == LMX_OK);
    if (b && x) CHECK(be->ops->buf_write(be, b, 0, x, n) == LMX_OK);
    return b;
}

static void rand_fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = tu_unif(&rng);
}

static double max_rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= num)) num = d; /* NaN propagates */
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

/* One call of rope_qk_store + attention over T rows: q [T, H*D], k/v [T, KV*D] (host), positions pos,
 * map or NULL (ring cache of `cap` slots); rotated q and outputs back to the host. The caches persist
 * across calls. */
typedef struct kvset {
    lmx_buf *kc, *vc;
    int cap;
} kvset;

static lmx_status step(lmx_backend *be, const shape *s, kvset *kv, const lmx_bweight *invf,
                       const lmx_bweight *sinks, const float *q, const float *k, const float *v, const int32_t *pos,
                       int T, const lmx_kv_map *map, float *q_out, float *o_out) {
    const size_t qn = (size_t)T * s->n_heads * s->hd, kn = (size_t)T * s->n_kv * s->hd;
    lmx_buf *bq = buf_with(be, q, qn), *bk = buf_with(be, k, kn), *bv = buf_with(be, v, kn);
    lmx_buf *bo = buf_with(be, NULL, qn);
    lmx_status st = bq && bk && bv && bo ? LMX_OK : LMX_ERR_OUT_OF_MEMORY;
    lmx_qk_rope_params rp = {.n_tokens = T, .n_heads = s->n_heads, .n_kv_heads = s->n_kv, .head_dim = s->hd,
                             .rot_dim = s->hd, .capacity = kv->cap, .inv_freq = invf, .mscale = 1.0f, .map = map};
    lmx_attn_params ap = {.n_tokens = T, .n_heads = s->n_heads, .n_kv_heads = s->n_kv, .head_dim = s->hd,
                          .capacity = kv->cap, .window = s->window, .scale = 1.0f / sqrtf((float)s->hd), .map = map,
                          .sinks = sinks};
    if (st == LMX_OK) st = be->ops->rope_qk_store(be, bq, bk, bv, kv->kc, kv->vc, &rp, pos);
    if (st == LMX_OK) st = be->ops->attention(be, bq, kv->kc, kv->vc, bo, &ap, pos);
    if (st == LMX_OK && q_out) st = be->ops->buf_read(be, bq, 0, q_out, qn);
    if (st == LMX_OK && o_out) st = be->ops->buf_read(be, bo, 0, o_out, qn);
    be->ops->buf_free(be, bq);
    be->ops->buf_free(be, bk);
    be->ops->buf_free(be, bv);
    be->ops->buf_free(be, bo);
    return st;
}

static kvset kv_alloc(lmx_backend *be, const shape *s, int cap) {
    kvset kv = {NULL, NULL, cap};
    const size_t n = (size_t)s->n_kv * cap * s->hd;
    CHECK(be->ops->kv_buf_alloc(be, n, &kv.kc) == LMX_OK);
    CHECK(be->ops->kv_buf_alloc(be, n, &kv.vc) == LMX_OK);
    return kv;
}
static void kv_free(lmx_backend *be, kvset *kv) {
    be->ops->buf_free(be, kv->kc);
    be->ops->buf_free(be, kv->vc);
}

#define NSEQ 4
#define RING_CAP 512

/* NSEQ sequences of lens[] prompt rows, prefilled in one paged call (rows in sequence order), then
 * `steps` decode steps of one row per sequence (rows in reverse sequence order), each compared with
 * the ring-cache run of every sequence alone; mixed: the last decode step carries a prefill chunk of
 * a fifth sequence beside the decode rows. */
static void paged_case(bool f32_kv, const shape *s, int bs, const int *lens, int steps, bool mixed) {
    lmx_backend *be = gpu_create(f32_kv);
    if (!be) return;
    const int H = s->n_heads, KV = s->n_kv, D = s->hd, nseq = mixed ? NSEQ + 1 : NSEQ;
    const int chunk = 40; /* the fifth sequence's rows in the mixed step */
    float invf_h[128];
    for (int i = 0; i < D / 2; i++) invf_h[i] = powf(10000.f, -2.0f * i / D);
    lmx_weight_desc vd = {.name = "inv_freq", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = D / 2,
                          .dtype = LMX_DTYPE_F32, .data = invf_h};
    lmx_bweight *invf = NULL, *sinks = NULL;
    CHECK(be->ops->weight_upload(be, &vd, &invf) == LMX_OK);
    float sinks_h[64];
    for (int h = 0; h < H; h++) sinks_h[h] = 4.0f * tu_unif(&rng);
    lmx_weight_desc sd = {.name = "sinks", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = H, .dtype = LMX_DTYPE_F32,
                          .data = sinks_h};
    if (s->sinks) CHECK(be->ops->weight_upload(be, &sd, &sinks) == LMX_OK);
    /* pool: blocks enough for every sequence, handed out in a shuffled order */
    const int stride = (RING_CAP + bs - 1) / bs, n_blocks = nseq * stride;
    int32_t *tables = malloc(sizeof(int32_t) * (size_t)nseq * stride), *perm = malloc(sizeof(int32_t) * n_blocks);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)(tu_next(&rng) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < nseq * stride; i++) tables[i] = perm[i];
    kvset pool = kv_alloc(be, s, n_blocks * bs), ring[NSEQ + 1];
    for (int q = 0; q < nseq; q++) ring[q] = kv_alloc(be, s, RING_CAP);
    int len[NSEQ + 1];
    for (int q = 0; q < NSEQ; q++) len[q] = 0;
    len[NSEQ] = 0;
    const size_t qrow = (size_t)H * D, krow = (size_t)KV * D;
    const int maxT = 512;
    float *q = malloc(sizeof(float) * maxT * qrow), *k = malloc(sizeof(float) * maxT * krow),
          *v = malloc(sizeof(float) * maxT * krow), *qa = malloc(sizeof(float) * maxT * qrow),
          *oa = malloc(sizeof(float) * maxT * qrow), *qb = malloc(sizeof(float) * maxT * qrow),
          *ob = malloc(sizeof(float) * maxT * qrow);
    int32_t pos[512], seq[512], row0[NSEQ + 1], nrow[NSEQ + 1];
    for (int it = 0; it <= steps && lmx_test_failures == 0; it++) {
        /* this call's rows: prefill (it 0) or one decode row per sequence in reverse order */
        int T = 0;
        for (int qi = 0; qi < nseq; qi++) {
            const int qs = it == 0 || qi == NSEQ ? qi : NSEQ - 1 - qi;
            int n = qs == NSEQ ? (it == steps ? chunk : 0) /* the mixed chunk: in the last step only */
                               : it == 0 ? lens[qs] : 1;
            row0[qs] = T;
            nrow[qs] = n;
            for (int r = 0; r < n; r++) {
                pos[T] = len[qs] + r;
                seq[T] = qs;
                T++;
            }
        }
        rand_fill(q, (size_t)T * qrow);
        rand_fill(k, (size_t)T * krow);
        rand_fill(v, (size_t)T * krow);
        lmx_kv_map map = {.tables = tables, .seq = seq, .n_seqs = nseq, .stride = stride, .block_size = bs};
        lmx_status st = step(be, s, &pool, invf, sinks, q, k, v, pos, T, &map, qa, oa);
        CHECK_MSG(st == LMX_OK, "paged step %d: %s", it, lmx_last_error_detail());
        for (int qs = 0; qs < nseq && st == LMX_OK; qs++) {
            if (nrow[qs] == 0) continue;
            const size_t r0 = (size_t)row0[qs];
            st = step(be, s, &ring[qs], invf, sinks, q + r0 * qrow, k + r0 * krow, v + r0 * krow, pos + r0, nrow[qs],
                      NULL, qb + r0 * qrow, ob + r0 * qrow);
            CHECK_MSG(st == LMX_OK, "ring step %d seq %d: %s", it, qs, lmx_last_error_detail());
            len[qs] += nrow[qs];
        }
        if (st != LMX_OK) break;
        const double rq = max_rel(qa, qb, (size_t)T * qrow), ro = max_rel(oa, ob, (size_t)T * qrow);
        CHECK_MSG(rq <= 1e-6 && ro <= 1e-6,
                  "f32_kv %d heads %d/%d hd %d window %d bs %d step %d (T %d): q rel %.3g, out rel %.3g", f32_kv, H,
                  KV, D, s->window, bs, it, T, rq, ro);
    }
    free(q), free(k), free(v), free(qa), free(oa), free(qb), free(ob);
    free(tables), free(perm);
    kv_free(be, &pool);
    for (int qs = 0; qs < nseq; qs++) kv_free(be, &ring[qs]);
    be->ops->weight_free(be, invf);
    be->ops->weight_free(be, sinks);
    lmx_backend_destroy(be);
}

static void test_paged_attention(void) {
    const shape shapes[4] = {{8, 2, 64, 0, false}, {8, 2, 128, 0, false}, {4, 4, 128, 48, false},
                             {16, 2, 64, 32, true}};
    const int lens[NSEQ] = {100, 37, 5, 200};
    const int bss[3] = {16, 64, 256};
    for (int f = 0; f < 2; f++)
        for (int si = 0; si < 4; si++)
            for (int b = 0; b < 3; b++) paged_case(f == 1, &shapes[si], bss[b], lens, 3, b == 1);
}

/* rope_qk_store + attention of one row over buffers allocated and written beforehand (buf_write is
 * refused inside a bracketed step); the attention output back to the host when o_out */
typedef struct rowbufs {
    lmx_buf *q, *k, *v, *o;
} rowbufs;

static rowbufs rowbufs_new(lmx_backend *be, const shape *s, const float *q, const float *k, const float *v) {
    rowbufs b = {buf_with(be, q, (size_t)s->n_heads * s->hd), buf_with(be, k, (size_t)s->n_kv * s->hd),
                 buf_with(be, v, (size_t)s->n_kv * s->hd), buf_with(be, NULL, (size_t)s->n_heads * s->hd)};
    return b;
}
static void rowbufs_free(lmx_backend *be, rowbufs *b) {
    be->ops->buf_free(be, b->q);
    be->ops->buf_free(be, b->k);
    be->ops->buf_free(be, b->v);
    be->ops->buf_free(be, b->o);
}
static lmx_status row_ops(lmx_backend *be, const shape *s, kvset *kv, const lmx_bweight *invf, const rowbufs *b,
                          const int32_t *pos, const lmx_kv_map *map) {
    lmx_qk_rope_params rp = {.n_tokens = 1, .n_heads = s->n_heads, .n_kv_heads = s->n_kv, .head_dim = s->hd,
                             .rot_dim = s->hd, .capacity = kv->cap, .inv_freq = invf, .mscale = 1.0f, .map = map};
    lmx_attn_params ap = {.n_tokens = 1, .n_heads = s->n_heads, .n_kv_heads = s->n_kv, .head_dim = s->hd,
                          .capacity = kv->cap, .window = s->window, .scale = 1.0f / sqrtf((float)s->hd), .map = map};
    lmx_status st = be->ops->rope_qk_store(be, b->q, b->k, b->v, kv->kc, kv->vc, &rp, pos);
    if (st == LMX_OK) st = be->ops->attention(be, b->q, kv->kc, kv->vc, b->o, &ap, pos);
    return st;
}

/* A table entry outside the pool is refused (eagerly and inside a bracketed step, where the step is
 * then redone); inside a step, a paged op given another map than the step's inputs makes the step
 * redo; a paged op with the step's map runs inside the bracket and gives the eager result. */
static void test_paged_refusals(void) {
    lmx_cuda_options o = lmx_cuda_options_default();
    o.graphs = true; /* step hooks active */
    lmx_backend *be = NULL;
    CHECK_MSG(lmx_backend_cuda_create_ex(0, &o, &be) == LMX_OK, "cuda backend: %s", lmx_last_error_detail());
    if (!be) return;
    CHECK(be->ops->step_begin && be->ops->step_end);
    const shape s = {4, 2, 64, 0, false};
    kvset pool = kv_alloc(be, &s, 4 * 64);
    float one[64] = {1.0f};
    lmx_weight_desc vd = {.name = "inv_freq", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = 32,
                          .dtype = LMX_DTYPE_F32, .data = one};
    lmx_bweight *invf = NULL;
    CHECK(be->ops->weight_upload(be, &vd, &invf) == LMX_OK);
    float q[4 * 64], k[2 * 64], v[2 * 64], oe[4 * 64], os[4 * 64];
    rand_fill(q, 256), rand_fill(k, 128), rand_fill(v, 128);
    /* position 70: logical block 1 -> 4: outside the pool */
    int32_t tables[2] = {1, 4}, seq[1] = {0}, pos[1] = {70}, id[1] = {0};
    lmx_kv_map map = {.tables = tables, .seq = seq, .n_seqs = 1, .stride = 2, .block_size = 64};
    CHECK(step(be, &s, &pool, invf, NULL, q, k, v, pos, 1, &map, NULL, NULL) == LMX_ERR_INVALID_ARGUMENT);
    rowbufs b = rowbufs_new(be, &s, q, k, v);
    bool redo = false;
    /* inside a step with that map as its input: refused, the step redone */
    lmx_step_inputs in = {.n_tokens = 1, .ids = id, .pos = pos, .map = &map};
    CHECK(be->ops->step_begin(be, &pool, 0, &in) == LMX_OK);
    lmx_status st = row_ops(be, &s, &pool, invf, &b, pos, &map);
    CHECK(st == LMX_ERR_INVALID_ARGUMENT);
    CHECK(be->ops->step_end(be, st == LMX_OK, &redo) == LMX_OK);
    CHECK(redo);
    tables[1] = 2;
    /* a step declared for one sequence's ring cache, given a paged op: not the step's inputs */
    rowbufs_free(be, &b);
    b = rowbufs_new(be, &s, q, k, v);
    in.map = NULL;
    redo = false;
    CHECK(be->ops->step_begin(be, &pool, 1, &in) == LMX_OK);
    st = row_ops(be, &s, &pool, invf, &b, pos, &map);
    CHECK(st != LMX_OK);
    CHECK(be->ops->step_end(be, st == LMX_OK, &redo) == LMX_OK);
    CHECK(redo);
    /* eagerly, then inside a step with the map as its input: the same output */
    rowbufs_free(be, &b);
    b = rowbufs_new(be, &s, q, k, v);
    CHECK(row_ops(be, &s, &pool, invf, &b, pos, &map) == LMX_OK);
    CHECK(be->ops->buf_read(be, b.o, 0, oe, 4 * 64) == LMX_OK);
    rowbufs_free(be, &b);
    b = rowbufs_new(be, &s, q, k, v);
    in.map = &map;
    redo = true;
    CHECK(be->ops->step_begin(be, &pool, 2, &in) == LMX_OK);
    st = row_ops(be, &s, &pool, invf, &b, pos, &map);
    CHECK_MSG(st == LMX_OK, "paged ops inside a step: %s", lmx_last_error_detail());
    CHECK(be->ops->step_end(be, st == LMX_OK, &redo) == LMX_OK);
    CHECK(!redo);
    CHECK(be->ops->buf_read(be, b.o, 0, os, 4 * 64) == LMX_OK);
    CHECK(memcmp(oe, os, sizeof oe) == 0);
    rowbufs_free(be, &b);
    kv_free(be, &pool);
    be->ops->weight_free(be, invf);
    lmx_backend_destroy(be);
}

/* sample_rows vs the single-row sampler, row by row */
static void test_sample_rows(void) {
    lmx_backend *be = gpu_create(false);
    if (!be) return;
    CHECK(be->ops->sample_rows && be->ops->sample_rows_result);
    const int V = 50000, n = 12;
    const lmx_sampling ps[6] = {
        {0, 0, 0, 0, 0, 0, 0, 0},          /* plain greedy */
        {0, 0, 0, 0, 1.3f, 20, 0, 0},      /* greedy with penalty */
        {0.8f, 0.9f, 0, 0, 0, 0, 0, 0},    /* top_p */
        {0.7f, 0, 0.05f, 40, 1.1f, 20, 0, 0},
        {1.0f, 0, 0, 0, 0, 0, 0, 0},
        {0.7f, 0, 0, -1, 0, 0, 0, 0},/* unsupported on the device: -1 */
    };
    float *x = malloc(sizeof(float) * (size_t)V * n);
    lmx_buf *lb = buf_with(be, NULL, (size_t)V * n);
    int32_t window[20];
    for (int i = 0; i < 20; i++) window[i] = (int32_t)(tu_next(&rng) % V);
    for (int round = 0; round < 20 && x && lb; round++) {
        for (size_t i = 0; i < (size_t)V * n; i++) x[i] = 3.0f * tu_unif(&rng);
        if (round % 5 == 1)
            for (int i = 0; i < V; i++) x[(size_t)4 * V + i] = -INFINITY; /* row 4: nothing above -inf */
        if (round % 5 == 2) x[(size_t)6 * V + 7] = NAN;                    /* row 6: greedy skips NaN */
        if (round % 5 == 3) x[(size_t)0 * V + 11] = x[(size_t)0 * V + 12] = 9.0f; /* a tie: the lower id */
        CHECK(be->ops->buf_write(be, lb, 0, x, (size_t)V * n) == LMX_OK);
        lmx_sample_args a[12];
        for (int r = 0; r < n; r++) {
            a[r] = (lmx_sample_args){.sampling = ps[(r + round) % 6], .window = window,
                                     .u = (double)(tu_next(&rng) >> 11) * 0x1.0p-53};
            if (r % 3 == 0) a[r].sampling = ps[0];
            /* the penalty window holds the last repetition_context ids at most (as the engine passes it) */
            a[r].n_window = a[r].sampling.repetition_context < 20 ? a[r].sampling.repetition_context : 20;
        }
        int32_t got[12], want[12];
        lmx_status st = be->ops->sample_rows(be, lb, V, n, a);
        if (st == LMX_OK) st = be->ops->sample_rows_result(be, n, got);
        CHECK_MSG(st == LMX_OK, "sample_rows: %s", lmx_last_error_detail());
        for (int r = 0; r < n && st == LMX_OK; r++) {
            lmx_buf *row = NULL;
            st = be->ops->buf_view(be, lb, (size_t)r * V, (size_t)V, &row);
            if (st == LMX_OK) st = be->ops->sample(be, row, V, &a[r]);
            if (st == LMX_OK) st = be->ops->sample_result(be, &want[r]);
            be->ops->buf_free(be, row);
            CHECK_MSG(st == LMX_OK && got[r] == want[r], "round %d row %d (temp %.2f): rows %d vs single %d", round, r,
                      a[r].sampling.temperature, got[r], want[r]);
        }
    }
    free(x);
    be->ops->buf_free(be, lb);
    lmx_backend_destroy(be);
}
#endif

/* no such device: the backend is refused (every build) */
static void test_no_device_error(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cuda_create(999, &be) == LMX_ERR_GPU_NOT_AVAILABLE && be == NULL);
}

int main(void) {
    RUN(test_no_device_error);
#ifdef LMX_HAVE_CUDA
    if (lmx_cuda_available(NULL)) {
        RUN(test_paged_attention);
        RUN(test_paged_refusals);
        RUN(test_sample_rows);
        return lmx_test_summary();
    }
#endif
    SKIP("no CUDA device (or a build without CUDA): paged KV / sample_rows tests skipped");
    return lmx_test_failures ? 1 : 77;
}
