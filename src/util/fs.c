/* fs.c — file helpers. */
#include "util/fs.h"
#include "util/error.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *lmx_fs_kind_name(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symlink";
    return "not a regular file";
}

const char *lmx_fs_describe(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return lmx_fs_kind_name(st.st_mode);
    int e = errno;
    if (e == ELOOP) return "a symlink loop";
    if (e == ENOENT && lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) return "a dangling symlink";
    if (e == ENOENT || e == ENOTDIR) return "missing";
    return "unreadable";
}

lmx_status lmx_fs_open_regular(const char *path, int *fd_out) {
    *fd_out = -1;
    /* O_NONBLOCK: opening a FIFO without a writer (or a tty) must not hang; cleared below */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) return lmx_error(LMX_ERR_IO, "%s: is a symlink loop", path);
        if (e == ENOENT && strcmp(lmx_fs_describe(path), "a dangling symlink") == 0)
            return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: is a dangling symlink", path);
        return lmx_error(e == ENOENT || e == ENOTDIR ? LMX_ERR_MODEL_NOT_FOUND : LMX_ERR_IO, "%s: %s", path,
                         lmx_errno_str(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lmx_error(LMX_ERR_IO, "%s: %s", path, lmx_errno_str(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lmx_error(LMX_ERR_IO, "%s: is %s, not a regular file", path, lmx_fs_kind_name(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *fd_out = fd;
    return LMX_OK;
}

lmx_status lmx_fs_read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    int fd;
    lmx_status s = lmx_fs_open_regular(path, &fd);
    if (s != LMX_OK) return s;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return lmx_error(LMX_ERR_IO, "%s: %s", path, lmx_errno_str(errno));
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        close(fd);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %lld bytes is larger than the %zu-byte limit for this file",
                         path, (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    int e = errno;
    close(fd);
    if (got != n) {
        free(buf);
        return lmx_error(LMX_ERR_IO, "%s: short read (%zu of %zu bytes)%s%s", path, got, n, got < n ? ": " : "",
                         got < n ? lmx_errno_str(e) : "");
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return LMX_OK;
}

char *lmx_fs_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    while (a > 1 && dir[a - 1] == '/') a--;
    char *p = malloc(a + 1 + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

bool lmx_fs_safe_relative(const char *f) {
    if (!f || !f[0] || f[0] == '/') return false;
    for (const char *p = f; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) return false;
    for (const char *p = f;;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 0) return false;                                       /* "a//b", "a/" */
        if (len == 1 && p[0] == '.') return false;                        /* "." */
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;         /* ".." */
        if (!q) break;
        p = q + 1;
    }
    return true;
}

bool lmx_fs_inside(const char *dir, const char *path) {
    char *d = realpath(dir, NULL), *p = d ? realpath(path, NULL) : NULL;
    bool in = false;
    if (d && p) {
        size_t dl = strlen(d);
        if (dl == 1 && d[0] == '/') in = p[0] == '/' && p[1] != '\0';
        else in = strncmp(p, d, dl) == 0 && p[dl] == '/' && p[dl + 1] != '\0';
    }
    free(d);
    free(p);
    return in;
}

bool lmx_fs_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

bool lmx_fs_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool lmx_fs_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
