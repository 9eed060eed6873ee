/* cuda_backend_ops.c — the CUDA backend's compute ops over the kernels of cuda_kernels.h.
 *
 * Host-side positions, token ids and paged KV maps (the seam passes them on the host) are uploaded
 * into small device arrays that grow only when a longer batch arrives; an unchanged position array
 * or map (the same forward step calling rope_qk_store and attention for every layer) is not uploaded
 * again (cuda_backend_stage.c). Inside a bracketed step they are the step's inputs, staged once at
 * step_begin (lmx_cub_step_*).
 * Matmuls with T >= LMX_CUDA_GEMM_MIN_T rows use lmx_cuda_gemm_small for 4/8-bit weights up to
 * LMX_CUDA_SMALL_GEMM_MAX_T rows (batched decode steps), else lmx_cuda_gemm: cuBLASLt when the
 * library loads at run time, else the built-in tensor-core GEMM (all bf16 operands, fp32
 * accumulation); shorter ones (decode) lmx_cuda_gemv (fp32-exact; batch-1 q4/q8 on the tensor cores).
 * Attention: prefill through the tiled flash kernels, decode through the GQA-grouped kernel with the
 * fused split merge (cuda_attn_decode.cu); shapes those do not support use the split-K kernel.
 * Inside a bracketed step (cuda_backend_step.c) every op adds its arguments to the step's signature
 * and launches nothing while a captured graph replays it. */
#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"

#include <stdlib.h>

#include "util/error.h"

/* ---- host arrays to the device ---- */

/* the device positions of a call: inside a step the step's (staged at step_begin), else staged now */
static lmx_status call_pos(cuda_backend *c, const int32_t *pos, int T, const int32_t **d_out) {
    if (stepping(c)) return lmx_cub_step_pos(c, pos, T, d_out);
    return lmx_cub_stage_upload(c, &c->pos, pos, T, d_out);
}

static lmx_status grow_scratch(cuda_backend *c, void **buf, size_t *cap, size_t need, size_t elem, const char *what);

/* y (+)= x·Wᵀ over T rows: GEMV (few rows, fp32-exact), the few-row GEMM (4/8-bit weights, rows
 * LMX_CUDA_GEMM_MIN_T..LMX_CUDA_SMALL_GEMM_MAX_T: weights read once per 64 rows), else the prefill GEMM;
 * a weight uploaded with fp32_x (a router: few rows) always through the GEMV */
static lmx_status matmul_rows(cuda_backend *c, const lmx_bweight *w, const float *xp, int T, float *y, bool acc) {
    if (w->kind == LMX_WEIGHT_QUANT && lmx_quant_mode_is_fp(w->mode)) { /* mxfp4 / mxfp8 / nvfp4 (cuda_mx.cu) */
        const void *old = c->mx_scratch;
        lmx_status st = lmx_cuda_mx_matmul(&w->mx, xp, y, T, acc, &c->mx_scratch, &c->mx_scratch_bytes, c->stream);
        if (c->mx_scratch != old) lmx_cub_graphs_clear(c); /* they may hold the replaced scratch */
        return st;
    }
    if (!w->fp32_x && T >= LMX_CUDA_GEMM_MIN_T && w->cols % 32 == 0 && ((uintptr_t)xp & 15) == 0) {
        if (T <= LMX_CUDA_SMALL_GEMM_MAX_T && lmx_cuda_gemm_small_supported(&w->m)) {
            /* room for a whole pass of 64 rows whatever T: grown by the larger matrices of the first
             * such step only (a captured step keeps the workspace it has: its warm step grew it) */
            const size_t need = lmx_cuda_gemm_small_workspace(&w->m, LMX_CUDA_SMALL_GEMM_MAX_T);
            if (need > c->gws_cap)
                LMX_BACKEND_TRY(
                    grow_scratch(c, (void **)&c->d_gws, &c->gws_cap, need, sizeof(float), "gemm workspace"));
            return lmx_cuda_gemm_small(&w->m, xp, y, T, acc, c->d_gws, c->gws_cap, c->stream);
        }
        return lmx_cuda_gemm(&w->m, xp, y, T, acc, c->stream);
    }
    return lmx_cuda_gemv(&w->m, xp, y, T, acc, c->stream);
}

