/* mlx_quant.c — MLX affine quantizer/dequantizer and the LSB-first row bitstream (see mlx_quant.h).
 * The arithmetic deliberately stays in fp32 with no fused multiply-add (the library is built with
 * -std=c11, so GCC does not contract), matching MLX's scalar CPU quantizer operation for operation.
 */
#if defined(__GNUC__) && !defined(__clang__)
/* Lets GCC if-convert the clamps so the per-element loop vectorizes. It changes no result: it only
 * allows the compiler to assume floating-point exceptions are not trapped (lmx never enables traps). */
#pragma GCC optimize("no-trapping-math")
#endif
#if defined(__clang__)
/* clang contracts a*b+c into an FMA by default where the target has one (-march=native); MLX's
 * dequantization is a separate multiply and add. GCC in -std=c11 mode never contracts. */
#pragma STDC FP_CONTRACT OFF
#endif
#include "formats/mlx_quant.h"
#include "util/error.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool lmx_mlx_quant_supported(int bits, int group_size) {
    return lmx_mlx_quant_bits_ok(bits) && lmx_mlx_quant_group_ok(group_size);
}

static bool sdtype_ok(lmx_dtype t) { return t == LMX_DTYPE_F32 || t == LMX_DTYPE_F16 || t == LMX_DTYPE_BF16; }

static void store_scalar(uint8_t *dst, lmx_dtype t, float v) {
    if (t == LMX_DTYPE_F32) {
        memcpy(dst, &v, 4);
    } else {
        uint16_t h = t == LMX_DTYPE_BF16 ? lmx_f32_to_bf16(v) : lmx_f32_to_f16(v);
        dst[0] = (uint8_t)h;
        dst[1] = (uint8_t)(h >> 8);
    }
}

static float load_scalar(const uint8_t *src, lmx_dtype t) {
    if (t == LMX_DTYPE_F32) {
        float v;
        memcpy(&v, src, 4);
        return v;
    }
    uint16_t h = (uint16_t)(src[0] | (src[1] << 8));
    return t == LMX_DTYPE_BF16 ? lmx_bf16_to_f32(h) : lmx_f16_to_f32(h);
}

/* rint() in the default rounding mode (nearest, ties to even), written so loops vectorize:
 * for |x| < 2^23, (|x| + 2^23) - 2^23 rounds |x| to an integer in IEEE single arithmetic; larger
 * values are integers already. Exact, sign of zero included (needs no -ffast-math, which lmx
 * never uses). */
static inline float rint_ne(float x) {
    float a = fabsf(x);
    float r = copysignf((a + 8388608.0f) - 8388608.0f, x);
    return a < 8388608.0f ? r : x;
}

/* round() (ties away from zero), vectorizable: rint, then move a tie that rint sent down (to the
 * even neighbour) up; |x| - r is exact for |x| < 2^23. */
static inline float round_away(float x) {
    float a = fabsf(x);
    float r = (a + 8388608.0f) - 8388608.0f;
    r = (r - a == -0.5f) ? r + 1.0f : r;
    return a < 8388608.0f ? copysignf(r, x) : x;
}

static inline float round_fl(float x, bool metal) { return metal ? round_away(x) : rint_ne(x); }

