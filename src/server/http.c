/* http.c — libmicrohttpd glue: the listening socket, the daemon, request bodies, responses and
 * the SSE stream of a job.
 *
 * Threading model: MHD_USE_THREAD_PER_CONNECTION. Each connection has its own thread, so the
 * handler may block: waiting for a queued job to start, for a whole non-streamed result, or (in
 * the stream's content reader) for the next piece of text. While it waits it polls the socket for
 * the peer's FIN/RST every 20 ms, so a client that goes away cancels its generation within about
 * one token (the worker's callback sees job->cancel and returns nonzero). This is simpler than
 * internal polling with suspend/resume and costs one mostly idle thread per open connection, which
 * SRV_MAX_CONNECTIONS bounds. The generations themselves run on the scheduler's workers. */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

srv_ctx g_srv;

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool srv_peer_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    int r = poll(&p, 1, 0);
    if (r <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    return false;
}

struct srv_server {
    struct MHD_Daemon *d;
    int listen_fd;
};

/* Per-connection state of one request: the body as it arrives. */
typedef struct conn_ctx {
    char *body;
    size_t len, cap;
    bool too_large;
} conn_ctx;

/* An SSE stream over a job. */
typedef struct stream_ctx {
    srv_job *job;
    int fd;
    size_t sent;                  /* bytes of job->text already turned into chunks */
    char *pend;                   /* formatted bytes waiting to go out */
    size_t pend_len, pend_off;
    bool first, finished;
} stream_ctx;

