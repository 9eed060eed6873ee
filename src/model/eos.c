/* eos.c — EOS id set from generation_config.json / config.json / tokenizer (see eos.h). */
#include "model/eos.h"
#include "util/json.h"
#include "util/error.h"
#include "util/fs.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static void add(int32_t id, int32_t *ids, int cap, int *n) {
    if (id < 0) return;
    for (int i = 0; i < *n; i++)
        if (ids[i] == id) return;
    if (*n < cap) ids[(*n)++] = id;
}

/* A token id from JSON: an integer in [0, INT32_MAX] (else -1: converting an out-of-range double
 * to int32_t is undefined behaviour). */
static int32_t json_id(const cJSON *v) {
    double d = v->valuedouble;
    return d >= 0 && d <= INT32_MAX && d == (double)(int32_t)d ? (int32_t)d : -1;
}

/* Adds the ids of a truthy eos_token_id value; returns whether it was truthy. */
static bool take(const cJSON *v, int32_t *ids, int cap, int *n) {
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble == 0) return false;
        add(json_id(v), ids, cap, n);
        return true;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) {
        const cJSON *x;
        cJSON_ArrayForEach(x, v) if (cJSON_IsNumber(x)) add(json_id(x), ids, cap, n);
        return true;
    }
    return false;
}

/* Parses dir/name (absent → *root NULL, LMX_OK). An unreadable or malformed file also gives
 * *root NULL and LMX_OK: the model config loader (model/config.c) has already judged these files —
 * it rejects a bad config.json with its own message and warns once about a bad
 * generation_config.json, which is then ignored, as transformers and mlx-lm do. */
static lmx_status parse(const char *dir, const char *name, cJSON **root) {
    *root = NULL;
    char *p = lmx_fs_join(dir, name);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "eos: allocation failed");
    if (!lmx_fs_is_file(p)) {
        free(p);
        return LMX_OK;
    }
    char *text = NULL;
    size_t len = 0;
    if (lmx_fs_read_file(p, LMX_EOS_CONFIG_MAX_BYTES, &text, &len) == LMX_OK) {
        *root = lmx_json_parse(text, len, NULL);
        if (*root && !cJSON_IsObject(*root)) {
            cJSON_Delete(*root);
            *root = NULL;
        }
    }
    free(text);
    free(p);
    return LMX_OK;
}

bool lmx_eos_ids_from_json(const cJSON *gen, const cJSON *cfg, int32_t *ids, int cap, int *n) {
    *n = 0;
    bool done = gen && take(cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id"), ids, cap, n);
    if (!done && cfg) {
        done = take(cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id"), ids, cap, n);
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(cfg, "text_config");
        if (!done && tc) done = take(cJSON_GetObjectItemCaseSensitive(tc, "eos_token_id"), ids, cap, n);
    }
    return done;
}

lmx_status lmx_eos_ids_read(const char *dir, int32_t fallback, int32_t *ids, int cap, int *n) {
    *n = 0;
    cJSON *gen, *cfg;
    lmx_status st = parse(dir, "generation_config.json", &gen);
    if (st != LMX_OK) return st;
    if ((st = parse(dir, "config.json", &cfg)) != LMX_OK) {
        cJSON_Delete(gen);
        return st;
    }
    if (!lmx_eos_ids_from_json(gen, cfg, ids, cap, n)) add(fallback, ids, cap, n);
    cJSON_Delete(gen);
    cJSON_Delete(cfg);
    return LMX_OK;
}
