/* test_batch_step.c — the batched step over a paged KV pool (model/lm.h lmx_pool / lmx_seq /
 * lmx_lm_step) on the CPU backend:
 *   - 16 sequences of different prompt lengths, run (a) each alone through lmx_lm_forward and (b) as
 *     batched steps (prefill chunks of some beside decode rows of others, sequences joining and
 *     leaving): the logits of every call are BITWISE equal, on several fixture families (quantized,
 *     untied f16, sliding windows, qk-norm, fused phi3, longrope), at every CPU kernel level;
 *   - fork / copy-on-write (a fork then both continuing = unshared runs), truncate into a shared block;
 *   - pool exhaustion and max_context errors name the row and run nothing; pool_stats accounting.
 * (b) gives (a) only where a row of the CPU matmul does not depend on how many rows share the call;
 * the per-level result lines say which level differs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_lm.h"
#include "lmx_test.h"
#include "model/lm.h"
#include "util/error.h"

enum { NSEQ = 16, NDEC = 4, MAXCALLS = 32, CTX = 256, MAX_ROWS = 96 };

static const char *MODELS[] = {"llama-q4-g64", "llama-untied-f16", "mistral-window", "gemma3-text-window",
                               "qwen3-qknorm", "qwen3-q8-g32",     "phi3-fused",     "phi3-longrope"};

static lmx_lm *open_lm(const char *name, lmx_backend *be) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", LMX_SOURCE_DIR, name);
    lmx_lm_options o = {.backend = be};
    lmx_lm *lm = NULL;
    lmx_status st = lmx_lm_open(dir, &o, &lm);
    CHECK_MSG(st == LMX_OK, "%s: %s: %s", name, lmx_status_str(st), lmx_last_error_detail());
    return lm;
}

static int32_t tok_of(int seq, int i, int vocab) { return (int32_t)((seq * 7919 + i * 104729 + 13) % vocab); }

/* one sequence of the schedule: its ids, the calls it was run in, the logits of each call */
typedef struct seq_run {
    int n_prompt, n_total, done, chunk;
    int32_t ids[CTX];
    int calls, call_n[MAXCALLS];
    float *logits; /* [MAXCALLS][vocab] */
    lmx_seq *s;
} seq_run;

/* (b): the batched schedule. Sequence i joins at step i / 2; a prefilling sequence brings a chunk of
 * up to its own chunk size, a decoding one one row; rows that would pass MAX_ROWS wait for the next
 * step; a sequence leaves (seq_destroy) when done. Returns the steps run. */
static int run_batched(lmx_lm *lm, seq_run *sr, int vocab) {
    lmx_pool *p = NULL;
    lmx_status st = lmx_pool_create(lm, 64 << 20, MAX_ROWS, &p);
    CHECK_MSG(st == LMX_OK, "pool: %s", lmx_last_error_detail());
    if (!p) return 0;
    int64_t free0 = 0;
    lmx_pool_stats(p, NULL, NULL, &free0);
    int steps = 0, left = NSEQ;
    lmx_step_row rows[NSEQ];
    while (left > 0 && steps < 400) {
        int nr = 0, tokens = 0;
        for (int i = 0; i < NSEQ; i++) {
            seq_run *q = &sr[i];
            if (i / 2 > steps || q->done == q->n_total) continue;
            if (!q->s) CHECK(lmx_seq_create(p, CTX, &q->s) == LMX_OK);
            int n = q->done < q->n_prompt ? q->n_prompt - q->done : 1;
            if (n > q->chunk) n = q->chunk;
            if (tokens + n > MAX_ROWS) continue;
            CHECK(q->calls < MAXCALLS);
            rows[nr++] = (lmx_step_row){.seq = q->s, .ids = q->ids + q->done, .n = n,
                                        .logits = q->logits + (size_t)q->calls * vocab};
            q->call_n[q->calls++] = n;
            tokens += n;
        }
        if (nr > 0) {
            st = lmx_lm_step(p, rows, nr);
            CHECK_MSG(st == LMX_OK, "step %d: %s", steps, lmx_last_error_detail());
            if (st != LMX_OK) break;
        }
        for (int i = 0; i < NSEQ; i++) {
            seq_run *q = &sr[i];
            for (int r = 0; r < nr; r++)
                if (rows[r].seq == q->s) q->done += rows[r].n;
            if (q->s && q->done == q->n_total) {
                CHECK_EQ_INT(lmx_seq_pos(q->s), q->n_total);
                lmx_seq_destroy(q->s);
                q->s = NULL;
                left--;
            }
        }
        steps++;
    }
    int64_t free1 = -1, used = -1;
    lmx_pool_stats(p, NULL, &used, &free1);
    CHECK_EQ_INT(free1, free0); /* every block went back */
    CHECK_EQ_INT(used, 0);
    lmx_pool_destroy(p);
    return steps;
}

