/* cpu_backend.c — the reference CPU backend: readable fp32-accumulating kernels, parallelized over
 * rows/heads with a small thread pool owned by the backend (see backend.h for the op contracts).
 *
 * Weights stay in their stored dtype: dense F16/BF16/F32 matrices are referenced in place (the
 * mmapped bytes, possibly unaligned) and converted row by row into per-thread scratch; at the SIMD
 * levels affine 4/8-bit matrices (groups of 32/64/128) are repacked at upload into the 16-row tiles
 * of cpu_qtile.h, other quantized matrices (and all at the scalar level) keep their packed words and
 * get fp32 copies of scales/biases.
 * The compute ops live in cpu_compute.c; this file holds buffers, weight uploads, creation and the
 * ops table.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "backend/backend_fuse.h"
#include "backend/cpu/cpu_backend_internal.h"
#include "backend/cpu/cpu_mx.h"
#include "backend/cpu/cpu_qtile.h"
#include "backend/cpu/cpu_quant.h"

/* ---- memory ---- */

/* Buffers are calloc'd, so the kernel only backs the pages a forward pass touches; a KV cache for
 * --ctx 2^31 would still "succeed" (or abort under ASan) and fail much later. Buffers that together
 * exceed physical memory are refused up front. */
static lmx_status cpu_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out) {
    cpu_backend *c = CPU(be);
    *out = NULL;
    size_t bytes = n <= SIZE_MAX / sizeof(float) ? n * sizeof(float) : SIZE_MAX;
    size_t held = bytes <= c->mem_limit ? atomic_fetch_add(&c->buf_bytes, bytes) : atomic_load(&c->buf_bytes);
    if (bytes > c->mem_limit || held > c->mem_limit - bytes) {
        if (bytes <= c->mem_limit) atomic_fetch_sub(&c->buf_bytes, bytes);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY,
                         "cpu backend: a buffer of %zu floats on top of %zu bytes held exceeds the %zu bytes of "
                         "physical memory",
                         n, held, c->mem_limit);
    }
    lmx_buf *b = malloc(sizeof *b);
    float *d = calloc(n ? n : 1, sizeof(float));
    if (!b || !d) {
        free(b);
        free(d);
        atomic_fetch_sub(&c->buf_bytes, bytes);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: buffer of %zu floats", n);
    }
    b->n = n;
    b->data = d;
    b->view = false;
    *out = b;
    return LMX_OK;
}

static void cpu_buf_free(lmx_backend *be, lmx_buf *b) {
    if (!b) return;
    if (b->view) {
        free(b);
        return;
    }
    atomic_fetch_sub(&CPU(be)->buf_bytes, b->n * sizeof(float));
    free(b->data);
    free(b);
}

static lmx_status cpu_buf_write(lmx_backend *be, lmx_buf *dst, size_t off, const float *src, size_t n) {
    (void)be;
    CHECK_RANGE(dst, off, n, "buf_write");
    memcpy(dst->data + off, src, n * sizeof(float));
    return LMX_OK;
}

static lmx_status cpu_buf_read(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n) {
    (void)be;
    CHECK_RANGE(src, off, n, "buf_read");
    memcpy(dst, src->data + off, n * sizeof(float));
    return LMX_OK;
}

static lmx_status cpu_buf_copy(lmx_backend *be, lmx_buf *dst, size_t dst_off, const lmx_buf *src, size_t src_off,
                               size_t n) {
    (void)be;
    CHECK_RANGE(dst, dst_off, n, "buf_copy");
    CHECK_RANGE(src, src_off, n, "buf_copy");
    memmove(dst->data + dst_off, src->data + src_off, n * sizeof(float));
    return LMX_OK;
}

static lmx_status cpu_buf_view(lmx_backend *be, lmx_buf *parent, size_t off, size_t n, lmx_buf **out) {
    (void)be;
    *out = NULL;
    if (!parent) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cpu backend: buf_view of NULL");
    CHECK_RANGE(parent, off, n, "buf_view");
    lmx_buf *b = malloc(sizeof *b);
    if (!b) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend: buffer view");
    b->n = n;
    b->data = parent->data + off;
    b->view = true;
    *out = b;
    return LMX_OK;
}

