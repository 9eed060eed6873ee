/* registry.c — models directory, registry.json (atomic, locked), file checksums (see registry.h). */
#include "registry/registry.h"
#include "util/json.h"
#include "registry/registry_files.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_str.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REGISTRY_MAX_BYTES (64u << 20)

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static lmx_status out_of_memory(void) {
    return lmx_error(LMX_ERR_OUT_OF_MEMORY, "registry: allocation failed");
}

/* ---- paths ---- */
lmx_status lmx_registry_paths(const char *models_dir, char **dir_out, char **registry_out) {
    *dir_out = NULL;
    if (registry_out) *registry_out = NULL;
    char *dir = NULL;
    if (models_dir && *models_dir) {
        dir = strdup(models_dir);
    } else {
        const char *home = getenv("LMX_HOME");
        if (home && *home) {
            dir = lmx_fs_join(home, "models");
        } else {
            const char *h = getenv("HOME");
            if (!h || !*h) {
                struct passwd pw, *res = NULL;
                char buf[4096];
                if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res) h = res->pw_dir;
            }
            if (!h) return lmx_error(LMX_ERR_IO, "cannot find the home directory (set LMX_HOME)");
            dir = lmx_fs_join(h, ".cache/lmx/models");
        }
    }
    if (!dir) return out_of_memory();
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = '\0';
    if (registry_out) {
        /* parent of dir */
        char *slash = strrchr(dir, '/');
        char *parent = !slash ? strdup(".") : slash == dir ? strdup("/") : strndup(dir, (size_t)(slash - dir));
        char *reg = parent ? lmx_fs_join(parent, "registry.json") : NULL;
        free(parent);
        if (!reg) {
            free(dir);
            return out_of_memory();
        }
        *registry_out = reg;
    }
    *dir_out = dir;
    return LMX_OK;
}

static lmx_status mkdir_p(const char *path) {
    char *p = strdup(path);
    if (!p) return out_of_memory();
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            lmx_status st = lmx_error(LMX_ERR_IO, "%s: cannot create directory: %s", p, lmx_errno_str(errno));
            free(p);
            return st;
        }
        *s = '/';
    }
    lmx_status st = LMX_OK;
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        st = lmx_error(LMX_ERR_IO, "%s: cannot create directory: %s", p, lmx_errno_str(errno));
    free(p);
    return st;
}

/* ---- in-memory registry ---- */
typedef struct reg {
    lmx_registry_entry *e; /* [n] */
    int n, cap;
} reg;

static void entry_clear(lmx_registry_entry *e) {
    free(e->id);
    free(e->path);
    for (int j = 0; j < e->n_files; j++) free(e->files[j].name);
    free(e->files);
    memset(e, 0, sizeof *e);
}

LMX_API void lmx_registry_entries_free(lmx_registry_entry *entries, int n) {
    if (!entries) return;
    for (int i = 0; i < n; i++) entry_clear(&entries[i]);
    free(entries);
}

static void reg_free(reg *r) {
    lmx_registry_entries_free(r->e, r->n);
    memset(r, 0, sizeof *r);
}

static int reg_find(const reg *r, const char *id) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->e[i].id, id) == 0) return i;
    return -1;
}

/* added_at / last_used: seconds since the epoch; anything else (negative, not finite, past year
 * 5000) reads as 0, "never", so that printing it as a time_t is defined. */
static double timestamp(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    return d >= 0 && d < 95617584000.0 ? d : 0;
}

