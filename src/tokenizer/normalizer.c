/* normalizer.c — tokenizer.json normalizers: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Strip,
 * StripAccents, Replace (String or Regex), Prepend, ByteLevel and Sequence. Immutable after parse. */
#include "tokenizer/tok_internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef enum { NZ_NFC, NZ_NFD, NZ_NFKC, NZ_NFKD, NZ_LOWER, NZ_STRIP, NZ_STRIP_ACCENTS, NZ_REPLACE,
               NZ_PREPEND, NZ_BYTELEVEL, NZ_SEQ } nz_kind;

struct tok_normalizer {
    nz_kind kind;
    bool strip_left, strip_right;
    tok_regex re;        /* Replace */
    char *content;       /* Replace content / Prepend text */
    size_t content_len;
    tok_normalizer **seq;
    size_t n_seq;
};

void tok_normalizer_free(tok_normalizer *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n_seq; i++) tok_normalizer_free(n->seq[i]);
    free(n->seq);
    tok_regex_free(&n->re);
    free(n->content);
    free(n);
}

static char *dup_json_string(const cJSON *j, size_t *len) {
    if (!cJSON_IsString(j)) return NULL;
    size_t n = strlen(j->valuestring);
    char *p = malloc(n + 1);
    if (p) memcpy(p, j->valuestring, n + 1);
    if (len) *len = n;
    return p;
}

lmx_status tok_normalizer_parse(const cJSON *j, tok_normalizer **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return LMX_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "normalizer without a \"type\"");
    const char *t = type->valuestring;
    tok_normalizer *n = calloc(1, sizeof *n);
    if (!n) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    lmx_status st = LMX_OK;
    if (!strcmp(t, "NFC")) n->kind = NZ_NFC;
    else if (!strcmp(t, "NFD")) n->kind = NZ_NFD;
    else if (!strcmp(t, "NFKC")) n->kind = NZ_NFKC;
    else if (!strcmp(t, "NFKD")) n->kind = NZ_NFKD;
    else if (!strcmp(t, "Lowercase")) n->kind = NZ_LOWER;
    else if (!strcmp(t, "StripAccents")) n->kind = NZ_STRIP_ACCENTS;
    else if (!strcmp(t, "ByteLevel")) n->kind = NZ_BYTELEVEL;
    else if (!strcmp(t, "Strip")) {
        n->kind = NZ_STRIP;
        n->strip_left = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_left"));
        n->strip_right = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_right"));
    } else if (!strcmp(t, "Prepend")) {
        n->kind = NZ_PREPEND;
        n->content = dup_json_string(cJSON_GetObjectItemCaseSensitive(j, "prepend"), &n->content_len);
        if (!n->content) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Prepend normalizer without \"prepend\"");
    } else if (!strcmp(t, "Replace")) {
        n->kind = NZ_REPLACE;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        n->content = dup_json_string(cJSON_GetObjectItemCaseSensitive(j, "content"), &n->content_len);
        if (!n->content) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Replace normalizer without \"content\"");
        else if (cJSON_IsString(ps)) st = tok_regex_compile(&n->re, ps->valuestring, true);
        else if (cJSON_IsString(pr)) st = tok_regex_compile(&n->re, pr->valuestring, false);
        else st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Replace normalizer without a String or Regex pattern");
    } else if (!strcmp(t, "Sequence")) {
        n->kind = NZ_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        if (!cJSON_IsArray(arr)) st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "Sequence normalizer without \"normalizers\"");
        else {
            int cnt = cJSON_GetArraySize(arr);
            n->seq = calloc((size_t)cnt + 1, sizeof *n->seq);
            if (!n->seq) st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
            const cJSON *it;
            cJSON_ArrayForEach(it, arr) {
                if (st) break;
                st = tok_normalizer_parse(it, &n->seq[n->n_seq]);
                if (!st && n->seq[n->n_seq]) n->n_seq++;
            }
        }
    } else {
        st = lmx_error(LMX_ERR_UNSUPPORTED, "normalizer type %s is not supported", t);
    }
    if (st) {
        tok_normalizer_free(n);
        return st;
    }
    *out = n;
    return LMX_OK;
}

/* Text whose code points are all below U+0300 is unchanged by NFC (no character there has
 * NFC_Quick_Check No/Maybe); NFD/NFKC/NFKD need ASCII for the same shortcut. */
static bool stable_fast(const char *s, size_t n, bool nfc) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) continue;
        if (!nfc || c >= 0xCC) return false; /* lead bytes >= 0xCC start code points >= U+0300 */
    }
    return true;
}

