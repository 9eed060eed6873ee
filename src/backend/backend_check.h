/* backend_check.h — the argument contract of the backend seam (backend.h), checked in one place.
 *
 * Every backend validates an op's arguments before it touches memory; these functions hold the checks
 * (and their exact error statuses and messages) that all backends share. lmx_buf and lmx_bweight are
 * private to each backend, so the checks take sizes, not the structs. `backend` is the backend's short
 * name ("cpu", "cuda"): range errors read "<backend> backend: <what>: range [off, +cnt) outside a
 * buffer of n".
 *
 * Each function returns LMX_OK or LMX_ERR_INVALID_ARGUMENT with a detail set by lmx_error().
 * Nothing is allocated or retained; all functions are pure and thread-safe.
 *
 * Checks that only look alike but differ between backends stay in the backends (positions in
 * rope_qk_store/attention: the CPU and CUDA kernels accept different position/ring layouts).
 */
#ifndef LMX_BACKEND_CHECK_H
#define LMX_BACKEND_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "util/error.h"

/* Returns from the calling function when `expr_` (an lmx_status) is not LMX_OK (util/error.h). */
#define LMX_BACKEND_TRY(expr_) LMX_TRY(expr_)

/* [off, off + cnt) must lie inside a buffer of `n` floats. */
lmx_status lmx_backend_check_range(const char *backend, const char *what, size_t off, size_t cnt, size_t n);

/* Range check of a backend's own lmx_buf (any struct with a `size_t n` element count); returns on failure. */
#define LMX_BACKEND_CHECK_RANGE(backend_, buf_, off_, cnt_, what_) \
    LMX_BACKEND_TRY(lmx_backend_check_range((backend_), (what_), (size_t)(off_), (size_t)(cnt_), (buf_)->n))

/* weight_upload: a non-empty shape and, for a quantized weight, columns that fit the group and bits. */
lmx_status lmx_backend_check_weight_desc(const lmx_weight_desc *d);

/* matmul: a matrix weight [w_rows, w_cols]; x holds T rows of w_cols from x_off, y T rows of w_rows. */
lmx_status lmx_backend_check_matmul(const char *backend, lmx_wkind w_kind, int64_t w_rows, int64_t w_cols,
                                    size_t x_n, size_t x_off, int T, size_t y_n);

/* embed: every id in [0, vocab), or -1 (a row of zeros: another rank's token). */
lmx_status lmx_backend_check_embed_ids(const int32_t *ids, int T, int64_t vocab);

/* rmsnorm: x and y hold [rows, dim]; the weight is a vector of dim. */
lmx_status lmx_backend_check_rmsnorm(const char *backend, size_t x_n, size_t y_n, int rows, int dim,
                                     lmx_wkind w_kind, int64_t w_cols);

/* attention: a usable head configuration; q/out of [n_tokens, n_heads, head_dim], caches of
 * [n_kv_heads, capacity, head_dim]; sinks (when p->sinks is set: its kind and size passed) a vector of
 * n_heads. Positions are checked by each backend. */
lmx_status lmx_backend_check_attention(const char *backend, const lmx_attn_params *p, size_t q_n, size_t out_n,
                                       size_t kc_n, size_t vc_n, lmx_wkind sink_kind, int64_t sink_cols);

/* rope_qk_store (backend.h, lmx_qk_rope_params): a usable shape; the T rows of q, k and v (offsets, row
 * strides of at least one row, 0 = packed) inside their buffers; caches of [n_kv_heads, capacity,
 * head_dim]; rot_dim as rope with inv_freq a vector of >= rot_dim/2; q_norm and k_norm both given
 * (vectors of head_dim) or both absent. The weights' kinds and sizes are passed (*_cols ignored for
 * an absent norm). Positions are checked by each backend. */
lmx_status lmx_backend_check_rope_qk_store(const char *backend, const lmx_qk_rope_params *p, size_t q_n, size_t k_n,
                                           size_t v_n, size_t kc_n, size_t vc_n, lmx_wkind inv_kind,
                                           int64_t inv_cols, lmx_wkind qn_kind, int64_t qn_cols, lmx_wkind kn_kind,
                                           int64_t kn_cols);

/* moe ops (backend.h lmx_moe_routing): T >= 1, 1 <= k <= min(E, LMX_MOE_MAX_TOPK), E <=
 * LMX_MOE_MAX_EXPERTS, a known rule and a table (whose size each backend checks against
 * lmx_moe_table_floats). */
lmx_status lmx_backend_check_moe_routing(const char *backend, const lmx_moe_routing *r);
/* moe_matmul (after the routing check): a stack of r->n_experts experts [w_rows, w_cols]; x holds T
 * (gather) or T*k rows of w_cols, y T*k rows of w_rows. */
lmx_status lmx_backend_check_moe_matmul(const char *backend, const lmx_moe_routing *r, lmx_wkind w_kind,
                                        int w_experts, int64_t w_rows, int64_t w_cols, size_t x_n, bool gather,
                                        size_t y_n);
/* moe_combine (after the routing check): x holds T rows of dim, y T*k rows. */
lmx_status lmx_backend_check_moe_combine(const char *backend, const lmx_moe_routing *r, size_t x_n, size_t y_n,
                                         int dim);

#endif
