/* test_dtype.c — dtype names/sizes, and half-precision conversion checked exhaustively over all
 * 65536 bit patterns against reference formulas, plus round-to-nearest-even at every midpoint. */
#include "lmx_test.h"
#include "formats/safetensors.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* reference decoders written from the IEEE 754 definitions, in double */
static double ref_f16(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static double ref_bf16(uint16_t h) {
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static void test_names(void) {
    for (int i = 0; i < LMX_DTYPE_COUNT; i++) {
        lmx_dtype t;
        CHECK(lmx_dtype_from_name(lmx_dtype_name((lmx_dtype)i), &t) && t == (lmx_dtype)i);
        CHECK(lmx_dtype_size((lmx_dtype)i) >= 1 && lmx_dtype_size((lmx_dtype)i) <= 8);
    }
    CHECK_EQ_INT(lmx_dtype_size(LMX_DTYPE_BF16), 2);
    CHECK_EQ_INT(lmx_dtype_size(LMX_DTYPE_U32), 4);
    CHECK_EQ_INT(lmx_dtype_size(LMX_DTYPE_F64), 8);
    CHECK_EQ_STR(lmx_dtype_name(LMX_DTYPE_COUNT), "?");
    CHECK_EQ_STR(lmx_dtype_name((lmx_dtype)-1), "?");
    CHECK_EQ_INT(lmx_dtype_size(LMX_DTYPE_COUNT), 0);
    const char *unknown[] = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "C64", "bf16", "", "F32 "};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) CHECK(!lmx_dtype_from_name(unknown[i], NULL));
    CHECK(lmx_dtype_is_float(LMX_DTYPE_BF16) && !lmx_dtype_is_float(LMX_DTYPE_U32));
}

static void test_decode_exhaustive(void) {
    int bad16 = 0, badbf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        bool neg = h >> 15;
        double r = ref_f16((uint16_t)h);
        float f = lmx_f16_to_f32((uint16_t)h);
        if (isnan(r) ? !isnan(f) || (bits(f) >> 13 & 0x3ff) != (h & 0x3ff) : (double)f != r) bad16++;
        if (!signbit(f) != !neg) bad16++;
        r = ref_bf16((uint16_t)h);
        f = lmx_bf16_to_f32((uint16_t)h);
        if (isnan(r) ? !isnan(f) : (double)f != r) badbf++;
        if (!signbit(f) != !neg) badbf++;
    }
    CHECK_EQ_INT(bad16, 0);
    CHECK_EQ_INT(badbf, 0);
}

/* every pattern survives a round trip; NaNs stay NaN with their sign */
static void test_roundtrip_exhaustive(void) {
    int bad16 = 0, badbf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        bool nan16 = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        uint16_t r = lmx_f32_to_f16(lmx_f16_to_f32((uint16_t)h));
        if (nan16 ? !((r & 0x7c00) == 0x7c00 && (r & 0x3ff) && (r & 0x8000) == (h & 0x8000)) : r != h) bad16++;
        bool nanbf = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        r = lmx_f32_to_bf16(lmx_bf16_to_f32((uint16_t)h));
        if (nanbf ? !((r & 0x7f80) == 0x7f80 && (r & 0x7f) && (r & 0x8000) == (h & 0x8000)) : r != h) badbf++;
    }
    CHECK_EQ_INT(bad16, 0);
    CHECK_EQ_INT(badbf, 0);
    /* a NaN whose payload sits only in the low bits must not turn into Inf */
    float nan_low = from_bits(0x7f800001u);
    CHECK((lmx_f32_to_bf16(nan_low) & 0x7f) != 0 && (lmx_f32_to_bf16(nan_low) & 0x7f80) == 0x7f80);
    CHECK((lmx_f32_to_f16(nan_low) & 0x3ff) != 0 && (lmx_f32_to_f16(nan_low) & 0x7c00) == 0x7c00);
    CHECK(lmx_f32_to_f16(-nan_low) & 0x8000);
}

