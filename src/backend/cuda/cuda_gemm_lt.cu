/* cuda_gemm_lt.cu — prefill GEMM through cuBLASLt, loaded at run time with dlopen (never a
 * link-time dependency): y[T, n] = x[T, k]·W^T in bf16 operands with fp32 accumulation and fp32
 * output. Weights that are not dense bf16 (MLX-quantized, f16, f32) are first expanded into a bf16
 * scratch matrix (one memory pass), x is rounded to bf16; Linear bias is added by a small kernel,
 * `accumulate` maps to beta = 1. The expansion is one pass of 8 elements per thread (a 16-byte-chunk
 * variant measured slower: bench/notes/cuda-kernels.md, "prefill2"). Scratch and workspace are
 * stream-ordered allocations
 * (cudaMallocAsync / cudaFreeAsync from the device's default pool, whose release threshold is raised
 * to 1 GiB at first use so that the scratch is not returned to the driver at every synchronisation).
 *
 * State: one process-wide library handle (pthread_once) and one cuBLASLt handle per device (a handle
 * belongs to the device current at its creation: tensor-parallel ranks each have theirs), created at
 * the device's first GEMM and never changed afterwards; cuBLASLt handles are thread-safe for
 * concurrent matmuls on different streams.
 * Without the library (or without the header at build time) lmx_cuda_gemm_lt returns LMX_ERR_UNSUPPORTED and callers fall back to
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

extern "C" lmx_status lmx_cuda_expand_bf16(const lmx_cuda_matrix *m, void *out, lmx_cuda_stream stream) {
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda expand: NULL out");
    if (m->k % 8 || (m->bits && m->group_size % 8) || ((uintptr_t)out & 15))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda expand: shape [%lld, %lld] / alignment not supported",
                         (long long)m->n, (long long)m->k);
    cudaStream_t st = LMX_CU_STREAM(stream);
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    const int64_t runs = m->n * (m->k / 8);
    lt_dequant_bf16<<<(unsigned)((runs + 255) / 256), 256, 0, st>>>(m->w, m->scales, m->biases, (int)m->dtype,
                                                                 m->bits, m->group_size, m->n, m->k, o);
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
static lmx_cu_per_device g_lt_dev = LMX_CU_PER_DEVICE_INIT;
static cublasLtHandle_t g_lt_h[LMX_CU_MAX_DEVICES]; /* written once per device (lt_device_init) */

static void lt_init(void) {
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
    L.ok = true;
    g_lt = L;
}

/* the device's handle, and up to 1 GiB of freed scratch kept in its default pool between GEMMs (the
 * default threshold 0 returns it to the driver at every synchronisation) */
static bool lt_device_init(int dev) {
    if (g_lt.create(&g_lt_h[dev]) != CUBLAS_STATUS_SUCCESS) {
        LMX_LOG_W("cuda: cublasLtCreate failed on device %d; cuBLASLt disabled there", dev);
        return false;
    }
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
        uint64_t thr = (uint64_t)1 << 30;
        (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr);
    }
    (void)cudaGetLastError();
    return true;
}

/* the calling thread's device's handle, or NULL without cuBLASLt */
static cublasLtHandle_t lt_handle(void) {
    pthread_once(&g_lt_once, lt_init);
    int dev;
    return g_lt.ok && lmx_cu_per_device_ready(&g_lt_dev, lt_device_init, &dev) ? g_lt_h[dev] : NULL;
}

extern "C" bool lmx_cuda_gemm_lt_available(void) { return lt_handle() != NULL; }

#define LT_WORKSPACE ((size_t)32 << 20)

extern "C" lmx_status lmx_cuda_gemm_lt(const lmx_cuda_matrix *m, const float *x, float *y, int T, bool accumulate,
                                       lmx_cuda_stream stream) {
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!x || !y || T < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemm lt: NULL x/y or T %d", T);
    cublasLtHandle_t h = lt_handle();
    if (!h) return lmx_error(LMX_ERR_UNSUPPORTED, "cuda gemm lt: cuBLASLt not available");
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
        if (rs == LMX_OK && !dense_bf16) rs = lmx_cuda_expand_bf16(m, wh, stream);
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
            L->heuristic(h, op, la, lb, lc, lc, pref, 1, &res, &nres) != CUBLAS_STATUS_SUCCESS || nres < 1) {
            rs = lmx_error(LMX_ERR_UNSUPPORTED, "cuda gemm lt: no cuBLASLt algorithm for [%lld x %lld] x T %d",
                           (long long)n, (long long)k, T);
        } else {
            const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
            cublasStatus_t cs = L->matmul(h, op, &alpha, wh, la, xh, lb, &beta, y, lc, y, lc, &res.algo, ws,
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
