/* test_cpu_levels.c — the CPU backend's matmul at every kernel level (scalar, AVX2, AVX-VNNI,
 * AVX-512, forced through lmx_backend_cpu_create_level even on an AVX-512 machine) against a
 * double-precision reference, on odd shapes: rows not a multiple of the 16-row tile (1, 17, 37),
 * column counts of an odd number of groups, every group size, 2–8 bits, scales stored as
 * f32/bf16/f16, T = 1..17 (the decode kernels, partial token passes, the prefill passes), with and
 * without bias, matmul and matmul_add; dense F32/F16/BF16 with column counts off the vector width.
 * 1 and 3 threads at a level must agree bit for bit. Tolerance: 1e-5·Σ|x·w| (fp32 rounding), plus
 * for 4/8 bits (the repacked tiles, every level) the int16 activation bound Σ_g d_g/2·Σ_{k∈g}|w_k|
 * (d_g = max|x_g| / 32767), and for bf16 weights at the avx512 level the split-bf16 activation
 * bound 2^-16·Σ|x·w|. The 4/8-bit tiles compute integer sums: every level equals the scalar
 * reference bit for bit (also on rounding ties, zero, tiny and non-finite groups); a weight
 * uploaded with fp32_x keeps fp32 activations at every level. And row
 * independence: row t of a T-token matmul / matmul_add equals the 1-token call on x[t] bit for bit. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "formats/safetensors.h"
#include "lmx_test.h"
#include "model/cpu_levels.h"
#include "model/mlx_pack.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static unsigned get_bits(const uint8_t *row, int64_t k, int bits) {
    unsigned v = 0;
    for (int b = 0; b < bits; b++) {
        int64_t bit = k * bits + b;
        v |= (unsigned)(row[bit / 8] >> (bit % 8) & 1) << b;
    }
    return v;
}


/* checks out [T, rows] against ref (double W [rows, cols] dequantized) at a level */
static void check_result(const char *what, int level, const float *out, const double *W, const float *x, int T,
                         int rows, int cols, int gs, bool xq16, bool xbf16, const float *bias, const float *y0) {
    int bad = 0;
    double worst = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < rows; r++) {
            const float *xt = x + (size_t)t * cols;
            const double *wr = W + (size_t)r * cols;
            double s = 0, mag = 0, bound = 0;
            for (int k = 0; k < cols; k++) {
                s += (double)xt[k] * wr[k];
                mag += fabs((double)xt[k] * wr[k]);
            }
            if (xq16)
                for (int g = 0; g < cols / gs; g++) {
                    double amax = 0, wsum = 0;
                    for (int k = g * gs; k < (g + 1) * gs; k++) {
                        amax = fmax(amax, fabs(xt[k]));
                        wsum += fabs(wr[k]);
                    }
                    bound += amax / 32767.0 / 2 * wsum;
                }
            if (xbf16) bound += mag / 65536; /* activations as two bf16 parts: |x - hi - lo| <= 2^-16 |x| */
            if (bias) s += bias[r];
            if (y0) s += y0[(size_t)t * rows + r];
            double tol = 1e-5 * (mag + 1) + bound * 1.01, e = fabs(out[(size_t)t * rows + r] - s);
            if (!(e <= tol)) bad++;
            if (e / tol > worst) worst = e / tol;
        }
    CHECK_MSG(bad == 0, "%s level %s: %d results out of tolerance (worst %.3g x tol)", what, level_name[level], bad, worst);
}

