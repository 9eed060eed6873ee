/* cuda_backend_internal.h — the CUDA backend's state and the functions its files share
 * (cuda_backend.c: creation and the ops table; cuda_backend_mem.c: buffers and weight uploads;
 * cuda_backend_ops.c: the compute ops; cuda_backend_moe.c: the mixture-of-experts ops;
 * cuda_backend_step.c: decode-step graphs and device sampling).
 * Not an interface: only those files include it. */
#ifndef LMX_BACKEND_CUDA_BACKEND_INTERNAL_H
#define LMX_BACKEND_CUDA_BACKEND_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend_check.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_mx.h"
#include "backend/cuda/cuda_upload.h"

/* matmuls with at least this many rows run as a GEMM (prefill), fewer as GEMVs (decode) */
#define LMX_CUDA_GEMM_MIN_T 16
/* up to this many rows, 4/8-bit weights go to the few-row GEMM (lmx_cuda_gemm_small: weights read once
 * per 64 rows, no bf16 expansion) instead of cuBLASLt (which expands the matrix to bf16 per call) */
#define LMX_CUDA_SMALL_GEMM_MAX_T 128

struct lmx_buf {
    size_t n;
    float *d;     /* device [n] */
    bool view;    /* buf_view: d belongs to another buffer */
    lmx_dtype dt; /* F32; a kv_buf_alloc cache: its element type (d then points to n such elements) */
};

struct lmx_bweight {
    lmx_wkind kind;
    int64_t rows, cols;
    lmx_cuda_matrix m; /* dense / quant: device pointers below */
    void *dw, *ds, *db;  /* device: weights (dtype or packed u32), scales, biases */
    float *dbias;        /* device fp32 [rows] or NULL */
    float *vec;          /* vector: device fp32 [cols] */
    bool view;           /* a view of a fused weight: the pointers belong to the fused weight */
    bool fp32_x;         /* lmx_weight_desc.fp32_x: every matmul through the fp32-exact GEMV */
    lmx_quant_mode mode; /* quant: affine (m), or an fp mode (mx: codes dw, uint8 scales ds; cuda_mx.h) */
    lmx_cuda_mx mx;
    int n_experts;        /* LMX_WEIGHT_EXPERTS: ex describes the stack (rows = one expert's), m/mx unused */
    lmx_cuda_experts ex;
};

/* graph slots: one per (key, variant, rows, attention length class) recently stepped; the least
 * recently used one is replaced */
#define GRAPH_SLOTS 32

/* A host int32 array staged into device memory for the kernels of one call (cuda_backend_stage.c):
 * grows only (no per-call cudaMalloc); an array equal to the one staged last is not uploaded again
 * (every layer of a step passes the same positions and map). */
typedef struct cub_stage {
    int32_t *d; /* device [cap] */
    int32_t *h; /* host copy of what d holds, [cap] */
    int cap, n;
} cub_stage;

typedef enum { STEP_NONE = 0, STEP_WARM, STEP_CAPTURE, STEP_REPLAY } step_mode;

/* captures of one slot that may fail (another thread's work on the legacy stream invalidates a
 * capture, for one) before its steps stay eager */
#define GRAPH_MAX_FAILS 3

typedef struct graph_slot {
    const void *key;
    int variant, n_tokens;
    int64_t span;      /* paged steps: the decode attention's grid length (lmx_cub_step_stage), else 0 */
    bool used;
    int fails;         /* failed captures or launches; GRAPH_MAX_FAILS: the slot's steps run eagerly */
    uint64_t sig;      /* signature of the op sequence recorded at the warm step */
    uint64_t last_use; /* step count at the slot's last step (least recently used: replaced first) */
    void *exec;        /* cudaGraphExec_t or NULL */
} graph_slot;

/* The inputs of the current bracketed step as its ops find them (lmx_cub_step_stage): the caller's
 * host arrays, and where step_begin put them in device memory (one array, c->step_stage:
 * [ids T | pos T | the paged map's array]). */
typedef struct cub_step_in {
    lmx_step_inputs in;    /* the caller's arrays; in.map points to map below (or NULL) */
    lmx_kv_map map;        /* copy of the caller's map */
    const int32_t *d_ids;  /* device [T] */
    const int32_t *d_pos;  /* device [T] */
    lmx_cuda_kv_map dm;    /* paged: the map's device arrays and work split */
    int64_t span;          /* paged: the decode attention's grid length, a power of two >= every row's
                              position + 1 (a row's splits follow its own length: the same results as
                              a grid of the exact length) */
    int n_checked;         /* paged: (capacity, window) pairs the map was checked against this step */
    int checked[4][2];
} cub_step_in;

