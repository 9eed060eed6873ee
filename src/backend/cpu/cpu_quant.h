/* cpu_quant.h — MLX affine quantization helpers for the CPU backend: decoding one row of an
 * LSB-first packed bitstream (any bits in {2,3,4,5,6,8}) and float conversions of stored elements.
 * Pure functions on caller memory; thread-safe.
 */
#ifndef LMX_BACKEND_CPU_QUANT_H
#define LMX_BACKEND_CPU_QUANT_H

#include <stdint.h>
#include <string.h>

/* Decodes n quantized values of one row (the row's packed bytes start at `row`) into q[n] as floats
 * in [0, 2^bits - 1]. Element k is bits [k*bits, (k+1)*bits) of the little-endian bitstream. */
void lmx_cpu_quant_decode_row(const uint8_t *row, int bits, int64_t n, float *q);

static inline float lmx_cpu_bf16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float lmx_cpu_f16(const uint8_t *p);

#endif
