/* backend_fuse.h — the argument contracts of weight_upload_fused and weight_upload_experts (backend.h),
 * shared by the backends that implement them (CUDA; the CPU backend: experts, and the test-only fused
 * variant).
 *
 * Pure functions, nothing allocated or retained; thread-safe.
 */
#ifndef LMX_BACKEND_FUSE_H
#define LMX_BACKEND_FUSE_H

#include <stdint.h>

#include "backend/backend.h"

#define LMX_FUSE_MAX_PARTS 8

/* LMX_OK when parts[0..n) can be uploaded as one matrix: 1 <= n <= LMX_FUSE_MAX_PARTS, each a valid
 * matrix description (lmx_backend_check_weight_desc: its status otherwise), all of the same kind,
 * cols, dtype (and for quantized parts bits and group_size), all with a bias of one dtype or none.
 * Mismatches → LMX_ERR_UNSUPPORTED with a detail (the caller uploads the parts separately). *rows
 * receives the fused row count (Σ parts[i].rows). */
lmx_status lmx_backend_check_fused_parts(const char *backend, const lmx_weight_desc *parts, int n, int64_t *rows);

/* LMX_OK when parts[0..n) can be uploaded as one expert stack (weight_upload_experts): 1 <= n <=
 * LMX_MOE_MAX_EXPERTS valid matrix descriptions of one kind, rows, cols, dtype, quantization and bias
 * dtype (or no bias); LMX_ERR_INVALID_ARGUMENT with a detail naming the expert otherwise. */
lmx_status lmx_backend_check_expert_parts(const char *backend, const lmx_weight_desc *parts, int n);

#endif
