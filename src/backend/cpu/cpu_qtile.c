/* cpu_qtile.c — see cpu_qtile.h: the tile layout, the repack, and the portable C reference kernels
 * every SIMD level reproduces bit for bit.
 *
 * Tile layout (one per block of 16 output rows, rows past the end padded with code 0, scale 0,
 * bias 0): the codes of the block stream linearly along the input dimension, 64 bytes per "chunk"
 * (8 inputs at 4 bits, 4 inputs at 8 bits, for all 16 rows). Seen as 32 little-endian u16 words,
 * word m = 2r + p (row r, parity p) holds
 *   4-bit: nibble s (bits 4s..4s+3) = code(r, k0 + 2s + p), s = 0..3
 *   8-bit: byte s (bits 8s..8s+7)   = code(r, k0 + 2s + p), s = 0..1
 * so (word >> bits*s) & mask is, per 32-bit lane r, the pair of codes (k0+2s, k0+2s+1) of row r,
 * which VPDPWSSD (or VPMADDWD) multiplies with the broadcast int16 pair x[k0+2s], x[k0+2s+1] and
 * adds into lane r: 16 rows' partial dots per instruction (8 per ymm half: rows 0..7 are the
 * chunk's first 32 bytes), no horizontal sums. A tile is one linear stream: per group its code
 * chunks, then the 16 rows' scales and biases (bf16/f16 as stored, else fp32), so decode reads each
 * weight byte once, in order.
 *
 * The arithmetic, the same at every level (lmx_qtile_kernels):
 *   activations, per token and group g of G inputs: m = the largest |x_k| compared as magnitude
 *   bits (order-free; NaN > inf > finite); non-finite m: d_g = NaN, xq = 0 (the result is NaN);
 *   m < LMX_QTILE_XMIN: d_g = 0, xq = 0; else d_g = m / 32767, xq_k = rne(x_k · (32767 / m)),
 *   xs_g = d_g · Σ_k xq_k (the sum of the quantized x: y below is then exactly the dot of the
 *   dequantized weights with the dequantized x, error Σ w_k·e_k with |e_k| <= d_g/2; the fp32 Σx of
 *   x itself leaves the error Σ s·q_k·e_k, uncentred: 2.5–3× the matmul error, 2× the golden logit
 *   error);
 *   rows, per (row, token): f = 0; per group g: f = fma((float)Σ_k q_k·xq_k, s_g·d_g, f);
 *   f = fma(b_g, xs_g, f); y = f + bias (0 without), and matmul_add: y = y_old + that.
 * The int32 sums are exact (|Σ q·xq| <= 255 · 32767 · 128 < 2^31 for groups up to 128), so any
 * chain split gives the same value. Relative step 1/32767 (int8 activations, 1/127, are ~250×
 * coarser: on the fixture models they miss the golden logit tolerance by 9–60×, by 4–15× even in
 * blocks of 4 inputs; docs/BENCHMARKS.md). */
#include "backend/cpu/cpu_qtile.h"

#include <math.h>

#include "formats/safetensors.h"

bool lmx_cpu_qtile_supported(int bits, int group_size, int64_t cols) {
    return (bits == 4 || bits == 8) && (group_size == 32 || group_size == 64 || group_size == 128) && cols > 0 &&
           cols % group_size == 0;
}

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
    const size_t gb = lmx_qtile_group_bytes(bits, gs, sb16), code_bytes = (size_t)gs * (size_t)bits * 2, sbe = sb16 ? 2 : 4;
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
    w->pk_block_bytes = lmx_qtile_group_bytes(w->bits, w->group_size, w->pk_sb16) * (size_t)w->groups;
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
    const size_t gb = lmx_qtile_group_bytes(w->bits, w->group_size, sb16), code_bytes = (size_t)w->group_size * (size_t)w->bits * 2;
    const uint8_t *tile = w->pk + (size_t)(r / 16) * w->pk_block_bytes;
    const int i = (int)(r % 16);
    for (int g = 0; g < w->groups; g++) {
        const uint8_t *sbp = tile + (size_t)g * gb + code_bytes;
        s[g] = get_sb(sbp, i, sb16, w->pk_sbh);
        b[g] = get_sb(sbp + 16 * (sb16 ? 2 : 4), i, sb16, w->pk_sbh);
    }
}

size_t lmx_cpu_qtile_bytes(int64_t rows, int64_t cols, int bits, int group_size, bool bf16_scales) {
    return (size_t)((rows + 15) / 16) * (size_t)(cols / group_size) * lmx_qtile_group_bytes(bits, group_size, bf16_scales);
}

/* ---- the portable C reference (tests compare the SIMD levels with it) ---- */

