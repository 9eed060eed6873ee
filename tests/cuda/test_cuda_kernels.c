/* test_cuda_kernels.c — every CUDA kernel against a double-precision C reference, on fresh random
 * inputs (seed printed; LMX_TEST_SEED=N repeats a run), real model shapes and odd sizes.
 * Outputs are poisoned (NaN) before each launch, so an unwritten element fails.
 * Exits 77 (skipped) when no CUDA device is present. Label: gpu. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda/cuda_kernels.h"
#include "cuda_test_util.h"
#include "lmx_test.h"

#ifdef LMX_HAVE_CUDA
static tu_rng rng;

#define OKS(expr)                                                                                 \
    do {                                                                                          \
        lmx_status s_ = (expr);                                                                   \
        CHECK_MSG(s_ == LMX_OK, "%s -> %s: %s", #expr, lmx_status_str(s_), lmx_last_error_detail()); \
        if (s_ != LMX_OK) return;                                                                 \
    } while (0)

static void *dev_upload(const void *h, size_t bytes) {
    void *d = NULL;
    if (lmx_cuda_malloc(&d, bytes) != LMX_OK) return NULL;
    if (lmx_cuda_memcpy_h2d(d, h, bytes, NULL) != LMX_OK) { lmx_cuda_free(d); return NULL; }
    return d;
}
static void *dev_poisoned(size_t bytes) {
    void *d = NULL;
    if (lmx_cuda_malloc(&d, bytes) != LMX_OK) return NULL;
    lmx_cuda_memset(d, 0xff, bytes, NULL); /* 0xffffffff is a NaN */
    return d;
}
static float *randv(size_t n, float amp) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = amp * tu_unif(&rng);
    return v;
}

/* ‖got − ref‖ / ‖ref‖, plus NaN detection; reports and counts a failure above tol. */
static void compare(const char *what, const float *got, const double *ref, size_t n, double tol) {
    double num = 0, den = 0, worst = 0;
    size_t worst_i = 0, nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) { nan++; continue; }
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        if (fabs(d) > worst) { worst = fabs(d); worst_i = i; }
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    CHECK_MSG(nan == 0 && rel <= tol, "%s: rel err %.3g (tol %.1g), %zu non-finite, worst |d| %.3g at %zu (got %.6g ref %.6g)",
              what, rel, tol, nan, worst, worst_i, (double)got[worst_i], ref[worst_i]);
    if (getenv("LMX_TEST_VERBOSE")) fprintf(stderr, "  %-48s rel %.3g\n", what, rel);
}

/* ---- GEMV ---- */
typedef struct { int64_t n, k; int bits, gs, dt, batch, bias, accumulate; } gemv_case;

static double deq_at(const uint32_t *words, const void *scales, const void *biases, int dt, int64_t k,
                     int bits, int gs, int64_t row, int64_t i) {
    const uint32_t *w = words + row * (k * bits / 32);
    int64_t bit = i * bits;
    uint32_t q = w[bit >> 5] >> (bit & 31);
    if ((bit & 31) + bits > 32) q |= w[(bit >> 5) + 1] << (32 - (bit & 31));
    q &= (1u << bits) - 1u;
    size_t gi = (size_t)(row * (k / gs) + i / gs);
    double s = dt == 2 ? tu_bf2f(((const uint16_t *)scales)[gi]) : dt == 1 ? tu_h2f(((const uint16_t *)scales)[gi]) : ((const float *)scales)[gi];
    double b = dt == 2 ? tu_bf2f(((const uint16_t *)biases)[gi]) : dt == 1 ? tu_h2f(((const uint16_t *)biases)[gi]) : ((const float *)biases)[gi];
    return s * q + b;
}
static double dense_at(const void *w, int dt, size_t i) {
    return dt == 2 ? tu_bf2f(((const uint16_t *)w)[i]) : dt == 1 ? tu_h2f(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

static void run_gemv_x(gemv_case c, float xscale) {
    char name[160];
    snprintf(name, sizeof name, "gemv %s%d g%d dt%d [%lld x %lld] batch %d%s%s",
             c.bits ? "q" : "dense", c.bits, c.gs, c.dt, (long long)c.n, (long long)c.k, c.batch,
             c.bias ? " +bias" : "", c.accumulate ? " +acc" : "");
    size_t wbytes, sbytes = 0;
    void *hw, *hs = NULL, *hb = NULL;
    if (c.bits) {
        wbytes = (size_t)(c.n * c.k * c.bits / 32) * 4;
        sbytes = (size_t)(c.n * (c.k / c.gs)) * tu_dsize(c.dt);
        hw = malloc(wbytes); hs = malloc(sbytes); hb = malloc(sbytes);
        tu_make_quant(&rng, c.n, c.k, c.bits, c.gs, c.dt, hw, hs, hb, NULL);
    } else {
        wbytes = (size_t)(c.n * c.k) * tu_dsize(c.dt);
        hw = malloc(wbytes);
        for (size_t i = 0; i < (size_t)(c.n * c.k); i++) tu_store(hw, i, c.dt, 0.05f * tu_unif(&rng));
    }
    void *hbias = NULL;
    const int bdt = c.bias == 2 ? 0 : c.dt; /* bias 1: the weights' dtype, 2: F32 */
    if (c.bias) {
        hbias = malloc((size_t)c.n * 4);
        for (int64_t i = 0; i < c.n; i++) tu_store(hbias, (size_t)i, bdt, tu_unif(&rng));
    }
    float *x = randv((size_t)(c.batch * c.k), xscale);
    float *y0 = randv((size_t)(c.batch * c.n), 1.0f);
    double *ref = malloc(sizeof(double) * (size_t)(c.batch * c.n));
    for (int b = 0; b < c.batch; b++)
        for (int64_t r = 0; r < c.n; r++) {
            double a = 0;
            for (int64_t i = 0; i < c.k; i++) {
                double w = c.bits ? deq_at(hw, hs, hb, c.dt, c.k, c.bits, c.gs, r, i) : dense_at(hw, c.dt, (size_t)(r * c.k + i));
                a += w * x[b * c.k + i];
            }
            if (c.bias) a += dense_at(hbias, bdt, (size_t)r);
            if (c.accumulate) a += y0[b * c.n + r];
            ref[b * c.n + r] = a;
        }
    void *dw = dev_upload(hw, wbytes), *ds = hs ? dev_upload(hs, sbytes) : NULL, *db = hb ? dev_upload(hb, sbytes) : NULL;
    void *dbias = hbias ? dev_upload(hbias, (size_t)c.n * tu_dsize(bdt)) : NULL;
    float *dx = dev_upload(x, sizeof(float) * (size_t)(c.batch * c.k));
    float *dy = c.accumulate ? dev_upload(y0, sizeof(float) * (size_t)(c.batch * c.n)) : dev_poisoned(sizeof(float) * (size_t)(c.batch * c.n));
    float *y = malloc(sizeof(float) * (size_t)(c.batch * c.n));
    lmx_cuda_matrix m = {.w = dw, .scales = ds, .biases = db, .bias = dbias, .dtype = (lmx_dtype)c.dt, .bias_dtype = (lmx_dtype)bdt,
                         .bits = c.bits, .group_size = c.gs, .n = c.n, .k = c.k};
    CHECK(dw && dx && dy);
    if (dw && dx && dy) {
        lmx_status s = lmx_cuda_gemv(&m, dx, dy, c.batch, c.accumulate, NULL);
        CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error_detail());
        s = lmx_cuda_stream_sync(NULL);
        CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error_detail());
        lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * (size_t)(c.batch * c.n), NULL);
        lmx_cuda_stream_sync(NULL);
        compare(name, y, ref, (size_t)(c.batch * c.n), 2e-5);
        /* where the tensor-core kernel applies, check it and the scalar kernel each, whichever the
         * automatic choice was */
        for (int mode = -2; mode <= -1 && c.batch == 1 && lmx_cuda_gemv_mma_applies(&m, dx, 1); mode++) {
            if (c.accumulate) lmx_cuda_memcpy_h2d(dy, y0, sizeof(float) * (size_t)c.n, NULL);
            else lmx_cuda_memset(dy, 0xff, sizeof(float) * (size_t)c.n, NULL);
            s = lmx_cuda_gemv_ksplit(&m, dx, dy, 1, c.accumulate, mode, NULL);
            CHECK_MSG(s == LMX_OK, "%s mode %d: %s", name, mode, lmx_last_error_detail());
            s = lmx_cuda_stream_sync(NULL);
            CHECK_MSG(s == LMX_OK, "%s mode %d: %s", name, mode, lmx_last_error_detail());
            lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * (size_t)c.n, NULL);
            lmx_cuda_stream_sync(NULL);
            char nm[192];
            snprintf(nm, sizeof nm, "%s %s", name, mode == -1 ? "mma" : "scalar");
            compare(nm, y, ref, (size_t)c.n, 2e-5);
        }
        /* every knob of the streaming tensor-core kernel: load mode (direct, staged through cp.async),
         * ring depth, warps per block, blocks per SM */
        if (c.batch == 1 && lmx_cuda_gemv_mma_applies(&m, dx, 1)) {
            static const int md[4][2] = {{1, 4}, {2, 3}, {2, 4}, {2, 6}};
            for (int kn = 0; kn < 24; kn++) {
                const lmx_cuda_gemv_tune tn = {md[kn % 4][1], 4 << ((kn / 4) % 3), 1 + kn / 12, md[kn % 4][0]};
                /* staged knobs whose ring does not fit next to the x fragments are refused */
                const bool may_refuse = tn.mode == 2;
                if (c.accumulate) lmx_cuda_memcpy_h2d(dy, y0, sizeof(float) * (size_t)c.n, NULL);
                else lmx_cuda_memset(dy, 0xff, sizeof(float) * (size_t)c.n, NULL);
                s = lmx_cuda_gemv_mma_tuned(&m, dx, dy, c.accumulate, &tn, NULL);
                if (may_refuse && s == LMX_ERR_INVALID_ARGUMENT) continue;
                CHECK_MSG(s == LMX_OK, "%s tune %d: %s", name, kn, lmx_last_error_detail());
                s = lmx_cuda_stream_sync(NULL);
                CHECK_MSG(s == LMX_OK, "%s tune %d: %s", name, kn, lmx_last_error_detail());
                lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * (size_t)c.n, NULL);
                lmx_cuda_stream_sync(NULL);
                char nm[224];
                snprintf(nm, sizeof nm, "%s ring m%d d%d w%d b%d", name, tn.mode, tn.depth, tn.warps, tn.blocks_per_sm);
                compare(nm, y, ref, (size_t)c.n, 2e-5);
            }
        }
    }
    lmx_cuda_free(dw); lmx_cuda_free(ds); lmx_cuda_free(db); lmx_cuda_free(dbias); lmx_cuda_free(dx); lmx_cuda_free(dy);
    free(hw); free(hs); free(hb); free(hbias); free(x); free(y0); free(ref); free(y);
}

static void run_gemv(gemv_case c) { run_gemv_x(c, 1.0f); }

