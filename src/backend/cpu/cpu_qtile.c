/* cpu_qtile.c — see cpu_qtile.h: MLX affine 4/8-bit weights repacked into 16-row interleaved tiles
 * and their AVX-512 VNNI matmul (decode GEMV and prefill share one kernel).
 *
 * Tile layout (one per block of 16 output rows, rows past the end padded with code 0, scale 0,
 * bias 0): the codes of the block stream linearly along the input dimension, 64 bytes per "chunk"
 * (8 inputs at 4 bits, 4 inputs at 8 bits, for all 16 rows). Seen as 32 little-endian u16 words,
 * word m = 2r + p (row r, parity p) holds
 *   4-bit: nibble s (bits 4s..4s+3) = code(r, k0 + 2s + p), s = 0..3
 *   8-bit: byte s (bits 8s..8s+7)   = code(r, k0 + 2s + p), s = 0..1
 * so (word >> bits*s) & mask is, per 32-bit lane r, the pair of codes (k0+2s, k0+2s+1) of row r,
 * which VPDPWSSD multiplies with the broadcast int16 pair x[k0+2s], x[k0+2s+1] and adds into lane
 * r: 16 rows' partial dots per instruction, no horizontal sums. A tile is one linear stream:
 * per group its code chunks, then the 16 rows' scales and biases (bf16/f16 as stored, else fp32), so
 * decode reads each weight byte once, in order. Per group g the int32 sums are rescaled once:
 *   y_r += s_rg · d_g · Σ_k q_rk·xq_k + b_rg · Σ_k x_k
 * with x quantized per group to int16 (xq = round(x / d_g), d_g = max|x| / 32767: relative error
 * ~1.5e-5, inside the golden tolerance; int8 would not be) and Σx the fp32 sum of x itself. |Σ q·xq| <=
 * 255 · 32767 · 128 < 2^31 for groups up to 128. */
#include "backend/cpu/cpu_qtile.h"

#include <math.h>

#include "formats/safetensors.h"

bool lmx_cpu_qtile_supported(int bits, int group_size, int64_t cols) {
    return (bits == 4 || bits == 8) && (group_size == 32 || group_size == 64 || group_size == 128) && cols > 0 &&
           cols % group_size == 0;
}

/* bytes per (tile, group): the codes, then 16 scales and 16 biases (bf16 / f16 as stored — exact,
 * they came from those — fp32 for fp32) */
static size_t group_bytes(int bits, int gs, bool sb16) { return (size_t)gs * (size_t)bits * 2 + (sb16 ? 64 : 128); }

static void put_sb(uint8_t *dst, int i, float v, bool sb16, bool f16) {
    if (sb16 && f16) {
        uint16_t h = lmx_f32_to_f16(v); /* exact: v came from an f16 */
        memcpy(dst + 2 * i, &h, 2);
    } else if (sb16) {
        uint32_t u;
        memcpy(&u, &v, 4);
        uint16_t h = (uint16_t)(u >> 16);
        memcpy(dst + 2 * i, &h, 2);
    } else {
        memcpy(dst + 4 * i, &v, 4);
    }
}

