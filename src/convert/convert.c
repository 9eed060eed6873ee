/* convert.c — lmx_convert_model: the orchestration (see convert.h). Each output tensor is a fill
 * callback of the safetensors writer that reads its rows from the mapped source: a quantized
 * module's weight packs its rows, its scales and biases recompute only the group parameters
 * (lmx_mlx_quantize_params_row gives the same values), a cast tensor converts element by element. */
#include "convert/convert.h"
#include "formats/mlx_mx.h"
#include "formats/mlx_quant.h"
#include "formats/safetensors.h"
#include "formats/st_writer.h"
#include "util/error.h"
#include "util/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void lmx_convert_options_default(lmx_convert_options *o) {
    memset(o, 0, sizeof *o);
    o->quantize = true; /* bits and group size 0: the mode's defaults */
    o->dtype = LMX_DTYPE_BF16;
}

typedef enum { PART_CAST, PART_WEIGHT, PART_SCALES, PART_BIASES } part_kind;

typedef struct part {
    const lmx_tensor_view *src;   /* the source (stacked experts: expert 0's, for shape and dtype) */
    const lmx_tensor_view **srcs; /* stacked experts: [n_src] sources of equal shape, else NULL */
    int n_src;
    part_kind kind;
    char *name;
    lmx_quant_params q; /* quantized parts: the module's mode, bits and group size */
} part;

typedef struct job {
    part *parts;
    size_t n;
    lmx_dtype dtype;
    lmx_quant_params g;          /* the global parameters (the quantization block's) */
    lmx_convert_layer_q *layers; /* [n_layers] per-module entries (a recipe, MoE routers), names owned */
    size_t n_layers;
    lmx_moe_stack *stacks; /* owned: the experts' sources of each stacked tensor */
    int n_stacks;
} job;

static uint16_t to_half(lmx_dtype t, float v) { return t == LMX_DTYPE_BF16 ? lmx_f32_to_bf16(v) : lmx_f32_to_f16(v); }
static float from_half(lmx_dtype t, uint16_t h) { return t == LMX_DTYPE_BF16 ? lmx_bf16_to_f32(h) : lmx_f16_to_f32(h); }

/* Source elements [first, first+n) → fp32 after rounding to the target dtype (mlx-lm casts first). */
static lmx_status read_rounded(const lmx_tensor_view *t, lmx_dtype dt, int64_t first, int64_t n, float *dst) {
    lmx_status st = lmx_tensor_to_f32(t, first, n, dst);
    if (st != LMX_OK || dt == LMX_DTYPE_F32) return st;
    for (int64_t i = 0; i < n; i++) dst[i] = from_half(dt, to_half(dt, dst[i]));
    return LMX_OK;
}

/* Elements [first, first+n) of a part's logical source: a stacked part reads across its experts'
 * tensors (expert e holds elements [e*numel, (e+1)*numel)). */
static lmx_status part_read(const part *p, lmx_dtype dt, int64_t first, int64_t n, float *dst) {
    if (!p->srcs) return read_rounded(p->src, dt, first, n, dst);
    const int64_t per = p->src->numel;
    while (n > 0) {
        int64_t e = first / per, in = first % per, m = per - in < n ? per - in : n;
        if (e >= p->n_src) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: %s: element past the experts", p->name);
        lmx_status st = read_rounded(p->srcs[e], dt, in, m, dst);
        if (st != LMX_OK) return st;
        first += m, n -= m, dst += m;
    }
    return LMX_OK;
}

static int cmp_part(const void *a, const void *b) {
    return strcmp(((const part *)a)->name, ((const part *)b)->name);
}

/* An fp-mode module's rows: codes (PART_WEIGHT) or uint8 scale codes (PART_SCALES); each row is
 * quantized whole and the part it asks for is kept. */
static lmx_status fill_mx(const job *j, const part *p, uint64_t offset, uint8_t *out, size_t len) {
    const lmx_tensor_view *t = p->src;
    const int64_t cols = t->shape[1]; /* stacked experts: the rows of every expert in turn */
    const size_t cb = (size_t)cols * (size_t)p->q.bits / 8, sb = (size_t)(cols / p->q.group_size);
    const size_t row_bytes = p->kind == PART_WEIGHT ? cb : sb;
    int64_t r0 = (int64_t)(offset / row_bytes), nr = (int64_t)(len / row_bytes);
    float *w = malloc((size_t)cols * sizeof *w);
    uint8_t *codes = malloc(cb), *sc = malloc(sb);
    lmx_status st = w && codes && sc ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    for (int64_t r = 0; r < nr && st == LMX_OK; r++) {
        st = part_read(p, j->dtype, (r0 + r) * cols, cols, w);
        if (st == LMX_OK) st = lmx_mx_quantize_row(w, cols, p->q.mode, codes, sc);
        if (st != LMX_OK) {
            st = lmx_error_prefix(st, "%s row %lld", t->name, (long long)(r0 + r));
            break;
        }
        memcpy(out + (size_t)r * row_bytes, p->kind == PART_WEIGHT ? codes : sc, row_bytes);
    }
    free(w), free(codes), free(sc);
    return st;
}

