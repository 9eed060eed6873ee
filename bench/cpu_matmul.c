/* cpu_matmul.c — microbenchmark of one CPU matmul (issue 11 A/Bs): a random [rows, cols] weight of
 * one kind (bf16, f16, f32, q<bits> MLX affine g64 with bf16 scales, or an fp mode mxfp4 / mxfp8 /
 * nvfp4 with random codes and scales of moderate magnitude) through the CPU backend at
 * a level, T tokens, the best of `reps` timed calls after one warm-up. Prints one line: kind, shape,
 * T, the kernels that ran, ms per call, GB/s of weight bytes and GFLOP/s.
 *
 *   lmx_cpu_matmul KIND ROWS COLS T [threads 2] [reps 20] [level: scalar|avx2|avxvnni|avx512 or 0..3,
 *                  default the best the CPU has]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "formats/quant_mode.h"
#include "formats/safetensors.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s KIND(bf16|f16|f32|q2..q8|mxfp4|mxfp8|nvfp4) ROWS COLS T [threads] [reps] [level]\n", argv[0]);
        return 2;
    }
    const char *kind = argv[1];
    const int64_t rows = atoll(argv[2]), cols = atoll(argv[3]);
    const int T = atoi(argv[4]), threads = argc > 5 ? atoi(argv[5]) : 2, reps = argc > 6 ? atoi(argv[6]) : 20;
    static const char *levels[] = {"scalar", "avx2", "avxvnni", "avx512"};
    int level = LMX_CPU_AVX512;
    if (argc > 7) {
        level = atoi(argv[7]);
        for (int i = 0; i <= LMX_CPU_AVX512; i++)
            if (!strcmp(argv[7], levels[i])) level = i;
    }
    lmx_backend *be = NULL;
    if (lmx_backend_cpu_create_level(threads, (lmx_cpu_level)level, &be) != LMX_OK) return 1;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    const size_t n = (size_t)rows * (size_t)cols;
    lmx_weight_desc d = {.name = "w", .rows = rows, .cols = cols, .bias_dtype = LMX_DTYPE_F32};
    uint8_t *data;
    uint16_t *sb = NULL;
    size_t wbytes;
    lmx_quant_mode mode;
    if (lmx_quant_mode_parse(kind, &mode) && lmx_quant_mode_is_fp(mode)) {
        const int bits = lmx_quant_mode_bits(mode), gs = lmx_quant_mode_group(mode);
        wbytes = n * (size_t)bits / 8;
        data = malloc(wbytes);
        for (size_t i = 0; i < wbytes; i++) data[i] = (uint8_t)((rng = rng * 6364136223846793005ull + 1) >> 56);
        const size_t ng = n / (size_t)gs;
        uint8_t *sc = malloc(ng); /* E8M0 2^-7..2^0, or E4M3 around 1 */
        for (size_t i = 0; i < ng; i++)
            sc[i] = (uint8_t)((mode == LMX_QUANT_NVFP4 ? 0x30 : 120) + ((rng = rng * 6364136223846793005ull + 1) >> 61));
        sb = (uint16_t *)sc;
        d.kind = LMX_WEIGHT_QUANT, d.dtype = LMX_DTYPE_U8, d.bits = bits, d.group_size = gs, d.mode = mode;
        d.scales = sc;
        wbytes += ng;
    } else if (kind[0] == 'q') {
        const int bits = atoi(kind + 1), gs = 64;
        wbytes = n * (size_t)bits / 8;
        data = malloc(wbytes);
        for (size_t i = 0; i < wbytes; i++) data[i] = (uint8_t)((rng = rng * 6364136223846793005ull + 1) >> 56);
        const size_t ng = n / gs;
        sb = malloc(4 * ng);
        for (size_t i = 0; i < 2 * ng; i++) sb[i] = lmx_f32_to_bf16(i < ng ? 0.01f : -0.05f);
        d.kind = LMX_WEIGHT_QUANT, d.dtype = LMX_DTYPE_BF16, d.bits = bits, d.group_size = gs;
        d.scales = sb, d.biases = sb + ng;
        wbytes += 4 * ng;
    } else {
        const lmx_dtype dt = !strcmp(kind, "f32") ? LMX_DTYPE_F32 : !strcmp(kind, "f16") ? LMX_DTYPE_F16 : LMX_DTYPE_BF16;
        const size_t es = dt == LMX_DTYPE_F32 ? 4 : 2;
        wbytes = n * es;
        data = malloc(wbytes);
        for (size_t i = 0; i < n; i++) {
            const float v = (float)((int)((rng = rng * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) * 1e-4f;
            uint16_t h = dt == LMX_DTYPE_F16 ? lmx_f32_to_f16(v) : lmx_f32_to_bf16(v);
            if (es == 4) memcpy(data + 4 * i, &v, 4);
            else memcpy(data + 2 * i, &h, 2);
        }
        d.kind = LMX_WEIGHT_DENSE, d.dtype = dt;
    }
    d.data = data;
    lmx_bweight *w = NULL;
    lmx_buf *x = NULL, *y = NULL;
    if (be->ops->weight_upload(be, &d, &w) != LMX_OK || be->ops->buf_alloc(be, (size_t)T * cols, &x) != LMX_OK ||
        be->ops->buf_alloc(be, (size_t)T * rows, &y) != LMX_OK) {
        fprintf(stderr, "%s\n", lmx_last_error_detail());
        return 1;
    }
    float *xh = malloc(sizeof(float) * (size_t)T * cols);
    for (size_t i = 0; i < (size_t)T * cols; i++) xh[i] = (float)((int)(i * 2654435761u % 2001) - 1000) * 1e-3f;
    be->ops->buf_write(be, x, 0, xh, (size_t)T * cols);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        const double t0 = now_s();
        if (be->ops->matmul(be, w, x, 0, T, y) != LMX_OK) return 1;
        const double dt = now_s() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    printf("%s %lldx%lld T %d threads %d %s: %.3f ms, %.1f GB/s, %.1f GFLOP/s\n", kind, (long long)rows,
           (long long)cols, T, threads, lmx_backend_cpu_kernels(be), best * 1e3, (double)wbytes / best * 1e-9,
           2.0 * (double)n * T / best * 1e-9);
    be->ops->weight_free(be, w);
    be->ops->buf_free(be, x);
    be->ops->buf_free(be, y);
    lmx_backend_destroy(be);
    free(data), free(sb), free(xh);
    return 0;
}
