/* lm_bind.c — opening a model directory: config, weight files, and binding every expected tensor
 * (validated against the config) to backend weights. See lm.h for the rules. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/mlx_mx.h"
#include "formats/mlx_quant.h"
#include "model/lm_bind.h"
#include "model/quant_mix.h"
#include "model/rope.h"
#include "util/error.h"
#include "util/log.h"


const lmx_tensor_view *lmx_bind_find(binder *b, const char *name) {
    const lmx_tensor_view *t = lmx_weights_find(b->lm->weights, name);
    if (t) {
        if (b->n_used == b->cap_used) {
            size_t nc = b->cap_used ? b->cap_used * 2 : 256;
            const lmx_tensor_view **nu = realloc(b->used, nc * sizeof *nu);
            if (!nu) return t; /* only costs a spurious "unused" warning */
            b->used = nu;
            b->cap_used = nc;
        }
        b->used[b->n_used++] = t;
    }
    return t;
}

void lmx_bind_shape_str(const lmx_tensor_view *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "] %s", lmx_dtype_name(t->dtype));
}

lmx_status lmx_bind_bad_shape(const lmx_tensor_view *t, const char *expect) {
    char got[128];
    lmx_bind_shape_str(t, got, sizeof got);
    return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "%s: tensor %s: expected %s, got %s", t->file, t->name, expect,
                     got);
}

lmx_status lmx_bind_missing(binder *b, const char *name, const char *expect) {
    return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "missing tensor %s (expected %s) for %s model", name, expect,
                     b->c->model_type);
}

/* Elements [off, off + n) of a float vector [dim] (norm weights: all of it; per-head sinks: the shard's heads). */
static lmx_status bind_vector_part(binder *b, const char *name, int64_t dim, int64_t off, int64_t n,
                                   lmx_bweight **out) {
    char expect[96];
    snprintf(expect, sizeof expect, "[%lld] float", (long long)dim);
    const lmx_tensor_view *t = lmx_bind_find(b, name);
    if (!t) return lmx_bind_missing(b, name, expect);
    if (!lmx_dtype_is_float(t->dtype) || t->ndim != 1 || t->shape[0] != dim) return lmx_bind_bad_shape(t, expect);
    lmx_weight_desc d = {.name = name, .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = n, .dtype = t->dtype,
                         .data = t->data + (size_t)off * lmx_dtype_size(t->dtype)};
    return b->lm->be->ops->weight_upload(b->lm->be, &d, out);
}

static lmx_status bind_vector(binder *b, const char *name, int64_t dim, lmx_bweight **out) {
    return bind_vector_part(b, name, dim, 0, dim, out);
}

/* "d0, d1, ..." of the n leading dims */
static void lead_str(const int64_t *lead, int n, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)lead[i]);
}

lmx_status lmx_bind_affine_desc(binder *b, const char *module, const lmx_tensor_view *w, const lmx_tensor_view *s,
                                const lmx_tensor_view *qb, int qcfg, lmx_quant_params qp, const int64_t *lead,
                                int nlead, int64_t in_cols, lmx_weight_desc *d) {
    char name[640], expect[192], ld[64];
    const int nd = nlead + 1;
    const char *what = nlead > 1 ? " experts" : "";
    lead_str(lead, nlead, ld, sizeof ld);
    bool lead_ok = w->ndim == nd;
    for (int i = 0; lead_ok && i < nlead; i++) lead_ok = w->shape[i] == lead[i];
    /* bits and group size from the shapes: weight [..., out, in*bits/32] u32, scales [..., out, in/group] */
    const int64_t packed = w->ndim == nd ? w->shape[nlead] : 0;
    const int64_t bits = (packed * 32) % in_cols == 0 ? packed * 32 / in_cols : 0;
    snprintf(expect, sizeof expect, "[%s, %lld*bits/32] U32 (MLX-quantized%s)", ld, (long long)in_cols, what);
    if (w->dtype != LMX_DTYPE_U32 || !lead_ok || !lmx_mlx_quant_bits_ok(bits)) return lmx_bind_bad_shape(w, expect);
    bool s_ok = s->ndim == nd;
    for (int i = 0; s_ok && i < nlead; i++) s_ok = s->shape[i] == lead[i];
    const int64_t groups = s->ndim == nd ? s->shape[nlead] : 0;
    const int64_t gs = groups > 0 && in_cols % groups == 0 ? in_cols / groups : 0;
    snprintf(expect, sizeof expect, "[%s, %lld/group_size] float with group_size 32, 64 or 128", ld,
             (long long)in_cols);
    if (!lmx_dtype_is_float(s->dtype) || !s_ok || !lmx_mlx_quant_group_ok(gs)) return lmx_bind_bad_shape(s, expect);
    char sexp[160];
    lmx_bind_shape_str(s, sexp, sizeof sexp);
    if (!qb) {
        snprintf(name, sizeof name, "%s.biases", module);
        return lmx_bind_missing(b, name, sexp);
    }
    bool qb_ok = qb->dtype == s->dtype && qb->ndim == nd;
    for (int i = 0; qb_ok && i < nd; i++) qb_ok = qb->shape[i] == s->shape[i];
    if (!qb_ok) return lmx_bind_bad_shape(qb, sexp);
    if (qcfg == 1 && (qp.bits != bits || qp.group_size != gs))
        return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED,
                         "%s: %s: config.json says bits=%d group_size=%d, tensor shapes say bits=%lld "
                         "group_size=%lld",
                         w->file, module, qp.bits, qp.group_size, (long long)bits, (long long)gs);
    d->kind = LMX_WEIGHT_QUANT;
    d->dtype = s->dtype;
    d->data = w->data;
    d->scales = s->data;
    d->biases = qb->data;
    d->bits = (int)bits;
    d->group_size = (int)gs;
    return LMX_OK;
}