/* tiles [b0, b1) of w (pool function: tiles are independent) */
static void pack_tiles(void *vctx, int64_t b0, int64_t b1, int thread) {
    (void)thread;
    const lmx_bweight *w = vctx;
    const int64_t R = w->rows;
    const int G = w->groups, gs = w->group_size, bits = w->bits;
    const bool sb16 = w->pk_sb16;
    const size_t gb = group_bytes(bits, gs, sb16), code_bytes = (size_t)gs * (size_t)bits * 2, sbe = sb16 ? 2 : 4;
    for (int64_t b = b0; b < b1; b++)
        for (int g = 0; g < G; g++) {
            uint8_t *dg = w->pk + (size_t)b * w->pk_block_bytes + (size_t)g * gb;
            uint16_t *dst = (uint16_t *)(void *)dg;
            for (int i = 0; i < 16; i++) {
                const int64_t r = b * 16 + i;
                const uint8_t *src = r < R ? w->data + (size_t)r * w->row_bytes + (size_t)g * gs * bits / 8 : NULL;
                if (bits == 4) {
                    /* chunk c: codes k0..k0+7 of row r = one little-endian u32 (nibble j = code j) */
                    for (int c = 0; c < gs / 8; c++) {
                        uint32_t v = 0;
                        if (src) memcpy(&v, src + 4 * c, 4);
                        const uint32_t e = v & 0x0F0F0F0Fu, o = (v >> 4) & 0x0F0F0F0Fu; /* even / odd codes */
                        const uint32_t xe = e | (e >> 4), xo = o | (o >> 4);
                        dst[c * 32 + 2 * i] = (uint16_t)((xe & 0xFFu) | ((xe >> 16) & 0xFFu) << 8);
                        dst[c * 32 + 2 * i + 1] = (uint16_t)((xo & 0xFFu) | ((xo >> 16) & 0xFFu) << 8);
                    }
                } else {
                    /* chunk c: codes k0..k0+3 = bytes; word p = code(k0+p) | code(k0+2+p) << 8 */
                    for (int c = 0; c < gs / 4; c++) {
                        static const uint8_t zero4[4] = {0};
                        const uint8_t *q = src ? src + 4 * c : zero4;
                        dst[c * 32 + 2 * i] = (uint16_t)(q[0] | q[2] << 8);
                        dst[c * 32 + 2 * i + 1] = (uint16_t)(q[1] | q[3] << 8);
                    }
                }
                put_sb(dg + code_bytes, i, r < R ? w->scales[(size_t)r * G + g] : 0.0f, sb16, w->pk_sbh);
                put_sb(dg + code_bytes + 16 * sbe, i, r < R ? w->biases[(size_t)r * G + g] : 0.0f, sb16, w->pk_sbh);
            }
        }
}

lmx_status lmx_cpu_qtile_pack(lmx_bweight *w, lmx_thread_pool *pool) {
    const int64_t NB = (w->rows + 15) / 16;
    w->pk_sb16 = w->dtype == LMX_DTYPE_BF16 || w->dtype == LMX_DTYPE_F16;
    w->pk_sbh = w->dtype == LMX_DTYPE_F16;
    w->pk_block_bytes = group_bytes(w->bits, w->group_size, w->pk_sb16) * (size_t)w->groups;
    w->pk = aligned_alloc(64, (size_t)NB * w->pk_block_bytes);
    if (!w->pk) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: repacked weight");
    w->pk_blocks = NB;
    lmx_thread_pool_run(pool, NB, 8, pack_tiles, w);
    return LMX_OK;
}

static float get_sb(const uint8_t *src, int i, bool sb16, bool f16) {
    float v;
    if (sb16) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        v = f16 ? lmx_f16_to_f32(h) : lmx_bf16_to_f32(h);
    } else {
        memcpy(&v, src + 4 * i, 4);
    }
    return v;
}

void lmx_cpu_qtile_row_sb(const lmx_bweight *w, int64_t r, float *s, float *b) {
    const bool sb16 = w->pk_sb16;
    const size_t gb = group_bytes(w->bits, w->group_size, sb16), code_bytes = (size_t)w->group_size * (size_t)w->bits * 2;
    const uint8_t *tile = w->pk + (size_t)(r / 16) * w->pk_block_bytes;
    const int i = (int)(r % 16);
    for (int g = 0; g < w->groups; g++) {
        const uint8_t *sbp = tile + (size_t)g * gb + code_bytes;
        s[g] = get_sb(sbp, i, sb16, w->pk_sbh);
        b[g] = get_sb(sbp + 16 * (sb16 ? 2 : 4), i, sb16, w->pk_sbh);
    }
}

