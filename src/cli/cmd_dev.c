/* cmd_dev.c — `lmx dev …`: developer tools. `lmx dev random-model SHAPE OUTDIR` writes an MLX model
 * directory with the real config of a known model and deterministic random weights (for benchmarks
 * and load tests): config.json, generation_config.json, the tokenizer files when a tokenizer folder
 * is given, and model*.safetensors + model.safetensors.index.json sharded at 5 GiB like mlx-lm.
 *
 * Weights: element e of tensor T is a function of (seed, T's name, e) only — a counter-based hash
 * turned into an approximately normal value (sum of four 16-bit uniforms, |z| <= 3.46) — so output
 * is identical for any thread count. Linear/embedding weights have std 0.02 (HF initializer_range),
 * norm weights 1 + 0.02 z. Quantized dtypes (q8/q4) first round each row to bf16 (as mlx-lm would
 * quantize a bf16 checkpoint) and quantize it with the MLX affine quantizer; scales/biases are bf16.
 */
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
#include <stdatomic.h>
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
    const char *model_type; /* llama, qwen3 */
    const char *arch;
    int64_t hidden, layers, heads, kv_heads, head_dim, inter, vocab, max_pos;
    bool explicit_head_dim, tied, qk_norm, llama3_rope;
    double rope_theta, eps;
    const char *eos_json;   /* config.json eos_token_id */
    int64_t bos;
    const char *tf_version;
    const char *gen_config; /* generation_config.json */
} shape_t;

