/* cmd_add.c — `lmx add PATH [--name org/name] [--models-dir DIR]`: registers an existing model
 * directory (files, sizes and SHA-256 recorded in the registry). */
#include "cli.h"

#include <stdio.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx add PATH [--name org/name] [--models-dir DIR]\n"
               "Registers the model directory PATH (default name: org/name from DIR/org/name, else local/<dir>).\n"
               "PATH must hold a config.json; names are printable UTF-8 without spaces or \"..\".\n");
}

int lmx_cli_add(int argc, char **argv) {
    const char *path = NULL, *name = NULL, *models_dir = NULL;
    const lmx_cli_flag flags[] = {{"--name", NULL, &name}, {"--models-dir", NULL, &models_dir}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "add", flags, &path, false, usage);
    if (rc >= 0) return rc;
    lmx_status st = lmx_registry_add(models_dir, path, name);
    if (st != LMX_OK) return lmx_cli_fail(st);
    printf("added %s\n", name ? name : path);
    return 0;
}
