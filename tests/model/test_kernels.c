/* test_kernels.c — CPU backend ops against naive double-precision references: quantized matmul and
 * embedding at every bits × group size (with an MLX-style packer written here, negative scales
 * included), dense F32/F16/BF16 matmul with bias, rmsnorm (w and 1+w), rope (default, llama3
 * scaling, partial rotary, mscale), attention (GQA, causal offset, sliding window, softcap), and
 * the activations. Each op runs with 1 and 3 threads; results must be identical. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "formats/safetensors.h"
#include "lmx_test.h"
#include "model/rope.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* [0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(void) { return (float)(urand() * 2 - 1); }

static lmx_backend *be1, *be3;

static lmx_buf *buf_from(lmx_backend *be, const float *x, size_t n) {
    lmx_buf *b = NULL;
    CHECK(be->ops->buf_alloc(be, n, &b) == LMX_OK);
    if (b && x) be->ops->buf_write(be, b, 0, x, n);
    return b;
}

static double max_abs(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

#include "model/mlx_pack.h"

static void test_packer_layout(void) {
    /* 4 bits: values 1..8 → first u32 word 0x87654321 (element 0 in the low bits) */
    uint8_t row[4] = {0};
    for (int k = 0; k < 8; k++) put_bits(row, k, 4, (uint32_t)(k + 1));
    uint32_t w;
    memcpy(&w, row, 4);
    CHECK_EQ_INT(w, 0x87654321u);
    /* 3 bits: 8 values in 3 bytes: v_k at bit 3k */
    uint8_t r3[3] = {0};
    for (int k = 0; k < 8; k++) put_bits(r3, k, 3, (uint32_t)k);
    uint32_t v = (uint32_t)r3[0] | (uint32_t)r3[1] << 8 | (uint32_t)r3[2] << 16;
    for (int k = 0; k < 8; k++) CHECK_EQ_INT((v >> (3 * k)) & 7, k);
}

/* T >= 4: the blocked prefill path; T < 4: the per-row (fused decode+dot) path */
static void check_quant(lmx_backend *be, int bits, int gs, bool with_bias, int T) {
    const int rows = 37, cols = 256;
    float *w = malloc((size_t)rows * cols * sizeof *w);
    for (int i = 0; i < rows * cols; i++) w[i] = frand() * (i % 7 == 0 ? 2.0f : 0.5f) + (i % 13 == 0 ? 0.7f : 0.0f);
    qmat q = quantize(w, rows, cols, bits, gs);
    int neg = 0;
    for (int i = 0; i < rows * cols / gs; i++) neg += q.scales[i] < 0;
    CHECK(neg > 0); /* the MLX algorithm produces negative scales for max-dominated groups */
    float bias[37];
    for (int i = 0; i < rows; i++) bias[i] = frand();
    lmx_weight_desc d = {.name = "q", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .dtype = LMX_DTYPE_F32,
                         .data = q.packed, .scales = q.scales, .biases = q.biases, .bits = bits, .group_size = gs,
                         .bias = with_bias ? bias : NULL, .bias_dtype = LMX_DTYPE_F32};
    lmx_bweight *bw = NULL;
    CHECK(be->ops->weight_upload(be, &d, &bw) == LMX_OK);
    float x[6 * 256];
    for (int i = 0; i < T * cols; i++) x[i] = frand();
    lmx_buf *bx = buf_from(be, x, (size_t)T * cols), *by = buf_from(be, NULL, (size_t)T * rows);
    CHECK(be->ops->matmul(be, bw, bx, 0, T, by) == LMX_OK);
    float y[6 * 37];
    be->ops->buf_read(be, by, 0, y, (size_t)T * rows);
    double ref[6 * 37], err = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < rows; r++) {
            double s = with_bias ? bias[r] : 0;
            for (int k = 0; k < cols; k++) s += (double)x[t * cols + k] * q.deq[(size_t)r * cols + k];
            ref[t * rows + r] = s;
        }
    for (int i = 0; i < T * rows; i++) err = fmax(err, fabs(y[i] - ref[i]));
    CHECK_MSG(err <= 1e-4 * (1 + max_abs(ref, (size_t)T * rows)), "bits %d gs %d: max err %g", bits, gs, err);
    /* quantized embedding: rows dequantized, scaled */
    int32_t ids[3] = {0, 36, 17};
    lmx_buf *be_out = buf_from(be, NULL, (size_t)3 * cols);
    CHECK(be->ops->embed(be, bw, ids, 3, 0.5f, be_out) == LMX_OK);
    float e[3 * 256];
    be->ops->buf_read(be, be_out, 0, e, (size_t)3 * cols);
    double eerr = 0;
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < cols; k++) eerr = fmax(eerr, fabs(e[t * cols + k] - 0.5 * q.deq[(size_t)ids[t] * cols + k]));
    CHECK_MSG(eerr < 1e-5, "embed bits %d gs %d: err %g", bits, gs, eerr);
    /* row selection (fused-projection split): rows 5..14 */
    lmx_weight_desc d2 = d;
    d2.row0 = 5;
    d2.rows = 10;
    lmx_bweight *bw2 = NULL;
    CHECK(be->ops->weight_upload(be, &d2, &bw2) == LMX_OK);
    lmx_buf *by2 = buf_from(be, NULL, (size_t)T * 10);
    CHECK(be->ops->matmul(be, bw2, bx, 0, T, by2) == LMX_OK);
    float y2[60];
    be->ops->buf_read(be, by2, 0, y2, (size_t)T * 10);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 10; r++) CHECK_NEAR(y2[t * 10 + r], y[t * rows + r + 5], 1e-5);
    be->ops->weight_free(be, bw);
    be->ops->weight_free(be, bw2);
    be->ops->buf_free(be, bx);
    be->ops->buf_free(be, by);
    be->ops->buf_free(be, by2);
    be->ops->buf_free(be, be_out);
    qfree(&q);
    free(w);
}

