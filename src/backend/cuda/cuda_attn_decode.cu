/* cuda_attn_decode.cu — decode attention (few query rows against a long KV cache) with the GQA group
 * read once and the split merge fused into the same launch.
 *
 * Cache [n_kv_heads][capacity][head_dim] of F32, F16 or BF16, position j in slot j % capacity (a ring on
 * sliding layers) or, paged (lmx_cuda_kv_map), in the slot of row t's block table: then each lane
 * looks up the slot of its key of a tile once and the warp shares them through shared memory; the
 * launch may cover a subset of the rows (map->rows), each row with its own sequence and length.
 * Grid (n_kv_heads * chunks, splits, T), 128 threads (4 warps). A block owns one kv head and a chunk of up to 4 of its query heads (GQA: the K/V rows are read once for them), one
 * split of the row's visible key range [lo, pos] and one query row t. Inside the block no barrier
 * runs per key tile: the warps take interleaved tiles of 32 keys; in a tile lane i scores key i
 * against the 4 query heads (the whole key row from global, q broadcast from shared; with a 16-bit
 * cache and head_dim 64/128 the tile's K row and the lane's V dims of all 32 keys are loaded into
 * registers at once, one memory round trip per tile), the warp takes
 * the tile max with shuffles (online softmax, running sums kept per lane), writes p to warp-private
 * shared memory and does P·V with lane i owning head_dim/32 dims of every value row (coalesced).
 * Then the 4 warps merge in shared memory; with one split the block writes the output, else it
 * writes its partial (unnormalised o, max, sum) to the workspace and the last block of the row to
 * finish (a per-(row, chunk) counter, atomically incremented after a fence, reset by that last block)
 * merges the splits in split order (deterministic) and writes the output.
 *
 * The split count of a row is a function of its own key range (grid sized from max_len only), so a
 * launch sized for the cache capacity is replay-invariant (CUDA graphs) and computes exactly what a
 * launch sized for the current length computes. fp32 math; 16-bit values are widened exactly.
 */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

#define AD_G 4           /* query heads per block */
#define AD_MAX_SPLITS 64 /* = the split-K kernel's: the workspace has the same size */
#define AD_MIN_KEYS 64   /* at least this many keys per split (4 warps) */

