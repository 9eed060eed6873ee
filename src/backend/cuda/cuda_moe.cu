/* cuda_moe.cu — the mixture-of-experts op rows_axpy: y[idx[i]] += w[i] * x[i] over rows of dim floats
 * (backend.h). The host's routing table travels in the kernel's parameters (ROWS_PER_LAUNCH rows a
 * launch), so the op needs no device scratch and no host-to-device copy. */
#include "backend/cuda/cuda_common.cuh"

#include <string.h>

#define ROWS_PER_LAUNCH 256

typedef struct rows_table {
    int32_t idx[ROWS_PER_LAUNCH]; /* residual row of each expert row */
    float w[ROWS_PER_LAUNCH];     /* its routing weight */
} rows_table;

/* grid (rows, column blocks): each thread updates one element; rows of one launch are distinct */
__global__ void rows_axpy_kernel(float *y, const float *__restrict__ x, int dim, rows_table tab) {
    const int i = blockIdx.x;
    const int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j < dim) y[(size_t)tab.idx[i] * dim + j] += tab.w[i] * x[(size_t)i * dim + j];
}

extern "C" lmx_status lmx_cuda_rows_axpy(float *y, const float *x, int n, int dim, const int32_t *idx,
                                         const float *w, lmx_cuda_stream stream) {
    if (!y || !x || n < 0 || dim < 1 || (n > 0 && (!idx || !w)))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda rows_axpy: bad arguments (n %d, dim %d)", n, dim);
    const int threads = dim >= 256 ? 256 : 64;
    for (int done = 0; done < n; done += ROWS_PER_LAUNCH) {
        const int m = n - done < ROWS_PER_LAUNCH ? n - done : ROWS_PER_LAUNCH;
        rows_table tab;
        memcpy(tab.idx, idx + done, (size_t)m * sizeof *idx);
        memcpy(tab.w, w + done, (size_t)m * sizeof *w);
        dim3 grid((unsigned)m, (unsigned)((dim + threads - 1) / threads));
        rows_axpy_kernel<<<grid, threads, 0, LMX_CU_STREAM(stream)>>>(y, x + (size_t)done * dim, dim, tab);
        LMX_CU_CHECK_LAUNCH("rows_axpy");
    }
    return LMX_OK;
}
