/* test_cuda_fused.c — the CUDA backend's buffer views, fused weights and weight uploads (pinned
 * staging ring, cuda_upload.c):
 *   - buf_view semantics; fused q|k|v / gate|up style weights: the fused matmul (one row) equals the
 *     separate weights' rows, views equal separate weights at T = 1 (GEMV) and T = 20 (GEMM);
 *     mismatched parts refused with LMX_ERR_UNSUPPORTED;
 *   - upload of every dtype and quant width against the CPU backend's scalar level (decode matmul, rel
 *     1e-5) and its best level (that bound plus the level's own error, see upload_vs_cpu);
 *   - a 320 MB upload (several turns of the 4 x 32 MB ring) read back exactly through embed, with
 *     through the pinned staging ring and through pageable copies (lmx_cuda_options.pageable, the
 *     fallback), small uploads interleaved;
 *   - cudaMalloc failure → LMX_ERR_OUT_OF_MEMORY (plain and fused), and the backend works after it;
 *   - every fixture model decodes with fused weights as with separate ones (a model opened while the
 *     backend's ops table lacks weight_upload_fused), graphs on;
 *   - the fused gate|up prefill (one GEMM + act_mul_split) vs two GEMMs (a cache created while the
 *     ops table lacks act_mul_split), 40-token prompt.
 * Exits 77 (skipped) without a CUDA device. Label: gpu. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "lmx_test.h"
#include "model/lm_internal.h"
#include "model/mlx_pack.h"
#include "model/fused_check.h"

/* pageable: weights through pageable copies instead of the pinned staging ring */
static lmx_backend *gpu_create(bool pageable) {
    lmx_cuda_options o = lmx_cuda_options_default();
    o.pageable = pageable;
    lmx_backend *be = NULL;
    lmx_status s = lmx_backend_cuda_create_ex(0, &o, &be);
    CHECK_MSG(s == LMX_OK, "cuda backend: %s", lmx_last_error_detail());
    return be;
}

static void test_views_and_fused(void) {
    lmx_backend *be = gpu_create(false);
    if (!be) return;
    CHECK(be->ops->buf_view && be->ops->weight_upload_fused);
    CHECK_EQ_INT(be->ops->prefill_chunk, 512);
    view_check(be);
    const int qkv[3] = {64, 32, 32}, odd[3] = {40, 24, 56}, gu[2] = {96, 96};
    const lmx_dtype dts[3] = {LMX_DTYPE_F32, LMX_DTYPE_F16, LMX_DTYPE_BF16};
    for (int i = 0; i < 3; i++) {
        fused_case(be, LMX_WEIGHT_DENSE, dts[i], 0, 0, false, qkv, 3, 256, 20, 1e-5);
        fused_case(be, LMX_WEIGHT_DENSE, dts[i], 0, 0, true, odd, 3, 96, 20, 1e-5);
    }
    const int bits[6] = {2, 3, 4, 5, 6, 8};
    for (int i = 0; i < 6; i++) {
        fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, bits[i], 64, false, qkv, 3, 256, 20, 1e-5);
        fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_F16, bits[i], 32, true, gu, 2, 128, 20, 1e-5);
    }
    fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_F32, 4, 128, true, odd, 3, 512, 20, 1e-5);
    fused_mismatch(be);
    lmx_backend_destroy(be);
}

/* One part uploaded on the GPU and on two CPU backends, the best kernel level and the scalar one:
 * the decode matmul (T = 1). The GPU's decode GEMV is fp32-exact to ~1e-7 (the tensor-core kernel
 * splits x into two fp16 parts), so against the scalar CPU level (fp32 dot products) rel <= 1e-5.
 * The best level is not exact for every format: 4/8-bit weights take int16 activations per group
 * (step d = max|x| / 32767, rounding error uniform in ±d/2) and, since the affine bias multiplies the
 * exact fp32 sum of x, the error of row r is Σ s q e: RMS rel = (|s q| / |w|) · (max|x| / rms(x)) /
 * (32767 · sqrt 12) = 2 · sqrt 3 / 113,500 ≈ 3e-5 for these uniform w and x (measured 1.6e-5 to
 * 2.4e-5 on an AVX-512 CPU, one draw of x: the 256 roundings are common to all 77 rows); bf16
 * weights take x split into two bf16 halves (2^-17 relative per element). So GPU vs best CPU is
 * bounded by the triangle inequality: (1e-5 + e) / (1 - e), e = the best level's own difference from
 * the scalar level on the same inputs. */
