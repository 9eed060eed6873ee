/* bench_tokenizer.c — tokenizer speed: load time of each real tokenizer and single-threaded encode
 * throughput on a few MB of deterministic English-like prose (and decode throughput).
 *   bench_tokenizer [FIXTURES_DIR] [MB]     (default: the unpacked test fixtures, 4 MB)
 * Targets (issue 3): llama3 encode >= 15 MB/s; gemma3 (33 MB tokenizer.json) loads in <= 0.5 s.
 * Times are CPU time of this single-threaded process (plus wall time for loads). */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of this (single-threaded) process: on a shared, loaded machine it measures the work
 * itself; wall time is printed too for the load. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *const WORDS[] = {
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as",
    "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but",
    "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each",
    "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then",
    "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look",
    "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first",
    "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get",
    "come", "made", "may", "part", "government", "information", "development", "understanding",
    "particularly", "approximately", "responsibility", "characteristics", "it's", "don't", "they're",
    "1984", "2024", "42", "3.14", "Mr.", "Dr.", "London", "Paris", "New", "York", "Smith", "John",
};

static char *make_prose(size_t bytes, size_t *len) {
    char *s = malloc(bytes + 256);
    size_t n = 0;
    uint64_t x = 88172645463325252ULL;
    int in_sentence = 0;
    while (n < bytes) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        const char *w = WORDS[x % (sizeof WORDS / sizeof WORDS[0])];
        size_t wl = strlen(w);
        if (in_sentence == 0) {
            s[n++] = (char)(w[0] >= 'a' && w[0] <= 'z' ? w[0] - 32 : w[0]);
            memcpy(s + n, w + 1, wl - 1);
            n += wl - 1;
        } else {
            s[n++] = ' ';
            memcpy(s + n, w, wl);
            n += wl;
        }
        in_sentence++;
        if ((x >> 20) % 11 == 0) s[n++] = ',';
        if (in_sentence > 8 && (x >> 24) % 7 == 0) {
            s[n++] = (x >> 30) % 5 == 0 ? '?' : '.';
            in_sentence = 0;
            if ((x >> 33) % 6 == 0) { s[n++] = '\n'; s[n++] = '\n'; }
            else s[n++] = ' ';
        }
    }
    s[n] = '\0';
    *len = n;
    return s;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : LMX_TOK_FIXTURES;
    double mb = argc > 2 ? atof(argv[2]) : 4.0;
    const char *names[] = {"llama3", "qwen3", "gemma3", "llama2"};
    size_t len;
    char *prose = make_prose((size_t)(mb * 1e6), &len);
    printf("prose: %.2f MB\n", (double)len / 1e6);
    for (int k = 0; k < 4; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        lmx_tokenizer *t;
        double t0 = now(), w0 = wall();
        if (lmx_tokenizer_load(path, &t) != LMX_OK) {
            printf("%-7s load failed: %s\n", names[k], lmx_last_error_detail());
            continue;
        }
        double load = now() - t0, load_wall = wall() - w0;
        int32_t *ids;
        size_t n;
        t0 = now();
        lmx_status st = lmx_tokenizer_encode(t, prose, len, false, &ids, &n);
        double enc = now() - t0;
        /* the same text in 4 KB paragraphs-ish chunks (many calls) */
        t0 = now();
        size_t total = 0;
        for (size_t off = 0; off < len;) {
            size_t e = off + 4096 < len ? off + 4096 : len;
            while (e < len && prose[e] != ' ') e++;
            int32_t *ci;
            size_t cn;
            lmx_tokenizer_encode(t, prose + off, e - off, false, &ci, &cn);
            total += cn;
            free(ci);
            off = e;
        }
        double enc_chunks = now() - t0;
        if (!st && total != n) printf("%-7s note: chunked encode gave %zu ids vs %zu in one call\n", names[k], total, n);
        char *text;
        size_t tl;
        t0 = now();
        if (!st) lmx_tokenizer_decode(t, ids, n, false, &text, &tl);
        double dec = now() - t0;
        printf("%-7s load %.3f s cpu (%.3f s wall) | encode %.1f MB/s (%zu ids, one call), %.1f MB/s (4 KB calls) | decode %.1f MB/s%s\n",
               names[k], load, load_wall, (double)len / 1e6 / enc, n, (double)len / 1e6 / enc_chunks, (double)len / 1e6 / dec,
               (!st && tl == len && !memcmp(text, prose, len)) ? " | round-trip ok" : " | ROUND-TRIP MISMATCH");
        if (!st) { free(ids); free(text); }
        lmx_tokenizer_destroy(t);
    }
    free(prose);
    return 0;
}
