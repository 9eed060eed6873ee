/* cuda_gemv_mma.cu — batch-1 GEMV y = x·W^T on the tensor cores (mma.sync m16n8k16, fp32
 * accumulation) for MLX affine 4-bit / 8-bit weights and dense bf16 weights: a persistent,
 * software-pipelined streaming kernel ("ring" kernel; see bench/notes/cuda-kernels.md, "gemv").
 *
 * Why: batch-1 decode is bound by how fast the weights stream, so many bytes must be in flight per SM
 * at all times; a kernel that splits one tile's K across warps and meets at a block barrier per tile
 * pays a full memory latency per tile. Here:
 *   - the grid is persistent (about one block per SM); block b owns a contiguous range of 16-row
 *     tiles; warp w of the block owns a fixed slice of the K super-steps of every tile, so its work
 *     is one long stream of 1 KB super-steps (16 rows x 64 bytes) with no barrier inside;
 *   - the stream is software-pipelined through a register ring of DEPTH super-steps: the loads of
 *     step j + DEPTH are issued right after step j is consumed, so DEPTH KB per warp (16-64 KB per
 *     SM) are always in flight, across tile boundaries;
 *   - the per-tile partial sums of each warp go to shared memory ([tiles of the block][16][warps]),
 *     and one barrier at the end reduces them (fixed order: deterministic, bit-reproducible);
 *   - all loop addressing is pointer walking; group/segment indices are shifts.
 *
 * Products: A = 16 weight rows (a warp's tile), B = [16 k x 8 columns] of x parts.
 *   q4/q8: a weight is decoded to an fp16 with LOP3/PRMT into the mantissa of 1024.0: 1024 + q (q4 odd
 *   nibbles: 1024 + 16q, their x pre-scaled by 1/16); one HSUB2 per two weights removes the 1024
 *   (products exact, ~fp32 result). x is split per segment (a scale group, or the part of one a
 *   super-step covers) into x·2^-e = hi + lo (fp16 each, 22 significant bits, 2^e from the segment's
 *   max |x| so nothing overflows); column 2G / 2G+1 carry group G's hi / lo, so one mma keeps up to 4
 *   groups apart; per group s·2^e·D + b·Σx in fp32.
 *   bf16: A is the weights as stored; x is split into hi + mid + lo bf16 (24 bits: exact) in columns
 *   0..2; the fp32 accumulators run over the whole tile.
 * The x fragments (and per-segment {2^e, C, Σx}) are built once per block in shared memory in the
 * permuted k order the decode produces.
 */
#include "backend/cuda/cuda_common.cuh"

#include <pthread.h>

#define RG_MAX_THREADS 512

__device__ __forceinline__ void rg_mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                           uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void rg_mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t rg_h2sub(uint32_t v, uint32_t c) {
    __half2 r = __hsub2(*reinterpret_cast<__half2 *>(&v), *reinterpret_cast<__half2 *>(&c));
    return *reinterpret_cast<uint32_t *>(&r);
}

/* Per-format constants. BITS 16 = dense bf16. */
template <int BITS> struct rg_fmt {
    static constexpr int EPS = BITS == 4 ? 128 : BITS == 8 ? 64 : 32; /* elements of a row per super-step */
    static constexpr int MPS = BITS == 4 ? 8 : BITS == 8 ? 4 : 2;     /* mma per super-step */
    static constexpr int CH = EPS / 4;                                /* elements per lane chunk (16 B) */
    static constexpr int NPART = BITS == 16 ? 3 : 2;                  /* x parts */
    static constexpr int LG_EPS = BITS == 4 ? 7 : BITS == 8 ? 6 : 5;
};

/* Decodes one 32-bit word of row data into the 4 (q4) / 2 (q8) fp16x2 A registers holding exact q.
 * q4: h[s] = (nibble s, nibble s+4), s = 0..3, odd s carrying 16q. q8: h[0] = (byte 0, byte 2),
 * h[1] = (byte 1, byte 3). magic = 0x64006400 (1024, 1024) is passed at run time so that the mask
 * and the OR fuse into one LOP3 (a LOP3 takes only one immediate). */
