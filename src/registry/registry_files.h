/* registry_files.h — the files of a model directory, as the registry records them (registry.c's add;
 * lmx_registry_verify in lmx.h checks them again). */
#ifndef LMX_REGISTRY_FILES_H
#define LMX_REGISTRY_FILES_H

#include "lmx.h"

/* Every regular, non-hidden file of dir that stays inside the model (a symlink out of it is skipped
 * with a warning), with its size and SHA-256, into e->files (sorted by name; appended to e->n_files). */
lmx_status lmx_registry_files_hash(const char *dir, lmx_registry_entry *e);

#endif
