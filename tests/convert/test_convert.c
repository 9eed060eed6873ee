/* test_convert.c — `lmx convert` (src/convert) on committed float fixtures:
 *   (a) every quantized tensor is bit for bit what MLX's quantizer gives for the source weights
 *       rounded to the output dtype (lmx_mlx_quantize_matrix as the reference), and it re-packs
 *       bit-exact: unpack → dequantize → re-quantize with the stored scale and bias → the same q
 *       and the same packed bytes; the tensor set is mlx-lm's (2-D *.weight quantized, norms cast,
 *       lm_head dropped when tied), config.json carries both quantization blocks;
 *   (b) the converted model's logits (lmx's forward) stay within the error that the weight
 *       quantization error predicts (derivation at test_logits_bound);
 *   (c) every bit width × group size loads and runs (finite logits);
 *   the CLI: quantized input refused, DST exists (and --force), bad modes and recipes,
 *   nothing left behind on failure, sharding, files copied.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "convert/convert.h"
#include "formats/mlx_quant.h"
#include "formats/safetensors.h"
#include "formats/st_build.h"
#include "lmx_test.h"
#include "lmx_test_cmd.h"
#include "model/lm.h"
#include "util/fs.h"

#define FIX LMX_SOURCE_DIR "/tests/fixtures/models/"

static char g_tmp[1024];

static int run_cli(const char *args, char *out, size_t cap) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", LMX_CLI_PATH, args);
    return lmx_test_cmd_buf(cmd, out, cap);
}

static lmx_status convert(const char *src, const char *dst, int bits, int gs) {
    lmx_convert_options o;
    lmx_convert_options_default(&o);
    o.bits = bits;
    o.group_size = gs;
    o.threads = 2;
    return lmx_convert_model(src, dst, &o);
}

static float rounded(lmx_dtype dt, float v) {
    if (dt == LMX_DTYPE_BF16) return lmx_bf16_to_f32(lmx_f32_to_bf16(v));
    if (dt == LMX_DTYPE_F16) return lmx_f16_to_f32(lmx_f32_to_f16(v));
    return v;
}

/* Relative Frobenius errors ||W - deq(Q)|| / ||W|| of the quantized matrices, for (b). */
typedef struct qerr {
    double sum_sq; /* Σ ε_k² */
    int n;
} qerr;

