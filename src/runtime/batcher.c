/* batcher.c — continuous batching of one model's generations (see batcher.h). */
#include "runtime/batcher.h"
#include "generate/sampler.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum job_state { JOB_QUEUED = 0, JOB_RUNNING, JOB_FINISHED } job_state;

/* One generation. The consumer (the caller's thread) reads hist[0..n_hist) and the flags under
 * b->mu; the batcher thread alone writes the rest. */
typedef struct bjob {
    lmx_gen_source base;        /* the consumer's token source (first member: cast back) */
    lmx_batcher *b;
    const lmx_generate_request *req;
    pthread_cond_t cv;          /* a token was published, the job finished or was released */
    job_state state;
    lmx_engine_seq *seq;        /* RUNNING: its positions hold hist[0..seq_pos) */
    int32_t *hist;              /* [max_context + 1]: prompt, then sampled tokens */
    size_t n_hist;              /* published entries; hist[n_hist - 1] is the one to forward next */
    float *logits;              /* [vocab] the row's logits */
    lmx_sampler *sampler;
    lmx_engine_sample es;       /* device sampling of the row (use_dev) */
    int32_t dev_tok;            /* the engine's choice, -1 = sample on the host */
    bool use_dev;
    long gen, limit;            /* tokens produced (EOS excluded) / max_tokens */
    lmx_token_logprob *lp;      /* [(max_context + 1) * (1 + top)] or NULL: per generated token, itself then top */
    int n_top;
    bool admitted_once, consumer_done;
    lmx_status err;             /* set with FINISHED when the sequence failed */
    char err_detail[512];
    uint64_t order;             /* admission order (preemption takes the newest) */
    int32_t row_tok;            /* the step's sampled token (batcher thread) */
    bool row_out;               /* the step's row produced a token */
    bool taken;                 /* has a row in the step being built */
    bool u_ready;               /* es.u holds the uniform of the next token's draw */
    struct bjob *next;          /* queue link */
} bjob;

/* A finished sequence kept for prefix reuse. */
typedef struct pc_seq {
    lmx_engine_seq *seq;
    int32_t *ids;               /* [n] the tokens its positions hold */
    size_t n;
    int64_t bytes;
    uint64_t tick;
    struct pc_seq *next;
} pc_seq;

struct lmx_batcher {
    const lmx_engine *eng;
    lmx_engine_model *m;
    const lmx_model_facts *facts;
    lmx_batcher_opts o;
    int64_t pos_bytes;          /* bytes per cached position (prompt-cache accounting) */
    lmx_engine_pool *pool;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;        /* work arrived, a consumer ended, stop */
    bool stop;
    bjob *q_head, *q_tail;      /* FIFO of QUEUED jobs */
    bjob **active;              /* [max_batch] RUNNING jobs (the batcher thread's list) */
    int n_active;
    bool paused;                /* admission paused after a preemption until a sequence finishes */
    uint64_t order;
    lmx_engine_step_row *rows;  /* [max_batch] the step's rows */
    bjob **row_job;             /* [max_batch] their jobs */
    pc_seq *pc;
    int pc_entries;
    int64_t pc_bytes;
    uint64_t pc_tick;
    lmx_batcher_stats st;       /* counters; the pool figures as of the last step (pool_stats may
                                   only run on the batcher's thread, between steps) */
};

/* Refreshes st's pool figures (batcher thread, b->mu held). */
static void pool_figures(lmx_batcher *b) {
    if (b->eng->pool_stats)
        b->eng->pool_stats(b->pool, &b->st.pool_bytes, &b->st.pool_used_bytes, &b->st.pool_free_blocks);
}

/* ---- queue ---- */
static void q_push_back(lmx_batcher *b, bjob *j) {
    j->next = NULL;
    if (b->q_tail) b->q_tail->next = j;
    else b->q_head = j;
    b->q_tail = j;
}

static void q_push_front(lmx_batcher *b, bjob *j) {
    j->next = b->q_head;
    b->q_head = j;
    if (!b->q_tail) b->q_tail = j;
}

static bjob *q_pop(lmx_batcher *b) {
    bjob *j = b->q_head;
    if (!j) return NULL;
    b->q_head = j->next;
    if (!b->q_head) b->q_tail = NULL;
    j->next = NULL;
    return j;
}

/* ---- prompt cache (batcher thread, b->mu held) ---- */
static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static void pc_free(lmx_batcher *b, pc_seq *e) {
    b->eng->seq_destroy(e->seq);
    free(e->ids);
    free(e);
}

