/* cmd_tokenize.c — `lmx tokenize MODEL [--add-special] [--jsonl]`: stdin text -> JSON array of ids
 * (one line). With --jsonl every stdin line is a JSON string and every output line its array. */
#include "internal.h"
#include "util/json_str.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: lmx tokenize MODEL [--add-special] [--jsonl]\n"
               "  MODEL          a model or tokenizer directory (tokenizer.json)\n"
               "  --add-special  add the template's special tokens (e.g. BOS), like add_special_tokens=True\n"
               "  --jsonl        every stdin line is a JSON string; print one JSON array per line\n"
               "Reads text from stdin and prints its token ids as a JSON array.\n");
}

static void print_ids(const int32_t *ids, size_t n) {
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    fputs("]\n", stdout);
}

int lmx_cli_tokenize(int argc, char **argv) {
    const char *model = NULL;
    bool add_special = false, jsonl = false;
    const lmx_cli_flag flags[] = {{"--add-special", &add_special, NULL}, {"--jsonl", &jsonl, NULL}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "tokenize", flags, &model, true, usage);
    if (rc >= 0) return rc;
    lmx_tokenizer *tok;
    size_t len;
    char *in;
    if ((rc = lmx_cli_tokenizer_and_stdin("tokenize", model, &tok, &in, &len)) != 0) return rc;
    lmx_status st;
    rc = 0;
    if (!jsonl) {
        int32_t *ids;
        size_t n;
        st = lmx_tokenizer_encode(tok, in, len, add_special, &ids, &n);
        if (st) rc = lmx_cli_fail(st);
        else { print_ids(ids, n); free(ids); }
    } else {
        size_t line_no = 0;
        for (char *p = in, *end = in + len; p < end && !rc;) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            char *le = nl ? nl : end;
            line_no++;
            size_t ll = (size_t)(le - p);
            if (ll && p[ll - 1] == '\r') ll--;
            bool blank = true;
            for (size_t k = 0; k < ll; k++) blank = blank && (p[k] == ' ' || p[k] == '\t');
            if (!blank) {
                char *text;
                size_t tl;
                const char *after;
                if (!lmx_json_str_decode(p, ll, &text, &tl, &after)) {
                    fprintf(stderr, "lmx tokenize: stdin line %zu is not a JSON string\n", line_no);
                    rc = 1;
                    break;
                }
                int32_t *ids;
                size_t n;
                st = lmx_tokenizer_encode(tok, text, tl, add_special, &ids, &n);
                free(text);
                if (st) {
                    fprintf(stderr, "lmx tokenize: stdin line %zu: ", line_no);
                    rc = lmx_cli_fail(st);
                    break;
                }
                print_ids(ids, n);
                free(ids);
            }
            p = nl ? nl + 1 : end;
        }
    }
    free(in);
    lmx_tokenizer_destroy(tok);
    if (fflush(stdout) != 0) return 1;
    return rc;
}
