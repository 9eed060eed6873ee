/* cuda_mx.cu — see cuda_mx.h; the code decoders are cuda_mx_decode.cuh's. */
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_mx.h"
#include "backend/cuda/cuda_mx_decode.cuh"

namespace {

/* one warp per row; lanes stride over the row's 16-byte words; up to 4 rows of x */
template <int MODE>
__global__ void mx_gemv_kernel(const uint4 *__restrict__ w, const uint8_t *__restrict__ sc, const float *__restrict__ bias,
                               const float *__restrict__ x, float *__restrict__ y, int64_t n, int64_t k, int nb,
                               bool accumulate) {
    constexpr int CODES = mx_fmt<MODE>::CODES, GS = mx_fmt<MODE>::GS;
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= n) return;
    const int64_t nu = k / CODES;
    const uint4 *wr = w + r * nu;
    const uint8_t *sr = sc + r * (k / GS);
    float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t u = lane; u < nu; u += 32) {
        float v[CODES];
        mx_decode<MODE>(lmx_cu_ld_stream(wr + u), sr, u, v);
        const int64_t base = u * CODES;
#pragma unroll
        for (int t = 0; t < 4; t++) {
            if (t >= nb) break;
            const float *xt = x + (size_t)t * (size_t)k + base;
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < CODES; i++) d = fmaf(v[i], __ldg(xt + i), d);
            a[t] += d;
        }
    }
#pragma unroll
    for (int t = 0; t < 4; t++) {
        if (t >= nb) break;
        const float s = lmx_cu_warp_sum(a[t]);
        if (lane == 0) {
            float out = s + (bias ? bias[r] : 0.0f);
            float *yp = y + (size_t)t * (size_t)n + r;
            *yp = accumulate ? *yp + out : out;
        }
    }
}

/* one thread per 16-byte word of rows [row0, row0 + rows): its values as bf16 (exact) */
template <int MODE>
__global__ void mx_expand_kernel(const uint4 *__restrict__ w, const uint8_t *__restrict__ sc, int64_t k, int64_t row0,
                                 int64_t rows, __nv_bfloat16 *__restrict__ out) {
    constexpr int CODES = mx_fmt<MODE>::CODES, GS = mx_fmt<MODE>::GS;
    const int64_t nu = k / CODES, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * nu) return;
    const int64_t r = row0 + i / nu, u = i % nu;
    float v[CODES];
    mx_decode<MODE>(lmx_cu_ld_stream(w + r * nu + u), sc + r * (k / GS), u, v);
    uint4 *o = reinterpret_cast<uint4 *>(out + (i / nu) * k + u * CODES);
#pragma unroll
    for (int j = 0; j < CODES / 8; j++) {
        uint32_t p[4];
#pragma unroll
        for (int h = 0; h < 4; h++) {
            __nv_bfloat162 b = __floats2bfloat162_rn(v[j * 8 + 2 * h], v[j * 8 + 2 * h + 1]);
            p[h] = *reinterpret_cast<uint32_t *>(&b);
        }
        o[j] = make_uint4(p[0], p[1], p[2], p[3]);
    }
}

/* grid (words per row, T): row ids[t] dequantized, times scale, fp32 */
template <int MODE>
__global__ void mx_embed_kernel(const uint4 *__restrict__ w, const uint8_t *__restrict__ sc, int64_t n, int64_t k,
                                const int32_t *__restrict__ ids, float scale, float *__restrict__ out) {
    constexpr int CODES = mx_fmt<MODE>::CODES, GS = mx_fmt<MODE>::GS;
    const int64_t nu = k / CODES, u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (u >= nu) return;
    const int t = blockIdx.y;
    const int64_t id = ids[t];
    float *o = out + (size_t)t * (size_t)k + u * CODES;
    if (id < 0 || id >= n) {
        for (int i = 0; i < CODES; i++) o[i] = 0.0f;
        return;
    }
    float v[CODES];
    mx_decode<MODE>(lmx_cu_ld_stream(w + id * nu + u), sc + id * (k / GS), u, v);
#pragma unroll
    for (int i = 0; i < CODES; i++) o[i] = v[i] * scale;
}

/* y[t, r0 + j] (+)= yc[t, j] for j < nc */
__global__ void mx_scatter_kernel(const float *__restrict__ yc, float *__restrict__ y, int64_t n, int64_t r0, int64_t nc,
                                  int T, bool accumulate) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)T * nc) return;
    const int64_t t = i / nc, j = i % nc;
    float *yp = y + t * n + r0 + j;
    *yp = accumulate ? *yp + yc[i] : yc[i];
}

}  // namespace

