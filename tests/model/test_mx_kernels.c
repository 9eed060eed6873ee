/* test_mx_kernels.c — the CPU backend's fp-mode (mxfp4 / mxfp8 / nvfp4) matmul and embedding at
 * every kernel level (scalar, AVX2, AVX-512, forced through lmx_backend_cpu_create_level) against a
 * double-precision reference over the dequantized weights (formats/mlx_mx.h), on odd shapes: 1, 17
 * and 37 rows, an odd number of groups, T = 1..7 (decode dots, prefill tiles and their partial
 * blocks), with and without bias, matmul and matmul_add, a row range (row0) of the stored matrix,
 * every code of the formats (subnormal E4M3, ±0, the largest values). 1 and 3 threads agree bit for
 * bit. Tolerance 1e-5·Σ|x·w| (fp32 rounding order). The fused upload keeps fp weights separate.
 * Row independence: row t of a T-token matmul / matmul_add equals the 1-token call on x[t] bit for
 * bit, T = 1..9 and 17, every mode and level (as test_cpu_levels does for the other kinds). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "formats/mlx_mx.h"
#include "lmx_test.h"
#include "model/cpu_levels.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}


/* a [stored, cols] matrix of random values at several magnitudes; row0 selects rows */
static void mx_case(lmx_quant_mode m, int rows, int ngroups, int T, bool with_bias, bool add, int row0) {
    const int gs = lmx_quant_mode_group(m), bits = lmx_quant_mode_bits(m), cols = gs * ngroups, stored = rows + row0;
    const size_t rb = (size_t)cols * bits / 8;
    float *w = malloc(sizeof(float) * (size_t)stored * cols);
    for (int i = 0; i < stored * cols; i++)
        w[i] = frand() * (float)ldexp(1.0, (i / gs) % 7 - 3) * (i % 11 == 0 ? 0.001f : 1.0f);
    uint8_t *codes = malloc(rb * (size_t)stored), *sc = malloc((size_t)stored * ngroups);
    CHECK(lmx_mx_quantize_matrix(w, stored, cols, m, codes, sc, 2) == LMX_OK);
    double *W = malloc(sizeof(double) * (size_t)rows * cols);
    float *tmp = malloc(sizeof(float) * (size_t)cols);
    for (int r = 0; r < rows; r++) {
        CHECK(lmx_mx_dequantize_row(codes + (size_t)(r + row0) * rb, sc + (size_t)(r + row0) * ngroups, m, 0, cols, tmp) == LMX_OK);
        for (int k = 0; k < cols; k++) W[(size_t)r * cols + k] = tmp[k];
    }
    float *bias = malloc(sizeof(float) * (size_t)stored), *x = malloc(sizeof(float) * (size_t)T * cols);
    float *y0 = malloc(sizeof(float) * (size_t)T * rows);
    for (int i = 0; i < stored; i++) bias[i] = frand();
    for (int i = 0; i < T * cols; i++) x[i] = frand();
    for (int i = 0; i < T * rows; i++) y0[i] = frand();
    lmx_weight_desc d = {.name = "mx", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .row0 = row0,
                         .dtype = LMX_DTYPE_U8, .data = codes, .scales = sc, .bits = bits, .group_size = gs,
                         .mode = m, .bias = with_bias ? bias : NULL, .bias_dtype = LMX_DTYPE_F32};
    float *o1 = malloc(sizeof(float) * (size_t)T * rows), *o3 = malloc(sizeof(float) * (size_t)T * rows);
    for (int L = 0; L < N_LEVELS; L++) {
        run_matmul(be[L][0], &d, x, T, add ? y0 : NULL, o1);
        run_matmul(be[L][1], &d, x, T, add ? y0 : NULL, o3);
        CHECK_MSG(!memcmp(o1, o3, sizeof(float) * (size_t)T * rows), "%s level %s: 1 and 3 threads differ",
                  lmx_quant_mode_name(m), level_name[L]);
        int bad = 0;
        double worst = 0;
        for (int t = 0; t < T; t++)
            for (int r = 0; r < rows; r++) {
                double s = 0, mag = 0;
                for (int k = 0; k < cols; k++) {
                    s += (double)x[(size_t)t * cols + k] * W[(size_t)r * cols + k];
                    mag += fabs((double)x[(size_t)t * cols + k] * W[(size_t)r * cols + k]);
                }
                if (with_bias) s += bias[row0 + r];
                if (add) s += y0[(size_t)t * rows + r];
                double tol = 1e-5 * (mag + 1), e = fabs(o1[(size_t)t * rows + r] - s);
                if (!(e <= tol)) bad++;
                worst = fmax(worst, e / tol);
            }
        CHECK_MSG(bad == 0, "%s level %s rows %d groups %d T %d: %d results out of tolerance (worst %.3g x tol)",
                  lmx_quant_mode_name(m), level_name[L], rows, ngroups, T, bad, worst);
    }
    /* the embedding: rows dequantized exactly (the same products at every level) */
    for (int L = 0; L < N_LEVELS; L++) {
        lmx_bweight *bw = NULL;
        d.bias = NULL;
        CHECK(be[L][0]->ops->weight_upload(be[L][0], &d, &bw) == LMX_OK);
        int32_t ids[3] = {0, rows - 1, rows / 2};
        lmx_buf *y = buf_from(be[L][0], NULL, (size_t)3 * cols);
        CHECK(be[L][0]->ops->embed(be[L][0], bw, ids, 3, 1.0f, y) == LMX_OK);
        float *got = malloc(sizeof(float) * 3 * (size_t)cols);
        be[L][0]->ops->buf_read(be[L][0], y, 0, got, (size_t)3 * cols);
        int bad = 0;
        for (int t = 0; t < 3; t++)
            for (int k = 0; k < cols; k++) bad += got[(size_t)t * cols + k] != (float)W[(size_t)ids[t] * cols + k];
        CHECK_MSG(bad == 0, "%s level %s: %d embedding values differ", lmx_quant_mode_name(m), level_name[L], bad);
        free(got);
        be[L][0]->ops->buf_free(be[L][0], y);
        be[L][0]->ops->weight_free(be[L][0], bw);
    }
    free(o1), free(o3), free(W), free(tmp), free(bias), free(x), free(y0), free(codes), free(sc), free(w);
}