/* (a) for one converted directory against its source. */
static void check_repack(const char *src, const char *dst, int bits, int gs, lmx_dtype dt, bool tied, qerr *qe) {
    lmx_weights *ws = NULL, *wd = NULL;
    CHECK(lmx_weights_open(src, true, &ws) == LMX_OK);
    CHECK(lmx_weights_open(dst, true, &wd) == LMX_OK);
    if (!ws || !wd) goto out;
    int n_quant = 0;
    for (size_t i = 0; i < lmx_weights_count(ws); i++) {
        const lmx_tensor_view *s = lmx_weights_get(ws, i);
        size_t len = strlen(s->name);
        if (tied && !strcmp(s->name, "lm_head.weight")) {
            CHECK_MSG(!lmx_weights_find(wd, s->name), "tied lm_head kept");
            continue;
        }
        bool quant = s->ndim == 2 && len > 7 && !strcmp(s->name + len - 7, ".weight") && s->shape[1] % gs == 0;
        const lmx_tensor_view *d = lmx_weights_find(wd, s->name);
        CHECK_MSG(d != NULL, "%s missing", s->name);
        if (!d) continue;
        float *w = malloc((size_t)s->numel * sizeof *w);
        CHECK(lmx_tensor_to_f32(s, 0, s->numel, w) == LMX_OK);
        for (int64_t k = 0; k < s->numel; k++) w[k] = rounded(dt, w[k]);
        if (!quant) {
            CHECK_MSG(d->dtype == dt && d->numel == s->numel, "%s: %s", s->name, lmx_dtype_name(d->dtype));
            float *v = malloc((size_t)d->numel * sizeof *v);
            CHECK(lmx_tensor_to_f32(d, 0, d->numel, v) == LMX_OK);
            CHECK_MSG(memcmp(v, w, (size_t)d->numel * 4) == 0, "%s: cast differs", s->name);
            free(v);
            free(w);
            continue;
        }
        n_quant++;
        char nm[512];
        snprintf(nm, sizeof nm, "%.*s.scales", (int)(len - 7), s->name);
        const lmx_tensor_view *sc = lmx_weights_find(wd, nm);
        snprintf(nm, sizeof nm, "%.*s.biases", (int)(len - 7), s->name);
        const lmx_tensor_view *bi = lmx_weights_find(wd, nm);
        CHECK_MSG(sc && bi, "%s: scales/biases missing", s->name);
        int64_t rows = s->shape[0], cols = s->shape[1];
        CHECK(d->dtype == LMX_DTYPE_U32 && d->shape[0] == rows && d->shape[1] == cols * bits / 32);
        if (!sc || !bi || d->dtype != LMX_DTYPE_U32) {
            free(w);
            continue;
        }
        CHECK(sc->dtype == dt && bi->dtype == dt && sc->shape[1] == cols / gs && bi->shape[1] == cols / gs);
        size_t rb = lmx_mlx_quant_row_bytes(cols, bits), es = lmx_dtype_size(dt), sb = (size_t)(cols / gs) * es;
        /* the reference: MLX's rule on the rounded source */
        uint8_t *pk = malloc(rb * (size_t)rows), *ps = malloc(sb * (size_t)rows), *pb = malloc(sb * (size_t)rows);
        CHECK(lmx_mlx_quantize_matrix(w, rows, cols, bits, gs, dt, pk, ps, pb, 1, LMX_MLX_CPU) == LMX_OK);
        CHECK_MSG(memcmp(pk, d->data, d->nbytes) == 0, "%s: packed weight differs from MLX's rule", s->name);
        CHECK_MSG(memcmp(ps, sc->data, sc->nbytes) == 0, "%s: scales differ", s->name);
        CHECK_MSG(memcmp(pb, bi->data, bi->nbytes) == 0, "%s: biases differ", s->name);
        /* re-pack: q' = rint((deq - b) / s) with the stored s, b gives the same bitstream */
        float *deq = malloc((size_t)cols * sizeof *deq);
        uint8_t *q = malloc((size_t)cols), *row = malloc(rb);
        double num = 0, den = 0;
        int64_t bad = 0;
        for (int64_t r = 0; r < rows; r++) {
            CHECK(lmx_mlx_dequantize_view(d, sc, bi, bits, gs, r, 0, cols, deq) == LMX_OK);
            for (int64_t k = 0; k < cols; k++) {
                const uint8_t *sp = sc->data + (size_t)r * sb + (size_t)(k / gs) * es;
                const uint8_t *bp = bi->data + (size_t)r * sb + (size_t)(k / gs) * es;
                float s_ = es == 4 ? 0 : (dt == LMX_DTYPE_BF16 ? lmx_bf16_to_f32((uint16_t)(sp[0] | sp[1] << 8))
                                                              : lmx_f16_to_f32((uint16_t)(sp[0] | sp[1] << 8)));
                float b_ = es == 4 ? 0 : (dt == LMX_DTYPE_BF16 ? lmx_bf16_to_f32((uint16_t)(bp[0] | bp[1] << 8))
                                                              : lmx_f16_to_f32((uint16_t)(bp[0] | bp[1] << 8)));
                if (es == 4) memcpy(&s_, sp, 4), memcpy(&b_, bp, 4);
                float v = rintf((deq[k] - b_) / s_);
                v = v < 0 ? 0 : v > (float)((1 << bits) - 1) ? (float)((1 << bits) - 1) : v;
                q[k] = (uint8_t)v;
                double e = (double)deq[k] - (double)w[r * cols + k];
                num += e * e;
                den += (double)w[r * cols + k] * w[r * cols + k];
            }
            lmx_mlx_pack(q, cols, bits, row);
            if (memcmp(row, d->data + (size_t)r * rb, rb)) bad++;
        }
        CHECK_MSG(bad == 0, "%s: %lld rows do not re-pack bit-exact", s->name, (long long)bad);
        if (qe && den > 0) qe->sum_sq += num / den, qe->n++;
        free(deq), free(q), free(row), free(pk), free(ps), free(pb), free(w);
    }
    CHECK(n_quant > 0);
    /* nothing else in the output: each output tensor is a source tensor or a .scales/.biases */
    for (size_t i = 0; i < lmx_weights_count(wd); i++) {
        const char *n = lmx_weights_get(wd, i)->name;
        size_t len = strlen(n);
        bool extra = len > 7 && (!strcmp(n + len - 7, ".scales") || !strcmp(n + len - 7, ".biases"));
        CHECK_MSG(extra || lmx_weights_find(ws, n), "unexpected output tensor %s", n);
    }
out:
    lmx_weights_close(ws);
    lmx_weights_close(wd);
}