/* two 16-bit values packed in a word (the lower address in the low half) -> floats */
template <typename KT> __device__ __forceinline__ float2 ad_unpack2(uint32_t u);
template <> __device__ __forceinline__ float2 ad_unpack2<__nv_bfloat16>(uint32_t u) {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
template <> __device__ __forceinline__ float2 ad_unpack2<__half>(uint32_t u) {
    return __half22float2(*reinterpret_cast<const __half2 *>(&u));
}
template <typename KT> struct ad_is16 { static constexpr bool v = false; };
template <> struct ad_is16<__nv_bfloat16> { static constexpr bool v = true; };
template <> struct ad_is16<__half> { static constexpr bool v = true; };

/* N consecutive values (N = 2, 4 or 8; aligned to N elements) */
template <typename KT, int N> __device__ __forceinline__ void ad_loadn(const KT *p, float (&f)[N]);
template <> __device__ __forceinline__ void ad_loadn<float, 2>(const float *p, float (&f)[2]) {
    const float2 a = *reinterpret_cast<const float2 *>(p);
    f[0] = a.x; f[1] = a.y;
}
template <> __device__ __forceinline__ void ad_loadn<float, 4>(const float *p, float (&f)[4]) {
    const float4 a = *reinterpret_cast<const float4 *>(p);
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
}
template <> __device__ __forceinline__ void ad_loadn<float, 8>(const float *p, float (&f)[8]) { lmx_cu_load8<float>(p, f); }
template <> __device__ __forceinline__ void ad_loadn<__nv_bfloat16, 2>(const __nv_bfloat16 *p, float (&f)[2]) {
    const uint32_t u = *reinterpret_cast<const uint32_t *>(p);
    f[0] = __uint_as_float(u << 16); f[1] = __uint_as_float(u & 0xffff0000u);
}
template <> __device__ __forceinline__ void ad_loadn<__nv_bfloat16, 4>(const __nv_bfloat16 *p, float (&f)[4]) {
    const uint2 u = *reinterpret_cast<const uint2 *>(p);
    f[0] = __uint_as_float(u.x << 16); f[1] = __uint_as_float(u.x & 0xffff0000u);
    f[2] = __uint_as_float(u.y << 16); f[3] = __uint_as_float(u.y & 0xffff0000u);
}
template <> __device__ __forceinline__ void ad_loadn<__nv_bfloat16, 8>(const __nv_bfloat16 *p, float (&f)[8]) {
    lmx_cu_load8<__nv_bfloat16>(p, f);
}
template <> __device__ __forceinline__ void ad_loadn<__half, 2>(const __half *p, float (&f)[2]) {
    const float2 v = ad_unpack2<__half>(*reinterpret_cast<const uint32_t *>(p));
    f[0] = v.x; f[1] = v.y;
}
template <> __device__ __forceinline__ void ad_loadn<__half, 4>(const __half *p, float (&f)[4]) {
    const uint2 u = *reinterpret_cast<const uint2 *>(p);
    const float2 a = ad_unpack2<__half>(u.x), b = ad_unpack2<__half>(u.y);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
}
template <> __device__ __forceinline__ void ad_loadn<__half, 8>(const __half *p, float (&f)[8]) { lmx_cu_load8<__half>(p, f); }

/* (slot0 + i) % cap for slot0 < cap, i < 32: one subtraction unless the ring is smaller than 32 */
__device__ __forceinline__ int64_t ad_wrap(int64_t sl, int64_t cap) {
    if (sl >= cap) {
        sl -= cap;
        if (sl >= cap) sl %= cap;
    }
    return sl;
}

/* splits for a row with `len` visible keys: `want` (about two blocks per multiprocessor in all), at
 * least min_keys keys each, at most the grid's */
__device__ __forceinline__ int ad_splits(int64_t len, int want, int min_keys, int grid) {
    int64_t by_len = (len + min_keys - 1) / min_keys;
    int64_t n = want < by_len ? want : by_len;
    if (n > grid) n = grid;
    return n < 1 ? 1 : (int)n;
}

/* sc[g] += f[0..8) · qs[g][d..d+8) for each query head g of the block (one fmaf chain per g) */
template <int HDMAX>
__device__ __forceinline__ void ad_dot8(const float (&f)[8], const float (&qs)[AD_G][HDMAX], int d, float (&sc)[AD_G]) {
#pragma unroll
    for (int g = 0; g < AD_G; g++) {
        const float4 qa = *reinterpret_cast<const float4 *>(&qs[g][d]);
        const float4 qb = *reinterpret_cast<const float4 *>(&qs[g][d + 4]);
        float acc = sc[g];
        acc = fmaf(f[0], qa.x, acc); acc = fmaf(f[1], qa.y, acc);
        acc = fmaf(f[2], qa.z, acc); acc = fmaf(f[3], qa.w, acc);
        acc = fmaf(f[4], qb.x, acc); acc = fmaf(f[5], qb.y, acc);
        acc = fmaf(f[6], qb.z, acc); acc = fmaf(f[7], qb.w, acc);
        sc[g] = acc;
    }
}

/* HDMAX: 64, 128 or 256; EXACT: head_dim == HDMAX, else head_dim = hd_arg, a multiple of 8 below HDMAX
 * (lane i then owns value dims i*DPL.. only while they are < head_dim) */
template <int HDMAX, bool EXACT, typename KT, int AD_WARPS>
__global__ void __launch_bounds__(AD_WARPS * 32)
attn_decode_kernel(const float *__restrict__ q, const KT *__restrict__ kc, const KT *__restrict__ vc,
                   const int32_t *__restrict__ positions, int n_heads, int group, int n_chunks, int64_t cap,
                   float scale, float softcap, int window, int want, int min_keys, int hd_arg,
                   float *__restrict__ ws, int32_t *__restrict__ cnt, float *__restrict__ out,
                   lmx_cuda_kv_map map, const float *__restrict__ sinks) {
    constexpr int AD_THREADS = AD_WARPS * 32;
    const int HD = EXACT ? HDMAX : hd_arg;
    constexpr int DPL = HDMAX / 32; /* value dims per lane */
    __shared__ __align__(16) float qs[AD_G][HDMAX];
    __shared__ __align__(16) float ps[AD_WARPS][32][AD_G];
    __shared__ __align__(16) float wo[AD_WARPS][AD_G][HDMAX];
    __shared__ float wm[AD_WARPS][AD_G], wl[AD_WARPS][AD_G];
    __shared__ float se[AD_G][AD_MAX_SPLITS], sden[AD_G], smax[AD_G];
    __shared__ int s_last;
    __shared__ int ksl[AD_WARPS][32]; /* paged: the slots of the warp's current tile */

    const int kvh = blockIdx.x / n_chunks, chunk_i = blockIdx.x % n_chunks;
    /* t: the query row; z: its index in this launch (workspace and counters are per launch row) */
    const int s = blockIdx.y, z = blockIdx.z, t = map.rows ? map.rows[z] : z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int h0 = kvh * group + chunk_i * AD_G;
    const int ng = group - chunk_i * AD_G < AD_G ? group - chunk_i * AD_G : AD_G;
    const int64_t pos = positions[t];
    int64_t lo = window > 0 ? pos - window + 1 : 0;
    if (lo < 0) lo = 0;
    const int64_t len = pos - lo + 1;
    const int n_splits = ad_splits(len, want, min_keys, (int)gridDim.y);
    if (s >= n_splits) return; /* whole block: no barrier reached */
    const int64_t chunk = (len + n_splits - 1) / n_splits;
    const int64_t beg = lo + (int64_t)s * chunk;
    int64_t end = beg + chunk;
    if (end > pos + 1) end = pos + 1;

    const int32_t *tab = lmx_cu_kv_table(map, t); /* NULL: ring */
    const int shift = map.block_shift;
    /* paged: lane i puts the slot of key t0 + i into ksl (uniform branch); the ring derives slots from
     * t0 % cap without a table */
    auto fill_slots = [&](int64_t t0) {
        if (tab) {
            ksl[warp][lane] = t0 + lane < end ? (int)lmx_cu_kv_slot(tab, shift, t0 + lane, cap) : 0;
            __syncwarp();
        }
    };
    auto slot_of = [&](int64_t slot0, int i) -> int64_t { return tab ? ksl[warp][i] : ad_wrap(slot0 + i, cap); };
    const KT *kb = kc + (size_t)kvh * cap * HD;
    const KT *vb = vc + (size_t)kvh * cap * HD;
    const bool vlane = EXACT || lane * DPL < HD; /* this lane owns value dims */
    float m[AD_G], lsum[AD_G], o[AD_G][DPL];
#pragma unroll
    for (int g = 0; g < AD_G; g++) {
        m[g] = -INFINITY;
        lsum[g] = 0.f;
#pragma unroll
        for (int e = 0; e < DPL; e++) o[g][e] = 0.f;
    }
    /* RAW (16-bit cache, head_dim 64 or 128): a tile's whole K row (lane = key) and the lane's value
     * dims of all 32 keys are loaded into registers at once (one memory round trip per tile; the first
     * tile's loads overlap the q staging); otherwise the rows stream through the loops below. */
    constexpr bool RAW = ad_is16<KT>::v && EXACT && HDMAX <= 128;
    constexpr int KW = RAW ? HDMAX / 8 : 1;  /* 16-byte words of a K row */
    constexpr int VW = RAW ? DPL / 2 : 1;    /* 32-bit words of a lane's value dims */
    uint4 kr[KW];
    uint32_t vr[32][VW];
    auto load_raw = [&](int64_t t0) {
        const int nv = end - t0 < 32 ? (int)(end - t0) : 32;
        const int64_t slot0 = t0 % cap;
        fill_slots(t0);
        if (lane < nv) {
            const uint4 *kp = reinterpret_cast<const uint4 *>(kb + (size_t)slot_of(slot0, lane) * HD);
#pragma unroll
            for (int i = 0; i < KW; i++) kr[i] = kp[i];
        } else {
#pragma unroll
            for (int i = 0; i < KW; i++) kr[i] = make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int jj = 0; jj < 32; jj++) {
            if (jj < nv) {
                const KT *vp = vb + (size_t)slot_of(slot0, jj) * HD + lane * DPL;
                if (VW == 1) {
                    vr[jj][0] = *reinterpret_cast<const uint32_t *>(vp);
                } else {
                    const uint2 u = *reinterpret_cast<const uint2 *>(vp);
                    vr[jj][0] = u.x;
                    vr[jj][VW - 1] = u.y;
                }
            } else {
#pragma unroll
                for (int w = 0; w < VW; w++) vr[jj][w] = 0u; /* p = 0 there; keep NaN garbage out */
            }
        }
    };
    if constexpr (RAW) {
        if (beg + (int64_t)warp * 32 < end) load_raw(beg + (int64_t)warp * 32);
    }

    for (int i = tid; i < AD_G * HD; i += AD_THREADS) {
        const int g = i / HD, d = i % HD;
        qs[g][d] = g < ng ? q[((size_t)t * n_heads + h0 + g) * HD + d] : 0.f;
    }
    __syncthreads();

    for (int64_t t0 = beg + (int64_t)warp * 32; t0 < end; t0 += AD_WARPS * 32) {
        const int nv = end - t0 < 32 ? (int)(end - t0) : 32;
        const int64_t slot0 = t0 % cap; /* ring: position j in slot j % cap */
        const bool valid = lane < nv;
        if constexpr (!RAW) fill_slots(t0); /* RAW: load_raw filled them */
        float sc[AD_G];
#pragma unroll
        for (int g = 0; g < AD_G; g++) sc[g] = 0.f;
        if constexpr (RAW) {
#pragma unroll
            for (int i = 0; i < KW; i++) {
                const uint32_t u[4] = {kr[i].x, kr[i].y, kr[i].z, kr[i].w};
                float f[8];
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const float2 v = ad_unpack2<KT>(u[k]);
                    f[2 * k] = v.x;
                    f[2 * k + 1] = v.y;
                }
                ad_dot8(f, qs, 8 * i, sc);
            }
        } else if (valid) {
            const KT *kp = kb + (size_t)slot_of(slot0, lane) * HD;
#pragma unroll 4
            for (int d = 0; d < (EXACT ? HDMAX : HD); d += 8) {
                float f[8];
                lmx_cu_load8<KT>(kp + d, f);
                ad_dot8(f, qs, d, sc);
            }
        }
        float p[AD_G];
#pragma unroll
        for (int g = 0; g < AD_G; g++) {
            float v = sc[g] * scale;
            if (softcap > 0.f) v = softcap * tanhf(v / softcap);
            v = valid ? v : -INFINITY;
            const float m_new = fmaxf(m[g], lmx_cu_warp_max(v)); /* lane 0's key is valid: finite */
            const float corr = expf(m[g] - m_new);               /* m = -inf at first: 0 */
            p[g] = valid ? expf(v - m_new) : 0.f;
            lsum[g] = lsum[g] * corr + p[g];
            m[g] = m_new;
#pragma unroll
            for (int e = 0; e < DPL; e++) o[g][e] *= corr;
        }
        *reinterpret_cast<float4 *>(&ps[warp][lane][0]) = make_float4(p[0], p[1], p[2], p[3]);
        __syncwarp();
        if constexpr (RAW) {
#pragma unroll
            for (int jj = 0; jj < 32; jj++) { /* keys past nv: p = 0 and zero values */
                const float4 pj = *reinterpret_cast<const float4 *>(&ps[warp][jj][0]);
#pragma unroll
                for (int w = 0; w < VW; w++) {
                    const float2 f = ad_unpack2<KT>(vr[jj][w]);
                    o[0][2 * w] = fmaf(pj.x, f.x, o[0][2 * w]); o[0][2 * w + 1] = fmaf(pj.x, f.y, o[0][2 * w + 1]);
                    o[1][2 * w] = fmaf(pj.y, f.x, o[1][2 * w]); o[1][2 * w + 1] = fmaf(pj.y, f.y, o[1][2 * w + 1]);
                    o[2][2 * w] = fmaf(pj.z, f.x, o[2][2 * w]); o[2][2 * w + 1] = fmaf(pj.z, f.y, o[2][2 * w + 1]);
                    o[3][2 * w] = fmaf(pj.w, f.x, o[3][2 * w]); o[3][2 * w + 1] = fmaf(pj.w, f.y, o[3][2 * w + 1]);
                }
            }
            __syncwarp(); /* ps is rewritten by the next tile */
            if (t0 + AD_WARPS * 32 < end) load_raw(t0 + AD_WARPS * 32);
        } else {
#pragma unroll 8
            for (int jj = 0; jj < (vlane ? nv : 0); jj++) {
                float f[DPL];
                ad_loadn<KT, DPL>(vb + (size_t)slot_of(slot0, jj) * HD + lane * DPL, f);
                const float4 pj = *reinterpret_cast<const float4 *>(&ps[warp][jj][0]);
#pragma unroll
                for (int e = 0; e < DPL; e++) {
                    o[0][e] = fmaf(pj.x, f[e], o[0][e]);
                    o[1][e] = fmaf(pj.y, f[e], o[1][e]);
                    o[2][e] = fmaf(pj.z, f[e], o[2][e]);
                    o[3][e] = fmaf(pj.w, f[e], o[3][e]);
                }
            }
            __syncwarp(); /* ps is rewritten by the next tile */
        }
    }
    /* the block's 4 warps -> one (o, max, sum) per head */
#pragma unroll
    for (int g = 0; g < AD_G; g++) {
        const float l = lmx_cu_warp_sum(lsum[g]);
        if (lane == 0) {
            wm[warp][g] = m[g];
            wl[warp][g] = l;
        }
        if (vlane)
#pragma unroll
            for (int e = 0; e < DPL; e++) wo[warp][g][lane * DPL + e] = o[g][e];
    }
    __syncthreads();
    for (int i = tid; i < ng * HD; i += AD_THREADS) {
        const int g = i / HD, d = i % HD;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < AD_WARPS; w++) M = fmaxf(M, wm[w][g]);
        float num = 0.f, den = 0.f;
        if (M != -INFINITY) {
#pragma unroll
            for (int w = 0; w < AD_WARPS; w++) {
                const float e = expf(wm[w][g] - M); /* a warp without keys: exp(-inf) = 0 */
                num = fmaf(e, wo[w][g][d], num);
                den = fmaf(e, wl[w][g], den);
            }
        }
        if (n_splits == 1) {
            num *= lmx_cu_sink_fold(lmx_cu_sink_of(sinks, h0 + g), M, &den);
            out[((size_t)t * n_heads + h0 + g) * HD + d] = den > 0.f ? num / den : 0.f;
        } else {
            float *wp = ws + (((size_t)z * n_heads + h0 + g) * AD_MAX_SPLITS + s) * (HD + 2);
            wp[d] = num;
            if (d == 0) {
                wp[HD] = M;
                wp[HD + 1] = den;
            }
        }
    }
    if (n_splits == 1) return;
    /* the last block of this (row, chunk) merges the splits */
    __threadfence(); /* this thread's partial is visible device-wide before the count */
    __syncthreads();
    int32_t *ctr = cnt + (size_t)z * n_heads + h0;
    if (tid == 0) s_last = atomicAdd(ctr, 1) == n_splits - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    if (warp < ng) { /* warp g: the split weights of head g */
        const float *base = ws + ((size_t)z * n_heads + h0 + warp) * AD_MAX_SPLITS * (HD + 2);
        float ms[2], ls[2], M = -INFINITY;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int sp = lane + 32 * k;
            ms[k] = sp < n_splits ? __ldcg(base + (size_t)sp * (HD + 2) + HD) : -INFINITY;
            ls[k] = sp < n_splits ? __ldcg(base + (size_t)sp * (HD + 2) + HD + 1) : 0.f;
            M = fmaxf(M, ms[k]);
        }
        M = lmx_cu_warp_max(M);
        float den = 0.f;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const float e = ms[k] == -INFINITY ? 0.f : expf(ms[k] - M);
            se[warp][lane + 32 * k] = e;
            den = fmaf(e, ls[k], den);
        }
        den = lmx_cu_warp_sum(den);
        if (lane == 0) {
            sden[warp] = den;
            smax[warp] = M;
        }
    }
    __syncthreads();
    for (int i = tid; i < ng * HD; i += AD_THREADS) {
        const int g = i / HD, d = i % HD;
        const float *base = ws + ((size_t)z * n_heads + h0 + g) * AD_MAX_SPLITS * (HD + 2);
        float num = 0.f;
        for (int sp = 0; sp < n_splits; sp++) num = fmaf(se[g][sp], __ldcg(base + (size_t)sp * (HD + 2) + d), num);
        float den = sden[g];
        num *= lmx_cu_sink_fold(lmx_cu_sink_of(sinks, h0 + g), smax[g], &den);
        out[((size_t)t * n_heads + h0 + g) * HD + d] = den > 0.f ? num / den : 0.f;
    }
    if (tid == 0) *ctr = 0; /* ready for the next launch (graph replays included) */
}