static void pc_unlink(lmx_batcher *b, pc_seq **pp) {
    pc_seq *e = *pp;
    *pp = e->next;
    b->pc_entries--;
    b->pc_bytes -= e->bytes;
}

/* Drops the least recently used cached seq; false when there is none. */
static bool pc_evict_lru(lmx_batcher *b) {
    pc_seq **best = NULL;
    for (pc_seq **pp = &b->pc; *pp; pp = &(*pp)->next)
        if (!best || (*pp)->tick < (*best)->tick) best = pp;
    if (!best) return false;
    pc_seq *e = *best;
    pc_unlink(b, best);
    pc_free(b, e);
    b->st.pc_evictions++;
    return true;
}

/* Keeps seq (holding ids[0..n)) as the most recent entry, or destroys it when it cannot fit. */
static void pc_put(lmx_batcher *b, lmx_engine_seq *seq, const int32_t *ids, size_t n) {
    const int64_t budget = b->o.prompt_cache_bytes, bytes = b->pos_bytes * (int64_t)n;
    pc_seq *e = n > 0 && budget > 0 && bytes <= budget ? calloc(1, sizeof *e) : NULL;
    if (e && !(e->ids = malloc(n * sizeof *ids))) {
        free(e);
        e = NULL;
    }
    if (!e) {
        b->eng->seq_destroy(seq);
        return;
    }
    memcpy(e->ids, ids, n * sizeof *ids);
    e->seq = seq;
    e->n = n;
    e->bytes = bytes;
    for (pc_seq **pp = &b->pc; *pp;) { /* an entry that is a prefix of this one is subsumed by it */
        pc_seq *q = *pp;
        if (q->n <= n && common_prefix(q->ids, q->n, ids, n) == q->n) {
            pc_unlink(b, pp);
            pc_free(b, q);
        } else {
            pp = &q->next;
        }
    }
    while (b->pc_bytes + bytes > budget && pc_evict_lru(b)) {
    }
    e->tick = ++b->pc_tick;
    e->next = b->pc;
    b->pc = e;
    b->pc_entries++;
    b->pc_bytes += bytes;
}

/* A sequence for j: a fork of the cached seq sharing the longest prefix with hist[0..n_hist) (at
 * most n_hist - 1 positions: the last token is forwarded for its logits), else a new one. */
static lmx_status seq_for(lmx_batcher *b, bjob *j, size_t *n_cached) {
    *n_cached = 0;
    pc_seq *best = NULL;
    size_t best_n = 0;
    for (pc_seq *e = b->pc; e; e = e->next) {
        size_t m = common_prefix(e->ids, e->n, j->hist, j->n_hist - 1);
        if (m > best_n) best = e, best_n = m;
    }
    if (best) {
        lmx_engine_seq *s = NULL;
        lmx_status st;
        while ((st = b->eng->seq_fork(best->seq, (int)best_n, &s)) == LMX_ERR_OUT_OF_MEMORY) {
            /* room for the copied partial block: evict others (never best itself) */
            pc_seq **victim = NULL;
            for (pc_seq **pp = &b->pc; *pp; pp = &(*pp)->next)
                if (*pp != best && (!victim || (*pp)->tick < (*victim)->tick)) victim = pp;
            if (!victim) break;
            pc_seq *v = *victim;
            pc_unlink(b, victim);
            pc_free(b, v);
            b->st.pc_evictions++;
        }
        if (st == LMX_OK) {
            best->tick = ++b->pc_tick;
            b->st.pc_hits++;
            j->seq = s;
            *n_cached = best_n;
            return LMX_OK;
        }
        LMX_LOG_D("batcher: fork of a cached prefix failed (%s); prefilling everything", lmx_last_error_detail());
    }
    if (b->o.prompt_cache_bytes > 0) b->st.pc_misses++;
    return b->eng->seq_create(b->pool, b->o.max_context, &j->seq);
}

/* ---- job lifecycle (b->mu held) ---- */
static void remove_active(lmx_batcher *b, bjob *j) {
    for (int i = 0; i < b->n_active; i++)
        if (b->active[i] == j) {
            b->active[i] = b->active[--b->n_active];
            return;
        }
}

/* The job's sequence leaves the pool: cached (its positions hold hist[0..seq_pos)) or destroyed. */
static void release_seq(lmx_batcher *b, bjob *j, bool cache) {
    if (!j->seq) return;
    if (cache) pc_put(b, j->seq, j->hist, (size_t)b->eng->seq_pos(j->seq));
    else b->eng->seq_destroy(j->seq);
    j->seq = NULL;
    b->paused = false; /* blocks came back */
}

