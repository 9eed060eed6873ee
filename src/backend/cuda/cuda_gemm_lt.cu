/* cuda_gemm_lt.cu — prefill GEMM through cuBLASLt, loaded at run time with dlopen (never a
 * link-time dependency): y[T, n] = x[T, k]·W^T in bf16 operands with fp32 accumulation and fp32
 * output. Weights that are not dense bf16 (MLX-quantized, f16, f32) are first expanded into a bf16
 * scratch matrix (one memory pass), x is rounded to bf16; Linear bias is added by a small kernel,
 * `accumulate` maps to beta = 1. Expansion: the per-8-element kernel by default; LMX_CUDA_EXPAND=new
 * selects the 16-byte-chunk kernel for MLX 4-/8-bit (lt_expand_q, bit-identical output), which measured
 * no faster on the H200 (2026-11-28, one Llama-3-8B layer: q4 327 vs 279 us, q8 284 vs 285 us; q4
 * 512-token prefill 19.8k vs 21.0k tok/s; bench/notes/cuda-kernels.md "prefill2"). Scratch and
 * workspace are stream-ordered allocations
 * (cudaMallocAsync / cudaFreeAsync from the device's default pool, whose release threshold is raised
 * to 1 GiB at first use so that the scratch is not returned to the driver at every synchronisation).
 *
 * State: one process-wide library handle + cuBLASLt handle, created once (pthread_once) and never
 * changed afterwards; cuBLASLt handles are thread-safe for concurrent matmuls on different streams.
 * Disabled when LMX_CUBLASLT=0 in the environment at first use. Without the library (or without
 * the header at build time) lmx_cuda_gemm_lt returns LMX_ERR_UNSUPPORTED and callers fall back to
 * the mma.sync kernel (cuda_gemm.cu).
 */
#include "backend/cuda/cuda_common.cuh"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_include)
#if __has_include(<cublasLt.h>)
#include <cublasLt.h>
#define LMX_HAVE_CUBLASLT_H 1
#endif
#endif

/* ---- kernels used around the GEMM ---- */

/* W [n, k] (dense F32/F16/BF16 or MLX affine bits 2..8) -> bf16 [n, k]; 8 consecutive elements per
 * thread (one group: group sizes are multiples of 8). */
__global__ void lt_dequant_bf16(const void *__restrict__ W, const void *__restrict__ S, const void *__restrict__ B,
                                int dt, int bits, int gs, int64_t n, int64_t k, __nv_bfloat16 *__restrict__ out) {
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; /* index of an 8-element run */
    const int64_t runs_per_row = k / 8;
    if (idx >= n * runs_per_row) return;
    const int64_t row = idx / runs_per_row, i0 = (idx % runs_per_row) * 8;
    float v[8];
    if (bits == 0) {
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = lmx_cu_ld(W, (size_t)(row * k + i0 + j), dt);
    } else {
        const uint32_t *w = (const uint32_t *)W + (size_t)row * (size_t)(k * bits / 32);
        const size_t gi = (size_t)row * (size_t)(k / gs) + (size_t)(i0 / gs);
        const float s = lmx_cu_ld(S, gi, dt), b = lmx_cu_ld(B, gi, dt);
        const int64_t bit0 = i0 * bits; /* 8 elements span 8*bits <= 64 bits */
        const int64_t w0 = bit0 >> 5;
        const int sh = (int)(bit0 & 31);
        const int nwords = (sh + 8 * bits + 31) / 32;
        uint64_t lo = w[w0];
        uint64_t hi = 0;
        if (nwords > 1) lo |= (uint64_t)w[w0 + 1] << 32;
        if (nwords > 2) hi = w[w0 + 2];
        const uint32_t mask = (1u << bits) - 1u;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int off = sh + j * bits; /* < 96 */
            uint32_t q;
            if (off + bits <= 64) q = (uint32_t)(lo >> off) & mask;
            else if (off >= 64) q = (uint32_t)(hi >> (off - 64)) & mask;
            else q = (uint32_t)((lo >> off) | (hi << (64 - off))) & mask;
            v[j] = fmaf(s, (float)q, b);
        }
    }
    __align__(16) __nv_bfloat16 o[8];
