/* cpu_collective.c — all-reduce and all-gather between the CPU backends of one group, in host
 * memory (see cpu_collective.h). */
#include "backend/cpu/cpu_collective.h"

#include "backend/cpu/cpu_backend_internal.h"

struct lmx_cpu_coll {
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;        /* ranks at the current barrier */
    uint64_t gen;       /* barriers passed */
    bool aborted;
    float **data;       /* [n] what each rank posted for the current collective */
    size_t *count;      /* [n] its element count */
};

lmx_status lmx_cpu_coll_create(int n_ranks, lmx_cpu_coll **out) {
    *out = NULL;
    if (n_ranks < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu collectives: %d ranks", n_ranks);
    lmx_cpu_coll *h = calloc(1, sizeof *h);
    if (h) h->data = calloc((size_t)n_ranks, sizeof *h->data);
    if (h) h->count = calloc((size_t)n_ranks, sizeof *h->count);
    if (!h || !h->data || !h->count) {
        if (h) free(h->data);
        free(h);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu collectives");
    }
    h->n = n_ranks;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    *out = h;
    return LMX_OK;
}

void lmx_cpu_coll_destroy(lmx_cpu_coll *h) {
    if (!h) return;
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->data);
    free(h->count);
    free(h);
}

void lmx_cpu_coll_abort(lmx_cpu_coll *h) {
    pthread_mutex_lock(&h->mu);
    h->aborted = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void lmx_cpu_coll_reset(lmx_cpu_coll *h) {
    pthread_mutex_lock(&h->mu);
    h->aborted = false;
    h->arrived = 0;
    pthread_mutex_unlock(&h->mu);
}

static lmx_status aborted_error(const char *what) {
    return lmx_error(LMX_ERR_INFERENCE_FAILURE, "cpu %s: aborted (another rank of the group failed)", what);
}

/* Posts (data, count) as rank r's and waits until every rank has posted. */
static lmx_status meet(lmx_cpu_coll *h, int r, float *data, size_t count, const char *what) {
    pthread_mutex_lock(&h->mu);
    if (data) {
        h->data[r] = data;
        h->count[r] = count;
    }
    if (!h->aborted && ++h->arrived == h->n) {
        h->arrived = 0;
        h->gen++;
        pthread_cond_broadcast(&h->cv);
    } else {
        for (uint64_t g = h->gen; h->gen == g && !h->aborted;) pthread_cond_wait(&h->cv, &h->mu);
    }
    bool ab = h->aborted;
    pthread_mutex_unlock(&h->mu);
    return ab ? aborted_error(what) : LMX_OK;
}

/* the counts every rank posted agree (all ranks see the same answer, so all fail together) */
static lmx_status same_counts(const lmx_cpu_coll *h, const char *what) {
    for (int q = 1; q < h->n; q++)
        if (h->count[q] != h->count[0])
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu %s: rank 0 gave %zu elements, rank %d %zu", what,
                             h->count[0], q, h->count[q]);
    return LMX_OK;
}

static lmx_status rank_of(lmx_backend *be, lmx_cpu_coll **h, int *r, const char *what) {
    cpu_backend *c = CPU(be);
    if (!c->coll) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu %s: the backend is no rank of a group", what);
    *h = c->coll;
    *r = c->rank;
    return LMX_OK;
}

lmx_status lmx_cpu_all_reduce_sum(lmx_backend *be, lmx_buf *x, size_t off, size_t n) {
    lmx_cpu_coll *h = NULL;
    int r = 0;
    LMX_BACKEND_TRY(rank_of(be, &h, &r, "all_reduce_sum"));
    CHECK_RANGE(x, off, n, "all_reduce_sum");
    LMX_BACKEND_TRY(meet(h, r, x->data + off, n, "all_reduce_sum"));
    lmx_status st = same_counts(h, "all_reduce_sum");
    if (st == LMX_OK) { /* this rank's slice of the elements, summed in rank order into every buffer */
        const size_t j0 = n * (size_t)r / (size_t)h->n, j1 = n * (size_t)(r + 1) / (size_t)h->n;
        for (size_t j = j0; j < j1; j++) {
            float s = h->data[0][j];
            for (int q = 1; q < h->n; q++) s += h->data[q][j];
            for (int q = 0; q < h->n; q++) h->data[q][j] = s;
        }
    }
    lmx_status sm = meet(h, r, NULL, 0, "all_reduce_sum");
    return st != LMX_OK ? st : sm;
}

lmx_status lmx_cpu_all_gather(lmx_backend *be, const lmx_buf *src, size_t n, lmx_buf *dst) {
    lmx_cpu_coll *h = NULL;
    int r = 0;
    LMX_BACKEND_TRY(rank_of(be, &h, &r, "all_gather"));
    CHECK_RANGE(src, 0, n, "all_gather src");
    if (n > 0 && n > SIZE_MAX / (size_t)h->n)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu all_gather: %zu elements", n);
    CHECK_RANGE(dst, 0, n * (size_t)h->n, "all_gather dst");
    if (dst->data < src->data + src->n && src->data < dst->data + dst->n)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu all_gather: dst overlaps src");
    LMX_BACKEND_TRY(meet(h, r, src->data, n, "all_gather"));
    lmx_status st = same_counts(h, "all_gather");
    for (int q = 0; st == LMX_OK && q < h->n; q++) memcpy(dst->data + (size_t)q * n, h->data[q], n * sizeof(float));
    lmx_status sm = meet(h, r, NULL, 0, "all_gather"); /* nobody writes its src before every rank copied it */
    return st != LMX_OK ? st : sm;
}

lmx_status lmx_backend_cpu_join(lmx_backend *be, lmx_cpu_coll *h, int rank) {
    if (!lmx_backend_cpu_kernels(be)) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu join: not a cpu backend");
    if (!h || rank < 0 || rank >= h->n)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu join: rank %d of a group of %d", rank, h ? h->n : 0);
    CPU(be)->coll = h;
    CPU(be)->rank = rank;
    return LMX_OK;
}
