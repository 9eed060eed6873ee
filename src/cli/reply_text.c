/* reply_text.c — the streamed reply text of `lmx generate` and `lmx run` (see reply_text.h). */
#include "reply_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lmx_cli_reply_piece(const char *text, size_t len, void *user) {
    lmx_cli_reply *o = user;
    if (o->stream) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    if (o->len + len + 1 > o->cap) {
        size_t cap = (o->len + len + 1) * 2;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->oom = true;
            return 1;
        }
        o->p = np;
        o->cap = cap;
    }
    memcpy(o->p + o->len, text, len);
    o->len += len;
    o->p[o->len] = '\0';
    return 0;
}
