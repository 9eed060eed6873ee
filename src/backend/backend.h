/* backend.h — the seam between the model graph (src/model) and the compute backends
 * (src/backend/cpu, src/backend/cuda).
 *
 * The model graph only sees opaque handles and calls the ops below; it never dereferences
 * backend memory. A backend implements `lmx_backend_ops` and hands out:
 *   - lmx_buf:     an activation buffer of fp32 elements (row-major), owned by the backend.
 *                  Buffers are allocated once (at KV-cache/scratch creation), never per token.
 *                  (A mixture-of-experts routing table keeps int32 values in some of its 4-byte
 *                  elements: lmx_moe_routing.)
 *   - lmx_bweight: an uploaded weight — a dense matrix (F32/F16/BF16, kept in its stored dtype; the
 *                  CPU backend references the mmapped bytes, a GPU backend copies them), an MLX
 *                  affine-quantized matrix (packed U32 + scales + biases), or a vector (norm
 *                  weights, RoPE inverse frequencies), each with an optional fp32 bias; or a
 *                  stack of expert matrices (weight_upload_experts).
 * Shapes: a matrix weight is [out, in] as stored (HF layout); matmul computes
 * y[T, out] = x[T, in] · Wᵀ (+ bias). Activation offsets/strides are in elements.
 *
 * Positions: ops that depend on a token's position take a host array `pos[T]` of absolute
 * positions (so batched decode of several sequences at different positions needs no new op).
 * KV cache layout (backend buffers k_cache, v_cache): [kv_head][capacity][head_dim] per layer,
 * post-RoPE keys; position j lives in slot j % capacity (a ring: sliding-window layers use
 * capacity >= window + T - 1 slots, full layers capacity > every position). `rope_qk_store` stores T
 * rows at their positions, `attention` reads the visible keys lo..pos (lo = 0, or pos - window + 1).
 *
 * Paged KV (batched steps): with a non-NULL `map` in lmx_attn_params / lmx_qk_rope_params the cache
 * buffers are a block pool shared by many sequences, and one call may carry rows of several sequences
 * (batched decode, a prefill chunk beside decode rows): see lmx_kv_map. Matmuls and norms simply run
 * over all rows of the step.
 * A GPU backend implements the same struct; ops may be asynchronous as long as buf_read
 * synchronizes.
 *
 * Errors: ops return lmx_status (invalid shapes are the caller's bug, but are still reported with a
 * detail rather than crashing). Thread-safety: a backend object may be shared by several models and
 * its ops may be called from several threads on disjoint buffers; the backend serializes what it
 * must (the CPU backend runs one pool op at a time under a mutex). Ownership: every handle is
 * released through the backend that created it.
 */
#ifndef LMX_BACKEND_BACKEND_H
#define LMX_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "formats/dtype.h"
#include "formats/quant_mode.h"
#include "lmx.h"

typedef struct lmx_backend lmx_backend;
typedef struct lmx_buf lmx_buf;
typedef struct lmx_bweight lmx_bweight;

typedef enum lmx_wkind {
    LMX_WEIGHT_DENSE = 0, /* [rows, cols] float matrix */
    LMX_WEIGHT_QUANT,     /* MLX-quantized: packed [rows, cols*bits/32] u32 + scales (+ biases), by `mode` */
    LMX_WEIGHT_VECTOR,    /* [cols] float vector (rows == 1) */
    LMX_WEIGHT_EXPERTS,   /* a stack of expert matrices [n_experts, rows, cols] (weight_upload_experts): only
                             moe_matmul takes it; never a weight_desc kind */
} lmx_wkind;

/* A host-side description of a weight to upload. Pointers refer to (possibly unaligned) stored bytes
 * that stay valid for the lifetime of the model (the mmapped weight files). `row0`/`rows` select a
 * row range of the stored matrix (used to split fused qkv/gate_up projections). */
