/* lm_step.c — the batched step (lm.h lmx_lm_step): rows of several sequences of one pool as one
 * forward.
 *
 *   check every row (ids, max_context), count the blocks the rows need (new ones, copies of shared
 *   blocks written into) — an error here runs nothing
 *   take the blocks; tables[row][logical block] = physical block (lmx_kv_map), pos/seq per token
 *   x = embed(all ids)                                  [R, hidden]
 *   per layer: lm_layer_forward over the R rows with the map (the single-sequence forward's code)
 *   the last row of each sequence whose output is wanted (device-sampled rows first) → last
 *   [n_out, hidden] → final norm → ONE head matmul → logits [n_out, vocab] → sample_rows / read back
 *
 * Decode steps (one token per row) on a backend with step hooks take a fixed shape instead, so that
 * the backend can capture the step once and replay it (CUDA graphs): the R rows are padded to a
 * bucket B (STEP_BUCKETS) by rows of token 0 at position 0 of the pool's padding block (each with its
 * own table row, so they write and read only that block), the block tables are rows of a power-of-two
 * width, every one of the B rows goes through the head into logits [B, vocab] and sample_rows (padding
 * and logits-only rows as plain greedy), all bracketed by step_begin / step_end with the step's ids,
 * positions and map as its inputs. A step the backend asks to redo runs the same ops unbracketed, so
 * replayed and eager steps compute the same thing. */
#include <stdlib.h>
#include <string.h>

#include "model/lm_internal.h"
#include "util/error.h"

/* blocks row i needs before it can write positions [pos, pos + n): new logical blocks past those held,
 * and a private copy of every held block in that range that another sequence shares (an upper bound:
 * when two rows of the step write into the same shared block, the second finds it private after
 * the first's copy) */
static int row_block_need(const lmx_pool *p, const lmx_seq *s, int n) {
    const int bs = p->block_size, last = (s->pos + n - 1) / bs;
    int need = last + 1 > s->n_blocks ? last + 1 - s->n_blocks : 0;
    for (int b = s->pos / bs; b <= last && b < s->n_blocks; b++) need += p->refs[s->blocks[b]] > 1;
    return need;
}

/* the checks that come before any op (nothing changes when one fails) */
static lmx_status step_check(lmx_pool *p, const lmx_step_row *rows, int n_rows) {
    if (!rows || n_rows < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step: %d rows", n_rows);
    const int vocab = p->lm->cfg->vocab_size;
    const uint64_t stamp = ++p->stamp;
    int tokens = 0, blocks = 0;
    for (int i = 0; i < n_rows; i++) {
        const lmx_step_row *r = &rows[i];
        if (!r->seq || r->seq->pool != p || !r->ids || r->n < 1)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step row %d: no sequence of this pool, or no ids (n %d)", i,
                             r->n);
        if (r->seq->stamp == stamp)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step row %d: its sequence is in the step twice", i);
        r->seq->stamp = stamp;
        if (r->sample && (!r->token || !r->logits))
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step row %d: sampling needs token and logits", i);
        if (r->n > p->max_rows - tokens)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step row %d: %d more tokens exceed the step's %d rows", i,
                             r->n, p->max_rows);
        tokens += r->n;
        if (r->n > r->seq->max_context - r->seq->pos)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                             "step row %d: context full: %d positions cached, %d more do not fit in %d", i,
                             r->seq->pos, r->n, r->seq->max_context);
        for (int j = 0; j < r->n; j++)
            if (r->ids[j] < 0 || r->ids[j] >= vocab)
                return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                                 "step row %d: token id %d at index %d is outside the vocabulary (%d)", i, r->ids[j],
                                 j, vocab);
    }
    for (int i = 0; i < n_rows; i++) {
        blocks += row_block_need(p, rows[i].seq, rows[i].n);
        if (blocks > p->n_free)
            return lmx_error(LMX_ERR_OUT_OF_MEMORY,
                             "step row %d: the kv pool is out of blocks (the rows up to it need %d, %d of %d free)", i,
                             blocks, p->n_free, p->n_blocks);
    }
    return LMX_OK;
}