static void test_quant_matmul_all(void) {
    static const int bits[] = {2, 3, 4, 5, 6, 8}, gss[] = {32, 64, 128};
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++) {
            check_quant(be1, bits[b], gss[g], (b + g) % 2 == 0, 3);
            check_quant(be1, bits[b], gss[g], (b + g) % 2 == 1, 5);
            check_quant(be3, bits[b], gss[g], (b + g) % 2 == 1, 1);
            check_quant(be3, bits[b], gss[g], (b + g) % 2 == 0, 2);
            check_quant(be3, bits[b], gss[g], (b + g) % 2 == 1, 6);
        }
}

static void test_quant_bf16_scales(void) {
    /* scales/biases stored as bf16 (as in mlx-community files) */
    const int rows = 8, cols = 64, gs = 32, bits = 4;
    float w[8 * 64];
    for (int i = 0; i < rows * cols; i++) w[i] = frand();
    qmat q = quantize(w, rows, cols, bits, gs);
    uint16_t s16[16], b16[16];
    double deq[8 * 64];
    for (int i = 0; i < rows * cols / gs; i++) {
        s16[i] = lmx_f32_to_bf16(q.scales[i]);
        b16[i] = lmx_f32_to_bf16(q.biases[i]);
    }
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            int g = r * 2 + k / gs;
            double s = q.scales[g], b = q.biases[g];
            double qv = fabs(s) > 0 ? rint((q.deq[r * cols + k] - b) / s) : 0;
            deq[r * cols + k] = lmx_bf16_to_f32(s16[g]) * qv + lmx_bf16_to_f32(b16[g]);
        }
    lmx_weight_desc d = {.name = "q", .kind = LMX_WEIGHT_QUANT, .rows = rows, .cols = cols, .dtype = LMX_DTYPE_BF16,
                         .data = q.packed, .scales = s16, .biases = b16, .bits = bits, .group_size = gs};
    lmx_bweight *bw = NULL;
    CHECK(be3->ops->weight_upload(be3, &d, &bw) == LMX_OK);
    float x[64];
    for (int i = 0; i < cols; i++) x[i] = frand();
    lmx_buf *bx = buf_from(be3, x, 64), *by = buf_from(be3, NULL, 8);
    CHECK(be3->ops->matmul(be3, bw, bx, 0, 1, by) == LMX_OK);
    float y[8];
    be3->ops->buf_read(be3, by, 0, y, 8);
    /* 4-bit weights are repacked at every level and meet x quantized to int16 per group (step
     * d_g = max|x_g| / 32767): the result may differ by up to Σ_k |w_k|·d_g/2 more */
    for (int r = 0; r < rows; r++) {
        double s = 0, bound = 0;
        for (int g = 0; g < cols / gs; g++) {
            double amax = 0;
            for (int k = g * gs; k < (g + 1) * gs; k++) amax = fmax(amax, fabs(x[k]));
            for (int k = g * gs; k < (g + 1) * gs; k++) bound += fabs(deq[r * cols + k]) * amax / 32767 / 2;
        }
        for (int k = 0; k < cols; k++) s += x[k] * deq[r * cols + k];
        CHECK_NEAR(y[r], s, 1e-4 + bound);
    }
    be3->ops->weight_free(be3, bw);
    be3->ops->buf_free(be3, bx);
    be3->ops->buf_free(be3, by);
    qfree(&q);
}

