/* test_server_json.c — the OpenAI fields `lmx serve` gained with the batcher work, over loopback
 * against the tiny real-tokenizer model of the engine_models fixture:
 *   - logprobs + top_logprobs on /v1/chat/completions and `logprobs: N` on /v1/completions, streamed
 *     and not: choices[].logprobs.content[] has one entry per generated token with token, logprob
 *     (<= 0), bytes (which concatenate to the generated text) and top_logprobs (most likely first;
 *     greedy: the token is the first alternative); a stream carries the same entries as the whole
 *     response; without logprobs the field stays null;
 *   - frequency_penalty / presence_penalty are accepted (and change a greedy reply that repeats);
 *   - /metrics shows the prompt-cache counters, the KV pool gauges and the batch-size histogram;
 *   - `--prompt-cache 0` turns the prompt cache off (cached_tokens 0 on a repeated prompt). */
#define MODEL "tiny-llama32-q8"
#include "server_client.h"

static server S, S0; /* S0: --prompt-cache 0 */

/* The content entries of a whole response (choices.0.logprobs.content) appended to all (an array). */
static void add_entries(const cJSON *j, cJSON *all) {
    const cJSON *c = get(j, "choices.0.logprobs.content"), *e;
    cJSON_ArrayForEach(e, c) cJSON_AddItemToArray(all, cJSON_Duplicate(e, true));
}

/* Every SSE event's entries, in order. */
static cJSON *stream_entries(const char *body) {
    cJSON *all = cJSON_CreateArray();
    for (const char *p = body; p && (p = strstr(p, "data: ")); p += 6) {
        const char *end = strstr(p, "\n\n");
        if (!end || !strncmp(p + 6, "[DONE]", 6)) continue;
        cJSON *j = lmx_json_parse(p + 6, (size_t)(end - p - 6), NULL);
        if (j) add_entries(j, all);
        cJSON_Delete(j);
    }
    return all;
}

/* Checks the entries against the generated text; returns how many there are. */
static int check_entries(const cJSON *all, const char *text, int n_top, bool greedy) {
    size_t w = 0;
    char bytes[4096];
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach(e, all) {
        n++;
        CHECK(gets_(e, "token") != NULL);
        CHECK(getn(e, "logprob") <= 0 && getn(e, "logprob") > -1e30);
        const cJSON *b;
        cJSON_ArrayForEach(b, get(e, "bytes")) if (w < sizeof bytes - 1) bytes[w++] = (char)b->valueint;
        const cJSON *top = get(e, "top_logprobs");
        CHECK_EQ_INT(cJSON_GetArraySize(top), n_top);
        for (int k = 1; k < n_top; k++)
            CHECK(getn(cJSON_GetArrayItem(top, k - 1), "logprob") >= getn(cJSON_GetArrayItem(top, k), "logprob"));
        if (greedy && n_top > 0) {
            CHECK(getn(top, "0.logprob") == getn(e, "logprob"));
            CHECK_EQ_STR(gets_(top, "0.token"), gets_(e, "token"));
        }
    }
    bytes[w] = 0;
    /* tokens are decoded after the token before them (in context), so the first one may keep the
     * leading space that the text (decoded from its start) drops */
    bool same = text && (!strcmp(bytes, text) || (bytes[0] == ' ' && !strcmp(bytes + 1, text)));
    CHECK_MSG(same, "bytes \"%s\" vs text \"%s\"", bytes, text ? text : "(null)");
    return n;
}

static void test_chat_logprobs(void) {
    const char *body = "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me a story\"}],"
                       "\"max_tokens\":8,\"temperature\":0,\"logprobs\":true,\"top_logprobs\":3}";
    char *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/v1/chat/completions", body, KEY, &b), 200);
    cJSON *j = parse(b), *all = cJSON_CreateArray();
    add_entries(j, all);
    const char *text = gets_(j, "choices.0.message.content");
    int n = check_entries(all, text, 3, true);
    CHECK_EQ_INT(n, getn(j, "usage.completion_tokens"));
    CHECK(n >= 1);
    /* streamed: the same entries, spread over the chunks */
    char sbody[1024];
    snprintf(sbody, sizeof sbody, "%.*s,\"stream\":true}", (int)strlen(body) - 1, body);
    char *sb = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/v1/chat/completions", sbody, KEY, &sb), 200);
    cJSON *sall = stream_entries(sb);
    CHECK_EQ_INT(cJSON_GetArraySize(sall), n);
    for (int i = 0; i < n && i < cJSON_GetArraySize(sall); i++) {
        CHECK_EQ_STR(gets_(cJSON_GetArrayItem(sall, i), "token"), gets_(cJSON_GetArrayItem(all, i), "token"));
        CHECK(getn(cJSON_GetArrayItem(sall, i), "logprob") == getn(cJSON_GetArrayItem(all, i), "logprob"));
    }
    cJSON_Delete(sall);
    free(sb);
    cJSON_Delete(all);
    cJSON_Delete(j);
    free(b);
    /* without logprobs: null */
    CHECK_EQ_INT(http(&S, NULL, "/v1/chat/completions",
                      "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}",
                      KEY, &b),
                 200);
    j = parse(b);
    CHECK(cJSON_IsNull(get(j, "choices.0.logprobs")));
    cJSON_Delete(j);
    free(b);
}

