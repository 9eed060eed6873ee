/* jinja_filters_text.c — Jinja2's text filters: escape/safe, indent, wordcount, and the ones chat
 * templates rarely use: truncate, wordwrap (Python's textwrap), striptags, urlencode, urlize,
 * filesizeformat, xmlattr and pprint (Python's pprint.pformat). Registered in the filter table of
 * jinja_filters.c. */
#include "jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define FBIND(...) JBIND_KIND("filter ", name, __VA_ARGS__)

/* a string as code points, for Python's len() and slicing */
typedef struct { uint32_t *cp; size_t n; } cpstr;

static bool to_cp(jctx *c, int line, jv s, cpstr *o) {
    if (!jwork(c, line, s.u.s->len * sizeof(uint32_t))) return false;
    o->cp = malloc((s.u.s->len + 1) * sizeof *o->cp);
    o->n = 0;
    if (!o->cp) return joom(c, line);
    for (size_t i = 0; i < s.u.s->len;) i += jv_utf8_decode(s.u.s->s + i, s.u.s->len - i, &o->cp[o->n++]);
    return true;
}

static void put_cps(sb *b, const uint32_t *cp, size_t n) {
    for (size_t i = 0; i < n; i++) sb_put_cp(b, cp[i]);
}

/* ---------------------------------------------------------------- escape, indent, wordcount */
/* Python str.splitlines() for indent */
static size_t next_line(const char *p, size_t n, size_t i, size_t *eol) {
    size_t j = i;
    while (j < n && p[j] != '\n' && p[j] != '\r' && p[j] != '\v' && p[j] != '\f' && !(p[j] >= 0x1c && p[j] <= 0x1e)) j++;
    *eol = j;
    if (j < n && p[j] == '\r' && j + 1 < n && p[j + 1] == '\n') return j + 2;
    return j < n ? j + 1 : j;
}

static void xml_escape(sb *b, jv v);

bool jf_safe(FILTER_PARAMS) {
    if (name[0] == 's') return jinja_str(c, in, out); /* Markup(str(value)) */
    sb b;
    jsb_init(c, &b);
    xml_escape(&b, in); /* markupsafe.escape */
    return jsb_take(c, line, &b, out);
}

bool jf_indent(FILTER_PARAMS) {
    FBIND({"width", jv_int(4)}, {"first", jv_bool(false)}, {"blank", jv_bool(false)});
    if (in.t != JV_STR) return jerr(c, line, "indent: '%s' object is not a string", jv_type_name(in));
    jv s = jv_incref(in);
    sb ind;
    sb_init(&ind, 4096);
    if (a_[0].t == JV_STR) sb_put(&ind, a_[0].u.s->s, a_[0].u.s->len);
    else if (a_[0].t == JV_INT) for (int64_t i = 0; i < a_[0].u.i && i < 4096; i++) sb_putc(&ind, ' ');
    sb b;
    jsb_init(c, &b);
    if (jv_truthy(a_[1])) sb_put(&b, ind.p, ind.n);
    /* s + "\n" split into lines */
    sb t;
    jsb_init(c, &t);
    sb_put(&t, s.u.s->s, s.u.s->len);
    sb_putc(&t, '\n');
    bool blank = jv_truthy(a_[2]);
    size_t i = 0, k = 0;
    while (i < t.n) {
        size_t eol, nx = next_line(t.p, t.n, i, &eol);
        if (k > 0) {
            sb_putc(&b, '\n');
            if (blank || eol > i) sb_put(&b, ind.p, ind.n);
        }
        sb_put(&b, t.p + i, eol - i);
        i = nx;
        k++;
    }
    sb_free(&t);
    sb_free(&ind);
    jv_decref(s);
    return jsb_take(c, line, &b, out);
}

