/* test_mlx_quant.c — the MLX affine quantizer/dequantizer: hand-built bit layouts for every width,
 * the scale/bias rule (negative scale, q0 == 0), round-trip error bounds, threading, shape checks,
 * and agreement with the golden fixtures' packed weights (the quantized tests/fixtures/models, from branch gold;
 * LMX_GOLD_FIXTURES=<dir holding the model folders> overrides the location). */
#include "formats/mlx_quant.h"
#include "formats/safetensors.h"
#include "lmx_test.h"
#include "util/fs.h"
#include "util/json.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>

#define TEST_RNG_SEED 0x9E3779B97F4A7C15ull
#include "test_rng.h"

/* ---- packing ---- */

static void check_pack(const uint8_t *q, int n, int bits, const uint8_t *expect, int nbytes) {
    uint8_t out[64];
    memset(out, 0xAA, sizeof out);
    lmx_mlx_pack(q, n, bits, out);
    CHECK_MSG(memcmp(out, expect, (size_t)nbytes) == 0, "%d-bit packing differs", bits);
    CHECK_EQ_INT(out[nbytes], 0xAA); /* nothing written past the row */
    for (int k = 0; k < n; k++) CHECK_EQ_INT(lmx_mlx_unpack(out, bits, k), q[k]);
}