static void upload_vs_cpu(lmx_backend *gpu, lmx_backend *cpu, lmx_backend *scalar, lmx_wkind kind, lmx_dtype dt,
                          int bits, int gs, bool bias) {
    const int rows[1] = {77};
    const int cols = 256;
    fc_store s;
    lmx_weight_desc d[1];
    fc_make_parts(kind, dt, bits, gs, bias, rows, 1, cols, 777u + (uint64_t)bits, &s, d);
    lmx_backend *bes[3] = {gpu, cpu, scalar};
    lmx_bweight *w[3] = {NULL, NULL, NULL};
    lmx_buf *x[3] = {NULL, NULL, NULL};
    float xs[256], y[3][77];
    uint64_t seed = 5;
    for (int i = 0; i < cols; i++) xs[i] = fc_rand(&seed);
    lmx_status st = LMX_OK;
    for (int b = 0; b < 3 && st == LMX_OK; b++) {
        st = bes[b]->ops->weight_upload(bes[b], d, &w[b]);
        CHECK_MSG(st == LMX_OK, "backend %d upload: %s", b, lmx_last_error_detail());
        if (st == LMX_OK) st = bes[b]->ops->buf_alloc(bes[b], cols, &x[b]);
        if (st == LMX_OK) st = bes[b]->ops->buf_write(bes[b], x[b], 0, xs, cols);
        if (st == LMX_OK) st = fc_matmul(bes[b], w[b], x[b], 1, rows[0], y[b]);
    }
    CHECK_MSG(st == LMX_OK, "matmul: %s", lmx_last_error_detail());
    const double rs = fc_rel(y[0], y[2], 77), e = fc_rel(y[1], y[2], 77), rb = fc_rel(y[0], y[1], 77);
    const double bound = (1e-5 + e) / (1.0 - e);
    CHECK_MSG(st == LMX_OK && rs <= 1e-5, "kind %d dtype %d bits %d gs %d bias %d: gpu vs scalar cpu rel %.3g",
              (int)kind, (int)dt, bits, gs, (int)bias, rs);
    CHECK_MSG(st == LMX_OK && rb <= bound, "kind %d dtype %d bits %d gs %d bias %d: gpu vs cpu rel %.3g (bound %.3g: "
              "the cpu level's own %.3g)", (int)kind, (int)dt, bits, gs, (int)bias, rb, bound, e);
    for (int b = 0; b < 3; b++) {
        bes[b]->ops->buf_free(bes[b], x[b]);
        bes[b]->ops->weight_free(bes[b], w[b]);
    }
    fc_store_free(&s);
}

static void test_upload_kinds(void) {
    lmx_backend *gpu = gpu_create(false), *cpu = NULL, *scalar = NULL;
    CHECK(lmx_backend_cpu_create(2, &cpu) == LMX_OK);
    CHECK(lmx_backend_cpu_create_level(2, LMX_CPU_SCALAR, &scalar) == LMX_OK);
    if (!gpu || !cpu || !scalar) {
        lmx_backend_destroy(gpu);
        lmx_backend_destroy(cpu);
        lmx_backend_destroy(scalar);
        return;
    }
    const lmx_dtype dts[3] = {LMX_DTYPE_F32, LMX_DTYPE_F16, LMX_DTYPE_BF16};
    const int bits[6] = {2, 3, 4, 5, 6, 8}, gss[3] = {32, 64, 128};
    for (int i = 0; i < 3; i++) {
        upload_vs_cpu(gpu, cpu, scalar, LMX_WEIGHT_DENSE, dts[i], 0, 0, i == 1);
        for (int b = 0; b < 6; b++)
            upload_vs_cpu(gpu, cpu, scalar, LMX_WEIGHT_QUANT, dts[i], bits[b], gss[(b + i) % 3], b == 2);
    }
    lmx_backend_destroy(gpu);
    lmx_backend_destroy(cpu);
    lmx_backend_destroy(scalar);
}

/* rows ids[0..n) of the big pattern weight (stored row id + 1) read back through embed; id 0 is
 * expected all zero when zero_first (its host row was cleared before that upload) */
