/* stop.c — stop-string matcher with hold-back (see stop.h). Stop lists are short, so the search
 * is a direct scan of the pending text for each stop string. */
#include "generate/stop.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>

struct lmx_stop {
    char **stops;   /* [n] copies of the non-empty stop strings */
    size_t *lens;   /* [n] */
    int n;
    char *buf;      /* [cap] held-back text followed by the new piece */
    size_t len, cap;
    size_t emit_from; /* bytes of buf already handed out by the last call, dropped on the next */
    bool matched;
};

lmx_status lmx_stop_create(const char *const *stops, int n_stops, lmx_stop **out) {
    *out = NULL;
    if (n_stops < 0 || (n_stops > 0 && !stops))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "stop strings: %d given with a NULL list", n_stops);
    lmx_stop *s = calloc(1, sizeof *s);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "stop strings: allocation failed");
    if (n_stops > 0) {
        s->stops = calloc((size_t)n_stops, sizeof *s->stops);
        s->lens = calloc((size_t)n_stops, sizeof *s->lens);
        if (!s->stops || !s->lens) goto oom;
    }
    size_t longest = 0;
    for (int i = 0; i < n_stops; i++) {
        if (!stops[i]) {
            lmx_stop_destroy(s);
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "stop string %d is NULL", i);
        }
        size_t l = strlen(stops[i]);
        if (l == 0) continue;
        s->stops[s->n] = strdup(stops[i]);
        if (!s->stops[s->n]) goto oom;
        s->lens[s->n++] = l;
        if (l > longest) longest = l;
    }
    s->cap = longest + 64;
    s->buf = malloc(s->cap);
    if (!s->buf) goto oom;
    *out = s;
    return LMX_OK;
oom:
    lmx_stop_destroy(s);
    return lmx_error(LMX_ERR_OUT_OF_MEMORY, "stop strings: allocation failed");
}

void lmx_stop_destroy(lmx_stop *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->stops[i]);
    free(s->stops);
    free(s->lens);
    free(s->buf);
    free(s);
}

size_t lmx_stop_pending(const lmx_stop *s) { return s->len - s->emit_from; }

/* Drops the bytes handed out last time, keeping the held-back tail at the start of buf. */
static void compact(lmx_stop *s) {
    if (s->emit_from == 0) return;
    memmove(s->buf, s->buf + s->emit_from, s->len - s->emit_from);
    s->len -= s->emit_from;
    s->emit_from = 0;
}

lmx_status lmx_stop_push(lmx_stop *s, const char *text, size_t len, const char **out, size_t *out_len,
                         bool *matched) {
    *out = s->buf;
    *out_len = 0;
    *matched = s->matched;
    if (s->matched) return LMX_OK;
    compact(s);
    if (s->n == 0) { /* nothing to watch: pass through */
        *out = text;
        *out_len = len;
        return LMX_OK;
    }
    if (s->len + len > s->cap) {
        size_t cap = (s->len + len) * 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "stop strings: cannot grow to %zu bytes", cap);
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    /* earliest complete stop string */
    size_t first = s->len;
    for (int i = 0; i < s->n; i++) {
        if (s->lens[i] > s->len) continue;
        for (size_t p = 0; p + s->lens[i] <= s->len && p < first; p++)
            if (s->buf[p] == s->stops[i][0] && memcmp(s->buf + p, s->stops[i], s->lens[i]) == 0) {
                first = p;
                break;
            }
    }
    if (first < s->len) {
        s->matched = true;
        *matched = true;
        *out_len = first;
        s->emit_from = s->len; /* drop everything on the next call */
        return LMX_OK;
    }
    /* hold back the longest tail that is a proper prefix of some stop string */
    size_t hold = 0;
    for (int i = 0; i < s->n; i++) {
        size_t maxk = s->lens[i] - 1 < s->len ? s->lens[i] - 1 : s->len;
        for (size_t k = maxk; k > hold; k--)
            if (memcmp(s->buf + s->len - k, s->stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    *out_len = s->len - hold;
    s->emit_from = s->len - hold;
    return LMX_OK;
}

void lmx_stop_flush(lmx_stop *s, const char **out, size_t *out_len) {
    if (s->matched) {
        *out = s->buf;
        *out_len = 0;
        return;
    }
    compact(s);
    *out = s->buf;
    *out_len = s->len;
    s->emit_from = s->len;
}
