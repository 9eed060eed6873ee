/* tokenizer.c — loading tokenizer.json / tokenizer_config.json and the encode/decode pipelines:
 * added tokens (raw) -> normalizer -> added tokens (normalized) -> pre-tokenizer -> BPE ->
 * post-processor; decode: id -> token string -> decoder pipeline. See tokenizer.h. */
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/json_scan.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"

#include <stdlib.h>
#include <string.h>

struct lmx_tokenizer {
    cJSON *config;          /* tokenizer_config.json, or NULL */
    tok_normalizer *nz;
    tok_pretok *pt;
    tok_bpe *bpe;
    tok_added *added;
    tok_post *post;
    tok_decoder *dec;
    size_t vocab_size;
    uint8_t *special;       /* [vocab_size] 1 when the id's token string is a special added token */
    int32_t sid[LMX_TOK_SPECIAL_COUNT];
    char *stok[LMX_TOK_SPECIAL_COUNT];
};

#define MAX_TOKENIZER_BYTES ((size_t)1 << 30)

void lmx_tokenizer_destroy(lmx_tokenizer *t) {
    if (!t) return;
    cJSON_Delete(t->config);
    tok_normalizer_free(t->nz);
    tok_pretok_free(t->pt);
    tok_bpe_free(t->bpe);
    tok_added_free(t->added);
    tok_post_free(t->post);
    tok_decoder_free(t->dec);
    free(t->special);
    for (int i = 0; i < LMX_TOK_SPECIAL_COUNT; i++) free(t->stok[i]);
    free(t);
}

const char *lmx_tokenizer_id_to_token(const lmx_tokenizer *t, int32_t id, size_t *len) {
    const tok_added_token *a = tok_added_by_id(t->added, id);
    if (a) {
        if (len) *len = a->len;
        return a->content;
    }
    return tok_vocab_str(tok_bpe_vocab(t->bpe), id, len);
}

int32_t lmx_tokenizer_token_to_id(const lmx_tokenizer *t, const char *s, size_t n) {
    int32_t id = tok_added_find(t->added, s, n);
    return id >= 0 ? id : tok_vocab_find(tok_bpe_vocab(t->bpe), s, n);
}

size_t lmx_tokenizer_vocab_size(const lmx_tokenizer *t) { return t->vocab_size; }

bool lmx_tokenizer_is_special(const lmx_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->vocab_size && t->special[id];
}

int32_t lmx_tokenizer_special_id(const lmx_tokenizer *t, lmx_tok_special w) {
    return (int)w >= 0 && w < LMX_TOK_SPECIAL_COUNT ? t->sid[w] : -1;
}

const char *lmx_tokenizer_special_token(const lmx_tokenizer *t, lmx_tok_special w) {
    return (int)w >= 0 && w < LMX_TOK_SPECIAL_COUNT ? t->stok[w] : NULL;
}

const void *lmx_tokenizer_config_json(const lmx_tokenizer *t) { return t->config; }

static char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v)) return NULL;
    return strdup(v->valuestring);
}

static lmx_status parse_json_text(const char *path, char *buf, size_t len, cJSON **out) {
    const char *ep = NULL;
    cJSON *j = lmx_json_parse(buf, len, &ep);
    if (!j) {
        size_t off = ep && ep >= buf && ep <= buf + len ? (size_t)(ep - buf) : 0;
        char why[160];
        lmx_json_error(buf, len, ep, why, sizeof why);
        return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: %s (byte %zu)", path, why, off);
    }
    *out = j;
    return LMX_OK;
}

static lmx_status load_json(const char *path, cJSON **out) {
    char *buf;
    size_t len;
    lmx_status st = lmx_fs_read_file(path, MAX_TOKENIZER_BYTES, &buf, &len);
    if (st) return st;
    st = parse_json_text(path, buf, len, out);
    free(buf);
    return st;
}