/* ---- ops ---- */

lmx_status lmx_cub_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                            lmx_buf *y) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_matmul("cuda", w->kind, w->rows, w->cols, x->n, x_off, T, y->n));
    if (stepping(c)) {
        SIGI(2); SIGP(w->dw); SIGP(w->dbias); SIGP(x->d + x_off); SIGP(y->d); SIGI(T); SIGI(w->rows);
        SIGP(c->mx_scratch);
        if (replaying(c)) return LMX_OK;
    }
    return matmul_rows(c, w, x->d + x_off, T, y->d, false);
}

lmx_status lmx_cub_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale,
                           lmx_buf *y) {
    cuda_backend *c = CB(be);
    if (w->kind == LMX_WEIGHT_VECTOR) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "embed with a vector weight");
    CHECK_RANGE(y, 0, (size_t)T * (size_t)w->cols, "embed y");
    LMX_BACKEND_TRY(lmx_backend_check_embed_ids(ids, T, w->rows));
    const int32_t *d;
    if (stepping(c)) { /* the step's ids, staged at step_begin */
        LMX_BACKEND_TRY(lmx_cub_step_ids(c, ids, T, &d));
        SIGI(3); SIGP(w->dw); SIGI(fbits(scale)); SIGP(y->d); SIGP(d); SIGI(T);
        if (replaying(c)) return LMX_OK;
    } else {
        LMX_BACKEND_TRY(lmx_cub_stage_upload(c, &c->ids, ids, T, &d));
    }
    if (w->kind == LMX_WEIGHT_QUANT && lmx_quant_mode_is_fp(w->mode))
        return lmx_cuda_mx_embed(&w->mx, d, T, scale, y->d, c->stream);
    return lmx_cuda_embed(&w->m, d, T, scale, y->d, c->stream);
}

lmx_status lmx_cub_rmsnorm(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w,
                             float eps, bool plus_one) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_rmsnorm("cuda", x->n, y->n, rows, dim, w->kind, w->cols));
    if (stepping(c)) {
        SIGI(4); SIGP(x->d); SIGP(y->d); SIGI(rows); SIGI(dim); SIGP(w->vec); SIGI(fbits(eps)); SIGI(plus_one);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_rmsnorm(x->d, w->vec, LMX_DTYPE_F32, eps, plus_one, y->d, rows, dim, c->stream);
}



/* Replaces a scratch array (device, zero-filled: the decode counters must start at zero) by one of
 * `need` elements of `elem` bytes. The old array is retired, not freed (until the backend goes): the
 * captured graphs that hold it stay valid (each was captured with an array its own launches fit), so
 * a batch that grows does not cost the smaller buckets their graphs. Nothing is allocated inside a
 * captured step (its warm step grew what it needs). */
static lmx_status grow_scratch(cuda_backend *c, void **buf, size_t *cap, size_t need, size_t elem, const char *what) {
    if (capturing(c)) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: %s growth inside a captured step", what);
    }
    if (*buf && c->n_retired == c->retired_cap) {
        const int cap2 = c->retired_cap ? 2 * c->retired_cap : 16;
        void **r = realloc(c->retired, (size_t)cap2 * sizeof *r);
        if (!r) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "cuda backend: %s growth", what);
        c->retired = r;
        c->retired_cap = cap2;
    }
    void *d = NULL;
    lmx_status st = lmx_cuda_malloc(&d, need * elem);
    if (st == LMX_OK) st = lmx_cuda_memset(d, 0, need * elem, c->stream);
    if (st != LMX_OK) {
        lmx_cuda_free(d);
        return st;
    }
    if (*buf) c->retired[c->n_retired++] = *buf;
    *buf = d;
    *cap = need;
    return LMX_OK;
}

/* the decode attention's workspace and counters for `rows` query rows, grown to a power of two of
 * rows (a few replacements while the batch grows) */