/* The sequence produced its last token (or failed): it leaves the batch. */
static void finish(lmx_batcher *b, bjob *j, lmx_status err) {
    release_seq(b, j, err == LMX_OK);
    remove_active(b, j);
    j->state = JOB_FINISHED;
    if (err != LMX_OK) {
        j->err = err;
        snprintf(j->err_detail, sizeof j->err_detail, "%s", lmx_last_error_detail());
    }
    pthread_cond_broadcast(&j->cv);
}

/* Jobs whose consumer ended leave the batch (running) or the queue. */
static void sweep(lmx_batcher *b) {
    for (int i = 0; i < b->n_active; i++) {
        bjob *j = b->active[i];
        if (!j->consumer_done) continue;
        release_seq(b, j, true);
        b->active[i--] = b->active[--b->n_active];
        j->state = JOB_FINISHED;
        pthread_cond_broadcast(&j->cv);
    }
    for (bjob **pp = &b->q_head, *prev = NULL; *pp;) {
        bjob *j = *pp;
        if (!j->consumer_done) {
            prev = j;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (b->q_tail == j) b->q_tail = prev;
        j->state = JOB_FINISHED;
        pthread_cond_broadcast(&j->cv);
    }
}

static void admit(lmx_batcher *b) {
    if (b->n_active == 0) b->paused = false;
    while (b->n_active < b->o.max_batch && b->q_head && !b->paused) {
        bjob *j = q_pop(b);
        size_t n_cached;
        lmx_status st = seq_for(b, j, &n_cached);
        if (st != LMX_OK) {
            if (b->n_active > 0) { /* wait for blocks */
                q_push_front(b, j);
                b->paused = true;
                return;
            }
            j->state = JOB_RUNNING; /* so that finish() finds nothing to release */
            finish(b, j, st);
            continue;
        }
        if (!j->admitted_once) {
            j->admitted_once = true;
            j->base.n_cached = n_cached;
            j->base.t_prefill0 = lmx_now_ns();
        }
        j->state = JOB_RUNNING;
        j->order = ++b->order;
        b->active[b->n_active++] = j;
    }
}

/* ---- steps ---- */

/* The row of a running job: hist[pos .. end) with end at the next multiple of prefill_chunk or the
 * end of what is known; it produces a token when it reaches hist's end. */
static size_t row_end(const lmx_batcher *b, const bjob *j, size_t pos) {
    size_t C = (size_t)b->o.prefill_chunk, end = (pos / C + 1) * C;
    return end < j->n_hist ? end : j->n_hist;
}

/* Adds j's row to the step (hist[pos .. end)); false when it does not fit the budget left. */
static bool add_row(lmx_batcher *b, bjob *j, int *n, size_t *budget) {
    size_t pos = (size_t)b->eng->seq_pos(j->seq), end = row_end(b, j, pos);
    if (end - pos > *budget) return false;
    *budget -= end - pos;
    bool last = end == j->n_hist;
    j->dev_tok = -1;
    if (last && j->use_dev && !j->u_ready) { /* once per token, even if the step is retried */
        j->es.u = j->es.sampling.temperature > 0 ? lmx_sampler_uniform(j->sampler) : 0.0;
        j->u_ready = true;
    }
    j->es.history = j->hist;
    j->es.n_history = j->n_hist;
    b->rows[*n] = (lmx_engine_step_row){.seq = j->seq,
                                        .ids = j->hist + pos,
                                        .n = end - pos,
                                        .sample = last && j->use_dev ? &j->es : NULL,
                                        .logits = last ? j->logits : NULL,
                                        .token = &j->dev_tok};
    b->row_job[(*n)++] = j;
    j->taken = true;
    return true;
}

/* Fills b->rows: every decode row, then prefill chunks oldest admission first while they fit the
 * token budget (max_batch + prefill_chunk: one whole chunk always fits). Returns the row count. */
static int build_rows(lmx_batcher *b) {
    int n = 0;
    size_t budget = (size_t)b->o.max_batch + (size_t)b->o.prefill_chunk;
    for (int i = 0; i < b->n_active; i++) {
        bjob *j = b->active[i];
        j->taken = false;
        if (j->n_hist - (size_t)b->eng->seq_pos(j->seq) == 1) add_row(b, j, &n, &budget);
    }
    for (;;) {
        bjob *j = NULL;
        for (int i = 0; i < b->n_active; i++) {
            bjob *c = b->active[i];
            if (!c->taken && (!j || c->order < j->order)) j = c;
        }
        if (!j || !add_row(b, j, &n, &budget)) break;
    }
    return n;
}

/* Samples the rows that reached their history's end (batcher thread, b->mu NOT held: the job's
 * sampler, logits and hist[0..n_hist) are only touched here). */
static lmx_status sample_rows(lmx_batcher *b, int n_rows) {
    for (int r = 0; r < n_rows; r++) {
        bjob *j = b->row_job[r];
        lmx_engine_step_row *w = &b->rows[r];
        if (!w->logits) continue;
        const lmx_sampling *sp = &j->req->opt->sampling;
        /* The per-sequence logits hook (lmx_gen_options.logits_fn, a documented seam, refused for
         * now) would edit j->logits here, before the sampler, with j->hist[0..n_hist). */
        int32_t tok = j->dev_tok;
        lmx_status st = LMX_OK;
        if (!(w->sample && tok >= 0)) {
            st = w->sample ? lmx_sampler_sample_u(j->sampler, sp, j->logits, j->hist, j->n_hist, j->es.u, &tok)
                           : lmx_sampler_sample(j->sampler, sp, j->logits, j->hist, j->n_hist, &tok);
            if (st == LMX_OK && j->lp && tok >= 0 && tok < b->facts->info.vocab_size) {
                lmx_token_logprob *e = j->lp + (j->n_hist - j->req->n_prompt) * (size_t)(1 + j->n_top);
                e->id = tok;
                st = lmx_sampler_logprobs(j->sampler, j->logits, tok, j->n_top, &e->logprob, e + 1);
            }
        }
        if (st != LMX_OK) return st;
        j->u_ready = false;
        j->row_tok = tok;
        j->row_out = true;
    }
    return LMX_OK;
}

static bool is_eos(const lmx_model_facts *f, int32_t t) {
    for (int i = 0; i < f->n_eos; i++)
        if (f->eos_ids[i] == t) return true;
    return false;
}

/* Publishes the sampled tokens (b->mu held); a sequence that produced its last one leaves. */
static void publish(lmx_batcher *b, int n_rows) {
    const int vocab = b->facts->info.vocab_size;
    for (int r = 0; r < n_rows; r++) {
        bjob *j = b->row_job[r];
        if (!j->row_out) continue;
        j->row_out = false;
        int32_t tok = j->row_tok;
        if (!j->base.t_prefill) j->base.t_prefill = lmx_now_ns();
        j->hist[j->n_hist++] = tok;
        pthread_cond_broadcast(&j->cv);
        /* the consumer's tests (generate.c): EOS ends before counting, then max_tokens / context */
        bool done = (!j->req->opt->ignore_eos && is_eos(b->facts, tok)) || tok < 0 || tok >= vocab;
        if (!done) done = ++j->gen >= j->limit || j->n_hist > (size_t)j->req->max_context;
        if (done) finish(b, j, LMX_OK);
    }
}

/* A step failed with OUT_OF_MEMORY: make room (b->mu held). */
static void make_room(lmx_batcher *b) {
    if (pc_evict_lru(b)) return;
    bjob *newest = NULL;
    for (int i = 0; i < b->n_active; i++)
        if (!newest || b->active[i]->order > newest->order) newest = b->active[i];
    if (!newest) return;
    if (b->n_active == 1) {
        lmx_error(LMX_ERR_OUT_OF_MEMORY, "KV pool: the sequence alone needs more blocks than the pool holds (%d "
                                         "positions)", b->eng->seq_pos(newest->seq));
        finish(b, newest, LMX_ERR_OUT_OF_MEMORY);
        return;
    }
    /* preempt: drop its positions, prefill them again (prompt and tokens so far) when blocks free up */
    b->eng->seq_destroy(newest->seq);
    newest->seq = NULL;
    remove_active(b, newest);
    newest->state = JOB_QUEUED;
    q_push_front(b, newest);
    b->paused = true;
    b->st.preemptions++;
    LMX_LOG_I("batcher: KV pool full; preempted a sequence of %zu tokens", newest->n_hist);
}

static int hist_bucket(int rows) {
    int i = 0;
    while (i < LMX_BATCH_HIST_BUCKETS - 1 && rows > (1 << i)) i++;
    return i;
}

static void *batcher_main(void *arg) {
    lmx_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        sweep(b);
        admit(b);
        if (b->stop && b->n_active == 0 && !b->q_head) break;
        int n_rows = b->n_active ? build_rows(b) : 0;
        pool_figures(b); /* after this turn's releases and before it waits */
        if (n_rows == 0) {
            pthread_cond_wait(&b->wake, &b->mu);
            continue;
        }
        pthread_mutex_unlock(&b->mu);
        lmx_status st = b->eng->step(b->pool, b->rows, n_rows);
        if (st == LMX_OK) st = sample_rows(b, n_rows);
        pthread_mutex_lock(&b->mu);
        if (st == LMX_OK) {
            b->st.steps++;
            b->st.rows += (uint64_t)n_rows;
            b->st.hist[hist_bucket(n_rows)]++;
            publish(b, n_rows);
        } else if (st == LMX_ERR_OUT_OF_MEMORY) {
            make_room(b);
        } else { /* the step's sequences fail (their positions are unknown now) */
            lmx_error_prefix(st, "batched step of %d sequences", n_rows);
            for (int r = 0; r < n_rows; r++) {
                bjob *j = b->row_job[r];
                if (j->state == JOB_RUNNING) {
                    b->eng->seq_destroy(j->seq);
                    j->seq = NULL;
                    finish(b, j, st);
                }
            }
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---- lifecycle ---- */
lmx_status lmx_batcher_create(const lmx_engine *eng, lmx_engine_model *m, const lmx_model_facts *facts,
                              const lmx_batcher_opts *o, lmx_batcher **out) {
    *out = NULL;
    if (!eng->step || !eng->pool_create || o->max_batch < 1 || o->prefill_chunk < 1 || o->max_context < 1)
        return lmx_error(LMX_ERR_UNSUPPORTED, "batcher: the engine has no batched steps");
    lmx_batcher *b = calloc(1, sizeof *b);
    if (!b) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "batcher: allocation failed");
    b->eng = eng;
    b->m = m;
    b->facts = facts;
    b->o = *o;
    b->pos_bytes = facts->kv_bytes_per_token > 0 ? facts->kv_bytes_per_token : 1;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->wake, NULL);
    b->active = calloc((size_t)o->max_batch, sizeof *b->active);
    b->rows = calloc((size_t)o->max_batch, sizeof *b->rows);
    b->row_job = calloc((size_t)o->max_batch, sizeof *b->row_job);
    lmx_status st = LMX_OK;
    if (!b->active || !b->rows || !b->row_job) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "batcher: allocation failed");
    if (st == LMX_OK) st = eng->pool_create(m, o->pool_bytes, o->max_batch + o->prefill_chunk, &b->pool);
    if (st == LMX_OK) pool_figures(b); /* no thread yet */
    if (st == LMX_OK && pthread_create(&b->thread, NULL, batcher_main, b) != 0)
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "batcher: cannot start its thread");
    if (st != LMX_OK) {
        lmx_batcher_destroy(b);
        return st;
    }
    b->thread_started = true;
    *out = b;
    return LMX_OK;
}

