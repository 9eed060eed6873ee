/* bpe.c — the BPE model of tokenizer.json: vocab, ranked merges ("a b" strings or [a, b] arrays),
 * ignore_merges, byte_fallback (<0xXX> pieces), unk_token with fuse_unk,
 * continuing_subword_prefix / end_of_word_suffix. Merging follows HF's Word::merge_all: a min-heap
 * of (rank, position) with stale-entry checks. Immutable after parse; encode uses per-call scratch. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/json_scan.h"
#include "util/error.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t key; uint32_t rank; int32_t new_id; } merge_slot; /* key 0 = empty */

/* Word cache: direct-mapped, one 64-byte entry per slot, guarded by striped mutexes (the only
 * mutable state of a loaded tokenizer; results never depend on it). */
#define CACHE_SLOTS 16384
#define CACHE_LOCKS 64
#define CACHE_WORD 22
#define CACHE_IDS 9
typedef struct { uint32_t tag; uint8_t wlen, nids; char word[CACHE_WORD]; int32_t ids[CACHE_IDS]; } cache_entry;

struct tok_bpe {
    tok_vocab vocab;
    merge_slot *merges;     /* [n_mslots] open addressing on (a << 32 | b) + 1 */
    size_t n_mslots, n_merges;
    int32_t unk_id;         /* -1 if none */
    char *prefix, *suffix;  /* continuing_subword_prefix / end_of_word_suffix (NULL = none) */
    size_t prefix_len, suffix_len;
    bool fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256];  /* id of "<0xXX>", -1 if absent */
    cache_entry *cache;     /* [CACHE_SLOTS] or NULL */
    /* SentencePiece-style words (no pre-tokenizer split) can be cut before each "▁" that follows
     * a non-"▁" character, because no merge can join across such a point -- except merges (a, b)
     * with b starting with "▁", whose a's last character is listed here (gemma3 has one: '>'). */
    bool spm_split;
    uint32_t cross_last[16];
    size_t n_cross;
    pthread_mutex_t locks[CACHE_LOCKS];
};

const tok_vocab *tok_bpe_vocab(const tok_bpe *b) { return &b->vocab; }
int32_t tok_bpe_unk_id(const tok_bpe *b) { return b->unk_id; }

void tok_bpe_free(tok_bpe *b) {
    if (!b) return;
    tok_vocab_free(&b->vocab);
    if (b->cache) {
        for (int i = 0; i < CACHE_LOCKS; i++) pthread_mutex_destroy(&b->locks[i]);
        free(b->cache);
    }
    free(b->merges);
    free(b->prefix);
    free(b->suffix);
    free(b);
}

static inline uint64_t mkey(int32_t a, int32_t b) { return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1; }
static inline size_t mhash(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; return (size_t)k; }

static bool merge_put(tok_bpe *b, int32_t a, int32_t c, uint32_t rank, int32_t id) {
    if ((b->n_merges + 1) * 2 > b->n_mslots) {
        size_t ns = b->n_mslots ? b->n_mslots * 2 : 1024;
        merge_slot *t = calloc(ns, sizeof *t);
        if (!t) return false;
        for (size_t i = 0; i < b->n_mslots; i++) {
            if (!b->merges[i].key) continue;
            size_t h = mhash(b->merges[i].key) & (ns - 1);
            while (t[h].key) h = (h + 1) & (ns - 1);
            t[h] = b->merges[i];
        }
        free(b->merges);
        b->merges = t;
        b->n_mslots = ns;
    }
    uint64_t k = mkey(a, c);
    size_t m = b->n_mslots - 1, h = mhash(k) & m;
    while (b->merges[h].key && b->merges[h].key != k) h = (h + 1) & m;
    if (!b->merges[h].key) b->n_merges++;
    b->merges[h] = (merge_slot){k, rank, id}; /* a repeated pair keeps the later rank, as HF's map does */
    return true;
}

static inline const merge_slot *merge_get(const tok_bpe *b, int32_t a, int32_t c) {
    if (!b->n_mslots) return NULL;
    uint64_t k = mkey(a, c);
    size_t m = b->n_mslots - 1, h = mhash(k) & m;
    for (;;) {
        const merge_slot *s = &b->merges[h];
        if (s->key == k) return s;
        if (!s->key) return NULL;
        h = (h + 1) & m;
    }
}