static int big_rows_bad(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int n, int64_t C, bool zero_first) {
    float *out = malloc(sizeof(float) * (size_t)n * C);
    lmx_buf *y = NULL;
    lmx_status st = out ? be->ops->buf_alloc(be, (size_t)n * C, &y) : LMX_ERR_OUT_OF_MEMORY;
    if (st == LMX_OK) st = be->ops->embed(be, w, ids, n, 1.0f, y);
    if (st == LMX_OK) st = be->ops->buf_read(be, y, 0, out, (size_t)n * C);
    CHECK_MSG(st == LMX_OK, "embed: %s", lmx_last_error_detail());
    int bad = st == LMX_OK ? 0 : 1;
    for (int i = 0; st == LMX_OK && i < n; i++)
        for (int64_t c = 0; c < C; c++) {
            int64_t r = ids[i] + 1; /* row0 = 1 */
            uint32_t u = (uint32_t)(0x3f80u + (uint16_t)((r * 131 + c * 7) % 127)) << 16;
            float want;
            memcpy(&want, &u, 4);
            if (zero_first && ids[i] == 0) want = 0;
            bad += out[(size_t)i * C + c] != want;
        }
    be->ops->buf_free(be, y);
    free(out);
    return bad;
}

/* 40000 x 4096 bf16 (320 MB): rows read back through embed equal the stored values exactly */
static void big_upload(bool pageable) {
    lmx_backend *be = gpu_create(pageable);
    const char *lbl = pageable ? "off (pageable)" : "on";
    if (!be) return;
    const int64_t R = 40000, C = 4096;
    uint16_t *h = malloc((size_t)R * C * 2);
    lmx_buf *y1 = NULL, *y4k = NULL;
    CHECK(h != NULL);
    if (!h) {
        lmx_backend_destroy(be);
        return;
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) h[r * C + c] = (uint16_t)(0x3f80u + (uint16_t)((r * 131 + c * 7) % 127));
    /* small vectors before and after, through the same ring */
    float vec[100];
    for (int i = 0; i < 100; i++) vec[i] = (float)i + 0.5f;
    lmx_weight_desc dv = {.name = "vec", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = 100, .dtype = LMX_DTYPE_F32, .data = vec};
    lmx_weight_desc dw = {.name = "big", .kind = LMX_WEIGHT_DENSE, .rows = R - 1, .cols = C, .row0 = 1,
                          .dtype = LMX_DTYPE_BF16, .data = h};
    lmx_bweight *v1 = NULL, *w = NULL, *v2 = NULL;
    lmx_status st = be->ops->weight_upload(be, &dv, &v1);
    float one;
    if (st == LMX_OK) st = be->ops->buf_alloc(be, (size_t)C, &y4k);
    if (st == LMX_OK) st = be->ops->buf_alloc(be, 1, &y1);
    if (st == LMX_OK) st = be->ops->buf_read(be, y1, 0, &one, 1); /* staging ring set up, device idle */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (st == LMX_OK) st = be->ops->weight_upload(be, &dw, &w);
    if (st == LMX_OK) st = be->ops->embed(be, w, (const int32_t[]){0}, 1, 1.0f, y4k);
    if (st == LMX_OK) st = be->ops->buf_read(be, y4k, 0, &one, 1); /* ordered after the upload */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "  upload of %.0f MB (staging %s): %.1f ms, %.1f GB/s (host malloc'd source)\n",
            (double)(R - 1) * C * 2 / 1e6, lbl, sec * 1e3, (double)(R - 1) * C * 2 / sec / 1e9);
    if (st == LMX_OK) st = be->ops->weight_upload(be, &dv, &v2);
    CHECK_MSG(st == LMX_OK, "big upload (staging %s): %s", lbl, lmx_last_error_detail());
    /* the host copy may change now: every byte is staged (or copied) before the upload returns */
    memset(h + C, 0, (size_t)C * 2); /* stored row 1 = embed id 0 */
    be->ops->buf_free(be, y1);
    be->ops->buf_free(be, y4k);
    const int32_t ids[6] = {0, 1, 4095, 20000, 33333, (int32_t)(R - 2)};
    if (st == LMX_OK) CHECK_MSG(big_rows_bad(be, w, ids, 6, C, false) == 0, "big upload (staging %s) differs", lbl);
    /* upload_end: copies done, ring released; the weight stays, and the next upload gets a new ring */
    CHECK(be->ops->upload_end && be->ops->upload_end(be) == LMX_OK);
    if (st == LMX_OK) CHECK_MSG(big_rows_bad(be, w, ids, 6, C, false) == 0, "after upload_end (staging %s)", lbl);
    lmx_bweight *w2 = NULL;
    if (st == LMX_OK) st = be->ops->weight_upload(be, &dw, &w2);
    CHECK_MSG(st == LMX_OK, "upload after upload_end: %s", lmx_last_error_detail());
    if (st == LMX_OK) CHECK_MSG(big_rows_bad(be, w2, ids, 6, C, true) == 0, "second upload (staging %s)", lbl);
    CHECK(be->ops->upload_end(be) == LMX_OK);
    be->ops->weight_free(be, v1);
    be->ops->weight_free(be, w);
    be->ops->weight_free(be, w2);
    be->ops->weight_free(be, v2);
    free(h);
    lmx_backend_destroy(be);
}

