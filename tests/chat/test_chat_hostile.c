/* test_chat_hostile.c — chat templates written to exhaust memory or time: each render must stop with
 * an error quickly (LMX_ERR_INVALID_MODEL_FORMAT when a limit stopped it), with little memory. */
#include <stdlib.h>
#include <string.h>

#include "lmx_test.h"
#include "template/chat_template.h"

static const char CTX[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";

static void expect_status(const char *src, lmx_status want, const char *detail) {
    lmx_chat_template *t = NULL;
    CHECK_MSG(lmx_chat_template_create(src, &t) == LMX_OK, "%s: %s", src, lmx_last_error_detail());
    if (!t) return;
    char *out = NULL;
    lmx_status st = lmx_chat_template_render_json(t, CTX, sizeof CTX - 1, &out, NULL);
    CHECK_MSG(st == want && !out, "%s: %s", src, lmx_status_str(st));
    CHECK_MSG(strstr(lmx_last_error_detail(), detail) != NULL, "%s: detail \"%s\"", src, lmx_last_error_detail());
    free(out);
    lmx_chat_template_destroy(t);
}

static void expect_error(const char *src, const char *detail) { expect_status(src, LMX_ERR_TEMPLATE, detail); }

/* List concatenation had no size limit: 64 doublings asked for 2^64 elements (8 GB were resident
 * after 30 s). 21 doublings (2M elements) pass the 1M-element limit that `*` already had. */
static void test_list_doubling(void) {
    expect_error("{% set ns = namespace(v=[1]) %}{% for i in range(21) %}{% set ns.v = ns.v + ns.v %}{% endfor %}"
                 "{{ ns.v|length }}",
                 "list too large");
    expect_error("{{ ([1] * 1000000000)|length }}", "list too large");
}

/* Already bounded; kept as regressions: string doubling, unbounded recursion, huge ranges. */
static void test_other_bounds(void) {
    expect_status("{% set ns = namespace(v=\"xxxxxxxx\") %}{% for i in range(64) %}{% set ns.v = ns.v ~ ns.v %}"
                  "{% endfor %}{{ ns.v }}",
                  LMX_ERR_INVALID_MODEL_FORMAT, "max_output");
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion");
    expect_error("{% for i in range(1000000000) %}{% endfor %}", "Range too big");
}

/* A template that loops (practically) forever: stopped by the step budget (loop iterations and
 * calls), here lowered through the render options so that the test stays fast. */
static void test_loop_budget(void) {
    lmx_chat_template *t = NULL;
    CHECK(lmx_chat_template_create("{% for i in range(1000) %}{% for j in range(1200) %}{% endfor %}{% endfor %}", &t) == LMX_OK);
    lmx_chat_template_render_options o = {.limits = {.max_steps = 1000000}};
    char *out = NULL;
    CHECK_EQ_INT(lmx_chat_template_render_opts(t, CTX, sizeof CTX - 1, &o, &out, NULL), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_MSG(strstr(lmx_last_error_detail(), "max_steps") != NULL, "%s", lmx_last_error_detail());
    o.limits.max_steps = 2000000;
    CHECK_EQ_INT(lmx_chat_template_render_opts(t, CTX, sizeof CTX - 1, &o, &out, NULL), LMX_OK);
    free(out);
    lmx_chat_template_destroy(t);
}

/* %-format with a huge width or precision: printf built the whole field first (a 1 GB buffer for
 * %999999999d; %.999999999f spun for minutes). %c of a value beyond Unicode wrote invalid UTF-8
 * (Python raises OverflowError). */
static void test_format_fields(void) {
    /* just above the 4096 limit, so that an unfixed build fails these checks quickly */
    expect_error("{{ \"%.5000f\" % 1.0 }}", "precision");
    expect_error("{{ \"%5000d\" % 1 }}", "width");
    expect_error("{{ \"%5000s\" % \"x\" }}", "width");
    expect_error("{{ \"%c\" % 1114112 }}", "range");
    expect_error("{{ \"%c\" % -1 }}", "range");
    lmx_chat_template *t = NULL;
    CHECK(lmx_chat_template_create("{{ \"[%5.2f|%-4d|%c]\" % (3.14159, 7, 233) }}", &t) == LMX_OK);
    char *out = NULL;
    CHECK(t && lmx_chat_template_render_json(t, CTX, sizeof CTX - 1, &out, NULL) == LMX_OK);
    CHECK_EQ_STR(out, "[ 3.14|7   |\xc3\xa9]");
    free(out);
    lmx_chat_template_destroy(t);
}

int main(void) {
    RUN(test_list_doubling);
    RUN(test_other_bounds);
    RUN(test_loop_budget);
    RUN(test_format_fields);
    return lmx_test_summary();
}
