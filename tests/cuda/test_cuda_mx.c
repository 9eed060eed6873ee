/* test_cuda_mx.c — the CUDA backend's fp-mode (mxfp4 / mxfp8 / nvfp4) weights (cuda_mx.cu) against a
 * double-precision reference over the dequantized weights (formats/mlx_mx.h): the decode GEMV
 * (T = 1..4 and a 5-row x at an unaligned offset, 1e-5·Σ|x·w|), the prefill path (bf16 expansion +
 * the dense GEMM, T = 5, 17, 64; x rounded to bf16: 8e-3·Σ|x·w|), a matrix large enough to be
 * expanded in row chunks, a row range (row0), bias, matmul_add, the embedding (exact), a fused upload
 * (refused: the binder keeps fp weights separate); then a converted fixture model per mode, GPU vs
 * CPU logits (prefill and a decode step, 2e-2: the prefill rounds activations to bf16). Skips (77)
 * without a device. Run on the GPU machine: `bash bench/run_device.sh --tests` (ctest -L gpu) or
 * `ctest --test-dir build-cuda -R test_cuda_mx --output-on-failure`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "convert/convert.h"
#include "formats/mlx_mx.h"
#include "formats/st_build.h"
#include "lmx_test.h"
#include "model/lm.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static lmx_backend *gpu;

static void mx_case(lmx_quant_mode m, int rows, int cols, int row0, int T, int x_off, bool with_bias, bool add) {
    const int gs = lmx_quant_mode_group(m), bits = lmx_quant_mode_bits(m), stored = rows + row0;
    const size_t rb = (size_t)cols * bits / 8, sb = (size_t)(cols / gs);
    float *w = malloc(sizeof(float) * (size_t)stored * cols);
    for (size_t i = 0; i < (size_t)stored * cols; i++) w[i] = frand() * (float)ldexp(1.0, (int)(i / gs % 7) - 3);
    uint8_t *codes = malloc(rb * (size_t)stored), *sc = malloc(sb * (size_t)stored);
    CHECK(lmx_mx_quantize_matrix(w, stored, cols, m, codes, sc, 0) == LMX_OK);
    float *W = malloc(sizeof(float) * (size_t)rows * cols);
    for (int r = 0; r < rows; r++)
        CHECK(lmx_mx_dequantize_row(codes + (size_t)(r + row0) * rb, sc + (size_t)(r + row0) * sb, m, 0, cols,
                                    W + (size_t)r * cols) == LMX_OK);
    float *bias = malloc(sizeof(float) * (size_t)stored), *x = malloc(sizeof(float) * ((size_t)T * cols + x_off));
    float *y0 = malloc(sizeof(float) * (size_t)T * rows), *y = malloc(sizeof(float) * (size_t)T * rows);
    for (int i = 0; i < stored; i++) bias[i] = frand();
    for (size_t i = 0; i < (size_t)T * cols + x_off; i++) x[i] = frand();
    for (int i = 0; i < T * rows; i++) y0[i] = frand();
    lmx_weight_desc d = {.name = "mx", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .row0 = row0,
                         .dtype = LMX_DTYPE_U8, .data = codes, .scales = sc, .bits = bits, .group_size = gs, .mode = m,
                         .bias = with_bias ? bias : NULL, .bias_dtype = LMX_DTYPE_F32};
    lmx_bweight *bw = NULL;
    lmx_buf *bx = NULL, *by = NULL;
    CHECK(gpu->ops->weight_upload(gpu, &d, &bw) == LMX_OK);
    CHECK(gpu->ops->buf_alloc(gpu, (size_t)T * cols + x_off, &bx) == LMX_OK);
    CHECK(gpu->ops->buf_alloc(gpu, (size_t)T * rows, &by) == LMX_OK);
    if (!bw || !bx || !by) goto out;
    gpu->ops->buf_write(gpu, bx, 0, x, (size_t)T * cols + x_off);
    gpu->ops->buf_write(gpu, by, 0, y0, (size_t)T * rows);
    CHECK((add ? gpu->ops->matmul_add : gpu->ops->matmul)(gpu, bw, bx, (size_t)x_off, T, by) == LMX_OK);
    CHECK(gpu->ops->buf_read(gpu, by, 0, y, (size_t)T * rows) == LMX_OK);
    /* the prefill path (T > 4, x 16-byte aligned) rounds x to bf16 */
    const bool gemm = T > 4 && x_off % 4 == 0;
    const double rel = gemm ? 8e-3 : 1e-5;
    int bad = 0;
    double worst = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < rows; r++) {
            double s = 0, mag = 0;
            const float *xt = x + x_off + (size_t)t * cols;
            for (int k = 0; k < cols; k++) {
                s += (double)xt[k] * W[(size_t)r * cols + k];
                mag += fabs((double)xt[k] * W[(size_t)r * cols + k]);
            }
            if (with_bias) s += bias[row0 + r];
            if (add) s += y0[(size_t)t * rows + r];
            double tol = rel * (mag + 1), e = fabs(y[(size_t)t * rows + r] - s);
            bad += !(e <= tol);
            worst = fmax(worst, e / tol);
        }
    CHECK_MSG(bad == 0, "%s [%d x %d] row0 %d T %d x_off %d: %d results out of tolerance (worst %.3g x tol)",
              lmx_quant_mode_name(m), rows, cols, row0, T, x_off, bad, worst);
    /* the embedding: exact rows */
    if (rows >= 3) {
        int32_t ids[3] = {0, rows - 1, rows / 2};
        lmx_buf *be = NULL;
        CHECK(gpu->ops->buf_alloc(gpu, (size_t)3 * cols, &be) == LMX_OK);
        if (be && gpu->ops->embed(gpu, bw, ids, 3, 0.5f, be) == LMX_OK) {
            float *got = malloc(sizeof(float) * 3 * (size_t)cols);
            CHECK(gpu->ops->buf_read(gpu, be, 0, got, (size_t)3 * cols) == LMX_OK);
            int nb = 0;
            for (int t = 0; t < 3; t++)
                for (int k = 0; k < cols; k++) nb += got[(size_t)t * cols + k] != 0.5f * W[(size_t)ids[t] * cols + k];
            CHECK_MSG(nb == 0, "%s: %d embedding values differ", lmx_quant_mode_name(m), nb);
            free(got);
        } else {
            CHECK(0);
        }
        gpu->ops->buf_free(gpu, be);
    }
