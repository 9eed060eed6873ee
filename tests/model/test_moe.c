/* test_moe.c — mixture-of-experts models (qwen3_moe, mixtral) on tiny models written here:
 *   - routing math of the backend op (top-k, ties, NaN, renormalised or not);
 *   - config.json: the sparse-layer schedule (decoder_sparse_step, mlp_only_layers) and refused fields;
 *   - the sparse block against a naive reference (every token through every expert, weighted by its
 *     routing weight, 0 for experts not chosen), for both layouts (Hub per-expert, mlx-lm stacked),
 *     bf16 and 4-bit stacked experts, both families;
 *   - the same weights in the two layouts give bit-identical logits;
 *   - prefill == prefix + token-by-token decode; a decode step goes through the step hooks and is one
 *     moe_gate_up and one moe_matmul per sparse layer over the k chosen experts, nothing read back;
 *   - validation errors name the tensor.
 */
#include "model/test_moe_writer.h"

/* the variants every model-level test runs on */
static const moe_spec VARIANTS[] = {
    /* qwen3_moe, Hub layout, bf16, renormalised, layer 1 dense */
    {.family = 0, .stacked = false, .qbits = 0, .layers = 3, .experts = 8, .topk = 2, .inter = 32, .dense_inter = 96,
     .norm_topk = true, .sparse_step = 1, .mlp_only = "[1]"},
    /* qwen3_moe, stacked 4-bit, not renormalised, odd expert count, top-3, sparse step 2 */
    {.family = 0, .stacked = true, .qbits = 4, .layers = 4, .experts = 5, .topk = 3, .inter = 64, .dense_inter = 64,
     .norm_topk = false, .sparse_step = 2},
    /* mixtral, Hub layout (w1/w3/w2), bf16 */
    {.family = 1, .stacked = false, .qbits = 0, .layers = 2, .experts = 4, .topk = 2, .inter = 48},
    /* mixtral, stacked 4-bit (router 4-bit too), top-1 */
    {.family = 1, .stacked = true, .qbits = 4, .layers = 2, .experts = 6, .topk = 1, .inter = 64},
};
#define N_VARIANTS (sizeof VARIANTS / sizeof VARIANTS[0])

/* ---- routing (the CPU backend's moe_route; the op tests cover more shapes) ---- */

/* logits [5] of one row -> the table's ids [k] and weights [k] */
static void route_one(lmx_backend *b, const float *lg, int E, int k, lmx_moe_rule rule, int32_t *idx, float *w) {
    lmx_buf *bl = NULL, *bt = NULL;
    CHECK(b->ops->buf_alloc(b, (size_t)E, &bl) == LMX_OK);
    CHECK(b->ops->buf_alloc(b, lmx_moe_table_floats(1, k, E), &bt) == LMX_OK);
    if (!bl || !bt) return;
    b->ops->buf_write(b, bl, 0, lg, (size_t)E);
    const lmx_moe_routing r = {.table = bt, .n_tokens = 1, .top_k = k, .n_experts = E, .rule = rule};
    CHECK(b->ops->moe_route(b, bl, &r) == LMX_OK);
    float t[2 * LMX_MOE_MAX_TOPK];
    b->ops->buf_read(b, bt, 0, t, 2 * (size_t)k);
    memcpy(w, t, (size_t)k * sizeof *w);
    memcpy(idx, t + k, (size_t)k * sizeof *idx);
    b->ops->buf_free(b, bl);
    b->ops->buf_free(b, bt);
}

