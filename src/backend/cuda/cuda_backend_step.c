/* cuda_backend_step.c — bracketed steps as CUDA graphs (the step hooks of backend.h) and sampling on
 * the device (sample / sample_result, sample_rows / sample_rows_result).
 *
 * A graph slot belongs to (key, variant, rows, length class): one sequence's decode step (its KV
 * cache as key, one row), or a pool's batched decode step (the pool as key, the rows padded to a
 * bucket by the model, and for paged steps the decode attention's grid length, c->step.span). The
 * first step of a slot runs eagerly and records a signature (a hash of every op's arguments); the
 * second is captured into a graph; later ones only stage their inputs (lmx_step_inputs: token ids,
 * positions, the paged map, one upload at step_begin into device memory the captured kernels read)
 * and launch the graph. The kernels take every per-step length from that memory (rope and KV slots
 * from the positions and block tables; attention's grid is sized for the slot's length class and
 * each row derives its split count from its own position), so the launches are replay-invariant. A
 * signature mismatch (other buffers, shapes, weights, a replaced input array) or any capture error
 * makes the caller redo the step eagerly and the graph is recaptured; after GRAPH_MAX_FAILS failed
 * captures a slot's steps stay eager. Workspaces that grow keep their old arrays for the graphs
 * holding them (cuda_backend_ops.c grow_scratch). GRAPH_SLOTS slots, the least recently used one
 * replaced. Graphs are on unless lmx_cuda_options.graphs is false (LMX_CUDA_GRAPH=0).
 * Batched sampling inside a captured step: the graph holds the greedy choice of every row (one
 * launch, the ids copied to pinned memory); rows with other parameters are sampled by the single-row
 * samplers right after the graph launch (step_end), so the graph does not depend on the rows'
 * parameters. */
#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"

#include "util/error.h"
#include "util/log.h"

#include <limits.h>
#include <stdlib.h>

/* every graph goes (they reference a replaced array); the slots warm up again at their next step */
void lmx_cub_graphs_clear(cuda_backend *c) {
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        lmx_cuda_graph_destroy(c->slots[i].exec);
        c->slots[i].exec = NULL;
        c->slots[i].sig = 0;
    }
}


/* ---- sampling on the device (backend.h: sample / sample_result) ---- */

lmx_status lmx_cub_sample(lmx_backend *be, const lmx_buf *logits, int vocab, const lmx_sample_args *a) {
    cuda_backend *c = CB(be);
    if (!a || vocab <= 0 || a->sampling.repetition_context < 0 || a->n_window < 0 || a->n_window > a->sampling.repetition_context)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample: bad arguments (vocab %d)", vocab);
    CHECK_RANGE(logits, 0, (size_t)vocab, "sample logits");
    if (c->samp_pending) { /* the previous result was never read: its work may still use the staging */
        lmx_status st = lmx_cuda_stream_sync(c->stream);
        if (st != LMX_OK) return st;
        c->samp_pending = false;
    }
    const bool pen = a->sampling.repetition_penalty != 0.0f && a->sampling.repetition_penalty != 1.0f;
    const int wcap = pen ? a->sampling.repetition_context : 0;
    lmx_cuda_sample_params p = {.vocab = vocab, .sampling = a->sampling};
    c->samp_host = !lmx_cuda_sample_supported(&p);
    if (c->samp_host) return LMX_OK; /* nothing on the device: the caller samples on the host */
    if (!c->sampler || lmx_cuda_sampler_vocab(c->sampler) != vocab || lmx_cuda_sampler_window_cap(c->sampler) < wcap) {
        if (capturing(c)) {
            c->step_bad = true;
            return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: sampler growth inside a captured step");
        }
        lmx_cuda_sampler *ns = NULL;
        lmx_status st = lmx_cuda_sampler_create(vocab, wcap, &ns);
        if (st != LMX_OK) return st;
        lmx_cuda_stream_sync(c->stream);
        if (c->mode == STEP_NONE) lmx_cub_graphs_clear(c); /* captured graphs reference the old sampler */
        lmx_cuda_sampler_destroy(c->sampler);
        c->sampler = ns;
    }
    lmx_status st = lmx_cuda_sample_set_input(c->sampler, a->u, pen ? a->window : NULL, pen ? a->n_window : 0);
    if (st != LMX_OK) return st;
    if (stepping(c)) {
        SIGI(12); SIGP(logits->d); SIGP(c->sampler); SIGI(vocab); SIGI(fbits(a->sampling.temperature)); SIGI(fbits(a->sampling.top_p));
        SIGI(fbits(a->sampling.min_p)); SIGI(a->sampling.top_k); SIGI(fbits(a->sampling.repetition_penalty)); SIGI(wcap);
        c->samp_pending = true;
        if (replaying(c)) return LMX_OK;
    }
    c->samp_pending = true;
    return lmx_cuda_sample_enqueue(c->sampler, &p, logits->d, c->stream);
}

