/* test_tokenizer_cli.c — the `lmx tokenize` / `lmx detokenize` contracts on the real llama2
 * tokenizer (SKIP when the shared fixtures are absent). Expected ids are HF tokenizers 0.23 output
 * (see the golden files). */
#include "lmx_test.h"
#include "util/fs.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[1024];

/* Runs `printf '%s' INPUT | lmx ARGS` and returns stdout (malloc'd) and the exit code. */
static char *run(const char *input, size_t in_len, const char *args, int *rc, size_t *out_len) {
    char in_path[] = "/tmp/lmx_cli_inXXXXXX", out_path[] = "/tmp/lmx_cli_outXXXXXX";
    int fi = mkstemp(in_path), fo = mkstemp(out_path);
    if (fi < 0 || fo < 0) return NULL;
    if (write(fi, input, in_len) != (ssize_t)in_len) return NULL;
    close(fi);
    close(fo);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s < '%s' > '%s' 2>/dev/null", LMX_CLI_PATH, args, in_path, out_path);
    int st = system(cmd);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    char *out = NULL;
    size_t n = 0;
    lmx_fs_read_file(out_path, 1 << 20, &out, &n);
    unlink(in_path);
    unlink(out_path);
    if (out_len) *out_len = n;
    return out;
}

static void test_tokenize(void) {
    char args[2048];
    int rc;
    snprintf(args, sizeof args, "tokenize '%s' --add-special", dir);
    char *o = run("Hello world", 11, args, &rc, NULL);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(o, "[1,22557,1526]\n");
    free(o);
    snprintf(args, sizeof args, "tokenize '%s'", dir);
    o = run("Hello world", 11, args, &rc, NULL);
    CHECK_EQ_STR(o, "[22557,1526]\n");
    free(o);
    snprintf(args, sizeof args, "tokenize '%s' --jsonl --add-special", dir);
    const char *in = "\"Hello world\"\n\"\"\n\"hello\\nworld\"\n";
    o = run(in, strlen(in), args, &rc, NULL);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(o, "[1,22557,1526]\n[1]\n[1,6312,28709,13,9471]\n");
    free(o);
    o = run("\xFF", 1, args + 0, &rc, NULL); /* --jsonl: not a JSON string */
    CHECK_EQ_INT(rc, 1);
    free(o);
    snprintf(args, sizeof args, "tokenize '%s'", dir);
    o = run("ab\xFF", 3, args, &rc, NULL); /* invalid UTF-8 */
    CHECK_EQ_INT(rc, 1);
    free(o);
    o = run("", 0, "tokenize", &rc, NULL);
    CHECK_EQ_INT(rc, 2);
    free(o);
    snprintf(args, sizeof args, "tokenize '%s' --bogus", dir);
    o = run("", 0, args, &rc, NULL);
    CHECK_EQ_INT(rc, 2);
    free(o);
}

static void test_detokenize(void) {
    char args[2048];
    int rc;
    size_t n;
    snprintf(args, sizeof args, "detokenize '%s'", dir);
    char *o = run("[1, 22557, 1526]", 16, args, &rc, &n);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(o, "<s> Hello world"); /* raw, no newline appended */
    free(o);
    snprintf(args, sizeof args, "detokenize '%s' --skip-special", dir);
    o = run("[1, 22557, 1526]", 16, args, &rc, &n);
    CHECK_EQ_STR(o, "Hello world");
    free(o);
    snprintf(args, sizeof args, "detokenize '%s' --jsonl --skip-special", dir);
    const char *in = "[1,22557,1526]\n[6312,28709,13,9471]\n[3]\n[]\n";
    o = run(in, strlen(in), args, &rc, &n);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(o, "\"Hello world\"\n\"hello\\nworld\"\n\"\\u0000\"\n\"\"\n");
    free(o);
    o = run("[1, \"x\"]", 8, args, &rc, &n);
    CHECK_EQ_INT(rc, 1);
    free(o);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/llama2", LMX_TOK_FIXTURES);
    if (!lmx_fs_is_dir(dir)) {
        SKIP("%s absent (unpacked from tests/fixtures/tokenizers/llama2.tar.xz at configure time)", dir);
        return lmx_test_summary();
    }
    RUN(test_tokenize);
    RUN(test_detokenize);
    return lmx_test_summary();
}
