/* engine_lm.h — the real engine behind the lmx.h facade: src/model (lmx_lm_*, weights on a compute
 * backend), src/tokenizer (tokenizer.json, streaming detokenizer) and the chat-template engine,
 * adapted to the seam of engine/engine.h.
 *
 * Choices (documented in README/ARCHITECTURE):
 *   - A model directory without tokenizer.json still loads (token-id use: lmx_generate_ids, logits);
 *     text functions (tokenize, chat) then fail with LMX_ERR_UNSUPPORTED naming the directory, and
 *     the streaming detokenizer yields no text. A tokenizer.json that is present but cannot be
 *     loaded fails the load (its own status, e.g. INVALID_MODEL_FORMAT / UNSUPPORTED).
 *   - A chat template that does not parse does not fail the load: chat_render reports it
 *     (LMX_ERR_TEMPLATE with the parser's line and message). No template → LMX_ERR_TEMPLATE.
 *   - tokenize with add_special follows mlx-lm: special tokens are added unless the text already
 *     starts with the BOS token's text.
 *   - EOS ids: generation_config.json, else config.json, else the tokenizer's eos_token.
 *   - Device: lmx_backend_create (backend.h) resolves it: GPU when asked for and a CUDA device is
 *     usable (else LMX_ERR_GPU_NOT_AVAILABLE); AUTO picks the GPU when usable, else the CPU with a
 *     warning (once per process).
 *
 * Thread-safety: the engine table is immutable; opened models are immutable (forward calls on one
 * model from several threads are serialized by the backend, each with its own KV cache).
 */
#ifndef LMX_ENGINE_ENGINE_LM_H
#define LMX_ENGINE_ENGINE_LM_H

#include "engine/engine.h"

/* The engine over src/model + src/tokenizer (static storage, never NULL). */
const lmx_engine *lmx_engine_lm(void);

#endif
