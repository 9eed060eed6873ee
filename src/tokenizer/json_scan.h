/* json_scan.h — fast, allocation-light iteration over tokenizer.json's model.vocab ({"tok": id})
 * and model.merges (["a b", ...] or [["a", "b"], ...]) without building a cJSON tree.
 * Iterators are per call (not shared); strings they return live in the iterator's buffers until
 * the next call. */
#ifndef LMX_TOKENIZER_JSON_SCAN_H
#define LMX_TOKENIZER_JSON_SCAN_H

#include "tokenizer/tok_internal.h"

typedef struct { size_t off, len; } tok_jspan;

/* Finds the byte spans of the values of "model"."vocab" and "model"."merges" in a tokenizer.json
 * text (merges may be absent: len 0). Returns false when the layout is not recognised. */
bool tok_json_model_spans(const char *s, size_t n, tok_jspan *vocab, tok_jspan *merges);

typedef struct {
    const char *p, *e;
    tok_buf a, b;   /* decoded strings of the current entry (a = key / first, b = second) */
    bool done, err;
} tok_jiter;

/* s[0..n) is the value ({...} or [...]) to iterate. */
void tok_jiter_init(tok_jiter *it, const char *s, size_t n);
void tok_jiter_free(tok_jiter *it);
/* Next "key": number of an object: 1 = entry in it->a / *num, 0 = end, -1 = syntax error. */
int tok_jiter_vocab_next(tok_jiter *it, double *num);
/* Next merge: a string (it->a, *pair = false) or a 2-array of strings (it->a, it->b, *pair = true). */
int tok_jiter_merge_next(tok_jiter *it, bool *pair);

#endif
