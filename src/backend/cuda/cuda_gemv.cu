/* cuda_gemv.cu — y = x·W^T for decode (batch 1..4 rows of x per launch), W dense (F32/F16/BF16)
 * or MLX affine-quantized (2..8 bits), fp32 accumulation.
 *
 * Layout of the work: a block of 128 threads (4 warps) owns R = 4 consecutive rows of W (for every
 * row of x); KSPLIT warps share one row group and split its K chunks, so a block covers
 * 4 / KSPLIT row groups. Each thread streams 16-byte chunks of the R rows (R independent loads in
 * flight, twice with the unroll), reuses one chunk of x for the R rows, then warps reduce through
 * shuffles and shared memory.
 *
 * Quantized decode without int->float conversions: a b-bit field masked in place inside a 16-bit
 * half of a word, OR-ed into the mantissa of 2^23, is exactly 2^23 + q*2^s; subtracting 2^23 gives
 * q*2^s, which multiplies x pre-scaled by 2^-s (exact power-of-two scaling). Per element this costs
 * one LOP3, one FADD and one FFMA. The affine form per group is s*Σ(x·q) + b*Σx.
 * Bit widths 3/5/6 (and 2-bit rows whose length is not a multiple of 64) use a generic bitstream
 * path over 32-element packs. Batch-1 q4 shapes, and q8 from ~40 M weights, go to the streaming
 * tensor-core kernel of cuda_gemv_mma.cu instead (measured faster there: bench/notes/cuda-kernels.md).
 */
#include "backend/cuda/cuda_common.cuh"

#include <stdlib.h>

#define GEMV_THREADS 128
#define GEMV_R 4 /* rows per row group */

/* Final reduction: acc[r][b] summed over the warp, then over the KSPLIT warps of a row group. */
template <int BMAX>
__device__ __forceinline__ void gemv_reduce_store(float (&acc)[GEMV_R][BMAX], int row0, int n,
                                                  int batch, int ksplit, const void *lbias,
                                                  int bdt, float *y, int accumulate) {
    __shared__ float red[GEMV_THREADS / 32][GEMV_R][BMAX];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int b = 0; b < BMAX; b++) {
            float v = lmx_cu_warp_sum(acc[r][b]);
            if (lane == 0) red[warp][r][b] = v;
        }
    __syncthreads();
    /* threads 0.. of each row group's first warp finish: one thread per (r, b) */
    const int part = warp % ksplit;
    if (part != 0) return;
    const int t = lane;
    if (t >= GEMV_R * BMAX) return;
    const int r = t / BMAX, b = t % BMAX;
    const int row = row0 + r;
    if (row >= n || b >= batch) return;
    float s = 0.f;
    for (int w = warp; w < warp + ksplit; w++) s += red[w][r][b];
    if (lbias) s += lmx_cu_ld(lbias, row, bdt);
    float *dst = y + (size_t)b * n + row;
    *dst = accumulate ? *dst + s : s;
}

template <int BMAX> __device__ __forceinline__ void gemv_zero(float (&acc)[GEMV_R][BMAX]) {
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int b = 0; b < BMAX; b++) acc[r][b] = 0.f;
}

/* the E floats of x at xp (16-byte aligned), read through the read-only cache */
template <int E> __device__ __forceinline__ void gemv_load_x(const float *xp, float (&xs)[E]) {
    const float4 *p = reinterpret_cast<const float4 *>(xp);
#pragma unroll
    for (int i = 0; i < E / 4; i++) {
        float4 v = __ldg(p + i);
        xs[4 * i] = v.x; xs[4 * i + 1] = v.y; xs[4 * i + 2] = v.z; xs[4 * i + 3] = v.w;
    }
}

/* ---- dense ---- */
template <typename WT> struct dense_traits;
template <> struct dense_traits<float> {
    static constexpr int E = 4;
    __device__ static __forceinline__ void unpack(const uint4 &w, float (&f)[4]) {
        f[0] = __uint_as_float(w.x); f[1] = __uint_as_float(w.y);
        f[2] = __uint_as_float(w.z); f[3] = __uint_as_float(w.w);
    }
};
template <> struct dense_traits<__nv_bfloat16> {
    static constexpr int E = 8;
    __device__ static __forceinline__ void unpack(const uint4 &w, float (&f)[8]) {
        const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = __uint_as_float(u[i] << 16);
            f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        }
    }
};
template <> struct dense_traits<__half> {
    static constexpr int E = 8;
    __device__ static __forceinline__ void unpack(const uint4 &w, float (&f)[8]) {
        const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            __half2 h = *reinterpret_cast<const __half2 *>(&u[i]);
            float2 v = __half22float2(h);
            f[2 * i] = v.x;
            f[2 * i + 1] = v.y;
        }
    }
};