static lmx_status fill(void *ctx, const char *name, uint64_t offset, void *dst, size_t len) {
    job *j = ctx;
    part key = {.name = (char *)name};
    part *p = bsearch(&key, j->parts, j->n, sizeof *p, cmp_part);
    if (!p) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: unknown tensor %s", name);
    const lmx_tensor_view *t = p->src;
    uint8_t *out = dst;
    if (p->kind == PART_CAST) {
        size_t es = lmx_dtype_size(j->dtype);
        if (!p->srcs && (t->dtype == j->dtype || !(t->dtype == LMX_DTYPE_F32 || t->dtype == LMX_DTYPE_F16 ||
                                                   t->dtype == LMX_DTYPE_BF16))) {
            memcpy(out, t->data + offset, len); /* same dtype, or not a float tensor: as it is */
            return LMX_OK;
        }
        int64_t first = (int64_t)(offset / es), n = (int64_t)(len / es);
        float buf[4096];
        for (int64_t k = 0; k < n;) {
            int64_t m = n - k < 4096 ? n - k : 4096;
            lmx_status st = part_read(p, LMX_DTYPE_F32, first + k, m, buf);
            if (st != LMX_OK) return st;
            for (int64_t i = 0; i < m; i++) {
                uint8_t *o = out + (size_t)(k + i) * es;
                if (es == 4) memcpy(o, &buf[i], 4);
                else {
                    uint16_t h = to_half(j->dtype, buf[i]);
                    o[0] = (uint8_t)h, o[1] = (uint8_t)(h >> 8);
                }
            }
            k += m;
        }
        return LMX_OK;
    }
    if (lmx_quant_mode_is_fp(p->q.mode)) return fill_mx(j, p, offset, out, len);
    const int64_t cols = t->shape[1];
    const int bits = p->q.bits, gs = p->q.group_size;
    size_t es = lmx_dtype_size(j->dtype);
    size_t row_bytes = p->kind == PART_WEIGHT ? lmx_mlx_quant_row_bytes(cols, bits) : (size_t)(cols / gs) * es;
    int64_t r0 = (int64_t)(offset / row_bytes), nr = (int64_t)(len / row_bytes);
    float *w = malloc((size_t)cols * sizeof *w);
    uint8_t *scratch = malloc((size_t)(cols / gs) * es * 2);
    if (!w || !scratch) {
        free(w), free(scratch);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    }
    lmx_status st = LMX_OK;
    size_t sb = (size_t)(cols / gs) * es;
    for (int64_t r = 0; r < nr && st == LMX_OK; r++) {
        st = part_read(p, j->dtype, (r0 + r) * cols, cols, w);
        if (st != LMX_OK) break;
        uint8_t *o = out + (size_t)r * row_bytes;
        if (p->kind == PART_WEIGHT)
            st = lmx_mlx_quantize_row(w, cols, bits, gs, j->dtype, o, scratch, scratch + sb, LMX_MLX_CPU);
        else
            st = lmx_mlx_quantize_params_row(w, cols, bits, gs, j->dtype, p->kind == PART_SCALES ? o : scratch,
                                             p->kind == PART_BIASES ? o : scratch + sb, LMX_MLX_CPU);
        if (st != LMX_OK) st = lmx_error_prefix(st, "%s row %lld", t->name, (long long)(r0 + r));
    }
    free(w);
    free(scratch);
    return st;
}

static char *suffixed(const char *base, const char *from, const char *to) {
    size_t n = strlen(base), m = strlen(from);
    char *s = malloc(n - m + strlen(to) + 1);
    if (s) {
        memcpy(s, base, n - m);
        strcpy(s + n - m, to);
    }
    return s;
}

/* The global parameters from the options: the mode's fixed bits and group size for an fp mode
 * (0 = the mode's), a recipe only with affine. */
