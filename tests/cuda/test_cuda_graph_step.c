/* test_cuda_graph_step.c — batched decode steps (lmx_lm_step over a paged pool) replayed from CUDA
 * graphs give bit for bit what the same steps give eagerly: two CUDA backends, graphs on
 * (lmx_cuda_options.graphs) and off, run one schedule of steps on the same fixture model, and every
 * row's logits (memcmp) and device-sampled token must be equal. The schedule moves through decode
 * steps of 1, 3 and 16 rows (buckets 1, 4, 16), sequences finishing and joining (new ones and forks
 * of running ones, so rows carry other positions and block tables) between them, then back to 3
 * rows and 1 row (the buckets' graphs replayed with new uploaded data: no new capture), and a
 * sequence growing past one block (wider tables, a longer attention grid: a new graph). Decode rows
 * are mostly logits-only (compared), some device-sampled greedy, some sampled at temperature 0.8
 * (sampled after the graph launch). Prefill chunks run in the mixed steps between the phases (the
 * eager path on both). The graphs backend must report replays (lmx_backend_cuda_graph_stats) in
 * every decode phase, and none captured anew where a bucket comes back. Models: q4 (untied head),
 * sliding windows with gemma3's sandwich norms and soft-capping, qk-norm, longrope.
 * Exits 77 (skipped) without a CUDA device. Label: gpu. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "lmx_test.h"
#include "model/lm.h"

#ifdef LMX_HAVE_CUDA
enum { NSEQ = 24, CTX = 256, MAX_ROWS = 96, CHUNK = 16, HIST = 160 };

/* one sequence of the schedule on both backends */
typedef struct gseq {
    lmx_seq *s[2];       /* graphs on, off */
    int32_t ids[HIST];   /* prompt, then the tokens fed back */
    int n_prompt, done;  /* positions forwarded */
    int n_ids;           /* ids known */
    int mode;            /* decode rows: 0 logits only, 1 greedy on the device, 2 temperature 0.8 */
    bool live;
} gseq;

typedef struct gctx {
    lmx_lm *lm[2];
    lmx_pool *pool[2];
    int vocab;
    gseq q[NSEQ];
    float *logits[2];    /* [MAX_ROWS][vocab] */
    int steps, rows_compared, tokens_compared;
    uint64_t u_state;
} gctx;