/* (a): each sequence alone through lmx_lm_forward, in the same calls; counts the calls whose logits
 * differ from the batched run's */
static int compare_alone(lmx_lm *lm, seq_run *sr, int vocab, float *tmp) {
    int differ = 0;
    for (int i = 0; i < NSEQ; i++) {
        lmx_kv *kv = NULL;
        CHECK(lmx_kv_create(lm, CTX, &kv) == LMX_OK);
        if (!kv) return -1;
        int at = 0;
        for (int c = 0; c < sr[i].calls; c++) {
            CHECK(lmx_lm_forward(lm, kv, sr[i].ids + at, sr[i].call_n[c], tmp) == LMX_OK);
            at += sr[i].call_n[c];
            differ += memcmp(tmp, sr[i].logits + (size_t)c * vocab, (size_t)vocab * sizeof(float)) != 0;
        }
        lmx_kv_destroy(kv);
    }
    return differ;
}

static void test_model_level(const char *name, lmx_cpu_level level) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create_level(2, level, &be) == LMX_OK);
    lmx_lm *lm = be ? open_lm(name, be) : NULL;
    if (!lm) {
        lmx_backend_destroy(be);
        return;
    }
    const int vocab = lmx_lm_vocab_size(lm);
    seq_run *sr = calloc(NSEQ, sizeof *sr);
    float *tmp = calloc((size_t)vocab, sizeof *tmp);
    CHECK(sr && tmp);
    for (int i = 0; sr && i < NSEQ; i++) {
        sr[i].n_prompt = 1 + (i * 37 + 11) % 150; /* 11 .. 149, and some short ones */
        sr[i].n_total = sr[i].n_prompt + NDEC;
        sr[i].chunk = 8 + (i * 13) % 64;
        for (int j = 0; j < sr[i].n_total; j++) sr[i].ids[j] = tok_of(i, j, vocab);
        sr[i].logits = calloc((size_t)MAXCALLS * vocab, sizeof(float));
        CHECK(sr[i].logits);
    }
    int total_calls = 0;
    if (sr && tmp) {
        int steps = run_batched(lm, sr, vocab);
        for (int i = 0; i < NSEQ; i++) total_calls += sr[i].calls;
        int differ = compare_alone(lm, sr, vocab, tmp);
        fprintf(stderr, "%-20s %-7s %3d steps, %3d calls: %d with logits not bitwise equal to the sequence alone\n",
                name, lmx_backend_cpu_kernels(be), steps, total_calls, differ);
        CHECK_MSG(differ == 0, "%s at level %s: %d of %d calls differ from the sequence run alone", name,
                  lmx_backend_cpu_kernels(be), differ, total_calls);
    }
    for (int i = 0; sr && i < NSEQ; i++) free(sr[i].logits);
    free(sr);
    free(tmp);
    lmx_lm_close(lm);
    lmx_backend_destroy(be);
}

static void test_batched_equals_alone(void) {
    for (size_t m = 0; m < sizeof MODELS / sizeof *MODELS; m++)
        for (int L = LMX_CPU_SCALAR; L <= LMX_CPU_AVX512; L++) test_model_level(MODELS[m], (lmx_cpu_level)L);
}

