/* test_util.c — status names, thread-local error detail, file helpers. */
#include "lmx_test.h"
#include "util/error.h"
#include "util/fs.h"

#include <pthread.h>
#include <stdlib.h>

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

int main(void) {
    RUN(test_status_names);
    RUN(test_error_detail_is_thread_local);
    RUN(test_fs);
    return lmx_test_summary();
}
