/* jinja_parser.c — recursive-descent parser from tokens to an immutable AST, following
 * Jinja2's grammar and operator precedence (or < and < not < compare < +,- < ~ < *,/,//,% < **
 * < unary < postfix/filters/tests). Syntax errors → LMX_ERR_TEMPLATE "line N: message". */
#include "jinja_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/error.h"

#define MAX_DEPTH 400

typedef struct {
    const tk_vec *t;
    size_t i;
    int depth;
    int loops; /* enclosing for-loops (break/continue are only valid inside one) */
    lmx_status st;
} ps;

static const tk *cur(ps *p) { return &p->t->v[p->i]; }
static const tk *peek(ps *p, size_t k) {
    size_t j = p->i + k;
    return &p->t->v[j < p->t->n ? j : p->t->n - 1];
}
static void adv(ps *p) { if (p->i + 1 < p->t->n) p->i++; }

static jnode *fail(ps *p, int line, const char *fmt, const char *arg) {
    if (p->st == LMX_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, fmt, arg ? arg : "");
        p->st = lmx_error(LMX_ERR_TEMPLATE, "line %d: %s", line, msg);
    }
    return NULL;
}

static bool is_op(ps *p, int op) { return cur(p)->kind == TK_OP && cur(p)->op == op; }
static bool is_name(ps *p, const char *n) { return cur(p)->kind == TK_NAME && !strcmp(cur(p)->text, n); }

static bool expect_op(ps *p, int op, const char *what) {
    if (is_op(p, op)) { adv(p); return true; }
    fail(p, cur(p)->line, "expected '%s'", what);
    return false;
}

