/* error.h — setting the thread-local error detail that lmx_last_error_detail() returns.
 *
 * Usage: `return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: bad shape", file, name);`
 * The detail is formatted into a thread-local buffer (truncated to LMX_ERROR_DETAIL_MAX bytes).
 */
#ifndef LMX_UTIL_ERROR_H
#define LMX_UTIL_ERROR_H

#include "lmx.h"

#define LMX_ERROR_DETAIL_MAX 1024

/* Records `fmt` as this thread's error detail and returns `status` (for `return lmx_error(...)`). */
lmx_status lmx_error(lmx_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to the current detail (to add context while an error propagates) and
 * returns `status` unchanged. */
lmx_status lmx_error_prefix(lmx_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The text of errno value `e` (thread-safe: strerror_r into a thread-local buffer; valid until the
 * next call on this thread). Use instead of strerror() in library code. */
const char *lmx_errno_str(int e);

/* Clears this thread's detail. */
void lmx_error_clear(void);

/* Returns from the calling function when `expr_` (an lmx_status) is not LMX_OK. */
#define LMX_TRY(expr_)                                                                                         \
    do {                                                                                                       \
        lmx_status st_ = (expr_);                                                                              \
        if (st_ != LMX_OK) return st_;                                                                         \
    } while (0)

#endif
