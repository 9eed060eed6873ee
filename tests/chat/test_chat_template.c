/* test_chat_template.c — unit tests of the Jinja engine API: errors with line numbers, limits,
 * strftime_now with a fixed time, the model-dir loader, cJSON contexts, concurrent renders. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmx_test.h"
#include "template/chat_template.h"

static char *render(const char *src, const char *ctx, lmx_status *st) {
    lmx_chat_template *t = NULL;
    char *out = NULL;
    *st = lmx_chat_template_create(src, &t);
    if (*st == LMX_OK) *st = lmx_chat_template_render_json(t, ctx, strlen(ctx), &out, NULL);
    lmx_chat_template_destroy(t);
    return out;
}

static void test_basic(void) {
    lmx_status st;
    char *o = render("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &st);
    CHECK_EQ_INT(st, LMX_OK);
    CHECK_EQ_STR(o, "<user>hi");
    free(o);
    o = render("{{ 1.0 }} {{ 1 }} {{ x }}", "{\"x\": 2.50}", &st);
    CHECK_EQ_STR(o, "1.0 1 2.5");
    free(o);
}

static void test_errors(void) {
    lmx_status st;
    char *o = render("line1\n{% if x %}\n{{ 1 + }}\n{% endif %}", "{}", &st);
    CHECK(o == NULL);
    CHECK_EQ_INT(st, LMX_ERR_TEMPLATE);
    CHECK_MSG(strstr(lmx_last_error_detail(), "line 3") != NULL, "detail: %s", lmx_last_error_detail());
    o = render("a\nb\n{{ raise_exception('boom ' ~ n) }}", "{\"n\": 5}", &st);
    CHECK_EQ_INT(st, LMX_ERR_TEMPLATE);
    CHECK_MSG(strstr(lmx_last_error_detail(), "line 3: boom 5") != NULL, "detail: %s", lmx_last_error_detail());
    o = render("{{ x }}", "[1]", &st);
    CHECK_EQ_INT(st, LMX_ERR_INVALID_ARGUMENT);
    o = render("{{ x }}", "{bad json", &st);
    CHECK_EQ_INT(st, LMX_ERR_INVALID_ARGUMENT);
    lmx_chat_template *t = NULL;
    CHECK_EQ_INT(lmx_chat_template_create(NULL, &t), LMX_ERR_INVALID_ARGUMENT);
    lmx_chat_template_destroy(NULL);
}

static void test_limits(void) {
    lmx_chat_template *t = NULL;
    CHECK_EQ_INT(lmx_chat_template_create("{% for i in range(100) %}{% for j in range(100) %}{{ 'xxxxxxxxxx' }}{% endfor %}{% endfor %}", &t), LMX_OK);
    lmx_chat_template_limits lim = {.max_output = 50000};
    lmx_chat_template_set_limits(t, &lim);
    char *out = NULL;
    CHECK_EQ_INT(lmx_chat_template_render_json(t, "{}", 2, &out, NULL), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_MSG(strstr(lmx_last_error_detail(), "max_output") != NULL, "%s", lmx_last_error_detail());
    lim.max_output = 0;
    lim.max_steps = 500;
    lmx_chat_template_set_limits(t, &lim);
    CHECK_EQ_INT(lmx_chat_template_render_json(t, "{}", 2, &out, NULL), LMX_ERR_INVALID_MODEL_FORMAT);
    CHECK_MSG(strstr(lmx_last_error_detail(), "max_steps") != NULL, "%s", lmx_last_error_detail());
    lmx_chat_template_set_limits(t, NULL);
    size_t n = 0;
    CHECK_EQ_INT(lmx_chat_template_render_json(t, "{}", 2, &out, &n), LMX_OK);
    CHECK_EQ_INT(n, 100000);
    free(out);
    lmx_chat_template_destroy(t);
    /* deep recursion and nesting are refused, not crashed on */
    lmx_status st;
    char *o = render("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", "{}", &st);
    CHECK_EQ_INT(st, LMX_ERR_TEMPLATE);
    free(o);
    char deep[20000];
    size_t k = 0;
    k += (size_t)sprintf(deep, "{{ ");
    for (int i = 0; i < 3000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 3000; i++) deep[k++] = ')';
    strcpy(deep + k, " }}");
    o = render(deep, "{}", &st);
    CHECK_EQ_INT(st, LMX_ERR_TEMPLATE);
    k = (size_t)sprintf(deep, "{{ 1");
    for (int i = 0; i < 3000; i++) k += (size_t)sprintf(deep + k, "+1");
    strcpy(deep + k, " }}");
    o = render(deep, "{}", &st);
    CHECK_EQ_INT(st, LMX_ERR_TEMPLATE);
}

