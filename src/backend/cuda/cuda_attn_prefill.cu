/* cuda_attn_prefill.cu — tiled (flash) attention for prefill: T > 1 queries against an fp32 KV cache
 * (a BF16 or F16 cache goes to the tensor-core kernel of cuda_attn_flash_tc.cu)
 * [n_kv_heads][capacity][head_dim] (position j in slot j % capacity), GQA, causal by per-row
 * absolute positions, optional sliding window and logit soft-capping. fp32 throughout.
 *
 * One block of 256 threads per (head, tile of 64 query rows). The block walks the union of its rows'
 * visible key ranges in tiles of 64 keys staged in shared memory (Q tile resident), with an online
 * softmax per row (running max and sum in fp32). Thread (ty, tx) = (tid / 16, tid % 16) owns rows
 * 4ty..4ty+3: scores for keys tx + 16c (c < 4), outputs for dims 64c + 4tx + e (c < head_dim/64,
 * e < 4); a row's 16 threads sit in one half-warp, so row max/sum reduce with shuffles. Shared rows are
 * padded by 4 floats (16-byte reads across the 8 threads of a quarter-warp hit distinct banks).
 * Heavy (late) query tiles are launched first (causal load balance). Paged (lmx_cuda_kv_map): a
 * block's query tile comes from the map's tile list (rows of one sequence), K/V rows through that
 * sequence's block table.
 */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>
#include <pthread.h>

#define FA_BQ 64
#define FA_BK 64
#define FA_THREADS 256

#define FA_PS (FA_BK + 4) /* row stride of P */

/* Dynamic shared memory for head_dim hd: Q, K tiles [64][hd + 4], V [64][hd], P [64][68]. */
static size_t fa_smem_bytes(int hd) {
    return ((size_t)FA_BQ * (hd + 4) + (size_t)FA_BK * (hd + 4) + (size_t)FA_BK * hd + (size_t)FA_BQ * FA_PS) *
           sizeof(float);
}

/* HDMAX: 64, 128 or 256 (register tile of HDMAX/64 dim chunks); EXACT: head_dim == HDMAX (compile-time
 * bounds), else head_dim = hd_arg, a multiple of 16 in (HDMAX/2, HDMAX) (16..48 for HDMAX 64). */