static bool ad_hd_ok(int hd) { return hd >= 8 && hd <= 256 && hd % 8 == 0; }

extern "C" bool lmx_cuda_attention_decode_supported(const lmx_cuda_attn *a) {
    return a && lmx_cu_float_dtype(a->kv_dtype) && ad_hd_ok(a->head_dim) &&
           a->n_heads >= 1 && a->n_kv_heads >= 1 && a->n_heads % a->n_kv_heads == 0 && a->window >= 0 &&
           a->capacity >= 1;
}

extern "C" size_t lmx_cuda_attention_decode_counters(const lmx_cuda_attn *a, int T) {
    if (!a || T < 1) return 0;
    return (size_t)T * a->n_heads;
}

/* warps per block nw (4 or 8), about `target` blocks in all, at least min_keys keys per split */
static lmx_status ad_launch(const lmx_cuda_attn *a, const float *q, const void *k_cache, const void *v_cache,
                            const int32_t *positions, int T, int64_t max_len, float *workspace, int32_t *counters,
                            float *out, lmx_cuda_stream stream, int nw, int64_t target, int min_keys) {
    if (!a || !q || !k_cache || !v_cache || !positions || !workspace || !counters || !out || T < 1 || max_len < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda decode attention: NULL argument, T %d or max_len %lld", T,
                         (long long)max_len);
    if (!lmx_cuda_attention_decode_supported(a))
        return lmx_error(LMX_ERR_UNSUPPORTED,
                         "cuda decode attention: unsupported shape (heads %d/%d, head_dim %d, kv dtype %d, window %d)",
                         a->n_heads, a->n_kv_heads, a->head_dim, (int)a->kv_dtype, a->window);
    const int group = a->n_heads / a->n_kv_heads;
    const int n_chunks = (group + AD_G - 1) / AD_G;
    const int64_t blocks_x = (int64_t)a->n_kv_heads * n_chunks;
    if (blocks_x > 0x7fffffff || T > 65535)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda decode attention: grid too large (T %d)", T);
    const int64_t span = a->window > 0 && a->window < max_len ? a->window : max_len;
    /* paged: the splits of a row do not depend on the other rows of the call (as for one row alone,
     * so a row computes bit for bit what it computes alone) */
    const int64_t rows_n = a->map ? 1 : T;
    int64_t want = (target + blocks_x * rows_n - 1) / (blocks_x * rows_n);
    if (want > AD_MAX_SPLITS) want = AD_MAX_SPLITS;
    const int64_t by_len = (span + min_keys - 1) / min_keys;
    int n_splits = (int)(want < by_len ? want : by_len); /* the grid; rows may use fewer */
    if (n_splits < 1) n_splits = 1;
    const lmx_cuda_kv_map map = lmx_cu_map_of(a);
    const int n_rows = map.rows ? map.n_rows : T; /* the rows this launch computes */
    if (n_rows < 1) return LMX_OK;
    dim3 grid((unsigned)blocks_x, (unsigned)n_splits, (unsigned)n_rows);
    cudaStream_t st = LMX_CU_STREAM(stream);
#define LMX_AD(HDM, EX, KT)                                                                                  \
    do {                                                                                                     \
        if (nw == 8)                                                                                         \
            attn_decode_kernel<HDM, EX, KT, 8><<<grid, 256, 0, st>>>(                                        \
                q, (const KT *)k_cache, (const KT *)v_cache, positions, a->n_heads, group, n_chunks,         \
                a->capacity, a->scale, a->softcap, a->window, (int)want, min_keys, a->head_dim, workspace,   \
                counters, out, map, a->sinks);                                                               \
        else                                                                                                 \
            attn_decode_kernel<HDM, EX, KT, 4><<<grid, 128, 0, st>>>(                                        \
                q, (const KT *)k_cache, (const KT *)v_cache, positions, a->n_heads, group, n_chunks,         \
                a->capacity, a->scale, a->softcap, a->window, (int)want, min_keys, a->head_dim, workspace,   \
                counters, out, map, a->sinks);                                                               \
    } while (0)
#define LMX_AD_DT(HDM, EX)                                                                                   \
    do {                                                                                                     \
        if (a->kv_dtype == LMX_DTYPE_BF16) LMX_AD(HDM, EX, __nv_bfloat16);                                   \
        else if (a->kv_dtype == LMX_DTYPE_F16) LMX_AD(HDM, EX, __half);                                      \
        else LMX_AD(HDM, EX, float);                                                                         \
    } while (0)
    const int hd = a->head_dim;
    if (hd == 64) LMX_AD_DT(64, true);
    else if (hd == 128) LMX_AD_DT(128, true);
    else if (hd == 256) LMX_AD_DT(256, true);
    else if (hd < 64) LMX_AD_DT(64, false);
    else if (hd < 128) LMX_AD_DT(128, false);
    else LMX_AD_DT(256, false);
#undef LMX_AD_DT
#undef LMX_AD
    LMX_CU_CHECK_LAUNCH("decode attention");
    return LMX_OK;
}

/* 4 warps per block, about two blocks per multiprocessor in all (H100/H200: 132), >= 64 keys per split */
extern "C" lmx_status lmx_cuda_attention_decode(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                                const void *v_cache, const int32_t *positions, int T,
                                                int64_t max_len, float *workspace, int32_t *counters, float *out,
                                                lmx_cuda_stream stream) {
    return ad_launch(a, q, k_cache, v_cache, positions, T, max_len, workspace, counters, out, stream, 4, 264,
                     AD_MIN_KEYS);
}

extern "C" lmx_status lmx_cuda_attention_decode_ex(const lmx_cuda_attn *a, const float *q, const void *k_cache,
                                                   const void *v_cache, const int32_t *positions, int T,
                                                   int64_t max_len, float *workspace, int32_t *counters,
                                                   float *out, int warps, int target_blocks, int min_keys,
                                                   lmx_cuda_stream stream) {
    if ((warps != 4 && warps != 8) || target_blocks < 1 || min_keys < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda decode attention: warps %d, target %d, min_keys %d", warps,
                         target_blocks, min_keys);
    return ad_launch(a, q, k_cache, v_cache, positions, T, max_len, workspace, counters, out, stream, warps,
                     target_blocks, min_keys);
}
