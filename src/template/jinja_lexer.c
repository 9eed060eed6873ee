/* jinja_lexer.c — splits template source into tokens the way Jinja2's lexer does with
 * trim_blocks=True and lstrip_blocks=True: newlines normalised to "\n", one trailing newline
 * dropped, `{%-`/`-%}` whitespace control, `+` opt-outs, {# comments #}, {% raw %} blocks. */
#include "jinja_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/error.h"

typedef struct { const char *s; size_t n, i; int line; tk_vec *out; } lx;

static bool push(lx *L, tk t) {
    tk_vec *v = L->out;
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        tk *nv = realloc(v->v, nc * sizeof *nv);
        if (!nv) { free(t.text); return false; }
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = t;
    return true;
}

static int count_nl(const char *s, size_t n) {
    int c = 0;
    for (size_t i = 0; i < n; i++) c += s[i] == '\n';
    return c;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static bool emit_text(lx *L, const char *s, size_t n, int line) {
    if (n == 0) return true;
    tk t = {.kind = TK_TEXT, .line = line, .len = n};
    t.text = malloc(n + 1);
    if (!t.text) return false;
    memcpy(t.text, s, n);
    t.text[n] = '\0';
    return push(L, t);
}

/* Applies `-` / lstrip_blocks to the text before a tag; returns its kept length. */
static size_t strip_text(const char *text, size_t n, char sign, bool is_var, bool line_starting) {
    if (sign == '-') {
        while (n > 0 && is_ws(text[n - 1])) n--;
        return n;
    }
    if (sign == '+' || is_var) return n;
    size_t l_pos = n;
    while (l_pos > 0 && text[l_pos - 1] != '\n') l_pos--;
    if (l_pos == 0 && !line_starting) return n;
    if (l_pos == n) return n;
    for (size_t k = l_pos; k < n; k++)
        if (!is_ws(text[k])) return n;
    return l_pos;
}

/* After a block/comment end: `-X}` eats all whitespace, plain eats one "\n" (trim_blocks). */
static void after_end(lx *L, char sign, bool trim) {
    if (sign == '-') {
        while (L->i < L->n && is_ws(L->s[L->i])) { if (L->s[L->i] == '\n') L->line++; L->i++; }
    } else if (sign != '+' && trim && L->i < L->n && L->s[L->i] == '\n') {
        L->i++;
        L->line++;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Python "unicode-escape" decoding of a string literal body. */
static char *decode_string(const char *s, size_t n, size_t *outlen) {
    sb b;
    sb_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= n) { sb_putc(&b, c); continue; }
        char e = s[++i];
        switch (e) {
        case '\n': break;
        case '\\': sb_putc(&b, '\\'); break;
        case '\'': sb_putc(&b, '\''); break;
        case '"': sb_putc(&b, '"'); break;
        case 'a': sb_putc(&b, '\a'); break;
        case 'b': sb_putc(&b, '\b'); break;
        case 'f': sb_putc(&b, '\f'); break;
        case 'n': sb_putc(&b, '\n'); break;
        case 'r': sb_putc(&b, '\r'); break;
        case 't': sb_putc(&b, '\t'); break;
        case 'v': sb_putc(&b, '\v'); break;
        case 'x': case 'u': case 'U': {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t v = 0;
            int k;
            for (k = 0; k < digits && i + 1 + k < n && hexval(s[i + 1 + k]) >= 0; k++) v = v * 16 + (uint32_t)hexval(s[i + 1 + k]);
            if (k != digits || v > 0x10FFFF) { sb_free(&b); return NULL; }
            i += (size_t)digits;
            sb_put_cp(&b, v);
            break;
        }
        default:
            if (e >= '0' && e <= '7') {
                uint32_t v = 0;
                int k = 0;
                while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') { v = v * 8 + (uint32_t)(s[i] - '0'); i++; k++; }
                i--;
                sb_put_cp(&b, v);
            } else {
                sb_putc(&b, '\\');
                sb_putc(&b, e);
            }
        }
    }
    if (sb_failed(&b)) { sb_free(&b); return NULL; }
    if (!b.p) { b.p = calloc(1, 1); if (!b.p) return NULL; }
    *outlen = b.n;
    return b.p;
}

static const struct { const char *s; int op; } ops[] = {
    {"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GTEQ}, {"<=", OP_LTEQ},
    {"+", OP_ADD}, {"-", OP_SUB}, {"/", OP_DIV}, {"*", OP_MUL}, {"%", OP_MOD}, {"~", OP_TILDE},
    {"[", OP_LBRACKET}, {"]", OP_RBRACKET}, {"(", OP_LPAREN}, {")", OP_RPAREN}, {"{", OP_LBRACE},
    {"}", OP_RBRACE}, {">", OP_GT}, {"<", OP_LT}, {"=", OP_ASSIGN}, {".", OP_DOT}, {":", OP_COLON},
    {"|", OP_PIPE}, {",", OP_COMMA}, {";", OP_SEMICOLON},
};

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (unsigned char)c >= 0x80; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

/* digits with optional single underscores between: (\d+_)*\d+ ; returns end or st if none */
static size_t scan_digits(const char *s, size_t n, size_t st) {
    size_t i = st;
    if (i >= n || !is_digit(s[i])) return st;
    for (;;) {
        while (i < n && is_digit(s[i])) i++;
        if (i + 1 < n && s[i] == '_' && is_digit(s[i + 1])) { i++; continue; }
        return i;
    }
}

/* Lexes the inside of a {{ }} or {% %} tag up to and including its end. */
static lmx_status lex_tag(lx *L, bool is_var, int open_line) {
    int depth = 0;
    const char *S = L->s;
    for (;;) {
        while (L->i < L->n && is_ws(S[L->i])) { if (S[L->i] == '\n') L->line++; L->i++; }
        if (L->i >= L->n)
            return lmx_error(LMX_ERR_TEMPLATE, "line %d: unexpected end of template, expected end of %s tag", open_line, is_var ? "print" : "statement");
        size_t i = L->i, rem = L->n - i;
        if (depth == 0) {
            char sign = 0;
            size_t k = i;
            if ((S[k] == '-' || S[k] == '+') && rem >= 3) { sign = S[k]; k++; }
            if (k + 1 < L->n && S[k] == (is_var ? '}' : '%') && S[k + 1] == '}' && !(is_var && sign == '+')) {
                L->i = k + 2;
                tk t = {.kind = is_var ? TK_VAR_END : TK_BLOCK_END, .line = L->line};
                if (!push(L, t)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "template tokens");
                if (sign == '-') after_end(L, '-', true);
                else if (!is_var) after_end(L, sign, true);
                return LMX_OK;
            }
        }
        tk t = {.line = L->line};
        char c = S[i];
        /* float / integer */
        if (is_digit(c)) {
            size_t e = scan_digits(S, L->n, i), fe = e;
            bool is_float = false;
            bool after_dot = i > 0 && S[i - 1] == '.';
            if (fe < L->n && S[fe] == '.' && scan_digits(S, L->n, fe + 1) > fe + 1) { fe = scan_digits(S, L->n, fe + 1); is_float = true; }
            if (fe < L->n && (S[fe] == 'e' || S[fe] == 'E')) {
                size_t x = fe + 1;
                if (x < L->n && (S[x] == '+' || S[x] == '-')) x++;
                size_t xe = scan_digits(S, L->n, x);
                if (xe > x) { fe = xe; is_float = true; }
            }
            if (!is_float || after_dot) { fe = e; is_float = false; }
            char buf[128];
            size_t bl = 0;
            for (size_t q = i; q < fe && bl < sizeof buf - 1; q++)
                if (S[q] != '_') buf[bl++] = S[q];
            buf[bl] = '\0';
            if (is_float) { t.kind = TK_FLOAT; t.f = strtod(buf, NULL); }
            else {
                t.kind = TK_INT;
                if (bl >= sizeof buf - 1) return lmx_error(LMX_ERR_TEMPLATE, "line %d: integer literal too long", L->line);
                if (!jv_i128_parse(buf, bl, &t.i)) { /* beyond 128 bits: kept as text (jv_int_text) */
                    t.text = strdup(buf);
                    if (!t.text) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "template tokens");
                    t.len = bl;
                }
            }
            L->i = fe;
        } else if (is_name_start(c)) {
            size_t e = i;
            while (e < L->n && is_name_char(S[e])) e++;
            t.kind = TK_NAME;
            t.len = e - i;
            t.text = malloc(t.len + 1);
            if (!t.text) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "template tokens");
            memcpy(t.text, S + i, t.len);
            t.text[t.len] = '\0';
            L->i = e;
        } else if (c == '\'' || c == '"') {
            size_t e = i + 1;
            while (e < L->n && S[e] != c) {
                if (S[e] == '\\' && e + 1 < L->n) e++;
                e++;
            }
            if (e >= L->n) return lmx_error(LMX_ERR_TEMPLATE, "line %d: unterminated string", L->line);
            t.kind = TK_STRING;
            t.text = decode_string(S + i + 1, e - i - 1, &t.len);
            if (!t.text) return lmx_error(LMX_ERR_TEMPLATE, "line %d: invalid escape in string", L->line);
            L->line += count_nl(S + i, e - i);
            L->i = e + 1;
        } else {
            int op = 0;
            size_t ol = 0;
            for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
                size_t l = strlen(ops[k].s);
                if (l <= rem && !memcmp(S + i, ops[k].s, l)) { op = ops[k].op; ol = l; break; }
            }
            if (!op) return lmx_error(LMX_ERR_TEMPLATE, "line %d: unexpected char '%c'", L->line, c);
            if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) depth++;
            if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
                if (depth == 0) return lmx_error(LMX_ERR_TEMPLATE, "line %d: unexpected '%c'", L->line, c);
                depth--;
            }
            t.kind = TK_OP;
            t.op = op;
            L->i = i + ol;
        }
        if (!push(L, t)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "template tokens");
    }
}

