/* jinja_eval.c — tree-walking evaluation of the AST with Jinja2 scoping: the render context and
 * top-level assignments live in frame 0; each for-loop iteration and each macro call pushes a
 * frame (macro frames are barriers that only see themselves and frame 0). All state is per
 * render (jctx); the AST is read-only. */
#include "jinja_internal.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_MACRO_DEPTH 64


/* ---------------------------------------------------------------- frames */
static bool push_frame(jctx *c, bool barrier) {
    if (c->nframes == c->capframes) {
        int nc = c->capframes ? c->capframes * 2 : 8;
        jframe *nf = realloc(c->frames, (size_t)nc * sizeof *nf);
        if (!nf) return false;
        c->frames = nf;
        c->capframes = nc;
    }
    jv d = jv_dict_new(4);
    if (jv_is_oom(d)) return false;
    c->frames[c->nframes].vars = d;
    c->frames[c->nframes].barrier = barrier;
    c->nframes++;
    return true;
}

static void pop_frame(jctx *c) {
    c->nframes--;
    jv_decref(c->frames[c->nframes].vars);
}

static void frame_trim(jframe *f, size_t keep) {
    jv_dict *d = f->vars.u.d;
    for (size_t i = 0; i < d->n; i++) {
        jv_decref(d->v[i]);
        d->v[i] = jv_none();
        if (i >= keep) jv_decref(d->k[i]);
    }
    if (d->n > keep) d->n = keep;
}

static jv lookup(jctx *c, const char *name) {
    size_t len = strlen(name);
    for (int i = c->nframes - 1; i >= 0; i--) {
        const jv *v = jv_dict_get_cstr(c->frames[i].vars, name, len);
        if (v) return jv_incref(*v);
        if (c->frames[i].barrier && i > 1) i = 1;
    }
    jv g;
    if (jinja_global(name, &g)) return g;
    return jv_undef(name);
}

static bool assign(jctx *c, int line, const char *name, jv v /* consumed */) {
    if (jv_depth(v) > JV_MAX_DEPTH) { jv_decref(v); return jerr(c, line, "value nesting too deep"); }
    if (!jv_dict_set_cstr(c->frames[c->nframes - 1].vars, name, v)) return joom(c, line);
    return true;
}

static bool assign_targets(jctx *c, int line, char **names, int nnames, jv v /* borrowed */) {
    if (nnames == 1) return assign(c, line, names[0], jv_incref(v));
    jv lst;
    if (!jinja_to_list(c, line, v, &lst)) return false;
    if (lst.u.l->n != (size_t)nnames) {
        size_t got = lst.u.l->n;
        jv_decref(lst);
        return jerr(c, line, "%s values to unpack (expected %d, got %zu)", got > (size_t)nnames ? "too many" : "not enough", nnames, got);
    }
    for (int i = 0; i < nnames; i++)
        if (!assign(c, line, names[i], jv_incref(lst.u.l->v[i]))) { jv_decref(lst); return false; }
    jv_decref(lst);
    return true;
}

/* ---------------------------------------------------------------- expressions */
static bool eval_args(jctx *c, const jnode *n, jv **args, jv **kwv) {
    *args = NULL;
    *kwv = NULL;
    int na = n->args.n, nk = n->args2.n;
    if (na) {
        *args = calloc((size_t)na, sizeof **args);
        if (!*args) return joom(c, n->line);
    }
    if (nk) {
        *kwv = calloc((size_t)nk, sizeof **kwv);
        if (!*kwv) { free(*args); *args = NULL; return joom(c, n->line); }
    }
    for (int i = 0; i < na; i++)
        if (!jinja_eval(c, n->args.v[i], &(*args)[i])) goto fail;
    for (int i = 0; i < nk; i++)
        if (!jinja_eval(c, n->args2.v[i], &(*kwv)[i])) goto fail;
    return true;
fail:
    for (int i = 0; i < na; i++) jv_decref((*args)[i]);
    for (int i = 0; i < nk; i++) jv_decref((*kwv)[i]);
    free(*args);
    free(*kwv);
    *args = *kwv = NULL;
    return false;
}

static void free_args(const jnode *n, jv *args, jv *kwv) {
    for (int i = 0; i < n->args.n; i++) jv_decref(args[i]);
    for (int i = 0; i < n->args2.n; i++) jv_decref(kwv[i]);
    free(args);
    free(kwv);
}

static bool undefined_error(jctx *c, int line, jv u) {
    if (u.u.hint == jv_oom_hint) return joom(c, line);
    if (u.u.hint) return jerr(c, line, "'%s' is undefined", u.u.hint);
    return jerr(c, line, "undefined value");
}

