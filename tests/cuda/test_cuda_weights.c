/* test_cuda_weights.c — the CUDA kernels over weight matrices (dense and MLX-quantized GEMV, the
 * tensor-core GEMM of prefill and of few rows, the weight expansion before cuBLASLt, the embedding)
 * against a double-precision C reference, on fresh random inputs (seed printed; LMX_TEST_SEED=N
 * repeats a run), real model shapes and odd sizes.
 * Outputs are poisoned (NaN) before each launch, so an unwritten element fails.
 * Exits 77 (skipped) when no CUDA device is present. Label: gpu. */
#include "cuda_kernel_check.h"

#ifdef LMX_HAVE_CUDA

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

/* random host weights of a case: dense [n, k] of dt, or MLX affine words [n, k*bits/32] with scales
 * and biases [n, k/gs] of dt (s, b NULL for dense) */
typedef struct host_weights {
    void *w, *s, *b;
    size_t wbytes, sbytes;
} host_weights;

static host_weights make_host_weights(gemv_case c) {
    host_weights h = {0};
    if (c.bits) {
        h.wbytes = (size_t)(c.n * c.k * c.bits / 32) * 4;
        h.sbytes = (size_t)(c.n * (c.k / c.gs)) * tu_dsize(c.dt);
        h.w = malloc(h.wbytes); h.s = malloc(h.sbytes); h.b = malloc(h.sbytes);
        tu_make_quant(&rng, c.n, c.k, c.bits, c.gs, c.dt, h.w, h.s, h.b, NULL);
    } else {
        h.wbytes = (size_t)(c.n * c.k) * tu_dsize(c.dt);
        h.w = malloc(h.wbytes);
        for (size_t i = 0; i < (size_t)(c.n * c.k); i++) tu_store(h.w, i, c.dt, 0.05f * tu_unif(&rng));
    }
    return h;
}

static void run_gemv_x(gemv_case c, float xscale) {
    char name[160];
    snprintf(name, sizeof name, "gemv %s%d g%d dt%d [%lld x %lld] batch %d%s%s",
             c.bits ? "q" : "dense", c.bits, c.gs, c.dt, (long long)c.n, (long long)c.k, c.batch,
             c.bias ? " +bias" : "", c.accumulate ? " +acc" : "");
    host_weights h = make_host_weights(c);
    size_t wbytes = h.wbytes, sbytes = h.sbytes;
    void *hw = h.w, *hs = h.s, *hb = h.b;
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
    host_weights h = make_host_weights(c);
    size_t wbytes = h.wbytes, sbytes = h.sbytes;
    void *hw = h.w, *hs = h.s, *hb = h.b;
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

#endif /* LMX_HAVE_CUDA */

int main(void) {
    if (kernel_check_start()) { /* false: skipped */
#ifdef LMX_HAVE_CUDA
        RUN(test_gemv);
        RUN(test_gemm);
        RUN(test_gemm_small_rows);
        RUN(test_expand);
        RUN(test_embed);
#endif
    }
    return lmx_test_summary();
}
