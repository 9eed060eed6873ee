/* test_random_model.c — `lmx dev random-model`: the real configs of each SHAPE (--config-only), and
 * for each SHAPE × dtype a scaled-down model (--layers 2 --scale-down K) that must load with
 * lmx_weights_open and hold exactly the expected MLX tensor names, shapes and dtypes; plus
 * determinism across thread counts, seeds, sharding, value statistics and the tokenizer copy; gpt-oss-20b's
 * config and its MXFP4-Q8 mix, scaled down, which must also run (lmx bench on the CPU). */
#include "formats/mlx_mx.h"
#include "formats/mlx_quant.h"
#include "formats/safetensors.h"
#include "lmx_test.h"
#include "lmx_test_cmd.h"
#include "util/fs.h"
#include "util/json.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[256];

static int run(const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "LMX_TOKENIZER_DIR= LMX_LOG=error '%s' dev random-model %s >/dev/null", LMX_CLI_PATH, args);
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static cJSON *read_json(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = NULL;
    size_t len = 0;
    if (lmx_fs_read_file(path, 1 << 26, &text, &len) != LMX_OK) return NULL;
    cJSON *j = lmx_json_parse(text, len, NULL);
    free(text);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

static void rm_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- the real configs ---- */

static void test_real_configs(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cfg", g_tmp);
    CHECK_EQ_INT(run("llama-3-8b"), 2); /* usage error: no OUTDIR */
    char args[1024];
    snprintf(args, sizeof args, "llama-3-8b %s --dtype bf16 --config-only", dir);
    CHECK_EQ_INT(run(args), 0);
    cJSON *c = read_json(dir, "config.json");
    CHECK(c != NULL);
    CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(c, "model_type")->valuestring, "llama");
    CHECK_EQ_INT(num(c, "hidden_size"), 4096);
    CHECK_EQ_INT(num(c, "num_hidden_layers"), 32);
    CHECK_EQ_INT(num(c, "num_attention_heads"), 32);
    CHECK_EQ_INT(num(c, "num_key_value_heads"), 8);
    CHECK_EQ_INT(num(c, "intermediate_size"), 14336);
    CHECK_EQ_INT(num(c, "vocab_size"), 128256);
    CHECK_EQ_INT(num(c, "rope_theta"), 500000);
    CHECK_NEAR(num(c, "rms_norm_eps"), 1e-5, 1e-12);
    CHECK_EQ_INT(num(c, "max_position_embeddings"), 8192);
    CHECK_EQ_INT(num(c, "bos_token_id"), 128000);
    CHECK_EQ_INT(num(c, "eos_token_id"), 128009);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "rope_scaling")));
    CHECK(!cJSON_GetObjectItemCaseSensitive(c, "quantization"));
    /* mlx-lm's save_config sorts the keys */
    const char *prev = "";
    for (const cJSON *e = c ? c->child : NULL; e; e = e->next) {
        CHECK(strcmp(prev, e->string) < 0);
        prev = e->string;
    }
    cJSON_Delete(c);
    c = read_json(dir, "generation_config.json");
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(c, "eos_token_id");
    CHECK(cJSON_GetArraySize(eos) == 2 && cJSON_GetArrayItem(eos, 0)->valueint == 128001 &&
          cJSON_GetArrayItem(eos, 1)->valueint == 128009);
    cJSON_Delete(c);

    snprintf(args, sizeof args, "llama-3.2-1b %s --dtype q8 --group-size 32 --config-only", dir);
    CHECK_EQ_INT(run(args), 0);
    c = read_json(dir, "config.json");
    CHECK_EQ_INT(num(c, "hidden_size"), 2048);
    CHECK_EQ_INT(num(c, "num_hidden_layers"), 16);
    CHECK_EQ_INT(num(c, "num_attention_heads"), 32);
    CHECK_EQ_INT(num(c, "num_key_value_heads"), 8);
    CHECK_EQ_INT(num(c, "head_dim"), 64);
    CHECK_EQ_INT(num(c, "intermediate_size"), 8192);
    CHECK_EQ_INT(num(c, "vocab_size"), 128256);
    CHECK_EQ_INT(num(c, "max_position_embeddings"), 131072);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings")));
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c, "rope_scaling");
    CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(rs, "rope_type")->valuestring, "llama3");
    CHECK_EQ_INT(num(rs, "factor"), 32);
    CHECK_EQ_INT(num(rs, "low_freq_factor"), 1);
    CHECK_EQ_INT(num(rs, "high_freq_factor"), 4);
    CHECK_EQ_INT(num(rs, "original_max_position_embeddings"), 8192);
    for (int k = 0; k < 2; k++) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(c, k ? "quantization_config" : "quantization");
        CHECK_EQ_INT(num(q, "bits"), 8);
        CHECK_EQ_INT(num(q, "group_size"), 32);
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(q, "mode")->valuestring, "affine");
    }
    cJSON_Delete(c);

    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype q4 --config-only", dir);
    CHECK_EQ_INT(run(args), 0);
    c = read_json(dir, "config.json");
    CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(c, "model_type")->valuestring, "qwen3");
    CHECK_EQ_INT(num(c, "hidden_size"), 1024);
    CHECK_EQ_INT(num(c, "num_hidden_layers"), 28);
    CHECK_EQ_INT(num(c, "num_attention_heads"), 16);
    CHECK_EQ_INT(num(c, "num_key_value_heads"), 8);
    CHECK_EQ_INT(num(c, "head_dim"), 128);
    CHECK_EQ_INT(num(c, "intermediate_size"), 3072);
    CHECK_EQ_INT(num(c, "vocab_size"), 151936);
    CHECK_EQ_INT(num(c, "rope_theta"), 1000000);
    CHECK_NEAR(num(c, "rms_norm_eps"), 1e-6, 1e-13);
    CHECK_EQ_INT(num(c, "eos_token_id"), 151645);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings")));
    CHECK_EQ_INT(num(cJSON_GetObjectItemCaseSensitive(c, "quantization"), "bits"), 4);
    CHECK_EQ_INT(num(cJSON_GetObjectItemCaseSensitive(c, "quantization"), "group_size"), 64);
    cJSON_Delete(c);

    /* bad invocations */
    snprintf(args, sizeof args, "gpt-2 %s --dtype bf16", dir);
    CHECK_EQ_INT(run(args), 2);
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype q3", dir);
    CHECK_EQ_INT(run(args), 2);
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype q4 --group-size 48", dir);
    CHECK_EQ_INT(run(args), 2);
    snprintf(args, sizeof args, "qwen3-0.6b %s/no/such/dir --dtype bf16", dir);
    CHECK_EQ_INT(run(args), 1);
    rm_tree(dir);
}

