/* cpu_qtile.h — MLX affine 4/8-bit weights repacked into 16-row interleaved tiles and their integer
 * matmul at the SIMD kernel levels (layout and arithmetic in cpu_qtile.c): a weight is repacked at
 * upload (owned memory, the size lmx_cpu_qtile_bytes gives, instead of the fp32 scales/biases and
 * the mapped source rows), the activations are quantized to int16 per group once per matmul, and
 * one kernel per level computes blocks of 16 output rows × the tokens (decode GEMV and prefill
 * alike): AVX2 (VPMADDWD + VPADDD) and AVX-VNNI (VPDPWSSD ymm) from one template (cpu_qtile_ymm.h),
 * AVX-512 VNNI (VPDPWSSD zmm, cpu_qtile_avx512.c). They compute the same int32 sums and the same
 * fp32 operations in the same order as the portable C reference (cpu_qtile.c), so every level's
 * result equals the reference's bit for bit. The scalar level keeps the fp32 float path (the exact
 * reference other backends are tested against). Pure functions on caller memory. */
#ifndef LMX_BACKEND_CPU_QTILE_H
#define LMX_BACKEND_CPU_QTILE_H

#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_backend_internal.h"

/* bits 4 or 8, group 32/64/128 dividing cols */
bool lmx_cpu_qtile_supported(int bits, int group_size, int64_t cols);
/* bytes of the repacked codes, scales and biases of a [rows, cols] weight */
size_t lmx_cpu_qtile_bytes(int64_t rows, int64_t cols, int bits, int group_size, bool bf16_scales);
/* fills w->pk / pk_blocks / pk_block_bytes / pk_sb16 from w->data, w->scales, w->biases (pk is freed
 * by weight_free); tiles are packed in parallel on `pool` */
lmx_status lmx_cpu_qtile_pack(lmx_bweight *w, lmx_thread_pool *pool);
/* s [groups], b [groups]: the scales and biases of row r as the tiles hold them (the embedding of a
 * repacked weight reads them here: the fp32 copies are freed after packing) */
void lmx_cpu_qtile_row_sb(const lmx_bweight *w, int64_t r, float *s, float *b);

/* The kernels of one level. */
typedef struct lmx_qtile_kernels {
    /* x [T, K] → xq [T, K] int16, xd [T, K/G] the steps, xs [T, K/G] xd·Σ xq per group of G */
    void (*quant_x)(const float *x, int T, int64_t K, int G, int16_t *xq, float *xd, float *xs);
    /* y[t, rows] (= or +=) x[t] · Wᵀ + bias for the tiles [b0, b1) (16 rows each), t < T */
    void (*rows)(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd, const float *xs,
                 int T, float *y, bool acc);
} lmx_qtile_kernels;

/* the kernels of a backend's level (the CPU supports it: lmx_cpu_kernels_select chose it); NULL at
 * the scalar level, which does not repack */
const lmx_qtile_kernels *lmx_cpu_qtile_kernels(lmx_cpu_level level);
/* the portable C kernels every level's equal bit for bit (the tests' oracle for the SIMD ones) */
extern const lmx_qtile_kernels lmx_qtile_reference;

/* ---- what cpu_qtile.c shares with the SIMD levels ---- */

/* bytes per (tile, group): the codes (gs inputs × 16 rows × bits), then 16 scales and 16 biases
 * (bf16 / f16 as stored — exact, they came from those — or fp32) */
static inline size_t lmx_qtile_group_bytes(int bits, int gs, bool sb16) {
    return (size_t)gs * (size_t)bits * 2 + (sb16 ? 64 : 128);
}
/* groups whose max|x| is below this are zero groups (32767 / max|x| stays finite above it) */
#define LMX_QTILE_XMIN 1e-30f

/* A group whose max |x| (bits m, its float *amax) is not finite or below LMX_QTILE_XMIN: its codes
 * q [G] are zero and its step *d and sum *sum NaN (a NaN / inf input) or 0; true when the group was
 * such a group (every level's activation quantizer, one rule) */
static inline bool lmx_qtile_group_degenerate(uint32_t m, float *amax, int16_t *q, int G, float *d, float *sum) {
    memcpy(amax, &m, 4);
    if (m < 0x7f800000u && *amax >= LMX_QTILE_XMIN) return false;
    memset(q, 0, (size_t)G * sizeof *q);
    *d = *sum = m >= 0x7f800000u ? NAN : 0.0f;
    return true;
}
/* decode kernels prefetch this far ahead in their tile stream (4 KiB: in quiet A/B rounds on the
 * 2-core EPYC it was ahead of none in 5 of 6 pairs; the machine's noise hides a firm number) */
#define LMX_QTILE_PREFETCH 4096

/* the int16 pair (p[0], p[1]) as one 32-bit lane, for a broadcast against the code pairs */
static inline int32_t lmx_qtile_pair(const int16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* a SIMD level's kernel over the tiles [b0, b1) for one pass of a fixed number of tokens */
typedef void (*lmx_qtile_tiles_fn)(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                                   const float *xs, float *y, bool acc);

/* The rows op of the SIMD levels: T tokens in passes of nt_max (the last one the rest) over each run
 * of `run` tiles of [b0, b1), fn[nt - 1] computing a pass of nt tokens: a run's codes stay in L2
 * between the passes of a prefill, and a token's result is the same whichever pass holds it. */
static inline void lmx_qtile_passes(const lmx_qtile_tiles_fn *fn, int nt_max, int64_t run, const lmx_bweight *w,
                                    int64_t b0, int64_t b1, const int16_t *xq, const float *xd, const float *xs,
                                    int T, float *y, bool acc) {
    const int64_t K = w->cols;
    const int G = w->groups;
    for (int64_t r = b0; r < b1; r += run) {
        const int64_t re = b1 - r < run ? b1 : r + run;
        for (int t = 0; t < T; t += nt_max) {
            const int nt = T - t < nt_max ? T - t : nt_max;
            fn[nt - 1](w, r, re, xq + (size_t)t * (size_t)K, xd + (size_t)t * G, xs + (size_t)t * G,
                       y + (size_t)t * (size_t)w->rows, acc);
        }
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
extern const lmx_qtile_kernels lmx_qtile_avx2, lmx_qtile_avxvnni, lmx_qtile_avx512;
#endif

#endif