static lmx_status build(lmx_tokenizer *t, const cJSON *j, const char *raw, const tok_jspan *vs, const tok_jspan *ms) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!cJSON_IsObject(model)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "no \"model\" object");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (cJSON_IsString(mtype) && strcmp(mtype->valuestring, "BPE") != 0)
        return lmx_error(LMX_ERR_UNSUPPORTED, "tokenizer model type %s is not supported", mtype->valuestring);
    lmx_status st;
    if ((st = tok_normalizer_parse(cJSON_GetObjectItemCaseSensitive(j, "normalizer"), &t->nz))) return lmx_error_prefix(st, "normalizer");
    if ((st = tok_pretok_parse(cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), &t->pt))) return lmx_error_prefix(st, "pre_tokenizer");
    if ((st = tok_bpe_parse(model, raw + vs->off, vs->len, raw + ms->off, ms->len, &t->bpe))) return lmx_error_prefix(st, "model");
    if ((st = tok_added_parse(cJSON_GetObjectItemCaseSensitive(j, "added_tokens"), t->nz, &t->added))) return lmx_error_prefix(st, "added_tokens");
    if ((st = tok_post_parse(cJSON_GetObjectItemCaseSensitive(j, "post_processor"), &t->post))) return lmx_error_prefix(st, "post_processor");
    if ((st = tok_decoder_parse(cJSON_GetObjectItemCaseSensitive(j, "decoder"), &t->dec))) return lmx_error_prefix(st, "decoder");
    /* HF would truncate/pad inside encode; a runtime must never drop prompt tokens silently, so
     * these settings are not applied (they are null in the tokenizers LLMs ship). */
    const cJSON *trunc = cJSON_GetObjectItemCaseSensitive(j, "truncation");
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(j, "padding");
    if ((trunc && !cJSON_IsNull(trunc)) || (pad && !cJSON_IsNull(pad)))
        LMX_LOG_W("tokenizer.json: \"truncation\"/\"padding\" settings are ignored (encode returns every token)");
    const tok_vocab *v = tok_bpe_vocab(t->bpe);
    size_t n = 0;
    for (size_t i = 0; i < v->n_ids; i++)
        if (v->str_off[i] != UINT32_MAX) n = i + 1;
    for (size_t i = 0; i < tok_added_count(t->added); i++) {
        const tok_added_token *a = tok_added_get(t->added, i);
        if ((size_t)a->id + 1 > n) n = (size_t)a->id + 1;
    }
    t->vocab_size = n;
    t->special = calloc(n + 1, 1);
    if (!t->special) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer");
    /* HF's is_special_token compares the token *string* with the special set */
    for (size_t i = 0; i < tok_added_count(t->added); i++) {
        const tok_added_token *a = tok_added_get(t->added, i);
        if (!a->special) continue;
        t->special[a->id] = 1;
        int32_t mid = tok_vocab_find(v, a->content, a->len);
        if (mid >= 0 && !tok_added_by_id(t->added, mid)) t->special[mid] = 1;
    }
    return LMX_OK;
}

/* Builds a tokenizer from tokenizer.json text raw[0..raw_len) (raw is modified: NUL-terminated copy
 * owned by the caller) and an optional parsed tokenizer_config.json (ownership taken). */
static lmx_status load_text(const char *name, char *raw, size_t raw_len, cJSON *config, lmx_tokenizer **out) {
    lmx_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(config);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer");
    }
    t->config = config;
    cJSON *j = NULL;
    lmx_status st = LMX_OK;
    /* model.vocab / model.merges are read by the fast scanner; cJSON parses the rest */
    tok_jspan vs, ms;
    if (tok_json_model_spans(raw, raw_len, &vs, &ms)) {
        char *rest = malloc(raw_len + 1);
        if (!rest) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer");
        else {
            memcpy(rest, raw, raw_len);
            rest[raw_len] = '\0';
            memset(rest + vs.off, ' ', vs.len);
            memcpy(rest + vs.off, "{}", 2);
            if (ms.len) {
                memset(rest + ms.off, ' ', ms.len);
                memcpy(rest + ms.off, "[]", 2);
            }
            st = parse_json_text(name, rest, raw_len, &j);
            free(rest);
        }
    } else {
        vs.len = ms.len = vs.off = ms.off = 0;
        st = parse_json_text(name, raw, raw_len, &j);
    }
    if (!st) {
        st = build(t, j, raw, &vs, &ms);
        if (st) lmx_error_prefix(st, "%s", name);
    }
    cJSON_Delete(j);
    if (!st) {
        static const char *keys[LMX_TOK_SPECIAL_COUNT] = {"bos_token", "eos_token", "pad_token", "unk_token"};
        for (int i = 0; i < LMX_TOK_SPECIAL_COUNT; i++) {
            t->stok[i] = t->config ? config_token(t->config, keys[i]) : NULL;
            t->sid[i] = t->stok[i] ? lmx_tokenizer_token_to_id(t, t->stok[i], strlen(t->stok[i])) : -1;
        }
        if (!t->stok[LMX_TOK_UNK] && tok_bpe_unk_id(t->bpe) >= 0) { /* the model's unk_token */
            int32_t u = tok_bpe_unk_id(t->bpe);
            const char *us = lmx_tokenizer_id_to_token(t, u, NULL);
            t->stok[LMX_TOK_UNK] = us ? strdup(us) : NULL;
            t->sid[LMX_TOK_UNK] = t->stok[LMX_TOK_UNK] ? u : -1;
        }
    }
    if (st) {
        lmx_tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return LMX_OK;
}

