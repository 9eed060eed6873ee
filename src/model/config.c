/* config.c — config.json parsing for the supported families (see config.h). */
#include "model/config.h"
#include "model/config_parse.h"
#include "model/eos.h"
#include "model/facts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"

#define CONFIG_MAX_BYTES (64u << 20)

const char *lmx_arch_name(lmx_arch a) {
    switch (a) {
    case LMX_ARCH_LLAMA: return "llama";
    case LMX_ARCH_QWEN2: return "qwen2";
    case LMX_ARCH_QWEN3: return "qwen3";
    case LMX_ARCH_GEMMA3: return "gemma3";
    case LMX_ARCH_PHI3: return "phi3";
    }
    return "?";
}

/* ---- eos / bos ---- */

static lmx_status parse_ids(const parse_ctx *pc, const cJSON *v, const char *key, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (is_absent(v)) return LMX_OK;
    int cnt = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    if (cnt == 0) return LMX_OK;
    int32_t *a = malloc((size_t)cnt * sizeof *a);
    if (!a) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: %s", pc->label, key);
    int k = 0;
    const cJSON *e;
    if (cJSON_IsArray(v)) {
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX ||
                e->valuedouble != floor(e->valuedouble)) {
                free(a);
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"%s\" must hold token ids", pc->label, key);
            }
            a[k++] = (int32_t)e->valuedouble;
        }
    } else if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= INT32_MAX &&
               v->valuedouble == floor(v->valuedouble)) {
        a[k++] = (int32_t)v->valuedouble;
    } else {
        free(a);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"%s\" must be a token id or a list of ids", pc->label,
                         key);
    }
    *ids = a;
    *n = k;
    return LMX_OK;
}

/* ---- the main parser ---- */

/* what the family-specific defaults below depend on, from model_type */
typedef struct family {
    bool gemma;   /* gemma3 / gemma3_text */
    bool mistral; /* mistral, mixtral (mixtral: mistral attention) */
    bool oss;     /* gpt_oss */
} family;

/* model_type → c->arch (and c->text_config); *text: the text config (gemma3's text_config, else root) */
static lmx_status parse_family(const parse_ctx *pc, const cJSON *root, lmx_model_config *c, const cJSON **text,
                               family *f) {
    if (!cJSON_IsObject(root))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: the top level must be a JSON object", pc->label);
    const char *mt = get_str(root, "model_type");
    if (!mt) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"model_type\" is missing", pc->label);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    const cJSON *t = root; /* the text config */
    if (!strcmp(mt, "llama") || !strcmp(mt, "mistral") || !strcmp(mt, "mixtral") || !strcmp(mt, "gpt_oss"))
        c->arch = LMX_ARCH_LLAMA;
    else if (!strcmp(mt, "qwen2")) c->arch = LMX_ARCH_QWEN2;
    else if (!strcmp(mt, "qwen3") || !strcmp(mt, "qwen3_moe")) c->arch = LMX_ARCH_QWEN3;
    else if (!strcmp(mt, "gemma3_text")) c->arch = LMX_ARCH_GEMMA3;
    else if (!strcmp(mt, "phi3")) c->arch = LMX_ARCH_PHI3;
    else if (!strcmp(mt, "gemma3")) {
        c->arch = LMX_ARCH_GEMMA3;
        t = get_obj(root, "text_config");
        if (!t)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: model_type gemma3 needs a \"text_config\" object",
                             pc->label);
        c->text_config = true;
    } else {
        return lmx_error(LMX_ERR_UNSUPPORTED,
                         "%s: model_type \"%s\" is not supported (supported: llama, mistral, mixtral, qwen2, qwen3, "
                         "qwen3_moe, gemma3_text, gemma3, phi3, gpt_oss)",
                         pc->label, mt);
    }
    *text = t;
    f->gemma = c->arch == LMX_ARCH_GEMMA3;
    f->mistral = !strcmp(mt, "mistral") || !strcmp(mt, "mixtral");
    f->oss = !strcmp(mt, "gpt_oss");
    return LMX_OK;
}

