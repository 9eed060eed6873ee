/* generate.h — one generation over the engine seam (src/engine/engine.h):
 *
 *   prompt ids → forward(all, prefill) → logits → sample → [EOS? stop, never emitted]
 *     → detok_push → stop matcher → fn(text) → forward(token) → …
 *
 * Ends with finish_reason STOP (an EOS id or a stop string; the stop string and anything after it
 * are not emitted), LENGTH (max_tokens non-EOS tokens generated, or the context is full) or
 * CANCELLED (fn returned nonzero: no further callbacks; the call returns LMX_ERR_CANCELLED with
 * *res filled — cancellation is reported as a status so that callers that only check the status
 * notice it, while the result still describes what was produced).
 * The repetition-penalty history is the prompt followed by the generated tokens.
 * Device sampling: when the engine has forward_sample (GPU models) the token is chosen where the
 * logits live and only its id comes back; the uniform of each draw is still taken from the host
 * sampler's generator (before the step, exactly when the host sampler would take one), and when the
 * engine cannot decide exactly the host sampler runs on the returned logits with that uniform — so a
 * seed gives the same tokens on both paths (barring a uniform within rounding distance of a
 * cumulative boundary).
 * A prompt longer than max_context → LMX_ERR_INVALID_ARGUMENT naming both numbers; an empty prompt
 * is also INVALID_ARGUMENT. Generation ends (LENGTH) once a sampled token would need a position
 * at or past max_context.
 *
 * Prompt cache: see kv / n_cached / kv_keep below; res->cached_tokens = n_cached.
 * Allocation: the KV cache (unless handed in), sampler, stop matcher and detokenizer are created once per call; the
 * token loop allocates nothing. Thread-safety: reentrant; the engine model is shared read-only.
 */
#ifndef LMX_GENERATE_GENERATE_H
#define LMX_GENERATE_GENERATE_H

#include <stddef.h>
#include <stdint.h>
#include "lmx.h"
#include "engine/engine.h"

typedef struct lmx_generate_request {
    const lmx_engine *engine;
    lmx_engine_model *model;
    const lmx_model_facts *facts;  /* info.vocab_size, eos_ids */
    const int32_t *prompt;         /* [n_prompt] */
    size_t n_prompt;
    const lmx_gen_options *opt;
    int max_context;               /* positions available (prompt + generated) */
    bool no_kv_cache;              /* re-run the whole sequence each step (reference mode) */
    lmx_token_fn fn;               /* may be NULL (text discarded) */
    void *user;
    uint64_t t_start_ns;           /* monotonic start of the user's call (0 = now) */
    int32_t **out_ids;             /* optional: the generated ids (malloc'd at the end), EOS excluded */
    size_t *n_out;
    /* Prompt cache (optional): kv, when not NULL, is a KV cache created for max_context positions
     * that already holds the K/V of prompt[0..n_cached) (n_cached < n_prompt); the call owns it and
     * prefills only prompt[n_cached..). kv_keep, when not NULL, receives the KV cache at the end
     * (success or cancellation; on an error it is destroyed) with the ids whose K/V it holds —
     * the prompt and the generated tokens that were forwarded (not the last one sampled) — and
     * n_prefilled, how many of them were written by the prefill (the prompt; decode steps compute a
     * row differently from a prefill, so only those can be resumed from exactly); it owns the KV
     * from then on. Not used in the no_kv_cache mode. */
    lmx_engine_kv *kv;
    size_t n_cached;
    void (*kv_keep)(void *keep_user, lmx_engine_kv *kv, const int32_t *ids, size_t n, size_t n_prefilled);
    void *keep_user;
} lmx_generate_request;

/* Validates opt (sampler ranges, max_tokens >= -1, n_stop >= 0, repetition_context >= 0). */
lmx_status lmx_gen_options_validate(const lmx_gen_options *opt);

/* Runs the loop; *res (required) is filled on success, on cancellation and as far as possible
 * on failure. */
lmx_status lmx_generate_run(const lmx_generate_request *req, lmx_gen_result *res);

/* The request's checks (options, prompt length and ids, max_context) — what lmx_generate_run checks
 * first; for the batcher, which runs the same loop over another token source. */
lmx_status lmx_generate_check(const lmx_generate_request *req);

/* Where the tokens of one generation come from: next() returns the token at position n_pos (the
 * history before it is the consumer's hist[0..n_pos)); with info non-NULL (the options' logprob_fn)
 * it also fills the token's log-probabilities. The source records when the prompt's prefill
 * started and ended (monotonic ns) before its first token returns. */
typedef struct lmx_gen_source {
    lmx_status (*next)(struct lmx_gen_source *src, size_t n_pos, int32_t *tok, lmx_token_info *info);
    uint64_t t_prefill0, t_prefill;
    size_t n_cached;      /* prompt tokens the source did not prefill (prompt cache), known by the first token */
} lmx_gen_source;

/* The consumer half of the loop, shared by lmx_generate_run and the batcher: tokens from src →
 * EOS / max_tokens / context checks → detokenizer → stop strings → req->fn, on the calling thread.
 * hist [max_context + 1] receives the prompt and the generated ids. *res is filled here (as far as
 * possible on failure; cached_tokens from src->n_cached at the first token). Returns when the
 * generation ended (the source is not told: the caller stops it). */
lmx_status lmx_generate_consume(const lmx_generate_request *req, lmx_gen_source *src, int32_t *hist,
                                lmx_gen_result *res);

#endif