static void test_route(void) {
    lmx_backend *b = NULL;
    CHECK(lmx_backend_cpu_create(1, &b) == LMX_OK);
    if (!b) return;
    const float lg[5] = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
    int32_t idx[3];
    float w[3];
    route_one(b, lg, 5, 3, LMX_MOE_TOPK_SOFTMAX, idx, w);
    CHECK_EQ_INT(idx[0], 1); /* tie between 1 and 3: the lower index first */
    CHECK_EQ_INT(idx[1], 3);
    CHECK_EQ_INT(idx[2], 2);
    const double e3 = exp(3.0), e2 = exp(2.0), all = exp(1.0) + 2 * e3 + e2 + exp(-1.0);
    CHECK_NEAR(w[0], e3 / (2 * e3 + e2), 1e-6);
    CHECK_NEAR(w[2], e2 / (2 * e3 + e2), 1e-6);
    CHECK_NEAR(w[0] + w[1] + w[2], 1.0, 1e-6);
    route_one(b, lg, 5, 3, LMX_MOE_SOFTMAX_TOPK, idx, w);
    CHECK_NEAR(w[0], e3 / all, 1e-6);
    CHECK_NEAR(w[2], e2 / all, 1e-6);
    /* k = 1 renormalised: weight 1 (mixtral top-1 = softmax over one logit) */
    route_one(b, lg, 5, 1, LMX_MOE_TOPK_SOFTMAX, idx, w);
    CHECK_EQ_INT(idx[0], 1);
    CHECK_NEAR(w[0], 1.0, 1e-7);
    /* large logits do not overflow */
    const float big[3] = {1000.0f, 999.0f, -1000.0f};
    route_one(b, big, 3, 2, LMX_MOE_SOFTMAX_TOPK, idx, w);
    CHECK_EQ_INT(idx[0], 0);
    CHECK_NEAR(w[0], 1.0 / (1.0 + exp(-1.0)), 1e-6);
    /* a NaN logit ranks below every number */
    const float nan_lg[4] = {NAN, 0.5f, -2.0f, 0.25f};
    route_one(b, nan_lg, 4, 2, LMX_MOE_TOPK_SOFTMAX, idx, w);
    CHECK_EQ_INT(idx[0], 1);
    CHECK_EQ_INT(idx[1], 3);
    lmx_backend_destroy(b);
}

/* ---- config ---- */

static lmx_status parse(const char *json, lmx_model_config **c) {
    return lmx_model_config_parse(json, strlen(json), NULL, 0, "test", c);
}

#define QWEN_BASE                                                                                               \
    "\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 4, \"intermediate_size\": 128, " \
    "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"vocab_size\": 96"

static void expect_config_error(const char *json, lmx_status want, const char *needle) {
    lmx_model_config *c = NULL;
    lmx_status st = parse(json, &c);
    CHECK_MSG(st == want, "%s: got %s (%s)", json, lmx_status_str(st), lmx_last_error_detail());
    CHECK_MSG(strstr(lmx_last_error_detail(), needle), "detail \"%s\" lacks \"%s\"", lmx_last_error_detail(), needle);
    lmx_model_config_free(c);
}

static void test_config(void) {
    lmx_model_config *c = NULL;
    CHECK(parse("{" QWEN_BASE ", \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, "
                "\"norm_topk_prob\": true, \"decoder_sparse_step\": 2, \"mlp_only_layers\": [3]}",
                &c) == LMX_OK);
    if (c) {
        CHECK_EQ_INT(c->arch, LMX_ARCH_QWEN3);
        CHECK(c->qk_norm);
        CHECK_EQ_INT(c->n_experts, 8);
        CHECK_EQ_INT(c->n_experts_per_tok, 2);
        CHECK_EQ_INT(c->moe_intermediate_size, 32);
        CHECK_EQ_INT(c->intermediate_size, 128);
        CHECK(c->moe_norm_topk);
        const bool want[4] = {false, true, false, false}; /* step 2: layers 1, 3; 3 is mlp-only */
        for (int l = 0; l < 4; l++) CHECK_MSG(c->layer_moe[l] == want[l], "layer %d", l);
    }
    lmx_model_config_free(c);
    c = NULL;
    /* transformers' defaults: norm_topk_prob false, step 1 */
    CHECK(parse("{" QWEN_BASE ", \"num_experts\": 4, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}",
                &c) == LMX_OK);
    if (c) {
        CHECK(!c->moe_norm_topk);
        for (int l = 0; l < 4; l++) CHECK(c->layer_moe[l]);
    }
    lmx_model_config_free(c);
    c = NULL;
    CHECK(parse("{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                "\"intermediate_size\": 48, "
                "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 96, \"num_local_experts\": 4, "
                "\"num_experts_per_tok\": 2, \"sliding_window\": 16}",
                &c) == LMX_OK);
    if (c) {
        CHECK_EQ_INT(c->arch, LMX_ARCH_LLAMA);
        CHECK_EQ_INT(c->n_experts, 4);
        CHECK_EQ_INT(c->moe_intermediate_size, 48);
        CHECK(c->moe_norm_topk);
        CHECK(c->layer_moe[0] && c->layer_moe[1]);
        CHECK(c->layer_sliding[0] && c->layer_sliding[1]); /* mistral attention: the window on every layer */
        CHECK_EQ_INT(c->sliding_window, 16);
    }
    lmx_model_config_free(c);
    c = NULL;
    /* a dense qwen3_moe (num_experts 0) has no sparse layers */
    CHECK(parse("{" QWEN_BASE ", \"num_experts\": 0}", &c) == LMX_OK);
    if (c) CHECK(c->layer_moe == NULL);
    lmx_model_config_free(c);
    expect_config_error("{" QWEN_BASE ", \"num_experts\": 8, \"num_experts_per_tok\": 9}", LMX_ERR_INVALID_MODEL_FORMAT,
                        "num_experts_per_tok");
    expect_config_error("{" QWEN_BASE ", \"num_experts\": 8, \"shared_expert_intermediate_size\": 512}",
                        LMX_ERR_UNSUPPORTED, "shared_expert_intermediate_size");
    expect_config_error("{" QWEN_BASE ", \"num_experts\": 8, \"num_experts_per_tok\": 2, \"mlp_only_layers\": [4]}",
                        LMX_ERR_INVALID_MODEL_FORMAT, "mlp_only_layers");
    expect_config_error("{" QWEN_BASE ", \"num_experts\": 8, \"decoder_sparse_step\": 0}", LMX_ERR_INVALID_MODEL_FORMAT,
                        "decoder_sparse_step");
    expect_config_error("{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                        "\"intermediate_size\": 48, \"num_attention_heads\": 4, \"vocab_size\": 96, "
                        "\"num_local_experts\": 0}",
                        LMX_ERR_INVALID_MODEL_FORMAT, "num_local_experts");
}

