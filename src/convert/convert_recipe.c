/* convert_recipe.c — the quantization of each module: the global {mode, bits, group size} of
 * `lmx convert`, or one of mlx-lm's mixed recipes (mlx_lm/convert.py
 * `mixed_quant_predicate_builder`): mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6 = affine at the low
 * bit width, and at the high one (6, or 4 for mixed_3_4)
 *   - every path containing "lm_head";
 *   - paths containing "v_proj" / "v_a_proj" / "v_b_proj" or "down_proj" in layer i when
 *     i < L/8, or i >= 7L/8, or (i - L/8) % 3 == 2 (integer division; L = the number of layers).
 * The layer index is the path component at the position of the first numeric component of the
 * first "down_proj" module (0 when the path is shorter); a model without a down_proj is refused as
 * mlx-lm does. Recipes are affine only (mlx-lm refuses them with another mode). */
#include "convert/convert.h"
#include "util/error.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static bool all_digits(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return false;
    return true;
}

/* Component `idx` of a dotted path: its start and length (false when the path is shorter). */
static bool component(const char *path, int idx, const char **start, size_t *len) {
    const char *p = path;
    for (int i = 0; i < idx; i++) {
        p = strchr(p, '.');
        if (!p) return false;
        p++;
    }
    const char *e = strchr(p, '.');
    *start = p;
    *len = e ? (size_t)(e - p) : strlen(p);
    return true;
}

static int layer_index(const lmx_convert_recipe *r, const char *path) {
    const char *s;
    size_t n;
    if (!component(path, r->layer_location, &s, &n) || !all_digits(s, n)) return 0;
    return atoi(s);
}

lmx_status lmx_convert_recipe_init(const char *name, int group_size, const char *const *modules, size_t n,
                                   lmx_convert_recipe *r) {
    memset(r, 0, sizeof *r);
    r->group_size = group_size;
    r->high_bits = 6;
    if (!strcmp(name, "mixed_2_6")) r->low_bits = 2;
    else if (!strcmp(name, "mixed_3_4")) r->low_bits = 3, r->high_bits = 4;
    else if (!strcmp(name, "mixed_3_6")) r->low_bits = 3;
    else if (!strcmp(name, "mixed_4_6")) r->low_bits = 4;
    else
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "convert: unknown recipe '%s' (mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6)", name);
    const char *down = NULL;
    for (size_t i = 0; i < n && !down; i++)
        if (strstr(modules[i], "down_proj")) down = modules[i];
    if (!down)
        return lmx_error(LMX_ERR_UNSUPPORTED, "convert: recipe %s: the model has no down_proj module to place layers by",
                         name);
    r->layer_location = -1;
    const char *s;
    size_t len;
    for (int i = 0; component(down, i, &s, &len); i++)
        if (all_digits(s, len)) {
            r->layer_location = i;
            break;
        }
    if (r->layer_location < 0)
        return lmx_error(LMX_ERR_UNSUPPORTED, "convert: recipe %s: %s has no layer index", name, down);
    /* L = 1 + the largest layer index among the modules under the same prefix as the down_proj
     * ("model.layers."): len(model.layers) for a complete checkpoint */
    component(down, r->layer_location, &s, &len);
    size_t prefix = (size_t)(s - down);
    int max_idx = -1;
    for (size_t i = 0; i < n; i++) {
        const char *p = modules[i], *c;
        size_t cl;
        if (strncmp(p, down, prefix) != 0) continue;
        if (component(p, r->layer_location, &c, &cl) && all_digits(c, cl)) {
            int v = atoi(c);
            max_idx = v > max_idx ? v : max_idx;
        }
    }
    r->n_layers = max_idx + 1;
    r->active = true;
    return LMX_OK;
}

lmx_quant_params lmx_convert_recipe_params(const lmx_convert_recipe *r, const char *path) {
    const int L = r->n_layers, i = layer_index(r, path);
    /* Python's floored modulo; i < L/8 is already caught by the first test */
    int d = i - L / 8, mod = ((d % 3) + 3) % 3;
    bool more = i < L / 8 || i >= 7 * L / 8 || mod == 2;
    bool high = (more && (strstr(path, "v_proj") || strstr(path, "v_a_proj") || strstr(path, "v_b_proj") ||
                          strstr(path, "down_proj"))) ||
                strstr(path, "lm_head");
    return (lmx_quant_params){high ? r->high_bits : r->low_bits, r->group_size, LMX_QUANT_AFFINE};
}
