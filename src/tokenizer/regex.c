/* regex.c — PCRE2 (UTF + UCP + JIT) wrapper for the Oniguruma-style patterns in tokenizer.json.
 * \s and \S are rewritten to Oniguruma's Unicode whitespace set (the White_Space property), which
 * PCRE2's UCP \s does not match exactly (e.g. U+0085). Compiled code is read-only and shared; each
 * call supplies its own pcre2_match_data. */
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>

#define WS_SET "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static bool translate(const char *p, tok_buf *o) {
    bool in_class = false;
    size_t n = strlen(p);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            bool ok;
            if (d == 's') ok = in_class ? tok_buf_append(o, WS_SET, strlen(WS_SET))
                                        : tok_buf_append(o, "[" WS_SET "]", strlen(WS_SET) + 2);
            else if (d == 'S' && !in_class) ok = tok_buf_append(o, "[^" WS_SET "]", strlen(WS_SET) + 3);
            else ok = tok_buf_append(o, p + i, 2);
            if (!ok) return false;
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            if (!tok_buf_putc(o, c)) return false;
            /* a ']' right after '[' or '[^' is literal */
            if (i + 1 < n && p[i + 1] == '^') { if (!tok_buf_putc(o, '^')) return false; i++; }
            if (i + 1 < n && p[i + 1] == ']') { if (!tok_buf_putc(o, ']')) return false; i++; }
            continue;
        }
        if (in_class && c == ']') in_class = false;
        if (!tok_buf_putc(o, c)) return false;
    }
    return true;
}

lmx_status tok_regex_compile(tok_regex *re, const char *pattern, bool literal) {
    memset(re, 0, sizeof *re);
    tok_buf pat = {0};
    uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK;
    if (literal) {
        opts |= PCRE2_LITERAL;
        if (!tok_buf_append(&pat, pattern, strlen(pattern))) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "regex");
    } else {
        opts |= PCRE2_UCP;
        if (!translate(pattern, &pat)) { tok_buf_free(&pat); return lmx_error(LMX_ERR_OUT_OF_MEMORY, "regex"); }
    }
    if (tok_utf8_validate(pat.p ? pat.p : "", pat.n) != pat.n) {
        tok_buf_free(&pat);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "regex pattern is not valid UTF-8");
    }
    int err;
    PCRE2_SIZE off;
    re->code = pcre2_compile((PCRE2_SPTR)(pat.p ? pat.p : ""), pat.n, opts, &err, &off, NULL);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        lmx_status st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "regex /%s/ at offset %zu: %s", pattern, (size_t)off, (char *)msg);
        tok_buf_free(&pat);
        return st;
    }
    tok_buf_free(&pat);
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return LMX_OK;
}

void tok_regex_free(tok_regex *re) {
    if (re->code) pcre2_code_free(re->code);
    re->code = NULL;
}

int tok_regex_next(const tok_regex *re, pcre2_match_data *md, const char *s, size_t n, size_t start,
                   size_t *ms, size_t *me) {
    if (start > n) return 0;
    if (!md) {
        lmx_error(LMX_ERR_OUT_OF_MEMORY, "regex match data");
        return -1;
    }
    int rc = re->jit ? pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, start, 0, md, NULL) : PCRE2_ERROR_NOMATCH - 1;
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) /* no JIT, or a JIT limit: the interpreter uses the heap */
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        lmx_error(LMX_ERR_INVALID_ARGUMENT, "regex match failed at byte %zu: %s", start, (char *)msg);
        return -1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}
