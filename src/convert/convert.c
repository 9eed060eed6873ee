/* convert.c — lmx_convert_model: the orchestration (see convert.h). Each output tensor is a fill
 * callback of the safetensors writer that reads its rows from the mapped source: a quantized
 * module's weight packs its rows, its scales and biases recompute only the group parameters
 * (lmx_mlx_quantize_params_row gives the same values), a cast tensor converts element by element. */
#include "convert/convert.h"
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
    o->bits = 4;
    o->group_size = 64;
    o->quantize = true;
    o->dtype = LMX_DTYPE_BF16;
}

typedef enum { PART_CAST, PART_WEIGHT, PART_SCALES, PART_BIASES } part_kind;

typedef struct part {
    const lmx_tensor_view *src;   /* the source (stacked experts: expert 0's, for shape and dtype) */
    const lmx_tensor_view **srcs; /* stacked experts: [n_src] sources of equal shape, else NULL */
    int n_src;
    part_kind kind;
    char *name;
    int bits, gs;                 /* quantized parts: the module's (routers may differ from the default) */
} part;

typedef struct job {
    part *parts;
    size_t n;
    lmx_dtype dtype;
    lmx_moe_stack *stacks; /* owned: the experts' sources of each stacked tensor */
    int n_stacks;
    lmx_convert_override *over; /* owned: per-module quantization entries (qwen3_moe routers) */
    int n_over;
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
    const int64_t cols = t->shape[1];
    const int bits = p->bits, gs = p->gs;
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

static lmx_status check_options(const lmx_convert_options *o) {
    if (o->mode && strcmp(o->mode, "affine")) {
        if (!strcmp(o->mode, "mxfp4") || !strcmp(o->mode, "mxfp8") || !strcmp(o->mode, "nvfp4"))
            return lmx_error(LMX_ERR_UNSUPPORTED, "convert: --mode %s is not supported yet (affine only; see issue 16)",
                             o->mode);
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: unknown mode '%s' (affine)", o->mode);
    }
    if (o->quantize && !lmx_mlx_quant_supported(o->bits, o->group_size))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "convert: unsupported bits %d / group size %d (bits 2|3|4|5|6|8, group size 32|64|128)",
                         o->bits, o->group_size);
    if (o->dtype_set && o->dtype != LMX_DTYPE_BF16 && o->dtype != LMX_DTYPE_F16 && o->dtype != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "convert: the output dtype must be bf16, f16 or f32");
    return LMX_OK;
}

/* Appends the parts of one output tensor `name` (a source tensor, or stacked experts). */
static lmx_status add_tensor_parts(job *j, const char *name, const lmx_tensor_view *t, const lmx_tensor_view **srcs,
                                   int n_src, lmx_conv_action a, int bits, int gs) {
    if (a == LMX_CONV_CAST) {
        j->parts[j->n++] = (part){t, srcs, n_src, PART_CAST, strdup(name), 0, 0};
    } else {
        j->parts[j->n++] = (part){t, srcs, n_src, PART_WEIGHT, strdup(name), bits, gs};
        j->parts[j->n++] = (part){t, srcs, n_src, PART_SCALES, suffixed(name, ".weight", ".scales"), bits, gs};
        j->parts[j->n++] = (part){t, srcs, n_src, PART_BIASES, suffixed(name, ".weight", ".biases"), bits, gs};
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
    j->over = calloc(n + 1, sizeof *j->over);
    if (!j->parts || !j->over) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    j->dtype = dtype;
    lmx_status st = lmx_convert_moe_stacks(wt, &j->stacks, &j->n_stacks);
    if (st != LMX_OK) return st;
    for (size_t i = 0; i < n; i++) {
        const lmx_tensor_view *t = lmx_weights_get(wt, i);
        size_t len = strlen(t->name);
        if (t->dtype == LMX_DTYPE_U32 || (len > 7 && !strcmp(t->name + len - 7, ".scales")))
            return lmx_error(LMX_ERR_UNSUPPORTED,
                             "%s: tensor %s (%s) looks quantized; convert needs a bf16/f16/f32 model", t->file,
                             t->name, lmx_dtype_name(t->dtype));
        if (lmx_convert_moe_is_expert(t->name)) continue; /* written as part of its stack, below */
        lmx_conv_action a =
            lmx_convert_plan(t->name, t->dtype, t->ndim, t->shape, o->group_size, o->quantize, mi->tied);
        if (a == LMX_CONV_DROP) continue;
        *n_params += (uint64_t)t->numel;
        int bits = o->bits, gs = o->group_size;
        if (a == LMX_CONV_QUANTIZE && lmx_convert_moe_router_quant(mi, t->name, t->shape[1], &bits, &gs)) {
            lmx_convert_override *ov = &j->over[j->n_over++];
            ov->module = suffixed(t->name, ".weight", "");
            ov->bits = bits;
            ov->group_size = gs;
            if (!ov->module) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        }
        if ((st = add_tensor_parts(j, t->name, t, NULL, 0, a, bits, gs))) return st;
    }
    for (int s = 0; s < j->n_stacks; s++) {
        const lmx_moe_stack *k = &j->stacks[s];
        const lmx_tensor_view *t = k->srcs[0];
        *n_params += (uint64_t)t->numel * (uint64_t)k->n;
        lmx_conv_action a = o->quantize && t->shape[1] % o->group_size == 0 ? LMX_CONV_QUANTIZE : LMX_CONV_CAST;
        if ((st = add_tensor_parts(j, k->name, t, k->srcs, k->n, a, o->bits, o->group_size))) return st;
    }
    qsort(j->parts, j->n, sizeof *j->parts, cmp_part);
    for (size_t k = 1; k < j->n; k++)
        if (!strcmp(j->parts[k - 1].name, j->parts[k].name))
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "convert: two output tensors named %s", j->parts[k].name);
    return LMX_OK;
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
            shape[last] = t->shape[1] * p->bits / 32;
        } else if (p->kind != PART_CAST) {
            shape[last] = t->shape[1] / p->gs;
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
    if (o.bits == 0) o.bits = 4;
    if (o.group_size == 0) o.group_size = 64;
    lmx_status st = check_options(&o);
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
    job j = {0};
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
    if (st == LMX_OK) st = lmx_convert_write_config(src, partial, &o, dtype, j.over, j.n_over);
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
    for (int k = 0; k < j.n_over; k++) free(j.over[k].module);
    free(j.over);
    free(partial);
    lmx_weights_close(wt);
    return st;
}
