/* env.h — the environment variables lmx reads: one table (env.c), each variable with its meaning and
 * default, parsed one way. Every switch that remains is a user setting (LMX_LOG, LMX_HOME, LMX_VERIFY),
 * a debugging switch (LMX_CUDA_GRAPH) or an input of a developer tool (LMX_COMMIT,
 * LMX_TOKENIZER_DIR); experiments are not switches. The table is documented in docs/ARCHITECTURE.md
 * ("Environment").
 * Reading: where a long-lived object is created (a backend reads its switches at creation into its
 * own state), never per token and never into process globals.
 * Thread-safety: getenv; callers read at creation time, not concurrently with setenv. */
#ifndef LMX_UTIL_ENV_H
#define LMX_UTIL_ENV_H

#include <stdbool.h>

typedef enum {
    LMX_ENV_LOG,           /* log level */
    LMX_ENV_HOME,          /* model store directory */
    LMX_ENV_VERIFY,        /* verify registered models' hashes at load */
    LMX_ENV_CUDA_GRAPH,    /* CUDA backend: decode steps as CUDA graphs */
    LMX_ENV_COMMIT,        /* lmx bench: commit recorded in the result file */
    LMX_ENV_TOKENIZER_DIR, /* lmx dev random-model: default tokenizer folder */
    LMX_ENV_COUNT
} lmx_env_var;

typedef enum { LMX_ENV_STRING, LMX_ENV_FLAG } lmx_env_kind;

typedef struct lmx_env_entry {
    const char *name;    /* e.g. "LMX_CUDA_GRAPH" */
    lmx_env_kind kind;   /* FLAG: "0" is off, any other non-empty value on; unset or empty: the default */
    const char *def;     /* the default, as documented ("1", "0", "warn", …; NULL: none) */
    const char *meaning; /* one line */
} lmx_env_entry;

/* The table entry of v (NULL for an out-of-range v). */
const lmx_env_entry *lmx_env_entry_of(lmx_env_var v);

/* The variable's value: NULL when unset or empty. */
const char *lmx_env_str(lmx_env_var v);

/* A FLAG variable: false when set to "0", true when set to anything else, its default when unset or
 * empty. (A STRING variable: whether it is set and not "0".) */
bool lmx_env_flag(lmx_env_var v);

#endif