static lmx_backend *gpu_create(bool graphs) {
    lmx_cuda_options o = lmx_cuda_options_default();
    o.graphs = graphs;
    lmx_backend *be = NULL;
    lmx_status s = lmx_backend_cuda_create_ex(0, &o, &be);
    CHECK_MSG(s == LMX_OK, "cuda backend: %s", lmx_last_error_detail());
    return be;
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

static double rel_diff(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void seq_start(gctx *g, int i, int n_prompt, int mode) {
    gseq *q = &g->q[i];
    q->n_prompt = n_prompt;
    q->n_ids = n_prompt;
    q->done = 0;
    q->mode = mode;
    q->live = true;
    for (int j = 0; j < n_prompt; j++) q->ids[j] = (int32_t)((i * 7919 + j * 104729 + 13) % g->vocab);
    for (int b = 0; b < 2; b++) CHECK(lmx_seq_create(g->pool[b], CTX, &q->s[b]) == LMX_OK);
}

/* sequence i as a fork of sequence src at n of its positions, then its own prompt tail */
static void seq_fork(gctx *g, int i, int src, int n, int tail, int mode) {
    gseq *q = &g->q[i], *o = &g->q[src];
    memcpy(q->ids, o->ids, (size_t)n * sizeof *q->ids);
    for (int j = 0; j < tail; j++) q->ids[n + j] = (int32_t)((i * 31 + j * 7 + 5) % g->vocab);
    q->n_prompt = q->n_ids = n + tail;
    q->done = n;
    q->mode = mode;
    q->live = true;
    for (int b = 0; b < 2; b++) CHECK(lmx_seq_fork(o->s[b], n, &q->s[b]) == LMX_OK);
}

static void seq_end(gctx *g, int i) {
    gseq *q = &g->q[i];
    for (int b = 0; b < 2; b++) {
        lmx_seq_destroy(q->s[b]);
        q->s[b] = NULL;
    }
    q->live = false;
}

/* One step of every live sequence (a prefill chunk or a decode row) on both backends; compares the
 * rows' logits and tokens and feeds the next ids. Returns the rows of the step, or -1. */
static int run_step(gctx *g) {
    lmx_step_row rows[2][NSEQ];
    lmx_sample_args args[NSEQ];
    int32_t tok[2][NSEQ];
    int who[NSEQ], nr = 0;
    for (int i = 0; i < NSEQ; i++) {
        gseq *q = &g->q[i];
        if (!q->live) continue;
        const int n = q->done < q->n_prompt ? (q->n_prompt - q->done < CHUNK ? q->n_prompt - q->done : CHUNK) : 1;
        const bool last = q->done + n == q->n_ids;
        const bool dev = last && q->mode > 0;
        args[nr] = (lmx_sample_args){
            .sampling = {.temperature = q->mode == 2 ? 0.8f : 0.0f, .top_p = q->mode == 2 ? 0.9f : 0.0f}};
        g->u_state = g->u_state * 6364136223846793005ull + 1442695040888963407ull;
        args[nr].u = (double)(g->u_state >> 11) * 0x1.0p-53;
        for (int b = 0; b < 2; b++)
            rows[b][nr] = (lmx_step_row){.seq = q->s[b],
                                         .ids = q->ids + q->done,
                                         .n = n,
                                         .sample = dev ? &args[nr] : NULL,
                                         .logits = last ? g->logits[b] + (size_t)nr * g->vocab : NULL,
                                         .token = &tok[b][nr]};
        who[nr++] = i;
    }
    if (nr == 0) return 0;
    for (int b = 0; b < 2; b++) {
        for (int r = 0; r < nr; r++) tok[b][r] = -2;
        lmx_status st = lmx_lm_step(g->pool[b], rows[b], nr);
        CHECK_MSG(st == LMX_OK, "step %d (graphs %s): %s", g->steps, b == 0 ? "on" : "off", lmx_last_error_detail());
        if (st != LMX_OK) return -1;
    }
    for (int r = 0; r < nr; r++) {
        gseq *q = &g->q[who[r]];
        q->done += rows[0][r].n;
        if (!rows[0][r].logits) continue;
        int32_t next;
        if (rows[0][r].sample) {
            CHECK_MSG(tok[0][r] == tok[1][r], "step %d seq %d: token %d with graphs, %d without", g->steps, who[r],
                      tok[0][r], tok[1][r]);
            g->tokens_compared++;
            next = tok[0][r];
        } else {
            next = -1;
        }
        if (next < 0) { /* logits-only, or undecided on the device: the logits came back */
            const float *a = g->logits[0] + (size_t)r * g->vocab, *e = g->logits[1] + (size_t)r * g->vocab;
            const bool same = memcmp(a, e, sizeof(float) * (size_t)g->vocab) == 0;
            CHECK_MSG(same, "step %d seq %d (position %d): logits with graphs differ from eager (rel %.3g)", g->steps,
                      who[r], q->done - 1, rel_diff(a, e, g->vocab));
            g->rows_compared++;
            next = argmax(a, g->vocab);
        }
        if (q->n_ids < HIST) q->ids[q->n_ids++] = next;
    }
    g->steps++;
    return nr;
}

/* steps until every live sequence has forwarded its prompt (mixed prefill + decode steps) */
static void prefill_all(gctx *g) {
    for (int guard = 0; guard < 64; guard++) {
        bool pending = false;
        for (int i = 0; i < NSEQ; i++) pending = pending || (g->q[i].live && g->q[i].done < g->q[i].n_prompt);
        if (!pending || run_step(g) < 0) return;
    }
}

/* `steps` decode-only steps of `rows` rows each; the graphs backend must replay at least `min_replays`
 * of them and capture at most `max_captures` new graphs */
static void decode_phase(gctx *g, const lmx_backend *be, const char *what, int rows, int steps, int min_replays,
                         int max_captures, bool strict) {
    if (!strict) {
        min_replays = 0;
        max_captures = steps;
    }
    const lmx_cuda_graph_stats s0 = lmx_backend_cuda_graph_stats(be);
    for (int k = 0; k < steps; k++) {
        int n = run_step(g);
        if (n < 0) return;
        CHECK_MSG(n == rows, "%s: a decode step of %d rows (expected %d)", what, n, rows);
    }
    const lmx_cuda_graph_stats s1 = lmx_backend_cuda_graph_stats(be);
    const int replays = (int)(s1.replayed - s0.replayed), caps = (int)(s1.captured - s0.captured);
    CHECK_MSG(replays >= min_replays && caps <= max_captures,
              "%s: %d replays (want >= %d), %d captures (want <= %d), %d redone", what, replays, min_replays, caps,
              max_captures, (int)(s1.redone - s0.redone));
    fprintf(stderr, "    %-34s %2d rows: %d steps, %d replayed, %d captured, %d redone\n", what, rows, steps, replays,
            caps, (int)(s1.redone - s0.redone));
}

/* strict: every decode phase replays (false for longrope, whose rows switch to the long factors one
 * by one at position 32: a step mixing both runs eagerly on the graphs backend too) */
static void graph_model(const char *name, bool strict, lmx_backend *with, lmx_backend *without) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", LMX_SOURCE_DIR, name);
    gctx *g = calloc(1, sizeof *g);
    if (!g) return;
    g->u_state = 0x5eed;
    lmx_backend *bes[2] = {with, without};
    lmx_status st = LMX_OK;
    for (int b = 0; b < 2 && st == LMX_OK; b++) {
        lmx_lm_options o = {.device = LMX_DEVICE_GPU, .backend = bes[b]};
        st = lmx_lm_open(dir, &o, &g->lm[b]);
        if (st == LMX_OK) st = lmx_pool_create(g->lm[b], 64ll << 20, MAX_ROWS, &g->pool[b]);
    }
    CHECK_MSG(st == LMX_OK, "%s: open / pool: %s", name, lmx_last_error_detail());
    if (st == LMX_OK) {
        g->vocab = lmx_lm_vocab_size(g->lm[0]);
        for (int b = 0; b < 2; b++) g->logits[b] = malloc(sizeof(float) * (size_t)MAX_ROWS * g->vocab);
    }
    if (st == LMX_OK && g->logits[0] && g->logits[1]) {
        fprintf(stderr, "  %s:\n", name);
        /* every position below 64 (one block, the shortest attention grid) until the last phase, so the
         * buckets' graphs come back unchanged */
        seq_start(g, 0, 9, 0);
        prefill_all(g);
        decode_phase(g, with, "one sequence", 1, 5, 3, 1, strict);
        seq_start(g, 1, 21, 1);
        seq_start(g, 2, 4, 2);
        prefill_all(g);
        decode_phase(g, with, "three sequences", 3, 5, 3, 1, strict);
        for (int i = 3; i < 16; i++) seq_start(g, i, 2 + (i * 5) % 23, i % 4 == 0 ? 1 : i % 7 == 0 ? 2 : 0);
        prefill_all(g);
        decode_phase(g, with, "sixteen sequences", 16, 5, 3, 1, strict);
        /* three finish, three join (a new one, two forks of running ones): 16 rows, other tables */
        seq_end(g, 0);
        seq_end(g, 5);
        seq_end(g, 9);
        seq_start(g, 16, 12, 0);
        seq_fork(g, 17, 3, g->q[3].done - 1, 3, 0);
        seq_fork(g, 18, 1, 10, 6, 1);
        prefill_all(g);
        decode_phase(g, with, "sixteen, some finished or new", 16, 4, 4, 0, strict);
        for (int i = 1; i < 19; i++)
            if (g->q[i].live && i != 2 && i != 17 && i != 18) seq_end(g, i);
        decode_phase(g, with, "three again (other sequences)", 3, 4, 4, 0, strict);
        seq_end(g, 2);
        seq_end(g, 18);
        decode_phase(g, with, "one again (another sequence)", 1, 4, 4, 0, strict);
        /* past one block: a wider table, a longer attention grid */
        seq_end(g, 17);
        seq_start(g, 19, 90, 0);
        prefill_all(g);
        decode_phase(g, with, "one sequence past a block", 1, 5, 3, 1, true);
        seq_end(g, 19);
        const lmx_cuda_graph_stats so = lmx_backend_cuda_graph_stats(without);
        CHECK_MSG(so.captured == 0 && so.replayed == 0, "%s: the backend without graphs captured %d, replayed %d",
                  name, (int)so.captured, (int)so.replayed);
        fprintf(stderr, "    %d steps, %d rows' logits and %d tokens identical with and without graphs\n", g->steps,
                g->rows_compared, g->tokens_compared);
    }
    for (int i = 0; i < NSEQ; i++)
        if (g->q[i].live) seq_end(g, i);
    for (int b = 0; b < 2; b++) {
        lmx_pool_destroy(g->pool[b]);
        lmx_lm_close(g->lm[b]);
        free(g->logits[b]);
    }
    free(g);
}

static void test_graph_steps(void) {
    const char *models[] = {"llama-q4-g64", "gemma3-text-window", "qwen3-qknorm", "phi3-longrope"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        /* fresh backends per model: the graph counters and slots start empty */
        lmx_backend *with = gpu_create(true), *without = gpu_create(false);
        if (with && without) graph_model(models[i], strcmp(models[i], "phi3-longrope") != 0, with, without);
        lmx_backend_destroy(with);
        lmx_backend_destroy(without);
    }
}
#endif

/* no such device: the backend is refused (every build) */
static void test_no_device_error(void) {
    lmx_backend *be = NULL;
    CHECK(lmx_backend_cuda_create(999, &be) == LMX_ERR_GPU_NOT_AVAILABLE && be == NULL);
}

int main(void) {
    RUN(test_no_device_error);
#ifdef LMX_HAVE_CUDA
    if (lmx_cuda_available(NULL)) {
        RUN(test_graph_steps);
        return lmx_test_summary();
    }
#endif
    SKIP("no CUDA device (or a build without CUDA): batched-step graph tests skipped");
    return lmx_test_failures ? 1 : 77;
}
