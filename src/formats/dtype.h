/* dtype.h — the element types of stored tensors (safetensors spelling), one enum for the formats,
 * the model binding and the backends (a backend weight's dtype is one of the float ones: F32, F16,
 * BF16). Pure functions; thread-safe. Implemented in dtype.c. */
#ifndef LMX_FORMATS_DTYPE_H
#define LMX_FORMATS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum lmx_dtype {
    LMX_DTYPE_F32 = 0,
    LMX_DTYPE_F16,
    LMX_DTYPE_BF16,
    LMX_DTYPE_F64,
    LMX_DTYPE_I64,
    LMX_DTYPE_I32,
    LMX_DTYPE_I16,
    LMX_DTYPE_I8,
    LMX_DTYPE_U64,
    LMX_DTYPE_U32,
    LMX_DTYPE_U16,
    LMX_DTYPE_U8,
    LMX_DTYPE_BOOL,
    LMX_DTYPE_COUNT
} lmx_dtype;

/* "F32", "BF16", … (safetensors spelling); "?" for out-of-range values. */
const char *lmx_dtype_name(lmx_dtype t);
/* Bytes per element (0 for out-of-range values). */
size_t lmx_dtype_size(lmx_dtype t);
/* Parses a safetensors dtype string ("BF16" → LMX_DTYPE_BF16). False for unknown or unsupported
 * spellings (F8_E4M3, F4, C64, …). `out` may be NULL. */
bool lmx_dtype_from_name(const char *name, lmx_dtype *out);
/* True for F32, F16 and BF16 (the dtypes lmx_tensor_to_f32 converts). */
bool lmx_dtype_is_float(lmx_dtype t);

#endif