/* Deferred rows of a sample_rows inside a captured or replayed step: sampled after the graph launch
 * (cuda_backend_step.c) */
typedef struct cub_rows_later {
    const float *logits;   /* device [n, vocab] */
    int vocab, n;
    lmx_sample_args *a;    /* host [rows_cap]: the rows' arguments (copied at sample_rows) */
    bool pending;          /* rows wait for step_end */
} cub_rows_later;

typedef struct cuda_backend {
    lmx_backend base;
    int device;
    lmx_cuda_stream stream; /* every op runs here */
    bool graphs;            /* lmx_cuda_options.graphs */
    step_mode mode;
    graph_slot *slot;       /* the current step's slot */
    uint64_t sig;           /* running signature of this step's ops */
    bool step_bad;          /* an op that cannot be captured ran inside the step */
    graph_slot slots[GRAPH_SLOTS];
    uint64_t n_steps;       /* bracketed steps begun (the slots' clock) */
    lmx_cuda_graph_stats counts; /* lmx_backend_cuda_graph_stats */
    cub_step_in step;       /* the current step's inputs (mode != STEP_NONE) */
    cub_stage step_stage;   /* their device copy */
    cub_stage ids;    /* token ids of the last embed */
    cub_stage pos;    /* positions of the last call */
    cub_stage map;    /* a paged call's kv map (lmx_cub_map_stage) */
    int32_t *map_tmp; /* host [map_tmp_cap]: the map (or step input) array being built */
    int map_tmp_cap;
    void *mx_scratch; /* device [mx_scratch_bytes]: fp-mode prefill row chunks (cuda_mx.h), grown on demand */
    size_t mx_scratch_bytes;
    float *d_ws;      /* attention workspace, device [ws_cap] */
    size_t ws_cap;
    lmx_cuda_sampler *sampler; /* device sampling (lmx_cub_sample): workspace for the current vocab/window */
    bool samp_pending;         /* a sample was enqueued and its result not yet read */
    bool samp_host;            /* the last sample is undecided without device work (unsupported params) */
    /* weight uploads: the pinned staging ring (cuda_upload.h), created at the first upload; without it
     * (lmx_cuda_options.pageable, or creating it failed) pageable copies */
    pthread_mutex_t up_lock;
    lmx_cuda_uploader *up;
    bool staging, up_failed, staged_any;
    /* upload statistics, logged at destroy (info): bytes, ns in weight cudaMallocs, ns in copies */
    atomic_uint_least64_t up_bytes, up_malloc_ns, up_copy_ns;
    lmx_dtype kv_dt;  /* element type of kv_buf_alloc caches: fp16, or fp32 (lmx_cuda_options.f32_kv) */
    int32_t *d_cnt;   /* decode attention split counters, device [cnt_cap], zero between launches */
    size_t cnt_cap;
    float *d_gws;     /* few-row GEMM split-K workspace, device [gws_cap] */
    size_t gws_cap;
    void **retired;   /* [retired_cap] replaced scratch arrays (device), freed at destroy: graphs may hold them */
    int n_retired, retired_cap;
    /* batched sampling (sample_rows): plain greedy rows by one lmx_cuda_greedy_rows launch, the
     * other rows by a sampler each (the single-row kernels) */
    lmx_cuda_sampler **rsamp; /* [rows_cap] (NULL until a non-greedy row k needs rsamp[k]) */
    cub_stage grows;          /* the greedy rows' indices */
    int32_t *d_rres;          /* device [rows_cap]: greedy ids */
    int32_t *h_rres;          /* pinned [rows_cap]: their copy */
    int32_t *h_rkind;         /* host [rows_cap]: row r's result: >= 0 h_rres index, -1 - k rsamp[k], ROWS_HOST */
    int rows_cap, rows_n;
    bool rows_pending;        /* a batch was enqueued and its result not yet read */
    cub_rows_later later;     /* rows of a captured/replayed sample_rows still to sample */
    /* a rank of a group (cuda_backend_coll.c): its NCCL communicator (NULL: none, or aborted), which
     * comm_mu guards against an abort from another thread */
    pthread_mutex_t comm_mu;
    void *comm;
    int n_ranks;              /* ranks of the communicator */
    bool comm_aborted;
} cuda_backend;

