/* test_gpt_oss.c — the gpt_oss family on the CPU backend:
 *   - config.json: openai/gpt-oss-20b's own config (dims, experts, alternating sliding / full
 *     layers, YaRN with truncate false, sinks, biases), the transformers-5 spelling and defaults,
 *     the MLX quantization block of an MXFP4-experts + affine-8-bit conversion, what is refused
 *     (the original checkpoint's quant_method mxfp4, another SwiGLU limit, zero experts);
 *   - whole tiny models (gpt_oss_ref.h: bf16, and MXFP4 experts + 8-bit elsewhere) against a naive
 *     double-precision forward written from transformers' modeling_gpt_oss.py: attention sinks,
 *     q/k/v/o biases, a sliding window shorter than the prompt, router bias, softmax over the top-k,
 *     expert biases, both clamps of the SwiGLU; prefill in chunks == token-by-token decode;
 *   - binding errors name the tensor (a missing sink, a missing expert bias) and the Hub's fused
 *     gate_up_proj layout is refused by name, by the loader and by lmx convert. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert.h"
#include "lmx_test.h"
#include "model/config.h"
#include "model/gpt_oss_ref.h"
#include "model/lm.h"
#include "model/lm_internal.h"
#include "util/error.h"
#include "util/fs.h"

/* openai/gpt-oss-20b config.json (huggingface.co, revision of 2025-08-08) without its
 * quantization_config, which the next test adds back */
#define OSS20B_LAYER_TYPES                                                                                     \
    "\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\", "                   \
    "\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\", "                   \
    "\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\", "                   \
    "\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\", "                   \
    "\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\", "                   \
    "\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\""
#define OSS20B_BODY                                                                                            \
    "\"architectures\": [\"GptOssForCausalLM\"], \"attention_bias\": true, \"attention_dropout\": 0.0, "       \
    "\"eos_token_id\": 200002, \"experts_per_token\": 4, \"head_dim\": 64, \"hidden_act\": \"silu\", "         \
    "\"hidden_size\": 2880, \"initial_context_length\": 4096, \"initializer_range\": 0.02, "                   \
    "\"intermediate_size\": 2880, \"layer_types\": [" OSS20B_LAYER_TYPES "], "                                 \
    "\"max_position_embeddings\": 131072, \"model_type\": \"gpt_oss\", \"num_attention_heads\": 64, "          \
    "\"num_experts_per_tok\": 4, \"num_hidden_layers\": 24, \"num_key_value_heads\": 8, "                      \
    "\"num_local_experts\": 32, \"output_router_logits\": false, \"pad_token_id\": 199999, "                   \
    "\"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"beta_fast\": 32.0, \"beta_slow\": 1.0, \"factor\": 32.0, "   \
    "\"original_max_position_embeddings\": 4096, \"rope_type\": \"yarn\", \"truncate\": false}, "              \
    "\"rope_theta\": 150000, \"router_aux_loss_coef\": 0.9, \"sliding_window\": 128, \"swiglu_limit\": 7.0, "  \
    "\"tie_word_embeddings\": false, \"transformers_version\": \"4.55.0.dev0\", \"use_cache\": true, "         \
    "\"vocab_size\": 201088"

static lmx_model_config *parse(const char *json, lmx_status *st) {
    lmx_model_config *c = NULL;
    *st = lmx_model_config_parse(json, strlen(json), NULL, 0, "test", &c);
    return c;
}

static void expect_error(const char *json, lmx_status want, const char *needle) {
    lmx_status st;
    lmx_model_config *c = parse(json, &st);
    CHECK_MSG(st == want, "got %s (%s) for %.80s", lmx_status_str(st), lmx_last_error_detail(), json);
    CHECK_MSG(strstr(lmx_last_error_detail(), needle), "detail \"%s\" lacks \"%s\"", lmx_last_error_detail(), needle);
    lmx_model_config_free(c);
}

