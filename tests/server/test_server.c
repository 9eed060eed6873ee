/* test_server.c — `lmx serve` over loopback with a libcurl client, against a tiny real-shaped
 * model with a real tokenizer and chat template (tests/engine's engine_models fixture):
 *   chat and completions, streamed and not, usage and timings; a table of bad requests with
 *   their status and error type; N concurrent streams (argv[1], default 32) all complete and
 *   well-formed, with greedy outputs identical to the same request alone; a client disconnect
 *   cancels its generation (the slot is free again); a full queue answers 503 + Retry-After;
 *   SIGTERM ends running streams well-formed and the server exits 0 (under ThreadSanitizer too).
 * Only 127.0.0.1, every wait bounded. */
#define MODEL "tiny-llama32-q8"
#include "server_client.h"

static server S, S1; /* S: the main server; S1: --parallel 1 --queue 0 */
/* ---- tests ---- */
static void test_health_models(void) {
    char *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/health", NULL, NULL, &b), 200);
    CHECK(b && strstr(b, "\"ok\""));
    free(b);
    CHECK_EQ_INT(http(&S, NULL, "/v1/models", NULL, KEY, &b), 200);
    cJSON *j = parse(b);
    CHECK_EQ_STR(gets_(j, "object"), "list");
    bool found = false;
    const cJSON *m;
    cJSON_ArrayForEach(m, get(j, "data")) if (gets_(m, "id") && !strcmp(gets_(m, "id"), MODEL)) found = true;
    CHECK(found);
    cJSON_Delete(j);
    free(b);
}

static char *chat_body(const char *content, int max_tokens, bool stream, double temp) {
    char *s = malloc(strlen(content) + 512);
    sprintf(s,
            "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"%s\"}]}],\"max_tokens\":%d,"
            "\"temperature\":%g,\"stream\":%s%s}",
            content, max_tokens, temp, stream ? "true" : "false",
            stream ? ",\"stream_options\":{\"include_usage\":true}" : "");
    return s;
}

static char *g_greedy; /* the greedy reply to "Tell me a story" alone */

static void test_chat(void) {
    char *body = chat_body("Tell me a story", 12, false, 0), *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/v1/chat/completions", body, KEY, &b), 200);
    cJSON *j = parse(b);
    CHECK_EQ_STR(gets_(j, "object"), "chat.completion");
    CHECK(gets_(j, "id") && !strncmp(gets_(j, "id"), "chatcmpl-", 9));
    CHECK_EQ_STR(gets_(j, "model"), MODEL);
    CHECK(getn(j, "created") > 1e9);
    CHECK_EQ_STR(gets_(j, "choices.0.message.role"), "assistant");
    CHECK(gets_(j, "choices.0.message.content") != NULL);
    const char *f = gets_(j, "choices.0.finish_reason");
    CHECK(f && (!strcmp(f, "length") || !strcmp(f, "stop")));
    CHECK(getn(j, "usage.prompt_tokens") > 5);
    CHECK(getn(j, "usage.completion_tokens") >= 1 && getn(j, "usage.completion_tokens") <= 12);
    CHECK_EQ_INT(getn(j, "usage.total_tokens"), getn(j, "usage.prompt_tokens") + getn(j, "usage.completion_tokens"));
    CHECK_EQ_INT(getn(j, "usage.prompt_tokens_details.cached_tokens"), 0);
    CHECK_EQ_INT(getn(j, "timings.prompt_n"), getn(j, "usage.prompt_tokens"));
    CHECK_EQ_INT(getn(j, "timings.predicted_n"), getn(j, "usage.completion_tokens"));
    CHECK(getn(j, "timings.prompt_ms") >= 0 && getn(j, "timings.predicted_per_second") >= 0);
    CHECK_EQ_INT(getn(j, "timings.cache_n"), 0);
    if (gets_(j, "choices.0.message.content")) g_greedy = strdup(gets_(j, "choices.0.message.content"));
    cJSON_Delete(j);
    free(b);
    /* the same request streamed: the same text, role first, finish_reason, usage chunk, [DONE] */
    free(body);
    body = chat_body("Tell me a story", 12, true, 0);
    CHECK_EQ_INT(http(&S, NULL, "/v1/chat/completions", body, KEY, &b), 200);
    stream_result r;
    stream_parse(b, true, &r);
    CHECK_MSG(r.ok, "stream: %s", b);
    CHECK(r.role_first);
    CHECK(r.usage_seen);
    CHECK(r.completion_tokens >= 1);
    CHECK(g_greedy && !strcmp(r.text, g_greedy));
    free(r.text);
    free(b);
    free(body);
}

