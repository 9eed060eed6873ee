/* tok_internal.h — shared internals of the tokenizer module (not for use outside src/tokenizer/).
 *
 * The loaded tokenizer is immutable after lmx_tokenizer_load(); every component below is therefore
 * read-only at encode/decode time and safe to share between threads. Per-call state (buffers,
 * PCRE2 match data) lives in the caller's stack frame / tok_buf objects.
 */
#ifndef LMX_TOKENIZER_TOK_INTERNAL_H
#define LMX_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lmx.h"

/* ---------------------------------------------------------------- growable buffers */
typedef struct tok_buf {
    char *p;    /* [cap] bytes, p[n] == '\0' when n < cap */
    size_t n, cap;
} tok_buf;

typedef struct tok_ids {
    int32_t *v; /* [cap] token ids */
    size_t n, cap;
} tok_ids;

bool tok_buf_reserve(tok_buf *b, size_t extra);
bool tok_buf_append(tok_buf *b, const char *s, size_t n);
bool tok_buf_putc(tok_buf *b, char c);
void tok_buf_free(tok_buf *b);
bool tok_ids_push(tok_ids *v, int32_t id);
bool tok_ids_append(tok_ids *v, const int32_t *ids, size_t n);
void tok_ids_free(tok_ids *v);

/* ---------------------------------------------------------------- UTF-8 helpers (utf8.c) */
/* Length of the UTF-8 sequence led by byte c (1 for invalid lead bytes). */
static inline int tok_utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}
/* Returns the byte offset of the first invalid sequence, or len if s[0..len) is valid UTF-8. */
size_t tok_utf8_validate(const char *s, size_t len);
/* Decodes one code point at s (valid UTF-8 assumed); *adv receives its byte length. */
uint32_t tok_utf8_decode(const char *s, size_t len, int *adv);
/* Encodes cp into out (4 bytes room); returns the length. */
int tok_utf8_encode(uint32_t cp, char *out);
/* Lossy UTF-8 (Rust String::from_utf8_lossy): appends s with each maximal invalid subpart replaced
 * by U+FFFD. If hold_tail is set, a trailing incomplete-but-valid prefix is not consumed; the
 * number of bytes consumed is returned. */
size_t tok_utf8_lossy_append(tok_buf *out, const unsigned char *s, size_t len, bool hold_tail);
/* Unicode White_Space property (Rust char::is_whitespace / Oniguruma \s). */
bool tok_is_whitespace(uint32_t cp);

/* ---------------------------------------------------------------- vocabulary (vocab.c) */
/* A string -> id hash map with an id -> string table. Strings live in one arena. */
typedef struct tok_vslot { uint32_t tag; int32_t id; uint32_t off, len; } tok_vslot;
typedef struct tok_vocab {
    char *arena;          /* [arena_n] bytes: all strings, each NUL-terminated */
    size_t arena_n, arena_cap;
    uint32_t *str_off;    /* [n_ids] offset of the string of id i in arena, UINT32_MAX if none */
    uint32_t *str_len;    /* [n_ids] */
    size_t n_ids;         /* 1 + largest id */
    struct tok_vslot *slots; /* [n_slots] open addressing: (hash tag, id or -1) */
    size_t n_slots;       /* power of two */
    size_t count;
} tok_vocab;

/* Largest token id accepted from tokenizer.json: tables are indexed by id, so an id of 2e9 would
 * make the loader allocate gigabytes; real vocabularies stay below 2^20. */
#define TOK_MAX_ID ((1 << 24) - 1)

lmx_status tok_vocab_init(tok_vocab *v, size_t expected);
/* Adds s -> id, id in [0, TOK_MAX_ID] (overwrites the id's string if it had one; the map keeps the first id for a string). */
lmx_status tok_vocab_add(tok_vocab *v, const char *s, size_t n, int32_t id);
lmx_status tok_vocab_add_h(tok_vocab *v, const char *s, size_t n, int32_t id, uint64_t hash);
int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t n); /* -1 if absent */
/* The same with a precomputed tok_hash_bytes(s, n); prefetch warms the slot for a later find. */
int32_t tok_vocab_find_h(const tok_vocab *v, const char *s, size_t n, uint64_t hash);
void tok_vocab_prefetch(const tok_vocab *v, uint64_t hash);
const char *tok_vocab_str(const tok_vocab *v, int32_t id, size_t *len); /* NULL if none */
void tok_vocab_free(tok_vocab *v);
uint64_t tok_hash_bytes(const void *p, size_t n);

/* ---------------------------------------------------------------- GPT-2 byte map (bytelevel.c) */
/* UTF-8 of the printable stand-in for byte b (1 or 2 bytes). */
const char *tok_bytelevel_char(unsigned char b, int *len);
/* Byte for code point cp, or -1 if cp is not in the map. */
int tok_bytelevel_byte(uint32_t cp);
/* Appends the byte-level form of s (every byte replaced by its stand-in). */
bool tok_bytelevel_encode(tok_buf *out, const char *s, size_t n);

/* ---------------------------------------------------------------- regex (pretokenizer.c) */
typedef struct tok_regex {
    pcre2_code *code;
    bool jit;
} tok_regex;
/* Compiles an Oniguruma-style pattern (as in tokenizer.json) for PCRE2 with UTF+UCP and JIT;
 * \s and \S are rewritten to Oniguruma's Unicode White_Space set. */
lmx_status tok_regex_compile(tok_regex *re, const char *pattern, bool literal);
void tok_regex_free(tok_regex *re);
/* Finds the next match at or after `start`: 1 and the span, 0 when none, -1 on a matching error
 * (detail set; e.g. a resource limit — never silently treated as "no match"). */