static lmx_status check_options(const lmx_convert_options *o, lmx_quant_params *g) {
    g->mode = LMX_QUANT_AFFINE;
    if (o->mode && !lmx_quant_mode_parse(o->mode, &g->mode))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: unknown mode '%s' (affine, mxfp4, mxfp8, nvfp4)", o->mode);
    g->bits = o->bits ? o->bits : lmx_quant_mode_default_bits(g->mode);
    g->group_size = o->group_size ? o->group_size : lmx_quant_mode_default_group(g->mode);
    if (lmx_quant_mode_is_fp(g->mode)) {
        if (g->bits != lmx_quant_mode_bits(g->mode) || g->group_size != lmx_quant_mode_group(g->mode))
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: mode %s has %d bits and group size %d (got %d / %d)",
                             o->mode, lmx_quant_mode_bits(g->mode), lmx_quant_mode_group(g->mode), g->bits,
                             g->group_size);
        if (o->recipe)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: recipe %s is affine only (as mlx-lm), not --mode %s",
                             o->recipe, o->mode);
    } else if (o->quantize && !lmx_mlx_quant_supported(g->bits, g->group_size)) {
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "convert: unsupported bits %d / group size %d (bits 2|3|4|5|6|8, group size 32|64|128)",
                         g->bits, g->group_size);
    }
    if (o->recipe && !o->quantize) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: a recipe needs quantization");
    if (o->dtype_set && o->dtype != LMX_DTYPE_BF16 && o->dtype != LMX_DTYPE_F16 && o->dtype != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: the output dtype must be bf16, f16 or f32");
    return LMX_OK;
}

/* A module path: a part's name without its ".weight" / ".scales" / ".biases" (caller frees). */
static char *module_of(const char *name) {
    const char *dot = strrchr(name, '.');
    size_t n = dot ? (size_t)(dot - name) : strlen(name);
    char *m = malloc(n + 1);
    if (m) memcpy(m, name, n), m[n] = '\0';
    return m;
}

/* Each quantized module's parameters: the global ones, a mixed recipe's (by module path), or
 * mlx-lm's MoE router predicate (qwen3_moe: affine 8-bit g64, over the recipe too); the modules a
 * recipe or the predicate sets get an entry in the quantization block. The parts are sorted. */
static lmx_status assign_params(job *j, const char *recipe, const lmx_convert_model_info *mi) {
    size_t nq = 0;
    for (size_t k = 0; k < j->n; k++) nq += j->parts[k].kind == PART_WEIGHT;
    j->layers = calloc(nq + 1, sizeof *j->layers);
    if (!j->layers) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    lmx_convert_recipe r = {0};
    if (recipe) {
        const char **names = calloc(nq + 1, sizeof *names);
        size_t m = 0;
        lmx_status st = names ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        for (size_t k = 0; k < j->n && st == LMX_OK; k++) {
            if (j->parts[k].kind != PART_WEIGHT) continue;
            if (!(names[m++] = module_of(j->parts[k].name)))
                st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        }
        if (st == LMX_OK) st = lmx_convert_recipe_init(recipe, j->g.group_size, names, m, &r);
        for (size_t i = 0; names && i < m; i++) free((char *)names[i]);
        free(names);
        if (st != LMX_OK) return st;
    }
    for (size_t k = 0; k < j->n; k++) {
        part *p = &j->parts[k];
        if (p->kind == PART_CAST) continue;
        char *m = module_of(p->name);
        if (!m) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        p->q = r.active ? lmx_convert_recipe_params(&r, m) : j->g;
        bool entry = lmx_convert_moe_router_quant(mi, m, p->src->shape[1], &p->q) || r.active;
        if (p->kind == PART_WEIGHT && entry) j->layers[j->n_layers++] = (lmx_convert_layer_q){m, p->q};
        else free(m);
    }
    /* fp modes have no biases: drop those parts (the order stays sorted) */
    size_t n = 0;
    for (size_t k = 0; k < j->n; k++) {
        if (j->parts[k].kind == PART_BIASES && lmx_quant_mode_is_fp(j->parts[k].q.mode)) free(j->parts[k].name);
        else j->parts[n++] = j->parts[k];
    }
    j->n = n;
    return LMX_OK;
}

/* Appends the parts of one output tensor `name` (a source tensor, or stacked experts); the
 * parameters of quantized parts are set by assign_params. */
