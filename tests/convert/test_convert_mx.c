/* test_convert_mx.c — `lmx convert --mode mxfp4|mxfp8|nvfp4` and `--recipe mixed_*` on the committed
 * float fixtures, and models that mix modes per layer:
 *   (a) every fp-mode tensor is bit for bit MLX's quantizer (formats/mlx_mx.h) on the source rounded
 *       to the output dtype: U32 codes, U8 scales, no biases; loaded, dequantized and re-quantized
 *       it gives the same codes wherever MLX's rule is a fixed point (every mxfp8 group, the fp4
 *       groups whose largest code is ±6; see test_mlx_mx.c);
 *   (b) the converted model's logits equal those of the same weights dequantized into an fp32
 *       model (the loader's own view of each module: lmx_model_config_quant_for) within fp32
 *       rounding (1e-4 relative; 1e-3 where affine 4/8-bit modules run on the AVX-512 level's int16
 *       activations), and stay within 2× the error the weights' quantization error predicts of the float source (test_convert.c's bound; mxfp8 closer than the fp4 modes);
 *   (c) a recipe writes mlx-lm's per-layer entries (v_proj/down_proj of layers i < L/8, i >= 7L/8 or
 *       (i - L/8) % 3 == 2, and lm_head at the high bits), in both quantization blocks, the tensors
 *       packed at those bits, and the model loads and runs;
 *   (d) mxfp4 MLP + embedding beside affine 8-bit attention in one model loads, runs and matches its
 *       dequantized reference; an unknown mode names the module, biases in an fp mode name the tensor.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/convert.h"
#include "formats/mlx_mx.h"
#include "formats/mlx_quant.h"
#include "formats/safetensors.h"
#include "formats/st_build.h"
#include "lmx_test.h"
#include "model/config.h"
#include "model/lm.h"
#include "util/fs.h"

#define FIX LMX_SOURCE_DIR "/tests/fixtures/models/"

static char g_tmp[1024];

static lmx_status convert(const char *src, const char *dst, const char *mode, const char *recipe, int bits) {
    lmx_convert_options o;
    lmx_convert_options_default(&o);
    o.mode = mode;
    o.recipe = recipe;
    o.bits = bits;
    o.threads = 2;
    return lmx_convert_model(src, dst, &o);
}

static float rounded(lmx_dtype dt, float v) {
    if (dt == LMX_DTYPE_BF16) return lmx_bf16_to_f32(lmx_f32_to_bf16(v));
    if (dt == LMX_DTYPE_F16) return lmx_f16_to_f32(lmx_f32_to_f16(v));
    return v;
}

/* (a) for one fp-mode conversion; returns Σ_k ε_k² over the quantized matrices, ε_k = ||W_k −
 * deq(Q_k)||_F / ||W_k||_F (test_convert.c's logits bound) */
