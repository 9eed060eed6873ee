/* bytelevel.c — the GPT-2 byte <-> printable-unicode map used by ByteLevel pre-tokenizer/decoder.
 * Bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves; the other 68 bytes map, in
 * increasing order, to U+0100, U+0101, ... The tables are computed at compile time as constants. */
#include "tokenizer/tok_internal.h"

static bool is_self(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

static uint32_t byte_cp(unsigned b) {
    if (is_self(b)) return b;
    unsigned k = 0;
    for (unsigned i = 0; i < b; i++)
        if (!is_self(i)) k++;
    return 0x100 + k;
}

/* The tables are filled once under pthread_once and are constant afterwards. */
#include <pthread.h>
static char g_utf8[256][2];
static int g_len[256];
static int16_t g_rev[0x200];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
    for (int i = 0; i < 0x200; i++) g_rev[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = byte_cp(b);
        char tmp[4];
        g_len[b] = tok_utf8_encode(cp, tmp);
        g_utf8[b][0] = tmp[0];
        g_utf8[b][1] = tmp[1];
        g_rev[cp] = (int16_t)b;
    }
}

const char *tok_bytelevel_char(unsigned char b, int *len) {
    pthread_once(&g_once, init_tables);
    *len = g_len[b];
    return g_utf8[b];
}

int tok_bytelevel_byte(uint32_t cp) {
    pthread_once(&g_once, init_tables);
    return cp < 0x200 ? g_rev[cp] : -1;
}

bool tok_bytelevel_encode(tok_buf *out, const char *s, size_t n) {
    pthread_once(&g_once, init_tables);
    if (!tok_buf_reserve(out, 2 * n)) return false;
    char *o = out->p + out->n;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        *o++ = g_utf8[b][0];
        if (g_len[b] == 2) *o++ = g_utf8[b][1];
    }
    out->n = (size_t)(o - out->p);
    out->p[out->n] = '\0';
    return true;
}
