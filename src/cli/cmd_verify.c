/* cmd_verify.c — `lmx verify MODEL [--models-dir DIR]`: re-hashes a registered model's files and
 * compares them with the SHA-256 recorded when it was added. Exit 0 = all match, 1 = mismatch. */
#include "cli.h"

#include <stdio.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx verify MODEL [--models-dir DIR]\n");
}

int lmx_cli_verify(int argc, char **argv) {
    const char *name = NULL, *models_dir = NULL;
    const lmx_cli_flag flags[] = {{"--models-dir", NULL, &models_dir}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "verify", flags, &name, false, usage);
    if (rc >= 0) return rc;
    char *report = NULL;
    lmx_status st = lmx_registry_verify(models_dir, name, &report);
    if (report) fputs(report, stdout);
    lmx_free(report);
    if (st != LMX_OK) return lmx_cli_fail(st);
    printf("%s: all files match\n", name);
    return 0;
}