static void test_completions(void) {
    char *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/v1/completions",
                      "{\"model\":\"" MODEL "\",\"prompt\":\"Once upon a time\",\"max_tokens\":6,\"temperature\":0,"
                      "\"stop\":[\"zzzz\"],\"seed\":3}",
                      KEY, &b),
                 200);
    cJSON *j = parse(b);
    CHECK_EQ_STR(gets_(j, "object"), "text_completion");
    CHECK(gets_(j, "id") && !strncmp(gets_(j, "id"), "cmpl-", 5));
    CHECK(gets_(j, "choices.0.text") != NULL);
    CHECK(getn(j, "usage.completion_tokens") >= 1);
    char *text = gets_(j, "choices.0.text") ? strdup(gets_(j, "choices.0.text")) : NULL;
    cJSON_Delete(j);
    free(b);
    /* streamed: the same text */
    CHECK_EQ_INT(http(&S, NULL, "/v1/completions",
                      "{\"model\":\"" MODEL "\",\"prompt\":\"Once upon a time\",\"max_tokens\":6,\"temperature\":0,"
                      "\"stop\":[\"zzzz\"],\"stream\":true}",
                      KEY, &b),
                 200);
    stream_result r;
    stream_parse(b, false, &r);
    CHECK_MSG(r.ok, "stream: %s", b);
    CHECK(!r.usage_seen); /* not asked */
    CHECK(text && !strcmp(r.text, text));
    free(r.text);
    free(b);
    free(text);
    /* token ids; default max_tokens (16 for completions) */
    CHECK_EQ_INT(http(&S, NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":[1,450,4996],\"temperature\":0}",
                      KEY, &b),
                 200);
    j = parse(b);
    CHECK_EQ_INT(getn(j, "usage.prompt_tokens"), 3);
    CHECK(getn(j, "usage.completion_tokens") >= 1 && getn(j, "usage.completion_tokens") <= 16);
    cJSON_Delete(j);
    free(b);
}

