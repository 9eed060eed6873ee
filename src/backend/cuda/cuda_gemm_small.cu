/* cuda_gemm_small.cu — Y[T, N] = X[T, K]·W^T (+ bias) (+ Y) for a few dozen rows (batched decode steps:
 * one row per sequence, T up to 64 per pass; and, grouped, each expert's rows of a mixture-of-experts
 * prefill: lmx_cuda_moe_gemm) over MLX affine 4-bit / 8-bit weights that are read ONCE per 64 rows: the weights stream from memory straight into mma.sync A fragments (no bf16 copy of the
 * matrix, unlike the cuBLASLt path's expansion), the rows of X are the n dimension of m16n8k16.
 *
 * Bytes (why this shape): a 64-row decode step of a Llama-3-8B q4 g64 model moves ~4.5 GB of weights
 * (~1.5 ms at 3 TB/s) and ~1 TFLOP (64 rows): each weight must be fetched once, dequantized once per
 * block, and multiplied against all rows from registers; X (T x K, small) is staged as bf16 in shared
 * memory per 256-k chunk and re-read by every block from L2.
 *
 * Layout: block = 8 warps, 128 MT weight rows (warp w: MT A tiles of 16 rows; MT = 2 from 17 rows of X on,
 * so each x fragment read from shared memory feeds two MMAs), one slice of K
 * (split-K when the row blocks alone do not fill the GPU: about 2 blocks per SM; partial sums then go to
 * a workspace and a second launch adds the slices in slice order, so the result is deterministic and a
 * row's result does not depend on T). A super-step is 128 k: lane (g, c) loads 16 (q4) or 32 (q8) bytes of
 * rows g and g+8 at k = 32c.., i.e. the 4 weights k0..k0+3 (k0 = 32c + 4u) of each of the 8 k16-steps u;
 * the MMA's k order is permuted accordingly (virtual k 2c, 2c+1 ↔ k0, k0+1; 2c+8, 2c+9 ↔ k0+2, k0+3) and
 * X is stored in shared memory in exactly that fragment order (16 bytes per lane and k16-step pair,
 * consecutive lanes adjacent: conflict-free). A scale group (32, 64 or 128) never straddles a lane's 32
 * weights, so each lane needs one (scale, bias) per row and super-step. Weights are dequantized to
 * bf16(fmaf(s, q, b)) (the cuBLASLt path's expansion) and X rounded to bf16: bf16-level error, like the
 * prefill GEMM. The next super-step's weights are loaded while the current one computes.
 */
#include "backend/cuda/cuda_common.cuh"
#include "formats/quant_mode.h"

#define SG_WARPS 8
#define SG_THREADS (SG_WARPS * 32)
#define SG_BN (SG_WARPS * 16) /* weight rows per block and m-tile per warp */
#define SG_SS 128             /* k per super-step */
#define SG_CH 2               /* super-steps per staged X chunk */
#define SG_MAXT 64            /* rows of X per pass */

__device__ __forceinline__ void sg_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t sg_pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *reinterpret_cast<const uint32_t *>(&v);
}

/* u32 words of one row per lane and super-step: q4 4 (32 weights), q8 8 */
template <int BITS> struct sg_fmt {
    static constexpr int WPL = BITS == 4 ? 4 : 8;
    static constexpr int ROW_WORDS_SS = SG_SS * BITS / 32; /* words of a row per super-step */
};

/* X chunk [SG_CH][NT][4][32] uint4: entry (ssl, nt, j, lane = 4g + c) = bf16 of X[8nt + g][kc + 128 ssl + 32c +
 * 8j .. + 7] (zero past T or the slice) */
template <int NT>
__device__ __forceinline__ void sg_stage_x(uint4 *xs, const float *__restrict__ X, int T, int K, int64_t kc,
                                           int64_t k_end) {
    constexpr int N_ENT = SG_CH * NT * 4 * 32;
    for (int e = threadIdx.x; e < N_ENT; e += SG_THREADS) {
        const int lane = e & 31, j = (e >> 5) & 3, nt = (e >> 7) % NT, ssl = (e >> 7) / NT;
        const int g = lane >> 2, c = lane & 3, t = nt * 8 + g;
        const int64_t k = kc + (int64_t)ssl * SG_SS + 32 * c + 8 * j;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (t < T && k < k_end) {
            const float4 a = *reinterpret_cast<const float4 *>(X + (size_t)t * K + k);
            const float4 b = *reinterpret_cast<const float4 *>(X + (size_t)t * K + k + 4);
            v = make_uint4(sg_pack(a.x, a.y), sg_pack(a.z, a.w), sg_pack(b.x, b.y), sg_pack(b.z, b.w));
        }
        xs[e] = v;
    }
}