static void test_gemv(void) {
    const gemv_case cases[] = {
        /* dense, Llama-3-8B / 3.2-1B shapes */
        {4096, 4096, 0, 0, 2, 1, 0, 0},
        {14336, 4096, 0, 0, 2, 1, 0, 0},
        {4096, 14336, 0, 0, 2, 1, 0, 1},
        {1024, 4096, 0, 0, 1, 1, 2, 0},
        {513, 2048, 0, 0, 0, 1, 0, 0},
        {1000, 1032, 0, 0, 2, 3, 0, 0},
        {37, 100, 0, 0, 2, 2, 1, 1},   /* k % 8 != 0: generic path */
        {2048, 8192, 0, 0, 2, 6, 0, 0}, /* two launches of batch 4 + 2 */
        /* quantized 4 / 8 bits */
        {14336, 4096, 4, 64, 2, 1, 0, 0},
        {4096, 14336, 4, 64, 2, 1, 0, 1},
        {128256, 2048, 4, 64, 2, 1, 0, 0},
        {4099, 2048, 4, 32, 2, 1, 2, 0},
        {2048, 8192, 4, 128, 1, 4, 0, 0},
        {1000, 4096, 4, 64, 0, 7, 0, 0},
        {4096, 4096, 8, 64, 2, 1, 0, 0},
        {1027, 2048, 8, 32, 1, 3, 1, 1},
        {4096, 14336, 8, 128, 2, 1, 0, 0},
        /* batch 1 on the tensor-core path (cuda_gemv_mma.cu): tails, groups per super-step 1/2/4, x
         * beyond the fp16 range */
        {1000, 1152, 4, 128, 0, 1, 1, 1},
        {2050, 4096, 4, 32, 1, 1, 0, 1},
        {777, 1088, 8, 32, 1, 1, 2, 0},
        {300, 640, 8, 64, 2, 1, 0, 0},
        /* the streaming kernel (session 2): fused q|k|v and gate|up shapes with a ragged tail, fewer
         * super-steps than warps (k = 128 / 64), every group size, f16 / f32 scales, dense bf16 */
        {6149, 4096, 4, 64, 2, 1, 0, 0},
        {28672, 4096, 8, 64, 2, 1, 0, 1},
        {333, 128, 4, 32, 1, 1, 1, 0},
        {45, 128, 8, 128, 0, 1, 0, 1},
        {2000, 2048, 8, 128, 1, 1, 2, 1},
        {6144, 4096, 0, 0, 2, 1, 0, 0},
        {1029, 96, 0, 0, 2, 1, 1, 1},
        {64, 28672, 0, 0, 2, 1, 0, 1}, /* the staging ring does not fit next to x: direct loads */
        /* 2 / 3 / 5 / 6 bits */
        {2048, 2048, 2, 64, 2, 1, 0, 0},
        {1000, 2080, 2, 32, 2, 2, 0, 0}, /* k % 64 != 0: generic path */
        {1536, 4096, 3, 64, 2, 1, 0, 0},
        {777, 1024, 5, 32, 1, 2, 1, 0},
        {4096, 2048, 6, 64, 2, 1, 0, 1},
        {100, 256, 6, 128, 0, 5, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_gemv(cases[i]);
    /* x beyond the fp16 range and tiny x (the tensor-core path scales x per segment) */
    run_gemv_x((gemv_case){2048, 4096, 4, 64, 2, 1, 0, 0}, 3e5f);
    run_gemv_x((gemv_case){1024, 2048, 8, 64, 2, 1, 0, 0}, 1e-6f);
}

/* ---- tensor-core GEMM (prefill): bf16 operands, fp32 accumulation ---- */
static void run_gemm(gemv_case c) {
    char name[160];
    snprintf(name, sizeof name, "gemm %s%d g%d dt%d [%lld x %lld] T %d%s%s", c.bits ? "q" : "dense", c.bits, c.gs,
             c.dt, (long long)c.n, (long long)c.k, c.batch, c.bias ? " +bias" : "", c.accumulate ? " +acc" : "");
    size_t wbytes, sbytes = 0;
    void *hw, *hs = NULL, *hb = NULL;
    if (c.bits) {
        wbytes = (size_t)(c.n * c.k * c.bits / 32) * 4;
        sbytes = (size_t)(c.n * (c.k / c.gs)) * tu_dsize(c.dt);
        hw = malloc(wbytes); hs = malloc(sbytes); hb = malloc(sbytes);
        tu_make_quant(&rng, c.n, c.k, c.bits, c.gs, c.dt, hw, hs, hb, NULL);
    } else {
        wbytes = (size_t)(c.n * c.k) * tu_dsize(c.dt);
        hw = malloc(wbytes);
        for (size_t i = 0; i < (size_t)(c.n * c.k); i++) tu_store(hw, i, c.dt, 0.05f * tu_unif(&rng));
    }
    float *hbias = NULL;
    if (c.bias) {
        hbias = malloc((size_t)c.n * 4);
        for (int64_t i = 0; i < c.n; i++) hbias[i] = tu_unif(&rng);
    }
    const int T = c.batch;
    float *x = randv((size_t)T * c.k, 1.0f), *y0 = randv((size_t)T * c.n, 1.0f);
    double *ref = malloc(sizeof(double) * (size_t)T * c.n), *wrow = malloc(sizeof(double) * c.k);
    for (int64_t r = 0; r < c.n; r++) {
        for (int64_t i = 0; i < c.k; i++)
            wrow[i] = c.bits ? deq_at(hw, hs, hb, c.dt, c.k, c.bits, c.gs, r, i) : dense_at(hw, c.dt, (size_t)(r * c.k + i));
        for (int t = 0; t < T; t++) {
            double a = 0;
            for (int64_t i = 0; i < c.k; i++) a += wrow[i] * x[(size_t)t * c.k + i];
            if (c.bias) a += hbias[r];
            if (c.accumulate) a += y0[(size_t)t * c.n + r];
            ref[(size_t)t * c.n + r] = a;
        }
    }
    void *dw = dev_upload(hw, wbytes), *ds = hs ? dev_upload(hs, sbytes) : NULL, *db = hb ? dev_upload(hb, sbytes) : NULL;
    void *dbias = hbias ? dev_upload(hbias, (size_t)c.n * 4) : NULL;
    float *dx = dev_upload(x, sizeof(float) * (size_t)T * c.k);
    float *y = malloc(sizeof(float) * (size_t)T * c.n);
    lmx_cuda_matrix m = {.w = dw, .scales = ds, .biases = db, .bias = dbias, .dtype = (lmx_dtype)c.dt,
                         .bias_dtype = LMX_DTYPE_F32, .bits = c.bits, .group_size = c.gs, .n = c.n, .k = c.k};
    float *dy = NULL;
    /* impl 1: the built-in mma.sync kernel; 2: cuBLASLt when it loads (shapes it declines: skipped);
     * 3 / 4: the few-row GEMM (cuda_gemm_small.cu) with its split-K workspace / without (one slice) */
    const size_t sws_n = lmx_cuda_gemm_small_workspace(&m, T);
    float *sws = sws_n ? dev_poisoned(sizeof(float) * sws_n) : NULL;
    for (int impl = 1; impl <= 4; impl++) {
        if (impl == 2 && !lmx_cuda_gemm_lt_available()) continue;
        if (impl >= 3 && !lmx_cuda_gemm_small_supported(&m)) break;
        lmx_cuda_free(dy);
        dy = c.accumulate ? dev_upload(y0, sizeof(float) * (size_t)T * c.n) : dev_poisoned(sizeof(float) * (size_t)T * c.n);
        CHECK(dw && dx && dy);
        if (!(dw && dx && dy)) break;
        lmx_status s = impl <= 2 ? lmx_cuda_gemm_ex(&m, dx, dy, T, c.accumulate, impl, NULL)
                                 : lmx_cuda_gemm_small(&m, dx, dy, T, c.accumulate, impl == 3 ? sws : NULL,
                                                       impl == 3 ? sws_n : 0, NULL);
        if (impl == 2 && s == LMX_ERR_UNSUPPORTED) continue;
        CHECK_MSG(s == LMX_OK, "%s impl %d: %s", name, impl, lmx_last_error_detail());
        s = lmx_cuda_stream_sync(NULL);
        CHECK_MSG(s == LMX_OK, "%s impl %d: %s", name, impl, lmx_last_error_detail());
        lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * (size_t)T * c.n, NULL);
        lmx_cuda_stream_sync(NULL);
        char nm[192];
        snprintf(nm, sizeof nm, "%s %s", name,
                 impl == 1 ? "mma.sync" : impl == 2 ? "cuBLASLt" : impl == 3 ? "small split-K" : "small 1 slice");
        compare(nm, y, ref, (size_t)T * c.n, 1e-2);
    }
    lmx_cuda_free(sws);
    lmx_cuda_free(dw); lmx_cuda_free(ds); lmx_cuda_free(db); lmx_cuda_free(dbias); lmx_cuda_free(dx); lmx_cuda_free(dy);
    free(hw); free(hs); free(hb); free(hbias); free(x); free(y0); free(ref); free(wrow); free(y);
}

static void test_gemm(void) {
    const gemv_case cases[] = {
        {1024, 4096, 0, 0, 2, 77, 0, 0},
        {4096, 2048, 4, 64, 2, 128, 1, 0},
        {333, 1024, 3, 32, 2, 17, 0, 1},
        {100, 256, 0, 0, 0, 200, 1, 0},
        {2050, 1536, 8, 128, 1, 64, 0, 0},
        {700, 2048, 6, 64, 2, 33, 0, 0},
        {128, 512, 2, 32, 2, 1, 0, 0},
        {256, 4096, 5, 32, 1, 9, 0, 1},
        /* accumulate (the backend's matmul_add: residual folded into o_proj / down_proj in prefill) */
        {1024, 4096, 4, 64, 2, 33, 1, 1},
        {4096, 4096, 0, 0, 2, 64, 0, 1},
        {512, 1024, 8, 64, 2, 16, 1, 1},
        /* the few-row GEMM: every n-tile count (T 8/16/32/64), two passes (T 100), ragged rows, all
         * group sizes, f16 / f32 scales, bias, accumulate, long K (split-K) and one super-step of K */
        {4096, 4096, 4, 64, 2, 64, 0, 0},
        {1000, 2048, 4, 32, 1, 8, 1, 0},
        {777, 1024, 8, 128, 0, 32, 0, 1},
        {2050, 14336 / 4, 8, 64, 2, 16, 1, 1},
        {2048, 7168, 4, 64, 2, 100, 0, 0},
        {300, 128, 4, 128, 2, 5, 1, 1},
        {129, 384, 8, 32, 2, 64, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_gemm(cases[i]);
}

/* the few-row GEMM computes each row of x as it would with any other row count (16 / 17 / 64 / 100 rows:
 * other n-tile and m-tile counts, two passes), bit for bit; with and without a bias */
static void test_gemm_small_rows(void) {
    const int64_t n = 1000, k = 2048;
    const int bits = 4, gs = 64, dt = LMX_DTYPE_BF16, TMAX = 100, TS[4] = {16, 17, 64, 100};
    const size_t wbytes = (size_t)(n * k * bits / 32) * 4, sbytes = (size_t)(n * (k / gs)) * tu_dsize(dt);
    void *hw = malloc(wbytes), *hs = malloc(sbytes), *hb = malloc(sbytes);
    tu_make_quant(&rng, n, k, bits, gs, dt, hw, hs, hb, NULL);
    float *x = randv((size_t)TMAX * k, 1.0f), *y = malloc(sizeof(float) * TMAX * n), *y16 = malloc(sizeof(float) * 16 * n);
    float *hbias = randv((size_t)n, 1.0f);
    void *dw = dev_upload(hw, wbytes), *ds = dev_upload(hs, sbytes), *db = dev_upload(hb, sbytes);
    void *dbias = dev_upload(hbias, sizeof(float) * (size_t)n);
    float *dx = dev_upload(x, sizeof(float) * (size_t)TMAX * k), *dy = dev_poisoned(sizeof(float) * (size_t)TMAX * n);
    for (int bias = 0; bias < 2; bias++) {
        lmx_cuda_matrix m = {.w = dw, .scales = ds, .biases = db, .bias = bias ? dbias : NULL, .dtype = (lmx_dtype)dt,
                             .bias_dtype = LMX_DTYPE_F32, .bits = bits, .group_size = gs, .n = n, .k = k};
        const size_t wsn = lmx_cuda_gemm_small_workspace(&m, TMAX);
        float *ws = wsn ? dev_poisoned(sizeof(float) * wsn) : NULL;
        for (int i = 0; i < 4; i++) {
            lmx_status s = lmx_cuda_gemm_small(&m, dx, dy, TS[i], false, ws, wsn, NULL);
            if (s == LMX_OK) s = lmx_cuda_stream_sync(NULL);
            CHECK_MSG(s == LMX_OK, "small gemm T %d: %s", TS[i], lmx_last_error_detail());
            lmx_cuda_memcpy_d2h(i == 0 ? y16 : y, dy, sizeof(float) * 16 * (size_t)n, NULL);
            lmx_cuda_stream_sync(NULL);
            if (i > 0)
                CHECK_MSG(memcmp(y, y16, sizeof(float) * 16 * (size_t)n) == 0,
                          "small gemm: rows 0..15 at T %d differ from T 16 (bias %d)", TS[i], bias);
        }
        lmx_cuda_free(ws);
    }
    lmx_cuda_free(dw); lmx_cuda_free(ds); lmx_cuda_free(db); lmx_cuda_free(dbias); lmx_cuda_free(dx); lmx_cuda_free(dy);
    free(hw); free(hs); free(hb); free(x); free(y); free(y16); free(hbias);
}

/* ---- weight expansion before the cuBLASLt GEMM: bit for bit the host's bf16_rn(fmaf(s, q, b)) ---- */
static void run_expand(int64_t n, int64_t k, int bits, int gs, int dt) {
    char name[128];
    snprintf(name, sizeof name, "expand q%d g%d dt%d [%lld x %lld]", bits, gs, dt, (long long)n, (long long)k);
    const size_t wbytes = (size_t)(n * k * bits / 32) * 4, sbytes = (size_t)(n * (k / gs)) * tu_dsize(dt);
    const size_t ob = (size_t)(n * k) * 2;
    uint32_t *hw = malloc(wbytes);
    void *hs = malloc(sbytes), *hb = malloc(sbytes);
    tu_make_quant(&rng, n, k, bits, gs, dt, hw, hs, hb, NULL);
    void *dw = dev_upload(hw, wbytes), *ds = dev_upload(hs, sbytes), *db = dev_upload(hb, sbytes);
    void *o_new = dev_poisoned(ob);
    uint16_t *h_new = malloc(ob);
    CHECK(dw && ds && db && o_new);
    if (dw && ds && db && o_new) {
        lmx_cuda_matrix m = {.w = dw, .scales = ds, .biases = db, .dtype = (lmx_dtype)dt, .bits = bits,
                             .group_size = gs, .n = n, .k = k};
        lmx_status s2 = lmx_cuda_expand_bf16(&m, o_new, NULL);
        CHECK_MSG(s2 == LMX_OK, "%s: %s", name, lmx_last_error_detail());
        CHECK(lmx_cuda_stream_sync(NULL) == LMX_OK);
        lmx_cuda_memcpy_d2h(h_new, o_new, ob, NULL);
        lmx_cuda_stream_sync(NULL);
        /* the host's bf16_rn(fmaf(s, q, b)) bit for bit */
        size_t bad = 0, first = 0;
        const int64_t wpr = k * bits / 32, gpr = k / gs;
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < k; i++) {
                const int64_t bit = i * bits;
                const uint32_t q = (hw[r * wpr + (bit >> 5)] >> (bit & 31)) & ((1u << bits) - 1u);
                const size_t gi = (size_t)(r * gpr + i / gs);
                const float sc = dt == 2 ? tu_bf2f(((const uint16_t *)hs)[gi]) : dt == 1 ? tu_h2f(((const uint16_t *)hs)[gi]) : ((const float *)hs)[gi];
                const float bi = dt == 2 ? tu_bf2f(((const uint16_t *)hb)[gi]) : dt == 1 ? tu_h2f(((const uint16_t *)hb)[gi]) : ((const float *)hb)[gi];
                if (h_new[r * k + i] != tu_f2bf(fmaf(sc, (float)q, bi)) && bad++ == 0) first = (size_t)(r * k + i);
            }
        CHECK_MSG(bad == 0, "%s: %zu elements differ from the host reference (first at %zu)", name, bad, first);
    }
    lmx_cuda_free(dw); lmx_cuda_free(ds); lmx_cuda_free(db); lmx_cuda_free(o_new);
    free(hw); free(hs); free(hb); free(h_new);
}

static void test_expand(void) {
    static const int gss[3] = {32, 64, 128};
    for (int bits = 4; bits <= 8; bits += 4)
        for (int g = 0; g < 3; g++)
            for (int dt = 0; dt <= 2; dt++) run_expand(33 + 2 * g + dt, 3 * gss[g] * (bits == 4 ? 3 : 1), bits, gss[g], dt);
    run_expand(1, 128, 4, 128, 2);
    run_expand(7, 32, 8, 32, 2);
    run_expand(1, 32, 4, 32, 1);
    /* large and odd shapes: many blocks, ragged last block */
    run_expand(4097, 4096, 4, 64, 2);
    run_expand(3001, 2880, 8, 64, 2);
    run_expand(1024, 14336, 4, 128, 0);
}

/* ---- act_mul_split: gu [T, 2*inter] -> act(gate) * up [T, inter] ---- */
static void run_act_split(int T, int inter, int act, int misalign) {
    char name[96];
    snprintf(name, sizeof name, "act_mul_split T %d inter %d act %d%s", T, inter, act, misalign ? " unaligned" : "");
    const size_t ng = (size_t)T * 2 * inter + 1, no = (size_t)T * inter;
    float *h = randv(ng, 4.0f);
    double *ref = malloc(sizeof(double) * no);
    const float *gu = h + misalign;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < inter; i++) {
            const double g = gu[(size_t)t * 2 * inter + i], u = gu[(size_t)t * 2 * inter + inter + i];
            ref[(size_t)t * inter + i] = act == 0 ? g / (1.0 + exp(-g)) * u
                                                  : 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * u;
        }
    float *dg = dev_upload(h, sizeof(float) * ng), *dy = dev_poisoned(sizeof(float) * (no + 1));
    float *y = malloc(sizeof(float) * no);
    CHECK(dg && dy);
    if (dg && dy) {
        OKS(lmx_cuda_act_mul_split(dg + misalign, dy + misalign, T, inter, act, NULL));
        OKS(lmx_cuda_stream_sync(NULL));
        lmx_cuda_memcpy_d2h(y, dy + misalign, sizeof(float) * no, NULL);
        lmx_cuda_stream_sync(NULL);
        compare(name, y, ref, no, 1e-5);
    }
    CHECK(lmx_cuda_act_mul_split(dg, dy, 0, inter, act, NULL) == LMX_ERR_INVALID_ARGUMENT);
    lmx_cuda_free(dg); lmx_cuda_free(dy);
    free(h); free(ref); free(y);
}

static void test_act_split(void) {
    for (int act = 0; act <= 1; act++) {
        run_act_split(7, 1024, act, 0);
        run_act_split(5, 1000, act, 0);
        run_act_split(3, 999, act, 0);
        run_act_split(4, 1024, act, 1);
        run_act_split(512, 3072, act, 0);
    }
}

/* ---- RMSNorm ---- */
static void run_rmsnorm(int rows, int dim, int dt, int one_plus) {
    char name[96];
    snprintf(name, sizeof name, "rmsnorm rows %d dim %d dt%d %s", rows, dim, dt, one_plus ? "1+w" : "w");
    float *x = randv((size_t)rows * dim, 3.0f);
    void *w = malloc((size_t)dim * 4);
    double *ref = malloc(sizeof(double) * (size_t)rows * dim);
    float wv[16384];
    for (int i = 0; i < dim; i++) wv[i] = tu_store(w, (size_t)i, dt, 1.0f + 0.5f * tu_unif(&rng));
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / dim + 1e-5);
        for (int i = 0; i < dim; i++) ref[r * dim + i] = x[r * dim + i] * inv * (one_plus ? 1.0 + wv[i] : wv[i]);
    }
    float *dx = dev_upload(x, sizeof(float) * (size_t)rows * dim);
    void *dw = dev_upload(w, (size_t)dim * tu_dsize(dt));
    float *dy = dev_poisoned(sizeof(float) * (size_t)rows * dim);
    OKS(lmx_cuda_rmsnorm(dx, dw, (lmx_dtype)dt, 1e-5f, one_plus, dy, rows, dim, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    float *y = malloc(sizeof(float) * (size_t)rows * dim);
    lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * (size_t)rows * dim, NULL);
    lmx_cuda_stream_sync(NULL);
    compare(name, y, ref, (size_t)rows * dim, 1e-5);
    /* in place */
    OKS(lmx_cuda_rmsnorm(dx, dw, (lmx_dtype)dt, 1e-5f, one_plus, dx, rows, dim, NULL));
    lmx_cuda_memcpy_d2h(y, dx, sizeof(float) * (size_t)rows * dim, NULL);
    OKS(lmx_cuda_stream_sync(NULL));
    compare("rmsnorm in place", y, ref, (size_t)rows * dim, 1e-5);
    lmx_cuda_free(dx); lmx_cuda_free(dw); lmx_cuda_free(dy);
    free(x); free(w); free(ref); free(y);
}
static void test_rmsnorm(void) {
    run_rmsnorm(3, 4096, 2, 0);
    run_rmsnorm(1, 2048, 0, 0);
    run_rmsnorm(32, 128, 2, 0);   /* per-head q_norm */
    run_rmsnorm(5, 3072, 2, 1);   /* gemma (1+w) */
    run_rmsnorm(2, 1001, 1, 1);
}

