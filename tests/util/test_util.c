/* test_util.c — status names, thread-local error detail, file helpers. */
#include "lmx_test.h"
#include "util/env.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/json_str.h"
#include "template/chat_template.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static char *mktmp(void) {
    const char *base = getenv("TMPDIR");
    char tmpl[1024];
    snprintf(tmpl, sizeof tmpl, "%s/lmx-util-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void put(const char *dir, const char *name, const char *text) {
    char *p = lmx_fs_join(dir, name);
    FILE *f = p ? fopen(p, "w") : NULL;
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    free(p);
}

/* issue 15 item 5: only regular files are opened, and a FIFO never blocks */
static void test_fs_special_files(void) {
    char *d = mktmp();
    CHECK(d != NULL);
    if (!d) return;
    char *fifo = lmx_fs_join(d, "fifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    char *buf = NULL;
    size_t n = 0;
    time_t t0 = time(NULL);
    CHECK(lmx_fs_read_file(fifo, 100, &buf, &n) == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error_detail(), "is a FIFO, not a regular file") != NULL);
    CHECK(time(NULL) - t0 < 5);
    CHECK_EQ_STR(lmx_fs_describe(fifo), "a FIFO");
    CHECK(lmx_fs_read_file(d, 100, &buf, &n) == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error_detail(), "is a directory") != NULL);
    CHECK(lmx_fs_read_file("/dev/zero", 100, &buf, &n) == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error_detail(), "is a character device") != NULL);
    char *loop = lmx_fs_join(d, "loop");
    CHECK(symlink(loop, loop) == 0);
    CHECK(lmx_fs_read_file(loop, 100, &buf, &n) == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error_detail(), "symlink loop") != NULL);
    CHECK_EQ_STR(lmx_fs_describe(loop), "a symlink loop");
    int fd = -1;
    CHECK(lmx_fs_open_regular(fifo, &fd) == LMX_ERR_IO && fd == -1);
    /* containment and names */
    char *sub = lmx_fs_join(d, "sub");
    mkdir(sub, 0700);
    put(sub, "f", "x");
    char *f = lmx_fs_join(sub, "f"), *dotdot = lmx_fs_join(sub, "../sub/f"), *up = lmx_fs_join(sub, "..");
    CHECK(lmx_fs_inside(d, f) && lmx_fs_inside(d, dotdot) && lmx_fs_inside(d, sub));
    CHECK(!lmx_fs_inside(sub, sub) && !lmx_fs_inside(sub, up) && !lmx_fs_inside(f, f));
    CHECK(lmx_fs_safe_relative("model-00001.safetensors") && lmx_fs_safe_relative("a/b.json"));
    CHECK(!lmx_fs_safe_relative("../x") && !lmx_fs_safe_relative("a/../../x") && !lmx_fs_safe_relative("/etc/passwd"));
    CHECK(!lmx_fs_safe_relative("") && !lmx_fs_safe_relative(".") && !lmx_fs_safe_relative("a//b"));
    CHECK(!lmx_fs_safe_relative("a\nb") && !lmx_fs_safe_relative("a/"));
    unlink(f);
    rmdir(sub);
    unlink(loop);
    unlink(fifo);
    rmdir(d);
    free(f), free(dotdot), free(up), free(sub), free(loop), free(fifo), free(d);
}

static int num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

/* issue 15 item 7: a repeated key keeps its LAST value, as Python's json does */
static void test_json_duplicate_keys(void) {
    const char *t = "{\"a\":1,\"b\":{\"x\":1,\"x\":2,\"x\":3},\"a\":2,\"l\":[{\"k\":1,\"k\":5}],\"a\":3}";
    cJSON *j = lmx_json_parse(t, strlen(t), NULL);
    CHECK(j != NULL);
    CHECK_EQ_INT(num(j, "a"), 3);
    CHECK_EQ_INT(cJSON_GetArraySize(j), 3); /* a, b, l */
    CHECK_EQ_INT(num(cJSON_GetObjectItemCaseSensitive(j, "b"), "x"), 3);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "b")), 1);
    CHECK_EQ_INT(num(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "l"), 0), "k"), 5);
    cJSON_Delete(j);
    /* a big object (the hashed path): 2000 keys, each twice */
    size_t cap = 100000, len = 0;
    char *big = malloc(cap);
    len += (size_t)snprintf(big + len, cap - len, "{");
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 2000; i++) len += (size_t)snprintf(big + len, cap - len, "%s\"k%d\":%d", len > 1 ? "," : "", i, r * 10000 + i);
    len += (size_t)snprintf(big + len, cap - len, "}");
    j = lmx_json_parse(big, len, NULL);
    CHECK(j != NULL && cJSON_GetArraySize(j) == 2000);
    CHECK_EQ_INT(num(j, "k0"), 10000);
    CHECK_EQ_INT(num(j, "k1999"), 11999);
    cJSON_Delete(j);
    free(big);
    /* the parser's nesting limit is named */
    char deep[1200];
    memset(deep, '[', 1100);
    deep[1100] = '\0';
    const char *stop = NULL;
    CHECK(lmx_json_parse(deep, 1100, &stop) == NULL);
    char why[160];
    CHECK(strstr(lmx_json_error(deep, 1100, stop, why, sizeof why), "nested deeper than the parser's limit of 1000") != NULL);
    CHECK(strstr(lmx_json_error("{\"a\":\n x}", 9, NULL, why, sizeof why), "not valid JSON") != NULL);
    /* tokenizer_config.json with two chat_template keys: the last one is the template */
    char *d = mktmp();
    if (!d) return;
    put(d, "tokenizer_config.json", "{\"chat_template\": \"FIRST\", \"bos_token\": \"<s>\", \"chat_template\": \"LAST\"}");
    char *src = NULL, *special = NULL;
    CHECK(lmx_chat_template_load_dir(d, &src, &special) == LMX_OK);
    CHECK(src && strcmp(src, "LAST") == 0);
    free(src);
    free(special);
    char deepcfg[1300] = "{\"chat_template\": ";
    for (int i = 0; i < 1100; i++) strcat(deepcfg, "[");
    put(d, "tokenizer_config.json", deepcfg);
    src = special = NULL;
    CHECK(lmx_chat_template_load_dir(d, &src, &special) == LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK(strstr(lmx_last_error_detail(), "nested deeper than the parser's limit") != NULL);
    free(src);
    free(special);
    char *p = lmx_fs_join(d, "tokenizer_config.json");
    unlink(p);
    free(p);
    rmdir(d);
    free(d);
}

/* issue 15 item 11: UTF-8 validation used for names and JSON output */
static void test_utf8(void) {
    CHECK(lmx_utf8_valid("abc \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    CHECK(!lmx_utf8_valid("\xff", 1) && !lmx_utf8_valid("\xc0\xaf", 2) && !lmx_utf8_valid("\xed\xa0\x80", 3));
    CHECK(!lmx_utf8_valid("\xe2\x82", 2) && !lmx_utf8_valid("\xf4\x90\x80\x80", 4));
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
    RUN(test_fs_special_files);
    RUN(test_json_duplicate_keys);
    RUN(test_utf8);
    RUN(test_status_names);
    RUN(test_error_detail_is_thread_local);
    RUN(test_fs);
    RUN(test_env_table);
    return lmx_test_summary();
}
