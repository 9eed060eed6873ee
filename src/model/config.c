/* config.c — config.json parsing for the supported families (see config.h). */
#include "model/config.h"
#include "backend/backend.h"
#include "model/eos.h"
#include "model/facts.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h" /* LMX_MOE_MAX_TOPK: the routing slots a row may have */
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"

#define CONFIG_MAX_BYTES (64u << 20)

const char *lmx_arch_name(lmx_arch a) {
    switch (a) {
    case LMX_ARCH_LLAMA: return "llama";
    case LMX_ARCH_QWEN2: return "qwen2";
    case LMX_ARCH_QWEN3: return "qwen3";
    case LMX_ARCH_GEMMA3: return "gemma3";
    case LMX_ARCH_PHI3: return "phi3";
    }
    return "?";
}

/* ---- small typed getters: absent or null → default; wrong type → error ---- */

typedef struct parse_ctx {
    const char *label;
} parse_ctx;

static bool is_absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

static lmx_status get_num(const parse_ctx *pc, const cJSON *obj, const char *key, double def, double *out) {
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
static lmx_status get_int(const parse_ctx *pc, const cJSON *obj, const char *key, long long def, long long lo,
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

static lmx_status get_bool(const parse_ctx *pc, const cJSON *obj, const char *key, int def, int *out) {
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

static const char *get_str(const cJSON *obj, const char *key) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* First object among several names, in order (skips null/absent). */
static const cJSON *get_obj(const cJSON *obj, const char *key) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsObject(v) ? v : NULL;
}

#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        lmx_status st_ = (x);                                                                                  \
        if (st_ != LMX_OK) return st_;                                                                         \
    } while (0)

/* ---- rope ---- */

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
    TRY(get_num(pc, top, "rope_theta", def_theta, &theta));
    TRY(get_num(pc, rp, "rope_theta", theta, &theta));
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
        TRY(get_num(pc, rp, "factor", 1.0, &r->factor));
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
        TRY(get_num(pc, rp, "factor", 8.0, &r->factor));
        TRY(get_num(pc, rp, "low_freq_factor", 1.0, &r->low_freq_factor));
        TRY(get_num(pc, rp, "high_freq_factor", 4.0, &r->high_freq_factor));
        TRY(get_num(pc, rp, "original_max_position_embeddings", 8192.0, &r->original_max_position));
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
        TRY(parse_float_list(pc, cJSON_GetObjectItemCaseSensitive(rp, "short_factor"), "short_factor", half,
                             &r->short_factor));
        TRY(parse_float_list(pc, cJSON_GetObjectItemCaseSensitive(rp, "long_factor"), "long_factor", half,
                             &r->long_factor));
        r->n_factors = half;
        /* HF: when original_max_position_embeddings is set (phi3: top level), factor is
         * max_position_embeddings / original; else rope "factor". */
        double orig = -1, factor = 1.0;
        TRY(get_num(pc, top, "original_max_position_embeddings", -1, &orig));
        TRY(get_num(pc, rp, "original_max_position_embeddings", orig, &orig));
        if (orig > 0) {
            factor = (double)c->max_position_embeddings / orig;
        } else {
            orig = (double)c->max_position_embeddings;
            TRY(get_num(pc, rp, "factor", 1.0, &factor));
        }
        r->original_max_position = orig;
        r->factor = factor;
        double af = -1;
        TRY(get_num(pc, rp, "attention_factor", -1, &af));
        if (af < 0) af = factor <= 1.0 ? 1.0 : sqrt(1.0 + log(factor) / log(orig));
        r->attention_factor = af;
        return LMX_OK;
    }
    if (!strcmp(type, "yarn")) {
        /* transformers 5 _compute_yarn_parameters: with original_max_position_embeddings in the rope
         * dict, factor becomes max_position_embeddings / original */
        r->type = LMX_ROPE_YARN;
        TRY(get_num(pc, rp, "factor", 1.0, &r->factor));
        double orig = -1;
        TRY(get_num(pc, rp, "original_max_position_embeddings", -1, &orig));
        if (orig > 0) {
            r->factor = (double)c->max_position_embeddings / orig;
        } else {
            orig = (double)c->max_position_embeddings;
        }
        r->original_max_position = orig;
        if (!(r->factor > 0))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: yarn rope needs factor > 0", pc->label);
        double af = -1, ms = 0, msa = 0;
        TRY(get_num(pc, rp, "attention_factor", -1, &af));
        TRY(get_num(pc, rp, "mscale", 0, &ms));
        TRY(get_num(pc, rp, "mscale_all_dim", 0, &msa));
        TRY(get_num(pc, rp, "beta_fast", 32, &r->beta_fast));
        TRY(get_num(pc, rp, "beta_slow", 1, &r->beta_slow));
        if (r->beta_fast == 0) r->beta_fast = 32; /* `or 32` in transformers */
        if (r->beta_slow == 0) r->beta_slow = 1;
        if (!(r->beta_fast > 0) || !(r->beta_slow > 0)) /* log(orig / (beta * 2 pi)) */
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: yarn rope needs beta_fast > 0 and beta_slow > 0",
                             pc->label);
        int trunc = 1;
        TRY(get_bool(pc, rp, "truncate", 1, &trunc));
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
    TRY(parse_rope_params(pc, rp, top, def_theta, c, r));
    if (!(r->attention_factor > 0) || !isfinite((float)r->attention_factor))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: rope attention factor %g (from attention_factor / factor / "
                         "original_max_position_embeddings) is not a positive finite number",
                         pc->label, r->attention_factor);
    return LMX_OK;
}

