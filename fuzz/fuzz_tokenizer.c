/* fuzz_tokenizer.c — libFuzzer target: random bytes into encode (and decode / the streaming
 * detokenizer) of two small real-like tokenizers built here: a Llama-3-like byte-level BPE
 * (Split regex + ByteLevel, added tokens, template BOS) and a Llama-2-like SentencePiece BPE
 * (NFC + Prepend + Replace normalizer, byte_fallback, unk, added tokens with lstrip/rstrip/
 * single_word). Invariants checked (abort on violation):
 *   - encode never crashes; invalid UTF-8 is refused with LMX_ERR_INVALID_ARGUMENT, valid is encoded;
 *   - byte-level: decode(encode(text)) == text;
 *   - the streaming detokenizer's pieces concatenate to decode(ids), with and without skip_special;
 *   - decode output is always valid UTF-8. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmx_tokenizer *g_tok[2];

static void append_json_string(tok_buf *b, const char *s, size_t n) {
    tok_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { tok_buf_putc(b, '\\'); tok_buf_putc(b, (char)c); }
        else if (c < 0x20) { char e[8]; snprintf(e, sizeof e, "\\u%04x", c); tok_buf_append(b, e, 6); }
        else tok_buf_putc(b, (char)c);
    }
    tok_buf_putc(b, '"');
}

static void vocab_entry(tok_buf *b, const char *s, size_t n, int id, bool *first) {
    if (!*first) tok_buf_putc(b, ',');
    *first = false;
    append_json_string(b, s, n);
    char num[16];
    snprintf(num, sizeof num, ":%d", id);
    tok_buf_append(b, num, strlen(num));
}

static const char *ADDED_BL =
    "[{\"id\":300,\"content\":\"<|bos|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":301,\"content\":\"<|eot|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":302,\"content\":\"<think>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}]";

static lmx_tokenizer *build_bytelevel(void) {
    /* vocab: the 256 byte-level characters, then merged tokens */
    static const char *merges[][2] = {{"h", "e"}, {"\xC4\xA0", "t"}, {"\xC4\xA0t", "he"}, {"i", "n"}, {"\xC4\xA0", "a"},
                                      {"e", "r"}, {"o", "n"}, {"\xC4\x8A", "\xC4\x8A"}, {"\xC4\xA0", "\xC4\xA0"}, {"1", "2"}};
    tok_buf b = {0};
    tok_buf_append(&b, "{\"version\":\"1.0\",\"added_tokens\":", 32);
    tok_buf_append(&b, ADDED_BL, strlen(ADDED_BL));
    const char *mid =
        ",\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
        "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
        "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]},"
        "\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},{\"type\":\"TemplateProcessing\","
        "\"single\":[{\"SpecialToken\":{\"id\":\"<|bos|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
        "\"pair\":[],\"special_tokens\":{\"<|bos|>\":{\"id\":\"<|bos|>\",\"ids\":[300],\"tokens\":[\"<|bos|>\"]}}}]},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
        "\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":true,\"vocab\":{";
    tok_buf_append(&b, mid, strlen(mid));
    bool first = true;
    for (int c = 0; c < 256; c++) {
        int len;
        const char *ch = tok_bytelevel_char((unsigned char)c, &len);
        vocab_entry(&b, ch, (size_t)len, c, &first);
    }
    int id = 256;
    for (size_t m = 0; m < sizeof merges / sizeof merges[0]; m++) {
        char joined[32];
        snprintf(joined, sizeof joined, "%s%s", merges[m][0], merges[m][1]);
        vocab_entry(&b, joined, strlen(joined), id++, &first);
    }
    tok_buf_append(&b, "},\"merges\":[", 12);
    for (size_t m = 0; m < sizeof merges / sizeof merges[0]; m++) {
        if (m) tok_buf_putc(&b, ',');
        char pair[48];
        snprintf(pair, sizeof pair, "%s %s", merges[m][0], merges[m][1]);
        append_json_string(&b, pair, strlen(pair));
    }
    tok_buf_append(&b, "]}}", 3);
    lmx_tokenizer *t = NULL;
    if (lmx_tokenizer_load_memory(b.p, b.n, NULL, 0, &t) != LMX_OK) {
        fprintf(stderr, "fuzz_tokenizer: byte-level tokenizer: %s\n", lmx_last_error_detail());
        abort();
    }
    tok_buf_free(&b);
    return t;
}

