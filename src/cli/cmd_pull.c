/* cmd_pull.c — `lmx pull ORG/NAME [--revision REV] [--include GLOB]... [--models-dir DIR]
 * [--parallel N] [--quiet]`: downloads a model from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN;
 * src/hub/hub.h) into the models directory and registers it. A progress bar goes to stderr when it
 * is a terminal, one log line per file otherwise. */
#include "cli.h"
#include "hub/hub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: lmx pull ORG/NAME [--revision REV] [--include GLOB]... [--models-dir DIR] [--parallel N] [--quiet]\n"
            "Downloads the files a model needs (config, tokenizer, chat template, *.safetensors and index) from the\n"
            "Hugging Face hub into the models directory, checks their SHA-256 and registers the model.\n"
            "--include adds files matching GLOB. Environment: HF_ENDPOINT (default https://huggingface.co),\n"
            "HF_TOKEN (else ~/.cache/huggingface/token) for gated or private models. An interrupted pull resumes.\n");
}

int lmx_cli_pull(int argc, char **argv) {
    const char *repo = NULL;
    const char *include[33] = {NULL};
    int n_inc = 0;
    lmx_hub_options o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = true;
        } else if (!strcmp(a, "--revision") || !strcmp(a, "--include") || !strcmp(a, "--models-dir") ||
                   !strcmp(a, "--parallel")) {
            if (!v) {
                fprintf(stderr, "lmx pull: %s needs a value\n", a);
                return 2;
            }
            i++;
            if (!strcmp(a, "--revision")) o.revision = v;
            else if (!strcmp(a, "--models-dir")) o.models_dir = v;
            else if (!strcmp(a, "--include")) {
                if (n_inc == 32) {
                    fprintf(stderr, "lmx pull: at most 32 --include patterns\n");
                    return 2;
                }
                include[n_inc++] = v;
            } else if (!lmx_cli_parse_int(v, &n) || n < 1 || n > 16) {
                fprintf(stderr, "lmx pull: --parallel wants 1..16\n");
                return 2;
            } else o.parallel = (int)n;
        } else if (a[0] == '-' || repo) {
            fprintf(stderr, "lmx pull: unexpected argument %s\n", a);
            usage(stderr);
            return 2;
        } else {
            repo = a;
        }
    }
    if (!repo) {
        usage(stderr);
        return 2;
    }
    o.include = include;
    o.progress_bar = isatty(STDERR_FILENO);
    char *dir = NULL, *commit = NULL;
    lmx_status st = lmx_hub_pull(repo, &o, &dir, &commit);
    if (st != LMX_OK) return lmx_cli_fail(st);
    printf("pulled %s (commit %s) into %s\n", repo, commit, dir);
    free(dir);
    free(commit);
    return 0;
}
