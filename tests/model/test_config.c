/* test_config.c — config.json parsing for every family, both spellings, and bad configs. */
#include <math.h>
#include <string.h>

#include "lmx_test.h"
#include "model/config.h"
#include "util/error.h"

static lmx_model_config *parse2(const char *json, const char *gen, lmx_status *st) {
    lmx_model_config *c = NULL;
    *st = lmx_model_config_parse(json, strlen(json), gen, gen ? strlen(gen) : 0, "test", &c);
    return c;
}

static lmx_model_config *parse(const char *json) {
    lmx_status st;
    lmx_model_config *c = parse2(json, NULL, &st);
    CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
    return c;
}

static lmx_status parse_err(const char *json) {
    lmx_status st;
    lmx_model_config *c = parse2(json, NULL, &st);
    lmx_model_config_free(c);
    return st;
}

#define BASE "\"hidden_size\": 64, \"num_hidden_layers\": 4, \"intermediate_size\": 128, \"num_attention_heads\": 4, " \
             "\"vocab_size\": 256"

static void test_llama_old_spelling(void) {
    lmx_model_config *c = parse("{\"model_type\": \"llama\", " BASE ", \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-5, "
                                "\"rope_theta\": 500000.0, \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 8.0, "
                                "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                                "\"original_max_position_embeddings\": 8192}, \"tie_word_embeddings\": true, "
                                "\"eos_token_id\": [128001, 128009], \"bos_token_id\": 128000}");
    if (!c) return;
    CHECK_EQ_INT(c->arch, LMX_ARCH_LLAMA);
    CHECK_EQ_INT(c->head_dim, 16);
    CHECK_EQ_INT(c->n_kv_heads, 2);
    CHECK_EQ_INT(c->rotary_dim, 16);
    CHECK_EQ_INT(c->rope.type, LMX_ROPE_LLAMA3);
    CHECK_NEAR(c->rope.theta, 500000.0, 0);
    CHECK_NEAR(c->rope.factor, 8.0, 0);
    CHECK_NEAR(c->rope.original_max_position, 8192, 0);
    CHECK_EQ_INT(c->tie_word_embeddings, 1);
    CHECK_EQ_INT(c->n_eos, 2);
    CHECK_EQ_INT(c->eos_ids[1], 128009);
    CHECK_EQ_INT(c->bos_id, 128000);
    CHECK_NEAR(c->rms_norm_eps, 1e-5, 1e-12);
    CHECK_NEAR(c->attn_scale, 0.25, 1e-7);
    CHECK(!c->quantized);
    CHECK_EQ_INT(c->sliding_window, 0);
    for (int i = 0; i < c->n_layers; i++) CHECK(!c->layer_sliding[i]);
    lmx_model_config_free(c);
}

static void test_llama_new_spelling(void) {
    lmx_model_config *c = parse("{\"model_type\": \"llama\", " BASE ", \"head_dim\": 32, \"attention_bias\": true, "
                                "\"mlp_bias\": true, \"rope_parameters\": {\"rope_theta\": 10000.0, \"rope_type\": "
                                "\"default\"}, \"layer_types\": [\"full_attention\", \"sliding_attention\", "
                                "\"full_attention\", \"sliding_attention\"], \"sliding_window\": 16}");
    if (!c) return;
    CHECK_EQ_INT(c->head_dim, 32);
    CHECK_EQ_INT(c->n_kv_heads, 4);
    CHECK(c->attention_bias && c->mlp_bias && !c->qkv_bias);
    CHECK_EQ_INT(c->rope.type, LMX_ROPE_DEFAULT);
    CHECK_EQ_INT(c->tie_word_embeddings, -1);
    CHECK(!c->layer_sliding[0] && c->layer_sliding[1] && !c->layer_sliding[2] && c->layer_sliding[3]);
    CHECK_EQ_INT(c->sliding_window, 16);
    CHECK_NEAR(c->attn_scale, 1.0 / sqrt(32.0), 1e-7);
    lmx_model_config_free(c);
}