/* ---- scaled-down models: exact tensor inventory ---- */

typedef struct {
    const char *shape;
    int scale;
    int64_t hidden, heads, kv, hd, inter, vocab;
    bool tied, qk_norm;
} expect_t;

static const expect_t EXPECT[3] = {
    {"llama-3-8b", 16, 256, 2, 1, 128, 896, 3000, false, false},
    {"llama-3.2-1b", 8, 256, 4, 1, 64, 1024, 3000, true, false},
    {"qwen3-0.6b", 8, 128, 2, 1, 128, 384, 3000, true, true},
};

static int n_seen;

/* Checks one module's tensors; bits 0 = bf16 weight. */
static void check_matrix(const lmx_weights *w, const char *mod, int64_t rows, int64_t cols, int bits, int gs) {
    char name[256];
    snprintf(name, sizeof name, "%s.weight", mod);
    const lmx_tensor_view *v = lmx_weights_find(w, name);
    CHECK_MSG(v != NULL, "missing %s", name);
    if (!v) return;
    n_seen++;
    if (!bits) {
        CHECK_MSG(v->dtype == LMX_DTYPE_BF16 && v->ndim == 2 && v->shape[0] == rows && v->shape[1] == cols,
                  "%s: %s [%lld, %lld]", name, lmx_dtype_name(v->dtype), (long long)v->shape[0], (long long)v->shape[1]);
        return;
    }
    CHECK_MSG(v->dtype == LMX_DTYPE_U32 && v->ndim == 2 && v->shape[0] == rows && v->shape[1] == cols * bits / 32,
              "%s: %s [%lld, %lld]", name, lmx_dtype_name(v->dtype), (long long)v->shape[0], (long long)v->shape[1]);
    const char *parts[2] = {"scales", "biases"};
    for (int k = 0; k < 2; k++) {
        snprintf(name, sizeof name, "%s.%s", mod, parts[k]);
        const lmx_tensor_view *s = lmx_weights_find(w, name);
        CHECK_MSG(s && s->dtype == LMX_DTYPE_BF16 && s->ndim == 2 && s->shape[0] == rows && s->shape[1] == cols / gs,
                  "%s wrong or missing", name);
        n_seen += s != NULL;
    }
}

