/* jinja_builtins.c — the library of the Jinja engine: attribute/item lookup, Python operators,
 * filters, tests, Python str/dict/list methods and the globals transformers provides
 * (range, namespace, dict, raise_exception, strftime_now). Semantics follow Jinja2 3.1 in an
 * ImmutableSandboxedEnvironment (mutating list/dict methods are refused). */
#include "jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <utf8proc.h>

#define MAX_RANGE 100000
#define MAX_LIST ((uint64_t)MAX_RANGE * 10) /* elements a list built by `*` or `+` may have */
#define MAX_FORMAT_WIDTH 4096                /* width / precision of a %-format field */



bool jinja_str(jctx *c, jv v, jv *out) {
    if (v.t == JV_STR) { *out = jv_incref(v); return true; }
    sb b;
    jsb_init(c, &b);
    jv_print(&b, v);
    return jsb_take(c, 0, &b, out);
}

/* ---------------------------------------------------------------- iteration */
bool jinja_to_list(jctx *c, int line, jv v, jv *out) {
    if (v.t == JV_STR && !jwork(c, line, v.u.s->len * sizeof(jv))) return false;
    if (v.t == JV_DICT && !jwork(c, line, v.u.d->n * sizeof(jv))) return false;
    switch (v.t) {
    case JV_LIST: *out = jv_incref(v); return true;
    case JV_UNDEF: *out = jv_list_new(0); return !jv_is_oom(*out) || joom(c, line);
    case JV_STR: {
        jv l = jv_list_new(v.u.s->len);
        if (jv_is_oom(l)) return joom(c, line);
        for (size_t i = 0; i < v.u.s->len;) {
            uint32_t cp;
            size_t k = jv_utf8_decode(v.u.s->s + i, v.u.s->len - i, &cp);
            jv ch = jv_str_new(v.u.s->s + i, k);
            if (jv_is_oom(ch) || !jv_list_push(l, ch)) { jv_decref(l); return joom(c, line); }
            i += k;
        }
        *out = l;
        return true;
    }
    case JV_DICT: {
        jv l = jv_list_new(v.u.d->n);
        if (jv_is_oom(l)) return joom(c, line);
        for (size_t i = 0; i < v.u.d->n; i++) jv_list_push(l, jv_incref(v.u.d->k[i]));
        *out = l;
        return true;
    }
    default: return jerr(c, line, "'%s' object is not iterable", jv_type_name(v));
    }
}

/* ---------------------------------------------------------------- lookup */
static const char *const STR_METHODS[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
    "replace", "upper", "lower", "title", "capitalize", "find", "rfind", "index", "count", "join", "format",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "splitlines", "removeprefix", "removesuffix",
    "swapcase", "casefold", "center", "ljust", "rjust", "zfill", "partition", "rpartition", NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", "copy", "pop", "popitem", "update",
    "setdefault", "clear", NULL};
static const char *const LIST_METHODS[] = {"index", "count", "copy", "append", "extend", "insert", "pop", "remove",
    "sort", "reverse", "clear", NULL};

static bool in_set(const char *const *set, const char *name) {
    for (int i = 0; set[i]; i++) if (!strcmp(set[i], name)) return true;
    return false;
}

bool jinja_is_method(jv self, const char *name) {
    if (self.t == JV_STR) return in_set(STR_METHODS, name);
    if (self.t == JV_DICT) return in_set(DICT_METHODS, name);
    if (self.t == JV_LIST) return in_set(LIST_METHODS, name);
    return false;
}

static bool bound_method(jctx *c, int line, jv obj, const char *name, jv *out) {
    /* name must outlive the value: use the static method table entry */
    const char *const *set = obj.t == JV_STR ? STR_METHODS : obj.t == JV_DICT ? DICT_METHODS : LIST_METHODS;
    for (int i = 0; set[i]; i++)
        if (!strcmp(set[i], name)) {
            *out = jv_func_new(JF_METHOD, set[i], jv_incref(obj));
            return !jv_is_oom(*out) || joom(c, line);
        }
    *out = jv_undef(NULL);
    return true;
}

bool jinja_getattr(jctx *c, int line, jv obj, const char *name, jv *out) {
    if (jinja_is_method(obj, name)) return bound_method(c, line, obj, name, out);
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        const jv *v = jv_dict_get_cstr(obj, name, strlen(name));
        *out = v ? jv_incref(*v) : jv_undef(NULL);
        return true;
    }
    *out = jv_undef(NULL);
    return true;
}

bool jinja_getitem(jctx *c, int line, jv obj, jv key, jv *out) {
    *out = jv_undef(NULL);
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        const jv *v = jv_dict_get(obj, key);
        if (v) { *out = jv_incref(*v); return true; }
        if (key.t == JV_STR && obj.t == JV_DICT && jinja_is_method(obj, key.u.s->s)) return bound_method(c, line, obj, key.u.s->s, out);
        return true;
    }
    if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.t == JV_BOOL ? key.u.b : key.u.i;
        if (obj.t == JV_LIST) {
            int64_t n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) *out = jv_incref(obj.u.l->v[i]);
            return true;
        }
        int64_t n = (int64_t)jv_utf8_len(obj.u.s->s, obj.u.s->len);
        if (i < 0) i += n;
        if (i < 0 || i >= n) return true;
        size_t off = 0;
        uint32_t cp;
        for (int64_t k = 0; k < i; k++) off += jv_utf8_decode(obj.u.s->s + off, obj.u.s->len - off, &cp);
        size_t l = jv_utf8_decode(obj.u.s->s + off, obj.u.s->len - off, &cp);
        return jstr_new(c, line, obj.u.s->s + off, l, out);
    }
    if (key.t == JV_STR && jinja_is_method(obj, key.u.s->s)) return bound_method(c, line, obj, key.u.s->s, out);
    return true;
}

/* ---------------------------------------------------------------- operators */
static bool int_like(jv v) { return v.t == JV_INT || v.t == JV_BOOL; }
static int64_t as_int(jv v) { return v.t == JV_BOOL ? v.u.b : v.u.i; }

static bool repeat(jctx *c, int line, jv seq, int64_t n, jv *out) {
    if (n < 0) n = 0;
    if (seq.t == JV_STR) {
        if (seq.u.s->len && (uint64_t)n > c->max_out / seq.u.s->len) return jerr(c, line, "string too large");
        sb b;
        jsb_init(c, &b);
        for (int64_t i = 0; i < n; i++) sb_put(&b, seq.u.s->s, seq.u.s->len);
        return jsb_take(c, line, &b, out);
    }
    if (seq.u.l->n && (uint64_t)n > MAX_LIST / seq.u.l->n) return jerr(c, line, "list too large");
    if (!jwork(c, line, (uint64_t)n * seq.u.l->n * sizeof(jv))) return false;
    jv l = jv_list_new(0);
    if (jv_is_oom(l)) return joom(c, line);
    l.u.l->tuple = seq.u.l->tuple;
    for (int64_t i = 0; i < n; i++)
        for (size_t k = 0; k < seq.u.l->n; k++)
            if (!jv_list_push(l, jv_incref(seq.u.l->v[k]))) { jv_decref(l); return joom(c, line); }
    *out = l;
    return true;
}