static jnode *node(ps *p, jn_kind k, int line) {
    jnode *n = calloc(1, sizeof *n);
    if (!n) { if (p->st == LMX_OK) p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template AST"); return NULL; }
    n->kind = k;
    n->line = line;
    return n;
}

static bool vec_push(ps *p, jn_vec *v, jnode *x) {
    if (v->n == v->cap) {
        int nc = v->cap ? v->cap * 2 : 4;
        jnode **nv = realloc(v->v, (size_t)nc * sizeof *nv);
        if (!nv) { jinja_node_free(x); p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template AST"); return false; }
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = x;
    return true;
}

static bool names_push(ps *p, jnode *n, const char *s) {
    char **nn = realloc(n->names, (size_t)(n->nnames + 1) * sizeof *nn);
    if (!nn) { p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template AST"); return false; }
    n->names = nn;
    n->names[n->nnames] = strdup(s ? s : "");
    if (!n->names[n->nnames]) { p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template AST"); return false; }
    n->nnames++;
    return true;
}

void jinja_node_free(jnode *n) {
    if (!n) return;
    jinja_node_free(n->a);
    jinja_node_free(n->b);
    jinja_node_free(n->c);
    for (int i = 0; i < n->args.n; i++) jinja_node_free(n->args.v[i]);
    for (int i = 0; i < n->args2.n; i++) jinja_node_free(n->args2.v[i]);
    free(n->args.v);
    free(n->args2.v);
    for (int i = 0; i < n->nnames; i++) free(n->names[i]);
    free(n->names);
    free(n->ops);
    free(n->name);
    if (n->lit.t >= JV_STR) {
        /* literals are immortal: free them explicitly */
        jv v = n->lit;
        if (v.t == JV_STR) free(v.u.s);
        if (v.t == JV_BIG) free(v.u.big);
    }
    free(n);
}

static jnode *lit_node(ps *p, int line, jv v) {
    if (jv_is_oom(v)) { p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template AST"); return NULL; }
    jnode *n = node(p, JN_LIT, line);
    if (!n) { jv_decref(v); return NULL; }
    jv_make_immortal(v);
    n->lit = v;
    return n;
}

static jnode *parse_expr(ps *p);           /* conditional expression */
static jnode *parse_or(ps *p);
static jnode *parse_unary(ps *p, bool with_filter);
static jnode *parse_primary(ps *p);
static jnode *parse_postfix(ps *p, jnode *n);
static jnode *parse_filter_expr(ps *p, jnode *n);

static bool enter(ps *p) {
    if (++p->depth > MAX_DEPTH) { fail(p, cur(p)->line, "%snesting too deep", ""); return false; }
    return true;
}

/* Call arguments after '(' — fills n->args (positional) and n->names/args2 (keywords). */
static bool parse_call_args(ps *p, jnode *n) {
    if (!expect_op(p, OP_LPAREN, "(")) return false;
    bool first = true;
    while (!is_op(p, OP_RPAREN)) {
        if (!first && !expect_op(p, OP_COMMA, ",")) return false;
        if (is_op(p, OP_RPAREN)) break;
        first = false;
        if (is_op(p, OP_MUL) || is_op(p, OP_POW)) { fail(p, cur(p)->line, "%s*args/**kwargs are not supported", ""); return false; }
        if (cur(p)->kind == TK_NAME && peek(p, 1)->kind == TK_OP && peek(p, 1)->op == OP_ASSIGN) {
            if (!names_push(p, n, cur(p)->text)) return false;
            adv(p);
            adv(p);
            jnode *v = parse_expr(p);
            if (!v || !vec_push(p, &n->args2, v)) return false;
        } else {
            if (n->args2.n) { fail(p, cur(p)->line, "%spositional argument follows keyword argument", ""); return false; }
            jnode *v = parse_expr(p);
            if (!v || !vec_push(p, &n->args, v)) return false;
        }
    }
    adv(p);
    return true;
}

/* tuple-or-expression (used in {{ }}, for iterables, set values, parenthesised groups) */
static jnode *parse_tuple(ps *p, bool simplified, bool allow_empty) {
    int line = cur(p)->line;
    jnode *first = NULL, *t = NULL;
    for (;;) {
        if (first) {
            if (!is_op(p, OP_COMMA)) break;
            if (!t) {
                t = node(p, JN_TUPLE, line);
                if (!t || !vec_push(p, &t->args, first)) { jinja_node_free(t); if (!t) jinja_node_free(first); return NULL; }
            }
            adv(p);
        }
        /* end of tuple? */
        const tk *c = cur(p);
        if (c->kind == TK_VAR_END || c->kind == TK_BLOCK_END || (c->kind == TK_OP && c->op == OP_RPAREN) ||
            (c->kind == TK_NAME && !strcmp(c->text, "in") && simplified) || c->kind == TK_EOF ||
            (c->kind == TK_OP && c->op == OP_ASSIGN)) {
            if (first) break;
            if (allow_empty) return node(p, JN_TUPLE, line);
            return fail(p, c->line, "%sexpected an expression", "");
        }
        jnode *e = simplified ? parse_primary(p) : parse_expr(p);
        if (!e) { jinja_node_free(t ? t : first); return NULL; }
        if (!first) first = e;
        else if (!vec_push(p, &t->args, e)) { jinja_node_free(t); return NULL; }
    }
    return t ? t : first;
}

static jnode *parse_primary(ps *p) {
    const tk *c = cur(p);
    int line = c->line;
    if (c->kind == TK_NAME) {
        const char *s = c->text;
        jnode *n;
        if (!strcmp(s, "true") || !strcmp(s, "True")) n = lit_node(p, line, jv_bool(true));
        else if (!strcmp(s, "false") || !strcmp(s, "False")) n = lit_node(p, line, jv_bool(false));
        else if (!strcmp(s, "none") || !strcmp(s, "None")) n = lit_node(p, line, jv_none());
        else {
            n = node(p, JN_NAME, line);
            if (n && !(n->name = strdup(s))) { free(n); n = NULL; p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); }
        }
        adv(p);
        return n;
    }
    if (c->kind == TK_STRING) {
        sb b;
        sb_init(&b, 0);
        while (cur(p)->kind == TK_STRING) { sb_put(&b, cur(p)->text, cur(p)->len); adv(p); }
        if (sb_failed(&b)) { sb_free(&b); p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); return NULL; }
        return lit_node(p, line, sb_to_jv(&b));
    }
    if (c->kind == TK_INT) { adv(p); return lit_node(p, line, jv_int128(c->i)); }
    if (c->kind == TK_FLOAT) { adv(p); return lit_node(p, line, jv_float(c->f)); }
    if (c->kind == TK_OP && c->op == OP_LPAREN) {
        adv(p);
        jnode *e = parse_tuple(p, false, true);
        if (!e) return NULL;
        if (!expect_op(p, OP_RPAREN, ")")) { jinja_node_free(e); return NULL; }
        return e;
    }
    if (c->kind == TK_OP && (c->op == OP_LBRACKET || c->op == OP_LBRACE)) {
        bool is_dict = c->op == OP_LBRACE;
        int close = is_dict ? OP_RBRACE : OP_RBRACKET;
        jnode *n = node(p, is_dict ? JN_DICT : JN_LIST, line);
        if (!n) return NULL;
        adv(p);
        while (!is_op(p, close)) {
            if (n->args.n && !expect_op(p, OP_COMMA, ",")) { jinja_node_free(n); return NULL; }
            if (is_op(p, close)) break;
            jnode *e = parse_expr(p);
            if (!e || !vec_push(p, &n->args, e)) { jinja_node_free(n); return NULL; }
            if (is_dict) {
                if (!expect_op(p, OP_COLON, ":")) { jinja_node_free(n); return NULL; }
                jnode *v = parse_expr(p);
                if (!v || !vec_push(p, &n->args2, v)) { jinja_node_free(n); return NULL; }
            }
        }
        adv(p);
        return n;
    }
    if (c->kind == TK_EOF) return fail(p, line, "%sunexpected end of template", "");
    return fail(p, line, "%sunexpected token", "");
}

static jnode *parse_subscript(ps *p, jnode *obj) {
    int line = cur(p)->line;
    if (is_op(p, OP_DOT)) {
        adv(p);
        const tk *c = cur(p);
        jnode *n;
        if (c->kind == TK_NAME) {
            n = node(p, JN_ATTR, line);
            if (!n) { jinja_node_free(obj); return NULL; }
            n->name = strdup(c->text);
            n->a = obj;
            adv(p);
            return n;
        }
        if (c->kind == TK_INT) {
            n = node(p, JN_ITEM, line);
            if (!n) { jinja_node_free(obj); return NULL; }
            n->a = obj;
            n->b = lit_node(p, line, jv_int128(c->i));
            adv(p);
            return n->b ? n : (jinja_node_free(n), NULL);
        }
        jinja_node_free(obj);
        return fail(p, line, "%sexpected name or number after '.'", "");
    }
    /* '[' */
    adv(p);
    jnode *parts[3] = {NULL, NULL, NULL};
    int np = 0;
    bool is_slice = false;
    for (;;) {
        if (is_op(p, OP_COLON)) { is_slice = true; adv(p); np++; if (np > 2) break; continue; }
        if (is_op(p, OP_RBRACKET)) break;
        if (parts[np]) { fail(p, cur(p)->line, "%sexpected ']'", ""); break; }
        parts[np] = parse_expr(p);
        if (!parts[np]) break;
    }
    if (p->st != LMX_OK || np > 2 || !expect_op(p, OP_RBRACKET, "]")) {
        for (int k = 0; k < 3; k++) jinja_node_free(parts[k]);
        jinja_node_free(obj);
        if (p->st == LMX_OK) fail(p, line, "%sbad subscript", "");
        return NULL;
    }
    if (!is_slice && !parts[0]) { jinja_node_free(obj); return fail(p, line, "%sempty subscript", ""); }
    jnode *n = node(p, is_slice ? JN_SLICE : JN_ITEM, line);
    if (!n) { for (int k = 0; k < 3; k++) jinja_node_free(parts[k]); jinja_node_free(obj); return NULL; }
    n->a = obj;
    if (is_slice) { n->b = parts[0]; n->c = parts[1]; if (parts[2]) { n->args2.v = NULL; vec_push(p, &n->args, parts[2]); } }
    else n->b = parts[0];
    return n;
}

/* `callee(args…)` at a '(': a JN_CALL node owning callee; NULL (callee freed) on error. */
static jnode *parse_call(ps *p, jnode *callee) {
    jnode *c = node(p, JN_CALL, cur(p)->line);
    if (!c) { jinja_node_free(callee); return NULL; }
    c->a = callee;
    if (!parse_call_args(p, c)) { jinja_node_free(c); return NULL; }
    return c;
}

static jnode *parse_postfix(ps *p, jnode *n) {
    int d0 = p->depth;
    while (n) {
        if (!(is_op(p, OP_DOT) || is_op(p, OP_LBRACKET) || is_op(p, OP_LPAREN))) break;
        if (!enter(p)) { jinja_node_free(n); n = NULL; break; }
        if (is_op(p, OP_DOT) || is_op(p, OP_LBRACKET)) n = parse_subscript(p, n);
        else if (is_op(p, OP_LPAREN)) {
            if (!(n = parse_call(p, n))) return NULL;
        } else break;
    }
    p->depth = d0;
    return n;
}

static char *dotted_name(ps *p) {
    if (cur(p)->kind != TK_NAME) { fail(p, cur(p)->line, "%sexpected a name", ""); return NULL; }
    sb b;
    sb_init(&b, 0);
    sb_puts(&b, cur(p)->text);
    adv(p);
    while (is_op(p, OP_DOT) && peek(p, 1)->kind == TK_NAME) {
        adv(p);
        sb_putc(&b, '.');
        sb_puts(&b, cur(p)->text);
        adv(p);
    }
    if (sb_failed(&b) || !b.p) { sb_free(&b); p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); return NULL; }
    return b.p;
}

static jnode *parse_filter(ps *p, jnode *n, bool start_inline) {
    int d0 = p->depth;
    while (is_op(p, OP_PIPE) || start_inline) {
        if (!enter(p)) { jinja_node_free(n); return NULL; }
        if (!start_inline) adv(p);
        start_inline = false;
        jnode *f = node(p, JN_FILTER, cur(p)->line);
        if (!f) { jinja_node_free(n); return NULL; }
        f->a = n;
        n = f;
        if (!(f->name = dotted_name(p))) { jinja_node_free(n); return NULL; }
        if (is_op(p, OP_LPAREN) && !parse_call_args(p, f)) { jinja_node_free(n); return NULL; }
    }
    p->depth = d0;
    return n;
}

static jnode *parse_test(ps *p, jnode *n) {
    int line = cur(p)->line;
    adv(p); /* 'is' */
    bool neg = false;
    if (is_name(p, "not")) { neg = true; adv(p); }
    jnode *t = node(p, JN_TEST, line);
    if (!t) { jinja_node_free(n); return NULL; }
    t->a = n;
    t->op = neg;
    if (!(t->name = dotted_name(p))) { jinja_node_free(t); return NULL; }
    const tk *c = cur(p);
    if (is_op(p, OP_LPAREN)) {
        if (!parse_call_args(p, t)) { jinja_node_free(t); return NULL; }
    } else if ((c->kind == TK_NAME || c->kind == TK_STRING || c->kind == TK_INT || c->kind == TK_FLOAT ||
                (c->kind == TK_OP && (c->op == OP_LBRACKET || c->op == OP_LBRACE))) &&
               !(c->kind == TK_NAME && (!strcmp(c->text, "else") || !strcmp(c->text, "or") || !strcmp(c->text, "and")))) {
        if (c->kind == TK_NAME && !strcmp(c->text, "is")) { jinja_node_free(t); return fail(p, line, "%syou cannot chain multiple tests with is", ""); }
        jnode *arg = parse_postfix(p, parse_primary(p));
        if (!arg || !vec_push(p, &t->args, arg)) { jinja_node_free(t); return NULL; }
    }
    return t;
}

static jnode *parse_filter_expr(ps *p, jnode *n) {
    int d0 = p->depth;
    while (n) {
        if (!(is_op(p, OP_PIPE) || is_name(p, "is") || is_op(p, OP_LPAREN))) break;
        if (!enter(p)) { jinja_node_free(n); n = NULL; break; }
        if (is_op(p, OP_PIPE)) n = parse_filter(p, n, false);
        else if (is_name(p, "is")) n = parse_test(p, n);
        else if (is_op(p, OP_LPAREN)) {
            if (!(n = parse_call(p, n))) return NULL;
        } else break;
    }
    p->depth = d0;
    return n;
}

static jnode *parse_unary(ps *p, bool with_filter) {
    if (!enter(p)) return NULL;
    int line = cur(p)->line;
    jnode *n;
    if (is_op(p, OP_SUB) || is_op(p, OP_ADD)) {
        bool neg = is_op(p, OP_SUB);
        adv(p);
        jnode *x = parse_unary(p, false);
        if (!x) { p->depth--; return NULL; }
        n = node(p, neg ? JN_NEG : JN_POS, line);
        if (!n) { jinja_node_free(x); p->depth--; return NULL; }
        n->a = x;
    } else {
        n = parse_postfix(p, parse_primary(p));
    }
    if (with_filter) n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}

static jnode *binary(ps *p, int line, jn_kind k, int op, jnode *l, jnode *r) {
    if (!r) { jinja_node_free(l); return NULL; }
    jnode *n = node(p, k, line);
    if (!n) { jinja_node_free(l); jinja_node_free(r); return NULL; }
    n->op = op;
    n->a = l;
    n->b = r;
    return n;
}

/* One left-associative binary level: operands from `operand`, joined by one of `ops` (operator
 * tokens, 0-terminated; the node keeps the token's op) or by the keyword `word` (op 0). */
typedef struct bin_level {
    jn_kind kind;
    int ops[5];
    const char *word;
} bin_level;

static int level_op(ps *p, const bin_level *lv) {
    if (lv->word) return is_name(p, lv->word) ? 0 : -1;
    for (const int *o = lv->ops; *o; o++)
        if (is_op(p, *o)) return *o;
    return -1;
}

static jnode *parse_left_assoc(ps *p, const bin_level *lv, jnode *(*operand)(ps *)) {
    int d0 = p->depth, op;
    jnode *l = operand(p);
    while (l && (op = level_op(p, lv)) >= 0) {
        int line = cur(p)->line;
        adv(p);
        if (!enter(p)) { jinja_node_free(l); return NULL; }
        l = binary(p, line, lv->kind, op, l, operand(p));
    }
    p->depth = d0;
    return l;
}

/* Precedence, tightest first: ** ; * / // % ; ~ ; + - ; comparisons ; not ; and ; or. */
static jnode *parse_filtered_unary(ps *p) { return parse_unary(p, true); }
static jnode *parse_pow(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_BIN, {OP_POW}, NULL}, parse_filtered_unary);
}
static jnode *parse_math2(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_BIN, {OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD}, NULL}, parse_pow);
}
static jnode *parse_concat(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_CONCAT, {OP_TILDE}, NULL}, parse_math2);
}
static jnode *parse_math1(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_BIN, {OP_ADD, OP_SUB}, NULL}, parse_concat);
}

