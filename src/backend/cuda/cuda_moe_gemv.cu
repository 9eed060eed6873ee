/* cuda_moe_gemv.cu — the expert-indexed GEMV of the mixture-of-experts ops (lmx_cuda_moe_gemv,
 * cuda_kernels.h): y[i] = x_i · W_{e(i)}ᵀ for the entries i of the route order, the expert of each
 * entry read from the routing table on the device.
 *
 * Layout of the work: a block of 8 warps owns 8 consecutive rows of one expert's matrix (a warp per
 * row); its lanes stride over the row in units of 16 bytes (4 fp32, 8 f16/bf16, 32 4-bit codes, 16
 * 8-bit codes, 64 2-bit codes, 32 fp4 codes, 16 fp8 codes; 32-element packs of 3/5/6-bit codes, and
 * single elements for dense rows that do not divide), decode each unit exactly to fp32 (affine
 * fmaf(scale, q, bias); fp modes as cuda_mx_decode.cuh) and multiply it with up to BMAX x rows.
 *   per entry   (T < 16: decode) grid.y = the T*k entries, one x row each: each chosen expert's rows
 *               are read once, and only those;
 *   per expert  grid (rows / 8, E, ceil(T / 8)): block (e, z) takes entries start[e] + 8 z .. of
 *               expert e (blocks past the expert's rows leave at once): weights read once per 8 rows.
 * The warp sums in a fixed order (deterministic); the bias of row r of expert e is bias[e * n + r].
 * The gate|up pair of decode (lmx_cuda_moe_gate_up): one launch reads row r of both stacks in the same
 * warp and writes act(gate) * up (lmx_cu_act_mul).
 */
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_mx_decode.cuh"

#define MG_WARPS 8
#define MG_GROUPED_ROWS 8 /* entries per block in the per-expert form */

