/* cmd_detokenize.c — `lmx detokenize MODEL [--skip-special] [--jsonl]`: JSON array(s) of ids on
 * stdin -> text. Without --jsonl the decoded text of each array is written raw (no newline added);
 * with --jsonl every stdin line is an array and every output line a JSON string. */
#include "internal.h"
#include "util/json.h"
#include "util/json_str.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx detokenize MODEL [--skip-special] [--jsonl]\n"
               "  MODEL           a model or tokenizer directory (tokenizer.json)\n"
               "  --skip-special  drop special tokens, like skip_special_tokens=True\n"
               "  --jsonl         every stdin line is a JSON array; print one JSON string per line\n"
               "Reads JSON arrays of token ids from stdin and prints the decoded text.\n");
}

/* Parses one JSON array of non-negative integer ids. */
static bool array_ids(const cJSON *a, int32_t **ids, size_t *n) {
    if (!cJSON_IsArray(a)) return false;
    size_t cnt = (size_t)cJSON_GetArraySize(a);
    *ids = malloc((cnt + 1) * sizeof **ids);
    if (!*ids) return false;
    size_t k = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 2147483647.0 || x->valuedouble != (double)(int32_t)x->valuedouble) {
            free(*ids);
            return false;
        }
        (*ids)[k++] = (int32_t)x->valuedouble;
    }
    *n = k;
    return true;
}

int lmx_cli_detokenize(int argc, char **argv) {
    const char *model = NULL;
    bool skip = false, jsonl = false;
    const lmx_cli_flag flags[] = {{"--skip-special", &skip, NULL}, {"--jsonl", &jsonl, NULL}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "detokenize", flags, &model, true, usage);
    if (rc >= 0) return rc;
    lmx_tokenizer *tok;
    size_t len;
    char *in;
    if ((rc = lmx_cli_tokenizer_and_stdin("detokenize", model, &tok, &in, &len)) != 0) return rc;
    lmx_status st;
    rc = 0;
    size_t item = 0;
    const char *p = in, *end = in + len;
    while (!rc) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
        if (p >= end) break;
        item++;
        const char *after = NULL;
        cJSON *a = lmx_json_parse(p, (size_t)(end - p), &after);
        int32_t *ids = NULL;
        size_t n = 0;
        if (!a || !array_ids(a, &ids, &n)) {
            fprintf(stderr, "lmx detokenize: %s %zu is not a JSON array of token ids\n", jsonl ? "line" : "input", item);
            cJSON_Delete(a);
            rc = 1;
            break;
        }
        cJSON_Delete(a);
        p = after ? after : end;
        char *text;
        size_t tl;
        st = lmx_tokenizer_decode(tok, ids, n, skip, &text, &tl);
        free(ids);
        if (st) { rc = lmx_cli_fail(st); break; }
        if (jsonl) {
            size_t el;
            char *enc = lmx_json_str_encode(text, tl, &el);
            if (enc) { fwrite(enc, 1, el, stdout); fputc('\n', stdout); }
            free(enc);
            if (!enc) rc = 1;
        } else fwrite(text, 1, tl, stdout);
        free(text);
    }
    free(in);
    lmx_tokenizer_destroy(tok);
    if (fflush(stdout) != 0) return 1;
    return rc;
}