static void test_mistral_window_all_layers(void) {
    lmx_model_config *c = parse("{\"model_type\": \"mistral\", " BASE ", \"sliding_window\": 4096}");
    if (!c) return;
    CHECK_EQ_INT(c->arch, LMX_ARCH_LLAMA);
    CHECK_EQ_INT(c->sliding_window, 4096);
    for (int i = 0; i < c->n_layers; i++) CHECK(c->layer_sliding[i]);
    lmx_model_config_free(c);
    c = parse("{\"model_type\": \"mistral\", " BASE ", \"sliding_window\": null}");
    if (!c) return;
    CHECK_EQ_INT(c->sliding_window, 0);
    lmx_model_config_free(c);
}

static void test_qwen2_qwen3(void) {
    lmx_model_config *c = parse("{\"model_type\": \"qwen2\", " BASE ", \"rope_theta\": 1000000.0, "
                                "\"sliding_window\": 32, \"use_sliding_window\": false, \"max_window_layers\": 2}");
    if (!c) return;
    CHECK_EQ_INT(c->arch, LMX_ARCH_QWEN2);
    CHECK(c->qkv_bias && !c->attention_bias && !c->qk_norm);
    CHECK_EQ_INT(c->sliding_window, 0);
    CHECK_NEAR(c->rope.theta, 1e6, 0);
    lmx_model_config_free(c);
    c = parse("{\"model_type\": \"qwen2\", " BASE ", \"sliding_window\": 32, \"use_sliding_window\": true, "
              "\"max_window_layers\": 2}");
    if (!c) return;
    CHECK(!c->layer_sliding[1] && c->layer_sliding[2] && c->layer_sliding[3]);
    lmx_model_config_free(c);
    c = parse("{\"model_type\": \"qwen3\", " BASE ", \"head_dim\": 32, \"num_key_value_heads\": 2, "
              "\"rope_parameters\": {\"rope_theta\": 1000000, \"rope_type\": \"default\"}, "
              "\"tie_word_embeddings\": false}");
    if (!c) return;
    CHECK_EQ_INT(c->arch, LMX_ARCH_QWEN3);
    CHECK(c->qk_norm && !c->norm_plus_one && !c->qkv_bias);
    CHECK_EQ_INT(c->head_dim, 32);
    CHECK_EQ_INT(c->tie_word_embeddings, 0);
    lmx_model_config_free(c);
}

static void test_gemma3_text_old(void) {
    lmx_model_config *c = parse("{\"model_type\": \"gemma3_text\", " BASE ", \"head_dim\": 16, \"num_key_value_heads\": 1, "
                                "\"query_pre_attn_scalar\": 144, \"rope_theta\": 1000000.0, \"rope_local_base_freq\": 10000.0, "
                                "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0}, \"sliding_window\": 512, "
                                "\"sliding_window_pattern\": 2, \"final_logit_softcapping\": 30.0, "
                                "\"attn_logit_softcapping\": 50.0, \"hidden_activation\": \"gelu_pytorch_tanh\"}");
    if (!c) return;
    CHECK_EQ_INT(c->arch, LMX_ARCH_GEMMA3);
    CHECK(c->norm_plus_one && c->sandwich_norms && c->qk_norm && c->embed_scale_sqrt_hidden);
    CHECK_EQ_INT(c->act, LMX_ACT_GELU_TANH);
    CHECK_NEAR(c->attn_scale, 1.0 / 12.0, 1e-7);
    CHECK_NEAR(c->final_logit_softcap, 30, 0);
    CHECK_NEAR(c->attn_logit_softcap, 50, 0);
    CHECK_EQ_INT(c->rope.type, LMX_ROPE_LINEAR);
    CHECK_NEAR(c->rope.theta, 1e6, 0);
    CHECK(c->has_rope_sliding);
    CHECK_EQ_INT(c->rope_sliding.type, LMX_ROPE_DEFAULT);
    CHECK_NEAR(c->rope_sliding.theta, 1e4, 0);
    /* pattern 2: layers 1, 3 global */
    CHECK(c->layer_sliding[0] && !c->layer_sliding[1] && c->layer_sliding[2] && !c->layer_sliding[3]);
    CHECK_EQ_INT(c->sliding_window, 512);
    lmx_model_config_free(c);
}

