/* convert_files.c — the non-weight files of a conversion (tokenizer, chat template, generation
 * config, …) copied as they are, and the removal of a half-written DST.partial. */
#include "convert/convert.h"
#include "util/error.h"
#include "util/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static bool skipped(const char *name) {
    static const char *const weights[] = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack",
                                          ".onnx", ".ckpt", ".partial"};
    for (size_t i = 0; i < sizeof weights / sizeof *weights; i++)
        if (ends_with(name, weights[i])) return true;
    return name[0] == '.' || !strcmp(name, "config.json") || ends_with(name, ".safetensors.index.json") ||
           ends_with(name, ".bin.index.json");
}

static lmx_status copy_file(const char *from, const char *to) {
    int in = -1;
    lmx_status st = lmx_fs_open_regular(from, &in);
    if (st != LMX_OK) return st;
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return lmx_error(LMX_ERR_IO, "%s: %s", to, lmx_errno_str(errno));
    }
    char buf[65536];
    st = LMX_OK;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            st = lmx_error(LMX_ERR_IO, "%s: %s", from, lmx_errno_str(errno));
            break;
        }
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                st = lmx_error(LMX_ERR_IO, "%s: %s", to, lmx_errno_str(errno));
                break;
            }
            off += w;
        }
        if (st != LMX_OK) break;
    }
    close(in);
    if (close(out) != 0 && st == LMX_OK) st = lmx_error(LMX_ERR_IO, "%s: %s", to, lmx_errno_str(errno));
    return st;
}

lmx_status lmx_convert_copy_files(const char *src_dir, const char *dst_dir) {
    DIR *d = opendir(src_dir);
    if (!d) return lmx_error(LMX_ERR_IO, "%s: %s", src_dir, lmx_errno_str(errno));
    lmx_status st = LMX_OK;
    struct dirent *e;
    while (st == LMX_OK && (e = readdir(d)) != NULL) {
        if (skipped(e->d_name)) continue;
        char *from = lmx_fs_join(src_dir, e->d_name), *to = lmx_fs_join(dst_dir, e->d_name);
        if (!from || !to) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        else if (lmx_fs_is_file(from)) st = copy_file(from, to);
        free(from);
        free(to);
    }
    closedir(d);
    return st;
}

void lmx_convert_rmtree(const char *path) {
    struct stat top;
    if (lstat(path, &top) != 0) return;
    if (!S_ISDIR(top.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = lmx_fs_join(path, e->d_name);
            if (!p) continue;
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) lmx_convert_rmtree(p);
            else unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(path);
}
