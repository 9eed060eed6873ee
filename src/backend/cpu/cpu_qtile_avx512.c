/* cpu_qtile_avx512.c — the AVX-512 VNNI tile kernels (cpu_qtile.h; layout and arithmetic in
 * cpu_qtile.c): one zmm lane per tile row, VPDPWSSD over the int16 activation pairs, up to 8 tokens
 * per pass over a tile so each weight load feeds 8 tokens (batched decode and prefill). */
#include "backend/cpu/cpu_qtile.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <math.h>

#define LMX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))
#define QT_NT 8 /* tokens per pass over a tile */

LMX_AVX512 static void quant_x_avx512(const float *x, int T, int64_t K, int G, int16_t *xq, float *xd, float *xs) {
    const int groups = (int)(K / G);
    const __m512i magn = _mm512_set1_epi32(0x7fffffff);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < groups; g++) {
            const float *p = x + (size_t)t * K + (size_t)g * G;
            int16_t *q = xq + (size_t)t * K + (size_t)g * G;
            float *d = xd + (size_t)t * groups + g, *sum = xs + (size_t)t * groups + g;
            __m512i mb = _mm512_setzero_si512();
            for (int k = 0; k < G; k += 16)
                mb = _mm512_max_epu32(mb, _mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(p + k)), magn));
            const uint32_t m = _mm512_reduce_max_epu32(mb);
            float amax;
            if (lmx_qtile_group_degenerate(m, &amax, q, G, d, sum)) continue;
            const __m512 vi = _mm512_set1_ps(32767.0f / amax);
            __m512i is = _mm512_setzero_si512();
            for (int k = 0; k < G; k += 16) {
                const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p + k), vi)); /* to nearest even */
                is = _mm512_add_epi32(is, v);
                _mm256_storeu_si256((__m256i *)(void *)(q + k), _mm512_cvtsepi32_epi16(v));
            }
            *d = amax / 32767.0f;
            *sum = *d * (float)_mm512_reduce_add_epi32(is);
        }
}

/* 16 scales or biases of a tile's group (bf16, f16 or fp32) */
LMX_AVX512 static inline __attribute__((always_inline)) __m512 load_sb(const uint8_t *p, bool sb16, bool sbh) {
    if (sb16 && sbh) return _mm512_cvtph_ps(_mm256_load_si256((const void *)p));
    if (sb16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256((const void *)p)), 16));
    return _mm512_load_ps((const void *)p);
}

/* One tile (16 rows) × NT tokens over the whole input dimension, NT and bits compile-time constants
 * (every accumulator a register: NT float sums + NT·NC int32 chains + 4 code vectors). Per 8 inputs
 * the four code vectors a_s (inputs k+2s, k+2s+1 of the 16 rows) meet each token's broadcast pair;
 * NC int32 chains per token (4 for one token, 2 up to 4 tokens, 1 for more) keep the VPDPWSSD
 * latency hidden. y_stride: floats between tokens' rows of y. */
