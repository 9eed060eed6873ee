/* models.c — which `model` names a request may use, and GET /v1/models.
 *
 * A name is served when it is registered (lmx_registry_*), or names a directory with a
 * config.json under the models directory. Never an arbitrary path: absolute names, "." / ".."
 * components, backslashes and control bytes are refused, and the directory's real path must stay
 * inside the models directory's real path (no symlink out of it). Loading is the runtime's: the
 * name is the model id of the lmx.h calls, loaded lazily into its LRU cache on first use. */
#include "server/server.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

static bool is_registered(const char *models_dir, const char *name, double *added) {
    lmx_registry_entry *es = NULL;
    int n = 0;
    bool found = false;
    if (lmx_registry_list(models_dir, &es, &n) != LMX_OK) return false;
    for (int i = 0; i < n; i++)
        if (!strcmp(es[i].id, name)) {
            found = true;
            if (added) *added = es[i].added_at;
        }
    lmx_registry_entries_free(es, n);
    return found;
}

static bool safe_name(const char *name) {
    if (!*name || name[0] == '/') return false;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '\\' || *p == 0x7f) return false;
    const char *c = name;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) return false;
        c += n;
        if (*c == '/') c++;
    }
    return true;
}

/* The directory of `name` under models_dir when it is a model directory inside it. */
static bool under_models_dir(const char *models_dir, const char *name) {
    char root[PATH_MAX], dir[PATH_MAX], path[PATH_MAX * 2];
    if (!models_dir || !realpath(models_dir, root)) return false;
    snprintf(path, sizeof path, "%s/%s", models_dir, name);
    if (!realpath(path, dir)) return false;
    size_t n = strlen(root);
    if (strncmp(dir, root, n) != 0 || dir[n] != '/') return false;
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool srv_model_allowed(const char *models_dir, const char *name, srv_error *e) {
    if (!safe_name(name)) {
        srv_error_set(e, 404, "invalid_request_error", "model_not_found", "model",
                      "the model '%s' does not exist (a model is a registered name or a directory under the "
                      "models directory; paths are not accepted)",
                      name);
        return false;
    }
    if (is_registered(models_dir, name, NULL) || under_models_dir(models_dir, name)) return true;
    srv_error_set(e, 404, "invalid_request_error", "model_not_found", "model", "the model '%s' does not exist",
                  name);
    return false;
}

static void add_model(cJSON *data, lmx_runtime *rt, const char *id, double created) {
    const cJSON *it;
    cJSON_ArrayForEach(it, data) {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsString(i) && !strcmp(i->valuestring, id)) return;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)(long)created);
    cJSON_AddStringToObject(m, "owned_by", "lmx");
    cJSON_AddBoolToObject(m, "loaded", lmx_model_is_loaded(rt, id));
    cJSON_AddItemToArray(data, m);
}

/* Model directories up to two levels under models_dir ("name" and "org/name"). */
static void scan(cJSON *data, lmx_runtime *rt, const char *models_dir, const char *prefix, int depth) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s%s%s", models_dir, *prefix ? "/" : "", prefix);
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)) && n++ < 4096) {
        if (de->d_name[0] == '.') continue;
        char name[PATH_MAX];
        snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "/" : "", de->d_name);
        if (!safe_name(name)) continue;
        if (under_models_dir(models_dir, name)) {
            char full[PATH_MAX * 2];
            struct stat st;
            snprintf(full, sizeof full, "%s/%s", models_dir, name);
            add_model(data, rt, name, stat(full, &st) == 0 ? (double)st.st_mtime : 0);
        } else if (depth == 0) {
            scan(data, rt, models_dir, name, 1);
        }
    }
    closedir(d);
}

char *srv_models_json(lmx_runtime *rt, const char *models_dir) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    lmx_registry_entry *es = NULL;
    int n = 0;
    if (lmx_registry_list(models_dir, &es, &n) == LMX_OK) {
        for (int i = 0; i < n; i++) add_model(data, rt, es[i].id, es[i].added_at);
        lmx_registry_entries_free(es, n);
    }
    if (models_dir) scan(data, rt, models_dir, "", 0);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}
