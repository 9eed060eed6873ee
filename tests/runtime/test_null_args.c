/* test_null_args.c — every fallible function of include/lmx.h called with NULL in each pointer
 * argument: LMX_ERR_INVALID_ARGUMENT (never a crash), outputs cleared where the header says so,
 * and every destroy/free function NULL-safe. Uses only lmx.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmx.h"
#include "lmx_test.h"

#define INVALID LMX_ERR_INVALID_ARGUMENT

static char models_dir[] = "/tmp/lmx_nullargs_XXXXXX";

static int on_text(const char *t, size_t n, void *u) {
    (void)t, (void)n, (void)u;
    return 0;
}

static void test_no_runtime(void) {
    lmx_runtime *rt = (lmx_runtime *)0x1; /* must stay untouched on error */
    CHECK_EQ_INT(lmx_runtime_create(NULL, NULL), INVALID);
    lmx_config bad = lmx_config_default();
    bad.max_context_length = 0;
    CHECK_EQ_INT(lmx_runtime_create(&bad, &rt), INVALID);
    CHECK(rt == (lmx_runtime *)0x1);
    lmx_runtime_destroy(NULL);
    lmx_config cfg;
    CHECK_EQ_INT(lmx_config_get(NULL, &cfg), INVALID);
    CHECK_EQ_INT(lmx_config_update(NULL, &cfg), INVALID);
    CHECK_EQ_INT(lmx_model_load(NULL, "x", NULL), INVALID);
    CHECK_EQ_INT(lmx_model_unload(NULL, "x"), INVALID);
    CHECK(!lmx_model_is_loaded(NULL, "x"));
    lmx_model_info info;
    CHECK_EQ_INT(lmx_model_get_info(NULL, "x", &info), INVALID);
    char *text = (char *)0x1;
    CHECK_EQ_INT(lmx_generate(NULL, "x", "hi", NULL, &text, NULL), INVALID);
    CHECK(text == NULL);
    CHECK_EQ_INT(lmx_generate_stream(NULL, "x", "hi", NULL, on_text, NULL, NULL), INVALID);
    lmx_message m = {"user", "hi"};
    CHECK_EQ_INT(lmx_chat_stream(NULL, "x", &m, 1, NULL, on_text, NULL, NULL), INVALID);
    int32_t ids[] = {1}, *out = (int32_t *)0x1;
    size_t n = 7;
    CHECK_EQ_INT(lmx_generate_ids(NULL, "x", ids, 1, NULL, NULL, NULL, &out, &n, NULL), INVALID);
    CHECK(out == NULL && n == 0);
    CHECK_EQ_INT(lmx_tokenize(NULL, "x", "hi", true, &out, &n), INVALID);
    CHECK_EQ_INT(lmx_detokenize(NULL, "x", ids, 1, &text), INVALID);
    lmx_metrics met;
    CHECK_EQ_INT(lmx_metrics_get(NULL, NULL, &met), INVALID);
    lmx_metrics_reset(NULL, NULL);
    lmx_free(NULL);
    lmx_registry_entries_free(NULL, 3);
    CHECK(lmx_status_str((lmx_status)-1) != NULL && lmx_status_str((lmx_status)9999) != NULL);
    CHECK(lmx_last_error_detail() != NULL && lmx_version() != NULL);
}

