/* sched.c — the scheduler: one lane per model, each with --parallel worker threads and a FIFO
 * queue of at most --queue waiting jobs (then 503 + Retry-After).
 *
 * A worker blocks in lmx_chat_stream / lmx_generate_stream / lmx_generate_ids with a callback
 * that appends the piece to its job and wakes the connection; the callback's nonzero return
 * (disconnect, shutdown, timeout) cancels the generation at the next token. Concurrent calls on
 * one model are safe in lmx.h; today they interleave per operation, and when the runtime batches
 * the active sequences of a model (below lmx.h) these same calls become the rows of one batch: the
 * server does not change. */
#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

typedef struct lane {
    char *model;
    srv_job *head, *tail;         /* FIFO of queued jobs */
    int queued, busy;
    srv_job **running;            /* parallel slots: the job each worker runs (for a hard stop) */
    pthread_cond_t cv;
    pthread_t *threads;
    int n_threads;
    struct srv_sched *s;
    struct lane *next;
} lane;

struct srv_sched {
    lmx_runtime *rt;
    int parallel, queue_max;
    pthread_mutex_t mu;
    lane *lanes;
    int n_lanes;
    bool stopping;
};

typedef struct worker_arg {
    lane *l;
    int slot;
} worker_arg;

void srv_job_release(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0) return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    srv_request_free(&j->req);
    free(j->text);
    cJSON_Delete(j->lp);
    free(j);
}

/* Each generated token's logprobs entry, appended to j->lp (a failed allocation stops: 503). */
static int on_logprob(const lmx_token_info *info, void *user) {
    srv_job *j = user;
    cJSON *e = srv_logprob_entry(info);
    pthread_mutex_lock(&j->mu);
    if (!e) j->oom = true;
    else cJSON_AddItemToArray(j->lp, e);
    pthread_mutex_unlock(&j->mu);
    return e ? 0 : 1;
}

cJSON *srv_job_take_logprobs(srv_job *j) {
    if (!j->lp) return NULL;
    cJSON *out = cJSON_CreateArray();
    int n = cJSON_GetArraySize(j->lp);
    for (int i = j->lp_sent; out && i < n; i++)
        cJSON_AddItemToArray(out, cJSON_Duplicate(cJSON_GetArrayItem(j->lp, i), true));
    j->lp_sent = n;
    return out;
}

static int on_piece(const char *text, size_t len, void *user) {
    srv_job *j = user;
    double now = srv_now();
    int stop = 0;
    pthread_mutex_lock(&j->mu);
    if (j->len + len + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (cap < j->len + len + 1) cap *= 2;
        char *nt = realloc(j->text, cap);
        if (!nt) {
            j->oom = true;
            stop = 1;
        } else {
            j->text = nt;
            j->cap = cap;
        }
    }
    if (!stop && len) {
        memcpy(j->text + j->len, text, len);
        j->len += len;
        j->text[j->len] = '\0';
    }
    double last = j->t_last_piece;
    j->t_last_piece = now;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (last == 0) srv_metrics_ttft(now - j->t_arrive);
    else srv_metrics_itl(now - last);
    if (atomic_load(&j->cancel)) stop = 1;
    if (now > j->deadline) {
        j->timed_out = true;  /* read by the connection after state DONE (under mu) */
        stop = 1;
    }
    return stop;
}

static void run_job(lmx_runtime *rt, srv_job *j) {
    srv_request *r = &j->req;
    lmx_gen_result res;
    memset(&res, 0, sizeof res);
    lmx_status st;
    if (r->logprobs) {
        r->opt.logprob_fn = on_logprob;
        r->opt.logprob_user = j;
    }
    if (atomic_load(&j->cancel)) {
        st = LMX_ERR_CANCELLED;
        res.finish_reason = LMX_FINISH_CANCELLED;
    } else if (r->kind == SRV_CHAT) {
        st = lmx_chat_stream(rt, r->model, r->msgs, r->n_msgs, &r->opt, on_piece, j, &res);
    } else if (r->use_ids) {
        st = lmx_generate_ids(rt, r->model, r->prompt_ids, r->n_prompt_ids, &r->opt, on_piece, j, NULL, NULL, &res);
    } else {
        st = lmx_generate_stream(rt, r->model, r->prompt, &r->opt, on_piece, j, &res);
    }
    const char *detail = st == LMX_OK ? "" : lmx_last_error_detail();
    if (st == LMX_OK || st == LMX_ERR_CANCELLED) /* a cancelled stream counts what it made */
        srv_metrics_tokens(res.n_prompt_tokens, res.cached_tokens, res.n_generated_tokens);
    pthread_mutex_lock(&j->mu);
    if (st == LMX_ERR_CANCELLED && j->timed_out) res.finish_reason = LMX_FINISH_LENGTH;
    j->st = st;
    snprintf(j->detail, sizeof j->detail, "%s", detail);
    j->res = res;
    j->state = SRV_JOB_DONE;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void *worker(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    lane *l = wa.l;
    srv_sched *s = l->s;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!l->head && !s->stopping) pthread_cond_wait(&l->cv, &s->mu);
        if (!l->head) break; /* stopping and nothing left */
        srv_job *j = l->head;
        l->head = j->next;
        if (!l->head) l->tail = NULL;
        l->queued--;
        l->busy++;
        l->running[wa.slot] = j;
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&j->mu);
        j->state = SRV_JOB_RUNNING;
        pthread_mutex_unlock(&j->mu);
        if (srv_now() > j->deadline) {
            j->expired = true; /* never started: 503, not an empty completion */
            atomic_store(&j->cancel, 1);
        }
        run_job(s->rt, j);
        pthread_mutex_lock(&s->mu);
        l->running[wa.slot] = NULL;
        l->busy--;
        pthread_mutex_unlock(&s->mu);
        srv_job_release(j);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

