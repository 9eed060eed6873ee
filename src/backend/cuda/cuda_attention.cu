/* cuda_attention.cu — split-K (flash-decoding) attention over a KV cache
 * [n_kv_heads][capacity][head_dim], one query row per (token, head), GQA, causal with an optional
 * sliding window and soft-capping.
 *
 * Keys live in a ring: position j in slot j % capacity (full layers never wrap). max_len only sizes
 * the grid (pass the capacity for a replay-invariant launch, e.g. in a CUDA graph).
 * Grid (n_heads, n_splits, T), 128 threads. Each block takes its query's key range
 * [lo, pos] (lo = pos - window + 1 clamped at 0), keeps split `s` of it, and walks that in tiles of
 * 128 keys with an online softmax: scores (one key per thread, 16-byte loads of K), tile max/sum,
 * then P·V with head_dim/8 threads per key, 8 dims each. It writes its unnormalised output, max and
 * sum to the workspace; a second kernel merges the splits. fp32 throughout.
 */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

#define ATT_THREADS 128
#define ATT_TILE 128
#define ATT_MAX_SPLITS 64
#define ATT_MAX_HD 256

/* splits for a row with `len` visible keys: about four blocks per multiprocessor in all (`want`
 * per row, H100/H200: 132 SMs), at least 32 keys each, at most the grid's */
__device__ __forceinline__ int att_splits(int64_t len, int want, int grid) {
    int64_t by_len = (len + 31) / 32;
    int64_t n = want < by_len ? want : by_len;
    if (n > grid) n = grid;
    return n < 1 ? 1 : (int)n;
}

template <typename KT>
__global__ void __launch_bounds__(ATT_THREADS)
attn_split_kernel(const float *__restrict__ q, const KT *__restrict__ kc, const KT *__restrict__ vc,
                  const int32_t *__restrict__ positions, int n_heads, int group, int hd, int64_t cap,
                  float scale, float softcap, int window, int want, float *__restrict__ ws) {
    __shared__ __align__(16) float qs[ATT_MAX_HD];
    __shared__ float ps[ATT_TILE];
    __shared__ float red[32];
    const int h = blockIdx.x, s = blockIdx.y, t = blockIdx.z;
    const int tid = threadIdx.x;
    const int kvh = h / group;
    const float *qr = q + ((size_t)t * n_heads + h) * hd;
    for (int i = tid; i < hd; i += ATT_THREADS) qs[i] = qr[i];
    const int64_t pos = positions[t];
    int64_t lo = window > 0 ? pos - window + 1 : 0;
    if (lo < 0) lo = 0;
    const int64_t len = pos - lo + 1;
    /* the split count is a function of this row's key range (so a grid sized for the cache, as a
     * CUDA graph needs, computes exactly what a grid sized for the current length computes) */
    const int n_splits = att_splits(len, want, (int)gridDim.y);
    if (s >= n_splits) return; /* whole block: no barrier reached */
    const int64_t chunk = (len + n_splits - 1) / n_splits;
    const int64_t beg = lo + (int64_t)s * chunk;
    int64_t end = beg + chunk;
    if (end > pos + 1) end = pos + 1;
    const KT *kb = kc + (size_t)kvh * cap * hd;
    const KT *vb = vc + (size_t)kvh * cap * hd;
    /* P·V layout: V16 threads per key (8 dims each), NPAR keys in parallel */
    const int V16 = hd / 8;
    const int NPAR = ATT_THREADS / V16;
    const int dv = tid % V16, pg = tid / V16;
    const bool pv_active = pg < NPAR;
    float o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    float m = -INFINITY, l = 0.f;
    __syncthreads();
    for (int64_t t0 = beg; t0 < end; t0 += ATT_TILE) {
        const int n_t = (int)(end - t0 < ATT_TILE ? end - t0 : ATT_TILE);
        /* scores */
        float sc = -INFINITY;
        if (tid < n_t) {
            const KT *kr = kb + (size_t)((t0 + tid) % cap) * hd; /* position j in slot j % cap */
            float dot = 0.f;
#pragma unroll 4
            for (int d = 0; d < hd; d += 8) { /* unrolled: several 16-byte loads in flight */
                float f[8];
                lmx_cu_load8<KT>(kr + d, f);
#pragma unroll
                for (int i = 0; i < 8; i++) dot = fmaf(f[i], qs[d + i], dot);
            }
            sc = dot * scale;
            if (softcap > 0.f) sc = softcap * tanhf(sc / softcap);
        }
        /* tile max */
        float tm = lmx_cu_warp_max(sc);
        __syncthreads();
        if ((tid & 31) == 0) red[tid >> 5] = tm;
        __syncthreads();
        tm = red[0];
        for (int w = 1; w < ATT_THREADS / 32; w++) tm = fmaxf(tm, red[w]);
        const float m_new = fmaxf(m, tm);
        const float corr = expf(m - m_new); /* m = -inf at first: corr = 0 */
        const float p = tid < n_t ? expf(sc - m_new) : 0.f;
        ps[tid] = p;
        const float psum = lmx_cu_block_sum(p, red); /* syncs: ps visible */
        l = l * corr + psum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] *= corr;
        if (pv_active) {
#pragma unroll 4
            for (int j = pg; j < n_t; j += NPAR) {
                float f[8];
                lmx_cu_load8<KT>(vb + (size_t)((t0 + j) % cap) * hd + dv * 8, f);
                const float pj = ps[j];
#pragma unroll
                for (int i = 0; i < 8; i++) o[i] = fmaf(pj, f[i], o[i]);
            }
        }
        __syncthreads(); /* ps reused by the next tile */
    }
    /* reduce o over the NPAR key groups in group order (deterministic: no float atomics, so the same
     * inputs give the same bits on every run): partials [NPAR][hd] in shared memory */
    __shared__ float opart[ATT_THREADS * 8];
    if (pv_active)
