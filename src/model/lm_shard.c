/* lm_shard.c — the tensor-parallel plan and the column slices of row-parallel weights (lm_shard.h). */
#include "model/lm_shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/lm_bind.h"
#include "util/error.h"
#include "util/log.h"

lm_shard lm_shard_whole(const lmx_model_config *c) {
    return (lm_shard){.rank = 0,
                      .n_ranks = 1,
                      .n_heads = c->n_heads,
                      .n_kv_heads = c->n_kv_heads,
                      .inter = c->intermediate_size,
                      .vocab = c->vocab_size,
                      .vocab_slot = c->vocab_size};
}

/* Whether every layer's `proj` (o_proj or down_proj: [hidden, in_cols]) splits into n column blocks of
 * in_cols / n on its quantization groups; *why names the first one that does not. */
static lmx_status cols_split(binder *b, const char *proj, int64_t in_cols, bool bias, int n, bool *ok, char *why,
                             size_t why_len) {
    const lmx_model_config *c = b->c;
    *ok = true;
    for (int l = 0; l < c->n_layers && *ok; l++) {
        char m[512];
        snprintf(m, sizeof m, "%slayers.%d.%s", b->prefix, l, proj);
        lmx_weight_desc d;
        lmx_status st = lmx_bind_linear_desc(b, m, c->hidden_size, in_cols, bias, &d);
        if (st != LMX_OK) return st;
        if (d.kind == LMX_WEIGHT_QUANT && (in_cols / n) % d.group_size != 0) {
            *ok = false;
            snprintf(why, why_len, "%s: %lld input columns per rank are not a multiple of its group size %d", m,
                     (long long)(in_cols / n), d.group_size);
        }
    }
    return LMX_OK;
}

lmx_status lm_shard_plan(binder *b, int n, lm_shard *out) {
    const lmx_model_config *c = b->c;
    if (n < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "tensor parallel: %d ranks", n);
    const lm_shard whole = lm_shard_whole(c);
    for (int r = 0; r < n; r++) out[r] = whole, out[r].rank = r, out[r].n_ranks = n;
    if (n == 1) return LMX_OK;
    for (int l = 0; c->layer_moe && l < c->n_layers; l++)
        if (c->layer_moe[l])
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "tensor parallel: %s has mixture-of-experts layers (expert parallel is not implemented)",
                             c->model_type);
    const int nh = c->n_heads, kv = c->n_kv_heads, I = c->intermediate_size, V = c->vocab_size, D = c->head_dim;
    char why[600] = "";
    /* attention: whole heads per rank, each rank's kv heads its own or a replica */
    bool attn = nh % n == 0 && (kv % n == 0 || n % kv == 0);
    if (!attn)
        snprintf(why, sizeof why, "%d query heads / %d kv heads do not split over %d ranks", nh, kv, n);
    else {
        lmx_status st = cols_split(b, "self_attn.o_proj", (int64_t)nh * D, c->attention_bias, n, &attn, why, sizeof why);
        if (st != LMX_OK) return st;
    }
    if (!attn) LMX_LOG_I("tensor parallel: attention replicated on every rank (%s)", why);
    bool mlp = I % n == 0;
    if (!mlp)
        snprintf(why, sizeof why, "intermediate size %d does not split over %d ranks", I, n);
    else {
        lmx_status st = cols_split(b, "mlp.down_proj", I, c->mlp_bias, n, &mlp, why, sizeof why);
        if (st != LMX_OK) return st;
    }
    if (!mlp) LMX_LOG_I("tensor parallel: MLP replicated on every rank (%s)", why);
    const int slot = (V + n - 1) / n;
    const bool vocab = V - (n - 1) * slot >= 1; /* every rank holds a row */
    if (!vocab) LMX_LOG_I("tensor parallel: vocabulary of %d replicated on every rank (too few rows for %d)", V, n);
    for (int r = 0; r < n; r++) {
        lm_shard *s = &out[r];
        if (attn) {
            s->attn_split = true;
            s->n_heads = nh / n;
            s->head0 = r * (nh / n);
            s->n_kv_heads = kv % n == 0 ? kv / n : 1;
            s->kv_head0 = kv % n == 0 ? r * (kv / n) : r / (n / kv);
        }
        if (mlp) {
            s->mlp_split = true;
            s->inter = I / n;
            s->inter0 = r * (I / n);
        }
        if (vocab) {
            s->vocab_split = true;
            s->vocab_slot = slot;
            s->vocab0 = r * slot;
            s->vocab = V - r * slot < slot ? V - r * slot : slot;
        }
    }
    return LMX_OK;
}

void lm_shard_local_ids(const lm_shard *s, const int32_t *ids, int T, int32_t *lids) {
    for (int t = 0; t < T; t++)
        lids[t] = ids[t] >= s->vocab0 && ids[t] - s->vocab0 < s->vocab ? ids[t] - s->vocab0 : -1;
}

