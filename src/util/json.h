/* json.h — thread-safe JSON parsing. cJSON 1.7.15 records parse errors in a process-global
 * variable, so concurrent cJSON_Parse calls race; every parse in lmx goes through here, which
 * serialises the parse itself (the returned trees are independent and need no lock).
 * Ownership: the caller frees the result with cJSON_Delete. */
#ifndef LMX_UTIL_JSON_H
#define LMX_UTIL_JSON_H

#include <stddef.h>
#include <cjson/cJSON.h>

/* Parses `len` bytes at `s` (need not be NUL-terminated; trailing bytes after the value are left
 * for the caller to judge). Returns NULL on malformed JSON. When `end` is non-NULL it receives,
 * on success, the first byte after the parsed value and, on failure, where the parse stopped. */
cJSON *lmx_json_parse(const char *s, size_t len, const char **end);

#endif
