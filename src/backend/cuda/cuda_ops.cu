/* cuda_ops.cu — RMSNorm, RoPE, gated activations, residual add, soft-capping, embedding gather,
 * KV-cache store and greedy argmax (fp32 activations). */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

static inline int lmx_cu_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (int)(b < 65535 * 32 ? b : 65535 * 32);
}

/* ---- RMSNorm: one block per row ---- */
__global__ void rmsnorm_kernel(const float *__restrict__ x, const void *__restrict__ w, int wdt,
                               float eps, int one_plus, float *y, int dim) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    ss = lmx_cu_block_sum(ss, red);
    const float r = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float wv = lmx_cu_ld(w, i, wdt);
        if (one_plus) wv += 1.f;
        yr[i] = xr[i] * r * wv;
    }
}

extern "C" lmx_status lmx_cuda_rmsnorm(const float *x, const void *w, lmx_dtype w_dtype, float eps,
                                       bool one_plus_w, float *y, int rows, int dim,
                                       lmx_cuda_stream stream) {
    if (!x || !w || !y || rows < 1 || dim < 1 || !lmx_cu_float_dtype(w_dtype))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda rmsnorm: bad arguments (rows %d, dim %d, dtype %d)",
                         rows, dim, (int)w_dtype);
    const int threads = dim >= 1024 ? 512 : (dim >= 256 ? 256 : 64);
    rmsnorm_kernel<<<rows, threads, 0, LMX_CU_STREAM(stream)>>>(x, w, (int)w_dtype, eps, one_plus_w ? 1 : 0,
                                                                y, dim);
    LMX_CU_CHECK_LAUNCH("rmsnorm");
    return LMX_OK;
}

/* ---- RoPE (half-split) ---- */
__global__ void rope_kernel(float *x, const int32_t *__restrict__ pos, const float *__restrict__ inv_freq,
                            float mscale, int T, int n_heads, int head_dim, int half) {
    const int64_t total = (int64_t)T * n_heads * half;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const int64_t th = idx / half; /* t * n_heads + h */
        const int t = (int)(th / n_heads);
        float s, c;
        sincosf((float)pos[t] * inv_freq[i], &s, &c);
        s *= mscale;
        c *= mscale;
        float *p = x + th * head_dim;
        const float a = p[i], b = p[i + half];
        p[i] = a * c - b * s;
        p[i + half] = b * c + a * s;
    }
}

extern "C" lmx_status lmx_cuda_rope(float *x, const int32_t *positions, const float *inv_freq, float mscale,
                                    int T, int n_heads, int head_dim, int rot_dims, lmx_cuda_stream stream) {
    if (!x || !positions || !inv_freq || T < 1 || n_heads < 1 || rot_dims < 2 || (rot_dims & 1) ||
        rot_dims > head_dim)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda rope: bad arguments (T %d, heads %d, head_dim %d, rot %d)",
                         T, n_heads, head_dim, rot_dims);
    const int64_t total = (int64_t)T * n_heads * (rot_dims / 2);
    rope_kernel<<<lmx_cu_blocks(total, 256), 256, 0, LMX_CU_STREAM(stream)>>>(x, positions, inv_freq, mscale, T,
                                                                            n_heads, head_dim, rot_dims / 2);
    LMX_CU_CHECK_LAUNCH("rope");
    return LMX_OK;
}

/* ---- elementwise ---- */
enum { EW_SWIGLU, EW_GEGLU_TANH, EW_ADD, EW_SOFTCAP, EW_SWIGLU_OAI };

/* cap: EW_SOFTCAP's cap, EW_SWIGLU_OAI's limit; alpha: EW_SWIGLU_OAI's sigmoid gain */
__global__ void elementwise_kernel(int op, const float *a, const float *b, float *out, int64_t n, float cap,
                                   float alpha) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = a[i];
        float r;
        switch (op) {
        case EW_SWIGLU: r = g / (1.f + expf(-g)) * b[i]; break;
        case EW_GEGLU_TANH: {
            const float u = 0.7978845608028654f * (g + 0.044715f * g * g * g);
            r = 0.5f * g * (1.f + tanhf(u)) * b[i];
            break;
        }
        case EW_ADD: r = g + b[i]; break;
        case EW_SWIGLU_OAI: { /* comparisons, not fminf: a NaN stays NaN */
            const float x = g > cap ? cap : g, u = b[i] > cap ? cap : (b[i] < -cap ? -cap : b[i]);
            r = x / (1.f + expf(-alpha * x)) * (u + 1.f);
            break;
        }
        default: r = cap * tanhf(g / cap); break;
        }
        out[i] = r;
    }
}