static void test_pack_layout(void) {
    /* 2 bits: element 0 in the low bits of byte 0 */
    uint8_t q2[16] = {0, 1, 2, 3, 3, 2, 1, 0};
    uint8_t e2[4] = {0xE4, 0x1B, 0, 0};
    check_pack(q2, 16, 2, e2, 4);
    /* 3 bits: 8 values in 3 bytes, value k at bit 3k of the 24-bit little-endian integer */
    uint8_t q3[8] = {1, 2, 3, 4, 5, 6, 7, 0};
    uint8_t e3[3] = {0xD1, 0x58, 0x1F};
    check_pack(q3, 8, 3, e3, 3);
    /* 4 bits: the u32 word reads 0x87654321 */
    uint8_t q4[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t e4[4] = {0x21, 0x43, 0x65, 0x87};
    check_pack(q4, 8, 4, e4, 4);
    uint32_t word;
    uint8_t out4[4];
    lmx_mlx_pack(q4, 8, 4, out4);
    memcpy(&word, out4, 4);
    CHECK_EQ_INT(word, 0x87654321u);
    /* 5 bits: 8 values in 5 bytes */
    uint8_t q5[8] = {1, 2, 3, 4, 5, 6, 7, 31};
    uint8_t e5[5] = {0x41, 0x0C, 0x52, 0xCC, 0xF9};
    check_pack(q5, 8, 5, e5, 5);
    /* 6 bits: 4 values in 3 bytes */
    uint8_t q6[4] = {1, 2, 3, 63};
    uint8_t e6[3] = {0x81, 0x30, 0xFC};
    check_pack(q6, 4, 6, e6, 3);
    /* 8 bits: one byte each */
    uint8_t q8[4] = {0, 127, 128, 255};
    check_pack(q8, 4, 8, q8, 4);
}

/* MLX's own byte-wise extraction for 3/5/6 bits (mlx/backend/cpu/quantized.cpp extract_bits),
 * re-derived from the bit diagrams, as an independent check of lmx_mlx_unpack on random rows. */
static void mlx_extract(const uint8_t *w, int bits, unsigned *o) {
    if (bits == 3) {
        o[0] = w[0] & 7, o[1] = (w[0] >> 3) & 7, o[2] = (w[0] >> 6) | ((w[1] & 1) << 2), o[3] = (w[1] >> 1) & 7;
        o[4] = (w[1] >> 4) & 7, o[5] = (w[1] >> 7) | ((w[2] & 3) << 1), o[6] = (w[2] >> 2) & 7, o[7] = w[2] >> 5;
    } else if (bits == 5) {
        o[0] = w[0] & 31, o[1] = (w[0] >> 5) | ((w[1] & 3) << 3), o[2] = (w[1] >> 2) & 31;
        o[3] = (w[1] >> 7) | ((w[2] & 15) << 1), o[4] = (w[2] >> 4) | ((w[3] & 1) << 4), o[5] = (w[3] >> 1) & 31;
        o[6] = (w[3] >> 6) | ((w[4] & 7) << 2), o[7] = w[4] >> 3;
    } else { /* 6 */
        o[0] = w[0] & 63, o[1] = (w[0] >> 6) | ((w[1] & 15) << 2), o[2] = (w[1] >> 4) | ((w[2] & 3) << 4);
        o[3] = w[2] >> 2;
    }
}

/* Reference unpack: u32 words shifted (2/4/8 bits) or MLX's byte packs (3/5/6 bits). */
static unsigned ref_unpack(const uint8_t *row, int bits, int64_t k) {
    if (bits == 2 || bits == 4 || bits == 8) {
        int per = 32 / bits;
        const uint8_t *p = row + 4 * (k / per);
        uint32_t word = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        return (word >> ((k % per) * bits)) & ((1u << bits) - 1);
    }
    int per = bits == 6 ? 4 : 8, bytes = bits == 6 ? 3 : bits;
    unsigned o[8];
    mlx_extract(row + bytes * (k / per), bits, o);
    return o[k % per];
}

static void test_unpack_random(void) {
    static const int widths[6] = {2, 3, 4, 5, 6, 8};
    for (int wi = 0; wi < 6; wi++) {
        int bits = widths[wi];
        uint8_t q[128], packed[128];
        for (int k = 0; k < 128; k++) q[k] = (uint8_t)(urand() * (1 << bits));
        lmx_mlx_pack(q, 128, bits, packed);
        int bad = 0;
        for (int k = 0; k < 128; k++) bad += ref_unpack(packed, bits, k) != q[k] || lmx_mlx_unpack(packed, bits, k) != q[k];
        CHECK_MSG(bad == 0, "%d-bit: %d elements unpack wrong", bits, bad);
    }
}

/* ---- the scale/bias rule ---- */

static void test_group_rule(void) {
    float w[32];
    uint8_t q[32];
    float s, b;
    /* |min| > |max|: positive scale, bias = min */
    for (int i = 0; i < 32; i++) w[i] = -1.0f + 1.5f * (float)i / 31.0f;
    CHECK_EQ_INT(lmx_mlx_quantize_group(w, 4, 32, q, &s, &b, LMX_MLX_CPU), LMX_OK);
    CHECK_EQ_INT(b, -1);
    CHECK_NEAR(s, 0.1, 1e-6);
    CHECK(s > 0);
    CHECK_EQ_INT(q[0], 0);
    CHECK_EQ_INT(q[31], 15);
    for (int i = 0; i < 32; i++) CHECK_EQ_INT(q[i], (int)rintf((w[i] - b) / s));
    /* |max| > |min|: negative scale, bias = max, the max maps to q = 0 */
    for (int i = 0; i < 32; i++) w[i] = -0.5f + 1.5f * (float)i / 31.0f;
    CHECK_EQ_INT(lmx_mlx_quantize_group(w, 4, 32, q, &s, &b, LMX_MLX_CPU), LMX_OK);
    CHECK(s < 0);
    CHECK_EQ_INT(b, 1);
    CHECK_NEAR(s, -0.1, 1e-6);
    CHECK_EQ_INT(q[31], 0);
    CHECK_EQ_INT(q[0], 15);
    for (int i = 0; i < 32; i++) CHECK(fabsf(s * q[i] + b - w[i]) <= fabsf(s) * 0.5f + 1e-6f);
    /* all zero: q0 == 0 → bias 0, scale -1e-7, every q 0 */
    memset(w, 0, sizeof w);
    CHECK_EQ_INT(lmx_mlx_quantize_group(w, 8, 32, q, &s, &b, LMX_MLX_CPU), LMX_OK);
    CHECK_EQ_INT(b, 0);
    CHECK_NEAR(s, -1e-7, 1e-12);
    for (int i = 0; i < 32; i++) CHECK_EQ_INT(q[i], 0);
    /* a constant group reproduces itself exactly */
    for (int i = 0; i < 32; i++) w[i] = 0.3f;
    CHECK_EQ_INT(lmx_mlx_quantize_group(w, 2, 32, q, &s, &b, LMX_MLX_CPU), LMX_OK);
    CHECK_EQ_INT(q[5], 0);
    CHECK(s * q[5] + b == 0.3f);
    /* rint is round-half-even: w = {0, 0.5, 1.5, 2.5 …, 3} with scale 1 */
    float h[32] = {0, 0.5f, 1.5f, 2.5f, 3};
    CHECK_EQ_INT(lmx_mlx_quantize_group(h, 2, 32, q, &s, &b, LMX_MLX_CPU), LMX_OK); /* min 0, max 3: scale 1, edge 3 → s=-1, b=3 */
    CHECK_EQ_INT(s, -1);
    CHECK_EQ_INT(b, 3);
    CHECK_EQ_INT(q[1], 2); /* (0.5-3)/-1 = 2.5 → 2 */
    CHECK_EQ_INT(q[2], 2); /* 1.5 → 2 */
    CHECK_EQ_INT(q[3], 0); /* 0.5 → 0 */
    /* bad input */
    w[3] = NAN;
    CHECK_EQ_INT(lmx_mlx_quantize_group(w, 4, 32, q, &s, &b, LMX_MLX_CPU), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_mlx_quantize_group(h, 7, 32, q, &s, &b, LMX_MLX_CPU), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_mlx_quantize_group(h, 4, 16, q, &s, &b, LMX_MLX_CPU), LMX_ERR_INVALID_ARGUMENT);
    CHECK(!lmx_mlx_quant_supported(1, 64) && !lmx_mlx_quant_supported(4, 256) && lmx_mlx_quant_supported(6, 128));
}

/* The Metal kernel's two differences: round() ties away from zero, and max starts at 0. */
static void test_metal_flavor(void) {
    uint8_t qc[32], qm[32];
    float sc, bc, sm, bm;
    float h[32] = {0, 0.5f, 1.5f, 2.5f, 3};
    CHECK_EQ_INT(lmx_mlx_quantize_group(h, 2, 32, qc, &sc, &bc, LMX_MLX_CPU), LMX_OK);
    CHECK_EQ_INT(lmx_mlx_quantize_group(h, 2, 32, qm, &sm, &bm, LMX_MLX_METAL), LMX_OK);
    CHECK(sc == sm && bc == bm); /* edge/scale = -3: no tie */
    CHECK_EQ_INT(qc[1], 2);      /* (0.5-3)/-1 = 2.5: even */
    CHECK_EQ_INT(qm[1], 3);      /* away from zero */
    CHECK_EQ_INT(qc[2], 2);      /* 1.5: both 2 */
    CHECK_EQ_INT(qm[2], 2);
    CHECK_EQ_INT(qc[3], 0);      /* 0.5 → 0 / 1 */
    CHECK_EQ_INT(qm[3], 1);
    /* a tie in q0 = round(edge/scale): min -1.25, max 0.25 at 2 bits → scale 1.5/3 = 0.5 exactly,
     * edge/scale = -2.5 → rint -2 (scale 0.625), round -3 (scale 0.41666…) */
    float t[32];
    for (int i = 0; i < 32; i++) t[i] = i == 0 ? -1.25f : 0.25f;
    CHECK_EQ_INT(lmx_mlx_quantize_group(t, 2, 32, qc, &sc, &bc, LMX_MLX_CPU), LMX_OK);
    CHECK_EQ_INT(lmx_mlx_quantize_group(t, 2, 32, qm, &sm, &bm, LMX_MLX_METAL), LMX_OK);
    CHECK(bc == -1.25f && bm == -1.25f);
    CHECK(sc == 0.625f);
    CHECK(sm == -1.25f / -3.0f);
    /* all negative: the CPU range is [min, max], Metal's [min, 0] */
    for (int i = 0; i < 32; i++) t[i] = -1.0f + 0.5f * (float)i / 31.0f;
    CHECK_EQ_INT(lmx_mlx_quantize_group(t, 4, 32, qc, &sc, &bc, LMX_MLX_CPU), LMX_OK);
    CHECK_EQ_INT(lmx_mlx_quantize_group(t, 4, 32, qm, &sm, &bm, LMX_MLX_METAL), LMX_OK);
    CHECK_EQ_INT(bc, -1);
    CHECK_EQ_INT(bm, -1);
    CHECK_NEAR(sc, 0.5 / 15, 1e-6);
    CHECK_NEAR(sm, 1.0 / 15, 1e-6);
    CHECK_EQ_INT(qc[31], 15);
    CHECK_EQ_INT(qm[31], 7); /* 0.5 / fl(1/15) = 7.4999998 → 7 */
    /* ordinary data: identical */
    int diff = 0;
    for (int rep = 0; rep < 200; rep++) {
        for (int i = 0; i < 32; i++) t[i] = nrand();
        lmx_mlx_quantize_group(t, 4, 32, qc, &sc, &bc, LMX_MLX_CPU);
        lmx_mlx_quantize_group(t, 4, 32, qm, &sm, &bm, LMX_MLX_METAL);
        diff += sc != sm || bc != bm || memcmp(qc, qm, 32) != 0;
    }
    CHECK_EQ_INT(diff, 0);
}

/* ---- round trip ---- */

static void test_roundtrip_bounds(void) {
    enum { N = 512 };
    static const int widths[6] = {2, 3, 4, 5, 6, 8};
    static const int groups[3] = {32, 64, 128};
    static const lmx_dtype sd[3] = {LMX_DTYPE_F32, LMX_DTYPE_BF16, LMX_DTYPE_F16};
    float w[N], d[N];
    uint8_t packed[N], scales[N / 32 * 4], biases[N / 32 * 4];
    double prev_rms = 1e9;
    for (int wi = 0; wi < 6; wi++) {
        int bits = widths[wi];
        double rms_g64 = 0;
        for (int gi = 0; gi < 3; gi++) {
            for (int di = 0; di < 3; di++) {
                int gs = groups[gi];
                for (int i = 0; i < N; i++) w[i] = 0.02f * nrand() + (i % 97 == 0 ? 0.2f : 0.0f);
                CHECK_EQ_INT(lmx_mlx_quantize_row(w, N, bits, gs, sd[di], packed, scales, biases, LMX_MLX_CPU), LMX_OK);
                CHECK_EQ_INT(lmx_mlx_dequantize_row(packed, scales, biases, sd[di], bits, gs, 0, N, d), LMX_OK);
                double worst = 0, se = 0;
                int nb = (1 << bits) - 1;
                for (int g = 0; g < N / gs; g++) {
                    float lo = INFINITY, hi = -INFINITY;
                    for (int k = 0; k < gs; k++) lo = fminf(lo, w[g * gs + k]), hi = fmaxf(hi, w[g * gs + k]);
                    /* the group's scale: rint(edge/step) = q0 can move it, by at most a factor
                     * q0/(q0 -+ 0.5) from the step (hi-lo)/nb; error <= |scale|/2 where no clipping,
                     * else the range not covered, nb*|scale| short of hi-lo; plus the storage rounding */
                    float sc, bc;
                    uint8_t qq[128];
                    CHECK_EQ_INT(lmx_mlx_quantize_group(w + g * gs, bits, gs, qq, &sc, &bc, LMX_MLX_CPU), LMX_OK);
                    double step = (hi - lo) / nb, a = fabs(sc);
                    CHECK(a >= step * 0.66 && a <= step * 2.0 + 1e-12); /* q0 >= 1 moves it at most x2 */
                    /* rounding to the storage dtype: relative error <= 2^-(mantissa bits + 1) */
                    double rel = sd[di] == LMX_DTYPE_F32 ? 1.0 / 16777216 : (sd[di] == LMX_DTYPE_BF16 ? 1.0 / 256 : 1.0 / 2048);
                    double clip = (hi - lo) - nb * a > 0 ? (hi - lo) - nb * a : 0;
                    double bound = (0.5 * a > clip ? 0.5 * a : clip) * 1.0001 + rel * (nb * a + fabs(bc)) + 1e-7;
                    for (int k = 0; k < gs; k++) {
                        double e = fabs((double)d[g * gs + k] - w[g * gs + k]);
                        se += e * e;
                        if (e / bound > worst) worst = e / bound;
                    }
                }
                CHECK_MSG(worst <= 1.0, "bits %d gs %d %s: error %.3f x bound", bits, gs, lmx_dtype_name(sd[di]), worst);
                if (gs == 64 && sd[di] == LMX_DTYPE_F32) rms_g64 = sqrt(se / N);
                /* partial dequantization equals the matching slice */
                float part[40];
                CHECK_EQ_INT(lmx_mlx_dequantize_row(packed, scales, biases, sd[di], bits, gs, 37, 40, part), LMX_OK);
                CHECK(memcmp(part, d + 37, sizeof part) == 0);
            }
        }
        CHECK_MSG(rms_g64 < prev_rms, "%d bits: rms %.3g not below %.3g", bits, rms_g64, prev_rms);
        prev_rms = rms_g64;
    }
    CHECK(prev_rms < 0.02 * 0.025); /* 8-bit: under 2.5% of the weight std (outliers widen some groups) */
    CHECK_EQ_INT(lmx_mlx_quantize_row(w, 100, 4, 64, LMX_DTYPE_BF16, packed, scales, biases, LMX_MLX_CPU), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_mlx_quantize_row(w, 128, 4, 64, LMX_DTYPE_I32, packed, scales, biases, LMX_MLX_CPU), LMX_ERR_INVALID_ARGUMENT);
}

static void test_matrix_threads(void) {
    enum { R = 37, C = 256 };
    static float w[R * C];
    static uint8_t p1[R * C], p2[R * C], s1[R * 16], s2[R * 16], b1[R * 16], b2[R * 16];
    for (int i = 0; i < R * C; i++) w[i] = nrand();
    CHECK_EQ_INT(lmx_mlx_quantize_matrix(w, R, C, 5, 32, LMX_DTYPE_BF16, p1, s1, b1, 4, LMX_MLX_CPU), LMX_OK);
    for (int r = 0; r < R; r++)
        CHECK_EQ_INT(lmx_mlx_quantize_row(w + r * C, C, 5, 32, LMX_DTYPE_BF16, p2 + r * C * 5 / 8, s2 + r * 16,
                                          b2 + r * 16, LMX_MLX_CPU),
                     LMX_OK);
    CHECK(memcmp(p1, p2, R * C * 5 / 8) == 0 && memcmp(s1, s2, R * 16) == 0 && memcmp(b1, b2, R * 16) == 0);
    w[5 * C + 3] = INFINITY;
    CHECK_EQ_INT(lmx_mlx_quantize_matrix(w, R, C, 5, 32, LMX_DTYPE_BF16, p1, s1, b1, 3, LMX_MLX_CPU), LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "row 5") != NULL);
}

