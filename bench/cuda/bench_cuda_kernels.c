/* bench_cuda_kernels.c — microbenchmark (not a test) of the decode kernels: effective GB/s of the
 * GEMVs for Llama-3-8B-shaped matrices in bf16 / MLX q8 / MLX q4 (group 64), one whole decoder
 * layer's seven projections, and split-K attention, against the device-to-device copy bandwidth
 * measured in the same run.
 *
 * Method: CUDA events around batches of launches; weights rotate among enough copies to exceed
 * the L2 several times (so HBM, not L2, is measured); the median of 15 batches is reported.
 * Random (non-zero) data. Usage: bench_cuda_kernels [reps_per_batch=50] [sections=all]
 * sections: "all" or any of gemv (per-matrix table with the streaming kernel's knobs, separate and
 * fused Llama shapes), expand (the weight expansion before the cuBLASLt GEMM), layer (one fused layer's 4 GEMVs in a graph), prefill, step (whole decode
 * step in a graph), gemm_small (the few-row GEMM of batched decode steps, T 8..128, beside cuBLASLt and
 * the GEMV), batch (a whole batched decode step at 1..64 rows over a paged KV pool, eager and replayed
 * from a CUDA graph, bench_cuda_batch.c),
 * attention (only the decode attention timings when given alone). */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_kernels.h"
#include "../../tests/cuda/cuda_test_util.h"

#define BATCHES 15
#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) DIE("%s: %s", #x, cudaGetErrorString(e_)); } while (0)
#define LK(x) do { lmx_status s_ = (x); if (s_ != LMX_OK) DIE("%s: %s", #x, lmx_last_error_detail()); } while (0)

static tu_rng rng = {12345};
static size_t g_l2 = 60u << 20;

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* fills device memory with random bytes (never zeros), via a host staging buffer */
static void fill_random(void *d, size_t bytes) {
    size_t chunk = 64u << 20;
    uint8_t *h = malloc(chunk);
    for (size_t off = 0; off < bytes; off += chunk) {
        size_t n = bytes - off < chunk ? bytes - off : chunk;
        for (size_t i = 0; i + 8 <= n; i += 8) { uint64_t r = tu_next(&rng); memcpy(h + i, &r, 8); }
        CK(cudaMemcpy((char *)d + off, h, n, cudaMemcpyHostToDevice));
    }
    free(h);
}

/* a dense bf16 or quantized matrix with random content; scales/biases as bf16 with sane values */
static lmx_cuda_matrix make_matrix(int64_t n, int64_t k, int bits, size_t *bytes) {
    lmx_cuda_matrix m = {.dtype = LMX_DTYPE_BF16, .bits = bits, .group_size = 64, .n = n, .k = k};
    if (!bits) {
        size_t wb = (size_t)(n * k) * 2;
        void *w; LK(lmx_cuda_malloc(&w, wb));
        /* a 32 MB block of random bf16 values, repeated (host generation of 10^9 values is slow) */
        const size_t blk = (size_t)16 << 20, cnt = (size_t)(n * k);
        const size_t hn = cnt < blk ? cnt : blk;
        uint16_t *h = malloc(hn * 2);
        for (size_t i = 0; i < hn; i++) h[i] = tu_f2bf(0.05f * tu_unif(&rng));
        for (size_t off = 0; off < cnt; off += hn)
            CK(cudaMemcpy((uint16_t *)w + off, h, (cnt - off < hn ? cnt - off : hn) * 2, cudaMemcpyHostToDevice));
        free(h);
        m.w = w;
        *bytes = wb;
        return m;
    }
    size_t wb = (size_t)(n * k * bits / 32) * 4, sb = (size_t)(n * (k / 64)) * 2;
    void *w, *s, *b;
    LK(lmx_cuda_malloc(&w, wb)); LK(lmx_cuda_malloc(&s, sb)); LK(lmx_cuda_malloc(&b, sb));
    fill_random(w, wb);
    uint16_t *h = malloc(sb);
    for (size_t i = 0; i < sb / 2; i++) h[i] = tu_f2bf(0.01f * tu_unif(&rng));
    CK(cudaMemcpy(s, h, sb, cudaMemcpyHostToDevice));
    for (size_t i = 0; i < sb / 2; i++) h[i] = tu_f2bf(0.05f * tu_unif(&rng));
    CK(cudaMemcpy(b, h, sb, cudaMemcpyHostToDevice));
    free(h);
    m.w = w; m.scales = s; m.biases = b;
    *bytes = wb + 2 * sb;
    return m;
}
/* a device copy of m (same content, other addresses) */
static lmx_cuda_matrix clone_matrix(const lmx_cuda_matrix *m, size_t *bytes) {
    lmx_cuda_matrix c = *m;
    size_t wb = m->bits ? (size_t)(m->n * m->k * m->bits / 32) * 4 : (size_t)(m->n * m->k) * 2;
    size_t sb = m->bits ? (size_t)(m->n * (m->k / 64)) * 2 : 0;
    void *w; LK(lmx_cuda_malloc(&w, wb));
    CK(cudaMemcpy(w, m->w, wb, cudaMemcpyDeviceToDevice));
    c.w = w;
    if (m->bits) {
        void *s, *b;
        LK(lmx_cuda_malloc(&s, sb)); LK(lmx_cuda_malloc(&b, sb));
        CK(cudaMemcpy(s, m->scales, sb, cudaMemcpyDeviceToDevice));
        CK(cudaMemcpy(b, m->biases, sb, cudaMemcpyDeviceToDevice));
        c.scales = s; c.biases = b;
    }
    *bytes = wb + 2 * sb;
    return c;
}
static void free_matrix(lmx_cuda_matrix *m) {
    lmx_cuda_free((void *)m->w); lmx_cuda_free((void *)m->scales); lmx_cuda_free((void *)m->biases);
}

