/* quant_mix.c — the formats of a model's packed weights and their label (see quant_mix.h). */
#include "model/quant_mix.h"

#include <stdio.h>
#include <string.h>

void lmx_quant_mix_add(lmx_quant_mix *m, lmx_quant_params p, int64_t params) {
    for (int i = 0; i < m->n; i++) {
        if (m->p[i].mode == p.mode && m->p[i].bits == p.bits && m->p[i].group_size == p.group_size) {
            m->params[i] += params;
            return;
        }
    }
    if (m->n == LMX_QUANT_MIX_MAX) {
        m->other += params;
        return;
    }
    m->p[m->n] = p;
    m->params[m->n++] = params;
}

/* one format's name: "q<bits> g<group>" (affine), else the mode's ("mxfp4": its bits and group are fixed) */
static void format_name(lmx_quant_params p, char *buf, size_t n) {
    if (lmx_quant_mode_is_fp(p.mode)) snprintf(buf, n, "%s", lmx_quant_mode_name(p.mode));
    else snprintf(buf, n, "q%d g%d", p.bits, p.group_size);
}

void lmx_quant_mix_label(const lmx_quant_mix *m, char *buf, size_t n) {
    if (n == 0) return;
    if (m->n == 0) {
        snprintf(buf, n, "none");
        return;
    }
    if (m->n == 1 && m->other == 0) {
        format_name(m->p[0], buf, n);
        return;
    }
    int order[LMX_QUANT_MIX_MAX];
    int64_t total = m->other;
    for (int i = 0; i < m->n; i++) {
        order[i] = i;
        total += m->params[i];
    }
    for (int i = 1; i < m->n; i++) { /* largest share first; ties keep the order of appearance */
        int k = order[i], j = i;
        for (; j > 0 && m->params[order[j - 1]] < m->params[k]; j--) order[j] = order[j - 1];
        order[j] = k;
    }
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i <= m->n && len < n; i++) {
        char name[32] = "other";
        int64_t part = m->other;
        if (i < m->n) {
            format_name(m->p[order[i]], name, sizeof name);
            part = m->params[order[i]];
        } else if (m->other == 0) {
            break;
        }
        const double pct = total > 0 ? 100.0 * (double)part / (double)total : 0.0;
        char share[8];
        if (pct < 0.5) snprintf(share, sizeof share, "<1%%");
        else if (pct >= 99.5) snprintf(share, sizeof share, ">99%%");
        else snprintf(share, sizeof share, "%.0f%%", pct);
        int w = snprintf(buf + len, n - len, "%s%s %s", i ? " + " : "", name, share);
        if (w < 0) break;
        len += (size_t)w;
    }
}