/* Applies a filter node; `given` replaces the innermost input when the chain starts with NULL
 * (filter blocks, block set). */
static bool eval_filter(jctx *c, const jnode *n, const jv *given, jv *out) {
    jv in;
    if (!n->a) in = jv_incref(*given);
    else if (n->a->kind == JN_FILTER && given) { if (!eval_filter(c, n->a, given, &in)) return false; }
    else if (!jinja_eval(c, n->a, &in)) return false;
    jv *args, *kwv;
    if (!jstep(c, n->line) || !eval_args(c, n, &args, &kwv)) { jv_decref(in); return false; }
    bool ok = jinja_filter(c, n->line, n->name, in, args, n->args.n, n->names, kwv, n->args2.n, out);
    free_args(n, args, kwv);
    jv_decref(in);
    return ok;
}

static bool slice_idx(jctx *c, int line, const jnode *e, int64_t len, int64_t step, bool is_start, int64_t *out) {
    if (!e) {
        *out = step > 0 ? (is_start ? 0 : len) : (is_start ? len - 1 : -1);
        return true;
    }
    jv v;
    if (!jinja_eval(c, e, &v)) return false;
    if (v.t == JV_NONE) { *out = step > 0 ? (is_start ? 0 : len) : (is_start ? len - 1 : -1); return true; }
    if (v.t != JV_INT && v.t != JV_BOOL) { jv_decref(v); return jerr(c, line, "slice indices must be integers or None"); }
    int64_t i = v.t == JV_BOOL ? v.u.b : v.u.i;
    if (i < 0) {
        i += len;
        if (i < 0) i = step > 0 ? 0 : -1;
    } else if (i >= len) i = step > 0 ? len : len - 1;
    *out = i;
    return true;
}

static bool eval_slice(jctx *c, const jnode *n, jv *out) {
    jv obj;
    if (!jinja_eval(c, n->a, &obj)) return false;
    if (obj.t == JV_UNDEF) { bool r = undefined_error(c, n->line, obj); return r; }
    int64_t step = 1;
    if (n->args.n) {
        jv s;
        if (!jinja_eval(c, n->args.v[0], &s)) { jv_decref(obj); return false; }
        if (s.t == JV_INT) step = s.u.i;
        else if (s.t != JV_NONE) { jv_decref(s); jv_decref(obj); return jerr(c, n->line, "slice indices must be integers or None"); }
        if (step == 0) { jv_decref(obj); return jerr(c, n->line, "slice step cannot be zero"); }
    }
    bool is_str = obj.t == JV_STR;
    if (!is_str && obj.t != JV_LIST) { jv_decref(obj); return jerr(c, n->line, "'%s' object is not subscriptable", jv_type_name(obj)); }
    /* strings: by code point */
    uint32_t *cps = NULL;
    size_t *offs = NULL;
    int64_t len;
    if (!jwork(c, n->line, is_str ? obj.u.s->len : obj.u.l->n * sizeof(jv))) { jv_decref(obj); return false; }
    if (is_str) {
        size_t sl = obj.u.s->len;
        cps = malloc((sl + 1) * sizeof *cps);
        offs = malloc((sl + 1) * sizeof *offs);
        if (!cps || !offs) { free(cps); free(offs); jv_decref(obj); return joom(c, n->line); }
        size_t k = 0;
        for (size_t i = 0; i < sl;) { offs[k] = i; i += jv_utf8_decode(obj.u.s->s + i, sl - i, &cps[k]); k++; }
        offs[k] = sl;
        len = (int64_t)k;
    } else len = (int64_t)obj.u.l->n;
    if (step > len + 1) step = len + 1;
    if (step < -(len + 1)) step = -(len + 1);
    int64_t a, b;
    if (!slice_idx(c, n->line, n->b, len, step, true, &a) || !slice_idx(c, n->line, n->c, len, step, false, &b)) {
        free(cps); free(offs); jv_decref(obj);
        return false;
    }
    bool ok = true;
    if (is_str) {
        sb s;
        jsb_init(c, &s);
        for (int64_t i = a; step > 0 ? i < b : i > b; i += step) sb_put(&s, obj.u.s->s + offs[i], offs[i + 1] - offs[i]);
        ok = jsb_take(c, n->line, &s, out);
    } else {
        jv l = jv_list_new(0);
        if (jv_is_oom(l)) ok = joom(c, n->line);
        else {
            l.u.l->tuple = obj.u.l->tuple;
            for (int64_t i = a; ok && (step > 0 ? i < b : i > b); i += step)
                if (!jv_list_push(l, jv_incref(obj.u.l->v[i]))) ok = joom(c, n->line);
            if (ok) *out = l; else jv_decref(l);
        }
    }
    free(cps);
    free(offs);
    jv_decref(obj);
    return ok;
}