/* sg_stage_x for rows gathered by index: row t of the tile is X[xrow[t]] (xrow in shared memory) */
template <int NT>
__device__ __forceinline__ void sg_stage_x_rows(uint4 *xs, const float *__restrict__ X, const int *xrow, int T, int K,
                                                int64_t kc, int64_t k_end) {
    constexpr int N_ENT = SG_CH * NT * 4 * 32;
    for (int e = threadIdx.x; e < N_ENT; e += SG_THREADS) {
        const int lane = e & 31, j = (e >> 5) & 3, nt = (e >> 7) % NT, ssl = (e >> 7) / NT;
        const int g = lane >> 2, c = lane & 3, t = nt * 8 + g;
        const int64_t k = kc + (int64_t)ssl * SG_SS + 32 * c + 8 * j;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (t < T && k < k_end) {
            const float *xp = X + (size_t)xrow[t] * K + k;
            const float4 a = *reinterpret_cast<const float4 *>(xp);
            const float4 b = *reinterpret_cast<const float4 *>(xp + 4);
            v = make_uint4(sg_pack(a.x, a.y), sg_pack(a.z, a.w), sg_pack(b.x, b.y), sg_pack(b.z, b.w));
        }
        xs[e] = v;
    }
}

/* The grouped form (mixture of experts): block (row block, expert e, z) multiplies expert e's matrix
 * (at e * N rows of the stack) with entries start[e] + 64 z .. of the route order, whose x rows are
 * X[order[i] / topk] (gather) or X[i]; the output rows are Y[i]. */
typedef struct sg_group {
    const int32_t *start, *order;
    int topk, gather;
} sg_group;

/* the 4 weights of k16-step u (k0 = 32c + 4u) of one row from the lane's words, dequantized: (lo, hi) pairs
 * p01 = (w[k0], w[k0+1]), p23 = (w[k0+2], w[k0+3]) */
template <int BITS>
__device__ __forceinline__ void sg_deq(const uint32_t (&w)[sg_fmt<BITS>::WPL], int u, float s, float b, uint32_t &p01,
                                       uint32_t &p23) {
    /* q as the mantissa of 2^23 (0x4B000000 | q = 2^23 + q exactly), minus 2^23: full-rate integer and
     * FADD work instead of the quarter-rate I2F conversion */
    float q[4];
    if constexpr (BITS == 4) {
        const uint32_t v = w[u >> 1] >> (16 * (u & 1)); /* nibbles 4(u&1).. of word u/2 */
#pragma unroll
        for (int i = 0; i < 4; i++) q[i] = __uint_as_float(((v >> (4 * i)) & 15u) | 0x4B000000u) - 8388608.0f;
    } else {
        const uint32_t v = w[u];
#pragma unroll
        for (int i = 0; i < 4; i++) q[i] = __uint_as_float(__byte_perm(v, 0x4B000000u, 0x7650u + i)) - 8388608.0f;
    }
    p01 = sg_pack(fmaf(s, q[0], b), fmaf(s, q[1], b));
    p23 = sg_pack(fmaf(s, q[2], b), fmaf(s, q[3], b));
}

/* the weights of one super-step for a lane: rows 16 mt + g + 8 h (h = 0, 1) of the warp's MT m-tiles */
template <int BITS, int MT> struct sg_regs {
    uint32_t w[2 * MT][sg_fmt<BITS>::WPL];
    float s[2 * MT], b[2 * MT]; /* their scale / bias of this super-step */
};

/* grid (row blocks of 128 MT rows, slices); NT n-tiles of 8 rows of X (T <= 8 NT); out: Y (ws NULL) or
 * the slice's partial sums ws[slice][T][N] */