LMX_AVX512 static inline __attribute__((always_inline)) void tile_nt(const lmx_bweight *w, int64_t b,
                                                                     const int16_t *xq, const float *xd,
                                                                     const float *xs, float *y, int64_t y_stride,
                                                                     bool acc, const int bits, const int NT) {
    const int NC = NT == 1 ? 4 : NT <= 4 ? 2 : 1;
    const int64_t K = w->cols;
    const int G = w->groups, gs = w->group_size;
    const uint8_t *pw = w->pk + (size_t)b * w->pk_block_bytes;
    const bool sb16 = w->pk_sb16, sbh = w->pk_sbh;
    __m512 f[QT_NT];
    _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) f[t] = _mm512_setzero_ps();
    for (int g = 0; g < G; g++) {
        __m512i ia[QT_NT][4];
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++)
            _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) ia[t][c] = _mm512_setzero_si512();
        for (int64_t k = (int64_t)g * gs; k < (int64_t)(g + 1) * gs; k += 8) {
            __m512i a[4];
            if (bits == 4) {
                _mm_prefetch((const char *)pw + LMX_QTILE_PREFETCH, _MM_HINT_T0);
                const __m512i m4 = _mm512_set1_epi16(15), v = _mm512_load_si512((const void *)pw);
                a[0] = _mm512_and_si512(v, m4), a[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                a[2] = _mm512_and_si512(_mm512_srli_epi16(v, 8), m4), a[3] = _mm512_srli_epi16(v, 12);
                pw += 64;
            } else {
                _mm_prefetch((const char *)pw + LMX_QTILE_PREFETCH, _MM_HINT_T0);
                _mm_prefetch((const char *)pw + LMX_QTILE_PREFETCH + 64, _MM_HINT_T0);
                const __m512i m8 = _mm512_set1_epi16(255), v0 = _mm512_load_si512((const void *)pw),
                              v1 = _mm512_load_si512((const void *)(pw + 64));
                a[0] = _mm512_and_si512(v0, m8), a[1] = _mm512_srli_epi16(v0, 8);
                a[2] = _mm512_and_si512(v1, m8), a[3] = _mm512_srli_epi16(v1, 8);
                pw += 128;
            }
            _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {
                const int16_t *xk = xq + (size_t)t * (size_t)K + k;
                _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++) ia[t][s % NC] =
                    _mm512_dpwssd_epi32(ia[t][s % NC], a[s], _mm512_set1_epi32(lmx_qtile_pair(xk + 2 * s)));
            }
        }
        const __m512 sv = load_sb(pw, sb16, sbh), bv = load_sb(pw + (sb16 ? 32 : 64), sb16, sbh);
        pw += sb16 ? 64 : 128;
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {
            __m512i is = ia[t][0];
            _Pragma("GCC unroll 4") for (int c = 1; c < NC; c++) is = _mm512_add_epi32(is, ia[t][c]);
            const __m512 sd = _mm512_mul_ps(sv, _mm512_set1_ps(xd[(size_t)t * G + g]));
            f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), sd, f[t]);
            f[t] = _mm512_fmadd_ps(bv, _mm512_set1_ps(xs[(size_t)t * G + g]), f[t]);
        }
    }
    const int64_t r0 = b * 16;
    const int nr = w->rows - r0 < 16 ? (int)(w->rows - r0) : 16;
    const __mmask16 mk = (__mmask16)((1u << nr) - 1u);
    const __m512 bias = w->bias ? _mm512_maskz_loadu_ps(mk, w->bias + r0) : _mm512_setzero_ps();
    _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {
        float *yt = y + (size_t)t * (size_t)y_stride + r0;
        __m512 v = _mm512_add_ps(f[t], bias);
        if (acc) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, yt), v);
        _mm512_mask_storeu_ps(yt, mk, v);
    }
}

/* tiles [b0, b1) × NT tokens (one instantiation per bits, NT) */
#define QT_TILES(bits_, nt_)                                                                                    \
    LMX_AVX512 static void tiles_q##bits_##_##nt_(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, \
                                                  const float *xd, const float *xs, float *y, bool acc) {      \
        for (int64_t b = b0; b < b1; b++) tile_nt(w, b, xq, xd, xs, y, w->rows, acc, bits_, nt_);              \
    }
#define QT_TILES_ALL(bits_)                                                                                     \
    QT_TILES(bits_, 1) QT_TILES(bits_, 2) QT_TILES(bits_, 3) QT_TILES(bits_, 4) QT_TILES(bits_, 5)             \
        QT_TILES(bits_, 6) QT_TILES(bits_, 7) QT_TILES(bits_, 8)
QT_TILES_ALL(4)
QT_TILES_ALL(8)
#undef QT_TILES_ALL
#undef QT_TILES

static const lmx_qtile_tiles_fn tiles_q4[QT_NT] = {tiles_q4_1, tiles_q4_2, tiles_q4_3, tiles_q4_4,
                                                   tiles_q4_5, tiles_q4_6, tiles_q4_7, tiles_q4_8};
static const lmx_qtile_tiles_fn tiles_q8[QT_NT] = {tiles_q8_1, tiles_q8_2, tiles_q8_3, tiles_q8_4,
                                                   tiles_q8_5, tiles_q8_6, tiles_q8_7, tiles_q8_8};

/* tokens in passes of QT_NT over runs of 4 tiles (lmx_qtile_passes) */
static void rows_avx512(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                        const float *xs, int T, float *y, bool acc) {
    lmx_qtile_passes(w->bits == 4 ? tiles_q4 : tiles_q8, QT_NT, 4, w, b0, b1, xq, xd, xs, T, y, acc);
}

const lmx_qtile_kernels lmx_qtile_avx512 = {quant_x_avx512, rows_avx512};

#endif
