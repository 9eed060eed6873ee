/* json_scan.c — a small, allocation-free JSON scanner for the two large parts of tokenizer.json
 * (model.vocab and model.merges: up to ~800k entries). Building a cJSON tree for them costs more
 * than the 0.5 s load budget, so the loader locates their spans with tok_json_model_spans(), lets
 * cJSON parse the rest with the spans blanked out, and reads the spans with the iterators below. */
#include "tokenizer/json_scan.h"

#include <stdlib.h>
#include <string.h>

static const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

/* p at '"': returns the pointer after the closing quote, NULL on error. */
static const char *skip_string(const char *p, const char *e) {
    p++;
    while (p < e) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q) return NULL;
        /* count backslashes before the quote */
        const char *b = q;
        while (b > p && b[-1] == '\\') b--;
        if (((q - b) & 1) == 0) return q + 1;
        p = q + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *e, int depth) {
    p = ws(p, e);
    if (p >= e || depth > 512) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1, e);
        if (p < e && *p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                p = ws(p, e);
                if (p >= e || *p != '"' || !(p = skip_string(p, e))) return NULL;
                p = ws(p, e);
                if (p >= e || *p != ':') return NULL;
                p++;
            }
            if (!(p = skip_value(p, e, depth + 1))) return NULL;
            p = ws(p, e);
            if (p >= e) return NULL;
            if (*p == ',') { p++; continue; }
            if (*p == close) return p + 1;
            return NULL;
        }
    }
    /* number / true / false / null */
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') p++;
    return p;
}

