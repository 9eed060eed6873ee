/* json_str.h — JSON string literal encoding/decoding that keeps every byte (cJSON strings stop at
 * U+0000). Output is allocated with malloc (caller frees), NUL-terminated, with the length returned. */
#ifndef LMX_UTIL_JSON_STR_H
#define LMX_UTIL_JSON_STR_H

#include <stdbool.h>
#include <stddef.h>

/* Decodes the JSON string literal at s (leading whitespace allowed, then '"'). On success *out and *len
 * hold the value and *end (if non-NULL) points after the closing quote. \u escapes with surrogate
 * pairs are combined; a lone surrogate becomes U+FFFD. Returns false on a syntax error. */
bool lmx_json_str_decode(const char *s, size_t n, char **out, size_t *len, const char **end);

/* Encodes s[0..n) as a JSON string literal the way Python's json.dumps(ensure_ascii=False) does:
 * escapes '"', '\\', \n \r \t \b \f and other control characters as \u00XX; everything else raw. */
char *lmx_json_str_encode(const char *s, size_t n, size_t *len);

/* The length (1-4) of the well-formed UTF-8 sequence at s[0..n) (no overlongs, surrogates or code
 * points past U+10FFFF), or 0 when s does not start with one. */
size_t lmx_utf8_seq_len(const char *s, size_t n);

/* Whether s[0..n) is entirely well-formed UTF-8. */
bool lmx_utf8_valid(const char *s, size_t n);

#endif