static double copy_bandwidth(void) {
    size_t bytes = 2u << 30;
    void *a, *b;
    LK(lmx_cuda_malloc(&a, bytes)); LK(lmx_cuda_malloc(&b, bytes));
    fill_random(a, bytes);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    float t[BATCHES];
    CK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    for (int i = 0; i < BATCHES; i++) {
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    qsort(t, BATCHES, sizeof t[0], cmp_f);
    lmx_cuda_free(a); lmx_cuda_free(b);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    return 2.0 * bytes / (t[BATCHES / 2] * 1e-3) / 1e9; /* read + write */
}

typedef struct { const char *name; int64_t n, k; } shape;
static const shape LAYER[7] = {{"q_proj", 4096, 4096}, {"k_proj", 1024, 4096}, {"v_proj", 1024, 4096},
                               {"o_proj", 4096, 4096}, {"gate_proj", 14336, 4096}, {"up_proj", 14336, 4096},
                               {"down_proj", 4096, 14336}};

/* times `reps` GEMVs rotating over `copies` matrices of one shape; returns median µs per GEMV */
static double time_gemv(lmx_cuda_matrix *ms, int copies, const float *x, float *y, int reps, int ks) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    for (int i = 0; i < 10; i++) LK(lmx_cuda_gemv_ksplit(&ms[i % copies], x, y, 1, false, ks, NULL));
    float t[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        CK(cudaEventRecord(e0, 0));
        for (int i = 0; i < reps; i++) LK(lmx_cuda_gemv_ksplit(&ms[i % copies], x, y, 1, false, ks, NULL));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[b], e0, e1));
    }
    CK(cudaGetLastError());
    qsort(t, BATCHES, sizeof t[0], cmp_f);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    return t[BATCHES / 2] * 1e3 / reps;
}

/* the same for the streaming tensor-core GEMV with its knobs */
static double time_gemv_ring(lmx_cuda_matrix *ms, int copies, const float *x, float *y, int reps,
                             const lmx_cuda_gemv_tune *tn) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    for (int i = 0; i < 10; i++) LK(lmx_cuda_gemv_mma_tuned(&ms[i % copies], x, y, false, tn, NULL));
    float t[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        CK(cudaEventRecord(e0, 0));
        for (int i = 0; i < reps; i++) LK(lmx_cuda_gemv_mma_tuned(&ms[i % copies], x, y, false, tn, NULL));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[b], e0, e1));
    }
    CK(cudaGetLastError());
    qsort(t, BATCHES, sizeof t[0], cmp_f);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    return t[BATCHES / 2] * 1e3 / reps;
}

/* T-row matmuls rotating over `copies` matrices: impl 0 the few-row GEMM (workspace ws of ws_n floats),
 * 1 cuBLASLt (lmx_cuda_gemm_ex impl 2, the weight expansion included), 2 the GEMV; median µs per call */
static double time_rows(int impl, lmx_cuda_matrix *ms, int copies, const float *x, float *y, int T, float *ws,
                        size_t ws_n, int reps) {
#define TR_CALL(m)                                                                                          \
    (impl == 0 ? lmx_cuda_gemm_small((m), x, y, T, false, ws, ws_n, NULL)                                   \
     : impl == 1 ? lmx_cuda_gemm_ex((m), x, y, T, false, 2, NULL)                                           \
                 : lmx_cuda_gemv((m), x, y, T, false, NULL))
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) LK(TR_CALL(&ms[i % copies]));
    float t[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        CK(cudaEventRecord(e0, 0));
        for (int i = 0; i < reps; i++) LK(TR_CALL(&ms[i % copies]));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[b], e0, e1));
    }
#undef TR_CALL
    CK(cudaGetLastError());
    qsort(t, BATCHES, sizeof t[0], cmp_f);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    return t[BATCHES / 2] * 1e3 / reps;
}

/* the few-row GEMM (batched decode steps) per Llama-3-8B matrix at T = 8..128: µs, effective GB/s of
 * the weights (+ x, y), TFLOP/s, and cuBLASLt (with its per-call bf16 expansion) and the GEMV beside */
