/* lm_bind_moe.c — binding a sparse MLP block (qwen3_moe, mixtral, gpt_oss) to backend weights.
 *
 * Two on-disk layouts, detected per layer:
 *   - mlx-lm's stacked experts: <block>.<stack>.{gate,up,down}_proj.weight [E, out, in] (float, or
 *     MLX-quantized per expert row: weight [E, out, in*bits/32] U32, scales/biases [E, out, in/group];
 *     in an fp mode (the module's quantization entry, e.g. mxfp4 experts) U8 scales and no biases),
 *     gpt_oss also with the projections' own bias <module>.bias [E, out];
 *   - the Hub's per-expert tensors: qwen3_moe mlp.experts.E.{gate,up,down}_proj.weight, mixtral
 *     block_sparse_moe.experts.E.{w1,w3,w2}.weight (gate, up, down).
 * Names per family (moe_names): qwen3_moe <block> "mlp", router mlp.gate, stack switch_mlp; mixtral
 * block_sparse_moe.gate / block_sparse_moe.switch_mlp; gpt_oss mlp.router (with a bias) and
 * mlp.experts (mlx-lm's sanitize splits the Hub's fused, interleaved gate_up_proj into gate_proj and
 * up_proj; that fused Hub layout itself is refused by name). The router is [E, hidden].
 * Each projection of all experts is uploaded as one expert stack (weight_upload_experts) from E matrix
 * descriptions: for a stacked tensor the row ranges [e*out, (e+1)*out) of the [E*out, in] matrix
 * (lmx_weight_desc row0/rows; a bias [E, out] is indexed by the same stored rows, so the CPU
 * references the mmapped bytes in place), for the Hub layout the per-expert tensors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/mlx_mx.h"
#include "model/lm_bind.h"
#include "util/error.h"

/* A stacked fp-mode module (mxfp4 / mxfp8 / nvfp4 as the module's quantization entry says): weight
 * U32 [E, out, in*bits/32], scales U8 [E, out, in/group], no biases. */
static lmx_status stacked_fp_desc(const lmx_tensor_view *w, const lmx_tensor_view *s, const lmx_tensor_view *qb,
                                  lmx_quant_params qp, int64_t E, int64_t out_rows, int64_t in_cols,
                                  lmx_weight_desc *d, lmx_weight_desc *out) {
    int64_t cols = 0;
    lmx_status st = lmx_mx_check_views(w, s, qb, qp.mode, &cols);
    if (st != LMX_OK) return st;
    if (w->ndim != 3 || w->shape[0] != E || w->shape[1] != out_rows || cols != in_cols) {
        char expect[160];
        snprintf(expect, sizeof expect, "[%lld, %lld, %lld] (%s experts)", (long long)E, (long long)out_rows,
                 (long long)in_cols, lmx_quant_mode_name(qp.mode));
        return lmx_bind_bad_shape(w, expect);
    }
    d->kind = LMX_WEIGHT_QUANT;
    d->mode = qp.mode;
    d->dtype = s->dtype;
    d->data = w->data;
    d->scales = s->data;
    d->bits = qp.bits;
    d->group_size = qp.group_size;
    *out = *d;
    return LMX_OK;
}

/* The projections' own bias <module>.bias [E, out] (gpt_oss) into d. */
static lmx_status stacked_bias(binder *b, const char *module, int64_t E, int64_t out_rows, lmx_weight_desc *d) {
    char name[640], expect[96];
    snprintf(name, sizeof name, "%s.bias", module);
    snprintf(expect, sizeof expect, "[%lld, %lld] float", (long long)E, (long long)out_rows);
    const lmx_tensor_view *t = lmx_bind_find(b, name);
    if (!t) return lmx_bind_missing(b, name, expect);
    if (!lmx_dtype_is_float(t->dtype) || t->ndim != 2 || t->shape[0] != E || t->shape[1] != out_rows)
        return lmx_bind_bad_shape(t, expect);
    d->bias = t->data;
    d->bias_dtype = t->dtype;
    return LMX_OK;
}

