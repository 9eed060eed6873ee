/* version.c — library version and lmx_free. */
#include "lmx.h"

#include <stdlib.h>

#define LMX_STR2(x) #x
#define LMX_STR(x) LMX_STR2(x)

LMX_API const char *lmx_version(void) {
    return LMX_STR(LMX_VERSION_MAJOR) "." LMX_STR(LMX_VERSION_MINOR) "." LMX_STR(LMX_VERSION_PATCH);
}

LMX_API void lmx_free(void *p) { free(p); }
