/* test_mlx_mx.c — MLX's fp quantization modes (formats/mlx_mx.h): the E2M1 / E4M3 / E8M0 codecs on
 * every code and on the rounding ties, the quantizer on MLX's own test patterns (LUT-valued groups
 * with a 6 come back exactly, nvfp4's per-16 scales keep a 2^-9 group beside a 6 group, zeros give
 * zeros), the quantize → dequantize → quantize round trip (bit-exact where MLX's rule is a fixed
 * point: every mxfp8 group, and the fp4 groups whose largest code is ±6 — a group whose largest
 * code is 4 re-quantizes to a halved scale, MLX's rule is not idempotent there), the error bound against the
 * input, threading, the view checks, and the mode names. */
#include "formats/mlx_mx.h"
#include "lmx_test.h"

#include <math.h>
#include <stdlib.h>

#define TEST_RNG_SEED 0x2545F4914F6CDD1Dull
#include "test_rng.h"

static void test_modes(void) {
    lmx_quant_mode m;
    CHECK(lmx_quant_mode_parse("mxfp4", &m) && m == LMX_QUANT_MXFP4);
    CHECK(lmx_quant_mode_parse("mxfp8", &m) && m == LMX_QUANT_MXFP8);
    CHECK(lmx_quant_mode_parse("nvfp4", &m) && m == LMX_QUANT_NVFP4);
    CHECK(lmx_quant_mode_parse("affine", &m) && m == LMX_QUANT_AFFINE);
    CHECK(!lmx_quant_mode_parse("mxfp6", &m));
    CHECK(!lmx_quant_mode_parse("MXFP4", &m));
    CHECK(!lmx_quant_mode_parse(NULL, &m));
    CHECK_EQ_INT(lmx_quant_mode_bits(LMX_QUANT_MXFP8), 8);
    CHECK_EQ_INT(lmx_quant_mode_group(LMX_QUANT_NVFP4), 16);
    CHECK_EQ_INT(lmx_quant_mode_group(LMX_QUANT_MXFP4), 32);
    CHECK_EQ_INT(lmx_quant_mode_default_group(LMX_QUANT_AFFINE), 64);
}

static void test_e2m1(void) {
    static const float v[16] = {0, .5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -.5f, -1, -1.5f, -2, -3, -4, -6};
    for (unsigned c = 0; c < 16; c++) {
        CHECK(lmx_e2m1_to_f32(c) == v[c] && signbit(lmx_e2m1_to_f32(c)) == signbit(v[c]));
        CHECK_EQ_INT(lmx_f32_to_e2m1(v[c]), (int)c);
    }
    /* ties to the even code; above 5 → 6; sign of zero kept */
    const float x[] = {0.25f, 0.26f, 0.75f, 1.25f, 1.75f, 2.5f, 2.51f, 3.5f, 5.0f, 5.01f, 100.0f, -0.1f, -0.75f, -5.5f};
    const int c[] = {0, 1, 2, 2, 4, 4, 5, 6, 6, 7, 7, 8, 10, 15};
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        CHECK_MSG(lmx_f32_to_e2m1(x[i]) == c[i], "e2m1(%g) = %d, want %d", x[i], lmx_f32_to_e2m1(x[i]), c[i]);
    CHECK_EQ_INT(lmx_f32_to_e2m1(NAN), 7);
}

