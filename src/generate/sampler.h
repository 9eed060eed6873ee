/* sampler.h — turning one step's logits into a token, in mlx-lm's order (mlx-format.md §6.3-6.4):
 *
 *   1. repetition penalty (when p != 0 and p != 1) over the DISTINCT ids among the last
 *      `repetition_context` history tokens: l < 0 → l * p, else l / p (duplicates do not compound);
 *      then OpenAI's frequency / presence penalties over the generated ids (history after the
 *      prompt length set by lmx_sampler_set_prompt_len): l -= count * frequency + presence;
 *   2. temperature == 0 → greedy: argmax of the penalized logits (lowest id on ties). Else:
 *   3. logprobs = logits - logsumexp(logits) (temperature 1), then the filters, each setting
 *      rejected entries to -inf, in this fixed order:
 *      a. top_p (0 < top_p < 1): sort ascending, keep tokens whose ascending cumulative probability
 *         is > 1 - top_p (the smallest top set reaching top_p, boundary token included);
 *      b. min_p (0 < min_p): drop logprob < max_logprob + ln(min_p) (the top token always stays);
 *      c. top_k (0 < k < vocab): keep the k largest (ties at the k-th value: deterministic, the
 *         first survivors in list order);
 *   4. temperature after filtering: p_i ∝ exp((logprob_i - max) / temperature) over the kept
 *      tokens, and one categorical draw by inverse CDF in id order with a uniform double.
 *
 * RNG: xoshiro256** (Blackman & Vigna), its 256-bit state filled from a 64-bit seed with
 * splitmix64. Uniform doubles are (next() >> 11) * 2^-53. The state lives in the sampler (one
 * per generation; no global RNG), so a fixed seed gives the same tokens on any thread and run.
 * lmx_sampler_seed_entropy() seeds from getrandom(), else the clock.
 *
 * Cost per token (vocab V): greedy one pass; otherwise a max pass, one expf pass for top_p
 * (mass bucketed by distance below the max logit, only the bucket holding the cut is sorted), an
 * O(V) quickselect for top_k, and the draw over the survivors (one expf pass when unfiltered).
 * Measured on a shared 2-core box, V = 151,936: greedy 0.1 ms, temperature 0.75 ms, with
 * top_p 0.9 + penalty 1.25 ms.
 * Memory: lmx_sampler_create(vocab) allocates every scratch buffer; sampling allocates nothing.
 * Thread-safety: a sampler is used by one thread at a time; distinct samplers are independent.
 */
#ifndef LMX_GENERATE_SAMPLER_H
#define LMX_GENERATE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lmx.h"

typedef struct lmx_sampler lmx_sampler;

/* Checks the ranges of lmx_sampling (lmx.h): temperature >= 0, top_p and min_p in [0,1], top_k >= 0,
 * repetition_penalty >= 0, repetition_context >= 0; non-finite or out-of-range →
 * LMX_ERR_INVALID_ARGUMENT naming the field. */
lmx_status lmx_sampling_validate(const lmx_sampling *p);

lmx_status lmx_sampler_create(int vocab, lmx_sampler **out);
void lmx_sampler_destroy(lmx_sampler *s); /* NULL-safe */

void lmx_sampler_seed(lmx_sampler *s, uint64_t seed);
void lmx_sampler_seed_entropy(lmx_sampler *s);

/* Next raw 64-bit value / uniform double in [0,1) of the sampler's generator. */
uint64_t lmx_sampler_next_u64(lmx_sampler *s);
double lmx_sampler_uniform(lmx_sampler *s);

/* history[0..n_prompt) of the following calls is the prompt: the frequency / presence penalties
 * count only the ids after it (default 0: every history id counts). */
void lmx_sampler_set_prompt_len(lmx_sampler *s, size_t n_prompt);

/* log-softmax (temperature 1) of logits [vocab] — the caller passes the logits the sampler left
 * after a sample, i.e. penalized (repetition, frequency, presence) and before the temperature and
 * the top_p / min_p / top_k truncation: *logprob of token, and the n_top (<= LMX_MAX_TOP_LOGPROBS)
 * most likely ids with theirs into top[0..n_top), most likely first (ties: lower id). */
lmx_status lmx_sampler_logprobs(const lmx_sampler *s, const float *logits, int32_t token, int n_top,
                                float *logprob, lmx_token_logprob *top);

/* Applies the repetition penalty in place to logits [vocab] using history[0..n_history) (only the
 * last repetition_context entries count; ids outside [0,vocab) are ignored). */
void lmx_sampler_apply_penalty(lmx_sampler *s, const lmx_sampling *p, float *logits,
                               const int32_t *history, size_t n_history);

/* Steps 1-4 minus the draw: writes the final distribution probs [vocab] (sums to 1; one-hot for
 * greedy). logits [vocab] is modified in place (penalty). For tests and for reporting logprobs. */
lmx_status lmx_sampler_probs(lmx_sampler *s, const lmx_sampling *p, float *logits,
                             const int32_t *history, size_t n_history, double *probs);

/* Steps 1-4: samples one token id into *token. logits [vocab] is modified in place. Non-finite
 * logits everywhere → LMX_ERR_INFERENCE_FAILURE. */
lmx_status lmx_sampler_sample(lmx_sampler *s, const lmx_sampling *p, float *logits,
                              const int32_t *history, size_t n_history, int32_t *token);

/* lmx_sampler_sample with the uniform u in [0,1) given instead of drawn from the sampler's generator
 * (the generator is not advanced; u is ignored when greedy). A caller that draws u itself with
 * lmx_sampler_uniform exactly when temperature > 0 sees the same tokens as lmx_sampler_sample: the
 * GPU sampling path draws u before the forward step and falls back to this on the host. */
lmx_status lmx_sampler_sample_u(lmx_sampler *s, const lmx_sampling *p, float *logits,
                                const int32_t *history, size_t n_history, double u, int32_t *token);

#endif
