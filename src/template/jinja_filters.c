/* jinja_filters.c — Jinja2's builtin filters as used by chat templates, plus transformers'
 * tojson (json.dumps with ensure_ascii=False, indent, separators, sort_keys). */
#include "jinja_internal.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>


static bool mkempty(jctx *c, int line, jv *out) {
    *out = jv_str_new("", 0);
    return !jv_is_oom(*out) || joom(c, line);
}

#define FBIND(...) JBIND_KIND("filter ", name, __VA_ARGS__)

/* attribute getter for "a.b.0" paths (Jinja make_attrgetter) */
static bool get_path(jctx *c, int line, jv obj, jv attr, jv *out) {
    if (attr.t != JV_STR) return jinja_getitem(c, line, obj, attr, out);
    const char *p = attr.u.s->s;
    jv cur = jv_incref(obj);
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        jv key;
        bool digits = len > 0;
        for (size_t i = 0; i < len; i++) digits &= p[i] >= '0' && p[i] <= '9';
        if (digits) key = jv_int(strtoll(p, NULL, 10));
        else { key = jv_str_new(p, len); if (jv_is_oom(key)) { jv_decref(cur); return joom(c, line); } }
        jv next;
        bool ok = cur.t == JV_UNDEF ? (next = cur, true) : jinja_getitem(c, line, cur, key, &next);
        jv_decref(key);
        if (cur.t != JV_UNDEF) jv_decref(cur);
        if (!ok) return false;
        cur = next;
        if (!dot) break;
        p = dot + 1;
    }
    *out = cur;
    return true;
}

static bool lower_key(jctx *c, jv v, bool case_sensitive, jv *out) {
    if (v.t != JV_STR || case_sensitive) { *out = jv_incref(v); return true; }
    sb b;
    jsb_init(c, &b);
    for (size_t i = 0; i < v.u.s->len;) {
        uint32_t cp;
        i += jv_utf8_decode(v.u.s->s + i, v.u.s->len - i, &cp);
        sb_put_cp(&b, (uint32_t)utf8proc_tolower((int32_t)cp));
    }
    return jsb_take(c, 0, &b, out);
}

/* order for sort/min/max; jv_equal first, else numeric/string */
static bool less(jctx *c, int line, jv a, jv b, bool *r) { return jinja_compare(c, line, OP_LT, a, b, r); }

typedef struct { jv key, val; size_t idx; } sitem;

static bool merge_sort(jctx *c, int line, sitem *v, sitem *tmp, size_t n, bool rev) {
    if (n < 2) return true;
    if (!jwork(c, line, n)) return false; /* n per level: n log n comparisons in all */
    size_t h = n / 2;
    if (!merge_sort(c, line, v, tmp, h, rev) || !merge_sort(c, line, v + h, tmp, n - h, rev)) return false;
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        bool lt;
        if (!less(c, line, rev ? v[i].key : v[j].key, rev ? v[j].key : v[i].key, &lt)) return false;
        /* stable: take right only if strictly before left */
        if (lt) tmp[k++] = v[j++]; else tmp[k++] = v[i++];
    }
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
    return true;
}

static bool make_keys(jctx *c, int line, jv list, jv attr, bool cs, sitem **out) {
    size_t n = list.u.l->n;
    if (!jwork(c, line, n * sizeof(sitem))) return false;
    sitem *it = calloc(n ? n : 1, sizeof *it);
    if (!it) return joom(c, line);
    for (size_t i = 0; i < n; i++) {
        jv k = jv_incref(list.u.l->v[i]);
        if (attr.t != JV_UNDEF && attr.t != JV_NONE) {
            jv x;
            bool ok = get_path(c, line, k, attr, &x);
            jv_decref(k);
            if (!ok) { for (size_t j = 0; j < i; j++) jv_decref(it[j].key); free(it); return false; }
            k = x;
        }
        jv lk;
        bool ok = lower_key(c, k, cs, &lk);
        jv_decref(k);
        if (!ok) { for (size_t j = 0; j < i; j++) jv_decref(it[j].key); free(it); return false; }
        it[i].key = lk;
        it[i].val = list.u.l->v[i];
        it[i].idx = i;
    }
    *out = it;
    return true;
}