static void test_bad_requests(void) {
    static const struct {
        const char *method, *path, *body, *key;
        int status;
        const char *type, *param;
    } T[] = {
        {NULL, "/v1/chat/completions", "{not json", KEY, 400, "invalid_request_error", NULL},
        {NULL, "/v1/chat/completions", "[1,2]", KEY, 400, "invalid_request_error", NULL},
        {NULL, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", KEY, 400,
         "invalid_request_error", "model"},
        {NULL, "/v1/chat/completions", "{\"model\":\"" MODEL "\"}", KEY, 400, "invalid_request_error", "messages"},
        {NULL, "/v1/chat/completions", "{\"model\":\"" MODEL "\",\"messages\":[]}", KEY, 400, "invalid_request_error",
         "messages"},
        {NULL, "/v1/chat/completions", "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}",
         KEY, 400, "invalid_request_error", "messages[0].role"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", KEY, 400,
         "invalid_request_error", "messages[0].content[0]"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":-1}", KEY, 400,
         "invalid_request_error", "temperature"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":\"a\"}", KEY, 400,
         "invalid_request_error", "top_p"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1.5}", KEY, 400,
         "invalid_request_error", "max_tokens"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", KEY, 400,
         "invalid_request_error", "n"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":5}", KEY, 400,
         "invalid_request_error", "stop"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"presence_penalty\":2.5}", KEY,
         400, "invalid_request_error", "presence_penalty"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frequency_penalty\":\"a\"}", KEY,
         400, "invalid_request_error", "frequency_penalty"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}", KEY, 400,
         "invalid_request_error", "logprobs"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", KEY, 400,
         "invalid_request_error", "top_logprobs"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
         "\"top_logprobs\":21}", KEY, 400, "invalid_request_error", "top_logprobs"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{}}", KEY,
         400, "invalid_request_error", "stream_options"},
        {NULL, "/v1/chat/completions", "{\"model\":\"no-such-model\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         KEY, 404, "invalid_request_error", "model"},
        {NULL, "/v1/chat/completions", "{\"model\":\"/etc\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", KEY,
         404, "invalid_request_error", "model"},
        {NULL, "/v1/chat/completions",
         "{\"model\":\"../engine_models/" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", KEY, 404,
         "invalid_request_error", "model"},
        {NULL, "/v1/chat/completions", "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         NULL, 401, "authentication_error", NULL},
        {NULL, "/v1/chat/completions", "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "wrong", 401, "authentication_error", NULL},
        {NULL, "/v1/completions", "{\"model\":\"" MODEL "\"}", KEY, 400, "invalid_request_error", "prompt"},
        {NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":[\"a\",\"b\"]}", KEY, 400, "invalid_request_error",
         "prompt"},
        {NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":[1,-2]}", KEY, 400, "invalid_request_error",
         "prompt"},
        {NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":[1,99999999]}", KEY, 400,
         "invalid_request_error", "prompt"},
        {NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":\"x\",\"echo\":true}", KEY, 400,
         "invalid_request_error", "echo"},
        {NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":\"x\",\"logprobs\":21}", KEY, 400,
         "invalid_request_error", "logprobs"},
        {"GET", "/v1/chat/completions", NULL, KEY, 405, "invalid_request_error", NULL},
        {NULL, "/v1/nothing", "{}", KEY, 404, "invalid_request_error", NULL},
        {NULL, "/v1/models", NULL, NULL, 401, "authentication_error", NULL},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        char *b = NULL;
        long st = http(&S, T[i].method, T[i].path, T[i].body, T[i].key, &b);
        cJSON *j = parse(b);
        CHECK_MSG(st == T[i].status, "case %zu: status %ld, want %d: %s", i, st, T[i].status, b);
        CHECK_MSG(j && gets_(j, "error.message") && gets_(j, "error.type") && !strcmp(gets_(j, "error.type"), T[i].type),
                  "case %zu: %s", i, b);
        CHECK_MSG(cJSON_HasObjectItem(get(j, "error"), "param") && cJSON_HasObjectItem(get(j, "error"), "code"),
                  "case %zu: %s", i, b);
        if (T[i].param) CHECK_MSG(gets_(j, "error.param") && !strcmp(gets_(j, "error.param"), T[i].param),
                                  "case %zu: param: %s", i, b);
        cJSON_Delete(j);
        free(b);
    }
    /* a prompt longer than the context (512): 400 naming both lengths */
    size_t n = 8000;
    char *big = malloc(n * 6 + 128);
    strcpy(big, "{\"model\":\"" MODEL "\",\"prompt\":\"");
    for (size_t i = 0; i < n / 6; i++) strcat(big, "hello ");
    strcat(big, "\"}");
    char *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/v1/completions", big, KEY, &b), 400);
    cJSON *j = parse(b);
    CHECK_EQ_STR(gets_(j, "error.code"), "context_length_exceeded");
    CHECK(gets_(j, "error.message") && strstr(gets_(j, "error.message"), "512"));
    cJSON_Delete(j);
    free(b);
    /* streamed, the same error comes as a status, not a half stream */
    big[strlen(big) - 1] = '\0';
    strcat(big, ",\"stream\":true}");
    CHECK_EQ_INT(http(&S, NULL, "/v1/completions", big, KEY, &b), 400);
    free(b);
    free(big);
    /* a body over 8 MiB: 413 */
    size_t huge = (8u << 20) + 100;
    char *h = malloc(huge + 1);
    memset(h, ' ', huge);
    h[0] = '{';
    h[huge - 1] = '}';
    h[huge] = '\0';
    CHECK_EQ_INT(http(&S, NULL, "/v1/completions", h, KEY, &b), 413);
    j = parse(b);
    CHECK(j && gets_(j, "error.type"));
    cJSON_Delete(j);
    free(b);
    free(h);
}

/* N streamed chat requests at once; every one complete and well-formed; greedy outputs equal to
 * the request alone. */
static void test_concurrent(int N) {
    CURLM *m = curl_multi_init();
    req *rs = calloc((size_t)N, sizeof *rs);
    char *body = chat_body("Tell me a story", 12, true, 0);
    char *body2 = chat_body("Write a poem", 10, true, 0.8);
    for (int i = 0; i < N; i++) {
        req_init(&rs[i], &S, NULL, "/v1/chat/completions", i % 4 == 3 ? body2 : body, KEY);
        curl_multi_add_handle(m, rs[i].h);
    }
    double t0 = now_s();
    int running = N;
    while (running > 0 && now_s() - t0 < 600) {
        curl_multi_perform(m, &running);
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    CHECK_EQ_INT(running, 0);
    int failures = 0, mismatches = 0;
    for (int i = 0; i < N; i++) {
        long st = req_status(&rs[i]);
        stream_result r;
        stream_parse(rs[i].out.p ? rs[i].out.p : "", true, &r);
        if (st != 200 || !r.ok || !r.usage_seen || r.error_seen) {
            failures++;
            if (failures < 4) fprintf(stderr, "stream %d: status %ld body %.300s\n", i, st, rs[i].out.p ? rs[i].out.p : "");
        } else if (i % 4 != 3 && (!g_greedy || strcmp(r.text, g_greedy))) {
            mismatches++;
        }
        free(r.text);
        curl_multi_remove_handle(m, rs[i].h);
        req_free(&rs[i]);
    }
    fprintf(stderr, "%d concurrent streams in %.2f s: %d failures, %d greedy mismatches\n", N, now_s() - t0, failures,
            mismatches);
    CHECK_EQ_INT(failures, 0);
    CHECK_EQ_INT(mismatches, 0);
    curl_multi_cleanup(m);
    free(rs);
    free(body);
    free(body2);
}

static double metric(const server *s, const char *name) {
    char *b = NULL;
    double v = -1;
    if (http(s, NULL, "/metrics", NULL, KEY, &b) == 200) {
        char pat[128];
        snprintf(pat, sizeof pat, "\n%s ", name);
        const char *at = strstr(b, pat);
        if (at) v = atof(at + strlen(pat));
    }
    free(b);
    return v;
}

/* A client that reads a little of a long stream and goes away: its generation is cancelled and
 * its slot freed (busy slots back to 0, one more cancelled stream) within a few seconds. */
static void test_disconnect(void) {
    double before = metric(&S, "lmx_streams_cancelled_total");
    double gen_before = metric(&S, "lmx_generated_tokens_total");
    req r;
    req_init(&r, &S, NULL, "/v1/completions",
             "{\"model\":\"" MODEL "\",\"prompt\":\"Hi\",\"max_tokens\":100000,\"temperature\":1,\"seed\":1,"
             "\"stream\":true}",
             KEY);
    r.out.limit = 600; /* a few chunks, then the client closes */
    CURLcode c = curl_easy_perform(r.h);
    CHECK(c == CURLE_WRITE_ERROR);
    req_free(&r);
    double t_end = now_s() + 10;
    while (now_s() < t_end && (metric(&S, "lmx_busy_slots") != 0 || metric(&S, "lmx_streams_cancelled_total") <= before))
        usleep(20000);
    CHECK_EQ_INT(metric(&S, "lmx_busy_slots"), 0);
    CHECK(metric(&S, "lmx_streams_cancelled_total") >= before + 1);
    /* it stopped soon after the client left, far from the ~510 tokens the context (512) allows */
    double made = metric(&S, "lmx_generated_tokens_total") - gen_before;
    fprintf(stderr, "the cancelled stream generated %.0f tokens\n", made);
    CHECK(made >= 1 && made < 200);
}

/* --parallel 1 --queue 0: a second request while one runs gets 503 with Retry-After; SIGTERM while
 * a stream runs ends it well-formed and the server exits 0. */
static void test_queue_full_and_shutdown(void) {
    const char *extra[] = {"--parallel", "1", "--queue", "0", "--grace", "0.2", NULL};
    if (!server_start(&S1, extra)) {
        CHECK(!"second server started");
        return;
    }
    CURLM *m = curl_multi_init();
    req r;
    req_init(&r, &S1, NULL, "/v1/completions",
             "{\"model\":\"" MODEL "\",\"prompt\":\"Hi\",\"max_tokens\":100000,\"temperature\":1,\"seed\":2,"
             "\"stream\":true}",
             KEY);
    curl_multi_add_handle(m, r.h);
    int running = 1;
    double t_end = now_s() + 30;
    while (running && r.out.len < 200 && now_s() < t_end) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 20, NULL);
    }
    CHECK(r.out.len >= 200);
    req q;
    req_init(&q, &S1, NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":\"Hi\",\"max_tokens\":2}", KEY);
    CHECK(curl_easy_perform(q.h) == CURLE_OK);
    CHECK_EQ_INT(req_status(&q), 503);
    CHECK(atoi(q.out.retry_after) >= 1);
    CHECK(q.out.p && strstr(q.out.p, "queue_full"));
    req_free(&q);
    /* SIGTERM while the stream runs: it must end well-formed (an error event then [DONE]) */
    kill(S1.pid, SIGTERM);
    t_end = now_s() + 30;
    while (running && now_s() < t_end) {
        curl_multi_perform(m, &running);
        if (running) curl_multi_poll(m, NULL, 0, 20, NULL);
    }
    CHECK_EQ_INT(running, 0);
    stream_result sr;
    stream_parse(r.out.p ? r.out.p : "", false, &sr);
    CHECK_MSG(sr.ok, "stream at shutdown: ...%s", r.out.len > 400 ? r.out.p + r.out.len - 400 : r.out.p);
    free(sr.text);
    curl_multi_remove_handle(m, r.h);
    req_free(&r);
    curl_multi_cleanup(m);
    CHECK_EQ_INT(server_stop(&S1), 0);
}