/* the dimensions, rms_norm_eps and max_position_embeddings */
static lmx_status parse_shape(const parse_ctx *pc, const cJSON *t, const family *f, lmx_model_config *c) {
    const bool gemma = f->gemma, mistral = f->mistral, oss = f->oss;
    long long v = 0;
    /* gemma3 has HF defaults for everything; the others require the shape keys. */
    LMX_TRY(get_int(pc, t, "hidden_size", gemma ? 2304 : -1, 1, 1 << 20, &v));
    c->hidden_size = (int)v;
    LMX_TRY(get_int(pc, t, "num_hidden_layers", gemma ? 26 : -1, 1, 4096, &v));
    c->n_layers = (int)v;
    LMX_TRY(get_int(pc, t, "intermediate_size", gemma ? 9216 : -1, 1, 1 << 22, &v));
    c->intermediate_size = (int)v;
    LMX_TRY(get_int(pc, t, "num_attention_heads", gemma ? 8 : -1, 1, 4096, &v));
    c->n_heads = (int)v;
    LMX_TRY(get_int(pc, t, "num_key_value_heads", gemma ? 4 : c->n_heads, 1, 4096, &v));
    c->n_kv_heads = (int)v;
    LMX_TRY(get_int(pc, t, "vocab_size", gemma ? 262208 : -1, 1, 1 << 26, &v));
    c->vocab_size = (int)v;
    if (c->n_heads % c->n_kv_heads)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", pc->label,
                         c->n_heads, c->n_kv_heads);
    long long def_hd = gemma ? 256 : (c->hidden_size % c->n_heads == 0 ? c->hidden_size / c->n_heads : -1);
    LMX_TRY(get_int(pc, t, "head_dim", def_hd, 1, 1 << 16, &v));
    c->head_dim = (int)v;
    if (c->arch == LMX_ARCH_PHI3 && c->hidden_size % c->n_heads == 0) c->head_dim = c->hidden_size / c->n_heads;

    double eps_def = c->arch == LMX_ARCH_PHI3 || oss ? 1e-5 : 1e-6;
    LMX_TRY(get_num(pc, t, "rms_norm_eps", eps_def, &c->rms_norm_eps));
    if (!(c->rms_norm_eps > 0) || c->rms_norm_eps > 1)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: rms_norm_eps must be in (0, 1]", pc->label);
    long long mpe_def = 32768;
    switch (c->arch) {
    case LMX_ARCH_LLAMA: mpe_def = mistral || oss ? 131072 : 2048; break;
    case LMX_ARCH_PHI3: mpe_def = 4096; break;
    case LMX_ARCH_GEMMA3: mpe_def = 131072; break;
    default: break;
    }
    LMX_TRY(get_int(pc, t, "max_position_embeddings", mpe_def, 1, (long long)1 << 40, &v));
    c->max_position_embeddings = v;
    return LMX_OK;
}

