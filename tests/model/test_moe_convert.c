/* test_moe_convert.c — `lmx convert` of a mixture-of-experts model in the Hub's per-expert layout:
 *   - the experts are stacked into switch_mlp [E, out, in] (quantized per expert row), no per-expert
 *     tensor is left, qwen3_moe routers are 8-bit g64 with per-module entries in the quantization
 *     block, mixtral's router keeps the default bits;
 *   - a cast-only conversion (stacked bf16) gives bit-identical logits to the source, so the
 *     projection mapping (mixtral w1/w3/w2 → gate/up/down) and the expert order are right;
 *   - in a 4-bit conversion, row r of expert e of a stacked tensor is exactly MLX's quantization of
 *     row r of the source expert (bytes, scales and biases); the model loads and runs;
 *   - a missing expert is refused, naming it;
 *   - --mode mxfp4 (gpt-oss style): stacked experts mxfp4 (U8 scales, no biases, rows exactly
 *     lmx_mx_quantize_row of the source), qwen3_moe routers still affine 8-bit g64; loads and runs;
 *   - a mixed recipe on qwen3_moe: routers keep their 8-bit entries, switch_mlp.down_proj gets the
 *     recipe's high bits in its layers as mlx-lm's path predicate, gate/up the low bits; loads and runs.
 */
#include "convert/convert.h"
#include "formats/mlx_mx.h"
#include "formats/mlx_quant.h"
#include "model/test_moe_writer.h"
#include "util/fs.h"
#include "util/json.h"

static const moe_spec QWEN = {.family = 0, .layers = 3, .experts = 4, .topk = 2, .inter = 64, .dense_inter = 64,
                              .norm_topk = true, .sparse_step = 1, .mlp_only = "[1]"};
static const moe_spec MIXTRAL = {.family = 1, .layers = 2, .experts = 3, .topk = 2, .inter = 64};

static bool run_logits(const char *dir, float *out) {
    int32_t ids[7] = {5, 17, 3, 90, 41, 41, 8};
    lmx_lm *lm = open_lm(dir, 2);
    lmx_kv *kv = NULL;
    bool ok = lm && lmx_kv_create(lm, 16, &kv) == LMX_OK && lmx_lm_forward(lm, kv, ids, 7, out) == LMX_OK;
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    return ok;
}

static lmx_status convert(const char *src, const char *dst, bool quantize) {
    lmx_convert_options o;
    lmx_convert_options_default(&o);
    o.bits = 4;
    o.group_size = 32;
    o.quantize = quantize;
    o.force = true;
    o.threads = 1;
    return lmx_convert_model(src, dst, &o);
}

static void check_shapes(const char *dst, const moe_spec *s) {
    lmx_weights *w = NULL;
    CHECK(lmx_weights_open(dst, true, &w) == LMX_OK);
    if (!w) return;
    const char *blk = s->family == 1 ? "block_sparse_moe" : "mlp";
    for (size_t i = 0; i < lmx_weights_count(w); i++)
        CHECK_MSG(!strstr(lmx_weights_get(w, i)->name, ".experts."), "left over: %s", lmx_weights_get(w, i)->name);
    char name[128];
    for (int l = 0; l < s->layers; l++) {
        if (!spec_sparse(s, l)) continue;
        snprintf(name, sizeof name, "model.layers.%d.%s.switch_mlp.down_proj.weight", l, blk);
        const lmx_tensor_view *t = lmx_weights_find(w, name);
        CHECK_MSG(t && t->dtype == LMX_DTYPE_U32 && t->ndim == 3 && t->shape[0] == s->experts && t->shape[1] == HID &&
                      t->shape[2] == s->inter * 4 / 32,
                  "%s", name);
        snprintf(name, sizeof name, "model.layers.%d.%s.switch_mlp.gate_proj.scales", l, blk);
        t = lmx_weights_find(w, name);
        CHECK_MSG(t && t->ndim == 3 && t->shape[0] == s->experts && t->shape[1] == s->inter && t->shape[2] == HID / 32,
                  "%s", name);
        snprintf(name, sizeof name, "model.layers.%d.%s.gate.weight", l, blk);
        t = lmx_weights_find(w, name);
        const int rbits = s->family == 0 ? 8 : 4; /* qwen3_moe routers 8-bit g64, mixtral the default */
        CHECK_MSG(t && t->dtype == LMX_DTYPE_U32 && t->ndim == 2 && t->shape[1] == HID * rbits / 32, "%s", name);
    }
    lmx_weights_close(w);
    /* the quantization block: qwen3_moe has one entry per router */
    char *path = lmx_fs_join(dst, "config.json"), *text = NULL;
    size_t len = 0;
    CHECK(path && lmx_fs_read_file(path, 1 << 20, &text, &len) == LMX_OK);
    cJSON *j = text ? lmx_json_parse(text, len, NULL) : NULL;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantization");
    CHECK(cJSON_IsObject(q));
    int n_router = 0;
    for (int l = 0; l < s->layers; l++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate", l);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(q, name);
        if (!e) continue;
        n_router++;
        CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(e, "bits")->valueint, 8);
        CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(e, "group_size")->valueint, 64);
    }
    int want = 0;
    for (int l = 0; l < s->layers && s->family == 0; l++) want += spec_sparse(s, l);
    CHECK_EQ_INT(n_router, want);
    CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "quantization_config")));
    cJSON_Delete(j);
    free(text);
    free(path);
}

