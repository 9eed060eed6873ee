/* cuda_gemv_mma.cu — batch-1 GEMV y = x·W^T for MLX affine 4-bit and 8-bit weights on the tensor
 * cores (mma.sync m16n8k16, fp16 operands, fp32 accumulation), exact to ~fp32 level.
 *
 * Why: the fp32 decode of the scalar kernel (cuda_gemv.cu) costs ~3 instructions per weight and is
 * bound by instruction issue, not by memory. Here a weight is decoded to an exact fp16 integer with
 * ~1.1 (q4) / ~1.25 (q8) instructions (LOP3 of the nibble/byte into the mantissa of 1024.0, then one
 * HSUB2/HFMA2 per two weights), and the multiply-adds go to the tensor cores.
 *
 * Exactness: q is exact in fp16. x is split per segment (a scale group, or the part of one that a
 * super-step covers) into x·2^-e = hi + lo, both fp16, with 2^e chosen from the segment's max |x| so
 * hi cannot overflow: 22 significant bits, products exact, fp32 accumulation. The group's affine
 * form is s·2^e·Σ(q·(hi+lo)) + b·Σx (Σx in fp32).
 *
 * Layout: A = 16 weight rows (a warp's tile), B = [16 k x 8 columns]: column 2G / 2G+1 carry the hi /
 * lo parts of x for the elements of local group G of the super-step (zero elsewhere), so one mma
 * sums up to 4 groups separately; lane t of the output holds group t. The k order inside a
 * super-step is permuted to match the decode (any order works for a dot product as long as A and B
 * agree); the x fragments are built once per block in shared memory in that order.
 * A super-step is 64 bytes of each of the 16 rows (lane t of a row's 4 lanes loads 16 bytes);
 * a block of 8 warps splits the super-steps of one tile, then loops over tiles.
 */
#include "backend/cuda/cuda_common.cuh"

#include <pthread.h>

#define QMMA_WARPS 8
#define QMMA_THREADS (QMMA_WARPS * 32)

__device__ __forceinline__ void qmma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                           uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t qmma_h2sub(uint32_t v, uint32_t c) {
    __half2 r = __hsub2(*reinterpret_cast<__half2 *>(&v), *reinterpret_cast<__half2 *>(&c));
    return *reinterpret_cast<uint32_t *>(&r);
}
__device__ __forceinline__ uint32_t qmma_h2fma(uint32_t v, uint32_t m, uint32_t c) {
    __half2 r = __hfma2(*reinterpret_cast<__half2 *>(&v), *reinterpret_cast<__half2 *>(&m),
                        *reinterpret_cast<__half2 *>(&c));
    return *reinterpret_cast<uint32_t *>(&r);
}

/* Decodes one 32-bit word into fp16x2 registers holding exact q values.
 * 4 bits: h[s] = (nibble s, nibble s+4), s = 0..3. 8 bits: h[0] = (byte 0, byte 2), h[1] = (byte 1, byte 3). */
template <int BITS>
__device__ __forceinline__ void qmma_decode(uint32_t w, uint32_t magic, uint32_t (&h)[4]) {
    const uint32_t k1024 = 0x64006400u; /* (1024, 1024) */
    if (BITS == 4) {
        const uint32_t k16 = 0x2C002C00u;  /* (1/16, 1/16) */
        const uint32_t km64 = 0xD400D400u; /* (-64, -64) */
        const uint32_t w8 = w >> 8;
        h[0] = qmma_h2sub((w & 0x000F000Fu) | magic, k1024);
        h[1] = qmma_h2fma((w & 0x00F000F0u) | magic, k16, km64);
        h[2] = qmma_h2sub((w8 & 0x000F000Fu) | magic, k1024);
        h[3] = qmma_h2fma((w8 & 0x00F000F0u) | magic, k16, km64);
    } else {
        h[0] = qmma_h2sub((w & 0x00FF00FFu) | magic, k1024);
        h[1] = qmma_h2sub(((w >> 8) & 0x00FF00FFu) | magic, k1024);
        h[2] = h[3] = 0;
    }
}