namespace {

enum {
    F_F32,
    F_F16,
    F_BF16,
    F_DENSE1, /* dense, one element at a time (k not a multiple of the 16-byte unit) */
    F_Q2,
    F_Q4,
    F_Q8,
    F_Q2P, /* 2-bit rows whose length is not a multiple of 64: 32-element packs */
    F_Q3,
    F_Q5,
    F_Q6,
    F_MXFP4,
    F_MXFP8,
    F_NVFP4,
};

/* elements per unit */
template <int F> struct fmt_u {
    static constexpr int U = F == F_F32 ? 4 : F == F_F16 || F == F_BF16 ? 8 : F == F_DENSE1 ? 1
                           : F == F_Q2 ? 64 : F == F_Q8 || F == F_MXFP8 ? 16 : 32;
};

typedef struct mg_args {
    const void *w;      /* expert 0's codes / elements */
    const void *s, *b;  /* affine: scales, biases of expert 0 (elements of sdt); fp modes: s uint8 codes */
    const float *bias;  /* fp32 [E * n] or NULL */
    int wdt, sdt;       /* dense element type; affine scale type */
    int gs;
    size_t row_bytes;   /* bytes of one row's codes / elements */
    int n, k;           /* one expert's matrix */
    const float *x;
    int gather, topk;
    const int32_t *ids, *order, *start;
    float *y;
} mg_args;

__device__ __forceinline__ float q_of(uint32_t v) { /* a code < 2^23 as a float, exactly */
    return __uint_as_float(v | 0x4B000000u) - 8388608.0f;
}

/* unit u of row `row` (global row index in the stack) decoded into v */
template <int F>
__device__ __forceinline__ void decode_unit(const mg_args &a, size_t row, int u, float (&v)[fmt_u<F>::U]) {
    constexpr int U = fmt_u<F>::U;
    const uint8_t *wr = (const uint8_t *)a.w + row * a.row_bytes;
    if constexpr (F == F_F32 || F == F_F16 || F == F_BF16) {
        const uint4 q = lmx_cu_ld_stream(wr + (size_t)u * 16);
        const uint32_t wd[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if constexpr (F == F_F32) {
                v[i] = __uint_as_float(wd[i]);
            } else if constexpr (F == F_BF16) {
                v[2 * i] = __uint_as_float(wd[i] << 16);
                v[2 * i + 1] = __uint_as_float(wd[i] & 0xffff0000u);
            } else {
                const float2 h = __half22float2(*reinterpret_cast<const __half2 *>(&wd[i]));
                v[2 * i] = h.x;
                v[2 * i + 1] = h.y;
            }
        }
    } else if constexpr (F == F_DENSE1) {
        v[0] = lmx_cu_ld(a.w, row * (size_t)a.k + u, a.wdt);
    } else if constexpr (F == F_MXFP4 || F == F_MXFP8 || F == F_NVFP4) {
        constexpr int MODE = F == F_MXFP4 ? LMX_QUANT_MXFP4 : F == F_MXFP8 ? LMX_QUANT_MXFP8 : LMX_QUANT_NVFP4;
        const uint8_t *sr = (const uint8_t *)a.s + row * (size_t)(a.k / mx_fmt<MODE>::GS);
        mx_decode<MODE>(lmx_cu_ld_stream(wr + (size_t)u * 16), sr, u, v);
    } else { /* affine */
        constexpr int BITS = F == F_Q2 || F == F_Q2P ? 2 : F == F_Q4 ? 4 : F == F_Q8 ? 8 : F == F_Q3 ? 3
                           : F == F_Q5 ? 5 : 6;
        constexpr uint32_t MASK = (1u << BITS) - 1u;
        const size_t g0 = row * (size_t)(a.k / a.gs) + (size_t)u * U / a.gs;
        const float s0 = lmx_cu_ld(a.s, g0, a.sdt), b0 = lmx_cu_ld(a.b, g0, a.sdt);
        if constexpr (F == F_Q2 || F == F_Q4 || F == F_Q8) { /* 16 bytes: 4 words of 32 / BITS codes */
            const uint4 q = lmx_cu_ld_stream(wr + (size_t)u * 16);
            const uint32_t wd[4] = {q.x, q.y, q.z, q.w};
            /* 2-bit units span two groups of 32 */
            const bool two = U > a.gs;
            const float s1 = two ? lmx_cu_ld(a.s, g0 + 1, a.sdt) : s0, b1 = two ? lmx_cu_ld(a.b, g0 + 1, a.sdt) : b0;
            constexpr int EPW = 32 / BITS;
#pragma unroll
            for (int i = 0; i < U; i++) {
                const float q1 = q_of((wd[i / EPW] >> (BITS * (i % EPW))) & MASK);
                v[i] = i < 32 ? fmaf(s0, q1, b0) : fmaf(s1, q1, b1);
            }
        } else { /* 32 codes in BITS words, an LSB-first bitstream */
            const uint32_t *wp = (const uint32_t *)(const void *)wr + (size_t)u * BITS;
            uint32_t wd[BITS];
#pragma unroll
            for (int i = 0; i < BITS; i++) wd[i] = __ldg(wp + i);
#pragma unroll
            for (int i = 0; i < 32; i++) {
                const int bit = i * BITS, wi = bit / 32, off = bit % 32;
                uint32_t c = wd[wi] >> off;
                if (off + BITS > 32) c |= wd[wi + 1] << (32 - off);
                v[i] = fmaf(s0, q_of(c & MASK), b0);
            }
        }
    }
}

/* The gate|up pair of lmx_cuda_moe_gate_up, per entry (decode): each warp takes row r of both stacks
 * (two accumulators over one x row) and writes act(gate) * up. */
template <int F>
__global__ void __launch_bounds__(MG_WARPS * 32) moe_gate_up_kernel(mg_args a, mg_args b, int act) {
    constexpr int U = fmt_u<F>::U;
    const int i0 = blockIdx.y, e = a.ids[a.order[i0]];
    const int lane = threadIdx.x & 31, r = blockIdx.x * MG_WARPS + (threadIdx.x >> 5);
    if (r >= a.n) return;
    const size_t row = (size_t)e * a.n + r;
    const float *xr = a.x + (size_t)(a.order[i0] / a.topk) * a.k;
    float ag = 0.0f, au = 0.0f;
    const int units = a.k / U;
    for (int u = lane; u < units; u += 32) {
        float vg[U], vu[U];
        decode_unit<F>(a, row, u, vg);
        decode_unit<F>(b, row, u, vu);
        const float *xp = xr + (size_t)u * U;
        float dg = 0.0f, du = 0.0f;
        if constexpr (U % 4 == 0) {
#pragma unroll
            for (int i = 0; i < U; i += 4) {
                const float4 xv = __ldg(reinterpret_cast<const float4 *>(xp + i));
                dg = fmaf(vg[i], xv.x, dg);
                dg = fmaf(vg[i + 1], xv.y, dg);
                dg = fmaf(vg[i + 2], xv.z, dg);
                dg = fmaf(vg[i + 3], xv.w, dg);
                du = fmaf(vu[i], xv.x, du);
                du = fmaf(vu[i + 1], xv.y, du);
                du = fmaf(vu[i + 2], xv.z, du);
                du = fmaf(vu[i + 3], xv.w, du);
            }
        } else {
            const float xv = __ldg(xp);
            dg = vg[0] * xv;
            du = vu[0] * xv;
        }
        ag += dg;
        au += du;
    }
    ag = lmx_cu_warp_sum(ag);
    au = lmx_cu_warp_sum(au);
    if (lane == 0) {
        const float g = ag + (a.bias ? a.bias[row] : 0.0f), up = au + (b.bias ? b.bias[row] : 0.0f);
        a.y[(size_t)i0 * a.n + r] = lmx_cu_act_mul(act, g, up);
    }
}

/* grid.x: blocks of MG_WARPS rows; per entry (GROUPED false): grid.y = entry; per expert: grid.y =
 * expert, grid.z = block of BMAX of its entries */
template <int F, int BMAX, bool GROUPED>
__global__ void __launch_bounds__(MG_WARPS * 32) moe_gemv_kernel(mg_args a) {
    constexpr int U = fmt_u<F>::U;
    int i0, nb, e;
    if constexpr (GROUPED) {
        e = blockIdx.y;
        const int s1 = a.start[e + 1];
        i0 = a.start[e] + (int)blockIdx.z * BMAX;
        if (i0 >= s1) return;
        nb = s1 - i0 < BMAX ? s1 - i0 : BMAX;
    } else {
        i0 = blockIdx.y;
        nb = 1;
        e = a.ids[a.order[i0]];
    }
    const int lane = threadIdx.x & 31, r = blockIdx.x * MG_WARPS + (threadIdx.x >> 5);
    if (r >= a.n) return;
    const size_t row = (size_t)e * a.n + r;
    const float *xr[BMAX];
#pragma unroll
    for (int b = 0; b < BMAX; b++) {
        const int ib = i0 + (b < nb ? b : nb - 1);
        xr[b] = a.x + (size_t)(a.gather ? a.order[ib] / a.topk : ib) * a.k;
    }
    float acc[BMAX];
#pragma unroll
    for (int b = 0; b < BMAX; b++) acc[b] = 0.0f;
    const int units = a.k / U;
    for (int u = lane; u < units; u += 32) {
        float v[U];
        decode_unit<F>(a, row, u, v);
#pragma unroll
        for (int b = 0; b < BMAX; b++) {
            if (b >= nb) break;
            const float *xp = xr[b] + (size_t)u * U;
            float d = 0.0f;
            if constexpr (U % 4 == 0) {
#pragma unroll
                for (int i = 0; i < U; i += 4) {
                    const float4 xv = __ldg(reinterpret_cast<const float4 *>(xp + i));
                    d = fmaf(v[i], xv.x, d);
                    d = fmaf(v[i + 1], xv.y, d);
                    d = fmaf(v[i + 2], xv.z, d);
                    d = fmaf(v[i + 3], xv.w, d);
                }
            } else {
                d = v[0] * __ldg(xp);
            }
            acc[b] += d;
        }
    }
#pragma unroll
    for (int b = 0; b < BMAX; b++) {
        if (b >= nb) break;
        const float s = lmx_cu_warp_sum(acc[b]);
        if (lane == 0) a.y[(size_t)(i0 + b) * a.n + r] = s + (a.bias ? a.bias[row] : 0.0f);
    }
}

template <int F>
void launch(const mg_args &a, const lmx_cuda_moe *r, cudaStream_t st) {
    const unsigned bx = (unsigned)((a.n + MG_WARPS - 1) / MG_WARPS);
    if (r->T < 16) {
        moe_gemv_kernel<F, 1, false><<<dim3(bx, (unsigned)(r->T * r->k)), MG_WARPS * 32, 0, st>>>(a);
    } else {
        const dim3 grid(bx, (unsigned)r->E, (unsigned)((r->T + MG_GROUPED_ROWS - 1) / MG_GROUPED_ROWS));
        moe_gemv_kernel<F, MG_GROUPED_ROWS, true><<<grid, MG_WARPS * 32, 0, st>>>(a);
    }
}

/* the unit format of a stack, or -1 */
int format_of(const lmx_cuda_experts *w) {
    const lmx_cuda_matrix *m = &w->m;
    if (w->mode == LMX_QUANT_MXFP4) return F_MXFP4;
    if (w->mode == LMX_QUANT_MXFP8) return F_MXFP8;
    if (w->mode == LMX_QUANT_NVFP4) return F_NVFP4;
    if (w->mode != LMX_QUANT_AFFINE) return -1;
    if (m->bits == 0) {
        const bool f32 = m->dtype == LMX_DTYPE_F32;
        const int64_t unit = f32 ? 4 : 8;
        if (m->k % unit || ((uintptr_t)m->w & 15)) return F_DENSE1;
        return f32 ? F_F32 : m->dtype == LMX_DTYPE_BF16 ? F_BF16 : F_F16;
    }
    switch (m->bits) {
    case 2: return m->k % 64 == 0 ? F_Q2 : F_Q2P;
    case 3: return F_Q3;
    case 4: return F_Q4;
    case 5: return F_Q5;
    case 6: return F_Q6;
    case 8: return F_Q8;
    default: return -1;
    }
}

/* the kernel arguments of stack w over routing r (its unit format into *fmt), or an error */
lmx_status args_of(const lmx_cuda_experts *w, const float *x, bool gather, const lmx_cuda_moe *r, float *y,
                   mg_args *out, int *fmt) {
    if (!w || !x || !y || !r || !r->table || r->T < 1 || r->k < 1 || w->n_experts != r->E || w->m.n < 1 ||
        w->m.k < 1 || w->m.n > 0x7fffffff || w->m.k > 0x7fffffff || (size_t)r->T * r->k > 65535 * 64)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda moe gemv: bad arguments");
    const int F = format_of(w);
    if (F < 0)
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda moe gemv: experts of %d bits (mode %d, k %lld)", w->m.bits, w->mode,
                         (long long)w->m.k);
    if (w->mode == LMX_QUANT_AFFINE && w->m.bits && lmx_cuda_matrix_check(&w->m) != LMX_OK)
        return lmx_cuda_matrix_check(&w->m);
    if (w->mode != LMX_QUANT_AFFINE && (w->m.k % 32 || ((uintptr_t)w->m.w & 15)))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda moe gemv: fp-mode experts of k %lld", (long long)w->m.k);
    if (r->T < 16 && (size_t)r->T * r->k > 65535)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda moe gemv: %d entries", r->T * r->k);
    int32_t *ids, *order, *pos, *start;
    lmx_cuda_moe_arrays(r, &ids, &order, &pos, &start);
    const lmx_cuda_matrix *m = &w->m;
    const int bits = w->mode != LMX_QUANT_AFFINE ? (w->mode == LMX_QUANT_MXFP8 ? 8 : 4) : m->bits;
    const size_t row_bytes = bits ? (size_t)m->k * (size_t)bits / 8
                                  : (size_t)m->k * (m->dtype == LMX_DTYPE_F32 ? 4 : 2);
    *out = (mg_args){m->w, m->scales, m->biases, (const float *)m->bias, (int)m->dtype, (int)m->dtype, m->group_size,
                     row_bytes, (int)m->n, (int)m->k, x, gather ? 1 : 0, r->k, ids, order, start, y};
    *fmt = F;
    return LMX_OK;
}

}  // namespace

