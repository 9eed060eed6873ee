/* cuda_backend_moe.c — the CUDA backend's mixture-of-experts op (backend.h rows_axpy; kernel in
 * cuda_moe.cu). The routing table is host data chosen per call, so the op refuses to run inside a
 * captured decode step (the model does not bracket sparse models' steps). */
#ifdef LMX_HAVE_CUDA
#include "backend/cuda/cuda_backend_internal.h"

#include "util/error.h"

lmx_status lmx_cub_rows_axpy(lmx_backend *be, lmx_buf *y, const lmx_buf *x, int n, int dim, const int32_t *idx,
                             const float *w) {
    cuda_backend *c = CB(be);
    if (n < 0 || dim < 1 || (n > 0 && (!idx || !w)))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: rows_axpy: bad arguments (n %d, dim %d)", n, dim);
    if (stepping(c)) {
        c->step_bad = true;
        return lmx_error(LMX_ERR_UNSUPPORTED, "cuda backend: rows_axpy inside a decode step");
    }
    CHECK_RANGE(x, 0, (size_t)n * (size_t)dim, "rows_axpy x");
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "cuda backend: rows_axpy: row index %d at %d", idx[i], i);
        CHECK_RANGE(y, (size_t)idx[i] * (size_t)dim, (size_t)dim, "rows_axpy y");
    }
    return lmx_cuda_rows_axpy(y->d, x->d, n, dim, idx, w, c->stream);
}
#else
typedef int lmx_cuda_backend_moe_unused; /* keep the translation unit non-empty */
#endif
