/* mlx_mx.c — MLX's mxfp4 / mxfp8 / nvfp4 codecs, quantizer and dequantizer (see mlx_mx.h). */
#include "formats/mlx_mx.h"
#include "formats/mlx_quant.h"
#include "util/error.h"

#include <math.h>

uint8_t lmx_f32_to_e2m1(float x) {
    if (isnan(x)) return 0x7;
    uint8_t sign = signbit(x) ? 0x8 : 0x0;
    x = fabsf(x);
    uint8_t b;
    if (x > 5.0f) b = 0x7;
    else if (x >= 3.5f) b = 0x6;
    else if (x > 2.5f) b = 0x5;
    else if (x >= 1.75f) b = 0x4;
    else if (x > 1.25f) b = 0x3;
    else if (x >= 0.75f) b = 0x2;
    else if (x > 0.25f) b = 0x1;
    else b = 0x0;
    return b | sign;
}

/* Round to nearest even, saturating (PyTorch's fp8e4m3fn_from_fp32_value, which MLX's kernels use):
 * |x| >= 464 (the midpoint above 448) saturates; |x| < 2^-6 (fp8 subnormals) is rounded by one fp32
 * addition of 2^14 that puts the fp8 ulp 2^-9 at the fp32 ulp; normals add the rounding bias below
 * bit 20 and rebias the exponent from 127 to 7. */
uint8_t lmx_f32_to_e4m3(float x) {
    const uint32_t fp8_max = 543u << 21;   /* 464: the first value that rounds above 448 */
    const uint32_t denorm_mask = 141u << 23;
    uint32_t f;
    memcpy(&f, &x, 4);
    uint32_t sign = f & 0x80000000u;
    f ^= sign;
    uint8_t b;
    if (f >= fp8_max) {
        b = 0x7E; /* saturate (NaN included, as MLX) */
    } else if (f < (121u << 23)) {
        float a, dm;
        memcpy(&a, &f, 4);
        memcpy(&dm, &denorm_mask, 4);
        a += dm;
        uint32_t u;
        memcpy(&u, &a, 4);
        b = (uint8_t)(u - denorm_mask);
    } else {
        uint32_t odd = (f >> 20) & 1;
        f += ((uint32_t)(7 - 127) << 23) + 0x7FFFFu;
        f += odd;
        b = (uint8_t)(f >> 20);
    }
    return b | (uint8_t)(sign >> 24);
}

uint8_t lmx_f32_to_e8m0(float x) {
    if (!isfinite(x)) return 0xFF;
    if (x < 0.0f) return 0x00;
    float le = log2f(x);
    int n = isinf(le) ? -127 : (int)roundf(le); /* log2(0) = -inf: MLX's clamp gives -127 */
    n = n < -127 ? -127 : n;
    n = n > 127 ? 127 : n;
    return (uint8_t)(n + 127);
}

static bool mode_ok(lmx_quant_mode m) { return m == LMX_QUANT_MXFP4 || m == LMX_QUANT_MXFP8 || m == LMX_QUANT_NVFP4; }

static lmx_status check_row(int64_t n, lmx_quant_mode mode) {
    if (!mode_ok(mode))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mx quantize: mode %s is not an fp mode", lmx_quant_mode_name(mode));
    int gs = lmx_quant_mode_group(mode);
    if (n <= 0 || n % gs)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mx quantize: row of %lld elements is not a multiple of the group size %d",
                         (long long)n, gs);
    return LMX_OK;
}

lmx_status lmx_mx_quantize_row(const float *w, int64_t n, lmx_quant_mode mode, uint8_t *codes, uint8_t *scales) {
    lmx_status st = check_row(n, mode);
    if (st != LMX_OK) return st;
    const int gs = lmx_quant_mode_group(mode);
    const bool fp8 = mode == LMX_QUANT_MXFP8;
    const float maxval = fp8 ? 448.0f : 6.0f;
    for (int64_t g = 0; g < n / gs; g++) {
        const float *p = w + g * gs;
        float amax = 0.0f;
        for (int j = 0; j < gs; j++) {
            if (!isfinite(p[j]))
                return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mx quantize: non-finite weight at element %lld",
                                 (long long)(g * gs + j));
            float a = fabsf(p[j]);
            amax = a > amax ? a : amax;
        }
        float d = amax / maxval;
        uint8_t s = mode == LMX_QUANT_NVFP4 ? lmx_f32_to_e4m3(d) : lmx_f32_to_e8m0(d);
        float sd = lmx_mx_scale(mode, s);
        float inv = sd == 0.0f ? 0.0f : 1.0f / sd;
        scales[g] = s;
        if (fp8) {
            for (int j = 0; j < gs; j++) codes[g * gs + j] = lmx_f32_to_e4m3(p[j] * inv);
        } else {
            uint8_t *c = codes + g * gs / 2;
            for (int j = 0; j < gs; j += 2)
                c[j / 2] = (uint8_t)(lmx_f32_to_e2m1(p[j] * inv) | (lmx_f32_to_e2m1(p[j + 1] * inv) << 4));
        }
    }
    return LMX_OK;
}

