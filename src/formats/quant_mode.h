/* quant_mode.h — the quantization modes of MLX ("mode" in config.json's quantization block and its
 * per-layer entries; absent = affine), one enum for the loader, the backends and the converter.
 *
 *   affine: bits 2..8, group 32/64/128, float scales and biases (mlx_quant.h);
 *   mxfp4:  bits 4, group 32, E2M1 codes, uint8 E8M0 scales (2^(s-127)), no biases;
 *   mxfp8:  bits 8, group 32, E4M3 codes, uint8 E8M0 scales, no biases;
 *   nvfp4:  bits 4, group 16, E2M1 codes, uint8 E4M3 scales, no biases (MLX's optional global
 *           scale exists only for activation quantization, never in a saved weight).
 * (mlx/ops.cpp `fp_quantize`, python/mlx/nn/layers/quantized.py `_defaults_for_mode`.) The codes of
 * every mode are packed LSB first into U32 words, 32/bits codes a word (mlx_mx.h). */
#ifndef LMX_FORMATS_QUANT_MODE_H
#define LMX_FORMATS_QUANT_MODE_H

#include <stdbool.h>
#include <string.h>

typedef enum lmx_quant_mode {
    LMX_QUANT_AFFINE = 0,
    LMX_QUANT_MXFP4 = 1,
    LMX_QUANT_MXFP8 = 2,
    LMX_QUANT_NVFP4 = 3,
} lmx_quant_mode;

#define LMX_QUANT_N_MODES 4

/* "affine", "mxfp4", "mxfp8", "nvfp4" */
static inline const char *lmx_quant_mode_name(lmx_quant_mode m) {
    static const char *const names[LMX_QUANT_N_MODES] = {"affine", "mxfp4", "mxfp8", "nvfp4"};
    return (unsigned)m < LMX_QUANT_N_MODES ? names[m] : "?";
}

/* Parses a mode name (exact, as MLX writes it); false for an unknown one. */
static inline bool lmx_quant_mode_parse(const char *s, lmx_quant_mode *out) {
    for (int m = 0; m < LMX_QUANT_N_MODES; m++)
        if (s && !strcmp(s, lmx_quant_mode_name((lmx_quant_mode)m))) {
            *out = (lmx_quant_mode)m;
            return true;
        }
    return false;
}

/* The floating-point (microscaling) modes: fixed bits and group size, uint8 scales, no biases. */
static inline bool lmx_quant_mode_is_fp(lmx_quant_mode m) { return m != LMX_QUANT_AFFINE; }
/* Bits of an fp mode's codes (affine: 0, the bits vary). */
static inline int lmx_quant_mode_bits(lmx_quant_mode m) {
    return m == LMX_QUANT_MXFP8 ? 8 : (m == LMX_QUANT_AFFINE ? 0 : 4);
}
/* Group size of an fp mode (affine: 0, it varies). */
static inline int lmx_quant_mode_group(lmx_quant_mode m) {
    return m == LMX_QUANT_NVFP4 ? 16 : (m == LMX_QUANT_AFFINE ? 0 : 32);
}
/* mlx-lm's defaults per mode (utils.py `quantize_model`): (64, 4), (32, 4), (32, 8), (16, 4). */
static inline int lmx_quant_mode_default_group(lmx_quant_mode m) { return m == LMX_QUANT_AFFINE ? 64 : lmx_quant_mode_group(m); }
static inline int lmx_quant_mode_default_bits(lmx_quant_mode m) { return m == LMX_QUANT_AFFINE ? 4 : lmx_quant_mode_bits(m); }

#endif
