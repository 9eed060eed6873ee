/* cpu_mx.h — the CPU backend's kernels for MLX's fp quantization modes mxfp4 / mxfp8 / nvfp4
 * (formats/quant_mode.h): a weight keeps its stored codes and uint8 scale codes (the mmapped bytes,
 * nothing decoded ahead); one fused dot per row decodes the codes in registers once for up to 4
 * tokens (2 at AVX2; AVX2 with T > 1 decodes blocks of 4 rows to fp32 and runs the same dot on them,
 * 3 tokens at a time), and every token's arithmetic is that of the 1-token dot, so row t of a
 * T-token matmul equals the 1-token matmul on x[t] bit for bit, for every T. Levels:
 * scalar (the reference), AVX2 (E2M1 through an 8-entry vpermps table plus the sign bit, E4M3
 * through the f16 converter) and AVX-512 (E2M1 through a 16-entry vpermps table). nvfp4 shares the
 * E2M1 paths; its E4M3 scales are decoded per group. Only cpu_backend.c and cpu_compute.c call it. */
#ifndef LMX_BACKEND_CPU_MX_H
#define LMX_BACKEND_CPU_MX_H

#include "backend/cpu/cpu_backend_internal.h"

/* Fills the fp-mode fields of w (kind, rows, cols set by the caller) from d: codes and scale codes
 * in place. */
void lmx_cpu_mx_upload(const lmx_weight_desc *d, lmx_bweight *w);
/* y[T, rows] (=, or += when acc) x[T, cols] · Wᵀ + bias for an fp-mode weight, on the pool. */
lmx_status lmx_cpu_mx_matmul(cpu_backend *c, const lmx_bweight *w, const float *x, int T, float *y, bool acc);
/* Row r of an fp-mode weight dequantized into out[cols] at the backend's level. */
void lmx_cpu_mx_row(const cpu_backend *c, const lmx_bweight *w, int64_t r, float *out);

#endif