static bool py_format(jctx *c, int line, jv fmt, jv args, jv *out);

static const char *opname(int op) {
    switch (op) {
    case OP_ADD: return "+"; case OP_SUB: return "-"; case OP_MUL: return "*"; case OP_DIV: return "/";
    case OP_FLOORDIV: return "//"; case OP_MOD: return "%"; case OP_POW: return "**";
    default: return "?";
    }
}

bool jinja_binop(jctx *c, int line, int op, jv a, jv b, jv *out) {
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        jv u = a.t == JV_UNDEF ? a : b;
        if (u.u.hint) return jerr(c, line, "'%s' is undefined", u.u.hint);
        return jerr(c, line, "unsupported operand: undefined value");
    }
    if (int_like(a) && int_like(b)) {
        int64_t x = as_int(a), y = as_int(b), r;
        switch (op) {
        case OP_ADD: if (__builtin_add_overflow(x, y, &r)) return jerr(c, line, "integer overflow"); *out = jv_int(r); return true;
        case OP_SUB: if (__builtin_sub_overflow(x, y, &r)) return jerr(c, line, "integer overflow"); *out = jv_int(r); return true;
        case OP_MUL: if (__builtin_mul_overflow(x, y, &r)) return jerr(c, line, "integer overflow"); *out = jv_int(r); return true;
        case OP_DIV: if (y == 0) return jerr(c, line, "division by zero"); *out = jv_float((double)x / (double)y); return true;
        case OP_FLOORDIV: case OP_MOD: {
            if (y == 0) return jerr(c, line, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) return jerr(c, line, "integer overflow");
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) { q--; m += y; }
            *out = jv_int(op == OP_FLOORDIV ? q : m);
            return true;
        }
        case OP_POW: {
            if (y < 0) { *out = jv_float(pow((double)x, (double)y)); return true; }
            int64_t res = 1, base = x;
            uint64_t e = (uint64_t)y;
            while (e) {
                if (e & 1) if (__builtin_mul_overflow(res, base, &res)) return jerr(c, line, "integer overflow");
                e >>= 1;
                if (e && __builtin_mul_overflow(base, base, &base)) return jerr(c, line, "integer overflow");
            }
            *out = jv_int(res);
            return true;
        }
        }
    }
    if (jv_is_number(a) && jv_is_number(b)) {
        double x = jv_as_double(a), y = jv_as_double(b);
        switch (op) {
        case OP_ADD: *out = jv_float(x + y); return true;
        case OP_SUB: *out = jv_float(x - y); return true;
        case OP_MUL: *out = jv_float(x * y); return true;
        case OP_DIV: if (y == 0) return jerr(c, line, "float division by zero"); *out = jv_float(x / y); return true;
        case OP_FLOORDIV: if (y == 0) return jerr(c, line, "float floor division by zero"); *out = jv_float(floor(x / y)); return true;
        case OP_MOD: {
            if (y == 0) return jerr(c, line, "float modulo");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            *out = jv_float(m);
            return true;
        }
        case OP_POW:
            if (x == 0 && y < 0) return jerr(c, line, "0.0 cannot be raised to a negative power");
            *out = jv_float(pow(x, y));
            return true;
        }
    }
    if (op == OP_ADD && a.t == JV_STR && b.t == JV_STR) {
        sb s;
        jsb_init(c, &s);
        sb_put(&s, a.u.s->s, a.u.s->len);
        sb_put(&s, b.u.s->s, b.u.s->len);
        return jsb_take(c, line, &s, out);
    }
    if (op == OP_ADD && a.t == JV_LIST && b.t == JV_LIST && a.u.l->tuple == b.u.l->tuple) {
        /* without this, `{% set ns.l = ns.l + ns.l %}` in a loop doubled a list to gigabytes */
        if ((uint64_t)a.u.l->n + b.u.l->n > MAX_LIST) return jerr(c, line, "list too large");
        if (!jwork(c, line, ((uint64_t)a.u.l->n + b.u.l->n) * sizeof(jv))) return false;
        jv l = jv_list_new(a.u.l->n + b.u.l->n);
        if (jv_is_oom(l)) return joom(c, line);
        l.u.l->tuple = a.u.l->tuple;
        for (size_t i = 0; i < a.u.l->n; i++) jv_list_push(l, jv_incref(a.u.l->v[i]));
        for (size_t i = 0; i < b.u.l->n; i++) jv_list_push(l, jv_incref(b.u.l->v[i]));
        *out = l;
        return true;
    }
    if (op == OP_MUL && (a.t == JV_STR || a.t == JV_LIST) && int_like(b)) return repeat(c, line, a, as_int(b), out);
    if (op == OP_MUL && (b.t == JV_STR || b.t == JV_LIST) && int_like(a)) return repeat(c, line, b, as_int(a), out);
    if (op == OP_MOD && a.t == JV_STR) return py_format(c, line, a, b, out);
    return jerr(c, line, "unsupported operand type(s) for %s: '%s' and '%s'", opname(op), jv_type_name(a), jv_type_name(b));
}

static int cmp_str(jv a, jv b) {
    size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
    int r = memcmp(a.u.s->s, b.u.s->s, n);
    if (r) return r;
    return a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len;
}

/* three-way ordering for <,>,sort; false if not orderable */
static bool order(jv a, jv b, int *r) {
    if (jv_is_number(a) && jv_is_number(b)) {
        if (int_like(a) && int_like(b)) { int64_t x = as_int(a), y = as_int(b); *r = x < y ? -1 : x > y; return true; }
        double x = jv_as_double(a), y = jv_as_double(b);
        *r = x < y ? -1 : x > y;
        return true;
    }
    if (a.t == JV_STR && b.t == JV_STR) { *r = cmp_str(a, b); return true; }
    if (a.t == JV_LIST && b.t == JV_LIST && a.u.l->tuple == b.u.l->tuple) {
        for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
            return order(a.u.l->v[i], b.u.l->v[i], r);
        }
        *r = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
        return true;
    }
    return false;
}

/* Work charged for comparing or searching: the bytes or elements that may be looked at. */
static uint64_t scan_cost(jv a, jv b) {
    uint64_t x = a.t == JV_STR ? a.u.s->len : a.t == JV_LIST ? a.u.l->n * sizeof(jv) : 0;
    uint64_t y = b.t == JV_STR ? b.u.s->len : b.t == JV_LIST ? b.u.l->n * sizeof(jv) : 0;
    return x + y;
}