static void test_config_20b(void) {
    lmx_status st;
    lmx_model_config *c = parse("{" OSS20B_BODY "}", &st);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    if (!c) return;
    CHECK_EQ_STR(c->model_type, "gpt_oss");
    CHECK_EQ_INT(c->arch, LMX_ARCH_LLAMA);
    CHECK_EQ_INT(c->n_layers, 24);
    CHECK_EQ_INT(c->hidden_size, 2880);
    CHECK_EQ_INT(c->n_heads, 64);
    CHECK_EQ_INT(c->n_kv_heads, 8);
    CHECK_EQ_INT(c->head_dim, 64);
    CHECK_EQ_INT(c->vocab_size, 201088);
    CHECK_EQ_INT(c->n_experts, 32);
    CHECK_EQ_INT(c->n_experts_per_tok, 4);
    CHECK_EQ_INT(c->moe_intermediate_size, 2880);
    CHECK(c->moe_norm_topk && c->moe_bias && c->attn_sinks && c->attention_bias && !c->qkv_bias && !c->mlp_bias);
    CHECK(!c->qk_norm && !c->sandwich_norms && !c->fused_qkv);
    CHECK_EQ_INT(c->act, LMX_ACT_SWIGLU_OAI);
    CHECK_EQ_INT(c->tie_word_embeddings, 0);
    CHECK_NEAR(c->rms_norm_eps, 1e-5, 1e-12);
    CHECK_NEAR(c->attn_scale, 0.125, 1e-7);
    CHECK_EQ_INT(c->sliding_window, 128);
    for (int l = 0; l < 24; l++) {
        CHECK_MSG(c->layer_sliding[l] == (l % 2 == 0), "layer %d sliding", l);
        CHECK_MSG(c->layer_moe[l], "layer %d sparse", l);
    }
    CHECK_EQ_INT(c->rope.type, LMX_ROPE_YARN);
    CHECK_NEAR(c->rope.theta, 150000.0, 1e-9);
    CHECK_NEAR(c->rope.factor, 32.0, 1e-12);
    CHECK_NEAR(c->rope.original_max_position, 4096.0, 1e-9);
    CHECK(!c->rope.truncate);
    CHECK_NEAR(c->rope.attention_factor, 0.1 * log(32.0) + 1.0, 1e-12);
    CHECK_EQ_INT(c->rotary_dim, 64);
    CHECK(!c->has_rope_sliding); /* one rope for both layer types */
    CHECK_EQ_INT(c->n_eos, 1);
    CHECK_EQ_INT(c->eos_ids[0], 200002);
    CHECK(!c->quantized);
    lmx_model_config_free(c);
}