template <int BITS, int NT, int MT, bool GR>
__global__ void __launch_bounds__(SG_THREADS, MT == 1 ? 2 : 1)
sg_kernel(const float *__restrict__ X, int T, int K, const uint32_t *__restrict__ W, const void *__restrict__ S,
          const void *__restrict__ Bq, int sdt, int gs, const void *__restrict__ lbias, int bdt, float *Y, int N,
          int accumulate, float *__restrict__ ws, sg_group grp) {
    __shared__ uint4 xs[SG_CH * NT * 4 * 32];
    __shared__ int xrow[GR ? SG_MAXT : 1]; /* grouped: the tile's x rows */
    constexpr int WPL = sg_fmt<BITS>::WPL, RW = sg_fmt<BITS>::ROW_WORDS_SS, NR = 2 * MT;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
    if constexpr (GR) { /* this block's expert and entries; the matrix, scales, bias and Y moved to them */
        const int e = blockIdx.y, i0 = grp.start[e] + (int)blockIdx.z * SG_MAXT, i1 = grp.start[e + 1];
        if (i0 >= i1) return;
        T = i1 - i0 < SG_MAXT ? i1 - i0 : SG_MAXT;
        const size_t rows0 = (size_t)e * (size_t)N, es = sdt == LMX_CU_F32 ? 4 : 2;
        W += rows0 * ((size_t)K * BITS / 32);
        S = (const char *)S + rows0 * (size_t)(K / gs) * es;
        Bq = (const char *)Bq + rows0 * (size_t)(K / gs) * es;
        if (lbias) lbias = (const char *)lbias + rows0 * (bdt == LMX_CU_F32 ? 4 : 2);
        Y += (size_t)i0 * N;
        for (int i = threadIdx.x; i < T; i += SG_THREADS)
            xrow[i] = grp.gather ? grp.order[i0 + i] / grp.topk : i0 + i;
        __syncthreads();
    }
    const int n_ss = K / SG_SS, slice = GR ? 0 : blockIdx.y, n_slices = GR ? 1 : gridDim.y;
    const int ss0 = (int)((int64_t)slice * n_ss / n_slices), ss1 = (int)((int64_t)(slice + 1) * n_ss / n_slices);
    const int r0 = blockIdx.x * SG_BN * MT + warp * 16 * MT + g; /* row i of the lane: r0 + 8 i */
    const size_t row_words = (size_t)K * BITS / 32, groups = (size_t)(K / gs);
    const uint32_t *wp[NR];
    size_t srow[NR];
#pragma unroll
    for (int i = 0; i < NR; i++) {
        const int r = r0 + 8 * i < N ? r0 + 8 * i : N - 1; /* rows past N load a valid row, store nothing */
        wp[i] = W + (size_t)r * row_words + WPL * c;
        srow[i] = (size_t)r * groups;
    }

    auto load = [&](int ss, sg_regs<BITS, MT> &r) {
        const size_t gi = ((size_t)ss * SG_SS + 32 * c) / gs;
#pragma unroll
        for (int i = 0; i < NR; i++) {
#pragma unroll
            for (int k = 0; k < WPL; k += 4) {
                const uint4 v = lmx_cu_ld_stream(wp[i] + (size_t)ss * RW + k);
                r.w[i][k] = v.x; r.w[i][k + 1] = v.y; r.w[i][k + 2] = v.z; r.w[i][k + 3] = v.w;
            }
            r.s[i] = lmx_cu_ld(S, srow[i] + gi, sdt);
            r.b[i] = lmx_cu_ld(Bq, srow[i] + gi, sdt);
        }
    };
    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int n = 0; n < NT; n++) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
    auto compute = [&](int ssl, const sg_regs<BITS, MT> &r) {
        const uint4 *xl = xs + ssl * NT * 128 + lane;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t a[2][MT][4]; /* k16-step 2j + s, m-tile mt: rows 16 mt + g (a0, a2) and + 8 (a1, a3) */
#pragma unroll
            for (int s = 0; s < 2; s++)
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    sg_deq<BITS>(r.w[2 * mt], 2 * j + s, r.s[2 * mt], r.b[2 * mt], a[s][mt][0], a[s][mt][2]);
                    sg_deq<BITS>(r.w[2 * mt + 1], 2 * j + s, r.s[2 * mt + 1], r.b[2 * mt + 1], a[s][mt][1],
                                 a[s][mt][3]);
                }
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const uint4 xv = xl[(n * 4 + j) * 32]; /* steps 2j (x, y) and 2j + 1 (z, w) */
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    sg_mma(acc[mt][n], a[0][mt], xv.x, xv.y);
                    sg_mma(acc[mt][n], a[1][mt], xv.z, xv.w);
                }
            }
        }
    };
    sg_regs<BITS, MT> ra, rb;
    if (ss0 < ss1) load(ss0, ra);
    if (ss0 + 1 < ss1) load(ss0 + 1, rb);
    for (int ss = ss0; ss < ss1; ss += SG_CH) {
        __syncthreads(); /* the previous chunk is consumed */
        if constexpr (GR) sg_stage_x_rows<NT>(xs, X, xrow, T, K, (int64_t)ss * SG_SS, (int64_t)ss1 * SG_SS);
        else sg_stage_x<NT>(xs, X, T, K, (int64_t)ss * SG_SS, (int64_t)ss1 * SG_SS);
        __syncthreads();
        compute(0, ra);
        if (ss + 2 < ss1) load(ss + 2, ra);
        if (ss + 1 < ss1) {
            compute(1, rb);
            if (ss + 3 < ss1) load(ss + 3, rb);
        }
    }
    /* C fragments: (row 16 mt + g, X rows 2c, 2c+1), (row 16 mt + g + 8, same) of each n-tile */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = r0 + 16 * mt + (e < 2 ? 0 : 8), t = n * 8 + 2 * c + (e & 1);
                if (r >= N || t >= T) continue;
                const float v = acc[mt][n][e];
                if (ws) {
                    ws[((size_t)slice * T + t) * N + r] = v;
                } else {
                    float o = v + (lbias ? lmx_cu_ld(lbias, r, bdt) : 0.f);
                    float *dst = Y + (size_t)t * N + r;
                    *dst = accumulate ? *dst + o : o;
                }
            }
}