size_t lmx_cpu_qtile_bytes(int64_t rows, int64_t cols, int bits, int group_size, bool bf16_scales) {
    return (size_t)((rows + 15) / 16) * (size_t)(cols / group_size) * group_bytes(bits, group_size, bf16_scales);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LMX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

LMX_AVX512 void lmx_cpu_qtile_quant_x(const float *x, int T, int64_t K, int G, int16_t *xq, float *xd, float *xs) {
    const int groups = (int)(K / G);
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int t = 0; t < T; t++)
        for (int g = 0; g < groups; g++) {
            const float *p = x + (size_t)t * K + (size_t)g * G;
            int16_t *q = xq + (size_t)t * K + (size_t)g * G;
            __m512 mx = _mm512_setzero_ps(), sum = _mm512_setzero_ps();
            for (int k = 0; k < G; k += 16) {
                const __m512 v = _mm512_loadu_ps(p + k);
                mx = _mm512_max_ps(mx, _mm512_and_ps(v, absmask));
                sum = _mm512_add_ps(sum, v);
            }
            float amax = _mm512_reduce_max_ps(mx);
            xs[(size_t)t * groups + g] = _mm512_reduce_add_ps(sum); /* fp32 sum of the unquantized x */
            if (!(amax > 0) || !isfinite(amax)) {
                /* a zero group; a non-finite one makes the result non-finite (through d, or the sum) */
                xd[(size_t)t * groups + g] = amax > 0 ? NAN : 0.0f;
                memset(q, 0, (size_t)G * sizeof *q);
                continue;
            }
            const float inv = 32767.0f / amax;
            xd[(size_t)t * groups + g] = amax / 32767.0f;
            const __m512 vi = _mm512_set1_ps(inv);
            for (int k = 0; k < G; k += 16) {
                __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p + k), vi)); /* round to nearest */
                _mm256_storeu_si256((__m256i *)(void *)(q + k), _mm512_cvtsepi32_epi16(v));
            }
        }
}

/* decode kernels prefetch this far ahead in their tile stream (4 KiB: in quiet A/B rounds on the
 * 2-core EPYC it was ahead of none in 5 of 6 pairs; the machine's noise hides a firm number) */
#define QT_PF 4096
static inline int32_t load_pair(const int16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 16 scales or biases of a tile's group (bf16 or fp32) */
LMX_AVX512 static inline __attribute__((always_inline)) __m512 load_sb(const uint8_t *p, bool sb16, bool sbh) {
    if (sb16 && sbh) return _mm512_cvtph_ps(_mm256_load_si256((const void *)p));
    if (sb16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256((const void *)p)), 16));
    return _mm512_load_ps((const void *)p);
}