template <typename WT, int BMAX>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_dense(const WT *__restrict__ W, const float *__restrict__ x, float *__restrict__ y,
           const void *__restrict__ lbias, int bdt, int n, int k, int batch, int ksplit,
           int accumulate) {
    constexpr int E = dense_traits<WT>::E;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int groups_per_block = (GEMV_THREADS / 32) / ksplit;
    const int row0 = (blockIdx.x * groups_per_block + warp / ksplit) * GEMV_R;
    const int part = warp % ksplit;
    const int chunks = k / E;
    float acc[GEMV_R][BMAX];
    gemv_zero(acc);
    const WT *rows[GEMV_R];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++) rows[r] = W + (size_t)min(row0 + r, n - 1) * k;
#pragma unroll (BMAX == 1 ? 2 : 1)
    for (int c = part * 32 + lane; c < chunks; c += ksplit * 32) {
        uint4 wv[GEMV_R];
#pragma unroll
        for (int r = 0; r < GEMV_R; r++) wv[r] = lmx_cu_ld_stream(rows[r] + (size_t)c * E);
#pragma unroll
        for (int b = 0; b < BMAX; b++) {
            if (b >= batch) break;
            float xs[E];
            gemv_load_x(x + (size_t)b * k + (size_t)c * E, xs);
#pragma unroll
            for (int r = 0; r < GEMV_R; r++) {
                float f[E];
                dense_traits<WT>::unpack(wv[r], f);
                float a = acc[r][b];
#pragma unroll
                for (int i = 0; i < E; i++) a = fmaf(f[i], xs[i], a);
                acc[r][b] = a;
            }
        }
    }
    gemv_reduce_store<BMAX>(acc, row0, n, batch, ksplit, lbias, bdt, y, accumulate);
}

/* Any k, any alignment: one warp per row, scalar loads. */
__global__ void gemv_dense_generic(const void *__restrict__ W, int wdt, const float *__restrict__ x,
                                   float *__restrict__ y, const void *__restrict__ lbias, int bdt, int n,
                                   int k, int batch, int accumulate) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    if (row >= n) return;
    for (int b = 0; b < batch; b++) {
        float a = 0.f;
        for (int i = lane; i < k; i += 32)
            a = fmaf(lmx_cu_ld(W, (size_t)row * k + i, wdt), x[(size_t)b * k + i], a);
        a = lmx_cu_warp_sum(a);
        if (lane == 0) {
            if (lbias) a += lmx_cu_ld(lbias, row, bdt);
            float *dst = y + (size_t)b * n + row;
            *dst = accumulate ? *dst + a : a;
        }
    }
}

/* ---- quantized, 2/4/8 bits, 16-byte chunks ---- */
template <int BITS, int BMAX>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_q_fast(const uint32_t *__restrict__ W, const void *__restrict__ S, const void *__restrict__ Bq,
            const void *__restrict__ lbias, int dt, int bdt, const float *__restrict__ x,
            float *__restrict__ y, int n, int k, int gs, int batch, int ksplit, int accumulate,
            uint32_t magic) {
    constexpr int EPW = 32 / BITS;  /* elements per word */
    constexpr int E = 4 * EPW;      /* elements per 16-byte chunk */
    constexpr int HALF = 16 / BITS; /* elements per 16-bit half word */
    constexpr uint32_t MASK = (1u << BITS) - 1u;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int groups_per_block = (GEMV_THREADS / 32) / ksplit;
    const int row0 = (blockIdx.x * groups_per_block + warp / ksplit) * GEMV_R;
    const int part = warp % ksplit;
    const int chunks = k / E;
    const size_t wpr = (size_t)k * BITS / 32; /* words per row */
    const int gpr = k / gs;                   /* groups per row */
    /* chunks span two groups only for 2-bit with group size 32 */
    const bool two_groups = E > gs;
    float acc[GEMV_R][BMAX];
    gemv_zero(acc);
    int rows[GEMV_R];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++) rows[r] = min(row0 + r, n - 1);
