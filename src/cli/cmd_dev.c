/* cmd_dev.c — `lmx dev …`: developer tools. `lmx dev random-model SHAPE OUTDIR` writes an MLX model
 * directory with the real config of a known model and deterministic random weights (for benchmarks
 * and load tests): config.json, generation_config.json, the tokenizer files when a tokenizer folder
 * is given, and model*.safetensors + model.safetensors.index.json sharded at 5 GiB like mlx-lm.
 * The weights (values, quantization) are dev_plan.c's; this file holds the shapes, their configs and
 * tensor lists, and the command. --dtype mxfp4-q8 (gpt-oss-20b: mlx-community's gpt-oss-20b-MXFP4-Q8
 * mix) stores the experts in mxfp4 and everything else quantized at 8 bits affine.
 */
#include "dev_plan.h"
#include "internal.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- model shapes ---- */

typedef struct {
    const char *name;
    const char *family;     /* tokenizer family folder: llama3, qwen3 */
    const char *model_type; /* llama, qwen3, qwen3_moe */
    const char *arch;
    int64_t hidden, layers, heads, kv_heads, head_dim, inter, vocab, max_pos;
    bool explicit_head_dim, tied, qk_norm, llama3_rope;
    double rope_theta, eps;
    const char *eos_json;   /* config.json eos_token_id */
    int64_t bos;
    const char *tf_version;
    const char *gen_config; /* generation_config.json */
    int64_t experts, topk, moe_inter; /* qwen3_moe (every layer sparse, norm_topk_prob): else 0 */
} shape_t;

#define QWEN3_GEN_CONFIG                                                                                        \
    "{\n    \"bos_token_id\": 151643,\n    \"do_sample\": true,\n    \"eos_token_id\": [\n        151645,\n"  \
    "        151643\n    ],\n    \"pad_token_id\": 151643,\n    \"temperature\": 0.6,\n    \"top_k\": 20,\n"     \
    "    \"top_p\": 0.95,\n    \"transformers_version\": \"4.51.0\"\n}\n"

