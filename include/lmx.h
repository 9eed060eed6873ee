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

/* ======================================================================================
 * Runtime: configuration, model cache, generation, metrics
 * ====================================================================================== */

/* Where models run. AUTO picks the GPU when one is usable, else the CPU. */
typedef enum lmx_device { LMX_DEVICE_AUTO = 0, LMX_DEVICE_GPU, LMX_DEVICE_CPU } lmx_device;

/* Runtime configuration (plain values; the runtime copies it, including the models_dir string). */
typedef struct lmx_config {
    lmx_device device;          /* default AUTO */
    int64_t max_memory_bytes;   /* budget for loaded models; 0 = no limit. Loads keep the total
                                   estimate (weights + KV cache for max_context_length) of all
                                   cached models under 80 % of it, evicting LRU models first */
    bool use_mmap;              /* map weight files instead of reading them (default true) */
    int max_cached_models;      /* models kept resident at once, >= 1 (default 3) */
    int max_context_length;     /* tokens of context per generation, >= 1 (default 4096) */
    bool kv_cache;              /* keep a KV cache while decoding (default true) */
    int n_threads;              /* CPU threads, 0 = all cores (default 0) */
    const char *models_dir;     /* models directory; NULL = $LMX_HOME/models, LMX_HOME defaulting
                                   to ~/.cache/lmx. The registry is registry.json in its parent */
    /* What a generate function uses when its opt argument is NULL (the other options then come
     * from lmx_gen_options_default()). */
    float default_temperature;  /* default 0.7 */
    float default_top_p;        /* default 0.9 */
    int default_max_tokens;     /* default 512 */
    /* Prompt cache: finished generations stay (per model, LRU) and a new generation on that model
     * whose prompt shares a prefix with an earlier one prefills only the tokens after it
     * (lmx_gen_result.cached_tokens): the previous turn of a conversation, a shared system prompt.
     * On engines with batched steps (see max_batch) finished sequences stay in the model's KV pool
     * with their prompt AND reply, so the next chat turn reuses the whole previous turn (a fork at
     * the longest common prefix; the budget is per model, inside its pool, and entries are evicted
     * when the pool needs blocks for running sequences). Otherwise whole KV caches are kept: the
     * prefix reused is rounded down to the prefill chunk (128 tokens on the CPU) and never covers
     * the tokens an earlier generation decoded (its reply is prefilled again), so the output is bit
     * for bit the same as without the cache; their bytes count over all models in max_memory_bytes'
     * budget (entries are evicted before models; evicting a model drops its entries). 0 = off; -1
     * (the default) = 25 % of max_memory_bytes, or 1 GiB when that is 0. Needs kv_cache. */
    int64_t prompt_cache_bytes;
    /* Continuous batching (engines with batched steps, see docs/ARCHITECTURE.md): every
     * generation on a model becomes a sequence of that model's batcher thread, which runs up to
     * max_batch sequences at once (more wait in FIFO order) in steps of at most
     * max_batch + prefill_chunk tokens: one decode row per running sequence plus the prompts of
     * newly admitted ones in chunks of prefill_chunk tokens, so no stream stalls for a long
     * prompt. On such engines the prompt cache keeps finished sequences (prompt AND reply) in the
     * model's KV pool, sized for max_batch sequences of the full context plus prompt_cache_bytes
     * (within what max_memory_bytes' budget has left) and reserved with the model. Both apply to
     * models loaded after a change. Defaults 16 and 256; max_batch in [1, 4096], prefill_chunk in
     * [1, 65536]. */
    int max_batch;
    int prefill_chunk;
    /* Tensor parallel: each model loaded afterwards is split over this many ranks in one process,
     * one thread per rank (Megatron's split: attention heads, MLP rows and the vocabulary divided;
     * an all-reduce after the attention and the MLP, see docs/ARCHITECTURE.md). On the GPU the ranks
     * are devices 0 .. N-1 over NCCL (libnccl.so.2; NVLink multicast off); on the CPU N backends of
     * n_threads / N threads each. With N >= 1 max_memory_bytes and the cache's estimates count ONE
     * device (the most loaded rank's share). Models it cannot split (mixture of experts over several
     * ranks) fail to load with LMX_ERR_UNSUPPORTED; fewer GPUs than N → LMX_ERR_GPU_NOT_AVAILABLE.
     * Batched steps (max_batch) are off for such models: each generation runs its own forward.
     * 0 (the default) = one device; 1 = one rank through the same path (the single-device results
     * bit for bit); at most 64. */
    int tensor_parallel;
} lmx_config;

