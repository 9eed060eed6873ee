/* lm_internal.h — the lmx_lm / lmx_kv structures shared by weight binding (lm_bind.c) and the
 * forward pass (lm_forward.c). Not for use outside src/model. */
#ifndef LMX_MODEL_LM_INTERNAL_H
#define LMX_MODEL_LM_INTERNAL_H

#include "formats/safetensors.h"
#include "model/lm.h"
#include "model/lm_shard.h"

/* A sparse MLP block (lm_moe.c): the router and one expert stack per projection (weight_upload_experts:
 * from mlx-lm's stacked [E, out, in] tensors or the Hub's per-expert ones, with the experts' biases
 * where the checkpoint has them). */
typedef struct lm_moe_layer {
    lmx_bweight *router;           /* [n_experts, hidden] (+ bias) */
    lmx_bweight *gate, *up, *down; /* stacks [n_experts, moe_inter, hidden] ×2, [n_experts, hidden, moe_inter] */
    lmx_act_kind act;              /* act(gate) * up of the experts */
} lm_moe_layer;

/* The backend activation of the config's MLP activation (act_mul / act_mul_split). */
static inline lmx_act_kind lm_act_kind(const lmx_model_config *c) {
    return c->act == LMX_ACT_SILU ? LMX_BACT_SILU_MUL
           : c->act == LMX_ACT_SWIGLU_OAI ? LMX_BACT_SWIGLU_OAI
                                          : LMX_BACT_GELU_TANH_MUL;
}

/* Activation scratch of the sparse blocks, allocated with the KV cache (lm_moe.c). */
typedef struct lm_moe_scratch lm_moe_scratch;

typedef struct lm_layer {
    lmx_bweight *q, *k, *v, *o;          /* [H*D, hidden], [KV*D, hidden] ×2, [hidden, H*D] */
    lmx_bweight *gate, *up, *down;       /* [inter, hidden] ×2, [hidden, inter] */
    lmx_bweight *in_norm;                /* [hidden] input_layernorm */
    lmx_bweight *post_attn_norm;         /* [hidden] post_attention_layernorm */
    lmx_bweight *pre_ff_norm, *post_ff_norm; /* [hidden] gemma3 only */
    lmx_bweight *q_norm, *k_norm;        /* [head_dim] qwen3/gemma3 only */
    lmx_bweight *sinks;                  /* [n_heads] attention-sink logits, gpt_oss only */
    bool sliding;
    lm_moe_layer *moe;                   /* the layer's MLP is sparse (gate/up/down then NULL); else NULL */
    /* backends with weight_upload_fused: the owners of q|k|v ([H*D + 2*KV*D, hidden]) and gate|up
     * ([2*inter, hidden]); q, k, v, gate, up are then views into them (freed first). NULL otherwise. */
    lmx_bweight *qkv, *gate_up;
} lm_layer;

/* Tensor parallel (lm_tp.c): the model split over the ranks of a backend group, each rank an lmx_lm
 * of its own (its shard's weights on its rank's backend; config and weight files borrowed from the
 * model the caller holds, which has no backend or weights itself). */
typedef struct lm_tp lm_tp;

