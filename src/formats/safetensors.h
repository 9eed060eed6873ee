/* safetensors.h — reading safetensors files (one file) and the weight set of a model directory.
 *
 * A file is validated completely before any tensor is exposed: 8-byte header length within the
 * file, well-formed JSON, every tensor's data_offsets inside the data region and non-overlapping,
 * byte length == product(shape) * dtype size, known dtype. Data may be unaligned (MLX does not pad):
 * read it with memcpy or the dtype helpers, never by casting `data` to a wider type.
 *
 * Ownership: an lmx_safetensors / lmx_weights owns its mapping (or its read-in copy when mmap is
 * off) and every lmx_tensor_view it hands out; views stay valid until the owner is closed.
 * Thread-safety: immutable after open; concurrent lookups are safe.
 */
#ifndef LMX_FORMATS_SAFETENSORS_H
#define LMX_FORMATS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "formats/dtype.h"
#include "lmx.h"

#define LMX_MAX_DIMS 8

typedef struct lmx_tensor_view {
    const char *name;      /* tensor name as stored in the file */
    const char *file;      /* path of the file that holds it (for error messages) */
    lmx_dtype dtype;
    int ndim;              /* 0 for a scalar */
    int64_t shape[LMX_MAX_DIMS];
    int64_t numel;         /* product(shape) */
    const uint8_t *data;   /* nbytes bytes, possibly unaligned */
    size_t nbytes;
} lmx_tensor_view;

/* ---- one file ---- */
typedef struct lmx_safetensors lmx_safetensors;

/* Opens and validates `path`. use_mmap=false reads the file into memory instead. Errors:
 * LMX_ERR_MODEL_NOT_FOUND (no such file), LMX_ERR_IO, LMX_ERR_INVALID_MODEL_FORMAT (with the file
 * and tensor named in the detail), LMX_ERR_OUT_OF_MEMORY. */
lmx_status lmx_safetensors_open(const char *path, bool use_mmap, lmx_safetensors **out);

/* Validates a complete file image held in memory (used by open and by the fuzzer). The image must
 * outlive the result; `label` names it in error messages. */
lmx_status lmx_safetensors_open_memory(const uint8_t *image, size_t len, const char *label,
                                       lmx_safetensors **out);

void lmx_safetensors_close(lmx_safetensors *st); /* NULL-safe */

size_t lmx_safetensors_count(const lmx_safetensors *st);
const lmx_tensor_view *lmx_safetensors_get(const lmx_safetensors *st, size_t i);
const lmx_tensor_view *lmx_safetensors_find(const lmx_safetensors *st, const char *name); /* NULL if absent */
/* Value of a __metadata__ key, or NULL. */
const char *lmx_safetensors_metadata(const lmx_safetensors *st, const char *key);
/* The __metadata__ keys, sorted (i < count; NULL when out of range). */
size_t lmx_safetensors_metadata_count(const lmx_safetensors *st);
const char *lmx_safetensors_metadata_key(const lmx_safetensors *st, size_t i);
/* The path (or memory label) the file was opened with; views' `file` points to the same string. */
const char *lmx_safetensors_path(const lmx_safetensors *st);

/* ---- the weight set of a model directory ---- */
typedef struct lmx_weights lmx_weights;

/* Opens every weight file of a model directory: those listed by model.safetensors.index.json when
 * present, else every *.safetensors in the directory (model.safetensors, model-0000N-of-0000M…,
 * weights.safetensors, weights.NN.safetensors; adapter files are skipped). A tensor name present
 * in two files is an error. Errors: LMX_ERR_MODEL_NOT_FOUND (no directory, no weight files, or a
 * file the index lists is absent), LMX_ERR_INVALID_MODEL_FORMAT (a bad file or index json),
 * LMX_ERR_MODEL_VALIDATION_FAILED (a tensor the index places in a file is not there; a tensor in two
 * files), LMX_ERR_IO, LMX_ERR_OUT_OF_MEMORY. Files are opened in sorted name order. */
lmx_status lmx_weights_open(const char *dir, bool use_mmap, lmx_weights **out);
void lmx_weights_close(lmx_weights *w); /* NULL-safe */

size_t lmx_weights_count(const lmx_weights *w);
const lmx_tensor_view *lmx_weights_get(const lmx_weights *w, size_t i);
const lmx_tensor_view *lmx_weights_find(const lmx_weights *w, const char *name); /* NULL if absent */
/* Sum of the tensors' byte sizes. */
uint64_t lmx_weights_total_bytes(const lmx_weights *w);
/* Number of files and their paths (for registry checksums). */
size_t lmx_weights_file_count(const lmx_weights *w);
const char *lmx_weights_file_path(const lmx_weights *w, size_t i);

/* ---- element conversion (unaligned-safe) ---- */
float lmx_bf16_to_f32(uint16_t h);
float lmx_f16_to_f32(uint16_t h);
uint16_t lmx_f32_to_bf16(float f); /* round to nearest even */
uint16_t lmx_f32_to_f16(float f);  /* round to nearest even */
/* Converts n elements of a float tensor (F32/F16/BF16) starting at element `first` into dst. */
lmx_status lmx_tensor_to_f32(const lmx_tensor_view *t, int64_t first, int64_t n, float *dst);

#endif