static void bench_gemm_small(const float *xt, float *yt, int reps) {
    static const shape SH[6] = {{"q/o_proj", 4096, 4096}, {"qkv", 6144, 4096}, {"gate/up", 14336, 4096},
                                {"gateup", 28672, 4096}, {"down", 4096, 14336}, {"lm_head", 128256, 4096}};
    static const int TS[5] = {8, 16, 32, 64, 128};
    printf("%-10s %-6s %5s %10s %9s %7s %7s | %9s %9s (us)\n", "gemm_small", "type", "T", "bytes", "us", "GB/s",
           "TFLOP/s", "cuBLASLt", "gemv");
    for (int bi = 0; bi < 2; bi++) {
        const int bits = bi == 0 ? 4 : 8;
        for (int si = 0; si < 6; si++) {
            size_t bytes = 0;
            lmx_cuda_matrix probe = make_matrix(SH[si].n, SH[si].k, bits, &bytes);
            int copies = (int)((4 * g_l2) / bytes) + 2;
            if (copies > 32) copies = 32;
            lmx_cuda_matrix *ms = malloc(sizeof *ms * copies);
            ms[0] = probe;
            for (int c = 1; c < copies; c++) ms[c] = clone_matrix(&probe, &bytes);
            const size_t ws_n = lmx_cuda_gemm_small_workspace(&probe, 128);
            float *ws = NULL;
            if (ws_n) LK(lmx_cuda_malloc((void **)&ws, ws_n * sizeof(float)));
            for (int ti = 0; ti < 5; ti++) {
                const int T = TS[ti];
                const double moved = (double)bytes + (double)T * (SH[si].k + SH[si].n) * 4.0;
                const double us = time_rows(0, ms, copies, xt, yt, T, ws, ws_n, reps);
                const double lt = lmx_cuda_gemm_lt_available() ? time_rows(1, ms, copies, xt, yt, T, NULL, 0, reps) : 0;
                const double gv = T <= 32 ? time_rows(2, ms, copies, xt, yt, T, NULL, 0, reps) : 0;
                const double tflops = 2.0 * T * SH[si].n * SH[si].k / (us * 1e-6) / 1e12;
                printf("%-10s %-6s %5d %10.0f %9.2f %7.0f %7.1f | %9.2f %9.2f\n", SH[si].name, bi ? "q8g64" : "q4g64",
                       T, moved, us, moved / (us * 1e-6) / 1e9, tflops, lt, gv);
                fflush(stdout);
            }
            lmx_cuda_free(ws);
            for (int c = 0; c < copies; c++) free_matrix(&ms[c]);
            free(ms);
        }
    }
    printf("\n");
}

void lmx_bench_batch_step(void); /* bench_cuda_batch.c: section "batch" */

/* the precisions of the tables: bf16, MLX affine 8 and 4 bits in groups of 64 */
static const int BITS[3] = {0, 8, 4};
static const char *const BITS_NAME[3] = {"bf16", "q8g64", "q4g64"};

static int want(const char *sections, const char *name) {
    return !strcmp(sections, "all") || strstr(sections, name) != NULL;
}

static void section_gemv(const char *sec, int reps, const float *x, float *y) {
    /* Llama-3-8B GEMV shapes, separate and fused (q|k|v = 6144 rows, gate|up = 28672 rows) */
    static const shape GSH[7] = {{"q/o_proj", 4096, 4096}, {"k/v_proj", 1024, 4096}, {"qkv", 6144, 4096},
                                 {"gate/up", 14336, 4096}, {"gateup", 28672, 4096}, {"down", 4096, 14336},
                                 {"lm_head", 128256, 4096}};
    /* ring-kernel knobs {depth, warps, blocks/SM, mode}: mode 1 direct, 2 staged (cp.async, whole
     * 128-byte lines) */
    static const lmx_cuda_gemv_tune KN[5] = {{4, 16, 1, 1}, {3, 16, 1, 2}, {4, 16, 1, 2}, {4, 8, 2, 2}, {3, 8, 2, 2}};
    if (want(sec, "gemv")) {
        printf("%-10s %-6s %8s %8s %10s %9s %7s %8s | ring m(ode)/d(epth)/w(arps)/b(locks per SM) GB/s\n", "matrix", "type", "n", "k", "bytes",
               "us", "GB/s", "old GB/s");
        for (int bi = 0; bi < 3; bi++) {
            for (int si = 0; si < 7; si++) {
                shape sh = GSH[si];
                size_t bytes = 0;
                lmx_cuda_matrix probe = make_matrix(sh.n, sh.k, BITS[bi], &bytes);
                int copies = (int)((4 * g_l2) / bytes) + 2;
                if (copies > 64) copies = 64;
                lmx_cuda_matrix *ms = malloc(sizeof *ms * copies);
                ms[0] = probe;
                for (int c = 1; c < copies; c++) ms[c] = clone_matrix(&probe, &bytes);
                const double moved = (double)bytes + sh.k * 4.0 + sh.n * 4.0;
                const double us = time_gemv(ms, copies, x, y, reps, 0);
                const double us_old = time_gemv(ms, copies, x, y, reps, -2);
                printf("%-10s %-6s %8lld %8lld %10.0f %9.2f %7.0f %8.0f |", sh.name, BITS_NAME[bi], (long long)sh.n,
                       (long long)sh.k, moved, us, moved / (us * 1e-6) / 1e9, moved / (us_old * 1e-6) / 1e9);
                for (int kn = 0; kn < 5; kn++) {
                    if (lmx_cuda_gemv_mma_tuned(&ms[0], x, y, false, &KN[kn], NULL) != LMX_OK) {
                        printf(" m%d/d%d/w%d/b%d:-", KN[kn].mode, KN[kn].depth, KN[kn].warps, KN[kn].blocks_per_sm);
                        continue;
                    }
                    const double t2 = time_gemv_ring(ms, copies, x, y, reps, &KN[kn]);
                    printf(" m%d/d%d/w%d/b%d:%.0f", KN[kn].mode, KN[kn].depth, KN[kn].warps, KN[kn].blocks_per_sm,
                           moved / (t2 * 1e-6) / 1e9);
                }
                printf("\n");
                fflush(stdout);
                for (int c = 0; c < copies; c++) free_matrix(&ms[c]);
                free(ms);
            }
            printf("\n");
        }
    }
}