static void test_repack_all(void) {
    /* llama-untied-f16: hidden 128, intermediate 256, vocab 320, f16, 2 shards, untied: every in
     * dimension is a multiple of 128, so every bit width and group size quantizes every matrix */
    static const int bits[] = {2, 3, 4, 5, 6, 8}, gss[] = {32, 64, 128};
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++) {
            char dst[1200];
            snprintf(dst, sizeof dst, "%s/u-%d-%d", g_tmp, bits[b], gss[g]);
            lmx_status st = convert(FIX "llama-untied-f16", dst, bits[b], gss[g]);
            CHECK_MSG(st == LMX_OK, "bits %d gs %d: %s", bits[b], gss[g], lmx_last_error_detail());
            if (st != LMX_OK) continue;
            check_repack(FIX "llama-untied-f16", dst, bits[b], gss[g], LMX_DTYPE_F16, false, NULL);
            /* (c) loads and runs */
            lmx_lm *lm = NULL;
            lmx_lm_options lo = {.n_threads = 1, .device = LMX_DEVICE_CPU};
            CHECK_MSG(lmx_lm_open(dst, &lo, &lm) == LMX_OK, "%s: %s", dst, lmx_last_error_detail());
            if (lm) {
                CHECK(lmx_lm_config(lm)->quantized);
                CHECK_EQ_INT(lmx_lm_config(lm)->quant.bits, bits[b]);
                CHECK_EQ_INT(lmx_lm_config(lm)->quant.group_size, gss[g]);
                lmx_kv *kv = NULL;
                float logits[320];
                int32_t ids[4] = {1, 17, 99, 300};
                CHECK(lmx_kv_create(lm, 16, &kv) == LMX_OK);
                CHECK(kv && lmx_lm_forward(lm, kv, ids, 4, logits) == LMX_OK);
                bool finite = true;
                for (int i = 0; i < 320; i++) finite = finite && isfinite(logits[i]);
                CHECK_MSG(finite, "bits %d gs %d: non-finite logits", bits[b], gss[g]);
                lmx_kv_destroy(kv);
                lmx_lm_close(lm);
            }
        }
    /* tied bf16 (llama-tiny: lm_head goes, the quantized embedding is the head) and f32 input
     * (llama-bias-f32: to bf16 by --dtype, biases stay float) */
    char dst[1200];
    snprintf(dst, sizeof dst, "%s/tiny-4-32", g_tmp);
    CHECK(convert(FIX "llama-tiny", dst, 4, 32) == LMX_OK);
    check_repack(FIX "llama-tiny", dst, 4, 32, LMX_DTYPE_BF16, true, NULL);
    lmx_convert_options o;
    lmx_convert_options_default(&o);
    o.bits = 6, o.group_size = 64, o.dtype_set = true, o.dtype = LMX_DTYPE_BF16;
    snprintf(dst, sizeof dst, "%s/bias-6-64", g_tmp);
    CHECK_MSG(lmx_convert_model(FIX "llama-bias-f32", dst, &o) == LMX_OK, "%s", lmx_last_error_detail());
    check_repack(FIX "llama-bias-f32", dst, 6, 64, LMX_DTYPE_BF16, false, NULL);
    o.dtype_set = false; /* no --dtype: the config's float32 stays */
    snprintf(dst, sizeof dst, "%s/bias-8-32-f32", g_tmp);
    o.bits = 8, o.group_size = 32;
    CHECK(lmx_convert_model(FIX "llama-bias-f32", dst, &o) == LMX_OK);
    check_repack(FIX "llama-bias-f32", dst, 8, 32, LMX_DTYPE_F32, false, NULL);
}

