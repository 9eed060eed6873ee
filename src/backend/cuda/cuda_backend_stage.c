/* cuda_backend_stage.c — host arrays of an op call (positions, a paged call's kv map) to device memory.
 *
 * The seam passes positions and the paged KV map (backend.h lmx_kv_map) as host arrays read during
 * the call. They reach the kernels through grow-only device arrays (cub_stage): the host copy of what
 * the device array holds is compared with the new content, and only a different array is uploaded
 * (a pageable host-to-device copy on the backend stream, staged by the driver before the call
 * returns, so the host copy may change afterwards). A forward step passes the same positions and map
 * to rope_qk_store and attention of every layer: one upload per step.
 *
 * A paged call's map array is [seq T | tables n_seqs * stride | decode rows n_rows | tiles 2 * n_tiles]:
 * the work split of the rows (lmx_cub_map_stage) travels with it, derived from seq and pos only, so
 * rope_qk_store and attention of a step build the same array. */
#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"

#include <stdlib.h>

#include "util/error.h"

lmx_status lmx_cub_stage_upload(cuda_backend *c, cub_stage *s, const int32_t *src, int n, const int32_t **d_out) {
    if (n < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: staging %d elements", n);
    if (n > s->cap) {
        int cap = n < 256 ? 256 : n;
        int32_t *d = NULL, *h = malloc((size_t)cap * sizeof *h);
        lmx_status st = h ? lmx_cuda_malloc((void **)&d, (size_t)cap * sizeof *d) : LMX_ERR_OUT_OF_MEMORY;
        if (st != LMX_OK) {
            free(h);
            return lmx_error(st, "cuda backend: a staged array of %d", n);
        }
        lmx_cuda_stream_sync(c->stream); /* the old array may still be read by queued kernels */
        lmx_cub_stage_free(s);
        s->d = d;
        s->h = h;
        s->cap = cap;
    }
    if (s->n != n || memcmp(s->h, src, (size_t)n * sizeof *src) != 0) {
        memcpy(s->h, src, (size_t)n * sizeof *src);
        s->n = n;
        lmx_status st = lmx_cuda_memcpy_h2d(s->d, s->h, (size_t)n * sizeof *src, c->stream);
        if (st != LMX_OK) {
            s->n = 0;
            return st;
        }
    }
    *d_out = s->d;
    return LMX_OK;
}

void lmx_cub_stage_free(cub_stage *s) {
    lmx_cuda_free(s->d);
    free(s->h);
    *s = (cub_stage){0};
}

/* table entries of logical blocks b0..b1 of row r: physical blocks inside the pool */
static lmx_status check_blocks(const lmx_kv_map *m, int r, int64_t b0, int64_t b1, int n_blocks) {
    const int32_t *tab = m->tables + (size_t)r * (size_t)m->stride;
    for (int64_t b = b0; b <= b1; b++)
        if (tab[b] < 0 || tab[b] >= n_blocks)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "paged kv: sequence %d block %lld -> %d outside the pool of %d",
                             r, (long long)b, tab[b], n_blocks);
    return LMX_OK;
}

/* the rows' sequences and every table entry a row reads (lo..pos) or writes (pos) */
static lmx_status check_map(const lmx_kv_map *m, const int32_t *pos, int T, int capacity, int window) {
    const int bs = m->block_size;
    if (!m->tables || !m->seq || m->n_seqs < 1 || m->stride < 1 || bs < 1 || bs > 65536 || (bs & (bs - 1)) ||
        capacity < bs)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "paged kv: %d sequences, stride %d, block size %d, capacity %d",
                         m->n_seqs, m->stride, bs, capacity);
    const int n_blocks = capacity / bs;
    for (int t = 0; t < T; t++) {
        const int r = m->seq[t];
        if (r < 0 || r >= m->n_seqs || pos[t] < 0 || pos[t] / bs >= m->stride)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "paged kv: row %d: sequence %d of %d, position %d (%d blocks)",
                             t, r, m->n_seqs, pos[t], m->stride);
        int64_t lo = window > 0 ? (int64_t)pos[t] - window + 1 : 0;
        if (lo < 0) lo = 0;
        /* the next row of the same run only adds position pos[t] (its lo did not fall) */
        const bool cont = t > 0 && m->seq[t - 1] == r && pos[t - 1] + 1 == pos[t];
        LMX_BACKEND_TRY(check_blocks(m, r, cont ? pos[t] / bs : lo / bs, pos[t] / bs, n_blocks));
    }
    return LMX_OK;
}

lmx_status lmx_cub_map_stage(cuda_backend *c, const lmx_kv_map *m, const int32_t *pos, int T, int capacity,
                             int window, lmx_cuda_kv_map *dm, int64_t *decode_len) {
    LMX_BACKEND_TRY(check_map(m, pos, T, capacity, window));
    const size_t n_tab = (size_t)m->n_seqs * (size_t)m->stride;
    const size_t need = (size_t)T * 4 + n_tab; /* seq, rows, tiles (at most one per row: 2 ints) */
    if (need > (size_t)INT32_MAX) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "paged kv: a map of %zu entries", need);
    if ((int)need > c->map_tmp_cap) {
        int32_t *h = realloc(c->map_tmp, need * sizeof *h);
        if (!h) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "paged kv: a map of %zu entries", need);
        c->map_tmp = h;
        c->map_tmp_cap = (int)need;
    }
    int32_t *a = c->map_tmp;
    memcpy(a, m->seq, (size_t)T * sizeof *a);
    memcpy(a + T, m->tables, n_tab * sizeof *a);
    int32_t *rows = a + T + n_tab;
    int n_rows = 0, n_tiles = 0;
    int64_t dlen = 0;
    /* runs first into rows[] (short runs) and a tile list written after them */
    int32_t *tiles = rows + T; /* room for T rows; tiles are moved down behind the rows below */
    for (int t0 = 0; t0 < T;) {
        int t1 = t0 + 1;
        while (t1 < T && m->seq[t1] == m->seq[t0] && pos[t1] == pos[t1 - 1] + 1) t1++;
        if (t1 - t0 >= LMX_CUDA_PAGED_TILE_MIN) {
            for (int r = t0; r < t1; r += 64) {
                tiles[2 * n_tiles] = r;
                tiles[2 * n_tiles + 1] = t1 - r < 64 ? t1 - r : 64;
                n_tiles++;
            }
        } else {
            for (int r = t0; r < t1; r++) {
                rows[n_rows++] = r;
                int64_t len = window > 0 && pos[r] + 1 > window ? window : (int64_t)pos[r] + 1;
                if (len > dlen) dlen = len;
            }
        }
        t0 = t1;
    }
    memmove(rows + n_rows, tiles, (size_t)n_tiles * 2 * sizeof *a);
    const int n = T + (int)n_tab + n_rows + 2 * n_tiles;
    const int32_t *d;
    LMX_BACKEND_TRY(lmx_cub_stage_upload(c, &c->map, a, n, &d));
    *dm = (lmx_cuda_kv_map){.tables = d + T, .seq = d, .stride = m->stride, .rows = n_rows ? d + T + n_tab : NULL,
                            .n_rows = n_rows, .tiles = n_tiles ? d + T + n_tab + n_rows : NULL, .n_tiles = n_tiles};
    while ((1 << dm->block_shift) < m->block_size) dm->block_shift++;
    *decode_len = dlen;
    return LMX_OK;
}

#else
typedef int lmx_cuda_backend_stage_unused; /* keep the translation unit non-empty */
#endif
