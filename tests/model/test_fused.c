/* test_fused.c — fused q|k|v and gate|up weights and buffer views on the CPU backend:
 *   - buf_view semantics (fused_check.h view_check);
 *   - the CPU backend's test-only weight_upload_fused (lmx_backend_cpu_enable_fused): fused and view
 *     matmuls bit-identical to separate weights, every dtype and quant width; mismatched parts refused;
 *   - the model's fused decode path (one q|k|v and one gate|up matmul per layer for T == 1) gives
 *     bit-identical logits to the unfused path on every fixture model (prefill + 8 decode steps),
 *     and the KV cache counts the extra decode buffers; the fused prefill (one gate|up GEMM +
 *     act_mul_split) gives bit-identical logits to separate gate / up GEMMs and its scratch is counted;
 *   - the prefill chunk a backend states (prefill_chunk) sizes the KV cache's scratch. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lmx_test.h"
#include "model/lm_internal.h"
#include "model/mlx_pack.h"
#include "model/fused_check.h"
#include "util/error.h"

static void test_buf_view(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK);
    if (!be) return;
    view_check(be);
    lmx_backend_destroy(be);
}

static void test_fused_upload(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK);
    if (!be) return;
    /* production CPU backend (every level): a fused upload for the 4/8-bit parts it repacks
     * (bitwise the separate weights' results; no source rows kept); dense parts refused */
    CHECK(be->ops->weight_upload_fused != NULL);
    {
        const int qkv0[3] = {32, 16, 16}, odd0[3] = {5, 3, 7}, gu0[2] = {48, 48};
        fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, 4, 64, false, qkv0, 3, 128, 5, 0);
        fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_F16, 8, 32, true, odd0, 3, 64, 4, 0);
        fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, 4, 128, true, gu0, 2, 256, 1, 0);
        fc_store st0;
        lmx_weight_desc dp[3];
        fc_make_parts(LMX_WEIGHT_DENSE, LMX_DTYPE_BF16, 0, 0, false, qkv0, 3, 64, 7u, &st0, dp);
        lmx_bweight *fz0 = NULL, *vw0[3] = {0};
        CHECK(be->ops->weight_upload_fused(be, dp, 3, &fz0, vw0) == LMX_ERR_UNSUPPORTED && !fz0 && !vw0[0]);
        fc_store_free(&st0);
        fc_make_parts(LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, 3, 32, false, qkv0, 3, 64, 7u, &st0, dp);
        CHECK(be->ops->weight_upload_fused(be, dp, 3, &fz0, vw0) == LMX_ERR_UNSUPPORTED && !fz0 && !vw0[0]);
        fc_store_free(&st0);
    }
    CHECK(lmx_backend_cpu_enable_fused(be) == LMX_OK);
    CHECK(be->ops->weight_upload_fused != NULL);
    CHECK(lmx_backend_cpu_kernels(be) != NULL);
    const int qkv[3] = {8, 4, 4}, odd[3] = {5, 3, 7}, gu[2] = {12, 12};
    const lmx_dtype dts[3] = {LMX_DTYPE_F32, LMX_DTYPE_F16, LMX_DTYPE_BF16};
    for (int i = 0; i < 3; i++) {
        fused_case(be, LMX_WEIGHT_DENSE, dts[i], 0, 0, false, qkv, 3, 64, 5, 0);
        fused_case(be, LMX_WEIGHT_DENSE, dts[i], 0, 0, true, odd, 3, 48, 5, 0);
    }
    const int bits[6] = {2, 3, 4, 5, 6, 8};
    for (int i = 0; i < 6; i++) {
        fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, bits[i], 32, false, qkv, 3, 128, 5, 0);
        fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_F16, bits[i], 64, true, gu, 2, 128, 4, 0);
    }
    fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_F32, 4, 128, true, odd, 3, 256, 5, 0);
    fused_mismatch(be);
    /* a CPU backend without the test hook refuses nothing but has no fused upload */
    lmx_backend *other = NULL;
    CHECK(lmx_backend_cpu_enable_fused(other) == LMX_ERR_INVALID_ARGUMENT);
    lmx_backend_destroy(be);
}

