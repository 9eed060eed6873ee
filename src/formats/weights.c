/* weights.c — the weight set of a model directory: which safetensors files it has, opened together,
 * with one name → tensor lookup across all of them.
 *
 * Files: those named by model.safetensors.index.json ("weight_map" values) when it exists, else
 * every *.safetensors in the directory except adapter*.safetensors and dot-files, sorted by name.
 */
#include "formats/safetensors.h"
#include "util/error.h"
#include "util/json.h"
#include "util/fs.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_NAME "model.safetensors.index.json"
#define INDEX_MAX_BYTES (256u << 20)

struct lmx_weights {
    lmx_safetensors **files;         /* [n_files], sorted by file name */
    size_t n_files;
    const lmx_tensor_view **views;   /* [n]: file order, then header order within a file */
    const lmx_tensor_view **by_name; /* [n] sorted by name, for bsearch */
    size_t n;
    uint64_t total_bytes;
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmp_view_name(const void *a, const void *b) {
    const lmx_tensor_view *x = *(const lmx_tensor_view *const *)a, *y = *(const lmx_tensor_view *const *)b;
    return strcmp(x->name, y->name);
}

static void free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Appends a copy of `s` to the growing array names[*n] (capacity *cap). */
static bool push_name(char ***names, size_t *n, size_t *cap, const char *s) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **p = realloc(*names, nc * sizeof *p);
        if (!p) return false;
        *names = p;
        *cap = nc;
    }
    char *c = strdup(s);
    if (!c) return false;
    (*names)[(*n)++] = c;
    return true;
}

/* Sorts and removes duplicates in place. */
static void sort_unique(char **names, size_t *n) {
    if (*n == 0) return;
    qsort(names, *n, sizeof *names, cmp_str);
    size_t k = 1;
    for (size_t i = 1; i < *n; i++) {
        if (strcmp(names[i], names[k - 1]) == 0) free(names[i]);
        else names[k++] = names[i];
    }
    *n = k;
}

/* The distinct files of the index's weight_map, sorted. *map_out keeps the parsed index (caller
 * deletes) so the tensors can be checked against the files once they are open. */
static lmx_status list_from_index(const char *index_path, char ***out, size_t *n_out, cJSON **map_out) {
    char *text = NULL;
    size_t len = 0;
    lmx_status s = lmx_fs_read_file(index_path, INDEX_MAX_BYTES, &text, &len);
    if (s != LMX_OK) return s;
    const char *stop = NULL;
    cJSON *root = lmx_json_parse(text, len, &stop);
    if (!root) {
        char why[160];
        lmx_json_error(text, len, stop, why, sizeof why);
        free(text);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s", index_path, why);
    }
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: \"weight_map\" is missing or not an object", index_path);
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (const cJSON *c = wm->child; c; c = c->next) {
        const char *tensor = c->string ? c->string : "?";
        if (!cJSON_IsString(c) || !c->valuestring) {
            s = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: weight_map entry for tensor %s is not a file name string",
                          index_path, tensor);
            goto fail;
        }
        if (!lmx_fs_safe_relative(c->valuestring)) {
            s = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                          "%s: weight_map entry for tensor %s names file \"%s\" outside the model directory",
                          index_path, tensor, c->valuestring);
            goto fail;
        }
        if (!push_name(&names, &n, &cap, c->valuestring)) {
            s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", index_path);
            goto fail;
        }
    }
    sort_unique(names, &n);
    *out = names;
    *n_out = n;
    *map_out = root;
    return LMX_OK;
fail:
    free_names(names, n);
    cJSON_Delete(root);
    return s;
}

static bool is_weight_file_name(const char *name) {
    static const char ext[] = ".safetensors";
    size_t len = strlen(name), el = sizeof ext - 1;
    if (len <= el || strcmp(name + len - el, ext) != 0) return false;
    if (name[0] == '.') return false;                     /* hidden files, e.g. macOS "._model…" */
    if (strncmp(name, "adapter", 7) == 0) return false;   /* LoRA adapters are not model weights */
    return true;
}

/* Every *.safetensors weight file in `dir`, sorted. Names of that form that are not regular files
 * are skipped; the first is described in skipped[] (empty when none). */
static lmx_status list_from_dir(const char *dir, char ***out, size_t *n_out, char skipped[320]) {
    skipped[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return lmx_error(e == ENOENT || e == ENOTDIR ? LMX_ERR_MODEL_NOT_FOUND : LMX_ERR_IO, "%s: %s", dir,
                         lmx_errno_str(e));
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    lmx_status s = LMX_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_weight_file_name(de->d_name)) continue;
        char *path = lmx_fs_join(dir, de->d_name);
        if (!path) {
            s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
            break;
        }
        bool file = lmx_fs_is_file(path); /* follows symlinks (Hugging Face cache layout) */
        if (!file && !skipped[0]) /* a directory, symlink loop, device...: named if nothing else is found */
            snprintf(skipped, 320, "%.200s is %s, not a regular file", de->d_name, lmx_fs_describe(path));
        free(path);
        if (file && !push_name(&names, &n, &cap, de->d_name)) {
            s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
            break;
        }
    }
    closedir(d);
    if (s != LMX_OK) {
        free_names(names, n);
        return s;
    }
    sort_unique(names, &n);
    *out = names;
    *n_out = n;
    return LMX_OK;
}

void lmx_weights_close(lmx_weights *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_files; i++) lmx_safetensors_close(w->files[i]);
    free(w->files);
    free(w->views);
    free(w->by_name);
    free(w);
}