bool jf_wordcount(FILTER_PARAMS) {
    jv s;
    if (!jinja_str(c, in, &s)) return false;
    int64_t cnt = 0;
    bool inw = false;
    for (size_t i = 0; i < s.u.s->len;) {
        uint32_t cp;
        i += jv_utf8_decode(s.u.s->s + i, s.u.s->len - i, &cp);
        utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
        bool w = cp == '_' || (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
                 (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO); /* Python \w: isalnum() or '_' */
        if (w && !inw) cnt++;
        inw = w;
    }
    jv_decref(s);
    *out = jv_int(cnt);
    return true;
}

/* ---------------------------------------------------------------- truncate */
bool jf_truncate(FILTER_PARAMS) {
    FBIND({"length", jv_int(255)}, {"killwords", jv_bool(false)}, {"end", U}, {"leeway", jv_none()});
    int64_t length, leeway = 5; /* env.policies["truncate.leeway"] */
    if (!jneed_int(c, line, a_[0], &length, "length")) return false;
    if (a_[3].t != JV_NONE && !jneed_int(c, line, a_[3], &leeway, "leeway")) return false;
    jv s, end = a_[2].t == JV_UNDEF ? jv_undef(NULL) : a_[2];
    if (end.t != JV_UNDEF && !jneed_str(c, line, end, "end")) return false;
    const char *es = end.t == JV_STR ? end.u.s->s : "...";
    size_t elen = end.t == JV_STR ? jv_utf8_len(end.u.s->s, end.u.s->len) : 3;
    if (length < (int64_t)elen) return jerr(c, line, "expected length >= %zu, got %lld", elen, (long long)length);
    if (leeway < 0) return jerr(c, line, "expected leeway >= 0, got %lld", (long long)leeway);
    if (in.t != JV_STR) return jerr(c, line, "object of type '%s' has no len()", jv_type_name(in));
    s = jv_incref(in);
    cpstr t;
    if (!to_cp(c, line, s, &t)) { jv_decref(s); return false; }
    if ((int64_t)t.n <= length + leeway) { free(t.cp); *out = s; return true; }
    size_t keep = (size_t)length - elen;
    if (!jv_truthy(a_[1])) /* s[:length - len(end)].rsplit(" ", 1)[0] */
        for (size_t i = keep; i-- > 0;) if (t.cp[i] == ' ') { keep = i; break; }
    sb b;
    jsb_init(c, &b);
    put_cps(&b, t.cp, keep);
    sb_puts(&b, es);
    free(t.cp);
    jv_decref(s);
    return jsb_take(c, line, &b, out);
}

/* ---------------------------------------------------------------- wordwrap */
static bool tw_space(uint32_t cp) { return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\v' || cp == '\f' || cp == '\r'; }
static bool tw_letter(uint32_t cp) { return cp < 0x80 ? ((cp | 32) >= 'a' && (cp | 32) <= 'z') : !jv_cp_isspace(cp); }

typedef struct { size_t st, n; } chunk; /* in code points */

/* textwrap's chunks: whitespace runs and words, words also split after a hyphen between letters */
static size_t tw_chunks(const uint32_t *t, size_t n, bool hyphens, chunk *out) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        if (tw_space(t[i])) { while (j < n && tw_space(t[j])) j++; }
        else {
            while (j < n && !tw_space(t[j])) {
                j++;
                if (hyphens && t[j - 1] == '-' && j >= i + 3 && tw_letter(t[j - 2]) && tw_letter(t[j - 3]) && j < n &&
                    tw_letter(t[j]))
                    break;
            }
        }
        out[k++] = (chunk){i, j - i};
        i = j;
    }
    return k;
}

static bool blank_chunk(const uint32_t *t, chunk ch) {
    for (size_t i = 0; i < ch.n; i++) if (!jv_cp_isspace(t[ch.st + i])) return false;
    return true;
}