/* strftime_now reads the clock unless the render options fix the time */
/* integers beyond 128 bits print, compare and negate exactly; arithmetic on them is a clear error */
static void test_huge_ints(void) {
    lmx_status st;
    char *o = render("{{ h * 2 }}", "{\"h\": 1000000000000000000000000000000000000000000}", &st);
    CHECK_EQ_INT(st, LMX_ERR_TEMPLATE);
    CHECK_MSG(strstr(lmx_last_error_detail(), "beyond 128 bits") != NULL, "%s", lmx_last_error_detail());
    o = render("{{ (2 ** 100) * (2 ** 100) }}", "{}", &st);
    CHECK_EQ_INT(st, LMX_ERR_TEMPLATE);
    CHECK_MSG(strstr(lmx_last_error_detail(), "beyond 128 bits") != NULL, "%s", lmx_last_error_detail());
    o = render("{{ -9223372036854775808 - 1 }}|{{ h }}|{{ -(h) }}", "{\"h\": -1000000000000000000000000000000000000000000}", &st);
    CHECK_EQ_STR(o, "-9223372036854775809|-1000000000000000000000000000000000000000000|1000000000000000000000000000000000000000000");
    free(o);
}

static void test_strftime(void) {
    setenv("TZ", "UTC", 1);
    lmx_chat_template *t = NULL;
    CHECK_EQ_INT(lmx_chat_template_create("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M') }}", &t), LMX_OK);
    lmx_chat_template_render_options o = {.fixed_time = true, .time = 1721995200}; /* 2024-07-26 12:00:00 UTC */
    char *out = NULL;
    CHECK_EQ_INT(lmx_chat_template_render_opts(t, "{}", 2, &o, &out, NULL), LMX_OK);
    CHECK_EQ_STR(out, "26 Jul 2024|2024-07-26 12:00");
    free(out);
    out = NULL;
    CHECK_EQ_INT(lmx_chat_template_render_json(t, "{}", 2, &out, NULL), LMX_OK);
    CHECK(out && strcmp(out, "26 Jul 2024|2024-07-26 12:00") != 0);
    free(out);
    lmx_chat_template_destroy(t);
}

static void test_cjson_context(void) {
    lmx_chat_template *t = NULL;
    CHECK_EQ_INT(lmx_chat_template_create("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ n + 1 }}|{{ f }}", &t), LMX_OK);
    cJSON *ctx = cJSON_Parse("{\"bos_token\":\"<s>\",\"messages\":[{\"role\":\"user\",\"content\":\"é\"}],\"n\":41,\"f\":0.5}");
    char *out = NULL;
    CHECK_EQ_INT(lmx_chat_template_render(t, ctx, &out), LMX_OK);
    CHECK_EQ_STR(out, "<s>é42|0.5");
    free(out);
    cJSON_Delete(ctx);
    lmx_chat_template_destroy(t);
}

