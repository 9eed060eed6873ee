/* cuda_nccl.cu — NCCL for the ranks of a GPU group (backend.h lmx_backend_group), loaded at run time
 * with dlopen (libnccl.so.2; never a link-time dependency): communicators for the devices of this
 * process (ncclCommInitAll), all-reduce (sum) and all-gather of fp32 buffers on a rank's stream,
 * destroy and abort.
 *
 * NVLink multicast stays off: NCCL_NVLS_ENABLE=0 is put into the environment before NCCL reads it
 * (at the first communicator), because NVLS can take shared GPUs out of service (issue 14). The
 * collectives may be enqueued inside a stream capture (NCCL records its kernel into the graph).
 * State: one process-wide library handle and function table, filled once (pthread_once) and never
 * changed afterwards. Without the library, or without nccl.h at build time, every call reports
 * LMX_ERR_UNSUPPORTED.
 */
#include "backend/cuda/cuda_common.cuh"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__has_include)
#if __has_include(<nccl.h>)
#include <nccl.h>
#define LMX_HAVE_NCCL_H 1
#endif
#endif

#ifdef LMX_HAVE_NCCL_H
static struct {
    bool ok;
    char why[256];
    int version;
    ncclResult_t (*init_all)(ncclComm_t *, int, const int *);
    ncclResult_t (*destroy)(ncclComm_t);
    ncclResult_t (*abort)(ncclComm_t);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*all_gather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t, cudaStream_t);
    const char *(*err)(ncclResult_t);
    ncclResult_t (*get_version)(int *);
} g_nccl;
static pthread_once_t g_nccl_once = PTHREAD_ONCE_INIT;

static void nccl_load(void) {
    /* NVLink SHARP / multicast off before NCCL first reads its environment */
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("/usr/local/cuda/lib64/libnccl.so.2", RTLD_NOW | RTLD_LOCAL); /* often not in the loader's path */
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_nccl.why, sizeof g_nccl.why, "cannot load libnccl.so.2 (%s)", e ? e : "not found");
        return;
    }
    g_nccl.init_all = (ncclResult_t(*)(ncclComm_t *, int, const int *))dlsym(h, "ncclCommInitAll");
    g_nccl.destroy = (ncclResult_t(*)(ncclComm_t))dlsym(h, "ncclCommDestroy");
    g_nccl.abort = (ncclResult_t(*)(ncclComm_t))dlsym(h, "ncclCommAbort");
    g_nccl.all_reduce = (ncclResult_t(*)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                                         cudaStream_t))dlsym(h, "ncclAllReduce");
    g_nccl.all_gather =
        (ncclResult_t(*)(const void *, void *, size_t, ncclDataType_t, ncclComm_t, cudaStream_t))dlsym(h, "ncclAllGather");
    g_nccl.err = (const char *(*)(ncclResult_t))dlsym(h, "ncclGetErrorString");
    g_nccl.get_version = (ncclResult_t(*)(int *))dlsym(h, "ncclGetVersion");
    if (!g_nccl.init_all || !g_nccl.destroy || !g_nccl.abort || !g_nccl.all_reduce || !g_nccl.all_gather ||
        !g_nccl.err || !g_nccl.get_version) {
        snprintf(g_nccl.why, sizeof g_nccl.why, "libnccl.so.2 lacks a function lmx needs");
        dlclose(h);
        return;
    }
    g_nccl.get_version(&g_nccl.version);
    g_nccl.ok = true; /* the handle stays open for the process */
}

static lmx_status nccl_ready(void) {
    pthread_once(&g_nccl_once, nccl_load);
    return g_nccl.ok ? LMX_OK : lmx_error(LMX_ERR_UNSUPPORTED, "nccl: %s", g_nccl.why);
}

static lmx_status nccl_err(const char *what, ncclResult_t r) {
    return lmx_error(LMX_ERR_INFERENCE_FAILURE, "nccl: %s: %s (%d)", what, g_nccl.err(r), (int)r);
}

extern "C" lmx_status lmx_cuda_nccl_init_all(int n, void **comms) {
    lmx_status st = nccl_ready();
    if (st != LMX_OK) return st;
    ncclComm_t *c = (ncclComm_t *)calloc((size_t)n, sizeof *c);
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "nccl: communicators");
    int dev = 0;
    cudaGetDevice(&dev);
    ncclResult_t r = g_nccl.init_all(c, n, NULL); /* devices 0 .. n-1 */
    cudaSetDevice(dev);
    if (r != ncclSuccess) {
        free(c);
        return nccl_err("ncclCommInitAll", r);
    }
    for (int i = 0; i < n; i++) comms[i] = (void *)c[i];
    free(c);
    LMX_LOG_I("nccl %d.%d.%d: %d ranks, NVLink multicast off", g_nccl.version / 10000, g_nccl.version / 100 % 100,
              g_nccl.version % 100, n);
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_nccl_all_reduce_sum(void *comm, float *d, size_t n, lmx_cuda_stream stream) {
    lmx_status st = nccl_ready();
    if (st != LMX_OK) return st;
    ncclResult_t r = g_nccl.all_reduce(d, d, n, ncclFloat32, ncclSum, (ncclComm_t)comm, LMX_CU_STREAM(stream));
    return r == ncclSuccess ? LMX_OK : nccl_err("ncclAllReduce", r);
}

extern "C" lmx_status lmx_cuda_nccl_all_gather(void *comm, const float *src, float *dst, size_t n,
                                               lmx_cuda_stream stream) {
    lmx_status st = nccl_ready();
    if (st != LMX_OK) return st;
    ncclResult_t r = g_nccl.all_gather(src, dst, n, ncclFloat32, (ncclComm_t)comm, LMX_CU_STREAM(stream));
    return r == ncclSuccess ? LMX_OK : nccl_err("ncclAllGather", r);
}

/* the calling thread's device is kept (NCCL switches to the communicator's) */
extern "C" void lmx_cuda_nccl_destroy(void *comm) {
    if (!comm || nccl_ready() != LMX_OK) return;
    int dev = 0;
    cudaGetDevice(&dev);
    g_nccl.destroy((ncclComm_t)comm);
    cudaSetDevice(dev);
}

extern "C" void lmx_cuda_nccl_abort(void *comm) {
    if (!comm || nccl_ready() != LMX_OK) return;
    int dev = 0;
    cudaGetDevice(&dev);
    g_nccl.abort((ncclComm_t)comm);
    cudaSetDevice(dev);
}

#else /* built without nccl.h */

extern "C" lmx_status lmx_cuda_nccl_init_all(int n, void **comms) {
    return lmx_error(LMX_ERR_UNSUPPORTED, "nccl: this build has no nccl.h (tensor parallel over %d GPUs)", n);
}
extern "C" lmx_status lmx_cuda_nccl_all_reduce_sum(void *comm, float *d, size_t n, lmx_cuda_stream stream) {
    return lmx_error(LMX_ERR_UNSUPPORTED, "nccl: this build has no nccl.h");
}
extern "C" lmx_status lmx_cuda_nccl_all_gather(void *comm, const float *src, float *dst, size_t n,
                                               lmx_cuda_stream stream) {
    return lmx_error(LMX_ERR_UNSUPPORTED, "nccl: this build has no nccl.h");
}
extern "C" void lmx_cuda_nccl_destroy(void *comm) {}
extern "C" void lmx_cuda_nccl_abort(void *comm) {}

#endif