/* The defaults listed above. */
LMX_API lmx_config lmx_config_default(void);

/* A runtime owns a cache of loaded models, a performance monitor and a configuration. All its
 * functions may be called concurrently from any number of threads (same or different models). */
typedef struct lmx_runtime lmx_runtime;

/* Creates a runtime from *cfg (NULL = lmx_config_default()). Invalid values (negative memory,
 * max_cached_models < 1, max_context_length < 1, n_threads < 0, temperature < 0, top_p outside
 * [0,1], default_max_tokens < -1, unknown device) → LMX_ERR_INVALID_ARGUMENT, *out untouched.
 * No model is loaded yet. */
LMX_API lmx_status lmx_runtime_create(const lmx_config *cfg, lmx_runtime **out);
/* Unloads every model and frees the runtime. NULL-safe. No other call on rt may be running. */
LMX_API void lmx_runtime_destroy(lmx_runtime *rt);
/* Copies the current configuration into *out. out->models_dir points into the runtime and stays
 * valid until lmx_runtime_destroy. */
LMX_API lmx_status lmx_config_get(lmx_runtime *rt, lmx_config *out);
/* Validates and applies a new configuration. Lower limits (max_cached_models, max_memory_bytes)
 * take effect at once by evicting unused models; device/mmap/context/tensor_parallel changes apply
 * to later loads. On error nothing changes. */
LMX_API lmx_status lmx_config_update(lmx_runtime *rt, const lmx_config *cfg);

/* What a loaded model is. Strings are copied into the struct (no ownership to manage). */
typedef struct lmx_model_info {
    char model_id[256];
    char path[4096];            /* the resolved model directory */
    char model_type[64];        /* config.json model_type, e.g. "llama", "qwen3" */
    int64_t n_params;           /* parameters (quantized weights counted unpacked) */
    int n_layers;
    int hidden_size;
    int vocab_size;
    int quant_bits;             /* 0 = not quantized; else the quantization block's global bits */
    int group_size;             /* quantization group size, 0 when not quantized */
    /* What the weights hold: "none", one format ("q4 g64": affine 4 bits in groups of 64; "mxfp4",
     * "mxfp8", "nvfp4") or the mix with each format's share of the quantized parameters, largest
     * first ("mxfp4 94% + q8 g64 6%": MXFP4 experts, 8-bit affine elsewhere) */
    char quantization[64];
    int64_t weight_bytes;       /* bytes of the weights as loaded */
    int64_t estimated_bytes;    /* the cache's estimate: weights + KV cache for max_context */
    lmx_device device;          /* where it runs: GPU or CPU (never AUTO) */
    int max_context;            /* context length generations of this model get */
    double loaded_at;           /* seconds since the epoch */
    double last_access;         /* seconds since the epoch of the last load/generate hit */
    uint64_t access_count;      /* loads + generations that used it */
    /* Mixture-of-experts models multiply only top_k of n_experts experts per token: the parameters and
     * weight bytes one token uses (each expert tensor counted at top_k / n_experts). Dense models:
     * n_params and weight_bytes. */
    int64_t n_active_params;
    int64_t active_weight_bytes;
} lmx_model_info;

/* Loads (or finds) a model and caches it under model_id (NULL = path_or_name). path_or_name is a
 * registered name (see lmx_registry_*), else a model directory. Loading an id that is already
 * cached is a cache hit: no disk read, only last_access/access_count change (the same id with a
 * different directory → LMX_ERR_INVALID_ARGUMENT). A miss may evict least-recently-used models
 * (count limit, memory budget). Errors: LMX_ERR_MODEL_NOT_FOUND, LMX_ERR_INVALID_MODEL_FORMAT,
 * LMX_ERR_MODEL_VALIDATION_FAILED, LMX_ERR_LOAD_FAILURE, LMX_ERR_OUT_OF_MEMORY (it can never fit
 * the budget, or allocation kept failing after evicting and retrying, 3 attempts; nothing stays
 * half-loaded), LMX_ERR_GPU_NOT_AVAILABLE. With LMX_VERIFY=1 in the environment, a registered
 * model's files are checked against their recorded SHA-256 first. */