static void test_e4m3(void) {
    /* every non-NaN code round-trips; the values are the OCP e4m3fn ones */
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7F) == 0x7F) continue;
        float f = lmx_e4m3_to_f32((uint8_t)c);
        int e = (c >> 3) & 15, m = c & 7;
        double want = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
        if (c & 0x80) want = -want;
        CHECK_MSG(f == (float)want, "e4m3 %#x = %g, want %g", c, f, want);
        CHECK_MSG(lmx_f32_to_e4m3(f) == c, "e4m3 encode(%g) = %#x, want %#x", f, lmx_f32_to_e4m3(f), c);
    }
    CHECK_EQ_INT(lmx_e4m3_to_f32(0x7E) == 448.0f, 1);
    /* ties to even, saturation, subnormals */
    CHECK_EQ_INT(lmx_f32_to_e4m3(1.0625f), 0x38);  /* between 1 (0x38) and 1.125 */
    CHECK_EQ_INT(lmx_f32_to_e4m3(1.1875f), 0x3A);  /* between 1.125 and 1.25 */
    CHECK_EQ_INT(lmx_f32_to_e4m3(1.07f), 0x39);
    CHECK_EQ_INT(lmx_f32_to_e4m3(460.0f), 0x7E);
    CHECK_EQ_INT(lmx_f32_to_e4m3(1e9f), 0x7E);
    CHECK_EQ_INT(lmx_f32_to_e4m3(-1e9f), 0xFE);
    CHECK_EQ_INT(lmx_f32_to_e4m3(ldexpf(1, -10)), 0x00); /* half the smallest subnormal: tie to 0 */
    CHECK_EQ_INT(lmx_f32_to_e4m3(ldexpf(3, -10)), 0x02); /* 1.5 ulp: tie to 2 */
    CHECK_EQ_INT(lmx_f32_to_e4m3(ldexpf(1.01f, -10)), 0x01);
    CHECK_EQ_INT(lmx_f32_to_e4m3(-0.0f), 0x80);
}

static void test_e8m0(void) {
    CHECK(lmx_e8m0_to_f32(127) == 1.0f);
    CHECK(lmx_e8m0_to_f32(130) == 8.0f);
    CHECK(lmx_e8m0_to_f32(1) == ldexpf(1, -126));
    CHECK(lmx_e8m0_to_f32(0) == ldexpf(1, -127)); /* MLX's special case */
    CHECK_EQ_INT(lmx_f32_to_e8m0(1.0f), 127);
    CHECK_EQ_INT(lmx_f32_to_e8m0(0.75f), 127);   /* log2 = -0.415 → 0 */
    CHECK_EQ_INT(lmx_f32_to_e8m0(0.7f), 126);    /* log2 = -0.515 → -1 */
    CHECK_EQ_INT(lmx_f32_to_e8m0(1.5f), 128);    /* log2 = 0.585 → 1 */
    CHECK_EQ_INT(lmx_f32_to_e8m0(0.0f), 0);
    CHECK_EQ_INT(lmx_f32_to_e8m0(ldexpf(1, -140)), 0);
    CHECK_EQ_INT(lmx_f32_to_e8m0(-1.0f), 0);
    CHECK_EQ_INT(lmx_f32_to_e8m0(INFINITY), 255);
}

