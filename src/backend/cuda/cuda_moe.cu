/* cuda_moe.cu — the routing and the weighted combine of the mixture-of-experts ops (cuda_kernels.h,
 * table layout of backend.h's lmx_moe_routing).
 *
 *   route    one warp per row: the max and Σ exp over E (lanes stride the experts, double sums), k
 *            rounds of a warp arg-max over the experts not yet taken (larger logit, then lower
 *            index; NaN ranks as -inf), the weights in double as the CPU backend computes them; for
 *            T = 1 the same warp also writes the grouping of its k slots (one launch per decode step);
 *   sort     T > 1: one block: per-expert counts (shared atomics: order-independent), their prefix
 *            sums, then one warp places the slots batch by batch (32 slots, __match_any_sync ranks
 *            lanes of one expert): stable, so each expert's slots stay increasing;
 *   combine  one thread per (row, column): the row's k terms added in increasing route position, i.e.
 *            increasing expert (the CPU backend's order).
 */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

#define ROUTE_WARPS 4
#define SORT_THREADS 1024
#define COMBINE_THREADS 256

namespace {

__device__ __forceinline__ float rank_of(float v) { return isnan(v) ? -INFINITY : v; }

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ void __launch_bounds__(ROUTE_WARPS * 32)
moe_route_kernel(const float *__restrict__ logits, int T, int E, int k, int topk_softmax, float *table) {
    __shared__ int sid[ROUTE_WARPS][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int t = blockIdx.x * ROUTE_WARPS + warp;
    if (t >= T) return; /* a whole warp leaves */
    const size_t S = (size_t)T * (size_t)k;
    float *w = table;
    int32_t *ids = (int32_t *)(table + S), *order = ids + S, *pos = order + S, *start = pos + S;
    const float *l = logits + (size_t)t * E;
    float mx = -INFINITY;
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, l[e]);
    mx = lmx_cu_warp_max(mx);
    double all = 0;
    for (int e = lane; e < E; e += 32) all += exp((double)l[e] - (double)mx);
    all = warp_sum_d(all);
    uint32_t taken = 0; /* bit i: expert lane + 32 i is chosen */
    int mine = 0;       /* lane j < k: the j-th choice */
    for (int j = 0; j < k; j++) {
        float bv = -INFINITY;
        int be = 0x7fffffff;
        for (int i = 0, e = lane; e < E; e += 32, i++) {
            const float v = rank_of(l[e]);
            if (!((taken >> i) & 1u) && (v > bv || (v == bv && e < be))) {
                bv = v;
                be = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oe = __shfl_xor_sync(0xffffffffu, be, o);
            if (ov > bv || (ov == bv && oe < be)) {
                bv = ov;
                be = oe;
            }
        }
        if ((be & 31) == lane) taken |= 1u << (be >> 5);
        if (lane == j) mine = be;
    }
    const double ev = lane < k ? exp((double)l[mine] - (double)mx) : 0.0;
    const double top = warp_sum_d(ev);
    if (lane < k) {
        const size_t s = (size_t)t * k + lane;
        w[s] = (float)(ev / (topk_softmax ? top : all));
        ids[s] = mine;
    }
    if (T != 1) return;
    /* one row: its k distinct experts in increasing order are the route order */
    sid[warp][lane] = mine;
    __syncwarp();
    if (lane < k) {
        int rank = 0;
        for (int i = 0; i < k; i++) rank += sid[warp][i] < mine;
        order[rank] = lane;
        pos[lane] = rank;
    }
    for (int e = lane; e <= E; e += 32) {
        int c = 0;
        for (int i = 0; i < k; i++) c += sid[warp][i] < e;
        start[e] = c;
    }
}

__global__ void __launch_bounds__(SORT_THREADS) moe_sort_kernel(int S, int E, float *table) {
    extern __shared__ int sh[]; /* [2 E]: counts, then the running cursor of each expert */
    int *cnt = sh, *cur = sh + E;
    int32_t *ids = (int32_t *)(table + S), *order = ids + S, *pos = order + S, *start = pos + S;
    for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (int s = threadIdx.x; s < S; s += blockDim.x) atomicAdd(&cnt[ids[s]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int acc = 0;
        for (int e = 0; e < E; e++) {
            start[e] = acc;
            cur[e] = acc;
            acc += cnt[e];
        }
        start[E] = acc;
    }
    __syncthreads();
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
    for (int base = 0; base < S; base += 32) {
        const int s = base + lane;
        const int e = s < S ? ids[s] : E; /* lanes past the end share the key E and place nothing */
        const unsigned mask = __match_any_sync(0xffffffffu, e);
        const int leader = __ffs(mask) - 1, rank = __popc(mask & ((1u << lane) - 1u));
        int b = 0;
        if (lane == leader && e < E) {
            b = cur[e];
            cur[e] = b + __popc(mask);
        }
        b = __shfl_sync(0xffffffffu, b, leader);
        if (s < S) {
            order[b + rank] = s;
            pos[s] = b + rank;
        }
    }
}

__global__ void __launch_bounds__(COMBINE_THREADS)
moe_combine_kernel(float *x, const float *__restrict__ y, int dim, int k, int S, const float *__restrict__ table) {
    __shared__ int sp[32];
    __shared__ float sw[32];
    const int t = blockIdx.x, col = blockIdx.y * COMBINE_THREADS + threadIdx.x;
    const int32_t *pos = (const int32_t *)(table + S) + 2 * (size_t)S;
    if (threadIdx.x < k) {
        const size_t s = (size_t)t * k + threadIdx.x;
        sp[threadIdx.x] = pos[s];
        sw[threadIdx.x] = table[s];
    }
    __syncthreads();
    if (threadIdx.x == 0) /* the k terms by route position (= by expert) */
        for (int i = 1; i < k; i++) {
            const int p = sp[i];
            const float q = sw[i];
            int j = i - 1;
            for (; j >= 0 && sp[j] > p; j--) {
                sp[j + 1] = sp[j];
                sw[j + 1] = sw[j];
            }
            sp[j + 1] = p;
            sw[j + 1] = q;
        }
    __syncthreads();
    if (col >= dim) return;
    float a = x[(size_t)t * dim + col];
    for (int j = 0; j < k; j++) a += sw[j] * y[(size_t)sp[j] * dim + col];
    x[(size_t)t * dim + col] = a;
}

bool routing_ok(const lmx_cuda_moe *r) {
    return r && r->table && r->T >= 1 && r->k >= 1 && r->k <= 32 && r->E >= 1 && r->E <= 1024 && r->k <= r->E &&
           (size_t)r->T * (size_t)r->k <= (size_t)0x1fffffff;
}

}  // namespace

extern "C" lmx_status lmx_cuda_moe_route(const float *logits, const lmx_cuda_moe *r, bool topk_softmax,
                                         lmx_cuda_stream stream) {
    if (!logits || !routing_ok(r))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda moe route: bad arguments (T %d, top-%d of %d)", r ? r->T : 0,
                         r ? r->k : 0, r ? r->E : 0);
    cudaStream_t st = LMX_CU_STREAM(stream);
    const unsigned blocks = (unsigned)((r->T + ROUTE_WARPS - 1) / ROUTE_WARPS);
    moe_route_kernel<<<blocks, ROUTE_WARPS * 32, 0, st>>>(logits, r->T, r->E, r->k, topk_softmax ? 1 : 0, r->table);
    LMX_CU_CHECK_LAUNCH("moe route");
    if (r->T == 1) return LMX_OK;
    moe_sort_kernel<<<1, SORT_THREADS, 2 * (size_t)r->E * sizeof(int), st>>>(r->T * r->k, r->E, r->table);
    LMX_CU_CHECK_LAUNCH("moe sort");
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_moe_combine(float *x, const float *y, int dim, const lmx_cuda_moe *r,
                                           lmx_cuda_stream stream) {
    if (!x || !y || dim < 1 || !routing_ok(r) || r->T > 0x7fffffff)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda moe combine: bad arguments (dim %d)", dim);
    const dim3 grid((unsigned)r->T, (unsigned)((dim + COMBINE_THREADS - 1) / COMBINE_THREADS));
    moe_combine_kernel<<<grid, COMBINE_THREADS, 0, LMX_CU_STREAM(stream)>>>(x, y, dim, r->k, r->T * r->k, r->table);
    LMX_CU_CHECK_LAUNCH("moe combine");
    return LMX_OK;
}