/* ---- RoPE ---- */
static void run_rope(int T, int heads, int hd, int rot, const int32_t *pos, double base, float mscale) {
    char name[96];
    snprintf(name, sizeof name, "rope T %d heads %d hd %d rot %d", T, heads, hd, rot);
    int half = rot / 2;
    float *inv = malloc(sizeof(float) * half);
    for (int i = 0; i < half; i++) { /* llama3-style table: a scaled band for low frequencies */
        double f = pow(base, -2.0 * i / rot);
        double wavelen = 2 * M_PI / f;
        if (wavelen > 8192) f /= 8.0;
        inv[i] = (float)f;
    }
    size_t n = (size_t)T * heads * hd;
    float *x = randv(n, 2.0f);
    double *ref = malloc(sizeof(double) * n);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++) {
            const float *p = x + ((size_t)t * heads + h) * hd;
            double *o = ref + ((size_t)t * heads + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = p[i];
            for (int i = 0; i < half; i++) {
                double ang = (double)((float)pos[t] * inv[i]); /* the angle is formed in fp32, as in MLX */
                double c = cos(ang) * mscale, s = sin(ang) * mscale;
                o[i] = p[i] * c - p[i + half] * s;
                o[i + half] = p[i + half] * c + p[i] * s;
            }
        }
    float *dx = dev_upload(x, sizeof(float) * n);
    float *dinv = dev_upload(inv, sizeof(float) * half);
    int32_t *dpos = dev_upload(pos, sizeof(int32_t) * T);
    OKS(lmx_cuda_rope(dx, dpos, dinv, mscale, T, heads, hd, rot, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    float *y = malloc(sizeof(float) * n);
    lmx_cuda_memcpy_d2h(y, dx, sizeof(float) * n, NULL);
    lmx_cuda_stream_sync(NULL);
    compare(name, y, ref, n, 1e-5);
    lmx_cuda_free(dx); lmx_cuda_free(dinv); lmx_cuda_free(dpos);
    free(inv); free(x); free(ref); free(y);
}
static void test_rope(void) {
    const int32_t p3[3] = {0, 7, 8191};
    const int32_t p5[5] = {100, 101, 102, 103, 104};
    const int32_t p1[1] = {31999};
    run_rope(3, 32, 128, 128, p3, 500000.0, 1.0f);
    run_rope(5, 8, 128, 64, p5, 10000.0, 1.0f);  /* partial rotary */
    run_rope(1, 8, 256, 256, p1, 1000000.0, 1.2f); /* yarn-style mscale */
    run_rope(3, 16, 64, 64, p3, 10000.0, 1.0f);
}

/* ---- fused per-head norm + RoPE of q and k + KV store (cuda_fused.cu) ---- */
typedef struct {
    int T, nh, nkv, hd, rot, cap;
    const int32_t *pos;
    int norm;   /* 0 none, 1 w, 2 1 + w */
    int kvdt;   /* cache dtype: 0 F32, 1 F16, 2 BF16 */
    int fused;  /* q, k, v as views of one [T, (nh + 2 nkv) hd + 8] buffer (row strides, 8 pad floats) */
    float mscale;
} qkr_case;

static float cache_at(const void *c, int dt, size_t i) {
    if (dt == 2) return tu_bf2f(((const uint16_t *)c)[i]);
    if (dt == 1) return tu_h2f(((const uint16_t *)c)[i]);
    return ((const float *)c)[i];
}

static void run_rope_qk(qkr_case c) {
    char name[160];
    snprintf(name, sizeof name, "rope_qk_store T %d heads %d/%d hd %d rot %d cap %d norm %d kv dt%d%s", c.T, c.nh,
             c.nkv, c.hd, c.rot, c.cap, c.norm, c.kvdt, c.fused ? " views" : "");
    const int D = c.hd, half = c.rot / 2;
    const size_t qrow = (size_t)c.nh * D, krow = (size_t)c.nkv * D;
    const size_t stride = c.fused ? qrow + 2 * krow + 8 : 0;
    const size_t qs = c.fused ? stride : qrow, ks = c.fused ? stride : krow;
    /* host inputs: one buffer per tensor, or one fused buffer with q | k | v | pad per row */
    const size_t nbuf = c.fused ? (size_t)c.T * stride : 0;
    float *fb = c.fused ? randv(nbuf, 2.0f) : NULL;
    float *hq = c.fused ? fb : randv((size_t)c.T * qrow, 2.0f);
    float *hk = c.fused ? fb + qrow : randv((size_t)c.T * krow, 2.0f);
    float *hv = c.fused ? fb + qrow + krow : randv((size_t)c.T * krow, 2.0f);
    float *inv = malloc(sizeof(float) * (half ? half : 1));
    for (int i = 0; i < half; i++) inv[i] = (float)pow(10000.0, -2.0 * i / c.rot);
    float *qn = randv((size_t)D, 1.0f), *kn = randv((size_t)D, 1.0f);
    const float eps = 1e-6f;
    /* double reference of the rotated q, k rows */
    double *rq = malloc(sizeof(double) * (size_t)c.T * qrow), *rk = malloc(sizeof(double) * (size_t)c.T * krow);
    double *tmp = malloc(sizeof(double) * D);
    for (int t = 0; t < c.T; t++)
        for (int hh = 0; hh < c.nh + c.nkv; hh++) {
            const bool isq = hh < c.nh;
            const int h = isq ? hh : hh - c.nh;
            const float *x = (isq ? hq + (size_t)t * qs : hk + (size_t)t * ks) + (size_t)h * D;
            double *o = (isq ? rq + (size_t)t * qrow : rk + (size_t)t * krow) + (size_t)h * D;
            double ss = 0;
            for (int i = 0; i < D; i++) ss += (double)x[i] * x[i];
            const double r = c.norm ? 1.0 / sqrt(ss / D + eps) : 1.0;
            const float *w = isq ? qn : kn;
            for (int i = 0; i < D; i++) tmp[i] = c.norm ? x[i] * r * (c.norm == 2 ? 1.0 + w[i] : w[i]) : x[i];
            for (int i = 0; i < D; i++) o[i] = tmp[i];
            for (int i = 0; i < half; i++) {
                double ang = (double)((float)c.pos[t] * inv[i]);
                double cs = cos(ang) * c.mscale, sn = sin(ang) * c.mscale;
                o[i] = tmp[i] * cs - tmp[i + half] * sn;
                o[i + half] = tmp[i + half] * cs + tmp[i] * sn;
            }
        }
    float *dfb = c.fused ? dev_upload(fb, sizeof(float) * nbuf) : NULL;
    float *dq = c.fused ? dfb : dev_upload(hq, sizeof(float) * (size_t)c.T * qrow);
    float *dk = c.fused ? dfb + qrow : dev_upload(hk, sizeof(float) * (size_t)c.T * krow);
    float *dv = c.fused ? dfb + qrow + krow : dev_upload(hv, sizeof(float) * (size_t)c.T * krow);
    const size_t ncache = (size_t)c.nkv * c.cap * D, cb = ncache * tu_dsize(c.kvdt);
    void *dkc = dev_poisoned(cb), *dvc = dev_poisoned(cb);
    float *dinv = dev_upload(inv, sizeof(float) * (half ? half : 1));
    float *dqn = c.norm ? dev_upload(qn, sizeof(float) * D) : NULL, *dkn = c.norm ? dev_upload(kn, sizeof(float) * D) : NULL;
    int32_t *dpos = dev_upload(c.pos, sizeof(int32_t) * c.T);
    lmx_cuda_attn a = {.n_heads = c.nh, .n_kv_heads = c.nkv, .head_dim = D, .capacity = c.cap,
                       .kv_dtype = (lmx_dtype)c.kvdt};
    lmx_cuda_qk_rope r = {.rot_dims = c.rot, .inv_freq = dinv, .mscale = c.mscale, .q_norm = dqn, .k_norm = dkn,
                          .eps = eps, .norm_plus_one = c.norm == 2, .q_stride = (int64_t)stride,
                          .k_stride = (int64_t)stride, .v_stride = (int64_t)stride};
    CHECK(dq && dk && dv && dkc && dvc && dinv && dpos);
    lmx_status s = lmx_cuda_rope_qk_store(&a, &r, dq, dk, dv, dkc, dvc, dpos, c.T, NULL);
    CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error_detail());
    if (s == LMX_OK) s = lmx_cuda_stream_sync(NULL);
    CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error_detail());
    if (s == LMX_OK) {
        float *gq = malloc(sizeof(float) * (size_t)c.T * qrow), *gk = malloc(sizeof(float) * (size_t)c.T * krow);
        float *gb = c.fused ? malloc(sizeof(float) * nbuf) : NULL;
        if (c.fused) {
            lmx_cuda_memcpy_d2h(gb, dfb, sizeof(float) * nbuf, NULL);
            for (int t = 0; t < c.T; t++) {
                memcpy(gq + (size_t)t * qrow, gb + (size_t)t * stride, sizeof(float) * qrow);
                memcpy(gk + (size_t)t * krow, gb + (size_t)t * stride + qrow, sizeof(float) * krow);
            }
        } else {
            lmx_cuda_memcpy_d2h(gq, dq, sizeof(float) * (size_t)c.T * qrow, NULL);
            lmx_cuda_memcpy_d2h(gk, dk, sizeof(float) * (size_t)c.T * krow, NULL);
        }
        void *hkc = malloc(cb), *hvc = malloc(cb);
        lmx_cuda_memcpy_d2h(hkc, dkc, cb, NULL);
        lmx_cuda_memcpy_d2h(hvc, dvc, cb, NULL);
        lmx_cuda_stream_sync(NULL);
        char nm[200];
        snprintf(nm, sizeof nm, "%s: q", name);
        compare(nm, gq, rq, (size_t)c.T * qrow, 1e-5);
        snprintf(nm, sizeof nm, "%s: k", name);
        compare(nm, gk, rk, (size_t)c.T * krow, 1e-5);
        if (c.fused) { /* v and the pad are untouched */
            size_t changed = 0;
            for (size_t i = 0; i < nbuf; i++) {
                const size_t col = i % stride;
                if (col >= qrow + krow && memcmp(&gb[i], &fb[i], 4) != 0) changed++;
            }
            CHECK_MSG(changed == 0, "%s: %zu v/pad elements changed", name, changed);
        }
        /* caches: slot pos % cap of every kv head holds the rotated k / v rows (rounded to the cache
         * dtype); every other slot is still the poison */
        const double tol = c.kvdt == 2 ? 8e-3 : c.kvdt == 1 ? 1.5e-3 : 1e-6;
        float *gc = malloc(sizeof(float) * D * 2);
        double *rc = malloc(sizeof(double) * D * 2);
        char *written = calloc((size_t)c.cap, 1);
        for (int t = 0; t < c.T; t++) written[c.pos[t] % c.cap] = 1;
        size_t bad_other = 0;
        for (int h = 0; h < c.nkv; h++)
            for (int sl = 0; sl < c.cap; sl++) {
                const size_t base = ((size_t)h * c.cap + sl) * D;
                if (!written[sl]) {
                    for (int i = 0; i < D; i++)
                        if (!isnan(cache_at(hkc, c.kvdt, base + i)) || !isnan(cache_at(hvc, c.kvdt, base + i))) bad_other++;
                    continue;
                }
                int t = -1;
                for (int u = 0; u < c.T; u++)
                    if (c.pos[u] % c.cap == sl) t = u; /* the last row written to this slot */
                for (int i = 0; i < D; i++) {
                    gc[i] = cache_at(hkc, c.kvdt, base + i);
                    rc[i] = rk[(size_t)t * krow + (size_t)h * D + i];
                    gc[D + i] = cache_at(hvc, c.kvdt, base + i);
                    rc[D + i] = hv[(size_t)t * (c.fused ? stride : krow) + (size_t)h * D + i];
                }
                snprintf(nm, sizeof nm, "%s: cache head %d slot %d", name, h, sl);
                compare(nm, gc, rc, (size_t)D * 2, tol);
            }
        CHECK_MSG(bad_other == 0, "%s: %zu cache elements outside the written slots changed", name, bad_other);
        free(gq); free(gk); free(gb); free(hkc); free(hvc); free(gc); free(rc); free(written);
    }
    if (c.fused) {
        lmx_cuda_free(dfb);
        free(fb);
    } else {
        lmx_cuda_free(dq); lmx_cuda_free(dk); lmx_cuda_free(dv);
        free(hq); free(hk); free(hv);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dinv); lmx_cuda_free(dqn); lmx_cuda_free(dkn);
    lmx_cuda_free(dpos);
    free(inv); free(qn); free(kn); free(rq); free(rk); free(tmp);
}