template <int BITS>
__device__ __forceinline__ void rg_decode(uint32_t w, uint32_t magic, uint32_t (&h)[4]) {
    const uint32_t k1024 = 0x64006400u;
    if (BITS == 4) {
        const uint32_t w8 = w >> 8;
        h[0] = (w & 0x000F000Fu) | magic;
        h[1] = (w & 0x00F000F0u) | magic;
        h[2] = (w8 & 0x000F000Fu) | magic;
        h[3] = (w8 & 0x00F000F0u) | magic;
    } else {
        h[0] = __byte_perm(w, magic, 0x5250);
        h[1] = __byte_perm(w, magic, 0x5351);
        h[2] = h[3] = magic; /* unused */
    }
#pragma unroll
    for (int i = 0; i < (BITS == 4 ? 4 : 2); i++) h[i] = rg_h2sub(h[i], k1024); /* exact q */
}

__device__ __forceinline__ float rg_tof(float v) { return v; }
__device__ __forceinline__ float rg_tof(__half v) { return __half2float(v); }
__device__ __forceinline__ float rg_tof(__nv_bfloat16 v) { return __bfloat162float(v); }

/* Shared memory layout (dynamic, 16-byte aligned pieces):
 *   ring uint8 [warps][DEPTH][16 rows][128 B]  staged loads only (LOAD 2)
 *   xf   uint2 [nss][MPS][4 t][NPART]          B fragments {b0, b1} of lane t, part p
 *   seg  float4 [nseg] {2^e, 0, Σx, 0}         (quantized only)
 *   red  float [tiles per block][16][warps]     per-warp partial sums of each tile row */
struct rg_layout {
    size_t ring_bytes, xf_bytes, seg_bytes, red_bytes;
};
static rg_layout rg_smem(int bits, long k, int gs, int tiles_per_block, int warps, int staged_depth) {
    const long eps = bits == 4 ? 128 : bits == 8 ? 64 : 32, mps = bits == 4 ? 8 : bits == 8 ? 4 : 2;
    const long npart = bits == 16 ? 3 : 2;
    rg_layout l;
    l.ring_bytes = (size_t)warps * staged_depth * 2048;
    l.xf_bytes = (size_t)(k / eps) * mps * 4 * npart * 8;
    const long seglen = bits == 16 ? 0 : (gs < eps ? gs : eps);
    l.seg_bytes = bits == 16 ? 0 : (size_t)(k / seglen) * 16;
    l.red_bytes = (size_t)tiles_per_block * 16 * warps * 4;
    return l;
}

/* LOAD: 0 = direct register ring (lane (g, t) loads 16 B of rows g and g + 8 per super-step: 64 B of a
 * row per warp instruction; used where the staging ring does not fit), 2 = staged: the warp copies
 * 2-super-step units (16 rows x 128 B, whole 128-byte lines per instruction) with cp.async into a
 * DEPTH-stage shared-memory ring of its own and reads its fragments from there (XOR-swizzled, no bank
 * conflicts). DEPTH: ring depth in units (direct: 4). */
