/* thread_pool.c — see thread_pool.h. */
#include "backend/cpu/thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util/error.h"

struct lmx_thread_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation; /* bumped per run */
    int active;          /* workers still inside the current run */
    bool stop;
    /* the current run */
    lmx_pool_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_llong next;
};

typedef struct worker_arg {
    lmx_thread_pool *p;
    int index;
} worker_arg;

static void run_chunks(lmx_thread_pool *p, int thread) {
    for (;;) {
        int64_t b = atomic_fetch_add(&p->next, p->grain);
        if (b >= p->n) break;
        int64_t e = b + p->grain < p->n ? b + p->grain : p->n;
        p->fn(p->ctx, b, e, thread);
    }
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    lmx_thread_pool *p = wa->p;
    int index = wa->index;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, index);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
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
    p->stop = true;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    p->active = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