static void test_gemma3_wrapper_new(void) {
    lmx_model_config *c = parse(
        "{\"model_type\": \"gemma3\", \"eos_token_id\": [1, 106], \"text_config\": {\"model_type\": \"gemma3_text\", "
        BASE ", \"head_dim\": 16, \"layer_types\": [\"sliding_attention\", \"sliding_attention\", \"sliding_attention\", "
        "\"full_attention\"], \"sliding_window\": 8, \"rope_parameters\": {\"full_attention\": {\"rope_type\": "
        "\"linear\", \"factor\": 4.0, \"rope_theta\": 500000.0}, \"sliding_attention\": {\"rope_type\": \"default\", "
        "\"rope_theta\": 20000.0}}}, \"vision_config\": {\"hidden_size\": 32}}");
    if (!c) return;
    CHECK(c->text_config);
    CHECK_EQ_INT(c->arch, LMX_ARCH_GEMMA3);
    CHECK_EQ_STR(c->model_type, "gemma3");
    CHECK_EQ_INT(c->rope.type, LMX_ROPE_LINEAR);
    CHECK_NEAR(c->rope.factor, 4, 0);
    CHECK_NEAR(c->rope.theta, 500000, 0);
    CHECK_NEAR(c->rope_sliding.theta, 20000, 0);
    CHECK(c->layer_sliding[0] && c->layer_sliding[2] && !c->layer_sliding[3]);
    CHECK_EQ_INT(c->n_eos, 2);
    CHECK_NEAR(c->attn_scale, 1.0 / 16.0, 1e-7); /* query_pre_attn_scalar default 256 */
    lmx_model_config_free(c);
}

