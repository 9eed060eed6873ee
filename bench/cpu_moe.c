/* cpu_moe.c — microbenchmark of the sparse MLP block of a mixture-of-experts model on the CPU backend
 * (issue 16 A/Bs): LAYERS random layers of the Qwen3-30B-A3B shape by default (128 experts of
 * [768, 2048], top-8; MLX 4-bit g64 experts with bf16 scales, an 8-bit router), and the model's op
 * sequence per layer: router matmul, moe_route, moe_gate_up, moe_matmul (down), moe_combine, over T
 * tokens. Layers are visited in turn, so each step reads its k experts from memory as decode does.
 * Prints the median and the best µs per layer step over `steps` steps after one warm-up pass.
 *
 *   lmx_cpu_moe [layers 4] [T 1] [threads 2] [steps 960] [experts 128] [top_k 8] [hidden 2048]
 *               [inter 768]
 * Built from the backend ops only, so the same file builds against another tree's library (an A/B
 * against main: cc -O2 -std=c11 -D_GNU_SOURCE -I<tree>/include -I<tree>/src bench/cpu_moe.c
 * <build>/liblmx_static.a and the libraries lmx links).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "formats/safetensors.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static inline uint8_t rbyte(void) { return (uint8_t)((rng = rng * 6364136223846793005ull + 1) >> 56); }

/* one random MLX affine stack [E, rows, cols] of `bits`, g64, bf16 scales and biases; parts[E] */
typedef struct stack_mem {
    uint8_t *codes;
    uint16_t *sb; /* [2, E * rows * cols / 64] scales then biases */
    lmx_weight_desc *parts;
} stack_mem;

static void stack_make(stack_mem *s, int E, int64_t rows, int64_t cols, int bits) {
    const size_t n = (size_t)E * (size_t)rows * (size_t)cols, ng = n / 64;
    s->codes = malloc(n * (size_t)bits / 8);
    for (size_t i = 0; i < n * (size_t)bits / 8; i++) s->codes[i] = rbyte();
    s->sb = malloc(2 * ng * sizeof *s->sb);
    for (size_t i = 0; i < 2 * ng; i++) s->sb[i] = lmx_f32_to_bf16(i < ng ? 0.004f * (1 + rbyte() / 256.0f) : -0.03f);
    s->parts = calloc((size_t)E, sizeof *s->parts);
    for (int e = 0; e < E; e++)
        s->parts[e] = (lmx_weight_desc){.name = "experts", .kind = LMX_WEIGHT_QUANT, .dtype = LMX_DTYPE_BF16,
                                        .rows = rows, .cols = cols, .bits = bits, .group_size = 64,
                                        .data = s->codes, .scales = s->sb, .biases = s->sb + ng,
                                        .row0 = (int64_t)e * rows, .bias_dtype = LMX_DTYPE_F32};
}

static void stack_free(stack_mem *s) {
    free(s->codes);
    free(s->sb);
    free(s->parts);
}

typedef struct layer {
    stack_mem mr, mg, mu, md;
    lmx_bweight *router, *gate, *up, *down;
} layer;

