/* registry.h — internal side of the models directory and registry.json (the public functions
 * lmx_registry_* are declared in lmx.h and implemented in registry.c).
 *
 * Layout: models_dir = $LMX_HOME/models (LMX_HOME default ~/.cache/lmx) holding <org>/<name>/;
 * registry file = <parent of models_dir>/registry.json:
 *   {"version":1,"models":[{"id":"org/name","path":"/abs/dir","added_at":1.7e9,"last_used":0,
 *     "files":[{"name":"config.json","size":123,"sha256":"<64 hex>"}]}]}
 * Writes: read-modify-write under an exclusive flock on registry.json.lock (threads and
 * processes), new content written to registry.json.tmp.<pid>, fsync'd, renamed over the old file,
 * directory fsync'd. Readers take a shared lock. Hashing happens before the lock is taken.
 * Ownership: strings returned through char ** are malloc'd (free / lmx_free).
 */
#ifndef LMX_REGISTRY_REGISTRY_H
#define LMX_REGISTRY_REGISTRY_H

#include "lmx.h"

/* Resolves models_dir (NULL = default) and the registry file path (both malloc'd). */
lmx_status lmx_registry_paths(const char *models_dir, char **dir_out, char **registry_out);

/* One entry by id (free with lmx_registry_entries_free(e, 1)); unknown → MODEL_NOT_FOUND. */
lmx_status lmx_registry_lookup(const char *models_dir, const char *id, lmx_registry_entry **out);

/* Sets last_used = now for id (unknown id: LMX_OK, nothing written). */
lmx_status lmx_registry_touch(const char *models_dir, const char *id);

/* Parses registry.json text (NUL-terminated; label names it in errors) into entries (free with
 * lmx_registry_entries_free(*out, *n)). The file's own reader; exposed for the fuzz target. */
lmx_status lmx_registry_parse_text(const char *label, const char *text, lmx_registry_entry **out, int *n);

/* Whether name is acceptable as a model id (what lmx add enforces). */
bool lmx_registry_valid_name(const char *name);

#endif
