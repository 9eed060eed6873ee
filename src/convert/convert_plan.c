/* convert_plan.c — which tensors mlx_lm.convert quantizes, casts or drops (see convert.h).
 * mlx-lm quantizes every module with to_quantized (Linear, Embedding) whose weight's last
 * dimension is a multiple of the group size (utils.py `quantize_model`, wrapped predicate); in a
 * Hugging Face checkpoint these are exactly the 2-D float "*.weight" tensors (norm weights are
 * 1-D, convolutions of vision towers have more dimensions). */
#include "convert/convert.h"

#include <string.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

lmx_conv_action lmx_convert_plan(const char *name, lmx_dtype dtype, int ndim, const int64_t *shape, int group_size,
                                 bool quantize, bool tied) {
    if (ends_with(name, "rotary_emb.inv_freq")) return LMX_CONV_DROP;
    if (tied && !strcmp(name, "lm_head.weight")) return LMX_CONV_DROP;
    bool is_float = dtype == LMX_DTYPE_F32 || dtype == LMX_DTYPE_F16 || dtype == LMX_DTYPE_BF16;
    if (quantize && is_float && ndim == 2 && ends_with(name, ".weight") && shape[1] > 0 && shape[0] > 0 &&
        shape[1] % group_size == 0)
        return LMX_CONV_QUANTIZE;
    return LMX_CONV_CAST;
}
