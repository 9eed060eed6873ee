/* test_qtile_ref.c — the SIMD tile kernels of cpu_qtile.h against the portable C reference
 * (lmx_qtile_reference), bit for bit, at every tile level this CPU has (avx2, avxvnni, avx512,
 * forced through lmx_backend_cpu_create_level): the activation quantization (int16 codes, steps,
 * sums) on random groups and on the edges (rounding ties at step 1, zero, tiny, ±inf and NaN
 * groups), and the matmul of a repacked weight — the level's matmul / matmul_add op against the
 * reference kernels run on the same tiles — for 4 and 8 bits, every group size, scales f32 / bf16 /
 * f16, rows off the 16-row tile, T = 1..9 and 17 (the decode kernels, partial and full token
 * passes), with and without bias. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_qtile.h"
#include "formats/safetensors.h"
#include "lmx_test.h"
#include "model/mlx_pack.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static const char *level_name[] = {"scalar", "avx2", "avxvnni", "avx512"};

/* x [T, K] through the level's quant_x and the reference's: the same codes, steps and sums */
static void check_quant(const lmx_qtile_kernels *k, const char *level, const float *x, int T, int K, int G,
                        const char *what) {
    const size_t n = (size_t)T * K, ng = (size_t)T * (K / G);
    int16_t *q0 = malloc(n * sizeof *q0), *q1 = malloc(n * sizeof *q1);
    float *d0 = malloc(ng * sizeof *d0), *d1 = malloc(ng * sizeof *d1), *s0 = malloc(ng * sizeof *s0),
          *s1 = malloc(ng * sizeof *s1);
    lmx_qtile_reference.quant_x(x, T, K, G, q0, d0, s0);
    k->quant_x(x, T, K, G, q1, d1, s1);
    CHECK_MSG(!memcmp(q0, q1, n * sizeof *q0) && !memcmp(d0, d1, ng * sizeof *d0) && !memcmp(s0, s1, ng * sizeof *s0),
              "%s level %s G %d: quant_x differs from the reference", what, level, G);
    free(q0), free(q1), free(d0), free(d1), free(s0), free(s1);
}

static void quant_cases(const lmx_qtile_kernels *k, const char *level) {
    const int T = 3, K = 384;
    float *x = malloc(sizeof(float) * (size_t)T * K);
    for (int G = 32; G <= 128; G *= 2) {
        for (int i = 0; i < T * K; i++) x[i] = frand() * (i % 11 == 0 ? 40.0f : 1.0f);
        check_quant(k, level, x, T, K, G, "random");
        /* token 0: step 1 (max 32767) and half-integers of both signs: round to nearest even decides;
         * token 1: a zero group, a group below LMX_QTILE_XMIN, one with +inf, one with -inf; token 2:
         * a NaN after the group's max, a NaN first, denormals only */
        for (int i = 0; i < K; i++) x[i] = i % G == 0 ? 32767.0f : (float)(int)(frand() * 30000) + 0.5f;
        for (int i = K; i < 2 * K; i++) {
            const int g = (i - K) / G;
            x[i] = g == 0 ? 0.0f : g == 1 ? frand() * 1e-31f : frand();
        }
        x[K + 2 * G + 3] = INFINITY;
        if (K / G > 3) x[K + 3 * G + 1] = -INFINITY;
        for (int i = 2 * K; i < 3 * K; i++) x[i] = frand() * 5.0f;
        x[2 * K + 7] = NAN;
        x[2 * K + G] = NAN;
        for (int i = 2 * K + 2 * G; i < 2 * K + 3 * G; i++) x[i] = frand() * 1e-40f;
        check_quant(k, level, x, T, K, G, "edges");
    }
    free(x);
}

