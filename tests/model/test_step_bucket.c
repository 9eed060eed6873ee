/* test_step_bucket.c — the bucketed decode step of lmx_lm_step (lm_step.c: decode-only steps on a
 * backend with step hooks, padded to a bucket of rows and bracketed by step_begin / step_end) on the
 * CPU, where a row's result does not depend on the other rows of a call, bit for bit:
 *   - two CPU backends whose ops tables are copies of the CPU's, one with step hooks and a host
 *     sample_rows added (the shape a GPU backend has), one without: the same schedule of steps (decode
 *     steps of 1, 3, 17, 40 and 70 rows, sequences joining, finishing and forked between them) gives
 *     every row the same logits, bit for bit, and device-sampled rows the greedy token of those logits;
 *   - the contract the CUDA backend's graphs rely on: inside a bracket embed gets exactly the step's
 *     ids array, rope_qk_store and attention its positions and map arrays (the same pointers, the
 *     bucket's rows), nothing is read or written, results are read after step_end; buckets are
 *     1, 4, 24, 48 for 1, 3, 17, 40 rows, 70 rows run unbracketed;
 *   - a step the backend asks to redo (injected every 5th bracket) runs again unbracketed with the same
 *     results; longrope rows switching to the long factors one by one make the steps that mix them
 *     redo (their rope runs split), with the same results;
 *   - the padding block is nobody's: pool_stats give the blocks back;
 *   - the fixture models and a qwen3_moe model written here (its routing stays on the backend).
 * Both backends are not recognized as the CPU backend (other ops tables), so their pools take the
 * device block size (64), the GPU's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "lmx_test.h"
#include "model/lm.h"
#include "model/test_moe_writer.h"
#include "util/error.h"

enum { NSEQ = 80, CTX = 256, MAX_ROWS = 128, CHUNK = 24, HIST = 200 };

/* ---- the hooked backend: the CPU's ops plus step hooks and a host sample_rows ---- */

typedef struct hook_state {
    const lmx_backend_ops *cpu;  /* the CPU backend's own table */
    bool in_step;
    lmx_step_inputs in;          /* the current bracket's inputs */
    lmx_kv_map map;
    bool bad;                    /* an op of the bracket got other arrays */
    int brackets, redos, injected, mismatches, forbidden;
    int by_rows[MAX_ROWS + 1];   /* brackets of n_tokens rows */
    /* sample_rows: the batch awaiting sample_rows_result */
    const lmx_buf *logits;
    int vocab, n;
    lmx_sample_args args[MAX_ROWS];
} hook_state;

static hook_state H;
static lmx_backend_ops g_hooked, g_plain;
static const lmx_backend_ops *g_cpu; /* the CPU backend's table (the functions both copies call) */

static lmx_status hk_step_begin(lmx_backend *be, const void *key, int variant, const lmx_step_inputs *in) {
    (void)be, (void)key, (void)variant;
    CHECK_MSG(!H.in_step, "nested step");
    CHECK(in && in->n_tokens >= 1 && in->n_tokens <= MAX_ROWS && in->ids && in->pos);
    H.in = *in;
    if (in->map) {
        H.map = *in->map;
        CHECK_MSG(in->map->n_seqs == in->n_tokens, "a decode step of %d rows with %d table rows", in->n_tokens,
                  in->map->n_seqs);
        for (int t = 0; t < in->n_tokens; t++) CHECK(in->map->seq[t] == t);
    }
    H.in_step = true;
    H.bad = false;
    H.brackets++;
    H.by_rows[in->n_tokens]++;
    return LMX_OK;
}

static lmx_status hk_step_end(lmx_backend *be, bool ok, bool *redo) {
    (void)be;
    CHECK(H.in_step);
    H.in_step = false;
    const bool inject = H.brackets % 5 == 0;
    H.injected += inject && ok && !H.bad;
    *redo = !ok || H.bad || inject;
    H.redos += *redo;
    return LMX_OK;
}

/* inside a bracket: the op's positions (and map) must be the step's arrays */
static void hk_check_arrays(const int32_t *pos, int T, const lmx_kv_map *m) {
    if (!H.in_step) return;
    bool same = pos == H.in.pos && T == H.in.n_tokens && !m == !H.in.map;
    if (same && m)
        same = m->tables == H.map.tables && m->seq == H.map.seq && m->n_seqs == H.map.n_seqs &&
               m->stride == H.map.stride && m->block_size == H.map.block_size;
    if (!same) {
        H.bad = true;
        H.mismatches++;
    }
}

static lmx_status hk_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale, lmx_buf *y) {
    if (H.in_step && (ids != H.in.ids || T != H.in.n_tokens)) {
        H.bad = true;
        H.mismatches++;
    }
    return H.cpu->embed(be, w, ids, T, scale, y);
}

