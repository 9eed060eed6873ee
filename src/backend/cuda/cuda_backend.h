/* cuda_backend.h — the CUDA implementation of the backend seam (src/backend/backend.h).
 *
 * lmx_backend_cuda_create(device, &be) gives an lmx_backend whose buffers and weights live in the
 * memory of CUDA device `device`; ops run in order on one backend-owned (blocking) stream, buf_read
 * synchronizes. Bracketed steps (step hooks of backend.h: one sequence's decode step, a pool's batched
 * decode step) run as CUDA graphs (LMX_CUDA_GRAPH=0 in the environment at creation turns them off, to
 * debug).
 * Weights are copied to the device at upload (dense kept in their dtype, MLX-quantized kept packed,
 * vectors and biases converted to fp32); activations are fp32 buffers, the KV cache is fp16
 * (kv_buf_alloc). In a build without CUDA, or without a usable device, it returns
 * LMX_ERR_GPU_NOT_AVAILABLE (with the reason as detail).
 * Ownership: the caller destroys the backend (lmx_backend_destroy) after every model using it.
 * Thread-safety: as backend.h — one op at a time per backend object.
 */
#ifndef LMX_BACKEND_CUDA_BACKEND_H
#define LMX_BACKEND_CUDA_BACKEND_H

#include <stdbool.h>

#include "backend/backend.h"

/* What a backend is created with. lmx_backend_cuda_create takes lmx_cuda_options_default() (graphs
 * from LMX_CUDA_GRAPH, util/env.h); tests pick the others. */
typedef struct lmx_cuda_options {
    bool graphs;   /* decode steps as CUDA graphs (default on; off: every op launches eagerly) */
    bool f32_kv;   /* fp32 KV cache instead of fp16 (the exact path: CPU-vs-GPU tests at fp32 bounds) */
    bool pageable; /* weights through pageable copies instead of the pinned staging ring (the fallback
                    * taken when pinned memory cannot be had; tests cover it this way) */
} lmx_cuda_options;

lmx_cuda_options lmx_cuda_options_default(void);

/* How often the backend's bracketed steps (backend.h step hooks) were captured into a CUDA graph,
 * launched from one without capturing (replayed), and handed back to the caller to redo eagerly (an
 * op sequence that changed, an op that cannot run inside a graph, a failed capture), since creation.
 * For tests and benchmarks; zeros for another backend or a build without CUDA. */
typedef struct lmx_cuda_graph_stats {
    uint64_t captured, replayed, redone;
} lmx_cuda_graph_stats;
lmx_cuda_graph_stats lmx_backend_cuda_graph_stats(const lmx_backend *be);
lmx_status lmx_backend_cuda_create(int device, lmx_backend **out);
lmx_status lmx_backend_cuda_create_ex(int device, const lmx_cuda_options *opt, lmx_backend **out);

/* ---- ranks of a group (backend.h lmx_backend_group; cuda_backend_coll.c, cuda_nccl.cu) ----
 * NCCL is loaded with dlopen (libnccl.so.2) at the first use: never a link-time dependency. */
/* One NCCL communicator per device 0 .. n-1 of this process into comms[n] (ncclCommInitAll, with
 * NCCL_NVLS_ENABLE=0 set first: NVLink multicast off). Errors: no NCCL library → LMX_ERR_UNSUPPORTED;
 * fewer than n devices → LMX_ERR_GPU_NOT_AVAILABLE (a communicator holds one rank per GPU);
 * NCCL's own failure → LMX_ERR_INFERENCE_FAILURE with its message. */
lmx_status lmx_cuda_comms_create(int n, void **comms);
void lmx_cuda_comm_destroy(void *comm); /* NULL-safe: ncclCommDestroy */
/* The backend of `device` (lmx_cuda_options_default) as a rank of `comm` over n_ranks GPUs (NULL: a
 * group of one, no collectives), which it owns from here (ncclCommDestroy with the backend, also on failure). Called on
 * the rank's thread, which keeps `device` current. */
lmx_status lmx_backend_cuda_create_rank(int device, int n_ranks, void *comm, lmx_backend **out);
/* Aborts the backend's communicator from any thread (ncclCommAbort): its NCCL work in flight ends and
 * its later collectives fail with LMX_ERR_INFERENCE_FAILURE. No-op for another backend. */
void lmx_backend_cuda_comm_abort(lmx_backend *be);

#endif