/* biases, the family flags of the layer path, the activation and the attention / logit scales */
static lmx_status parse_layer(const parse_ctx *pc, const cJSON *root, const cJSON *t, const family *f,
                              lmx_model_config *c) {
    const bool gemma = f->gemma, oss = f->oss;
    int b = -1;
    LMX_TRY(get_bool(pc, t, "tie_word_embeddings", -1, &b));
    if (b < 0 && t != root) LMX_TRY(get_bool(pc, root, "tie_word_embeddings", -1, &b));
    c->tie_word_embeddings = b;
    LMX_TRY(get_bool(pc, t, "attention_bias", oss, &b)); /* transformers' GptOssConfig: true */
    c->attention_bias = b;
    LMX_TRY(get_bool(pc, t, "mlp_bias", 0, &b));
    c->mlp_bias = c->arch == LMX_ARCH_LLAMA && b;
    c->qkv_bias = c->arch == LMX_ARCH_QWEN2;
    if (c->arch == LMX_ARCH_QWEN2 || c->arch == LMX_ARCH_PHI3) c->attention_bias = false;
    c->qk_norm = c->arch == LMX_ARCH_QWEN3 || gemma;
    c->norm_plus_one = gemma;
    c->sandwich_norms = gemma;
    c->fused_qkv = c->fused_gate_up = c->arch == LMX_ARCH_PHI3;
    c->embed_scale_sqrt_hidden = gemma;
    c->attn_sinks = oss;

    const char *act = get_str(t, "hidden_activation");
    if (!act) act = get_str(t, "hidden_act");
    if (!act) act = gemma ? "gelu_pytorch_tanh" : "silu";
    if (!strcmp(act, "silu") || !strcmp(act, "swish")) c->act = LMX_ACT_SILU;
    else if (!strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_tanh") ||
             !strcmp(act, "gelu_fast"))
        c->act = LMX_ACT_GELU_TANH;
    else
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: activation \"%s\" is not supported (silu, gelu_pytorch_tanh)",
                         pc->label, act);
    if (oss) c->act = LMX_ACT_SWIGLU_OAI; /* its experts' own activation, whatever hidden_act says */

    double sc = 0;
    c->attn_scale = (float)(1.0 / sqrt((double)c->head_dim));
    if (gemma) {
        LMX_TRY(get_num(pc, t, "query_pre_attn_scalar", 256.0, &sc));
        if (!(sc > 0)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: query_pre_attn_scalar must be > 0", pc->label);
        c->attn_scale = (float)(1.0 / sqrt(sc));
    }
    LMX_TRY(get_num(pc, t, "attn_logit_softcapping", 0.0, &sc));
    if (sc < 0) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: attn_logit_softcapping must be >= 0", pc->label);
    c->attn_logit_softcap = (float)sc;
    LMX_TRY(get_num(pc, t, "final_logit_softcapping", 0.0, &sc));
    if (sc < 0) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: final_logit_softcapping must be >= 0", pc->label);
    c->final_logit_softcap = (float)sc;
    return LMX_OK;
}

/* the rope tables; gpt_oss without a rope dict gets transformers' GptOssConfig default */
static lmx_status parse_rope(const parse_ctx *pc, const cJSON *t, const family *f, lmx_model_config *c) {
    const bool gemma = f->gemma, oss = f->oss;
    if (oss && !get_obj(t, "rope_parameters") && !get_obj(t, "rope_scaling")) {
        /* gpt_oss without a rope dict: transformers' GptOssConfig default (YaRN, factor 32 over 4096) */
        cJSON *def = cJSON_Parse("{\"rope_type\": \"yarn\", \"factor\": 32.0, \"beta_fast\": 32.0, "
                                 "\"beta_slow\": 1.0, \"truncate\": false, \"original_max_position_embeddings\": 4096}");
        if (!def) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: rope defaults", pc->label);
        lmx_status st = lmx_model_config_rope_parse(pc, t, def, c, 150000.0);
        cJSON_Delete(def);
        LMX_TRY(st);
    } else {
        LMX_TRY(lmx_model_config_rope_parse(pc, t, NULL, c, gemma ? 1e6 : oss ? 150000.0 : 10000.0));
    }
    return LMX_OK;
}