static const shape_t SHAPES[] = {
    {"llama-3-8b", "llama3", "llama", "LlamaForCausalLM", 4096, 32, 32, 8, 128, 14336, 128256, 8192, false, false,
     false, false, 500000.0, 1e-5, "128009", 128000, "4.40.0.dev0",
     "{\n    \"bos_token_id\": 128000,\n    \"do_sample\": true,\n    \"eos_token_id\": [\n        128001,\n"
     "        128009\n    ],\n    \"max_length\": 4096,\n    \"temperature\": 0.6,\n    \"top_p\": 0.9,\n"
     "    \"transformers_version\": \"4.40.0.dev0\"\n}\n", 0, 0, 0},
    /* meta-llama/Meta-Llama-3-70B-Instruct: the tensor-parallel target shape (141 GB in bf16) */
    {"llama-3-70b", "llama3", "llama", "LlamaForCausalLM", 8192, 80, 64, 8, 128, 28672, 128256, 8192, false, false,
     false, false, 500000.0, 1e-5, "128009", 128000, "4.40.0.dev0",
     "{\n    \"bos_token_id\": 128000,\n    \"eos_token_id\": [\n        128001,\n        128009\n    ],\n"
     "    \"transformers_version\": \"4.40.0.dev0\"\n}\n", 0, 0, 0},
    {"llama-3.2-1b", "llama3", "llama", "LlamaForCausalLM", 2048, 16, 32, 8, 64, 8192, 128256, 131072, true, true,
     false, true, 500000.0, 1e-5, "[128001, 128008, 128009]", 128000, "4.45.0.dev0",
     "{\n    \"bos_token_id\": 128000,\n    \"do_sample\": true,\n    \"eos_token_id\": [\n        128001,\n"
     "        128008,\n        128009\n    ],\n    \"temperature\": 0.6,\n    \"top_p\": 0.9,\n"
     "    \"transformers_version\": \"4.45.0.dev0\"\n}\n", 0, 0, 0},
    {"qwen3-0.6b", "qwen3", "qwen3", "Qwen3ForCausalLM", 1024, 28, 16, 8, 128, 3072, 151936, 40960, true, true, true,
     false, 1000000.0, 1e-6, "151645", 151643, "4.51.0", QWEN3_GEN_CONFIG, 0, 0, 0},
    /* Qwen/Qwen3-30B-A3B (mlx-community's 4-bit: the same config plus the quantization block, routers at
     * 8 bits): 48 layers, 128 experts of 768, top-8, renormalised */
    {"qwen3-30b-a3b", "qwen3", "qwen3_moe", "Qwen3MoeForCausalLM", 2048, 48, 32, 4, 128, 6144, 151936, 40960, true,
     false, true, false, 1000000.0, 1e-6, "151645", 151643, "4.51.0", QWEN3_GEN_CONFIG, 128, 8, 768},
    /* openai/gpt-oss-20b (mlx-community's gpt-oss-20b-MXFP4-Q8: --dtype mxfp4-q8): 24 layers alternating
     * sliding (128) and full attention with sinks, 32 experts of 2880, top-4 (softmax over the 4), YaRN */
    {"gpt-oss-20b", "gpt_oss", "gpt_oss", "GptOssForCausalLM", 2880, 24, 64, 8, 64, 2880, 201088, 131072, true,
     false, false, false, 150000.0, 1e-5, "200002", 199998, "4.55.0.dev0",
     "{\n  \"bos_token_id\": 199998,\n  \"do_sample\": true,\n  \"eos_token_id\": [\n    200002,\n    199999\n"
     "  ],\n  \"pad_token_id\": 199999,\n  \"transformers_version\": \"4.55.0.dev0\"\n}\n", 32, 4, 2880},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

/* ---- the tensor plan of each shape (dev_plan.h) ---- */

static lmx_status add_matrix(lmx_dev_plan *p, const char *mod, int64_t rows, int64_t cols) {
    return lmx_dev_plan_add_matrix(p, mod, 0, rows, cols, 0);
}

/* the sparse MLP of layer l: the router (mlx-lm quantizes it at 8 bits: the config's per-module entry)
 * and the stacked experts switch_mlp.{gate,up,down}_proj [E, out, in] */
static lmx_status add_moe(lmx_dev_plan *p, const shape_t *m, int64_t l) {
    char mod[128];
    snprintf(mod, sizeof mod, "model.layers.%lld.mlp.gate", (long long)l);
    lmx_status s = lmx_dev_plan_add_matrix(p, mod, 0, m->experts, m->hidden, 8);
    const struct {
        const char *n;
        int64_t rows, cols;
    } mats[3] = {{"gate_proj", m->moe_inter, m->hidden}, {"down_proj", m->hidden, m->moe_inter},
                 {"up_proj", m->moe_inter, m->hidden}};
    for (int k = 0; k < 3 && s == LMX_OK; k++) {
        snprintf(mod, sizeof mod, "model.layers.%lld.mlp.switch_mlp.%s", (long long)l, mats[k].n);
        s = lmx_dev_plan_add_matrix(p, mod, m->experts, mats[k].rows, mats[k].cols, 0);
    }
    return s;
}

/* gpt_oss in mlx-lm's layout: q/k/v/o with biases, self_attn.sinks [heads], the router mlp.router with a
 * bias [E] (8 bits when quantized), the stacked experts mlp.experts.{gate,up,down}_proj [E, out, in]
 * (mxfp4 with mx_experts, else as the model) with biases [E, out] */
static lmx_status build_plan_gpt_oss(lmx_dev_plan *p, const shape_t *m, bool mx_experts) {
    lmx_status s = add_matrix(p, "model.embed_tokens", m->vocab, m->hidden);
    char mod[128], name[160];
    for (int64_t l = 0; l < m->layers && s == LMX_OK; l++) {
        const struct {
            const char *n;
            int64_t lead, rows, cols;
        } mats[8] = {{"self_attn.q_proj", 0, m->heads * m->head_dim, m->hidden},
                     {"self_attn.k_proj", 0, m->kv_heads * m->head_dim, m->hidden},
                     {"self_attn.v_proj", 0, m->kv_heads * m->head_dim, m->hidden},
                     {"self_attn.o_proj", 0, m->hidden, m->heads * m->head_dim},
                     {"mlp.router", 0, m->experts, m->hidden},
                     {"mlp.experts.gate_proj", m->experts, m->moe_inter, m->hidden},
                     {"mlp.experts.up_proj", m->experts, m->moe_inter, m->hidden},
                     {"mlp.experts.down_proj", m->experts, m->hidden, m->moe_inter}};
        for (int k = 0; k < 8 && s == LMX_OK; k++) {
            snprintf(mod, sizeof mod, "model.layers.%lld.%s", (long long)l, mats[k].n);
            if (k >= 5 && mx_experts) s = lmx_dev_plan_add_matrix_mx(p, mod, m->experts, mats[k].rows, mats[k].cols,
                                                                     LMX_QUANT_MXFP4);
            else s = lmx_dev_plan_add_matrix(p, mod, mats[k].lead, mats[k].rows, mats[k].cols, k == 4 ? 8 : 0);
            snprintf(name, sizeof name, "%s.bias", mod);
            if (s == LMX_OK) s = lmx_dev_plan_add_vector(p, name, mats[k].lead, mats[k].rows, 0.02f);
        }
        snprintf(name, sizeof name, "model.layers.%lld.self_attn.sinks", (long long)l);
        if (s == LMX_OK) s = lmx_dev_plan_add_vector(p, name, 0, m->heads, 0.02f);
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)l);
        if (s == LMX_OK) s = lmx_dev_plan_add_norm(p, name, m->hidden);
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        if (s == LMX_OK) s = lmx_dev_plan_add_norm(p, name, m->hidden);
    }
    if (s == LMX_OK) s = lmx_dev_plan_add_norm(p, "model.norm.weight", m->hidden);
    if (s == LMX_OK) s = add_matrix(p, "lm_head", m->vocab, m->hidden);
    return s;
}