static void quant_case(int bits, int gs, int rows, int ngroups, int T, lmx_dtype sdt, bool with_bias, bool add) {
    const int cols = gs * ngroups;
    float *w = malloc(sizeof(float) * (size_t)rows * cols);
    for (int i = 0; i < rows * cols; i++) w[i] = frand() * (i % 5 == 0 ? 1.5f : 0.4f);
    qmat q = quantize(w, rows, cols, bits, gs);
    const int NG = rows * ngroups;
    /* scales/biases in the stored dtype; the reference dequantizes with the rounded values */
    uint16_t *s16 = malloc(2 * (size_t)NG), *b16 = malloc(2 * (size_t)NG);
    float *sf = malloc(sizeof(float) * (size_t)NG), *bf = malloc(sizeof(float) * (size_t)NG);
    for (int i = 0; i < NG; i++) {
        if (sdt == LMX_DTYPE_BF16) {
            s16[i] = lmx_f32_to_bf16(q.scales[i]), b16[i] = lmx_f32_to_bf16(q.biases[i]);
            sf[i] = lmx_bf16_to_f32(s16[i]), bf[i] = lmx_bf16_to_f32(b16[i]);
        } else if (sdt == LMX_DTYPE_F16) {
            s16[i] = lmx_f32_to_f16(q.scales[i]), b16[i] = lmx_f32_to_f16(q.biases[i]);
            sf[i] = lmx_f16_to_f32(s16[i]), bf[i] = lmx_f16_to_f32(b16[i]);
        } else {
            sf[i] = q.scales[i], bf[i] = q.biases[i];
        }
    }
    double *W = malloc(sizeof(double) * (size_t)rows * cols);
    const size_t rb = (size_t)cols * bits / 8;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            int g = r * ngroups + k / gs;
            W[(size_t)r * cols + k] = (double)sf[g] * get_bits(q.packed + r * rb, k, bits) + bf[g];
        }
    float *bias = malloc(sizeof(float) * (size_t)rows), *x = malloc(sizeof(float) * (size_t)T * cols);
    float *y0 = malloc(sizeof(float) * (size_t)T * rows);
    for (int i = 0; i < rows; i++) bias[i] = frand();
    for (int i = 0; i < T * cols; i++) x[i] = frand() * (i % 9 == 0 ? 3.0f : 1.0f);
    for (int i = 0; i < T * rows; i++) y0[i] = frand();
    lmx_weight_desc d = {.name = "q", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .dtype = sdt,
                         .data = q.packed, .scales = sdt == LMX_DTYPE_F32 ? (const void *)q.scales : s16,
                         .biases = sdt == LMX_DTYPE_F32 ? (const void *)q.biases : b16, .bits = bits, .group_size = gs,
                         .bias = with_bias ? bias : NULL, .bias_dtype = LMX_DTYPE_F32};
    char what[96];
    snprintf(what, sizeof what, "quant bits %d gs %d rows %d cols %d T %d sdt %d bias %d add %d", bits, gs, rows, cols,
             T, (int)sdt, (int)with_bias, (int)add);
    float *o1 = malloc(sizeof(float) * (size_t)T * rows), *o3 = malloc(sizeof(float) * (size_t)T * rows);
    float *os = malloc(sizeof(float) * (size_t)T * rows); /* the scalar level's result */
    const bool tiles = bits == 4 || bits == 8;
    for (int L = 0; L < N_LEVELS; L++) {
        run_matmul(be[L][0], &d, x, T, add ? y0 : NULL, o1);
        run_matmul(be[L][1], &d, x, T, add ? y0 : NULL, o3);
        CHECK_MSG(memcmp(o1, o3, sizeof(float) * (size_t)T * rows) == 0, "%s level %s: 1 and 3 threads differ", what,
                  level_name[L]);
        check_result(what, L, o1, W, x, T, rows, cols, gs, tiles, false, with_bias ? bias : NULL, add ? y0 : NULL);
        if (L == 0) memcpy(os, o1, sizeof(float) * (size_t)T * rows);
        else if (tiles)
            CHECK_MSG(memcmp(o1, os, sizeof(float) * (size_t)T * rows) == 0, "%s level %s: differs from scalar", what,
                      level_name[L]);
    }
    free(os), free(o1), free(o3), free(W), free(bias), free(x), free(y0), free(s16), free(b16), free(sf), free(bf), free(w);
    qfree(&q);
}