/* The logits of a prompt through lmx's forward (CPU, 1 thread). */
static bool logits_of(const char *dir, const int32_t *ids, int n, float *out, int vocab) {
    lmx_lm *lm = NULL;
    lmx_lm_options lo = {.n_threads = 1, .device = LMX_DEVICE_CPU};
    if (lmx_lm_open(dir, &lo, &lm) != LMX_OK) return false;
    lmx_kv *kv = NULL;
    bool ok = lmx_lm_vocab_size(lm) == vocab && lmx_kv_create(lm, 64, &kv) == LMX_OK &&
              lmx_lm_forward(lm, kv, ids, n, out) == LMX_OK;
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    return ok;
}

/* (b) The bound. Write each quantized matrix as W + E, with ε_k = ||E_k||_F / ||W_k||_F measured
 * exactly above from the files. To first order the logits change by Σ_k J_k E_k; in a pre-norm
 * transformer every matrix acts on an RMS-normalised (or already bounded) activation and adds to
 * the residual stream, so sub-layer k's output moves by about ε_k of its size (||E x|| / ||W x|| ≈
 * ||E||_F / ||W||_F for an x not aligned with E, which holds for rounding errors independent of
 * x). Rounding errors of different matrices are independent with zero mean, so they add in
 * quadrature: the relative logits error ||Δz|| / ||z|| is expected near sqrt(Σ ε_k²). The test
 * allows 2× that (margin for the sum of independent terms and for the gain of attention and SiLU,
 * ~1 on these random-weight models; measured: 0.68× at 8 bits, 0.61× at 4 bits) and requires at
 * least a tenth of it (the quantized weights are really the ones used). ε itself scales with the step
 * (range / (2^bits - 1)), so 8-bit is ~17× tighter than 4-bit, and the test also checks that the
 * measured 8-bit error is smaller than the 4-bit one by at least 4×. */
static double logits_rel_err(const char *src, const char *dst, const char *name, double *pred) {
    int32_t ids[24];
    for (int i = 0; i < 24; i++) ids[i] = (int32_t)((i * 37 + 5) % 300) + 1;
    float a[512], b[512];
    int vocab = 320;
    if (strstr(src, "llama-tiny")) vocab = 256;
    CHECK(logits_of(src, ids, 24, a, vocab));
    CHECK(logits_of(dst, ids, 24, b, vocab));
    double num = 0, den = 0;
    for (int i = 0; i < vocab; i++) {
        double z = a[i] - (double)b[i];
        num += z * z;
        den += (double)a[i] * a[i];
    }
    double rel = sqrt(num / den);
    fprintf(stderr, "  %s: logits rel err %.4g, predicted sqrt(sum eps^2) %.4g, bound %.4g\n", name, rel, *pred,
            2 * *pred);
    return rel;
}