/* MLX's scale and bias of one group; false on a non-finite input. */
static bool group_params(const float *w, int bits, int gs, bool metal, float *scale_out, float *bias_out) {
    const float n_bins = (float)((1 << bits) - 1);
    const float eps = 1e-7f;
    /* 8 independent lanes (gs is a multiple of 32) so the loop vectorizes; the order of a min/max
     * reduction cannot change its value here (equal elements are identical but for ±0, and a zero
     * extreme yields the same scale and bias whichever zero it is). Non-finite: all exponent bits set. */
    float mn[8], mx[8];
    uint32_t bad[8];
    for (int l = 0; l < 8; l++) mn[l] = INFINITY, mx[l] = -INFINITY, bad[l] = 0;
    for (int j = 0; j < gs; j += 8) {
        for (int l = 0; l < 8; l++) {
            float v = w[j + l];
            uint32_t u;
            memcpy(&u, &v, 4);
            bad[l] |= (u & 0x7f800000u) == 0x7f800000u;
            mx[l] = v > mx[l] ? v : mx[l];
            mn[l] = v < mn[l] ? v : mn[l];
        }
    }
    float w_min = mn[0], w_max = mx[0];
    uint32_t any_bad = bad[0];
    for (int l = 1; l < 8; l++) {
        w_max = mx[l] > w_max ? mx[l] : w_max;
        w_min = mn[l] < w_min ? mn[l] : w_min;
        any_bad |= bad[l];
    }
    if (any_bad) return false;
    if (metal && w_max < 0.0f) w_max = 0.0f; /* the Metal kernel starts its max reduction at 0 */
    bool mask = fabsf(w_min) > fabsf(w_max);
    float scale = (w_max - w_min) / n_bins;
    scale = scale < eps ? eps : scale;
    scale = mask ? scale : -scale;
    float edge = mask ? w_min : w_max;
    float q0 = round_fl(edge / scale, metal);
    float bias = 0.0f;
    if (q0 != 0.0f) {
        scale = edge / q0;
        bias = edge;
    }
    *scale_out = scale;
    *bias_out = bias;
    return true;
}

/* The group quantizer proper; arguments already validated. Returns false on a non-finite input. */
static bool quantize_group(const float *w, int bits, int gs, bool metal, uint8_t *q, float *scale_out,
                           float *bias_out) {
    float scale, bias;
    if (!group_params(w, bits, gs, metal, &scale, &bias)) return false;
    const float n_bins = (float)((1 << bits) - 1);
    float t[128];
    if (metal) {
        for (int j = 0; j < gs; j++) {
            float v = round_away((w[j] - bias) / scale);
            t[j] = v < 0.0f ? 0.0f : (v > n_bins ? n_bins : v);
        }
    } else {
        for (int j = 0; j < gs; j++) {
            float v = rint_ne((w[j] - bias) / scale);
            t[j] = v < 0.0f ? 0.0f : (v > n_bins ? n_bins : v);
        }
    }
    for (int j = 0; j < gs; j++) q[j] = (uint8_t)(int)t[j];
    *scale_out = scale;
    *bias_out = bias;
    return true;
}

lmx_status lmx_mlx_quantize_group(const float *w, int bits, int group_size, uint8_t *q, float *scale, float *bias,
                                  lmx_mlx_flavor flavor) {
    if (!lmx_mlx_quant_supported(bits, group_size) || !w || !q || !scale || !bias)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: unsupported bits %d / group size %d", bits,
                         group_size);
    if (!quantize_group(w, bits, group_size, flavor == LMX_MLX_METAL, q, scale, bias))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: non-finite weight in the group");
    return LMX_OK;
}

void lmx_mlx_pack(const uint8_t *q, int64_t n, int bits, uint8_t *out) {
    if (bits == 8) {
        memcpy(out, q, (size_t)n);
        return;
    }
    if (bits == 4) {
        for (int64_t i = 0; i + 1 < n; i += 2) out[i / 2] = (uint8_t)(q[i] | (q[i + 1] << 4));
        return;
    }
    uint32_t acc = 0;
    int nacc = 0;
    size_t o = 0;
    for (int64_t i = 0; i < n; i++) {
        acc |= (uint32_t)q[i] << nacc;
        nacc += bits;
        while (nacc >= 8) {
            out[o++] = (uint8_t)acc;
            acc >>= 8;
            nacc -= 8;
        }
    }
    if (nacc > 0) out[o] = (uint8_t)acc; /* only when n*bits is not a multiple of 8 */
}

static lmx_status check_row(int64_t n, int bits, int group_size, lmx_dtype sdtype) {
    if (!lmx_mlx_quant_supported(bits, group_size))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: unsupported bits %d / group size %d", bits,
                         group_size);
    if (n <= 0 || n % group_size)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: row of %lld elements is not a multiple of the group size %d",
                         (long long)n, group_size);
    if (!sdtype_ok(sdtype))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: scales dtype %s is not F32/F16/BF16",
                         lmx_dtype_name(sdtype));
    return LMX_OK;
}