#pragma unroll (BMAX == 1 ? 2 : 1)
    for (int c = part * 32 + lane; c < chunks; c += ksplit * 32) {
        uint4 wv[GEMV_R];
#pragma unroll
        for (int r = 0; r < GEMV_R; r++) wv[r] = lmx_cu_ld_stream(W + rows[r] * wpr + (size_t)c * 4);
        const int g = (c * E) / gs;
        float sc[GEMV_R][2], bi[GEMV_R][2];
#pragma unroll
        for (int r = 0; r < GEMV_R; r++) {
            size_t gi = (size_t)rows[r] * gpr + g;
            sc[r][0] = lmx_cu_ld(S, gi, dt);
            bi[r][0] = lmx_cu_ld(Bq, gi, dt);
            if (two_groups) {
                sc[r][1] = lmx_cu_ld(S, gi + 1, dt);
                bi[r][1] = lmx_cu_ld(Bq, gi + 1, dt);
            } else {
                sc[r][1] = sc[r][0];
                bi[r][1] = bi[r][0];
            }
        }
#pragma unroll
        for (int b = 0; b < BMAX; b++) {
            if (b >= batch) break;
            float xs[E];
            gemv_load_x(x + (size_t)b * k + (size_t)c * E, xs);
            float xsum0 = 0.f, xsum1 = 0.f; /* Σx over the chunk's first / second half */
#pragma unroll
            for (int i = 0; i < E; i++) {
                if (i < E / 2) xsum0 += xs[i]; else xsum1 += xs[i];
                /* pre-scale by 2^-(BITS * position within its 16-bit half) */
                xs[i] *= __uint_as_float((uint32_t)(127 - BITS * (i % HALF)) << 23);
            }
#pragma unroll
            for (int r = 0; r < GEMV_R; r++) {
                const uint32_t wd[4] = {wv[r].x, wv[r].y, wv[r].z, wv[r].w};
                float p0 = 0.f, p1 = 0.f; /* Σ x·q over the two halves of the chunk */
#pragma unroll
                for (int wi = 0; wi < 4; wi++) {
                    const uint32_t lo = wd[wi], hi = wd[wi] >> 16;
                    float p = 0.f;
#pragma unroll
                    for (int j = 0; j < EPW; j++) {
                        const uint32_t src = j < HALF ? lo : hi;
                        const int sh = BITS * (j % HALF);
                        /* magic = 0x4B000000 passed at run time: one LOP3 (a & imm) | reg */
                        const float v = __uint_as_float((src & (MASK << sh)) | magic) - 8388608.f;
                        p = fmaf(v, xs[wi * EPW + j], p);
                    }
                    if (wi < 2) p0 += p; else p1 += p;
                }
                float a = acc[r][b];
                a = fmaf(sc[r][0], p0, a);
                a = fmaf(sc[r][1], p1, a);
                a = fmaf(bi[r][0], xsum0, a);
                a = fmaf(bi[r][1], xsum1, a);
                acc[r][b] = a;
            }
        }
    }
    gemv_reduce_store<BMAX>(acc, row0, n, batch, ksplit, lbias, bdt, y, accumulate);
}

/* ---- quantized, any bit width: 32-element packs of BITS words ---- */
template <int BITS, int BMAX>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_q_generic(const uint32_t *__restrict__ W, const void *__restrict__ S,
               const void *__restrict__ Bq, const void *__restrict__ lbias, int dt, int bdt,
               const float *__restrict__ x, float *__restrict__ y, int n, int k, int gs, int batch,
               int ksplit, int accumulate, uint32_t magic) {
    constexpr uint32_t MASK = (1u << BITS) - 1u;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int groups_per_block = (GEMV_THREADS / 32) / ksplit;
    const int row0 = (blockIdx.x * groups_per_block + warp / ksplit) * GEMV_R;
    const int part = warp % ksplit;
    const int packs = k / 32;
    const size_t wpr = (size_t)k * BITS / 32;
    const int gpr = k / gs;
    float acc[GEMV_R][BMAX];
    gemv_zero(acc);
    int rows[GEMV_R];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++) rows[r] = min(row0 + r, n - 1);
    for (int pk = part * 32 + lane; pk < packs; pk += ksplit * 32) {
        uint32_t wd[GEMV_R][BITS];
#pragma unroll
        for (int r = 0; r < GEMV_R; r++)
#pragma unroll
            for (int i = 0; i < BITS; i++) wd[r][i] = __ldg(W + rows[r] * wpr + (size_t)pk * BITS + i);
        const int g = (pk * 32) / gs;
#pragma unroll
        for (int b = 0; b < BMAX; b++) {
            if (b >= batch) break;
            const float *xp = x + (size_t)b * k + (size_t)pk * 32;
            float xsum = 0.f;
#pragma unroll
            for (int i = 0; i < 32; i++) xsum += __ldg(xp + i);
#pragma unroll
            for (int r = 0; r < GEMV_R; r++) {
                float p = 0.f;
#pragma unroll
                for (int e = 0; e < 32; e++) {
                    const int bit = e * BITS, wi = bit / 32, off = bit % 32;
                    uint32_t v = wd[r][wi] >> off;
                    if (off + BITS > 32) v |= wd[r][wi + 1] << (32 - off);
                    const float q = __uint_as_float((v & MASK) | magic) - 8388608.f;
                    p = fmaf(q, __ldg(xp + e), p);
                }
                const size_t gi = (size_t)rows[r] * gpr + g;
                acc[r][b] = fmaf(lmx_cu_ld(S, gi, dt), p, fmaf(lmx_cu_ld(Bq, gi, dt), xsum, acc[r][b]));
            }
        }
    }
    gemv_reduce_store<BMAX>(acc, row0, n, batch, ksplit, lbias, bdt, y, accumulate);
}

