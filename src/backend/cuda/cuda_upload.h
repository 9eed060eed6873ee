/* cuda_upload.h — host-to-device weight uploads through a ring of pinned staging buffers.
 *
 * lmx_cuda_uploader_copy(u, d_dst, src, bytes) copies host bytes (e.g. the mmapped weight files,
 * any alignment) to device memory: the bytes go through `n_bufs` pinned buffers of `buf_bytes` used
 * as a ring; several host threads copy a piece into the current buffer (one thread reaches only
 * ~5-10 GB/s from the page cache) while earlier buffers DMA to the device with cudaMemcpyAsync on
 * the uploader's own non-blocking copy stream. An event per buffer guards its reuse. The call
 * returns once the source bytes are in pinned memory (the source may change or go away
 * afterwards); the device copy may still be in flight. lmx_cuda_uploader_fence(u, stream) orders
 * every later op of `stream` after all copies issued so far (an event the stream waits on);
 * lmx_cuda_uploader_sync waits for them on the host.
 *
 * Errors: a failed enqueue or a failed earlier copy (seen when its buffer is reused, at a fence or
 * a sync) → LMX_ERR_INFERENCE_FAILURE with the CUDA message; pinned allocation failure at create →
 * LMX_ERR_OUT_OF_MEMORY (callers fall back to pageable copies).
 * Ownership: create/destroy pair; destroy waits for copies in flight. Thread-safety: every function
 * may be called from several threads (an internal mutex serializes them).
 *
 * Also the event helpers it uses (defined in cuda_device.cu); a NULL stream is the legacy default.
 */
#ifndef LMX_BACKEND_CUDA_UPLOAD_H
#define LMX_BACKEND_CUDA_UPLOAD_H

#include <stddef.h>

#include "backend/cuda/cuda_kernels.h"

#ifdef LMX_HAVE_CUDA
#ifdef __cplusplus
extern "C" {
#endif

/* events (timing disabled) */
lmx_status lmx_cuda_event_create(void **ev);
void lmx_cuda_event_destroy(void *ev); /* NULL-safe */
lmx_status lmx_cuda_event_record(void *ev, lmx_cuda_stream stream);
lmx_status lmx_cuda_event_sync(void *ev);
lmx_status lmx_cuda_stream_wait_event(lmx_cuda_stream stream, void *ev);

typedef struct lmx_cuda_uploader lmx_cuda_uploader;

/* n_bufs >= 2 pinned buffers of buf_bytes (> 0); n_threads host copy threads counting the caller
 * (0 = min(8, online CPUs / 2)). */
lmx_status lmx_cuda_uploader_create(size_t buf_bytes, int n_bufs, int n_threads, lmx_cuda_uploader **out);
void lmx_cuda_uploader_destroy(lmx_cuda_uploader *u); /* NULL-safe */
lmx_status lmx_cuda_uploader_copy(lmx_cuda_uploader *u, void *d_dst, const void *src, size_t bytes);
lmx_status lmx_cuda_uploader_fence(lmx_cuda_uploader *u, lmx_cuda_stream consumer);
lmx_status lmx_cuda_uploader_sync(lmx_cuda_uploader *u);

#ifdef __cplusplus
}
#endif
#endif /* LMX_HAVE_CUDA */
#endif