/* act_mul_split on the CPU: bitwise act_mul on separate gate / up buffers; bad arguments refused */
static void test_act_mul_split(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK);
    if (!be) return;
    CHECK(be->ops->act_mul_split != NULL);
    const int T = 5, I = 9000; /* rows longer than one thread-pool block (8192) */
    float *gu = malloc(sizeof(float) * T * 2 * I), *ref = malloc(sizeof(float) * T * I), *up = malloc(sizeof(float) * T * I);
    float *got = malloc(sizeof(float) * T * I);
    uint64_t r = 42;
    for (int i = 0; i < T * 2 * I; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        gu[i] = (float)((double)(r >> 40) / 16777216.0 * 16.0 - 8.0);
    }
    for (int act = 0; act <= 1; act++) {
        lmx_buf *bgu = NULL, *bout = NULL, *bg = NULL, *bu = NULL;
        CHECK(be->ops->buf_alloc(be, (size_t)T * 2 * I, &bgu) == LMX_OK);
        CHECK(be->ops->buf_alloc(be, (size_t)T * I, &bout) == LMX_OK);
        CHECK(be->ops->buf_alloc(be, (size_t)T * I, &bg) == LMX_OK);
        CHECK(be->ops->buf_alloc(be, (size_t)T * I, &bu) == LMX_OK);
        if (bgu && bout && bg && bu) {
            for (int t = 0; t < T; t++) {
                memcpy(ref + (size_t)t * I, gu + (size_t)t * 2 * I, sizeof(float) * I);
                memcpy(up + (size_t)t * I, gu + (size_t)t * 2 * I + I, sizeof(float) * I);
            }
            CHECK(be->ops->buf_write(be, bgu, 0, gu, (size_t)T * 2 * I) == LMX_OK);
            CHECK(be->ops->buf_write(be, bg, 0, ref, (size_t)T * I) == LMX_OK);
            CHECK(be->ops->buf_write(be, bu, 0, up, (size_t)T * I) == LMX_OK);
            CHECK(be->ops->act_mul(be, bg, bu, (size_t)T * I, (lmx_act_kind)act) == LMX_OK);
            CHECK(be->ops->act_mul_split(be, bgu, T, I, (lmx_act_kind)act, bout) == LMX_OK);
            CHECK(be->ops->buf_read(be, bg, 0, ref, (size_t)T * I) == LMX_OK);
            CHECK(be->ops->buf_read(be, bout, 0, got, (size_t)T * I) == LMX_OK);
            CHECK_MSG(memcmp(ref, got, sizeof(float) * T * I) == 0, "act %d: act_mul_split differs from act_mul", act);
            /* out aliasing gu, too few rows, bad sizes */
            CHECK(be->ops->act_mul_split(be, bgu, 1, I, (lmx_act_kind)act, bgu) == LMX_ERR_INVALID_ARGUMENT);
            CHECK(be->ops->act_mul_split(be, bgu, T + 1, I, (lmx_act_kind)act, bout) != LMX_OK);
            CHECK(be->ops->act_mul_split(be, bgu, 0, I, (lmx_act_kind)act, bout) == LMX_ERR_INVALID_ARGUMENT);
        }
        be->ops->buf_free(be, bgu);
        be->ops->buf_free(be, bout);
        be->ops->buf_free(be, bg);
        be->ops->buf_free(be, bu);
    }
    free(gu);
    free(ref);
    free(up);
    free(got);
    lmx_backend_destroy(be);
}