/* textwrap.wrap(line, width, expand_tabs=False, replace_whitespace=False, ...) joined by wrap */
static void tw_wrap(sb *b, const uint32_t *t, size_t n, size_t width, bool long_words, bool hyphens, jv wrap) {
    chunk *ch = malloc((n + 1) * sizeof *ch), *cur = malloc((n + 2) * sizeof *cur);
    if (!ch || !cur) { free(ch); free(cur); b->oom = true; return; }
    size_t nc = tw_chunks(t, n, hyphens, ch), next = 0, lines = 0;
    while (next < nc) {
        size_t nl = 0, len = 0;
        if (blank_chunk(t, ch[next]) && lines) next++;
        while (next < nc && len + ch[next].n <= width) { cur[nl++] = ch[next]; len += ch[next++].n; }
        if (next < nc && ch[next].n > width) { /* a word longer than any line */
            size_t left = width < 1 ? 1 : width - len;
            if (long_words) {
                size_t end = left;
                if (hyphens && ch[next].n > left) {
                    size_t hy = 0;
                    for (size_t i = left; i-- > 0;) if (t[ch[next].st + i] == '-') { hy = i; break; }
                    bool other = false;
                    for (size_t i = 0; i < hy; i++) other |= t[ch[next].st + i] != '-';
                    if (hy > 0 && other) end = hy + 1;
                }
                cur[nl++] = (chunk){ch[next].st, end};
                ch[next].st += end;
                ch[next].n -= end;
            } else if (nl == 0) cur[nl++] = ch[next++];
        }
        if (nl && blank_chunk(t, cur[nl - 1])) nl--;
        if (nl) {
            if (lines++) jv_print(b, wrap);
            for (size_t i = 0; i < nl; i++) put_cps(b, t + cur[i].st, cur[i].n);
        }
    }
    free(ch);
    free(cur);
}

bool jf_wordwrap(FILTER_PARAMS) {
    FBIND({"width", jv_int(79)}, {"break_long_words", jv_bool(true)}, {"wrapstring", jv_none()},
          {"break_on_hyphens", jv_bool(true)});
    int64_t width;
    if (!jneed_int(c, line, a_[0], &width, "width")) return false;
    if (width <= 0) return jerr(c, line, "invalid width %lld (must be > 0)", (long long)width);
    jv s, nl = jv_str_cstr("\n");
    jv wrap = a_[2].t == JV_NONE ? nl : a_[2];
    if (jv_is_oom(nl) || !jinja_str(c, in, &s)) { jv_decref(nl); return joom(c, line); }
    cpstr t;
    if (!to_cp(c, line, s, &t)) { jv_decref(s); jv_decref(nl); return false; }
    sb b;
    jsb_init(c, &b);
    /* str.splitlines(), each paragraph wrapped on its own */
    for (size_t i = 0, k = 0; i < t.n; k++) {
        size_t j = i;
        while (j < t.n && t.cp[j] != '\n' && t.cp[j] != '\r' && t.cp[j] != '\v' && t.cp[j] != '\f' &&
               !(t.cp[j] >= 0x1c && t.cp[j] <= 0x1e) && t.cp[j] != 0x85 && t.cp[j] != 0x2028 && t.cp[j] != 0x2029) j++;
        if (k) jv_print(&b, wrap);
        tw_wrap(&b, t.cp + i, j - i, (size_t)width, jv_truthy(a_[1]), jv_truthy(a_[3]), wrap);
        i = j < t.n && t.cp[j] == '\r' && j + 1 < t.n && t.cp[j + 1] == '\n' ? j + 2 : j + 1;
    }
    free(t.cp);
    jv_decref(s);
    jv_decref(nl);
    return jsb_take(c, line, &b, out);
}

/* ---------------------------------------------------------------- striptags */
static const struct { const char *name; uint32_t cp; } ENTITIES[] = {
    {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}, {"nbsp", 0xA0}, {"copy", 0xA9},
    {"reg", 0xAE}, {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013}, {"laquo", 0xAB}, {"raquo", 0xBB},
};

