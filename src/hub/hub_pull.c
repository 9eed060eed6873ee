/* hub_pull.c — lmx_hub_pull: the file list, the parallel downloads with checks, progress, the
 * atomic renames and the registration (see hub.h). */
#include "formats/dtype.h"
#include "hub/hub.h"
#include "registry/registry.h"
#include "registry/sha256.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct hfile {
    char *name;
    int64_t size;     /* -1 unknown */
    char sha256[65];  /* LFS files; "" otherwise */
    lmx_status st;
    char detail[1024];
} hfile;

typedef struct pull {
    const char *repo, *endpoint, *commit;
    const char *dir;
    lmx_hub_http http;
    hfile *files;
    int n;
    int next; /* next file to start */
    pthread_mutex_t mu;
    int64_t done_bytes, total_bytes;
    int finished;
    bool failed;
    bool log_lines;
    char seen_commit[65];
} pull;

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_bytes(void *ctx, int64_t delta) {
    pull *p = ctx;
    pthread_mutex_lock(&p->mu);
    p->done_bytes += delta;
    pthread_mutex_unlock(&p->mu);
}

static char *url_escape_path(const char *s) {
    /* hub file names are path-safe already (lmx_hub_wanted); escape what a URL cannot carry */
    size_t n = strlen(s);
    char *o = malloc(n * 3 + 1), *q = o;
    if (!o) return NULL;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("-._~/", *c))
            *q++ = (char)*c;
        else q += sprintf(q, "%%%02X", *c);
    }
    *q = 0;
    return o;
}

static lmx_status fetch_one(pull *p, hfile *f) {
    char *final = lmx_fs_join(p->dir, f->name), *esc = url_escape_path(f->name);
    char *partial = final ? malloc(strlen(final) + 9) : NULL;
    char *url = esc ? malloc(strlen(p->endpoint) + strlen(p->repo) + strlen(p->commit) + strlen(esc) + 16) : NULL;
    lmx_status st = LMX_OK;
    if (!final || !partial || !esc || !url) {
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
        goto out;
    }
    sprintf(partial, "%s.partial", final);
    sprintf(url, "%s/%s/resolve/%s/%s", p->endpoint, p->repo, p->commit, esc);
    struct stat sb;
    if (f->sha256[0] && stat(final, &sb) == 0 && S_ISREG(sb.st_mode) && (int64_t)sb.st_size == f->size) {
        char hex[65]; /* in place from an earlier pull: kept when its checksum still matches */
        if (lmx_sha256_file(final, hex, NULL) == LMX_OK && !strcmp(hex, f->sha256)) {
            on_bytes(p, f->size);
            if (p->log_lines) fprintf(stderr, "lmx pull: %s up to date\n", f->name);
            goto out;
        }
    }
    if (stat(partial, &sb) == 0) on_bytes(p, (int64_t)sb.st_size); /* resumed bytes count as done */
    if (p->log_lines) fprintf(stderr, "lmx pull: %s (%lld bytes)%s\n", f->name, (long long)f->size,
                              stat(partial, &sb) == 0 ? ", resuming" : "");
    long code = 0;
    char commit[65], etag[65];
    st = lmx_hub_download(&p->http, url, partial, f->size, &code, commit, etag, on_bytes, p);
    if (st != LMX_OK) goto out;
    if (commit[0]) {
        pthread_mutex_lock(&p->mu);
        memcpy(p->seen_commit, commit, sizeof commit);
        pthread_mutex_unlock(&p->mu);
    }
    if (code < 200 || code >= 300) {
        unlink(partial); /* an error body is never kept */
        st = lmx_hub_status_error(code, p->repo, f->name, p->endpoint);
        goto out;
    }
    if (stat(partial, &sb) != 0) {
        st = lmx_error(LMX_ERR_IO, "pull: %s: %s", partial, lmx_errno_str(errno));
        goto out;
    }
    if (f->size >= 0 && (int64_t)sb.st_size != f->size) {
        unlink(partial);
        st = lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "pull: %s: %lld bytes received, the hub lists %lld; deleted",
                       f->name, (long long)sb.st_size, (long long)f->size);
        goto out;
    }
    bool etag_sha = strlen(etag) == 64 && strspn(etag, "0123456789abcdef") == 64;
    if (!f->sha256[0] && etag_sha) memcpy(f->sha256, etag, sizeof etag); /* no lfs.sha256 in the API */
    if (f->sha256[0]) {
        char hex[65];
        st = lmx_sha256_file(partial, hex, NULL);
        if (st != LMX_OK) goto out;
        if (strcmp(hex, f->sha256) != 0) {
            unlink(partial);
            st = lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED,
                           "pull: %s: SHA-256 %s does not match the hub's %s; the download was deleted", f->name, hex,
                           f->sha256);
            goto out;
        }
    }
    if (rename(partial, final) != 0) st = lmx_error(LMX_ERR_IO, "pull: rename %s: %s", partial, lmx_errno_str(errno));
    else if (p->log_lines) fprintf(stderr, "lmx pull: %s done%s\n", f->name, f->sha256[0] ? " (sha256 ok)" : "");
