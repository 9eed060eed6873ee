/* cmd_generate.c — `lmx generate MODEL (--prompt TEXT | --prompt-ids 1,2,3) [sampling options]
 * [--json]`: a completion through the public API (lmx_generate_stream / lmx_generate_ids).
 *
 * Contract (other tools depend on it): with --json, one JSON object on stdout
 *   {"token_ids": [generated ids, EOS excluded], "text": "...", "finish_reason": "stop"|"length",
 *    "prompt_tokens": n, "completion_tokens": n,
 *    "metrics": {"ttft_ms", "tokens_per_second", "prompt_tokens_per_second", "n_prompt_tokens",
 *                "n_generated_tokens", "total_ms", "load_ms"}}
 * Without --json the text is streamed to stdout as it is generated (a model without a tokenizer has
 * no text: its generated ids are printed space-separated instead). --prompt adds the tokenizer's
 * special tokens (BOS) unless the text already starts with the BOS token; --prompt-ids are used as
 * they are. MODEL is a registered name or a model directory. */
#include "cli.h"
#include "gen_opts.h"
#include "reply_text.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: lmx generate MODEL (--prompt TEXT | --prompt-ids 1,2,3) [options] [--json]\n"
            "  --prompt TEXT             raw text prompt (BOS added as the tokenizer says)\n"
            "  --prompt-ids IDS          comma-separated token ids, used as they are\n"
            "  --json                    print one JSON object (token_ids, text, finish_reason, metrics)\n"
            "%s",
            lmx_cli_gen_help);
}

static const char *finish_name(lmx_finish_reason r) {
    return r == LMX_FINISH_STOP ? "stop" : r == LMX_FINISH_LENGTH ? "length" : "cancelled";
}

/* The JSON object, written with ", " and ": " separators (the original contract's spelling). */
static int print_json(const int32_t *ids, size_t n_ids, const lmx_cli_reply *t, const lmx_gen_result *r, double load_ms) {
    cJSON *js = cJSON_CreateString(t->p ? t->p : ""); /* cJSON escapes the text */
    char *text = js ? cJSON_PrintUnformatted(js) : NULL;
    cJSON_Delete(js);
    if (!text) {
        fprintf(stderr, "lmx generate: out of memory\n");
        return 1;
    }
    printf("{\"token_ids\": [");
    for (size_t i = 0; i < n_ids; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("], \"text\": %s, \"finish_reason\": \"%s\", \"prompt_tokens\": %d, \"completion_tokens\": %d, "
           "\"metrics\": {\"ttft_ms\": %.3f, \"tokens_per_second\": %.3f, \"prompt_tokens_per_second\": %.3f, "
           "\"n_prompt_tokens\": %d, \"n_generated_tokens\": %d, \"total_ms\": %.3f, \"load_ms\": %.3f}}\n",
           text, finish_name(r->finish_reason), r->n_prompt_tokens, r->n_generated_tokens, r->ttft_ms,
           r->tokens_per_second, r->prompt_tokens_per_second, r->n_prompt_tokens, r->n_generated_tokens, r->total_ms,
           load_ms);
    cJSON_free(text);
    return 0;
}

int lmx_cli_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL;
    int32_t *prompt_ids = NULL;
    size_t n_prompt_ids = 0;
    bool json = false;
    lmx_cli_gen g;
    lmx_cli_gen_init(&g);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(prompt_ids);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--prompt") && v) {
            prompt = v;
            i++;
        } else if (!strcmp(a, "--prompt-ids") && v) {
            free(prompt_ids);
            if (!lmx_cli_parse_ids(v, &prompt_ids, &n_prompt_ids)) {
                fprintf(stderr, "lmx generate: --prompt-ids must be a comma-separated list of token ids\n");
                return 2;
            }
            i++;
        } else if ((r = lmx_cli_gen_option("generate", a, v, &g)) != 0) {
            if (r < 0) {
                free(prompt_ids);
                return 2;
            }
            i += r - 1;
        } else if (a[0] != '-' && !model) {
            model = a;
        } else {
            fprintf(stderr, "lmx generate: unexpected argument '%s'\n", a);
            usage(stderr);
            free(prompt_ids);
            return 2;
        }
    }
    if (!model || (!prompt) == (!prompt_ids)) {
        fprintf(stderr, "lmx generate: MODEL and one of --prompt / --prompt-ids are required\n");
        usage(stderr);
        free(prompt_ids);
        return 2;
    }
    /* token ids: the context needs exactly prompt + max_tokens positions (no 4096-position cache
     * for a 24-token continuation); text: the default context unless --ctx */
    if (prompt_ids && !g.ctx_given && g.opt.max_tokens >= 0 && n_prompt_ids + (size_t)g.opt.max_tokens < 0x7fffffff)
        g.cfg.max_context_length = (int)(n_prompt_ids + (size_t)g.opt.max_tokens) + 1;
    g.cfg.max_cached_models = 1;

    lmx_runtime *rt = NULL;
    lmx_status st = lmx_runtime_create(&g.cfg, &rt);
    if (st == LMX_OK) st = lmx_model_load(rt, model, NULL);
    lmx_metrics lm;
    double load_ms = st == LMX_OK && lmx_metrics_get(rt, model, &lm) == LMX_OK ? lm.load_ms : 0;
    lmx_cli_reply t = {.stream = !json};
    lmx_gen_result res;
    memset(&res, 0, sizeof res);
    int32_t *out = NULL;
    size_t n_out = 0;
    if (st == LMX_OK && !prompt_ids) /* the same tokenization lmx_generate_stream does (BOS rule) */
        st = lmx_tokenize(rt, model, prompt, true, &prompt_ids, &n_prompt_ids);
    if (st == LMX_OK)
        st = lmx_generate_ids(rt, model, prompt_ids, n_prompt_ids, &g.opt, lmx_cli_reply_piece, &t, &out, &n_out, &res);
    if (t.oom) st = LMX_ERR_OUT_OF_MEMORY;
    int rc = 0;
    if (st != LMX_OK) {
        if (t.len && !json) putchar('\n');
        rc = lmx_cli_fail(st);
    } else if (json) {
        rc = print_json(out, n_out, &t, &res, load_ms);
    } else {
        if (t.len == 0 && n_out > 0) /* no tokenizer: show the ids */
            for (size_t i = 0; i < n_out; i++) printf("%s%d", i ? " " : "", out[i]);
        putchar('\n');
    }
    lmx_free(out);
    free(t.p);
    free(prompt_ids); /* from lmx_cli_parse_ids or lmx_tokenize: both malloc */
    lmx_runtime_destroy(rt);
    return rc;
}
