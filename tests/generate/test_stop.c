/* test_stop.c — stop strings split across pieces, hold-back, flush. */
#include "lmx_test.h"
#include "generate/stop.h"

#include <stdlib.h>

/* Feeds pieces; collects the emitted text; returns whether a stop matched. */
static bool feed(lmx_stop *s, const char *const *pieces, int n, char *out, size_t cap) {
    size_t len = 0;
    bool matched = false;
    out[0] = '\0';
    for (int i = 0; i < n && !matched; i++) {
        const char *o;
        size_t ol;
        CHECK(lmx_stop_push(s, pieces[i], strlen(pieces[i]), &o, &ol, &matched) == LMX_OK);
        if (len + ol < cap) {
            memcpy(out + len, o, ol);
            len += ol;
            out[len] = '\0';
        }
    }
    if (!matched) {
        const char *o;
        size_t ol;
        lmx_stop_flush(s, &o, &ol);
        if (len + ol < cap) {
            memcpy(out + len, o, ol);
            len += ol;
            out[len] = '\0';
        }
    }
    return matched;
}

static void test_split_across_pieces(void) {
    const char *stops[] = {"</end>", "STOP"};
    lmx_stop *s;
    CHECK(lmx_stop_create(stops, 2, &s) == LMX_OK);
    const char *pieces[] = {"Hello ", "wor", "ld</", "en", "d> more", "text"};
    char out[256];
    CHECK(feed(s, pieces, 6, out, sizeof out));
    CHECK_EQ_STR(out, "Hello world");
    lmx_stop_destroy(s);
    /* one byte per piece */
    CHECK(lmx_stop_create(stops, 2, &s) == LMX_OK);
    const char *bytes[] = {"a", "S", "T", "O", "P", "b"};
    CHECK(feed(s, bytes, 6, out, sizeof out));
    CHECK_EQ_STR(out, "a");
    lmx_stop_destroy(s);
}

static void test_holdback(void) {
    const char *stops[] = {"</end>"};
    lmx_stop *s;
    CHECK(lmx_stop_create(stops, 1, &s) == LMX_OK);
    const char *o;
    size_t ol;
    bool m;
    CHECK(lmx_stop_push(s, "abc<", 4, &o, &ol, &m) == LMX_OK);
    CHECK(!m && ol == 3 && memcmp(o, "abc", 3) == 0); /* "<" could start "</end>" */
    CHECK_EQ_INT(lmx_stop_pending(s), 1);
    CHECK(lmx_stop_push(s, "/e", 2, &o, &ol, &m) == LMX_OK);
    CHECK(!m && ol == 0);
    CHECK_EQ_INT(lmx_stop_pending(s), 3);
    CHECK(lmx_stop_push(s, "x", 1, &o, &ol, &m) == LMX_OK); /* resolved: not a stop */
    CHECK(!m && ol == 4 && memcmp(o, "</ex", 4) == 0);
    CHECK_EQ_INT(lmx_stop_pending(s), 0);
    CHECK(lmx_stop_push(s, "y</en", 5, &o, &ol, &m) == LMX_OK);
    CHECK(!m && ol == 1 && o[0] == 'y');
    lmx_stop_flush(s, &o, &ol); /* end of generation: the held text is released */
    CHECK(ol == 4 && memcmp(o, "</en", 4) == 0);
    lmx_stop_destroy(s);
}

static void test_overlapping_and_earliest(void) {
    /* "aab" with the text "aaab": the tail "aa" must stay held while "aab" is still possible */
    const char *stops[] = {"aab"};
    lmx_stop *s;
    CHECK(lmx_stop_create(stops, 1, &s) == LMX_OK);
    const char *pieces[] = {"xa", "a", "a", "b"};
    char out[64];
    CHECK(feed(s, pieces, 4, out, sizeof out));
    CHECK_EQ_STR(out, "xa");
    lmx_stop_destroy(s);
    /* two stops in one piece: the earlier one wins */
    const char *two[] = {"World", "lo"};
    CHECK(lmx_stop_create(two, 2, &s) == LMX_OK);
    const char *p2[] = {"Hello World"};
    CHECK(feed(s, p2, 1, out, sizeof out));
    CHECK_EQ_STR(out, "Hel");
    lmx_stop_destroy(s);
}

static void test_no_stops_and_empty(void) {
    const char *stops[] = {""};
    lmx_stop *s;
    CHECK(lmx_stop_create(stops, 1, &s) == LMX_OK); /* empty strings are ignored */
    const char *pieces[] = {"ab", "", "cd"};
    char out[64];
    CHECK(!feed(s, pieces, 3, out, sizeof out));
    CHECK_EQ_STR(out, "abcd");
    lmx_stop_destroy(s);
    CHECK(lmx_stop_create(NULL, 0, &s) == LMX_OK);
    CHECK(!feed(s, pieces, 3, out, sizeof out));
    CHECK_EQ_STR(out, "abcd");
    lmx_stop_destroy(s);
    const char *bad[] = {NULL};
    CHECK(lmx_stop_create(bad, 1, &s) == LMX_ERR_INVALID_ARGUMENT);
    CHECK(lmx_stop_create(NULL, 2, &s) == LMX_ERR_INVALID_ARGUMENT);
    lmx_stop_destroy(NULL);
}

static void test_after_match_nothing(void) {
    const char *stops[] = {"!"};
    lmx_stop *s;
    CHECK(lmx_stop_create(stops, 1, &s) == LMX_OK);
    const char *o;
    size_t ol;
    bool m;
    CHECK(lmx_stop_push(s, "hi!there", 8, &o, &ol, &m) == LMX_OK);
    CHECK(m && ol == 2 && memcmp(o, "hi", 2) == 0);
    CHECK(lmx_stop_push(s, "more", 4, &o, &ol, &m) == LMX_OK);
    CHECK(m && ol == 0);
    lmx_stop_flush(s, &o, &ol);
    CHECK(ol == 0);
    lmx_stop_destroy(s);
}

static void test_long_piece_grows(void) {
    const char *stops[] = {"END"};
    lmx_stop *s;
    CHECK(lmx_stop_create(stops, 1, &s) == LMX_OK);
    char big[5000];
    memset(big, 'x', sizeof big);
    big[sizeof big - 1] = '\0';
    big[4000] = 'E';
    big[4001] = 'N';
    big[4002] = 'D';
    const char *o;
    size_t ol;
    bool m;
    CHECK(lmx_stop_push(s, big, strlen(big), &o, &ol, &m) == LMX_OK);
    CHECK(m && ol == 4000);
    lmx_stop_destroy(s);
}

int main(void) {
    RUN(test_split_across_pieces);
    RUN(test_holdback);
    RUN(test_overlapping_and_earliest);
    RUN(test_no_stops_and_empty);
    RUN(test_after_match_nothing);
    RUN(test_long_piece_grows);
    return lmx_test_summary();
}