template <int BITS, int LOAD, int DEPTH, typename ST>
__global__ void __launch_bounds__(512, 1)
gemv_ring(const uint32_t *__restrict__ W, const ST *__restrict__ S, const ST *__restrict__ Bq,
          const void *__restrict__ lbias, int bdt, const float *__restrict__ x, float *__restrict__ y,
          int n, int k, int lg_gs, int accumulate, size_t ring_bytes, size_t xf_bytes, size_t seg_bytes,
          uint32_t magic) {
    typedef rg_fmt<BITS> F;
    constexpr int EPS = F::EPS, MPS = F::MPS, CH = F::CH, NPART = F::NPART;
    constexpr bool QUANT = BITS != 16;
    constexpr bool STAGED = LOAD == 2;
    constexpr int SPU = STAGED ? 2 : 1; /* super-steps per unit */
    extern __shared__ uint4 rg_smem_u4[];
    char *smem = reinterpret_cast<char *>(rg_smem_u4);
    uint4 *xf = reinterpret_cast<uint4 *>(smem + ring_bytes);
    float4 *segd = reinterpret_cast<float4 *>(smem + ring_bytes + xf_bytes);
    float *red = reinterpret_cast<float *>(smem + ring_bytes + xf_bytes + seg_bytes);

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int nwarps = blockDim.x >> 5;
    const int nss = k / EPS;
    const int nun = (nss + SPU - 1) / SPU; /* units per row */
    const int ntiles = (n + 15) >> 4;
    const int tb = (int)(((long long)blockIdx.x * ntiles) / gridDim.x);
    const int te = (int)(((long long)(blockIdx.x + 1) * ntiles) / gridDim.x);
    const int nt = te - tb;
    /* warp w owns units [u_lo, u_hi) of every tile of the block */
    const int u_lo = (warp * nun) / nwarps, u_hi = ((warp + 1) * nun) / nwarps;
    const int total = nt * (u_hi - u_lo);
    const int t0 = 0, u0 = u_lo;

    /* row geometry */
    const size_t rowbytes = (size_t)k * (BITS == 16 ? 16 : BITS) / 8;
    const int seglen = QUANT ? ((1 << lg_gs) < EPS ? (1 << lg_gs) : EPS) : EPS;
    const int gps = QUANT ? EPS / seglen : 1;          /* segments (local groups) per super-step: 1, 2, 4 */
    const int gpr = QUANT ? (k >> lg_gs) : 0;           /* groups per row */
    const int lg_gps = lg_gs < F::LG_EPS ? F::LG_EPS - lg_gs : 0;
    const int gsh = lg_gs > F::LG_EPS ? lg_gs - F::LG_EPS : 0;
    const int tq = t & (gps - 1); /* the local group whose scale lane t loads (lanes t >= gps: a copy) */

    /* ---- load iterator: the warp's stream of (tile, unit) ---- */
    int ld_u = u0, ld_tile = tb + t0;
    const ST *ps0 = NULL, *pb0 = NULL, *ps1 = NULL, *pb1 = NULL; /* scale rows g, g + 8 (+ tq) */
    const char *pw0 = NULL, *pw1 = NULL;                         /* direct: rows g, g + 8 at lane t */
    const char *pg[4] = {NULL, NULL, NULL, NULL};                /* staged: rows 4i + lane / 8 */
    const int lr = lane >> 3, lc = lane & 7;
    auto set_rows = [&](int tile, int u) { /* any tile (rows clamped to n - 1), from unit u */
        const int r0 = min(tile * 16 + g, n - 1), r1 = min(tile * 16 + g + 8, n - 1);
        const char *wb = reinterpret_cast<const char *>(W);
        if (STAGED) {
#pragma unroll
            for (int i = 0; i < 4; i++)
                pg[i] = wb + (size_t)min(tile * 16 + 4 * i + lr, n - 1) * rowbytes + (size_t)u * 128 + lc * 16;
        } else {
            pw0 = wb + (size_t)r0 * rowbytes + (size_t)u * 64 + t * 16;
            pw1 = wb + (size_t)r1 * rowbytes + (size_t)u * 64 + t * 16;
        }
        if (QUANT) {
            ps0 = S + (size_t)r0 * gpr + tq; pb0 = Bq + (size_t)r0 * gpr + tq;
            ps1 = S + (size_t)r1 * gpr + tq; pb1 = Bq + (size_t)r1 * gpr + tq;
        }
    };
    /* the next tile when it is a full one: 16 rows on from the previous (full) tile */
    const size_t jump = 16 * rowbytes - (size_t)(u_hi - u_lo) * (STAGED ? 128 : 64);
    auto next_rows = [&]() {
        if (STAGED) {
#pragma unroll
            for (int i = 0; i < 4; i++) pg[i] += jump;
        } else {
            pw0 += jump; pw1 += jump;
        }
        if (QUANT) {
            const size_t gj = (size_t)16 * gpr;
            ps0 += gj; pb0 += gj; ps1 += gj; pb1 += gj;
        }
    };
    uint4 wa[STAGED ? 1 : DEPTH], wb[STAGED ? 1 : DEPTH]; /* direct ring */
    ST rs0[DEPTH][SPU], rb0[DEPTH][SPU], rs1[DEPTH][SPU], rb1[DEPTH][SPU];
    char *ring = smem + (size_t)warp * DEPTH * 2048; /* staged: this warp's DEPTH x [16 rows][128 B] */
    const uint32_t ring_s = (uint32_t)__cvta_generic_to_shared(ring) + lr * 128 + ((lc ^ ((lr & 1) << 2)) * 16);
    auto load = [&](int slot, uint4 &a, uint4 &b, ST (&s0)[SPU], ST (&b0)[SPU], ST (&s1)[SPU], ST (&b1)[SPU]) {
        const bool second = SPU * ld_u + 1 < nss; /* staged: the unit's second super-step exists */
        if (STAGED) {
            /* lanes of a missing second half copy nothing (src-size 0) from a valid address */
            const int bytes = (lc < 4 || second) ? 16 : 0;
            const int back = bytes ? 0 : 64;
#pragma unroll
            for (int i = 0; i < 4; i++)
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(ring_s + slot * 2048 + i * 512),
                             "l"(pg[i] - back), "r"(bytes));
#pragma unroll
            for (int i = 0; i < 4; i++) pg[i] += 128;
        } else {
            a = lmx_cu_ld_stream(pw0);
            b = lmx_cu_ld_stream(pw1);
            pw0 += 64; pw1 += 64;
        }
        if (QUANT) {
#pragma unroll
            for (int h = 0; h < SPU; h++) {
                if (h == 1 && !second) break;
                const int gg = ((SPU * ld_u + h) << lg_gps) >> gsh;
                s0[h] = __ldg(ps0 + gg); b0[h] = __ldg(pb0 + gg);
                s1[h] = __ldg(ps1 + gg); b1[h] = __ldg(pb1 + gg);
            }
        }
        if (++ld_u == u_hi) {
            ld_u = u_lo;
            if (++ld_tile < te) {
                if (ld_tile * 16 + 16 <= n) next_rows();
                else set_rows(ld_tile, u_lo);
            }
        }
    };
    if (total > 0) {
        set_rows(tb + t0, u0);
#pragma unroll
        for (int i = 0; i < (STAGED ? DEPTH - 1 : DEPTH); i++) {
            if (i < total) load(i, wa[STAGED ? 0 : i], wb[STAGED ? 0 : i], rs0[i], rb0[i], rs1[i], rb1[i]);
            if (STAGED) asm volatile("cp.async.commit_group;");
        }
    }

    /* ---- x fragments (built while the first loads are in flight) ---- */
    const int red_n = nt * 16 * nwarps;
    for (int i = threadIdx.x; i < red_n; i += blockDim.x) red[i] = 0.f;
    if (QUANT) {
        const int tpseg = seglen / 8; /* threads per segment: 4, 8 or 16 */
        for (int base = 0; base < k; base += blockDim.x * 8) { /* uniform trip count: full-warp shuffles */
            const int e0 = base + threadIdx.x * 8;
            const bool act = e0 < k; /* k % seglen == 0: a segment is all active or all idle */
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
            /* the thread's 8 elements fill exactly one uint4 of B fragments per part: half position
             * (m & 1) * 4 + reg * 2 + hp within the uint4 of (super-step, mma pair, chunk) */
            uint32_t hw[4] = {0u, 0u, 0u, 0u}, lw[4] = {0u, 0u, 0u, 0u};
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int pos = BITS == 4 ? 2 * (i & 3) + (i >> 2) : (i >> 2) * 4 + (i & 1) * 2 + ((i >> 1) & 1);
                const float vs = v[i] * inv;
                const __half hi = __float2half_rn(vs);
                const __half lo = __float2half_rn(vs - __half2float(hi));
                /* q4 odd nibbles decode to 16q: their x parts carry 1/16 (exact power-of-two scaling) */
                const __half his = (BITS == 4 && (i & 1)) ? __hmul(hi, __float2half(0.0625f)) : hi;
                const __half los = (BITS == 4 && (i & 1)) ? __hmul(lo, __float2half(0.0625f)) : lo;
                hw[pos >> 1] |= (uint32_t)__half_as_ushort(his) << (16 * (pos & 1));
                lw[pos >> 1] |= (uint32_t)__half_as_ushort(los) << (16 * (pos & 1));
            }
            if (act) {
                const int ss = e0 / EPS, r = e0 % EPS, tt = r / CH, c0 = r % CH;
                uint4 *dst = xf + ((size_t)(ss * (MPS / 2) + (c0 >> 3)) * 4 + tt) * 2;
                dst[0] = make_uint4(hw[0], hw[1], hw[2], hw[3]);
                dst[1] = make_uint4(lw[0], lw[1], lw[2], lw[3]);
            }
            if (act && (e0 & (seglen - 1)) == 0) segd[e0 / seglen] = make_float4(scl, 0.f, sum, 0.f);
        }
    } else {
        for (int e0 = threadIdx.x * 8; e0 < k; e0 += blockDim.x * 8) {
            const float4 va = __ldg(reinterpret_cast<const float4 *>(x + e0));
            const float4 vb = __ldg(reinterpret_cast<const float4 *>(x + e0 + 4));
            const float v[8] = {va.x, va.y, va.z, va.w, vb.x, vb.y, vb.z, vb.w};
            /* 8 elements = one lane chunk = one uint4 per part, in element order */
            uint32_t pw[3][4];
#pragma unroll
            for (int i = 0; i < 8; i += 2) {
                uint32_t q[3][2];
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const __nv_bfloat16 hi = __float2bfloat16_rn(v[i + j]);
                    const float r1 = v[i + j] - __bfloat162float(hi);
                    const __nv_bfloat16 mid = __float2bfloat16_rn(r1);
                    const __nv_bfloat16 lo = __float2bfloat16_rn(r1 - __bfloat162float(mid));
                    q[0][j] = __bfloat16_as_ushort(hi);
                    q[1][j] = __bfloat16_as_ushort(mid);
                    q[2][j] = __bfloat16_as_ushort(lo);
                }
#pragma unroll
                for (int p = 0; p < 3; p++) pw[p][i >> 1] = q[p][0] | (q[p][1] << 16);
            }
            const int ss = e0 / EPS, tt = (e0 % EPS) / CH;
            uint4 *dst = xf + ((size_t)ss * 4 + tt) * NPART;
#pragma unroll
            for (int p = 0; p < 3; p++) dst[p] = make_uint4(pw[p][0], pw[p][1], pw[p][2], pw[p][3]);
        }
    }
    __syncthreads();

    /* ---- main stream ---- */
    /* B lane (g, t): column g = part (g % NPART) of local group g / NPART, for the k slots of chunk t,
     * whose elements lie in local group (t * CH) / seglen */
    const int bp = g % NPART, bgrp = g / NPART;
    const bool bval = QUANT ? (bgrp < gps && (gps > 1 ? (t * CH) / seglen : 0) == bgrp) : g < NPART;
    const uint4 *xlane = xf + t * NPART + (bval ? bp : 0);
    int c_u = u0, lt = t0;
    float acc0 = 0.f, acc1 = 0.f;
    float dt[4] = {0.f, 0.f, 0.f, 0.f}; /* bf16: the tile's accumulators */
    /* one super-step: wra / wrb = the lane's 16 bytes of rows g / g + 8 */
    auto compute = [&](const uint4 &wra, const uint4 &wrb, ST s0r, ST b0r, ST s1r, ST b1r, int ss) {
        const uint4 *xb = xlane + (size_t)ss * (MPS / 2 * 4 * NPART);
        const uint32_t A0[4] = {wra.x, wra.y, wra.z, wra.w};
        const uint32_t A1[4] = {wrb.x, wrb.y, wrb.z, wrb.w};
        const uint4 z4 = make_uint4(0u, 0u, 0u, 0u);
        if (QUANT) {
            float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int wi = 0; wi < 4; wi++) {
                uint32_t h0[4], h1[4];
                rg_decode<BITS>(A0[wi], magic, h0);
                rg_decode<BITS>(A1[wi], magic, h1);
                if (BITS == 4) {
                    const uint4 bb = bval ? xb[wi * 4 * NPART] : z4; /* mma 2wi, 2wi + 1 */
                    rg_mma_f16(d, h0[0], h1[0], h0[1], h1[1], bb.x, bb.y);
                    rg_mma_f16(d, h0[2], h1[2], h0[3], h1[3], bb.z, bb.w);
                } else {
                    const uint4 bb = bval ? xb[(wi >> 1) * 4 * NPART] : z4; /* mma wi */
                    rg_mma_f16(d, h0[0], h1[0], h0[1], h1[1], (wi & 1) ? bb.z : bb.x, (wi & 1) ? bb.w : bb.y);
                }
            }
            const float4 sd = segd[ss * gps + tq];
            acc0 = fmaf(rg_tof(s0r) * sd.x, d[0] + d[1], fmaf(rg_tof(b0r), sd.z, acc0));
            acc1 = fmaf(rg_tof(s1r) * sd.x, d[2] + d[3], fmaf(rg_tof(b1r), sd.z, acc1));
        } else {
            const uint4 bb = bval ? xb[0] : z4;
            rg_mma_bf16(dt, A0[0], A1[0], A0[1], A1[1], bb.x, bb.y);
            rg_mma_bf16(dt, A0[2], A1[2], A0[3], A1[3], bb.z, bb.w);
        }
    };
    auto flush = [&]() { /* the warp's part of tile lt is done */
        if (!QUANT) {
            acc0 = dt[0] + dt[1];
            acc1 = dt[2] + dt[3];
            dt[0] = dt[1] = dt[2] = dt[3] = 0.f;
        } else if (QUANT && t >= gps) { /* lanes past the super-step's groups computed copies */
            acc0 = acc1 = 0.f;
        }
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, 1);
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, 2);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, 1);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, 2);
        if (t == 0) {
            red[(lt * 16 + g) * nwarps + warp] = acc0;
            red[(lt * 16 + g + 8) * nwarps + warp] = acc1;
        }
        acc0 = acc1 = 0.f;
    };
    auto unit_done = [&]() {
        if (++c_u == u_hi) {
            c_u = u_lo;
            flush();
            lt++;
        }
    };
    for (int j0 = 0; j0 < total; j0 += DEPTH) {
#pragma unroll
        for (int i = 0; i < DEPTH; i++) {
            if (j0 + i < total) {
                if (STAGED) {
                    const int NX = (i + DEPTH - 1) % DEPTH; /* the slot consumed one unit ago */
                    asm volatile("cp.async.wait_group %0;" ::"n"(DEPTH - 2));
                    __syncwarp();
                    if (j0 + i + DEPTH - 1 < total) load(NX, wa[0], wb[0], rs0[NX], rb0[NX], rs1[NX], rb1[NX]);
                    asm volatile("cp.async.commit_group;");
                    const char *sl = ring + i * 2048 + g * 128;
                    const int sw = (g & 1) << 2;
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int ss = 2 * c_u + h;
                        if (h == 1 && ss >= nss) break;
                        const uint4 a = *reinterpret_cast<const uint4 *>(sl + (((4 * h + t) ^ sw) * 16));
                        const uint4 b = *reinterpret_cast<const uint4 *>(sl + 1024 + (((4 * h + t) ^ sw) * 16));
                        compute(a, b, rs0[i][h], rb0[i][h], rs1[i][h], rb1[i][h], ss);
                    }
                } else {
                    compute(wa[i], wb[i], rs0[i][0], rb0[i][0], rs1[i][0], rb1[i][0], c_u);
                    if (j0 + i + DEPTH < total) load(i, wa[i], wb[i], rs0[i], rb0[i], rs1[i], rb1[i]);
                }
                unit_done();
            }
        }
    }
    if (STAGED) asm volatile("cp.async.wait_group 0;");
    __syncthreads();
    for (int i = threadIdx.x; i < nt * 16; i += blockDim.x) {
        const int row = tb * 16 + i;
        if (row >= n) break;
        float s = 0.f;
        for (int w = 0; w < nwarps; w++) s += red[i * nwarps + w];
        if (lbias) s += lmx_cu_ld(lbias, row, bdt);
        y[row] = accumulate ? y[row] + s : s;
    }
}

