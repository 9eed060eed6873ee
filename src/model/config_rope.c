/* config_rope.c — config.json's rope parameters (default, linear, llama3, longrope, yarn; gemma3's
 * per-layer-type dicts) into lmx_rope_config (see config_parse.h). */
#include "model/config_parse.h"

#include <stdlib.h>
#include <string.h>

static lmx_status parse_float_list(const parse_ctx *pc, const cJSON *arr, const char *key, int want, float **out) {
    if (!cJSON_IsArray(arr))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rope key \"%s\" must be a list of numbers", pc->label, key);
    int n = cJSON_GetArraySize(arr);
    if (n != want)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rope key \"%s\" has %d entries, expected %d (rotary_dim/2)",
                         pc->label, key, n, want);
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    if (!f) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: rope factors", pc->label);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || e->valuedouble <= 0) {
            free(f);
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rope key \"%s\"[%d] must be a positive number",
                             pc->label, key, i);
        }
        f[i++] = (float)e->valuedouble;
    }
    *out = f;
    return LMX_OK;
}

/* Parses one rope parameter set. `rp` is the rope dict (rope_parameters entry or rope_scaling; may be
 * NULL), `top` the text config (for rope_theta / original_max_position_embeddings at top level). */
static lmx_status parse_rope_params(const parse_ctx *pc, const cJSON *rp, const cJSON *top, double def_theta,
                                    const lmx_model_config *c, lmx_rope_config *r) {
    memset(r, 0, sizeof *r);
    r->attention_factor = 1.0;
    r->factor = 1.0;
    double theta = def_theta;
    LMX_TRY(get_num(pc, top, "rope_theta", def_theta, &theta));
    LMX_TRY(get_num(pc, rp, "rope_theta", theta, &theta));
    if (!(theta > 1.0))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rope_theta must be > 1", pc->label);
    r->theta = theta;
    const char *type = get_str(rp, "rope_type");
    if (!type) type = get_str(rp, "type");
    if (!type || !strcmp(type, "default")) {
        r->type = LMX_ROPE_DEFAULT;
        return LMX_OK;
    }
    if (!strcmp(type, "linear")) {
        r->type = LMX_ROPE_LINEAR;
        LMX_TRY(get_num(pc, rp, "factor", 1.0, &r->factor));
        if (!(r->factor > 0))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rope factor must be > 0", pc->label);
        return LMX_OK;
    }
    if (!strcmp(type, "llama3")) {
        r->type = LMX_ROPE_LLAMA3;
        /* factor is required (mlx-lm reads scaling_config["factor"], transformers validates it); the
         * other keys default as in mlx-lm's Llama3RoPE */
        if (is_absent(cJSON_GetObjectItemCaseSensitive(rp, "factor")))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: llama3 rope scaling without \"factor\"", pc->label);
        LMX_TRY(get_num(pc, rp, "factor", 8.0, &r->factor));
        LMX_TRY(get_num(pc, rp, "low_freq_factor", 1.0, &r->low_freq_factor));
        LMX_TRY(get_num(pc, rp, "high_freq_factor", 4.0, &r->high_freq_factor));
        LMX_TRY(get_num(pc, rp, "original_max_position_embeddings", 8192.0, &r->original_max_position));
        if (!(r->factor > 0) || !(r->high_freq_factor > r->low_freq_factor) || !(r->low_freq_factor > 0) ||
            !(r->original_max_position > 0))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                             "%s: llama3 rope needs factor > 0 and high_freq_factor > low_freq_factor > 0",
                             pc->label);
        return LMX_OK;
    }
    if (!strcmp(type, "longrope") || !strcmp(type, "su")) {
        r->type = LMX_ROPE_LONGROPE;
        int half = c->rotary_dim / 2;
        LMX_TRY(parse_float_list(pc, cJSON_GetObjectItemCaseSensitive(rp, "short_factor"), "short_factor", half,
                             &r->short_factor));
        LMX_TRY(parse_float_list(pc, cJSON_GetObjectItemCaseSensitive(rp, "long_factor"), "long_factor", half,
                             &r->long_factor));
        r->n_factors = half;
        /* HF: when original_max_position_embeddings is set (phi3: top level), factor is
         * max_position_embeddings / original; else rope "factor". */
        double orig = -1, factor = 1.0;
        LMX_TRY(get_num(pc, top, "original_max_position_embeddings", -1, &orig));
        LMX_TRY(get_num(pc, rp, "original_max_position_embeddings", orig, &orig));
        if (orig > 0) {
            factor = (double)c->max_position_embeddings / orig;
        } else {
            orig = (double)c->max_position_embeddings;
            LMX_TRY(get_num(pc, rp, "factor", 1.0, &factor));
        }
        r->original_max_position = orig;
        r->factor = factor;
        double af = -1;
        LMX_TRY(get_num(pc, rp, "attention_factor", -1, &af));
        if (af < 0) af = factor <= 1.0 ? 1.0 : sqrt(1.0 + log(factor) / log(orig));
        r->attention_factor = af;
        return LMX_OK;
    }
    if (!strcmp(type, "yarn")) {
        /* transformers 5 _compute_yarn_parameters: with original_max_position_embeddings in the rope
         * dict, factor becomes max_position_embeddings / original */
        r->type = LMX_ROPE_YARN;
        LMX_TRY(get_num(pc, rp, "factor", 1.0, &r->factor));
        double orig = -1;
        LMX_TRY(get_num(pc, rp, "original_max_position_embeddings", -1, &orig));
        if (orig > 0) {
            r->factor = (double)c->max_position_embeddings / orig;
        } else {
            orig = (double)c->max_position_embeddings;
        }
        r->original_max_position = orig;
        if (!(r->factor > 0))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: yarn rope needs factor > 0", pc->label);
        double af = -1, ms = 0, msa = 0;
        LMX_TRY(get_num(pc, rp, "attention_factor", -1, &af));
        LMX_TRY(get_num(pc, rp, "mscale", 0, &ms));
        LMX_TRY(get_num(pc, rp, "mscale_all_dim", 0, &msa));
        LMX_TRY(get_num(pc, rp, "beta_fast", 32, &r->beta_fast));
        LMX_TRY(get_num(pc, rp, "beta_slow", 1, &r->beta_slow));
        if (r->beta_fast == 0) r->beta_fast = 32; /* `or 32` in transformers */
        if (r->beta_slow == 0) r->beta_slow = 1;
        if (!(r->beta_fast > 0) || !(r->beta_slow > 0)) /* log(orig / (beta * 2 pi)) */
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: yarn rope needs beta_fast > 0 and beta_slow > 0",
                             pc->label);
        int trunc = 1;
        LMX_TRY(get_bool(pc, rp, "truncate", 1, &trunc));
        r->truncate = trunc;
        if (af < 0) {
#define YARN_MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
            af = (ms != 0 && msa != 0) ? YARN_MSCALE(r->factor, ms) / YARN_MSCALE(r->factor, msa)
                                       : YARN_MSCALE(r->factor, 1.0);
#undef YARN_MSCALE
        }
        r->attention_factor = af;
        return LMX_OK;
    }
    return lmx_error(LMX_ERR_UNSUPPORTED,
                     "%s: rope type \"%s\" is not supported (supported: default, linear, llama3, longrope, yarn)",
                     pc->label, type);
}

