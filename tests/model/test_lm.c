/* test_lm.c — the language model end to end on tiny generated models (written here as real model
 * directories: config.json + model.safetensors, bf16 or MLX-quantized):
 *   - prefill of a whole prompt == prefill of a prefix + token-by-token decode (KV cache, windows);
 *   - logits are bitwise identical with 1 and 2 threads;
 *   - weight validation: missing tensor, wrong shape, packed weight without scales, bits mismatch
 *     with config.json → LMX_ERR_MODEL_VALIDATION_FAILED naming the tensor;
 *   - the CLI contracts of `lmx logits` / `lmx generate` (JSON shape, threads, EOS stop, errors).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "formats/safetensors.h"
#include "formats/st_build.h"
#include "lmx_test.h"
#include "lmx_test_cmd.h"
#include "model/lm.h"
#include "model/mlx_pack.h"
#include "util/error.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(void) { return (float)(urand() * 2 - 1); }

/* ---- a tiny model writer ---- */

typedef struct tmw {
    st_tensor t[256];
    void *owned[512];
    size_t n, n_owned;
    int quant_bits, quant_gs; /* 0 = bf16 weights */
    const char *skip;         /* tensor name to leave out */
    const char *bad;          /* tensor name to store with a wrong shape */
    const char *unscaled;     /* quantized module whose .scales/.biases are left out */
    const char *quant_extra;  /* appended inside the "quantization" block */
} tmw;

static void *own(tmw *m, void *p) {
    m->owned[m->n_owned++] = p;
    return p;
}

static void add(tmw *m, const char *name, const char *dtype, int ndim, int64_t d0, int64_t d1, const void *data,
                size_t nbytes) {
    if (m->skip && !strcmp(name, m->skip)) return;
    st_tensor *t = &m->t[m->n++];
    t->name = own(m, strdup(name));
    t->dtype = dtype;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    if (m->bad && !strcmp(name, m->bad)) {
        /* same bytes, transposed-looking shape */
        if (ndim == 2) {
            t->shape[0] = d1;
            t->shape[1] = d0;
            if (d0 == d1) t->shape[0] = d0 / 2, t->shape[1] = d1 * 2;
        } else {
            t->shape[0] = d0 / 2;
            nbytes /= 2;
        }
    }
    t->data = data;
    t->nbytes = nbytes;
}

static void add_vec(tmw *m, const char *name, int64_t n, float base) {
    uint16_t *v = own(m, malloc((size_t)n * 2));
    for (int64_t i = 0; i < n; i++) v[i] = lmx_f32_to_bf16(base + 0.1f * frand());
    add(m, name, "BF16", 1, n, 0, v, (size_t)n * 2);
}

/* a Linear/Embedding module: bf16 [rows, cols], or quantized when m->quant_bits */
static void add_lin(tmw *m, const char *module, int64_t rows, int64_t cols, float scale) {
    char name[256];
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = scale * frand();
    snprintf(name, sizeof name, "%s.weight", module);
    if (!m->quant_bits) {
        uint16_t *b = own(m, malloc((size_t)(rows * cols) * 2));
        for (int64_t i = 0; i < rows * cols; i++) b[i] = lmx_f32_to_bf16(w[i]);
        add(m, name, "BF16", 2, rows, cols, b, (size_t)(rows * cols) * 2);
    } else {
        qmat q = quantize(w, (int)rows, (int)cols, m->quant_bits, m->quant_gs);
        own(m, q.packed);
        own(m, q.scales);
        own(m, q.biases);
        free(q.deq);
        int64_t G = cols / m->quant_gs;
        add(m, name, "U32", 2, rows, cols * m->quant_bits / 32, q.packed, (size_t)(rows * cols * m->quant_bits / 8));
        if (!(m->unscaled && !strcmp(m->unscaled, module))) {
            snprintf(name, sizeof name, "%s.scales", module);
            add(m, name, "F32", 2, rows, G, q.scales, (size_t)(rows * G) * 4);
            snprintf(name, sizeof name, "%s.biases", module);
            add(m, name, "F32", 2, rows, G, q.biases, (size_t)(rows * G) * 4);
        }
    }
    free(w);
}

enum { HID = 64, LAYERS = 2, INTER = 128, NH = 4, NKV = 2, HD = 16, VOCAB = 96 };

