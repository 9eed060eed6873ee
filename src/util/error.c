/* error.c — status names and the thread-local error detail. */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char tls_detail[LMX_ERROR_DETAIL_MAX];

static const char *const status_names[LMX_STATUS_COUNT] = {
    [LMX_OK] = "ok",
    [LMX_ERR_INVALID_ARGUMENT] = "invalid argument",
    [LMX_ERR_MODEL_NOT_FOUND] = "model not found",
    [LMX_ERR_INVALID_MODEL_FORMAT] = "invalid model format",
    [LMX_ERR_LOAD_FAILURE] = "load failure",
    [LMX_ERR_INFERENCE_FAILURE] = "inference failure",
    [LMX_ERR_GPU_NOT_AVAILABLE] = "GPU not available",
    [LMX_ERR_OUT_OF_MEMORY] = "out of memory",
    [LMX_ERR_MODEL_VALIDATION_FAILED] = "model validation failed",
    [LMX_ERR_CANCELLED] = "cancelled",
    [LMX_ERR_IO] = "I/O error",
    [LMX_ERR_UNSUPPORTED] = "unsupported",
    [LMX_ERR_TEMPLATE] = "template error",
};

LMX_API const char *lmx_status_str(lmx_status s) {
    if ((int)s < 0 || s >= LMX_STATUS_COUNT || !status_names[s]) return "unknown status";
    return status_names[s];
}

LMX_API const char *lmx_last_error_detail(void) { return tls_detail; }

const char *lmx_errno_str(int e) {
    static _Thread_local char buf[128];
    /* GNU strerror_r (_GNU_SOURCE): returns either buf or an immutable static string */
    return strerror_r(e, buf, sizeof buf);
}

void lmx_error_clear(void) { tls_detail[0] = '\0'; }

lmx_status lmx_error(lmx_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_detail, sizeof tls_detail, fmt, ap);
    va_end(ap);
    return status;
}

lmx_status lmx_error_prefix(lmx_status status, const char *fmt, ...) {
    char prefix[LMX_ERROR_DETAIL_MAX];
    char old[LMX_ERROR_DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, tls_detail, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof tls_detail - 3) n = sizeof tls_detail - 3;
    memcpy(tls_detail, prefix, n);
    tls_detail[n] = ':';
    tls_detail[n + 1] = ' ';
    size_t room = sizeof tls_detail - (n + 2) - 1, m = strlen(old);
    if (m > room) m = room;
    memcpy(tls_detail + n + 2, old, m);
    tls_detail[n + 2 + m] = '\0';
    return status;
}
