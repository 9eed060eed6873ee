/* server.h — `lmx serve`: an OpenAI-compatible HTTP server over lmx.h (see docs/SERVER.md).
 *
 * One concept per file, all declared here (the server is one small face of the library):
 *   http.c        libmicrohttpd glue: the daemon (thread per connection), request bodies, responses,
 *                 SSE streams, client-disconnect detection, the listening socket
 *   router.c      method + path → handler, the API key, the per-endpoint request counters
 *   oai_request.c OpenAI request bodies (cJSON) → srv_request (lmx_gen_options, messages, prompt)
 *   oai_response.c srv_request + result → OpenAI JSON: completions, chunks, usage, timings, errors
 *   sched.c       per-model lanes: --parallel worker threads blocking in lmx_*_stream, a FIFO queue
 *                 of --queue waiting jobs, 503 beyond; the job a connection and a worker share
 *   models.c      which `model` names are allowed (registered or a directory under --models-dir)
 *   metrics.c     counters and histograms, rendered as Prometheus text
 * The server uses lmx.h only (and util/json.h's thread-safe parse: cJSON's parser keeps a global).
 * Everything is bounded: body size, queue, lanes, connections, stop strings, messages. */
#ifndef LMX_SERVER_H
#define LMX_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lmx.h"

#define SRV_MAX_BODY (8u << 20)   /* request body limit: 413 above */
#define SRV_MAX_STOP 16           /* stop strings per request */
#define SRV_MAX_MESSAGES 4096     /* chat messages per request */
#define SRV_MAX_LANES 64          /* distinct models with workers at once */
#define SRV_MAX_CONNECTIONS 1024  /* open connections (thread per connection) */

typedef struct srv_options {
    const char *host;             /* default 127.0.0.1 */
    int port;                     /* default 8080; 0 = any free port (printed at start) */
    const char *models_dir;       /* NULL = the runtime's default */
    const char *api_key;          /* NULL = no key needed */
    int parallel;                 /* running generations per model (default 4) */
    int queue;                    /* waiting requests per model beyond them (default 64) */
    double timeout_s;             /* per request: queue wait + generation (default 600) */
    double grace_s;               /* on SIGINT/SIGTERM: time running streams get to finish (default 10) */
    lmx_config cfg;               /* the runtime (device, threads, ctx, max models/memory) */
} srv_options;

/* ---- metrics.c ---- */
typedef enum srv_endpoint {
    SRV_EP_CHAT = 0, SRV_EP_COMPLETIONS, SRV_EP_MODELS, SRV_EP_HEALTH, SRV_EP_METRICS, SRV_EP_OTHER, SRV_EP_COUNT
} srv_endpoint;
void srv_metrics_init(void);
void srv_metrics_request(srv_endpoint ep, int status);
void srv_metrics_tokens(int prompt, int cached, int generated);
void srv_metrics_ttft(double seconds);
void srv_metrics_itl(double seconds);
void srv_metrics_cancelled(void);
/* Prometheus text (malloc'd) including the runtime's cache/memory counters and the scheduler's gauges. */
char *srv_metrics_render(lmx_runtime *rt);

/* ---- oai_request.c ---- */
typedef enum srv_kind { SRV_CHAT = 0, SRV_COMPLETION } srv_kind;

typedef struct srv_request {
    srv_kind kind;
    char *model;
    lmx_message *msgs;            /* chat: role/content owned (malloc'd) */
    int n_msgs;
    char *prompt;                 /* completion: text prompt, or */
    int32_t *prompt_ids;          /* completion: token ids */
    size_t n_prompt_ids;
    bool use_ids;
    lmx_gen_options opt;          /* opt.stop points at stop[] */
    char *stop[SRV_MAX_STOP];
    bool stream, include_usage;
    bool logprobs;                /* choices[].logprobs.content[] wanted (opt.top_logprobs alternatives) */
} srv_request;

/* An error in OpenAI's shape, before it is written. */
typedef struct srv_error {
    int status;                   /* HTTP status */
    const char *type;             /* "invalid_request_error", "authentication_error", ... */
    const char *code;             /* NULL → null */
    char param[64];               /* "" → null */
    char message[1024];
} srv_error;

void srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Parses a body of the given kind. false: *e says why (400 naming the parameter). */
bool srv_request_parse(srv_kind kind, const char *body, size_t len, srv_request *r, srv_error *e);
void srv_request_free(srv_request *r);

/* ---- oai_response.c ---- */
/* The HTTP status and OpenAI error for a failed lmx call (detail: lmx_last_error_detail()). */
void srv_error_from_status(lmx_status st, const char *detail, srv_kind kind, srv_error *e);
char *srv_error_json(const srv_error *e);
/* logprobs: a cJSON array of OpenAI's choices[].logprobs.content[] entries ({token, logprob, bytes,
 * top_logprobs}) or NULL (then "logprobs": null); the functions below take ownership of it. */
struct cJSON;
/* One content entry of a generated token (srv_job.lp's items). */
struct cJSON *srv_logprob_entry(const lmx_token_info *info);
/* Non-streamed completion body. */
char *srv_response_json(const srv_request *r, const char *id, long created, const char *text,
                        const lmx_gen_result *res, struct cJSON *logprobs);
