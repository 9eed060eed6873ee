/* test_cuda_attention.c — the CUDA attention kernels (the fused q/k norm + RoPE + KV store, split-K
 * decode attention, flash prefill attention, with sinks, windows and soft-capping) against a
 * double-precision C reference, on fresh random inputs (seed printed; LMX_TEST_SEED=N repeats a run),
 * real model shapes and odd sizes.
 * Outputs are poisoned (NaN) before each launch, so an unwritten element fails.
 * Exits 77 (skipped) when no CUDA device is present. Label: gpu. */
#include "cuda_kernel_check.h"

#ifdef LMX_HAVE_CUDA

/* ---- fused per-head norm + RoPE of q and k + KV store (cuda_fused.cu) ---- */
typedef struct {
    int T, nh, nkv, hd, rot, cap;
    const int32_t *pos;
    int norm;   /* 0 none, 1 w, 2 1 + w */
    int kvdt;   /* cache dtype: 0 F32, 1 F16, 2 BF16 */
    int fused;  /* q, k, v as views of one [T, (nh + 2 nkv) hd + 8] buffer (row strides, 8 pad floats) */
    float mscale;
} qkr_case;

static float cache_at(const void *c, int dt, size_t i) {
    if (dt == 2) return tu_bf2f(((const uint16_t *)c)[i]);
    if (dt == 1) return tu_h2f(((const uint16_t *)c)[i]);
    return ((const float *)c)[i];
}