/* takes the blocks row's sequence needs for n more positions (counted by step_check: cannot fail
 * for lack of blocks), copying shared blocks it writes into */
static lmx_status row_blocks(lmx_pool *p, lmx_seq *s, int n) {
    const int bs = p->block_size, last = (s->pos + n - 1) / bs;
    for (int b = s->pos / bs; b <= last && b < s->n_blocks; b++) {
        if (p->refs[s->blocks[b]] <= 1) continue;
        const int32_t nb = lm_pool_take(p), old = s->blocks[b];
        const int keep = s->pos - b * bs; /* positions of the block before the write */
        if (keep > 0) LMX_TRY(lm_pool_copy_block(p, nb, old, keep < bs ? keep : bs));
        lm_pool_release(p, old);
        s->blocks[b] = nb;
    }
    while (s->n_blocks <= last) s->blocks[s->n_blocks++] = lm_pool_take(p);
    return LMX_OK;
}

/* The final norm and the head over outputs [o0, o0 + n) of p->out_idx (rows of p->s.x), device
 * sampling of the first n_sample of them, then the results into the rows. */
static lmx_status head_rows(lmx_pool *p, const lmx_step_row *rows, const int *last_tok, int o0, int n,
                            int n_sample) {
    const lmx_model_config *c = p->lm->cfg;
    const lmx_backend_ops *op = p->lm->be->ops;
    lmx_backend *be = p->lm->be;
    const size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size;
    for (int k = 0; k < n; k++) /* the sequence's last token of this step → row k of last */
        LMX_TRY(op->buf_copy(be, p->last, (size_t)k * H, p->s.x, (size_t)last_tok[p->out_idx[o0 + k]] * H, H));
    LMX_TRY(op->rmsnorm(be, p->last, p->last, n, (int)H, p->lm->final_norm, (float)c->rms_norm_eps, c->norm_plus_one));
    LMX_TRY(op->matmul(be, p->lm->head, p->last, 0, n, p->logits)); /* [n, vocab] */
    if (c->final_logit_softcap > 0) LMX_TRY(op->softcap(be, p->logits, (size_t)n * V, c->final_logit_softcap));
    if (n_sample > 0) {
        for (int k = 0; k < n_sample; k++) p->sargs[k] = *rows[p->out_idx[o0 + k]].sample;
        LMX_TRY(op->sample_rows(be, p->logits, (int)V, n_sample, p->sargs));
        LMX_TRY(op->sample_rows_result(be, n_sample, p->tokens));
    }
    for (int k = 0; k < n; k++) {
        const lmx_step_row *r = &rows[p->out_idx[o0 + k]];
        int32_t tok = k < n_sample ? p->tokens[k] : -1;
        if (tok < 0 || tok >= (int32_t)V) tok = -1; /* undecided on the device: the host samples */
        if (r->sample) *r->token = tok;
        if (tok < 0) LMX_TRY(op->buf_read(be, p->logits, (size_t)k * V, r->logits, V));
    }
    return LMX_OK;
}

/* which rows come back: device-sampled ones first (sample_rows takes the first rows of the logits),
 * then those wanting logits; *n_sample of them sampled */
static int order_outputs(lmx_pool *p, const lmx_step_row *rows, int n_rows, int *n_sample) {
    const bool dev = p->lm->be->ops->sample_rows && p->lm->be->ops->sample_rows_result;
    int n = 0;
    for (int i = 0; i < n_rows; i++)
        if (dev && rows[i].sample) p->out_idx[n++] = i;
    *n_sample = n;
    for (int i = 0; i < n_rows; i++) {
        if (rows[i].sample && !dev) *rows[i].token = -1;
        if ((rows[i].logits || rows[i].sample) && !(dev && rows[i].sample)) p->out_idx[n++] = i;
    }
    return n;
}

/* rows of a bracketed decode step: R rows pad up to the first bucket >= R */
static const int STEP_BUCKETS[] = {1, 2, 4, 8, 16, 24, 32, 48, 64};

/* the bucket of a step of these rows, or 0 when it runs the general path: not decode-only, a backend
 * without step hooks or device sampling, more rows than the head's (a sparse model's routing stays on
 * the device: its steps are bracketed like a dense model's) */