static char *opt_string(const cJSON *j, size_t *len) {
    if (!cJSON_IsString(j)) return NULL;
    size_t n = strlen(j->valuestring);
    char *p = malloc(n + 1);
    if (p) memcpy(p, j->valuestring, n + 1);
    *len = n;
    return p;
}

#define META "\xE2\x96\x81"

static uint32_t last_cp(const char *s, size_t n) {
    size_t k = n;
    while (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0x80) k--;
    if (k > 0) k--;
    int adv;
    return n ? tok_utf8_decode(s + k, n - k, &adv) : 0;
}

/* Records a merge that may join across a "▁" boundary (see spm_split). */
static void note_cross(tok_bpe *b, const char *a, size_t al, const char *c, size_t cl) {
    if (!b->spm_split || cl < 3 || memcmp(c, META, 3) != 0) return;
    if (al >= 3 && !memcmp(a + al - 3, META, 3)) return;
    uint32_t cp = last_cp(a, al);
    for (size_t i = 0; i < b->n_cross; i++)
        if (b->cross_last[i] == cp) return;
    if (b->n_cross == sizeof b->cross_last / sizeof b->cross_last[0]) b->spm_split = false;
    else b->cross_last[b->n_cross++] = cp;
}

static lmx_status add_merge(tok_bpe *b, const char *a, size_t al, const char *c, size_t cl, uint32_t rank, tok_buf *joined) {
    int32_t ia = tok_vocab_find(&b->vocab, a, al), ic = tok_vocab_find(&b->vocab, c, cl);
    if (ia < 0 || ic < 0) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.merges[%u]: token not in vocab", rank);
    note_cross(b, a, al, c, cl);
    size_t skip = cl >= b->prefix_len ? b->prefix_len : 0; /* HF strips prefix_len bytes unconditionally */
    joined->n = 0;
    if (!tok_buf_append(joined, a, al) || !tok_buf_append(joined, c + skip, cl - skip)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE merges");
    int32_t nid = tok_vocab_find(&b->vocab, joined->p, joined->n);
    if (nid < 0) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.merges[%u]: merged token \"%s\" not in vocab", rank, joined->p);
    return merge_put(b, ia, ic, rank, nid) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE merges");
}

static lmx_status split_merge_string(const char *s, size_t n, uint32_t rank, size_t *al) {
    const char *sp = memchr(s, ' ', n);
    if (!sp) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.merges[%u] \"%s\" has no space", rank, s);
    *al = (size_t)(sp - s);
    return LMX_OK;
}

/* model.vocab from the raw JSON text: batches of entries with prefetched hash slots (inserts are
 * memory-latency bound) */
static lmx_status vocab_raw(tok_bpe *b, const char *raw_vocab, size_t raw_vocab_len) {
    lmx_status st = LMX_OK;
    enum { VB = 64 };
    struct { size_t off, len; int32_t id; uint64_t h; } e[VB];
    tok_buf bb = {0};
    tok_jiter it;
    tok_jiter_init(&it, raw_vocab, raw_vocab_len);
    double num;
    int r = 1;
    while (!st && r > 0) {
        size_t k = 0;
        bb.n = 0;
        while (k < VB && (r = tok_jiter_vocab_next(&it, &num)) > 0) {
            if (num < 0 || num > INT32_MAX) { st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.vocab[\"%s\"] is not a valid id", it.a.p); break; }
            e[k].off = bb.n;
            e[k].len = it.a.n;
            e[k].id = (int32_t)num;
            if (!tok_buf_append(&bb, it.a.p ? it.a.p : "", it.a.n)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE vocab"); break; }
            k++;
        }
        for (size_t i = 0; i < k; i++) {
            e[i].h = tok_hash_bytes(bb.p + e[i].off, e[i].len);
            tok_vocab_prefetch(&b->vocab, e[i].h);
        }
        for (size_t i = 0; i < k && !st; i++) st = tok_vocab_add_h(&b->vocab, bb.p + e[i].off, e[i].len, e[i].id, e[i].h);
    }
    if (!st && r < 0) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.vocab: JSON syntax error near byte %zu of the vocab",
                                     (size_t)(it.p - raw_vocab));
    tok_buf_free(&bb);
    tok_jiter_free(&it);
    return st;
}

