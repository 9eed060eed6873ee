/* lm.h — the internal language-model object: a model directory bound to a compute backend, plus
 * KV caches and the forward pass (prefill and decode share one entry point).
 *
 *   lmx_lm *lm;  lmx_lm_open(dir, &opt, &lm);          // config.json + weights, validated
 *   lmx_kv *kv;  lmx_kv_create(lm, 4096, &kv);         // cache + scratch for up to 4096 positions
 *   lmx_lm_forward(lm, kv, prompt, n, logits);         // appends n tokens, logits of the last one
 *   lmx_lm_forward(lm, kv, &next, 1, logits);          // decode step
 *
 * Weight binding follows mlx-lm/HF: every expected tensor must be present with the right shape
 * and dtype for the config (else LMX_ERR_MODEL_VALIDATION_FAILED naming tensor, expected and actual
 * shape); a Linear/Embedding is MLX-quantized iff `P.scales` exists (or a config override says so),
 * with bits/group size derived from the shapes and checked against the config; fused phi3
 * projections are split by rows; tied heads use the (possibly quantized) embedding; `language_model.`
 * prefixes are resolved; rotary_emb.inv_freq and vision tensors are dropped; other unknown tensors
 * produce a warning.
 *
 * Ownership: lmx_lm owns its config, the mapped weight files and the uploaded weights; an lmx_kv
 * owns its cache and scratch buffers and must be destroyed before its lmx_lm.
 * Thread-safety: an lmx_lm is immutable after open; forward calls on the same lmx_lm may come from
 * several threads as long as each uses its own lmx_kv (the backend serializes its ops, so they
 * interleave rather than run in parallel). An lmx_kv is used by one caller at a time.
 *
 * Batched steps (lmx_pool / lmx_seq / lmx_lm_step, below): many sequences share one pool of KV
 * blocks per model, and one step runs rows of several sequences (prefill chunks beside decode rows)
 * as one forward: matmuls over all rows, attention per row through the backend's paged addressing
 * (backend.h lmx_kv_map). A GPU backend is selected through lmx_lm_options.backend / device and needs
 * no change here.
 *
 * Tensor parallel (lmx_lm_options.group, model/lm_shard.h): the model is split over the ranks of a
 * backend group, one lmx_lm per rank behind the one the caller holds; lmx_kv_create, the forwards,
 * truncate/reset and close work on all ranks (each on its rank's thread) and look like one model;
 * lmx_lm_kv_bytes_per_position and lmx_kv_bytes report one device (a rank). Batched steps
 * (lmx_pool_create) refuse such a model (LMX_ERR_UNSUPPORTED).
 */
#ifndef LMX_MODEL_LM_H
#define LMX_MODEL_LM_H

#include <stdbool.h>
#include <stdint.h>
#include "backend/backend.h"
#include "lmx.h"
#include "model/config.h"
#include "model/facts.h"

typedef struct lmx_lm lmx_lm;
typedef struct lmx_kv lmx_kv;

typedef struct lmx_lm_options {
    int n_threads;        /* CPU threads; 0 = all online CPUs */
    bool no_mmap;         /* read weight files into memory instead of mapping them */
    lmx_device device;    /* GPU without `backend` → LMX_ERR_GPU_NOT_AVAILABLE; AUTO and CPU without
                             `backend` bind to a CPU backend created here (lmx_backend_create picks
                             the device for callers that want AUTO to mean a GPU when usable) */
    lmx_backend *backend; /* optional: use this backend (not owned) instead of creating one */
    lmx_backend_group *group; /* optional: tensor parallel over this group's ranks (not owned; outlives
                                 the model; device and backend are then ignored): model/lm_shard.h */
} lmx_lm_options;

/* Opens a model directory (config.json, generation_config.json, *.safetensors). opt may be NULL. */
lmx_status lmx_lm_open(const char *dir, const lmx_lm_options *opt, lmx_lm **out);
void lmx_lm_close(lmx_lm *lm); /* NULL-safe */

const lmx_model_config *lmx_lm_config(const lmx_lm *lm);
int lmx_lm_vocab_size(const lmx_lm *lm);
/* Bytes of weights referenced by the model (mapped or copied). */
uint64_t lmx_lm_weight_bytes(const lmx_lm *lm);
/* KV-cache bytes per cached position (all layers, K and V), for memory budgets:
 * lmx_kv_create(lm, n) holds about n * this + a fixed scratch. */
uint64_t lmx_lm_kv_bytes_per_position(const lmx_lm *lm);