static void test_rope_qk_store(void) {
    const int32_t p1[1] = {4711}, p3[3] = {6, 7, 8}, p4[4] = {0, 1, 2, 3}, pw[5] = {27, 28, 29, 30, 31};
    const int32_t p1b[1] = {31999};
    /* Llama-3-8B decode step, every cache dtype; GQA 32/8, head_dim 128 */
    for (int dt = 0; dt <= 2; dt++)
        run_rope_qk((qkr_case){1, 32, 8, 128, 128, 8192, p1, 0, dt, 0, 1.0f});
    /* qwen3-style per-head norm (w), gemma3-style (1 + w, head_dim 256), fused q|k|v views */
    run_rope_qk((qkr_case){1, 16, 8, 128, 128, 5000, p1, 1, 2, 1, 1.0f});
    run_rope_qk((qkr_case){1, 8, 4, 256, 256, 4096, p1b, 2, 0, 0, 1.0f}); /* ring slot 31999 % 4096 */
    /* phi3 partial rotary (rot 48 of 96) with a longrope-style mscale; MHA; T > 1 */
    run_rope_qk((qkr_case){4, 4, 4, 96, 48, 64, p4, 0, 0, 0, 1.19f});
    run_rope_qk((qkr_case){3, 6, 2, 48, 24, 16, p3, 1, 1, 1, 1.0f});
    /* a ring: positions beyond the capacity, 5 rows into 5 slots (window-style cache) */
    run_rope_qk((qkr_case){5, 4, 1, 64, 64, 5, pw, 2, 2, 1, 1.0f});
    run_rope_qk((qkr_case){3, 2, 1, 16, 16, 4, p3, 0, 0, 0, 1.0f});
    /* odd head_dim (not a multiple of 32), no rotation */
    run_rope_qk((qkr_case){2, 3, 1, 40, 0, 9, p3, 1, 0, 0, 1.0f});
    /* argument checks */
    lmx_cuda_attn a = {.n_heads = 2, .n_kv_heads = 1, .head_dim = 16, .capacity = 4, .kv_dtype = LMX_DTYPE_F32};
    lmx_cuda_qk_rope r = {.rot_dims = 17, .mscale = 1.0f};
    float *d = dev_poisoned(4096);
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    r.rot_dims = 16; /* rotation without a table */
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    r.inv_freq = d;
    r.q_norm = d; /* q_norm without k_norm */
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    r.q_norm = NULL;
    r.q_stride = 8; /* below a row of 32 */
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    lmx_cuda_free(d);
}

