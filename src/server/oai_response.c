/* oai_response.c — OpenAI response bodies: chat.completion / text_completion objects, their
 * stream chunks, usage (with prompt_tokens_details.cached_tokens, from the runtime's
 * prompt cache), llama-server-style timings, and errors {"error":{message,type,param,code}}. */
#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

const char *srv_finish_str(lmx_finish_reason f) {
    return f == LMX_FINISH_LENGTH ? "length" : "stop";
}

void srv_error_from_status(lmx_status st, const char *detail, srv_kind kind, srv_error *e) {
    const char *what = kind == SRV_CHAT ? "messages" : "prompt";
    switch (st) {
    case LMX_ERR_INVALID_ARGUMENT:
        if (strstr(detail, "context length"))
            srv_error_set(e, 400, "invalid_request_error", "context_length_exceeded", what, "%s", detail);
        else srv_error_set(e, 400, "invalid_request_error", "invalid_value", what, "%s", detail);
        break;
    case LMX_ERR_MODEL_NOT_FOUND:
        srv_error_set(e, 404, "invalid_request_error", "model_not_found", "model", "%s", detail);
        break;
    case LMX_ERR_OUT_OF_MEMORY:
        srv_error_set(e, 503, "server_error", "out_of_memory", "", "out of memory: %s", detail);
        break;
    case LMX_ERR_TEMPLATE:
        srv_error_set(e, 400, "invalid_request_error", "chat_template", "messages",
                      "the model's chat template failed (%s); a model without one takes /v1/completions", detail);
        break;
    case LMX_ERR_INVALID_MODEL_FORMAT:
    case LMX_ERR_MODEL_VALIDATION_FAILED:
    case LMX_ERR_LOAD_FAILURE:
    case LMX_ERR_GPU_NOT_AVAILABLE:
        srv_error_set(e, 500, "server_error", "model_load_failed", "model", "the model could not be loaded: %s: %s",
                      lmx_status_str(st), detail);
        break;
    default:
        srv_error_set(e, 500, "server_error", "internal_error", "", "%s: %s", lmx_status_str(st), detail);
    }
}

static char *print(cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

static cJSON *error_obj(const srv_error *e) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", e->type ? e->type : "server_error");
    if (e->param[0]) cJSON_AddStringToObject(err, "param", e->param);
    else cJSON_AddNullToObject(err, "param");
    if (e->code) cJSON_AddStringToObject(err, "code", e->code);
    else cJSON_AddNullToObject(err, "code");
    return root;
}

char *srv_error_json(const srv_error *e) {
    return print(error_obj(e));
}

static cJSON *base(const srv_request *r, const char *id, long created, bool chunk) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object",
                            r->kind == SRV_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", r->model);
    char fp[48];
    snprintf(fp, sizeof fp, "lmx-%s", lmx_version());
    cJSON_AddStringToObject(o, "system_fingerprint", fp);
    return o;
}

static void add_usage(cJSON *o, const lmx_gen_result *res) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", res->n_prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", res->n_generated_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", res->n_prompt_tokens + res->n_generated_tokens);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", res->cached_tokens); /* served by the prompt cache */
}

static void add_timings(cJSON *o, const lmx_gen_result *res) {
    cJSON *t = cJSON_AddObjectToObject(o, "timings");
    /* as llama-server: prompt_n counts the prompt tokens prefilled, cache_n those from the cache */
    const int prefilled = res->n_prompt_tokens - res->cached_tokens;
    cJSON_AddNumberToObject(t, "cache_n", res->cached_tokens);
    cJSON_AddNumberToObject(t, "prompt_n", prefilled);
    cJSON_AddNumberToObject(t, "prompt_ms", res->prefill_ms);
    cJSON_AddNumberToObject(t, "prompt_per_token_ms", prefilled ? res->prefill_ms / prefilled : 0);
    cJSON_AddNumberToObject(t, "prompt_per_second", res->prompt_tokens_per_second);
    cJSON_AddNumberToObject(t, "predicted_n", res->n_generated_tokens);
    cJSON_AddNumberToObject(t, "predicted_ms", res->decode_ms);
    cJSON_AddNumberToObject(t, "predicted_per_token_ms",
                            res->n_generated_tokens > 1 ? res->decode_ms / (res->n_generated_tokens - 1) : 0);
    cJSON_AddNumberToObject(t, "predicted_per_second", res->tokens_per_second);
}