static int decode_bucket(const lmx_pool *p, const lmx_step_row *rows, int n_rows) {
    const lmx_backend_ops *op = p->lm->be->ops;
    if (!op->step_begin || !op->step_end || !op->sample_rows || !op->sample_rows_result || p->pad_block < 0)
        return 0;
    for (int i = 0; i < n_rows; i++)
        if (rows[i].n != 1) return 0;
    for (size_t b = 0; b < sizeof STEP_BUCKETS / sizeof STEP_BUCKETS[0]; b++)
        if (STEP_BUCKETS[b] >= n_rows) return STEP_BUCKETS[b] <= p->out_rows ? STEP_BUCKETS[b] : 0;
    return 0;
}

/* the ops of a bucketed decode step over B rows (ps): embed, the layers, the head over every row,
 * device sampling of every row */
static lmx_status decode_ops(lmx_pool *p, const lm_pass *ps, int B) {
    lmx_lm *lm = p->lm;
    const lmx_model_config *c = lm->cfg;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const size_t V = (size_t)c->vocab_size;
    LMX_TRY(op->embed(be, lm->embed, p->ids, B, lm->embed_scale, p->s.x)); /* [B, hidden] */
    for (int l = 0; l < c->n_layers; l++) LMX_TRY(lm_layer_forward(lm, ps, l));
    LMX_TRY(op->rmsnorm(be, p->s.x, p->last, B, c->hidden_size, lm->final_norm, (float)c->rms_norm_eps,
                    c->norm_plus_one));                               /* [B, hidden] */
    LMX_TRY(op->matmul(be, lm->head, p->last, 0, B, p->logits)); /* [B, vocab] */
    if (c->final_logit_softcap > 0) LMX_TRY(op->softcap(be, p->logits, (size_t)B * V, c->final_logit_softcap));
    return op->sample_rows(be, p->logits, (int)V, B, p->sargs);
}

/* A decode step of n_rows rows (one token each, their blocks taken) padded to B rows: see the file's
 * header. */
static lmx_status decode_step(lmx_pool *p, const lmx_step_row *rows, int n_rows, int B) {
    lmx_lm *lm = p->lm;
    const lmx_model_config *c = lm->cfg;
    const lmx_backend_ops *op = lm->be->ops;
    lmx_backend *be = lm->be;
    const size_t V = (size_t)c->vocab_size;
    int width = 1; /* table row width: a power of two >= every row's blocks (a shape that changes rarely) */
    for (int i = 0; i < n_rows; i++)
        while (width < rows[i].seq->n_blocks) width <<= 1;
    if (width > p->tables_cap) width = p->tables_cap;
    /* longrope: the long factors by row (lmx_lm_step's rule); the padding rows follow row 0 */
    for (int i = 0; i < B; i++) {
        int32_t *tab = p->tables + (size_t)i * (size_t)width;
        p->seqv[i] = i;
        if (i < n_rows) {
            const lmx_seq *s = rows[i].seq;
            memcpy(tab, s->blocks, (size_t)s->n_blocks * sizeof *s->blocks);
            p->ids[i] = rows[i].ids[0];
            p->posv[i] = s->pos;
            p->longv[i] = lm->rope_full_long && (double)(s->pos + 1) > c->rope.original_max_position;
            p->sargs[i] = rows[i].sample ? *rows[i].sample : (lmx_sample_args){0};
        } else {
            tab[0] = p->pad_block;
            p->ids[i] = 0;
            p->posv[i] = 0;
            p->longv[i] = p->longv[0];
            p->sargs[i] = (lmx_sample_args){0}; /* plain greedy */
        }
    }
    const lmx_kv_map map = {.tables = p->tables, .seq = p->seqv, .n_seqs = B, .stride = width,
                            .block_size = p->block_size};
    const lm_pass ps = {.s = &p->s, .T = B, .pos = p->posv, .k = p->k, .v = p->v, .slots = p->slots,
                        .map = &map, .use_long = p->longv};
    const lmx_step_inputs in = {.n_tokens = B, .ids = p->ids, .pos = p->posv, .map = &map};
    bool redo = true;
    lmx_status st = op->step_begin(be, p, p->longv[0] ? 1 : 0, &in);
    if (st == LMX_OK) {
        st = decode_ops(p, &ps, B);
        lmx_status se = op->step_end(be, st == LMX_OK, &redo);
        if (st == LMX_OK) st = se;
    }
    if (st != LMX_OK && !redo) return st;
    if (redo) LMX_TRY(decode_ops(p, &ps, B)); /* unbracketed: the same ops */
    LMX_TRY(op->sample_rows_result(be, B, p->tokens));
    for (int i = 0; i < n_rows; i++) {
        const lmx_step_row *r = &rows[i];
        int32_t tok = r->sample ? p->tokens[i] : -1;
        if (tok < 0 || tok >= (int32_t)V) tok = -1; /* undecided on the device: the host samples */
        if (r->sample) *r->token = tok;
        if (tok < 0 && r->logits) LMX_TRY(op->buf_read(be, p->logits, (size_t)i * V, r->logits, V));
    }
    return LMX_OK;
}

