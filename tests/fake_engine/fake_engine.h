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
 * Forward counts the tokens it processes (tokens_processed) so tests can tell KV-cached decoding
 * (1 token per step) from the no-cache reference mode (the whole sequence per step).
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

typedef struct fake_engine_ctx {
    atomic_int fail_open_oom;   /* the next N opens fail with LMX_ERR_OUT_OF_MEMORY */
    atomic_int open_calls, close_calls, probe_calls, forward_calls, tokens_processed;
    atomic_int live_models;     /* opened and not yet closed */
    atomic_int live_kv;         /* KV caches alive */
    atomic_int open_delay_ms;   /* sleep inside open (concurrency tests) */
    atomic_int forward_delay_us;/* sleep inside forward */
    atomic_llong device_bytes;  /* sum of live models' weight_bytes */
} fake_engine_ctx;

/* Fills *e with the fake engine's functions, ctx = c (zeroed here). */
void fake_engine_init(lmx_engine *e, fake_engine_ctx *c);

/* Creates dir (mkdir -p) with a fake.json holding `json` and, unless there is one, a config.json
 * ({}: lmx add wants a model directory). Returns 0 on success. */
int fake_model_write(const char *dir, const char *json);

/* A fresh temporary directory (mkdtemp under TMPDIR or /tmp); caller frees the string. */
char *fake_tmpdir(const char *tag);
/* rm -rf */
void fake_rmtree(const char *dir);

#endif