#pragma unroll
    for (int j = 0; j < 8; j++) o[j] = __float2bfloat16_rn(v[j]);
    *reinterpret_cast<uint4 *>(out + (size_t)row * k + i0) = *reinterpret_cast<const uint4 *>(o);
}

/* MLX affine 4-/8-bit W -> bf16 [n, k], bandwidth-bound variant (same math and rounding as
 * lt_dequant_bf16, so bit-identical output): the packed matrix is viewed as one flat stream of
 * 16-byte chunks (rows hold whole chunks: k is a multiple of the group size >= 32); a chunk holds
 * 128/BITS weights that lie in ONE group (group sizes 32/64/128), so its scale and bias are loaded
 * once. Each thread expands whole chunks (grid-stride over a grid of at most SMs x 5-6 resident blocks
 * of 256 threads, two chunks per iteration for bytes in flight):
 * one 16-byte streaming load, 128/BITS * 2 bytes of bf16 written as 16-byte stores.
 * W 16-byte aligned, out 16-byte aligned (checked by the caller). SDT: dtype of scales/biases. */
/* resident blocks per SM each instance is built for (6: <= 42 registers; q8 with f32 scales spills
 * at 42, so 5); the grid never exceeds SMs x this, so every block of the grid-stride loop is
 * resident (no second, partial wave) */
#define LT_EXPAND_BLOCKS_PER_SM(bits, sdt) ((bits) == 8 && (sdt) == LMX_CU_F32 ? 5 : 6)

template <int BITS, int SDT>
__device__ __forceinline__ void lt_expand_chunk(uint4 r, float s, float b, __nv_bfloat16 *__restrict__ o) {
    constexpr int PER_WORD = 32 / BITS;            /* weights per 32-bit word: 8 (q4), 4 (q8) */
    constexpr uint32_t MASK = (1u << BITS) - 1u;
    const uint32_t wd[4] = {r.x, r.y, r.z, r.w};
    /* a word yields PER_WORD bf16 = 16 (q4) or 8 (q8) bytes; q4: one 16-byte store per word,
     * q8: one 16-byte store per two words */
#pragma unroll
    for (int h = 0; h < (BITS == 4 ? 4 : 2); h++) {
        __align__(16) __nv_bfloat162 v[4];
#pragma unroll
        for (int j = 0; j < 8; j += 2) {
            const int e = h * 8 + j;               /* weight index inside the chunk */
            const uint32_t q0 = (wd[e / PER_WORD] >> ((e % PER_WORD) * BITS)) & MASK;
            const uint32_t q1 = (wd[(e + 1) / PER_WORD] >> (((e + 1) % PER_WORD) * BITS)) & MASK;
            /* (float)q exactly, without the quarter-rate integer conversion: 2^23 + q, minus 2^23 */
            const float f0 = __uint_as_float(0x4B000000u | q0) - 8388608.f;
            const float f1 = __uint_as_float(0x4B000000u | q1) - 8388608.f;
            /* both halves rounded to nearest even, as __float2bfloat16_rn does one at a time */
            v[j / 2] = __floats2bfloat162_rn(fmaf(s, f0, b), fmaf(s, f1, b));
        }
        *reinterpret_cast<uint4 *>(o + h * 8) = *reinterpret_cast<const uint4 *>(v);
    }
}

