/* cpu_attention.c — microbenchmark of the CPU attention op (issue 11 A/Bs): T query rows at
 * positions CTX..CTX+T-1 (causal; T = 1 is a decode step over CTX + 1 keys, T > 1 a prefill chunk)
 * over a full ring cache of random fp32 keys and values, N_HEADS query heads sharing N_KV heads of
 * HEAD_DIM, through the CPU backend at a level; the best of `reps` timed calls after one warm-up.
 * Prints one line: the shape, the kernels that ran, ms per call (wall, and the process's CPU time:
 * the steadier figure on a shared machine), the (query, key) pairs per second and GB/s of K/V
 * bytes (each visible K/V row counted once per call), both by the wall time.
 *
 *   lmx_cpu_attention HEAD_DIM N_HEADS N_KV T CTX [threads 2] [reps 10] [level: scalar|avx2|avxvnni|
 *                     avx512 or 0..3, default the best the CPU has] [window 0]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HEAD_DIM N_HEADS N_KV T CTX [threads] [reps] [level] [window]\n", argv[0]);
        return 2;
    }
    const int D = atoi(argv[1]), NH = atoi(argv[2]), NKV = atoi(argv[3]), T = atoi(argv[4]), ctx = atoi(argv[5]);
    const int threads = argc > 6 ? atoi(argv[6]) : 2, reps = argc > 7 ? atoi(argv[7]) : 10;
    const int window = argc > 9 ? atoi(argv[9]) : 0;
    static const char *levels[] = {"scalar", "avx2", "avxvnni", "avx512"};
    int level = LMX_CPU_AVX512;
    if (argc > 8) {
        level = atoi(argv[8]);
        for (int i = 0; i <= LMX_CPU_AVX512; i++)
            if (!strcmp(argv[8], levels[i])) level = i;
    }
    if (D < 1 || NH < 1 || NKV < 1 || NH % NKV || T < 1 || ctx < 0) {
        fprintf(stderr, "bad shape\n");
        return 2;
    }
    lmx_backend *be = NULL;
    if (lmx_backend_cpu_create_level(threads, (lmx_cpu_level)level, &be) != LMX_OK) return 1;
    const int cap = ctx + T;
    const size_t nq = (size_t)T * NH * D, nc = (size_t)NKV * cap * D;
    float *h = malloc(sizeof(float) * (nq > nc ? nq : nc));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    for (int t = 0; t < T; t++) pos[t] = ctx + t;
    lmx_buf *q = NULL, *kc = NULL, *vc = NULL, *out = NULL;
    if (!h || !pos || be->ops->buf_alloc(be, nq, &q) != LMX_OK || be->ops->buf_alloc(be, nc, &kc) != LMX_OK ||
        be->ops->buf_alloc(be, nc, &vc) != LMX_OK || be->ops->buf_alloc(be, nq, &out) != LMX_OK) {
        fprintf(stderr, "%s\n", lmx_last_error_detail());
        return 1;
    }
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    lmx_buf *bufs[3] = {q, kc, vc};
    const size_t lens[3] = {nq, nc, nc};
    for (int b = 0; b < 3; b++) {
        for (size_t i = 0; i < lens[b]; i++)
            h[i] = (float)((int)((rng = rng * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) * 1e-3f;
        be->ops->buf_write(be, bufs[b], 0, h, lens[b]);
    }
    const lmx_attn_params p = {.n_tokens = T, .n_heads = NH, .n_kv_heads = NKV, .head_dim = D, .capacity = cap,
                               .window = window, .scale = 0.125f};
    double best = 1e30, pairs = 0, rows = 0;
    for (int t = 0; t < T; t++) {
        const int lo = window > 0 && pos[t] - window + 1 > 0 ? pos[t] - window + 1 : 0;
        pairs += (double)(pos[t] - lo + 1) * NH;
    }
    rows = (double)(window > 0 && window < cap ? window + T - 1 : cap) * NKV;
    double best_cpu = 1e30;
    for (int r = 0; r <= reps; r++) {
        const double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (be->ops->attention(be, q, kc, vc, out, &p, pos) != LMX_OK) {
            fprintf(stderr, "%s\n", lmx_last_error_detail());
            return 1;
        }
        const double dt = clock_s(CLOCK_MONOTONIC) - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (r > 0 && dt < best) best = dt;
        if (r > 0 && dc < best_cpu) best_cpu = dc;
    }
    printf("attention D %d heads %d/%d T %d ctx %d window %d threads %d %s: %.3f ms (cpu %.3f ms), %.3f Gpairs/s, %.1f GB/s\n",
           D, NH, NKV, T, ctx, window, threads, lmx_backend_cpu_kernels(be), best * 1e3, best_cpu * 1e3, pairs / best * 1e-9,
           rows * 2.0 * D * sizeof(float) / best * 1e-9);
    be->ops->buf_free(be, q);
    be->ops->buf_free(be, kc);
    be->ops->buf_free(be, vc);
    be->ops->buf_free(be, out);
    lmx_backend_destroy(be);
    free(h);
    free(pos);
    return 0;
}