void lmx_batcher_destroy(lmx_batcher *b) {
    if (!b) return;
    if (b->thread_started) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_broadcast(&b->wake);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
    }
    while (b->pc) {
        pc_seq *e = b->pc;
        pc_unlink(b, &b->pc);
        pc_free(b, e);
    }
    if (b->pool) b->eng->pool_destroy(b->pool);
    free(b->active);
    free(b->rows);
    free(b->row_job);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void lmx_batcher_stats_add(lmx_batcher *b, lmx_batcher_stats *out) {
    pthread_mutex_lock(&b->mu);
    out->pool_bytes += b->st.pool_bytes;
    out->pool_used_bytes += b->st.pool_used_bytes;
    out->pool_free_blocks += b->st.pool_free_blocks;
    out->steps += b->st.steps;
    out->rows += b->st.rows;
    for (int i = 0; i < LMX_BATCH_HIST_BUCKETS; i++) out->hist[i] += b->st.hist[i];
    out->pc_hits += b->st.pc_hits;
    out->pc_misses += b->st.pc_misses;
    out->pc_evictions += b->st.pc_evictions;
    out->pc_entries += b->pc_entries;
    out->pc_bytes += b->pc_bytes;
    out->running += b->n_active;
    for (bjob *j = b->q_head; j; j = j->next) out->queued++;
    out->preemptions += b->st.preemptions;
    pthread_mutex_unlock(&b->mu);
}

