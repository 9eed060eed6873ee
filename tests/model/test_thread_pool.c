/* test_thread_pool.c — the CPU backend's thread pool (src/backend/cpu/thread_pool.c): every index of
 * every run is handed out exactly once, to a thread index in range, whatever n, grain and the
 * thread count (1, 2, 3 and more threads than cores); many short runs back to back (the worker that
 * joins late, or never, must not run a chunk of the next run); runs after the workers went to sleep;
 * a busy thread beside the pool (a third process's stand-in) does not stop runs from finishing. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "backend/cpu/thread_pool.h"
#include "lmx_test.h"

typedef struct count_ctx {
    atomic_int *hits; /* [n] times each index ran */
    atomic_int bad_thread;
    int n_threads;
    int spin; /* busy iterations per index */
} count_ctx;

static void count_fn(void *vctx, int64_t b, int64_t e, int thread) {
    count_ctx *c = vctx;
    if (thread < 0 || thread >= c->n_threads) atomic_fetch_add(&c->bad_thread, 1);
    for (int64_t i = b; i < e; i++) {
        for (volatile int k = 0; k < c->spin; k++) {
        }
        atomic_fetch_add(&c->hits[i], 1);
    }
}

/* one run of [0, n) by grain on p; true when every index ran once */
static bool run_once(lmx_thread_pool *p, int64_t n, int64_t grain, int spin) {
    count_ctx c = {calloc((size_t)(n > 0 ? n : 1), sizeof(atomic_int)), 0, lmx_thread_pool_size(p), spin};
    lmx_thread_pool_run(p, n, grain, count_fn, &c);
    bool ok = atomic_load(&c.bad_thread) == 0;
    for (int64_t i = 0; i < n; i++) ok = ok && atomic_load(&c.hits[i]) == 1;
    free(c.hits);
    return ok;
}

static void test_coverage(void) {
    const int threads[] = {1, 2, 3, 8};
    const int64_t ns[] = {0, 1, 2, 7, 64, 1000, 4097};
    const int64_t grains[] = {0, 1, 3, 16, 5000};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        lmx_thread_pool *p = NULL;
        CHECK(lmx_thread_pool_create(threads[t], &p) == LMX_OK);
        if (!p) continue;
        CHECK_EQ_INT(lmx_thread_pool_size(p), threads[t]);
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++)
                CHECK_MSG(run_once(p, ns[i], grains[g], 0), "%d threads, n %lld, grain %lld", threads[t],
                          (long long)ns[i], (long long)grains[g]);
        lmx_thread_pool_destroy(p);
    }
}

/* 20000 short runs back to back, then runs after a pause long enough for the workers to sleep */
static void test_back_to_back(void) {
    for (int threads = 2; threads <= 3; threads++) {
        lmx_thread_pool *p = NULL;
        CHECK(lmx_thread_pool_create(threads, &p) == LMX_OK);
        if (!p) continue;
        int bad = 0;
        for (int r = 0; r < 20000; r++) bad += !run_once(p, 2 + r % 9, 1, r % 3 ? 0 : 200);
        CHECK_MSG(bad == 0, "%d threads: %d of 20000 short runs lost or repeated an index", threads, bad);
        for (int r = 0; r < 5; r++) {
            nanosleep(&(struct timespec){0, 2000000}, NULL); /* 2 ms: past the workers' spin */
            CHECK(run_once(p, 100, 1, 1000));
        }
        lmx_thread_pool_destroy(p);
    }
}

static atomic_bool busy_stop;
static void *busy_main(void *arg) {
    (void)arg;
    while (!atomic_load_explicit(&busy_stop, memory_order_relaxed)) {
    }
    return NULL;
}

/* two busy threads beside a 2-thread pool: runs still complete and cover every index */
static void test_busy_neighbours(void) {
    pthread_t busy[2];
    atomic_store(&busy_stop, false);
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&busy[i], NULL, busy_main, NULL) == 0);
    lmx_thread_pool *p = NULL;
    CHECK(lmx_thread_pool_create(2, &p) == LMX_OK);
    int bad = 0;
    for (int r = 0; p && r < 3000; r++) bad += !run_once(p, 16, 1, 500);
    CHECK_MSG(bad == 0, "%d of 3000 runs beside busy threads lost or repeated an index", bad);
    lmx_thread_pool_destroy(p);
    atomic_store(&busy_stop, true);
    for (int i = 0; i < 2; i++) pthread_join(busy[i], NULL);
}

int main(void) {
    RUN(test_coverage);
    RUN(test_back_to_back);
    RUN(test_busy_neighbours);
    return lmx_test_summary();
}