static jnode *parse_compare(ps *p) {
    int line = cur(p)->line;
    jnode *l = parse_math1(p);
    if (!l) return NULL;
    jnode *cmp = NULL;
    for (;;) {
        int op = 0;
        const tk *c = cur(p);
        if (c->kind == TK_OP && (c->op == OP_EQ || c->op == OP_NE || c->op == OP_LT || c->op == OP_LTEQ ||
                                 c->op == OP_GT || c->op == OP_GTEQ)) { op = c->op; adv(p); }
        else if (is_name(p, "in")) { op = JN_OP_IN; adv(p); }
        else if (is_name(p, "not") && peek(p, 1)->kind == TK_NAME && !strcmp(peek(p, 1)->text, "in")) { op = JN_OP_NOTIN; adv(p); adv(p); }
        else break;
        if (!cmp) {
            cmp = node(p, JN_COMPARE, line);
            if (!cmp) { jinja_node_free(l); return NULL; }
            cmp->a = l;
        }
        jnode *r = parse_math1(p);
        if (!r) { jinja_node_free(cmp); return NULL; }
        int *no = realloc(cmp->ops, (size_t)(cmp->args.n + 1) * sizeof *no);
        if (!no) { jinja_node_free(r); jinja_node_free(cmp); p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); return NULL; }
        cmp->ops = no;
        cmp->ops[cmp->args.n] = op;
        if (!vec_push(p, &cmp->args, r)) { jinja_node_free(cmp); return NULL; }
    }
    return cmp ? cmp : l;
}

