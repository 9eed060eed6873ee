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

static void dot4_scalar(const float *x, const float *w, int64_t n, float out[4]) {
    for (int i = 0; i < 4; i++) out[i] = dot_scalar(x, w + (size_t)i * (size_t)n, n);
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

static float qdot_scalar(const float *x, const uint8_t *row, int bits, int gs, int groups, const float *s,
                         const float *b, const float *xsum, float *tmp) {
    lmx_cpu_quant_decode_row(row, bits, (int64_t)gs * groups, tmp);
    float acc = 0.0f;
    for (int g = 0; g < groups; g++) acc += s[g] * dot_scalar(x + (size_t)g * gs, tmp + (size_t)g * gs, gs) + b[g] * xsum[g];
    return acc;
}

static const lmx_cpu_kernels scalar_set = {"scalar",       dot_scalar,     dot4_scalar, axpy_scalar, NULL,
                                           dot_bf16_scalar, dot_f16_scalar, bf16_scalar, f16_scalar,
                                           lmx_cpu_quant_decode_row, qdot_scalar};

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

LMX_AVX2 static void dot4_avx2(const float *x, const float *w, int64_t n, float out[4]) {
    const float *w0 = w, *w1 = w + n, *w2 = w + 2 * n, *w3 = w + 3 * n;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 xa = _mm256_loadu_ps(x + i), xb = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w0 + i), a0);
        b0 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w0 + i + 8), b0);
        a1 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w1 + i), a1);
        b1 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w1 + i + 8), b1);
        a2 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w2 + i), a2);
        b2 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w2 + i + 8), b2);
        a3 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w3 + i), a3);
        b3 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w3 + i + 8), b3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 xa = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w0 + i), a0);
        a1 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w1 + i), a1);
        a2 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w2 + i), a2);
        a3 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w3 + i), a3);
    }
    float r0 = hsum256(_mm256_add_ps(a0, b0)), r1 = hsum256(_mm256_add_ps(a1, b1));
    float r2 = hsum256(_mm256_add_ps(a2, b2)), r3 = hsum256(_mm256_add_ps(a3, b3));
    for (; i < n; i++) {
        r0 += x[i] * w0[i];
        r1 += x[i] * w1[i];
        r2 += x[i] * w2[i];
        r3 += x[i] * w3[i];
    }
    out[0] = r0;
    out[1] = r1;
    out[2] = r2;
    out[3] = r3;
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

/* x · w for n 16-bit weights (bf16, else f16); the same accumulation pattern as dot_avx2 (4
 * accumulators over 32, then 8, then scalar). Inlined with a constant `bf16` by the two below. */
LMX_AVX2 static inline __attribute__((always_inline)) float dot_w16_avx2(const float *x, const uint8_t *w, int64_t n,
                                                                         bool bf16) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_w16x8(w + 2 * i, bf16), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load_w16x8(w + 2 * (i + 8), bf16), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load_w16x8(w + 2 * (i + 16), bf16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load_w16x8(w + 2 * (i + 24), bf16), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_w16x8(w + 2 * i, bf16), s0);
    float r = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) r += x[i] * (bf16 ? lmx_cpu_bf16(w + 2 * i) : lmx_cpu_f16(w + 2 * i));
    return r;
}

LMX_AVX2 static float dot_bf16_avx2(const float *x, const uint8_t *w, int64_t n) { return dot_w16_avx2(x, w, n, true); }
LMX_AVX2 static float dot_f16_avx2(const float *x, const uint8_t *w, int64_t n) { return dot_w16_avx2(x, w, n, false); }

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

/* fused decode + dot for 4 and 8 bits (codes converted in registers, one accumulator per group) */
LMX_AVX2 static float qdot_avx2(const float *x, const uint8_t *row, int bits, int gs, int groups, const float *s,
                                const float *b, const float *xsum, float *tmp) {
    if (bits != 4 && bits != 8) {
        quant_avx2(row, bits, (int64_t)gs * groups, tmp);
        float acc = 0.0f;
        for (int g = 0; g < groups; g++)
            acc += s[g] * dot_avx2(x + (size_t)g * gs, tmp + (size_t)g * gs, gs) + b[g] * xsum[g];
        return acc;
    }
    __m256 total = _mm256_setzero_ps();
    float tail = 0.0f;
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), mask = _mm256_set1_epi32(15);
    for (int g = 0; g < groups; g++) {
        const float *xg = x + (size_t)g * gs;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        if (bits == 4) {
            const uint8_t *rg = row + (size_t)g * gs / 2;
            for (int k = 0; k < gs; k += 16) {
                uint32_t w0, w1;
                memcpy(&w0, rg + k / 2, 4);
                memcpy(&w1, rg + k / 2 + 4, 4);
                __m256 q0 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w0), shifts), mask));
                __m256 q1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w1), shifts), mask));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xg + k), q0, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xg + k + 8), q1, a1);
            }
        } else {
            const uint8_t *rg = row + (size_t)g * gs;
            for (int k = 0; k < gs; k += 16) {
                __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(rg + k))));
                __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(rg + k + 8))));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xg + k), q0, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xg + k + 8), q1, a1);
            }
        }
        total = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), _mm256_add_ps(a0, a1), total);
        tail += b[g] * xsum[g];
    }
    return hsum256(total) + tail;
}

