/* dev_plan.h — the tensor plan of `lmx dev random-model` (dev_plan.c): deterministic random values
 * and the safetensors writer's fill callbacks that produce each tensor on demand, bf16, MLX affine
 * or an MX mode (mxfp4: mlx-community's gpt-oss experts).
 *
 * Values: element e of tensor T is a function of (seed, T's name, e) only — a counter-based hash
 * turned into an approximately normal value (sum of four 16-bit uniforms, |z| <= 3.46) — so output is
 * identical for any thread count. Matrices and vectors have std `std` around 0 (Linear/embedding
 * weights 0.02, HF's initializer_range), norm weights 1 + 0.02 z. Quantized matrices first round each
 * row to bf16 (as mlx-lm quantizes a bf16 checkpoint), then the MLX quantizer of their mode; affine
 * scales/biases are bf16, MX scales uint8. Not thread-safe while being built; the fills run on the
 * writer's threads afterwards. */
#ifndef LMX_CLI_DEV_PLAN_H
#define LMX_CLI_DEV_PLAN_H

#include <stdatomic.h>
#include <stdint.h>

#include "formats/quant_mode.h"
#include "formats/st_writer.h"
#include "lmx.h"

typedef enum { PART_DENSE, PART_QWEIGHT, PART_QSCALES, PART_QBIASES } lmx_dev_part;

/* Scales (and affine biases) of one quantized module, left behind by its .weight fill (which computes
 * them anyway) so the .scales/.biases fills need not regenerate the rows. The writer starts fills in
 * insertion order (weight, scales, biases); a row whose flag is not yet set is simply recomputed. */
typedef struct {
    uint8_t *scales, *biases; /* [rows, cols/gs]: bf16 (affine) or uint8 codes (MX modes, no biases) */
    atomic_uchar *ready;      /* [rows] set (release) once the row's entries are stored */
} lmx_dev_qcache;

typedef struct {
    uint64_t key;
    float mean, std;
    int64_t rows, cols;
    lmx_dev_part part;
    int bits, gs;
    lmx_quant_mode mode; /* quantized parts: affine or an MX mode */
    lmx_dev_qcache *cache;     /* quantized parts: shared by the module's tensors */
} lmx_dev_gen;

typedef struct {
    lmx_st_writer *w;
    lmx_dev_gen *gens; /* [cap] stable storage for the fill contexts */
    size_t n, cap;
    lmx_dev_qcache *caches; /* [cap] one per quantized module */
    size_t n_caches;
    uint64_t seed;
    int bits, gs;    /* the model's affine bits (0: bf16) and group size */
    uint64_t params; /* logical parameters planned */
} lmx_dev_plan;

/* A plan of at most `cap` tensors into writer w. */
lmx_status lmx_dev_plan_init(lmx_dev_plan *p, lmx_st_writer *w, size_t cap, uint64_t seed, int bits, int gs);
void lmx_dev_plan_free(lmx_dev_plan *p); /* the tables and caches (not the writer) */

/* A norm weight [n] in bf16 (1 + 0.02 z). */
lmx_status lmx_dev_plan_add_norm(lmx_dev_plan *p, const char *name, int64_t n);
/* A bf16 vector [n] (lead > 0: [lead, n], e.g. stacked experts' biases) of std `std`: Linear biases,
 * attention sinks. */
lmx_status lmx_dev_plan_add_vector(lmx_dev_plan *p, const char *name, int64_t lead, int64_t n, float std);
/* A Linear/Embedding weight [rows, cols] at module path `mod` (lead > 0: `lead` stacked experts
 * [lead, rows, cols]): bf16 when the model is, else MLX affine weight+scales+biases at `bits` (0: the
 * model's) and the model's group size. */
lmx_status lmx_dev_plan_add_matrix(lmx_dev_plan *p, const char *mod, int64_t lead, int64_t rows, int64_t cols,
                                   int bits);
/* The same in an MX mode (mxfp4 / mxfp8 / nvfp4): weight U32 [.., rows, cols*bits/32] and U8 scales
 * [.., rows, cols/group], no biases. */
lmx_status lmx_dev_plan_add_matrix_mx(lmx_dev_plan *p, const char *mod, int64_t lead, int64_t rows, int64_t cols,
                                      lmx_quant_mode mode);

#endif