static lmx_status parse(const char *path, const char *text, reg *r) {
    const char *stop = NULL;
    cJSON *root = lmx_json_parse(text, strlen(text), &stop);
    if (!root) {
        char why[160];
        return lmx_error(LMX_ERR_IO, "%s: %s", path, lmx_json_error(text, strlen(text), stop, why, sizeof why));
    }
    lmx_status st = LMX_OK;
    cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (!cJSON_IsArray(models)) {
        st = lmx_error(LMX_ERR_IO, "%s: \"models\" is not an array", path);
        goto out;
    }
    int n = cJSON_GetArraySize(models);
    r->e = n ? calloc((size_t)n, sizeof *r->e) : NULL;
    if (n && !r->e) {
        st = out_of_memory();
        goto out;
    }
    r->cap = n;
    int i = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, models) {
        cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        cJSON *p = cJSON_GetObjectItemCaseSensitive(m, "path");
        cJSON *files = cJSON_GetObjectItemCaseSensitive(m, "files");
        if (!cJSON_IsString(id) || !cJSON_IsString(p)) {
            st = lmx_error(LMX_ERR_IO, "%s: models[%d] lacks a string id/path", path, i);
            goto out;
        }
        lmx_registry_entry *e = &r->e[r->n++];
        e->id = strdup(id->valuestring);
        e->path = strdup(p->valuestring);
        cJSON *a = cJSON_GetObjectItemCaseSensitive(m, "added_at");
        cJSON *u = cJSON_GetObjectItemCaseSensitive(m, "last_used");
        e->added_at = timestamp(a);
        e->last_used = timestamp(u);
        int nf = cJSON_IsArray(files) ? cJSON_GetArraySize(files) : 0;
        e->files = nf ? calloc((size_t)nf, sizeof *e->files) : NULL;
        if (!e->id || !e->path || (nf && !e->files)) {
            st = out_of_memory();
            goto out;
        }
        cJSON *f;
        cJSON_ArrayForEach(f, files) {
            cJSON *fn = cJSON_GetObjectItemCaseSensitive(f, "name");
            cJSON *fs = cJSON_GetObjectItemCaseSensitive(f, "size");
            cJSON *fh = cJSON_GetObjectItemCaseSensitive(f, "sha256");
            if (!cJSON_IsString(fn) || !cJSON_IsNumber(fs) || !cJSON_IsString(fh) || strlen(fh->valuestring) != 64) {
                st = lmx_error(LMX_ERR_IO, "%s: model %s: malformed file record %d", path, e->id, e->n_files);
                goto out;
            }
            /* a double outside [0, 2^53] or with a fraction is no byte count (and converting
             * one out of range to an integer is undefined behaviour) */
            double sz = fs->valuedouble;
            if (!(sz >= 0 && sz <= 9007199254740992.0) || sz != floor(sz)) {
                st = lmx_error(LMX_ERR_IO, "%s: model %s: file record %d (%s): size %g is not a byte count", path,
                               e->id, e->n_files, fn->valuestring, sz);
                goto out;
            }
            lmx_registry_file *rf = &e->files[e->n_files++];
            rf->name = strdup(fn->valuestring);
            if (!rf->name) {
                st = out_of_memory();
                goto out;
            }
            rf->size = (uint64_t)sz;
            memcpy(rf->sha256, fh->valuestring, 65);
        }
        i++;
    }
out:
    cJSON_Delete(root);
    if (st != LMX_OK) reg_free(r);
    return st;
}

lmx_status lmx_registry_parse_text(const char *label, const char *text, lmx_registry_entry **out, int *n) {
    reg r;
    memset(&r, 0, sizeof r);
    *out = NULL;
    *n = 0;
    lmx_status st = parse(label, text, &r);
    if (st == LMX_OK) {
        *out = r.e;
        *n = r.n;
    }
    return st;
}

/* Reads the registry (missing file = empty). */
static lmx_status reg_read(const char *path, reg *r) {
    memset(r, 0, sizeof *r);
    if (!lmx_fs_exists(path)) return LMX_OK; /* a FIFO or directory there is reported, not read as empty */
    char *text = NULL;
    lmx_status st = lmx_fs_read_file(path, REGISTRY_MAX_BYTES, &text, NULL);
    if (st != LMX_OK) return st;
    st = parse(path, text, r);
    free(text);
    return st;
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const lmx_registry_entry *)a)->id, ((const lmx_registry_entry *)b)->id);
}