bool jinja_compare(jctx *c, int line, int op, jv a, jv b, bool *res) {
    if (!jwork(c, line, scan_cost(a, b))) return false;
    if (op == OP_EQ) { *res = jv_equal(a, b); return true; }
    if (op == OP_NE) { *res = !jv_equal(a, b); return true; }
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        jv u = a.t == JV_UNDEF ? a : b;
        return u.u.hint ? jerr(c, line, "'%s' is undefined", u.u.hint) : jerr(c, line, "comparison with undefined value");
    }
    int r;
    if (!order(a, b, &r)) {
        const char *s = op == OP_LT ? "<" : op == OP_LTEQ ? "<=" : op == OP_GT ? ">" : ">=";
        return jerr(c, line, "'%s' not supported between instances of '%s' and '%s'", s, jv_type_name(a), jv_type_name(b));
    }
    switch (op) {
    case OP_LT: *res = r < 0; break;
    case OP_LTEQ: *res = r <= 0; break;
    case OP_GT: *res = r > 0; break;
    default: *res = r >= 0; break;
    }
    return true;
}

bool jinja_contains(jctx *c, int line, jv container, jv item, bool *res) {
    *res = false;
    if (!jwork(c, line, scan_cost(container, item))) return false;
    switch (container.t) {
    case JV_UNDEF: return true;
    case JV_STR:
        if (item.t != JV_STR) return jerr(c, line, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        if (item.u.s->len == 0) { *res = true; return true; }
        *res = memmem(container.u.s->s, container.u.s->len, item.u.s->s, item.u.s->len) != NULL;
        return true;
    case JV_LIST:
        for (size_t i = 0; i < container.u.l->n; i++)
            if (jv_equal(container.u.l->v[i], item)) { *res = true; break; }
        return true;
    case JV_DICT:
        if ((item.t == JV_LIST && !item.u.l->tuple) || item.t == JV_DICT || item.t == JV_NS)
            return jerr(c, line, "unhashable type: '%s'", jv_type_name(item));
        *res = jv_dict_get(container, item) != NULL;
        return true;
    default: return jerr(c, line, "argument of type '%s' is not iterable", jv_type_name(container));
    }
}

/* ---------------------------------------------------------------- string helpers */
typedef struct { uint32_t *cp; size_t n; } cps;

static bool to_cps(const char *s, size_t n, cps *o) {
    o->cp = malloc((n + 1) * sizeof *o->cp);
    o->n = 0;
    if (!o->cp) return false;
    for (size_t i = 0; i < n;) i += jv_utf8_decode(s + i, n - i, &o->cp[o->n++]);
    return true;
}

static bool cp_in(uint32_t c, const cps *set) {
    if (!set) return jv_cp_isspace(c);
    for (size_t i = 0; i < set->n; i++) if (set->cp[i] == c) return true;
    return false;
}

/* Python str.strip/lstrip/rstrip(chars) */
static bool py_strip(jctx *c, int line, jv s, jv chars, bool left, bool right, jv *out) {
    cps set, *sp = NULL;
    if (chars.t == JV_STR) {
        if (!to_cps(chars.u.s->s, chars.u.s->len, &set)) return joom(c, line);
        sp = &set;
    } else if (chars.t != JV_NONE && chars.t != JV_UNDEF) return jerr(c, line, "strip arg must be None or str");
    const char *p = s.u.s->s;
    size_t a = 0, b = s.u.s->len;
    if (left)
        while (a < b) {
            uint32_t cp;
            size_t k = jv_utf8_decode(p + a, b - a, &cp);
            if (!cp_in(cp, sp)) break;
            a += k;
        }
    if (right)
        while (b > a) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
            uint32_t cp;
            jv_utf8_decode(p + st, b - st, &cp);
            if (!cp_in(cp, sp)) break;
            b = st;
        }
    if (sp) free(set.cp);
    return jstr_new(c, line, p + a, b - a, out);
}

static bool push_str(jctx *c, int line, jv l, const char *s, size_t n) {
    jv v = jv_str_new(s, n);
    if (jv_is_oom(v) || !jv_list_push(l, v)) return joom(c, line);
    return true;
}

static bool py_split(jctx *c, int line, jv s, jv sep, int64_t maxsplit, bool from_right, jv *out) {
    jv l = jv_list_new(0);
    if (jv_is_oom(l)) return joom(c, line);
    const char *p = s.u.s->s;
    size_t n = s.u.s->len;
    if (sep.t == JV_STR) {
        size_t sl = sep.u.s->len;
        if (sl == 0) { jv_decref(l); return jerr(c, line, "empty separator"); }
        if (!from_right) {
            size_t st = 0;
            int64_t done = 0;
            for (;;) {
                const char *f = (maxsplit < 0 || done < maxsplit) ? memmem(p + st, n - st, sep.u.s->s, sl) : NULL;
                if (!f) { if (!push_str(c, line, l, p + st, n - st)) { jv_decref(l); return false; } break; }
                if (!push_str(c, line, l, p + st, (size_t)(f - p) - st)) { jv_decref(l); return false; }
                st = (size_t)(f - p) + sl;
                done++;
            }
        } else {
            /* collect from the right then reverse */
            size_t end = n;
            int64_t done = 0;
            for (;;) {
                const char *f = NULL;
                if ((maxsplit < 0 || done < maxsplit) && end >= sl)
                    for (size_t i = end - sl + 1; i-- > 0;)
                        if (!memcmp(p + i, sep.u.s->s, sl)) { f = p + i; break; }
                if (!f) { if (!push_str(c, line, l, p, end)) { jv_decref(l); return false; } break; }
                if (!push_str(c, line, l, f + sl, end - (size_t)(f - p) - sl)) { jv_decref(l); return false; }
                end = (size_t)(f - p);
                done++;
            }
            for (size_t i = 0, j = l.u.l->n - 1; i < j; i++, j--) { jv t = l.u.l->v[i]; l.u.l->v[i] = l.u.l->v[j]; l.u.l->v[j] = t; }
        }
    } else {
        if (from_right && maxsplit >= 0) { jv_decref(l); return jerr(c, line, "rsplit with maxsplit and no separator is not supported"); }
        size_t i = 0;
        int64_t done = 0;
        for (;;) {
            uint32_t cp;
            while (i < n) { size_t k = jv_utf8_decode(p + i, n - i, &cp); if (!jv_cp_isspace(cp)) break; i += k; }
            if (i >= n) break;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = n;
                while (e > i) { size_t st = e - 1; while (st > i && ((unsigned char)p[st] & 0xC0) == 0x80) st--; jv_utf8_decode(p + st, e - st, &cp); if (!jv_cp_isspace(cp)) break; e = st; }
                if (!push_str(c, line, l, p + i, e - i)) { jv_decref(l); return false; }
                break;
            }
            size_t st = i;
            while (i < n) { size_t k = jv_utf8_decode(p + i, n - i, &cp); if (jv_cp_isspace(cp)) break; i += k; }
            if (!push_str(c, line, l, p + st, i - st)) { jv_decref(l); return false; }
            done++;
        }
    }
    *out = l;
    return true;
}