/* model.vocab from its parsed object */
static lmx_status vocab_json(tok_bpe *b, const cJSON *vocab) {
    lmx_status st = LMX_OK;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > INT32_MAX) {
            st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.vocab[\"%s\"] is not a valid id", it->string);
            break;
        }
        st = tok_vocab_add(&b->vocab, it->string, strlen(it->string), (int32_t)it->valuedouble);
        if (st) break;
    }
    return st;
}

/* model.merges from the raw JSON text (the table pre-sized by the caller): batches of merges with
 * prefetched hash slots, the lookups being memory-latency bound */
static lmx_status merges_raw(tok_bpe *b, const char *raw_merges, size_t raw_merges_len) {
    lmx_status st = LMX_OK;
    uint32_t rank = 0;
    enum { BATCH = 64 };
    struct { size_t a, al, c, cl, j, jl; uint64_t ha, hc, hj; } e[BATCH];
    tok_buf bb = {0};
    tok_jiter it;
    tok_jiter_init(&it, raw_merges, raw_merges_len);
    bool pair, eof = false;
    while (!st && !eof) {
        size_t k = 0;
        bb.n = 0;
        while (k < BATCH) {
            int r = tok_jiter_merge_next(&it, &pair);
            if (r < 0) { st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.merges: JSON syntax error at entry %u", rank + (uint32_t)k); break; }
            if (r == 0) { eof = true; break; }
            size_t al = 0, base = bb.n;
            if (pair) {
                if (!tok_buf_append(&bb, it.a.p ? it.a.p : "", it.a.n) || !tok_buf_append(&bb, it.b.p ? it.b.p : "", it.b.n)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE merges"); break; }
                e[k].a = base; e[k].al = it.a.n; e[k].c = base + it.a.n; e[k].cl = it.b.n;
            } else {
                if ((st = split_merge_string(it.a.p ? it.a.p : "", it.a.n, rank + (uint32_t)k, &al))) break;
                if (!tok_buf_append(&bb, it.a.p, it.a.n)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE merges"); break; }
                e[k].a = base; e[k].al = al; e[k].c = base + al + 1; e[k].cl = it.a.n - al - 1;
            }
            k++;
        }
        if (st) break;
        /* joined strings: a + c[prefix_len..] */
        for (size_t i = 0; i < k && !st; i++) {
            size_t skip = e[i].cl >= b->prefix_len ? b->prefix_len : 0;
            e[i].j = bb.n;
            e[i].jl = e[i].al + e[i].cl - skip;
            if (!tok_buf_reserve(&bb, e[i].jl)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE merges"); break; }
            memcpy(bb.p + bb.n, bb.p + e[i].a, e[i].al);
            memcpy(bb.p + bb.n + e[i].al, bb.p + e[i].c + skip, e[i].cl - skip);
            bb.n += e[i].jl;
        }
        if (st) break;
        for (size_t i = 0; i < k; i++) {
            e[i].ha = tok_hash_bytes(bb.p + e[i].a, e[i].al);
            e[i].hc = tok_hash_bytes(bb.p + e[i].c, e[i].cl);
            e[i].hj = tok_hash_bytes(bb.p + e[i].j, e[i].jl);
            tok_vocab_prefetch(&b->vocab, e[i].ha);
            tok_vocab_prefetch(&b->vocab, e[i].hc);
            tok_vocab_prefetch(&b->vocab, e[i].hj);
        }
        /* resolve ids first, then prefetch the merge slots before inserting */
        int32_t ia_[BATCH], ic_[BATCH], nid_[BATCH];
        for (size_t i = 0; i < k; i++) {
            ia_[i] = tok_vocab_find_h(&b->vocab, bb.p + e[i].a, e[i].al, e[i].ha);
            ic_[i] = tok_vocab_find_h(&b->vocab, bb.p + e[i].c, e[i].cl, e[i].hc);
            nid_[i] = tok_vocab_find_h(&b->vocab, bb.p + e[i].j, e[i].jl, e[i].hj);
            if (ia_[i] >= 0 && ic_[i] >= 0) __builtin_prefetch(&b->merges[mhash(mkey(ia_[i], ic_[i])) & (b->n_mslots - 1)]);
        }
        for (size_t i = 0; i < k; i++, rank++) {
            int32_t ia = ia_[i], ic = ic_[i], nid = nid_[i];
            if (ia < 0 || ic < 0) { st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.merges[%u]: token not in vocab", rank); break; }
            if (nid < 0) { st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.merges[%u]: merged token not in vocab", rank); break; }
            if (!merge_put(b, ia, ic, rank, nid)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE merges"); break; }
            note_cross(b, bb.p + e[i].a, e[i].al, bb.p + e[i].c, e[i].cl);
        }
    }
    tok_buf_free(&bb);
    tok_jiter_free(&it);
    return st;
}

/* model.merges from its parsed array: "a b" strings or [a, b] pairs */
static lmx_status merges_json(tok_bpe *b, const cJSON *merges) {
    lmx_status st = LMX_OK;
    tok_buf joined = {0};
    uint32_t rank = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, merges) {
        if (cJSON_IsString(it)) {
            size_t al = 0, n = strlen(it->valuestring);
            if (!(st = split_merge_string(it->valuestring, n, rank, &al)))
                st = add_merge(b, it->valuestring, al, it->valuestring + al + 1, n - al - 1, rank, &joined);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            const char *a = it->child->valuestring, *c = it->child->next->valuestring;
            st = add_merge(b, a, strlen(a), c, strlen(c), rank, &joined);
        } else st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.merges[%u] is neither \"a b\" nor [a, b]", rank);
        if (st) break;
        rank++;
    }
    tok_buf_free(&joined);
    return st;
}

lmx_status tok_bpe_parse(const cJSON *model, const char *raw_vocab, size_t raw_vocab_len, const char *raw_merges,
                         size_t raw_merges_len, tok_bpe **out) {
    *out = NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    bool raw = raw_vocab_len > 0;
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0)
        return lmx_error(LMX_ERR_UNSUPPORTED, "tokenizer model type %s is not supported", type->valuestring);
    if (!raw && !cJSON_IsObject(vocab)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "model.vocab missing or not an object");
    if (!type && !merges && !raw_merges_len) return lmx_error(LMX_ERR_UNSUPPORTED, "tokenizer model without \"type\" and merges is not supported");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0.0)
        return lmx_error(LMX_ERR_UNSUPPORTED, "BPE dropout %g is not supported", dropout->valuedouble);
    tok_bpe *b = calloc(1, sizeof *b);
    if (!b) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE model");
    lmx_status st = tok_vocab_init(&b->vocab, raw ? raw_vocab_len / 24 : (size_t)cJSON_GetArraySize(vocab));
    if (!st) st = raw ? vocab_raw(b, raw_vocab, raw_vocab_len) : vocab_json(b, vocab);
    b->prefix = opt_string(cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix"), &b->prefix_len);
    b->suffix = opt_string(cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix"), &b->suffix_len);
    b->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    b->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    b->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    b->unk_id = -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (!st && cJSON_IsString(unk)) b->unk_id = tok_vocab_find(&b->vocab, unk->valuestring, strlen(unk->valuestring));
    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        b->byte_ids[i] = st ? -1 : tok_vocab_find(&b->vocab, name, 6);
    }
    b->spm_split = !st && !b->prefix_len && !b->suffix_len && tok_vocab_find(&b->vocab, META, 3) >= 0;
    if (!st && raw && raw_merges_len) {
        /* pre-size the merge table: merges rarely outnumber 2x the vocab (it grows if they do) */
        size_t want = 1024;
        while (want < 4 * b->vocab.count) want *= 2;
        b->merges = calloc(want, sizeof *b->merges);
        if (!b->merges) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE merges");
        b->n_mslots = b->merges ? want : 0;
    }
    if (!st && raw && raw_merges_len) st = merges_raw(b, raw_merges, raw_merges_len);
    else if (!st && cJSON_IsArray(merges)) st = merges_json(b, merges);
    if (!st) {
        b->cache = calloc(CACHE_SLOTS, sizeof *b->cache);
        if (!b->cache) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE word cache");
        else
            for (int i = 0; i < CACHE_LOCKS; i++) pthread_mutex_init(&b->locks[i], NULL);
    }
    if (st) {
        tok_bpe_free(b);
        return st;
    }
    *out = b;
    return LMX_OK;
}

static bool cache_get(const tok_bpe *b, const char *w, size_t n, uint64_t h, tok_ids *out) {
    size_t slot = h & (CACHE_SLOTS - 1);
    pthread_mutex_t *lk = (pthread_mutex_t *)&b->locks[slot & (CACHE_LOCKS - 1)];
    const cache_entry *e = &b->cache[slot];
    int32_t ids[CACHE_IDS];
    size_t k = 0;
    bool hit = false;
    pthread_mutex_lock(lk);
    if (e->wlen == n && e->nids && e->tag == (uint32_t)(h >> 32) && !memcmp(e->word, w, n)) {
        k = e->nids;
        memcpy(ids, e->ids, k * sizeof *ids);
        hit = true;
    }
    pthread_mutex_unlock(lk);
    return hit && tok_ids_append(out, ids, k);
}

static void cache_put(const tok_bpe *b, const char *w, size_t n, uint64_t h, const int32_t *ids, size_t k) {
    size_t slot = h & (CACHE_SLOTS - 1);
    pthread_mutex_t *lk = (pthread_mutex_t *)&b->locks[slot & (CACHE_LOCKS - 1)];
    cache_entry *e = (cache_entry *)&b->cache[slot];
    pthread_mutex_lock(lk);
    e->tag = (uint32_t)(h >> 32);
    e->wlen = (uint8_t)n;
    e->nids = (uint8_t)k;
    memcpy(e->word, w, n);
    memcpy(e->ids, ids, k * sizeof *ids);
    pthread_mutex_unlock(lk);
}

/* ---- encoding one word ---- */

typedef struct { int32_t id, prev, next; uint32_t len; } sym;
typedef struct { uint32_t rank; int32_t pos, new_id; } hentry;

static inline bool h_less(const hentry *x, const hentry *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}
static void h_push(hentry *h, size_t *n, hentry e) {
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!h_less(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}
static hentry h_pop(hentry *h, size_t *n) {
    hentry top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const hentry *best = &last;
        if (l < *n && h_less(&h[l], best)) { m = l; best = &h[l]; }
        if (r < *n && h_less(&h[r], best)) { m = r; }
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = last;
    return top;
}

#define STACK_SYMS 128


lmx_status tok_bpe_encode_word(const tok_bpe *b, const char *w, size_t n, tok_ids *out) {
    if (n == 0) return LMX_OK;
    if (b->ignore_merges) {
        int32_t id = tok_vocab_find(&b->vocab, w, n);
        if (id >= 0) return tok_ids_push(out, id) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE");
    }
    if (b->spm_split && n > CACHE_WORD) {
        /* cut before each safe "▁" and encode the pieces (they cannot interact) */
        size_t start = 0;
        for (size_t i = 1; i + 3 <= n; i++) {
            if (memcmp(w + i, META, 3) != 0) continue;
            size_t k = i;
            while (k > 0 && ((unsigned char)w[k - 1] & 0xC0) == 0x80) k--;
            k = k > 0 ? k - 1 : 0;
            int adv;
            uint32_t prev = tok_utf8_decode(w + k, i - k, &adv);
            if (prev == 0x2581) continue;
            bool cross = false;
            for (size_t c = 0; c < b->n_cross; c++) cross = cross || b->cross_last[c] == prev;
            if (cross) continue;
            lmx_status st = tok_bpe_encode_piece(b, w + start, i - start, out);
            if (st) return st;
            start = i;
            i += 2;
        }
        return tok_bpe_encode_piece(b, w + start, n - start, out);
    }
    return tok_bpe_encode_piece(b, w, n, out);
}

lmx_status tok_bpe_encode_piece(const tok_bpe *b, const char *w, size_t n, tok_ids *out) {
    if (n == 0) return LMX_OK;
    bool cacheable = b->cache && n <= CACHE_WORD;
    uint64_t h = cacheable ? tok_hash_bytes(w, n) : 0;
    size_t out_base = out->n;
    if (cacheable && cache_get(b, w, n, h, out)) return LMX_OK;
    /* at most 4 symbols per byte with byte fallback (1 per byte), so n symbols suffice */
    sym sbuf[STACK_SYMS];
    hentry hbuf[STACK_SYMS * 2];
    sym *s = sbuf;
    hentry *heap = hbuf;
    size_t hcap = STACK_SYMS * 2;
    if (n > STACK_SYMS) {
        s = malloc(n * sizeof *s);
        hcap = 2 * n + 4;
        heap = malloc(hcap * sizeof *heap);
        if (!s || !heap) {
            if (s != sbuf) free(s);
            if (heap != hbuf) free(heap);
            return lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE word of %zu bytes", n);
        }
    }
    size_t ns = 0;
    int32_t unk_pending = -1;
    uint32_t unk_len = 0;
    tok_buf tmp = {0};
    lmx_status st = LMX_OK;
    for (size_t i = 0; i < n;) {
        size_t cl = (size_t)tok_utf8_len((unsigned char)w[i]);
        if (i + cl > n) cl = n - i;
        bool first = i == 0, last = i + cl == n;
        int32_t id;
        if ((!first && b->prefix_len) || (last && b->suffix_len)) {
            tmp.n = 0;
            if ((!first && !tok_buf_append(&tmp, b->prefix, b->prefix_len)) || !tok_buf_append(&tmp, w + i, cl) ||
                (last && !tok_buf_append(&tmp, b->suffix, b->suffix_len))) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE"); break; }
            id = tok_vocab_find(&b->vocab, tmp.p, tmp.n);
        } else id = tok_vocab_find(&b->vocab, w + i, cl);
        if (id >= 0) {
            if (unk_pending >= 0) { s[ns++] = (sym){unk_pending, 0, 0, unk_len}; unk_pending = -1; }
            s[ns++] = (sym){id, 0, 0, (uint32_t)cl};
        } else {
            bool done = false;
            if (b->byte_fallback) {
                bool all = true;
                for (size_t k = 0; k < cl; k++) all = all && b->byte_ids[(unsigned char)w[i + k]] >= 0;
                if (all) { /* note: HF adds these before any pending unk */
                    for (size_t k = 0; k < cl; k++) s[ns++] = (sym){b->byte_ids[(unsigned char)w[i + k]], 0, 0, 1};
                    done = true;
                }
            }
            if (!done && b->unk_id >= 0) {
                if (unk_pending >= 0 && b->fuse_unk) unk_len += (uint32_t)cl;
                else {
                    if (unk_pending >= 0) s[ns++] = (sym){unk_pending, 0, 0, unk_len};
                    unk_pending = b->unk_id;
                    unk_len = (uint32_t)cl;
                }
            }
        }
        i += cl;
    }
    tok_buf_free(&tmp);
    if (!st && unk_pending >= 0) s[ns++] = (sym){unk_pending, 0, 0, unk_len};
    if (!st) {
        for (size_t i = 0; i < ns; i++) { s[i].prev = (int32_t)i - 1; s[i].next = i + 1 < ns ? (int32_t)i + 1 : -1; }
        size_t hn = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            const merge_slot *m = merge_get(b, s[i].id, s[i + 1].id);
            if (m) h_push(heap, &hn, (hentry){m->rank, (int32_t)i, m->new_id});
        }
        while (hn) {
            hentry top = h_pop(heap, &hn);
            sym *cur = &s[top.pos];
            if (cur->len == 0 || cur->next < 0) continue;
            sym *right = &s[cur->next];
            const merge_slot *m = merge_get(b, cur->id, right->id);
            if (!m || m->new_id != top.new_id) continue;
            cur->id = top.new_id;
            cur->len += right->len;
            right->len = 0;
            cur->next = right->next;
            if (cur->next >= 0) s[cur->next].prev = top.pos;
            if (hn + 2 > hcap) { /* cannot happen: each merge removes a symbol; guard anyway */
                st = lmx_error(LMX_ERR_INVALID_ARGUMENT, "BPE heap overflow");
                break;
            }
            if (cur->prev >= 0) {
                const merge_slot *pm = merge_get(b, s[cur->prev].id, cur->id);
                if (pm) h_push(heap, &hn, (hentry){pm->rank, cur->prev, pm->new_id});
            }
            if (cur->next >= 0) {
                const merge_slot *nm = merge_get(b, cur->id, s[cur->next].id);
                if (nm) h_push(heap, &hn, (hentry){nm->rank, top.pos, nm->new_id});
            }
        }
        for (size_t i = 0; i < ns && !st; i++)
            if (s[i].len && !tok_ids_push(out, s[i].id)) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "BPE");
        if (!st && cacheable && out->n - out_base <= CACHE_IDS && out->n > out_base)
            cache_put(b, w, n, h, out->v + out_base, out->n - out_base);
    }
    if (s != sbuf) free(s);
    if (heap != hbuf) free(heap);
    return st;
}