static void test_mx_levels(void) {
    const lmx_quant_mode modes[] = {LMX_QUANT_MXFP4, LMX_QUANT_MXFP8, LMX_QUANT_NVFP4};
    static const int rowss[] = {1, 17, 37}, Ts[] = {1, 2, 3, 4, 5, 7};
    int n = 0;
    for (int mi = 0; mi < 3; mi++)
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < 6; t++, n++) mx_case(modes[mi], rowss[r], 3 + 2 * (n % 3), Ts[t], n % 2 == 0, n % 3 == 1, n % 4);
}

/* every code of each format in one row, through every level's decode (embedding) */
static void test_every_code(void) {
    const lmx_quant_mode modes[] = {LMX_QUANT_MXFP4, LMX_QUANT_MXFP8, LMX_QUANT_NVFP4};
    for (int mi = 0; mi < 3; mi++) {
        lmx_quant_mode m = modes[mi];
        const int gs = lmx_quant_mode_group(m), bits = lmx_quant_mode_bits(m), cols = 256;
        uint8_t codes[256], sc[16];
        for (int k = 0; k < cols * bits / 8; k++) codes[k] = (uint8_t)(bits == 8 ? (k == 0x7F || k == 0xFF ? 0 : k) : k * 17 + 3);
        for (int g = 0; g < cols / gs; g++) sc[g] = (uint8_t)(m == LMX_QUANT_NVFP4 ? g * 15 % 127 : 120 + g);
        float want[256];
        CHECK(lmx_mx_dequantize_row(codes, sc, m, 0, cols, want) == LMX_OK);
        lmx_weight_desc d = {.name = "codes", .kind = LMX_WEIGHT_QUANT, .rows = 1, .cols = cols, .dtype = LMX_DTYPE_U8,
                             .data = codes, .scales = sc, .bits = bits, .group_size = gs, .mode = m};
        for (int L = 0; L < N_LEVELS; L++) {
            lmx_bweight *bw = NULL;
            CHECK(be[L][0]->ops->weight_upload(be[L][0], &d, &bw) == LMX_OK);
            int32_t id = 0;
            lmx_buf *y = buf_from(be[L][0], NULL, cols);
            CHECK(be[L][0]->ops->embed(be[L][0], bw, &id, 1, 1.0f, y) == LMX_OK);
            float got[256];
            be[L][0]->ops->buf_read(be[L][0], y, 0, got, cols);
            CHECK_MSG(!memcmp(got, want, sizeof want), "%s level %s: decoded codes differ", lmx_quant_mode_name(m),
                      level_name[L]);
            be[L][0]->ops->buf_free(be[L][0], y);
            be[L][0]->ops->weight_free(be[L][0], bw);
        }
    }
}

/* row independence on random shapes: the T-row call on 3 threads, the 1-row calls on 1; nvfp4
 * with an odd and an even group count (the AVX-512 split kernel needs cols % 32 == 0) */