static lmx_status reg_write(const char *path, reg *r) {
    if (r->n > 1) qsort(r->e, (size_t)r->n, sizeof *r->e, entry_cmp);
    cJSON *root = cJSON_CreateObject();
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    cJSON_AddNumberToObject(root, "version", 1);
    for (int i = 0; i < r->n && models; i++) {
        const lmx_registry_entry *e = &r->e[i];
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToArray(models, m);
        cJSON_AddStringToObject(m, "id", e->id);
        cJSON_AddStringToObject(m, "path", e->path);
        cJSON_AddNumberToObject(m, "added_at", e->added_at);
        cJSON_AddNumberToObject(m, "last_used", e->last_used);
        cJSON *files = cJSON_AddArrayToObject(m, "files");
        for (int j = 0; j < e->n_files; j++) {
            cJSON *f = cJSON_CreateObject();
            cJSON_AddItemToArray(files, f);
            cJSON_AddStringToObject(f, "name", e->files[j].name);
            cJSON_AddNumberToObject(f, "size", (double)e->files[j].size);
            cJSON_AddStringToObject(f, "sha256", e->files[j].sha256);
        }
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: cannot serialize", path);
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    lmx_status st = LMX_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = lmx_error(LMX_ERR_IO, "%s: %s", tmp, lmx_errno_str(errno));
        free(text);
        return st;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            st = lmx_error(LMX_ERR_IO, "%s: write failed: %s", tmp, lmx_errno_str(errno));
            break;
        }
        off += (size_t)w;
    }
    if (st == LMX_OK && (write(fd, "\n", 1) != 1 || fsync(fd) != 0))
        st = lmx_error(LMX_ERR_IO, "%s: write/fsync failed: %s", tmp, lmx_errno_str(errno));
    if (close(fd) != 0 && st == LMX_OK) st = lmx_error(LMX_ERR_IO, "%s: close failed: %s", tmp, lmx_errno_str(errno));
    free(text);
    if (st == LMX_OK && rename(tmp, path) != 0)
        st = lmx_error(LMX_ERR_IO, "rename %s → %s: %s", tmp, path, lmx_errno_str(errno));
    if (st != LMX_OK) {
        unlink(tmp);
        return st;
    }
    /* make the rename durable */
    char *slash = strrchr(path, '/');
    char *dir = slash ? (slash == path ? strdup("/") : strndup(path, (size_t)(slash - path))) : strdup(".");
    if (dir) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    return LMX_OK;
}

/* flock on <registry>.lock; returns the fd (>= 0) or an error. create=false and no lock file → -1
 * with LMX_OK (nothing to lock: no registry yet). */
static lmx_status lock_open(const char *registry, bool exclusive, int *fd_out) {
    *fd_out = -1;
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s.lock", registry);
    if (exclusive) {
        char *slash = strrchr(registry, '/');
        if (slash && slash != registry) {
            char *dir = strndup(registry, (size_t)(slash - registry));
            lmx_status st = dir ? mkdir_p(dir) : out_of_memory();
            free(dir);
            if (st != LMX_OK) return st;
        }
    }
    int fd = open(lock, exclusive ? (O_RDWR | O_CREAT | O_CLOEXEC) : (O_RDONLY | O_CLOEXEC), 0644);
    if (fd < 0) {
        if (!exclusive && errno == ENOENT) return LMX_OK;
        return lmx_error(LMX_ERR_IO, "%s: %s", lock, lmx_errno_str(errno));
    }
    while (flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0) {
        if (errno == EINTR) continue;
        lmx_status st = lmx_error(LMX_ERR_IO, "%s: flock: %s", lock, lmx_errno_str(errno));
        close(fd);
        return st;
    }
    *fd_out = fd;
    return LMX_OK;
}

static void lock_close(int fd) {
    if (fd >= 0) close(fd); /* closing releases the flock */
}

/* One change to a models directory's registry: its paths, the exclusive lock and the entries read
 * under it. edit_begin finds the paths (nothing to release when it fails), edit_lock takes the lock
 * and reads the entries, edit_end releases everything (unlocking) whatever happened before. */
typedef struct reg_edit {
    char *dir, *regp; /* the models directory, its registry.json */
    int fd;           /* the lock; -1 while not held */
    reg r;            /* the entries, read under the lock */
} reg_edit;

static lmx_status edit_begin(const char *models_dir, reg_edit *ed) {
    memset(ed, 0, sizeof *ed);
    ed->fd = -1;
    return lmx_registry_paths(models_dir, &ed->dir, &ed->regp);
}

static lmx_status edit_lock(reg_edit *ed) {
    lmx_status st = lock_open(ed->regp, true, &ed->fd);
    return st == LMX_OK ? reg_read(ed->regp, &ed->r) : st;
}

