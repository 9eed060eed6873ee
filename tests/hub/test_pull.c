/* test_pull.c — lmx pull (src/hub) against a fake Hugging Face hub on 127.0.0.1 with the real
 * URL shapes and headers (no real network):
 *   GET /api/models/{org}/{name}/revision/{rev}?blobs=true → {"sha", "siblings": [{rfilename, size,
 *       lfs: {sha256, size}}]}; 401 for a gated repo without the right bearer token, 404 unknown;
 *   GET /{org}/{name}/resolve/{rev}/{file} → 302 to http://localhost:PORT/cdn/... (another host
 *       name, so the token must not follow), X-Repo-Commit, X-Linked-Etag, X-Linked-Size;
 *   GET /cdn/{org}/{name}/{file} → the bytes, honouring "Range: bytes=N-" with 206;
 *       repo t/cut: the first full request of model.safetensors is cut in the middle.
 * Checks: the files a model needs (and only those; unsafe names never written), SHA-256, registry
 * entry and .lmx-pull.json with the commit, resume with Range (in one run through the retries,
 * and across runs from a .partial), a wrong checksum deletes and fails with nothing registered,
 * 401 and 404 messages, the CLI with HF_ENDPOINT/HF_TOKEN. */
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "formats/st_build.h"
#include "hub/hub.h"
#include "lmx_test.h"
#include "registry/registry.h"
#include "registry/sha256.h"
#include "util/fs.h"

#define COMMIT "0123456789abcdef0123456789abcdef01234567"
#define FIX LMX_SOURCE_DIR "/tests/fixtures/models/llama-tiny/"

typedef struct blob {
    const char *name;
    char *data;
    size_t len;
    char sha[65];
    bool lfs;
} blob;

static blob g_blobs[4]; /* [3] README.md: listed, not a model file (only with --include) */
static int g_port;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_range_requests, g_cut_done, g_auth_at_cdn, g_redirects, g_cut_enabled = 1;
static char g_tmp[512];

static blob *find_blob(const char *name) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(g_blobs[i].name, name)) return &g_blobs[i];
    return NULL;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned code, const char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

typedef struct cut_reader {
    const blob *b;
    size_t limit;
} cut_reader;

static ssize_t cut_read(void *cls, uint64_t pos, char *buf, size_t max) {
    cut_reader *cr = cls;
    if (pos >= cr->limit) return MHD_CONTENT_READER_END_WITH_ERROR; /* the connection drops */
    size_t n = cr->limit - pos < max ? cr->limit - (size_t)pos : max;
    memcpy(buf, cr->b->data + pos, n);
    return (ssize_t)n;
}

