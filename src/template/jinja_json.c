/* jinja_json.c — JSON in and out of values: json.dumps as transformers' tojson calls it
 * (ensure_ascii=False, indent, separators, sort_keys) and the render context's parser (ints stay
 * ints, "1.0" stays a float, object order kept). */
#include "jinja_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- JSON out */
static void json_str(sb *b, const char *s, size_t n) {
    sb_putc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); esc = tmp; }
        if (esc) {
            sb_put(b, s + run, i - run);
            sb_puts(b, esc);
            run = i + 1;
        }
    }
    sb_put(b, s + run, n - run);
    sb_putc(b, '"');
}

static void json_nl(sb *b, const jv_json_opts *o, int level) {
    sb_putc(b, '\n');
    for (int i = 0; i < level; i++) {
        if (o->indent_str) sb_puts(b, o->indent_str);
        else for (int k = 0; k < o->indent; k++) sb_putc(b, ' ');
    }
}

static int key_cmp(const void *x, const void *y) {
    const jv *a = *(const jv *const *)x, *b = *(const jv *const *)y;
    size_t n = a->u.s->len < b->u.s->len ? a->u.s->len : b->u.s->len;
    int c = memcmp(a->u.s->s, b->u.s->s, n);
    if (c) return c;
    return a->u.s->len < b->u.s->len ? -1 : a->u.s->len > b->u.s->len;
}

static bool to_json(sb *b, jv v, const jv_json_opts *o, int level, const char **why) {
    if (level > 200) { *why = "nesting too deep"; return false; }
    bool pretty = o->indent >= 0 || o->indent_str;
    switch (v.t) {
    case JV_NONE: sb_puts(b, "null"); return true;
    case JV_BOOL: sb_puts(b, v.u.b ? "true" : "false"); return true;
    case JV_INT: sb_printf(b, "%lld", (long long)v.u.i); return true;
    case JV_BIG: jv_print(b, v); return true;
    case JV_FLOAT:
        if (isnan(v.u.f)) sb_puts(b, "NaN");
        else if (isinf(v.u.f)) sb_puts(b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else jv_fmt_float(b, v.u.f);
        return true;
    case JV_STR: json_str(b, v.u.s->s, v.u.s->len); return true;
    case JV_LIST: {
        if (v.u.l->n == 0) { sb_puts(b, "[]"); return true; }
        sb_putc(b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) sb_puts(b, o->item_sep);
            if (pretty) json_nl(b, o, level + 1);
            if (!to_json(b, v.u.l->v[i], o, level + 1, why)) return false;
        }
        if (pretty) json_nl(b, o, level);
        sb_putc(b, ']');
        return true;
    }
    case JV_DICT: {
        jv_dict *d = v.u.d;
        if (d->n == 0) { sb_puts(b, "{}"); return true; }
        const jv **order = malloc(d->n * sizeof *order);
        if (!order) { *why = "out of memory"; return false; }
        for (size_t i = 0; i < d->n; i++) order[i] = &d->k[i];
        bool all_str = true;
        for (size_t i = 0; i < d->n; i++) all_str &= d->k[i].t == JV_STR;
        if (o->sort_keys && all_str) qsort(order, d->n, sizeof *order, key_cmp);
        sb_putc(b, '{');
        for (size_t j = 0; j < d->n; j++) {
            size_t i = (size_t)(order[j] - d->k);
            if (j) sb_puts(b, o->item_sep);
            if (pretty) json_nl(b, o, level + 1);
            jv k = d->k[i];
            if (k.t == JV_STR) json_str(b, k.u.s->s, k.u.s->len);
            else if (k.t == JV_INT) sb_printf(b, "\"%lld\"", (long long)k.u.i);
            else if (k.t == JV_BIG) { sb_putc(b, '"'); jv_print(b, k); sb_putc(b, '"'); }
            else if (k.t == JV_BOOL) sb_puts(b, k.u.b ? "\"true\"" : "\"false\"");
            else if (k.t == JV_NONE) sb_puts(b, "\"null\"");
            else if (k.t == JV_FLOAT) { sb_putc(b, '"'); jv_fmt_float(b, k.u.f); sb_putc(b, '"'); }
            else { free(order); *why = "keys must be str, int, float, bool or None"; return false; }
            sb_puts(b, o->key_sep);
            if (!to_json(b, d->v[i], o, level + 1, why)) { free(order); return false; }
        }
        free(order);
        if (pretty) json_nl(b, o, level);
        sb_putc(b, '}');
        return true;
    }
    case JV_UNDEF: *why = "Object of type Undefined is not JSON serializable"; return false;
    case JV_NS: *why = "Object of type Namespace is not JSON serializable"; return false;
    default: *why = "Object of type function is not JSON serializable"; return false;
    }
}

