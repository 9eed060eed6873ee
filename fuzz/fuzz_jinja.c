/* fuzz_jinja.c — libFuzzer target: random template text is parsed and rendered against a fixed
 * chat context. Must never crash, leak or hang (the output size and the work budget are capped).
 * Seed corpus: fuzz/corpus/jinja/ (real chat templates). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "template/chat_template.h"

static const char CONTEXT[] =
    "{\"bos_token\":\"<s>\",\"eos_token\":\"</s>\",\"add_generation_prompt\":true,\"enable_thinking\":false,"
    "\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"hi \\u00e9 \\ud83d\\ude00\"},"
    "{\"role\":\"assistant\",\"content\":\"<think>\\nr\\n</think>\\n\\nok\",\"tool_calls\":[{\"type\":\"function\","
    "\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1.5,\"y\":[1,null,true]}}}]},{\"role\":\"tool\",\"content\":\"42\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"part\"},{\"type\":\"image\"}]}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"documents\":null}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 64 * 1024) return 0;
    lmx_chat_template *t = NULL;
    if (lmx_chat_template_create_n((const char *)data, size, &t) != LMX_OK) return 0;
    lmx_chat_template_limits lim = {.max_output = 1 << 20, .max_steps = 20000, .max_work_bytes = 64 << 20};
    lmx_chat_template_set_limits(t, &lim);
    char *out = NULL;
    size_t n = 0;
    if (lmx_chat_template_render_json(t, CONTEXT, sizeof CONTEXT - 1, &out, &n) == LMX_OK) free(out);
    lmx_chat_template_destroy(t);
    return 0;
}