/* ---- fork, copy-on-write, truncate ---- */

/* logits of ids[0..n) alone (one prefill) then ids[n..n+m) as one call: the reference of a sequence
 * continued after a fork / truncation at n */
static void alone2(lmx_lm *lm, const int32_t *a, int n, const int32_t *b, int m, float *out) {
    lmx_kv *kv = NULL;
    CHECK(lmx_kv_create(lm, CTX, &kv) == LMX_OK);
    if (!kv) return;
    CHECK(lmx_lm_forward(lm, kv, a, n, NULL) == LMX_OK);
    CHECK(lmx_lm_forward(lm, kv, b, m, out) == LMX_OK);
    lmx_kv_destroy(kv);
}

static lmx_status step1(lmx_pool *p, lmx_seq *s, const int32_t *ids, int n, float *logits) {
    lmx_step_row r = {.seq = s, .ids = ids, .n = n, .logits = logits};
    return lmx_lm_step(p, &r, 1);
}

static void test_fork_cow(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create_level(2, LMX_CPU_SCALAR, &be) == LMX_OK);
    lmx_lm *lm = be ? open_lm("qwen3-qknorm", be) : NULL;
    lmx_pool *p = NULL;
    if (lm) CHECK(lmx_pool_create(lm, 16 << 20, 64, &p) == LMX_OK);
    if (!p) goto out;
    const int V = lmx_lm_vocab_size(lm), bs = lmx_pool_block_size(p);
    CHECK_EQ_INT(bs, 16);
    int32_t pre[64], ca[8], cb[8], cc[8], cd[8];
    for (int i = 0; i < 64; i++) pre[i] = tok_of(1, i, V);
    for (int i = 0; i < 8; i++) ca[i] = tok_of(2, i, V), cb[i] = tok_of(3, i, V), cc[i] = tok_of(4, i, V),
                                cd[i] = tok_of(5, i, V);
    float *got = calloc((size_t)V, sizeof *got), *want = calloc((size_t)V, sizeof *want);
    lmx_seq *a = NULL, *b = NULL, *c = NULL;
    int64_t free0 = 0, used = 0, bytes = 0;
    lmx_pool_stats(p, &bytes, &used, &free0);
    CHECK(bytes > 0 && bytes <= 16 << 20);
    CHECK_EQ_INT(used, 0);
    CHECK(lmx_seq_create(p, CTX, &a) == LMX_OK);
    CHECK(step1(p, a, pre, 40, NULL) == LMX_OK); /* 2 full blocks + 8 positions */
    int64_t fr = 0;
    lmx_pool_stats(p, NULL, &used, &fr);
    CHECK_EQ_INT(fr, free0 - 3);
    CHECK(lmx_seq_fork(a, 40, &b) == LMX_OK); /* shares 2 blocks, copies the partial one */
    CHECK(lmx_seq_fork(a, 32, &c) == LMX_OK); /* shares 2 blocks, nothing copied */
    lmx_pool_stats(p, NULL, &used, &fr);
    CHECK_EQ_INT(fr, free0 - 4);
    int64_t block_bytes = used / 4;
    CHECK_EQ_INT(lmx_seq_pos(b), 40);
    CHECK_EQ_INT(lmx_seq_pos(c), 32);
    /* all three continue differently, in one step */
    float *ga = calloc((size_t)V, sizeof *ga), *gb = calloc((size_t)V, sizeof *gb), *gc = calloc((size_t)V, sizeof *gc);
    lmx_step_row rows[3] = {{.seq = a, .ids = ca, .n = 5, .logits = ga},
                            {.seq = b, .ids = cb, .n = 8, .logits = gb},
                            {.seq = c, .ids = cc, .n = 3, .logits = gc}};
    CHECK(lmx_lm_step(p, rows, 3) == LMX_OK);
    alone2(lm, pre, 40, ca, 5, want);
    CHECK_MSG(!memcmp(ga, want, (size_t)V * sizeof(float)), "source after fork differs from the unshared run");
    alone2(lm, pre, 40, cb, 8, want);
    CHECK_MSG(!memcmp(gb, want, (size_t)V * sizeof(float)), "fork at 40 differs from the unshared run");
    alone2(lm, pre, 32, cc, 3, want);
    CHECK_MSG(!memcmp(gc, want, (size_t)V * sizeof(float)), "fork at 32 differs from the unshared run");
    /* truncate a to 20: its block 1 is shared with b and c, so the next write copies it */
    CHECK(lmx_seq_truncate(a, 20) == LMX_OK);
    CHECK_EQ_INT(lmx_seq_pos(a), 20);
    lmx_pool_stats(p, NULL, NULL, &fr);
    int64_t before = fr;
    CHECK(step1(p, a, cd, 6, got) == LMX_OK);
    lmx_pool_stats(p, NULL, NULL, &fr);
    CHECK_EQ_INT(fr, before - 1); /* the copy of the shared block */
    alone2(lm, pre, 20, cd, 6, want);
    CHECK_MSG(!memcmp(got, want, (size_t)V * sizeof(float)), "truncated sequence differs from the unshared run");
    /* b and c still see their own positions 16..31 (a wrote its copy) */
    CHECK(step1(p, b, cd, 2, got) == LMX_OK);
    {
        int32_t bb[10];
        memcpy(bb, cb, sizeof(int32_t) * 8);
        memcpy(bb + 8, cd, sizeof(int32_t) * 2);
        alone2(lm, pre, 40, bb, 10, want);
        CHECK_MSG(!memcmp(got, want, (size_t)V * sizeof(float)), "fork changed by its source's write");
    }
    lmx_pool_stats(p, NULL, &used, &fr);
    CHECK_EQ_INT(used, (free0 - fr) * block_bytes);
    lmx_seq_destroy(a);
    lmx_seq_destroy(b);
    lmx_seq_destroy(c);
    lmx_pool_stats(p, NULL, &used, &fr);
    CHECK_EQ_INT(fr, free0);
    CHECK_EQ_INT(used, 0);
    free(ga);
    free(gb);
    free(gc);
    free(got);
    free(want);
