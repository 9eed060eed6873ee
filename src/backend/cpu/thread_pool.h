/* thread_pool.h — a small fixed pool of worker threads that runs one data-parallel loop at a time.
 *
 * lmx_thread_pool_run splits [0, n) into chunks of `grain` and hands them to the workers that join
 * the run and to the calling thread; it returns when every chunk is done, waiting only for workers
 * that hold a chunk (one not scheduled in time leaves its share to the others). Between runs
 * workers spin for a bounded time (50 µs), then sleep on a condition variable (thread_pool.c).
 * `thread` passed to fn is in [0, n_threads) and identifies per-thread scratch.
 * Ownership: create/destroy pair; destroy joins the workers. Thread-safety: one run at a time per
 * pool (callers serialize); fn must be safe to call concurrently on disjoint ranges.
 */
#ifndef LMX_BACKEND_CPU_THREAD_POOL_H
#define LMX_BACKEND_CPU_THREAD_POOL_H

#include <stdint.h>
#include "lmx.h"

typedef struct lmx_thread_pool lmx_thread_pool;
typedef void (*lmx_pool_fn)(void *ctx, int64_t begin, int64_t end, int thread);

/* n_threads >= 1 counts the caller: n_threads-1 workers are started. */
lmx_status lmx_thread_pool_create(int n_threads, lmx_thread_pool **out);
void lmx_thread_pool_destroy(lmx_thread_pool *p); /* NULL-safe */
int lmx_thread_pool_size(const lmx_thread_pool *p);
void lmx_thread_pool_run(lmx_thread_pool *p, int64_t n, int64_t grain, lmx_pool_fn fn, void *ctx);

#endif