static void check_norm(const lmx_weights *w, const char *name, int64_t n) {
    const lmx_tensor_view *v = lmx_weights_find(w, name);
    CHECK_MSG(v && v->dtype == LMX_DTYPE_BF16 && v->ndim == 1 && v->shape[0] == n, "%s wrong or missing", name);
    if (!v) return;
    n_seen++;
    float x[8];
    CHECK_EQ_INT(lmx_tensor_to_f32(v, 0, 8, x), LMX_OK);
    for (int i = 0; i < 8; i++) CHECK(x[i] > 0.9f && x[i] < 1.1f);
}

static void check_inventory(const char *dir, const expect_t *e, int bits, int gs, int layers) {
    lmx_weights *w = NULL;
    CHECK_EQ_INT(lmx_weights_open(dir, true, &w), LMX_OK);
    if (!w) return;
    n_seen = 0;
    char mod[256];
    check_matrix(w, "model.embed_tokens", e->vocab, e->hidden, bits, gs);
    for (int l = 0; l < layers; l++) {
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.q_proj", l);
        check_matrix(w, mod, e->heads * e->hd, e->hidden, bits, gs);
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.k_proj", l);
        check_matrix(w, mod, e->kv * e->hd, e->hidden, bits, gs);
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.v_proj", l);
        check_matrix(w, mod, e->kv * e->hd, e->hidden, bits, gs);
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.o_proj", l);
        check_matrix(w, mod, e->hidden, e->heads * e->hd, bits, gs);
        snprintf(mod, sizeof mod, "model.layers.%d.mlp.gate_proj", l);
        check_matrix(w, mod, e->inter, e->hidden, bits, gs);
        snprintf(mod, sizeof mod, "model.layers.%d.mlp.up_proj", l);
        check_matrix(w, mod, e->inter, e->hidden, bits, gs);
        snprintf(mod, sizeof mod, "model.layers.%d.mlp.down_proj", l);
        check_matrix(w, mod, e->hidden, e->inter, bits, gs);
        snprintf(mod, sizeof mod, "model.layers.%d.input_layernorm.weight", l);
        check_norm(w, mod, e->hidden);
        snprintf(mod, sizeof mod, "model.layers.%d.post_attention_layernorm.weight", l);
        check_norm(w, mod, e->hidden);
        if (e->qk_norm) {
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.q_norm.weight", l);
            check_norm(w, mod, e->hd);
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.k_norm.weight", l);
            check_norm(w, mod, e->hd);
        }
    }
    check_norm(w, "model.norm.weight", e->hidden);
    if (!e->tied) check_matrix(w, "lm_head", e->vocab, e->hidden, bits, gs);
    else CHECK(lmx_weights_find(w, "lm_head.weight") == NULL);
    CHECK_MSG((int)lmx_weights_count(w) == n_seen, "%s: %zu tensors, expected %d", e->shape, lmx_weights_count(w), n_seen);

    /* values: weights ~ N(0, 0.02) (dequantized for q8/q4), checked on a row of q_proj */
    const lmx_tensor_view *qw = lmx_weights_find(w, "model.layers.0.self_attn.q_proj.weight");
    int64_t cols = e->hidden;
    float *row = malloc((size_t)cols * sizeof *row);
    if (qw && row) {
        if (bits) {
            const lmx_tensor_view *s = lmx_weights_find(w, "model.layers.0.self_attn.q_proj.scales");
            const lmx_tensor_view *b = lmx_weights_find(w, "model.layers.0.self_attn.q_proj.biases");
            CHECK_EQ_INT(lmx_mlx_dequantize_view(qw, s, b, bits, gs, 1, 0, cols, row), LMX_OK);
        } else {
            CHECK_EQ_INT(lmx_tensor_to_f32(qw, cols, cols, row), LMX_OK);
        }
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < cols; i++) sum += row[i], sq += (double)row[i] * row[i];
        double mean = sum / cols, sd = sqrt(sq / cols - mean * mean);
        CHECK_MSG(fabs(mean) < 0.006 && sd > 0.016 && sd < 0.024, "%s bits %d: mean %.4f sd %.4f", e->shape, bits,
                  mean, sd);
    }
    free(row);
    /* the index agrees with the files */
    cJSON *idx = read_json(dir, "model.safetensors.index.json");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(idx, "metadata");
    CHECK_EQ_INT(num(md, "total_size"), lmx_weights_total_bytes(w));
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(idx, "weight_map")), n_seen);
    cJSON_Delete(idx);
    lmx_weights_close(w);
}

