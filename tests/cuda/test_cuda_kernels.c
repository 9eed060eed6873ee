/* test_cuda_kernels.c — the small CUDA kernels (act_mul_split, RMSNorm, RoPE, elementwise, argmax,
 * top-k) and the arena / error paths against a double-precision C reference, on fresh random inputs
 * (seed printed; LMX_TEST_SEED=N repeats a run), real model shapes and odd sizes. The weight kernels:
 * test_cuda_weights.c; attention: test_cuda_attention.c.
 * Outputs are poisoned (NaN) before each launch, so an unwritten element fails.
 * Exits 77 (skipped) when no CUDA device is present. Label: gpu. */
#include "cuda_kernel_check.h"

#ifdef LMX_HAVE_CUDA

/* ---- act_mul_split: gu [T, 2*inter] -> act(gate) * up [T, inter] ---- */
static void run_act_split(int T, int inter, int act, int misalign) {
    char name[96];
    snprintf(name, sizeof name, "act_mul_split T %d inter %d act %d%s", T, inter, act, misalign ? " unaligned" : "");
    const size_t ng = (size_t)T * 2 * inter + 1, no = (size_t)T * inter;
    float *h = randv(ng, 4.0f);
    double *ref = malloc(sizeof(double) * no);
    const float *gu = h + misalign;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < inter; i++) {
            const double g = gu[(size_t)t * 2 * inter + i], u = gu[(size_t)t * 2 * inter + inter + i];
            ref[(size_t)t * inter + i] = act == 0 ? g / (1.0 + exp(-g)) * u
                                                  : 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * u;
        }
    float *dg = dev_upload(h, sizeof(float) * ng), *dy = dev_poisoned(sizeof(float) * (no + 1));
    float *y = malloc(sizeof(float) * no);
    CHECK(dg && dy);
    if (dg && dy) {
        OKS(lmx_cuda_act_mul_split(dg + misalign, dy + misalign, T, inter, act, NULL));
        OKS(lmx_cuda_stream_sync(NULL));
        lmx_cuda_memcpy_d2h(y, dy + misalign, sizeof(float) * no, NULL);
        lmx_cuda_stream_sync(NULL);
        compare(name, y, ref, no, 1e-5);
    }
    CHECK(lmx_cuda_act_mul_split(dg, dy, 0, inter, act, NULL) == LMX_ERR_INVALID_ARGUMENT);
    lmx_cuda_free(dg); lmx_cuda_free(dy);
    free(h); free(ref); free(y);
}

static void test_act_split(void) {
    for (int act = 0; act <= 1; act++) {
        run_act_split(7, 1024, act, 0);
        run_act_split(5, 1000, act, 0);
        run_act_split(3, 999, act, 0);
        run_act_split(4, 1024, act, 1);
        run_act_split(512, 3072, act, 0);
    }
}

/* ---- RMSNorm ---- */
static void run_rmsnorm(int rows, int dim, int dt, int one_plus) {
    char name[96];
    snprintf(name, sizeof name, "rmsnorm rows %d dim %d dt%d %s", rows, dim, dt, one_plus ? "1+w" : "w");
    float *x = randv((size_t)rows * dim, 3.0f);
    void *w = malloc((size_t)dim * 4);
    double *ref = malloc(sizeof(double) * (size_t)rows * dim);
    float wv[16384];
    for (int i = 0; i < dim; i++) wv[i] = tu_store(w, (size_t)i, dt, 1.0f + 0.5f * tu_unif(&rng));
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / dim + 1e-5);
        for (int i = 0; i < dim; i++) ref[r * dim + i] = x[r * dim + i] * inv * (one_plus ? 1.0 + wv[i] : wv[i]);
    }
    float *dx = dev_upload(x, sizeof(float) * (size_t)rows * dim);
    void *dw = dev_upload(w, (size_t)dim * tu_dsize(dt));
    float *dy = dev_poisoned(sizeof(float) * (size_t)rows * dim);
    OKS(lmx_cuda_rmsnorm(dx, dw, (lmx_dtype)dt, 1e-5f, one_plus, dy, rows, dim, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    float *y = malloc(sizeof(float) * (size_t)rows * dim);
    lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * (size_t)rows * dim, NULL);
    lmx_cuda_stream_sync(NULL);
    compare(name, y, ref, (size_t)rows * dim, 1e-5);
    /* in place */
    OKS(lmx_cuda_rmsnorm(dx, dw, (lmx_dtype)dt, 1e-5f, one_plus, dx, rows, dim, NULL));
    lmx_cuda_memcpy_d2h(y, dx, sizeof(float) * (size_t)rows * dim, NULL);
    OKS(lmx_cuda_stream_sync(NULL));
    compare("rmsnorm in place", y, ref, (size_t)rows * dim, 1e-5);
    lmx_cuda_free(dx); lmx_cuda_free(dw); lmx_cuda_free(dy);
    free(x); free(w); free(ref); free(y);
}
static void test_rmsnorm(void) {
    run_rmsnorm(3, 4096, 2, 0);
    run_rmsnorm(1, 2048, 0, 0);
    run_rmsnorm(32, 128, 2, 0);   /* per-head q_norm */
    run_rmsnorm(5, 3072, 2, 1);   /* gemma (1+w) */
    run_rmsnorm(2, 1001, 1, 1);
}