lmx_status lmx_tokenizer_load_memory(const char *tokenizer_json, size_t len, const char *config_json, size_t config_len,
                                     lmx_tokenizer **out) {
    if (!tokenizer_json || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_tokenizer_load_memory: NULL argument");
    *out = NULL;
    cJSON *cfg = NULL;
    if (config_json) {
        cfg = lmx_json_parse(config_json, config_len, NULL);
        if (!cfg) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "tokenizer_config.json: invalid JSON");
    }
    char *raw = malloc(len + 1);
    if (!raw) {
        cJSON_Delete(cfg);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer");
    }
    memcpy(raw, tokenizer_json, len);
    raw[len] = '\0';
    lmx_status st = load_text("tokenizer.json", raw, len, cfg, out);
    free(raw);
    return st;
}

lmx_status lmx_tokenizer_load(const char *path, lmx_tokenizer **out) {
    if (!path || !out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_tokenizer_load: NULL argument");
    *out = NULL;
    char *json_path, *cfg_path;
    if (lmx_fs_is_dir(path)) {
        json_path = lmx_fs_join(path, "tokenizer.json");
        cfg_path = lmx_fs_join(path, "tokenizer_config.json");
    } else {
        json_path = strdup(path);
        const char *slash = strrchr(path, '/');
        if (slash) {
            char *dir = strndup(path, (size_t)(slash - path) + 1);
            cfg_path = dir ? lmx_fs_join(dir, "tokenizer_config.json") : NULL;
            free(dir);
        } else cfg_path = strdup("tokenizer_config.json");
    }
    if (!json_path || !cfg_path) {
        free(json_path);
        free(cfg_path);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "tokenizer path");
    }
    cJSON *cfg = NULL;
    char *raw = NULL;
    size_t raw_len = 0;
    lmx_status st = LMX_OK;
    if (lmx_fs_exists(cfg_path)) st = load_json(cfg_path, &cfg); /* not a regular file: named by the read */
    if (!st) st = lmx_fs_read_file(json_path, MAX_TOKENIZER_BYTES, &raw, &raw_len);
    if (!st) {
        st = load_text(json_path, raw, raw_len, cfg, out);
        cfg = NULL;
    }
    cJSON_Delete(cfg);
    free(raw);
    free(json_path);
    free(cfg_path);
    return st;
}

/* ---- encode ---- */

typedef struct {
    tok_splits raw, norm;
    tok_buf nbuf;
    tok_pieces pieces;
} enc_scratch;

static void scratch_free(enc_scratch *s) {
    tok_splits_free(&s->raw);
    tok_splits_free(&s->norm);
    tok_buf_free(&s->nbuf);
    tok_pieces_free(&s->pieces);
}

static lmx_status encode_text(const lmx_tokenizer *t, const char *s, size_t n, bool at_start, enc_scratch *x, tok_ids *ids) {
    lmx_status st = tok_normalizer_apply(t->nz, s, n, &x->nbuf);
    if (st) return st;
    st = tok_added_split(t->added, true, x->nbuf.p ? x->nbuf.p : "", x->nbuf.n, &x->norm);
    if (st) return st;
    for (size_t k = 0; k < x->norm.n; k++) {
        const tok_split *sp = &x->norm.v[k];
        if (sp->id >= 0) {
            if (!tok_ids_push(ids, sp->id)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "encode");
            continue;
        }
        st = tok_pretok_apply(t->pt, x->nbuf.p + sp->s, sp->e - sp->s, at_start && sp->s == 0, &x->pieces);
        if (st) return st;
        for (size_t i = 0; i < x->pieces.n; i++) {
            const tok_span *p = &x->pieces.sp[i];
            st = tok_bpe_encode_word(t->bpe, x->pieces.text.p + p->s, p->e - p->s, ids);
            if (st) return st;
        }
    }
    return LMX_OK;
}