static double check_mx_tensors(const char *src, const char *dst, lmx_quant_mode m, lmx_dtype dt) {
    double sum_sq = 0;
    lmx_weights *ws = NULL, *wd = NULL;
    CHECK(lmx_weights_open(src, true, &ws) == LMX_OK);
    CHECK(lmx_weights_open(dst, true, &wd) == LMX_OK);
    if (!ws || !wd) goto out;
    const int gs = lmx_quant_mode_group(m), bits = lmx_quant_mode_bits(m);
    int n_quant = 0;
    long fixed = 0;
    for (size_t i = 0; i < lmx_weights_count(ws); i++) {
        const lmx_tensor_view *s = lmx_weights_get(ws, i);
        size_t len = strlen(s->name);
        if (!(s->ndim == 2 && len > 7 && !strcmp(s->name + len - 7, ".weight") && s->shape[1] % gs == 0)) continue;
        char name[512];
        snprintf(name, sizeof name, "%.*s.scales", (int)(len - 7), s->name);
        const lmx_tensor_view *d = lmx_weights_find(wd, s->name), *sc = lmx_weights_find(wd, name);
        snprintf(name, sizeof name, "%.*s.biases", (int)(len - 7), s->name);
        CHECK_MSG(!lmx_weights_find(wd, name), "%s: biases in mode %s", s->name, lmx_quant_mode_name(m));
        if (!d || !sc) { /* a tied lm_head is dropped */
            CHECK_MSG(!strcmp(s->name, "lm_head.weight"), "%s: not quantized", s->name);
            continue;
        }
        n_quant++;
        const int64_t rows = s->shape[0], cols = s->shape[1];
        CHECK(d->dtype == LMX_DTYPE_U32 && d->shape[0] == rows && d->shape[1] == cols * bits / 32);
        CHECK(sc->dtype == LMX_DTYPE_U8 && sc->shape[0] == rows && sc->shape[1] == cols / gs);
        const size_t rb = (size_t)cols * bits / 8, sb = (size_t)(cols / gs);
        float *w = malloc(sizeof(float) * (size_t)cols), *deq = malloc(sizeof(float) * (size_t)cols);
        uint8_t *c = malloc(rb), *s2 = malloc(sb);
        long bad = 0, bad_rt = 0;
        double num = 0, den = 0;
        for (int64_t r = 0; r < rows; r++) {
            CHECK(lmx_tensor_to_f32(s, r * cols, cols, w) == LMX_OK);
            for (int64_t k = 0; k < cols; k++) w[k] = rounded(dt, w[k]);
            CHECK(lmx_mx_quantize_row(w, cols, m, c, s2) == LMX_OK);
            const uint8_t *dc = d->data + (size_t)r * rb, *ds = sc->data + (size_t)r * sb;
            if (memcmp(c, dc, rb) || memcmp(s2, ds, sb)) bad++;
            /* load → dequantize → re-quantize */
            CHECK(lmx_mx_dequantize_row(dc, ds, m, 0, cols, deq) == LMX_OK);
            for (int64_t k = 0; k < cols; k++) {
                num += ((double)deq[k] - w[k]) * ((double)deq[k] - w[k]);
                den += (double)w[k] * w[k];
            }
            CHECK(lmx_mx_quantize_row(deq, cols, m, c, s2) == LMX_OK);
            for (int64_t g = 0; g < cols / gs; g++) {
                unsigned top = 0;
                for (int k = 0; k < gs; k++) {
                    unsigned code = lmx_mx_code(m, dc + (size_t)g * gs * bits / 8, k);
                    top = m == LMX_QUANT_MXFP8 ? 7 : (code & 7) > top ? (code & 7) : top;
                }
                if (top != 7) continue;
                fixed++;
                if (s2[g] != ds[g] || memcmp(c + (size_t)g * gs * bits / 8, dc + (size_t)g * gs * bits / 8, (size_t)gs * bits / 8))
                    bad_rt++;
            }
        }
        CHECK_MSG(bad == 0, "%s (%s): %ld rows differ from MLX's quantizer", s->name, lmx_quant_mode_name(m), bad);
        CHECK_MSG(bad_rt == 0, "%s (%s): %ld groups do not re-quantize bit-exact", s->name, lmx_quant_mode_name(m), bad_rt);
        if (den > 0) sum_sq += num / den;
        free(w), free(deq), free(c), free(s2);
    }
    CHECK(n_quant > 0);
    CHECK(fixed > 0);
out:
    lmx_weights_close(ws);
    lmx_weights_close(wd);
    return sum_sq;
}

/* Writes dir's weights dequantized (each module as the loader reads it) as one F32 model in out,
 * with dir's config.json minus its quantization blocks. */
