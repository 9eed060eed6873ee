/* cpu_simd.c — scalar and AVX2 inner kernels (see cpu_simd.h). */
#include "backend/cpu/cpu_simd.h"

#include <string.h>

#include "backend/cpu/cpu_quant.h"

/* ---- scalar (reference) ---- */

static float dot_scalar(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static void dot4_scalar(const float *x, const float *w, size_t ws, int64_t n, float out[4]) {
    for (int i = 0; i < 4; i++) out[i] = dot_scalar(x, w + (size_t)i * ws, n);
}

static void axpy_scalar(float *y, const float *x, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void bf16_scalar(const uint8_t *src, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = lmx_cpu_bf16(src + 2 * i);
}

static void f16_scalar(const uint8_t *src, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = lmx_cpu_f16(src + 2 * i);
}

/* fused convert + dot with the same accumulation order as dot_scalar (so bitwise equal to it) */
static float dot_bf16_scalar(const float *x, const uint8_t *w, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += x[i + j] * lmx_cpu_bf16(w + 2 * (i + j));
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += x[i] * lmx_cpu_bf16(w + 2 * i);
    return r;
}

static float dot_f16_scalar(const float *x, const uint8_t *w, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += x[i + j] * lmx_cpu_f16(w + 2 * (i + j));
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += x[i] * lmx_cpu_f16(w + 2 * i);
    return r;
}

static void dot4_w16_scalar(const float *x, const uint8_t *w, size_t ws, int64_t n, bool bf16, float out[4]) {
    for (int i = 0; i < 4; i++) out[i] = bf16 ? dot_bf16_scalar(x, w + (size_t)i * ws, n) : dot_f16_scalar(x, w + (size_t)i * ws, n);
}

static float qdotf_scalar(const float *x, const float *q, int gs, int groups, const float *s, const float *b,
                          const float *xsum) {
    float acc = 0.0f;
    for (int g = 0; g < groups; g++) acc += s[g] * dot_scalar(x + (size_t)g * gs, q + (size_t)g * gs, gs) + b[g] * xsum[g];
    return acc;
}

static float qdot_scalar(const float *x, const uint8_t *row, int bits, int gs, int groups, const float *s,
                         const float *b, const float *xsum, float *tmp) {
    lmx_cpu_quant_decode_row(row, bits, (int64_t)gs * groups, tmp);
    return qdotf_scalar(x, tmp, gs, groups, s, b, xsum);
}

static const lmx_cpu_kernels scalar_set = {.name = "scalar", .dot = dot_scalar, .dot4 = dot4_scalar,
                                           .dot4_w16 = dot4_w16_scalar, .axpy = axpy_scalar,
                                           .bf16_row = bf16_scalar, .f16_row = f16_scalar,
                                           .quant_row = lmx_cpu_quant_decode_row, .qdot = qdot_scalar,
                                           .qdotf = qdotf_scalar};

/* ---- AVX2 + FMA + F16C ---- */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LMX_AVX2 __attribute__((target("avx2,fma,f16c")))

LMX_AVX2 static float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

LMX_AVX2 static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float r = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

LMX_AVX2 static void axpy_avx2(float *y, const float *x, float a, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

LMX_AVX2 static inline __m256 load_bf16x8(const uint8_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

LMX_AVX2 static inline __m256 load_f16x8(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* 8 16-bit weights (bf16, else f16) as fp32 */
LMX_AVX2 static inline __attribute__((always_inline)) __m256 load_w16x8(const uint8_t *p, bool bf16) {
    return bf16 ? load_bf16x8(p) : load_f16x8(p);
}

/* 8 weights of kind wk (0 f32, 1 bf16, 2 f16) from element i of the row at p, as fp32 (exact) */
LMX_AVX2 static inline __attribute__((always_inline)) __m256 load_wk8(const uint8_t *p, int64_t i, int wk) {
    return wk == 0 ? _mm256_loadu_ps((const float *)(const void *)p + i) : load_w16x8(p + 2 * i, wk == 1);
}
static inline float elem_wk(const uint8_t *p, int64_t i, int wk) {
    float f;
    if (wk == 0) memcpy(&f, p + 4 * i, 4);
    else f = wk == 1 ? lmx_cpu_bf16(p + 2 * i) : lmx_cpu_f16(p + 2 * i);
    return f;
}

/* The AVX2 matmul dot order, per row: chain a over elements [16j, 16j+8), chain b over [16j+8,
 * 16j+16), a left-over 8 into a, hsum(a + b), then the last n % 8 products added in order. Rows at
 * w + i*ws bytes, weights of kind wk (inlined with a constant wk). */
LMX_AVX2 static inline __attribute__((always_inline)) void dot4_wk_avx2(const float *x, const uint8_t *w, size_t ws,
                                                                        int64_t n, int wk, float out[4]) {
    const uint8_t *w0 = w, *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 xa = _mm256_loadu_ps(x + i), xb = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(xa, load_wk8(w0, i, wk), a0);
        b0 = _mm256_fmadd_ps(xb, load_wk8(w0, i + 8, wk), b0);
        a1 = _mm256_fmadd_ps(xa, load_wk8(w1, i, wk), a1);
        b1 = _mm256_fmadd_ps(xb, load_wk8(w1, i + 8, wk), b1);
        a2 = _mm256_fmadd_ps(xa, load_wk8(w2, i, wk), a2);
        b2 = _mm256_fmadd_ps(xb, load_wk8(w2, i + 8, wk), b2);
        a3 = _mm256_fmadd_ps(xa, load_wk8(w3, i, wk), a3);
        b3 = _mm256_fmadd_ps(xb, load_wk8(w3, i + 8, wk), b3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 xa = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(xa, load_wk8(w0, i, wk), a0);
        a1 = _mm256_fmadd_ps(xa, load_wk8(w1, i, wk), a1);
        a2 = _mm256_fmadd_ps(xa, load_wk8(w2, i, wk), a2);
        a3 = _mm256_fmadd_ps(xa, load_wk8(w3, i, wk), a3);
    }
    float r0 = hsum256(_mm256_add_ps(a0, b0)), r1 = hsum256(_mm256_add_ps(a1, b1));
    float r2 = hsum256(_mm256_add_ps(a2, b2)), r3 = hsum256(_mm256_add_ps(a3, b3));
    for (; i < n; i++) {
        r0 += x[i] * elem_wk(w0, i, wk);
        r1 += x[i] * elem_wk(w1, i, wk);
        r2 += x[i] * elem_wk(w2, i, wk);
        r3 += x[i] * elem_wk(w3, i, wk);
    }
    out[0] = r0;
    out[1] = r1;
    out[2] = r2;
    out[3] = r3;
}

LMX_AVX2 static void dot4_avx2(const float *x, const float *w, size_t ws, int64_t n, float out[4]) {
    dot4_wk_avx2(x, (const uint8_t *)w, ws * sizeof(float), n, 0, out);
}
LMX_AVX2 static void dot4_w16_avx2(const float *x, const uint8_t *w, size_t ws, int64_t n, bool bf16, float out[4]) {
    if (bf16) dot4_wk_avx2(x, w, ws, n, 1, out);
    else dot4_wk_avx2(x, w, ws, n, 2, out);
}

LMX_AVX2 static void bf16_avx2(const uint8_t *src, int64_t n, float *dst) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
    }
    for (; i < n; i++) dst[i] = lmx_cpu_bf16(src + 2 * i);
}

LMX_AVX2 static void f16_avx2(const uint8_t *src, int64_t n, float *dst) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i))));
    for (; i < n; i++) dst[i] = lmx_cpu_f16(src + 2 * i);
}

