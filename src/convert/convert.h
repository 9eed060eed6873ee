/* convert.h — `lmx convert`: a float (bf16/f16/f32) Hugging Face model directory → the MLX layout
 * mlx_lm.convert writes: affine quantization, the fp modes mxfp4 / mxfp8 / nvfp4 (formats/mlx_mx.h),
 * and mlx-lm's mixed recipes (per-layer bits, convert_recipe.c).
 *
 * What is written (mlx-lm 0.2x `convert` + `quantize_model` + `save`):
 *   - every Linear / Embedding weight (a 2-D float "*.weight" whose last dimension is a multiple of
 *     the group size — lm_head and embed_tokens included) as P.weight U32 [out, in*bits/32],
 *     P.scales and P.biases [out, in/G] in the target dtype (convert_plan.c); in an fp mode
 *     P.scales are U8 [out, in/G] codes and there are no biases;
 *   - every other float tensor cast to the target dtype; rotary inv_freq dropped, lm_head dropped
 *     when tie_word_embeddings (mlx-lm's sanitize);
 *   - shards of at most 5 GiB (model.safetensors or model-0000N-of-0000M.safetensors) and
 *     model.safetensors.index.json, __metadata__ {"format": "mlx"};
 *   - config.json with "quantization" and "quantization_config" = {"group_size", "bits", "mode"}
 *     and, with a recipe, one {"group_size", "bits", "mode"} entry per quantized module path
 *     (convert_config.c); every other non-weight file (tokenizer, chat template, generation
 *     config) copied (convert_files.c).
 *   - mixture of experts (convert_moe.c, mlx-lm's qwen3_moe / mixtral `sanitize`): the Hub's per-expert
 *     tensors <block>.experts.E.{gate_proj,up_proj,down_proj | w1,w3,w2}.weight are stacked into
 *     <block>.switch_mlp.{gate,up,down}_proj.weight [E, out, in] (quantized per expert row, as
 *     QuantizedSwitchLinear stores them; in an fp mode too: gpt-oss style mxfp4 experts);
 *     qwen3_moe routers (mlp.gate) are affine 8-bit g64 (its quant_predicate), written as
 *     per-module entries of the quantization block whatever the global mode or recipe (mlx-lm
 *     itself replaces the model's predicate with a recipe's: its routers would get the recipe's
 *     low bits); mixtral's router (block_sparse_moe.gate) gets the default / the recipe's bits.
 *     A recipe gives the stacked experts its bits by module path as mlx-lm's predicate does
 *     (switch_mlp.down_proj counts as a down_proj).
 *     gpt_oss: transformers' fused experts (<layer>.mlp.experts.gate_up_proj, gate and up interleaved,
 *     the Hub's bf16 layout) are refused (LMX_ERR_UNSUPPORTED): mlx_lm.convert writes mlx-lm's layout;
 *     the original MXFP4 checkpoint is refused as already quantized (its quantization_config).
 * Scale and bias follow MLX's CPU quantizer bit for bit (formats/mlx_quant.h), applied to the
 * weights after the cast to the target dtype, as mlx-lm does (it casts, then quantizes).
 *
 * Tensor by tensor: the source is mapped and each output row is produced on demand by the
 * safetensors writer's fill callbacks, so memory stays at a few chunks whatever the model size.
 * Atomicity: everything goes into DST.partial (removed first if left over), renamed to DST only
 * when complete; on failure DST.partial is removed.
 */
#ifndef LMX_CONVERT_CONVERT_H
#define LMX_CONVERT_CONVERT_H

#include <stdbool.h>
#include <stdint.h>
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "lmx.h"

