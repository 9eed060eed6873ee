/* cmd_chat_template.c — `lmx chat-template MODEL [--no-generation-prompt] [--template NAME] [--var NAME=JSON]…`:
 * renders MODEL's chat template for the JSON array of messages on stdin, like transformers'
 * apply_chat_template(tokenize=False). stdout gets the rendered text byte-exact. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/chat_template.h"
#include "util/error.h"
#include "util/json.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lmx chat-template MODEL [--no-generation-prompt] [--template NAME] [--var NAME=JSON]...\n"
               "  stdin: a JSON array of messages; stdout: the rendered prompt (nothing appended).\n"
               "  --var adds a template variable, e.g. --var enable_thinking=false --var 'tools=[...]'.\n"
               "  --template picks a named template of a model with several (default: \"tool_use\" when\n"
               "  tools are given and the model has one, else \"default\", as transformers does).\n");
}

int lmx_cli_chat_template(int argc, char **argv) {
    const char *model = NULL;
    lmx_chat_template_select sel = {0};
    bool gen_prompt = true;
    int nvars = 0, rc = 0;
    char **names = calloc((size_t)argc + 1, sizeof *names);
    const char **values = calloc((size_t)argc + 1, sizeof *values);
    char *src = NULL, *special = NULL, *in = NULL, *ctx = NULL, *out = NULL;
    lmx_chat_template *t = NULL;
    if (!names || !values) { rc = lmx_cli_fail(lmx_error(LMX_ERR_OUT_OF_MEMORY, "arguments")); goto done; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *var = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); goto done; }
        if (!strcmp(a, "--no-generation-prompt")) gen_prompt = false;
        else if (!strcmp(a, "--template") && i + 1 < argc) sel.name = argv[++i];
        else if (!strncmp(a, "--template=", 11)) sel.name = a + 11;
        else if (!strcmp(a, "--var") && i + 1 < argc) var = argv[++i];
        else if (!strncmp(a, "--var=", 6)) var = a + 6;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "lmx chat-template: unknown option '%s'\n", a); usage(stderr); rc = 2; goto done; }
        else if (!model) model = a;
        else { fprintf(stderr, "lmx chat-template: unexpected argument '%s'\n", a); usage(stderr); rc = 2; goto done; }
        if (var) {
            const char *eq = strchr(var, '=');
            if (!eq || eq == var) { fprintf(stderr, "lmx chat-template: --var expects NAME=JSON, got '%s'\n", var); rc = 2; goto done; }
            const char *stop = NULL;
            cJSON *vj = lmx_json_parse(eq + 1, strlen(eq + 1), &stop); /* judged here, named (not "JSON offset N" of the context) */
            const char *tail = stop;
            while (vj && tail && (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r')) tail++;
            if (!vj || (tail && *tail)) {
                char why[160];
                if (vj) snprintf(why, sizeof why, "trailing text after the JSON value");
                else lmx_json_error(eq + 1, strlen(eq + 1), stop, why, sizeof why);
                fprintf(stderr, "lmx chat-template: --var %.*s: the value '%s' is not JSON: %s (strings need quotes: --var '%.*s=\"text\"')\n",
                        (int)(eq - var), var, eq + 1, why, (int)(eq - var), var);
                cJSON_Delete(vj);
                rc = 2;
                goto done;
            }
            cJSON_Delete(vj);
            names[nvars] = strndup(var, (size_t)(eq - var));
            if (!names[nvars]) { rc = lmx_cli_fail(lmx_error(LMX_ERR_OUT_OF_MEMORY, "arguments")); goto done; }
            values[nvars++] = eq + 1;
            /* transformers picks "tool_use" when tools is not None */
            if (!strcmp(names[nvars - 1], "tools")) sel.tools = strspn(eq + 1, " \t\r\n") != strlen(eq + 1) && strcmp(eq + 1, "null") != 0;
        }
    }
    if (!model) { usage(stderr); rc = 2; goto done; }

    lmx_status st = lmx_chat_template_load_dir_select(model, &sel, &src, &special);
    if (st == LMX_OK) st = lmx_chat_template_create(src, &t);
    if (st == LMX_OK) st = lmx_chat_template_set_name(t, model);
    if (st != LMX_OK) { rc = lmx_cli_fail(st); goto done; }

    size_t in_len = 0;
    in = lmx_cli_read_stdin(&in_len);
    if (!in) { rc = lmx_cli_fail(lmx_error(LMX_ERR_IO, "stdin")); goto done; }
    const char *p = in;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    if (*p != '[' || strlen(in) != in_len) { fprintf(stderr, "lmx chat-template: stdin must be a JSON array of messages\n"); rc = 2; goto done; }
    ctx = lmx_chat_template_context_json(special, in, gen_prompt, nvars, (const char *const *)names, values);
    if (!ctx) { rc = lmx_cli_fail(LMX_ERR_INVALID_ARGUMENT); goto done; }
    size_t out_len = 0;
    st = lmx_chat_template_render_json(t, ctx, strlen(ctx), &out, &out_len);
    if (st != LMX_OK) { rc = lmx_cli_fail(st); goto done; }
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) rc = lmx_cli_fail(lmx_error(LMX_ERR_IO, "stdout"));
done:
    for (int i = 0; names && i < nvars; i++) free(names[i]);
    free(names);
    free(values);
    free(src);
    free(special);
    free(in);
    free(ctx);
    free(out);
    lmx_chat_template_destroy(t);
    return rc;
}