static void section_layer(const char *sec, const float *x, float *y) {
    /* whole layers through a CUDA graph (no launch gaps): 4 distinct copies of one layer's projections
     * as the fused upload lays them out (q|k|v, o, gate|up, down: 4 GEMVs), default policy and the
     * old (scalar) kernels */
    static const shape L4[4] = {{"qkv", 6144, 4096}, {"o_proj", 4096, 4096}, {"gateup", 28672, 4096},
                                {"down", 4096, 14336}};
    if (want(sec, "layer")) printf("%-34s %9s %7s %9s\n", "graph: 4 layers x 4 fused GEMVs", "us/layer", "GB/s", "32L tok/s");
    for (int bg = 0; bg < 6 && want(sec, "layer"); bg++) {
        const int bi = bg % 3, gm = bg < 3 ? 0 : -2;
        lmx_cuda_matrix lm[4][4];
        double layer_bytes = 0;
        for (int si = 0; si < 4; si++) {
            size_t bytes = 0;
            lm[0][si] = make_matrix(L4[si].n, L4[si].k, BITS[bi], &bytes);
            for (int c = 1; c < 4; c++) lm[c][si] = clone_matrix(&lm[0][si], &bytes);
            layer_bytes += (double)bytes + L4[si].k * 4.0 + L4[si].n * 4.0;
        }
        cudaStream_t st;
        CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int c = 0; c < 4; c++)
            for (int si = 0; si < 4; si++) LK(lmx_cuda_gemv_ksplit(&lm[c][si], x, y, 1, false, gm, (lmx_cuda_stream)st));
        CK(cudaStreamEndCapture(st, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(exec, st));
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        float t[BATCHES];
        for (int b = 0; b < BATCHES; b++) {
            CK(cudaEventRecord(e0, st));
            for (int i = 0; i < 10; i++) CK(cudaGraphLaunch(exec, st));
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&t[b], e0, e1));
        }
        qsort(t, BATCHES, sizeof t[0], cmp_f);
        double us = t[BATCHES / 2] * 1e3 / 40.0;
        char lab[48];
        snprintf(lab, sizeof lab, "%s%s", BITS_NAME[bi], gm == -2 ? " old kernels" : "");
        printf("%-34s %9.2f %7.0f %9.0f\n", lab, us, layer_bytes / (us * 1e-6) / 1e9, 1e6 / (32 * us));
        cudaGraphExecDestroy(exec); cudaGraphDestroy(graph); cudaStreamDestroy(st);
        cudaEventDestroy(e0); cudaEventDestroy(e1);
        for (int c = 0; c < 4; c++)
            for (int si = 0; si < 4; si++) free_matrix(&lm[c][si]);
    }
    if (want(sec, "layer")) printf("\n");
}

static void section_expand(const char *sec, int reps) {
    /* weight expansion before the cuBLASLt GEMM (prefill of quantized models): one layer's 7 matrices */
    if (want(sec, "expand")) {
        void *ob;
        LK(lmx_cuda_malloc(&ob, (size_t)14336 * 4096 * 2));
        printf("%-34s %9s %9s %9s\n", "expand to bf16, 1 layer (7 mats)", "us", "GB/s", "32L ms");
        for (int bi = 1; bi <= 2; bi++) {
                double us_sum = 0, bytes_sum = 0;
                for (int si = 0; si < 7; si++) {
                    size_t bytes;
                    lmx_cuda_matrix m = make_matrix(LAYER[si].n, LAYER[si].k, BITS[bi], &bytes);
                    cudaEvent_t e0, e1;
                    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
                    LK(lmx_cuda_expand_bf16(&m, ob, NULL));
                    float t[7];
                    for (int b = 0; b < 7; b++) {
                        CK(cudaEventRecord(e0, 0));
                        for (int i = 0; i < reps; i++) LK(lmx_cuda_expand_bf16(&m, ob, NULL));
                        CK(cudaEventRecord(e1, 0));
                        CK(cudaEventSynchronize(e1));
                        CK(cudaEventElapsedTime(&t[b], e0, e1));
                    }
                    qsort(t, 7, sizeof t[0], cmp_f);
                    us_sum += t[3] * 1e3 / reps;
                    bytes_sum += (double)bytes + (double)LAYER[si].n * LAYER[si].k * 2;
                    cudaEventDestroy(e0); cudaEventDestroy(e1);
                    free_matrix(&m);
                }
                printf("%-34s %9.1f %9.0f %9.2f\n", BITS_NAME[bi], us_sum, bytes_sum / (us_sum * 1e-6) / 1e9,
                       32 * us_sum * 1e-3);
            }
        printf("\n");
        lmx_cuda_free(ob);
    }
}