static void test_dense_matmul_dtypes(void) {
    const int rows = 33, cols = 40;
    float w[33 * 40], x[5 * 40], bias[33];
    for (int i = 0; i < rows * cols; i++) w[i] = frand();
    for (int i = 0; i < 5 * cols; i++) x[i] = frand();
    for (int i = 0; i < rows; i++) bias[i] = frand();
    uint16_t wb[33 * 40 + 1], wh[33 * 40 + 1];
    /* store at an odd byte offset: data may be unaligned */
    uint8_t *unal = malloc(sizeof w + 1);
    memcpy(unal + 1, w, sizeof w);
    for (int i = 0; i < rows * cols; i++) {
        wb[i] = lmx_f32_to_bf16(w[i]);
        wh[i] = lmx_f32_to_f16(w[i]);
    }
    for (int dt = 0; dt < 3; dt++) {
        lmx_weight_desc d = {.name = "w", .kind = LMX_WEIGHT_DENSE, .rows = rows, .cols = cols,
                             .dtype = (lmx_dtype)dt, .bias = bias, .bias_dtype = LMX_DTYPE_F32};
        d.data = dt == 0 ? (const void *)(unal + 1) : dt == 1 ? (const void *)wh : (const void *)wb;
        /* T = 1: fused half-precision decode path; 2: per-row path; 5: blocked prefill path */
        for (int bi = 0; bi < 6; bi++) {
            lmx_backend *be = bi % 2 ? be3 : be1;
            const int T = bi < 2 ? 1 : bi < 4 ? 2 : 5;
            lmx_bweight *bw = NULL;
            CHECK(be->ops->weight_upload(be, &d, &bw) == LMX_OK);
            lmx_buf *bx = buf_from(be, x, (size_t)T * cols), *by = buf_from(be, NULL, (size_t)T * rows);
            CHECK(be->ops->matmul(be, bw, bx, 0, T, by) == LMX_OK);
            float y[5 * 33];
            be->ops->buf_read(be, by, 0, y, (size_t)T * rows);
            for (int t = 0; t < T; t++)
                for (int r = 0; r < rows; r++) {
                    double s = bias[r];
                    for (int k = 0; k < cols; k++) {
                        double wv = dt == 0 ? w[r * cols + k]
                                    : dt == 1 ? lmx_f16_to_f32(wh[r * cols + k])
                                              : lmx_bf16_to_f32(wb[r * cols + k]);
                        s += x[t * cols + k] * wv;
                    }
                    CHECK_NEAR(y[t * rows + r], s, 1e-4);
                }
            be->ops->weight_free(be, bw);
            be->ops->buf_free(be, bx);
            be->ops->buf_free(be, by);
        }
    }
    free(unal);
}

static void test_rmsnorm(void) {
    const int rows = 7, dim = 48;
    float x[7 * 48], w[48];
    for (int i = 0; i < rows * dim; i++) x[i] = frand() * 3;
    for (int i = 0; i < dim; i++) w[i] = frand();
    lmx_weight_desc d = {.name = "n", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = dim, .dtype = LMX_DTYPE_F32, .data = w};
    for (int p1 = 0; p1 < 2; p1++) {
        lmx_bweight *bw = NULL;
        CHECK(be3->ops->weight_upload(be3, &d, &bw) == LMX_OK);
        lmx_buf *bx = buf_from(be3, x, (size_t)rows * dim);
        CHECK(be3->ops->rmsnorm(be3, bx, bx, rows, dim, bw, 1e-6f, p1) == LMX_OK);
        float y[7 * 48];
        be3->ops->buf_read(be3, bx, 0, y, (size_t)rows * dim);
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
            double inv = 1 / sqrt(ss / dim + 1e-6);
            for (int i = 0; i < dim; i++)
                CHECK_NEAR(y[r * dim + i], x[r * dim + i] * inv * (p1 ? 1.0 + w[i] : w[i]), 1e-5);
        }
        be3->ops->weight_free(be3, bw);
        be3->ops->buf_free(be3, bx);
    }
}

