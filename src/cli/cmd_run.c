/* cmd_run.c — `lmx run MODEL [PROMPT]`: chat with streaming output. With PROMPT: one turn; without:
 * an interactive conversation on stdin (one message per line; /bye or end of input quits). */
#include "cli.h"
#include "gen_opts.h"
#include "reply_text.h"
#include "util/json_str.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The longest line read as one message (bytes). */
#define LMX_RUN_MAX_LINE (1 << 20)

static void usage(FILE *f) {
    fprintf(f, "usage: lmx run MODEL [PROMPT] [--system TEXT] [--verbose] [options]\n"
               "MODEL is a registered name or a model directory. The conversation is rendered with the\n"
               "model's chat template. Without PROMPT: interactive, one message per line (/bye or end of\n"
               "input quits). A line that is not UTF-8 or longer than 1 MiB is refused and the conversation\n"
               "goes on; when the conversation outgrows the context, the oldest exchanges are dropped (the\n"
               "system message is kept) and stderr says so.\n"
               "  --system TEXT             a system message first\n"
               "  --verbose                 timings after each reply (stderr)\n%s",
            lmx_cli_gen_help);
}

/* history: messages whose strings are owned (malloc'd) */
typedef struct history {
    lmx_message *m;
    int n, cap;
    bool raw_warned; /* the "no chat template" notice was printed */
} history;

static bool push(history *h, const char *role, const char *content) {
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 8;
        lmx_message *nm = realloc(h->m, (size_t)cap * sizeof *nm);
        if (!nm) return false;
        h->m = nm;
        h->cap = cap;
    }
    char *c = strdup(content);
    if (!c) return false;
    h->m[h->n].role = role;
    h->m[h->n].content = c;
    h->n++;
    return true;
}

static void history_free(history *h) {
    for (int i = 0; i < h->n; i++) free((char *)h->m[i].content);
    free(h->m);
}

/* Drops the oldest exchange (the first non-system message and the replies up to the next user
 * message), never the last message. Returns how many messages went. */
static int drop_oldest(history *h) {
    int a = 0;
    while (a < h->n && !strcmp(h->m[a].role, "system")) a++;
    if (a >= h->n - 1) return 0;
    int b = a + 1;
    while (b < h->n - 1 && strcmp(h->m[b].role, "user") != 0) b++;
    for (int i = a; i < b; i++) free((char *)h->m[i].content);
    memmove(h->m + a, h->m + b, (size_t)(h->n - b) * sizeof *h->m);
    h->n -= b - a;
    return b - a;
}

static void pop(history *h) {
    if (h->n > 0) free((char *)h->m[--h->n].content);
}

static bool context_overflow(lmx_status st) {
    return st == LMX_ERR_INVALID_ARGUMENT && strstr(lmx_last_error_detail(), "more than the context length");
}

/* One interactive turn for the user message just pushed. Problems are reported and the
 * conversation goes on: a history that outgrew the context loses its oldest exchanges (said on
 * stderr, as ollama does); a message that cannot be answered is taken back out. */
/* The model's reply to the conversation, streamed to stdout (and kept in r). A base model (no
 * chat template) continues the last message as raw text, as mlx-lm does; said once per run. */
static lmx_status reply(lmx_runtime *rt, const char *model, history *h, const lmx_gen_options *o, lmx_cli_reply *r,
                        lmx_gen_result *res) {
    lmx_status st = lmx_chat_stream(rt, model, h->m, h->n, o, lmx_cli_reply_piece, r, res);
    if (st == LMX_ERR_TEMPLATE && strstr(lmx_last_error_detail(), "no chat template")) {
        if (!h->raw_warned) fprintf(stderr, "lmx run: %s has no chat template; continuing the raw text\n", model);
        h->raw_warned = true;
        st = lmx_generate_stream(rt, model, h->m[h->n - 1].content, o, lmx_cli_reply_piece, r, res);
    }
    return st;
}

static void report(const lmx_gen_result *res) {
    fprintf(stderr, "[%d prompt tokens, %d generated, ttft %.1f ms, %.1f tokens/s, %s]\n", res->n_prompt_tokens,
            res->n_generated_tokens, res->ttft_ms, res->tokens_per_second,
            res->finish_reason == LMX_FINISH_STOP ? "stop" : "length");
}