/* ---- host side ---- */

#define RG_MAX_SMEM (220 * 1024)
/* The opt-in to > 48 KB of dynamic shared memory, once per device for every instantiation (not per
 * launch: launches may be under stream capture; lmx_cu_per_device_ready), up to what the device
 * allows (H100/H200: 227 KB). Shapes needing more use the scalar kernels. */
typedef struct rg_device {
    size_t limit; /* dynamic shared memory granted */
    int sms;      /* multiprocessors */
} rg_device;
static lmx_cu_per_device g_rg = LMX_CU_PER_DEVICE_INIT;
static rg_device g_rg_dev[LMX_CU_MAX_DEVICES]; /* written once per device */

template <int BITS, int LOAD, int D, typename ST> static void rg_attr(cudaError_t *e, int bytes) {
    if (*e == cudaSuccess)
        *e = cudaFuncSetAttribute(gemv_ring<BITS, LOAD, D, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
template <int BITS, int LOAD, int D> static void rg_attr_st(cudaError_t *e, int bytes) {
    if constexpr (BITS == 16) {
        rg_attr<BITS, LOAD, D, float>(e, bytes);
    } else {
        rg_attr<BITS, LOAD, D, __nv_bfloat16>(e, bytes);
        rg_attr<BITS, LOAD, D, __half>(e, bytes);
        rg_attr<BITS, LOAD, D, float>(e, bytes);
    }
}
template <int BITS> static void rg_attr_all(cudaError_t *e, int bytes) {
    rg_attr_st<BITS, 0, 4>(e, bytes);
    rg_attr_st<BITS, 2, 3>(e, bytes);
    rg_attr_st<BITS, 2, 4>(e, bytes);
    rg_attr_st<BITS, 2, 6>(e, bytes);
}
static bool rg_init(int dev) {
    rg_device *d = &g_rg_dev[dev];
    d->limit = 47 * 1024;
    d->sms = 132;
    int optin = 0, sms = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return true;
    }
    if (sms > 0) d->sms = sms;
    int lim = optin - 1024;
    if (lim > RG_MAX_SMEM) lim = RG_MAX_SMEM;
    if (lim <= 48 * 1024) return true;
    cudaError_t e = cudaSuccess;
    rg_attr_all<4>(&e, lim);
    rg_attr_all<8>(&e, lim);
    rg_attr_all<16>(&e, lim);
    if (e == cudaSuccess) d->limit = (size_t)lim;
    else (void)cudaGetLastError();
    return true;
}

/* this thread's device's limits (its opt-in made), or NULL */
static const rg_device *rg_device_now(void) {
    int dev;
    return lmx_cu_per_device_ready(&g_rg, rg_init, &dev) ? &g_rg_dev[dev] : NULL;
}

/* Default knobs (measured best: bench/notes/cuda-kernels.md, "gemv"). */
static void rg_defaults(lmx_cuda_gemv_tune *t) {
    if (t->mode == 0) t->mode = 2;
    if (t->depth == 0) t->depth = t->mode == 1 ? 4 : 3;
    if (t->warps == 0) t->warps = 16;
    if (t->blocks_per_sm == 0) t->blocks_per_sm = 1;
}
static bool rg_valid(const lmx_cuda_gemv_tune *t) {
    if (t->mode < 1 || t->mode > 2) return false;
    if (t->mode == 1 ? t->depth != 4 : (t->depth != 3 && t->depth != 4 && t->depth != 6)) return false;
    if (t->warps != 4 && t->warps != 8 && t->warps != 16) return false;
    return t->blocks_per_sm >= 1 && t->blocks_per_sm <= 8;
}

/* Grid size and shared memory for the matrix and knobs; false when it does not fit. */
static bool rg_plan(const rg_device *d, const lmx_cuda_matrix *m, const lmx_cuda_gemv_tune *t, int *blocks,
                    size_t *smem, rg_layout *lay) {
    const int bits = m->bits ? m->bits : 16;
    const long ntiles = (m->n + 15) / 16;
    long nb = (long)d->sms * t->blocks_per_sm;
    if (nb > ntiles) nb = ntiles;
    rg_layout l = rg_smem(bits, (long)m->k, m->group_size, 0, t->warps, t->mode == 2 ? t->depth : 0);
    const size_t fixed = l.ring_bytes + l.xf_bytes + l.seg_bytes;
    if (fixed + (size_t)16 * t->warps * 4 > d->limit) return false;
    /* enough blocks that a block's partial sums fit next to the x fragments */
    const long tiles_cap = (long)((d->limit - fixed) / ((size_t)16 * t->warps * 4));
    if ((ntiles + nb - 1) / nb > tiles_cap) nb = (ntiles + tiles_cap - 1) / tiles_cap;
    const long tpb = (ntiles + nb - 1) / nb;
    l.red_bytes = (size_t)tpb * 16 * t->warps * 4;
    *blocks = (int)nb;
    *smem = fixed + l.red_bytes;
    *lay = l;
    return true;
}

static bool rg_shape_ok(const lmx_cuda_matrix *m, const float *x, int batch) {
    if (batch != 1) return false;
    if (m->bits == 0) {
        if (m->dtype != LMX_DTYPE_BF16 || m->k % 32) return false;
    } else {
        if (m->bits != 4 && m->bits != 8) return false;
        const long eps = m->bits == 4 ? 128 : 64;
        if (m->k % eps != 0 || m->k % m->group_size != 0) return false;
        if (m->group_size != 32 && m->group_size != 64 && m->group_size != 128) return false;
    }
    return !((uintptr_t)m->w & 15) && !((uintptr_t)x & 15);
}

extern "C" bool lmx_cuda_gemv_mma_applies(const lmx_cuda_matrix *m, const float *x, int batch) {
    const rg_device *d = rg_shape_ok(m, x, batch) ? rg_device_now() : NULL;
    if (!d) return false;
    /* the default (staged) plan, or the direct one where the staging ring does not fit */
    lmx_cuda_gemv_tune t = {0, 0, 0, 0};
    rg_defaults(&t);
    int blocks;
    size_t smem;
    rg_layout l;
    if (rg_plan(d, m, &t, &blocks, &smem, &l)) return true;
    t.mode = 1;
    return rg_plan(d, m, &t, &blocks, &smem, &l);
}

template <int BITS, int LOAD, int D, typename ST>
static void rg_launch(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate, int blocks, int threads,
                      size_t smem, const rg_layout &l, cudaStream_t st) {
    int lg = 0;
    while (m->bits && (1 << lg) < m->group_size) lg++;
    gemv_ring<BITS, LOAD, D, ST><<<blocks, threads, smem, st>>>(
        (const uint32_t *)m->w, (const ST *)m->scales, (const ST *)m->biases, m->bias, (int)m->bias_dtype, x, y,
        (int)m->n, (int)m->k, lg, accumulate, l.ring_bytes, l.xf_bytes, l.seg_bytes, 0x64006400u);
}
template <int BITS, int LOAD, int D>
static void rg_launch_st(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate, int blocks,
                         int threads, size_t smem, const rg_layout &l, cudaStream_t st) {
    if constexpr (BITS == 16) {
        rg_launch<BITS, LOAD, D, float>(m, x, y, accumulate, blocks, threads, smem, l, st);
    } else {
        if (m->dtype == LMX_DTYPE_BF16) rg_launch<BITS, LOAD, D, __nv_bfloat16>(m, x, y, accumulate, blocks, threads, smem, l, st);
        else if (m->dtype == LMX_DTYPE_F16) rg_launch<BITS, LOAD, D, __half>(m, x, y, accumulate, blocks, threads, smem, l, st);
        else rg_launch<BITS, LOAD, D, float>(m, x, y, accumulate, blocks, threads, smem, l, st);
    }
}
template <int BITS>
static void rg_launch_mode(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                           const lmx_cuda_gemv_tune &t, int blocks, size_t smem, const rg_layout &l, cudaStream_t st) {
    const int th = t.warps * 32;
    if (t.mode == 1) rg_launch_st<BITS, 0, 4>(m, x, y, accumulate, blocks, th, smem, l, st);
    else if (t.depth == 3) rg_launch_st<BITS, 2, 3>(m, x, y, accumulate, blocks, th, smem, l, st);
    else if (t.depth == 4) rg_launch_st<BITS, 2, 4>(m, x, y, accumulate, blocks, th, smem, l, st);
    else rg_launch_st<BITS, 2, 6>(m, x, y, accumulate, blocks, th, smem, l, st);
}

extern "C" lmx_status lmx_cuda_gemv_mma(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                                        lmx_cuda_stream stream) {
    return lmx_cuda_gemv_mma_tuned(m, x, y, accumulate, NULL, stream);
}

/* fallback: where the staging ring does not fit next to the x fragments, direct loads (mode 1) */
static lmx_status rg_run(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                         const lmx_cuda_gemv_tune *tune, bool fallback, lmx_cuda_stream stream) {
    lmx_cuda_gemv_tune t = {0, 0, 0, 0};
    if (tune) t = *tune;
    const bool user_mode = !fallback;
    rg_defaults(&t);
    if (!rg_valid(&t))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "cuda gemv mma: mode %d (1 direct, 2 staged), depth %d (direct 4; staged 3, 4, 6), "
                         "warps %d (4, 8, 16), blocks/SM %d (1..8)",
                         t.mode, t.depth, t.warps, t.blocks_per_sm);
    lmx_status s = lmx_cuda_matrix_check(m);
    if (s != LMX_OK) return s;
    if (!x || !y) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv mma: NULL x/y");
    if (!lmx_cuda_gemv_mma_applies(m, x, 1))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv mma: %d-bit g%d dtype %d k=%lld not supported",
                         m->bits, m->group_size, (int)m->dtype, (long long)m->k);
    int blocks;
    size_t smem;
    rg_layout l;
    const rg_device *d = rg_device_now(); /* made by lmx_cuda_gemv_mma_applies above */
    bool ok = d && rg_plan(d, m, &t, &blocks, &smem, &l);
    if (d && !ok && !user_mode) { /* the staging ring does not fit next to the x fragments: direct loads */
        t.mode = 1;
        t.depth = 4;
        ok = rg_plan(d, m, &t, &blocks, &smem, &l);
    }
    if (!ok)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda gemv mma: k=%lld with these knobs needs more shared memory "
                         "than %zu bytes", (long long)m->k, d ? d->limit : 0);
    cudaStream_t st = LMX_CU_STREAM(stream);
    if (m->bits == 4) rg_launch_mode<4>(m, x, y, accumulate, t, blocks, smem, l, st);
    else if (m->bits == 8) rg_launch_mode<8>(m, x, y, accumulate, t, blocks, smem, l, st);
    else rg_launch_mode<16>(m, x, y, accumulate, t, blocks, smem, l, st);
    LMX_CU_CHECK_LAUNCH("gemv mma");
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_gemv_mma_tuned(const lmx_cuda_matrix *m, const float *x, float *y, bool accumulate,
                                              const lmx_cuda_gemv_tune *tune, lmx_cuda_stream stream) {
    return rg_run(m, x, y, accumulate, tune, !tune || tune->mode == 0, stream);
}
