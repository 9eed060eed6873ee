/* lm_bind.h — the weight binder shared by lm_bind.c (dense blocks) and lm_bind_moe.c (sparse
 * blocks). Not for use outside src/model. */
#ifndef LMX_MODEL_LM_BIND_H
#define LMX_MODEL_LM_BIND_H

#include "model/lm_internal.h"

typedef struct binder {
    lmx_lm *lm;
    const lmx_model_config *c;
    const char *prefix; /* "model.", "language_model.model.", "model.language_model." */
    const char *head;   /* "lm_head", "language_model.lm_head" */
    const lmx_tensor_view **used;
    size_t n_used, cap_used;
} binder;

/* Finds the tensor layout's prefixes (b->prefix, b->head) by the embedding; else
 * LMX_ERR_MODEL_VALIDATION_FAILED naming the missing tensor. */
lmx_status lmx_bind_prefix(binder *b);
/* The tensor `name`, recorded as used (NULL if absent). */
const lmx_tensor_view *lmx_bind_find(binder *b, const char *name);
/* "[d0, d1] DTYPE" of t into buf. */
void lmx_bind_shape_str(const lmx_tensor_view *t, char *buf, size_t n);
/* LMX_ERR_MODEL_VALIDATION_FAILED naming the tensor, what was expected and what it is. */
lmx_status lmx_bind_bad_shape(const lmx_tensor_view *t, const char *expect);
lmx_status lmx_bind_missing(binder *b, const char *name, const char *expect);
/* The MLX affine part of a module's description: its packed weight w, scales s and biases qb (NULL:
 * reported missing) of the leading dims lead[0..nlead) ({out} for a matrix, {E, out} for an expert
 * stack) and in_cols inputs into d (kind, dtype, data, scales, biases; bits and group size from the
 * shapes, and equal to the config's entry where it has one: qcfg == 1). */
lmx_status lmx_bind_affine_desc(binder *b, const char *module, const lmx_tensor_view *w, const lmx_tensor_view *s,
                                const lmx_tensor_view *qb, int qcfg, lmx_quant_params qp, const int64_t *lead,
                                int nlead, int64_t in_cols, lmx_weight_desc *d);
/* Validates a Linear/Embedding module [out, in] (float or MLX-quantized), optionally with a bias, and
 * describes all of its rows in *out (out->name = module: the caller keeps module alive). */
lmx_status lmx_bind_linear_desc(binder *b, const char *module, int64_t out_rows, int64_t in_cols, bool want_bias,
                                lmx_weight_desc *out);
/* The sparse MLP block of layer prefix p ("model.layers.3") into L->moe (lm_bind_moe.c). */
lmx_status lmx_bind_moe_layer(binder *b, const char *p, lm_layer *L);
/* Whether stored tensor `name` holds experts' weights (mlx-lm's switch_mlp.* or the Hub's
 * experts.E.*) of a sparse model: a token uses top-k / n_experts of it (lm_bind_moe.c). */
bool lmx_moe_expert_tensor(const lmx_model_config *c, const char *name);

#endif
