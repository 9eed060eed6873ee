/* server_client.h — what the server tests share: start / stop `lmx serve --port 0` as a child
 * process, a libcurl request helper, JSON path access, and an SSE stream parser. Header-only
 * (static inline) so that each test binary keeps its own lmx_test.h counters. */
#ifndef LMX_TEST_SERVER_CLIENT_H
#define LMX_TEST_SERVER_CLIENT_H

#include "lmx_test.h"
#include "util/json.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY "test-key-123"

typedef struct server {
    pid_t pid;
    int port;
    char base[64];
} server;


static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Starts `lmx serve --port 0 ...` and reads the port from its first stdout line (10 s at most). */
static inline bool server_start(server *s, const char *const *extra) {
    int p[2];
    if (pipe(p) != 0) return false;
    const char *argv[40] = {LMX_CLI_PATH, "serve", "--port", "0", "--models-dir", LMX_ENGINE_MODELS,
                            "--threads", "1", "--ctx", "512", "--api-key", KEY};
    int n = 12;
    for (int i = 0; extra && extra[i] && n < 38; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        setenv("LMX_LOG", "error", 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    char line[512];
    size_t len = 0;
    double t_end = now_s() + 20;
    while (len < sizeof line - 1 && now_s() < t_end) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        ssize_t r = read(p[0], line + len, 1);
        if (r <= 0) break;
        if (line[len] == '\n') break;
        len++;
    }
    line[len] = '\0';
    close(p[0]);
    const char *at = strstr(line, "http://127.0.0.1:");
    if (!at) {
        fprintf(stderr, "server did not start: '%s'\n", line);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return false;
    }
    s->pid = pid;
    s->port = atoi(at + strlen("http://127.0.0.1:"));
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
    return true;
}

/* SIGTERM, then waits (30 s at most); returns the exit status (-1: killed / signalled). */
static inline int server_stop(server *s) {
    if (!s->pid) return -1;
    kill(s->pid, SIGTERM);
    double t_end = now_s() + 30;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) break;
        if (now_s() > t_end) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            s->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- a response buffer ---- */
typedef struct buf {
    char *p;
    size_t len, cap;
    size_t limit;       /* > 0: abort the transfer after this many bytes (a client that goes away) */
    char retry_after[32];
} buf;

static inline size_t on_data(char *d, size_t sz, size_t n, void *u) {
    buf *b = u;
    size_t k = sz * n;
    if (b->len + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + k + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return 0;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, k);
    b->len += k;
    b->p[b->len] = '\0';
    if (b->limit && b->len >= b->limit) return 0; /* abort: the connection closes */
    return k;
}

static inline size_t on_header(char *d, size_t sz, size_t n, void *u) {
    buf *b = u;
    size_t k = sz * n;
    if (k > 13 && !strncasecmp(d, "Retry-After:", 12)) {
        size_t m = k - 12 < sizeof b->retry_after - 1 ? k - 12 : sizeof b->retry_after - 1;
        memcpy(b->retry_after, d + 12, m);
        b->retry_after[m] = '\0';
    }
    return k;
}

typedef struct req {
    CURL *h;
    struct curl_slist *hdr;
    buf out;
    char *body;
} req;

static inline void req_init(req *r, const server *s, const char *method, const char *path, const char *body,
                     const char *key) {
    memset(r, 0, sizeof *r);
    char url[256], auth[128];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    r->h = curl_easy_init();
    curl_easy_setopt(r->h, CURLOPT_URL, url);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(r->h, CURLOPT_WRITEDATA, &r->out);
    curl_easy_setopt(r->h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(r->h, CURLOPT_HEADERDATA, &r->out);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(r->h, CURLOPT_NOPROXY, "*");
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        r->hdr = curl_slist_append(r->hdr, auth);
    }
    if (body) {
        r->body = strdup(body);
        r->hdr = curl_slist_append(r->hdr, "Content-Type: application/json");
        curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    }
    if (method) curl_easy_setopt(r->h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, r->hdr);
}

static inline long req_status(req *r) {
    long code = 0;
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

static inline void req_free(req *r) {
    curl_easy_cleanup(r->h);
    curl_slist_free_all(r->hdr);
    free(r->out.p);
    free(r->body);
}

/* One request; returns the status, *out the body (malloc'd). */
static inline long http(const server *s, const char *method, const char *path, const char *body, const char *key,
                 char **out) {
    req r;
    req_init(&r, s, method, path, body, key);
    CURLcode c = curl_easy_perform(r.h);
    long st = c == CURLE_OK ? req_status(&r) : -1;
    if (out) {
        *out = r.out.p ? r.out.p : strdup("");
        r.out.p = NULL;
    }
    req_free(&r);
    return st;
}

static inline cJSON *parse(const char *s) {
    return s ? lmx_json_parse(s, strlen(s), NULL) : NULL;
}

static inline const cJSON *get(const cJSON *o, const char *path) {
    /* "a.b.0.c" */
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", path);
    const cJSON *v = o;
    for (char *t = strtok(tmp, "."); t && v; t = strtok(NULL, ".")) {
        if (*t >= '0' && *t <= '9') v = cJSON_GetArrayItem(v, atoi(t));
        else v = cJSON_GetObjectItemCaseSensitive(v, t);
    }
    return v;
}

static inline const char *gets_(const cJSON *o, const char *path) {
    const cJSON *v = get(o, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static inline double getn(const cJSON *o, const char *path) {
    const cJSON *v = get(o, path);
    return cJSON_IsNumber(v) ? v->valuedouble : -1e300;
}

/* ---- SSE ---- */
typedef struct stream_result {
    bool ok;            /* well-formed: data events of JSON, one finish_reason, [DONE] last */
    char *text;         /* concatenated content */
    char finish[16];
    bool role_first, usage_seen, error_seen;
    int n_events;
    double completion_tokens;
} stream_result;

static inline void stream_parse(const char *body, bool chat, stream_result *r) {
    memset(r, 0, sizeof *r);
    size_t cap = strlen(body) + 1, tl = 0;
    r->text = calloc(1, cap);
    const char *p = body;
    bool done = false, bad = false;
    while (*p) {
        const char *e = strstr(p, "\n\n");
        if (!e || strncmp(p, "data: ", 6) != 0 || done) {
            bad = true;
            break;
        }
        size_t n = (size_t)(e - p) - 6;
        const char *d = p + 6;
        r->n_events++;
        if (n == 6 && !strncmp(d, "[DONE]", 6)) {
            done = true;
        } else {
            cJSON *j = lmx_json_parse(d, n, NULL);
            if (!j) {
                bad = true;
                break;
            }
            if (cJSON_GetObjectItemCaseSensitive(j, "error")) r->error_seen = true;
            const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
            if (!r->error_seen && !cJSON_IsArray(ch)) bad = true;
            if (cJSON_GetArraySize(ch) == 0 && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "usage"))) {
                r->usage_seen = true;
                r->completion_tokens = getn(j, "usage.completion_tokens");
            }
            if (cJSON_GetArraySize(ch) == 1) {
                const char *piece = chat ? gets_(j, "choices.0.delta.content") : gets_(j, "choices.0.text");
                if (r->n_events == 1 && chat && gets_(j, "choices.0.delta.role")) r->role_first = true;
                if (piece) {
                    size_t k = strlen(piece);
                    memcpy(r->text + tl, piece, k);
                    tl += k;
                }
                const char *f = gets_(j, "choices.0.finish_reason");
                if (f) {
                    if (r->finish[0]) bad = true;
                    snprintf(r->finish, sizeof r->finish, "%s", f);
                }
            }
            cJSON_Delete(j);
        }
        p = e + 2;
    }
    r->ok = !bad && done && (r->finish[0] || r->error_seen);
}

#endif
