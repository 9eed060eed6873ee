/* mlx_quant.h — MLX affine quantization (mode "affine"): the quantizer and dequantizer, bit for bit
 * as MLX's CPU backend (mlx/backend/cpu/quantized.cpp `quantize`, version read 2025).
 *
 * Per group of G consecutive elements of a row (G ∈ {32, 64, 128}, bits ∈ {2, 3, 4, 5, 6, 8}),
 * all arithmetic in fp32:
 *   min, max over the group; scale = max((max - min) / (2^bits - 1), 1e-7);
 *   edge = min if |min| > |max| else max; scale is negated when edge == max;
 *   q0 = rint(edge / scale); if q0 != 0 { scale = edge / q0; bias = edge } else bias = 0;
 *   q = clamp(rint((w - bias) / scale), 0, 2^bits - 1)
 * q is computed with the UNROUNDED fp32 scale and bias; only afterwards are scale and bias cast to
 * the stored dtype (bf16/f16/f32, round to nearest even) — exactly what MLX does
 * (`scales[i] = static_cast<T>(scale)` after the packing loop). rint rounds half to even.
 * Dequantization: w = scale * q + bias in fp32, with scale and bias as stored (converted to fp32).
 *
 * Device flavours: mlx-community checkpoints are usually converted on Apple GPUs, and MLX's Metal
 * kernel (mlx/backend/metal/kernels/quantized.h `affine_quantize`) differs from the CPU one in two
 * corner cases: it rounds with round() (ties away from zero) instead of rint() (ties to even), and
 * its max reduction starts at 0, so an all-negative group uses max = 0. LMX_MLX_CPU (the reference
 * above, also what the golden fixtures use) and LMX_MLX_METAL reproduce each bit for bit; they
 * agree on every group without a tie or an all-negative range, i.e. almost always.
 *
 * Packing: each row is a little-endian, LSB-first bitstream: element k occupies stream bits
 * [k*bits, (k+1)*bits), stream bit n is bit n%8 of byte n/8; a row of n elements is n*bits/8 bytes
 * = n*bits/32 uint32 words (MLX's U32 tensors [rows, cols*bits/32]). Byte pointers here may be
 * unaligned. Scales/biases buffers hold raw little-endian elements of the given dtype.
 *
 * Ownership: callers own every buffer. Thread-safety: all functions are reentrant.
 */
#ifndef LMX_FORMATS_MLX_QUANT_H
#define LMX_FORMATS_MLX_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "formats/safetensors.h"
#include "lmx.h"

typedef enum lmx_mlx_flavor { LMX_MLX_CPU = 0, LMX_MLX_METAL = 1 } lmx_mlx_flavor;

/* The affine layouts MLX has: bits ∈ {2,3,4,5,6,8}, group_size ∈ {32,64,128}. */
static inline bool lmx_mlx_quant_bits_ok(int64_t bits) {
    return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}
static inline bool lmx_mlx_quant_group_ok(int64_t group_size) {
    return group_size == 32 || group_size == 64 || group_size == 128;
}
/* both */
bool lmx_mlx_quant_supported(int bits, int group_size);

/* Bytes of one packed row of n elements (n * bits / 8; n is a multiple of 32). */
static inline size_t lmx_mlx_quant_row_bytes(int64_t n, int bits) { return (size_t)n * (size_t)bits / 8; }

/* Quantizes one group of group_size elements: q[group_size] (values 0 … 2^bits-1) and the fp32
 * scale and bias before rounding to the storage dtype. Errors: LMX_ERR_INVALID_ARGUMENT for
 * unsupported bits/group_size or a non-finite element. */
lmx_status lmx_mlx_quantize_group(const float *w /* [group_size] */, int bits, int group_size,
                                  uint8_t *q /* [group_size] */, float *scale, float *bias, lmx_mlx_flavor flavor);

/* Quantizes one row of n elements (n % group_size == 0) into packed[n*bits/8] and
 * scales/biases[n/group_size] of dtype sdtype (F32, F16 or BF16). */
lmx_status lmx_mlx_quantize_row(const float *w /* [n] */, int64_t n, int bits, int group_size, lmx_dtype sdtype,
                                uint8_t *packed, uint8_t *scales, uint8_t *biases, lmx_mlx_flavor flavor);

/* Only the scales and biases of lmx_mlx_quantize_row (identical values, no packing work). */
lmx_status lmx_mlx_quantize_params_row(const float *w /* [n] */, int64_t n, int bits, int group_size, lmx_dtype sdtype,
                                       uint8_t *scales, uint8_t *biases, lmx_mlx_flavor flavor);

/* Calls row(ctx, r) for every r in [0, rows), the rows split in contiguous ranges over `threads` threads
 * (0 = online CPUs, at most 64). Each range stops at its first failing row; the first failing range's status
 * comes back with detail "row R: <its detail>". The matrix quantizers (affine and MX) share it. */
typedef lmx_status (*lmx_quant_row_fn)(void *ctx, int64_t r);
lmx_status lmx_quant_rows_parallel(int64_t rows, int threads, lmx_quant_row_fn row, void *ctx);

/* Quantizes a row-major [rows, cols] matrix with `threads` threads (0 = online CPUs):
 * packed [rows, cols*bits/8] bytes, scales/biases [rows, cols/group_size] of sdtype. */
lmx_status lmx_mlx_quantize_matrix(const float *w, int64_t rows, int64_t cols, int bits, int group_size,
                                   lmx_dtype sdtype, uint8_t *packed, uint8_t *scales, uint8_t *biases, int threads,
                                   lmx_mlx_flavor flavor);

/* Packs n values (each < 2^bits) as an LSB-first bitstream into out[n*bits/8] (n*bits % 8 == 0). */
void lmx_mlx_pack(const uint8_t *q, int64_t n, int bits, uint8_t *out);
/* Element k of a packed row. */
static inline unsigned lmx_mlx_unpack(const uint8_t *row, int bits, int64_t k) {
    uint64_t bit = (uint64_t)k * (uint64_t)bits;
    const uint8_t *p = row + (bit >> 3);
    unsigned sh = (unsigned)(bit & 7);
    unsigned v = p[0] >> sh;
    if (sh + (unsigned)bits > 8) v |= (unsigned)p[1] << (8 - sh);
    return v & ((1u << bits) - 1);
}

/* Dequantizes elements [first, first+count) of one row: packed = the row's bytes, scales/biases =
 * the row's n/group_size elements of sdtype. Errors: LMX_ERR_INVALID_ARGUMENT. */
lmx_status lmx_mlx_dequantize_row(const uint8_t *packed, const uint8_t *scales, const uint8_t *biases,
                                  lmx_dtype sdtype, int bits, int group_size, int64_t first, int64_t count,
                                  float *out /* [count] */);

/* Dequantizes elements [first, first+count) of row `row` of a quantized tensor given its three
 * views (weight U32 [rows, cols*bits/32], scales and biases [rows, cols/group_size], same float
 * dtype). Checks the shapes against bits and group_size. Errors: LMX_ERR_INVALID_MODEL_FORMAT
 * (naming the tensor) for inconsistent shapes/dtypes, LMX_ERR_INVALID_ARGUMENT for a bad range. */
lmx_status lmx_mlx_dequantize_view(const lmx_tensor_view *weight, const lmx_tensor_view *scales,
                                   const lmx_tensor_view *biases, int bits, int group_size, int64_t row,
                                   int64_t first, int64_t count, float *out);

#endif
