/* fs.h — small file-system helpers shared by loaders. All return lmx_status with a detail naming
 * the path on failure. */
#ifndef LMX_UTIL_FS_H
#define LMX_UTIL_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "lmx.h"

/* Reads a whole file into a malloc'd, NUL-terminated buffer (*out, caller frees; *len excludes the
 * NUL). Only regular files are read (see lmx_fs_open_regular). Files larger than max_bytes are
 * refused with LMX_ERR_INVALID_MODEL_FORMAT. */
lmx_status lmx_fs_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Opens path read-only if it is a regular file (symlinks followed). The open never blocks: a FIFO,
 * a device, a directory or a socket is refused with a detail that says what it is ("is a FIFO",
 * "is a directory", "is a symlink loop", ...). Missing → LMX_ERR_MODEL_NOT_FOUND, other
 * failures LMX_ERR_IO. On success *fd is a blocking descriptor (caller closes). */
lmx_status lmx_fs_open_regular(const char *path, int *fd);

/* What a stat mode is, for messages: "a directory", "a FIFO", "a character device", ... */
const char *lmx_fs_kind_name(mode_t mode);

/* What path is, for messages: "missing", "a regular file", "a directory", "a symlink loop",
 * "a dangling symlink", "a FIFO", ... (never NULL). */
const char *lmx_fs_describe(const char *path);

/* Joins dir and name with one '/' into a malloc'd string (NULL on allocation failure). */
char *lmx_fs_join(const char *dir, const char *name);

/* A file name read from a file (registry, index, tokenizer config) that may be joined to its
 * directory: non-empty, relative, no "." or ".." component, no empty component, no control
 * bytes. */
bool lmx_fs_safe_relative(const char *name);

/* Whether path, resolved (realpath), lies strictly inside dir, resolved: a descendant, never dir
 * itself. False when either cannot be resolved. */
bool lmx_fs_inside(const char *dir, const char *path);

/* Whether anything is at path (lstat: a dangling symlink counts): an optional file that exists
 * but is not a regular file must be reported, not skipped as absent. */
bool lmx_fs_exists(const char *path);
bool lmx_fs_is_dir(const char *path);
bool lmx_fs_is_file(const char *path);

#endif