static bool eval_call(jctx *c, const jnode *n, jv *out) {
    jv fn;
    const jnode *callee = n->a;
    jv self = jv_undef(NULL);
    bool method = false;
    if (callee->kind == JN_ATTR) {
        if (!jinja_eval(c, callee->a, &self)) return false;
        if (self.t == JV_UNDEF) return undefined_error(c, n->line, self);
        if (jinja_is_method(self, callee->name)) method = true;
        else {
            bool ok = jinja_getattr(c, n->line, self, callee->name, &fn);
            jv_decref(self);
            if (!ok) return false;
        }
    } else if (!jinja_eval(c, callee, &fn)) return false;
    jv *args, *kwv;
    if (!eval_args(c, n, &args, &kwv)) {
        if (method) jv_decref(self); else jv_decref(fn);
        return false;
    }
    bool ok;
    if (method) {
        ok = jinja_call_method(c, n->line, self, callee->name, args, n->args.n, n->names, kwv, n->args2.n, out);
        jv_decref(self);
    } else {
        if (fn.t == JV_UNDEF) ok = fn.u.hint ? jerr(c, n->line, "'%s' is undefined", fn.u.hint) : jerr(c, n->line, "'Undefined' object is not callable");
        else ok = jinja_call(c, n->line, fn, args, n->args.n, n->names, kwv, n->args2.n, out);
        jv_decref(fn);
    }
    free_args(n, args, kwv);
    return ok;
}

/* Expressions Jinja's optimizer folds to a constant (literals and arithmetic on them). */
static bool is_const_expr(const jnode *n) {
    switch (n->kind) {
    case JN_LIT: return true;
    case JN_NEG: case JN_POS: case JN_NOT: return is_const_expr(n->a);
    case JN_BIN: case JN_CONCAT: case JN_AND: case JN_OR: return is_const_expr(n->a) && is_const_expr(n->b);
    default: return false;
    }
}

/* -x, +x: integers stay exact */
static bool eval_unary(jctx *c, const jnode *n, jv *out) {
    jv v;
    if (!jinja_eval(c, n->a, &v)) return false;
    bool neg = n->kind == JN_NEG;
    if (v.t == JV_INT || v.t == JV_BIG) {
        *out = neg ? jv_int_neg(v, false) : jv_incref(v);
        jv_decref(v);
        return !jv_is_oom(*out) || joom(c, n->line);
    }
    if (v.t == JV_BOOL) { *out = jv_int(neg ? -(int64_t)v.u.b : v.u.b); return true; }
    if (v.t == JV_FLOAT) { *out = jv_float(neg ? -v.u.f : v.u.f); return true; }
    if (v.t == JV_UNDEF) return undefined_error(c, n->line, v);
    jerr(c, n->line, "bad operand type for unary %c: '%s'", neg ? '-' : '+', jv_type_name(v));
    jv_decref(v);
    return false;
}

static bool eval_bin(jctx *c, const jnode *n, jv *out) {
    jv l, r;
    if (!jinja_eval(c, n->a, &l)) return false;
    if (!jinja_eval(c, n->b, &r)) { jv_decref(l); return false; }
    if (n->op == OP_POW && is_const_expr(n->a) && !is_const_expr(n->b) && jv_is_number(l) && jv_as_double(l) < 0) {
        /* Jinja folds `-1` to a constant and emits `(-1 ** x)`, which Python reads as -(1 ** x) */
        jv pos = l.t == JV_FLOAT ? jv_float(-l.u.f) : jv_int_neg(l, false), mag;
        jv_decref(l);
        if (jv_is_oom(pos)) { jv_decref(r); return joom(c, n->line); }
        bool ok = jinja_binop(c, n->line, OP_POW, pos, r, &mag);
        jv_decref(pos);
        jv_decref(r);
        if (!ok) return false;
        ok = jinja_binop(c, n->line, OP_SUB, jv_int(0), mag, out);
        jv_decref(mag);
        return ok;
    }
    bool ok = jinja_binop(c, n->line, n->op, l, r, out);
    jv_decref(l);
    jv_decref(r);
    return ok;
}

