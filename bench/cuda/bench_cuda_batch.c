/* bench_cuda_batch.c — section "batch" of bench_cuda_kernels: the batched decode step of a
 * Llama-3-8B-shape model (MLX q4 or q8, group 64) at R rows, one per sequence, each at its own position
 * in a paged fp16 KV pool (block 64): per layer rmsnorm, q|k|v few-row GEMM, paged rope_qk_store, paged
 * decode attention, o_proj GEMM with the residual, rmsnorm, gate|up GEMM, act_mul_split, down GEMM with
 * the residual (below 16 rows the GEMV instead of the few-row GEMM, as the backend chooses); then the
 * head matmul and the greedy choice of every row (lmx_cuda_greedy_rows). 32 layers
 * over 4 distinct weight and KV sets (so the weights stream from HBM), timed twice: eager launches on a
 * stream, and the same launches captured once into a CUDA graph and replayed (what the CUDA backend
 * does with a batched decode step since its steps are captured: the attention grid sized for a length
 * class, here 256). Prints ms per step and the aggregate generated tok/s (R / step time): the
 * kernel-side bound of issue 10's target (64 streams ≥ 15,000 tok/s ⇔ a 64-row step ≤ 4.27 ms).
 * Weights are constant bytes (the kernels' timing does not depend on the values). */
#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_kernels.h"

#define BDIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)
#define BK(x) do { lmx_status s_ = (x); if (s_ != LMX_OK) BDIE("%s: %s", #x, lmx_last_error_detail()); } while (0)
#define BC(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) BDIE("%s: %s", #x, cudaGetErrorString(e_)); } while (0)

static void *dalloc(size_t bytes, int byte) {
    void *p = NULL;
    BK(lmx_cuda_malloc(&p, bytes));
    BC(cudaMemset(p, byte, bytes));
    return p;
}

/* an MLX affine matrix [n, k] of `bits`, group 64, bf16 scales (0x3c3c ~ 0.0115) and zero biases */
static lmx_cuda_matrix bmat(int64_t n, int64_t k, int bits) {
    const size_t sb = (size_t)(n * (k / 64)) * 2;
    lmx_cuda_matrix m = {.w = dalloc((size_t)(n * k * bits / 8), 0x5a), .scales = dalloc(sb, 0x3c),
                         .biases = dalloc(sb, 0), .dtype = LMX_DTYPE_BF16, .bits = bits, .group_size = 64, .n = n,
                         .k = k};
    return m;
}
static void bmat_free(lmx_cuda_matrix *m) {
    lmx_cuda_free((void *)m->w); lmx_cuda_free((void *)m->scales); lmx_cuda_free((void *)m->biases);
}

