/* mlx_pack.h — test-only MLX affine quantizer/packer written from the description in
 * shared/docs/mlx-format.md §3.3 (per group: scale from the range, signed toward the larger-magnitude
 * extreme, bias = that extreme; values packed as an LSB-first bitstream). Returns malloc'd arrays.
 */
#ifndef LMX_TESTS_MLX_PACK_H
#define LMX_TESTS_MLX_PACK_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* ---- MLX affine packer (mlx/backend/cpu/quantized.cpp `quantize`, as described in mlx-format §3.3) ---- */

typedef struct qmat {
    int rows, cols, bits, gs;
    uint8_t *packed; /* [rows, cols*bits/8] */
    float *scales, *biases; /* [rows, cols/gs] */
    double *deq;     /* [rows, cols] dequantized reference */
} qmat;

static inline void put_bits(uint8_t *row, int64_t k, int bits, uint32_t v) {
    for (int b = 0; b < bits; b++) {
        int64_t bit = k * bits + b;
        if (v >> b & 1) row[bit / 8] |= (uint8_t)(1u << (bit % 8));
    }
}

static inline qmat quantize(const float *w, int rows, int cols, int bits, int gs) {
    qmat q = {rows, cols, bits, gs, NULL, NULL, NULL, NULL};
    const int G = cols / gs;
    const size_t rb = (size_t)cols * bits / 8;
    q.packed = calloc((size_t)rows * rb, 1);
    q.scales = malloc((size_t)rows * G * sizeof(float));
    q.biases = malloc((size_t)rows * G * sizeof(float));
    q.deq = malloc((size_t)rows * cols * sizeof(double));
    const float nmax = (float)((1 << bits) - 1);
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < G; g++) {
            const float *x = w + (size_t)r * cols + (size_t)g * gs;
            float mn = x[0], mx = x[0];
            for (int i = 1; i < gs; i++) {
                mn = fminf(mn, x[i]);
                mx = fmaxf(mx, x[i]);
            }
            float scale = fmaxf((mx - mn) / nmax, 1e-7f);
            bool side = fabsf(mn) > fabsf(mx);
            scale = side ? scale : -scale;
            float edge = side ? mn : mx;
            float q0 = rintf(edge / scale);
            float bias = 0;
            if (q0 != 0) {
                scale = edge / q0;
                bias = edge;
            }
            q.scales[(size_t)r * G + g] = scale;
            q.biases[(size_t)r * G + g] = bias;
            for (int i = 0; i < gs; i++) {
                float v = rintf((x[i] - bias) / scale);
                v = fminf(fmaxf(v, 0), nmax);
                put_bits(q.packed + (size_t)r * rb, (int64_t)g * gs + i, bits, (uint32_t)v);
                q.deq[(size_t)r * cols + (size_t)g * gs + i] = (double)scale * v + bias;
            }
        }
    return q;
}

static inline void qfree(qmat *q) {
    free(q->packed);
    free(q->scales);
    free(q->biases);
    free(q->deq);
}

#endif
