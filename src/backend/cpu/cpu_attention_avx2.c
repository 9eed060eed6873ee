/* cpu_attention_avx2.c — the attention kernels of the SIMD levels (cpu_attention.h), AVX2 + FMA.
 * Dots: one 8-lane FMA chain over d in steps of 8 per (query, key), its lanes summed by one tree
 * ((0+4)+(2+6)) + ((1+5)+(3+7)) — a tile of 8 (query, key) pairs reduces them together by the same
 * adds — then the last D % 8 products in order. Weighted values: per element one FMA chain over the
 * keys in order. exp: a degree-6 polynomial after the reduction by ln 2 (~2 ulp). Each query's
 * numbers are the same whatever tile shape computes them. */
#include "backend/cpu/cpu_attention.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <math.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE inline __attribute__((always_inline))

/* the lanes of v summed: ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7)) */
AVX2 static INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* hsum8 of 8 vectors at once (the same adds): lanes [v0, v2, v4, v6, v1, v3, v5, v7] */
AVX2 static INLINE __m256 hsum8x8(const __m256 *v) {
    __m256 x[4], y[2];
    for (int i = 0; i < 4; i++)
        x[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
    for (int i = 0; i < 2; i++)
        y[i] = _mm256_add_ps(_mm256_shuffle_ps(x[2 * i], x[2 * i + 1], 0x44),
                             _mm256_shuffle_ps(x[2 * i], x[2 * i + 1], 0xEE));
    return _mm256_add_ps(_mm256_shuffle_ps(y[0], y[1], 0x88), _mm256_shuffle_ps(y[0], y[1], 0xDD));
}

/* e^x per lane: x = n·ln2 + r, |r| <= ln2/2, e^r by Cephes' polynomial, 2^n in the exponent bits;
 * below ln(2^-126) it is 0 (softmax weights that small vanish beside the max's 1), above 88.37 it
 * saturates (softmax arguments are <= 0), NaN stays NaN */
AVX2 static INLINE __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654475f), hi = _mm256_set1_ps(88.3762626647949f);
    const __m256 zero = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    const __m256 res = _mm256_andnot_ps(zero, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
    return _mm256_blendv_ps(res, x, nan);
}

/* s[qi·ss + kj] = scale · q_qi·k_kj for NQ queries × NK keys (constants after inlining) */
AVX2 static INLINE void dot_tile(const float *q, int D, const float *const *k, float scale, float *s, size_t ss,
                                 int NQ, int NK) {
    __m256 a[8];
    _Pragma("GCC unroll 8")
    for (int i = 0; i < NQ * NK; i++) a[i] = _mm256_setzero_ps();
    const int dv = D & ~7;
    for (int d = 0; d < dv; d += 8) {
        __m256 kv[8];
        _Pragma("GCC unroll 8")
        for (int j = 0; j < NK; j++) kv[j] = _mm256_loadu_ps(k[j] + d);
        _Pragma("GCC unroll 8")
        for (int i = 0; i < NQ; i++) {
            const __m256 qv = _mm256_loadu_ps(q + (size_t)i * D + d);
            _Pragma("GCC unroll 8")
            for (int j = 0; j < NK; j++) a[i * NK + j] = _mm256_fmadd_ps(qv, kv[j], a[i * NK + j]);
        }
    }
    float r[8];
    if (NQ * NK == 8) {
        float t[8];
        _mm256_storeu_ps(t, hsum8x8(a));
        for (int i = 0; i < 4; i++) r[2 * i] = t[i], r[2 * i + 1] = t[4 + i];
    } else {
        _Pragma("GCC unroll 8")
        for (int i = 0; i < NQ * NK; i++) r[i] = hsum8(a[i]);
    }
    _Pragma("GCC unroll 8")
    for (int i = 0; i < NQ; i++)
        _Pragma("GCC unroll 8")
        for (int j = 0; j < NK; j++) {
            float v = r[i * NK + j];
            for (int d = dv; d < D; d++) v += q[(size_t)i * D + d] * k[j][d];
            s[(size_t)i * ss + j] = v * scale;
        }
}

AVX2 static void scores_avx2(const float *q, int nq, const float *const *k, int n, int D, float scale, float *s,
                             size_t ss) {
    int i = 0;
    for (; i + 4 <= nq; i += 4) {
        const float *qi = q + (size_t)i * D;
        float *si = s + (size_t)i * ss;
        int j = 0;
        for (; j + 2 <= n; j += 2) dot_tile(qi, D, k + j, scale, si + j, ss, 4, 2);
        if (j < n) dot_tile(qi, D, k + j, scale, si + j, ss, 4, 1);
    }
    for (; i < nq; i++) {
        const float *qi = q + (size_t)i * D;
        float *si = s + (size_t)i * ss;
        int j = 0;
        for (; j + 8 <= n; j += 8) dot_tile(qi, D, k + j, scale, si + j, ss, 1, 8);
        for (; j < n; j++) dot_tile(qi, D, k + j, scale, si + j, ss, 1, 1);
    }
}