/* a < b <= c …, `in`, `not in`: chained like Python */
static bool eval_compare(jctx *c, const jnode *n, jv *out) {
    jv l;
    if (!jinja_eval(c, n->a, &l)) return false;
    bool res = true;
    for (int i = 0; i < n->args.n && res; i++) {
        jv r;
        if (!jinja_eval(c, n->args.v[i], &r)) { jv_decref(l); return false; }
        int op = n->ops[i];
        bool ok;
        if (op == JN_OP_IN || op == JN_OP_NOTIN) {
            ok = jinja_contains(c, n->line, r, l, &res);
            if (op == JN_OP_NOTIN) res = !res;
        } else ok = jinja_compare(c, n->line, op, l, r, &res);
        jv_decref(l);
        l = r;
        if (!ok) { jv_decref(l); return false; }
    }
    jv_decref(l);
    *out = jv_bool(res);
    return true;
}

static bool eval_dict(jctx *c, const jnode *n, jv *out) {
    jv d = jv_dict_new((size_t)n->args.n);
    if (jv_is_oom(d)) return joom(c, n->line);
    for (int i = 0; i < n->args.n; i++) {
        jv k, v;
        if (!jinja_eval(c, n->args.v[i], &k)) { jv_decref(d); return false; }
        if (k.t == JV_LIST && !k.u.l->tuple) { jv_decref(k); jv_decref(d); return jerr(c, n->line, "unhashable type: 'list'"); }
        if (k.t == JV_DICT) { jv_decref(k); jv_decref(d); return jerr(c, n->line, "unhashable type: 'dict'"); }
        if (!jinja_eval(c, n->args2.v[i], &v)) { jv_decref(k); jv_decref(d); return false; }
        if (!jv_dict_set(d, k, v)) { jv_decref(d); return joom(c, n->line); }
    }
    *out = d;
    return true;
}

bool jinja_eval(jctx *c, const jnode *n, jv *out) {
    *out = jv_undef(NULL);
    if (c->failed) return false;
    switch (n->kind) {
    case JN_LIT: *out = jv_incref(n->lit); return true;
    case JN_NAME: *out = lookup(c, n->name); return true;
    case JN_ATTR: {
        jv o;
        if (!jinja_eval(c, n->a, &o)) return false;
        if (o.t == JV_UNDEF) return undefined_error(c, n->line, o);
        bool ok = jinja_getattr(c, n->line, o, n->name, out);
        jv_decref(o);
        return ok;
    }
    case JN_ITEM: {
        jv o, k;
        if (!jinja_eval(c, n->a, &o)) return false;
        if (o.t == JV_UNDEF) return undefined_error(c, n->line, o);
        if (!jinja_eval(c, n->b, &k)) { jv_decref(o); return false; }
        bool ok = jinja_getitem(c, n->line, o, k, out);
        jv_decref(o);
        jv_decref(k);
        return ok;
    }
    case JN_SLICE: return eval_slice(c, n, out);
    case JN_CALL: return eval_call(c, n, out);
    case JN_FILTER: return eval_filter(c, n, NULL, out);
    case JN_TEST: {
        jv in;
        if (!jinja_eval(c, n->a, &in)) return false;
        jv *args, *kwv;
        if (!eval_args(c, n, &args, &kwv)) { jv_decref(in); return false; }
        bool res = false;
        bool ok = jinja_env_test(c, n->line, n->name, in, args, n->args.n, &res);
        free_args(n, args, kwv);
        jv_decref(in);
        if (ok) *out = jv_bool(n->op ? !res : res);
        return ok;
    }
    case JN_NEG: case JN_POS: return eval_unary(c, n, out);
    case JN_NOT: {
        jv v;
        if (!jinja_eval(c, n->a, &v)) return false;
        *out = jv_bool(!jv_truthy(v));
        jv_decref(v);
        return true;
    }
    case JN_AND: case JN_OR: {
        jv l;
        if (!jinja_eval(c, n->a, &l)) return false;
        bool t = jv_truthy(l);
        if ((n->kind == JN_AND) != t) { *out = l; return true; }
        jv_decref(l);
        return jinja_eval(c, n->b, out);
    }
    case JN_BIN: return eval_bin(c, n, out);
    case JN_CONCAT: {
        jv l, r;
        if (!jinja_eval(c, n->a, &l)) return false;
        if (!jinja_eval(c, n->b, &r)) { jv_decref(l); return false; }
        sb s;
        jsb_init(c, &s);
        jv_print(&s, l);
        jv_print(&s, r);
        jv_decref(l);
        jv_decref(r);
        return jsb_take(c, n->line, &s, out);
    }
    case JN_COMPARE: return eval_compare(c, n, out);
    case JN_COND: {
        jv t;
        if (!jinja_eval(c, n->a, &t)) return false;
        bool b = jv_truthy(t);
        jv_decref(t);
        if (b) return jinja_eval(c, n->b, out);
        if (n->c) return jinja_eval(c, n->c, out);
        *out = jv_undef(NULL);
        return true;
    }
    case JN_LIST: case JN_TUPLE: {
        jv l = jv_list_new((size_t)n->args.n);
        if (jv_is_oom(l)) return joom(c, n->line);
        l.u.l->tuple = n->kind == JN_TUPLE;
        for (int i = 0; i < n->args.n; i++) {
            jv v;
            if (!jinja_eval(c, n->args.v[i], &v)) { jv_decref(l); return false; }
            if (!jv_list_push(l, v)) { jv_decref(l); return joom(c, n->line); }
        }
        *out = l;
        return true;
    }
    case JN_DICT: return eval_dict(c, n, out);
    default: return jerr(c, n->line, "statement used as expression");
    }
}