static lmx_status hk_rope(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc, lmx_buf *vc,
                          const lmx_qk_rope_params *p, const int32_t *pos) {
    hk_check_arrays(pos, p->n_tokens, p->map);
    return H.cpu->rope_qk_store(be, q, k, v, kc, vc, p, pos);
}

static lmx_status hk_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc, lmx_buf *out,
                               const lmx_attn_params *p, const int32_t *pos) {
    hk_check_arrays(pos, p->n_tokens, p->map);
    return H.cpu->attention(be, q, kc, vc, out, p, pos);
}

static lmx_status hk_buf_write(lmx_backend *be, lmx_buf *dst, size_t off, const float *src, size_t n) {
    H.forbidden += H.in_step;
    return H.cpu->buf_write(be, dst, off, src, n);
}

static lmx_status hk_buf_read(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n) {
    H.forbidden += H.in_step;
    return H.cpu->buf_read(be, src, off, dst, n);
}

static lmx_status hk_sample_rows(lmx_backend *be, const lmx_buf *logits, int vocab, int n, const lmx_sample_args *a) {
    (void)be;
    CHECK(n >= 1 && n <= MAX_ROWS);
    H.logits = logits;
    H.vocab = vocab;
    H.n = n;
    memcpy(H.args, a, (size_t)n * sizeof *a);
    return LMX_OK;
}

/* plain greedy rows: the largest logit (the lowest id among equal ones); other rows -1 (the host samples) */
static lmx_status hk_sample_rows_result(lmx_backend *be, int n, int32_t *tokens) {
    H.forbidden += H.in_step;
    CHECK(n == H.n);
    float *row = malloc(sizeof(float) * (size_t)H.vocab);
    if (!row) return LMX_ERR_OUT_OF_MEMORY;
    for (int r = 0; r < n; r++) {
        const lmx_sampling *sp = &H.args[r].sampling;
        tokens[r] = -1;
        if (sp->temperature != 0.0f || (sp->repetition_penalty != 0.0f && sp->repetition_penalty != 1.0f)) continue;
        lmx_status st = H.cpu->buf_read(be, H.logits, (size_t)r * H.vocab, row, (size_t)H.vocab);
        if (st != LMX_OK) {
            free(row);
            return st;
        }
        int best = 0;
        for (int i = 1; i < H.vocab; i++)
            if (row[i] > row[best]) best = i;
        tokens[r] = best;
    }
    free(row);
    return LMX_OK;
}

/* a CPU backend with the hooked (or the plain copied) ops table */
static lmx_backend *backend(bool hooked) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create(2, &be) == LMX_OK);
    if (!be) return NULL;
    g_cpu = be->ops;
    g_plain = *be->ops;
    g_hooked = *be->ops;
    g_hooked.step_begin = hk_step_begin;
    g_hooked.step_end = hk_step_end;
    g_hooked.embed = hk_embed;
    g_hooked.rope_qk_store = hk_rope;
    g_hooked.attention = hk_attention;
    g_hooked.buf_write = hk_buf_write;
    g_hooked.buf_read = hk_buf_read;
    g_hooked.sample_rows = hk_sample_rows;
    g_hooked.sample_rows_result = hk_sample_rows_result;
    be->ops = hooked ? &g_hooked : &g_plain;
    return be;
}

/* ---- the schedule on both ---- */

typedef struct bseq {
    lmx_seq *s[2];      /* hooked, plain */
    int32_t ids[HIST];  /* prompt, then the tokens fed back */
    int n_prompt, done, n_ids;
    int mode;           /* 0 logits only, 1 device-sampled greedy, 2 device-sampled at temperature 0.8 (the
                           host samples: the logits come back) */
    bool live;
} bseq;

typedef struct bctx {
    lmx_lm *lm[2];
    lmx_pool *pool[2];
    int vocab;
    bseq q[NSEQ];
    float *logits[2]; /* [MAX_ROWS][vocab] */
    int steps, compared, tokens;
} bctx;

static void seq_start(bctx *g, int i, int n_prompt, int mode) {
    bseq *q = &g->q[i];
    *q = (bseq){.n_prompt = n_prompt, .n_ids = n_prompt, .mode = mode, .live = true};
    for (int j = 0; j < n_prompt; j++) q->ids[j] = (int32_t)((i * 7919 + j * 104729 + 13) % g->vocab);
    for (int b = 0; b < 2; b++) CHECK(lmx_seq_create(g->pool[b], CTX, &q->s[b]) == LMX_OK);
}