/* the few-row tensor-core GEMM (bench_gemm_small) over 128 random rows */
static void section_gemm_small(int reps) {
    float *xt, *yt;
    LK(lmx_cuda_malloc((void **)&xt, sizeof(float) * 128 * 14336));
    LK(lmx_cuda_malloc((void **)&yt, sizeof(float) * 128 * 128256));
    float *h = malloc(sizeof(float) * 128 * 14336);
    for (int i = 0; i < 128 * 14336; i++) h[i] = tu_unif(&rng);
    CK(cudaMemcpy(xt, h, sizeof(float) * 128 * 14336, cudaMemcpyHostToDevice));
    free(h);
    bench_gemm_small(xt, yt, reps < 10 ? reps : 10);
    lmx_cuda_free(xt); lmx_cuda_free(yt);
}

static void section_prefill(const char *sec) {
    /* prefill GEMM: 512 tokens through the 7 projections of one layer */
    if (want(sec, "prefill")) {
        const int T = 512;
        float *xt, *yt;
        LK(lmx_cuda_malloc((void **)&xt, sizeof(float) * T * 14336));
        LK(lmx_cuda_malloc((void **)&yt, sizeof(float) * T * 14336));
        float *h = malloc(sizeof(float) * T * 14336);
        for (int i = 0; i < T * 14336; i++) h[i] = tu_unif(&rng);
        CK(cudaMemcpy(xt, h, sizeof(float) * T * 14336, cudaMemcpyHostToDevice));
        free(h);
        printf("%-34s %9s %9s %12s\n", "prefill GEMM, T=512, 1 layer", "us", "TFLOP/s", "32L tok/s");
        printf("cuBLASLt: %s\n", lmx_cuda_gemm_lt_available() ? "loaded" : "not available");
        for (int bj = 0; bj < 6; bj++) {
            const int bi = bj % 3, impl = bj < 3 ? 1 : 2; /* built-in mma.sync kernel, then cuBLASLt */
            if (impl == 2 && !lmx_cuda_gemm_lt_available()) break;
            double us_sum = 0, flops = 0;
            for (int si = 0; si < 7; si++) {
                size_t bytes;
                lmx_cuda_matrix m = make_matrix(LAYER[si].n, LAYER[si].k, BITS[bi], &bytes);
                cudaEvent_t e0, e1;
                CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
                LK(lmx_cuda_gemm_ex(&m, xt, yt, T, false, impl, NULL));
                float t[5];
                for (int b = 0; b < 5; b++) {
                    CK(cudaEventRecord(e0, 0));
                    for (int i = 0; i < 3; i++) LK(lmx_cuda_gemm_ex(&m, xt, yt, T, false, impl, NULL));
                    CK(cudaEventRecord(e1, 0));
                    CK(cudaEventSynchronize(e1));
                    CK(cudaEventElapsedTime(&t[b], e0, e1));
                }
                qsort(t, 5, sizeof t[0], cmp_f);
                us_sum += t[2] * 1e3 / 3;
                flops += 2.0 * T * LAYER[si].n * LAYER[si].k;
                cudaEventDestroy(e0); cudaEventDestroy(e1);
                free_matrix(&m);
            }
            char lab[48];
            snprintf(lab, sizeof lab, "%s %s", BITS_NAME[bi], impl == 1 ? "mma.sync" : "cuBLASLt");
            printf("%-34s %9.1f %9.1f %12.0f\n", lab, us_sum, flops / (us_sum * 1e-6) / 1e12,
                   T / (32 * us_sum * 1e-6));
        }
        printf("\n");
        lmx_cuda_free(xt); lmx_cuda_free(yt);
    }
}