typedef struct lmx_weight_desc {
    const char *name;       /* for error messages */
    lmx_wkind kind;
    int64_t rows, cols;     /* logical shape of the selected part: [rows, cols] */
    int64_t row0;           /* first stored row of the selection */
    lmx_dtype dtype;        /* dense/vector: element type; quant: dtype of scales/biases (F32/F16/BF16) */
    const void *data;       /* dense/vector: elements of the whole stored tensor; quant: packed u32 words */
    const void *scales;     /* quant: [stored_rows, cols/group] */
    const void *biases;     /* quant: [stored_rows, cols/group] */
    int bits, group_size;   /* quant */
    lmx_quant_mode mode;    /* quant: affine (scales/biases as above) or an fp mode (formats/quant_mode.h):
                               scales = uint8 codes [stored_rows, cols/group], biases NULL, dtype unused */
    const void *bias;       /* optional [stored_rows] additive bias (NULL = none) */
    lmx_dtype bias_dtype;
    bool fp32_x;            /* matrix: matmul keeps x in fp32, without the rounding of activations some
                               paths do (the CPU's int16 tiles, the CUDA prefill GEMM's bf16 operands): a
                               router, whose logits pick the experts and weight their outputs */
} lmx_weight_desc;

/* act_mul's activations: gate = act(gate) * up, or gpt-oss's clamped SwiGLU (LMX_BACT_SWIGLU_OAI):
 *   g = min(gate, L), u = clamp(up, -L, L), gate = g * sigmoid(A * g) * (u + 1)
 * with A = LMX_SWIGLU_OAI_ALPHA and L = LMX_SWIGLU_OAI_LIMIT (transformers' GptOssExperts, mlx-lm's
 * gpt_oss swiglu; a NaN stays NaN). */
typedef enum lmx_act_kind { LMX_BACT_SILU_MUL = 0, LMX_BACT_GELU_TANH_MUL, LMX_BACT_SWIGLU_OAI } lmx_act_kind;
#define LMX_SWIGLU_OAI_ALPHA 1.702f
#define LMX_SWIGLU_OAI_LIMIT 7.0f

/* Paged KV addressing. The k/v cache buffers are then a pool of `capacity` = n_blocks * block_size
 * slots per kv head, laid out as always ([kv_head][capacity][head_dim]); no ring. Row t of the call
 * belongs to sequence seq[t], whose position j lives in slot
 *     tables[seq[t] * stride + j / block_size] * block_size + j % block_size.
 * rope_qk_store writes row t's k/v at pos[t] through its sequence's table; attention of row t sees
 * keys lo..pos[t] of its own sequence (including rows of the same call stored just before by
 * rope_qk_store), lo = 0 or pos[t] - window + 1. A sequence's rows in one call have increasing
 * consecutive positions. block_size is a power of two (16..256). Row results must not depend on which
 * other rows share the call (a backend computes each row as it would alone: the CPU backend bit for
 * bit). Host arrays, read during the call only. */
typedef struct lmx_kv_map {
    const int32_t *tables; /* host [n_seqs * stride]: physical block of each logical block */
    const int32_t *seq;    /* host [n_tokens]: the table row of each query row */
    int n_seqs, stride;    /* tables rows; blocks per row (entries past a sequence's length unused) */
    int block_size;        /* slots per block, power of two */
} lmx_kv_map;

typedef struct lmx_attn_params {
    int n_tokens;     /* T: query rows */
    int n_heads;      /* query heads */
    int n_kv_heads;   /* GQA: head h reads kv head h / (n_heads / n_kv_heads) */
    int head_dim;
    int capacity;     /* slots per kv head in the cache (position j in slot j % capacity) */
    int window;       /* 0 = full causal; else key j visible to query at p iff p - window < j <= p */
    float scale;      /* multiplies q·k */
    float softcap;    /* 0 = none; else scores = softcap * tanh(scores / softcap) before masking */
    const lmx_kv_map *map; /* NULL: one sequence, ring slots j % capacity; else paged (lmx_kv_map) */
    const lmx_bweight *sinks; /* NULL = none; else a vector [n_heads] of attention-sink logits (gpt-oss):
                                 head h's softmax denominator gains exp(sinks[h]), a logit with no value,
                                 so its weights over the visible keys sum to less than 1 */
} lmx_attn_params;

/* Arguments of the rope_qk_store op (below). Shapes: q rows [n_heads, head_dim], k and v rows
 * [n_kv_heads, head_dim]; row t of q starts at q_off + t * q_stride (likewise k, v); a stride of 0
 * means packed rows (heads * head_dim). Caches [n_kv_heads][capacity][head_dim], position j in slot
 * j % capacity. RoPE rotates the first rot_dim features of each head (half-split pairs (i, i +
 * rot_dim/2)) by the fp32 angle pos[t] * inv_freq[i]; cos and sin are multiplied by mscale. */