static jnode *parse_not(ps *p) {
    if (is_name(p, "not")) {
        int line = cur(p)->line;
        adv(p);
        if (!enter(p)) return NULL;
        jnode *x = parse_not(p);
        p->depth--;
        if (!x) return NULL;
        jnode *n = node(p, JN_NOT, line);
        if (!n) { jinja_node_free(x); return NULL; }
        n->a = x;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_AND, {0}, "and"}, parse_not);
}
static jnode *parse_or(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_OR, {0}, "or"}, parse_and);
}

static jnode *parse_expr(ps *p) {
    if (!enter(p)) return NULL;
    jnode *e = parse_or(p);
    while (e && is_name(p, "if")) {
        int line = cur(p)->line;
        adv(p);
        jnode *cond = parse_or(p);
        if (!cond) { jinja_node_free(e); e = NULL; break; }
        jnode *els = NULL;
        if (is_name(p, "else")) {
            adv(p);
            els = parse_expr(p);
            if (!els) { jinja_node_free(e); jinja_node_free(cond); e = NULL; break; }
        }
        jnode *n = node(p, JN_COND, line);
        if (!n) { jinja_node_free(e); jinja_node_free(cond); jinja_node_free(els); e = NULL; break; }
        n->a = cond;
        n->b = e;
        n->c = els;
        e = n;
    }
    p->depth--;
    return e;
}