/* family: 0 llama (untied, GQA), 1 gemma3_text (tied, sliding window 4, q/k norms, sandwich norms),
 * 2 phi3 (fused qkv/gate_up, partial rotary 0.5, untied; rope from extra_config) */
static int write_model(const char *dir, int family, tmw *m, const char *extra_config) {
    char mod[128], cfg[4096];
    add_lin(m, "model.embed_tokens", VOCAB, HID, 1.0f);
    add_vec(m, "model.norm.weight", HID, family == 1 ? 0.0f : 1.0f);
    if (family != 1) add_lin(m, "lm_head", VOCAB, HID, 0.3f);
    for (int l = 0; l < LAYERS; l++) {
        const char *names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                               "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
        const int64_t shp[][2] = {{NH * HD, HID}, {NKV * HD, HID}, {NKV * HD, HID}, {HID, NH * HD},
                                  {INTER, HID},   {INTER, HID},    {HID, INTER}};
        if (family == 2) {
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.qkv_proj", l);
            add_lin(m, mod, (NH + 2 * NKV) * HD, HID, 1.0f); /* sharp attention: rope matters */
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.o_proj", l);
            add_lin(m, mod, HID, NH * HD, 1.0f);
            snprintf(mod, sizeof mod, "model.layers.%d.mlp.gate_up_proj", l);
            add_lin(m, mod, 2 * INTER, HID, 0.25f);
            snprintf(mod, sizeof mod, "model.layers.%d.mlp.down_proj", l);
            add_lin(m, mod, HID, INTER, 0.25f);
        }
        for (int i = 0; i < 7 && family != 2; i++) {
            snprintf(mod, sizeof mod, "model.layers.%d.%s", l, names[i]);
            add_lin(m, mod, shp[i][0], shp[i][1], 0.25f);
        }
        const char *norms[] = {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                               "post_feedforward_layernorm"};
        for (int i = 0; i < (family == 1 ? 4 : 2); i++) {
            snprintf(mod, sizeof mod, "model.layers.%d.%s.weight", l, norms[i]);
            add_vec(m, mod, HID, family == 1 ? 0.0f : 1.0f);
        }
        if (family == 1) {
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.q_norm.weight", l);
            add_vec(m, mod, HD, 0.0f);
            snprintf(mod, sizeof mod, "model.layers.%d.self_attn.k_norm.weight", l);
            add_vec(m, mod, HD, 0.0f);
        }
    }
    /* an unknown extra tensor only warns; rotary inv_freq is dropped silently */
    float junk[2] = {1, 2};
    add(m, "model.layers.0.self_attn.rotary_emb.inv_freq", "F32", 1, 2, 0, junk, sizeof junk);
    size_t len;
    uint8_t *img = st_build(m->t, m->n, "{\"format\":\"mlx\"}", &len);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = st_write_file(path, img, len);
    free(img);
    char quant[512] = "";
    if (m->quant_bits)
        snprintf(quant, sizeof quant, ", \"quantization\": {\"group_size\": %d, \"bits\": %d%s}", m->quant_gs,
                 m->quant_bits, m->quant_extra ? m->quant_extra : "");
    if (family == 0)
        snprintf(cfg, sizeof cfg,
                 "{\"model_type\": \"llama\", \"hidden_size\": %d, \"num_hidden_layers\": %d, \"intermediate_size\": %d, "
                 "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d, \"rms_norm_eps\": 1e-5, "
                 "\"rope_theta\": 10000.0, \"tie_word_embeddings\": false, \"eos_token_id\": 95%s%s}",
                 HID, LAYERS, INTER, NH, NKV, VOCAB, quant, extra_config ? extra_config : "");
    else if (family == 2)
        snprintf(cfg, sizeof cfg,
                 "{\"model_type\": \"phi3\", \"hidden_size\": %d, \"num_hidden_layers\": %d, \"intermediate_size\": %d, "
                 "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d, \"rms_norm_eps\": 1e-5, "
                 "\"partial_rotary_factor\": 0.5, \"max_position_embeddings\": 64, "
                 "\"original_max_position_embeddings\": 8, \"tie_word_embeddings\": false, \"eos_token_id\": 95%s%s}",
                 HID, LAYERS, INTER, NH, NKV, VOCAB, quant, extra_config ? extra_config : "");
    else
        snprintf(cfg, sizeof cfg,
                 "{\"model_type\": \"gemma3_text\", \"hidden_size\": %d, \"num_hidden_layers\": %d, "
                 "\"intermediate_size\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
                 "\"vocab_size\": %d, \"query_pre_attn_scalar\": 16, \"sliding_window\": 4, "
                 "\"sliding_window_pattern\": 2, \"rope_theta\": 1000000.0, \"final_logit_softcapping\": 30.0, "
                 "\"eos_token_id\": 1%s%s}",
                 HID, LAYERS, INTER, NH, NKV, HD, VOCAB, quant, extra_config ? extra_config : "");
    rc |= st_write_text(dir, "config.json", cfg);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    m->n_owned = 0;
    return rc;
}

