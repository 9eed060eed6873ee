/* cli.h — the `lmx` command line: one file per command (cmd_<name>.c), each exporting
 * `int lmx_cli_<name>(int argc, char **argv)` where argv[0] is the command name.
 * Results go to stdout, logs and errors to stderr. Exit codes: 0 ok, 1 failure, 2 usage error.
 * Commands are clients of lmx.h; the few that exercise the internals (logits, bench, dev, tokenize,
 * detokenize) also include src/cli/internal.h. */
#ifndef LMX_CLI_H
#define LMX_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lmx.h"

typedef int (*lmx_cli_fn)(int argc, char **argv);

/* Prints "lmx: <status>: <detail>" to stderr and returns 1. */
int lmx_cli_fail(lmx_status st);

/* Parses "1,2,3" into a malloc'd int32 array (*out, caller frees). Returns false on bad syntax. */
bool lmx_cli_parse_ids(const char *s, int32_t **out, size_t *n);

/* Parses a non-negative/any integer or float option value; false on junk. */
bool lmx_cli_parse_int(const char *s, long *out);
bool lmx_cli_parse_float(const char *s, double *out);

/* Reads all of stdin into a malloc'd NUL-terminated buffer. */
char *lmx_cli_read_stdin(size_t *len);

/* Commands (keep sorted; main.c's table lists them with a one-line summary). */
int lmx_cli_bench(int argc, char **argv);
int lmx_cli_chat_template(int argc, char **argv);
int lmx_cli_detokenize(int argc, char **argv);
int lmx_cli_tokenize(int argc, char **argv);
int lmx_cli_dev(int argc, char **argv);
int lmx_cli_generate(int argc, char **argv);
int lmx_cli_logits(int argc, char **argv);
int lmx_cli_version(int argc, char **argv);
int lmx_cli_list(int argc, char **argv);
int lmx_cli_run(int argc, char **argv);
int lmx_cli_serve(int argc, char **argv);
int lmx_cli_info(int argc, char **argv);
int lmx_cli_add(int argc, char **argv);
int lmx_cli_rm(int argc, char **argv);
int lmx_cli_verify(int argc, char **argv);

/* Argument parsing for the simple commands (tokenize, detokenize, info, list, add, rm, verify):
 * switches and options with one value from a table, at most one positional argument. */
#include <stdio.h>
typedef struct lmx_cli_flag {
    const char *name;   /* "--json" */
    bool *on;           /* a switch: set to true when given */
    const char **value; /* an option with a value (when `on` is NULL): the next argument */
} lmx_cli_flag;
/* Parses argv[1..] against `flags` (ended by a {NULL} entry). -h/--help prints usage(stdout) and
 * returns 0. `positional` receives the one positional argument and is then required; NULL means the
 * command takes none. Usage errors print usage(stderr) and return 2; with `explain`, an unknown
 * option or extra argument is named first ("lmx <cmd>: unknown option X") and a lone "-" counts as
 * a positional argument; without it any other argument starting with '-' is a usage error.
 * Returns -1 when the command should go on. */
int lmx_cli_parse_flags(int argc, char **argv, const char *cmd, const lmx_cli_flag *flags, const char **positional,
                        bool explain, void (*usage)(FILE *f));

/* Prints s to stdout as a JSON string: '"' and '\\' escaped, control bytes as \u00XX, UTF-8 as it is;
 * a byte that is not part of well-formed UTF-8 (raw path bytes) becomes \ufffd, so the output is
 * always valid JSON. */
void lmx_cli_print_json_str(const char *s);

#endif