static bool py_replace(jctx *c, int line, jv s, jv old, jv new_, int64_t count, jv *out) {
    if (old.t != JV_STR || new_.t != JV_STR) return jerr(c, line, "replace() arguments must be str");
    sb b;
    jsb_init(c, &b);
    const char *p = s.u.s->s;
    size_t n = s.u.s->len, ol = old.u.s->len;
    int64_t done = 0;
    if (ol == 0) {
        size_t i = 0;
        for (;;) {
            if (count < 0 || done < count) { sb_put(&b, new_.u.s->s, new_.u.s->len); done++; }
            if (i >= n) break;
            uint32_t cp;
            size_t k = jv_utf8_decode(p + i, n - i, &cp);
            sb_put(&b, p + i, k);
            i += k;
        }
        return jsb_take(c, line, &b, out);
    }
    size_t st = 0;
    for (;;) {
        const char *f = (count < 0 || done < count) ? memmem(p + st, n - st, old.u.s->s, ol) : NULL;
        if (!f) { sb_put(&b, p + st, n - st); break; }
        sb_put(&b, p + st, (size_t)(f - p) - st);
        sb_put(&b, new_.u.s->s, new_.u.s->len);
        st = (size_t)(f - p) + ol;
        done++;
    }
    return jsb_take(c, line, &b, out);
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAP, CASE_JTITLE, CASE_SWAP };

static bool is_cased_letter(uint32_t cp) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

static bool change_case(jctx *c, int line, jv s, int mode, jv *out) {
    sb b;
    jsb_init(c, &b);
    const char *p = s.u.s->s;
    size_t n = s.u.s->len;
    bool prev_cased = false, first = true, word_start = true;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += jv_utf8_decode(p + i, n - i, &cp);
        uint32_t r = cp;
        switch (mode) {
        case CASE_UPPER: r = (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp); break;
        case CASE_LOWER: r = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp); break;
        case CASE_TITLE:
            r = prev_cased ? (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp) : (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp);
            prev_cased = is_cased_letter(cp);
            break;
        case CASE_CAP:
            r = first ? (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp) : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
            break;
        case CASE_JTITLE: {
            bool delim = jv_cp_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            if (delim) { word_start = true; break; }
            r = word_start ? (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp) : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
            word_start = false;
            break;
        }
        case CASE_SWAP: {
            utf8proc_int32_t u = utf8proc_toupper((utf8proc_int32_t)cp);
            r = (uint32_t)u != cp ? (uint32_t)u : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
            break;
        }
        }
        first = false;
        sb_put_cp(&b, r);
    }
    return jsb_take(c, line, &b, out);
}

static bool py_find(jv s, jv sub, bool rev, int64_t *pos) {
    const char *p = s.u.s->s;
    size_t n = s.u.s->len, sl = sub.u.s->len;
    const char *f = NULL;
    if (!rev) f = sl ? memmem(p, n, sub.u.s->s, sl) : p;
    else if (sl <= n)
        for (size_t i = n - sl + 1; i-- > 0;) if (!memcmp(p + i, sub.u.s->s, sl)) { f = p + i; break; }
    if (!f) { *pos = -1; return true; }
    *pos = (int64_t)jv_utf8_len(p, (size_t)(f - p));
    return true;
}

static bool starts_ends(jv s, jv x, bool ends) {
    if (x.t != JV_STR || x.u.s->len > s.u.s->len) return false;
    size_t off = ends ? s.u.s->len - x.u.s->len : 0;
    return !memcmp(s.u.s->s + off, x.u.s->s, x.u.s->len);
}

/* ---------------------------------------------------------------- argument binding */
typedef struct { const char *name; jv def; } param;

/* Binds positional+keyword args to params (values borrowed) into vals[]; false on error. */
static bool bind(jctx *c, int line, const char *fname, const param *ps, int np, const jv *args, int nargs,
                 char **kwn, const jv *kwv, int nkw, jv *vals) {
    if (nargs > np) return jerr(c, line, "%s() takes at most %d arguments (%d given)", fname, np, nargs);
    for (int i = 0; i < np; i++) vals[i] = i < nargs ? args[i] : ps[i].def;
    for (int k = 0; k < nkw; k++) {
        int idx = -1;
        for (int i = 0; i < np; i++) if (!strcmp(ps[i].name, kwn[k])) idx = i;
        if (idx < 0) return jerr(c, line, "%s() got an unexpected keyword argument '%s'", fname, kwn[k]);
        if (idx < nargs) return jerr(c, line, "%s() got multiple values for argument '%s'", fname, kwn[k]);
        vals[idx] = kwv[k];
    }
    return true;
}

#define U jv_undef(NULL)
#define BIND(fname, ...)                                                                   \
    param ps_[] = {__VA_ARGS__};                                                           \
    enum { NP_ = sizeof ps_ / sizeof ps_[0] };                                             \
    jv a_[NP_];                                                                            \
    if (!bind(c, line, fname, ps_, NP_, args, nargs, kwn, kwv, nkw, a_)) return false

static bool need_str(jctx *c, int line, jv v, const char *what) {
    if (v.t == JV_STR) return true;
    return jerr(c, line, "%s must be str, not %s", what, jv_type_name(v));
}

static bool need_int(jctx *c, int line, jv v, int64_t *out, const char *what) {
    if (int_like(v)) { *out = as_int(v); return true; }
    return jerr(c, line, "'%s' object cannot be interpreted as an integer (%s)", jv_type_name(v), what);
}