lmx_status srv_sched_create(lmx_runtime *rt, int parallel, int queue, srv_sched **out) {
    srv_sched *s = calloc(1, sizeof *s);
    if (!s) return LMX_ERR_OUT_OF_MEMORY;
    s->rt = rt;
    s->parallel = parallel < 1 ? 1 : parallel;
    s->queue_max = queue < 0 ? 0 : queue;
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return LMX_OK;
}

/* The lane of a model, created with its workers on first use (s->mu held). */
static lane *lane_get(srv_sched *s, const char *model) {
    for (lane *l = s->lanes; l; l = l->next)
        if (!strcmp(l->model, model)) return l;
    if (s->n_lanes >= SRV_MAX_LANES) return NULL;
    lane *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->model = strdup(model);
    l->threads = calloc((size_t)s->parallel, sizeof *l->threads);
    l->running = calloc((size_t)s->parallel, sizeof *l->running);
    if (!l->model || !l->threads || !l->running) goto fail;
    l->s = s;
    pthread_cond_init(&l->cv, NULL);
    for (int i = 0; i < s->parallel; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) break;
        wa->l = l;
        wa->slot = i;
        if (pthread_create(&l->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            break;
        }
        l->n_threads++;
    }
    if (l->n_threads == 0) {
        pthread_cond_destroy(&l->cv);
        goto fail;
    }
    l->next = s->lanes;
    s->lanes = l;
    s->n_lanes++;
    return l;
fail:
    free(l->model);
    free(l->threads);
    free(l->running);
    free(l);
    return NULL;
}

static void random_id(char *out, size_t n, const char *prefix) {
    static atomic_uint_fast64_t ctr;
    uint64_t x = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (atomic_fetch_add(&ctr, 1) + 1) * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    snprintf(out, n, "%s%016llx", prefix, (unsigned long long)x);
}

srv_job *srv_sched_submit(srv_sched *s, srv_request *req, double timeout_s, srv_error *e) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) {
        srv_error_set(e, 503, "server_error", "out_of_memory", "", "out of memory");
        return NULL;
    }
    j->req = *req;
    memset(req, 0, sizeof *req);
    j->req.opt.stop = (const char *const *)j->req.stop; /* the array moved with the struct */
    if (j->req.logprobs && !(j->lp = cJSON_CreateArray())) {
        srv_error_set(e, 503, "server_error", "out_of_memory", "", "out of memory");
        srv_request_free(&j->req);
        free(j);
        return NULL;
    }
    random_id(j->id, sizeof j->id, j->req.kind == SRV_CHAT ? "chatcmpl-" : "cmpl-");
    j->created = (long)time(NULL);
    j->t_arrive = srv_now();
    j->deadline = j->t_arrive + timeout_s;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 2;
    pthread_mutex_lock(&s->mu);
    lane *l = s->stopping ? NULL : lane_get(s, j->req.model);
    if (!l || l->queued >= s->queue_max + (l->n_threads - l->busy)) {
        if (s->stopping)
            srv_error_set(e, 503, "server_error", "shutting_down", "", "the server is shutting down");
        else if (!l)
            srv_error_set(e, 503, "server_error", "too_many_models", "model",
                          "too many models in use at once (at most %d)", SRV_MAX_LANES);
        else
            srv_error_set(e, 503, "server_error", "queue_full", "",
                          "model %s: all %d slots are busy and %d requests are queued; retry later", j->req.model,
                          l->n_threads, l->queued);
        pthread_mutex_unlock(&s->mu);
        j->refs = 1;
        srv_job_release(j);
        return NULL;
    }
    if (l->tail) l->tail->next = j;
    else l->head = j;
    l->tail = j;
    l->queued++;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&s->mu);
    return j;
}

void srv_sched_stop(srv_sched *s, bool hard) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (lane *l = s->lanes; l; l = l->next) {
        for (srv_job *j = l->head; j; j = j->next) atomic_store(&j->cancel, 1); /* end at once when popped */
        if (hard)
            for (int i = 0; i < l->n_threads; i++)
                if (l->running[i]) atomic_store(&l->running[i]->cancel, 1);
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

bool srv_sched_idle(srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    bool idle = true;
    for (lane *l = s->lanes; l; l = l->next)
        if (l->busy || l->queued) idle = false;
    pthread_mutex_unlock(&s->mu);
    return idle;
}

void srv_sched_gauges(srv_sched *s, int *queued, int *busy, int *lanes) {
    *queued = *busy = *lanes = 0;
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    for (lane *l = s->lanes; l; l = l->next) {
        *queued += l->queued;
        *busy += l->busy;
    }
    *lanes = s->n_lanes;
    pthread_mutex_unlock(&s->mu);
}

void srv_sched_each_lane(srv_sched *s, void (*fn)(const char *model, int queued, int busy, void *user), void *user) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    for (lane *l = s->lanes; l; l = l->next) fn(l->model, l->queued, l->busy, user);
    pthread_mutex_unlock(&s->mu);
}

void srv_sched_destroy(srv_sched *s) {
    if (!s) return;
    srv_sched_stop(s, true);
    for (lane *l = s->lanes; l;) {
        for (int i = 0; i < l->n_threads; i++) pthread_join(l->threads[i], NULL);
        lane *n = l->next;
        pthread_cond_destroy(&l->cv);
        free(l->model);
        free(l->threads);
        free(l->running);
        free(l);
        l = n;
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}
