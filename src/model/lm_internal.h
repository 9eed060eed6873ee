/* lm_internal.h — the lmx_lm / lmx_kv structures shared by weight binding (lm_bind.c) and the
 * forward pass (lm_forward.c). Not for use outside src/model. */
#ifndef LMX_MODEL_LM_INTERNAL_H
#define LMX_MODEL_LM_INTERNAL_H

#include "formats/safetensors.h"
#include "model/lm.h"

/* A sparse MLP block (lm_moe.c): the router and each expert's projections as separate weights (a
 * stacked [E, out, in] tensor is uploaded as E row ranges). */
typedef struct lm_moe_layer {
    lmx_bweight *router;              /* [n_experts, hidden] */
    lmx_bweight **gate, **up, **down; /* [n_experts] each: [moe_inter, hidden] ×2, [hidden, moe_inter] */
} lm_moe_layer;

/* Activation scratch of the sparse blocks, allocated with the KV cache (lm_moe.c). */
typedef struct lm_moe_scratch lm_moe_scratch;

typedef struct lm_layer {
    lmx_bweight *q, *k, *v, *o;          /* [H*D, hidden], [KV*D, hidden] ×2, [hidden, H*D] */
    lmx_bweight *gate, *up, *down;       /* [inter, hidden] ×2, [hidden, inter] */
    lmx_bweight *in_norm;                /* [hidden] input_layernorm */
    lmx_bweight *post_attn_norm;         /* [hidden] post_attention_layernorm */
    lmx_bweight *pre_ff_norm, *post_ff_norm; /* [hidden] gemma3 only */
    lmx_bweight *q_norm, *k_norm;        /* [head_dim] qwen3/gemma3 only */
    bool sliding;
    lm_moe_layer *moe;                   /* the layer's MLP is sparse (gate/up/down then NULL); else NULL */
    /* backends with weight_upload_fused: the owners of q|k|v ([H*D + 2*KV*D, hidden]) and gate|up
     * ([2*inter, hidden]); q, k, v, gate, up are then views into them (freed first). NULL otherwise. */
    lmx_bweight *qkv, *gate_up;
} lm_layer;

struct lmx_lm {
    lmx_model_config *cfg;   /* owned, except while lmx_lm_open_config fails (own_cfg false) */
    bool own_cfg;
    lmx_weights *weights;
    lmx_backend *be;
    bool own_be;
    lmx_bweight *embed;      /* [vocab, hidden] */
    lmx_bweight *head;       /* [vocab, hidden]; == embed when tied */
    lmx_bweight *final_norm; /* [hidden] */
    lmx_bweight *rope_full;      /* [rotary_dim/2] inv_freq of full-attention layers (longrope: short) */
    lmx_bweight *rope_full_long; /* longrope: long factors; else NULL */
    lmx_bweight *rope_sliding;   /* sliding layers (gemma3 local base); == rope_full otherwise */
    float mscale_full, mscale_sliding;
    float embed_scale;
    lm_layer *layers;        /* [n_layers] */
};

struct lmx_kv {
    lmx_lm *lm;
    int capacity, pos, chunk; /* capacity: positions; chunk: max rows per backend call */
    int *slots;              /* [n_layers] ring slots: capacity, or window + chunk - 1 on sliding layers */
    lmx_buf **k, **v;        /* [n_layers] each [n_kv][slots[l]][head_dim] */
    lmx_buf *x, *xn;         /* [chunk, hidden] */
    lmx_buf *q, *att;        /* [chunk, H*D] */
    lmx_buf *kk, *vv;        /* [chunk, KV*D] */
    lmx_buf *o;              /* [chunk, hidden] */
    lmx_buf *g, *u;          /* [chunk, inter] */
    lmx_buf *last;           /* [hidden] */
    lmx_buf *logits;         /* [vocab] */
    int32_t *posv;           /* [chunk] absolute positions */
    uint64_t bytes;
    /* one-token steps through fused weights (some layer has qkv/gate_up and the backend buf_view),
     * else all NULL: */
    lmx_buf *qkv1;           /* [H*D + 2*KV*D] output of the fused q|k|v matmul */
    lmx_buf *q1, *k1, *v1;   /* views of qkv1: [H*D], [KV*D], [KV*D] */
    lmx_buf *gu1;            /* [2*inter] output of the fused gate|up matmul */
    lmx_buf *g1, *u1;        /* views of gu1: [inter] each */
    /* prefill (T > 1) through fused gate|up weights (some layer has gate_up, the backend has
     * act_mul_split, chunk > 1), else NULL: */
    lmx_buf *gu;             /* [chunk, 2*inter] output of the fused gate|up matmul */
    lm_moe_scratch *moe;     /* some layer is sparse, else NULL */
};

/* ---- mixture of experts (lm_moe.c, lm_bind_moe.c) ---- */
/* Scratch for `chunk` rows (router logits, gathered rows, expert outputs; host routing tables). */
lmx_status lmx_moe_scratch_create(lmx_lm *lm, int chunk, lm_moe_scratch **out, uint64_t *bytes);
void lmx_moe_scratch_destroy(lmx_lm *lm, lm_moe_scratch *s); /* NULL-safe */
/* Bytes of lmx_moe_scratch_create's device buffers for `chunk` rows (0 for a dense model). */
uint64_t lmx_moe_scratch_bound(const lmx_model_config *c, int chunk);
/* Routing of one row: logits [n_experts] -> the k experts of largest logit idx[k] (ties to the lower
 * index) with weights w[k] = softmax(logits)[idx], divided by their sum when renorm (which equals a
 * softmax over the k logits). */
void lmx_moe_route(const float *logits, int n_experts, int k, bool renorm, int32_t *idx, float *w);
/* kv->x[T, hidden] += the sparse block of layer l applied to kv->xn[T, hidden]. */
lmx_status lmx_moe_forward(lmx_lm *lm, lmx_kv *kv, int l, int T);
void lmx_moe_layer_free(lmx_lm *lm, lm_moe_layer *m); /* NULL-safe */

/* Bytes of activation scratch lmx_kv_create_ex allocates for `chunk` rows with every optional buffer
 * present (an upper bound of kv->bytes minus the caches; lmx_lm_probe's estimate for memory budgets). */
uint64_t lmx_kv_scratch_bound(const lmx_model_config *c, int chunk);

#endif
