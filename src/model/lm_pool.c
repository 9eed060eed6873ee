/* lm_pool.c — the KV block pool of a model and its sequences (lm.h: lmx_pool, lmx_seq).
 *
 * Per layer one K and one V buffer of n_blocks * block_size slots per kv head (kv_buf_alloc: the
 * backend's KV element type), addressed through block tables (backend.h lmx_kv_map). Free blocks are
 * a stack; each block counts the sequences holding it, so forks share whole blocks and a step that
 * writes into a shared block copies it first (lm_step.c). Sliding-window layers keep every position
 * here (no ring as in lmx_kv): their window is only the attention's lower bound, so a fork or a
 * truncation never loses a position a later row may see.
 * The step scratch (lm_scratch for max_rows rows, the head's rows, host index arrays) is allocated
 * here at creation; steps allocate nothing. Where the backend brackets steps (step hooks), the last
 * block is kept back for the padding rows of bucketed decode steps (lm_step.c). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/lm_internal.h"
#include "util/error.h"
#include "util/log.h"

#define POOL_BLOCK_CPU 16    /* slots per block on the CPU backend */
#define POOL_BLOCK_DEVICE 64 /* elsewhere: the CUDA prefill flash kernel works in 64-key tiles */
#define POOL_OUT_ROWS 64     /* rows per head matmul (more outputs run as several) */

static int blocks_for(int positions, int block_size) { return (positions + block_size - 1) / block_size; }

int lmx_pool_block_size(const lmx_pool *p) { return p->block_size; }
int lmx_pool_max_rows(const lmx_pool *p) { return p->max_rows; }

/* the host arrays of the step scratch: [max_rows] each, [out_rows] for the outputs */
static lmx_status alloc_host(lmx_pool *p) {
    const size_t R = (size_t)p->max_rows, O = (size_t)p->out_rows;
    p->ids = calloc(R, sizeof *p->ids);
    p->posv = calloc(R, sizeof *p->posv);
    p->seqv = calloc(R, sizeof *p->seqv);
    p->longv = calloc(R, sizeof *p->longv);
    p->out_idx = calloc(R, sizeof *p->out_idx);
    p->last_tok = calloc(R, sizeof *p->last_tok);
    p->sargs = calloc(O, sizeof *p->sargs);
    p->tokens = calloc(O, sizeof *p->tokens);
    p->free_list = calloc((size_t)p->n_blocks, sizeof *p->free_list);
    p->refs = calloc((size_t)p->n_blocks, sizeof *p->refs);
    if (!p->ids || !p->posv || !p->seqv || !p->longv || !p->out_idx || !p->last_tok || !p->sargs || !p->tokens || !p->free_list ||
        !p->refs)
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv pool: host arrays");
    /* the last block pads bucketed decode steps where the backend brackets steps (lm_step.c) */
    const lmx_backend_ops *op = p->lm->be->ops;
    const bool pad = op->step_begin && op->step_end && p->n_blocks >= 2;
    p->pad_block = pad ? p->n_blocks - 1 : -1;
    /* pop order 0, 1, 2, ...: block b sits at free_list[n_free - 1 - b] */
    p->n_free = pad ? p->n_blocks - 1 : p->n_blocks;
    for (int b = 0; b < p->n_free; b++) p->free_list[p->n_free - 1 - b] = b;
    return LMX_OK;
}

