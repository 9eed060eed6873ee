/* bench_prompt_cache.c — time to first token of a multi-turn chat with and without the prompt cache
 * (issue 10 item 2), over lmx.h on the CPU. Not a test (docs/BENCHMARKS.md, "Prompt cache").
 *   bench_prompt_cache MODEL_DIR [--turns 8] [--tokens 32] [--system-words 300] [--threads 0]
 *                                [--ctx 4096]
 * The conversation: a system prompt of --system-words words, then per turn a short user message
 * and a greedy reply of --tokens tokens (EOS ignored) that goes into the history. It runs twice in
 * fresh runtimes, prompt_cache_bytes = 0 and the default, and prints per turn the prompt tokens,
 * cached tokens and TTFT of both, then one JSON line with the totals. The replies are compared:
 * the cache must not change them. */
#define _GNU_SOURCE
#include "lmx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TURNS 64

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static int on_text(const char *t, size_t len, void *user) {
    text *b = user;
    if (b->len + len + 1 > b->cap) {
        b->cap = (b->len + len + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s) return 1;
    }
    memcpy(b->s + b->len, t, len);
    b->len += len;
    b->s[b->len] = '\0';
    return 0;
}

typedef struct turn {
    int prompt, cached;
    double ttft_ms, prefill_ms;
    char *reply;
} turn;

static int run(const char *model, int turns, int tokens, const char *sys, int threads, int ctx, int64_t pc,
               turn *out) {
    lmx_config c = lmx_config_default();
    c.device = LMX_DEVICE_CPU;
    c.n_threads = threads;
    c.max_context_length = ctx;
    c.prompt_cache_bytes = pc;
    lmx_runtime *rt = NULL;
    if (lmx_runtime_create(&c, &rt) != LMX_OK) return -1;
    if (lmx_model_load(rt, model, model) != LMX_OK) {
        fprintf(stderr, "load %s: %s\n", model, lmx_last_error_detail());
        lmx_runtime_destroy(rt);
        return -1;
    }
    lmx_message *msgs = calloc((size_t)(2 * turns + 1), sizeof *msgs);
    char (*users)[96] = calloc((size_t)turns, sizeof *users);
    int n = 0, rc = 0;
    msgs[n++] = (lmx_message){"system", sys};
    for (int t = 0; t < turns; t++) {
        snprintf(users[t], sizeof users[t], "Question %d: what comes after the number %d?", t + 1, 10 * t + 7);
        msgs[n++] = (lmx_message){"user", users[t]};
        lmx_gen_options o = lmx_gen_options_default();
        o.sampling.temperature = 0;
        o.max_tokens = tokens;
        o.ignore_eos = true;
        text b = {0};
        lmx_gen_result r;
        if (lmx_chat_stream(rt, model, msgs, n, &o, on_text, &b, &r) != LMX_OK) {
            fprintf(stderr, "turn %d: %s\n", t + 1, lmx_last_error_detail());
            free(b.s);
            rc = -1;
            break;
        }
        out[t] = (turn){r.n_prompt_tokens, r.cached_tokens, r.ttft_ms, r.prefill_ms, b.s ? b.s : strdup("")};
        msgs[n++] = (lmx_message){"assistant", out[t].reply};
    }
    free(users);
    free(msgs);
    lmx_runtime_destroy(rt);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [--turns N] [--tokens T] [--system-words W] [--threads N] [--ctx C]\n",
                argv[0]);
        return 2;
    }
    const char *model = argv[1];
    int turns = 8, tokens = 32, words = 300, threads = 0, ctx = 4096;
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--turns")) turns = v;
        else if (!strcmp(argv[i], "--tokens")) tokens = v;
        else if (!strcmp(argv[i], "--system-words")) words = v;
        else if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--ctx")) ctx = v;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (turns < 1 || turns > MAX_TURNS || tokens < 1 || words < 0) return 2;
    static const char *vocab[] = {"please", "answer", "every", "question", "briefly", "and", "kindly", "with", "care"};
    char *sys = calloc((size_t)words + 1, 12);
    for (int i = 0; i < words; i++) {
        strcat(sys, vocab[i % 9]);
        strcat(sys, " ");
    }
    turn off[MAX_TURNS] = {{0}}, on[MAX_TURNS] = {{0}};
    if (run(model, turns, tokens, sys, threads, ctx, 0, off) != 0 || run(model, turns, tokens, sys, threads, ctx, -1, on) != 0)
        return 1;
    double sum_off = 0, sum_on = 0;
    int same = 1, cached = 0, prompt = 0;
    printf("turn  prompt  cached   ttft_off_ms  ttft_on_ms  speedup\n");
    for (int t = 0; t < turns; t++) {
        printf("%4d  %6d  %6d  %12.2f  %10.2f  %6.2fx\n", t + 1, on[t].prompt, on[t].cached, off[t].ttft_ms, on[t].ttft_ms,
               on[t].ttft_ms > 0 ? off[t].ttft_ms / on[t].ttft_ms : 0);
        if (t > 0) { /* turn 1 has nothing to reuse */
            sum_off += off[t].ttft_ms;
            sum_on += on[t].ttft_ms;
        }
        cached += on[t].cached;
        prompt += on[t].prompt;
        same &= strcmp(off[t].reply, on[t].reply) == 0 && off[t].prompt == on[t].prompt;
        free(off[t].reply);
        free(on[t].reply);
    }
    printf("{\"model\":\"%s\",\"turns\":%d,\"tokens\":%d,\"system_words\":%d,\"threads\":%d,\"prompt_tokens\":%d,"
           "\"cached_tokens\":%d,\"ttft_ms_turns_2_on\":{\"off\":%.2f,\"on\":%.2f},\"speedup\":%.2f,"
           "\"replies_identical\":%s}\n",
           model, turns, tokens, words, threads, prompt, cached, sum_off, sum_on, sum_on > 0 ? sum_off / sum_on : 0,
           same ? "true" : "false");
    free(sys);
    return same ? 0 : 1;
}
