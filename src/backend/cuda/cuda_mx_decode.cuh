/* cuda_mx_decode.cuh — the device decoders of the fp quantization modes (internal, C++ only), shared
 * by cuda_mx.cu and the expert kernels of cuda_moe_gemv.cu. Decoding follows formats/mlx_mx.h: E2M1
 * c → the f16 with bits ((c & 7) << 9 | (c & 8) << 12) times 2^14, E4M3 b → the f16 with bits
 * ((b & 0x7F) << 7 | (b & 0x80) << 8) times 2^8 (MLX's Metal decoders), E8M0 s → 2^(s-127)
 * (s = 0: 2^-127). */
#ifndef LMX_BACKEND_CUDA_MX_DECODE_CUH
#define LMX_BACKEND_CUDA_MX_DECODE_CUH

#include "backend/cuda/cuda_common.cuh"
#include "formats/quant_mode.h"

static __device__ __forceinline__ float mx_e2m1(uint32_t c) {
    return __half2float(__ushort_as_half((unsigned short)(((c & 7u) << 9) | ((c & 8u) << 12)))) * 16384.0f;
}

static __device__ __forceinline__ float mx_e4m3(uint32_t b) {
    return __half2float(__ushort_as_half((unsigned short)(((b & 0x7Fu) << 7) | ((b & 0x80u) << 8)))) * 256.0f;
}

template <int MODE> static __device__ __forceinline__ float mx_scale(uint8_t s) {
    if (MODE == LMX_QUANT_NVFP4) return mx_e4m3(s);
    return __uint_as_float(s == 0 ? 0x00400000u : (uint32_t)s << 23);
}

/* codes in one 16-byte word, and the group size */
template <int MODE> struct mx_fmt {
    static constexpr int CODES = MODE == LMX_QUANT_MXFP8 ? 16 : 32;
    static constexpr int GS = MODE == LMX_QUANT_NVFP4 ? 16 : 32;
};

/* The CODES dequantized values of 16-byte word u of a row (codes q, the row's scales sr). */
template <int MODE>
static __device__ __forceinline__ void mx_decode(const uint4 q, const uint8_t *sr, int64_t u, float (&v)[mx_fmt<MODE>::CODES]) {
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    if (MODE == LMX_QUANT_MXFP8) {
        const float s = mx_scale<MODE>(sr[u / 2]); /* 16 codes: half a group of 32 */
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = s * mx_e4m3((words[i / 4] >> (8 * (i % 4))) & 0xFFu);
    } else {
        const int per_word_group = MODE == LMX_QUANT_NVFP4 ? 2 : 4; /* words per group */
#pragma unroll
        for (int wi = 0; wi < 4; wi++) {
            const float s = mx_scale<MODE>(sr[u * (4 / per_word_group) + wi / per_word_group]);
#pragma unroll
            for (int i = 0; i < 8; i++) v[wi * 8 + i] = s * mx_e2m1(words[wi] >> (4 * i));
        }
    }
}

#endif
