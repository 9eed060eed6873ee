/* dev_plan.c — `lmx dev random-model`'s tensors: deterministic values and fills (see dev_plan.h). */
#include "dev_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/mlx_mx.h"
#include "formats/mlx_quant.h"
#include "util/error.h"

/* ---- deterministic values ---- */

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* ~N(0,1): Irwin–Hall sum of four 16-bit uniforms of hash(key, e), standardised. */
static inline float normalish(uint64_t key, uint64_t e) {
    uint64_t x = mix64(key + e * 0x9e3779b97f4a7c15ull);
    uint32_t s = (uint32_t)(x & 0xffff) + (uint32_t)((x >> 16) & 0xffff) + (uint32_t)((x >> 32) & 0xffff) +
                 (uint32_t)(x >> 48);
    return ((float)s - 131070.0f) * (1.0f / 37837.23f);
}

static uint64_t hash_name(const char *s, uint64_t seed) {
    uint64_t h = 0xcbf29ce484222325ull ^ mix64(seed);
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return mix64(h);
}

static inline uint16_t f32_to_bf16_fast(float f) { /* round to nearest even; values here are finite */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* One row of the source matrix, rounded to bf16 precision, into dst[cols] as fp32. */
static void gen_row(const lmx_dev_gen *g, int64_t r, float *dst) {
    uint64_t e0 = (uint64_t)(r * g->cols);
    for (int64_t c = 0; c < g->cols; c++) {
        float v = g->mean + g->std * normalish(g->key, e0 + (uint64_t)c);
        uint32_t u = (uint32_t)f32_to_bf16_fast(v) << 16;
        memcpy(&dst[c], &u, 4);
    }
}

/* row r of a quantized module into packed / scales / biases (MX modes: no biases) */
static lmx_status quantize_row(const lmx_dev_gen *g, const float *row, uint8_t *packed, uint8_t *scales, uint8_t *biases) {
    if (lmx_quant_mode_is_fp(g->mode)) return lmx_mx_quantize_row(row, g->cols, g->mode, packed, scales);
    return lmx_mlx_quantize_row(row, g->cols, g->bits, g->gs, LMX_DTYPE_BF16, packed, scales, biases, LMX_MLX_CPU);
}

static lmx_status fill_gen(void *ctx, const char *name, uint64_t offset, void *dst, size_t len) {
    const lmx_dev_gen *g = ctx;
    if (g->part == PART_DENSE) { /* bf16 elements [offset/2, (offset+len)/2) */
        uint16_t h;
        uint8_t *d = dst;
        uint64_t e = offset / 2;
        for (size_t i = 0; i < len / 2; i++, e++) {
            h = f32_to_bf16_fast(g->mean + g->std * normalish(g->key, e));
            d[2 * i] = (uint8_t)h;
            d[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return LMX_OK;
    }
    const bool mx = lmx_quant_mode_is_fp(g->mode);
    size_t pb = lmx_mlx_quant_row_bytes(g->cols, g->bits), sb = (size_t)(g->cols / g->gs) * (mx ? 1 : 2);
    size_t row_bytes = g->part == PART_QWEIGHT ? pb : sb;
    int64_t r0 = (int64_t)(offset / row_bytes), nr = (int64_t)(len / row_bytes);
    float *row = malloc((size_t)g->cols * sizeof *row);
    uint8_t *scratch = malloc(pb + 2 * sb);
    if (!row || !scratch) {
        free(row);
        free(scratch);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
    }
    lmx_status s = LMX_OK;
    uint8_t *d = dst;
    lmx_dev_qcache *qc = g->cache;
    for (int64_t r = r0; r < r0 + nr && s == LMX_OK; r++, d += row_bytes) {
        if (g->part != PART_QWEIGHT && atomic_load_explicit(&qc->ready[r], memory_order_acquire)) {
            memcpy(d, (g->part == PART_QSCALES ? qc->scales : qc->biases) + (size_t)r * sb, sb);
            continue;
        }
        gen_row(g, r, row);
        uint8_t *packed = g->part == PART_QWEIGHT ? d : scratch;
        uint8_t *scales = g->part == PART_QSCALES ? d : scratch + pb;
        uint8_t *biases = g->part == PART_QBIASES ? d : scratch + pb + sb;
        if (g->part == PART_QWEIGHT) {
            s = quantize_row(g, row, packed, scales, biases);
            if (s == LMX_OK) { /* only the weight pass writes the cache: no two writers per row */
                memcpy(qc->scales + (size_t)r * sb, scales, sb);
                if (!mx) memcpy(qc->biases + (size_t)r * sb, biases, sb);
                atomic_store_explicit(&qc->ready[r], 1, memory_order_release);
            }
        } else if (mx) { /* the scales of an MX row come with its codes */
            s = quantize_row(g, row, scratch, scales, NULL);
        } else {
            s = lmx_mlx_quantize_params_row(row, g->cols, g->bits, g->gs, LMX_DTYPE_BF16, scales, biases, LMX_MLX_CPU);
        }
    }
    free(row);
    free(scratch);
    return s;
}

/* ---- the plan ---- */

lmx_status lmx_dev_plan_init(lmx_dev_plan *p, lmx_st_writer *w, size_t cap, uint64_t seed, int bits, int gs) {
    memset(p, 0, sizeof *p);
    p->w = w;
    p->cap = cap;
    p->seed = seed;
    p->bits = bits;
    p->gs = gs;
    p->gens = calloc(cap, sizeof *p->gens);
    p->caches = calloc(cap, sizeof *p->caches);
    if (!p->gens || !p->caches) {
        lmx_dev_plan_free(p);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "random-model: out of memory");
    }
    return LMX_OK;
}

void lmx_dev_plan_free(lmx_dev_plan *p) {
    for (size_t i = 0; p->caches && i < p->n_caches; i++) {
        free(p->caches[i].scales);
        free(p->caches[i].biases);
        free(p->caches[i].ready);
    }
    free(p->caches);
    free(p->gens);
    p->caches = NULL;
    p->gens = NULL;
}

/* A tensor of rows × shape1 stored elements generated as `rows` rows of `cols` values (lead > 0: shaped
 * [lead, rows / lead, shape1], mlx-lm's stacked experts; cols 0: a vector [rows]). */
static lmx_status plan_add(lmx_dev_plan *p, const char *name, int64_t lead, int64_t rows, int64_t cols, lmx_dev_gen g,
                           lmx_dtype dt, int64_t shape1) {
    if (p->n == p->cap) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "random-model: tensor table full");
    lmx_dev_gen *slot = &p->gens[p->n++];
    *slot = g;
    slot->rows = rows;
    slot->cols = cols ? cols : rows;
    int64_t shape[3] = {rows, shape1, 0};
    int nd = cols ? 2 : 1;
    if (lead > 0) shape[0] = lead, shape[1] = rows / lead, shape[2] = shape1, nd = 3;
    return lmx_st_writer_add_fill(p->w, name, dt, nd, shape, fill_gen, slot);
}

lmx_status lmx_dev_plan_add_norm(lmx_dev_plan *p, const char *name, int64_t n) {
    p->params += (uint64_t)n;
    lmx_dev_gen g = {.key = hash_name(name, p->seed), .mean = 1.0f, .std = 0.02f, .part = PART_DENSE};
    return plan_add(p, name, 0, n, 0, g, LMX_DTYPE_BF16, 0);
}

lmx_status lmx_dev_plan_add_vector(lmx_dev_plan *p, const char *name, int64_t lead, int64_t n, float std) {
    p->params += (uint64_t)(n * (lead > 0 ? lead : 1));
    lmx_dev_gen g = {.key = hash_name(name, p->seed), .std = std, .part = PART_DENSE};
    if (lead <= 0) return plan_add(p, name, 0, n, 0, g, LMX_DTYPE_BF16, 0);
    int64_t shape[2] = {lead, n};
    if (p->n == p->cap) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "random-model: tensor table full");
    lmx_dev_gen *slot = &p->gens[p->n++];
    *slot = g;
    slot->rows = lead;
    slot->cols = n;
    return lmx_st_writer_add_fill(p->w, name, LMX_DTYPE_BF16, 2, shape, fill_gen, slot);
}

