/* cuda_common.cuh — helpers shared by the .cu files of the CUDA backend (internal, C++ only):
 * error mapping, launch checks, scalar loads of F32/F16/BF16 by run-time dtype, streaming loads,
 * warp reductions. No state. */
#ifndef LMX_BACKEND_CUDA_COMMON_CUH
#define LMX_BACKEND_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "backend/cuda/cuda_kernels.h"
extern "C" {
#include "util/error.h"
#include "util/log.h"
}

#define LMX_CU_STREAM(s) ((cudaStream_t)(s))

/* Checks the launch just made; returns from the calling wrapper on failure. */
#define LMX_CU_CHECK_LAUNCH(what)                                                              \
    do {                                                                                       \
        cudaError_t lmx_e_ = cudaGetLastError();                                               \
        if (lmx_e_ != cudaSuccess)                                                             \
            return lmx_error(LMX_ERR_INFERENCE_FAILURE, "cuda: %s: launch failed: %s", (what), \
                             cudaGetErrorString(lmx_e_));                                      \
    } while (0)

/* dtype codes used inside kernels (match lmx_dtype). */
enum { LMX_CU_F32 = LMX_DTYPE_F32, LMX_CU_F16 = LMX_DTYPE_F16, LMX_CU_BF16 = LMX_DTYPE_BF16 };

static inline bool lmx_cu_float_dtype(lmx_dtype t) {
    return t == LMX_DTYPE_F32 || t == LMX_DTYPE_F16 || t == LMX_DTYPE_BF16;
}

/* One element of a F32/F16/BF16 array, by run-time dtype (uniform branch). */
__device__ __forceinline__ float lmx_cu_ld(const void *p, size_t i, int dt) {
    if (dt == LMX_CU_BF16) {
        uint32_t u = ((const uint16_t *)p)[i];
        return __uint_as_float(u << 16);
    }
    if (dt == LMX_CU_F16) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

/* 16-byte read-only streaming load that does not allocate in L1 (weights are read once). */
__device__ __forceinline__ uint4 lmx_cu_ld_stream(const void *p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}

/* 8 consecutive cache elements (F32, BF16 or F16; 16-byte aligned for 16-bit, 32 for F32) as floats */
template <typename KT> __device__ __forceinline__ void lmx_cu_load8(const KT *p, float (&f)[8]);
template <> __device__ __forceinline__ void lmx_cu_load8<float>(const float *p, float (&f)[8]) {
    const float4 a = *reinterpret_cast<const float4 *>(p), b = *reinterpret_cast<const float4 *>(p + 4);
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
template <> __device__ __forceinline__ void lmx_cu_load8<__nv_bfloat16>(const __nv_bfloat16 *p, float (&f)[8]) {
    const uint4 w = *reinterpret_cast<const uint4 *>(p);
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(u[i] << 16);
        f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}

template <> __device__ __forceinline__ void lmx_cu_load8<__half>(const __half *p, float (&f)[8]) {
    const uint4 w = *reinterpret_cast<const uint4 *>(p);
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 v = __half22float2(*reinterpret_cast<const __half2 *>(&u[i]));
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

/* Paged KV (lmx_cuda_kv_map): the table of query row t (NULL for a ring cache) and the slot of
 * position j through it, or j % cap on a ring. */
static inline lmx_cuda_kv_map lmx_cu_map_of(const lmx_cuda_attn *a) {
    lmx_cuda_kv_map m;
    if (a->map) return *a->map;
    memset(&m, 0, sizeof m);
    return m;
}
__device__ __forceinline__ const int32_t *lmx_cu_kv_table(const lmx_cuda_kv_map &m, int t) {
    return m.tables ? m.tables + (size_t)m.seq[t] * m.stride : nullptr;
}
__device__ __forceinline__ int64_t lmx_cu_kv_slot(const int32_t *tab, int shift, int64_t j, int64_t cap) {
    if (!tab) return j % cap;
    return ((int64_t)__ldg(tab + (j >> shift)) << shift) | (j & ((1 << shift) - 1));
}

/* act(g) * u: act 0 = silu, 1 = gelu_tanh (the arithmetic of the act_mul kernels, cuda_ops.cu) */
__device__ __forceinline__ float lmx_cu_act_mul(int act, float g, float u) {
    if (act == 0) return g / (1.f + expf(-g)) * u;
    const float k = 0.7978845608028654f * (g + 0.044715f * g * g * g);
    return 0.5f * g * (1.f + tanhf(k)) * u;
}

/* Attention sinks (lmx_cuda_attn.sinks): a softmax accumulated as num = sum_j e^(s_j - m) v_j and
 * den = sum_j e^(s_j - m) gains e^sink in its denominator. Returns the factor c for num and updates
 * *den so that num * c / *den = num / (den + e^(sink - m)), computed relative to max(m, sink) so that
 * neither exponential overflows. sink = -inf (no sinks): c = 1 and *den unchanged, exactly. */
__device__ __forceinline__ float lmx_cu_sink_fold(float sink, float m, float *den) {
    if (sink == -INFINITY) return 1.f;
    const float mm = fmaxf(m, sink);
    const float c = m == -INFINITY ? 0.f : expf(m - mm);
    *den = *den * c + expf(sink - mm);
    return c;
}
__device__ __forceinline__ float lmx_cu_sink_of(const float *sinks, int h) { return sinks ? sinks[h] : -INFINITY; }

__device__ __forceinline__ float lmx_cu_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float lmx_cu_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of blockDim.x threads (multiple of 32, <= 1024); every thread gets the result.
 * `red` is __shared__ float[32]. Contains __syncthreads. */
__device__ __forceinline__ float lmx_cu_block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lmx_cu_warp_sum(v);
    __syncthreads(); /* red may be in use by a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.f;
    return lmx_cu_warp_sum(v);
}

/* ---- state of each device ----
 * What belongs to one device's context — a kernel's shared-memory opt-in (cudaFuncSetAttribute acts on
 * the calling thread's current device), a cuBLASLt handle — is made once per device a thread runs on:
 * several in one process under tensor parallel (backend.h lmx_backend_group). init(dev) runs once for
 * each of the first LMX_CU_MAX_DEVICES devices (not a stream operation: kept out of any capture);
 * later calls only read its result. */
#define LMX_CU_MAX_DEVICES 64
typedef struct lmx_cu_per_device {
    pthread_mutex_t mu;
    signed char state[LMX_CU_MAX_DEVICES]; /* 0 not yet; 1 made; -1 its init failed */
} lmx_cu_per_device;
#define LMX_CU_PER_DEVICE_INIT {PTHREAD_MUTEX_INITIALIZER, {0}}

/* The current device into *dev after its init ran; false when it failed or there is no such device. */
static inline bool lmx_cu_per_device_ready(lmx_cu_per_device *p, bool (*init)(int dev), int *dev) {
    *dev = 0;
    if (cudaGetDevice(dev) != cudaSuccess || *dev < 0 || *dev >= LMX_CU_MAX_DEVICES) {
        (void)cudaGetLastError();
        return false;
    }
    signed char s = __atomic_load_n(&p->state[*dev], __ATOMIC_ACQUIRE);
    if (s == 0) {
        pthread_mutex_lock(&p->mu);
        if (p->state[*dev] == 0) __atomic_store_n(&p->state[*dev], (signed char)(init(*dev) ? 1 : -1), __ATOMIC_RELEASE);
        s = p->state[*dev];
        pthread_mutex_unlock(&p->mu);
    }
    return s > 0;
}

#endif