static void test_logits_bound(void) {
    double rel[2];
    static const int bits[2] = {8, 4};
    for (int m = 0; m < 2; m++) {
        char dst[1200], name[64];
        snprintf(dst, sizeof dst, "%s/lb-%d", g_tmp, bits[m]);
        snprintf(name, sizeof name, "llama-untied-f16 %d-bit g64", bits[m]);
        CHECK(convert(FIX "llama-untied-f16", dst, bits[m], 64) == LMX_OK);
        qerr qe = {0, 0};
        check_repack(FIX "llama-untied-f16", dst, bits[m], 64, LMX_DTYPE_F16, false, &qe);
        double pred = sqrt(qe.sum_sq);
        rel[m] = logits_rel_err(FIX "llama-untied-f16", dst, name, &pred);
        CHECK_MSG(rel[m] <= 2 * pred, "%s: logits error %g over the bound %g", name, rel[m], 2 * pred);
        CHECK_MSG(rel[m] >= pred / 10, "%s: logits error %g implausibly small (%g)", name, rel[m], pred);
        CHECK(qe.n == 3 * 7 + 2);
    }
    CHECK_MSG(rel[0] * 4 <= rel[1], "8-bit error %g not well below the 4-bit one %g", rel[0], rel[1]);
}

static void test_cli(void) {
    char args[8192], out[16384], dst[1200], part[1300];
    snprintf(dst, sizeof dst, "%s/cli-q4", g_tmp);
    snprintf(part, sizeof part, "%s.partial", dst);
    snprintf(args, sizeof args, "convert %s %s --bits 4 --group-size 64", FIX "llama-tiny", dst);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 0);
    CHECK(strstr(out, "converted") != NULL);
    CHECK(!lmx_fs_exists(part));
    /* config.json blocks, generation_config copied */
    char p[1400], *text = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/config.json", dst);
    CHECK(lmx_fs_read_file(p, 1 << 20, &text, &len) == LMX_OK);
    CHECK(text && strstr(text, "\"quantization\":") && strstr(text, "\"quantization_config\":") &&
          strstr(text, "\"mode\":\t\"affine\""));
    free(text);
    snprintf(p, sizeof p, "%s/generation_config.json", dst);
    CHECK(lmx_fs_is_file(p));
    /* DST exists → refused, untouched; --force replaces it */
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    CHECK(strstr(out, "already exists") && strstr(out, "--force"));
    snprintf(args, sizeof args, "convert %s %s --bits 8 --force", FIX "llama-tiny", dst);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 0);
    snprintf(p, sizeof p, "logits %s --prompt-ids 1,2,3 --top 1", dst);
    CHECK_EQ_INT(run_cli(p, out, sizeof out), 0);
    /* quantized input, bad modes and recipes, bad values: nothing left behind (the modes and
     * recipes themselves: test_convert_mx.c) */
    char d2[1200], part2[1300];
    snprintf(d2, sizeof d2, "%s/cli-bad", g_tmp);
    snprintf(part2, sizeof part2, "%s.partial", d2);
    snprintf(args, sizeof args, "convert %s %s", FIX "llama-q4-g64", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "already quantized") != NULL, "%s", out);
    snprintf(args, sizeof args, "convert %s %s --mode mxfp4 --group-size 64", FIX "llama-tiny", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "group size 32") != NULL, "%s", out);
    snprintf(args, sizeof args, "convert %s %s --mode mxfp6", FIX "llama-tiny", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "unknown mode") != NULL, "%s", out);
    snprintf(args, sizeof args, "convert %s %s --recipe mixed_4_6 --mode nvfp4", FIX "llama-tiny", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "affine only") != NULL, "%s", out);
    snprintf(args, sizeof args, "convert %s %s --recipe mixed_5_7", FIX "llama-tiny", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "unknown recipe") != NULL, "%s", out);
    snprintf(args, sizeof args, "convert %s %s --bits 7", FIX "llama-tiny", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    snprintf(args, sizeof args, "convert %s %s --group-size 16", FIX "llama-tiny", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    snprintf(args, sizeof args, "convert %s/nope %s", g_tmp, d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
    snprintf(args, sizeof args, "convert %s", FIX "llama-tiny");
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 2);
    CHECK(!lmx_fs_exists(d2) && !lmx_fs_exists(part2));
    /* a non-finite weight fails mid-write: DST.partial is removed, DST never appears */
    char src[1200];
    snprintf(src, sizeof src, "%s/nan-src", g_tmp);
    mkdir(src, 0755);
    snprintf(p, sizeof p, "cp %s/config.json %s/ && true", FIX "llama-tiny", src);
    CHECK(system(p) == 0);
    float nanw[64 * 64];
    for (int i = 0; i < 64 * 64; i++) nanw[i] = (float)(i % 7) * 0.01f;
    nanw[100] = NAN;
    st_tensor t = {"model.embed_tokens.weight", "F32", 2, {64, 64}, nanw, sizeof nanw};
    size_t blen;
    uint8_t *img = st_build(&t, 1, NULL, &blen);
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    CHECK(img && st_write_file(p, img, blen) == 0);
    free(img);
    CHECK(convert(src, d2, 4, 64) != LMX_OK);
    CHECK(strstr(lmx_last_error_detail(), "non-finite") != NULL);
    CHECK(!lmx_fs_exists(d2) && !lmx_fs_exists(part2));
    /* sharding: small shards + index, loads the same as one file */
    snprintf(d2, sizeof d2, "%s/cli-shards", g_tmp);
    snprintf(args, sizeof args, "convert %s %s --bits 4 --shard-size 30000", FIX "llama-untied-f16", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 0);
    char cmdl[8300];
    snprintf(cmdl, sizeof cmdl, "ls %s/model-00001-of-*.safetensors %s/model.safetensors.index.json >/dev/null", d2, d2);
    CHECK(system(cmdl) == 0);
    snprintf(args, sizeof args, "logits %s --prompt-ids 1,2,3 --top 1", d2);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 0);
}

