/* convert_moe.c — mixture-of-experts parts of `lmx convert` (see convert.h): finding the Hub's
 * per-expert tensors and grouping them into the stacks mlx-lm's sanitize builds, and mlx-lm's
 * quant_predicate for routers. */
#include "convert/convert.h"
#include "util/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* projections as the Hub names them → index into STACK_PROJ (mixtral: w1 gate, w3 up, w2 down) */
static const char *const STACK_PROJ[3] = {"gate_proj", "up_proj", "down_proj"};
static const struct {
    const char *hub;
    int k;
} HUB_PROJ[] = {{"gate_proj", 0}, {"up_proj", 1}, {"down_proj", 2}, {"w1", 0}, {"w3", 1}, {"w2", 2}};

static bool ends_with_n(const char *s, size_t n, const char *suffix) {
    size_t m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

/* "<block>.experts.<e>.<proj>.weight" with block ending in ".mlp" or ".block_sparse_moe":
 * *block_len = strlen(block), *e, *k (projection). */
static bool parse_expert(const char *name, size_t *block_len, long *e, int *k) {
    const char *x = strstr(name, ".experts.");
    if (!x) return false;
    size_t bl = (size_t)(x - name);
    if (!ends_with_n(name, bl, ".mlp") && !ends_with_n(name, bl, ".block_sparse_moe") &&
        !(bl == 3 && !memcmp(name, "mlp", 3)))
        return false;
    const char *p = x + 9;
    if (*p < '0' || *p > '9') return false;
    char *end = NULL;
    long v = strtol(p, &end, 10);
    if (!end || *end != '.' || v < 0 || v > 1 << 20) return false;
    p = end + 1;
    for (size_t i = 0; i < sizeof HUB_PROJ / sizeof HUB_PROJ[0]; i++) {
        size_t m = strlen(HUB_PROJ[i].hub);
        if (!strncmp(p, HUB_PROJ[i].hub, m) && !strcmp(p + m, ".weight")) {
            *block_len = bl;
            *e = v;
            *k = HUB_PROJ[i].k;
            return true;
        }
    }
    return false;
}

bool lmx_convert_moe_is_expert(const char *name) {
    size_t bl;
    long e;
    int k;
    return parse_expert(name, &bl, &e, &k);
}

bool lmx_convert_moe_fused_gate_up(const char *name) {
    size_t n = strlen(name);
    return ends_with_n(name, n, ".mlp.experts.gate_up_proj");
}

void lmx_convert_moe_stacks_free(lmx_moe_stack *s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) {
        free(s[i].name);
        free(s[i].srcs);
    }
    free(s);
}

/* the stack named `name`, appended when new */
static lmx_moe_stack *stack_for(lmx_moe_stack **all, int *n, int *cap, const char *name) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*all)[i].name, name)) return &(*all)[i];
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        lmx_moe_stack *g = realloc(*all, (size_t)nc * sizeof *g);
        if (!g) return NULL;
        *all = g;
        *cap = nc;
    }
    lmx_moe_stack *s = &(*all)[*n];
    memset(s, 0, sizeof *s);
    if (!(s->name = strdup(name))) return NULL;
    (*n)++;
    return s;
}

static lmx_status place(lmx_moe_stack *s, long e, const lmx_tensor_view *t) {
    if (e >= s->n) {
        const lmx_tensor_view **g = realloc(s->srcs, (size_t)(e + 1) * sizeof *g);
        if (!g) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
        for (long i = s->n; i <= e; i++) g[i] = NULL;
        s->srcs = g;
        s->n = (int)(e + 1);
    }
    s->srcs[e] = t;
    return LMX_OK;
}

/* every expert 0..n-1 present, 2-D float, one shape and dtype */
static lmx_status check_stack(const lmx_moe_stack *s) {
    const lmx_tensor_view *a = NULL;
    for (int e = 0; e < s->n; e++) {
        const lmx_tensor_view *t = s->srcs[e];
        if (!t)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "convert: expert %d of %s is missing (%d experts)", e,
                             s->name, s->n);
        bool is_float = t->dtype == LMX_DTYPE_F32 || t->dtype == LMX_DTYPE_F16 || t->dtype == LMX_DTYPE_BF16;
        if (!is_float || t->ndim != 2)
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: tensor %s: an expert must be a 2-D float matrix",
                             t->file, t->name);
        if (!a) a = t;
        else if (t->dtype != a->dtype || t->shape[0] != a->shape[0] || t->shape[1] != a->shape[1])
            return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                             "%s: tensor %s: [%lld, %lld] %s differs from %s [%lld, %lld] %s", t->file, t->name,
                             (long long)t->shape[0], (long long)t->shape[1], lmx_dtype_name(t->dtype), a->name,
                             (long long)a->shape[0], (long long)a->shape[1], lmx_dtype_name(a->dtype));
    }
    return LMX_OK;
}

lmx_status lmx_convert_moe_stacks(const lmx_weights *wt, lmx_moe_stack **out, int *n) {
    *out = NULL;
    *n = 0;
    int cap = 0;
    lmx_status st = LMX_OK;
    const size_t cnt = lmx_weights_count(wt);
    for (size_t i = 0; i < cnt && st == LMX_OK; i++) {
        const lmx_tensor_view *t = lmx_weights_get(wt, i);
        size_t bl;
        long e;
        int k;
        if (!parse_expert(t->name, &bl, &e, &k)) continue;
        char name[600];
        if (bl + 40 > sizeof name) {
            st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "convert: tensor name %s is too long", t->name);
            break;
        }
        snprintf(name, sizeof name, "%.*s.switch_mlp.%s.weight", (int)bl, t->name, STACK_PROJ[k]);
        lmx_moe_stack *s = stack_for(out, n, &cap, name);
        st = s ? place(s, e, t) : lmx_error(LMX_ERR_OUT_OF_MEMORY, "convert: out of memory");
    }
    for (int i = 0; st == LMX_OK && i < *n; i++) st = check_stack(&(*out)[i]);
    if (st != LMX_OK) {
        lmx_convert_moe_stacks_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return st;
}

bool lmx_convert_moe_router_quant(const lmx_convert_model_info *mi, const char *module, int64_t cols,
                                  lmx_quant_params *q) {
    /* mlx-lm qwen3_moe.py quant_predicate: path.endswith("mlp.gate") → {"group_size": 64, "bits": 8}
     * (no mode: to_quantized's affine; asked only for modules the default group size already divides) */
    if (strcmp(mi->model_type, "qwen3_moe") || !ends_with_n(module, strlen(module), "mlp.gate") || cols % 64)
        return false;
    *q = (lmx_quant_params){8, 64, LMX_QUANT_AFFINE};
    return true;
}