/* html.unescape for numeric references and the common named ones */
static size_t unescape_at(const char *p, size_t n, sb *b) {
    if (n < 3 || p[0] != '&') return 0;
    size_t semi = 1;
    while (semi < n && semi < 12 && p[semi] != ';') semi++;
    if (semi >= n || p[semi] != ';') return 0;
    if (p[1] == '#') {
        bool hex = p[2] == 'x' || p[2] == 'X';
        char *end;
        long v = strtol(p + (hex ? 3 : 2), &end, hex ? 16 : 10);
        if (end != p + semi || v <= 0 || v > 0x10FFFF) return 0;
        sb_put_cp(b, (uint32_t)v);
        return semi + 1;
    }
    for (size_t i = 0; i < sizeof ENTITIES / sizeof *ENTITIES; i++)
        if (strlen(ENTITIES[i].name) == semi - 1 && !memcmp(p + 1, ENTITIES[i].name, semi - 1)) {
            sb_put_cp(b, ENTITIES[i].cp);
            return semi + 1;
        }
    return 0;
}

bool jf_striptags(FILTER_PARAMS) {
    jv s;
    if (!jinja_str(c, in, &s)) return false;
    const char *p = s.u.s->s;
    size_t n = s.u.s->len;
    sb t, b;
    jsb_init(c, &t);
    jsb_init(c, &b);
    /* comments, then tags removed; white space collapsed to single spaces */
    bool space = false, any = false;
    for (size_t i = 0; i < n;) {
        if (p[i] == '<') {
            const char *close = n - i >= 4 && !memcmp(p + i, "<!--", 4) ? memmem(p + i + 4, n - i - 4, "-->", 3) : NULL;
            if (close) { i = (size_t)(close - p) + 3; continue; }
            const char *gt = memchr(p + i + 1, '>', n - i - 1);
            if (gt) { i = (size_t)(gt - p) + 1; continue; }
        }
        uint32_t cp;
        size_t k = jv_utf8_decode(p + i, n - i, &cp);
        if (jv_cp_isspace(cp)) space = any;
        else {
            if (space) sb_putc(&t, ' ');
            space = false;
            any = true;
            sb_put(&t, p + i, k);
        }
        i += k;
    }
    for (size_t i = 0; i < t.n;) {
        size_t k = t.p[i] == '&' ? unescape_at(t.p + i, t.n - i, &b) : 0;
        if (k) { i += k; continue; }
        sb_putc(&b, t.p[i++]);
    }
    sb_free(&t);
    jv_decref(s);
    return jsb_take(c, line, &b, out);
}

/* ---------------------------------------------------------------- urlencode */
static void url_quote(sb *b, jv v, bool for_qs) {
    sb t;
    sb_init(&t, 0);
    jv_print(&t, v);
    for (size_t i = 0; i < t.n; i++) {
        unsigned char ch = (unsigned char)t.p[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' ||
            ch == '-' || ch == '~' || (ch == '/' && !for_qs))
            sb_putc(b, (char)ch);
        else if (ch == ' ' && for_qs) sb_putc(b, '+');
        else sb_printf(b, "%%%02X", ch);
    }
    sb_free(&t);
}

bool jf_urlencode(FILTER_PARAMS) {
    sb b;
    jsb_init(c, &b);
    if (in.t == JV_STR || (in.t != JV_DICT && in.t != JV_LIST)) url_quote(&b, in, false);
    else {
        jv pairs;
        if (in.t == JV_DICT) { if (!jinja_call_method(c, line, in, "items", NULL, 0, NULL, NULL, 0, &pairs)) { sb_free(&b); return false; } }
        else pairs = jv_incref(in);
        for (size_t i = 0; i < pairs.u.l->n; i++) {
            jv pr = pairs.u.l->v[i];
            if (pr.t != JV_LIST || pr.u.l->n != 2) { jv_decref(pairs); sb_free(&b); return jerr(c, line, "urlencode: items must be (key, value) pairs"); }
            if (i) sb_putc(&b, '&');
            url_quote(&b, pr.u.l->v[0], true);
            sb_putc(&b, '=');
            url_quote(&b, pr.u.l->v[1], true);
        }
        jv_decref(pairs);
    }
    return jsb_take(c, line, &b, out);
}