/* one fixture model: logits of the unfused (plain CPU) and fused (CPU + test hook) paths */
static int fused_model(const char *dir) {
    lmx_backend *plain = NULL, *fz = NULL;
    lmx_lm *a = NULL, *b = NULL;
    lmx_kv *ka = NULL, *kb = NULL, *kc = NULL;
    int fused_layers = 0;
    lmx_status s = lmx_backend_cpu_create(2, &plain);
    if (s == LMX_OK) s = lmx_backend_cpu_create(2, &fz);
    if (s == LMX_OK) s = lmx_backend_cpu_enable_fused(fz);
    /* plain: no fused upload at all (the avx512 level's production one removed) */
    lmx_backend_ops plain_ops = plain ? *plain->ops : (lmx_backend_ops){0};
    plain_ops.weight_upload_fused = NULL;
    if (plain) plain->ops = &plain_ops;
    lmx_lm_options oa = {.backend = plain}, ob = {.backend = fz};
    if (s == LMX_OK) s = lmx_lm_open(dir, &oa, &a);
    if (s == LMX_OK) s = lmx_lm_open(dir, &ob, &b);
    if (s == LMX_OK) s = lmx_kv_create(a, 64, &ka);
    if (s == LMX_OK) s = lmx_kv_create(b, 64, &kb);
    /* kc: the fused model with prefill through separate gate / up GEMMs: a cache created while the
     * backend offers no act_mul_split */
    const lmx_backend_ops *fz_ops = fz ? fz->ops : NULL;
    lmx_backend_ops no_split = fz_ops ? *fz_ops : (lmx_backend_ops){0};
    no_split.act_mul_split = NULL;
    if (s == LMX_OK) {
        fz->ops = &no_split;
        s = lmx_kv_create(b, 64, &kc);
        fz->ops = fz_ops;
    }
    CHECK_MSG(s == LMX_OK, "%s: %s", dir, lmx_last_error_detail());
    if (s == LMX_OK) {
        const lmx_model_config *c = lmx_lm_config(b);
        for (int l = 0; l < c->n_layers; l++) {
            const lm_layer *L = &b->layers[l];
            CHECK_MSG(a->layers[l].qkv == NULL && a->layers[l].gate_up == NULL, "%s: unfused model has fused", dir);
            if (L->qkv) fused_layers++;
            if (L->qkv) CHECK(L->q && L->k && L->v);
            if (L->gate_up) CHECK(L->gate && L->up);
        }
        const uint64_t NQ = (uint64_t)c->n_heads * c->head_dim, NKV = (uint64_t)c->n_kv_heads * c->head_dim;
        bool any_gu = false;
        for (int l = 0; l < c->n_layers; l++) any_gu = any_gu || b->layers[l].gate_up;
        if (fused_layers) {
            CHECK(kb->s.qkv1 && kb->s.q1 && kb->s.k1 && kb->s.v1 && kb->s.gu1 && kb->s.g1 && kb->s.u1);
            CHECK_EQ_INT(lmx_kv_bytes(kc) - lmx_kv_bytes(ka),
                         (NQ + 2 * NKV + 2 * (uint64_t)c->intermediate_size) * sizeof(float));
        }
        /* prefill through fused gate|up: one [chunk, 2*inter] scratch, counted; none when disabled */
        CHECK_MSG((kb->s.gu != NULL) == any_gu, "%s: prefill gate|up scratch %p, fused gate|up %d", dir, (void *)kb->s.gu,
                  (int)any_gu);
        CHECK(kc->s.gu == NULL && ka->s.gu == NULL);
        CHECK_EQ_INT(lmx_kv_bytes(kb) - lmx_kv_bytes(kc),
                     any_gu ? (uint64_t)kb->chunk * 2 * (uint64_t)c->intermediate_size * sizeof(float) : 0);
        CHECK(ka->s.qkv1 == NULL);
        const int V = lmx_lm_vocab_size(a);
        float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V), *lc = malloc(sizeof(float) * V);
        int32_t ids[11];
        for (int i = 0; i < 11; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
        for (int step = 0; step < 9 && s == LMX_OK; step++) {
            const int n = step == 0 ? 11 : 1;
            const int32_t *in = step == 0 ? ids : &ids[step];
            s = lmx_lm_forward(a, ka, in, n, la);
            if (s == LMX_OK) s = lmx_lm_forward(b, kb, in, n, lb);
            if (s == LMX_OK) s = lmx_lm_forward(b, kc, in, n, lc);
            CHECK_MSG(s == LMX_OK, "%s: forward: %s", dir, lmx_last_error_detail());
            if (s == LMX_OK) {
                CHECK_MSG(memcmp(la, lb, sizeof(float) * V) == 0, "%s: step %d: fused logits differ (rel %.3g)", dir,
                          step, fc_rel(lb, la, (size_t)V));
                CHECK_MSG(memcmp(lc, lb, sizeof(float) * V) == 0,
                          "%s: step %d: fused prefill vs separate gate/up GEMMs: logits differ (rel %.3g)", dir, step,
                          fc_rel(lb, lc, (size_t)V));
            }
        }
        free(la);
        free(lb);
        free(lc);
    }
    lmx_kv_destroy(ka);
    lmx_kv_destroy(kb);
    lmx_kv_destroy(kc);
    lmx_lm_close(a);
    lmx_lm_close(b);
    lmx_backend_destroy(plain);
    lmx_backend_destroy(fz);
    return fused_layers;
}