static void free_keys(sitem *it, size_t n) {
    for (size_t i = 0; i < n; i++) jv_decref(it[i].key);
    free(it);
}

static bool select_like(jctx *c, int line, const char *name, jv in, const jv *args, int nargs, jv *out) {
    bool by_attr = strstr(name, "attr") != NULL, reject = name[0] == 'r';
    jv lst;
    if (!jv_truthy(in)) { /* Jinja iterates only a truthy sequence */
        *out = jv_list_new(0);
        return !jv_is_oom(*out) || joom(c, line);
    }
    if (!jinja_to_list(c, line, in, &lst)) return false;
    if (!jwork(c, line, lst.u.l->n * sizeof(jv))) { jv_decref(lst); return false; }
    int ai = 0;
    jv attr = jv_undef(NULL);
    if (by_attr) {
        if (nargs < 1) { jv_decref(lst); return jerr(c, line, "%s needs an attribute", name); }
        attr = args[ai++];
    }
    const char *test = NULL;
    if (ai < nargs) {
        if (args[ai].t != JV_STR) { jv_decref(lst); return jerr(c, line, "%s: test name must be a string", name); }
        test = args[ai++].u.s->s;
        if (!jinja_has_test(test)) { jv_decref(lst); return jerr(c, line, "No test named '%s'.", test); }
    }
    jv res = jv_list_new(0);
    if (jv_is_oom(res)) { jv_decref(lst); return joom(c, line); }
    bool ok = true;
    for (size_t i = 0; ok && i < lst.u.l->n; i++) {
        jv v = lst.u.l->v[i], x;
        if (by_attr) { if (!(ok = get_path(c, line, v, attr, &x))) break; }
        else x = jv_incref(v);
        bool r;
        if (test) ok = jinja_env_test(c, line, test, x, args + ai, nargs - ai, &r);
        else r = jv_truthy(x);
        jv_decref(x);
        if (ok && r != reject && !jv_list_push(res, jv_incref(v))) ok = joom(c, line);
    }
    jv_decref(lst);
    if (!ok) { jv_decref(res); return false; }
    *out = res;
    return true;
}


static bool f_default(FILTER_PARAMS) {
    FBIND({"default_value", U}, {"boolean", jv_bool(false)});
    bool use = in.t == JV_UNDEF || (jv_truthy(a_[1]) && !jv_truthy(in));
    if (use && nargs == 0 && !nkw) return mkempty(c, line, out); /* default_value="" */
    *out = jv_incref(use ? a_[0] : in);
    return true;
}

static bool f_length(FILTER_PARAMS) {
    switch (in.t) {
    case JV_UNDEF: *out = jv_int(0); return true;
    case JV_STR: *out = jv_int((int64_t)jv_utf8_len(in.u.s->s, in.u.s->len)); return true;
    case JV_LIST: *out = jv_int((int64_t)in.u.l->n); return true;
    case JV_DICT: *out = jv_int((int64_t)in.u.d->n); return true;
    default: return jerr(c, line, "object of type '%s' has no len()", jv_type_name(in));
    }
}

static bool f_string(FILTER_PARAMS) {
    return jinja_str(c, in, out);
}

