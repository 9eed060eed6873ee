/* test_tokenizer_units.c — each tokenizer component on its own (normalizers, pre-tokenizer
 * behaviours, decoders, the streaming decoder, UTF-8 helpers), then a small tokenizer.json written
 * by the test (byte-level BPE with added tokens using lstrip/rstrip/single_word, a template
 * post-processor), error paths (Unigram, invalid UTF-8) and concurrent use of one tokenizer. */
#include "lmx_test.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- helpers ---- */

static char *norm(const char *json, const char *in) {
    cJSON *j = cJSON_Parse(json);
    tok_normalizer *n = NULL;
    lmx_status st = tok_normalizer_parse(j, &n);
    cJSON_Delete(j);
    if (st) return strdup("<parse error>");
    tok_buf out = {0};
    st = tok_normalizer_apply(n, in, strlen(in), &out);
    tok_normalizer_free(n);
    char *r = strdup(st ? "<error>" : (out.p ? out.p : ""));
    tok_buf_free(&out);
    return r;
}

/* Pre-tokenizes and joins the pieces with '|'. */
static char *pretok(const char *json, const char *in, bool at_start) {
    cJSON *j = cJSON_Parse(json);
    tok_pretok *p = NULL;
    lmx_status st = tok_pretok_parse(j, &p);
    cJSON_Delete(j);
    if (st) return strdup("<parse error>");
    tok_pieces out = {0};
    st = tok_pretok_apply(p, in, strlen(in), at_start, &out);
    tok_buf r = {0};
    tok_buf_append(&r, "", 0);
    for (size_t i = 0; !st && i < out.n; i++) {
        if (i) tok_buf_putc(&r, '|');
        tok_buf_append(&r, out.text.p + out.sp[i].s, out.sp[i].e - out.sp[i].s);
    }
    tok_pieces_free(&out);
    tok_pretok_free(p);
    return st ? strdup("<error>") : r.p;
}