static void test_quant_levels(void) {
    static const int bitss[] = {2, 3, 4, 5, 6, 8}, gss[] = {32, 64, 128}, rowss[] = {1, 17, 37};
    static const int Ts[] = {1, 2, 3, 4, 5, 7};
    static const lmx_dtype sdts[] = {LMX_DTYPE_F32, LMX_DTYPE_BF16, LMX_DTYPE_F16};
    int n = 0;
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++)
            for (int r = 0; r < 3; r++, n++) {
                int T = Ts[n % 6];
                quant_case(bitss[b], gss[g], rowss[r], 1 + 2 * (n % 3), T, sdts[n % 3], n % 2 == 0, n % 4 == 1);
                if (bitss[b] == 4 || bitss[b] == 8) /* the repacked path: every T from 1 to 9, and 17 */
                    for (int t = 1; t <= 10; t++)
                        if (t != T)
                            quant_case(bitss[b], gss[g], rowss[r], 3, t == 10 ? 17 : t, sdts[(n + t) % 3], t % 2 == 1,
                                       t == 6);
            }
}

/* the activation quantization's edges, 4 and 8 bits, T = 3: token 0 with a group whose max|x| is
 * 32767 (step 1) and half-integer values (round to nearest even decides), a zero group and a group
 * below LMX_QTILE_XMIN (both zero), token 1 with an inf and token 2 with a NaN in one group (every
 * result non-finite); token 0 equals the scalar level bit for bit and the reference within the
 * bound at every level */
static void test_quant_edges(void) {
    const int rows = 19, gs = 32, cols = 4 * gs, T = 3;
    for (int bits = 4; bits <= 8; bits += 4) {
        float *w = malloc(sizeof(float) * (size_t)rows * cols), *x = malloc(sizeof(float) * (size_t)T * cols);
        for (int i = 0; i < rows * cols; i++) w[i] = frand() * 0.3f;
        for (int i = 0; i < T * cols; i++) x[i] = frand();
        x[0] = 32767.0f;
        for (int k = 1; k < gs; k++) x[k] = (float)(int)(frand() * 30000) + 0.5f;
        for (int k = gs; k < 2 * gs; k++) x[k] = 0.0f;
        for (int k = 2 * gs; k < 3 * gs; k++) x[k] = frand() * 1e-35f;
        x[cols + gs + 5] = INFINITY;
        x[2 * cols + 2 * gs + 7] = NAN;
        qmat q = quantize(w, rows, cols, bits, gs);
        lmx_weight_desc d = {.name = "q", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .dtype = LMX_DTYPE_F32,
                             .data = q.packed, .scales = q.scales, .biases = q.biases, .bits = bits, .group_size = gs,
                             .bias_dtype = LMX_DTYPE_F32};
        float *o = malloc(sizeof(float) * (size_t)T * rows), *os = malloc(sizeof(float) * (size_t)rows);
        char what[64];
        snprintf(what, sizeof what, "quant edges bits %d", bits);
        for (int L = 0; L < N_LEVELS; L++) {
            run_matmul(be[L][1], &d, x, T, NULL, o);
            check_result(what, L, o, q.deq, x, 1, rows, cols, gs, true, false, NULL, NULL);
            if (L == 0) memcpy(os, o, sizeof(float) * (size_t)rows);
            CHECK_MSG(memcmp(o, os, sizeof(float) * (size_t)rows) == 0, "%s level %s: differs from scalar", what,
                      level_name[L]);
            int finite = 0;
            for (int i = rows; i < T * rows; i++) finite += isfinite(o[i]) != 0;
            CHECK_MSG(finite == 0, "%s level %s: %d results of the inf / NaN tokens are finite", what, level_name[L],
                      finite);
        }
        free(o), free(os), free(w), free(x);
        qfree(&q);
    }
}

/* a 4/8-bit weight uploaded with fp32_x (a router) keeps x in fp32 at every level: groups of one
 * large and many small activations, which the int16 steps would round away (0.001 against a step
 * of 1000/32767), still meet the fp32 tolerance; without fp32_x the same call is off by more */