static const lmx_cpu_kernels avx2_set = {"avx2",        dot_avx2,     dot4_avx2, axpy_avx2, NULL, dot_bf16_avx2,
                                         dot_f16_avx2,  bf16_avx2,    f16_avx2,  quant_avx2, qdot_avx2};

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

/* 4 rows × 1 x; each row's accumulation is independent of the others */
LMX_AVX512 static void dot4_avx512(const float *x, const float *w, int64_t n, float out[4]) {
    const float *w0 = w, *w1 = w + n, *w2 = w + 2 * n, *w3 = w + 3 * n;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 xa = _mm512_loadu_ps(x + i), xb = _mm512_loadu_ps(x + i + 16);
        a0 = _mm512_fmadd_ps(xa, _mm512_loadu_ps(w0 + i), a0);
        b0 = _mm512_fmadd_ps(xb, _mm512_loadu_ps(w0 + i + 16), b0);
        a1 = _mm512_fmadd_ps(xa, _mm512_loadu_ps(w1 + i), a1);
        b1 = _mm512_fmadd_ps(xb, _mm512_loadu_ps(w1 + i + 16), b1);
        a2 = _mm512_fmadd_ps(xa, _mm512_loadu_ps(w2 + i), a2);
        b2 = _mm512_fmadd_ps(xb, _mm512_loadu_ps(w2 + i + 16), b2);
        a3 = _mm512_fmadd_ps(xa, _mm512_loadu_ps(w3 + i), a3);
        b3 = _mm512_fmadd_ps(xb, _mm512_loadu_ps(w3 + i + 16), b3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        __m512 xa = _mm512_maskz_loadu_ps(m, x + i);
        a0 = _mm512_fmadd_ps(xa, _mm512_maskz_loadu_ps(m, w0 + i), a0);
        a1 = _mm512_fmadd_ps(xa, _mm512_maskz_loadu_ps(m, w1 + i), a1);
        a2 = _mm512_fmadd_ps(xa, _mm512_maskz_loadu_ps(m, w2 + i), a2);
        a3 = _mm512_fmadd_ps(xa, _mm512_maskz_loadu_ps(m, w3 + i), a3);
    }
    out[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    out[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    out[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    out[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
}

/* 4 tokens × 4 rows: 16 accumulators, each x and w vector loaded once per step for 4 FMAs */
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

/* x · w for n 16-bit weights converted in registers (exact fp32 products, fp32 accumulation) */
LMX_AVX512 static inline __attribute__((always_inline)) float dot_w16_avx512(const float *x, const uint8_t *w,
                                                                             int64_t n, bool bf16) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    const __mmask16 all = 0xffff;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load_w16x16(w + 2 * i, all, bf16), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load_w16x16(w + 2 * (i + 16), all, bf16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), load_w16x16(w + 2 * (i + 32), all, bf16), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), load_w16x16(w + 2 * (i + 48), all, bf16), s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? all : (__mmask16)((1u << (n - i)) - 1u);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), load_w16x16(w + 2 * i, m, bf16), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

LMX_AVX512 static float dot_bf16_avx512(const float *x, const uint8_t *w, int64_t n) { return dot_w16_avx512(x, w, n, true); }
LMX_AVX512 static float dot_f16_avx512(const float *x, const uint8_t *w, int64_t n) { return dot_w16_avx512(x, w, n, false); }

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

static const lmx_cpu_kernels avx512_set = {"avx512",        dot_avx512,   dot4_avx512, axpy_avx512, dot4x4_avx512, dot_bf16_avx512,
                                           dot_f16_avx512,  bf16_avx512,  f16_avx512,  quant_avx2,  qdot_avx2};

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
static const lmx_cpu_kernels avx2_set = {"scalar",       dot_scalar,     dot4_scalar, axpy_scalar, NULL,
                                         dot_bf16_scalar, dot_f16_scalar, bf16_scalar, f16_scalar,
                                         lmx_cpu_quant_decode_row, qdot_scalar};
#define avx512_set avx2_set
static bool have_avx2(void) { return false; }
static bool have_avx512(void) { return false; }
#endif

int lmx_cpu_kernels_select(lmx_cpu_kernels *k, int max_level) {
    if (max_level >= 2 && have_avx512()) {
        *k = avx512_set;
        return 2;
    }
    if (max_level >= 1 && have_avx2()) {
        *k = avx2_set;
        return 1;
    }
    *k = scalar_set;
    return 0;
}
