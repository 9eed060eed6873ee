/* cmd_logits.c — `lmx logits MODEL --prompt-ids 1,2,3 [--top K] [--ids 5,9] [--threads N]
 * [--device cpu] [--tensor-parallel N]`: runs the prompt and prints one JSON object with the last position's logits:
 * {"top": [[id, logit], …] (sorted by logit, descending), "ids": [[id, logit], …]}. */
#include "internal.h"
#include "util/error.h"

#include <stdio.h>
#include <stdlib.h>

static const char *usage =
    "usage: lmx logits MODEL --prompt-ids 1,2,3 [--top K] [--ids 5,9,...] [--threads N] [--device cpu]\n"
    "                  [--tensor-parallel N]\n"
    "Prints {\"top\": [[id, logit], ...], \"ids\": [[id, logit], ...]} for the last prompt position.\n";

static const float *g_sort_logits; /* qsort has no context argument; set only during the sort below */

static int by_logit_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    float lx = g_sort_logits[x], ly = g_sort_logits[y];
    if (lx > ly) return -1;
    if (lx < ly) return 1;
    return x < y ? -1 : x > y;
}

int lmx_cli_logits(int argc, char **argv) {
    lmx_cli_lm_args a;
    int rc = lmx_cli_lm_parse(argc, argv, &a, usage);
    if (rc >= 0) {
        lmx_cli_lm_args_free(&a);
        return rc;
    }
    lmx_lm *lm = NULL;
    lmx_kv *kv = NULL;
    float *logits = NULL;
    int *order = NULL;
    lmx_status st = lmx_cli_lm_open(&a, &lm);
    if (st == LMX_OK) st = lmx_kv_create(lm, (int)a.n_prompt, &kv);
    int V = lm ? lmx_lm_vocab_size(lm) : 0;
    for (size_t i = 0; st == LMX_OK && i < a.n_ids; i++)
        if (a.ids[i] < 0 || a.ids[i] >= V)
            st = lmx_error(LMX_ERR_INVALID_ARGUMENT, "--ids: id %d is outside the vocabulary (%d)", a.ids[i], V);
    if (st == LMX_OK) {
        logits = malloc((size_t)V * sizeof *logits);
        order = malloc((size_t)V * sizeof *order);
        if (!logits || !order) st = LMX_ERR_OUT_OF_MEMORY;
    }
    if (st == LMX_OK) st = lmx_lm_forward(lm, kv, a.prompt, (int)a.n_prompt, logits);
    if (st == LMX_OK) {
        for (int i = 0; i < V; i++) order[i] = i;
        g_sort_logits = logits;
        qsort(order, (size_t)V, sizeof *order, by_logit_desc);
        g_sort_logits = NULL;
        int k = a.top < V ? a.top : V;
        printf("{\"top\": [");
        for (int i = 0; i < k; i++) {
            printf("%s[%d, ", i ? ", " : "", order[i]);
            lmx_cli_print_float(logits[order[i]]);
            printf("]");
        }
        printf("], \"ids\": [");
        for (size_t i = 0; i < a.n_ids; i++) {
            printf("%s[%d, ", i ? ", " : "", a.ids[i]);
            lmx_cli_print_float(logits[a.ids[i]]);
            printf("]");
        }
        printf("]}\n");
    }
    free(logits);
    free(order);
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    lmx_cli_lm_args_free(&a);
    return st == LMX_OK ? 0 : lmx_cli_fail(st);
}
