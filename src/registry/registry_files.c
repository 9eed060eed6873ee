/* registry_files.c — the files of a model directory: which of them are the model's, their sizes and
 * SHA-256 at registration, and checking them again (lmx_registry_verify). */
#include "registry/registry_files.h"
#include "registry/registry.h"
#include "registry/sha256.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int name_cmp(const void *a, const void *b) {
    return strcmp(((const lmx_registry_file *)a)->name, ((const lmx_registry_file *)b)->name);
}

/* Whether a file of the model directory `dir` (possibly a symlink) stays inside the model: its
 * resolved path lies in `dir`, or, for a Hugging Face cache snapshot (`<repo>/snapshots/<rev>`, whose
 * files are symlinks into `<repo>/blobs`), in that repository folder. Anything else (a link to
 * /etc/shadow, to another model) is refused by add and verify. */
static bool model_file_inside(const char *dir, const char *path) {
    if (lmx_fs_inside(dir, path)) return true;
    char *d = realpath(dir, NULL);
    if (!d) return false;
    bool in = false;
    char *slash = strrchr(d, '/');
    if (slash && slash != d) {
        *slash = '\0'; /* d = <repo>/snapshots */
        char *snap = strrchr(d, '/');
        if (snap && snap != d && strcmp(snap + 1, "snapshots") == 0) {
            *snap = '\0'; /* d = <repo> */
            char blobs[PATH_MAX];
            if (snprintf(blobs, sizeof blobs, "%s/blobs", d) < (int)sizeof blobs)
                in = lmx_fs_inside(blobs, path);
        }
    }
    free(d);
    return in;
}

lmx_status lmx_registry_files_hash(const char *dir, lmx_registry_entry *e) {
    DIR *d = opendir(dir);
    if (!d) return lmx_error(LMX_ERR_IO, "%s: %s", dir, lmx_errno_str(errno));
    lmx_status st = LMX_OK;
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (!lmx_fs_safe_relative(de->d_name)) { /* control bytes: verify would refuse the name */
            LMX_LOG_W("registry: %s: a file name with control bytes; not recorded", dir);
            continue;
        }
        char *p = lmx_fs_join(dir, de->d_name);
        if (!p) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "registry: allocation failed");
            break;
        }
        if (!lmx_fs_is_file(p)) {
            free(p);
            continue;
        }
        if (!model_file_inside(dir, p)) { /* a symlink out of the model: verify would refuse it */
            LMX_LOG_W("registry: %s resolves outside %s; not recorded", p, dir);
            free(p);
            continue;
        }
        if (e->n_files == cap) {
            cap = cap ? cap * 2 : 16;
            lmx_registry_file *nf = realloc(e->files, (size_t)cap * sizeof *nf);
            if (!nf) {
                free(p);
                st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "registry: allocation failed");
                break;
            }
            e->files = nf;
        }
        lmx_registry_file *f = &e->files[e->n_files];
        memset(f, 0, sizeof *f);
        st = lmx_sha256_file(p, f->sha256, &f->size);
        free(p);
        if (st != LMX_OK) break;
        f->name = strdup(de->d_name);
        if (!f->name) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "registry: allocation failed");
            break;
        }
        e->n_files++;
    }
    closedir(d);
    if (st == LMX_OK && e->n_files > 1) qsort(e->files, (size_t)e->n_files, sizeof *e->files, name_cmp);
    return st;
}

/* Appends a printf-formatted line to a growing report. */
static void report_add(char **rep, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report_add(char **rep, size_t *len, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    char *nr = realloc(*rep, *len + (size_t)n + 2);
    if (!nr) return;
    memcpy(nr + *len, line, (size_t)n);
    nr[*len + (size_t)n] = '\n';
    nr[*len + (size_t)n + 1] = '\0';
    *len += (size_t)n + 1;
    *rep = nr;
}

LMX_API lmx_status lmx_registry_verify(const char *models_dir, const char *name, char **report) {
    if (report) *report = NULL;
    if (!name) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "registry verify: NULL name");
    lmx_registry_entry *e;
    lmx_status st = lmx_registry_lookup(models_dir, name, &e);
    if (st != LMX_OK) return st;
    char *rep = NULL;
    size_t len = 0;
    int bad = 0;
    const char *first_bad = NULL;
    for (int j = 0; j < e->n_files; j++) {
        const lmx_registry_file *f = &e->files[j];
        if (!lmx_fs_safe_relative(f->name) || strchr(f->name, '/')) {
            /* the registry records plain names of the directory's files; anything else (../x, /x,
             * a/b) is an edited registry trying to read outside the model */
            report_add(&rep, &len, "REFUSED %s: not a plain file name of the model directory; not read", f->name);
            if (!bad++) first_bad = f->name;
            continue;
        }
        char *p = lmx_fs_join(e->path, f->name);
        char *resolved = p ? realpath(p, NULL) : NULL;
        bool outside = resolved && !model_file_inside(e->path, p);
        free(resolved);
        if (outside) {
            report_add(&rep, &len, "REFUSED %s: resolves outside the model directory %s; not read", f->name, e->path);
            free(p);
            if (!bad++) first_bad = f->name;
            continue;
        }
        char hex[65];
        uint64_t size = 0;
        lmx_status hs = p ? lmx_sha256_file(p, hex, &size) : LMX_ERR_OUT_OF_MEMORY;
        free(p);
        if (hs == LMX_ERR_OUT_OF_MEMORY) {
            st = lmx_error(hs, "registry verify: allocation failed");
            break;
        }
        if (hs != LMX_OK) {
            report_add(&rep, &len, "MISSING %s (%s)", f->name, lmx_last_error_detail());
        } else if (size != f->size) {
            report_add(&rep, &len, "CHANGED %s: %llu bytes, registered %llu", f->name, (unsigned long long)size,
                       (unsigned long long)f->size);
        } else if (strcmp(hex, f->sha256) != 0) {
            report_add(&rep, &len, "CHANGED %s: sha256 %s, registered %s", f->name, hex, f->sha256);
        } else {
            report_add(&rep, &len, "OK %s", f->name);
            continue;
        }
        if (!bad++) first_bad = f->name;
    }
    if (st == LMX_OK && bad)
        st = lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "model %s: %d of %d files fail verification (first: %s)",
                       name, bad, e->n_files, first_bad);
    lmx_registry_entries_free(e, 1);
    if (report) *report = rep;
    else free(rep);
    return st;
}