static void test_phi3_longrope(void) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"model_type\": \"phi3\", " BASE ", \"max_position_embeddings\": 131072, "
             "\"original_max_position_embeddings\": 4096, \"partial_rotary_factor\": 0.5, "
             "\"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [1, 1, 1, 1], \"long_factor\": [1, 2, 4, 8]}, "
             "\"sliding_window\": 2047}");
    lmx_model_config *c = parse(json);
    if (!c) return;
    CHECK_EQ_INT(c->arch, LMX_ARCH_PHI3);
    CHECK(c->fused_qkv && c->fused_gate_up);
    CHECK_EQ_INT(c->rotary_dim, 8);
    CHECK_EQ_INT(c->rope.type, LMX_ROPE_LONGROPE);
    CHECK_EQ_INT(c->rope.n_factors, 4);
    CHECK_NEAR(c->rope.long_factor[3], 8, 0);
    CHECK_NEAR(c->rope.original_max_position, 4096, 0);
    CHECK_NEAR(c->rope.attention_factor, sqrt(1 + log(32.0) / log(4096.0)), 1e-9);
    CHECK_NEAR(c->rms_norm_eps, 1e-5, 1e-12); /* phi3 default */
    for (int i = 0; i < c->n_layers; i++) CHECK(c->layer_sliding[i]);
    lmx_model_config_free(c);
    /* new spelling: partial_rotary_factor inside rope_parameters */
    c = parse("{\"model_type\": \"phi3\", " BASE ", \"rope_parameters\": {\"partial_rotary_factor\": 0.5, "
              "\"rope_theta\": 10000.0, \"rope_type\": \"default\"}, \"sliding_window\": null}");
    if (!c) return;
    CHECK_EQ_INT(c->rotary_dim, 8);
    CHECK_EQ_INT(c->sliding_window, 0);
    lmx_model_config_free(c);
    /* wrong number of factors */
    CHECK_EQ_INT(parse_err("{\"model_type\": \"phi3\", " BASE ", \"rope_scaling\": {\"type\": \"longrope\", "
                           "\"short_factor\": [1, 1], \"long_factor\": [1, 1]}}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
}

static void test_yarn(void) {
    /* qwen2.5-style: factor and original_max_position_embeddings → factor = max_pos / orig (transformers 5) */
    lmx_model_config *c = parse("{\"model_type\": \"qwen2\", " BASE ", \"max_position_embeddings\": 131072, "
                                "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0, "
                                "\"original_max_position_embeddings\": 32768}}");
    if (!c) return;
    CHECK_EQ_INT(c->rope.type, LMX_ROPE_YARN);
    CHECK_NEAR(c->rope.factor, 4.0, 0);
    CHECK_NEAR(c->rope.original_max_position, 32768, 0);
    CHECK_NEAR(c->rope.attention_factor, 0.1 * log(4.0) + 1.0, 1e-12);
    CHECK_NEAR(c->rope.beta_fast, 32, 0);
    CHECK_NEAR(c->rope.beta_slow, 1, 0);
    CHECK(c->rope.truncate);
    lmx_model_config_free(c);
    /* deepseek-style mscale / mscale_all_dim, no original → factor from the dict */
    c = parse("{\"model_type\": \"llama\", " BASE ", \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 10000, "
              "\"factor\": 40, \"mscale\": 1.0, \"mscale_all_dim\": 0.707, \"beta_fast\": 16, \"truncate\": false}}");
    if (!c) return;
    CHECK_NEAR(c->rope.factor, 40, 0);
    CHECK_NEAR(c->rope.attention_factor, (0.1 * log(40.0) + 1) / (0.1 * 0.707 * log(40.0) + 1), 1e-12);
    CHECK_NEAR(c->rope.beta_fast, 16, 0);
    CHECK(!c->rope.truncate);
    lmx_model_config_free(c);
}

static void test_quantization(void) {
    lmx_model_config *c = parse("{\"model_type\": \"llama\", " BASE ", \"quantization\": {\"group_size\": 64, \"bits\": 4, "
                                "\"model.layers.1.mlp.down_proj\": {\"group_size\": 32, \"bits\": 8}, "
                                "\"model.layers.0.mlp.up_proj\": false}, "
                                "\"quantization_config\": {\"group_size\": 64, \"bits\": 4}}");
    if (!c) return;
    lmx_quant_params p;
    CHECK(c->quantized);
    CHECK_EQ_INT(lmx_model_config_quant_for(c, "model.layers.0.self_attn.q_proj", &p), 1);
    CHECK(p.bits == 4 && p.group_size == 64);
    CHECK_EQ_INT(lmx_model_config_quant_for(c, "model.layers.1.mlp.down_proj", &p), 1);
    CHECK(p.bits == 8 && p.group_size == 32);
    CHECK_EQ_INT(lmx_model_config_quant_for(c, "model.layers.0.mlp.up_proj", &p), 0);
    lmx_model_config_free(c);
    /* only quantization_config (no mode) */
    c = parse("{\"model_type\": \"qwen3\", " BASE ", \"quantization_config\": {\"group_size\": 32, \"bits\": 3}}");
    if (!c) return;
    CHECK(c->quant.bits == 3 && c->quant.group_size == 32);
    lmx_model_config_free(c);
    c = parse("{\"model_type\": \"qwen3\", " BASE "}");
    if (!c) return;
    CHECK_EQ_INT(lmx_model_config_quant_for(c, "lm_head", &p), -1);
    lmx_model_config_free(c);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"quantization\": {\"group_size\": 64, \"bits\": 7}}"),
                 LMX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"quantization\": {\"group_size\": 16, \"bits\": 4}}"),
                 LMX_ERR_UNSUPPORTED);
    /* fp modes (mode defaults, per-layer mixes) and unknown modes */
    c = parse("{\"model_type\": \"llama\", " BASE ", \"quantization\": {\"mode\": \"mxfp4\", "
              "\"model.layers.0.self_attn.q_proj\": {\"group_size\": 64, \"bits\": 8, \"mode\": \"affine\"}, "
              "\"model.layers.0.mlp.up_proj\": {\"mode\": \"nvfp4\"}}}");
    if (!c) return;
    CHECK(c->quant.mode == LMX_QUANT_MXFP4 && c->quant.bits == 4 && c->quant.group_size == 32);
    CHECK(lmx_model_config_quant_for(c, "model.layers.0.self_attn.q_proj", &p) == 1 && p.mode == LMX_QUANT_AFFINE &&
          p.bits == 8 && p.group_size == 64);
    CHECK(lmx_model_config_quant_for(c, "model.layers.0.mlp.up_proj", &p) == 1 && p.mode == LMX_QUANT_NVFP4 &&
          p.bits == 4 && p.group_size == 16);
    lmx_model_config_free(c);
    /* an entry without "mode" is affine with affine defaults, whatever the block says (gpt-oss's
     * router entry {"group_size": 64, "bits": 8} in an mxfp4 model) */
    c = parse("{\"model_type\": \"llama\", " BASE ", \"quantization\": {\"group_size\": 32, \"bits\": 4, "
              "\"mode\": \"mxfp4\", \"model.layers.0.mlp.router\": {\"group_size\": 64, \"bits\": 8}, "
              "\"model.layers.1.mlp.router\": {\"bits\": 8, \"group_size\": null}}}");
    if (!c) return;
    CHECK(lmx_model_config_quant_for(c, "model.layers.0.mlp.router", &p) == 1 && p.mode == LMX_QUANT_AFFINE &&
          p.bits == 8 && p.group_size == 64);
    CHECK(lmx_model_config_quant_for(c, "model.layers.1.mlp.router", &p) == 1 && p.mode == LMX_QUANT_AFFINE &&
          p.bits == 8 && p.group_size == 64);
    CHECK(lmx_model_config_quant_for(c, "model.layers.1.mlp.gate_proj", &p) == 1 && p.mode == LMX_QUANT_MXFP4);
    lmx_model_config_free(c);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"quantization\": {\"group_size\": 64, \"bits\": 4, "
                           "\"mode\": \"mxfp4\"}}"),
                 LMX_ERR_INVALID_MODEL_FORMAT); /* mxfp4 is group 32 */
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"quantization\": {\"group_size\": 64, \"bits\": 4, "
                           "\"model.layers.3.mlp.gate_proj\": {\"mode\": \"int4\"}}}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "model.layers.3.mlp.gate_proj") && strstr(lmx_last_error_detail(), "int4"));
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"quantization_config\": {\"quant_method\": \"awq\"}}"),
                 LMX_ERR_UNSUPPORTED);
}