/* Between every two adjacent finite values of the same sign: the exact midpoint goes to the even
 * one, one f32 ulp either side goes to the nearer one. */
static void test_rounding_midpoints(void) {
    int bad16 = 0, badbf = 0;
    for (int sign = 0; sign < 2; sign++) {
        uint16_t sb = sign ? 0x8000 : 0;
        for (uint16_t h = 0; h < 0x7c00; h++) { /* f16: h and h+1 (h+1 = 0x7c00 is Inf) */
            double a = ref_f16(h), b = ref_f16((uint16_t)(h + 1));
            if (isinf(b)) b = 65536.0; /* the value Inf stands in for when rounding */
            float mid = (float)((a + b) / 2); /* exact in f32 */
            if ((double)mid != (a + b) / 2) bad16++;
            float m = sign ? -mid : mid;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : h;
            if (lmx_f32_to_f16(m) != (uint16_t)(sb | even)) bad16++;
            if (lmx_f32_to_f16(nextafterf(m, 0.f)) != (uint16_t)(sb | h)) bad16++;
            if (lmx_f32_to_f16(nextafterf(m, sign ? -INFINITY : INFINITY)) != (uint16_t)(sb | (h + 1))) bad16++;
        }
        for (uint16_t h = 0; h < 0x7f80; h++) { /* bf16 */
            double a = ref_bf16(h), b = ref_bf16((uint16_t)(h + 1));
            if (isinf(b)) b = ldexp(1.0, 128);
            float mid = (float)((a + b) / 2);
            if ((double)mid != (a + b) / 2) badbf++;
            float m = sign ? -mid : mid;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : h;
            if (lmx_f32_to_bf16(m) != (uint16_t)(sb | even)) badbf++;
            if (lmx_f32_to_bf16(nextafterf(m, 0.f)) != (uint16_t)(sb | h)) badbf++;
            if (lmx_f32_to_bf16(nextafterf(m, sign ? -INFINITY : INFINITY)) != (uint16_t)(sb | (h + 1))) badbf++;
        }
    }
    CHECK_EQ_INT(bad16, 0);
    CHECK_EQ_INT(badbf, 0);
    CHECK_EQ_INT(lmx_f32_to_f16(65520.f), 0x7c00);
    CHECK_EQ_INT(lmx_f32_to_f16(65519.996f), 0x7bff);
    CHECK_EQ_INT(lmx_f32_to_f16(1e10f), 0x7c00);
    CHECK_EQ_INT(lmx_f32_to_f16(-INFINITY), 0xfc00);
    CHECK_EQ_INT(lmx_f32_to_f16(FLT_MIN), 0);
    CHECK_EQ_INT(lmx_f32_to_f16(-0.f), 0x8000);
    CHECK_EQ_INT(lmx_f32_to_bf16(FLT_MAX), 0x7f80);
    CHECK_EQ_INT(lmx_f32_to_bf16(from_bits(1)), 0);            /* smallest f32 subnormal */
    CHECK_EQ_INT(lmx_f32_to_bf16(from_bits(0x00008000u)), 0);  /* tie to even 0 */
    CHECK_EQ_INT(lmx_f32_to_bf16(from_bits(0x00018000u)), 2);  /* tie to even 2 */
}

