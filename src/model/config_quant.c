/* config_quant.c — config.json's MLX quantization block: the global parameters and the per-module
 * entries (see config_parse.h), and which parameters a module has (config.h). */
#include "model/config_parse.h"
#include "formats/mlx_quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* One {"bits", "group_size", "mode"} object, the block itself or a per-module entry. As MLX reads
 * them (nn.quantize passes an entry to `to_quantized(**entry)`, whose defaults are mode "affine"
 * and then `_defaults_for_mode`), an absent "mode" is affine and absent (or null) bits / group_size
 * are that mode's defaults — an entry does not inherit the block's values. `what` names the module
 * ("global" for the block itself). An unknown mode is a format error naming it. */
static lmx_status parse_quant_params(const parse_ctx *pc, const cJSON *obj, const char *what, lmx_quant_params *p) {
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(obj, "mode");
    lmx_quant_mode mode = LMX_QUANT_AFFINE;
    if (!is_absent(mv) && (!cJSON_IsString(mv) || !lmx_quant_mode_parse(mv->valuestring, &mode)))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: quantization mode %s%s%s of %s is unknown (affine, mxfp4, mxfp8, nvfp4)", pc->label,
                         cJSON_IsString(mv) ? "\"" : "", cJSON_IsString(mv) ? mv->valuestring : "(not a string)",
                         cJSON_IsString(mv) ? "\"" : "", what);
    long long bits = 0, gs = 0;
    LMX_TRY(get_int(pc, obj, "bits", lmx_quant_mode_default_bits(mode), 1, 64, &bits));
    LMX_TRY(get_int(pc, obj, "group_size", lmx_quant_mode_default_group(mode), 1, 1 << 20, &gs));
    if (lmx_quant_mode_is_fp(mode)) {
        if (bits != lmx_quant_mode_bits(mode) || gs != lmx_quant_mode_group(mode))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                             "%s: quantization of %s: mode %s needs bits %d and group_size %d, not %lld / %lld",
                             pc->label, what, lmx_quant_mode_name(mode), lmx_quant_mode_bits(mode),
                             lmx_quant_mode_group(mode), bits, gs);
    } else if (!lmx_mlx_quant_bits_ok(bits)) {
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: quantization bits %lld (%s) not supported (2,3,4,5,6,8)", pc->label,
                         bits, what);
    } else if (!lmx_mlx_quant_group_ok(gs)) {
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: quantization group_size %lld (%s) not supported (32,64,128)",
                         pc->label, gs, what);
    }
    p->bits = (int)bits;
    p->group_size = (int)gs;
    p->mode = mode;
    return LMX_OK;
}

lmx_status lmx_model_config_quant_parse(const parse_ctx *pc, const cJSON *q, lmx_model_config *c) {
    const char *method = get_str(q, "quant_method");
    const cJSON *bits = cJSON_GetObjectItemCaseSensitive(q, "bits");
    if (method && !bits && !strcmp(method, "mxfp4"))
        return lmx_error(LMX_ERR_UNSUPPORTED,
                         "%s: quantization_config quant_method \"mxfp4\" is the original gpt-oss checkpoint (experts "
                         "as gate_up_proj_blocks / _scales, gate and up interleaved), which is not loaded directly: "
                         "use an MLX conversion of it (mlx_lm.convert; e.g. mlx-community/gpt-oss-20b-MXFP4-Q8)",
                         pc->label);
    if (method && !bits)
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: quantization method \"%s\" is not supported (only MLX affine)",
                         pc->label, method);
    LMX_TRY(parse_quant_params(pc, q, "global", &c->quant));
    snprintf(c->quant_mode, sizeof c->quant_mode, "%s", lmx_quant_mode_name(c->quant.mode));
    c->quantized = true;
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, q) {
        if (cJSON_IsObject(e) || cJSON_IsBool(e)) n++;
    }
    if (n == 0) return LMX_OK;
    c->overrides = calloc((size_t)n, sizeof *c->overrides);
    if (!c->overrides) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: quantization overrides", pc->label);
    cJSON_ArrayForEach(e, q) {
        if (!cJSON_IsObject(e) && !cJSON_IsBool(e)) continue;
        lmx_quant_override *o = &c->overrides[c->n_overrides];
        o->module = strdup(e->string ? e->string : "");
        if (!o->module) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: quantization overrides", pc->label);
        c->n_overrides++;
        if (cJSON_IsBool(e)) {
            o->quantized = cJSON_IsTrue(e);
            o->p = c->quant;
        } else {
            o->quantized = true;
            LMX_TRY(parse_quant_params(pc, e, o->module, &o->p));
        }
    }
    return LMX_OK;
}

int lmx_model_config_quant_for(const lmx_model_config *c, const char *module, lmx_quant_params *p) {
    for (int i = 0; i < c->n_overrides; i++) {
        if (!strcmp(c->overrides[i].module, module)) {
            if (!c->overrides[i].quantized) return 0;
            *p = c->overrides[i].p;
            return 1;
        }
    }
    if (!c->quantized) return -1;
    *p = c->quant;
    return 1;
}
