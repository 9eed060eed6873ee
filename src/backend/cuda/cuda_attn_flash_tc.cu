/* cuda_attn_flash_tc.cu — tiled (flash) prefill attention on the tensor cores over a BF16 (or F16) KV cache
 * [n_kv_heads][capacity][head_dim] (position j in slot j % capacity), GQA, causal by per-row absolute
 * positions, optional sliding window and logit soft-capping. Same semantics as cuda_attn_prefill.cu's
 * fp32 kernel; Q is rounded to the cache's type, S = QKᵀ and O = P·V run as mma.sync m16n8k16 (bf16 or
 * fp16 operands, fp32 accumulation), P is rounded likewise for the second product, softmax statistics
 * stay fp32.
 *
 * One block of 128 threads (4 warps) per (head, tile of 64 query rows); warp w owns rows 16w..16w+15.
 * The block walks the union of its rows' visible key ranges in tiles of 64 keys; K and V tiles are
 * copied from the bf16 cache into shared memory with cp.async (double buffered: the next tile loads
 * while this one computes; keys past the range are zero-filled). Shared rows are padded by 8 bf16 so
 * fragment loads (32-bit for Q and K, ldmatrix.trans for V) are bank-conflict free. Per tile and warp:
 * S [16 x 64] in registers (C fragments), mask/scale/cap, online softmax per row (a row's 4 threads
 * reduce with shuffles), P re-used from the C fragments as A fragments, O [16 x head_dim] in registers.
 * Heavy (late) query tiles are launched first. Paged (lmx_cuda_kv_map): a block's query tile comes
 * from the map's tile list (rows of one sequence), the K/V rows through that sequence's block table.
 */
#include "backend/cuda/cuda_common.cuh"

#include <limits.h>
#include <math.h>
#include <pthread.h>

#define FT_BQ 64
#define FT_BK 64
#define FT_THREADS 128

/* shared memory for head_dim hd: Q [64][hd+8], K and V [2][64][hd+8], bf16 */
static size_t ft_smem_bytes(int hd) { return (size_t)FT_BQ * (hd + 8) * 5 * sizeof(uint16_t); }

/* F16: fp16 operands (an F16 cache), else bf16 */
template <bool F16>
__device__ __forceinline__ void ft_mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (F16)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <bool F16> __device__ __forceinline__ uint32_t ft_pack(float lo, float hi) {
    if constexpr (F16) {
        const __half2 v = __floats2half2_rn(lo, hi); /* .x (low half) = lo */
        return *reinterpret_cast<const uint32_t *>(&v);
    } else {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&v);
    }
}