/* ---- the sparse block against the naive reference ---- */

static double silu(double x) { return x / (1 + exp(-x)); }

/* y[H] += Σ_e w_e · down_e(silu(gate_e x) * up_e x) over ALL experts, w_e = 0 unless chosen; the
 * smallest gap between the k-th and (k+1)-th router logit into *gap */
static void naive_block(const mw *m, int l, const float *x, double *y, double *gap) {
    const moe_spec *s = m->s;
    const int E = s->experts, K = s->topk, I = s->inter;
    char mod[256];
    snprintf(mod, sizeof mod, "model.layers.%d.%s.gate", l, blk_name(s));
    const float *wr = eff_of(m, mod);
    double lg[16], p[16], wsel[16] = {0}, mx = -1e300, all = 0;
    for (int e = 0; e < E; e++) {
        lg[e] = 0;
        for (int j = 0; j < HID; j++) lg[e] += (double)wr[e * HID + j] * x[j];
        mx = fmax(mx, lg[e]);
    }
    for (int e = 0; e < E; e++) all += p[e] = exp(lg[e] - mx);
    bool used[16] = {false};
    double sel = 0, kth = 0;
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!used[e] && (best < 0 || lg[e] > lg[best])) best = e;
        used[best] = true;
        sel += p[best];
        kth = lg[best];
    }
    double next = -1e300;
    for (int e = 0; e < E; e++)
        if (!used[e]) next = fmax(next, lg[e]);
    if (K < E) *gap = fmin(*gap, kth - next);
    for (int e = 0; e < E; e++)
        if (used[e]) wsel[e] = p[e] / (s->family == 1 || s->norm_topk ? sel : all);
    for (int e = 0; e < E; e++) {
        const float *g = expert_w(m, l, 0, e), *u = expert_w(m, l, 1, e), *d = expert_w(m, l, 2, e);
        double h[128];
        for (int i = 0; i < I; i++) {
            double a = 0, b = 0;
            for (int j = 0; j < HID; j++) {
                a += (double)g[i * HID + j] * x[j];
                b += (double)u[i * HID + j] * x[j];
            }
            h[i] = silu(a) * b;
        }
        for (int o = 0; o < HID; o++) {
            double f = 0;
            for (int i = 0; i < I; i++) f += (double)d[o * I + i] * h[i];
            y[o] += wsel[e] * f; /* 0 for an expert not chosen */
        }
    }
}