static void seq_fork(bctx *g, int i, int src, int n, int tail) {
    bseq *q = &g->q[i], *o = &g->q[src];
    *q = (bseq){.n_prompt = n + tail, .n_ids = n + tail, .done = n, .live = true};
    memcpy(q->ids, o->ids, (size_t)n * sizeof *q->ids);
    for (int j = 0; j < tail; j++) q->ids[n + j] = (int32_t)((i * 31 + j * 7 + 5) % g->vocab);
    for (int b = 0; b < 2; b++) CHECK(lmx_seq_fork(o->s[b], n, &q->s[b]) == LMX_OK);
}

static void seq_end(bctx *g, int i) {
    for (int b = 0; b < 2; b++) lmx_seq_destroy(g->q[i].s[b]);
    g->q[i] = (bseq){0};
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* one step of every live sequence on both; returns its rows, -1 on failure */
static int run_step(bctx *g) {
    lmx_step_row rows[2][MAX_ROWS];
    lmx_sample_args args[3];
    memset(args, 0, sizeof args); /* plain greedy, twice */
    args[2].sampling.temperature = 0.8f;
    args[2].u = 0.5;
    int32_t tok[2][MAX_ROWS];
    int who[MAX_ROWS], nr = 0, tokens = 0;
    for (int i = 0; i < NSEQ && nr < MAX_ROWS; i++) {
        bseq *q = &g->q[i];
        if (!q->live) continue;
        const int n = q->done < q->n_prompt ? (q->n_prompt - q->done < CHUNK ? q->n_prompt - q->done : CHUNK) : 1;
        if (tokens + n > MAX_ROWS) continue;
        const bool last = q->done + n == q->n_ids;
        for (int b = 0; b < 2; b++)
            rows[b][nr] = (lmx_step_row){.seq = q->s[b], .ids = q->ids + q->done, .n = n,
                                         .sample = last && q->mode ? &args[q->mode] : NULL,
                                         .logits = last ? g->logits[b] + (size_t)nr * g->vocab : NULL,
                                         .token = &tok[b][nr]};
        tokens += n;
        who[nr++] = i;
    }
    for (int b = 0; b < 2; b++) {
        lmx_status st = lmx_lm_step(g->pool[b], rows[b], nr);
        CHECK_MSG(st == LMX_OK, "step %d (%s): %s", g->steps, b == 0 ? "hooked" : "plain", lmx_last_error_detail());
        if (st != LMX_OK) return -1;
    }
    for (int r = 0; r < nr; r++) {
        bseq *q = &g->q[who[r]];
        q->done += rows[0][r].n;
        if (!rows[0][r].logits) continue;
        const float *e = g->logits[1] + (size_t)r * g->vocab; /* plain: no device sampling, logits always */
        int32_t next = argmax(e, g->vocab);
        if (rows[0][r].sample && tok[0][r] >= 0) {
            CHECK_MSG(tok[0][r] == next, "step %d seq %d: sampled %d, the logits' greedy %d", g->steps, who[r],
                      tok[0][r], next);
            g->tokens++;
        } else {
            const float *a = g->logits[0] + (size_t)r * g->vocab;
            CHECK_MSG(!memcmp(a, e, sizeof(float) * (size_t)g->vocab), "step %d seq %d (position %d): logits differ",
                      g->steps, who[r], q->done - 1);
            g->compared++;
        }
        if (q->n_ids < HIST) q->ids[q->n_ids++] = next;
    }
    g->steps++;
    return nr;
}

static void prefill_all(bctx *g) {
    for (int guard = 0; guard < 64; guard++) {
        bool pending = false;
        for (int i = 0; i < NSEQ; i++) pending = pending || (g->q[i].live && g->q[i].done < g->q[i].n_prompt);
        if (!pending || run_step(g) < 0) return;
    }
}

/* `steps` decode steps of `rows` rows: bracketed with `bucket` rows each (0: unbracketed) */
static void decode_phase(bctx *g, int rows, int steps, int bucket) {
    const int b0 = H.brackets, at0 = bucket ? H.by_rows[bucket] : 0;
    for (int k = 0; k < steps; k++) {
        const int n = run_step(g);
        if (n < 0) return;
        CHECK_MSG(n == rows, "a decode step of %d rows (expected %d)", n, rows);
    }
    if (bucket) CHECK_MSG(H.by_rows[bucket] - at0 == steps, "%d rows: %d of %d steps bracketed with %d rows", rows,
                          H.by_rows[bucket] - at0, steps, bucket);
    else CHECK_MSG(H.brackets == b0, "%d rows: %d steps bracketed (expected none)", rows, H.brackets - b0);
}

/* strict: no op of a bracket gets other arrays (false for longrope: steps mixing long and short rows) */
static void bucket_model_dir(const char *dir, const char *name, bool strict) {
    bctx *g = calloc(1, sizeof *g);
    lmx_backend *be[2] = {backend(true), backend(false)};
    if (!g || !be[0] || !be[1]) goto out;
    memset(&H, 0, sizeof H);
    H.cpu = g_cpu;
    lmx_status st = LMX_OK;
    for (int b = 0; b < 2 && st == LMX_OK; b++) {
        lmx_lm_options o = {.backend = be[b]};
        st = lmx_lm_open(dir, &o, &g->lm[b]);
        if (st == LMX_OK) st = lmx_pool_create(g->lm[b], 64ll << 20, MAX_ROWS, &g->pool[b]);
    }
    CHECK_MSG(st == LMX_OK, "%s: open / pool: %s", name, lmx_last_error_detail());
    if (st != LMX_OK) goto out;
    g->vocab = lmx_lm_vocab_size(g->lm[0]);
    for (int b = 0; b < 2; b++) g->logits[b] = malloc(sizeof(float) * (size_t)MAX_ROWS * g->vocab);
    if (!g->logits[0] || !g->logits[1]) goto out;
    int64_t free0[2];
    for (int b = 0; b < 2; b++) lmx_pool_stats(g->pool[b], NULL, NULL, &free0[b]);
    CHECK_EQ_INT(lmx_pool_block_size(g->pool[0]), 64);
    CHECK_EQ_INT(free0[0], free0[1] - 1); /* the padding block of the hooked pool */
    seq_start(g, 0, 9, 0);
    prefill_all(g);
    decode_phase(g, 1, 4, 1);
    seq_start(g, 1, 30, 1);
    seq_start(g, 2, 5, 2);
    prefill_all(g);
    decode_phase(g, 3, 4, 4);
    for (int i = 3; i < 17; i++) seq_start(g, i, 2 + (i * 5) % 29, i % 3);
    prefill_all(g);
    decode_phase(g, 17, 4, 24);
    seq_end(g, 0);
    seq_end(g, 5);
    seq_fork(g, 17, 3, g->q[3].done - 1, 3);
    seq_fork(g, 18, 1, 20, 6);
    for (int i = 19; i < 42; i++) seq_start(g, i, 1 + (i * 11) % 37, i % 4 == 0);
    prefill_all(g);
    decode_phase(g, 40, 4, 48);
    for (int i = 42; i < 72; i++) seq_start(g, i, 1 + i % 5, 0);
    prefill_all(g);
    decode_phase(g, 70, 2, 0); /* beyond the largest bucket: the general path */
    for (int i = 0; i < 72; i++)
        if (g->q[i].live && i != 17 && i != 18) seq_end(g, i);
    decode_phase(g, 2, 4, 2);
    for (int i = 0; i < NSEQ; i++)
        if (g->q[i].live) seq_end(g, i);
    for (int b = 0; b < 2; b++) {
        int64_t used = -1, fr = -1;
        lmx_pool_stats(g->pool[b], NULL, &used, &fr);
        CHECK_EQ_INT(used, 0);
        CHECK_EQ_INT(fr, free0[b]);
    }
    CHECK_MSG(H.forbidden == 0, "%s: %d reads or writes inside a bracket", name, H.forbidden);
    CHECK_MSG(H.injected > 0 && (strict ? H.mismatches == 0 && H.redos == H.injected : H.mismatches > 0),
              "%s: %d brackets, %d redone (%d injected), %d ops with other arrays", name, H.brackets, H.redos,
              H.injected, H.mismatches);
    fprintf(stderr, "  %-20s %3d steps, %3d brackets (%d redone, %d injected, %d ops with other arrays), %d rows' "
                    "logits and %d tokens identical\n",
            name, g->steps, H.brackets, H.redos, H.injected, H.mismatches, g->compared, g->tokens);
out:
    for (int b = 0; g && b < 2; b++) {
        lmx_pool_destroy(g->pool[b]);
        lmx_lm_close(g->lm[b]);
        free(g->logits[b]);
    }
    free(g);
    lmx_backend_destroy(be[0]);
    lmx_backend_destroy(be[1]);
}

static void bucket_model(const char *name, bool strict) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", LMX_SOURCE_DIR, name);
    bucket_model_dir(dir, name, strict);
}

static void test_buckets(void) {
    /* a mixture-of-experts model (its routing stays in the backend's buffers: bracketed too) */
    static const moe_spec moe = {.family = 0, .stacked = true, .qbits = 4, .layers = 2, .experts = 7, .topk = 3,
                                 .inter = 64, .dense_inter = 64, .norm_topk = true, .sparse_step = 1};
    model md = {0};
    CHECK(model_make(&md, &moe, 4711));
    bucket_model_dir(md.dir, "qwen3_moe (written)", true);
    model_free(&md);
    bucket_model("llama-q4-g64", true);
    bucket_model("gemma3-text-window", true);
    bucket_model("qwen3-qknorm", true);
    bucket_model("phi3-fused", true);
    bucket_model("phi3-longrope", false);
}

int main(void) {
    RUN(test_buckets);
    return lmx_test_summary();
}