static bool authorized(struct MHD_Connection *c, const char *repo) {
    if (strcmp(repo, "t/gated")) return true;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return a && !strcmp(a, "Bearer sekrit");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    char org[64], name[64], rest[256];
    if (sscanf(url, "/api/models/%63[^/]/%63[^/]/revision/%255s", org, name, rest) == 3) {
        char repo[160];
        snprintf(repo, sizeof repo, "%s/%s", org, name);
        const char *blobs = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "blobs");
        if (!blobs || strcmp(blobs, "true")) return send_text(c, 400, "{\"error\":\"blobs=true expected\"}");
        if (!authorized(c, repo)) return send_text(c, 401, "{\"error\":\"Access to model t/gated is restricted.\"}");
        if (strcmp(org, "t") || (strcmp(rest, "main") && strcmp(rest, COMMIT)))
            return send_text(c, 404, "{\"error\":\"Repository not found\"}");
        if (strcmp(name, "tiny") && strcmp(name, "badsum") && strcmp(name, "cut") && strcmp(name, "gated") &&
            strcmp(name, "etag") && strcmp(name, "etagbad"))
            return send_text(c, 404, "{\"error\":\"Repository not found\"}");
        char *j = malloc(8192);
        int n = snprintf(j, 8192, "{\"id\":\"%s\",\"sha\":\"%s\",\"siblings\":[", repo, COMMIT);
        for (int i = 0; i < 4; i++) {
            const blob *b = &g_blobs[i];
            const char *sha = b->sha;
            if (!strcmp(name, "badsum")) sha = "00000000000000000000000000000000000000000000000000000000000000ff";
            if (b->lfs && !strncmp(name, "etag", 4)) /* an answer without lfs.sha256: X-Linked-Etag then */
                n += snprintf(j + n, 8192 - (size_t)n, "{\"rfilename\":\"%s\",\"size\":%zu,\"lfs\":{\"size\":%zu}},",
                              b->name, b->len, b->len);
            else if (b->lfs)
                n += snprintf(j + n, 8192 - (size_t)n,
                              "{\"rfilename\":\"%s\",\"size\":%zu,\"lfs\":{\"sha256\":\"%s\",\"size\":%zu,\"pointerSize\":134}},",
                              b->name, b->len, sha, b->len);
            else
                n += snprintf(j + n, 8192 - (size_t)n, "{\"rfilename\":\"%s\",\"size\":%zu,\"blobId\":\"x\"},", b->name,
                              b->len);
        }
        n += snprintf(j + n, 8192 - (size_t)n,
                      "{\"rfilename\":\"../evil.safetensors\",\"size\":5},"
                      "{\"rfilename\":\"sub/x.safetensors\",\"size\":5},{\"rfilename\":\".gitattributes\",\"size\":5}]}");
        enum MHD_Result r = send_text(c, 200, j);
        free(j);
        return r;
    }
    if (sscanf(url, "/%63[^/]/%63[^/]/resolve/%255s", org, name, rest) == 3) {
        char repo[160], loc[512];
        snprintf(repo, sizeof repo, "%s/%s", org, name);
        if (!authorized(c, repo)) return send_text(c, 401, "{\"error\":\"restricted\"}");
        char *file = strchr(rest, '/');
        if (!file || strncmp(rest, COMMIT, 40)) return send_text(c, 404, "{\"error\":\"Revision not found\"}");
        file++;
        blob *b = find_blob(file);
        if (!b) return send_text(c, 404, "{\"error\":\"Entry not found\"}");
        snprintf(loc, sizeof loc, "http://localhost:%d/cdn/%s/%s/%s", g_port, org, name, file);
        static const char found[] = "Found. Redirecting"; /* the hub's 302 has a body: never written */
        struct MHD_Response *r = MHD_create_response_from_buffer(sizeof found - 1, (void *)found, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Location", loc);
        MHD_add_response_header(r, "X-Repo-Commit", COMMIT);
        char etag[80];
        snprintf(etag, sizeof etag, "\"%s\"", strcmp(name, "etagbad") || !b->lfs ? b->sha :
                 "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
        MHD_add_response_header(r, "X-Linked-Etag", etag);
        char sz[32];
        snprintf(sz, sizeof sz, "%zu", b->len);
        MHD_add_response_header(r, "X-Linked-Size", sz);
        pthread_mutex_lock(&g_mu);
        g_redirects++;
        pthread_mutex_unlock(&g_mu);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_FOUND, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (sscanf(url, "/cdn/%63[^/]/%63[^/]/%255s", org, name, rest) == 3) {
        blob *b = find_blob(rest);
        if (!b) return send_text(c, 404, "{}");
        pthread_mutex_lock(&g_mu);
        if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization")) g_auth_at_cdn++;
        pthread_mutex_unlock(&g_mu);
        const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
        size_t from = 0;
        if (range && sscanf(range, "bytes=%zu-", &from) == 1) {
            if (from >= b->len) return send_text(c, 416, "{}");
            pthread_mutex_lock(&g_mu);
            g_range_requests++;
            pthread_mutex_unlock(&g_mu);
            struct MHD_Response *r =
                MHD_create_response_from_buffer(b->len - from, b->data + from, MHD_RESPMEM_PERSISTENT);
            char cr[96];
            snprintf(cr, sizeof cr, "bytes %zu-%zu/%zu", from, b->len - 1, b->len);
            MHD_add_response_header(r, "Content-Range", cr);
            enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_PARTIAL_CONTENT, r);
            MHD_destroy_response(r);
            return ret;
        }
        pthread_mutex_lock(&g_mu);
        bool cut = !strcmp(name, "cut") && b->lfs && g_cut_enabled && !g_cut_done;
        if (cut) g_cut_done = 1;
        pthread_mutex_unlock(&g_mu);
        struct MHD_Response *r;
        static cut_reader cr;
        if (cut) {
            cr.b = b;
            cr.limit = b->len / 2;
            r = MHD_create_response_from_callback(b->len, 4096, cut_read, &cr, NULL);
        } else {
            r = MHD_create_response_from_buffer(b->len, b->data, MHD_RESPMEM_PERSISTENT);
        }
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    return send_text(c, 404, "{}");
}

static bool load_blob(blob *b, const char *name, const char *path, bool lfs) {
    size_t len = 0;
    b->name = name;
    b->lfs = lfs;
    if (lmx_fs_read_file(path, 64u << 20, &b->data, &len) != LMX_OK) return false;
    b->len = len;
    return lmx_sha256_bytes(b->data, b->len, b->sha) == LMX_OK;
}

static char g_models[600];

static lmx_hub_options opts(void) {
    lmx_hub_options o = {0};
    static char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d/", g_port);
    o.endpoint = ep;
    o.token = "";
    o.models_dir = g_models;
    o.backoff_ms = 10;
    o.quiet = true;
    return o;
}

static bool registered(const char *id) {
    lmx_registry_entry *e = NULL;
    lmx_status st = lmx_registry_lookup(g_models, id, &e);
    if (e) lmx_registry_entries_free(e, 1);
    return st == LMX_OK;
}

static void check_dir(const char *id) {
    char p[1200];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s/%s", g_models, id, g_blobs[i].name);
        char hex[65];
        CHECK_MSG(lmx_sha256_file(p, hex, NULL) == LMX_OK && !strcmp(hex, g_blobs[i].sha), "%s", p);
        snprintf(p, sizeof p, "%s/%s/%s.partial", g_models, id, g_blobs[i].name);
        CHECK(!lmx_fs_exists(p));
    }
    snprintf(p, sizeof p, "%s/%s/README.md", g_models, id);
    CHECK(!lmx_fs_exists(p));
    snprintf(p, sizeof p, "%s/%s/../evil.safetensors", g_models, id);
    CHECK(!lmx_fs_exists(p));
    snprintf(p, sizeof p, "%s/%s/sub", g_models, id);
    CHECK(!lmx_fs_exists(p));
    snprintf(p, sizeof p, "%s/%s/.lmx-pull.json", g_models, id);
    char *t = NULL;
    size_t len;
    CHECK(lmx_fs_read_file(p, 1 << 16, &t, &len) == LMX_OK);
    CHECK(t && strstr(t, COMMIT) && strstr(t, id));
    free(t);
}

static void test_pull_ok(void) {
    lmx_hub_options o = opts();
    char *dir = NULL, *commit = NULL;
    lmx_status st = lmx_hub_pull("t/tiny", &o, &dir, &commit);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    CHECK_EQ_STR(commit, COMMIT);
    CHECK(g_redirects >= 3);
    CHECK_EQ_INT(g_auth_at_cdn, 0);
    check_dir("t/tiny");
    CHECK(registered("t/tiny"));
    char *report = NULL;
    CHECK(lmx_registry_verify(g_models, "t/tiny", &report) == LMX_OK);
    lmx_free(report);
    /* a second pull: the LFS file is in place already (not fetched again); the entry is replaced */
    int redirects = g_redirects;
    CHECK(lmx_hub_pull("t/tiny", &o, NULL, NULL) == LMX_OK);
    CHECK_EQ_INT(g_redirects, redirects + 2);
    free(dir), free(commit);
    /* an explicit revision = the commit */
    o.revision = COMMIT;
    CHECK(lmx_hub_pull("t/tiny", &o, NULL, NULL) == LMX_OK);
}

static void test_cut_resume(void) {
    /* within one run: the cut transfer is retried with a Range request */
    lmx_hub_options o = opts();
    int ranges0 = g_range_requests;
    lmx_status st = lmx_hub_pull("t/cut", &o, NULL, NULL);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    CHECK(g_cut_done == 1);
    CHECK(g_range_requests > ranges0);
    check_dir("t/cut");
    /* across runs: no retries → the first run fails, keeps the .partial, registers nothing; the
     * second resumes from it with Range */
    lmx_registry_remove(g_models, "t/cut", true);
    g_cut_done = 0;
    o.retries = -1;
    o.parallel = 1;
    st = lmx_hub_pull("t/cut", &o, NULL, NULL);
    CHECK(st == LMX_ERR_IO);
    CHECK(!registered("t/cut"));
    char p[1200];
    snprintf(p, sizeof p, "%s/t/cut/model.safetensors.partial", g_models);
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && sb.st_size > 0 && (size_t)sb.st_size < g_blobs[1].len);
    ranges0 = g_range_requests;
    st = lmx_hub_pull("t/cut", &o, NULL, NULL);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    CHECK(g_range_requests == ranges0 + 1);
    check_dir("t/cut");
    CHECK(registered("t/cut"));
}