/* ---------------------------------------------------------------- methods */
static bool str_method(jctx *c, int line, jv s, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        BIND(name, {"chars", jv_none()});
        return py_strip(c, line, s, a_[0], name[0] != 'r', name[0] != 'l', out);
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        BIND(name, {"sep", jv_none()}, {"maxsplit", jv_int(-1)});
        int64_t ms = -1;
        if (a_[0].t != JV_NONE && !need_str(c, line, a_[0], "sep")) return false;
        if (!need_int(c, line, a_[1], &ms, "maxsplit")) return false;
        return py_split(c, line, s, a_[0], ms, name[0] == 'r', out);
    }
    if (!strcmp(name, "splitlines")) {
        BIND(name, {"keepends", jv_bool(false)});
        jv l = jv_list_new(0);
        if (jv_is_oom(l)) return joom(c, line);
        const char *p = s.u.s->s;
        size_t n = s.u.s->len, st = 0;
        bool keep = jv_truthy(a_[0]);
        for (size_t i = 0; i < n;) {
            size_t k = 0;
            if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') k = 2;
            else if (p[i] == '\n' || p[i] == '\r' || p[i] == '\v' || p[i] == '\f' || (p[i] >= 0x1c && p[i] <= 0x1e)) k = 1;
            if (k) {
                if (!push_str(c, line, l, p + st, i - st + (keep ? k : 0))) { jv_decref(l); return false; }
                i += k;
                st = i;
            } else i++;
        }
        if (st < n && !push_str(c, line, l, p + st, n - st)) { jv_decref(l); return false; }
        *out = l;
        return true;
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        BIND(name, {"prefix", U});
        bool ends = name[0] == 'e', r = false;
        if (a_[0].t == JV_LIST && a_[0].u.l->tuple) {
            for (size_t i = 0; i < a_[0].u.l->n; i++) {
                if (a_[0].u.l->v[i].t != JV_STR) return jerr(c, line, "tuple for %s must only contain str", name);
                r |= starts_ends(s, a_[0].u.l->v[i], ends);
            }
        } else if (a_[0].t == JV_STR) r = starts_ends(s, a_[0], ends);
        else return jerr(c, line, "%s first arg must be str or a tuple of str, not %s", name, jv_type_name(a_[0]));
        *out = jv_bool(r);
        return true;
    }
    if (!strcmp(name, "replace")) {
        BIND(name, {"old", U}, {"new", U}, {"count", jv_int(-1)});
        int64_t cnt = -1;
        if (!need_int(c, line, a_[2], &cnt, "count")) return false;
        return py_replace(c, line, s, a_[0], a_[1], cnt, out);
    }
    if (!strcmp(name, "upper")) return change_case(c, line, s, CASE_UPPER, out);
    if (!strcmp(name, "lower") || !strcmp(name, "casefold")) return change_case(c, line, s, CASE_LOWER, out);
    if (!strcmp(name, "title")) return change_case(c, line, s, CASE_TITLE, out);
    if (!strcmp(name, "capitalize")) return change_case(c, line, s, CASE_CAP, out);
    if (!strcmp(name, "swapcase")) return change_case(c, line, s, CASE_SWAP, out);
    if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "index")) {
        BIND(name, {"sub", U});
        if (!need_str(c, line, a_[0], "sub")) return false;
        int64_t pos;
        py_find(s, a_[0], name[0] == 'r', &pos);
        if (pos < 0 && name[0] == 'i') return jerr(c, line, "substring not found");
        *out = jv_int(pos);
        return true;
    }
    if (!strcmp(name, "count")) {
        BIND(name, {"sub", U});
        if (!need_str(c, line, a_[0], "sub")) return false;
        size_t sl = a_[0].u.s->len, n = s.u.s->len;
        int64_t cnt = 0;
        if (sl == 0) cnt = (int64_t)jv_utf8_len(s.u.s->s, n) + 1;
        else for (size_t i = 0; i + sl <= n;) {
            const char *f = memmem(s.u.s->s + i, n - i, a_[0].u.s->s, sl);
            if (!f) break;
            cnt++;
            i = (size_t)(f - s.u.s->s) + sl;
        }
        *out = jv_int(cnt);
        return true;
    }
    if (!strcmp(name, "join")) {
        BIND(name, {"iterable", U});
        jv l;
        if (!jinja_to_list(c, line, a_[0], &l)) return false;
        sb b;
        jsb_init(c, &b);
        for (size_t i = 0; i < l.u.l->n; i++) {
            if (l.u.l->v[i].t != JV_STR) { sb_free(&b); jv_decref(l); return jerr(c, line, "sequence item %zu: expected str instance, %s found", i, jv_type_name(l.u.l->v[i])); }
            if (i) sb_put(&b, s.u.s->s, s.u.s->len);
            sb_put(&b, l.u.l->v[i].u.s->s, l.u.l->v[i].u.s->len);
        }
        jv_decref(l);
        return jsb_take(c, line, &b, out);
    }
    if (!strcmp(name, "removeprefix") || !strcmp(name, "removesuffix")) {
        BIND(name, {"x", U});
        if (!need_str(c, line, a_[0], name)) return false;
        bool suf = name[6] == 's';
        if (starts_ends(s, a_[0], suf)) {
            size_t k = a_[0].u.s->len;
            return jstr_new(c, line, s.u.s->s + (suf ? 0 : k), s.u.s->len - k, out);
        }
        *out = jv_incref(s);
        return true;
    }
    if (!strncmp(name, "is", 2)) {
        if (nargs || nkw) return jerr(c, line, "%s() takes no arguments", name);
        bool r = s.u.s->len > 0, any_cased = false;
        for (size_t i = 0; i < s.u.s->len;) {
            uint32_t cp;
            i += jv_utf8_decode(s.u.s->s + i, s.u.s->len - i, &cp);
            utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
            bool alpha = k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
            bool digit = k == UTF8PROC_CATEGORY_ND;
            if (!strcmp(name, "isdigit")) r &= digit;
            else if (!strcmp(name, "isalpha")) r &= alpha;
            else if (!strcmp(name, "isalnum")) r &= alpha || digit || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
            else if (!strcmp(name, "isspace")) r &= jv_cp_isspace(cp);
            else if (!strcmp(name, "islower")) { if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LT) r = false; if (k == UTF8PROC_CATEGORY_LL) any_cased = true; }
            else if (!strcmp(name, "isupper")) { if (k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT) r = false; if (k == UTF8PROC_CATEGORY_LU) any_cased = true; }
        }
        if (!strcmp(name, "islower") || !strcmp(name, "isupper")) r = r && any_cased;
        *out = jv_bool(r);
        return true;
    }
    if (!strcmp(name, "format")) {
        /* "{}"/"{0}"/"{name}" replacement fields without format specs */
        sb b;
        jsb_init(c, &b);
        const char *p = s.u.s->s;
        size_t n = s.u.s->len;
        int auto_idx = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '{' && i + 1 < n && p[i + 1] == '{') { sb_putc(&b, '{'); i++; continue; }
            if (p[i] == '}' && i + 1 < n && p[i + 1] == '}') { sb_putc(&b, '}'); i++; continue; }
            if (p[i] != '{') { sb_putc(&b, p[i]); continue; }
            size_t e = i + 1;
            while (e < n && p[e] != '}') e++;
            if (e >= n) { sb_free(&b); return jerr(c, line, "Single '{' encountered in format string"); }
            const char *f = p + i + 1;
            size_t fl = e - i - 1;
            jv v = jv_undef(NULL);
            bool found = false;
            if (fl == 0) { if (auto_idx < nargs) { v = args[auto_idx++]; found = true; } }
            else if (f[0] >= '0' && f[0] <= '9') { int k = atoi(f); if (k < nargs) { v = args[k]; found = true; } }
            else for (int k = 0; k < nkw; k++) if (strlen(kwn[k]) == fl && !memcmp(kwn[k], f, fl)) { v = kwv[k]; found = true; }
            if (!found) { sb_free(&b); return jerr(c, line, "format: replacement field out of range"); }
            jv_print(&b, v);
            i = e;
        }
        return jsb_take(c, line, &b, out);
    }
    if (!strcmp(name, "center") || !strcmp(name, "ljust") || !strcmp(name, "rjust") || !strcmp(name, "zfill")) {
        BIND(name, {"width", U}, {"fillchar", U});
        int64_t w = 0;
        if (!need_int(c, line, a_[0], &w, "width")) return false;
        const char *fc = " ";
        size_t fcl = 1;
        if (!strcmp(name, "zfill")) fc = "0";
        if (a_[1].t == JV_STR) { fc = a_[1].u.s->s; fcl = a_[1].u.s->len; }
        int64_t len = (int64_t)jv_utf8_len(s.u.s->s, s.u.s->len);
        if (w > (int64_t)(c->max_out)) return jerr(c, line, "string too large");
        int64_t pad = w > len ? w - len : 0, left = 0;
        if (!strcmp(name, "center")) left = pad / 2 + (pad & w & 1);
        else if (!strcmp(name, "rjust") || !strcmp(name, "zfill")) left = pad;
        sb b;
        jsb_init(c, &b);
        for (int64_t i = 0; i < left; i++) sb_put(&b, fc, fcl);
        sb_put(&b, s.u.s->s, s.u.s->len);
        for (int64_t i = left; i < pad; i++) sb_put(&b, fc, fcl);
        return jsb_take(c, line, &b, out);
    }
    if (!strcmp(name, "partition") || !strcmp(name, "rpartition")) {
        BIND(name, {"sep", U});
        if (!need_str(c, line, a_[0], "sep") || a_[0].u.s->len == 0) return jerr(c, line, "empty separator");
        int64_t pos;
        bool rev = name[0] == 'r';
        const char *p = s.u.s->s, *f = NULL;
        size_t n = s.u.s->len, sl = a_[0].u.s->len;
        (void)pos;
        if (!rev) f = memmem(p, n, a_[0].u.s->s, sl);
        else if (sl <= n) for (size_t i = n - sl + 1; i-- > 0;) if (!memcmp(p + i, a_[0].u.s->s, sl)) { f = p + i; break; }
        jv l = jv_list_new(3);
        if (jv_is_oom(l)) return joom(c, line);
        l.u.l->tuple = true;
        bool ok;
        if (f) ok = push_str(c, line, l, p, (size_t)(f - p)) && push_str(c, line, l, f, sl) && push_str(c, line, l, f + sl, n - (size_t)(f - p) - sl);
        else if (!rev) ok = push_str(c, line, l, p, n) && push_str(c, line, l, "", 0) && push_str(c, line, l, "", 0);
        else ok = push_str(c, line, l, "", 0) && push_str(c, line, l, "", 0) && push_str(c, line, l, p, n);
        if (!ok) { jv_decref(l); return false; }
        *out = l;
        return true;
    }
    return jerr(c, line, "str has no method '%s'", name);
}

