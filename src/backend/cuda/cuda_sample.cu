/* cuda_sample.cu — the next token on the device (lmx_cuda_sample_*, cuda_kernels.h): the host
 * sampler's semantics (src/generate/sampler.h) so that only 4 bytes cross to the host.
 *
 * Kernels, all with fixed launch shapes (capturable into a decode step's CUDA graph); per-token
 * inputs {u, n_window, window ids} are copied from pinned staging into device memory by a node of
 * the same sequence, and the result (id, or -1 = undecided) is copied back to pinned memory:
 *   penalty   pl = logits, then pl[id] = l < 0 ? l*p : l/p for every window id (idempotent, so
 *             duplicate ids need no de-duplication); skipped when the penalty is off (pl = logits)
 *   stats     per block of CHUNK ids: the largest value (lowest id on ties, NaN/-inf never chosen)
 *             and a NaN flag; one block reduces → greedy result, or mx for the filters
 *   top_p     (temperature 1 weights w = expf(l - mx)): the normalizer z and the mass per bucket of
 *             distance below mx (the host's 1024 buckets of width 1/32), the cut bucket by a scan,
 *             the cut bucket's tokens gathered, sorted (value desc, id asc) and cut where the mass of
 *             more likely tokens reaches top_p · z — exactly the host's bucket algorithm, so the kept
 *             list is [ids of buckets above the cut, in id order] ++ [sorted head of the cut bucket]
 *   min_p     a predicate on each entry of that list (order kept)
 *   top_k     the k-th largest value of the list by a one-block radix select (4 x 8 bits), the ids
 *             at or above it gathered and put in list order, ties at the k-th value kept first in
 *             list order (the host's rule), then the draw over that short list
 *   draw      weights expf((l - mx) * inv_t) of the list in list order, summed per block, the
 *             block holding u · total found by a scan and searched by a block scan.
 * Sums run in double in another association than the host's sequential loop: a different token only
 * when u · total (or top_p · z) lies within rounding distance of a cumulative boundary. exp is
 * evaluated in double and rounded to float (glibc's expf is correctly rounded in all but rare
 * cases). Undecided (result -1): any NaN or a non-finite max with temperature > 0 (the host
 * reports the error), greedy over logits all NaN/-inf, a top_p cut bucket with more than TAIL_CAP
 * tokens, top_k with more than TAIL_CAP ids at or above the k-th value.
 *
 * Memory: one device block per lmx_cuda_sampler (sized by vocab and window_cap) and pinned staging;
 * nothing per call. Thread-safety: a sampler is used on one stream by one thread at a time.
 */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SB_CHUNK 1024 /* ids per block of the grid passes (== threads of the draw passes) */
#define SB_THREADS 256
#define SB_BUCKETS 1024
#define SB_RANGE 32.0f
#define TAIL_CAP 4096 /* tokens of the top_p cut bucket sorted in shared memory */

typedef struct sb_state {
    float mx;
    int fail;     /* undecided: the host samples */
    int result;   /* chosen id, -1 = undecided */
    int cut;      /* top_p cut bucket */
    double before, target; /* top_p: mass of the buckets above the cut; top_p * z */
    float thr;    /* min_p threshold on logits */
    int n_tail;   /* top_p: tokens of the cut bucket gathered, then the kept head */
    int topk_on;  /* top_k cuts the list (else the list is not longer than k) */
    float kth;    /* top_k: the k-th largest value of the list */
    int ties_left;/* top_k: entries equal to kth kept (the first ones in list order) */
    int n_g;      /* top_k: listed ids with value >= kth gathered */
} sb_state;

typedef struct sb_input { /* device input area: this header, then int32 window[window_cap] */
    double u;
    int32_t n_window;
    int32_t pad;
} sb_input;

struct lmx_cuda_sampler {
    int vocab, window_cap, nb;
    void *dmem;          /* the one device allocation */
    float *pl;           /* [vocab] penalized logits */
    float *part_v;       /* [nb] block max */
    int *part_i;         /* [nb] block argmax */
    int *part_nan;       /* [nb] */
    double *part_d;      /* [nb] block sums */
    int *part_last;      /* [nb] last listed id of the block, -1 none */
    double *bm;          /* [SB_BUCKETS] top_p mass per bucket */
    float *tail_v;       /* [TAIL_CAP] */
    int *tail_i;         /* [TAIL_CAP] */
    float *g_v;          /* [TAIL_CAP] top_k candidates */
    int *g_i;            /* [TAIL_CAP] */
    sb_state *st;
    unsigned char *d_in; /* sb_input + window [window_cap] */
    unsigned char *h_in; /* pinned staging of d_in */
    int32_t *h_res;      /* pinned [1] */
    size_t in_bytes;
};

