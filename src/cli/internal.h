/* internal.h — the CLI's one door into the library's internals, for the commands that exercise them
 * directly instead of through lmx.h: `logits` (the model object and its forward pass), `bench`
 * (the GPU: what it is, memory in use), `dev` (writing safetensors models), `tokenize` / `detokenize`
 * (the tokenizer alone). Every other command includes only cli.h (lmx.h). The util/ helpers (error
 * detail, logging, files, JSON) are the bottom layer and may be included by any command.
 *
 * What it brings in: model/lm.h (lmx_lm, lmx_kv; backend/backend.h's lmx_backend_create and the
 * lmx_gpu_* probes come with it), tokenizer/tokenizer.h, formats/st_writer.h and formats/mlx_quant.h.
 * No backend- or kernel-specific header: the CLI never sees CUDA. */
#ifndef LMX_CLI_INTERNAL_H
#define LMX_CLI_INTERNAL_H

#include "cli.h"
#include "formats/mlx_quant.h"
#include "formats/st_writer.h"
#include "model/lm.h"
#include "tokenizer/tokenizer.h"

/* Options of `lmx logits` (lm_cli.c). */
typedef struct lmx_cli_lm_args {
    const char *model;
    int32_t *prompt, *ids;
    size_t n_prompt, n_ids;
    int top, threads;
    long max_tokens; /* -1 = not given */
    double temp;
    bool json;
    const char *device;   /* "cpu" (default), "gpu"/"cuda" or "auto" */
    lmx_backend *backend; /* the backend lmx_cli_lm_open created (owned; freed by lmx_cli_lm_args_free,
                             which must come after lmx_lm_close) */
    int tensor_parallel;  /* --tensor-parallel N: ranks (0 = one device) */
    lmx_backend_group *group; /* its ranks, created by lmx_cli_lm_open instead of backend (owned, freed
                                 likewise) */
    lmx_device picked;    /* where it runs: GPU or CPU */
} lmx_cli_lm_args;
/* Returns -1 to continue, else the exit code (0 after --help, 2 on a usage error). */
int lmx_cli_lm_parse(int argc, char **argv, lmx_cli_lm_args *a, const char *usage);
void lmx_cli_lm_args_free(lmx_cli_lm_args *a);
/* Opens a->model on the backend lmx_backend_create gives for a->device (with --tensor-parallel, over
 * the ranks of lmx_backend_group_create). */
lmx_status lmx_cli_lm_open(lmx_cli_lm_args *a, lmx_lm **out);
void lmx_cli_print_float(double v); /* %.9g, or null when not finite */
/* `lmx tokenize` / `detokenize`: the model directory's tokenizer and all of stdin (*in: malloc'd,
 * NUL-terminated). Returns 0, else the exit code after printing why (nothing left allocated). */
int lmx_cli_tokenizer_and_stdin(const char *cmd, const char *model, lmx_tokenizer **tok, char **in, size_t *len);

#endif
