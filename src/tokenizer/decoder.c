/* decoder.c — tokenizer.json decoders as a streaming pipeline: ByteLevel, Metaspace, Replace,
 * ByteFallback, Fuse, Strip and Sequence (flattened); no decoder = join with " ".
 *
 * Each stage receives chunks of text tagged with "this chunk ends the current token" and passes
 * chunks on as soon as they can no longer change; stages that fuse tokens (ByteLevel, Fuse) emit
 * one long token whose end is only known at finish. Running all tokens through and finishing gives
 * exactly HF's decode_chain result, so the streaming detokenizer (detok_stream.c) and decode()
 * share this code and agree by construction. The parsed decoder is immutable; tok_dstate holds
 * the per-stream state. */
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { D_BYTELEVEL, D_METASPACE, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_JOIN } d_kind;

typedef struct {
    d_kind kind;
    /* Replace */
    tok_regex re;
    bool literal;
    char *pat, *content;
    size_t pat_len, content_len;
    /* Metaspace */
    char repl[8];
    size_t repl_len;
    bool strip_first; /* prepend_scheme != never */
    /* Strip */
    uint32_t strip_cp;
    char strip_utf8[4];
    int strip_len;
    size_t start, stop;
} dstage;

struct tok_decoder {
    dstage *st;
    size_t n;
};

typedef struct {
    tok_buf tok;       /* token text gathered so far (stages that need whole tokens) */
    tok_buf pend;      /* ByteLevel: pending raw bytes; ByteFallback: pending byte group */
    bool mid;          /* inside a token (a chunk without `end` was seen) */
    bool pass;         /* ByteFallback: the current token is known not to be <0xHH> */
    size_t index;      /* Metaspace: tokens seen; Join: tokens seen */
    size_t lead_left;  /* Strip: leading content chars still removable in this token */
    bool in_lead;
    size_t tail;       /* Strip: held trailing content chars */
} dsst;

struct tok_dstate {
    const tok_decoder *d;
    dsst *s;
    tok_buf *out;      /* sink of the current push/finish call */
    tok_buf scratch;
};

static void stage_free(dstage *s) {
    tok_regex_free(&s->re);
    free(s->pat);
    free(s->content);
}

void tok_decoder_free(tok_decoder *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) stage_free(&d->st[i]);
    free(d->st);
    free(d);
}

static lmx_status add_stage(tok_decoder *d, dstage *s) {
    dstage *n = realloc(d->st, (d->n + 1) * sizeof *n);
    if (!n) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "decoder");
    d->st = n;
    d->st[d->n++] = *s;
    return LMX_OK;
}

static char *dupz(const char *s, size_t *len) {
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    *len = n;
    return p;
}

static lmx_status parse_into(tok_decoder *d, const cJSON *j) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "decoder without a \"type\"");
    const char *t = type->valuestring;
    dstage s;
    memset(&s, 0, sizeof s);
    if (!strcmp(t, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "decoders");
        if (!cJSON_IsArray(arr)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Sequence decoder without \"decoders\"");
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            lmx_status st = parse_into(d, it);
            if (st) return st;
        }
        return LMX_OK;
    }
    if (!strcmp(t, "ByteLevel")) s.kind = D_BYTELEVEL;
    else if (!strcmp(t, "ByteFallback")) s.kind = D_BYTEFALLBACK;
    else if (!strcmp(t, "Fuse")) s.kind = D_FUSE;
    else if (!strcmp(t, "Metaspace")) {
        s.kind = D_METASPACE;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "replacement");
        const char *rs = cJSON_IsString(r) ? r->valuestring : "\xE2\x96\x81";
        s.repl_len = strlen(rs);
        if (s.repl_len == 0 || s.repl_len > 4) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Metaspace decoder replacement must be one character");
        memcpy(s.repl, rs, s.repl_len);
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
        if (cJSON_IsString(sc)) s.strip_first = strcmp(sc->valuestring, "never") != 0;
        else s.strip_first = !aps || cJSON_IsTrue(aps);
    } else if (!strcmp(t, "Replace")) {
        s.kind = D_REPLACE;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
        if (!cJSON_IsString(c) || (!cJSON_IsString(ps) && !cJSON_IsString(pr)))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Replace decoder needs a pattern and \"content\"");
        s.literal = cJSON_IsString(ps);
        s.pat = dupz(s.literal ? ps->valuestring : pr->valuestring, &s.pat_len);
        s.content = dupz(c->valuestring, &s.content_len);
        if (!s.pat || !s.content) { stage_free(&s); return lmx_error(LMX_ERR_OUT_OF_MEMORY, "decoder"); }
        if (s.literal && s.pat_len == 0) { stage_free(&s); return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Replace decoder with an empty pattern"); }
        lmx_status st = tok_regex_compile(&s.re, s.pat, s.literal);
        if (st) { stage_free(&s); return st; }
    } else if (!strcmp(t, "Strip")) {
        s.kind = D_STRIP;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
        if (!cJSON_IsString(c) || !*c->valuestring) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Strip decoder needs a one-character \"content\"");
        int adv;
        s.strip_cp = tok_utf8_decode(c->valuestring, strlen(c->valuestring), &adv);
        s.strip_len = tok_utf8_encode(s.strip_cp, s.strip_utf8);
        /* counts of characters to strip; past 2^32 strips everything anyway (and a double past
         * SIZE_MAX converted to size_t is undefined behaviour) */
        s.start = cJSON_IsNumber(a) && a->valuedouble > 0 ? (size_t)fmin(a->valuedouble, 4294967296.0) : 0;
        s.stop = cJSON_IsNumber(b) && b->valuedouble > 0 ? (size_t)fmin(b->valuedouble, 4294967296.0) : 0;
    } else return lmx_error(LMX_ERR_UNSUPPORTED, "decoder type %s is not supported", t);
    return add_stage(d, &s);
}

