/* cpu_attention.h — the CPU attention op (cpu_attention.c) and its inner kernels per level.
 *
 * Flash-style: the keys of a query row lo..pos are visited in blocks of LMX_ATTN_BLOCK positions
 * aligned to absolute positions (block b holds positions [b·B, b·B + B)), each block with an online
 * softmax (running max m, denominator l, accumulator rescaled by exp(m_old − m_new) when the max
 * grows). One work item is a tile of query rows of one sequence × the query heads of a KV head that
 * it covers: each key and value row of a block is read from memory once for the whole tile and then
 * from L1 for every (row, head) of it. A query's arithmetic depends only on its own position, window
 * and keys (the blocks and the part of each block it sees), never on which rows or heads share its
 * tile, and every kernel below computes each query's numbers in one order whatever the number of
 * queries it is given: a row's output is bit for bit that of the row alone (batched decode, paged vs
 * ring, prefill chunk vs decode).
 *
 * Levels: the scalar level is the plain reference (sequential dots, expf, acc += p·v); the SIMD
 * levels run the AVX2 kernels (cpu_attention_avx2.c: 8-lane dots reduced by one fixed tree, a
 * polynomial exp accurate to ~2 ulp, FMA accumulation); the AVX-512 level runs them too. */
#ifndef LMX_BACKEND_CPU_ATTENTION_H
#define LMX_BACKEND_CPU_ATTENTION_H

#include <stddef.h>

#include "backend/backend.h"

/* keys per block (positions [b·B, b·B + B)) */
#define LMX_ATTN_BLOCK 64

typedef struct lmx_attn_kernels {
    /* s[i·ss + j] = scale · (q_i · k_j) for nq query rows q + i·D and n key rows k[j]; each (i, j) in
     * one order whatever nq, n */
    void (*scores)(const float *q, int nq, const float *const *k, int n, int D, float scale, float *s, size_t ss);
    /* one block of one query's online softmax over s[0..n): m' = max(*m, max s), s[j] = exp(s[j] − m'),
     * *alpha = exp(*m − m') (1 when the max did not grow), *m = m'; returns Σ s[j] in one order per n */
    float (*softmax)(float *s, int n, float *m, float *alpha);
    /* acc[i·D + d] += Σ_j p[i·ps + j] · v[j][d] for nq queries, j in increasing order (per element one
     * chain, the same whatever nq) */
    void (*pv)(float *acc, int nq, const float *p, size_t ps, const float *const *v, int n, int D);
} lmx_attn_kernels;

/* the kernels of a level (the CPU supports it: lmx_cpu_kernels_select chose it) */
const lmx_attn_kernels *lmx_cpu_attn_kernels(lmx_cpu_level level);

extern const lmx_attn_kernels lmx_attn_scalar;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
extern const lmx_attn_kernels lmx_attn_avx2;
#endif

#endif