LMX_API lmx_status lmx_model_load(lmx_runtime *rt, const char *path_or_name, const char *model_id);
/* Drops a model from the cache. A generation running on it keeps it alive until it ends; the
 * memory is released then. Not cached → LMX_ERR_MODEL_NOT_FOUND. */
LMX_API lmx_status lmx_model_unload(lmx_runtime *rt, const char *model_id);
/* True when model_id is cached and ready (does not count as an access). */
LMX_API bool lmx_model_is_loaded(lmx_runtime *rt, const char *model_id);
/* Fills *out for a cached model (does not count as an access). Not cached → MODEL_NOT_FOUND. */
LMX_API lmx_status lmx_model_get_info(lmx_runtime *rt, const char *model_id, lmx_model_info *out);

/* How the next token is chosen from the logits (mlx-lm's order: repetition penalty, then greedy
 * when temperature is 0, else top_p → min_p → top_k on the untempered distribution, temperature,
 * one draw). The same struct travels from lmx_gen_options down to the device sampler. */
typedef struct lmx_sampling {
    float temperature;          /* 0 = greedy (argmax) */
    float top_p;                /* nucleus mass in (0,1); 0 or 1 = off */
    float min_p;                /* drop tokens with p < min_p * p_max; 0 = off */
    int top_k;                  /* keep the k most likely tokens; 0 = off */
    float repetition_penalty;   /* 1 (or 0) = off; else mlx-lm: l<0 → l*p, else l/p */
    int repetition_context;     /* how many recent tokens the penalty looks at (default 20) */
    /* OpenAI's penalties over the GENERATED tokens only (not the prompt), applied after the
     * repetition penalty: l[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty.
     * Each in [-2, 2]; 0 = off (the default). */
    float frequency_penalty;
    float presence_penalty;
} lmx_sampling;

/* Log-probabilities of one generated token (lmx_gen_options.logprob_fn): log-softmax at
 * temperature 1 of the logits the token was sampled from after the penalties (repetition,
 * frequency, presence) and before temperature and top_p / min_p / top_k — the model's distribution
 * as penalized, as OpenAI reports it (not the truncated one: a greedy token gets its real
 * probability, not 1). */
#define LMX_MAX_TOP_LOGPROBS 20
typedef struct lmx_token_logprob {
    int32_t id;
    float logprob;              /* natural log */
    const char *text;           /* the token's bytes decoded alone (not NUL-terminated; may be a partial
                                   UTF-8 sequence), valid during the call; NULL outside logprob_fn */
    size_t len;
} lmx_token_logprob;
typedef struct lmx_token_info {
    int32_t id;                 /* the generated token */
    float logprob;
    const char *text;           /* its bytes, as lmx_token_logprob.text */
    size_t len;
    int n_top;                  /* = the options' top_logprobs */
    const lmx_token_logprob *top; /* [n_top], most likely first (ties: lower id); valid during the call */
} lmx_token_info;
/* Called on the generating thread for each generated token (EOS excluded), in order, before the
 * text that the token completes reaches lmx_token_fn. Nonzero stops the generation like lmx_token_fn. */
typedef int (*lmx_logprob_fn)(const lmx_token_info *info, void *user);

