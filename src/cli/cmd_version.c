/* cmd_version.c — `lmx version`: prints the library version. */
#include "cli.h"

#include <stdio.h>

int lmx_cli_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("lmx %s\n", lmx_version());
    return 0;
}