__device__ __forceinline__ float sb_exp(float x) { return (float)exp((double)x); }

__device__ __forceinline__ int sb_bucket(float d) {
    float b = d * (SB_BUCKETS / SB_RANGE);
    return b >= SB_BUCKETS - 1 ? SB_BUCKETS - 1 : (int)b;
}

/* better (value, id) for the greedy argmax: a larger value, the lower id on ties; id < 0 = none */
__device__ __forceinline__ bool sb_better(float av, int ai, float bv, int bi) {
    if (ai < 0) return false;
    if (bi < 0) return true;
    return av > bv || (av == bv && ai < bi);
}

/* Inclusive scan of one value per thread (double masses or int counts) over the block (blockDim.x a
 * multiple of 32, <= 1024); `tmp` is __shared__ T[32]. Returns the inclusive prefix; *total the
 * block's sum. */
template <typename T> __device__ T sb_block_scan(T v, T *tmp, T *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        T n = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += n;
    }
    __syncthreads();
    if (lane == 31) tmp[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T w = lane < nw ? tmp[lane] : (T)0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            T n = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += n;
        }
        if (lane < nw) tmp[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += tmp[warp - 1];
    *total = tmp[nw - 1];
    return v;
}

/* ---- penalty ---- */
__global__ void k_sb_copy(const float *__restrict__ x, float *__restrict__ pl, int V) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < V; i += gridDim.x * blockDim.x) pl[i] = x[i];
}

__global__ void k_sb_penalty(const float *__restrict__ x, float *__restrict__ pl, int V,
                             const unsigned char *__restrict__ in, int window_cap, float pen) {
    const sb_input *h = (const sb_input *)in;
    const int32_t *w = (const int32_t *)(in + sizeof(sb_input));
    int n = h->n_window < window_cap ? h->n_window : window_cap;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        int id = w[j];
        if (id < 0 || id >= V) continue;
        float l = x[id];
        pl[id] = l < 0 ? l * pen : l / pen; /* the same value for a repeated id */
    }
}

/* The block's best (value, id) by sb_better into sv[0] / si[0] (shared, one slot per thread), each
 * thread offering its own; returns the OR of the threads' nan. Called by every thread. */
__device__ __forceinline__ int sb_block_best(float bv, int bi, int nan, float *sv, int *si) {
    sv[threadIdx.x] = bv;
    si[threadIdx.x] = bi;
    nan = __syncthreads_or(nan);
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s && sb_better(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x], si[threadIdx.x])) {
            sv[threadIdx.x] = sv[threadIdx.x + s];
            si[threadIdx.x] = si[threadIdx.x + s];
        }
        __syncthreads();
    }
    return nan;
}

/* ---- max / argmax / NaN ---- */
__global__ void k_sb_stats(const float *__restrict__ x, int V, float *pv, int *pi, int *pnan) {
    __shared__ float sv[SB_THREADS];
    __shared__ int si[SB_THREADS];
    const int lo = blockIdx.x * SB_CHUNK, hi = min(V, lo + SB_CHUNK);
    float bv = -INFINITY;
    int bi = -1, nan = 0;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float v = x[i];
        if (v != v) nan = 1;
        else if (v > bv) { /* ids ascend per thread: the first of equal values stays */
            bv = v;
            bi = i;
        }
    }
    nan = sb_block_best(bv, bi, nan, sv, si);
    if (threadIdx.x == 0) {
        pv[blockIdx.x] = sv[0];
        pi[blockIdx.x] = si[0];
        pnan[blockIdx.x] = nan;
    }
}

/* One block: the partials → greedy result or mx (+ min_p threshold); clears the top_p state. */
__global__ void k_sb_stats_fin(const float *pv, const int *pi, const int *pnan, int nb, bool greedy,
                               double ln_min_p, double *bm, sb_state *st) {
    __shared__ float sv[SB_THREADS];
    __shared__ int si[SB_THREADS];
    float bv = -INFINITY;
    int bi = -1, nan = 0;
    for (int b = threadIdx.x; b < nb; b += blockDim.x) {
        nan |= pnan[b];
        if (sb_better(pv[b], pi[b], bv, bi)) {
            bv = pv[b];
            bi = pi[b];
        }
    }
    nan = sb_block_best(bv, bi, nan, sv, si);
    for (int b = threadIdx.x; b < SB_BUCKETS; b += blockDim.x) bm[b] = 0.0;
    if (threadIdx.x == 0) {
        bv = sv[0];
        bi = si[0];
        st->n_tail = 0;
        st->n_g = 0;
        st->topk_on = 0;
        st->cut = 0;
        st->before = 0.0;
        st->target = 0.0;
        if (greedy) { /* the host's argmax skips NaN; none above -inf → its error, on the host */
            st->fail = bi < 0;
            st->result = bi;
        } else {
            st->fail = nan || bi < 0 || !isfinite(bv);
            st->result = -1;
            st->mx = bv;
            st->thr = (float)((double)bv + ln_min_p);
        }
    }
}