/* Validates a Linear/Embedding module [out, in] (float or MLX-quantized), optionally with a bias, and
 * describes all of its rows in *d (d->name = module: the caller keeps module alive). */
lmx_status lmx_bind_linear_desc(binder *b, const char *module, int64_t out_rows, int64_t in_cols, bool want_bias,
                              lmx_weight_desc *out) {
    char name[512], expect[160];
    snprintf(name, sizeof name, "%s.weight", module);
    const lmx_tensor_view *w = lmx_bind_find(b, name);
    snprintf(name, sizeof name, "%s.scales", module);
    const lmx_tensor_view *s = lmx_bind_find(b, name);
    snprintf(name, sizeof name, "%s.biases", module);
    const lmx_tensor_view *qb = s ? lmx_bind_find(b, name) : NULL;
    snprintf(name, sizeof name, "%s.weight", module);
    lmx_quant_params qp;
    int qcfg = lmx_model_config_quant_for(b->c, module, &qp);
    lmx_weight_desc d = {.name = module, .cols = in_cols};
    if (!w) {
        snprintf(expect, sizeof expect, "[%lld, %lld]", (long long)out_rows, (long long)in_cols);
        return lmx_bind_missing(b, name, expect);
    }
    if (s) {
        if (qcfg == 0)
            return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED,
                             "%s: %s.scales exists but config.json's quantization block says %s is not quantized",
                             w->file, module, module);
        if (qcfg == 1 && lmx_quant_mode_is_fp(qp.mode)) {
            /* fp modes: weight U32 [out, in*bits/32], scales U8 [out, in/group], no biases */
            int64_t cols = 0;
            lmx_status mst = lmx_mx_check_views(w, s, qb, qp.mode, &cols);
            if (mst != LMX_OK) return mst;
            if (w->ndim != 2 || w->shape[0] != out_rows || cols != in_cols) {
                snprintf(expect, sizeof expect, "[%lld, %lld] (%s)", (long long)out_rows, (long long)in_cols,
                         lmx_quant_mode_name(qp.mode));
                return lmx_bind_bad_shape(w, expect);
            }
            d.kind = LMX_WEIGHT_QUANT;
            d.mode = qp.mode;
            d.dtype = s->dtype;
            d.data = w->data;
            d.scales = s->data;
            d.bits = qp.bits;
            d.group_size = qp.group_size;
            goto have_weight;
        }
        const int64_t lead[1] = {out_rows};
        lmx_status st = lmx_bind_affine_desc(b, module, w, s, qb, qcfg, qp, lead, 1, in_cols, &d);
        if (st != LMX_OK) return st;
    } else {
        snprintf(expect, sizeof expect, "[%lld, %lld] float", (long long)out_rows, (long long)in_cols);
        if (w->dtype == LMX_DTYPE_U32)
            return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "%s: tensor %s is packed (U32) but %s.scales is missing",
                             w->file, w->name, module);
        if (!lmx_dtype_is_float(w->dtype) || w->ndim != 2 || w->shape[0] != out_rows || w->shape[1] != in_cols)
            return lmx_bind_bad_shape(w, expect);
        d.kind = LMX_WEIGHT_DENSE;
        d.dtype = w->dtype;
        d.data = w->data;
    }
