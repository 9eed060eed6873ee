/* hub.h — `lmx pull`: downloading a model from the Hugging Face hub (or any server with its URL
 * shapes) the way huggingface_hub does:
 *   GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true   → the commit ("sha") and the files
 *       ("siblings": rfilename, size, lfs.sha256);
 *   GET {endpoint}/{repo}/resolve/{commit}/{file}                → the file, usually through a 302 to
 *       a CDN host (followed; the bearer token is not sent to the other host); X-Repo-Commit read.
 * endpoint: HF_ENDPOINT, else https://huggingface.co; token: HF_TOKEN, else the file
 * $HF_HOME/token (default ~/.cache/huggingface/token), sent as "Authorization: Bearer".
 *
 * Only what a model needs is fetched (hub_select.c), into <models_dir>/<org>/<name>/: each file is
 * written as <file>.partial (resumed with Range on a later run or a retry), its size and (LFS
 * files: the API's lfs.sha256, else the X-Linked-Etag of the resolve answer) SHA-256 checked,
 * then renamed into place; a checksum mismatch deletes the partial file
 * and fails. When every file is in place the directory is registered (lmx_registry_add: name,
 * sizes, SHA-256 of each file) and .lmx-pull.json records repo, revision and the resolved commit.
 * Nothing is registered when any file fails.
 *
 * Threads: `parallel` files at once, one curl easy handle each; the caller's thread reports
 * progress. Call curl_global_init once before (lmx_hub_pull does it through pthread_once).
 */
#ifndef LMX_HUB_HUB_H
#define LMX_HUB_HUB_H

#include <stdbool.h>
#include <stdint.h>
#include "lmx.h"

typedef struct lmx_hub_options {
    const char *endpoint;   /* NULL = HF_ENDPOINT or https://huggingface.co */
    const char *token;      /* NULL = HF_TOKEN or the token file; "" = none */
    const char *revision;   /* NULL = "main" */
    const char *const *include; /* extra glob patterns (fnmatch) of files to fetch too; NULL-ended */
    const char *models_dir; /* NULL = the default models directory */
    int parallel;           /* files at once; 0 = 4 */
    int retries;            /* attempts per request after the first; <0 = 0; default (0 given) 5 */
    int backoff_ms;         /* first retry delay, doubled each time; 0 = 500 */
    bool progress_bar;      /* a redrawn bar on stderr (a terminal), else one log line per file */
    bool quiet;             /* no output at all */
} lmx_hub_options;

/* Pulls repo ("org/name"). *out_dir (may be NULL) receives the model directory (malloc'd) and
 * *out_commit (may be NULL) the resolved commit (malloc'd). Errors: LMX_ERR_INVALID_ARGUMENT (bad
 * repo name), LMX_ERR_MODEL_NOT_FOUND (404: no such repo or revision), LMX_ERR_UNSUPPORTED
 * (401/403: gated or private, the detail says how to get access; nothing a model needs in the repo),
 * LMX_ERR_IO (network after the retries, disk full, other HTTP statuses),
 * LMX_ERR_MODEL_VALIDATION_FAILED (size or checksum mismatch). */
lmx_status lmx_hub_pull(const char *repo, const lmx_hub_options *opt, char **out_dir, char **out_commit);

/* ---- pieces (one per file) ---- */

/* hub_select.c: whether file `name` of a repo is fetched (top-level, safe, a model file or matching
 * one of include). */
bool lmx_hub_wanted(const char *name, const char *const *include);

/* hub_auth.c: the endpoint (no trailing '/') and token (NULL = none), malloc'd. */
char *lmx_hub_endpoint(const char *given);
char *lmx_hub_token(const char *given);

/* hub_http.c */
typedef struct lmx_hub_http {
    const char *token;
    int retries, backoff_ms;
} lmx_hub_http;

/* GET url into a malloc'd NUL-terminated body; *code the final HTTP status. Network errors and
 * 5xx/429 are retried. Errors: LMX_ERR_IO (network), LMX_ERR_OUT_OF_MEMORY. */
lmx_status lmx_hub_get(const lmx_hub_http *h, const char *url, long *code, char **body, size_t *len);

typedef void (*lmx_hub_bytes_fn)(void *ctx, int64_t delta);
/* Downloads url into path (appending to what is there with Range, restarting when the server
 * ignores it), retrying network errors. *code the final status, commit[64] the X-Repo-Commit seen
 * (empty if none), etag[64] the X-Linked-Etag without quotes (an LFS file's SHA-256; empty if none). Errors: LMX_ERR_IO (network after retries; disk full: "no space left"),
 * LMX_ERR_MODEL_NOT_FOUND / LMX_ERR_UNSUPPORTED for 404 / 401-403 (detail set by the caller). */
lmx_status lmx_hub_download(const lmx_hub_http *h, const char *url, const char *path, int64_t expected_size,
                            long *code, char commit[65], char etag[65], lmx_hub_bytes_fn on_bytes, void *ctx);

/* The message for an HTTP error status of repo (the 401/403 one says how to get access). */
lmx_status lmx_hub_status_error(long code, const char *repo, const char *what, const char *endpoint);

#endif