#pragma unroll
        for (int i = 0; i < 8; i++) opart[pg * hd + dv * 8 + i] = o[i];
    __syncthreads();
    float *wo = ws + (((size_t)t * n_heads + h) * ATT_MAX_SPLITS + s) * (hd + 2);
    for (int i = tid; i < hd; i += ATT_THREADS) {
        float acc = 0.f;
        for (int g = 0; g < NPAR; g++) acc += opart[g * hd + i];
        wo[i] = acc;
    }
    if (tid == 0) {
        wo[hd] = m;
        wo[hd + 1] = l;
    }
}

__global__ void attn_merge_kernel(const float *__restrict__ ws, const int32_t *__restrict__ positions,
                                  int n_heads, int hd, int window, int want, int grid_splits,
                                  const float *__restrict__ sinks, float *__restrict__ out) {
    const int h = blockIdx.x, t = blockIdx.y;
    const int64_t pos = positions[t];
    const int64_t len = window > 0 && window < pos + 1 ? window : pos + 1;
    const int n_splits = att_splits(len, want, grid_splits);
    const float *base = ws + ((size_t)t * n_heads + h) * ATT_MAX_SPLITS * (hd + 2);
    float M = -INFINITY;
    for (int s = 0; s < n_splits; s++) M = fmaxf(M, base[(size_t)s * (hd + 2) + hd]);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float num = 0.f, den = 0.f;
        for (int s = 0; s < n_splits; s++) {
            const float *w = base + (size_t)s * (hd + 2);
            const float ms = w[hd];
            if (ms == -INFINITY) continue;
            const float e = expf(ms - M);
            num = fmaf(e, w[d], num);
            den = fmaf(e, w[hd + 1], den);
        }
        num *= lmx_cu_sink_fold(lmx_cu_sink_of(sinks, h), M, &den);
        out[((size_t)t * n_heads + h) * hd + d] = den > 0.f ? num / den : 0.f;
    }
}

extern "C" size_t lmx_cuda_attention_workspace_floats(const lmx_cuda_attn *a, int T) {
    if (!a || T < 1) return 0;
    return (size_t)T * a->n_heads * ATT_MAX_SPLITS * (a->head_dim + 2);
}

extern "C" lmx_status lmx_cuda_attention(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                         const void *v_cache, const int32_t *positions, int T,
                                         int64_t max_len, float *workspace, float *out,
                                         lmx_cuda_stream stream) {
    if (!a || !q || !k_cache || !v_cache || !positions || !workspace || !out || T < 1 || max_len < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda attention: NULL argument, T %d or max_len %lld", T,
                         (long long)max_len);
    if (a->map) return lmx_error(LMX_ERR_UNSUPPORTED, "cuda attention: a paged map (use lmx_cuda_attention_decode)");
    if (a->n_heads < 1 || a->n_kv_heads < 1 || a->n_heads % a->n_kv_heads || a->head_dim < 8 ||
        a->head_dim > ATT_MAX_HD || a->head_dim % 8 ||
        !lmx_cu_float_dtype(a->kv_dtype) || a->window < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "cuda attention: unsupported shape (heads %d/%d, head_dim %d, capacity %lld, "
                         "max_len %lld, window %d)",
                         a->n_heads, a->n_kv_heads, a->head_dim, (long long)a->capacity,
                         (long long)max_len, a->window);
    /* splits: about four blocks per multiprocessor (H100/H200: 132) in all, at least 32 keys each */
    int64_t span = a->window > 0 && a->window < max_len ? a->window : max_len;
    int64_t want = (528 + (int64_t)a->n_heads * T - 1) / ((int64_t)a->n_heads * T);
    int64_t by_len = (span + 31) / 32;
    if (want > ATT_MAX_SPLITS) want = ATT_MAX_SPLITS;
    int n_splits = (int)(want < by_len ? want : by_len); /* the grid; rows may use fewer */
    if (n_splits < 1) n_splits = 1;
    dim3 grid(a->n_heads, n_splits, T);
    cudaStream_t st = LMX_CU_STREAM(stream);
    const int group = a->n_heads / a->n_kv_heads;
#define LMX_ATT(KT)                                                                                      \
    attn_split_kernel<KT><<<grid, ATT_THREADS, 0, st>>>(q, (const KT *)k_cache, (const KT *)v_cache,     \
                                                        positions, a->n_heads, group, a->head_dim,       \
                                                        a->capacity, a->scale, a->softcap, a->window,    \
                                                        (int)want, workspace)
    if (a->kv_dtype == LMX_DTYPE_BF16) LMX_ATT(__nv_bfloat16);
    else if (a->kv_dtype == LMX_DTYPE_F16) LMX_ATT(__half);
    else LMX_ATT(float);
#undef LMX_ATT
    LMX_CU_CHECK_LAUNCH("attention");
    attn_merge_kernel<<<dim3(a->n_heads, T), a->head_dim < 128 ? 64 : 128, 0, st>>>(workspace, positions, a->n_heads, a->head_dim, a->window, (int)want, n_splits, a->sinks, out);
    LMX_CU_CHECK_LAUNCH("attention merge");
    return LMX_OK;
}