/* Sampling and stopping options of one generation. */
typedef struct lmx_gen_options {
    lmx_sampling sampling;      /* default: temperature 0.7, top_p 0.9, penalty off, context 20 */
    int max_tokens;             /* tokens to generate at most; -1 = until EOS/stop/context end */
    const char *const *stop;    /* n_stop stop strings (not copied; must outlive the call) */
    int n_stop;
    uint64_t seed;              /* used when use_seed: the same seed gives the same output */
    bool use_seed;              /* false: seeded from the clock/entropy per generation */
    bool ignore_eos;            /* true: EOS ids are generated like any other token and never end
                                   the generation (benchmarks: exactly max_tokens tokens unless a
                                   stop string or the context ends it). Default false */
    /* Token log-probabilities: logprob_fn (NULL = off, the default) gets each generated token's
     * lmx_token_info with top_logprobs (0..LMX_MAX_TOP_LOGPROBS) alternatives. Turns device
     * sampling off for this generation (the logits must reach the host). */
    lmx_logprob_fn logprob_fn;
    void *logprob_user;
    int top_logprobs;
    /* A per-sequence logits hook for tool calls and schema-constrained sampling — a design seam,
     * NOT implemented in this version: a non-NULL logits_fn is refused (LMX_ERR_UNSUPPORTED).
     * Meant: called on each step with this sequence's logits [n_vocab] (editable in place) before
     * the sampler and the ids so far (prompt then generated); nonzero cancels like lmx_token_fn.
     * The batcher (src/runtime/batcher.c, where each row's logits are sampled) is the one place
     * that will call it, per row, on the batcher's thread; `lmx serve` would set it per request
     * (src/server/oai_request.c is where a request's tools / response_format become it). */
    int (*logits_fn)(float *logits, int n_vocab, const int32_t *ids, size_t n_ids, void *user);
    void *logits_user;
} lmx_gen_options;

/* temperature 0.7, top_p 0.9, top_k 0, min_p 0, max_tokens 512, no stop strings, repetition
 * penalty 1.0, context 20, unseeded, EOS ends the generation. */
LMX_API lmx_gen_options lmx_gen_options_default(void);

/* Receives each piece of generated text as it becomes final (UTF-8, not NUL-terminated; valid
 * only during the call). Pieces never contain a stop string or EOS text. Return nonzero to stop
 * the generation (it then ends with LMX_ERR_CANCELLED / LMX_FINISH_CANCELLED). Called on the
 * thread that called the generate function. */
typedef int (*lmx_token_fn)(const char *text, size_t len, void *user);

typedef enum lmx_finish_reason {
    LMX_FINISH_STOP = 0,        /* an EOS token or a stop string */
    LMX_FINISH_LENGTH,          /* max_tokens reached, or the context is full */
    LMX_FINISH_CANCELLED        /* the callback returned nonzero */
} lmx_finish_reason;

/* Counters and timings of one generation. Timings are wall clock from the call's start. */
typedef struct lmx_gen_result {
    int n_prompt_tokens;
    int n_generated_tokens;     /* sampled tokens, EOS excluded (a stop string's tokens included) */
    lmx_finish_reason finish_reason;
    double ttft_ms;             /* call start → first token sampled (includes a lazy load) */
    double total_ms;            /* call start → return */
    double tokens_per_second;   /* decode speed: (n_generated - 1) / (time after the first token);
                                   n_generated / total when fewer than 2 tokens */
    double prompt_tokens_per_second; /* prompt tokens prefilled (n_prompt_tokens - cached_tokens)
                                        / prefill time */
    double load_ms;             /* time spent loading the model lazily in this call (0 on a hit) */
    double prefill_ms;          /* the prompt's forward pass alone (no load, no setup) */
    double decode_ms;           /* first token sampled → last token done: tokens_per_second's
                                   denominator when n_generated >= 2 */
    int cached_tokens;          /* prompt tokens served from the prompt cache (not prefilled) */
} lmx_gen_result;

/* One chat message; role is "system", "user", "assistant" or "tool". */
typedef struct lmx_message {
    const char *role;
    const char *content;
} lmx_message;

/* Generates a completion of `prompt` (raw text; the tokenizer adds BOS when the model wants one).
 * opt NULL = lmx_gen_options_default() with the runtime's default temperature/top_p/max_tokens.
 * model_id not cached → loaded lazily (a cache miss) from the registered name or directory of that
 * name. The model is pinned while generating: it is never evicted under a running generation.
 * *out_text gets the whole text (caller frees with lmx_free); res (may be NULL) the counters.
 * A prompt longer than the context → LMX_ERR_INVALID_ARGUMENT with the two lengths in the detail.
 * Errors from loading as lmx_model_load; LMX_ERR_INFERENCE_FAILURE when the forward pass fails. */
LMX_API lmx_status lmx_generate(lmx_runtime *rt, const char *model_id, const char *prompt,
                                const lmx_gen_options *opt, char **out_text, lmx_gen_result *res);
