/* cmd_rm.c — `lmx rm MODEL [--keep-files] [--models-dir DIR]`: forgets a registered model and
 * deletes its directory when it lies inside the models directory. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx rm MODEL [--keep-files] [--models-dir DIR]\n"
               "Removes MODEL from the registry; its files are deleted only if they are inside the models\n"
               "directory (never for directories registered from elsewhere) and --keep-files is not given.\n");
}

int lmx_cli_rm(int argc, char **argv) {
    const char *name = NULL, *models_dir = NULL;
    bool keep = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keep-files")) keep = true;
        else if (!strcmp(argv[i], "--models-dir") && i + 1 < argc) models_dir = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && !name) name = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!name) {
        usage(stderr);
        return 2;
    }
    lmx_status st = lmx_registry_remove(models_dir, name, !keep);
    if (st != LMX_OK) return lmx_cli_fail(st);
    printf("removed %s\n", name);
    return 0;
}