static bool items_list(jctx *c, int line, jv d, jv *out) {
    jv l = jv_list_new(d.u.d->n);
    if (jv_is_oom(l)) return joom(c, line);
    for (size_t i = 0; i < d.u.d->n; i++) {
        jv t = jv_list_new(2);
        if (jv_is_oom(t)) { jv_decref(l); return joom(c, line); }
        t.u.l->tuple = true;
        jv_list_push(t, jv_incref(d.u.d->k[i]));
        jv_list_push(t, jv_incref(d.u.d->v[i]));
        if (!jv_list_push(l, t)) { jv_decref(l); return joom(c, line); }
    }
    *out = l;
    return true;
}

bool jinja_call_method(jctx *c, int line, jv self, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    if (self.t == JV_STR) return str_method(c, line, self, name, args, nargs, kwn, kwv, nkw, out);
    if (self.t == JV_DICT) {
        if (!strcmp(name, "get")) {
            BIND(name, {"key", U}, {"default", jv_none()});
            const jv *v = jv_dict_get(self, a_[0]);
            *out = jv_incref(v ? *v : a_[1]);
            return true;
        }
        if (!strcmp(name, "items")) {
            BIND(name, {"_", U});
            (void)a_;
            if (!items_list(c, line, self, out)) return false;
            out->u.l->view = 1;
            return true;
        }
        if (!strcmp(name, "keys") || !strcmp(name, "values")) {
            BIND(name, {"_", U});
            (void)a_;
            jv l = jv_list_new(self.u.d->n);
            if (jv_is_oom(l)) return joom(c, line);
            for (size_t i = 0; i < self.u.d->n; i++) jv_list_push(l, jv_incref(name[0] == 'k' ? self.u.d->k[i] : self.u.d->v[i]));
            l.u.l->view = name[0] == 'k' ? 2 : 3;
            *out = l;
            return true;
        }
        if (!strcmp(name, "copy")) {
            jv d = jv_dict_new(self.u.d->n);
            if (jv_is_oom(d)) return joom(c, line);
            for (size_t i = 0; i < self.u.d->n; i++) jv_dict_set(d, jv_incref(self.u.d->k[i]), jv_incref(self.u.d->v[i]));
            *out = d;
            return true;
        }
        return jerr(c, line, "access to attribute '%s' of 'dict' object is unsafe.", name);
    }
    if (self.t == JV_LIST) {
        if (!strcmp(name, "index") || !strcmp(name, "count")) {
            BIND(name, {"x", U});
            int64_t cnt = 0, idx = -1;
            for (size_t i = 0; i < self.u.l->n; i++)
                if (jv_equal(self.u.l->v[i], a_[0])) { cnt++; if (idx < 0) idx = (int64_t)i; }
            if (name[0] == 'i' && idx < 0) return jerr(c, line, "x not in list");
            *out = jv_int(name[0] == 'i' ? idx : cnt);
            return true;
        }
        if (!strcmp(name, "copy")) return jinja_to_list(c, line, self, out);
        return jerr(c, line, "access to attribute '%s' of '%s' object is unsafe.", name, jv_type_name(self));
    }
    return jerr(c, line, "'%s' object has no attribute '%s'", jv_type_name(self), name);
}

