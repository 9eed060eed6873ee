/* config_moe.c — config.json's mixture-of-experts keys (qwen3_moe, mixtral, gpt_oss; see
 * config_parse.h). */
#include "model/config_parse.h"

#include <stdlib.h>
#include <string.h>

#include "backend/backend.h" /* LMX_MOE_MAX_TOPK: the routing slots a row may have */

/* qwen3_moe: num_experts experts of moe_intermediate_size, softmax over all, top-k, renormalised iff
 * norm_topk_prob; layer i is sparse iff i is not in mlp_only_layers and (i + 1) % decoder_sparse_step
 * == 0 (else a dense MLP of intermediate_size). mixtral: every layer sparse, num_local_experts experts
 * of intermediate_size, top-k then softmax over the k logits. gpt_oss: as mixtral (num_local_experts,
 * alias num_experts; num_experts_per_tok, alias experts_per_token), with a bias on the router and on
 * every expert projection, and the clamped SwiGLU (its alpha and limit must be the ones the backends
 * implement). Defaults are transformers'. Fields of other MoE designs that these families would
 * silently mis-run are refused by name. */
lmx_status lmx_model_config_moe_parse(const parse_ctx *pc, const cJSON *t, lmx_model_config *c) {
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
    LMX_TRY(get_int(pc, t, n_key, qwen || oss ? 128 : 8, 0, 1 << 16, &v));
    c->n_experts = (int)v;
    LMX_TRY(get_int(pc, t, k_key, qwen ? 8 : oss ? 4 : 2, 1, LMX_MOE_MAX_TOPK, &v));
    c->n_experts_per_tok = (int)v;
    if (oss) {
        double alpha = 0, limit = 0;
        LMX_TRY(get_num(pc, t, "swiglu_alpha", LMX_SWIGLU_OAI_ALPHA, &alpha));
        LMX_TRY(get_num(pc, t, "swiglu_limit", LMX_SWIGLU_OAI_LIMIT, &limit));
        if ((float)alpha != LMX_SWIGLU_OAI_ALPHA || (float)limit != LMX_SWIGLU_OAI_LIMIT)
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "%s: gpt_oss swiglu_alpha %g / swiglu_limit %g (supported: %g / %g, the released "
                             "models')",
                             pc->label, alpha, limit, (double)LMX_SWIGLU_OAI_ALPHA, (double)LMX_SWIGLU_OAI_LIMIT);
        c->moe_bias = true;
    }
    if (qwen) {
        LMX_TRY(get_int(pc, t, "moe_intermediate_size", 768, 1, 1 << 22, &v));
        c->moe_intermediate_size = (int)v;
        int norm = 0;
        LMX_TRY(get_bool(pc, t, "norm_topk_prob", 0, &norm));
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
    if (qwen) LMX_TRY(get_int(pc, t, "decoder_sparse_step", 1, 1, 1 << 20, &step));
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