static lmx_tokenizer *build_spm(void) {
    tok_buf b = {0};
    const char *head =
        "{\"version\":\"1.0\",\"added_tokens\":["
        "{\"id\":0,\"content\":\"<unk>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
        "{\"id\":1,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
        "{\"id\":2,\"content\":\"</s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
        "{\"id\":400,\"content\":\"<mask>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":true},"
        "{\"id\":401,\"content\":\"ab\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false}],"
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},\"pre_tokenizer\":null,"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
        "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
        "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},\"content\":\" \"},"
        "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
        "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{"
        "\"<unk>\":0,\"<s>\":1,\"</s>\":2";
    tok_buf_append(&b, head, strlen(head));
    bool first = false;
    int id = 3;
    for (int c = 0; c < 256; c++) { /* only the ASCII bytes have fallback pieces: others go to <unk> */
        if (c >= 0x80 && c != 0xC3 && c != 0xA9) continue;
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", c);
        vocab_entry(&b, name, 6, id++, &first);
    }
    const char *pieces[] = {"\xE2\x96\x81", "a", "b", "c", "e", "h", "l", "o", "t", "\xE2\x96\x81t", "he", "\xE2\x96\x81the", "ll",
                            "\xE2\x96\x81\xE2\x96\x81", "\xC3\xA9"};
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) vocab_entry(&b, pieces[k], strlen(pieces[k]), id++, &first);
    const char *tail = "},\"merges\":[[\"\xE2\x96\x81\",\"t\"],[\"h\",\"e\"],[\"\xE2\x96\x81t\",\"he\"],[\"l\",\"l\"],"
                       "[\"\xE2\x96\x81\",\"\xE2\x96\x81\"]]}}";
    tok_buf_append(&b, tail, strlen(tail));
    lmx_tokenizer *t = NULL;
    if (lmx_tokenizer_load_memory(b.p, b.n, "{\"bos_token\":\"<s>\"}", 19, &t) != LMX_OK) {
        fprintf(stderr, "fuzz_tokenizer: spm tokenizer: %s\n", lmx_last_error_detail());
        abort();
    }
    tok_buf_free(&b);
    return t;
}

static void check_stream(const lmx_tokenizer *t, const int32_t *ids, size_t n, bool skip) {
    char *text;
    size_t len;
    if (lmx_tokenizer_decode(t, ids, n, skip, &text, &len) != LMX_OK) abort();
    if (tok_utf8_validate(text, len) != len) abort();
    lmx_detok_stream *s;
    if (lmx_detok_stream_create(t, skip, &s) != LMX_OK) abort();
    tok_buf acc = {0};
    const char *p;
    size_t pl;
    for (size_t i = 0; i < n; i++) {
        if (lmx_detok_stream_feed(s, ids[i], &p, &pl) != LMX_OK) abort();
        if (tok_utf8_validate(p, pl) != pl) abort();
        tok_buf_append(&acc, p, pl);
    }
    if (lmx_detok_stream_flush(s, &p, &pl) != LMX_OK) abort();
    tok_buf_append(&acc, p, pl);
    if (acc.n != len || (len && memcmp(acc.p, text, len) != 0)) {
        fprintf(stderr, "stream mismatch: %zu vs %zu bytes\n", acc.n, len);
        abort();
    }
    tok_buf_free(&acc);
    lmx_detok_stream_destroy(s);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok[0]) {
        g_tok[0] = build_bytelevel();
        g_tok[1] = build_spm();
    }
    if (size < 1) return 0;
    int which = data[0] & 1;
    bool add_special = (data[0] >> 1) & 1;
    const lmx_tokenizer *t = g_tok[which];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] & 4) { /* the bytes are token ids */
        size_t k = n / 2;
        int32_t *ids = malloc((k + 1) * sizeof *ids);
        for (size_t i = 0; i < k; i++) ids[i] = (int32_t)(data[1 + 2 * i] | (data[2 + 2 * i] << 8)) % 500;
        check_stream(t, ids, k, false);
        check_stream(t, ids, k, true);
        free(ids);
        return 0;
    }
    int32_t *ids;
    size_t k;
    lmx_status st = lmx_tokenizer_encode(t, text, n, add_special, &ids, &k);
    bool valid = tok_utf8_validate(text, n) == n;
    if (valid != (st == LMX_OK)) abort();
    if (st) {
        if (st != LMX_ERR_INVALID_ARGUMENT) abort();
        return 0;
    }
    check_stream(t, ids, k, false);
    check_stream(t, ids, k, true);
    if (which == 0) { /* byte-level BPE is lossless */
        char *back;
        size_t bl;
        if (lmx_tokenizer_decode(t, ids, k, false, &back, &bl) != LMX_OK) abort();
        size_t skip = add_special ? 7 : 0; /* "<|bos|>" */
        if (bl != n + skip || memcmp(back + skip, text, n) != 0) {
            fprintf(stderr, "byte-level round trip failed\n");
            abort();
        }
        free(back);
    }
    free(ids);
    return 0;
}