static void test_errors(void) {
    lmx_hub_options o = opts();
    lmx_status st = lmx_hub_pull("t/badsum", &o, NULL, NULL);
    CHECK(st == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(strstr(lmx_last_error_detail(), "SHA-256") && strstr(lmx_last_error_detail(), "deleted"));
    CHECK(!registered("t/badsum"));
    char p[1200];
    snprintf(p, sizeof p, "%s/t/badsum/model.safetensors", g_models);
    CHECK(!lmx_fs_exists(p));
    snprintf(p, sizeof p, "%s/t/badsum/model.safetensors.partial", g_models);
    CHECK(!lmx_fs_exists(p));

    /* no lfs.sha256 in the API: the X-Linked-Etag of the resolve answer is the checksum */
    st = lmx_hub_pull("t/etag", &o, NULL, NULL);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    st = lmx_hub_pull("t/etagbad", &o, NULL, NULL);
    CHECK(st == LMX_ERR_MODEL_VALIDATION_FAILED);
    CHECK(!registered("t/etagbad"));

    st = lmx_hub_pull("t/gated", &o, NULL, NULL);
    CHECK(st == LMX_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(lmx_last_error_detail(), "401") && strstr(lmx_last_error_detail(), "HF_TOKEN") &&
                  strstr(lmx_last_error_detail(), "gated"),
              "%s", lmx_last_error_detail());
    o.token = "wrong";
    CHECK(lmx_hub_pull("t/gated", &o, NULL, NULL) == LMX_ERR_UNSUPPORTED);
    o.token = "sekrit";
    st = lmx_hub_pull("t/gated", &o, NULL, NULL);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    CHECK_EQ_INT(g_auth_at_cdn, 0); /* the token went to the hub, never to the CDN host */
    o.token = "";

    st = lmx_hub_pull("t/nothere", &o, NULL, NULL);
    CHECK(st == LMX_ERR_MODEL_NOT_FOUND);
    CHECK(strstr(lmx_last_error_detail(), "404") != NULL);
    o.revision = "nosuchbranch";
    CHECK(lmx_hub_pull("t/tiny", &o, NULL, NULL) == LMX_ERR_MODEL_NOT_FOUND);
    o.revision = NULL;
    CHECK(lmx_hub_pull("../etc", &o, NULL, NULL) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_hub_pull("noslash", &o, NULL, NULL) == LMX_ERR_INVALID_ARGUMENT);
    /* nothing listens: bounded retries, then a network error */
    o.endpoint = "http://127.0.0.1:1";
    o.retries = 2;
    st = lmx_hub_pull("t/tiny", &o, NULL, NULL);
    CHECK(st == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error_detail(), "after 3 attempts") != NULL);
}