/* Decodes '|'-separated tokens with a decoder; also checks that streaming gives the same text. */
static char *dec(const char *json, const char *toks) {
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    tok_decoder *d = NULL;
    lmx_status st = tok_decoder_parse(j, &d);
    cJSON_Delete(j);
    if (st) return strdup("<parse error>");
    tok_buf all = {0}, streamed = {0}, piece = {0};
    tok_dstate *a = tok_dstate_create(d), *b = tok_dstate_create(d);
    tok_buf_append(&all, "", 0);
    tok_buf_append(&streamed, "", 0);
    char *copy = strdup(toks), *save = NULL;
    for (char *t = strtok_r(copy, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
        tok_dstate_push(a, t, strlen(t), &all);
        piece.n = 0;
        tok_dstate_push(b, t, strlen(t), &piece);
        CHECK(tok_utf8_validate(piece.p ? piece.p : "", piece.n) == piece.n); /* pieces are complete UTF-8 */
        tok_buf_append(&streamed, piece.p ? piece.p : "", piece.n);
    }
    tok_dstate_finish(a, &all);
    tok_dstate_finish(b, &streamed);
    CHECK_EQ_STR(streamed.p, all.p);
    free(copy);
    tok_dstate_destroy(a);
    tok_dstate_destroy(b);
    tok_decoder_free(d);
    tok_buf_free(&streamed);
    tok_buf_free(&piece);
    return all.p;
}

#define CHECK_FN(call, want)                                                                  \
    do {                                                                                      \
        char *got_ = (call);                                                                  \
        CHECK_EQ_STR(got_, want);                                                             \
        free(got_);                                                                           \
    } while (0)

/* ---- tests ---- */

static void test_utf8(void) {
    CHECK_EQ_INT(tok_utf8_validate("abc\xC3\xA9", 5), 5);
    CHECK_EQ_INT(tok_utf8_validate("ab\xC3", 3), 2);
    CHECK_EQ_INT(tok_utf8_validate("\xED\xA0\x80", 3), 0); /* surrogate */
    CHECK_EQ_INT(tok_utf8_validate("\xF4\x90\x80\x80", 4), 0); /* > U+10FFFF */
    CHECK_EQ_INT(tok_utf8_validate("\xC0\xAF", 2), 0); /* overlong */
    tok_buf b = {0};
    /* Rust from_utf8_lossy: one U+FFFD per maximal invalid subpart */
    tok_utf8_lossy_append(&b, (const unsigned char *)"a\xE2\x96z\xF0\x80\x80", 7, false);
    CHECK_EQ_STR(b.p, "a\xEF\xBF\xBDz\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    b.n = 0;
    size_t used = tok_utf8_lossy_append(&b, (const unsigned char *)"ok\xF0\x9F\x98", 5, true);
    CHECK_EQ_INT(used, 2); /* the incomplete emoji is held back */
    CHECK_EQ_STR(b.p, "ok");
    tok_buf_free(&b);
    int len;
    CHECK(memcmp(tok_bytelevel_char(' ', &len), "\xC4\xA0", 2) == 0 && len == 2); /* Ġ */
    CHECK_EQ_INT(tok_bytelevel_byte(0x120), ' ');
    CHECK_EQ_INT(tok_bytelevel_byte('A'), 'A');
    CHECK_EQ_INT(tok_bytelevel_byte(0x10A), '\n'); /* Ċ */
    CHECK_EQ_INT(tok_bytelevel_byte(0x3000), -1);
}

static void test_normalizers(void) {
    CHECK_FN(norm("{\"type\":\"NFC\"}", "e\xCC\x81"), "\xC3\xA9");
    CHECK_FN(norm("{\"type\":\"NFD\"}", "\xC3\xA9"), "e\xCC\x81");
    CHECK_FN(norm("{\"type\":\"NFKC\"}", "\xEF\xAC\x81 \xE2\x91\xA0"), "fi 1"); /* ﬁ ① */
    CHECK_FN(norm("{\"type\":\"NFKD\"}", "\xC3\xA9\xEF\xAC\x81"), "e\xCC\x81" "fi");
    CHECK_FN(norm("{\"type\":\"Lowercase\"}", "HeLLo \xC3\x89T\xC3\x89 \xC4\xB0"), "hello \xC3\xA9t\xC3\xA9 i\xCC\x87");
    CHECK_FN(norm("{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":true}", " \t hi there \xE3\x80\x80\n"), "hi there");
    CHECK_FN(norm("{\"type\":\"Strip\",\"strip_left\":false,\"strip_right\":true}", "  hi  "), "  hi");
    CHECK_FN(norm("{\"type\":\"StripAccents\"}", "e\xCC\x81" "a"), "ea");
    CHECK_FN(norm("{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}", "a b  c"),
             "a\xE2\x96\x81" "b\xE2\x96\x81\xE2\x96\x81" "c");
    CHECK_FN(norm("{\"type\":\"Replace\",\"pattern\":{\"String\":\"a.\"},\"content\":\"X\"}", "a.bab.a.ab"), "Xbab.Xab"); /* literal '.' */
    CHECK_FN(norm("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"content\":\" \"}", "a \t\n b\xC2\x85" "c"), "a b c");
    CHECK_FN(norm("{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"}", "hi"), "\xE2\x96\x81hi");
    CHECK_FN(norm("{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"}", ""), ""); /* not on empty input */
    CHECK_FN(norm("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"_\"},"
                  "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"_\"},{\"type\":\"Lowercase\"}]}", "Hello World"),
             "_hello_world");
    CHECK_FN(norm("{\"type\":\"BertNormalizer\"}", "x"), "<parse error>");
}

static void test_split_behaviours(void) {
    const char *in = "the-final--countdown";
    CHECK_FN(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Removed\",\"invert\":false}", in, true),
             "the|final|countdown");
    CHECK_FN(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Isolated\",\"invert\":false}", in, true),
             "the|-|final|-|-|countdown");
    CHECK_FN(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"MergedWithPrevious\",\"invert\":false}", in, true),
             "the-|final-|-|countdown");
    CHECK_FN(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"MergedWithNext\",\"invert\":false}", in, true),
             "the|-final|-|-countdown");
    CHECK_FN(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Contiguous\",\"invert\":false}", in, true),
             "the|-|final|--|countdown");
    /* invert: the matches are the kept content */
    CHECK_FN(pretok("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[a-z]+\"},\"behavior\":\"Removed\",\"invert\":true}", in, true),
             "the|final|countdown");
    /* Llama-3 style regex: contractions in any case, digits in threes, Unicode whitespace */
    const char *l3 = "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
                     "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false}";
    CHECK_FN(pretok(l3, "I'LL pay 1234567 now!!\n\n  ok", true), "I|'LL| pay| |123|456|7| now|!!\n\n| | ok");
    CHECK_FN(pretok(l3, "a\xC2\x85\xC2\x85" "b", true), "a|\xC2\x85|\xC2\x85" "b"); /* U+0085 is \s for Oniguruma */
}