/* ---------------------------------------------------------------- statements */
static bool parse_body(ps *p, jn_vec *body, const char *const *ends);

static bool expect_block_end(ps *p) {
    if (cur(p)->kind == TK_BLOCK_END) { adv(p); return true; }
    fail(p, cur(p)->line, "%sexpected end of statement block", "");
    return false;
}

/* Assignment target: name, tuple of names, or ns.attr */
static bool parse_target(ps *p, jnode *n, bool allow_attr, bool for_loop) {
    if (cur(p)->kind != TK_NAME) { fail(p, cur(p)->line, "%sexpected a name", ""); return false; }
    if (allow_attr && peek(p, 1)->kind == TK_OP && peek(p, 1)->op == OP_DOT && peek(p, 2)->kind == TK_NAME) {
        jnode *t = node(p, JN_ATTR, cur(p)->line);
        if (!t) return false;
        t->name = strdup(peek(p, 2)->text);
        t->a = node(p, JN_NAME, cur(p)->line);
        if (t->a) t->a->name = strdup(cur(p)->text);
        n->c = t;
        adv(p); adv(p); adv(p);
        return t->a != NULL;
    }
    bool paren = false;
    for (;;) {
        if (cur(p)->kind != TK_NAME) { fail(p, cur(p)->line, "%sexpected a name", ""); return false; }
        if (!names_push(p, n, cur(p)->text)) return false;
        adv(p);
        if (!is_op(p, OP_COMMA)) break;
        adv(p);
        if (is_name(p, "in") && for_loop) break;
        if (is_op(p, OP_ASSIGN)) break;
    }
    (void)paren;
    return true;
}

