/* jinja_ops.c — Python semantics of values: str(), iteration, the binary operators (+ - * / // %
 * ** on numbers, strings and lists; % formatting), comparisons and `in`. Every copy and
 * comparison is charged to the render's work budget. */
#include "jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_LIST ((uint64_t)JINJA_MAX_RANGE * 10) /* elements a list built by `*` or `+` may have */
#define MAX_FORMAT_WIDTH 4096                     /* width / precision of a %-format field */

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

/* ---------------------------------------------------------------- operators */

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

/* Python int arithmetic, exact within 128 bits; past that a clear error, never a wrapped value. */
static bool int_result(jctx *c, int line, bool overflow, jv_i128 r, jv *out) {
    if (overflow) return jerr(c, line, "integer result beyond 128 bits (lmx's integer range)");
    *out = jv_int128(r);
    return !jv_is_oom(*out) || joom(c, line);
}

static bool int_binop(jctx *c, int line, int op, jv_i128 x, jv_i128 y, jv *out) {
    jv_i128 r = 0;
    bool over;
    switch (op) {
    case OP_ADD: over = __builtin_add_overflow(x, y, &r); return int_result(c, line, over, r, out);
    case OP_SUB: over = __builtin_sub_overflow(x, y, &r); return int_result(c, line, over, r, out);
    case OP_MUL: over = __builtin_mul_overflow(x, y, &r); return int_result(c, line, over, r, out);
    case OP_FLOORDIV: case OP_MOD: {
        if (y == 0) return jerr(c, line, "integer division or modulo by zero");
        if (y == -1) { /* x // -1 overflows only for the most negative x */
            over = op == OP_FLOORDIV && __builtin_sub_overflow((jv_i128)0, x, &r);
            return int_result(c, line, over, r, out);
        }
        jv_i128 q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) { q--; m += y; }
        return int_result(c, line, false, op == OP_FLOORDIV ? q : m, out);
    }
    default: { /* OP_POW, y >= 0 */
        jv_i128 res = 1, base = x;
        over = false;
        for (jv_i128 e = y; e && !over; e >>= 1) {
            if (e & 1) over = __builtin_mul_overflow(res, base, &res);
            if (!over && e > 1) over = __builtin_mul_overflow(base, base, &base);
        }
        return int_result(c, line, over, res, out);
    }
    }
}

bool jinja_binop(jctx *c, int line, int op, jv a, jv b, jv *out) {
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        jv u = a.t == JV_UNDEF ? a : b;
        if (u.u.hint) return jerr(c, line, "'%s' is undefined", u.u.hint);
        return jerr(c, line, "unsupported operand: undefined value");
    }
    if ((jv_is_huge(a) || jv_is_huge(b)) && jv_is_number(a) && jv_is_number(b))
        return jerr(c, line, "integer beyond 128 bits: lmx prints and compares it exactly but does not compute with it");
    jv_i128 xi, yi;
    if (jv_get_i128(a, &xi) && jv_get_i128(b, &yi)) {
        if (op == OP_DIV && yi == 0) return jerr(c, line, "division by zero");
        if (op != OP_DIV && !(op == OP_POW && yi < 0)) return int_binop(c, line, op, xi, yi, out);
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
        /* bounded like `*`: `{% set ns.l = ns.l + ns.l %}` in a loop would double a list to gigabytes */
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
    if (op == OP_MUL && (a.t == JV_STR || a.t == JV_LIST) && jv_int_like(b)) return repeat(c, line, a, jv_as_int(b), out);
    if (op == OP_MUL && (b.t == JV_STR || b.t == JV_LIST) && jv_int_like(a)) return repeat(c, line, b, jv_as_int(a), out);
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
        jv_i128 xi, yi;
        if (jv_get_i128(a, &xi) && jv_get_i128(b, &yi)) { *r = xi < yi ? -1 : xi > yi; return true; }
        if (jv_is_integer(a) && jv_is_integer(b)) { *r = jv_int_cmp(a, b); return true; }
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
            long long x = v.t == JV_FLOAT ? (long long)v.u.f : (long long)jv_as_int(v);
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
