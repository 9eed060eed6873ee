/* fuzz_stop.c — differential fuzzing of the stop-string matcher: stop strings and a piece split
 * come from the input. Reference semantics: after each piece, if the text so far contains a
 * complete stop string, the output is the text before the earliest-starting complete occurrence;
 * otherwise, at the end, all of the text. The streamed output must equal it exactly. */
#include "generate/stop.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t i = 0;
    int n_stops = data[i++] % 4;
    char stops_buf[4][9];
    const char *stops[4];
    for (int k = 0; k < n_stops; k++) {
        size_t len = i < size ? data[i++] % 9 : 0;
        if (i + len > size) len = size - i;
        memcpy(stops_buf[k], data + i, len);
        stops_buf[k][len] = '\0';
        stops[k] = stops_buf[k];
        i += len;
    }
    lmx_stop *s;
    if (lmx_stop_create(stops, n_stops, &s) != LMX_OK) return 0;
    char *full = malloc(size + 1), *out = malloc(size + 1);
    size_t fl = 0, ol = 0;
    bool matched = false;
    size_t cut = (size_t)-1;
    while (i < size) {
        size_t len = data[i++] % 8;
        if (i + len > size) len = size - i;
        memcpy(full + fl, data + i, len);
        fl += len;
        const char *o;
        size_t on;
        if (!matched) {
            lmx_stop_push(s, (const char *)data + i, len, &o, &on, &matched);
            memcpy(out + ol, o, on);
            ol += on;
        }
        i += len;
        if (cut == (size_t)-1) { /* reference: earliest complete occurrence in the text so far */
            size_t best = fl;
            for (int k = 0; k < n_stops; k++) {
                size_t sl = strlen(stops[k]);
                if (!sl) continue;
                for (size_t p = 0; p + sl <= fl && p < best; p++)
                    if (memcmp(full + p, stops[k], sl) == 0) {
                        best = p;
                        break;
                    }
            }
            if (best < fl) cut = best;
        }
    }
    if (!matched) {
        const char *o;
        size_t on;
        lmx_stop_flush(s, &o, &on);
        memcpy(out + ol, o, on);
        ol += on;
    }
    bool ref_matched = cut != (size_t)-1;
    if (!ref_matched) cut = fl;
    if (ol != cut || memcmp(out, full, cut) != 0) abort();
    if (matched != ref_matched) abort();
    free(full);
    free(out);
    lmx_stop_destroy(s);
    return 0;
}