static void test_rope_tables(void) {
    /* default: base^(-2i/d) */
    lmx_rope_config r = {.type = LMX_ROPE_DEFAULT, .theta = 10000, .factor = 1, .attention_factor = 1};
    float f[64];
    lmx_rope_inv_freq(&r, 64, NULL, f);
    for (int i = 0; i < 32; i++) CHECK_NEAR(f[i], pow(10000.0, -2.0 * i / 64), 1e-6 * pow(10000.0, -2.0 * i / 64));
    /* llama3 with a small original context so that all three bands occur (HF formula, double) */
    r = (lmx_rope_config){.type = LMX_ROPE_LLAMA3, .theta = 500000, .factor = 8, .low_freq_factor = 1,
                          .high_freq_factor = 4, .original_max_position = 64, .attention_factor = 1};
    lmx_rope_inv_freq(&r, 64, NULL, f);
    int bands[3] = {0};
    for (int i = 0; i < 32; i++) {
        double inv = pow(500000.0, -2.0 * i / 64), wl = 2 * M_PI / inv, lo_wl = 64.0, hi_wl = 16.0, want;
        if (wl < hi_wl) {
            want = inv;
            bands[0]++;
        } else if (wl > lo_wl) {
            want = inv / 8;
            bands[2]++;
        } else {
            double s = (64.0 / wl - 1) / 3;
            want = (1 - s) * inv / 8 + s * inv;
            bands[1]++;
        }
        CHECK_NEAR(f[i], want, 2e-6 * want);
    }
    CHECK(bands[0] > 0 && bands[1] > 0 && bands[2] > 0);
    /* yarn (transformers 5): ramp between dims low..high of the correction range */
    for (int tr = 0; tr < 2; tr++) {
        r = (lmx_rope_config){.type = LMX_ROPE_YARN, .theta = 10000, .factor = 8, .original_max_position = 256,
                              .beta_fast = 32, .beta_slow = 1, .truncate = tr, .attention_factor = 1};
        lmx_rope_inv_freq(&r, 64, NULL, f);
        double lo = 64 * log(256 / (32 * 2 * M_PI)) / (2 * log(10000.0));
        double hi = 64 * log(256 / (1 * 2 * M_PI)) / (2 * log(10000.0));
        if (tr) {
            lo = floor(lo);
            hi = ceil(hi);
        }
        lo = fmax(lo, 0);
        hi = fmin(hi, 63);
        int interp = 0, extrap = 0;
        for (int i = 0; i < 32; i++) {
            double pf = pow(10000.0, 2.0 * i / 64), ramp = fmin(fmax((i - lo) / (hi - lo), 0), 1);
            double want = (1 / (8 * pf)) * ramp + (1 / pf) * (1 - ramp);
            interp += ramp == 1;
            extrap += ramp == 0;
            CHECK_NEAR(f[i], want, 3e-6 * want);
        }
        CHECK(interp > 0 && extrap > 0);
    }
    /* linear and longrope */
    r = (lmx_rope_config){.type = LMX_ROPE_LINEAR, .theta = 10000, .factor = 4, .attention_factor = 1};
    lmx_rope_inv_freq(&r, 16, NULL, f);
    for (int i = 0; i < 8; i++) CHECK_NEAR(f[i], pow(10000.0, -2.0 * i / 16) / 4, 1e-6);
    float ext[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    r = (lmx_rope_config){.type = LMX_ROPE_LONGROPE, .theta = 10000, .factor = 1, .attention_factor = 1};
    lmx_rope_inv_freq(&r, 16, ext, f);
    for (int i = 0; i < 8; i++) CHECK_NEAR(f[i], pow(10000.0, -2.0 * i / 16) / ext[i], 1e-6);
}

/* RoPE through rope_qk_store (no per-head norm): q and k rotated in place, the rotated k rows and
 * the v rows in the caches at slot pos % capacity */
static void test_rope_kernel(void) {
    const int T = 4, H = 3, D = 16, rot = 8, cap = 8; /* partial rotary: only the first 8 features rotate;
                                                      * slots 0, 5, 6, 3 */
    float x[4 * 3 * 16], vv[4 * 3 * 16], inv[4];
    for (int i = 0; i < T * H * D; i++) x[i] = frand(), vv[i] = frand();
    for (int i = 0; i < rot / 2; i++) inv[i] = (float)pow(100.0, -2.0 * i / rot);
    int32_t pos[4] = {0, 5, 6, 131};
    const float ms = 1.25f;
    lmx_weight_desc d = {.name = "rope", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = rot / 2, .dtype = LMX_DTYPE_F32,
                         .data = inv};
    for (int bi = 0; bi < 2; bi++) {
        lmx_backend *be = bi ? be3 : be1;
        lmx_bweight *bw = NULL;
        CHECK(be->ops->weight_upload(be, &d, &bw) == LMX_OK);
        lmx_buf *bq = buf_from(be, x, (size_t)T * H * D), *bk = buf_from(be, x, (size_t)T * H * D);
        lmx_buf *bv = buf_from(be, vv, (size_t)T * H * D);
        lmx_buf *kc = buf_from(be, NULL, (size_t)H * cap * D), *vc = buf_from(be, NULL, (size_t)H * cap * D);
        lmx_qk_rope_params rp = {.n_tokens = T, .n_heads = H, .n_kv_heads = H, .head_dim = D, .rot_dim = rot,
                                 .capacity = cap, .inv_freq = bw, .mscale = ms};
        CHECK(be->ops->rope_qk_store(be, bq, bk, bv, kc, vc, &rp, pos) == LMX_OK);
        float y[4 * 3 * 16], yk[4 * 3 * 16], ck[3 * 8 * 16], cv[3 * 8 * 16];
        be->ops->buf_read(be, bq, 0, y, (size_t)T * H * D);
        be->ops->buf_read(be, bk, 0, yk, (size_t)T * H * D);
        be->ops->buf_read(be, kc, 0, ck, (size_t)H * cap * D);
        be->ops->buf_read(be, vc, 0, cv, (size_t)H * cap * D);
        CHECK(memcmp(y, yk, sizeof y) == 0); /* q and k: the same rows, the same rotation */
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                const float *a = x + (t * H + h) * D;
                const float *b = y + (t * H + h) * D;
                for (int i = 0; i < rot / 2; i++) {
                    double ang = (double)pos[t] * inv[i], c = cos(ang) * ms, s = sin(ang) * ms;
                    CHECK_NEAR(b[i], a[i] * c - a[i + rot / 2] * s, 2e-5 * (1 + pos[t]));
                    CHECK_NEAR(b[i + rot / 2], a[i + rot / 2] * c + a[i] * s, 2e-5 * (1 + pos[t]));
                }
                for (int i = rot; i < D; i++) CHECK(b[i] == a[i]);
                const size_t slot = ((size_t)h * cap + (size_t)(pos[t] % cap)) * D;
                CHECK(memcmp(ck + slot, yk + (t * H + h) * D, sizeof(float) * D) == 0);
                CHECK(memcmp(cv + slot, vv + (t * H + h) * D, sizeof(float) * D) == 0);
            }
        be->ops->weight_free(be, bw);
        lmx_buf *bs[] = {bq, bk, bv, kc, vc};
        for (int i = 0; i < 5; i++) be->ops->buf_free(be, bs[i]);
    }
}

