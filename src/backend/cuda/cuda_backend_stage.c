/* cuda_backend_stage.c — host arrays of an op call (positions, token ids, a paged call's kv map)
 * and of a bracketed step (backend.h lmx_step_inputs) to device memory.
 *
 * The seam passes positions, ids and the paged KV map (backend.h lmx_kv_map) as host arrays read
 * during the call. They reach the kernels through grow-only device arrays (cub_stage): the host copy
 * of what the device array holds is compared with the new content, and only a different array is
 * uploaded (a pageable host-to-device copy on the backend stream, staged by the driver before the
 * call returns, so the host copy may change afterwards). A forward step passes the same positions and
 * map to rope_qk_store and attention of every layer: one upload per step.
 *
 * A paged call's map array is [seq T | tables n_seqs * stride | decode rows n_rows | tiles 2 * n_tiles]:
 * the work split of the rows (map_fill) travels with it, derived from seq and pos only, so
 * rope_qk_store and attention of a step build the same array.
 *
 * A bracketed step (step hooks) stages its inputs once, at step_begin, as one array [ids T | pos T |
 * map array]; its ops then take the device copies (lmx_cub_step_*) after checking that they were given
 * the step's host arrays, so nothing is uploaded between the hooks and a captured graph reads the
 * next step's values at the same addresses. */
#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"

#include <stdlib.h>

#include "util/error.h"

lmx_status lmx_cub_stage_upload(cuda_backend *c, cub_stage *s, const int32_t *src, int n, const int32_t **d_out) {
    if (n < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: staging %d elements", n);
    const bool same = s->n == n && memcmp(s->h, src, (size_t)n * sizeof *src) == 0;
    if (!same && capturing(c)) { /* a graph holds the array's address and replays without uploads */
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: a host array changed inside a captured step");
    }
    if (n > s->cap) {
        int cap = 256; /* powers of two: few replacements under the captured graphs while batches grow */
        while (cap < n && cap < (1 << 30)) cap <<= 1;
        int32_t *d = NULL, *h = malloc((size_t)cap * sizeof *h);
        lmx_status st = h ? lmx_cuda_malloc((void **)&d, (size_t)cap * sizeof *d) : LMX_ERR_OUT_OF_MEMORY;
        if (st != LMX_OK) {
            free(h);
            return lmx_error(st, "cuda backend: a staged array of %d", n);
        }
        lmx_cuda_stream_sync(c->stream); /* the old array may still be read by queued kernels */
        lmx_cub_stage_free(s);           /* graphs holding it mismatch at their next step (addresses are signed) */
        s->d = d;
        s->h = h;
        s->cap = cap;
    }
    if (!same) {
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

/* room for n ints in c->map_tmp */
static lmx_status tmp_room(cuda_backend *c, size_t n) {
    if (n > (size_t)INT32_MAX) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: a staged array of %zu", n);
    if ((int)n > c->map_tmp_cap) {
        int32_t *h = realloc(c->map_tmp, n * sizeof *h);
        if (!h) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend: a staged array of %zu entries", n);
        c->map_tmp = h;
        c->map_tmp_cap = (int)n;
    }
    return LMX_OK;
}

/* ints of map_fill's array at most: seq, rows, tiles (at most one per row: 2 ints) and the tables */
static size_t map_len_max(const lmx_kv_map *m, int T) { return (size_t)T * 4 + (size_t)m->n_seqs * (size_t)m->stride; }

/* The map array of rows pos[T] into a [map_len_max] ints: seq, tables, the decode rows (runs shorter
 * than LMX_CUDA_PAGED_TILE_MIN), the prefill tiles; returns its length, *n_rows / *n_tiles the split. */
static int map_fill(const lmx_kv_map *m, const int32_t *pos, int T, int32_t *a, int *n_rows_out, int *n_tiles_out) {
    const size_t n_tab = (size_t)m->n_seqs * (size_t)m->stride;
    memcpy(a, m->seq, (size_t)T * sizeof *a);
    memcpy(a + T, m->tables, n_tab * sizeof *a);
    int32_t *rows = a + T + n_tab;
    int n_rows = 0, n_tiles = 0;
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
            for (int r = t0; r < t1; r++) rows[n_rows++] = r;
        }
        t0 = t1;
    }
    memmove(rows + n_rows, tiles, (size_t)n_tiles * 2 * sizeof *a);
    *n_rows_out = n_rows;
    *n_tiles_out = n_tiles;
    return T + (int)n_tab + n_rows + 2 * n_tiles;
}

/* the kernels' view of a map array staged at d (map_fill's layout) */
static lmx_cuda_kv_map map_device(const int32_t *d, const lmx_kv_map *m, int T, int n_rows, int n_tiles) {
    const size_t n_tab = (size_t)m->n_seqs * (size_t)m->stride;
    lmx_cuda_kv_map dm = {.tables = d + T, .seq = d, .stride = m->stride, .rows = n_rows ? d + T + n_tab : NULL,
                          .n_rows = n_rows, .tiles = n_tiles ? d + T + n_tab + n_rows : NULL, .n_tiles = n_tiles};
    while ((1 << dm.block_shift) < m->block_size) dm.block_shift++;
    return dm;
}

/* the longest visible key range of a decode row (dm.rows, all rows when NULL) */
static int64_t decode_len(const int32_t *rows_h, int n_rows, const int32_t *pos, int window) {
    int64_t dlen = 0;
    for (int i = 0; i < n_rows; i++) {
        const int r = rows_h ? rows_h[i] : i;
        const int64_t len = window > 0 && pos[r] + 1 > window ? window : (int64_t)pos[r] + 1;
        if (len > dlen) dlen = len;
    }
    return dlen;
}

lmx_status lmx_cub_map_stage(cuda_backend *c, const lmx_kv_map *m, const int32_t *pos, int T, int capacity,
                             int window, lmx_cuda_kv_map *dm, int64_t *decode_len_out) {
    LMX_BACKEND_TRY(check_map(m, pos, T, capacity, window));
    LMX_BACKEND_TRY(tmp_room(c, map_len_max(m, T)));
    int n_rows, n_tiles;
    const int n = map_fill(m, pos, T, c->map_tmp, &n_rows, &n_tiles);
    const int32_t *d;
    LMX_BACKEND_TRY(lmx_cub_stage_upload(c, &c->map, c->map_tmp, n, &d));
    *dm = map_device(d, m, T, n_rows, n_tiles);
    /* the rows list sits behind seq and the tables in the host array just built */
    *decode_len_out = decode_len(c->map_tmp + T + (size_t)m->n_seqs * (size_t)m->stride, n_rows, pos, window);
    return LMX_OK;
}

/* ---- the inputs of a bracketed step ---- */

/* the smallest power of two (>= 64) covering every row's position + 1 */
static int64_t span_of(const int32_t *pos, int T) {
    int64_t mx = 0, span = 64;
    for (int t = 0; t < T; t++)
        if ((int64_t)pos[t] + 1 > mx) mx = (int64_t)pos[t] + 1;
    while (span < mx) span <<= 1;
    return span;
}

lmx_status lmx_cub_step_stage(cuda_backend *c, const lmx_step_inputs *in) {
    const int T = in->n_tokens;
    if (T < 1 || T > 65535 || !in->ids || !in->pos)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: step inputs of %d rows", T);
    for (int t = 0; t < T; t++)
        if (in->pos[t] < 0)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: step row %d at position %d", t, in->pos[t]);
    const lmx_kv_map *m = in->map;
    if (m && (!m->tables || !m->seq || m->n_seqs < 1 || m->stride < 1 || m->block_size < 1 ||
              (m->block_size & (m->block_size - 1))))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: step map of %d sequences, stride %d, block %d",
                         m->n_seqs, m->stride, m->block_size);
    for (int t = 0; m && t < T; t++)
        if (m->seq[t] < 0 || m->seq[t] >= m->n_seqs)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: step row %d: sequence %d of %d", t, m->seq[t],
                             m->n_seqs);
    LMX_BACKEND_TRY(tmp_room(c, 2 * (size_t)T + (m ? map_len_max(m, T) : 0)));
    int32_t *a = c->map_tmp;
    memcpy(a, in->ids, (size_t)T * sizeof *a);
    memcpy(a + T, in->pos, (size_t)T * sizeof *a);
    int n = 2 * T, n_rows = 0, n_tiles = 0;
    if (m) n += map_fill(m, in->pos, T, a + 2 * T, &n_rows, &n_tiles);
    const int32_t *d;
    LMX_BACKEND_TRY(lmx_cub_stage_upload(c, &c->step_stage, a, n, &d));
    cub_step_in *s = &c->step;
    *s = (cub_step_in){.in = *in, .d_ids = d, .d_pos = d + T};
    if (m) {
        s->map = *m;
        s->in.map = &s->map;
        s->dm = map_device(d + 2 * T, m, T, n_rows, n_tiles);
        s->span = span_of(in->pos, T);
    }
    return LMX_OK;
}

