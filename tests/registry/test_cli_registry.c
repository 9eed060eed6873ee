/* test_cli_registry.c — `lmx add / list / verify / rm` end to end through the CLI binary. */
#include "lmx_test.h"
#include "fake_engine/fake_engine.h"
#include "util/fs.h"

#include <stdlib.h>
#include <sys/wait.h>

static char *tmp;

/* Runs "lmx ARGS" with LMX_HOME=tmp; captures stdout into out; returns the exit code. */
static int lmx_run(const char *args, char *out, size_t cap) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "LMX_HOME='%s' '%s' %s 2>/dev/null", tmp, LMX_CLI_PATH, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_cli(void) {
    char dir[1200], args[2600], out[8192];
    snprintf(dir, sizeof dir, "%s/models/acme/tiny", tmp);
    fake_model_write(dir, "{\"script\":\"ab\"}");
    CHECK_EQ_INT(lmx_run("list --json", out, sizeof out), 0);
    CHECK_EQ_STR(out, "[]\n");
    snprintf(args, sizeof args, "add '%s'", dir);
    CHECK_EQ_INT(lmx_run(args, out, sizeof out), 0);
    CHECK_EQ_INT(lmx_run("list --json", out, sizeof out), 0);
    CHECK(strstr(out, "\"id\":\"acme/tiny\"") && strstr(out, "\"files\":2"));
    CHECK_EQ_INT(lmx_run("list", out, sizeof out), 0);
    CHECK(strstr(out, "acme/tiny") != NULL);
    CHECK_EQ_INT(lmx_run("verify acme/tiny", out, sizeof out), 0);
    CHECK(strstr(out, "OK fake.json") != NULL);
    fake_model_write(dir, "{\"script\":\"ba\"}");
    CHECK_EQ_INT(lmx_run("verify acme/tiny", out, sizeof out), 1);
    CHECK(strstr(out, "CHANGED fake.json") != NULL);
    CHECK_EQ_INT(lmx_run("verify nobody/none", out, sizeof out), 1);
    CHECK_EQ_INT(lmx_run("add", out, sizeof out), 2);
    CHECK_EQ_INT(lmx_run("rm acme/tiny", out, sizeof out), 0);
    CHECK(!lmx_fs_is_dir(dir));
    CHECK_EQ_INT(lmx_run("rm acme/tiny", out, sizeof out), 1);
}

int main(void) {
    tmp = fake_tmpdir("cli");
    if (!tmp) return 1;
    RUN(test_cli);
    fake_rmtree(tmp);
    free(tmp);
    return lmx_test_summary();
}