static void test_fused_models(void) {
    const char *root = LMX_SOURCE_DIR "/tests/fixtures/models";
    DIR *d = opendir(root);
    if (!d) {
        SKIP("no fixture models at %s", root);
        return;
    }
    int models = 0, fused = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], cfg[1100];
        struct stat st;
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (stat(cfg, &st) != 0) continue;
        models++;
        if (fused_model(dir) > 0) fused++;
    }
    closedir(d);
    CHECK(models > 0);
    fprintf(stderr, "fused decode: %d of %d fixture models run fused weights\n", fused, models);
    CHECK_MSG(fused >= models - 2, "only %d of %d models fused", fused, models);
}

/* a backend stating prefill_chunk 5: the cache computes 5 rows per call and the logits agree with
 * the default chunk */
static void test_prefill_chunk(void) {
    const char *dir = LMX_SOURCE_DIR "/tests/fixtures/models/llama-tiny";
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK);
    if (!be) return;
    const lmx_backend_ops *orig = be->ops;
    CHECK_EQ_INT(orig->prefill_chunk, 0);
    lmx_backend_ops chunky = *orig;
    chunky.prefill_chunk = 5;
    lmx_lm *lm = NULL;
    lmx_lm_options o = {.backend = be};
    lmx_status s = lmx_lm_open(dir, &o, &lm);
    CHECK_MSG(s == LMX_OK, "%s", lmx_last_error_detail());
    if (s == LMX_OK) {
        lmx_kv *k1 = NULL, *k2 = NULL;
        CHECK(lmx_kv_create(lm, 300, &k1) == LMX_OK);
        be->ops = &chunky;
        CHECK(lmx_kv_create(lm, 300, &k2) == LMX_OK);
        if (k1 && k2) {
            CHECK_EQ_INT(k1->chunk, 128);
            CHECK_EQ_INT(k2->chunk, 5);
            CHECK(lmx_kv_bytes(k2) < lmx_kv_bytes(k1)); /* the scratch scales with the chunk */
            const int V = lmx_lm_vocab_size(lm);
            float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
            int32_t ids[23];
            for (int i = 0; i < 23; i++) ids[i] = (int32_t)((i * 31 + 7) % V);
            CHECK(lmx_lm_forward(lm, k1, ids, 23, a) == LMX_OK);
            CHECK(lmx_lm_forward(lm, k2, ids, 23, b) == LMX_OK);
            double r = fc_rel(b, a, (size_t)V);
            CHECK_MSG(r <= 1e-5, "chunk 5 vs 128: rel %.3g", r);
            free(a);
            free(b);
        }
        lmx_kv_destroy(k1);
        lmx_kv_destroy(k2);
        lmx_lm_close(lm);
    }
    be->ops = orig;
    lmx_backend_destroy(be);
}