static void edit_end(reg_edit *ed) {
    lock_close(ed->fd);
    reg_free(&ed->r);
    free(ed->dir);
    free(ed->regp);
}

/* ---- public ---- */
LMX_API lmx_status lmx_registry_list(const char *models_dir, lmx_registry_entry **out, int *n) {
    if (!out || !n) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "registry list: NULL output");
    *out = NULL;
    *n = 0;
    char *dir, *regp;
    lmx_status st = lmx_registry_paths(models_dir, &dir, &regp);
    if (st != LMX_OK) return st;
    int fd;
    reg r;
    memset(&r, 0, sizeof r);
    if ((st = lock_open(regp, false, &fd)) == LMX_OK) {
        st = reg_read(regp, &r);
        lock_close(fd);
    }
    if (st == LMX_OK) {
        if (r.n > 1) qsort(r.e, (size_t)r.n, sizeof *r.e, entry_cmp);
        *out = r.e;
        *n = r.n;
    }
    free(dir);
    free(regp);
    return st;
}

lmx_status lmx_registry_lookup(const char *models_dir, const char *id, lmx_registry_entry **out) {
    *out = NULL;
    lmx_registry_entry *all;
    int n;
    lmx_status st = lmx_registry_list(models_dir, &all, &n);
    if (st != LMX_OK) return st;
    for (int i = 0; i < n; i++)
        if (strcmp(all[i].id, id) == 0) {
            lmx_registry_entry *one = malloc(sizeof *one);
            if (!one) break;
            *one = all[i];
            memset(&all[i], 0, sizeof all[i]);
            lmx_registry_entries_free(all, n);
            *out = one;
            return LMX_OK;
        }
    lmx_registry_entries_free(all, n);
    return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "model %s is not registered", id);
}

/* A model id: printable, no spaces or control bytes (a newline would forge a line of `lmx list`),
 * well-formed UTF-8, no "..", not absolute, not ending in '/'. */
bool lmx_registry_valid_name(const char *n) {
    if (!n || !*n || n[0] == '/' || strstr(n, "..") || strlen(n) > 512) return false;
    for (const char *p = n; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == 0x7f || *p == '\\') return false;
    return lmx_utf8_valid(n, strlen(n)) && n[strlen(n) - 1] != '/';
}

/* Default id: <org>/<name> when real is models_dir/<org>/<name>, else local/<basename>. */
static char *default_name(const char *models_real, const char *real) {
    size_t ml = models_real ? strlen(models_real) : 0;
    if (models_real && strncmp(real, models_real, ml) == 0 && real[ml] == '/') {
        const char *rest = real + ml + 1;
        const char *slash = strchr(rest, '/');
        if (slash && slash != rest && slash[1] && !strchr(slash + 1, '/')) return strdup(rest);
    }
    const char *base = strrchr(real, '/');
    base = base ? base + 1 : real;
    char *out = malloc(strlen(base) + 7);
    if (out) sprintf(out, "local/%s", base);
    return out;
}