/* ---------------------------------------------------------------- macros */
static bool capture(jctx *c, const jn_vec *body, jv *out, int line) {
    sb buf;
    jsb_init(c, &buf);
    sb *saved = c->out;
    c->out = &buf;
    bool ok = jinja_exec_body(c, body);
    c->out = saved;
    if (!ok) { sb_free(&buf); return false; }
    return jsb_take(c, line, &buf, out);
}

static bool call_macro(jctx *c, int line, jv fnv, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    const jnode *m = fnv.u.fn->macro;
    if (c->depth >= MAX_MACRO_DEPTH) return jerr(c, line, "maximum macro recursion depth exceeded");
    if (!jstep(c, line)) return false;
    if (!push_frame(c, true)) return joom(c, line);
    c->depth++;
    bool ok = true;
    int np = m->kind == JN_MACRO ? m->nnames : 0;
    jv varargs = jv_list_new(0), kwargs = jv_dict_new(0);
    if (jv_is_oom(varargs) || jv_is_oom(kwargs)) ok = joom(c, line);
    for (int i = 0; ok && i < nargs; i++) {
        if (i < np) ok = assign(c, line, m->names[i], jv_incref(args[i]));
        else if (!jv_list_push(varargs, jv_incref(args[i]))) ok = joom(c, line);
    }
    for (int k = 0; ok && k < nkw; k++) {
        int idx = -1;
        for (int i = 0; i < np; i++) if (!strcmp(m->names[i], kwn[k])) idx = i;
        if (idx >= 0 && idx < nargs) ok = jerr(c, line, "macro '%s' got multiple values for argument '%s'", m->name ? m->name : "caller", kwn[k]);
        else if (idx >= 0 || !strcmp(kwn[k], "caller")) ok = assign(c, line, kwn[k], jv_incref(kwv[k]));
        else if (!jv_dict_set_cstr(kwargs, kwn[k], jv_incref(kwv[k]))) ok = joom(c, line);
    }
    for (int i = nargs; ok && i < np; i++) {
        if (jv_dict_get_cstr(c->frames[c->nframes - 1].vars, m->names[i], strlen(m->names[i]))) continue;
        jv d = jv_undef(m->names[i]);
        if (m->args2.v[i] && !jinja_eval(c, m->args2.v[i], &d)) { ok = false; break; }
        ok = assign(c, line, m->names[i], d);
    }
    if (ok) varargs.u.l->tuple = true;
    if (ok) ok = assign(c, line, "varargs", varargs);
    else jv_decref(varargs);
    varargs = jv_undef(NULL);
    if (ok) ok = assign(c, line, "kwargs", kwargs);
    else jv_decref(kwargs);
    if (ok && fnv.u.fn->caller.t == JV_FUNC) ok = assign(c, line, "caller", jv_incref(fnv.u.fn->caller));
    int saved_flow = c->flow;
    if (ok) ok = capture(c, &m->args, out, line);
    c->flow = saved_flow;
    c->depth--;
    pop_frame(c);
    return ok;
}

static bool call_loop(jctx *c, int line, jv fn, const jv *args, int nargs, jv *out);

bool jinja_call(jctx *c, int line, jv fn, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    if (fn.t != JV_FUNC) return jerr(c, line, "'%s' object is not callable", jv_type_name(fn));
    jv_func *f = fn.u.fn;
    switch (f->kind) {
    case JF_GLOBAL: return jinja_call_global(c, line, f->name, args, nargs, kwn, kwv, nkw, out);
    case JF_METHOD: return jinja_call_method(c, line, f->self, f->name, args, nargs, kwn, kwv, nkw, out);
    case JF_MACRO: return call_macro(c, line, fn, args, nargs, kwn, kwv, nkw, out);
    case JF_CYCLE:
        if (nargs == 0) return jerr(c, line, "no items for cycling given");
        *out = jv_incref(args[f->self.u.i % nargs]);
        return true;
    case JF_LOOP: return call_loop(c, line, fn, args, nargs, out);
    case JF_CHANGED: case JF_JOINER: case JF_CYCLER:
        if (nkw) return jerr(c, line, "%s() takes no keyword arguments", f->name);
        return jinja_call_object(c, line, fn, NULL, args, nargs, out);
    }
    return jerr(c, line, "not callable");
}

