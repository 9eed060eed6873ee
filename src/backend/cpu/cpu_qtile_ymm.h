/* cpu_qtile_ymm.h — the tile kernels 8 rows (one ymm half of a tile chunk: rows 0..7 are its first
 * 32 bytes, rows 8..15 the next) wide, written once for two levels: cpu_qtile_avx2.c (VPMADDWD +
 * VPADDD) and cpu_qtile_avxvnni.c (VPDPWSSD ymm) each include it once, after defining
 *   QT_Y_TARGET          the function attribute of the level's instruction set
 *   QT_Y_DP(acc, a, b)   acc + Σ of the two int16 products per 32-bit lane of a and b (exact int32)
 *   QT_Y_KERNELS         the name of the lmx_qtile_kernels object to define
 * Layout and arithmetic: cpu_qtile.c; the results equal the scalar reference bit for bit. A
 * template, not a header: no include guard, static functions of the including file. */
#include <immintrin.h>
#include <math.h>

#include "backend/cpu/cpu_qtile.h"

#define QT_Y_NT 4  /* tokens per pass over a half tile */

QT_Y_TARGET static void quant_x_ymm(const float *x, int T, int64_t K, int G, int16_t *xq, float *xd, float *xs) {
    const int groups = (int)(K / G);
    const __m256i magn = _mm256_set1_epi32(0x7fffffff);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < groups; g++) {
            const float *p = x + (size_t)t * K + (size_t)g * G;
            int16_t *q = xq + (size_t)t * K + (size_t)g * G;
            float *d = xd + (size_t)t * groups + g, *sum = xs + (size_t)t * groups + g;
            __m256i mb = _mm256_setzero_si256();
            for (int k = 0; k < G; k += 8)
                mb = _mm256_max_epu32(mb, _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(p + k)), magn));
            __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(mb), _mm256_extracti128_si256(mb, 1));
            m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0x4e));
            m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0xb1));
            const uint32_t m = (uint32_t)_mm_cvtsi128_si32(m4);
            float amax;
            if (lmx_qtile_group_degenerate(m, &amax, q, G, d, sum)) continue;
            const __m256 vi = _mm256_set1_ps(32767.0f / amax);
            __m256i is = _mm256_setzero_si256();
            for (int k = 0; k < G; k += 8) {
                const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + k), vi)); /* to nearest even */
                is = _mm256_add_epi32(is, v);
                _mm_storeu_si128((__m128i *)(void *)(q + k),
                                 _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
            }
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(is), _mm256_extracti128_si256(is, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            *d = amax / 32767.0f;
            *sum = *d * (float)_mm_cvtsi128_si32(s4);
        }
}

/* the 8 scales or biases of half h of a tile's group (bf16, f16 or fp32) */
QT_Y_TARGET static inline __attribute__((always_inline)) __m256 load_sb8(const uint8_t *p, int h, bool sb16, bool sbh) {
    if (sb16 && sbh) return _mm256_cvtph_ps(_mm_load_si128((const void *)(p + 16 * h)));
    if (sb16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_load_si128((const void *)(p + 16 * h))), 16));
    return _mm256_load_ps((const void *)(p + 32 * h));
}

/* y[r0 .. r0+nr) (= or +=) f + bias, nr <= 8 */
QT_Y_TARGET static inline __attribute__((always_inline)) void store8(float *y, const float *bias, int64_t r0, int nr,
                                                                     __m256 f, bool acc) {
    const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 v = _mm256_add_ps(f, bias ? _mm256_maskload_ps(bias + r0, mk) : _mm256_setzero_ps());
    if (acc) v = _mm256_add_ps(_mm256_maskload_ps(y + r0, mk), v);
    _mm256_maskstore_ps(y + r0, mk, v);
}

/* the code vectors of 8 inputs at k (chunk bytes p, this half's 32): a[s] = codes (k+2s, k+2s+1) of
 * the half's 8 rows as int16 pairs */