static void test_fp32_x(void) {
    const int rows = 21, gs = 64, cols = 2 * gs, T = 2;
    for (int bits = 4; bits <= 8; bits += 4) {
        float *w = malloc(sizeof(float) * (size_t)rows * cols), *x = malloc(sizeof(float) * (size_t)T * cols);
        for (int i = 0; i < rows * cols; i++) w[i] = frand() * 0.5f + 0.6f;
        for (int i = 0; i < T * cols; i++) x[i] = i % gs == 0 ? 1000.0f : 1e-3f * (1.0f + frand() * 0.1f);
        qmat q = quantize(w, rows, cols, bits, gs);
        lmx_weight_desc d = {.name = "router", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols,
                             .dtype = LMX_DTYPE_F32, .data = q.packed, .scales = q.scales, .biases = q.biases,
                             .bits = bits, .group_size = gs, .bias_dtype = LMX_DTYPE_F32, .fp32_x = true};
        float *o = malloc(sizeof(float) * (size_t)T * rows);
        char what[64];
        snprintf(what, sizeof what, "fp32_x bits %d", bits);
        for (int L = 0; L < N_LEVELS; L++) {
            run_matmul(be[L][1], &d, x, T, NULL, o);
            check_result(what, L, o, q.deq, x, T, rows, cols, gs, false, false, NULL, NULL);
        }
        /* the check can fail: the repacked path loses the small values */
        d.fp32_x = false;
        run_matmul(be[0][0], &d, x, T, NULL, o);
        double worst = 0;
        for (int r = 0; r < rows; r++) {
            double s = 0, mag = 0;
            for (int k = 0; k < cols; k++) s += (double)x[k] * q.deq[(size_t)r * cols + k], mag += fabs((double)x[k] * q.deq[(size_t)r * cols + k]);
            worst = fmax(worst, fabs(o[r] - s) / (1e-5 * (mag + 1)));
        }
        CHECK_MSG(worst > 1.0, "%s: the int16 path met the fp32 tolerance (worst %.3g x tol)", what, worst);
        free(o), free(w), free(x);
        qfree(&q);
    }
}

static void dense_case(lmx_dtype dt, int rows, int cols, int T, bool with_bias) {
    float *wf = malloc(sizeof(float) * (size_t)rows * cols);
    uint16_t *w16 = malloc(2 * (size_t)rows * cols);
    double *W = malloc(sizeof(double) * (size_t)rows * cols);
    for (int i = 0; i < rows * cols; i++) {
        float v = frand();
        if (dt == LMX_DTYPE_BF16) w16[i] = lmx_f32_to_bf16(v), W[i] = lmx_bf16_to_f32(w16[i]);
        else if (dt == LMX_DTYPE_F16) w16[i] = lmx_f32_to_f16(v), W[i] = lmx_f16_to_f32(w16[i]);
        else wf[i] = v, W[i] = v;
    }
    float *bias = malloc(sizeof(float) * (size_t)rows), *x = malloc(sizeof(float) * (size_t)T * cols);
    for (int i = 0; i < rows; i++) bias[i] = frand();
    for (int i = 0; i < T * cols; i++) x[i] = frand();
    lmx_weight_desc d = {.name = "d", .kind = LMX_WEIGHT_DENSE, .rows = rows, .cols = cols, .dtype = dt,
                         .data = dt == LMX_DTYPE_F32 ? (const void *)wf : w16, .bias = with_bias ? bias : NULL,
                         .bias_dtype = LMX_DTYPE_F32};
    char what[80];
    snprintf(what, sizeof what, "dense dtype %d rows %d cols %d T %d", (int)dt, rows, cols, T);
    float *o1 = malloc(sizeof(float) * (size_t)T * rows), *o3 = malloc(sizeof(float) * (size_t)T * rows);
    for (int L = 0; L < N_LEVELS; L++) {
        run_matmul(be[L][0], &d, x, T, NULL, o1);
        run_matmul(be[L][1], &d, x, T, NULL, o3);
        CHECK_MSG(memcmp(o1, o3, sizeof(float) * (size_t)T * rows) == 0, "%s level %s: 1 and 3 threads differ", what,
                  level_name[L]);
        /* bf16 weights at the avx512 level: VDPBF16PS with split bf16 activations where the CPU has it */
        const bool xbf16 = dt == LMX_DTYPE_BF16 && !strcmp(lmx_backend_cpu_kernels(be[L][0]), "avx512");
        check_result(what, L, o1, W, x, T, rows, cols, cols, false, xbf16, with_bias ? bias : NULL, NULL);
    }
    free(o1), free(o3), free(wf), free(w16), free(W), free(bias), free(x);
}

