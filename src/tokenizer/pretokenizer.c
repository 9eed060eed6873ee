/* pretokenizer.c — tokenizer.json pre-tokenizers: Split (Regex or String; Isolated, Removed,
 * MergedWithPrevious, MergedWithNext, Contiguous; invert), ByteLevel (optional GPT-2 regex,
 * add_prefix_space), Metaspace (prepend_scheme always/first/never, split), Digits, Whitespace,
 * WhitespaceSplit, Punctuation and Sequence. Immutable after parse; per-call state on the stack. */
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS } behavior;
typedef enum { PT_SPLIT, PT_BYTELEVEL, PT_METASPACE, PT_DIGITS, PT_WHITESPACE, PT_WSSPLIT, PT_PUNCT, PT_SEQ } pt_kind;
typedef enum { PS_ALWAYS, PS_FIRST, PS_NEVER } prepend_scheme;

struct tok_pretok {
    pt_kind kind;
    tok_regex re;          /* Split / ByteLevel(use_regex) / Whitespace */
    behavior beh;
    bool invert;
    bool add_prefix_space, use_regex;   /* ByteLevel */
    char repl[8];                       /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    prepend_scheme scheme;
    bool split;
    bool individual_digits;
    tok_pretok **seq;
    size_t n_seq;
};

#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define WHITESPACE_RE "[\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200c}\\x{200d}]+|[^\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200c}\\x{200d}\\s]+"

void tok_pieces_free(tok_pieces *p) {
    tok_buf_free(&p->text);
    free(p->sp);
    memset(p, 0, sizeof *p);
}

static bool pieces_push(tok_pieces *p, size_t s, size_t e) {
    if (s == e) return true; /* empty splits are dropped, as in HF */
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        tok_span *n = realloc(p->sp, cap * sizeof *n);
        if (!n) return false;
        p->sp = n;
        p->cap = cap;
    }
    p->sp[p->n].s = (uint32_t)s;
    p->sp[p->n].e = (uint32_t)e;
    p->n++;
    return true;
}

void tok_pretok_free(tok_pretok *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_seq; i++) tok_pretok_free(p->seq[i]);
    free(p->seq);
    tok_regex_free(&p->re);
    free(p);
}

static lmx_status parse_behavior(const cJSON *j, behavior *b) {
    if (!cJSON_IsString(j)) { *b = B_ISOLATED; return LMX_OK; }
    const char *s = j->valuestring;
    if (!strcmp(s, "Removed")) *b = B_REMOVED;
    else if (!strcmp(s, "Isolated")) *b = B_ISOLATED;
    else if (!strcmp(s, "MergedWithPrevious")) *b = B_MERGED_PREV;
    else if (!strcmp(s, "MergedWithNext")) *b = B_MERGED_NEXT;
    else if (!strcmp(s, "Contiguous")) *b = B_CONTIGUOUS;
    else return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "unknown split behavior %s", s);
    return LMX_OK;
}

lmx_status tok_pretok_parse(const cJSON *j, tok_pretok **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return LMX_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "pre_tokenizer without a \"type\"");
    const char *t = type->valuestring;
    tok_pretok *p = calloc(1, sizeof *p);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "pre_tokenizer");
    lmx_status st = LMX_OK;
    if (!strcmp(t, "Split")) {
        p->kind = PT_SPLIT;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        p->invert = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "invert"));
        st = parse_behavior(cJSON_GetObjectItemCaseSensitive(j, "behavior"), &p->beh);
        if (!st) {
            if (cJSON_IsString(ps)) st = tok_regex_compile(&p->re, ps->valuestring, true);
            else if (cJSON_IsString(pr)) st = tok_regex_compile(&p->re, pr->valuestring, false);
            else st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Split pre_tokenizer without a String or Regex pattern");
        }
    } else if (!strcmp(t, "ByteLevel")) {
        p->kind = PT_BYTELEVEL;
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(j, "use_regex");
        p->add_prefix_space = aps ? cJSON_IsTrue(aps) : true;
        p->use_regex = ur ? cJSON_IsTrue(ur) : true;
        if (p->use_regex) st = tok_regex_compile(&p->re, GPT2_RE, false);
    } else if (!strcmp(t, "Metaspace")) {
        p->kind = PT_METASPACE;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "replacement");
        const char *rs = cJSON_IsString(r) ? r->valuestring : "\xE2\x96\x81";
        p->repl_len = strlen(rs);
        if (p->repl_len == 0 || p->repl_len > 4) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Metaspace replacement must be one character");
        else memcpy(p->repl, rs, p->repl_len);
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
        if (cJSON_IsString(sc)) {
            if (!strcmp(sc->valuestring, "always")) p->scheme = PS_ALWAYS;
            else if (!strcmp(sc->valuestring, "first")) p->scheme = PS_FIRST;
            else if (!strcmp(sc->valuestring, "never")) p->scheme = PS_NEVER;
            else st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "unknown Metaspace prepend_scheme %s", sc->valuestring);
        } else p->scheme = (!aps || cJSON_IsTrue(aps)) ? PS_ALWAYS : PS_NEVER;
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "split");
        p->split = sp ? cJSON_IsTrue(sp) : true;
    } else if (!strcmp(t, "Digits")) {
        p->kind = PT_DIGITS;
        p->individual_digits = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "individual_digits"));
    } else if (!strcmp(t, "Whitespace")) {
        p->kind = PT_WHITESPACE;
        st = tok_regex_compile(&p->re, WHITESPACE_RE, false);
    } else if (!strcmp(t, "WhitespaceSplit")) {
        p->kind = PT_WSSPLIT;
    } else if (!strcmp(t, "Punctuation")) {
        p->kind = PT_PUNCT;
        st = parse_behavior(cJSON_GetObjectItemCaseSensitive(j, "behavior"), &p->beh);
    } else if (!strcmp(t, "Sequence")) {
        p->kind = PT_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        if (!cJSON_IsArray(arr)) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Sequence pre_tokenizer without \"pretokenizers\"");
        else {
            p->seq = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *p->seq);
            if (!p->seq) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "pre_tokenizer");
            const cJSON *it;
            cJSON_ArrayForEach(it, arr) {
                if (st) break;
                st = tok_pretok_parse(it, &p->seq[p->n_seq]);
                if (!st && p->seq[p->n_seq]) p->n_seq++;
            }
        }
    } else {
        st = lmx_error(LMX_ERR_UNSUPPORTED, "pre_tokenizer type %s is not supported", t);
    }
    if (st) {
        tok_pretok_free(p);
        return st;
    }
    *out = p;
    return LMX_OK;
}

