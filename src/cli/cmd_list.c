/* cmd_list.c — `lmx list [--json] [--models-dir DIR]`: the registered models. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx list [--json] [--models-dir DIR]\n"
               "Lists the models registered in DIR's registry (default $LMX_HOME/models, ~/.cache/lmx/models).\n");
}

/* A copy of s with control bytes shown as '?': an edited registry must not forge table lines. */
static char *printable(const char *s) {
    char *c = strdup(s);
    for (char *p = c; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    return c;
}

int lmx_cli_list(int argc, char **argv) {
    const char *models_dir = NULL;
    bool json = false;
    const lmx_cli_flag flags[] = {{"--json", &json, NULL}, {"--models-dir", NULL, &models_dir}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "list", flags, NULL, false, usage);
    if (rc >= 0) return rc;
    lmx_registry_entry *e = NULL;
    int n = 0;
    lmx_status st = lmx_registry_list(models_dir, &e, &n);
    if (st != LMX_OK) return lmx_cli_fail(st);
    if (json) {
        printf("[");
        for (int i = 0; i < n; i++) {
            uint64_t bytes = 0;
            for (int j = 0; j < e[i].n_files; j++) bytes += e[i].files[j].size;
            printf("%s{\"id\":", i ? "," : "");
            lmx_cli_print_json_str(e[i].id);
            printf(",\"path\":");
            lmx_cli_print_json_str(e[i].path);
            printf(",\"size\":%llu,\"files\":%d,\"added_at\":%.3f,\"last_used\":%.3f}", (unsigned long long)bytes,
                   e[i].n_files, e[i].added_at, e[i].last_used);
        }
        printf("]\n");
    } else {
        printf("%-48s %10s %-19s %s\n", "NAME", "SIZE", "LAST USED", "PATH");
        for (int i = 0; i < n; i++) {
            uint64_t bytes = 0;
            for (int j = 0; j < e[i].n_files; j++) bytes += e[i].files[j].size;
            char when[32] = "never";
            if (e[i].last_used > 0) {
                time_t t = (time_t)e[i].last_used;
                struct tm tm;
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
            }
            char *id = printable(e[i].id), *path = printable(e[i].path);
            printf("%-48s %9.1fM %-19s %s\n", id ? id : "?", (double)bytes / 1e6, when, path ? path : "?");
            free(id);
            free(path);
        }
    }
    lmx_registry_entries_free(e, n);
    return 0;
}