static void test_context_json(void) {
    const char *names[] = {"enable_thinking", "tools"};
    const char *vals[] = {"false", "[{\"x\":1.0}]"};
    char *c = lmx_chat_template_context_json("{\"bos_token\":\"<s>\"}", "[]", true, 2, names, vals);
    CHECK_EQ_STR(c, "{\"bos_token\":\"<s>\",\"messages\":[],\"tools\":null,\"documents\":null,\"add_generation_prompt\":true,\"enable_thinking\":false,\"tools\":[{\"x\":1.0}]}");
    lmx_chat_template *t = NULL;
    lmx_chat_template_create("{{ tools|tojson }}{{ enable_thinking }}{{ documents }}", &t);
    char *out = NULL;
    CHECK_EQ_INT(lmx_chat_template_render_json(t, c, strlen(c), &out, NULL), LMX_OK);
    CHECK_EQ_STR(out, "[{\"x\": 1.0}]FalseNone");
    free(out);
    free(c);
    lmx_chat_template_destroy(t);
    const char *bad[] = {"1x"};
    CHECK(lmx_chat_template_context_json(NULL, "[]", false, 1, bad, vals) == NULL);
}

/* A list-valued chat_template (issue 15 item 12): "tool_use" when tools are passed, a named one on
 * request, "default" otherwise — as transformers' get_chat_template; and the CLI's --template. */
static void test_loader_select(const char *dir) {
    char *src = NULL;
    lmx_chat_template_select sel = {.tools = true};
    CHECK_EQ_INT(lmx_chat_template_load_dir_select(dir, &sel, &src, NULL), LMX_OK);
    CHECK_EQ_STR(src, "T");
    free(src);
    sel = (lmx_chat_template_select){.name = "default", .tools = true};
    CHECK_EQ_INT(lmx_chat_template_load_dir_select(dir, &sel, &src, NULL), LMX_OK);
    CHECK_EQ_STR(src, "{{ bos_token }}D");
    free(src);
    sel = (lmx_chat_template_select){.name = "rag"};
    CHECK_EQ_INT(lmx_chat_template_load_dir_select(dir, &sel, &src, NULL), LMX_ERR_TEMPLATE);
    CHECK_MSG(strstr(lmx_last_error_detail(), "\"rag\" (it has: tool_use, default)") != NULL, "%s", lmx_last_error_detail());
    CHECK(src == NULL);
    char cmd[4096], out[256] = {0};
    snprintf(cmd, sizeof cmd, "echo '[]' | '%s' chat-template '%s' --var 'tools=[{\"name\":\"f\"}]' && echo '|' && "
             "echo '[]' | '%s' chat-template '%s' --var tools=null && echo '|' && "
             "echo '[]' | '%s' chat-template '%s' --template tool_use",
             LMX_CLI_PATH, dir, LMX_CLI_PATH, dir, LMX_CLI_PATH, dir);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    CHECK_EQ_INT(pclose(p), 0);
    CHECK_EQ_STR(out, "T|\n<s>D|\nT");
}