template <int HDMAX, bool EXACT>
__global__ void __launch_bounds__(FA_THREADS)
fa_prefill_kernel(const float *__restrict__ q, const float *__restrict__ kc, const float *__restrict__ vc,
                  const int32_t *__restrict__ positions, int T, int n_heads, int group, int64_t cap,
                  float scale, float softcap, int window, int hd_arg, float *__restrict__ out,
                  lmx_cuda_kv_map map, const float *__restrict__ sinks) {
    const int HD = EXACT ? HDMAX : hd_arg;
    const int QS = HD + 4, PS = FA_PS;
    constexpr int NC = HDMAX / 64; /* output dim chunks per thread */
    extern __shared__ __align__(16) float fa_sm[];
    float *Qs = fa_sm;                  /* [BQ][QS] */
    float *Ks = Qs + FA_BQ * QS;        /* [BK][QS] */
    float *Vs = Ks + FA_BK * QS;        /* [BK][HD] */
    float *Ps = Vs + FA_BK * HD;        /* [BQ][PS] */
    __shared__ int64_t s_lo[FA_THREADS / 32], s_hi[FA_THREADS / 32];

    const int h = blockIdx.x;
    /* the tile's rows q0..T-1 (one sequence): from the tile list, else 64 rows of the call */
    const int tile = gridDim.y - 1 - blockIdx.y; /* late (heavy) tiles first */
    int q0 = tile * FA_BQ;
    if (map.tiles) {
        q0 = map.tiles[2 * tile];
        T = q0 + map.tiles[2 * tile + 1];
    } else if (T > q0 + FA_BQ) {
        T = q0 + FA_BQ;
    }
    const int32_t *tab = lmx_cu_kv_table(map, q0); /* NULL: ring */
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int kvh = h / group;
    const float *kb = kc + (size_t)kvh * cap * HD;
    const float *vb = vc + (size_t)kvh * cap * HD;

    /* Q tile (rows past T are zero) */
    for (int i = tid; i < FA_BQ * (HD / 4); i += FA_THREADS) {
        const int r = i / (HD / 4), d4 = i % (HD / 4);
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (q0 + r < T) v = *reinterpret_cast<const float4 *>(q + ((size_t)(q0 + r) * n_heads + h) * HD + d4 * 4);
        *reinterpret_cast<float4 *>(Qs + r * QS + d4 * 4) = v;
    }
    /* my rows' positions and visible ranges [lo, pos]; invalid rows see nothing */
    int64_t rpos[4], rlo[4];
    int64_t my_lo = INT64_MAX, my_hi = -1;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = q0 + ty * 4 + i;
        if (t < T) {
            rpos[i] = positions[t];
            int64_t lo = window > 0 ? rpos[i] - window + 1 : 0;
            rlo[i] = lo < 0 ? 0 : lo;
            my_lo = min(my_lo, rlo[i]);
            my_hi = max(my_hi, rpos[i]);
        } else {
            rpos[i] = -1;
            rlo[i] = 0;
        }
    }
    /* block-wide key range: min lo, max pos (each warp's two rows groups reduce, then across warps) */
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        my_lo = min(my_lo, (int64_t)__shfl_xor_sync(0xffffffffu, (long long)my_lo, o));
        my_hi = max(my_hi, (int64_t)__shfl_xor_sync(0xffffffffu, (long long)my_hi, o));
    }
    if ((tid & 31) == 0) {
        s_lo[tid >> 5] = my_lo;
        s_hi[tid >> 5] = my_hi;
    }
    __syncthreads();
    int64_t k_lo = s_lo[0], k_hi = s_hi[0];
    for (int w = 1; w < FA_THREADS / 32; w++) {
        k_lo = min(k_lo, s_lo[w]);
        k_hi = max(k_hi, s_hi[w]);
    }

    float o[4][NC][4];
    float m[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY;
        l[i] = 0.f;
#pragma unroll
        for (int c = 0; c < NC; c++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[i][c][e] = 0.f;
    }

    for (int64_t j0 = k_lo; j0 <= k_hi; j0 += FA_BK) {
        /* K, V tiles (keys past k_hi are zero) */
        for (int i = tid; i < FA_BK * (HD / 4); i += FA_THREADS) {
            const int r = i / (HD / 4), d4 = i % (HD / 4);
            const int64_t j = j0 + r;
            float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
            if (j <= k_hi) {
                const size_t off = (size_t)lmx_cu_kv_slot(tab, map.block_shift, j, cap) * HD + d4 * 4;
                kv = *reinterpret_cast<const float4 *>(kb + off);
                vv = *reinterpret_cast<const float4 *>(vb + off);
            }
            *reinterpret_cast<float4 *>(Ks + r * QS + d4 * 4) = kv;
            *reinterpret_cast<float4 *>(Vs + r * HD + d4 * 4) = vv;
        }
        __syncthreads();
        /* scores s[i][c] for rows 4ty+i, keys tx+16c */
        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int c = 0; c < 4; c++) s[i][c] = 0.f;
#pragma unroll 4
        for (int d = 0; d < HD; d += 4) {
            float4 qv[4], kv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) qv[i] = *reinterpret_cast<const float4 *>(Qs + (ty * 4 + i) * QS + d);
#pragma unroll
            for (int c = 0; c < 4; c++) kv[c] = *reinterpret_cast<const float4 *>(Ks + (tx + 16 * c) * QS + d);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    s[i][c] = fmaf(qv[i].x, kv[c].x, s[i][c]);
                    s[i][c] = fmaf(qv[i].y, kv[c].y, s[i][c]);
                    s[i][c] = fmaf(qv[i].z, kv[c].z, s[i][c]);
                    s[i][c] = fmaf(qv[i].w, kv[c].w, s[i][c]);
                }
        }
        /* cap, mask, online softmax per row */
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float tmax = -INFINITY;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int64_t j = j0 + tx + 16 * c;
                float v = s[i][c] * scale;
                if (softcap > 0.f) v = softcap * tanhf(v / softcap);
                if (j < rlo[i] || j > rpos[i]) v = -INFINITY;
                s[i][c] = v;
                tmax = fmaxf(tmax, v);
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
            const float m_new = fmaxf(m[i], tmax);
            const float m_use = m_new == -INFINITY ? 0.f : m_new; /* row sees nothing yet: p = 0 */
            const float corr = expf(m[i] - m_use);                 /* m = -inf: 0 */
            float psum = 0.f;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float p = expf(s[i][c] - m_use);
                psum += p;
                Ps[(ty * 4 + i) * PS + tx + 16 * c] = p;
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
            l[i] = l[i] * corr + psum;
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < NC; c++)
#pragma unroll
                for (int e = 0; e < 4; e++) o[i][c][e] *= corr;
        }
        __syncthreads(); /* P visible */
        /* O += P · V */
