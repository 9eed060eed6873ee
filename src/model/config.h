/* config.h — a language model's config.json (+ generation_config.json) parsed into the numbers and
 * family flags the forward pass needs.
 *
 * Families: model_type llama, mistral, qwen2, qwen3, gemma3_text, gemma3 (text part read from
 * text_config; weights prefixed), phi3, and the mixture-of-experts qwen3_moe (qwen3 attention),
 * mixtral (mistral attention) and gpt_oss (llama attention with q/k/v/o biases and attention sinks,
 * alternating sliding / full layers, YaRN; experts with biases and a clamped SwiGLU). Both config spellings are read: the old one (rope_theta,
 * rope_scaling{type|rope_type}, sliding_window_pattern) and the transformers-5 one (rope_parameters,
 * including gemma3's per-layer-type dict {"full_attention": {...}, "sliding_attention": {...}}).
 * Semantics follow Hugging Face transformers where it and mlx-lm differ (see
 * shared/docs/mlx-format.md §5): e.g. mistral/phi3 apply `sliding_window` to every layer, phi3
 * longrope switches between short and long factors by sequence length.
 *
 * Ownership: lmx_model_config_load/parse return a heap object the caller releases with
 * lmx_model_config_free (NULL-safe); every pointer inside it is owned by it.
 * Thread-safety: immutable after parsing; concurrent reads are safe.
 */
#ifndef LMX_MODEL_CONFIG_H
#define LMX_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "formats/quant_mode.h"
#include "lmx.h"

typedef enum lmx_arch {
    LMX_ARCH_LLAMA = 0, /* llama, mistral */
    LMX_ARCH_QWEN2,
    LMX_ARCH_QWEN3,
    LMX_ARCH_GEMMA3, /* gemma3_text, gemma3 (text part) */
    LMX_ARCH_PHI3,
} lmx_arch;

typedef enum lmx_rope_type {
    LMX_ROPE_DEFAULT = 0,
    LMX_ROPE_LINEAR,   /* inv_freq /= factor */
    LMX_ROPE_LLAMA3,   /* llama 3.1 band-wise smoothing */
    LMX_ROPE_LONGROPE, /* phi3 (also "su"): short/long factors, attention factor on cos/sin */
    LMX_ROPE_YARN,     /* YaRN (transformers 5): ramp between interpolated and extrapolated frequencies */
} lmx_rope_type;

typedef enum lmx_activation {
    LMX_ACT_SILU = 0,  /* SwiGLU: silu(gate) * up */
    LMX_ACT_GELU_TANH, /* GeGLU: gelu_tanh(gate) * up */
    LMX_ACT_SWIGLU_OAI, /* gpt-oss: clamped SwiGLU with the +1 on up (backend.h LMX_BACT_SWIGLU_OAI) */
} lmx_activation;

/* One RoPE parameter set (the whole model, or one layer type for gemma3). */
typedef struct lmx_rope_config {
    lmx_rope_type type;
    double theta;                     /* base */
    double factor;                    /* linear, llama3 */
    double low_freq_factor;           /* llama3 (default 1) */
    double high_freq_factor;          /* llama3 (default 4) */
    double original_max_position;     /* llama3, longrope, yarn */
    double beta_fast, beta_slow;      /* yarn (defaults 32, 1) */
    bool truncate;                    /* yarn: floor/ceil the correction range (default true) */
    double attention_factor;          /* multiplies cos/sin (longrope); 1 otherwise */
    float *short_factor, *long_factor; /* longrope: [n_factors] each, n_factors == rotary_dim/2 */
    int n_factors;
} lmx_rope_config;

/* MLX quantization parameters for one module. */
typedef struct lmx_quant_params {
    int bits;            /* affine: 2,3,4,5,6,8; fp modes: the mode's (4, or 8 for mxfp8) */
    int group_size;      /* affine: 32,64,128; fp modes: the mode's (32, or 16 for nvfp4) */
    lmx_quant_mode mode; /* "mode" (absent: affine) */
} lmx_quant_params;

/* A per-module entry of the quantization block: {"bits":…,"group_size":…,"mode":…} or false/true. */
typedef struct lmx_quant_override {
    char *module;        /* module path as keyed in config.json, e.g. "model.layers.3.mlp.down_proj" */
    bool quantized;      /* false: this module is stored unquantized */
    lmx_quant_params p;  /* valid when quantized */
} lmx_quant_override;