/* ---------------------------------------------------------------- filesizeformat */
bool jf_filesizeformat(FILTER_PARAMS) {
    FBIND({"binary", jv_bool(false)});
    if (!jv_is_number(in) && in.t != JV_STR) return jerr(c, line, "filesizeformat: '%s' is not a number", jv_type_name(in));
    double bytes = in.t == JV_STR ? strtod(in.u.s->s, NULL) : jv_as_double(in);
    bool bin = jv_truthy(a_[0]);
    double base = bin ? 1024 : 1000;
    static const char *const dec[] = {"kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
    static const char *const binp[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
    char buf[64];
    if (bytes == 1) snprintf(buf, sizeof buf, "1 Byte");
    else if (bytes < base) snprintf(buf, sizeof buf, "%lld Bytes", (long long)bytes);
    else {
        int i = 0;
        double unit = base * base;
        while (i < 7 && bytes >= unit) { i++; unit *= base; }
        sb t;
        sb_init(&t, 0);
        sb_printf(&t, "%.1f %s", base * bytes / unit, bin ? binp[i] : dec[i]);
        bool ok = jstr_new(c, line, t.p ? t.p : "", t.n, out);
        sb_free(&t);
        return ok;
    }
    return jstr_new(c, line, buf, strlen(buf), out);
}

/* ---------------------------------------------------------------- xmlattr */
static void xml_escape(sb *b, jv v) {
    sb t;
    sb_init(&t, 0);
    jv_print(&t, v);
    for (size_t i = 0; i < t.n; i++) {
        switch (t.p[i]) {
        case '&': sb_puts(b, "&amp;"); break;
        case '<': sb_puts(b, "&lt;"); break;
        case '>': sb_puts(b, "&gt;"); break;
        case '"': sb_puts(b, "&#34;"); break;
        case '\'': sb_puts(b, "&#39;"); break;
        default: sb_putc(b, t.p[i]);
        }
    }
    sb_free(&t);
}

bool jf_xmlattr(FILTER_PARAMS) {
    FBIND({"autospace", jv_bool(true)});
    if (in.t != JV_DICT) return jerr(c, line, "xmlattr: value must be a dict");
    sb b;
    jsb_init(c, &b);
    bool first = true;
    for (size_t i = 0; i < in.u.d->n; i++) {
        jv k = in.u.d->k[i], v = in.u.d->v[i];
        if (v.t == JV_NONE || v.t == JV_UNDEF) continue;
        if (k.t == JV_STR && strpbrk(k.u.s->s, " \t\n\r\f\v/>=")) {
            sb_free(&b);
            return jerr(c, line, "Invalid character in attribute name: '%s'", k.u.s->s);
        }
        if (!first || jv_truthy(a_[0])) sb_putc(&b, ' ');
        first = false;
        xml_escape(&b, k);
        sb_puts(&b, "=\"");
        xml_escape(&b, v);
        sb_putc(&b, '"');
    }
    return jsb_take(c, line, &b, out);
}

/* ---------------------------------------------------------------- pprint */
#define PP_WIDTH 80

typedef struct { jv k; size_t i; } pp_key;

static int pp_cmp_str(const void *x, const void *y) {
    return strcmp(((const pp_key *)x)->k.u.s->s, ((const pp_key *)y)->k.u.s->s);
}

static int pp_cmp_num(const void *x, const void *y) {
    double a = jv_as_double(((const pp_key *)x)->k), b = jv_as_double(((const pp_key *)y)->k);
    return a < b ? -1 : a > b;
}

/* dict keys in pprint's order: sorted when they are all strings or all numbers, else as inserted */
static size_t *pp_order(jv d) {
    size_t n = d.u.d->n, *ix = malloc((n ? n : 1) * sizeof *ix);
    pp_key *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!ix || !keys) { free(ix); free(keys); return NULL; }
    bool strs = true, nums = true;
    for (size_t i = 0; i < n; i++) {
        keys[i] = (pp_key){d.u.d->k[i], i};
        strs &= d.u.d->k[i].t == JV_STR;
        nums &= jv_is_number(d.u.d->k[i]);
    }
    if (n > 1 && (strs || nums)) qsort(keys, n, sizeof *keys, strs ? pp_cmp_str : pp_cmp_num); /* keys are unique */
    for (size_t i = 0; i < n; i++) ix[i] = keys[i].i;
    free(keys);
    return ix;
}

static void pp_repr(sb *b, jv v, int depth) {
    if (depth > JV_MAX_DEPTH) { sb_puts(b, "..."); return; }
    if (v.t == JV_DICT) {
        size_t *ix = pp_order(v);
        if (!ix) { b->oom = true; return; }
        sb_putc(b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) sb_puts(b, ", ");
            pp_repr(b, v.u.d->k[ix[i]], depth + 1);
            sb_puts(b, ": ");
            pp_repr(b, v.u.d->v[ix[i]], depth + 1);
        }
        sb_putc(b, '}');
        free(ix);
    } else if (v.t == JV_LIST && !v.u.l->view) {
        sb_putc(b, v.u.l->tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) sb_puts(b, ", ");
            pp_repr(b, v.u.l->v[i], depth + 1);
        }
        if (v.u.l->tuple && v.u.l->n == 1) sb_putc(b, ',');
        sb_putc(b, v.u.l->tuple ? ')' : ']');
    } else jv_repr(b, v);
}