typedef struct lmx_qk_rope_params {
    int n_tokens, n_heads, n_kv_heads, head_dim;
    int rot_dim;                         /* rotated features per head (even, <= head_dim; 0 = none) */
    int capacity;                        /* cache slots per kv head */
    size_t q_off, k_off, v_off;          /* elements */
    size_t q_stride, k_stride, v_stride; /* elements between rows; 0 = packed */
    const lmx_bweight *inv_freq;         /* vector [>= rot_dim/2] */
    float mscale;                        /* multiplies cos and sin */
    const lmx_bweight *q_norm, *k_norm;  /* per-head RMSNorm weights [head_dim] before the rotation
                                            (qwen3, gemma3), or both NULL */
    float eps;                           /* of the per-head norm */
    bool norm_plus_one;                  /* the norm scales by 1 + w */
    const lmx_kv_map *map;               /* NULL: ring slots j % capacity; else paged (lmx_kv_map) */
} lmx_qk_rope_params;

/* Sampling on the device (op `sample`): mlx-lm's order as src/generate/sampler.h documents it
 * (penalty over the distinct window ids, greedy argmax or top_p → min_p → top_k → temperature →
 * inverse-CDF draw with the uniform u). `sampling` changes per generation (its repetition_context is
 * the most ids `window` will ever hold in it); window/n_window/u change per token (they reach
 * captured kernels through device memory). */
typedef struct lmx_sample_args {
    lmx_sampling sampling;
    const int32_t *window;    /* host [n_window]: the last history ids the penalty sees
                                 (n_window <= sampling.repetition_context) */
    int n_window;
    double u;                 /* uniform in [0,1) for the draw (ignored when greedy) */
} lmx_sample_args;

/* ---- mixture of experts (the ops weight_upload_experts, moe_route, moe_matmul, moe_gate_up,
 * moe_combine) ----
 * T rows are each routed to k of E experts; slot s = t*k + j is row t's j-th choice (choices by
 * decreasing router logit, ties to the lower expert index, NaN logits ranked as -inf). The routing
 * lives in a backend buffer, the table, that moe_route writes and the other ops read on the device
 * (a decode step needs no host readback and stays capturable). Table layout, S = T*k elements:
 *   w     [S]      fp32: the routing weight of slot s
 *   ids   [S]      int32 (the element's bits): the expert of slot s
 *   order [S]      int32: the slots grouped by expert: expert e's slots, in increasing order, are
 *                  order[start[e] .. start[e+1]) (the "route order" of the expert rows)
 *   pos   [S]      int32: where slot s sits in order (order[pos[s]] = s)
 *   start [E + 1]  int32: start[0] = 0, start[E] = S
 * Rules (the router logits r[t, E] already include the router's bias, e.g. gpt_oss's):
 *   SOFTMAX_TOPK: p = softmax(r[t]) over all E, the k largest, w = their p (qwen3_moe without
 *                 norm_topk_prob);
 *   TOPK_SOFTMAX: the k largest logits, w = softmax over those k (qwen3_moe norm_topk_prob, mixtral,
 *                 gpt_oss) — the same as SOFTMAX_TOPK renormalised over the k.
 * The CPU backend computes the softmax in double: exp(r - max) / Σ (all E, or the k in choice order). */
typedef enum lmx_moe_rule { LMX_MOE_SOFTMAX_TOPK = 0, LMX_MOE_TOPK_SOFTMAX } lmx_moe_rule;

#define LMX_MOE_MAX_EXPERTS 1024
#define LMX_MOE_MAX_TOPK 32

typedef struct lmx_moe_routing {
    lmx_buf *table;     /* [lmx_moe_table_floats(n_tokens, top_k, n_experts)] (layout above) */
    int n_tokens;       /* T >= 1 */
    int top_k;          /* 1 <= k <= min(n_experts, LMX_MOE_MAX_TOPK) */
    int n_experts;      /* 1 <= E <= LMX_MOE_MAX_EXPERTS */
    lmx_moe_rule rule;  /* moe_route only */
} lmx_moe_routing;

/* Elements of a routing table for T rows, k of E experts each. */
static inline size_t lmx_moe_table_floats(int T, int k, int E) { return 4 * (size_t)T * (size_t)k + (size_t)E + 1; }

/* The per-step values of a bracketed step (step hooks below): what changes from one step to the
 * next. Host arrays of the caller, read by step_begin and by the step's ops until step_end. */
