/* fake_engine.h — a deterministic toy engine for testing the runtime without a real model.
 *
 * A fake model is a directory holding fake.json:
 *   {"script": "Hello world#", "weight_bytes": 1000, "kv_bytes_per_token": 10,
 *    "peak": 10.0, "template": true, "invalid": false, "eos": 256}
 * Tokenizer: one byte = one token (ids 0..255); id 256 is EOS; vocab 257. No BOS.
 * Forward: the logits depend only on the last input token t: the target is the byte that follows
 * the first occurrence of t in `script` (cyclically; t absent → script[0]); a '#' in the script
 * means EOS. logits[target] = peak, every other logit = 0 — greedy output is the script.
 * Optional "second": "z", "second_logit": 0.8 — byte z always gets that logit (unless it is the
 * target), so a repetition penalty can flip greedy choices.
 * Optional "max_position": N — the model's own context limit (default 2^20).
 * Optional "mix": w — adds w (and w/2) to bytes chosen by a hash of the WHOLE sequence so far, so
 * sampled output depends on every token the KV holds (checks that batching / forks keep the right
 * K/V); greedy output stays the script while w < peak / 1.5.
 * Forward counts the tokens it processes (tokens_processed) so tests can tell KV-cached decoding
 * (1 token per step) from the no-cache reference mode (the whole sequence per step).
 * KV: kv_truncate keeps the first n positions; kv_bytes = kv_bytes_per_token × capacity.
 * Chat template: "<|role|>content\n" per message, then "<|assistant|>"; "template": false → none.
 * "invalid": true → open fails with LMX_ERR_MODEL_VALIDATION_FAILED (a missing tensor).
 * Detokenizer: emits the complete UTF-8 prefix of the pending bytes.
 *
 * Fault injection and counters live in fake_engine_ctx (atomics; thread-safe).
 */
#ifndef LMX_TEST_FAKE_ENGINE_H
#define LMX_TEST_FAKE_ENGINE_H

#include <stdatomic.h>
#include "engine/engine.h"

#define FAKE_VOCAB 257
#define FAKE_EOS 256

#define FAKE_STEP_LOG 4096

typedef struct fake_engine_ctx {
    atomic_int fail_open_oom;   /* the next N opens fail with LMX_ERR_OUT_OF_MEMORY */
    atomic_int open_calls, close_calls, probe_calls, forward_calls, tokens_processed;
    atomic_int live_models;     /* opened and not yet closed */
    atomic_int live_kv;         /* KV caches alive */
    atomic_int open_delay_ms;   /* sleep inside open (concurrency tests) */
    atomic_int forward_delay_us;/* sleep inside forward */
    atomic_llong device_bytes;  /* sum of live models' weight_bytes */
    /* batched steps (fake_engine_enable_batching) */
    atomic_int live_pools, live_seqs;
    atomic_int step_calls, step_rows, device_sampled;
    atomic_int step_delay_us;   /* sleep inside step (the slow mode) */
    int step_log_rows[FAKE_STEP_LOG];   /* per step: rows (sequences) … */
    int step_log_tokens[FAKE_STEP_LOG]; /* … and tokens in all */
} fake_engine_ctx;

/* Fills *e with the fake engine's functions, ctx = c (zeroed here). */
void fake_engine_init(lmx_engine *e, fake_engine_ctx *c);
/* Adds the batched-step ops (pool / seq / step): the runtime then runs every generation through
 * its batcher. Pool: blocks of "block" positions (fake.json, default 16) of
 * max(kv_bytes_per_token, 1) × block bytes, at most "pool_blocks" of them (default: what max_bytes
 * holds); seq_fork shares whole blocks, copies a partial one; writing into a shared block copies it.
 * A row's logits are those forward() gives for the same sequence of tokens; with `sample` the
 * fake decides plain greedy rows itself (device_sampled counts them) and returns -1 otherwise.
 * Each step is logged (step_log_rows / step_log_tokens) for the scheduling tests. */
void fake_engine_enable_batching(lmx_engine *e);

/* Creates dir (mkdir -p) with a fake.json holding `json` and, unless there is one, a config.json
 * ({}: lmx add wants a model directory). Returns 0 on success. */
int fake_model_write(const char *dir, const char *json);

/* A fresh temporary directory (mkdtemp under TMPDIR or /tmp); caller frees the string. */
char *fake_tmpdir(const char *tag);
/* rm -rf */
void fake_rmtree(const char *dir);

#endif