static int arg(int argc, char **argv, int i, int def) { return argc > i ? atoi(argv[i]) : def; }

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const int L = arg(argc, argv, 1, 4), T = arg(argc, argv, 2, 1), threads = arg(argc, argv, 3, 2);
    const int steps = arg(argc, argv, 4, 960), E = arg(argc, argv, 5, 128), K = arg(argc, argv, 6, 8);
    const int H = arg(argc, argv, 7, 2048), I = arg(argc, argv, 8, 768);
    if (L < 1 || T < 1 || steps < 1 || K < 1 || K > E || H % 64 || I % 64) {
        fprintf(stderr, "usage: %s [layers] [T] [threads] [steps] [experts] [top_k] [hidden] [inter]\n", argv[0]);
        return 2;
    }
    lmx_backend *be = NULL;
    if (lmx_backend_cpu_create(threads, &be) != LMX_OK) return 1;
    const lmx_backend_ops *op = be->ops;
    layer *ls = calloc((size_t)L, sizeof *ls);
    lmx_status st = LMX_OK;
    for (int l = 0; st == LMX_OK && l < L; l++) {
        stack_make(&ls[l].mr, 1, E, H, 8);
        stack_make(&ls[l].mg, E, I, H, 4);
        stack_make(&ls[l].mu, E, I, H, 4);
        stack_make(&ls[l].md, E, H, I, 4);
        ls[l].mr.parts[0].name = "router";
        st = op->weight_upload(be, &ls[l].mr.parts[0], &ls[l].router);
        if (st == LMX_OK) st = op->weight_upload_experts(be, ls[l].mg.parts, E, &ls[l].gate);
        if (st == LMX_OK) st = op->weight_upload_experts(be, ls[l].mu.parts, E, &ls[l].up);
        if (st == LMX_OK) st = op->weight_upload_experts(be, ls[l].md.parts, E, &ls[l].down);
    }
    if (st == LMX_OK && op->upload_end) st = op->upload_end(be);
    const size_t S = (size_t)T * (size_t)K;
    lmx_buf *x = NULL, *logits = NULL, *table = NULL, *g = NULL, *u = NULL, *f = NULL;
    if (st == LMX_OK) st = op->buf_alloc(be, (size_t)T * H, &x);          /* [T, hidden] residual (and input) */
    if (st == LMX_OK) st = op->buf_alloc(be, (size_t)T * E, &logits);     /* [T, experts] */
    if (st == LMX_OK) st = op->buf_alloc(be, lmx_moe_table_floats(T, K, E), &table);
    if (st == LMX_OK) st = op->buf_alloc(be, S * I, &g);                  /* [S, inter] */
    if (st == LMX_OK) st = op->buf_alloc(be, S * I, &u);                  /* [S, inter] */
    if (st == LMX_OK) st = op->buf_alloc(be, S * H, &f);                  /* [S, hidden] */
    if (st != LMX_OK) {
        fprintf(stderr, "%s\n", lmx_last_error_detail());
        return 1;
    }
    float *xh = malloc(sizeof(float) * (size_t)T * H);
    for (size_t i = 0; i < (size_t)T * H; i++) xh[i] = (float)((int)rbyte() - 128) * 1e-2f;
    op->buf_write(be, x, 0, xh, (size_t)T * H);
    const lmx_moe_routing r = {.table = table, .n_tokens = T, .top_k = K, .n_experts = E, .rule = LMX_MOE_TOPK_SOFTMAX};
    double *dt = malloc(sizeof(double) * (size_t)steps);
    for (int s = -L; s < steps; s++) { /* one warm-up pass over the layers */
        const layer *ly = &ls[(s + L) % L];
        const double t0 = now_s();
        st = op->matmul(be, ly->router, x, 0, T, logits);
        if (st == LMX_OK) st = op->moe_route(be, logits, &r);
        if (st == LMX_OK) st = op->moe_gate_up(be, ly->gate, ly->up, x, &r, LMX_BACT_SILU_MUL, g, u);
        if (st == LMX_OK) st = op->moe_matmul(be, ly->down, g, false, &r, f);
        if (st == LMX_OK) st = op->moe_combine(be, x, f, H, &r);
        if (st != LMX_OK) {
            fprintf(stderr, "%s\n", lmx_last_error_detail());
            return 1;
        }
        if (s >= 0) dt[s] = now_s() - t0;
        if ((s + L) % L == L - 1) op->buf_write(be, x, 0, xh, (size_t)T * H); /* keep the residual bounded */
    }
    qsort(dt, (size_t)steps, sizeof *dt, cmp_d);
    printf("moe layer E %d top-%d [%d, %d] q4, T %d, threads %d, %d layers, %s: median %.1f us, best %.1f us per "
           "layer step\n",
           E, K, I, H, T, threads, L, lmx_backend_cpu_kernels(be), dt[steps / 2] * 1e6, dt[0] * 1e6);
    for (int l = 0; l < L; l++) {
        lmx_bweight *ws[] = {ls[l].router, ls[l].gate, ls[l].up, ls[l].down};
        for (int i = 0; i < 4; i++) op->weight_free(be, ws[i]);
        stack_free(&ls[l].mr), stack_free(&ls[l].mg), stack_free(&ls[l].mu), stack_free(&ls[l].md);
    }
    lmx_buf *bs[] = {x, logits, table, g, u, f};
    for (int i = 0; i < 6; i++) op->buf_free(be, bs[i]);
    lmx_backend_destroy(be);
    free(ls), free(xh), free(dt);
    return 0;
}