/* --timeout: a generation that runs past it ends with finish_reason "length" (streamed and not);
 * --max-memory too small for the model: 503 out_of_memory, the server stays up. */
static void test_timeout_and_oom(void) {
    server t = {0}, o = {0};
    const char *ex_t[] = {"--timeout", "0.5", "--max-models", "1", NULL};
    if (!server_start(&t, ex_t)) {
        CHECK(!"timeout server started");
        return;
    }
    const char *long_gen = "{\"model\":\"" MODEL "\",\"prompt\":\"Hi\",\"max_tokens\":100000,\"temperature\":1,"
                           "\"seed\":5%s}";
    char body[512], *b = NULL;
    snprintf(body, sizeof body, long_gen, "");
    double t0 = now_s();
    CHECK_EQ_INT(http(&t, NULL, "/v1/completions", body, KEY, &b), 200);
    cJSON *j = parse(b);
    CHECK_EQ_STR(gets_(j, "choices.0.finish_reason"), "length");
    CHECK(now_s() - t0 < 20);
    cJSON_Delete(j);
    free(b);
    snprintf(body, sizeof body, long_gen, ",\"stream\":true");
    CHECK_EQ_INT(http(&t, NULL, "/v1/completions", body, KEY, &b), 200);
    stream_result r;
    stream_parse(b, false, &r);
    CHECK(r.ok);
    CHECK_EQ_STR(r.finish, "length");
    free(r.text);
    free(b);
    /* --max-models 1: a second model evicts the first (idle) one; both answer */
    CHECK_EQ_INT(http(&t, NULL, "/v1/completions",
                      "{\"model\":\"tiny-qwen-q4\",\"prompt\":\"Hi\",\"max_tokens\":2,\"temperature\":0}", KEY,
                      NULL),
                 200);
    CHECK(metric(&t, "lmx_model_cache_evictions_total") >= 1);
    CHECK_EQ_INT(metric(&t, "lmx_models_loaded"), 1);
    CHECK_EQ_INT(server_stop(&t), 0);

    const char *ex_o[] = {"--max-memory", "1000", NULL};
    if (!server_start(&o, ex_o)) {
        CHECK(!"oom server started");
        return;
    }
    CHECK_EQ_INT(http(&o, NULL, "/v1/completions", "{\"model\":\"" MODEL "\",\"prompt\":\"Hi\",\"max_tokens\":2}",
                      KEY, &b),
                 503);
    j = parse(b);
    CHECK_EQ_STR(gets_(j, "error.code"), "out_of_memory");
    cJSON_Delete(j);
    free(b);
    CHECK_EQ_INT(http(&o, NULL, "/health", NULL, NULL, NULL), 200);
    CHECK_EQ_INT(server_stop(&o), 0);
}

