/* batcher.h — continuous batching of one model's generations over the engine's batched steps
 * (engine.h: pool / seq / step).
 *
 * One batcher per loaded model (created with the model's first generation when the engine has
 * `step` and pool_create succeeds; kept as the model cache entry's companion and destroyed before
 * the model closes). Its thread owns the KV pool and runs steps; every generation on the model —
 * from any thread — is a job:
 *
 *   caller thread                         batcher thread
 *   lmx_batcher_run: job → FIFO queue ─▶  admit (≤ max_batch running; prompt-cache fork or new seq)
 *   lmx_generate_consume:                 step: one decode row per running sequence, then prefill
 *     wait for token k (job condvar) ◀──    chunks of admitted prompts within max_batch +
 *     detok, stop strings, callbacks        prefill_chunk tokens; sample each finished row (host
 *     done → job leaves the batch           sampler, or the engine's through step_row.sample) and
 *                                           publish the token into the job's history
 *
 * Prefill chunks end at multiples of prefill_chunk counted from position 0, whatever else is in
 * the step, so a sequence's rows do not depend on what it is batched with. The batcher samples
 * ahead of the caller: a sequence stops producing on EOS, max_tokens or a full context (the same
 * tests the consumer makes) and leaves the batch at the next step after its caller ends (a stop
 * string, a callback that stops, a cancel) — its blocks return within one step.
 *
 * Prompt cache: a finished sequence (prompt AND the tokens decoded after it) stays in the pool as a
 * cached seq (LRU, bounded by prompt_cache_bytes, counted as kv_bytes_per_token per position); a
 * new job forks the cached seq with the longest common prefix at that length (at most the prompt
 * minus its last token, whose logits are needed) and prefills the rest: cached_tokens. Exactness
 * rests on the engine's contract that a position's K/V is the same whether it was written by a
 * decode row or a prefill chunk (step: "each row's results are what a step with that row alone
 * would give").
 *
 * Pool exhaustion (a step fails with OUT_OF_MEMORY): cached seqs are evicted (LRU) first; with
 * none left the most recently admitted running sequence is preempted — its seq is dropped and the
 * job goes back to the front of the queue, to be prefilled again (prompt and tokens so far) when
 * blocks free up — and admission pauses until a sequence finishes. Only a sequence alone in the
 * pool that still does not fit fails (LMX_ERR_OUT_OF_MEMORY).
 *
 * Locking: one mutex per batcher guards the queue, the jobs' published state and the counters; the
 * step and the sampling run outside it. Lock order: model cache → batcher.
 */
#ifndef LMX_RUNTIME_BATCHER_H
#define LMX_RUNTIME_BATCHER_H

#include <stdint.h>
#include "engine/engine.h"
#include "generate/generate.h"
#include "lmx.h"

typedef struct lmx_batcher lmx_batcher;

typedef struct lmx_batcher_opts {
    int max_batch;              /* sequences running at once (lmx_config.max_batch) */
    int prefill_chunk;          /* prompt tokens per row (lmx_config.prefill_chunk) */
    int max_context;            /* positions per sequence */
    int64_t pool_bytes;         /* pool_create's max_bytes */
    int64_t prompt_cache_bytes; /* cached seqs kept (0 = off) */
} lmx_batcher_opts;

typedef struct lmx_batcher_stats {
    int64_t pool_bytes, pool_used_bytes, pool_free_blocks;
    uint64_t steps, rows;
    uint64_t hist[LMX_BATCH_HIST_BUCKETS];  /* steps by rows, lmx_metrics.batch_size_hist's buckets */
    uint64_t pc_hits, pc_misses, pc_evictions;
    int pc_entries;
    int64_t pc_bytes;
    int running, queued;
    uint64_t preemptions;
} lmx_batcher_stats;

/* Creates the pool (OUT_OF_MEMORY and others from pool_create pass through) and starts the thread.
 * The engine model and facts must outlive the batcher. */
lmx_status lmx_batcher_create(const lmx_engine *eng, lmx_engine_model *m, const lmx_model_facts *facts,
                              const lmx_batcher_opts *o, lmx_batcher **out);
/* Stops the thread, destroys the cached seqs and the pool. No lmx_batcher_run may be running. NULL-safe. */
void lmx_batcher_destroy(lmx_batcher *b);

/* lmx_generate_run through the batcher (req->kv, n_cached and kv_keep are not used: the prompt
 * cache is the batcher's). Blocks the calling thread, which runs the consumer half (callbacks). */
lmx_status lmx_batcher_run(lmx_batcher *b, const lmx_generate_request *req, lmx_gen_result *res);

/* Adds this batcher's counters to *out (callers zero it first to get one batcher's). */
void lmx_batcher_stats_add(lmx_batcher *b, lmx_batcher_stats *out);

#endif