static char g_dirs[4][512];

static const char *make_model(int slot, int family, int qbits) {
    char *d = st_tmpdir(g_dirs[slot], sizeof g_dirs[slot]);
    if (!d) return NULL;
    tmw m = {0};
    m.quant_bits = qbits;
    m.quant_gs = 32;
    if (write_model(d, family, &m, NULL)) return NULL;
    return d;
}

/* ---- tests ---- */

static lmx_lm *open_lm(const char *dir, int threads) {
    lmx_lm_options o = {.n_threads = threads};
    lmx_lm *lm = NULL;
    lmx_status st = lmx_lm_open(dir, &o, &lm);
    CHECK_MSG(st == LMX_OK, "%s: %s", lmx_status_str(st), lmx_last_error_detail());
    return lm;
}

static void check_prefill_vs_decode(const char *dir) {
    lmx_lm *lm = open_lm(dir, 2);
    if (!lm) return;
    enum { N = 11 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 37 + 5) % VOCAB);
    float a[VOCAB], b[VOCAB];
    lmx_kv *kv = NULL;
    CHECK(lmx_kv_create(lm, 32, &kv) == LMX_OK);
    if (kv) CHECK(lmx_kv_bytes(kv) >= 32 * lmx_lm_kv_bytes_per_position(lm));
    CHECK_EQ_INT(lmx_lm_kv_bytes_per_position(lm), 2 * LAYERS * NKV * HD * 4);
    if (!kv) {
        lmx_lm_close(lm);
        return;
    }
    CHECK(lmx_lm_forward(lm, kv, ids, N, a) == LMX_OK);
    CHECK_EQ_INT(lmx_kv_pos(kv), N);
    lmx_kv_reset(kv);
    CHECK(lmx_lm_forward(lm, kv, ids, 3, NULL) == LMX_OK);
    for (int i = 3; i < N; i++) CHECK(lmx_lm_forward(lm, kv, ids + i, 1, b) == LMX_OK);
    double err = 0, mx = 0;
    for (int i = 0; i < VOCAB; i++) {
        err = fmax(err, fabs(a[i] - b[i]));
        mx = fmax(mx, fabs(a[i]));
    }
    CHECK_MSG(err <= 1e-5 * (1 + mx), "%s: prefill vs decode max diff %g (max |logit| %g)", dir, err, mx);
    CHECK(mx > 0.01); /* the model does something */
    /* truncate + re-run the tail reproduces the same logits */
    CHECK(lmx_kv_truncate(kv, 6) == LMX_OK);
    CHECK(lmx_lm_forward(lm, kv, ids + 6, N - 6, b) == LMX_OK);
    err = 0;
    for (int i = 0; i < VOCAB; i++) err = fmax(err, fabs(a[i] - b[i]));
    CHECK_MSG(err <= 1e-5 * (1 + mx), "truncate: %g", err);
    /* the cache is full at 32 */
    int32_t many[32] = {0};
    CHECK(lmx_lm_forward(lm, kv, many, 32, b) == LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_kv_pos(kv), N);
    int32_t bad = VOCAB;
    CHECK(lmx_lm_forward(lm, kv, &bad, 1, b) == LMX_ERR_INVALID_ARGUMENT);
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
}

/* sliding-window layers as rings (window 4 + chunk 4 - 1 = 7 slots) give the same logits as full
 * caches, through chunked prefill and decode; truncation works only while the ring holds the window */
