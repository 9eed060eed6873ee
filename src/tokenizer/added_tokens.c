/* added_tokens.c — tokenizer.json "added_tokens": matched on the input before the model runs, with
 * HF's AddedVocabulary semantics: leftmost-longest, non-overlapping matches (an Aho-Corasick
 * LeftmostLongest scan); tokens with normalized:false are matched on the raw text, the others on
 * the normalized text (their content normalized too); single_word requires no word character
 * (\w) on either side; lstrip/rstrip absorb adjacent whitespace. Immutable after parse. */
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct { int32_t first_child, sibling, token; unsigned char byte; } tnode;
typedef struct {
    tnode *nodes;        /* [n_nodes] node 0 = root */
    size_t n_nodes, cap;
    bool first[256];     /* bytes that start some pattern */
} trie;

struct tok_added {
    tok_added_token *tok; /* [n] in file order */
    size_t n;
    tok_vocab by_content; /* content -> id */
    int32_t *by_id;       /* [by_id_n] id -> index into tok, -1 if not an added token */
    size_t by_id_n;
    trie raw, norm;       /* normalized:false / normalized:true sets */
};

void tok_splits_free(tok_splits *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

static bool splits_push(tok_splits *s, int32_t id, size_t a, size_t b) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        tok_split *n = realloc(s->v, cap * sizeof *n);
        if (!n) return false;
        s->v = n;
        s->cap = cap;
    }
    s->v[s->n++] = (tok_split){id, (uint32_t)a, (uint32_t)b};
    return true;
}

static bool trie_insert(trie *t, const char *s, size_t n, int32_t token_index) {
    if (!t->nodes) {
        t->cap = 256;
        t->nodes = malloc(t->cap * sizeof *t->nodes);
        if (!t->nodes) return false;
        t->nodes[0] = (tnode){-1, -1, -1, 0};
        t->n_nodes = 1;
    }
    if (n == 0) return true;
    t->first[(unsigned char)s[0]] = true;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t ch = t->nodes[cur].first_child;
        while (ch >= 0 && t->nodes[ch].byte != c) ch = t->nodes[ch].sibling;
        if (ch < 0) {
            if (t->n_nodes == t->cap) {
                tnode *nn = realloc(t->nodes, 2 * t->cap * sizeof *nn);
                if (!nn) return false;
                t->nodes = nn;
                t->cap *= 2;
            }
            ch = (int32_t)t->n_nodes++;
            t->nodes[ch] = (tnode){-1, t->nodes[cur].first_child, -1, c};
            t->nodes[cur].first_child = ch;
        }
        cur = ch;
    }
    if (t->nodes[cur].token < 0) t->nodes[cur].token = token_index; /* first pattern wins on duplicates */
    return true;
}

/* Longest pattern starting at s[i]: returns its token index (or -1) and length. */
static int32_t trie_longest(const trie *t, const char *s, size_t n, size_t i, size_t *len) {
    int32_t cur = 0, best = -1;
    for (size_t k = i; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        int32_t ch = t->nodes[cur].first_child;
        while (ch >= 0 && t->nodes[ch].byte != c) ch = t->nodes[ch].sibling;
        if (ch < 0) break;
        cur = ch;
        if (t->nodes[cur].token >= 0) { best = t->nodes[cur].token; *len = k + 1 - i; }
    }
    return best;
}

void tok_added_free(tok_added *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n; i++) free(a->tok[i].content);
    free(a->tok);
    tok_vocab_free(&a->by_content);
    free(a->by_id);
    free(a->raw.nodes);
    free(a->norm.nodes);
    free(a);
}

