/* cuda_upload.c — the pinned staging ring of cuda_upload.h. */
#include "backend/cuda/cuda_upload.h"

#ifdef LMX_HAVE_CUDA
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/thread_pool.h"
#include "util/error.h"

#define PARALLEL_MIN_BYTES ((size_t)1 << 20) /* smaller pieces are copied by the calling thread */

struct lmx_cuda_uploader {
    pthread_mutex_t mu;
    lmx_cuda_stream stream; /* non-blocking copy stream: every DMA of the ring */
    lmx_thread_pool *pool;  /* host copy threads (NULL when n_threads == 1) */
    int n_threads, n_bufs;
    size_t buf_bytes;
    uint8_t **buf;  /* [n_bufs] pinned host buffers of buf_bytes */
    void **ev;      /* [n_bufs] recorded after the last DMA out of buf[i] was enqueued */
    bool *pending;  /* [n_bufs] ev[i] recorded and not yet waited for */
    int cur;        /* the buffer being filled */
    size_t fill;    /* bytes of buf[cur] handed to DMAs */
    void *fence_ev; /* recorded at each fence */
};

typedef struct copy_ctx {
    uint8_t *dst;
    const uint8_t *src;
} copy_ctx;

static void copy_range(void *vctx, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const copy_ctx *c = vctx;
    memcpy(c->dst + begin, c->src + begin, (size_t)(end - begin));
}

static void host_copy(lmx_cuda_uploader *u, uint8_t *dst, const uint8_t *src, size_t n) {
    if (!u->pool || n < PARALLEL_MIN_BYTES) {
        memcpy(dst, src, n);
        return;
    }
    size_t grain = (n + (size_t)u->n_threads - 1) / (size_t)u->n_threads;
    grain = (grain + 4095) & ~(size_t)4095;
    copy_ctx c = {dst, src};
    lmx_thread_pool_run(u->pool, (int64_t)n, (int64_t)grain, copy_range, &c);
}

void lmx_cuda_uploader_destroy(lmx_cuda_uploader *u) {
    if (!u) return;
    if (u->stream) lmx_cuda_stream_sync(u->stream);
    for (int i = 0; i < u->n_bufs; i++) {
        if (u->buf) lmx_cuda_free_host(u->buf[i]);
        if (u->ev) lmx_cuda_event_destroy(u->ev[i]);
    }
    lmx_cuda_event_destroy(u->fence_ev);
    lmx_cuda_stream_destroy(u->stream);
    lmx_thread_pool_destroy(u->pool);
    pthread_mutex_destroy(&u->mu);
    free(u->buf);
    free(u->ev);
    free(u->pending);
    free(u);
}

lmx_status lmx_cuda_uploader_create(size_t buf_bytes, int n_bufs, int n_threads, lmx_cuda_uploader **out) {
    *out = NULL;
    if (buf_bytes == 0 || n_bufs < 2)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda uploader: %d buffers of %zu bytes", n_bufs, buf_bytes);
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
        n_threads = n < 1 ? 1 : n > 8 ? 8 : (int)n;
    }
    lmx_cuda_uploader *u = calloc(1, sizeof *u);
    if (!u) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda uploader");
    pthread_mutex_init(&u->mu, NULL);
    u->n_threads = n_threads;
    u->buf_bytes = buf_bytes;
    u->buf = calloc((size_t)n_bufs, sizeof *u->buf);
    u->ev = calloc((size_t)n_bufs, sizeof *u->ev);
    u->pending = calloc((size_t)n_bufs, sizeof *u->pending);
    lmx_status st = u->buf && u->ev && u->pending ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda uploader");
    if (st == LMX_OK) u->n_bufs = n_bufs;
    for (int i = 0; st == LMX_OK && i < n_bufs; i++) {
        st = lmx_cuda_malloc_host((void **)&u->buf[i], buf_bytes);
        if (st == LMX_OK) st = lmx_cuda_event_create(&u->ev[i]);
    }
    if (st == LMX_OK) st = lmx_cuda_event_create(&u->fence_ev);
    if (st == LMX_OK) st = lmx_cuda_stream_create(&u->stream);
    if (st == LMX_OK && n_threads > 1) st = lmx_thread_pool_create(n_threads, &u->pool);
    if (st != LMX_OK) {
        lmx_cuda_uploader_destroy(u);
        return lmx_error_prefix(st, "cuda uploader (%d pinned buffers of %zu bytes)", n_bufs, buf_bytes);
    }
    *out = u;
    return LMX_OK;
}

/* buf[cur] is full: its DMAs are marked by ev[cur]; the next buffer is reused once its own DMAs
 * (enqueued n_bufs - 1 buffers ago) are done */
static lmx_status next_buffer(lmx_cuda_uploader *u) {
    lmx_status st = lmx_cuda_event_record(u->ev[u->cur], u->stream);
    if (st != LMX_OK) return st;
    u->pending[u->cur] = true;
    u->cur = (u->cur + 1) % u->n_bufs;
    u->fill = 0;
    if (u->pending[u->cur]) {
        u->pending[u->cur] = false;
        st = lmx_cuda_event_sync(u->ev[u->cur]);
    }
    return st;
}

lmx_status lmx_cuda_uploader_copy(lmx_cuda_uploader *u, void *d_dst, const void *src, size_t bytes) {
    if (bytes == 0) return LMX_OK;
    if (!u || !d_dst || !src) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda uploader: NULL argument");
    pthread_mutex_lock(&u->mu);
    lmx_status st = LMX_OK;
    uint8_t *d = d_dst;
    const uint8_t *s = src;
    while (bytes > 0) {
        if (u->fill == u->buf_bytes && (st = next_buffer(u)) != LMX_OK) break;
        size_t n = u->buf_bytes - u->fill;
        if (n > bytes) n = bytes;
        uint8_t *stage = u->buf[u->cur] + u->fill;
        host_copy(u, stage, s, n);
        if ((st = lmx_cuda_memcpy_h2d(d, stage, n, u->stream)) != LMX_OK) break;
        u->fill += n;
        d += n;
        s += n;
        bytes -= n;
    }
    pthread_mutex_unlock(&u->mu);
    return st;
}

lmx_status lmx_cuda_uploader_fence(lmx_cuda_uploader *u, lmx_cuda_stream consumer) {
    pthread_mutex_lock(&u->mu);
    lmx_status st = lmx_cuda_event_record(u->fence_ev, u->stream);
    if (st == LMX_OK) st = lmx_cuda_stream_wait_event(consumer, u->fence_ev);
    pthread_mutex_unlock(&u->mu);
    return st;
}

lmx_status lmx_cuda_uploader_sync(lmx_cuda_uploader *u) {
    pthread_mutex_lock(&u->mu);
    lmx_status st = lmx_cuda_stream_sync(u->stream);
    for (int i = 0; i < u->n_bufs; i++) u->pending[i] = false;
    pthread_mutex_unlock(&u->mu);
    return st;
}

#else
typedef int lmx_cuda_upload_unused; /* ISO C: a translation unit is not empty */
#endif