static void test_sliding_ring(void) {
    lmx_lm *lm = open_lm(g_dirs[1], 2); /* gemma3_text, window 4, layer 0 sliding, layer 1 full */
    if (!lm) return;
    int32_t ids[30];
    for (int i = 0; i < 30; i++) ids[i] = (int32_t)((i * 17 + 2) % VOCAB);
    float a[VOCAB], b[VOCAB];
    lmx_kv *full = NULL, *ring = NULL;
    CHECK(lmx_kv_create_ex(lm, 64, 64, &full) == LMX_OK);
    CHECK(lmx_kv_create_ex(lm, 64, 4, &ring) == LMX_OK);
    if (full && ring) {
        CHECK(lmx_kv_bytes(ring) < lmx_kv_bytes(full));
        CHECK(lmx_lm_forward(lm, full, ids, 21, a) == LMX_OK);
        CHECK(lmx_lm_forward(lm, ring, ids, 21, b) == LMX_OK); /* 6 chunks of <= 4 rows */
        double err = 0, mx = 0;
        for (int i = 0; i < VOCAB; i++) {
            err = fmax(err, fabs(a[i] - b[i]));
            mx = fmax(mx, fabs(a[i]));
        }
        CHECK_MSG(err <= 1e-5 * (1 + mx), "ring prefill: %g", err);
        for (int i = 21; i < 30; i++) {
            CHECK(lmx_lm_forward(lm, full, ids + i, 1, a) == LMX_OK);
            CHECK(lmx_lm_forward(lm, ring, ids + i, 1, b) == LMX_OK);
        }
        err = 0;
        for (int i = 0; i < VOCAB; i++) err = fmax(err, fabs(a[i] - b[i]));
        CHECK_MSG(err <= 1e-5 * (1 + mx), "ring decode: %g", err);
        /* pos 30, 7 slots: positions >= 23 survive; truncating to 28 needs 24.. → ok; to 20 → not */
        CHECK_EQ_INT(lmx_kv_truncate(ring, 20), LMX_ERR_UNSUPPORTED);
        CHECK_EQ_INT(lmx_kv_pos(ring), 30);
        CHECK_EQ_INT(lmx_kv_truncate(ring, 28), LMX_OK);
        CHECK(lmx_kv_truncate(full, 28) == LMX_OK);
        CHECK(lmx_lm_forward(lm, full, ids + 28, 2, a) == LMX_OK);
        CHECK(lmx_lm_forward(lm, ring, ids + 28, 2, b) == LMX_OK);
        err = 0;
        for (int i = 0; i < VOCAB; i++) err = fmax(err, fabs(a[i] - b[i]));
        CHECK_MSG(err <= 1e-5 * (1 + mx), "ring after truncate: %g", err);
    }
    lmx_kv_destroy(full);
    lmx_kv_destroy(ring);
    lmx_lm_close(lm);
}

static void test_prefill_vs_decode(void) {
    const char *d0 = make_model(0, 0, 0), *d1 = make_model(1, 1, 0), *d2 = make_model(2, 0, 4), *d3 = make_model(3, 1, 6);
    CHECK(d0 && d1 && d2 && d3);
    if (!(d0 && d1 && d2 && d3)) return;
    check_prefill_vs_decode(d0);
    check_prefill_vs_decode(d1); /* sliding window 4 < prompt: window mask on decode and prefill */
    check_prefill_vs_decode(d2);
    check_prefill_vs_decode(d3);
}

static void test_threads_identical(void) {
    for (int s = 0; s < 4; s++) {
        lmx_lm *l1 = open_lm(g_dirs[s], 1), *l2 = open_lm(g_dirs[s], 2);
        if (!l1 || !l2) {
            lmx_lm_close(l1);
            lmx_lm_close(l2);
            return;
        }
        int32_t ids[40];
        for (int i = 0; i < 40; i++) ids[i] = (int32_t)((i * 11 + 3) % VOCAB);
        float a[VOCAB], b[VOCAB];
        lmx_kv *k1 = NULL, *k2 = NULL;
        CHECK(lmx_kv_create(l1, 64, &k1) == LMX_OK && lmx_kv_create(l2, 64, &k2) == LMX_OK);
        if (k1 && k2) {
            CHECK(lmx_lm_forward(l1, k1, ids, 40, a) == LMX_OK);
            CHECK(lmx_lm_forward(l2, k2, ids, 40, b) == LMX_OK);
            CHECK(memcmp(a, b, sizeof a) == 0);
        }
        lmx_kv_destroy(k1);
        lmx_kv_destroy(k2);
        lmx_lm_close(l1);
        lmx_lm_close(l2);
    }
}

typedef struct conc_arg {
    lmx_lm *lm;
    int seed;
    float logits[VOCAB];
    lmx_status st;
} conc_arg;

