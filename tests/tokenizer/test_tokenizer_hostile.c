/* test_tokenizer_hostile.c — tokenizer.json files that are valid JSON but hostile or contradictory:
 * huge token ids, merges naming unknown tokens, deep nesting. Each must load with a typed error (or
 * load and work), quickly and without allocating memory proportional to a token id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmx_test.h"
#include "tokenizer/tokenizer.h"

#define HEAD                                                                                                  \
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"normalizer\":null,"                        \
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"            \
    "\"use_regex\":true},\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"

static lmx_status load(const char *json, lmx_tokenizer **out) {
    return lmx_tokenizer_load_memory(json, strlen(json), NULL, 0, out);
}

static char *with_model(const char *added, const char *vocab, const char *merges) {
    static const char fmt[] = HEAD "\"added_tokens\":[%s],\"model\":{\"type\":\"BPE\",\"dropout\":null,"
                                   "\"unk_token\":null,\"fuse_unk\":false,\"byte_fallback\":false,"
                                   "\"vocab\":{%s},\"merges\":[%s]}}";
    size_t n = sizeof fmt + strlen(added) + strlen(vocab) + strlen(merges);
    char *s = malloc(n);
    if (s) snprintf(s, n, fmt, added, vocab, merges);
    return s;
}

static void check_rejected(const char *added, const char *vocab, const char *merges, const char *what) {
    char *j = with_model(added, vocab, merges);
    lmx_tokenizer *t = NULL;
    lmx_status st = load(j, &t);
    CHECK_MSG(st == LMX_ERR_INVALID_MODEL_FORMAT && !t, "%s: status %s", what, lmx_status_str(st));
    CHECK_MSG(strstr(lmx_last_error_detail(), "id") != NULL, "%s: detail \"%s\"", what, lmx_last_error_detail());
    lmx_tokenizer_destroy(t);
    free(j);
}

/* A vocabulary or added-token id of 20 million used to size id-indexed tables (hundreds of MB;
 * 2e9 meant 16 GB); 1e300 was cast to int32_t (undefined behaviour). */
static void test_huge_ids(void) {
    check_rejected("", "\"a\":0,\"b\":20000000", "", "vocab id 2e7");
    check_rejected("", "\"a\":0,\"b\":2000000000", "", "vocab id 2e9");
    check_rejected("{\"id\":20000000,\"content\":\"<x>\",\"special\":true}", "\"a\":0", "", "added id 2e7");
    check_rejected("{\"id\":1e300,\"content\":\"<x>\",\"special\":true}", "\"a\":0", "", "added id 1e300");
    check_rejected("{\"id\":1.5,\"content\":\"<x>\",\"special\":true}", "\"a\":0", "", "added id 1.5");
    check_rejected("{\"id\":-1,\"content\":\"<x>\",\"special\":true}", "\"a\":0", "", "added id -1");
}

/* Merges naming tokens the vocabulary lacks, and added tokens far beyond the vocabulary (but within
 * the limit): loads, and encode/decode stay in range. */
static void test_contradictions(void) {
    char *j = with_model("{\"id\":5000,\"content\":\"<s>\",\"special\":true}", "\"a\":0,\"b\":1,\"ab\":2",
                         "\"a b\",\"x y\",\"ab zz\",\"b a\"");
    lmx_tokenizer *t = NULL;
    lmx_status st = load(j, &t);
    free(j);
    if (st != LMX_OK) { /* a typed rejection is acceptable too */
        CHECK(st == LMX_ERR_INVALID_MODEL_FORMAT || st == LMX_ERR_UNSUPPORTED);
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(lmx_tokenizer_encode(t, "abba<s>xy", 9, false, &ids, &n) == LMX_OK);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && (size_t)ids[i] < lmx_tokenizer_vocab_size(t));
    char *text = NULL;
    size_t len = 0;
    int32_t some[] = {0, 2, 5000, 4999, 1};
    st = lmx_tokenizer_decode(t, some, 5, false, &text, &len);
    CHECK(st == LMX_OK || st == LMX_ERR_INVALID_ARGUMENT);
    free(text);
    free(ids);
    lmx_tokenizer_destroy(t);
}

/* 200,000 nested arrays inside the vocabulary and as the top-level value: a typed error, no stack
 * overflow. */