/* the sliding window and which layers use it */
static lmx_status parse_sliding(const parse_ctx *pc, const cJSON *t, const family *f, lmx_model_config *c) {
    const bool gemma = f->gemma, mistral = f->mistral, oss = f->oss;
    long long v = 0;
    c->layer_sliding = calloc((size_t)c->n_layers, sizeof *c->layer_sliding);
    if (!c->layer_sliding) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: layer table", pc->label);
    LMX_TRY(get_int(pc, t, "sliding_window", gemma ? 4096 : oss ? 128 : 0, 0, (long long)1 << 40, &v));
    long long window = v;
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(t, "layer_types");
    bool any_sliding = false;
    if (!is_absent(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->n_layers)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"layer_types\" must be a list of %d strings",
                             pc->label, c->n_layers);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, lt) {
            if (!cJSON_IsString(e))
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: layer_types[%d] must be a string", pc->label, i);
            if (!strcmp(e->valuestring, "sliding_attention")) c->layer_sliding[i] = any_sliding = true;
            else if (strcmp(e->valuestring, "full_attention"))
                return lmx_error(LMX_ERR_UNSUPPORTED, "%s: layer_types[%d] \"%s\" is not supported", pc->label, i,
                                 e->valuestring);
            i++;
        }
    } else if (gemma) {
        long long pattern = 1;
        LMX_TRY(get_int(pc, t, "sliding_window_pattern", 6, 1, 1 << 20, &pattern));
        for (int i = 0; i < c->n_layers; i++)
            if ((i + 1) % pattern != 0) c->layer_sliding[i] = any_sliding = true;
    } else if (oss) { /* transformers' GptOssConfig default: sliding, full, sliding, … */
        for (int i = 0; i < c->n_layers; i++)
            if ((i + 1) % 2) c->layer_sliding[i] = any_sliding = true;
    } else if (window > 0 && (mistral || c->arch == LMX_ARCH_PHI3)) {
        for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = any_sliding = true;
    } else if (window > 0 && (c->arch == LMX_ARCH_QWEN2 || c->arch == LMX_ARCH_QWEN3)) {
        int use = 0;
        long long mwl = 0;
        LMX_TRY(get_bool(pc, t, "use_sliding_window", 0, &use));
        LMX_TRY(get_int(pc, t, "max_window_layers", 28, 0, 1 << 20, &mwl));
        if (use)
            for (int i = 0; i < c->n_layers; i++)
                if (i >= mwl) c->layer_sliding[i] = any_sliding = true;
    }
    if (any_sliding && window <= 0)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: sliding layers need a positive \"sliding_window\"",
                         pc->label);
    c->sliding_window = any_sliding ? (window > INT32_MAX ? INT32_MAX : (int)window) : 0;
    return LMX_OK;
}

/* eos and bos ids */
static lmx_status parse_eos_bos(const parse_ctx *pc, const cJSON *root, const cJSON *t, const cJSON *gen,
                                lmx_model_config *c) {
    /* eos: the ids must be token ids (checked here, as written); which file wins, truthiness and
     * duplicates follow mlx-lm's rules (model/eos.h), so the set is read once, with the config */
    const cJSON *ge = gen ? cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id") : NULL;
    bool gen_truthy = !is_absent(ge) && !(cJSON_IsArray(ge) && cJSON_GetArraySize(ge) == 0);
    int32_t *checked = NULL;
    int n_checked = 0;
    if (gen_truthy) {
        LMX_TRY(parse_ids(pc, ge, "generation_config eos_token_id", &checked, &n_checked));
    } else {
        const cJSON *ce = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
        if (is_absent(ce) && t != root) ce = cJSON_GetObjectItemCaseSensitive(t, "eos_token_id");
        LMX_TRY(parse_ids(pc, ce, "eos_token_id", &checked, &n_checked));
    }
    free(checked);
    if (!(c->eos_ids = malloc(LMX_MAX_EOS * sizeof *c->eos_ids)))
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: eos", pc->label);
    c->eos_named = lmx_eos_ids_from_json(gen, root, c->eos_ids, LMX_MAX_EOS, &c->n_eos);
    c->bos_id = -1;
    const cJSON *bo = gen ? cJSON_GetObjectItemCaseSensitive(gen, "bos_token_id") : NULL;
    if (is_absent(bo)) bo = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    if (is_absent(bo) && t != root) bo = cJSON_GetObjectItemCaseSensitive(t, "bos_token_id");
    if (cJSON_IsNumber(bo) && bo->valuedouble >= 0 && bo->valuedouble <= INT32_MAX) c->bos_id = (int32_t)bo->valuedouble;
    return LMX_OK;
}