have_weight:
    if (want_bias) {
        snprintf(name, sizeof name, "%s.bias", module);
        snprintf(expect, sizeof expect, "[%lld] float", (long long)out_rows);
        const lmx_tensor_view *bt = lmx_bind_find(b, name);
        if (!bt) return lmx_bind_missing(b, name, expect);
        if (!lmx_dtype_is_float(bt->dtype) || bt->ndim != 1 || bt->shape[0] != out_rows)
            return lmx_bind_bad_shape(bt, expect);
        d.bias = bt->data;
        d.bias_dtype = bt->dtype;
    }
    d.rows = out_rows;
    *out = d;
    return LMX_OK;
}

/* Uploads parts[0..n) into outs[0..n): when `fused` is non-NULL and the binder fuses, as one fused
 * weight (*fused, owning the memory) with outs as its views; parts the backend cannot fuse
 * (LMX_ERR_UNSUPPORTED) and every other case as separate weights. On failure outs/fused hold what
 * was uploaded (the caller's cleanup frees it). */
static lmx_status upload_parts(binder *b, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                               lmx_bweight **outs) {
    lmx_backend *be = b->lm->be;
    if (fused && be->ops->weight_upload_fused) {
        lmx_status st = be->ops->weight_upload_fused(be, parts, n, fused, outs);
        if (st != LMX_ERR_UNSUPPORTED) return st;
        LMX_LOG_D("%s: uploaded unfused (%s)", parts[0].name, lmx_last_error_detail());
    }
    for (int i = 0; i < n; i++) {
        lmx_status st = be->ops->weight_upload(be, &parts[i], &outs[i]);
        if (st != LMX_OK) return st;
    }
    return LMX_OK;
}

/* A Linear/Embedding module [out, in] whose row ranges [row0[i], row0[i] + rows[i]) are uploaded as
 * n_split weights (phi3's fused projections; a rank's rows of a split one); with `fused` non-NULL and
 * several parts, as one fused weight when the backend can. */
static lmx_status bind_linear(binder *b, const char *module, int64_t out_rows, int64_t in_cols, bool want_bias,
                              int n_split, const int64_t *row0, const int64_t *rows, lmx_bweight **outs,
                              lmx_bweight **fused) {
    lmx_weight_desc d, parts[3];
    if (n_split < 1 || n_split > 3)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: split into %d parts", module, n_split);
    lmx_status st = lmx_bind_linear_desc(b, module, out_rows, in_cols, want_bias, &d);
    if (st != LMX_OK) return st;
    for (int i = 0; i < n_split; i++) {
        parts[i] = d;
        parts[i].row0 = row0[i];
        parts[i].rows = rows[i];
    }
    return upload_parts(b, parts, n_split, n_split > 1 ? fused : NULL, outs);
}

/* An embedding / head [V, hidden]: the shard's vocabulary rows */
static lmx_status bind_vocab(binder *b, const char *module, lmx_bweight **out) {
    const lm_shard *sh = &b->lm->shard;
    const int64_t row0 = sh->vocab0, rows = sh->vocab;
    return bind_linear(b, module, b->c->vocab_size, b->c->hidden_size, false, 1, &row0, &rows, out, NULL);
}

/* A row-parallel projection [hidden, in_cols] (o_proj, down_proj): whole, or when `split` the shard's
 * input columns [col0, col0 + cols) copied out of the file (lm_shard_cols), with the bias on rank 0
 * only (the all-reduce adds the ranks' parts). The copy stays with the model while the backend reads
 * it (backend.h upload_copies). */
static lmx_status bind_row_parallel(binder *b, const char *module, int64_t in_cols, bool bias, bool split,
                                    int64_t col0, int64_t cols, lmx_bweight **out) {
    lmx_lm *lm = b->lm;
    lmx_weight_desc d, part;
    lmx_status st = lmx_bind_linear_desc(b, module, b->c->hidden_size, in_cols, bias, &d);
    if (st != LMX_OK || !split) return st != LMX_OK ? st : lm->be->ops->weight_upload(lm->be, &d, out);
    if (lm->shard.rank > 0) d.bias = NULL;
    void *copy = NULL;
    if ((st = lm_shard_cols(&d, col0, cols, &copy, &part)) != LMX_OK) return st;
    st = lm->be->ops->weight_upload(lm->be, &part, out);
    if (lm->be->ops->upload_copies) {
        free(copy);
        return st;
    }
    if (lm->n_host == lm->cap_host) {
        int nc = lm->cap_host ? 2 * lm->cap_host : 16;
        void **nh = realloc(lm->host, (size_t)nc * sizeof *nh);
        if (!nh) {
            free(copy);
            return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: column slice", module);
        }
        lm->host = nh;
        lm->cap_host = nc;
    }
    lm->host[lm->n_host++] = copy; /* freed at close, after the weight */
    return st;
}