template <int BITS, int SDT>
__global__ void __launch_bounds__(256, LT_EXPAND_BLOCKS_PER_SM(BITS, SDT)) lt_expand_q(const uint4 *__restrict__ W, const void *__restrict__ S,
                                                   const void *__restrict__ B, int cpg_shift, int64_t nchunks,
                                                   __nv_bfloat16 *__restrict__ out) {
    constexpr int WPC = 128 / BITS; /* weights per chunk: 32 (q4), 16 (q8) */
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; c + stride < nchunks; c += 2 * stride) {
        const int64_t c1 = c + stride;
        const uint4 r0 = lmx_cu_ld_stream(W + c), r1 = lmx_cu_ld_stream(W + c1);
        const int64_t g0 = c >> cpg_shift, g1 = c1 >> cpg_shift;
        const float s0 = lmx_cu_ld(S, (size_t)g0, SDT), b0 = lmx_cu_ld(B, (size_t)g0, SDT);
        const float s1 = lmx_cu_ld(S, (size_t)g1, SDT), b1 = lmx_cu_ld(B, (size_t)g1, SDT);
        lt_expand_chunk<BITS, SDT>(r0, s0, b0, out + c * WPC);
        lt_expand_chunk<BITS, SDT>(r1, s1, b1, out + c1 * WPC);
    }
    if (c < nchunks) {
        const uint4 r0 = lmx_cu_ld_stream(W + c);
        const int64_t g0 = c >> cpg_shift;
        lt_expand_chunk<BITS, SDT>(r0, lmx_cu_ld(S, (size_t)g0, SDT), lmx_cu_ld(B, (size_t)g0, SDT), out + c * WPC);
    }
}

/* The process-wide default expansion kernel: the per-8-element one (measured faster for q4, equal for
 * q8); LMX_CUDA_EXPAND=new at first use selects the chunk kernel. */
static int g_expand_old;
static pthread_once_t g_expand_once = PTHREAD_ONCE_INIT;
static void lt_expand_env(void) {
    const char *e = getenv("LMX_CUDA_EXPAND");
    g_expand_old = !(e && strcmp(e, "new") == 0);
}

static bool lt_expand_new_applies(const lmx_cuda_matrix *m, const void *out) {
    return (m->bits == 4 || m->bits == 8) &&
           (m->group_size == 32 || m->group_size == 64 || m->group_size == 128) &&
           (m->dtype == LMX_DTYPE_BF16 || m->dtype == LMX_DTYPE_F16 || m->dtype == LMX_DTYPE_F32) &&
           m->k % m->group_size == 0 && !((uintptr_t)m->w & 15) && !((uintptr_t)out & 15);
}

template <int BITS>
static void lt_expand_launch(const lmx_cuda_matrix *m, __nv_bfloat16 *out, int sms, cudaStream_t st) {
    const int64_t nchunks = m->n * m->k * BITS / 128;
    const int sdt = m->dtype == LMX_DTYPE_BF16 ? LMX_CU_BF16 : m->dtype == LMX_DTYPE_F16 ? LMX_CU_F16 : LMX_CU_F32;
    const int64_t want = (nchunks + 511) / 512; /* two chunks per thread, 256 threads */
    const int64_t cap = (int64_t)sms * LT_EXPAND_BLOCKS_PER_SM(BITS, sdt);
    const unsigned grid = (unsigned)(want < 1 ? 1 : want > cap ? cap : want);
    const int wpc = 128 / BITS, cpg = m->group_size / wpc; /* chunks per group: 1..8, a power of two */
    const int cpg_shift = cpg >= 8 ? 3 : cpg >= 4 ? 2 : cpg >= 2 ? 1 : 0;
    const uint4 *W = (const uint4 *)m->w;
    if (m->dtype == LMX_DTYPE_BF16)
        lt_expand_q<BITS, LMX_CU_BF16><<<grid, 256, 0, st>>>(W, m->scales, m->biases, cpg_shift, nchunks, out);
    else if (m->dtype == LMX_DTYPE_F16)
        lt_expand_q<BITS, LMX_CU_F16><<<grid, 256, 0, st>>>(W, m->scales, m->biases, cpg_shift, nchunks, out);
    else
        lt_expand_q<BITS, LMX_CU_F32><<<grid, 256, 0, st>>>(W, m->scales, m->biases, cpg_shift, nchunks, out);
}

