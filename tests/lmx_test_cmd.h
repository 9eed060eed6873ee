/* lmx_test_cmd.h — running a shell command from a test (the CLI tests): its whole stdout, malloc'd,
 * and its exit status. Header-only. */
#ifndef LMX_TEST_CMD_H
#define LMX_TEST_CMD_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* Runs cmd through popen; returns its stdout (malloc'd, NUL-terminated; NULL when it could not run or
 * memory ran out) and sets *status to its exit code (-1: it did not exit normally). */
static inline char *lmx_test_cmd(const char *cmd, int *status) {
    *status = -1;
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, len = 0, n;
    char *out = malloc(cap);
    while (out && (n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *o2 = realloc(out, cap *= 2);
            if (!o2) free(out);
            out = o2;
        }
    }
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (out) out[len] = '\0';
    return out;
}

/* lmx_test_cmd with its stdout copied into out[cap] (truncated; "" when it could not run); returns the
 * exit code (-1: it did not run or exit normally). */
static inline int lmx_test_cmd_buf(const char *cmd, char *out, size_t cap) {
    int status = -1;
    char *o = lmx_test_cmd(cmd, &status);
    snprintf(out, cap, "%s", o ? o : "");
    free(o);
    return status;
}

#endif