static void test_inventories(void) {
    static const char *dtypes[3] = {"bf16", "q8", "q4"};
    for (int s = 0; s < 3; s++) {
        for (int d = 0; d < 3; d++) {
            char dir[512], args[1024];
            snprintf(dir, sizeof dir, "%s/%s-%s", g_tmp, EXPECT[s].shape, dtypes[d]);
            int gs = d == 1 ? 32 : 64;
            snprintf(args, sizeof args, "%s %s --dtype %s --group-size %d --seed 7 --layers 2 --scale-down %d --vocab 3000 --threads 2",
                     EXPECT[s].shape, dir, dtypes[d], gs, EXPECT[s].scale);
            CHECK_EQ_INT(run(args), 0);
            cJSON *c = read_json(dir, "config.json");
            CHECK_EQ_INT(num(c, "hidden_size"), EXPECT[s].hidden);
            CHECK_EQ_INT(num(c, "num_hidden_layers"), 2);
            CHECK_EQ_INT(num(c, "vocab_size"), EXPECT[s].vocab);
            CHECK_EQ_INT(num(c, "num_key_value_heads"), EXPECT[s].kv);
            cJSON_Delete(c);
            check_inventory(dir, &EXPECT[s], d == 0 ? 0 : (d == 1 ? 8 : 4), gs, 2);
        }
    }
}

/* ---- determinism, sharding, tokenizer ---- */

static bool same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t lx = 0, ly = 0;
    bool ok = lmx_fs_read_file(a, 1 << 28, &x, &lx) == LMX_OK && lmx_fs_read_file(b, 1 << 28, &y, &ly) == LMX_OK &&
              lx == ly && memcmp(x, y, lx) == 0;
    free(x);
    free(y);
    return ok;
}

