/* test_fused_ops.c — the fused ops of the backend seam (backend.h: matmul_add, rope_qk_store) on the
 * CPU backend, which computes them with the unfused ops' arithmetic:
 *   - every fixture model (6 families: llama, mistral, qwen2, qwen3 q/k norm, gemma3 sandwich norms and
 *     sliding rings, phi3 partial rotary and longrope; dense f32/f16/bf16, MLX 2..8 bit): the logits of
 *     the forward pass through the CPU's fused ops are bitwise identical to those through a reference
 *     backend whose matmul_add and rope_qk_store are this test's own unfused sequences (the CPU's
 *     matmul + add; the CPU's per-head rmsnorm, then RoPE and the cache store computed here on the
 *     host) (prefill, decode, ring wrap); a counting wrapper proves which ops ran, and a backend
 *     without the fused ops is refused;
 *   - rope_qk_store on views of one q|k|v buffer (offsets, row strides) == rmsnorm + this test's RoPE
 *     and cache store on packed copies, bit for bit; matmul_add == matmul + add; argument errors. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "lmx_test.h"
#include "model/lm.h"

/* ---- a wrapper backend: forwards every op to a CPU backend and counts some of them ---- */
typedef struct wrap_backend {
    lmx_backend base;
    lmx_backend *in;
    lmx_backend_ops ops;
    int out_rows; /* the reference matmul_add's output width (the model's hidden size: o and down) */
    int n_matmul_add, n_rope_qk, n_add, n_rmsnorm, n_copy;
    /* the fp32 vector weights uploaded through the wrapper (RoPE tables for the reference) */
    struct { const lmx_bweight *w; float *v; int64_t n; } vecs[256];
    int n_vecs;
} wrap_backend;

static wrap_backend *W(lmx_backend *be) { return (wrap_backend *)be; }
#define IN(be) (W(be)->in)
#define FWD(be, op, ...) IN(be)->ops->op(IN(be), __VA_ARGS__)

static void w_destroy(lmx_backend *be) { (void)be; }
static lmx_status w_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out) { return FWD(be, buf_alloc, n, out); }
static void w_buf_free(lmx_backend *be, lmx_buf *b) { FWD(be, buf_free, b); }
static lmx_status w_buf_write(lmx_backend *be, lmx_buf *d, size_t off, const float *s, size_t n) {
    return FWD(be, buf_write, d, off, s, n);
}
static lmx_status w_buf_read(lmx_backend *be, const lmx_buf *s, size_t off, float *d, size_t n) {
    return FWD(be, buf_read, s, off, d, n);
}
static lmx_status w_buf_copy(lmx_backend *be, lmx_buf *d, size_t doff, const lmx_buf *s, size_t soff, size_t n) {
    W(be)->n_copy++;
    return FWD(be, buf_copy, d, doff, s, soff, n);
}
static lmx_status w_weight_upload(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out) {
    lmx_status s = FWD(be, weight_upload, d, out);
    wrap_backend *w = W(be);
    if (s == LMX_OK && d->kind == LMX_WEIGHT_VECTOR && d->dtype == LMX_DTYPE_F32 && w->n_vecs < 256) {
        float *v = malloc(sizeof(float) * (size_t)d->cols);
        if (v) {
            memcpy(v, d->data, sizeof(float) * (size_t)d->cols);
            w->vecs[w->n_vecs].w = *out;
            w->vecs[w->n_vecs].v = v;
            w->vecs[w->n_vecs++].n = d->cols;
        }
    }
    return s;
}
/* after a model is closed: its weights are gone */
static void w_vecs_clear(wrap_backend *w) {
    for (int i = 0; i < w->n_vecs; i++) free(w->vecs[i].v);
    w->n_vecs = 0;
}
static const float *w_vec(const wrap_backend *w, const lmx_bweight *bw) {
    for (int i = 0; i < w->n_vecs; i++)
        if (w->vecs[i].w == bw) return w->vecs[i].v;
    return NULL;
}
static void w_weight_free(lmx_backend *be, lmx_bweight *w) { FWD(be, weight_free, w); }
static lmx_status w_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t off, int T, lmx_buf *y) {
    return FWD(be, matmul, w, x, off, T, y);
}
static lmx_status w_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float sc, lmx_buf *y) {
    return FWD(be, embed, w, ids, T, sc, y);
}
static lmx_status w_rmsnorm(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w,
                            float eps, bool p1) {
    W(be)->n_rmsnorm++;
    return FWD(be, rmsnorm, x, y, rows, dim, w, eps, p1);
}
static lmx_status w_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc, lmx_buf *out,
                              const lmx_attn_params *p, const int32_t *pos) {
    return FWD(be, attention, q, kc, vc, out, p, pos);
}
static lmx_status w_act_mul(lmx_backend *be, lmx_buf *g, const lmx_buf *u, size_t n, lmx_act_kind act) {
    return FWD(be, act_mul, g, u, n, act);
}
static lmx_status w_add(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n) {
    W(be)->n_add++;
    return FWD(be, add, x, y, n);
}
static lmx_status w_softcap(lmx_backend *be, lmx_buf *x, size_t n, float cap) { return FWD(be, softcap, x, n, cap); }
static lmx_status w_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t off, int T,
                               lmx_buf *y) {
    W(be)->n_matmul_add++;
    return FWD(be, matmul_add, w, x, off, T, y);
}
static lmx_status w_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc,
                                  lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos) {
    W(be)->n_rope_qk++;
    return FWD(be, rope_qk_store, q, k, v, kc, vc, p, pos);
}