static const shape_t SHAPES[] = {
    {"llama-3-8b", "llama3", "llama", "LlamaForCausalLM", 4096, 32, 32, 8, 128, 14336, 128256, 8192, false, false,
     false, false, 500000.0, 1e-5, "128009", 128000, "4.40.0.dev0",
     "{\n    \"bos_token_id\": 128000,\n    \"do_sample\": true,\n    \"eos_token_id\": [\n        128001,\n"
     "        128009\n    ],\n    \"max_length\": 4096,\n    \"temperature\": 0.6,\n    \"top_p\": 0.9,\n"
     "    \"transformers_version\": \"4.40.0.dev0\"\n}\n"},
    /* meta-llama/Meta-Llama-3-70B-Instruct: the tensor-parallel target shape (141 GB in bf16) */
    {"llama-3-70b", "llama3", "llama", "LlamaForCausalLM", 8192, 80, 64, 8, 128, 28672, 128256, 8192, false, false,
     false, false, 500000.0, 1e-5, "128009", 128000, "4.40.0.dev0",
     "{\n    \"bos_token_id\": 128000,\n    \"eos_token_id\": [\n        128001,\n        128009\n    ],\n"
     "    \"transformers_version\": \"4.40.0.dev0\"\n}\n"},
    {"llama-3.2-1b", "llama3", "llama", "LlamaForCausalLM", 2048, 16, 32, 8, 64, 8192, 128256, 131072, true, true,
     false, true, 500000.0, 1e-5, "[128001, 128008, 128009]", 128000, "4.45.0.dev0",
     "{\n    \"bos_token_id\": 128000,\n    \"do_sample\": true,\n    \"eos_token_id\": [\n        128001,\n"
     "        128008,\n        128009\n    ],\n    \"temperature\": 0.6,\n    \"top_p\": 0.9,\n"
     "    \"transformers_version\": \"4.45.0.dev0\"\n}\n"},
    {"qwen3-0.6b", "qwen3", "qwen3", "Qwen3ForCausalLM", 1024, 28, 16, 8, 128, 3072, 151936, 40960, true, true, true,
     false, 1000000.0, 1e-6, "151645", 151643, "4.51.0",
     "{\n    \"bos_token_id\": 151643,\n    \"do_sample\": true,\n    \"eos_token_id\": [\n        151645,\n"
     "        151643\n    ],\n    \"pad_token_id\": 151643,\n    \"temperature\": 0.6,\n    \"top_k\": 20,\n"
     "    \"top_p\": 0.95,\n    \"transformers_version\": \"4.51.0\"\n}\n"},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

/* ---- deterministic values ---- */

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* ~N(0,1): Irwin–Hall sum of four 16-bit uniforms of hash(key, e), standardised. */
static inline float normalish(uint64_t key, uint64_t e) {
    uint64_t x = mix64(key + e * 0x9e3779b97f4a7c15ull);
    uint32_t s = (uint32_t)(x & 0xffff) + (uint32_t)((x >> 16) & 0xffff) + (uint32_t)((x >> 32) & 0xffff) +
                 (uint32_t)(x >> 48);
    return ((float)s - 131070.0f) * (1.0f / 37837.23f);
}

static uint64_t hash_name(const char *s, uint64_t seed) {
    uint64_t h = 0xcbf29ce484222325ull ^ mix64(seed);
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return mix64(h);
}

static inline uint16_t f32_to_bf16_fast(float f) { /* round to nearest even; values here are finite */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

typedef enum { PART_DENSE, PART_QWEIGHT, PART_QSCALES, PART_QBIASES } part_t;

/* Scales and biases of one quantized module, left behind by its .weight fill (which computes them
 * anyway) so the .scales/.biases fills need not regenerate the rows. The writer starts fills in
 * insertion order (weight, scales, biases); a row whose flag is not yet set is simply recomputed. */
typedef struct {
    uint8_t *scales, *biases; /* [rows, cols/gs] bf16 */
    atomic_uchar *ready;      /* [rows] set (release) once the row's entries are stored */
} qcache_t;

typedef struct {
    uint64_t key;
    float mean, std;
    int64_t rows, cols;
    part_t part;
    int bits, gs;
    qcache_t *cache; /* quantized parts: shared by the module's three tensors */
} gen_t;

/* One row of the source matrix, rounded to bf16 precision, into dst[cols] as fp32. */
static void gen_row(const gen_t *g, int64_t r, float *dst) {
    uint64_t e0 = (uint64_t)(r * g->cols);
    for (int64_t c = 0; c < g->cols; c++) {
        float v = g->mean + g->std * normalish(g->key, e0 + (uint64_t)c);
        uint32_t u = (uint32_t)f32_to_bf16_fast(v) << 16;
        memcpy(&dst[c], &u, 4);
    }
}

static lmx_status fill_gen(void *ctx, const char *name, uint64_t offset, void *dst, size_t len) {
    const gen_t *g = ctx;
    if (g->part == PART_DENSE) { /* bf16 elements [offset/2, (offset+len)/2) */
        uint16_t h;
        uint8_t *d = dst;
        uint64_t e = offset / 2;
        for (size_t i = 0; i < len / 2; i++, e++) {
            h = f32_to_bf16_fast(g->mean + g->std * normalish(g->key, e));
            d[2 * i] = (uint8_t)h;
            d[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return LMX_OK;
    }
    size_t pb = lmx_mlx_quant_row_bytes(g->cols, g->bits), sb = (size_t)(g->cols / g->gs) * 2;
    size_t row_bytes = g->part == PART_QWEIGHT ? pb : sb;
    int64_t r0 = (int64_t)(offset / row_bytes), nr = (int64_t)(len / row_bytes);
    float *row = malloc((size_t)g->cols * sizeof *row);
    uint8_t *scratch = malloc(pb + 2 * sb);
    if (!row || !scratch) {
        free(row);
        free(scratch);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
    }
    lmx_status s = LMX_OK;
    uint8_t *d = dst;
    qcache_t *qc = g->cache;
    for (int64_t r = r0; r < r0 + nr && s == LMX_OK; r++, d += row_bytes) {
        if (g->part != PART_QWEIGHT && atomic_load_explicit(&qc->ready[r], memory_order_acquire)) {
            memcpy(d, (g->part == PART_QSCALES ? qc->scales : qc->biases) + (size_t)r * sb, sb);
            continue;
        }
        gen_row(g, r, row);
        uint8_t *packed = g->part == PART_QWEIGHT ? d : scratch;
        uint8_t *scales = g->part == PART_QSCALES ? d : scratch + pb;
        uint8_t *biases = g->part == PART_QBIASES ? d : scratch + pb + sb;
        if (g->part == PART_QWEIGHT) {
            s = lmx_mlx_quantize_row(row, g->cols, g->bits, g->gs, LMX_DTYPE_BF16, packed, scales, biases, LMX_MLX_CPU);
            if (s == LMX_OK) { /* only the weight pass writes the cache: no two writers per row */
                memcpy(qc->scales + (size_t)r * sb, scales, sb);
                memcpy(qc->biases + (size_t)r * sb, biases, sb);
                atomic_store_explicit(&qc->ready[r], 1, memory_order_release);
            }
        } else {
            s = lmx_mlx_quantize_params_row(row, g->cols, g->bits, g->gs, LMX_DTYPE_BF16, scales, biases, LMX_MLX_CPU);
        }
    }
    free(row);
    free(scratch);
    return s;
}

/* ---- the tensor list ---- */

typedef struct {
    lmx_st_writer *w;
    gen_t *gens; /* [cap] stable storage for the fill contexts */
    size_t n, cap;
    qcache_t *caches; /* [cap] one per quantized module */
    size_t n_caches;
    uint64_t seed;
    int bits, gs; /* bits 0: bf16 */
    uint64_t params;
} plan_t;

static lmx_status plan_add(plan_t *p, const char *name, int64_t rows, int64_t cols, float mean, float std,
                           part_t part, lmx_dtype dt, int64_t shape1, uint64_t key) {
    if (p->n == p->cap) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "random-model: tensor table full");
    gen_t *g = &p->gens[p->n++];
    *g = (gen_t){key, mean, std, rows, cols, part, p->bits, p->gs, p->n_caches ? &p->caches[p->n_caches - 1] : NULL};
    int64_t shape[2] = {rows, shape1};
    return lmx_st_writer_add_fill(p->w, name, dt, cols ? 2 : 1, cols ? shape : &rows, fill_gen, g);
}

/* A norm weight [n] in bf16. */
static lmx_status add_norm(plan_t *p, const char *name, int64_t n) {
    p->params += (uint64_t)n;
    int64_t shape[1] = {n};
    if (p->n == p->cap) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "random-model: tensor table full");
    gen_t *g = &p->gens[p->n++];
    *g = (gen_t){hash_name(name, p->seed), 1.0f, 0.02f, 1, n, PART_DENSE, 0, 0, NULL};
    return lmx_st_writer_add_fill(p->w, name, LMX_DTYPE_BF16, 1, shape, fill_gen, g);
}

/* A Linear/Embedding weight [rows, cols] at module path `mod`: bf16, or quantized weight+scales+biases. */
static lmx_status add_matrix(plan_t *p, const char *mod, int64_t rows, int64_t cols) {
    char name[256];
    snprintf(name, sizeof name, "%s.weight", mod);
    uint64_t key = hash_name(name, p->seed);
    p->params += (uint64_t)(rows * cols);
    if (!p->bits) return plan_add(p, name, rows, cols, 0.0f, 0.02f, PART_DENSE, LMX_DTYPE_BF16, cols, key);
    if (cols % p->gs)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: input dimension %lld is not a multiple of group size %d", mod,
                         (long long)cols, p->gs);
    qcache_t *qc = &p->caches[p->n_caches++]; /* cap is the tensor table's: never exceeded first */
    size_t sb = (size_t)(cols / p->gs) * 2;
    qc->scales = malloc((size_t)rows * sb);
    qc->biases = malloc((size_t)rows * sb);
    qc->ready = calloc((size_t)rows, sizeof *qc->ready);
    if (!qc->scales || !qc->biases || !qc->ready)
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory for the scales cache", mod);
    /* insertion order as in MLX's QuantizedLinear: weight, scales, biases */
    lmx_status s = plan_add(p, name, rows, cols, 0.0f, 0.02f, PART_QWEIGHT, LMX_DTYPE_U32, cols * p->bits / 32, key);
    snprintf(name, sizeof name, "%s.scales", mod);
    if (s == LMX_OK) s = plan_add(p, name, rows, cols, 0.0f, 0.02f, PART_QSCALES, LMX_DTYPE_BF16, cols / p->gs, key);
    snprintf(name, sizeof name, "%s.biases", mod);
    if (s == LMX_OK) s = plan_add(p, name, rows, cols, 0.0f, 0.02f, PART_QBIASES, LMX_DTYPE_BF16, cols / p->gs, key);
    return s;
}

static lmx_status build_plan(plan_t *p, const shape_t *m) {
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
        for (int k = 0; k < 7 && s == LMX_OK; k++) {
            snprintf(mod, sizeof mod, "model.layers.%lld.%s", (long long)l, mats[k].n);
            s = add_matrix(p, mod, mats[k].rows, mats[k].cols);
            if (s == LMX_OK && k == 3 && m->qk_norm) {
                snprintf(mod, sizeof mod, "model.layers.%lld.self_attn.q_norm.weight", (long long)l);
                s = add_norm(p, mod, m->head_dim);
                snprintf(mod, sizeof mod, "model.layers.%lld.self_attn.k_norm.weight", (long long)l);
                if (s == LMX_OK) s = add_norm(p, mod, m->head_dim);
            }
        }
        snprintf(mod, sizeof mod, "model.layers.%lld.input_layernorm.weight", (long long)l);
        if (s == LMX_OK) s = add_norm(p, mod, m->hidden);
        snprintf(mod, sizeof mod, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        if (s == LMX_OK) s = add_norm(p, mod, m->hidden);
    }
    if (s == LMX_OK) s = add_norm(p, "model.norm.weight", m->hidden);
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
    if (bits) {
        cJSON_AddItemToObject(c, "quantization", quant_block(bits, gs));
        cJSON_AddItemToObject(c, "quantization_config", quant_block(bits, gs));
    }
    sort_object(c);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    if (!text) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory");
    lmx_status s = write_atomic(dir, "config.json", text, strlen(text));
    cJSON_free(text);
    return s;
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
            "usage: lmx dev random-model SHAPE OUTDIR --dtype bf16|q8|q4 [--group-size 64] [--seed N]\n"
            "                            [--tokenizer DIR] [--threads N] [--sync]\n"
            "  SHAPE: llama-3-8b | llama-3-70b | llama-3.2-1b | qwen3-0.6b (real config.json, random weights)\n"
            "  --tokenizer DIR  folder with tokenizer.json (or DIR/llama3, DIR/qwen3); default $LMX_TOKENIZER_DIR\n"
            "  --threads N      data-generation threads (default: all CPUs)\n"
            "  --sync           fsync every file before renaming it into place\n");
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
        fprintf(stderr, "lmx dev random-model: unknown shape %s (llama-3-8b, llama-3.2-1b, qwen3-0.6b)\n", shape_name);
        return 2;
    }
    int bits;
    if (!strcmp(dtype, "bf16")) bits = 0;
    else if (!strcmp(dtype, "q8")) bits = 8;
    else if (!strcmp(dtype, "q4")) bits = 4;
    else {
        fprintf(stderr, "lmx dev random-model: --dtype must be bf16, q8 or q4\n");
        return 2;
    }
    if (bits && !lmx_mlx_quant_supported(bits, (int)gs)) {
        fprintf(stderr, "lmx dev random-model: --group-size must be 32, 64 or 128\n");
        return 2;
    }
    shape_t m = *base;
    if (layers > 0) m.layers = layers;
    if (scale > 1) {
        m.hidden /= scale;
        m.inter /= scale;
        m.vocab /= scale;
        m.heads = m.heads / scale > 0 ? m.heads / scale : 1;
        m.kv_heads = m.kv_heads / scale > 0 ? m.kv_heads / scale : 1;
        if (m.heads % m.kv_heads) m.kv_heads = 1;
        if (!m.explicit_head_dim) m.head_dim = m.hidden / m.heads;
    }
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
    lmx_status s = write_config(outdir, &m, bits, (int)gs);
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

    plan_t p = {0};
    p.cap = 16 + (size_t)m.layers * 40;
    p.gens = calloc(p.cap, sizeof *p.gens);
    p.caches = calloc(p.cap, sizeof *p.caches);
    p.seed = (uint64_t)seed;
    p.bits = bits;
    p.gs = (int)gs;
    if (!p.gens || !p.caches) {
        free(p.gens);
        free(p.caches);
        return lmx_cli_fail(lmx_error(LMX_ERR_OUT_OF_MEMORY, "out of memory"));
    }
    s = lmx_st_writer_create(&p.w);
    if (s == LMX_OK) s = lmx_st_writer_set_metadata(p.w, "format", "mlx");
    if (s == LMX_OK) s = build_plan(&p, &m);
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
    uint64_t total = lmx_st_writer_total_bytes(p.w);
    size_t count = lmx_st_writer_count(p.w);
    lmx_st_writer_destroy(p.w);
    for (size_t i = 0; i < p.n_caches; i++) {
        free(p.caches[i].scales);
        free(p.caches[i].biases);
        free(p.caches[i].ready);
    }
    free(p.caches);
    free(p.gens);
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