/* ---------------------------------------------------------------- globals */
static const char *const GLOBALS[] = {"range", "namespace", "dict", "raise_exception", "strftime_now", NULL};

bool jinja_global(const char *name, jv *out) {
    for (int i = 0; GLOBALS[i]; i++)
        if (!strcmp(GLOBALS[i], name)) {
            *out = jv_func_new(JF_GLOBAL, GLOBALS[i], jv_undef(NULL));
            return true; /* OOM surfaces as undefined-with-oom-hint */
        }
    return false;
}

bool jinja_call_global(jctx *c, int line, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    if (!strcmp(name, "range")) {
        if (nkw) return jerr(c, line, "range() takes no keyword arguments");
        if (nargs < 1 || nargs > 3) return jerr(c, line, "range expected 1 to 3 arguments, got %d", nargs);
        int64_t v[3] = {0, 0, 1};
        for (int i = 0; i < nargs; i++) if (!need_int(c, line, args[i], &v[i], "range")) return false;
        int64_t start = nargs == 1 ? 0 : v[0], stop = nargs == 1 ? v[0] : v[1], step = nargs == 3 ? v[2] : 1;
        if (step == 0) return jerr(c, line, "range() arg 3 must not be zero");
        double cnt = step > 0 ? ceil(((double)stop - (double)start) / (double)step) : ceil(((double)start - (double)stop) / (double)-step);
        if (cnt < 0) cnt = 0;
        if (cnt > MAX_RANGE) return jerr(c, line, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE);
        jv l = jv_list_new((size_t)cnt);
        if (jv_is_oom(l)) return joom(c, line);
        for (int64_t i = 0; i < (int64_t)cnt; i++) jv_list_push(l, jv_int(start + i * step));
        *out = l;
        return true;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        jv d = name[0] == 'n' ? jv_ns_new() : jv_dict_new(0);
        if (jv_is_oom(d)) return joom(c, line);
        if (nargs > 1) { jv_decref(d); return jerr(c, line, "%s expected at most 1 argument", name); }
        if (nargs == 1) {
            if (args[0].t != JV_DICT) { jv_decref(d); return jerr(c, line, "%s(): argument must be a mapping", name); }
            for (size_t i = 0; i < args[0].u.d->n; i++)
                if (!jv_dict_set(d, jv_incref(args[0].u.d->k[i]), jv_incref(args[0].u.d->v[i]))) { jv_decref(d); return joom(c, line); }
        }
        for (int k = 0; k < nkw; k++)
            if (!jv_dict_set_cstr(d, kwn[k], jv_incref(kwv[k]))) { jv_decref(d); return joom(c, line); }
        if (jv_depth(d) > JV_MAX_DEPTH) { jv_decref(d); return jerr(c, line, "value nesting too deep"); }
        if (d.t == JV_NS) {
            if (c->namespaces.t != JV_LIST) {
                c->namespaces = jv_list_new(4);
                if (jv_is_oom(c->namespaces)) { c->namespaces = jv_undef(NULL); jv_decref(d); return joom(c, line); }
            }
            if (!jv_list_push(c->namespaces, jv_incref(d))) { jv_decref(d); return joom(c, line); }
        }
        *out = d;
        return true;
    }
    if (!strcmp(name, "raise_exception")) {
        BIND(name, {"message", U});
        sb b;
        sb_init(&b, 4096);
        jv_print(&b, a_[0]);
        jerr(c, line, "%s", b.p ? b.p : "");
        sb_free(&b);
        return false;
    }
    if (!strcmp(name, "strftime_now")) {
        BIND(name, {"format", U});
        if (!need_str(c, line, a_[0], "format")) return false;
        time_t t = c->fixed_time ? (time_t)c->now : time(NULL);
        struct tm tm;
        if (!localtime_r(&t, &tm)) return jerr(c, line, "strftime_now: bad time");
        char buf[512];
        size_t k = a_[0].u.s->len ? strftime(buf, sizeof buf, a_[0].u.s->s, &tm) : 0;
        if (k == 0 && a_[0].u.s->len) return jerr(c, line, "strftime_now: result too long or empty");
        return jstr_new(c, line, buf, k, out);
    }
    return jerr(c, line, "'%s' is not callable", name);
}

/* ---------------------------------------------------------------- % formatting */
static bool py_format(jctx *c, int line, jv fmt, jv args, jv *out) {
    sb b;
    jsb_init(c, &b);
    const char *p = fmt.u.s->s;
    size_t n = fmt.u.s->len, ai = 0;
    bool tuple = args.t == JV_LIST && args.u.l->tuple;
    size_t nargs = tuple ? args.u.l->n : 1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') { sb_putc(&b, p[i]); continue; }
        if (++i >= n) { sb_free(&b); return jerr(c, line, "incomplete format"); }
        if (p[i] == '%') { sb_putc(&b, '%'); continue; }
        jv v;
        if (p[i] == '(') {
            size_t e = i + 1;
            while (e < n && p[e] != ')') e++;
            if (e >= n || args.t != JV_DICT) { sb_free(&b); return jerr(c, line, "format requires a mapping"); }
            const jv *x = jv_dict_get_cstr(args, p + i + 1, e - i - 1);
            if (!x) { sb_free(&b); return jerr(c, line, "KeyError in format"); }
            v = *x;
            i = e + 1;
        } else {
            if (ai >= nargs) { sb_free(&b); return jerr(c, line, "not enough arguments for format string"); }
            v = tuple ? args.u.l->v[ai] : args;
            ai++;
        }
        char spec[32];
        size_t sl = 0;
        spec[sl++] = '%';
        while (i < n && strchr("-+ 0#", p[i]) && sl < 8) spec[sl++] = p[i++];
        long width = 0, prec = 0; /* printf would build a buffer that large (%.999999999f spun for minutes) */
        while (i < n && p[i] >= '0' && p[i] <= '9' && sl < 16) { width = width * 10 + (p[i] - '0'); spec[sl++] = p[i++]; }
        if (i < n && p[i] == '.') {
            spec[sl++] = p[i++];
            while (i < n && p[i] >= '0' && p[i] <= '9' && sl < 24) { prec = prec * 10 + (p[i] - '0'); spec[sl++] = p[i++]; }
        }
        if (width > MAX_FORMAT_WIDTH || prec > MAX_FORMAT_WIDTH)
            { sb_free(&b); return jerr(c, line, "format: width or precision above %d", MAX_FORMAT_WIDTH); }
        if (i >= n) { sb_free(&b); return jerr(c, line, "incomplete format"); }
        char conv = p[i];
        if (conv == 's' || conv == 'r') {
            sb t;
            jsb_init(c, &t);
            if (conv == 's') jv_print(&t, v); else jv_repr(&t, v);
            spec[sl++] = 's';
            spec[sl] = '\0';
            sb_printf(&b, spec, t.p ? t.p : "");
            sb_free(&t);
        } else if (strchr("diouxXc", conv)) {
            if (!jv_is_number(v)) { sb_free(&b); return jerr(c, line, "%%%c format: a number is required, not %s", conv, jv_type_name(v)); }
            if (v.t == JV_FLOAT && !(fabs(v.u.f) < 9.2e18)) { sb_free(&b); return jerr(c, line, "format: number out of range"); }
            long long x = v.t == JV_FLOAT ? (long long)v.u.f : (long long)as_int(v);
            if (conv == 'i' || conv == 'u') conv = 'd';
            spec[sl++] = 'l'; spec[sl++] = 'l'; spec[sl++] = conv == 'c' ? 'd' : conv;
            spec[sl] = '\0';
            if (conv == 'c' && (x < 0 || x > 0x10FFFF)) { sb_free(&b); return jerr(c, line, "%%c arg not in range(0x110000)"); }
            if (conv == 'c') sb_put_cp(&b, (uint32_t)x);
            else sb_printf(&b, spec, x);
        } else if (strchr("eEfFgG", conv)) {
            if (!jv_is_number(v)) { sb_free(&b); return jerr(c, line, "must be real number, not %s", jv_type_name(v)); }
            spec[sl++] = conv;
            spec[sl] = '\0';
            sb_printf(&b, spec, jv_as_double(v));
        } else { sb_free(&b); return jerr(c, line, "unsupported format character '%c'", conv); }
    }
    if ((tuple && ai < nargs) || (!tuple && args.t != JV_DICT && args.t != JV_LIST && ai == 0))
        { sb_free(&b); return jerr(c, line, "not all arguments converted during string formatting"); }
    return jsb_take(c, line, &b, out);
}