/* the reference: the fused ops as the unfused sequences they stand for, over the inner primitive ops */
static lmx_status ref_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t off, int T,
                                 lmx_buf *y) {
    W(be)->n_matmul_add++;
    lmx_buf *o = NULL;
    lmx_status s = FWD(be, buf_alloc, (size_t)T * (size_t)W(be)->out_rows, &o);
    if (s == LMX_OK) s = FWD(be, matmul, w, x, off, T, o);
    if (s == LMX_OK) s = FWD(be, add, y, o, (size_t)T * (size_t)W(be)->out_rows);
    FWD(be, buf_free, o);
    return s;
}
/* RoPE on the host, x [T, H, D] (the arithmetic backend.h specifies: an fp32 angle, cos and sin in
 * double rounded to float, times mscale) */
static void ref_rope(float *x, int T, int H, int D, int rot, const float *inv, float ms, const int32_t *pos) {
    const int half = rot / 2;
    for (int t = 0; t < T; t++) {
        const float p = (float)pos[t];
        for (int h = 0; h < H; h++) {
            float *v = x + ((size_t)t * H + h) * D;
            for (int i = 0; i < half; i++) {
                const float ang = p * inv[i];
                const float c = (float)cos((double)ang) * ms, sn = (float)sin((double)ang) * ms;
                const float a = v[i], b = v[i + half];
                v[i] = a * c - b * sn;
                v[i + half] = b * c + a * sn;
            }
        }
    }
}

/* k, v rows [T, NKV, D] (host) into fp32 caches [NKV][cap][D] at slot pos % cap */
static lmx_status ref_store(lmx_backend *be, lmx_buf *kc, lmx_buf *vc, const float *k, const float *v, int T, int NKV,
                            int D, int cap, const int32_t *pos) {
    lmx_status s = LMX_OK;
    for (int t = 0; t < T && s == LMX_OK; t++)
        for (int h = 0; h < NKV && s == LMX_OK; h++) {
            const size_t dst = ((size_t)h * cap + (size_t)(pos[t] % cap)) * D, src = ((size_t)t * NKV + h) * D;
            s = be->ops->buf_write(be, kc, dst, k + src, (size_t)D);
            if (s == LMX_OK) s = be->ops->buf_write(be, vc, dst, v + src, (size_t)D);
        }
    return s;
}

