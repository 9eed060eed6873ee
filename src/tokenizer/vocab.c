/* vocab.c — token string <-> id map: one string arena, an id-indexed table and an open-addressing
 * hash index. Built once at load, read-only afterwards. */
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>

uint64_t tok_hash_bytes(const void *p, size_t n) {
    /* FNV-1a over 8-byte words with a final mix: fast and good enough for token strings. */
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ (n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ULL;
    h ^= h >> 32;
    return h;
}

lmx_status tok_vocab_init(tok_vocab *v, size_t expected) {
    memset(v, 0, sizeof *v);
    size_t slots = 1024;
    while (slots < expected * 2) slots *= 2;
    v->slots = malloc(slots * sizeof *v->slots);
    if (!v->slots) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer vocabulary: %zu slots", slots);
    for (size_t i = 0; i < slots; i++) v->slots[i] = (tok_vslot){0, -1, 0, 0};
    v->n_slots = slots;
    return LMX_OK;
}

static bool grow_ids(tok_vocab *v, size_t need) {
    if (need <= v->n_ids) return true;
    size_t cap = v->n_ids ? v->n_ids : 1024;
    while (cap < need) cap *= 2;
    uint32_t *o = realloc(v->str_off, cap * sizeof *o);
    if (!o) return false;
    v->str_off = o;
    uint32_t *l = realloc(v->str_len, cap * sizeof *l);
    if (!l) return false;
    v->str_len = l;
    for (size_t i = v->n_ids; i < cap; i++) { v->str_off[i] = UINT32_MAX; v->str_len[i] = 0; }
    v->n_ids = cap;
    return true;
}

static bool rehash(tok_vocab *v) {
    size_t ns = v->n_slots * 2;
    tok_vslot *s = malloc(ns * sizeof *s);
    if (!s) return false;
    for (size_t i = 0; i < ns; i++) s[i] = (tok_vslot){0, -1, 0, 0};
    for (size_t i = 0; i < v->n_slots; i++) {
        if (v->slots[i].id < 0) continue;
        uint64_t hv = tok_hash_bytes(v->arena + v->slots[i].off, v->slots[i].len);
        size_t h = hv & (ns - 1);
        while (s[h].id >= 0) h = (h + 1) & (ns - 1);
        s[h] = v->slots[i];
    }
    free(v->slots);
    v->slots = s;
    v->n_slots = ns;
    return true;
}

lmx_status tok_vocab_add(tok_vocab *v, const char *str, size_t n, int32_t id) {
    return tok_vocab_add_h(v, str, n, id, tok_hash_bytes(str, n));
}

lmx_status tok_vocab_add_h(tok_vocab *v, const char *str, size_t n, int32_t id, uint64_t hv) {
    if (id < 0 || id > TOK_MAX_ID)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "tokenizer vocabulary: id %d is outside [0, %d]", id,
                         TOK_MAX_ID);
    if (!grow_ids(v, (size_t)id + 1)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer vocabulary");
    if (v->arena_n + n + 1 > v->arena_cap) {
        size_t cap = v->arena_cap ? v->arena_cap : 1 << 16;
        while (cap < v->arena_n + n + 1) cap *= 2;
        char *a = realloc(v->arena, cap);
        if (!a) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer vocabulary");
        v->arena = a;
        v->arena_cap = cap;
    }
    if (v->arena_n + n + 1 > UINT32_MAX) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "tokenizer vocabulary too large");
    bool had = v->str_off[id] != UINT32_MAX;
    memcpy(v->arena + v->arena_n, str, n);
    v->arena[v->arena_n + n] = '\0';
    uint32_t off = (uint32_t)v->arena_n;
    v->arena_n += n + 1;
    if (tok_vocab_find_h(v, str, n, hv) >= 0) { /* duplicate string: keep the first mapping */
        if (!had) { v->str_off[id] = off; v->str_len[id] = (uint32_t)n; }
        return LMX_OK;
    }
    /* An id re-used with a new string leaves a stale slot that can still only match its new string. */
    v->str_off[id] = off;
    v->str_len[id] = (uint32_t)n;
    if ((v->count + 1) * 2 > v->n_slots && !rehash(v)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer vocabulary");
    size_t m = v->n_slots - 1, h = hv & m;
    while (v->slots[h].id >= 0) h = (h + 1) & m;
    v->slots[h] = (tok_vslot){(uint32_t)(hv >> 32), id, off, (uint32_t)n};
    v->count++;
    return LMX_OK;
}

void tok_vocab_prefetch(const tok_vocab *v, uint64_t hv) {
    if (v->n_slots) __builtin_prefetch(&v->slots[hv & (v->n_slots - 1)]);
}

int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t n) {
    return tok_vocab_find_h(v, s, n, tok_hash_bytes(s, n));
}

int32_t tok_vocab_find_h(const tok_vocab *v, const char *s, size_t n, uint64_t hv) {
    if (!v->n_slots) return -1;
    uint32_t tag = (uint32_t)(hv >> 32);
    size_t m = v->n_slots - 1, h = hv & m;
    for (;;) {
        tok_vslot sl = v->slots[h];
        if (sl.id < 0) return -1;
        if (sl.tag == tag && sl.len == n && memcmp(v->arena + sl.off, s, n) == 0) return sl.id;
        h = (h + 1) & m;
    }
}

const char *tok_vocab_str(const tok_vocab *v, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= v->n_ids || v->str_off[id] == UINT32_MAX) return NULL;
    if (len) *len = v->str_len[id];
    return v->arena + v->str_off[id];
}

void tok_vocab_free(tok_vocab *v) {
    free(v->arena);
    free(v->str_off);
    free(v->str_len);
    free(v->slots);
    memset(v, 0, sizeof *v);
}