out:
    gpu->ops->weight_free(gpu, bw);
    gpu->ops->buf_free(gpu, bx);
    gpu->ops->buf_free(gpu, by);
    free(w), free(codes), free(sc), free(W), free(bias), free(x), free(y0), free(y);
}

static void test_kernels(void) {
    const lmx_quant_mode modes[] = {LMX_QUANT_MXFP4, LMX_QUANT_MXFP8, LMX_QUANT_NVFP4};
    static const int Ts[] = {1, 2, 3, 4, 5, 17, 64};
    for (int mi = 0; mi < 3; mi++) {
        int n = 0;
        for (int ti = 0; ti < 7; ti++, n++) {
            mx_case(modes[mi], 37, 96, n % 3, Ts[ti], 0, n % 2 == 0, n % 3 == 1);
            mx_case(modes[mi], 130, 1024, 5, Ts[ti], 0, true, n % 2 == 1);
        }
        mx_case(modes[mi], 20, 160, 0, 5, 3, true, false); /* unaligned x: the GEMV */
        mx_case(modes[mi], 4608, 8192, 16, 6, 0, true, true); /* 75 MB of bf16: expanded in row chunks */
    }
}

static void test_fused_refused(void) {
    uint8_t codes[32 * 16] = {0}, sc[32] = {0};
    lmx_weight_desc p[2];
    for (int i = 0; i < 2; i++)
        p[i] = (lmx_weight_desc){.name = "part", .kind = LMX_WEIGHT_QUANT, .rows = 16, .cols = 32, .dtype = LMX_DTYPE_U8,
                                 .data = codes, .scales = sc, .bits = 4, .group_size = 32, .mode = LMX_QUANT_MXFP4};
    lmx_bweight *f = NULL, *v[2] = {NULL, NULL};
    if (gpu->ops->weight_upload_fused) CHECK(gpu->ops->weight_upload_fused(gpu, p, 2, &f, v) == LMX_ERR_UNSUPPORTED);
}

