/* jinja_check.c — the compile-time check Jinja does after parsing: every filter and test named
 * outside a soft frame must exist. Sits above the parser and the filter/test tables. */
#include "jinja_internal.h"

#include "util/error.h"

static bool unknown(const jnode *n, const char *what) {
    lmx_error(LMX_ERR_TEMPLATE, "line %d: No %s named '%s'.", n->line, what, n->name);
    return false;
}

/* Jinja compiles unknown filter/test names to errors, except inside {% if %} (test and bodies)
 * and inline `a if b else c`, where they fail only when executed ("soft" frames). Loop, macro,
 * block-set, filter and with bodies open new, non-soft frames. */
static bool validate(const jnode *n, bool soft) {
    if (!n) return true;
    switch (n->kind) {
    case JN_FILTER:
        if (!soft && !jinja_has_filter(n->name)) return unknown(n, "filter");
        break;
    case JN_TEST:
        if (!soft && !jinja_has_test(n->name)) return unknown(n, "test");
        break;
    case JN_IF: case JN_COND: soft = true; break;
    case JN_FOR: {
        if (!validate(n->a, soft)) return false;
        for (int i = 0; i < n->args.n; i++) if (!validate(n->args.v[i], false)) return false;
        for (int i = 0; i < n->args2.n; i++) if (!validate(n->args2.v[i], false)) return false;
        return validate(n->b, false);
    }
    case JN_MACRO: case JN_SETBLOCK: case JN_FILTERBLOCK: case JN_WITH: case JN_CALLBLOCK:
        if (!validate(n->a, soft) || !validate(n->b, soft) || !validate(n->c, soft)) return false;
        for (int i = 0; i < n->args2.n; i++) if (!validate(n->args2.v[i], soft)) return false;
        for (int i = 0; i < n->args.n; i++) if (!validate(n->args.v[i], false)) return false;
        return true;
    default: break;
    }
    if (!validate(n->a, soft) || !validate(n->b, soft) || !validate(n->c, soft)) return false;
    for (int i = 0; i < n->args.n; i++) if (!validate(n->args.v[i], soft)) return false;
    for (int i = 0; i < n->args2.n; i++) if (!validate(n->args2.v[i], soft)) return false;
    return true;
}

lmx_status jinja_check(const jnode *root) { return validate(root, false) ? LMX_OK : LMX_ERR_TEMPLATE; }