LMX_AVX2 static void quant_avx2(const uint8_t *row, int bits, int64_t n, float *q) {
    if (bits == 4) {
        const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), mask = _mm256_set1_epi32(15);
        for (int64_t k = 0; k < n; k += 8) {
            uint32_t w;
            memcpy(&w, row + k / 2, 4);
            __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), shifts), mask);
            _mm256_storeu_ps(q + k, _mm256_cvtepi32_ps(v));
        }
        return;
    }
    if (bits == 8) {
        for (int64_t k = 0; k < n; k += 8) {
            __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(row + k));
            _mm256_storeu_ps(q + k, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
        }
        return;
    }
    if (bits == 2) {
        const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), mask = _mm256_set1_epi32(3);
        for (int64_t k = 0; k < n; k += 8) {
            uint16_t w;
            memcpy(&w, row + k / 4, 2);
            __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), shifts), mask);
            _mm256_storeu_ps(q + k, _mm256_cvtepi32_ps(v));
        }
        return;
    }
    lmx_cpu_quant_decode_row(row, bits, n, q);
}

/* The AVX2 quantized-row order, per group: chain a over elements [16j, 16j+8), chain b over [16j+8,
 * 16j+16) of the group, total = fma(s_g, a + b, total); the group's last gs % 16 products summed
 * in order into r, tail += s_g·r + b_g·xsum_g; result hsum(total) + tail. q: decoded codes. */