/* Usage errors exit 2 without listening; a port in use exits 1; /metrics has the per-model gauges. */
static void test_cli_and_metrics(void) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' serve --port abc >/dev/null 2>&1", LMX_CLI_PATH);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    snprintf(cmd, sizeof cmd, "'%s' serve --bogus >/dev/null 2>&1", LMX_CLI_PATH);
    st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    snprintf(cmd, sizeof cmd, "'%s' serve --port %d --models-dir '%s' >/dev/null 2>&1", LMX_CLI_PATH, S.port,
             LMX_ENGINE_MODELS);
    st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    char *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/metrics", NULL, KEY, &b), 200);
    CHECK(b && strstr(b, "lmx_model_busy_slots{model=\"" MODEL "\"} "));
    CHECK(b && strstr(b, "lmx_model_queue_depth{model=\"" MODEL "\"} 0"));
    CHECK(b && strstr(b, "lmx_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"));
    CHECK(b && strstr(b, "lmx_time_to_first_token_seconds_bucket{le=\"+Inf\"}"));
    CHECK(b && strstr(b, "\nlmx_models_loaded 1\n"));
    free(b);
}

static int g_n;
static void test_concurrent_streams(void) {
    test_concurrent(g_n);
}

/* The runtime's prompt cache through the server: the same long prompt twice gives the same greedy
 * reply, and the second one reports the reused prefix (a multiple of the CPU's 128-token prefill
 * chunk) in usage.prompt_tokens_details.cached_tokens and timings.cache_n; timings.prompt_n counts
 * the tokens prefilled. */
