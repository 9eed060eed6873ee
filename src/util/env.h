/* env.h — the environment switches that turn an optimisation off for A/B measurements and tests
 * (LMX_FUSE=0, LMX_CUDA_GRAPH=0, …). Read where a long-lived object is created, never per token.
 * Thread-safety: getenv; callers read at creation time, not concurrently with setenv. */
#ifndef LMX_UTIL_ENV_H
#define LMX_UTIL_ENV_H

#include <stdbool.h>

/* True when the variable `name` is set to exactly "0" (the feature it names is switched off). */
bool lmx_env_off(const char *name);

#endif