/* The facts of a model directory (model/facts.h), from config.json (+ generation_config.json) and the
 * safetensors headers, without binding or touching tensor data (for memory budgets before loading):
 * weight_bytes as stored (what the CPU backend maps), kv_bytes_per_token in fp32 (an upper bound),
 * scratch_bytes at the largest prefill chunk a backend asks for (512 rows: CUDA), eos_ids from
 * config.json. out->state holds the parsed config for lmx_lm_open_config (release it with
 * lmx_model_facts_release when it is not handed on). Errors as lmx_lm_open (MODEL_NOT_FOUND,
 * INVALID_MODEL_FORMAT, UNSUPPORTED, IO); on error nothing is held. */
lmx_status lmx_lm_probe(const char *dir, lmx_model_facts *out);
/* The same for tensor parallel over n_ranks ranks (<= 1: one device): device_weight_bytes,
 * kv_bytes_per_token and scratch_bytes are one rank's (the plan of model/lm_shard.h); a model the
 * plan refuses (mixture of experts) → LMX_ERR_UNSUPPORTED. */
lmx_status lmx_lm_probe_ranks(const char *dir, int n_ranks, lmx_model_facts *out);

/* lmx_lm_open over a config already parsed (lmx_lm_probe's state): on success the model takes
 * *cfg over (*cfg = NULL); on failure *cfg stays the caller's. */
lmx_status lmx_lm_open_config(const char *dir, lmx_model_config **cfg, const lmx_lm_options *opt, lmx_lm **out);

/* A KV cache for up to max_ctx positions (all layers, in the backend's KV element type: fp32 on the
 * CPU, fp16 on CUDA; max_ctx may exceed max_position_embeddings, as in HF). Also owns the forward
 * scratch buffers, so each concurrent caller needs its own. The backend must implement the fused ops
 * (matmul_add, rope_qk_store): LMX_ERR_UNSUPPORTED otherwise. */
lmx_status lmx_kv_create(lmx_lm *lm, int max_ctx, lmx_kv **out);
/* Same with an explicit prefill chunk (rows per backend call, 0 = default 128). Sliding-window
 * layers keep only window + chunk - 1 positions (a ring), so a smaller chunk saves memory. */
lmx_status lmx_kv_create_ex(lmx_lm *lm, int max_ctx, int chunk, lmx_kv **out);
void lmx_kv_destroy(lmx_kv *kv); /* NULL-safe */
void lmx_kv_reset(lmx_kv *kv);   /* forget all positions */
int lmx_kv_pos(const lmx_kv *kv);      /* positions filled = position of the next token */
int lmx_kv_capacity(const lmx_kv *kv);
/* Keeps the first n positions (n <= lmx_kv_pos): for prompt-prefix reuse. With sliding-window
 * layers this fails with LMX_ERR_UNSUPPORTED once the ring no longer holds the window before n
 * (then reset and re-run the prefix). */
lmx_status lmx_kv_truncate(lmx_kv *kv, int n);
/* Prefill rows per backend call: a prompt of n tokens runs as chunks [0, chunk), [chunk, 2 chunk), …
 * A backend's rows may depend on the chunk they are computed in (CPU: chunks of < 4 rows take the
 * unblocked matmul), so a prefill resumed at a multiple of chunk after a prefix that was itself
 * prefilled in whole chunks from 0 reproduces one prefill's logits bit for bit. */
int lmx_kv_chunk(const lmx_kv *kv);
/* Bytes held by the cache and scratch (sliding layers hold window + chunk - 1 positions). */
uint64_t lmx_kv_bytes(const lmx_kv *kv);

/* Appends n >= 1 tokens at the cache's current position (prefill when n > 1, decode when n == 1)
 * and writes the logits of the last position into logits[vocab] (may be NULL to only fill the
 * cache). Errors: LMX_ERR_INVALID_ARGUMENT (token id outside the vocabulary, cache full),
 * LMX_ERR_INFERENCE_FAILURE. On error the cache position is unchanged. */
lmx_status lmx_lm_forward(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, float *logits);

/* True when the model's backend samples on the device (backend.h: sample / sample_result). */
bool lmx_lm_can_sample(const lmx_lm *lm);

/* lmx_lm_forward followed by the choice of the next token on the device: *token = the id the host
 * sampler would pick for the same logits and a->u (see backend.h lmx_sample_args; identical except
 * when u lands within rounding distance of a cumulative boundary), and logits is untouched. When the
 * backend has no sampling op, or the device could not decide exactly, *token = -1 and logits [vocab]
 * holds the last position's logits: sample them on the host (lmx_sampler_sample_u with a->u). One
 * decode step (n == 1) is captured with its sampling into the backend's step graph. Errors as
 * lmx_lm_forward; on error the cache position is unchanged. */