QT_Y_TARGET static inline __attribute__((always_inline)) void codes8(const uint8_t *p, const int bits, __m256i a[4]) {
    if (bits == 4) {
        const __m256i m4 = _mm256_set1_epi16(15), v = _mm256_load_si256((const void *)p);
        a[0] = _mm256_and_si256(v, m4), a[1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        a[2] = _mm256_and_si256(_mm256_srli_epi16(v, 8), m4), a[3] = _mm256_srli_epi16(v, 12);
    } else {
        const __m256i m8 = _mm256_set1_epi16(255), v0 = _mm256_load_si256((const void *)p),
                      v1 = _mm256_load_si256((const void *)(p + 64));
        a[0] = _mm256_and_si256(v0, m8), a[1] = _mm256_srli_epi16(v0, 8);
        a[2] = _mm256_and_si256(v1, m8), a[3] = _mm256_srli_epi16(v1, 8);
    }
}

/* decode: one tile × one token, both halves in one pass over the stream (two int32 chains each) */
QT_Y_TARGET static inline __attribute__((always_inline)) void tile1(const lmx_bweight *w, int64_t b, const int16_t *xq,
                                                                    const float *xd, const float *xs, float *y,
                                                                    bool acc, const int bits) {
    const int G = w->groups, gs = w->group_size;
    const size_t code_bytes = (size_t)gs * (size_t)bits * 2, gb = lmx_qtile_group_bytes(bits, gs, w->pk_sb16);
    const size_t step = bits == 4 ? 64 : 128; /* stream bytes per 8 inputs */
    const uint8_t *tile = w->pk + (size_t)b * w->pk_block_bytes;
    __m256 f0 = _mm256_setzero_ps(), f1 = _mm256_setzero_ps();
    for (int g = 0; g < G; g++) {
        const uint8_t *pg = tile + (size_t)g * gb;
        const int16_t *xg = xq + (size_t)g * gs;
        __m256i i00 = _mm256_setzero_si256(), i01 = _mm256_setzero_si256(), i10 = _mm256_setzero_si256(),
                i11 = _mm256_setzero_si256();
        for (int k = 0; k < gs; k += 8) {
            const uint8_t *p = pg + (size_t)(k / 8) * step;
            _mm_prefetch((const char *)p + LMX_QTILE_PREFETCH, _MM_HINT_T0);
            if (bits == 8) _mm_prefetch((const char *)p + LMX_QTILE_PREFETCH + 64, _MM_HINT_T0);
            const __m256i x0 = _mm256_set1_epi32(lmx_qtile_pair(xg + k)), x1 = _mm256_set1_epi32(lmx_qtile_pair(xg + k + 2)),
                          x2 = _mm256_set1_epi32(lmx_qtile_pair(xg + k + 4)), x3 = _mm256_set1_epi32(lmx_qtile_pair(xg + k + 6));
            __m256i a[4];
            codes8(p, bits, a);
            i00 = QT_Y_DP(i00, a[0], x0), i01 = QT_Y_DP(i01, a[1], x1);
            i00 = QT_Y_DP(i00, a[2], x2), i01 = QT_Y_DP(i01, a[3], x3);
            codes8(p + 32, bits, a);
            i10 = QT_Y_DP(i10, a[0], x0), i11 = QT_Y_DP(i11, a[1], x1);
            i10 = QT_Y_DP(i10, a[2], x2), i11 = QT_Y_DP(i11, a[3], x3);
        }
        const uint8_t *sb = pg + code_bytes, *bb = sb + (w->pk_sb16 ? 32 : 64);
        const __m256 d = _mm256_set1_ps(xd[g]), s = _mm256_set1_ps(xs[g]);
        f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(i00, i01)),
                             _mm256_mul_ps(load_sb8(sb, 0, w->pk_sb16, w->pk_sbh), d), f0);
        f0 = _mm256_fmadd_ps(load_sb8(bb, 0, w->pk_sb16, w->pk_sbh), s, f0);
        f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(i10, i11)),
                             _mm256_mul_ps(load_sb8(sb, 1, w->pk_sb16, w->pk_sbh), d), f1);
        f1 = _mm256_fmadd_ps(load_sb8(bb, 1, w->pk_sb16, w->pk_sbh), s, f1);
    }
    const int64_t r0 = b * 16, left = w->rows - r0;
    store8(y, w->bias, r0, left < 8 ? (int)left : 8, f0, acc);
    if (left > 8) store8(y, w->bias, r0 + 8, left - 8 < 8 ? (int)(left - 8) : 8, f1, acc);
}

/* half h of one tile × NT tokens (NT, bits compile-time): NT float sums + NT·NC int32 chains (2 up to
 * 2 tokens, else 1) + 4 code vectors fit the 16 ymm registers. y_stride: floats between tokens'
 * rows of y. */