static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_FOR[] = {"else", "endfor", NULL};
static const char *const END_FOR2[] = {"endfor", NULL};

static jnode *parse_if(ps *p, int line) {
    jnode *n = node(p, JN_IF, line);
    if (!n) return NULL;
    if (!(n->a = parse_tuple(p, false, false)) || !expect_block_end(p)) { jinja_node_free(n); return NULL; }
    if (!parse_body(p, &n->args, END_IF)) { jinja_node_free(n); return NULL; }
    const char *kw = cur(p)->text;
    int kline = cur(p)->line;
    if (!strcmp(kw, "elif")) {
        adv(p);
        n->b = parse_if(p, kline);
        if (!n->b) { jinja_node_free(n); return NULL; }
        return n;
    }
    if (!strcmp(kw, "else")) {
        adv(p);
        if (!expect_block_end(p)) { jinja_node_free(n); return NULL; }
        n->b = node(p, JN_BODY, kline);
        if (!n->b || !parse_body(p, &n->b->args, (const char *const[]){"endif", NULL})) { jinja_node_free(n); return NULL; }
    }
    adv(p); /* endif */
    if (!expect_block_end(p)) { jinja_node_free(n); return NULL; }
    return n;
}

/* Whether a subtree reads the name `loop` (conservative: nested loops count too). */
static bool names_loop(const jnode *n) {
    if (!n) return false;
    if (n->kind == JN_NAME && !strcmp(n->name, "loop")) return true;
    if (names_loop(n->a) || names_loop(n->b) || names_loop(n->c)) return true;
    for (int i = 0; i < n->args.n; i++) if (names_loop(n->args.v[i])) return true;
    for (int i = 0; i < n->args2.n; i++) if (names_loop(n->args2.v[i])) return true;
    return false;
}

/* A statement that failed to parse: frees it; a generic error unless a precise one is set. */
static jnode *stmt_fail(ps *p, jnode *n, int line) {
    jinja_node_free(n);
    if (p->st == LMX_OK) p->st = lmx_error(LMX_ERR_TEMPLATE, "line %d: syntax error", line);
    return NULL;
}