static void test_eos_generation_config(void) {
    lmx_status st;
    lmx_model_config *c = parse2("{\"model_type\": \"llama\", " BASE ", \"eos_token_id\": 2}",
                                 "{\"eos_token_id\": [7, 8, 9], \"bos_token_id\": 1}", &st);
    CHECK_EQ_INT(st, LMX_OK);
    if (c) {
        CHECK_EQ_INT(c->n_eos, 3);
        CHECK_EQ_INT(c->eos_ids[0], 7);
        CHECK_EQ_INT(c->bos_id, 1);
    }
    lmx_model_config_free(c);
    c = parse2("{\"model_type\": \"llama\", " BASE ", \"eos_token_id\": 2}", "{\"eos_token_id\": null}", &st);
    CHECK_EQ_INT(st, LMX_OK);
    if (c) {
        CHECK_EQ_INT(c->n_eos, 1);
        CHECK_EQ_INT(c->eos_ids[0], 2);
        CHECK(c->eos_named);
    }
    lmx_model_config_free(c);
    /* mlx-lm's rules, read with the config: a falsy generation_config value (0) gives way to
     * config.json, duplicates are dropped; no file naming one leaves the tokenizer's to the engine */
    c = parse2("{\"model_type\": \"llama\", " BASE ", \"eos_token_id\": [5, 6, 5]}", "{\"eos_token_id\": 0}", &st);
    CHECK_EQ_INT(st, LMX_OK);
    if (c) {
        CHECK_EQ_INT(c->n_eos, 2);
        CHECK(c->eos_ids[0] == 5 && c->eos_ids[1] == 6 && c->eos_named);
    }
    lmx_model_config_free(c);
    c = parse2("{\"model_type\": \"llama\", " BASE "}", NULL, &st);
    CHECK_EQ_INT(st, LMX_OK);
    if (c) CHECK(c->n_eos == 0 && !c->eos_named);
    lmx_model_config_free(c);
}

