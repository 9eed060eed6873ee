/* backend_group.c — groups of backends for tensor parallel in one process (backend.h
 * lmx_backend_group): the ranks' backends and the threads that drive them.
 *
 * Each rank has a thread of its own for the group's lifetime; a run hands every rank thread the same
 * function and waits until all have returned. The backends are created and destroyed by runs too, so
 * that a CUDA rank's backend is only ever touched by the thread that has its device current. A rank
 * whose function fails aborts the group's collectives at once (cpu_collective.h / NCCL's
 * ncclCommAbort), so that the other ranks do not wait for it in a barrier or a kernel for ever. */
#include "backend/backend.h"
#include "backend/cpu/cpu_collective.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "util/error.h"
#include "util/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct rank_thread {
    lmx_backend_group *g;
    int rank;
} rank_thread;

struct lmx_backend_group {
    int n;
    lmx_device device;        /* GPU or CPU */
    int threads_per_rank;     /* CPU groups: workers of each rank's backend */
    lmx_backend **be;         /* [n] */
    lmx_cpu_coll *coll;       /* CPU groups: where the ranks meet */
    void **comms;             /* GPU groups of n > 1: [n] NCCL communicators until the ranks own them */
    atomic_bool broken;       /* a GPU group whose communicators were aborted */
    /* the rank threads */
    pthread_t *th;            /* [n_started] */
    rank_thread *rt;          /* [n] */
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t job;             /* runs begun: each rank thread runs each one once */
    lmx_status (*fn)(void *arg, int rank);
    void *arg;
    bool run_coll;            /* the current run's fn calls collectives */
    int n_done;
    atomic_int first_fail;    /* the rank that failed first in the current run (the others may only
                                 have seen its abort), or -1 */
    bool quit;
    lmx_status *st;           /* [n] each rank's result of the current run */
    char (*detail)[LMX_ERROR_DETAIL_MAX]; /* [n] its error detail */
    pthread_mutex_t run_mu;   /* one run at a time */
};

/* the collectives of every rank fail from now on (until the CPU group's reset) */
static void group_abort(lmx_backend_group *g) {
    if (g->coll) {
        lmx_cpu_coll_abort(g->coll);
        return;
    }
    if (g->device != LMX_DEVICE_GPU || g->n < 2 || atomic_exchange(&g->broken, true)) return;
    for (int r = 0; r < g->n; r++) lmx_backend_cuda_comm_abort(g->be[r]);
}

static void *rank_main(void *p) {
    const rank_thread *rt = p;
    lmx_backend_group *g = rt->g;
    const int r = rt->rank;
    uint64_t seen = 0;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (g->job == seen && !g->quit) pthread_cond_wait(&g->go, &g->mu);
        if (g->quit) break;
        seen = g->job;
        lmx_status (*fn)(void *, int) = g->fn;
        void *arg = g->arg;
        const bool coll = g->run_coll;
        pthread_mutex_unlock(&g->mu);
        lmx_status st = fn(arg, r);
        if (st != LMX_OK) {
            snprintf(g->detail[r], sizeof g->detail[r], "%s", lmx_last_error_detail());
            int none = -1;
            if (atomic_compare_exchange_strong(&g->first_fail, &none, r) && coll) group_abort(g);
        }
        pthread_mutex_lock(&g->mu);
        g->st[r] = st;
        if (++g->n_done == g->n) pthread_cond_signal(&g->done);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

lmx_status lmx_backend_group_run(lmx_backend_group *g, bool collectives, lmx_status (*fn)(void *arg, int rank),
                                 void *arg) {
    if (!g || !fn) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "backend group run: NULL argument");
    pthread_mutex_lock(&g->run_mu);
    pthread_mutex_lock(&g->mu);
    g->fn = fn;
    g->arg = arg;
    g->run_coll = collectives;
    g->n_done = 0;
    atomic_store(&g->first_fail, -1);
    g->job++;
    pthread_cond_broadcast(&g->go);
    while (g->n_done < g->n) pthread_cond_wait(&g->done, &g->mu);
    pthread_mutex_unlock(&g->mu);
    if (g->coll) lmx_cpu_coll_reset(g->coll); /* no rank is inside a collective now */
    const int f = atomic_load(&g->first_fail);
    lmx_status st = f >= 0 ? lmx_error(g->st[f], "rank %d of %d: %s", f, g->n, g->detail[f]) : LMX_OK;
    pthread_mutex_unlock(&g->run_mu);
    return st;
}

/* ---- the ranks' backends, made and destroyed on their own threads ---- */

static lmx_status create_rank(void *arg, int r) {
    lmx_backend_group *g = arg;
    if (g->device == LMX_DEVICE_GPU) {
        void *comm = g->comms ? g->comms[r] : NULL;
        if (g->comms) g->comms[r] = NULL; /* the backend owns it now, even if its creation fails */
        return lmx_backend_cuda_create_rank(r, g->n, comm, &g->be[r]);
    }
    lmx_status st = lmx_backend_cpu_create(g->threads_per_rank, &g->be[r]);
    if (st == LMX_OK) st = lmx_backend_cpu_join(g->be[r], g->coll, r);
    return st;
}