/* stacked_desc's weight part */
static lmx_status stacked_weight_desc(binder *b, const char *module, int64_t E, int64_t out_rows, int64_t in_cols,
                                      lmx_weight_desc *out) {
    char name[640], expect[192]; /* module (< 512) + suffix */
    snprintf(name, sizeof name, "%s.scales", module);
    const lmx_tensor_view *s = lmx_bind_find(b, name);
    snprintf(name, sizeof name, "%s.biases", module);
    const lmx_tensor_view *qb = s ? lmx_bind_find(b, name) : NULL;
    snprintf(name, sizeof name, "%s.weight", module);
    const lmx_tensor_view *w = lmx_bind_find(b, name);
    lmx_weight_desc d = {.name = module, .rows = out_rows, .cols = in_cols};
    if (!w) {
        snprintf(expect, sizeof expect, "[%lld, %lld, %lld]", (long long)E, (long long)out_rows, (long long)in_cols);
        return lmx_bind_missing(b, name, expect);
    }
    lmx_quant_params qp;
    const int qcfg = lmx_model_config_quant_for(b->c, module, &qp);
    if (!s) {
        snprintf(expect, sizeof expect, "[%lld, %lld, %lld] float", (long long)E, (long long)out_rows,
                 (long long)in_cols);
        if (w->dtype == LMX_DTYPE_U32)
            return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "%s: tensor %s is packed (U32) but %s.scales is missing",
                             w->file, w->name, module);
        if (!lmx_dtype_is_float(w->dtype) || w->ndim != 3 || w->shape[0] != E || w->shape[1] != out_rows ||
            w->shape[2] != in_cols)
            return lmx_bind_bad_shape(w, expect);
        d.kind = LMX_WEIGHT_DENSE;
        d.dtype = w->dtype;
        d.data = w->data;
        *out = d;
        return LMX_OK;
    }
    if (qcfg == 0)
        return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED,
                         "%s: %s.scales exists but config.json's quantization block says %s is not quantized", w->file,
                         module, module);
    if (qcfg == 1 && lmx_quant_mode_is_fp(qp.mode))
        return stacked_fp_desc(w, s, qb, qp, E, out_rows, in_cols, &d, out);
    const int64_t lead[2] = {E, out_rows};
    lmx_status st = lmx_bind_affine_desc(b, module, w, s, qb, qcfg, qp, lead, 2, in_cols, &d);
    if (st != LMX_OK) return st;
    *out = d;
    return LMX_OK;
}

/* A stacked module [E, out, in] (float or MLX-quantized; with its bias [E, out] when `bias`) described
 * as one expert's rows (rows = out, row0 = 0; the caller sets row0 = e * out). */
static lmx_status stacked_desc(binder *b, const char *module, int64_t E, int64_t out_rows, int64_t in_cols, bool bias,
                               lmx_weight_desc *out) {
    lmx_status st = stacked_weight_desc(b, module, E, out_rows, in_cols, out);
    return st == LMX_OK && bias ? stacked_bias(b, module, E, out_rows, out) : st;
}

/* The tensor names of a family's sparse block (see the top of this file). */
typedef struct moe_names {
    const char *block;            /* the block under the layer: "mlp", "block_sparse_moe" */
    const char *router;           /* the router module under the block */
    const char *stack;            /* mlx-lm's stacked experts under the block */
    const char *const *hub;       /* the Hub's per-expert projections (gate, up, down), NULL: stacked only */
} moe_names;

static moe_names names_of(const lmx_model_config *c) {
    static const char *const qwen_hub[3] = {"gate_proj", "up_proj", "down_proj"};
    static const char *const mixtral_hub[3] = {"w1", "w3", "w2"};
    if (!strcmp(c->model_type, "mixtral")) return (moe_names){"block_sparse_moe", "gate", "switch_mlp", mixtral_hub};
    if (!strcmp(c->model_type, "gpt_oss")) return (moe_names){"mlp", "router", "experts", NULL};
    return (moe_names){"mlp", "gate", "switch_mlp", qwen_hub};
}

/* One projection (0 gate, 1 up, 2 down) of every expert as one expert stack into *out. */
static lmx_status bind_projection(binder *b, const moe_names *nm, const char *blk_prefix, bool stacked, int k,
                                  lmx_bweight **out) {
    const lmx_model_config *c = b->c;
    lmx_backend *be = b->lm->be;
    static const char *const stack_names[3] = {"gate_proj", "up_proj", "down_proj"};
    const int64_t E = c->n_experts, H = c->hidden_size, I = c->moe_intermediate_size;
    const int64_t out_rows = k == 2 ? H : I, in_cols = k == 2 ? I : H;
    char module[512];
    lmx_weight_desc *parts = calloc((size_t)E, sizeof *parts); /* expert e's matrix */
    if (!parts) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "moe layer");
    lmx_status st = LMX_OK;
    if (stacked) { /* row ranges [e*out, (e+1)*out) of the stored [E*out, in] matrix (and of its bias) */
        snprintf(module, sizeof module, "%s.%s.%s", blk_prefix, nm->stack, stack_names[k]);
        lmx_weight_desc d;
        st = stacked_desc(b, module, E, out_rows, in_cols, c->moe_bias, &d);
        for (int64_t e = 0; st == LMX_OK && e < E; e++) {
            parts[e] = d;
            parts[e].row0 = e * out_rows;
        }
    }
    for (int64_t e = 0; !stacked && st == LMX_OK && e < E; e++) {
        snprintf(module, sizeof module, "%s.experts.%lld.%s", blk_prefix, (long long)e, nm->hub[k]);
        st = lmx_bind_linear_desc(b, module, out_rows, in_cols, false, &parts[e]);
    }
    if (st == LMX_OK) st = be->ops->weight_upload_experts(be, parts, (int)E, out);
    free(parts);
    return st;
}

