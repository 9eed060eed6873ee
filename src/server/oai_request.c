/* oai_request.c — OpenAI request bodies → srv_request. Every field lmx understands is validated
 * (400 naming the parameter); fields that need engine support lmx.h does not have yet
 * (tools, n > 1, echo, best_of, suffix, non-text response_format) are accepted only at their
 * neutral value and otherwise
 * rejected with a 400 that names them: never silently ignored. Unknown fields (user, metadata,
 * ...) are ignored, as OpenAI's own server does for informational ones. */
#include "server/server.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"

void srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static bool bad(srv_error *e, const char *param, const char *fmt, const char *what) {
    srv_error_set(e, 400, "invalid_request_error", "invalid_value", param, fmt, param, what);
    return false;
}

static const cJSON *field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL; /* null = absent, as OpenAI treats it */
}

/* A number field in [lo, hi]; absent keeps *out. */
static bool num(const cJSON *o, const char *k, double lo, double hi, double *out, srv_error *e) {
    const cJSON *v = field(o, k);
    if (!v) return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad(e, k, "'%s' must be a number%s", "");
    if (v->valuedouble < lo || v->valuedouble > hi) {
        srv_error_set(e, 400, "invalid_request_error", "invalid_value", k, "'%s' is %g; it must be in [%g, %g]", k,
                      v->valuedouble, lo, hi);
        return false;
    }
    *out = v->valuedouble;
    return true;
}

static bool integer(const cJSON *o, const char *k, double lo, double hi, long long *out, srv_error *e) {
    double d = (double)*out;
    const cJSON *v = field(o, k);
    if (v && (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)))
        return bad(e, k, "'%s' must be an integer%s", "");
    if (!num(o, k, lo, hi, &d, e)) return false;
    *out = (long long)d;
    return true;
}

static bool boolean(const cJSON *o, const char *k, bool *out, srv_error *e) {
    const cJSON *v = field(o, k);
    if (!v) return true;
    if (!cJSON_IsBool(v)) return bad(e, k, "'%s' must be a boolean%s", "");
    *out = cJSON_IsTrue(v);
    return true;
}

/* A parameter lmx cannot honour yet: only its neutral value passes. */
static bool unsupported(const cJSON *o, const char *k, double neutral, srv_error *e) {
    const cJSON *v = field(o, k);
    if (!v) return true;
    if ((cJSON_IsNumber(v) && v->valuedouble == neutral) || (neutral == 0 && cJSON_IsFalse(v))) return true;
    srv_error_set(e, 400, "invalid_request_error", "unsupported_parameter", k,
                  "'%s' is not supported by this server yet (lmx has no engine support for it); omit it or "
                  "send its default",
                  k);
    return false;
}

static char *dup_str(const char *s) {
    return strdup(s ? s : "");
}

/* "text" or an array of {"type":"text","text":...} parts → one malloc'd string. */
static bool content_text(const cJSON *c, int idx, char **out, srv_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", idx);
    if (!c) {
        *out = dup_str("");
        return *out != NULL;
    }
    if (cJSON_IsString(c)) {
        *out = dup_str(c->valuestring);
        return *out != NULL;
    }
    if (!cJSON_IsArray(c)) return bad(e, param, "'%s' must be a string or an array of text parts%s", "");
    size_t len = 0;
    const cJSON *p;
    int k = 0;
    cJSON_ArrayForEach(p, c) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(t) || strcmp(t->valuestring, "text") || !cJSON_IsString(x)) {
            snprintf(param, sizeof param, "messages[%d].content[%d]", idx, k);
            srv_error_set(e, 400, "invalid_request_error", "invalid_value", param,
                          "'%s': only {\"type\":\"text\",\"text\":...} parts are supported", param);
            return false;
        }
        len += strlen(x->valuestring);
        k++;
    }
    char *s = malloc(len + 1);
    if (!s) return false;
    len = 0;
    cJSON_ArrayForEach(p, c) {
        const char *x = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t n = strlen(x);
        memcpy(s + len, x, n);
        len += n;
    }
    s[len] = '\0';
    *out = s;
    return true;
}