static void *conc_main(void *p) {
    conc_arg *a = p;
    int32_t ids[30];
    for (int i = 0; i < 30; i++) ids[i] = (int32_t)((i * 13 + a->seed) % VOCAB);
    lmx_kv *kv = NULL;
    a->st = lmx_kv_create(a->lm, 40, &kv);
    if (a->st == LMX_OK) a->st = lmx_lm_forward(a->lm, kv, ids, 20, NULL);
    for (int i = 20; i < 30 && a->st == LMX_OK; i++) a->st = lmx_lm_forward(a->lm, kv, ids + i, 1, a->logits);
    lmx_kv_destroy(kv);
    return NULL;
}

static void test_probe(void) {
    lmx_model_facts pi;
    CHECK(lmx_lm_probe(g_dirs[0], &pi) == LMX_OK);
    CHECK_EQ_STR(pi.info.model_type, "llama");
    CHECK_EQ_INT(pi.info.n_layers, LAYERS);
    CHECK_EQ_INT(pi.info.vocab_size, VOCAB);
    CHECK_EQ_INT(pi.info.quant_bits, 0);
    /* embed + lm_head + norms + 2 layers of (q,k,v,o,gate,up,down,2 norms) + the dropped inv_freq */
    int64_t per_layer = (int64_t)NH * HD * HID + 2LL * NKV * HD * HID + (int64_t)HID * NH * HD + 3LL * INTER * HID + 2 * HID;
    CHECK_EQ_INT(pi.info.n_params, 2LL * VOCAB * HID + HID + LAYERS * per_layer);
    CHECK_EQ_INT(pi.kv_bytes_per_token, 2 * LAYERS * NKV * HD * 4);
    CHECK_EQ_INT(pi.n_eos, 1);
    CHECK_EQ_INT(pi.eos_ids[0], 95);
    CHECK(pi.info.weight_bytes > pi.info.n_params); /* bf16 */
    CHECK(pi.state != NULL); /* the parsed config, for lmx_lm_open_config */
    lmx_model_facts pq;
    CHECK(lmx_lm_probe(g_dirs[2], &pq) == LMX_OK); /* same shapes, 4-bit */
    CHECK_EQ_INT(pq.info.quant_bits, 4);
    CHECK_EQ_INT(pq.info.group_size, 32);
    CHECK_EQ_INT(pq.info.n_params, pi.info.n_params);
    CHECK(pq.info.weight_bytes < pi.info.weight_bytes);
    lmx_model_facts_release(&pq);
    /* the probe's scratch estimate bounds what a cache with 512-row chunks really allocates */
    lmx_lm *lm = NULL;
    lmx_kv *kv = NULL;
    CHECK(lmx_lm_open(g_dirs[0], NULL, &lm) == LMX_OK);
    if (lm && lmx_kv_create_ex(lm, 600, 512, &kv) == LMX_OK) {
        const uint64_t cache = 600 * lmx_lm_kv_bytes_per_position(lm), all = lmx_kv_bytes(kv);
        CHECK(all > cache);
        CHECK_MSG(all - cache <= (uint64_t)pi.scratch_bytes && all - cache >= (uint64_t)pi.scratch_bytes / 2,
                  "kv scratch %llu vs probe estimate %llu", (unsigned long long)(all - cache),
                  (unsigned long long)pi.scratch_bytes);
    } else {
        CHECK_MSG(0, "kv create: %s", lmx_last_error_detail());
    }
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    /* the probe's config opens the model: the model takes it over */
    lmx_model_config *cfg = pi.state;
    pi.state = NULL;
    CHECK(lmx_lm_open_config(g_dirs[0], &cfg, NULL, &lm) == LMX_OK && cfg == NULL);
    if (lm) CHECK_EQ_INT(lmx_lm_vocab_size(lm), VOCAB);
    lmx_lm_close(lm);
    lmx_model_config_free(cfg);
    lmx_model_facts_release(&pi);
    CHECK_EQ_INT(lmx_lm_probe("/nonexistent/model", &pi), LMX_ERR_MODEL_NOT_FOUND);
    CHECK(pi.state == NULL);
}