/* a write that fails (disk full, here a file-size limit: EFBIG instead of ENOSPC, the same path)
 * fails the pull with LMX_ERR_IO and registers nothing */
static void test_disk_full(void) {
    char models[700];
    snprintf(models, sizeof models, "%s/full/models", g_tmp); /* its own registry.json */
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {100000, 100000};
        setrlimit(RLIMIT_FSIZE, &rl);
        lmx_hub_options o = opts();
        o.models_dir = models;
        o.retries = -1;
        lmx_status st = lmx_hub_pull("t/tiny", &o, NULL, NULL);
        bool msg = strstr(lmx_last_error_detail(), "writing") != NULL;
        _exit(st == LMX_ERR_IO && msg ? 0 : 10 + (int)st);
    }
    int ws = 0;
    CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid);
    CHECK_MSG(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child status %d", ws);
    lmx_registry_entry *e = NULL;
    CHECK(lmx_registry_lookup(models, "t/tiny", &e) == LMX_ERR_MODEL_NOT_FOUND);
    if (e) lmx_registry_entries_free(e, 1);
}

static void test_select(void) {
    CHECK(lmx_hub_wanted("config.json", NULL));
    CHECK(lmx_hub_wanted("model-00001-of-00002.safetensors", NULL));
    CHECK(lmx_hub_wanted("model.safetensors.index.json", NULL));
    CHECK(lmx_hub_wanted("tokenizer.json", NULL) && lmx_hub_wanted("chat_template.jinja", NULL));
    CHECK(!lmx_hub_wanted("README.md", NULL) && !lmx_hub_wanted("pytorch_model.bin", NULL));
    CHECK(!lmx_hub_wanted("../x.safetensors", NULL) && !lmx_hub_wanted("/etc/x.safetensors", NULL));
    CHECK(!lmx_hub_wanted("a/b.safetensors", NULL) && !lmx_hub_wanted(".x.safetensors", NULL));
    const char *inc[] = {"*.md", NULL};
    CHECK(lmx_hub_wanted("README.md", inc));
}

