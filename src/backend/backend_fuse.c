/* backend_fuse.c — see backend_fuse.h. */
#include "backend/backend_fuse.h"

#include "backend/backend_check.h"
#include "util/error.h"

/* NULL when part p can share one matrix with p0 (same kind, cols, dtype, quantization, bias), else why not */
static const char *parts_differ(const lmx_weight_desc *p, const lmx_weight_desc *p0) {
    if (p->kind == LMX_WEIGHT_VECTOR) return "a vector";
    if (p->kind != p0->kind) return "another kind";
    if (p->cols != p0->cols) return "another column count";
    if (p->dtype != p0->dtype) return "another dtype";
    if (p->kind == LMX_WEIGHT_QUANT && (p->bits != p0->bits || p->group_size != p0->group_size || p->mode != p0->mode))
        return "other quantization parameters";
    if ((p->bias != NULL) != (p0->bias != NULL) || (p->bias && p->bias_dtype != p0->bias_dtype)) return "another bias";
    return NULL;
}

lmx_status lmx_backend_check_fused_parts(const char *backend, const lmx_weight_desc *parts, int n, int64_t *rows) {
    *rows = 0;
    if (!parts || n < 1 || n > LMX_FUSE_MAX_PARTS)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: fused upload of %d parts", backend, n);
    const lmx_weight_desc *p0 = &parts[0];
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const lmx_weight_desc *p = &parts[i];
        LMX_BACKEND_TRY(lmx_backend_check_weight_desc(p));
        const char *why = parts_differ(p, p0);
        if (why)
            return lmx_error(LMX_ERR_UNSUPPORTED, "%s backend: cannot fuse %s with %s: %s", backend,
                             p->name ? p->name : "?", p0->name ? p0->name : "?", why);
        if (p->rows > INT64_MAX / 2 - total)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: fused upload: too many rows", backend);
        total += p->rows;
    }
    *rows = total;
    return LMX_OK;
}

lmx_status lmx_backend_check_expert_parts(const char *backend, const lmx_weight_desc *parts, int n) {
    if (!parts || n < 1 || n > LMX_MOE_MAX_EXPERTS)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: an expert stack of %d experts", backend, n);
    const lmx_weight_desc *p0 = &parts[0];
    if (p0->kind != LMX_WEIGHT_DENSE && p0->kind != LMX_WEIGHT_QUANT)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s: an expert is a matrix", p0->name ? p0->name : "?");
    for (int i = 0; i < n; i++) {
        const lmx_weight_desc *p = &parts[i];
        LMX_BACKEND_TRY(lmx_backend_check_weight_desc(p));
        const char *why = p->rows != p0->rows ? "another row count" : parts_differ(p, p0);
        if (why)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: expert %d (%s) does not stack with expert 0 (%s): %s",
                             backend, i, p->name ? p->name : "?", p0->name ? p0->name : "?", why);
    }
    return LMX_OK;
}