static void test_deep_nesting(void) {
    enum { DEPTH = 200000 };
    char *deep = malloc(2 * DEPTH + 1);
    memset(deep, '[', DEPTH);
    memset(deep + DEPTH, ']', DEPTH);
    deep[2 * DEPTH] = '\0';
    lmx_tokenizer *t = NULL;
    lmx_status st = load(deep, &t);
    CHECK(st != LMX_OK && !t);
    char *v = malloc(2 * DEPTH + 16);
    snprintf(v, 2 * DEPTH + 16, "\"a\":%s", deep);
    char *j = with_model("", v, "");
    st = load(j, &t);
    CHECK(st != LMX_OK && !t);
    free(j);
    j = with_model("", "\"a\":0", deep);
    st = load(j, &t);
    CHECK(st != LMX_OK && !t);
    free(j);
    free(v);
    free(deep);
}

/* Numbers in post_processor / decoder settings out of every integer's range: rejected or clamped,
 * never converted (float-cast-overflow under LMX_SANITIZE). */
static void test_out_of_range_numbers(void) {
    static const char tp[] =
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
        "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1e300],"
        "\"tokens\":[\"<s>\"]}}}";
    static const char bert[] = "\"post_processor\":{\"type\":\"BertProcessing\",\"sep\":[\"</s>\",-1e300],\"cls\":[\"<s>\",1e300]}";
    static const char roberta[] =
        "\"post_processor\":{\"type\":\"RobertaProcessing\",\"sep\":[\"</s>\",2.5],\"cls\":[\"<s>\",0],"
        "\"trim_offsets\":true,\"add_prefix_space\":false}";
    static const char *const cases[] = {tp, bert, roberta};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char j[2048];
        snprintf(j, sizeof j,
                 "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"normalizer\":null,\"pre_tokenizer\":null,%s,"
                 "\"decoder\":null,\"added_tokens\":[],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"<s>\":1},\"merges\":[]}}",
                 cases[i]);
        lmx_tokenizer *t = NULL;
        lmx_status st = load(j, &t);
        CHECK_MSG(st == LMX_ERR_INVALID_MODEL_FORMAT, "case %zu: %s (%s)", i, lmx_status_str(st), lmx_last_error_detail());
        CHECK_MSG(strstr(lmx_last_error_detail(), i == 0 ? "bad ids" : "\"cls\"/\"sep\"") != NULL, "case %zu: %s", i,
                  lmx_last_error_detail());
        lmx_tokenizer_destroy(t);
    }
    /* a Strip decoder with 1e300 characters to strip: loads, strips everything it can */
    const char *strip =
        "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"normalizer\":null,\"pre_tokenizer\":null,"
        "\"post_processor\":null,\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":1e300,\"stop\":1e300},"
        "\"added_tokens\":[],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\" \":1},\"merges\":[]}}";
    lmx_tokenizer *t = NULL;
    lmx_status st = load(strip, &t);
    CHECK_MSG(st == LMX_OK, "strip: %s (%s)", lmx_status_str(st), lmx_last_error_detail());
    lmx_tokenizer_destroy(t);
}

/* issue 15 item 7: a repeated "model" key: the last one is the model, vocabulary included (the fast
 * vocab scanner and cJSON agree, as Python's json does) */
static void test_duplicate_model_key(void) {
    const char *j =
        "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"normalizer\":null,\"pre_tokenizer\":null,"
        "\"post_processor\":null,\"decoder\":null,\"added_tokens\":[],"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"b\":0,\"a\":1},\"merges\":[]}}";
    lmx_tokenizer *t = NULL;
    CHECK(load(j, &t) == LMX_OK);
    if (!t) return;
    CHECK_EQ_INT(lmx_tokenizer_token_to_id(t, "a", 1), 1);
    CHECK_EQ_INT(lmx_tokenizer_token_to_id(t, "b", 1), 0);
    lmx_tokenizer_destroy(t);
    /* the last "model" has no vocab: the first one's must not be used */
    const char *j2 =
        "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"normalizer\":null,\"pre_tokenizer\":null,"
        "\"post_processor\":null,\"decoder\":null,\"added_tokens\":[],"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
        "\"model\":{\"type\":\"BPE\",\"merges\":[]}}";
    t = NULL;
    lmx_status st = load(j2, &t);
    CHECK(st != LMX_OK || lmx_tokenizer_token_to_id(t, "a", 1) < 0);
    lmx_tokenizer_destroy(t);
}

int main(void) {
    RUN(test_huge_ids);
    RUN(test_contradictions);
    RUN(test_deep_nesting);
    RUN(test_out_of_range_numbers);
    RUN(test_duplicate_model_key);
    return lmx_test_summary();
}