static void cpu_weight_free(lmx_backend *be, lmx_bweight *w) {
    (void)be;
    if (!w) return;
    if (w->view) {
        if (w->pk_own) {
            free(w->pk);
        }
        free(w);
        return;
    }
    for (int e = 0; e < w->n_experts && w->experts; e++) cpu_weight_free(be, w->experts[e]);
    free(w->experts);
    free(w->own);
    free(w->pk);
    free(w->vec);
    free(w->scales);
    free(w->biases);
    free(w->bias);
    free(w);
}

/* After packing, the tiles hold everything a matmul reads: the fp32 scales/biases are freed (the
 * embedding reads a row's from the tiles) and the source codes' pages are handed back to the kernel
 * (MADV_PAGEOUT keeps their content on any mapping: the embedding's few rows per token, another
 * backend or a converter reading the same file fault them back in). Without it the mapped file
 * stays resident beside the tiles: the quantized weights twice. */
static void release_pages(const void *p, size_t bytes) {
#ifdef MADV_PAGEOUT
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)p;
    const uintptr_t lo = (a + pg - 1) & ~(pg - 1), hi = (a + bytes) & ~(pg - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_PAGEOUT); /* advice only: an old kernel refuses it */
#else
    (void)p, (void)bytes;
#endif
}

static void release_packed_source(lmx_bweight *w) {
    free(w->scales);
    free(w->biases);
    w->scales = w->biases = NULL;
    release_pages(w->data, (size_t)w->rows * w->row_bytes);
}

static lmx_status cpu_weight_upload_impl(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out) {
    cpu_backend *c = CPU(be);
    *out = NULL;
    LMX_BACKEND_TRY(lmx_backend_check_weight_desc(d));
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight", d->name);
    w->kind = d->kind;
    w->rows = d->rows;
    w->cols = d->cols;
    w->dtype = d->dtype;
    const char *what = d->name;
    if (d->kind == LMX_WEIGHT_VECTOR) {
        w->vec = convert_copy(&c->k, d->data, d->dtype, d->cols);
        if (!w->vec) goto oom;
    } else if (d->kind == LMX_WEIGHT_DENSE) {
        w->row_bytes = (size_t)d->cols * wdtype_size(d->dtype);
        w->data = (const uint8_t *)d->data + (size_t)d->row0 * w->row_bytes;
    } else if (lmx_quant_mode_is_fp(d->mode)) {
        lmx_cpu_mx_upload(d, w);
    } else {
        w->bits = d->bits;
        w->group_size = d->group_size;
        w->groups = (int)(d->cols / d->group_size);
        w->row_bytes = (size_t)d->cols * (size_t)d->bits / 8;
        w->data = (const uint8_t *)d->data + (size_t)d->row0 * w->row_bytes;
        size_t sb = wdtype_size(d->dtype);
        size_t off = (size_t)d->row0 * (size_t)w->groups * sb;
        w->scales = convert_copy(&c->k, (const uint8_t *)d->scales + off, d->dtype, d->rows * w->groups);
        w->biases = convert_copy(&c->k, (const uint8_t *)d->biases + off, d->dtype, d->rows * w->groups);
        if (!w->scales || !w->biases) goto oom;
        if (c->qt && !d->fp32_x && lmx_cpu_qtile_supported(w->bits, w->group_size, w->cols)) {
            if (lmx_cpu_qtile_pack(w, c->pool) != LMX_OK) goto oom;
            release_packed_source(w);
        }
    }
    if (d->bias) {
        w->bias = convert_copy(&c->k, (const uint8_t *)d->bias + (size_t)d->row0 * wdtype_size(d->bias_dtype),
                               d->bias_dtype, d->rows);
        if (!w->bias) goto oom;
    }
    /* per-thread scratch: a block of 4 converted/decoded rows */
    lmx_status st = ensure_scratch(c, 4 * (size_t)d->cols + 64);
    if (st != LMX_OK) {
        cpu_weight_free(be, w);
        return st;
    }
    *out = w;
    return LMX_OK;
oom:
    cpu_weight_free(be, w);
    return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight copy", what);
}

/* Test-only (lmx_backend_cpu_enable_fused): the parts' rows copied into one owned matrix (dense:
 * stored bytes; quant: packed words, fp32 scales/biases), views pointing into it. */
