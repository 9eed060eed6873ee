/* backend_fuse.c — see backend_fuse.h. */
#include "backend/backend_fuse.h"

#include "backend/backend_check.h"
#include "util/error.h"

lmx_status lmx_backend_check_fused_parts(const char *backend, const lmx_weight_desc *parts, int n, int64_t *rows) {
    *rows = 0;
    if (!parts || n < 1 || n > LMX_FUSE_MAX_PARTS)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "%s backend: fused upload of %d parts", backend, n);
    const lmx_weight_desc *p0 = &parts[0];
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const lmx_weight_desc *p = &parts[i];
        LMX_BACKEND_TRY(lmx_backend_check_weight_desc(p));
        const char *why = NULL;
        if (p->kind == LMX_WEIGHT_VECTOR) why = "a vector";
        else if (p->kind != p0->kind) why = "another kind";
        else if (p->cols != p0->cols) why = "another column count";
        else if (p->dtype != p0->dtype) why = "another dtype";
        else if (p->kind == LMX_WEIGHT_QUANT && (p->bits != p0->bits || p->group_size != p0->group_size ||
                                                  p->mode != p0->mode))
            why = "other quantization parameters";
        else if ((p->bias != NULL) != (p0->bias != NULL) || (p->bias && p->bias_dtype != p0->bias_dtype))
            why = "another bias";
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