LMX_API lmx_status lmx_registry_add(const char *models_dir, const char *path, const char *name) {
    if (!path) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "registry add: NULL path");
    if (name && !lmx_registry_valid_name(name))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "registry add: bad model name \"%s\" (want org/name)", name);
    if (!lmx_fs_is_dir(path)) return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: not a directory", path);
    {
        /* a model directory has a config.json (a regular file): refuses $HOME, a models tree's
         * parent, a typo'd path, ... whose removal would take other things with it */
        char *cfg = lmx_fs_join(path, "config.json");
        if (!cfg) return out_of_memory();
        const char *what = lmx_fs_describe(cfg);
        lmx_status cs = LMX_OK;
        if (strcmp(what, "a regular file") != 0)
            cs = lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: not a model directory: config.json is %s%s", path,
                           strcmp(what, "missing") == 0 ? "missing" : what,
                           strcmp(what, "missing") == 0 ? "" : ", not a regular file");
        free(cfg);
        if (cs != LMX_OK) return cs;
    }
    reg_edit ed;
    lmx_status st = edit_begin(models_dir, &ed);
    if (st != LMX_OK) return st;
    reg *r = &ed.r;
    char real[PATH_MAX];
    char *models_real = realpath(ed.dir, NULL);
    lmx_registry_entry e;
    memset(&e, 0, sizeof e);
    if (!realpath(path, real)) {
        st = lmx_error(LMX_ERR_IO, "%s: %s", path, lmx_errno_str(errno));
        goto out;
    }
    e.id = name ? strdup(name) : default_name(models_real, real);
    e.path = strdup(real);
    if (!e.id || !e.path) {
        st = out_of_memory();
        goto out;
    }
    if (!name && !lmx_registry_valid_name(e.id)) {
        st = lmx_error(LMX_ERR_INVALID_ARGUMENT,
                       "registry add: the default name from the directory \"%s\" is not a valid model name "
                       "(no spaces, control bytes, \"..\" or non-UTF-8 bytes); give one with --name org/name",
                       real);
        goto out;
    }
    e.added_at = wall_now();
    if ((st = lmx_registry_files_hash(real, &e)) != LMX_OK) goto out;
    if (e.n_files == 0) {
        st = lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: the directory has no files", real);
        goto out;
    }
    if ((st = edit_lock(&ed)) != LMX_OK) goto out;
    int i = reg_find(r, e.id);
    if (i >= 0) {
        entry_clear(&r->e[i]);
        r->e[i] = e;
    } else {
        if (r->n == r->cap) {
            int cap = r->cap ? r->cap * 2 : 8;
            lmx_registry_entry *ne = realloc(r->e, (size_t)cap * sizeof *ne);
            if (!ne) {
                st = out_of_memory();
                goto out;
            }
            r->e = ne;
            r->cap = cap;
        }
        r->e[r->n++] = e;
    }
    memset(&e, 0, sizeof e); /* owned by r now */
    st = reg_write(ed.regp, r);
    if (st == LMX_OK) LMX_LOG_I("registry: added %s", real);
out:
    edit_end(&ed);
    entry_clear(&e);
    free(models_real);
    return st;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Whether path (resolved when it exists) equals dir or lies inside it. */
static bool under(const char *dir_real, const char *path) {
    char *p = realpath(path, NULL);
    const char *q = p ? p : path;
    size_t dl = strlen(dir_real);
    bool in = strncmp(q, dir_real, dl) == 0 && (q[dl] == '/' || q[dl] == '\0' || (dl == 1 && dir_real[0] == '/'));
    free(p);
    return in;
}

/* Deleting a model's directory: only a strict descendant of the models directory, both resolved
 * (a registered "<models>/../x" or "<models>/." is refused, not deleted), and only when no other
 * registered model lives inside it (removing a parent would silently take them along: refused,
 * the registry left unchanged; --keep-files only unregisters). A directory registered from
 * outside the models directory is unregistered and its files are kept. */