/* a converted model per mode: GPU vs CPU logits after a 12-token prefill and one decode step */
static bool logits(const char *dir, lmx_device dev, float *out) {
    lmx_lm *lm = NULL;
    lmx_backend *be = NULL; /* the GPU: the CUDA backend, owned here (lmx_lm_open takes a GPU backend) */
    if (dev == LMX_DEVICE_GPU && lmx_backend_create(LMX_DEVICE_GPU, 0, &be, NULL) != LMX_OK) return false;
    lmx_lm_options lo = {.n_threads = 2, .device = dev, .backend = be};
    if (lmx_lm_open(dir, &lo, &lm) != LMX_OK) {
        lmx_backend_destroy(be);
        return false;
    }
    int32_t ids[13];
    for (int i = 0; i < 13; i++) ids[i] = (i * 37 + 5) % 300 + 1;
    lmx_kv *kv = NULL;
    float tmp[320];
    bool ok = lmx_kv_create(lm, 32, &kv) == LMX_OK && lmx_lm_forward(lm, kv, ids, 12, tmp) == LMX_OK &&
              lmx_lm_forward(lm, kv, ids + 12, 1, out) == LMX_OK;
    for (int i = 0; ok && i < 320; i++) out[320 + i] = tmp[i];
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    lmx_backend_destroy(be);
    return ok;
}

static void test_models(void) {
    char tmp[1024];
    if (!st_tmpdir(tmp, sizeof tmp)) return;
    const char *modes[] = {"mxfp4", "mxfp8", "nvfp4"};
    for (int mi = 0; mi < 3; mi++) {
        char dst[1200];
        snprintf(dst, sizeof dst, "%s/%s", tmp, modes[mi]);
        lmx_convert_options o;
        lmx_convert_options_default(&o);
        o.mode = modes[mi];
        CHECK(lmx_convert_model(LMX_SOURCE_DIR "/tests/fixtures/models/llama-untied-f16", dst, &o) == LMX_OK);
        float c[640], g[640];
        CHECK(logits(dst, LMX_DEVICE_CPU, c));
        CHECK_MSG(logits(dst, LMX_DEVICE_GPU, g), "%s on the GPU: %s", modes[mi], lmx_last_error_detail());
        for (int part = 0; part < 2; part++) {
            double num = 0, den = 0;
            for (int i = 0; i < 320; i++) {
                double d = (double)c[part * 320 + i] - g[part * 320 + i];
                num += d * d;
                den += (double)c[part * 320 + i] * c[part * 320 + i];
            }
            double e = sqrt(num / den);
            fprintf(stderr, "  %s %s: GPU vs CPU logits rel err %.3g\n", modes[mi], part ? "prefill" : "decode", e);
            /* the prefill rounds activations to bf16 (test_cuda_backend.c bounds its prefill at 2e-2) */
            CHECK_MSG(e <= 2e-2, "%s: GPU vs CPU logits differ by %g", modes[mi], e);
        }
    }
    lmx_convert_rmtree(tmp);
}

int main(void) {
    if (!lmx_cuda_available(NULL)) {
        SKIP("no CUDA device (or no driver, or a build without CUDA): fp-mode GPU tests skipped");
        return lmx_test_failures ? 1 : 77;
    }
    if (lmx_backend_cuda_create(0, &gpu) != LMX_OK) {
        fprintf(stderr, "cannot create the CUDA backend: %s\n", lmx_last_error_detail());
        return 1;
    }
    RUN(test_kernels);
    RUN(test_fused_refused);
    RUN(test_models);
    lmx_backend_destroy(gpu);
    return lmx_test_summary();
}