/* 16 bytes global -> shared, asynchronously; src_bytes 0 fills zeros */
__device__ __forceinline__ void ft_cp16(void *smem, const void *gmem, int src_bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void ft_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void ft_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

/* V fragments of two n-tiles (dims n0..n0+15) for keys k0..k0+15: ldmatrix.x4.trans */
__device__ __forceinline__ void ft_ldsm_t(uint32_t (&r)[4], const uint16_t *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

/* HDMAX: 64, 128 or 256; EXACT: head_dim == HDMAX, else head_dim = hd_arg (a multiple of 16 below HDMAX) */
template <int HDMAX, bool EXACT, bool F16>
__global__ void __launch_bounds__(FT_THREADS)
ft_prefill_kernel(const float *__restrict__ q, const uint16_t *__restrict__ kc, const uint16_t *__restrict__ vc,
                  const int32_t *__restrict__ positions, int T, int n_heads, int group, int64_t cap, float scale,
                  float softcap, int window, int hd_arg, float *__restrict__ out, lmx_cuda_kv_map map,
                  const float *__restrict__ sinks) {
    const int HD = EXACT ? HDMAX : hd_arg;
    const int LD = HD + 8;
    constexpr int NT = HDMAX / 8;  /* output n-tiles */
    constexpr int KS = HDMAX / 16; /* k-steps of S = QKᵀ */
    extern __shared__ __align__(16) uint16_t ft_sm[];
    uint16_t *Qs = ft_sm;                 /* [64][LD] */
    uint16_t *Kb = Qs + FT_BQ * LD;       /* [2][64][LD] */
    uint16_t *Vb = Kb + 2 * FT_BK * LD;   /* [2][64][LD] */
    __shared__ long long s_lo[FT_THREADS / 32], s_hi[FT_THREADS / 32];

    const int h = blockIdx.x;
    /* the tile's rows q0..T-1 (one sequence): from the tile list, else 64 rows of the call */
    const int tile = gridDim.y - 1 - blockIdx.y; /* late (heavy) tiles first */
    int q0 = tile * FT_BQ;
    if (map.tiles) {
        q0 = map.tiles[2 * tile];
        T = q0 + map.tiles[2 * tile + 1];
    } else if (T > q0 + FT_BQ) {
        T = q0 + FT_BQ;
    }
    const int32_t *tab = lmx_cu_kv_table(map, q0); /* NULL: ring */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int kvh = h / group;
    const uint16_t *kb = kc + (size_t)kvh * cap * HD;
    const uint16_t *vb = vc + (size_t)kvh * cap * HD;

    /* Q tile -> bf16 (rows past T are zero) */
    for (int i = tid; i < FT_BQ * (HD / 4); i += FT_THREADS) {
        const int r = i / (HD / 4), d4 = i % (HD / 4);
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (q0 + r < T) v = *reinterpret_cast<const float4 *>(q + ((size_t)(q0 + r) * n_heads + h) * HD + d4 * 4);
        *reinterpret_cast<uint2 *>(Qs + r * LD + d4 * 4) = make_uint2(ft_pack<F16>(v.x, v.y), ft_pack<F16>(v.z, v.w));
    }
    /* the block's key range: min lo .. max pos over its valid rows (thread i looks at row i % 64) */
    {
        const int t = q0 + (tid & (FT_BQ - 1));
        long long lo_ = LLONG_MAX, hi_ = -1;
        if (t < T) {
            const long long p = positions[t];
            long long l = window > 0 ? p - window + 1 : 0;
            lo_ = l < 0 ? 0 : l;
            hi_ = p;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            lo_ = min(lo_, __shfl_xor_sync(0xffffffffu, lo_, o));
            hi_ = max(hi_, __shfl_xor_sync(0xffffffffu, hi_, o));
        }
        if (lane == 0) {
            s_lo[warp] = lo_;
            s_hi[warp] = hi_;
        }
    }
    /* this thread's two rows: 16w + g and 16w + g + 8 */
    long long rpos[2], rlo[2];
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const int t = q0 + warp * 16 + g + ri * 8;
        if (t < T) {
            rpos[ri] = positions[t];
            const long long l = window > 0 ? rpos[ri] - window + 1 : 0;
            rlo[ri] = l < 0 ? 0 : l;
        } else {
            rpos[ri] = -1; /* sees nothing */
            rlo[ri] = 0;
        }
    }
    __syncthreads();
    long long k_lo = s_lo[0], k_hi = s_hi[0];
#pragma unroll
    for (int w = 1; w < FT_THREADS / 32; w++) {
        k_lo = min(k_lo, s_lo[w]);
        k_hi = max(k_hi, s_hi[w]);
    }
    const int n_tiles = k_hi < k_lo ? 0 : (int)((k_hi - k_lo) / FT_BK + 1);

    /* K, V tile j0.. -> buffer b (keys past k_hi zero-filled) */
    auto load_tile = [&](long long j0, int b) {
        uint16_t *Kd = Kb + b * FT_BK * LD, *Vd = Vb + b * FT_BK * LD;
        const long long s0 = j0 % cap;
        const int c8n = HD / 8;
        for (int i = tid; i < FT_BK * c8n; i += FT_THREADS) {
            const int r = i / c8n, c8 = i % c8n;
            const bool ok = j0 + r <= k_hi;
            long long sl = s0 + r;
            if (tab) {
                sl = ok ? lmx_cu_kv_slot(tab, map.block_shift, j0 + r, cap) : 0;
            } else {
                while (sl >= cap) sl -= cap;
            }
            const size_t off = ok ? (size_t)sl * HD + c8 * 8 : 0;
            ft_cp16(Kd + r * LD + c8 * 8, kb + off, ok ? 16 : 0);
            ft_cp16(Vd + r * LD + c8 * 8, vb + off, ok ? 16 : 0);
        }
    };

    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    const uint16_t *Qw = Qs + (warp * 16 + g) * LD + 2 * c; /* this thread's A-fragment base */

    if (n_tiles > 0) load_tile(k_lo, 0);
    ft_commit();
    for (int it = 0; it < n_tiles; it++) {
        const long long j0 = k_lo + (long long)it * FT_BK;
        const int b = it & 1;
        if (it + 1 < n_tiles) {
            load_tile(j0 + FT_BK, b ^ 1);
            ft_commit();
            ft_wait<1>();
        } else {
            ft_wait<0>();
        }
        __syncthreads();
        const uint16_t *Ks = Kb + b * FT_BK * LD, *Vs = Vb + b * FT_BK * LD;
        /* S = Q Kᵀ: 8 n-tiles of 8 keys */
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            if (!EXACT && kk * 16 >= HD) break;
            uint32_t a[4];
            a[0] = *reinterpret_cast<const uint32_t *>(Qw + kk * 16);
            a[1] = *reinterpret_cast<const uint32_t *>(Qw + 8 * LD + kk * 16);
            a[2] = *reinterpret_cast<const uint32_t *>(Qw + kk * 16 + 8);
            a[3] = *reinterpret_cast<const uint32_t *>(Qw + 8 * LD + kk * 16 + 8);
#pragma unroll
            for (int n = 0; n < 8; n++) {
                const uint16_t *kr = Ks + (n * 8 + g) * LD + kk * 16 + 2 * c;
                ft_mma<F16>(s[n], a, *reinterpret_cast<const uint32_t *>(kr), *reinterpret_cast<const uint32_t *>(kr + 8));
            }
        }
        /* scale, cap, mask; online softmax per row (ri 0: row g, 1: row g + 8) */
        float corr[2];
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            float tmax = -INFINITY;
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const long long j = j0 + n * 8 + 2 * c + e;
                    float v = s[n][ri * 2 + e] * scale;
                    if (softcap > 0.f) v = softcap * tanhf(v / softcap);
                    if (j < rlo[ri] || j > rpos[ri]) v = -INFINITY;
                    s[n][ri * 2 + e] = v;
                    tmax = fmaxf(tmax, v);
                }
            tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
            tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
            const float m_new = fmaxf(m[ri], tmax);
            const float m_use = m_new == -INFINITY ? 0.f : m_new; /* row sees nothing yet: p = 0 */
            corr[ri] = expf(m[ri] - m_use);                       /* m = -inf: 0 */
            float psum = 0.f;
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float p = expf(s[n][ri * 2 + e] - m_use);
                    s[n][ri * 2 + e] = p;
                    psum += p;
                }
            l[ri] = l[ri] * corr[ri] + psum; /* this thread's part; the row's 4 threads add up at the end */
            m[ri] = m_new;
        }
