/* cuda_stub.c — the CUDA probe in builds without CUDA: there is never a device. In CUDA builds
 * (LMX_HAVE_CUDA) the real probe lives in cuda_device.cu and this file compiles to nothing. */
#include "backend/cuda/cuda_kernels.h"

#ifndef LMX_HAVE_CUDA
#include <string.h>

#include "util/error.h"
#include "util/log.h"

bool lmx_cuda_available(int *n_devices) {
    if (n_devices) *n_devices = 0;
    LMX_LOG_D("cuda: this build has no CUDA backend (built without nvcc or with LMX_CUDA=OFF)");
    return false;
}

lmx_status lmx_cuda_get_device_info(int device, lmx_cuda_device_info *out) {
    if (out) memset(out, 0, sizeof *out);
    return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "cuda: device %d: this build has no CUDA backend", device);
}
#else
typedef int lmx_cuda_stub_unused; /* keep the translation unit non-empty */
#endif