__device__ __forceinline__ float qmma_tof(float v) { return v; }
__device__ __forceinline__ float qmma_tof(__half v) { return __half2float(v); }
__device__ __forceinline__ float qmma_tof(__nv_bfloat16 v) { return __bfloat162float(v); }

/* QMMA_U: super-steps loaded per warp before decoding; ST: scale/bias type. lg_gs = log2(group size)
 * (all index arithmetic in the loop is shifts: integer division by a run-time group size cost more
 * than the decode in the first version). */
template <int BITS, int QMMA_U, typename ST>
__global__ void __launch_bounds__(QMMA_THREADS)
gemv_q_mma(const uint32_t *__restrict__ W, const ST *__restrict__ S, const ST *__restrict__ Bq,
           const void *__restrict__ lbias, int bdt, const float *__restrict__ x,
           float *__restrict__ y, int n, int k, int lg_gs, int accumulate, uint32_t magic) {
    constexpr int EPS = BITS == 4 ? 128 : 64; /* elements of a row per super-step (64 bytes) */
    constexpr int MPS = BITS == 4 ? 8 : 4;    /* mma per super-step */
    constexpr int CH = EPS / 4;               /* elements per lane chunk (16 bytes) */
    extern __shared__ uint4 qmma_smem[];
    const int nss = k / EPS;
    const int seglen = (1 << lg_gs) < EPS ? (1 << lg_gs) : EPS;
    const int gps = EPS / seglen; /* local groups (segments) per super-step: 1, 2 or 4 */
    const int nseg = k / seglen;
    uint2 *xf = reinterpret_cast<uint2 *>(qmma_smem);      /* [nss][MPS][4 t][2 parts] {b0, b1} */
    float *xsum = reinterpret_cast<float *>(xf + (size_t)nss * MPS * 8); /* [nseg] Σx */
    float *xscl = xsum + nseg;                                           /* [nseg] 2^e */
    __shared__ float red[QMMA_WARPS][16];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const size_t wpr = (size_t)k * BITS / 32; /* words per row */
    const int gpr = k >> lg_gs;
    /* group of (super-step ss, output lane t < gps): ((ss * gps) >> gsh) + tg */
    const int lg_eps = BITS == 4 ? 7 : 6;
    const int lg_gps = lg_gs < lg_eps ? lg_eps - lg_gs : 0;
    const int gsh = lg_gs > lg_eps ? lg_gs - lg_eps : 0;
    const int tg = gps > 1 ? t : 0;
    const int ntiles = (n + 15) / 16;
    /* B lane (g, t) supplies column g = part (g & 1) of local group g >> 1, for the k slots of
     * chunk t, whose elements lie in local group (t * CH) / seglen */
    const bool bval = (g >> 1) < gps && (gps > 1 ? (t * CH) / seglen : 0) == (g >> 1);
    const int bp = g & 1;

    uint4 wa[QMMA_U], wb[QMMA_U];
    float s0[QMMA_U], b0[QMMA_U], s1[QMMA_U], b1[QMMA_U];
    int tile = blockIdx.x;
    /* per-tile row bases: lane t's 16 bytes of rows g and g + 8, and their scale/bias rows */
    const uint4 *pw0 = NULL, *pw1 = NULL;
    const ST *ps0 = NULL, *pb0 = NULL, *ps1 = NULL, *pb1 = NULL;
    auto set_rows = [&](int tl) {
        const int r0c = min(tl * 16 + g, n - 1), r1c = min(tl * 16 + g + 8, n - 1);
        pw0 = reinterpret_cast<const uint4 *>(W + (size_t)r0c * wpr) + t;
        pw1 = reinterpret_cast<const uint4 *>(W + (size_t)r1c * wpr) + t;
        ps0 = S + (size_t)r0c * gpr + tg; pb0 = Bq + (size_t)r0c * gpr + tg;
        ps1 = S + (size_t)r1c * gpr + tg; pb1 = Bq + (size_t)r1c * gpr + tg;
    };
    auto load_batch = [&](int ss0) {
#pragma unroll
        for (int u = 0; u < QMMA_U; u++) {
            const int ss = ss0 + QMMA_WARPS * u;
            if (ss < nss) {
                wa[u] = lmx_cu_ld_stream(pw0 + ss * 4);
                wb[u] = lmx_cu_ld_stream(pw1 + ss * 4);
                if (t < gps) {
                    const int gg = (ss << lg_gps) >> gsh;
                    s0[u] = qmma_tof(ps0[gg]); b0[u] = qmma_tof(pb0[gg]);
                    s1[u] = qmma_tof(ps1[gg]); b1[u] = qmma_tof(pb1[gg]);
                }
            }
        }
    };
    if (tile < ntiles) {
        set_rows(tile);
        load_batch(warp); /* in flight while the x fragments are built */
    }

    /* ---- x fragments: each thread splits 8 consecutive elements; a segment (>= 32 elements) is
     * 4..16 consecutive threads of one warp, reduced by shuffles ---- */
    __half *xh = reinterpret_cast<__half *>(xf);
    const int tpseg = seglen / 8; /* threads per segment: 4, 8 or 16 */
    for (int base = 0; base < k; base += QMMA_THREADS * 8) { /* uniform trip count: full-warp shuffles */
        const int e0 = base + threadIdx.x * 8;
        const bool act = e0 < k; /* k % seglen == 0, so a segment is all active or all idle */
        const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
        const float4 va = act ? __ldg(reinterpret_cast<const float4 *>(x + e0)) : z4;
        const float4 vb = act ? __ldg(reinterpret_cast<const float4 *>(x + e0 + 4)) : z4;
        const float v[8] = {va.x, va.y, va.z, va.w, vb.x, vb.y, vb.z, vb.w};
        float sum = 0.f, mx = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) { sum += v[i]; mx = fmaxf(mx, fabsf(v[i])); }
        for (int o = 1; o < tpseg; o <<= 1) {
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        }
        /* 2^e with max|x|·2^-e < 2^15 (fp16 max 65504); 1 for an all-zero or non-finite segment */
        int ex = 0;
        if (mx > 0.f && mx <= 3.4e38f) { (void)frexpf(mx, &ex); ex -= 15; }
        const float scl = ldexpf(1.f, ex), inv = ldexpf(1.f, -ex);
        if (!act) continue;
        if ((e0 & (seglen - 1)) == 0) { const int seg = e0 / seglen; xsum[seg] = sum; xscl[seg] = scl; }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int e = e0 + i;
            const float vs = v[i] * inv;
            const __half hi = __float2half_rn(vs);
            const __half lo = __float2half_rn(vs - __half2float(hi));
            const int ss = e / EPS, r = e % EPS, tt = r / CH, c = r % CH;
            int m, reg, hp;
            if (BITS == 4) {
                const int nib = c & 7, s = nib & 3;
                m = 2 * (c >> 3) + (s >> 1); reg = s & 1; hp = nib >> 2;
            } else {
                const int by = c & 3;
                m = c >> 2; reg = by & 1; hp = by >> 1;
            }
            const size_t idx = ((size_t)((ss * MPS + m) * 4 + tt) * 2) * 4 + reg * 2 + hp;
            xh[idx] = hi;
            xh[idx + 4] = lo;
        }
    }
    __syncthreads();

    for (; tile < ntiles; tile += gridDim.x) {
        float acc0 = 0.f, acc1 = 0.f;
        for (int ss0 = warp; ss0 < nss; ss0 += QMMA_WARPS * QMMA_U) {
            if (ss0 != warp) load_batch(ss0); /* the tile's first batch is already loaded */
#pragma unroll
            for (int u = 0; u < QMMA_U; u++) {
                const int ss = ss0 + QMMA_WARPS * u;
                if (ss >= nss) break;
                float d[4] = {0.f, 0.f, 0.f, 0.f};
                const uint32_t A0[4] = {wa[u].x, wa[u].y, wa[u].z, wa[u].w};
                const uint32_t A1[4] = {wb[u].x, wb[u].y, wb[u].z, wb[u].w};
                const uint2 *xb = xf + (size_t)ss * MPS * 8 + t * 2 + bp;
#pragma unroll
                for (int wi = 0; wi < 4; wi++) {
                    uint32_t h0[4], h1[4];
                    qmma_decode<BITS>(A0[wi], magic, h0);
                    qmma_decode<BITS>(A1[wi], magic, h1);
                    if (BITS == 4) {
#pragma unroll
                        for (int hh = 0; hh < 2; hh++) {
                            const uint2 bb = bval ? xb[(2 * wi + hh) * 8] : make_uint2(0u, 0u);
                            qmma_16816(d, h0[2 * hh], h1[2 * hh], h0[2 * hh + 1], h1[2 * hh + 1], bb.x, bb.y);
                        }
                    } else {
                        const uint2 bb = bval ? xb[wi * 8] : make_uint2(0u, 0u);
                        qmma_16816(d, h0[0], h1[0], h0[1], h1[1], bb.x, bb.y);
                    }
                }
                if (t < gps) {
                    const int seg = ss * gps + t;
                    const float xs = xscl[seg], xm = xsum[seg];
                    acc0 = fmaf(s0[u] * xs, d[0] + d[1], fmaf(b0[u], xm, acc0));
                    acc1 = fmaf(s1[u] * xs, d[2] + d[3], fmaf(b1[u], xm, acc1));
                }
            }
        }
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, 1);
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, 2);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, 1);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, 2);
        if (t == 0) { red[warp][g] = acc0; red[warp][g + 8] = acc1; }
        __syncthreads();
        if (threadIdx.x < 16) {
            const int row = tile * 16 + threadIdx.x;
            if (row < n) {
                float s = 0.f;
#pragma unroll
                for (int w = 0; w < QMMA_WARPS; w++) s += red[w][threadIdx.x];
                if (lbias) s += lmx_cu_ld(lbias, row, bdt);
                y[row] = accumulate ? y[row] + s : s;
            }
        }
        const int next = tile + gridDim.x;
        if (next < ntiles) {
            set_rows(next);
            load_batch(warp);
        }
        __syncthreads(); /* red is reused */
    }
}