/* the scales cache of a quantized module of `rows` rows and `sb` scale bytes a row */
static lmx_status new_cache(lmx_dev_plan *p, const char *mod, int64_t rows, size_t sb, bool biases, lmx_dev_qcache **out) {
    lmx_dev_qcache *qc = &p->caches[p->n_caches++]; /* cap is the tensor table's: never exceeded first */
    qc->scales = malloc((size_t)rows * sb);
    qc->biases = biases ? malloc((size_t)rows * sb) : NULL;
    qc->ready = calloc((size_t)rows, sizeof *qc->ready);
    if (!qc->scales || (biases && !qc->biases) || !qc->ready)
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: out of memory for the scales cache", mod);
    *out = qc;
    return LMX_OK;
}

lmx_status lmx_dev_plan_add_matrix(lmx_dev_plan *p, const char *mod, int64_t lead, int64_t rows, int64_t cols,
                                   int bits) {
    char name[256];
    snprintf(name, sizeof name, "%s.weight", mod);
    const uint64_t key = hash_name(name, p->seed);
    if (lead > 0) rows *= lead;
    p->params += (uint64_t)(rows * cols);
    lmx_dev_gen g = {.key = key, .std = 0.02f, .part = PART_DENSE};
    if (!p->bits) return plan_add(p, name, lead, rows, cols, g, LMX_DTYPE_BF16, cols);
    if (!bits) bits = p->bits;
    if (cols % p->gs)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: input dimension %lld is not a multiple of group size %d", mod,
                         (long long)cols, p->gs);
    g.bits = bits;
    g.gs = p->gs;
    g.mode = LMX_QUANT_AFFINE;
    lmx_status s = new_cache(p, mod, rows, (size_t)(cols / p->gs) * 2, true, &g.cache);
    if (s != LMX_OK) return s;
    /* insertion order as in MLX's QuantizedLinear: weight, scales, biases */
    g.part = PART_QWEIGHT;
    s = plan_add(p, name, lead, rows, cols, g, LMX_DTYPE_U32, cols * bits / 32);
    snprintf(name, sizeof name, "%s.scales", mod);
    g.part = PART_QSCALES;
    if (s == LMX_OK) s = plan_add(p, name, lead, rows, cols, g, LMX_DTYPE_BF16, cols / p->gs);
    snprintf(name, sizeof name, "%s.biases", mod);
    g.part = PART_QBIASES;
    if (s == LMX_OK) s = plan_add(p, name, lead, rows, cols, g, LMX_DTYPE_BF16, cols / p->gs);
    return s;
}