static void rope_free(lmx_rope_config *r) {
    free(r->short_factor);
    free(r->long_factor);
    r->short_factor = r->long_factor = NULL;
}

/* ---- quantization block ---- */

static bool valid_bits(long long b) { return b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8; }
static bool valid_group(long long g) { return g == 32 || g == 64 || g == 128; }

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
    TRY(get_int(pc, obj, "bits", lmx_quant_mode_default_bits(mode), 1, 64, &bits));
    TRY(get_int(pc, obj, "group_size", lmx_quant_mode_default_group(mode), 1, 1 << 20, &gs));
    if (lmx_quant_mode_is_fp(mode)) {
        if (bits != lmx_quant_mode_bits(mode) || gs != lmx_quant_mode_group(mode))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                             "%s: quantization of %s: mode %s needs bits %d and group_size %d, not %lld / %lld",
                             pc->label, what, lmx_quant_mode_name(mode), lmx_quant_mode_bits(mode),
                             lmx_quant_mode_group(mode), bits, gs);
    } else if (!valid_bits(bits)) {
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: quantization bits %lld (%s) not supported (2,3,4,5,6,8)", pc->label,
                         bits, what);
    } else if (!valid_group(gs)) {
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: quantization group_size %lld (%s) not supported (32,64,128)",
                         pc->label, gs, what);
    }
    p->bits = (int)bits;
    p->group_size = (int)gs;
    p->mode = mode;
    return LMX_OK;
}

static lmx_status parse_quant(const parse_ctx *pc, const cJSON *q, lmx_model_config *c) {
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
    TRY(parse_quant_params(pc, q, "global", &c->quant));
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
            TRY(parse_quant_params(pc, e, o->module, &o->p));
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

/* ---- eos / bos ---- */

static lmx_status parse_ids(const parse_ctx *pc, const cJSON *v, const char *key, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (is_absent(v)) return LMX_OK;
    int cnt = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    if (cnt == 0) return LMX_OK;
    int32_t *a = malloc((size_t)cnt * sizeof *a);
    if (!a) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: %s", pc->label, key);
    int k = 0;
    const cJSON *e;
    if (cJSON_IsArray(v)) {
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX ||
                e->valuedouble != floor(e->valuedouble)) {
                free(a);
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"%s\" must hold token ids", pc->label, key);
            }
            a[k++] = (int32_t)e->valuedouble;
        }
    } else if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= INT32_MAX &&
               v->valuedouble == floor(v->valuedouble)) {
        a[k++] = (int32_t)v->valuedouble;
    } else {
        free(a);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"%s\" must be a token id or a list of ids", pc->label,
                         key);
    }
    *ids = a;
    *n = k;
    return LMX_OK;
}