/* be: a backend to bind to (the GPU's), or NULL for a one-thread CPU backend */
static void check_block(const moe_spec *s, uint64_t seed, lmx_backend *gpu) {
    model md = {0};
    if (!model_make(&md, s, seed)) {
        CHECK_MSG(false, "writing the model");
        model_free(&md);
        return;
    }
    lmx_lm *lm = NULL;
    if (gpu) {
        lmx_lm_options o = {.backend = gpu, .device = LMX_DEVICE_GPU};
        lmx_status st = lmx_lm_open(md.dir, &o, &lm);
        CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    } else {
        lm = open_lm(md.dir, 1);
    }
    lmx_kv *kv = NULL;
    if (lm) CHECK(lmx_kv_create_ex(lm, 32, 16, &kv) == LMX_OK);
    if (!kv) goto done;
    enum { T = 13 };
    float xn[T * HID], x0[T * HID], x1[T * HID];
    for (int i = 0; i < T * HID; i++) {
        xn[i] = frand();
        x0[i] = 0.5f * frand();
    }
    lmx_backend *be = lm->be;
    for (int l = 0; l < s->layers; l++) {
        CHECK_MSG((lm->layers[l].moe != NULL) == spec_sparse(s, l), "layer %d sparse", l);
        if (!lm->layers[l].moe) {
            CHECK(lm->layers[l].down != NULL);
            continue;
        }
        CHECK(lm->layers[l].gate == NULL && lm->layers[l].down == NULL);
        for (int TT = 1; TT <= T; TT += T - 1) { /* one row (decode) and a block of rows */
            CHECK(be->ops->buf_write(be, kv->s.xn, 0, xn, (size_t)TT * HID) == LMX_OK);
            CHECK(be->ops->buf_write(be, kv->s.x, 0, x0, (size_t)TT * HID) == LMX_OK);
            lmx_status st = lmx_moe_forward(lm, &kv->s, l, TT);
            CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
            CHECK(be->ops->buf_read(be, kv->s.x, 0, x1, (size_t)TT * HID) == LMX_OK);
            double err = 0, mx = 0, gap = 1e300;
            for (int t = 0; t < TT; t++) {
                double y[HID];
                for (int o = 0; o < HID; o++) y[o] = x0[t * HID + o];
                naive_block(md.m, l, xn + t * HID, y, &gap);
                for (int o = 0; o < HID; o++) {
                    err = fmax(err, fabs(y[o] - x1[t * HID + o]));
                    mx = fmax(mx, fabs(y[o] - x0[t * HID + o]));
                }
            }
            /* the CPU kernels may round activations (int16 per group for quantized weights): a
             * routing choice is only well defined with a clear gap */
            CHECK_MSG(gap > 1e-2, "family %d layer %d: router gap %g too small for the test", s->family, l, gap);
            CHECK_MSG(err <= 2e-3 * (1 + mx), "family %d stacked %d q%d layer %d T %d: max diff %g (block max %g)",
                      s->family, s->stacked, s->qbits, l, TT, err, mx);
            CHECK(mx > 1e-2); /* the block does something */
        }
    }
done:
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    model_free(&md);
}

static void test_block_reference(void) {
    for (size_t i = 0; i < N_VARIANTS; i++) check_block(&VARIANTS[i], 0x1234567ull + i, NULL);
}

/* the same on the GPU backend (the moe ops of cuda_backend_moe.c), where this build has one and a GPU is usable */
static void test_block_reference_gpu(void) {
    if (!lmx_gpu_available()) {
        SKIP("no usable GPU");
        return;
    }
    lmx_backend *be = NULL;
    lmx_status st = lmx_backend_create(LMX_DEVICE_GPU, 0, &be, NULL);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    if (!be) return;
    for (size_t i = 0; i < N_VARIANTS; i++) check_block(&VARIANTS[i], 0x1234567ull + i, be);
    lmx_backend_destroy(be);
}

/* ---- whole models ---- */

static bool logits_of(const char *dir, const int32_t *ids, int n, float *out) {
    lmx_lm *lm = open_lm(dir, 2);
    lmx_kv *kv = NULL;
    bool ok = lm && lmx_kv_create(lm, 64, &kv) == LMX_OK && lmx_lm_forward(lm, kv, ids, n, out) == LMX_OK;
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    return ok;
}

