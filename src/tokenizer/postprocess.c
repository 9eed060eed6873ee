/* postprocess.c — tokenizer.json post_processor for a single sequence with add_special_tokens:
 * TemplateProcessing (the "single" template), BertProcessing / RobertaProcessing (cls A sep),
 * ByteLevel (offsets only: no ids) and Sequence. Immutable after parse. */
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>

/* The single-sequence template flattened: ids before the sequence, the sequence, ids after;
 * a template may mention the sequence more than once, so store a list of items. */
typedef struct { bool is_seq; int32_t *ids; size_t n; } titem;

typedef enum { PP_NONE, PP_TEMPLATE, PP_SEQ } pp_kind;

struct tok_post {
    pp_kind kind;
    titem *items;
    size_t n_items;
    tok_post **seq;
    size_t n_seq;
};

void tok_post_free(tok_post *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_items; i++) free(p->items[i].ids);
    free(p->items);
    for (size_t i = 0; i < p->n_seq; i++) tok_post_free(p->seq[i]);
    free(p->seq);
    free(p);
}

/* A token id from JSON: an integer in [0, TOK_MAX_ID] (converting anything else to int32_t may be
 * undefined behaviour). */
static bool json_id_ok(const cJSON *x) {
    double d = x->valuedouble;
    return d >= 0 && d <= TOK_MAX_ID && d == (double)(int32_t)d;
}

static lmx_status add_item(tok_post *p, bool is_seq, const int32_t *ids, size_t n) {
    titem *ni = realloc(p->items, (p->n_items + 1) * sizeof *ni);
    if (!ni) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
    p->items = ni;
    titem *it = &p->items[p->n_items++];
    it->is_seq = is_seq;
    it->n = n;
    it->ids = n ? malloc(n * sizeof *ids) : NULL;
    if (n && !it->ids) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
    if (n) memcpy(it->ids, ids, n * sizeof *ids);
    return LMX_OK;
}

static lmx_status parse_template(const cJSON *j, tok_post *p) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    if (!cJSON_IsArray(single)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "TemplateProcessing without \"single\"");
    const cJSON *it;
    cJSON_ArrayForEach(it, single) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        lmx_status st;
        if (sq) st = add_item(p, true, NULL, 0);
        else if (sp) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
            const cJSON *def = cJSON_IsString(name) ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring) : NULL;
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
            if (!cJSON_IsArray(ids))
                return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "TemplateProcessing: special token %s has no ids",
                                 cJSON_IsString(name) ? name->valuestring : "?");
            int32_t buf[64];
            size_t n = 0;
            const cJSON *x;
            cJSON_ArrayForEach(x, ids) {
                if (!cJSON_IsNumber(x) || n == 64 || !json_id_ok(x))
                    return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "TemplateProcessing: bad ids (need at most 64 integers in [0, %d])",
                                     TOK_MAX_ID);
                buf[n++] = (int32_t)x->valuedouble;
            }
            st = add_item(p, false, buf, n);
        } else return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "TemplateProcessing: unknown template item");
        if (st) return st;
    }
    return LMX_OK;
}

static lmx_status parse_pair_processor(const cJSON *j, tok_post *p) {
    /* {"sep": ["</s>", 2], "cls": ["<s>", 0]} */
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(j, "cls");
    const cJSON *sep = cJSON_GetObjectItemCaseSensitive(j, "sep");
    if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) || !cJSON_IsNumber(cJSON_GetArrayItem(cls, 1)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(sep, 1)) || !json_id_ok(cJSON_GetArrayItem(cls, 1)) ||
        !json_id_ok(cJSON_GetArrayItem(sep, 1)))
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "post_processor: \"cls\"/\"sep\" must be [token, id]");
    int32_t c = (int32_t)cJSON_GetArrayItem(cls, 1)->valuedouble, s = (int32_t)cJSON_GetArrayItem(sep, 1)->valuedouble;
    lmx_status st = add_item(p, false, &c, 1);
    if (!st) st = add_item(p, true, NULL, 0);
    if (!st) st = add_item(p, false, &s, 1);
    return st;
}

lmx_status tok_post_parse(const cJSON *j, tok_post **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return LMX_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "post_processor without a \"type\"");
    const char *t = type->valuestring;
    tok_post *p = calloc(1, sizeof *p);
    if (!p) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
    lmx_status st = LMX_OK;
    if (!strcmp(t, "ByteLevel")) p->kind = PP_NONE;
    else if (!strcmp(t, "TemplateProcessing")) { p->kind = PP_TEMPLATE; st = parse_template(j, p); }
    else if (!strcmp(t, "BertProcessing") || !strcmp(t, "RobertaProcessing")) { p->kind = PP_TEMPLATE; st = parse_pair_processor(j, p); }
    else if (!strcmp(t, "Sequence")) {
        p->kind = PP_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "processors");
        if (!cJSON_IsArray(arr)) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Sequence post_processor without \"processors\"");
        else {
            p->seq = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *p->seq);
            if (!p->seq) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
            const cJSON *it;
            cJSON_ArrayForEach(it, arr) {
                if (st) break;
                st = tok_post_parse(it, &p->seq[p->n_seq]);
                if (!st && p->seq[p->n_seq]) p->n_seq++;
            }
        }
    } else st = lmx_error(LMX_ERR_UNSUPPORTED, "post_processor type %s is not supported", t);
    if (st) {
        tok_post_free(p);
        return st;
    }
    *out = p;
    return LMX_OK;
}

lmx_status tok_post_apply(const tok_post *p, const tok_ids *in, tok_ids *out) {
    out->n = 0;
    if (!p || p->kind == PP_NONE)
        return tok_ids_append(out, in->v, in->n) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
    if (p->kind == PP_TEMPLATE) {
        for (size_t i = 0; i < p->n_items; i++) {
            const titem *it = &p->items[i];
            bool ok = it->is_seq ? tok_ids_append(out, in->v, in->n) : tok_ids_append(out, it->ids, it->n);
            if (!ok) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
        }
        return LMX_OK;
    }
    /* Sequence: each processor in turn */
    tok_ids cur = {0}, nxt = {0};
    if (!tok_ids_append(&cur, in->v, in->n)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
    for (size_t i = 0; i < p->n_seq; i++) {
        lmx_status st = tok_post_apply(p->seq[i], &cur, &nxt);
        if (st) { tok_ids_free(&cur); tok_ids_free(&nxt); return st; }
        tok_ids t = cur; cur = nxt; nxt = t;
    }
    bool ok = tok_ids_append(out, cur.v, cur.n);
    tok_ids_free(&cur);
    tok_ids_free(&nxt);
    return ok ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "post_processor");
}
