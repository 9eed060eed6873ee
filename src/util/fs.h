/* fs.h — small file-system helpers shared by loaders. All return lmx_status with a detail naming
 * the path on failure. */
#ifndef LMX_UTIL_FS_H
#define LMX_UTIL_FS_H

#include <stddef.h>
#include "lmx.h"

/* Reads a whole file into a malloc'd, NUL-terminated buffer (*out, caller frees; *len excludes the
 * NUL). Files larger than max_bytes are refused with LMX_ERR_INVALID_MODEL_FORMAT. */
lmx_status lmx_fs_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Joins dir and name with one '/' into a malloc'd string (NULL on allocation failure). */
char *lmx_fs_join(const char *dir, const char *name);

bool lmx_fs_is_dir(const char *path);
bool lmx_fs_is_file(const char *path);

#endif