/* MLX's test pattern: LUT values, a 6 in every group, + 3e-6 → dequantizes within 1e-5 */
static void test_lut_groups(void) {
    static const float v[16] = {0, .5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -.5f, -1, -1.5f, -2, -3, -4, -6};
    const lmx_quant_mode modes[] = {LMX_QUANT_MXFP4, LMX_QUANT_NVFP4};
    for (int mi = 0; mi < 2; mi++) {
        lmx_quant_mode m = modes[mi];
        int gs = lmx_quant_mode_group(m);
        enum { N = 512 };
        float w[N], back[N];
        uint8_t codes[N / 2], sc[N / 16];
        for (int k = 0; k < N; k++) w[k] = (k % gs == 0 ? 6.0f : v[(int)(urand() * 16)]) + 3e-6f;
        CHECK(lmx_mx_quantize_row(w, N, m, codes, sc) == LMX_OK);
        CHECK(lmx_mx_dequantize_row(codes, sc, m, 0, N, back) == LMX_OK);
        double worst = 0;
        for (int k = 0; k < N; k++) worst = fmax(worst, fabs(back[k] - w[k]));
        CHECK_MSG(worst <= 1e-5, "%s: LUT groups come back within %g", lmx_quant_mode_name(m), worst);
        if (m == LMX_QUANT_MXFP4) CHECK_EQ_INT(sc[0], 127);
        else CHECK_EQ_INT(sc[0], 0x38); /* E4M3 1.0 */
    }
    /* nvfp4: a group of 6·2^-9 next to a group of 6, each with its own scale */
    float a[32], b2[32];
    uint8_t codes[16], sc[2];
    for (int k = 0; k < 32; k++) a[k] = k < 16 ? 6 * ldexpf(1, -9) : 6.0f;
    CHECK(lmx_mx_quantize_row(a, 32, LMX_QUANT_NVFP4, codes, sc) == LMX_OK);
    CHECK(lmx_mx_dequantize_row(codes, sc, LMX_QUANT_NVFP4, 0, 32, b2) == LMX_OK);
    for (int k = 0; k < 32; k++) CHECK(b2[k] == a[k]);
    /* zeros → zeros in every mode */
    const lmx_quant_mode all[] = {LMX_QUANT_MXFP4, LMX_QUANT_MXFP8, LMX_QUANT_NVFP4};
    for (int mi = 0; mi < 3; mi++) {
        float z[64] = {0}, out[64];
        uint8_t c8[64], s8[4];
        CHECK(lmx_mx_quantize_row(z, 64, all[mi], c8, s8) == LMX_OK);
        CHECK(lmx_mx_dequantize_row(c8, s8, all[mi], 0, 64, out) == LMX_OK);
        for (int k = 0; k < 64; k++) CHECK(out[k] == 0.0f);
    }
}

/* quantize → dequantize → quantize: same codes and scales where MLX's rule is a fixed point; the
 * dequantized values never move by more than half a step of the group's format */
static void test_roundtrip(void) {
    const lmx_quant_mode all[] = {LMX_QUANT_MXFP4, LMX_QUANT_MXFP8, LMX_QUANT_NVFP4};
    enum { R = 64, C = 256 };
    float *w = malloc(sizeof(float) * R * C), *back = malloc(sizeof(float) * R * C);
    uint8_t *c1 = malloc(R * C), *c2 = malloc(R * C), s1[R * C / 16], s2[R * C / 16];
    for (int mi = 0; mi < 3; mi++) {
        lmx_quant_mode m = all[mi];
        int gs = lmx_quant_mode_group(m), bits = lmx_quant_mode_bits(m);
        size_t rb = (size_t)C * (size_t)bits / 8, sb = (size_t)(C / gs);
        for (int i = 0; i < R * C; i++) w[i] = nrand() * (float)ldexp(1, (i / C) % 9 - 6);
        CHECK(lmx_mx_quantize_matrix(w, R, C, m, c1, s1, 3) == LMX_OK);
        for (int r = 0; r < R; r++)
            CHECK(lmx_mx_dequantize_row(c1 + r * rb, s1 + r * sb, m, 0, C, back + (size_t)r * C) == LMX_OK);
        CHECK(lmx_mx_quantize_matrix(back, R, C, m, c2, s2, 1) == LMX_OK);
        int checked = 0, moved = 0;
        for (int r = 0; r < R; r++)
            for (int g = 0; g < C / gs; g++) {
                const uint8_t *a = c1 + r * rb + (size_t)g * gs * bits / 8, *b = c2 + r * rb + (size_t)g * gs * bits / 8;
                bool fixed = true;
                if (m != LMX_QUANT_MXFP8) { /* fp4: a fixed point iff the group's largest magnitude code is 6
                                               (nvfp4 misses it only with a subnormal E4M3 scale) */
                    unsigned mx = 0;
                    for (int k = 0; k < gs; k++) mx = fmax(mx, lmx_mx_code(m, a, k) & 7);
                    fixed = mx == 7;
                }
                bool same = s1[r * sb + g] == s2[r * sb + g] && !memcmp(a, b, (size_t)gs * bits / 8);
                if (fixed) {
                    checked++;
                    CHECK_MSG(same, "%s row %d group %d: requantized codes differ", lmx_quant_mode_name(m), r, g);
                } else {
                    moved += !same;
                }
                /* error bound: |w - ŵ| <= half the largest step of the format times the scale */
                float sd = lmx_mx_scale(m, s1[r * sb + g]);
                double half_step = m == LMX_QUANT_MXFP8 ? 16.0 : 1.0, amax = 0;
                for (int k = 0; k < gs; k++) amax = fmax(amax, fabs(w[r * C + g * gs + k]));
                for (int k = 0; k < gs; k++) {
                    double e = fabs(w[r * C + g * gs + k] - back[r * C + g * gs + k]);
                    /* mxfp4 groups whose amax/sd exceeds 6 saturate: the excess is the bound */
                    double sat = fmax(0.0, amax - sd * (m == LMX_QUANT_MXFP8 ? 448.0 : 6.0));
                    CHECK_MSG(e <= half_step * sd + sat + 1e-30, "%s: error %g beyond %g", lmx_quant_mode_name(m), e,
                              half_step * sd + sat);
                }
            }
        CHECK_MSG(checked > R * C / gs / 3, "%s: only %d groups are fixed points", lmx_quant_mode_name(m), checked);
        if (m == LMX_QUANT_MXFP8) CHECK_EQ_INT(moved, 0);
    }
    free(w), free(back), free(c1), free(c2);
}

