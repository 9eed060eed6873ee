/* test_chat_budget.c — the render's work budget (issue 15 items 4 and 13): a template that builds,
 * copies or compares without end stops quickly with LMX_ERR_INVALID_MODEL_FORMAT naming the
 * template, the limit and the field that raises it; a real template (a Gemma-style backward scan
 * per message, quadratic in the conversation) still renders 10,000 messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmx_test.h"
#include "template/chat_template.h"

#define FIXTURE LMX_SOURCE_DIR "/tests/fixtures/chat/gemma_style_backscan.jinja"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 60 MB concatenated a million times: 60 TB of copying without the budget (days). */
static void test_bomb(void) {
    const char *src = "{% set s='a'*60000000 %}{% for i in range(1000) %}{% for j in range(999) %}"
                      "{% if s ~ 'b' %}{% endif %}{% endfor %}{% endfor %}";
    lmx_chat_template *t = NULL;
    CHECK_EQ_INT(lmx_chat_template_create(src, &t), LMX_OK);
    CHECK_EQ_INT(lmx_chat_template_set_name(t, "models/bomb"), LMX_OK);
    double t0 = now_s();
    char *out = NULL;
    CHECK_EQ_INT(lmx_chat_template_render_json(t, "{}", 2, &out, NULL), LMX_ERR_INVALID_MODEL_FORMAT);
    double dt = now_s() - t0;
    const char *d = lmx_last_error_detail();
    CHECK_MSG(strstr(d, "models/bomb") && strstr(d, "bytes built, copied or compared") && strstr(d, "max_work_bytes"),
              "detail: %s", d);
    CHECK_MSG(dt < 30.0, "the bomb took %.1f s", dt);
    printf("bomb stopped after %.2f s: %s\n", dt, d);
    CHECK(out == NULL);
    /* the same work within a raised budget renders */
    lmx_chat_template_destroy(t);
    CHECK_EQ_INT(lmx_chat_template_create("{% set s='a'*1000000 %}{% for i in range(40) %}{% if s ~ 'b' %}x{% endif %}{% endfor %}", &t), LMX_OK);
    lmx_chat_template_render_options o = {.limits = {.max_work_bytes = 20000000}};
    CHECK_EQ_INT(lmx_chat_template_render_opts(t, "{}", 2, &o, &out, NULL), LMX_ERR_INVALID_MODEL_FORMAT);
    o.limits.max_work_bytes = 100000000;
    CHECK_EQ_INT(lmx_chat_template_render_opts(t, "{}", 2, &o, &out, NULL), LMX_OK);
    CHECK_EQ_INT(strlen(out), 40);
    free(out);
    lmx_chat_template_destroy(t);
}

/* comparisons and searches of long strings, sorting and list copies are charged too */
static void test_compare_and_search(void) {
    const char *srcs[] = {
        "{% set s='a'*10000000 %}{% set u='a'*10000000 %}{% for i in range(100000) %}{% if s == u %}{% endif %}{% endfor %}",
        "{% set s='a'*10000000 %}{% for i in range(100000) %}{% if 'b' in s %}{% endif %}{% endfor %}",
        "{% set s='a'*10000000 %}{% for i in range(100000) %}{% set t = s[1:] %}{% endfor %}",
        /* list work: sorting, unique, copies and range() of 100,000 elements per iteration */
        "{% set big = range(100000)|list %}{% for i in range(100000) %}{% set t = big|sort %}{% endfor %}",
        "{% set big = range(3000)|list %}{% for i in range(100000) %}{% set t = big|unique|list %}{% endfor %}",
        "{% set big = range(100000)|list %}{% for i in range(100000) %}{% set t = big|reverse|list %}{% endfor %}",
        "{% for i in range(100000) %}{% set t = range(100000) %}{% endfor %}",
    };
    for (size_t i = 0; i < sizeof srcs / sizeof *srcs; i++) {
        lmx_chat_template *t = NULL;
        CHECK_EQ_INT(lmx_chat_template_create(srcs[i], &t), LMX_OK);
        char *out = NULL;
        CHECK_EQ_INT(lmx_chat_template_render_json(t, "{}", 2, &out, NULL), LMX_ERR_INVALID_MODEL_FORMAT);
        CHECK_MSG(strstr(lmx_last_error_detail(), "max_work_bytes") != NULL, "%s", lmx_last_error_detail());
        lmx_chat_template_destroy(t);
    }
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

static size_t count(const char *s, const char *needle) {
    size_t n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* 10,000 messages through a backward scan per message: 50 million loop iterations, far under the
 * default budget (the old 1 M-iteration cap stopped it at 1,413 messages). */
static void test_long_conversation(void) {
    char *src = read_text(FIXTURE);
    CHECK_MSG(src != NULL, "cannot read %s", FIXTURE);
    if (!src) return;
    lmx_chat_template *t = NULL;
    CHECK_EQ_INT(lmx_chat_template_create(src, &t), LMX_OK);
#if defined(__SANITIZE_ADDRESS__)
    enum { N = 3000 }; /* ASan makes it ~20x slower; the Release build runs the full 10,000 */
#else
    enum { N = 10000 };
#endif
    size_t cap = (size_t)N * 100 + 200, p = 0;
    char *ctx = malloc(cap);
    p += (size_t)snprintf(ctx + p, cap - p, "{\"bos_token\":\"<bos>\",\"add_generation_prompt\":true,\"messages\":["
                                            "{\"role\":\"system\",\"content\":\"Be brief.\"}");
    for (int i = 0; i < N; i++)
        p += (size_t)snprintf(ctx + p, cap - p, ",{\"role\":\"%s\",\"content\":\" message %d \"}", i % 2 ? "assistant" : "user", i);
    p += (size_t)snprintf(ctx + p, cap - p, "]}");
    double t0 = now_s();
    clock_t cpu0 = clock();
    char *out = NULL;
    size_t n = 0;
    lmx_status st = lmx_chat_template_render_json(t, ctx, p, &out, &n);
    double dt = now_s() - t0, cpu = (double)(clock() - cpu0) / CLOCKS_PER_SEC;
    CHECK_MSG(st == LMX_OK, "%s", lmx_last_error_detail());
    printf("%d messages rendered in %.2f s (%.2f s CPU, %zu bytes)\n", N, dt, cpu, n);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
    CHECK_MSG(cpu < 15.0, "10,000 messages took %.1f s of CPU (about 3 s expected in a Release build)", cpu);
#endif
    if (out) {
        CHECK(strncmp(out, "<bos><start_of_turn>user\nBe brief.\n\nmessage 0<end_of_turn>\n", 59) == 0);
        CHECK_EQ_INT(count(out, "<start_of_turn>"), N + 1);
        CHECK_EQ_INT(count(out, "<start_of_turn>model\n"), N / 2 + 1);
        char last[96];
        snprintf(last, sizeof last, "<start_of_turn>model\nmessage %d<end_of_turn>\n<start_of_turn>model\n", N - 1);
        CHECK(strstr(out, last) != NULL);
    }
    free(out);
    free(ctx);
    free(src);
    lmx_chat_template_destroy(t);
}

int main(void) {
    RUN(test_bomb);
    RUN(test_compare_and_search);
    RUN(test_long_conversation);
    return lmx_test_summary();
}
