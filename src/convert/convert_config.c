/* convert_config.c — config.json of a conversion: the input must be a float model; the output gets
 * mlx-lm's "quantization" block and its copy "quantization_config" (utils.py `quantize_model`,
 * `save_config`: keys sorted, 4-space indent). */
#include "convert/convert.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmx_status load(const char *dir, cJSON **out) {
    char *path = lmx_fs_join(dir, "config.json"), *text = NULL;
    size_t len = 0;
    if (!path) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    lmx_status st = lmx_fs_read_file(path, 16u << 20, &text, &len);
    if (st != LMX_OK) {
        free(path);
        return st;
    }
    cJSON *j = lmx_json_parse(text, len, NULL);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: not a JSON object", path);
        free(path);
        return st;
    }
    free(path);
    *out = j;
    return LMX_OK;
}

static bool dtype_from_name(const char *s, lmx_dtype *t) {
    if (!s) return false;
    if (!strcmp(s, "bfloat16")) *t = LMX_DTYPE_BF16;
    else if (!strcmp(s, "float16")) *t = LMX_DTYPE_F16;
    else if (!strcmp(s, "float32")) *t = LMX_DTYPE_F32;
    else return false;
    return true;
}

lmx_status lmx_convert_read_config(const char *src_dir, lmx_convert_model_info *mi, lmx_dtype *cfg_dtype,
                                   bool *has_dtype) {
    cJSON *j = NULL;
    lmx_status st = load(src_dir, &j);
    if (st != LMX_OK) return st;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantization");
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
    if (q || qc) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
        st = lmx_error(LMX_ERR_UNSUPPORTED,
                       "%s/config.json: the model is already quantized (%s%s%s); convert needs a bf16/f16/f32 model",
                       src_dir, q ? "\"quantization\" block" : "\"quantization_config\"",
                       cJSON_IsString(m) ? ", quant_method " : "", cJSON_IsString(m) ? m->valuestring : "");
        cJSON_Delete(j);
        return st;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(j, "text_config");
    if (!t && cJSON_IsObject(tc)) t = cJSON_GetObjectItemCaseSensitive(tc, "tie_word_embeddings");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    /* gemma families tie by default (their mlx-lm model has no lm_head unless untied) */
    bool def = cJSON_IsString(mt) && !strncmp(mt->valuestring, "gemma", 5);
    mi->tied = t ? cJSON_IsTrue(t) : def;
    snprintf(mi->model_type, sizeof mi->model_type, "%s", cJSON_IsString(mt) ? mt->valuestring : "");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "torch_dtype");
    if (!cJSON_IsString(d)) d = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    *has_dtype = cJSON_IsString(d) && dtype_from_name(d->valuestring, cfg_dtype);
    cJSON_Delete(j);
    return LMX_OK;
}

static cJSON *qparams(const lmx_quant_params *q) {
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    cJSON_AddNumberToObject(b, "group_size", q->group_size);
    cJSON_AddNumberToObject(b, "bits", q->bits);
    cJSON_AddStringToObject(b, "mode", lmx_quant_mode_name(q->mode));
    return b;
}

/* {"group_size", "bits", "mode"} and, after them, one entry per module (mlx-lm's insertion order:
 * the globals first, then the modules in the order quantized) */
static cJSON *qblock(const lmx_quant_params *g, const lmx_convert_layer_q *layers, size_t n) {
    cJSON *b = qparams(g);
    for (size_t i = 0; b && i < n; i++) {
        cJSON *e = qparams(&layers[i].q);
        if (!e) {
            cJSON_Delete(b);
            return NULL;
        }
        cJSON_AddItemToObject(b, layers[i].module, e);
    }
    return b;
}

/* cJSON has no key sort; sort the top-level members (mlx-lm writes sort_keys=True). */
static void sort_members(cJSON *obj) {
    int n = cJSON_GetArraySize(obj);
    if (n < 2) return;
    cJSON **v = malloc((size_t)n * sizeof *v);
    if (!v) return;
    for (int i = 0; i < n; i++) v[i] = cJSON_DetachItemFromArray(obj, 0);
    for (int i = 1; i < n; i++) /* insertion sort: configs have a few dozen keys */
        for (int k = i; k > 0 && strcmp(v[k - 1]->string, v[k]->string) > 0; k--) {
            cJSON *x = v[k];
            v[k] = v[k - 1];
            v[k - 1] = x;
        }
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(obj, v[i]);
    free(v);
}

lmx_status lmx_convert_write_config(const char *src_dir, const char *dst_dir, const lmx_convert_options *opt,
                                    lmx_dtype out_dtype, const lmx_quant_params *g, const lmx_convert_layer_q *layers,
                                    size_t n_layers) {
    cJSON *j = NULL;
    lmx_status st = load(src_dir, &j);
    if (st != LMX_OK) return st;
    if (opt->quantize) {
        cJSON *a = qblock(g, layers, n_layers), *b = qblock(g, layers, n_layers);
        if (!a || !b) {
            cJSON_Delete(a), cJSON_Delete(b), cJSON_Delete(j);
            return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        }
        cJSON_AddItemToObject(j, "quantization", a);
        cJSON_AddItemToObject(j, "quantization_config", b);
    }
    const char *dn = out_dtype == LMX_DTYPE_BF16 ? "bfloat16" : out_dtype == LMX_DTYPE_F16 ? "float16" : "float32";
    if (cJSON_GetObjectItemCaseSensitive(j, "torch_dtype"))
        cJSON_ReplaceItemInObjectCaseSensitive(j, "torch_dtype", cJSON_CreateString(dn));
    if (cJSON_GetObjectItemCaseSensitive(j, "dtype"))
        cJSON_ReplaceItemInObjectCaseSensitive(j, "dtype", cJSON_CreateString(dn));
    sort_members(j);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    char *path = lmx_fs_join(dst_dir, "config.json");
    FILE *f = path ? fopen(path, "wb") : NULL;
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = false;
    st = ok ? LMX_OK : lmx_error(LMX_ERR_IO, "%s: cannot write", path ? path : dst_dir);
    free(text);
    free(path);
    return st;
}
