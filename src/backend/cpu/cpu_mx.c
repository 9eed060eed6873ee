/* cpu_mx.c — see cpu_mx.h. Reference arithmetic (the scalar level; the SIMD levels differ only by
 * fp32 summation order): w_k = scale_g · value(code_k) for a row, and a dot
 * Σ_g scale_g · Σ_{k∈g} x_k · value(code_k) with the group sums in element order.
 * Row independence: every level has one dot kernel for 1..nt tokens (dotn) that decodes each chunk
 * of codes once and runs, per token, exactly the operation sequence of the 1-token dot (own
 * accumulators, same FMAs in the same order, same final reduction), so row t of a T-token matmul
 * equals the 1-token matmul on x[t] bit for bit, for every T (batched decode, the prompt cache). */
#include "backend/cpu/cpu_mx.h"

#include "formats/mlx_mx.h"

void lmx_cpu_mx_upload(const lmx_weight_desc *d, lmx_bweight *w) {
    w->mode = d->mode;
    w->bits = d->bits;
    w->group_size = d->group_size;
    w->groups = (int)(d->cols / d->group_size);
    w->row_bytes = (size_t)d->cols * (size_t)d->bits / 8;
    w->data = (const uint8_t *)d->data + (size_t)d->row0 * w->row_bytes;
    w->mx_scales = (const uint8_t *)d->scales + (size_t)d->row0 * (size_t)w->groups;
}

/* ---- scalar reference ---- */

/* the most tokens one dotn call takes (the AVX-512 register budget: 4 tokens x 4 accumulators) */
#define MX_NT 4

/* out[j] = dot of one row with token j of x (tokens ldx floats apart), j < nt <= the set's nt */
typedef void mx_dotn_fn(const float *x, size_t ldx, int nt, const uint8_t *codes, const uint8_t *sc, int64_t K,
                        lmx_quant_mode m, float *out);

/* per token the reference order; each code decoded once for the nt tokens */
static void dotn_scalar(const float *x, size_t ldx, int nt, const uint8_t *codes, const uint8_t *sc, int64_t K,
                        lmx_quant_mode m, float *out) {
    const int gs = lmx_quant_mode_group(m);
    float acc[MX_NT] = {0};
    for (int64_t g = 0; g < K / gs; g++) {
        float s[MX_NT] = {0};
        for (int64_t k = g * gs; k < (g + 1) * gs; k++) {
            const float v = lmx_mx_value(m, lmx_mx_code(m, codes, k));
            for (int j = 0; j < nt; j++) s[j] += x[(size_t)j * ldx + (size_t)k] * v;
        }
        const float scale = lmx_mx_scale(m, sc[g]);
        for (int j = 0; j < nt; j++) acc[j] += scale * s[j];
    }
    for (int j = 0; j < nt; j++) out[j] = acc[j];
}

static void row_scalar(const uint8_t *codes, const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out) {
    const int gs = lmx_quant_mode_group(m);
    for (int64_t k = 0; k < K; k++) out[k] = lmx_mx_scale(m, sc[k / gs]) * lmx_mx_value(m, lmx_mx_code(m, codes, k));
}

typedef struct mx_kernels {
    mx_dotn_fn *dotn;
    int nt; /* the most tokens per dotn call (1..MX_NT) */
    void (*row)(const uint8_t *codes, const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out);
    /* NULL, or dotn's arithmetic on rows decoded by row (the same results), up to dense_nt tokens:
     * for T > 1 where decoding in registers once per token group costs more than once per row */
    void (*dense)(const float *x, size_t ldx, int nt, const float *wr, int64_t K, float *out);
    int dense_nt;
} mx_kernels;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MX_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
/* the dotn bodies: inlined into wrappers with a constant token count, so the per-token
 * accumulator arrays live in registers */
#define MX_INLINE static inline __attribute__((always_inline))

/* ---- AVX2 ---- */