typedef struct lmx_step_inputs {
    int n_tokens;          /* T: rows of the step's ops */
    const int32_t *ids;    /* host [T]: the token ids of the step's embed */
    const int32_t *pos;    /* host [T]: the positions of its rope_qk_store and attention calls */
    const lmx_kv_map *map; /* NULL: one sequence's ring caches; else the step's paged addressing */
} lmx_step_inputs;

typedef struct lmx_backend_ops {
    const char *name;
    void (*destroy)(lmx_backend *be);

    /* ---- memory ---- */
    lmx_status (*buf_alloc)(lmx_backend *be, size_t n_floats, lmx_buf **out);
    void (*buf_free)(lmx_backend *be, lmx_buf *b); /* NULL-safe */
    lmx_status (*buf_write)(lmx_backend *be, lmx_buf *dst, size_t off, const float *src, size_t n);
    lmx_status (*buf_read)(lmx_backend *be, const lmx_buf *src, size_t off, float *dst, size_t n);
    lmx_status (*buf_copy)(lmx_backend *be, lmx_buf *dst, size_t dst_off, const lmx_buf *src, size_t src_off,
                           size_t n);

    lmx_status (*weight_upload)(lmx_backend *be, const lmx_weight_desc *d, lmx_bweight **out);
    void (*weight_free)(lmx_backend *be, lmx_bweight *w); /* NULL-safe */

    /* ---- ops (fp32 activations, fp32 accumulation) ---- */
    /* y[T, rows] = x[T, cols] · Wᵀ + bias; x rows start at x_off with stride cols. */
    lmx_status (*matmul)(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T, lmx_buf *y);
    /* y[T, cols] = W[ids[t], :] * scale (ids on the host); an id of -1 gives a row of zeros (a
     * vocabulary-parallel rank's embedding: the token is another rank's, whose row the all-reduce adds). */
    lmx_status (*embed)(lmx_backend *be, const lmx_bweight *w, const int32_t *ids, int T, float scale, lmx_buf *y);
    /* y[rows, dim] = x * rsqrt(mean(x²) + eps) * (w or 1+w); in place allowed (y == x). */
    lmx_status (*rmsnorm)(lmx_backend *be, const lmx_buf *x, lmx_buf *y, int rows, int dim, const lmx_bweight *w,
                          float eps, bool plus_one);
    /* out[T, n_heads*head_dim] = softmax(mask(cap(q·kᵀ·scale)) [+ sink]) · v, causal by pos[t]. */
    lmx_status (*attention)(lmx_backend *be, const lmx_buf *q, const lmx_buf *k_cache, const lmx_buf *v_cache,
                            lmx_buf *out, const lmx_attn_params *p, const int32_t *pos);
    /* gate[n] = act(gate) * up (lmx_act_kind) */
    lmx_status (*act_mul)(lmx_backend *be, lmx_buf *gate, const lmx_buf *up, size_t n, lmx_act_kind act);
    /* x[n] += y[n] */
    lmx_status (*add)(lmx_backend *be, lmx_buf *x, const lmx_buf *y, size_t n);
    /* x[n] = cap * tanh(x / cap) */
    lmx_status (*softcap)(lmx_backend *be, lmx_buf *x, size_t n, float cap);

    /* ---- step hooks (optional: NULL = none, e.g. the CPU backend) ----
     * The caller brackets the ops of one step whose op sequence repeats from step to step with
     * step_begin / step_end: a one-token forward of one sequence (embed, the layers, the head,
     * [sample]) or a batched decode step of T rows over a paged pool (embed, the layers, the head over
     * the T rows, [sample_rows]); NOT what reads results (buf_read, sample_result,
     * sample_rows_result, which come after step_end). `key` names the state the ops run on (the KV
     * cache or pool object) and `variant` anything else that changes the op sequence (e.g. longrope
     * long/short, logits wanted). The values that change per step are `in` (lmx_step_inputs):
     * step_begin puts them into device memory that the kernels read, so inside the bracket embed
     * takes in->ids, rope_qk_store and attention take in->pos (T = in->n_tokens rows) and, paged, a
     * map with in->map's tables and seq arrays — the same host arrays, unchanged until step_end; an op
     * given other arrays makes the step redo. A backend may capture the sequence once and replay it
     * afterwards (CUDA graphs): every other op argument must then be the same as at capture — the
     * backend checks that with a signature of all op arguments. Between the hooks ops may only
     * enqueue work (on replay they launch nothing); step_end makes it all run. If step_end sets
     * *redo, the ops did not run (the recorded sequence did not match, or capture failed) and the
     * caller must issue them again without hooks. `ok` = false tells step_end an op failed (the step
     * is abandoned; *redo is set so the caller's retry reports the error eagerly). */
    lmx_status (*step_begin)(lmx_backend *be, const void *key, int variant, const lmx_step_inputs *in);
    lmx_status (*step_end)(lmx_backend *be, bool ok, bool *redo);

    /* ---- fused ops (required: the forward pass issues them, not the sequences named with each) ----
     * Each computes what its unfused sequence computes (the CPU backend: bit for bit; a GPU backend:
     * to its rounding), in fewer kernel launches. Decode-step hooks apply as for every op. */
    /* y[T, rows] += x[T, cols] · Wᵀ + bias: the residual add folded into the projection
     * (= matmul into a scratch, then add). x rows start at x_off with stride cols; y must not be x. */
    lmx_status (*matmul_add)(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, size_t x_off, int T,
                             lmx_buf *y);
    /* The attention block's per-position step ([rmsnorm of q and k per head], RoPE of q and of k, k
     * and v rows into the caches): see lmx_qk_rope_params. q and k are updated in place (normalised, rotated), the
     * rotated k rows and the v rows are stored into k_cache / v_cache at positions pos[T]. q, k and v
     * may be views of one buffer (offsets and row strides below) whose regions do not overlap. */
    lmx_status (*rope_qk_store)(lmx_backend *be, lmx_buf *q, lmx_buf *k, const lmx_buf *v, lmx_buf *k_cache,
                                lmx_buf *v_cache, const lmx_qk_rope_params *p, const int32_t *pos);
    /* ---- sampling on the device (optional: NULL = none, e.g. the CPU backend) ----
     * `sample` enqueues the choice of the next token from logits [vocab] (not modified) with the
     * arguments *a (copied; the window may change after the call); it may run inside a decode step
     * (then it is part of the captured sequence). `sample_result` waits for it and gives the id, or
     * -1 when the device could not decide exactly (parameters it does not handle, a candidate set
     * too large, NaN or infinite logits): the caller then reads the logits and samples on the host
     * with the same u. One sample in flight per backend; allocates only when vocab or
     * sampling.repetition_context grow. */
    lmx_status (*sample)(lmx_backend *be, const lmx_buf *logits, int vocab, const lmx_sample_args *a);
    lmx_status (*sample_result)(lmx_backend *be, int32_t *token);
    /* ---- views, fused weights, prefill chunk (optional: NULL / 0 = not provided) ---- */
    /* A non-owning handle to floats [off, off+n) of parent. buf_free on a view frees only the handle;
     * views must be freed before their parent. A view of a view is refused (LMX_ERR_INVALID_ARGUMENT). */
    lmx_status (*buf_view)(lmx_backend *be, lmx_buf *parent, size_t off, size_t n, lmx_buf **out);
    /* Uploads n row blocks parts[0..n) (identical kind, cols, dtype, bits, group_size; all with a
     * bias or none, same bias dtype) as ONE matrix whose rows are the parts' rows concatenated
     * (*fused, [Σ rows, cols]), plus n views views[i] aliasing the fused memory at the part's row
     * offset (usable wherever a weight is). weight_free of a view frees only the handle; the fused
     * weight owns the memory and must be freed after its views. Parts that cannot be fused →
     * LMX_ERR_UNSUPPORTED (nothing allocated: the caller uploads them separately); a failed
     * device allocation → LMX_ERR_OUT_OF_MEMORY. */
    lmx_status (*weight_upload_fused)(lmx_backend *be, const lmx_weight_desc *parts, int n, lmx_bweight **fused,
                                      lmx_bweight **views);
    /* Preferred rows per prefill call (the KV cache's scratch is sized for it); 0 = the caller's
     * default (128). */
    int prefill_chunk;
    /* The caller finished a batch of uploads (a model's weights): waits until they are complete
     * (a failed asynchronous copy is reported here) and may release upload resources (pinned
     * staging buffers) until the next upload. NULL = nothing to do. */
    lmx_status (*upload_end)(lmx_backend *be);
    /* ---- KV cache storage (optional: NULL = buf_alloc, fp32 elements) ----
     * kv_buf_alloc: a k or v cache buffer of n_elems elements [kv_head][capacity][head_dim] stored in
     * an element type the backend chooses (the CUDA backend: fp16, fp32 by a test option). Such a
     * buffer may only be passed to rope_qk_store (as k_cache / v_cache), attention (likewise),
     * buf_free, and buf_copy between two such buffers (offsets and n in elements of that type: the
     * KV pool's fork and copy-on-write copy blocks this way); other ops refuse it. kv_elem_bytes: the bytes of one element of such a buffer (for memory
     * accounting; NULL = sizeof(float)). */
    lmx_status (*kv_buf_alloc)(lmx_backend *be, size_t n_elems, lmx_buf **out);
    size_t (*kv_elem_bytes)(const lmx_backend *be);
    /* ---- fused gate|up activation for prefill (optional: NULL = not provided) ----
     * out[t, i] = act(gu[t, i]) * gu[t, inter + i] for t < T, i < inter: gu [T, 2*inter] is the
     * output of one matmul through a fused gate|up weight, out [T, inter] (must not overlap gu).
     * Computes what act_mul computes on separate gate / up buffers (the CPU backend: bit for bit). */
    lmx_status (*act_mul_split)(lmx_backend *be, const lmx_buf *gu, int T, int inter, lmx_act_kind act, lmx_buf *out);
    /* ---- paged KV (optional: false = attention / rope_qk_store refuse a non-NULL map) ---- */
    bool paged_kv;
    /* ---- batched device sampling (optional: NULL = none) ----
     * Like sample / sample_result for n rows at once: row r chooses from logits [r * vocab, (r+1) *
     * vocab) with a[r] (copied; each window must stay unchanged until sample_rows_result);
     * sample_rows_result gives tokens[n] (-1 where the device could not decide). One batch in flight
     * per backend. Inside a bracketed step its place in the op sequence does not depend on the rows'
     * parameters (a backend may capture a part that serves every row and finish the others at
     * step_end). */
    lmx_status (*sample_rows)(lmx_backend *be, const lmx_buf *logits, int vocab, int n, const lmx_sample_args *a);
    lmx_status (*sample_rows_result)(lmx_backend *be, int n, int32_t *tokens);
    /* ---- mixture of experts (optional: NULL = sparse models do not run on this backend; see
     * lmx_moe_routing for the table). None reads back to the host or synchronises: inside a decode
     * step they are captured like every op (sizes and arguments fixed per T; the routing varies only
     * in device memory). ----
     * weight_upload_experts: parts[e] (e < n_experts) is expert e's matrix [rows, cols] (all of one
     * kind, rows, cols, dtype, bits, group_size and mode; all with a bias of one dtype or none, e.g.
     * a row range of a stored [E, rows, cols] tensor or the Hub's per-expert tensors) → one weight of
     * kind LMX_WEIGHT_EXPERTS. */
    lmx_status (*weight_upload_experts)(lmx_backend *be, const lmx_weight_desc *parts, int n_experts,
                                        lmx_bweight **out);
    /* The routing of logits [T, E] (r->rule) into r->table. */
    lmx_status (*moe_route)(lmx_backend *be, const lmx_buf *logits, const lmx_moe_routing *r);
    /* y[i, :] = x_i · W_{e(i)}ᵀ (+ bias_{e(i)}) for the S = T*k expert rows i in route order, e(i) the
     * expert of entry i: x_i = row order[i] / k of x [T, cols] (the routed token's row) when `gather`,
     * else row i of x [S, cols] (rows already in route order, e.g. an earlier moe_matmul's output).
     * y [S, rows], must not be x. Only the experts that received rows are read: a decode step reads
     * k experts' weights. */
    lmx_status (*moe_matmul)(lmx_backend *be, const lmx_bweight *w, const lmx_buf *x, bool gather,
                             const lmx_moe_routing *r, lmx_buf *y);
    /* The experts' gate and up projections of the token rows x [T, cols] and their activation, as one
     * op: h[i, :] = act(x_i · G_{e(i)}ᵀ) * (x_i · U_{e(i)}ᵀ) for the S entries i in route order (gate and
     * up: stacks of one shape), h [S, rows]; u [S, rows] is scratch (the up rows; a backend that fuses
     * may leave it unwritten). Computes moe_matmul(gate, x, gather) → h, moe_matmul(up, x, gather) → u,
     * act_mul(h, u) (the CPU backend: that sequence, bit for bit; a GPU backend: to its rounding, in one
     * launch for decode). */
    lmx_status (*moe_gate_up)(lmx_backend *be, const lmx_bweight *gate, const lmx_bweight *up, const lmx_buf *x,
                              const lmx_moe_routing *r, lmx_act_kind act, lmx_buf *h, lmx_buf *u);
    /* x[t, :] += Σ_j w[t*k + j] · y[pos[t*k + j], :] for t < T: the expert rows y [S, dim] (route
     * order) weighted back into the residual rows x [T, dim], the k terms added one at a time in
     * increasing expert order. */
    lmx_status (*moe_combine)(lmx_backend *be, lmx_buf *x, const lmx_buf *y, int dim, const lmx_moe_routing *r);
    /* ---- collectives (optional: NULL = the backend is no rank of a group, lmx_backend_group) ----
     * Every rank of a group calls the same collective ops in the same order with the same n, each
     * from its rank's thread (lmx_backend_group_run). all_reduce_sum: x[off, off + n) = the sum over
     * the ranks of their x[off, off + n), the same values on every rank (the CPU group sums in rank
     * order; NCCL in its ring/tree order). all_gather: dst[r * n, (r + 1) * n) = rank r's src[0, n)
     * on every rank (dst holds n_ranks * n floats and does not overlap src). The CPU backend returns
     * when every rank's part is in; the CUDA backend enqueues the NCCL call on its stream (inside a
     * bracketed step it is part of the captured graph). A group whose run was aborted (a rank
     * failed, lmx_backend_group_run) fails them with LMX_ERR_INFERENCE_FAILURE. */
    lmx_status (*all_reduce_sum)(lmx_backend *be, lmx_buf *x, size_t off, size_t n);
    lmx_status (*all_gather)(lmx_backend *be, const lmx_buf *src, size_t n, lmx_buf *dst);
    /* ---- who owns uploaded bytes ----
     * true: weight_upload / weight_upload_fused have copied what they read when they return (the host
     * bytes may be freed then: the CUDA backend); false: a weight may read the host bytes for its
     * lifetime (the CPU backend maps the weight files in place). */
    bool upload_copies;
} lmx_backend_ops;