static lmx_status ref_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc,
                                    lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos) {
    W(be)->n_rope_qk++;
    /* the forward pass hands packed q, k, v (offsets 0, strides 0) */
    if (p->q_off || p->k_off || p->v_off || p->q_stride || p->k_stride || p->v_stride) return LMX_ERR_UNSUPPORTED;
    const float *inv = w_vec(W(be), p->inv_freq);
    if (!inv && p->rot_dim > 0) return LMX_ERR_UNSUPPORTED;
    const int T = p->n_tokens, NH = p->n_heads, NKV = p->n_kv_heads, D = p->head_dim;
    const size_t nq = (size_t)T * NH * D, nk = (size_t)T * NKV * D;
    float *hq = malloc(sizeof(float) * nq), *hk = malloc(sizeof(float) * nk), *hv = malloc(sizeof(float) * nk);
    lmx_status s = hq && hk && hv ? LMX_OK : LMX_ERR_OUT_OF_MEMORY;
    if (s == LMX_OK && p->q_norm) s = FWD(be, rmsnorm, q, q, T * NH, D, p->q_norm, p->eps, p->norm_plus_one);
    if (s == LMX_OK && p->k_norm) s = FWD(be, rmsnorm, k, k, T * NKV, D, p->k_norm, p->eps, p->norm_plus_one);
    if (s == LMX_OK) s = FWD(be, buf_read, q, 0, hq, nq);
    if (s == LMX_OK) s = FWD(be, buf_read, k, 0, hk, nk);
    if (s == LMX_OK) s = FWD(be, buf_read, v, 0, hv, nk);
    if (s == LMX_OK) {
        ref_rope(hq, T, NH, D, p->rot_dim, inv, p->mscale, pos);
        ref_rope(hk, T, NKV, D, p->rot_dim, inv, p->mscale, pos);
        s = FWD(be, buf_write, q, 0, hq, nq);
    }
    if (s == LMX_OK) s = FWD(be, buf_write, k, 0, hk, nk);
    if (s == LMX_OK) s = ref_store(IN(be), kc, vc, hk, hv, T, NKV, D, p->capacity, pos);
    free(hq);
    free(hk);
    free(hv);
    return s;
}

/* mode FWD: matmul_add / rope_qk_store forward to the CPU's; REF: this test's unfused sequences; NONE:
 * NULL (a backend without them) */
enum { FUSED_FWD, FUSED_REF, FUSED_NONE };
static void wrap_init(wrap_backend *w, lmx_backend *cpu, int mode) {
    memset(w, 0, sizeof *w);
    w->in = cpu;
    w->ops = (lmx_backend_ops){.name = "wrap",
                               .destroy = w_destroy,
                               .buf_alloc = w_buf_alloc,
                               .buf_free = w_buf_free,
                               .buf_write = w_buf_write,
                               .buf_read = w_buf_read,
                               .buf_copy = w_buf_copy,
                               .weight_upload = w_weight_upload,
                               .weight_free = w_weight_free,
                               .matmul = w_matmul,
                               .embed = w_embed,
                               .rmsnorm = w_rmsnorm,
                               .attention = w_attention,
                               .act_mul = w_act_mul,
                               .add = w_add,
                               .softcap = w_softcap,
                               .matmul_add = mode == FUSED_FWD ? w_matmul_add
                                             : mode == FUSED_REF ? ref_matmul_add : NULL,
                               .rope_qk_store = mode == FUSED_FWD ? w_rope_qk_store
                                                : mode == FUSED_REF ? ref_rope_qk_store : NULL};
    w->base.ops = &w->ops;
}
static void wrap_zero(wrap_backend *w) {
    w->n_matmul_add = w->n_rope_qk = w->n_add = w->n_rmsnorm = w->n_copy = 0;
}

/* ---- fixture models: the CPU's fused ops == the unfused sequences, bit for bit ---- */

static void wrap_mode(wrap_backend *w, int mode) {
    w->ops.matmul_add = mode == FUSED_FWD ? w_matmul_add : ref_matmul_add;
    w->ops.rope_qk_store = mode == FUSED_FWD ? w_rope_qk_store : ref_rope_qk_store;
}

/* runs the same tokens on kv a (the CPU's fused ops) and kv b (the reference sequences) of one lm,
 * comparing the logits bytewise at every call: an 11-token prefill, 6 decode steps, a 40-token prefill
 * after a reset; then on small-chunk caches (sliding rings of window + 3 slots) a 5-token prefill and
 * 30 decode steps */