/* weights read into memory instead of mapped: same logits */
static void test_no_mmap(void) {
    lmx_lm_options o = {.n_threads = 2, .no_mmap = true};
    lmx_lm *a = NULL, *b = open_lm(g_dirs[3], 2);
    CHECK(lmx_lm_open(g_dirs[3], &o, &a) == LMX_OK);
    if (a && b) {
        int32_t ids[7] = {3, 1, 4, 1, 5, 9, 2};
        float la[VOCAB], lb[VOCAB];
        lmx_kv *ka = NULL, *kb = NULL;
        CHECK(lmx_kv_create(a, 8, &ka) == LMX_OK && lmx_kv_create(b, 8, &kb) == LMX_OK);
        if (ka && kb) {
            CHECK(lmx_lm_forward(a, ka, ids, 7, la) == LMX_OK && lmx_lm_forward(b, kb, ids, 7, lb) == LMX_OK);
            CHECK(memcmp(la, lb, sizeof la) == 0);
        }
        lmx_kv_destroy(ka);
        lmx_kv_destroy(kb);
    }
    lmx_lm_close(a);
    lmx_lm_close(b);
    /* GPU is not available in this build */
    lmx_lm_options g = {.device = LMX_DEVICE_GPU};
    lmx_lm *c = NULL;
    CHECK_EQ_INT(lmx_lm_open(g_dirs[3], &g, &c), LMX_ERR_GPU_NOT_AVAILABLE);
    CHECK(c == NULL);
}

/* two threads decode on one model with their own caches: same results as one after the other */
static void test_concurrent_forward(void) {
    lmx_lm *lm = open_lm(g_dirs[2], 2);
    if (!lm) return;
    conc_arg a[2] = {{.lm = lm, .seed = 1}, {.lm = lm, .seed = 2}}, ref[2] = {{.lm = lm, .seed = 1}, {.lm = lm, .seed = 2}};
    conc_main(&ref[0]);
    conc_main(&ref[1]);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, conc_main, &a[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(a[i].st == LMX_OK && ref[i].st == LMX_OK);
        CHECK(memcmp(a[i].logits, ref[i].logits, sizeof a[i].logits) == 0);
    }
    lmx_lm_close(lm);
}

static void expect_invalid(int family, tmw m, const char *extra, const char *needle) {
    char buf[512];
    char *d = st_tmpdir(buf, sizeof buf);
    if (!d || write_model(d, family, &m, extra)) {
        CHECK(!"cannot write model");
        return;
    }
    lmx_lm *lm = NULL;
    lmx_status st = lmx_lm_open(d, NULL, &lm);
    CHECK_MSG(st == LMX_ERR_MODEL_VALIDATION_FAILED, "%s: got %s (%s)", needle, lmx_status_str(st),
              lmx_last_error_detail());
    CHECK_MSG(strstr(lmx_last_error_detail(), needle) != NULL, "detail \"%s\" lacks \"%s\"", lmx_last_error_detail(),
              needle);
    CHECK(lm == NULL);
    st_rmdir(d);
}

static void test_validation(void) {
    expect_invalid(0, (tmw){.skip = "model.layers.1.mlp.down_proj.weight"}, NULL, "model.layers.1.mlp.down_proj.weight");
    expect_invalid(0, (tmw){.bad = "model.layers.0.self_attn.k_proj.weight"}, NULL, "model.layers.0.self_attn.k_proj");
    expect_invalid(1, (tmw){.bad = "model.layers.1.self_attn.q_norm.weight"}, NULL, "q_norm");
    expect_invalid(0, (tmw){.skip = "lm_head.weight"}, NULL, "lm_head.weight");
    expect_invalid(1, (tmw){.skip = "model.layers.0.pre_feedforward_layernorm.weight"}, NULL, "pre_feedforward");
    expect_invalid(0, (tmw){.quant_bits = 4, .quant_gs = 32, .unscaled = "model.layers.0.mlp.up_proj"}, NULL,
                   "model.layers.0.mlp.up_proj");
    expect_invalid(0, (tmw){.quant_bits = 4, .quant_gs = 32, .skip = "model.embed_tokens.biases"}, NULL,
                   "model.embed_tokens.biases");
    /* config override says 8 bits, the tensors are 4-bit */
    expect_invalid(0,
                   (tmw){.quant_bits = 4, .quant_gs = 32,
                        .quant_extra = ", \"model.layers.1.mlp.up_proj\": {\"bits\": 8, \"group_size\": 32}"},
                   NULL, "model.layers.1.mlp.up_proj");
    /* config says a module is not quantized but it has scales */
    expect_invalid(0, (tmw){.quant_bits = 4, .quant_gs = 32, .quant_extra = ", \"lm_head\": false"}, NULL, "lm_head");
    expect_invalid(0, (tmw){.skip = "model.embed_tokens.weight"}, NULL, "embed_tokens");
}