#pragma unroll 2
        for (int j = 0; j < FA_BK; j += 4) {
            float4 pv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) pv[i] = *reinterpret_cast<const float4 *>(Ps + (ty * 4 + i) * PS + j);
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
#pragma unroll
                for (int c = 0; c < NC; c++) {
                    if (!EXACT && 64 * c + 4 * tx >= HD) continue;
                    const float4 vv = *reinterpret_cast<const float4 *>(Vs + (j + jj) * HD + 64 * c + 4 * tx);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float p = jj == 0 ? pv[i].x : jj == 1 ? pv[i].y : jj == 2 ? pv[i].z : pv[i].w;
                        o[i][c][0] = fmaf(p, vv.x, o[i][c][0]);
                        o[i][c][1] = fmaf(p, vv.y, o[i][c][1]);
                        o[i][c][2] = fmaf(p, vv.z, o[i][c][2]);
                        o[i][c][3] = fmaf(p, vv.w, o[i][c][3]);
                    }
                }
            }
        }
        __syncthreads(); /* K, V, P reused by the next tile */
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = q0 + ty * 4 + i;
        if (t >= T) continue;
        float den = l[i];
        const float sk = lmx_cu_sink_fold(lmx_cu_sink_of(sinks, h), m[i], &den);
        const float inv = den > 0.f ? sk / den : 0.f;
        float *orow = out + ((size_t)t * n_heads + h) * HD;
#pragma unroll
        for (int c = 0; c < NC; c++)
            if (EXACT || 64 * c + 4 * tx < HD)
                *reinterpret_cast<float4 *>(orow + 64 * c + 4 * tx) =
                make_float4(o[i][c][0] * inv, o[i][c][1] * inv, o[i][c][2] * inv, o[i][c][3] * inv);
    }
}

