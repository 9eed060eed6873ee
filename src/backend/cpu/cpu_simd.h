/* cpu_simd.h — the CPU backend's inner kernels, selected once per backend at creation: a portable
 * scalar set (the reference), an AVX2+FMA+F16C set and an AVX-512 F/BW/VL/DQ(+VNNI) set, each used
 * when the CPU supports it (runtime CPUID check) and the backend's level allows it.
 * Pure functions on caller memory; thread-safe. Results of the sets differ only by fp32 rounding
 * order; within a set the matmul kernels share one order per (row, token) (below).
 */
#ifndef LMX_BACKEND_CPU_SIMD_H
#define LMX_BACKEND_CPU_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lmx_cpu_kernels {
    const char *name;                                              /* "scalar", "avx2", "avxvnni", "avx512" */
    float (*dot)(const float *a, const float *b, int64_t n);       /* Σ a·b */
    /* The matmul kernels. Every one computes each (row, token) dot in one fixed order per set, so a
     * row's result is bit for bit the same whichever kernel, tile or batch of tokens computes it:
     * dot4[i] == dot4x4[t*4+i] == dot4_w16[i] on the same (converted) row, and qdot == qdotf on the
     * row's codes decoded to floats. */
    /* out[i] = Σ x·w[i*w_stride…], i < 4 */
    void (*dot4)(const float *x, const float *w, size_t w_stride, int64_t n, float out[4]);
    /* out[t*4+i] = Σ x[t*x_stride…]·w[i*n…], t, i < 4 (prefill register tile; NULL in the sets
     * without one: dot4 per token) */
    void (*dot4x4)(const float *x, size_t x_stride, const float *w, int64_t n, float out[16]);
    /* out[i] = Σ x·w_i for 4 rows of n bf16 (else f16) weights at w + i*w_stride bytes, read in
     * place (unaligned) */
    void (*dot4_w16)(const float *x, const uint8_t *w, size_t w_stride, int64_t n, bool bf16, float out[4]);
    /* bf16 weights × activations split in two bf16 parts, hi = bf16(x), lo = bf16(x − hi) (hi + lo
     * is x to ~2^-16 relative), by the CPU's bf16 dot products (NULL without AVX512-BF16: then
     * dot4 / dot4x4 / dot4_w16 take bf16 weights too): out[t*4+i] = Σ (hi+lo)[t*x_stride…]·w_i for
     * nt <= 4 tokens and 4 rows at w + i*w_stride bytes, read in place; each (row, token) in one
     * order whatever nt */
    void (*bf16_split)(const float *x, int64_t n, uint16_t *hi, uint16_t *lo);
    void (*dot4xn_bf16)(const uint16_t *hi, const uint16_t *lo, size_t x_stride, int nt, const uint8_t *w,
                        size_t w_stride, int64_t n, float out[16]);
    void (*axpy)(float *y, const float *x, float a, int64_t n);    /* y += a·x */
    void (*bf16_row)(const uint8_t *src, int64_t n, float *dst);   /* n bf16 (unaligned) → f32 */
    void (*f16_row)(const uint8_t *src, int64_t n, float *dst);    /* n f16 (unaligned) → f32 */
    void (*quant_row)(const uint8_t *row, int bits, int64_t n, float *q); /* LSB-first codes → f32 */
    /* one quantized row · x: Σ_g s[g]·Σ_k x_k q_k + b[g]·xsum[g] over `groups` groups of gs;
     * `tmp` is [groups*gs] scratch for the decoded codes (4/8-bit weights in groups of 32/64/128 take
     * the repacked tiles of cpu_qtile.h instead) */
    float (*qdot)(const float *x, const uint8_t *row, int bits, int gs, int groups, const float *s, const float *b,
                  const float *xsum, float *tmp);
    /* qdot on the row's codes already decoded by quant_row: q [groups*gs] */
    float (*qdotf)(const float *x, const float *q, int gs, int groups, const float *s, const float *b,
                   const float *xsum);
    /* out[t] = qdotf(x + t*x_stride, q, …, xsum + t*groups), t < 4 (prefill tile; NULL in the sets
     * without one: qdotf per token) */
    void (*qdotf4)(const float *x, size_t x_stride, const float *q, int gs, int groups, const float *s, const float *b,
                   const float *xsum, float out[4]);
} lmx_cpu_kernels;

/* Fills *k with the best set this CPU supports at or below max_level (an lmx_cpu_level) and returns
 * the level chosen (the avxvnni level runs the AVX2 set here; its VNNI kernels are cpu_qtile's). */
int lmx_cpu_kernels_select(lmx_cpu_kernels *k, int max_level);

#endif