extern "C" lmx_status lmx_cuda_expand_bf16(const lmx_cuda_matrix *m, void *out, int impl, lmx_cuda_stream stream) {
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!out || impl < 0 || impl > 2) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda expand: NULL out or impl %d", impl);
    if (m->k % 8 || (m->bits && m->group_size % 8) || ((uintptr_t)out & 15))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda expand: shape [%lld, %lld] / alignment not supported",
                         (long long)m->n, (long long)m->k);
    pthread_once(&g_expand_once, lt_expand_env);
    const bool can_new = lt_expand_new_applies(m, out);
    if (impl == 2 && !can_new)
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda expand: the chunk kernel needs 4/8-bit, group 32/64/128, aligned W");
    const bool use_new = can_new && (impl == 2 || (impl == 0 && !g_expand_old));
    cudaStream_t st = LMX_CU_STREAM(stream);
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    if (use_new) {
        int dev = 0, sms = 132;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            sms = 132;
        if (m->bits == 4) lt_expand_launch<4>(m, o, sms, st);
        else lt_expand_launch<8>(m, o, sms, st);
    } else {
        const int64_t runs = m->n * (m->k / 8);
        lt_dequant_bf16<<<(unsigned)((runs + 255) / 256), 256, 0, st>>>(m->w, m->scales, m->biases, (int)m->dtype,
                                                                     m->bits, m->group_size, m->n, m->k, o);
    }
    cudaError_t le = cudaGetLastError();
    if (le != cudaSuccess)
        return lmx_error(LMX_ERR_INFERENCE_FAILURE, "cuda expand: launch failed: %s", cudaGetErrorString(le));
    return LMX_OK;
}

__global__ void lt_f32_to_bf16(const float *__restrict__ x, __nv_bfloat16 *__restrict__ out, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16_rn(x[i]);
}

__global__ void lt_add_bias(float *__restrict__ y, const void *__restrict__ bias, int bdt, int64_t n, int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) y[i] += lmx_cu_ld(bias, (size_t)(i % n), bdt);
}

#ifdef LMX_HAVE_CUBLASLT_H

typedef struct lt_lib {
    void *dl;
    cublasLtHandle_t h;
    decltype(&cublasLtCreate) create;
    decltype(&cublasLtMatmul) matmul;
    decltype(&cublasLtMatmulDescCreate) desc_create;
    decltype(&cublasLtMatmulDescDestroy) desc_destroy;
    decltype(&cublasLtMatmulDescSetAttribute) desc_set;
    decltype(&cublasLtMatrixLayoutCreate) layout_create;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
    decltype(&cublasLtMatmulPreferenceCreate) pref_create;
    decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
    decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
    bool ok;
} lt_lib;

static lt_lib g_lt; /* written once under g_lt_once, read-only afterwards */
static pthread_once_t g_lt_once = PTHREAD_ONCE_INIT;

