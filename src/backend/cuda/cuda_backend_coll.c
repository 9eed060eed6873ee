/* cuda_backend_coll.c — the CUDA backend as a rank of a group (backend.h lmx_backend_group): its
 * NCCL communicator, the collective ops on the backend's stream, and an abort from another thread.
 *
 * The collectives are ops like the others inside a bracketed step: they sign their arguments, launch
 * nothing on replay (the captured graph holds the NCCL kernel) and are captured otherwise. comm_mu
 * is held while a call is enqueued, so an abort (lmx_backend_cuda_comm_abort, from the group's
 * failing rank) never frees the communicator under it; afterwards the backend has none and its
 * collectives fail. */
#include "backend/cuda/cuda_backend.h"

#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"
#include "util/error.h"

/* the backend's communicator under comm_mu (locked on success) */
static lmx_status comm_lock(cuda_backend *c, const char *what) {
    pthread_mutex_lock(&c->comm_mu);
    if (c->comm) return LMX_OK;
    bool ab = c->comm_aborted;
    pthread_mutex_unlock(&c->comm_mu);
    return ab ? lmx_error(LMX_ERR_INFERENCE_FAILURE, "cuda %s: aborted (another rank of the group failed)", what)
              : lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda %s: the backend is no rank of a group", what);
}

lmx_status lmx_cub_all_reduce_sum(lmx_backend *be, lmx_buf *x, size_t off, size_t n) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(x, off, n, "all_reduce_sum");
    LMX_BACKEND_TRY(comm_lock(c, "all_reduce_sum"));
    lmx_status st = LMX_OK;
    bool launch = true;
    if (stepping(c)) {
        SIGI(30); SIGP(x->d); SIGI(off); SIGI(n);
        launch = !replaying(c);
    }
    if (launch) st = lmx_cuda_nccl_all_reduce_sum(c->comm, x->d + off, n, c->stream);
    pthread_mutex_unlock(&c->comm_mu);
    if (st != LMX_OK && stepping(c)) c->step_bad = true;
    return st;
}

lmx_status lmx_cub_all_gather(lmx_backend *be, const lmx_buf *src, size_t n, lmx_buf *dst) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(src, 0, n, "all_gather src");
    LMX_BACKEND_TRY(comm_lock(c, "all_gather"));
    lmx_status st = LMX_OK;
    if (n > 0 && (size_t)c->n_ranks > dst->n / n)
        st = lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda all_gather: %d ranks x %zu elements into a buffer of %zu",
                       c->n_ranks, n, dst->n);
    if (st == LMX_OK && dst->dt != LMX_DTYPE_F32)
        st = lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda all_gather: a KV cache buffer");
    if (st == LMX_OK && dst->d < src->d + src->n && src->d < dst->d + dst->n)
        st = lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda all_gather: dst overlaps src");
    bool launch = st == LMX_OK;
    if (launch && stepping(c)) {
        SIGI(31); SIGP(src->d); SIGP(dst->d); SIGI(n);
        launch = !replaying(c);
    }
    if (launch) st = lmx_cuda_nccl_all_gather(c->comm, src->d, dst->d, n, c->stream);
    pthread_mutex_unlock(&c->comm_mu);
    if (st != LMX_OK && stepping(c)) c->step_bad = true;
    return st;
}

void lmx_cub_comm_free(cuda_backend *c) {
    lmx_cuda_nccl_destroy(c->comm);
    c->comm = NULL;
}

lmx_status lmx_cuda_comms_create(int n, void **comms) {
    int have = 0;
    if (!lmx_cuda_available(&have) || have < n)
        return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE,
                         "tensor parallel over %d GPUs: %d present (a communicator holds one rank per GPU)", n, have);
    return lmx_cuda_nccl_init_all(n, comms);
}

void lmx_cuda_comm_destroy(void *comm) { lmx_cuda_nccl_destroy(comm); }

lmx_status lmx_backend_cuda_create_rank(int device, int n_ranks, void *comm, lmx_backend **out) {
    lmx_status st = lmx_backend_cuda_create(device, out);
    if (st != LMX_OK) {
        lmx_cuda_nccl_destroy(comm);
        return st;
    }
    CB(*out)->comm = comm;
    CB(*out)->n_ranks = n_ranks;
    return LMX_OK;
}

void lmx_backend_cuda_comm_abort(lmx_backend *be) {
    if (!be || be->ops->all_reduce_sum != lmx_cub_all_reduce_sum) return;
    cuda_backend *c = CB(be);
    pthread_mutex_lock(&c->comm_mu);
    if (c->comm) {
        lmx_cuda_nccl_abort(c->comm);
        c->comm = NULL;
        c->comm_aborted = true;
    }
    pthread_mutex_unlock(&c->comm_mu);
}

#else
typedef int lmx_cuda_backend_coll_unused; /* keep the translation unit non-empty */
#endif