lmx_status lmx_cub_sample_result(lmx_backend *be, int32_t *token) {
    cuda_backend *c = CB(be);
    *token = -1;
    if (c->samp_host) {
        c->samp_host = false;
        return LMX_OK;
    }
    if (!c->samp_pending || !c->sampler) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample_result: no sample");
    lmx_status st = lmx_cuda_stream_sync(c->stream);
    c->samp_pending = false;
    if (st != LMX_OK) return st;
    *token = lmx_cuda_sample_read(c->sampler);
    return LMX_OK;
}

/* ---- batched sampling (backend.h: sample_rows / sample_rows_result) ----
 * Rows with temperature 0 and no repetition penalty ("plain greedy") go to one lmx_cuda_greedy_rows
 * launch over their row list; every other row runs the single-row sampler kernels on a sampler of
 * its own (the samplers' pinned staging holds each row's inputs until its work ran); rows the
 * device does not sample (lmx_cuda_sample_supported) give -1 without device work. Inside a captured
 * or replayed step the greedy launch covers every row (the graph's part) and the other rows wait for
 * step_end (lmx_cub_rows_later_run). */

#define ROWS_HOST INT32_MIN

void lmx_cub_rows_free(cuda_backend *c) {
    for (int i = 0; i < c->rows_cap; i++) lmx_cuda_sampler_destroy(c->rsamp[i]);
    free(c->rsamp);
    lmx_cub_stage_free(&c->grows);
    lmx_cuda_free(c->d_rres);
    lmx_cuda_free_host(c->h_rres);
    free(c->h_rkind);
    free(c->later.a);
    c->rsamp = NULL;
    c->d_rres = c->h_rres = c->h_rkind = NULL;
    c->later = (cub_rows_later){0};
    c->rows_cap = 0;
}

static lmx_status rows_grow(cuda_backend *c, int n) {
    if (n <= c->rows_cap) return LMX_OK;
    if (capturing(c)) { /* a captured graph holds the arrays' addresses */
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda sample_rows: growth to %d rows inside a captured step", n);
    }
    int cap = n < 64 ? 64 : n;
    lmx_cuda_sampler **rs = calloc((size_t)cap, sizeof *rs);
    int32_t *kind = malloc((size_t)cap * sizeof *kind), *d = NULL, *h = NULL;
    lmx_sample_args *la = malloc((size_t)cap * sizeof *la);
    lmx_status st = rs && kind && la ? lmx_cuda_malloc((void **)&d, (size_t)cap * sizeof *d) : LMX_ERR_OUT_OF_MEMORY;
    if (st == LMX_OK) st = lmx_cuda_malloc_host((void **)&h, (size_t)cap * sizeof *h);
    if (st != LMX_OK) {
        free(rs);
        free(kind);
        free(la);
        lmx_cuda_free(d);
        return lmx_error(st, "cuda sample_rows: state for %d rows", n);
    }
    lmx_status sst = lmx_cuda_stream_sync(c->stream); /* no earlier batch may still use the old arrays */
    if (c->rows_cap) memcpy(rs, c->rsamp, (size_t)c->rows_cap * sizeof *rs);
    free(c->rsamp);
    lmx_cuda_free(c->d_rres);
    lmx_cuda_free_host(c->h_rres);
    free(c->h_rkind);
    free(c->later.a);
    c->rsamp = rs;
    c->h_rkind = kind;
    c->d_rres = d;
    c->h_rres = h;
    c->later.a = la;
    c->rows_cap = cap;
    return sst;
}