struct lmx_lm {
    lmx_model_config *cfg;   /* owned, except while lmx_lm_open_config fails (own_cfg false) and by a
                                tensor-parallel rank (the group's model's) */
    bool own_cfg;
    lmx_weights *weights;    /* owned (a rank borrows the group's model's) */
    lmx_backend *be;         /* NULL for a tensor-parallel model (its ranks have one each) */
    bool own_be;
    lm_shard shard;          /* the part this model computes: the whole model, or one rank's */
    lm_tp *tp;               /* tensor parallel: the ranks; NULL on one backend */
    void **host;             /* [n_host] column slices of the shard in host memory the backend reads
                                (lm_shard_cols), freed at close */
    int n_host, cap_host;
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

/* The activation scratch of a forward over up to `rows` rows (a KV cache's chunk, or a pool's step
 * rows): what the layers read and write. Shared by the single-sequence forward (lmx_kv) and the
 * batched step (lmx_pool). */
typedef struct lm_scratch {
    int rows;
    lmx_buf *x, *xn;         /* [rows, hidden] residual stream, normed input of a block */
    lmx_buf *q, *att;        /* [rows, H*D] */
    lmx_buf *kk, *vv;        /* [rows, KV*D] */
    lmx_buf *o;              /* [rows, hidden] (gemma3 sandwich norms) */
    lmx_buf *g, *u;          /* [rows, inter] */
    /* one-token steps through fused weights (some layer has qkv/gate_up and the backend buf_view),
     * else all NULL: */
    lmx_buf *qkv1;           /* [H*D + 2*KV*D] output of the fused q|k|v matmul */
    lmx_buf *q1, *k1, *v1;   /* views of qkv1: [H*D], [KV*D], [KV*D] */
    lmx_buf *gu1;            /* [2*inter] output of the fused gate|up matmul */
    lmx_buf *g1, *u1;        /* views of gu1: [inter] each */
    /* T > 1 through fused gate|up weights (some layer has gate_up, the backend has act_mul_split,
     * rows > 1), else NULL: */
    lmx_buf *gu;             /* [rows, 2*inter] output of the fused gate|up matmul */
    lm_moe_scratch *moe;     /* some layer is sparse (lm_moe.c), else NULL */
    uint64_t floats;         /* fp32 elements held by the buffers above */
    uint64_t moe_bytes;      /* bytes held by moe */
} lm_scratch;

/* Allocates s for `rows` rows (every buffer the model's layers may use); on failure frees what it
 * took (s zeroed). */
lmx_status lm_scratch_alloc(lmx_lm *lm, int rows, lm_scratch *s);
void lm_scratch_free(lmx_lm *lm, lm_scratch *s); /* NULL-safe buffers; s zeroed */

/* Where one layer pass reads and writes: T rows of s at host positions pos[T], keys/values into
 * k[l] / v[l] of `slots[l]` slots (ring addressing) or, with a map, a paged pool (lmx_kv_map). */
typedef struct lm_pass {
    lm_scratch *s;
    int T;
    const int32_t *pos;      /* host [T] absolute positions */
    lmx_buf **k, **v;        /* [n_layers] caches [n_kv][slots][head_dim] */
    const int *slots;        /* [n_layers] slots per kv head of each layer's cache */
    const lmx_kv_map *map;   /* NULL: one sequence, ring slots; else the step's paged addressing */
    const bool *use_long;    /* host [T]: longrope long factors for row t (NULL: short everywhere); a run
                                of equal rows is one rope_qk_store call */
} lm_pass;

/* One decoder layer over the pass's rows (attention block, then lm_mlp_forward). A split shard
 * all-reduces the attention and MLP outputs over the ranks (lm_shard.h). */
lmx_status lm_layer_forward(lmx_lm *lm, const lm_pass *ps, int l);

/* Binds every tensor of lm->weights for lm->cfg and lm->shard to lm->be, then upload_end. */
lmx_status lmx_lm_bind(lmx_lm *lm);

/* The forward of ids[n] at kv->pos on one backend (lmx_lm_forward's work after its checks): with
 * `head` the last row's logits, with `a` their sampling on the device (*token), else with `logits`
 * their copy (also when the device could not decide: *token -1); kv->pos advances. A
 * tensor-parallel rank runs it on its thread: every rank with the same ids and head, `a` / logits /
 * token on rank 0 only (the others compute their part of the head for the all-gather). */
lmx_status lm_forward_run(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, bool head, const lmx_sample_args *a,
                          float *logits, int32_t *token);

/* ---- tensor parallel (lm_tp.c): lm->tp's ranks, each called on its rank's thread ---- */
lmx_status lm_tp_open(lmx_lm *lm, lmx_backend_group *g);     /* the ranks bound; on failure none left */
void lm_tp_close(lmx_lm *lm);
lmx_status lm_tp_kv_create(lmx_lm *lm, int max_ctx, int chunk, lmx_kv **out);
void lm_tp_kv_destroy(lmx_kv *kv);
lmx_status lm_tp_forward(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, bool head, const lmx_sample_args *a,
                         float *logits, int32_t *token);
lmx_lm *lm_tp_rank(const lmx_lm *lm, int r);                 /* rank r's model */

struct lmx_kv {
    lmx_lm *lm;
    int capacity, pos, chunk; /* capacity: positions; chunk: max rows per backend call */
    int *slots;              /* [n_layers] ring slots: capacity, or window + chunk - 1 on sliding layers */
    lmx_buf **k, **v;        /* [n_layers] each [n_kv][slots[l]][head_dim] */
    lm_scratch s;            /* [chunk] rows */
    lmx_buf *last;           /* [hidden] */
    lmx_buf *logits;         /* [vocab], or a vocabulary-split rank's gathered [n_ranks * vocab_slot] */
    lmx_buf *logits_part;    /* a vocabulary-split rank: its head rows' logits [vocab_slot]; else NULL */
    int32_t *lids;           /* a vocabulary-split rank: [chunk] the embedding's ids (lm_shard_local_ids) */
    int32_t *posv;           /* [chunk] absolute positions */
    bool *longv;             /* [chunk] longrope long factors per row (all equal within a call) */
    uint64_t bytes;
    lmx_kv **ranks;          /* a tensor-parallel model's cache: [n_ranks] one per rank (the fields above
                                unused but lm, capacity, pos, chunk, bytes); else NULL */
    int n_ranks;
};

/* ---- mixture of experts (lm_moe.c, lm_bind_moe.c) ---- */
/* Scratch for `chunk` rows (router logits, the routing table, the expert rows' activations). */
lmx_status lmx_moe_scratch_create(lmx_lm *lm, int chunk, lm_moe_scratch **out, uint64_t *bytes);
void lmx_moe_scratch_destroy(lmx_lm *lm, lm_moe_scratch *s); /* NULL-safe */
/* Bytes of lmx_moe_scratch_create's buffers for `chunk` rows (0 for a dense model). */
uint64_t lmx_moe_scratch_bound(const lmx_model_config *c, int chunk);
/* The family's routing rule (backend.h lmx_moe_rule): softmax over the k chosen logits when the
 * weights are renormalised (qwen3_moe norm_topk_prob, mixtral), else the softmax over all experts. */
lmx_moe_rule lmx_moe_rule_of(const lmx_model_config *c);
/* s->x[T, hidden] += the sparse block of layer l applied to s->xn[T, hidden] (scratch s->moe). */
lmx_status lmx_moe_forward(lmx_lm *lm, lm_scratch *s, int l, int T);
void lmx_moe_layer_free(lmx_lm *lm, lm_moe_layer *m); /* NULL-safe */

/* Bytes of activation scratch lmx_kv_create_ex allocates for `chunk` rows of shard sh with every
 * optional buffer present (an upper bound of kv->bytes minus the caches; lmx_lm_probe's estimate for
 * memory budgets). */
uint64_t lmx_kv_scratch_bound(const lmx_model_config *c, const lm_shard *sh, int chunk);

/* A KV block pool (lm_pool.c) and its step scratch (lm_step.c runs the steps). */
struct lmx_pool {
    lmx_lm *lm;
    int block_size, n_blocks; /* slots per block; blocks per layer buffer */
    int max_rows, out_rows;   /* tokens per step; rows of the head per head matmul */
    lmx_buf **k, **v;         /* [n_layers] each [n_kv][n_blocks * block_size][head_dim] */
    int *slots;               /* [n_layers] n_blocks * block_size each (lm_pass addressing) */
    int32_t *free_list;       /* [n_blocks] free physical blocks, n_free of them on top */
    int n_free;
    int32_t *refs;            /* [n_blocks] sequences holding each block (0: free) */
    int32_t pad_block;        /* backends with step hooks: the block the padding rows of a bucketed decode
                                 step write to and read (never free, never a sequence's; lm_step.c), else -1 */
    uint64_t block_bytes;     /* one block of every layer, K and V */
    uint64_t bytes;           /* blocks + scratch */
    int n_live;               /* sequences alive */
    uint64_t stamp;           /* counts steps: a sequence already seen in the current step has it */
    /* step scratch, all for max_rows rows (no allocation per step) */
    lm_scratch s;             /* [max_rows] */
    lmx_buf *last;            /* [out_rows, hidden] the last rows of the sequences whose output is wanted */
    lmx_buf *logits;          /* [out_rows, vocab] */
    int32_t *ids, *posv, *seqv; /* host [max_rows]: token, position, table row of each step row */
    bool *longv;              /* host [max_rows]: longrope long factors per row */
    int *out_idx;             /* host [max_rows]: the step row of each output, sampled ones first */
    int *last_tok;            /* host [max_rows]: the token row of each step row's last token */
    lmx_sample_args *sargs;   /* host [out_rows] */
    int32_t *tokens;          /* host [out_rows] */
    int32_t *tables;          /* host [max_rows * tables_cap]: the step's block tables (rows of `stride` entries) */
    int tables_cap;           /* blocks per table row: the most any sequence created may hold */
};

struct lmx_seq {
    lmx_pool *pool;
    int max_context, pos;
    int n_blocks;             /* blocks held */
    int32_t *blocks;          /* [ceil(max_context / block_size)] physical block of each logical block */
    uint64_t stamp;           /* pool->stamp while in the step being prepared */
};

/* pool internals for the step (lm_pool.c) */
int32_t lm_pool_take(lmx_pool *p);             /* a free block (refs 1), or -1 */
void lm_pool_release(lmx_pool *p, int32_t b);  /* one holder less */
/* slots [0, n) of block src copied into block dst, every layer, K and V */
lmx_status lm_pool_copy_block(lmx_pool *p, int32_t dst, int32_t src, int n);

#endif
