/* tokenizer.h — Hugging Face tokenizer.json (BPE) encode/decode, identical to `tokenizers` 0.23,
 * plus a streaming detokenizer. Internal API of lmx (the runtime, generate loop, chat templates
 * and the CLI call it; it is not part of include/lmx.h).
 *
 * Ownership: lmx_tokenizer_load() returns an object freed with lmx_tokenizer_destroy() (NULL-safe).
 * Arrays/strings returned through `**out` are malloc'd and owned by the caller (free() or
 * lmx_free()). `const char *` returns point into the tokenizer and live as long as it does.
 *
 * Thread-safety: a loaded tokenizer is immutable; encode/decode/lookups may run concurrently from
 * any number of threads on one tokenizer. A detok stream belongs to one thread at a time.
 *
 * Supported: model BPE (byte-level and SentencePiece-style with byte_fallback); normalizers NFC,
 * NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, ByteLevel, Sequence;
 * pre-tokenizers Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation,
 * Sequence; post-processors TemplateProcessing, Bert/RobertaProcessing, ByteLevel, Sequence;
 * decoders ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence. Anything else
 * (Unigram, WordPiece, WordLevel models; other components) fails to load with LMX_ERR_UNSUPPORTED.
 * tokenizer.json "truncation"/"padding" are not applied (a warning is logged): encode returns every
 * token of the input. Inputs are limited to 1 GiB per encode call.
 */
#ifndef LMX_TOKENIZER_TOKENIZER_H
#define LMX_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lmx.h"

typedef struct lmx_tokenizer lmx_tokenizer;

/* Loads `path`: a directory holding tokenizer.json (and optionally tokenizer_config.json), or the
 * tokenizer.json file itself (tokenizer_config.json is then looked for beside it). */
lmx_status lmx_tokenizer_load(const char *path, lmx_tokenizer **out);
/* The same from memory: tokenizer.json text and optionally tokenizer_config.json text (NULL = none). */
lmx_status lmx_tokenizer_load_memory(const char *tokenizer_json, size_t len, const char *config_json, size_t config_len,
                                     lmx_tokenizer **out);
void lmx_tokenizer_destroy(lmx_tokenizer *tok);

/* Encodes UTF-8 text[0..len) (len may include NUL bytes). add_special applies the post-processor
 * (e.g. BOS), like HF add_special_tokens=True. Invalid UTF-8 -> LMX_ERR_INVALID_ARGUMENT with the
 * byte offset in the detail. *ids is malloc'd (caller frees; non-NULL even when *n_ids == 0). */
lmx_status lmx_tokenizer_encode(const lmx_tokenizer *tok, const char *text, size_t len, bool add_special,
                                int32_t **ids, size_t *n_ids);

/* Decodes ids like HF decode(ids, skip_special_tokens): unknown ids are ignored. *text is malloc'd,
 * NUL-terminated, always valid UTF-8; *len excludes the NUL (len may be NULL). */
lmx_status lmx_tokenizer_decode(const lmx_tokenizer *tok, const int32_t *ids, size_t n_ids, bool skip_special,
                                char **text, size_t *len);

/* Raw token string of id as stored in tokenizer.json (e.g. "Ġthe", "▁the", "<0x0A>", "<|eot_id|>"),
 * added tokens first; NULL when the id has none. */
const char *lmx_tokenizer_id_to_token(const lmx_tokenizer *tok, int32_t id, size_t *len);
/* Id of a raw token string (added tokens first, then the model vocab); -1 if none. */
int32_t lmx_tokenizer_token_to_id(const lmx_tokenizer *tok, const char *token, size_t len);
/* Text of one token alone, i.e. decode([id], skip_special=false) (malloc'd, caller frees). */
lmx_status lmx_tokenizer_token_to_piece(const lmx_tokenizer *tok, int32_t id, char **text, size_t *len);

/* 1 + the largest id of the model vocab or the added tokens. */
size_t lmx_tokenizer_vocab_size(const lmx_tokenizer *tok);
/* True for added tokens marked "special" (those decode(skip_special) drops). */
bool lmx_tokenizer_is_special(const lmx_tokenizer *tok, int32_t id);

/* Special tokens named by tokenizer_config.json (bos_token, eos_token, pad_token, unk_token, as a
 * string or {"content": ...}); the model's unk_token is the fallback for unk. -1 / NULL if none. */
typedef enum { LMX_TOK_BOS, LMX_TOK_EOS, LMX_TOK_PAD, LMX_TOK_UNK, LMX_TOK_SPECIAL_COUNT } lmx_tok_special;
int32_t lmx_tokenizer_special_id(const lmx_tokenizer *tok, lmx_tok_special which);
const char *lmx_tokenizer_special_token(const lmx_tokenizer *tok, lmx_tok_special which);

/* tokenizer_config.json as parsed (cJSON *; NULL if the file was absent) for the chat-template
 * engine: chat_template, add_bos_token, clean_up_tokenization_spaces, ... Read-only. */
const void *lmx_tokenizer_config_json(const lmx_tokenizer *tok);

/* ---- streaming detokenizer ----
 * Feed ids one at a time; each call returns the text that became final (complete UTF-8; a partial
 * multi-byte character or an unfinished <0xXX> byte run is held back). After flush(), the
 * concatenation of every returned piece equals lmx_tokenizer_decode(all ids, skip_special).
 * The returned pointer is valid until the next call on the same stream. */
typedef struct lmx_detok_stream lmx_detok_stream;
lmx_status lmx_detok_stream_create(const lmx_tokenizer *tok, bool skip_special, lmx_detok_stream **out);
lmx_status lmx_detok_stream_feed(lmx_detok_stream *s, int32_t id, const char **piece, size_t *len);
lmx_status lmx_detok_stream_flush(lmx_detok_stream *s, const char **piece, size_t *len);
/* Forgets all state (as if newly created). */
void lmx_detok_stream_reset(lmx_detok_stream *s);
void lmx_detok_stream_destroy(lmx_detok_stream *s);

#endif