/* naive attention over cache positions, double precision; sinks[n_heads] (or NULL): one more logit per
 * head in the softmax (transformers' GptOss eager attention: concatenated, max-subtracted, dropped) */
static void attn_ref(const float *q, const float *kc, const float *vc, const lmx_attn_params *p, const int32_t *pos,
                     const float *sinks, double *out) {
    const int D = p->head_dim, grp = p->n_heads / p->n_kv_heads;
    for (int t = 0; t < p->n_tokens; t++)
        for (int h = 0; h < p->n_heads; h++) {
            int kh = h / grp;
            double sc[512], mx = -1e300, sum = 0;
            for (int j = 0; j <= pos[t]; j++) {
                bool vis = p->window <= 0 || pos[t] - j < p->window;
                if (!vis) {
                    sc[j] = -INFINITY;
                    continue;
                }
                double s = 0;
                for (int d = 0; d < D; d++)
                    s += (double)q[(t * p->n_heads + h) * D + d] * kc[((size_t)kh * p->capacity + j) * D + d];
                s *= p->scale;
                if (p->softcap > 0) s = p->softcap * tanh(s / p->softcap);
                sc[j] = s;
                mx = fmax(mx, s);
            }
            if (sinks) mx = fmax(mx, sinks[h]);
            for (int j = 0; j <= pos[t]; j++) {
                sc[j] = isinf(sc[j]) ? 0 : exp(sc[j] - mx);
                sum += sc[j];
            }
            if (sinks) sum += exp(sinks[h] - mx);
            for (int d = 0; d < D; d++) {
                double o = 0;
                for (int j = 0; j <= pos[t]; j++) o += sc[j] * vc[((size_t)kh * p->capacity + j) * D + d];
                out[(t * p->n_heads + h) * D + d] = o / sum;
            }
        }
}

/* ring > 0: the backend cache is a ring of `ring` slots (position j in slot j % ring), checked
 * against the same reference over a full cache; sinks[n_heads] (or NULL): attention-sink logits */
static void check_attention_ring(int n_heads, int n_kv, int window, float softcap, int offset, int ring,
                                 const float *sinks);

static void check_attention(int n_heads, int n_kv, int window, float softcap, int offset) {
    check_attention_ring(n_heads, n_kv, window, softcap, offset, 0, NULL);
}