lmx_status tok_decoder_parse(const cJSON *j, tok_decoder **out) {
    *out = NULL;
    tok_decoder *d = calloc(1, sizeof *d);
    if (!d) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "decoder");
    lmx_status st;
    if (!j || cJSON_IsNull(j)) {
        dstage s;
        memset(&s, 0, sizeof s);
        s.kind = D_JOIN;
        st = add_stage(d, &s);
    } else st = parse_into(d, j);
    if (st) {
        tok_decoder_free(d);
        return st;
    }
    *out = d;
    return LMX_OK;
}

tok_dstate *tok_dstate_create(const tok_decoder *d) {
    tok_dstate *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->d = d;
    st->s = calloc(d->n + 1, sizeof *st->s);
    if (!st->s) { free(st); return NULL; }
    for (size_t i = 0; i < d->n; i++) { st->s[i].in_lead = true; st->s[i].lead_left = d->st[i].start; }
    return st;
}

void tok_dstate_destroy(tok_dstate *st) {
    if (!st) return;
    for (size_t i = 0; i < st->d->n; i++) { tok_buf_free(&st->s[i].tok); tok_buf_free(&st->s[i].pend); }
    tok_buf_free(&st->scratch);
    free(st->s);
    free(st);
}

/* ---- the pipeline ---- */

static bool push(tok_dstate *st, size_t i, const char *c, size_t n, bool end);

static bool emit(tok_dstate *st, size_t i, const char *c, size_t n, bool end) {
    if (i + 1 >= st->d->n) return tok_buf_append(st->out, c, n);
    return push(st, i + 1, c, n, end);
}

/* Appends the byte-level decoding of one token to pend: mapped bytes if every char is in the map,
 * else the token's own bytes (HF's ByteLevel decoder). */
static bool bytelevel_token(tok_buf *pend, const char *s, size_t n) {
    size_t base = pend->n;
    for (size_t i = 0; i < n;) {
        int adv;
        uint32_t cp = tok_utf8_decode(s + i, n - i, &adv);
        int b = tok_bytelevel_byte(cp);
        if (b < 0) { pend->n = base; return tok_buf_append(pend, s, n); }
        if (!tok_buf_putc(pend, (char)b)) return false;
        i += (size_t)adv;
    }
    return true;
}

static bool flush_group(tok_dstate *st, size_t i, dsst *x) {
    if (!x->pend.n) return true;
    bool ok = true;
    if (tok_utf8_validate(x->pend.p, x->pend.n) == x->pend.n) ok = emit(st, i, x->pend.p, x->pend.n, true);
    else
        for (size_t k = 0; k < x->pend.n && ok; k++) ok = emit(st, i, "\xEF\xBF\xBD", 3, true);
    x->pend.n = 0;
    return ok;
}

static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Next match of the stage's pattern in s[pos..n): literal patterns use memmem (no allocation);
 * regex patterns use PCRE2 with the caller's match data. */