static void interactive_turn(lmx_runtime *rt, const char *model, history *h, const lmx_gen_options *o, bool verbose,
                             int ctx) {
    int dropped = 0;
    for (;;) {
        lmx_cli_reply r = {.stream = true};
        lmx_gen_result res;
        lmx_status st = reply(rt, model, h, o, &r, &res);
        if (context_overflow(st) && !r.p) {
            int k = drop_oldest(h);
            if (k > 0) {
                dropped += k;
                continue;
            }
        }
        if (dropped)
            fprintf(stderr, "lmx run: the conversation outgrew the context (--ctx %d); dropped the %d oldest message%s\n",
                    ctx, dropped, dropped == 1 ? "" : "s");
        if (r.p || st == LMX_OK) putchar('\n');
        fflush(stdout);
        if (st != LMX_OK) {
            if (context_overflow(st))
                fprintf(stderr, "lmx run: this message does not fit the context (--ctx %d) even alone: %s; not sent, "
                                "the conversation goes on\n", ctx, lmx_last_error_detail());
            else
                fprintf(stderr, "lmx run: %s: %s; message not answered, the conversation goes on\n", lmx_status_str(st),
                        lmx_last_error_detail());
            free(r.p);
            pop(h); /* the user message: not part of the conversation */
            return;
        }
        if (verbose) report(&res);
        if (!push(h, "assistant", r.p ? r.p : "")) {
            fprintf(stderr, "lmx run: out of memory keeping the reply\n");
            pop(h);
        }
        free(r.p);
        return;
    }
}

static int turn(lmx_runtime *rt, const char *model, history *h, const lmx_gen_options *o, bool verbose) {
    lmx_cli_reply r = {.stream = true};
    lmx_gen_result res;
    lmx_status st = reply(rt, model, h, o, &r, &res);
    putchar('\n');
    if (st != LMX_OK) {
        free(r.p);
        return lmx_cli_fail(st);
    }
    if (verbose) report(&res);
    bool ok = push(h, "assistant", r.p ? r.p : "");
    free(r.p);
    return ok ? 0 : 1;
}

int lmx_cli_run(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *system = NULL;
    bool verbose = false;
    lmx_cli_gen g;
    lmx_cli_gen_init(&g);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--verbose")) {
            verbose = true;
        } else if (!strcmp(a, "--system") && v) {
            system = v;
            i++;
        } else if ((r = lmx_cli_gen_option("run", a, v, &g)) != 0) {
            if (r < 0) return 2;
            i += r - 1;
        } else if (a[0] != '-' && !model) {
            model = a;
        } else if (a[0] != '-' && !prompt) {
            prompt = a;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    const lmx_gen_options *o = &g.opt;
    g.cfg.max_cached_models = 1;
    lmx_runtime *rt = NULL;
    lmx_status st = lmx_runtime_create(&g.cfg, &rt);
    if (st != LMX_OK) return lmx_cli_fail(st);
    if ((st = lmx_model_load(rt, model, NULL)) != LMX_OK) {
        lmx_runtime_destroy(rt);
        return lmx_cli_fail(st);
    }
    history h = {0};
    int rc = 0;
    if (system && !push(&h, "system", system)) rc = 1;
    if (!rc && prompt) {
        rc = push(&h, "user", prompt) ? turn(rt, model, &h, o, verbose) : 1;
    } else if (!rc) {
        bool tty = isatty(0);
        char *line = NULL;
        size_t cap = 0;
        for (;;) {
            if (tty) fputs(">>> ", stderr);
            ssize_t n = getline(&line, &cap, stdin);
            if (n < 0) break;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
            if (!strcmp(line, "/bye")) break;
            if (n == 0) continue;
            if ((size_t)n > LMX_RUN_MAX_LINE) {
                fprintf(stderr, "lmx run: that line has %zd bytes, more than the %d-byte limit for one message; not "
                                "sent, the conversation goes on\n", n, LMX_RUN_MAX_LINE);
                continue;
            }
            if ((size_t)n != strlen(line) || !lmx_utf8_valid(line, (size_t)n)) {
                size_t at = 0;
                while (at < (size_t)n && line[at] && lmx_utf8_seq_len(line + at, (size_t)n - at))
                    at += lmx_utf8_seq_len(line + at, (size_t)n - at);
                fprintf(stderr, "lmx run: that line is not valid UTF-8 text (byte 0x%02X at offset %zu); not sent, the "
                                "conversation goes on\n", (unsigned char)line[at], at);
                continue;
            }
            if (!push(&h, "user", line)) {
                rc = 1;
                break;
            }
            interactive_turn(rt, model, &h, o, verbose, g.cfg.max_context_length);
        }
        free(line);
    }
    history_free(&h);
    lmx_runtime_destroy(rt);
    return rc;
}