typedef void (*lmx_convert_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct lmx_convert_options {
    int bits;             /* affine 2, 3, 4, 5, 6, 8; 0 = the mode's default (affine 4) */
    int group_size;       /* affine 32, 64, 128; 0 = the mode's default (affine 64) */
    const char *mode;     /* NULL or "affine", "mxfp4", "mxfp8", "nvfp4" (fixed bits and group size:
                             bits/group_size 0 or the mode's, else LMX_ERR_INVALID_ARGUMENT) */
    const char *recipe;   /* NULL, or mixed_2_6 / mixed_3_4 / mixed_3_6 / mixed_4_6 (affine only) */
    lmx_dtype dtype;      /* BF16, F16 or F32 (used when dtype_set) */
    bool dtype_set;       /* false = the config's torch_dtype/dtype, else the weights' own */
    bool quantize;        /* false = only cast (no quantization block) */
    bool force;           /* replace an existing DST */
    uint64_t max_shard_bytes; /* 0 = LMX_ST_MLX_SHARD_BYTES */
    int threads;          /* 0 = online CPUs */
    lmx_convert_progress_fn progress;
    void *progress_ctx;
} lmx_convert_options;

void lmx_convert_options_default(lmx_convert_options *o);

/* Converts src into dst. Errors: LMX_ERR_INVALID_ARGUMENT (bad bits/group size/dtype/mode/recipe, a
 * recipe with an fp mode, dst exists without force, src == dst), LMX_ERR_UNSUPPORTED (an already
 * quantized input, a recipe on a model without down_proj), LMX_ERR_MODEL_NOT_FOUND,
 * LMX_ERR_INVALID_MODEL_FORMAT, LMX_ERR_IO. */
lmx_status lmx_convert_model(const char *src, const char *dst, const lmx_convert_options *opt);

/* ---- internal pieces (one per file) ---- */
typedef enum { LMX_CONV_DROP, LMX_CONV_CAST, LMX_CONV_QUANTIZE } lmx_conv_action;

/* What the conversion needs from config.json. */
typedef struct lmx_convert_model_info {
    bool tied;            /* tie_word_embeddings (llama default false, gemma true) */
    char model_type[32];  /* "" when absent */
} lmx_convert_model_info;

/* convert_plan.c: what happens to tensor `name` of the given shape. */
lmx_conv_action lmx_convert_plan(const char *name, lmx_dtype dtype, int ndim, const int64_t *shape, int group_size,
                                 bool quantize, bool tied);

/* convert_recipe.c: a mixed recipe over the quantized module paths modules[n]. */
typedef struct lmx_convert_recipe {
    bool active;
    int low_bits, high_bits, group_size;
    int layer_location; /* path component holding the layer index */
    int n_layers;
} lmx_convert_recipe;
lmx_status lmx_convert_recipe_init(const char *name, int group_size, const char *const *modules, size_t n,
                                   lmx_convert_recipe *r);
lmx_quant_params lmx_convert_recipe_params(const lmx_convert_recipe *r, const char *module);

/* A per-module entry of the quantization block (module path without ".weight", e.g.
 * "model.layers.0.mlp.gate"): a recipe's entries and qwen3_moe's routers. */
typedef struct lmx_convert_layer_q {
    const char *module;
    lmx_quant_params q;
} lmx_convert_layer_q;

/* convert_config.c: reads src/config.json, refuses quantized inputs, writes dst_dir/config.json
 * with the quantization blocks. *mi receives the model info, *cfg_dtype the config's dtype (0 when
 * absent or not a float type). */
lmx_status lmx_convert_read_config(const char *src_dir, lmx_convert_model_info *mi, lmx_dtype *cfg_dtype,
                                   bool *has_dtype);
/* g = the global parameters; layers[n_layers] = the per-module entries (a recipe's, MoE routers'). */
lmx_status lmx_convert_write_config(const char *src_dir, const char *dst_dir, const lmx_convert_options *opt,
                                    lmx_dtype out_dtype, const lmx_quant_params *g, const lmx_convert_layer_q *layers,
                                    size_t n_layers);

/* convert_moe.c: the per-expert tensors of each (layer block, projection), to be stacked. */
typedef struct lmx_moe_stack {
    char *name;                   /* output "<block>.switch_mlp.<gate|up|down>_proj.weight" */
    const lmx_tensor_view **srcs; /* [n]: expert e's tensor (all 2-D float, one shape and dtype) */
    int n;
} lmx_moe_stack;
/* Every stack of wt (*n = 0 for a dense model). LMX_ERR_INVALID_MODEL_FORMAT naming the tensor when
 * an expert is missing or differs in shape or dtype. */
lmx_status lmx_convert_moe_stacks(const lmx_weights *wt, lmx_moe_stack **out, int *n);
void lmx_convert_moe_stacks_free(lmx_moe_stack *s, int n);
/* Whether `name` is a per-expert tensor (it is written as part of its stack). */
bool lmx_convert_moe_is_expert(const char *name);
/* Whether `name` is transformers' fused gpt_oss experts tensor <layer>.mlp.experts.gate_up_proj (the
 * Hub's bf16 layout, gate and up interleaved), which convert refuses. */
bool lmx_convert_moe_fused_gate_up(const char *name);
/* mlx-lm's quant_predicate for module path `module` (without ".weight"; a module being quantized,
 * last dimension cols): qwen3_moe routers become affine 8-bit g64, whatever the global mode or
 * recipe. Returns true when it sets *q (the module then gets its own entry). */
bool lmx_convert_moe_router_quant(const lmx_convert_model_info *mi, const char *module, int64_t cols,
                                  lmx_quant_params *q);

/* convert_files.c: copies every regular top-level file of src that is neither a weight file, the
 * weight index nor config.json into dst. */
lmx_status lmx_convert_copy_files(const char *src_dir, const char *dst_dir);
/* Removes a directory tree (best effort; used for DST.partial). */
void lmx_convert_rmtree(const char *path);

#endif