/* Y[t][r] = (Y) + bias + the slices' partial sums in slice order */
__global__ void sg_reduce_kernel(const float *__restrict__ ws, int n_slices, int T, int N,
                                 const void *__restrict__ lbias, int bdt, float *Y, int accumulate) {
    const size_t n = (size_t)T * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(i / N), r = (int)(i % N);
        float v = 0.f;
        for (int s = 0; s < n_slices; s++) v += ws[((size_t)s * T + t) * N + r];
        v += lbias ? lmx_cu_ld(lbias, r, bdt) : 0.f;
        float *dst = Y + (size_t)t * N + r;
        *dst = accumulate ? *dst + v : v;
    }
}

extern "C" bool lmx_cuda_gemm_small_supported(const lmx_cuda_matrix *m) {
    if (!m || (m->bits != 4 && m->bits != 8) || m->k % SG_SS != 0 || !lmx_cu_float_dtype(m->dtype))
        return false;
    if ((m->group_size != 32 && m->group_size != 64 && m->group_size != 128) || m->n < 1 || m->n > 0x7fffffff ||
        m->k > 0x7fffffff)
        return false;
    return lmx_cuda_matrix_check(m) == LMX_OK;
}

/* slices of K: about two blocks of 128 rows per SM in all (MT 2 blocks hold 256 rows: one per SM), at most
 * one slice per super-step; a function of the matrix only, so a row's sums do not depend on T */
static int sg_slices(const lmx_cuda_matrix *m) {
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const int64_t row_blocks = (m->n + SG_BN - 1) / SG_BN, want = 2 * (int64_t)sms;
    int64_t s = (want + row_blocks - 1) / row_blocks;
    const int64_t n_ss = m->k / SG_SS;
    if (s > n_ss) s = n_ss;
    if (s > 32) s = 32;
    return s < 1 ? 1 : (int)s;
}

extern "C" size_t lmx_cuda_gemm_small_workspace(const lmx_cuda_matrix *m, int T) {
    if (!lmx_cuda_gemm_small_supported(m) || T < 1) return 0;
    const int rows = T < SG_MAXT ? T : SG_MAXT, s = sg_slices(m);
    return s > 1 ? (size_t)s * (size_t)rows * (size_t)m->n : 0;
}

template <int BITS, int NT, int MT>
static void sg_launch(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool acc, float *ws, int slices,
                      cudaStream_t st) {
    const dim3 grid((unsigned)((m->n + SG_BN * MT - 1) / (SG_BN * MT)), (unsigned)slices);
    const sg_group none = {NULL, NULL, 1, 0};
    sg_kernel<BITS, NT, MT, false><<<grid, SG_THREADS, 0, st>>>(
        x, T, (int)m->k, (const uint32_t *)m->w, m->scales, m->biases, (int)m->dtype, m->group_size, m->bias,
        (int)m->bias_dtype, y, (int)m->n, acc ? 1 : 0, ws, none);
}