static void test_loader(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/chat_loader_test", LMX_BINARY_DIR);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    CHECK(system(cmd) == 0);
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("{\"bos_token\":{\"content\":\"<s>\",\"lstrip\":false},\"eos_token\":\"</s>\",\"pad_token\":null,\"image_token\":\"<img>\","
          "\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"T\"},{\"name\":\"default\",\"template\":\"{{ bos_token }}D\"}]}", f);
    fclose(f);
    char *src = NULL, *special = NULL;
    CHECK_EQ_INT(lmx_chat_template_load_dir(dir, &src, &special), LMX_OK);
    CHECK_EQ_STR(src, "{{ bos_token }}D");
    CHECK_EQ_STR(special, "{\"bos_token\":\"<s>\",\"eos_token\":\"</s>\",\"image_token\":\"<img>\"}");
    free(src);
    free(special);
    test_loader_select(dir);
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    f = fopen(path, "w");
    fputs("from file", f);
    fclose(f);
    CHECK_EQ_INT(lmx_chat_template_load_dir(dir, &src, NULL), LMX_OK);
    CHECK_EQ_STR(src, "from file");
    free(src);
    /* transformers' save format: chat_template.jinja is "default", the others in additional_chat_templates/ */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/additional_chat_templates' && printf 'TOOLS' > '%s/additional_chat_templates/tool_use.jinja'", dir, dir);
    CHECK(system(cmd) == 0);
    lmx_chat_template_select sel = {.tools = true};
    CHECK_EQ_INT(lmx_chat_template_load_dir_select(dir, &sel, &src, NULL), LMX_OK);
    CHECK_EQ_STR(src, "TOOLS");
    free(src);
    sel = (lmx_chat_template_select){.name = "default", .tools = true};
    CHECK_EQ_INT(lmx_chat_template_load_dir_select(dir, &sel, &src, NULL), LMX_OK);
    CHECK_EQ_STR(src, "from file");
    free(src);
    sel = (lmx_chat_template_select){.name = "rag"};
    CHECK_EQ_INT(lmx_chat_template_load_dir_select(dir, &sel, &src, NULL), LMX_ERR_TEMPLATE);
    sel = (lmx_chat_template_select){.name = "../tokenizer_config"};
    CHECK_EQ_INT(lmx_chat_template_load_dir_select(dir, &sel, &src, NULL), LMX_ERR_INVALID_ARGUMENT);
    CHECK(src == NULL);
    CHECK_EQ_INT(lmx_chat_template_load_dir("/nonexistent-dir-lmx", &src, &special), LMX_ERR_TEMPLATE);
    /* chat_template.json only */
    snprintf(cmd, sizeof cmd, "rm -f '%s'/*.json* '%s'/*.jinja && printf '{\"chat_template\": \"J{{ 1 }}\"}' > '%s/chat_template.json'", dir, dir, dir);
    CHECK(system(cmd) == 0);
    CHECK_EQ_INT(lmx_chat_template_load_dir(dir, &src, &special), LMX_OK);
    CHECK_EQ_STR(src, "J{{ 1 }}");
    CHECK_EQ_STR(special, "{}");
    free(src);
    free(special);
}

typedef struct { lmx_chat_template *t; int ok; } targ;

static void *worker(void *p) {
    targ *a = p;
    for (int i = 0; i < 200; i++) {
        char ctx[128];
        snprintf(ctx, sizeof ctx, "{\"messages\":[{\"role\":\"user\",\"content\":\"m%d\"}],\"n\":%d}", i, i);
        char *out = NULL;
        if (lmx_chat_template_render_json(a->t, ctx, strlen(ctx), &out, NULL) != LMX_OK) return NULL;
        char want[64];
        snprintf(want, sizeof want, "m%d:%d:ab", i, i * 2);
        if (strcmp(out, want) == 0) a->ok++;
        free(out);
    }
    return NULL;
}

static void test_threads(void) {
    lmx_chat_template *t = NULL;
    CHECK_EQ_INT(lmx_chat_template_create("{% set ns = namespace(s='') %}{% for c in ['a','b'] %}{% set ns.s = ns.s ~ c %}{% endfor %}"
                                          "{{ messages[0].content }}:{{ n * 2 }}:{{ ns.s }}", &t), LMX_OK);
    pthread_t th[4];
    targ a[4];
    for (int i = 0; i < 4; i++) { a[i].t = t; a[i].ok = 0; pthread_create(&th[i], NULL, worker, &a[i]); }
    for (int i = 0; i < 4; i++) { pthread_join(th[i], NULL); CHECK_EQ_INT(a[i].ok, 200); }
    lmx_chat_template_destroy(t);
}

int main(void) {
    RUN(test_basic);
    RUN(test_errors);
    RUN(test_limits);
    RUN(test_strftime);
    RUN(test_cjson_context);
    RUN(test_context_json);
    RUN(test_huge_ints);
    RUN(test_loader);
    RUN(test_threads);
    return lmx_test_summary();
}