QT_Y_TARGET static inline __attribute__((always_inline)) void half_nt(const lmx_bweight *w, int64_t b, int h,
                                                                      const int16_t *xq, const float *xd,
                                                                      const float *xs, float *y, int64_t y_stride,
                                                                      bool acc, const int bits, const int NT) {
    const int NC = NT <= 2 ? 2 : 1;
    const int64_t K = w->cols, r0 = b * 16 + 8 * h, left = w->rows - r0;
    if (left <= 0) return;
    const int G = w->groups, gs = w->group_size;
    const size_t code_bytes = (size_t)gs * (size_t)bits * 2, gb = lmx_qtile_group_bytes(bits, gs, w->pk_sb16);
    const size_t step = bits == 4 ? 64 : 128;
    const uint8_t *tile = w->pk + (size_t)b * w->pk_block_bytes;
    __m256 f[QT_Y_NT];
    _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) f[t] = _mm256_setzero_ps();
    for (int g = 0; g < G; g++) {
        const uint8_t *pg = tile + (size_t)g * gb;
        __m256i ia[QT_Y_NT][2];
        _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++)
            _Pragma("GCC unroll 2") for (int c = 0; c < NC; c++) ia[t][c] = _mm256_setzero_si256();
        for (int k = 0; k < gs; k += 8) {
            const uint8_t *p = pg + (size_t)(k / 8) * step;
            _mm_prefetch((const char *)p + LMX_QTILE_PREFETCH, _MM_HINT_T0);
            if (bits == 8) _mm_prefetch((const char *)p + LMX_QTILE_PREFETCH + 64, _MM_HINT_T0);
            __m256i a[4];
            codes8(p + 32 * h, bits, a);
            _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) {
                const int16_t *xk = xq + (size_t)t * (size_t)K + (size_t)g * gs + k;
                _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++) ia[t][s % NC] =
                    QT_Y_DP(ia[t][s % NC], a[s], _mm256_set1_epi32(lmx_qtile_pair(xk + 2 * s)));
            }
        }
        const uint8_t *sb = pg + code_bytes, *bb = sb + (w->pk_sb16 ? 32 : 64);
        const __m256 sv = load_sb8(sb, h, w->pk_sb16, w->pk_sbh), bv = load_sb8(bb, h, w->pk_sb16, w->pk_sbh);
        _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) {
            const __m256i is = NC == 2 ? _mm256_add_epi32(ia[t][0], ia[t][1]) : ia[t][0];
            f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(sv, _mm256_set1_ps(xd[(size_t)t * G + g])), f[t]);
            f[t] = _mm256_fmadd_ps(bv, _mm256_set1_ps(xs[(size_t)t * G + g]), f[t]);
        }
    }
    _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++)
        store8(y + (size_t)t * (size_t)y_stride, w->bias, r0, left < 8 ? (int)left : 8, f[t], acc);
}

/* tiles [b0, b1) × NT tokens, both halves (one instantiation per bits, NT) */
#define QT_Y_TILES(bits_, nt_)                                                                                     \
    QT_Y_TARGET static void tiles_q##bits_##_##nt_(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, \
                                                   const float *xd, const float *xs, float *y, bool acc) {       \
        for (int64_t b = b0; b < b1; b++)                                                                          \
            for (int h = 0; h < 2; h++) half_nt(w, b, h, xq, xd, xs, y, w->rows, acc, bits_, nt_);                 \
    }
QT_Y_TILES(4, 1) QT_Y_TILES(4, 2) QT_Y_TILES(4, 3) QT_Y_TILES(4, 4)
QT_Y_TILES(8, 1) QT_Y_TILES(8, 2) QT_Y_TILES(8, 3) QT_Y_TILES(8, 4)
#undef QT_Y_TILES

static const lmx_qtile_tiles_fn tiles_q4[QT_Y_NT] = {tiles_q4_1, tiles_q4_2, tiles_q4_3, tiles_q4_4};
static const lmx_qtile_tiles_fn tiles_q8[QT_Y_NT] = {tiles_q8_1, tiles_q8_2, tiles_q8_3, tiles_q8_4};

QT_Y_TARGET static void tiles1_q4(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                                  const float *xs, float *y, bool acc) {
    for (int64_t b = b0; b < b1; b++) tile1(w, b, xq, xd, xs, y, acc, 4);
}
QT_Y_TARGET static void tiles1_q8(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                                  const float *xs, float *y, bool acc) {
    for (int64_t b = b0; b < b1; b++) tile1(w, b, xq, xd, xs, y, acc, 8);
}

/* one token: the single-pass decode kernel; more: passes of QT_Y_NT tokens per half tile over runs of
 * 4 tiles (lmx_qtile_passes; a token's result is the same whichever pass or kernel holds it) */
static void rows_ymm(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                     const float *xs, int T, float *y, bool acc) {
    if (T == 1) {
        (w->bits == 4 ? tiles1_q4 : tiles1_q8)(w, b0, b1, xq, xd, xs, y, acc);
        return;
    }
    lmx_qtile_passes(w->bits == 4 ? tiles_q4 : tiles_q8, QT_Y_NT, 4, w, b0, b1, xq, xd, xs, T, y, acc);
}

const lmx_qtile_kernels QT_Y_KERNELS = {quant_x_ymm, rows_ymm};