lmx_status lmx_pool_create(lmx_lm *lm, int64_t max_bytes, int max_rows, lmx_pool **out) {
    *out = NULL;
    if (lm->tp) /* the batcher is then off: generations take the single-sequence forward */
        return lmx_error(LMX_ERR_UNSUPPORTED, "kv pool: batched steps of a tensor-parallel model are not implemented");
    const lmx_backend_ops *op = lm->be->ops;
    if (!op->paged_kv || !op->matmul_add || !op->rope_qk_store)
        return lmx_error(LMX_ERR_UNSUPPORTED, "kv pool: backend %s has no paged KV addressing", op->name);
    if (max_rows < 1 || max_bytes < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "kv pool: %lld bytes, %d rows per step", (long long)max_bytes,
                         max_rows);
    const lmx_model_config *c = lm->cfg;
    lmx_backend *be = lm->be;
    lmx_pool *p = calloc(1, sizeof *p);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv pool");
    p->lm = lm;
    p->block_size = lmx_backend_cpu_kernels(be) ? POOL_BLOCK_CPU : POOL_BLOCK_DEVICE;
    p->max_rows = max_rows;
    p->out_rows = max_rows < POOL_OUT_ROWS ? max_rows : POOL_OUT_ROWS;
    const size_t NKV = (size_t)c->n_kv_heads * (size_t)c->head_dim, H = (size_t)c->hidden_size;
    const size_t kv_elem = op->kv_elem_bytes ? op->kv_elem_bytes(be) : sizeof(float);
    p->block_bytes = (uint64_t)c->n_layers * 2 * NKV * (uint64_t)p->block_size * kv_elem;
    /* the scratch first (it is what the budget cannot do without), the blocks in what is left */
    lmx_status st = lm_scratch_alloc(lm, max_rows, &p->s);
    if (st == LMX_OK) st = be->ops->buf_alloc(be, (size_t)p->out_rows * H, &p->last); /* [out_rows, hidden] */
    if (st == LMX_OK) st = be->ops->buf_alloc(be, (size_t)p->out_rows * (size_t)c->vocab_size, &p->logits);
    const uint64_t scratch =
        (p->s.floats + (uint64_t)p->out_rows * (H + (uint64_t)c->vocab_size)) * sizeof(float) + p->s.moe_bytes;
    if (st == LMX_OK) {
        int64_t nb = (uint64_t)max_bytes > scratch ? (int64_t)(((uint64_t)max_bytes - scratch) / p->block_bytes) : 0;
        if (nb > INT_MAX / p->block_size) nb = INT_MAX / p->block_size;
        if (nb < 1)
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY,
                           "kv pool: %lld bytes hold no block of %llu after %llu bytes of step scratch",
                           (long long)max_bytes, (unsigned long long)p->block_bytes, (unsigned long long)scratch);
        p->n_blocks = (int)nb;
    }
    if (st == LMX_OK) st = alloc_host(p);
    if (st == LMX_OK) {
        p->k = calloc((size_t)c->n_layers, sizeof *p->k);
        p->v = calloc((size_t)c->n_layers, sizeof *p->v);
        p->slots = calloc((size_t)c->n_layers, sizeof *p->slots);
        if (!p->k || !p->v || !p->slots) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv pool: layer tables");
    }
    lmx_status (*kv_alloc)(lmx_backend *, size_t, lmx_buf **) = op->kv_buf_alloc ? op->kv_buf_alloc : op->buf_alloc;
    const size_t per_layer = NKV * (size_t)p->n_blocks * (size_t)p->block_size;
    for (int l = 0; st == LMX_OK && l < c->n_layers; l++) {
        p->slots[l] = p->n_blocks * p->block_size;
        st = kv_alloc(be, per_layer, &p->k[l]); /* [n_kv][n_blocks * block_size][head_dim] */
        if (st == LMX_OK) st = kv_alloc(be, per_layer, &p->v[l]);
    }
    if (st != LMX_OK) {
        lmx_pool_destroy(p);
        return lmx_error_prefix(st, "kv pool of %lld bytes", (long long)max_bytes);
    }
    p->bytes = (uint64_t)p->n_blocks * p->block_bytes + scratch;
    *out = p;
    return LMX_OK;
}

void lmx_pool_destroy(lmx_pool *p) {
    if (!p) return;
    if (p->n_live > 0) LMX_LOG_W("kv pool destroyed with %d sequences alive (their handles dangle)", p->n_live);
    lmx_backend *be = p->lm->be;
    const int L = p->lm->cfg->n_layers;
    for (int l = 0; l < L; l++) {
        if (p->k) be->ops->buf_free(be, p->k[l]);
        if (p->v) be->ops->buf_free(be, p->v[l]);
    }
    lm_scratch_free(p->lm, &p->s);
    be->ops->buf_free(be, p->last);
    be->ops->buf_free(be, p->logits);
    free(p->k);
    free(p->v);
    free(p->slots);
    free(p->ids);
    free(p->posv);
    free(p->seqv);
    free(p->longv);
    free(p->out_idx);
    free(p->last_tok);
    free(p->sargs);
    free(p->tokens);
    free(p->free_list);
    free(p->refs);
    free(p->tables);
    free(p);
}

void lmx_pool_stats(const lmx_pool *p, int64_t *bytes, int64_t *used_bytes, int64_t *free_blocks) {
    if (bytes) *bytes = (int64_t)p->bytes;
    const int held = p->n_blocks - p->n_free - (p->pad_block >= 0); /* the padding block is nobody's */
    if (used_bytes) *used_bytes = (int64_t)((uint64_t)held * p->block_bytes);
    if (free_blocks) *free_blocks = p->n_free;
}

int32_t lm_pool_take(lmx_pool *p) {
    if (p->n_free == 0) return -1;
    int32_t b = p->free_list[--p->n_free];
    p->refs[b] = 1;
    return b;
}

