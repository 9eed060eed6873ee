/* lmx_test.h — a minimal test harness: CHECK macros that count failures, and a summary line.
 *
 *   static void test_x(void) { CHECK(1 + 1 == 2); CHECK_EQ_INT(a, b); }
 *   int main(void) { RUN(test_x); return lmx_test_summary(); }
 *
 * A test that needs a missing fixture calls SKIP("why") and returns; a binary whose tests all
 * skipped exits 77, which CTest reports as skipped when the test sets SKIP_RETURN_CODE 77.
 */
#ifndef LMX_TEST_H
#define LMX_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int lmx_test_failures, lmx_test_checks, lmx_test_run, lmx_test_skipped;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        lmx_test_checks++;                                                                   \
        if (!(cond)) {                                                                       \
            lmx_test_failures++;                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                                    \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                 \
    do {                                                                                     \
        lmx_test_checks++;                                                                   \
        if (!(cond)) {                                                                       \
            lmx_test_failures++;                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
        }                                                                                    \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                   \
    do {                                                                                     \
        long long lmx_a_ = (long long)(a), lmx_b_ = (long long)(b);                          \
        CHECK_MSG(lmx_a_ == lmx_b_, "%lld != %lld", lmx_a_, lmx_b_);                         \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                   \
    do {                                                                                     \
        const char *lmx_a_ = (a), *lmx_b_ = (b);                                             \
        CHECK_MSG(lmx_a_ && lmx_b_ && strcmp(lmx_a_, lmx_b_) == 0, "\"%s\" != \"%s\"",       \
                  lmx_a_ ? lmx_a_ : "(null)", lmx_b_ ? lmx_b_ : "(null)");                   \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
    do {                                                                                     \
        double lmx_a_ = (double)(a), lmx_b_ = (double)(b);                                   \
        CHECK_MSG(fabs(lmx_a_ - lmx_b_) <= (tol), "%.9g vs %.9g (tol %g)", lmx_a_, lmx_b_,   \
                  (double)(tol));                                                            \
    } while (0)

#define SKIP(...)                                                                            \
    do {                                                                                     \
        lmx_test_skipped++;                                                                  \
        fprintf(stderr, "SKIP: ");                                                           \
        fprintf(stderr, __VA_ARGS__);                                                        \
        fputc('\n', stderr);                                                                 \
    } while (0)

#define RUN(fn)                                                                              \
    do {                                                                                     \
        int lmx_before_ = lmx_test_failures;                                                 \
        lmx_test_run++;                                                                      \
        fn();                                                                                \
        fprintf(stderr, "%s %s\n", lmx_test_failures == lmx_before_ ? "ok  " : "FAIL", #fn); \
    } while (0)

static inline int lmx_test_summary(void) {
    fprintf(stderr, "%d checks, %d failed, %d skipped\n", lmx_test_checks, lmx_test_failures,
            lmx_test_skipped);
    if (lmx_test_failures) return 1;
    if (lmx_test_skipped && lmx_test_checks == 0) return 77;
    return 0;
}

#endif
