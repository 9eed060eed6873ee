/* fused_check.h — test helpers for weight_upload_fused and buf_view (backend.h), shared by the CPU
 * test (tests/model/test_fused.c, CPU backend with its test-only fused upload) and the CUDA test
 * (tests/cuda/test_cuda_fused.c). Needs lmx_test.h and mlx_pack.h included first.
 *
 * fused_case(be, ...): n row blocks (each a row range starting at stored row 1 of its own tensor,
 * so row0 is honoured) uploaded once separately and once fused; then
 *   - the fused matmul of one row equals the separate matmuls' rows concatenated,
 *   - each view's matmul (T = 1 and T = t_many) equals its separate weight's,
 * within relative L2 `tol` (0: bit-identical). Weights: dense (dtype dt) or MLX affine (bits, gs,
 * scales/biases of dtype dt), optional fp32 bias. */
#ifndef LMX_TESTS_FUSED_CHECK_H
#define LMX_TESTS_FUSED_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

static inline uint16_t fc_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline uint16_t fc_f16(float f) { /* normal range only (test values are small) */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int ex = (int)((u >> 23) & 255u) - 127 + 15;
    uint32_t mant = (u >> 13) & 1023u;
    if (ex <= 0) return (uint16_t)sign;
    if (ex >= 31) return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | ((uint32_t)ex << 10) | mant);
}

static inline float fc_rand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* n floats as dtype dt bytes (malloc'd) */
static inline void *fc_convert(const float *f, size_t n, lmx_dtype dt) {
    size_t es = dt == LMX_DTYPE_F32 ? 4 : 2;
    uint8_t *b = malloc(n * es + 1);
    for (size_t i = 0; i < n; i++) {
        if (dt == LMX_DTYPE_F32) memcpy(b + 4 * i, &f[i], 4);
        else {
            uint16_t h = dt == LMX_DTYPE_BF16 ? fc_bf16(f[i]) : fc_f16(f[i]);
            memcpy(b + 2 * i, &h, 2);
        }
    }
    return b;
}

static inline double fc_rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define FC_MAX 4

typedef struct fc_store {
    void *data[FC_MAX], *scales[FC_MAX], *biases[FC_MAX], *bias[FC_MAX];
} fc_store;

static inline void fc_store_free(fc_store *s) {
    for (int i = 0; i < FC_MAX; i++) {
        free(s->data[i]);
        free(s->scales[i]);
        free(s->biases[i]);
        free(s->bias[i]);
    }
}

/* parts[i]: rows[i] rows from stored row 1 of a tensor of rows[i] + 1 rows */
static inline void fc_make_parts(lmx_wkind kind, lmx_dtype dt, int bits, int gs, bool bias, const int *rows, int n,
                                 int cols, uint64_t seed, fc_store *s, lmx_weight_desc *parts) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < n; i++) {
        int R = rows[i] + 1;
        float *w = malloc(sizeof(float) * (size_t)R * cols);
        for (size_t j = 0; j < (size_t)R * cols; j++) w[j] = fc_rand(&seed) * 0.5f;
        lmx_weight_desc d = {.name = "fused part", .kind = kind, .rows = rows[i], .cols = cols, .row0 = 1, .dtype = dt};
        if (kind == LMX_WEIGHT_QUANT) {
            qmat q = quantize(w, R, cols, bits, gs);
            size_t rb = (size_t)cols * bits / 8;
            s->data[i] = malloc((size_t)R * rb);
            memcpy(s->data[i], q.packed, (size_t)R * rb);
            s->scales[i] = fc_convert(q.scales, (size_t)R * (cols / gs), dt);
            s->biases[i] = fc_convert(q.biases, (size_t)R * (cols / gs), dt);
            d.data = s->data[i];
            d.scales = s->scales[i];
            d.biases = s->biases[i];
            d.bits = bits;
            d.group_size = gs;
            qfree(&q);
        } else {
            s->data[i] = fc_convert(w, (size_t)R * cols, dt);
            d.data = s->data[i];
        }
        if (bias) {
            float *bv = malloc(sizeof(float) * R);
            for (int r = 0; r < R; r++) bv[r] = fc_rand(&seed);
            s->bias[i] = bv;
            d.bias = bv;
            d.bias_dtype = LMX_DTYPE_F32;
        }
        parts[i] = d;
        free(w);
    }
}

