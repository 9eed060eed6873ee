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

/* Adds the ids of a truthy eos_token_id value; returns whether it was truthy. */
static bool take(const cJSON *v, int32_t *ids, int cap, int *n) {
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble == 0) return false;
        add((int32_t)v->valuedouble, ids, cap, n);
        return true;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) {
        const cJSON *x;
        cJSON_ArrayForEach(x, v) if (cJSON_IsNumber(x)) add((int32_t)x->valuedouble, ids, cap, n);
        return true;
    }
    return false;
}

/* Parses dir/name (absent → *root NULL, LMX_OK). */
static lmx_status parse(const char *dir, const char *name, cJSON **root) {
    *root = NULL;
    char *p = lmx_fs_join(dir, name);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "eos: allocation failed");
    if (!lmx_fs_is_file(p)) {
        free(p);
        return LMX_OK;
    }
    char *text = NULL;
    lmx_status st = lmx_fs_read_file(p, 16u << 20, &text, NULL);
    if (st == LMX_OK) {
        *root = lmx_json_parse(text, strlen(text), NULL);
        if (!*root) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: not valid JSON", p);
    }
    free(text);
    free(p);
    return st;
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