static void test_pretokenizers(void) {
    CHECK_FN(pretok("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}", "Hello my friend, how's it?", true),
             "\xC4\xA0Hello|\xC4\xA0my|\xC4\xA0" "friend|,|\xC4\xA0how|'s|\xC4\xA0it|?");
    CHECK_FN(pretok("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}", "a b\n\xC3\xA9", true),
             "a\xC4\xA0" "b\xC4\x8A\xC3\x83\xC2\xA9");
    const char *ms = "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}";
    CHECK_FN(pretok(ms, "Hey   friend!", true), "\xE2\x96\x81Hey|\xE2\x96\x81|\xE2\x96\x81|\xE2\x96\x81" "friend!");
    const char *mf = "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":false}";
    CHECK_FN(pretok(mf, "Hey you", true), "\xE2\x96\x81Hey\xE2\x96\x81you");
    CHECK_FN(pretok(mf, "Hey you", false), "Hey\xE2\x96\x81you"); /* not at the start of the input */
    const char *mn = "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"never\",\"split\":true}";
    CHECK_FN(pretok(mn, "Hey you", true), "Hey|\xE2\x96\x81you");
    CHECK_FN(pretok("{\"type\":\"Digits\",\"individual_digits\":true}", "Call 123 please", true), "Call |1|2|3| please");
    CHECK_FN(pretok("{\"type\":\"Digits\",\"individual_digits\":false}", "Call 123 please", true), "Call |123| please");
    CHECK_FN(pretok("{\"type\":\"Whitespace\"}", "Hello there!  ok", true), "Hello|there|!|ok");
    CHECK_FN(pretok("{\"type\":\"WhitespaceSplit\"}", "Hello  there!\tok", true), "Hello|there!|ok");
    CHECK_FN(pretok("{\"type\":\"Punctuation\",\"behavior\":\"Isolated\"}", "Hey friend!     How are you?!?", true),
             "Hey friend|!|     How are you|?|!|?");
    CHECK_FN(pretok("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"WhitespaceSplit\"},{\"type\":\"Digits\",\"individual_digits\":true}]}",
                    "ab12 c3", true), "ab|1|2|c|3");
    CHECK_FN(pretok("{\"type\":\"UnicodeScripts\"}", "x", true), "<parse error>");
}

