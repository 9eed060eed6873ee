/* chat_template.c — the public face of the Jinja engine: create/render/destroy, limits, the
 * cJSON bridge and the model-directory loader (tokenizer_config.json / chat_template.jinja). */
#include "chat_template.h"
#include "util/json.h"

#include <stdio.h>
#include <stdlib.h>

#include "jinja_internal.h"
#include "util/error.h"
#include "util/fs.h"

#define DEFAULT_MAX_OUTPUT ((size_t)64 << 20)
#define DEFAULT_MAX_WORK_BYTES ((uint64_t)256 << 20)
#define DEFAULT_MAX_STEPS UINT64_C(100000000)

struct lmx_chat_template {
    jnode *root;
    lmx_chat_template_limits limits;
    char *name; /* for error details; NULL: none given */
};

lmx_status lmx_chat_template_create_n(const char *source, size_t len, lmx_chat_template **out) {
    if (!out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template: NULL output");
    *out = NULL;
    if (!source) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template: NULL source");
    tk_vec toks;
    lmx_status st = jinja_lex(source, len, &toks);
    if (st != LMX_OK) return st;
    jnode *root = NULL;
    st = jinja_parse(&toks, &root);
    jinja_tokens_free(&toks);
    if (st == LMX_OK) st = jinja_check(root);
    if (st != LMX_OK) { jinja_node_free(root); return st; }
    lmx_chat_template *t = calloc(1, sizeof *t);
    if (!t) { jinja_node_free(root); return lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat template"); }
    t->root = root;
    lmx_chat_template_set_limits(t, NULL);
    *out = t;
    return LMX_OK;
}

lmx_status lmx_chat_template_create(const char *source, lmx_chat_template **out) {
    return lmx_chat_template_create_n(source, source ? strlen(source) : 0, out);
}

void lmx_chat_template_destroy(lmx_chat_template *t) {
    if (!t) return;
    jinja_node_free(t->root);
    free(t->name);
    free(t);
}

void lmx_chat_template_set_limits(lmx_chat_template *t, const lmx_chat_template_limits *l) {
    if (!t) return;
    t->limits.max_output = l && l->max_output ? l->max_output : DEFAULT_MAX_OUTPUT;
    t->limits.max_work_bytes = l && l->max_work_bytes ? l->max_work_bytes : DEFAULT_MAX_WORK_BYTES;
    t->limits.max_steps = l && l->max_steps ? l->max_steps : DEFAULT_MAX_STEPS;
}

lmx_status lmx_chat_template_set_name(lmx_chat_template *t, const char *name) {
    if (!t) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template: NULL template");
    char *copy = name ? strdup(name) : NULL;
    if (name && !copy) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat template name");
    free(t->name);
    t->name = copy;
    return LMX_OK;
}

/* The detail of a render that went past a limit: which one, and the field that raises it. */
static lmx_status limit_error(const lmx_chat_template *t, const jctx *c) {
    const char *what, *field;
    unsigned long long max;
    switch (c->bud.hit) {
    case JB_STEPS: what = "loop iterations and calls"; field = "max_steps"; max = c->bud.max_steps; break;
    case JB_BYTES: what = "bytes built, copied or compared"; field = "max_work_bytes"; max = c->bud.max_bytes; break;
    default: what = "bytes of rendered text or of one string"; field = "max_output"; max = c->max_out; break;
    }
    return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT,
                     "chat template%s%s: line %d: work limit reached: more than %llu %s; to render it anyway, raise "
                     "lmx_chat_template_limits.%s (lmx_chat_template_set_limits or the render options)",
                     t->name ? " of " : "", t->name ? t->name : "", c->err_line, max, what, field);
}

static lmx_status render_value(const lmx_chat_template *t, jv ctxv, const lmx_chat_template_render_options *o,
                               char **out, size_t *out_len) {
    jctx c;
    memset(&c, 0, sizeof c);
    const lmx_chat_template_limits *ol = o ? &o->limits : NULL;
    c.max_out = ol && ol->max_output ? ol->max_output : t->limits.max_output;
    c.bud.max_bytes = ol && ol->max_work_bytes ? ol->max_work_bytes : t->limits.max_work_bytes;
    c.bud.max_steps = ol && ol->max_steps ? ol->max_steps : t->limits.max_steps;
    c.fixed_time = o && o->fixed_time;
    c.now = o ? o->time : 0;
    c.namespaces = jv_undef(NULL);
    sb buf;
    jsb_init(&c, &buf);
    c.out = &buf;
    c.frames = malloc(8 * sizeof *c.frames);
    if (!c.frames) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat template render");
    c.capframes = 8;
    /* frame 0: a copy of the context (top-level {% set %} must not mutate the caller's value) */
    jv g = jv_dict_new(ctxv.u.d->n + 4);
    if (jv_is_oom(g)) { free(c.frames); return lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat template render"); }
    for (size_t i = 0; i < ctxv.u.d->n; i++) jv_dict_set(g, jv_incref(ctxv.u.d->k[i]), jv_incref(ctxv.u.d->v[i]));
    c.frames[0].vars = g;
    c.frames[0].barrier = false;
    c.nframes = 1;
    bool ok = jinja_exec_body(&c, &t->root->args);
    if (ok) ok = jsb_check(&c, 0, &buf);
    while (c.nframes > 0) { c.nframes--; jv_decref(c.frames[c.nframes].vars); }
    if (c.namespaces.t == JV_LIST) {
        /* namespaces may reference themselves ({% set ns.x = ns %}): empty them to break cycles */
        for (size_t i = 0; i < c.namespaces.u.l->n; i++) {
            jv_dict *d = c.namespaces.u.l->v[i].u.d;
            size_t n = d->n;
            d->n = 0;
            for (size_t k = 0; k < n; k++) { jv_decref(d->k[k]); jv_decref(d->v[k]); }
        }
        jv_decref(c.namespaces);
    }
    free(c.frames);
    if (!ok) {
        sb_free(&buf);
        if (c.bud.hit) return limit_error(t, &c);
        return lmx_error(LMX_ERR_TEMPLATE, "%s%sline %d: %s", t->name ? t->name : "", t->name ? ": " : "",
                         c.err_line, c.err[0] ? c.err : "render failed");
    }
    if (!buf.p) {
        buf.p = calloc(1, 1);
        if (!buf.p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat template render");
    }
    *out = buf.p;
    if (out_len) *out_len = buf.n;
    return LMX_OK;
}

lmx_status lmx_chat_template_render_json(const lmx_chat_template *t, const char *context_json, size_t len,
                                         char **out, size_t *out_len) {
    return lmx_chat_template_render_opts(t, context_json, len, NULL, out, out_len);
}

lmx_status lmx_chat_template_render_opts(const lmx_chat_template *t, const char *context_json, size_t len,
                                         const lmx_chat_template_render_options *opts, char **out, size_t *out_len) {
    if (!t || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template render: NULL argument");
    *out = NULL;
    jv ctxv;
    char err[160];
    if (!context_json) context_json = "{}", len = 2;
    if (!jv_from_json(context_json, len, &ctxv, err, sizeof err))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template context: %s", err);
    if (ctxv.t != JV_DICT) { jv_decref(ctxv); return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template context must be a JSON object"); }
    lmx_status st = render_value(t, ctxv, opts, out, out_len);
    jv_decref(ctxv);
    return st;
}

static bool from_cjson(const cJSON *j, jv *out, int depth) {
    if (depth > 500) return false;
    if (cJSON_IsNull(j)) { *out = jv_none(); return true; }
    if (cJSON_IsBool(j)) { *out = jv_bool(cJSON_IsTrue(j)); return true; }
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d > -9.2e18 && d < 9.2e18 && d == (double)(int64_t)d) *out = jv_int((int64_t)d);
        else *out = jv_float(d);
        return true;
    }
    if (cJSON_IsString(j)) { *out = jv_str_cstr(j->valuestring ? j->valuestring : ""); return !jv_is_oom(*out); }
    if (cJSON_IsArray(j)) {
        jv l = jv_list_new(0);
        if (jv_is_oom(l)) return false;
        for (const cJSON *e = j->child; e; e = e->next) {
            jv v;
            if (!from_cjson(e, &v, depth + 1) || !jv_list_push(l, v)) { jv_decref(l); return false; }
        }
        *out = l;
        return true;
    }
    if (cJSON_IsObject(j)) {
        jv d = jv_dict_new(0);
        if (jv_is_oom(d)) return false;
        for (const cJSON *e = j->child; e; e = e->next) {
            jv v;
            if (!from_cjson(e, &v, depth + 1) || !jv_dict_set_cstr(d, e->string ? e->string : "", v)) { jv_decref(d); return false; }
        }
        *out = d;
        return true;
    }
    return false;
}

lmx_status lmx_chat_template_render(const lmx_chat_template *t, const cJSON *context, char **out) {
    if (!t || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template render: NULL argument");
    *out = NULL;
    jv ctxv;
    if (!context) { ctxv = jv_dict_new(0); if (jv_is_oom(ctxv)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "context"); }
    else if (!cJSON_IsObject(context)) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template context must be a JSON object");
    else if (!from_cjson(context, &ctxv, 0)) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template context: unsupported or too deep JSON");
    lmx_status st = render_value(t, ctxv, NULL, out, NULL);
    jv_decref(ctxv);
    return st;
}

/* ---------------------------------------------------------------- loader */
static const char *token_string(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* A list-valued chat_template ([{"name", "template"}, …]; a later entry of the same name wins, as
 * in the dict transformers builds): the requested name; else "tool_use" when tools are passed
 * and there is one; else "default" (transformers' get_chat_template). */
static const char *named(const cJSON *list, const char *name) {
    const char *src = NULL;
    for (const cJSON *e = list->child; e; e = e->next) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name"), *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (cJSON_IsString(n) && cJSON_IsString(tt) && !strcmp(n->valuestring, name)) src = tt->valuestring;
    }
    return src;
}

static lmx_status pick_template(const cJSON *list, const char *cfg_path, const lmx_chat_template_select *sel,
                                const char **src) {
    const char *want = sel && sel->name ? sel->name : NULL;
    if (want) *src = named(list, want);
    else {
        *src = sel && sel->tools ? named(list, "tool_use") : NULL;
        if (!*src) *src = named(list, "default");
    }
    if (*src) return LMX_OK;
    sb names;
    sb_init(&names, 4096);
    for (const cJSON *e = list->child; e; e = e->next) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (!cJSON_IsString(n)) continue;
        if (names.n) sb_puts(&names, ", ");
        sb_puts(&names, n->valuestring);
    }
    lmx_status st = want ? lmx_error(LMX_ERR_TEMPLATE, "%s: no chat template named \"%s\" (it has: %s)", cfg_path, want,
                                     names.p ? names.p : "none")
                         : lmx_error(LMX_ERR_TEMPLATE, "%s: chat_template list has no \"default\" entry (it has: %s); "
                                     "name one to use", cfg_path, names.p ? names.p : "none");
    sb_free(&names);
    return st;
}

/* chat_template.jinja is "default"; additional_chat_templates/NAME.jinja the others (transformers'
 * save format). A requested name must be a plain file name. */
static lmx_status read_jinja_dir(const char *dir, const char *jinja_path, const lmx_chat_template_select *sel,
                                 char **src, bool *named) {
    const char *want = sel && sel->name ? sel->name : sel && sel->tools ? "tool_use" : NULL;
    if (want && !strcmp(want, "default")) want = NULL;
    if (want && (!*want || strchr(want, '/') || want[0] == '.'))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template name \"%s\": not a plain name", want);
    size_t len;
    if (want) {
        char *extra = lmx_fs_join(dir, "additional_chat_templates"), *file = NULL;
        size_t fl = strlen(want) + 7;
        char *fname = malloc(fl);
        if (fname) snprintf(fname, fl, "%s.jinja", want);
        if (extra && fname) file = lmx_fs_join(extra, fname);
        free(extra);
        free(fname);
        if (!file) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "path");
        bool have = lmx_fs_exists(file); /* not a regular file: the read says what it is */
        lmx_status st = have ? lmx_fs_read_file(file, (size_t)16 << 20, src, &len) : LMX_OK;
        free(file);
        if (have || st != LMX_OK) { *named = have; return st; }
        if (sel->name) return lmx_error(LMX_ERR_TEMPLATE, "%s: no chat template named \"%s\" (no additional_chat_templates/%s.jinja)", dir, want, want);
    }
    return lmx_fs_read_file(jinja_path, (size_t)16 << 20, src, &len);
}

lmx_status lmx_chat_template_load_dir(const char *dir, char **template_source, char **special_tokens_json) {
    return lmx_chat_template_load_dir_select(dir, NULL, template_source, special_tokens_json);
}

lmx_status lmx_chat_template_load_dir_select(const char *dir, const lmx_chat_template_select *sel, char **template_source,
                                             char **special_tokens_json) {
    if (!dir || !template_source) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "chat template: NULL argument");
    *template_source = NULL;
    if (special_tokens_json) *special_tokens_json = NULL;
    char *cfg_path = lmx_fs_join(dir, "tokenizer_config.json");
    char *jinja_path = lmx_fs_join(dir, "chat_template.jinja");
    if (!cfg_path || !jinja_path) { free(cfg_path); free(jinja_path); return lmx_error(LMX_ERR_OUT_OF_MEMORY, "path"); }
    cJSON *cfg = NULL;
    lmx_status st = LMX_OK;
    bool from_list = false;
    if (lmx_fs_exists(cfg_path)) { /* exists but not a regular file: the read says what it is */
        char *text;
        size_t len;
        st = lmx_fs_read_file(cfg_path, (size_t)256 << 20, &text, &len);
        if (st != LMX_OK) goto done;
        const char *stop = NULL;
        char why[160] = "not a JSON object";
        cfg = lmx_json_parse(text, len, &stop);
        if (!cfg) lmx_json_error(text, len, stop, why, sizeof why);
        free(text);
        if (!cfg || !cJSON_IsObject(cfg)) { st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s", cfg_path, why); goto done; }
    }
    /* template: chat_template.jinja wins (transformers saves it separately; further named ones in
     * additional_chat_templates/NAME.jinja), else the config; one that exists but is not a regular
     * file fails, named, in the read */
    if (lmx_fs_exists(jinja_path)) {
        st = read_jinja_dir(dir, jinja_path, sel, template_source, &from_list);
        if (st != LMX_OK) goto done;
    } else if (cfg) {
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        const char *src = NULL;
        if (cJSON_IsString(ct)) src = ct->valuestring;
        else if (cJSON_IsArray(ct)) {
            if ((st = pick_template(ct, cfg_path, sel, &src)) != LMX_OK) goto done;
            from_list = true;
        }
        if (src) {
            *template_source = strdup(src);
            if (!*template_source) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat template"); goto done; }
        }
    }
    if (!*template_source) {
        /* processors save {"chat_template": "..."} in chat_template.json */
        char *json_path = lmx_fs_join(dir, "chat_template.json");
        if (json_path && lmx_fs_exists(json_path)) {
            char *text;
            size_t len;
            st = lmx_fs_read_file(json_path, (size_t)16 << 20, &text, &len);
            if (st == LMX_OK) {
                cJSON *j = lmx_json_parse(text, len, NULL);
                free(text);
                const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
                if (cJSON_IsString(ct)) *template_source = strdup(ct->valuestring);
                cJSON_Delete(j);
            }
        }
        free(json_path);
        if (st != LMX_OK) goto done;
    }
    if (!*template_source) {
        st = lmx_error(LMX_ERR_TEMPLATE, "%s: no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja or chat_template.json)", dir);
        goto done;
    }
    if (!from_list && sel && sel->name && strcmp(sel->name, "default") != 0) {
        st = lmx_error(LMX_ERR_TEMPLATE, "%s: one chat template only; no template named \"%s\"", dir, sel->name);
        goto done;
    }
    if (special_tokens_json) {
        cJSON *vars = cJSON_CreateObject();
        if (!vars) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "special tokens"); goto done; }
        if (cfg) {
            for (const cJSON *e = cfg->child; e; e = e->next) {
                if (!e->string || !ends_with(e->string, "_token")) continue;
                const char *s = token_string(e);
                if (s && !cJSON_GetObjectItemCaseSensitive(vars, e->string)) cJSON_AddStringToObject(vars, e->string, s);
            }
            const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "extra_special_tokens");
            if (cJSON_IsObject(extra))
                for (const cJSON *e = extra->child; e; e = e->next) {
                    const char *s = token_string(e);
                    if (s && e->string && !cJSON_GetObjectItemCaseSensitive(vars, e->string)) cJSON_AddStringToObject(vars, e->string, s);
                }
        }
        *special_tokens_json = cJSON_PrintUnformatted(vars);
        cJSON_Delete(vars);
        if (!*special_tokens_json) { st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "special tokens"); goto done; }
    }