/* pprint.PrettyPrinter._format: the repr when it fits, else one item per line */
static void pp_format(sb *b, jv v, size_t indent, size_t allowance, int depth) {
    sb r;
    sb_init(&r, 0);
    pp_repr(&r, v, depth);
    size_t len = r.p ? jv_utf8_len(r.p, r.n) : 0;
    bool fits = len + indent + allowance <= PP_WIDTH || depth > JV_MAX_DEPTH;
    if (fits || !(v.t == JV_DICT || (v.t == JV_LIST && !v.u.l->view)) ||
        (v.t == JV_DICT ? v.u.d->n == 0 : v.u.l->n == 0)) {
        sb_put(b, r.p ? r.p : "", r.n);
        sb_free(&r);
        return;
    }
    sb_free(&r);
    if (v.t == JV_DICT) {
        size_t *ix = pp_order(v);
        if (!ix) { b->oom = true; return; }
        sb_putc(b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            bool last = i + 1 == v.u.d->n;
            sb k;
            sb_init(&k, 0);
            pp_repr(&k, v.u.d->k[ix[i]], depth + 1);
            sb_put(b, k.p ? k.p : "", k.n);
            sb_puts(b, ": ");
            pp_format(b, v.u.d->v[ix[i]], indent + 1 + (k.p ? jv_utf8_len(k.p, k.n) : 0) + 2, last ? allowance + 1 : 1, depth + 1);
            sb_free(&k);
            if (!last) { sb_puts(b, ",\n"); for (size_t s = 0; s < indent + 1; s++) sb_putc(b, ' '); }
        }
        sb_putc(b, '}');
        free(ix);
        return;
    }
    bool tup = v.u.l->tuple;
    size_t endlen = tup && v.u.l->n == 1 ? 2 : 1;
    sb_putc(b, tup ? '(' : '[');
    for (size_t i = 0; i < v.u.l->n; i++) {
        bool last = i + 1 == v.u.l->n;
        pp_format(b, v.u.l->v[i], indent + 1, last ? allowance + endlen : 1, depth + 1);
        if (!last) { sb_puts(b, ",\n"); for (size_t s = 0; s < indent + 1; s++) sb_putc(b, ' '); }
    }
    sb_puts(b, tup ? (v.u.l->n == 1 ? ",)" : ")") : "]");
}

bool jf_pprint(FILTER_PARAMS) {
    if (!jwork(c, line, (uint64_t)jv_depth(in) * 64)) return false;
    sb b;
    jsb_init(c, &b);
    pp_format(&b, in, 0, 0, 0);
    return jsb_take(c, line, &b, out);
}

