/* jinja_ctx.c — the per-render state's bottom layer: the first error of a render, and the work
 * budget that bounds what one render may spend (bytes built, copied or compared; loop iterations
 * and calls), so that no template can hang the process. */
#include "jinja_internal.h"

#include <stdarg.h>
#include <stdio.h>

bool jerr(jctx *c, int line, const char *fmt, ...) {
    if (!c->failed) {
        c->failed = true;
        c->err_line = line;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof c->err, fmt, ap);
        va_end(ap);
    }
    return false;
}

void jsb_init(jctx *c, sb *b) {
    sb_init(b, c->max_out);
    b->bud = &c->bud;
}

static bool over(jctx *c, int line, jb_limit which) {
    if (!c->bud.hit) c->bud.hit = which;
    return jerr(c, line, "work limit reached");
}

bool jwork(jctx *c, int line, uint64_t bytes) {
    c->bud.bytes += bytes;
    if (c->bud.hit) return over(c, line, c->bud.hit);
    return c->bud.bytes <= c->bud.max_bytes || over(c, line, JB_BYTES);
}

bool jstep(jctx *c, int line) {
    if (c->bud.hit) return over(c, line, c->bud.hit);
    return ++c->bud.steps <= c->bud.max_steps || over(c, line, JB_STEPS);
}

bool joom(jctx *c, int line) { return jerr(c, line, "out of memory"); }

bool jsb_check(jctx *c, int line, const sb *b) {
    if (!sb_failed(b)) return true;
    if (b->oom) return joom(c, line);
    if (!c->bud.hit) c->bud.hit = JB_OUTPUT;
    return jerr(c, line, "string too large");
}

bool jsb_take(jctx *c, int line, sb *b, jv *out) {
    if (!jsb_check(c, line, b)) { sb_free(b); return false; }
    *out = sb_to_jv(b);
    return !jv_is_oom(*out) || joom(c, line);
}

bool jstr_new(jctx *c, int line, const char *s, size_t n, jv *out) {
    *out = jv_str_new(s, n);
    return !jv_is_oom(*out) || joom(c, line);
}

bool jbind(jctx *c, int line, const char *kind, const char *fname, const jparam *ps, int np, const jv *args,
           int nargs, char **kwn, const jv *kwv, int nkw, jv *vals) {
    if (nargs > np) return jerr(c, line, "%s%s() takes at most %d arguments (%d given)", kind, fname, np, nargs);
    for (int i = 0; i < np; i++) vals[i] = i < nargs ? args[i] : ps[i].def;
    for (int k = 0; k < nkw; k++) {
        int idx = -1;
        for (int i = 0; i < np; i++) if (!strcmp(ps[i].name, kwn[k])) idx = i;
        if (idx < 0) return jerr(c, line, "%s%s() got an unexpected keyword argument '%s'", kind, fname, kwn[k]);
        if (idx < nargs) return jerr(c, line, "%s%s() got multiple values for argument '%s'", kind, fname, kwn[k]);
        vals[idx] = kwv[k];
    }
    return true;
}

bool jneed_str(jctx *c, int line, jv v, const char *what) {
    if (v.t == JV_STR) return true;
    return jerr(c, line, "%s must be str, not %s", what, jv_type_name(v));
}

bool jneed_int(jctx *c, int line, jv v, int64_t *out, const char *what) {
    if (jv_int_like(v)) { *out = jv_as_int(v); return true; }
    return jerr(c, line, "'%s' object cannot be interpreted as an integer (%s)", jv_type_name(v), what);
}
