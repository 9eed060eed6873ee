/* hub_http.c — the two kinds of request of a pull over libcurl: a GET into memory (the API) and a
 * resumable download into a .partial file (see hub.h). Redirects are followed (the hub's 302 to
 * its CDN); curl sends a custom Authorization header only to the original host. Network errors,
 * 5xx and 429 are retried `retries` times with a doubling backoff; a stalled transfer (under 1
 * byte/s for 30 s) counts as a network error. */
#include "hub/hub.h"
#include "util/error.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static struct curl_slist *headers(const lmx_hub_http *h) {
    struct curl_slist *l = curl_slist_append(NULL, "User-Agent: lmx/" "0.1 (huggingface_hub-compatible)");
    if (h->token && *h->token) {
        char buf[4096];
        snprintf(buf, sizeof buf, "Authorization: Bearer %s", h->token);
        struct curl_slist *n = curl_slist_append(l, buf);
        if (n) l = n;
    }
    return l;
}

static void common(CURL *c, const char *url, struct curl_slist *hdr) {
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
}

static bool retryable_code(long code) { return code == 429 || code >= 500; }

/* ---- GET into memory ---- */
typedef struct membuf {
    char *p;
    size_t n, cap;
    bool oom;
} membuf;

static size_t mem_write(char *ptr, size_t size, size_t nm, void *ud) {
    membuf *b = ud;
    size_t n = size * nm;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 65536);
        while (cap < b->n + n + 1) cap *= 2;
        if (cap > (256u << 20)) return b->oom = true, 0; /* an API answer of 256 MiB is not one */
        char *q = realloc(b->p, cap);
        if (!q) return b->oom = true, 0;
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