/* Every backend object starts with this header. */
struct lmx_backend {
    const lmx_backend_ops *ops;
};

/* CPU backend with n_threads workers (0 = number of online CPUs, capped at 64), using the best
 * kernel level the CPU has (runtime CPUID): AVX-512 (F/BW/VL/DQ/VNNI), else AVX2+FMA+F16C with
 * AVX-VNNI, else AVX2+FMA+F16C, else the portable scalar reference (fp32 dot products). At the
 * SIMD levels quantized 4/8-bit weights are repacked at upload into 16-row interleaved tiles and
 * multiplied with the activations quantized to int16 per group (VPDPWSSD zmm / ymm or VPMADDWD: the
 * same integer sums, bit-identical results); 16-bit weights are converted in registers. _ex with
 * allow_simd=false forces the scalar kernels; _level caps the level (tests run every level on one
 * machine; a level the CPU lacks falls back to the best below). */
typedef enum lmx_cpu_level {
    LMX_CPU_SCALAR = 0,
    LMX_CPU_AVX2 = 1,
    LMX_CPU_AVXVNNI = 2,
    LMX_CPU_AVX512 = 3
} lmx_cpu_level;
lmx_status lmx_backend_cpu_create(int n_threads, lmx_backend **out);
lmx_status lmx_backend_cpu_create_ex(int n_threads, bool allow_simd, lmx_backend **out);
lmx_status lmx_backend_cpu_create_level(int n_threads, lmx_cpu_level max_level, lmx_backend **out);
/* "scalar", "avx2", "avxvnni" or "avx512" for a CPU backend, NULL for another backend. */
const char *lmx_backend_cpu_kernels(const lmx_backend *be);
/* Tests only: gives a CPU backend (before any weight is uploaded through it) a weight_upload_fused
 * that copies the parts' rows into one owned matrix, so the fused decode path of the model runs on
 * the CPU. LMX_ERR_INVALID_ARGUMENT for another backend. */