static void section_step(const char *sec) {
    /* a whole decode step of a Llama-3-8B-shaped model with every kernel (norms, 7 GEMVs with fused
     * residual adds, RoPE, KV store, attention at context 512, SwiGLU, lm_head, argmax), 32 layers
     * cycling over 4 distinct weight sets, captured once as a CUDA graph and replayed */
    if (want(sec, "step")) printf("%-34s %9s %9s\n", "decode step (graph), ctx 512", "ms/token", "tok/s");
    /* fused: q/k/v as one [6144 x 4096] matrix and gate/up as one [28672 x 4096] (2 launches, not 5) */
    /* gemv mode: 0 = automatic policy, -2 = scalar kernel only, -1 = tensor-core kernel wherever it
     * applies (quantized rows) */
    /* default policy (separate and fused), then the old kernels (fused) */
    for (int bf = 0; bf < 9 && want(sec, "step"); bf++) {
        const int bi = bf % 3, fused = bf >= 3, gm = bf < 6 ? 0 : -2;
        const int H = 4096, NH = 32, NKV = 8, HD = 128, FF = 14336, V = 128256, CTX = 512, NL = 32;
        lmx_cuda_matrix lw[4][7], head;
        size_t bytes;
        for (int c = 0; c < 4; c++)
            for (int si = 0; si < 7; si++) {
                int64_t rows = LAYER[si].n;
                if (fused && si == 0) rows = 6144;       /* q|k|v */
                if (fused && si == 4) rows = 2 * 14336;  /* gate|up */
                if (fused && (si == 1 || si == 2 || si == 5)) rows = 16; /* unused placeholders */
                lw[c][si] = c == 0 ? make_matrix(rows, LAYER[si].k, BITS[bi], &bytes)
                                   : clone_matrix(&lw[0][si], &bytes);
            }
        head = make_matrix(V, H, BITS[bi], &bytes);
        float *hx, *hn, *q, *k, *v, *att, *g, *u, *logits, *ws, *inv, *normw;
        void *kc[NL], *vc[NL];
        int32_t *pos, *id, hp = CTX - 1;
        lmx_cuda_attn a = {.n_heads = NH, .n_kv_heads = NKV, .head_dim = HD, .capacity = CTX,
                           .kv_dtype = LMX_DTYPE_BF16, .scale = 0.088388f};
        LK(lmx_cuda_malloc((void **)&hx, H * 4)); LK(lmx_cuda_malloc((void **)&hn, H * 4));
        LK(lmx_cuda_malloc((void **)&q, H * 4)); LK(lmx_cuda_malloc((void **)&k, 1024 * 4));
        LK(lmx_cuda_malloc((void **)&v, 1024 * 4)); LK(lmx_cuda_malloc((void **)&att, H * 4));
        LK(lmx_cuda_malloc((void **)&g, 2 * FF * 4)); LK(lmx_cuda_malloc((void **)&u, FF * 4));
        float *qkv = NULL;
        LK(lmx_cuda_malloc((void **)&qkv, 6144 * 4));
        LK(lmx_cuda_malloc((void **)&logits, (size_t)V * 4));
        LK(lmx_cuda_malloc((void **)&ws, sizeof(float) * lmx_cuda_attention_workspace_floats(&a, 1)));
        LK(lmx_cuda_malloc((void **)&inv, 64 * 4)); LK(lmx_cuda_malloc((void **)&normw, H * 4));
        LK(lmx_cuda_malloc((void **)&pos, 4)); LK(lmx_cuda_malloc((void **)&id, 4));
        CK(cudaMemcpy(pos, &hp, 4, cudaMemcpyHostToDevice));
        {
            float hb[4096];
            for (int i = 0; i < H; i++) hb[i] = 1.0f + 0.1f * tu_unif(&rng);
            CK(cudaMemcpy(normw, hb, H * 4, cudaMemcpyHostToDevice));
            for (int i = 0; i < H; i++) hb[i] = tu_unif(&rng);
            CK(cudaMemcpy(hx, hb, H * 4, cudaMemcpyHostToDevice));
            for (int i = 0; i < 64; i++) hb[i] = powf(500000.f, -(float)i / 64.f);
            CK(cudaMemcpy(inv, hb, 64 * 4, cudaMemcpyHostToDevice));
        }
        size_t cb = (size_t)NKV * CTX * HD * 2;
        for (int l = 0; l < NL; l++) {
            LK(lmx_cuda_malloc(&kc[l], cb)); LK(lmx_cuda_malloc(&vc[l], cb));
        }
        for (int l = 0; l < NL; l++) {
            CK(cudaMemset(kc[l], 0x3c, cb)); CK(cudaMemset(vc[l], 0x3c, cb)); /* 0x3c3c ~ 0.0115 in bf16 */
        }
        cudaStream_t st;
        CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
        lmx_cuda_stream S = (lmx_cuda_stream)st;
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int l = 0; l < NL; l++) {
            lmx_cuda_matrix *w = lw[l % 4];
            LK(lmx_cuda_rmsnorm(hx, normw, LMX_DTYPE_F32, 1e-5f, false, hn, 1, H, S));
            float *qq = q, *kk = k, *vv = v;
            if (fused) {
                LK(lmx_cuda_gemv_ksplit(&w[0], hn, qkv, 1, false, gm, S));
                qq = qkv; kk = qkv + 4096; vv = qkv + 5120;
            } else {
                LK(lmx_cuda_gemv_ksplit(&w[0], hn, q, 1, false, gm, S));
                LK(lmx_cuda_gemv_ksplit(&w[1], hn, k, 1, false, gm, S));
                LK(lmx_cuda_gemv_ksplit(&w[2], hn, v, 1, false, gm, S));
            }
            LK(lmx_cuda_rope(qq, pos, inv, 1.0f, 1, NH, HD, HD, S));
            LK(lmx_cuda_rope(kk, pos, inv, 1.0f, 1, NKV, HD, HD, S));
            LK(lmx_cuda_kv_store(&a, kk, vv, kc[l], vc[l], pos, 1, S));
            LK(lmx_cuda_attention(&a, qq, kc[l], vc[l], pos, 1, CTX, ws, att, S));
            LK(lmx_cuda_gemv_ksplit(&w[3], att, hx, 1, true, gm, S)); /* residual fused */
            LK(lmx_cuda_rmsnorm(hx, normw, LMX_DTYPE_F32, 1e-5f, false, hn, 1, H, S));
            if (fused) {
                LK(lmx_cuda_gemv_ksplit(&w[4], hn, g, 1, false, gm, S));
                LK(lmx_cuda_swiglu(g, g + FF, g, FF, S));
            } else {
                LK(lmx_cuda_gemv_ksplit(&w[4], hn, g, 1, false, gm, S));
                LK(lmx_cuda_gemv_ksplit(&w[5], hn, u, 1, false, gm, S));
                LK(lmx_cuda_swiglu(g, u, g, FF, S));
            }
            LK(lmx_cuda_gemv_ksplit(&w[6], g, hx, 1, true, gm, S)); /* residual fused */
        }
        LK(lmx_cuda_rmsnorm(hx, normw, LMX_DTYPE_F32, 1e-5f, false, hn, 1, H, S));
        LK(lmx_cuda_gemv_ksplit(&head, hn, logits, 1, false, gm, S));
        LK(lmx_cuda_argmax(logits, 1, V, id, S));
        CK(cudaStreamEndCapture(st, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(exec, st));
        CK(cudaStreamSynchronize(st));
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        float t[BATCHES];
        for (int b = 0; b < BATCHES; b++) {
            CK(cudaEventRecord(e0, st));
            for (int i = 0; i < 5; i++) CK(cudaGraphLaunch(exec, st));
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&t[b], e0, e1));
        }
        qsort(t, BATCHES, sizeof t[0], cmp_f);
        double ms = t[BATCHES / 2] / 5.0;
        char lab[64];
        snprintf(lab, sizeof lab, "%s%s%s", BITS_NAME[bi], gm == -2 ? " old kernels" : "",
                 fused ? " fused qkv+gate/up" : "");
        printf("%-34s %9.3f %9.0f\n", lab, ms, 1e3 / ms);
        cudaGraphExecDestroy(exec); cudaGraphDestroy(graph); cudaStreamDestroy(st);
        cudaEventDestroy(e0); cudaEventDestroy(e1);
        for (int c = 0; c < 4; c++)
            for (int si = 0; si < 7; si++) free_matrix(&lw[c][si]);
        free_matrix(&head);
        for (int l = 0; l < NL; l++) { lmx_cuda_free(kc[l]); lmx_cuda_free(vc[l]); }
        lmx_cuda_free(hx); lmx_cuda_free(hn); lmx_cuda_free(q); lmx_cuda_free(k); lmx_cuda_free(v);
        lmx_cuda_free(qkv);
        lmx_cuda_free(att); lmx_cuda_free(g); lmx_cuda_free(u); lmx_cuda_free(logits); lmx_cuda_free(ws);
        lmx_cuda_free(inv); lmx_cuda_free(normw); lmx_cuda_free(pos); lmx_cuda_free(id);
    }
}