/* As lmx_generate, streaming text pieces to fn. Text that could still be the start of a stop
 * string is held back until it is resolved. If fn returns nonzero the generation stops at once:
 * the result is LMX_ERR_CANCELLED, *res is filled with finish_reason LMX_FINISH_CANCELLED. */
LMX_API lmx_status lmx_generate_stream(lmx_runtime *rt, const char *model_id, const char *prompt,
                                       const lmx_gen_options *opt, lmx_token_fn fn, void *user,
                                       lmx_gen_result *res);
/* Renders msgs with the model's chat template (add_generation_prompt on), then streams as
 * lmx_generate_stream. No template in the model → LMX_ERR_TEMPLATE. */
LMX_API lmx_status lmx_chat_stream(lmx_runtime *rt, const char *model_id, const lmx_message *msgs,
                                   int n_msgs, const lmx_gen_options *opt, lmx_token_fn fn,
                                   void *user, lmx_gen_result *res);

/* Token-level generation: the prompt is given as ids (no tokenizer, no template, no BOS added).
 * Otherwise as lmx_generate_stream (fn may be NULL). *out_ids (may be NULL; caller frees with
 * lmx_free) receives the n_out generated ids, EOS excluded; also filled on LMX_ERR_CANCELLED.
 * Ids outside the vocabulary → LMX_ERR_INVALID_ARGUMENT. */
LMX_API lmx_status lmx_generate_ids(lmx_runtime *rt, const char *model_id, const int32_t *prompt_ids,
                                    size_t n_prompt, const lmx_gen_options *opt, lmx_token_fn fn,
                                    void *user, int32_t **out_ids, size_t *n_out, lmx_gen_result *res);

/* The model's tokenizer (loading the model lazily like the generate functions). add_special: add
 * BOS etc. as the tokenizer's post-processor says. *ids: lmx_free. */
LMX_API lmx_status lmx_tokenize(lmx_runtime *rt, const char *model_id, const char *text, bool add_special,
                                int32_t **ids, size_t *n);
/* Decodes ids to text (streaming-detokenizer semantics, special tokens included). *text: lmx_free,
 * NUL-terminated. */
LMX_API lmx_status lmx_detokenize(lmx_runtime *rt, const char *model_id, const int32_t *ids, size_t n,
                                  char **text);

/* Performance counters, per model or for the whole runtime. */
#define LMX_BATCH_HIST_BUCKETS 9
typedef struct lmx_metrics {
    double load_ms;               /* total time spent loading (per model: its loads) */
    uint64_t n_loads;
    uint64_t n_inferences;        /* finished generations (any finish reason) */
    uint64_t n_errors;            /* generations that failed */
    double total_inference_ms;
    uint64_t total_tokens;        /* generated tokens */
    uint64_t total_prompt_tokens;
    double avg_tokens_per_second; /* mean of the generations' tokens_per_second */
    double avg_ttft_ms;
    int64_t current_memory_bytes; /* overall: process RSS + device bytes; per model: its estimate
                                     while cached, else 0 */
    int64_t peak_memory_bytes;    /* highest current_memory_bytes seen since the last reset */
    double avg_gpu_utilization;   /* percent, -1 when unknown */
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t cache_evictions;
    double cache_hit_rate;        /* hits / (hits + misses), 0 when none */
    int n_models_loaded;          /* overall only: models cached now */
    /* prompt cache (overall: all models; per model: a batched model's own, 0 for the others,
     * whose entries the runtime counts only overall) */
    uint64_t prompt_cache_hits;   /* generations that reused a cached prefix */
    uint64_t prompt_cache_misses; /* generations that found none */
    uint64_t prompt_cache_evictions; /* entries dropped for room */
    int64_t prompt_cache_bytes;   /* bytes held by entries now */
    /* batched models (0 without batching) */
    int64_t kv_pool_bytes;        /* bytes of the KV pools (blocks + step scratch) */
    int64_t kv_pool_used_bytes;   /* bytes of blocks held by sequences (running and cached) */
    uint64_t batch_steps;         /* batched steps run */
    uint64_t batch_rows;          /* sequences summed over those steps (mean batch = rows / steps) */
    uint64_t batch_size_hist[LMX_BATCH_HIST_BUCKETS]; /* steps by sequences in the step: bucket i
                                     counts steps of <= 2^i sequences and more than the bucket
                                     before (1, 2, 4, … 128; the last bucket: more than 128) */
} lmx_metrics;

