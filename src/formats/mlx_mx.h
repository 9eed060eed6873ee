/* mlx_mx.h — MLX's floating-point quantization modes mxfp4, mxfp8 and nvfp4 (quant_mode.h): the
 * element codecs, the quantizer and the dequantizer, bit for bit as MLX's GPU kernels
 * (mlx/backend/metal/kernels/fp_quantized.h `fp_quantize`, fp4.h, fp8.h; the CUDA kernel in
 * mlx/backend/cuda/quantized/fp_quantize.cuh computes the same) and the CPU helpers of
 * mlx/backend/cpu/quantized.cpp (`to_fp8_e8m0`, `to_fp4_e2m1`).
 *
 * Per group of G elements (G = 32, or 16 for nvfp4), all in fp32:
 *   amax = max |w|;  d = amax / M  (M = 6 for the fp4 modes, 448 for mxfp8);
 *   scale code s = E8M0(d) (mx modes) or E4M3(d) (nvfp4); sd = the decoded scale;
 *   code_k = Q(w_k * (sd == 0 ? 0 : 1 / sd))  (Q = E2M1 or E4M3 below).
 * Dequantization: w_k = sd * value(code_k).
 *
 * Codecs:
 *   E8M0: encode clamp(round(log2 d), -127, 127) + 127 (round = half away from zero; d = 0 gives
 *         -127, i.e. code 0; d < 0 gives 0; non-finite gives 0xFF); decode 2^(s-127), except s = 0
 *         decodes to 2^-127 as well (MLX's special case; the bit pattern 0x00400000).
 *   E4M3 (OCP e4m3fn, bias 7, subnormals, no infinities): encode rounds to nearest even and
 *         saturates to ±448 (0x7E), as PyTorch's `fp8e4m3fn_from_fp32_value`; decode exact.
 *   E2M1: values {0, .5, 1, 1.5, 2, 3, 4, 6}, bit 3 = sign; encode rounds to nearest with ties to
 *         the even code (0.25 → 0, 0.75 → 1, 1.25 → 1, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4), values
 *         above 5 → 6, the sign of zero kept (−0.1 → code 8), NaN → 7.
 * MLX's graph fallback (ops.cpp, used by mx.quantize on the CPU stream) computes in the weights'
 * dtype and picks E2M1 codes with argmin (ties to the smaller magnitude, small negatives to +0):
 * it can differ from the kernels on ties; lmx follows the kernels, which mlx-community
 * conversions (Apple GPUs) use.
 *
 * Layout: codes packed LSB first (code k of a row in bits [k*bits, (k+1)*bits) of the row's
 * little-endian bitstream: 8 E2M1 codes or 4 E4M3 codes per U32 word); scales one uint8 per group.
 * Ownership: callers own every buffer. Thread-safety: all functions are reentrant.
 */
#ifndef LMX_FORMATS_MLX_MX_H
#define LMX_FORMATS_MLX_MX_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "formats/quant_mode.h"
#include "formats/safetensors.h"
#include "lmx.h"

/* E2M1 code (low 4 bits) → value. */
static inline float lmx_e2m1_to_f32(unsigned code) {
    static const float lut[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
    return lut[code & 15];
}

/* E8M0 scale code → 2^(s-127) (s = 0 → 2^-127; s = 255 → +inf, MLX's bit pattern). */
static inline float lmx_e8m0_to_f32(uint8_t s) {
    uint32_t u = s == 0 ? 0x00400000u : (uint32_t)s << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* E4M3 (e4m3fn) code → value (0x7F / 0xFF decode as MLX's half trick does: ±480): a normal code is
 * the fp32 with exponent e + 120 and the 3 mantissa bits on top; a subnormal one m · 2^-9. */
static inline float lmx_e4m3_to_f32(uint8_t b) {
    uint32_t e = (b >> 3) & 15u, m = b & 7u, u = ((uint32_t)(b & 0x80) << 24) | ((e + 120u) << 23) | (m << 20);
    float v;
    memcpy(&v, &u, 4);
    if (e == 0) v = (b & 0x80) ? -(float)m * 0.001953125f : (float)m * 0.001953125f;
    return v;
}

uint8_t lmx_f32_to_e2m1(float x);
uint8_t lmx_f32_to_e4m3(float x);
uint8_t lmx_f32_to_e8m0(float x);

/* The decoded scale of scale code s in mode m (an fp mode). */
static inline float lmx_mx_scale(lmx_quant_mode m, uint8_t s) {
    return m == LMX_QUANT_NVFP4 ? lmx_e4m3_to_f32(s) : lmx_e8m0_to_f32(s);
}

/* The value of code c (an E2M1 nibble or an E4M3 byte) in mode m, before the scale. */
static inline float lmx_mx_value(lmx_quant_mode m, unsigned c) {
    return m == LMX_QUANT_MXFP8 ? lmx_e4m3_to_f32((uint8_t)c) : lmx_e2m1_to_f32(c);
}

/* Code k of a packed row in mode m. */
static inline unsigned lmx_mx_code(lmx_quant_mode m, const uint8_t *row, int64_t k) {
    return m == LMX_QUANT_MXFP8 ? row[k] : (unsigned)(row[k >> 1] >> ((k & 1) * 4)) & 15u;
}

/* Quantizes one row of n elements (n a multiple of the mode's group size) into codes[n*bits/8]
 * bytes and scales[n/group] codes. Errors: LMX_ERR_INVALID_ARGUMENT (an affine or unknown mode, a
 * bad n, a non-finite element). */
lmx_status lmx_mx_quantize_row(const float *w /* [n] */, int64_t n, lmx_quant_mode mode, uint8_t *codes,
                               uint8_t *scales);

/* Quantizes a row-major [rows, cols] matrix with `threads` threads (0 = online CPUs). */
lmx_status lmx_mx_quantize_matrix(const float *w, int64_t rows, int64_t cols, lmx_quant_mode mode, uint8_t *codes,
                                  uint8_t *scales, int threads);

/* Dequantizes elements [first, first+count) of one row (codes = the row's bytes, scales = its
 * n/group codes). Errors: LMX_ERR_INVALID_ARGUMENT. */
lmx_status lmx_mx_dequantize_row(const uint8_t *codes, const uint8_t *scales, lmx_quant_mode mode, int64_t first,
                                 int64_t count, float *out /* [count] */);

/* Checks the tensors of an fp-mode module: weight U32 [rows, cols*bits/32], scales U8
 * [rows, cols/group] (stacked experts: [E, rows, ...] both), no biases tensor (biases may be NULL;
 * non-NULL is an error). *cols_out = the logical column count. Errors:
 * LMX_ERR_INVALID_MODEL_FORMAT naming the tensor. */
lmx_status lmx_mx_check_views(const lmx_tensor_view *weight, const lmx_tensor_view *scales,
                              const lmx_tensor_view *biases, lmx_quant_mode mode, int64_t *cols_out);

#endif