static void run_rope_qk(qkr_case c) {
    char name[160];
    snprintf(name, sizeof name, "rope_qk_store T %d heads %d/%d hd %d rot %d cap %d norm %d kv dt%d%s", c.T, c.nh,
             c.nkv, c.hd, c.rot, c.cap, c.norm, c.kvdt, c.fused ? " views" : "");
    const int D = c.hd, half = c.rot / 2;
    const size_t qrow = (size_t)c.nh * D, krow = (size_t)c.nkv * D;
    const size_t stride = c.fused ? qrow + 2 * krow + 8 : 0;
    const size_t qs = c.fused ? stride : qrow, ks = c.fused ? stride : krow;
    /* host inputs: one buffer per tensor, or one fused buffer with q | k | v | pad per row */
    const size_t nbuf = c.fused ? (size_t)c.T * stride : 0;
    float *fb = c.fused ? randv(nbuf, 2.0f) : NULL;
    float *hq = c.fused ? fb : randv((size_t)c.T * qrow, 2.0f);
    float *hk = c.fused ? fb + qrow : randv((size_t)c.T * krow, 2.0f);
    float *hv = c.fused ? fb + qrow + krow : randv((size_t)c.T * krow, 2.0f);
    float *inv = malloc(sizeof(float) * (half ? half : 1));
    for (int i = 0; i < half; i++) inv[i] = (float)pow(10000.0, -2.0 * i / c.rot);
    float *qn = randv((size_t)D, 1.0f), *kn = randv((size_t)D, 1.0f);
    const float eps = 1e-6f;
    /* double reference of the rotated q, k rows */
    double *rq = malloc(sizeof(double) * (size_t)c.T * qrow), *rk = malloc(sizeof(double) * (size_t)c.T * krow);
    double *tmp = malloc(sizeof(double) * D);
    for (int t = 0; t < c.T; t++)
        for (int hh = 0; hh < c.nh + c.nkv; hh++) {
            const bool isq = hh < c.nh;
            const int h = isq ? hh : hh - c.nh;
            const float *x = (isq ? hq + (size_t)t * qs : hk + (size_t)t * ks) + (size_t)h * D;
            double *o = (isq ? rq + (size_t)t * qrow : rk + (size_t)t * krow) + (size_t)h * D;
            double ss = 0;
            for (int i = 0; i < D; i++) ss += (double)x[i] * x[i];
            const double r = c.norm ? 1.0 / sqrt(ss / D + eps) : 1.0;
            const float *w = isq ? qn : kn;
            for (int i = 0; i < D; i++) tmp[i] = c.norm ? x[i] * r * (c.norm == 2 ? 1.0 + w[i] : w[i]) : x[i];
            for (int i = 0; i < D; i++) o[i] = tmp[i];
            for (int i = 0; i < half; i++) {
                double ang = (double)((float)c.pos[t] * inv[i]);
                double cs = cos(ang) * c.mscale, sn = sin(ang) * c.mscale;
                o[i] = tmp[i] * cs - tmp[i + half] * sn;
                o[i + half] = tmp[i + half] * cs + tmp[i] * sn;
            }
        }
    float *dfb = c.fused ? dev_upload(fb, sizeof(float) * nbuf) : NULL;
    float *dq = c.fused ? dfb : dev_upload(hq, sizeof(float) * (size_t)c.T * qrow);
    float *dk = c.fused ? dfb + qrow : dev_upload(hk, sizeof(float) * (size_t)c.T * krow);
    float *dv = c.fused ? dfb + qrow + krow : dev_upload(hv, sizeof(float) * (size_t)c.T * krow);
    const size_t ncache = (size_t)c.nkv * c.cap * D, cb = ncache * tu_dsize(c.kvdt);
    void *dkc = dev_poisoned(cb), *dvc = dev_poisoned(cb);
    float *dinv = dev_upload(inv, sizeof(float) * (half ? half : 1));
    float *dqn = c.norm ? dev_upload(qn, sizeof(float) * D) : NULL, *dkn = c.norm ? dev_upload(kn, sizeof(float) * D) : NULL;
    int32_t *dpos = dev_upload(c.pos, sizeof(int32_t) * c.T);
    lmx_cuda_attn a = {.n_heads = c.nh, .n_kv_heads = c.nkv, .head_dim = D, .capacity = c.cap,
                       .kv_dtype = (lmx_dtype)c.kvdt};
    lmx_cuda_qk_rope r = {.rot_dims = c.rot, .inv_freq = dinv, .mscale = c.mscale, .q_norm = dqn, .k_norm = dkn,
                          .eps = eps, .norm_plus_one = c.norm == 2, .q_stride = (int64_t)stride,
                          .k_stride = (int64_t)stride, .v_stride = (int64_t)stride};
    CHECK(dq && dk && dv && dkc && dvc && dinv && dpos);
    lmx_status s = lmx_cuda_rope_qk_store(&a, &r, dq, dk, dv, dkc, dvc, dpos, c.T, NULL);
    CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error_detail());
    if (s == LMX_OK) s = lmx_cuda_stream_sync(NULL);
    CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error_detail());
    if (s == LMX_OK) {
        float *gq = malloc(sizeof(float) * (size_t)c.T * qrow), *gk = malloc(sizeof(float) * (size_t)c.T * krow);
        float *gb = c.fused ? malloc(sizeof(float) * nbuf) : NULL;
        if (c.fused) {
            lmx_cuda_memcpy_d2h(gb, dfb, sizeof(float) * nbuf, NULL);
            for (int t = 0; t < c.T; t++) {
                memcpy(gq + (size_t)t * qrow, gb + (size_t)t * stride, sizeof(float) * qrow);
                memcpy(gk + (size_t)t * krow, gb + (size_t)t * stride + qrow, sizeof(float) * krow);
            }
        } else {
            lmx_cuda_memcpy_d2h(gq, dq, sizeof(float) * (size_t)c.T * qrow, NULL);
            lmx_cuda_memcpy_d2h(gk, dk, sizeof(float) * (size_t)c.T * krow, NULL);
        }
        void *hkc = malloc(cb), *hvc = malloc(cb);
        lmx_cuda_memcpy_d2h(hkc, dkc, cb, NULL);
        lmx_cuda_memcpy_d2h(hvc, dvc, cb, NULL);
        lmx_cuda_stream_sync(NULL);
        char nm[200];
        snprintf(nm, sizeof nm, "%s: q", name);
        compare(nm, gq, rq, (size_t)c.T * qrow, 1e-5);
        snprintf(nm, sizeof nm, "%s: k", name);
        compare(nm, gk, rk, (size_t)c.T * krow, 1e-5);
        if (c.fused) { /* v and the pad are untouched */
            size_t changed = 0;
            for (size_t i = 0; i < nbuf; i++) {
                const size_t col = i % stride;
                if (col >= qrow + krow && memcmp(&gb[i], &fb[i], 4) != 0) changed++;
            }
            CHECK_MSG(changed == 0, "%s: %zu v/pad elements changed", name, changed);
        }
        /* caches: slot pos % cap of every kv head holds the rotated k / v rows (rounded to the cache
         * dtype); every other slot is still the poison */
        const double tol = c.kvdt == 2 ? 8e-3 : c.kvdt == 1 ? 1.5e-3 : 1e-6;
        float *gc = malloc(sizeof(float) * D * 2);
        double *rc = malloc(sizeof(double) * D * 2);
        char *written = calloc((size_t)c.cap, 1);
        for (int t = 0; t < c.T; t++) written[c.pos[t] % c.cap] = 1;
        size_t bad_other = 0;
        for (int h = 0; h < c.nkv; h++)
            for (int sl = 0; sl < c.cap; sl++) {
                const size_t base = ((size_t)h * c.cap + sl) * D;
                if (!written[sl]) {
                    for (int i = 0; i < D; i++)
                        if (!isnan(cache_at(hkc, c.kvdt, base + i)) || !isnan(cache_at(hvc, c.kvdt, base + i))) bad_other++;
                    continue;
                }
                int t = -1;
                for (int u = 0; u < c.T; u++)
                    if (c.pos[u] % c.cap == sl) t = u; /* the last row written to this slot */
                for (int i = 0; i < D; i++) {
                    gc[i] = cache_at(hkc, c.kvdt, base + i);
                    rc[i] = rk[(size_t)t * krow + (size_t)h * D + i];
                    gc[D + i] = cache_at(hvc, c.kvdt, base + i);
                    rc[D + i] = hv[(size_t)t * (c.fused ? stride : krow) + (size_t)h * D + i];
                }
                snprintf(nm, sizeof nm, "%s: cache head %d slot %d", name, h, sl);
                compare(nm, gc, rc, (size_t)D * 2, tol);
            }
        CHECK_MSG(bad_other == 0, "%s: %zu cache elements outside the written slots changed", name, bad_other);
        free(gq); free(gk); free(gb); free(hkc); free(hvc); free(gc); free(rc); free(written);
    }
    if (c.fused) {
        lmx_cuda_free(dfb);
        free(fb);
    } else {
        lmx_cuda_free(dq); lmx_cuda_free(dk); lmx_cuda_free(dv);
        free(hq); free(hk); free(hv);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dinv); lmx_cuda_free(dqn); lmx_cuda_free(dkn);
    lmx_cuda_free(dpos);
    free(inv); free(qn); free(kn); free(rq); free(rk); free(tmp);
}