extern "C" bool lmx_cuda_moe_gate_up_fuses(const lmx_cuda_experts *gate, const lmx_cuda_experts *up,
                                           const lmx_cuda_moe *r) {
    return gate && up && r && r->T < 16 && format_of(gate) >= 0 && format_of(gate) == format_of(up) &&
           gate->m.n == up->m.n && gate->m.k == up->m.k && gate->m.group_size == up->m.group_size &&
           gate->m.dtype == up->m.dtype && gate->n_experts == up->n_experts;
}

extern "C" lmx_status lmx_cuda_moe_gate_up(const lmx_cuda_experts *gate, const lmx_cuda_experts *up, const float *x,
                                           const lmx_cuda_moe *r, int act, float *h, lmx_cuda_stream stream) {
    if (!lmx_cuda_moe_gate_up_fuses(gate, up, r) || (act != 0 && act != 1))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda moe gate_up: stacks that do not pair, T %d, or act %d",
                         r ? r->T : 0, act);
    mg_args a, b;
    int F = 0;
    lmx_status st = args_of(gate, x, true, r, h, &a, &F);
    if (st == LMX_OK) st = args_of(up, x, true, r, h, &b, &F);
    if (st != LMX_OK) return st;
    const dim3 grid((unsigned)((a.n + MG_WARPS - 1) / MG_WARPS), (unsigned)(r->T * r->k));
    cudaStream_t s = LMX_CU_STREAM(stream);
