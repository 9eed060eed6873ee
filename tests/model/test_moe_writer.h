/* test_moe_writer.h — tiny mixture-of-experts model directories for the tests (qwen3_moe, mixtral;
 * the Hub's per-expert layout or mlx-lm's stacked switch_mlp; bf16 or MLX-quantized), keeping the
 * effective float weights each tensor holds for naive references. Test-only, single-threaded. */
#ifndef LMX_TESTS_MODEL_MOE_WRITER_H
#define LMX_TESTS_MODEL_MOE_WRITER_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "formats/st_build.h"
#include "lmx_test.h"
#include "model/config.h"
#include "model/lm_internal.h"
#include "model/mlx_pack.h"
#include "util/error.h"

static uint64_t rng;
static inline double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static inline float frand(void) { return (float)(urand() * 2 - 1); }

enum { HID = 64, NH = 4, NKV = 2, HD = 16, VOCAB = 96, MAXT = 1024 };

typedef struct moe_spec {
    int family;        /* 0 qwen3_moe, 1 mixtral */
    bool stacked;      /* mlx-lm switch_mlp [E, out, in]; else the Hub's per-expert tensors */
    int qbits;         /* 0: bf16; else every matrix MLX-quantized g32 (qwen3_moe routers 8-bit g64) */
    int layers, experts, topk, inter, dense_inter;
    bool norm_topk;    /* qwen3_moe norm_topk_prob */
    int sparse_step;   /* qwen3_moe decoder_sparse_step */
    const char *mlp_only; /* qwen3_moe mlp_only_layers JSON, or NULL */
    const char *skip;  /* a tensor to leave out */
    const char *bad;   /* a matrix stored with half the rows and twice the columns */
} moe_spec;

/* The model writer keeps, for every matrix module, the effective float weights (bf16-rounded or
 * dequantized) that the reference uses. */
typedef struct mw {
    st_tensor t[MAXT];
    void *owned[4 * MAXT];
    size_t n, n_owned;
    char *eff_name[MAXT];
    float *eff[MAXT];
    size_t n_eff;
    const moe_spec *s;
} mw;

static inline void *own(mw *m, void *p) {
    m->owned[m->n_owned++] = p;
    return p;
}

static inline void add(mw *m, const char *name, const char *dtype, int ndim, const int64_t *shape, const void *data,
                size_t nbytes) {
    if (m->s->skip && !strcmp(name, m->s->skip)) return;
    st_tensor *t = &m->t[m->n++];
    t->name = own(m, strdup(name));
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    if (m->s->bad && !strcmp(name, m->s->bad) && ndim >= 2) { /* same bytes, rows halved, columns doubled */
        t->shape[ndim - 2] /= 2;
        t->shape[ndim - 1] *= 2;
    }
    t->data = data;
    t->nbytes = nbytes;
}

static inline void add_vec(mw *m, const char *name, int64_t n, float base) {
    uint16_t *v = own(m, malloc((size_t)n * 2));
    for (int64_t i = 0; i < n; i++) v[i] = lmx_f32_to_bf16(base + 0.1f * frand());
    add(m, name, "BF16", 1, &n, v, (size_t)n * 2);
}

/* A matrix module of `lead` stacked blocks (lead 0: a plain [rows, cols]) of [rows, cols], bf16 or
 * quantized (bits, gs); the effective weights [max(lead,1) * rows, cols] are recorded. */
static inline void add_mat(mw *m, const char *module, int64_t lead, int64_t rows, int64_t cols, float scale, int bits,
                    int gs) {
    const int64_t R = (lead ? lead : 1) * rows;
    float *w = malloc((size_t)(R * cols) * sizeof *w);
    float *eff = malloc((size_t)(R * cols) * sizeof *eff);
    for (int64_t i = 0; i < R * cols; i++) w[i] = scale * frand();
    int64_t shp[3];
    int nd = 0;
    if (lead) shp[nd++] = lead;
    shp[nd++] = rows;
    char name[300]; /* module names are < 256 bytes (the callers' buffers) plus a suffix */
    snprintf(name, sizeof name, "%s.weight", module);
    if (!bits) {
        uint16_t *b = own(m, malloc((size_t)(R * cols) * 2));
        for (int64_t i = 0; i < R * cols; i++) {
            b[i] = lmx_f32_to_bf16(w[i]);
            eff[i] = lmx_bf16_to_f32(b[i]);
        }
        shp[nd] = cols;
        add(m, name, "BF16", nd + 1, shp, b, (size_t)(R * cols) * 2);
    } else {
        qmat q = quantize(w, (int)R, (int)cols, bits, gs);
        own(m, q.packed);
        own(m, q.scales);
        own(m, q.biases);
        for (int64_t i = 0; i < R * cols; i++) eff[i] = (float)q.deq[i];
        free(q.deq);
        shp[nd] = cols * bits / 32;
        add(m, name, "U32", nd + 1, shp, q.packed, (size_t)(R * cols * bits / 8));
        shp[nd] = cols / gs;
        snprintf(name, sizeof name, "%s.scales", module);
        add(m, name, "F32", nd + 1, shp, q.scales, (size_t)(R * (cols / gs)) * 4);
        snprintf(name, sizeof name, "%s.biases", module);
        add(m, name, "F32", nd + 1, shp, q.biases, (size_t)(R * (cols / gs)) * 4);
    }
    free(w);
    m->eff_name[m->n_eff] = strdup(module);
    m->eff[m->n_eff++] = eff;
}