/* y = matmul(w, x[T, cols]) read back to host [T * rows] */
static inline lmx_status fc_matmul(lmx_backend *be, const lmx_bweight *w, lmx_buf *x, int T, int64_t rows, float *out) {
    lmx_buf *y = NULL;
    lmx_status st = be->ops->buf_alloc(be, (size_t)T * (size_t)rows, &y);
    if (st == LMX_OK) st = be->ops->matmul(be, w, x, 0, T, y);
    if (st == LMX_OK) st = be->ops->buf_read(be, y, 0, out, (size_t)T * (size_t)rows);
    be->ops->buf_free(be, y);
    return st;
}

static inline void fused_case(lmx_backend *be, lmx_wkind kind, lmx_dtype dt, int bits, int gs, bool bias,
                              const int *rows, int n, int cols, int t_many, double tol) {
    char what[128];
    snprintf(what, sizeof what, "kind %d dtype %d bits %d gs %d bias %d cols %d", (int)kind, (int)dt, bits, gs,
             (int)bias, cols);
    fc_store s;
    lmx_weight_desc parts[FC_MAX];
    fc_make_parts(kind, dt, bits, gs, bias, rows, n, cols, 12345u + (uint64_t)cols * 7 + (uint64_t)bits, &s, parts);
    lmx_bweight *sep[FC_MAX] = {0}, *views[FC_MAX] = {0}, *fused = NULL;
    lmx_status st = LMX_OK;
    for (int i = 0; i < n && st == LMX_OK; i++) st = be->ops->weight_upload(be, &parts[i], &sep[i]);
    CHECK_MSG(st == LMX_OK, "%s: separate upload: %s", what, lmx_last_error_detail());
    if (st == LMX_OK) st = be->ops->weight_upload_fused(be, parts, n, &fused, views);
    CHECK_MSG(st == LMX_OK, "%s: fused upload: %s", what, lmx_last_error_detail());
    int64_t R = 0;
    for (int i = 0; i < n; i++) R += rows[i];
    const int TM = t_many > 1 ? t_many : 1;
    float *xs = malloc(sizeof(float) * (size_t)TM * cols);
    float *a = malloc(sizeof(float) * (size_t)TM * R), *b = malloc(sizeof(float) * (size_t)TM * R);
    uint64_t seed = 99;
    for (size_t j = 0; j < (size_t)TM * cols; j++) xs[j] = fc_rand(&seed);
    lmx_buf *x = NULL;
    if (st == LMX_OK) st = be->ops->buf_alloc(be, (size_t)TM * cols, &x);
    if (st == LMX_OK) st = be->ops->buf_write(be, x, 0, xs, (size_t)TM * cols);
    if (st == LMX_OK) {
        /* fused, one row: the parts' outputs concatenated */
        st = fc_matmul(be, fused, x, 1, R, a);
        CHECK_MSG(st == LMX_OK, "%s: fused matmul: %s", what, lmx_last_error_detail());
        int64_t off = 0;
        for (int i = 0; st == LMX_OK && i < n; i++) {
            st = fc_matmul(be, sep[i], x, 1, rows[i], b);
            double r = fc_rel(a + off, b, (size_t)rows[i]);
            CHECK_MSG(st == LMX_OK && (tol == 0 ? memcmp(a + off, b, sizeof(float) * rows[i]) == 0 : r <= tol),
                      "%s: part %d of the fused matmul differs from its separate weight (rel %.3g)", what, i, r);
            off += rows[i];
        }
        /* each view, T = 1 and T = TM */
        for (int i = 0; st == LMX_OK && i < n; i++)
            for (int pass = 0; pass < 2 && st == LMX_OK; pass++) {
                int T = pass == 0 ? 1 : TM;
                st = fc_matmul(be, views[i], x, T, rows[i], a);
                if (st == LMX_OK) st = fc_matmul(be, sep[i], x, T, rows[i], b);
                CHECK_MSG(st == LMX_OK, "%s: view matmul: %s", what, lmx_last_error_detail());
                double r = fc_rel(a, b, (size_t)T * rows[i]);
                CHECK_MSG(st == LMX_OK &&
                              (tol == 0 ? memcmp(a, b, sizeof(float) * (size_t)T * rows[i]) == 0 : r <= tol),
                          "%s: view %d, T=%d differs from its separate weight (rel %.3g)", what, i, T, r);
            }
    }
    be->ops->buf_free(be, x);
    for (int i = 0; i < n; i++) {
        be->ops->weight_free(be, views[i]); /* views before the fused weight */
        be->ops->weight_free(be, sep[i]);
    }
    be->ops->weight_free(be, fused);
    free(xs);
    free(a);
    free(b);
    fc_store_free(&s);
}

