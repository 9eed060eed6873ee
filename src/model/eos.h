/* eos.h — the set of end-of-sequence ids of a model directory, as mlx-lm builds it
 * (mlx-format.md §6.6): generation_config.json "eos_token_id" when truthy (Python truthiness:
 * 0 and [] do not count) overrides config.json "eos_token_id" (top level, else text_config);
 * an int becomes a one-element set; when neither has one, the tokenizer's eos id (fallback).
 * Duplicates are dropped. Pure function of the files; thread-safe. */
#ifndef LMX_MODEL_EOS_H
#define LMX_MODEL_EOS_H

#include <stdbool.h>
#include <stdint.h>
#include "lmx.h"

/* The largest config.json / generation_config.json read (the same limit as model/config.c's). */
#define LMX_EOS_CONFIG_MAX_BYTES (64u << 20)

/* Writes up to cap ids into ids[], their count into *n. fallback < 0 = none. A missing,
 * unreadable or malformed file counts as absent (the config loader reports those files; a broken
 * generation_config.json is ignored as transformers does). Ids outside [0, INT32_MAX] are
 * skipped. */
lmx_status lmx_eos_ids_read(const char *dir, int32_t fallback, int32_t *ids, int cap, int *n);

/* The same rules over documents already parsed (gen: generation_config.json's root, cfg:
 * config.json's; either may be NULL), without the fallback: for the config parser, which reads both
 * files once per load. Returns whether either named the EOS ids (else the caller's fallback
 * applies). */
struct cJSON;
bool lmx_eos_ids_from_json(const struct cJSON *gen, const struct cJSON *cfg, int32_t *ids, int cap, int *n);

#endif