out:
    free(final), free(partial), free(esc), free(url);
    return st;
}

static void *worker(void *arg) {
    pull *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int i = p->failed ? p->n : p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n) break;
        hfile *f = &p->files[i];
        f->st = fetch_one(p, f);
        if (f->st != LMX_OK) {
            const char *d = lmx_last_error_detail();
            snprintf(f->detail, sizeof f->detail, "%s", d ? d : "");
        }
        pthread_mutex_lock(&p->mu);
        p->finished++;
        if (f->st != LMX_OK) p->failed = true;
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

static void draw(pull *p, double t0, bool final) {
    pthread_mutex_lock(&p->mu);
    int64_t done = p->done_bytes, total = p->total_bytes;
    int fin = p->finished;
    pthread_mutex_unlock(&p->mu);
    double el = now_s() - t0, rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 && total > done ? (double)(total - done) / rate : 0;
    int pct = total > 0 ? (int)(done * 100 / total) : 100;
    int w = pct * 30 / 100;
    fprintf(stderr, "\r[%.*s%*s] %3d%%  %.1f/%.1f MiB  %.1f MiB/s  ETA %.0fs  files %d/%d   ", w,
            "==============================", 30 - w, "", pct, (double)done / 1048576.0, (double)total / 1048576.0,
            rate / 1048576.0, eta, fin, p->n);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

static lmx_status list_files(pull *p, const char *revision, const char *const *include, char **commit_out) {
    char *esc_rev = url_escape_path(revision);
    char *url = esc_rev ? malloc(strlen(p->endpoint) + strlen(p->repo) + strlen(esc_rev) + 64) : NULL;
    if (!url) {
        free(esc_rev);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
    }
    sprintf(url, "%s/api/models/%s/revision/%s?blobs=true", p->endpoint, p->repo, esc_rev);
    free(esc_rev);
    long code = 0;
    char *body = NULL;
    size_t len = 0;
    lmx_status st = lmx_hub_get(&p->http, url, &code, &body, &len);
    if (st == LMX_OK && code != 200) st = lmx_hub_status_error(code, p->repo, url, p->endpoint);
    cJSON *j = st == LMX_OK ? lmx_json_parse(body, len, NULL) : NULL;
    if (st == LMX_OK && !cJSON_IsObject(j)) st = lmx_error(LMX_ERR_IO, "pull: %s: the answer is not a JSON object", url);
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(j, "siblings");
    if (st == LMX_OK && (!cJSON_IsString(sha) || !cJSON_IsArray(sib)))
        st = lmx_error(LMX_ERR_IO, "pull: %s: no \"sha\" / \"siblings\" in the answer", url);
    if (st == LMX_OK) {
        *commit_out = strdup(sha->valuestring);
        p->files = calloc((size_t)cJSON_GetArraySize(sib) + 1, sizeof *p->files);
        if (!*commit_out || !p->files) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
    }
    const cJSON *s;
    if (st == LMX_OK) cJSON_ArrayForEach(s, sib) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(s, "rfilename");
        if (!cJSON_IsString(nm)) continue;
        if (!lmx_hub_wanted(nm->valuestring, include)) continue; /* unsafe names included */
        hfile *f = &p->files[p->n];
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(s, "size");
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(s, "lfs");
        const cJSON *lsha = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
        const cJSON *lsize = cJSON_GetObjectItemCaseSensitive(lfs, "size");
        f->size = cJSON_IsNumber(lsize) ? (int64_t)lsize->valuedouble : cJSON_IsNumber(size) ? (int64_t)size->valuedouble : -1;
        if (cJSON_IsString(lsha) && strlen(lsha->valuestring) == 64) snprintf(f->sha256, sizeof f->sha256, "%s", lsha->valuestring);
        f->name = strdup(nm->valuestring);
        if (!f->name) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
            break;
        }
        if (f->size > 0) p->total_bytes += f->size;
        p->n++;
    }
    if (st == LMX_OK && p->n == 0) st = lmx_error(LMX_ERR_UNSUPPORTED, "pull: %s has no model files (config.json, *.safetensors)", p->repo);
    bool has_config = false;
    for (int i = 0; i < p->n; i++) has_config = has_config || !strcmp(p->files[i].name, "config.json");
    if (st == LMX_OK && !has_config) st = lmx_error(LMX_ERR_UNSUPPORTED, "pull: %s has no config.json at revision %s", p->repo, revision);
    cJSON_Delete(j);
    free(body);
    free(url);
    return st;
}