static lmx_status apply_utf8proc(const char *s, size_t n, utf8proc_option_t opt, tok_buf *out) {
    if (stable_fast(s, n, opt == UTF8PROC_COMPOSE)) {
        out->n = 0;
        return tok_buf_append(out, s, n) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    }
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, opt | UTF8PROC_STABLE);
    if (r < 0) {
        free(dst);
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "Unicode normalization failed: %s", utf8proc_errmsg(r));
    }
    out->n = 0;
    bool ok = tok_buf_append(out, (const char *)dst, (size_t)r);
    free(dst);
    return ok ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
}

/* One step: input s[0..n) (may alias nothing in out), result in out. */
static lmx_status apply_one(const tok_normalizer *nz, const char *s, size_t n, tok_buf *out) {
    out->n = 0;
    if (!tok_buf_reserve(out, n)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    out->p[0] = '\0';
    switch (nz->kind) {
    case NZ_NFC: return apply_utf8proc(s, n, UTF8PROC_COMPOSE, out);
    case NZ_NFD: return apply_utf8proc(s, n, UTF8PROC_DECOMPOSE, out);
    case NZ_NFKC: return apply_utf8proc(s, n, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
    case NZ_NFKD: return apply_utf8proc(s, n, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
    case NZ_LOWER:
    case NZ_STRIP_ACCENTS:
        for (size_t i = 0; i < n;) {
            int adv;
            uint32_t c = tok_utf8_decode(s + i, n - i, &adv);
            char tmp[8];
            int k;
            if (nz->kind == NZ_LOWER) {
                if (c == 0x130) { /* full lowercase mapping of U+0130 is "i" + U+0307 */
                    memcpy(tmp, "i\xCC\x87", 3);
                    k = 3;
                } else k = tok_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)c), tmp);
            } else {
                k = utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_MN ? 0 : tok_utf8_encode(c, tmp);
            }
            if (!tok_buf_append(out, tmp, (size_t)k)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
            i += (size_t)adv;
        }
        return LMX_OK;
    case NZ_STRIP: {
        size_t a = 0, b = n;
        if (nz->strip_left)
            while (a < b) {
                int adv;
                uint32_t c = tok_utf8_decode(s + a, b - a, &adv);
                if (!tok_is_whitespace(c)) break;
                a += (size_t)adv;
            }
        if (nz->strip_right)
            while (b > a) {
                size_t k = b - 1;
                while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                int adv;
                if (!tok_is_whitespace(tok_utf8_decode(s + k, b - k, &adv))) break;
                b = k;
            }
        return tok_buf_append(out, s + a, b - a) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    }
    case NZ_PREPEND:
        if (n && !tok_buf_append(out, nz->content, nz->content_len)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
        return tok_buf_append(out, s, n) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    case NZ_BYTELEVEL:
        return tok_bytelevel_encode(out, s, n) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    case NZ_REPLACE: {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(nz->re.code, NULL);
        if (!md) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
        size_t pos = 0, ms, me;
        bool ok = true;
        int r = 0;
        while (ok && pos <= n && (r = tok_regex_next(&nz->re, md, s, n, pos, &ms, &me)) > 0) {
            ok = tok_buf_append(out, s + pos, ms - pos) && tok_buf_append(out, nz->content, nz->content_len);
            if (me == ms) { /* empty match: keep one character and move on */
                if (ms >= n) { pos = n; break; }
                int adv = tok_utf8_len((unsigned char)s[ms]);
                ok = ok && tok_buf_append(out, s + ms, (size_t)adv);
                pos = ms + (size_t)adv;
            } else pos = me;
        }
        if (ok && pos < n) ok = tok_buf_append(out, s + pos, n - pos);
        pcre2_match_data_free(md);
        if (r < 0) return lmx_error_prefix(LMX_ERR_INVALID_ARGUMENT, "Replace normalizer");
        return ok ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    }
    case NZ_SEQ: {
        tok_buf tmp = {0};
        if (!tok_buf_append(out, s, n)) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
        for (size_t i = 0; i < nz->n_seq; i++) {
            lmx_status st = apply_one(nz->seq[i], out->p, out->n, &tmp);
            if (st) { tok_buf_free(&tmp); return st; }
            tok_buf sw = *out; *out = tmp; tmp = sw;
        }
        tok_buf_free(&tmp);
        return LMX_OK;
    }
    }
    return LMX_OK;
}

lmx_status tok_normalizer_apply(const tok_normalizer *nz, const char *s, size_t n, tok_buf *out) {
    if (!nz) {
        out->n = 0;
        return tok_buf_append(out, s, n) ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "normalizer");
    }
    return apply_one(nz, s, n, out);
}