/* ---- splitting one piece into (span, is_match) and applying a behavior ---- */

typedef struct { uint32_t s, e; bool m; } mspan;
typedef struct { mspan *v; size_t n, cap; } mlist;

static bool ml_push(mlist *l, size_t s, size_t e, bool m) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        mspan *n = realloc(l->v, cap * sizeof *n);
        if (!n) return false;
        l->v = n;
        l->cap = cap;
    }
    l->v[l->n++] = (mspan){(uint32_t)s, (uint32_t)e, m};
    return true;
}

typedef enum { CP_NUMERIC, CP_WHITESPACE, CP_PUNCT } cp_class;

static bool cp_is(cp_class k, uint32_t c) {
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    switch (k) {
    case CP_NUMERIC: return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
    case CP_WHITESPACE: return tok_is_whitespace(c);
    case CP_PUNCT:
        if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
        return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
    }
    return false;
}

/* Matches of a regex over s[a..b) as (span, is_match) covering the whole range.
 * Returns 1, 0 when out of memory, -1 on a regex error (detail set). */
static int find_regex(const tok_regex *re, pcre2_match_data *md, const char *s, size_t a, size_t b, bool invert, mlist *l) {
    size_t prev = a, pos = a, ms, me;
    int r;
    while (pos <= b && (r = tok_regex_next(re, md, s, b, pos, &ms, &me)) != 0) {
        if (r < 0) return -1;
        if (ms < a) break;
        if (prev != ms && !ml_push(l, prev, ms, invert)) return 0;
        if (!ml_push(l, ms, me, !invert)) return 0;
        prev = me;
        if (me == ms) {
            if (me >= b) break;
            pos = me + (size_t)tok_utf8_len((unsigned char)s[me]);
        } else pos = me;
    }
    if (prev != b && !ml_push(l, prev, b, invert)) return 0;
    return 1;
}

/* Per-character matches of a class over s[a..b). */
static bool find_class(cp_class k, const char *s, size_t a, size_t b, mlist *l) {
    size_t prev = a;
    for (size_t i = a; i < b;) {
        int adv;
        uint32_t c = tok_utf8_decode(s + i, b - i, &adv);
        if (cp_is(k, c)) {
            if (prev != i && !ml_push(l, prev, i, false)) return false;
            if (!ml_push(l, i, i + (size_t)adv, true)) return false;
            prev = i + (size_t)adv;
        }
        i += (size_t)adv;
    }
    if (prev != b && !ml_push(l, prev, b, false)) return false;
    return true;
}

