/* cmd_rm.c — `lmx rm MODEL [--keep-files] [--models-dir DIR]`: forgets a registered model and
 * deletes its directory when it lies inside the models directory. */
#include "cli.h"

#include <stdio.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx rm MODEL [--keep-files] [--models-dir DIR]\n"
               "Removes MODEL from the registry; its files are deleted only if its directory, resolved, is\n"
               "strictly inside the models directory (never for directories registered from elsewhere) and\n"
               "--keep-files is not given. A path that resolves outside the models directory or to it, or\n"
               "a directory holding other registered models, is refused and the registry left unchanged.\n");
}

int lmx_cli_rm(int argc, char **argv) {
    const char *name = NULL, *models_dir = NULL;
    bool keep = false;
    const lmx_cli_flag flags[] = {{"--keep-files", &keep, NULL}, {"--models-dir", NULL, &models_dir}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "rm", flags, &name, false, usage);
    if (rc >= 0) return rc;
    lmx_status st = lmx_registry_remove(models_dir, name, !keep);
    if (st != LMX_OK) return lmx_cli_fail(st);
    printf("removed %s\n", name);
    return 0;
}