lmx_status lmx_cub_step_ids(cuda_backend *c, const int32_t *ids, int T, const int32_t **d_ids) {
    if (T != c->step.in.n_tokens || ids != c->step.in.ids) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: embed of other ids than the step's");
    }
    *d_ids = c->step.d_ids;
    return LMX_OK;
}

lmx_status lmx_cub_step_pos(cuda_backend *c, const int32_t *pos, int T, const int32_t **d_pos) {
    if (T != c->step.in.n_tokens || pos != c->step.in.pos) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: other positions than the step's");
    }
    *d_pos = c->step.d_pos;
    return LMX_OK;
}

lmx_status lmx_cub_step_map(cuda_backend *c, const lmx_kv_map *m, const int32_t *pos, int T, int capacity,
                            int window, lmx_cuda_kv_map *dm) {
    cub_step_in *s = &c->step;
    const lmx_kv_map *sm = s->in.map;
    if (!sm || m->tables != sm->tables || m->seq != sm->seq || m->n_seqs != sm->n_seqs || m->stride != sm->stride ||
        m->block_size != sm->block_size || T != s->in.n_tokens || pos != s->in.pos) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: another paged map than the step's");
    }
    bool seen = false;
    for (int i = 0; i < s->n_checked && !seen; i++) seen = s->checked[i][0] == capacity && s->checked[i][1] == window;
    if (!seen) {
        lmx_status st = check_map(m, pos, T, capacity, window);
        if (st != LMX_OK) {
            c->step_bad = true;
            return st;
        }
        if (s->n_checked < 4) {
            s->checked[s->n_checked][0] = capacity;
            s->checked[s->n_checked][1] = window;
            s->n_checked++;
        }
    }
    *dm = s->dm;
    return LMX_OK;
}

#else
typedef int lmx_cuda_backend_stage_unused; /* keep the translation unit non-empty */
#endif
