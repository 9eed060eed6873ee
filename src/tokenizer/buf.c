/* buf.c — growable byte and id buffers used throughout the tokenizer (per call, never shared). */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

bool tok_buf_reserve(tok_buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p;
    b->cap = cap;
    return true;
}

bool tok_buf_append(tok_buf *b, const char *s, size_t n) {
    if (!tok_buf_reserve(b, n)) return false;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

bool tok_buf_putc(tok_buf *b, char c) { return tok_buf_append(b, &c, 1); }

void tok_buf_free(tok_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

bool tok_ids_push(tok_ids *v, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->v, cap * sizeof *p);
        if (!p) return false;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = id;
    return true;
}

bool tok_ids_append(tok_ids *v, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!tok_ids_push(v, ids[i])) return false;
    return true;
}

void tok_ids_free(tok_ids *v) {
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}
