/* thread_pool.c — see thread_pool.h.
 *
 * Hand-off: a run publishes its loop and bumps `generation` (release); workers that finished the
 * previous run spin on it for up to SPIN_NS (decode issues ~80 short runs per token a few µs
 * apart, and a condition-variable wake costs tens of µs on a VM), then sleep on `wake`. The caller
 * likewise spins up to SPIN_NS for the last worker before sleeping on `done`. Spinning is bounded,
 * so a third process on the cores (or more threads than cores) costs at most SPIN_NS per run and
 * per thread, never a collapse: every wait ends in a condition variable. */
#include "backend/cpu/thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "util/error.h"

#define SPIN_NS 50000 /* 50 µs */

struct lmx_thread_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint_fast64_t generation; /* bumped per run (release) */
    atomic_int active;               /* workers still inside the current run */
    atomic_bool stop;
    int sleepers;                    /* workers waiting on `wake` (under mu) */
    bool caller_sleeps;              /* the caller waits on `done` (under mu) */
    /* the current run (written before the generation bump, read after it) */
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

/* true when the generation moved past `seen` (or stop) within the spin budget */
static bool spin_for_run(lmx_thread_pool *p, uint64_t seen) {
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen || atomic_load(&p->stop)) return true;
        if ((i & 63) == 63) {
            int64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) return false;
        }
        cpu_relax();
    }
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
            while (!atomic_load(&p->stop) && atomic_load_explicit(&p->generation, memory_order_acquire) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            p->sleepers--;
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_chunks(p, index);
        if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
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
    atomic_init(&p->generation, 0);
    atomic_init(&p->active, 0);
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
    atomic_store(&p->active, p->n_threads - 1);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_mutex_lock(&p->mu); /* a worker deciding to sleep re-checks the generation under mu */
    if (p->sleepers > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    int64_t t0 = 0;
    for (unsigned i = 0; atomic_load_explicit(&p->active, memory_order_acquire) > 0; i++) {
        if ((i & 63) == 63) {
            int64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) break;
        }
        cpu_relax();
    }
    if (atomic_load_explicit(&p->active, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        p->caller_sleeps = true;
        while (atomic_load_explicit(&p->active, memory_order_acquire) > 0) pthread_cond_wait(&p->done, &p->mu);
        p->caller_sleeps = false;
        pthread_mutex_unlock(&p->mu);
    }
}