static int compare_paths(const char *name, lmx_lm *lm, wrap_backend *w) {
    const int V = lmx_lm_vocab_size(lm);
    const lmx_model_config *cfg = lmx_lm_config(lm);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    int diffs = 0, calls = 0;
    w->out_rows = cfg->hidden_size;
    for (int round = 0; round < 2 && a && b; round++) {
        const int chunk = round == 0 ? 0 : 4;
        lmx_kv *ka = NULL, *kb = NULL;
        lmx_status s = lmx_kv_create_ex(lm, 64, chunk, &ka);
        if (s == LMX_OK) s = lmx_kv_create_ex(lm, 64, chunk, &kb);
        CHECK_MSG(s == LMX_OK, "%s: kv: %s", name, lmx_last_error_detail());
        int32_t ids[40];
        for (int i = 0; i < 40; i++) ids[i] = (int32_t)((i * 7919 + 13 + round) % V);
        const int steps = round == 0 ? 8 : 31;
        for (int step = 0; s == LMX_OK && step < steps; step++) {
            int n = step == 0 ? (round == 0 ? 11 : 5) : 1;
            const int32_t *in = step == 0 ? ids : &ids[39];
            if (round == 0 && step == 7) { /* the long prefill through the blocked matmul path */
                lmx_kv_reset(ka);
                lmx_kv_reset(kb);
                n = 40;
                in = ids;
            }
            const int ck = chunk ? chunk : 128, calls_per_layer = (n + ck - 1) / ck, L = cfg->n_layers * calls_per_layer;
            const int last_rows = (n - 1) % ck + 1; /* rows of the last chunk: the head reads its last row */
            const bool gemma_like = cfg->sandwich_norms; /* the residual add stays separate there */
            for (int path = 0; path < 2 && s == LMX_OK; path++) {
                wrap_mode(w, path == 0 ? FUSED_FWD : FUSED_REF);
                wrap_zero(w);
                s = lmx_lm_forward(lm, path == 0 ? ka : kb, in, n, path == 0 ? a : b);
                CHECK_MSG(s == LMX_OK, "%s: %s forward: %s", name, path == 0 ? "fused" : "reference",
                          lmx_last_error_detail());
                if (s != LMX_OK) break;
                CHECK_MSG(w->n_rope_qk == L, "%s: %d rope_qk_store for %d layers", name, w->n_rope_qk,
                          cfg->n_layers);
                CHECK_MSG(gemma_like ? (w->n_matmul_add == 0 && w->n_add == 2 * L)
                                     : (w->n_matmul_add == 2 * L && w->n_add == 0),
                          "%s: %d matmul_add, %d add for %d layers", name, w->n_matmul_add, w->n_add, cfg->n_layers);
                CHECK_MSG(w->n_copy == (last_rows > 1 ? 1 : 0), "%s: %d buf_copy for the head (n %d)", name,
                          w->n_copy, n);
            }
            if (s != LMX_OK) break;
            calls++;
            if (memcmp(a, b, sizeof(float) * V) != 0) {
                diffs++;
                CHECK_MSG(0, "%s: round %d step %d (n %d): fused logits differ from the unfused sequences", name,
                          round, step, n);
            }
            int best = 0;
            for (int i = 1; i < V; i++)
                if (a[i] > a[best]) best = i;
            ids[39] = best;
        }
        lmx_kv_destroy(ka);
        lmx_kv_destroy(kb);
    }
    wrap_mode(w, FUSED_FWD);
    free(a);
    free(b);
    fprintf(stderr, "  %-24s %d forward calls, %d differ\n", name, calls, diffs);
    return calls;
}

static void test_fixture_models(void) {
    const char *root = LMX_SOURCE_DIR "/tests/fixtures/models";
    DIR *d = opendir(root);
    if (!d) {
        SKIP("no fixture models at %s", root);
        return;
    }
    lmx_backend *cpu = NULL;
    CHECK(lmx_backend_cpu_create(2, &cpu) == LMX_OK);
    wrap_backend w, wn;
    wrap_init(&w, cpu, FUSED_FWD);
    wrap_init(&wn, cpu, FUSED_NONE);
    struct dirent *e;
    int models = 0;
    while (cpu && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], cfg[1100];
        struct stat st;
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (stat(cfg, &st) != 0) continue;
        lmx_lm_options opt = {.device = LMX_DEVICE_CPU, .backend = &w.base};
        lmx_lm *lm = NULL;
        lmx_status s = lmx_lm_open(dir, &opt, &lm);
        CHECK_MSG(s == LMX_OK, "%s: open: %s", e->d_name, lmx_last_error_detail());
        if (s != LMX_OK) continue;
        CHECK(compare_paths(e->d_name, lm, &w) > 0);
        lmx_lm_close(lm);
        w_vecs_clear(&w);
        models++;
        if (models <= 3) { /* a backend without the fused ops: no KV cache (the forward pass needs them) */
            opt.backend = &wn.base;
            s = lmx_lm_open(dir, &opt, &lm);
            CHECK_MSG(s == LMX_OK, "%s: open: %s", e->d_name, lmx_last_error_detail());
            lmx_kv *kv = NULL;
            if (s == LMX_OK) CHECK(lmx_kv_create(lm, 16, &kv) == LMX_ERR_UNSUPPORTED && kv == NULL);
            lmx_lm_close(lm);
            w_vecs_clear(&wn);
        }
    }
    closedir(d);
    CHECK(models >= 20);
    lmx_backend_destroy(cpu);
}

