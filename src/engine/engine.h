/* engine.h — the seam between the runtime (cache, generate loop, facade) and whatever runs a
 * model: a table of function pointers. The real adapter wires src/model (lmx_lm_*), src/tokenizer
 * and the chat-template engine into it; tests plug in a deterministic fake (tests/fake_engine/).
 *
 * Objects:
 *   lmx_model_facts   — (src/model/facts.h) what probe and open report about a model directory;
 *                       the probe's, with the config it parsed, is handed to open and completed
 *                       there, so a load reads config.json once.
 *   lmx_engine_model  — one opened model directory (weights, config, tokenizer, template).
 *                       Immutable after open; every function taking only a model must be safe to
 *                       call from many threads at once.
 *   lmx_engine_kv     — the KV cache / decoding state of ONE generation (one thread at a time).
 *   lmx_engine_detok  — the streaming detokenizer of ONE generation (one thread at a time).
 *
 * Ownership: memory returned through `**out` arrays/strings is malloc'd and freed by the caller
 * with free(); text returned by detok_push/detok_flush points into the detokenizer and is valid
 * until its next call. Each create/open is paired with a destroy/close (NULL-safe).
 *
 * Errors: functions return lmx_status and set the thread-local detail with lmx_error().
 * Allocation failure (host or device) while opening MUST be LMX_ERR_OUT_OF_MEMORY: the cache then
 * evicts its least-recently-used model and retries (at most 3 attempts). A failed open leaves
 * nothing allocated.
 */
#ifndef LMX_ENGINE_ENGINE_H
#define LMX_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lmx.h"
#include "model/facts.h"

typedef struct lmx_engine_model lmx_engine_model;
typedef struct lmx_engine_kv lmx_engine_kv;
typedef struct lmx_engine_detok lmx_engine_detok;
typedef struct lmx_engine_pool lmx_engine_pool;
typedef struct lmx_engine_seq lmx_engine_seq;

/* One sequence's part of a batched step (op `step`): ids[0..n) run at the sequence's next positions
 * (n > 1: a prefill chunk; n == 1: a decode row). With `sample` non-NULL the engine also chooses the
 * next token (*token; -1 when it could not decide exactly: then logits holds the row's [vocab_size]
 * logits and the caller samples on the host with sample->u); with `logits` non-NULL and sample NULL
 * it writes the logits of the last position there; with both NULL (an inner prefill chunk) it
 * writes nothing. */
typedef struct lmx_engine_step_row {
    lmx_engine_seq *seq;
    const int32_t *ids;
    size_t n;
    const struct lmx_engine_sample *sample; /* NULL: no device sampling for this row */
    float *logits;                          /* [vocab_size] or NULL */
    int32_t *token;                         /* out, when sample != NULL */
} lmx_engine_step_row;

/* How to open a model (from the runtime's lmx_config). */
typedef struct lmx_engine_load_opts {
    lmx_device device;     /* AUTO, GPU or CPU */
    bool use_mmap;
    int max_context;       /* KV cache capacity the runtime will ask for */
    bool kv_cache;         /* false: the runtime re-runs the whole sequence every step (a slow
                              reference mode: kv_reset + forward(all ids)); nothing to do here */
    int n_threads;         /* 0 = all cores */
    int tensor_parallel;   /* ranks to split the model over (lmx_config.tensor_parallel), 0 = one device */
} lmx_engine_load_opts;

/* What forward_sample needs to choose the next token: the generation's sampling parameters, the
 * penalty history and the step's uniform. */
typedef struct lmx_engine_sample {
    lmx_sampling sampling;
    const int32_t *history; /* [n_history]: prompt, then generated tokens */
    size_t n_history;
    double u;               /* uniform in [0,1) for the draw (drawn by the caller; unused when greedy) */
} lmx_engine_sample;

