/* cmd_generate.c — `lmx generate MODEL --prompt-ids 1,2,3 --max-tokens N --temp 0 [--json]
 * [--threads N] [--device cpu]`: greedy continuation. With --json prints one object
 * {"token_ids": [...], "text": "", "finish_reason": "stop"|"length", "prompt_tokens": n};
 * otherwise the generated ids space-separated. An EOS id (generation_config.json, else
 * config.json) stops generation and is not included. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

static const char *usage =
    "usage: lmx generate MODEL --prompt-ids 1,2,3 --max-tokens N [--temp 0] [--json] [--threads N] [--device cpu]\n"
    "Greedy decoding (--temp 0) until an EOS id or N tokens.\n";

static int32_t argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int lmx_cli_generate(int argc, char **argv) {
    lmx_cli_lm_args a;
    int rc = lmx_cli_lm_parse(argc, argv, &a, usage);
    if (rc >= 0) {
        lmx_cli_lm_args_free(&a);
        return rc;
    }
    if (a.max_tokens < 0) a.max_tokens = 100;
    if (a.temp != 0) {
        fprintf(stderr, "lmx generate: only --temp 0 (greedy) is supported until the sampler lands\n");
        lmx_cli_lm_args_free(&a);
        return 2;
    }
    if ((long)a.n_prompt + a.max_tokens > 0x7fffffff) {
        fprintf(stderr, "lmx generate: prompt + --max-tokens is too long\n");
        lmx_cli_lm_args_free(&a);
        return 2;
    }
    lmx_lm *lm = NULL;
    lmx_kv *kv = NULL;
    float *logits = NULL;
    int32_t *out = NULL;
    long n_out = 0;
    const char *finish = "length";
    lmx_status st = lmx_cli_lm_open(&a, &lm);
    if (st == LMX_OK) st = lmx_kv_create(lm, (int)(a.n_prompt + (a.max_tokens > 0 ? a.max_tokens : 1)), &kv);
    if (st == LMX_OK) {
        logits = malloc((size_t)lmx_lm_vocab_size(lm) * sizeof *logits);
        out = malloc((size_t)(a.max_tokens > 0 ? a.max_tokens : 1) * sizeof *out);
        if (!logits || !out) st = LMX_ERR_OUT_OF_MEMORY;
    }
    if (st == LMX_OK && a.max_tokens > 0) {
        st = lmx_lm_forward(lm, kv, a.prompt, (int)a.n_prompt, logits);
        while (st == LMX_OK) {
            int32_t next = argmax(logits, lmx_lm_vocab_size(lm));
            if (lmx_lm_is_eos(lm, next)) {
                finish = "stop";
                break;
            }
            out[n_out++] = next;
            if (n_out >= a.max_tokens) break;
            st = lmx_lm_forward(lm, kv, &next, 1, logits);
        }
    }
    if (st == LMX_OK) {
        if (a.json) {
            printf("{\"token_ids\": [");
            for (long i = 0; i < n_out; i++) printf("%s%d", i ? ", " : "", out[i]);
            printf("], \"text\": \"\", \"finish_reason\": \"%s\", \"prompt_tokens\": %zu, \"completion_tokens\": %ld}\n",
                   finish, a.n_prompt, n_out);
        } else {
            for (long i = 0; i < n_out; i++) printf("%s%d", i ? " " : "", out[i]);
            printf("\n");
        }
    }
    free(logits);
    free(out);
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    lmx_cli_lm_args_free(&a);
    return st == LMX_OK ? 0 : lmx_cli_fail(st);
}
