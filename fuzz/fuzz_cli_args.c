/* fuzz_cli_args.c — libFuzzer target for the CLI's option parsing: the shared generate/run options
 * (gen_opts.c: lmx_cli_gen_option, driven as `lmx run` drives it), the logits/generate parser
 * (lm_cli.c: lmx_cli_lm_parse), the simple commands' table parser (args.c: lmx_cli_parse_flags)
 * and the value parsers (lmx_cli_parse_ids / _int / _float).
 *
 * The input is an argv: NUL-separated arguments (at most 64), argv[0] forced to a command name.
 * Every accepted value must be in the range the option documents (abort otherwise). stdout (help
 * text) and the usage messages on the stderr stream go to /dev/null (libFuzzer and the sanitizers
 * still report on fd 2). */
#include "internal.h"
#include "gen_opts.h"

#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) {
        dup2(fd, 1);
        close(fd);
    }
    /* the parsers' usage messages (millions per run) go nowhere: only the C stream is replaced,
     * libFuzzer's own output (its FILE captured at start-up) and sanitizer reports (fd 2) stay */
    FILE *null = fopen("/dev/null", "w");
    if (null) stderr = null;
    return 0;
}

static void quiet_usage(FILE *f) { (void)f; }

#define MAX_ARGS 64

static void gen_options(int argc, char **argv) {
    lmx_cli_gen g;
    lmx_cli_gen_init(&g);
    for (int i = 1; i < argc; i++) {
        int r = lmx_cli_gen_option("run", argv[i], i + 1 < argc ? argv[i + 1] : NULL, &g);
        if (r < 0) return;
        if (r > 0) i += r - 1;
    }
    const lmx_gen_options *o = &g.opt;
    const lmx_sampling *sp = &o->sampling;
    if (!(sp->temperature >= 0 && sp->temperature <= 1e6) || !(sp->top_p >= 0 && sp->top_p <= 1) ||
        !(sp->min_p >= 0 && sp->min_p <= 1) || !(sp->repetition_penalty >= 0 && sp->repetition_penalty <= 1e6) ||
        sp->top_k < 0 || o->max_tokens < -1 || sp->repetition_context < 0 || o->n_stop < 0 ||
        o->n_stop > LMX_CLI_MAX_STOP || g.cfg.n_threads < 0 || g.cfg.n_threads > 1024 || g.cfg.max_context_length < 1)
        abort();
    for (int i = 0; i < o->n_stop; i++)
        if (!o->stop[i] || !*o->stop[i]) abort();
}

static void lm_options(int argc, char **argv) {
    lmx_cli_lm_args a;
    int rc = lmx_cli_lm_parse(argc, argv, &a, "");
    if (rc == -1) {
        if (!a.model || !a.prompt || a.n_prompt == 0 || a.top < 0 || a.threads < 0 || !(a.temp >= 0) ||
            !isfinite(a.temp) || a.max_tokens < -1)
            abort();
        for (size_t i = 0; i < a.n_prompt; i++)
            if (a.prompt[i] < 0) abort();
    }
    lmx_cli_lm_args_free(&a);
}

static void flag_table(int argc, char **argv, bool explain) {
    const char *name = NULL, *models_dir = NULL, *pos = NULL;
    bool json = false, keep = false;
    const lmx_cli_flag flags[] = {{"--json", &json, NULL}, {"--keep-files", &keep, NULL}, {"--name", NULL, &name},
                                  {"--models-dir", NULL, &models_dir}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "fuzz", flags, &pos, explain, quiet_usage);
    if (rc == -1 && !pos) abort();
    if (rc != -1 && rc != 0 && rc != 2) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "run";
    for (size_t i = 0; i < size && argc < MAX_ARGS;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;
    gen_options(argc, argv);
    argv[0] = "generate";
    lm_options(argc, argv);
    argv[0] = "list";
    flag_table(argc, argv, false);
    flag_table(argc, argv, true);
    for (int i = 1; i < argc; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (lmx_cli_parse_ids(argv[i], &ids, &n)) {
            if (n == 0 || !ids) abort();
            for (size_t k = 0; k < n; k++)
                if (ids[k] < 0) abort();
        }
        free(ids);
        long l;
        double d;
        (void)lmx_cli_parse_int(argv[i], &l);
        (void)lmx_cli_parse_float(argv[i], &d);
    }
    free(buf);
    return 0;
}