static lmx_status add_tensor_parts(job *j, const char *name, const lmx_tensor_view *t, const lmx_tensor_view **srcs,
                                   int n_src, lmx_conv_action a) {
    if (a == LMX_CONV_CAST) {
        j->parts[j->n++] = (part){t, srcs, n_src, PART_CAST, strdup(name), j->g};
    } else {
        j->parts[j->n++] = (part){t, srcs, n_src, PART_WEIGHT, strdup(name), j->g};
        j->parts[j->n++] = (part){t, srcs, n_src, PART_SCALES, suffixed(name, ".weight", ".scales"), j->g};
        j->parts[j->n++] = (part){t, srcs, n_src, PART_BIASES, suffixed(name, ".weight", ".biases"), j->g};
    }
    for (size_t k = j->n - (a == LMX_CONV_CAST ? 1 : 3); k < j->n; k++)
        if (!j->parts[k].name) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    return LMX_OK;
}

/* The weights: refuse quantized inputs, pick the output dtype, stack MoE experts, build the parts. */
static lmx_status plan(lmx_weights *wt, const lmx_convert_options *o, const lmx_convert_model_info *mi,
                       lmx_dtype dtype, job *j, uint64_t *n_params) {
    size_t n = lmx_weights_count(wt);
    j->parts = calloc(n * 3 + 1, sizeof *j->parts);
    if (!j->parts) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    j->dtype = dtype;
    lmx_status st = lmx_convert_moe_stacks(wt, &j->stacks, &j->n_stacks);
    if (st != LMX_OK) return st;
    const int gs = j->g.group_size;
    for (size_t i = 0; i < n; i++) {
        const lmx_tensor_view *t = lmx_weights_get(wt, i);
        size_t len = strlen(t->name);
        if (t->dtype == LMX_DTYPE_U32 || (len > 7 && !strcmp(t->name + len - 7, ".scales")))
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "%s: tensor %s (%s) looks quantized; convert needs a bf16/f16/f32 model", t->file,
                             t->name, lmx_dtype_name(t->dtype));
        if (lmx_convert_moe_fused_gate_up(t->name))
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "%s: tensor %s is transformers' fused gpt_oss experts (gate and up interleaved in one "
                             "[E, hidden, 2*intermediate] tensor): lmx convert does not split it; mlx_lm.convert "
                             "writes the MLX layout (mlp.experts.{gate,up,down}_proj)",
                             t->file, t->name);
        if (lmx_convert_moe_is_expert(t->name)) continue; /* written as part of its stack, below */
        lmx_conv_action a = lmx_convert_plan(t->name, t->dtype, t->ndim, t->shape, gs, o->quantize, mi->tied);
        if (a == LMX_CONV_DROP) continue;
        *n_params += (uint64_t)t->numel;
        if ((st = add_tensor_parts(j, t->name, t, NULL, 0, a))) return st;
    }
    for (int s = 0; s < j->n_stacks; s++) {
        const lmx_moe_stack *k = &j->stacks[s];
        const lmx_tensor_view *t = k->srcs[0];
        *n_params += (uint64_t)t->numel * (uint64_t)k->n;
        lmx_conv_action a = o->quantize && t->shape[1] % gs == 0 ? LMX_CONV_QUANTIZE : LMX_CONV_CAST;
        if ((st = add_tensor_parts(j, k->name, t, k->srcs, k->n, a))) return st;
    }
    qsort(j->parts, j->n, sizeof *j->parts, cmp_part);
    for (size_t k = 1; k < j->n; k++)
        if (!strcmp(j->parts[k - 1].name, j->parts[k].name))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "convert: two output tensors named %s", j->parts[k].name);
    return assign_params(j, o->recipe, mi);
}

static lmx_status add_parts(lmx_st_writer *w, job *j) {
    for (size_t k = 0; k < j->n; k++) {
        const part *p = &j->parts[k];
        const lmx_tensor_view *t = p->src;
        int64_t shape[LMX_MAX_DIMS];
        int ndim = t->ndim, last = t->ndim - 1;
        if (p->srcs) { /* stacked experts [E, out, in] */
            shape[0] = p->n_src;
            shape[1] = t->shape[0];
            shape[2] = t->shape[1];
            ndim = 3;
            last = 2;
        } else {
            memcpy(shape, t->shape, sizeof shape);
        }
        lmx_dtype dt = j->dtype;
        bool is_float = t->dtype == LMX_DTYPE_F32 || t->dtype == LMX_DTYPE_F16 || t->dtype == LMX_DTYPE_BF16;
        if (p->kind == PART_CAST && !is_float) dt = t->dtype;
        if (p->kind == PART_WEIGHT) {
            dt = LMX_DTYPE_U32;
            shape[last] = t->shape[1] * p->q.bits / 32;
        } else if (p->kind != PART_CAST) {
            shape[last] = t->shape[1] / p->q.group_size;
            if (lmx_quant_mode_is_fp(p->q.mode)) dt = LMX_DTYPE_U8; /* E8M0 / E4M3 scale codes */
        }
        lmx_status st = lmx_st_writer_add_fill(w, p->name, dt, ndim, shape, fill, j);
        if (st != LMX_OK) return st;
    }
    return LMX_OK;
}