/* ---- mixture of experts ---- */

/* qwen3_moe: num_experts experts of moe_intermediate_size, softmax over all, top-k, renormalised iff
 * norm_topk_prob; layer i is sparse iff i is not in mlp_only_layers and (i + 1) % decoder_sparse_step
 * == 0 (else a dense MLP of intermediate_size). mixtral: every layer sparse, num_local_experts experts
 * of intermediate_size, top-k then softmax over the k logits. gpt_oss: as mixtral (num_local_experts,
 * alias num_experts; num_experts_per_tok, alias experts_per_token), with a bias on the router and on
 * every expert projection, and the clamped SwiGLU (its alpha and limit must be the ones the backends
 * implement). Defaults are transformers'. Fields of other MoE designs that these families would
 * silently mis-run are refused by name. */
static lmx_status parse_moe(const parse_ctx *pc, const cJSON *t, lmx_model_config *c) {
    const bool qwen = !strcmp(c->model_type, "qwen3_moe"), mixtral = !strcmp(c->model_type, "mixtral");
    const bool oss = !strcmp(c->model_type, "gpt_oss");
    if (!qwen && !mixtral && !oss) return LMX_OK;
    static const char *const refused[] = {"shared_expert_intermediate_size", "n_shared_experts",
                                          "num_shared_experts", "moe_layer_freq", "first_k_dense_replace",
                                          "topk_group", "n_group"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, refused[i]);
        if (!is_absent(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
            return lmx_error(LMX_ERR_UNSUPPORTED, "%s: \"%s\" (shared or grouped experts) is not supported for %s",
                             pc->label, refused[i], c->model_type);
    }
    long long v = 0;
    /* transformers 5 writes qwen3_moe's expert count as num_local_experts (its attribute_map alias);
     * mlx-community's configs keep num_experts: either names it. */
    const char *n_key = qwen && is_absent(cJSON_GetObjectItemCaseSensitive(t, "num_experts")) &&
                                !is_absent(cJSON_GetObjectItemCaseSensitive(t, "num_local_experts"))
                            ? "num_local_experts"
                            : (qwen ? "num_experts" : "num_local_experts");
    /* gpt_oss: transformers' attribute_map alias num_experts, and OpenAI's experts_per_token */
    if (oss && is_absent(cJSON_GetObjectItemCaseSensitive(t, n_key)) &&
        !is_absent(cJSON_GetObjectItemCaseSensitive(t, "num_experts")))
        n_key = "num_experts";
    const char *k_key = oss && is_absent(cJSON_GetObjectItemCaseSensitive(t, "num_experts_per_tok")) &&
                                !is_absent(cJSON_GetObjectItemCaseSensitive(t, "experts_per_token"))
                            ? "experts_per_token"
                            : "num_experts_per_tok";
    TRY(get_int(pc, t, n_key, qwen || oss ? 128 : 8, 0, 1 << 16, &v));
    c->n_experts = (int)v;
    TRY(get_int(pc, t, k_key, qwen ? 8 : oss ? 4 : 2, 1, LMX_MOE_MAX_TOPK, &v));
    c->n_experts_per_tok = (int)v;
    if (oss) {
        double alpha = 0, limit = 0;
        TRY(get_num(pc, t, "swiglu_alpha", LMX_SWIGLU_OAI_ALPHA, &alpha));
        TRY(get_num(pc, t, "swiglu_limit", LMX_SWIGLU_OAI_LIMIT, &limit));
        if ((float)alpha != LMX_SWIGLU_OAI_ALPHA || (float)limit != LMX_SWIGLU_OAI_LIMIT)
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "%s: gpt_oss swiglu_alpha %g / swiglu_limit %g (supported: %g / %g, the released "
                             "models')",
                             pc->label, alpha, limit, (double)LMX_SWIGLU_OAI_ALPHA, (double)LMX_SWIGLU_OAI_LIMIT);
        c->moe_bias = true;
    }
    if (qwen) {
        TRY(get_int(pc, t, "moe_intermediate_size", 768, 1, 1 << 22, &v));
        c->moe_intermediate_size = (int)v;
        int norm = 0;
        TRY(get_bool(pc, t, "norm_topk_prob", 0, &norm));
        c->moe_norm_topk = norm;
    } else {
        c->moe_intermediate_size = c->intermediate_size;
        c->moe_norm_topk = true;
    }
    if (c->n_experts == 0) {
        if (!qwen)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"%s\" must be >= 1", pc->label, n_key);
        return LMX_OK; /* qwen3_moe without experts: dense */
    }
    if (c->n_experts_per_tok > c->n_experts)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"%s\" %d exceeds the %d experts", pc->label, k_key,
                         c->n_experts_per_tok, c->n_experts);
    c->layer_moe = calloc((size_t)c->n_layers, sizeof *c->layer_moe);
    if (!c->layer_moe) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: layer table", pc->label);
    long long step = 1;
    if (qwen) TRY(get_int(pc, t, "decoder_sparse_step", 1, 1, 1 << 20, &step));
    for (int i = 0; i < c->n_layers; i++) c->layer_moe[i] = (i + 1) % step == 0;
    const cJSON *dense = qwen ? cJSON_GetObjectItemCaseSensitive(t, "mlp_only_layers") : NULL;
    if (!is_absent(dense)) {
        if (!cJSON_IsArray(dense))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"mlp_only_layers\" must be a list of layer indices",
                             pc->label);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, dense) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
                e->valuedouble >= c->n_layers)
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                                 "%s: mlp_only_layers[%d] must be a layer index in [0, %d)", pc->label, i,
                                 c->n_layers);
            c->layer_moe[(int)e->valuedouble] = false;
            i++;
        }
    }
    return LMX_OK;
}