static bool f_tojson(FILTER_PARAMS) {
    FBIND({"ensure_ascii", jv_bool(false)}, {"indent", jv_none()}, {"separators", jv_none()}, {"sort_keys", jv_bool(false)});
    jv_json_opts o = {.indent = -1, .indent_str = NULL, .item_sep = ", ", .key_sep = ": ", .sort_keys = jv_truthy(a_[3])};
    if (a_[1].t == JV_INT) { o.indent = a_[1].u.i < 0 ? 0 : (int)(a_[1].u.i > 64 ? 64 : a_[1].u.i); o.item_sep = ","; }
    else if (a_[1].t == JV_STR) { o.indent_str = a_[1].u.s->s; o.item_sep = ","; }
    else if (a_[1].t != JV_NONE) return jerr(c, line, "tojson: bad indent");
    if (a_[2].t == JV_LIST && a_[2].u.l->n == 2 && a_[2].u.l->v[0].t == JV_STR && a_[2].u.l->v[1].t == JV_STR) {
        o.item_sep = a_[2].u.l->v[0].u.s->s;
        o.key_sep = a_[2].u.l->v[1].u.s->s;
    } else if (a_[2].t != JV_NONE) return jerr(c, line, "tojson: separators must be a pair of strings");
    sb b;
    jsb_init(c, &b);
    const char *why;
    if (!jv_to_json(&b, in, &o, &why)) { sb_free(&b); return jerr(c, line, "%s", why); }
    if (jv_truthy(a_[0])) {
        /* ensure_ascii: escape every non-ASCII code point as \uXXXX (surrogate pairs above the BMP) */
        sb e;
        jsb_init(c, &e);
        for (size_t i = 0; i < b.n;) {
            uint32_t cp;
            size_t k = jv_utf8_decode(b.p + i, b.n - i, &cp);
            if (cp < 0x80) sb_putc(&e, b.p[i]);
            else if (cp < 0x10000) sb_printf(&e, "\\u%04x", cp);
            else { cp -= 0x10000; sb_printf(&e, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)); }
            i += k;
        }
        sb_free(&b);
        return jsb_take(c, line, &e, out);
    }
    return jsb_take(c, line, &b, out);
}

/* str(in).method(args…): the filters that are a str method of the printed value */
static bool str_then(jctx *c, int line, jv in, const char *method, const jv *args, int nargs, jv *out) {
    jv s;
    if (!jinja_str(c, in, &s)) return false;
    bool ok = jinja_call_method(c, line, s, method, args, nargs, NULL, NULL, 0, out);
    jv_decref(s);
    return ok;
}

static bool f_trim(FILTER_PARAMS) {
    FBIND({"chars", jv_none()});
    return str_then(c, line, in, "strip", a_, 1, out);
}

static bool f_upper(FILTER_PARAMS) {
    return str_then(c, line, in, name, NULL, 0, out);
}

static bool f_title(FILTER_PARAMS) {
    jv s;
    if (!jinja_str(c, in, &s)) return false;
    bool ok = jinja_title_filter(c, line, s, out);
    jv_decref(s);
    return ok;
}

static bool f_replace(FILTER_PARAMS) {
    FBIND({"old", U}, {"new", U}, {"count", jv_none()});
    jv cargs[3] = {a_[0], a_[1], a_[2].t == JV_NONE ? jv_int(-1) : a_[2]};
    return str_then(c, line, in, "replace", cargs, 3, out);
}

static bool f_join(FILTER_PARAMS) {
    FBIND({"d", jv_none()}, {"attribute", jv_none()});
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    sb b;
    jsb_init(c, &b);
    bool ok = true;
    for (size_t i = 0; ok && i < lst.u.l->n; i++) {
        if (i && a_[0].t != JV_NONE) jv_print(&b, a_[0]);
        jv v = lst.u.l->v[i];
        if (a_[1].t != JV_NONE) {
            jv x;
            if (!(ok = get_path(c, line, v, a_[1], &x))) break;
            jv_print(&b, x);
            jv_decref(x);
        } else jv_print(&b, v);
    }
    jv_decref(lst);
    if (!ok) { sb_free(&b); return false; }
    return jsb_take(c, line, &b, out);
}

static bool f_first(FILTER_PARAMS) {
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    if (lst.u.l->n) *out = jv_incref(lst.u.l->v[name[0] == 'f' ? 0 : lst.u.l->n - 1]);
    else *out = jv_undef(NULL);
    jv_decref(lst);
    return true;
}

static bool f_list(FILTER_PARAMS) {
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    if (!jwork(c, line, lst.u.l->n * sizeof(jv))) { jv_decref(lst); return false; }
    jv r = jv_list_new(lst.u.l->n);
    if (jv_is_oom(r)) { jv_decref(lst); return joom(c, line); }
    for (size_t i = 0; i < lst.u.l->n; i++) jv_list_push(r, jv_incref(lst.u.l->v[i]));
    jv_decref(lst);
    *out = r;
    return true;
}

