/* cuda_act.cu — the gate|up activation of prefill through a fused gate|up weight (declared in
 * cuda_kernels.h): out[t, i] = act(gu[t, i]) * gu[t, inter + i], gu [T, 2*inter] -> out [T, inter].
 * The arithmetic is elementwise_kernel's (cuda_ops.cu) for EW_SWIGLU / EW_GEGLU_TANH, so it gives what
 * act_mul gives on separate gate / up buffers. 4 consecutive outputs per thread with 16-byte loads and
 * stores when inter % 4 == 0 and the pointers are 16-byte aligned, else one per thread. No state. */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

static inline unsigned am_blocks(int64_t n) { /* grid-stride kernels: cap the grid */
    const int64_t b = (n + 255) / 256;
    return (unsigned)(b < 65535 * 32 ? b : 65535 * 32);
}

__global__ void act_mul_split4_kernel(const float4 *__restrict__ gu, float4 *__restrict__ out, int64_t T,
                                      int64_t inter4, int act) {
    const int64_t total = T * inter4;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / inter4, j = i - t * inter4;
        const float4 g = gu[t * 2 * inter4 + j], u = gu[t * 2 * inter4 + inter4 + j];
        float4 r;
        r.x = lmx_cu_act_mul(act, g.x, u.x);
        r.y = lmx_cu_act_mul(act, g.y, u.y);
        r.z = lmx_cu_act_mul(act, g.z, u.z);
        r.w = lmx_cu_act_mul(act, g.w, u.w);
        out[i] = r;
    }
}

__global__ void act_mul_split1_kernel(const float *__restrict__ gu, float *__restrict__ out, int64_t T, int64_t inter,
                                      int act) {
    const int64_t total = T * inter;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / inter, j = i - t * inter;
        out[i] = lmx_cu_act_mul(act, gu[t * 2 * inter + j], gu[t * 2 * inter + inter + j]);
    }
}

extern "C" lmx_status lmx_cuda_act_mul_split(const float *gu, float *out, int T, int64_t inter, int act,
                                             lmx_cuda_stream stream) {
    if (!gu || !out || T < 1 || inter < 1 || (act != 0 && act != 1))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda act_mul_split: bad arguments (T %d, inter %lld, act %d)", T,
                         (long long)inter, act);
    cudaStream_t st = LMX_CU_STREAM(stream);
    if (inter % 4 == 0 && !((uintptr_t)gu & 15) && !((uintptr_t)out & 15)) {
        const int64_t n4 = (int64_t)T * (inter / 4);
        act_mul_split4_kernel<<<am_blocks(n4), 256, 0, st>>>((const float4 *)gu, (float4 *)out, T, inter / 4,
                                                                      act);
    } else {
        const int64_t n = (int64_t)T * inter;
        act_mul_split1_kernel<<<am_blocks(n), 256, 0, st>>>(gu, out, T, inter, act);
    }
    LMX_CU_CHECK_LAUNCH("act_mul_split");
    return LMX_OK;
}
