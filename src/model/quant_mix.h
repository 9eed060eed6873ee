/* quant_mix.h — which quantization formats a model's weights hold, and in what share: each distinct
 * (mode, bits, group size) of its packed weight tensors with the logical parameters they pack (the
 * probe's count), and the one label `lmx info` and `lmx bench` print (lmx_model_info.quantization). */
#ifndef LMX_MODEL_QUANT_MIX_H
#define LMX_MODEL_QUANT_MIX_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

#define LMX_QUANT_MIX_MAX 8

typedef struct lmx_quant_mix {
    int n;                                /* distinct formats seen, in order of first appearance */
    lmx_quant_params p[LMX_QUANT_MIX_MAX]; /* [n] */
    int64_t params[LMX_QUANT_MIX_MAX];     /* [n] logical parameters held in p[i] */
    int64_t other;                        /* parameters of formats past the LMX_QUANT_MIX_MAX-th */
} lmx_quant_mix;

/* Counts `params` parameters stored in format p. */
void lmx_quant_mix_add(lmx_quant_mix *m, lmx_quant_params p, int64_t params);

/* The label of m into buf[n]: "none" (no packed weights), one format ("q4 g64" for affine, the mode's
 * name for the fp modes: "mxfp4"), or the mix, each format with its share of the packed parameters,
 * largest first ("mxfp4 94% + q8 g64 6%"; a share below 1 % reads "<1%", one above 99 % of several
 * ">99%"). The first word is always the format holding the most parameters. */
void lmx_quant_mix_label(const lmx_quant_mix *m, char *buf, size_t n);

#endif
