/* cuda_gemm.cu — Y[T, N] = X[T, K]·W^T for prefill (T > 1) on the tensor cores: W dense
 * (F32/F16/BF16) or MLX affine-quantized (any of 2..8 bits) is dequantized tile by tile into
 * shared memory as bf16, X is rounded to bf16, products accumulate in fp32 (mma.sync m16n8k16).
 *
 * Block tile 64 (tokens) x 64 (features), K step 32; 4 warps, each a 32x32 sub-tile (2 x 4 MMA
 * tiles). Shared rows are padded to 40 bf16 so the fragment loads are bank-conflict free.
 * A first, simple version: no cp.async pipelining, one K step in flight (see the notes file).
 */
#include "backend/cuda/cuda_common.cuh"

#define GM_BM 64
#define GM_BN 64
#define GM_BK 32
#define GM_LD 40

__device__ __forceinline__ uint16_t f2bf_bits(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__global__ void __launch_bounds__(128)
gemm_tc_kernel(const float *__restrict__ X, int T, int K, const void *__restrict__ W,
               const void *__restrict__ S, const void *__restrict__ Bq, int dt, int bits, int gs,
               const void *__restrict__ lbias, int bdt, float *Y, int N, int accumulate) {
    __shared__ __align__(16) uint16_t Xs[GM_BM][GM_LD];
    __shared__ __align__(16) uint16_t Ws[GM_BN][GM_LD];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.y * GM_BM, n0 = blockIdx.x * GM_BN;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    const int gid = lane >> 2, tig = lane & 3;
    const uint32_t mask = bits ? (1u << bits) - 1u : 0u;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;
    const int lr = tid >> 1, lc = (tid & 1) * 16; /* this thread's 16 elements of each tile */
    for (int k0 = 0; k0 < K; k0 += GM_BK) {
        {   /* X tile -> bf16 */
            const int gr = m0 + lr;
#pragma unroll
            for (int i = 0; i < 16; i += 4) {
                float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                if (gr < T) v = *reinterpret_cast<const float4 *>(X + (size_t)gr * K + k0 + lc + i);
                Xs[lr][lc + i] = f2bf_bits(v.x);
                Xs[lr][lc + i + 1] = f2bf_bits(v.y);
                Xs[lr][lc + i + 2] = f2bf_bits(v.z);
                Xs[lr][lc + i + 3] = f2bf_bits(v.w);
            }
        }
        {   /* W tile -> bf16 (dequantized) */
            const int gn = n0 + lr;
            if (gn >= N) {
#pragma unroll
                for (int i = 0; i < 16; i++) Ws[lr][lc + i] = 0;
            } else if (bits == 0) {
#pragma unroll
                for (int i = 0; i < 16; i++) Ws[lr][lc + i] = f2bf_bits(lmx_cu_ld(W, (size_t)gn * K + k0 + lc + i, dt));
            } else {
                const uint32_t *row = (const uint32_t *)W + (size_t)gn * ((size_t)K * bits / 32);
                const size_t gi = (size_t)gn * (K / gs) + (k0 + lc) / gs;
                const float s = lmx_cu_ld(S, gi, dt), b = lmx_cu_ld(Bq, gi, dt);
#pragma unroll 4
                for (int i = 0; i < 16; i++) {
                    const int bit = (k0 + lc + i) * bits, wi = bit >> 5, off = bit & 31;
                    uint32_t q = row[wi] >> off;
                    if (off + bits > 32) q |= row[wi + 1] << (32 - off);
                    Ws[lr][lc + i] = f2bf_bits(fmaf(s, (float)(q & mask), b));
                }
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GM_BK; kk += 16) {
            uint32_t a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                const int r = wm + mi * 16 + gid;
                a[mi][0] = *reinterpret_cast<const uint32_t *>(&Xs[r][kk + tig * 2]);
                a[mi][1] = *reinterpret_cast<const uint32_t *>(&Xs[r + 8][kk + tig * 2]);
                a[mi][2] = *reinterpret_cast<const uint32_t *>(&Xs[r][kk + tig * 2 + 8]);
                a[mi][3] = *reinterpret_cast<const uint32_t *>(&Xs[r + 8][kk + tig * 2 + 8]);
            }
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int n = wn + ni * 8 + gid;
                b[ni][0] = *reinterpret_cast<const uint32_t *>(&Ws[n][kk + tig * 2]);
                b[ni][1] = *reinterpret_cast<const uint32_t *>(&Ws[n][kk + tig * 2 + 8]);
            }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++) mma_bf16(acc[mi][ni], a[mi], b[ni]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int row = m0 + wm + mi * 16 + gid + h * 8;
                if (row >= T) continue;
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int col = n0 + wn + ni * 8 + tig * 2 + j;
                    if (col >= N) continue;
                    float v = acc[mi][ni][h * 2 + j];
                    if (lbias) v += lmx_cu_ld(lbias, col, bdt);
                    float *dst = Y + (size_t)row * N + col;
                    *dst = accumulate ? *dst + v : v;
                }
            }
}

extern "C" lmx_status lmx_cuda_gemm(const lmx_cuda_matrix *m, const float *x, float *y, int T,
                                    bool accumulate, lmx_cuda_stream stream) {
    return lmx_cuda_gemm_ex(m, x, y, T, accumulate, 0, stream);
}

extern "C" lmx_status lmx_cuda_gemm_ex(const lmx_cuda_matrix *m, const float *x, float *y, int T,
                                       bool accumulate, int impl, lmx_cuda_stream stream) {
    if (impl != 1 && T >= 16) { /* cuBLASLt when present; its UNSUPPORTED answers fall back */
        lmx_status ls = lmx_cuda_gemm_lt(m, x, y, T, accumulate, stream);
        if (ls != LMX_ERR_UNSUPPORTED || impl == 2) return ls;
    }
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!x || !y || T < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemm: NULL x/y or T %d", T);
    if (m->k % GM_BK || ((uintptr_t)x & 15))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemm: k=%lld not a multiple of %d or x unaligned",
                         (long long)m->k, GM_BK);
    dim3 grid((unsigned)((m->n + GM_BN - 1) / GM_BN), (unsigned)((T + GM_BM - 1) / GM_BM));
    if (grid.y > 65535) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemm: T %d too large", T);
    gemm_tc_kernel<<<grid, 128, 0, LMX_CU_STREAM(stream)>>>(x, T, (int)m->k, m->w, m->scales, m->biases,
                                                           (int)m->dtype, m->bits, m->group_size, m->bias,
                                                           (int)m->bias_dtype, y, (int)m->n, accumulate);
    LMX_CU_CHECK_LAUNCH("gemm");
    return LMX_OK;
}
