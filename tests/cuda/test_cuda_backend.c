/* test_cuda_backend.c — the CUDA backend against the CPU backend through the real forward pass:
 * every model under tests/fixtures/models (6 families, dense f32/f16/bf16 and MLX 2-8 bit) runs
 * the same prompt and greedy decode steps on the GPU, on the CPU backend's best kernel level (what
 * runs in production) and on its scalar level (fp32 dot products: the exact reference).
 * With the fp32 KV cache (lmx_cuda_options.f32_kv) both sides compute in fp32, so GPU vs scalar CPU
 * logits agree to relative L2 1e-4 and greedy tokens agree wherever the top-2 margin is > 1e-3. The
 * best CPU level is not fp32-exact: AVX-512 quantizes activations to int16 per group for 4/8-bit
 * weights and splits them into two bf16 halves for bf16 weights (cpu_qtile.c, cpu_simd.h), so GPU vs
 * best CPU is bounded by the triangle inequality: the GPU's own bound plus the CPU level's own
 * difference from its scalar level on the same run (see gpu_vs_cpu_bound). The default fp16 cache is
 * checked as well (rounding of every cached key and value, and of Q and P in the tensor-core
 * prefill) at KV_F16_TOL, greedy tokens equal where the margin is > 0.05. The forward pass runs the
 * fused ops (matmul_add, rope_qk_store), so this is also their check against the CPU, whose fused ops
 * are bitwise its unfused sequence (tests/model/test_fused_ops); the kernels themselves are checked
 * against float64 references in test_cuda_kernels.
 * test_graph_decode: decode with CUDA graphs equals decode without them (lmx_cuda_options.graphs) bit
 * for bit over 40 steps through the ring wrap of sliding-window layers, and both match the scalar CPU,
 * with the default (fp16) cache and the fp32 one. Exits 77 (skipped) without a CUDA device. Label: gpu. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "lmx_test.h"
#include "model/lm.h"

/* decode logits, GPU (fp16 KV cache) vs CPU (fp32): relative L2 bound */
#define KV_F16_TOL 2e-3

/* this run's bounds: fp32 cache (exact path) or a 16-bit cache */
static double g_tol = 1e-4;
static float g_margin = 1e-3f;

/* a GPU backend with the default options but the KV cache type (fp32: the exact path) and graphs given */
static lmx_status gpu_create(bool f32_kv, bool graphs, lmx_backend **out) {
    lmx_cuda_options o = lmx_cuda_options_default();
    o.f32_kv = f32_kv;
    o.graphs = graphs;
    return lmx_backend_cuda_create_ex(0, &o, out);
}
static bool g_f32_kv; /* the KV cache type of fixture_models' backend */

static int argmax(const float *v, int n, float *margin) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    float second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != b && v[i] > second) second = v[i];
    *margin = v[b] - second;
    return b;
}