/* ---------------------------------------------------------------- statements */
static bool exec_node(jctx *c, const jnode *n);

/* The `loop` variable: one dict per for-loop whose values are replaced in place each iteration;
 * when the body kept a reference ({% set l = loop %}) the next iteration gets a fresh dict. */
enum { L_INDEX0, L_INDEX, L_REVINDEX, L_REVINDEX0, L_FIRST, L_LAST, L_LENGTH, L_DEPTH, L_DEPTH0,
       L_PREVITEM, L_NEXTITEM, L_CYCLE, L_CHANGED, L_NKEYS };
static const char *const LOOP_KEYS[L_NKEYS] = {"index0", "index", "revindex", "revindex0", "first", "last",
    "length", "depth", "depth0", "previtem", "nextitem", "cycle", "changed"};

static void loop_put(jv_dict *d, int k, jv v /* consumed */) {
    jv_decref(d->v[k]);
    d->v[k] = v;
}

/* `changed` keeps its last arguments for the whole loop, so it survives a fresh dict. */
static bool loop_set(jv *loop, jv items, size_t i, int depth) {
    if (loop->t != JV_DICT || loop->u.d->rc != 1) {
        jv changed = loop->t == JV_DICT ? jv_incref(loop->u.d->v[L_CHANGED]) : jv_undef(NULL);
        jv_decref(*loop);
        if (changed.t != JV_FUNC) {
            jv last = jv_list_new(1);
            changed = jv_is_oom(last) ? last : jv_func_new(JF_CHANGED, "changed", last);
        }
        *loop = jv_dict_new(L_NKEYS);
        if (jv_is_oom(*loop) || jv_is_oom(changed)) { jv_decref(changed); return false; }
        for (int k = 0; k < L_NKEYS; k++)
            if (!jv_dict_set_cstr(*loop, LOOP_KEYS[k], k == L_CHANGED ? changed : jv_none())) return false;
    }
    jv_dict *d = loop->u.d;
    size_t len = items.u.l->n;
    loop_put(d, L_INDEX0, jv_int((int64_t)i));
    loop_put(d, L_INDEX, jv_int((int64_t)i + 1));
    loop_put(d, L_REVINDEX, jv_int((int64_t)(len - i)));
    loop_put(d, L_REVINDEX0, jv_int((int64_t)(len - i - 1)));
    loop_put(d, L_FIRST, jv_bool(i == 0));
    loop_put(d, L_LAST, jv_bool(i + 1 == len));
    loop_put(d, L_LENGTH, jv_int((int64_t)len));
    loop_put(d, L_DEPTH, jv_int(depth));
    loop_put(d, L_DEPTH0, jv_int(depth - 1));
    loop_put(d, L_PREVITEM, i > 0 ? jv_incref(items.u.l->v[i - 1]) : jv_undef("previtem"));
    loop_put(d, L_NEXTITEM, i + 1 < len ? jv_incref(items.u.l->v[i + 1]) : jv_undef("nextitem"));
    jv *cyc = &d->v[L_CYCLE];
    if (cyc->t == JV_FUNC && cyc->u.fn->rc == 1) cyc->u.fn->self = jv_int((int64_t)i);
    else {
        jv f = jv_func_new(JF_CYCLE, "cycle", jv_int((int64_t)i));
        if (jv_is_oom(f)) return false;
        loop_put(d, L_CYCLE, f);
    }
    int dp = 0;
    if (jv_depth(d->v[L_PREVITEM]) > dp) dp = jv_depth(d->v[L_PREVITEM]);
    if (jv_depth(d->v[L_NEXTITEM]) > dp) dp = jv_depth(d->v[L_NEXTITEM]);
    d->depth = dp + 1;
    return true;
}

/* `for x in xs if cond`: the items for which cond holds (evaluated with the target bound, without `loop`) */
static bool filter_items(jctx *c, const jnode *n, jv *items) {
    jv kept = jv_list_new(items->u.l->n);
    if (jv_is_oom(kept)) return joom(c, n->line);
    bool ok = true;
    for (size_t i = 0; ok && i < items->u.l->n; i++) {
        if (!jstep(c, n->line)) { ok = false; break; }
        if (!push_frame(c, false)) { ok = joom(c, n->line); break; }
        jv cond;
        ok = assign_targets(c, n->line, n->names, n->nnames, items->u.l->v[i]) && jinja_eval(c, n->b, &cond);
        pop_frame(c);
        if (!ok) break;
        if (jv_truthy(cond) && !jv_list_push(kept, jv_incref(items->u.l->v[i]))) ok = joom(c, n->line);
        jv_decref(cond);
    }
    jv_decref(*items);
    *items = kept;
    return ok;
}

