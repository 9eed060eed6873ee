/* json_str.c — JSON string literal encode/decode (see json_str.h). */
#include "util/json_str.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexv(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static size_t put_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool hex4(const char *p, const char *e, uint32_t *v) {
    if (e - p < 4) return false;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexv(p[k]);
        if (h < 0) return false;
        *v = *v * 16 + (uint32_t)h;
    }
    return true;
}

bool lmx_json_str_decode(const char *s, size_t n, char **out, size_t *len, const char **end) {
    const char *p = s, *e = s + n;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p >= e || *p != '"') return false;
    p++;
    char *o = malloc((size_t)(e - p) + 4);
    if (!o) return false;
    size_t k = 0;
    while (p < e && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) { free(o); return false; }
        if (c != '\\') { o[k++] = *p++; continue; }
        if (++p >= e) break;
        char x = *p++;
        switch (x) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (!hex4(p, e, &cp)) { free(o); return false; }
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && e - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, e, &lo) &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
            k += put_utf8(cp, o + k);
            break;
        }
        default: free(o); return false;
        }
    }
    if (p >= e) { free(o); return false; }
    o[k] = '\0';
    *out = o;
    *len = k;
    if (end) *end = p + 1;
    return true;
}

char *lmx_json_str_encode(const char *s, size_t n, size_t *len) {
    char *o = malloc(n * 6 + 3);
    if (!o) return NULL;
    size_t k = 0;
    o[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': o[k++] = '\\'; o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; o[k++] = '\\'; break;
        case '\n': o[k++] = '\\'; o[k++] = 'n'; break;
        case '\r': o[k++] = '\\'; o[k++] = 'r'; break;
        case '\t': o[k++] = '\\'; o[k++] = 't'; break;
        case '\b': o[k++] = '\\'; o[k++] = 'b'; break;
        case '\f': o[k++] = '\\'; o[k++] = 'f'; break;
        default:
            if (c < 0x20) k += (size_t)snprintf(o + k, 7, "\\u%04x", c);
            else o[k++] = (char)c;
        }
    }
    o[k++] = '"';
    o[k] = '\0';
    if (len) *len = k;
    return o;
}

size_t lmx_utf8_seq_len(const char *s, size_t n) {
    if (n == 0) return 0;
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) return 1;
    size_t need;
    uint32_t cp, min;
    if ((u[0] & 0xE0) == 0xC0) { need = 1; cp = u[0] & 0x1F; min = 0x80; }
    else if ((u[0] & 0xF0) == 0xE0) { need = 2; cp = u[0] & 0x0F; min = 0x800; }
    else if ((u[0] & 0xF8) == 0xF0) { need = 3; cp = u[0] & 0x07; min = 0x10000; }
    else return 0;
    if (n < need + 1) return 0;
    for (size_t k = 1; k <= need; k++) {
        if ((u[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (u[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need + 1;
}

bool lmx_utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = lmx_utf8_seq_len(s + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}