/* ---- top_p ---- */
__global__ void k_sb_topp_hist(const float *__restrict__ x, int V, sb_state *st, double *part_z, double *bm) {
    __shared__ double h[SB_BUCKETS];
    __shared__ double tmp[32];
    if (st->fail) return;
    const float mx = st->mx;
    for (int b = threadIdx.x; b < SB_BUCKETS; b += blockDim.x) h[b] = 0.0;
    __syncthreads();
    const int lo = blockIdx.x * SB_CHUNK, hi = min(V, lo + SB_CHUNK);
    double z = 0.0;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float l = x[i];
        float w = sb_exp(l - mx); /* 0 for -inf */
        z += w;
        if (w > 0) atomicAdd(&h[sb_bucket(mx - l)], (double)w);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < SB_BUCKETS; b += blockDim.x)
        if (h[b] != 0.0) atomicAdd(&bm[b], h[b]);
    double tot;
    sb_block_scan(z, tmp, &tot);
    if (threadIdx.x == 0) part_z[blockIdx.x] = tot;
}

/* One block of SB_BUCKETS threads: z, target = top_p * z, the cut bucket (the first whose
 * cumulative mass reaches the target, at most the last) and the mass before it. */
__global__ void __launch_bounds__(1024) k_sb_topp_cut(const double *part_z, int nb, const double *bm, double top_p, sb_state *st) {
    __shared__ double tmp[32];
    __shared__ int cut;
    if (st->fail) return;
    double z = 0.0;
    for (int b = threadIdx.x; b < nb; b += blockDim.x) z += part_z[b];
    double zt;
    sb_block_scan(z, tmp, &zt);
    const double target = top_p * zt;
    double m = threadIdx.x < SB_BUCKETS ? bm[threadIdx.x] : 0.0, tot;
    double incl = sb_block_scan(m, tmp, &tot);
    if (threadIdx.x == 0) cut = SB_BUCKETS - 1;
    __syncthreads();
    if (threadIdx.x < SB_BUCKETS - 1 && incl >= target) atomicMin(&cut, (int)threadIdx.x);
    __syncthreads();
    if (threadIdx.x == cut) {
        st->cut = cut;
        st->before = incl - m;
        st->target = target;
    }
}

/* The candidates of this block's SB_CHUNK ids: (x[i], i) for every i with keep(x[i]), appended at
 * slots counted in *count (at most TAIL_CAP stored; the consumer fails over to the host beyond). */
template <typename Keep>
__device__ __forceinline__ void sb_gather(const float *__restrict__ x, int V, Keep keep, int *count, float *ov,
                                          int *oi) {
    const int lo = blockIdx.x * SB_CHUNK, hi = min(V, lo + SB_CHUNK);
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float l = x[i];
        if (!keep(l)) continue;
        int p = atomicAdd(count, 1);
        if (p < TAIL_CAP) {
            ov[p] = l;
            oi[p] = i;
        }
    }
}

/* top_p: the tokens of the cut bucket (with a non-zero weight) */
__global__ void k_sb_topp_gather(const float *__restrict__ x, int V, sb_state *st, float *tail_v, int *tail_i) {
    if (st->fail) return;
    const float mx = st->mx;
    const int cut = st->cut;
    sb_gather(x, V, [=](float l) { return sb_bucket(mx - l) == cut && sb_exp(l - mx) > 0; }, &st->n_tail, tail_v,
              tail_i);
}

/* (v desc, id asc) */
__device__ __forceinline__ bool sb_before(float av, int ai, float bv, int bi) {
    return av > bv || (av == bv && ai < bi);
}

/* Bitonic sort of (sv, si)[P] in shared memory, P a power of two: entry a goes before entry b when
 * before(va, ia, vb, ib). Called by every thread of the block (barriers inside). */
template <typename Before> __device__ __forceinline__ void sb_bitonic(float *sv, int *si, int P, Before before) {
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int t = threadIdx.x; t < P; t += blockDim.x) {
                int o = t ^ j;
                if (o > t) {
                    bool up = (t & k) == 0; /* this half in `before` order, the other reversed */
                    bool sw = up ? before(sv[o], si[o], sv[t], si[t]) : before(sv[t], si[t], sv[o], si[o]);
                    if (sw) {
                        float fv = sv[t];
                        sv[t] = sv[o];
                        sv[o] = fv;
                        int fi = si[t];
                        si[t] = si[o];
                        si[o] = fi;
                    }
                }
            }
            __syncthreads();
        }
}

