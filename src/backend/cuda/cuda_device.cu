/* cuda_device.cu — device probe, memory, streams and the device-memory arena. */
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_upload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmx_status lmx_cu_err(lmx_status s, const char *what, cudaError_t e) {
    return lmx_error(s, "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

extern "C" bool lmx_cuda_available(int *n_devices) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (n_devices) *n_devices = e == cudaSuccess ? n : 0;
    if (e != cudaSuccess) {
        LMX_LOG_D("cuda: no usable device: cudaGetDeviceCount: %s (%s)", cudaGetErrorString(e),
                  cudaGetErrorName(e));
        cudaGetLastError(); /* clear the sticky-free error so later probes start clean */
        return false;
    }
    if (n == 0) {
        LMX_LOG_D("cuda: the runtime reports no CUDA device");
        return false;
    }
    return true;
}

extern "C" lmx_status lmx_cuda_get_device_info(int device, lmx_cuda_device_info *out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: device info: NULL output");
    memset(out, 0, sizeof *out);
    int n = 0;
    if (!lmx_cuda_available(&n) || device < 0 || device >= n)
        return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "cuda: no device %d (%d present)", device, n);
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) return lmx_cu_err(LMX_ERR_GPU_NOT_AVAILABLE, "cudaGetDeviceProperties", e);
    snprintf(out->name, sizeof out->name, "%s", p.name);
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->sm_count = p.multiProcessorCount;
    out->total_mem = p.totalGlobalMem;
    out->l2_bytes = (size_t)p.l2CacheSize;
    out->smem_per_block_optin = p.sharedMemPerBlockOptin;
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_pci_bus_id(int device, char *buf, size_t size) {
    if (!buf || size < 16) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: pci bus id: buffer");
    cudaError_t e = cudaDeviceGetPCIBusId(buf, (int)size, device);
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_GPU_NOT_AVAILABLE, "cudaDeviceGetPCIBusId", e);
}

extern "C" lmx_status lmx_cuda_set_device(int device) {
    cudaError_t e = cudaSetDevice(device);
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_GPU_NOT_AVAILABLE, "cudaSetDevice", e);
}

extern "C" lmx_status lmx_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    if (e != cudaSuccess) return lmx_cu_err(LMX_ERR_GPU_NOT_AVAILABLE, "cudaMemGetInfo", e);
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_malloc(void **d_ptr, size_t bytes) {
    if (!d_ptr) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: malloc: NULL output");
    *d_ptr = NULL;
    if (bytes == 0) return LMX_OK;
    cudaError_t e = cudaMalloc(d_ptr, bytes);
    if (e != cudaSuccess) {
        *d_ptr = NULL;
        cudaGetLastError();
        return lmx_error(e == cudaErrorMemoryAllocation ? LMX_ERR_OUT_OF_MEMORY : LMX_ERR_GPU_NOT_AVAILABLE,
                         "cuda: cudaMalloc(%zu bytes): %s", bytes, cudaGetErrorString(e));
    }
    return LMX_OK;
}

extern "C" void lmx_cuda_free(void *d_ptr) {
    if (d_ptr) cudaFree(d_ptr);
}

extern "C" lmx_status lmx_cuda_malloc_host(void **ptr, size_t bytes) {
    if (!ptr) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: malloc_host: NULL output");
    *ptr = NULL;
    if (bytes == 0) return LMX_OK;
    cudaError_t e = cudaMallocHost(ptr, bytes);
    if (e != cudaSuccess) {
        *ptr = NULL;
        cudaGetLastError();
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda: cudaMallocHost(%zu bytes): %s", bytes,
                         cudaGetErrorString(e));
    }
    return LMX_OK;
}

extern "C" void lmx_cuda_free_host(void *ptr) {
    if (ptr) cudaFreeHost(ptr);
}

static lmx_status lmx_cu_copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                              lmx_cuda_stream stream, const char *what) {
    if (bytes == 0) return LMX_OK;
    if (!dst || !src) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: %s: NULL pointer", what);
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, LMX_CU_STREAM(stream));
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, what, e);
}

extern "C" lmx_status lmx_cuda_memcpy_h2d(void *d_dst, const void *src, size_t bytes,
                                          lmx_cuda_stream stream) {
    return lmx_cu_copy(d_dst, src, bytes, cudaMemcpyHostToDevice, stream, "memcpy h2d");
}
extern "C" lmx_status lmx_cuda_memcpy_d2h(void *dst, const void *d_src, size_t bytes,
                                          lmx_cuda_stream stream) {
    return lmx_cu_copy(dst, d_src, bytes, cudaMemcpyDeviceToHost, stream, "memcpy d2h");
}
extern "C" lmx_status lmx_cuda_memcpy_d2d(void *d_dst, const void *d_src, size_t bytes,
                                          lmx_cuda_stream stream) {
    return lmx_cu_copy(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, stream, "memcpy d2d");
}

extern "C" lmx_status lmx_cuda_memset(void *d_dst, int value, size_t bytes, lmx_cuda_stream stream) {
    if (bytes == 0) return LMX_OK;
    cudaError_t e = cudaMemsetAsync(d_dst, value, bytes, LMX_CU_STREAM(stream));
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "memset", e);
}

extern "C" lmx_status lmx_cuda_stream_create(lmx_cuda_stream *out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: stream_create: NULL output");
    cudaStream_t s = NULL;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e != cudaSuccess) return lmx_cu_err(LMX_ERR_GPU_NOT_AVAILABLE, "cudaStreamCreate", e);
    *out = (lmx_cuda_stream)s;
    return LMX_OK;
}

