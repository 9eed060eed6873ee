/* thread_pool.c — see thread_pool.h.
 *
 * Hand-off: a run publishes its loop and opens a new generation of the run word (release); a
 * worker joins it by counting itself in while the run is open, takes chunks, and counts itself out.
 * The caller takes chunks too; when none are left it closes the run and waits only for the workers
 * still inside (each finishing the chunk it holds), never for a worker that did not join: a worker
 * descheduled by a third process on the cores (or more threads than cores) costs the run nothing,
 * the caller does its share. Workers that finished a run spin on the run word for up to SPIN_NS
 * (decode issues a few hundred short runs per token a few µs apart, and a condition-variable wake
 * costs tens of µs on a VM), then sleep on `wake`; the caller likewise spins up to SPIN_NS for the
 * workers inside before sleeping on `done`. Every wait ends in a condition variable. */
#include "backend/cpu/thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "util/error.h"

#define SPIN_NS 50000 /* 50 µs */

/* the run word: generation << 32 | RUN_CLOSED | workers inside the run */
#define RUN_CLOSED (UINT64_C(1) << 31)
#define RUN_INSIDE (RUN_CLOSED - 1)
static inline uint64_t run_gen(uint64_t v) { return v >> 32; }

struct lmx_thread_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint_fast64_t run;        /* the run word (above) */
    atomic_bool stop;
    int sleepers;                    /* workers waiting on `wake` (under mu) */
    bool caller_sleeps;              /* the caller waits on `done` (under mu) */
    /* the current run: written before its generation opens, read by the workers that joined it;
     * unchanged until it is closed with no worker inside */
    lmx_pool_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_llong next;
};

typedef struct worker_arg {
    lmx_thread_pool *p;
    int index;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void run_chunks(lmx_thread_pool *p, int thread) {
    for (;;) {
        int64_t b = atomic_fetch_add(&p->next, p->grain);
        if (b >= p->n) break;
        int64_t e = b + p->grain < p->n ? b + p->grain : p->n;
        p->fn(p->ctx, b, e, thread);
    }
}

/* true when the run word's generation moved past `seen` (or stop) within the spin budget */
static bool spin_for_run(lmx_thread_pool *p, uint64_t seen) {
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (run_gen(atomic_load_explicit(&p->run, memory_order_acquire)) != seen || atomic_load(&p->stop)) return true;
        if ((i & 63) == 63) {
            int64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) return false;
        }
        cpu_relax();
    }
}

/* counts the worker into generation *seen's run while it is open (updating *seen to the newest
 * generation); false when that run was closed first */
static bool join_run(lmx_thread_pool *p, uint64_t *seen) {
    uint64_t v = atomic_load_explicit(&p->run, memory_order_acquire);
    *seen = run_gen(v);
    while (!(v & RUN_CLOSED))
        if (atomic_compare_exchange_weak_explicit(&p->run, &v, v + 1, memory_order_acq_rel, memory_order_acquire))
            return true;
        else if (run_gen(v) != *seen)
            *seen = run_gen(v);
    return false;
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    lmx_thread_pool *p = wa->p;
    int index = wa->index;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        if (!spin_for_run(p, seen)) {
            pthread_mutex_lock(&p->mu);
            p->sleepers++;
            while (!atomic_load(&p->stop) && run_gen(atomic_load_explicit(&p->run, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            p->sleepers--;
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        if (!join_run(p, &seen)) continue;
        run_chunks(p, index);
        const uint64_t v = atomic_fetch_sub_explicit(&p->run, 1, memory_order_acq_rel);
        if ((v & RUN_CLOSED) && (v & RUN_INSIDE) == 1) { /* the last one out of a closed run */
            pthread_mutex_lock(&p->mu);
            if (p->caller_sleeps) pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

lmx_status lmx_thread_pool_create(int n_threads, lmx_thread_pool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    lmx_thread_pool *p = calloc(1, sizeof *p);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "thread pool");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    atomic_init(&p->run, RUN_CLOSED); /* generation 0, closed: no worker joins before the first run */
    atomic_init(&p->stop, false);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            lmx_thread_pool_destroy(p);
            return lmx_error(LMX_ERR_OUT_OF_MEMORY, "thread pool");
        }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = malloc(sizeof *wa);
            if (wa) {
                wa->p = p;
                wa->index = i;
            }
            if (!wa || pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
                free(wa);
                p->n_threads = i; /* destroy joins the i-1 started workers */
                lmx_thread_pool_destroy(p);
                return lmx_error(LMX_ERR_OUT_OF_MEMORY, "thread pool: cannot start thread %d", i);
            }
        }
    }
    *out = p;
    return LMX_OK;
}

void lmx_thread_pool_destroy(lmx_thread_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads && p->threads; i++) pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

int lmx_thread_pool_size(const lmx_thread_pool *p) { return p ? p->n_threads : 1; }

void lmx_thread_pool_run(lmx_thread_pool *p, int64_t n, int64_t grain, lmx_pool_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (p->n_threads == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    const uint64_t gen = run_gen(atomic_load_explicit(&p->run, memory_order_relaxed)) + 1;
    atomic_store_explicit(&p->run, gen << 32, memory_order_release); /* open, nobody inside */
    pthread_mutex_lock(&p->mu); /* a worker deciding to sleep re-checks the generation under mu */
    if (p->sleepers > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    /* every chunk is taken: close the run, then wait for the workers still inside */
    if ((atomic_fetch_or_explicit(&p->run, RUN_CLOSED, memory_order_acq_rel) & RUN_INSIDE) == 0) return;
    int64_t t0 = 0;
    for (unsigned i = 0; atomic_load_explicit(&p->run, memory_order_acquire) & RUN_INSIDE; i++) {
        if ((i & 63) == 63) {
            int64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) break;
        }
        cpu_relax();
    }
    if (atomic_load_explicit(&p->run, memory_order_acquire) & RUN_INSIDE) {
        pthread_mutex_lock(&p->mu);
        p->caller_sleeps = true;
        while (atomic_load_explicit(&p->run, memory_order_acquire) & RUN_INSIDE) pthread_cond_wait(&p->done, &p->mu);
        p->caller_sleeps = false;
        pthread_mutex_unlock(&p->mu);
    }
}