static void test_dense_levels(void) {
    static const lmx_dtype dts[] = {LMX_DTYPE_F32, LMX_DTYPE_F16, LMX_DTYPE_BF16};
    static const int colss[] = {1, 15, 75, 130, 257}, rowss[] = {1, 17, 37}, Ts[] = {1, 3, 4, 6};
    int n = 0;
    for (int d = 0; d < 3; d++)
        for (int c = 0; c < 5; c++)
            for (int r = 0; r < 3; r++, n++) dense_case(dts[d], rowss[r], colss[c], Ts[n % 4], n % 2 == 1);
}

/* row independence: row t of matmul(x[T]) (and matmul_add) equals matmul(x[t:t+1]) bit for bit, for
 * T = 1..9 and 17, at every level and weight kind — batched decode and the prompt cache rely on a
 * token's result not depending on which rows share the call. The T-row call runs on 3 threads, the
 * 1-row calls on 1. */
static void rows_case(int L, const lmx_weight_desc *d, const char *what) {
    static const int Ts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17};
    const int rows = (int)d->rows, cols = (int)d->cols, TM = 17;
    float *x = malloc(sizeof(float) * (size_t)TM * cols), *y0 = malloc(sizeof(float) * (size_t)TM * rows);
    float *oT = malloc(sizeof(float) * (size_t)TM * rows), *o1 = malloc(sizeof(float) * (size_t)rows);
    for (int i = 0; i < TM * cols; i++) x[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
    for (int i = 0; i < TM * rows; i++) y0[i] = frand();
    for (int add = 0; add < 2; add++)
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            const int T = Ts[ti];
            run_matmul(be[L][1], d, x, T, add ? y0 : NULL, oT);
            int bad = 0;
            for (int t = 0; t < T; t++) {
                run_matmul(be[L][0], d, x + (size_t)t * cols, 1, add ? y0 + (size_t)t * rows : NULL, o1);
                if (memcmp(o1, oT + (size_t)t * rows, sizeof(float) * (size_t)rows)) bad++;
            }
            CHECK_MSG(bad == 0, "%s level %s add %d T %d: %d rows differ from their 1-row matmul", what,
                      level_name[L], add, T, bad);
        }
    free(x), free(y0), free(oT), free(o1);
}

/* the embedding of every row at level L equals the scalar level's bit for bit (at avx512 a repacked
 * 4/8-bit weight reads its scales and biases from the tiles: the fp32 copies are freed) */
static void embed_case(int L, const lmx_weight_desc *d, const char *what) {
    const int rows = (int)d->rows, cols = (int)d->cols;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)rows);
    float *o[2];
    for (int i = 0; i < rows; i++) ids[i] = rows - 1 - i;
    for (int j = 0; j < 2; j++) {
        lmx_backend *b = be[j ? L : 0][0];
        lmx_bweight *w = NULL;
        lmx_buf *y = buf_from(b, NULL, (size_t)rows * cols);
        o[j] = malloc(sizeof(float) * (size_t)rows * cols);
        CHECK(b->ops->weight_upload(b, d, &w) == LMX_OK);
        CHECK(b->ops->embed(b, w, ids, rows, 1.0f, y) == LMX_OK);
        b->ops->buf_read(b, y, 0, o[j], (size_t)rows * cols);
        b->ops->weight_free(b, w);
        b->ops->buf_free(b, y);
    }
    CHECK_MSG(memcmp(o[0], o[1], sizeof(float) * (size_t)rows * cols) == 0, "%s level %s: embedding differs from scalar",
              what, level_name[L]);
    free(o[0]), free(o[1]), free(ids);
}

