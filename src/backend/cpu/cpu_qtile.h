/* cpu_qtile.h — the AVX-512 VNNI path for MLX affine 4/8-bit weights (layout and arithmetic in
 * cpu_qtile.c): a weight is repacked at upload into 16-row interleaved tiles (owned memory, the
 * size lmx_cpu_qtile_bytes gives, on top of the fp32 scales/biases the embedding keeps), the
 * activations are quantized to int16 per group once per matmul, and one kernel computes blocks of
 * 16 output rows × up to 4 tokens (decode GEMV and prefill alike). Only used by a backend whose
 * kernel level is avx512 (the CPU has AVX-512 F/BW/VL/DQ and VNNI). Pure functions on caller memory. */
#ifndef LMX_BACKEND_CPU_QTILE_H
#define LMX_BACKEND_CPU_QTILE_H

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
/* x [T, K] → xq [T, K] int16, xd [T, K/G] steps, xs [T, K/G] fp32 sums of x per group of G */
void lmx_cpu_qtile_quant_x(const float *x, int T, int64_t K, int G, int16_t *xq, float *xd, float *xs);
/* y[t, rows] (= or +=) x[t] · Wᵀ + bias for the row blocks [b0, b1) (16 rows each), t < T */
void lmx_cpu_qtile_rows(const lmx_bweight *w, int64_t b0, int64_t b1, const int16_t *xq, const float *xd,
                        const float *xs, int T, float *y, bool acc);

#endif