static void lt_init(void) {
    const char *env = getenv("LMX_CUBLASLT");
    if (env && strcmp(env, "0") == 0) return;
    char name[64];
    snprintf(name, sizeof name, "libcublasLt.so.%d", CUBLAS_VER_MAJOR);
    void *dl = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!dl) { /* the toolkit's own directory is often not in the loader's path */
        char path[128];
        snprintf(path, sizeof path, "/usr/local/cuda/lib64/%s", name);
        dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    if (!dl) {
        LMX_LOG_I("cuda: %s not found, prefill uses the built-in tensor-core GEMM", name);
        return;
    }
    lt_lib L;
    memset(&L, 0, sizeof L);
    L.dl = dl;
#define LT_SYM(field, sym)                                                  \
    do {                                                                    \
        *(void **)(&L.field) = dlsym(dl, #sym);                             \
        if (!L.field) {                                                     \
            LMX_LOG_W("cuda: %s lacks %s; cuBLASLt disabled", name, #sym);  \
            dlclose(dl);                                                    \
            return;                                                         \
        }                                                                   \
    } while (0)
    LT_SYM(create, cublasLtCreate);
    LT_SYM(matmul, cublasLtMatmul);
    LT_SYM(desc_create, cublasLtMatmulDescCreate);
    LT_SYM(desc_destroy, cublasLtMatmulDescDestroy);
    LT_SYM(desc_set, cublasLtMatmulDescSetAttribute);
    LT_SYM(layout_create, cublasLtMatrixLayoutCreate);
    LT_SYM(layout_destroy, cublasLtMatrixLayoutDestroy);
    LT_SYM(pref_create, cublasLtMatmulPreferenceCreate);
    LT_SYM(pref_destroy, cublasLtMatmulPreferenceDestroy);
    LT_SYM(pref_set, cublasLtMatmulPreferenceSetAttribute);
    LT_SYM(heuristic, cublasLtMatmulAlgoGetHeuristic);
#undef LT_SYM
    if (L.create(&L.h) != CUBLAS_STATUS_SUCCESS) {
        LMX_LOG_W("cuda: cublasLtCreate failed; cuBLASLt disabled");
        dlclose(dl);
        return;
    }
    L.ok = true;
    g_lt = L;
    /* keep up to 1 GiB of freed scratch in the current device's default pool between GEMMs (the
     * default threshold 0 returns it to the driver at every synchronisation) */
    int dev = 0;
    cudaMemPool_t pool;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
        uint64_t thr = (uint64_t)1 << 30;
        (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr);
    }
    (void)cudaGetLastError();
}

extern "C" bool lmx_cuda_gemm_lt_available(void) {
    pthread_once(&g_lt_once, lt_init);
    return g_lt.ok;
}

#define LT_WORKSPACE ((size_t)32 << 20)

extern "C" lmx_status lmx_cuda_gemm_lt(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate,
                                       lmx_cuda_stream stream) {
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!x || !y || T < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemm lt: NULL x/y or T %d", T);
    if (!lmx_cuda_gemm_lt_available()) return lmx_error(LMX_ERR_UNSUPPORTED, "cuda gemm lt: cuBLASLt not available");
    if (m->k % 8 || m->n % 4 || (m->bits && m->group_size % 8))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda gemm lt: shape [%lld, %lld] not supported", (long long)m->n,
                         (long long)m->k);
    const lt_lib *L = &g_lt;
    cudaStream_t st = LMX_CU_STREAM(stream);
    const int64_t n = m->n, k = m->k;
    const bool dense_bf16 = m->bits == 0 && m->dtype == LMX_DTYPE_BF16 && !((uintptr_t)m->w & 15);
    const size_t xb = (size_t)T * (size_t)k * 2, wb = dense_bf16 ? 0 : (size_t)n * (size_t)k * 2;
    char *scratch = NULL;
    cudaError_t ce = cudaMallocAsync((void **)&scratch, xb + wb + LT_WORKSPACE + 256, st);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda gemm lt: scratch of %zu bytes: %s", xb + wb + LT_WORKSPACE,
                         cudaGetErrorString(ce));
    }
    __nv_bfloat16 *xh = (__nv_bfloat16 *)scratch;                                   /* [T, k] */
    __nv_bfloat16 *wh = dense_bf16 ? (__nv_bfloat16 *)m->w : (__nv_bfloat16 *)(scratch + ((xb + 255) & ~(size_t)255)); /* [n, k] */
    void *ws = scratch + ((xb + 255) & ~(size_t)255) + ((wb + 255) & ~(size_t)255);
    lmx_status rs = LMX_OK;
    {
        const int64_t nx = (int64_t)T * k;
        lt_f32_to_bf16<<<(unsigned)((nx + 255) / 256), 256, 0, st>>>(x, xh, nx);
        cudaError_t le = cudaGetLastError();
        if (le != cudaSuccess)
            rs = lmx_error(LMX_ERR_INFERENCE_FAILURE, "cuda gemm lt: prologue launch failed: %s", cudaGetErrorString(le));
        if (rs == LMX_OK && !dense_bf16) rs = lmx_cuda_expand_bf16(m, wh, 0, stream);
    }
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    /* column-major view: D[n, T] (ld n) = A^T · B with A = W as [k, n] (ld k), B = x as [k, T] (ld k) */
    if (rs == LMX_OK) {
        const cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
        const uint64_t wsz = LT_WORKSPACE;
        cublasLtMatmulHeuristicResult_t res;
        int nres = 0;
        memset(&res, 0, sizeof res);
        if (L->desc_create(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
            L->desc_set(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA) != CUBLAS_STATUS_SUCCESS ||
            L->desc_set(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB) != CUBLAS_STATUS_SUCCESS ||
            L->layout_create(&la, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k) != CUBLAS_STATUS_SUCCESS ||
            L->layout_create(&lb, CUDA_R_16BF, (uint64_t)k, (uint64_t)T, k) != CUBLAS_STATUS_SUCCESS ||
            L->layout_create(&lc, CUDA_R_32F, (uint64_t)n, (uint64_t)T, n) != CUBLAS_STATUS_SUCCESS ||
            L->pref_create(&pref) != CUBLAS_STATUS_SUCCESS ||
            L->pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz) != CUBLAS_STATUS_SUCCESS ||
            L->heuristic(L->h, op, la, lb, lc, lc, pref, 1, &res, &nres) != CUBLAS_STATUS_SUCCESS || nres < 1) {
            rs = lmx_error(LMX_ERR_UNSUPPORTED, "cuda gemm lt: no cuBLASLt algorithm for [%lld x %lld] x T %d",
                           (long long)n, (long long)k, T);
        } else {
            const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
            cublasStatus_t cs = L->matmul(L->h, op, &alpha, wh, la, xh, lb, &beta, y, lc, y, lc, &res.algo, ws,
                                          LT_WORKSPACE, st);
            if (cs != CUBLAS_STATUS_SUCCESS)
                rs = lmx_error(LMX_ERR_INFERENCE_FAILURE, "cuda gemm lt: cublasLtMatmul failed (status %d)", (int)cs);
        }
    }
    if (pref) L->pref_destroy(pref);
    if (lc) L->layout_destroy(lc);
    if (lb) L->layout_destroy(lb);
    if (la) L->layout_destroy(la);
    if (op) L->desc_destroy(op);
    if (rs == LMX_OK && m->bias) {
        const int64_t total = (int64_t)T * n;
        lt_add_bias<<<(unsigned)((total + 255) / 256), 256, 0, st>>>(y, m->bias, (int)m->bias_dtype, n, total);
        cudaError_t le = cudaGetLastError();
        if (le != cudaSuccess)
            rs = lmx_error(LMX_ERR_INFERENCE_FAILURE, "cuda gemm lt: bias launch failed: %s", cudaGetErrorString(le));
    }
    cudaError_t fe = cudaFreeAsync(scratch, st);
    if (fe != cudaSuccess && rs == LMX_OK)
        rs = lmx_error(LMX_ERR_INFERENCE_FAILURE, "cuda gemm lt: free: %s", cudaGetErrorString(fe));
    return rs;
}

#else /* no cublasLt.h at build time */

extern "C" bool lmx_cuda_gemm_lt_available(void) { return false; }
extern "C" lmx_status lmx_cuda_gemm_lt(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate,
                                       lmx_cuda_stream stream) {
    (void)m; (void)x; (void)y; (void)T; (void)accumulate; (void)stream;
    return lmx_error(LMX_ERR_UNSUPPORTED, "cuda gemm lt: built without cublasLt.h");
}

#endif
