/* jinja_globals.c — the globals of transformers' environment (range, namespace, dict, cycler, joiner,
 * raise_exception, strftime_now) and Jinja's tests (`x is defined`, `is divisibleby(3)`, …).
 * The test `filter` needs the filter table: jinja_env_test (filters) answers it. */
#include "jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ---------------------------------------------------------------- globals */
static const char *const GLOBALS[] = {"range", "namespace", "dict", "raise_exception", "strftime_now", "cycler",
    "joiner", NULL};

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
        for (int i = 0; i < nargs; i++) if (!jneed_int(c, line, args[i], &v[i], "range")) return false;
        int64_t start = nargs == 1 ? 0 : v[0], stop = nargs == 1 ? v[0] : v[1], step = nargs == 3 ? v[2] : 1;
        if (step == 0) return jerr(c, line, "range() arg 3 must not be zero");
        double cnt = step > 0 ? ceil(((double)stop - (double)start) / (double)step) : ceil(((double)start - (double)stop) / (double)-step);
        if (cnt < 0) cnt = 0;
        if (cnt > JINJA_MAX_RANGE) return jerr(c, line, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", JINJA_MAX_RANGE);
        if (!jwork(c, line, (uint64_t)cnt)) return false; /* one unit per element: ints are not allocated */
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
        JBIND(name, {"message", U});
        sb b;
        sb_init(&b, 4096);
        jv_print(&b, a_[0]);
        jerr(c, line, "%s", b.p ? b.p : "");
        sb_free(&b);
        return false;
    }
    if (!strcmp(name, "cycler") || !strcmp(name, "joiner")) return jinja_make_object(c, line, name, args, nargs, kwn, kwv, nkw, out);
    if (!strcmp(name, "strftime_now")) {
        JBIND(name, {"format", U});
        if (!jneed_str(c, line, a_[0], "format")) return false;
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

/* ---------------------------------------------------------------- tests */
static const char *const TESTS[] = {"defined", "undefined", "none", "boolean", "false", "true", "integer", "float",
    "number", "string", "mapping", "iterable", "sequence", "callable", "sameas", "escaped", "in", "eq", "equalto", "==",
    "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "odd", "even",
    "divisibleby", "lower", "upper", "filter", "test", NULL};

bool jinja_has_test(const char *name) { return jname_in(TESTS, name); }

bool jinja_test(jctx *c, int line, const char *name, jv v, const jv *args, int nargs, bool *res) {
    const char *n = name;
    *res = false;
    if (!strcmp(n, "defined")) { *res = v.t != JV_UNDEF; return true; }
    if (!strcmp(n, "undefined")) { *res = v.t == JV_UNDEF; return true; }
    if (!strcmp(n, "none")) { *res = v.t == JV_NONE; return true; }
    if (!strcmp(n, "boolean")) { *res = v.t == JV_BOOL; return true; }
    if (!strcmp(n, "false")) { *res = v.t == JV_BOOL && !v.u.b; return true; }
    if (!strcmp(n, "true")) { *res = v.t == JV_BOOL && v.u.b; return true; }
    if (!strcmp(n, "integer")) { *res = v.t == JV_INT || v.t == JV_BIG; return true; }
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
        bool ok = jinja_call_method(c, line, sv, n[0] == 'l' ? "islower" : "isupper", NULL, 0, NULL, NULL, 0, &r);
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
    if (!strcmp(n, "test")) { *res = v.t == JV_STR && jinja_has_test(v.u.s->s); return true; }
    if (!strcmp(n, "filter")) return jerr(c, line, "test 'filter' needs the filter table (jinja_env_test)");
    if (nargs < 1) return jerr(c, line, "test '%s' needs an argument", n);
    jv a = args[0];
    if (!strcmp(n, "sameas")) {
        *res = v.t == a.t && (v.t == JV_NONE || v.t == JV_UNDEF || (v.t == JV_BOOL && v.u.b == a.u.b) ||
                              (v.t == JV_INT && v.u.i == a.u.i) || (v.t >= JV_STR && v.u.s == a.u.s));
        return true;
    }
    if (!strcmp(n, "in")) return jinja_contains(c, line, a, v, res);
    if (!strcmp(n, "divisibleby")) {
        if (jv_int_like(v) && jv_int_like(a)) {
            if (jv_as_int(a) == 0) return jerr(c, line, "integer division or modulo by zero");
            *res = jv_as_int(v) % jv_as_int(a) == 0;
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