static void test_with_runtime(void) {
    lmx_config cfg = lmx_config_default();
    cfg.models_dir = models_dir;
    lmx_runtime *rt = NULL;
    CHECK(lmx_runtime_create(&cfg, &rt) == LMX_OK);
    if (!rt) return;
    CHECK_EQ_INT(lmx_config_get(rt, NULL), INVALID);
    CHECK_EQ_INT(lmx_config_update(rt, NULL), INVALID);
    CHECK_EQ_INT(lmx_model_load(rt, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_model_load(rt, "", NULL), INVALID);
    CHECK_EQ_INT(lmx_model_unload(rt, NULL), INVALID);
    CHECK(!lmx_model_is_loaded(rt, NULL));
    lmx_model_info info;
    CHECK_EQ_INT(lmx_model_get_info(rt, NULL, &info), INVALID);
    CHECK_EQ_INT(lmx_model_get_info(rt, "x", NULL), INVALID);
    char *text = NULL;
    CHECK_EQ_INT(lmx_generate(rt, NULL, "hi", NULL, &text, NULL), INVALID);
    CHECK_EQ_INT(lmx_generate(rt, "x", NULL, NULL, &text, NULL), INVALID);
    CHECK_EQ_INT(lmx_generate(rt, "x", "hi", NULL, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_generate_stream(rt, NULL, "hi", NULL, on_text, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_generate_stream(rt, "x", NULL, NULL, on_text, NULL, NULL), INVALID);
    lmx_message m = {"user", "hi"}, bad_m = {NULL, "hi"}, bad_c = {"user", NULL};
    CHECK_EQ_INT(lmx_chat_stream(rt, NULL, &m, 1, NULL, on_text, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_chat_stream(rt, "x", NULL, 1, NULL, on_text, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_chat_stream(rt, "x", &m, 0, NULL, on_text, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_chat_stream(rt, "x", &bad_m, 1, NULL, on_text, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_chat_stream(rt, "x", &bad_c, 1, NULL, on_text, NULL, NULL), INVALID);
    int32_t *out = NULL;
    size_t n = 0;
    CHECK_EQ_INT(lmx_generate_ids(rt, NULL, NULL, 0, NULL, NULL, NULL, &out, &n, NULL), INVALID);
    CHECK_EQ_INT(lmx_generate_ids(rt, "x", NULL, 3, NULL, NULL, NULL, &out, &n, NULL), INVALID);
    CHECK_EQ_INT(lmx_tokenize(rt, NULL, "hi", true, &out, &n), INVALID);
    CHECK_EQ_INT(lmx_tokenize(rt, "x", NULL, true, &out, &n), INVALID);
    CHECK_EQ_INT(lmx_tokenize(rt, "x", "hi", true, NULL, &n), INVALID);
    CHECK_EQ_INT(lmx_tokenize(rt, "x", "hi", true, &out, NULL), INVALID);
    int32_t ids[] = {1};
    CHECK_EQ_INT(lmx_detokenize(rt, NULL, ids, 1, &text), INVALID);
    CHECK_EQ_INT(lmx_detokenize(rt, "x", NULL, 1, &text), INVALID);
    CHECK_EQ_INT(lmx_detokenize(rt, "x", ids, 1, NULL), INVALID);
    CHECK_EQ_INT(lmx_metrics_get(rt, NULL, NULL), INVALID);
    lmx_metrics_reset(rt, NULL);
    lmx_runtime_destroy(rt);
}

static void test_registry(void) {
    lmx_registry_entry *e = NULL;
    int n = 0;
    CHECK_EQ_INT(lmx_registry_list(models_dir, NULL, &n), INVALID);
    CHECK_EQ_INT(lmx_registry_list(models_dir, &e, NULL), INVALID);
    CHECK_EQ_INT(lmx_registry_add(models_dir, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_registry_remove(models_dir, NULL, false), INVALID);
    char *s = (char *)0x1;
    CHECK_EQ_INT(lmx_registry_verify(models_dir, NULL, &s), INVALID);
    CHECK(s == NULL);
    CHECK_EQ_INT(lmx_registry_verify(models_dir, NULL, NULL), INVALID);
    CHECK_EQ_INT(lmx_registry_resolve(models_dir, NULL, &s), INVALID);
    CHECK_EQ_INT(lmx_registry_resolve(models_dir, "x", NULL), INVALID);
    CHECK_EQ_INT(lmx_registry_resolve(models_dir, "", &s), INVALID);
}

int main(void) {
    if (!mkdtemp(models_dir)) return 1;
    RUN(test_no_runtime);
    RUN(test_with_runtime);
    RUN(test_registry);
    rmdir(models_dir);
    return lmx_test_summary();
}
