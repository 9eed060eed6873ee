/* facts.h — what a model directory is and costs: one struct, made once per load and completed by
 * the open, so that each fact has one home.
 *
 *   lmx_lm_probe(dir)   config.json + generation_config.json (parsed once) + the safetensors headers:
 *                       the numbers below without binding or reading tensor data, plus the parsed
 *                       config in `state` for the open to take over;
 *   engine open         the same struct, completed with what only an opened model knows (device,
 *                       weight and KV bytes on that device, EOS ids with the tokenizer's fallback,
 *                       tokenizer and chat template presence);
 *   the cache           keeps it per entry; lmx_model_get_info copies `info` as one block and adds
 *                       what the cache owns (id, path, estimate, context, access times).
 *
 * `info` holds the facts lmx.h publishes (model_type, n_params, n_layers, hidden_size, vocab_size,
 * quant_bits, group_size, quantization, weight_bytes, device); its cache fields stay zero here.
 */
#ifndef LMX_MODEL_FACTS_H
#define LMX_MODEL_FACTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lmx.h"

#define LMX_MAX_EOS 16

typedef struct lmx_model_facts {
    lmx_model_info info;        /* vocab_size: the logits length of a forward; device: GPU or CPU
                                   once opened (probe: what was asked for, AUTO resolved later) */
    /* Memory on ONE device (tensor parallel: the fullest rank's; the cache's budget counts one device) */
    int n_devices;              /* devices the model spans: tensor-parallel ranks, else 1 (0 = unknown: 1) */
    int64_t device_weight_bytes; /* weights held on one device (a rank's shard), 0 = weight_bytes */
    int64_t kv_bytes_per_token; /* KV cache bytes per context position (all layers, K and V); probe:
                                   fp32, an upper bound; open: the backend's element type */
    int64_t scratch_bytes;      /* forward scratch of one KV cache (activations) and backend copies
                                   of the weights (CPU: repacked 4/8-bit tiles), 0 = unknown */
    int max_position;           /* max_position_embeddings (informative: contexts may exceed it, as
                                   in mlx-lm/HF; the cache logs a warning), 0 = unknown */
    int32_t eos_ids[LMX_MAX_EOS]; /* generation_config.json, else config.json (read with the config,
                                     model/eos.h), else — added by the open — the tokenizer's */
    int n_eos;
    bool eos_named;             /* one of the two files named them (no tokenizer fallback) */
    bool has_chat_template;     /* open */
    bool no_tokenizer;          /* the model has no tokenizer.json: ids only (tokenize/chat fail, the
                                   detokenizer yields no text, lmx_detokenize → UNSUPPORTED) */
    /* What the probe parsed for the open to reuse (the real engine: the lmx_model_config), or NULL;
     * released with lmx_model_facts_release. Never copied with the struct: whoever copies the facts
     * elsewhere releases the original or clears `state` in the copy. */
    void *state;
    void (*state_free)(void *state);
} lmx_model_facts;

/* Frees what the probe left in f->state (NULL-safe, idempotent). */
static inline void lmx_model_facts_release(lmx_model_facts *f) {
    if (f && f->state && f->state_free) f->state_free(f->state);
    if (f) {
        f->state = NULL;
        f->state_free = NULL;
    }
}

#endif
