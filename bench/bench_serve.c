/* bench_serve.c — load generator for `lmx serve`: N concurrent streamed completions of T tokens
 * each (greedy), over one libcurl multi handle; prints one JSON line: aggregate generated tok/s,
 * per-stream decode tok/s, time to first token (p50/p95/max), failures. Not a test (see
 * docs/SERVER.md, "Benchmarking").
 *   bench_serve http://127.0.0.1:8080 MODEL [--streams 8] [--tokens 128] [--prompt-words 100]
 *                                           [--key KEY] [--distinct 0|1] [--ignore-eos 0|1]
 * The prompt is `--prompt-words` repetitions of a word (about that many tokens); with --distinct 1
 * (the default) each stream's prompt starts with its own number, so the prompt cache cannot share
 * one stream's prefill with the others (--distinct 0: the same prompt for all). --ignore-eos 1 (the
 * default) asks the server to generate exactly --tokens per stream (its `ignore_eos` extension).
 * Tokens are counted from each stream's usage chunk (stream_options.include_usage). All N streams
 * start at once; with `lmx serve --parallel N` they run as one batch on engines with batched steps. */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct stream {
    CURL *h;
    char *buf;
    size_t len, cap;
    double t_first;       /* first content chunk, seconds after the start */
    double t_done;
    int tokens;
} stream;

static double t0;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t on_data(char *d, size_t sz, size_t n, void *u) {
    stream *s = u;
    size_t k = sz * n;
    if (s->len + k + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        while (cap < s->len + k + 1) cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) return 0;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, d, k);
    s->len += k;
    s->buf[s->len] = '\0';
    if (s->t_first == 0 && strstr(s->buf, "\"text\":\"") && !strstr(s->buf, "\"text\":\"\"")) s->t_first = now_s() - t0;
    return k;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_serve URL MODEL [--streams N] [--tokens T] [--prompt-words W] [--key KEY] "
                        "[--distinct 0|1] [--ignore-eos 0|1]\n");
        return 2;
    }
    const char *url = argv[1], *model = argv[2], *key = NULL;
    int n = 8, tokens = 128, words = 100, distinct = 1, ignore_eos = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--streams")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--distinct")) distinct = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ignore-eos")) ignore_eos = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt-words")) words = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--key")) key = argv[i + 1];
        else {
            fprintf(stderr, "bench_serve: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (n < 1 || n > 4096 || tokens < 1 || words < 0 || words > 100000) {
        fprintf(stderr, "bench_serve: bad --streams/--tokens/--prompt-words\n");
        return 2;
    }
    size_t cap = (size_t)words * 6 + strlen(model) + 256;
    char *bodies = malloc(cap * (size_t)n), endpoint[1024], auth[512]; /* [n][cap] request bodies */
    if (!bodies) return 1;
    for (int k = 0; k < n; k++) {
        char *body = bodies + cap * (size_t)k;
        int off = snprintf(body, cap, "{\"model\":\"%s\",\"prompt\":\"", model);
        if (distinct) off += snprintf(body + off, cap - (size_t)off, "%d ", k);
        for (int i = 0; i < words; i++) off += snprintf(body + off, cap - (size_t)off, "hello ");
        snprintf(body + off, cap - (size_t)off,
                 "\",\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":%s,\"stream\":true,"
                 "\"stream_options\":{\"include_usage\":true}}",
                 tokens, ignore_eos ? "true" : "false");
    }
    snprintf(endpoint, sizeof endpoint, "%s/v1/completions", url);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    stream *ss = calloc((size_t)n, sizeof *ss);
    for (int i = 0; i < n; i++) {
        ss[i].h = curl_easy_init();
        curl_easy_setopt(ss[i].h, CURLOPT_URL, endpoint);
        curl_easy_setopt(ss[i].h, CURLOPT_POSTFIELDS, bodies + cap * (size_t)i);
        curl_easy_setopt(ss[i].h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(ss[i].h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(ss[i].h, CURLOPT_WRITEDATA, &ss[i]);
        curl_easy_setopt(ss[i].h, CURLOPT_PRIVATE, &ss[i]);
        curl_easy_setopt(ss[i].h, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(ss[i].h, CURLOPT_TIMEOUT, 3600L);
        curl_multi_add_handle(m, ss[i].h);
    }
    t0 = now_s();
    int running = n;
    while (running) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)))
            if (msg->msg == CURLMSG_DONE) {
                stream *s;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
                s->t_done = now_s() - t0;
            }
        if (running) curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    double wall = now_s() - t0;
    long total = 0;
    int failures = 0;
    double *ttft = calloc((size_t)n, sizeof *ttft), dec_sum = 0;
    for (int i = 0; i < n; i++) {
        stream *s = &ss[i];
        long code = 0;
        curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
        const char *u = s->buf ? strstr(s->buf, "\"completion_tokens\":") : NULL;
        if (code != 200 || !u || !strstr(s->buf, "data: [DONE]")) {
            failures++;
        } else {
            s->tokens = atoi(u + strlen("\"completion_tokens\":"));
            total += s->tokens;
            if (s->t_done > s->t_first && s->tokens > 1) dec_sum += (s->tokens - 1) / (s->t_done - s->t_first);
        }
        ttft[i] = s->t_first;
        curl_multi_remove_handle(m, s->h);
        curl_easy_cleanup(s->h);
        free(s->buf);
    }
    qsort(ttft, (size_t)n, sizeof *ttft, cmp);
    int ok = n - failures;
    printf("{\"streams\":%d,\"tokens_per_stream\":%d,\"prompt_words\":%d,\"failures\":%d,\"wall_s\":%.3f,"
           "\"generated_tokens\":%ld,\"aggregate_tok_s\":%.1f,\"mean_stream_decode_tok_s\":%.1f,"
           "\"ttft_p50_ms\":%.1f,\"ttft_p95_ms\":%.1f,\"ttft_max_ms\":%.1f}\n",
           n, tokens, words, failures, wall, total, wall > 0 ? (double)total / wall : 0, ok ? dec_sum / ok : 0,
           ttft[n / 2] * 1e3, ttft[(int)(n * 0.95) < n ? (int)(n * 0.95) : n - 1] * 1e3, ttft[n - 1] * 1e3);
    curl_multi_cleanup(m);
    curl_slist_free_all(hdr);
    curl_global_cleanup();
    free(ss);
    free(ttft);
    free(bodies);
    return failures ? 1 : 0;
}