/* ---- host side ---- */

extern "C" lmx_status lmx_cuda_matrix_check(const lmx_cuda_matrix *m) {
    if (!m) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: NULL");
    if (!m->w) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: NULL weights");
    if (m->n <= 0 || m->k <= 0 || m->n > INT32_MAX || m->k > INT32_MAX)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: bad shape [%lld, %lld]",
                         (long long)m->n, (long long)m->k);
    if (!lmx_cu_float_dtype(m->dtype))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: dtype %d is not F32/F16/BF16",
                         (int)m->dtype);
    if (m->bias && !lmx_cu_float_dtype(m->bias_dtype))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: bias dtype %d is not F32/F16/BF16",
                         (int)m->bias_dtype);
    if (m->bits == 0) return LMX_OK;
    if (m->bits < 2 || m->bits > 8 || m->bits == 7)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: %d-bit quantization unsupported", m->bits);
    if (m->group_size != 32 && m->group_size != 64 && m->group_size != 128)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: group size %d unsupported", m->group_size);
    if (m->k % m->group_size)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: k=%lld not a multiple of group size %d",
                         (long long)m->k, m->group_size);
    if (!m->scales || !m->biases)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda matrix: quantized without scales/biases");
    return LMX_OK;
}

/* Warps per row group: enough K chunks for each lane to stream >= 2 chunks. */
static int gemv_ksplit(long chunks) {
    if (chunks >= 256) return 4;
    if (chunks >= 128) return 2;
    return 1;
}
/* Quantized rows are compute-heavier: measured on an H200 (bench/notes/cuda-kernels.md), 2 warps
 * per row group beat 4 at K = 4096 and 14336, and 1 wins for very tall matrices (lm_head). */
static int gemv_ksplit_quant(long chunks, long n) {
    if (n >= 65536) return 1;
    return chunks >= 128 ? 2 : 1;
}