/* rows of every expert of one stacked projection against lmx_mlx_quantize_row of the source rows */
static void check_rows(const char *src, const char *dst, const moe_spec *s, int l) {
    lmx_weights *ws = NULL, *wd = NULL;
    CHECK(lmx_weights_open(src, true, &ws) == LMX_OK && lmx_weights_open(dst, true, &wd) == LMX_OK);
    const char *blk = s->family == 1 ? "block_sparse_moe" : "mlp", *up = s->family == 1 ? "w3" : "up_proj";
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s.switch_mlp.up_proj.weight", l, blk);
    const lmx_tensor_view *q = wd ? lmx_weights_find(wd, name) : NULL;
    snprintf(name, sizeof name, "model.layers.%d.%s.switch_mlp.up_proj.scales", l, blk);
    const lmx_tensor_view *sc = wd ? lmx_weights_find(wd, name) : NULL;
    snprintf(name, sizeof name, "model.layers.%d.%s.switch_mlp.up_proj.biases", l, blk);
    const lmx_tensor_view *bi = wd ? lmx_weights_find(wd, name) : NULL;
    CHECK(q && sc && bi);
    const size_t rb = lmx_mlx_quant_row_bytes(HID, 4), sb = HID / 32 * 2;
    int bad = 0;
    for (int e = 0; q && sc && bi && e < s->experts; e++) {
        snprintf(name, sizeof name, "model.layers.%d.%s.experts.%d.%s.weight", l, blk, e, up);
        const lmx_tensor_view *t = lmx_weights_find(ws, name);
        CHECK_MSG(t != NULL, "%s", name);
        for (int r = 0; t && r < s->inter; r++) {
            float w[HID];
            uint8_t pk[HID / 2], scl[HID / 32 * 2], bia[HID / 32 * 2];
            CHECK(lmx_tensor_to_f32(t, (int64_t)r * HID, HID, w) == LMX_OK);
            CHECK(lmx_mlx_quantize_row(w, HID, 4, 32, LMX_DTYPE_BF16, pk, scl, bia, LMX_MLX_CPU) == LMX_OK);
            const size_t row = (size_t)e * s->inter + (size_t)r;
            bad += memcmp(pk, q->data + row * rb, rb) != 0 || memcmp(scl, sc->data + row * sb, sb) != 0 ||
                   memcmp(bia, bi->data + row * sb, sb) != 0;
        }
    }
    CHECK_MSG(bad == 0, "family %d layer %d: %d expert rows differ from MLX's quantization of the source", s->family,
              l, bad);
    lmx_weights_close(ws);
    lmx_weights_close(wd);
}

static void check_family(const moe_spec *s) {
    model md = {0};
    CHECK(model_make(&md, s, 4242));
    char dst[600], dst_q[600];
    snprintf(dst, sizeof dst, "%s/out-bf16", md.dir);
    snprintf(dst_q, sizeof dst_q, "%s/out-q4", md.dir);
    float a[VOCAB], b[VOCAB], c[VOCAB];
    lmx_status st = convert(md.dir, dst, false);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    bool ok = run_logits(md.dir, a) && run_logits(dst, b);
    CHECK(ok);
    if (ok) CHECK_MSG(!memcmp(a, b, sizeof a), "family %d: stacked bf16 conversion changes the logits", s->family);
    st = convert(md.dir, dst_q, true);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    if (st == LMX_OK) {
        check_shapes(dst_q, s);
        check_rows(md.dir, dst_q, s, s->layers - 1);
        if (run_logits(dst_q, c)) {
            double err = 0, mx = 0;
            for (int i = 0; i < VOCAB; i++) {
                err = fmax(err, fabs(a[i] - c[i]));
                mx = fmax(mx, fabs(a[i]));
            }
            /* runs and is a quantization of the source: 4-bit g32 of every matrix of these random tiny
             * models (embedding and head too, and routing choices that flip) moves logits by a
             * sizeable part of their range, so this bound is loose; check_rows is the exact check */
            CHECK_MSG(isfinite(err) && err > 0 && err < 0.5 * mx, "family %d: 4-bit logits differ by %g (max %g)",
                      s->family, err, mx);
        } else {
            CHECK_MSG(false, "the 4-bit conversion does not run: %s", lmx_last_error_detail());
        }
    }
    model_free(&md);
}

