/* lm_shard.h — tensor parallel: which part of the model one rank holds and computes. The one place
 * the split is decided (lm_shard_plan); weight binding (lm_bind.c) reads its slices, the forward pass
 * (lm_forward.c) its shapes and where the collectives go. Not for use outside src/model.
 *
 * The split is Megatron's (mlx-lm's shard, llama.cpp's split-mode row), rank r of n:
 *   q, k, v        output rows of whole heads: query heads [head0, head0 + n_heads) and the kv heads
 *                  they read (kv heads n_kv divisible by n: n_kv / n each; n divisible by n_kv: each
 *                  kv head held by n / n_kv ranks, i.e. replicated);
 *   o              the same heads' input columns, rank 0 with the bias; the partial outputs summed by
 *                  an all-reduce of [T, hidden];
 *   gate, up       output rows [inter0, inter0 + inter);  down: those input columns + an all-reduce;
 *   embedding      vocabulary rows [vocab0, vocab0 + vocab): ids of other ranks look up zeros, an
 *                  all-reduce adds the ranks' rows (exact: one nonzero per element);
 *   head           the same rows (tied: the same weight); the ranks' logits all-gathered into
 *                  [n * vocab_slot], whose first vocab_size entries are the logits in order;
 *   norms, q/k norms, RoPE tables: replicated.
 * A block is replicated on every rank instead (computed whole, no collective; the plan logs which
 * and why) when its split does not exist: heads, kv heads or the intermediate width not splittable
 * that way, or a quantized o_proj / down_proj whose column split does not fall on its quantization
 * groups (a group's scale would span two ranks). The vocabulary stays whole when a rank would get no
 * row. Mixture-of-experts layers are refused over several ranks (expert parallel is not implemented).
 * One rank (n = 1) is the whole model: no split, no collective, the single-device forward. */
#ifndef LMX_MODEL_LM_SHARD_H
#define LMX_MODEL_LM_SHARD_H

#include <stdbool.h>
#include <stdint.h>
#include "backend/backend.h"
#include "formats/safetensors.h"
#include "model/config.h"

typedef struct lm_shard {
    int rank, n_ranks;
    bool attn_split;          /* q/k/v by heads, o by columns + all-reduce; false: attention whole */
    bool mlp_split;           /* gate/up by rows, down by columns + all-reduce; false: MLP whole */
    bool vocab_split;         /* embedding + head by vocabulary rows; false: whole */
    int n_heads, head0;       /* query heads held: [head0, head0 + n_heads) */
    int n_kv_heads, kv_head0; /* kv heads held */
    int inter, inter0;        /* intermediate rows held */
    int vocab, vocab0;        /* embedding / head rows held */
    int vocab_slot;           /* logits per rank in the gathered [n_ranks * vocab_slot] (vocab_size when whole) */
} lm_shard;

/* The whole model on one rank. */
lm_shard lm_shard_whole(const lmx_model_config *c);

typedef struct binder binder;
/* The plan for n_ranks >= 1 ranks into out[n_ranks], from the config and the tensors' descriptors
 * (b: a binder over the model's weights with its prefix found; nothing is uploaded). Errors: a
 * sparse model over several ranks → LMX_ERR_UNSUPPORTED; the tensors' own validation errors (as
 * binding gives them). */
lmx_status lm_shard_plan(binder *b, int n_ranks, lm_shard *out);

/* Rank r's ids of a vocabulary-split embedding: ids[t] - vocab0 when the token is this rank's, else -1
 * (a zero row, backend.h embed) into lids[T]. */
void lm_shard_local_ids(const lm_shard *s, const int32_t *ids, int T, int32_t *lids);

/* Columns [col0, col0 + cols) of every row the matrix *d selects, copied into one host block
 * (*copy, malloc'd: the caller frees it once the backend no longer reads it, backend.h
 * upload_copies), described in *out (the same rows and bias, `cols` columns, row0 0). Quantized:
 * col0 and cols multiples of the group size (the plan's condition). LMX_ERR_OUT_OF_MEMORY. */
lmx_status lm_shard_cols(const lmx_weight_desc *d, int64_t col0, int64_t cols, void **copy, lmx_weight_desc *out);

/* Bytes of the stored tensors of w that shard s holds (split tensors by the fraction of their rows or
 * columns, the rest whole): a device's weights under tensor parallel, before binding. */
uint64_t lm_shard_weight_bytes(const lmx_model_config *c, const lmx_weights *w, const lm_shard *s);

#endif