static lmx_status build_plan(lmx_dev_plan *p, const shape_t *m) {
    lmx_status s = add_matrix(p, "model.embed_tokens", m->vocab, m->hidden);
    char mod[128];
    for (int64_t l = 0; l < m->layers && s == LMX_OK; l++) {
        const struct {
            const char *n;
            int64_t rows, cols;
        } mats[7] = {{"self_attn.q_proj", m->heads * m->head_dim, m->hidden},
                     {"self_attn.k_proj", m->kv_heads * m->head_dim, m->hidden},
                     {"self_attn.v_proj", m->kv_heads * m->head_dim, m->hidden},
                     {"self_attn.o_proj", m->hidden, m->heads * m->head_dim},
                     {"mlp.gate_proj", m->inter, m->hidden},
                     {"mlp.down_proj", m->hidden, m->inter},
                     {"mlp.up_proj", m->inter, m->hidden}};
        const int n_mats = m->experts ? 4 : 7; /* a sparse layer: the experts instead of the dense MLP */
        if (m->experts) s = add_moe(p, m, l);
        for (int k = 0; k < n_mats && s == LMX_OK; k++) {
            snprintf(mod, sizeof mod, "model.layers.%lld.%s", (long long)l, mats[k].n);
            s = add_matrix(p, mod, mats[k].rows, mats[k].cols);
            if (s == LMX_OK && k == 3 && m->qk_norm) {
                snprintf(mod, sizeof mod, "model.layers.%lld.self_attn.q_norm.weight", (long long)l);
                s = lmx_dev_plan_add_norm(p, mod, m->head_dim);
                snprintf(mod, sizeof mod, "model.layers.%lld.self_attn.k_norm.weight", (long long)l);
                if (s == LMX_OK) s = lmx_dev_plan_add_norm(p, mod, m->head_dim);
            }
        }
        snprintf(mod, sizeof mod, "model.layers.%lld.input_layernorm.weight", (long long)l);
        if (s == LMX_OK) s = lmx_dev_plan_add_norm(p, mod, m->hidden);
        snprintf(mod, sizeof mod, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        if (s == LMX_OK) s = lmx_dev_plan_add_norm(p, mod, m->hidden);
    }
    if (s == LMX_OK) s = lmx_dev_plan_add_norm(p, "model.norm.weight", m->hidden);
    if (s == LMX_OK && !m->tied) s = add_matrix(p, "lm_head", m->vocab, m->hidden);
    return s;
}

/* ---- small files ---- */

static lmx_status write_atomic(const char *dir, const char *name, const void *data, size_t len) {
    char *path = lmx_fs_join(dir, name);
    if (!path) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) {
        free(path);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp.XXXXXX", 12);
    lmx_status s = LMX_OK;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        s = lmx_error(LMX_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        if (fchmod(fd, 0644) != 0) LMX_LOG_W("%s: chmod failed", tmp);
        const char *p = data;
        size_t left = len;
        while (left && s == LMX_OK) {
            ssize_t r = write(fd, p, left);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) s = lmx_error(LMX_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
            else p += r, left -= (size_t)r;
        }
        if (close(fd) != 0 && s == LMX_OK) s = lmx_error(LMX_ERR_IO, "%s: close failed", tmp);
        if (s == LMX_OK && rename(tmp, path) != 0)
            s = lmx_error(LMX_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
        if (s != LMX_OK) unlink(tmp);
    }
    free(tmp);
    free(path);
    return s;
}

static int cmp_json_key(const void *a, const void *b) {
    return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Sorts an object's members by key (mlx-lm's save_config sorts the top level). */
static void sort_object(cJSON *obj) {
    int n = cJSON_GetArraySize(obj);
    if (n < 2) return;
    cJSON **items = malloc((size_t)n * sizeof *items);
    if (!items) return;
    int i = 0;
    for (cJSON *c = obj->child; c; c = c->next) items[i++] = c;
    qsort(items, (size_t)n, sizeof *items, cmp_json_key);
    for (i = 0; i < n; i++) {
        items[i]->prev = i ? items[i - 1] : items[n - 1]; /* cJSON: head->prev is the tail */
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    obj->child = items[0];
    free(items);
}

static cJSON *quant_block(int bits, int gs) {
    cJSON *q = cJSON_CreateObject();
    cJSON_AddNumberToObject(q, "group_size", gs);
    cJSON_AddNumberToObject(q, "bits", bits);
    cJSON_AddStringToObject(q, "mode", "affine");
    return q;
}

/* Writes c (consumed) as dir/config.json, its top level sorted. */
static lmx_status write_json(const char *dir, cJSON *c) {
    sort_object(c);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    if (!text) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
    lmx_status s = write_atomic(dir, "config.json", text, strlen(text));
    cJSON_free(text);
    return s;
}

static lmx_status write_config(const char *dir, const shape_t *m, int bits, int gs) {
    cJSON *c = cJSON_CreateObject();
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(m->arch));
    cJSON_AddBoolToObject(c, "attention_bias", false);
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(c, "bos_token_id", (double)m->bos);
    cJSON_AddItemToObject(c, "eos_token_id", lmx_json_parse(m->eos_json, strlen(m->eos_json), NULL));
    if (m->explicit_head_dim || m->head_dim * m->heads != m->hidden)
        cJSON_AddNumberToObject(c, "head_dim", (double)m->head_dim);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "hidden_size", (double)m->hidden);
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)m->inter);
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)m->max_pos);
    cJSON_AddStringToObject(c, "model_type", m->model_type);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)m->heads);
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)m->layers);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)m->kv_heads);
    if (!strcmp(m->model_type, "llama")) {
        cJSON_AddNumberToObject(c, "pretraining_tp", 1);
        if (m->llama3_rope) cJSON_AddBoolToObject(c, "mlp_bias", false);
    } else {
        cJSON_AddNumberToObject(c, "max_window_layers", (double)m->layers);
        cJSON_AddNullToObject(c, "sliding_window");
        cJSON_AddBoolToObject(c, "use_sliding_window", false);
    }
    if (m->experts) {
        cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
        cJSON_AddArrayToObject(c, "mlp_only_layers");
        cJSON_AddNumberToObject(c, "moe_intermediate_size", (double)m->moe_inter);
        cJSON_AddBoolToObject(c, "norm_topk_prob", true);
        cJSON_AddNumberToObject(c, "num_experts", (double)m->experts);
        cJSON_AddNumberToObject(c, "num_experts_per_tok", (double)m->topk);
        cJSON_AddBoolToObject(c, "output_router_logits", false);
        cJSON_AddNumberToObject(c, "router_aux_loss_coef", 0.001);
    }
    cJSON_AddNumberToObject(c, "rms_norm_eps", m->eps);
    if (m->llama3_rope) {
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddNumberToObject(rs, "factor", 32.0);
        cJSON_AddNumberToObject(rs, "high_freq_factor", 4.0);
        cJSON_AddNumberToObject(rs, "low_freq_factor", 1.0);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", 8192);
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
    } else {
        cJSON_AddNullToObject(c, "rope_scaling");
    }
    cJSON_AddNumberToObject(c, "rope_theta", m->rope_theta);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", m->tied);
    cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
    cJSON_AddStringToObject(c, "transformers_version", m->tf_version);
    cJSON_AddBoolToObject(c, "use_cache", true);
    cJSON_AddNumberToObject(c, "vocab_size", (double)m->vocab);
    for (int i = 0; bits && i < 2; i++) { /* quantization and quantization_config, with the routers' entries */
        cJSON *q = quant_block(bits, gs);
        for (int64_t l = 0; m->experts && l < m->layers; l++) {
            char mod[64];
            snprintf(mod, sizeof mod, "model.layers.%lld.mlp.gate", (long long)l);
            cJSON *e = cJSON_AddObjectToObject(q, mod);
            cJSON_AddNumberToObject(e, "group_size", gs);
            cJSON_AddNumberToObject(e, "bits", 8);
        }
        cJSON_AddItemToObject(c, i ? "quantization_config" : "quantization", q);
    }
    return write_json(dir, c);
}