/* Applies HF's SplitDelimiterBehavior to the match list and appends the resulting pieces. */
static bool apply_behavior(behavior beh, mlist *l, tok_pieces *out) {
    mspan *v = l->v;
    size_t n = l->n;
    switch (beh) {
    case B_ISOLATED:
        for (size_t i = 0; i < n; i++)
            if (!pieces_push(out, v[i].s, v[i].e)) return false;
        return true;
    case B_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!v[i].m && !pieces_push(out, v[i].s, v[i].e)) return false;
        return true;
    case B_CONTIGUOUS:
    case B_MERGED_PREV: {
        bool prev = false, have = false;
        size_t cs = 0, ce = 0;
        for (size_t i = 0; i < n; i++) {
            bool merge = beh == B_CONTIGUOUS ? (v[i].m == prev) : (v[i].m && !prev);
            if (merge && have) ce = v[i].e;
            else {
                if (have && !pieces_push(out, cs, ce)) return false;
                cs = v[i].s; ce = v[i].e; have = true;
            }
            prev = v[i].m;
        }
        return !have || pieces_push(out, cs, ce);
    }
    case B_MERGED_NEXT: {
        /* fold from the right, then emit in order */
        bool prev = false, have = false;
        size_t base = out->n, cs = 0, ce = 0;
        for (size_t k = n; k-- > 0;) {
            if (v[k].m && !prev && have) cs = v[k].s;
            else {
                if (have && !pieces_push(out, cs, ce)) return false;
                cs = v[k].s; ce = v[k].e; have = true;
            }
            prev = v[k].m;
        }
        if (have && !pieces_push(out, cs, ce)) return false;
        if (out->n > base) /* reverse the appended run */
            for (size_t i = base, j = out->n - 1; i < j; i++, j--) {
                tok_span t = out->sp[i]; out->sp[i] = out->sp[j]; out->sp[j] = t;
            }
        return true;
    }
    }
    return false;
}

/* One pre-tokenizer step: in -> out. `at_start` marks whether in's text begins the input. */
static lmx_status step(const tok_pretok *p, const tok_pieces *in, bool at_start, tok_pieces *out, pcre2_match_data **mdp);

static lmx_status oom(void) { return lmx_error(LMX_ERR_OUT_OF_MEMORY, "pre_tokenizer"); }

static pcre2_match_data *md_for(const tok_regex *re, pcre2_match_data **mdp) {
    /* one match-data block per call, sized for the largest pattern (all ours have few groups) */
    if (!*mdp) *mdp = pcre2_match_data_create(16, NULL);
    (void)re;
    return *mdp;
}

static lmx_status step_split_only(const tok_pretok *p, const tok_pieces *in, tok_pieces *out, pcre2_match_data **mdp) {
    out->text.n = 0;
    if (!tok_buf_append(&out->text, in->text.p ? in->text.p : "", in->text.n)) return oom();
    out->n = 0;
    mlist l = {0};
    lmx_status st = LMX_OK;
    for (size_t i = 0; i < in->n && !st; i++) {
        l.n = 0;
        size_t a = in->sp[i].s, b = in->sp[i].e;
        int ok;
        behavior beh = p->beh;
        switch (p->kind) {
        case PT_SPLIT: ok = find_regex(&p->re, md_for(&p->re, mdp), out->text.p, a, b, p->invert, &l); break;
        case PT_WHITESPACE: ok = find_regex(&p->re, md_for(&p->re, mdp), out->text.p, a, b, true, &l); beh = B_REMOVED; break;
        case PT_DIGITS: ok = find_class(CP_NUMERIC, out->text.p, a, b, &l); beh = p->individual_digits ? B_ISOLATED : B_CONTIGUOUS; break;
        case PT_WSSPLIT: ok = find_class(CP_WHITESPACE, out->text.p, a, b, &l); beh = B_REMOVED; break;
        case PT_PUNCT: ok = find_class(CP_PUNCT, out->text.p, a, b, &l); break;
        default: ok = false;
        }
        if (ok < 0) st = lmx_error_prefix(LMX_ERR_INVALID_ARGUMENT, "pre_tokenizer");
        else if (!ok || !apply_behavior(beh, &l, out)) st = oom();
    }
    free(l.v);
    return st;
}

static lmx_status step_bytelevel(const tok_pretok *p, const tok_pieces *in, tok_pieces *out, pcre2_match_data **mdp) {
    /* 1. optional prefix space + GPT-2 regex split (on the raw text) */
    tok_pieces mid = {0};
    const tok_pieces *src = in;
    if (p->add_prefix_space || p->use_regex) {
        for (size_t i = 0; i < in->n; i++) {
            size_t a = in->sp[i].s, b = in->sp[i].e;
            size_t base = mid.text.n;
            if (p->add_prefix_space && in->text.p[a] != ' ' && !tok_buf_putc(&mid.text, ' ')) goto fail;
            if (!tok_buf_append(&mid.text, in->text.p + a, b - a)) goto fail;
            size_t end = mid.text.n;
            if (p->use_regex) {
                mlist l = {0};
                int r = find_regex(&p->re, md_for(&p->re, mdp), mid.text.p, base, end, false, &l);
                bool ok = r > 0 && apply_behavior(B_ISOLATED, &l, &mid);
                free(l.v);
                if (r < 0) {
                    tok_pieces_free(&mid);
                    return lmx_error_prefix(LMX_ERR_INVALID_ARGUMENT, "ByteLevel pre_tokenizer");
                }
                if (!ok) goto fail;
            } else if (!pieces_push(&mid, base, end)) goto fail;
        }
        src = &mid;
    }
    /* 2. map every byte to its printable stand-in */
    out->text.n = 0;
    out->n = 0;
    for (size_t i = 0; i < src->n; i++) {
        size_t s0 = out->text.n;
        if (!tok_bytelevel_encode(&out->text, src->text.p + src->sp[i].s, src->sp[i].e - src->sp[i].s)) goto fail;
        if (!pieces_push(out, s0, out->text.n)) goto fail;
    }
    tok_pieces_free(&mid);
    return LMX_OK;
fail:
    tok_pieces_free(&mid);
    return oom();
}

