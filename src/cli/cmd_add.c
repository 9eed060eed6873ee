/* cmd_add.c — `lmx add PATH [--name org/name] [--models-dir DIR]`: registers an existing model
 * directory (files, sizes and SHA-256 recorded in the registry). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx add PATH [--name org/name] [--models-dir DIR]\n"
               "Registers the model directory PATH (default name: org/name from DIR/org/name, else local/<dir>).\n");
}

int lmx_cli_add(int argc, char **argv) {
    const char *path = NULL, *name = NULL, *models_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--name") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "--models-dir") && i + 1 < argc) models_dir = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    lmx_status st = lmx_registry_add(models_dir, path, name);
    if (st != LMX_OK) return lmx_cli_fail(st);
    printf("added %s\n", name ? name : path);
    return 0;
}