static void check_attention_ring(int n_heads, int n_kv, int window, float softcap, int offset, int ring,
                                 const float *sinks) {
    const int T = 5, D = 8, cap = 64;
    lmx_attn_params p = {.n_tokens = T, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = D, .capacity = cap,
                         .window = window, .scale = 0.35f, .softcap = softcap};
    size_t csz = (size_t)n_kv * cap * D;
    float *kc = calloc(csz, sizeof *kc), *vc = calloc(csz, sizeof *vc);
    /* earlier positions already cached */
    for (int h = 0; h < n_kv; h++)
        for (int j = 0; j < offset; j++)
            for (int d = 0; d < D; d++) {
                kc[((size_t)h * cap + j) * D + d] = frand() * 2;
                vc[((size_t)h * cap + j) * D + d] = frand();
            }
    float q[5 * 8 * 8], k[5 * 8 * 8], v[5 * 8 * 8];
    for (int i = 0; i < T * n_heads * D; i++) q[i] = frand() * 2;
    for (int i = 0; i < T * n_kv * D; i++) {
        k[i] = frand() * 2;
        v[i] = frand();
    }
    int32_t pos[5];
    for (int t = 0; t < T; t++) pos[t] = offset + t;
    /* reference cache after the write */
    float *kr = malloc(csz * sizeof *kr), *vr = malloc(csz * sizeof *vr);
    memcpy(kr, kc, csz * sizeof *kr);
    memcpy(vr, vc, csz * sizeof *vr);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_kv; h++)
            for (int d = 0; d < D; d++) {
                kr[((size_t)h * cap + pos[t]) * D + d] = k[(t * n_kv + h) * D + d];
                vr[((size_t)h * cap + pos[t]) * D + d] = v[(t * n_kv + h) * D + d];
            }
    double ref[5 * 8 * 8];
    attn_ref(q, kr, vr, &p, pos, sinks, ref);
    float out1[5 * 8 * 8], out3[5 * 8 * 8];
    /* the backend's view: a ring of `ring` slots holding the same positions */
    lmx_attn_params pb = p;
    size_t bsz = csz;
    float *kb = kc, *vb = vc;
    if (ring > 0) {
        pb.capacity = ring;
        bsz = (size_t)n_kv * ring * D;
        kb = calloc(bsz, sizeof *kb);
        vb = calloc(bsz, sizeof *vb);
        for (int h = 0; h < n_kv; h++)
            for (int j = 0; j < offset; j++)
                for (int d = 0; d < D; d++) {
                    kb[((size_t)h * ring + j % ring) * D + d] = kc[((size_t)h * cap + j) * D + d];
                    vb[((size_t)h * ring + j % ring) * D + d] = vc[((size_t)h * cap + j) * D + d];
                }
    }
    for (int bi = 0; bi < 2; bi++) {
        lmx_backend *be = bi ? be3 : be1;
        lmx_buf *bkc = buf_from(be, kb, bsz), *bvc = buf_from(be, vb, bsz);
        lmx_buf *bq = buf_from(be, q, (size_t)T * n_heads * D), *bk = buf_from(be, k, (size_t)T * n_kv * D);
        lmx_buf *bv = buf_from(be, v, (size_t)T * n_kv * D), *bo = buf_from(be, NULL, (size_t)T * n_heads * D);
        /* k, v into the caches through rope_qk_store without rotation (q, k unchanged) */
        const float one = 1.0f;
        lmx_weight_desc dinv = {.name = "inv", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = 1, .dtype = LMX_DTYPE_F32,
                                .data = &one};
        lmx_bweight *winv = NULL;
        CHECK(be->ops->weight_upload(be, &dinv, &winv) == LMX_OK);
        lmx_qk_rope_params rp = {.n_tokens = T, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = D, .rot_dim = 0,
                                 .capacity = pb.capacity, .inv_freq = winv, .mscale = 1.0f};
        CHECK(be->ops->rope_qk_store(be, bq, bk, bv, bkc, bvc, &rp, pos) == LMX_OK);
        be->ops->weight_free(be, winv);
        lmx_weight_desc dsk = {.name = "sinks", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = n_heads,
                               .dtype = LMX_DTYPE_F32, .data = sinks};
        lmx_bweight *wsk = NULL;
        if (sinks) CHECK(be->ops->weight_upload(be, &dsk, &wsk) == LMX_OK);
        pb.sinks = wsk;
        CHECK(be->ops->attention(be, bq, bkc, bvc, bo, &pb, pos) == LMX_OK);
        pb.sinks = NULL;
        be->ops->weight_free(be, wsk);
        be->ops->buf_read(be, bo, 0, bi ? out3 : out1, (size_t)T * n_heads * D);
        lmx_buf *bs[] = {bkc, bvc, bq, bk, bv, bo};
        for (int i = 0; i < 6; i++) be->ops->buf_free(be, bs[i]);
    }
    double err = 0;
    for (int i = 0; i < T * n_heads * D; i++) {
        err = fmax(err, fabs(out1[i] - ref[i]));
        err = fmax(err, fabs(out3[i] - ref[i]));
    }
    CHECK_MSG(err < 2e-5, "heads %d/%d window %d softcap %g offset %d ring %d sinks %d: err %g", n_heads, n_kv, window,
              softcap, offset, ring, sinks != NULL, err);
    if (ring > 0 && ring - 1 < window + T - 1) {
        /* a ring one slot too small for window + T - 1 is refused */
        lmx_attn_params small = pb;
        small.capacity = ring - 1;
        lmx_buf *q1 = buf_from(be1, q, (size_t)T * n_heads * D), *o1 = buf_from(be1, NULL, (size_t)T * n_heads * D);
        lmx_buf *c1 = buf_from(be1, NULL, (size_t)n_kv * (ring - 1) * D);
        CHECK(be1->ops->attention(be1, q1, c1, c1, o1, &small, pos) == LMX_ERR_INVALID_ARGUMENT);
        be1->ops->buf_free(be1, q1);
        be1->ops->buf_free(be1, o1);
        be1->ops->buf_free(be1, c1);
    }
    if (ring > 0) {
        free(kb);
        free(vb);
    }
    /* a position outside the cache is an error, not a crash */
    int32_t bad[5] = {0, 1, 2, 3, 64};
    lmx_buf *bq = buf_from(be1, q, (size_t)T * n_heads * D), *bo = buf_from(be1, NULL, (size_t)T * n_heads * D);
    lmx_buf *bkc = buf_from(be1, kc, csz);
    CHECK(be1->ops->attention(be1, bq, bkc, bkc, bo, &p, bad) == LMX_ERR_INVALID_ARGUMENT);
    be1->ops->buf_free(be1, bq);
    be1->ops->buf_free(be1, bo);
    be1->ops->buf_free(be1, bkc);
    free(kc);
    free(vc);
    free(kr);
    free(vr);
}

