/* cuda_fused.cu — fused decode-step kernels (declared in cuda_kernels.h, "fused ops"):
 *   lmx_cuda_rope_qk_store: the attention block's per-position work in one launch — optional
 *   per-head RMSNorm of q and k (qwen3/gemma3 q_norm/k_norm), RoPE of q and k (half-split, partial
 *   rotary, mscale) in place, and the store of the rotated k rows and the v rows into the KV cache
 *   (F32/F16/BF16, ring slot position % capacity, or the slot through a paged map). Replaces up to 5
 *   launches (2 norms, 2 ropes, kv_store) per layer.
 * Grid (n_heads + n_kv_heads, T): one block per (head, token); block b < n_heads is q head b, the
 * others are kv heads (they also copy v). The head is staged in shared memory (head_dim floats),
 * normalised there, then every thread writes the rotated values of its features. The arithmetic is
 * that of rmsnorm_kernel and rope_kernel (cuda_ops.cu): rsqrtf(ss/dim + eps), sincosf of the fp32
 * angle pos * inv_freq, cos/sin times mscale. Positions are read from device memory (a captured
 * CUDA graph replays with new positions). No state; nothing allocated. */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

template <typename KT> __device__ __forceinline__ KT fu_cvt(float f);
template <> __device__ __forceinline__ float fu_cvt<float>(float f) { return f; }
template <> __device__ __forceinline__ __nv_bfloat16 fu_cvt<__nv_bfloat16>(float f) { return __float2bfloat16_rn(f); }
/* fp16 saturates like kv_store (cuda_ops.cu): a value past fp16's range stays finite, NaN stays NaN */
template <> __device__ __forceinline__ __half fu_cvt<__half>(float f) {
    return __float2half_rn(f != f ? f : fminf(fmaxf(f, -65504.f), 65504.f));
}

template <typename KT>
__global__ void rope_qk_store_kernel(float *q, float *k, const float *__restrict__ v, KT *kc, KT *vc,
                                     const int32_t *__restrict__ positions, const float *__restrict__ inv_freq,
                                     float mscale, const float *__restrict__ qn, const float *__restrict__ kn,
                                     float eps, int plus_one, int n_heads, int hd, int half, int64_t qs,
                                     int64_t ks, int64_t vs, int64_t cap, lmx_cuda_kv_map map) {
    extern __shared__ float xs[]; /* [hd] this head, normalised */
    __shared__ float red[32];
    const int hb = blockIdx.x, t = blockIdx.y, tid = threadIdx.x, nt = blockDim.x;
    const bool is_q = hb < n_heads; /* uniform per block */
    const int h = is_q ? hb : hb - n_heads;
    float *row = is_q ? q + (size_t)t * qs + (size_t)h * hd : k + (size_t)t * ks + (size_t)h * hd;
    for (int d = tid; d < hd; d += nt) xs[d] = row[d];
    const float *nw = is_q ? qn : kn;
    if (nw) {
        float ss = 0.f;
        for (int d = tid; d < hd; d += nt) ss = fmaf(xs[d], xs[d], ss);
        ss = lmx_cu_block_sum(ss, red);
        const float r = rsqrtf(ss / (float)hd + eps);
        for (int d = tid; d < hd; d += nt) {
            float wv = nw[d];
            if (plus_one) wv += 1.f;
            xs[d] = xs[d] * r * wv;
        }
    }
    __syncthreads();
    const int64_t p = positions[t];
    const int64_t slot = p >= 0 ? lmx_cu_kv_slot(lmx_cu_kv_table(map, t), map.block_shift, p, cap) : -1;
    for (int d = tid; d < hd; d += nt) {
        float o = xs[d];
        if (d < 2 * half) {
            const int i = d < half ? d : d - half;
            float s, c;
            sincosf((float)p * inv_freq[i], &s, &c);
            s *= mscale;
            c *= mscale;
            const float a = xs[i], b = xs[i + half];
            o = d < half ? a * c - b * s : b * c + a * s;
        }
        row[d] = o;
        if (!is_q && slot >= 0) kc[((size_t)h * cap + slot) * hd + d] = fu_cvt<KT>(o);
    }
    if (!is_q && slot >= 0) {
        const float *vr = v + (size_t)t * vs + (size_t)h * hd;
        for (int d = tid; d < hd; d += nt) vc[((size_t)h * cap + slot) * hd + d] = fu_cvt<KT>(vr[d]);
    }
}