static void test_bad_configs(void) {
    lmx_status st = parse_err("{\"model_type\": \"gpt2\", " BASE "}");
    CHECK_EQ_INT(st, LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error_detail(), "gpt2") != NULL);
    st = parse_err("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 4.0}}");
    CHECK_EQ_INT(st, LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error_detail(), "dynamic") != NULL);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"gemma3_text\", " BASE ", \"use_bidirectional_attention\": true}"),
                 LMX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\"}"), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "hidden_size") != NULL);
    CHECK_EQ_INT(parse_err("{\"hidden_size\": 1}"), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("[1, 2]"), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", "), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"num_key_value_heads\": 3}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", \"hidden_size\": \"64\", \"num_hidden_layers\": 4, "
                           "\"intermediate_size\": 128, \"num_attention_heads\": 4, \"vocab_size\": 256}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"layer_types\": [\"full_attention\"]}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"hidden_act\": \"relu2\"}"), LMX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"gemma3\", " BASE "}"), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"rms_norm_eps\": -1}"), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"eos_token_id\": \"x\"}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"layer_types\": [\"sliding_attention\", "
                           "\"full_attention\", \"full_attention\", \"full_attention\"]}"),
                 LMX_ERR_INVALID_MODEL_FORMAT); /* sliding layer without a window */
    /* llama3 rope scaling needs its factor (the other keys default as in mlx-lm) */
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
                           "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    lmx_model_config *c = parse("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
                                "\"factor\": 32.0}}");
    if (c) {
        CHECK(c->rope.factor == 32.0 && c->rope.low_freq_factor == 1.0 && c->rope.high_freq_factor == 4.0 &&
              c->rope.original_max_position == 8192.0);
        lmx_model_config_free(c);
    }
}

/* Rope parameters that parse as numbers but make the rotation or its scaling non-finite used to load
 * and then produce NaN logits with no error. */
static void test_rope_degenerate(void) {
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"type\": \"yarn\", "
                           "\"factor\": 4, \"beta_fast\": -5}}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "beta_fast") != NULL);
    CHECK_EQ_INT(parse_err("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"type\": \"yarn\", "
                           "\"factor\": 4, \"attention_factor\": 1e308}}"),
                 LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "attention factor") != NULL);
    /* phi3: factor = max_position / original = 4096; attention factor divides by log(original) = 0 */
    char json[1024];
    snprintf(json, sizeof json,
             "{\"model_type\": \"phi3\", " BASE ", \"max_position_embeddings\": 4096, "
             "\"original_max_position_embeddings\": 1, \"rope_scaling\": {\"type\": \"longrope\", "
             "\"short_factor\": [1,1,1,1,1,1,1,1], \"long_factor\": [1,1,1,1,1,1,1,1]}}");
    CHECK_EQ_INT(parse_err(json), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "attention factor") != NULL);
    /* the same with a sane original context still parses */
    snprintf(json, sizeof json,
             "{\"model_type\": \"phi3\", " BASE ", \"max_position_embeddings\": 4096, "
             "\"original_max_position_embeddings\": 1024, \"rope_scaling\": {\"type\": \"longrope\", "
             "\"short_factor\": [1,1,1,1,1,1,1,1], \"long_factor\": [1,1,1,1,1,1,1,1]}}");
    lmx_model_config *c = parse(json);
    if (c) CHECK(c->rope.attention_factor > 1 && isfinite(c->rope.attention_factor));
    lmx_model_config_free(c);
}

static void test_load_missing_dir(void) {
    lmx_model_config *c = NULL;
    CHECK_EQ_INT(lmx_model_config_load("/nonexistent/lmx-model", &c), LMX_ERR_MODEL_NOT_FOUND);
    CHECK(c == NULL);
}

/* issue 15 item 7: a repeated key takes its last value (Python's json); item 10: nesting past the
 * parser's limit is named */
static void test_duplicate_keys_and_depth(void) {
    lmx_model_config *c = parse("{\"model_type\": \"llama\", " BASE ", \"num_hidden_layers\": 2}");
    if (c) CHECK_EQ_INT(c->n_layers, 2);
    lmx_model_config_free(c);
    char deep[2400] = "{\"model_type\": \"llama\", \"x\": ";
    for (int i = 0; i < 1100; i++) strcat(deep, "[");
    CHECK(parse_err(deep) == LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "nested deeper than the parser's limit") != NULL);
    CHECK(parse_err("{\"model_type\": ") == LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "not valid JSON (at line 1") != NULL);
}

int main(void) {
    RUN(test_duplicate_keys_and_depth);
    RUN(test_llama_old_spelling);
    RUN(test_llama_new_spelling);
    RUN(test_mistral_window_all_layers);
    RUN(test_qwen2_qwen3);
    RUN(test_gemma3_text_old);
    RUN(test_gemma3_wrapper_new);
    RUN(test_phi3_longrope);
    RUN(test_yarn);
    RUN(test_quantization);
    RUN(test_eos_generation_config);
    RUN(test_bad_configs);
    RUN(test_rope_degenerate);
    RUN(test_load_missing_dir);
    return lmx_test_summary();
}