/* ---------------------------------------------------------------- urlize */
/* Jinja2 3.1's _http_re and _email_re */
static const char HTTP_RE[] =
    "^((https?://|www\\.)(([\\w%-]+\\.)+)?([a-z]{2,63}|xn--[\\w%]{2,59})|([\\w%-]{2,63}\\.)+"
    "(com|net|int|edu|gov|org|info|mil)|(https?://)((([\\d]{1,3})(\\.[\\d]{1,3}){3})|"
    "(\\[([\\da-f]{0,4}:){2}([\\da-f]{0,4}:?){1,6}])))(?::[\\d]{1,5})?(?:[/?#]\\S*)?$";
static const char EMAIL_RE[] = "^\\S+@\\w[\\w.-]*\\.\\w+$";

static bool re_match(pcre2_code *re, pcre2_match_data *md, const char *s, size_t n) {
    return pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0;
}

static size_t count_of(const char *s, size_t n, const char *needle) {
    size_t k = 0, nl = strlen(needle);
    for (size_t i = 0; i + nl <= n; i++) if (!memcmp(s + i, needle, nl)) { k++; i += nl - 1; }
    return k;
}

static void put_trimmed(sb *b, const char *s, size_t n, int64_t limit) {
    size_t cps = jv_utf8_len(s, n);
    if (limit < 0 || cps <= (size_t)limit) { sb_put(b, s, n); return; }
    size_t i = 0;
    for (int64_t k = 0; k < limit; k++) { uint32_t cp; i += jv_utf8_decode(s + i, n - i, &cp); }
    sb_put(b, s, i);
    sb_puts(b, "...");
}

/* one word: lead ( < &lt; and trailing ) > . , \n &gt; kept outside, balanced brackets inside */
static void urlize_word(sb *b, const char *w, size_t n, pcre2_code *http, pcre2_code *email, pcre2_match_data *md,
                        const char *attrs, int64_t limit) {
    size_t h = 0;
    for (;;) {
        if (h < n && (w[h] == '(' || w[h] == '<')) h++;
        else if (n - h >= 4 && !memcmp(w + h, "&lt;", 4)) h += 4;
        else break;
    }
    size_t e = n;
    for (;;) {
        if (e > h && strchr(")>.,\n", w[e - 1])) e--;
        else if (e >= h + 4 && !memcmp(w + e - 4, "&gt;", 4)) e -= 4;
        else break;
    }
    static const char *const pairs[3][2] = {{"(", ")"}, {"<", ">"}, {"&lt;", "&gt;"}};
    for (int k = 0; k < 3; k++) {
        size_t opens = count_of(w + h, e - h, pairs[k][0]), closes = count_of(w + h, e - h, pairs[k][1]);
        if (opens <= closes) continue;
        size_t want = opens - closes, cl = strlen(pairs[k][1]);
        for (size_t t = 0; t < want; t++) {
            const char *f = memmem(w + e, n - e, pairs[k][1], cl);
            if (!f) break;
            e = (size_t)(f - w) + cl;
        }
    }
    sb_put(b, w, h);
    const char *m = w + h;
    size_t ml = e - h;
    if (re_match(http, md, m, ml)) {
        bool has_scheme = (ml >= 8 && !memcmp(m, "https://", 8)) || (ml >= 7 && !memcmp(m, "http://", 7));
        sb_puts(b, has_scheme ? "<a href=\"" : "<a href=\"https://");
        sb_put(b, m, ml);
        sb_printf(b, "\"%s>", attrs);
        put_trimmed(b, m, ml, limit);
        sb_puts(b, "</a>");
    } else if (ml > 7 && !memcmp(m, "mailto:", 7) && re_match(email, md, m + 7, ml - 7)) {
        sb_puts(b, "<a href=\"");
        sb_put(b, m, ml);
        sb_puts(b, "\">");
        sb_put(b, m + 7, ml - 7);
        sb_puts(b, "</a>");
    } else if (memchr(m, '@', ml) && !(ml >= 4 && !memcmp(m, "www.", 4)) && !memchr(m, ':', ml) && re_match(email, md, m, ml)) {
        sb_puts(b, "<a href=\"mailto:");
        sb_put(b, m, ml);
        sb_puts(b, "\">");
        sb_put(b, m, ml);
        sb_puts(b, "</a>");
    } else sb_put(b, m, ml);
    sb_put(b, w + e, n - e);
}