static void test_config_variants(void) {
    lmx_status st;
    /* transformers 5 spelling: rope_parameters, the num_experts alias, experts_per_token only, no
     * layer_types (the default alternation), no attention_bias (default true) */
    lmx_model_config *c = parse(
        "{\"model_type\": \"gpt_oss\", \"hidden_size\": 64, \"num_hidden_layers\": 3, \"intermediate_size\": 32, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"vocab_size\": 100, "
        "\"num_experts\": 6, \"experts_per_token\": 2, \"rope_parameters\": {\"rope_type\": \"yarn\", "
        "\"rope_theta\": 150000.0, \"factor\": 32.0, \"beta_fast\": 32.0, \"beta_slow\": 1.0, \"truncate\": false, "
        "\"original_max_position_embeddings\": 4096}, \"max_position_embeddings\": 131072}",
        &st);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    if (c) {
        CHECK_EQ_INT(c->n_experts, 6);
        CHECK_EQ_INT(c->n_experts_per_tok, 2);
        CHECK(c->attention_bias);
        CHECK(c->layer_sliding[0] && !c->layer_sliding[1] && c->layer_sliding[2]);
        CHECK_EQ_INT(c->sliding_window, 128);
        CHECK_EQ_INT(c->rope.type, LMX_ROPE_YARN);
        CHECK_NEAR(c->rope.theta, 150000.0, 1e-9);
        CHECK(!c->rope.truncate);
    }
    lmx_model_config_free(c);
    /* no rope dict at all: GptOssConfig's default YaRN (factor 32 over 4096, theta 150000) */
    c = parse("{\"model_type\": \"gpt_oss\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"intermediate_size\": 32, "
              "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"vocab_size\": 100, "
              "\"num_local_experts\": 4, \"num_experts_per_tok\": 2}",
              &st);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    if (c) {
        CHECK_EQ_INT(c->rope.type, LMX_ROPE_YARN);
        CHECK_NEAR(c->rope.theta, 150000.0, 1e-9);
        CHECK_NEAR(c->rope.factor, 32.0, 1e-12); /* max_position_embeddings 131072 (default) / 4096 */
        CHECK_NEAR(c->rope.original_max_position, 4096.0, 1e-9);
        CHECK(!c->rope.truncate);
        CHECK_EQ_INT(c->max_position_embeddings, 131072);
    }
    lmx_model_config_free(c);
    /* an MXFP4-experts + affine-8-bit block: experts take the global mxfp4, entries without "mode"
     * are affine (mlx-lm's router predicate {"group_size": 64, "bits": 8}) */
    c = parse("{" OSS20B_BODY ", \"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"mxfp4\", "
              "\"model.embed_tokens\": {\"group_size\": 64, \"bits\": 8}, "
              "\"model.layers.0.self_attn.q_proj\": {\"group_size\": 64, \"bits\": 8}, "
              "\"model.layers.0.mlp.router\": {\"group_size\": 64, \"bits\": 8}, \"lm_head\": {\"group_size\": 64, "
              "\"bits\": 8}}}",
              &st);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    if (c) {
        lmx_quant_params p;
        CHECK(lmx_model_config_quant_for(c, "model.layers.0.mlp.experts.gate_proj", &p) == 1 &&
              p.mode == LMX_QUANT_MXFP4 && p.bits == 4 && p.group_size == 32);
        CHECK(lmx_model_config_quant_for(c, "model.layers.0.mlp.router", &p) == 1 && p.mode == LMX_QUANT_AFFINE &&
              p.bits == 8 && p.group_size == 64);
        CHECK(lmx_model_config_quant_for(c, "lm_head", &p) == 1 && p.mode == LMX_QUANT_AFFINE && p.bits == 8);
    }
    lmx_model_config_free(c);
    /* refused: the original checkpoint's quantization_config, another SwiGLU, no experts */
    expect_error("{" OSS20B_BODY ", \"quantization_config\": {\"modules_to_not_convert\": [\"model.layers.*.self_attn\", "
                 "\"model.layers.*.mlp.router\", \"model.embed_tokens\", \"lm_head\"], \"quant_method\": \"mxfp4\"}}",
                 LMX_ERR_UNSUPPORTED, "original gpt-oss checkpoint");
    expect_error("{" OSS20B_BODY ", \"swiglu_limit\": 8.0}", LMX_ERR_UNSUPPORTED, "swiglu_limit");
    expect_error("{" OSS20B_BODY ", \"swiglu_alpha\": 1.5}", LMX_ERR_UNSUPPORTED, "swiglu_alpha");
    expect_error("{\"model_type\": \"gpt_oss\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"intermediate_size\": 32, "
                 "\"num_attention_heads\": 4, \"head_dim\": 16, \"vocab_size\": 100, \"num_local_experts\": 0}",
                 LMX_ERR_INVALID_MODEL_FORMAT, "num_local_experts");
    expect_error("{\"model_type\": \"gpt_oss\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"intermediate_size\": 32, "
                 "\"num_attention_heads\": 4, \"head_dim\": 16, \"vocab_size\": 100, \"num_local_experts\": 4, "
                 "\"experts_per_token\": 5}",
                 LMX_ERR_INVALID_MODEL_FORMAT, "experts_per_token");
}

/* ---- whole models against the naive reference ---- */

static const go_spec SPECS[] = {
    {.layers = 4, .experts = 5, .topk = 2, .mx = false}, /* bf16 everywhere */
    {.layers = 4, .experts = 8, .topk = 4, .mx = true},  /* MXFP4 experts + affine 8-bit g64 elsewhere */
};

