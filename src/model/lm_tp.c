/* lm_tp.c — tensor parallel in one process: a model split over the ranks of a backend group
 * (backend.h lmx_backend_group) by the plan of lm_shard.h.
 *
 * The model the caller holds keeps the config and the mapped weight files; each rank is an lmx_lm of
 * its own over them (borrowed) with its shard and its rank's backend, bound by that rank's thread
 * (reading only its rows and columns of the mapped tensors), and a KV cache of the model is one cache
 * per rank. A forward runs the single-device forward (lm_forward_run: the same layer path, whose split
 * blocks all-reduce) on every rank's thread at once with the same ids; rank 0 reads or samples the
 * gathered logits. Everything that touches a rank's backend — binding, caches, forwards, freeing —
 * goes through lmx_backend_group_run, so a CUDA rank's backend only ever sees its own thread. */
#include <stdlib.h>
#include <string.h>

#include "model/lm_bind.h"
#include "model/lm_internal.h"
#include "util/error.h"

struct lm_tp {
    lmx_backend_group *group; /* not owned */
    int n;
    lmx_lm **ranks;           /* [n] */
    lm_shard *plan;           /* [n] */
};

lmx_lm *lm_tp_rank(const lmx_lm *lm, int r) { return lm->tp->ranks[r]; }

/* ---- open / close ---- */

static lmx_status open_rank(void *arg, int r) {
    lmx_lm *top = arg;
    lmx_lm *L = calloc(1, sizeof *L);
    if (!L) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tensor parallel: rank model");
    L->cfg = top->cfg;         /* borrowed (own_cfg false) */
    L->weights = top->weights; /* borrowed: cleared before its close */
    L->be = lmx_backend_group_backend(top->tp->group, r);
    L->shard = top->tp->plan[r];
    top->tp->ranks[r] = L;
    return lmx_lm_bind(L);
}

static lmx_status close_rank(void *arg, int r) {
    lmx_lm *top = arg;
    lmx_lm *L = top->tp->ranks[r];
    if (L) L->weights = NULL; /* the group's model's */
    lmx_lm_close(L);
    top->tp->ranks[r] = NULL;
    return LMX_OK;
}

void lm_tp_close(lmx_lm *lm) {
    lm_tp *tp = lm->tp;
    if (!tp) return;
    if (tp->ranks) lmx_backend_group_run(tp->group, false, close_rank, lm);
    free(tp->ranks);
    free(tp->plan);
    free(tp);
    lm->tp = NULL;
}

lmx_status lm_tp_open(lmx_lm *lm, lmx_backend_group *g) {
    const int n = lmx_backend_group_size(g);
    lm_tp *tp = calloc(1, sizeof *tp);
    if (!tp) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tensor parallel");
    lm->tp = tp;
    tp->group = g;
    tp->n = n;
    tp->ranks = calloc((size_t)n, sizeof *tp->ranks);
    tp->plan = calloc((size_t)n, sizeof *tp->plan);
    if (!tp->ranks || !tp->plan) {
        lm_tp_close(lm);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tensor parallel");
    }
    binder b = {.lm = lm, .c = lm->cfg};
    lmx_status st = lmx_bind_prefix(&b);
    if (st == LMX_OK) st = lm_shard_plan(&b, n, tp->plan);
    free(b.used);
    if (st == LMX_OK) st = lmx_backend_group_run(g, false, open_rank, lm);
    if (st != LMX_OK) {
        lm_tp_close(lm);
        return lmx_error_prefix(st, "tensor parallel over %d ranks", n);
    }
    return LMX_OK;
}

/* ---- KV caches ---- */

typedef struct kv_job {
    lmx_lm *lm;
    lmx_kv *kv;
    int max_ctx, chunk;
} kv_job;

static lmx_status kv_create_rank(void *arg, int r) {
    kv_job *j = arg;
    return lmx_kv_create_ex(j->lm->tp->ranks[r], j->max_ctx, j->chunk, &j->kv->ranks[r]);
}

static lmx_status kv_destroy_rank(void *arg, int r) {
    kv_job *j = arg;
    lmx_kv_destroy(j->kv->ranks[r]);
    j->kv->ranks[r] = NULL;
    return LMX_OK;
}

void lm_tp_kv_destroy(lmx_kv *kv) {
    kv_job j = {.lm = kv->lm, .kv = kv};
    lmx_backend_group_run(kv->lm->tp->group, false, kv_destroy_rank, &j);
    free(kv->ranks);
    free(kv);
}

lmx_status lm_tp_kv_create(lmx_lm *lm, int max_ctx, int chunk, lmx_kv **out) {
    *out = NULL;
    lmx_kv *kv = calloc(1, sizeof *kv);
    if (kv) kv->ranks = calloc((size_t)lm->tp->n, sizeof *kv->ranks);
    if (!kv || !kv->ranks) {
        free(kv);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv cache");
    }
    kv->lm = lm;
    kv->n_ranks = lm->tp->n;
    kv->capacity = max_ctx;
    kv_job j = {.lm = lm, .kv = kv, .max_ctx = max_ctx, .chunk = chunk};
    lmx_status st = lmx_backend_group_run(lm->tp->group, false, kv_create_rank, &j);
    if (st != LMX_OK) {
        lm_tp_kv_destroy(kv);
        return st;
    }
    kv->chunk = kv->ranks[0]->chunk;
    for (int r = 0; r < kv->n_ranks; r++) /* one device's bytes: the fullest rank's */
        if (kv->ranks[r]->bytes > kv->bytes) kv->bytes = kv->ranks[r]->bytes;
    *out = kv;
    return LMX_OK;
}

/* ---- the forward ---- */

typedef struct fwd_job {
    lmx_lm *lm;
    lmx_kv *kv;
    const int32_t *ids;
    int n;
    bool head;
    const lmx_sample_args *a;
    float *logits;
    int32_t *token;
} fwd_job;

static lmx_status forward_rank(void *arg, int r) {
    const fwd_job *j = arg;
    const bool lead = r == 0; /* rank 0 reads or samples the gathered logits */
    return lm_forward_run(j->lm->tp->ranks[r], j->kv->ranks[r], j->ids, j->n, j->head, lead ? j->a : NULL,
                          lead ? j->logits : NULL, lead ? j->token : NULL);
}

lmx_status lm_tp_forward(lmx_lm *lm, lmx_kv *kv, const int32_t *ids, int n, bool head, const lmx_sample_args *a,
                         float *logits, int32_t *token) {
    fwd_job j = {lm, kv, ids, n, head, a, logits, token};
    lmx_status st = lmx_backend_group_run(lm->tp->group, true, forward_rank, &j);
    if (st != LMX_OK) { /* the position stays where it was, on every rank */
        for (int r = 0; r < kv->n_ranks; r++) kv->ranks[r]->pos = kv->pos;
        return st;
    }
    kv->pos += n;
    return LMX_OK;
}