static bool f_reverse(FILTER_PARAMS) {
    if (in.t == JV_STR) {
        sb b;
        jsb_init(c, &b);
        size_t e = in.u.s->len;
        while (e > 0) {
            size_t st = e - 1;
            while (st > 0 && ((unsigned char)in.u.s->s[st] & 0xC0) == 0x80) st--;
            sb_put(&b, in.u.s->s + st, e - st);
            e = st;
        }
        return jsb_take(c, line, &b, out);
    }
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    if (!jwork(c, line, lst.u.l->n * sizeof(jv))) { jv_decref(lst); return false; }
    jv r = jv_list_new(lst.u.l->n);
    if (jv_is_oom(r)) { jv_decref(lst); return joom(c, line); }
    for (size_t i = lst.u.l->n; i-- > 0;) jv_list_push(r, jv_incref(lst.u.l->v[i]));
    jv_decref(lst);
    *out = r;
    return true;
}

static bool f_items(FILTER_PARAMS) {
    if (in.t == JV_UNDEF) { *out = jv_list_new(0); return !jv_is_oom(*out) || joom(c, line); }
    if (in.t != JV_DICT) return jerr(c, line, "items filter: can only get item pairs from a mapping");
    return jinja_call_method(c, line, in, "items", NULL, 0, NULL, NULL, 0, out);
}

static bool f_dictsort(FILTER_PARAMS) {
    FBIND({"case_sensitive", jv_bool(false)}, {"by", U}, {"reverse", jv_bool(false)});
    if (in.t != JV_DICT) return jerr(c, line, "dictsort: value must be a dict");
    bool by_value = a_[1].t == JV_STR && !strcmp(a_[1].u.s->s, "value");
    jv pairs;
    if (!jinja_call_method(c, line, in, "items", NULL, 0, NULL, NULL, 0, &pairs)) return false;
    jv attr = jv_int(by_value ? 1 : 0);
    sitem *it, *tmp;
    if (!make_keys(c, line, pairs, attr, jv_truthy(a_[0]), &it)) { jv_decref(pairs); return false; }
    size_t n = pairs.u.l->n;
    tmp = malloc((n ? n : 1) * sizeof *tmp);
    bool ok = tmp && merge_sort(c, line, it, tmp, n, jv_truthy(a_[2]));
    if (!tmp) joom(c, line);
    jv r = jv_list_new(n);
    if (ok && !jv_is_oom(r)) for (size_t i = 0; i < n; i++) jv_list_push(r, jv_incref(it[i].val));
    free(tmp);
    free_keys(it, n);
    jv_decref(pairs);
    if (!ok || jv_is_oom(r)) { jv_decref(r); return ok ? joom(c, line) : false; }
    *out = r;
    return true;
}

static bool f_sort(FILTER_PARAMS) {
    bool is_sort = name[0] == 's', is_unique = name[0] == 'u';
    jv a_[3];
    if (is_sort) {
        jparam ps[] = {{"reverse", jv_bool(false)}, {"case_sensitive", jv_bool(false)}, {"attribute", jv_none()}};
        if (!jbind(c, line, "filter ", name, ps, 3, args, nargs, kwn, kwv, nkw, a_)) return false;
    } else {
        jparam ps[] = {{"case_sensitive", jv_bool(false)}, {"attribute", jv_none()}};
        if (!jbind(c, line, "filter ", name, ps, 2, args, nargs, kwn, kwv, nkw, a_ + 1)) return false;
        a_[0] = jv_bool(false);
    }
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    size_t n = lst.u.l->n;
    sitem *it;
    if (!make_keys(c, line, lst, a_[2], jv_truthy(a_[1]), &it)) { jv_decref(lst); return false; }
    bool ok = true;
    jv r = jv_undef(NULL);
    if (is_unique) {
        r = jv_list_new(0);
        if (jv_is_oom(r)) ok = joom(c, line);
        for (size_t i = 0; ok && i < n; i++) {
            bool seen = false;
            if (!(ok = jwork(c, line, i))) break; /* quadratic: i comparisons for item i */
            for (size_t j = 0; j < i && !seen; j++) seen = jv_equal(it[j].key, it[i].key);
            if (!seen && !jv_list_push(r, jv_incref(it[i].val))) ok = joom(c, line);
        }
    } else if (!is_sort) {
        if (n) {
            size_t best = 0;
            for (size_t i = 1; ok && i < n; i++) {
                bool lt;
                ok = less(c, line, name[1] == 'i' ? it[i].key : it[best].key, name[1] == 'i' ? it[best].key : it[i].key, &lt);
                if (ok && lt) best = i;
            }
            r = jv_incref(it[best].val);
        }
    } else {
        sitem *tmp = malloc((n ? n : 1) * sizeof *tmp);
        if (!tmp) ok = joom(c, line);
        if (ok) ok = merge_sort(c, line, it, tmp, n, jv_truthy(a_[0]));
        free(tmp);
        if (ok) {
            r = jv_list_new(n);
            if (jv_is_oom(r)) ok = joom(c, line);
            else for (size_t i = 0; i < n; i++) jv_list_push(r, jv_incref(it[i].val));
        }
    }
    free_keys(it, n);
    jv_decref(lst);
    if (!ok) { jv_decref(r); return false; }
    *out = r;
    return true;
}