/* ---- the ops directly ---- */

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static float frand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static lmx_bweight *vec_weight(lmx_backend *be, const float *v, int n) {
    lmx_weight_desc d = {.name = "vec", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = n, .dtype = LMX_DTYPE_F32, .data = v};
    lmx_bweight *w = NULL;
    CHECK(be->ops->weight_upload(be, &d, &w) == LMX_OK);
    return w;
}

static lmx_buf *buf_of(lmx_backend *be, const float *v, size_t n) {
    lmx_buf *b = NULL;
    CHECK(be->ops->buf_alloc(be, n, &b) == LMX_OK);
    if (b && v) CHECK(be->ops->buf_write(be, b, 0, v, n) == LMX_OK);
    return b;
}

/* q|k|v|pad rows of one buffer through rope_qk_store vs packed copies through rmsnorm, rope, kv_write */
static void run_rope_qk_views(lmx_backend *be, int T, int NH, int NKV, int D, int rot, int cap, int norm,
                              const int32_t *pos) {
    const lmx_backend_ops *op = be->ops;
    const size_t QR = (size_t)NH * D, KR = (size_t)NKV * D, S = QR + 2 * KR + 3;
    float *fb = malloc(sizeof(float) * T * S), *inv = malloc(sizeof(float) * (rot / 2 + 1));
    float *qn = malloc(sizeof(float) * D), *kn = malloc(sizeof(float) * D);
    for (size_t i = 0; i < (size_t)T * S; i++) fb[i] = 2 * frand();
    for (int i = 0; i < rot / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / rot);
    for (int i = 0; i < D; i++) qn[i] = frand(), kn[i] = frand();
    float *hq = malloc(sizeof(float) * T * QR), *hk = malloc(sizeof(float) * T * KR), *hv = malloc(sizeof(float) * T * KR);
    for (int t = 0; t < T; t++) {
        memcpy(hq + t * QR, fb + t * S, sizeof(float) * QR);
        memcpy(hk + t * KR, fb + t * S + QR, sizeof(float) * KR);
        memcpy(hv + t * KR, fb + t * S + QR + KR, sizeof(float) * KR);
    }
    lmx_bweight *wi = vec_weight(be, inv, rot / 2 > 0 ? rot / 2 : 1), *wq = vec_weight(be, qn, D),
                *wk = vec_weight(be, kn, D);
    const size_t C = (size_t)NKV * cap * D;
    lmx_buf *bf = buf_of(be, fb, (size_t)T * S), *bq = buf_of(be, hq, T * QR), *bk = buf_of(be, hk, T * KR),
            *bv = buf_of(be, hv, T * KR), *kc1 = buf_of(be, NULL, C), *vc1 = buf_of(be, NULL, C),
            *kc2 = buf_of(be, NULL, C), *vc2 = buf_of(be, NULL, C);
    /* the reference on packed buffers: the backend's rmsnorm, then this test's RoPE and cache store */
    if (norm) {
        CHECK(op->rmsnorm(be, bq, bq, T * NH, D, wq, 1e-6f, norm == 2) == LMX_OK);
        CHECK(op->rmsnorm(be, bk, bk, T * NKV, D, wk, 1e-6f, norm == 2) == LMX_OK);
    }
    {
        float *rq = malloc(sizeof(float) * T * QR), *rk = malloc(sizeof(float) * T * KR);
        CHECK(op->buf_read(be, bq, 0, rq, T * QR) == LMX_OK && op->buf_read(be, bk, 0, rk, T * KR) == LMX_OK);
        ref_rope(rq, T, NH, D, rot, inv, 1.1f, pos);
        ref_rope(rk, T, NKV, D, rot, inv, 1.1f, pos);
        CHECK(op->buf_write(be, bq, 0, rq, T * QR) == LMX_OK && op->buf_write(be, bk, 0, rk, T * KR) == LMX_OK);
        CHECK(ref_store(be, kc1, vc1, rk, hv, T, NKV, D, cap, pos) == LMX_OK);
        free(rq);
        free(rk);
    }
    lmx_qk_rope_params p = {.n_tokens = T, .n_heads = NH, .n_kv_heads = NKV, .head_dim = D, .rot_dim = rot,
                            .capacity = cap, .q_off = 0, .k_off = QR, .v_off = QR + KR, .q_stride = S,
                            .k_stride = S, .v_stride = S, .inv_freq = wi, .mscale = 1.1f,
                            .q_norm = norm ? wq : NULL, .k_norm = norm ? wk : NULL, .eps = 1e-6f,
                            .norm_plus_one = norm == 2};
    CHECK(op->rope_qk_store(be, bf, bf, bf, kc2, vc2, &p, pos) == LMX_OK);
    float *g = malloc(sizeof(float) * T * S), *r1 = malloc(sizeof(float) * C), *r2 = malloc(sizeof(float) * C);
    float *eq = malloc(sizeof(float) * T * QR), *ek = malloc(sizeof(float) * T * KR);
    op->buf_read(be, bf, 0, g, (size_t)T * S);
    op->buf_read(be, bq, 0, eq, T * QR);
    op->buf_read(be, bk, 0, ek, T * KR);
    int bad = 0;
    for (int t = 0; t < T; t++) {
        bad += memcmp(g + t * S, eq + t * QR, sizeof(float) * QR) != 0;
        bad += memcmp(g + t * S + QR, ek + t * KR, sizeof(float) * KR) != 0;
        bad += memcmp(g + t * S + QR + KR, fb + t * S + QR + KR, sizeof(float) * (KR + 3)) != 0; /* v, pad */
    }
    op->buf_read(be, kc1, 0, r1, C);
    op->buf_read(be, kc2, 0, r2, C);
    bad += memcmp(r1, r2, sizeof(float) * C) != 0;
    op->buf_read(be, vc1, 0, r1, C);
    op->buf_read(be, vc2, 0, r2, C);
    bad += memcmp(r1, r2, sizeof(float) * C) != 0;
    CHECK_MSG(bad == 0, "rope_qk_store views T %d heads %d/%d D %d rot %d cap %d norm %d: %d parts differ", T, NH, NKV,
              D, rot, cap, norm, bad);
    /* argument errors */
    lmx_qk_rope_params e = p;
    e.q_stride = QR - 1;
    CHECK(op->rope_qk_store(be, bf, bf, bf, kc2, vc2, &e, pos) == LMX_ERR_INVALID_ARGUMENT);
    e = p;
    e.k_norm = NULL;
    e.q_norm = wq;
    CHECK(op->rope_qk_store(be, bf, bf, bf, kc2, vc2, &e, pos) == LMX_ERR_INVALID_ARGUMENT);
    e = p;
    e.v_off = QR + KR + 4; /* the last row's v runs past the buffer */
    CHECK(op->rope_qk_store(be, bf, bf, bf, kc2, vc2, &e, pos) == LMX_ERR_INVALID_ARGUMENT);
    e = p;
    e.capacity = cap + 1; /* caches too small */
    CHECK(op->rope_qk_store(be, bf, bf, bf, kc2, vc2, &e, pos) == LMX_ERR_INVALID_ARGUMENT);
    e = p;
    e.rot_dim = D + 2;
    CHECK(op->rope_qk_store(be, bf, bf, bf, kc2, vc2, &e, pos) == LMX_ERR_INVALID_ARGUMENT);
    int32_t neg[8];
    memcpy(neg, pos, sizeof(int32_t) * T);
    neg[T - 1] = -1;
    CHECK(op->rope_qk_store(be, bf, bf, bf, kc2, vc2, &p, neg) == LMX_ERR_INVALID_ARGUMENT);
    lmx_buf *bs[] = {bf, bq, bk, bv, kc1, vc1, kc2, vc2};
    for (int i = 0; i < 8; i++) op->buf_free(be, bs[i]);
    op->weight_free(be, wi);
    op->weight_free(be, wq);
    op->weight_free(be, wk);
    free(fb); free(inv); free(qn); free(kn); free(hq); free(hk); free(hv); free(g); free(r1); free(r2); free(eq);
    free(ek);
}