lmx_status lmx_backend_cpu_enable_fused(lmx_backend *be);

/* ---- devices and the one backend factory (backend_create.c) ---- */

/* Whether this build can run on a GPU now (a CUDA device is usable). Thread-safe. */
bool lmx_gpu_available(void);

/* GPU 0 as NVML sees it: device memory in use (all processes) and utilisation over NVML's last
 * sample period (percent). LMX_ERR_GPU_NOT_AVAILABLE without a GPU or NVML (fields then -1). */
typedef struct lmx_gpu_usage {
    int64_t mem_used; /* bytes */
    double percent;
} lmx_gpu_usage;
lmx_status lmx_gpu_usage_get(lmx_gpu_usage *out);
/* What GPU 0 is (for reports). LMX_ERR_GPU_NOT_AVAILABLE (*out zeroed) without one. */
typedef struct lmx_gpu_info {
    char name[256];         /* "NVIDIA H100 80GB HBM3" */
    int cc_major, cc_minor; /* compute capability, e.g. 9.0 */
    int sm_count;           /* multiprocessors */
    int64_t total_mem;      /* bytes of device memory */
} lmx_gpu_info;
lmx_status lmx_gpu_info_get(lmx_gpu_info *out);

/* Where a model asked to run on `want` runs: CPU → CPU; GPU → GPU when one is usable, else
 * LMX_ERR_GPU_NOT_AVAILABLE; AUTO → GPU when usable, else CPU with a warning (once per process). */
