/* test_public_api.c — written against include/lmx.h alone and linked to the SHARED library: every
 * function of the public API must be exported and callable. No model engine is needed: loads of a
 * directory that is not a model fail cleanly, the registry works fully. */
#include "lmx.h"
#include "lmx_test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int on_text(const char *t, size_t n, void *u) {
    (void)t;
    (void)n;
    (void)u;
    return 0;
}

static void test_everything_links_and_behaves(void) {
    char tmpl[] = "/tmp/lmx-pub-XXXXXX";
    char *root = mkdtemp(tmpl);
    CHECK(root != NULL);
    if (!root) return;
    char models[256], dir[300], file[400];
    snprintf(models, sizeof models, "%s/models", root);
    snprintf(dir, sizeof dir, "%s/org/notamodel", models);
    mkdir(models, 0755);
    snprintf(file, sizeof file, "%s/org", models);
    mkdir(file, 0755);
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/readme.txt", dir);
    FILE *f = fopen(file, "w");
    fputs("not a model\n", f);
    fclose(f);

    CHECK(lmx_version() && lmx_version()[0]);
    CHECK(strcmp(lmx_status_str(LMX_ERR_CANCELLED), "cancelled") == 0);
    lmx_log_set_level(LMX_LOG_ERROR);

    lmx_config cfg = lmx_config_default();
    cfg.models_dir = models;
    lmx_runtime *rt = NULL;
    CHECK(lmx_runtime_create(&cfg, &rt) == LMX_OK);
    lmx_config got;
    CHECK(lmx_config_get(rt, &got) == LMX_OK && strcmp(got.models_dir, models) == 0);
    got.max_cached_models = 2;
    CHECK(lmx_config_update(rt, &got) == LMX_OK);

    /* registry */
    CHECK(lmx_registry_add(models, dir, NULL) == LMX_ERR_MODEL_NOT_FOUND); /* no config.json: not a model */
    snprintf(file, sizeof file, "%s/config.json", dir);
    f = fopen(file, "w");
    fputs("{}\n", f);
    fclose(f);
    CHECK(lmx_registry_add(models, dir, NULL) == LMX_OK);
    lmx_registry_entry *list = NULL;
    int n = 0;
    CHECK(lmx_registry_list(models, &list, &n) == LMX_OK && n == 1);
    CHECK(n == 1 && strcmp(list[0].id, "org/notamodel") == 0 && list[0].n_files == 2);
    lmx_registry_entries_free(list, n);
    char *path = NULL;
    CHECK(lmx_registry_resolve(models, "org/notamodel", &path) == LMX_OK && path);
    lmx_free(path);
    char *report = NULL;
    CHECK(lmx_registry_verify(models, "org/notamodel", &report) == LMX_OK && report);
    lmx_free(report);

    /* loading a directory that is not a model fails with a detail and caches nothing */
    lmx_status st = lmx_model_load(rt, "org/notamodel", NULL);
    CHECK(st != LMX_OK && lmx_last_error_detail()[0] != '\0');
    CHECK(!lmx_model_is_loaded(rt, "org/notamodel"));
    lmx_model_info info;
    CHECK(lmx_model_get_info(rt, "org/notamodel", &info) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(lmx_model_unload(rt, "org/notamodel") == LMX_ERR_MODEL_NOT_FOUND);

    lmx_gen_options o = lmx_gen_options_default();
    o.max_tokens = 4;
    char *text = (char *)1;
    lmx_gen_result res;
    CHECK(lmx_generate(rt, "org/notamodel", "hi", &o, &text, &res) != LMX_OK && text == NULL);
    CHECK(lmx_generate_stream(rt, "org/notamodel", "hi", &o, on_text, NULL, &res) != LMX_OK);
    lmx_message msgs[] = {{"user", "hi"}};
    CHECK(lmx_chat_stream(rt, "org/notamodel", msgs, 1, &o, on_text, NULL, &res) != LMX_OK);
    CHECK(lmx_generate(rt, "no/such/model", "hi", &o, &text, &res) == LMX_ERR_MODEL_NOT_FOUND);
    int32_t prompt[] = {1, 2, 3}, *ids = NULL;
    size_t n_ids = 0;
    CHECK(lmx_generate_ids(rt, "org/notamodel", prompt, 3, &o, on_text, NULL, &ids, &n_ids, &res) != LMX_OK);
    CHECK(ids == NULL && n_ids == 0);
    CHECK(lmx_tokenize(rt, "org/notamodel", "hi", true, &ids, &n_ids) != LMX_OK);
    CHECK(lmx_detokenize(rt, "org/notamodel", prompt, 3, &text) != LMX_OK);

    lmx_metrics m;
    CHECK(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    CHECK(m.current_memory_bytes > 0 && m.avg_gpu_utilization == -1 && m.n_models_loaded == 0);
    lmx_metrics_reset(rt, NULL);
    lmx_metrics_reset(rt, "org/notamodel");

    CHECK(lmx_registry_remove(models, "org/notamodel", true) == LMX_OK);
    CHECK(access(dir, F_OK) != 0); /* inside models_dir: deleted */
    lmx_runtime_destroy(rt);
    lmx_free(NULL);
    snprintf(file, sizeof file, "rm -rf '%s'", root);
    CHECK(system(file) == 0);
}

int main(void) {
    RUN(test_everything_links_and_behaves);
    return lmx_test_summary();
}
