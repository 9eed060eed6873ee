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
