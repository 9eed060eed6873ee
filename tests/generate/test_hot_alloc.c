/* test_hot_alloc.c — "hot paths allocate nothing per token": after a warm-up, decode steps on the
 * CPU (lmx_lm_forward of one token, lmx_sampler_sample with every filter on, the streaming
 * detokenizer, the stop-string matcher) make no malloc/calloc/realloc/free call. The test binary
 * is linked with -Wl,--wrap for those four functions, so calls from the library objects (linked
 * statically) are counted here. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate/sampler.h"
#include "generate/stop.h"
#include "lmx_test.h"
#include "model/lm.h"
#include "tokenizer/tokenizer.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t k);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);

static atomic_long n_calls;
static atomic_bool counting;

static void count(void) {
    if (atomic_load(&counting)) atomic_fetch_add(&n_calls, 1);
}
void *__wrap_malloc(size_t n) { count(); return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t k) { count(); return __real_calloc(n, k); }
void *__wrap_realloc(void *p, size_t n) { count(); return __real_realloc(p, n); }
void __wrap_free(void *p) { if (p) count(); __real_free(p); }

/* A byte-level tokenizer whose 256 ids are the 256 bytes (GPT-2 byte-to-unicode alphabet). */
static char *byte_tokenizer_json(void) {
    size_t cap = 16384, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s + n, cap - n,
                          "{\"version\":\"1.0\",\"added_tokens\":[],\"normalizer\":null,"
                          "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"
                          "\"use_regex\":true},\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
                          "\"model\":{\"type\":\"BPE\",\"vocab\":{");
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174) ? b : 256 + extra++;
        char u[4];
        int k = cp < 0x80 ? (u[0] = (char)cp, 1) : (u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 63)), 2);
        n += (size_t)snprintf(s + n, cap - n, "%s\"", b ? "," : "");
        for (int i = 0; i < k; i++) {
            if (u[i] == '"' || u[i] == '\\') s[n++] = '\\';
            s[n++] = u[i];
        }
        n += (size_t)snprintf(s + n, cap - n, "\":%d", b);
    }
    snprintf(s + n, cap - n, "},\"merges\":[]}}");
    return s;
}

static void test_decode_steps(void) {
    lmx_lm_options opt = {.n_threads = 2};
    lmx_lm *lm = NULL;
    CHECK(lmx_lm_open(LMX_SOURCE_DIR "/tests/fixtures/models/llama-tiny", &opt, &lm) == LMX_OK);
    char *tj = byte_tokenizer_json();
    lmx_tokenizer *tok = NULL;
    CHECK_MSG(lmx_tokenizer_load_memory(tj, strlen(tj), NULL, 0, &tok) == LMX_OK, "%s", lmx_last_error_detail());
    free(tj);
    lmx_kv *kv = NULL;
    lmx_sampler *smp = NULL;
    lmx_stop *stop = NULL;
    lmx_detok_stream *ds = NULL;
    const char *stops[] = {"\xff\xfe never"};
    if (!lm || !tok || lmx_kv_create(lm, 128, &kv) != LMX_OK || lmx_sampler_create(256, &smp) != LMX_OK ||
        lmx_stop_create(stops, 1, &stop) != LMX_OK || lmx_detok_stream_create(tok, false, &ds) != LMX_OK) {
        CHECK(0);
        goto done;
    }
    lmx_sampler_seed(smp, 7);
    lmx_sampling sp = {.temperature = 0.9f, .top_p = 0.9f, .min_p = 0.01f, .top_k = 50,
                             .repetition_penalty = 1.1f, .repetition_context = 20};
    float logits[256];
    int32_t hist[128] = {1, 2, 3};
    size_t n_hist = 3;
    CHECK(lmx_lm_forward(lm, kv, hist, 3, logits) == LMX_OK);
    long per_phase[2] = {0, 0};
    for (int phase = 0; phase < 2; phase++) { /* 0: warm-up (buffers grow to size), 1: measured */
        atomic_store(&n_calls, 0);
        atomic_store(&counting, phase == 1);
        for (int step = 0; step < 40; step++) {
            int32_t t;
            const char *piece, *out;
            size_t plen, olen;
            bool matched;
            CHECK(lmx_sampler_sample(smp, &sp, logits, hist, n_hist, &t) == LMX_OK);
            hist[n_hist++] = t;
            CHECK(lmx_detok_stream_feed(ds, t, &piece, &plen) == LMX_OK);
            CHECK(lmx_stop_push(stop, piece, plen, &out, &olen, &matched) == LMX_OK && !matched);
            CHECK(lmx_lm_forward(lm, kv, &t, 1, logits) == LMX_OK);
        }
        atomic_store(&counting, false);
        per_phase[phase] = atomic_load(&n_calls);
    }
    CHECK_MSG(per_phase[1] == 0, "%ld allocator calls in 40 decode steps after warm-up", per_phase[1]);
    /* the hook is live: a call that does allocate is counted */
    atomic_store(&n_calls, 0);
    atomic_store(&counting, true);
    lmx_stop *other = NULL;
    CHECK(lmx_stop_create(stops, 1, &other) == LMX_OK);
    lmx_stop_destroy(other);
    atomic_store(&counting, false);
    CHECK(atomic_load(&n_calls) >= 2);
done:
    lmx_detok_stream_destroy(ds);
    lmx_stop_destroy(stop);
    lmx_sampler_destroy(smp);
    lmx_kv_destroy(kv);
    lmx_tokenizer_destroy(tok);
    lmx_lm_close(lm);
}

int main(void) {
    RUN(test_decode_steps);
    return lmx_test_summary();
}
