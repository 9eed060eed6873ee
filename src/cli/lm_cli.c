/* lm_cli.c — option parsing and model opening of `lmx logits`, the tokenizer commands' input (internal.h). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lmx_cli_lm_parse(int argc, char **argv, lmx_cli_lm_args *a, const char *usage) {
    memset(a, 0, sizeof *a);
    a->top = 10;
    a->max_tokens = -1;
    a->device = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        long v;
        double d;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            printf("%s", usage);
            return 0;
        } else if (!strcmp(o, "--json")) {
            a->json = true;
            continue;
        } else if (o[0] != '-' || !o[1]) {
            if (a->model) {
                fprintf(stderr, "lmx %s: unexpected argument '%s'\n%s", argv[0], o, usage);
                return 2;
            }
            a->model = o;
            continue;
        }
        if (!val) {
            fprintf(stderr, "lmx %s: option %s needs a value\n%s", argv[0], o, usage);
            return 2;
        }
        i++;
        if (!strcmp(o, "--prompt-ids")) {
            free(a->prompt);
            if (!lmx_cli_parse_ids(val, &a->prompt, &a->n_prompt)) {
                fprintf(stderr, "lmx %s: --prompt-ids must be a comma-separated list of token ids\n", argv[0]);
                return 2;
            }
        } else if (!strcmp(o, "--ids")) {
            free(a->ids);
            if (!lmx_cli_parse_ids(val, &a->ids, &a->n_ids)) {
                fprintf(stderr, "lmx %s: --ids must be a comma-separated list of token ids\n", argv[0]);
                return 2;
            }
        } else if (!strcmp(o, "--top")) {
            if (!lmx_cli_parse_int(val, &v) || v < 0 || v > 1000000) goto bad;
            a->top = (int)v;
        } else if (!strcmp(o, "--threads")) {
            if (!lmx_cli_parse_int(val, &v) || v < 0 || v > 1024) goto bad;
            a->threads = (int)v;
        } else if (!strcmp(o, "--tensor-parallel")) {
            if (!lmx_cli_parse_int(val, &v) || v < 1 || v > 64) goto bad;
            a->tensor_parallel = (int)v;
        } else if (!strcmp(o, "--max-tokens")) {
            if (!lmx_cli_parse_int(val, &v) || v < 0 || v > 100000000) goto bad;
            a->max_tokens = v;
        } else if (!strcmp(o, "--temp")) {
            if (!lmx_cli_parse_float(val, &d) || !(d >= 0 && d <= 1e6)) goto bad; /* also NaN, inf */
            a->temp = d;
        } else if (!strcmp(o, "--device")) {
            if (strcmp(val, "cpu") && strcmp(val, "gpu") && strcmp(val, "auto") && strcmp(val, "cuda")) goto bad;
            a->device = val;
        } else {
            fprintf(stderr, "lmx %s: unknown option %s\n%s", argv[0], o, usage);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "lmx %s: bad value '%s' for %s\n", argv[0], val, o);
        return 2;
    }
    if (!a->model || !a->prompt) {
        fprintf(stderr, "lmx %s: MODEL and --prompt-ids are required\n%s", argv[0], usage);
        return 2;
    }
    return -1;
}

void lmx_cli_lm_args_free(lmx_cli_lm_args *a) {
    free(a->prompt);
    free(a->ids);
    lmx_backend_destroy(a->backend);
    a->backend = NULL;
    lmx_backend_group_destroy(a->group);
    a->group = NULL;
}

lmx_status lmx_cli_lm_open(lmx_cli_lm_args *a, lmx_lm **out) {
    lmx_device want = !strcmp(a->device, "cpu")    ? LMX_DEVICE_CPU
                      : !strcmp(a->device, "auto") ? LMX_DEVICE_AUTO
                                                   : LMX_DEVICE_GPU; /* "gpu" or "cuda" */
    lmx_lm_options opt = {0};
    if (a->tensor_parallel > 0 && !a->group) { /* the ranks outlive the model likewise */
        lmx_status st = lmx_backend_group_create(want, a->tensor_parallel, a->threads, &a->group, &a->picked);
        if (st != LMX_OK) return st;
    }
    if (a->group) {
        opt.device = a->picked;
        opt.group = a->group;
        return lmx_lm_open(a->model, &opt, out);
    }
    if (!a->backend) { /* the model binds to a backend that outlives it */
        lmx_status st = lmx_backend_create(want, a->threads, &a->backend, &a->picked);
        if (st != LMX_OK) return st;
    }
    opt.device = a->picked;
    opt.backend = a->backend;
    return lmx_lm_open(a->model, &opt, out);
}

void lmx_cli_print_float(double v) {
    if (v != v || v > 3.4e38 || v < -3.4e38) printf("null");
    else printf("%.9g", v);
}

int lmx_cli_tokenizer_and_stdin(const char *cmd, const char *model, lmx_tokenizer **tok, char **in, size_t *len) {
    lmx_status st = lmx_tokenizer_load(model, tok);
    if (st) return lmx_cli_fail(st);
    *in = lmx_cli_read_stdin(len);
    if (!*in) {
        lmx_tokenizer_destroy(*tok);
        *tok = NULL;
        fprintf(stderr, "lmx %s: cannot read stdin\n", cmd);
        return 1;
    }
    return 0;
}
