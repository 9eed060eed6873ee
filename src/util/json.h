/* json.h — thread-safe JSON parsing. cJSON 1.7.15 records parse errors in a process-global
 * variable, so concurrent cJSON_Parse calls race; every parse in lmx goes through here, which
 * serialises the parse itself (the returned trees are independent and need no lock).
 * Duplicate keys: the LAST value of a repeated object key wins, as in Python's json (which
 * transformers and mlx-lm use): the earlier members are removed from the tree, so every lookup
 * (cJSON_GetObjectItem returns the first match) and every walk sees Python's object.
 * Ownership: the caller frees the result with cJSON_Delete. */
#ifndef LMX_UTIL_JSON_H
#define LMX_UTIL_JSON_H

#include <stddef.h>
#include <cjson/cJSON.h>

/* Parses `len` bytes at `s` (need not be NUL-terminated; trailing bytes after the value are left
 * for the caller to judge). Returns NULL on malformed JSON. When `end` is non-NULL it receives,
 * on success, the first byte after the parsed value and, on failure, where the parse stopped. */
cJSON *lmx_json_parse(const char *s, size_t len, const char **end);

/* lmx_json_parse without the duplicate-key step: for formats that must reject repeated keys
 * themselves (the safetensors header). */
cJSON *lmx_json_parse_keep_dups(const char *s, size_t len, const char **end);

/* Why s[0..len) failed to parse, for messages: "JSON nested deeper than the parser's limit of 1000
 * levels" or "not valid JSON (at line L, column C)" (stop = where lmx_json_parse stopped, may be
 * NULL). Writes into buf and returns it. */
const char *lmx_json_error(const char *s, size_t len, const char *stop, char *buf, size_t cap);

#endif
