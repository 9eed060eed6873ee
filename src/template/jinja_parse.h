/* jinja_parse.h — what the expression parser (jinja_parser.c) and the statement parser
 * (jinja_parse_stmt.c) share: the parser state and its helpers. Internal to those two files. */
#ifndef LMX_JINJA_PARSE_H
#define LMX_JINJA_PARSE_H

#include "jinja_internal.h"

typedef struct {
    const tk_vec *t;
    size_t i;
    int depth;
    int loops; /* enclosing for-loops (break/continue are only valid inside one) */
    lmx_status st;
} ps;

static inline const tk *cur(ps *p) { return &p->t->v[p->i]; }
static inline const tk *peek(ps *p, size_t k) {
    size_t j = p->i + k;
    return &p->t->v[j < p->t->n ? j : p->t->n - 1];
}
static inline void adv(ps *p) { if (p->i + 1 < p->t->n) p->i++; }

static inline bool is_op(ps *p, int op) { return cur(p)->kind == TK_OP && cur(p)->op == op; }
static inline bool is_name(ps *p, const char *n) { return cur(p)->kind == TK_NAME && !strcmp(cur(p)->text, n); }


/* Sets the first syntax error ("line N: fmt" with arg) and returns NULL. */
jnode *jp_fail(ps *p, int line, const char *fmt, const char *arg);
bool jp_expect_op(ps *p, int op, const char *what);
jnode *jp_node(ps *p, jn_kind k, int line);
bool jp_vec_push(ps *p, jn_vec *v, jnode *x);        /* frees x on failure */
bool jp_names_push(ps *p, jnode *n, const char *s);
jnode *jp_lit_node(ps *p, int line, jv v);           /* v becomes immortal */
jnode *jp_parse_expr(ps *p);                          /* a conditional expression */
jnode *jp_parse_or(ps *p);                            /* without the inline if */
jnode *jp_parse_tuple(ps *p, bool simplified, bool allow_empty);
jnode *jp_parse_filter(ps *p, jnode *n, bool start_inline);
bool jp_enter(ps *p); /* one level deeper (false past MAX_DEPTH); the caller decrements p->depth */

#endif