/* One 16-row block × NT tokens over the whole input dimension. */
LMX_AVX512 static inline __attribute__((always_inline)) void qtile_block(const lmx_bweight *w, int64_t b,
                                                                         const int16_t *xq, const float *xd,
                                                                         const float *xs, int NT, float *y,
                                                                         int64_t y_stride, bool acc) {
    const int64_t K = w->cols;
    const int G = w->groups, gs = w->group_size, bits = w->bits;
    const uint8_t *pw = w->pk + (size_t)b * w->pk_block_bytes;
    const bool sb16 = w->pk_sb16, sbh = w->pk_sbh;
    __m512 facc[4];
    for (int t = 0; t < NT; t++) facc[t] = _mm512_setzero_ps();
    for (int g = 0; g < G; g++) {
        __m512i ia[4][4];
        for (int t = 0; t < NT; t++)
            for (int s = 0; s < 4; s++) ia[t][s] = _mm512_setzero_si512();
        const int64_t k0 = (int64_t)g * gs;
        if (bits == 4) {
            const __m512i m4 = _mm512_set1_epi16(15);
            for (int64_t k = k0; k < k0 + gs; k += 8, pw += 64) {
                const __m512i v = _mm512_load_si512((const void *)pw);
                const __m512i a0 = _mm512_and_si512(v, m4), a1 = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                const __m512i a2 = _mm512_and_si512(_mm512_srli_epi16(v, 8), m4), a3 = _mm512_srli_epi16(v, 12);
                for (int t = 0; t < NT; t++) {
                    const int16_t *xk = xq + (size_t)t * K + k;
                    ia[t][0] = _mm512_dpwssd_epi32(ia[t][0], a0, _mm512_set1_epi32(load_pair(xk)));
                    ia[t][1] = _mm512_dpwssd_epi32(ia[t][1], a1, _mm512_set1_epi32(load_pair(xk + 2)));
                    ia[t][2] = _mm512_dpwssd_epi32(ia[t][2], a2, _mm512_set1_epi32(load_pair(xk + 4)));
                    ia[t][3] = _mm512_dpwssd_epi32(ia[t][3], a3, _mm512_set1_epi32(load_pair(xk + 6)));
                }
            }
        } else {
            const __m512i m8 = _mm512_set1_epi16(255);
            for (int64_t k = k0; k < k0 + gs; k += 8, pw += 128) {
                const __m512i v0 = _mm512_load_si512((const void *)pw), v1 = _mm512_load_si512((const void *)(pw + 64));
                const __m512i a0 = _mm512_and_si512(v0, m8), a1 = _mm512_srli_epi16(v0, 8);
                const __m512i a2 = _mm512_and_si512(v1, m8), a3 = _mm512_srli_epi16(v1, 8);
                for (int t = 0; t < NT; t++) {
                    const int16_t *xk = xq + (size_t)t * K + k;
                    ia[t][0] = _mm512_dpwssd_epi32(ia[t][0], a0, _mm512_set1_epi32(load_pair(xk)));
                    ia[t][1] = _mm512_dpwssd_epi32(ia[t][1], a1, _mm512_set1_epi32(load_pair(xk + 2)));
                    ia[t][2] = _mm512_dpwssd_epi32(ia[t][2], a2, _mm512_set1_epi32(load_pair(xk + 4)));
                    ia[t][3] = _mm512_dpwssd_epi32(ia[t][3], a3, _mm512_set1_epi32(load_pair(xk + 6)));
                }
            }
        }
        const __m512 sv = load_sb(pw, sb16, sbh), bv = load_sb(pw + (sb16 ? 32 : 64), sb16, sbh);
        pw += sb16 ? 64 : 128;
        for (int t = 0; t < NT; t++) {
            const __m512i is = _mm512_add_epi32(_mm512_add_epi32(ia[t][0], ia[t][1]), _mm512_add_epi32(ia[t][2], ia[t][3]));
            const __m512 sd = _mm512_mul_ps(sv, _mm512_set1_ps(xd[(size_t)t * G + g]));
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), sd, facc[t]);
            facc[t] = _mm512_fmadd_ps(bv, _mm512_set1_ps(xs[(size_t)t * G + g]), facc[t]);
        }
    }
    const int64_t r0 = b * 16;
    const int nr = w->rows - r0 < 16 ? (int)(w->rows - r0) : 16;
    const __mmask16 mk = (__mmask16)((1u << nr) - 1u);
    const __m512 bias = w->bias ? _mm512_maskz_loadu_ps(mk, w->bias + r0) : _mm512_setzero_ps();
    for (int t = 0; t < NT; t++) {
        float *yt = y + (size_t)t * (size_t)y_stride + r0;
        __m512 v = _mm512_add_ps(facc[t], bias);
        if (acc) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, yt), v);
        _mm512_mask_storeu_ps(yt, mk, v);
    }
}

/* decode (one token), 4 bits: the same arithmetic as qtile_block with NT = 1 (bit for bit: the
 * same four int32 chains per group, summed and rescaled in the same order), written out so the
 * compiler keeps every accumulator in a register */
