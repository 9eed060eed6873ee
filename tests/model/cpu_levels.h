/* cpu_levels.h — what the CPU kernel-level tests share (test_cpu_levels.c, test_mx_kernels.c, test_moe_ops.c): one CPU
 * backend per forced level with 1 and 3 threads, a buffer from host floats, and one matmul (or
 * matmul_add when y0) through a backend. Static: each test file holds its own backends. */
#ifndef LMX_TESTS_MODEL_CPU_LEVELS_H
#define LMX_TESTS_MODEL_CPU_LEVELS_H

#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "lmx_test.h"

#define N_LEVELS (LMX_CPU_AVX512 + 1)
static const char *level_name[N_LEVELS] = {"scalar", "avx2", "avxvnni", "avx512"};
static lmx_backend *be[N_LEVELS][2]; /* [level][1 thread, 3 threads] */

/* creates be[][] (false when a backend cannot be made) and says which kernels each level runs */
static inline bool levels_create(void) {
    for (int L = 0; L < N_LEVELS; L++)
        for (int i = 0; i < 2; i++)
            if (lmx_backend_cpu_create_level(i ? 3 : 1, (lmx_cpu_level)L, &be[L][i]) != LMX_OK) {
                fprintf(stderr, "cannot create a cpu backend\n");
                return false;
            }
    for (int L = 0; L < N_LEVELS; L++) {
        const char *got = lmx_backend_cpu_kernels(be[L][0]);
        fprintf(stderr, "level %s: kernels %s%s\n", level_name[L], got,
                strcmp(got, level_name[L]) ? " (this CPU lacks the level: the best below runs)" : "");
        CHECK(!strcmp(lmx_backend_cpu_kernels(be[L][1]), got));
    }
    return true;
}

static inline void levels_destroy(void) {
    for (int L = 0; L < N_LEVELS; L++)
        for (int i = 0; i < 2; i++) lmx_backend_destroy(be[L][i]);
}

static inline lmx_buf *buf_from(lmx_backend *b, const float *x, size_t n) {
    lmx_buf *r = NULL;
    CHECK(b->ops->buf_alloc(b, n, &r) == LMX_OK);
    if (r && x) b->ops->buf_write(b, r, 0, x, n);
    return r;
}

/* y = W x (+ y0 when y0) through backend b; out [T*rows] */
static inline void run_matmul(lmx_backend *b, const lmx_weight_desc *d, const float *x, int T, const float *y0, float *out) {
    lmx_bweight *w = NULL;
    CHECK(b->ops->weight_upload(b, d, &w) == LMX_OK);
    if (!w) return;
    lmx_buf *bx = buf_from(b, x, (size_t)T * d->cols), *by = buf_from(b, y0, (size_t)T * d->rows);
    lmx_status st = y0 ? b->ops->matmul_add(b, w, bx, 0, T, by) : b->ops->matmul(b, w, bx, 0, T, by);
    CHECK(st == LMX_OK);
    b->ops->buf_read(b, by, 0, out, (size_t)T * d->rows);
    b->ops->weight_free(b, w);
    b->ops->buf_free(b, bx);
    b->ops->buf_free(b, by);
}

#endif