static double rel_diff(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double max_abs_diff(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

/* The bound of rel(gpu, best CPU) = |g - f| / |f| given the GPU's bound tol against the exact
 * reference s (the scalar CPU level: rel(g, s) <= tol) and the best level's own difference from it,
 * e = rel(f, s), measured on the same run: |g - f| <= |g - s| + |s - f| <= (tol + e) |s| and
 * |s| <= |f| / (1 - e), so rel(g, f) <= (tol + e) / (1 - e). The CPU's term is measured rather than
 * bounded a priori because its propagation through the layers has no closed form; per matmul it is
 * about 2 r / (32767 sqrt 12) for the int16 activations of 4/8-bit weights (r = max|x| / rms(x) of
 * a group; the 2 is |s q| / |w| of MLX affine codes, whose bias term multiplies the exact fp32 sum
 * of x, so the rounding of x meets s q, not w), ~3e-5 for uniform x, and ~2^-17 relative for the
 * split-bf16 dot products of bf16 weights; the fixture models' logits come out at up to ~2.2e-4
 * (q4/q8) and ~1e-5 (the others) on an AVX-512 CPU. */
static double gpu_vs_cpu_bound(double tol, double e) { return (tol + e) / (1.0 - e); }

static void run_model(const char *dir, lmx_backend *gpu, lmx_backend *scalar) {
    lmx_lm_options cpu_opt = {.n_threads = 2, .device = LMX_DEVICE_CPU};
    lmx_lm_options ref_opt = {.device = LMX_DEVICE_CPU, .backend = scalar};
    lmx_lm_options gpu_opt = {.device = LMX_DEVICE_GPU, .backend = gpu};
    lmx_lm *lc = NULL, *lr = NULL, *lg = NULL;
    lmx_kv *kc = NULL, *kr = NULL, *kg = NULL;
    lmx_status s = lmx_lm_open(dir, &cpu_opt, &lc);
    CHECK_MSG(s == LMX_OK, "%s: cpu open: %s", dir, lmx_last_error_detail());
    if (s != LMX_OK) return;
    s = lmx_lm_open(dir, &ref_opt, &lr);
    CHECK_MSG(s == LMX_OK, "%s: scalar cpu open: %s", dir, lmx_last_error_detail());
    if (s == LMX_OK) s = lmx_lm_open(dir, &gpu_opt, &lg);
    CHECK_MSG(s == LMX_OK, "%s: gpu open: %s", dir, lmx_last_error_detail());
    if (s == LMX_OK) s = lmx_kv_create(lc, 64, &kc);
    if (s == LMX_OK) s = lmx_kv_create(lr, 64, &kr);
    if (s == LMX_OK) s = lmx_kv_create(lg, 64, &kg);
    CHECK_MSG(s == LMX_OK, "%s: kv: %s", dir, lmx_last_error_detail());
    const int V = lmx_lm_vocab_size(lc);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V), *r = malloc(sizeof(float) * V);
    int32_t ids[11];
    for (int i = 0; i < 11; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    double worst = 0, worst_cpu = 0;
    int mismatches = 0;
    if (s == LMX_OK && a && b && r) {
        for (int step = 0; step < 8; step++) {
            const int n = step == 0 ? 11 : 1;
            const int32_t *in = step == 0 ? ids : &ids[10];
            s = lmx_lm_forward(lc, kc, in, n, a);
            if (s == LMX_OK) s = lmx_lm_forward(lr, kr, in, n, r);
            CHECK_MSG(s == LMX_OK, "%s: cpu forward: %s", dir, lmx_last_error_detail());
            if (s != LMX_OK) break;
            s = lmx_lm_forward(lg, kg, in, n, b);
            CHECK_MSG(s == LMX_OK, "%s: gpu forward: %s", dir, lmx_last_error_detail());
            if (s != LMX_OK) break;
            const double rg = rel_diff(b, r, V), e = rel_diff(a, r, V), rf = rel_diff(b, a, V);
            const double bound = gpu_vs_cpu_bound(g_tol, e);
            if (rg > worst) worst = rg;
            if (e > worst_cpu) worst_cpu = e;
            CHECK_MSG(rg <= g_tol, "%s: step %d: gpu vs scalar cpu logits differ, rel %.3g (tol %.1g)", dir, step, rg,
                      g_tol);
            CHECK_MSG(rf <= bound, "%s: step %d: gpu vs cpu logits differ, rel %.3g (bound %.3g: the cpu's own %.3g)",
                      dir, step, rf, bound, e);
            /* the greedy tokens may differ where the CPU's top-2 margin is within the GPU's margin plus
             * twice the CPU's own largest logit error (both logits of the pair may move by it) */
            const float margin = g_margin + 2.0f * (float)max_abs_diff(a, r, V);
            float ma, mb;
            int ta = argmax(a, V, &ma), tb = argmax(b, V, &mb);
            if (ta != tb) {
                mismatches++;
                CHECK_MSG(ma <= margin, "%s: step %d: greedy token cpu %d gpu %d (margin %g, allowed %g)", dir, step,
                          ta, tb, (double)ma, (double)margin);
            }
            ids[10] = ta; /* the next input: the CPU's greedy token */
        }
    }
    /* a 40-token prompt: prefill takes the tensor-core GEMM path (bf16 operands), so compare at
     * bf16-level tolerance, greedy tokens where the margin is > 0.05 */
    double long_rel = -1;
    if (s == LMX_OK && a && b) {
        int32_t p[40];
        for (int i = 0; i < 40; i++) p[i] = (int32_t)((i * 104729 + 7) % V);
        lmx_kv_reset(kc);
        lmx_kv_reset(kg);
        s = lmx_lm_forward(lc, kc, p, 40, a);
        CHECK_MSG(s == LMX_OK, "%s: cpu long prefill: %s", dir, lmx_last_error_detail());
        if (s == LMX_OK) s = lmx_lm_forward(lg, kg, p, 40, b);
        CHECK_MSG(s == LMX_OK, "%s: gpu long prefill: %s", dir, lmx_last_error_detail());
        if (s == LMX_OK) {
            long_rel = rel_diff(b, a, V);
            CHECK_MSG(long_rel <= 2e-2, "%s: 40-token prefill: logits differ, rel %.3g", dir, long_rel);
            float ma, mb;
            int ta = argmax(a, V, &ma), tb = argmax(b, V, &mb);
            CHECK_MSG(ta == tb || ma <= 0.05f, "%s: 40-token prefill: greedy cpu %d gpu %d (margin %g)", dir, ta, tb,
                      (double)ma);
        }
    }
    fprintf(stderr, "  %-60s worst rel %.3g vs scalar cpu (cpu level vs scalar %.3g), %d token mismatches; "
                    "40-token prefill rel %.3g\n",
            dir, worst, worst_cpu, mismatches, long_rel);
    free(a);
    free(b);
    free(r);
    lmx_kv_destroy(kc);
    lmx_kv_destroy(kr);
    lmx_kv_destroy(kg);
    lmx_lm_close(lc);
    lmx_lm_close(lr);
    lmx_lm_close(lg);
}

static void fixture_models(void) {
    lmx_backend *gpu = NULL, *scalar = NULL;
    lmx_status s = gpu_create(g_f32_kv, true, &gpu);
    CHECK_MSG(s == LMX_OK, "cuda backend: %s", lmx_last_error_detail());
    if (s == LMX_OK) s = lmx_backend_cpu_create_level(2, LMX_CPU_SCALAR, &scalar);
    if (s != LMX_OK) {
        lmx_backend_destroy(gpu);
        return;
    }
    const char *root = LMX_SOURCE_DIR "/tests/fixtures/models";
    DIR *d = opendir(root);
    if (!d) {
        SKIP("no fixture models at %s", root);
        lmx_backend_destroy(gpu);
        lmx_backend_destroy(scalar);
        return;
    }
    char **names = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char cfg[1024];
        struct stat st;
        snprintf(cfg, sizeof cfg, "%s/%s/config.json", root, e->d_name);
        if (stat(cfg, &st) != 0) continue;
        names = realloc(names, sizeof *names * (n + 1));
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    CHECK(n > 0);
    for (int i = 0; i < n; i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        run_model(dir, gpu, scalar);
        free(names[i]);
    }
    free(names);
    lmx_backend_destroy(gpu);
    lmx_backend_destroy(scalar);
}

/* the fp32 KV cache (exact path: tight bounds), then the default fp16 cache */
static void test_fixture_models(void) {
    for (int i = 0; i < 2; i++) {
        g_f32_kv = i == 0;
        g_tol = i == 0 ? 1e-4 : KV_F16_TOL;
        g_margin = i == 0 ? 1e-3f : 0.05f;
        fprintf(stderr, " KV cache %s:\n", i == 0 ? "fp32" : "fp16 (default)");
        fixture_models();
    }
    g_f32_kv = false;
    g_tol = 1e-4;
    g_margin = 1e-3f;
}

/* one model, three backends: the scalar CPU level (fp32 dot products: the exact reference, so the
 * GPU's own bound applies), CUDA with graphs, CUDA without; ring caches (chunk 4: a sliding layer
 * keeps window + 3 slots) wrap several times in 40 decode steps */
static void graph_model(const char *name, lmx_backend *with, lmx_backend *without, lmx_backend *scalar) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", LMX_SOURCE_DIR, name);
    lmx_lm_options cpu_opt = {.device = LMX_DEVICE_CPU, .backend = scalar};
    lmx_lm_options g_opt = {.device = LMX_DEVICE_GPU, .backend = with};
    lmx_lm_options e_opt = {.device = LMX_DEVICE_GPU, .backend = without};
    lmx_lm *lc = NULL, *lg = NULL, *le = NULL;
    lmx_kv *kc = NULL, *kg = NULL, *ke = NULL;
    lmx_status s = lmx_lm_open(dir, &cpu_opt, &lc);
    if (s == LMX_OK) s = lmx_lm_open(dir, &g_opt, &lg);
    if (s == LMX_OK) s = lmx_lm_open(dir, &e_opt, &le);
    if (s == LMX_OK) s = lmx_kv_create_ex(lc, 64, 4, &kc);
    if (s == LMX_OK) s = lmx_kv_create_ex(lg, 64, 4, &kg);
    if (s == LMX_OK) s = lmx_kv_create_ex(le, 64, 4, &ke);
    CHECK_MSG(s == LMX_OK, "%s: open: %s", name, lmx_last_error_detail());
    const int V = s == LMX_OK ? lmx_lm_vocab_size(lc) : 1;
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V), *e = malloc(sizeof(float) * V);
    int32_t ids[5];
    for (int i = 0; i < 5; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    double worst = 0;
    int steps = 0, identical = 0;
    for (int step = 0; s == LMX_OK && a && b && e && step < 41; step++) {
        const int n = step == 0 ? 5 : 1;
        const int32_t *in = step == 0 ? ids : &ids[4];
        s = lmx_lm_forward(lc, kc, in, n, a);
        if (s == LMX_OK) s = lmx_lm_forward(lg, kg, in, n, b);
        if (s == LMX_OK) s = lmx_lm_forward(le, ke, in, n, e);
        CHECK_MSG(s == LMX_OK, "%s: step %d: %s", name, step, lmx_last_error_detail());
        if (s != LMX_OK) break;
        if (step > 0) {
            steps++;
            bool same = memcmp(b, e, sizeof(float) * V) == 0;
            identical += same;
            CHECK_MSG(same, "%s: step %d: graph decode differs from eager decode (rel %.3g)", name, step,
                      rel_diff(b, e, V));
        }
        double r = rel_diff(b, a, V);
        if (r > worst) worst = r;
        CHECK_MSG(r <= g_tol, "%s: step %d (position %d): gpu vs scalar cpu rel %.3g", name, step, lmx_kv_pos(kc) - 1,
                  r);
        float m;
        ids[4] = argmax(a, V, &m);
    }
    CHECK(steps == 40);
    fprintf(stderr, "  %-24s %d/%d decode steps identical with and without graphs; worst gpu/scalar cpu rel %.3g\n",
            name,
            identical, steps, worst);
    free(a);
    free(b);
    free(e);
    lmx_kv_destroy(kc);
    lmx_kv_destroy(kg);
    lmx_kv_destroy(ke);
    lmx_lm_close(lc);
    lmx_lm_close(lg);
    lmx_lm_close(le);
}

static void graph_decode(bool f32_kv) {
    lmx_backend *with = NULL, *without = NULL, *scalar = NULL;
    lmx_status s = gpu_create(f32_kv, true, &with);
    if (s == LMX_OK) s = gpu_create(f32_kv, false, &without);
    if (s == LMX_OK) s = lmx_backend_cpu_create_level(2, LMX_CPU_SCALAR, &scalar);
    CHECK_MSG(s == LMX_OK, "backends: %s", lmx_last_error_detail());
    if (s == LMX_OK) {
        graph_model("gemma3-text-window", with, without, scalar);
        graph_model("mistral-window", with, without, scalar);
        graph_model("llama-q4-g64", with, without, scalar);
    }
    lmx_backend_destroy(with);
    lmx_backend_destroy(without);
    lmx_backend_destroy(scalar);
}

/* graphs over the default (16-bit) cache and over the fp32 cache */
static void test_graph_decode(void) {
    g_tol = KV_F16_TOL;
    fprintf(stderr, " default KV cache (fp16):\n");
    graph_decode(false);
    g_tol = 1e-4;
    fprintf(stderr, " fp32 KV cache:\n");
    graph_decode(true);
}

/* the KV cache's bytes follow the backend's element type: 16 bits halve them; a cache buffer is refused
 * by the fp32 buffer ops */
static void test_kv_bytes(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/llama-q4-g64", LMX_SOURCE_DIR);
    lmx_backend *bb = NULL, *bf = NULL;
    lmx_status s = gpu_create(false, true, &bb);
    if (s == LMX_OK) s = gpu_create(true, true, &bf);
    CHECK_MSG(s == LMX_OK, "cuda backend: %s", lmx_last_error_detail());
    lmx_lm_options ob = {.device = LMX_DEVICE_GPU, .backend = bb}, of = {.device = LMX_DEVICE_GPU, .backend = bf};
    lmx_lm *lb = NULL, *lf = NULL;
    lmx_kv *kb = NULL, *kf = NULL;
    if (s == LMX_OK) s = lmx_lm_open(dir, &ob, &lb);
    if (s == LMX_OK) s = lmx_lm_open(dir, &of, &lf);
    if (s == LMX_OK) s = lmx_kv_create(lb, 64, &kb);
    if (s == LMX_OK) s = lmx_kv_create(lf, 64, &kf);
    CHECK_MSG(s == LMX_OK, "%s: %s", dir, lmx_last_error_detail());
    if (s == LMX_OK) {
        uint64_t pb = lmx_lm_kv_bytes_per_position(lb), pf = lmx_lm_kv_bytes_per_position(lf);
        const lmx_model_config *c = lmx_lm_config(lb);
        CHECK(pf == 2 * pb && pb == 2ull * c->n_layers * c->n_kv_heads * c->head_dim * 2);
        /* no sliding layers in this model: every layer holds 64 positions */
        CHECK_EQ_INT((long long)(lmx_kv_bytes(kf) - lmx_kv_bytes(kb)), (long long)(64 * (pf - pb)));
        lmx_buf *cb = NULL;
        float tmp[4];
        CHECK(bb->ops->kv_buf_alloc && bb->ops->kv_buf_alloc(bb, 100, &cb) == LMX_OK);
        if (cb) {
            CHECK(bb->ops->buf_read(bb, cb, 0, tmp, 4) == LMX_ERR_INVALID_ARGUMENT);
            CHECK(bb->ops->buf_write(bb, cb, 0, tmp, 4) == LMX_ERR_INVALID_ARGUMENT);
            bb->ops->buf_free(bb, cb);
        }
    }
    lmx_kv_destroy(kb);
    lmx_kv_destroy(kf);
    lmx_lm_close(lb);
    lmx_lm_close(lf);
    lmx_backend_destroy(bb);
    lmx_backend_destroy(bf);
}

static void test_no_device_error(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cuda_create(999, &be) == LMX_ERR_GPU_NOT_AVAILABLE && be == NULL);
}

int main(void) {
    if (!lmx_cuda_available(NULL)) {
        RUN(test_no_device_error);
        SKIP("no CUDA device (or no driver, or a build without CUDA): GPU backend tests skipped");
        return lmx_test_failures ? 1 : 77;
    }
    RUN(test_no_device_error);
    RUN(test_kv_bytes);
    RUN(test_fixture_models);
    RUN(test_graph_decode);
    return lmx_test_summary();
}