static void test_convert_qwen3_moe(void) { check_family(&QWEN); }
static void test_convert_mixtral(void) { check_family(&MIXTRAL); }

static void test_convert_missing_expert(void) {
    moe_spec s = MIXTRAL;
    s.skip = "model.layers.1.block_sparse_moe.experts.1.w3.weight";
    model md = {0};
    CHECK(model_make(&md, &s, 7));
    char dst[600];
    snprintf(dst, sizeof dst, "%s/out", md.dir);
    lmx_status st = convert(md.dir, dst, true);
    CHECK_MSG(st == LMX_ERR_INVALID_MODEL_FORMAT, "got %s", lmx_status_str(st));
    CHECK_MSG(strstr(lmx_last_error_detail(), "expert 1 of model.layers.1.block_sparse_moe.switch_mlp.up_proj"),
              "%s", lmx_last_error_detail());
    CHECK(!lmx_fs_exists(dst));
    model_free(&md);
}

static lmx_status convert_mode(const char *src, const char *dst, const char *mode, const char *recipe) {
    lmx_convert_options o;
    lmx_convert_options_default(&o);
    o.mode = mode;
    o.recipe = recipe;
    o.force = true;
    o.threads = 1;
    return lmx_convert_model(src, dst, &o);
}

/* dst's config.json (caller deletes) */
static cJSON *read_config(const char *dst) {
    char *path = lmx_fs_join(dst, "config.json"), *text = NULL;
    size_t len = 0;
    CHECK(path && lmx_fs_read_file(path, 1 << 20, &text, &len) == LMX_OK);
    cJSON *j = text ? lmx_json_parse(text, len, NULL) : NULL;
    free(text);
    free(path);
    return j;
}

/* the per-module entry `module` of the quantization block: mode, bits, group size */
static void check_entry(const cJSON *q, const char *module, const char *mode, int bits, int gs) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(q, module);
    CHECK_MSG(cJSON_IsObject(e), "no quantization entry %s", module);
    if (!cJSON_IsObject(e)) return;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "mode");
    CHECK_MSG(cJSON_IsString(m) && !strcmp(m->valuestring, mode), "%s: mode", module);
    CHECK_MSG(cJSON_GetObjectItemCaseSensitive(e, "bits")->valueint == bits, "%s: bits %d, want %d", module,
              cJSON_GetObjectItemCaseSensitive(e, "bits")->valueint, bits);
    CHECK_MSG(cJSON_GetObjectItemCaseSensitive(e, "group_size")->valueint == gs, "%s: group size", module);
}

static double logits_err(const float *a, const float *c, double *mx) {
    double err = 0;
    *mx = 0;
    for (int i = 0; i < VOCAB; i++) {
        err = fmax(err, fabs(a[i] - c[i]));
        *mx = fmax(*mx, fabs(a[i]));
    }
    return err;
}