LMX_API lmx_status lmx_registry_remove(const char *models_dir, const char *name, bool delete_files) {
    if (!name) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "registry remove: NULL name");
    reg_edit ed;
    lmx_status st = edit_begin(models_dir, &ed);
    if (st != LMX_OK) return st;
    reg *r = &ed.r;
    char *victim = NULL, *models_real = NULL;
    bool do_delete = false;
    if ((st = edit_lock(&ed)) != LMX_OK) goto out;
    int i = reg_find(r, name);
    if (i < 0) {
        st = lmx_error(LMX_ERR_MODEL_NOT_FOUND, "model %s is not registered", name);
        goto out;
    }
    const char *path = r->e[i].path;
    if (delete_files && lmx_fs_is_dir(path)) {
        models_real = realpath(ed.dir, NULL);
        size_t dl = strlen(ed.dir), ml = models_real ? strlen(models_real) : 0;
        bool claims_inside = (strncmp(path, ed.dir, dl) == 0 && (path[dl] == '/' || !path[dl])) ||
                             (models_real && strncmp(path, models_real, ml) == 0 && (path[ml] == '/' || !path[ml]));
        if (models_real && lmx_fs_inside(models_real, path)) {
            victim = realpath(path, NULL);
            if (!victim) {
                st = lmx_error(LMX_ERR_IO, "%s: %s", path, lmx_errno_str(errno));
                goto out;
            }
            for (int j = 0; j < r->n; j++) {
                if (j == i || !under(victim, r->e[j].path)) continue;
                st = lmx_error(LMX_ERR_INVALID_ARGUMENT,
                               "model %s: refusing to delete %s: model %s is registered inside it (at %s); remove "
                               "that first, or unregister only with --keep-files",
                               name, victim, r->e[j].id, r->e[j].path);
                goto out;
            }
            do_delete = true;
        } else if (claims_inside || (models_real && under(path, models_real))) {
            char *res = realpath(path, NULL);
            st = lmx_error(LMX_ERR_INVALID_ARGUMENT,
                           "model %s: refusing to delete %s: it resolves to %s, which is %s the models directory %s "
                           "(use --keep-files to only unregister it)",
                           name, path, res ? res : "?",
                           models_real && res && strcmp(res, models_real) == 0 ? "itself" :
                           models_real && under(path, models_real) ? "a parent of" : "outside",
                           models_real ? models_real : ed.dir);
            free(res);
            goto out;
        } else {
            LMX_LOG_W("registry: %s is outside %s; files kept", path, ed.dir);
        }
    }
    entry_clear(&r->e[i]);
    r->e[i] = r->e[--r->n];
    if ((st = reg_write(ed.regp, r)) != LMX_OK) goto out;
    if (do_delete && nftw(victim, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        st = lmx_error(LMX_ERR_IO, "%s: could not delete every file: %s", victim, lmx_errno_str(errno));
out:
    edit_end(&ed);
    free(victim);
    free(models_real);
    return st;
}

LMX_API lmx_status lmx_registry_resolve(const char *models_dir, const char *name_or_path, char **path) {
    if (!path || !name_or_path || !*name_or_path)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "registry resolve: NULL or empty name");
    *path = NULL;
    lmx_registry_entry *e;
    lmx_status st = lmx_registry_lookup(models_dir, name_or_path, &e);
    if (st == LMX_OK) {
        *path = e->path;
        e->path = NULL;
        lmx_registry_entries_free(e, 1);
        if (!lmx_fs_is_dir(*path)) {
            st = lmx_error(LMX_ERR_MODEL_NOT_FOUND, "model %s is registered at %s, which is not a directory",
                           name_or_path, *path);
            free(*path);
            *path = NULL;
        }
        return st;
    }
    lmx_status reg_st = st; /* a broken registry must not block loading a plain directory */
    char reg_detail[256] = "";
    if (st != LMX_ERR_MODEL_NOT_FOUND) {
        snprintf(reg_detail, sizeof reg_detail, "%s", lmx_last_error_detail());
        LMX_LOG_W("registry unreadable (%s); resolving %s as a directory", reg_detail, name_or_path);
    }
    char *dir = NULL;
    if ((st = lmx_registry_paths(models_dir, &dir, NULL)) != LMX_OK) return st;
    char *in_models = name_or_path[0] != '/' ? lmx_fs_join(dir, name_or_path) : NULL;
    const char *cands[2] = {in_models, name_or_path};
    for (int i = 0; i < 2; i++) {
        if (!cands[i] || !lmx_fs_is_dir(cands[i])) continue;
        *path = realpath(cands[i], NULL);
        if (*path) break;
    }
    free(in_models);
    if (*path) st = LMX_OK;
    else if (reg_st != LMX_ERR_MODEL_NOT_FOUND)
        st = lmx_error(reg_st, "model %s: not a directory, and the registry is unreadable: %s", name_or_path,
                       reg_detail);
    else
        st = lmx_error(LMX_ERR_MODEL_NOT_FOUND,
                       "model %s: not a registered name, not a directory in %s, not a directory path",
                       name_or_path, dir);
    free(dir);
    return st;
}

lmx_status lmx_registry_touch(const char *models_dir, const char *id) {
    reg_edit ed;
    lmx_status st = edit_begin(models_dir, &ed);
    if (st != LMX_OK) return st;
    if ((st = edit_lock(&ed)) == LMX_OK) {
        int i = reg_find(&ed.r, id);
        if (i >= 0) {
            ed.r.e[i].last_used = wall_now();
            st = reg_write(ed.regp, &ed.r);
        }
    }
    edit_end(&ed);
    return st;
}
