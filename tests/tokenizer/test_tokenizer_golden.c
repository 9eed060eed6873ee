/* test_tokenizer_golden.c — every committed HF tokenizers 0.23 golden case (tests/fixtures/
 * tokenizers/golden/<name>.jsonl, made by gen_tok_golden.py) must match exactly: encode with and
 * without special tokens, decode with and without skip_special, and the streaming detokenizer
 * must produce the same text as decode for every id list.
 *   test_tokenizer_golden NAME [GOLDEN.jsonl]   (default golden file: the committed one) */
#include "lmx_test.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int shown;
#define SHOW(...) do { if (shown++ < 25) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static bool ids_from_json(const cJSON *a, int32_t **ids, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(a);
    *ids = malloc((*n + 1) * sizeof **ids);
    size_t k = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) (*ids)[k++] = (int32_t)x->valuedouble;
    return true;
}

static void print_ids(const char *label, const int32_t *v, size_t n) {
    if (shown > 25) return;
    fprintf(stderr, "  %s [", label);
    for (size_t i = 0; i < n && i < 60; i++) fprintf(stderr, "%s%d", i ? "," : "", v[i]);
    fprintf(stderr, "%s]\n", n > 60 ? ",..." : "");
}


/* The expected strings may hold U+0000 (cJSON strings cannot), so string fields are read from the
 * raw line: `"key": "` preceded by "{" or ", " can only be a key (quotes inside strings are escaped). */
static int hexv(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }
static char *raw_string(const char *line, const char *key, size_t *len) {
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    const char *p = line;
    for (;;) {
        p = strstr(p, pat);
        if (!p) return NULL;
        if (p == line + 1 || (p >= line + 2 && p[-2] == ',' && p[-1] == ' ')) break;
        p++;
    }
    p += strlen(pat);
    char *out = malloc(strlen(p) * 2 + 8);
    size_t n = 0;
    while (*p && *p != '"') {
        if (*p != '\\') { out[n++] = *p++; continue; }
        p++;
        char e = *p++;
        switch (e) {
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'u': {
            unsigned cp = 0;
            for (int k = 0; k < 4; k++) cp = cp * 16 + (unsigned)hexv(*p++);
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = 0;
                for (int k = 0; k < 4; k++) lo = lo * 16 + (unsigned)hexv(p[2 + k]);
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) out[n++] = (char)cp;
            else if (cp < 0x800) { out[n++] = (char)(0xC0 | (cp >> 6)); out[n++] = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) { out[n++] = (char)(0xE0 | (cp >> 12)); out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[n++] = (char)(0x80 | (cp & 0x3F)); }
            else { out[n++] = (char)(0xF0 | (cp >> 18)); out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F)); out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[n++] = (char)(0x80 | (cp & 0x3F)); }
            break;
        }
        default: out[n++] = e;
        }
    }
    out[n] = '\0';
    *len = n;
    return out;
}

static long n_enc, n_dec, n_stream;

static void check_encode(const lmx_tokenizer *t, const char *text, size_t text_len, const cJSON *exp, bool add_special) {
    int32_t *want;
    size_t nw;
    ids_from_json(exp, &want, &nw);
    int32_t *got = NULL;
    size_t ng = 0;
    lmx_status st = lmx_tokenizer_encode(t, text, text_len, add_special, &got, &ng);
    bool ok = st == LMX_OK && ng == nw && (nw == 0 || memcmp(got, want, nw * sizeof *got) == 0);
    n_enc++;
    CHECK(ok);
    if (!ok) {
        SHOW("encode mismatch (add_special=%d) for \"%s\"", add_special, text);
        print_ids("want", want, nw);
        print_ids("got ", got, ng);
    }
    free(want);
    free(got);
}