static inline cuda_backend *CB(lmx_backend *be) { return (cuda_backend *)be; }

/* ---- step signature ----
 * One multiply-xorshift round per argument: each round is a bijection of the running value for a
 * given argument and of the argument for a given value, so a sequence that first differs in one
 * argument ends in another value unless later arguments collide by chance (2^-64); cheap, since a
 * replayed step signs every op's arguments (~15 a op, ~400 ops a step) before its launch. */
static inline void sig_mix(cuda_backend *c, uint64_t v) {
    uint64_t h = (c->sig ^ v) * 0x9e3779b97f4a7c15ull;
    c->sig = h ^ (h >> 29);
}
static inline uint64_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
#define SIGP(p) sig_mix(c, (uint64_t)(uintptr_t)(p))
#define SIGI(v) sig_mix(c, (uint64_t)(int64_t)(v))
/* in a step: true when the op must launch nothing (the graph replays it) */
static inline bool replaying(const cuda_backend *c) { return c->mode == STEP_REPLAY; }
static inline bool stepping(const cuda_backend *c) { return c->mode != STEP_NONE; }
/* in a step whose ops are recorded into a graph or replayed: nothing may be allocated or uploaded */
static inline bool capturing(const cuda_backend *c) { return c->mode == STEP_CAPTURE || c->mode == STEP_REPLAY; }

#define CHECK_RANGE(buf_, off_, cnt_, what_)                                                                  \
    do {                                                                                                     \
        if ((buf_)->dt != LMX_DTYPE_F32) /* a 16-bit KV cache: only rope_qk_store, attention take it */    \
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: %s: a KV cache buffer", (what_));      \
        LMX_BACKEND_CHECK_RANGE("cuda", buf_, off_, cnt_, what_);                                            \
    } while (0)


/* ---- the ops (the table in cuda_backend.c) ---- */
lmx_status lmx_cub_upload_end(lmx_backend *be);
lmx_status lmx_cub_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out);
void lmx_cub_buf_free(lmx_backend *be, lmx_buf *b);
size_t lmx_cub_kv_elem_bytes(const lmx_backend *be);
lmx_status lmx_cub_kv_buf_alloc(lmx_backend *be, size_t n, lmx_buf **out);
lmx_status lmx_cub_buf_write(lmx_backend *be, lmx_buf *dst, size_t off, const float *src, size_t n);
lmx_status lmx_cub_buf_read(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n);
lmx_status lmx_cub_buf_copy(lmx_backend *be, lmx_buf *dst, size_t dst_off, const lmx_buf *src, size_t src_off, size_t n);
lmx_status lmx_cub_buf_view(lmx_backend *be, lmx_buf *parent, size_t off, size_t n, lmx_buf **out);
void lmx_cub_weight_free(lmx_backend *be, lmx_bweight *w);
lmx_status lmx_cub_weight_upload(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out);
lmx_status lmx_cub_weight_upload_fused(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused, lmx_bweight **views);
lmx_status lmx_cub_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T, lmx_buf *y);
lmx_status lmx_cub_embed(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale, lmx_buf *y);
lmx_status lmx_cub_rmsnorm(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w, float eps, bool plus_one);
lmx_status lmx_cub_attention(lmx_backend *be, const lmx_buf *q, const lmx_buf *kc, const lmx_buf *vc, lmx_buf *out, const lmx_attn_params *p, const int32_t *pos);
lmx_status lmx_cub_act_mul(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act);
lmx_status lmx_cub_act_mul_split(lmx_backend *be, const lmx_buf *gu, int T, int inter, lmx_act_kind act, lmx_buf *out);
lmx_status lmx_cub_add(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n);
lmx_status lmx_cub_weight_upload_experts(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **out);
lmx_status lmx_cub_moe_route(lmx_backend *be, const lmx_buf *logits, const lmx_moe_routing *r);
lmx_status lmx_cub_moe_matmul(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, bool gather,
                              const lmx_moe_routing *r, lmx_buf *y);
lmx_status lmx_cub_moe_gate_up(lmx_backend *be, const lmx_bweight *gate, const lmx_bweight *up, const lmx_buf *x,
                               const lmx_moe_routing *r, lmx_act_kind act, lmx_buf *h, lmx_buf *u);