/* The rope tables of the text config t: rope_parameters (transformers 5; gemma3: a dict per layer
 * type) else rope_scaling, else `fallback` (NULL: default rope); def_theta when no rope_theta is
 * given. Gemma3's sliding layers use rope_local_base_freq unless their own dict is there. */
static lmx_status parse_rope_section(const parse_ctx *pc, const cJSON *t, const cJSON *fallback,
                                     lmx_model_config *c, double def_theta) {
    const bool gemma = c->arch == LMX_ARCH_GEMMA3;
    const cJSON *rp_all = get_obj(t, "rope_parameters");
    const cJSON *rs = get_obj(t, "rope_scaling");
    double prf = 1.0;
    TRY(get_num(pc, t, "partial_rotary_factor", 1.0, &prf));
    const cJSON *rp_full = rp_all, *rp_slide = NULL;
    if (rp_all && (get_obj(rp_all, "full_attention") || get_obj(rp_all, "sliding_attention"))) {
        rp_full = get_obj(rp_all, "full_attention");
        rp_slide = get_obj(rp_all, "sliding_attention");
    }
    if (!rp_full) rp_full = rs;
    if (!rp_full) rp_full = fallback;
    TRY(get_num(pc, rp_full, "partial_rotary_factor", prf, &prf));
    if (!(prf > 0) || prf > 1)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: partial_rotary_factor must be in (0, 1]", pc->label);
    c->rotary_dim = (int)((double)c->head_dim * prf);
    c->rotary_dim &= ~1;
    if (c->rotary_dim < 2)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rotary dimension %d is too small", pc->label,
                         c->rotary_dim);
    TRY(parse_rope(pc, rp_full, t, def_theta, c, &c->rope));
    if (gemma) {
        double local = 10000.0;
        TRY(get_num(pc, t, "rope_local_base_freq", 10000.0, &local));
        if (rp_slide) {
            TRY(parse_rope(pc, rp_slide, NULL, local, c, &c->rope_sliding));
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

/* ---- the main parser ---- */

static lmx_status parse_model(const parse_ctx *pc, const cJSON *root, const cJSON *gen, lmx_model_config *c) {
    if (!cJSON_IsObject(root))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: the top level must be a JSON object", pc->label);
    const char *mt = get_str(root, "model_type");
    if (!mt) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"model_type\" is missing", pc->label);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    const cJSON *t = root; /* the text config */
    if (!strcmp(mt, "llama") || !strcmp(mt, "mistral") || !strcmp(mt, "mixtral") || !strcmp(mt, "gpt_oss"))
        c->arch = LMX_ARCH_LLAMA;
    else if (!strcmp(mt, "qwen2")) c->arch = LMX_ARCH_QWEN2;
    else if (!strcmp(mt, "qwen3") || !strcmp(mt, "qwen3_moe")) c->arch = LMX_ARCH_QWEN3;
    else if (!strcmp(mt, "gemma3_text")) c->arch = LMX_ARCH_GEMMA3;
    else if (!strcmp(mt, "phi3")) c->arch = LMX_ARCH_PHI3;
    else if (!strcmp(mt, "gemma3")) {
        c->arch = LMX_ARCH_GEMMA3;
        t = get_obj(root, "text_config");
        if (!t)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: model_type gemma3 needs a \"text_config\" object",
                             pc->label);
        c->text_config = true;
    } else {
        return lmx_error(LMX_ERR_UNSUPPORTED,
                         "%s: model_type \"%s\" is not supported (supported: llama, mistral, mixtral, qwen2, qwen3, "
                         "qwen3_moe, gemma3_text, gemma3, phi3, gpt_oss)",
                         pc->label, mt);
    }
    const bool gemma = c->arch == LMX_ARCH_GEMMA3;
    const bool mistral = !strcmp(mt, "mistral") || !strcmp(mt, "mixtral"); /* mixtral: mistral attention */
    const bool oss = !strcmp(mt, "gpt_oss");

    long long v = 0;
    /* gemma3 has HF defaults for everything; the others require the shape keys. */
    TRY(get_int(pc, t, "hidden_size", gemma ? 2304 : -1, 1, 1 << 20, &v));
    c->hidden_size = (int)v;
    TRY(get_int(pc, t, "num_hidden_layers", gemma ? 26 : -1, 1, 4096, &v));
    c->n_layers = (int)v;
    TRY(get_int(pc, t, "intermediate_size", gemma ? 9216 : -1, 1, 1 << 22, &v));
    c->intermediate_size = (int)v;
    TRY(get_int(pc, t, "num_attention_heads", gemma ? 8 : -1, 1, 4096, &v));
    c->n_heads = (int)v;
    TRY(get_int(pc, t, "num_key_value_heads", gemma ? 4 : c->n_heads, 1, 4096, &v));
    c->n_kv_heads = (int)v;
    TRY(get_int(pc, t, "vocab_size", gemma ? 262208 : -1, 1, 1 << 26, &v));
    c->vocab_size = (int)v;
    if (c->n_heads % c->n_kv_heads)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", pc->label,
                         c->n_heads, c->n_kv_heads);
    long long def_hd = gemma ? 256 : (c->hidden_size % c->n_heads == 0 ? c->hidden_size / c->n_heads : -1);
    TRY(get_int(pc, t, "head_dim", def_hd, 1, 1 << 16, &v));
    c->head_dim = (int)v;
    if (c->arch == LMX_ARCH_PHI3 && c->hidden_size % c->n_heads == 0) c->head_dim = c->hidden_size / c->n_heads;

    double eps_def = c->arch == LMX_ARCH_PHI3 || oss ? 1e-5 : 1e-6;
    TRY(get_num(pc, t, "rms_norm_eps", eps_def, &c->rms_norm_eps));
    if (!(c->rms_norm_eps > 0) || c->rms_norm_eps > 1)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rms_norm_eps must be in (0, 1]", pc->label);
    long long mpe_def = 32768;
    switch (c->arch) {
    case LMX_ARCH_LLAMA: mpe_def = mistral || oss ? 131072 : 2048; break;
    case LMX_ARCH_PHI3: mpe_def = 4096; break;
    case LMX_ARCH_GEMMA3: mpe_def = 131072; break;
    default: break;
    }
    TRY(get_int(pc, t, "max_position_embeddings", mpe_def, 1, (long long)1 << 40, &v));
    c->max_position_embeddings = v;

    int b = -1;
    TRY(get_bool(pc, t, "tie_word_embeddings", -1, &b));
    if (b < 0 && t != root) TRY(get_bool(pc, root, "tie_word_embeddings", -1, &b));
    c->tie_word_embeddings = b;
    TRY(get_bool(pc, t, "attention_bias", oss, &b)); /* transformers' GptOssConfig: true */
    c->attention_bias = b;
    TRY(get_bool(pc, t, "mlp_bias", 0, &b));
    c->mlp_bias = c->arch == LMX_ARCH_LLAMA && b;
    c->qkv_bias = c->arch == LMX_ARCH_QWEN2;
    if (c->arch == LMX_ARCH_QWEN2 || c->arch == LMX_ARCH_PHI3) c->attention_bias = false;
    c->qk_norm = c->arch == LMX_ARCH_QWEN3 || gemma;
    c->norm_plus_one = gemma;
    c->sandwich_norms = gemma;
    c->fused_qkv = c->fused_gate_up = c->arch == LMX_ARCH_PHI3;
    c->embed_scale_sqrt_hidden = gemma;
    c->attn_sinks = oss;

    const char *act = get_str(t, "hidden_activation");
    if (!act) act = get_str(t, "hidden_act");
    if (!act) act = gemma ? "gelu_pytorch_tanh" : "silu";
    if (!strcmp(act, "silu") || !strcmp(act, "swish")) c->act = LMX_ACT_SILU;
    else if (!strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_tanh") ||
             !strcmp(act, "gelu_fast"))
        c->act = LMX_ACT_GELU_TANH;
    else
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: activation \"%s\" is not supported (silu, gelu_pytorch_tanh)",
                         pc->label, act);
    if (oss) c->act = LMX_ACT_SWIGLU_OAI; /* its experts' own activation, whatever hidden_act says */

    double sc;
    c->attn_scale = (float)(1.0 / sqrt((double)c->head_dim));
    if (gemma) {
        TRY(get_num(pc, t, "query_pre_attn_scalar", 256.0, &sc));
        if (!(sc > 0)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: query_pre_attn_scalar must be > 0", pc->label);
        c->attn_scale = (float)(1.0 / sqrt(sc));
    }
    TRY(get_num(pc, t, "attn_logit_softcapping", 0.0, &sc));
    if (sc < 0) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: attn_logit_softcapping must be >= 0", pc->label);
    c->attn_logit_softcap = (float)sc;
    TRY(get_num(pc, t, "final_logit_softcapping", 0.0, &sc));
    if (sc < 0) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: final_logit_softcapping must be >= 0", pc->label);
    c->final_logit_softcap = (float)sc;

    /* rope */
    if (oss && !get_obj(t, "rope_parameters") && !get_obj(t, "rope_scaling")) {
        /* gpt_oss without a rope dict: transformers' GptOssConfig default (YaRN, factor 32 over 4096) */
        cJSON *def = cJSON_Parse("{\"rope_type\": \"yarn\", \"factor\": 32.0, \"beta_fast\": 32.0, "
                                 "\"beta_slow\": 1.0, \"truncate\": false, \"original_max_position_embeddings\": 4096}");
        if (!def) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: rope defaults", pc->label);
        lmx_status st = parse_rope_section(pc, t, def, c, 150000.0);
        cJSON_Delete(def);
        TRY(st);
    } else {
        TRY(parse_rope_section(pc, t, NULL, c, gemma ? 1e6 : oss ? 150000.0 : 10000.0));
    }

    /* sliding window and which layers use it */
    c->layer_sliding = calloc((size_t)c->n_layers, sizeof *c->layer_sliding);
    if (!c->layer_sliding) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: layer table", pc->label);
    TRY(get_int(pc, t, "sliding_window", gemma ? 4096 : oss ? 128 : 0, 0, (long long)1 << 40, &v));
    long long window = v;
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(t, "layer_types");
    bool any_sliding = false;
    if (!is_absent(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->n_layers)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"layer_types\" must be a list of %d strings",
                             pc->label, c->n_layers);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, lt) {
            if (!cJSON_IsString(e))
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: layer_types[%d] must be a string", pc->label, i);
            if (!strcmp(e->valuestring, "sliding_attention")) c->layer_sliding[i] = any_sliding = true;
            else if (strcmp(e->valuestring, "full_attention"))
                return lmx_error(LMX_ERR_UNSUPPORTED, "%s: layer_types[%d] \"%s\" is not supported", pc->label, i,
                                 e->valuestring);
            i++;
        }
    } else if (gemma) {
        long long pattern;
        TRY(get_int(pc, t, "sliding_window_pattern", 6, 1, 1 << 20, &pattern));
        for (int i = 0; i < c->n_layers; i++)
            if ((i + 1) % pattern != 0) c->layer_sliding[i] = any_sliding = true;
    } else if (oss) { /* transformers' GptOssConfig default: sliding, full, sliding, … */
        for (int i = 0; i < c->n_layers; i++)
            if ((i + 1) % 2) c->layer_sliding[i] = any_sliding = true;
    } else if (window > 0 && (mistral || c->arch == LMX_ARCH_PHI3)) {
        for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = any_sliding = true;
    } else if (window > 0 && (c->arch == LMX_ARCH_QWEN2 || c->arch == LMX_ARCH_QWEN3)) {
        int use;
        long long mwl;
        TRY(get_bool(pc, t, "use_sliding_window", 0, &use));
        TRY(get_int(pc, t, "max_window_layers", 28, 0, 1 << 20, &mwl));
        if (use)
            for (int i = 0; i < c->n_layers; i++)
                if (i >= mwl) c->layer_sliding[i] = any_sliding = true;
    }
    if (any_sliding && window <= 0)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: sliding layers need a positive \"sliding_window\"",
                         pc->label);
    c->sliding_window = any_sliding ? (window > INT32_MAX ? INT32_MAX : (int)window) : 0;

    TRY(parse_moe(pc, t, c));

    int bidir;
    TRY(get_bool(pc, t, "use_bidirectional_attention", 0, &bidir));
    if (bidir)
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: use_bidirectional_attention (embedding models) is not supported",
                         pc->label);

    /* quantization: "quantization" (MLX) else "quantization_config"; the wrapper may nest it */
    const cJSON *q = get_obj(root, "quantization");
    if (!q) q = get_obj(root, "quantization_config");
    if (!q && t != root) q = get_obj(t, "quantization");
    if (!q && t != root) q = get_obj(t, "quantization_config");
    if (q) TRY(parse_quant(pc, q, c));

    /* eos: the ids must be token ids (checked here, as written); which file wins, truthiness and
     * duplicates follow mlx-lm's rules (model/eos.h), so the set is read once, with the config */
    const cJSON *ge = gen ? cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id") : NULL;
    bool gen_truthy = !is_absent(ge) && !(cJSON_IsArray(ge) && cJSON_GetArraySize(ge) == 0);
    int32_t *checked = NULL;
    int n_checked = 0;
    if (gen_truthy) {
        TRY(parse_ids(pc, ge, "generation_config eos_token_id", &checked, &n_checked));
    } else {
        const cJSON *ce = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
        if (is_absent(ce) && t != root) ce = cJSON_GetObjectItemCaseSensitive(t, "eos_token_id");
        TRY(parse_ids(pc, ce, "eos_token_id", &checked, &n_checked));
    }
    free(checked);
    if (!(c->eos_ids = malloc(LMX_MAX_EOS * sizeof *c->eos_ids)))
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: eos", pc->label);
    c->eos_named = lmx_eos_ids_from_json(gen, root, c->eos_ids, LMX_MAX_EOS, &c->n_eos);
    c->bos_id = -1;
    const cJSON *bo = gen ? cJSON_GetObjectItemCaseSensitive(gen, "bos_token_id") : NULL;
    if (is_absent(bo)) bo = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    if (is_absent(bo) && t != root) bo = cJSON_GetObjectItemCaseSensitive(t, "bos_token_id");
    if (cJSON_IsNumber(bo) && bo->valuedouble >= 0 && bo->valuedouble <= INT32_MAX) c->bos_id = (int32_t)bo->valuedouble;
    return LMX_OK;
}