/* the same weights stored per expert (Hub) and stacked (mlx-lm) give bit-identical logits */
static void test_layouts_agree(void) {
    for (int fam = 0; fam < 2; fam++) {
        moe_spec hub = VARIANTS[fam == 0 ? 0 : 2], st = hub;
        st.stacked = true;
        model a = {0}, b = {0};
        bool ok = model_make(&a, &hub, 77) && model_make(&b, &st, 77);
        CHECK(ok);
        int32_t ids[9];
        for (int i = 0; i < 9; i++) ids[i] = (int32_t)((i * 29 + 3) % VOCAB);
        float la[VOCAB], lb[VOCAB];
        if (ok && logits_of(a.dir, ids, 9, la) && logits_of(b.dir, ids, 9, lb)) {
            CHECK_MSG(!memcmp(la, lb, sizeof la), "family %d: hub and stacked layouts differ", fam);
            double mx = 0;
            for (int i = 0; i < VOCAB; i++) mx = fmax(mx, fabs(la[i]));
            CHECK(mx > 0.01);
        } else {
            CHECK_MSG(false, "family %d: %s", fam, lmx_last_error_detail());
        }
        model_free(&a);
        model_free(&b);
    }
}

/* prefill of a whole prompt == prefill of a prefix + token-by-token decode */
static void test_prefill_vs_decode(void) {
    for (size_t v = 0; v < N_VARIANTS; v++) {
        model md = {0};
        CHECK(model_make(&md, &VARIANTS[v], 500 + v));
        lmx_lm *lm = open_lm(md.dir, 2);
        lmx_kv *kv = NULL;
        if (lm) CHECK(lmx_kv_create_ex(lm, 32, 4, &kv) == LMX_OK); /* chunk 4: prefill in several calls */
        if (kv) {
            enum { N = 11 };
            int32_t ids[N];
            for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 37 + 5) % VOCAB);
            float a[VOCAB], b[VOCAB];
            CHECK(lmx_lm_forward(lm, kv, ids, N, a) == LMX_OK);
            lmx_kv_reset(kv);
            CHECK(lmx_lm_forward(lm, kv, ids, 3, NULL) == LMX_OK);
            for (int i = 3; i < N; i++) CHECK(lmx_lm_forward(lm, kv, ids + i, 1, b) == LMX_OK);
            double err = 0, mx = 0;
            for (int i = 0; i < VOCAB; i++) {
                err = fmax(err, fabs(a[i] - b[i]));
                mx = fmax(mx, fabs(a[i]));
            }
            CHECK_MSG(err <= 1e-4 * (1 + mx), "variant %zu: prefill vs decode max diff %g (max |logit| %g)", v, err,
                      mx);
            CHECK(mx > 0.01);
        }
        lmx_kv_destroy(kv);
        lmx_lm_close(lm);
        model_free(&md);
    }
}

/* A decode step issues a fixed op sequence (no host readback, no loop over experts on the host): one
 * moe_gate_up and one moe_matmul per sparse layer, each over the k chosen experts' rows, the routing
 * read back here from the table. The CPU backend's ops wrapped to count. */
static const lmx_backend_ops *g_inner;
static int g_moe_calls, g_moe_experts;

/* one more expert op: the experts with rows in the table */
static void count_experts(lmx_backend *be, const lmx_moe_routing *r) {
    g_moe_calls++;
    int32_t start[LMX_MOE_MAX_EXPERTS + 1];
    const size_t S = (size_t)r->n_tokens * r->top_k;
    g_inner->buf_read(be, r->table, 4 * S, (float *)(void *)start, (size_t)r->n_experts + 1);
    for (int e = 0; e < r->n_experts; e++) g_moe_experts += start[e + 1] > start[e];
}

static lmx_status counting_moe_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, bool gather,
                                      const lmx_moe_routing *r, lmx_buf *y) {
    count_experts(be, r);
    return g_inner->moe_matmul(be, w, x, gather, r, y);
}

static lmx_status counting_moe_gate_up(lmx_backend *be, const lmx_bweight *gate, const lmx_bweight *up,
                                       const lmx_buf *x, const lmx_moe_routing *r, lmx_act_kind act, lmx_buf *h,
                                       lmx_buf *u) {
    count_experts(be, r);
    return g_inner->moe_gate_up(be, gate, up, x, r, act, h, u);
}

/* decode-step hooks over the CPU backend, whose ops run as they are issued: the step is not redone */
static int g_steps;
static lmx_status fake_step_begin(lmx_backend *be, const void *key, int variant, const lmx_step_inputs *in) {
    (void)be, (void)key, (void)variant, (void)in;
    g_steps++;
    return LMX_OK;
}
static lmx_status fake_step_end(lmx_backend *be, bool ok, bool *redo) {
    (void)be;
    *redo = !ok;
    return LMX_OK;
}

