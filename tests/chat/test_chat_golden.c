/* test_chat_golden.c — byte-for-byte comparison with goldens made by jinja2/transformers:
 *   tests/fixtures/chat/synthetic.json: small template+context cases (or an expected error);
 *   tests/fixtures/chat/real.json: apply_chat_template renderings of the real tokenizers in
 *   tests/fixtures/tokenizers, built through the same
 *   loader + context path as `lmx chat-template`;
 *   tests/fixtures/chat/gpt_oss.json: gpt-oss's Harmony template the same way (the template files
 *   from LMX_GPT_OSS_TEMPLATE_DIR). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lmx_test.h"
#include "template/jinja_internal.h"
#include "template/chat_template.h"
#include "registry/sha256.h"
#include "util/fs.h"

static cJSON *load_json(const char *path) {
    char *text;
    size_t len;
    if (lmx_fs_read_file(path, 64u << 20, &text, &len) != LMX_OK) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    return j;
}

static void show_diff(const char *what, const char *exp, const char *got) {
    size_t i = 0;
    while (exp[i] && got[i] && exp[i] == got[i]) i++;
    fprintf(stderr, "  %s: first difference at byte %zu\n    expected: %.120s\n    got:      %.120s\n", what, i,
            exp + (i > 20 ? i - 20 : 0), got + (i > 20 ? i - 20 : 0));
}

static int n_syn, n_syn_err;

static void run_cases(const char *path) {
    cJSON *root = load_json(path);
    CHECK(root != NULL);
    if (!root) return;
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int idx = 0;
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next, idx++) {
        const char *src = cJSON_GetObjectItem(c, "template")->valuestring;
        const char *ctx = cJSON_GetObjectItem(c, "context_json")->valuestring;
        bool want_err = cJSON_IsTrue(cJSON_GetObjectItem(c, "error"));
        const cJSON *exp = cJSON_GetObjectItem(c, "expected");
        lmx_chat_template *t = NULL;
        char *out = NULL;
        size_t out_len = 0;
        lmx_status st = lmx_chat_template_create(src, &t);
        if (st == LMX_OK) st = lmx_chat_template_render_json(t, ctx, strlen(ctx), &out, &out_len);
        n_syn++;
        if (want_err) {
            n_syn_err++;
            CHECK_MSG(st == LMX_ERR_TEMPLATE, "case %d: expected an error (%s), got status %d output [%s]\n  template: %s", idx,
                      cJSON_GetObjectItem(c, "message")->valuestring, st, out ? out : "", src);
        } else {
            CHECK_MSG(st == LMX_OK, "case %d: %s: %s\n  template: %s", idx, lmx_status_str(st), lmx_last_error_detail(), src);
            if (st == LMX_OK) {
                bool same = out_len == strlen(exp->valuestring) && !memcmp(out, exp->valuestring, out_len);
                CHECK_MSG(same, "case %d: output differs\n  template: %s", idx, src);
                if (!same) show_diff("synthetic", exp->valuestring, out);
            }
        }
        free(out);
        lmx_chat_template_destroy(t);
    }
    cJSON_Delete(root);
}

static void test_synthetic(void) { run_cases(LMX_SOURCE_DIR "/tests/fixtures/chat/synthetic.json"); }

/* Jinja2 built-ins beyond the common chat-template set (issue 15 item 14): builtins.json, made by
 * gen_jinja_builtins.py with jinja2 3.1.6. */
static void test_builtins(void) { run_cases(LMX_SOURCE_DIR "/tests/fixtures/chat/builtins.json"); }

static bool extract(const char *fam, char *dir, size_t dirlen) {
    snprintf(dir, dirlen, "%s/chat_tokenizers/%s", LMX_BINARY_DIR, fam);
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    if (lmx_fs_is_file(cfg)) return true;
    char tarball[1200];
    snprintf(tarball, sizeof tarball, "%s/%s.tar.xz", LMX_TOK_ARCHIVES, fam);
    if (!lmx_fs_is_file(tarball)) return false;
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/chat_tokenizers' && tar -xJf '%s' -C '%s/chat_tokenizers'", LMX_BINARY_DIR, tarball, LMX_BINARY_DIR);
    return system(cmd) == 0 && lmx_fs_is_file(cfg);
}

static int n_real;

