/* cpu_simd.h — the CPU backend's inner kernels, selected once per backend at creation: a portable
 * scalar set (the reference), an AVX2+FMA+F16C set and an AVX-512 F/BW/VL/DQ(+VNNI) set, each used
 * when the CPU supports it (runtime CPUID check) and the backend's level allows it.
 * Pure functions on caller memory; thread-safe. Results of the two sets differ only by fp32
 * rounding order.
 */
#ifndef LMX_BACKEND_CPU_SIMD_H
#define LMX_BACKEND_CPU_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lmx_cpu_kernels {
    const char *name;                                              /* "scalar", "avx2", "avx512" */
    float (*dot)(const float *a, const float *b, int64_t n);       /* Σ a·b */
    /* out[i] = Σ x·w[i*n…], i < 4; each row's result depends only on that row (not on the others) */
    void (*dot4)(const float *x, const float *w, int64_t n, float out[4]);
    void (*axpy)(float *y, const float *x, float a, int64_t n);    /* y += a·x */
    /* out[t*4+i] = Σ x[t*x_stride…]·w[i*n…], t, i < 4 (prefill register tile; NULL in the sets
     * without one: dot4 per token); each result depends only on its own row and token */
    void (*dot4x4)(const float *x, size_t x_stride, const float *w, int64_t n, float out[16]);
    /* Σ x·w for n bf16 / f16 weights read in place (unaligned); same result as converting then dot */
    float (*dot_bf16)(const float *x, const uint8_t *w, int64_t n);
    float (*dot_f16)(const float *x, const uint8_t *w, int64_t n);
    void (*bf16_row)(const uint8_t *src, int64_t n, float *dst);   /* n bf16 (unaligned) → f32 */
    void (*f16_row)(const uint8_t *src, int64_t n, float *dst);    /* n f16 (unaligned) → f32 */
    void (*quant_row)(const uint8_t *row, int bits, int64_t n, float *q); /* LSB-first codes → f32 */
    /* one quantized row · x: Σ_g s[g]·Σ_k x_k q_k + b[g]·xsum[g] over `groups` groups of gs;
     * `tmp` is [groups*gs] scratch (used when no fused path exists for `bits`) */
    float (*qdot)(const float *x, const uint8_t *row, int bits, int gs, int groups, const float *s, const float *b,
                  const float *xsum, float *tmp);
} lmx_cpu_kernels;

/* Fills *k with the best set this CPU supports at or below max_level (an lmx_cpu_level) and returns
 * the level chosen. */
int lmx_cpu_kernels_select(lmx_cpu_kernels *k, int max_level);

#endif