bool jv_to_json(sb *b, jv v, const jv_json_opts *o, const char **why) {
    *why = NULL;
    return to_json(b, v, o, 0, why);
}

/* ---------------------------------------------------------------- JSON in */
typedef struct { const char *s; size_t n, i; char *err; size_t errlen; int depth; } jsn;

static bool jsn_fail(jsn *p, const char *msg) {
    snprintf(p->err, p->errlen, "JSON offset %zu: %s", p->i, msg);
    return false;
}

static void jsn_ws(jsn *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

static int hexv(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool jsn_hex4(jsn *p, uint32_t *v) {
    if (p->i + 4 > p->n) return jsn_fail(p, "bad \\u escape");
    *v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexv(p->s[p->i + k]);
        if (h < 0) return jsn_fail(p, "bad \\u escape");
        *v = *v * 16 + (uint32_t)h;
    }
    p->i += 4;
    return true;
}

static bool jsn_string(jsn *p, jv *out) {
    sb b;
    sb_init(&b, 0);
    p->i++; /* opening quote */
    for (;;) {
        if (p->i >= p->n) { sb_free(&b); return jsn_fail(p, "unterminated string"); }
        char c = p->s[p->i];
        if (c == '"') { p->i++; break; }
        if ((unsigned char)c < 0x20) { sb_free(&b); return jsn_fail(p, "control character in string"); }
        if (c != '\\') {
            size_t st = p->i;
            while (p->i < p->n && p->s[p->i] != '"' && p->s[p->i] != '\\' && (unsigned char)p->s[p->i] >= 0x20) p->i++;
            sb_put(&b, p->s + st, p->i - st);
            continue;
        }
        p->i++;
        if (p->i >= p->n) { sb_free(&b); return jsn_fail(p, "bad escape"); }
        c = p->s[p->i++];
        switch (c) {
        case '"': sb_putc(&b, '"'); break;
        case '\\': sb_putc(&b, '\\'); break;
        case '/': sb_putc(&b, '/'); break;
        case 'b': sb_putc(&b, '\b'); break;
        case 'f': sb_putc(&b, '\f'); break;
        case 'n': sb_putc(&b, '\n'); break;
        case 'r': sb_putc(&b, '\r'); break;
        case 't': sb_putc(&b, '\t'); break;
        case 'u': {
            uint32_t v;
            if (!jsn_hex4(p, &v)) { sb_free(&b); return false; }
            if (v >= 0xD800 && v < 0xDC00 && p->i + 6 <= p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                size_t save = p->i;
                p->i += 2;
                uint32_t lo;
                if (jsn_hex4(p, &lo) && lo >= 0xDC00 && lo < 0xE000) v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                else p->i = save;
            }
            sb_put_cp(&b, v);
            break;
        }
        default: sb_free(&b); return jsn_fail(p, "bad escape");
        }
    }
    if (sb_failed(&b)) { sb_free(&b); return jsn_fail(p, "out of memory"); }
    *out = sb_to_jv(&b);
    return !jv_is_oom(*out) || jsn_fail(p, "out of memory");
}

static bool jsn_value(jsn *p, jv *out);

static bool jsn_number(jsn *p, jv *out) {
    size_t st = p->i;
    bool is_float = false;
    if (p->s[p->i] == '-') p->i++;
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jsn_fail(p, "bad number");
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    if (p->i < p->n && p->s[p->i] == '.') {
        is_float = true;
        p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jsn_fail(p, "bad number");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        is_float = true;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jsn_fail(p, "bad number");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    size_t len = p->i - st;
    if (!is_float) { /* Python's json keeps every integer exact */
        *out = jv_int_text(p->s + st, len);
        return !jv_is_oom(*out) || jsn_fail(p, "out of memory");
    }
    char tmp[64];
    if (len >= sizeof tmp) len = sizeof tmp - 1;
    memcpy(tmp, p->s + st, len);
    tmp[len] = '\0';
    *out = jv_float(strtod(tmp, NULL));
    return true;
}

static bool jsn_value(jsn *p, jv *out) {
    jsn_ws(p);
    if (p->i >= p->n) return jsn_fail(p, "unexpected end");
    if (++p->depth > 500) return jsn_fail(p, "nesting too deep");
    char c = p->s[p->i];
    bool ok = true;
    if (c == '"') ok = jsn_string(p, out);
    else if (c == '-' || (c >= '0' && c <= '9')) ok = jsn_number(p, out);
    else if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "true", 4)) { p->i += 4; *out = jv_bool(true); }
    else if (p->n - p->i >= 5 && !strncmp(p->s + p->i, "false", 5)) { p->i += 5; *out = jv_bool(false); }
    else if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "null", 4)) { p->i += 4; *out = jv_none(); }
    else if (c == '[') {
        p->i++;
        jv l = jv_list_new(0);
        if (jv_is_oom(l)) return jsn_fail(p, "out of memory");
        jsn_ws(p);
        if (p->i < p->n && p->s[p->i] == ']') p->i++;
        else for (;;) {
            jv item;
            if (!jsn_value(p, &item)) { jv_decref(l); return false; }
            if (!jv_list_push(l, item)) { jv_decref(l); return jsn_fail(p, "out of memory"); }
            jsn_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
            if (p->i < p->n && p->s[p->i] == ']') { p->i++; break; }
            jv_decref(l);
            return jsn_fail(p, "expected ',' or ']'");
        }
        *out = l;
    } else if (c == '{') {
        p->i++;
        jv d = jv_dict_new(0);
        if (jv_is_oom(d)) return jsn_fail(p, "out of memory");
        jsn_ws(p);
        if (p->i < p->n && p->s[p->i] == '}') p->i++;
        else for (;;) {
            jsn_ws(p);
            jv k, v;
            if (p->i >= p->n || p->s[p->i] != '"') { jv_decref(d); return jsn_fail(p, "expected key string"); }
            if (!jsn_string(p, &k)) { jv_decref(d); return false; }
            jsn_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { jv_decref(k); jv_decref(d); return jsn_fail(p, "expected ':'"); }
            p->i++;
            if (!jsn_value(p, &v)) { jv_decref(k); jv_decref(d); return false; }
            if (!jv_dict_set(d, k, v)) { jv_decref(d); return jsn_fail(p, "out of memory"); }
            jsn_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
            if (p->i < p->n && p->s[p->i] == '}') { p->i++; break; }
            jv_decref(d);
            return jsn_fail(p, "expected ',' or '}'");
        }
        *out = d;
    } else ok = jsn_fail(p, "unexpected character");
    p->depth--;
    return ok;
}

bool jv_from_json(const char *text, size_t len, jv *out, char *err, size_t errlen) {
    jsn p = {.s = text, .n = len, .i = 0, .err = err, .errlen = errlen};
    if (!jsn_value(&p, out)) return false;
    jsn_ws(&p);
    if (p.i != p.n) { jv_decref(*out); return jsn_fail(&p, "trailing characters"); }
    return true;
}