static void test_cached_tokens(void) {
    char content[4096] = "";
    for (int i = 0; i < 60; i++) strcat(content, "tell me about the sea and ");
    strcat(content, "the sky");
    char *body = chat_body(content, 6, false, 0);
    char *text[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        char *b = NULL;
        CHECK_EQ_INT(http(&S, NULL, "/v1/chat/completions", body, KEY, &b), 200);
        cJSON *j = parse(b);
        int prompt = (int)getn(j, "usage.prompt_tokens"), cached = (int)getn(j, "usage.prompt_tokens_details.cached_tokens");
        CHECK(prompt > 256);
        CHECK_EQ_INT(getn(j, "timings.cache_n"), cached);
        CHECK_EQ_INT(getn(j, "timings.prompt_n"), prompt - cached);
        /* the same request again: everything but the last prompt token comes from the cache */
        if (k == 1) CHECK_MSG(cached == prompt - 1, "cached %d of %d", cached, prompt);
        if (gets_(j, "choices.0.message.content")) text[k] = strdup(gets_(j, "choices.0.message.content"));
        cJSON_Delete(j);
        free(b);
    }
    CHECK(text[0] && text[1] && strcmp(text[0], text[1]) == 0);
    free(text[0]);
    free(text[1]);
    free(body);
}

int main(int argc, char **argv) {
    int N = argc > 1 ? atoi(argv[1]) : 32;
    if (access(LMX_ENGINE_MODELS "/" MODEL "/tokenizer.json", R_OK) != 0) {
        SKIP("no engine models with real tokenizers in %s", LMX_ENGINE_MODELS);
        return lmx_test_summary();
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *extra[] = {"--parallel", "4", "--queue", "512", NULL};
    if (!server_start(&S, extra)) {
        CHECK(!"server started");
        return lmx_test_summary();
    }
    if (N <= 32) {
        RUN(test_health_models);
        RUN(test_chat);
        RUN(test_completions);
        RUN(test_cached_tokens);
        RUN(test_bad_requests);
    } else {
        RUN(test_chat); /* the greedy reference */
    }
    g_n = N;
    RUN(test_concurrent_streams);
    if (N <= 32) {
        RUN(test_disconnect);
        RUN(test_cli_and_metrics);
        RUN(test_queue_full_and_shutdown);
        RUN(test_timeout_and_oom);
    }
    CHECK_EQ_INT(server_stop(&S), 0);
    free(g_greedy);
    curl_global_cleanup();
    return lmx_test_summary();
}
