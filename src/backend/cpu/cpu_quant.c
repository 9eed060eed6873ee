/* cpu_quant.c — see cpu_quant.h. */
#include "backend/cpu/cpu_quant.h"

#include <math.h>

void lmx_cpu_quant_decode_row(const uint8_t *row, int bits, int64_t n, float *q) {
    if (bits == 4) {
        for (int64_t k = 0; k < n; k += 2) {
            uint8_t b = row[k >> 1];
            q[k] = (float)(b & 15);
            q[k + 1] = (float)(b >> 4);
        }
        return;
    }
    if (bits == 8) {
        for (int64_t k = 0; k < n; k++) q[k] = (float)row[k];
        return;
    }
    if (bits == 2) {
        for (int64_t k = 0; k < n; k += 4) {
            uint8_t b = row[k >> 2];
            q[k] = (float)(b & 3);
            q[k + 1] = (float)((b >> 2) & 3);
            q[k + 2] = (float)((b >> 4) & 3);
            q[k + 3] = (float)(b >> 6);
        }
        return;
    }
    /* 3, 5, 6 bits: 8 elements (3/5 bits) or 4 elements (6 bits) fill whole bytes; decode blocks of
     * 8 elements = `bits` bytes as one little-endian integer. n is a multiple of 32. */
    const uint32_t mask = (1u << bits) - 1u;
    for (int64_t k = 0; k < n; k += 8) {
        const uint8_t *p = row + (k / 8) * bits;
        uint64_t v = 0;
        for (int i = 0; i < bits; i++) v |= (uint64_t)p[i] << (8 * i);
        for (int j = 0; j < 8; j++) q[k + j] = (float)((v >> (j * bits)) & mask);
    }
}

float lmx_cpu_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    int exp = (h >> 10) & 31;
    uint32_t man = h & 1023;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {
            float f = ldexpf((float)man, -24);
            memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((uint32_t)(exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}