out:
    lmx_pool_destroy(p);
    lmx_lm_close(lm);
    lmx_backend_destroy(be);
}

/* ---- errors: nothing runs ---- */

static void test_errors(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create_level(2, LMX_CPU_SCALAR, &be) == LMX_OK);
    lmx_lm *lm = be ? open_lm("llama-q4-g64", be) : NULL;
    lmx_pool *big = NULL, *p = NULL;
    if (lm) CHECK(lmx_pool_create(lm, 16 << 20, 32, &big) == LMX_OK);
    if (!big) goto out;
    /* the bytes of one block (used by 16 positions) and of the scratch, then a pool of 4 blocks */
    int64_t bytes = 0, used = 0, nfree = 0;
    lmx_pool_stats(big, &bytes, NULL, &nfree);
    {
        lmx_seq *s = NULL;
        CHECK(lmx_seq_create(big, CTX, &s) == LMX_OK);
        int32_t ids[16] = {0};
        CHECK(step1(big, s, ids, 16, NULL) == LMX_OK);
        lmx_pool_stats(big, NULL, &used, NULL);
        lmx_seq_destroy(s);
    }
    const int64_t scratch = bytes - nfree * used;
    lmx_pool_destroy(big);
    big = NULL;
    CHECK(lmx_pool_create(lm, scratch + 4 * used + used / 2, 32, &p) == LMX_OK);
    if (!p) goto out;
    lmx_pool_stats(p, &bytes, NULL, &nfree);
    CHECK_EQ_INT(nfree, 4);
    CHECK_EQ_INT(bytes, scratch + 4 * used);
    CHECK(lmx_pool_create(lm, scratch + used / 2, 32, &big) == LMX_ERR_OUT_OF_MEMORY);
    const int V = lmx_lm_vocab_size(lm);
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = tok_of(7, i, V);
    lmx_seq *a = NULL, *b = NULL, *c = NULL;
    CHECK(lmx_seq_create(p, CTX, &a) == LMX_OK);
    CHECK(lmx_seq_create(p, CTX, &b) == LMX_OK);
    CHECK(lmx_seq_create(p, 10, &c) == LMX_OK);
    CHECK(step1(p, a, ids, 20, NULL) == LMX_OK); /* 2 blocks */
    /* a needs 1 more block, b 2: 3 > 2 free → out of memory naming row 1 (b after a) */
    lmx_step_row rows[2] = {{.seq = a, .ids = ids, .n = 13}, {.seq = b, .ids = ids, .n = 19}};
    CHECK(lmx_lm_step(p, rows, 2) == LMX_ERR_OUT_OF_MEMORY);
    CHECK_MSG(strstr(lmx_last_error_detail(), "row 1") != NULL, "detail: %s", lmx_last_error_detail());
    CHECK_EQ_INT(lmx_seq_pos(a), 20);
    CHECK_EQ_INT(lmx_seq_pos(b), 0);
    lmx_pool_stats(p, NULL, NULL, &nfree);
    CHECK_EQ_INT(nfree, 2);
    /* c past its max_context (10): invalid argument naming row 1, a's row not run */
    lmx_step_row rows2[2] = {{.seq = a, .ids = ids, .n = 1}, {.seq = c, .ids = ids, .n = 11}};
    CHECK(lmx_lm_step(p, rows2, 2) == LMX_ERR_INVALID_ARGUMENT);
    CHECK_MSG(strstr(lmx_last_error_detail(), "row 1") != NULL, "detail: %s", lmx_last_error_detail());
    CHECK_EQ_INT(lmx_seq_pos(a), 20);
    CHECK_EQ_INT(lmx_seq_pos(c), 0);
    /* the same sequence twice, more tokens than the step's rows, an id outside the vocabulary */
    lmx_step_row twice[2] = {{.seq = a, .ids = ids, .n = 1}, {.seq = a, .ids = ids, .n = 1}};
    CHECK(lmx_lm_step(p, twice, 2) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(step1(p, b, ids, 33, NULL) == LMX_ERR_INVALID_ARGUMENT);
    int32_t bad = V;
    CHECK(step1(p, b, &bad, 1, NULL) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_seq_truncate(a, 21) == LMX_ERR_INVALID_ARGUMENT);
    lmx_seq *f = NULL;
    CHECK(lmx_seq_fork(a, 21, &f) == LMX_ERR_INVALID_ARGUMENT);
    /* a fork with a partial block needs a free one */
    CHECK(step1(p, b, ids, 32, NULL) == LMX_OK); /* the last 2 blocks */
    CHECK(lmx_seq_fork(a, 18, &f) == LMX_ERR_OUT_OF_MEMORY);
    CHECK(lmx_seq_fork(a, 16, &f) == LMX_OK); /* whole blocks only */
    CHECK_EQ_INT(lmx_seq_pos(f), 16);
    CHECK(lmx_seq_truncate(b, 0) == LMX_OK); /* its 2 blocks back */
    lmx_pool_stats(p, NULL, NULL, &nfree);
    CHECK_EQ_INT(nfree, 2);
    lmx_seq_destroy(a);
    lmx_pool_stats(p, NULL, NULL, &nfree);
    CHECK_EQ_INT(nfree, 3); /* block 0 is still f's */
    lmx_seq_destroy(f);
    lmx_seq_destroy(b);
    lmx_seq_destroy(c);
    lmx_pool_stats(p, NULL, &used, &nfree);
    CHECK_EQ_INT(nfree, 4);
    CHECK_EQ_INT(used, 0);
out:
    lmx_pool_destroy(big);
    lmx_pool_destroy(p);
    lmx_lm_close(lm);
    lmx_backend_destroy(be);
}