static lmx_status cpu_weight_upload_fused_impl(lmx_backend *be, const lmx_weight_desc *parts, int n,
                                               lmx_bweight **fused, lmx_bweight **views) {
    cpu_backend *c = CPU(be);
    *fused = NULL;
    for (int i = 0; i < n && views; i++) views[i] = NULL;
    int64_t rows = 0;
    LMX_BACKEND_TRY(lmx_backend_check_fused_parts("cpu", parts, n, &rows));
    if (parts[0].kind == LMX_WEIGHT_QUANT && lmx_quant_mode_is_fp(parts[0].mode))
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: cpu backend keeps %s weights separate", parts[0].name,
                         lmx_quant_mode_name(parts[0].mode));
    const lmx_weight_desc *p0 = &parts[0];
    lmx_bweight *w = calloc(1, sizeof *w);
    if (!w) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: fused weight", p0->name);
    w->kind = p0->kind;
    w->rows = rows;
    w->cols = p0->cols;
    w->dtype = p0->dtype;
    w->row_bytes = p0->kind == LMX_WEIGHT_DENSE ? (size_t)p0->cols * wdtype_size(p0->dtype)
                                                : (size_t)p0->cols * (size_t)p0->bits / 8;
    if (p0->kind == LMX_WEIGHT_QUANT) {
        w->bits = p0->bits;
        w->group_size = p0->group_size;
        w->groups = (int)(p0->cols / p0->group_size);
    }
    const size_t G = (size_t)w->groups, sb = wdtype_size(p0->dtype);
    w->own = malloc((size_t)rows * w->row_bytes);
    if (p0->kind == LMX_WEIGHT_QUANT) {
        w->scales = malloc((size_t)rows * G * sizeof(float));
        w->biases = malloc((size_t)rows * G * sizeof(float));
    }
    if (p0->bias) w->bias = malloc((size_t)rows * sizeof(float));
    if (!w->own || (p0->kind == LMX_WEIGHT_QUANT && (!w->scales || !w->biases)) || (p0->bias && !w->bias)) {
        cpu_weight_free(be, w);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: fused weight copy", p0->name);
    }
    w->data = w->own;
    int64_t r = 0;
    for (int i = 0; i < n; i++) {
        const lmx_weight_desc *p = &parts[i];
        memcpy(w->own + (size_t)r * w->row_bytes, (const uint8_t *)p->data + (size_t)p->row0 * w->row_bytes,
               (size_t)p->rows * w->row_bytes);
        if (p->kind == LMX_WEIGHT_QUANT) {
            size_t off = (size_t)p->row0 * G * sb;
            convert_row(&c->k, (const uint8_t *)p->scales + off, p->dtype, p->rows * (int64_t)G, w->scales + r * G);
            convert_row(&c->k, (const uint8_t *)p->biases + off, p->dtype, p->rows * (int64_t)G, w->biases + r * G);
        }
        if (p->bias)
            convert_row(&c->k, (const uint8_t *)p->bias + (size_t)p->row0 * wdtype_size(p->bias_dtype),
                        p->bias_dtype, p->rows, w->bias + r);
        r += p->rows;
    }
    lmx_status st = ensure_scratch(c, 4 * (size_t)w->cols + 64);
    if (st == LMX_OK && p0->kind == LMX_WEIGHT_QUANT && c->qt && !p0->fp32_x &&
        lmx_cpu_qtile_supported(w->bits, w->group_size, w->cols))
        st = lmx_cpu_qtile_pack(w, c->pool);
    r = 0;
    for (int i = 0; st == LMX_OK && i < n; i++) {
        lmx_bweight *v = malloc(sizeof *v);
        if (!v) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: weight view", parts[i].name);
            break;
        }
        *v = *w;
        v->own = NULL;
        v->view = true;
        v->rows = parts[i].rows;
        v->data = w->data + (size_t)r * w->row_bytes;
        if (w->scales) v->scales = w->scales + (size_t)r * G;
        if (w->biases) v->biases = w->biases + (size_t)r * G;
        if (w->bias) v->bias = w->bias + r;
        if (w->pk && r % 16 == 0) { /* the view's tiles start at a tile of the fused weight */
            v->pk = w->pk + (size_t)(r / 16) * w->pk_block_bytes;
            v->pk_blocks = (parts[i].rows + 15) / 16;
        } else if (w->pk) { /* a view inside a tile (tests; real qkv/gate|up parts are multiples of 16 rows):
                               tiles of its own (a row's result does not depend on its tile) */
            v->pk = NULL, v->pk_blocks = 0;
            v->pk_own = true;
            st = lmx_cpu_qtile_pack(v, c->pool);
            if (st != LMX_OK) {
                cpu_weight_free(be, v);
                break;
            }
        }
        views[i] = v;
        r += parts[i].rows;
    }
    if (st != LMX_OK) {
        for (int i = 0; i < n; i++) {
            cpu_weight_free(be, views[i]);
            views[i] = NULL;
        }
        cpu_weight_free(be, w);
        return st;
    }
    *fused = w;
    return LMX_OK;
}