template <int BMAX>
static void gemv_launch(const lmx_cuda_matrix *m, const float *x, float *y, int batch,
                        int accumulate, int ks_force, cudaStream_t st) {
    const int n = (int)m->n, k = (int)m->k, dt = (int)m->dtype, bdt = (int)m->bias_dtype;
    const int row_groups = (n + GEMV_R - 1) / GEMV_R;
    if (m->bits == 0) {
        const int esz = m->dtype == LMX_DTYPE_F32 ? 4 : 2;
        const int E = 16 / esz;
        if (k % E != 0 || ((uintptr_t)m->w & 15) || ((uintptr_t)x & 15)) {
            gemv_dense_generic<<<(n + 3) / 4, 128, 0, st>>>(m->w, dt, x, y, m->bias, bdt, n, k, batch,
                                                             accumulate);
            return;
        }
        const int ks = ks_force ? ks_force : gemv_ksplit(k / E);
        const int blocks = (row_groups + (4 / ks) - 1) / (4 / ks);
        if (m->dtype == LMX_DTYPE_BF16)
            gemv_dense<__nv_bfloat16, BMAX><<<blocks, GEMV_THREADS, 0, st>>>(
                (const __nv_bfloat16 *)m->w, x, y, m->bias, bdt, n, k, batch, ks, accumulate);
        else if (m->dtype == LMX_DTYPE_F16)
            gemv_dense<__half, BMAX><<<blocks, GEMV_THREADS, 0, st>>>(
                (const __half *)m->w, x, y, m->bias, bdt, n, k, batch, ks, accumulate);
        else
            gemv_dense<float, BMAX><<<blocks, GEMV_THREADS, 0, st>>>(
                (const float *)m->w, x, y, m->bias, bdt, n, k, batch, ks, accumulate);
        return;
    }
    const uint32_t *W = (const uint32_t *)m->w;
    const int gs = m->group_size, bits = m->bits;
    const bool aligned = !((uintptr_t)m->w & 15) && !((uintptr_t)x & 15);
    const int E = 4 * (32 / (bits == 3 || bits == 5 || bits == 6 ? 1 : bits));
    if ((bits == 2 || bits == 4 || bits == 8) && aligned && k % E == 0) {
        const int ks = ks_force ? ks_force : gemv_ksplit_quant(k / E, n);
        const int blocks = (row_groups + (4 / ks) - 1) / (4 / ks);
#define LMX_QF(B)                                                                                  \
    gemv_q_fast<B, BMAX><<<blocks, GEMV_THREADS, 0, st>>>(W, m->scales, m->biases, m->bias, dt, bdt, x, \
                                                          y, n, k, gs, batch, ks, accumulate, 0x4B000000u)
        if (bits == 4) LMX_QF(4);
        else if (bits == 8) LMX_QF(8);
        else LMX_QF(2);
#undef LMX_QF
        return;
    }
    const int ks = ks_force ? ks_force : gemv_ksplit(k / 32);
    const int blocks = (row_groups + (4 / ks) - 1) / (4 / ks);
#define LMX_QG(B)                                                                                     \
    gemv_q_generic<B, BMAX><<<blocks, GEMV_THREADS, 0, st>>>(W, m->scales, m->biases, m->bias, dt, bdt, x, \
                                                             y, n, k, gs, batch, ks, accumulate, 0x4B000000u)
    switch (bits) {
    case 2: LMX_QG(2); break;
    case 3: LMX_QG(3); break;
    case 4: LMX_QG(4); break;
    case 5: LMX_QG(5); break;
    case 6: LMX_QG(6); break;
    default: LMX_QG(8); break;
    }
#undef LMX_QG
}

extern "C" lmx_status lmx_cuda_gemv(const lmx_cuda_matrix *m, const float *x, float *y, int batch,
                                    bool accumulate, lmx_cuda_stream stream) {
    return lmx_cuda_gemv_ksplit(m, x, y, batch, accumulate, 0, stream);
}

extern "C" lmx_status lmx_cuda_gemv_ksplit(const lmx_cuda_matrix *m, const float *x, float *y, int batch,
                                           bool accumulate, int ksplit, lmx_cuda_stream stream) {
    if (ksplit < -2 || ksplit == 3 || ksplit > 4)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv: ksplit %d (-2, -1, 0, 1, 2 or 4)", ksplit);
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!x || !y || batch < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv: NULL x/y or batch %d", batch);
    /* batch 1: the streaming tensor-core kernel (cuda_gemv_mma.cu) for q4 wherever it applies and for
     * q8 from ~40 M weights (gate/up/down/lm_head; smaller q8 matrices measured faster on
     * gemv_q_fast); dense bf16 stays on gemv_dense, as fast or faster (bench/notes/cuda-kernels.md,
     * "gemv"); ksplit -1 forces the streaming kernel wherever it applies */
    const bool mma_pref = m->bits == 4 || (m->bits == 8 && m->n * m->k >= ((int64_t)40 << 20));
    if ((ksplit == -1 || (ksplit == 0 && mma_pref)) && lmx_cuda_gemv_mma_applies(m, x, batch))
        return lmx_cuda_gemv_mma(m, x, y, accumulate, stream);
    if (ksplit < 0) ksplit = 0;
    cudaStream_t st = LMX_CU_STREAM(stream);
    for (int b0 = 0; b0 < batch; b0 += 4) {
        const int nb = batch - b0 < 4 ? batch - b0 : 4;
        const float *xb = x + (size_t)b0 * m->k;
        float *yb = y + (size_t)b0 * m->n;
        if (nb == 1) gemv_launch<1>(m, xb, yb, 1, accumulate, ksplit, st);
        else gemv_launch<4>(m, xb, yb, nb, accumulate, ksplit, st);
        LMX_CU_CHECK_LAUNCH("gemv");
    }
    return LMX_OK;
}