/* model_id NULL = the whole runtime. A model never seen → LMX_ERR_MODEL_NOT_FOUND. */
LMX_API lmx_status lmx_metrics_get(lmx_runtime *rt, const char *model_id, lmx_metrics *out);
/* Zeroes the counters of one model (NULL = all models and the overall counters; the peak memory
 * restarts from the current value). */
LMX_API void lmx_metrics_reset(lmx_runtime *rt, const char *model_id);

/* ======================================================================================
 * Registry: the models directory and registry.json (used by the CLI's list/add/rm/verify)
 *
 * models_dir NULL = $LMX_HOME/models (LMX_HOME default ~/.cache/lmx); the registry file is
 * registry.json in models_dir's parent. Updates are atomic (temporary file, fsync, rename) and
 * serialized across threads and processes with a lock file. All functions are thread-safe.
 * ====================================================================================== */
typedef struct lmx_registry_file {
    char *name;                 /* file name relative to the model directory */
    uint64_t size;
    char sha256[65];            /* lower-case hex */
} lmx_registry_file;

typedef struct lmx_registry_entry {
    char *id;                   /* "org/name" */
    char *path;                 /* absolute model directory */
    double added_at;            /* seconds since the epoch */
    double last_used;           /* 0 = never */
    int n_files;
    lmx_registry_file *files;
} lmx_registry_entry;

/* All registered models, sorted by id. Free with lmx_registry_entries_free. No registry yet →
 * LMX_OK with *n = 0. */
LMX_API lmx_status lmx_registry_list(const char *models_dir, lmx_registry_entry **out, int *n);
LMX_API void lmx_registry_entries_free(lmx_registry_entry *entries, int n); /* NULL-safe */
/* Registers an existing model directory under `name` (NULL = "<parent>/<dir>" when the directory
 * is models_dir/<org>/<name>, else "local/<dir name>"), recording every regular file's size and
 * SHA-256 (symlinks resolving outside the directory are skipped, except a Hugging Face cache
 * snapshot's links into its <repo>/blobs). An id that exists is replaced.
 * The directory must hold a config.json (a regular file), else LMX_ERR_MODEL_NOT_FOUND; a name
 * (given or default) with spaces, control bytes, "..", a leading '/' or non-UTF-8 bytes →
 * LMX_ERR_INVALID_ARGUMENT. */
LMX_API lmx_status lmx_registry_add(const char *models_dir, const char *path, const char *name);
/* Forgets a registered model. delete_files also removes its directory when, both resolved, it is
 * a strict descendant of models_dir; a path that lies outside models_dir as written is only
 * unregistered (files kept). Refused with LMX_ERR_INVALID_ARGUMENT, registry unchanged, when the
 * path is written inside models_dir but resolves outside it or to it ("<models>/../x",
 * "<models>/."), or when other registered models lie inside the directory. Unknown →
 * LMX_ERR_MODEL_NOT_FOUND. */
LMX_API lmx_status lmx_registry_remove(const char *models_dir, const char *name, bool delete_files);
/* Re-hashes a registered model's files. Mismatch, missing or changed size →
 * LMX_ERR_MODEL_VALIDATION_FAILED; *report (optional, lmx_free) lists one line per file. Only
 * regular files inside the model directory are read: a recorded name that is not a plain file
 * name, or resolves outside the directory, is REFUSED (not read) and counts as a failure. */
LMX_API lmx_status lmx_registry_verify(const char *models_dir, const char *name, char **report);
/* A registered name → its directory; else a directory models_dir/<name_or_path>; else an existing
 * directory path → its absolute path; else LMX_ERR_MODEL_NOT_FOUND. *path: lmx_free. */
LMX_API lmx_status lmx_registry_resolve(const char *models_dir, const char *name_or_path, char **path);

/* Releases memory that lmx handed to the caller (strings, arrays). NULL-safe. */
LMX_API void lmx_free(void *p);

#ifdef __cplusplus
}
#endif
#endif /* LMX_H */