/* The first tensor the index places in `file` (for error messages). */
static const char *first_tensor_in(const cJSON *root, const char *file) {
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    for (const cJSON *c = wm ? wm->child : NULL; c; c = c->next)
        if (c->valuestring && c->string && strcmp(c->valuestring, file) == 0) return c->string;
    return "?";
}

/* Every tensor the index places in a file must be in that file. */
static lmx_status check_index(const lmx_weights *w, char **names, const cJSON *root, const char *index_path) {
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    for (const cJSON *c = wm->child; c; c = c->next) {
        const char *key = c->valuestring;
        char **hit = bsearch(&key, names, w->n_files, sizeof *names, cmp_str);
        if (!hit) continue; /* cannot happen: names came from this map */
        const lmx_safetensors *st = w->files[hit - names];
        if (!lmx_safetensors_find(st, c->string ? c->string : "")) {
            return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED,
                             "%s: tensor %s is not in %s, where %s places it", lmx_safetensors_path(st),
                             c->string ? c->string : "?", lmx_safetensors_path(st), index_path);
        }
    }
    return LMX_OK;
}

lmx_status lmx_weights_open(const char *dir, bool use_mmap, lmx_weights **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_weights_open: NULL out");
    *out = NULL;
    if (!dir) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_weights_open: NULL directory");
    if (!lmx_fs_is_dir(dir)) return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: no such model directory", dir);

    char *index_path = lmx_fs_join(dir, INDEX_NAME);
    if (!index_path) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    char **names = NULL;
    size_t n_names = 0;
    cJSON *index = NULL;
    char skipped[320] = "";
    bool have_index = lmx_fs_exists(index_path); /* not a regular file: the read says what it is */
    lmx_status s = have_index ? list_from_index(index_path, &names, &n_names, &index)
                              : list_from_dir(dir, &names, &n_names, skipped);
    lmx_weights *w = NULL;
    if (s != LMX_OK) goto done;
    if (n_names == 0) {
        s = have_index ? lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: weight_map lists no weight files", index_path)
                       : skipped[0] ? lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: no usable *.safetensors weight file: %s",
                                                dir, skipped)
                                    : lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: no *.safetensors weight files in the directory", dir);
        goto done;
    }
    w = calloc(1, sizeof *w);
    if (!w || !(w->files = calloc(n_names, sizeof *w->files))) {
        s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
        goto done;
    }
    for (size_t i = 0; i < n_names; i++) {
        char *path = lmx_fs_join(dir, names[i]);
        if (!path) {
            s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
            goto done;
        }
        if (have_index && !lmx_fs_is_file(path)) {
            const char *what = lmx_fs_describe(path);
            s = lmx_error(strcmp(what, "missing") == 0 ? LMX_ERR_MODEL_NOT_FOUND : LMX_ERR_INVALID_MODEL_FORMAT,
                          "%s: %s%s, but %s places tensor %s in it", path,
                          strcmp(what, "missing") == 0 ? "does not exist" : "is ", strcmp(what, "missing") == 0 ? "" : what,
                          index_path, first_tensor_in(index, names[i]));
            free(path);
            goto done;
        }
        s = lmx_safetensors_open(path, use_mmap, &w->files[i]);
        free(path);
        if (s != LMX_OK) goto done;
        w->n_files = i + 1;
        w->n += lmx_safetensors_count(w->files[i]);
    }
    if (index && (s = check_index(w, names, index, index_path)) != LMX_OK) goto done;

    if (w->n) {
        w->views = calloc(w->n, sizeof *w->views);
        w->by_name = calloc(w->n, sizeof *w->by_name);
        if (!w->views || !w->by_name) {
            s = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu tensors", dir, w->n);
            goto done;
        }
    }
    size_t k = 0;
    for (size_t f = 0; f < w->n_files; f++) {
        size_t c = lmx_safetensors_count(w->files[f]);
        for (size_t i = 0; i < c; i++) {
            const lmx_tensor_view *v = lmx_safetensors_get(w->files[f], i);
            w->views[k] = w->by_name[k] = v;
            w->total_bytes += v->nbytes;
            k++;
        }
    }
    qsort(w->by_name, w->n, sizeof *w->by_name, cmp_view_name);
    for (size_t i = 1; i < w->n; i++) {
        const lmx_tensor_view *a = w->by_name[i - 1], *b = w->by_name[i];
        if (strcmp(a->name, b->name) == 0) {
            s = lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "%s: tensor %s is in two weight files: %s and %s", dir,
                          a->name, a->file, b->file);
            goto done;
        }
    }
done:
    free_names(names, n_names);
    cJSON_Delete(index);
    free(index_path);
    if (s != LMX_OK) {
        lmx_weights_close(w);
        return s;
    }
    *out = w;
    return LMX_OK;
}

size_t lmx_weights_count(const lmx_weights *w) { return w ? w->n : 0; }

const lmx_tensor_view *lmx_weights_get(const lmx_weights *w, size_t i) {
    return w && i < w->n ? w->views[i] : NULL;
}

const lmx_tensor_view *lmx_weights_find(const lmx_weights *w, const char *name) {
    if (!w || !name || w->n == 0) return NULL;
    lmx_tensor_view key = {.name = name};
    const lmx_tensor_view *kp = &key;
    const lmx_tensor_view **hit = bsearch(&kp, w->by_name, w->n, sizeof *w->by_name, cmp_view_name);
    return hit ? *hit : NULL;
}

uint64_t lmx_weights_total_bytes(const lmx_weights *w) { return w ? w->total_bytes : 0; }

size_t lmx_weights_file_count(const lmx_weights *w) { return w ? w->n_files : 0; }

const char *lmx_weights_file_path(const lmx_weights *w, size_t i) {
    return w && i < w->n_files ? lmx_safetensors_path(w->files[i]) : NULL;
}
