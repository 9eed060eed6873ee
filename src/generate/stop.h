/* stop.h — stop strings over streamed text.
 *
 * Text arrives in pieces (one per token, from the streaming detokenizer). A stop string may be
 * split across any number of pieces. lmx_stop_push returns the text that is safe to emit now:
 * everything before the first complete stop string (then *matched is set and the rest, stop string
 * included, is dropped), minus the longest tail that is still a prefix of some stop string — that
 * tail is held back until a later piece resolves it. lmx_stop_flush releases the held tail when the
 * generation ends for another reason. Empty stop strings are ignored. Precisely: after each piece,
 * if the text so far contains a complete stop string, the output is the text before the
 * earliest-starting complete occurrence (a longer stop string that began earlier but is not yet
 * complete does not delay the stop). fuzz/fuzz_stop.c checks this against a direct reference.
 *
 * Ownership: the matcher copies the stop strings. Text returned by push/flush points into the
 * matcher and is valid until its next call. Thread-safety: one thread at a time per matcher.
 * Memory: buffers grow only when a piece is longer than any seen before (not per token).
 */
#ifndef LMX_GENERATE_STOP_H
#define LMX_GENERATE_STOP_H

#include <stdbool.h>
#include <stddef.h>
#include "lmx.h"

typedef struct lmx_stop lmx_stop;

lmx_status lmx_stop_create(const char *const *stops, int n_stops, lmx_stop **out);
void lmx_stop_destroy(lmx_stop *s); /* NULL-safe */

/* Feeds one piece; *out and *out_len: the text to emit now (maybe empty). After a match, further
 * pushes emit nothing. */
lmx_status lmx_stop_push(lmx_stop *s, const char *text, size_t len, const char **out, size_t *out_len,
                         bool *matched);

/* End of generation without a match: the held-back text. */
void lmx_stop_flush(lmx_stop *s, const char **out, size_t *out_len);

/* Bytes held back now (for tests). */
size_t lmx_stop_pending(const lmx_stop *s);

#endif