static void test_errors(void) {
    float w[64] = {0};
    uint8_t c[64], s[4];
    CHECK(lmx_mx_quantize_row(w, 48, LMX_QUANT_MXFP4, c, s) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_mx_quantize_row(w, 64, LMX_QUANT_AFFINE, c, s) == LMX_ERR_INVALID_ARGUMENT);
    w[3] = NAN;
    CHECK(lmx_mx_quantize_row(w, 64, LMX_QUANT_MXFP8, c, s) == LMX_ERR_INVALID_ARGUMENT);
    /* views: U32 weight, U8 scales of the mode's group, no biases */
    uint8_t data[4096] = {0};
    lmx_tensor_view wt = {.name = "m.weight", .dtype = LMX_DTYPE_U32, .ndim = 2, .shape = {4, 8}, .data = data};
    lmx_tensor_view st = {.name = "m.scales", .dtype = LMX_DTYPE_U8, .ndim = 2, .shape = {4, 2}, .data = data};
    lmx_tensor_view bt = {.name = "m.biases", .dtype = LMX_DTYPE_BF16, .ndim = 2, .shape = {4, 2}, .data = data};
    int64_t cols = 0;
    CHECK(lmx_mx_check_views(&wt, &st, NULL, LMX_QUANT_MXFP4, &cols) == LMX_OK && cols == 64);
    CHECK(lmx_mx_check_views(&wt, &st, &bt, LMX_QUANT_MXFP4, &cols) == LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(lmx_mx_check_views(&wt, &st, NULL, LMX_QUANT_NVFP4, &cols) == LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "m.weight") != NULL);
    st.shape[1] = 1;
    CHECK(lmx_mx_check_views(&wt, &st, NULL, LMX_QUANT_MXFP8, &cols) == LMX_OK && cols == 32);
    st.dtype = LMX_DTYPE_BF16;
    CHECK(lmx_mx_check_views(&wt, &st, NULL, LMX_QUANT_MXFP8, &cols) == LMX_ERR_INVALID_MODEL_FORMAT);
}

int main(void) {
    RUN(test_modes);
    RUN(test_e2m1);
    RUN(test_e4m3);
    RUN(test_e8m0);
    RUN(test_lut_groups);
    RUN(test_roundtrip);
    RUN(test_errors);
    return lmx_test_summary();
}
