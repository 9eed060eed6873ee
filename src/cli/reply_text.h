/* reply_text.h — the text of a streamed reply, shared by `lmx generate` and `lmx run`:
 * lmx_cli_reply_piece is an lmx_token_fn that writes each piece to stdout as it arrives (when
 * `stream`) and keeps the whole text. The struct owns `p` (malloc'd; the caller frees it).
 * Not thread-safe: one generation at a time per struct. */
#ifndef LMX_CLI_REPLY_TEXT_H
#define LMX_CLI_REPLY_TEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct lmx_cli_reply {
    char *p;          /* NUL-terminated; NULL until the first piece */
    size_t len, cap;
    bool stream;      /* also write each piece to stdout (flushed at once) */
    bool oom;         /* a piece could not be kept; the generation was cancelled */
} lmx_cli_reply;

/* Returns 0 to go on, 1 (cancel) when the text cannot grow. `user` is an lmx_cli_reply. */
int lmx_cli_reply_piece(const char *text, size_t len, void *user);

#endif