/* ---- elementwise ---- */
static void test_elementwise(void) {
    const int64_t sizes[2] = {14336, 1001};
    for (int si = 0; si < 2; si++) {
        int64_t n = sizes[si];
        float *g = randv((size_t)n, 6.0f), *u = randv((size_t)n, 2.0f);
        double *ref = malloc(sizeof(double) * (size_t)n);
        float *y = malloc(sizeof(float) * (size_t)n);
        float *dg = dev_upload(g, sizeof(float) * n), *du = dev_upload(u, sizeof(float) * n);
        float *dy = dev_poisoned(sizeof(float) * n);
        for (int op = 0; op < 5; op++) {
            for (int64_t i = 0; i < n; i++) {
                double gv = g[i], uv = u[i];
                if (op == 0) ref[i] = gv / (1 + exp(-gv)) * uv;
                else if (op == 1) ref[i] = 0.5 * gv * (1 + tanh(sqrt(2 / M_PI) * (gv + 0.044715 * gv * gv * gv))) * uv;
                else if (op == 2) ref[i] = gv + uv;
                else if (op == 3) ref[i] = 30.0 * tanh(gv / 30.0);
                else { /* gpt-oss clamped SwiGLU, limit 1.5 so that both clamps act on these ranges */
                    const double gc = fmin(gv, 1.5), uc = fmax(-1.5, fmin(uv, 1.5));
                    ref[i] = gc / (1 + exp(-1.702 * gc)) * (uc + 1);
                }
            }
            lmx_cuda_memset(dy, 0xff, sizeof(float) * n, NULL);
            if (op == 0) OKS(lmx_cuda_swiglu(dg, du, dy, n, NULL));
            else if (op == 1) OKS(lmx_cuda_geglu_tanh(dg, du, dy, n, NULL));
            else if (op == 4) OKS(lmx_cuda_swiglu_oai(dg, du, dy, n, 1.702f, 1.5f, NULL));
            else {
                lmx_cuda_memcpy_d2d(dy, dg, sizeof(float) * n, NULL);
                if (op == 2) OKS(lmx_cuda_add(dy, du, n, NULL));
                else OKS(lmx_cuda_softcap(dy, n, 30.0f, NULL));
            }
            OKS(lmx_cuda_stream_sync(NULL));
            lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * n, NULL);
            lmx_cuda_stream_sync(NULL);
            const char *names[5] = {"swiglu", "geglu_tanh", "add", "softcap", "swiglu_oai"};
            char name[64];
            snprintf(name, sizeof name, "%s n %lld", names[op], (long long)n);
            compare(name, y, ref, (size_t)n, 1e-5);
        }
        lmx_cuda_free(dg); lmx_cuda_free(du); lmx_cuda_free(dy);
        free(g); free(u); free(ref); free(y);
    }
}