MX_AVX2 static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 E2M1 codes of one little-endian word → 8 floats: magnitude from an 8-entry table (vpermps reads
 * the low 3 bits), sign bit 3 moved to bit 31 */
MX_AVX2 static inline __m256 e2m1x8(uint32_t word) {
    const __m256 lut = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32((int)word), sh);
    __m256 mag = _mm256_permutevar8x32_ps(lut, v);
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(8)), 28);
    return _mm256_xor_ps(mag, _mm256_castsi256_ps(sign));
}

/* 8 E4M3 bytes → 8 floats / 256: the f16 with exponent and mantissa bits (b & 0x7F) << 7 is
 * value(b) / 256 exactly (subnormals included), converted by F16C */
MX_AVX2 static inline __m256 e4m3x8_div256(const uint8_t *p) {
    __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p));
    __m128i mag = _mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16(0x3F80));
    __m128i sign = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8);
    return _mm256_cvtph_ps(_mm_or_si128(mag, sign));
}

/* the 8 weights at k, scaled by their group's scale: the products row_avx2 stores too */
MX_AVX2 static inline __m256 mx8_avx2(const uint8_t *codes, const uint8_t *sc, int64_t k, int gshift, lmx_quant_mode m) {
    const float scale = lmx_mx_scale(m, sc[k >> gshift]);
    if (m == LMX_QUANT_MXFP8) return _mm256_mul_ps(e4m3x8_div256(codes + k), _mm256_set1_ps(scale * 256.0f));
    uint32_t word;
    memcpy(&word, codes + k / 2, 4);
    return _mm256_mul_ps(e2m1x8(word), _mm256_set1_ps(scale));
}

/* 8-element chunks, each scaled by its group's scale, into 4 independent accumulators per token
 * (no loop-carried chain through a per-group sum); chunk i of every 32 feeds accumulator i */
MX_AVX2 MX_INLINE void dotn_avx2_body(const float *x, size_t ldx, const int nt, const uint8_t *codes,
                                      const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out) {
    const int gshift = m == LMX_QUANT_NVFP4 ? 4 : 5; /* log2 of the group size */
    __m256 a[2][4];
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) a[j][i] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) {
            const __m256 w = mx8_avx2(codes, sc, k + 8 * i, gshift, m);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < nt; j++)
                a[j][i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + (size_t)j * ldx + (size_t)(k + 8 * i)), a[j][i]);
        }
    for (; k < K; k += 8) {
        const __m256 w = mx8_avx2(codes, sc, k, gshift, m);
        _Pragma("GCC unroll 4")
        for (int j = 0; j < nt; j++)
            a[j][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + (size_t)j * ldx + (size_t)k), a[j][0]);
    }
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        out[j] = hsum8(_mm256_add_ps(_mm256_add_ps(a[j][0], a[j][1]), _mm256_add_ps(a[j][2], a[j][3])));
}

/* the fused dot's arithmetic on a row decoded by row_avx2 (the same products scale · value, so the
 * same results bit for bit): 8-float chunk i of every 32 into accumulator i of each token. With the
 * weights from memory 3 tokens' 12 accumulators fit the 16 ymm registers. */
MX_AVX2 MX_INLINE void dotn_dense_avx2_body(const float *x, size_t ldx, const int nt, const float *wr, int64_t K,
                                            float *out) {
    __m256 a[3][4];
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) a[j][i] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) {
            const __m256 w = _mm256_loadu_ps(wr + k + 8 * i);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < nt; j++)
                a[j][i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + (size_t)j * ldx + (size_t)(k + 8 * i)), a[j][i]);
        }
    for (; k < K; k += 8) {
        const __m256 w = _mm256_loadu_ps(wr + k);
        _Pragma("GCC unroll 4")
        for (int j = 0; j < nt; j++)
            a[j][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + (size_t)j * ldx + (size_t)k), a[j][0]);
    }
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        out[j] = hsum8(_mm256_add_ps(_mm256_add_ps(a[j][0], a[j][1]), _mm256_add_ps(a[j][2], a[j][3])));
}