/* rows of `width` bytes starting `off` bytes into each of `rows` stored rows of `stride` bytes */
static void copy_cols(uint8_t *dst, const uint8_t *src, int64_t rows, size_t stride, size_t off, size_t width) {
    for (int64_t r = 0; r < rows; r++) memcpy(dst + (size_t)r * width, src + (size_t)r * stride + off, width);
}

lmx_status lm_shard_cols(const lmx_weight_desc *d, int64_t col0, int64_t cols, void **copy, lmx_weight_desc *out) {
    *copy = NULL;
    *out = *d;
    const int64_t rows = d->rows;
    if (d->kind == LMX_WEIGHT_DENSE) {
        const size_t es = lmx_dtype_size(d->dtype), stride = (size_t)d->cols * es;
        uint8_t *m = malloc((size_t)rows * (size_t)cols * es + 1);
        if (!m) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: %lld columns of %lld rows", d->name, (long long)cols,
                                 (long long)rows);
        copy_cols(m, (const uint8_t *)d->data + (size_t)d->row0 * stride, rows, stride, (size_t)col0 * es,
                  (size_t)cols * es);
        out->data = m;
        *copy = m;
    } else if (d->kind == LMX_WEIGHT_QUANT) {
        /* packed words [rows, cols*bits/32]; scales (+ affine biases) [rows, cols/group] of the scale type */
        const bool fp = lmx_quant_mode_is_fp(d->mode);
        const size_t ss = fp ? 1 : lmx_dtype_size(d->dtype);
        const size_t wstride = (size_t)d->cols * (size_t)d->bits / 8, sstride = (size_t)(d->cols / d->group_size) * ss;
        const size_t wbytes = (size_t)cols * (size_t)d->bits / 8, sbytes = (size_t)(cols / d->group_size) * ss;
        const size_t nw = (size_t)rows * wbytes, ns = (size_t)rows * sbytes;
        uint8_t *m = malloc(nw + (fp ? 1 : 2) * ns + 1);
        if (!m) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: %lld columns of %lld rows", d->name, (long long)cols,
                                 (long long)rows);
        const size_t woff = (size_t)col0 * (size_t)d->bits / 8, soff = (size_t)(col0 / d->group_size) * ss;
        copy_cols(m, (const uint8_t *)d->data + (size_t)d->row0 * wstride, rows, wstride, woff, wbytes);
        copy_cols(m + nw, (const uint8_t *)d->scales + (size_t)d->row0 * sstride, rows, sstride, soff, sbytes);
        if (!fp) copy_cols(m + nw + ns, (const uint8_t *)d->biases + (size_t)d->row0 * sstride, rows, sstride, soff, sbytes);
        out->data = m;
        out->scales = m + nw;
        out->biases = fp ? NULL : m + nw + ns;
        *copy = m;
    } else {
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: a column slice of a vector", d->name);
    }
    if (d->bias) out->bias = (const uint8_t *)d->bias + (size_t)d->row0 * lmx_dtype_size(d->bias_dtype);
    out->row0 = 0;
    out->cols = cols;
    return LMX_OK;
}

/* the fraction of tensor `name` (a weight, its scales/biases or its bias) shard s holds */
static double held_fraction(const lmx_model_config *c, const lm_shard *s, const char *name) {
    static const struct {
        const char *part;
        int kind; /* 0 query heads, 1 kv heads, 2 q|k|v, 3 intermediate, 4 vocabulary */
    } parts[] = {{".self_attn.q_proj.", 0},   {".self_attn.o_proj.", 0},  {".self_attn.k_proj.", 1},
                 {".self_attn.v_proj.", 1},   {".self_attn.qkv_proj.", 2}, {".mlp.gate_proj.", 3},
                 {".mlp.up_proj.", 3},        {".mlp.down_proj.", 3},      {".mlp.gate_up_proj.", 3},
                 {"embed_tokens.", 4},        {"lm_head.", 4}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (!strstr(name, parts[i].part)) continue;
        switch (parts[i].kind) {
        case 0: return (double)s->n_heads / c->n_heads;
        case 1: return (double)s->n_kv_heads / c->n_kv_heads;
        case 2: return (double)(s->n_heads + 2 * s->n_kv_heads) / (c->n_heads + 2 * c->n_kv_heads);
        case 3: return (double)s->inter / c->intermediate_size;
        default: return (double)s->vocab / c->vocab_size;
        }
    }
    return 1.0; /* norms, rope tables: replicated */
}

uint64_t lm_shard_weight_bytes(const lmx_model_config *c, const lmx_weights *w, const lm_shard *s) {
    double bytes = 0;
    for (size_t i = 0, n = lmx_weights_count(w); i < n; i++) {
        const lmx_tensor_view *t = lmx_weights_get(w, i);
        bytes += (double)t->nbytes * held_fraction(c, s, t->name);
    }
    return (uint64_t)(bytes + 0.5);
}
