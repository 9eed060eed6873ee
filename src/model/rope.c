/* rope.c — see rope.h. */
#include "model/rope.h"

#include <math.h>

void lmx_rope_inv_freq(const lmx_rope_config *r, int rot, const float *ext, float *out) {
    const int half = rot / 2;
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)rot;
        float base_pow = (float)pow((double)(float)r->theta, (double)e);
        if (ext) base_pow = ext[i] * base_pow;
        float inv = 1.0f / base_pow;
        if (r->type == LMX_ROPE_LINEAR) {
            inv = inv / (float)r->factor;
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