static lmx_status ew_launch(int op, const float *a, const float *b, float *out, int64_t n, float cap, float alpha,
                            lmx_cuda_stream stream, const char *what) {
    if (!a || !out || (op != EW_SOFTCAP && !b) || n < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda %s: bad arguments", what);
    if (n == 0) return LMX_OK;
    elementwise_kernel<<<lmx_cu_blocks(n, 256), 256, 0, LMX_CU_STREAM(stream)>>>(op, a, b, out, n, cap, alpha);
    LMX_CU_CHECK_LAUNCH(what);
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_swiglu(const float *gate, const float *up, float *out, int64_t n,
                                      lmx_cuda_stream stream) {
    return ew_launch(EW_SWIGLU, gate, up, out, n, 0.f, 0.f, stream, "swiglu");
}
extern "C" lmx_status lmx_cuda_geglu_tanh(const float *gate, const float *up, float *out, int64_t n,
                                          lmx_cuda_stream stream) {
    return ew_launch(EW_GEGLU_TANH, gate, up, out, n, 0.f, 0.f, stream, "geglu_tanh");
}
extern "C" lmx_status lmx_cuda_swiglu_oai(const float *gate, const float *up, float *out, int64_t n, float alpha,
                                          float limit, lmx_cuda_stream stream) {
    if (!(limit > 0.f)) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda swiglu_oai: limit %g", (double)limit);
    return ew_launch(EW_SWIGLU_OAI, gate, up, out, n, limit, alpha, stream, "swiglu_oai");
}
extern "C" lmx_status lmx_cuda_add(float *y, const float *x, int64_t n, lmx_cuda_stream stream) {
    return ew_launch(EW_ADD, y, x, y, n, 0.f, 0.f, stream, "add");
}
extern "C" lmx_status lmx_cuda_softcap(float *x, int64_t n, float cap, lmx_cuda_stream stream) {
    if (!(cap > 0.f)) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda softcap: cap %g", (double)cap);
    return ew_launch(EW_SOFTCAP, x, NULL, x, n, cap, 0.f, stream, "softcap");
}

/* ---- embedding gather: one block per token ---- */
__global__ void embed_kernel(const void *__restrict__ W, const void *__restrict__ S,
                             const void *__restrict__ Bq, int dt, int bits, int gs,
                             const int32_t *__restrict__ ids, int vocab, int k, float scale,
                             float *out) {
    const int t = blockIdx.x;
    const int id = ids[t];
    float *o = out + (size_t)t * k;
    const bool ok = id >= 0 && id < vocab;
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        float v = 0.f;
        if (ok) {
            if (bits == 0) {
                v = lmx_cu_ld(W, (size_t)id * k + i, dt);
            } else {
                const uint32_t *row = (const uint32_t *)W + (size_t)id * ((size_t)k * bits / 32);
                const int bit = i * bits, wi = bit >> 5, off = bit & 31;
                uint32_t q = row[wi] >> off;
                if (off + bits > 32) q |= row[wi + 1] << (32 - off);
                q &= (1u << bits) - 1u;
                const size_t gi = (size_t)id * (k / gs) + i / gs;
                v = fmaf(lmx_cu_ld(S, gi, dt), (float)q, lmx_cu_ld(Bq, gi, dt));
            }
        }
        o[i] = v * scale;
    }
}

extern "C" lmx_status lmx_cuda_embed(const lmx_cuda_matrix *table, const int32_t *ids, int T, float scale,
                                     float *out, lmx_cuda_stream stream) {
    lmx_status s = lmx_cuda_matrix_check(table);
    if (s != LMX_OK) return lmx_error_prefix(s, "cuda embed");
    if (!ids || !out || T < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda embed: bad arguments (T %d)", T);
    embed_kernel<<<T, 256, 0, LMX_CU_STREAM(stream)>>>(table->w, table->scales, table->biases, (int)table->dtype,
                                                       table->bits, table->group_size, ids, (int)table->n,
                                                       (int)table->k, scale, out);
    LMX_CU_CHECK_LAUNCH("embed");
    return LMX_OK;
}

/* ---- KV store ---- */
__global__ void kv_store_kernel(const float *__restrict__ k, const float *__restrict__ v, void *kc, void *vc,
                                int dt, const int32_t *__restrict__ pos, int T, int n_kv, int hd,
                                int64_t cap) {
    const int64_t total = (int64_t)T * n_kv * hd;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % hd);
        const int h = (int)((i / hd) % n_kv);
        const int t = (int)(i / ((int64_t)hd * n_kv));
        const int64_t p = pos[t] % cap; /* ring: position j in slot j % cap */
        if (p < 0) continue;
        const size_t dst = ((size_t)h * cap + p) * hd + d;
        if (dt == LMX_CU_BF16) {
            ((__nv_bfloat16 *)kc)[dst] = __float2bfloat16_rn(k[i]);
            ((__nv_bfloat16 *)vc)[dst] = __float2bfloat16_rn(v[i]);
        } else if (dt == LMX_CU_F16) { /* saturated: a value past fp16's range stays finite (NaN stays NaN) */
            const float kx = k[i], vx = v[i];
            ((__half *)kc)[dst] = __float2half_rn(kx != kx ? kx : fminf(fmaxf(kx, -65504.f), 65504.f));
            ((__half *)vc)[dst] = __float2half_rn(vx != vx ? vx : fminf(fmaxf(vx, -65504.f), 65504.f));
        } else {
            ((float *)kc)[dst] = k[i];
            ((float *)vc)[dst] = v[i];
        }
    }
}