static void test_attention(void) {
    check_attention(4, 4, 0, 0, 0);   /* MHA, prefill from 0 */
    check_attention(8, 2, 0, 0, 7);   /* GQA 4:1, cache offset */
    check_attention(4, 1, 0, 0, 20);  /* MQA */
    check_attention(4, 2, 3, 0, 10);  /* sliding window shorter than the context */
    check_attention(4, 2, 0, 5.0f, 3); /* attention logit softcap */
    check_attention(6, 3, 4, 2.0f, 0); /* window + softcap from position 0 */
    check_attention_ring(4, 2, 6, 0, 40, 6 + 5 - 1, NULL); /* sliding window over a ring of window + T - 1 slots */
    check_attention_ring(8, 2, 3, 4.0f, 17, 9, NULL);      /* larger ring than needed, wrapped positions */
    /* attention sinks (gpt-oss): small, large (above every score: the sink dominates) and negative
     * logits, full and sliding layers, from position 0 and over a cache */
    const float sinks[8] = {0.3f, -2.0f, 25.0f, 1.5f, -40.0f, 0.0f, 4.0f, -0.7f};
    check_attention_ring(4, 2, 0, 0, 0, 0, sinks);
    check_attention_ring(8, 2, 0, 0, 12, 0, sinks);
    check_attention_ring(4, 2, 3, 0, 10, 0, sinks);
    check_attention_ring(8, 2, 3, 4.0f, 17, 9, sinks);
    /* a sink of the wrong size is refused */
    {
        lmx_attn_params p = {.n_tokens = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8, .capacity = 4, .scale = 1};
        lmx_weight_desc dsk = {.name = "sinks", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = 3,
                               .dtype = LMX_DTYPE_F32, .data = sinks};
        lmx_bweight *wsk = NULL;
        CHECK(be1->ops->weight_upload(be1, &dsk, &wsk) == LMX_OK);
        p.sinks = wsk;
        lmx_buf *bq = buf_from(be1, NULL, 32), *bc = buf_from(be1, NULL, 64);
        int32_t pos0 = 0;
        CHECK(be1->ops->attention(be1, bq, bc, bc, bq, &p, &pos0) == LMX_ERR_INVALID_ARGUMENT);
        be1->ops->buf_free(be1, bq);
        be1->ops->buf_free(be1, bc);
        be1->ops->weight_free(be1, wsk);
    }
}