/* ---- the caller's side ---- */
static lmx_status job_next(lmx_gen_source *base, size_t n_pos, int32_t *tok, lmx_token_info *info) {
    bjob *j = (bjob *)base;
    lmx_batcher *b = j->b;
    pthread_mutex_lock(&b->mu);
    while (j->n_hist <= n_pos && j->state != JOB_FINISHED) pthread_cond_wait(&j->cv, &b->mu);
    lmx_status st = LMX_OK;
    if (j->n_hist > n_pos) {
        *tok = j->hist[n_pos];
        if (info && j->lp) {
            const lmx_token_logprob *e = j->lp + (n_pos - j->req->n_prompt) * (size_t)(1 + j->n_top);
            *info = (lmx_token_info){.id = e->id, .logprob = e->logprob, .n_top = j->n_top, .top = e + 1};
        }
    } else if (j->err != LMX_OK) {
        st = lmx_error(j->err, "%s", j->err_detail);
    } else {
        st = lmx_error(LMX_ERR_INFERENCE_FAILURE, "batcher: the sequence ended after %zu positions", j->n_hist);
    }
    pthread_mutex_unlock(&b->mu);
    return st;
}

static void job_free(bjob *j) {
    if (!j) return;
    lmx_sampler_destroy(j->sampler);
    free(j->hist);
    free(j->logits);
    free(j->lp);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static lmx_status job_new(lmx_batcher *b, const lmx_generate_request *req, bjob **out) {
    const int vocab = b->facts->info.vocab_size;
    const lmx_gen_options *opt = req->opt;
    bjob *j = calloc(1, sizeof *j);
    if (!j) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "batcher: allocation failed");
    pthread_cond_init(&j->cv, NULL);
    j->b = b;
    j->req = req;
    j->base.next = job_next;
    const size_t cap = (size_t)req->max_context + 1;
    j->hist = malloc(cap * sizeof *j->hist);
    j->logits = malloc((size_t)vocab * sizeof *j->logits);
    j->n_top = opt->top_logprobs;
    if (opt->logprob_fn) j->lp = malloc(cap * (size_t)(1 + j->n_top) * sizeof *j->lp);
    lmx_status st = lmx_sampler_create(vocab, &j->sampler);
    if (st == LMX_OK && (!j->hist || !j->logits || (opt->logprob_fn && !j->lp)))
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "batcher: cannot allocate a sequence's buffers");
    if (st != LMX_OK) {
        job_free(j);
        return st;
    }
    if (opt->use_seed) lmx_sampler_seed(j->sampler, opt->seed);
    else lmx_sampler_seed_entropy(j->sampler);
    lmx_sampler_set_prompt_len(j->sampler, req->n_prompt);
    memcpy(j->hist, req->prompt, req->n_prompt * sizeof *j->hist);
    j->n_hist = req->n_prompt;
    j->limit = opt->max_tokens < 0 ? LONG_MAX : opt->max_tokens;
    j->use_dev = !opt->logprob_fn; /* the engine may choose the token (or return -1 and the logits) */
    j->es.sampling = opt->sampling;
    *out = j;
    return LMX_OK;
}