static void test_decoders(void) {
    CHECK_FN(dec("{\"type\":\"ByteLevel\"}", "\xC4\xA0hello|\xC4\xA0world|\xC4\x8A"), " hello world\n");
    /* an emoji split over tokens; a token outside the byte map is taken as raw UTF-8 */
    CHECK_FN(dec("{\"type\":\"ByteLevel\"}", "\xC3\xB0\xC5\x81|\xC4\xBA|\xC4\xA2|<|\xE2\x80\x94"), "\xF0\x9F\x98\x80<\xE2\x80\x94");
    CHECK_FN(dec("{\"type\":\"ByteLevel\"}", "\xC3\xA2|x"), "\xEF\xBF\xBDx"); /* incomplete sequence -> one U+FFFD */
    CHECK_FN(dec("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"always\"}",
                 "\xE2\x96\x81Hey|\xE2\x96\x81" "friend!"), "Hey friend!");
    CHECK_FN(dec("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"never\"}",
                 "\xE2\x96\x81Hey|\xE2\x96\x81" "friend!"), " Hey friend!");
    const char *spm = "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},\"content\":\" \"},"
                      "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}";
    CHECK_FN(dec(spm, "\xE2\x96\x81Hello|<0x2C>|\xE2\x96\x81|<0xE2>|<0x82>|<0xAC>|!"), "Hello, \xE2\x82\xAC!");
    CHECK_FN(dec(spm, "<0xE2>|<0x82>|x|<0x41>|<0x80>"), "\xEF\xBF\xBD\xEF\xBF\xBDx\xEF\xBF\xBD\xEF\xBF\xBD"); /* invalid runs: U+FFFD per byte */
    CHECK_FN(dec(spm, "\xE2\x96\x81\xE2\x96\x81" "a"), " a");
    CHECK_FN(dec("{\"type\":\"Strip\",\"content\":\"x\",\"start\":2,\"stop\":1}", "xxxaxx|xbx"), "xaxb"); /* per token before a Fuse */
    CHECK_FN(dec("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":0,\"stop\":2}]}",
                 "a |  | b|   "), "a    b ");
    CHECK_FN(dec("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\"ab\"},\"content\":\"X\"}]}",
                 "a|b|a|ca|b"), "XacX");
    CHECK_FN(dec(NULL, "a|b|c"), "a b c"); /* no decoder: joined with spaces */
    CHECK_FN(dec("{\"type\":\"WordPiece\",\"prefix\":\"##\"}", "a"), "<parse error>");
}

/* ---- a whole small tokenizer.json ---- */

static const char *TINY =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":20,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":21,\"content\":\"<mask>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":true},"
    "{\"id\":22,\"content\":\"lo\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false},"
    "{\"id\":23,\"content\":\"<s>x\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[20],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,"
    "\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{"
    "\"h\":0,\"e\":1,\"l\":2,\"o\":3,\"\xC4\xA0\":4,\"w\":5,\"r\":6,\"d\":7,\"he\":8,\"ll\":9,\"hell\":10,\"hello\":11,"
    "\"\xC4\xA0w\":12,\"or\":13,\"x\":14,\"<\":15,\">\":16,\"s\":17,\"\xC4\x8A\":18,\"\\u00e9\":19},"
    "\"merges\":[\"h e\",\"l l\",\"he ll\",[\"hell\",\"o\"],\"\xC4\xA0 w\",\"o r\"]}}";