static bool f_map(FILTER_PARAMS) {
    jv lst;
    if (!jv_truthy(in)) { *out = jv_list_new(0); return !jv_is_oom(*out) || joom(c, line); }
    if (!jinja_to_list(c, line, in, &lst)) return false;
    jv r = jv_list_new(lst.u.l->n);
    if (jv_is_oom(r)) { jv_decref(lst); return joom(c, line); }
    bool ok = true;
    int ai = -1;
    jv def = jv_undef(NULL);
    for (int k = 0; k < nkw; k++) {
        if (!strcmp(kwn[k], "attribute")) ai = k;
        else if (!strcmp(kwn[k], "default")) def = kwv[k];
    }
    if (ai < 0 && (nargs < 1 || args[0].t != JV_STR)) { jv_decref(r); jv_decref(lst); return jerr(c, line, "map: needs a filter name or attribute="); }
    for (size_t i = 0; ok && i < lst.u.l->n; i++) {
        jv x;
        if (ai >= 0) {
            ok = get_path(c, line, lst.u.l->v[i], kwv[ai], &x);
            if (ok && x.t == JV_UNDEF && def.t != JV_UNDEF) x = jv_incref(def);
        } else {
            int fk = 0;
            ok = jstep(c, line) && jinja_filter(c, line, args[0].u.s->s, lst.u.l->v[i], args + 1, nargs - 1, kwn, kwv, nkw - fk, &x);
        }
        if (ok && !jv_list_push(r, x)) ok = joom(c, line);
    }
    jv_decref(lst);
    if (!ok) { jv_decref(r); return false; }
    *out = r;
    return true;
}

static bool f_select(FILTER_PARAMS) {
    if (nkw) return jerr(c, line, "%s takes no keyword arguments", name);
    return select_like(c, line, name, in, args, nargs, out);
}

static bool f_attr(FILTER_PARAMS) {
    FBIND({"name", U});
    if (a_[0].t != JV_STR) return jerr(c, line, "attr: name must be a string");
    if (in.t == JV_UNDEF) { *out = in; return true; }
    if (in.t == JV_DICT && !jinja_is_method(in, a_[0].u.s->s)) { *out = jv_undef(NULL); return true; }
    return jinja_getattr(c, line, in, a_[0].u.s->s, out);
}

static bool f_abs(FILTER_PARAMS) {
    if (in.t == JV_INT || in.t == JV_BIG) { /* |INT64_MIN| is a big int */
        *out = jv_int_neg(in, true);
        return !jv_is_oom(*out) || joom(c, line);
    }
    if (in.t == JV_BOOL) { *out = jv_int(in.u.b); return true; }
    if (in.t == JV_FLOAT) { *out = jv_float(fabs(in.u.f)); return true; }
    return jerr(c, line, "bad operand type for abs(): '%s'", jv_type_name(in));
}