lmx_status tok_added_parse(const cJSON *arr, const tok_normalizer *nz, tok_added **out) {
    *out = NULL;
    tok_added *a = calloc(1, sizeof *a);
    if (!a) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
    size_t cnt = cJSON_IsArray(arr) ? (size_t)cJSON_GetArraySize(arr) : 0;
    lmx_status st = tok_vocab_init(&a->by_content, cnt + 16);
    a->tok = calloc(cnt + 1, sizeof *a->tok);
    if (!st && !a->tok) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
    tok_buf norm = {0};
    const cJSON *it;
    if (!st && cnt) cJSON_ArrayForEach(it, arr) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content)) {
            st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "added_tokens[%zu]: needs \"id\" and \"content\"", a->n);
            break;
        }
        if (!(id->valuedouble >= 0 && id->valuedouble <= TOK_MAX_ID) || id->valuedouble != (int32_t)id->valuedouble) {
            st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "added_tokens[%zu]: id %g is not an integer in [0, %d]", a->n,
                           id->valuedouble, TOK_MAX_ID);
            break;
        }
        tok_added_token *t = &a->tok[a->n];
        t->len = strlen(content->valuestring);
        if (t->len == 0) continue; /* HF ignores empty added tokens */
        t->content = malloc(t->len + 1);
        if (!t->content) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens"); break; }
        memcpy(t->content, content->valuestring, t->len + 1);
        t->id = (int32_t)id->valuedouble;
        t->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
        t->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "lstrip"));
        t->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "rstrip"));
        t->single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "single_word"));
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "normalized");
        t->normalized = nm ? cJSON_IsTrue(nm) : !t->special;
        a->n++; /* counted before the add so that tok_added_free releases t->content on failure */
        st = tok_vocab_add(&a->by_content, t->content, t->len, t->id);
        if (st) break;
    }
    if (!st) {
        for (size_t i = 0; i < a->n; i++)
            if ((size_t)a->tok[i].id + 1 > a->by_id_n) a->by_id_n = (size_t)a->tok[i].id + 1;
        a->by_id = malloc((a->by_id_n + 1) * sizeof *a->by_id);
        if (!a->by_id) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
        else {
            for (size_t i = 0; i < a->by_id_n; i++) a->by_id[i] = -1;
            for (size_t i = 0; i < a->n; i++) a->by_id[a->tok[i].id] = (int32_t)i; /* the last entry wins */
        }
    }
    /* HF builds the matchers from the special tokens first, then the others (first wins on ties) */
    for (int pass = 0; pass < 2 && !st; pass++)
        for (size_t i = 0; i < a->n && !st; i++) {
            tok_added_token *t = &a->tok[i];
            if (t->special != (pass == 0)) continue;
            bool ok;
            if (!t->normalized) ok = trie_insert(&a->raw, t->content, t->len, (int32_t)i);
            else {
                st = tok_normalizer_apply(nz, t->content, t->len, &norm);
                ok = st || trie_insert(&a->norm, norm.p ? norm.p : "", norm.n, (int32_t)i);
            }
            if (!st && !ok) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
        }
    tok_buf_free(&norm);
    if (st) {
        tok_added_free(a);
        return st;
    }
    *out = a;
    return LMX_OK;
}

size_t tok_added_count(const tok_added *a) { return a ? a->n : 0; }
const tok_added_token *tok_added_get(const tok_added *a, size_t i) { return a && i < a->n ? &a->tok[i] : NULL; }

const tok_added_token *tok_added_by_id(const tok_added *a, int32_t id) {
    if (!a || id < 0 || (size_t)id >= a->by_id_n || a->by_id[id] < 0) return NULL;
    return &a->tok[a->by_id[id]];
}

int32_t tok_added_find(const tok_added *a, const char *s, size_t n) {
    return a ? tok_vocab_find(&a->by_content, s, n) : -1;
}

/* Rust regex \w (Unicode): alphabetic, marks, decimal digits, connector punctuation, joiners. */
static bool is_word_cp(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || k == UTF8PROC_CATEGORY_NL ||
           (k >= UTF8PROC_CATEGORY_MN && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
           k == UTF8PROC_CATEGORY_PC;
}

static size_t prev_cp_start(const char *s, size_t i) {
    size_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k;
}

lmx_status tok_added_split(const tok_added *a, bool normalized_set, const char *s, size_t n, tok_splits *out) {
    out->n = 0;
    const trie *t = a ? (normalized_set ? &a->norm : &a->raw) : NULL;
    if (!t || t->n_nodes <= 1) {
        if (n && !splits_push(out, -1, 0, n)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
        return LMX_OK;
    }
    size_t start_off = 0, i = 0;
    while (i < n) {
        if (!t->first[(unsigned char)s[i]]) { i++; continue; }
        size_t len = 0;
        int32_t ti = trie_longest(t, s, n, i, &len);
        if (ti < 0) { i++; continue; }
        const tok_added_token *tk = &a->tok[ti];
        size_t ms = i, me = i + len;
        i = me; /* the scan resumes after this match even when it is rejected (like find_iter) */
        if (tk->single_word) {
            int adv;
            bool start_ok = ms == 0 || !is_word_cp(tok_utf8_decode(s + prev_cp_start(s, ms), ms - prev_cp_start(s, ms), &adv));
            bool stop_ok = me == n || !is_word_cp(tok_utf8_decode(s + me, n - me, &adv));
            if (!start_ok || !stop_ok) continue;
        }
        if (tk->lstrip) {
            size_t ns = ms;
            while (ns > 0) {
                size_t k = prev_cp_start(s, ns);
                int adv;
                if (!tok_is_whitespace(tok_utf8_decode(s + k, ns - k, &adv))) break;
                ns = k;
            }
            ms = ns > start_off ? ns : start_off;
        }
        if (tk->rstrip)
            while (me < n) {
                int adv;
                if (!tok_is_whitespace(tok_utf8_decode(s + me, n - me, &adv))) break;
                me += (size_t)adv;
            }
        if (ms < start_off) continue; /* overlaps what an rstrip already took */
        if (start_off < ms && !splits_push(out, -1, start_off, ms)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
        if (!splits_push(out, tk->id, ms, me)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
        start_off = me;
        if (i < me) i = me;
    }
    if (start_off != n && !splits_push(out, -1, start_off, n)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "added tokens");
    return LMX_OK;
}