/* ---- the backend ops alone: paged attention / rope_qk_store of a row = the row alone ---- */

static uint32_t rng_next(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}
static float frand(uint32_t *s) { return (float)rng_next(s) / (float)(1u << 24) - 0.5f; }

/* Three sequences (positions 0..L[s]) stored through scrambled block tables by one rope_qk_store call
 * over all their rows, then one attention call over rows of all three mixed with a window or not;
 * every row's output equals the same row through a ring cache of its sequence alone, one row per
 * call (T = 1), bit for bit; with_sinks: both with gpt-oss attention sinks. */
static void test_paged_ops_level(lmx_cpu_level level, int window, bool with_sinks) {
    enum { NH = 4, NKV = 2, D = 16, BS = 16, NB = 27, NS = 3 };
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cpu_create_level(2, level, &be) == LMX_OK);
    if (!be) return;
    const lmx_backend_ops *op = be->ops;
    CHECK(op->paged_kv);
    const int len[NS] = {70, 5, 130}; /* positions of each sequence; rows: all of them */
    int T = 0;
    for (int i = 0; i < NS; i++) T += len[i];
    uint32_t seed = 12345;
    float *q = calloc((size_t)T * NH * D, sizeof(float)), *k = calloc((size_t)T * NKV * D, sizeof(float)),
          *v = calloc((size_t)T * NKV * D, sizeof(float));
    int32_t *pos = calloc((size_t)T, sizeof(int32_t)), *seq = calloc((size_t)T, sizeof(int32_t));
    int32_t tables[NS * 9];
    /* physical blocks handed out in a scrambled order (7 is prime to 27: a permutation) */
    for (int i = 0; i < NS * 9; i++) tables[i] = (i * 7 + 3) % NB;
    int t = 0;
    /* interleave the sequences' rows: row order differs from position order across sequences */
    int at[NS] = {0, 0, 0};
    while (t < T)
        for (int i = 0; i < NS; i++)
            for (int r = 0; r < 1 + i && at[i] < len[i]; r++, t++) pos[t] = at[i]++, seq[t] = i;
    for (size_t i = 0; i < (size_t)T * NH * D; i++) q[i] = frand(&seed);
    for (size_t i = 0; i < (size_t)T * NKV * D; i++) k[i] = frand(&seed), v[i] = frand(&seed);
    float inv[D / 2];
    for (int i = 0; i < D / 2; i++) inv[i] = 1.0f / (float)(1 << i);
    lmx_weight_desc wd = {.name = "inv_freq", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = D / 2,
                          .dtype = LMX_DTYPE_F32, .data = inv};
    lmx_bweight *wf = NULL, *wsk = NULL;
    CHECK(op->weight_upload(be, &wd, &wf) == LMX_OK);
    const float sinks[NH] = {0.5f, -1.0f, 3.0f, 0.0f};
    lmx_weight_desc sd = {.name = "sinks", .kind = LMX_WEIGHT_VECTOR, .rows = 1, .cols = NH, .dtype = LMX_DTYPE_F32,
                          .data = sinks};
    if (with_sinks) CHECK(op->weight_upload(be, &sd, &wsk) == LMX_OK);
    lmx_buf *bq = NULL, *bk = NULL, *bv = NULL, *kc = NULL, *vc = NULL, *out = NULL;
    lmx_buf *q1 = NULL, *k1 = NULL, *v1 = NULL, *kr = NULL, *vr = NULL, *o1 = NULL;
    const size_t cap = (size_t)NB * BS, ring = 256;
    CHECK(op->buf_alloc(be, (size_t)T * NH * D, &bq) == LMX_OK && op->buf_alloc(be, (size_t)T * NKV * D, &bk) == LMX_OK &&
          op->buf_alloc(be, (size_t)T * NKV * D, &bv) == LMX_OK && op->buf_alloc(be, NKV * cap * D, &kc) == LMX_OK &&
          op->buf_alloc(be, NKV * cap * D, &vc) == LMX_OK && op->buf_alloc(be, (size_t)T * NH * D, &out) == LMX_OK &&
          op->buf_alloc(be, NH * D, &q1) == LMX_OK && op->buf_alloc(be, NKV * D, &k1) == LMX_OK &&
          op->buf_alloc(be, NKV * D, &v1) == LMX_OK && op->buf_alloc(be, NKV * ring * D, &kr) == LMX_OK &&
          op->buf_alloc(be, NKV * ring * D, &vr) == LMX_OK && op->buf_alloc(be, NH * D, &o1) == LMX_OK);
    if (!o1) goto out;
    op->buf_write(be, bq, 0, q, (size_t)T * NH * D);
    op->buf_write(be, bk, 0, k, (size_t)T * NKV * D);
    op->buf_write(be, bv, 0, v, (size_t)T * NKV * D);
    lmx_kv_map map = {.tables = tables, .seq = seq, .n_seqs = NS, .stride = 9, .block_size = BS};
    lmx_qk_rope_params rp = {.n_tokens = T, .n_heads = NH, .n_kv_heads = NKV, .head_dim = D, .rot_dim = D,
                             .capacity = (int)cap, .inv_freq = wf, .mscale = 1.0f, .map = &map};
    CHECK(op->rope_qk_store(be, bq, bk, bv, kc, vc, &rp, pos) == LMX_OK);
    lmx_attn_params ap = {.n_tokens = T, .n_heads = NH, .n_kv_heads = NKV, .head_dim = D, .capacity = (int)cap,
                          .window = window, .scale = 0.25f, .map = &map, .sinks = wsk};
    CHECK(op->attention(be, bq, kc, vc, out, &ap, pos) == LMX_OK);
    float *got = calloc((size_t)T * NH * D, sizeof(float)), *want = calloc(NH * D, sizeof(float));
    CHECK(op->buf_read(be, out, 0, got, (size_t)T * NH * D) == LMX_OK);
    int differ = 0;
    for (int s = 0; s < NS; s++) /* each sequence alone, position by position, through a ring */
        for (int r = 0; r < T; r++) {
            if (seq[r] != s) continue;
            op->buf_write(be, q1, 0, q + (size_t)r * NH * D, NH * D);
            op->buf_write(be, k1, 0, k + (size_t)r * NKV * D, NKV * D);
            op->buf_write(be, v1, 0, v + (size_t)r * NKV * D, NKV * D);
            lmx_qk_rope_params r1 = rp;
            r1.n_tokens = 1, r1.capacity = (int)ring, r1.map = NULL;
            CHECK(op->rope_qk_store(be, q1, k1, v1, kr, vr, &r1, pos + r) == LMX_OK);
            lmx_attn_params a1 = ap;
            a1.n_tokens = 1, a1.capacity = (int)ring, a1.map = NULL;
            CHECK(op->attention(be, q1, kr, vr, o1, &a1, pos + r) == LMX_OK);
            CHECK(op->buf_read(be, o1, 0, want, NH * D) == LMX_OK);
            differ += memcmp(want, got + (size_t)r * NH * D, NH * D * sizeof(float)) != 0;
        }
    CHECK_MSG(differ == 0, "%s, window %d, sinks %d: %d of %d rows of paged attention differ from the row alone",
              lmx_backend_cpu_kernels(be), window, with_sinks, differ, T);
    /* a map naming a block outside the cache is refused */
    tables[0] = NB;
    CHECK(op->attention(be, bq, kc, vc, out, &ap, pos) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(op->rope_qk_store(be, bq, bk, bv, kc, vc, &rp, pos) == LMX_ERR_INVALID_ARGUMENT);
    free(got);
    free(want);
out:;
    lmx_buf *all[] = {bq, bk, bv, kc, vc, out, q1, k1, v1, kr, vr, o1};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) op->buf_free(be, all[i]);
    op->weight_free(be, wf);
    op->weight_free(be, wsk);
    free(q);
    free(k);
    free(v);
    free(pos);
    free(seq);
    lmx_backend_destroy(be);
}

