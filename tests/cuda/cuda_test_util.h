/* cuda_test_util.h — host helpers shared by the CUDA kernel test and benchmark: a seeded RNG,
 * bf16/f16 conversions (round to nearest even), and MLX affine packing of random quantized weights.
 * Header-only, no state beyond the caller's RNG. */
#ifndef LMX_TESTS_CUDA_TEST_UTIL_H
#define LMX_TESTS_CUDA_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t s; } tu_rng;
static inline uint64_t tu_next(tu_rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* uniform in [-1, 1) */
static inline float tu_unif(tu_rng *r) { return (float)((tu_next(r) >> 40) * (1.0 / 8388608.0) - 1.0); }

static inline uint16_t tu_f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float tu_bf2f(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t tu_f2h(float f) { /* normal and subnormal range, RNE */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    float a = fabsf(f);
    if (a >= 65520.f) return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05f) { /* subnormal: units of 2^-24 */
        uint32_t m = (uint32_t)lrintf(a * 16777216.f);
        return (uint16_t)(sign | m);
    }
    int e;
    float m = frexpf(a, &e);                       /* a = m * 2^e, m in [0.5,1) */
    uint32_t mant = (uint32_t)lrintf((m * 2.f - 1.f) * 1024.f);
    int ex = e - 1 + 15;
    if (mant == 1024) { mant = 0; ex++; }
    return (uint16_t)(sign | ((uint32_t)ex << 10) | mant);
}
static inline float tu_h2f(uint16_t h) {
    uint32_t sign = h & 0x8000u, ex = (h >> 10) & 31u, mant = h & 1023u;
    float v;
    if (ex == 0) v = ldexpf((float)mant, -24);
    else if (ex == 31) v = mant ? NAN : INFINITY;
    else v = ldexpf((float)(mant | 1024u), (int)ex - 25);
    return sign ? -v : v;
}

/* dtype codes as lmx_dtype: 0 F32, 1 F16, 2 BF16. Stores v in element i of `dst`, returns the
 * value as stored (rounded). */
static inline float tu_store(void *dst, size_t i, int dt, float v) {
    if (dt == 2) { uint16_t b = tu_f2bf(v); ((uint16_t *)dst)[i] = b; return tu_bf2f(b); }
    if (dt == 1) { uint16_t h = tu_f2h(v); ((uint16_t *)dst)[i] = h; return tu_h2f(h); }
    ((float *)dst)[i] = v;
    return v;
}
static inline size_t tu_dsize(int dt) { return dt == 0 ? 4 : 2; }

/* Random MLX affine weights [n, k]: packed words [n, k*bits/32], scales/biases [n, k/gs] of dt.
 * deq (optional, [n, k] float) receives the dequantized values exactly as stored. */
static inline void tu_make_quant(tu_rng *r, int64_t n, int64_t k, int bits, int gs, int dt,
                                 uint32_t *words, void *scales, void *biases, float *deq) {
    const int64_t wpr = k * bits / 32, gpr = k / gs;
    memset(words, 0, (size_t)(n * wpr) * 4);
    for (int64_t row = 0; row < n; row++) {
        uint32_t *w = words + row * wpr;
        for (int64_t g = 0; g < gpr; g++) {
            float s = tu_store(scales, (size_t)(row * gpr + g), dt, (0.002f + 0.02f * fabsf(tu_unif(r))) *
                                                                       (tu_unif(r) < 0 ? -1.f : 1.f));
            float b = tu_store(biases, (size_t)(row * gpr + g), dt, 0.05f * tu_unif(r));
            for (int64_t j = 0; j < gs; j++) {
                int64_t i = g * gs + j;
                uint32_t q = (uint32_t)(tu_next(r) >> 33) & ((1u << bits) - 1u);
                int64_t bit = i * bits;
                w[bit >> 5] |= q << (bit & 31);
                if ((bit & 31) + bits > 32) w[(bit >> 5) + 1] |= q >> (32 - (bit & 31));
                if (deq) deq[row * k + i] = s * (float)q + b;
            }
        }
    }
}

#endif
