/* fuzz_registry.c — libFuzzer target for the registry file reader (registry.json, as `lmx list`,
 * `rm`, `verify` and every load by name read it): lmx_registry_parse_text.
 *
 * On success every entry and file record is read (ASan sees any bad pointer) and the reader's
 * guarantees are checked: ids and paths are strings, sizes came from integers in [0, 2^53], each
 * sha256 is 64 characters, timestamps are finite and non-negative. The name checks that
 * guard rm/verify (lmx_fs_safe_relative, lmx_registry_valid_name) run on every string. */
#include "registry/registry.h"
#include "util/fs.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    lmx_registry_entry *e = NULL;
    int n = 0;
    if (lmx_registry_parse_text("fuzz/registry.json", text, &e, &n) == LMX_OK) {
        volatile size_t sink = 0;
        if (n < 0 || (n > 0 && !e)) abort();
        for (int i = 0; i < n; i++) {
            if (!e[i].id || !e[i].path || e[i].n_files < 0 || (e[i].n_files && !e[i].files)) abort();
            if (!isfinite(e[i].added_at) || !isfinite(e[i].last_used) || e[i].added_at < 0 || e[i].last_used < 0)
                abort();
            sink += strlen(e[i].id) + strlen(e[i].path) + lmx_registry_valid_name(e[i].id);
            for (int j = 0; j < e[i].n_files; j++) {
                const lmx_registry_file *f = &e[i].files[j];
                if (!f->name || strlen(f->sha256) != 64 || f->size > (1ull << 53)) abort();
                bool safe = lmx_fs_safe_relative(f->name);
                if (safe && (f->name[0] == '/' || strstr(f->name, "/../") || strncmp(f->name, "../", 3) == 0 ||
                             strcmp(f->name, "..") == 0))
                    abort(); /* a name the verifier would join must never climb out */
                sink += safe;
            }
        }
        (void)sink;
        lmx_registry_entries_free(e, n);
    }
    free(text);
    return 0;
}