static int next_match(const dstage *g, pcre2_match_data **md, const char *s, size_t n, size_t pos, size_t *ms, size_t *me) {
    if (g->literal) {
        if (pos >= n) return 0;
        const char *f = memmem(s + pos, n - pos, g->pat, g->pat_len);
        if (!f) return 0;
        *ms = (size_t)(f - s);
        *me = *ms + g->pat_len;
        return 1;
    }
    if (!*md) *md = pcre2_match_data_create(4, NULL);
    return tok_regex_next(&g->re, *md, s, n, pos, ms, me);
}

static bool replace_emit(tok_dstate *st, size_t i, const dstage *g, const char *s, size_t n, size_t *consumed, bool end) {
    /* replaces matches in s[0..n); when !end, stops before a possible partial match at the tail */
    pcre2_match_data *md = NULL;
    size_t pos = 0, ms, me;
    size_t limit = end ? n : (n + 1 > g->pat_len ? n + 1 - g->pat_len : 0);
    bool ok = true;
    tok_buf *o = &st->scratch;
    o->n = 0;
    int r = 0;
    while (ok && pos < n && (r = next_match(g, &md, s, n, pos, &ms, &me)) > 0) {
        if (!end && (ms >= limit || me > n)) break;
        ok = tok_buf_append(o, s + pos, ms - pos) && tok_buf_append(o, g->content, g->content_len);
        if (me == ms) {
            int adv = tok_utf8_len((unsigned char)s[ms]);
            ok = ok && tok_buf_append(o, s + ms, (size_t)adv);
            me = ms + (size_t)adv;
        }
        pos = me;
    }
    if (md) pcre2_match_data_free(md);
    if (r < 0) return false;
    size_t upto = end ? n : (limit > pos ? limit : pos);
    while (upto < n && upto > pos && ((unsigned char)s[upto] & 0xC0) == 0x80) upto--;
    if (ok && upto > pos) ok = tok_buf_append(o, s + pos, upto - pos);
    *consumed = upto;
    if (!ok) return false;
    /* emit from a copy: downstream stages reuse scratch */
    char stackbuf[256];
    char *cp = o->n <= sizeof stackbuf ? stackbuf : malloc(o->n);
    if (!cp) return false;
    memcpy(cp, o->p ? o->p : "", o->n);
    size_t cn = o->n;
    ok = emit(st, i, cp, cn, end);
    if (cp != stackbuf) free(cp);
    return ok;
}