lmx_status lmx_lm_forward_sample(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, const lmx_sample_args *a,
                                 float *logits, int32_t *token);

/* ---- batched steps over a paged KV pool ----
 *
 *   lmx_pool *p;  lmx_pool_create(lm, 1 << 30, 256, &p);   // blocks + step scratch for 256 rows
 *   lmx_seq *a, *b;  lmx_seq_create(p, 4096, &a);  lmx_seq_create(p, 4096, &b);
 *   lmx_step_row rows[2] = {{a, prompt, 100, NULL, NULL, NULL}, {b, &tok, 1, NULL, logits, NULL}};
 *   lmx_lm_step(p, rows, 2);                               // a's prefill chunk beside b's decode row
 *
 * The pool holds per layer one K and one V buffer of n_blocks * block_size slots (kv_buf_alloc);
 * a sequence is a block table, a position and its max_context; blocks are taken as positions fill
 * and shared by reference between forks (copy-on-write: a step that writes into a shared block
 * copies it first). Sliding-window layers keep every position in the pool (no ring; the window is
 * the attention's lower bound). One thread at a time uses a pool and its sequences. Each row's
 * results are what a step with that row alone gives, and on the CPU backend what lmx_lm_forward of
 * the same calls on one sequence gives, bit for bit (where the CPU matmul's rows do not depend on
 * how many rows share it). Requires the backend's paged_kv (else LMX_ERR_UNSUPPORTED). */
typedef struct lmx_pool lmx_pool;
typedef struct lmx_seq lmx_seq;

/* A pool of at most max_bytes (the blocks + the step scratch for max_rows rows, both allocated
 * here): LMX_ERR_OUT_OF_MEMORY when not one block fits, or an allocation fails. */
lmx_status lmx_pool_create(lmx_lm *lm, int64_t max_bytes, int max_rows, lmx_pool **out);
void lmx_pool_destroy(lmx_pool *p); /* NULL-safe; every sequence destroyed before */
/* bytes held (blocks + scratch), bytes of the blocks held by sequences, blocks free (any may be NULL) */
void lmx_pool_stats(const lmx_pool *p, int64_t *bytes, int64_t *used_bytes, int64_t *free_blocks);
int lmx_pool_block_size(const lmx_pool *p); /* positions per block */
int lmx_pool_max_rows(const lmx_pool *p);   /* tokens per step */

/* A new empty sequence of at most max_context positions (no block taken yet). */
lmx_status lmx_seq_create(lmx_pool *p, int max_context, lmx_seq **out);
void lmx_seq_destroy(lmx_seq *s); /* NULL-safe; its blocks return to the pool when no other holds them */
int lmx_seq_pos(const lmx_seq *s); /* positions filled = position of its next row */
/* A new sequence holding the first n positions of src (n <= lmx_seq_pos(src), same max_context):
 * whole blocks shared, the partial last block copied (LMX_ERR_OUT_OF_MEMORY without a free block). */
lmx_status lmx_seq_fork(const lmx_seq *src, int n, lmx_seq **out);
/* Keeps the first n positions (n <= lmx_seq_pos); the blocks past them go back. */
lmx_status lmx_seq_truncate(lmx_seq *s, int n);

/* One sequence's part of a step: ids[0..n) at its next positions. With `sample` (and a backend that
 * samples rows on the device, backend.h sample_rows) *token gets the next token, or -1 when the
 * device could not decide: then logits [vocab] holds the last position's logits (sample on the host
 * with sample->u). Without device sampling a row with `sample` gets *token = -1 and the logits.
 * With logits and no sample: the last position's logits. Neither: nothing comes back (an inner
 * prefill chunk). */
typedef struct lmx_step_row {
    lmx_seq *seq;
    const int32_t *ids;
    int n;
    const lmx_sample_args *sample; /* NULL: no device sampling (needs logits then) */
    float *logits;                 /* [vocab] or NULL */
    int32_t *token;                /* out, when sample != NULL */
} lmx_step_row;

/* Runs rows[0..n_rows) (distinct sequences of p, at most lmx_pool_max_rows tokens in all) as one
 * forward. Errors before any op runs (nothing changes): a bad row (NULL, another pool, n < 1, a
 * token outside the vocabulary, a sequence twice, too many tokens) or a row past its max_context
 * → LMX_ERR_INVALID_ARGUMENT, a pool without the blocks the rows need → LMX_ERR_OUT_OF_MEMORY; both
 * name the row. On a backend error the positions stay where they were. */
lmx_status lmx_lm_step(lmx_pool *p, const lmx_step_row *rows, int n_rows);

#endif