static void test_cli(void) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "HF_ENDPOINT=http://127.0.0.1:%d HF_TOKEN=sekrit '%s' pull t/gated --models-dir '%s' --include '*.md' "
             "> '%s/out.txt' 2>&1",
             g_port, LMX_CLI_PATH, g_models, g_tmp);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    char p[1200], *t = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/out.txt", g_tmp);
    CHECK(lmx_fs_read_file(p, 1 << 20, &t, &len) == LMX_OK);
    CHECK_MSG(t && strstr(t, "pulled t/gated (commit " COMMIT ")") && strstr(t, "lmx pull: model.safetensors"), "%s",
              t ? t : "");
    free(t);
    snprintf(p, sizeof p, "%s/t/gated/README.md", g_models);
    CHECK(lmx_fs_is_file(p));
    snprintf(cmd, sizeof cmd, "HF_ENDPOINT=http://127.0.0.1:%d HF_TOKEN= HF_HOME=/nonexistent HOME=/nonexistent '%s' pull t/gated --models-dir '%s' >/dev/null 2>&1",
             g_port, LMX_CLI_PATH, g_models);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    snprintf(cmd, sizeof cmd, "'%s' pull >/dev/null 2>&1", LMX_CLI_PATH);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s", "/tmp/lmx_pull_XXXXXX");
    const char *td = getenv("TMPDIR");
    if (td && *td) snprintf(g_tmp, sizeof g_tmp, "%s/lmx_pull_XXXXXX", td);
    if (!mkdtemp(g_tmp)) return 1;
    snprintf(g_models, sizeof g_models, "%s/models", g_tmp);
    if (!load_blob(&g_blobs[0], "config.json", FIX "config.json", false) ||
        !load_blob(&g_blobs[1], "model.safetensors", FIX "model.safetensors", true) ||
        !load_blob(&g_blobs[2], "generation_config.json", FIX "generation_config.json", false)) {
        fprintf(stderr, "fixture missing\n");
        return 1;
    }
    g_blobs[3] = (blob){"README.md", strdup("# a model card\n"), 15, "", false};
    lmx_sha256_bytes(g_blobs[3].data, g_blobs[3].len, g_blobs[3].sha);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL,
                                            NULL, on_request, NULL, MHD_OPTION_END);
    if (!d) return 1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    g_port = info ? info->port : 0;
    RUN(test_select);
    RUN(test_pull_ok);
    RUN(test_cut_resume);
    RUN(test_errors);
    RUN(test_cli);
    RUN(test_disk_full);
    MHD_stop_daemon(d);
    for (int i = 0; i < 4; i++) free(g_blobs[i].data);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return lmx_test_summary();
}