MX_AVX2 static void dotn_dense_avx2(const float *x, size_t ldx, int nt, const float *wr, int64_t K, float *out) {
    switch (nt) {
    case 1: dotn_dense_avx2_body(x, ldx, 1, wr, K, out); break;
    case 2: dotn_dense_avx2_body(x, ldx, 2, wr, K, out); break;
    default: dotn_dense_avx2_body(x, ldx, 3, wr, K, out); break;
    }
}

/* 2 tokens at most: 8 accumulators, the decoded chunk and the x loads fit the 16 ymm registers */
MX_AVX2 static void dotn_avx2(const float *x, size_t ldx, int nt, const uint8_t *codes, const uint8_t *sc, int64_t K,
                              lmx_quant_mode m, float *out) {
    if (nt == 1) dotn_avx2_body(x, ldx, 1, codes, sc, K, m, out);
    else dotn_avx2_body(x, ldx, 2, codes, sc, K, m, out);
}

MX_AVX2 static void row_avx2(const uint8_t *codes, const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out) {
    const int gs = lmx_quant_mode_group(m);
    for (int64_t g = 0; g < K / gs; g++) {
        float *o = out + g * gs;
        if (m == LMX_QUANT_MXFP8) {
            __m256 s = _mm256_set1_ps(lmx_mx_scale(m, sc[g]) * 256.0f);
            for (int j = 0; j < gs; j += 8) _mm256_storeu_ps(o + j, _mm256_mul_ps(e4m3x8_div256(codes + g * gs + j), s));
        } else {
            __m256 s = _mm256_set1_ps(lmx_mx_scale(m, sc[g]));
            for (int j = 0; j < gs; j += 8) {
                uint32_t word;
                memcpy(&word, codes + (g * gs + j) / 2, 4);
                _mm256_storeu_ps(o + j, _mm256_mul_ps(e2m1x8(word), s));
            }
        }
    }
}

/* ---- AVX-512 ---- */

/* 16 E2M1 codes of 8 bytes → 16 floats: each byte twice (pshufb), shifted by 0 / 4, then the
 * 16-entry table (vpermps reads the low 4 bits) */
MX_AVX512 static inline __m512 e2m1x16(const uint8_t *p) {
    const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                                      -2.0f, -3.0f, -4.0f, -6.0f);
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i sh = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    __m128i b = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)p), dup);
    __m512i idx = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(b), sh);
    return _mm512_permutexvar_ps(idx, lut);
}

/* 16 E4M3 bytes → 16 floats / 256 (as e4m3x8_div256, 16 wide) */
MX_AVX512 static inline __m512 e4m3x16_div256(const uint8_t *p) {
    __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
    __m256i mag = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(0x3F80));
    __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
    return _mm512_cvtph_ps(_mm256_or_si256(mag, sign));
}

/* the 16 weights at k, scaled by their group's scale (as mx8_avx2) */
MX_AVX512 static inline __m512 mx16_avx512(const uint8_t *codes, const uint8_t *sc, int64_t k, int gshift,
                                           lmx_quant_mode m) {
    const float scale = lmx_mx_scale(m, sc[k >> gshift]);
    return m == LMX_QUANT_MXFP8 ? _mm512_mul_ps(e4m3x16_div256(codes + k), _mm512_set1_ps(scale * 256.0f))
                                : _mm512_mul_ps(e2m1x16(codes + k / 2), _mm512_set1_ps(scale));
}

