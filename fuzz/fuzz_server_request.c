/* fuzz_server_request.c — the server's OpenAI request parsing and response writing on arbitrary
 * bodies: the first byte picks chat or completions; a body that parses must give a request whose
 * every response form (whole body, chunk, stream end, error) is valid JSON, and must free cleanly.
 * Model names go through the allow-list checks against a models directory that does not exist. */
#include "server/server.h"
#include "util/json.h"

#include <stdlib.h>
#include <string.h>

static void must_parse(char *s, size_t skip) {
    if (!s) return; /* allocation failure is allowed */
    cJSON *j = lmx_json_parse(s + skip, strlen(s + skip), NULL);
    if (!j && strncmp(s + skip, "[DONE]", 6) != 0) abort();
    cJSON_Delete(j);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    srv_kind kind = data[0] & 1 ? SRV_COMPLETION : SRV_CHAT;
    srv_request r;
    srv_error e;
    if (!srv_request_parse(kind, (const char *)data + 1, size - 1, &r, &e)) {
        if (e.status < 400 || e.status > 599) abort();
        must_parse(srv_error_json(&e), 0);
        return 0;
    }
    srv_error me;
    (void)srv_model_allowed("/nonexistent-lmx-fuzz-models", r.model, &me);
    lmx_gen_result res = {.n_prompt_tokens = 3, .n_generated_tokens = 2, .finish_reason = LMX_FINISH_STOP};
    const char *text = r.n_msgs ? r.msgs[0].content : (r.prompt ? r.prompt : "x");
    /* logprobs entries over the input's bytes (any bytes: the writer cleans them to UTF-8) */
    lmx_token_logprob top = {.id = 1, .logprob = -0.5f, .text = (const char *)data, .len = size};
    lmx_token_info info = {.id = 1, .logprob = -0.5f, .text = (const char *)data, .len = size, .n_top = 1, .top = &top};
    cJSON *lp = r.logprobs ? cJSON_CreateArray() : NULL;
    if (lp) cJSON_AddItemToArray(lp, srv_logprob_entry(&info));
    must_parse(srv_response_json(&r, "id-1", 1, text, &res, lp), 0);
    lp = r.logprobs ? cJSON_CreateArray() : NULL;
    if (lp) cJSON_AddItemToArray(lp, srv_logprob_entry(&info));
    char *c = srv_chunk_sse(&r, "id-1", 1, text, strlen(text), true, lp);
    if (c) {
        size_t n = strlen(c);
        if (n < 8 || strncmp(c, "data: ", 6) || strcmp(c + n - 2, "\n\n")) abort();
        c[n - 2] = '\0';
        must_parse(c, 6);
    }
    char *end = srv_stream_end_sse(&r, "id-1", 1, &res, NULL);
    if (end && !strstr(end, "data: [DONE]\n\n")) abort();
    free(end);
    srv_request_free(&r);
    return 0;
}