static void stream_set(stream_ctx *s, char *p) {
    free(s->pend);
    s->pend = p;
    s->pend_len = p ? strlen(p) : 0;
    s->pend_off = 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *s = cls;
    srv_job *j = s->job;
    for (;;) {
        if (s->pend_off < s->pend_len) {
            size_t n = s->pend_len - s->pend_off;
            if (n > max) n = max;
            memcpy(buf, s->pend + s->pend_off, n);
            s->pend_off += n;
            return (ssize_t)n;
        }
        if (s->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        char *text = NULL;
        size_t tlen = 0;
        bool done = false;
        pthread_mutex_lock(&j->mu);
        while (j->len == s->sent && j->state != SRV_JOB_DONE) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&j->cv, &j->mu, &ts);
            if (j->len == s->sent && j->state != SRV_JOB_DONE && srv_peer_gone(s->fd)) {
                atomic_store(&j->cancel, 1);
                pthread_mutex_unlock(&j->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        cJSON *lp = NULL; /* the logprob entries that came with this text (or at the end: the rest) */
        if (j->len > s->sent) {
            tlen = j->len - s->sent;
            text = malloc(tlen + 1);
            if (text) memcpy(text, j->text + s->sent, tlen);
            s->sent = j->len;
            lp = srv_job_take_logprobs(j);
        } else {
            done = true;
            if (j->state == SRV_JOB_DONE) lp = srv_job_take_logprobs(j);
        }
        pthread_mutex_unlock(&j->mu);
        if (!s->first && j->req.kind == SRV_CHAT) {
            /* OpenAI's first chunk carries the role (and empty content) */
            char *c = srv_chunk_sse(&j->req, j->id, j->created, "", 0, true, NULL);
            s->first = true;
            if (text) {
                char *c2 = srv_chunk_sse(&j->req, j->id, j->created, text, tlen, false, lp);
                lp = NULL;
                size_t a = c ? strlen(c) : 0, b = c2 ? strlen(c2) : 0;
                char *both = malloc(a + b + 1);
                if (both) {
                    memcpy(both, c ? c : "", a);
                    memcpy(both + a, c2 ? c2 : "", b + 1);
                }
                free(c), free(c2);
                c = both;
            }
            free(text);
            if (!c) {
                cJSON_Delete(lp);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            stream_set(s, c);
            if (lp) { /* put back for the final chunk */
                pthread_mutex_lock(&j->mu);
                j->lp_sent -= cJSON_GetArraySize(lp);
                pthread_mutex_unlock(&j->mu);
                cJSON_Delete(lp);
            }
            continue;
        }
        s->first = true;
        if (text) {
            char *c = srv_chunk_sse(&j->req, j->id, j->created, text, tlen, false, lp);
            free(text);
            if (!c) return MHD_CONTENT_READER_END_WITH_ERROR;
            stream_set(s, c);
            continue;
        }
        if (done) {
            char *c;
            if (j->st == LMX_OK || (j->st == LMX_ERR_CANCELLED && j->timed_out)) {
                c = srv_stream_end_sse(&j->req, j->id, j->created, &j->res, lp);
                lp = NULL;
            } else {
                srv_error e;
                if (j->oom)
                    srv_error_set(&e, 503, "server_error", "out_of_memory", "", "out of memory while streaming");
                else if (j->st == LMX_ERR_CANCELLED)
                    srv_error_set(&e, 503, "server_error", "shutting_down", "",
                                  "the server is shutting down; the generation was cancelled");
                else
                    srv_error_from_status(j->st, j->detail, j->req.kind, &e);
                c = srv_stream_error_sse(&e);
            }
            cJSON_Delete(lp);
            s->finished = true;
            if (!c) return MHD_CONTENT_READER_END_WITH_ERROR;
            stream_set(s, c);
        }
    }
}

static atomic_int g_streams; /* SSE responses not yet finished */

static void stream_free(void *cls) {
    stream_ctx *s = cls;
    atomic_fetch_sub(&g_streams, 1);
    if (!s->finished) {
        atomic_store(&s->job->cancel, 1);
        srv_metrics_cancelled();
    }
    srv_job_release(s->job);
    free(s->pend);
    free(s);
}

static enum MHD_Result queue_reply(struct MHD_Connection *c, srv_reply *rp, int fd) {
    struct MHD_Response *r;
    if (rp->stream_job) {
        stream_ctx *s = calloc(1, sizeof *s);
        if (!s) {
            atomic_store(&rp->stream_job->cancel, 1);
            srv_job_release(rp->stream_job);
            return MHD_NO;
        }
        s->job = rp->stream_job;
        s->fd = fd;
        atomic_fetch_add(&g_streams, 1);
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, s, stream_free);
        if (!r) {
            stream_free(s);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        rp->status = 200;
    } else {
        char *body = rp->body ? rp->body : strdup("");
        if (!body) return MHD_NO;
        r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(body);
            return MHD_NO;
        }
        rp->body = NULL;
        MHD_add_response_header(r, "Content-Type", rp->content_type ? rp->content_type : "application/json");
        if (rp->retry_after > 0) {
            char ra[16];
            snprintf(ra, sizeof ra, "%d", rp->retry_after);
            MHD_add_response_header(r, "Retry-After", ra);
        }
    }
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)rp->status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    conn_ctx *cc = *con_cls;
    if (!cc) {
        cc = calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        *con_cls = cc;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > SRV_MAX_BODY) {
            /* answer before reading the body (no "100 Continue"); MHD closes the connection after */
            cc->too_large = true;
            srv_error e;
            srv_reply rp = {0};
            srv_error_set(&e, 413, "invalid_request_error", "request_too_large", "",
                          "the request body is larger than the limit of %u bytes", SRV_MAX_BODY);
            srv_reply_error(&rp, &e);
            srv_metrics_request(srv_endpoint_of(url), 413);
            return queue_reply(c, &rp, -1);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cc->too_large && cc->len + *upload_size > SRV_MAX_BODY) cc->too_large = true;
        if (!cc->too_large) {
            if (cc->len + *upload_size + 1 > cc->cap) {
                size_t cap = cc->cap ? cc->cap : 4096;
                while (cap < cc->len + *upload_size + 1) cap *= 2;
                char *nb = realloc(cc->body, cap);
                if (!nb) return MHD_NO;
                cc->body = nb;
                cc->cap = cap;
            }
            memcpy(cc->body + cc->len, upload, *upload_size);
            cc->len += *upload_size;
            cc->body[cc->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    srv_reply rp = {0};
    if (cc->too_large) {
        srv_error e;
        srv_error_set(&e, 413, "invalid_request_error", "request_too_large", "",
                      "the request body is larger than the limit of %u bytes", SRV_MAX_BODY);
        srv_reply_error(&rp, &e);
        srv_metrics_request(srv_endpoint_of(url), 413);
    } else {
        srv_http_req rq = {
            .method = method,
            .path = url,
            .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
            .body = cc->body ? cc->body : "",
            .len = cc->len,
            .fd = fd,
        };
        srv_route(&rq, &rp);
    }
    if (rp.close) {
        free(rp.body);
        return MHD_NO;
    }
    return queue_reply(c, &rp, fd);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    conn_ctx *cc = *con_cls;
    if (cc) {
        free(cc->body);
        free(cc);
    }
    *con_cls = NULL;
}

static int bind_socket(const char *host, int port, int *port_out) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    if (getaddrinfo(host, ps, &hints, &res) != 0 || !res) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 512) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

lmx_status srv_server_start(const srv_options *o, lmx_runtime *rt, srv_server **out, int *port_out) {
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return LMX_ERR_OUT_OF_MEMORY;
    g_srv.opt = o;
    g_srv.rt = rt;
    atomic_store(&g_srv.stopping, 0);
    srv_metrics_init();
    lmx_status st = srv_sched_create(rt, o->parallel, o->queue, &g_srv.sched);
    if (st != LMX_OK) {
        free(s);
        return st;
    }
    s->listen_fd = bind_socket(o->host, o->port, port_out);
    if (s->listen_fd < 0) {
        fprintf(stderr, "lmx serve: cannot listen on %s:%d: %s\n", o->host, o->port, strerror(errno));
        srv_sched_destroy(g_srv.sched);
        g_srv.sched = NULL;
        free(s);
        return LMX_ERR_IO;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)SRV_MAX_CONNECTIONS,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, NULL, MHD_OPTION_END);
    if (!s->d) {
        fprintf(stderr, "lmx serve: libmicrohttpd did not start\n");
        close(s->listen_fd);
        srv_sched_destroy(g_srv.sched);
        g_srv.sched = NULL;
        free(s);
        return LMX_ERR_IO;
    }
    *out = s;
    return LMX_OK;
}

void srv_server_stop(srv_server *s, double grace_s) {
    if (!s) return;
    /* no new connections; new requests on open ones get 503 */
    int fd = MHD_quiesce_daemon(s->d);
    if (fd >= 0) close(fd);
    atomic_store(&g_srv.stopping, 1);
    srv_sched_stop(g_srv.sched, false); /* queued jobs end; running ones may finish */
    double t_end = srv_now() + grace_s;
    while (!srv_sched_idle(g_srv.sched) && srv_now() < t_end && !atomic_load(&g_srv.hurry)) usleep(20000);
    srv_sched_stop(g_srv.sched, true); /* cancel what still runs: streams end with an error event */
    /* let the cancelled generations end and their streams write the last event and [DONE] */
    t_end = srv_now() + 5;
    while ((!srv_sched_idle(g_srv.sched) || atomic_load(&g_streams) > 0) && srv_now() < t_end) usleep(10000);
    MHD_stop_daemon(s->d);             /* joins the connection threads */
    srv_sched_destroy(g_srv.sched);
    g_srv.sched = NULL;
    free(s);
}