static void test_determinism_and_shards(void) {
    char a[300], b[300], c[300], args[2048], fa[400], fb[400];
    snprintf(a, sizeof a, "%s/det-a", g_tmp);
    snprintf(b, sizeof b, "%s/det-b", g_tmp);
    snprintf(c, sizeof c, "%s/det-c", g_tmp);
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype q4 --seed 11 --layers 1 --scale-down 8 --threads 1", a);
    CHECK_EQ_INT(run(args), 0);
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype q4 --seed 11 --layers 1 --scale-down 8 --threads 3", b);
    CHECK_EQ_INT(run(args), 0);
    snprintf(fa, sizeof fa, "%s/model.safetensors", a);
    snprintf(fb, sizeof fb, "%s/model.safetensors", b);
    CHECK(same_file(fa, fb)); /* thread count does not change a byte */
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype q4 --seed 12 --layers 1 --scale-down 8", b);
    CHECK_EQ_INT(run(args), 0);
    CHECK(!same_file(fa, fb)); /* the seed does */
    /* sharding: a 300 kB limit splits the 5.4 MB bf16 model in 3; the shards load as one weight set */
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype bf16 --layers 1 --scale-down 8 --shard-bytes 300000", c);
    CHECK_EQ_INT(run(args), 0);
    lmx_weights *w = NULL;
    CHECK_EQ_INT(lmx_weights_open(c, true, &w), LMX_OK);
    if (w) {
        CHECK_EQ_INT(lmx_weights_file_count(w), 3); /* [embed 4.9 MB] [q k v o q_norm k_norm gate] [down up norms] */
        CHECK(strstr(lmx_weights_file_path(w, 0), "model-00001-of-0000") != NULL);
        lmx_weights_close(w);
    }
    /* rewriting the same folder unsharded removes the old shards (mlx-lm globs model*.safetensors) */
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype q4 --layers 1 --scale-down 8", c);
    CHECK_EQ_INT(run(args), 0);
    snprintf(fa, sizeof fa, "%s/model-00001-of-00003.safetensors", c);
    CHECK(!lmx_fs_is_file(fa));
    snprintf(fa, sizeof fa, "%s/model.safetensors", c);
    CHECK(lmx_fs_is_file(fa));
    /* the tokenizer: copied from a folder holding <family>/tokenizer.json */
    char tar[1024], tokdir[300];
    snprintf(tar, sizeof tar, "%s/qwen3.tar.xz", LMX_TOK_ARCHIVES);
    if (!lmx_fs_is_file(tar)) {
        SKIP("no %s: tokenizer copy not tested", tar);
        return;
    }
    snprintf(tokdir, sizeof tokdir, "%s/tok", g_tmp);
    mkdir(tokdir, 0755);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "tar -xJf '%s' -C '%s'", tar, tokdir);
    if (system(cmd) != 0) {
        SKIP("cannot unpack %s", tar);
        return;
    }
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype bf16 --layers 1 --scale-down 8 --tokenizer %s --config-only", c,
             tokdir);
    CHECK_EQ_INT(run(args), 0); /* --config-only copies nothing */
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype bf16 --layers 1 --scale-down 8 --tokenizer %s", c, tokdir);
    CHECK_EQ_INT(run(args), 0);
    snprintf(fa, sizeof fa, "%s/tokenizer.json", c);
    snprintf(fb, sizeof fb, "%s/qwen3/tokenizer.json", tokdir);
    CHECK(same_file(fa, fb));
    snprintf(fa, sizeof fa, "%s/tokenizer_config.json", c);
    CHECK(lmx_fs_is_file(fa));
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype bf16 --layers 1 --scale-down 8 --tokenizer %s/nothing", c,
             tokdir);
    CHECK_EQ_INT(run(args), 1); /* an explicit tokenizer folder without one is an error */
}

/* ---- gpt-oss-20b: the real config, mlx-community's MXFP4-Q8 mix, a scaled model that runs ---- */

