/* cuda_sample_rows.cu — the greedy choice of many logit rows in one launch (lmx_cuda_greedy_rows,
 * cuda_kernels.h), for the batched device sampling of the backend (sample_rows): the rule of the
 * single-row sampler's greedy path (cuda_sample.cu): the largest value, the lowest id among equal
 * values, NaN skipped, -1 when no value is above -inf (the host reports that case).
 * One block of 1024 threads per row; a thread walks ids i, i + 1024, ... (ascending, so its first
 * maximum stays), then warp shuffles and one warp combine the candidates. No state. */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

#define GR_THREADS 1024

/* (av, ai) better than (bv, bi): larger, or equal with a lower id; id < 0 = none */
__device__ __forceinline__ bool gr_better(float av, int ai, float bv, int bi) {
    if (ai < 0) return false;
    if (bi < 0) return true;
    return av > bv || (av == bv && ai < bi);
}

__device__ __forceinline__ void gr_warp_best(float &bv, int &bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (gr_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
}

__global__ void __launch_bounds__(GR_THREADS)
greedy_rows_kernel(const float *__restrict__ logits, int n, const int32_t *__restrict__ rows, int32_t *ids) {
    __shared__ float sv[GR_THREADS / 32];
    __shared__ int si[GR_THREADS / 32];
    const float *row = logits + (size_t)(rows ? rows[blockIdx.x] : (int32_t)blockIdx.x) * (size_t)n;
    float bv = -INFINITY;
    int bi = -1;
    for (int i = threadIdx.x; i < n; i += GR_THREADS) {
        const float v = row[i];
        if (v > bv) { /* NaN and -inf never chosen */
            bv = v;
            bi = i;
        }
    }
    gr_warp_best(bv, bi);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        bv = sv[lane];
        bi = si[lane];
        gr_warp_best(bv, bi);
        if (lane == 0) ids[blockIdx.x] = bi;
    }
}

extern "C" lmx_status lmx_cuda_greedy_rows(const float *logits, int64_t n, const int32_t *rows, int n_rows,
                                           int32_t *ids, lmx_cuda_stream stream) {
    if (!logits || !ids || n_rows < 1 || n < 1 || n > INT32_MAX)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda greedy rows: bad arguments (rows %d, n %lld)", n_rows,
                         (long long)n);
    greedy_rows_kernel<<<n_rows, GR_THREADS, 0, LMX_CU_STREAM(stream)>>>(logits, (int)n, rows, ids);
    LMX_CU_CHECK_LAUNCH("greedy rows");
    return LMX_OK;
}
