/* cuda_kernel_check.h — what the CUDA kernel tests share (test_cuda_kernels.c, test_cuda_weights.c,
 * test_cuda_attention.c): the seeded RNG of the run, device buffers (uploaded, or poisoned with NaN so
 * that an unwritten element fails), random vectors, the relative-error comparison against a double
 * reference, and the start of a run (device check, seed). Header-only; one test program each. */
#ifndef LMX_TESTS_CUDA_KERNEL_CHECK_H
#define LMX_TESTS_CUDA_KERNEL_CHECK_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmx_test.h"

#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_kernels.h"
#include "cuda_test_util.h"

static tu_rng rng;

#define OKS(expr)                                                                                 \
    do {                                                                                          \
        lmx_status s_ = (expr);                                                                   \
        CHECK_MSG(s_ == LMX_OK, "%s -> %s: %s", #expr, lmx_status_str(s_), lmx_last_error_detail()); \
        if (s_ != LMX_OK) return;                                                                 \
    } while (0)

static inline void *dev_upload(const void *h, size_t bytes) {
    void *d = NULL;
    if (lmx_cuda_malloc(&d, bytes) != LMX_OK) return NULL;
    if (lmx_cuda_memcpy_h2d(d, h, bytes, NULL) != LMX_OK) { lmx_cuda_free(d); return NULL; }
    return d;
}
static inline void *dev_poisoned(size_t bytes) {
    void *d = NULL;
    if (lmx_cuda_malloc(&d, bytes) != LMX_OK) return NULL;
    lmx_cuda_memset(d, 0xff, bytes, NULL); /* 0xffffffff is a NaN */
    return d;
}
static inline float *randv(size_t n, float amp) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = amp * tu_unif(&rng);
    return v;
}

/* ‖got − ref‖ / ‖ref‖, plus NaN detection; reports and counts a failure above tol. */
static inline void compare(const char *what, const float *got, const double *ref, size_t n, double tol) {
    double num = 0, den = 0, worst = 0;
    size_t worst_i = 0, nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) { nan++; continue; }
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        if (fabs(d) > worst) { worst = fabs(d); worst_i = i; }
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    CHECK_MSG(nan == 0 && rel <= tol, "%s: rel err %.3g (tol %.1g), %zu non-finite, worst |d| %.3g at %zu (got %.6g ref %.6g)",
              what, rel, tol, nan, worst, worst_i, (double)got[worst_i], ref[worst_i]);
    if (getenv("LMX_TEST_VERBOSE")) fprintf(stderr, "  %-48s rel %.3g\n", what, rel);
}

/* The start of a run: false (after a SKIP) when the build has no CUDA backend or no CUDA device is
 * present; else prints the device, seeds the run's RNG (LMX_TEST_SEED=N repeats a run) and returns
 * true. */
static inline bool kernel_check_start(void) {
    int n = 0;
    if (!lmx_cuda_available(&n)) {
        SKIP("no CUDA device (or no driver, or a build without CUDA): GPU kernel tests skipped");
        return false;
    }
    lmx_cuda_device_info info;
    if (lmx_cuda_get_device_info(0, &info) == LMX_OK)
        fprintf(stderr, "device: %s, cc %d.%d, %d SMs, %.1f GiB\n", info.name, info.cc_major, info.cc_minor,
                info.sm_count, info.total_mem / 1073741824.0);
    const char *seed = getenv("LMX_TEST_SEED");
    rng.s = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL);
    fprintf(stderr, "seed %llu (LMX_TEST_SEED to repeat)\n", (unsigned long long)rng.s);
    return true;
}
#else
static inline bool kernel_check_start(void) {
    (void)lmx_test_run;
    SKIP("this build has no CUDA backend: GPU kernel tests skipped");
    return false;
}
#endif /* LMX_HAVE_CUDA */

#endif