static lmx_status upload_rope(lmx_lm *lm, const lmx_rope_config *r, const float *ext, const char *what,
                              lmx_bweight **out) {
    int rot = lm->cfg->rotary_dim;
    float tab[4096];
    if (rot / 2 > (int)(sizeof tab / sizeof tab[0]))
        return lmx_error(LMX_ERR_UNSUPPORTED, "rotary dimension %d is too large", rot);
    lmx_rope_inv_freq(r, rot, ext, tab);
    for (int i = 0; i < rot / 2; i++)
        if (!isfinite(tab[i]) || tab[i] < 0)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                             "config.json: the rope parameters give frequency %g for rotary pair %d (%s)",
                             (double)tab[i], i, what);
    lmx_weight_desc d = {.name = what, .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = rot / 2, .dtype = LMX_DTYPE_F32,
                         .data = tab};
    return lm->be->ops->weight_upload(lm->be, &d, out);
}

/* ---- the model inventory ---- */

static int cmp_ptr(const void *a, const void *b) {
    const void *x = *(const void *const *)a, *y = *(const void *const *)b;
    return x < y ? -1 : x > y;
}

static bool dropped_name(const char *n) {
    return strstr(n, "rotary_emb.inv_freq") || !strncmp(n, "vision_tower.", 13) ||
           !strncmp(n, "multi_modal_projector.", 22) || !strncmp(n, "model.vision_tower.", 19) ||
           !strncmp(n, "model.multi_modal_projector.", 28);
}

static void warn_unused(binder *b) {
    qsort(b->used, b->n_used, sizeof *b->used, cmp_ptr);
    size_t n = lmx_weights_count(b->lm->weights), unused = 0;
    for (size_t i = 0; i < n; i++) {
        const lmx_tensor_view *t = lmx_weights_get(b->lm->weights, i);
        if (dropped_name(t->name)) continue;
        if (bsearch(&t, b->used, b->n_used, sizeof *b->used, cmp_ptr)) continue;
        if (unused++ < 8) LMX_LOG_W("%s: tensor %s is not used by the %s model", t->file, t->name, b->c->model_type);
    }
    if (unused > 8) LMX_LOG_W("… and %zu more unused tensors", unused - 8);
}

lmx_status lmx_bind_prefix(binder *b) {
    const lmx_model_config *c = b->c;
    char m[512];
    /* prefix detection by the embedding */
    static const struct { const char *prefix, *head; } layouts[] = {
        {"model.", "lm_head"},
        {"language_model.model.", "language_model.lm_head"},
        {"model.language_model.", "lm_head"},
    };
    b->prefix = NULL;
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
        snprintf(m, sizeof m, "%sembed_tokens.weight", layouts[i].prefix);
        if (lmx_weights_find(b->lm->weights, m)) {
            b->prefix = layouts[i].prefix;
            b->head = layouts[i].head;
            break;
        }
    }
    if (!b->prefix)
        return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED,
                         "missing tensor model.embed_tokens.weight (expected [%d, %d]) for %s model", c->vocab_size,
                         c->hidden_size, c->model_type);
    return LMX_OK;
}