/* a per-module entry {group_size gs, bits 8} (no "mode": affine whatever the global mode) */
static void add_q8_entry(cJSON *q, const char *mod, int gs) {
    cJSON *e = cJSON_AddObjectToObject(q, mod);
    cJSON_AddNumberToObject(e, "group_size", gs);
    cJSON_AddNumberToObject(e, "bits", 8);
}

/* gpt_oss's quantization block: mxfp4 experts (mx) under the global {32, 4, mxfp4} and per-module 8-bit
 * affine entries for everything else (mlx-community's -MXFP4-Q8), or the model's affine bits with the
 * routers at 8 */
static cJSON *quant_block_gpt_oss(const shape_t *m, int bits, int gs, bool mx) {
    cJSON *q = cJSON_CreateObject();
    cJSON_AddNumberToObject(q, "group_size", mx ? 32 : gs);
    cJSON_AddNumberToObject(q, "bits", mx ? 4 : bits);
    cJSON_AddStringToObject(q, "mode", mx ? "mxfp4" : "affine");
    if (mx) {
        add_q8_entry(q, "model.embed_tokens", gs);
        add_q8_entry(q, "lm_head", gs);
    }
    static const char *const mods[] = {"mlp.router", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj"};
    for (int64_t l = 0; l < m->layers; l++) {
        for (int k = 0; k < (mx ? 5 : 1); k++) {
            char mod[80];
            snprintf(mod, sizeof mod, "model.layers.%lld.%s", (long long)l, mods[k]);
            add_q8_entry(q, mod, gs);
        }
    }
    return q;
}

/* openai's gpt-oss config.json (without its quantization_config of the original mxfp4 checkpoint, with a
 * torch_dtype), the dimensions of m, mlx-lm's quantization block when quantized */
static lmx_status write_config_gpt_oss(const char *dir, const shape_t *m, int bits, int gs, bool mx) {
    cJSON *c = cJSON_CreateObject();
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(c, "architectures"), cJSON_CreateString(m->arch));
    cJSON_AddBoolToObject(c, "attention_bias", true);
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    cJSON_AddItemToObject(c, "eos_token_id", lmx_json_parse(m->eos_json, strlen(m->eos_json), NULL));
    cJSON_AddNumberToObject(c, "experts_per_token", (double)m->topk);
    cJSON_AddNumberToObject(c, "head_dim", (double)m->head_dim);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "hidden_size", (double)m->hidden);
    cJSON_AddNumberToObject(c, "initial_context_length", 4096);
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)m->moe_inter);
    cJSON *lt = cJSON_AddArrayToObject(c, "layer_types");
    for (int64_t l = 0; l < m->layers; l++)
        cJSON_AddItemToArray(lt, cJSON_CreateString(l % 2 ? "full_attention" : "sliding_attention"));
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)m->max_pos);
    cJSON_AddStringToObject(c, "model_type", m->model_type);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)m->heads);
    cJSON_AddNumberToObject(c, "num_experts_per_tok", (double)m->topk);
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)m->layers);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)m->kv_heads);
    cJSON_AddNumberToObject(c, "num_local_experts", (double)m->experts);
    cJSON_AddBoolToObject(c, "output_router_logits", false);
    cJSON_AddNumberToObject(c, "pad_token_id", 199999);
    cJSON_AddNumberToObject(c, "rms_norm_eps", m->eps);
    cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
    cJSON_AddNumberToObject(rs, "beta_fast", 32.0);
    cJSON_AddNumberToObject(rs, "beta_slow", 1.0);
    cJSON_AddNumberToObject(rs, "factor", 32.0);
    cJSON_AddNumberToObject(rs, "original_max_position_embeddings", 4096);
    cJSON_AddStringToObject(rs, "rope_type", "yarn");
    cJSON_AddBoolToObject(rs, "truncate", false);
    cJSON_AddNumberToObject(c, "rope_theta", m->rope_theta);
    cJSON_AddNumberToObject(c, "router_aux_loss_coef", 0.9);
    cJSON_AddNumberToObject(c, "sliding_window", 128);
    cJSON_AddNumberToObject(c, "swiglu_limit", 7.0);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", false);
    cJSON_AddStringToObject(c, "torch_dtype", "bfloat16"); /* not in openai's config: lmx bench's dtype label */
    cJSON_AddStringToObject(c, "transformers_version", m->tf_version);
    cJSON_AddBoolToObject(c, "use_cache", true);
    cJSON_AddNumberToObject(c, "vocab_size", (double)m->vocab);
    for (int i = 0; bits && i < 2; i++)
        cJSON_AddItemToObject(c, i ? "quantization_config" : "quantization", quant_block_gpt_oss(m, bits, gs, mx));
    return write_json(dir, c);
}