/* the SIMD levels (not the test-only form): 4/8-bit parts whose tiles the level repacks are fused —
 * the repack copies them anyway, so one matmul over q|k|v or gate|up costs no memory (the
 * concatenated source copy is freed once the tiles exist; the fused weight and its views then
 * have no source rows: every matmul through them runs on the tiles). Anything else stays separate. */
static lmx_status cpu_weight_upload_fused_impl(lmx_backend *be, const lmx_weight_desc *parts, int n,
                                               lmx_bweight **fused, lmx_bweight **views);

static lmx_status cpu_weight_upload_fused_tiles(lmx_backend *be, const lmx_weight_desc *parts, int n,
                                                lmx_bweight **fused, lmx_bweight **views) {
    cpu_backend *c = CPU(be);
    *fused = NULL;
    for (int i = 0; i < n && views; i++) views[i] = NULL;
    if (n < 1 || parts[0].kind != LMX_WEIGHT_QUANT || lmx_quant_mode_is_fp(parts[0].mode) || parts[0].fp32_x ||
        !lmx_cpu_qtile_supported(parts[0].bits, parts[0].group_size, parts[0].cols))
        return lmx_error(LMX_ERR_UNSUPPORTED, "%s: cpu backend fuses repacked 4/8-bit weights only", parts[0].name);
    LMX_BACKEND_TRY(cpu_weight_upload_fused_impl(be, parts, n, fused, views));
    lmx_bweight *w = *fused;
    (void)c;
    free(w->own);
    free(w->scales);
    free(w->biases);
    w->own = NULL;
    w->data = NULL;
    w->scales = w->biases = NULL;
    for (int i = 0; i < n; i++) {
        views[i]->data = NULL;
        views[i]->scales = views[i]->biases = NULL;
        release_pages((const uint8_t *)parts[i].data + (size_t)parts[i].row0 * w->row_bytes,
                      (size_t)parts[i].rows * w->row_bytes);
    }
    return LMX_OK;
}

/* ---- serialized entry points ---- */

static lmx_status cpu_weight_upload(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_weight_upload_impl(be, d, out);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_weight_upload_fused(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                                          lmx_bweight **views) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_weight_upload_fused_impl(be, parts, n, fused, views);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}

static lmx_status cpu_weight_upload_fused_t(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                                            lmx_bweight **views) {
    cpu_backend *c = CPU(be);
    pthread_mutex_lock(&c->op_lock);
    lmx_status st = cpu_weight_upload_fused_tiles(be, parts, n, fused, views);
    pthread_mutex_unlock(&c->op_lock);
    return st;
}


/* ---- lifecycle ---- */

static void cpu_destroy(lmx_backend *be) {
    cpu_backend *c = CPU(be);
    if (!c) return;
    lmx_thread_pool_destroy(c->pool);
    pthread_mutex_destroy(&c->op_lock);
    lmx_cpu_moe_free(&c->moe);
    if (c->scratch)
        for (int i = 0; i < c->n_threads; i++) free(c->scratch[i]);
    free(c->scratch);
    free(c->shared);
    free(c->xq);
    free(c);
}