/* ---- RoPE ---- */
static void run_rope(int T, int heads, int hd, int rot, const int32_t *pos, double base, float mscale) {
    char name[96];
    snprintf(name, sizeof name, "rope T %d heads %d hd %d rot %d", T, heads, hd, rot);
    int half = rot / 2;
    float *inv = malloc(sizeof(float) * half);
    for (int i = 0; i < half; i++) { /* llama3-style table: a scaled band for low frequencies */
        double f = pow(base, -2.0 * i / rot);
        double wavelen = 2 * M_PI / f;
        if (wavelen > 8192) f /= 8.0;
        inv[i] = (float)f;
    }
    size_t n = (size_t)T * heads * hd;
    float *x = randv(n, 2.0f);
    double *ref = malloc(sizeof(double) * n);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++) {
            const float *p = x + ((size_t)t * heads + h) * hd;
            double *o = ref + ((size_t)t * heads + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = p[i];
            for (int i = 0; i < half; i++) {
                double ang = (double)((float)pos[t] * inv[i]); /* the angle is formed in fp32, as in MLX */
                double c = cos(ang) * mscale, s = sin(ang) * mscale;
                o[i] = p[i] * c - p[i + half] * s;
                o[i + half] = p[i + half] * c + p[i] * s;
            }
        }
    float *dx = dev_upload(x, sizeof(float) * n);
    float *dinv = dev_upload(inv, sizeof(float) * half);
    int32_t *dpos = dev_upload(pos, sizeof(int32_t) * T);
    OKS(lmx_cuda_rope(dx, dpos, dinv, mscale, T, heads, hd, rot, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    float *y = malloc(sizeof(float) * n);
    lmx_cuda_memcpy_d2h(y, dx, sizeof(float) * n, NULL);
    lmx_cuda_stream_sync(NULL);
    compare(name, y, ref, n, 1e-5);
    lmx_cuda_free(dx); lmx_cuda_free(dinv); lmx_cuda_free(dpos);
    free(inv); free(x); free(ref); free(y);
}
static void test_rope(void) {
    const int32_t p3[3] = {0, 7, 8191};
    const int32_t p5[5] = {100, 101, 102, 103, 104};
    const int32_t p1[1] = {31999};
    run_rope(3, 32, 128, 128, p3, 500000.0, 1.0f);
    run_rope(5, 8, 128, 64, p5, 10000.0, 1.0f);  /* partial rotary */
    run_rope(1, 8, 256, 256, p1, 1000000.0, 1.2f); /* yarn-style mscale */
    run_rope(3, 16, 64, 64, p3, 10000.0, 1.0f);
}

/* ---- elementwise ---- */
static void test_elementwise(void) {
    const int64_t sizes[2] = {14336, 1001};
    for (int si = 0; si < 2; si++) {
        int64_t n = sizes[si];
        float *g = randv((size_t)n, 6.0f), *u = randv((size_t)n, 2.0f);
        double *ref = malloc(sizeof(double) * (size_t)n);
        float *y = malloc(sizeof(float) * (size_t)n);
        float *dg = dev_upload(g, sizeof(float) * n), *du = dev_upload(u, sizeof(float) * n);
        float *dy = dev_poisoned(sizeof(float) * n);
        for (int op = 0; op < 5; op++) {
            for (int64_t i = 0; i < n; i++) {
                double gv = g[i], uv = u[i];
                if (op == 0) ref[i] = gv / (1 + exp(-gv)) * uv;
                else if (op == 1) ref[i] = 0.5 * gv * (1 + tanh(sqrt(2 / M_PI) * (gv + 0.044715 * gv * gv * gv))) * uv;
                else if (op == 2) ref[i] = gv + uv;
                else if (op == 3) ref[i] = 30.0 * tanh(gv / 30.0);
                else { /* gpt-oss clamped SwiGLU, limit 1.5 so that both clamps act on these ranges */
                    const double gc = fmin(gv, 1.5), uc = fmax(-1.5, fmin(uv, 1.5));
                    ref[i] = gc / (1 + exp(-1.702 * gc)) * (uc + 1);
                }
            }
            lmx_cuda_memset(dy, 0xff, sizeof(float) * n, NULL);
            if (op == 0) OKS(lmx_cuda_swiglu(dg, du, dy, n, NULL));
            else if (op == 1) OKS(lmx_cuda_geglu_tanh(dg, du, dy, n, NULL));
            else if (op == 4) OKS(lmx_cuda_swiglu_oai(dg, du, dy, n, 1.702f, 1.5f, NULL));
            else {
                lmx_cuda_memcpy_d2d(dy, dg, sizeof(float) * n, NULL);
                if (op == 2) OKS(lmx_cuda_add(dy, du, n, NULL));
                else OKS(lmx_cuda_softcap(dy, n, 30.0f, NULL));
            }
            OKS(lmx_cuda_stream_sync(NULL));
            lmx_cuda_memcpy_d2h(y, dy, sizeof(float) * n, NULL);
            lmx_cuda_stream_sync(NULL);
            const char *names[5] = {"swiglu", "geglu_tanh", "add", "softcap", "swiglu_oai"};
            char name[64];
            snprintf(name, sizeof name, "%s n %lld", names[op], (long long)n);
            compare(name, y, ref, (size_t)n, 1e-5);
        }
        lmx_cuda_free(dg); lmx_cuda_free(du); lmx_cuda_free(dy);
        free(g); free(u); free(ref); free(y);
    }
}

/* ---- argmax ---- */
static void test_argmax(void) {
    const int64_t n = 128256;
    const int rows = 3;
    float *l = randv((size_t)rows * n, 10.0f);
    int32_t want[3];
    want[0] = (int32_t)(tu_next(&rng) % n);
    l[want[0]] = 20.0f;
    want[1] = 5;                            /* tie: the first index wins */
    l[n + 5] = 25.0f; l[n + 77777] = 25.0f;
    want[2] = (int32_t)(n - 1);             /* NaNs are skipped */
    l[2 * n + 10] = NAN; l[2 * n + n - 1] = 30.0f;
    float *dl = dev_upload(l, sizeof(float) * rows * n);
    int32_t *dids = dev_poisoned(sizeof(int32_t) * rows), ids[3];
    OKS(lmx_cuda_argmax(dl, rows, n, dids, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    lmx_cuda_memcpy_d2h(ids, dids, sizeof ids, NULL);
    lmx_cuda_stream_sync(NULL);
    for (int r = 0; r < rows; r++) CHECK_EQ_INT(ids[r], want[r]);
    lmx_cuda_free(dl); lmx_cuda_free(dids);
    free(l);
}

/* ---- top-k ---- */
static const float *g_sort_vals;
static int cmp_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = g_sort_vals[i], y = g_sort_vals[j];
    if (isnan(x)) x = -INFINITY;
    if (isnan(y)) y = -INFINITY;
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : i > j;
}
static void test_topk(void) {
    const int64_t n = 128256;
    const int rows = 2, ks[4] = {1, 40, 256, 7};
    float *l = randv((size_t)rows * n, 8.0f);
    l[100] = NAN;
    l[n + 5] = 50.f; l[n + 9] = 50.f; l[n + 77] = 60.f; /* a tie inside the top k (k >= 3): index order */
    int32_t *order = malloc(sizeof(int32_t) * n);
    float *dl = dev_upload(l, sizeof(float) * rows * n);
    float *dv = dev_poisoned(sizeof(float) * rows * 256);
    int32_t *di = dev_poisoned(sizeof(int32_t) * rows * 256);
    float vals[2 * 256];
    int32_t ids[2 * 256];
    for (int ki = 0; ki < 4; ki++) {
        int k = ks[ki];
        OKS(lmx_cuda_topk(dl, rows, n, k, dv, di, NULL));
        OKS(lmx_cuda_stream_sync(NULL));
        lmx_cuda_memcpy_d2h(vals, dv, sizeof(float) * rows * k, NULL);
        lmx_cuda_memcpy_d2h(ids, di, sizeof(int32_t) * rows * k, NULL);
        lmx_cuda_stream_sync(NULL);
        for (int r = 0; r < rows; r++) {
            for (int64_t i = 0; i < n; i++) order[i] = (int32_t)i;
            g_sort_vals = l + (size_t)r * n;
            qsort(order, (size_t)n, sizeof *order, cmp_desc);
            int bad = 0;
            for (int j = 0; j < k; j++)
                if (ids[r * k + j] != order[j] || vals[r * k + j] != g_sort_vals[order[j]]) bad++;
            CHECK_MSG(bad == 0, "topk k=%d row %d: %d of %d wrong (first: got %d want %d)", k, r, bad, k, ids[r * k],
                      order[0]);
        }
    }
    lmx_cuda_free(dl); lmx_cuda_free(dv); lmx_cuda_free(di);
    free(l); free(order);
}

/* ---- arena, errors ---- */
static void test_arena(void) {
    lmx_cuda_arena *a = NULL;
    OKS(lmx_cuda_arena_create(1 << 20, &a));
    void *p1 = NULL, *p2 = NULL, *p3 = NULL;
    OKS(lmx_cuda_arena_alloc(a, 1000, 0, &p1));
    OKS(lmx_cuda_arena_alloc(a, 10, 4096, &p2));
    CHECK(((uintptr_t)p1 & 255) == 0 && ((uintptr_t)p2 & 4095) == 0 && p2 > p1);
    CHECK(lmx_cuda_arena_alloc(a, 2 << 20, 0, &p3) == LMX_ERR_OUT_OF_MEMORY && p3 == NULL);
    lmx_cuda_arena_reset(a);
    CHECK_EQ_INT(lmx_cuda_arena_used(a), 0);
    lmx_cuda_arena_destroy(a);
    lmx_cuda_arena_destroy(NULL);
    lmx_cuda_matrix bad = {.w = (void *)16, .dtype = LMX_DTYPE_BF16, .bits = 4, .group_size = 48, .n = 8, .k = 96};
    CHECK(lmx_cuda_matrix_check(&bad) == LMX_ERR_INVALID_ARGUMENT);
    lmx_cuda_util u = {0};
    lmx_status us = lmx_cuda_utilization(0, &u);
    fprintf(stderr, "  nvml: %s%s gpu %u%% membw %u%% used %.2f of %.2f GiB\n", lmx_status_str(us),
            us == LMX_OK ? "" : lmx_last_error_detail(), u.gpu_percent, u.mem_bw_percent, u.mem_used / 1073741824.0,
            u.mem_total / 1073741824.0);
    CHECK(us == LMX_OK || us == LMX_ERR_GPU_NOT_AVAILABLE);
    if (us == LMX_OK) CHECK(u.gpu_percent <= 100 && u.mem_total > 0 && u.mem_used <= u.mem_total);
    void *huge = NULL;
    CHECK(lmx_cuda_malloc(&huge, (size_t)1 << 50) == LMX_ERR_OUT_OF_MEMORY && huge == NULL);
}

#endif /* LMX_HAVE_CUDA */

int main(void) {
    if (kernel_check_start()) { /* false: skipped */
#ifdef LMX_HAVE_CUDA
        RUN(test_arena);
        RUN(test_act_split);
        RUN(test_rmsnorm);
        RUN(test_rope);
        RUN(test_elementwise);
        RUN(test_argmax);
        RUN(test_topk);
#endif
    }
    return lmx_test_summary();
}