lmx_status lmx_mlx_quantize_row(const float *w, int64_t n, int bits, int group_size, lmx_dtype sdtype,
                                uint8_t *packed, uint8_t *scales, uint8_t *biases, lmx_mlx_flavor flavor) {
    lmx_status s = check_row(n, bits, group_size, sdtype);
    if (s != LMX_OK) return s;
    size_t es = lmx_dtype_size(sdtype);
    uint8_t q[128];
    size_t group_bytes = (size_t)group_size * (size_t)bits / 8;
    for (int64_t g = 0; g < n / group_size; g++) {
        float sc, bi;
        if (!quantize_group(w + g * group_size, bits, group_size, flavor == LMX_MLX_METAL, q, &sc, &bi))
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: non-finite weight in elements [%lld, %lld)",
                             (long long)(g * group_size), (long long)((g + 1) * group_size));
        lmx_mlx_pack(q, group_size, bits, packed + (size_t)g * group_bytes); /* a group is whole bytes */
        store_scalar(scales + (size_t)g * es, sdtype, sc);
        store_scalar(biases + (size_t)g * es, sdtype, bi);
    }
    return LMX_OK;
}

lmx_status lmx_mlx_quantize_params_row(const float *w, int64_t n, int bits, int group_size, lmx_dtype sdtype,
                                       uint8_t *scales, uint8_t *biases, lmx_mlx_flavor flavor) {
    lmx_status s = check_row(n, bits, group_size, sdtype);
    if (s != LMX_OK) return s;
    size_t es = lmx_dtype_size(sdtype);
    for (int64_t g = 0; g < n / group_size; g++) {
        float sc, bi;
        if (!group_params(w + g * group_size, bits, group_size, flavor == LMX_MLX_METAL, &sc, &bi))
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: non-finite weight in elements [%lld, %lld)",
                             (long long)(g * group_size), (long long)((g + 1) * group_size));
        store_scalar(scales + (size_t)g * es, sdtype, sc);
        store_scalar(biases + (size_t)g * es, sdtype, bi);
    }
    return LMX_OK;
}

/* ---- matrix, multi-threaded ---- */

typedef struct {
    lmx_quant_row_fn row;
    void *ctx;
    int64_t r0, r1;
    lmx_status status;
    char detail[256];
} rowjob;

static void *rowjob_run(void *arg) {
    rowjob *j = arg;
    for (int64_t r = j->r0; r < j->r1; r++) {
        lmx_status s = j->row(j->ctx, r);
        if (s != LMX_OK) {
            j->status = s;
            const char *d = lmx_last_error_detail();
            snprintf(j->detail, sizeof j->detail, "row %lld: %s", (long long)r, d ? d : "");
            break;
        }
    }
    return NULL;
}

lmx_status lmx_quant_rows_parallel(int64_t rows, int threads, lmx_quant_row_fn row, void *ctx) {
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n < 1 ? 1 : (n > 64 ? 64 : (int)n);
    }
    if (threads > 64) threads = 64;
    if (rows < threads) threads = rows > 0 ? (int)rows : 1;
    rowjob jobs[64];
    pthread_t tid[64];
    bool started[64] = {false};
    for (int t = 0; t < threads; t++) {
        jobs[t] = (rowjob){row, ctx, rows * t / threads, rows * (t + 1) / threads, LMX_OK, ""};
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, rowjob_run, &jobs[t]) == 0;
        if (t > 0 && !started[t]) rowjob_run(&jobs[t]);
    }
    rowjob_run(&jobs[0]);
    for (int t = 1; t < threads; t++)
        if (started[t]) pthread_join(tid[t], NULL);
    for (int t = 0; t < threads; t++)
        if (jobs[t].status != LMX_OK) return lmx_error(jobs[t].status, "%s", jobs[t].detail);
    return LMX_OK;
}

typedef struct {
    const float *w;
    int64_t cols;
    int bits, gs;
    lmx_dtype sdtype;
    uint8_t *packed, *scales, *biases;
    lmx_mlx_flavor flavor;
    size_t rb, sb;
} qjob;