static int cmp_ms(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

enum { H = 4096, NH = 32, NKV = 8, HD = 128, FF = 14336, V = 128256, NL = 32, SETS = 4, BS = 64 };

static double step_ms(int bits, int R, int ctx, bool graph) {
    lmx_cuda_matrix w[SETS][4], head = bmat(V, H, bits);
    static const int64_t SHN[4] = {6144, 4096, 2 * FF, 4096}, SHK[4] = {H, H, H, FF};
    size_t gws = lmx_cuda_gemm_small_workspace(&head, R);
    for (int s = 0; s < SETS; s++)
        for (int i = 0; i < 4; i++) {
            w[s][i] = bmat(SHN[i], SHK[i], bits);
            const size_t n = lmx_cuda_gemm_small_workspace(&w[s][i], R);
            if (n > gws) gws = n;
        }
    const int stride = ctx / BS + 1, cap = R * stride * BS;
    int32_t *hs = malloc(sizeof(int32_t) * (size_t)R * (1 + stride)), *hp = malloc(sizeof(int32_t) * R);
    for (int t = 0; t < R; t++) {
        hs[t] = t;
        hp[t] = ctx - 1 - t % 16; /* rows at different positions */
        for (int b = 0; b < stride; b++) hs[R + t * stride + b] = t * stride + b;
    }
    int32_t *dmap = dalloc(sizeof(int32_t) * (size_t)R * (1 + stride), 0), *dpos = dalloc(sizeof(int32_t) * R, 0);
    BC(cudaMemcpy(dmap, hs, sizeof(int32_t) * (size_t)R * (1 + stride), cudaMemcpyHostToDevice));
    BC(cudaMemcpy(dpos, hp, sizeof(int32_t) * R, cudaMemcpyHostToDevice));
    const lmx_cuda_kv_map map = {.tables = dmap + R, .seq = dmap, .stride = stride, .block_shift = 6};
    lmx_cuda_attn a = {.n_heads = NH, .n_kv_heads = NKV, .head_dim = HD, .capacity = cap,
                       .kv_dtype = LMX_DTYPE_F16, .scale = 0.088388f, .map = &map};
    void *kc[SETS], *vc[SETS];
    for (int s = 0; s < SETS; s++) {
        kc[s] = dalloc((size_t)NKV * cap * HD * 2, 0x1c);
        vc[s] = dalloc((size_t)NKV * cap * HD * 2, 0x1c);
    }
    float *hx = dalloc(sizeof(float) * R * H, 0), *hn = dalloc(sizeof(float) * R * H, 0);
    float *qkv = dalloc(sizeof(float) * R * 6144, 0), *att = dalloc(sizeof(float) * R * H, 0);
    float *gu = dalloc(sizeof(float) * R * 2 * FF, 0), *act = dalloc(sizeof(float) * R * FF, 0);
    float *logits = dalloc(sizeof(float) * (size_t)R * V, 0), *normw = dalloc(sizeof(float) * H, 0);
    float *inv = dalloc(sizeof(float) * 64, 0), *ws = dalloc(sizeof(float) * (gws ? gws : 1), 0);
    float *aws = dalloc(sizeof(float) * lmx_cuda_attention_workspace_floats(&a, R), 0);
    int32_t *cnt = dalloc(sizeof(int32_t) * lmx_cuda_attention_decode_counters(&a, R), 0);
    int32_t *rows = dalloc(sizeof(int32_t) * R, 0), *ids = dalloc(sizeof(int32_t) * R, 0);
    BC(cudaMemcpy(rows, hs, sizeof(int32_t) * R, cudaMemcpyHostToDevice)); /* 0..R-1 */
    const lmx_cuda_qk_rope rp = {.rot_dims = HD, .inv_freq = inv, .mscale = 1.0f, .q_stride = 6144,
                                 .k_stride = 6144, .v_stride = 6144};
    cudaStream_t st;
    BC(cudaDeviceSynchronize()); /* the set-up copies and fills are done */
    BC(cudaStreamCreateWithFlags(&st, cudaStreamDefault));
    /* one step's launches on `st` (attention's grid for the length class of ctx: a power of two) */
    int64_t span = 64;
    while (span < ctx) span <<= 1;
    /* the matmul the backend takes for R rows: the GEMV below 16 rows, the few-row GEMM from 16 */
#define MM(m_, x_, y_, acc_)                                                                                   \
    do {                                                                                                       \
        if (R < 16) BK(lmx_cuda_gemv((m_), (x_), (y_), R, (acc_), st));                                        \
        else BK(lmx_cuda_gemm_small((m_), (x_), (y_), R, (acc_), ws, gws, st));                                \
    } while (0)
#define STEP_LAUNCHES()                                                                                        \
    do {                                                                                                       \
        for (int l = 0; l < NL; l++) {                                                                         \
            const lmx_cuda_matrix *lw = w[l % SETS];                                                           \
            BK(lmx_cuda_rmsnorm(hx, normw, LMX_DTYPE_F32, 1e-5f, false, hn, R, H, st));                        \
            MM(&lw[0], hn, qkv, false);                                   \
            BK(lmx_cuda_rope_qk_store(&a, &rp, qkv, qkv + 4096, qkv + 5120, kc[l % SETS], vc[l % SETS], dpos, R, \
                                      st));                                                                    \
            /* q read packed from the q|k|v rows: the timing of a packed q */                                 \
            BK(lmx_cuda_attention_decode(&a, qkv, kc[l % SETS], vc[l % SETS], dpos, R, span, aws, cnt, att, st)); \
            MM(&lw[1], att, hx, true);                                    \
            BK(lmx_cuda_rmsnorm(hx, normw, LMX_DTYPE_F32, 1e-5f, false, hn, R, H, st));                        \
            MM(&lw[2], hn, gu, false);                                    \
            BK(lmx_cuda_act_mul_split(gu, act, R, FF, 0, st));                                                 \
            MM(&lw[3], act, hx, true);                                    \
        }                                                                                                      \
        BK(lmx_cuda_rmsnorm(hx, normw, LMX_DTYPE_F32, 1e-5f, false, hn, R, H, st));                            \
        MM(&head, hn, logits, false);                                     \
        BK(lmx_cuda_greedy_rows(logits, V, rows, R, ids, st));                                                 \
    } while (0)
    cudaGraphExec_t exec = NULL;
    if (graph) {
        cudaGraph_t gr;
        BC(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        STEP_LAUNCHES();
        BC(cudaStreamEndCapture(st, &gr));
        BC(cudaGraphInstantiateWithFlags(&exec, gr, 0));
        cudaGraphDestroy(gr);
    }
    float t[7];
    for (int b = -1; b < 7; b++) {
        cudaEvent_t e0, e1;
        BC(cudaEventCreate(&e0)); BC(cudaEventCreate(&e1));
        BC(cudaEventRecord(e0, st));
        for (int rep = 0; rep < 3; rep++) {
            if (graph) BC(cudaGraphLaunch(exec, st));
            else STEP_LAUNCHES();
        }
        BC(cudaEventRecord(e1, st));
        BC(cudaEventSynchronize(e1));
        if (b >= 0) BC(cudaEventElapsedTime(&t[b], e0, e1));
        cudaEventDestroy(e0); cudaEventDestroy(e1);
    }
#undef STEP_LAUNCHES
#undef MM
    if (exec) cudaGraphExecDestroy(exec);
    BC(cudaStreamDestroy(st));
    qsort(t, 7, sizeof t[0], cmp_ms);
    for (int s = 0; s < SETS; s++) {
        for (int i = 0; i < 4; i++) bmat_free(&w[s][i]);
        lmx_cuda_free(kc[s]); lmx_cuda_free(vc[s]);
    }
    bmat_free(&head);
    void *bufs[] = {dmap, dpos, hx, hn, qkv, att, gu, act, logits, normw, inv, ws, aws, cnt, rows, ids};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) lmx_cuda_free(bufs[i]);
    free(hs); free(hp);
    return t[3] / 3.0;
}

void lmx_bench_batch_step(void) {
    printf("%-40s %9s %11s %9s %11s\n", "batched decode step, ctx", "eager ms", "tok/s (all)", "graph ms",
           "tok/s (all)");
    static const int RS[5] = {1, 8, 16, 32, 64};
    for (int bi = 0; bi < 2; bi++)
        for (int ri = 0; ri < 5; ri++) {
            const int bits = bi == 0 ? 4 : 8, R = RS[ri], ctx = 256;
            const double ms = step_ms(bits, R, ctx, false), gms = step_ms(bits, R, ctx, true);
            char lab[64];
            snprintf(lab, sizeof lab, "q%dg64 llama-3-8b, %d rows, ctx %d", bits, R, ctx);
            printf("%-40s %9.3f %11.0f %9.3f %11.0f\n", lab, ms, R / (ms * 1e-3), gms, R / (gms * 1e-3));
            fflush(stdout);
        }
    printf("\n");
}