/* The loop variable of one iteration: the dict, or for a recursive loop a callable wrapping it. */
static jv loop_value(const jnode *n, jv loop) {
    if (!n->op) return jv_incref(loop);
    jv f = jv_func_new(JF_LOOP, "loop", jv_incref(loop));
    if (!jv_is_oom(f)) f.u.fn->macro = n;
    return f;
}

/* Runs the for node `n` over `it` (borrowed) at nesting `depth` (1 outside recursive calls). */
static bool run_loop(jctx *c, const jnode *n, jv it, int depth) {
    jv items;
    if (!jinja_to_list(c, n->line, it, &items)) return false;
    bool ok = true;
    if (n->b && !filter_items(c, n, &items)) { jv_decref(items); return false; }
    size_t len = items.u.l->n;
    jv loop = jv_undef(NULL);
    /* one frame for the whole loop: each iteration keeps its first keys (loop when the body uses
     * it, and the targets; values released, then replaced) and drops what the body set */
    if (len && !push_frame(c, false)) { jv_decref(items); return joom(c, n->line); }
    for (size_t i = 0; ok && i < len; i++) {
        if (!jstep(c, n->line)) { ok = false; break; }
        frame_trim(&c->frames[c->nframes - 1], (n->uses_loop ? 1 : 0) + (size_t)n->nnames);
        if (n->uses_loop && !loop_set(&loop, items, i, depth)) { ok = joom(c, n->line); break; }
        ok = (!n->uses_loop || assign(c, n->line, "loop", loop_value(n, loop))) &&
             assign_targets(c, n->line, n->names, n->nnames, items.u.l->v[i]) && jinja_exec_body(c, &n->args);
        if (c->flow == 1) { c->flow = 0; break; }
        c->flow = 0;
    }
    if (len) pop_frame(c);
    jv_decref(loop);
    jv_decref(items);
    if (ok && len == 0 && n->args2.n) ok = jinja_exec_body(c, &n->args2);
    return ok;
}

static bool exec_for(jctx *c, const jnode *n) {
    jv it;
    if (!jinja_eval(c, n->a, &it)) return false;
    bool ok = run_loop(c, n, it, 1);
    jv_decref(it);
    return ok;
}

/* loop(xs) in a recursive for: the loop body over xs one level deeper, rendered to a string */
static bool call_loop(jctx *c, int line, jv fn, const jv *args, int nargs, jv *out) {
    if (nargs != 1) return jerr(c, line, "loop() takes exactly one argument (%d given)", nargs);
    if (c->depth >= MAX_MACRO_DEPTH) return jerr(c, line, "maximum recursion depth exceeded in a recursive loop");
    const jv *d = jv_dict_get_cstr(fn.u.fn->self, "depth", 5);
    int depth = d && d->t == JV_INT ? (int)d->u.i : 1;
    sb buf;
    jsb_init(c, &buf);
    sb *saved = c->out;
    c->out = &buf;
    c->depth++;
    bool ok = run_loop(c, fn.u.fn->macro, args[0], depth + 1);
    c->depth--;
    c->out = saved;
    if (!ok) { sb_free(&buf); return false; }
    return jsb_take(c, line, &buf, out);
}

