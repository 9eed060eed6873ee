/* cuda_backend.h — the CUDA implementation of the backend seam (src/backend/backend.h).
 *
 * lmx_backend_cuda_create(device, &be) gives an lmx_backend whose buffers and weights live in the
 * memory of CUDA device `device`; ops run in order on one backend-owned (blocking) stream, buf_read
 * synchronizes. Decode steps run as CUDA graphs (step hooks of backend.h; on by default,
 * LMX_CUDA_GRAPH=0 turns them off — see cuda_backend.c).
 * Weights are copied to the device at upload (dense kept in their dtype, MLX-quantized kept packed,
 * vectors and biases converted to fp32); the KV cache is fp32 (lmx_buf). In a build without CUDA,
 * or without a usable device, it returns LMX_ERR_GPU_NOT_AVAILABLE (with the reason as detail).
 * Ownership: the caller destroys the backend (lmx_backend_destroy) after every model using it.
 * Thread-safety: as backend.h — one op at a time per backend object.
 */
#ifndef LMX_BACKEND_CUDA_BACKEND_H
#define LMX_BACKEND_CUDA_BACKEND_H

#include "backend/backend.h"

lmx_status lmx_backend_cuda_create(int device, lmx_backend **out);

#endif