#pragma unroll
        for (int n = 0; n < NT; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        /* O += P · V: 4 k-steps of 16 keys; P from the S fragments */
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            uint32_t a[4];
            a[0] = ft_pack<F16>(s[2 * kk][0], s[2 * kk][1]);
            a[1] = ft_pack<F16>(s[2 * kk][2], s[2 * kk][3]);
            a[2] = ft_pack<F16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = ft_pack<F16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            const uint16_t *vrow = Vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + (lane >> 4) * 8;
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                if (!EXACT && np * 16 >= HD) break;
                uint32_t r[4];
                ft_ldsm_t(r, vrow + np * 16);
                ft_mma<F16>(o[2 * np], a, r[0], r[1]);
                ft_mma<F16>(o[2 * np + 1], a, r[2], r[3]);
            }
        }
        __syncthreads(); /* buffer b is refilled two tiles later */
    }
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        l[ri] += __shfl_xor_sync(0xffffffffu, l[ri], 1);
        l[ri] += __shfl_xor_sync(0xffffffffu, l[ri], 2);
    }
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const int t = q0 + warp * 16 + g + ri * 8;
        if (t >= T) continue;
        float den = l[ri];
        const float sc = lmx_cu_sink_fold(lmx_cu_sink_of(sinks, h), m[ri], &den);
        const float inv = den > 0.f ? sc / den : 0.f;
        float *orow = out + ((size_t)t * n_heads + h) * HD + 2 * c;
#pragma unroll
        for (int n = 0; n < NT; n++)
            if (EXACT || n * 8 < HD)
                *reinterpret_cast<float2 *>(orow + n * 8) = make_float2(o[n][ri * 2] * inv, o[n][ri * 2 + 1] * inv);
    }
}

