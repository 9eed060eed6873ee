/* cuda_mx.h — the CUDA kernels of MLX's fp quantization modes mxfp4 / mxfp8 / nvfp4
 * (formats/quant_mode.h, formats/mlx_mx.h) over the stored codes: a GEMV for decode (T <= 4, fp32
 * accumulation, one warp per row streaming 16-byte code words), the bf16 expansion of a row range
 * (exact: every fp-mode value is a bf16), the prefill GEMM as expansion of row chunks into a scratch
 * followed by the backend's dense bf16 GEMM (lmx_cuda_gemm), and the embedding gather. C-callable;
 * the host side of cuda_mx.cu. */
#ifndef LMX_BACKEND_CUDA_MX_H
#define LMX_BACKEND_CUDA_MX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_kernels.h"
#include "formats/quant_mode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An fp-mode matrix W [n, k] in device memory, applied as y = x·Wᵀ (+ bias):
 * w: uint32 codes [n, k*bits/32] (E2M1 nibbles LSB first, or E4M3 bytes), 16-byte aligned rows
 * (k a multiple of 32); scales: uint8 [n, k/group] (E8M0, or E4M3 for nvfp4); bias: fp32 [n] or NULL. */
typedef struct lmx_cuda_mx {
    const void *w;
    const uint8_t *scales;
    const float *bias;
    lmx_quant_mode mode;
    int64_t n, k;
} lmx_cuda_mx;

/* Checks the fields (not the memory). LMX_ERR_INVALID_ARGUMENT with a detail otherwise. */
lmx_status lmx_cuda_mx_check(const lmx_cuda_mx *m);

/* y[b, :] (=, or += when accumulate) x[b, :]·Wᵀ + bias for b < batch (any batch; 4 rows of x per
 * pass). x: device [batch, k] fp32; y: device [batch, n] fp32 (must not alias x). */
lmx_status lmx_cuda_mx_gemv(const lmx_cuda_mx *m, const float *x, float *y, int batch, bool accumulate,
                            lmx_cuda_stream stream);

/* Rows [row0, row0 + rows) of W as dense bf16 [rows, k] at out (device, 16-byte aligned). */
lmx_status lmx_cuda_mx_expand_bf16(const lmx_cuda_mx *m, int64_t row0, int64_t rows, void *out,
                                   lmx_cuda_stream stream);

/* out[t, :] = scale * row ids[t] of W (ids: device int32 [T]; out-of-range ids give zero rows). */
lmx_status lmx_cuda_mx_embed(const lmx_cuda_mx *m, const int32_t *ids, int T, float scale, float *out,
                             lmx_cuda_stream stream);

/* The matmul of the backend's ops: T <= 4 (or a shape the GEMM does not take) the GEMV; else row
 * chunks expanded into *scratch (grown here to at most LMX_CUDA_MX_SCRATCH bytes, kept for the next
 * call; the stream is synchronized before an old scratch is freed) and multiplied by lmx_cuda_gemm
 * (bf16 operands, fp32 accumulation). */
#define LMX_CUDA_MX_SCRATCH ((size_t)64 << 20)
lmx_status lmx_cuda_mx_matmul(const lmx_cuda_mx *m, const float *x, float *y, int T, bool accumulate, void **scratch,
                              size_t *scratch_bytes, lmx_cuda_stream stream);

#ifdef __cplusplus
}
#endif

#endif