/* A sample of all f32 patterns: the result is a nearest representable value, ties to even. */
static void test_rounding_sampled(void) {
    int bad = 0;
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 400000; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        float f = from_bits((uint32_t)(state >> 32));
        if (isnan(f)) continue;
        for (int kind = 0; kind < 2; kind++) {
            uint16_t r = kind ? lmx_f32_to_bf16(f) : lmx_f32_to_f16(f);
            double (*ref)(uint16_t) = kind ? ref_bf16 : ref_f16;
            uint16_t inf = kind ? 0x7f80 : 0x7c00;
            double maxv = ref((uint16_t)(inf - 1)), ulp_top = maxv - ref((uint16_t)(inf - 2));
            double x = fabs((double)f), got = fabs(ref(r));
            if ((r & 0x8000) != (bits(f) >> 16 & 0x8000)) {
                bad++;
                continue;
            }
            if (x >= maxv + ulp_top / 2) { /* beyond the rounding boundary: Inf */
                if ((r & 0x7fff) != inf) bad++;
                continue;
            }
            uint16_t m = r & 0x7fff;
            double lo = m ? ref((uint16_t)(m - 1)) : -1, hi = ref((uint16_t)(m + 1));
            double err = fabs(x - got);
            if (fabs(x - lo) < err || fabs(x - hi) < err) bad++;
            if ((fabs(x - lo) == err || fabs(x - hi) == err) && (m & 1)) bad++; /* tie went odd */
        }
    }
    CHECK_EQ_INT(bad, 0);
#ifdef __FLT16_MAX__
    /* cross-check with the compiler's own conversion where it has one */
    int diff = 0;
    for (uint32_t u = 0; u < 0xffffffffu - 4093; u += 4093) {
        float f = from_bits(u);
        if (isnan(f)) continue;
        _Float16 h = (_Float16)f;
        uint16_t hb;
        memcpy(&hb, &h, 2);
        if (hb != lmx_f32_to_f16(f)) diff++;
    }
    CHECK_EQ_INT(diff, 0);
#endif
}

static void test_tensor_to_f32(void) {
    uint8_t raw[1 + 8]; /* two BF16 and one F16 pair at an odd address */
    uint16_t v[4] = {0x3f80, 0xc040, 0x3c00, 0x0400};
    memcpy(raw + 1, v, 8);
    lmx_tensor_view t = {.name = "t.weight", .file = "f.safetensors", .dtype = LMX_DTYPE_BF16, .ndim = 1,
                         .shape = {4}, .numel = 4, .data = raw + 1, .nbytes = 8};
    float out[4] = {0};
    CHECK(lmx_tensor_to_f32(&t, 0, 2, out) == LMX_OK && out[0] == 1.f && out[1] == -3.f);
    CHECK(lmx_tensor_to_f32(&t, 4, 0, out) == LMX_OK);
    CHECK(lmx_tensor_to_f32(&t, 3, 2, out) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "f.safetensors") && strstr(lmx_last_error_detail(), "t.weight"));
    CHECK(lmx_tensor_to_f32(&t, -1, 1, out) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_tensor_to_f32(&t, 0, INT64_MAX, out) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_tensor_to_f32(&t, INT64_MAX, 1, out) == LMX_ERR_INVALID_ARGUMENT);
    t.dtype = LMX_DTYPE_F16;
    CHECK(lmx_tensor_to_f32(&t, 2, 2, out) == LMX_OK && out[0] == 1.f && out[1] == ldexpf(1.f, -14));
    t.dtype = LMX_DTYPE_F32, t.numel = 2;
    CHECK(lmx_tensor_to_f32(&t, 1, 1, out) == LMX_OK);
    CHECK(bits(out[0]) == ((uint32_t)v[3] << 16 | v[2]));
    t.dtype = LMX_DTYPE_U32;
    CHECK(lmx_tensor_to_f32(&t, 0, 1, out) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "U32") != NULL);
    t.dtype = LMX_DTYPE_F32, t.numel = 3; /* a view lying about its size */
    CHECK(lmx_tensor_to_f32(&t, 0, 1, out) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_tensor_to_f32(NULL, 0, 1, out) == LMX_ERR_INVALID_ARGUMENT);
}

int main(void) {
    RUN(test_names);
    RUN(test_decode_exhaustive);
    RUN(test_roundtrip_exhaustive);
    RUN(test_rounding_midpoints);
    RUN(test_rounding_sampled);
    RUN(test_tensor_to_f32);
    return lmx_test_summary();
}