LMX_AVX512 static void qtile_block1_q4(const lmx_bweight *w, int64_t b, const int16_t *xq, const float *xd,
                                       const float *xs, float *y, bool acc) {
    const int G = w->groups, gs = w->group_size;
    const uint8_t *pw = w->pk + (size_t)b * w->pk_block_bytes;
    const bool sb16 = w->pk_sb16, sbh = w->pk_sbh;
    const __m512i m4 = _mm512_set1_epi16(15);
    __m512 facc = _mm512_setzero_ps();
    const int16_t *xk = xq;
    for (int g = 0; g < G; g++) {
        __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512(), i2 = _mm512_setzero_si512(),
                i3 = _mm512_setzero_si512();
        for (int c = 0; c < gs; c += 8, pw += 64, xk += 8) {
            _mm_prefetch((const char *)pw + QT_PF, _MM_HINT_T0);
            const __m512i v = _mm512_load_si512((const void *)pw);
            i0 = _mm512_dpwssd_epi32(i0, _mm512_and_si512(v, m4), _mm512_set1_epi32(load_pair(xk)));
            i1 = _mm512_dpwssd_epi32(i1, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), _mm512_set1_epi32(load_pair(xk + 2)));
            i2 = _mm512_dpwssd_epi32(i2, _mm512_and_si512(_mm512_srli_epi16(v, 8), m4), _mm512_set1_epi32(load_pair(xk + 4)));
            i3 = _mm512_dpwssd_epi32(i3, _mm512_srli_epi16(v, 12), _mm512_set1_epi32(load_pair(xk + 6)));
        }
        const __m512i is = _mm512_add_epi32(_mm512_add_epi32(i0, i1), _mm512_add_epi32(i2, i3));
        const __m512 sd = _mm512_mul_ps(load_sb(pw, sb16, sbh), _mm512_set1_ps(xd[g]));
        facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), sd, facc);
        facc = _mm512_fmadd_ps(load_sb(pw + (sb16 ? 32 : 64), sb16, sbh), _mm512_set1_ps(xs[g]), facc);
        pw += sb16 ? 64 : 128;
    }
    const int64_t r0 = b * 16;
    const int nr = w->rows - r0 < 16 ? (int)(w->rows - r0) : 16;
    const __mmask16 mk = (__mmask16)((1u << nr) - 1u);
    __m512 v = _mm512_add_ps(facc, w->bias ? _mm512_maskz_loadu_ps(mk, w->bias + r0) : _mm512_setzero_ps());
    if (acc) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, y + r0), v);
    _mm512_mask_storeu_ps(y + r0, mk, v);
}

/* decode, 8 bits: qtile_block's arithmetic with NT = 1 (bit for bit), accumulators in registers */
LMX_AVX512 static void qtile_block1_q8(const lmx_bweight *w, int64_t b, const int16_t *xq, const float *xd,
                                       const float *xs, float *y, bool acc) {
    const int G = w->groups, gs = w->group_size;
    const uint8_t *pw = w->pk + (size_t)b * w->pk_block_bytes;
    const bool sb16 = w->pk_sb16, sbh = w->pk_sbh;
    const __m512i m8 = _mm512_set1_epi16(255);
    __m512 facc = _mm512_setzero_ps();
    const int16_t *xk = xq;
    for (int g = 0; g < G; g++) {
        __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512(), i2 = _mm512_setzero_si512(),
                i3 = _mm512_setzero_si512();
        for (int c = 0; c < gs; c += 8, pw += 128, xk += 8) {
            _mm_prefetch((const char *)pw + QT_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)pw + QT_PF + 64, _MM_HINT_T0);
            const __m512i v0 = _mm512_load_si512((const void *)pw), v1 = _mm512_load_si512((const void *)(pw + 64));
            i0 = _mm512_dpwssd_epi32(i0, _mm512_and_si512(v0, m8), _mm512_set1_epi32(load_pair(xk)));
            i1 = _mm512_dpwssd_epi32(i1, _mm512_srli_epi16(v0, 8), _mm512_set1_epi32(load_pair(xk + 2)));
            i2 = _mm512_dpwssd_epi32(i2, _mm512_and_si512(v1, m8), _mm512_set1_epi32(load_pair(xk + 4)));
            i3 = _mm512_dpwssd_epi32(i3, _mm512_srli_epi16(v1, 8), _mm512_set1_epi32(load_pair(xk + 6)));
        }
        const __m512i is = _mm512_add_epi32(_mm512_add_epi32(i0, i1), _mm512_add_epi32(i2, i3));
        const __m512 sd = _mm512_mul_ps(load_sb(pw, sb16, sbh), _mm512_set1_ps(xd[g]));
        facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), sd, facc);
        facc = _mm512_fmadd_ps(load_sb(pw + (sb16 ? 32 : 64), sb16, sbh), _mm512_set1_ps(xs[g]), facc);
        pw += sb16 ? 64 : 128;
    }
    const int64_t r0 = b * 16;
    const int nr = w->rows - r0 < 16 ? (int)(w->rows - r0) : 16;
    const __mmask16 mk = (__mmask16)((1u << nr) - 1u);
    __m512 v = _mm512_add_ps(facc, w->bias ? _mm512_maskz_loadu_ps(mk, w->bias + r0) : _mm512_setzero_ps());
    if (acc) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, y + r0), v);
    _mm512_mask_storeu_ps(y + r0, mk, v);
}