static lmx_tokenizer *load_tiny(void) {
    char dir[] = "/tmp/lmx_tok_unitXXXXXX";
    if (!mkdtemp(dir)) return NULL;
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    fputs(TINY, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    f = fopen(path, "wb");
    fputs("{\"bos_token\":{\"content\":\"<s>\"},\"eos_token\":\"<mask>\",\"chat_template\":\"{{ x }}\"}", f);
    fclose(f);
    lmx_tokenizer *t = NULL;
    lmx_status st = lmx_tokenizer_load(dir, &t);
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    unlink(path);
    rmdir(dir);
    return t;
}

static char *enc_str(const lmx_tokenizer *t, const char *s, bool special) {
    int32_t *ids;
    size_t n;
    if (lmx_tokenizer_encode(t, s, strlen(s), special, &ids, &n) != LMX_OK) return strdup("<error>");
    tok_buf b = {0};
    tok_buf_append(&b, "", 0);
    for (size_t i = 0; i < n; i++) {
        char num[16];
        snprintf(num, sizeof num, i ? ",%d" : "%d", ids[i]);
        tok_buf_append(&b, num, strlen(num));
    }
    free(ids);
    return b.p;
}

static void test_tiny_tokenizer(void) {
    lmx_tokenizer *t = load_tiny();
    if (!t) return;
    CHECK_FN(enc_str(t, "hello world", false), "11,12,13,2,7");
    CHECK_FN(enc_str(t, "hello world", true), "20,11,12,13,2,7");
    CHECK_FN(enc_str(t, "", true), "20");
    CHECK_FN(enc_str(t, "", false), "");
    /* <mask> has lstrip+rstrip: it swallows the spaces around it */
    CHECK_FN(enc_str(t, "he <mask>  lo", false), "8,21,22");
    /* "lo" is single_word: inside "hello" it is not matched; standalone it is */
    CHECK_FN(enc_str(t, "hello lo", false), "11,4,22");
    CHECK_FN(enc_str(t, "lol", false), "2,3,2");
    /* leftmost-longest: "<s>x" beats "<s>" */
    CHECK_FN(enc_str(t, "<s>x<s>", false), "23,20");
    /* characters missing from the vocab (no unk, no byte fallback) are dropped, like HF */
    CHECK_FN(enc_str(t, "hz", false), "0");
    char *text;
    size_t len;
    int32_t ids[] = {20, 11, 12, 13, 2, 7, 21, 18, 999};
    CHECK(lmx_tokenizer_decode(t, ids, 9, false, &text, &len) == LMX_OK);
    CHECK_EQ_STR(text, "<s>hello world<mask>\n");
    free(text);
    CHECK(lmx_tokenizer_decode(t, ids, 9, true, &text, &len) == LMX_OK);
    CHECK_EQ_STR(text, "hello world\n");
    free(text);
    CHECK_EQ_INT(lmx_tokenizer_special_id(t, LMX_TOK_BOS), 20);
    CHECK_EQ_INT(lmx_tokenizer_special_id(t, LMX_TOK_EOS), 21);
    CHECK_EQ_INT(lmx_tokenizer_special_id(t, LMX_TOK_PAD), -1);
    CHECK_EQ_STR(lmx_tokenizer_special_token(t, LMX_TOK_EOS), "<mask>");
    CHECK(lmx_tokenizer_is_special(t, 20) && !lmx_tokenizer_is_special(t, 22) && !lmx_tokenizer_is_special(t, 11));
    CHECK_EQ_INT(lmx_tokenizer_vocab_size(t), 24);
    CHECK_EQ_INT(lmx_tokenizer_token_to_id(t, "hello", 5), 11);
    CHECK_EQ_INT(lmx_tokenizer_token_to_id(t, "<mask>", 6), 21);
    CHECK_EQ_INT(lmx_tokenizer_token_to_id(t, "nope", 4), -1);
    CHECK_EQ_STR(lmx_tokenizer_id_to_token(t, 12, NULL), "\xC4\xA0w");
    CHECK(lmx_tokenizer_id_to_token(t, 999, NULL) == NULL);
    CHECK(lmx_tokenizer_token_to_piece(t, 12, &text, &len) == LMX_OK);
    CHECK_EQ_STR(text, " w");
    free(text);
    const cJSON *cfg = lmx_tokenizer_config_json(t);
    CHECK(cfg && cJSON_IsString(cJSON_GetObjectItem(cfg, "chat_template")));
    /* invalid UTF-8 is refused with a clear error */
    int32_t *out;
    size_t n;
    CHECK(lmx_tokenizer_encode(t, "ab\xC3(", 4, false, &out, &n) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lmx_last_error_detail(), "offset 2") != NULL);
    /* NUL bytes are ordinary characters */
    CHECK(lmx_tokenizer_encode(t, "h\0h", 3, false, &out, &n) == LMX_OK);
    CHECK_EQ_INT(n, 2);
    free(out);
    /* streaming: an emoji split over byte-level tokens is held until complete */
    lmx_detok_stream *s;
    CHECK(lmx_detok_stream_create(t, true, &s) == LMX_OK);
    const char *p;
    size_t pl;
    lmx_detok_stream_feed(s, 20, &p, &pl);
    CHECK_EQ_INT(pl, 0);
    lmx_detok_stream_feed(s, 11, &p, &pl);
    CHECK_EQ_STR(p, "hello");
    lmx_detok_stream_feed(s, 12, &p, &pl);
    CHECK_EQ_STR(p, " w");
    lmx_detok_stream_flush(s, &p, &pl);
    CHECK_EQ_INT(pl, 0);
    lmx_detok_stream_destroy(s);
    lmx_tokenizer_destroy(t);
}