extern "C" lmx_status lmx_cuda_mx_check(const lmx_cuda_mx *m) {
    if (!m || !m->w || !m->scales)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda mx: NULL matrix, codes or scales");
    if (m->mode != LMX_QUANT_MXFP4 && m->mode != LMX_QUANT_MXFP8 && m->mode != LMX_QUANT_NVFP4)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda mx: mode %s is not an fp mode", lmx_quant_mode_name(m->mode));
    if (m->n < 1 || m->k < 32 || m->k % 32 || ((uintptr_t)m->w & 15))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda mx: shape [%lld, %lld] (k a multiple of 32) or codes unaligned",
                         (long long)m->n, (long long)m->k);
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_mx_gemv(const lmx_cuda_mx *m, const float *x, float *y, int batch, bool accumulate,
                                       lmx_cuda_stream stream) {
    lmx_status st = lmx_cuda_mx_check(m);
    if (st != LMX_OK) return st;
    if (!x || !y || batch < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda mx gemv: NULL x/y or batch %d", batch);
    cudaStream_t s = LMX_CU_STREAM(stream);
    const unsigned blocks = (unsigned)((m->n + 3) / 4); /* 4 warps, one row each */
    const uint4 *w = (const uint4 *)m->w;
    for (int b = 0; b < batch; b += 4) {
        const int nb = batch - b < 4 ? batch - b : 4;
        const float *xb = x + (size_t)b * (size_t)m->k;
        float *yb = y + (size_t)b * (size_t)m->n;
        if (m->mode == LMX_QUANT_MXFP4)
            mx_gemv_kernel<LMX_QUANT_MXFP4><<<blocks, 128, 0, s>>>(w, m->scales, m->bias, xb, yb, m->n, m->k, nb, accumulate);
        else if (m->mode == LMX_QUANT_MXFP8)
            mx_gemv_kernel<LMX_QUANT_MXFP8><<<blocks, 128, 0, s>>>(w, m->scales, m->bias, xb, yb, m->n, m->k, nb, accumulate);
        else
            mx_gemv_kernel<LMX_QUANT_NVFP4><<<blocks, 128, 0, s>>>(w, m->scales, m->bias, xb, yb, m->n, m->k, nb, accumulate);
        LMX_CU_CHECK_LAUNCH("mx gemv");
    }
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_mx_expand_bf16(const lmx_cuda_mx *m, int64_t row0, int64_t rows, void *out,
                                              lmx_cuda_stream stream) {
    lmx_status st = lmx_cuda_mx_check(m);
    if (st != LMX_OK) return st;
    if (!out || ((uintptr_t)out & 15) || row0 < 0 || rows < 1 || row0 + rows > m->n)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda mx expand: rows [%lld, +%lld) of %lld or out unaligned",
                         (long long)row0, (long long)rows, (long long)m->n);
    cudaStream_t s = LMX_CU_STREAM(stream);
    const int codes = m->mode == LMX_QUANT_MXFP8 ? 16 : 32;
    const int64_t total = rows * (m->k / codes);
    const unsigned blocks = (unsigned)((total + 255) / 256);
    const uint4 *w = (const uint4 *)m->w;
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    if (m->mode == LMX_QUANT_MXFP4) mx_expand_kernel<LMX_QUANT_MXFP4><<<blocks, 256, 0, s>>>(w, m->scales, m->k, row0, rows, o);
    else if (m->mode == LMX_QUANT_MXFP8) mx_expand_kernel<LMX_QUANT_MXFP8><<<blocks, 256, 0, s>>>(w, m->scales, m->k, row0, rows, o);
    else mx_expand_kernel<LMX_QUANT_NVFP4><<<blocks, 256, 0, s>>>(w, m->scales, m->k, row0, rows, o);
    LMX_CU_CHECK_LAUNCH("mx expand");
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_mx_embed(const lmx_cuda_mx *m, const int32_t *ids, int T, float scale, float *out,
                                        lmx_cuda_stream stream) {
    lmx_status st = lmx_cuda_mx_check(m);
    if (st != LMX_OK) return st;
    if (!ids || !out || T < 1 || T > 65535) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda mx embed: NULL ids/out or T %d", T);
    cudaStream_t s = LMX_CU_STREAM(stream);
    const int codes = m->mode == LMX_QUANT_MXFP8 ? 16 : 32;
    const int64_t nu = m->k / codes;
    dim3 grid((unsigned)((nu + 127) / 128), (unsigned)T);
    const uint4 *w = (const uint4 *)m->w;
    if (m->mode == LMX_QUANT_MXFP4) mx_embed_kernel<LMX_QUANT_MXFP4><<<grid, 128, 0, s>>>(w, m->scales, m->n, m->k, ids, scale, out);
    else if (m->mode == LMX_QUANT_MXFP8) mx_embed_kernel<LMX_QUANT_MXFP8><<<grid, 128, 0, s>>>(w, m->scales, m->n, m->k, ids, scale, out);
    else mx_embed_kernel<LMX_QUANT_NVFP4><<<grid, 128, 0, s>>>(w, m->scales, m->n, m->k, ids, scale, out);
    LMX_CU_CHECK_LAUNCH("mx embed");
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_mx_matmul(const lmx_cuda_mx *m, const float *x, float *y, int T, bool accumulate,
                                         void **scratch, size_t *scratch_bytes, lmx_cuda_stream stream) {
    lmx_status st = lmx_cuda_mx_check(m);
    if (st != LMX_OK) return st;
    if (T <= 4 || ((uintptr_t)x & 15)) return lmx_cuda_mx_gemv(m, x, y, T, accumulate, stream);
    /* a chunk of nc rows: bf16 [nc, k] then fp32 [T, nc] (when the output goes through the scratch) */
    const size_t per_row = (size_t)m->k * 2 + (size_t)T * 4;
    const size_t whole = (size_t)m->n * (size_t)m->k * 2; /* one chunk writes y directly */
    size_t want = whole <= LMX_CUDA_MX_SCRATCH ? whole : LMX_CUDA_MX_SCRATCH;
    if (want < 64 * per_row) want = 64 * per_row; /* at least 64 rows a chunk */
    if (*scratch_bytes < want) {
        lmx_cuda_stream_sync(stream);
        lmx_cuda_free(*scratch);
        *scratch = NULL;
        *scratch_bytes = 0;
        st = lmx_cuda_malloc(scratch, want);
        if (st != LMX_OK) return st;
        *scratch_bytes = want;
    }
    cudaStream_t s = LMX_CU_STREAM(stream);
    if (whole <= *scratch_bytes) { /* all rows at once, the GEMM writes y (bias, accumulate) itself */
        st = lmx_cuda_mx_expand_bf16(m, 0, m->n, *scratch, stream);
        if (st != LMX_OK) return st;
        lmx_cuda_matrix d = {};
        d.w = *scratch;
        d.bias = m->bias;
        d.dtype = LMX_DTYPE_BF16;
        d.bias_dtype = LMX_DTYPE_F32;
        d.n = m->n;
        d.k = m->k;
        return lmx_cuda_gemm(&d, x, y, T, accumulate, stream);
    }
    int64_t nc = (int64_t)(*scratch_bytes / per_row) & ~(int64_t)63;
    uint8_t *wb = (uint8_t *)*scratch;
    float *yc = (float *)(wb + (((size_t)nc * (size_t)m->k * 2 + 255) & ~(size_t)255));
    if ((uint8_t *)(yc + (size_t)T * (size_t)nc) > wb + *scratch_bytes) nc -= 64; /* room for the alignment */
    for (int64_t r0 = 0; r0 < m->n; r0 += nc) {
        const int64_t rows = m->n - r0 < nc ? m->n - r0 : nc;
        st = lmx_cuda_mx_expand_bf16(m, r0, rows, wb, stream);
        if (st != LMX_OK) return st;
        lmx_cuda_matrix d = {};
        d.w = wb;
        d.bias = m->bias ? m->bias + r0 : NULL;
        d.dtype = LMX_DTYPE_BF16;
        d.bias_dtype = LMX_DTYPE_F32;
        d.n = rows;
        d.k = m->k;
        st = lmx_cuda_gemm(&d, x, yc, T, false, stream);
        if (st != LMX_OK) return st;
        const int64_t total = (int64_t)T * rows;
        mx_scatter_kernel<<<(unsigned)((total + 255) / 256), 256, 0, s>>>(yc, y, m->n, r0, rows, T, accumulate);
        LMX_CU_CHECK_LAUNCH("mx scatter");
    }
    return LMX_OK;
}