static void test_view_checks(void) {
    uint8_t wq[2 * 32], sc[2 * 2 * 2], bi[2 * 2 * 2];
    memset(wq, 0x21, sizeof wq);
    for (int i = 0; i < 8; i += 2) sc[i] = 0, sc[i + 1] = 0x3f, bi[i] = 0, bi[i + 1] = 0xbf; /* bf16 0.5, -0.5 */
    lmx_tensor_view w = {"m.weight", "f", LMX_DTYPE_U32, 2, {2, 8}, 16, wq, 64};
    lmx_tensor_view s = {"m.scales", "f", LMX_DTYPE_BF16, 2, {2, 2}, 4, sc, 8};
    lmx_tensor_view b = {"m.biases", "f", LMX_DTYPE_BF16, 2, {2, 2}, 4, bi, 8};
    float out[64];
    CHECK_EQ_INT(lmx_mlx_dequantize_view(&w, &s, &b, 4, 32, 1, 0, 64, out), LMX_OK);
    CHECK_EQ_INT(out[0], 0.5f * 1 - 0.5f);
    CHECK_EQ_INT(out[1], 0.5f * 2 - 0.5f);
    CHECK_EQ_INT(lmx_mlx_dequantize_view(&w, &s, &b, 8, 32, 1, 0, 64, out), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "m.weight") != NULL);
    CHECK_EQ_INT(lmx_mlx_dequantize_view(&w, &s, &b, 4, 32, 2, 0, 1, out), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_mlx_dequantize_view(&w, &s, &b, 4, 32, 0, 60, 5, out), LMX_ERR_INVALID_ARGUMENT);
    b.dtype = LMX_DTYPE_F16;
    CHECK_EQ_INT(lmx_mlx_dequantize_view(&w, &s, &b, 4, 32, 0, 0, 1, out), LMX_ERR_INVALID_MODEL_FORMAT);
}