extern "C" lmx_status lmx_cuda_kv_store(const lmx_cuda_attn *a, const float *k, const float *v,
                                        void *k_cache, void *v_cache, const int32_t *positions, int T,
                                        lmx_cuda_stream stream) {
    if (!a || !k || !v || !k_cache || !v_cache || !positions || T < 1 || a->n_kv_heads < 1 ||
        a->head_dim < 1 || a->capacity < 1 || !lmx_cu_float_dtype(a->kv_dtype))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda kv_store: bad arguments");
    if (a->map) return lmx_error(LMX_ERR_UNSUPPORTED, "cuda kv_store: a paged map (use lmx_cuda_rope_qk_store)");
    const int64_t total = (int64_t)T * a->n_kv_heads * a->head_dim;
    kv_store_kernel<<<lmx_cu_blocks(total, 256), 256, 0, LMX_CU_STREAM(stream)>>>(
        k, v, k_cache, v_cache, (int)a->kv_dtype, positions, T, a->n_kv_heads, a->head_dim, a->capacity);
    LMX_CU_CHECK_LAUNCH("kv_store");
    return LMX_OK;
}

/* ---- argmax: one block per row ---- */
#define ARGMAX_THREADS 1024
__global__ void __launch_bounds__(ARGMAX_THREADS)
argmax_kernel(const float *__restrict__ logits, int64_t n, int32_t *ids) {
    __shared__ float sv[ARGMAX_THREADS / 32];
    __shared__ int64_t si[ARGMAX_THREADS / 32];
    const float *row = logits + (size_t)blockIdx.x * n;
    float best = -INFINITY;
    int64_t bi = INT64_MAX;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = row[i];
        if (v > best || (v == best && i < bi)) { best = v; bi = i; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sv[warp] = best; si[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        best = lane < (int)(blockDim.x >> 5) ? sv[lane] : -INFINITY;
        bi = lane < (int)(blockDim.x >> 5) ? si[lane] : INT64_MAX;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best, o);
            const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
        }
        if (lane == 0) ids[blockIdx.x] = bi == INT64_MAX ? 0 : (int32_t)bi;
    }
}