/* Which layout block `blk` stores its experts in (*stacked), or a validation error naming the
 * tensors looked for (gpt_oss: the Hub's fused gate_up_proj refused by name). */
static lmx_status find_layout(binder *b, const moe_names *nm, const char *blk, bool *stacked) {
    const lmx_model_config *c = b->c;
    char name[512], alt[512];
    snprintf(name, sizeof name, "%s.%s.gate_proj.weight", blk, nm->stack);
    *stacked = lmx_weights_find(b->lm->weights, name) != NULL;
    if (*stacked) return LMX_OK;
    if (nm->hub) {
        snprintf(alt, sizeof alt, "%s.experts.0.%s.weight", blk, nm->hub[0]);
        if (lmx_weights_find(b->lm->weights, alt)) return LMX_OK;
        return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED,
                         "missing tensor %s (stacked experts [%d, %d, %d]) or %s (per-expert) for %s model", name,
                         c->n_experts, c->moe_intermediate_size, c->hidden_size, alt, c->model_type);
    }
    const char *fused[2] = {"gate_up_proj", "gate_up_proj_blocks"};
    for (int i = 0; i < 2; i++) {
        snprintf(alt, sizeof alt, "%s.%s.%s", blk, nm->stack, fused[i]);
        const lmx_tensor_view *t = lmx_weights_find(b->lm->weights, alt);
        if (t)
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "%s: tensor %s is the Hub's fused, interleaved gate|up layout of %s (transformers / the "
                             "original MXFP4 checkpoint), which is not loaded directly; an MLX conversion "
                             "(mlx_lm.convert) stores %s.%s.{gate,up,down}_proj",
                             t->file, alt, c->model_type, blk, nm->stack);
    }
    return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "missing tensor %s (stacked experts [%d, %d, %d]) for %s model",
                     name, c->n_experts, c->moe_intermediate_size, c->hidden_size, c->model_type);
}

lmx_status lmx_bind_moe_layer(binder *b, const char *p, lm_layer *L) {
    const lmx_model_config *c = b->c;
    lmx_backend *be = b->lm->be;
    const lmx_backend_ops *op = be->ops;
    if (!op->weight_upload_experts || !op->moe_route || !op->moe_matmul || !op->moe_gate_up || !op->moe_combine)
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: the %s backend has no mixture-of-experts ops", c->model_type,
                         op->name);
    if (c->n_experts > LMX_MOE_MAX_EXPERTS) /* config.c bounds num_experts_per_tok by LMX_MOE_MAX_TOPK */
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: %d experts (at most %d)", c->model_type, c->n_experts,
                         LMX_MOE_MAX_EXPERTS);
    const moe_names nm = names_of(c);
    char blk[300], name[512];
    snprintf(blk, sizeof blk, "%s.%s", p, nm.block);
    lm_moe_layer *m = calloc(1, sizeof *m);
    if (!m) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "moe layer");
    L->moe = m; /* freed by lmx_lm_close on failure too */
    m->act = lm_act_kind(c); /* gpt_oss: the clamped SwiGLU */
    lmx_weight_desc d;
    lmx_status st;
    bool stacked;
    if ((st = find_layout(b, &nm, blk, &stacked))) return st;
    snprintf(name, sizeof name, "%s.%s", blk, nm.router);
    if ((st = lmx_bind_linear_desc(b, name, c->n_experts, c->hidden_size, c->moe_bias, &d))) return st;
    d.fp32_x = true; /* its logits choose and weight the experts: no rounding of the activations */
    if ((st = be->ops->weight_upload(be, &d, &m->router))) return st;
    lmx_bweight **outs[3] = {&m->gate, &m->up, &m->down};
    for (int k = 0; k < 3; k++)
        if ((st = bind_projection(b, &nm, blk, stacked, k, outs[k]))) return st;
    return LMX_OK;
}

bool lmx_moe_expert_tensor(const lmx_model_config *c, const char *name) {
    return c->n_experts > 0 && c->layer_moe && (strstr(name, ".switch_mlp.") || strstr(name, ".experts."));
}