static void section_attention(const char *sec, int reps, const float *x) {
    /* attention: Llama-3-8B decode (32 heads, 8 kv heads, head_dim 128, bf16 cache) */
    if (want(sec, "attention"))
        printf("%-28s %9s %7s %11s %7s %11s %11s\n", "attention (decode, 1 layer)", "split us", "GB/s", "grouped us",
               "GB/s", "8w/132/512", "8w/264/256");
    const int64_t lens[3] = {512, 4096, 32768};
    for (int li = 0; li < 3 && want(sec, "attention"); li++) {
        int64_t L = lens[li];
        lmx_cuda_attn a = {.n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .capacity = L,
                           .kv_dtype = LMX_DTYPE_BF16, .scale = 0.088388f};
        int layers = (int)((4 * g_l2) / (size_t)(2 * 8 * L * 128 * 2)) + 2;
        if (layers > 32) layers = 32;
        void **kc = malloc(sizeof(void *) * layers), **vc = malloc(sizeof(void *) * layers);
        size_t cb = (size_t)8 * L * 128 * 2;
        for (int l = 0; l < layers; l++) {
            LK(lmx_cuda_malloc(&kc[l], cb)); LK(lmx_cuda_malloc(&vc[l], cb));
            uint16_t *h = malloc(cb);
            for (size_t i = 0; i < cb / 2; i++) h[i] = tu_f2bf(tu_unif(&rng));
            CK(cudaMemcpy(kc[l], h, cb, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(vc[l], h, cb, cudaMemcpyHostToDevice));
            free(h);
        }
        float *ws, *out;
        int32_t *pos, hp = (int32_t)(L - 1), *cnt;
        LK(lmx_cuda_malloc((void **)&ws, sizeof(float) * lmx_cuda_attention_workspace_floats(&a, 1)));
        LK(lmx_cuda_malloc((void **)&cnt, sizeof(int32_t) * lmx_cuda_attention_decode_counters(&a, 1)));
        LK(lmx_cuda_memset(cnt, 0, sizeof(int32_t) * lmx_cuda_attention_decode_counters(&a, 1), NULL));
        LK(lmx_cuda_malloc((void **)&out, 32 * 128 * 4));
        LK(lmx_cuda_malloc((void **)&pos, 4));
        CK(cudaMemcpy(pos, &hp, 4, cudaMemcpyHostToDevice));
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        double us2[4];
        /* 0: split-K + merge launch, 1: grouped (fused merge), 2, 3: grouped with 8 warps per block */
        for (int which = 0; which < 4; which++) {
#define ATT_CALL(i_)                                                                                             \
    (which == 0   ? lmx_cuda_attention(&a, x, kc[(i_) % layers], vc[(i_) % layers], pos, 1, L, ws, out, NULL)     \
     : which == 1 ? lmx_cuda_attention_decode(&a, x, kc[(i_) % layers], vc[(i_) % layers], pos, 1, L, ws, cnt, out, \
                                              NULL)                                                              \
                  : lmx_cuda_attention_decode_ex(&a, x, kc[(i_) % layers], vc[(i_) % layers], pos, 1, L, ws, cnt,  \
                                                 out, 8, which == 2 ? 132 : 264, which == 2 ? 512 : 256, NULL))
            for (int i = 0; i < 5; i++) LK(ATT_CALL(i));
            float t[BATCHES];
            for (int b = 0; b < BATCHES; b++) {
                CK(cudaEventRecord(e0, 0));
                for (int i = 0; i < reps; i++) LK(ATT_CALL(i));
                CK(cudaEventRecord(e1, 0));
                CK(cudaEventSynchronize(e1));
                CK(cudaEventElapsedTime(&t[b], e0, e1));
            }
#undef ATT_CALL
            qsort(t, BATCHES, sizeof t[0], cmp_f);
            us2[which] = t[BATCHES / 2] * 1e3 / reps;
        }
        char label[64];
        snprintf(label, sizeof label, "ctx %lld", (long long)L);
        printf("%-28s %9.2f %7.0f %11.2f %7.0f %11.2f %11.2f\n", label, us2[0], 2.0 * cb / (us2[0] * 1e-6) / 1e9,
               us2[1], 2.0 * cb / (us2[1] * 1e-6) / 1e9, us2[2], us2[3]);
        for (int l = 0; l < layers; l++) { lmx_cuda_free(kc[l]); lmx_cuda_free(vc[l]); }
        free(kc); free(vc);
        lmx_cuda_free(ws); lmx_cuda_free(out); lmx_cuda_free(pos); lmx_cuda_free(cnt);
        cudaEventDestroy(e0); cudaEventDestroy(e1);
    }
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 50;
    if (reps < 1) reps = 50;
    /* sections: "all" or a list of gemv, layer, expand, prefill, step, gemm_small, batch, attn */
    const char *sec = argc > 2 ? argv[2] : "all";
    int nd = 0;
    if (!lmx_cuda_available(&nd)) { fprintf(stderr, "no CUDA device\n"); return 77; }
    lmx_cuda_device_info info;
    LK(lmx_cuda_get_device_info(0, &info));
    g_l2 = info.l2_bytes;
    printf("device: %s (cc %d.%d, %d SMs, L2 %.0f MB)\n", info.name, info.cc_major, info.cc_minor,
           info.sm_count, info.l2_bytes / 1e6);
    double copy_gbs = copy_bandwidth();
    printf("device-to-device copy: %.0f GB/s (read+write, 2 GiB, median of %d)\n\n", copy_gbs, BATCHES);

    float *x, *y;
    LK(lmx_cuda_malloc((void **)&x, 14336 * 4)); LK(lmx_cuda_malloc((void **)&y, 128256 * 4));
    fill_random(x, 14336 * 4); /* random floats: a few NaN/inf bit patterns don't matter for timing */
    {   /* but keep x finite and sane anyway */
        float *h = malloc(14336 * 4);
        for (int i = 0; i < 14336; i++) h[i] = tu_unif(&rng);
        CK(cudaMemcpy(x, h, 14336 * 4, cudaMemcpyHostToDevice));
        free(h);
    }
    if (strcmp(sec, "attention") != 0) { /* "attention" alone skips the rest */
        section_gemv(sec, reps, x, y);
        section_layer(sec, x, y);
        section_expand(sec, reps);
        if (want(sec, "batch")) lmx_bench_batch_step();
        if (want(sec, "gemm_small")) section_gemm_small(reps);
        section_prefill(sec);
        section_step(sec);
        printf("\n");
    }
    section_attention(sec, reps, x);
    lmx_cuda_free(x); lmx_cuda_free(y);
    return 0;
}
