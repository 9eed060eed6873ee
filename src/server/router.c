/* router.c — method + path → handler; the API key; request counters.
 *   POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics
 * A generation is parsed, its model checked, then submitted to the scheduler; the connection
 * thread waits (polling its socket for a disconnect) until the job has produced its first text or
 * ended, so that errors found before any text (unknown model, prompt longer than the context, out
 * of memory) still get their own HTTP status, streamed or not. */
#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void srv_reply_error(srv_reply *rp, const srv_error *e) {
    rp->status = e->status;
    rp->content_type = "application/json";
    free(rp->body);
    rp->body = srv_error_json(e);
    if (e->status == 503) rp->retry_after = 1;
}

static bool key_ok(const char *auth) {
    const char *key = g_srv.opt->api_key;
    if (!key || !*key) return true;
    if (!auth || strncmp(auth, "Bearer ", 7) != 0) return false;
    const char *k = auth + 7;
    size_t a = strlen(k), b = strlen(key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < a; i++) diff |= (unsigned char)k[i] ^ (unsigned char)key[i % (b ? b : 1)];
    return diff == 0;
}

/* Waits until the job has text (or, with until_done, has ended). false: the client went away. */
static bool wait_job(srv_job *j, int fd, bool until_done) {
    pthread_mutex_lock(&j->mu);
    while (j->state != SRV_JOB_DONE && (until_done || j->len == 0)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->state != SRV_JOB_DONE && srv_peer_gone(fd)) {
            atomic_store(&j->cancel, 1);
            pthread_mutex_unlock(&j->mu);
            return false;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return true;
}

static void generation(srv_kind kind, const srv_http_req *rq, srv_reply *rp) {
    srv_request r;
    srv_error e;
    if (!srv_request_parse(kind, rq->body, rq->len, &r, &e)) {
        srv_reply_error(rp, &e);
        return;
    }
    if (!srv_model_allowed(g_srv.opt->models_dir, r.model, &e)) {
        srv_request_free(&r);
        srv_reply_error(rp, &e);
        return;
    }
    bool stream = r.stream;
    srv_job *j = srv_sched_submit(g_srv.sched, &r, g_srv.opt->timeout_s, &e);
    srv_request_free(&r);
    if (!j) {
        srv_reply_error(rp, &e);
        return;
    }
    if (!wait_job(j, rq->fd, !stream)) {
        srv_metrics_cancelled();
        srv_job_release(j);
        rp->close = true;
        rp->status = 499; /* counted as "other": the client closed the request */
        return;
    }
    pthread_mutex_lock(&j->mu);
    bool has_text = j->len > 0;
    pthread_mutex_unlock(&j->mu);
    if (stream && has_text) {
        rp->stream_job = j; /* 200: the SSE stream reads the rest */
        rp->status = 200;
        return;
    }
    /* otherwise the job is DONE (published under mu): its whole result is there */
    bool ok = j->st == LMX_OK || (j->st == LMX_ERR_CANCELLED && j->timed_out);
    if (ok && stream) {
        rp->stream_job = j;
        rp->status = 200;
        return;
    }
    if (ok) {
        rp->status = 200;
        rp->content_type = "application/json";
        rp->body = srv_response_json(&j->req, j->id, j->created, j->text, &j->res, srv_job_take_logprobs(j));
        if (!rp->body) {
            srv_error_set(&e, 503, "server_error", "out_of_memory", "", "out of memory");
            srv_reply_error(rp, &e);
        }
    } else if (j->oom) {
        srv_error_set(&e, 503, "server_error", "out_of_memory", "", "out of memory while generating");
        srv_reply_error(rp, &e);
    } else if (j->expired) {
        srv_error_set(&e, 503, "server_error", "queue_timeout", "",
                      "the request waited in the queue longer than the server's timeout (%g s)", g_srv.opt->timeout_s);
        srv_reply_error(rp, &e);
    } else if (j->st == LMX_ERR_CANCELLED) {
        srv_error_set(&e, 503, "server_error", "shutting_down", "", "the server is shutting down");
        srv_reply_error(rp, &e);
    } else {
        srv_error_from_status(j->st, j->detail, kind, &e);
        srv_reply_error(rp, &e);
    }
    srv_job_release(j);
}

srv_endpoint srv_endpoint_of(const char *path) {
    if (!strcmp(path, "/v1/chat/completions") || !strcmp(path, "/chat/completions")) return SRV_EP_CHAT;
    if (!strcmp(path, "/v1/completions") || !strcmp(path, "/completions")) return SRV_EP_COMPLETIONS;
    if (!strcmp(path, "/v1/models") || !strcmp(path, "/models")) return SRV_EP_MODELS;
    if (!strcmp(path, "/health")) return SRV_EP_HEALTH;
    if (!strcmp(path, "/metrics")) return SRV_EP_METRICS;
    return SRV_EP_OTHER;
}

void srv_route(const srv_http_req *rq, srv_reply *rp) {
    const char *path = rq->path;
    srv_endpoint ep = srv_endpoint_of(path);
    const char *method = ep == SRV_EP_CHAT || ep == SRV_EP_COMPLETIONS ? "POST" : "GET";
    srv_error e;
    if (ep == SRV_EP_OTHER) {
        srv_error_set(&e, 404, "invalid_request_error", "not_found", "", "no such endpoint: %s %s", rq->method, path);
        srv_reply_error(rp, &e);
    } else if (strcmp(rq->method, method) != 0) {
        srv_error_set(&e, 405, "invalid_request_error", "method_not_allowed", "", "%s takes %s, not %s", path, method,
                      rq->method);
        srv_reply_error(rp, &e);
    } else if (ep != SRV_EP_HEALTH && !key_ok(rq->authorization)) {
        srv_error_set(&e, 401, "authentication_error", "invalid_api_key", "",
                      rq->authorization ? "incorrect API key provided"
                                        : "missing API key: send 'Authorization: Bearer <key>'");
        srv_reply_error(rp, &e);
    } else if ((ep == SRV_EP_CHAT || ep == SRV_EP_COMPLETIONS) && atomic_load(&g_srv.stopping)) {
        srv_error_set(&e, 503, "server_error", "shutting_down", "", "the server is shutting down");
        srv_reply_error(rp, &e);
    } else if (ep == SRV_EP_CHAT) {
        generation(SRV_CHAT, rq, rp);
    } else if (ep == SRV_EP_COMPLETIONS) {
        generation(SRV_COMPLETION, rq, rp);
    } else if (ep == SRV_EP_MODELS) {
        rp->status = 200;
        rp->content_type = "application/json";
        rp->body = srv_models_json(g_srv.rt, g_srv.opt->models_dir);
    } else if (ep == SRV_EP_HEALTH) {
        rp->status = 200;
        rp->content_type = "application/json";
        rp->body = strdup(atomic_load(&g_srv.stopping) ? "{\"status\":\"stopping\"}" : "{\"status\":\"ok\"}");
        if (atomic_load(&g_srv.stopping)) rp->status = 503;
    } else {
        rp->status = 200;
        rp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        rp->body = srv_metrics_render(g_srv.rt);
    }
    if (!rp->body && !rp->stream_job && !rp->close) {
        srv_error_set(&e, 503, "server_error", "out_of_memory", "", "out of memory");
        srv_reply_error(rp, &e);
    }
    srv_metrics_request(ep, rp->status);
}
