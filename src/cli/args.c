/* args.c — argument helpers shared by the CLI commands. */
#include "cli.h"
#include "util/json_str.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lmx_cli_fail(lmx_status st) {
    const char *d = lmx_last_error_detail();
    if (d && *d) fprintf(stderr, "lmx: %s: %s\n", lmx_status_str(st), d);
    else fprintf(stderr, "lmx: %s\n", lmx_status_str(st));
    return 1;
}

bool lmx_cli_parse_int(const char *s, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool lmx_cli_parse_float(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool lmx_cli_parse_ids(const char *s, int32_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!s) return false;
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += (*p == ',');
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return false;
    size_t k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) { free(ids); return false; }
        ids[k++] = (int32_t)v;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') {
            p++;
            if (!*p) { free(ids); return false; }
        } else if (*p) {
            free(ids);
            return false;
        }
    }
    if (k == 0) { free(ids); return false; }
    *out = ids;
    *n = k;
    return true;
}

char *lmx_cli_read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); return NULL; }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0) break;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static const lmx_cli_flag *find_flag(const lmx_cli_flag *flags, const char *arg) {
    for (; flags->name; flags++)
        if (!strcmp(flags->name, arg)) return flags;
    return NULL;
}

int lmx_cli_parse_flags(int argc, char **argv, const char *cmd, const lmx_cli_flag *flags, const char **positional,
                        bool explain, void (*usage)(FILE *f)) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const lmx_cli_flag *f = find_flag(flags, a);
        if (f && f->on) {
            *f->on = true;
            continue;
        }
        if (f && i + 1 < argc) {
            *f->value = argv[++i];
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        bool option = a[0] == '-' && (a[1] || !explain);
        if (!option && positional && !*positional) {
            *positional = a;
            continue;
        }
        if (explain) {
            if (f) fprintf(stderr, "lmx %s: option %s needs a value\n", cmd, a);
            else fprintf(stderr, "lmx %s: %s %s\n", cmd, option ? "unknown option" : "unexpected argument", a);
        }
        usage(stderr);
        return 2;
    }
    if (positional && !*positional) {
        usage(stderr);
        return 2;
    }
    return -1;
}

void lmx_cli_print_json_str(const char *s) {
    putchar('"');
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = lmx_utf8_seq_len(s + i, n - i);
        if (k == 0) {
            fputs("\\ufffd", stdout); /* a byte that is not UTF-8 (a path's raw bytes): JSON must be UTF-8 */
            i++;
            continue;
        }
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\u%04x", c);
        else fwrite(s + i, 1, k, stdout);
        i += k;
    }
    putchar('"');
}
