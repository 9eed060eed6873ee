/*
 * lmx.h — the only public header of lmx: run MLX-format language models on Linux
 * (NVIDIA GPUs through CUDA by default, x86 CPUs as fallback).
 *
 * Conventions
 *   - Every fallible function returns an lmx_status; LMX_OK is 0. On failure, a human-readable
 *     detail (which file, which tensor, which key) is available from lmx_last_error_detail() on
 *     the same thread until the next failing call on that thread.
 *   - Objects come in create/destroy pairs; destroy functions are NULL-safe.
 *   - Strings returned through `char **out` parameters are owned by the caller and released with
 *     lmx_free(). Pointers returned directly (const char *) are owned by lmx and stay valid for
 *     the lifetime stated next to the function.
 *   - The library never exits or aborts on bad input, and is thread-safe unless a function says
 *     otherwise.
 */
#ifndef LMX_H
#define LMX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(LMX_BUILDING_LIBRARY)
#define LMX_API __attribute__((visibility("default")))
#else
#define LMX_API
#endif

#define LMX_VERSION_MAJOR 0
#define LMX_VERSION_MINOR 1
#define LMX_VERSION_PATCH 0

/* Status codes. Append only: values never change meaning once released. */
typedef enum lmx_status {
    LMX_OK = 0,
    LMX_ERR_INVALID_ARGUMENT,        /* a NULL/out-of-range argument, malformed option */
    LMX_ERR_MODEL_NOT_FOUND,         /* no such registered name, directory or file */
    LMX_ERR_INVALID_MODEL_FORMAT,    /* unparsable config/safetensors/tokenizer, unsupported type */
    LMX_ERR_LOAD_FAILURE,            /* I/O or mapping failure while loading */
    LMX_ERR_INFERENCE_FAILURE,       /* the forward pass or sampler failed */
    LMX_ERR_GPU_NOT_AVAILABLE,       /* device=GPU asked for, none usable */
    LMX_ERR_OUT_OF_MEMORY,           /* host or device allocation failed, or over the memory budget */
    LMX_ERR_MODEL_VALIDATION_FAILED, /* tensors missing, wrong shape/dtype, checksum mismatch */
    LMX_ERR_CANCELLED,               /* a callback asked to stop */
    LMX_ERR_IO,                      /* a file could not be read or written */
    LMX_ERR_UNSUPPORTED,             /* a valid input that this build does not support yet */
    LMX_ERR_TEMPLATE,                /* chat template could not be parsed or rendered */
    LMX_STATUS_COUNT
} lmx_status;

/* A short, static English name for a status ("invalid argument"). Never NULL. */
LMX_API const char *lmx_status_str(lmx_status s);

/* The detail of this thread's last error (empty string if none). Valid until the next lmx call
 * on this thread that fails. Never NULL. */
LMX_API const char *lmx_last_error_detail(void);

/* Logging goes to stderr. The level comes from LMX_LOG=debug|info|warn|error|off (default warn)
 * and can be changed here; thread-safe. */
typedef enum lmx_log_level {
    LMX_LOG_DEBUG = 0, LMX_LOG_INFO, LMX_LOG_WARN, LMX_LOG_ERROR, LMX_LOG_OFF
} lmx_log_level;
LMX_API void lmx_log_set_level(lmx_log_level level);

/* "0.1.0" — static storage. */
LMX_API const char *lmx_version(void);

/* Releases memory that lmx handed to the caller (strings, arrays). NULL-safe. */
LMX_API void lmx_free(void *p);

#ifdef __cplusplus
}
#endif
#endif /* LMX_H */
