/* cuda_nvml.c — GPU utilisation and memory through NVML, loaded with dlopen at first use so that
 * libnvidia-ml is never a link-time dependency (the binary starts on machines without a driver).
 * The NVML device is found by the CUDA device's PCI bus id (NVML and CUDA may number devices
 * differently). Thread-safe: the library is loaded once under pthread_once; NVML calls are
 * thread-safe themselves. */
#include "backend/cuda/cuda_kernels.h"

#include "util/error.h"

#ifdef LMX_HAVE_CUDA
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "util/log.h"

typedef int nvml_ret;                       /* nvmlReturn_t: 0 = success */
typedef struct nvml_device_st *nvml_device; /* nvmlDevice_t */
typedef struct { unsigned int gpu, memory; } nvml_utilization;
typedef struct { unsigned long long total, free, used; } nvml_memory;

static struct {
    void *lib;
    nvml_ret (*init)(void);
    nvml_ret (*by_bus)(const char *, nvml_device *);
    nvml_ret (*util)(nvml_device, nvml_utilization *);
    nvml_ret (*mem)(nvml_device, nvml_memory *);
    const char *(*err)(nvml_ret);
    int ok;
} nvml; /* written once under nvml_once, read-only afterwards */
static pthread_once_t nvml_once = PTHREAD_ONCE_INIT;

static void nvml_load(void) {
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        LMX_LOG_D("nvml: %s", dlerror());
        return;
    }
    nvml.init = (nvml_ret(*)(void))dlsym(h, "nvmlInit_v2");
    nvml.by_bus = (nvml_ret(*)(const char *, nvml_device *))dlsym(h, "nvmlDeviceGetHandleByPciBusId_v2");
    nvml.util = (nvml_ret(*)(nvml_device, nvml_utilization *))dlsym(h, "nvmlDeviceGetUtilizationRates");
    nvml.mem = (nvml_ret(*)(nvml_device, nvml_memory *))dlsym(h, "nvmlDeviceGetMemoryInfo");
    nvml.err = (const char *(*)(nvml_ret))dlsym(h, "nvmlErrorString");
    if (!nvml.init || !nvml.by_bus || !nvml.util || !nvml.mem || !nvml.err) {
        LMX_LOG_D("nvml: libnvidia-ml.so.1 lacks an expected symbol");
        dlclose(h);
        return;
    }
    nvml_ret r = nvml.init();
    if (r != 0) {
        LMX_LOG_D("nvml: nvmlInit: %s", nvml.err(r));
        dlclose(h);
        return;
    }
    nvml.lib = h;
    nvml.ok = 1;
}

lmx_status lmx_cuda_utilization(int device, lmx_cuda_util *out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "nvml: NULL output");
    pthread_once(&nvml_once, nvml_load);
    if (!nvml.ok) return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "nvml: libnvidia-ml.so.1 not usable");
    char bus[64];
    lmx_status st = lmx_cuda_pci_bus_id(device, bus, sizeof bus);
    if (st != LMX_OK) return st;
    nvml_device d;
    nvml_ret r = nvml.by_bus(bus, &d);
    if (r != 0) return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "nvml: device %s: %s", bus, nvml.err(r));
    nvml_utilization u;
    nvml_memory m;
    r = nvml.util(d, &u);
    if (r != 0) return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "nvml: utilization of %s: %s", bus, nvml.err(r));
    r = nvml.mem(d, &m);
    if (r != 0) return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "nvml: memory of %s: %s", bus, nvml.err(r));
    out->gpu_percent = u.gpu;
    out->mem_bw_percent = u.memory;
    out->mem_used = m.used;
    out->mem_total = m.total;
    return LMX_OK;
}

#else

lmx_status lmx_cuda_utilization(int device, lmx_cuda_util *out) {
    (void)out;
    return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "nvml: device %d: this build has no CUDA backend", device);
}

#endif