done:
    if (st != LMX_OK) { free(*template_source); *template_source = NULL; }
    cJSON_Delete(cfg);
    free(cfg_path);
    free(jinja_path);
    return st;
}

/* ---------------------------------------------------------------- context */
static bool valid_var_name(const char *s) {
    if (!s || !*s) return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i && c >= '0' && c <= '9'))) return false;
    }
    return true;
}

char *lmx_chat_template_context_json(const char *special, const char *messages, bool agp, int nvars,
                                     const char *const *names, const char *const *values) {
    sb b;
    sb_init(&b, 0);
    sb_putc(&b, '{');
    bool any = false;
    if (special) {
        const char *p = special;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        size_t n = strlen(p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\n' || p[n - 1] == '\t' || p[n - 1] == '\r')) n--;
        if (n < 2 || p[0] != '{' || p[n - 1] != '}') { sb_free(&b); lmx_error(LMX_ERR_INVALID_ARGUMENT, "special tokens: not a JSON object"); return NULL; }
        size_t k = 1;
        while (k < n - 1 && (p[k] == ' ' || p[k] == '\n' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k < n - 1) { sb_put(&b, p + 1, n - 2); any = true; }
    }
    if (any) sb_putc(&b, ',');
    sb_puts(&b, "\"messages\":");
    sb_puts(&b, messages && *messages ? messages : "[]");
    sb_puts(&b, ",\"tools\":null,\"documents\":null,\"add_generation_prompt\":");
    sb_puts(&b, agp ? "true" : "false");
    for (int i = 0; i < nvars; i++) {
        if (!valid_var_name(names[i])) { sb_free(&b); lmx_error(LMX_ERR_INVALID_ARGUMENT, "bad variable name '%s'", names[i] ? names[i] : "(null)"); return NULL; }
        sb_puts(&b, ",\"");
        sb_puts(&b, names[i]);
        sb_puts(&b, "\":");
        sb_puts(&b, values[i] && *values[i] ? values[i] : "null");
    }
    sb_putc(&b, '}');
    if (sb_failed(&b) || !b.p) { sb_free(&b); lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat template context"); return NULL; }
    return b.p;
}