/* phi3 longrope (HF semantics): the long factors apply when the call's last position + 1 exceeds
 * original_max_position_embeddings (8 here), else the short ones. Model A has short 1s and long L;
 * model B has short = long = L (same weights): they agree past 8 positions and differ below. */
static void test_phi3_longrope_switch(void) {
    char ba[512], bb[512];
    char *da = st_tmpdir(ba, sizeof ba), *db = st_tmpdir(bb, sizeof bb);
    if (!da || !db) {
        CHECK(!"tmpdir");
        return;
    }
    tmw m = {0};
    rng = 12345;
    CHECK(write_model(da, 2, &m, ", \"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [1, 1, 1, 1], "
                                 "\"long_factor\": [2, 3, 5, 9]}") == 0);
    m = (tmw){0};
    rng = 12345;
    CHECK(write_model(db, 2, &m, ", \"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [2, 3, 5, 9], "
                                 "\"long_factor\": [2, 3, 5, 9]}") == 0);
    lmx_lm *a = open_lm(da, 2), *b = open_lm(db, 2);
    if (a && b) {
        /* attention factor sqrt(1 + ln(64/8)/ln(8)) = sqrt(2) */
        CHECK_NEAR(lmx_lm_config(a)->rope.attention_factor, sqrt(2.0), 1e-12);
        int32_t ids[12];
        for (int i = 0; i < 12; i++) ids[i] = (int32_t)((i * 29 + 7) % VOCAB);
        float la[VOCAB], lb[VOCAB];
        lmx_kv *ka = NULL, *kb = NULL;
        CHECK(lmx_kv_create(a, 16, &ka) == LMX_OK && lmx_kv_create(b, 16, &kb) == LMX_OK);
        if (ka && kb) {
            CHECK(lmx_lm_forward(a, ka, ids, 10, la) == LMX_OK);
            CHECK(lmx_lm_forward(b, kb, ids, 10, lb) == LMX_OK);
            CHECK(memcmp(la, lb, sizeof la) == 0); /* both long */
            lmx_kv_reset(ka);
            lmx_kv_reset(kb);
            CHECK(lmx_lm_forward(a, ka, ids, 8, la) == LMX_OK);
            CHECK(lmx_lm_forward(b, kb, ids, 8, lb) == LMX_OK);
            double d = 0;
            for (int i = 0; i < VOCAB; i++) d = fmax(d, fabs(la[i] - lb[i]));
            CHECK_MSG(d > 1e-3, "short vs long factors gave the same logits (%g)", d); /* A short, B long */
            /* the fused projections also pass prefill vs decode below the switch */
            float lc[VOCAB];
            lmx_kv_reset(ka);
            CHECK(lmx_lm_forward(a, ka, ids, 4, NULL) == LMX_OK);
            for (int i = 4; i < 8; i++) CHECK(lmx_lm_forward(a, ka, ids + i, 1, lc) == LMX_OK);
            d = 0;
            for (int i = 0; i < VOCAB; i++) d = fmax(d, fabs(la[i] - lc[i]));
            CHECK_MSG(d < 1e-4, "phi3 prefill vs decode: %g", d);
        }
        lmx_kv_destroy(ka);
        lmx_kv_destroy(kb);
    }
    lmx_lm_close(a);
    lmx_lm_close(b);
    st_rmdir(da);
    st_rmdir(db);
}

/* ---- CLI ---- */

static int run_cli(const char *args, char *out, size_t cap) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", LMX_CLI_PATH, args);
    return lmx_test_cmd_buf(cmd, out, cap);
}