static jnode *parse_for(ps *p, int line) {
    jnode *n = NULL;
    n = node(p, JN_FOR, line);
    if (!n || !parse_target(p, n, false, true)) goto err;
    if (!is_name(p, "in")) { fail(p, cur(p)->line, "%sexpected 'in'", ""); goto err; }
    adv(p);
    /* iterable: tuple without the inline-if (so `for x in xs if cond` works) */
    {
        int l2 = cur(p)->line;
        jnode *first = parse_or(p);
        if (!first) goto err;
        if (is_op(p, OP_COMMA)) {
            jnode *t = node(p, JN_TUPLE, l2);
            if (!t || !vec_push(p, &t->args, first)) { if (!t) jinja_node_free(first); jinja_node_free(t); goto err; }
            while (is_op(p, OP_COMMA)) {
                adv(p);
                if (is_name(p, "if") || cur(p)->kind == TK_BLOCK_END) break;
                jnode *e = parse_or(p);
                if (!e || !vec_push(p, &t->args, e)) { jinja_node_free(t); goto err; }
            }
            first = t;
        }
        n->a = first;
    }
    if (is_name(p, "if")) {
        adv(p);
        if (!(n->b = parse_expr(p))) goto err;
    }
    if (is_name(p, "recursive")) { adv(p); n->op = 1; n->uses_loop = true; }
    p->loops++;
    bool body_ok = expect_block_end(p) && parse_body(p, &n->args, END_FOR);
    p->loops--;
    if (!body_ok) goto err;
    for (int i = 0; i < n->args.n && !n->uses_loop; i++) n->uses_loop = names_loop(n->args.v[i]);
    if (!strcmp(cur(p)->text, "else")) {
        adv(p);
        if (!expect_block_end(p) || !parse_body(p, &n->args2, END_FOR2)) goto err;
    }
    adv(p);
    if (!expect_block_end(p)) goto err;
    return n;
err:
    return stmt_fail(p, n, line);
}

static jnode *parse_macro(ps *p, int line) {
    jnode *n = NULL;
    n = node(p, JN_MACRO, line);
    if (!n) goto err;
    if (cur(p)->kind != TK_NAME) { fail(p, cur(p)->line, "%sexpected macro name", ""); goto err; }
    n->name = strdup(cur(p)->text);
    adv(p);
    if (!expect_op(p, OP_LPAREN, "(")) goto err;
    while (!is_op(p, OP_RPAREN)) {
        if (n->nnames && !expect_op(p, OP_COMMA, ",")) goto err;
        if (is_op(p, OP_RPAREN)) break;
        if (cur(p)->kind != TK_NAME) { fail(p, cur(p)->line, "%sexpected parameter name", ""); goto err; }
        if (!names_push(p, n, cur(p)->text)) goto err;
        adv(p);
        jnode *def = NULL;
        if (is_op(p, OP_ASSIGN)) {
            adv(p);
            if (!(def = parse_expr(p))) goto err;
        } else if (n->args2.n && n->args2.v[n->args2.n - 1]) {
            fail(p, cur(p)->line, "%snon-default argument follows default argument", "");
            goto err;
        }
        if (!def) {
            /* placeholder: NULL default */
            if (n->args2.n == n->args2.cap) {
                int nc = n->args2.cap ? n->args2.cap * 2 : 4;
                jnode **nv = realloc(n->args2.v, (size_t)nc * sizeof *nv);
                if (!nv) { p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); goto err; }
                n->args2.v = nv;
                n->args2.cap = nc;
            }
            n->args2.v[n->args2.n++] = NULL;
        } else if (!vec_push(p, &n->args2, def)) goto err;
    }
    adv(p);
    int saved_loops = p->loops;
    p->loops = 0;
    bool mok = expect_block_end(p) && parse_body(p, &n->args, (const char *const[]){"endmacro", NULL});
    p->loops = saved_loops;
    if (!mok) goto err;
    adv(p);
    if (!expect_block_end(p)) goto err;
    return n;
err:
    return stmt_fail(p, n, line);
}

