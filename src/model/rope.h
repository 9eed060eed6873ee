/* rope.h — RoPE inverse-frequency tables computed like Hugging Face transformers (fp32 inv_freq):
 * default, linear (inv_freq / factor), llama3 (band-wise: low frequencies / factor, a smooth ramp in
 * between, high frequencies unchanged) and longrope (inv_freq / ext_factor[i]).
 * Pure function; thread-safe.
 */
#ifndef LMX_MODEL_ROPE_H
#define LMX_MODEL_ROPE_H

#include "model/config.h"

/* out[rot_dim/2] = inverse frequencies for rotary dimension rot_dim. ext (longrope short or long
 * factors, [rot_dim/2]) may be NULL. */
void lmx_rope_inv_freq(const lmx_rope_config *r, int rot_dim, const float *ext, float *out);

#endif
