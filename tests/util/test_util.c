/* test_util.c — status names, thread-local error detail, file helpers. */
#include "lmx_test.h"
#include "util/env.h"
#include "util/error.h"
#include "util/fs.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void test_status_names(void) {
    for (int s = 0; s < LMX_STATUS_COUNT; s++) CHECK(strcmp(lmx_status_str((lmx_status)s), "unknown status") != 0);
    CHECK_EQ_STR(lmx_status_str((lmx_status)9999), "unknown status");
    CHECK_EQ_STR(lmx_status_str(LMX_ERR_OUT_OF_MEMORY), "out of memory");
}

static void *other_thread(void *arg) {
    (void)arg;
    lmx_error(LMX_ERR_IO, "from the other thread");
    return NULL;
}

static void test_error_detail_is_thread_local(void) {
    CHECK(lmx_error(LMX_ERR_INVALID_ARGUMENT, "bad %s %d", "thing", 7) == LMX_ERR_INVALID_ARGUMENT);
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    CHECK_EQ_STR(lmx_last_error_detail(), "bad thing 7");
    lmx_error_prefix(LMX_ERR_IO, "file %s", "a.json");
    CHECK_EQ_STR(lmx_last_error_detail(), "file a.json: bad thing 7");
    lmx_error_clear();
    CHECK_EQ_STR(lmx_last_error_detail(), "");
}

static void test_fs(void) {
    char *p = lmx_fs_join("/a/b//", "c.json");
    CHECK_EQ_STR(p, "/a/b/c.json");
    free(p);
    char *buf = NULL;
    size_t n = 0;
    CHECK(lmx_fs_read_file("/nonexistent/x", 100, &buf, &n) == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(strstr(lmx_last_error_detail(), "/nonexistent/x") != NULL);
    CHECK(lmx_fs_read_file(LMX_SOURCE_DIR "/CMakeLists.txt", 10, &buf, &n) == LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(lmx_fs_read_file(LMX_SOURCE_DIR "/CMakeLists.txt", 1 << 20, &buf, &n) == LMX_OK);
    CHECK(n > 0 && buf[n] == '\0');
    free(buf);
    CHECK(lmx_fs_is_dir(LMX_SOURCE_DIR));
    CHECK(!lmx_fs_is_file(LMX_SOURCE_DIR));
}

/* the environment table: every entry named and described; flags parsed one way (0 off, else on,
 * unset or empty: the default) */
static void test_env_table(void) {
    for (int v = 0; v < LMX_ENV_COUNT; v++) {
        const lmx_env_entry *e = lmx_env_entry_of((lmx_env_var)v);
        CHECK(e && e->name && strncmp(e->name, "LMX_", 4) == 0 && e->meaning && *e->meaning);
    }
    CHECK(lmx_env_entry_of(LMX_ENV_COUNT) == NULL);
    const char *name = lmx_env_entry_of(LMX_ENV_CUDA_GRAPH)->name;
    unsetenv(name);
    CHECK(lmx_env_flag(LMX_ENV_CUDA_GRAPH) && lmx_env_str(LMX_ENV_CUDA_GRAPH) == NULL); /* default on */
    setenv(name, "", 1);
    CHECK(lmx_env_flag(LMX_ENV_CUDA_GRAPH) && lmx_env_str(LMX_ENV_CUDA_GRAPH) == NULL);
    setenv(name, "0", 1);
    CHECK(!lmx_env_flag(LMX_ENV_CUDA_GRAPH));
    setenv(name, "1", 1);
    CHECK(lmx_env_flag(LMX_ENV_CUDA_GRAPH) && strcmp(lmx_env_str(LMX_ENV_CUDA_GRAPH), "1") == 0);
    unsetenv(name);
    unsetenv("LMX_VERIFY");
    CHECK(!lmx_env_flag(LMX_ENV_VERIFY)); /* default off */
    setenv("LMX_VERIFY", "yes", 1);
    CHECK(lmx_env_flag(LMX_ENV_VERIFY));
    unsetenv("LMX_VERIFY");
}

int main(void) {
    RUN(test_status_names);
    RUN(test_error_detail_is_thread_local);
    RUN(test_fs);
    RUN(test_env_table);
    return lmx_test_summary();
}
