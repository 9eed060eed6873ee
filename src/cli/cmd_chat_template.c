/* cmd_chat_template.c — `lmx chat-template MODEL [--no-generation-prompt] [--var NAME=JSON]…`:
 * renders MODEL's chat template for the JSON array of messages on stdin, like transformers'
 * apply_chat_template(tokenize=False). stdout gets the rendered text byte-exact. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat_template.h"
#include "util/error.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lmx chat-template MODEL [--no-generation-prompt] [--var NAME=JSON]...\n"
               "  stdin: a JSON array of messages; stdout: the rendered prompt (nothing appended).\n"
               "  --var adds a template variable, e.g. --var enable_thinking=false --var 'tools=[...]'.\n");
}

static bool valid_name(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i && c >= '0' && c <= '9'))) return false;
    }
    return true;
}

/* Appends `"name": value` (value is raw JSON text) to buf, replacing an earlier key of that name
 * is not needed: later keys win in the engine's dict (same as Python kwargs). */
static bool append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap : 256);
        while (nc < *len + n + 1) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return false;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

int lmx_cli_chat_template(int argc, char **argv) {
    const char *model = NULL;
    bool gen_prompt = true;
    int nvars = 0;
    const char **vars = calloc((size_t)argc, sizeof *vars);
    if (!vars) return lmx_cli_fail(lmx_error(LMX_ERR_OUT_OF_MEMORY, "arguments"));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); free(vars); return 0; }
        if (!strcmp(a, "--no-generation-prompt")) gen_prompt = false;
        else if (!strcmp(a, "--var") && i + 1 < argc) vars[nvars++] = argv[++i];
        else if (!strncmp(a, "--var=", 6)) vars[nvars++] = a + 6;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "lmx chat-template: unknown option '%s'\n", a); usage(stderr); free(vars); return 2; }
        else if (!model) model = a;
        else { fprintf(stderr, "lmx chat-template: unexpected argument '%s'\n", a); usage(stderr); free(vars); return 2; }
    }
    if (!model) { usage(stderr); free(vars); return 2; }

    char *src = NULL, *special = NULL;
    lmx_status st = lmx_chat_template_load_dir(model, &src, &special);
    if (st != LMX_OK) { free(vars); return lmx_cli_fail(st); }
    lmx_chat_template *t = NULL;
    st = lmx_chat_template_create(src, &t);
    free(src);
    if (st != LMX_OK) { free(special); free(vars); return lmx_cli_fail(st); }

    size_t in_len = 0;
    char *in = lmx_cli_read_stdin(&in_len);
    if (!in) { free(special); free(vars); lmx_chat_template_destroy(t); return lmx_cli_fail(lmx_error(LMX_ERR_IO, "stdin")); }
    const char *p = in;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    int rc = 0;
    if (*p != '[') {
        fprintf(stderr, "lmx chat-template: stdin must be a JSON array of messages\n");
        rc = 2;
    }
    /* context = special tokens, then messages/add_generation_prompt, then --var (later wins) */
    char *ctx = NULL;
    size_t len = 0, cap = 0;
    bool ok = rc == 0;
    size_t sl = strlen(special);
    if (sl < 2 || special[sl - 1] != '}') ok = false, rc = lmx_cli_fail(lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "special tokens"));
    ok = ok && append(&ctx, &len, &cap, special, sl - 1); /* drop the closing brace */
    ok = ok && append(&ctx, &len, &cap, sl > 2 ? "," : "", sl > 2 ? 1 : 0);
    ok = ok && append(&ctx, &len, &cap, "\"messages\":", 11) && append(&ctx, &len, &cap, in, in_len);
    ok = ok && append(&ctx, &len, &cap, gen_prompt ? ",\"add_generation_prompt\":true" : ",\"add_generation_prompt\":false",
                      gen_prompt ? 29 : 30);
    for (int i = 0; ok && i < nvars; i++) {
        const char *eq = strchr(vars[i], '=');
        if (!eq || !valid_name(vars[i], (size_t)(eq - vars[i]))) {
            fprintf(stderr, "lmx chat-template: --var expects NAME=JSON, got '%s'\n", vars[i]);
            rc = 2;
            ok = false;
            break;
        }
        ok = append(&ctx, &len, &cap, ",\"", 2) && append(&ctx, &len, &cap, vars[i], (size_t)(eq - vars[i])) &&
             append(&ctx, &len, &cap, "\":", 2) && append(&ctx, &len, &cap, eq + 1, strlen(eq + 1));
    }
    ok = ok && append(&ctx, &len, &cap, "}", 1);
    if (ok) {
        char *out = NULL;
        size_t out_len = 0;
        st = lmx_chat_template_render_json(t, ctx, len, &out, &out_len);
        if (st != LMX_OK) rc = lmx_cli_fail(st);
        else {
            if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) rc = lmx_cli_fail(lmx_error(LMX_ERR_IO, "stdout"));
            free(out);
        }
    } else if (rc == 0) rc = lmx_cli_fail(lmx_error(LMX_ERR_OUT_OF_MEMORY, "context"));
    free(ctx);
    free(in);
    free(special);
    free(vars);
    lmx_chat_template_destroy(t);
    return rc;
}
