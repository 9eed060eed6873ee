/* utf8.c — UTF-8 validation, decoding and Rust-compatible lossy conversion. */
#include "tokenizer/tok_internal.h"

/* Length of the valid prefix of the sequence at s (0 < return <= need when valid so far), following
 * the Unicode "maximal subpart" rule. Returns the number of bytes that form a valid (possibly
 * incomplete) prefix: need = full length of the sequence; *need_out receives it (0 = bad lead). */
static size_t seq_prefix(const unsigned char *s, size_t len, size_t *need_out) {
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) { *need_out = 1; return 1; }
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *need_out = 0;
        return 1;
    }
    *need_out = need;
    size_t i = 1;
    if (i < len) {
        if (s[1] < lo || s[1] > hi) return 1;
        i = 2;
        while (i < need && i < len) {
            if (s[i] < 0x80 || s[i] > 0xBF) return i;
            i++;
        }
    }
    return i;
}

size_t tok_utf8_validate(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) { i++; continue; }
        size_t need, got = seq_prefix(s + i, len - i, &need);
        if (need == 0 || got < need) return i;
        i += need;
    }
    return len;
}

uint32_t tok_utf8_decode(const char *str, size_t len, int *adv) {
    const unsigned char *s = (const unsigned char *)str;
    uint32_t c = s[0];
    int n = tok_utf8_len(s[0]);
    if ((size_t)n > len) n = 1;
    if (n == 1) { *adv = 1; return c; }
    if (n == 2) c = ((c & 0x1F) << 6) | (s[1] & 0x3F);
    else if (n == 3) c = ((c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    else c = ((c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    *adv = n;
    return c;
}

int tok_utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tok_utf8_lossy_append(tok_buf *out, const unsigned char *s, size_t len, bool hold_tail) {
    static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t i = 0, run = 0; /* run: start of the pending valid run */
    while (i < len) {
        if (s[i] < 0x80) { i++; continue; }
        size_t need, got = seq_prefix(s + i, len - i, &need);
        if (need && got == need) { i += need; continue; }
        /* flush valid run */
        if (!tok_buf_append(out, (const char *)s + run, i - run)) return (size_t)-1;
        if (need && got == len - i && hold_tail) return i; /* incomplete at the end: wait */
        if (!tok_buf_append(out, repl, 3)) return (size_t)-1;
        i += got;
        run = i;
    }
    if (!tok_buf_append(out, (const char *)s + run, len - run)) return (size_t)-1;
    return len;
}

bool tok_is_whitespace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}