/* ---------------------------------------------------------------- tests */
static const char *const TESTS[] = {"defined", "undefined", "none", "boolean", "false", "true", "integer", "float",
    "number", "string", "mapping", "iterable", "sequence", "callable", "sameas", "escaped", "in", "eq", "equalto", "==",
    "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "odd", "even",
    "divisibleby", "lower", "upper", "filter", "test", NULL};

bool jinja_has_test(const char *name) { return in_set(TESTS, name); }

bool jinja_test(jctx *c, int line, const char *name, jv v, const jv *args, int nargs, bool *res) {
    const char *n = name;
    *res = false;
    if (!strcmp(n, "defined")) { *res = v.t != JV_UNDEF; return true; }
    if (!strcmp(n, "undefined")) { *res = v.t == JV_UNDEF; return true; }
    if (!strcmp(n, "none")) { *res = v.t == JV_NONE; return true; }
    if (!strcmp(n, "boolean")) { *res = v.t == JV_BOOL; return true; }
    if (!strcmp(n, "false")) { *res = v.t == JV_BOOL && !v.u.b; return true; }
    if (!strcmp(n, "true")) { *res = v.t == JV_BOOL && v.u.b; return true; }
    if (!strcmp(n, "integer")) { *res = v.t == JV_INT; return true; }
    if (!strcmp(n, "float")) { *res = v.t == JV_FLOAT; return true; }
    if (!strcmp(n, "number")) { *res = jv_is_number(v); return true; }
    if (!strcmp(n, "string")) { *res = v.t == JV_STR; return true; }
    if (!strcmp(n, "mapping")) { *res = v.t == JV_DICT; return true; }
    if (!strcmp(n, "iterable")) { *res = v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF; return true; }
    if (!strcmp(n, "sequence")) { *res = v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF; return true; }
    if (!strcmp(n, "callable")) { *res = v.t == JV_FUNC || v.t == JV_UNDEF; return true; }
    if (!strcmp(n, "escaped")) { *res = false; return true; }
    if (!strcmp(n, "lower") || !strcmp(n, "upper")) { /* str(value).islower() */
        jv sv, r;
        if (!jinja_str(c, v, &sv)) return false;
        bool ok = str_method(c, line, sv, n[0] == 'l' ? "islower" : "isupper", NULL, 0, NULL, NULL, 0, &r);
        jv_decref(sv);
        if (!ok) return false;
        *res = r.u.b;
        return true;
    }
    if (!strcmp(n, "odd") || !strcmp(n, "even")) { /* value % 2 == 1 / == 0 */
        jv m;
        if (!jinja_binop(c, line, OP_MOD, v, jv_int(2), &m)) return false;
        *res = jv_equal(m, jv_int(n[0] == 'o' ? 1 : 0));
        jv_decref(m);
        return true;
    }
    if (!strcmp(n, "filter") || !strcmp(n, "test")) {
        *res = v.t == JV_STR && (n[0] == 'f' ? jinja_has_filter(v.u.s->s) : jinja_has_test(v.u.s->s));
        return true;
    }
    if (nargs < 1) return jerr(c, line, "test '%s' needs an argument", n);
    jv a = args[0];
    if (!strcmp(n, "sameas")) {
        *res = v.t == a.t && (v.t == JV_NONE || v.t == JV_UNDEF || (v.t == JV_BOOL && v.u.b == a.u.b) ||
                              (v.t == JV_INT && v.u.i == a.u.i) || (v.t >= JV_STR && v.u.s == a.u.s));
        return true;
    }
    if (!strcmp(n, "in")) return jinja_contains(c, line, a, v, res);
    if (!strcmp(n, "divisibleby")) {
        if (int_like(v) && int_like(a)) {
            if (as_int(a) == 0) return jerr(c, line, "integer division or modulo by zero");
            *res = as_int(v) % as_int(a) == 0;
            return true;
        }
        jv m;
        if (!jinja_binop(c, line, OP_MOD, v, a, &m)) return false;
        *res = jv_equal(m, jv_int(0));
        jv_decref(m);
        return true;
    }
    int op = 0;
    if (!strcmp(n, "eq") || !strcmp(n, "equalto") || !strcmp(n, "==")) op = OP_EQ;
    else if (!strcmp(n, "ne") || !strcmp(n, "!=")) op = OP_NE;
    else if (!strcmp(n, "lt") || !strcmp(n, "lessthan") || !strcmp(n, "<")) op = OP_LT;
    else if (!strcmp(n, "le") || !strcmp(n, "<=")) op = OP_LTEQ;
    else if (!strcmp(n, "gt") || !strcmp(n, "greaterthan") || !strcmp(n, ">")) op = OP_GT;
    else if (!strcmp(n, "ge") || !strcmp(n, ">=")) op = OP_GTEQ;
    if (op) return jinja_compare(c, line, op, v, a, res);
    return jerr(c, line, "no test named '%s'", n);
}