/* one non-greedy row on sampler k (created or replaced when vocab or the window grew) */
static lmx_status rows_sample_one(cuda_backend *c, int k, const float *logits, int vocab, const lmx_sample_args *a) {
    const bool pen = a->sampling.repetition_penalty != 0.0f && a->sampling.repetition_penalty != 1.0f;
    const int wcap = pen ? a->sampling.repetition_context : 0;
    lmx_cuda_sampler *s = c->rsamp[k];
    if (!s || lmx_cuda_sampler_vocab(s) != vocab || lmx_cuda_sampler_window_cap(s) < wcap) {
        lmx_cuda_sampler *ns = NULL;
        LMX_BACKEND_TRY(lmx_cuda_sampler_create(vocab, wcap, &ns));
        lmx_cuda_sampler_destroy(s); /* idle: the previous batch was synchronized */
        c->rsamp[k] = s = ns;
    }
    lmx_cuda_sample_params p = {.vocab = vocab, .sampling = a->sampling};
    LMX_BACKEND_TRY(lmx_cuda_sample_set_input(s, a->u, pen ? a->window : NULL, pen ? a->n_window : 0));
    return lmx_cuda_sample_enqueue(s, &p, logits, c->stream);
}

/* what row r needs: -1 the host, 0 the plain greedy choice, 1 a sampler */
static int row_need(const lmx_sample_args *a, int vocab) {
    const lmx_sampling *sp = &a->sampling;
    lmx_cuda_sample_params p = {.vocab = vocab, .sampling = *sp};
    const bool pen = sp->repetition_penalty != 0.0f && sp->repetition_penalty != 1.0f;
    if (!lmx_cuda_sample_supported(&p)) return -1;
    return sp->temperature == 0.0f && !pen ? 0 : 1;
}

/* inside a captured or replayed step: the greedy choice of all n rows is the graph's part (launched
 * while capturing); the rows needing a sampler are noted for step_end */
static lmx_status rows_in_graph(cuda_backend *c, const lmx_buf *logits, int vocab, int n, const lmx_sample_args *a) {
    int n_samp = 0;
    for (int r = 0; r < n; r++) {
        const int need = row_need(&a[r], vocab);
        c->h_rkind[r] = need < 0 ? ROWS_HOST : need == 0 ? r : -1 - n_samp++;
        c->later.a[r] = a[r];
    }
    c->later.logits = logits->d;
    c->later.vocab = vocab;
    c->later.n = n;
    c->later.pending = n_samp > 0;
    if (replaying(c)) return LMX_OK;
    LMX_BACKEND_TRY(lmx_cuda_greedy_rows(logits->d, vocab, NULL, n, c->d_rres, c->stream));
    return lmx_cuda_memcpy_d2h(c->h_rres, c->d_rres, (size_t)n * sizeof(int32_t), c->stream);
}

lmx_status lmx_cub_rows_later_run(cuda_backend *c) {
    cub_rows_later *l = &c->later;
    if (!l->pending) return LMX_OK;
    l->pending = false;
    for (int r = 0; r < l->n; r++) {
        const int32_t k = c->h_rkind[r];
        if (k < 0 && k != ROWS_HOST)
            LMX_BACKEND_TRY(rows_sample_one(c, -1 - k, l->logits + (size_t)r * (size_t)l->vocab, l->vocab, &l->a[r]));
    }
    return LMX_OK;
}