static lmx_status qjob_row(void *arg, int64_t r) {
    const qjob *j = arg;
    return lmx_mlx_quantize_row(j->w + r * j->cols, j->cols, j->bits, j->gs, j->sdtype, j->packed + (size_t)r * j->rb,
                                j->scales + (size_t)r * j->sb, j->biases + (size_t)r * j->sb, j->flavor);
}

lmx_status lmx_mlx_quantize_matrix(const float *w, int64_t rows, int64_t cols, int bits, int group_size,
                                   lmx_dtype sdtype, uint8_t *packed, uint8_t *scales, uint8_t *biases, int threads,
                                   lmx_mlx_flavor flavor) {
    lmx_status s = check_row(cols, bits, group_size, sdtype);
    if (s != LMX_OK) return s;
    if (rows < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx quantize: negative row count");
    qjob job = {w,      cols,   bits,   group_size, sdtype, packed, scales, biases,
                flavor, lmx_mlx_quant_row_bytes(cols, bits), (size_t)(cols / group_size) * lmx_dtype_size(sdtype)};
    return lmx_quant_rows_parallel(rows, threads, qjob_row, &job);
}

/* ---- dequantization ---- */

lmx_status lmx_mlx_dequantize_row(const uint8_t *packed, const uint8_t *scales, const uint8_t *biases,
                                  lmx_dtype sdtype, int bits, int group_size, int64_t first, int64_t count,
                                  float *out) {
    if (!lmx_mlx_quant_supported(bits, group_size) || !sdtype_ok(sdtype) || first < 0 || count < 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx dequantize: bad arguments (bits %d, group size %d, %s)",
                         bits, group_size, lmx_dtype_name(sdtype));
    size_t es = lmx_dtype_size(sdtype);
    int64_t k = first, end = first + count;
    while (k < end) {
        int64_t g = k / group_size;
        int64_t gend = (g + 1) * group_size < end ? (g + 1) * group_size : end;
        float sc = load_scalar(scales + (size_t)g * es, sdtype);
        float bi = load_scalar(biases + (size_t)g * es, sdtype);
        for (; k < gend; k++) *out++ = sc * (float)lmx_mlx_unpack(packed, bits, k) + bi;
    }
    return LMX_OK;
}

lmx_status lmx_mlx_dequantize_view(const lmx_tensor_view *weight, const lmx_tensor_view *scales,
                                   const lmx_tensor_view *biases, int bits, int group_size, int64_t row,
                                   int64_t first, int64_t count, float *out) {
    if (!weight || !scales || !biases || !out)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mlx dequantize: NULL argument");
    if (!lmx_mlx_quant_supported(bits, group_size))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: unsupported bits %d / group size %d", weight->name, bits,
                         group_size);
    if (weight->dtype != LMX_DTYPE_U32 || weight->ndim != 2)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: quantized weight must be a 2-D U32 tensor",
                         weight->name);
    int64_t rows = weight->shape[0], cols = weight->shape[1] * 32 / bits;
    if (scales->ndim != 2 || biases->ndim != 2 || !sdtype_ok(scales->dtype) || biases->dtype != scales->dtype ||
        scales->shape[0] != rows || biases->shape[0] != rows || scales->shape[1] != biases->shape[1] ||
        scales->shape[1] * group_size != cols)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: scales %s / biases %s do not match a [%lld, %lld] weight with %d bits, group size %d",
                         weight->name, scales->name, biases->name, (long long)rows, (long long)cols, bits, group_size);
    if (row < 0 || row >= rows || first < 0 || count < 0 || first > cols || count > cols - first)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: row %lld elements [%lld, +%lld) out of range", weight->name,
                         (long long)row, (long long)first, (long long)count);
    size_t es = lmx_dtype_size(scales->dtype);
    size_t rb = lmx_mlx_quant_row_bytes(cols, bits);
    size_t sb = (size_t)scales->shape[1] * es;
    return lmx_mlx_dequantize_row(weight->data + (size_t)row * rb, scales->data + (size_t)row * sb,
                                  biases->data + (size_t)row * sb, scales->dtype, bits, group_size, first, count, out);
}