#define MG_PAIR(FMT) moe_gate_up_kernel<FMT><<<grid, MG_WARPS * 32, 0, s>>>(a, b, act)
    switch (F) {
    case F_F32: MG_PAIR(F_F32); break;
    case F_F16: MG_PAIR(F_F16); break;
    case F_BF16: MG_PAIR(F_BF16); break;
    case F_DENSE1: MG_PAIR(F_DENSE1); break;
    case F_Q2: MG_PAIR(F_Q2); break;
    case F_Q2P: MG_PAIR(F_Q2P); break;
    case F_Q3: MG_PAIR(F_Q3); break;
    case F_Q4: MG_PAIR(F_Q4); break;
    case F_Q5: MG_PAIR(F_Q5); break;
    case F_Q6: MG_PAIR(F_Q6); break;
    case F_Q8: MG_PAIR(F_Q8); break;
    case F_MXFP4: MG_PAIR(F_MXFP4); break;
    case F_MXFP8: MG_PAIR(F_MXFP8); break;
    default: MG_PAIR(F_NVFP4); break;
    }
#undef MG_PAIR
    LMX_CU_CHECK_LAUNCH("moe gate_up");
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_moe_gemv(const lmx_cuda_experts *w, const float *x, bool gather, const lmx_cuda_moe *r,
                                        float *y, lmx_cuda_stream stream) {
    mg_args a;
    int F = 0;
    lmx_status err = args_of(w, x, gather, r, y, &a, &F);
    if (err != LMX_OK) return err;
    cudaStream_t st = LMX_CU_STREAM(stream);
    switch (F) {
    case F_F32: launch<F_F32>(a, r, st); break;
    case F_F16: launch<F_F16>(a, r, st); break;
    case F_BF16: launch<F_BF16>(a, r, st); break;
    case F_DENSE1: launch<F_DENSE1>(a, r, st); break;
    case F_Q2: launch<F_Q2>(a, r, st); break;
    case F_Q2P: launch<F_Q2P>(a, r, st); break;
    case F_Q3: launch<F_Q3>(a, r, st); break;
    case F_Q4: launch<F_Q4>(a, r, st); break;
    case F_Q5: launch<F_Q5>(a, r, st); break;
    case F_Q6: launch<F_Q6>(a, r, st); break;
    case F_Q8: launch<F_Q8>(a, r, st); break;
    case F_MXFP4: launch<F_MXFP4>(a, r, st); break;
    case F_MXFP8: launch<F_MXFP8>(a, r, st); break;
    default: launch<F_NVFP4>(a, r, st); break;
    }
    LMX_CU_CHECK_LAUNCH("moe gemv");
    return LMX_OK;
}