static void test_rope_qk_store_views(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK);
    if (!be) return;
    const int32_t p1[1] = {4711}, p3[3] = {6, 7, 8}, p5[5] = {27, 28, 29, 30, 31};
    run_rope_qk_views(be, 1, 8, 2, 64, 64, 100, 0, p1);  /* 4711 % 100: a ring slot */
    run_rope_qk_views(be, 3, 4, 4, 48, 24, 16, 1, p3);   /* partial rotary, qwen3-style norm */
    run_rope_qk_views(be, 5, 6, 2, 32, 32, 5, 2, p5);    /* ring of exactly T slots, gemma-style 1 + w */
    run_rope_qk_views(be, 3, 2, 1, 16, 0, 9, 1, p3);     /* no rotation */
    lmx_backend_destroy(be);
}

static void test_matmul_add(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK);
    if (!be) return;
    const lmx_backend_ops *op = be->ops;
    const int R = 37, K = 64;
    float *w = malloc(sizeof(float) * R * K), *bias = malloc(sizeof(float) * R), *x = malloc(sizeof(float) * 8 * K);
    float *y0 = malloc(sizeof(float) * 8 * R), *a = malloc(sizeof(float) * 8 * R), *b = malloc(sizeof(float) * 8 * R);
    for (int i = 0; i < R * K; i++) w[i] = frand();
    for (int i = 0; i < R; i++) bias[i] = frand();
    for (int i = 0; i < 8 * K; i++) x[i] = frand();
    for (int i = 0; i < 8 * R; i++) y0[i] = frand();
    lmx_weight_desc d = {.name = "w", .kind = LMX_WEIGHT_DENSE, .rows = R, .cols = K, .dtype = LMX_DTYPE_F32, .data = w,
                         .bias = bias, .bias_dtype = LMX_DTYPE_F32};
    lmx_bweight *wt = NULL;
    CHECK(op->weight_upload(be, &d, &wt) == LMX_OK);
    const int Ts[3] = {1, 3, 7}; /* decode rows, short rows, the blocked prefill form */
    for (int i = 0; i < 3 && wt; i++) {
        const int T = Ts[i];
        lmx_buf *bx = buf_of(be, x, (size_t)8 * K), *ya = buf_of(be, y0, (size_t)8 * R), *yb = buf_of(be, y0, (size_t)8 * R),
                *o = buf_of(be, NULL, (size_t)8 * R);
        CHECK(op->matmul_add(be, wt, bx, K, T, ya) == LMX_OK); /* x rows from row 1 */
        CHECK(op->matmul(be, wt, bx, K, T, o) == LMX_OK);
        CHECK(op->add(be, yb, o, (size_t)T * R) == LMX_OK);
        op->buf_read(be, ya, 0, a, (size_t)8 * R);
        op->buf_read(be, yb, 0, b, (size_t)8 * R);
        CHECK_MSG(memcmp(a, b, sizeof(float) * 8 * R) == 0, "matmul_add T %d differs from matmul + add", T);
        CHECK(op->matmul_add(be, wt, bx, 0, T, bx) == LMX_ERR_INVALID_ARGUMENT); /* y == x */
        CHECK(op->matmul_add(be, wt, bx, 7 * K + 1, T, ya) == LMX_ERR_INVALID_ARGUMENT); /* x rows past the end */
        op->buf_free(be, bx);
        op->buf_free(be, ya);
        op->buf_free(be, yb);
        op->buf_free(be, o);
    }
    op->weight_free(be, wt);
    free(w); free(bias); free(x); free(y0); free(a); free(b);
    lmx_backend_destroy(be);
}

int main(void) {
    RUN(test_matmul_add);
    RUN(test_rope_qk_store_views);
    RUN(test_fixture_models);
    return lmx_test_summary();
}