static bool push(tok_dstate *st, size_t i, const char *c, size_t n, bool end) {
    const dstage *g = &st->d->st[i];
    dsst *x = &st->s[i];
    switch (g->kind) {
    case D_BYTELEVEL: {
        if (!tok_buf_append(&x->tok, c, n)) return false;
        if (!end) return true;
        bool ok = bytelevel_token(&x->pend, x->tok.p, x->tok.n);
        x->tok.n = 0;
        if (!ok) return false;
        tok_buf *o = &st->scratch;
        o->n = 0;
        size_t used = tok_utf8_lossy_append(o, (const unsigned char *)x->pend.p, x->pend.n, true);
        if (used == (size_t)-1) return false;
        memmove(x->pend.p, x->pend.p + used, x->pend.n - used);
        x->pend.n -= used;
        if (!o->n) return true;
        char stackbuf[512];
        char *cp = o->n <= sizeof stackbuf ? stackbuf : malloc(o->n);
        if (!cp) return false;
        memcpy(cp, o->p, o->n);
        size_t cn = o->n;
        ok = emit(st, i, cp, cn, false);
        if (cp != stackbuf) free(cp);
        return ok;
    }
    case D_FUSE:
    case D_JOIN:
        if (g->kind == D_JOIN && !x->mid) {
            if (x->index++ > 0 && !emit(st, i, " ", 1, false)) return false;
        }
        x->mid = !end;
        return n ? emit(st, i, c, n, false) : true;
    case D_METASPACE: {
        bool first = x->index == 0;
        size_t a = 0;
        bool ok = true;
        for (size_t k = 0; k + g->repl_len <= n && ok;) {
            if (!memcmp(c + k, g->repl, g->repl_len)) {
                if (k > a) ok = emit(st, i, c + a, k - a, false);
                if (ok && !(first && g->strip_first)) ok = emit(st, i, " ", 1, false);
                k += g->repl_len;
                a = k;
            } else k++;
        }
        if (ok) ok = emit(st, i, c + a, n - a, end);
        if (end) x->index++;
        return ok;
    }
    case D_REPLACE: {
        if (!g->literal) { /* regex: whole tokens only */
            if (!tok_buf_append(&x->tok, c, n)) return false;
            if (!end) return true;
            size_t used;
            tok_buf t = x->tok;
            x->tok = (tok_buf){0};
            bool ok = replace_emit(st, i, g, t.p ? t.p : "", t.n, &used, true);
            tok_buf_free(&t);
            return ok;
        }
        if (!x->tok.n && end) {
            size_t used;
            return replace_emit(st, i, g, c, n, &used, true);
        }
        if (!tok_buf_append(&x->tok, c, n)) return false;
        size_t used;
        tok_buf t = x->tok;
        x->tok = (tok_buf){0};
        bool ok = replace_emit(st, i, g, t.p ? t.p : "", t.n, &used, end);
        if (ok && !end && used < t.n) ok = tok_buf_append(&x->tok, t.p + used, t.n - used);
        tok_buf_free(&t);
        return ok;
    }
    case D_BYTEFALLBACK: {
        if (x->pass) { /* rest of a long token */
            if (end) x->pass = false;
            return emit(st, i, c, n, end);
        }
        if (!tok_buf_append(&x->tok, c, n)) return false;
        if (!end && x->tok.n <= 6) return true;
        int b = end ? byte_token(x->tok.p, x->tok.n) : -1;
        if (b >= 0) {
            x->tok.n = 0;
            return tok_buf_putc(&x->pend, (char)b);
        }
        if (!flush_group(st, i, x)) return false;
        if (!end) x->pass = true;
        /* downstream stages never touch this stage's buffer, so emit straight from it */
        bool ok = emit(st, i, x->tok.p ? x->tok.p : "", x->tok.n, end);
        x->tok.n = 0;
        return ok;
    }
    case D_STRIP: {
        bool ok = true;
        size_t a = 0;
        for (size_t k = 0; k < n && ok;) {
            int adv;
            uint32_t cp = tok_utf8_decode(c + k, n - k, &adv);
            if (x->in_lead && x->lead_left > 0 && cp == g->strip_cp) {
                x->lead_left--;
                k += (size_t)adv;
                a = k;
                continue;
            }
            x->in_lead = false;
            if (g->stop == 0) { k += (size_t)adv; continue; }
            if (cp == g->strip_cp) {
                if (k > a) ok = emit(st, i, c + a, k - a, false);
                x->tail++;
                if (x->tail > g->stop) { ok = ok && emit(st, i, g->strip_utf8, (size_t)g->strip_len, false); x->tail--; }
                k += (size_t)adv;
                a = k;
            } else {
                for (; x->tail && ok; x->tail--) ok = emit(st, i, g->strip_utf8, (size_t)g->strip_len, false);
                k += (size_t)adv;
            }
        }
        if (ok) ok = emit(st, i, c + a, n - a, end);
        if (end) { x->tail = 0; x->in_lead = true; x->lead_left = g->start; }
        return ok;
    }
    }
    return false;
}

static bool finish(tok_dstate *st, size_t i) {
    if (i >= st->d->n) return true;
    const dstage *g = &st->d->st[i];
    dsst *x = &st->s[i];
    bool ok = true;
    switch (g->kind) {
    case D_BYTELEVEL: {
        tok_buf *o = &st->scratch;
        o->n = 0;
        if (tok_utf8_lossy_append(o, (const unsigned char *)x->pend.p, x->pend.n, false) == (size_t)-1) return false;
        x->pend.n = 0;
        char *cp = malloc(o->n + 1);
        if (!cp) return false;
        memcpy(cp, o->p ? o->p : "", o->n);
        size_t cn = o->n;
        ok = emit(st, i, cp, cn, false) && emit(st, i, "", 0, true);
        free(cp);
        break;
    }
    case D_FUSE:
    case D_JOIN: ok = emit(st, i, "", 0, true); break;
    case D_BYTEFALLBACK: ok = flush_group(st, i, x); break;
    default: break;
    }
    return ok && finish(st, i + 1);
}

lmx_status tok_dstate_push(tok_dstate *st, const char *tok, size_t n, tok_buf *out) {
    st->out = out;
    if (!st->d->n) return tok_buf_append(out, tok, n) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "decoder");
    return push(st, 0, tok, n, true) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "decoder");
}

lmx_status tok_dstate_finish(tok_dstate *st, tok_buf *out) {
    st->out = out;
    return finish(st, 0) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "decoder");
}