static const cJSON *item(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

/* one tensor of dtype dt and shape {a, b, c} (c or b and c 0: fewer dimensions) */
static void check_tensor(const lmx_weights *w, const char *name, lmx_dtype dt, int64_t a, int64_t b, int64_t c) {
    const lmx_tensor_view *v = lmx_weights_find(w, name);
    const int nd = c ? 3 : b ? 2 : 1;
    const int64_t want[3] = {a, b, c};
    bool ok = v && v->dtype == dt && v->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = v->shape[i] == want[i];
    CHECK_MSG(ok, "%s: wrong or missing (want %s [%lld, %lld, %lld])", name, lmx_dtype_name(dt), (long long)a,
              (long long)b, (long long)c);
    n_seen += v != NULL;
}

/* gpt-oss-20b's real config, its MXFP4-Q8 and q4 quantization blocks */
static void test_gpt_oss_config(void) {
    char dir[512], args[1024];
    snprintf(dir, sizeof dir, "%s/oss-cfg", g_tmp);
    snprintf(args, sizeof args, "gpt-oss-20b %s --dtype mxfp4-q8 --config-only", dir);
    CHECK_EQ_INT(run(args), 0);
    cJSON *c = read_json(dir, "config.json");
    CHECK(c != NULL);
    CHECK_EQ_STR(item(c, "model_type")->valuestring, "gpt_oss");
    CHECK_EQ_STR(cJSON_GetArrayItem(item(c, "architectures"), 0)->valuestring, "GptOssForCausalLM");
    CHECK_EQ_INT(num(c, "hidden_size"), 2880);
    CHECK_EQ_INT(num(c, "intermediate_size"), 2880);
    CHECK_EQ_INT(num(c, "num_hidden_layers"), 24);
    CHECK_EQ_INT(num(c, "num_attention_heads"), 64);
    CHECK_EQ_INT(num(c, "num_key_value_heads"), 8);
    CHECK_EQ_INT(num(c, "head_dim"), 64);
    CHECK_EQ_INT(num(c, "num_local_experts"), 32);
    CHECK_EQ_INT(num(c, "num_experts_per_tok"), 4);
    CHECK_EQ_INT(num(c, "experts_per_token"), 4);
    CHECK_EQ_INT(num(c, "vocab_size"), 201088);
    CHECK_EQ_INT(num(c, "max_position_embeddings"), 131072);
    CHECK_EQ_INT(num(c, "sliding_window"), 128);
    CHECK_EQ_INT(num(c, "rope_theta"), 150000);
    CHECK_NEAR(num(c, "rms_norm_eps"), 1e-5, 1e-12);
    CHECK_NEAR(num(c, "swiglu_limit"), 7.0, 0);
    CHECK_EQ_INT(num(c, "eos_token_id"), 200002);
    CHECK(cJSON_IsTrue(item(c, "attention_bias")));
    CHECK(cJSON_IsFalse(item(c, "tie_word_embeddings")));
    const cJSON *lt = item(c, "layer_types");
    CHECK_EQ_INT(cJSON_GetArraySize(lt), 24);
    for (int l = 0; l < cJSON_GetArraySize(lt); l++)
        CHECK_EQ_STR(cJSON_GetArrayItem(lt, l)->valuestring, l % 2 ? "full_attention" : "sliding_attention");
    const cJSON *rs = item(c, "rope_scaling");
    CHECK_EQ_STR(item(rs, "rope_type")->valuestring, "yarn");
    CHECK_EQ_INT(num(rs, "factor"), 32);
    CHECK_EQ_INT(num(rs, "beta_fast"), 32);
    CHECK_EQ_INT(num(rs, "beta_slow"), 1);
    CHECK_EQ_INT(num(rs, "original_max_position_embeddings"), 4096);
    CHECK(cJSON_IsFalse(item(rs, "truncate")));
    for (int k = 0; k < 2; k++) { /* experts mxfp4 (global), everything else 8-bit affine g64 */
        const cJSON *q = item(c, k ? "quantization_config" : "quantization");
        CHECK_EQ_INT(num(q, "bits"), 4);
        CHECK_EQ_INT(num(q, "group_size"), 32);
        CHECK_EQ_STR(item(q, "mode")->valuestring, "mxfp4");
        CHECK(!item(q, "quant_method")); /* not the original checkpoint's block */
        static const char *const q8[] = {"model.embed_tokens", "lm_head", "model.layers.0.mlp.router",
                                         "model.layers.23.mlp.router", "model.layers.0.self_attn.q_proj",
                                         "model.layers.23.self_attn.o_proj"};
        for (size_t i = 0; i < sizeof q8 / sizeof q8[0]; i++) {
            CHECK_EQ_INT(num(item(q, q8[i]), "bits"), 8);
            CHECK_EQ_INT(num(item(q, q8[i]), "group_size"), 64);
        }
        CHECK(!item(q, "model.layers.0.mlp.experts.gate_proj"));
        CHECK_EQ_INT(cJSON_GetArraySize(q), 3 + 2 + 24 * 5);
    }
    const char *prev = "";
    for (const cJSON *e = c ? c->child : NULL; e; e = e->next) {
        CHECK(strcmp(prev, e->string) < 0);
        prev = e->string;
    }
    cJSON_Delete(c);
    c = read_json(dir, "generation_config.json");
    const cJSON *eos = item(c, "eos_token_id");
    CHECK(cJSON_GetArraySize(eos) == 2 && cJSON_GetArrayItem(eos, 0)->valueint == 200002 &&
          cJSON_GetArrayItem(eos, 1)->valueint == 199999);
    CHECK_EQ_INT(num(c, "bos_token_id"), 199998);
    cJSON_Delete(c);
    /* q4: everything affine at 4 bits but the routers (8) */
    snprintf(args, sizeof args, "gpt-oss-20b %s --dtype q4 --config-only", dir);
    CHECK_EQ_INT(run(args), 0);
    c = read_json(dir, "config.json");
    const cJSON *q = item(c, "quantization");
    CHECK_EQ_INT(num(q, "bits"), 4);
    CHECK_EQ_STR(item(q, "mode")->valuestring, "affine");
    CHECK_EQ_INT(num(item(q, "model.layers.5.mlp.router"), "bits"), 8);
    CHECK(!item(q, "lm_head"));
    CHECK_EQ_INT(cJSON_GetArraySize(q), 3 + 24);
    cJSON_Delete(c);
    snprintf(args, sizeof args, "qwen3-0.6b %s --dtype mxfp4-q8 --config-only", dir);
    CHECK_EQ_INT(run(args), 2); /* the mix is gpt-oss's */
}

/* `lmx info` and `lmx bench` of the scaled-down MXFP4-Q8 model name the mix: 8-bit affine g64 for
 * embed_tokens and lm_head (2 × 3000 × 64), q/k/v/o (4 × 64 × 64) and the router (4 × 64) of 2 layers
 * = 417280 parameters, mxfp4 for the experts (2 layers × 3 × 4 × 128 × 64) = 196608: 68 % / 32 % */
static void check_mix_label(const char *dir) {
    static const char *const want = "q8 g64 68% + mxfp4 32%";
    char cmd[2048];
    int status = -1;
    snprintf(cmd, sizeof cmd, "LMX_LOG=error '%s' info '%s'", LMX_CLI_PATH, dir);
    char *out = lmx_test_cmd(cmd, &status);
    CHECK_EQ_INT(status, 0);
    CHECK_MSG(out && strstr(out, "\nquantization q8 g64 68% + mxfp4 32%\n"), "lmx info: %s", out ? out : "(none)");
    free(out);
    snprintf(cmd, sizeof cmd, "LMX_LOG=error '%s' bench '%s' --device cpu --prompt 20 --gen 4 --reps 1 --threads 2 --json",
             LMX_CLI_PATH, dir);
    out = lmx_test_cmd(cmd, &status); /* it loads and runs: prefill and greedy decode on the CPU (the math:
                                         tests/model/test_gpt_oss) */
    CHECK_EQ_INT(status, 0);
    cJSON *j = out ? lmx_json_parse(out, strlen(out), NULL) : NULL;
    const cJSON *mo = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(mo, "quantization");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(mo, "dtype");
    CHECK_MSG(cJSON_IsString(q) && !strcmp(q->valuestring, want), "lmx bench: %s", out ? out : "(none)");
    CHECK(cJSON_IsString(dt) && !strcmp(dt->valuestring, "q8")); /* the format holding the most parameters */
    cJSON_Delete(j);
    free(out);
}

/* gpt-oss-20b's MXFP4-Q8 mix scaled down: hidden 64, one head of 64 (kv 1), 4 experts of 128, top-4 */
static void test_gpt_oss_model(void) {
    char dir[512], args[1024];
    snprintf(dir, sizeof dir, "%s/oss-mx", g_tmp);
    snprintf(args, sizeof args, "gpt-oss-20b %s --dtype mxfp4-q8 --seed 3 --layers 2 --scale-down 45 --vocab 3000", dir);
    CHECK_EQ_INT(run(args), 0);
    lmx_weights *w = NULL;
    CHECK_EQ_INT(lmx_weights_open(dir, true, &w), LMX_OK);
    if (!w) return;
    const int64_t H = 64, E = 4, I = 128, D = 64;
    n_seen = 0;
    char mod[256], name[300];
    check_matrix(w, "model.embed_tokens", 3000, H, 8, 64);
    check_matrix(w, "lm_head", 3000, H, 8, 64);
    check_norm(w, "model.norm.weight", H);
    for (int l = 0; l < 2; l++) {
        static const char *const attn[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        for (int k = 0; k < 4; k++) {
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.%s", l, attn[k]);
            check_matrix(w, mod, k == 3 ? H : D, k == 3 ? D : H, 8, 64);
            snprintf(name, sizeof name, "%s.bias", mod);
            check_tensor(w, name, LMX_DTYPE_BF16, k == 3 ? H : D, 0, 0);
        }
        snprintf(name, sizeof name, "model.layers.%d.self_attn.sinks", l);
        check_tensor(w, name, LMX_DTYPE_BF16, 1, 0, 0);
        snprintf(mod, sizeof mod, "model.layers.%d.mlp.router", l);
        check_matrix(w, mod, E, H, 8, 64);
        snprintf(name, sizeof name, "%s.bias", mod);
        check_tensor(w, name, LMX_DTYPE_BF16, E, 0, 0);
        static const char *const ex[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int k = 0; k < 3; k++) {
            const int64_t rows = k == 2 ? H : I, cols = k == 2 ? I : H;
            snprintf(mod, sizeof mod, "model.layers.%d.mlp.experts.%s", l, ex[k]);
            snprintf(name, sizeof name, "%s.weight", mod);
            check_tensor(w, name, LMX_DTYPE_U32, E, rows, cols * 4 / 32);
            snprintf(name, sizeof name, "%s.scales", mod);
            check_tensor(w, name, LMX_DTYPE_U8, E, rows, cols / 32);
            snprintf(name, sizeof name, "%s.biases", mod);
            CHECK(lmx_weights_find(w, name) == NULL);
            snprintf(name, sizeof name, "%s.bias", mod);
            check_tensor(w, name, LMX_DTYPE_BF16, E, rows, 0);
        }
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        check_norm(w, name, H);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        check_norm(w, name, H);
    }
    CHECK_MSG((int)lmx_weights_count(w) == n_seen, "gpt-oss: %zu tensors, expected %d", lmx_weights_count(w), n_seen);
    /* the mxfp4 experts dequantize to ~N(0, 0.02): the last expert's down_proj, all its rows */
    const lmx_tensor_view *dw = lmx_weights_find(w, "model.layers.1.mlp.experts.down_proj.weight");
    const lmx_tensor_view *ds = lmx_weights_find(w, "model.layers.1.mlp.experts.down_proj.scales");
    if (dw && ds) {
        double sum = 0, sq = 0;
        for (int64_t r = 0; r < H; r++) {
            float row[128];
            const int64_t er = (E - 1) * H + r;
            CHECK_EQ_INT(lmx_mx_dequantize_row((const uint8_t *)dw->data + er * I / 2,
                                               (const uint8_t *)ds->data + er * I / 32, LMX_QUANT_MXFP4, 0, I, row),
                         LMX_OK);
            for (int64_t i = 0; i < I; i++) sum += row[i], sq += (double)row[i] * row[i];
        }
        const double n = (double)H * I, mean = sum / n, sd = sqrt(sq / n - mean * mean);
        CHECK_MSG(fabs(mean) < 0.002 && sd > 0.017 && sd < 0.023, "mxfp4 experts: mean %.4f sd %.4f", mean, sd);
    }
    lmx_weights_close(w);
    check_mix_label(dir);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/lmx_rm_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    RUN(test_real_configs);
    RUN(test_inventories);
    RUN(test_determinism_and_shards);
    RUN(test_gpt_oss_config);
    RUN(test_gpt_oss_model);
    rm_tree(g_tmp);
    return lmx_test_summary();
}