/* gpu: a GPU backend to open the model on, else NULL (a 2-thread CPU backend) */
static lmx_lm *open_lm(const char *dir, lmx_backend *gpu) {
    lmx_lm_options o = {.n_threads = 2, .backend = gpu, .device = gpu ? LMX_DEVICE_GPU : LMX_DEVICE_CPU};
    lmx_lm *lm = NULL;
    lmx_status st = lmx_lm_open(dir, &o, &lm);
    CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
    return lm;
}

/* Both specs against the naive reference on the CPU (gpu NULL; tolerance 2e-3 x (1 + max|logit|)) or
 * on a GPU backend (tol: its bf16 prefill GEMM operands and fp16 KV cache round more). */
static void check_reference(lmx_backend *gpu, double tol) {
    enum { N = 13 }; /* longer than the window (5): the sliding layers drop keys */
    for (size_t v = 0; v < sizeof SPECS / sizeof SPECS[0]; v++) {
        go_model *m = calloc(1, sizeof *m);
        CHECK(go_write(m, &SPECS[v], 0x5eed0 + v) == 0);
        lmx_lm *lm = open_lm(m->dir, gpu);
        lmx_kv *kv = NULL;
        if (lm) CHECK(lmx_kv_create_ex(lm, 32, 4, &kv) == LMX_OK); /* chunk 4: prefill in several calls */
        if (kv) {
            CHECK(lm->layers[0].sinks != NULL && lm->layers[0].moe != NULL && lm->layers[0].sliding);
            CHECK(!lm->layers[1].sliding);
            int32_t ids[N];
            for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 41 + 7 + (int)v) % GO_VOCAB);
            float lg[GO_VOCAB], dec[GO_VOCAB];
            double ref[GO_VOCAB];
            go_stats st;
            for (int n = 1; n <= N; n += N - 1) { /* one token, and the whole prompt */
                lmx_kv_reset(kv);
                CHECK(lmx_lm_forward(lm, kv, ids, n, lg) == LMX_OK);
                go_reference(m, ids, n, ref, &st);
                double err = 0, mx = 0;
                for (int i = 0; i < GO_VOCAB; i++) {
                    err = fmax(err, fabs(lg[i] - ref[i]));
                    mx = fmax(mx, fabs(ref[i]));
                }
                if (getenv("LMX_TEST_VERBOSE"))
                    fprintf(stderr, "  spec %zu n %d: max |logit - ref| %.3g, max |ref| %.3g, router gap %.3g, clamps %d/%d, "
                            "sink wins %d\n", v, n, err, mx, st.min_gap, st.clamped_gate, st.clamped_up, st.sink_wins);
                CHECK_MSG(st.min_gap > 2e-2, "spec %zu n %d: router gap %g too small for the test", v, n, st.min_gap);
                CHECK_MSG(err <= tol * (1 + mx), "spec %zu n %d%s: max |logit - ref| %g (max |ref| %g)", v, n,
                          gpu ? " (gpu)" : "", err, mx);
                CHECK(mx > 0.1);
            }
            /* the prompt exercised what the family adds */
            CHECK_MSG(st.clamped_gate > 0 && st.clamped_up > 0, "spec %zu: clamps gate %d up %d", v, st.clamped_gate,
                      st.clamped_up);
            CHECK_MSG(st.sink_wins > 0, "spec %zu: no sink above every score", v);
            /* token-by-token decode after a 3-token prefill gives the same last logits */
            lmx_kv_reset(kv);
            CHECK(lmx_lm_forward(lm, kv, ids, 3, NULL) == LMX_OK);
            for (int i = 3; i < N; i++) CHECK(lmx_lm_forward(lm, kv, ids + i, 1, dec) == LMX_OK);
            double err = 0, mx = 0;
            for (int i = 0; i < GO_VOCAB; i++) {
                err = fmax(err, fabs(dec[i] - lg[i]));
                mx = fmax(mx, fabs(lg[i]));
            }
            CHECK_MSG(err <= (gpu ? tol : 1e-4) * (1 + mx), "spec %zu%s: prefill vs decode max diff %g", v,
                      gpu ? " (gpu)" : "", err);
        }
        lmx_kv_destroy(kv);
        lmx_lm_close(lm);
        st_rmdir(m->dir);
        go_free(m);
        free(m);
    }
}