/* ---- golden fixtures ---- */

/* Re-quantizing MLX-quantized groups: a group whose q values reach 2^bits-1 was quantized with the
 * full range, so for bits <= 6 its dequantized values re-quantize to the identical bits, scale and
 * bias. Other groups legitimately differ: when rint(edge/scale) moved the scale (q0 rounding) the
 * largest q is below 2^bits-1, the new range is narrower and a different q0 results; at 8 bits
 * the bf16 rounding of the stored scale (relative 2^-9) times q up to 255 can flip a rounding. */
static int64_t g_groups, g_match, g_elems, g_deq_bad, g_full_lo, g_full_lo_match;

/* bits/group size of module `mod` from the config's "quantization" block (per-module overrides). */
static bool module_quant(const cJSON *q, const char *mod, int *bits, int *gs) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(q, mod);
    const cJSON *src = cJSON_IsObject(o) ? o : q;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(src, "bits"), *g = cJSON_GetObjectItemCaseSensitive(src, "group_size");
    if (!cJSON_IsNumber(b) || !cJSON_IsNumber(g)) return false;
    *bits = b->valueint;
    *gs = g->valueint;
    return true;
}

static void check_gold_model(const char *dir, const cJSON *quant) {
    lmx_weights *ws = NULL;
    CHECK_EQ_INT(lmx_weights_open(dir, true, &ws), LMX_OK);
    if (!ws) return;
    int64_t m_groups = 0, m_match = 0, m_full = 0, m_full_match = 0;
    for (size_t i = 0; i < lmx_weights_count(ws); i++) {
        const lmx_tensor_view *sv = lmx_weights_get(ws, i);
        size_t nl = strlen(sv->name);
        if (nl < 8 || strcmp(sv->name + nl - 7, ".scales")) continue;
        char mod[512], name[600];
        snprintf(mod, sizeof mod, "%.*s", (int)(nl - 7), sv->name);
        snprintf(name, sizeof name, "%s.weight", mod);
        const lmx_tensor_view *wv = lmx_weights_find(ws, name);
        snprintf(name, sizeof name, "%s.biases", mod);
        const lmx_tensor_view *bv = lmx_weights_find(ws, name);
        int bits, gs;
        CHECK(wv && bv && module_quant(quant, mod, &bits, &gs));
        if (!wv || !bv || !module_quant(quant, mod, &bits, &gs)) continue;
        int64_t rows = wv->shape[0], cols = wv->shape[1] * 32 / bits;
        size_t es = lmx_dtype_size(sv->dtype), rb = lmx_mlx_quant_row_bytes(cols, bits), sb = (size_t)(cols / gs) * es;
        float *deq = malloc((size_t)cols * sizeof *deq);
        uint8_t *rp = malloc(rb), *rs = malloc(sb), *rbias = malloc(sb);
        for (int64_t r = 0; r < rows; r++) {
            CHECK_EQ_INT(lmx_mlx_dequantize_view(wv, sv, bv, bits, gs, r, 0, cols, deq), LMX_OK);
            /* independent dequantization: reference unpack, scale * q + bias */
            const uint8_t *row = wv->data + (size_t)r * rb;
            for (int64_t k = 0; k < cols; k++) {
                float s, b;
                lmx_tensor_to_f32(sv, r * (cols / gs) + k / gs, 1, &s);
                lmx_tensor_to_f32(bv, r * (cols / gs) + k / gs, 1, &b);
                g_deq_bad += deq[k] != s * (float)ref_unpack(row, bits, k) + b;
                g_elems++;
            }
            /* re-quantizing the dequantized row: same packed bits, scales and biases? */
            CHECK_EQ_INT(lmx_mlx_quantize_row(deq, cols, bits, gs, sv->dtype, rp, rs, rbias, LMX_MLX_CPU), LMX_OK);
            size_t gb = (size_t)gs * bits / 8;
            for (int64_t g = 0; g < cols / gs; g++) {
                bool same = !memcmp(rp + g * gb, row + g * gb, gb) && !memcmp(rs + g * es, sv->data + r * sb + g * es, es) &&
                            !memcmp(rbias + g * es, bv->data + r * sb + g * es, es);
                unsigned qmax = 0;
                for (int k = 0; k < gs; k++) {
                    unsigned v = ref_unpack(row, bits, g * gs + k);
                    qmax = v > qmax ? v : qmax;
                }
                bool full = qmax == (1u << bits) - 1;
                m_full += full;
                m_full_match += full && same;
                if (full && bits <= 6) g_full_lo++, g_full_lo_match += same;
                m_groups++;
                m_match += same;
            }
        }
        free(deq);
        free(rp);
        free(rs);
        free(rbias);
    }
    fprintf(stderr, "  %s: %lld/%lld groups re-quantize identically; of those whose q reaches 2^bits-1: %lld/%lld\n", dir,
            (long long)m_match, (long long)m_groups, (long long)m_full_match, (long long)m_full);
    CHECK(m_groups > 0);
    g_groups += m_groups;
    g_match += m_match;
    lmx_weights_close(ws);
}