/* parse_rope_params, then the derived attention scaling must be a usable float: e.g. longrope with
 * original_max_position_embeddings 1 divides by log(1), and a huge attention_factor overflows the
 * float the kernels use. Both used to give NaN logits with no error. */
static lmx_status parse_rope(const parse_ctx *pc, const cJSON *rp, const cJSON *top, double def_theta,
                             const lmx_model_config *c, lmx_rope_config *r) {
    LMX_TRY(parse_rope_params(pc, rp, top, def_theta, c, r));
    if (!(r->attention_factor > 0) || !isfinite((float)r->attention_factor))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: rope attention factor %g (from attention_factor / factor / "
                         "original_max_position_embeddings) is not a positive finite number",
                         pc->label, r->attention_factor);
    return LMX_OK;
}

void lmx_model_config_rope_free(lmx_rope_config *r) {
    free(r->short_factor);
    free(r->long_factor);
    r->short_factor = r->long_factor = NULL;
}

/* The rope tables of the text config t: rope_parameters (transformers 5; gemma3: a dict per layer
 * type) else rope_scaling, else `fallback` (NULL: default rope); def_theta when no rope_theta is
 * given. Gemma3's sliding layers use rope_local_base_freq unless their own dict is there. */
lmx_status lmx_model_config_rope_parse(const parse_ctx *pc, const cJSON *t, const cJSON *fallback,
                                       lmx_model_config *c, double def_theta) {
    const bool gemma = c->arch == LMX_ARCH_GEMMA3;
    const cJSON *rp_all = get_obj(t, "rope_parameters");
    const cJSON *rs = get_obj(t, "rope_scaling");
    double prf = 1.0;
    LMX_TRY(get_num(pc, t, "partial_rotary_factor", 1.0, &prf));
    const cJSON *rp_full = rp_all, *rp_slide = NULL;
    if (rp_all && (get_obj(rp_all, "full_attention") || get_obj(rp_all, "sliding_attention"))) {
        rp_full = get_obj(rp_all, "full_attention");
        rp_slide = get_obj(rp_all, "sliding_attention");
    }
    if (!rp_full) rp_full = rs;
    if (!rp_full) rp_full = fallback;
    LMX_TRY(get_num(pc, rp_full, "partial_rotary_factor", prf, &prf));
    if (!(prf > 0) || prf > 1)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: partial_rotary_factor must be in (0, 1]", pc->label);
    c->rotary_dim = (int)((double)c->head_dim * prf);
    c->rotary_dim &= ~1;
    if (c->rotary_dim < 2)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rotary dimension %d is too small", pc->label,
                         c->rotary_dim);
    LMX_TRY(parse_rope(pc, rp_full, t, def_theta, c, &c->rope));
    if (gemma) {
        double local = 10000.0;
        LMX_TRY(get_num(pc, t, "rope_local_base_freq", 10000.0, &local));
        if (rp_slide) {
            LMX_TRY(parse_rope(pc, rp_slide, NULL, local, c, &c->rope_sliding));
        } else {
            memset(&c->rope_sliding, 0, sizeof c->rope_sliding);
            c->rope_sliding.type = LMX_ROPE_DEFAULT;
            c->rope_sliding.theta = local;
            c->rope_sliding.factor = 1.0;
            c->rope_sliding.attention_factor = 1.0;
            if (!(local > 1))
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rope_local_base_freq must be > 1", pc->label);
        }
        c->has_rope_sliding = true;
    }
    return LMX_OK;
}