static void write_dequantized(const char *dir, const char *out) {
    lmx_model_config *c = NULL;
    lmx_weights *w = NULL;
    CHECK(lmx_model_config_load(dir, &c) == LMX_OK);
    CHECK(lmx_weights_open(dir, true, &w) == LMX_OK);
    if (!c || !w) return;
    size_t n = lmx_weights_count(w), k = 0;
    st_tensor *t = calloc(n, sizeof *t);
    float **bufs = calloc(n, sizeof *bufs);
    char **names = calloc(n, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const lmx_tensor_view *v = lmx_weights_get(w, i);
        size_t len = strlen(v->name);
        if (len > 7 && (!strcmp(v->name + len - 7, ".scales") || !strcmp(v->name + len - 7, ".biases"))) continue;
        char module[512], sn[600], bn[600];
        snprintf(module, sizeof module, "%.*s", (int)(len > 7 ? len - 7 : len), v->name);
        snprintf(sn, sizeof sn, "%s.scales", module);
        snprintf(bn, sizeof bn, "%s.biases", module);
        const lmx_tensor_view *sc = lmx_weights_find(w, sn);
        names[k] = strdup(v->name);
        if (v->dtype == LMX_DTYPE_U32 && sc) {
            lmx_quant_params qp;
            CHECK(lmx_model_config_quant_for(c, module, &qp) == 1);
            const int64_t rows = v->shape[0], cols = v->shape[1] * 32 / qp.bits;
            bufs[k] = malloc(sizeof(float) * (size_t)(rows * cols));
            for (int64_t r = 0; r < rows; r++) {
                if (lmx_quant_mode_is_fp(qp.mode))
                    CHECK(lmx_mx_dequantize_row(v->data + (size_t)r * cols * qp.bits / 8, sc->data + (size_t)r * (cols / qp.group_size),
                                                qp.mode, 0, cols, bufs[k] + r * cols) == LMX_OK);
                else
                    CHECK(lmx_mlx_dequantize_view(v, sc, lmx_weights_find(w, bn), qp.bits, qp.group_size, r, 0, cols,
                                                  bufs[k] + r * cols) == LMX_OK);
            }
            t[k] = (st_tensor){names[k], "F32", 2, {rows, cols}, bufs[k], sizeof(float) * (size_t)(rows * cols)};
        } else {
            bufs[k] = malloc(sizeof(float) * (size_t)(v->numel ? v->numel : 1));
            CHECK(lmx_tensor_to_f32(v, 0, v->numel, bufs[k]) == LMX_OK);
            t[k] = (st_tensor){names[k], "F32", v->ndim, {0}, bufs[k], sizeof(float) * (size_t)v->numel};
            for (int d = 0; d < v->ndim; d++) t[k].shape[d] = v->shape[d];
        }
        k++;
    }
    mkdir(out, 0755);
    size_t blen = 0;
    uint8_t *img = st_build(t, k, "{\"format\":\"mlx\"}", &blen);
    char path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    CHECK(img && st_write_file(path, img, blen) == 0);
    free(img);
    for (size_t i = 0; i < k; i++) free(bufs[i]), free(names[i]);
    free(bufs), free(names), free(t);
    /* the config without quantization */
    char *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(lmx_fs_read_file(path, 1 << 20, &text, &len) == LMX_OK);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(j != NULL);
    if (j) {
        cJSON_DeleteItemFromObject(j, "quantization");
        cJSON_DeleteItemFromObject(j, "quantization_config");
        char *o = cJSON_Print(j);
        CHECK(o && st_write_text(out, "config.json", o) == 0);
        free(o);
        cJSON_Delete(j);
    }
    lmx_weights_close(w);
    lmx_model_config_free(c);
}

/* logits of a 12-token prompt (CPU, `threads` threads); false on failure */
static bool logits_of(const char *dir, float *out, int vocab, int threads) {
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = (int32_t)((i * 37 + 5) % 250) + 1;
    lmx_lm *lm = NULL;
    lmx_lm_options lo = {.n_threads = threads, .device = LMX_DEVICE_CPU};
    if (lmx_lm_open(dir, &lo, &lm) != LMX_OK) {
        fprintf(stderr, "  %s: %s\n", dir, lmx_last_error_detail());
        return false;
    }
    lmx_kv *kv = NULL;
    bool ok = lmx_lm_vocab_size(lm) == vocab && lmx_kv_create(lm, 32, &kv) == LMX_OK;
    /* the prefill path (12 rows), then one decode step (the T = 1 kernels) */
    float *tmp = malloc(sizeof(float) * (size_t)vocab);
    ok = ok && tmp && lmx_lm_forward(lm, kv, ids, 11, tmp) == LMX_OK && lmx_lm_forward(lm, kv, ids + 11, 1, out) == LMX_OK;
    free(tmp);
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    return ok;
}