extern "C" lmx_status lmx_cuda_argmax(const float *logits, int rows, int64_t n, int32_t *ids,
                                      lmx_cuda_stream stream) {
    if (!logits || !ids || rows < 1 || n < 1 || n > INT32_MAX)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda argmax: bad arguments (rows %d, n %lld)", rows,
                         (long long)n);
    argmax_kernel<<<rows, ARGMAX_THREADS, 0, LMX_CU_STREAM(stream)>>>(logits, n, ids);
    LMX_CU_CHECK_LAUNCH("argmax");
    return LMX_OK;
}

/* ---- top-k: radix select of the k-th largest key, then collect and rank (one block per row) ---- */
#define TOPK_THREADS 1024
#define TOPK_MAX 256

__device__ __forceinline__ uint32_t topk_key(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0u; /* NaN: below everything */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(TOPK_THREADS)
topk_kernel(const float *__restrict__ logits, int64_t n, int k, float *out_vals, int32_t *out_ids) {
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_pref, s_mask;
    __shared__ int s_want;
    __shared__ unsigned s_gt, s_eq;
    __shared__ float cv[TOPK_MAX];
    __shared__ int32_t ci[TOPK_MAX];
    const float *row = logits + (size_t)blockIdx.x * n;
    const int tid = threadIdx.x;
    if (tid == 0) { s_pref = 0; s_mask = 0; s_want = k; s_gt = 0; s_eq = 0; }
    for (int pass = 0; pass < 4; pass++) {
        const int shift = 24 - 8 * pass;
        for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const uint32_t pref = s_pref, mask = s_mask;
        for (int64_t i = tid; i < n; i += blockDim.x) {
            const uint32_t key = topk_key(row[i]);
            if ((key & mask) == pref) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            int want = s_want;
            unsigned cum = 0;
            for (int b = 255; b >= 0; b--) {
                if (cum + hist[b] >= (unsigned)want) {
                    s_want = want - (int)cum;
                    s_pref = pref | ((uint32_t)b << shift);
                    s_mask = mask | (255u << shift);
                    break;
                }
                cum += hist[b];
            }
        }
        __syncthreads();
    }
    const uint32_t tau = s_pref;     /* key of the k-th largest */
    const int n_eq = s_want;         /* how many elements equal to tau belong to the top k */
    const int n_gt = k - n_eq;
    for (int64_t i = tid; i < n; i += blockDim.x) {
        const uint32_t key = topk_key(row[i]);
        if (key > tau) {
            const unsigned slot = atomicAdd(&s_gt, 1u);
            cv[slot] = row[i];
            ci[slot] = (int32_t)i;
        } else if (key == tau) {
            const unsigned slot = atomicAdd(&s_eq, 1u);
            if ((int)slot < n_eq) {
                cv[n_gt + slot] = row[i];
                ci[n_gt + slot] = (int32_t)i;
            }
        }
    }
    __syncthreads();
    if (tid < k) { /* rank: by value descending, index ascending */
        const float v = cv[tid];
        const int32_t id = ci[tid];
        const uint32_t kv = topk_key(v);
        int rank = 0;
        for (int j = 0; j < k; j++) {
            const uint32_t kj = topk_key(cv[j]);
            rank += kj > kv || (kj == kv && ci[j] < id);
        }
        out_vals[(size_t)blockIdx.x * k + rank] = v;
        out_ids[(size_t)blockIdx.x * k + rank] = id;
    }
}

extern "C" lmx_status lmx_cuda_topk(const float *logits, int rows, int64_t n, int k, float *vals,
                                    int32_t *ids, lmx_cuda_stream stream) {
    if (!logits || !vals || !ids || rows < 1 || n < 1 || n > INT32_MAX || k < 1 || k > TOPK_MAX || k > n)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda topk: bad arguments (rows %d, n %lld, k %d; k <= %d)",
                         rows, (long long)n, k, TOPK_MAX);
    topk_kernel<<<rows, TOPK_THREADS, 0, LMX_CU_STREAM(stream)>>>(logits, n, k, vals, ids);
    LMX_CU_CHECK_LAUNCH("topk");
    return LMX_OK;
}