/* one repacked weight at a level: the matmul op against the reference kernels on its tiles */
static void matmul_case(lmx_backend *be, const char *level, int bits, int gs, int rows, int ngroups, lmx_dtype sdt,
                        bool with_bias, bool add, int T) {
    const int cols = gs * ngroups, NG = rows * ngroups;
    float *w = malloc(sizeof(float) * (size_t)rows * cols);
    for (int i = 0; i < rows * cols; i++) w[i] = frand() * (i % 5 == 0 ? 1.5f : 0.4f);
    qmat q = quantize(w, rows, cols, bits, gs);
    uint16_t *s16 = malloc(2 * (size_t)NG), *b16 = malloc(2 * (size_t)NG);
    for (int i = 0; i < NG; i++) {
        s16[i] = sdt == LMX_DTYPE_F16 ? lmx_f32_to_f16(q.scales[i]) : lmx_f32_to_bf16(q.scales[i]);
        b16[i] = sdt == LMX_DTYPE_F16 ? lmx_f32_to_f16(q.biases[i]) : lmx_f32_to_bf16(q.biases[i]);
    }
    float *bias = malloc(sizeof(float) * (size_t)rows), *x = malloc(sizeof(float) * (size_t)T * cols);
    float *y0 = malloc(sizeof(float) * (size_t)T * rows), *yr = malloc(sizeof(float) * (size_t)T * rows);
    float *yo = malloc(sizeof(float) * (size_t)T * rows);
    for (int i = 0; i < rows; i++) bias[i] = frand();
    for (int i = 0; i < T * cols; i++) x[i] = frand() * (i % 9 == 0 ? 3.0f : 1.0f);
    for (int i = 0; i < T * rows; i++) y0[i] = frand();
    lmx_weight_desc d = {.name = "q", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .dtype = sdt,
                         .data = q.packed, .scales = sdt == LMX_DTYPE_F32 ? (const void *)q.scales : s16,
                         .biases = sdt == LMX_DTYPE_F32 ? (const void *)q.biases : b16, .bits = bits,
                         .group_size = gs, .bias = with_bias ? bias : NULL, .bias_dtype = LMX_DTYPE_F32};
    lmx_bweight *bw = NULL;
    lmx_buf *bx = NULL, *by = NULL;
    CHECK(be->ops->weight_upload(be, &d, &bw) == LMX_OK);
    CHECK(be->ops->buf_alloc(be, (size_t)T * cols, &bx) == LMX_OK);
    CHECK(be->ops->buf_alloc(be, (size_t)T * rows, &by) == LMX_OK);
    if (bw && bx && by) {
        CHECK_MSG(bw->pk != NULL, "level %s: a %d-bit weight is not repacked", level, bits);
        be->ops->buf_write(be, bx, 0, x, (size_t)T * cols);
        be->ops->buf_write(be, by, 0, y0, (size_t)T * rows);
        CHECK((add ? be->ops->matmul_add(be, bw, bx, 0, T, by) : be->ops->matmul(be, bw, bx, 0, T, by)) == LMX_OK);
        be->ops->buf_read(be, by, 0, yo, (size_t)T * rows);
        if (bw->pk) {
            int16_t *xq = malloc(sizeof(int16_t) * (size_t)T * cols);
            float *xd = malloc(sizeof(float) * (size_t)T * ngroups), *xs = malloc(sizeof(float) * (size_t)T * ngroups);
            memcpy(yr, y0, sizeof(float) * (size_t)T * rows);
            lmx_qtile_reference.quant_x(x, T, cols, gs, xq, xd, xs);
            lmx_qtile_reference.rows(bw, 0, bw->pk_blocks, xq, xd, xs, T, yr, add);
            CHECK_MSG(!memcmp(yo, yr, sizeof(float) * (size_t)T * rows),
                      "level %s bits %d gs %d rows %d cols %d sdt %d bias %d add %d T %d: differs from the reference",
                      level, bits, gs, rows, cols, (int)sdt, (int)with_bias, (int)add, T);
            free(xq), free(xd), free(xs);
        }
    }
    if (bw) be->ops->weight_free(be, bw);
    if (bx) be->ops->buf_free(be, bx);
    if (by) be->ops->buf_free(be, by);
    free(w), free(s16), free(b16), free(bias), free(x), free(y0), free(yr), free(yo);
    qfree(&q);
}

static void test_levels(void) {
    static const int Ts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17}, rowss[] = {1, 16, 37};
    static const lmx_dtype sdts[] = {LMX_DTYPE_F32, LMX_DTYPE_BF16, LMX_DTYPE_F16};
    int tested = 0;
    for (int L = LMX_CPU_AVX2; L <= LMX_CPU_AVX512; L++) {
        lmx_backend *be = NULL;
        CHECK(lmx_backend_cpu_create_level(2, (lmx_cpu_level)L, &be) == LMX_OK);
        if (!be) continue;
        const char *got = lmx_backend_cpu_kernels(be);
        if (strcmp(got, level_name[L])) { /* the CPU lacks the level: its best below runs (tested there) */
            lmx_backend_destroy(be);
            continue;
        }
        const lmx_qtile_kernels *k = CPU(be)->qt;
        CHECK_MSG(k != NULL && k != &lmx_qtile_reference, "level %s: no tile kernels", got);
        if (k) quant_cases(k, got);
        int n = 0;
        for (int bits = 4; bits <= 8; bits += 4)
            for (int gs = 32; gs <= 128; gs *= 2)
                for (int r = 0; r < 3; r++)
                    for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++, n++)
                        matmul_case(be, got, bits, gs, rowss[r], 1 + (n % 3), sdts[n % 3], n % 2 == 0, n % 5 == 1, Ts[t]);
        tested++;
        lmx_backend_destroy(be);
    }
    if (!tested) SKIP("this CPU has no tile level (AVX2)");
}

int main(void) {
    RUN(test_levels);
    return lmx_test_summary();
}