extern "C" lmx_status lmx_cuda_gemm_small(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate,
                                          float *ws, size_t ws_floats, lmx_cuda_stream stream) {
    if (!lmx_cuda_gemm_small_supported(m))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda small gemm: bits %d, group %d, k %lld", m ? m->bits : -1,
                         m ? m->group_size : -1, m ? (long long)m->k : -1LL);
    if (!x || !y || T < 1 || ((uintptr_t)x & 15))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda small gemm: NULL or unaligned x/y, or T %d", T);
    cudaStream_t st = LMX_CU_STREAM(stream);
    /* one pass per 64 rows of X (the weights are read once per pass); the workspace holds one pass */
    for (int t0 = 0; t0 < T; t0 += SG_MAXT) {
        const int rows = T - t0 < SG_MAXT ? T - t0 : SG_MAXT;
        int s = sg_slices(m); /* without room for the partial sums: one slice */
        if (s > 1 && (!ws || ws_floats < (size_t)s * (size_t)rows * (size_t)m->n)) s = 1;
        float *w = s > 1 ? ws : NULL;
        const float *xp = x + (size_t)t0 * m->k;
        float *yp = y + (size_t)t0 * m->n;
#define SG_GO(B)                                                                                              \
    do {                                                                                                      \
        if (rows <= 8) sg_launch<B, 1, 1>(m, xp, yp, rows, accumulate, w, s, st);                          \
        else if (rows <= 16) sg_launch<B, 2, 1>(m, xp, yp, rows, accumulate, w, s, st);                    \
        else if (rows <= 32) sg_launch<B, 4, 2>(m, xp, yp, rows, accumulate, w, s, st);                    \
        else sg_launch<B, 8, 2>(m, xp, yp, rows, accumulate, w, s, st);                                    \
    } while (0)
        if (m->bits == 4) SG_GO(4);
        else SG_GO(8);
#undef SG_GO
        LMX_CU_CHECK_LAUNCH("small gemm");
        if (s > 1) {
            const size_t n = (size_t)rows * (size_t)m->n;
            const unsigned blocks = (unsigned)((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
            sg_reduce_kernel<<<blocks, 256, 0, st>>>(w, s, rows, (int)m->n, m->bias, (int)m->bias_dtype, yp,
                                                     accumulate ? 1 : 0);
            LMX_CU_CHECK_LAUNCH("small gemm reduce");
        }
    }
    return LMX_OK;
}

/* ---- grouped (mixture of experts): cuda_kernels.h lmx_cuda_moe_gemm ---- */

extern "C" lmx_status lmx_cuda_moe_gemm(const lmx_cuda_experts *w, const float *x, bool gather, const lmx_cuda_moe *r,
                                        float *y, lmx_cuda_stream stream) {
    if (!w || !r || !r->table || w->mode != LMX_QUANT_AFFINE || !lmx_cuda_gemm_small_supported(&w->m))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda moe gemm: experts of %d bits, group %d, k %lld",
                         w ? w->m.bits : -1, w ? w->m.group_size : -1, w ? (long long)w->m.k : -1LL);
    if (!x || !y || ((uintptr_t)x & 15) || r->T < 1 || r->k < 1 || w->n_experts != r->E || r->E > 65535 ||
        (r->T + SG_MAXT - 1) / SG_MAXT > 65535)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda moe gemm: bad arguments (T %d, E %d)", r->T, r->E);
    int32_t *ids, *order, *pos, *start;
    lmx_cuda_moe_arrays(r, &ids, &order, &pos, &start);
    const sg_group grp = {start, order, r->k, gather ? 1 : 0};
    const lmx_cuda_matrix *m = &w->m;
    /* an expert receives at most T rows (a row routes to it once): ceil(T / 64) tiles each */
    const dim3 grid((unsigned)((m->n + SG_BN * 2 - 1) / (SG_BN * 2)), (unsigned)r->E,
                    (unsigned)((r->T + SG_MAXT - 1) / SG_MAXT));
    cudaStream_t st = LMX_CU_STREAM(stream);
#define SG_GR(B)                                                                                              \
    sg_kernel<B, 8, 2, true><<<grid, SG_THREADS, 0, st>>>(x, 0, (int)m->k, (const uint32_t *)m->w, m->scales,     \
                                                          m->biases, (int)m->dtype, m->group_size, m->bias,       \
                                                          (int)m->bias_dtype, y, (int)m->n, 0, NULL, grp)
    if (m->bits == 4) SG_GR(4);
    else SG_GR(8);
#undef SG_GR
    LMX_CU_CHECK_LAUNCH("moe gemm");
    return LMX_OK;
}