static int hexv(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes the string at p ('"') into out (cleared); returns the pointer after it, NULL on error. */
static const char *read_string(const char *p, const char *e, tok_buf *out) {
    out->n = 0;
    p++;
    for (;;) {
        const char *q = p;
        while (q < e && *q != '"' && *q != '\\') q++;
        if (q >= e) return NULL;
        if (!tok_buf_append(out, p, (size_t)(q - p))) return NULL;
        if (*q == '"') return q + 1;
        q++;
        if (q >= e) return NULL;
        char c = *q++, r;
        switch (c) {
        case 'n': r = '\n'; break;
        case 't': r = '\t'; break;
        case 'r': r = '\r'; break;
        case 'b': r = '\b'; break;
        case 'f': r = '\f'; break;
        case 'u': {
            if (e - q < 4) return NULL;
            int v = 0;
            for (int k = 0; k < 4; k++) {
                int h = hexv(q[k]);
                if (h < 0) return NULL;
                v = v * 16 + h;
            }
            q += 4;
            uint32_t cp = (uint32_t)v;
            if (cp >= 0xD800 && cp < 0xDC00 && e - q >= 6 && q[0] == '\\' && q[1] == 'u') {
                int lo = 0;
                for (int k = 0; k < 4; k++) {
                    int h = hexv(q[2 + k]);
                    if (h < 0) return NULL;
                    lo = lo * 16 + h;
                }
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (uint32_t)(lo - 0xDC00);
                    q += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD; /* lone surrogate */
            char u[4];
            int k = tok_utf8_encode(cp, u);
            if (!tok_buf_append(out, u, (size_t)k)) return NULL;
            p = q;
            continue;
        }
        default: r = c; break; /* \" \\ \/ */
        }
        if (!tok_buf_putc(out, r)) return NULL;
        p = q;
    }
}

bool tok_json_model_spans(const char *s, size_t n, tok_jspan *vocab, tok_jspan *merges) {
    const char *e = s + n, *p = ws(s, e);
    memset(vocab, 0, sizeof *vocab);
    memset(merges, 0, sizeof *merges);
    if (p >= e || *p != '{') return false;
    p++;
    tok_buf key = {0};
    bool found = false;
    for (;;) {
        p = ws(p, e);
        if (p < e && *p == '}') break;
        if (p >= e || *p != '"' || !(p = read_string(p, e, &key))) break;
        p = ws(p, e);
        if (p >= e || *p != ':') break;
        p = ws(p + 1, e);
        if (key.n == 5 && !memcmp(key.p, "model", 5) && p < e && *p == '{') {
            /* a repeated "model": the last one counts (as in Python's json and lmx_json_parse), all of it */
            memset(vocab, 0, sizeof *vocab);
            memset(merges, 0, sizeof *merges);
            p++;
            for (;;) {
                p = ws(p, e);
                if (p < e && *p == '}') { p++; break; }
                if (p >= e || *p != '"' || !(p = read_string(p, e, &key))) goto done;
                p = ws(p, e);
                if (p >= e || *p != ':') goto done;
                p = ws(p + 1, e);
                const char *v0 = p;
                if (!(p = skip_value(p, e, 0))) goto done;
                if (key.n == 5 && !memcmp(key.p, "vocab", 5)) { vocab->off = (size_t)(v0 - s); vocab->len = (size_t)(p - v0); }
                if (key.n == 6 && !memcmp(key.p, "merges", 6)) { merges->off = (size_t)(v0 - s); merges->len = (size_t)(p - v0); }
                p = ws(p, e);
                if (p < e && *p == ',') p++;
            }
            found = vocab->len > 0;
        } else if (!(p = skip_value(p, e, 0))) break;
        p = ws(p, e);
        if (p < e && *p == ',') { p++; continue; }
        if (p < e && *p == '}') break;
        break;
    }
done:
    tok_buf_free(&key);
    return found;
}

void tok_jiter_init(tok_jiter *it, const char *s, size_t n) {
    memset(it, 0, sizeof *it);
    it->p = s;
    it->e = s + n;
    it->p = ws(it->p, it->e);
    if (it->p < it->e && (*it->p == '{' || *it->p == '[')) it->p++;
    else it->err = true;
}

void tok_jiter_free(tok_jiter *it) {
    tok_buf_free(&it->a);
    tok_buf_free(&it->b);
}

/* After an entry: skip ',' or detect the closing bracket. Returns 1 to continue, 0 at the end. */
static int after_entry(tok_jiter *it, char close) {
    it->p = ws(it->p, it->e);
    if (it->p < it->e && *it->p == ',') { it->p++; return 1; }
    if (it->p < it->e && *it->p == close) { it->p++; it->done = true; return 1; }
    it->err = true;
    return -1;
}

int tok_jiter_vocab_next(tok_jiter *it, double *num) {
    if (it->err) return -1;
    if (it->done) return 0;
    it->p = ws(it->p, it->e);
    if (it->p < it->e && *it->p == '}') { it->done = true; return 0; }
    if (it->p >= it->e || *it->p != '"' || !(it->p = read_string(it->p, it->e, &it->a))) { it->err = true; return -1; }
    it->p = ws(it->p, it->e);
    if (it->p >= it->e || *it->p != ':') { it->err = true; return -1; }
    it->p = ws(it->p + 1, it->e);
    char *end;
    *num = strtod(it->p, &end);
    if (end == it->p || end > it->e) { it->err = true; return -1; }
    it->p = end;
    if (after_entry(it, '}') < 0) return -1;
    return 1;
}

int tok_jiter_merge_next(tok_jiter *it, bool *pair) {
    if (it->err) return -1;
    if (it->done) return 0;
    it->p = ws(it->p, it->e);
    if (it->p < it->e && *it->p == ']') { it->done = true; return 0; }
    if (it->p < it->e && *it->p == '"') {
        if (!(it->p = read_string(it->p, it->e, &it->a))) { it->err = true; return -1; }
        *pair = false;
    } else if (it->p < it->e && *it->p == '[') {
        it->p = ws(it->p + 1, it->e);
        if (it->p >= it->e || *it->p != '"' || !(it->p = read_string(it->p, it->e, &it->a))) { it->err = true; return -1; }
        it->p = ws(it->p, it->e);
        if (it->p >= it->e || *it->p != ',') { it->err = true; return -1; }
        it->p = ws(it->p + 1, it->e);
        if (it->p >= it->e || *it->p != '"' || !(it->p = read_string(it->p, it->e, &it->b))) { it->err = true; return -1; }
        it->p = ws(it->p, it->e);
        if (it->p >= it->e || *it->p != ']') { it->err = true; return -1; }
        it->p++;
        *pair = true;
    } else { it->err = true; return -1; }
    if (after_entry(it, ']') < 0) return -1;
    return 1;
}