LMX_AVX2 static float qdotf_avx2(const float *x, const float *q, int gs, int groups, const float *s, const float *b,
                                 const float *xsum) {
    __m256 total = _mm256_setzero_ps();
    float tail = 0.0f;
    const int gv = gs & ~15;
    for (int g = 0; g < groups; g++) {
        const float *xg = x + (size_t)g * gs, *qg = q + (size_t)g * gs;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int k = 0; k < gv; k += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xg + k), _mm256_loadu_ps(qg + k), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xg + k + 8), _mm256_loadu_ps(qg + k + 8), a1);
        }
        total = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), _mm256_add_ps(a0, a1), total);
        if (gv < gs) {
            float r = 0.0f;
            for (int k = gv; k < gs; k++) r += xg[k] * qg[k];
            tail += s[g] * r;
        }
        tail += b[g] * xsum[g];
    }
    return hsum256(total) + tail;
}

/* qdotf_avx2 for 4 tokens of one row: each code vector loaded once for the 4 tokens' chains (8
 * accumulators in registers; the per-token totals are folded once per group) */
LMX_AVX2 static void qdotf4_avx2(const float *x, size_t xst, const float *q, int gs, int groups, const float *s,
                                 const float *b, const float *xsum, float out[4]) {
    __m256 tot0 = _mm256_setzero_ps(), tot1 = _mm256_setzero_ps(), tot2 = _mm256_setzero_ps(), tot3 = _mm256_setzero_ps();
    float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const int gv = gs & ~15;
    const float *x0 = x, *x1 = x + xst, *x2 = x + 2 * xst, *x3 = x + 3 * xst;
    for (int g = 0; g < groups; g++) {
        const size_t o = (size_t)g * gs;
        const float *qg = q + o;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        for (int k = 0; k < gv; k += 16) {
            const __m256 q0 = _mm256_loadu_ps(qg + k), q1 = _mm256_loadu_ps(qg + k + 8);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + o + k), q0, a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + o + k + 8), q1, b0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + o + k), q0, a1);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + o + k + 8), q1, b1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + o + k), q0, a2);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + o + k + 8), q1, b2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + o + k), q0, a3);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + o + k + 8), q1, b3);
        }
        const __m256 sg = _mm256_set1_ps(s[g]);
        tot0 = _mm256_fmadd_ps(sg, _mm256_add_ps(a0, b0), tot0);
        tot1 = _mm256_fmadd_ps(sg, _mm256_add_ps(a1, b1), tot1);
        tot2 = _mm256_fmadd_ps(sg, _mm256_add_ps(a2, b2), tot2);
        tot3 = _mm256_fmadd_ps(sg, _mm256_add_ps(a3, b3), tot3);
        for (int t = 0; t < 4; t++) {
            const float *xg = x + (size_t)t * xst + o;
            if (gv < gs) {
                float r = 0.0f;
                for (int k = gv; k < gs; k++) r += xg[k] * qg[k];
                tail[t] += s[g] * r;
            }
            tail[t] += b[g] * xsum[(size_t)t * groups + g];
        }
    }
    out[0] = hsum256(tot0) + tail[0];
    out[1] = hsum256(tot1) + tail[1];
    out[2] = hsum256(tot2) + tail[2];
    out[3] = hsum256(tot3) + tail[3];
}

/* decode the row's codes, then qdotf_avx2 (4/8-bit weights in groups of 32/64/128 take the repacked
 * tiles of cpu_qtile.c instead) */
LMX_AVX2 static float qdot_avx2(const float *x, const uint8_t *row, int bits, int gs, int groups, const float *s,
                                const float *b, const float *xsum, float *tmp) {
    quant_avx2(row, bits, (int64_t)gs * groups, tmp);
    return qdotf_avx2(x, tmp, gs, groups, s, b, xsum);
}

