/* gen_opts.h — options shared by `lmx generate` and `lmx run` (gen_opts.c): sampling
 * (--temp --top-p --top-k --min-p --max-tokens --repetition-penalty --repetition-context --seed
 * --stop…) and runtime (--threads --device --tensor-parallel --ctx --no-mmap). Only lmx.h types: these commands are
 * clients of the public API. Not thread-safe (CLI parsing). */
#ifndef LMX_CLI_GEN_OPTS_H
#define LMX_CLI_GEN_OPTS_H

#include <stdbool.h>
#include "lmx.h"

#define LMX_CLI_MAX_STOP 64

typedef struct lmx_cli_gen {
    lmx_gen_options opt;    /* defaults: lmx_gen_options_default() (temp 0.7, top_p 0.9, 512 tokens) */
    const char *stop[LMX_CLI_MAX_STOP];
    lmx_config cfg;         /* defaults: lmx_config_default() */
    bool ctx_given;         /* --ctx was given */
} lmx_cli_gen;

void lmx_cli_gen_init(lmx_cli_gen *g);

/* Options that print help for both commands. */
extern const char lmx_cli_gen_help[];

/* If `name` is one of the shared options, consumes its value `val` (may be NULL when missing) and
 * returns how many arguments it used: 1 (a switch: --no-mmap) or 2 (the option and `val`). Returns
 * -1 on a usage error (message printed, `cmd` names the command) and 0 when `name` is not a shared
 * option. */
int lmx_cli_gen_option(const char *cmd, const char *name, const char *val, lmx_cli_gen *g);

#endif