typedef struct lmx_engine {
    void *ctx; /* passed to probe/open/device_bytes; owned by whoever built the engine */

    /* Reads enough of `dir` to estimate memory (weight_bytes, kv_bytes_per_token, scratch_bytes of
     * model/facts.h) without loading weights. facts->state may keep what was parsed (config.json)
     * for open to reuse: the caller hands the same facts to every open attempt and releases them
     * (lmx_model_facts_release) after the last. Errors: MODEL_NOT_FOUND, INVALID_MODEL_FORMAT. */
    lmx_status (*probe)(void *ctx, const char *dir, const lmx_engine_load_opts *opts, lmx_model_facts *facts);
    /* Loads and validates a model (config parses, tokenizer loads, every expected tensor present
     * with the right shape/dtype, else VALIDATION_FAILED / INVALID_MODEL_FORMAT with detail).
     * facts: in, the probe's (state included, or zeroed when there was no probe); out, completed
     * with what the opened model knows — written only on success. Allocation failure →
     * OUT_OF_MEMORY. */
    lmx_status (*open)(void *ctx, const char *dir, const lmx_engine_load_opts *opts, lmx_engine_model **out,
                       lmx_model_facts *facts);
    void (*close)(lmx_engine_model *m); /* NULL-safe */

    /* Text → ids (malloc'd, *n of them). add_special: prepend BOS etc. as the tokenizer's
     * post-processor says, except when the text already starts with the BOS text. */
    lmx_status (*tokenize)(lmx_engine_model *m, const char *text, size_t len, bool add_special,
                           int32_t **ids, size_t *n);
    /* Renders the chat template with add_generation_prompt=true into a malloc'd NUL-terminated
     * string (to be tokenized with add_special=false). No template → LMX_ERR_TEMPLATE. */
    lmx_status (*chat_render)(lmx_engine_model *m, const lmx_message *msgs, int n_msgs, char **out);

    /* A KV cache for up to max_context positions (allocated here, never per token). */
    lmx_status (*kv_create)(lmx_engine_model *m, int max_context, lmx_engine_kv **out);
    void (*kv_destroy)(lmx_engine_kv *kv); /* NULL-safe */
    /* Forgets every position (the next forward starts at position 0); keeps the memory. */
    void (*kv_reset)(lmx_engine_kv *kv);
    /* Optional (may be NULL: no prompt cache): keeps the first n positions (n <= positions
     * filled), so the next forward continues at position n — prompt-prefix reuse. May fail with
     * LMX_ERR_UNSUPPORTED (e.g. a sliding-window ring that no longer holds them): then reset. */
    lmx_status (*kv_truncate)(lmx_engine_kv *kv, int n);
    /* Optional (may be NULL: any point is exact): the largest k <= n at which a forward of the
     * rest may resume in kv — whose first n positions were written by one prefill (itself resumed
     * at such a point) — and give bit for bit the logits of one prefill from position 0 (the
     * backend's results may depend on how the prefill is chunked). */
    int (*kv_resume_point)(const lmx_engine_kv *kv, int n);
    /* Optional (may be NULL): bytes the KV cache holds (cache + scratch), for the prompt cache's
     * budget; NULL → kv_bytes_per_token × capacity + scratch_bytes of the facts. */
    int64_t (*kv_bytes)(const lmx_engine_kv *kv);
    /* Runs ids[0..n) at the next positions of kv (prefill when n > 1, chunked inside as needed;
     * decode when n == 1) and writes the logits of the LAST position to logits [vocab_size].
     * Position overflow (past max_context) → LMX_ERR_INVALID_ARGUMENT. Called concurrently on one
     * model with distinct kv objects (one per generation): the adapter makes that safe (shared
     * read-only weights, per-kv scratch, or a per-model lock). */
    lmx_status (*forward)(lmx_engine_model *m, lmx_engine_kv *kv, const int32_t *ids, size_t n,
                          float *logits /* [vocab_size] */);

    /* Streaming detokenizer (mlx-lm semantics): push one id, get the new final text (possibly
     * empty: bytes of an incomplete UTF-8 sequence stay pending); flush returns the rest. */
    lmx_status (*detok_create)(lmx_engine_model *m, lmx_engine_detok **out);
    void (*detok_destroy)(lmx_engine_detok *d); /* NULL-safe */
    lmx_status (*detok_push)(lmx_engine_detok *d, int32_t id, const char **text, size_t *len);
    lmx_status (*detok_flush)(lmx_engine_detok *d, const char **text, size_t *len);

    /* Optional (may be NULL; both thread-safe): bytes the engine holds on the accelerator now. */
    int64_t (*device_bytes)(void *ctx);
    /* Optional (may be NULL): GPU utilisation percent over the recent past, -1 when unknown. */
    double (*gpu_utilization)(void *ctx);

    /* Optional (may be NULL): forward() that also chooses the next token where the logits live (GPU
     * sampling), so only its id crosses to the host: *token = the id the host sampler would pick
     * from these logits with s (lmx_sampler_sample_u with s->u). When the engine cannot decide
     * exactly it sets *token = -1 and writes the logits [vocab_size] instead; the caller samples on
     * the host with the same u. Errors as forward. */
    lmx_status (*forward_sample)(lmx_engine_model *m, lmx_engine_kv *kv, const int32_t *ids, size_t n,
                                 const lmx_engine_sample *s, float *logits /* [vocab_size] */, int32_t *token);

    /* ---- batched steps over a paged KV pool (optional: all NULL = no batching; the runtime then
     * runs one kv per generation through forward) ----
     * A pool holds the KV blocks of all sequences of one model (fixed-size blocks; memory follows what
     * the sequences use). pool_create sizes it to at most max_bytes (blocks + the step scratch for
     * max_rows rows per step); OUT_OF_MEMORY lets the cache evict and retry. One thread at a time
     * runs steps and seq operations on a pool (the runtime's batcher). */
    lmx_status (*pool_create)(lmx_engine_model *m, int64_t max_bytes, int max_rows, lmx_engine_pool **out);
    void (*pool_destroy)(lmx_engine_pool *p); /* NULL-safe; every seq destroyed before */
    /* bytes held (blocks + scratch), bytes of the blocks in use by sequences, blocks free */
    void (*pool_stats)(const lmx_engine_pool *p, int64_t *bytes, int64_t *used_bytes, int64_t *free_blocks);
    /* A new empty sequence of at most max_context positions (blocks are taken as positions fill). */
    lmx_status (*seq_create)(lmx_engine_pool *p, int max_context, lmx_engine_seq **out);
    void (*seq_destroy)(lmx_engine_seq *s); /* NULL-safe; its blocks return to the pool (shared ones
                                               when their last holder goes) */
    int (*seq_pos)(const lmx_engine_seq *s); /* positions filled */
    /* A new sequence sharing the first n positions of src (n <= seq_pos(src)): whole blocks by
     * reference (copy-on-write), the partial last block copied. The prompt cache's reuse. */
    lmx_status (*seq_fork)(const lmx_engine_seq *src, int n, lmx_engine_seq **out);
    /* Keeps the first n positions (n <= seq_pos). */
    lmx_status (*seq_truncate)(lmx_engine_seq *s, int n);
    /* Runs one step over rows[0..n_rows) (distinct sequences of one pool; at most max_rows tokens in
     * all): every sequence's rows at its next positions, as one batched forward (matmuls over all rows,
     * attention per row through the pool). Each row's results are what a step with that row alone
     * would give (the CPU backend: bit for bit). A sequence past its max_context or a pool without
     * free blocks → INVALID_ARGUMENT / OUT_OF_MEMORY naming the row, before anything runs. */
    lmx_status (*step)(lmx_engine_pool *p, lmx_engine_step_row *rows, int n_rows);
} lmx_engine;

/* The engine this build uses for lmx_runtime_create (src/engine/engine_default.c); NULL when
 * none is wired in yet (then loads fail with LMX_ERR_UNSUPPORTED). */
const lmx_engine *lmx_engine_default(void);

#endif