static lmx_status bind_all(binder *b) {
    lmx_lm *lm = b->lm;
    const lmx_model_config *c = b->c;
    const lm_shard *sh = &lm->shard;
    char m[512];
    lmx_status st = lmx_bind_prefix(b);
    if (st != LMX_OK) return st;
    const int64_t H = c->hidden_size, D = c->head_dim, NQ = (int64_t)c->n_heads * D, NKV = (int64_t)c->n_kv_heads * D;
    const int64_t I = c->intermediate_size;
    /* the shard's rows of q (heads), k and v (kv heads), gate and up (intermediate) */
    const int64_t q0 = (int64_t)sh->head0 * D, nq = (int64_t)sh->n_heads * D;
    const int64_t kv0 = (int64_t)sh->kv_head0 * D, nkv = (int64_t)sh->n_kv_heads * D;
    const int64_t i0 = sh->inter0, ni = sh->inter;
    snprintf(m, sizeof m, "%sembed_tokens", b->prefix);
    if ((st = bind_vocab(b, m, &lm->embed))) return st;
    /* gemma: embeddings *= sqrt(hidden). HF multiplies by the fp32 constant cast to the compute dtype
     * (embed_scale.to(weight.dtype)); lmx computes in fp32, so the constant stays fp32 — this is what
     * transformers gives in fp32, our reference. (mlx-lm, computing in bf16, rounds it to bf16: a
     * relative difference below 0.4 %.) */
    lm->embed_scale = c->embed_scale_sqrt_hidden ? (float)sqrt((double)H) : 1.0f;
    snprintf(m, sizeof m, "%snorm.weight", b->prefix);
    if ((st = bind_vector(b, m, H, &lm->final_norm))) return st;
    /* output head: tied unless config says otherwise; absent key → tied iff lm_head.weight is absent */
    snprintf(m, sizeof m, "%s.weight", b->head);
    bool has_head = lmx_weights_find(lm->weights, m) != NULL;
    bool tied = c->tie_word_embeddings < 0 ? !has_head : c->tie_word_embeddings == 1;
    if (tied) {
        lm->head = lm->embed;
        if (has_head) {
            /* HF ignores a stored lm_head when tied; mark it used to avoid a warning */
            lmx_bind_find(b, m);
            snprintf(m, sizeof m, "%s.scales", b->head);
            lmx_bind_find(b, m);
            snprintf(m, sizeof m, "%s.biases", b->head);
            lmx_bind_find(b, m);
        }
    } else {
        if ((st = bind_vocab(b, b->head, &lm->head))) return st;
    }
    lm->layers = calloc((size_t)c->n_layers, sizeof *lm->layers);
    if (!lm->layers) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "layers");
    const bool attn_b = c->attention_bias, qkv_b = c->attention_bias || c->qkv_bias;
    for (int l = 0; l < c->n_layers; l++) {
        lm_layer *L = &lm->layers[l];
        L->sliding = c->layer_sliding[l];
        char p[256];
        snprintf(p, sizeof p, "%slayers.%d", b->prefix, l);
        if (c->fused_qkv) {
            const int64_t row0[3] = {q0, NQ + kv0, NQ + NKV + kv0}, rows[3] = {nq, nkv, nkv};
            lmx_bweight *o3[3] = {0};
            snprintf(m, sizeof m, "%s.self_attn.qkv_proj", p);
            st = bind_linear(b, m, NQ + 2 * NKV, H, qkv_b, 3, row0, rows, o3, &L->qkv);
            L->q = o3[0];
            L->k = o3[1];
            L->v = o3[2];
            if (st) return st;
        } else {
            /* separate tensors, uploaded as one fused weight where the backend can */
            char mq[512], mk[512], mv[512];
            lmx_weight_desc parts[3];
            lmx_bweight *o3[3] = {0};
            snprintf(mq, sizeof mq, "%s.self_attn.q_proj", p);
            snprintf(mk, sizeof mk, "%s.self_attn.k_proj", p);
            snprintf(mv, sizeof mv, "%s.self_attn.v_proj", p);
            if ((st = lmx_bind_linear_desc(b, mq, NQ, H, qkv_b, &parts[0]))) return st;
            if ((st = lmx_bind_linear_desc(b, mk, NKV, H, qkv_b, &parts[1]))) return st;
            if ((st = lmx_bind_linear_desc(b, mv, NKV, H, qkv_b, &parts[2]))) return st;
            parts[0].row0 = q0, parts[0].rows = nq;
            parts[1].row0 = kv0, parts[1].rows = nkv;
            parts[2].row0 = kv0, parts[2].rows = nkv;
            st = upload_parts(b, parts, 3, &L->qkv, o3);
            L->q = o3[0];
            L->k = o3[1];
            L->v = o3[2];
            if (st) return st;
        }
        snprintf(m, sizeof m, "%s.self_attn.o_proj", p);
        if ((st = bind_row_parallel(b, m, NQ, attn_b, sh->attn_split, q0, nq, &L->o))) return st;
        if (c->layer_moe && c->layer_moe[l]) {
            if ((st = lmx_bind_moe_layer(b, p, L))) return st;
        } else if (c->fused_gate_up) {
            const int64_t row0[2] = {i0, I + i0}, rows[2] = {ni, ni};
            lmx_bweight *o2[2] = {0};
            snprintf(m, sizeof m, "%s.mlp.gate_up_proj", p);
            st = bind_linear(b, m, 2 * I, H, c->mlp_bias, 2, row0, rows, o2, &L->gate_up);
            L->gate = o2[0];
            L->up = o2[1];
            if (st) return st;
        } else {
            char mg[512], mu[512];
            lmx_weight_desc parts[2];
            lmx_bweight *o2[2] = {0};
            snprintf(mg, sizeof mg, "%s.mlp.gate_proj", p);
            snprintf(mu, sizeof mu, "%s.mlp.up_proj", p);
            if ((st = lmx_bind_linear_desc(b, mg, I, H, c->mlp_bias, &parts[0]))) return st;
            if ((st = lmx_bind_linear_desc(b, mu, I, H, c->mlp_bias, &parts[1]))) return st;
            parts[0].row0 = parts[1].row0 = i0;
            parts[0].rows = parts[1].rows = ni;
            st = upload_parts(b, parts, 2, &L->gate_up, o2);
            L->gate = o2[0];
            L->up = o2[1];
            if (st) return st;
        }
        if (!L->moe) {
            snprintf(m, sizeof m, "%s.mlp.down_proj", p);
            if ((st = bind_row_parallel(b, m, I, c->mlp_bias, sh->mlp_split, i0, ni, &L->down))) return st;
        }
        snprintf(m, sizeof m, "%s.input_layernorm.weight", p);
        if ((st = bind_vector(b, m, H, &L->in_norm))) return st;
        snprintf(m, sizeof m, "%s.post_attention_layernorm.weight", p);
        if ((st = bind_vector(b, m, H, &L->post_attn_norm))) return st;
        if (c->sandwich_norms) {
            snprintf(m, sizeof m, "%s.pre_feedforward_layernorm.weight", p);
            if ((st = bind_vector(b, m, H, &L->pre_ff_norm))) return st;
            snprintf(m, sizeof m, "%s.post_feedforward_layernorm.weight", p);
            if ((st = bind_vector(b, m, H, &L->post_ff_norm))) return st;
        }
        if (c->attn_sinks) {
            snprintf(m, sizeof m, "%s.self_attn.sinks", p);
            if ((st = bind_vector_part(b, m, c->n_heads, sh->head0, sh->n_heads, &L->sinks))) return st;
        }
        if (c->qk_norm) {
            snprintf(m, sizeof m, "%s.self_attn.q_norm.weight", p);
            if ((st = bind_vector(b, m, D, &L->q_norm))) return st;
            snprintf(m, sizeof m, "%s.self_attn.k_norm.weight", p);
            if ((st = bind_vector(b, m, D, &L->k_norm))) return st;
        }
    }
    /* rope tables */
    const lmx_rope_config *r = &c->rope;
    if ((st = upload_rope(lm, r, r->type == LMX_ROPE_LONGROPE ? r->short_factor : NULL, "rope", &lm->rope_full)))
        return st;
    if (r->type == LMX_ROPE_LONGROPE && (st = upload_rope(lm, r, r->long_factor, "rope long", &lm->rope_full_long)))
        return st;
    lm->mscale_full = (float)r->attention_factor;
    if (c->has_rope_sliding) {
        const lmx_rope_config *rs = &c->rope_sliding;
        if (rs->type == LMX_ROPE_LONGROPE)
            return lmx_error(LMX_ERR_UNSUPPORTED, "longrope on sliding layers is not supported");
        if ((st = upload_rope(lm, rs, NULL, "rope sliding", &lm->rope_sliding))) return st;
        lm->mscale_sliding = (float)rs->attention_factor;
    } else {
        lm->rope_sliding = lm->rope_full;
        lm->mscale_sliding = lm->mscale_full;
    }
    if (sh->rank == 0) warn_unused(b); /* every rank binds every tensor (a part of it) */
    return LMX_OK;
}