static void test_row_independence(void) {
    static const int bitss[] = {2, 3, 4, 5, 6, 8}, gss[] = {32, 64, 128};
    static const lmx_dtype dts[] = {LMX_DTYPE_F32, LMX_DTYPE_BF16, LMX_DTYPE_F16};
    for (int L = 0; L < N_LEVELS; L++) {
        for (int b = 0; b < 6; b++)
            for (int v = 0; v < 2; v++) {
                const int gs = gss[(b + v + L) % 3], rows = 1 + (int)((rng >> 20) % 40), cols = gs * (1 + (int)((rng >> 30) % 4));
                const lmx_dtype sdt = dts[(b + v) % 3];
                frand();
                float *w = malloc(sizeof(float) * (size_t)rows * cols), *bias = malloc(sizeof(float) * (size_t)rows);
                for (int i = 0; i < rows * cols; i++) w[i] = frand() * (i % 5 == 0 ? 1.5f : 0.4f);
                for (int i = 0; i < rows; i++) bias[i] = frand();
                qmat q = quantize(w, rows, cols, bitss[b], gs);
                const int NG = rows * (cols / gs);
                uint16_t *s16 = malloc(2 * (size_t)NG), *b16 = malloc(2 * (size_t)NG);
                for (int i = 0; i < NG; i++) {
                    s16[i] = sdt == LMX_DTYPE_F16 ? lmx_f32_to_f16(q.scales[i]) : lmx_f32_to_bf16(q.scales[i]);
                    b16[i] = sdt == LMX_DTYPE_F16 ? lmx_f32_to_f16(q.biases[i]) : lmx_f32_to_bf16(q.biases[i]);
                }
                lmx_weight_desc d = {.name = "q", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .dtype = sdt,
                                     .data = q.packed, .scales = sdt == LMX_DTYPE_F32 ? (const void *)q.scales : s16,
                                     .biases = sdt == LMX_DTYPE_F32 ? (const void *)q.biases : b16, .bits = bitss[b],
                                     .group_size = gs, .bias = v ? bias : NULL, .bias_dtype = LMX_DTYPE_F32};
                char what[96];
                snprintf(what, sizeof what, "quant bits %d gs %d rows %d cols %d sdt %d bias %d", bitss[b], gs, rows,
                         cols, (int)sdt, v);
                rows_case(L, &d, what);
                embed_case(L, &d, what);
                free(w), free(bias), free(s16), free(b16);
                qfree(&q);
            }
        for (int dt = 0; dt < 3; dt++)
            for (int v = 0; v < 2; v++) {
                const int rows = 1 + (int)((rng >> 20) % 40), cols = 1 + (int)((rng >> 30) % 300);
                frand();
                float *wf = malloc(sizeof(float) * (size_t)rows * cols), *bias = malloc(sizeof(float) * (size_t)rows);
                uint16_t *w16 = malloc(2 * (size_t)rows * cols);
                for (int i = 0; i < rows * cols; i++) {
                    wf[i] = frand();
                    w16[i] = dts[dt] == LMX_DTYPE_F16 ? lmx_f32_to_f16(wf[i]) : lmx_f32_to_bf16(wf[i]);
                }
                for (int i = 0; i < rows; i++) bias[i] = frand();
                lmx_weight_desc d = {.name = "d", .kind = LMX_WEIGHT_DENSE, .rows = rows, .cols = cols, .dtype = dts[dt],
                                     .data = dts[dt] == LMX_DTYPE_F32 ? (const void *)wf : w16,
                                     .bias = v ? bias : NULL, .bias_dtype = LMX_DTYPE_F32};
                char what[96];
                snprintf(what, sizeof what, "dense dtype %d rows %d cols %d bias %d", (int)dts[dt], rows, cols, v);
                rows_case(L, &d, what);
                free(wf), free(bias), free(w16);
            }
    }
}

int main(void) {
    if (!levels_create()) return 1;
    RUN(test_quant_levels);
    RUN(test_quant_edges);
    RUN(test_fp32_x);
    RUN(test_dense_levels);
    RUN(test_row_independence);
    levels_destroy();
    return lmx_test_summary();
}