typedef struct {
    const float *w;
    int64_t cols;
    lmx_quant_mode mode;
    uint8_t *codes, *scales;
    size_t rb, sb;
} mxjob;

static lmx_status mxjob_row(void *arg, int64_t r) {
    const mxjob *j = arg;
    return lmx_mx_quantize_row(j->w + r * j->cols, j->cols, j->mode, j->codes + (size_t)r * j->rb,
                               j->scales + (size_t)r * j->sb);
}

lmx_status lmx_mx_quantize_matrix(const float *w, int64_t rows, int64_t cols, lmx_quant_mode mode, uint8_t *codes,
                                  uint8_t *scales, int threads) {
    lmx_status s = check_row(cols, mode);
    if (s != LMX_OK) return s;
    if (rows < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mx quantize: negative row count");
    mxjob job = {w, cols, mode, codes, scales, (size_t)cols * (size_t)lmx_quant_mode_bits(mode) / 8,
                 (size_t)(cols / lmx_quant_mode_group(mode))};
    return lmx_quant_rows_parallel(rows, threads, mxjob_row, &job);
}

lmx_status lmx_mx_dequantize_row(const uint8_t *codes, const uint8_t *scales, lmx_quant_mode mode, int64_t first,
                                 int64_t count, float *out) {
    if (!mode_ok(mode) || first < 0 || count < 0 || !codes || !scales || (count && !out))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mx dequantize: bad arguments (mode %s)", lmx_quant_mode_name(mode));
    const int gs = lmx_quant_mode_group(mode);
    for (int64_t k = first; k < first + count; k++)
        *out++ = lmx_mx_scale(mode, scales[k / gs]) * lmx_mx_value(mode, lmx_mx_code(mode, codes, k));
    return LMX_OK;
}

lmx_status lmx_mx_check_views(const lmx_tensor_view *weight, const lmx_tensor_view *scales,
                              const lmx_tensor_view *biases, lmx_quant_mode mode, int64_t *cols_out) {
    if (!weight || !scales) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "mx check: NULL tensor");
    if (!mode_ok(mode))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: quantization mode %s is not an fp mode", weight->name,
                         lmx_quant_mode_name(mode));
    const int bits = lmx_quant_mode_bits(mode), gs = lmx_quant_mode_group(mode);
    const int nd = weight->ndim, last = nd - 1;
    if (weight->dtype != LMX_DTYPE_U32 || nd < 2 || nd > 3)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s weight must be a 2-D (or stacked 3-D) U32 tensor",
                         weight->name, lmx_quant_mode_name(mode));
    int64_t rows = weight->shape[last - 1], cols = weight->shape[last] * 32 / bits;
    bool lead_ok = scales->ndim == nd && (nd == 2 || scales->shape[0] == weight->shape[0]);
    if (scales->dtype != LMX_DTYPE_U8 || !lead_ok || scales->shape[last - 1] != rows ||
        scales->shape[last] * gs != cols)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                         "%s: %s must be U8 [%s%lld, %lld] for a %s weight of %lld columns (group %d)", weight->name,
                         scales->name, nd == 3 ? "E, " : "", (long long)rows, (long long)(cols / gs),
                         lmx_quant_mode_name(mode), (long long)cols, gs);
    if (biases)
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s has biases (%s), which mode %s does not use",
                         weight->name, lmx_quant_mode_name(mode), biases->name, lmx_quant_mode_name(mode));
    if (cols_out) *cols_out = cols;
    return LMX_OK;
}