static lmx_status parse_model(const parse_ctx *pc, const cJSON *root, const cJSON *gen, lmx_model_config *c) {
    const cJSON *t = root;
    family f = {0};
    LMX_TRY(parse_family(pc, root, c, &t, &f));
    LMX_TRY(parse_shape(pc, t, &f, c));
    LMX_TRY(parse_layer(pc, root, t, &f, c));
    LMX_TRY(parse_rope(pc, t, &f, c));
    LMX_TRY(parse_sliding(pc, t, &f, c));

    LMX_TRY(lmx_model_config_moe_parse(pc, t, c));

    int bidir = 0;
    LMX_TRY(get_bool(pc, t, "use_bidirectional_attention", 0, &bidir));
    if (bidir)
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: use_bidirectional_attention (embedding models) is not supported",
                         pc->label);

    /* quantization: "quantization" (MLX) else "quantization_config"; the wrapper may nest it */
    const cJSON *q = get_obj(root, "quantization");
    if (!q) q = get_obj(root, "quantization_config");
    if (!q && t != root) q = get_obj(t, "quantization");
    if (!q && t != root) q = get_obj(t, "quantization_config");
    if (q) LMX_TRY(lmx_model_config_quant_parse(pc, q, c));
    return parse_eos_bos(pc, root, t, gen, c);
}

lmx_status lmx_model_config_parse(const char *json, size_t len, const char *gen, size_t gen_len, const char *label,
                                  lmx_model_config **out) {
    *out = NULL;
    if (!label) label = "config.json";
    parse_ctx pc = {label};
    const char *end = NULL;
    cJSON *root = lmx_json_parse(json, len, &end);
    if (!root) {
        char why[160];
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s", label, lmx_json_error(json, len, end, why, sizeof why));
    }
    while (end && end < json + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (end && end < json + len && *end) {
        cJSON_Delete(root);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: trailing bytes after the JSON object", label);
    }
    cJSON *groot = NULL;
    if (gen) {
        groot = lmx_json_parse(gen, gen_len, NULL);
        if (!groot || !cJSON_IsObject(groot)) {
            /* mlx-lm tolerates a broken generation_config.json poorly; we warn and ignore it */
            LMX_LOG_W("%s: generation_config.json is not a JSON object; ignored", label);
            cJSON_Delete(groot);
            groot = NULL;
        }
    }
    lmx_model_config *c = calloc(1, sizeof *c);
    if (!c) {
        cJSON_Delete(root);
        cJSON_Delete(groot);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: config", label);
    }
    lmx_status st = parse_model(&pc, root, groot, c);
    cJSON_Delete(root);
    cJSON_Delete(groot);
    if (st != LMX_OK) {
        lmx_model_config_free(c);
        return st;
    }
    *out = c;
    return LMX_OK;
}

lmx_status lmx_model_config_load(const char *dir, lmx_model_config **out) {
    *out = NULL;
    char *path = lmx_fs_join(dir, "config.json");
    char *gpath = lmx_fs_join(dir, "generation_config.json");
    if (!path || !gpath) {
        free(path);
        free(gpath);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "config path");
    }
    lmx_status st;
    char *text = NULL, *gtext = NULL;
    size_t len = 0, glen = 0;
    if (!lmx_fs_exists(path)) { /* one that is not a regular file: the read says what it is */
        st = lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: no such file", path);
        goto done;
    }
    st = lmx_fs_read_file(path, CONFIG_MAX_BYTES, &text, &len);
    if (st != LMX_OK) goto done;
    if (lmx_fs_exists(gpath) && lmx_fs_read_file(gpath, CONFIG_MAX_BYTES, &gtext, &glen) != LMX_OK) {
        LMX_LOG_W("%s: unreadable (%s); ignored", gpath, lmx_last_error_detail());
        gtext = NULL;
    }
    st = lmx_model_config_parse(text, len, gtext, glen, path, out);
done:
    free(text);
    free(gtext);
    free(path);
    free(gpath);
    return st;
}

void lmx_model_config_free(lmx_model_config *c) {
    if (!c) return;
    lmx_model_config_rope_free(&c->rope);
    lmx_model_config_rope_free(&c->rope_sliding);
    free(c->layer_sliding);
    free(c->layer_moe);
    for (int i = 0; i < c->n_overrides; i++) free(c->overrides[i].module);
    free(c->overrides);
    free(c->eos_ids);
    free(c);
}