static void test_row_independence(void) {
    const lmx_quant_mode modes[] = {LMX_QUANT_MXFP4, LMX_QUANT_MXFP8, LMX_QUANT_NVFP4};
    static const int Ts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17};
    const int TM = 17;
    for (int L = 0; L < N_LEVELS; L++)
        for (int mi = 0; mi < 3; mi++)
            for (int v = 0; v < 2; v++) {
                const lmx_quant_mode m = modes[mi];
                frand();
                const int gs = lmx_quant_mode_group(m), bits = lmx_quant_mode_bits(m);
                const int rows = 1 + (int)((rng >> 20) % 40), row0 = (int)((rng >> 40) % 3);
                const int ngroups = 2 * (1 + (int)((rng >> 30) % 4)) - v, cols = gs * ngroups, stored = rows + row0;
                const size_t rb = (size_t)cols * bits / 8;
                float *w = malloc(sizeof(float) * (size_t)stored * cols), *bias = malloc(sizeof(float) * (size_t)stored);
                for (int i = 0; i < stored * cols; i++) w[i] = frand() * (float)ldexp(1.0, (i / gs) % 5 - 2);
                for (int i = 0; i < stored; i++) bias[i] = frand();
                uint8_t *codes = malloc(rb * (size_t)stored), *sc = malloc((size_t)stored * ngroups);
                CHECK(lmx_mx_quantize_matrix(w, stored, cols, m, codes, sc, 2) == LMX_OK);
                lmx_weight_desc d = {.name = "mx", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .row0 = row0,
                                     .dtype = LMX_DTYPE_U8, .data = codes, .scales = sc, .bits = bits,
                                     .group_size = gs, .mode = m, .bias = v ? NULL : bias, .bias_dtype = LMX_DTYPE_F32};
                float *x = malloc(sizeof(float) * (size_t)TM * cols), *y0 = malloc(sizeof(float) * (size_t)TM * rows);
                float *oT = malloc(sizeof(float) * (size_t)TM * rows), *o1 = malloc(sizeof(float) * (size_t)rows);
                for (int i = 0; i < TM * cols; i++) x[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
                for (int i = 0; i < TM * rows; i++) y0[i] = frand();
                for (int add = 0; add < 2; add++)
                    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                        const int T = Ts[ti];
                        run_matmul(be[L][1], &d, x, T, add ? y0 : NULL, oT);
                        int bad = 0;
                        for (int t = 0; t < T; t++) {
                            run_matmul(be[L][0], &d, x + (size_t)t * cols, 1, add ? y0 + (size_t)t * rows : NULL, o1);
                            bad += memcmp(o1, oT + (size_t)t * rows, sizeof(float) * (size_t)rows) != 0;
                        }
                        CHECK_MSG(bad == 0, "%s level %s rows %d cols %d add %d T %d: %d rows differ from their 1-row matmul",
                                  lmx_quant_mode_name(m), level_name[L], rows, cols, add, T, bad);
                    }
                free(w), free(bias), free(codes), free(sc), free(x), free(y0), free(oT), free(o1);
            }
}

/* fp weights are not fused (the binder then uploads the parts separately) */
static void test_no_fuse(void) {
    uint8_t codes[64 * 16] = {0}, sc[64] = {0};
    lmx_weight_desc p[2];
    for (int i = 0; i < 2; i++)
        p[i] = (lmx_weight_desc){.name = "part", .kind = LMX_WEIGHT_QUANT, .rows = 16, .cols = 32, .dtype = LMX_DTYPE_U8,
                                 .data = codes, .scales = sc, .bits = 4, .group_size = 32, .mode = LMX_QUANT_MXFP4};
    for (int L = 0; L < N_LEVELS; L++) {
        if (!be[L][0]->ops->weight_upload_fused) continue;
        lmx_bweight *f = NULL, *v[2] = {NULL, NULL};
        CHECK(be[L][0]->ops->weight_upload_fused(be[L][0], p, 2, &f, v) == LMX_ERR_UNSUPPORTED);
    }
    /* a desc whose bits or group do not match its mode is refused */
    lmx_weight_desc bad = p[0];
    bad.group_size = 16;
    lmx_bweight *w = NULL;
    CHECK(be[0][0]->ops->weight_upload(be[0][0], &bad, &w) == LMX_ERR_INVALID_ARGUMENT);
}

int main(void) {
    if (!levels_create()) return 1;
    RUN(test_every_code);
    RUN(test_mx_levels);
    RUN(test_no_fuse);
    RUN(test_row_independence);
    levels_destroy();
    return lmx_test_summary();
}