static bool parse_messages(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!m) return bad(e, "messages", "'%s' is required%s", "");
    if (!cJSON_IsArray(m)) return bad(e, "messages", "'%s' must be an array%s", "");
    int n = cJSON_GetArraySize(m);
    if (n < 1) return bad(e, "messages", "'%s' must contain at least one message%s", "");
    if (n > SRV_MAX_MESSAGES) {
        srv_error_set(e, 400, "invalid_request_error", "invalid_value", "messages", "at most %d messages",
                      SRV_MAX_MESSAGES);
        return false;
    }
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return false;
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, m) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d].role", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        if (!cJSON_IsObject(it)) {
            snprintf(param, sizeof param, "messages[%d]", i);
            return bad(e, param, "'%s' must be an object%s", "");
        }
        if (!cJSON_IsString(role)) return bad(e, param, "'%s' must be a string%s", "");
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return bad(e, param, "'%s' must be system, developer, user, assistant or tool%s", "");
        r->msgs[i].role = dup_str(rs);
        r->n_msgs = i + 1;
        char *content = NULL;
        if (!r->msgs[i].role || !content_text(cJSON_GetObjectItemCaseSensitive(it, "content"), i, &content, e)) {
            r->msgs[i].content = NULL;
            return false;
        }
        r->msgs[i].content = content;
        i++;
    }
    return true;
}

static bool parse_prompt(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p) return bad(e, "prompt", "'%s' is required%s", "");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0); /* ["text"]: one prompt */
    if (cJSON_IsString(p)) {
        r->prompt = dup_str(p->valuestring);
        return r->prompt != NULL;
    }
    if (!cJSON_IsArray(p)) return bad(e, "prompt", "'%s' must be a string or an array of token ids%s", "");
    int n = cJSON_GetArraySize(p);
    if (n < 1) return bad(e, "prompt", "'%s' must not be empty%s", "");
    r->prompt_ids = malloc((size_t)n * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return false;
    const cJSON *it;
    size_t i = 0;
    cJSON_ArrayForEach(it, p) {
        if (cJSON_IsString(it) || cJSON_IsArray(it)) {
            srv_error_set(e, 400, "invalid_request_error", "unsupported_parameter", "prompt",
                          "'prompt': several prompts in one request are not supported (send one per request)");
            return false;
        }
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < 0 ||
            it->valuedouble > 2147483647.0)
            return bad(e, "prompt", "'%s' must be a string or an array of non-negative integer token ids%s", "");
        r->prompt_ids[i++] = (int32_t)it->valuedouble;
    }
    r->n_prompt_ids = i;
    r->use_ids = true;
    return true;
}

static bool parse_stop(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *s = field(root, "stop");
    if (!s) return true;
    if (cJSON_IsString(s)) {
        if (!*s->valuestring) return true;
        if (!(r->stop[0] = dup_str(s->valuestring))) return false;
        r->opt.n_stop = 1;
        return true;
    }
    if (!cJSON_IsArray(s)) return bad(e, "stop", "'%s' must be a string or an array of strings%s", "");
    if (cJSON_GetArraySize(s) > SRV_MAX_STOP) {
        srv_error_set(e, 400, "invalid_request_error", "invalid_value", "stop", "'stop': at most %d strings",
                      SRV_MAX_STOP);
        return false;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, s) {
        if (!cJSON_IsString(it)) return bad(e, "stop", "'%s' must be a string or an array of strings%s", "");
        if (!*it->valuestring) continue;
        if (!(r->stop[r->opt.n_stop] = dup_str(it->valuestring))) return false;
        r->opt.n_stop++;
    }
    return true;
}

/* chat: "logprobs": bool, "top_logprobs": 0..20 (needs logprobs); completions (legacy): "logprobs":
 * the number of alternatives 0..20 (or a bool). Both answer choices[].logprobs.content[]. */
static bool parse_logprobs(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *lp = field(root, "logprobs");
    long long top = 0;
    if (lp && r->kind == SRV_COMPLETION && cJSON_IsNumber(lp)) {
        if (!integer(root, "logprobs", 0, LMX_MAX_TOP_LOGPROBS, &top, e)) return false;
        r->logprobs = true;
    } else if (!boolean(root, "logprobs", &r->logprobs, e)) {
        return false;
    }
    if (field(root, "top_logprobs")) {
        if (!integer(root, "top_logprobs", 0, LMX_MAX_TOP_LOGPROBS, &top, e)) return false;
        if (!r->logprobs)
            return bad(e, "top_logprobs", "'%s' needs 'logprobs' set to true%s", "");
    }
    r->opt.top_logprobs = (int)top;
    return true;
}