static const lmx_cpu_kernels avx2_set = {.name = "avx2", .dot = dot_avx2, .dot4 = dot4_avx2,
                                         .dot4_w16 = dot4_w16_avx2, .axpy = axpy_avx2, .bf16_row = bf16_avx2,
                                         .f16_row = f16_avx2, .quant_row = quant_avx2, .qdot = qdot_avx2,
                                         .qdotf = qdotf_avx2, .qdotf4 = qdotf4_avx2};

static bool have_avx2(void);

/* ---- AVX-512 F/BW/VL/DQ: the 16-bit and fp32 dots 16 lanes wide (quantized rows: the AVX2 fused
 * decode for the bit widths the repacked tiles of cpu_qtile.c do not cover) ---- */
#define LMX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

LMX_AVX512 static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* 4 tokens × 4 rows: 16 accumulators, each x and w vector loaded once per step for 4 FMAs. The
 * AVX-512 matmul dot order, per (token, row): one fp32 chain over 16-lane steps, the last partial
 * step masked, then _mm512_reduce_add_ps. */
LMX_AVX512 static void dot4x4_avx512(const float *x, size_t xs, const float *w, int64_t n, float out[16]) {
    __m512 a[4][4];
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 4; i++) a[t][i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; k += 16) {
        const __mmask16 m = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1u);
        __m512 wv[4];
        for (int i = 0; i < 4; i++) wv[i] = _mm512_maskz_loadu_ps(m, w + (size_t)i * (size_t)n + k);
        for (int t = 0; t < 4; t++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)t * xs + k);
            for (int i = 0; i < 4; i++) a[t][i] = _mm512_fmadd_ps(xv, wv[i], a[t][i]);
        }
    }
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 4; i++) out[t * 4 + i] = _mm512_reduce_add_ps(a[t][i]);
}

LMX_AVX512 static void axpy_avx512(float *y, const float *x, float a, int64_t n) {
    __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

LMX_AVX512 static inline __attribute__((always_inline)) __m512 load_w16x16(const uint8_t *p, __mmask16 m, bool bf16) {
    __m256i h = _mm256_maskz_loadu_epi16(m, (const void *)p);
    return bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) : _mm512_cvtph_ps(h);
}

/* 16 weights of kind wk (0 f32, 1 bf16, 2 f16) from element i of the row at p (lanes off m zero) */
LMX_AVX512 static inline __attribute__((always_inline)) __m512 load_wk16(const uint8_t *p, int64_t i, __mmask16 m,
                                                                         int wk) {
    return wk == 0 ? _mm512_maskz_loadu_ps(m, (const float *)(const void *)p + i) : load_w16x16(p + 2 * i, m, wk == 1);
}

/* dot4x4's order for 4 rows at w + i*ws bytes of kind wk, one token (decode: 4 independent chains) */
LMX_AVX512 static inline __attribute__((always_inline)) void dot4_wk_avx512(const float *x, const uint8_t *w,
                                                                            size_t ws, int64_t n, int wk,
                                                                            float out[4]) {
    const uint8_t *w0 = w, *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    const __mmask16 all = 0xffff;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 xv = _mm512_loadu_ps(x + i);
        a0 = _mm512_fmadd_ps(xv, load_wk16(w0, i, all, wk), a0);
        a1 = _mm512_fmadd_ps(xv, load_wk16(w1, i, all, wk), a1);
        a2 = _mm512_fmadd_ps(xv, load_wk16(w2, i, all, wk), a2);
        a3 = _mm512_fmadd_ps(xv, load_wk16(w3, i, all, wk), a3);
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        a0 = _mm512_fmadd_ps(xv, load_wk16(w0, i, m, wk), a0);
        a1 = _mm512_fmadd_ps(xv, load_wk16(w1, i, m, wk), a1);
        a2 = _mm512_fmadd_ps(xv, load_wk16(w2, i, m, wk), a2);
        a3 = _mm512_fmadd_ps(xv, load_wk16(w3, i, m, wk), a3);
    }
    out[0] = _mm512_reduce_add_ps(a0);
    out[1] = _mm512_reduce_add_ps(a1);
    out[2] = _mm512_reduce_add_ps(a2);
    out[3] = _mm512_reduce_add_ps(a3);
}

