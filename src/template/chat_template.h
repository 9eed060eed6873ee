/* chat_template.h — Hugging Face chat templates (Jinja2) rendered exactly like transformers'
 * apply_chat_template(tokenize=False): an own Jinja2 engine (lexer, parser, evaluator) with
 * transformers' environment (trim_blocks, lstrip_blocks, loopcontrols, ImmutableSandbox,
 * tojson with ensure_ascii=False, raise_exception, strftime_now, {% generation %}).
 *
 * Ownership: *out strings are malloc'd and owned by the caller (free() or lmx_free()).
 * Thread-safety: a created template is immutable; any number of threads may render it at once.
 * Errors: LMX_ERR_TEMPLATE with detail "line N: message" for syntax and render errors
 * (including raise_exception; "NAME: line N: …" once lmx_chat_template_set_name named the
 * template); nothing aborts on bad input. Limits (lmx_chat_template_limits):
 * output size and a work budget (bytes built/copied/compared, loop iterations and calls) →
 * LMX_ERR_INVALID_MODEL_FORMAT; range() is capped at 100000 like Jinja's sandbox; macro
 * recursion and nesting are bounded.
 */
#ifndef LMX_TEMPLATE_CHAT_TEMPLATE_H
#define LMX_TEMPLATE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "lmx.h"

typedef struct lmx_chat_template lmx_chat_template;

/* What one render may spend. A template that goes past a limit fails with
 * LMX_ERR_INVALID_MODEL_FORMAT; the detail names the template, the limit reached and the field to
 * raise. 0 in a field: the default. */
typedef struct lmx_chat_template_limits {
    size_t max_output;       /* bytes of rendered text and of any one intermediate string; default 64 MiB */
    uint64_t max_work_bytes; /* bytes built, copied or compared in one render; default 256 MiB (10,000
                              * messages of a Gemma-style template take 20 MB) */
    uint64_t max_steps;      /* loop iterations + macro and filter calls in one render; default 100,000,000
                              * (a backward scan per message over 10,000 messages needs 50,000,000) */
} lmx_chat_template_limits;

/* Per-render options (lmx_chat_template_render_opts). Zero-initialised = the template's limits
 * and the real clock. */
typedef struct lmx_chat_template_render_options {
    lmx_chat_template_limits limits; /* 0 fields: the template's own (set_limits, else defaults) */
    bool fixed_time;                 /* strftime_now formats `time` instead of the current time */
    int64_t time;                    /* Unix seconds, shown in the local time zone */
} lmx_chat_template_render_options;

/* Parses `source` (a Jinja2 template; NUL-terminated) once. */
lmx_status lmx_chat_template_create(const char *source, lmx_chat_template **out);
lmx_status lmx_chat_template_create_n(const char *source, size_t len, lmx_chat_template **out);
void lmx_chat_template_destroy(lmx_chat_template *t);

/* Changes the limits; call before sharing the template between threads. NULL restores defaults. */
void lmx_chat_template_set_limits(lmx_chat_template *t, const lmx_chat_template_limits *limits);

/* Names the template in error details (e.g. the model directory); copied. Call before sharing. */
lmx_status lmx_chat_template_set_name(lmx_chat_template *t, const char *name);

/* Renders with the variables of a JSON object (messages, tools, add_generation_prompt,
 * bos_token, …, extra variables). JSON numbers keep Python's int/float distinction ("1" is an
 * int, "1.0" a float). *out is NUL-terminated; *out_len (optional) excludes the NUL and counts
 * embedded NULs. */
lmx_status lmx_chat_template_render_json(const lmx_chat_template *t, const char *context_json, size_t len,
                                         char **out, size_t *out_len);

/* Same with per-render options (opts NULL = none). */
lmx_status lmx_chat_template_render_opts(const lmx_chat_template *t, const char *context_json, size_t len,
                                         const lmx_chat_template_render_options *opts, char **out, size_t *out_len);

/* Same with a cJSON object. cJSON keeps no int/float distinction: integral numbers become
 * ints, others floats. */
lmx_status lmx_chat_template_render(const lmx_chat_template *t, const cJSON *context, char **out);

/* Reads a model/tokenizer directory: the chat template from tokenizer_config.json's
 * "chat_template" (a string, or a list of {name, template}: see lmx_chat_template_select); a
 * chat_template.jinja file takes precedence, chat_template.json ({"chat_template": …}) is the last
 * resort; and the special-token variables (bos_token, eos_token, unk_token,
 * pad_token, … given as strings or {"content": …}; null ones are left out) as a JSON object text
 * `{"bos_token": "…", …}`. Both outputs malloc'd (caller frees). No template →
 * LMX_ERR_TEMPLATE "no chat template". */
lmx_status lmx_chat_template_load_dir(const char *model_dir, char **template_source, char **special_tokens_json);

/* Which of several templates to take (transformers' get_chat_template) — a list-valued
 * chat_template in tokenizer_config.json, or chat_template.jinja ("default") beside
 * additional_chat_templates/NAME.jinja: `name` when given (a missing name → LMX_ERR_TEMPLATE, listing
 * the names of a list; a name that is not a plain file name → LMX_ERR_INVALID_ARGUMENT; with a single
 * template only "default" is accepted); else "tool_use" when `tools` (tools will be passed to the
 * render) and there is one; else "default". NULL = {NULL, false}. */
typedef struct lmx_chat_template_select {
    const char *name;
    bool tools;
} lmx_chat_template_select;
lmx_status lmx_chat_template_load_dir_select(const char *model_dir, const lmx_chat_template_select *select,
                                             char **template_source, char **special_tokens_json);

/* Builds the render context as JSON object text, the way apply_chat_template does: the special
 * tokens (JSON object text from lmx_chat_template_load_dir, or NULL), "messages" (JSON array
 * text), "tools": null, "documents": null, "add_generation_prompt", then nvars extra variables
 * (names + JSON value texts; later ones override earlier keys, e.g. "tools"). Number texts are
 * kept verbatim. Returns a malloc'd string or NULL (detail set) on a bad name / no memory. */
char *lmx_chat_template_context_json(const char *special_tokens_json, const char *messages_json,
                                     bool add_generation_prompt, int nvars, const char *const *var_names,
                                     const char *const *var_values_json);

#endif
