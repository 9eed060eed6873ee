/* config.c — runtime configuration and generation-option defaults, and their validation. */
#include "runtime/config.h"
#include "util/error.h"

#include <math.h>
#include <stddef.h>

LMX_API lmx_config lmx_config_default(void) {
    lmx_config c = {
        .device = LMX_DEVICE_AUTO,
        .max_memory_bytes = 0,
        .use_mmap = true,
        .max_cached_models = 3,
        .max_context_length = 4096,
        .kv_cache = true,
        .n_threads = 0,
        .models_dir = NULL,
        .default_temperature = 0.7f,
        .default_top_p = 0.9f,
        .default_max_tokens = 512,
        .prompt_cache_bytes = -1,
        .max_batch = 16,
        .prefill_chunk = 256,
        .tensor_parallel = 0,
    };
    return c;
}

LMX_API lmx_gen_options lmx_gen_options_default(void) {
    lmx_gen_options o = {
        .sampling = {.temperature = 0.7f,
                     .top_p = 0.9f,
                     .min_p = 0.0f,
                     .top_k = 0,
                     .repetition_penalty = 1.0f,
                     .repetition_context = 20,
                     .frequency_penalty = 0.0f,
                     .presence_penalty = 0.0f},
        .max_tokens = 512,
        .stop = NULL,
        .n_stop = 0,
        .seed = 0,
        .use_seed = false,
        .ignore_eos = false,
        .logprob_fn = NULL,
        .logprob_user = NULL,
        .top_logprobs = 0,
        .logits_fn = NULL,
        .logits_user = NULL,
    };
    return o;
}

lmx_status lmx_config_validate(const lmx_config *c) {
    if (!c) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: NULL");
    if (c->device != LMX_DEVICE_AUTO && c->device != LMX_DEVICE_GPU && c->device != LMX_DEVICE_CPU)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: device %d is not AUTO, GPU or CPU", (int)c->device);
    if (c->max_memory_bytes < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: max_memory_bytes %lld must be >= 0 (0 = no limit)",
                         (long long)c->max_memory_bytes);
    if (c->prompt_cache_bytes < -1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "config: prompt_cache_bytes %lld must be >= -1 (0 = off, -1 = default)",
                         (long long)c->prompt_cache_bytes);
    if (c->max_cached_models < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: max_cached_models %d must be >= 1", c->max_cached_models);
    if (c->max_context_length < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: max_context_length %d must be >= 1",
                         c->max_context_length);
    if (c->n_threads < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: n_threads %d must be >= 0 (0 = all cores)", c->n_threads);
    if (!isfinite(c->default_temperature) || c->default_temperature < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: default_temperature %g must be >= 0",
                         (double)c->default_temperature);
    if (!isfinite(c->default_top_p) || c->default_top_p < 0 || c->default_top_p > 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: default_top_p %g must be in [0, 1]",
                         (double)c->default_top_p);
    if (c->default_max_tokens < -1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: default_max_tokens %d must be >= -1",
                         c->default_max_tokens);
    if (c->max_batch < 1 || c->max_batch > 4096)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: max_batch %d must be in [1, 4096]", c->max_batch);
    if (c->prefill_chunk < 1 || c->prefill_chunk > 65536)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: prefill_chunk %d must be in [1, 65536]",
                         c->prefill_chunk);
    if (c->tensor_parallel < 0 || c->tensor_parallel > 64)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: tensor_parallel %d must be in [0, 64]",
                         c->tensor_parallel);
    if (c->models_dir && !*c->models_dir)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "config: models_dir is empty (use NULL for the default)");
    return LMX_OK;
}
