/* test_backend_check: the shared argument checks of the backend seam (src/backend/backend_check.h):
 * accepted edges, rejected cases, and the exact error details both backends report. */
#include <string.h>

#include "backend/backend_check.h"
#include "lmx.h"
#include "lmx_test.h"

static void test_range(void) {
    CHECK_EQ_INT(lmx_backend_check_range("cpu", "x", 0, 8, 8), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_range("cpu", "x", 8, 0, 8), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_range("cpu", "x", 9, 0, 8), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(lmx_backend_check_range("cuda", "buf_read", 3, 6, 8), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "cuda backend: buf_read: range [3, +6) outside a buffer of 8");
    /* off + cnt wrapping around SIZE_MAX must not pass */
    CHECK_EQ_INT(lmx_backend_check_range("cpu", "x", 4, (size_t)-2, 8), LMX_ERR_INVALID_ARGUMENT);
}

static void test_weight_desc(void) {
    lmx_weight_desc d = {.name = "w", .kind = LMX_WEIGHT_QUANT, .rows = 2, .cols = 64, .bits = 4, .group_size = 32};
    CHECK_EQ_INT(lmx_backend_check_weight_desc(&d), LMX_OK);
    d.group_size = 48;
    CHECK_EQ_INT(lmx_backend_check_weight_desc(&d), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "w: 64 columns do not fit group 48 / 4 bits");
    d.kind = LMX_WEIGHT_DENSE; /* group and bits mean nothing for a dense weight */
    CHECK_EQ_INT(lmx_backend_check_weight_desc(&d), LMX_OK);
    d.rows = 0;
    CHECK_EQ_INT(lmx_backend_check_weight_desc(&d), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "w: bad weight shape");
}

static void test_ops(void) {
    CHECK_EQ_INT(lmx_backend_check_matmul("cpu", LMX_WEIGHT_DENSE, 3, 4, 9, 1, 2, 6), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_matmul("cpu", LMX_WEIGHT_DENSE, 3, 4, 9, 2, 2, 6), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "cpu backend: matmul x: range [2, +8) outside a buffer of 9");
    CHECK_EQ_INT(lmx_backend_check_matmul("cpu", LMX_WEIGHT_VECTOR, 1, 4, 9, 0, 2, 6), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "matmul with a vector weight");

    int32_t ids[3] = {0, 9, 10};
    CHECK_EQ_INT(lmx_backend_check_embed_ids(ids, 2, 10), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_embed_ids(ids, 3, 10), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "token id 10 outside the vocabulary of 10");
    int32_t other[2] = {-1, -2}; /* -1: another rank's token (a zero row); below it: refused */
    CHECK_EQ_INT(lmx_backend_check_embed_ids(other, 1, 10), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_embed_ids(other, 2, 10), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "token id -2 outside the vocabulary of 10");

    CHECK_EQ_INT(lmx_backend_check_rmsnorm("cuda", 8, 8, 2, 4, LMX_WEIGHT_VECTOR, 4), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_rmsnorm("cuda", 8, 8, 2, 4, LMX_WEIGHT_VECTOR, 5), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "rmsnorm: weight of 5 for dim 4");

    lmx_attn_params p = {.n_tokens = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8, .capacity = 16};
    CHECK_EQ_INT(lmx_backend_check_attention("cuda", &p, 64, 64, 256, 256, LMX_WEIGHT_VECTOR, 0), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_attention("cuda", &p, 64, 64, 256, 255, LMX_WEIGHT_VECTOR, 0), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "cuda backend: attention v cache: range [0, +256) outside a buffer of 255");
    /* sinks: a vector of n_heads (the pointer is only tested for NULL here) */
    p.sinks = (const lmx_bweight *)&p;
    CHECK_EQ_INT(lmx_backend_check_attention("cuda", &p, 64, 64, 256, 256, LMX_WEIGHT_VECTOR, 4), LMX_OK);
    CHECK_EQ_INT(lmx_backend_check_attention("cuda", &p, 64, 64, 256, 256, LMX_WEIGHT_VECTOR, 2), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "attention: sinks of 2 for 4 heads");
    CHECK_EQ_INT(lmx_backend_check_attention("cuda", &p, 64, 64, 256, 256, LMX_WEIGHT_DENSE, 4), LMX_ERR_INVALID_ARGUMENT);
    p.sinks = NULL;
    p.n_kv_heads = 3;
    CHECK_EQ_INT(lmx_backend_check_attention("cuda", &p, 64, 64, 256, 256, LMX_WEIGHT_VECTOR, 0), LMX_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(lmx_last_error_detail(), "attention: bad head configuration");
}

int main(void) {
    RUN(test_range);
    RUN(test_weight_desc);
    RUN(test_ops);
    return lmx_test_summary();
}
