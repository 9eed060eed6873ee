/* engine.h — the seam between the runtime (cache, generate loop, facade) and whatever runs a
 * model: a table of function pointers. The real adapter wires src/model (lmx_lm_*), src/tokenizer
 * and the chat-template engine into it; tests plug in a deterministic fake (tests/runtime/).
 *
 * Objects:
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
#ifndef LMX_RUNTIME_ENGINE_H
#define LMX_RUNTIME_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lmx.h"

#define LMX_ENGINE_MAX_EOS 16

typedef struct lmx_engine_model lmx_engine_model;
typedef struct lmx_engine_kv lmx_engine_kv;
typedef struct lmx_engine_detok lmx_engine_detok;

/* How to open a model (from the runtime's lmx_config). */
typedef struct lmx_engine_load_opts {
    lmx_device device;     /* AUTO, GPU or CPU */
    bool use_mmap;
    int max_context;       /* KV cache capacity the runtime will ask for */
    bool kv_cache;         /* false: the runtime re-runs the whole sequence every step (a slow
                              reference mode: kv_reset + forward(all ids)); nothing to do here */
    int n_threads;         /* 0 = all cores */
} lmx_engine_load_opts;

/* What probe/open report about a model. probe fills what it can without loading weights
 * (config.json + file sizes); open fills everything. */
typedef struct lmx_engine_info {
    char model_type[64];
    int64_t n_params;
    int n_layers;
    int hidden_size;
    int vocab_size;            /* logits length of forward() */
    int quant_bits;            /* 0 = none */
    int group_size;
    int64_t weight_bytes;      /* weights as they will sit in memory */
    int64_t kv_bytes_per_token;/* KV cache bytes per context position (all layers, K and V) */
    int64_t scratch_bytes;     /* probe: forward scratch of one KV cache (activations) and backend
                                  copies of the weights (CPU: repacked 4/8-bit tiles), 0 = unknown */
    int max_position;          /* max_position_embeddings (informative: contexts may exceed it, as
                                  in mlx-lm/HF; the cache logs a warning), 0 = unknown */
    lmx_device device;         /* open: where it runs (GPU or CPU) */
    int32_t eos_ids[LMX_ENGINE_MAX_EOS]; /* generation_config.json, else config.json, else tokenizer */
    int n_eos;
    bool has_chat_template;
    bool no_tokenizer;         /* the model has no tokenizer: ids only (tokenize/chat fail, the
                                  detokenizer yields no text, lmx_detokenize → UNSUPPORTED) */
} lmx_engine_info;

/* What forward_sample needs to choose the next token (src/generate/sampler.h's parameters, the
 * penalty history and the step's uniform). */
typedef struct lmx_engine_sample {
    float temperature, top_p, min_p;
    int top_k;
    float repetition_penalty;
    int repetition_context;
    const int32_t *history; /* [n_history]: prompt, then generated tokens */
    size_t n_history;
    double u;               /* uniform in [0,1) for the draw (drawn by the caller; unused when greedy) */
} lmx_engine_sample;

typedef struct lmx_engine {
    void *ctx; /* passed to probe/open/device_bytes; owned by whoever built the engine */

    /* Reads enough of `dir` to estimate memory (weight_bytes, kv_bytes_per_token) without loading
     * weights. Errors: MODEL_NOT_FOUND, INVALID_MODEL_FORMAT. */
    lmx_status (*probe)(void *ctx, const char *dir, const lmx_engine_load_opts *opts,
                        lmx_engine_info *info);
    /* Loads and validates a model (config parses, tokenizer loads, every expected tensor present
     * with the right shape/dtype, else VALIDATION_FAILED / INVALID_MODEL_FORMAT with detail).
     * Allocation failure → OUT_OF_MEMORY. */
    lmx_status (*open)(void *ctx, const char *dir, const lmx_engine_load_opts *opts,
                       lmx_engine_model **out, lmx_engine_info *info);
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
} lmx_engine;

/* The engine this build uses for lmx_runtime_create (src/runtime/engine_default.c); NULL when
 * none is wired in yet (then loads fail with LMX_ERR_UNSUPPORTED). */
const lmx_engine *lmx_engine_default(void);

/* Like lmx_runtime_create but with an explicit engine (tests use a fake one). The engine must
 * outlive the runtime. */
lmx_status lmx_runtime_create_with_engine(const lmx_config *cfg, const lmx_engine *engine,
                                          lmx_runtime **out);

#endif
