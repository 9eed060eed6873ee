/* st_writer.h — writing safetensors files: one file, or a sharded model directory with
 * model.safetensors.index.json the way mlx-lm's save_model lays it out.
 *
 * Usage: create a writer, add tensors (each either a pointer to its bytes or a fill callback that
 * produces any run of whole rows on demand, so a multi-GB file never needs its payload in memory),
 * optionally set __metadata__ entries, then write_file() or write_model(). Tensor data is produced
 * and written by a pool of worker threads with pwrite() at disjoint offsets.
 *
 * File layout written: u64 LE header length, the JSON header (keys sorted by name, "__metadata__"
 * first, each entry {"data_offsets":[b,e],"dtype":"BF16","shape":[…]}), padded with spaces to a
 * multiple of 8 (the HF writer pads, MLX does not; both readers accept it), then the tensor data,
 * contiguous, in header order. Each file is written to a temp name in the target directory and
 * renamed into place only once complete, so readers never see a partial file.
 *
 * Sharding (write_model): tensors go to shards in insertion order, a new shard starting when the
 * next tensor would push the current one past max_shard_bytes (mlx-lm's make_shards, except that no
 * empty shard is ever produced). One shard is named model.safetensors, several
 * model-0000N-of-0000M.safetensors; model.safetensors.index.json is always written (sorted keys).
 *
 * Ownership: the writer copies names, shapes and metadata; data pointers and callback contexts are
 * borrowed and must stay valid until the write call returns. Thread-safety: one writer is used by
 * one thread at a time; fill and progress callbacks are called concurrently from worker threads
 * (progress calls are serialised by the writer).
 */
#ifndef LMX_FORMATS_ST_WRITER_H
#define LMX_FORMATS_ST_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "formats/safetensors.h"
#include "lmx.h"

typedef struct lmx_st_writer lmx_st_writer;

/* Produces bytes [offset, offset + len) of tensor `name` into dst (len bytes). offset and len are
 * whole rows: multiples of row_bytes = nbytes / shape[0] (the whole tensor for ndim 0 or a zero
 * dimension). Called concurrently for disjoint ranges of the same tensor; must be thread-safe.
 * Calls are started in the order the tensors were added (and by increasing offset within one), so
 * a tensor added earlier can leave results behind for a later one (though they may overlap in time).
 * Returns LMX_OK or an error status with lmx_error() detail; the write then fails. */
typedef lmx_status (*lmx_st_fill_fn)(void *ctx, const char *name, uint64_t offset, void *dst, size_t len);

/* Progress: bytes of tensor data written so far out of total. Serialised; may come from any thread. */
typedef void (*lmx_st_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct lmx_st_write_options {
    int threads;               /* worker threads; 0 = online CPUs (at most 64) */
    size_t chunk_bytes;        /* target bytes per fill/pwrite call; 0 = 16 MiB */
    bool sync;                 /* fsync each file (and the directory) before it is renamed into place */
    lmx_st_progress_fn progress;
    void *progress_ctx;
} lmx_st_write_options;

/* Errors: LMX_ERR_OUT_OF_MEMORY. */
lmx_status lmx_st_writer_create(lmx_st_writer **out);
void lmx_st_writer_destroy(lmx_st_writer *w); /* NULL-safe */

/* Adds a tensor whose nbytes = product(shape) * dtype size bytes are at `data` (may be NULL only
 * when nbytes is 0). Errors: LMX_ERR_INVALID_ARGUMENT (empty or duplicate name, "__metadata__",
 * ndim outside [0, LMX_MAX_DIMS], negative dimension, size overflow), LMX_ERR_OUT_OF_MEMORY. */
lmx_status lmx_st_writer_add(lmx_st_writer *w, const char *name, lmx_dtype dtype, int ndim, const int64_t *shape,
                             const void *data);

/* Adds a tensor whose bytes come from fill(ctx, name, offset, dst, len) at write time. Errors as add. */
lmx_status lmx_st_writer_add_fill(lmx_st_writer *w, const char *name, lmx_dtype dtype, int ndim,
                                  const int64_t *shape, lmx_st_fill_fn fill, void *ctx);

/* Sets (or replaces) a __metadata__ string entry, e.g. ("format", "mlx"). */
lmx_status lmx_st_writer_set_metadata(lmx_st_writer *w, const char *key, const char *value);

/* The index's metadata.total_parameters (mlx-lm counts a quantized weight as its unquantized
 * size); 0 (the default) leaves the key out. */
void lmx_st_writer_set_total_parameters(lmx_st_writer *w, uint64_t n);

size_t lmx_st_writer_count(const lmx_st_writer *w);
/* Sum of all tensors' byte sizes (the index's total_size). */
uint64_t lmx_st_writer_total_bytes(const lmx_st_writer *w);

/* Writes every tensor into one file at `path` (atomically). opts may be NULL (defaults).
 * Errors: LMX_ERR_IO (with the path), LMX_ERR_OUT_OF_MEMORY, or whatever a fill callback returned. */
lmx_status lmx_st_writer_write_file(lmx_st_writer *w, const char *path, const lmx_st_write_options *opts);

/* Writes the shards and model.safetensors.index.json into existing directory `dir`.
 * max_shard_bytes 0 means no limit (one shard). Sets *n_shards (may be NULL) to the shard count. */
lmx_status lmx_st_writer_write_model(lmx_st_writer *w, const char *dir, uint64_t max_shard_bytes,
                                     const lmx_st_write_options *opts, int *n_shards);

/* mlx-lm's shard limit: MAX_FILE_SIZE_GB = 5, shifted << 30. */
#define LMX_ST_MLX_SHARD_BYTES (5ull << 30)

#endif
