/* test_cuda_moe.c — the CUDA backend's mixture-of-experts ops (cuda_backend_moe.c over cuda_moe.cu,
 * cuda_moe_gemv.cu and the grouped cuda_gemm_small.cu) against the CPU backend's and the double
 * reference, on the generated problems of tests/model/moe_ops_cases.h:
 *   - the routing table equals the CPU backend's (experts, the grouping by expert exactly; weights to
 *     1e-6: both compute them in double);
 *   - every output within the reference's tolerance: 2e-3 of the largest value on the fp32 GEMV paths,
 *     1.5e-2 where the grouped tensor-core GEMM runs (4/8-bit experts, T >= 16: activations rounded
 *     to bf16); experts that receive no row hold NaN weights, so reading one shows up as non-finite;
 *   - the same ops inside captured decode steps: a qwen3_moe fixture model's logits over several
 *     token-by-token steps with CUDA graphs on equal those with graphs off (bitwise: the replay runs
 *     the kernels of the eager step), and both stay near the CPU backend's.
 * Skips (77) without a device. Run on the GPU machine: `ctest --test-dir build -R test_cuda_moe
 * --output-on-failure` (or `bash bench/run_device.sh --tests`, which runs ctest -L gpu). */
#include "model/moe_ops_cases.h"

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "model/lm.h"
#include "model/test_moe_writer.h"

static lmx_backend *gpu, *cpu;

static bool grouped_gemm(const moe_case *c) {
    return c->T >= 16 && (c->fmt == MF_Q4 || c->fmt == MF_Q8) && c->R % 128 == 0 && c->C % 128 == 0;
}

static void test_ops(void) {
    for (size_t i = 0; i < N_MOE_CASES; i++) {
        const moe_case *c = &MOE_CASES[i];
        moe_problem p;
        moe_problem_make(&p, c, 1000 + i);
        char label[160], who[200];
        moe_case_label(c, label, sizeof label);
        moe_result rc, rg;
        const bool okc = moe_run(cpu, &p, &rc), okg = moe_run(gpu, &p, &rg);
        snprintf(who, sizeof who, "gpu: %s", label);
        CHECK_MSG(okc && okg, "%s: run failed (cpu %d, gpu %d)", who, okc, okg);
        if (okc && okg) {
            moe_check_run(&p, &rg, grouped_gemm(c) ? 1.5e-2 : 2e-3, who);
            const size_t S = (size_t)c->T * c->k, ints = 3 * S + (size_t)c->E + 1;
            CHECK_MSG(!memcmp(rg.table + S, rc.table + S, ints * sizeof(float)),
                      "%s: the table's experts / grouping differ from the CPU backend's", who);
        }
        moe_result_free(&rc);
        moe_result_free(&rg);
        moe_problem_free(&p);
    }
}

/* logits of `n` token-by-token steps after a 5-token prefill on a backend */
static bool steps(lmx_backend *b, const char *dir, int n, float *out) {
    lmx_lm_options o = {.backend = b, .device = b == cpu ? LMX_DEVICE_CPU : LMX_DEVICE_GPU};
    lmx_lm *lm = NULL;
    lmx_kv *kv = NULL;
    bool ok = lmx_lm_open(dir, &o, &lm) == LMX_OK && lmx_kv_create(lm, 64, &kv) == LMX_OK;
    int32_t ids[32];
    for (int i = 0; i < 32; i++) ids[i] = (int32_t)((i * 41 + 7) % VOCAB);
    if (ok) ok = lmx_lm_forward(lm, kv, ids, 5, NULL) == LMX_OK;
    for (int i = 0; ok && i < n; i++) ok = lmx_lm_forward(lm, kv, ids + 5 + i, 1, out + (size_t)i * VOCAB) == LMX_OK;
    CHECK_MSG(ok, "%s", lmx_last_error_detail());
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    return ok;
}

static void test_captured_steps(void) {
    static const moe_spec specs[] = {
        {.family = 0, .stacked = true, .qbits = 4, .layers = 3, .experts = 9, .topk = 4, .inter = 64,
         .dense_inter = 64, .norm_topk = true, .sparse_step = 1},
        {.family = 1, .stacked = false, .qbits = 0, .layers = 2, .experts = 5, .topk = 2, .inter = 64},
    };
    lmx_cuda_options eo = lmx_cuda_options_default();
    eo.graphs = false;
    lmx_backend *eager = NULL;
    CHECK(lmx_backend_cuda_create_ex(0, &eo, &eager) == LMX_OK);
    lmx_cuda_options go = lmx_cuda_options_default();
    go.graphs = true;
    lmx_backend *graphs = NULL;
    CHECK(lmx_backend_cuda_create_ex(0, &go, &graphs) == LMX_OK);
    enum { N = 12 };
    for (size_t v = 0; eager && graphs && v < sizeof specs / sizeof specs[0]; v++) {
        model md = {0};
        CHECK(model_make(&md, &specs[v], 3100 + v));
        static float a[N * VOCAB], b[N * VOCAB], c[N * VOCAB];
        if (steps(eager, md.dir, N, a) && steps(graphs, md.dir, N, b) && steps(cpu, md.dir, N, c)) {
            CHECK_MSG(!memcmp(a, b, sizeof a), "variant %zu: captured steps differ from eager ones", v);
            double err = 0, mx = 0;
            for (size_t i = 0; i < (size_t)N * VOCAB; i++) {
                err = fmax(err, fabs(a[i] - c[i]));
                mx = fmax(mx, fabs(c[i]));
            }
            CHECK_MSG(err <= 2e-2 * (1 + mx), "variant %zu: GPU vs CPU decode logits differ by %g (max %g)", v, err,
                      mx);
        }
        model_free(&md);
    }
    lmx_backend_destroy(eager);
    lmx_backend_destroy(graphs);
}

int main(void) {
    if (!lmx_cuda_available(NULL)) {
        SKIP("no CUDA device (or no driver, or a build without CUDA): MoE GPU tests skipped");
        return lmx_test_failures ? 1 : 77;
    }
    if (lmx_backend_cuda_create(0, &gpu) != LMX_OK || lmx_backend_cpu_create(0, &cpu) != LMX_OK) {
        fprintf(stderr, "cannot create the backends: %s\n", lmx_last_error_detail());
        return 1;
    }
    RUN(test_ops);
    RUN(test_captured_steps);
    lmx_backend_destroy(gpu);
    lmx_backend_destroy(cpu);
    return lmx_test_summary();
}