static void test_big_upload(void) {
    big_upload(false);
    big_upload(true);
}

static void test_oom(void) {
    lmx_backend *be = gpu_create(false);
    if (!be) return;
    uint16_t tiny[64] = {0};
    /* 2^30 x 2^14 bf16 = 32 TiB: cudaMalloc fails before a byte is read */
    lmx_weight_desc d = {.name = "huge", .kind = LMX_WEIGHT_DENSE, .rows = (int64_t)1 << 30, .cols = (int64_t)1 << 14,
                         .dtype = LMX_DTYPE_BF16, .data = tiny};
    lmx_bweight *w = (lmx_bweight *)1;
    CHECK(be->ops->weight_upload(be, &d, &w) == LMX_ERR_OUT_OF_MEMORY && w == NULL);
    lmx_weight_desc parts[2] = {d, d};
    parts[0].rows = 4;
    lmx_bweight *f = (lmx_bweight *)1, *v[2] = {(lmx_bweight *)1, (lmx_bweight *)1};
    CHECK(be->ops->weight_upload_fused(be, parts, 2, &f, v) == LMX_ERR_OUT_OF_MEMORY);
    CHECK(f == NULL && v[0] == NULL && v[1] == NULL);
    lmx_buf *b = NULL;
    CHECK(be->ops->buf_alloc(be, (size_t)1 << 45, &b) == LMX_ERR_OUT_OF_MEMORY && b == NULL);
    /* still usable */
    const int qkv[3] = {64, 32, 32};
    fused_case(be, LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, 4, 64, true, qkv, 3, 256, 20, 1e-5);
    lmx_backend_destroy(be);
}

/* fixture models: fused weights vs separate ones on the GPU (model a opened while the ops table lacks
 * weight_upload_fused), prefill 11 + 8 graph-replayed steps */