/* Shared-memory opt-in for the instantiations, once per device (lmx_cu_per_device_ready). */
static lmx_cu_per_device g_fa = LMX_CU_PER_DEVICE_INIT;
static cudaError_t g_fa_err[LMX_CU_MAX_DEVICES][3]; /* written once per device: HDMAX 64, 128, 256 */
template <int HDMAX> static cudaError_t fa_optin(void) {
    const int bytes = (int)fa_smem_bytes(HDMAX);
    cudaError_t e = cudaFuncSetAttribute(fa_prefill_kernel<HDMAX, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(fa_prefill_kernel<HDMAX, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    return e;
}
static bool fa_init(int dev) {
    g_fa_err[dev][0] = fa_optin<64>();
    g_fa_err[dev][1] = fa_optin<128>();
    g_fa_err[dev][2] = fa_optin<256>();
    (void)cudaGetLastError(); /* a refused opt-in (GPU with less shared memory) must not stick */
    return true;
}
static int fa_bucket(int hd) { return hd <= 64 ? 0 : hd <= 128 ? 1 : 2; }

/* Shape/dtype supported and the head_dim's shared memory granted on this device. */
extern "C" bool lmx_cuda_attention_prefill_supported(const lmx_cuda_attn *a) {
    if (a && (a->kv_dtype == LMX_DTYPE_BF16 || a->kv_dtype == LMX_DTYPE_F16))
        return lmx_cuda_flash_tc_supported(a); /* cuda_attn_flash_tc.cu */
    if (!(a && a->kv_dtype == LMX_DTYPE_F32 && a->head_dim >= 16 && a->head_dim <= 256 && a->head_dim % 16 == 0 &&
          a->n_heads >= 1 && a->n_kv_heads >= 1 && a->n_heads % a->n_kv_heads == 0 && a->window >= 0 &&
          a->capacity >= 1))
        return false;
    int dev;
    if (!lmx_cu_per_device_ready(&g_fa, fa_init, &dev)) return false;
    return g_fa_err[dev][fa_bucket(a->head_dim)] == cudaSuccess;
}

template <int HDMAX, bool EXACT>
static lmx_status fa_launch(const lmx_cuda_attn *a, const float *q, const float *kc, const float *vc,
                            const int32_t *positions, int T, float *out, cudaStream_t st) {
    const lmx_cuda_kv_map map = lmx_cu_map_of(a);
    dim3 grid(a->n_heads, map.tiles ? map.n_tiles : (T + FA_BQ - 1) / FA_BQ);
    if (grid.y < 1) return LMX_OK;
    fa_prefill_kernel<HDMAX, EXACT><<<grid, FA_THREADS, fa_smem_bytes(a->head_dim), st>>>(
        q, kc, vc, positions, T, a->n_heads, a->n_heads / a->n_kv_heads, a->capacity, a->scale, a->softcap,
        a->window, a->head_dim, out, map, a->sinks);
    LMX_CU_CHECK_LAUNCH("flash attention");
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_attention_prefill(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                                 const void *v_cache, const int32_t *positions, int T,
                                                 float *out, lmx_cuda_stream stream) {
    if (!a || !q || !k_cache || !v_cache || !positions || !out || T < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda flash attention: NULL argument or T %d", T);
    if (!lmx_cuda_attention_prefill_supported(a))
        return lmx_error(LMX_ERR_UNSUPPORTED,
                         "cuda flash attention: unsupported shape or shared memory refused (heads %d/%d, head_dim %d, "
                         "kv dtype %d, window %d)",
                         a->n_heads, a->n_kv_heads, a->head_dim, (int)a->kv_dtype, a->window);
    if (a->kv_dtype == LMX_DTYPE_BF16 || a->kv_dtype == LMX_DTYPE_F16)
        return lmx_cuda_flash_tc(a, q, k_cache, v_cache, positions, T, out, stream);
    cudaStream_t st = LMX_CU_STREAM(stream);
    const float *kc = (const float *)k_cache, *vc = (const float *)v_cache;
    switch (a->head_dim) {
    case 64: return fa_launch<64, true>(a, q, kc, vc, positions, T, out, st);
    case 128: return fa_launch<128, true>(a, q, kc, vc, positions, T, out, st);
    case 256: return fa_launch<256, true>(a, q, kc, vc, positions, T, out, st);
    default:
        if (a->head_dim < 64) return fa_launch<64, false>(a, q, kc, vc, positions, T, out, st);
        if (a->head_dim < 128) return fa_launch<128, false>(a, q, kc, vc, positions, T, out, st);
        return fa_launch<256, false>(a, q, kc, vc, positions, T, out, st);
    }
}