static double rel_diff(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)a[i] * a[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* (b): a quantized model against its dequantized fp32 twin; returns the error vs `src` (or -1) */
static double check_vs_dequantized(const char *qdir, const char *src, int vocab, const char *what, double tol) {
    char ddir[1300];
    snprintf(ddir, sizeof ddir, "%s-deq", qdir);
    write_dequantized(qdir, ddir);
    float *a = malloc(sizeof(float) * (size_t)vocab), *b = malloc(sizeof(float) * (size_t)vocab);
    float *c = malloc(sizeof(float) * (size_t)vocab);
    double e_src = -1;
    CHECK(logits_of(qdir, a, vocab, 1));
    CHECK(logits_of(ddir, b, vocab, 1));
    double e = rel_diff(b, a, vocab);
    CHECK_MSG(e <= tol, "%s: logits differ from the dequantized reference by %g", what, e);
    float *a3 = malloc(sizeof(float) * (size_t)vocab);
    CHECK(logits_of(qdir, a3, vocab, 3));
    CHECK_MSG(!memcmp(a, a3, sizeof(float) * (size_t)vocab), "%s: 1 and 3 threads differ", what);
    if (src && logits_of(src, c, vocab, 1)) e_src = rel_diff(c, a, vocab);
    fprintf(stderr, "  %s: vs dequantized fp32 %.3g, vs float source %.3g\n", what, e, e_src);
    free(a), free(b), free(c), free(a3);
    return e_src;
}

static void test_modes(void) {
    const lmx_quant_mode modes[] = {LMX_QUANT_MXFP4, LMX_QUANT_MXFP8, LMX_QUANT_NVFP4};
    double err[3];
    for (int mi = 0; mi < 3; mi++) {
        const char *mn = lmx_quant_mode_name(modes[mi]);
        char dst[1200];
        snprintf(dst, sizeof dst, "%s/u-%s", g_tmp, mn);
        lmx_status st = convert(FIX "llama-untied-f16", dst, mn, NULL, 0);
        CHECK_MSG(st == LMX_OK, "%s: %s", mn, lmx_last_error_detail());
        if (st != LMX_OK) continue;
        double pred = sqrt(check_mx_tensors(FIX "llama-untied-f16", dst, modes[mi], LMX_DTYPE_F16));
        lmx_model_config *c = NULL;
        CHECK(lmx_model_config_load(dst, &c) == LMX_OK);
        if (c) {
            CHECK(c->quantized && c->quant.mode == modes[mi] && !strcmp(c->quant_mode, mn));
            CHECK_EQ_INT(c->quant.bits, lmx_quant_mode_bits(modes[mi]));
            CHECK_EQ_INT(c->quant.group_size, lmx_quant_mode_group(modes[mi]));
            CHECK_EQ_INT(c->n_overrides, 0);
        }
        lmx_model_config_free(c);
        err[mi] = check_vs_dequantized(dst, FIX "llama-untied-f16", 320, mn, 1e-4);
        fprintf(stderr, "  %s: predicted sqrt(sum eps^2) %.3g\n", mn, pred);
        CHECK_MSG(err[mi] <= 2 * pred && err[mi] >= pred / 10, "%s: error vs the float source %g, predicted %g", mn,
                  err[mi], pred);
    }
    CHECK_MSG(err[1] < err[0] && err[1] < err[2], "mxfp8 error %g not below mxfp4 %g / nvfp4 %g", err[1], err[0], err[2]);
    /* tied bf16: the quantized embedding is the head */
    char dst[1200];
    snprintf(dst, sizeof dst, "%s/tiny-mxfp4", g_tmp);
    CHECK(convert(FIX "llama-tiny", dst, "mxfp4", NULL, 0) == LMX_OK);
    check_mx_tensors(FIX "llama-tiny", dst, LMX_QUANT_MXFP4, LMX_DTYPE_BF16);
    check_vs_dequantized(dst, FIX "llama-tiny", 256, "llama-tiny mxfp4 (tied)", 1e-4);
}

/* mlx-lm's rule, written out independently */
static int recipe_bits(const char *module, int L, int low, int high) {
    int i = 0;
    const char *p = strstr(module, "layers.");
    if (p) i = atoi(p + 7);
    bool more = i < L / 8 || i >= 7 * L / 8 || ((i - L / 8) % 3 + 3) % 3 == 2;
    if (strstr(module, "lm_head")) return high;
    if (more && (strstr(module, "v_proj") || strstr(module, "down_proj"))) return high;
    return low;
}

static void test_recipes(void) {
    static const char *recipes[] = {"mixed_3_6", "mixed_2_6", "mixed_4_6", "mixed_3_4"};
    static const int lows[] = {3, 2, 4, 3}, highs[] = {6, 6, 6, 4};
    for (int ri = 0; ri < 4; ri++) {
        char dst[1200];
        snprintf(dst, sizeof dst, "%s/r-%s", g_tmp, recipes[ri]);
        lmx_status st = convert(FIX "llama-untied-f16", dst, NULL, recipes[ri], 0);
        CHECK_MSG(st == LMX_OK, "%s: %s", recipes[ri], lmx_last_error_detail());
        if (st != LMX_OK) continue;
        lmx_model_config *c = NULL;
        lmx_weights *w = NULL, *ws = NULL;
        CHECK(lmx_model_config_load(dst, &c) == LMX_OK);
        CHECK(lmx_weights_open(dst, true, &w) == LMX_OK);
        CHECK(lmx_weights_open(FIX "llama-untied-f16", true, &ws) == LMX_OK);
        if (!c || !w || !ws) continue;
        CHECK_EQ_INT(c->quant.bits, 4); /* the global block: --bits (default 4), as mlx-lm */
        CHECK_EQ_INT(c->quant.group_size, 64);
        int n_high = 0, n_mod = 0;
        for (size_t i = 0; i < lmx_weights_count(w); i++) {
            const lmx_tensor_view *v = lmx_weights_get(w, i);
            size_t len = strlen(v->name);
            if (v->dtype != LMX_DTYPE_U32) continue;
            char module[512];
            snprintf(module, sizeof module, "%.*s", (int)(len - 7), v->name);
            lmx_quant_params qp = {0, 0, LMX_QUANT_AFFINE};
            bool entry = false;
            for (int k = 0; k < c->n_overrides; k++)
                if (!strcmp(c->overrides[k].module, module)) entry = true, qp = c->overrides[k].p;
            CHECK_MSG(entry, "%s: %s has no per-layer entry", recipes[ri], module);
            int want = recipe_bits(module, 3, lows[ri], highs[ri]);
            CHECK_MSG(qp.bits == want && qp.group_size == 64 && qp.mode == LMX_QUANT_AFFINE, "%s: %s bits %d, want %d",
                      recipes[ri], module, qp.bits, want);
            CHECK_MSG(v->shape[1] * 32 / want == (strstr(module, "down_proj") ? 256 : 128), "%s: %s packed at %d bits?",
                      recipes[ri], module, want);
            /* the packed bytes are MLX's affine quantizer at those bits */
            const lmx_tensor_view *sc = NULL, *bi = NULL;
            char nm[600];
            snprintf(nm, sizeof nm, "%s.scales", module), sc = lmx_weights_find(w, nm);
            snprintf(nm, sizeof nm, "%s.biases", module), bi = lmx_weights_find(w, nm);
            CHECK(sc && bi);
            const lmx_tensor_view *sv = lmx_weights_find(ws, v->name);
            CHECK(sv != NULL);
            if (sc && bi && sv) {
                const int64_t rows = sv->shape[0], cols = sv->shape[1];
                const size_t rb = (size_t)cols * want / 8, sb = (size_t)(cols / 64) * 2;
                float *row = malloc(sizeof(float) * (size_t)cols);
                uint8_t *pk = malloc(rb), *ps = malloc(sb), *pb = malloc(sb);
                long bad = 0;
                for (int64_t r = 0; r < rows; r++) {
                    CHECK(lmx_tensor_to_f32(sv, r * cols, cols, row) == LMX_OK);
                    CHECK(lmx_mlx_quantize_row(row, cols, want, 64, LMX_DTYPE_F16, pk, ps, pb, LMX_MLX_CPU) == LMX_OK);
                    bad += memcmp(pk, v->data + (size_t)r * rb, rb) || memcmp(ps, sc->data + (size_t)r * sb, sb) ||
                           memcmp(pb, bi->data + (size_t)r * sb, sb);
                }
                CHECK_MSG(bad == 0, "%s: %s: %ld rows differ from MLX's quantizer", recipes[ri], module, bad);
                free(row), free(pk), free(ps), free(pb);
            }
            n_high += want == highs[ri];
            n_mod++;
        }
        /* 3 layers: layer 2's v_proj and down_proj, and lm_head */
        CHECK_EQ_INT(n_high, 3);
        CHECK_EQ_INT(n_mod, 3 * 7 + 2);
        CHECK_EQ_INT(c->n_overrides, n_mod);
        /* quantization_config carries the same entries */
        char path[1300], *text = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/config.json", dst);
        CHECK(lmx_fs_read_file(path, 1 << 20, &text, &len) == LMX_OK);
        cJSON *j = text ? cJSON_Parse(text) : NULL;
        free(text);
        const cJSON *qa = cJSON_GetObjectItemCaseSensitive(j, "quantization"),
                    *qb = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
        char *sa = qa ? cJSON_PrintUnformatted(qa) : NULL, *sb = qb ? cJSON_PrintUnformatted(qb) : NULL;
        CHECK(sa && sb && !strcmp(sa, sb));
        char want_entry[160];
        snprintf(want_entry, sizeof want_entry,
                 "\"model.layers.2.mlp.down_proj\":{\"group_size\":64,\"bits\":%d,\"mode\":\"affine\"}", highs[ri]);
        CHECK_MSG(sa && strstr(sa, want_entry), "%s: no %s", recipes[ri], want_entry);
        free(sa), free(sb);
        cJSON_Delete(j);
        lmx_weights_close(w);
        lmx_weights_close(ws);
        lmx_model_config_free(c);
        if (ri == 0) check_vs_dequantized(dst, FIX "llama-untied-f16", 320, "mixed_3_6", 1e-3);
    }
}

/* (d) the attention of an affine 8-bit conversion and everything else of an mxfp4 one, in one
 * model whose quantization block says mxfp4 with affine per-layer entries (the mix of
 * mlx-community's gpt-oss MXFP4-Q8 conversions) */
static void build_mixed(const char *a8, const char *fp4, const char *out, const char *attn_mode) {
    lmx_weights *wa = NULL, *wf = NULL;
    CHECK(lmx_weights_open(a8, true, &wa) == LMX_OK);
    CHECK(lmx_weights_open(fp4, true, &wf) == LMX_OK);
    if (!wa || !wf) return;
    size_t cap = lmx_weights_count(wa) + lmx_weights_count(wf), k = 0;
    st_tensor *t = calloc(cap, sizeof *t);
    const lmx_weights *src[2] = {wf, wa};
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < lmx_weights_count(src[s]); i++) {
            const lmx_tensor_view *v = lmx_weights_get(src[s], i);
            bool attn = strstr(v->name, "self_attn.") != NULL;
            if (attn != (s == 1)) continue;
            t[k] = (st_tensor){v->name, lmx_dtype_name(v->dtype), v->ndim, {0}, v->data, v->nbytes};
            for (int d = 0; d < v->ndim; d++) t[k].shape[d] = v->shape[d];
            k++;
        }
    mkdir(out, 0755);
    size_t blen = 0;
    uint8_t *img = st_build(t, k, "{\"format\":\"mlx\"}", &blen);
    char path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    CHECK(img && st_write_file(path, img, blen) == 0);
    free(img), free(t);
    /* config: fp4's, with an entry per attention module */
    char *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/config.json", fp4);
    CHECK(lmx_fs_read_file(path, 1 << 20, &text, &len) == LMX_OK);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!j) return;
    cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantization");
    for (int l = 0; l < 3; l++) {
        const char *proj[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        for (int p = 0; p < 4; p++) {
            char m[128];
            snprintf(m, sizeof m, "model.layers.%d.self_attn.%s", l, proj[p]);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "group_size", 64);
            cJSON_AddNumberToObject(e, "bits", 8);
            cJSON_AddStringToObject(e, "mode", attn_mode);
            cJSON_AddItemToObject(q, m, e);
        }
    }
    cJSON_ReplaceItemInObjectCaseSensitive(j, "quantization_config", cJSON_Duplicate(q, 1));
    char *o = cJSON_Print(j);
    CHECK(o && st_write_text(out, "config.json", o) == 0);
    free(o);
    cJSON_Delete(j);
    lmx_weights_close(wa);
    lmx_weights_close(wf);
}