static inline const float *eff_of(const mw *m, const char *module) {
    for (size_t i = 0; i < m->n_eff; i++)
        if (!strcmp(m->eff_name[i], module)) return m->eff[i];
    return NULL;
}

static inline void mw_free(mw *m) {
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    for (size_t i = 0; i < m->n_eff; i++) {
        free(m->eff_name[i]);
        free(m->eff[i]);
    }
    m->n_owned = m->n_eff = 0;
}

static inline bool spec_sparse(const moe_spec *s, int l) {
    if (s->family == 1) return true;
    if ((l + 1) % s->sparse_step) return false;
    if (s->mlp_only) {
        char needle[16];
        snprintf(needle, sizeof needle, "%d", l);
        if (strstr(s->mlp_only, needle)) return false; /* single-digit layer lists in these tests */
    }
    return true;
}

static inline const char *blk_name(const moe_spec *s) { return s->family == 1 ? "block_sparse_moe" : "mlp"; }
static inline const char *hub_proj(const moe_spec *s, int k) {
    static const char *const q[3] = {"gate_proj", "up_proj", "down_proj"}, *const x[3] = {"w1", "w3", "w2"};
    return s->family == 1 ? x[k] : q[k];
}

/* expert e's projection k (0 gate, 1 up, 2 down) of layer l: effective weights [out, in] */
static inline const float *expert_w(const mw *m, int l, int k, int e) {
    const moe_spec *s = m->s;
    static const char *const st[3] = {"gate_proj", "up_proj", "down_proj"};
    char mod[256];
    if (s->stacked) {
        snprintf(mod, sizeof mod, "model.layers.%d.%s.switch_mlp.%s", l, blk_name(s), st[k]);
        const float *w = eff_of(m, mod);
        return w ? w + (size_t)e * s->inter * HID : NULL;
    }
    snprintf(mod, sizeof mod, "model.layers.%d.%s.experts.%d.%s", l, blk_name(s), e, hub_proj(s, k));
    return eff_of(m, mod);
}