static jnode *parse_statement(ps *p) {
    const tk *c = cur(p);
    int line = c->line;
    if (c->kind != TK_NAME) return fail(p, line, "%sexpected statement name", "");
    const char *kw = c->text;
    jnode *n = NULL;
    if (!strcmp(kw, "if")) { adv(p); return parse_if(p, line); }
    if (!strcmp(kw, "for")) { adv(p); return parse_for(p, line); }
    if (!strcmp(kw, "set")) {
        adv(p);
        n = node(p, JN_SET, line);
        if (!n || !parse_target(p, n, true, false)) goto err;
        if (is_op(p, OP_ASSIGN)) {
            adv(p);
            if (!(n->a = parse_tuple(p, false, false)) || !expect_block_end(p)) goto err;
            return n;
        }
        /* block set, optional filters */
        n->kind = JN_SETBLOCK;
        if (is_op(p, OP_PIPE)) {
            jnode *f = parse_filter(p, NULL, false);
            if (!f) goto err;
            n->b = f;
        }
        if (!expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endset", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "macro")) { adv(p); return parse_macro(p, line); }
    if (!strcmp(kw, "call")) {
        adv(p);
        n = node(p, JN_CALLBLOCK, line);
        if (!n) goto err;
        if (is_op(p, OP_LPAREN)) { fail(p, line, "%scall blocks with caller arguments are not supported", ""); goto err; }
        if (!(n->a = parse_expr(p))) goto err;
        if (n->a->kind != JN_CALL) { fail(p, line, "%sexpected a call", ""); goto err; }
        if (!expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endcall", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "filter")) {
        adv(p);
        n = node(p, JN_FILTERBLOCK, line);
        if (!n || !(n->a = parse_filter(p, NULL, true))) goto err;
        if (!expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endfilter", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "with")) {
        /* {% with a = 1, b = x %}…{% endwith %}: a scope with its own assignments */
        adv(p);
        n = node(p, JN_WITH, line);
        if (!n) goto err;
        while (cur(p)->kind != TK_BLOCK_END) {
            if (n->nnames && !expect_op(p, OP_COMMA, ",")) goto err;
            if (cur(p)->kind != TK_NAME) { fail(p, cur(p)->line, "%sexpected a name", ""); goto err; }
            if (!names_push(p, n, cur(p)->text)) goto err;
            adv(p);
            if (!expect_op(p, OP_ASSIGN, "=")) goto err;
            jnode *v = parse_expr(p);
            if (!v || !vec_push(p, &n->args2, v)) goto err;
        }
        if (!expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endwith", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "generation")) {
        adv(p);
        n = node(p, JN_BODY, line);
        if (!n || !expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endgeneration", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        if (p->loops == 0) return fail(p, line, "'%s' outside loop", kw);
        n = node(p, kw[0] == 'b' ? JN_BREAK : JN_CONTINUE, line);
        adv(p);
        if (!n || !expect_block_end(p)) goto err;
        return n;
    }
    return fail(p, line, "encountered unknown tag '%s'", kw);
err:
    return stmt_fail(p, n, line);
}

static bool parse_body(ps *p, jn_vec *body, const char *const *ends) {
    if (!enter(p)) return false;
    for (;;) {
        const tk *c = cur(p);
        if (c->kind == TK_EOF) {
            p->depth--;
            if (ends) { fail(p, c->line, "unexpected end of template, expected '%s'", ends[0]); return false; }
            return true;
        }
        if (c->kind == TK_TEXT) {
            jnode *n = node(p, JN_TEXT, c->line);
            if (!n) return false;
            jv s = jv_str_new(c->text, c->len);
            if (jv_is_oom(s)) { free(n); p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); return false; }
            jv_make_immortal(s);
            n->lit = s;
            if (!vec_push(p, body, n)) return false;
            adv(p);
            continue;
        }
        if (c->kind == TK_VAR_BEGIN) {
            adv(p);
            jnode *n = node(p, JN_OUTPUT, c->line);
            if (!n) return false;
            if (!(n->a = parse_tuple(p, false, false))) { jinja_node_free(n); return false; }
            if (cur(p)->kind != TK_VAR_END) { jinja_node_free(n); fail(p, cur(p)->line, "%sexpected end of print statement", ""); return false; }
            adv(p);
            if (!vec_push(p, body, n)) return false;
            continue;
        }
        if (c->kind == TK_BLOCK_BEGIN) {
            const tk *kw = peek(p, 1);
            if (kw->kind == TK_NAME && ends)
                for (int k = 0; ends[k]; k++)
                    if (!strcmp(kw->text, ends[k])) { adv(p); p->depth--; return true; }
            if (kw->kind == TK_NAME) {
                static const char *const stray[] = {"endif", "endfor", "else", "elif", "endset", "endmacro", "endcall", "endfilter", "endgeneration", "endraw", "endwith", NULL};
                for (int k = 0; stray[k]; k++)
                    if (!strcmp(kw->text, stray[k])) { fail(p, kw->line, "encountered unknown tag '%s'", kw->text); return false; }
            }
            adv(p);
            jnode *n = parse_statement(p);
            if (!n || !vec_push(p, body, n)) return false;
            continue;
        }
        fail(p, c->line, "%sunexpected token", "");
        return false;
    }
}

lmx_status jinja_parse(const tk_vec *toks, jnode **root) {
    ps p = {.t = toks, .i = 0, .st = LMX_OK};
    jnode *body = node(&p, JN_BODY, 1);
    if (!body) return p.st;
    if (!parse_body(&p, &body->args, NULL)) {
        jinja_node_free(body);
        return p.st != LMX_OK ? p.st : lmx_error(LMX_ERR_TEMPLATE, "syntax error");
    }
    *root = body;
    return LMX_OK;
}