static bool exec_node(jctx *c, const jnode *n) {
    if (c->failed) return false;
    switch (n->kind) {
    case JN_TEXT:
        sb_put(c->out, n->lit.u.s->s, n->lit.u.s->len);
        break;
    case JN_OUTPUT: {
        jv v;
        if (!jinja_eval(c, n->a, &v)) return false;
        jv_print(c->out, v);
        jv_decref(v);
        break;
    }
    case JN_IF: {
        const jnode *x = n;
        while (x) {
            if (x->kind == JN_BODY) return jinja_exec_body(c, &x->args);
            jv t;
            if (!jinja_eval(c, x->a, &t)) return false;
            bool b = jv_truthy(t);
            jv_decref(t);
            if (b) return jinja_exec_body(c, &x->args);
            x = x->b;
        }
        break;
    }
    case JN_FOR: return exec_for(c, n);
    case JN_SET: {
        jv v;
        if (!jinja_eval(c, n->a, &v)) return false;
        bool ok;
        if (n->c) {
            jv ns = lookup(c, n->c->a->name);
            if (ns.t != JV_NS) ok = jerr(c, n->line, "cannot assign attribute on non-namespace object");
            else if (jv_depth(v) >= JV_MAX_DEPTH) ok = jerr(c, n->line, "value nesting too deep");
            else ok = jv_dict_set_cstr(ns, n->c->name, jv_incref(v)) || joom(c, n->line);
            jv_decref(ns);
        } else ok = assign_targets(c, n->line, n->names, n->nnames, v);
        jv_decref(v);
        return ok;
    }
    case JN_SETBLOCK: {
        jv v;
        if (!capture(c, &n->args, &v, n->line)) return false;
        if (n->b) {
            jv f;
            bool ok = eval_filter(c, n->b, &v, &f);
            jv_decref(v);
            if (!ok) return false;
            v = f;
        }
        if (n->c) {
            jv ns = lookup(c, n->c->a->name);
            bool ok = ns.t == JV_NS ? (jv_dict_set_cstr(ns, n->c->name, v) || joom(c, n->line))
                                    : (jv_decref(v), jerr(c, n->line, "cannot assign attribute on non-namespace object"));
            jv_decref(ns);
            return ok;
        }
        return assign(c, n->line, n->names[0], v);
    }
    case JN_MACRO: {
        jv f = jv_func_new(JF_MACRO, n->name, jv_undef(NULL));
        if (jv_is_oom(f)) return joom(c, n->line);
        f.u.fn->macro = n;
        return assign(c, n->line, n->name, f);
    }
    case JN_CALLBLOCK: {
        const jnode *call = n->a;
        jv fn;
        if (!jinja_eval(c, call->a, &fn)) return false;
        if (fn.t != JV_FUNC || fn.u.fn->kind != JF_MACRO) { jv_decref(fn); return jerr(c, n->line, "call block needs a macro"); }
        jv caller = jv_func_new(JF_MACRO, "caller", jv_undef(NULL));
        if (jv_is_oom(caller)) { jv_decref(fn); return joom(c, n->line); }
        caller.u.fn->macro = n;
        jv bound = jv_func_new(JF_MACRO, fn.u.fn->name, jv_undef(NULL));
        if (jv_is_oom(bound)) { jv_decref(fn); jv_decref(caller); return joom(c, n->line); }
        bound.u.fn->macro = fn.u.fn->macro;
        bound.u.fn->caller = caller;
        jv_decref(fn);
        jv *args, *kwv;
        if (!eval_args(c, call, &args, &kwv)) { jv_decref(bound); return false; }
        jv r;
        bool ok = call_macro(c, n->line, bound, args, call->args.n, call->names, kwv, call->args2.n, &r);
        free_args(call, args, kwv);
        jv_decref(bound);
        if (!ok) return false;
        jv_print(c->out, r);
        jv_decref(r);
        break;
    }
    case JN_FILTERBLOCK: {
        jv v, f;
        if (!capture(c, &n->args, &v, n->line)) return false;
        bool ok = eval_filter(c, n->a, &v, &f);
        jv_decref(v);
        if (!ok) return false;
        jv_print(c->out, f);
        jv_decref(f);
        break;
    }
    case JN_WITH: {
        /* values are evaluated in the outer scope, then bound in a new one */
        jv *vals = calloc((size_t)n->args2.n + 1, sizeof *vals);
        if (!vals) return joom(c, n->line);
        bool ok = true;
        int got = 0;
        for (; ok && got < n->args2.n; got++) ok = jinja_eval(c, n->args2.v[got], &vals[got]);
        if (ok && !push_frame(c, false)) ok = joom(c, n->line);
        else if (ok) {
            for (int i = 0; i < n->args2.n; i++) { if (ok) ok = assign(c, n->line, n->names[i], vals[i]); else jv_decref(vals[i]); vals[i] = jv_undef(NULL); }
            if (ok) ok = jinja_exec_body(c, &n->args);
            pop_frame(c);
        }
        for (int i = 0; i < got; i++) jv_decref(vals[i]);
        free(vals);
        if (!ok) return false;
        break;
    }
    case JN_BREAK: c->flow = 1; break;
    case JN_CONTINUE: c->flow = 2; break;
    case JN_BODY: return jinja_exec_body(c, &n->args);
    default: {
        jv v;
        if (!jinja_eval(c, n, &v)) return false;
        jv_decref(v);
    }
    }
    if (sb_failed(c->out)) return jsb_check(c, n->line, c->out);
    return true;
}

bool jinja_exec_body(jctx *c, const jn_vec *body) {
    for (int i = 0; i < body->n; i++) {
        if (!exec_node(c, body->v[i])) return false;
        if (c->flow) return true;
    }
    return true;
}