static void test_reference(void) { check_reference(NULL, 2e-3); }

/* the same on the GPU backend where this build has one and a GPU is usable (label gpu through the
 * golden tests; here SKIPped otherwise) */
static void test_reference_gpu(void) {
    if (!lmx_gpu_available()) {
        SKIP("no usable GPU");
        return;
    }
    lmx_backend *be = NULL;
    lmx_status st = lmx_backend_create(LMX_DEVICE_GPU, 0, &be, NULL);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    if (!be) return;
    check_reference(be, 1e-2);
    lmx_backend_destroy(be);
}

static void expect_open_error(const go_spec *s, lmx_status want, const char *needle) {
    go_model *m = calloc(1, sizeof *m);
    CHECK(go_write(m, s, 99) == 0);
    lmx_lm *lm = NULL;
    lmx_lm_options o = {.n_threads = 1};
    lmx_status st = lmx_lm_open(m->dir, &o, &lm);
    CHECK_MSG(st == want, "got %s (%s)", lmx_status_str(st), lmx_last_error_detail());
    CHECK_MSG(strstr(lmx_last_error_detail(), needle), "detail \"%s\" lacks \"%s\"", lmx_last_error_detail(), needle);
    lmx_lm_close(lm);
    st_rmdir(m->dir);
    go_free(m);
    free(m);
}

static void test_validation(void) {
    go_spec s = SPECS[0];
    s.skip = "model.layers.1.self_attn.sinks";
    expect_open_error(&s, LMX_ERR_MODEL_VALIDATION_FAILED, "model.layers.1.self_attn.sinks");
    s = SPECS[1];
    s.skip = "model.layers.2.mlp.experts.down_proj.bias";
    expect_open_error(&s, LMX_ERR_MODEL_VALIDATION_FAILED, "model.layers.2.mlp.experts.down_proj.bias");
    s = SPECS[1];
    s.skip = "model.layers.0.mlp.router.bias";
    expect_open_error(&s, LMX_ERR_MODEL_VALIDATION_FAILED, "model.layers.0.mlp.router.bias");
    s = SPECS[0];
    s.skip = "model.layers.3.self_attn.o_proj.bias";
    expect_open_error(&s, LMX_ERR_MODEL_VALIDATION_FAILED, "model.layers.3.self_attn.o_proj.bias");
    s = SPECS[0];
    s.hub_fused = true;
    expect_open_error(&s, LMX_ERR_UNSUPPORTED, "model.layers.0.mlp.experts.gate_up_proj");
}

/* lmx convert refuses transformers' fused gpt_oss experts (it would copy them into a model no loader
 * reads) by name */
static void test_convert_refuses_fused(void) {
    go_spec s = SPECS[0];
    s.hub_fused = true;
    go_model *m = calloc(1, sizeof *m);
    CHECK(go_write(m, &s, 5) == 0);
    char dst[600];
    snprintf(dst, sizeof dst, "%s.mlx", m->dir);
    lmx_convert_options o;
    lmx_convert_options_default(&o);
    lmx_status st = lmx_convert_model(m->dir, dst, &o);
    CHECK_MSG(st == LMX_ERR_UNSUPPORTED, "got %s (%s)", lmx_status_str(st), lmx_last_error_detail());
    CHECK(strstr(lmx_last_error_detail(), "mlp.experts.gate_up_proj") != NULL);
    CHECK(!lmx_fs_exists(dst));
    st_rmdir(m->dir);
    go_free(m);
    free(m);
}

int main(void) {
    RUN(test_config_20b);
    RUN(test_config_variants);
    RUN(test_reference);
    RUN(test_reference_gpu);
    RUN(test_validation);
    RUN(test_convert_refuses_fused);
    return lmx_test_summary();
}