/* 16-element chunks into 4 accumulators per token, chunk i of every 64 into accumulator i */
MX_AVX512 MX_INLINE void dotn_avx512_body(const float *x, size_t ldx, const int nt, const uint8_t *codes,
                                          const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out) {
    const int gshift = m == LMX_QUANT_NVFP4 ? 4 : 5; /* log2 of the group size */
    __m512 a[MX_NT][4];
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) a[j][i] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= K; k += 64)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) {
            const __m512 w = mx16_avx512(codes, sc, k + 16 * i, gshift, m);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < nt; j++)
                a[j][i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + (size_t)j * ldx + (size_t)(k + 16 * i)), a[j][i]);
        }
    for (; k < K; k += 16) {
        const __m512 w = mx16_avx512(codes, sc, k, gshift, m);
        _Pragma("GCC unroll 4")
        for (int j = 0; j < nt; j++)
            a[j][0] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + (size_t)j * ldx + (size_t)k), a[j][0]);
    }
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        out[j] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[j][0], a[j][1]), _mm512_add_ps(a[j][2], a[j][3])));
}

MX_AVX512 static void dotn_avx512(const float *x, size_t ldx, int nt, const uint8_t *codes, const uint8_t *sc,
                                  int64_t K, lmx_quant_mode m, float *out) {
    switch (nt) {
    case 1: dotn_avx512_body(x, ldx, 1, codes, sc, K, m, out); break;
    case 2: dotn_avx512_body(x, ldx, 2, codes, sc, K, m, out); break;
    case 3: dotn_avx512_body(x, ldx, 3, codes, sc, K, m, out); break;
    default: dotn_avx512_body(x, ldx, 4, codes, sc, K, m, out); break;
    }
}

/* fp4 decode with x pre-split per 32 elements into its even then odd elements (fp4_split_x): the 16
 * code bytes of 32 elements widen once, the low nibbles (vpermps reads 4 bits) give the even
 * elements and the high ones the odd, 3 shuffle-port ops per 32 codes instead of 6. The 32-element
 * steps alternate between accumulator pairs (0, 1) and (2, 3) of each token. */
MX_AVX512 MX_INLINE void dotn_fp4_split_body(const float *xs, size_t ldx, const int nt, const uint8_t *codes,
                                             const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out) {
    const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                                      -2.0f, -3.0f, -4.0f, -6.0f);
    __m512 a[MX_NT][4];
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        _Pragma("GCC unroll 4")
        for (int i = 0; i < 4; i++) a[j][i] = _mm512_setzero_ps();
    const bool nv = m == LMX_QUANT_NVFP4;
/* 32 elements at k into every token's accumulators H (even) and H + 1 (odd) */
#define FP4_SPLIT_STEP(k, H)                                                                                     \
    do {                                                                                                         \
        __m512i b_ = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + (k) / 2)));                 \
        __m512 lo_ = _mm512_permutexvar_ps(b_, lut), hi_ = _mm512_permutexvar_ps(_mm512_srli_epi32(b_, 4), lut); \
        __m512 s_ = nv ? _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(lmx_e4m3_to_f32(sc[(k) >> 4])),  \
                                              _mm512_set1_ps(lmx_e4m3_to_f32(sc[((k) >> 4) + 1])))               \
                       : _mm512_set1_ps(lmx_e8m0_to_f32(sc[(k) >> 5]));                                          \
        const __m512 wl_ = _mm512_mul_ps(lo_, s_), wh_ = _mm512_mul_ps(hi_, s_);                                 \
        _Pragma("GCC unroll 4")                                                                                  \
        for (int j = 0; j < nt; j++) {                                                                           \
            const float *xj_ = xs + (size_t)j * ldx + (size_t)(k);                                               \
            a[j][H] = _mm512_fmadd_ps(wl_, _mm512_loadu_ps(xj_), a[j][H]);                                       \
            a[j][(H) + 1] = _mm512_fmadd_ps(wh_, _mm512_loadu_ps(xj_ + 16), a[j][(H) + 1]);                      \
        }                                                                                                        \
    } while (0)
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
        FP4_SPLIT_STEP(k, 0);
        FP4_SPLIT_STEP(k + 32, 2);
    }
    if (k < K) FP4_SPLIT_STEP(k, 0);