lmx_status lmx_cub_sample_rows(lmx_backend *be, const lmx_buf *logits, int vocab, int n, const lmx_sample_args *a) {
    cuda_backend *c = CB(be);
    if (!a || vocab <= 0 || n < 1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample_rows: bad arguments (vocab %d, %d rows)", vocab, n);
    for (int r = 0; r < n; r++)
        if (a[r].sampling.repetition_context < 0 || a[r].n_window < 0 ||
            a[r].n_window > a[r].sampling.repetition_context)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample_rows: row %d: window %d of %d", r, a[r].n_window,
                             a[r].sampling.repetition_context);
    CHECK_RANGE(logits, 0, (size_t)vocab * (size_t)n, "sample_rows logits");
    if (c->rows_pending) { /* the previous batch was never read: its work may still use the staging */
        LMX_BACKEND_TRY(lmx_cuda_stream_sync(c->stream));
        c->rows_pending = false;
    }
    LMX_BACKEND_TRY(rows_grow(c, n));
    if (stepping(c)) {
        SIGI(14); SIGP(logits->d); SIGI(vocab); SIGI(n); SIGP(c->d_rres); SIGP(c->h_rres);
    }
    c->rows_n = n;
    c->rows_pending = true; /* from here on work may be in flight (also after a failure below) */
    if (capturing(c)) return rows_in_graph(c, logits, vocab, n, a);
    int32_t *greedy = c->h_rres; /* the greedy rows' indices, built in place before the launch reads them */
    int n_greedy = 0, n_samp = 0;
    for (int r = 0; r < n; r++) {
        const int need = row_need(&a[r], vocab);
        if (need < 0) {
            c->h_rkind[r] = ROWS_HOST;
        } else if (need == 0) {
            c->h_rkind[r] = n_greedy;
            greedy[n_greedy++] = r;
        } else {
            c->h_rkind[r] = -1 - n_samp;
            LMX_BACKEND_TRY(rows_sample_one(c, n_samp++, logits->d + (size_t)r * (size_t)vocab, vocab, &a[r]));
        }
    }
    if (n_greedy > 0) {
        const int32_t *d_rows;
        LMX_BACKEND_TRY(lmx_cub_stage_upload(c, &c->grows, greedy, n_greedy, &d_rows));
        LMX_BACKEND_TRY(lmx_cuda_greedy_rows(logits->d, vocab, d_rows, n_greedy, c->d_rres, c->stream));
        LMX_BACKEND_TRY(lmx_cuda_memcpy_d2h(c->h_rres, c->d_rres, (size_t)n_greedy * sizeof(int32_t), c->stream));
    }
    return LMX_OK;
}

lmx_status lmx_cub_sample_rows_result(lmx_backend *be, int n, int32_t *tokens) {
    cuda_backend *c = CB(be);
    if (!c->rows_pending || n != c->rows_n || stepping(c))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda sample_rows_result: no batch of %d rows (or inside a step)",
                         n);
    lmx_status st = lmx_cuda_stream_sync(c->stream);
    c->rows_pending = false;
    if (st != LMX_OK) return st;
    for (int r = 0; r < n; r++) {
        const int32_t k = c->h_rkind[r];
        tokens[r] = k == ROWS_HOST ? -1 : k >= 0 ? c->h_rres[k] : lmx_cuda_sample_read(c->rsamp[-1 - k]);
    }
    return LMX_OK;
}

/* ---- step hooks (backend.h) ---- */

/* the slot of (key, variant, rows, span), else the least recently used one, emptied for them */
static graph_slot *slot_for(cuda_backend *c, const void *key, int variant, int n_tokens, int64_t span, bool *fresh) {
    graph_slot *victim = &c->slots[0];
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        graph_slot *g = &c->slots[i];
        if (g->used && g->key == key && g->variant == variant && g->n_tokens == n_tokens && g->span == span) {
            *fresh = false;
            return g;
        }
        if (!g->used ? victim->used : (victim->used && g->last_use < victim->last_use)) victim = g;
    }
    lmx_cuda_graph_destroy(victim->exec);
    *victim = (graph_slot){.key = key, .variant = variant, .n_tokens = n_tokens, .span = span, .used = true};
    *fresh = true;
    return victim;
}