extern "C" lmx_status lmx_cuda_rope_qk_store(const lmx_cuda_attn *a, const lmx_cuda_qk_rope *r, float *q, float *k,
                                             const float *v, void *k_cache, void *v_cache,
                                             const int32_t *positions, int T, lmx_cuda_stream stream) {
    if (!a || !r || !q || !k || !v || !k_cache || !v_cache || !positions || T < 1 || T > 65535 || a->n_heads < 1 ||
        a->n_kv_heads < 1 || a->head_dim < 1 || a->capacity < 1 || !lmx_cu_float_dtype(a->kv_dtype))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda rope_qk_store: bad arguments (T %d)", T);
    const int hd = a->head_dim;
    if (r->rot_dims < 0 || (r->rot_dims & 1) || r->rot_dims > hd || (r->rot_dims > 0 && !r->inv_freq) ||
        !r->q_norm != !r->k_norm || (size_t)hd * sizeof(float) > 48 * 1024)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda rope_qk_store: rot %d, head_dim %d, norms %d/%d",
                         r->rot_dims, hd, r->q_norm != NULL, r->k_norm != NULL);
    const int64_t qrow = (int64_t)a->n_heads * hd, krow = (int64_t)a->n_kv_heads * hd;
    const int64_t qs = r->q_stride ? r->q_stride : qrow, ks = r->k_stride ? r->k_stride : krow,
                  vs = r->v_stride ? r->v_stride : krow;
    if (qs < qrow || ks < krow || vs < krow)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda rope_qk_store: row strides %lld/%lld/%lld below a row",
                         (long long)qs, (long long)ks, (long long)vs);
    int threads = (hd + 31) / 32 * 32;
    if (threads > 256) threads = 256;
    const dim3 grid((unsigned)(a->n_heads + a->n_kv_heads), (unsigned)T);
    const size_t smem = (size_t)hd * sizeof(float);
    cudaStream_t st = LMX_CU_STREAM(stream);
    const int half = r->rot_dims / 2, p1 = r->norm_plus_one ? 1 : 0;
    const lmx_cuda_kv_map map = lmx_cu_map_of(a);
    if (a->kv_dtype == LMX_DTYPE_BF16)
        rope_qk_store_kernel<__nv_bfloat16><<<grid, threads, smem, st>>>(
            q, k, v, (__nv_bfloat16 *)k_cache, (__nv_bfloat16 *)v_cache, positions, r->inv_freq, r->mscale, r->q_norm,
            r->k_norm, r->eps, p1, a->n_heads, hd, half, qs, ks, vs, a->capacity, map);
    else if (a->kv_dtype == LMX_DTYPE_F16)
        rope_qk_store_kernel<__half><<<grid, threads, smem, st>>>(
            q, k, v, (__half *)k_cache, (__half *)v_cache, positions, r->inv_freq, r->mscale, r->q_norm, r->k_norm,
            r->eps, p1, a->n_heads, hd, half, qs, ks, vs, a->capacity, map);
    else
        rope_qk_store_kernel<float><<<grid, threads, smem, st>>>(
            q, k, v, (float *)k_cache, (float *)v_cache, positions, r->inv_freq, r->mscale, r->q_norm, r->k_norm,
            r->eps, p1, a->n_heads, hd, half, qs, ks, vs, a->capacity, map);
    LMX_CU_CHECK_LAUNCH("rope_qk_store");
    return LMX_OK;
}