/* One SSE event "data: {...}\n\n" for a streamed piece (role_first: the first chunk, with the role). */
char *srv_chunk_sse(const srv_request *r, const char *id, long created, const char *text, size_t len,
                    bool role_first, struct cJSON *logprobs);
/* The end of a stream: the finish_reason chunk (with timings and the logprobs not sent yet), the
 * usage chunk when asked, [DONE]. */
char *srv_stream_end_sse(const srv_request *r, const char *id, long created, const lmx_gen_result *res,
                         struct cJSON *logprobs);
/* An error inside a started stream: "data: {"error":...}\n\ndata: [DONE]\n\n". */
char *srv_stream_error_sse(const srv_error *e);
const char *srv_finish_str(lmx_finish_reason f);

/* ---- models.c ---- */
/* Checks that `name` may be served: a registered name, or a directory with a config.json under the
 * models directory (no absolute path, no "..", no symlink out of it). false: 404 / 400 in *e. */
bool srv_model_allowed(const char *models_dir, const char *name, srv_error *e);
/* GET /v1/models body (registered + directories under models_dir + loaded). */
char *srv_models_json(lmx_runtime *rt, const char *models_dir);

/* ---- sched.c ---- */
typedef enum srv_job_state { SRV_JOB_QUEUED = 0, SRV_JOB_RUNNING, SRV_JOB_DONE } srv_job_state;

/* What a connection thread and a worker share. The worker appends text and signals; the connection
 * reads it. Freed by whoever drops the last of the two references. */
typedef struct srv_job {
    srv_request req;
    char id[48];
    long created;
    double t_arrive;              /* monotonic seconds */
    double deadline;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_job_state state;
    char *text;                   /* everything generated so far */
    size_t len, cap;
    struct cJSON *lp;             /* req.logprobs: the content entries so far (array), else NULL */
    int lp_sent;                  /* entries already streamed */
    bool oom;                     /* appending failed: the generation is cancelled, 503 */
    atomic_int cancel;            /* set by the connection (disconnect, shutdown): the callback stops */
    bool timed_out;               /* --timeout passed while it ran: it ends as "length" */
    bool expired;                 /* --timeout passed while it waited in the queue: 503 */
    double t_last_piece;
    lmx_status st;
    char detail[1024];
    lmx_gen_result res;
    int refs;
    struct srv_job *next;
} srv_job;

typedef struct srv_sched srv_sched;
lmx_status srv_sched_create(lmx_runtime *rt, int parallel, int queue, srv_sched **out);
/* Stops the workers: waiting jobs end as cancelled, running ones are cancelled when hard. */
void srv_sched_stop(srv_sched *s, bool hard);
void srv_sched_destroy(srv_sched *s);
/* Takes ownership of *req. Returns the job (two references: drop yours with srv_job_release), or
 * NULL with *e (503 queue full / shutting down, 500 out of memory). */
srv_job *srv_sched_submit(srv_sched *s, srv_request *req, double timeout_s, srv_error *e);
void srv_job_release(srv_job *j);
/* Takes the logprob entries not sent yet (a new array, NULL when logprobs are off); j->mu held. */
struct cJSON *srv_job_take_logprobs(srv_job *j);
/* Gauges for /metrics. */
void srv_sched_gauges(srv_sched *s, int *queued, int *busy, int *lanes);
bool srv_sched_idle(srv_sched *s);
/* Calls fn for each model lane (under the scheduler's lock: fn must not call back into it). */
void srv_sched_each_lane(srv_sched *s, void (*fn)(const char *model, int queued, int busy, void *user), void *user);

/* ---- http.c / router.c ---- */
typedef struct srv_server srv_server;
/* Binds, starts the daemon; *port_out gets the port actually bound. */
lmx_status srv_server_start(const srv_options *o, lmx_runtime *rt, srv_server **out, int *port_out);
/* Stops accepting, lets running streams finish for up to grace_s, cancels the rest, joins. */
void srv_server_stop(srv_server *s, double grace_s);

/* Process-wide server context the handlers use (one server per process). */
typedef struct srv_ctx {
    const srv_options *opt;
    lmx_runtime *rt;
    srv_sched *sched;
    atomic_int stopping;          /* no new generations; streams end soon */
    atomic_int hurry;             /* a second signal: no grace */
} srv_ctx;
extern srv_ctx g_srv;

double srv_now(void);             /* monotonic seconds */

/* A request as router.c sees it (http.c fills it once the body is complete). */
typedef struct srv_http_req {
    const char *method, *path;
    const char *authorization;    /* the Authorization header or NULL */
    const char *body;
    size_t len;
    int fd;                       /* the client socket: polled for a disconnect while waiting */
} srv_http_req;

/* What router.c answers: a whole body, or an SSE stream over a job (then status is 200). */
typedef struct srv_reply {
    int status;
    const char *content_type;
    char *body;                   /* malloc'd; NULL with stream_job set */
    int retry_after;              /* > 0: a Retry-After header */
    srv_job *stream_job;          /* the reference passes to http.c */
    bool close;                   /* the client is gone: send nothing, drop the connection */
} srv_reply;

void srv_route(const srv_http_req *rq, srv_reply *rp);
srv_endpoint srv_endpoint_of(const char *path);
/* True when the peer closed its end of the socket (or it failed). */
bool srv_peer_gone(int fd);
/* Fills *rp with an error body of e. */
void srv_reply_error(srv_reply *rp, const srv_error *e);

#endif