/* text [len] as valid UTF-8 (invalid bytes → U+FFFD), NUL-terminated, into dst [4 * len + 1]. */
static void utf8_clean(const char *text, size_t len, char *dst) {
    const unsigned char *t = (const unsigned char *)text;
    size_t i = 0, w = 0;
    while (i < len) {
        unsigned char c = t[i];
        size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = need > 0 && i + need <= len && c != 0;
        for (size_t k = 1; ok && k < need; k++) ok = (t[i + k] & 0xC0) == 0x80;
        if (ok) {
            memcpy(dst + w, t + i, need);
            w += need;
            i += need;
        } else {
            memcpy(dst + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    dst[w] = '\0';
}

/* {"token", "logprob", "bytes"} of one token into o. */
static bool add_token_fields(cJSON *o, const char *text, size_t len, float logprob) {
    char *clean = malloc(4 * len + 1);
    if (!clean) return false;
    utf8_clean(text ? text : "", text ? len : 0, clean);
    cJSON_AddStringToObject(o, "token", clean);
    free(clean);
    cJSON_AddNumberToObject(o, "logprob", (double)logprob);
    cJSON *b = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; text && i < len; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)text[i]));
    return true;
}

cJSON *srv_logprob_entry(const lmx_token_info *info) {
    cJSON *o = cJSON_CreateObject();
    if (!o || !add_token_fields(o, info->text, info->len, info->logprob)) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
    for (int i = 0; i < info->n_top; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddItemToArray(top, t);
        if (!add_token_fields(t, info->top[i].text, info->top[i].len, info->top[i].logprob)) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

/* "logprobs": {"content": [...]} or null; takes lp. */
static void add_logprobs(cJSON *choice, cJSON *lp) {
    if (!lp) {
        cJSON_AddNullToObject(choice, "logprobs");
        return;
    }
    cJSON *o = cJSON_AddObjectToObject(choice, "logprobs");
    cJSON_AddItemToObject(o, "content", lp);
}

char *srv_response_json(const srv_request *r, const char *id, long created, const char *text,
                        const lmx_gen_result *res, cJSON *logprobs) {
    cJSON *o = base(r, id, created, false);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (r->kind == SRV_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", text ? text : "");
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
    }
    add_logprobs(c, logprobs);
    cJSON_AddStringToObject(c, "finish_reason", srv_finish_str(res->finish_reason));
    add_usage(o, res);
    add_timings(o, res);
    return print(o);
}

static char *sse(cJSON *o) {
    char *j = print(o);
    if (!j) return NULL;
    size_t n = strlen(j);
    char *s = malloc(n + 9);
    if (s) {
        memcpy(s, "data: ", 6);
        memcpy(s + 6, j, n);
        memcpy(s + 6 + n, "\n\n", 3);
    }
    free(j);
    return s;
}

static cJSON *chunk(const srv_request *r, const char *id, long created, cJSON **choice) {
    cJSON *o = base(r, id, created, true);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    *choice = c;
    return o;
}

char *srv_chunk_sse(const srv_request *r, const char *id, long created, const char *text, size_t len,
                    bool role_first, cJSON *logprobs) {
    cJSON *c, *o = chunk(r, id, created, &c);
    char *t = malloc(len + 1);
    if (!t) {
        cJSON_Delete(o);
        cJSON_Delete(logprobs);
        return NULL;
    }
    memcpy(t, text, len);
    t[len] = '\0';
    if (r->kind == SRV_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role_first) cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", t);
    } else {
        cJSON_AddStringToObject(c, "text", t);
    }
    free(t);
    add_logprobs(c, logprobs);
    cJSON_AddNullToObject(c, "finish_reason");
    if (r->include_usage) cJSON_AddNullToObject(o, "usage");
    return sse(o);
}

char *srv_stream_end_sse(const srv_request *r, const char *id, long created, const lmx_gen_result *res,
                         cJSON *logprobs) {
    cJSON *c, *o = chunk(r, id, created, &c);
    if (r->kind == SRV_CHAT) cJSON_AddObjectToObject(c, "delta");
    else cJSON_AddStringToObject(c, "text", "");
    if (logprobs && cJSON_GetArraySize(logprobs) == 0) {
        cJSON_Delete(logprobs);
        logprobs = NULL;
    }
    add_logprobs(c, logprobs);
    cJSON_AddStringToObject(c, "finish_reason", srv_finish_str(res->finish_reason));
    if (r->include_usage) cJSON_AddNullToObject(o, "usage");
    add_timings(o, res);
    char *a = sse(o), *b = NULL;
    if (r->include_usage) {
        cJSON *u = base(r, id, created, true);
        cJSON_AddArrayToObject(u, "choices");
        add_usage(u, res);
        b = sse(u);
        if (!b) {
            free(a);
            return NULL;
        }
    }
    if (!a) {
        free(b);
        return NULL;
    }
    static const char done[] = "data: [DONE]\n\n";
    size_t na = strlen(a), nb = b ? strlen(b) : 0;
    char *s = malloc(na + nb + sizeof done);
    if (s) {
        memcpy(s, a, na);
        if (b) memcpy(s + na, b, nb);
        memcpy(s + na + nb, done, sizeof done);
    }
    free(a);
    free(b);
    return s;
}

char *srv_stream_error_sse(const srv_error *e) {
    char *a = sse(error_obj(e));
    if (!a) return NULL;
    static const char done[] = "data: [DONE]\n\n";
    size_t na = strlen(a);
    char *s = malloc(na + sizeof done);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, done, sizeof done);
    }
    free(a);
    return s;
}
