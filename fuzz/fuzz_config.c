/* fuzz_config.c — libFuzzer target for the config.json parser (lmx_model_config_parse).
 *
 * The input is split at its first NUL byte: the part before is config.json, the part after (if any)
 * generation_config.json. On success every array of the result is read (so ASan sees any
 * out-of-bounds entry) and the invariants the model code relies on are checked. */
#include "model/config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t len = nul ? (size_t)(nul - data) : size;
    char *cfg = malloc(len ? len : 1);
    char *gen = NULL;
    size_t glen = 0;
    if (!cfg) return 0;
    memcpy(cfg, data, len);
    if (nul) {
        glen = size - len - 1;
        gen = malloc(glen ? glen : 1);
        if (!gen) {
            free(cfg);
            return 0;
        }
        memcpy(gen, nul + 1, glen);
    }
    lmx_model_config *c = NULL;
    if (lmx_model_config_parse(cfg, len, gen, glen, "fuzz/config.json", &c) == LMX_OK) {
        volatile long sink = 0;
        if (c->hidden_size < 1 || c->n_layers < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 1 ||
            c->n_heads % c->n_kv_heads || c->rotary_dim < 2 || c->rotary_dim > c->head_dim || c->rotary_dim % 2 ||
            c->vocab_size < 1 || !(c->rms_norm_eps > 0))
            abort();
        for (int i = 0; i < c->n_layers; i++) sink += c->layer_sliding[i];
        if (c->sliding_window < 0) abort();
        for (int i = 0; i < c->n_eos; i++) sink += c->eos_ids[i];
        const lmx_rope_config *r[2] = {&c->rope, &c->rope_sliding};
        for (int k = 0; k < 2; k++) {
            if (r[k]->type == LMX_ROPE_LONGROPE) {
                if (r[k]->n_factors != c->rotary_dim / 2) abort();
                for (int i = 0; i < r[k]->n_factors; i++) sink += (long)(r[k]->short_factor[i] + r[k]->long_factor[i]);
            }
        }
        for (int i = 0; i < c->n_overrides; i++) {
            lmx_quant_params p;
            sink += (long)strlen(c->overrides[i].module);
            if (lmx_model_config_quant_for(c, c->overrides[i].module, &p) == 1 && (p.bits < 2 || p.bits > 8)) abort();
        }
        lmx_quant_params p;
        sink += lmx_model_config_quant_for(c, "lm_head", &p);
        (void)sink;
    }
    lmx_model_config_free(c);
    free(cfg);
    free(gen);
    return 0;
}