static lmx_status decode_scratch(cuda_backend *c, const lmx_cuda_attn *a, int rows) {
    int r = 1;
    while (r < rows) r <<= 1;
    const size_t need_cnt = lmx_cuda_attention_decode_counters(a, r), need = lmx_cuda_attention_workspace_floats(a, r);
    if (need_cnt > c->cnt_cap)
        LMX_BACKEND_TRY(grow_scratch(c, (void **)&c->d_cnt, &c->cnt_cap, need_cnt, sizeof(int32_t), "counter"));
    if (need > c->ws_cap)
        LMX_BACKEND_TRY(grow_scratch(c, (void **)&c->d_ws, &c->ws_cap, need, sizeof(float), "workspace"));
    return LMX_OK;
}

/* the signature of an attention call inside a step: every launch argument */
static void attention_sig(cuda_backend *c, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc, const lmx_buf *out,
                          const lmx_attn_params *p, const int32_t *dp, int64_t max_len) {
    SIGI(7); SIGP(q->d); SIGP(kc->d); SIGP(vc->d); SIGP(out->d); SIGI(p->n_tokens); SIGI(p->n_heads);
    SIGI(p->n_kv_heads); SIGI(p->head_dim); SIGI(p->capacity); SIGI(p->window); SIGI(fbits(p->scale));
    SIGI(fbits(p->softcap)); SIGP(dp); SIGI(max_len); /* the workspace: a graph keeps the one it was captured with */
    SIGP(p->sinks ? p->sinks->vec : NULL);
}

static void map_sig(cuda_backend *c, const lmx_cuda_kv_map *dm) {
    SIGP(dm->tables); SIGP(dm->seq); SIGI(dm->stride); SIGI(dm->block_shift); SIGP(dm->rows); SIGI(dm->n_rows);
    SIGP(dm->tiles); SIGI(dm->n_tiles);
}

/* the paged path of attention: decode rows through the grouped decode kernel, runs of one sequence
 * (a prefill chunk) through the tiled prefill kernels, each launch over its part of the rows. Inside a
 * step the decode grid covers the step's length class (c->step.span) instead of the longest row: the
 * same launch for every step of that class, and each row uses the splits of its own length, so the
 * results are those of the exact grid. */
static lmx_status attention_paged(cuda_backend *c, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc,
                                  lmx_buf *out, const lmx_attn_params *p, const int32_t *pos) {
    if (kc->dt != vc->dt || q->dt != LMX_DTYPE_F32 || out->dt != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: caches of different element types or a cache as q/out");
    lmx_cuda_kv_map dm;
    lmx_cuda_attn a = {.n_heads = p->n_heads, .n_kv_heads = p->n_kv_heads, .head_dim = p->head_dim,
                       .capacity = p->capacity, .kv_dtype = kc->dt, .scale = p->scale,
                       .softcap = p->softcap, .window = p->window, .map = &dm,
                       .sinks = p->sinks ? p->sinks->vec : NULL};
    if (!lmx_cuda_attention_decode_supported(&a))
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: paged attention with head_dim %d, kv type %d",
                         p->head_dim, (int)kc->dt);
    const int T = p->n_tokens;
    int64_t dlen = 0;
    const int32_t *dp;
    if (stepping(c)) {
        LMX_BACKEND_TRY(lmx_cub_step_map(c, p->map, pos, T, p->capacity, p->window, &dm));
        LMX_BACKEND_TRY(lmx_cub_step_pos(c, pos, T, &dp));
        dlen = c->step.span;
    } else {
        LMX_BACKEND_TRY(lmx_cub_map_stage(c, p->map, pos, T, p->capacity, p->window, &dm, &dlen));
        LMX_BACKEND_TRY(lmx_cub_stage_upload(c, &c->pos, pos, T, &dp));
    }
    if (dm.n_tiles > 0 && !lmx_cuda_attention_prefill_supported(&a)) { /* every row by the decode kernel */
        dm.rows = NULL;
        dm.n_rows = T;
        dm.tiles = NULL;
        dm.n_tiles = 0;
        if (!stepping(c)) {
            dlen = 0;
            for (int t = 0; t < T; t++) {
                const int64_t len = p->window > 0 && pos[t] + 1 > p->window ? p->window : (int64_t)pos[t] + 1;
                if (len > dlen) dlen = len;
            }
        }
    }
    lmx_cuda_kv_map tm = dm, rm = dm; /* the prefill tiles' launch, the decode rows' launch */
    tm.rows = NULL;
    tm.n_rows = 0;
    rm.tiles = NULL;
    rm.n_tiles = 0;
    if (rm.n_rows > 0) LMX_BACKEND_TRY(decode_scratch(c, &a, rm.n_rows));
    if (stepping(c)) {
        attention_sig(c, q, kc, vc, out, p, dp, dlen);
        map_sig(c, &dm);
        if (replaying(c)) return LMX_OK;
    }
    if (tm.n_tiles > 0) {
        a.map = &tm;
        LMX_BACKEND_TRY(lmx_cuda_attention_prefill(&a, q->d, kc->d, vc->d, dp, T, out->d, c->stream));
    }
    if (rm.n_rows == 0) return LMX_OK;
    a.map = &rm;
    return lmx_cuda_attention_decode(&a, q->d, kc->d, vc->d, dp, T, dlen, c->d_ws, c->d_cnt, out->d, c->stream);
}