/* One block of 1024 threads: sorts the cut bucket, keeps its head while the mass of more likely
 * tokens is below the target, applies min_p (order kept); the list's tail in tail_v/tail_i. */
__global__ void __launch_bounds__(1024) k_sb_topp_tail(float *tail_v, int *tail_i, sb_state *st, bool min_p) {
    __shared__ float sv[TAIL_CAP];
    __shared__ int si[TAIL_CAP];
    __shared__ double tmp[32];
    __shared__ int itmp[32];
    if (st->fail) return;
    const int n = st->n_tail;
    if (n > TAIL_CAP) {
        __syncthreads();
        if (threadIdx.x == 0) st->fail = 1;
        return;
    }
    int P = 1;
    while (P < n) P <<= 1;
    for (int j = threadIdx.x; j < P; j += blockDim.x) {
        sv[j] = j < n ? tail_v[j] : -INFINITY;
        si[j] = j < n ? tail_i[j] : 0x7fffffff;
    }
    __syncthreads();
    sb_bitonic(sv, si, P, [](float av, int ai, float bv, int bi) { return sb_before(av, ai, bv, bi); });
    /* keep j while before + mass(0..j-1) < target: per-thread runs of R consecutive entries */
    const float mx = st->mx, thr = st->thr;
    const double before = st->before, target = st->target;
    const int R = (n + blockDim.x - 1) / blockDim.x, j0 = threadIdx.x * R;
    double own = 0.0;
    for (int j = j0; j < j0 + R && j < n; j++) own += (double)sb_exp(sv[j] - mx);
    double tot;
    double excl = sb_block_scan(own, tmp, &tot) - own;
    int keep = 0; /* this thread's entries kept by top_p and min_p */
    double acc = before + excl;
    bool flag[8]; /* R <= TAIL_CAP / 1024 = 4 */
    for (int r = 0; r < 8; r++) flag[r] = false;
    for (int r = 0; r < R && j0 + r < n; r++) {
        int j = j0 + r;
        if (!(acc < target)) break;
        acc += (double)sb_exp(sv[j] - mx);
        bool k = !min_p || sv[j] >= thr || sv[j] == mx;
        flag[r] = k;
        keep += k;
    }
    int ktot;
    int kexcl = sb_block_scan(keep, itmp, &ktot) - keep;
    /* compact in order into tail_v/tail_i (the gather buffers are no longer needed) */
    for (int r = 0, w = kexcl; r < R && r < 8; r++)
        if (flag[r]) {
            tail_v[w] = sv[j0 + r];
            tail_i[w] = si[j0 + r];
            w++;
        }
    if (threadIdx.x == 0) st->n_tail = ktot;
}

/* ---- the draw ---- */
enum { SB_LIST_ALL = 0, SB_LIST_TOPP = 1, SB_LIST_MINP = 2 };

/* Is id with penalized logit l in the list part ordered by id? (mode: SB_LIST_* | min_p flag) */
__device__ __forceinline__ bool sb_listed(float l, float wt, int mode, bool min_p, const sb_state *st) {
    if (mode == SB_LIST_TOPP) return sb_bucket(st->mx - l) < st->cut && (!min_p || l >= st->thr || l == st->mx);
    if (mode == SB_LIST_MINP) return l >= st->thr && l > -INFINITY;
    return wt > 0; /* unfiltered: every token, the last one the host falls back to has weight > 0 */
}

/* Block b (SB_CHUNK threads, one id each): inclusive prefix of the listed weights. */
__device__ double sb_chunk_scan(const float *x, int V, int b, int mode, bool min_p, float inv_t, const sb_state *st,
                                double *tmp, double *total, bool *listed, float *wt_out) {
    const int i = b * SB_CHUNK + threadIdx.x;
    float l = i < V ? x[i] : -INFINITY;
    float wt = i < V ? sb_exp((l - st->mx) * inv_t) : 0.0f;
    bool in = i < V && sb_listed(l, wt, mode, min_p, st);
    *listed = in;
    *wt_out = wt;
    return sb_block_scan(in ? (double)wt : 0.0, tmp, total);
}

__global__ void __launch_bounds__(1024) k_sb_draw_part(const float *__restrict__ x, int V, int mode, bool min_p, float inv_t, sb_state *st,
                               double *part_d, int *part_last) {
    __shared__ double tmp[32];
    __shared__ int last;
    if (st->fail || st->topk_on) return;
    if (threadIdx.x == 0) last = -1;
    bool in;
    float wt;
    double tot;
    sb_chunk_scan(x, V, blockIdx.x, mode, min_p, inv_t, st, tmp, &tot, &in, &wt);
    if (in) atomicMax(&last, (int)(blockIdx.x * SB_CHUNK + threadIdx.x));
    __syncthreads();
    if (threadIdx.x == 0) {
        part_d[blockIdx.x] = tot;
        part_last[blockIdx.x] = last;
    }
}