/* Copies the tokenizer files of `family` from tokdir (or tokdir/<family>) into dir. */
static lmx_status copy_tokenizer(const char *dir, const char *tokdir, const char *family, int *copied) {
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "tokenizer.model", "chat_template.jinja", "chat_template.json"};
    char *src = lmx_fs_join(tokdir, "tokenizer.json");
    char *base = NULL;
    if (src && lmx_fs_is_file(src)) {
        base = strdup(tokdir);
    } else {
        base = lmx_fs_join(tokdir, family);
    }
    free(src);
    if (!base) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
    char *probe = lmx_fs_join(base, "tokenizer.json");
    bool ok = probe && lmx_fs_is_file(probe);
    free(probe);
    if (!ok) {
        lmx_status s = lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: no tokenizer.json there or in %s/%s", tokdir, tokdir,
                                 family);
        free(base);
        return s;
    }
    *copied = 0;
    lmx_status s = LMX_OK;
    for (size_t i = 0; i < sizeof files / sizeof files[0] && s == LMX_OK; i++) {
        char *path = lmx_fs_join(base, files[i]);
        if (!path) {
            s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
            break;
        }
        if (lmx_fs_is_file(path)) {
            char *data = NULL;
            size_t len = 0;
            s = lmx_fs_read_file(path, (size_t)1 << 30, &data, &len);
            if (s == LMX_OK) s = write_atomic(dir, files[i], data, len);
            if (s == LMX_OK) (*copied)++;
            free(data);
        }
        free(path);
    }
    free(base);
    return s;
}

