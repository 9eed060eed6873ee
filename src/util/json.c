/* json.c — serialised cJSON parsing, duplicate keys resolved as Python does (see json.h). */
#include "util/json.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t g_parse_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t key_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Removes from object o every member whose key a later member repeats (Python's json keeps the
 * last value of a repeated key; cJSON's lookups return the first). Small objects: pairwise; large
 * ones (a tokenizer vocabulary): a hash set of the keys seen walking from the end. Returns false
 * on allocation failure. */
static bool dedup_object(cJSON *o) {
    size_t n = 0;
    for (cJSON *c = o->child; c; c = c->next) n++;
    if (n < 2) return true;
    if (n <= 32) {
        for (cJSON *c = o->child, *next; c; c = next) {
            next = c->next;
            if (!c->string) continue;
            for (cJSON *d = c->next; d; d = d->next)
                if (d->string && strcmp(d->string, c->string) == 0) {
                    cJSON_Delete(cJSON_DetachItemViaPointer(o, c));
                    break;
                }
        }
        return true;
    }
    size_t cap = 64;
    while (cap < 2 * n) cap *= 2;
    const char **set = calloc(cap, sizeof *set);
    if (!set) return false;
    cJSON *c = o->child ? o->child->prev : NULL; /* cJSON: the first child's prev is the last */
    while (c) {
        cJSON *prev = c == o->child ? NULL : c->prev;
        if (c->string) {
            size_t h = (size_t)key_hash(c->string) & (cap - 1);
            bool dup = false;
            while (set[h]) {
                if (strcmp(set[h], c->string) == 0) {
                    dup = true;
                    break;
                }
                h = (h + 1) & (cap - 1);
            }
            if (dup) cJSON_Delete(cJSON_DetachItemViaPointer(o, c));
            else set[h] = c->string;
        }
        c = prev;
    }
    free(set);
    return true;
}

/* Applies dedup_object to every object of the tree (depth is bounded by cJSON's nesting limit). */
static bool dedup_tree(cJSON *j) {
    if (cJSON_IsObject(j) && !dedup_object(j)) return false;
    for (cJSON *c = j->child; c; c = c->next)
        if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && !dedup_tree(c)) return false;
    return true;
}

cJSON *lmx_json_parse_keep_dups(const char *s, size_t len, const char **end) {
    pthread_mutex_lock(&g_parse_lock);
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &stop, 0);
    if (!root) stop = cJSON_GetErrorPtr();
    pthread_mutex_unlock(&g_parse_lock);
    if (end) *end = stop;
    return root;
}

cJSON *lmx_json_parse(const char *s, size_t len, const char **end) {
    const char *stop = NULL;
    cJSON *root = lmx_json_parse_keep_dups(s, len, &stop);
    if (root && !dedup_tree(root)) {
        cJSON_Delete(root);
        root = NULL;
        stop = s;
    }
    if (end) *end = stop;
    return root;
}

/* The deepest [ / { nesting in s[0..len) (strings skipped). */
static int max_depth(const char *s, size_t len) {
    int d = 0, best = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') in_str = true;
        else if (c == '[' || c == '{') {
            if (++d > best) best = d;
        } else if (c == ']' || c == '}') d--;
    }
    return best;
}

const char *lmx_json_error(const char *s, size_t len, const char *stop, char *buf, size_t cap) {
    if (s && max_depth(s, len) > CJSON_NESTING_LIMIT) {
        snprintf(buf, cap, "JSON nested deeper than the parser's limit of %d levels", CJSON_NESTING_LIMIT);
    } else if (s && stop && stop >= s && stop <= s + len) {
        size_t off = (size_t)(stop - s), line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (s[i] == '\n') {
                line++;
                col = 1;
            } else col++;
        }
        snprintf(buf, cap, "not valid JSON (at line %zu, column %zu)", line, col);
    } else {
        snprintf(buf, cap, "not valid JSON");
    }
    return buf;
}