lmx_status lmx_cub_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc,
                               lmx_buf *out, const lmx_attn_params *p, const int32_t *pos) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_attention("cuda", p, q->n, out->n, kc->n, vc->n,
                                                p->sinks ? p->sinks->kind : LMX_WEIGHT_VECTOR,
                                                p->sinks ? p->sinks->cols : 0));
    if (p->map) return attention_paged(c, q, kc, vc, out, p, pos);
    /* positions inside the cache; beyond it only on a sliding layer whose ring (position j in slot
     * j % capacity) holds the window plus this call's rows */
    const bool ring_ok = p->window > 0 && (int64_t)p->window + p->n_tokens - 1 <= p->capacity;
    for (int t = 0; t < p->n_tokens; t++)
        if (pos[t] < 0 || (pos[t] >= p->capacity && !ring_ok))
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: position %d outside the cache of %d (window %d)",
                             pos[t], p->capacity, p->window);
    if (kc->dt != vc->dt || q->dt != LMX_DTYPE_F32 || out->dt != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "attention: caches of different element types or a cache as q/out");
    lmx_cuda_attn a = {.n_heads = p->n_heads, .n_kv_heads = p->n_kv_heads, .head_dim = p->head_dim,
                       .capacity = p->capacity, .kv_dtype = kc->dt, .scale = p->scale,
                       .softcap = p->softcap, .window = p->window, .sinks = p->sinks ? p->sinks->vec : NULL};
    const int32_t *dp;
    LMX_BACKEND_TRY(call_pos(c, pos, p->n_tokens, &dp));
    /* prefill: tiled flash attention (the split-K kernel per query row where it does not apply) */
    if (p->n_tokens >= 2 && lmx_cuda_attention_prefill_supported(&a)) {
        if (stepping(c)) {
            attention_sig(c, q, kc, vc, out, p, dp, 0);
            if (replaying(c)) return LMX_OK;
        }
        return lmx_cuda_attention_prefill(&a, q->d, kc->d, vc->d, dp, p->n_tokens, out->d, c->stream);
    }
    /* decode: the GQA-grouped kernel with the fused merge (the split-K kernel + merge launch where it
     * does not apply) */
    const bool grouped = lmx_cuda_attention_decode_supported(&a);
    LMX_BACKEND_TRY(decode_scratch(c, &a, p->n_tokens));
    /* the grid is sized for the whole cache (each row uses the splits its own length needs): the
     * same launch for every position, as a captured graph requires */
    if (stepping(c)) {
        attention_sig(c, q, kc, vc, out, p, dp, p->capacity);
        SIGI(grouped);
        if (replaying(c)) return LMX_OK;
    }
    if (grouped)
        return lmx_cuda_attention_decode(&a, q->d, kc->d, vc->d, dp, p->n_tokens, (int64_t)p->capacity, c->d_ws,
                                         c->d_cnt, out->d, c->stream);
    return lmx_cuda_attention(&a, q->d, kc->d, vc->d, dp, p->n_tokens, (int64_t)p->capacity, c->d_ws, out->d,
                              c->stream);
}