static void test_completion_logprobs(void) {
    char *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/v1/completions",
                      "{\"model\":\"" MODEL "\",\"prompt\":\"Once upon a time\",\"max_tokens\":6,\"temperature\":0.8,"
                      "\"seed\":5,\"logprobs\":2}",
                      KEY, &b),
                 200);
    cJSON *j = parse(b), *all = cJSON_CreateArray();
    add_entries(j, all);
    int n = check_entries(all, gets_(j, "choices.0.text"), 2, false);
    CHECK_EQ_INT(n, getn(j, "usage.completion_tokens"));
    cJSON_Delete(all);
    cJSON_Delete(j);
    free(b);
}

static void test_penalties(void) {
    /* greedy on this tiny model repeats itself: a strong frequency penalty changes the reply */
    const char *fmt = "{\"model\":\"" MODEL "\",\"prompt\":\"the the the the\",\"max_tokens\":24,\"temperature\":0%s}";
    char body[512];
    char *text[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        snprintf(body, sizeof body, fmt, k ? ",\"frequency_penalty\":2,\"presence_penalty\":2" : "");
        char *b = NULL;
        CHECK_EQ_INT(http(&S, NULL, "/v1/completions", body, KEY, &b), 200);
        cJSON *j = parse(b);
        if (gets_(j, "choices.0.text")) text[k] = strdup(gets_(j, "choices.0.text"));
        cJSON_Delete(j);
        free(b);
    }
    CHECK(text[0] && text[1] && strcmp(text[0], text[1]) != 0);
    free(text[0]);
    free(text[1]);
}

static void test_metrics_and_prompt_cache_flag(void) {
    char *b = NULL;
    CHECK_EQ_INT(http(&S, NULL, "/metrics", NULL, KEY, &b), 200);
    static const char *names[] = {"\nlmx_prompt_cache_hits_total ", "\nlmx_prompt_cache_misses_total ",
                                  "\nlmx_prompt_cache_evictions_total ", "\nlmx_prompt_cache_bytes ",
                                  "\nlmx_kv_pool_bytes ", "\nlmx_kv_pool_used_bytes ", "\nlmx_kv_pool_free_bytes ",
                                  "\nlmx_batch_size_bucket{le=\"1\"} ", "\nlmx_batch_size_bucket{le=\"+Inf\"} ",
                                  "\nlmx_batch_size_count "};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) CHECK_MSG(b && strstr(b, names[i]), "%s", names[i]);
    /* the requests above hit the prompt cache at least once (the same prompts again) */
    const char *h = b ? strstr(b, "\nlmx_prompt_cache_misses_total ") : NULL;
    CHECK(h && atof(h + strlen("\nlmx_prompt_cache_misses_total ")) >= 1);
    free(b);
    /* --prompt-cache 0: a repeated long prompt reuses nothing */
    char content[4096] = "{\"model\":\"" MODEL "\",\"prompt\":\"";
    for (int i = 0; i < 60; i++) strcat(content, "tell me about the sea and ");
    strcat(content, "\",\"max_tokens\":2,\"temperature\":0}");
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(http(&S0, NULL, "/v1/completions", content, KEY, &b), 200);
        cJSON *j = parse(b);
        CHECK_EQ_INT(getn(j, "usage.prompt_tokens_details.cached_tokens"), 0);
        cJSON_Delete(j);
        free(b);
    }
}

int main(void) {
    if (access(LMX_ENGINE_MODELS "/" MODEL "/tokenizer.json", R_OK) != 0) {
        SKIP("no engine models with real tokenizers in %s", LMX_ENGINE_MODELS);
        return lmx_test_summary();
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *extra[] = {"--parallel", "2", NULL}, *extra0[] = {"--prompt-cache", "0", NULL};
    if (!server_start(&S, extra) || !server_start(&S0, extra0)) {
        CHECK(!"servers started");
        return lmx_test_summary();
    }
    RUN(test_chat_logprobs);
    RUN(test_completion_logprobs);
    RUN(test_penalties);
    RUN(test_metrics_and_prompt_cache_flag);
    CHECK_EQ_INT(server_stop(&S), 0);
    CHECK_EQ_INT(server_stop(&S0), 0);
    curl_global_cleanup();
    return lmx_test_summary();
}
