/* jinja_parse_stmt.c — the statement half of the parser: {% if %}, {% for %} (with else, inline
 * if and recursive), {% set %} and block set, {% macro %}, {% call %}, {% filter %}, {% with %},
 * {% generation %}, break/continue, and the template body. */
#include "jinja_parse.h"

#include <stdlib.h>

#include "util/error.h"

/* ---------------------------------------------------------------- statements */
static bool parse_body(ps *p, jn_vec *body, const char *const *ends);

static bool expect_block_end(ps *p) {
    if (cur(p)->kind == TK_BLOCK_END) { adv(p); return true; }
    jp_fail(p, cur(p)->line, "%sexpected end of statement block", "");
    return false;
}

/* Assignment target: name, tuple of names, or ns.attr */
static bool parse_target(ps *p, jnode *n, bool allow_attr, bool for_loop) {
    if (cur(p)->kind != TK_NAME) { jp_fail(p, cur(p)->line, "%sexpected a name", ""); return false; }
    if (allow_attr && peek(p, 1)->kind == TK_OP && peek(p, 1)->op == OP_DOT && peek(p, 2)->kind == TK_NAME) {
        jnode *t = jp_node(p, JN_ATTR, cur(p)->line);
        if (!t) return false;
        t->name = strdup(peek(p, 2)->text);
        t->a = jp_node(p, JN_NAME, cur(p)->line);
        if (t->a) t->a->name = strdup(cur(p)->text);
        n->c = t;
        adv(p); adv(p); adv(p);
        return t->a != NULL;
    }
    bool paren = false;
    for (;;) {
        if (cur(p)->kind != TK_NAME) { jp_fail(p, cur(p)->line, "%sexpected a name", ""); return false; }
        if (!jp_names_push(p, n, cur(p)->text)) return false;
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
    jnode *n = jp_node(p, JN_IF, line);
    if (!n) return NULL;
    if (!(n->a = jp_parse_tuple(p, false, false)) || !expect_block_end(p)) { jinja_node_free(n); return NULL; }
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
        n->b = jp_node(p, JN_BODY, kline);
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
    n = jp_node(p, JN_FOR, line);
    if (!n || !parse_target(p, n, false, true)) goto err;
    if (!is_name(p, "in")) { jp_fail(p, cur(p)->line, "%sexpected 'in'", ""); goto err; }
    adv(p);
    /* iterable: tuple without the inline-if (so `for x in xs if cond` works) */
    {
        int l2 = cur(p)->line;
        jnode *first = jp_parse_or(p);
        if (!first) goto err;
        if (is_op(p, OP_COMMA)) {
            jnode *t = jp_node(p, JN_TUPLE, l2);
            if (!t || !jp_vec_push(p, &t->args, first)) { if (!t) jinja_node_free(first); jinja_node_free(t); goto err; }
            while (is_op(p, OP_COMMA)) {
                adv(p);
                if (is_name(p, "if") || cur(p)->kind == TK_BLOCK_END) break;
                jnode *e = jp_parse_or(p);
                if (!e || !jp_vec_push(p, &t->args, e)) { jinja_node_free(t); goto err; }
            }
            first = t;
        }
        n->a = first;
    }
    if (is_name(p, "if")) {
        adv(p);
        if (!(n->b = jp_parse_expr(p))) goto err;
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
    n = jp_node(p, JN_MACRO, line);
    if (!n) goto err;
    if (cur(p)->kind != TK_NAME) { jp_fail(p, cur(p)->line, "%sexpected macro name", ""); goto err; }
    n->name = strdup(cur(p)->text);
    adv(p);
    if (!jp_expect_op(p, OP_LPAREN, "(")) goto err;
    while (!is_op(p, OP_RPAREN)) {
        if (n->nnames && !jp_expect_op(p, OP_COMMA, ",")) goto err;
        if (is_op(p, OP_RPAREN)) break;
        if (cur(p)->kind != TK_NAME) { jp_fail(p, cur(p)->line, "%sexpected parameter name", ""); goto err; }
        if (!jp_names_push(p, n, cur(p)->text)) goto err;
        adv(p);
        jnode *def = NULL;
        if (is_op(p, OP_ASSIGN)) {
            adv(p);
            if (!(def = jp_parse_expr(p))) goto err;
        } else if (n->args2.n && n->args2.v[n->args2.n - 1]) {
            jp_fail(p, cur(p)->line, "%snon-default argument follows default argument", "");
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
        } else if (!jp_vec_push(p, &n->args2, def)) goto err;
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
    if (c->kind != TK_NAME) return jp_fail(p, line, "%sexpected statement name", "");
    const char *kw = c->text;
    jnode *n = NULL;
    if (!strcmp(kw, "if")) { adv(p); return parse_if(p, line); }
    if (!strcmp(kw, "for")) { adv(p); return parse_for(p, line); }
    if (!strcmp(kw, "set")) {
        adv(p);
        n = jp_node(p, JN_SET, line);
        if (!n || !parse_target(p, n, true, false)) goto err;
        if (is_op(p, OP_ASSIGN)) {
            adv(p);
            if (!(n->a = jp_parse_tuple(p, false, false)) || !expect_block_end(p)) goto err;
            return n;
        }
        /* block set, optional filters */
        n->kind = JN_SETBLOCK;
        if (is_op(p, OP_PIPE)) {
            jnode *f = jp_parse_filter(p, NULL, false);
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
        n = jp_node(p, JN_CALLBLOCK, line);
        if (!n) goto err;
        if (is_op(p, OP_LPAREN)) { jp_fail(p, line, "%scall blocks with caller arguments are not supported", ""); goto err; }
        if (!(n->a = jp_parse_expr(p))) goto err;
        if (n->a->kind != JN_CALL) { jp_fail(p, line, "%sexpected a call", ""); goto err; }
        if (!expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endcall", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "filter")) {
        adv(p);
        n = jp_node(p, JN_FILTERBLOCK, line);
        if (!n || !(n->a = jp_parse_filter(p, NULL, true))) goto err;
        if (!expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endfilter", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "with")) {
        /* {% with a = 1, b = x %}…{% endwith %}: a scope with its own assignments */
        adv(p);
        n = jp_node(p, JN_WITH, line);
        if (!n) goto err;
        while (cur(p)->kind != TK_BLOCK_END) {
            if (n->nnames && !jp_expect_op(p, OP_COMMA, ",")) goto err;
            if (cur(p)->kind != TK_NAME) { jp_fail(p, cur(p)->line, "%sexpected a name", ""); goto err; }
            if (!jp_names_push(p, n, cur(p)->text)) goto err;
            adv(p);
            if (!jp_expect_op(p, OP_ASSIGN, "=")) goto err;
            jnode *v = jp_parse_expr(p);
            if (!v || !jp_vec_push(p, &n->args2, v)) goto err;
        }
        if (!expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endwith", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "generation")) {
        adv(p);
        n = jp_node(p, JN_BODY, line);
        if (!n || !expect_block_end(p) || !parse_body(p, &n->args, (const char *const[]){"endgeneration", NULL})) goto err;
        adv(p);
        if (!expect_block_end(p)) goto err;
        return n;
    }
    if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        if (p->loops == 0) return jp_fail(p, line, "'%s' outside loop", kw);
        n = jp_node(p, kw[0] == 'b' ? JN_BREAK : JN_CONTINUE, line);
        adv(p);
        if (!n || !expect_block_end(p)) goto err;
        return n;
    }
    return jp_fail(p, line, "encountered unknown tag '%s'", kw);
err:
    return stmt_fail(p, n, line);
}

static bool parse_body(ps *p, jn_vec *body, const char *const *ends) {
    if (!jp_enter(p)) return false;
    for (;;) {
        const tk *c = cur(p);
        if (c->kind == TK_EOF) {
            p->depth--;
            if (ends) { jp_fail(p, c->line, "unexpected end of template, expected '%s'", ends[0]); return false; }
            return true;
        }
        if (c->kind == TK_TEXT) {
            jnode *n = jp_node(p, JN_TEXT, c->line);
            if (!n) return false;
            jv s = jv_str_new(c->text, c->len);
            if (jv_is_oom(s)) { free(n); p->st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "AST"); return false; }
            jv_make_immortal(s);
            n->lit = s;
            if (!jp_vec_push(p, body, n)) return false;
            adv(p);
            continue;
        }
        if (c->kind == TK_VAR_BEGIN) {
            adv(p);
            jnode *n = jp_node(p, JN_OUTPUT, c->line);
            if (!n) return false;
            if (!(n->a = jp_parse_tuple(p, false, false))) { jinja_node_free(n); return false; }
            if (cur(p)->kind != TK_VAR_END) { jinja_node_free(n); jp_fail(p, cur(p)->line, "%sexpected end of print statement", ""); return false; }
            adv(p);
            if (!jp_vec_push(p, body, n)) return false;
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
                    if (!strcmp(kw->text, stray[k])) { jp_fail(p, kw->line, "encountered unknown tag '%s'", kw->text); return false; }
            }
            adv(p);
            jnode *n = parse_statement(p);
            if (!n || !jp_vec_push(p, body, n)) return false;
            continue;
        }
        jp_fail(p, c->line, "%sunexpected token", "");
        return false;
    }
}

lmx_status jinja_parse(const tk_vec *toks, jnode **root) {
    ps p = {.t = toks, .i = 0, .st = LMX_OK};
    jnode *body = jp_node(&p, JN_BODY, 1);
    if (!body) return p.st;
    if (!parse_body(&p, &body->args, NULL)) {
        jinja_node_free(body);
        return p.st != LMX_OK ? p.st : lmx_error(LMX_ERR_TEMPLATE, "syntax error");
    }
    *root = body;
    return LMX_OK;
}