static void quant_x_scalar(const float *x, int T, int64_t K, int G, int16_t *xq, float *xd, float *xs) {
    const int groups = (int)(K / G);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < groups; g++) {
            const float *p = x + (size_t)t * K + (size_t)g * G;
            int16_t *q = xq + (size_t)t * K + (size_t)g * G;
            float *d = xd + (size_t)t * groups + g, *sum = xs + (size_t)t * groups + g;
            uint32_t mb = 0;
            for (int k = 0; k < G; k++) {
                uint32_t u;
                memcpy(&u, p + k, 4);
                u &= 0x7fffffffu;
                if (u > mb) mb = u;
            }
            float amax;
            if (lmx_qtile_group_degenerate(mb, &amax, q, G, d, sum)) continue;
            const float inv = 32767.0f / amax;
            int32_t is = 0;
            for (int k = 0; k < G; k++) {
                const float v = nearbyintf(p[k] * inv); /* the default rounding: to nearest even */
                q[k] = (int16_t)v;
                is += q[k];
            }
            *d = amax / 32767.0f;
            *sum = *d * (float)is;
        }
}

/* the codes of row i of a tile's group (tg: the group's stream) in input order: q [gs] */
static void row_codes(const uint8_t *tg, int i, int bits, int gs, int16_t *q) {
    for (int c = 0; c < gs / (bits == 4 ? 8 : 4); c++) {
        uint16_t w0, w1; /* parity 0 and 1 */
        memcpy(&w0, tg + 64 * (size_t)c + 4 * (size_t)i, 2);
        memcpy(&w1, tg + 64 * (size_t)c + 4 * (size_t)i + 2, 2);
        if (bits == 4) {
            int16_t *o = q + 8 * c;
            o[0] = w0 & 15, o[1] = w1 & 15, o[2] = (w0 >> 4) & 15, o[3] = (w1 >> 4) & 15;
            o[4] = (w0 >> 8) & 15, o[5] = (w1 >> 8) & 15, o[6] = (int16_t)(w0 >> 12), o[7] = (int16_t)(w1 >> 12);
        } else {
            int16_t *o = q + 4 * c;
            o[0] = w0 & 255, o[1] = w1 & 255, o[2] = (int16_t)(w0 >> 8), o[3] = (int16_t)(w1 >> 8);
        }
    }
}

#define QT_SCALAR_NT 8 /* tokens per pass over a tile */

/* per tile, per pass of up to QT_SCALAR_NT tokens, per group (its codes stay in L1): each row's
 * codes decoded once, then each token's int32 dot and rescale; groups in order for every (row, token) */
static void rows_scalar(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                        const float *xs, int T, float *y, bool acc) {
    const int64_t K = w->cols, R = w->rows;
    const int G = w->groups, gs = w->group_size, bits = w->bits;
    const bool sb16 = w->pk_sb16;
    const size_t code_bytes = (size_t)gs * (size_t)bits * 2, gb = lmx_qtile_group_bytes(bits, gs, sb16);
    int16_t q[128];
    float f[16][QT_SCALAR_NT];
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *tile = w->pk + (size_t)b * w->pk_block_bytes;
        const int nr = R - b * 16 < 16 ? (int)(R - b * 16) : 16;
        for (int t0 = 0; t0 < T; t0 += QT_SCALAR_NT) {
            const int nt = T - t0 < QT_SCALAR_NT ? T - t0 : QT_SCALAR_NT;
            memset(f, 0, sizeof f);
            for (int g = 0; g < G; g++) {
                const uint8_t *tg = tile + (size_t)g * gb;
                for (int i = 0; i < nr; i++) {
                    row_codes(tg, i, bits, gs, q);
                    const float sc = get_sb(tg + code_bytes, i, sb16, w->pk_sbh);
                    const float bi = get_sb(tg + code_bytes + 16 * (sb16 ? 2 : 4), i, sb16, w->pk_sbh);
                    for (int t = 0; t < nt; t++) {
                        const int16_t *xg = xq + (size_t)(t0 + t) * (size_t)K + (size_t)g * gs;
                        int32_t is = 0;
                        for (int k = 0; k < gs; k++) is += q[k] * xg[k];
                        const size_t tgi = (size_t)(t0 + t) * (size_t)G + (size_t)g;
                        f[i][t] = fmaf((float)is, sc * xd[tgi], f[i][t]);
                        f[i][t] = fmaf(bi, xs[tgi], f[i][t]);
                    }
                }
            }
            for (int i = 0; i < nr; i++)
                for (int t = 0; t < nt; t++) {
                    const int64_t r = b * 16 + i;
                    float v = f[i][t] + (w->bias ? w->bias[r] : 0.0f);
                    float *yr = y + (size_t)(t0 + t) * (size_t)R + (size_t)r;
                    if (acc) v = *yr + v;
                    *yr = v;
                }
        }
    }
}

const lmx_qtile_kernels lmx_qtile_reference = {quant_x_scalar, rows_scalar};

const lmx_qtile_kernels *lmx_cpu_qtile_kernels(lmx_cpu_level level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (level >= LMX_CPU_AVX512) return &lmx_qtile_avx512;
    if (level >= LMX_CPU_AVXVNNI) return &lmx_qtile_avxvnni;
    if (level >= LMX_CPU_AVX2) return &lmx_qtile_avx2;
#endif
    (void)level;
    return NULL;
}