#define CPU_OPS_COMMON                     \
    .name = "cpu",                         \
    .destroy = cpu_destroy,                \
    .buf_alloc = cpu_buf_alloc,            \
    .buf_free = cpu_buf_free,              \
    .buf_write = cpu_buf_write,            \
    .buf_read = cpu_buf_read,              \
    .buf_copy = cpu_buf_copy,              \
    .weight_upload = cpu_weight_upload,    \
    .weight_free = cpu_weight_free,        \
    .matmul = lmx_cpu_matmul,                  \
    .embed = lmx_cpu_embed,                    \
    .rmsnorm = lmx_cpu_rmsnorm,                \
    .attention = lmx_cpu_attention,            \
    .act_mul = lmx_cpu_act_mul,                \
    .add = lmx_cpu_add,                        \
    .softcap = lmx_cpu_softcap,                \
    .matmul_add = lmx_cpu_matmul_add,          \
    .rope_qk_store = lmx_cpu_rope_qk_store,    \
    .buf_view = cpu_buf_view,              \
    .act_mul_split = lmx_cpu_act_mul_split,    \
    .all_reduce_sum = lmx_cpu_all_reduce_sum,  \
    .all_gather = lmx_cpu_all_gather,          \
    .paged_kv = true,                          \
    .weight_upload_experts = lmx_cpu_weight_upload_experts, \
    .moe_route = lmx_cpu_moe_route,            \
    .moe_matmul = lmx_cpu_moe_matmul,          \
    .moe_gate_up = lmx_cpu_moe_gate_up,        \
    .moe_combine = lmx_cpu_moe_combine

/* the scalar level */
static const lmx_backend_ops cpu_ops = {CPU_OPS_COMMON};
/* the same plus the test-only fused upload (lmx_backend_cpu_enable_fused) */
static const lmx_backend_ops cpu_ops_fused = {CPU_OPS_COMMON, .weight_upload_fused = cpu_weight_upload_fused};
/* the SIMD levels: repacked quantized parts fused (cpu_weight_upload_fused_tiles) */
static const lmx_backend_ops cpu_ops_tiles = {CPU_OPS_COMMON, .weight_upload_fused = cpu_weight_upload_fused_t};

static bool is_cpu(const lmx_backend *be) {
    return be && (be->ops == &cpu_ops || be->ops == &cpu_ops_fused || be->ops == &cpu_ops_tiles);
}

lmx_status lmx_backend_cpu_enable_fused(lmx_backend *be) {
    if (!is_cpu(be))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "enable_fused: not a cpu backend");
    be->ops = &cpu_ops_fused;
    return LMX_OK;
}

lmx_status lmx_backend_cpu_create(int n_threads, lmx_backend **out) {
    return lmx_backend_cpu_create_ex(n_threads, true, out);
}

const char *lmx_backend_cpu_kernels(const lmx_backend *be) {
    return is_cpu(be) ? ((const cpu_backend *)be)->k.name : NULL;
}

lmx_status lmx_backend_cpu_create_ex(int n_threads, bool allow_simd, lmx_backend **out) {
    return lmx_backend_cpu_create_level(n_threads, allow_simd ? LMX_CPU_AVX512 : LMX_CPU_SCALAR, out);
}

lmx_status lmx_backend_cpu_create_level(int n_threads, lmx_cpu_level max_level, lmx_backend **out) {
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 64) n_threads = 64;
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend");
    c->n_threads = n_threads;
    c->level = (lmx_cpu_level)lmx_cpu_kernels_select(&c->k, (int)max_level);
    c->qt = lmx_cpu_qtile_kernels(c->level);
    c->base.ops = c->qt ? &cpu_ops_tiles : &cpu_ops;
    pthread_mutex_init(&c->op_lock, NULL);
    lmx_cpu_moe_init(&c->moe);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    c->mem_limit = pages > 0 && page > 0 && (size_t)pages <= SIZE_MAX / (size_t)page ? (size_t)pages * (size_t)page
                                                                                     : SIZE_MAX;
    atomic_init(&c->buf_bytes, 0);
    c->scratch = calloc((size_t)n_threads, sizeof *c->scratch);
    lmx_status st = c->scratch ? lmx_thread_pool_create(n_threads, &c->pool)
                               : lmx_error(LMX_ERR_OUT_OF_MEMORY, "cpu backend");
    if (st == LMX_OK) st = ensure_scratch(c, 1024);
    if (st != LMX_OK) {
        cpu_destroy(&c->base);
        return st;
    }
    *out = &c->base;
    return LMX_OK;
}