#undef FP4_SPLIT_STEP
    _Pragma("GCC unroll 4")
    for (int j = 0; j < nt; j++)
        out[j] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[j][0], a[j][1]), _mm512_add_ps(a[j][2], a[j][3])));
}

MX_AVX512 static void dotn_fp4_split_avx512(const float *xs, size_t ldx, int nt, const uint8_t *codes,
                                            const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out) {
    switch (nt) {
    case 1: dotn_fp4_split_body(xs, ldx, 1, codes, sc, K, m, out); break;
    case 2: dotn_fp4_split_body(xs, ldx, 2, codes, sc, K, m, out); break;
    case 3: dotn_fp4_split_body(xs, ldx, 3, codes, sc, K, m, out); break;
    default: dotn_fp4_split_body(xs, ldx, 4, codes, sc, K, m, out); break;
    }
}

MX_AVX512 static void row_avx512(const uint8_t *codes, const uint8_t *sc, int64_t K, lmx_quant_mode m, float *out) {
    const int gs = lmx_quant_mode_group(m);
    for (int64_t g = 0; g < K / gs; g++) {
        float *o = out + g * gs;
        if (m == LMX_QUANT_MXFP8) {
            __m512 s = _mm512_set1_ps(lmx_mx_scale(m, sc[g]) * 256.0f);
            for (int j = 0; j < gs; j += 16)
                _mm512_storeu_ps(o + j, _mm512_mul_ps(e4m3x16_div256(codes + g * gs + j), s));
        } else {
            __m512 s = _mm512_set1_ps(lmx_mx_scale(m, sc[g]));
            for (int j = 0; j < gs; j += 16) _mm512_storeu_ps(o + j, _mm512_mul_ps(e2m1x16(codes + (g * gs + j) / 2), s));
        }
    }
}
/* xs[K]: per 32 elements of x the 16 even ones, then the 16 odd ones (K a multiple of 32) */
static void fp4_split_x(const float *x, int64_t K, float *xs) {
    for (int64_t k = 0; k < K; k += 32)
        for (int j = 0; j < 16; j++) xs[k + j] = x[k + 2 * j], xs[k + 16 + j] = x[k + 2 * j + 1];
}
#endif

static mx_kernels kernels_for(lmx_cpu_level level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (level >= LMX_CPU_AVX512) return (mx_kernels){dotn_avx512, MX_NT, row_avx512, NULL, 0};
    if (level >= LMX_CPU_AVX2) return (mx_kernels){dotn_avx2, 2, row_avx2, dotn_dense_avx2, 3};
#endif
    (void)level;
    return (mx_kernels){dotn_scalar, MX_NT, row_scalar, NULL, 0};
}

void lmx_cpu_mx_row(const cpu_backend *c, const lmx_bweight *w, int64_t r, float *out) {
    kernels_for(c->level).row(w->data + (size_t)r * w->row_bytes, w->mx_scales + (size_t)r * (size_t)w->groups,
                              w->cols, w->mode, out);
}

/* ---- matmul on the pool ---- */

typedef struct mx_ctx {
    cpu_backend *c;
    const lmx_bweight *w;
    mx_kernels k;
    const float *x; /* [T, cols]: the activations, or split for dotn_fp4_split_avx512 */
    float *y;       /* [T, rows] */
    int T;
    bool acc;
} mx_ctx;

static inline void put(const mx_ctx *m, size_t i, float v) {
    if (m->acc) m->y[i] += v;
    else m->y[i] = v;
}

/* rows per block: a block's rows meet one token group after another (the group's x stays in cache
 * over the block's rows, the block's codes over the groups) */
#define MX_ROW_BLOCK 16

/* rows [r0, r1) against all T tokens, k.nt tokens per dotn call: each (row, token) result is the
 * 1-token arithmetic, whatever T, the token grouping and the thread split */