static bool f_int(FILTER_PARAMS) {
    FBIND({"default", jv_int(0)}, {"base", jv_int(10)});
    if (in.t == JV_UNDEF) return in.u.hint ? jerr(c, line, "'%s' is undefined", in.u.hint) : jerr(c, line, "int() of an undefined value");
    if (in.t == JV_INT || in.t == JV_BIG) { *out = jv_incref(in); return true; }
    if (in.t == JV_BOOL) { *out = jv_int(in.u.b); return true; }
    if (in.t == JV_FLOAT) {
        if (isfinite(in.u.f) && fabs(in.u.f) < 9.2e18) { *out = jv_int((int64_t)in.u.f); return true; }
        *out = jv_incref(a_[0]);
        return true;
    }
    if (in.t == JV_STR) {
        char *end;
        const char *s = in.u.s->s;
        while (*s == ' ' || *s == '\t' || *s == '\n') s++;
        int base = a_[1].t == JV_INT ? (int)a_[1].u.i : 10;
        errno = 0;
        long long v = strtoll(s, &end, base);
        while (*end == ' ' || *end == '\t' || *end == '\n') end++;
        if (end != s && !*end && !errno && end - in.u.s->s == (ptrdiff_t)in.u.s->len) { *out = jv_int(v); return true; }
        double d = strtod(s, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n') end++;
        if (end != s && !*end && isfinite(d)) {
            if (fabs(d) >= 9.2e18) return jerr(c, line, "int: value out of range");
            *out = jv_int((int64_t)d);
            return true;
        }
    }
    *out = jv_incref(a_[0]);
    return true;
}

static bool f_float(FILTER_PARAMS) {
    FBIND({"default", jv_float(0.0)});
    if (in.t == JV_UNDEF) return in.u.hint ? jerr(c, line, "'%s' is undefined", in.u.hint) : jerr(c, line, "float() of an undefined value");
    if (jv_is_number(in)) { *out = jv_float(jv_as_double(in)); return true; }
    if (in.t == JV_STR) {
        char *end;
        double d = strtod(in.u.s->s, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n') end++;
        if (end != in.u.s->s && !*end) { *out = jv_float(d); return true; }
    }
    *out = jv_incref(a_[0]);
    return true;
}

static bool f_round(FILTER_PARAMS) {
    FBIND({"precision", jv_int(0)}, {"method", U});
    if (!jv_is_number(in)) return jerr(c, line, "round: value must be a number");
    const char *m = a_[1].t == JV_STR ? a_[1].u.s->s : "common";
    int64_t pr = a_[0].t == JV_INT ? a_[0].u.i : 0;
    double x = jv_as_double(in), f = pow(10.0, (double)pr);
    if (!strcmp(m, "common")) {
        if (in.t != JV_FLOAT) { *out = in.t == JV_BOOL ? jv_int(in.u.b) : jv_incref(in); return true; }
        if (pr >= 0 && pr <= 30 && isfinite(x)) {
            /* correctly rounded like Python's round(): decimal rounding of the exact binary value */
            char buf[400];
            snprintf(buf, sizeof buf, "%.*f", (int)pr, x);
            *out = jv_float(strtod(buf, NULL));
        } else {
            double y = x * f, r = nearbyint(y);
            *out = jv_float(r / f);
        }
    } else if (!strcmp(m, "ceil")) *out = jv_float(ceil(x * f) / f);
    else if (!strcmp(m, "floor")) *out = jv_float(floor(x * f) / f);
    else return jerr(c, line, "method must be common, ceil or floor");
    return true;
}

static bool f_sum(FILTER_PARAMS) {
    FBIND({"attribute", jv_none()}, {"start", jv_int(0)});
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    jv acc = jv_incref(a_[1]);
    bool ok = true;
    for (size_t i = 0; ok && i < lst.u.l->n; i++) {
        jv x, r;
        if (a_[0].t != JV_NONE) { if (!(ok = get_path(c, line, lst.u.l->v[i], a_[0], &x))) break; }
        else x = jv_incref(lst.u.l->v[i]);
        ok = jinja_binop(c, line, OP_ADD, acc, x, &r);
        jv_decref(x);
        if (ok) { jv_decref(acc); acc = r; }
    }
    jv_decref(lst);
    if (!ok) { jv_decref(acc); return false; }
    *out = acc;
    return true;
}

static bool f_center(FILTER_PARAMS) {
    FBIND({"width", jv_int(80)});
    return str_then(c, line, in, "center", a_, 1, out);
}

static bool f_format(FILTER_PARAMS) {
    jv s;
    if (!jinja_str(c, in, &s)) return false;
    jv tup = jv_list_new((size_t)nargs);
    if (jv_is_oom(tup)) { jv_decref(s); return joom(c, line); }
    tup.u.l->tuple = true;
    for (int i = 0; i < nargs; i++) jv_list_push(tup, jv_incref(args[i]));
    bool ok = jinja_binop(c, line, OP_MOD, s, nargs == 1 && args[0].t == JV_DICT ? args[0] : tup, out);
    jv_decref(tup);
    jv_decref(s);
    return ok;
}

static bool f_batch(FILTER_PARAMS) {
    FBIND({"linecount", U}, {"fill_with", jv_none()});
    int64_t per = a_[0].t == JV_INT ? a_[0].u.i : 0;
    if (per <= 0) return jerr(c, line, "batch: linecount must be a positive integer");
    bool fill = nargs > 1 || nkw > 0;
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    jv r = jv_list_new(0), cur = jv_undef(NULL);
    bool ok = !jv_is_oom(r);
    for (size_t i = 0; ok && i < lst.u.l->n; i++) {
        if (cur.t != JV_LIST) { cur = jv_list_new(0); if (jv_is_oom(cur)) { ok = false; break; } }
        ok = jv_list_push(cur, jv_incref(lst.u.l->v[i]));
        if (ok && (int64_t)cur.u.l->n == per) { ok = jv_list_push(r, cur); cur = jv_undef(NULL); }
    }
    if (ok && cur.t == JV_LIST) {
        while (ok && fill && (int64_t)cur.u.l->n < per) ok = jv_list_push(cur, jv_incref(a_[1]));
        if (ok) ok = jv_list_push(r, cur); else jv_decref(cur);
        cur = jv_undef(NULL);
    }
    jv_decref(cur);
    jv_decref(lst);
    if (!ok) { jv_decref(r); return joom(c, line); }
    *out = r;
    return true;
}

/* slice(n, fill_with): n columns, the first len % n of them one longer (Jinja's do_slice) */
static bool f_slice(FILTER_PARAMS) {
    FBIND({"slices", U}, {"fill_with", jv_none()});
    int64_t n;
    if (!jneed_int(c, line, a_[0], &n, "slices")) return false;
    if (n <= 0 || n > JINJA_MAX_RANGE) return jerr(c, line, "slice: slices must be between 1 and %d", JINJA_MAX_RANGE);
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    size_t len = lst.u.l->n, per = len / (size_t)n, extra = len % (size_t)n, off = 0;
    jv r = jv_list_new((size_t)n);
    bool ok = !jv_is_oom(r);
    for (size_t k = 0; ok && k < (size_t)n; k++) {
        size_t st = off + k * per;
        if (k < extra) off++;
        size_t en = off + (k + 1) * per;
        jv col = jv_list_new(en - st + 1);
        ok = !jv_is_oom(col);
        for (size_t i = st; ok && i < en; i++) ok = jv_list_push(col, jv_incref(lst.u.l->v[i]));
        if (ok && a_[1].t != JV_NONE && k >= extra) ok = jv_list_push(col, jv_incref(a_[1]));
        ok = ok && jv_list_push(r, col);
    }
    jv_decref(lst);
    if (!ok) { jv_decref(r); return joom(c, line); }
    *out = r;
    return true;
}

/* groupby(attribute, default, case_sensitive): sorted by the (lowered) key, then runs of equal
 * keys as (grouper, list) tuples; the grouper is the first item's own value */
static bool group_key(jctx *c, int line, jv item, jv attr, jv def, jv *out) {
    if (!get_path(c, line, item, attr, out)) return false;
    if (out->t == JV_UNDEF && def.t != JV_NONE) *out = jv_incref(def);
    return true;
}

static bool f_groupby(FILTER_PARAMS) {
    FBIND({"attribute", U}, {"default", jv_none()}, {"case_sensitive", jv_bool(false)});
    bool cs = jv_truthy(a_[2]);
    jv lst;
    if (!jinja_to_list(c, line, in, &lst)) return false;
    size_t n = lst.u.l->n;
    sitem *it = calloc(n ? n : 1, sizeof *it), *tmp = malloc((n ? n : 1) * sizeof *tmp);
    bool ok = it && tmp;
    size_t made = 0;
    for (; ok && made < n; made++) {
        jv k, lk;
        ok = group_key(c, line, lst.u.l->v[made], a_[0], a_[1], &k);
        if (!ok) break;
        ok = lower_key(c, k, cs, &lk);
        jv_decref(k);
        if (!ok) break;
        it[made] = (sitem){lk, lst.u.l->v[made], made};
    }
    if (!it || !tmp) ok = joom(c, line);
    if (ok) ok = merge_sort(c, line, it, tmp, n, false);
    jv r = jv_list_new(0);
    if (ok && jv_is_oom(r)) ok = joom(c, line);
    for (size_t i = 0; ok && i < n;) {
        size_t j = i;
        jv members = jv_list_new(0), tup = jv_list_new(2), grouper;
        ok = !jv_is_oom(members) && !jv_is_oom(tup);
        while (ok && j < n && jv_equal(it[j].key, it[i].key)) ok = jv_list_push(members, jv_incref(it[j++].val));
        ok = ok && (cs ? (grouper = jv_incref(it[i].key), true) : group_key(c, line, it[i].val, a_[0], a_[1], &grouper));
        if (ok) {
            tup.u.l->tuple = true;
            tup.u.l->view = 4;
            ok = jv_list_push(tup, grouper) && jv_list_push(tup, members) && jv_list_push(r, tup);
            if (!ok) joom(c, line);
        } else { jv_decref(members); jv_decref(tup); }
        i = j;
    }
    if (it) free_keys(it, made);
    free(tmp);
    jv_decref(lst);
    if (!ok) { jv_decref(r); return false; }
    *out = r;
    return true;
}

static bool f_unsupported(FILTER_PARAMS) { return jerr(c, line, "filter '%s' is not supported by lmx", name); }

/* Every Jinja2 builtin filter (+ transformers' tojson), sorted by name for bsearch. */
static const jfilter_entry FILTERS[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"batch", f_batch},
    {"capitalize", f_upper},
    {"center", f_center},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", jf_safe},
    {"escape", jf_safe},
    {"filesizeformat", jf_filesizeformat},
    {"first", f_first},
    {"float", f_float},
    {"forceescape", jf_safe},
    {"format", f_format},
    {"groupby", f_groupby},
    {"indent", jf_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_first},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_upper},
    {"map", f_map},
    {"max", f_sort},
    {"min", f_sort},
    {"pprint", jf_pprint},
    {"random", f_unsupported},
    {"reject", f_select},
    {"rejectattr", f_select},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", jf_safe},
    {"select", f_select},
    {"selectattr", f_select},
    {"slice", f_slice},
    {"sort", f_sort},
    {"string", f_string},
    {"striptags", jf_striptags},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"truncate", jf_truncate},
    {"unique", f_sort},
    {"upper", f_upper},
    {"urlencode", jf_urlencode},
    {"urlize", jf_urlize},
    {"wordcount", jf_wordcount},
    {"wordwrap", jf_wordwrap},
    {"xmlattr", jf_xmlattr},
};

static int entry_cmp(const void *key, const void *e) { return strcmp(key, ((const jfilter_entry *)e)->name); }

static const jfilter_entry *find_filter(const char *name) {
    return bsearch(name, FILTERS, sizeof FILTERS / sizeof *FILTERS, sizeof *FILTERS, entry_cmp);
}

bool jinja_has_filter(const char *name) { return find_filter(name) != NULL; }

bool jinja_env_test(jctx *c, int line, const char *name, jv in, const jv *args, int nargs, bool *res) {
    if (!strcmp(name, "filter")) { *res = in.t == JV_STR && jinja_has_filter(in.u.s->s); return true; }
    return jinja_test(c, line, name, in, args, nargs, res);
}

bool jinja_filter(jctx *c, int line, const char *name, jv in, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    *out = jv_undef(NULL);
    const jfilter_entry *f = find_filter(name);
    if (!f) return jerr(c, line, "No filter named '%s'.", name);
    return f->fn(c, line, name, in, args, nargs, kwn, kwv, nkw, out);
}