lmx_status lmx_model_config_parse(const char *json, size_t len, const char *gen, size_t gen_len, const char *label,
                                  lmx_model_config **out) {
    *out = NULL;
    if (!label) label = "config.json";
    parse_ctx pc = {label};
    const char *end = NULL;
    cJSON *root = lmx_json_parse(json, len, &end);
    if (!root) {
        char why[160];
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s", label, lmx_json_error(json, len, end, why, sizeof why));
    }
    while (end && end < json + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (end && end < json + len && *end) {
        cJSON_Delete(root);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: trailing bytes after the JSON object", label);
    }
    cJSON *groot = NULL;
    if (gen) {
        groot = lmx_json_parse(gen, gen_len, NULL);
        if (!groot || !cJSON_IsObject(groot)) {
            /* mlx-lm tolerates a broken generation_config.json poorly; we warn and ignore it */
            LMX_LOG_W("%s: generation_config.json is not a JSON object; ignored", label);
            cJSON_Delete(groot);
            groot = NULL;
        }
    }
    lmx_model_config *c = calloc(1, sizeof *c);
    if (!c) {
        cJSON_Delete(root);
        cJSON_Delete(groot);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: config", label);
    }
    lmx_status st = parse_model(&pc, root, groot, c);
    cJSON_Delete(root);
    cJSON_Delete(groot);
    if (st != LMX_OK) {
        lmx_model_config_free(c);
        return st;
    }
    *out = c;
    return LMX_OK;
}

lmx_status lmx_model_config_load(const char *dir, lmx_model_config **out) {
    *out = NULL;
    char *path = lmx_fs_join(dir, "config.json");
    char *gpath = lmx_fs_join(dir, "generation_config.json");
    if (!path || !gpath) {
        free(path);
        free(gpath);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "config path");
    }
    lmx_status st;
    char *text = NULL, *gtext = NULL;
    size_t len = 0, glen = 0;
    if (!lmx_fs_exists(path)) { /* one that is not a regular file: the read says what it is */
        st = lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: no such file", path);
        goto done;
    }
    st = lmx_fs_read_file(path, CONFIG_MAX_BYTES, &text, &len);
    if (st != LMX_OK) goto done;
    if (lmx_fs_exists(gpath) && lmx_fs_read_file(gpath, CONFIG_MAX_BYTES, &gtext, &glen) != LMX_OK) {
        LMX_LOG_W("%s: unreadable (%s); ignored", gpath, lmx_last_error_detail());
        gtext = NULL;
    }
    st = lmx_model_config_parse(text, len, gtext, glen, path, out);
done:
    free(text);
    free(gtext);
    free(path);
    free(gpath);
    return st;
}

void lmx_model_config_free(lmx_model_config *c) {
    if (!c) return;
    rope_free(&c->rope);
    rope_free(&c->rope_sliding);
    free(c->layer_sliding);
    free(c->layer_moe);
    for (int i = 0; i < c->n_overrides; i++) free(c->overrides[i].module);
    free(c->overrides);
    free(c->eos_ids);
    free(c);
}