/* prefill: 4 tokens × one tile, two int32 chains per token (s = 0, 2 and s = 1, 3); explicit so
 * every accumulator stays in a register (22 zmm) */
LMX_AVX512 static inline __attribute__((always_inline)) void qtile_block4(const lmx_bweight *w, int64_t b,
                                                                          const int16_t *xq, const float *xd,
                                                                          const float *xs, float *y, int64_t ys,
                                                                          bool acc, int bits) {
    const int64_t K = w->cols;
    const int G = w->groups, gs = w->group_size;
    const uint8_t *pw = w->pk + (size_t)b * w->pk_block_bytes;
    const bool sb16 = w->pk_sb16, sbh = w->pk_sbh;
    const int16_t *x0 = xq, *x1 = xq + K, *x2 = xq + 2 * K, *x3 = xq + 3 * K;
    __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
#define QT_DOT4(ia, ib, xp, k)                                                                \
    do {                                                                                      \
        ia = _mm512_dpwssd_epi32(ia, a0, _mm512_set1_epi32(load_pair((xp) + (k))));          \
        ib = _mm512_dpwssd_epi32(ib, a1, _mm512_set1_epi32(load_pair((xp) + (k) + 2)));      \
        ia = _mm512_dpwssd_epi32(ia, a2, _mm512_set1_epi32(load_pair((xp) + (k) + 4)));      \
        ib = _mm512_dpwssd_epi32(ib, a3, _mm512_set1_epi32(load_pair((xp) + (k) + 6)));      \
    } while (0)
#define QT_RESCALE(f, ia, ib, t)                                                                      \
    do {                                                                                              \
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(ia, ib)),                             \
                            _mm512_mul_ps(sv, _mm512_set1_ps(xd[(size_t)(t) * G + g])), f);           \
        f = _mm512_fmadd_ps(bv, _mm512_set1_ps(xs[(size_t)(t) * G + g]), f);                          \
    } while (0)
    for (int g = 0; g < G; g++) {
        __m512i p0 = _mm512_setzero_si512(), q0 = _mm512_setzero_si512(), p1 = _mm512_setzero_si512(),
                q1 = _mm512_setzero_si512(), p2 = _mm512_setzero_si512(), q2 = _mm512_setzero_si512(),
                p3 = _mm512_setzero_si512(), q3 = _mm512_setzero_si512();
        for (int64_t k = (int64_t)g * gs; k < (int64_t)(g + 1) * gs; k += 8) {
            __m512i a0, a1, a2, a3;
            if (bits == 4) {
                const __m512i m4 = _mm512_set1_epi16(15), v = _mm512_load_si512((const void *)pw);
                a0 = _mm512_and_si512(v, m4), a1 = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                a2 = _mm512_and_si512(_mm512_srli_epi16(v, 8), m4), a3 = _mm512_srli_epi16(v, 12);
                pw += 64;
            } else {
                const __m512i m8 = _mm512_set1_epi16(255), v0 = _mm512_load_si512((const void *)pw),
                              v1 = _mm512_load_si512((const void *)(pw + 64));
                a0 = _mm512_and_si512(v0, m8), a1 = _mm512_srli_epi16(v0, 8);
                a2 = _mm512_and_si512(v1, m8), a3 = _mm512_srli_epi16(v1, 8);
                pw += 128;
            }
            QT_DOT4(p0, q0, x0, k);
            QT_DOT4(p1, q1, x1, k);
            QT_DOT4(p2, q2, x2, k);
            QT_DOT4(p3, q3, x3, k);
        }
        const __m512 sv = load_sb(pw, sb16, sbh), bv = load_sb(pw + (sb16 ? 32 : 64), sb16, sbh);
        pw += sb16 ? 64 : 128;
        QT_RESCALE(f0, p0, q0, 0);
        QT_RESCALE(f1, p1, q1, 1);
        QT_RESCALE(f2, p2, q2, 2);
        QT_RESCALE(f3, p3, q3, 3);
    }