void lm_pool_release(lmx_pool *p, int32_t b) {
    if (--p->refs[b] == 0) p->free_list[p->n_free++] = b;
}

lmx_status lm_pool_copy_block(lmx_pool *p, int32_t dst, int32_t src, int n) {
    const lmx_model_config *c = p->lm->cfg;
    lmx_backend *be = p->lm->be;
    const size_t D = (size_t)c->head_dim, cap = (size_t)p->n_blocks * (size_t)p->block_size;
    const size_t bs = (size_t)p->block_size;
    /* a block's slots are contiguous within each kv head: [kv_head][cap][head_dim] */
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++) {
            const size_t head = (size_t)h * cap * D;
            lmx_status st = be->ops->buf_copy(be, p->k[l], head + (size_t)dst * bs * D, p->k[l],
                                              head + (size_t)src * bs * D, (size_t)n * D);
            if (st == LMX_OK)
                st = be->ops->buf_copy(be, p->v[l], head + (size_t)dst * bs * D, p->v[l],
                                       head + (size_t)src * bs * D, (size_t)n * D);
            if (st != LMX_OK) return lmx_error_prefix(st, "kv pool: copy of block %d", src);
        }
    return LMX_OK;
}

/* ---- sequences ---- */

static lmx_status seq_new(lmx_pool *p, int max_context, lmx_seq **out) {
    *out = NULL;
    if (max_context < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "sequence: max_context %d", max_context);
    const int nb = blocks_for(max_context, p->block_size);
    /* the step's tables hold up to max_rows rows of the longest table a sequence may have */
    if (nb > p->tables_cap) {
        int32_t *t = realloc(p->tables, (size_t)p->max_rows * (size_t)nb * sizeof *t);
        if (!t) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "sequence: step tables for %d blocks", nb);
        memset(t, 0, (size_t)p->max_rows * (size_t)nb * sizeof *t); /* entries past a row's blocks: defined */
        p->tables = t;
        p->tables_cap = nb;
    }
    lmx_seq *s = calloc(1, sizeof *s);
    if (s) s->blocks = calloc((size_t)nb, sizeof *s->blocks); /* [nb] */
    if (!s || !s->blocks) {
        free(s);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "sequence of %d positions", max_context);
    }
    s->pool = p;
    s->max_context = max_context;
    p->n_live++;
    *out = s;
    return LMX_OK;
}

lmx_status lmx_seq_create(lmx_pool *p, int max_context, lmx_seq **out) {
    if (!p || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "seq_create: NULL argument");
    return seq_new(p, max_context, out);
}

void lmx_seq_destroy(lmx_seq *s) {
    if (!s) return;
    for (int b = 0; b < s->n_blocks; b++) lm_pool_release(s->pool, s->blocks[b]);
    s->pool->n_live--;
    free(s->blocks);
    free(s);
}

int lmx_seq_pos(const lmx_seq *s) { return s->pos; }

lmx_status lmx_seq_fork(const lmx_seq *src, int n, lmx_seq **out) {
    if (!src || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "seq_fork: NULL argument");
    *out = NULL;
    if (n < 0 || n > src->pos) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "seq_fork: %d of %d positions", n, src->pos);
    lmx_pool *p = src->pool;
    const int full = n / p->block_size, part = n % p->block_size;
    if (part && p->n_free == 0)
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "seq_fork: no free block for the partial block of %d positions",
                         part);
    lmx_seq *s = NULL;
    lmx_status st = seq_new(p, src->max_context, &s);
    if (st != LMX_OK) return st;
    for (int b = 0; b < full; b++) {
        s->blocks[b] = src->blocks[b];
        p->refs[src->blocks[b]]++;
    }
    s->n_blocks = full;
    if (part) {
        int32_t nb = lm_pool_take(p);
        s->blocks[s->n_blocks++] = nb;
        st = lm_pool_copy_block(p, nb, src->blocks[full], part);
    }
    if (st != LMX_OK) {
        lmx_seq_destroy(s);
        return st;
    }
    s->pos = n;
    *out = s;
    return LMX_OK;
}

lmx_status lmx_seq_truncate(lmx_seq *s, int n) {
    if (!s) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "seq_truncate: NULL sequence");
    if (n < 0 || n > s->pos) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "seq_truncate to %d of %d", n, s->pos);
    const int keep = blocks_for(n, s->pool->block_size);
    /* the kept partial block may be shared: the step writing into it copies it first */
    for (int b = keep; b < s->n_blocks; b++) lm_pool_release(s->pool, s->blocks[b]);
    if (keep < s->n_blocks) s->n_blocks = keep;
    s->pos = n;
    return LMX_OK;
}