LMX_AVX512 static void dot4_avx512(const float *x, const float *w, size_t ws, int64_t n, float out[4]) {
    dot4_wk_avx512(x, (const uint8_t *)w, ws * sizeof(float), n, 0, out);
}
LMX_AVX512 static void dot4_w16_avx512(const float *x, const uint8_t *w, size_t ws, int64_t n, bool bf16,
                                       float out[4]) {
    if (bf16) dot4_wk_avx512(x, w, ws, n, 1, out);
    else dot4_wk_avx512(x, w, ws, n, 2, out);
}

LMX_AVX512 static void bf16_avx512(const uint8_t *src, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, load_w16x16(src + 2 * i, m, true));
    }
}

LMX_AVX512 static void f16_avx512(const uint8_t *src, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, load_w16x16(src + 2 * i, m, false));
    }
}

static const lmx_cpu_kernels avx512_set = {.name = "avx512", .dot = dot_avx512, .dot4 = dot4_avx512,
                                           .dot4x4 = dot4x4_avx512, .dot4_w16 = dot4_w16_avx512,
                                           .axpy = axpy_avx512, .bf16_row = bf16_avx512, .f16_row = f16_avx512,
                                           .quant_row = quant_avx2, .qdot = qdot_avx2, .qdotf = qdotf_avx2,
                                           .qdotf4 = qdotf4_avx2};

/* ---- AVX512-BF16: bf16 weights × activations split in two bf16 parts (VDPBF16PS: per fp32 lane,
 * the two products of a bf16 pair, exact, added into the lane; the weights need no conversion).
 * Activations rounded to bf16 alone (2^-8) fail the golden tolerance; hi + lo (2^-16) do not. ---- */
#define LMX_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

/* x → hi = bf16(x), lo = bf16(x − hi), both rounded to nearest even: hi + lo is x to ~2^-16 relative */
LMX_AVX512BF16 static void bf16_split_avx512(const float *x, int64_t n, uint16_t *hi, uint16_t *lo) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
        const __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        _mm256_mask_storeu_epi16(hi + i, m, h);
        _mm256_mask_storeu_epi16(lo + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, hf)));
    }
}

/* acc += lo·w, then acc += hi·w (one step of a chain) */
#define BF16_STEP(acc, xl, xh, wv)                                                                  \
    acc = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc, (__m512bh)(xl), (__m512bh)(wv)), (__m512bh)(xh), (__m512bh)(wv))

/* per (row, token): two fp32 chains of VDPBF16PS, one over the even 32-element steps and one over
 * the odd (the last step masked), each step adding lo·w then hi·w, then reduce_add(even + odd);
 * nt <= 2 tokens (a constant after inlining) share each weight load: 16 accumulators, enough
 * chains to hide the latency in decode */
LMX_AVX512BF16 static inline __attribute__((always_inline)) void dot4x2_bf16_body(
    const uint16_t *hi, const uint16_t *lo, size_t xs, int nt, const uint8_t *w, size_t ws, int64_t n, float *out) {
    __m512 a[2][4], b[2][4];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < nt; t++)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) a[t][i] = b[t][i] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= n; k += 64) {
        __m512i wa[4], wb[4];
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) {
            wa[i] = _mm512_loadu_si512((const void *)(w + (size_t)i * ws + 2 * (size_t)k));
            wb[i] = _mm512_loadu_si512((const void *)(w + (size_t)i * ws + 2 * (size_t)k + 64));
        }
        _Pragma("GCC unroll 4")
        for (int t = 0; t < nt; t++) {
            const size_t o = (size_t)t * xs + (size_t)k;
            const __m512i ha = _mm512_loadu_si512((const void *)(hi + o)), la = _mm512_loadu_si512((const void *)(lo + o));
            const __m512i hc = _mm512_loadu_si512((const void *)(hi + o + 32)), lc = _mm512_loadu_si512((const void *)(lo + o + 32));
            _Pragma("GCC unroll 4")
            for (int i = 0; i < 4; i++) {
                BF16_STEP(a[t][i], la, ha, wa[i]);
                BF16_STEP(b[t][i], lc, hc, wb[i]);
            }
        }
    }
    for (int half = 0; k < n; k += 32, half++) {
        const __mmask32 m = n - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (n - k)) - 1u);
        _Pragma("GCC unroll 4")
        for (int t = 0; t < nt; t++) {
            const __m512i xh = _mm512_maskz_loadu_epi16(m, hi + (size_t)t * xs + k);
            const __m512i xl = _mm512_maskz_loadu_epi16(m, lo + (size_t)t * xs + k);
            _Pragma("GCC unroll 4")
            for (int i = 0; i < 4; i++) {
                const __m512i wv = _mm512_maskz_loadu_epi16(m, w + (size_t)i * ws + 2 * (size_t)k);
                if (half == 0) BF16_STEP(a[t][i], xl, xh, wv);
                else BF16_STEP(b[t][i], xl, xh, wv);
            }
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < nt; t++)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) out[t * 4 + i] = _mm512_reduce_add_ps(_mm512_add_ps(a[t][i], b[t][i]));
}
#undef BF16_STEP