extern "C" void lmx_cuda_stream_destroy(lmx_cuda_stream stream) {
    if (stream) cudaStreamDestroy(LMX_CU_STREAM(stream));
}

extern "C" lmx_status lmx_cuda_stream_sync(lmx_cuda_stream stream) {
    cudaError_t e = cudaStreamSynchronize(LMX_CU_STREAM(stream));
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "stream sync", e);
}

/* ---- arena ---- */
struct lmx_cuda_arena {
    char *base;      /* device block of `capacity` bytes */
    size_t capacity;
    size_t used;
};

extern "C" lmx_status lmx_cuda_arena_create(size_t capacity, lmx_cuda_arena **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: arena: NULL output");
    *out = NULL;
    lmx_cuda_arena *a = (lmx_cuda_arena *)calloc(1, sizeof *a);
    if (!a) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda: arena: host allocation");
    lmx_status s = lmx_cuda_malloc((void **)&a->base, capacity);
    if (s != LMX_OK) {
        free(a);
        return lmx_error_prefix(s, "cuda arena of %zu bytes", capacity);
    }
    a->capacity = capacity;
    *out = a;
    return LMX_OK;
}

extern "C" void lmx_cuda_arena_destroy(lmx_cuda_arena *arena) {
    if (!arena) return;
    lmx_cuda_free(arena->base);
    free(arena);
}

extern "C" lmx_status lmx_cuda_arena_alloc(lmx_cuda_arena *arena, size_t bytes, size_t align,
                                           void **d_out) {
    if (!arena || !d_out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: arena_alloc: NULL argument");
    *d_out = NULL;
    if (align == 0) align = 256;
    if (align & (align - 1)) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda: arena_alloc: alignment %zu", align);
    size_t off = (arena->used + align - 1) & ~(align - 1);
    if (off > arena->capacity || bytes > arena->capacity - off)
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda: arena full: %zu bytes asked, %zu of %zu used",
                         bytes, arena->used, arena->capacity);
    *d_out = arena->base + off;
    arena->used = off + bytes;
    return LMX_OK;
}

extern "C" void lmx_cuda_arena_reset(lmx_cuda_arena *arena) {
    if (arena) arena->used = 0;
}
extern "C" size_t lmx_cuda_arena_used(const lmx_cuda_arena *arena) { return arena ? arena->used : 0; }
extern "C" size_t lmx_cuda_arena_capacity(const lmx_cuda_arena *arena) {
    return arena ? arena->capacity : 0;
}

/* ---- CUDA graphs (stream capture) ---- */
extern "C" lmx_status lmx_cuda_stream_create_blocking(lmx_cuda_stream *out) {
    cudaStream_t s = NULL;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamDefault);
    *out = e == cudaSuccess ? (lmx_cuda_stream)s : NULL;
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "stream create", e);
}

extern "C" lmx_status lmx_cuda_capture_begin(lmx_cuda_stream stream) {
    cudaError_t e = cudaStreamBeginCapture(LMX_CU_STREAM(stream), cudaStreamCaptureModeThreadLocal);
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "stream begin capture", e);
}

extern "C" lmx_status lmx_cuda_capture_end(lmx_cuda_stream stream, bool keep, void **exec_out) {
    *exec_out = NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(LMX_CU_STREAM(stream), &g);
    if (e != cudaSuccess || !keep) {
        if (g) cudaGraphDestroy(g);
        cudaGetLastError(); /* clear a capture error so the next eager launch does not report it */
        return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "stream end capture", e);
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiateWithFlags(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "graph instantiate", e);
    }
    *exec_out = (void *)x;
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_graph_launch(void *exec, lmx_cuda_stream stream) {
    cudaError_t e = cudaGraphLaunch((cudaGraphExec_t)exec, LMX_CU_STREAM(stream));
    return e == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "graph launch", e);
}

extern "C" void lmx_cuda_graph_destroy(void *exec) {
    if (exec) cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

/* ---- events (cuda_upload.h) ---- */
extern "C" lmx_status lmx_cuda_event_create(void **ev) {
    cudaEvent_t e = NULL;
    cudaError_t r = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    *ev = r == cudaSuccess ? (void *)e : NULL;
    return r == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_GPU_NOT_AVAILABLE, "event create", r);
}

extern "C" void lmx_cuda_event_destroy(void *ev) {
    if (ev) cudaEventDestroy((cudaEvent_t)ev);
}

extern "C" lmx_status lmx_cuda_event_record(void *ev, lmx_cuda_stream stream) {
    cudaError_t r = cudaEventRecord((cudaEvent_t)ev, LMX_CU_STREAM(stream));
    return r == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "event record", r);
}

extern "C" lmx_status lmx_cuda_event_sync(void *ev) {
    cudaError_t r = cudaEventSynchronize((cudaEvent_t)ev);
    return r == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "event sync", r);
}

extern "C" lmx_status lmx_cuda_stream_wait_event(lmx_cuda_stream stream, void *ev) {
    cudaError_t r = cudaStreamWaitEvent(LMX_CU_STREAM(stream), (cudaEvent_t)ev, 0);
    return r == cudaSuccess ? LMX_OK : lmx_cu_err(LMX_ERR_INFERENCE_FAILURE, "stream wait event", r);
}
