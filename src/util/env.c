/* env.c — see env.h. */
#include "util/env.h"

#include <stdlib.h>
#include <string.h>

static const lmx_env_entry TABLE[LMX_ENV_COUNT] = {
    [LMX_ENV_LOG] = {"LMX_LOG", LMX_ENV_STRING, "warn", "log level on stderr: debug, info, warn, error, off"},
    [LMX_ENV_HOME] = {"LMX_HOME", LMX_ENV_STRING, NULL,
                      "model store root: models in $LMX_HOME/models (default $HOME/.cache/lmx)"},
    [LMX_ENV_VERIFY] = {"LMX_VERIFY", LMX_ENV_FLAG, "0", "verify a registered model's file hashes before loading it"},
    [LMX_ENV_CUDA_GRAPH] = {"LMX_CUDA_GRAPH", LMX_ENV_FLAG, "1",
                            "CUDA backend: run decode steps as captured CUDA graphs (0: eager launches, to debug)"},
    [LMX_ENV_COMMIT] = {"LMX_COMMIT", LMX_ENV_STRING, NULL, "lmx bench: the commit written into the result file"},
    [LMX_ENV_TOKENIZER_DIR] = {"LMX_TOKENIZER_DIR", LMX_ENV_STRING, NULL,
                               "lmx dev random-model: the default of --tokenizer"},
};

const lmx_env_entry *lmx_env_entry_of(lmx_env_var v) {
    return (unsigned)v < LMX_ENV_COUNT ? &TABLE[v] : NULL;
}

const char *lmx_env_str(lmx_env_var v) {
    const lmx_env_entry *e = lmx_env_entry_of(v);
    const char *s = e ? getenv(e->name) : NULL;
    return s && *s ? s : NULL;
}

bool lmx_env_flag(lmx_env_var v) {
    const lmx_env_entry *e = lmx_env_entry_of(v);
    if (!e) return false;
    const char *s = lmx_env_str(v);
    if (!s) return e->kind == LMX_ENV_FLAG && e->def && strcmp(e->def, "0") != 0;
    return strcmp(s, "0") != 0;
}