/* a backend whose fused upload refuses q|k|v (3 parts: LMX_ERR_UNSUPPORTED → separate weights) or
 * fails with OOM at the n-th call (the model open fails and frees what it bound) */
static lmx_status (*real_fused)(lmx_backend *, const lmx_weight_desc *, int, lmx_bweight **, lmx_bweight **);
static int fused_calls, oom_at;
static lmx_status picky_fused(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                              lmx_bweight **views) {
    fused_calls++;
    *fused = NULL;
    if (oom_at && fused_calls == oom_at) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "test: fused upload out of memory");
    if (n == 3) return lmx_error(LMX_ERR_UNSUPPORTED, "test: no fused q|k|v");
    return real_fused(be, parts, n, fused, views);
}

static void test_partial_fusion(void) {
    const char *dir = LMX_SOURCE_DIR "/tests/fixtures/models/qwen2-bias";
    lmx_backend *be = NULL, *plain = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK && lmx_backend_cpu_create(2, &plain) == LMX_OK);
    if (!be || !plain) return;
    CHECK(lmx_backend_cpu_enable_fused(be) == LMX_OK);
    const lmx_backend_ops *orig = be->ops;
    lmx_backend_ops picky = *orig;
    real_fused = orig->weight_upload_fused;
    picky.weight_upload_fused = picky_fused;
    be->ops = &picky;
    lmx_lm *a = NULL, *b = NULL;
    lmx_lm_options oa = {.backend = plain}, ob = {.backend = be};
    /* OOM in the second fused upload: the open fails with it, nothing leaks (ASan) */
    fused_calls = 0;
    oom_at = 2;
    CHECK(lmx_lm_open(dir, &ob, &b) == LMX_ERR_OUT_OF_MEMORY && b == NULL);
    oom_at = 0;
    lmx_status s = lmx_lm_open(dir, &oa, &a);
    if (s == LMX_OK) s = lmx_lm_open(dir, &ob, &b);
    CHECK_MSG(s == LMX_OK, "%s", lmx_last_error_detail());
    lmx_kv *ka = NULL, *kb = NULL;
    if (s == LMX_OK) s = lmx_kv_create(a, 32, &ka);
    if (s == LMX_OK) s = lmx_kv_create(b, 32, &kb);
    if (s == LMX_OK) {
        CHECK(b->layers[0].qkv == NULL && b->layers[0].gate_up != NULL && kb->s.gu1 != NULL);
        const int V = lmx_lm_vocab_size(a);
        float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
        int32_t ids[6] = {1, 5, 9, 2, 7, 3};
        for (int step = 0; step < 4 && s == LMX_OK; step++) {
            const int n = step == 0 ? 3 : 1;
            const int32_t *in = step == 0 ? ids : &ids[2 + step];
            s = lmx_lm_forward(a, ka, in, n, la);
            if (s == LMX_OK) s = lmx_lm_forward(b, kb, in, n, lb);
            CHECK(s == LMX_OK && memcmp(la, lb, sizeof(float) * V) == 0);
        }
        free(la);
        free(lb);
    }
    lmx_kv_destroy(ka);
    lmx_kv_destroy(kb);
    lmx_lm_close(a);
    lmx_lm_close(b);
    be->ops = orig;
    lmx_backend_destroy(be);
    lmx_backend_destroy(plain);
}

int main(void) {
    RUN(test_buf_view);
    RUN(test_fused_upload);
    RUN(test_act_mul_split);
    RUN(test_fused_models);
    RUN(test_prefill_chunk);
    RUN(test_partial_fusion);
    return lmx_test_summary();
}