/* The BPE model read through cJSON (fallback) and through the fast scanner agree. */
static void test_bpe_parse_paths(void) {
    cJSON *j = cJSON_Parse(TINY);
    const cJSON *model = cJSON_GetObjectItem(j, "model");
    tok_bpe *a = NULL, *b = NULL;
    CHECK(tok_bpe_parse(model, NULL, 0, NULL, 0, &a) == LMX_OK);
    char *vocab = cJSON_PrintUnformatted(cJSON_GetObjectItem(model, "vocab"));
    char *merges = cJSON_PrintUnformatted(cJSON_GetObjectItem(model, "merges"));
    CHECK(tok_bpe_parse(model, vocab, strlen(vocab), merges, strlen(merges), &b) == LMX_OK);
    const char *words[] = {"hello", "\xC4\xA0world", "hhelloo", "llll", "xyz", "\xC3\xA9"};
    for (size_t i = 0; a && b && i < sizeof words / sizeof words[0]; i++) {
        tok_ids x = {0}, y = {0};
        CHECK(tok_bpe_encode_word(a, words[i], strlen(words[i]), &x) == LMX_OK);
        CHECK(tok_bpe_encode_word(b, words[i], strlen(words[i]), &y) == LMX_OK);
        CHECK(x.n == y.n && (x.n == 0 || memcmp(x.v, y.v, x.n * sizeof *x.v) == 0));
        tok_ids_free(&x);
        tok_ids_free(&y);
    }
    tok_ids w = {0};
    CHECK(tok_bpe_encode_word(b, "hello", 5, &w) == LMX_OK && w.n == 1 && w.v[0] == 11);
    w.n = 0;
    CHECK(tok_bpe_encode_word(b, "hello", 5, &w) == LMX_OK && w.n == 1 && w.v[0] == 11); /* cached */
    tok_ids_free(&w);
    free(vocab);
    free(merges);
    tok_bpe_free(a);
    tok_bpe_free(b);
    cJSON_Delete(j);
}

/* Cutting SentencePiece words before "▁" (a speed-up) must give exactly the uncut BPE result,
 * including around gemma3's one merge across such a point (">" + "▁</"). */
static void test_spm_cut_is_exact(void) {
    const char *names[] = {"gemma3", "llama2"};
    const char *parts[] = {"\xE2\x96\x81", "\xE2\x96\x81\xE2\x96\x81", ">", "</", "a", "the", "The", "ing", "\xC3\xA9",
                           "\xE4\xB8\xAD", "1", "23", ".", ",", "'", "\xF0\x9F\x98\x80", "<", "b", "div", "x>", "\n"};
    int tested = 0;
    for (int k = 0; k < 2; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", LMX_TOK_FIXTURES, names[k]);
        lmx_tokenizer *t;
        if (!lmx_fs_is_dir(dir) || lmx_tokenizer_load(dir, &t) != LMX_OK) continue;
        const tok_bpe *b = tok_tokenizer_bpe(t);
        uint32_t x = 12345;
        for (int r = 0; r < 300; r++) {
            tok_buf w = {0};
            int len = 3 + (int)(x % 40);
            for (int i = 0; i < len; i++) {
                x = x * 1103515245u + 12345u;
                const char *p = parts[(x >> 16) % (sizeof parts / sizeof parts[0])];
                tok_buf_append(&w, p, strlen(p));
            }
            tok_ids cut = {0}, whole = {0};
            CHECK(tok_bpe_encode_word(b, w.p, w.n, &cut) == LMX_OK);
            CHECK(tok_bpe_encode_piece(b, w.p, w.n, &whole) == LMX_OK);
            bool same = cut.n == whole.n && !memcmp(cut.v, whole.v, cut.n * sizeof *cut.v);
            CHECK_MSG(same, "%s: \"%s\"", names[k], w.p);
            tested++;
            tok_ids_free(&cut);
            tok_ids_free(&whole);
            tok_buf_free(&w);
        }
        lmx_tokenizer_destroy(t);
    }
    if (!tested) SKIP("gemma3/llama2 fixtures absent");
}