/* JSON text of a value that keeps Python's int/float distinction (cJSON would print 1.0 as 1) */
static char *json_text(jv v) {
    sb b;
    sb_init(&b, 0);
    jv_json_opts o = {.indent = -1, .item_sep = ",", .key_sep = ":"};
    const char *why;
    if (!jv_to_json(&b, v, &o, &why)) { sb_free(&b); return NULL; }
    return b.p;
}

/* Renders golden record c (jc: the same record through jv, which keeps ints and floats apart) with
 * template t and the special tokens (JSON text) as apply_chat_template builds the context, and
 * compares with its "expected" (or its expected error). opts: per-render options (NULL: none). */
static void check_record(const cJSON *c, jv jc, const lmx_chat_template *t, const char *special,
                         const lmx_chat_template_render_options *opts, const char *label) {
    char *msgs = json_text(*jv_dict_get_cstr(jc, "messages", 8));
    const char *names[16];
    const char *vals[16];
    char *owned[16];
    int nv = 0;
    const cJSON *tools = cJSON_GetObjectItem(c, "tools");
    if (cJSON_IsArray(tools)) {
        names[nv] = "tools";
        owned[nv] = json_text(*jv_dict_get_cstr(jc, "tools", 5));
        vals[nv] = owned[nv];
        nv++;
    }
    jv jvars = *jv_dict_get_cstr(jc, "vars", 4);
    for (size_t k = 0; k < jvars.u.d->n && nv < 16; k++) {
        names[nv] = jvars.u.d->k[k].u.s->s;
        owned[nv] = json_text(jvars.u.d->v[k]);
        vals[nv] = owned[nv];
        nv++;
    }
    bool agp = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
    char *ctx = lmx_chat_template_context_json(special, msgs, agp, nv, names, vals);
    char *out = NULL;
    size_t out_len = 0;
    lmx_status st = LMX_ERR_OUT_OF_MEMORY;
    if (t && ctx) st = lmx_chat_template_render_opts(t, ctx, strlen(ctx), opts, &out, &out_len);
    const char *conv = cJSON_GetObjectItem(c, "conversation")->valuestring;
    if (cJSON_IsTrue(cJSON_GetObjectItem(c, "error"))) {
        CHECK_MSG(st == LMX_ERR_TEMPLATE, "%s/%s agp=%d: expected error %s", label, conv, agp,
                  cJSON_GetObjectItem(c, "message")->valuestring);
    } else {
        const char *exp = cJSON_GetObjectItem(c, "expected")->valuestring;
        CHECK_MSG(st == LMX_OK, "%s/%s: %s", label, conv, lmx_last_error_detail());
        if (st == LMX_OK) {
            bool same = out_len == strlen(exp) && !memcmp(out, exp, out_len);
            CHECK_MSG(same, "%s/%s agp=%d: output differs", label, conv, agp);
            if (!same) show_diff(label, exp, out);
        }
    }
    for (int i = 0; i < nv; i++) free(owned[i]);
    free(out);
    free(ctx);
    free(msgs);
}

/* the golden file as cJSON and as jv (for the messages' exact number texts) */
static bool load_golden(const char *path, cJSON **root, jv *jroot) {
    char *raw;
    size_t raw_len;
    char jerrbuf[128];
    *root = NULL;
    if (lmx_fs_read_file(path, 64u << 20, &raw, &raw_len) != LMX_OK) return false;
    *root = cJSON_ParseWithLength(raw, raw_len);
    bool ok = *root && jv_from_json(raw, raw_len, jroot, jerrbuf, sizeof jerrbuf);
    free(raw);
    if (!ok) {
        cJSON_Delete(*root);
        *root = NULL;
    }
    return ok;
}