lmx_status lmx_tokenizer_encode(const lmx_tokenizer *t, const char *text, size_t len, bool add_special,
                                int32_t **ids_out, size_t *n_out) {
    if (!t || (!text && len) || !ids_out || !n_out) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_tokenizer_encode: NULL argument");
    *ids_out = NULL;
    *n_out = 0;
    if (!text) text = "";
    if (len > (size_t)UINT32_MAX / 4)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "encode: input of %zu bytes is too large (limit 1 GiB)", len);
    size_t bad = tok_utf8_validate(text, len);
    if (bad != len)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "encode: input is not valid UTF-8 (byte 0x%02X at offset %zu)",
                         (unsigned char)text[bad], bad);
    enc_scratch x;
    memset(&x, 0, sizeof x);
    tok_ids ids = {0};
    lmx_status st = tok_added_split(t->added, false, text, len, &x.raw);
    /* copy the raw splits: encode_text reuses the other split list */
    for (size_t i = 0; !st && i < x.raw.n; i++) {
        tok_split sp = x.raw.v[i];
        if (sp.id >= 0) {
            if (!tok_ids_push(&ids, sp.id)) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "encode");
        } else st = encode_text(t, text + sp.s, sp.e - sp.s, sp.s == 0, &x, &ids);
    }
    scratch_free(&x);
    if (!st && add_special && t->post) {
        tok_ids wrapped = {0};
        st = tok_post_apply(t->post, &ids, &wrapped);
        tok_ids_free(&ids);
        ids = wrapped;
    }
    if (st) {
        tok_ids_free(&ids);
        return st;
    }
    if (!ids.v && !(ids.v = malloc(sizeof *ids.v))) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "encode");
    *ids_out = ids.v;
    *n_out = ids.n;
    return LMX_OK;
}

/* ---- decode ---- */

/* Token string for decode (HF: added tokens first, then model; unknown ids skipped). */
const char *tok_tokenizer_decode_token(const lmx_tokenizer *t, int32_t id, bool skip_special, size_t *len) {
    const char *s = lmx_tokenizer_id_to_token(t, id, len);
    if (!s) return NULL;
    if (skip_special && lmx_tokenizer_is_special(t, id)) return NULL;
    return s;
}

lmx_status lmx_tokenizer_decode(const lmx_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                                char **text, size_t *len) {
    if (!t || (!ids && n) || !text) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "lmx_tokenizer_decode: NULL argument");
    *text = NULL;
    if (len) *len = 0;
    tok_dstate *ds = tok_dstate_create(t->dec);
    if (!ds) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "decode");
    tok_buf out = {0};
    lmx_status st = tok_buf_reserve(&out, n * 4 + 16) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "decode");
    for (size_t i = 0; i < n && !st; i++) {
        size_t tl;
        const char *s = tok_tokenizer_decode_token(t, ids[i], skip_special, &tl);
        if (s) st = tok_dstate_push(ds, s, tl, &out);
    }
    if (!st) st = tok_dstate_finish(ds, &out);
    tok_dstate_destroy(ds);
    if (st) {
        tok_buf_free(&out);
        return st;
    }
    if (!out.p && !tok_buf_reserve(&out, 1)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "decode");
    out.p[out.n] = '\0';
    *text = out.p;
    if (len) *len = out.n;
    return LMX_OK;
}

lmx_status lmx_tokenizer_token_to_piece(const lmx_tokenizer *t, int32_t id, char **text, size_t *len) {
    return lmx_tokenizer_decode(t, &id, 1, false, text, len);
}

const tok_decoder *tok_tokenizer_decoder(const lmx_tokenizer *t) { return t->dec; }
const tok_bpe *tok_tokenizer_bpe(const lmx_tokenizer *t) { return t->bpe; }