lmx_status lmx_cub_moe_combine(lmx_backend *be, lmx_buf *x, const lmx_buf *y, int dim, const lmx_moe_routing *r);
lmx_status lmx_cub_softcap(lmx_backend *be, lmx_buf *x, size_t n, float cap);
lmx_status lmx_cub_matmul_add(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T, lmx_buf *y);
lmx_status lmx_cub_rope_qk_store(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *kc, lmx_buf *vc, const lmx_qk_rope_params *p, const int32_t *pos);
void lmx_cub_graphs_clear(cuda_backend *c);
lmx_status lmx_cub_sample(lmx_backend *be, const lmx_buf *logits, int vocab, const lmx_sample_args *a);
lmx_status lmx_cub_sample_result(lmx_backend *be, int32_t *token);
lmx_status lmx_cub_step_begin(lmx_backend *be, const void *key, int variant, const lmx_step_inputs *in);
lmx_status lmx_cub_step_end(lmx_backend *be, bool ok, bool *redo);
lmx_status lmx_cub_sample_rows(lmx_backend *be, const lmx_buf *logits, int vocab, int n, const lmx_sample_args *a);
lmx_status lmx_cub_sample_rows_result(lmx_backend *be, int n, int32_t *tokens);
void lmx_cub_rows_free(cuda_backend *c); /* the sample_rows state (no work in flight) */
lmx_status lmx_cub_all_reduce_sum(lmx_backend *be, lmx_buf *x, size_t off, size_t n); /* cuda_backend_coll.c */
lmx_status lmx_cub_all_gather(lmx_backend *be, const lmx_buf *src, size_t n, lmx_buf *dst);
void lmx_cub_comm_free(cuda_backend *c); /* at destroy: ncclCommDestroy */
/* the rows a captured or replayed sample_rows left for after the graph launch (step_end) */
lmx_status lmx_cub_rows_later_run(cuda_backend *c);

/* ---- host arrays to the device (cuda_backend_stage.c) ---- */
/* *d_out = a device copy of src[n] (enqueued on the backend stream; src may change after the call).
 * Inside a captured or replayed step only an unchanged array is accepted (nothing is uploaded then). */
lmx_status lmx_cub_stage_upload(cuda_backend *c, cub_stage *s, const int32_t *src, int n, const int32_t **d_out);
void lmx_cub_stage_free(cub_stage *s);
/* A paged call's map (backend.h lmx_kv_map) for rows pos[T] over a cache of `capacity` slots per kv
 * head: checked (sequences, table entries of every visible position inside the pool), staged, and
 * described in *dm with device pointers. The rows are split by runs (consecutive rows of one
 * sequence at consecutive positions): runs of at least LMX_CUDA_PAGED_TILE_MIN rows become prefill
 * query tiles of up to 64 rows from the run's start (dm->tiles), single rows decode rows (dm->rows) —
 * the kernels a ring-cache call of that run alone takes, so each row computes what it computes alone;
 * *decode_len gets the longest visible range of a decode row (0 without any). window as
 * lmx_attn_params (0 for rope_qk_store). */
#define LMX_CUDA_PAGED_TILE_MIN 2
lmx_status lmx_cub_map_stage(cuda_backend *c, const lmx_kv_map *m, const int32_t *pos, int T, int capacity,
                             int window, lmx_cuda_kv_map *dm, int64_t *decode_len);
/* step_begin: the step's inputs (backend.h lmx_step_inputs) into c->step and, as one upload, into
 * device memory (c->step_stage). */
lmx_status lmx_cub_step_stage(cuda_backend *c, const lmx_step_inputs *in);
/* Inside a step: the device copies of an op's ids / positions, which must be the step's arrays
 * (else the step is marked bad: LMX_ERR_INVALID_ARGUMENT); paged, the map's device arrays, the map
 * checked as lmx_cub_map_stage checks it (once per capacity and window in a step). */
lmx_status lmx_cub_step_ids(cuda_backend *c, const int32_t *ids, int T, const int32_t **d_ids);
lmx_status lmx_cub_step_pos(cuda_backend *c, const int32_t *pos, int T, const int32_t **d_pos);
lmx_status lmx_cub_step_map(cuda_backend *c, const lmx_kv_map *m, const int32_t *pos, int T, int capacity,
                            int window, lmx_cuda_kv_map *dm);

#endif