lmx_status lmx_cub_act_mul(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(gate, 0, n, "act_mul gate");
    CHECK_RANGE(up, 0, n, "act_mul up");
    if (stepping(c)) {
        SIGI(8); SIGP(gate->d); SIGP(up->d); SIGI(n); SIGI(act);
        if (replaying(c)) return LMX_OK;
    }
    if (act == LMX_BACT_SILU_MUL) return lmx_cuda_swiglu(gate->d, up->d, gate->d, (int64_t)n, c->stream);
    if (act == LMX_BACT_GELU_TANH_MUL) return lmx_cuda_geglu_tanh(gate->d, up->d, gate->d, (int64_t)n, c->stream);
    if (act == LMX_BACT_SWIGLU_OAI)
        return lmx_cuda_swiglu_oai(gate->d, up->d, gate->d, (int64_t)n, LMX_SWIGLU_OAI_ALPHA, LMX_SWIGLU_OAI_LIMIT,
                                   c->stream);
    return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: activation %d", (int)act);
}

/* prefill through a fused gate|up weight: gu [T, 2*inter] -> out [T, inter] (lmx_cuda_act_mul_split) */
lmx_status lmx_cub_act_mul_split(lmx_backend *be, const lmx_buf *gu, int T, int inter, lmx_act_kind act,
                                   lmx_buf *out) {
    cuda_backend *c = CB(be);
    if (T < 1 || inter < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "act_mul_split: T %d inter %d", T, inter);
    CHECK_RANGE(gu, 0, (size_t)T * 2 * (size_t)inter, "act_mul_split gu");
    CHECK_RANGE(out, 0, (size_t)T * (size_t)inter, "act_mul_split out");
    const uintptr_t g0 = (uintptr_t)gu->d, o0 = (uintptr_t)out->d;
    if (g0 < o0 + (size_t)T * (size_t)inter * sizeof(float) && o0 < g0 + (size_t)T * 2 * (size_t)inter * sizeof(float))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: act_mul_split: out overlaps gu");
    if (act != LMX_BACT_SILU_MUL && act != LMX_BACT_GELU_TANH_MUL)
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: activation %d", (int)act);
    if (stepping(c)) {
        SIGI(13); SIGP(gu->d); SIGP(out->d); SIGI(T); SIGI(inter); SIGI(act);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_act_mul_split(gu->d, out->d, T, inter, act == LMX_BACT_SILU_MUL ? 0 : 1, c->stream);
}

lmx_status lmx_cub_add(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(x, 0, n, "add x");
    CHECK_RANGE(y, 0, n, "add y");
    if (stepping(c)) {
        SIGI(9); SIGP(x->d); SIGP(y->d); SIGI(n);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_add(x->d, y->d, (int64_t)n, c->stream);
}

lmx_status lmx_cub_softcap(lmx_backend *be, lmx_buf *x, size_t n, float cap) {
    cuda_backend *c = CB(be);
    CHECK_RANGE(x, 0, n, "softcap x");
    if (stepping(c)) {
        SIGI(10); SIGP(x->d); SIGI(n); SIGI(fbits(cap));
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_softcap(x->d, (int64_t)n, cap, c->stream);
}

/* ---- fused ops (backend.h; kernels in cuda_fused.cu and the GEMV/GEMM accumulate mode) ---- */

/* y += x·Wᵀ + bias: lmx_cuda_gemv / lmx_cuda_gemm with accumulate (every path — scalar and
 * tensor-core GEMV, the mma.sync GEMM, cuBLASLt with beta = 1 — adds into y) */
lmx_status lmx_cub_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                                lmx_buf *y) {
    cuda_backend *c = CB(be);
    LMX_BACKEND_TRY(lmx_backend_check_matmul("cuda", w->kind, w->rows, w->cols, x->n, x_off, T, y->n));
    if (x == y || x->d == y->d) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: matmul_add with y == x");
    if (stepping(c)) {
        SIGI(11); SIGP(w->dw); SIGP(w->dbias); SIGP(x->d + x_off); SIGP(y->d); SIGI(T); SIGP(c->mx_scratch);
        if (replaying(c)) return LMX_OK;
    }
    return matmul_rows(c, w, x->d + x_off, T, y->d, true);
}

/* [per-head norm], RoPE of q and k, k/v into the cache: one launch (lmx_cuda_rope_qk_store) */
lmx_status lmx_cub_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc,
                                   lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos) {
    cuda_backend *c = CB(be);
    if (!p->inv_freq) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: no inv_freq");
    LMX_BACKEND_TRY(lmx_backend_check_rope_qk_store(
        "cuda", p, q->n, k->n, v->n, kc->n, vc->n, p->inv_freq->kind, p->inv_freq->cols,
        p->q_norm ? p->q_norm->kind : LMX_WEIGHT_VECTOR, p->q_norm ? p->q_norm->cols : 0,
        p->k_norm ? p->k_norm->kind : LMX_WEIGHT_VECTOR, p->k_norm ? p->k_norm->cols : 0));
    if (p->n_tokens > p->capacity && !p->map)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: %d rows into a ring of %d", p->n_tokens,
                         p->capacity);
    lmx_cuda_kv_map dm;
    for (int t = 0; t < p->n_tokens; t++) /* position j goes to slot j % capacity (a ring on sliding layers) */
        if (pos[t] < 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: position %d", pos[t]);
    /* kv_buf_alloc caches: fp16, or fp32 by option; both caches of one type */
    if (kc->dt != vc->dt || q->dt != LMX_DTYPE_F32 || k->dt != LMX_DTYPE_F32 || v->dt != LMX_DTYPE_F32)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "rope_qk_store: k/v caches of different types or a cache as q/k/v");
    lmx_cuda_attn a = {.n_heads = p->n_heads, .n_kv_heads = p->n_kv_heads, .head_dim = p->head_dim,
                       .capacity = p->capacity, .kv_dtype = kc->dt, .map = p->map ? &dm : NULL};
    if (p->map && stepping(c)) {
        LMX_BACKEND_TRY(lmx_cub_step_map(c, p->map, pos, p->n_tokens, p->capacity, 0, &dm));
    } else if (p->map) {
        int64_t dlen;
        LMX_BACKEND_TRY(lmx_cub_map_stage(c, p->map, pos, p->n_tokens, p->capacity, 0, &dm, &dlen));
    }
    lmx_cuda_qk_rope r = {.rot_dims = p->rot_dim, .inv_freq = p->inv_freq->vec, .mscale = p->mscale,
                          .q_norm = p->q_norm ? p->q_norm->vec : NULL, .k_norm = p->k_norm ? p->k_norm->vec : NULL,
                          .eps = p->eps, .norm_plus_one = p->norm_plus_one, .q_stride = (int64_t)p->q_stride,
                          .k_stride = (int64_t)p->k_stride, .v_stride = (int64_t)p->v_stride};
    float *qp = q->d + p->q_off, *kp = k->d + p->k_off;
    const float *vp = v->d + p->v_off;
    const int32_t *dp;
    LMX_BACKEND_TRY(call_pos(c, pos, p->n_tokens, &dp));
    if (stepping(c)) {
        SIGI(12); SIGP(qp); SIGP(kp); SIGP(vp); SIGP(kc->d); SIGP(vc->d); SIGI(p->q_stride); SIGI(p->k_stride);
        SIGI(p->v_stride); SIGI(p->n_tokens); SIGI(p->n_heads); SIGI(p->n_kv_heads); SIGI(p->head_dim);
        SIGI(p->rot_dim); SIGI(p->capacity); SIGP(r.inv_freq); SIGI(fbits(p->mscale)); SIGP(r.q_norm);
        SIGP(r.k_norm); SIGI(fbits(p->eps)); SIGI(p->norm_plus_one); SIGP(dp);
        if (p->map) map_sig(c, &dm);
        if (replaying(c)) return LMX_OK;
    }
    return lmx_cuda_rope_qk_store(&a, &r, qp, kp, vp, kc->d, vc->d, dp, p->n_tokens, c->stream);
}

#else
typedef int lmx_cuda_backend_ops_unused; /* keep the translation unit non-empty */
#endif
