/* config_parse.h — the pieces of config.json parsing (config.c's parser, config_rope.c,
 * config_quant.c, config_moe.c): the typed getters they share (absent or null → the default; a
 * wrong type → LMX_ERR_INVALID_MODEL_FORMAT naming the file and key) and the sections config.c
 * calls. Internal to src/model/config*.c. */
#ifndef LMX_MODEL_CONFIG_PARSE_H
#define LMX_MODEL_CONFIG_PARSE_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>

#include "model/config.h"
#include "util/error.h"

typedef struct parse_ctx {
    const char *label; /* the file the errors name */
} parse_ctx;

static inline bool is_absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

static inline lmx_status get_num(const parse_ctx *pc, const cJSON *obj, const char *key, double def, double *out) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (is_absent(v)) {
        *out = def;
        return LMX_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: key \"%s\" must be a number", pc->label, key);
    *out = v->valuedouble;
    return LMX_OK;
}

/* Integer in [lo, hi]; def < lo means "required". */
static inline lmx_status get_int(const parse_ctx *pc, const cJSON *obj, const char *key, long long def, long long lo,
                          long long hi, long long *out) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (is_absent(v)) {
        if (def < lo)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: required key \"%s\" is missing", pc->label, key);
        *out = def;
        return LMX_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: key \"%s\" must be an integer in [%lld, %lld]",
                         pc->label, key, lo, hi);
    *out = (long long)v->valuedouble;
    return LMX_OK;
}

static inline lmx_status get_bool(const parse_ctx *pc, const cJSON *obj, const char *key, int def, int *out) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (is_absent(v)) {
        *out = def;
        return LMX_OK;
    }
    if (!cJSON_IsBool(v))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: key \"%s\" must be true or false", pc->label, key);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return LMX_OK;
}

static inline const char *get_str(const cJSON *obj, const char *key) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* First object among several names, in order (skips null/absent). */
static inline const cJSON *get_obj(const cJSON *obj, const char *key) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsObject(v) ? v : NULL;
}

/* The rope tables of the text config t into c->rope (and gemma3's c->rope_sliding): rope_parameters
 * (transformers 5; gemma3: a dict per layer type) else rope_scaling, else `fallback` (NULL: default
 * rope); def_theta when no rope_theta is given. Needs c->head_dim and c->max_position_embeddings. */
lmx_status lmx_model_config_rope_parse(const parse_ctx *pc, const cJSON *t, const cJSON *fallback,
                                       lmx_model_config *c, double def_theta);
void lmx_model_config_rope_free(lmx_rope_config *r);

/* The quantization block q ("quantization" / "quantization_config") into c->quant, c->quant_mode and
 * c->overrides. */
lmx_status lmx_model_config_quant_parse(const parse_ctx *pc, const cJSON *q, lmx_model_config *c);

/* The mixture-of-experts keys of the text config t (qwen3_moe, mixtral, gpt_oss; other families:
 * nothing). Needs c->n_layers and c->intermediate_size. */
lmx_status lmx_model_config_moe_parse(const parse_ctx *pc, const cJSON *t, lmx_model_config *c);

#endif