typedef struct lmx_model_config {
    char model_type[32]; /* as written in config.json ("gemma3" for the wrapper) */
    lmx_arch arch;
    bool text_config;    /* the text part came from "text_config" (gemma3 wrapper) */

    int hidden_size;
    int n_layers;
    int intermediate_size;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    double rms_norm_eps;
    int64_t max_position_embeddings;

    int tie_word_embeddings; /* -1 absent (decided by the presence of lm_head.weight), 0, 1 */
    bool attention_bias;     /* bias on q,k,v,o */
    bool qkv_bias;           /* bias on q,k,v only (qwen2) */
    bool mlp_bias;           /* bias on gate,up,down (llama) */
    bool qk_norm;            /* per-head RMSNorm of q and k before RoPE (qwen3, gemma3) */
    bool norm_plus_one;      /* RMSNorm weight is (1 + w) (gemma) */
    bool sandwich_norms;     /* gemma3: post_attention/pre_feedforward/post_feedforward norms */
    bool fused_qkv;          /* phi3: self_attn.qkv_proj */
    bool fused_gate_up;      /* phi3: mlp.gate_up_proj */
    bool attn_sinks;         /* gpt_oss: self_attn.sinks [n_heads], one logit per head in the softmax */
    lmx_activation act;

    bool embed_scale_sqrt_hidden; /* gemma: embeddings *= sqrt(hidden) (fp32, as transformers in fp32) */
    float attn_scale;             /* head_dim^-0.5, or query_pre_attn_scalar^-0.5 */
    float attn_logit_softcap;     /* 0 = none */
    float final_logit_softcap;    /* 0 = none */

    int rotary_dim;                /* head_dim * partial_rotary_factor, even */
    lmx_rope_config rope;          /* full-attention layers (all layers unless gemma3) */
    lmx_rope_config rope_sliding;  /* sliding layers (gemma3: local base, no scaling) */
    bool has_rope_sliding;         /* rope_sliding differs from rope */

    /* mixture of experts (qwen3_moe, mixtral, gpt_oss); n_experts == 0: every MLP is dense */
    int n_experts;             /* qwen3_moe num_experts, mixtral / gpt_oss num_local_experts */
    int n_experts_per_tok;     /* k of the top-k routing */
    int moe_intermediate_size; /* each expert's inner width (mixtral, gpt_oss: intermediate_size) */
    bool moe_norm_topk;        /* the k weights are renormalised to sum 1 (qwen3_moe norm_topk_prob;
                                  mixtral, gpt_oss always: softmax over the top-k logits is the same) */
    bool moe_bias;             /* gpt_oss: the router and every expert projection have a bias */
    bool *layer_moe;           /* [n_layers]: the layer's MLP is sparse; NULL when n_experts == 0 */

    int sliding_window;   /* 0 = none */
    bool *layer_sliding;  /* [n_layers]: the layer uses the sliding window (and rope_sliding) */

    bool quantized;              /* a "quantization"/"quantization_config" block is present */
    char quant_mode[16];         /* the global mode's name ("affine" when absent) */
    lmx_quant_params quant;      /* global defaults */
    lmx_quant_override *overrides;
    int n_overrides;

    int32_t *eos_ids; /* [LMX_MAX_EOS]: generation_config.json eos_token_id, else config.json's
                         (model/eos.h: mlx-lm's rules) */
    int n_eos;
    bool eos_named;   /* one of the files named them (else the tokenizer's eos_token applies) */
    int32_t bos_id;   /* -1 if absent */
} lmx_model_config;

/* Reads dir/config.json and (if present) dir/generation_config.json. Errors: LMX_ERR_MODEL_NOT_FOUND
 * (no config.json), LMX_ERR_INVALID_MODEL_FORMAT (bad JSON, missing/invalid key),
 * LMX_ERR_UNSUPPORTED (unknown model_type, unsupported rope type), with the key named. */
lmx_status lmx_model_config_load(const char *dir, lmx_model_config **out);

/* Parses config.json text (len bytes, need not be NUL-terminated) and optional generation_config
 * text (gen may be NULL). `label` names the source in error details. Used by load and the fuzzer. */
lmx_status lmx_model_config_parse(const char *json, size_t len, const char *gen, size_t gen_len,
                                  const char *label, lmx_model_config **out);

void lmx_model_config_free(lmx_model_config *c); /* NULL-safe */

/* Quantization parameters for module `module` (path without ".weight"). Returns 1 and fills *p
 * if the config says the module is quantized (override or global block), 0 if an override says it
 * is not, -1 if the config has no opinion (no quantization block). */
int lmx_model_config_quant_for(const lmx_model_config *c, const char *module, lmx_quant_params *p);

/* A short human-readable name of the family ("llama", …). */
const char *lmx_arch_name(lmx_arch a);

#endif