static void test_cli(void) {
    const char *d = g_dirs[0];
    char args[4096], o1[16384], o2[16384];
    snprintf(args, sizeof args, "logits %s --prompt-ids 1,2,3,4,5 --top 5 --ids 0,7,95 --threads 1", d);
    CHECK_EQ_INT(run_cli(args, o1, sizeof o1), 0);
    snprintf(args, sizeof args, "logits %s --prompt-ids 1,2,3,4,5 --top 5 --ids 0,7,95 --threads 2", d);
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 0);
    CHECK_EQ_STR(o1, o2);
    CHECK(!strncmp(o1, "{\"top\": [[", 10));
    CHECK(strstr(o1, "], \"ids\": [[0, ") != NULL);
    CHECK(strstr(o1, "[95, ") != NULL);
    /* top is sorted descending and has 5 entries */
    {
        const char *p = o1 + 9;
        double prev = INFINITY;
        int k = 0;
        for (;;) {
            int id;
            double v;
            if (sscanf(p, "[%d, %lf]", &id, &v) != 2) break;
            CHECK(v <= prev);
            prev = v;
            k++;
            p = strchr(p, ']');
            if (!p || strncmp(p, "], ", 3)) break;
            p += 3;
        }
        CHECK_EQ_INT(k, 5);
    }
    /* generate: JSON shape, determinism across thread counts */
    snprintf(args, sizeof args, "generate %s --prompt-ids 1,2,3 --max-tokens 6 --temp 0 --json --threads 1", d);
    CHECK_EQ_INT(run_cli(args, o1, sizeof o1), 0);
    snprintf(args, sizeof args, "generate %s --prompt-ids 1,2,3 --max-tokens 6 --temp 0 --json --threads 2", d);
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 0);
    /* identical up to the timings */
    char *m1 = strstr(o1, ", \"metrics\": {"), *m2 = strstr(o2, ", \"metrics\": {");
    CHECK(m1 && m2 && m1 - o1 == m2 - o2 && strncmp(o1, o2, (size_t)(m1 - o1)) == 0);
    CHECK(strstr(o1, "\"token_ids\": [") != NULL);
    CHECK(strstr(o1, "\"text\": \"\"") != NULL);
    int first = -1;
    const char *tp = strstr(o1, "\"token_ids\": [");
    if (tp) sscanf(tp + 14, "%d", &first);
    if (strstr(o1, "\"finish_reason\": \"length\"")) {
        /* 6 tokens */
        int commas = 0;
        for (const char *p = tp; p && *p != ']'; p++) commas += *p == ',';
        CHECK_EQ_INT(commas, 5);
    } else {
        CHECK(strstr(o1, "\"finish_reason\": \"stop\"") != NULL);
    }
    /* EOS: make the first greedy token the EOS id via generation_config.json → stop, no tokens */
    if (first >= 0) {
        char gen[128];
        snprintf(gen, sizeof gen, "{\"eos_token_id\": [%d]}", first);
        st_write_text(d, "generation_config.json", gen);
        snprintf(args, sizeof args, "generate %s --prompt-ids 1,2,3 --max-tokens 6 --temp 0 --json", d);
        CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 0);
        CHECK(strstr(o2, "\"token_ids\": []") != NULL);
        CHECK(strstr(o2, "\"finish_reason\": \"stop\"") != NULL);
        char path[1024];
        snprintf(path, sizeof path, "%s/generation_config.json", d);
        unlink(path);
    }
    /* plain output: ids space-separated */
    snprintf(args, sizeof args, "generate %s --prompt-ids 1,2,3 --max-tokens 3 --temp 0", d);
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 0);
    int a, b, c;
    CHECK(sscanf(o2, "%d %d %d", &a, &b, &c) == 3);
    /* errors */
    snprintf(args, sizeof args, "generate %s --prompt-ids 1,2 --max-tokens 3 --temp -0.7", d);
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 2);
    snprintf(args, sizeof args, "logits %s --prompt-ids 1,2 --device gpu", d);
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 1);
    snprintf(args, sizeof args, "logits %s --prompt-ids 1,x", d);
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 2);
    snprintf(args, sizeof args, "logits %s --prompt-ids 1,500", d);
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 1);
    snprintf(args, sizeof args, "logits %s --prompt-ids 1,2 --ids 3,500", d); /* id beyond the vocab */
    CHECK_EQ_INT(run_cli(args, o2, sizeof o2), 1);
    CHECK_EQ_INT(run_cli("logits /nonexistent/model --prompt-ids 1", o2, sizeof o2), 1);
    CHECK_EQ_INT(run_cli("logits", o2, sizeof o2), 2);
}

int main(void) {
    RUN(test_prefill_vs_decode);
    RUN(test_sliding_ring);
    RUN(test_threads_identical);
    RUN(test_concurrent_forward);
    RUN(test_no_mmap);
    RUN(test_probe);
    RUN(test_validation);
    RUN(test_phi3_longrope_switch);
    RUN(test_cli);
    for (int i = 0; i < 4; i++)
        if (g_dirs[i][0]) st_rmdir(g_dirs[i]);
    return lmx_test_summary();
}
