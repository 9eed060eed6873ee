/* gpt_oss_ref.h — tiny gpt_oss model directories in mlx-lm's layout (bf16, or MXFP4 experts next to
 * affine 8-bit everything else, the mix of mlx-community's gpt-oss-*-MXFP4-Q8), and a naive double
 * precision forward pass over the effective weights, written from transformers' modeling_gpt_oss.py:
 *
 *   h = embed(ids)
 *   per layer l (sliding iff l is even, as the default layer_types):
 *     a = rmsnorm(h) · input_layernorm
 *     q, k, v = a·Wqᵀ + bq, a·Wkᵀ + bk, a·Wvᵀ + bv;  q, k = rope(q), rope(k)  (YaRN, half-split)
 *     per head: p = softmax([q·k_j / sqrt(D) for visible j] ++ [sink_h])[:-1];  o = Σ p_j v_j
 *     h += o·Woᵀ + bo
 *     m = rmsnorm(h) · post_attention_layernorm
 *     r = m·Wrᵀ + br;  top-k of r;  w = softmax over those k logits
 *     per chosen e: g = m·Wgᵀ + bg, u = m·Wuᵀ + bu, g = min(g, 7), u = clamp(u, -7, 7),
 *                   h += w_e · ((g · sigmoid(1.702 g) · (u + 1))·Wdᵀ + bd)
 *   logits = (rmsnorm(h) · norm)·Wlmᵀ
 * YaRN: transformers' _compute_yarn_parameters with truncate false (no floor/ceil of the correction
 * range), attention factor 0.1 ln(factor) + 1 on cos and sin. Test-only, single-threaded. */
#ifndef LMX_TESTS_MODEL_GPT_OSS_REF_H
#define LMX_TESTS_MODEL_GPT_OSS_REF_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/dtype.h"
#include "formats/mlx_mx.h"
#include "formats/st_build.h"
#include "model/mlx_pack.h"

enum { GO_HID = 64, GO_NH = 8, GO_NKV = 2, GO_HD = 16, GO_VOCAB = 96, GO_INTER = 32, GO_WINDOW = 5, GO_MAXT = 512 };
#define GO_THETA 150000.0
#define GO_FACTOR 4.0
#define GO_ORIG 16.0 /* original_max_position_embeddings; max_position_embeddings 64 */

typedef struct go_spec {
    int layers, experts, topk;
    bool mx;           /* MXFP4 experts + affine 8-bit g64 elsewhere; else bf16 everywhere */
    const char *skip;  /* a tensor to leave out */
    bool hub_fused;    /* write the Hub's fused mlp.experts.gate_up_proj instead of gate/up */
} go_spec;

/* The writer keeps the effective float values of every tensor it writes (bf16-rounded or
 * dequantized) under the tensor's module name. */
typedef struct go_model {
    const go_spec *s;
    char dir[512];
    st_tensor t[GO_MAXT];
    size_t n;
    void *owned[4 * GO_MAXT];
    size_t n_owned;
    char *eff_name[GO_MAXT];
    float *eff[GO_MAXT];
    size_t n_eff;
    uint64_t rng;
} go_model;