static bool parse_sampling(const cJSON *root, srv_request *r, srv_error *e) {
    lmx_gen_options *o = &r->opt;
    double t = 1.0, top_p = 1.0, min_p = 0, rep = 1.0;
    long long top_k = 0, max_tokens = -1, seed = 0, n = 1, rep_ctx = o->sampling.repetition_context;
    if (r->kind == SRV_COMPLETION) max_tokens = 16; /* OpenAI's default for /v1/completions */
    if (!num(root, "temperature", 0, 100, &t, e) || !num(root, "top_p", 0, 1, &top_p, e) ||
        !num(root, "min_p", 0, 1, &min_p, e) || !integer(root, "top_k", 0, 1e9, &top_k, e) ||
        !num(root, "repetition_penalty", 0, 100, &rep, e) ||
        !integer(root, "repetition_context", 0, 1e6, &rep_ctx, e) ||
        !integer(root, "max_tokens", 1, 1e9, &max_tokens, e) ||
        !integer(root, "max_completion_tokens", 1, 1e9, &max_tokens, e) ||
        !integer(root, "seed", -9.2e18, 9.2e18, &seed, e) || !integer(root, "n", 1, 1, &n, e))
        return false;
    double freq = 0, pres = 0;
    if (!num(root, "frequency_penalty", -2, 2, &freq, e) || !num(root, "presence_penalty", -2, 2, &pres, e) ||
        !parse_logprobs(root, r, e) || !unsupported(root, "best_of", 1, e) || !unsupported(root, "echo", 0, e))
        return false;
    o->sampling.frequency_penalty = (float)freq;
    o->sampling.presence_penalty = (float)pres;
    if (field(root, "suffix")) return unsupported(root, "suffix", 1e300, e);
    if (r->kind == SRV_CHAT && field(root, "logit_bias") && cJSON_GetArraySize(field(root, "logit_bias")) > 0) {
        srv_error_set(e, 400, "invalid_request_error", "unsupported_parameter", "logit_bias",
                      "'logit_bias' is not supported by this server yet");
        return false;
    }
    if (field(root, "tools") && cJSON_GetArraySize(field(root, "tools")) > 0) {
        srv_error_set(e, 400, "invalid_request_error", "unsupported_parameter", "tools",
                      "'tools' is not supported by this server yet");
        return false;
    }
    const cJSON *rf = field(root, "response_format");
    if (rf) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsObject(rf) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text")) {
            srv_error_set(e, 400, "invalid_request_error", "unsupported_parameter", "response_format",
                          "'response_format': only {\"type\":\"text\"} is supported by this server yet");
            return false;
        }
    }
    o->sampling.temperature = (float)t;
    o->sampling.top_p = (float)top_p;
    o->sampling.min_p = (float)min_p;
    o->sampling.top_k = (int)top_k;
    o->sampling.repetition_penalty = (float)rep;
    o->sampling.repetition_context = (int)rep_ctx;
    o->max_tokens = (int)max_tokens;
    if (field(root, "seed")) {
        o->seed = (uint64_t)seed;
        o->use_seed = true;
    }
    /* llama-server's extension (benchmarks): EOS is generated like any token, max_tokens ends it */
    if (!boolean(root, "ignore_eos", &o->ignore_eos, e)) return false;
    if (!boolean(root, "stream", &r->stream, e)) return false;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return bad(e, "stream_options", "'%s' must be an object%s", "");
        if (!r->stream) return bad(e, "stream_options", "'%s' is only allowed when 'stream' is true%s", "");
        const cJSON *iu = field(so, "include_usage");
        if (iu && !cJSON_IsBool(iu)) return bad(e, "stream_options.include_usage", "'%s' must be a boolean%s", "");
        r->include_usage = cJSON_IsTrue(iu);
    }
    return parse_stop(root, r, e);
}

bool srv_request_parse(srv_kind kind, const char *body, size_t len, srv_request *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->opt = lmx_gen_options_default();
    r->opt.stop = (const char *const *)r->stop;
    r->opt.n_stop = 0;
    cJSON *root = len ? lmx_json_parse(body, len, NULL) : NULL;
    if (!root) {
        srv_error_set(e, 400, "invalid_request_error", "invalid_json", "", "the request body is not valid JSON");
        return false;
    }
    bool ok = false;
    srv_error_set(e, 503, "server_error", "out_of_memory", "", "out of memory");
    if (!cJSON_IsObject(root)) {
        srv_error_set(e, 400, "invalid_request_error", "invalid_json", "", "the request body must be a JSON object");
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!model) {
        bad(e, "model", "'%s' is required%s", "");
        goto done;
    }
    if (!cJSON_IsString(model) || !*model->valuestring || strlen(model->valuestring) > 255) {
        bad(e, "model", "'%s' must be a model name (a non-empty string of at most 255 bytes)%s", "");
        goto done;
    }
    if (!(r->model = dup_str(model->valuestring))) goto done;
    if (kind == SRV_CHAT ? !parse_messages(root, r, e) : !parse_prompt(root, r, e)) goto done;
    ok = parse_sampling(root, r, e);
done:
    cJSON_Delete(root);
    if (!ok) srv_request_free(r);
    return ok;
}

void srv_request_free(srv_request *r) {
    free(r->model);
    for (int i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < SRV_MAX_STOP; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