lmx_status lmx_lm_bind(lmx_lm *lm) {
    binder b = {.lm = lm, .c = lm->cfg};
    lmx_status st = bind_all(&b);
    free(b.used);
    /* the weights are on the device (or the failed copy is reported); staging released */
    lmx_status se = lm->be->ops->upload_end ? lm->be->ops->upload_end(lm->be) : LMX_OK;
    return st != LMX_OK ? st : se;
}

lmx_status lmx_lm_open_config(const char *dir, lmx_model_config **cfg, const lmx_lm_options *opt, lmx_lm **out) {
    *out = NULL;
    lmx_lm_options defaults = {0};
    if (!opt) opt = &defaults;
    if (!dir || !cfg || !*cfg) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "model directory or config is NULL");
    if (opt->device == LMX_DEVICE_GPU && !opt->backend)
        return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "no GPU backend in this build (use --device cpu)");
    lmx_lm *lm = calloc(1, sizeof *lm);
    if (!lm) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "model");
    lm->cfg = *cfg; /* borrowed until the open succeeds */
    lm->shard = lm_shard_whole(lm->cfg);
    lmx_status st = lmx_weights_open(dir, !opt->no_mmap, &lm->weights);
    if (st == LMX_OK && opt->group) {
        st = lm_tp_open(lm, opt->group); /* the ranks' models, each bound on its thread */
    } else if (st == LMX_OK) {
        if (opt->backend) {
            lm->be = opt->backend;
        } else {
            st = lmx_backend_cpu_create(opt->n_threads, &lm->be);
            lm->own_be = st == LMX_OK;
        }
        if (st == LMX_OK) st = lmx_lm_bind(lm);
    }
    if (st != LMX_OK) {
        lmx_lm_close(lm); /* leaves the borrowed config to the caller */
        return st;
    }
    lm->own_cfg = true;
    *cfg = NULL;
    *out = lm;
    return LMX_OK;
}

