/* test_registry.c — sha256, registry round trip, atomic write, verify, resolve, remove. */
#include "lmx_test.h"
#include "fake_engine/fake_engine.h"
#include "registry/registry.h"
#include "registry/sha256.h"
#include "util/fs.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmp;
static char models[1100];

static void write_file(const char *dir, const char *name, const char *text) {
    char p[2200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void make_model(const char *dir) {
    fake_model_write(dir, "{\"script\":\"ab\"}");
    write_file(dir, "config.json", "{\"model_type\":\"llama\"}");
    write_file(dir, "tokenizer.json", "{}");
    write_file(dir, ".hidden", "ignored");
}

static void test_sha256(void) {
    char hex[65];
    CHECK(lmx_sha256_bytes("abc", 3, hex) == LMX_OK);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(lmx_sha256_bytes("", 0, hex) == LMX_OK);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* a file over one 1 MiB block: 1,000,000 × 'a' (FIPS 180-2 test vector) + streamed */
    char p[1200];
    snprintf(p, sizeof p, "%s/million", tmp);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 1000000; i++) fputc('a', f);
    fclose(f);
    uint64_t size = 0;
    CHECK(lmx_sha256_file(p, hex, &size) == LMX_OK);
    CHECK_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    CHECK_EQ_INT(size, 1000000);
    snprintf(p, sizeof p, "%s/nope", tmp);
    CHECK(lmx_sha256_file(p, hex, &size) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(strstr(lmx_last_error_detail(), "nope") != NULL);
}

static void test_paths(void) {
    char *d, *r;
    CHECK(lmx_registry_paths("/x/y/models/", &d, &r) == LMX_OK);
    CHECK_EQ_STR(d, "/x/y/models");
    CHECK_EQ_STR(r, "/x/y/registry.json");
    free(d);
    free(r);
    setenv("LMX_HOME", "/opt/lmxhome", 1);
    CHECK(lmx_registry_paths(NULL, &d, &r) == LMX_OK);
    CHECK_EQ_STR(d, "/opt/lmxhome/models");
    CHECK_EQ_STR(r, "/opt/lmxhome/registry.json");
    free(d);
    free(r);
    unsetenv("LMX_HOME");
    setenv("HOME", "/home/u", 1);
    CHECK(lmx_registry_paths(NULL, &d, &r) == LMX_OK);
    CHECK_EQ_STR(d, "/home/u/.cache/lmx/models");
    free(d);
    free(r);
}

static void test_round_trip_and_verify(void) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/mlx-community/Tiny-4bit", models);
    make_model(dir);
    lmx_registry_entry *list;
    int n = -1;
    CHECK(lmx_registry_list(models, &list, &n) == LMX_OK && n == 0); /* no registry yet */
    lmx_registry_entries_free(list, n);
    CHECK(lmx_registry_add(models, dir, NULL) == LMX_OK); /* default id from the layout */
    char ext[1200];
    snprintf(ext, sizeof ext, "%s/elsewhere/my-model", tmp);
    make_model(ext);
    CHECK(lmx_registry_add(models, ext, NULL) == LMX_OK);
    CHECK(lmx_registry_add(models, ext, "team/custom") == LMX_OK);
    CHECK(lmx_registry_add(models, ext, "../evil") == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_registry_add(models, "/nonexistent/dir", NULL) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(lmx_registry_list(models, &list, &n) == LMX_OK);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK_EQ_STR(list[0].id, "local/my-model"); /* sorted */
        CHECK_EQ_STR(list[1].id, "mlx-community/Tiny-4bit");
        CHECK_EQ_STR(list[2].id, "team/custom");
        CHECK_EQ_INT(list[1].n_files, 3); /* config.json, fake.json, tokenizer.json; .hidden skipped */
        CHECK_EQ_STR(list[1].files[0].name, "config.json");
        CHECK_EQ_INT(list[1].files[0].size, strlen("{\"model_type\":\"llama\"}"));
        char hex[65];
        lmx_sha256_bytes("{\"model_type\":\"llama\"}", strlen("{\"model_type\":\"llama\"}"), hex);
        CHECK_EQ_STR(list[1].files[0].sha256, hex);
        CHECK(list[1].added_at > 1e9 && list[1].last_used == 0);
        char *real = realpath(dir, NULL);
        CHECK_EQ_STR(list[1].path, real);
        free(real);
    }
    lmx_registry_entries_free(list, n);
    /* the file is valid JSON at registry.json next to the models dir, and no temp file is left */
    char regp[1200];
    snprintf(regp, sizeof regp, "%s/registry.json", tmp);
    struct stat st;
    CHECK(stat(regp, &st) == 0 && st.st_size > 0);
    DIR *d = opendir(tmp);
    struct dirent *de;
    int tmps = 0;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp")) tmps++;
    closedir(d);
    CHECK_EQ_INT(tmps, 0);
    /* verify: clean, then a modified byte, then a missing file */
    char *report = NULL;
    CHECK(lmx_registry_verify(models, "mlx-community/Tiny-4bit", &report) == LMX_OK);
    CHECK(report && strstr(report, "OK config.json"));
    lmx_free(report);
    write_file(dir, "tokenizer.json", "{ }"); /* same size? no: 3 bytes vs 2 */
    CHECK(lmx_registry_verify(models, "mlx-community/Tiny-4bit", &report) == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(report && strstr(report, "CHANGED tokenizer.json"));
    CHECK(strstr(lmx_last_error_detail(), "tokenizer.json") != NULL);
    lmx_free(report);
    write_file(dir, "tokenizer.json", "[]"); /* same size, different bytes */
    CHECK(lmx_registry_verify(models, "mlx-community/Tiny-4bit", &report) == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(report && strstr(report, "sha256"));
    lmx_free(report);
    write_file(dir, "tokenizer.json", "{}");
    CHECK(lmx_registry_verify(models, "mlx-community/Tiny-4bit", NULL) == LMX_OK);
    char cfg[1300];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    unlink(cfg);
    CHECK(lmx_registry_verify(models, "mlx-community/Tiny-4bit", &report) == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(report && strstr(report, "MISSING config.json"));
    lmx_free(report);
    write_file(dir, "config.json", "{\"model_type\":\"llama\"}");
    CHECK(lmx_registry_verify(models, "nobody/none", NULL) == LMX_ERR_MODEL_NOT_FOUND);
    /* touch */
    CHECK(lmx_registry_touch(models, "team/custom") == LMX_OK);
    lmx_registry_entry *one;
    CHECK(lmx_registry_lookup(models, "team/custom", &one) == LMX_OK);
    CHECK(one->last_used > 1e9);
    lmx_registry_entries_free(one, 1);
}

static void test_resolve_and_remove(void) {
    char *p = NULL;
    CHECK(lmx_registry_resolve(models, "team/custom", &p) == LMX_OK);
    CHECK(p && strstr(p, "elsewhere/my-model"));
    lmx_free(p);
    /* not registered but present under models_dir */
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/org2/unregistered", models);
    make_model(dir);
    CHECK(lmx_registry_resolve(models, "org2/unregistered", &p) == LMX_OK);
    CHECK(p && strstr(p, "org2/unregistered"));
    lmx_free(p);
    /* a plain directory path */
    CHECK(lmx_registry_resolve(models, tmp, &p) == LMX_OK);
    lmx_free(p);
    CHECK(lmx_registry_resolve(models, "no/such-model", &p) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(strstr(lmx_last_error_detail(), "no/such-model") != NULL);
    /* remove with delete_files: only inside models_dir */
    CHECK(lmx_registry_remove(models, "team/custom", true) == LMX_OK);
    char ext[1200];
    snprintf(ext, sizeof ext, "%s/elsewhere/my-model", tmp);
    CHECK(lmx_fs_is_dir(ext));
    snprintf(dir, sizeof dir, "%s/mlx-community/Tiny-4bit", models);
    CHECK(lmx_registry_remove(models, "mlx-community/Tiny-4bit", true) == LMX_OK);
    CHECK(!lmx_fs_is_dir(dir));
    CHECK(lmx_registry_remove(models, "mlx-community/Tiny-4bit", false) == LMX_ERR_MODEL_NOT_FOUND);
    lmx_registry_entry *list;
    int n;
    CHECK(lmx_registry_list(models, &list, &n) == LMX_OK);
    CHECK_EQ_INT(n, 1);
    lmx_registry_entries_free(list, n);
}

typedef struct {
    int i;
    lmx_status st;
} add_job;

static void *add_thread(void *arg) {
    add_job *j = arg;
    char dir[1200], name[64];
    snprintf(dir, sizeof dir, "%s/conc/m%d", tmp, j->i);
    snprintf(name, sizeof name, "conc/m%d", j->i);
    j->st = lmx_registry_add(models, dir, name);
    return NULL;
}

static void test_concurrent_adds_all_survive(void) {
    enum { T = 6 };
    for (int i = 0; i < T; i++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/conc/m%d", tmp, i);
        make_model(dir);
    }
    add_job jobs[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        jobs[i] = (add_job){i, LMX_ERR_IO};
        pthread_create(&th[i], NULL, add_thread, &jobs[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].st == LMX_OK);
    }
    lmx_registry_entry *list;
    int n;
    CHECK(lmx_registry_list(models, &list, &n) == LMX_OK);
    CHECK_EQ_INT(n, 1 + T); /* local/my-model + the T new ones: no lost update */
    lmx_registry_entries_free(list, n);
}

static void test_corrupt_registry(void) {
    char other[1200], regp[1200];
    snprintf(other, sizeof other, "%s/corrupt/models", tmp);
    fake_model_write(other, "{}");
    snprintf(regp, sizeof regp, "%s/corrupt/registry.json", tmp);
    FILE *f = fopen(regp, "w");
    fputs("{\"models\": [ {\"id\": 5} ]}", f);
    fclose(f);
    lmx_registry_entry *list;
    int n;
    CHECK(lmx_registry_list(other, &list, &n) == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error_detail(), "registry.json") != NULL);
    /* a plain directory still resolves; a name cannot, and the error says why */
    char *p = NULL;
    CHECK(lmx_registry_resolve(other, tmp, &p) == LMX_OK && p);
    free(p);
    CHECK(lmx_registry_resolve(other, "org/x", &p) == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error_detail(), "registry") != NULL);
}

int main(void) {
    tmp = fake_tmpdir("reg");
    if (!tmp) return 1;
    snprintf(models, sizeof models, "%s/models", tmp);
    const char *home = getenv("HOME");
    char *saved_home = home ? strdup(home) : NULL;
    RUN(test_sha256);
    RUN(test_paths);
    if (saved_home) setenv("HOME", saved_home, 1);
    free(saved_home);
    RUN(test_round_trip_and_verify);
    RUN(test_resolve_and_remove);
    RUN(test_concurrent_adds_all_survive);
    RUN(test_corrupt_registry);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