AVX2 static float softmax_avx2(float *s, int n, float *m, float *alpha) {
    __m256 mv = _mm256_set1_ps(*m);
    int j = 0;
    for (; j + 8 <= n; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
    float t[8];
    _mm256_storeu_ps(t, mv);
    float mb = t[0];
    for (int i = 1; i < 8; i++) mb = t[i] > mb ? t[i] : mb;
    for (; j < n; j++) mb = s[j] > mb ? s[j] : mb;
    *alpha = mb > *m ? _mm256_cvtss_f32(exp8(_mm256_set1_ps(*m - mb))) : 1.0f;
    *m = mb;
    const __m256 mbv = _mm256_set1_ps(mb);
    __m256 sum = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mbv));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (j < n) { /* the last n % 8 in lanes of their own; the other lanes' weights are 0 */
        for (int i = 0; i < 8; i++) t[i] = j + i < n ? s[j + i] : -INFINITY;
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(t), mbv));
        _mm256_storeu_ps(t, e);
        for (int i = 0; j + i < n; i++) s[j + i] = t[i];
        sum = _mm256_add_ps(sum, e);
    }
    return hsum8(sum);
}

/* acc[qi·D + d + 8x] += Σ_j p[qi·ps + j] · v[j][d + 8x] for NQ queries × NV vectors of 8 */
AVX2 static INLINE void pv_tile(float *acc, int D, const float *p, size_t ps, const float *const *v, int n, int d,
                                int NQ, int NV) {
    __m256 a[8];
    _Pragma("GCC unroll 8")
    for (int i = 0; i < NQ; i++)
        _Pragma("GCC unroll 8")
        for (int x = 0; x < NV; x++) a[i * NV + x] = _mm256_loadu_ps(acc + (size_t)i * D + d + 8 * x);
    for (int j = 0; j < n; j++) {
        __m256 vv[8];
        _Pragma("GCC unroll 8")
        for (int x = 0; x < NV; x++) vv[x] = _mm256_loadu_ps(v[j] + d + 8 * x);
        _Pragma("GCC unroll 8")
        for (int i = 0; i < NQ; i++) {
            const __m256 w = _mm256_broadcast_ss(p + (size_t)i * ps + j);
            _Pragma("GCC unroll 8")
            for (int x = 0; x < NV; x++) a[i * NV + x] = _mm256_fmadd_ps(w, vv[x], a[i * NV + x]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int i = 0; i < NQ; i++)
        _Pragma("GCC unroll 8")
        for (int x = 0; x < NV; x++) _mm256_storeu_ps(acc + (size_t)i * D + d + 8 * x, a[i * NV + x]);
}

AVX2 static void pv_avx2(float *acc, int nq, const float *p, size_t ps, const float *const *v, int n, int D) {
    const int dv = D & ~7;
    int i = 0;
    for (; i + 4 <= nq; i += 4) {
        float *ai = acc + (size_t)i * D;
        const float *pi = p + (size_t)i * ps;
        int d = 0;
        for (; d + 16 <= dv; d += 16) pv_tile(ai, D, pi, ps, v, n, d, 4, 2);
        for (; d < dv; d += 8) pv_tile(ai, D, pi, ps, v, n, d, 4, 1);
    }
    for (; i < nq; i++) {
        float *ai = acc + (size_t)i * D;
        const float *pi = p + (size_t)i * ps;
        int d = 0;
        for (; d + 64 <= dv; d += 64) pv_tile(ai, D, pi, ps, v, n, d, 1, 8);
        for (; d < dv; d += 8) pv_tile(ai, D, pi, ps, v, n, d, 1, 1);
    }
    if (dv < D) /* the last D % 8 elements of every query */
        for (i = 0; i < nq; i++)
            for (int j = 0; j < n; j++)
                for (int d = dv; d < D; d++)
                    acc[(size_t)i * D + d] = fmaf(p[(size_t)i * ps + j], v[j][d], acc[(size_t)i * D + d]);
}

const lmx_attn_kernels lmx_attn_avx2 = {scores_avx2, softmax_avx2, pv_avx2};
#endif