int tok_regex_next(const tok_regex *re, pcre2_match_data *md, const char *s, size_t n, size_t start,
                   size_t *ms, size_t *me);

/* ---------------------------------------------------------------- normalizers (normalizer.c) */
typedef struct tok_normalizer tok_normalizer;
lmx_status tok_normalizer_parse(const cJSON *j, tok_normalizer **out);
void tok_normalizer_free(tok_normalizer *n);
/* Normalizes s[0..n) into out (cleared first). */
lmx_status tok_normalizer_apply(const tok_normalizer *nz, const char *s, size_t n, tok_buf *out);

/* ---------------------------------------------------------------- pre-tokenizers (pretokenizer.c) */
/* A list of spans over one string buffer. Each pre-tokenizer step rewrites the list (and may
 * rewrite the buffer, e.g. ByteLevel maps bytes and Metaspace replaces spaces). */
typedef struct tok_span { uint32_t s, e; } tok_span;
typedef struct tok_pieces {
    tok_buf text;       /* concatenated piece texts */
    tok_span *sp;       /* [cap] pieces (offsets into text) */
    size_t n, cap;
} tok_pieces;
void tok_pieces_free(tok_pieces *p);

typedef struct tok_pretok tok_pretok;
lmx_status tok_pretok_parse(const cJSON *j, tok_pretok **out);
void tok_pretok_free(tok_pretok *p);
/* Pre-tokenizes s[0..n) (one normalized segment; at_start is true when it begins at offset 0 of
 * the original input, for Metaspace prepend_scheme "first") into pieces (cleared first). */
lmx_status tok_pretok_apply(const tok_pretok *p, const char *s, size_t n, bool at_start, tok_pieces *out);

/* ---------------------------------------------------------------- BPE model (bpe.c) */
typedef struct tok_bpe tok_bpe;
/* raw_vocab / raw_merges: optional spans of tokenizer.json holding model.vocab / model.merges
 * (read with json_scan.h instead of the cJSON tree; len 0 = use the cJSON members). */
lmx_status tok_bpe_parse(const cJSON *model, const char *raw_vocab, size_t raw_vocab_len, const char *raw_merges,
                         size_t raw_merges_len, tok_bpe **out);
void tok_bpe_free(tok_bpe *b);
const tok_vocab *tok_bpe_vocab(const tok_bpe *b);
int32_t tok_bpe_unk_id(const tok_bpe *b);
/* Appends the ids of one pre-token word. */
lmx_status tok_bpe_encode_piece(const tok_bpe *b, const char *w, size_t n, tok_ids *out); /* never cut at "▁" */
lmx_status tok_bpe_encode_word(const tok_bpe *b, const char *w, size_t n, tok_ids *out);

/* ---------------------------------------------------------------- added tokens (added_tokens.c) */
typedef struct tok_added_token {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tok_added_token;

typedef struct tok_added tok_added;
/* One split of the input: either an added token (id >= 0) or a text span [s, e). */
typedef struct tok_split { int32_t id; uint32_t s, e; } tok_split;
typedef struct tok_splits { tok_split *v; size_t n, cap; } tok_splits;
void tok_splits_free(tok_splits *s);

lmx_status tok_added_parse(const cJSON *arr, const tok_normalizer *nz, tok_added **out);
void tok_added_free(tok_added *a);
size_t tok_added_count(const tok_added *a);
const tok_added_token *tok_added_get(const tok_added *a, size_t i);
const tok_added_token *tok_added_by_id(const tok_added *a, int32_t id);
int32_t tok_added_find(const tok_added *a, const char *s, size_t n); /* id or -1 */
/* Splits s[0..n) on the added tokens whose `normalized` flag equals `normalized_set`. */
lmx_status tok_added_split(const tok_added *a, bool normalized_set, const char *s, size_t n, tok_splits *out);

/* ---------------------------------------------------------------- post-processor (postprocess.c) */
typedef struct tok_post tok_post;
lmx_status tok_post_parse(const cJSON *j, tok_post **out);
void tok_post_free(tok_post *p);
/* Wraps ids (single sequence) with the special tokens of the template; only called when
 * add_special_tokens is requested. */
lmx_status tok_post_apply(const tok_post *p, const tok_ids *in, tok_ids *out);

/* ---------------------------------------------------------------- decoders (decoder.c) */
/* The decoder chain runs as a stream: tokens go in one at a time, text comes out as soon as it
 * can no longer change. decode(ids) == concatenation of everything the stream emits. */
typedef struct tok_decoder tok_decoder;
lmx_status tok_decoder_parse(const cJSON *j, tok_decoder **out);
void tok_decoder_free(tok_decoder *d);

typedef struct tok_dstate tok_dstate;
tok_dstate *tok_dstate_create(const tok_decoder *d);
void tok_dstate_destroy(tok_dstate *st);
/* Pushes one token string; appends the now-final text to out. */
lmx_status tok_dstate_push(tok_dstate *st, const char *tok, size_t n, tok_buf *out);
/* Ends the stream; appends all remaining text to out. */
lmx_status tok_dstate_finish(tok_dstate *st, tok_buf *out);

/* ---------------------------------------------------------------- tokenizer (tokenizer.c) */
struct lmx_tokenizer;
const tok_decoder *tok_tokenizer_decoder(const struct lmx_tokenizer *t);
const tok_bpe *tok_tokenizer_bpe(const struct lmx_tokenizer *t);
/* Token string of id for decode, NULL when unknown or (skip_special) special. */
const char *tok_tokenizer_decode_token(const struct lmx_tokenizer *t, int32_t id, bool skip_special, size_t *len);

#endif