static void test_mixed_modes(void) {
    char a8[1200], fp4[1200], mixed[1200], bad[1200];
    snprintf(a8, sizeof a8, "%s/mix-a8", g_tmp);
    snprintf(fp4, sizeof fp4, "%s/mix-fp4", g_tmp);
    snprintf(mixed, sizeof mixed, "%s/mix", g_tmp);
    CHECK(convert(FIX "llama-untied-f16", a8, NULL, NULL, 8) == LMX_OK);
    CHECK(convert(FIX "llama-untied-f16", fp4, "mxfp4", NULL, 0) == LMX_OK);
    build_mixed(a8, fp4, mixed, "affine");
    lmx_model_config *c = NULL;
    CHECK(lmx_model_config_load(mixed, &c) == LMX_OK);
    lmx_quant_params qp;
    if (c) {
        CHECK(lmx_model_config_quant_for(c, "model.layers.1.self_attn.v_proj", &qp) == 1 && qp.mode == LMX_QUANT_AFFINE &&
              qp.bits == 8);
        CHECK(lmx_model_config_quant_for(c, "model.layers.1.mlp.up_proj", &qp) == 1 && qp.mode == LMX_QUANT_MXFP4);
    }
    lmx_model_config_free(c);
    /* 1e-3: the AVX-512 level runs affine 4/8-bit weights on int16-quantized activations */
    check_vs_dequantized(mixed, FIX "llama-untied-f16", 320, "mxfp4 + affine-8 attention", 1e-3);
    /* an unknown mode: a format error naming the module */
    snprintf(bad, sizeof bad, "%s/mix-bad", g_tmp);
    build_mixed(a8, fp4, bad, "mxfp6");
    lmx_lm *lm = NULL;
    lmx_lm_options lo = {.n_threads = 1, .device = LMX_DEVICE_CPU};
    CHECK_EQ_INT(lmx_lm_open(bad, &lo, &lm), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_MSG(strstr(lmx_last_error_detail(), "model.layers.") && strstr(lmx_last_error_detail(), "mxfp6"), "%s",
              lmx_last_error_detail());
    /* attention tensors (with biases) declared mxfp4: the tensor is named */
    snprintf(bad, sizeof bad, "%s/mix-bad2", g_tmp);
    build_mixed(a8, fp4, bad, "mxfp4");
    CHECK_EQ_INT(lmx_lm_open(bad, &lo, &lm), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_MSG(strstr(lmx_last_error_detail(), "self_attn."), "%s", lmx_last_error_detail());
    /* mxfp4 tensors under a config that says mxfp8 (codes twice as wide, other scale shapes), and
     * under one that says nvfp4 (groups of 16): the tensor is named */
    static const char *wrong[] = {"mxfp8", "nvfp4"};
    for (int i = 0; i < 2; i++) {
        char cfg[1400], *text = NULL;
        size_t len = 0;
        snprintf(bad, sizeof bad, "%s/mix-wrong-%s", g_tmp, wrong[i]);
        build_mixed(a8, fp4, bad, "affine");
        snprintf(cfg, sizeof cfg, "%s/config.json", bad);
        CHECK(lmx_fs_read_file(cfg, 1 << 20, &text, &len) == LMX_OK);
        cJSON *j = text ? cJSON_Parse(text) : NULL;
        free(text);
        if (!j) continue;
        const char *blocks[] = {"quantization", "quantization_config"};
        for (int b = 0; b < 2; b++) {
            cJSON *q = cJSON_GetObjectItemCaseSensitive(j, blocks[b]);
            cJSON_ReplaceItemInObjectCaseSensitive(q, "mode", cJSON_CreateString(wrong[i]));
            cJSON_ReplaceItemInObjectCaseSensitive(q, "bits", cJSON_CreateNumber(lmx_quant_mode_bits(i ? LMX_QUANT_NVFP4 : LMX_QUANT_MXFP8)));
            cJSON_ReplaceItemInObjectCaseSensitive(q, "group_size", cJSON_CreateNumber(i ? 16 : 32));
        }
        char *o = cJSON_Print(j);
        CHECK(o && st_write_text(bad, "config.json", o) == 0);
        free(o);
        cJSON_Delete(j);
        CHECK_EQ_INT(lmx_lm_open(bad, &lo, &lm), LMX_ERR_INVALID_MODEL_FORMAT);
        CHECK_MSG(strstr(lmx_last_error_detail(), ".weight") || strstr(lmx_last_error_detail(), ".scales"), "%s: %s",
                  wrong[i], lmx_last_error_detail());
        fprintf(stderr, "  mxfp4 tensors read as %s: %s\n", wrong[i], lmx_last_error_detail());
    }
}

int main(void) {
    if (!st_tmpdir(g_tmp, sizeof g_tmp)) {
        fprintf(stderr, "no temp dir\n");
        return 1;
    }
    RUN(test_modes);
    RUN(test_recipes);
    RUN(test_mixed_modes);
    lmx_convert_rmtree(g_tmp);
    return lmx_test_summary();
}