static void test_real(void) {
    cJSON *root;
    jv jroot;
    if (!load_golden(LMX_SOURCE_DIR "/tests/fixtures/chat/real.json", &root, &jroot)) {
        SKIP("tests/fixtures/chat/real.json not present");
        return;
    }
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    const jv *jcases = jv_dict_get_cstr(jroot, "cases", 5);
    int idx = 0;
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next, idx++) {
        jv jc = jcases->u.l->v[idx];
        const char *kind = cJSON_GetObjectItem(c, "kind")->valuestring;
        if (strcmp(kind, "render")) continue;
        const char *fam = cJSON_GetObjectItem(c, "family")->valuestring;
        char dir[1100];
        if (!extract(fam, dir, sizeof dir)) { SKIP("tokenizer fixture %s absent (tests/fixtures/tokenizers)", fam); jv_decref(jroot); cJSON_Delete(root); return; }
        char *src = NULL, *special = NULL;
        lmx_status st = lmx_chat_template_load_dir(dir, &src, &special);
        CHECK_MSG(st == LMX_OK, "%s: %s", fam, lmx_last_error_detail());
        if (st != LMX_OK) continue;
        const cJSON *tname = cJSON_GetObjectItem(c, "template_name");
        const cJSON *override = cJSON_IsString(tname) ? cJSON_GetObjectItem(cJSON_GetObjectItem(root, "templates"), tname->valuestring) : NULL;
        lmx_chat_template *t = NULL;
        st = lmx_chat_template_create(cJSON_IsString(override) ? override->valuestring : src, &t);
        CHECK_MSG(st == LMX_OK, "%s: %s", fam, lmx_last_error_detail());
        char label[160];
        snprintf(label, sizeof label, "real %d %s/%s", idx, fam, cJSON_IsString(tname) ? tname->valuestring : "own");
        check_record(c, jc, t, special, NULL, label);
        n_real++;
        free(src);
        free(special);
        lmx_chat_template_destroy(t);
    }
    jv_decref(jroot);
    cJSON_Delete(root);
}

/* gpt-oss's Harmony template (tests/fixtures/chat/gpt_oss.json, made by gen_chat_gpt_oss.py): the
 * template and tokenizer_config.json of openai/gpt-oss-20b in LMX_GPT_OSS_TEMPLATE_DIR, loaded through
 * the model-directory loader; the template must be the revision the goldens were made from (its
 * SHA-256), strftime_now fixed to their time (UTC). */
static int n_oss;

static void test_gpt_oss(void) {
    cJSON *root;
    jv jroot;
    if (!load_golden(LMX_SOURCE_DIR "/tests/fixtures/chat/gpt_oss.json", &root, &jroot)) {
        CHECK_MSG(false, "tests/fixtures/chat/gpt_oss.json does not load");
        return;
    }
    char *src = NULL, *special = NULL;
    char tpath[1200];
    snprintf(tpath, sizeof tpath, "%s/chat_template.jinja", LMX_GPT_OSS_TEMPLATE_DIR);
    if (!lmx_fs_is_file(tpath)) {
        SKIP("%s absent: copy chat_template.jinja and tokenizer_config.json of openai/gpt-oss-20b there "
             "(tests/fixtures/chat/README.md)", tpath);
        jv_decref(jroot);
        cJSON_Delete(root);
        return;
    }
    lmx_status st = lmx_chat_template_load_dir(LMX_GPT_OSS_TEMPLATE_DIR, &src, &special);
    CHECK_MSG(st == LMX_OK, "%s: %s", LMX_GPT_OSS_TEMPLATE_DIR, lmx_last_error_detail());
    char hex[65] = "";
    if (src) CHECK(lmx_sha256_bytes(src, strlen(src), hex) == LMX_OK);
    const char *want = cJSON_GetObjectItem(root, "template_sha256")->valuestring;
    CHECK_MSG(!strcmp(hex, want), "%s: SHA-256 %s, the goldens were made from %s", tpath, hex, want);
    lmx_chat_template *t = NULL;
    if (src && !strcmp(hex, want)) CHECK_EQ_INT(lmx_chat_template_create(src, &t), LMX_OK);
    setenv("TZ", "UTC", 1);
    lmx_chat_template_render_options o = {.fixed_time = true,
                                          .time = (int64_t)cJSON_GetObjectItem(root, "fixed_time")->valuedouble};
    const jv *jcases = jv_dict_get_cstr(jroot, "cases", 5);
    int idx = 0;
    for (const cJSON *c = t ? cJSON_GetObjectItem(root, "cases")->child : NULL; c; c = c->next, idx++) {
        char label[64];
        snprintf(label, sizeof label, "gpt-oss %d", idx);
        check_record(c, jcases->u.l->v[idx], t, special, &o, label);
        n_oss++;
    }
    CHECK(!t || n_oss >= 30);
    lmx_chat_template_destroy(t);
    free(src);
    free(special);
    jv_decref(jroot);
    cJSON_Delete(root);
}

/* The CLI contract: `lmx chat-template DIR [--no-generation-prompt] [--var k=v]` < messages. */
static int n_cli;