bool jf_urlize(FILTER_PARAMS) {
    FBIND({"trim_url_limit", jv_none()}, {"nofollow", jv_bool(false)}, {"target", jv_none()}, {"rel", jv_none()},
          {"extra_schemes", jv_none()});
    int64_t limit = -1;
    if (a_[0].t != JV_NONE && !jneed_int(c, line, a_[0], &limit, "trim_url_limit")) return false;
    if (a_[4].t != JV_NONE) return jerr(c, line, "urlize: extra_schemes is not supported by lmx");
    sb attrs, esc, b;
    sb_init(&attrs, 4096);
    /* rel: the policy "noopener", plus nofollow, plus the given ones, sorted and unique */
    const char *rels[3];
    int nr = 0;
    if (jv_truthy(a_[1])) rels[nr++] = "nofollow";
    rels[nr++] = "noopener";
    if (a_[3].t == JV_STR && a_[3].u.s->len && strcmp(a_[3].u.s->s, "noopener") && strcmp(a_[3].u.s->s, "nofollow"))
        rels[nr++] = a_[3].u.s->s;
    for (int i = 1; i < nr; i++) for (int j = i; j > 0 && strcmp(rels[j - 1], rels[j]) > 0; j--) { const char *t = rels[j]; rels[j] = rels[j - 1]; rels[j - 1] = t; }
    sb_puts(&attrs, " rel=\"");
    for (int i = 0; i < nr; i++) { if (i) sb_putc(&attrs, ' '); sb_puts(&attrs, rels[i]); }
    sb_putc(&attrs, '"');
    if (a_[2].t == JV_STR) { sb_puts(&attrs, " target=\""); xml_escape(&attrs, a_[2]); sb_putc(&attrs, '"'); }
    jsb_init(c, &esc);
    xml_escape(&esc, in); /* urlize works on the escaped text */
    int err;
    PCRE2_SIZE off;
    pcre2_code *http = pcre2_compile((PCRE2_SPTR)HTTP_RE, PCRE2_ZERO_TERMINATED, PCRE2_CASELESS | PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    pcre2_code *email = pcre2_compile((PCRE2_SPTR)EMAIL_RE, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    pcre2_match_data *md = http ? pcre2_match_data_create_from_pattern(http, NULL) : NULL;
    bool ok = http && email && md && !sb_failed(&esc) && !sb_failed(&attrs);
    jsb_init(c, &b);
    for (size_t i = 0; ok && i < esc.n;) { /* re.split(r"(\s+)"): words and the spaces between */
        size_t j = i;
        uint32_t cp;
        size_t k = jv_utf8_decode(esc.p + i, esc.n - i, &cp);
        if (jv_cp_isspace(cp)) {
            while (j < esc.n && (k = jv_utf8_decode(esc.p + j, esc.n - j, &cp), jv_cp_isspace(cp))) j += k;
            sb_put(&b, esc.p + i, j - i);
        } else {
            while (j < esc.n && (k = jv_utf8_decode(esc.p + j, esc.n - j, &cp), !jv_cp_isspace(cp))) j += k;
            urlize_word(&b, esc.p + i, j - i, http, email, md, attrs.p, limit);
        }
        i = j;
    }
    pcre2_match_data_free(md);
    pcre2_code_free(http);
    pcre2_code_free(email);
    sb_free(&attrs);
    sb_free(&esc);
    if (!ok) { sb_free(&b); return joom(c, line); }
    return jsb_take(c, line, &b, out);
}