static void test_convert_qwen3_moe_mxfp4(void) {
    model md = {0};
    CHECK(model_make(&md, &QWEN, 4243));
    char dst[600], name[160];
    snprintf(dst, sizeof dst, "%s/out-mxfp4", md.dir);
    lmx_status st = convert_mode(md.dir, dst, "mxfp4", NULL);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    lmx_weights *ws = NULL, *wd = NULL;
    CHECK(lmx_weights_open(md.dir, true, &ws) == LMX_OK && lmx_weights_open(dst, true, &wd) == LMX_OK);
    const int l = QWEN.layers - 1, E = QWEN.experts, I = QWEN.inter;
    snprintf(name, sizeof name, "model.layers.%d.mlp.switch_mlp.up_proj.weight", l);
    const lmx_tensor_view *q = wd ? lmx_weights_find(wd, name) : NULL;
    CHECK_MSG(q && q->dtype == LMX_DTYPE_U32 && q->ndim == 3 && q->shape[0] == E && q->shape[1] == I &&
                  q->shape[2] == HID * 4 / 32,
              "%s", name);
    snprintf(name, sizeof name, "model.layers.%d.mlp.switch_mlp.up_proj.scales", l);
    const lmx_tensor_view *sc = wd ? lmx_weights_find(wd, name) : NULL;
    CHECK_MSG(sc && sc->dtype == LMX_DTYPE_U8 && sc->ndim == 3 && sc->shape[0] == E && sc->shape[2] == HID / 32,
              "%s", name);
    snprintf(name, sizeof name, "model.layers.%d.mlp.switch_mlp.up_proj.biases", l);
    CHECK_MSG(wd && !lmx_weights_find(wd, name), "%s: an fp mode has no biases", name);
    snprintf(name, sizeof name, "model.layers.%d.mlp.gate.biases", l);
    CHECK_MSG(wd && lmx_weights_find(wd, name), "%s: the affine router keeps its biases", name);
    int bad = 0;
    for (int e = 0; q && sc && e < E; e++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
        const lmx_tensor_view *t = lmx_weights_find(ws, name);
        CHECK_MSG(t != NULL, "%s", name);
        for (int r = 0; t && r < I; r++) {
            float w[HID];
            uint8_t codes[HID / 2], scl[HID / 32];
            CHECK(lmx_tensor_to_f32(t, (int64_t)r * HID, HID, w) == LMX_OK);
            CHECK(lmx_mx_quantize_row(w, HID, LMX_QUANT_MXFP4, codes, scl) == LMX_OK);
            const size_t row = (size_t)e * (size_t)I + (size_t)r;
            bad += memcmp(codes, q->data + row * sizeof codes, sizeof codes) != 0 ||
                   memcmp(scl, sc->data + row * sizeof scl, sizeof scl) != 0;
        }
    }
    CHECK_MSG(bad == 0, "%d mxfp4 expert rows differ from lmx_mx_quantize_row of the source", bad);
    lmx_weights_close(ws);
    lmx_weights_close(wd);
    cJSON *j = read_config(dst);
    const cJSON *qb = cJSON_GetObjectItemCaseSensitive(j, "quantization");
    const cJSON *gm = cJSON_GetObjectItemCaseSensitive(qb, "mode");
    CHECK(cJSON_IsString(gm) && !strcmp(gm->valuestring, "mxfp4"));
    for (int k = 0; k < QWEN.layers; k++) {
        if (!spec_sparse(&QWEN, k)) continue;
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate", k);
        check_entry(qb, name, "affine", 8, 64);
    }
    cJSON_Delete(j);
    float a[VOCAB], c[VOCAB];
    if (run_logits(md.dir, a) && run_logits(dst, c)) {
        double mx, err = logits_err(a, c, &mx);
        /* runs and is a quantization of the source (the exact check is the rows above) */
        CHECK_MSG(isfinite(err) && err > 0 && err < mx, "mxfp4 logits differ by %g (max %g)", err, mx);
    } else {
        CHECK_MSG(false, "the mxfp4 MoE conversion does not run: %s", lmx_last_error_detail());
    }
    model_free(&md);
}

static void test_convert_qwen3_moe_recipe(void) {
    model md = {0};
    CHECK(model_make(&md, &QWEN, 4244));
    char dst[600], name[160];
    snprintf(dst, sizeof dst, "%s/out-mixed", md.dir);
    lmx_status st = convert_mode(md.dir, dst, NULL, "mixed_3_6");
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    cJSON *j = read_config(dst);
    const cJSON *qb = cJSON_GetObjectItemCaseSensitive(j, "quantization");
    /* L = 3: use_more_bits for layer 2 only (i >= 7L/8 = 2) */
    for (int l = 0; l < QWEN.layers; l++) {
        const int hi = l == 2 ? 6 : 3;
        if (!spec_sparse(&QWEN, l)) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj", l);
            check_entry(qb, name, "affine", hi, 64);
            continue;
        }
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate", l);
        check_entry(qb, name, "affine", 8, 64);
        snprintf(name, sizeof name, "model.layers.%d.mlp.switch_mlp.down_proj", l);
        check_entry(qb, name, "affine", hi, 64);
        snprintf(name, sizeof name, "model.layers.%d.mlp.switch_mlp.gate_proj", l);
        check_entry(qb, name, "affine", 3, 64);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj", l);
        check_entry(qb, name, "affine", hi, 64);
    }
    check_entry(qb, "lm_head", "affine", 6, 64);
    cJSON_Delete(j);
    float a[VOCAB], c[VOCAB];
    if (run_logits(md.dir, a) && run_logits(dst, c)) {
        double mx, err = logits_err(a, c, &mx);
        CHECK_MSG(isfinite(err) && err > 0 && err < mx, "mixed_3_6 logits differ by %g (max %g)", err, mx);
    } else {
        CHECK_MSG(false, "the mixed_3_6 MoE conversion does not run: %s", lmx_last_error_detail());
    }
    model_free(&md);
}

int main(void) {
    RUN(test_convert_qwen3_moe);
    RUN(test_convert_mixtral);
    RUN(test_convert_missing_expert);
    RUN(test_convert_qwen3_moe_mxfp4);
    RUN(test_convert_qwen3_moe_recipe);
    return lmx_test_summary();
}