/* every committed float fixture (each family: llama, mistral, qwen2 with biases, qwen3 q/k norms,
 * phi3 fused projections and longrope, gemma3 text and the multimodal wrapper) converts, loads and
 * runs at 4 bits g32, and its greedy top token comes from finite logits */
static void test_families(void) {
    static const char *const fams[] = {"gemma3-mm-prefix", "gemma3-text-bf16-h96", "gemma3-text-window",
                                       "llama-bias-f32", "llama-eos-stop", "llama3-rope-scaled", "mistral-tiny",
                                       "mistral-window", "phi3-fused", "phi3-longrope", "qwen2-bias", "qwen3-qknorm"};
    for (size_t i = 0; i < sizeof fams / sizeof *fams; i++) {
        char src[1200], dst[1200];
        snprintf(src, sizeof src, FIX "%s", fams[i]);
        snprintf(dst, sizeof dst, "%s/fam-%s", g_tmp, fams[i]);
        lmx_status st = convert(src, dst, 4, 32);
        CHECK_MSG(st == LMX_OK, "%s: %s", fams[i], lmx_last_error_detail());
        lmx_lm *lm = NULL;
        lmx_lm_options lo = {.n_threads = 1, .device = LMX_DEVICE_CPU};
        CHECK_MSG(st == LMX_OK && lmx_lm_open(dst, &lo, &lm) == LMX_OK, "%s: %s", fams[i], lmx_last_error_detail());
        if (!lm) continue;
        int vocab = lmx_lm_vocab_size(lm);
        float *logits = malloc((size_t)vocab * sizeof *logits);
        lmx_kv *kv = NULL;
        int32_t ids[3] = {1, 2, 3};
        CHECK(lmx_kv_create(lm, 16, &kv) == LMX_OK && lmx_lm_forward(lm, kv, ids, 3, logits) == LMX_OK);
        bool finite = true;
        for (int k = 0; k < vocab; k++) finite = finite && isfinite(logits[k]);
        CHECK_MSG(finite, "%s: non-finite logits", fams[i]);
        free(logits);
        lmx_kv_destroy(kv);
        lmx_lm_close(lm);
    }
}

int main(void) {
    if (!st_tmpdir(g_tmp, sizeof g_tmp)) {
        fprintf(stderr, "no temp dir\n");
        return 1;
    }
    RUN(test_repack_all);
    RUN(test_logits_bound);
    RUN(test_cli);
    RUN(test_families);
    lmx_convert_rmtree(g_tmp);
    return lmx_test_summary();
}