lmx_status lmx_cub_step_begin(lmx_backend *be, const void *key, int variant, const lmx_step_inputs *in) {
    cuda_backend *c = CB(be);
    if (c->mode != STEP_NONE) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: nested step");
    if (!in) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: a step without inputs");
    if (!c->graphs) return LMX_OK; /* mode stays NONE: the ops run eagerly as usual */
    if (c->samp_pending || c->rows_pending) { /* results never read: their work ends before a capture may begin */
        LMX_BACKEND_TRY(lmx_cuda_stream_sync(c->stream));
        c->samp_pending = c->rows_pending = false;
    }
    /* the inputs to the device (one pageable copy, staged before the call returns), outside any capture
     * and ahead of the work that reads them */
    LMX_BACKEND_TRY(lmx_cub_step_stage(c, in));
    bool fresh;
    graph_slot *g = slot_for(c, key, variant, in->n_tokens, in->map ? c->step.span : 0, &fresh);
    g->last_use = ++c->n_steps;
    step_mode mode = STEP_WARM;
    if (!fresh && g->exec) mode = STEP_REPLAY;
    else if (!fresh && g->sig && g->fails < GRAPH_MAX_FAILS) mode = STEP_CAPTURE;
    if (mode == STEP_CAPTURE && lmx_cuda_capture_begin(c->stream) != LMX_OK) {
        LMX_LOG_D("cuda backend: graph capture unavailable (%s); the step runs eagerly", lmx_last_error_detail());
        g->fails++;
        mode = STEP_WARM;
    }
    c->slot = g;
    c->mode = mode;
    c->sig = 0xcbf29ce484222325ull;
    c->step_bad = false;
    c->later.pending = false;
    return LMX_OK;
}

/* the ops did not run: the caller issues them again without hooks */
static lmx_status step_redo(cuda_backend *c, bool *redo) {
    *redo = true;
    c->later.pending = false;
    c->counts.redone++;
    return LMX_OK;
}

lmx_status lmx_cub_step_end(lmx_backend *be, bool ok, bool *redo) {
    cuda_backend *c = CB(be);
    *redo = false;
    step_mode mode = c->mode;
    graph_slot *g = c->slot;
    c->mode = STEP_NONE;
    c->slot = NULL;
    if (mode == STEP_NONE) return LMX_OK;
    ok = ok && !c->step_bad;
    if (mode == STEP_WARM) {
        /* the ops ran eagerly; a failed one is redone eagerly to report its error */
        if (ok) g->sig = c->sig;
        return ok ? LMX_OK : step_redo(c, redo);
    }
    if (mode == STEP_CAPTURE) {
        void *exec = NULL;
        bool match = ok && c->sig == g->sig;
        lmx_status st = lmx_cuda_capture_end(c->stream, match, &exec);
        if (st != LMX_OK || (match && !exec)) {
            LMX_LOG_D("cuda backend: graph capture failed (%s); the step runs eagerly", lmx_last_error_detail());
            g->fails++;
        }
        if (!exec) {
            if (!match) g->sig = 0; /* the sequence changed since the warm step: warm up again */
            return step_redo(c, redo); /* nothing ran */
        }
        g->exec = exec;
        c->counts.captured++;
    } else if (!ok || c->sig != g->sig) { /* replay: the recorded sequence does not fit this step */
        lmx_cuda_graph_destroy(g->exec);
        g->exec = NULL;
        g->sig = 0;
        return step_redo(c, redo);
    } else {
        c->counts.replayed++;
    }
    lmx_status st = lmx_cuda_graph_launch(g->exec, c->stream);
    if (st != LMX_OK) {
        LMX_LOG_D("cuda backend: graph launch failed (%s); the step runs eagerly", lmx_last_error_detail());
        lmx_cuda_graph_destroy(g->exec);
        g->exec = NULL;
        g->sig = 0;
        g->fails++;
        return step_redo(c, redo);
    }
    return lmx_cub_rows_later_run(c);
}

#else
typedef int lmx_cuda_backend_step_unused; /* keep the translation unit non-empty */
#endif