lmx_status lmx_lm_open(const char *dir, const lmx_lm_options *opt, lmx_lm **out) {
    *out = NULL;
    if (!dir) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "model directory is NULL");
    if (opt && opt->device == LMX_DEVICE_GPU && !opt->backend)
        return lmx_error(LMX_ERR_GPU_NOT_AVAILABLE, "no GPU backend in this build (use --device cpu)");
    lmx_model_config *cfg = NULL;
    lmx_status st = lmx_model_config_load(dir, &cfg);
    if (st == LMX_OK) st = lmx_lm_open_config(dir, &cfg, opt, out);
    lmx_model_config_free(cfg); /* NULL once the model took it */
    return st;
}

void lmx_lm_close(lmx_lm *lm) {
    if (!lm) return;
    if (lm->tp) lm_tp_close(lm);
    if (lm->be) {
        void (*wf)(lmx_backend *, lmx_bweight *) = lm->be->ops->weight_free;
        if (lm->layers) {
            for (int l = 0; l < lm->cfg->n_layers; l++) {
                lm_layer *L = &lm->layers[l];
                /* views (q, k, v, gate, up) before their fused owners (qkv, gate_up) */
                lmx_bweight *all[] = {L->q, L->k, L->v, L->o, L->gate, L->up, L->down, L->in_norm,
                                      L->post_attn_norm, L->pre_ff_norm, L->post_ff_norm, L->q_norm, L->k_norm,
                                      L->sinks, L->qkv, L->gate_up};
                for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) wf(lm->be, all[i]);
                lmx_moe_layer_free(lm, L->moe);
            }
        }
        if (lm->head != lm->embed) wf(lm->be, lm->head);
        wf(lm->be, lm->embed);
        wf(lm->be, lm->final_norm);
        if (lm->rope_sliding != lm->rope_full) wf(lm->be, lm->rope_sliding);
        wf(lm->be, lm->rope_full);
        wf(lm->be, lm->rope_full_long);
        if (lm->own_be) lmx_backend_destroy(lm->be);
    }
    free(lm->layers);
    for (int i = 0; i < lm->n_host; i++) free(lm->host[i]); /* after the weights that read them */
    free(lm->host);
    lmx_weights_close(lm->weights);
    if (lm->own_cfg) lmx_model_config_free(lm->cfg);
    free(lm);
}

const lmx_model_config *lmx_lm_config(const lmx_lm *lm) { return lm->cfg; }
int lmx_lm_vocab_size(const lmx_lm *lm) { return lm->cfg->vocab_size; }

uint64_t lmx_lm_weight_bytes(const lmx_lm *lm) { return lm->weights ? lmx_weights_total_bytes(lm->weights) : 0; }

/* K and V of every layer for one position of shard sh's kv heads, `elem` bytes per element */
static uint64_t kv_position_bytes(const lmx_model_config *c, const lm_shard *sh, uint64_t elem) {
    return 2ull * (uint64_t)c->n_layers * (uint64_t)sh->n_kv_heads * (uint64_t)c->head_dim * elem;
}

uint64_t lmx_lm_kv_bytes_per_position(const lmx_lm *lm) {
    if (lm->tp) lm = lm_tp_rank(lm, 0); /* one device's: every rank holds as many kv heads */
    /* the backend's cache element type (the CUDA backend stores fp16) */
    const uint64_t elem = lm->be->ops->kv_elem_bytes ? lm->be->ops->kv_elem_bytes(lm->be) : sizeof(float);
    return kv_position_bytes(lm->cfg, &lm->shard, elem);
}

/* logical parameter count of the stored tensors: packed U32 weights with P.scales count as
 * rows * (packed_cols * 32 / bits); scales/biases are not parameters. The parameters and bytes one
 * token uses into *active / *active_bytes: each expert tensor (lmx_moe_expert_tensor) at top-k / E;
 * active_bytes starts from the total weight bytes. The packed weights' formats into *mix (a
 * quantized model's). */