static lmx_status failing_buf_read(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n) {
    (void)be, (void)src, (void)off, (void)dst, (void)n;
    return lmx_error(LMX_ERR_INFERENCE_FAILURE, "buf_read inside the forward pass");
}

static void test_decode_active_experts(void) {
    const moe_spec *s = &VARIANTS[1]; /* qwen3_moe top-3 of 5, layers 1 and 3 sparse */
    model md = {0};
    CHECK(model_make(&md, s, 901));
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(1, &be) == LMX_OK);
    if (!be) {
        model_free(&md);
        return;
    }
    static lmx_backend_ops counting;
    g_inner = be->ops;
    counting = *be->ops;
    counting.moe_matmul = counting_moe_matmul;
    counting.moe_gate_up = counting_moe_gate_up;
    counting.step_begin = fake_step_begin; /* a sparse model's one-token steps go through the hooks */
    counting.step_end = fake_step_end;
    be->ops = &counting;
    lmx_lm_options o = {.backend = be};
    lmx_lm *lm = NULL;
    lmx_kv *kv = NULL;
    CHECK(lmx_lm_open(md.dir, &o, &lm) == LMX_OK);
    if (lm) CHECK(lmx_kv_create(lm, 16, &kv) == LMX_OK);
    if (kv) {
        int32_t ids[4] = {3, 17, 40, 88};
        CHECK(lmx_lm_forward(lm, kv, ids, 3, NULL) == LMX_OK);
        g_moe_calls = g_moe_experts = g_steps = 0;
        counting.buf_read = failing_buf_read; /* the step itself reads nothing back (no logits asked) */
        CHECK(lmx_lm_forward(lm, kv, ids + 3, 1, NULL) == LMX_OK);
        counting.buf_read = g_inner->buf_read;
        CHECK_EQ_INT(g_steps, 1);
        CHECK_EQ_INT(g_moe_calls, 2 /* sparse layers */ * 2 /* gate|up, down */);
        CHECK_EQ_INT(g_moe_experts, 2 * 2 * s->topk);
    }
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    be->ops = g_inner;
    lmx_backend_destroy(be);
    model_free(&md);
}

static void expect_open_error(const moe_spec *s, const char *needle) {
    model md = {0};
    CHECK(model_make(&md, s, 1234));
    lmx_lm *lm = NULL;
    lmx_lm_options o = {.n_threads = 1};
    lmx_status st = lmx_lm_open(md.dir, &o, &lm);
    CHECK_MSG(st == LMX_ERR_MODEL_VALIDATION_FAILED, "got %s", lmx_status_str(st));
    CHECK_MSG(strstr(lmx_last_error_detail(), needle), "detail \"%s\" lacks \"%s\"", lmx_last_error_detail(), needle);
    lmx_lm_close(lm);
    model_free(&md);
}

static void test_validation(void) {
    moe_spec s = VARIANTS[1];
    s.bad = "model.layers.1.mlp.switch_mlp.up_proj.weight";
    expect_open_error(&s, "model.layers.1.mlp.switch_mlp.up_proj.weight");
    s = VARIANTS[1];
    s.skip = "model.layers.3.mlp.switch_mlp.down_proj.biases";
    expect_open_error(&s, "model.layers.3.mlp.switch_mlp.down_proj.biases");
    s = VARIANTS[2];
    s.skip = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
    expect_open_error(&s, "model.layers.1.block_sparse_moe.experts.3.w2.weight");
    s = VARIANTS[2];
    s.skip = "model.layers.0.block_sparse_moe.gate.weight";
    expect_open_error(&s, "model.layers.0.block_sparse_moe.gate.weight");
    /* neither layout present: both names in the message */
    s = VARIANTS[0];
    s.skip = "model.layers.0.mlp.experts.0.gate_proj.weight";
    expect_open_error(&s, "switch_mlp.gate_proj.weight");
}

int main(void) {
    RUN(test_route);
    RUN(test_config);
    RUN(test_block_reference);
    RUN(test_block_reference_gpu);
    RUN(test_layouts_agree);
    RUN(test_prefill_vs_decode);
    RUN(test_decode_active_experts);
    RUN(test_validation);
    return lmx_test_summary();
}