lmx_status lmx_convert_model(const char *src, const char *dst, const lmx_convert_options *opt) {
    lmx_convert_options o;
    if (opt) o = *opt;
    else lmx_convert_options_default(&o);
    if (!src || !dst || !*src || !*dst) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: SRC and DST are required");
    job j = {0};
    lmx_status st = check_options(&o, &j.g);
    if (st != LMX_OK) return st;
    if (!lmx_fs_is_dir(src)) return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "convert: %s is not a model directory (%s)", src, lmx_fs_describe(src));
    if (lmx_fs_exists(dst) && !o.force)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: %s already exists (use --force to replace it)", dst);
    bool has_dtype = false;
    lmx_dtype cfg_dtype = LMX_DTYPE_BF16;
    lmx_convert_model_info mi = {0};
    st = lmx_convert_read_config(src, &mi, &cfg_dtype, &has_dtype);
    if (st != LMX_OK) return st;
    lmx_weights *wt = NULL;
    st = lmx_weights_open(src, true, &wt);
    if (st != LMX_OK) return st;
    lmx_dtype dtype = o.dtype_set ? o.dtype : has_dtype ? cfg_dtype : LMX_DTYPE_BF16;
    if (!o.dtype_set && !has_dtype) /* no dtype in the config: the first float weight's */
        for (size_t i = 0; i < lmx_weights_count(wt); i++) {
            lmx_dtype t = lmx_weights_get(wt, i)->dtype;
            if (t == LMX_DTYPE_F32 || t == LMX_DTYPE_F16 || t == LMX_DTYPE_BF16) {
                dtype = t;
                break;
            }
        }
    uint64_t n_params = 0;
    char *partial = malloc(strlen(dst) + 9);
    lmx_st_writer *w = NULL;
    if (!partial) {
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        goto done;
    }
    sprintf(partial, "%s.partial", dst);
    st = plan(wt, &o, &mi, dtype, &j, &n_params);
    if (st == LMX_OK) st = lmx_st_writer_create(&w);
    if (st == LMX_OK) st = add_parts(w, &j);
    if (st == LMX_OK) st = lmx_st_writer_set_metadata(w, "format", "mlx");
    if (st != LMX_OK) goto done;
    lmx_st_writer_set_total_parameters(w, n_params);
    lmx_convert_rmtree(partial); /* a leftover of an interrupted run */
    if (mkdir(partial, 0755) != 0) {
        st = lmx_error(LMX_ERR_IO, "%s: %s", partial, lmx_errno_str(errno));
        goto done;
    }
    lmx_st_write_options wo = {.threads = o.threads, .progress = o.progress, .progress_ctx = o.progress_ctx,
                               .sync = true};
    st = lmx_st_writer_write_model(w, partial, o.max_shard_bytes ? o.max_shard_bytes : LMX_ST_MLX_SHARD_BYTES, &wo,
                                   NULL);
    if (st == LMX_OK) st = lmx_convert_write_config(src, partial, &o, dtype, &j.g, j.layers, j.n_layers);
    if (st == LMX_OK) st = lmx_convert_copy_files(src, partial);
    if (st == LMX_OK && lmx_fs_exists(dst)) lmx_convert_rmtree(dst); /* --force */
    if (st == LMX_OK && rename(partial, dst) != 0)
        st = lmx_error(LMX_ERR_IO, "rename %s -> %s: %s", partial, dst, lmx_errno_str(errno));
    if (st != LMX_OK) lmx_convert_rmtree(partial);
done:
    lmx_st_writer_destroy(w);
    for (size_t k = 0; k < j.n; k++) free(j.parts[k].name);
    free(j.parts);
    lmx_convert_moe_stacks_free(j.stacks, j.n_stacks);
    for (size_t i = 0; i < j.n_layers; i++) free((char *)j.layers[i].module);
    free(j.layers);
    free(partial);
    lmx_weights_close(wt);
    return st;
}