static int64_t count_params(const lmx_model_config *c, const lmx_weights *w, int64_t *active, int64_t *active_bytes,
                            lmx_quant_mix *mix) {
    int64_t n = 0;
    double idle = 0, idle_bytes = 0; /* the unchosen experts' share */
    const double unused = c->n_experts > 0 ? 1.0 - (double)c->n_experts_per_tok / c->n_experts : 0.0;
    size_t cnt = lmx_weights_count(w);
    for (size_t i = 0; i < cnt; i++) {
        const lmx_tensor_view *t = lmx_weights_get(w, i);
        size_t len = strlen(t->name);
        if (dropped_name(t->name)) continue;
        const bool expert = lmx_moe_expert_tensor(c, t->name);
        if (expert) idle_bytes += unused * (double)t->nbytes;
        if ((len > 7 && !strcmp(t->name + len - 7, ".scales")) || (len > 7 && !strcmp(t->name + len - 7, ".biases")))
            continue;
        int64_t p = t->numel;
        if (t->dtype == LMX_DTYPE_U32 && t->ndim >= 2 && len > 7 && !strcmp(t->name + len - 7, ".weight")) {
            char module[512];
            snprintf(module, sizeof module, "%.*s", (int)(len - 7), t->name);
            lmx_quant_params qp = {4, 64, LMX_QUANT_AFFINE};
            if (lmx_model_config_quant_for(c, module, &qp) != 1 && c->quantized) qp = c->quant;
            const int64_t packed = t->shape[t->ndim - 1]; /* [.., rows, packed]: stacked experts too */
            p = t->numel / packed * (packed * 32 / qp.bits);
            if (c->quantized) lmx_quant_mix_add(mix, qp, p);
        }
        n += p;
        if (expert) idle += unused * (double)p;
    }
    *active = n - (int64_t)(idle + 0.5);
    *active_bytes = (int64_t)lmx_weights_total_bytes(w) - (int64_t)(idle_bytes + 0.5);
    return n;
}

static void config_free(void *c) { lmx_model_config_free(c); }

/* shard 0 of the plan for n_ranks ranks of the model (c, w) into *s (the whole model for n_ranks <= 1) */
static lmx_status probe_shard(lmx_model_config *c, lmx_weights *w, int n_ranks, lm_shard *s) {
    *s = lm_shard_whole(c);
    if (n_ranks <= 1) return LMX_OK;
    lm_shard *plan = calloc((size_t)n_ranks, sizeof *plan);
    if (!plan) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tensor parallel plan");
    lmx_lm tmp = {.cfg = c, .weights = w};
    binder b = {.lm = &tmp, .c = c};
    lmx_status st = lmx_bind_prefix(&b);
    if (st == LMX_OK) st = lm_shard_plan(&b, n_ranks, plan);
    if (st == LMX_OK) *s = plan[0]; /* rank 0 holds the most: the row-parallel biases */
    free(b.used);
    free(plan);
    return st;
}

lmx_status lmx_lm_probe(const char *dir, lmx_model_facts *out) { return lmx_lm_probe_ranks(dir, 0, out); }

lmx_status lmx_lm_probe_ranks(const char *dir, int n_ranks, lmx_model_facts *out) {
    memset(out, 0, sizeof *out);
    lm_shard sh;
    lmx_model_config *c = NULL;
    lmx_weights *w = NULL;
    lmx_status st = lmx_model_config_load(dir, &c);
    if (st == LMX_OK) st = lmx_weights_open(dir, true, &w);
    if (st == LMX_OK) st = probe_shard(c, w, n_ranks, &sh);
    if (st == LMX_OK) {
        lmx_model_info *i = &out->info;
        snprintf(i->model_type, sizeof i->model_type, "%s", c->model_type);
        i->n_layers = c->n_layers;
        i->hidden_size = c->hidden_size;
        i->vocab_size = c->vocab_size;
        if (c->quantized) {
            i->quant_bits = c->quant.bits;
            i->group_size = c->quant.group_size;
        }
        lmx_quant_mix mix = {0};
        i->n_params = count_params(c, w, &i->n_active_params, &i->active_weight_bytes, &mix);
        lmx_quant_mix_label(&mix, i->quantization, sizeof i->quantization);
        i->weight_bytes = (int64_t)lmx_weights_total_bytes(w);
        out->max_position = c->max_position_embeddings > INT32_MAX ? INT32_MAX : (int)c->max_position_embeddings;
        /* one device's share (tensor parallel: rank 0's shard); no backend yet: an fp32 cache, an
         * upper bound */
        out->n_devices = n_ranks > 1 ? n_ranks : 1;
        out->device_weight_bytes = (int64_t)lm_shard_weight_bytes(c, w, &sh);
        out->kv_bytes_per_token = (int64_t)kv_position_bytes(c, &sh, sizeof(float));
        out->scratch_bytes = (int64_t)lmx_kv_scratch_bound(c, &sh, 512); /* 512: the largest prefill_chunk (CUDA) */
        for (int k = 0; k < c->n_eos && k < LMX_MAX_EOS; k++) out->eos_ids[out->n_eos++] = c->eos_ids[k];
        out->eos_named = c->eos_named;
        out->state = c;
        out->state_free = config_free;
        c = NULL;
    }
    lmx_weights_close(w);
    lmx_model_config_free(c);
    return st;
}
