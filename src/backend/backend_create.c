/* backend_create.c — device selection and the one backend factory (backend.h: lmx_gpu_*,
 * lmx_device_resolve, lmx_backend_create). The CUDA probe and backend exist in every build (a build
 * without CUDA answers "no device"), so nothing here depends on how lmx was built. */
#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "util/error.h"
#include "util/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#ifdef LMX_HAVE_CUDA
#define NO_GPU_REASON "no usable CUDA device was found"
#else
#define NO_GPU_REASON "this build has no CUDA backend"
#endif

bool lmx_gpu_available(void) {
    int n = 0;
    return lmx_cuda_available(&n) && n > 0;
}

lmx_status lmx_gpu_usage_get(lmx_gpu_usage *out) {
    out->mem_used = -1;
    out->percent = -1;
    lmx_cuda_util u;
    if (!lmx_gpu_available()) return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "gpu usage: %s", NO_GPU_REASON);
    lmx_status st = lmx_cuda_utilization(0, &u);
    if (st != LMX_OK) return st;
    out->mem_used = (int64_t)u.mem_used;
    out->percent = (double)u.gpu_percent;
    return LMX_OK;
}

lmx_status lmx_gpu_info_get(lmx_gpu_info *out) {
    memset(out, 0, sizeof *out);
    lmx_cuda_device_info di;
    lmx_status st = lmx_cuda_get_device_info(0, &di);
    if (st != LMX_OK) return st;
    snprintf(out->name, sizeof out->name, "%s", di.name);
    out->cc_major = di.cc_major;
    out->cc_minor = di.cc_minor;
    out->sm_count = di.sm_count;
    out->total_mem = (int64_t)di.total_mem;
    return LMX_OK;
}

static atomic_flag g_auto_cpu_warned = ATOMIC_FLAG_INIT; /* the AUTO → CPU warning, once per process */

lmx_status lmx_device_resolve(lmx_device want, lmx_device *out) {
    if (want == LMX_DEVICE_CPU) {
        *out = LMX_DEVICE_CPU;
        return LMX_OK;
    }
    if (want != LMX_DEVICE_GPU && want != LMX_DEVICE_AUTO)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "device %d: not AUTO, GPU or CPU", (int)want);
    bool gpu = lmx_gpu_available();
    if (want == LMX_DEVICE_GPU) {
        if (!gpu)
            return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "device GPU requested but %s (use device CPU)", NO_GPU_REASON);
        *out = LMX_DEVICE_GPU;
        return LMX_OK;
    }
    if (gpu) {
        *out = LMX_DEVICE_GPU;
        return LMX_OK;
    }
    if (!atomic_flag_test_and_set(&g_auto_cpu_warned))
        LMX_LOG_W("device AUTO: no usable GPU (%s); running on the CPU", NO_GPU_REASON);
    *out = LMX_DEVICE_CPU;
    return LMX_OK;
}

lmx_status lmx_backend_create(lmx_device device, int n_threads, lmx_backend **out, lmx_device *picked) {
    *out = NULL;
    lmx_device dev = LMX_DEVICE_CPU;
    lmx_status st = lmx_device_resolve(device, &dev);
    if (st != LMX_OK) return st;
    st = dev == LMX_DEVICE_GPU ? lmx_backend_cuda_create(0, out) : lmx_backend_cpu_create(n_threads, out);
    if (st == LMX_OK && picked) *picked = dev;
    return st;
}