static void test_errors(void) {
    char dir[] = "/tmp/lmx_tok_errXXXXXX";
    if (!mkdtemp(dir)) return;
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    fputs("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", f);
    fclose(f);
    lmx_tokenizer *t = NULL;
    CHECK(lmx_tokenizer_load(dir, &t) == LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error_detail(), "tokenizer model type Unigram is not supported") != NULL);
    CHECK(t == NULL);
    f = fopen(path, "wb");
    fputs("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", f);
    fclose(f);
    CHECK(lmx_tokenizer_load(path, &t) == LMX_ERR_INVALID_MODEL_FORMAT); /* merge of unknown tokens */
    f = fopen(path, "wb");
    fputs("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,", f);
    fclose(f);
    CHECK(lmx_tokenizer_load(path, &t) == LMX_ERR_INVALID_MODEL_FORMAT);
    unlink(path);
    rmdir(dir);
    CHECK(lmx_tokenizer_load("/nonexistent/dir", &t) != LMX_OK);
    lmx_tokenizer_destroy(NULL);
    lmx_detok_stream_destroy(NULL);
}

/* ---- one tokenizer, many threads ---- */

typedef struct { const lmx_tokenizer *t; const char *text; const int32_t *want; size_t n_want; const char *want_text; int ok; } job;

static void *worker(void *arg) {
    job *j = arg;
    j->ok = 1;
    for (int r = 0; r < 20; r++) {
        int32_t *ids;
        size_t n;
        if (lmx_tokenizer_encode(j->t, j->text, strlen(j->text), false, &ids, &n) != LMX_OK) { j->ok = 0; break; }
        if (n != j->n_want || memcmp(ids, j->want, n * sizeof *ids)) j->ok = 0;
        char *back;
        size_t bl;
        if (lmx_tokenizer_decode(j->t, ids, n, true, &back, &bl) != LMX_OK || strcmp(back, j->want_text)) j->ok = 0;
        free(back);
        free(ids);
    }
    return NULL;
}

static void threads_on(lmx_tokenizer *t) {
    const char *texts[4] = {"hello world hello", "hello hello world", "world hello", "he ll o wor ld xyzzy qwerty"};
    int32_t *want[4];
    size_t nw[4];
    char *want_text[4];
    size_t wl;
    for (int i = 0; i < 4; i++) {
        CHECK(lmx_tokenizer_encode(t, texts[i], strlen(texts[i]), false, &want[i], &nw[i]) == LMX_OK);
        CHECK(lmx_tokenizer_decode(t, want[i], nw[i], true, &want_text[i], &wl) == LMX_OK);
    }
    pthread_t th[8];
    job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (job){t, texts[i % 4], want[i % 4], nw[i % 4], want_text[i % 4], 0};
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].ok);
    }
    for (int i = 0; i < 4; i++) {
        free(want[i]);
        free(want_text[i]);
    }
}

/* Concurrent encode/decode on one tokenizer (the BPE word cache is the only shared mutable state;
 * qwen3 exercises it, llama3 mostly takes the ignore_merges path). Run under -DLMX_TSAN=ON too. */
static void test_threads(void) {
    lmx_tokenizer *t = load_tiny();
    if (t) threads_on(t);
    lmx_tokenizer_destroy(t);
    const char *names[] = {"qwen3", "llama3"};
    for (int k = 0; k < 2; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", LMX_TOK_FIXTURES, names[k]);
        if (!lmx_fs_is_dir(dir) || lmx_tokenizer_load(dir, &t) != LMX_OK) continue;
        threads_on(t);
        lmx_tokenizer_destroy(t);
    }
}

int main(void) {
    RUN(test_utf8);
    RUN(test_normalizers);
    RUN(test_split_behaviours);
    RUN(test_pretokenizers);
    RUN(test_decoders);
    RUN(test_tiny_tokenizer);
    RUN(test_bpe_parse_paths);
    RUN(test_spm_cut_is_exact);
    RUN(test_errors);
    RUN(test_threads);
    return lmx_test_summary();
}