static void mx_rows(void *vctx, int64_t r0, int64_t r1, int thread) {
    (void)thread;
    const mx_ctx *m = vctx;
    const lmx_bweight *w = m->w;
    const size_t K = (size_t)w->cols;
    for (int64_t rb = r0; rb < r1; rb += MX_ROW_BLOCK) {
        const int64_t re = r1 - rb < MX_ROW_BLOCK ? r1 : rb + MX_ROW_BLOCK;
        for (int t = 0; t < m->T; t += m->k.nt) {
            const int nt = m->T - t < m->k.nt ? m->T - t : m->k.nt;
            for (int64_t r = rb; r < re; r++) {
                const uint8_t *codes = w->data + (size_t)r * w->row_bytes;
                const uint8_t *sc = w->mx_scales + (size_t)r * (size_t)w->groups;
                const float b = w->bias ? w->bias[r] : 0.0f;
                float d[MX_NT];
                m->k.dotn(m->x + (size_t)t * K, K, nt, codes, sc, w->cols, w->mode, d);
                for (int j = 0; j < nt; j++) put(m, (size_t)(t + j) * (size_t)w->rows + (size_t)r, d[j] + b);
            }
        }
    }
}

/* rows [r0, r1) in blocks of 4 decoded into the thread's scratch ([4][cols], sized at upload), each
 * block against k.dense_nt tokens at a time; the same results as mx_rows */
static void mx_rows_decoded(void *vctx, int64_t r0, int64_t r1, int thread) {
    const mx_ctx *m = vctx;
    const lmx_bweight *w = m->w;
    const size_t K = (size_t)w->cols;
    float *blk = m->c->scratch[thread];
    for (int64_t rb = r0; rb < r1; rb += 4) {
        const int nb = r1 - rb < 4 ? (int)(r1 - rb) : 4;
        for (int i = 0; i < nb; i++)
            m->k.row(w->data + (size_t)(rb + i) * w->row_bytes, w->mx_scales + (size_t)(rb + i) * (size_t)w->groups,
                     w->cols, w->mode, blk + (size_t)i * K);
        for (int t = 0; t < m->T; t += m->k.dense_nt) {
            const int nt = m->T - t < m->k.dense_nt ? m->T - t : m->k.dense_nt;
            for (int i = 0; i < nb; i++) {
                float d[MX_NT];
                m->k.dense(m->x + (size_t)t * K, K, nt, blk + (size_t)i * K, w->cols, d);
                const float b = w->bias ? w->bias[rb + i] : 0.0f;
                for (int j = 0; j < nt; j++) put(m, (size_t)(t + j) * (size_t)w->rows + (size_t)(rb + i), d[j] + b);
            }
        }
    }
}

lmx_status lmx_cpu_mx_matmul(cpu_backend *c, const lmx_bweight *w, const float *x, int T, float *y, bool acc) {
    if (!w->data || !w->mx_scales)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: %s matmul through a weight without source rows",
                         lmx_quant_mode_name(w->mode));
    mx_ctx m = {c, w, kernels_for(c->level), x, y, T, acc};
    int64_t grain = w->rows / (c->n_threads * 4);
    if (grain < 16) grain = 16;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    /* the split fp4 kernel for every T alike (the choice must not depend on T) */
    if (c->level >= LMX_CPU_AVX512 && w->mode != LMX_QUANT_MXFP8 && w->cols % 32 == 0) {
        LMX_BACKEND_TRY(ensure_shared(c, (size_t)T * (size_t)w->cols));
        for (int t = 0; t < T; t++)
            fp4_split_x(x + (size_t)t * (size_t)w->cols, w->cols, c->shared + (size_t)t * (size_t)w->cols);
        m.x = c->shared;
        m.k.dotn = dotn_fp4_split_avx512;
    }
#endif
    lmx_thread_pool_run(c->pool, w->rows, grain, T > 1 && m.k.dense ? mx_rows_decoded : mx_rows, &m);
    return LMX_OK;
}