lmx_status lmx_batcher_run(lmx_batcher *b, const lmx_generate_request *req, lmx_gen_result *res) {
    memset(res, 0, sizeof *res);
    if (req->out_ids) *req->out_ids = NULL;
    if (req->n_out) *req->n_out = 0;
    res->n_prompt_tokens = (int)req->n_prompt;
    lmx_status st = lmx_generate_check(req);
    if (st != LMX_OK) return st;
    bjob *j = NULL;
    int32_t *hist = malloc(((size_t)req->max_context + 1) * sizeof *hist); /* the consumer's copy */
    if (!hist) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "batcher: cannot allocate the history");
    if ((st = job_new(b, req, &j)) != LMX_OK) {
        free(hist);
        return st;
    }
    pthread_mutex_lock(&b->mu);
    q_push_back(b, j);
    pthread_cond_broadcast(&b->wake);
    pthread_mutex_unlock(&b->mu);

    st = lmx_generate_consume(req, &j->base, hist, res);

    pthread_mutex_lock(&b->mu);
    j->consumer_done = true; /* the batcher drops it at its next step; FINISHED = no longer referenced */
    pthread_cond_broadcast(&b->wake);
    while (j->state != JOB_FINISHED) pthread_cond_wait(&j->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    job_free(j);
    free(hist);
    return st;
}