static inline float go_rand(go_model *m) {
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return (float)((double)(m->rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static inline void *go_own(go_model *m, void *p) {
    m->owned[m->n_owned++] = p;
    return p;
}

static inline void go_add(go_model *m, const char *name, const char *dtype, int ndim, const int64_t *shape,
                          const void *data, size_t nbytes) {
    if (m->s->skip && !strcmp(name, m->s->skip)) return;
    st_tensor *t = &m->t[m->n++];
    t->name = go_own(m, strdup(name));
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
}

static inline void go_keep(go_model *m, const char *name, float *eff) {
    m->eff_name[m->n_eff] = strdup(name);
    m->eff[m->n_eff++] = eff;
}

static inline const float *go_eff(const go_model *m, const char *name) {
    for (size_t i = 0; i < m->n_eff; i++)
        if (!strcmp(m->eff_name[i], name)) return m->eff[i];
    return NULL;
}

/* A bf16 tensor `name` of values base + amp * U(-1, 1), shape shp[nd]; its effective values kept under
 * `key` (NULL: the tensor's name). */
static inline void go_add_bf16(go_model *m, const char *name, const char *key, int nd, const int64_t *shp, float base,
                               float amp) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shp[i];
    uint16_t *b = go_own(m, malloc((size_t)n * 2));
    float *eff = malloc((size_t)n * sizeof *eff);
    for (int64_t i = 0; i < n; i++) {
        b[i] = lmx_f32_to_bf16(base + amp * go_rand(m));
        eff[i] = lmx_bf16_to_f32(b[i]);
    }
    go_add(m, name, "BF16", nd, shp, b, (size_t)n * 2);
    go_keep(m, key ? key : name, eff);
}

/* A matrix module of `lead` stacked blocks (0: a plain [rows, cols]) of [rows, cols]: bf16, affine
 * 8-bit g64 (q8) or mxfp4 (mx); effective weights [max(lead, 1) * rows, cols] kept under `module`. */
static inline void go_add_mat(go_model *m, const char *module, int64_t lead, int64_t rows, int64_t cols, float amp,
                              int kind /* 0 bf16, 1 q8, 2 mxfp4 */) {
    const int64_t R = (lead ? lead : 1) * rows;
    int64_t shp[3];
    int nd = 0;
    if (lead) shp[nd++] = lead;
    shp[nd++] = rows;
    char name[320];
    if (kind == 0) {
        shp[nd] = cols;
        snprintf(name, sizeof name, "%s.weight", module);
        go_add_bf16(m, name, module, nd + 1, shp, 0.0f, amp);
        return;
    }
    float *w = malloc((size_t)(R * cols) * sizeof *w), *eff = malloc((size_t)(R * cols) * sizeof *eff);
    for (int64_t i = 0; i < R * cols; i++) w[i] = amp * go_rand(m);
    snprintf(name, sizeof name, "%s.weight", module);
    if (kind == 1) {
        qmat q = quantize(w, (int)R, (int)cols, 8, 64);
        go_own(m, q.packed);
        go_own(m, q.scales);
        go_own(m, q.biases);
        for (int64_t i = 0; i < R * cols; i++) eff[i] = (float)q.deq[i];
        free(q.deq);
        shp[nd] = cols / 4;
        go_add(m, name, "U32", nd + 1, shp, q.packed, (size_t)(R * cols));
        shp[nd] = cols / 64;
        snprintf(name, sizeof name, "%s.scales", module);
        go_add(m, name, "F32", nd + 1, shp, q.scales, (size_t)(R * (cols / 64)) * 4);
        snprintf(name, sizeof name, "%s.biases", module);
        go_add(m, name, "F32", nd + 1, shp, q.biases, (size_t)(R * (cols / 64)) * 4);
    } else {
        uint8_t *codes = go_own(m, malloc((size_t)(R * cols / 2))), *sc = go_own(m, malloc((size_t)(R * cols / 32)));
        lmx_mx_quantize_matrix(w, R, cols, LMX_QUANT_MXFP4, codes, sc, 1);
        for (int64_t r = 0; r < R; r++)
            lmx_mx_dequantize_row(codes + r * cols / 2, sc + r * cols / 32, LMX_QUANT_MXFP4, 0, cols, eff + r * cols);
        shp[nd] = cols / 8;
        go_add(m, name, "U32", nd + 1, shp, codes, (size_t)(R * cols / 2));
        shp[nd] = cols / 32;
        snprintf(name, sizeof name, "%s.scales", module);
        go_add(m, name, "U8", nd + 1, shp, sc, (size_t)(R * cols / 32));
    }
    free(w);
    go_keep(m, module, eff);
}

static inline void go_free(go_model *m) {
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    for (size_t i = 0; i < m->n_eff; i++) {
        free(m->eff_name[i]);
        free(m->eff[i]);
    }
    m->n_owned = m->n_eff = m->n = 0;
}

/* Writes the model into a fresh temp dir (m->dir); seed picks the weights. 0 on success. */
static inline int go_write(go_model *m, const go_spec *s, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->s = s;
    m->rng = seed | 1;
    if (!st_tmpdir(m->dir, sizeof m->dir)) return -1;
    const int q = s->mx ? 1 : 0, E = s->experts;
    char mod[256], quant[8192] = "";
    size_t qn = 0;
#define GO_Q8(modname) /* an affine 8-bit entry (no "mode": affine, whatever the global mode) */                  \
    do {                                                                                                        \
        if (s->mx) qn += (size_t)snprintf(quant + qn, sizeof quant - qn, ", \"%s\": {\"group_size\": 64, \"bits\": 8}", \
                                          (modname));                                                          \
    } while (0)
    go_add_mat(m, "model.embed_tokens", 0, GO_VOCAB, GO_HID, 1.0f, q);
    GO_Q8("model.embed_tokens");
    int64_t shp[2] = {GO_HID, 0};
    go_add_bf16(m, "model.norm.weight", NULL, 1, shp, 1.0f, 0.1f);
    go_add_mat(m, "lm_head", 0, GO_VOCAB, GO_HID, 0.3f, q);
    GO_Q8("lm_head");
    for (int l = 0; l < s->layers; l++) {
        static const char *const an[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        const int64_t ar[4] = {GO_NH * GO_HD, GO_NKV * GO_HD, GO_NKV * GO_HD, GO_HID};
        const int64_t ac[4] = {GO_HID, GO_HID, GO_HID, GO_NH * GO_HD};
        for (int i = 0; i < 4; i++) {
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.%s", l, an[i]);
            go_add_mat(m, mod, 0, ar[i], ac[i], 0.3f, q);
            GO_Q8(mod);
            char bn[300];
            snprintf(bn, sizeof bn, "%s.bias", mod);
            shp[0] = ar[i];
            go_add_bf16(m, bn, NULL, 1, shp, 0.0f, 0.2f);
        }
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.sinks", l);
        shp[0] = GO_NH;
        go_add_bf16(m, mod, NULL, 1, shp, 0.0f, 2.5f); /* sinks in [-2.5, 2.5]: some above the scores */
        snprintf(mod, sizeof mod, "model.layers.%d.input_layernorm.weight", l);
        shp[0] = GO_HID;
        go_add_bf16(m, mod, NULL, 1, shp, 1.0f, 0.1f);
        snprintf(mod, sizeof mod, "model.layers.%d.post_attention_layernorm.weight", l);
        go_add_bf16(m, mod, NULL, 1, shp, 1.0f, 0.1f);
        /* router: loud logits keep the top-k choice away from ties */
        snprintf(mod, sizeof mod, "model.layers.%d.mlp.router", l);
        go_add_mat(m, mod, 0, E, GO_HID, 1.5f, q);
        GO_Q8(mod);
        snprintf(mod, sizeof mod, "model.layers.%d.mlp.router.bias", l);
        shp[0] = E;
        go_add_bf16(m, mod, NULL, 1, shp, 0.0f, 1.0f);
        /* experts: gate/up loud enough that both clamps of the SwiGLU act */
        static const char *const pn[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int k = 0; k < 3; k++) {
            const int64_t out = k == 2 ? GO_HID : GO_INTER, in = k == 2 ? GO_INTER : GO_HID;
            snprintf(mod, sizeof mod, "model.layers.%d.mlp.experts.%s", l, pn[k]);
            if (s->hub_fused && k == 0) {
                int64_t fs[3] = {E, GO_HID, 2 * GO_INTER};
                snprintf(mod, sizeof mod, "model.layers.%d.mlp.experts.gate_up_proj", l);
                go_add_bf16(m, mod, NULL, 3, fs, 0.0f, 0.5f);
                continue;
            }
            if (s->hub_fused && k == 1) continue;
            go_add_mat(m, mod, E, out, in, k == 2 ? 0.15f : 1.2f, s->mx ? 2 : 0);
            char bn[300];
            snprintf(bn, sizeof bn, "%s.bias", mod);
            int64_t bs[2] = {E, out};
            go_add_bf16(m, bn, NULL, 2, bs, 0.0f, k == 2 ? 0.1f : 1.0f);
        }
    }
#undef GO_Q8
    size_t len;
    uint8_t *img = st_build(m->t, m->n, "{\"format\":\"mlx\"}", &len);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", m->dir);
    int rc = img ? st_write_file(path, img, len) : -1;
    free(img);
    char layer_types[512] = "";
    size_t ln = 0;
    for (int l = 0; l < s->layers; l++)
        ln += (size_t)snprintf(layer_types + ln, sizeof layer_types - ln, "%s\"%s\"", l ? ", " : "",
                               l % 2 ? "full_attention" : "sliding_attention");
    char qblk[9000] = "";
    if (s->mx) snprintf(qblk, sizeof qblk, ", \"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"mxfp4\"%s}", quant);
    char cfg[12000];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"GptOssForCausalLM\"], \"model_type\": \"gpt_oss\", \"attention_bias\": true, "
             "\"head_dim\": %d, \"hidden_act\": \"silu\", \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"layer_types\": [%s], \"max_position_embeddings\": 64, \"num_attention_heads\": %d, "
             "\"num_experts_per_tok\": %d, \"experts_per_token\": %d, \"num_hidden_layers\": %d, "
             "\"num_key_value_heads\": %d, \"num_local_experts\": %d, \"rms_norm_eps\": 1e-05, "
             "\"rope_scaling\": {\"beta_fast\": 32.0, \"beta_slow\": 1.0, \"factor\": %g, "
             "\"original_max_position_embeddings\": %g, \"rope_type\": \"yarn\", \"truncate\": false}, "
             "\"rope_theta\": %g, \"sliding_window\": %d, \"swiglu_limit\": 7.0, \"tie_word_embeddings\": false, "
             "\"vocab_size\": %d, \"eos_token_id\": 95%s}",
             GO_HD, GO_HID, GO_INTER, layer_types, GO_NH, s->topk, s->topk, s->layers, GO_NKV, E, GO_FACTOR, GO_ORIG,
             GO_THETA, GO_WINDOW, GO_VOCAB, qblk);
    rc |= st_write_text(m->dir, "config.json", cfg);
    return rc;
}

/* ---- the naive reference ---- */

/* transformers' YaRN inverse frequencies (truncate false) for dim = GO_HD; *mscale = attention factor */
static inline void go_yarn(double *inv, double *mscale) {
    const double dim = GO_HD, base = GO_THETA;
    double lo = dim * log(GO_ORIG / (32.0 * 2 * M_PI)) / (2 * log(base));
    double hi = dim * log(GO_ORIG / (1.0 * 2 * M_PI)) / (2 * log(base));
    lo = fmax(lo, 0);
    hi = fmin(hi, dim - 1);
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < GO_HD / 2; i++) {
        const double pos_freq = pow(base, 2.0 * i / dim);
        double ramp = ((double)i - lo) / (hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        const double extrap = 1 - ramp; /* inv_freq_extrapolation_factor */
        inv[i] = 1.0 / (GO_FACTOR * pos_freq) * (1 - extrap) + 1.0 / pos_freq * extrap;
    }
    *mscale = 0.1 * log(GO_FACTOR) + 1.0;
}

/* y[rows] = W[rows, cols] x + b (b may be NULL) */
static inline void go_mv(const float *W, const float *b, const double *x, int rows, int cols, double *y) {
    for (int r = 0; r < rows; r++) {
        double a = b ? b[r] : 0;
        for (int c = 0; c < cols; c++) a += (double)W[(size_t)r * cols + c] * x[c];
        y[r] = a;
    }
}

static inline void go_rmsnorm(const double *x, const float *w, double *y) {
    double ss = 0;
    for (int i = 0; i < GO_HID; i++) ss += x[i] * x[i];
    const double inv = 1.0 / sqrt(ss / GO_HID + 1e-5);
    for (int i = 0; i < GO_HID; i++) y[i] = x[i] * inv * w[i];
}

static inline void go_rope(double *v, int pos, const double *inv, double mscale) {
    for (int i = 0; i < GO_HD / 2; i++) {
        const double a = (double)(float)((float)pos * (float)inv[i]); /* the fp32 angle lmx and torch use */
        const double c = cos(a) * mscale, s = sin(a) * mscale, x = v[i], y = v[i + GO_HD / 2];
        v[i] = x * c - y * s;
        v[i + GO_HD / 2] = y * c + x * s;
    }
}

/* Statistics of a reference run: the smallest gap between the k-th and (k+1)-th router logit, and
 * how often each clamp of the SwiGLU acted. */
typedef struct go_stats {
    double min_gap;
    int clamped_gate, clamped_up, sink_wins;
} go_stats;

/* logits [GO_VOCAB] of the last of ids[n] (n <= 64) */
static inline void go_reference(const go_model *m, const int32_t *ids, int n, double *logits, go_stats *st) {
    const go_spec *s = m->s;
    const int E = s->experts, K = s->topk, NQ = GO_NH * GO_HD, NKV = GO_NKV * GO_HD;
    st->min_gap = 1e300;
    st->clamped_gate = st->clamped_up = st->sink_wins = 0;
    double inv[GO_HD / 2], mscale;
    go_yarn(inv, &mscale);
    double(*h)[GO_HID] = calloc((size_t)n, sizeof *h);
    double(*kc)[GO_NKV * GO_HD] = calloc((size_t)n, sizeof *kc), (*vc)[GO_NKV * GO_HD] = calloc((size_t)n, sizeof *vc);
    const float *emb = go_eff(m, "model.embed_tokens");
    for (int t = 0; t < n; t++)
        for (int i = 0; i < GO_HID; i++) h[t][i] = emb[(size_t)ids[t] * GO_HID + i];
    char nm[256];
#define W(...) (snprintf(nm, sizeof nm, __VA_ARGS__), go_eff(m, nm))
    for (int l = 0; l < s->layers; l++) {
        const bool sliding = l % 2 == 0;
        double a[GO_HID];
        double(*qs)[GO_NH * GO_HD] = calloc((size_t)n, sizeof *qs);
        for (int t = 0; t < n; t++) {
            go_rmsnorm(h[t], W("model.layers.%d.input_layernorm.weight", l), a);
            go_mv(W("model.layers.%d.self_attn.q_proj", l), W("model.layers.%d.self_attn.q_proj.bias", l), a, NQ,
                  GO_HID, qs[t]);
            go_mv(W("model.layers.%d.self_attn.k_proj", l), W("model.layers.%d.self_attn.k_proj.bias", l), a, NKV,
                  GO_HID, kc[t]);
            go_mv(W("model.layers.%d.self_attn.v_proj", l), W("model.layers.%d.self_attn.v_proj.bias", l), a, NKV,
                  GO_HID, vc[t]);
            for (int hh = 0; hh < GO_NH; hh++) go_rope(qs[t] + hh * GO_HD, t, inv, mscale);
            for (int hh = 0; hh < GO_NKV; hh++) go_rope(kc[t] + hh * GO_HD, t, inv, mscale);
        }
        const float *sinks = W("model.layers.%d.self_attn.sinks", l);
        for (int t = 0; t < n; t++) {
            double att[GO_NH * GO_HD];
            const int lo = sliding && t - GO_WINDOW + 1 > 0 ? t - GO_WINDOW + 1 : 0;
            for (int hh = 0; hh < GO_NH; hh++) {
                const int kh = hh / (GO_NH / GO_NKV);
                double sc[64], mx = sinks[hh];
                for (int j = lo; j <= t; j++) {
                    double d = 0;
                    for (int i = 0; i < GO_HD; i++) d += qs[t][hh * GO_HD + i] * kc[j][kh * GO_HD + i];
                    sc[j] = d / sqrt((double)GO_HD);
                    mx = fmax(mx, sc[j]);
                }
                st->sink_wins += mx == sinks[hh];
                double den = exp(sinks[hh] - mx);
                for (int j = lo; j <= t; j++) den += sc[j] = exp(sc[j] - mx);
                for (int i = 0; i < GO_HD; i++) {
                    double o = 0;
                    for (int j = lo; j <= t; j++) o += sc[j] * vc[j][kh * GO_HD + i];
                    att[hh * GO_HD + i] = o / den;
                }
            }
            double o[GO_HID];
            go_mv(W("model.layers.%d.self_attn.o_proj", l), W("model.layers.%d.self_attn.o_proj.bias", l), att, GO_HID,
                  NQ, o);
            for (int i = 0; i < GO_HID; i++) h[t][i] += o[i];
        }
        free(qs);
        /* the sparse block */
        for (int t = 0; t < n; t++) {
            double mm[GO_HID], r[64];
            go_rmsnorm(h[t], W("model.layers.%d.post_attention_layernorm.weight", l), mm);
            go_mv(W("model.layers.%d.mlp.router", l), W("model.layers.%d.mlp.router.bias", l), mm, E, GO_HID, r);
            int idx[16];
            bool used[64] = {false};
            for (int j = 0; j < K; j++) {
                int best = -1;
                for (int e = 0; e < E; e++)
                    if (!used[e] && (best < 0 || r[e] > r[best])) best = e;
                used[best] = true;
                idx[j] = best;
            }
            double next = -1e300;
            for (int e = 0; e < E; e++)
                if (!used[e]) next = fmax(next, r[e]);
            if (K < E) st->min_gap = fmin(st->min_gap, r[idx[K - 1]] - next);
            double wsum = 0, w[16];
            for (int j = 0; j < K; j++) wsum += w[j] = exp(r[idx[j]] - r[idx[0]]); /* softmax over the k */
            for (int j = 0; j < K; j++) {
                const int e = idx[j];
                const float *Wg = W("model.layers.%d.mlp.experts.gate_proj", l) + (size_t)e * GO_INTER * GO_HID;
                const float *bg = W("model.layers.%d.mlp.experts.gate_proj.bias", l) + (size_t)e * GO_INTER;
                const float *Wu = W("model.layers.%d.mlp.experts.up_proj", l) + (size_t)e * GO_INTER * GO_HID;
                const float *bu = W("model.layers.%d.mlp.experts.up_proj.bias", l) + (size_t)e * GO_INTER;
                const float *Wd = W("model.layers.%d.mlp.experts.down_proj", l) + (size_t)e * GO_HID * GO_INTER;
                const float *bd = W("model.layers.%d.mlp.experts.down_proj.bias", l) + (size_t)e * GO_HID;
                double g[GO_INTER], u[GO_INTER], f[GO_HID];
                go_mv(Wg, bg, mm, GO_INTER, GO_HID, g);
                go_mv(Wu, bu, mm, GO_INTER, GO_HID, u);
                for (int i = 0; i < GO_INTER; i++) {
                    st->clamped_gate += g[i] > 7;
                    st->clamped_up += fabs(u[i]) > 7;
                    const double gc = fmin(g[i], 7.0), uc = fmax(-7.0, fmin(u[i], 7.0));
                    g[i] = gc / (1 + exp(-1.702 * gc)) * (uc + 1);
                }
                go_mv(Wd, bd, g, GO_HID, GO_INTER, f);
                for (int i = 0; i < GO_HID; i++) h[t][i] += w[j] / wsum * f[i];
            }
        }
    }
    double fin[GO_HID];
    go_rmsnorm(h[n - 1], go_eff(m, "model.norm.weight"), fin);
    go_mv(go_eff(m, "lm_head"), NULL, fin, GO_VOCAB, GO_HID, logits);
#undef W
    free(h);
    free(kc);
    free(vc);
}

#endif