lmx_status lmx_hub_get(const lmx_hub_http *h, const char *url, long *code, char **body, size_t *len) {
    struct curl_slist *hdr = headers(h);
    CURL *c = curl_easy_init();
    if (!c || !hdr) {
        curl_slist_free_all(hdr);
        if (c) curl_easy_cleanup(c);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: curl init failed");
    }
    lmx_status st = LMX_OK;
    long delay = h->backoff_ms > 0 ? h->backoff_ms : 500;
    for (int attempt = 0;; attempt++) {
        membuf b = {0};
        common(c, url, hdr);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        CURLcode rc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (b.oom) {
            free(b.p);
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: %s: answer too large", url);
            break;
        }
        bool again = rc != CURLE_OK || retryable_code(status);
        if (!again || attempt >= h->retries) {
            if (rc != CURLE_OK) {
                free(b.p);
                st = lmx_error(LMX_ERR_IO, "pull: %s: %s (after %d attempts)", url, curl_easy_strerror(rc), attempt + 1);
            } else {
                *code = status;
                *body = b.p ? b.p : calloc(1, 1);
                *len = b.n;
                if (!*body) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: out of memory");
            }
            break;
        }
        free(b.p);
        sleep_ms(delay);
        delay *= 2;
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return st;
}

/* ---- download into a file ---- */
typedef struct dl {
    FILE *f;
    int err;                /* errno of a failed write */
    long status;            /* status of the current response (from its headers) */
    bool started, discard;  /* body of a non-2xx response: not written */
    bool restart;           /* a 200 to a ranged request: truncate first */
    char commit[65], etag[65];
    lmx_hub_bytes_fn on_bytes;
    void *ctx;
} dl;

/* A header's value, blanks and quotes (an ETag's) trimmed, at most 64 bytes. */
static void header_value(const char *v, size_t m, char out[65]) {
    while (m && (*v == ' ' || *v == '\t' || *v == '"')) v++, m--;
    while (m && (v[m - 1] == '\r' || v[m - 1] == '\n' || v[m - 1] == ' ' || v[m - 1] == '"')) m--;
    if (m > 64) m = 64;
    memcpy(out, v, m);
    out[m] = 0;
}

static size_t hdr_cb(char *p, size_t size, size_t nm, void *ud) {
    dl *d = ud;
    size_t n = size * nm;
    if (n > 5 && !strncmp(p, "HTTP/", 5)) { /* a new response (after a redirect) */
        const char *sp = memchr(p, ' ', n);
        d->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        d->started = false; /* whatever body comes next belongs to this response */
    } else if (n > 14 && !strncasecmp(p, "X-Repo-Commit:", 14)) {
        header_value(p + 14, n - 14, d->commit);
    } else if (n > 14 && !strncasecmp(p, "X-Linked-Etag:", 14)) {
        header_value(p + 14, n - 14, d->etag);
    }
    return n;
}

static size_t file_write(char *ptr, size_t size, size_t nm, void *ud) {
    dl *d = ud;
    size_t n = size * nm;
    if (!d->started) {
        d->started = true;
        d->discard = d->status < 200 || d->status >= 300;
        if (!d->discard && d->restart && d->status == 200) { /* the server ignored the Range */
            long was = ftell(d->f);
            if (ftruncate(fileno(d->f), 0) != 0 || fseek(d->f, 0, SEEK_SET) != 0) return d->err = errno, 0;
            if (d->on_bytes && was > 0) d->on_bytes(d->ctx, -(int64_t)was);
        }
    }
    if (d->discard) return n;
    if (fwrite(ptr, 1, n, d->f) != n) return d->err = errno ? errno : EIO, 0;
    if (d->on_bytes) d->on_bytes(d->ctx, (int64_t)n);
    return n;
}

lmx_status lmx_hub_download(const lmx_hub_http *h, const char *url, const char *path, int64_t expected_size,
                            long *code, char commit[65], char etag[65], lmx_hub_bytes_fn on_bytes, void *ctx) {
    commit[0] = 0;
    etag[0] = 0;
    struct curl_slist *hdr = headers(h);
    CURL *c = curl_easy_init();
    FILE *f = fopen(path, "ab");
    if (!c || !hdr || !f) {
        int e = errno;
        curl_slist_free_all(hdr);
        if (c) curl_easy_cleanup(c);
        if (f) fclose(f);
        return f ? lmx_error(LMX_ERR_OUT_OF_MEMORY, "pull: curl init failed")
                 : lmx_error(LMX_ERR_IO, "pull: %s: %s", path, lmx_errno_str(e));
    }
    lmx_status st = LMX_OK;
    long delay = h->backoff_ms > 0 ? h->backoff_ms : 500;
    for (int attempt = 0;; attempt++) {
        fseek(f, 0, SEEK_END);
        long have = ftell(f);
        if (have < 0) have = 0;
        if (expected_size >= 0 && have > expected_size) { /* longer than the file: start over */
            if (ftruncate(fileno(f), 0) == 0) have = 0;
            if (on_bytes) on_bytes(ctx, -(int64_t)have);
            fseek(f, 0, SEEK_SET);
        }
        if (expected_size >= 0 && have == expected_size && have > 0) { /* complete already */
            *code = 200;
            break;
        }
        dl d = {.f = f, .on_bytes = on_bytes, .ctx = ctx, .restart = have > 0};
        common(c, url, hdr);
        char range[64];
        snprintf(range, sizeof range, "%ld-", have);
        curl_easy_setopt(c, CURLOPT_RANGE, have > 0 ? range : NULL);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hdr_cb);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &d);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, file_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
        CURLcode rc = curl_easy_perform(c);
        if (fflush(f) != 0 && !d.err) d.err = errno;
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (d.commit[0]) memcpy(commit, d.commit, sizeof d.commit);
        if (d.etag[0]) memcpy(etag, d.etag, sizeof d.etag);
        if (d.err) {
            st = lmx_error(LMX_ERR_IO, "pull: writing %s: %s%s", path, lmx_errno_str(d.err),
                           d.err == ENOSPC ? " (disk full; the partial file is kept for a resume)" : "");
            break;
        }
        if (rc == CURLE_OK && status == 416 && have > 0) { /* range not satisfiable: start over */
            if (ftruncate(fileno(f), 0) != 0) {
                st = lmx_error(LMX_ERR_IO, "pull: %s: %s", path, lmx_errno_str(errno));
                break;
            }
            if (on_bytes) on_bytes(ctx, -(int64_t)have);
            continue;
        }
        bool again = rc != CURLE_OK || retryable_code(status);
        if (!again || attempt >= h->retries) {
            *code = status;
            if (rc != CURLE_OK)
                st = lmx_error(LMX_ERR_IO, "pull: %s: %s (after %d attempts; rerun to resume)", url,
                               curl_easy_strerror(rc), attempt + 1);
            break;
        }
        sleep_ms(delay);
        delay *= 2;
    }
    if (fclose(f) != 0 && st == LMX_OK) st = lmx_error(LMX_ERR_IO, "pull: %s: %s", path, lmx_errno_str(errno));
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return st;
}

lmx_status lmx_hub_status_error(long code, const char *repo, const char *what, const char *endpoint) {
    if (code == 401 || code == 403)
        return lmx_error(LMX_ERR_UNSUPPORTED,
                         "%s: HTTP %ld: %s is gated or private. Request access on %s/%s (log in, accept the "
                         "model's terms), then create a read token at %s/settings/tokens and set HF_TOKEN=<token> "
                         "(or save it in ~/.cache/huggingface/token)%s",
                         what, code, repo, endpoint, repo, endpoint,
                         code == 403 ? "; your token was sent but has no access to it" : "");
    if (code == 404)
        return lmx_error(LMX_ERR_MODEL_NOT_FOUND, "%s: HTTP 404: no such repository, revision or file (%s)", what, repo);
    return lmx_error(LMX_ERR_IO, "%s: HTTP %ld", what, code);
}
