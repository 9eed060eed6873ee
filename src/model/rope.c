/* rope.c — see rope.h. */
#include "model/rope.h"

#include <math.h>

/* YaRN correction dimension for `rot` rotations (transformers find_correction_dim). */
static double yarn_dim(double rotations, int dim, double base, double orig) {
    return ((double)dim * log(orig / (rotations * 2.0 * M_PI))) / (2.0 * log(base));
}

void lmx_rope_inv_freq(const lmx_rope_config *r, int rot, const float *ext, float *out) {
    const int half = rot / 2;
    double lo = 0, hi = 0;
    if (r->type == LMX_ROPE_YARN) {
        lo = yarn_dim(r->beta_fast, rot, r->theta, r->original_max_position);
        hi = yarn_dim(r->beta_slow, rot, r->theta, r->original_max_position);
        if (r->truncate) {
            lo = floor(lo);
            hi = ceil(hi);
        }
        if (lo < 0) lo = 0;
        if (hi > rot - 1) hi = rot - 1;
        if (lo == hi) hi += 0.001;
    }
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)rot;
        float base_pow = (float)pow((double)(float)r->theta, (double)e);
        if (ext) base_pow = ext[i] * base_pow;
        float inv = 1.0f / base_pow;
        if (r->type == LMX_ROPE_LINEAR) {
            inv = inv / (float)r->factor;
        } else if (r->type == LMX_ROPE_YARN) {
            /* ramp 0 → extrapolated (plain) frequency, 1 → interpolated (÷ factor) */
            float ramp = (float)(((double)i - lo) / (hi - lo));
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float extrap_w = 1.0f - ramp;
            float interp = 1.0f / ((float)r->factor * base_pow);
            inv = interp * (1.0f - extrap_w) + inv * extrap_w;
        } else if (r->type == LMX_ROPE_LLAMA3) {
            double factor = r->factor, lo = r->low_freq_factor, hi = r->high_freq_factor;
            double old = r->original_max_position;
            double lo_wl = old / lo, hi_wl = old / hi;
            double wl = 2.0 * M_PI / (double)inv;
            double v = wl > lo_wl ? inv / factor : inv;
            if (!(wl < hi_wl) && !(wl > lo_wl)) {
                double smooth = (old / wl - lo) / (hi - lo);
                v = (1.0 - smooth) * v / factor + smooth * v;
            }
            inv = (float)v;
        }
        out[i] = inv;
    }
}