static lmx_status write_record(const char *dir, const char *repo, const char *revision, const char *commit) {
    char *path = lmx_fs_join(dir, ".lmx-pull.json");
    cJSON *o = cJSON_CreateObject();
    if (!path || !o) {
        free(path), cJSON_Delete(o);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
    }
    cJSON_AddStringToObject(o, "repo", repo);
    cJSON_AddStringToObject(o, "revision", revision);
    cJSON_AddStringToObject(o, "commit", commit);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    FILE *f = text ? fopen(path, "wb") : NULL;
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0) ok = false;
    lmx_status st = ok ? LMX_OK : lmx_error(LMX_ERR_IO, "pull: cannot write %s", path);
    free(text), free(path);
    return st;
}

static lmx_status mkdirs(const char *path) {
    char *s = strdup(path);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
    for (char *q = s + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            mkdir(s, 0755);
            *q = '/';
        }
    lmx_status st = mkdir(s, 0755) == 0 || errno == EEXIST ? LMX_OK : lmx_error(LMX_ERR_IO, "pull: %s: %s", s, lmx_errno_str(errno));
    free(s);
    return st;
}

lmx_status lmx_hub_pull(const char *repo, const lmx_hub_options *opt, char **out_dir, char **out_commit) {
    lmx_hub_options o = {0};
    if (opt) o = *opt;
    if (!repo || !lmx_registry_valid_name(repo) || !strchr(repo, '/') || strchr(strchr(repo, '/') + 1, '/') ||
        !lmx_fs_safe_relative(repo))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "pull: '%s' is not a hub repository name (ORG/NAME)", repo ? repo : "");
    pthread_once(&g_curl_once, curl_init);
    const char *revision = o.revision && *o.revision ? o.revision : "main";
    pull p = {.repo = repo};
    pthread_mutex_init(&p.mu, NULL);
    char *endpoint = lmx_hub_endpoint(o.endpoint), *token = lmx_hub_token(o.token), *commit = NULL;
    char *models = NULL, *reg = NULL, *dir = NULL;
    lmx_status st = endpoint ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
    p.endpoint = endpoint;
    p.http = (lmx_hub_http){token, o.retries == 0 ? 5 : (o.retries < 0 ? 0 : o.retries), o.backoff_ms};
    p.log_lines = !o.progress_bar && !o.quiet;
    if (st == LMX_OK) st = lmx_registry_paths(o.models_dir, &models, &reg);
    if (st == LMX_OK) st = list_files(&p, revision, o.include, &commit);
    if (st == LMX_OK) {
        dir = lmx_fs_join(models, repo);
        if (!dir) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
    }
    if (st == LMX_OK) st = mkdirs(dir);
    if (st == LMX_OK) {
        p.dir = dir;
        p.commit = commit;
        int nt = o.parallel > 0 ? o.parallel : 4;
        if (nt > p.n) nt = p.n;
        if (nt > 16) nt = 16;
        pthread_t tid[16];
        int started = 0;
        double t0 = now_s();
        for (int i = 0; i < nt; i++)
            if (pthread_create(&tid[started], NULL, worker, &p) == 0) started++;
        if (started == 0) worker(&p);
        if (o.progress_bar && !o.quiet) {
            for (;;) {
                pthread_mutex_lock(&p.mu);
                bool all = p.finished == p.n || (p.failed && p.next >= p.n);
                pthread_mutex_unlock(&p.mu);
                draw(&p, t0, false);
                if (all) break;
                struct timespec ts = {0, 200000000L};
                nanosleep(&ts, NULL);
            }
        }
        for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
        if (o.progress_bar && !o.quiet) draw(&p, t0, true);
        for (int i = 0; i < p.n && st == LMX_OK; i++)
            if (p.files[i].name && p.files[i].st != LMX_OK) st = lmx_error(p.files[i].st, "%s", p.files[i].detail);
        if (st == LMX_OK && !p.files[0].name) st = lmx_error(LMX_ERR_IO, "pull: nothing downloaded");
    }
    if (st == LMX_OK && p.seen_commit[0] && strcmp(p.seen_commit, commit) != 0 && !o.quiet)
        fprintf(stderr, "lmx pull: warning: X-Repo-Commit %s differs from the API's %s\n", p.seen_commit, commit);
    if (st == LMX_OK) st = write_record(dir, repo, revision, commit);
    if (st == LMX_OK) {
        lmx_registry_remove(o.models_dir, repo, false); /* a re-pull replaces the entry */
        lmx_error_clear();
        st = lmx_registry_add(o.models_dir, dir, repo);
    }
    if (st == LMX_OK && out_dir) *out_dir = strdup(dir);
    if (st == LMX_OK && out_commit) *out_commit = strdup(commit);
    for (int i = 0; i < p.n; i++) free(p.files[i].name);
    free(p.files);
    free(endpoint), free(token), free(commit), free(models), free(reg), free(dir);
    pthread_mutex_destroy(&p.mu);
    return st;
}