static void test_gold_fixtures(void) {
    const char *env = getenv("LMX_GOLD_FIXTURES");
    char base[1024];
    snprintf(base, sizeof base, "%s", env && *env ? env : LMX_SOURCE_DIR "/tests/fixtures/models");
    DIR *d = opendir(base);
    if (!d) {
        SKIP("no golden fixtures at %s (branch gold; or set LMX_GOLD_FIXTURES)", base);
        return;
    }
    struct dirent *de;
    int models = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char dir[2048], cfg[2100];
        snprintf(dir, sizeof dir, "%s/%s", base, de->d_name);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        char *text = NULL;
        size_t len = 0;
        if (lmx_fs_read_file(cfg, 1 << 20, &text, &len) != LMX_OK) continue;
        cJSON *c = lmx_json_parse(text, len, NULL);
        free(text);
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(c, "quantization");
        if (cJSON_IsObject(q)) {
            check_gold_model(dir, q);
            models++;
        }
        cJSON_Delete(c);
    }
    closedir(d);
    if (!models) {
        SKIP("no quantized golden fixtures under %s", base);
        return;
    }
    fprintf(stderr, "  gold: %d quantized models, %lld/%lld groups identical after re-quantization (%.2f%%); "
                    "dequantization mismatches %lld/%lld elements\n",
            models, (long long)g_match, (long long)g_groups, 100.0 * (double)g_match / (double)g_groups,
            (long long)g_deq_bad, (long long)g_elems);
    fprintf(stderr, "  gold: full-range groups with bits <= 6: %lld/%lld identical\n", (long long)g_full_lo_match,
            (long long)g_full_lo);
    CHECK_EQ_INT(g_deq_bad, 0);
    CHECK(g_full_lo > 1000);
    CHECK_EQ_INT(g_full_lo_match, g_full_lo);
    CHECK(g_match * 4 >= g_groups * 3);
}

int main(void) {
    RUN(test_pack_layout);
    RUN(test_unpack_random);
    RUN(test_group_rule);
    RUN(test_metal_flavor);
    RUN(test_roundtrip_bounds);
    RUN(test_matrix_threads);
    RUN(test_view_checks);
    RUN(test_gold_fixtures);
    return lmx_test_summary();
}