/* One block of SB_CHUNK threads: total = listed blocks + tail, t = u * total, the first entry of the
 * list whose cumulative weight exceeds t (else the list's last entry). */
__global__ void __launch_bounds__(1024) k_sb_draw_fin(const float *__restrict__ x, int V, int nb, int mode, bool min_p, float inv_t,
                              sb_state *st, const double *part_d, const int *part_last, const float *tail_v,
                              const int *tail_i, const unsigned char *in) {
    __shared__ double tmp[32];
    __shared__ int found, blk, lastid;
    __shared__ double carry_s;
    if (st->fail) {
        if (threadIdx.x == 0) st->result = -1;
        return;
    }
    if (st->topk_on) return; /* k_sb_topk_fin draws */
    const double u = ((const sb_input *)in)->u;
    const float mx = st->mx;
    const int nt = mode == SB_LIST_TOPP ? st->n_tail : 0;
    /* tail weights (in list order) */
    double tw = 0.0;
    for (int j = threadIdx.x; j < nt; j += blockDim.x) tw += (double)sb_exp((tail_v[j] - mx) * inv_t);
    double st_tot;
    sb_block_scan(tw, tmp, &st_tot);
    /* the blocks' sums: total and the block holding t */
    if (threadIdx.x == 0) {
        carry_s = 0.0;
        found = 0x7fffffff;
        blk = -1;
        lastid = -1;
    }
    __syncthreads();
    double sm = 0.0;
    for (int b = threadIdx.x; b < nb; b += blockDim.x) sm += part_d[b];
    double sm_tot;
    sb_block_scan(sm, tmp, &sm_tot);
    const double t = u * (sm_tot + st_tot);
    for (int b0 = 0; b0 < nb; b0 += blockDim.x) {
        int b = b0 + threadIdx.x;
        double v = b < nb ? part_d[b] : 0.0, tot;
        double incl = carry_s + sb_block_scan(v, tmp, &tot);
        if (b < nb && incl > t) atomicMin(&found, b);
        if (b < nb && part_last[b] >= 0) atomicMax(&lastid, part_last[b]);
        __syncthreads();
        if (found == b && b < nb) {
            blk = b;
            carry_s = incl - v; /* the exclusive prefix of block b */
        }
        __syncthreads();
        if (found != 0x7fffffff) break;
        if (threadIdx.x == blockDim.x - 1) carry_s = incl;
        __syncthreads();
    }
    __syncthreads();
    if (blk >= 0) { /* in the listed part: search block blk */
        const double rem = t - carry_s;
        bool lst;
        float wt;
        double tot;
        double incl = sb_chunk_scan(x, V, blk, mode, min_p, inv_t, st, tmp, &tot, &lst, &wt);
        __syncthreads();
        if (threadIdx.x == 0) found = 0x7fffffff;
        __syncthreads();
        if (lst && wt > 0 && incl > rem) atomicMin(&found, (int)threadIdx.x);
        __syncthreads();
        if (threadIdx.x == 0)
            st->result = found != 0x7fffffff ? blk * SB_CHUNK + found : part_last[blk]; /* rounding */
        return;
    }
    /* in the tail (top_p's sorted head), else the list's last entry */
    const double rem = t - sm_tot;
    if (threadIdx.x == 0) found = 0x7fffffff;
    __syncthreads();
    double carry = 0.0;
    for (int j0 = 0; j0 < nt; j0 += blockDim.x) {
        int j = j0 + threadIdx.x;
        double w = j < nt ? (double)sb_exp((tail_v[j] - mx) * inv_t) : 0.0, tot;
        double incl = carry + sb_block_scan(w, tmp, &tot);
        if (j < nt && w > 0 && incl > rem) atomicMin(&found, j);
        __syncthreads();
        if (found != 0x7fffffff) break;
        carry += tot;
    }
    if (threadIdx.x == 0) st->result = found != 0x7fffffff ? tail_i[found] : nt > 0 ? tail_i[nt - 1] : lastid;
}

/* ---- top_k ---- */

/* Is id with penalized logit l in the list top_k filters? (the host's vocabulary list holds every id) */
__device__ __forceinline__ bool sb_in_list(float l, int mode, bool min_p, const sb_state *st) {
    if (mode == SB_LIST_TOPP) return sb_bucket(st->mx - l) < st->cut && (!min_p || l >= st->thr || l == st->mx);
    if (mode == SB_LIST_MINP) return l >= st->thr && l > -INFINITY;
    return true;
}

/* monotone unsigned key of a float (no NaN here); -0 and +0 share one key */
__device__ __forceinline__ unsigned sb_key(float v) {
    unsigned u = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}
