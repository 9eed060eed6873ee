/* dtype.c — safetensors dtype names and sizes, half-precision <-> f32 conversion, and
 * lmx_tensor_to_f32. All loads are byte-wise (memcpy), so tensor data may be unaligned. */
#include "formats/safetensors.h"
#include "util/error.h"

#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lmx reads little-endian safetensors data directly and needs a little-endian host"
#endif

static const struct {
    const char *name;
    size_t size;
} dtype_table[LMX_DTYPE_COUNT] = {
    [LMX_DTYPE_F32] = {"F32", 4},  [LMX_DTYPE_F16] = {"F16", 2},   [LMX_DTYPE_BF16] = {"BF16", 2},
    [LMX_DTYPE_F64] = {"F64", 8},  [LMX_DTYPE_I64] = {"I64", 8},   [LMX_DTYPE_I32] = {"I32", 4},
    [LMX_DTYPE_I16] = {"I16", 2},  [LMX_DTYPE_I8] = {"I8", 1},     [LMX_DTYPE_U64] = {"U64", 8},
    [LMX_DTYPE_U32] = {"U32", 4},  [LMX_DTYPE_U16] = {"U16", 2},   [LMX_DTYPE_U8] = {"U8", 1},
    [LMX_DTYPE_BOOL] = {"BOOL", 1},
};

const char *lmx_dtype_name(lmx_dtype t) {
    if ((int)t < 0 || t >= LMX_DTYPE_COUNT) return "?";
    return dtype_table[t].name;
}

size_t lmx_dtype_size(lmx_dtype t) {
    if ((int)t < 0 || t >= LMX_DTYPE_COUNT) return 0;
    return dtype_table[t].size;
}

bool lmx_dtype_from_name(const char *name, lmx_dtype *out) {
    if (!name) return false;
    for (int i = 0; i < LMX_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            if (out) *out = (lmx_dtype)i;
            return true;
        }
    }
    return false;
}

bool lmx_dtype_is_float(lmx_dtype t) {
    return t == LMX_DTYPE_F32 || t == LMX_DTYPE_F16 || t == LMX_DTYPE_BF16;
}

static inline float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float lmx_bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

float lmx_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13); /* Inf, or NaN with its payload kept */
    } else if (exp != 0) {
        bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign; /* ±0 */
    } else {
        /* subnormal: mant * 2^-24; normalise so the leading 1 lands on bit 10 */
        int shift = 0;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            shift++;
        }
        mant &= 0x3ffu;
        bits = sign | ((uint32_t)(127 - 15 + 1 - shift) << 23) | (mant << 13);
    }
    return bits_to_f32(bits);
}

uint16_t lmx_f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        /* NaN: keep sign and the top payload bits, force quiet so it cannot become Inf */
        return (uint16_t)((u >> 16) | 0x0040u);
    }
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even; overflow gives Inf */
    return (uint16_t)(u >> 16);
}

uint16_t lmx_f32_to_f16(float f) {
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t ax = u & 0x7fffffffu;
    if (ax > 0x7f800000u) { /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (or Inf) rounds to Inf */
    if (ax >= 0x38800000u) {                                   /* normal half: >= 2^-14 */
        ax -= (uint32_t)(127 - 15) << 23;                       /* rebias the exponent */
        ax += 0xfffu + ((ax >> 13) & 1u);                       /* ties to even; carry is fine */
        return (uint16_t)(sign | (ax >> 13));
    }
    if (ax <= 0x33000000u) return sign; /* <= 2^-25: rounds to ±0 (2^-25 is a tie to even 0) */
    /* subnormal half: value in units of 2^-24 is m * 2^(e-126), e in [102, 112] */
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++; /* r may reach 0x400: the smallest normal */
    return (uint16_t)(sign | r);
}

lmx_status lmx_tensor_to_f32(const lmx_tensor_view *t, int64_t first, int64_t n, float *dst) {
    if (!t) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_tensor_to_f32: NULL tensor");
    const char *file = t->file ? t->file : "?";
    const char *name = t->name ? t->name : "?";
    if (first < 0 || n < 0 || first > t->numel || n > t->numel - first) {
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "%s: tensor %s: elements [%lld, +%lld) are outside its %lld elements", file, name,
                         (long long)first, (long long)n, (long long)t->numel);
    }
    if (!lmx_dtype_is_float(t->dtype)) {
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: tensor %s: dtype %s is not a float type", file, name,
                         lmx_dtype_name(t->dtype));
    }
    size_t es = lmx_dtype_size(t->dtype);
    if ((uint64_t)t->numel * es != t->nbytes) { /* a hand-made view that lies about its size */
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: tensor %s: %zu bytes do not hold %lld %s elements",
                         file, name, t->nbytes, (long long)t->numel, lmx_dtype_name(t->dtype));
    }
    if (n == 0) return LMX_OK;
    if (!dst || !t->data) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: tensor %s: NULL buffer", file, name);
    const uint8_t *src = t->data + (size_t)first * es; /* [n] elements of es bytes, unaligned */
    switch (t->dtype) {
    case LMX_DTYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case LMX_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = lmx_bf16_to_f32(h);
        }
        break;
    case LMX_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = lmx_f16_to_f32(h);
        }
        break;
    default:
        break;
    }
    return LMX_OK;
}