static void test_rope_qk_store(void) {
    const int32_t p1[1] = {4711}, p3[3] = {6, 7, 8}, p4[4] = {0, 1, 2, 3}, pw[5] = {27, 28, 29, 30, 31};
    const int32_t p1b[1] = {31999};
    /* Llama-3-8B decode step, every cache dtype; GQA 32/8, head_dim 128 */
    for (int dt = 0; dt <= 2; dt++)
        run_rope_qk((qkr_case){1, 32, 8, 128, 128, 8192, p1, 0, dt, 0, 1.0f});
    /* qwen3-style per-head norm (w), gemma3-style (1 + w, head_dim 256), fused q|k|v views */
    run_rope_qk((qkr_case){1, 16, 8, 128, 128, 5000, p1, 1, 2, 1, 1.0f});
    run_rope_qk((qkr_case){1, 8, 4, 256, 256, 4096, p1b, 2, 0, 0, 1.0f}); /* ring slot 31999 % 4096 */
    /* phi3 partial rotary (rot 48 of 96) with a longrope-style mscale; MHA; T > 1 */
    run_rope_qk((qkr_case){4, 4, 4, 96, 48, 64, p4, 0, 0, 0, 1.19f});
    run_rope_qk((qkr_case){3, 6, 2, 48, 24, 16, p3, 1, 1, 1, 1.0f});
    /* a ring: positions beyond the capacity, 5 rows into 5 slots (window-style cache) */
    run_rope_qk((qkr_case){5, 4, 1, 64, 64, 5, pw, 2, 2, 1, 1.0f});
    run_rope_qk((qkr_case){3, 2, 1, 16, 16, 4, p3, 0, 0, 0, 1.0f});
    /* odd head_dim (not a multiple of 32), no rotation */
    run_rope_qk((qkr_case){2, 3, 1, 40, 0, 9, p3, 1, 0, 0, 1.0f});
    /* argument checks */
    lmx_cuda_attn a = {.n_heads = 2, .n_kv_heads = 1, .head_dim = 16, .capacity = 4, .kv_dtype = LMX_DTYPE_F32};
    lmx_cuda_qk_rope r = {.rot_dims = 17, .mscale = 1.0f};
    float *d = dev_poisoned(4096);
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    r.rot_dims = 16; /* rotation without a table */
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    r.inv_freq = d;
    r.q_norm = d; /* q_norm without k_norm */
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    r.q_norm = NULL;
    r.q_stride = 8; /* below a row of 32 */
    CHECK(lmx_cuda_rope_qk_store(&a, &r, d, d, d, d, d, (const int32_t *)d, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    lmx_cuda_free(d);
}

/* ---- attention ---- */
/* Attention-sink logits [heads] (gpt-oss) for a case with sinks: random in [-3, 3], and head 1 at 30,
 * above every score (the sink then takes nearly all the weight: the output shrinks towards 0). */
static float *make_sinks(int heads) {
    float *s = randv((size_t)heads, 3.0f);
    if (heads > 1) s[1] = 30.0f;
    return s;
}
/* folds a sink into a reference row's max before the exponentials (den then gains exp(sink - mx)) */
static double sink_max(const float *sinks, int h, double mx) { return sinks && sinks[h] > mx ? sinks[h] : mx; }
static double sink_den(const float *sinks, int h, double mx) { return sinks ? exp(sinks[h] - mx) : 0.0; }

/* cap: cache capacity (0: L + 17); cap < L is a ring holding the last cap positions (slot j % cap) */
typedef struct { int heads, kv, hd, T; int64_t L; int dt, window; float softcap; int64_t cap; } attn_case;

/* with_sinks: with attention-sink logits */
static void run_attention(attn_case c, bool with_sinks) {
    char name[128];
    snprintf(name, sizeof name, "attention h%d kv%d hd%d T%d L%lld dt%d win%d softcap%g cap%lld%s", c.heads, c.kv,
             c.hd, c.T, (long long)c.L, c.dt, c.window, (double)c.softcap, (long long)c.cap, with_sinks ? " sinks" : "");
    const int64_t cap = c.cap > 0 ? c.cap : c.L + 17;
    const int64_t first = c.L > cap ? c.L - cap : 0; /* positions the ring still holds: first..L-1 */
    float *sinks = with_sinks ? make_sinks(c.heads) : NULL;
    float *dsinks = sinks ? dev_upload(sinks, sizeof(float) * c.heads) : NULL;
    lmx_cuda_attn a = {.n_heads = c.heads, .n_kv_heads = c.kv, .head_dim = c.hd, .capacity = cap,
                       .kv_dtype = (lmx_dtype)c.dt, .scale = 1.0f / sqrtf((float)c.hd), .softcap = c.softcap, .window = c.window,
                       .sinks = dsinks};
    size_t kvn = (size_t)c.L * c.kv * c.hd;            /* [L, kv, hd] as the store takes it */
    float *k = randv(kvn, 2.0f), *v = randv(kvn, 1.0f);
    int32_t *allpos = malloc(sizeof(int32_t) * c.L);
    for (int64_t i = 0; i < c.L; i++) allpos[i] = (int32_t)i;
    /* values as the cache stores them */
    float *kr = malloc(sizeof(float) * kvn), *vr = malloc(sizeof(float) * kvn);
    float tmp[1];
    for (size_t i = 0; i < kvn; i++) {
        kr[i] = c.dt == 0 ? k[i] : tu_store(tmp, 0, c.dt, k[i]);
        vr[i] = c.dt == 0 ? v[i] : tu_store(tmp, 0, c.dt, v[i]);
    }
    size_t cache_bytes = (size_t)c.kv * cap * c.hd * tu_dsize(c.dt);
    void *dkc = dev_poisoned(cache_bytes), *dvc = dev_poisoned(cache_bytes);
    float *dk = dev_upload(k, sizeof(float) * kvn), *dv = dev_upload(v, sizeof(float) * kvn);
    int32_t *dall = dev_upload(allpos, sizeof(int32_t) * c.L);
    /* store the positions the cache holds (a ring keeps the last cap: storing all would race) */
    OKS(lmx_cuda_kv_store(&a, dk + (size_t)first * c.kv * c.hd, dv + (size_t)first * c.kv * c.hd, dkc, dvc,
                          dall + first, (int)(c.L - first), NULL));
    /* queries at the last T positions */
    size_t qn = (size_t)c.T * c.heads * c.hd;
    float *q = randv(qn, 1.5f);
    int32_t *qpos = malloc(sizeof(int32_t) * c.T);
    for (int t = 0; t < c.T; t++) qpos[t] = (int32_t)(c.L - c.T + t);
    double *ref = malloc(sizeof(double) * qn);
    double *sc = malloc(sizeof(double) * c.L);
    for (int t = 0; t < c.T; t++)
        for (int h = 0; h < c.heads; h++) {
            int g = h / (c.heads / c.kv);
            int64_t pos = qpos[t], lo = c.window > 0 ? pos - c.window + 1 : 0;
            if (lo < 0) lo = 0;
            double mx = -INFINITY;
            for (int64_t j = lo; j <= pos; j++) {
                double d = 0;
                for (int i = 0; i < c.hd; i++) d += (double)q[((size_t)t * c.heads + h) * c.hd + i] * kr[((size_t)j * c.kv + g) * c.hd + i];
                d *= 1.0 / sqrt((double)c.hd);
                if (c.softcap > 0) d = c.softcap * tanh(d / c.softcap);
                sc[j] = d;
                if (d > mx) mx = d;
            }
            mx = sink_max(sinks, h, mx);
            double den = sink_den(sinks, h, mx);
            for (int64_t j = lo; j <= pos; j++) { sc[j] = exp(sc[j] - mx); den += sc[j]; }
            for (int i = 0; i < c.hd; i++) {
                double num = 0;
                for (int64_t j = lo; j <= pos; j++) num += sc[j] * vr[((size_t)j * c.kv + g) * c.hd + i];
                ref[((size_t)t * c.heads + h) * c.hd + i] = num / den;
            }
        }
    float *dq = dev_upload(q, sizeof(float) * qn);
    int32_t *dqpos = dev_upload(qpos, sizeof(int32_t) * c.T);
    float *dws = dev_poisoned(sizeof(float) * lmx_cuda_attention_workspace_floats(&a, c.T));
    float *dout = dev_poisoned(sizeof(float) * qn);
    OKS(lmx_cuda_attention(&a, dq, dkc, dvc, dqpos, c.T, c.L, dws, dout, NULL));
    OKS(lmx_cuda_stream_sync(NULL));
    float *y = malloc(sizeof(float) * qn);
    lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
    lmx_cuda_stream_sync(NULL);
    compare(name, y, ref, qn, 1e-5);
    /* the grouped decode kernel (fused merge): same reference; twice, so the counters were reset */
    if (lmx_cuda_attention_decode_supported(&a)) {
        size_t nc = lmx_cuda_attention_decode_counters(&a, c.T);
        int32_t *dcnt = dev_poisoned(sizeof(int32_t) * nc);
        OKS(lmx_cuda_memset(dcnt, 0, sizeof(int32_t) * nc, NULL));
        char nm2[160];
        for (int rep_i = 0; rep_i < 2; rep_i++) {
            OKS(lmx_cuda_memset(dout, 0xff, sizeof(float) * qn, NULL)); /* NaN */
            OKS(lmx_cuda_attention_decode(&a, dq, dkc, dvc, dqpos, c.T, cap, dws, dcnt, dout, NULL));
            OKS(lmx_cuda_stream_sync(NULL));
            lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
            lmx_cuda_stream_sync(NULL);
            snprintf(nm2, sizeof nm2, "grouped decode (call %d) %s", rep_i + 1, name + 10);
            compare(nm2, y, ref, qn, 1e-5);
        }
        /* other launch shapes (8 warps; one split up to 512 keys / 256 keys per split) */
        const int shapes[2][3] = {{8, 132, 512}, {8, 264, 256}};
        for (int si = 0; si < 2; si++) {
            OKS(lmx_cuda_memset(dout, 0xff, sizeof(float) * qn, NULL));
            OKS(lmx_cuda_attention_decode_ex(&a, dq, dkc, dvc, dqpos, c.T, cap, dws, dcnt, dout, shapes[si][0],
                                             shapes[si][1], shapes[si][2], NULL));
            OKS(lmx_cuda_stream_sync(NULL));
            lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
            lmx_cuda_stream_sync(NULL);
            snprintf(nm2, sizeof nm2, "grouped decode %dw/%d/%d %s", shapes[si][0], shapes[si][1], shapes[si][2],
                     name + 10);
            compare(nm2, y, ref, qn, 1e-5);
        }
        int32_t *hc = malloc(sizeof(int32_t) * nc);
        lmx_cuda_memcpy_d2h(hc, dcnt, sizeof(int32_t) * nc, NULL);
        lmx_cuda_stream_sync(NULL);
        int nz = 0;
        for (size_t i = 0; i < nc; i++) nz += hc[i] != 0;
        CHECK_MSG(nz == 0, "%s: %d split counters left non-zero", name, nz);
        free(hc);
        lmx_cuda_free(dcnt);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dk); lmx_cuda_free(dv); lmx_cuda_free(dall);
    lmx_cuda_free(dq); lmx_cuda_free(dqpos); lmx_cuda_free(dws); lmx_cuda_free(dout); lmx_cuda_free(dsinks);
    free(k); free(v); free(allpos); free(kr); free(vr); free(q); free(qpos); free(ref); free(sc); free(y); free(sinks);
}
static void test_attention(void) {
    const attn_case cases[] = {
        {32, 8, 128, 1, 1000, 2, 0, 0.f, 0},     /* Llama-3-8B decode, bf16 cache */
        {32, 8, 128, 1, 1, 2, 0, 0.f, 0},        /* first token */
        {16, 16, 64, 1, 37, 0, 0, 0.f, 0},       /* MHA, f32 cache */
        {8, 4, 256, 1, 4099, 1, 1024, 50.f, 0},  /* gemma-like: window + softcap, f16 */
        {32, 8, 128, 5, 300, 2, 0, 0.f, 0},      /* several queries (prefill tail), causal */
        {14, 2, 64, 3, 8200, 2, 4096, 0.f, 0},   /* qwen-like GQA 7, sliding */
        /* grouped decode kernel: GQA 1/2/4/8, fp32 and bf16, 1..many splits, ring wrap, window, softcap */
        {32, 8, 128, 1, 512, 2, 0, 0.f, 0},      /* Llama-3-8B decode at ctx 512 */
        {32, 8, 128, 1, 4096, 0, 0, 0.f, 0},     /* fp32 cache, 33 splits */
        {32, 8, 128, 1, 40, 0, 0, 0.f, 0},       /* one split, partial tile */
        {8, 8, 64, 2, 700, 2, 0, 30.f, 0},       /* MHA (GQA 1), 2 rows, softcap */
        {8, 4, 256, 1, 333, 0, 0, 0.f, 0},       /* GQA 2, head_dim 256 */
        {16, 2, 128, 1, 2000, 2, 0, 0.f, 0},     /* GQA 8: two head chunks per kv head */
        {12, 2, 64, 1, 1500, 0, 0, 0.f, 0},      /* GQA 6: a 4-head and a 2-head chunk */
        {32, 8, 128, 1, 1000, 2, 100, 0.f, 164}, /* sliding window 100 over a ring of 164 (wrapped) */
        {8, 2, 256, 4, 3000, 2, 512, 50.f, 515}, /* gemma-like: window 512 + softcap, ring of 515, 4 rows */
        {32, 8, 128, 1, 65, 2, 0, 0.f, 0},       /* 2 splits of 33 and 32 keys */
        {4, 2, 16, 1, 100, 2, 0, 0.f, 0},        /* generic head_dims (fixture models): 16, 48, 96, 192 */
        {6, 3, 48, 2, 300, 0, 20, 0.f, 0},
        {8, 2, 96, 1, 200, 2, 0, 10.f, 0},
        {8, 4, 192, 1, 500, 2, 0, 0.f, 0},
        {32, 8, 128, 1, 700, 1, 0, 0.f, 0},      /* f16 cache: Llama shape, GQA 2 hd 64, ring */
        {8, 4, 64, 3, 900, 1, 0, 20.f, 0},
        {32, 8, 128, 1, 1000, 1, 100, 0.f, 164},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_attention(cases[i], false);
    /* attention sinks (gpt-oss: 64 heads / 8 kv of 64, sliding window 128), split-K and grouped decode
     * with one and many splits, the merge, a ring, several rows */
    const attn_case sink_cases[] = {
        {64, 8, 64, 1, 1, 1, 0, 0.f, 0},       /* first token: the sink against one key */
        {64, 8, 64, 1, 40, 1, 0, 0.f, 0},      /* one split */
        {64, 8, 64, 1, 3000, 1, 0, 0.f, 0},    /* many splits: the sink once, in the merge */
        {64, 8, 64, 2, 1000, 1, 128, 0.f, 256}, /* sliding window 128 over a ring */
        {8, 2, 64, 3, 700, 0, 0, 0.f, 0},      /* fp32 cache, 3 rows */
    };
    for (size_t i = 0; i < sizeof sink_cases / sizeof sink_cases[0]; i++) run_attention(sink_cases[i], true);
    /* an fp16 cache saturates values past its range (finite, not inf); NaN stays NaN */
    lmx_cuda_attn a = {.n_heads = 1, .n_kv_heads = 1, .head_dim = 8, .capacity = 1, .kv_dtype = LMX_DTYPE_F16};
    const float kv8[8] = {1e6f, -1e6f, NAN, 1.0f, 65504.f, 70000.f, -0.5f, 0.f};
    const uint16_t want[8] = {0x7bff, 0xfbff, 0x7e00, 0x3c00, 0x7bff, 0x7bff, 0xb800, 0x0000};
    int32_t p0 = 0;
    float *dkv = dev_upload(kv8, sizeof kv8);
    int32_t *dp0 = dev_upload(&p0, sizeof p0);
    void *dkc = dev_poisoned(16), *dvc = dev_poisoned(16);
    OKS(lmx_cuda_kv_store(&a, dkv, dkv, dkc, dvc, dp0, 1, NULL));
    uint16_t got[8];
    lmx_cuda_memcpy_d2h(got, dkc, sizeof got, NULL);
    OKS(lmx_cuda_stream_sync(NULL));
    for (int i = 0; i < 8; i++)
        CHECK_MSG(i == 2 ? (got[i] & 0x7c00) == 0x7c00 && (got[i] & 0x3ff) : got[i] == want[i],
                  "fp16 store of %g: 0x%04x, want 0x%04x", (double)kv8[i], got[i], want[i]);
    lmx_cuda_free(dkv); lmx_cuda_free(dp0); lmx_cuda_free(dkc); lmx_cuda_free(dvc);
}

/* ---- flash (tiled prefill) attention ---- */
/* cap: cache capacity; position j lives in slot j % cap (cap < L: a ring holding the last cap
 * positions; unused slots are NaN, so a read outside the visible keys fails the comparison). */
/* dt: 0 = F32 cache (fp32 kernel, tol 1e-5), 2 = BF16 / 1 = F16 cache (tensor-core kernel; the reference
 * uses the rounded K, V and Q, so the tolerance covers P rounded to bf16: 4e-3 / fp16: 1e-3) */
typedef struct { int heads, kv, hd, T; int64_t L, cap; int window; float softcap; int dt; } fa_case;

/* with_sinks: with attention-sink logits */
static void run_flash(fa_case c, bool with_sinks) {
    char name[128];
    snprintf(name, sizeof name, "flash%s h%d kv%d hd%d T%d L%lld cap%lld win%d softcap%g%s",
             c.dt == 2 ? " bf16" : c.dt == 1 ? " f16" : "",
             c.heads, c.kv, c.hd, c.T, (long long)c.L, (long long)c.cap, c.window, (double)c.softcap,
             with_sinks ? " sinks" : "");
    float *sinks = with_sinks ? make_sinks(c.heads) : NULL;
    float *dsinks = sinks ? dev_upload(sinks, sizeof(float) * c.heads) : NULL;
    lmx_cuda_attn a = {.n_heads = c.heads, .n_kv_heads = c.kv, .head_dim = c.hd, .capacity = c.cap,
                       .kv_dtype = (lmx_dtype)c.dt, .scale = 1.0f / sqrtf((float)c.hd),
                       .softcap = c.softcap, .window = c.window, .sinks = dsinks};
    CHECK_MSG(lmx_cuda_attention_prefill_supported(&a), "%s: supported", name);
    size_t kvn = (size_t)c.L * c.kv * c.hd; /* [L, kv, hd] */
    float *k = randv(kvn, 2.0f), *v = randv(kvn, 1.0f);
    float rt[1];
    if (c.dt)
        for (size_t i = 0; i < kvn; i++) { /* the values a 16-bit cache holds */
            k[i] = tu_store(rt, 0, c.dt, k[i]);
            v[i] = tu_store(rt, 0, c.dt, v[i]);
        }
    size_t cn = (size_t)c.kv * c.cap * c.hd; /* [kv][cap][hd] */
    float *kc = malloc(sizeof(float) * cn), *vc = malloc(sizeof(float) * cn);
    for (size_t i = 0; i < cn; i++) kc[i] = vc[i] = NAN;
    for (int64_t j = c.L > c.cap ? c.L - c.cap : 0; j < c.L; j++)
        for (int g = 0; g < c.kv; g++)
            for (int i = 0; i < c.hd; i++) {
                size_t dst = ((size_t)g * c.cap + (size_t)(j % c.cap)) * c.hd + i, src = ((size_t)j * c.kv + g) * c.hd + i;
                kc[dst] = k[src];
                vc[dst] = v[src];
            }
    size_t qn = (size_t)c.T * c.heads * c.hd;
    float *q = randv(qn, 1.5f);
    if (c.dt)
        for (size_t i = 0; i < qn; i++) q[i] = tu_store(rt, 0, c.dt, q[i]); /* the kernel rounds Q likewise */
    int32_t *qpos = malloc(sizeof(int32_t) * c.T);
    for (int t = 0; t < c.T; t++) qpos[t] = (int32_t)(c.L - c.T + t);
    double *ref = malloc(sizeof(double) * qn), *sc = malloc(sizeof(double) * c.L);
    for (int t = 0; t < c.T; t++)
        for (int h = 0; h < c.heads; h++) {
            int g = h / (c.heads / c.kv);
            int64_t pos = qpos[t], lo = c.window > 0 ? pos - c.window + 1 : 0;
            if (lo < 0) lo = 0;
            double mx = -INFINITY;
            for (int64_t j = lo; j <= pos; j++) {
                double d = 0;
                for (int i = 0; i < c.hd; i++)
                    d += (double)q[((size_t)t * c.heads + h) * c.hd + i] * k[((size_t)j * c.kv + g) * c.hd + i];
                d *= 1.0 / sqrt((double)c.hd);
                if (c.softcap > 0) d = c.softcap * tanh(d / c.softcap);
                sc[j] = d;
                if (d > mx) mx = d;
            }
            mx = sink_max(sinks, h, mx);
            double den = sink_den(sinks, h, mx);
            for (int64_t j = lo; j <= pos; j++) { sc[j] = exp(sc[j] - mx); den += sc[j]; }
            for (int i = 0; i < c.hd; i++) {
                double num = 0;
                for (int64_t j = lo; j <= pos; j++) num += sc[j] * v[((size_t)j * c.kv + g) * c.hd + i];
                ref[((size_t)t * c.heads + h) * c.hd + i] = num / den;
            }
        }
    void *dkc, *dvc;
    if (c.dt) { /* 16-bit cache; unused slots NaN */
        uint16_t *kh = malloc(2 * cn), *vh = malloc(2 * cn);
        for (size_t i = 0; i < cn; i++) {
            kh[i] = c.dt == 2 ? tu_f2bf(kc[i]) : isnan(kc[i]) ? 0x7e00 : tu_f2h(kc[i]);
            vh[i] = c.dt == 2 ? tu_f2bf(vc[i]) : isnan(vc[i]) ? 0x7e00 : tu_f2h(vc[i]);
        }
        dkc = dev_upload(kh, 2 * cn);
        dvc = dev_upload(vh, 2 * cn);
        free(kh);
        free(vh);
    } else {
        dkc = dev_upload(kc, sizeof(float) * cn);
        dvc = dev_upload(vc, sizeof(float) * cn);
    }
    float *dq = dev_upload(q, sizeof(float) * qn);
    int32_t *dqpos = dev_upload(qpos, sizeof(int32_t) * c.T);
    float *dout = dev_poisoned(sizeof(float) * qn);
    float *y = malloc(sizeof(float) * qn);
    lmx_status st = lmx_cuda_attention_prefill(&a, dq, dkc, dvc, dqpos, c.T, dout, NULL);
    CHECK_MSG(st == LMX_OK, "%s: %s: %s", name, lmx_status_str(st), lmx_last_error_detail());
    if (st == LMX_OK) {
        CHECK(lmx_cuda_stream_sync(NULL) == LMX_OK);
        lmx_cuda_memcpy_d2h(y, dout, sizeof(float) * qn, NULL);
        lmx_cuda_stream_sync(NULL);
        compare(name, y, ref, qn, c.dt == 2 ? 4e-3 : c.dt == 1 ? 1e-3 : 1e-5);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dq); lmx_cuda_free(dqpos); lmx_cuda_free(dout);
    lmx_cuda_free(dsinks);
    free(k); free(v); free(kc); free(vc); free(q); free(qpos); free(ref); free(sc); free(y); free(sinks);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Llama-3-8B layer shape at T = 512 (first prefill): flash vs the split-K decode kernel per row. Prints
 * microseconds per call (mean of 20 after 3 warm-ups); checks the two agree. */
static void time_flash_vs_split(void) {
    const int H = 32, KV = 8, HD = 128, T = 512;
    lmx_cuda_attn a = {.n_heads = H, .n_kv_heads = KV, .head_dim = HD, .capacity = 4096,
                       .kv_dtype = LMX_DTYPE_F32, .scale = 1.0f / sqrtf((float)HD)};
    size_t cn = (size_t)KV * a.capacity * HD, qn = (size_t)T * H * HD;
    float *kc = randv(cn, 2.0f), *vc = randv(cn, 1.0f), *q = randv(qn, 1.5f);
    int32_t pos[512];
    for (int t = 0; t < T; t++) pos[t] = t;
    float *dkc = dev_upload(kc, sizeof(float) * cn), *dvc = dev_upload(vc, sizeof(float) * cn);
    float *dq = dev_upload(q, sizeof(float) * qn);
    int32_t *dpos = dev_upload(pos, sizeof pos);
    float *o1 = dev_poisoned(sizeof(float) * qn), *o2 = dev_poisoned(sizeof(float) * qn);
    float *ws = dev_poisoned(sizeof(float) * lmx_cuda_attention_workspace_floats(&a, T));
    double us[2] = {0, 0};
    for (int which = 0; which < 2; which++) {
        for (int it = 0; it < 23; it++) {
            if (it == 3) { lmx_cuda_stream_sync(NULL); us[which] = now_s(); }
            if (which == 0) OKS(lmx_cuda_attention_prefill(&a, dq, dkc, dvc, dpos, T, o1, NULL));
            else OKS(lmx_cuda_attention(&a, dq, dkc, dvc, dpos, T, T, ws, o2, NULL));
        }
        OKS(lmx_cuda_stream_sync(NULL));
        us[which] = (now_s() - us[which]) / 20 * 1e6;
    }
    float *y1 = malloc(sizeof(float) * qn), *y2 = malloc(sizeof(float) * qn);
    double *r = malloc(sizeof(double) * qn);
    lmx_cuda_memcpy_d2h(y1, o1, sizeof(float) * qn, NULL);
    lmx_cuda_memcpy_d2h(y2, o2, sizeof(float) * qn, NULL);
    lmx_cuda_stream_sync(NULL);
    for (size_t i = 0; i < qn; i++) r[i] = y2[i];
    compare("flash vs split-K, T 512 Llama-3-8B shape", y1, r, qn, 1e-5);
    printf("attention T=512 H=32/8 d=128 (one layer, fp32 cache): flash %.1f us, split-K per row %.1f us (%.1fx)\n",
           us[0], us[1], us[1] / us[0]);
    fprintf(stderr, "attention T=512 H=32/8 d=128 (one layer, fp32 cache): flash %.1f us, split-K per row %.1f us (%.1fx)\n",
            us[0], us[1], us[1] / us[0]);
    { /* the tensor-core kernel over the same cache in bf16 */
        lmx_cuda_attn ab = a;
        ab.kv_dtype = LMX_DTYPE_BF16;
        uint16_t *kh = malloc(2 * cn), *vh = malloc(2 * cn);
        for (size_t i = 0; i < cn; i++) {
            kh[i] = tu_f2bf(kc[i]);
            vh[i] = tu_f2bf(vc[i]);
        }
        void *dkb = dev_upload(kh, 2 * cn), *dvb = dev_upload(vh, 2 * cn);
        double tb = 0;
        for (int it = 0; it < 23; it++) {
            if (it == 3) { lmx_cuda_stream_sync(NULL); tb = now_s(); }
            OKS(lmx_cuda_attention_prefill(&ab, dq, dkb, dvb, dpos, T, o2, NULL));
        }
        OKS(lmx_cuda_stream_sync(NULL));
        tb = (now_s() - tb) / 20 * 1e6;
        lmx_cuda_memcpy_d2h(y2, o2, sizeof(float) * qn, NULL);
        lmx_cuda_stream_sync(NULL);
        for (size_t i = 0; i < qn; i++) r[i] = y1[i];
        compare("tensor-core flash (bf16 cache) vs fp32 flash, T 512", y2, r, qn, 1e-2);
        printf("attention T=512 H=32/8 d=128 (one layer): tensor-core flash, bf16 cache %.1f us (fp32 flash %.1f us, %.1fx)\n",
               tb, us[0], us[0] / tb);
        fprintf(stderr, "attention T=512 H=32/8 d=128 (one layer): tensor-core flash, bf16 cache %.1f us (fp32 flash %.1f us, %.1fx)\n",
                tb, us[0], us[0] / tb);
        lmx_cuda_free(dkb); lmx_cuda_free(dvb);
        free(kh); free(vh);
    }
    lmx_cuda_free(dkc); lmx_cuda_free(dvc); lmx_cuda_free(dq); lmx_cuda_free(dpos);
    lmx_cuda_free(o1); lmx_cuda_free(o2); lmx_cuda_free(ws);
    free(kc); free(vc); free(q); free(y1); free(y2); free(r);
}

static void test_flash_attention(void) {
    const fa_case cases[] = {
        {32, 8, 128, 37, 37, 64, 0, 0.f, 0},        /* Llama-3-8B first prefill, odd T */
        {32, 8, 128, 513, 513, 600, 0, 0.f, 0},     /* 9 query tiles, last one a single row */
        {8, 1, 64, 129, 300, 333, 0, 30.f, 0},      /* GQA 8/1, prefill after context, softcap */
        {8, 2, 256, 129, 129, 200, 50, 50.f, 0},    /* gemma-like: window < T + softcap, head_dim 256 */
        {32, 8, 128, 129, 600, 300, 100, 0.f, 0},   /* sliding window over a ring (cap >= window + T - 1) */
        {16, 16, 64, 2, 2, 2, 0, 0.f, 0},           /* MHA, T = 2, full cache */
        {4, 1, 256, 65, 1000, 1001, 0, 0.f, 0},     /* long context, 2 tiles */
        {4, 2, 16, 40, 40, 40, 8, 0.f, 0},          /* generic head_dims (fixture models): 16, 48, 96, 192 */
        {4, 2, 48, 37, 37, 50, 12, 0.f, 0},
        {6, 3, 96, 70, 90, 90, 0, 20.f, 0},
        {8, 4, 192, 65, 65, 65, 30, 0.f, 0},
        /* the same shapes over a bf16 cache: the tensor-core kernel */
        {32, 8, 128, 37, 37, 64, 0, 0.f, 2},
        {32, 8, 128, 513, 513, 600, 0, 0.f, 2},
        {8, 1, 64, 129, 300, 333, 0, 30.f, 2},
        {8, 2, 256, 129, 129, 200, 50, 50.f, 2},
        {32, 8, 128, 129, 600, 300, 100, 0.f, 2},
        {16, 16, 64, 2, 2, 2, 0, 0.f, 2},
        {4, 1, 256, 65, 1000, 1001, 0, 0.f, 2},
        {4, 2, 16, 40, 40, 40, 8, 0.f, 2},
        {4, 2, 48, 37, 37, 50, 12, 0.f, 2},
        {6, 3, 96, 70, 90, 90, 0, 20.f, 2},
        {8, 4, 192, 65, 65, 65, 30, 0.f, 2},
        {4, 2, 32, 100, 100, 100, 0, 0.f, 2},
        {16, 2, 128, 200, 200, 200, 0, 0.f, 2}, /* GQA 8 */
        {32, 8, 128, 129, 600, 300, 100, 0.f, 1}, /* f16 cache: ring + window, softcap + head_dim 256, dim 48 */
        {8, 2, 256, 129, 129, 200, 50, 50.f, 1},
        {4, 2, 48, 37, 37, 50, 12, 0.f, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_flash(cases[i], false);
    /* attention sinks (gpt-oss shapes: 64 heads / 8 kv of 64, window 128): fp32, bf16, f16 caches */
    const fa_case sink_cases[] = {
        {64, 8, 64, 129, 129, 200, 0, 0.f, 0},
        {64, 8, 64, 200, 600, 400, 128, 0.f, 0},
        {64, 8, 64, 129, 129, 200, 0, 0.f, 2},
        {64, 8, 64, 200, 600, 400, 128, 0.f, 2},
        {64, 8, 64, 65, 300, 300, 128, 0.f, 1},
    };
    for (size_t i = 0; i < sizeof sink_cases / sizeof sink_cases[0]; i++) run_flash(sink_cases[i], true);
    lmx_cuda_attn bad = {.n_heads = 8, .n_kv_heads = 2, .head_dim = 100, .capacity = 64, .kv_dtype = LMX_DTYPE_F32};
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    bad.head_dim = 272;
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    bad.head_dim = 128;
    bad.kv_dtype = LMX_DTYPE_F16;
    CHECK(lmx_cuda_attention_prefill_supported(&bad));
    bad.kv_dtype = LMX_DTYPE_BF16;
    CHECK(lmx_cuda_attention_prefill_supported(&bad));
    bad.head_dim = 100;
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    bad.kv_dtype = LMX_DTYPE_U32; /* not a float cache */
    bad.head_dim = 128;
    CHECK(!lmx_cuda_attention_prefill_supported(&bad));
    CHECK(!lmx_cuda_attention_decode_supported(&bad));
    time_flash_vs_split();
}

#endif /* LMX_HAVE_CUDA */

int main(void) {
    if (kernel_check_start()) { /* false: skipped */
#ifdef LMX_HAVE_CUDA
        RUN(test_rope_qk_store);
        RUN(test_attention);
        RUN(test_flash_attention);
#endif
    }
    return lmx_test_summary();
}