static void test_activations(void) {
    const int n = 1000;
    float g[1000], u[1000];
    for (int i = 0; i < n; i++) {
        g[i] = frand() * 8;
        u[i] = frand();
    }
    for (int a = 0; a < 3; a++) {
        /* the clamped SwiGLU (a == 2) sees up values beyond its limit too */
        float ua[1000];
        for (int i = 0; i < n; i++) ua[i] = a == 2 ? u[i] * 12 : u[i];
        lmx_buf *bg = buf_from(be3, g, n), *bu = buf_from(be3, ua, n);
        CHECK(be3->ops->act_mul(be3, bg, bu, n, (lmx_act_kind)a) == LMX_OK);
        float y[1000];
        be3->ops->buf_read(be3, bg, 0, y, n);
        int clamped_g = 0, clamped_u = 0;
        for (int i = 0; i < n; i++) {
            double x = g[i], want;
            if (a == 0) {
                want = x / (1 + exp(-x)) * ua[i];
            } else if (a == 1) {
                want = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))) * ua[i];
            } else { /* transformers: gate.clamp(max=7), up.clamp(-7, 7), gate*sigmoid(1.702 gate)*(up+1) */
                const double gc = fmin(x, 7.0), uc = fmax(-7.0, fmin(ua[i], 7.0));
                clamped_g += x > 7.0;
                clamped_u += fabs(ua[i]) > 7.0;
                want = gc / (1 + exp(-1.702 * gc)) * (uc + 1);
            }
            CHECK_NEAR(y[i], want, 1e-5 * (1 + fabs(want)));
        }
        if (a == 2) CHECK(clamped_g > 10 && clamped_u > 10); /* both clamps were exercised */
        be3->ops->buf_free(be3, bg);
        be3->ops->buf_free(be3, bu);
    }
    lmx_buf *bx = buf_from(be1, g, n);
    CHECK(be1->ops->softcap(be1, bx, n, 3.0f) == LMX_OK);
    float y[1000];
    be1->ops->buf_read(be1, bx, 0, y, n);
    for (int i = 0; i < n; i++) CHECK_NEAR(y[i], 3.0 * tanh(g[i] / 3.0), 1e-6);
    be1->ops->buf_free(be1, bx);
}

static void test_bad_args(void) {
    lmx_buf *b = buf_from(be1, NULL, 4);
    float x[8] = {0};
    CHECK(be1->ops->buf_write(be1, b, 2, x, 4) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(be1->ops->buf_read(be1, b, 5, x, 0) == LMX_ERR_INVALID_ARGUMENT);
    float w[64] = {0};
    lmx_weight_desc d = {.name = "w", .kind = LMX_WEIGHT_DENSE, .rows = 2, .cols = 8, .dtype = LMX_DTYPE_F32, .data = w};
    lmx_bweight *bw = NULL;
    CHECK(be1->ops->weight_upload(be1, &d, &bw) == LMX_OK);
    CHECK(be1->ops->matmul(be1, bw, b, 0, 1, b) == LMX_ERR_INVALID_ARGUMENT); /* x too short */
    int32_t id = 2;
    CHECK(be1->ops->embed(be1, bw, &id, 1, 1.0f, b) == LMX_ERR_INVALID_ARGUMENT); /* id outside rows / y too short */
    be1->ops->weight_free(be1, bw);
    d.kind = LMX_WEIGHT_QUANT;
    d.bits = 4;
    d.group_size = 32; /* 8 columns do not fill a group */
    CHECK(be1->ops->weight_upload(be1, &d, &bw) == LMX_ERR_INVALID_ARGUMENT);
    be1->ops->buf_free(be1, b);
}

int main(void) {
    /* be1: scalar reference kernels, 1 thread; be3: the best kernels this CPU has, 3 threads */
    if (lmx_backend_cpu_create_ex(1, false, &be1) != LMX_OK || lmx_backend_cpu_create_ex(3, true, &be3) != LMX_OK) {
        fprintf(stderr, "cannot create the CPU backend\n");
        return 1;
    }
    fprintf(stderr, "kernels: %s and %s\n", lmx_backend_cpu_kernels(be1), lmx_backend_cpu_kernels(be3));
    RUN(test_packer_layout);
    RUN(test_quant_matmul_all);
    RUN(test_quant_bf16_scales);
    RUN(test_dense_matmul_dtypes);
    RUN(test_rmsnorm);
    RUN(test_rope_tables);
    RUN(test_rope_kernel);
    RUN(test_attention);
    RUN(test_activations);
    RUN(test_bad_args);
    lmx_backend_destroy(be1);
    lmx_backend_destroy(be3);
    return lmx_test_summary();
}