static void test_paged_ops(void) {
    for (int L = LMX_CPU_SCALAR; L <= LMX_CPU_AVX512; L++) {
        test_paged_ops_level((lmx_cpu_level)L, 0, false);
        test_paged_ops_level((lmx_cpu_level)L, 24, false);
        test_paged_ops_level((lmx_cpu_level)L, 24, true);
    }
}

/* ---- the engine seam (engine_lm.c) ---- */

static void test_engine_seam(void) {
    const lmx_engine *e = lmx_engine_lm();
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/qwen3-qknorm", LMX_SOURCE_DIR);
    lmx_engine_load_opts o = {.device = LMX_DEVICE_CPU, .use_mmap = true, .max_context = CTX, .kv_cache = true,
                              .n_threads = 2};
    lmx_model_facts f;
    memset(&f, 0, sizeof f);
    lmx_engine_model *m = NULL;
    CHECK(e->open(NULL, dir, &o, &m, &f) == LMX_OK);
    lmx_model_facts_release(&f);
    if (!m) return;
    CHECK(e->pool_create && e->step && e->seq_fork);
    lmx_engine_pool *p = NULL;
    CHECK(e->pool_create(m, 8 << 20, 32, &p) == LMX_OK);
    const int V = f.info.vocab_size;
    int32_t ids[24];
    for (int i = 0; i < 24; i++) ids[i] = tok_of(9, i, V);
    float *a = calloc((size_t)V, sizeof *a), *b = calloc((size_t)V, sizeof *b), *w = calloc((size_t)V, sizeof *w);
    lmx_engine_seq *s1 = NULL, *s2 = NULL;
    if (p) {
        CHECK(e->seq_create(p, CTX, &s1) == LMX_OK);
        CHECK(e->seq_create(p, CTX, &s2) == LMX_OK);
    }
    if (s1 && s2) {
        int32_t tok = 0;
        lmx_engine_sample smp = {.sampling = {.temperature = 0}, .history = ids, .n_history = 20, .u = 0.5};
        lmx_engine_step_row rows[2] = {{.seq = s1, .ids = ids, .n = 20, .logits = a},
                                       {.seq = s2, .ids = ids + 4, .n = 7, .sample = &smp, .logits = b, .token = &tok}};
        CHECK(e->step(p, rows, 2) == LMX_OK);
        CHECK_EQ_INT(e->seq_pos(s1), 20);
        CHECK_EQ_INT(e->seq_pos(s2), 7);
        CHECK_EQ_INT(tok, -1); /* no device sampling on the CPU: the logits came back */
        lmx_engine_kv *kv = NULL;
        CHECK(e->kv_create(m, CTX, &kv) == LMX_OK);
        CHECK(e->forward(m, kv, ids, 20, w) == LMX_OK);
        CHECK(!memcmp(a, w, (size_t)V * sizeof(float)));
        e->kv_destroy(kv);
        lmx_engine_seq *s3 = NULL;
        CHECK(e->seq_fork(s1, 18, &s3) == LMX_OK);
        CHECK(s3 && e->seq_pos(s3) == 18);
        CHECK(e->seq_truncate(s1, 3) == LMX_OK);
        CHECK_EQ_INT(e->seq_pos(s1), 3);
        int64_t bytes = 0, used = 0, nfree = 0;
        e->pool_stats(p, &bytes, &used, &nfree);
        CHECK(bytes > 0 && bytes <= 8 << 20 && used > 0);
        e->seq_destroy(s3);
    }
    e->seq_destroy(s1);
    e->seq_destroy(s2);
    e->pool_destroy(p);
    free(a);
    free(b);
    free(w);
    e->close(m);
}

int main(void) {
    lmx_log_set_level(LMX_LOG_ERROR);
    RUN(test_paged_ops);
    RUN(test_engine_seam);
    RUN(test_errors);
    RUN(test_fork_cow);
    RUN(test_batched_equals_alone);
    return lmx_test_summary();
}