/* {% raw %} at i? returns end index of the opening tag (after whitespace control) or 0. */
static size_t match_raw_begin(const char *S, size_t n, size_t i, char *sign) {
    size_t k = i + 2;
    *sign = 0;
    if (k < n && (S[k] == '-' || S[k] == '+')) *sign = S[k++];
    while (k < n && is_ws(S[k])) k++;
    if (k + 3 > n || memcmp(S + k, "raw", 3)) return 0;
    k += 3;
    while (k < n && is_ws(S[k])) k++;
    if (k + 3 <= n && !memcmp(S + k, "-%}", 3)) {
        k += 3;
        while (k < n && is_ws(S[k])) k++;
        return k;
    }
    if (k + 2 <= n && !memcmp(S + k, "%}", 2)) return k + 2;
    return 0;
}

lmx_status jinja_lex(const char *src, size_t len, tk_vec *out) {
    memset(out, 0, sizeof *out);
    /* normalise newlines, drop one trailing newline */
    char *s = malloc(len + 1);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "template source");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else s[n++] = src[i];
    }
    if (n > 0 && s[n - 1] == '\n') n--;
    s[n] = '\0';
    lx L = {.s = s, .n = n, .i = 0, .line = 1, .out = out};
    lmx_status st = LMX_OK;
    while (L.i < n) {
        size_t start = L.i, p = L.i;
        int kind = 0; /* 1 var, 2 block, 3 comment */
        while (p + 1 < n) {
            if (s[p] == '{' && (s[p + 1] == '{' || s[p + 1] == '%' || s[p + 1] == '#')) {
                kind = s[p + 1] == '{' ? 1 : s[p + 1] == '%' ? 2 : 3;
                break;
            }
            p++;
        }
        if (!kind) {
            if (!emit_text(&L, s + start, n - start, L.line)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template"); goto done; }
            break;
        }
        bool line_starting = start == 0 || s[start - 1] == '\n';
        char rsign = 0;
        size_t raw_end = kind == 2 ? match_raw_begin(s, n, p, &rsign) : 0;
        char sign = 0;
        if (raw_end) sign = rsign;
        else if (p + 2 < n && (s[p + 2] == '-' || s[p + 2] == '+')) sign = s[p + 2];
        size_t keep = strip_text(s + start, p - start, sign, kind == 1, line_starting);
        int text_line = L.line;
        if (!emit_text(&L, s + start, keep, text_line)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template"); goto done; }
        L.line += count_nl(s + start, p - start);
        int open_line = L.line;
        if (raw_end) {
            /* find {%(-|+|)\s*endraw\s*(+%}|-%}\s*|%}\n?) */
            L.line += count_nl(s + p, raw_end - p);
            size_t q = raw_end;
            for (;;) {
                while (q + 1 < n && !(s[q] == '{' && s[q + 1] == '%')) q++;
                if (q + 1 >= n) { st = lmx_error(LMX_ERR_TEMPLATE, "line %d: missing end of raw directive", open_line); goto done; }
                size_t k = q + 2;
                char es = 0;
                if (k < n && (s[k] == '-' || s[k] == '+')) es = s[k++];
                while (k < n && is_ws(s[k])) k++;
                if (k + 6 <= n && !memcmp(s + k, "endraw", 6)) {
                    k += 6;
                    while (k < n && is_ws(s[k])) k++;
                    char cs = 0;
                    if (k < n && (s[k] == '-' || s[k] == '+')) cs = s[k++];
                    if (k + 2 <= n && s[k] == '%' && s[k + 1] == '}') {
                        bool ls = raw_end > 0 && s[raw_end - 1] == '\n';
                        size_t kp = strip_text(s + raw_end, q - raw_end, es, false, ls);
                        if (!emit_text(&L, s + raw_end, kp, L.line)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template"); goto done; }
                        L.line += count_nl(s + raw_end, k + 2 - raw_end);
                        L.i = k + 2;
                        after_end(&L, cs, true);
                        break;
                    }
                }
                q += 2;
            }
            continue;
        }
        L.i = p + 2 + (sign ? 1 : 0);
        if (kind == 3) {
            size_t q = L.i;
            for (;;) {
                if (q + 1 >= n) { st = lmx_error(LMX_ERR_TEMPLATE, "line %d: missing end of comment tag", open_line); goto done; }
                if (q + 2 < n && (s[q] == '-' || s[q] == '+') && s[q + 1] == '#' && s[q + 2] == '}') {
                    L.line += count_nl(s + L.i, q - L.i);
                    L.i = q + 3;
                    after_end(&L, s[q], true);
                    break;
                }
                if (s[q] == '#' && s[q + 1] == '}') {
                    L.line += count_nl(s + L.i, q - L.i);
                    L.i = q + 2;
                    after_end(&L, 0, true);
                    break;
                }
                q++;
            }
            continue;
        }
        tk t = {.kind = kind == 1 ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, .line = open_line};
        if (!push(&L, t)) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template"); goto done; }
        st = lex_tag(&L, kind == 1, open_line);
        if (st != LMX_OK) goto done;
    }
    {
        tk t = {.kind = TK_EOF, .line = L.line};
        if (!push(&L, t)) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "template");
    }
done:
    free(s);
    if (st != LMX_OK) jinja_tokens_free(out);
    return st;
}

void jinja_tokens_free(tk_vec *t) {
    for (size_t i = 0; i < t->n; i++) free(t->v[i].text);
    free(t->v);
    memset(t, 0, sizeof *t);
}
