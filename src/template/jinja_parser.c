/* jinja_parser.c — the expression half of the recursive-descent parser (tokens to an immutable AST),
 * following Jinja2's grammar and operator precedence (or < and < not < compare < +,- < ~ < *,/,//,%
 * < ** < unary < postfix/filters/tests); statements: jinja_parse_stmt.c. Errors → LMX_ERR_TEMPLATE. */
#include "jinja_parse.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/error.h"

#define MAX_DEPTH 400


jnode *jp_fail(ps *p, int line, const char *fmt, const char *arg) {
    if (p->st == LMX_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, fmt, arg ? arg : "");
        p->st = lmx_error(LMX_ERR_TEMPLATE, "line %d: %s", line, msg);
    }
    return NULL;
}

bool jp_expect_op(ps *p, int op, const char *what) {
    if (is_op(p, op)) { adv(p); return true; }
    jp_fail(p, cur(p)->line, "expected '%s'", what);
    return false;
}

jnode *jp_node(ps *p, jn_kind k, int line) {
    jnode *n = calloc(1, sizeof *n);
    if (!n) { if (p->st == LMX_OK) p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template AST"); return NULL; }
    n->kind = k;
    n->line = line;
    return n;
}

bool jp_vec_push(ps *p, jn_vec *v, jnode *x) {
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

bool jp_names_push(ps *p, jnode *n, const char *s) {
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
        if (v.t == JV_BIG) { free(v.u.big->text); free(v.u.big); }
    }
    free(n);
}

jnode *jp_lit_node(ps *p, int line, jv v) {
    if (jv_is_oom(v)) { p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template AST"); return NULL; }
    jnode *n = jp_node(p, JN_LIT, line);
    if (!n) { jv_decref(v); return NULL; }
    jv_make_immortal(v);
    n->lit = v;
    return n;
}

static jnode *parse_unary(ps *p, bool with_filter);
static jnode *parse_primary(ps *p);
static jnode *parse_postfix(ps *p, jnode *n);
static jnode *parse_filter_expr(ps *p, jnode *n);

bool jp_enter(ps *p) {
    if (++p->depth > MAX_DEPTH) { jp_fail(p, cur(p)->line, "%snesting too deep", ""); return false; }
    return true;
}

/* Call arguments after '(' — fills n->args (positional) and n->names/args2 (keywords). */
static bool parse_call_args(ps *p, jnode *n) {
    if (!jp_expect_op(p, OP_LPAREN, "(")) return false;
    bool first = true;
    while (!is_op(p, OP_RPAREN)) {
        if (!first && !jp_expect_op(p, OP_COMMA, ",")) return false;
        if (is_op(p, OP_RPAREN)) break;
        first = false;
        if (is_op(p, OP_MUL) || is_op(p, OP_POW)) { jp_fail(p, cur(p)->line, "%s*args/**kwargs are not supported", ""); return false; }
        if (cur(p)->kind == TK_NAME && peek(p, 1)->kind == TK_OP && peek(p, 1)->op == OP_ASSIGN) {
            if (!jp_names_push(p, n, cur(p)->text)) return false;
            adv(p);
            adv(p);
            jnode *v = jp_parse_expr(p);
            if (!v || !jp_vec_push(p, &n->args2, v)) return false;
        } else {
            if (n->args2.n) { jp_fail(p, cur(p)->line, "%spositional argument follows keyword argument", ""); return false; }
            jnode *v = jp_parse_expr(p);
            if (!v || !jp_vec_push(p, &n->args, v)) return false;
        }
    }
    adv(p);
    return true;
}

/* tuple-or-expression (used in {{ }}, for iterables, set values, parenthesised groups) */
jnode *jp_parse_tuple(ps *p, bool simplified, bool allow_empty) {
    int line = cur(p)->line;
    jnode *first = NULL, *t = NULL;
    for (;;) {
        if (first) {
            if (!is_op(p, OP_COMMA)) break;
            if (!t) {
                t = jp_node(p, JN_TUPLE, line);
                if (!t || !jp_vec_push(p, &t->args, first)) { jinja_node_free(t); if (!t) jinja_node_free(first); return NULL; }
            }
            adv(p);
        }
        /* end of tuple? */
        const tk *c = cur(p);
        if (c->kind == TK_VAR_END || c->kind == TK_BLOCK_END || (c->kind == TK_OP && c->op == OP_RPAREN) ||
            (c->kind == TK_NAME && !strcmp(c->text, "in") && simplified) || c->kind == TK_EOF ||
            (c->kind == TK_OP && c->op == OP_ASSIGN)) {
            if (first) break;
            if (allow_empty) return jp_node(p, JN_TUPLE, line);
            return jp_fail(p, c->line, "%sexpected an expression", "");
        }
        jnode *e = simplified ? parse_primary(p) : jp_parse_expr(p);
        if (!e) { jinja_node_free(t ? t : first); return NULL; }
        if (!first) first = e;
        else if (!jp_vec_push(p, &t->args, e)) { jinja_node_free(t); return NULL; }
    }
    return t ? t : first;
}

static jnode *parse_primary(ps *p) {
    const tk *c = cur(p);
    int line = c->line;
    if (c->kind == TK_NAME) {
        const char *s = c->text;
        jnode *n;
        if (!strcmp(s, "true") || !strcmp(s, "True")) n = jp_lit_node(p, line, jv_bool(true));
        else if (!strcmp(s, "false") || !strcmp(s, "False")) n = jp_lit_node(p, line, jv_bool(false));
        else if (!strcmp(s, "none") || !strcmp(s, "None")) n = jp_lit_node(p, line, jv_none());
        else {
            n = jp_node(p, JN_NAME, line);
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
        return jp_lit_node(p, line, sb_to_jv(&b));
    }
    if (c->kind == TK_INT) { adv(p); return jp_lit_node(p, line, c->text ? jv_int_text(c->text, c->len) : jv_int128(c->i)); }
    if (c->kind == TK_FLOAT) { adv(p); return jp_lit_node(p, line, jv_float(c->f)); }
    if (c->kind == TK_OP && c->op == OP_LPAREN) {
        adv(p);
        jnode *e = jp_parse_tuple(p, false, true);
        if (!e) return NULL;
        if (!jp_expect_op(p, OP_RPAREN, ")")) { jinja_node_free(e); return NULL; }
        return e;
    }
    if (c->kind == TK_OP && (c->op == OP_LBRACKET || c->op == OP_LBRACE)) {
        bool is_dict = c->op == OP_LBRACE;
        int close = is_dict ? OP_RBRACE : OP_RBRACKET;
        jnode *n = jp_node(p, is_dict ? JN_DICT : JN_LIST, line);
        if (!n) return NULL;
        adv(p);
        while (!is_op(p, close)) {
            if (n->args.n && !jp_expect_op(p, OP_COMMA, ",")) { jinja_node_free(n); return NULL; }
            if (is_op(p, close)) break;
            jnode *e = jp_parse_expr(p);
            if (!e || !jp_vec_push(p, &n->args, e)) { jinja_node_free(n); return NULL; }
            if (is_dict) {
                if (!jp_expect_op(p, OP_COLON, ":")) { jinja_node_free(n); return NULL; }
                jnode *v = jp_parse_expr(p);
                if (!v || !jp_vec_push(p, &n->args2, v)) { jinja_node_free(n); return NULL; }
            }
        }
        adv(p);
        return n;
    }
    if (c->kind == TK_EOF) return jp_fail(p, line, "%sunexpected end of template", "");
    return jp_fail(p, line, "%sunexpected token", "");
}

static jnode *parse_subscript(ps *p, jnode *obj) {
    int line = cur(p)->line;
    if (is_op(p, OP_DOT)) {
        adv(p);
        const tk *c = cur(p);
        jnode *n;
        if (c->kind == TK_NAME) {
            n = jp_node(p, JN_ATTR, line);
            if (!n) { jinja_node_free(obj); return NULL; }
            n->name = strdup(c->text);
            n->a = obj;
            adv(p);
            return n;
        }
        if (c->kind == TK_INT) {
            n = jp_node(p, JN_ITEM, line);
            if (!n) { jinja_node_free(obj); return NULL; }
            n->a = obj;
            n->b = jp_lit_node(p, line, c->text ? jv_int_text(c->text, c->len) : jv_int128(c->i));
            adv(p);
            return n->b ? n : (jinja_node_free(n), NULL);
        }
        jinja_node_free(obj);
        return jp_fail(p, line, "%sexpected name or number after '.'", "");
    }
    /* '[' */
    adv(p);
    jnode *parts[3] = {NULL, NULL, NULL};
    int np = 0;
    bool is_slice = false;
    for (;;) {
        if (is_op(p, OP_COLON)) { is_slice = true; adv(p); np++; if (np > 2) break; continue; }
        if (is_op(p, OP_RBRACKET)) break;
        if (parts[np]) { jp_fail(p, cur(p)->line, "%sexpected ']'", ""); break; }
        parts[np] = jp_parse_expr(p);
        if (!parts[np]) break;
    }
    if (p->st != LMX_OK || np > 2 || !jp_expect_op(p, OP_RBRACKET, "]")) {
        for (int k = 0; k < 3; k++) jinja_node_free(parts[k]);
        jinja_node_free(obj);
        if (p->st == LMX_OK) jp_fail(p, line, "%sbad subscript", "");
        return NULL;
    }
    if (!is_slice && !parts[0]) { jinja_node_free(obj); return jp_fail(p, line, "%sempty subscript", ""); }
    jnode *n = jp_node(p, is_slice ? JN_SLICE : JN_ITEM, line);
    if (!n) { for (int k = 0; k < 3; k++) jinja_node_free(parts[k]); jinja_node_free(obj); return NULL; }
    n->a = obj;
    if (is_slice) { n->b = parts[0]; n->c = parts[1]; if (parts[2]) { n->args2.v = NULL; jp_vec_push(p, &n->args, parts[2]); } }
    else n->b = parts[0];
    return n;
}

/* `callee(args…)` at a '(': a JN_CALL node owning callee; NULL (callee freed) on error. */
static jnode *parse_call(ps *p, jnode *callee) {
    jnode *c = jp_node(p, JN_CALL, cur(p)->line);
    if (!c) { jinja_node_free(callee); return NULL; }
    c->a = callee;
    if (!parse_call_args(p, c)) { jinja_node_free(c); return NULL; }
    return c;
}

static jnode *parse_postfix(ps *p, jnode *n) {
    int d0 = p->depth;
    while (n) {
        if (!(is_op(p, OP_DOT) || is_op(p, OP_LBRACKET) || is_op(p, OP_LPAREN))) break;
        if (!jp_enter(p)) { jinja_node_free(n); n = NULL; break; }
        if (is_op(p, OP_DOT) || is_op(p, OP_LBRACKET)) n = parse_subscript(p, n);
        else if (is_op(p, OP_LPAREN)) {
            if (!(n = parse_call(p, n))) return NULL;
        } else break;
    }
    p->depth = d0;
    return n;
}

static char *dotted_name(ps *p) {
    if (cur(p)->kind != TK_NAME) { jp_fail(p, cur(p)->line, "%sexpected a name", ""); return NULL; }
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

jnode *jp_parse_filter(ps *p, jnode *n, bool start_inline) {
    int d0 = p->depth;
    while (is_op(p, OP_PIPE) || start_inline) {
        if (!jp_enter(p)) { jinja_node_free(n); return NULL; }
        if (!start_inline) adv(p);
        start_inline = false;
        jnode *f = jp_node(p, JN_FILTER, cur(p)->line);
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
    jnode *t = jp_node(p, JN_TEST, line);
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
        if (c->kind == TK_NAME && !strcmp(c->text, "is")) { jinja_node_free(t); return jp_fail(p, line, "%syou cannot chain multiple tests with is", ""); }
        jnode *arg = parse_postfix(p, parse_primary(p));
        if (!arg || !jp_vec_push(p, &t->args, arg)) { jinja_node_free(t); return NULL; }
    }
    return t;
}

static jnode *parse_filter_expr(ps *p, jnode *n) {
    int d0 = p->depth;
    while (n) {
        if (!(is_op(p, OP_PIPE) || is_name(p, "is") || is_op(p, OP_LPAREN))) break;
        if (!jp_enter(p)) { jinja_node_free(n); n = NULL; break; }
        if (is_op(p, OP_PIPE)) n = jp_parse_filter(p, n, false);
        else if (is_name(p, "is")) n = parse_test(p, n);
        else if (is_op(p, OP_LPAREN)) {
            if (!(n = parse_call(p, n))) return NULL;
        } else break;
    }
    p->depth = d0;
    return n;
}

static jnode *parse_unary(ps *p, bool with_filter) {
    if (!jp_enter(p)) return NULL;
    int line = cur(p)->line;
    jnode *n;
    if (is_op(p, OP_SUB) || is_op(p, OP_ADD)) {
        bool neg = is_op(p, OP_SUB);
        adv(p);
        jnode *x = parse_unary(p, false);
        if (!x) { p->depth--; return NULL; }
        n = jp_node(p, neg ? JN_NEG : JN_POS, line);
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
    jnode *n = jp_node(p, k, line);
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
        if (!jp_enter(p)) { jinja_node_free(l); return NULL; }
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
            cmp = jp_node(p, JN_COMPARE, line);
            if (!cmp) { jinja_node_free(l); return NULL; }
            cmp->a = l;
        }
        jnode *r = parse_math1(p);
        if (!r) { jinja_node_free(cmp); return NULL; }
        int *no = realloc(cmp->ops, (size_t)(cmp->args.n + 1) * sizeof *no);
        if (!no) { jinja_node_free(r); jinja_node_free(cmp); p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); return NULL; }
        cmp->ops = no;
        cmp->ops[cmp->args.n] = op;
        if (!jp_vec_push(p, &cmp->args, r)) { jinja_node_free(cmp); return NULL; }
    }
    return cmp ? cmp : l;
}

static jnode *parse_not(ps *p) {
    if (is_name(p, "not")) {
        int line = cur(p)->line;
        adv(p);
        if (!jp_enter(p)) return NULL;
        jnode *x = parse_not(p);
        p->depth--;
        if (!x) return NULL;
        jnode *n = jp_node(p, JN_NOT, line);
        if (!n) { jinja_node_free(x); return NULL; }
        n->a = x;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_AND, {0}, "and"}, parse_not);
}
jnode *jp_parse_or(ps *p) {
    return parse_left_assoc(p, &(const bin_level){JN_OR, {0}, "or"}, parse_and);
}

jnode *jp_parse_expr(ps *p) {
    if (!jp_enter(p)) return NULL;
    jnode *e = jp_parse_or(p);
    while (e && is_name(p, "if")) {
        int line = cur(p)->line;
        adv(p);
        jnode *cond = jp_parse_or(p);
        if (!cond) { jinja_node_free(e); e = NULL; break; }
        jnode *els = NULL;
        if (is_name(p, "else")) {
            adv(p);
            els = jp_parse_expr(p);
            if (!els) { jinja_node_free(e); jinja_node_free(cond); e = NULL; break; }
        }
        jnode *n = jp_node(p, JN_COND, line);
        if (!n) { jinja_node_free(e); jinja_node_free(cond); jinja_node_free(els); e = NULL; break; }
        n->a = cond;
        n->b = e;
        n->c = els;
        e = n;
    }
    p->depth--;
    return e;
}