/* parts that cannot be fused: LMX_ERR_UNSUPPORTED, nothing handed out */
static inline void fused_mismatch(lmx_backend *be) {
    const int rows[2] = {3, 5};
    fc_store s1, s2;
    lmx_weight_desc p1[2], p2[2], mix[2];
    fc_make_parts(LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, 4, 32, true, rows, 2, 64, 1, &s1, p1);
    fc_make_parts(LMX_WEIGHT_QUANT, LMX_DTYPE_BF16, 8, 32, false, rows, 2, 64, 2, &s2, p2);
    struct {
        const char *what;
        lmx_weight_desc a, b;
    } cases[6] = {{"bits", p1[0], p2[1]}, {"bias", p1[0], p1[1]}, {"cols", p1[0], p1[1]},
                  {"dtype", p2[0], p2[1]}, {"kind", p1[0], p1[1]}, {"group", p2[0], p2[1]}};
    cases[1].b.bias = NULL;
    cases[2].b.cols = 128;
    cases[2].b.data = s1.data[1]; /* 3 rows of 64 columns read as 1.5 rows of 128: never read */
    cases[2].b.rows = 1;
    cases[3].b.dtype = LMX_DTYPE_F16;
    cases[4].b.kind = LMX_WEIGHT_DENSE;
    cases[5].b.group_size = 64;
    for (int i = 0; i < 6; i++) {
        mix[0] = cases[i].a;
        mix[1] = cases[i].b;
        lmx_bweight *f = (lmx_bweight *)1, *v[2] = {(lmx_bweight *)1, (lmx_bweight *)1};
        lmx_status st = be->ops->weight_upload_fused(be, mix, 2, &f, v);
        CHECK_MSG(st == LMX_ERR_UNSUPPORTED, "fuse with another %s: status %d", cases[i].what, (int)st);
        CHECK_MSG(f == NULL && v[0] == NULL && v[1] == NULL, "fuse with another %s: handles not cleared",
                  cases[i].what);
    }
    lmx_bweight *f = NULL, *v[1] = {0};
    CHECK(be->ops->weight_upload_fused(be, p1, 0, &f, v) == LMX_ERR_INVALID_ARGUMENT);
    fc_store_free(&s1);
    fc_store_free(&s2);
}

/* buf_view: reads, writes and copies through a view reach the parent's floats; ranges are checked */
static inline void view_check(lmx_backend *be) {
    float in[16], out[16];
    for (int i = 0; i < 16; i++) in[i] = (float)i;
    lmx_buf *p = NULL, *v = NULL, *w = NULL;
    lmx_status st = be->ops->buf_alloc(be, 16, &p);
    if (st == LMX_OK) st = be->ops->buf_write(be, p, 0, in, 16);
    if (st == LMX_OK) st = be->ops->buf_view(be, p, 4, 6, &v);
    CHECK_MSG(st == LMX_OK, "buf_view: %s", lmx_last_error_detail());
    if (st != LMX_OK) {
        be->ops->buf_free(be, p);
        return;
    }
    CHECK(be->ops->buf_read(be, v, 0, out, 6) == LMX_OK);
    for (int i = 0; i < 6; i++) CHECK_NEAR(out[i], 4 + i, 0);
    float two[2] = {-1, -2};
    CHECK(be->ops->buf_write(be, v, 5, two, 1) == LMX_OK); /* parent float 9 */
    CHECK(be->ops->buf_read(be, v, 6, out, 1) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(be->ops->buf_write(be, v, 5, two, 2) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(be->ops->buf_view(be, p, 12, 5, &w) == LMX_ERR_INVALID_ARGUMENT && w == NULL);
    CHECK(be->ops->buf_view(be, v, 1, 2, &w) == LMX_OK); /* parent floats 5, 6 */
    if (w) {
        CHECK(be->ops->buf_copy(be, p, 0, w, 0, 2) == LMX_OK);
        be->ops->buf_free(be, w);
    }
    CHECK(be->ops->buf_read(be, p, 0, out, 16) == LMX_OK);
    CHECK_NEAR(out[0], 5, 0);
    CHECK_NEAR(out[1], 6, 0);
    CHECK_NEAR(out[9], -1, 0);
    CHECK_NEAR(out[10], 10, 0);
    be->ops->buf_free(be, v);
    be->ops->buf_free(be, p);
}

#endif
