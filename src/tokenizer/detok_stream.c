/* detok_stream.c — the streaming detokenizer: ids go in one at a time, text comes out as soon as
 * it is final. It runs the tokenizer's decoder pipeline (decoder.c) incrementally, so the pieces
 * concatenate exactly to lmx_tokenizer_decode(all ids): a trailing incomplete UTF-8 sequence
 * (ByteLevel) or an unfinished <0xXX> run (ByteFallback) is held back, and SentencePiece's leading
 * space (Strip after Fuse, Metaspace on the first token) is handled the way decode handles it.
 * One stream is used by one thread at a time; the tokenizer it reads is shared and immutable. */
#include "tokenizer/tokenizer.h"
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>

struct lmx_detok_stream {
    const lmx_tokenizer *t;
    bool skip_special;
    tok_dstate *ds;
    tok_buf out;
};

lmx_status lmx_detok_stream_create(const lmx_tokenizer *t, bool skip_special, lmx_detok_stream **out) {
    if (!t || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_detok_stream_create: NULL argument");
    lmx_detok_stream *s = calloc(1, sizeof *s);
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "detok stream");
    s->t = t;
    s->skip_special = skip_special;
    s->ds = tok_dstate_create(tok_tokenizer_decoder(t));
    if (!s->ds || !tok_buf_reserve(&s->out, 256)) {
        lmx_detok_stream_destroy(s);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "detok stream");
    }
    *out = s;
    return LMX_OK;
}

lmx_status lmx_detok_stream_feed(lmx_detok_stream *s, int32_t id, const char **piece, size_t *len) {
    s->out.n = 0;
    s->out.p[0] = '\0';
    size_t tl;
    const char *str = tok_tokenizer_decode_token(s->t, id, s->skip_special, &tl);
    lmx_status st = str ? tok_dstate_push(s->ds, str, tl, &s->out) : LMX_OK;
    *piece = s->out.p;
    if (len) *len = s->out.n;
    return st;
}

lmx_status lmx_detok_stream_flush(lmx_detok_stream *s, const char **piece, size_t *len) {
    s->out.n = 0;
    s->out.p[0] = '\0';
    lmx_status st = tok_dstate_finish(s->ds, &s->out);
    *piece = s->out.p;
    if (len) *len = s->out.n;
    lmx_detok_stream_reset(s);
    return st;
}

void lmx_detok_stream_reset(lmx_detok_stream *s) {
    if (!s) return;
    tok_dstate *fresh = tok_dstate_create(tok_tokenizer_decoder(s->t));
    if (fresh) {
        tok_dstate_destroy(s->ds);
        s->ds = fresh;
    }
}

void lmx_detok_stream_destroy(lmx_detok_stream *s) {
    if (!s) return;
    tok_dstate_destroy(s->ds);
    tok_buf_free(&s->out);
    free(s);
}