/* Shared-memory opt-in, once per device (lmx_cu_per_device_ready). */
static lmx_cu_per_device g_ft = LMX_CU_PER_DEVICE_INIT;
static cudaError_t g_ft_err[LMX_CU_MAX_DEVICES][3]; /* written once per device: HDMAX 64, 128, 256 */
template <int HDMAX> static cudaError_t ft_optin(void) {
    const int bytes = (int)ft_smem_bytes(HDMAX);
    const cudaFuncAttribute at = cudaFuncAttributeMaxDynamicSharedMemorySize;
    cudaError_t e = cudaFuncSetAttribute(ft_prefill_kernel<HDMAX, true, false>, at, bytes);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(ft_prefill_kernel<HDMAX, false, false>, at, bytes);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(ft_prefill_kernel<HDMAX, true, true>, at, bytes);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(ft_prefill_kernel<HDMAX, false, true>, at, bytes);
    return e;
}
static bool ft_init(int dev) {
    g_ft_err[dev][0] = ft_optin<64>();
    g_ft_err[dev][1] = ft_optin<128>();
    g_ft_err[dev][2] = ft_optin<256>();
    (void)cudaGetLastError(); /* a refused opt-in must not stick */
    return true;
}

extern "C" bool lmx_cuda_flash_tc_supported(const lmx_cuda_attn *a) {
    if (!(a && (a->kv_dtype == LMX_DTYPE_BF16 || a->kv_dtype == LMX_DTYPE_F16) && a->head_dim >= 16 && a->head_dim <= 256 && a->head_dim % 16 == 0 &&
          a->n_heads >= 1 && a->n_kv_heads >= 1 && a->n_heads % a->n_kv_heads == 0 && a->window >= 0 &&
          a->capacity >= 1))
        return false;
    int dev;
    if (!lmx_cu_per_device_ready(&g_ft, ft_init, &dev)) return false;
    return g_ft_err[dev][a->head_dim <= 64 ? 0 : a->head_dim <= 128 ? 1 : 2] == cudaSuccess;
}

template <int HDMAX, bool EXACT>
static lmx_status ft_launch(const lmx_cuda_attn *a, const float *q, const uint16_t *kc, const uint16_t *vc,
                            const int32_t *positions, int T, float *out, cudaStream_t st) {
    const lmx_cuda_kv_map map = lmx_cu_map_of(a);
    dim3 grid(a->n_heads, map.tiles ? map.n_tiles : (T + FT_BQ - 1) / FT_BQ);
    if (grid.y < 1) return LMX_OK;
    if (a->kv_dtype == LMX_DTYPE_F16)
        ft_prefill_kernel<HDMAX, EXACT, true><<<grid, FT_THREADS, ft_smem_bytes(a->head_dim), st>>>(
            q, kc, vc, positions, T, a->n_heads, a->n_heads / a->n_kv_heads, a->capacity, a->scale, a->softcap,
            a->window, a->head_dim, out, map, a->sinks);
    else
        ft_prefill_kernel<HDMAX, EXACT, false><<<grid, FT_THREADS, ft_smem_bytes(a->head_dim), st>>>(
        q, kc, vc, positions, T, a->n_heads, a->n_heads / a->n_kv_heads, a->capacity, a->scale, a->softcap,
        a->window, a->head_dim, out, map, a->sinks);
    LMX_CU_CHECK_LAUNCH("flash attention (tensor cores)");
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_flash_tc(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                        const void *v_cache, const int32_t *positions, int T, float *out,
                                        lmx_cuda_stream stream) {
    if (!a || !q || !k_cache || !v_cache || !positions || !out || T < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda flash attention (tc): NULL argument or T %d", T);
    if (!lmx_cuda_flash_tc_supported(a))
        return lmx_error(LMX_ERR_UNSUPPORTED,
                         "cuda flash attention (tc): unsupported (heads %d/%d, head_dim %d, kv dtype %d, window %d)",
                         a->n_heads, a->n_kv_heads, a->head_dim, (int)a->kv_dtype, a->window);
    cudaStream_t st = LMX_CU_STREAM(stream);
    const uint16_t *kc = (const uint16_t *)k_cache, *vc = (const uint16_t *)v_cache;
    switch (a->head_dim) {
    case 64: return ft_launch<64, true>(a, q, kc, vc, positions, T, out, st);
    case 128: return ft_launch<128, true>(a, q, kc, vc, positions, T, out, st);
    case 256: return ft_launch<256, true>(a, q, kc, vc, positions, T, out, st);
    default:
        if (a->head_dim < 64) return ft_launch<64, false>(a, q, kc, vc, positions, T, out, st);
        if (a->head_dim < 128) return ft_launch<128, false>(a, q, kc, vc, positions, T, out, st);
        return ft_launch<256, false>(a, q, kc, vc, positions, T, out, st);
    }
}