static void check_decode(const lmx_tokenizer *t, const cJSON *ids_j, const char *line, const char *key, bool skip) {
    size_t exp_len;
    char *exp = raw_string(line, key, &exp_len);
    CHECK_MSG(exp != NULL, "golden line without \"%s\"", key);
    if (!exp) return;
    int32_t *ids;
    size_t n;
    ids_from_json(ids_j, &ids, &n);
    char *text = NULL;
    size_t len = 0;
    lmx_status st = lmx_tokenizer_decode(t, ids, n, skip, &text, &len);
    bool ok = st == LMX_OK && len == exp_len && memcmp(text, exp, len) == 0;
    n_dec++;
    CHECK(ok);
    if (!ok) {
        SHOW("decode mismatch (skip=%d, %s): want %zu bytes \"%s\" got %zu bytes \"%s\"", skip, key, exp_len, exp, len, text ? text : "(null)");
        print_ids("ids", ids, n);
    }
    /* streaming: concatenation of the pieces == decode */
    lmx_detok_stream *s;
    CHECK(lmx_detok_stream_create(t, skip, &s) == LMX_OK);
    char *acc = malloc(len * 2 + 64 + n * 16);
    size_t an = 0;
    bool valid = true;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        lmx_detok_stream_feed(s, ids[i], &p, &pl);
        memcpy(acc + an, p, pl);
        an += pl;
    }
    const char *p;
    size_t pl;
    lmx_detok_stream_flush(s, &p, &pl);
    memcpy(acc + an, p, pl);
    an += pl;
    lmx_detok_stream_destroy(s);
    n_stream++;
    bool sok = valid && text && an == len && memcmp(acc, text, len) == 0;
    CHECK(sok);
    if (!sok) SHOW("stream mismatch (skip=%d): %zu vs %zu bytes: \"%.*s\" vs \"%s\"", skip, an, len, (int)an, acc, text ? text : "");
    free(acc);
    free(text);
    free(ids);
    free(exp);
}

static void run_file(const char *name, const char *golden) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", LMX_TOK_FIXTURES, name);
    if (!lmx_fs_is_dir(dir)) {
        SKIP("%s: real tokenizer not unpacked (from tests/fixtures/tokenizers/%s.tar.xz at configure time)", dir, name);
        return;
    }
    lmx_tokenizer *t = NULL;
    lmx_status st = lmx_tokenizer_load(dir, &t);
    CHECK_MSG(st == LMX_OK, "load %s: %s", dir, lmx_last_error_detail());
    if (st) return;
    char *buf;
    size_t len;
    st = lmx_fs_read_file(golden, (size_t)1 << 30, &buf, &len);
    CHECK_MSG(st == LMX_OK, "%s: %s", golden, lmx_last_error_detail());
    if (st) { lmx_tokenizer_destroy(t); return; }
    long lines = 0;
    for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        CHECK_MSG(j != NULL, "%s: bad JSON line %ld", golden, lines + 1);
        if (!j) continue;
        lines++;
        size_t tl;
        char *tx = raw_string(line, "t", &tl);
        if (tx) {
            check_encode(t, tx, tl, cJSON_GetObjectItem(j, "a"), false);
            check_encode(t, tx, tl, cJSON_GetObjectItem(j, "s"), true);
            check_decode(t, cJSON_GetObjectItem(j, "a"), line, "da", false);
            check_decode(t, cJSON_GetObjectItem(j, "a"), line, "das", true);
            check_decode(t, cJSON_GetObjectItem(j, "s"), line, "ds", false);
            check_decode(t, cJSON_GetObjectItem(j, "s"), line, "dss", true);
            free(tx);
        } else {
            check_decode(t, cJSON_GetObjectItem(j, "r"), line, "d", false);
            check_decode(t, cJSON_GetObjectItem(j, "r"), line, "dk", true);
        }
        cJSON_Delete(j);
    }
    fprintf(stderr, "%s: %ld cases, %ld encodes, %ld decodes, %ld streams\n", name, lines, n_enc, n_dec, n_stream);
    free(buf);
    lmx_tokenizer_destroy(t);
}

static const char *g_name, *g_file;
static void test_golden(void) { run_file(g_name, g_file); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s NAME [GOLDEN.jsonl]\n", argv[0]);
        return 2;
    }
    static char path[1024];
    g_name = argv[1];
    if (argc > 2) g_file = argv[2];
    else {
        snprintf(path, sizeof path, "%s/%s.jsonl", LMX_TOK_GOLDEN, g_name);
        g_file = path;
    }
    RUN(test_golden);
    return lmx_test_summary();
}