static void run_cli_case(const char *fam, const char *conv, bool agp, const char *var_name, const char *var_json) {
    cJSON *root = load_json(LMX_SOURCE_DIR "/tests/fixtures/chat/real.json");
    if (!root) return;
    char *raw;
    size_t raw_len;
    jv jroot;
    char e[128];
    if (lmx_fs_read_file(LMX_SOURCE_DIR "/tests/fixtures/chat/real.json", 64u << 20, &raw, &raw_len) != LMX_OK) { cJSON_Delete(root); return; }
    bool parsed = jv_from_json(raw, raw_len, &jroot, e, sizeof e);
    free(raw);
    if (!parsed) { cJSON_Delete(root); return; }
    const jv *jcases = jv_dict_get_cstr(jroot, "cases", 5);
    int idx = 0;
    bool found = false;
    for (const cJSON *c = cJSON_GetObjectItem(root, "cases")->child; c; c = c->next, idx++) {
        if (strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, "render") || cJSON_GetObjectItem(c, "template_name")) continue;
        if (strcmp(cJSON_GetObjectItem(c, "family")->valuestring, fam) || strcmp(cJSON_GetObjectItem(c, "conversation")->valuestring, conv)) continue;
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")) != agp || cJSON_IsArray(cJSON_GetObjectItem(c, "tools"))) continue;
        const cJSON *vars = cJSON_GetObjectItem(c, "vars");
        if (var_name ? !cJSON_GetObjectItem(vars, var_name) : cJSON_GetArraySize(vars) != 0) continue;
        if (var_name) {
            char *vt = cJSON_PrintUnformatted(cJSON_GetObjectItem(vars, var_name));
            bool same = !strcmp(vt, var_json);
            free(vt);
            if (!same) continue;
        }
        found = true;
        char dir[1100];
        if (!extract(fam, dir, sizeof dir)) { SKIP("tokenizer fixture %s absent", fam); break; }
        char in_path[1200], out_path[1200];
        snprintf(in_path, sizeof in_path, "%s/chat_cli_in.json", LMX_BINARY_DIR);
        snprintf(out_path, sizeof out_path, "%s/chat_cli_out.txt", LMX_BINARY_DIR);
        char *msgs = json_text(*jv_dict_get_cstr(jcases->u.l->v[idx], "messages", 8));
        FILE *f = fopen(in_path, "w");
        CHECK(f && msgs);
        if (!f || !msgs) { free(msgs); if (f) fclose(f); break; }
        fputs(msgs, f);
        fclose(f);
        free(msgs);
        char var_arg[512] = "";
        if (var_name) snprintf(var_arg, sizeof var_arg, "--var '%s=%s'", var_name, var_json);
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "'%s' chat-template '%s' %s %s < '%s' > '%s'", LMX_CLI_PATH, dir,
                 agp ? "" : "--no-generation-prompt", var_arg, in_path, out_path);
        CHECK_MSG(system(cmd) == 0, "command failed: %s", cmd);
        char *got;
        size_t got_len;
        CHECK(lmx_fs_read_file(out_path, 64u << 20, &got, &got_len) == LMX_OK);
        const char *exp = cJSON_GetObjectItem(c, "expected")->valuestring;
        CHECK_MSG(got_len == strlen(exp) && !memcmp(got, exp, got_len), "CLI %s/%s output differs", fam, conv);
        n_cli++;
        free(got);
        break;
    }
    CHECK_MSG(found, "no golden record for %s/%s", fam, conv);
    jv_decref(jroot);
    cJSON_Delete(root);
}

static void test_cli(void) {
    char probe[1100];
    if (!extract("qwen3", probe, sizeof probe)) { SKIP("tokenizer fixtures absent"); return; }
    run_cli_case("qwen3", "think", true, "enable_thinking", "false");
    run_cli_case("qwen3", "unicode", false, NULL, NULL);
    run_cli_case("gemma3", "multimodal", true, NULL, NULL);
    run_cli_case("llama3", "system_multi", false, NULL, NULL);
}

int main(void) {
    RUN(test_synthetic);
    RUN(test_builtins);
    RUN(test_real);
    RUN(test_gpt_oss);
    RUN(test_cli);
    fprintf(stderr, "synthetic cases: %d (%d expected errors), real renderings: %d, gpt-oss renderings: %d, CLI runs: %d\n",
            n_syn, n_syn_err, n_real, n_oss, n_cli);
    return lmx_test_summary();
}