static lmx_status step_metaspace(const tok_pretok *p, const tok_pieces *in, bool at_start, tok_pieces *out) {
    out->text.n = 0;
    out->n = 0;
    mlist l = {0};
    for (size_t i = 0; i < in->n; i++) {
        size_t a = in->sp[i].s, b = in->sp[i].e;
        size_t base = out->text.n;
        /* replace ' ' by the replacement */
        const char *s = in->text.p;
        bool starts_repl = (b - a >= p->repl_len && !memcmp(s + a, p->repl, p->repl_len)) || s[a] == ' ';
        bool prepend = !starts_repl && (p->scheme == PS_ALWAYS || (p->scheme == PS_FIRST && at_start && a == 0));
        if (prepend && !tok_buf_append(&out->text, p->repl, p->repl_len)) goto fail;
        for (size_t k = a; k < b; k++) {
            bool ok = s[k] == ' ' ? tok_buf_append(&out->text, p->repl, p->repl_len) : tok_buf_putc(&out->text, s[k]);
            if (!ok) goto fail;
        }
        size_t end = out->text.n;
        if (!p->split) {
            if (!pieces_push(out, base, end)) goto fail;
            continue;
        }
        /* split on the replacement, MergedWithNext */
        l.n = 0;
        size_t prev = base;
        for (size_t k = base; k + p->repl_len <= end;) {
            if (!memcmp(out->text.p + k, p->repl, p->repl_len)) {
                if (prev != k && !ml_push(&l, prev, k, false)) goto fail;
                if (!ml_push(&l, k, k + p->repl_len, true)) goto fail;
                k += p->repl_len;
                prev = k;
            } else k++;
        }
        if (prev != end && !ml_push(&l, prev, end, false)) goto fail;
        if (!apply_behavior(B_MERGED_NEXT, &l, out)) goto fail;
    }
    free(l.v);
    return LMX_OK;
fail:
    free(l.v);
    return oom();
}

static lmx_status step(const tok_pretok *p, const tok_pieces *in, bool at_start, tok_pieces *out, pcre2_match_data **mdp) {
    switch (p->kind) {
    case PT_BYTELEVEL: return step_bytelevel(p, in, out, mdp);
    case PT_METASPACE: return step_metaspace(p, in, at_start, out);
    case PT_SEQ: {
        tok_pieces a = {0}, b = {0};
        if (!tok_buf_append(&a.text, in->text.p ? in->text.p : "", in->text.n)) return oom();
        for (size_t i = 0; i < in->n; i++)
            if (!pieces_push(&a, in->sp[i].s, in->sp[i].e)) { tok_pieces_free(&a); return oom(); }
        for (size_t i = 0; i < p->n_seq; i++) {
            lmx_status st = step(p->seq[i], &a, at_start, &b, mdp);
            if (st) { tok_pieces_free(&a); tok_pieces_free(&b); return st; }
            tok_pieces t = a; a = b; b = t;
        }
        tok_pieces_free(&b);
        tok_pieces_free(out);
        *out = a;
        return LMX_OK;
    }
    default: return step_split_only(p, in, out, mdp);
    }
}

lmx_status tok_pretok_apply(const tok_pretok *p, const char *s, size_t n, bool at_start, tok_pieces *out) {
    out->text.n = 0;
    out->n = 0;
    if (!p) {
        if (!tok_buf_append(&out->text, s, n) || !pieces_push(out, 0, n)) return oom();
        return LMX_OK;
    }
    tok_pieces in = {0};
    if (!tok_buf_append(&in.text, s, n) || !pieces_push(&in, 0, n)) { tok_pieces_free(&in); return oom(); }
    pcre2_match_data *md = NULL;
    lmx_status st = step(p, &in, at_start, out, &md);
    if (md) pcre2_match_data_free(md);
    tok_pieces_free(&in);
    return st;
}
