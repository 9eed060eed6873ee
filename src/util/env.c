/* env.c — see env.h. */
#include "util/env.h"

#include <stdlib.h>
#include <string.h>

bool lmx_env_off(const char *name) {
    const char *v = getenv(name);
    return v && strcmp(v, "0") == 0;
}