lmx_status lmx_dev_plan_add_matrix_mx(lmx_dev_plan *p, const char *mod, int64_t lead, int64_t rows, int64_t cols,
                                      lmx_quant_mode mode) {
    char name[256];
    snprintf(name, sizeof name, "%s.weight", mod);
    const int bits = lmx_quant_mode_bits(mode), gs = lmx_quant_mode_group(mode);
    if (!lmx_quant_mode_is_fp(mode) || cols % gs)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: %lld columns in mode %s", mod, (long long)cols,
                         lmx_quant_mode_name(mode));
    if (lead > 0) rows *= lead;
    p->params += (uint64_t)(rows * cols);
    lmx_dev_gen g = {.key = hash_name(name, p->seed), .std = 0.02f, .bits = bits, .gs = gs, .mode = mode};
    lmx_status s = new_cache(p, mod, rows, (size_t)(cols / gs), false, &g.cache);
    if (s != LMX_OK) return s;
    g.part = PART_QWEIGHT;
    s = plan_add(p, name, lead, rows, cols, g, LMX_DTYPE_U32, cols * bits / 32);
    snprintf(name, sizeof name, "%s.scales", mod);
    g.part = PART_QSCALES;
    if (s == LMX_OK) s = plan_add(p, name, lead, rows, cols, g, LMX_DTYPE_U8, cols / gs);
    return s;
}