/* Removes weight files of an earlier run that the new index does not list (mlx-lm loads every
 * model*.safetensors of a directory): model.safetensors when there are shards now, and
 * model-NNNNN-of-MMMMM.safetensors with another MMMMM. Nothing else is touched. */
static void remove_stale_shards(const char *dir, int n_shards) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        unsigned a, b;
        char tail[32];
        bool stale = false;
        if (!strcmp(n, "model.safetensors")) stale = n_shards > 1;
        else if (strlen(n) == 32 && sscanf(n, "model-%5u-of-%5u%20s", &a, &b, tail) == 3 &&
                 !strcmp(tail, ".safetensors"))
            stale = (int)b != n_shards;
        if (!stale) continue;
        char *path = lmx_fs_join(dir, n);
        if (path && unlink(path) == 0) LMX_LOG_I("removed stale %s", path);
        free(path);
    }
    closedir(d);
}

/* ---- progress ---- */

typedef struct {
    double t0, last;
    int last_pct;
} progress_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    progress_t *p = ctx;
    double t = now_s();
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == p->last_pct && t - p->last < 0.2 && done != total) return;
    p->last_pct = pct;
    p->last = t;
    char bar[31];
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    double el = t - p->t0;
    fprintf(stderr, "\r[%s] %3d%% %.2f/%.2f GB %.0f MB/s ", bar, pct, done / 1e9, total / 1e9,
            el > 0 ? done / 1e6 / el : 0.0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* ---- the command ---- */

static void usage_random(FILE *f) {
    fprintf(f,
            "usage: lmx dev random-model SHAPE OUTDIR --dtype bf16|q8|q4|mxfp4-q8 [--group-size 64] [--seed N]\n"
            "                            [--tokenizer DIR] [--threads N] [--sync]\n"
            "  SHAPE: llama-3-8b | llama-3-70b | llama-3.2-1b | qwen3-0.6b | qwen3-30b-a3b | gpt-oss-20b\n"
            "         (real config.json, random weights; the MoE shapes: mlx-lm's stacked experts, routers at 8\n"
            "         bits when quantized)\n"
            "  --dtype mxfp4-q8 (gpt-oss-20b): experts mxfp4, everything else 8-bit affine (mlx-community's mix)\n"
            "  --tokenizer DIR  folder with tokenizer.json (or DIR/llama3, DIR/qwen3); default $LMX_TOKENIZER_DIR\n"
            "  --threads N      data-generation threads (default: all CPUs)\n"
            "  --sync           fsync every file before renaming it into place\n");
}

/* --scale-down k (tests): every width divided by k */
static void scale_down(shape_t *m, long k) {
    m->hidden /= k;
    m->inter /= k;
    /* experts: fewer (at least top-k), each width a multiple of 128 (any group size divides it) */
    m->experts = m->experts / k > m->topk ? m->experts / k : m->topk;
    if (m->moe_inter) m->moe_inter = (m->moe_inter / k + 127) / 128 * 128;
    m->vocab /= k;
    m->heads = m->heads / k > 0 ? m->heads / k : 1;
    m->kv_heads = m->kv_heads / k > 0 ? m->kv_heads / k : 1;
    if (m->heads % m->kv_heads) m->kv_heads = 1;
    if (!m->explicit_head_dim) m->head_dim = m->hidden / m->heads;
    if (!strcmp(m->model_type, "gpt_oss")) { /* hidden a multiple of 64 (any group size, mxfp4's 32); one
                                                intermediate_size, the experts' */
        m->hidden = (m->hidden + 63) / 64 * 64;
        m->inter = m->moe_inter;
    }
}

static int random_model(int argc, char **argv) {
    const char *shape_name = NULL, *outdir = NULL, *dtype = NULL, *tokdir = getenv("LMX_TOKENIZER_DIR");
    long gs = 64, seed = 0, threads = 0, layers = -1, scale = 1, shard_bytes = -1, vocab = -1;
    bool sync = false, config_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_random(stdout);
            return 0;
        } else if (!strcmp(a, "--sync")) {
            sync = true;
        } else if (!strcmp(a, "--config-only")) { /* hidden, for tests: config files only */
            config_only = true;
        } else if (a[0] == '-' && a[1] == '-') {
            if (!v) {
                fprintf(stderr, "lmx dev random-model: %s needs a value\n", a);
                return 2;
            }
            bool ok = true;
            if (!strcmp(a, "--dtype")) dtype = v;
            else if (!strcmp(a, "--tokenizer")) tokdir = v;
            else if (!strcmp(a, "--group-size")) ok = lmx_cli_parse_int(v, &gs);
            else if (!strcmp(a, "--seed")) ok = lmx_cli_parse_int(v, &seed) && seed >= 0;
            else if (!strcmp(a, "--threads")) ok = lmx_cli_parse_int(v, &threads) && threads >= 0;
            /* hidden, for tests: fewer layers, all widths divided by K, a vocabulary size, a shard limit */
            else if (!strcmp(a, "--layers")) ok = lmx_cli_parse_int(v, &layers) && layers >= 1;
            else if (!strcmp(a, "--scale-down")) ok = lmx_cli_parse_int(v, &scale) && scale >= 1 && scale <= 64;
            else if (!strcmp(a, "--vocab")) ok = lmx_cli_parse_int(v, &vocab) && vocab >= 1;
            else if (!strcmp(a, "--shard-bytes")) ok = lmx_cli_parse_int(v, &shard_bytes) && shard_bytes >= 1;
            else {
                fprintf(stderr, "lmx dev random-model: unknown option %s\n", a);
                usage_random(stderr);
                return 2;
            }
            if (!ok) {
                fprintf(stderr, "lmx dev random-model: bad value for %s: %s\n", a, v);
                return 2;
            }
            i++;
        } else if (!shape_name) {
            shape_name = a;
        } else if (!outdir) {
            outdir = a;
        } else {
            fprintf(stderr, "lmx dev random-model: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (!shape_name || !outdir || !dtype) {
        usage_random(stderr);
        return 2;
    }
    const shape_t *base = NULL;
    for (size_t i = 0; i < N_SHAPES; i++)
        if (!strcmp(shape_name, SHAPES[i].name)) base = &SHAPES[i];
    if (!base) {
        fprintf(stderr, "lmx dev random-model: unknown shape %s (llama-3-8b, llama-3.2-1b, qwen3-0.6b, "
                "qwen3-30b-a3b, gpt-oss-20b)\n", shape_name);
        return 2;
    }
    const bool gpt_oss = !strcmp(base->model_type, "gpt_oss");
    bool mx_experts = false;
    int bits;
    if (!strcmp(dtype, "bf16")) bits = 0;
    else if (!strcmp(dtype, "mxfp4-q8") && gpt_oss) bits = 8, mx_experts = true;
    else if (!strcmp(dtype, "q8")) bits = 8;
    else if (!strcmp(dtype, "q4")) bits = 4;
    else {
        fprintf(stderr, "lmx dev random-model: --dtype must be bf16, q8 or q4%s\n",
                gpt_oss ? " or mxfp4-q8" : " (mxfp4-q8: gpt-oss-20b only)");
        return 2;
    }
    if (bits && !lmx_mlx_quant_supported(bits, (int)gs)) {
        fprintf(stderr, "lmx dev random-model: --group-size must be 32, 64 or 128\n");
        return 2;
    }
    shape_t m = *base;
    if (layers > 0) m.layers = layers;
    if (scale > 1) scale_down(&m, scale);
    if (vocab > 0) m.vocab = vocab;
    if (m.hidden < 1 || m.inter < 1 || m.vocab < 1) {
        fprintf(stderr, "lmx dev random-model: --scale-down %ld leaves no model\n", scale);
        return 2;
    }

    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        lmx_error(LMX_ERR_IO, "%s: cannot create: %s", outdir, strerror(errno));
        return lmx_cli_fail(LMX_ERR_IO);
    }
    if (!lmx_fs_is_dir(outdir)) {
        lmx_error(LMX_ERR_IO, "%s: not a directory", outdir);
        return lmx_cli_fail(LMX_ERR_IO);
    }
    double t0 = now_s();
    lmx_status s = gpt_oss ? write_config_gpt_oss(outdir, &m, bits, (int)gs, mx_experts)
                           : write_config(outdir, &m, bits, (int)gs);
    if (s == LMX_OK) s = write_atomic(outdir, "generation_config.json", m.gen_config, strlen(m.gen_config));
    if (s != LMX_OK) return lmx_cli_fail(s);
    if (config_only) return 0;
    if (tokdir && *tokdir) {
        int copied = 0;
        s = copy_tokenizer(outdir, tokdir, m.family, &copied);
        if (s != LMX_OK) return lmx_cli_fail(s);
        LMX_LOG_I("copied %d tokenizer files from %s", copied, tokdir);
    } else {
        LMX_LOG_W("no tokenizer copied: pass --tokenizer DIR or set LMX_TOKENIZER_DIR (a folder holding the %s "
                  "tokenizer.json)",
                  m.family);
    }

    lmx_dev_plan p = {0};
    lmx_st_writer *w = NULL;
    s = lmx_st_writer_create(&w);
    if (s == LMX_OK) s = lmx_dev_plan_init(&p, w, 16 + (size_t)m.layers * 40, (uint64_t)seed, bits, (int)gs);
    if (s == LMX_OK) s = lmx_st_writer_set_metadata(p.w, "format", "mlx");
    if (s == LMX_OK) s = gpt_oss ? build_plan_gpt_oss(&p, &m, mx_experts) : build_plan(&p, &m);
    int n_shards = 0;
    progress_t prog = {now_s(), 0, -1};
    if (s == LMX_OK) {
        lmx_st_writer_set_total_parameters(p.w, p.params);
        lmx_st_write_options o = {.threads = (int)threads, .sync = sync};
        if (isatty(STDERR_FILENO)) {
            o.progress = on_progress;
            o.progress_ctx = &prog;
        }
        uint64_t limit = shard_bytes > 0 ? (uint64_t)shard_bytes : LMX_ST_MLX_SHARD_BYTES;
        s = lmx_st_writer_write_model(p.w, outdir, limit, &o, &n_shards);
    }
    uint64_t total = w ? lmx_st_writer_total_bytes(w) : 0;
    size_t count = w ? lmx_st_writer_count(w) : 0;
    lmx_st_writer_destroy(w);
    lmx_dev_plan_free(&p);
    if (s != LMX_OK) return lmx_cli_fail(s);
    remove_stale_shards(outdir, n_shards);
    double el = now_s() - t0;
    printf("wrote %s: %s %s, %zu tensors, %.3f GB in %d file%s, %.2f s (%.0f MB/s)\n", outdir, m.name, dtype, count,
           total / 1e9, n_shards, n_shards == 1 ? "" : "s", el, el > 0 ? total / 1e6 / el : 0.0);
    return 0;
}

int lmx_cli_dev(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: lmx dev <tool> …\n\ntools:\n  random-model     write an MLX model dir with a real "
                   "config and random weights\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "random-model")) return random_model(argc - 1, argv + 1);
    fprintf(stderr, "lmx dev: unknown tool '%s'\n", argv[1]);
    return 2;
}