LMX_AVX512BF16 static void dot4xn_bf16_avx512(const uint16_t *hi, const uint16_t *lo, size_t xs, int nt,
                                              const uint8_t *w, size_t ws, int64_t n, float out[16]) {
    for (int t = 0; t < nt; t += 2) {
        if (nt - t >= 2) dot4x2_bf16_body(hi + (size_t)t * xs, lo + (size_t)t * xs, xs, 2, w, ws, n, out + 4 * t);
        else dot4x2_bf16_body(hi + (size_t)t * xs, lo + (size_t)t * xs, xs, 1, w, ws, n, out + 4 * t);
    }
}

#include <cpuid.h>

/* AVX-512 F (leaf 7 ebx 16), DQ (17), BW (30), VL (31), VNNI (ecx 11), and the OS saving the
 * opmask/ZMM state (XCR0 bits 5..7) on top of AVX2. */
static bool have_avx512(void) {
    if (!have_avx2()) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6u) != 0xe6u) return false;
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned needb = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
    return (b & needb) == needb && (c & (1u << 11)) != 0;
}

/* AVX-VNNI (the VEX ymm VPDPWSSD): leaf 7 subleaf 1, eax bit 4, on top of AVX2 */
static bool have_avxvnni(void) {
    if (!have_avx2() || __get_cpuid_max(0, NULL) < 7) return false;
    unsigned a, b, c, d;
    __cpuid_count(7, 1, a, b, c, d);
    return (a & (1u << 4)) != 0;
}

/* AVX512-BF16: leaf 7 subleaf 1, eax bit 5 */
static bool have_avx512_bf16(void) {
    unsigned a, b, c, d;
    __cpuid_count(7, 1, a, b, c, d);
    return (a & (1u << 5)) != 0;
}

/* CPUID: AVX + FMA + F16C + OSXSAVE (leaf 1 ecx), AVX2 (leaf 7 ebx), and the OS saving YMM state
 * (XCR0 bits 1 and 2). */
static bool have_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned need1 = (1u << 12) | (1u << 27) | (1u << 28) | (1u << 29);
    if ((c & need1) != need1) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6u) != 6u) return false;
    if (__get_cpuid_max(0, NULL) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 5)) != 0;
}
#else
#define avx2_set scalar_set
#define avx512_set scalar_set
static bool have_avx2(void) { return false; }
static bool have_avx512(void) { return false; }
static bool have_avxvnni(void) { return false; }
static bool have_avx512_bf16(void) { return false; }
#define bf16_split_avx512 NULL
#define dot4xn_bf16_avx512 NULL
#endif

int lmx_cpu_kernels_select(lmx_cpu_kernels *k, int max_level) {
    if (max_level >= 3 && have_avx512()) {
        *k = avx512_set;
        if (have_avx512_bf16()) {
            k->bf16_split = bf16_split_avx512;
            k->dot4xn_bf16 = dot4xn_bf16_avx512;
        }
        return 3;
    }
    if (max_level >= 2 && have_avxvnni()) { /* the AVX2 set; the repacked 4/8-bit tiles use VPDPWSSD ymm */
        *k = avx2_set;
        k->name = "avxvnni";
        return 2;
    }
    if (max_level >= 1 && have_avx2()) {
        *k = avx2_set;
        return 1;
    }
    *k = scalar_set;
    return 0;
}