/* Shared memory bytes for k (0 if the kernel does not apply). */
static size_t qmma_smem_bytes(int bits, long k, int gs) {
    const long eps = bits == 4 ? 128 : 64, mps = bits == 4 ? 8 : 4;
    const long seglen = gs < eps ? gs : eps;
    return (size_t)(k / eps) * mps * 64 + (size_t)(k / seglen) * 8;
}

#define QMMA_MAX_SMEM (200 * 1024)
/* The opt-in to > 48 KB of dynamic shared memory, once per process for every instantiation (not
 * per launch: launches may be under stream capture), up to what the device allows (H100/H200:
 * 227 KB; smaller GPUs less). Shapes needing more than g_qmma_limit use the scalar kernel. */
static pthread_once_t g_qmma_once = PTHREAD_ONCE_INIT;
static size_t g_qmma_limit = 47 * 1024; /* written once under g_qmma_once (48 KB less static smem) */
template <int BITS, int U, typename ST> static void qmma_attr(cudaError_t *e, int bytes) {
    if (*e == cudaSuccess)
        *e = cudaFuncSetAttribute(gemv_q_mma<BITS, U, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
static void qmma_init(void) {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    int lim = optin - 1024; /* the kernel's static shared memory (512 bytes) and a margin */
    if (lim > QMMA_MAX_SMEM) lim = QMMA_MAX_SMEM;
    if (lim <= 48 * 1024) return;
    cudaError_t e = cudaSuccess;
    qmma_attr<4, 2, __nv_bfloat16>(&e, lim); qmma_attr<4, 2, __half>(&e, lim); qmma_attr<4, 2, float>(&e, lim);
    qmma_attr<4, 4, __nv_bfloat16>(&e, lim); qmma_attr<4, 4, __half>(&e, lim); qmma_attr<4, 4, float>(&e, lim);
    qmma_attr<8, 2, __nv_bfloat16>(&e, lim); qmma_attr<8, 2, __half>(&e, lim); qmma_attr<8, 2, float>(&e, lim);
    qmma_attr<8, 4, __nv_bfloat16>(&e, lim); qmma_attr<8, 4, __half>(&e, lim); qmma_attr<8, 4, float>(&e, lim);
    if (e == cudaSuccess) g_qmma_limit = (size_t)lim;
    else (void)cudaGetLastError();
}

extern "C" bool lmx_cuda_gemv_mma_applies(const lmx_cuda_matrix *m, const float *x, int batch) {
    if (batch != 1 || (m->bits != 4 && m->bits != 8)) return false;
    const long eps = m->bits == 4 ? 128 : 64;
    if (m->k % eps != 0 || m->k % m->group_size != 0) return false;
    if (m->group_size < (m->bits == 4 ? 32 : 16) || m->group_size % 8) return false;
    if (((uintptr_t)m->w & 15) || ((uintptr_t)x & 15)) return false;
    pthread_once(&g_qmma_once, qmma_init);
    return qmma_smem_bytes(m->bits, (long)m->k, m->group_size) <= g_qmma_limit;
}

template <int BITS, int U, typename ST>
static void qmma_launch(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate, int blocks,
                        size_t smem, cudaStream_t st) {
    int lg = 0;
    while ((1 << lg) < m->group_size) lg++;
    gemv_q_mma<BITS, U, ST><<<blocks, QMMA_THREADS, smem, st>>>((const uint32_t *)m->w, (const ST *)m->scales,
                                                               (const ST *)m->biases, m->bias, (int)m->bias_dtype,
                                                               x, y, (int)m->n, (int)m->k, lg, accumulate,
                                                               0x64006400u);
}
template <int BITS, int U>
static void qmma_launch_dt(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate, int blocks,
                           size_t smem, cudaStream_t st) {
    if (m->dtype == LMX_DTYPE_BF16) qmma_launch<BITS, U, __nv_bfloat16>(m, x, y, accumulate, blocks, smem, st);
    else if (m->dtype == LMX_DTYPE_F16) qmma_launch<BITS, U, __half>(m, x, y, accumulate, blocks, smem, st);
    else qmma_launch<BITS, U, float>(m, x, y, accumulate, blocks, smem, st);
}

extern "C" lmx_status lmx_cuda_gemv_mma(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                                        lmx_cuda_stream stream) {
    return lmx_cuda_gemv_mma_ex(m, x, y, accumulate, 0, 0, stream);
}

extern "C" lmx_status lmx_cuda_gemv_mma_ex(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                                           int unroll, int blocks_per_sm, lmx_cuda_stream stream) {
    if (unroll == 0) unroll = 2;
    if (blocks_per_sm == 0) blocks_per_sm = 4;
    if ((unroll != 2 && unroll != 4) || blocks_per_sm < 1 || blocks_per_sm > 64)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv mma: unroll %d (2, 4), blocks/SM %d", unroll,
                         blocks_per_sm);
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!x || !y) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv mma: NULL x/y");
    if (!lmx_cuda_gemv_mma_applies(m, x, 1))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv mma: %d-bit g%d k=%lld not supported",
                         m->bits, m->group_size, (long long)m->k);
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        sms = 132;
    const int ntiles = (int)((m->n + 15) / 16);
    const int blocks = ntiles < sms * blocks_per_sm ? ntiles : sms * blocks_per_sm;
    const size_t smem = qmma_smem_bytes(m->bits, (long)m->k, m->group_size);
    cudaStream_t st = LMX_CU_STREAM(stream);
    if (m->bits == 4) {
        if (unroll == 2) qmma_launch_dt<4, 2>(m, x, y, accumulate, blocks, smem, st);
        else qmma_launch_dt<4, 4>(m, x, y, accumulate, blocks, smem, st);
    } else {
        if (unroll == 2) qmma_launch_dt<8, 2>(m, x, y, accumulate, blocks, smem, st);
        else qmma_launch_dt<8, 4>(m, x, y, accumulate, blocks, smem, st);
    }
    LMX_CU_CHECK_LAUNCH("gemv mma");
    return LMX_OK;
}