static void fuse_model(const char *dir, lmx_backend *be, int *fused_models) {
    lmx_lm_options o = {.device = LMX_DEVICE_GPU, .backend = be};
    lmx_lm *a = NULL, *b = NULL;
    lmx_kv *ka = NULL, *kb = NULL;
    const lmx_backend_ops *ops = be->ops;
    lmx_backend_ops separate = *ops;
    separate.weight_upload_fused = NULL;
    be->ops = &separate;
    lmx_status s = lmx_lm_open(dir, &o, &a);
    be->ops = ops;
    if (s == LMX_OK) s = lmx_lm_open(dir, &o, &b);
    if (s == LMX_OK) s = lmx_kv_create(a, 64, &ka);
    if (s == LMX_OK) s = lmx_kv_create(b, 64, &kb);
    CHECK_MSG(s == LMX_OK, "%s: %s", dir, lmx_last_error_detail());
    if (s == LMX_OK) {
        CHECK(a->layers[0].qkv == NULL && ka->s.qkv1 == NULL);
        if (b->layers[0].qkv && b->layers[0].gate_up && kb->s.qkv1) (*fused_models)++;
        const int V = lmx_lm_vocab_size(a);
        float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
        int32_t ids[11];
        for (int i = 0; i < 11; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
        double worst = 0;
        for (int step = 0; step < 9 && s == LMX_OK; step++) {
            const int n = step == 0 ? 11 : 1;
            const int32_t *in = step == 0 ? ids : &ids[step];
            s = lmx_lm_forward(a, ka, in, n, la);
            if (s == LMX_OK) s = lmx_lm_forward(b, kb, in, n, lb);
            CHECK_MSG(s == LMX_OK, "%s: forward: %s", dir, lmx_last_error_detail());
            if (s != LMX_OK) break;
            double r = fc_rel(lb, la, (size_t)V);
            if (r > worst) worst = r;
            CHECK_MSG(r <= 1e-5, "%s: step %d: fused vs unfused rel %.3g", dir, step, r);
        }
        fprintf(stderr, "  %-60s fused vs unfused worst rel %.3g\n", dir, worst);
        free(la);
        free(lb);
    }
    lmx_kv_destroy(ka);
    lmx_kv_destroy(kb);
    lmx_lm_close(a);
    lmx_lm_close(b);
}

/* fixture models: prefill through one fused gate|up GEMM + act_mul_split vs two GEMMs (cache ka created
 * while the ops table lacks act_mul_split), 40-token prompt (the GEMM path) then 3 decode steps;
 * rel <= 2e-3, the same greedy token where the reference margin > 0.05 */
static void prefill_fuse_model(const char *dir, lmx_backend *be, int *split_models) {
    lmx_lm_options o = {.device = LMX_DEVICE_GPU, .backend = be};
    lmx_lm *lm = NULL;
    lmx_kv *ka = NULL, *kb = NULL;
    lmx_status s = lmx_lm_open(dir, &o, &lm);
    const lmx_backend_ops *ops = be->ops;
    lmx_backend_ops no_split = *ops;
    no_split.act_mul_split = NULL;
    be->ops = &no_split;
    if (s == LMX_OK) s = lmx_kv_create(lm, 64, &ka);
    be->ops = ops;
    if (s == LMX_OK) s = lmx_kv_create(lm, 64, &kb);
    CHECK_MSG(s == LMX_OK, "%s: %s", dir, lmx_last_error_detail());
    if (s == LMX_OK) {
        CHECK(ka->s.gu == NULL);
        if (kb->s.gu) (*split_models)++;
        const int V = lmx_lm_vocab_size(lm);
        float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
        int32_t ids[43];
        for (int i = 0; i < 43; i++) ids[i] = (int32_t)((i * 7919 + 29) % V);
        double worst = 0;
        for (int step = 0; step < 4 && s == LMX_OK; step++) {
            const int n = step == 0 ? 40 : 1;
            const int32_t *in = step == 0 ? ids : &ids[39 + step];
            s = lmx_lm_forward(lm, ka, in, n, la);
            if (s == LMX_OK) s = lmx_lm_forward(lm, kb, in, n, lb);
            CHECK_MSG(s == LMX_OK, "%s: forward: %s", dir, lmx_last_error_detail());
            if (s != LMX_OK) break;
            double r = fc_rel(lb, la, (size_t)V);
            if (r > worst) worst = r;
            CHECK_MSG(r <= 2e-3, "%s: step %d: fused prefill vs two GEMMs rel %.3g", dir, step, r);
            int a1 = 0, a2 = -1, b1 = 0;
            for (int i = 1; i < V; i++) {
                if (la[i] > la[a1]) { a2 = a1; a1 = i; }
                else if (a2 < 0 || la[i] > la[a2]) a2 = i;
                if (lb[i] > lb[b1]) b1 = i;
            }
            if (a2 >= 0 && la[a1] - la[a2] > 0.05f)
                CHECK_MSG(a1 == b1, "%s: step %d: greedy %d vs %d (margin %.3g)", dir, step, b1, a1,
                          (double)(la[a1] - la[a2]));
        }
        fprintf(stderr, "  %-60s fused prefill vs two GEMMs worst rel %.3g\n", dir, worst);
        free(la);
        free(lb);
    }
    lmx_kv_destroy(ka);
    lmx_kv_destroy(kb);
    lmx_lm_close(lm);
}

static void test_prefill_fuse_models(void) {
    lmx_backend *be = gpu_create(false);
    if (!be) return;
    CHECK(be->ops->act_mul_split != NULL);
    const char *root = LMX_SOURCE_DIR "/tests/fixtures/models";
    DIR *d = opendir(root);
    if (!d) {
        SKIP("no fixture models at %s", root);
        lmx_backend_destroy(be);
        return;
    }
    int models = 0, split = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], cfg[1100];
        struct stat st;
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (stat(cfg, &st) != 0) continue;
        models++;
        prefill_fuse_model(dir, be, &split);
    }
    closedir(d);
    CHECK(models > 0);
    fprintf(stderr, "fused gate|up prefill: %d of %d fixture models\n", split, models);
    CHECK_MSG(split >= models - 2, "only %d of %d models run the fused gate|up prefill", split, models);
    lmx_backend_destroy(be);
}

static void test_fused_models(void) {
    lmx_backend *be = gpu_create(false);
    if (!be) return;
    const char *root = LMX_SOURCE_DIR "/tests/fixtures/models";
    DIR *d = opendir(root);
    if (!d) {
        SKIP("no fixture models at %s", root);
        lmx_backend_destroy(be);
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
        fuse_model(dir, be, &fused);
    }
    closedir(d);
    CHECK(models > 0);
    CHECK_MSG(fused >= models - 2, "only %d of %d models fused", fused, models);
    lmx_backend_destroy(be);
}

int main(void) {
    if (!lmx_cuda_available(NULL)) {
        SKIP("no CUDA device (or no driver, or a build without CUDA): GPU fused/upload tests skipped");
        return 77;
    }
    RUN(test_views_and_fused);
    RUN(test_upload_kinds);
    RUN(test_big_upload);
    RUN(test_oom);
    RUN(test_fused_models);
    RUN(test_prefill_fuse_models);
    return lmx_test_summary();
}