__device__ __forceinline__ float sb_unkey(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? k & 0x7fffffffu : ~k);
}

/* One block: the k-th largest value of the list (listed ids in id order ++ top_p's tail) by a radix
 * select over 4 digits of 8 bits, and how many entries are above it. top_k is a no-op when the list
 * (top_p/min_p ran) holds at most k entries. */
__global__ void __launch_bounds__(1024) k_sb_topk_select(const float *__restrict__ x, int V, int mode, bool min_p,
                                                         const float *tail_v, int k, sb_state *st) {
    __shared__ unsigned hist[256];
    __shared__ unsigned prefix, mask;
    __shared__ int rank, above, n_list;
    if (st->fail) return;
    const int nt = mode == SB_LIST_TOPP ? st->n_tail : 0;
    if (threadIdx.x == 0) {
        prefix = 0;
        mask = 0;
        rank = k - 1; /* 0 = the largest */
        above = 0;
        n_list = 0;
    }
    for (int pass = 0; pass < 4; pass++) {
        const int shift = 24 - 8 * pass;
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const unsigned pf = prefix, mk = mask;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            float l = x[i];
            if (!sb_in_list(l, mode, min_p, st)) continue;
            unsigned key = sb_key(l);
            if ((key & mk) == pf) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        for (int j = threadIdx.x; j < nt; j += blockDim.x) {
            unsigned key = sb_key(tail_v[j]);
            if ((key & mk) == pf) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            if (pass == 0) {
                int tot = 0;
                for (int b = 0; b < 256; b++) tot += (int)hist[b];
                n_list = tot;
            }
            int cum = 0, b = 255;
            for (; b > 0; b--) {
                if (cum + (int)hist[b] > rank) break;
                cum += (int)hist[b];
            }
            rank -= cum;
            above += cum;
            prefix |= (unsigned)b << shift;
            mask |= 255u << shift;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const bool list_mode = mode != SB_LIST_ALL;
        st->topk_on = !(list_mode && n_list <= k);
        st->kth = sb_unkey(prefix);
        st->ties_left = k - above;
    }
}

__global__ void k_sb_topk_gather(const float *__restrict__ x, int V, int mode, bool min_p, sb_state *st, float *g_v,
                                 int *g_i) {
    if (st->fail || !st->topk_on) return;
    const float kth = st->kth;
    sb_gather(x, V, [=](float l) { return l >= kth && l > -INFINITY && sb_in_list(l, mode, min_p, st); }, &st->n_g,
              g_v, g_i);
}

/* One block: the top_k list = [gathered ids in id order] ++ [top_p's tail entries], entries above
 * kth and the first ties_left equal to it kept, then the draw over the kept entries in that order. */
__global__ void __launch_bounds__(1024) k_sb_topk_fin(int mode, float inv_t, sb_state *st, const float *g_v,
                                                      const int *g_i, const float *tail_v, const int *tail_i,
                                                      const unsigned char *in) {
    __shared__ float sv[TAIL_CAP];
    __shared__ int si[TAIL_CAP];
    __shared__ double tmp[32];
    __shared__ int itmp[32];
    __shared__ int found, lastk;
    if (st->fail || !st->topk_on) return;
    const int ng = st->n_g;
    if (ng > TAIL_CAP) {
        __syncthreads();
        if (threadIdx.x == 0) {
            st->fail = 1;
            st->result = -1;
        }
        return;
    }
    int P = 1;
    while (P < ng) P <<= 1;
    for (int j = threadIdx.x; j < P; j += blockDim.x) {
        sv[j] = j < ng ? g_v[j] : 0.0f;
        si[j] = j < ng ? g_i[j] : 0x7fffffff;
    }
    __syncthreads();
    sb_bitonic(sv, si, P, [](float, int ai, float, int bi) { return ai < bi; }); /* by id ascending */
    const float mx = st->mx, kth = st->kth;
    const int ties_left = st->ties_left, nt = mode == SB_LIST_TOPP ? st->n_tail : 0, m = ng + nt;
    const double u = ((const sb_input *)in)->u;
    if (threadIdx.x == 0) {
        found = 0x7fffffff;
        lastk = -1;
    }
    /* pass 0: the total weight of the kept entries; pass 1: the entry holding u * total */
    double total = 0.0, target = 0.0;
    for (int pass = 0; pass < 2; pass++) {
        int tcarry = 0;
        double carry = 0.0;
        for (int e0 = 0; e0 < m; e0 += blockDim.x) {
            const int e = e0 + threadIdx.x;
            float v = 0.0f;
            if (e < ng) v = sv[e];
            else if (e < m) v = tail_v[e - ng];
            const bool in_range = e < m;
            const int tie = in_range && v == kth;
            int ttot;
            const int tincl = tcarry + sb_block_scan(tie, itmp, &ttot);
            const bool keep = in_range && v > -INFINITY && (v > kth || (tie && tincl - 1 < ties_left));
            const double w = keep ? (double)sb_exp((v - mx) * inv_t) : 0.0;
            double wtot;
            const double incl = carry + sb_block_scan(w, tmp, &wtot);
            if (pass == 1) {
                if (keep && w > 0 && incl > target) atomicMin(&found, e);
                if (keep) atomicMax(&lastk, e);
            }
            __syncthreads();
            if (pass == 1 && found != 0x7fffffff) break;
            tcarry += ttot;
            carry += wtot;
        }
        if (pass == 0) {
            total = carry;
            target = u * total;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int e = found != 0x7fffffff ? found : lastk;
        st->result = e < 0 ? -1 : e < ng ? si[e] : tail_i[e - ng];
    }
}

/* ---- host API ---- */

extern "C" lmx_status lmx_cuda_sampler_create(int vocab, int window_cap, lmx_cuda_sampler **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sampler: NULL output");
    *out = NULL;
    if (vocab <= 0 || window_cap < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sampler: vocab %d, window %d", vocab, window_cap);
    lmx_cuda_sampler *s = (lmx_cuda_sampler *)calloc(1, sizeof *s);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda sampler");
    s->vocab = vocab;
    s->window_cap = window_cap;
    s->nb = (vocab + SB_CHUNK - 1) / SB_CHUNK;
    const size_t nb = (size_t)s->nb;
    s->in_bytes = sizeof(sb_input) + (size_t)(window_cap > 0 ? window_cap : 1) * sizeof(int32_t);
    /* layout: doubles first (8-byte aligned), then floats/ints */
    size_t off = 0;
    const size_t o_bm = off; off += SB_BUCKETS * sizeof(double);
    const size_t o_pd = off; off += nb * sizeof(double);
    const size_t o_st = off; off += (sizeof(sb_state) + 15) / 16 * 16;
    const size_t o_in = off; off += (s->in_bytes + 15) / 16 * 16;
    const size_t o_pl = off; off += (size_t)vocab * sizeof(float);
    const size_t o_pv = off; off += nb * sizeof(float);
    const size_t o_pi = off; off += nb * sizeof(int);
    const size_t o_pn = off; off += nb * sizeof(int);
    const size_t o_lt = off; off += nb * sizeof(int);
    const size_t o_tv = off; off += TAIL_CAP * sizeof(float);
    const size_t o_ti = off; off += TAIL_CAP * sizeof(int);
    const size_t o_gv = off; off += TAIL_CAP * sizeof(float);
    const size_t o_gi = off; off += TAIL_CAP * sizeof(int);
    lmx_status st = lmx_cuda_malloc(&s->dmem, off);
    if (st == LMX_OK) st = lmx_cuda_malloc_host((void **)&s->h_in, s->in_bytes);
    if (st == LMX_OK) st = lmx_cuda_malloc_host((void **)&s->h_res, sizeof(int32_t));
    if (st != LMX_OK) {
        lmx_cuda_sampler_destroy(s);
        return lmx_error_prefix(st, "cuda sampler for %d ids", vocab);
    }
    unsigned char *b = (unsigned char *)s->dmem;
    s->bm = (double *)(b + o_bm);
    s->part_d = (double *)(b + o_pd);
    s->st = (sb_state *)(b + o_st);
    s->d_in = b + o_in;
    s->pl = (float *)(b + o_pl);
    s->part_v = (float *)(b + o_pv);
    s->part_i = (int *)(b + o_pi);
    s->part_nan = (int *)(b + o_pn);
    s->part_last = (int *)(b + o_lt);
    s->tail_v = (float *)(b + o_tv);
    s->tail_i = (int *)(b + o_ti);
    s->g_v = (float *)(b + o_gv);
    s->g_i = (int *)(b + o_gi);
    memset(s->h_in, 0, s->in_bytes);
    *s->h_res = -1;
    *out = s;
    return LMX_OK;
}

extern "C" void lmx_cuda_sampler_destroy(lmx_cuda_sampler *s) {
    if (!s) return;
    lmx_cuda_free(s->dmem);
    lmx_cuda_free_host(s->h_in);
    lmx_cuda_free_host(s->h_res);
    free(s);
}

extern "C" int lmx_cuda_sampler_vocab(const lmx_cuda_sampler *s) { return s->vocab; }
extern "C" int lmx_cuda_sampler_window_cap(const lmx_cuda_sampler *s) { return s->window_cap; }

extern "C" bool lmx_cuda_sample_supported(const lmx_cuda_sample_params *p) {
    /* frequency / presence penalties need the generated-token counts: the host samples those */
    return p->vocab > 0 && p->sampling.top_k >= 0 && p->sampling.frequency_penalty == 0.0f &&
           p->sampling.presence_penalty == 0.0f;
}

extern "C" lmx_status lmx_cuda_sample_set_input(lmx_cuda_sampler *s, double u, const int32_t *window, int n_window) {
    if (n_window < 0 || n_window > s->window_cap || (n_window > 0 && !window))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sampler: window of %d ids (capacity %d)", n_window,
                         s->window_cap);
    sb_input h = {u, n_window, 0};
    memcpy(s->h_in, &h, sizeof h);
    if (n_window > 0) memcpy(s->h_in + sizeof h, window, (size_t)n_window * sizeof(int32_t));
    return LMX_OK;
}

extern "C" int32_t lmx_cuda_sample_read(const lmx_cuda_sampler *s) { return *s->h_res; }

extern "C" lmx_status lmx_cuda_sample_enqueue(lmx_cuda_sampler *s, const lmx_cuda_sample_params *p,
                                              const float *logits, lmx_cuda_stream stream) {
    if (!s || !p || !logits || p->vocab != s->vocab)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample: bad arguments (vocab %d)", p ? p->vocab : -1);
    if (!lmx_cuda_sample_supported(p))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda sample: top_k %d is sampled on the host", p->sampling.top_k);
    cudaStream_t cs = LMX_CU_STREAM(stream);
    const int V = s->vocab, nb = s->nb;
    lmx_status st = lmx_cuda_memcpy_h2d(s->d_in, s->h_in, s->in_bytes, stream);
    if (st != LMX_OK) return st;
    const float *x = logits;
    const bool pen = p->sampling.repetition_penalty != 0.0f && p->sampling.repetition_penalty != 1.0f && s->window_cap > 0;
    if (pen) {
        k_sb_copy<<<nb, SB_THREADS, 0, cs>>>(logits, s->pl, V);
        k_sb_penalty<<<1, SB_THREADS, 0, cs>>>(logits, s->pl, V, s->d_in, s->window_cap, p->sampling.repetition_penalty);
        x = s->pl;
    }
    const bool greedy = p->sampling.temperature == 0.0f;
    const bool topp = p->sampling.top_p > 0 && p->sampling.top_p < 1, minp = p->sampling.min_p > 0;
    const double ln_min_p = minp ? log((double)p->sampling.min_p) : 0.0;
    k_sb_stats<<<nb, SB_THREADS, 0, cs>>>(x, V, s->part_v, s->part_i, s->part_nan);
    k_sb_stats_fin<<<1, SB_THREADS, 0, cs>>>(s->part_v, s->part_i, s->part_nan, nb, greedy, ln_min_p, s->bm, s->st);
    if (!greedy) {
        const float inv_t = 1.0f / p->sampling.temperature;
        int mode = SB_LIST_ALL;
        if (topp) {
            mode = SB_LIST_TOPP;
            k_sb_topp_hist<<<nb, SB_THREADS, 0, cs>>>(x, V, s->st, s->part_d, s->bm);
            k_sb_topp_cut<<<1, SB_BUCKETS, 0, cs>>>(s->part_d, nb, s->bm, (double)p->sampling.top_p, s->st);
            k_sb_topp_gather<<<nb, SB_THREADS, 0, cs>>>(x, V, s->st, s->tail_v, s->tail_i);
            k_sb_topp_tail<<<1, 1024, 0, cs>>>(s->tail_v, s->tail_i, s->st, minp);
        } else if (minp) {
            mode = SB_LIST_MINP;
        }
        const bool topk = p->sampling.top_k > 0 && p->sampling.top_k < V;
        if (topk) {
            k_sb_topk_select<<<1, 1024, 0, cs>>>(x, V, mode, minp, s->tail_v, p->sampling.top_k, s->st);
            k_sb_topk_gather<<<nb, SB_THREADS, 0, cs>>>(x, V, mode, minp, s->st, s->g_v, s->g_i);
        }
        k_sb_draw_part<<<nb, SB_CHUNK, 0, cs>>>(x, V, mode, minp, inv_t, s->st, s->part_d, s->part_last);
        k_sb_draw_fin<<<1, SB_CHUNK, 0, cs>>>(x, V, nb, mode, minp, inv_t, s->st, s->part_d, s->part_last,
                                              s->tail_v, s->tail_i, s->d_in);
        if (topk)
            k_sb_topk_fin<<<1, 1024, 0, cs>>>(mode, inv_t, s->st, s->g_v, s->g_i, s->tail_v, s->tail_i, s->d_in);
    }
    LMX_CU_CHECK_LAUNCH("sample");
    return lmx_cuda_memcpy_d2h(s->h_res, &s->st->result, sizeof(int32_t), stream);
}