#undef QT_DOT4
#undef QT_RESCALE
    const int64_t r0 = b * 16;
    const int nr = w->rows - r0 < 16 ? (int)(w->rows - r0) : 16;
    const __mmask16 mk = (__mmask16)((1u << nr) - 1u);
    const __m512 bias = w->bias ? _mm512_maskz_loadu_ps(mk, w->bias + r0) : _mm512_setzero_ps();
    const __m512 f[4] = {f0, f1, f2, f3};
    for (int t = 0; t < 4; t++) {
        float *yt = y + (size_t)t * (size_t)ys + r0;
        __m512 v = _mm512_add_ps(f[t], bias);
        if (acc) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, yt), v);
        _mm512_mask_storeu_ps(yt, mk, v);
    }
}

LMX_AVX512 static void qtile_block4_q4(const lmx_bweight *w, int64_t b, const int16_t *xq, const float *xd,
                                       const float *xs, float *y, int64_t ys, bool acc) {
    qtile_block4(w, b, xq, xd, xs, y, ys, acc, 4);
}
LMX_AVX512 static void qtile_block4_q8(const lmx_bweight *w, int64_t b, const int16_t *xq, const float *xd,
                                       const float *xs, float *y, int64_t ys, bool acc) {
    qtile_block4(w, b, xq, xd, xs, y, ys, acc, 8);
}

LMX_AVX512 void lmx_cpu_qtile_rows(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                                   const float *xs, int T, float *y, bool acc) {
    const int64_t K = w->cols;
    const int G = w->groups;
    if (T == 1) {
        for (int64_t b = b0; b < b1; b++)
            if (w->bits == 4) qtile_block1_q4(w, b, xq, xd, xs, y, acc);
            else qtile_block1_q8(w, b, xq, xd, xs, y, acc);
        return;
    }
    for (int64_t b = b0; b < b1; b++) {
        int t = 0;
        for (; t + 4 <= T; t += 4)
            (w->bits == 4 ? qtile_block4_q4 : qtile_block4_q8)(w, b, xq + (size_t)t * K, xd + (size_t)t * G,
                                                             xs + (size_t)t * G, y + (size_t)t * w->rows, w->rows, acc);
        switch (T - t) {
        case 3: qtile_block(w, b, xq + (size_t)t * K, xd + (size_t)t * G, xs + (size_t)t * G, 3, y + (size_t)t * w->rows, w->rows, acc); break;
        case 2: qtile_block(w, b, xq + (size_t)t * K, xd + (size_t)t * G, xs + (size_t)t * G, 2, y + (size_t)t * w->rows, w->rows, acc); break;
        case 1: qtile_block(w, b, xq + (size_t)t * K, xd + (size_t)t * G, xs + (size_t)t * G, 1, y + (size_t)t * w->rows, w->rows, acc); break;
        default: break;
        }
    }
}
#else
void lmx_cpu_qtile_quant_x(const float *x, int T, int64_t K, int G, int16_t *xq, float *xd, float *xs) {
    (void)x, (void)T, (void)K, (void)G, (void)xq, (void)xd, (void)xs;
}
void lmx_cpu_qtile_rows(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                        const float *xs, int T, float *y, bool acc) {
    (void)w, (void)b0, (void)b1, (void)xq, (void)xd, (void)xs, (void)T, (void)y, (void)acc;
}
#endif