lmx_status lmx_lm_step(lmx_pool *p, const lmx_step_row *rows, int n_rows) {
    if (!p) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step: NULL pool");
    LMX_TRY(step_check(p, rows, n_rows));
    lmx_lm *lm = p->lm;
    const lmx_model_config *c = lm->cfg;
    /* blocks, then the step's addressing: table row i = rows[i]'s sequence */
    int stride = 1;
    for (int i = 0; i < n_rows; i++) {
        LMX_TRY(row_blocks(p, rows[i].seq, rows[i].n));
        if (rows[i].seq->n_blocks > stride) stride = rows[i].seq->n_blocks;
    }
    const int B = decode_bucket(p, rows, n_rows);
    if (B > 0) {
        LMX_TRY(decode_step(p, rows, n_rows, B));
        for (int i = 0; i < n_rows; i++) rows[i].seq->pos += rows[i].n;
        return LMX_OK;
    }
    int R = 0;
    int *last_tok = p->last_tok; /* [n_rows] step row of each sequence's last token */
    for (int i = 0; i < n_rows; i++) {
        const lmx_seq *s = rows[i].seq;
        memcpy(p->tables + (size_t)i * (size_t)stride, s->blocks, (size_t)s->n_blocks * sizeof *s->blocks);
        /* longrope (HF): the long factors when the row's last position + 1 exceeds the original
         * context, per sequence as lmx_lm_forward decides it per call */
        const bool lg = lm->rope_full_long && (double)(s->pos + rows[i].n) > c->rope.original_max_position;
        for (int j = 0; j < rows[i].n; j++, R++) {
            p->ids[R] = rows[i].ids[j];
            p->posv[R] = s->pos + j;
            p->seqv[R] = i;
            p->longv[R] = lg;
        }
        last_tok[i] = R - 1;
    }
    const lmx_kv_map map = {.tables = p->tables, .seq = p->seqv, .n_seqs = n_rows, .stride = stride,
                            .block_size = p->block_size};
    const lm_pass ps = {.s = &p->s, .T = R, .pos = p->posv, .k = p->k, .v = p->v, .slots = p->slots,
                        .map = &map, .use_long = p->longv};
    lmx_backend *be = lm->be;
    LMX_TRY(be->ops->embed(be, lm->embed, p->ids, R, lm->embed_scale, p->s.x)); /* [R, hidden] */
    for (int l = 0; l < c->n_layers; l++) LMX_TRY(lm_layer_forward(lm, &ps, l));
    int n_sample = 0;
    const int n_out = order_outputs(p, rows, n_rows, &n_sample);
    for (int o0 = 0; o0 < n_out; o0 += p->out_rows) {
        const int n = n_out - o0 < p->out_rows ? n_out - o0 : p->out_rows;
        const int ns = n_sample - o0 > n ? n : (n_sample - o0 > 0 ? n_sample - o0 : 0);
        LMX_TRY(head_rows(p, rows, last_tok, o0, n, ns));
    }
    for (int i = 0; i < n_rows; i++) rows[i].seq->pos += rows[i].n;
    return LMX_OK;
}