lmx_status lmx_device_resolve(lmx_device want, lmx_device *out);

/* The backend for `device` (resolved by lmx_device_resolve): the CUDA backend on GPU 0, or a CPU
 * backend with n_threads workers (0 = all online CPUs). *picked (may be NULL) gets GPU or CPU.
 * Errors: as lmx_device_resolve, and the backend's own (OUT_OF_MEMORY, GPU_NOT_AVAILABLE). */
lmx_status lmx_backend_create(lmx_device device, int n_threads, lmx_backend **out, lmx_device *picked);

static inline void lmx_backend_destroy(lmx_backend *be) {
    if (be) be->ops->destroy(be);
}

/* ---- groups of backends: tensor parallel in one process (backend_group.c) ----
 *
 *   lmx_backend_group *g;  lmx_backend_group_create(LMX_DEVICE_GPU, 2, 0, &g, NULL);
 *   lmx_backend_group_run(g, fn, arg);        // fn(arg, 0) and fn(arg, 1), each on its rank's thread
 *   lmx_backend_group_destroy(g);
 *
 * n_ranks backends with the collective ops above, one per rank, each driven by a thread of its own
 * that the group starts: GPU (AUTO with a usable GPU) → the CUDA backends of devices 0 .. n_ranks - 1
 * over one NCCL communicator (ncclCommInitAll; NVLink multicast off: NCCL_NVLS_ENABLE=0; NCCL allows
 * one rank per GPU, so n_ranks GPUs are needed: LMX_ERR_GPU_NOT_AVAILABLE otherwise, and
 * LMX_ERR_UNSUPPORTED without libnccl.so.2 when n_ranks > 1); CPU → n_ranks CPU backends of
 * n_threads / n_ranks workers each (n_threads 0 = all online CPUs), reducing in host memory (the
 * rank threads meet at a barrier). Every call into rank r's backend — uploads, buffers, ops, freeing
 * — must come from fn on rank r's thread (a CUDA rank's thread has its device current).
 * Ownership: create/destroy pair; destroy (no run in progress) destroys the backends and joins the
 * threads, after every model on the group is closed. Thread-safety: runs from several threads are
 * serialized (one at a time per group). */
typedef struct lmx_backend_group lmx_backend_group;
lmx_status lmx_backend_group_create(lmx_device device, int n_ranks, int n_threads, lmx_backend_group **out,
                                    lmx_device *picked);
void lmx_backend_group_destroy(lmx_backend_group *g); /* NULL-safe */
int lmx_backend_group_size(const lmx_backend_group *g);
lmx_backend *lmx_backend_group_backend(const lmx_backend_group *g, int rank);
/* Runs fn(arg, rank) for every rank at once, each on its rank's thread, and returns when all have
 * returned: LMX_OK, or the status and detail of the rank that failed first ("rank R of N: …"). With
 * `collectives` (fn calls them) a failing rank aborts the group's collectives first, so that no other
 * rank waits for it for ever (theirs fail too): the CPU group is usable again after the run, a GPU
 * group is not (aborted NCCL communicators are gone: its later collectives fail with
 * LMX_ERR_INFERENCE_FAILURE). */
lmx_status lmx_backend_group_run(lmx_backend_group *g, bool collectives, lmx_status (*fn)(void *arg, int rank),
                                 void *arg);

#endif