static inline int write_moe(const char *dir, mw *m) {
    const moe_spec *s = m->s;
    const int gs = 32;
    char mod[256], cfg[4096], quant[1024] = "";
    add_mat(m, "model.embed_tokens", 0, VOCAB, HID, 1.0f, s->qbits, gs);
    add_vec(m, "model.norm.weight", HID, 1.0f);
    add_mat(m, "lm_head", 0, VOCAB, HID, 0.3f, s->qbits, gs);
    size_t qn = 0;
    for (int l = 0; l < s->layers; l++) {
        const char *an[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        const int64_t ar[] = {NH * HD, NKV * HD, NKV * HD, HID}, ac[] = {HID, HID, HID, NH * HD};
        for (int i = 0; i < 4; i++) {
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.%s", l, an[i]);
            add_mat(m, mod, 0, ar[i], ac[i], 0.25f, s->qbits, gs);
        }
        snprintf(mod, sizeof mod, "model.layers.%d.input_layernorm.weight", l);
        add_vec(m, mod, HID, 1.0f);
        snprintf(mod, sizeof mod, "model.layers.%d.post_attention_layernorm.weight", l);
        add_vec(m, mod, HID, 1.0f);
        if (s->family == 0) {
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.q_norm.weight", l);
            add_vec(m, mod, HD, 1.0f);
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.k_norm.weight", l);
            add_vec(m, mod, HD, 1.0f);
        }
        if (!spec_sparse(s, l)) {
            const char *dn[] = {"gate_proj", "up_proj", "down_proj"};
            for (int k = 0; k < 3; k++) {
                snprintf(mod, sizeof mod, "model.layers.%d.mlp.%s", l, dn[k]);
                add_mat(m, mod, 0, k == 2 ? HID : s->dense_inter, k == 2 ? s->dense_inter : HID, 0.25f, s->qbits, gs);
            }
            continue;
        }
        /* router: loud logits keep the top-k choice far from ties; qwen3_moe quantized: 8-bit g64 */
        const bool rq8 = s->qbits && s->family == 0;
        snprintf(mod, sizeof mod, "model.layers.%d.%s.gate", l, blk_name(s));
        add_mat(m, mod, 0, s->experts, HID, 1.5f, rq8 ? 8 : s->qbits, rq8 ? 64 : gs);
        if (rq8)
            qn += (size_t)snprintf(quant + qn, sizeof quant - qn, ", \"%s\": {\"group_size\": 64, \"bits\": 8}", mod);
        for (int k = 0; k < 3; k++) {
            const int64_t out = k == 2 ? HID : s->inter, in = k == 2 ? s->inter : HID;
            if (s->stacked) {
                static const char *const st[3] = {"gate_proj", "up_proj", "down_proj"};
                snprintf(mod, sizeof mod, "model.layers.%d.%s.switch_mlp.%s", l, blk_name(s), st[k]);
                add_mat(m, mod, s->experts, out, in, 0.3f, s->qbits, gs);
            } else {
                for (int e = 0; e < s->experts; e++) {
                    snprintf(mod, sizeof mod, "model.layers.%d.%s.experts.%d.%s", l, blk_name(s), e, hub_proj(s, k));
                    add_mat(m, mod, 0, out, in, 0.3f, s->qbits, gs);
                }
            }
        }
    }
    size_t len;
    uint8_t *img = st_build(m->t, m->n, "{\"format\":\"mlx\"}", &len);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = st_write_file(path, img, len);
    free(img);
    char qblk[1200] = "";
    if (s->qbits)
        snprintf(qblk, sizeof qblk,
                 ", \"quantization\": {\"group_size\": %d, \"bits\": %d, \"mode\": \"affine\"%s}", gs, s->qbits,
                 quant);
    if (s->family == 0)
        snprintf(cfg, sizeof cfg,
                 "{\"model_type\": \"qwen3_moe\", \"hidden_size\": %d, \"num_hidden_layers\": %d, "
                 "\"intermediate_size\": %d, \"moe_intermediate_size\": %d, \"num_experts\": %d, "
                 "\"num_experts_per_tok\": %d, \"norm_topk_prob\": %s, \"decoder_sparse_step\": %d, "
                 "\"mlp_only_layers\": %s, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
                 "\"vocab_size\": %d, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0, "
                 "\"tie_word_embeddings\": false, "
                 "\"eos_token_id\": 95%s}",
                 HID, s->layers, s->dense_inter, s->inter, s->experts, s->topk, s->norm_topk ? "true" : "false",
                 s->sparse_step, s->mlp_only ? s->mlp_only : "[]", NH, NKV, HD, VOCAB, qblk);
    else
        snprintf(cfg, sizeof cfg,
                 "{\"model_type\": \"mixtral\", \"hidden_size\": %d, \"num_hidden_layers\": %d, "
                 "\"intermediate_size\": %d, \"num_local_experts\": %d, \"num_experts_per_tok\": %d, "
                 "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
                 "\"rms_norm_eps\": 1e-5, \"rope_theta\": 1000000.0, \"sliding_window\": null, "
                 "\"tie_word_embeddings\": false, \"eos_token_id\": 95%s}",
                 HID, s->layers, s->inter, s->experts, s->topk, NH, NKV, HD, VOCAB, qblk);
    rc |= st_write_text(dir, "config.json", cfg);
    return rc;
}

/* a written model (seeded: the same seed gives the same weights in either layout) */
typedef struct model {
    char dir[512];
    mw *m;
} model;

static inline bool model_make(model *md, const moe_spec *s, uint64_t seed) {
    rng = seed;
    md->m = calloc(1, sizeof *md->m);
    if (!md->m || !st_tmpdir(md->dir, sizeof md->dir)) return false;
    md->m->s = s;
    return write_moe(md->dir, md->m) == 0;
}

static inline void model_free(model *md) {
    if (md->m) mw_free(md->m);
    free(md->m);
    md->m = NULL;
}

static inline lmx_lm *open_lm(const char *dir, int threads) {
    lmx_lm_options o = {.n_threads = threads};
    lmx_lm *lm = NULL;
    lmx_status st = lmx_lm_open(dir, &o, &lm);
    CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
    return lm;
}

#endif