static lmx_status destroy_rank(void *arg, int r) {
    lmx_backend_group *g = arg;
    lmx_backend_destroy(g->be[r]);
    g->be[r] = NULL;
    return LMX_OK;
}

void lmx_backend_group_destroy(lmx_backend_group *g) {
    if (!g) return;
    if (g->n_started == g->n) lmx_backend_group_run(g, false, destroy_rank, g);
    pthread_mutex_lock(&g->mu);
    g->quit = true;
    pthread_cond_broadcast(&g->go);
    pthread_mutex_unlock(&g->mu);
    for (int r = 0; r < g->n_started; r++) pthread_join(g->th[r], NULL);
    for (int r = 0; g->comms && r < g->n; r++) lmx_cuda_comm_destroy(g->comms[r]); /* none a rank took over */
    lmx_cpu_coll_destroy(g->coll);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->run_mu);
    pthread_cond_destroy(&g->go);
    pthread_cond_destroy(&g->done);
    free(g->comms);
    free(g->be);
    free(g->th);
    free(g->rt);
    free(g->st);
    free(g->detail);
    free(g);
}

lmx_status lmx_backend_group_create(lmx_device device, int n_ranks, int n_threads, lmx_backend_group **out,
                                    lmx_device *picked) {
    *out = NULL;
    if (n_ranks < 1 || n_ranks > 64)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "backend group: %d ranks (1 to 64)", n_ranks);
    lmx_device dev = LMX_DEVICE_CPU;
    lmx_status st = lmx_device_resolve(device, &dev);
    if (st != LMX_OK) return st;
    if (dev == LMX_DEVICE_GPU) {
        int have = 0;
        lmx_cuda_available(&have);
        if (have < n_ranks)
            return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE,
                             "tensor parallel over %d GPUs: %d present (NCCL takes one rank per GPU in a "
                             "communicator)",
                             n_ranks, have);
    }
    lmx_backend_group *g = calloc(1, sizeof *g);
    if (!g) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "backend group");
    g->n = n_ranks;
    g->device = dev;
    atomic_init(&g->broken, false);
    atomic_init(&g->first_fail, -1);
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->run_mu, NULL);
    pthread_cond_init(&g->go, NULL);
    pthread_cond_init(&g->done, NULL);
    g->be = calloc((size_t)n_ranks, sizeof *g->be);
    g->th = calloc((size_t)n_ranks, sizeof *g->th);
    g->rt = calloc((size_t)n_ranks, sizeof *g->rt);
    g->st = calloc((size_t)n_ranks, sizeof *g->st);
    g->detail = calloc((size_t)n_ranks, sizeof *g->detail);
    st = g->be && g->th && g->rt && g->st && g->detail ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "backend group");
    if (st == LMX_OK && dev == LMX_DEVICE_CPU) {
        if (n_threads <= 0) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            n_threads = n > 0 ? (int)n : 1;
        }
        g->threads_per_rank = n_threads / n_ranks > 0 ? n_threads / n_ranks : 1;
        st = lmx_cpu_coll_create(n_ranks, &g->coll);
    }
    if (st == LMX_OK && dev == LMX_DEVICE_GPU && n_ranks > 1) {
        g->comms = calloc((size_t)n_ranks, sizeof *g->comms);
        st = g->comms ? lmx_cuda_comms_create(n_ranks, g->comms) : lmx_error(LMX_ERR_OUT_OF_MEMORY, "backend group");
    }
    for (int r = 0; st == LMX_OK && r < n_ranks; r++) {
        g->rt[r] = (rank_thread){g, r};
        if (pthread_create(&g->th[r], NULL, rank_main, &g->rt[r]) != 0)
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "backend group: cannot start the thread of rank %d", r);
        else
            g->n_started++;
    }
    if (st == LMX_OK) st = lmx_backend_group_run(g, false, create_rank, g);
    if (st != LMX_OK) {
        lmx_backend_group_destroy(g);
        return lmx_error_prefix(st, "tensor parallel over %d %s ranks", n_ranks, dev == LMX_DEVICE_GPU ? "GPU" : "CPU");
    }
    LMX_LOG_I("backend group: %d %s ranks%s", n_ranks, dev == LMX_DEVICE_GPU ? "GPU" : "CPU",
              dev == LMX_DEVICE_GPU && n_ranks > 1 ? " over NCCL" : "");
    if (picked) *picked = dev;
    *out = g;
    return LMX_OK;
}

int lmx_backend_group_size(const lmx_backend_group *g) { return g ? g->n : 0; }

lmx_backend *lmx_backend_group_backend(const lmx_backend_group *g, int rank) {
    return g && rank >= 0 && rank < g->n ? g->be[rank] : NULL;
}