/* ---- embedding ---- */
static void run_embed(int64_t vocab, int64_t k, int bits, int gs, int dt) {
    char name[96];
    snprintf(name, sizeof name, "embed %s%d vocab %lld k %lld", bits ? "q" : "dense", bits, (long long)vocab, (long long)k);
    size_t wbytes = bits ? (size_t)(vocab * k * bits / 32) * 4 : (size_t)(vocab * k) * tu_dsize(dt);
    size_t sbytes = bits ? (size_t)(vocab * (k / gs)) * tu_dsize(dt) : 0;
    void *hw = malloc(wbytes), *hs = bits ? malloc(sbytes) : NULL, *hb = bits ? malloc(sbytes) : NULL;
    if (bits) tu_make_quant(&rng, vocab, k, bits, gs, dt, hw, hs, hb, NULL);
    else for (size_t i = 0; i < (size_t)(vocab * k); i++) tu_store(hw, i, dt, tu_unif(&rng));
    const int T = 6;
    int32_t ids[6] = {0, (int32_t)(vocab - 1), (int32_t)(tu_next(&rng) % vocab), (int32_t)(tu_next(&rng) % vocab), -1, (int32_t)vocab};
    float scale = sqrtf((float)k);
    double *ref = malloc(sizeof(double) * T * k);
    for (int t = 0; t < T; t++)
        for (int64_t i = 0; i < k; i++) {
            double v = 0;
            if (ids[t] >= 0 && ids[t] < vocab)
                v = bits ? deq_at(hw, hs, hb, dt, k, bits, gs, ids[t], i) : dense_at(hw, dt, (size_t)(ids[t] * k + i));
            ref[t * k + i] = v * scale;
        }
    void *dw = dev_upload(hw, wbytes), *ds = bits ? dev_upload(hs, sbytes) : NULL, *db = bits ? dev_upload(hb, sbytes) : NULL;
    int32_t *dids = dev_upload(ids, sizeof ids);
    float *dout = dev_poisoned(sizeof(float) * T * k);
    lmx_cuda_matrix m = {.w = dw, .scales = ds, .biases = db, .dtype = (lmx_dtype)dt, .bits = bits, .group_size = gs, .n = vocab, .k = k};
    OKS(lmx_cuda_embed(&m, dids, T, scale, dout, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    float *y = malloc(sizeof(float) * T * k);
    lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * T * k, NULL);
    lmx_cuda_stream_sync(NULL);
    compare(name, y, ref, (size_t)(T * k), 1e-6);
    lmx_cuda_free(dw); lmx_cuda_free(ds); lmx_cuda_free(db); lmx_cuda_free(dids); lmx_cuda_free(dout);
    free(hw); free(hs); free(hb); free(ref); free(y);
}
static void test_embed(void) {
    run_embed(1000, 2048, 0, 0, 2);
    run_embed(128256, 4096, 4, 64, 2);
    run_embed(3001, 1536, 6, 64, 1);
    run_embed(517, 2048, 8, 32, 2);
    run_embed(300, 1024, 3, 128, 0);
}

/* ---- attention ---- */
/* Attention-sink logits [heads] (gpt-oss) for a case with sinks: random in [-3, 3], and head 1 at 30,
 * above every score (the sink then takes nearly all the weight: the output shrinks towards 0). */
static float *make_sinks(int heads) {
    float *s = randv((size_t)heads, 3.0f);
    if (heads > 1) s[1] = 30.0f;
    return s;
}
/* folds a sink into a reference row's max before the exponentials (den then gains exp(sink - mx)) */
static double sink_max(const float *sinks, int h, double mx) { return sinks && sinks[h] > mx ? sinks[h] : mx; }
static double sink_den(const float *sinks, int h, double mx) { return sinks ? exp(sinks[h] - mx) : 0.0; }

/* cap: cache capacity (0: L + 17); cap < L is a ring holding the last cap positions (slot j % cap) */
typedef struct { int heads, kv, hd, T; int64_t L; int dt, window; float softcap; int64_t cap; } attn_case;

/* with_sinks: with attention-sink logits */
static void run_attention(attn_case c, bool with_sinks) {
    char name[128];
    snprintf(name, sizeof name, "attention h%d kv%d hd%d T%d L%lld dt%d win%d softcap%g cap%lld%s", c.heads, c.kv,
             c.hd, c.T, (long long)c.L, c.dt, c.window, (double)c.softcap, (long long)c.cap, with_sinks ? " sinks" : "");
    const int64_t cap = c.cap > 0 ? c.cap : c.L + 17;
    const int64_t first = c.L > cap ? c.L - cap : 0; /* positions the ring still holds: first..L-1 */
    float *sinks = with_sinks ? make_sinks(c.heads) : NULL;
    float *dsinks = sinks ? dev_upload(sinks, sizeof(float) * c.heads) : NULL;
    lmx_cuda_attn a = {.n_heads = c.heads, .n_kv_heads = c.kv, .head_dim = c.hd, .capacity = cap,
                       .kv_dtype = (lmx_dtype)c.dt, .scale = 1.0f / sqrtf((float)c.hd), .softcap = c.softcap, .window = c.window,
                       .sinks = dsinks};
    size_t kvn = (size_t)c.L * c.kv * c.hd;            /* [L, kv, hd] as the store takes it */
    float *k = randv(kvn, 2.0f), *v = randv(kvn, 1.0f);
    int32_t *allpos = malloc(sizeof(int32_t) * c.L);
    for (int64_t i = 0; i < c.L; i++) allpos[i] = (int32_t)i;
    /* values as the cache stores them */
    float *kr = malloc(sizeof(float) * kvn), *vr = malloc(sizeof(float) * kvn);
    float tmp[1];
    for (size_t i = 0; i < kvn; i++) {
        kr[i] = c.dt == 0 ? k[i] : tu_store(tmp, 0, c.dt, k[i]);
        vr[i] = c.dt == 0 ? v[i] : tu_store(tmp, 0, c.dt, v[i]);
    }
    size_t cache_bytes = (size_t)c.kv * cap * c.hd * tu_dsize(c.dt);
    void *dkc = dev_poisoned(cache_bytes), *dvc = dev_poisoned(cache_bytes);
    float *dk = dev_upload(k, sizeof(float) * kvn), *dv = dev_upload(v, sizeof(float) * kvn);
    int32_t *dall = dev_upload(allpos, sizeof(int32_t) * c.L);
    /* store the positions the cache holds (a ring keeps the last cap: storing all would race) */
    OKS(lmx_cuda_kv_store(&a, dk + (size_t)first * c.kv * c.hd, dv + (size_t)first * c.kv * c.hd, dkc, dvc,
                          dall + first, (int)(c.L - first), NULL));
    /* queries at the last T positions */
    size_t qn = (size_t)c.T * c.heads * c.hd;
    float *q = randv(qn, 1.5f);
    int32_t *qpos = malloc(sizeof(int32_t) * c.T);
    for (int t = 0; t < c.T; t++) qpos[t] = (int32_t)(c.L - c.T + t);
    double *ref = malloc(sizeof(double) * qn);
    double *sc = malloc(sizeof(double) * c.L);
    for (int t = 0; t < c.T; t++)
        for (int h = 0; h < c.heads; h++) {
            int g = h / (c.heads / c.kv);
            int64_t pos = qpos[t], lo = c.window > 0 ? pos - c.window + 1 : 0;
            if (lo < 0) lo = 0;
            double mx = -INFINITY;
            for (int64_t j = lo; j <= pos; j++) {
                double d = 0;
                for (int i = 0; i < c.hd; i++) d += (double)q[((size_t)t * c.heads + h) * c.hd + i] * kr[((size_t)j * c.kv + g) * c.hd + i];
                d *= 1.0 / sqrt((double)c.hd);
                if (c.softcap > 0) d = c.softcap * tanh(d / c.softcap);
                sc[j] = d;
                if (d > mx) mx = d;
            }
            mx = sink_max(sinks, h, mx);
            double den = sink_den(sinks, h, mx);
            for (int64_t j = lo; j <= pos; j++) { sc[j] = exp(sc[j] - mx); den += sc[j]; }
            for (int i = 0; i < c.hd; i++) {
                double num = 0;
                for (int64_t j = lo; j <= pos; j++) num += sc[j] * vr[((size_t)j * c.kv + g) * c.hd + i];
                ref[((size_t)t * c.heads + h) * c.hd + i] = num / den;
            }
        }
    float *dq = dev_upload(q, sizeof(float) * qn);
    int32_t *dqpos = dev_upload(qpos, sizeof(int32_t) * c.T);
    float *dws = dev_poisoned(sizeof(float) * lmx_cuda_attention_workspace_floats(&a, c.T));
    float *dout = dev_poisoned(sizeof(float) * qn);
    OKS(lmx_cuda_attention(&a, dq, dkc, dvc, dqpos, c.T, c.L, dws, dout, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    float *y = malloc(sizeof(float) * qn);
    lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
    lmx_cuda_stream_sync(NULL);
    compare(name, y, ref, qn, 1e-5);
    /* the grouped decode kernel (fused merge): same reference; twice, so the counters were reset */
    if (lmx_cuda_attention_decode_supported(&a)) {
        size_t nc = lmx_cuda_attention_decode_counters(&a, c.T);
        int32_t *dcnt = dev_poisoned(sizeof(int32_t) * nc);
        OKS(lmx_cuda_memset(dcnt, 0, sizeof(int32_t) * nc, NULL));
        char nm2[160];
        for (int rep_i = 0; rep_i < 2; rep_i++) {
            OKS(lmx_cuda_memset(dout, 0xff, sizeof(float) * qn, NULL)); /* NaN */
            OKS(lmx_cuda_attention_decode(&a, dq, dkc, dvc, dqpos, c.T, cap, dws, dcnt, dout, NULL));
            OKS(lmx_cuda_stream_sync(NULL));
            lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
            lmx_cuda_stream_sync(NULL);
            snprintf(nm2, sizeof nm2, "grouped decode (call %d) %s", rep_i + 1, name + 10);
            compare(nm2, y, ref, qn, 1e-5);
        }
        /* other launch shapes (8 warps; one split up to 512 keys / 256 keys per split) */
        const int shapes[2][3] = {{8, 132, 512}, {8, 264, 256}};
        for (int si = 0; si < 2; si++) {
            OKS(lmx_cuda_memset(dout, 0xff, sizeof(float) * qn, NULL));
            OKS(lmx_cuda_attention_decode_ex(&a, dq, dkc, dvc, dqpos, c.T, cap, dws, dcnt, dout, shapes[si][0],
                                             shapes[si][1], shapes[si][2], NULL));
            OKS(lmx_cuda_stream_sync(NULL));
            lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
            lmx_cuda_stream_sync(NULL);
            snprintf(nm2, sizeof nm2, "grouped decode %dw/%d/%d %s", shapes[si][0], shapes[si][1], shapes[si][2],
                     name + 10);
            compare(nm2, y, ref, qn, 1e-5);
        }
        int32_t *hc = malloc(sizeof(int32_t) * nc);
        lmx_cuda_memcpy_d2h(hc, dcnt, sizeof(int32_t) * nc, NULL);
        lmx_cuda_stream_sync(NULL);
        int nz = 0;
        for (size_t i = 0; i < nc; i++) nz += hc[i] != 0;
        CHECK_MSG(nz == 0, "%s: %d split counters left non-zero", name, nz);
        free(hc);
        lmx_cuda_free(dcnt);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dk); lmx_cuda_free(dv); lmx_cuda_free(dall);
    lmx_cuda_free(dq); lmx_cuda_free(dqpos); lmx_cuda_free(dws); lmx_cuda_free(dout); lmx_cuda_free(dsinks);
    free(k); free(v); free(allpos); free(kr); free(vr); free(q); free(qpos); free(ref); free(sc); free(y); free(sinks);
}
static void test_attention(void) {
    const attn_case cases[] = {
        {32, 8, 128, 1, 1000, 2, 0, 0.f, 0},     /* Llama-3-8B decode, bf16 cache */
        {32, 8, 128, 1, 1, 2, 0, 0.f, 0},        /* first token */
        {16, 16, 64, 1, 37, 0, 0, 0.f, 0},       /* MHA, f32 cache */
        {8, 4, 256, 1, 4099, 1, 1024, 50.f, 0},  /* gemma-like: window + softcap, f16 */
        {32, 8, 128, 5, 300, 2, 0, 0.f, 0},      /* several queries (prefill tail), causal */
        {14, 2, 64, 3, 8200, 2, 4096, 0.f, 0},   /* qwen-like GQA 7, sliding */
        /* grouped decode kernel: GQA 1/2/4/8, fp32 and bf16, 1..many splits, ring wrap, window, softcap */
        {32, 8, 128, 1, 512, 2, 0, 0.f, 0},      /* Llama-3-8B decode at ctx 512 */
        {32, 8, 128, 1, 4096, 0, 0, 0.f, 0},     /* fp32 cache, 33 splits */
        {32, 8, 128, 1, 40, 0, 0, 0.f, 0},       /* one split, partial tile */
        {8, 8, 64, 2, 700, 2, 0, 30.f, 0},       /* MHA (GQA 1), 2 rows, softcap */
        {8, 4, 256, 1, 333, 0, 0, 0.f, 0},       /* GQA 2, head_dim 256 */
        {16, 2, 128, 1, 2000, 2, 0, 0.f, 0},     /* GQA 8: two head chunks per kv head */
        {12, 2, 64, 1, 1500, 0, 0, 0.f, 0},      /* GQA 6: a 4-head and a 2-head chunk */
        {32, 8, 128, 1, 1000, 2, 100, 0.f, 164}, /* sliding window 100 over a ring of 164 (wrapped) */
        {8, 2, 256, 4, 3000, 2, 512, 50.f, 515}, /* gemma-like: window 512 + softcap, ring of 515, 4 rows */
        {32, 8, 128, 1, 65, 2, 0, 0.f, 0},       /* 2 splits of 33 and 32 keys */
        {4, 2, 16, 1, 100, 2, 0, 0.f, 0},        /* generic head_dims (fixture models): 16, 48, 96, 192 */
        {6, 3, 48, 2, 300, 0, 20, 0.f, 0},
        {8, 2, 96, 1, 200, 2, 0, 10.f, 0},
        {8, 4, 192, 1, 500, 2, 0, 0.f, 0},
        {32, 8, 128, 1, 700, 1, 0, 0.f, 0},      /* f16 cache: Llama shape, GQA 2 hd 64, ring */
        {8, 4, 64, 3, 900, 1, 0, 20.f, 0},
        {32, 8, 128, 1, 1000, 1, 100, 0.f, 164},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_attention(cases[i], false);
    /* attention sinks (gpt-oss: 64 heads / 8 kv of 64, sliding window 128), split-K and grouped decode
     * with one and many splits, the merge, a ring, several rows */
    const attn_case sink_cases[] = {
        {64, 8, 64, 1, 1, 1, 0, 0.f, 0},       /* first token: the sink against one key */
        {64, 8, 64, 1, 40, 1, 0, 0.f, 0},      /* one split */
        {64, 8, 64, 1, 3000, 1, 0, 0.f, 0},    /* many splits: the sink once, in the merge */
        {64, 8, 64, 2, 1000, 1, 128, 0.f, 256}, /* sliding window 128 over a ring */
        {8, 2, 64, 3, 700, 0, 0, 0.f, 0},      /* fp32 cache, 3 rows */
    };
    for (size_t i = 0; i < sizeof sink_cases / sizeof sink_cases[0]; i++) run_attention(sink_cases[i], true);
    /* an fp16 cache saturates values past its range (finite, not inf); NaN stays NaN */
    lmx_cuda_attn a = {.n_heads = 1, .n_kv_heads = 1, .head_dim = 8, .capacity = 1, .kv_dtype = LMX_DTYPE_F16};
    const float kv8[8] = {1e6f, -1e6f, NAN, 1.0f, 65504.f, 70000.f, -0.5f, 0.f};
    const uint16_t want[8] = {0x7bff, 0xfbff, 0x7e00, 0x3c00, 0x7bff, 0x7bff, 0xb800, 0x0000};
    int32_t p0 = 0;
    float *dkv = dev_upload(kv8, sizeof kv8);
    int32_t *dp0 = dev_upload(&p0, sizeof p0);
    void *dkc = dev_poisoned(16), *dvc = dev_poisoned(16);
    OKS(lmx_cuda_kv_store(&a, dkv, dkv, dkc, dvc, dp0, 1, NULL));
    uint16_t got[8];
    lmx_cuda_memcpy_d2h(got, dkc, sizeof got, NULL);
    OKS(lmx_cuda_stream_sync(NULL));
    for (int i = 0; i < 8; i++)
        CHECK_MSG(i == 2 ? (got[i] & 0x7c00) == 0x7c00 && (got[i] & 0x3ff) : got[i] == want[i],
                  "fp16 store of %g: 0x%04x, want 0x%04x", (double)kv8[i], got[i], want[i]);
    lmx_cuda_free(dkv); lmx_cuda_free(dp0); lmx_cuda_free(dkc); lmx_cuda_free(dvc);
}

/* ---- flash (tiled prefill) attention ---- */
/* cap: cache capacity; position j lives in slot j % cap (cap < L: a ring holding the last cap
 * positions; unused slots are NaN, so a read outside the visible keys fails the comparison). */
/* dt: 0 = F32 cache (fp32 kernel, tol 1e-5), 2 = BF16 / 1 = F16 cache (tensor-core kernel; the reference
 * uses the rounded K, V and Q, so the tolerance covers P rounded to bf16: 4e-3 / fp16: 1e-3) */
typedef struct { int heads, kv, hd, T; int64_t L, cap; int window; float softcap; int dt; } fa_case;

/* with_sinks: with attention-sink logits */
static void run_flash(fa_case c, bool with_sinks) {
    char name[128];
    snprintf(name, sizeof name, "flash%s h%d kv%d hd%d T%d L%lld cap%lld win%d softcap%g%s",
             c.dt == 2 ? " bf16" : c.dt == 1 ? " f16" : "",
             c.heads, c.kv, c.hd, c.T, (long long)c.L, (long long)c.cap, c.window, (double)c.softcap,
             with_sinks ? " sinks" : "");
    float *sinks = with_sinks ? make_sinks(c.heads) : NULL;
    float *dsinks = sinks ? dev_upload(sinks, sizeof(float) * c.heads) : NULL;
    lmx_cuda_attn a = {.n_heads = c.heads, .n_kv_heads = c.kv, .head_dim = c.hd, .capacity = c.cap,
                       .kv_dtype = (lmx_dtype)c.dt, .scale = 1.0f / sqrtf((float)c.hd),
                       .softcap = c.softcap, .window = c.window, .sinks = dsinks};
    CHECK_MSG(lmx_cuda_attention_prefill_supported(&a), "%s: supported", name);
    size_t kvn = (size_t)c.L * c.kv * c.hd; /* [L, kv, hd] */
    float *k = randv(kvn, 2.0f), *v = randv(kvn, 1.0f);
    float rt[1];
    if (c.dt)
        for (size_t i = 0; i < kvn; i++) { /* the values a 16-bit cache holds */
            k[i] = tu_store(rt, 0, c.dt, k[i]);
            v[i] = tu_store(rt, 0, c.dt, v[i]);
        }
    size_t cn = (size_t)c.kv * c.cap * c.hd; /* [kv][cap][hd] */
    float *kc = malloc(sizeof(float) * cn), *vc = malloc(sizeof(float) * cn);
    for (size_t i = 0; i < cn; i++) kc[i] = vc[i] = NAN;
    for (int64_t j = c.L > c.cap ? c.L - c.cap : 0; j < c.L; j++)
        for (int g = 0; g < c.kv; g++)
            for (int i = 0; i < c.hd; i++) {
                size_t dst = ((size_t)g * c.cap + (size_t)(j % c.cap)) * c.hd + i, src = ((size_t)j * c.kv + g) * c.hd + i;
                kc[dst] = k[src];
                vc[dst] = v[src];
            }
    size_t qn = (size_t)c.T * c.heads * c.hd;
    float *q = randv(qn, 1.5f);
    if (c.dt)
        for (size_t i = 0; i < qn; i++) q[i] = tu_store(rt, 0, c.dt, q[i]); /* the kernel rounds Q likewise */
    int32_t *qpos = malloc(sizeof(int32_t) * c.T);
    for (int t = 0; t < c.T; t++) qpos[t] = (int32_t)(c.L - c.T + t);
    double *ref = malloc(sizeof(double) * qn), *sc = malloc(sizeof(double) * c.L);
    for (int t = 0; t < c.T; t++)
        for (int h = 0; h < c.heads; h++) {
            int g = h / (c.heads / c.kv);
            int64_t pos = qpos[t], lo = c.window > 0 ? pos - c.window + 1 : 0;
            if (lo < 0) lo = 0;
            double mx = -INFINITY;
            for (int64_t j = lo; j <= pos; j++) {
                double d = 0;
                for (int i = 0; i < c.hd; i++)
                    d += (double)q[((size_t)t * c.heads + h) * c.hd + i] * k[((size_t)j * c.kv + g) * c.hd + i];
                d *= 1.0 / sqrt((double)c.hd);
                if (c.softcap > 0) d = c.softcap * tanh(d / c.softcap);
                sc[j] = d;
                if (d > mx) mx = d;
            }
            mx = sink_max(sinks, h, mx);
            double den = sink_den(sinks, h, mx);
            for (int64_t j = lo; j <= pos; j++) { sc[j] = exp(sc[j] - mx); den += sc[j]; }
            for (int i = 0; i < c.hd; i++) {
                double num = 0;
                for (int64_t j = lo; j <= pos; j++) num += sc[j] * v[((size_t)j * c.kv + g) * c.hd + i];
                ref[((size_t)t * c.heads + h) * c.hd + i] = num / den;
            }
        }
    void *dkc, *dvc;
    if (c.dt) { /* 16-bit cache; unused slots NaN */
        uint16_t *kh = malloc(2 * cn), *vh = malloc(2 * cn);
        for (size_t i = 0; i < cn; i++) {
            kh[i] = c.dt == 2 ? tu_f2bf(kc[i]) : isnan(kc[i]) ? 0x7e00 : tu_f2h(kc[i]);
            vh[i] = c.dt == 2 ? tu_f2bf(vc[i]) : isnan(vc[i]) ? 0x7e00 : tu_f2h(vc[i]);
        }
        dkc = dev_upload(kh, 2 * cn);
        dvc = dev_upload(vh, 2 * cn);
        free(kh);
        free(vh);
    } else {
        dkc = dev_upload(kc, sizeof(float) * cn);
        dvc = dev_upload(vc, sizeof(float) * cn);
    }
    float *dq = dev_upload(q, sizeof(float) * qn);
    int32_t *dqpos = dev_upload(qpos, sizeof(int32_t) * c.T);
    float *dout = dev_poisoned(sizeof(float) * qn);
    float *y = malloc(sizeof(float) * qn);
    lmx_status st = lmx_cuda_attention_prefill(&a, dq, dkc, dvc, dqpos, c.T, dout, NULL);
    CHECK_MSG(st == LMX_OK, "%s: %s: %s", name, lmx_status_str(st), lmx_last_error_detail());
    if (st == LMX_OK) {
        CHECK(lmx_cuda_stream_sync(NULL) == LMX_OK);
        lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
        lmx_cuda_stream_sync(NULL);
        compare(name, y, ref, qn, c.dt == 2 ? 4e-3 : c.dt == 1 ? 1e-3 : 1e-5);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dq); lmx_cuda_free(dqpos); lmx_cuda_free(dout);
    lmx_cuda_free(dsinks);
    free(k); free(v); free(kc); free(vc); free(q); free(qpos); free(ref); free(sc); free(y); free(sinks);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Llama-3-8B layer shape at T = 512 (first prefill): flash vs the split-K decode kernel per row. Prints
 * microseconds per call (mean of 20 after 3 warm-ups); checks the two agree. */
static void time_flash_vs_split(void) {
    const int H = 32, KV = 8, HD = 128, T = 512;
    lmx_cuda_attn a = {.n_heads = H, .n_kv_heads = KV, .head_dim = HD, .capacity = 4096,
                       .kv_dtype = LMX_DTYPE_F32, .scale = 1.0f / sqrtf((float)HD)};
    size_t cn = (size_t)KV * a.capacity * HD, qn = (size_t)T * H * HD;
    float *kc = randv(cn, 2.0f), *vc = randv(cn, 1.0f), *q = randv(qn, 1.5f);
    int32_t pos[512];
    for (int t = 0; t < T; t++) pos[t] = t;
    float *dkc = dev_upload(kc, sizeof(float) * cn), *dvc = dev_upload(vc, sizeof(float) * cn);
    float *dq = dev_upload(q, sizeof(float) * qn);
    int32_t *dpos = dev_upload(pos, sizeof pos);
    float *o1 = dev_poisoned(sizeof(float) * qn), *o2 = dev_poisoned(sizeof(float) * qn);
    float *ws = dev_poisoned(sizeof(float) * lmx_cuda_attention_workspace_floats(&a, T));
    double us[2] = {0, 0};
    for (int which = 0; which < 2; which++) {
        for (int it = 0; it < 23; it++) {
            if (it == 3) { lmx_cuda_stream_sync(NULL); us[which] = now_s(); }
            if (which == 0) OKS(lmx_cuda_attention_prefill(&a, dq, dkc, dvc, dpos, T, o1, NULL));
            else OKS(lmx_cuda_attention(&a, dq, dkc, dvc, dpos, T, T, ws, o2, NULL));
        }
        OKS(lmx_cuda_stream_sync(NULL));
        us[which] = (now_s() - us[which]) / 20 * 1e6;
    }
    float *y1 = malloc(sizeof(float) * qn), *y2 = malloc(sizeof(float) * qn);
    double *r = malloc(sizeof(double) * qn);
    lmx_cuda_memcpy_d2h(y1, o1, sizeof(float) * qn, NULL);
    lmx_cuda_memcpy_d2h(y2, o2, sizeof(float) * qn, NULL);
    lmx_cuda_stream_sync(NULL);
    for (size_t i = 0; i < qn; i++) r[i] = y2[i];
    compare("flash vs split-K, T 512 Llama-3-8B shape", y1, r, qn, 1e-5);
    printf("attention T=512 H=32/8 d=128 (one layer, fp32 cache): flash %.1f us, split-K per row %.1f us (%.1fx)\n",
           us[0], us[1], us[1] / us[0]);
    fprintf(stderr, "attention T=512 H=32/8 d=128 (one layer, fp32 cache): flash %.1f us, split-K per row %.1f us (%.1fx)\n",
            us[0], us[1], us[1] / us[0]);
    { /* the tensor-core kernel over the same cache in bf16 */
        lmx_cuda_attn ab = a;
        ab.kv_dtype = LMX_DTYPE_BF16;
        uint16_t *kh = malloc(2 * cn), *vh = malloc(2 * cn);
        for (size_t i = 0; i < cn; i++) {
            kh[i] = tu_f2bf(kc[i]);
            vh[i] = tu_f2bf(vc[i]);
        }
        void *dkb = dev_upload(kh, 2 * cn), *dvb = dev_upload(vh, 2 * cn);
        double tb = 0;
        for (int it = 0; it < 23; it++) {
            if (it == 3) { lmx_cuda_stream_sync(NULL); tb = now_s(); }
            OKS(lmx_cuda_attention_prefill(&ab, dq, dkb, dvb, dpos, T, o2, NULL));
        }
        OKS(lmx_cuda_stream_sync(NULL));
        tb = (now_s() - tb) / 20 * 1e6;
        lmx_cuda_memcpy_d2h(y2, o2, sizeof(float) * qn, NULL);
        lmx_cuda_stream_sync(NULL);
        for (size_t i = 0; i < qn; i++) r[i] = y1[i];
        compare("tensor-core flash (bf16 cache) vs fp32 flash, T 512", y2, r, qn, 1e-2);
        printf("attention T=512 H=32/8 d=128 (one layer): tensor-core flash, bf16 cache %.1f us (fp32 flash %.1f us, %.1fx)\n",
               tb, us[0], us[0] / tb);
        fprintf(stderr, "attention T=512 H=32/8 d=128 (one layer): tensor-core flash, bf16 cache %.1f us (fp32 flash %.1f us, %.1fx)\n",
                tb, us[0], us[0] / tb);
        lmx_cuda_free(dkb); lmx_cuda_free(dvb);
        free(kh); free(vh);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dq); lmx_cuda_free(dpos);
    lmx_cuda_free(o1); lmx_cuda_free(o2); lmx_cuda_free(ws);
    free(kc); free(vc); free(q); free(y1); free(y2); free(r);
}

static void test_flash_attention(void) {
    const fa_case cases[] = {
        {32, 8, 128, 37, 37, 64, 0, 0.f, 0},        /* Llama-3-8B first prefill, odd T */
        {32, 8, 128, 513, 513, 600, 0, 0.f, 0},     /* 9 query tiles, last one a single row */
        {8, 1, 64, 129, 300, 333, 0, 30.f, 0},      /* GQA 8/1, prefill after context, softcap */
        {8, 2, 256, 129, 129, 200, 50, 50.f, 0},    /* gemma-like: window < T + softcap, head_dim 256 */
        {32, 8, 128, 129, 600, 300, 100, 0.f, 0},   /* sliding window over a ring (cap >= window + T - 1) */
        {16, 16, 64, 2, 2, 2, 0, 0.f, 0},           /* MHA, T = 2, full cache */
        {4, 1, 256, 65, 1000, 1001, 0, 0.f, 0},     /* long context, 2 tiles */
        {4, 2, 16, 40, 40, 40, 8, 0.f, 0},          /* generic head_dims (fixture models): 16, 48, 96, 192 */
        {4, 2, 48, 37, 37, 50, 12, 0.f, 0},
        {6, 3, 96, 70, 90, 90, 0, 20.f, 0},
        {8, 4, 192, 65, 65, 65, 30, 0.f, 0},
        /* the same shapes over a bf16 cache: the tensor-core kernel */
        {32, 8, 128, 37, 37, 64, 0, 0.f, 2},
        {32, 8, 128, 513, 513, 600, 0, 0.f, 2},
        {8, 1, 64, 129, 300, 333, 0, 30.f, 2},
        {8, 2, 256, 129, 129, 200, 50, 50.f, 2},
        {32, 8, 128, 129, 600, 300, 100, 0.f, 2},
        {16, 16, 64, 2, 2, 2, 0, 0.f, 2},
        {4, 1, 256, 65, 1000, 1001, 0, 0.f, 2},
        {4, 2, 16, 40, 40, 40, 8, 0.f, 2},
        {4, 2, 48, 37, 37, 50, 12, 0.f, 2},
        {6, 3, 96, 70, 90, 90, 0, 20.f, 2},
        {8, 4, 192, 65, 65, 65, 30, 0.f, 2},
        {4, 2, 32, 100, 100, 100, 0, 0.f, 2},
        {16, 2, 128, 200, 200, 200, 0, 0.f, 2}, /* GQA 8 */
        {32, 8, 128, 129, 600, 300, 100, 0.f, 1}, /* f16 cache: ring + window, softcap + head_dim 256, dim 48 */
        {8, 2, 256, 129, 129, 200, 50, 50.f, 1},
        {4, 2, 48, 37, 37, 50, 12, 0.f, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_flash(cases[i], false);
    /* attention sinks (gpt-oss shapes: 64 heads / 8 kv of 64, window 128): fp32, bf16, f16 caches */
    const fa_case sink_cases[] = {
        {64, 8, 64, 129, 129, 200, 0, 0.f, 0},
        {64, 8, 64, 200, 600, 400, 128, 0.f, 0},
        {64, 8, 64, 129, 129, 200, 0, 0.f, 2},
        {64, 8, 64, 200, 600, 400, 128, 0.f, 2},
        {64, 8, 64, 65, 300, 300, 128, 0.f, 1},
    };
    for (size_t i = 0; i < sizeof sink_cases / sizeof sink_cases[0]; i++) run_flash(sink_cases[i], true);
    lmx_cuda_attn bad = {.n_heads = 8, .n_kv_heads = 2, .head_dim = 100, .capacity = 64, .kv_dtype = LMX_DTYPE_F32};
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    bad.head_dim = 272;
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    bad.head_dim = 128;
    bad.kv_dtype = LMX_DTYPE_F16;
    CHECK(lmx_cuda_attention_prefill_supported(&bad));
    bad.kv_dtype = LMX_DTYPE_BF16;
    CHECK(lmx_cuda_attention_prefill_supported(&bad));
    bad.head_dim = 100;
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    bad.kv_dtype = LMX_DTYPE_U32; /* not a float cache */
    bad.head_dim = 128;
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    CHECK(!lmx_cuda_attention_decode_supported(&bad));
    time_flash_vs_split();
}

/* ---- argmax ---- */
static void test_argmax(void) {
    const int64_t n = 128256;
    const int rows = 3;
    float *l = randv((size_t)rows * n, 10.0f);
    int32_t want[3];
    want[0] = (int32_t)(tu_next(&rng) % n);
    l[want[0]] = 20.0f;
    want[1] = 5;                            /* tie: the first index wins */
    l[n + 5] = 25.0f; l[n + 77777] = 25.0f;
    want[2] = (int32_t)(n - 1);             /* NaNs are skipped */
    l[2 * n + 10] = NAN; l[2 * n + n - 1] = 30.0f;
    float *dl = dev_upload(l, sizeof(float) * rows * n);
    int32_t *dids = dev_poisoned(sizeof(int32_t) * rows), ids[3];
    OKS(lmx_cuda_argmax(dl, rows, n, dids, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    lmx_cuda_memcpy_d2h(ids, dids, sizeof ids, NULL);
    lmx_cuda_stream_sync(NULL);
    for (int r = 0; r < rows; r++) CHECK_EQ_INT(ids[r], want[r]);
    lmx_cuda_free(dl); lmx_cuda_free(dids);
    free(l);
}

/* ---- top-k ---- */
static const float *g_sort_vals;
static int cmp_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = g_sort_vals[i], y = g_sort_vals[j];
    if (isnan(x)) x = -INFINITY;
    if (isnan(y)) y = -INFINITY;
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : i > j;
}
static void test_topk(void) {
    const int64_t n = 128256;
    const int rows = 2, ks[4] = {1, 40, 256, 7};
    float *l = randv((size_t)rows * n, 8.0f);
    l[100] = NAN;
    l[n + 5] = 50.f; l[n + 9] = 50.f; l[n + 77] = 60.f; /* a tie inside the top k (k >= 3): index order */
    int32_t *order = malloc(sizeof(int32_t) * n);
    float *dl = dev_upload(l, sizeof(float) * rows * n);
    float *dv = dev_poisoned(sizeof(float) * rows * 256);
    int32_t *di = dev_poisoned(sizeof(int32_t) * rows * 256);
    float vals[2 * 256];
    int32_t ids[2 * 256];
    for (int ki = 0; ki < 4; ki++) {
        int k = ks[ki];
        OKS(lmx_cuda_topk(dl, rows, n, k, dv, di, NULL));
        OKS(lmx_cuda_stream_sync(NULL));
        lmx_cuda_memcpy_d2h(vals, dv, sizeof(float) * rows * k, NULL);
        lmx_cuda_memcpy_d2h(ids, di, sizeof(int32_t) * rows * k, NULL);
        lmx_cuda_stream_sync(NULL);
        for (int r = 0; r < rows; r++) {
            for (int64_t i = 0; i < n; i++) order[i] = (int32_t)i;
            g_sort_vals = l + (size_t)r * n;
            qsort(order, (size_t)n, sizeof *order, cmp_desc);
            int bad = 0;
            for (int j = 0; j < k; j++)
                if (ids[r * k + j] != order[j] || vals[r * k + j] != g_sort_vals[order[j]]) bad++;
            CHECK_MSG(bad == 0, "topk k=%d row %d: %d of %d wrong (first: got %d want %d)", k, r, bad, k, ids[r * k],
                      order[0]);
        }
    }
    lmx_cuda_free(dl); lmx_cuda_free(dv); lmx_cuda_free(di);
    free(l); free(order);
}

/* ---- arena, errors ---- */
static void test_arena(void) {
    lmx_cuda_arena *a = NULL;
    OKS(lmx_cuda_arena_create(1 << 20, &a));
    void *p1 = NULL, *p2 = NULL, *p3 = NULL;
    OKS(lmx_cuda_arena_alloc(a, 1000, 0, &p1));
    OKS(lmx_cuda_arena_alloc(a, 10, 4096, &p2));
    CHECK(((uintptr_t)p1 & 255) == 0 && ((uintptr_t)p2 & 4095) == 0 && p2 > p1);
    CHECK(lmx_cuda_arena_alloc(a, 2 << 20, 0, &p3) == LMX_ERR_OUT_OF_MEMORY && p3 == NULL);
    lmx_cuda_arena_reset(a);
    CHECK_EQ_INT(lmx_cuda_arena_used(a), 0);
    lmx_cuda_arena_destroy(a);
    lmx_cuda_arena_destroy(NULL);
    lmx_cuda_matrix bad = {.w = (void *)16, .dtype = LMX_DTYPE_BF16, .bits = 4, .group_size = 48, .n = 8, .k = 96};
    CHECK(lmx_cuda_matrix_check(&bad) == LMX_ERR_INVALID_ARGUMENT);
    lmx_cuda_util u = {0};
    lmx_status us = lmx_cuda_utilization(0, &u);
    fprintf(stderr, "  nvml: %s%s gpu %u%% membw %u%% used %.2f of %.2f GiB\n", lmx_status_str(us),
            us == LMX_OK ? "" : lmx_last_error_detail(), u.gpu_percent, u.mem_bw_percent, u.mem_used / 1073741824.0,
            u.mem_total / 1073741824.0);
    CHECK(us == LMX_OK || us == LMX_ERR_GPU_NOT_AVAILABLE);
    if (us == LMX_OK) CHECK(u.gpu_percent <= 100 && u.mem_total > 0 && u.mem_used <= u.mem_total);
    void *huge = NULL;
    CHECK(lmx_cuda_malloc(&huge, (size_t)1 << 50) == LMX_ERR_OUT_OF_MEMORY && huge == NULL);
}

#endif /* LMX_HAVE_CUDA */

int main(void) {
#ifndef LMX_HAVE_CUDA
    (void)lmx_test_run;
    SKIP("this build has no CUDA backend: GPU kernel tests skipped");
    return lmx_test_summary();
#else
    int n = 0;
    if (!lmx_cuda_available(&n)) {
        SKIP("no CUDA device (or no driver, or a build without CUDA): GPU kernel tests skipped");
        return lmx_test_summary();
    }
    lmx_cuda_device_info info;
    if (lmx_cuda_get_device_info(0, &info) == LMX_OK)
        fprintf(stderr, "device: %s, cc %d.%d, %d SMs, %.1f GiB\n", info.name, info.cc_major, info.cc_minor,
                info.sm_count, info.total_mem / 1073741824.0);
    const char *seed = getenv("LMX_TEST_SEED");
    rng.s = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL);
    fprintf(stderr, "seed %llu (LMX_TEST_SEED to repeat)\n", (unsigned long long)rng.s);
    RUN(test_arena);
    RUN(test_gemv);
    RUN(test_gemm);
    RUN(test_gemm_small_rows);
    RUN(test_expand);
    RUN(test_act_split);
    RUN(test_rmsnorm);
    RUN(test_rope);
    RUN(test_rope_qk_store);
    RUN(test_elementwise);
    RUN(test_embed);
    RUN(test_attention);
    RUN(test_flash_attention);
    RUN(test_argmax);
    RUN(test_topk);
    return lmx_test_summary();
#endif
}
