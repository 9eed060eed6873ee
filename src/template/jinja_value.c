/* jinja_value.c — refcounted values of the Jinja engine: construction, containers, truthiness,
 * equality, the string builder and Python-compatible printing (str/repr, float repr). */
#include "jinja_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char jv_oom_hint[] = "<out of memory>";

static jv jv_oom(void) { return jv_undef(jv_oom_hint); }

static int *rcp(jv v) {
    switch (v.t) {
    case JV_STR: return &v.u.s->rc;
    case JV_LIST: return &v.u.l->rc;
    case JV_DICT: case JV_NS: return &v.u.d->rc;
    case JV_FUNC: return &v.u.fn->rc;
    case JV_BIG: return &v.u.big->rc;
    default: return NULL;
    }
}

jv jv_incref(jv v) {
    int *rc = rcp(v);
    if (rc && *rc > 0) (*rc)++;
    return v;
}

void jv_decref(jv v) {
    int *rc = rcp(v);
    if (!rc || *rc <= 0) return;
    if (--*rc > 0) return;
    switch (v.t) {
    case JV_STR: free(v.u.s); break;
    case JV_BIG: free(v.u.big->text); free(v.u.big); break;
    case JV_LIST:
        for (size_t i = 0; i < v.u.l->n; i++) jv_decref(v.u.l->v[i]);
        free(v.u.l->v);
        free(v.u.l);
        break;
    case JV_DICT: case JV_NS:
        for (size_t i = 0; i < v.u.d->n; i++) { jv_decref(v.u.d->k[i]); jv_decref(v.u.d->v[i]); }
        free(v.u.d->k);
        free(v.u.d->v);
        free(v.u.d);
        break;
    case JV_FUNC:
        jv_decref(v.u.fn->self);
        jv_decref(v.u.fn->caller);
        free(v.u.fn);
        break;
    default: break;
    }
}

void jv_make_immortal(jv v) {
    int *rc = rcp(v);
    if (!rc) return;
    *rc = -1;
    if (v.t == JV_LIST) for (size_t i = 0; i < v.u.l->n; i++) jv_make_immortal(v.u.l->v[i]);
    if (v.t == JV_DICT)
        for (size_t i = 0; i < v.u.d->n; i++) { jv_make_immortal(v.u.d->k[i]); jv_make_immortal(v.u.d->v[i]); }
}

jv jv_str_new(const char *s, size_t len) {
    jv_str *p = malloc(sizeof *p + len + 1);
    if (!p) return jv_oom();
    p->rc = 1;
    p->len = len;
    if (len) memcpy(p->s, s, len);
    p->s[len] = '\0';
    jv v = {.t = JV_STR};
    v.u.s = p;
    return v;
}

jv jv_str_cstr(const char *s) { return jv_str_new(s, strlen(s)); }

jv jv_int128(jv_i128 x) {
    if (x >= INT64_MIN && x <= INT64_MAX) return jv_int((int64_t)x);
    jv_big *b = malloc(sizeof *b);
    if (!b) return jv_oom();
    b->rc = 1;
    b->v = x;
    b->text = NULL;
    jv v = {.t = JV_BIG};
    v.u.big = b;
    return v;
}

bool jv_get_i128(jv v, jv_i128 *out) {
    switch (v.t) {
    case JV_INT: *out = v.u.i; return true;
    case JV_BOOL: *out = v.u.b; return true;
    case JV_BIG: *out = v.u.big->v; return !v.u.big->text;
    default: return false;
    }
}

static jv huge_new(bool neg, const char *digits, size_t n) {
    jv_big *b = malloc(sizeof *b);
    char *t = malloc(n + 2);
    if (!b || !t) { free(b); free(t); return jv_oom(); }
    size_t k = 0;
    if (neg) t[k++] = '-';
    memcpy(t + k, digits, n);
    t[k + n] = '\0';
    b->rc = 1;
    b->v = 0;
    b->text = t;
    jv v = {.t = JV_BIG};
    v.u.big = b;
    return v;
}

jv jv_int_text(const char *s, size_t n) {
    jv_i128 x;
    if (jv_i128_parse(s, n, &x)) return jv_int128(x);
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    char *d = malloc(n + 1);
    if (!d) return jv_oom();
    size_t k = 0;
    for (; i < n; i++) if (s[i] >= '0' && s[i] <= '9' && (k || s[i] != '0')) d[k++] = s[i];
    jv v = huge_new(neg, d, k);
    free(d);
    return v;
}

/* sign and decimal digits of an integer of any size */
static const char *int_digits(jv v, char *buf, bool *neg) {
    const char *t = jv_is_huge(v) ? v.u.big->text : buf;
    if (!jv_is_huge(v)) { jv_i128 x = 0; jv_get_i128(v, &x); jv_i128_str(x, buf); }
    *neg = t[0] == '-';
    return *neg ? t + 1 : t;
}

int jv_int_cmp(jv a, jv b) {
    char ba[48], bb[48];
    bool na, nb;
    const char *da = int_digits(a, ba, &na), *db = int_digits(b, bb, &nb);
    if (na != nb) return na ? -1 : 1;
    size_t la = strlen(da), lb = strlen(db);
    int r = la != lb ? (la < lb ? -1 : 1) : strcmp(da, db);
    if (r) r = r < 0 ? -1 : 1;
    return na ? -r : r;
}

jv jv_int_neg(jv v, bool abs_only) {
    if (jv_is_huge(v)) {
        bool neg = v.u.big->text[0] == '-';
        const char *d = neg ? v.u.big->text + 1 : v.u.big->text;
        return huge_new(abs_only ? false : !neg, d, strlen(d));
    }
    jv_i128 x = 0;
    jv_get_i128(v, &x);
    if (x == JV_I128_MIN) return huge_new(false, "170141183460469231731687303715884105728", 39); /* 2^127 */
    return jv_int128(abs_only && x >= 0 ? x : -x);
}

size_t jv_i128_str(jv_i128 x, char *buf) {
    char tmp[48];
    size_t n = 0;
    unsigned __int128 m = x < 0 ? (unsigned __int128)0 - (unsigned __int128)x : (unsigned __int128)x;
    do { tmp[n++] = (char)('0' + (int)(m % 10)); m /= 10; } while (m);
    size_t k = 0;
    if (x < 0) buf[k++] = '-';
    while (n) buf[k++] = tmp[--n];
    buf[k] = '\0';
    return k;
}

bool jv_i128_parse(const char *s, size_t n, jv_i128 *out) {
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    unsigned __int128 m = 0, lim = neg ? (unsigned __int128)1 << 127 : ((unsigned __int128)1 << 127) - 1;
    bool any = false;
    for (; i < n; i++) {
        if (s[i] == '_') continue;
        if (s[i] < '0' || s[i] > '9') return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (m > (lim - d) / 10) return false;
        m = m * 10 + d;
        any = true;
    }
    if (!any) return false;
    *out = neg ? (jv_i128)(0 - m) : (jv_i128)m;
    return true;
}

jv jv_list_new(size_t cap) {
    jv_list *l = calloc(1, sizeof *l);
    if (!l) return jv_oom();
    l->rc = 1;
    if (cap) {
        l->v = malloc(cap * sizeof *l->v);
        if (!l->v) { free(l); return jv_oom(); }
        l->cap = cap;
    }
    jv v = {.t = JV_LIST};
    v.u.l = l;
    return v;
}

jv jv_dict_new(size_t cap) {
    jv_dict *d = calloc(1, sizeof *d);
    if (!d) return jv_oom();
    d->rc = 1;
    if (cap) {
        d->k = malloc(cap * sizeof *d->k);
        d->v = malloc(cap * sizeof *d->v);
        if (!d->k || !d->v) { free(d->k); free(d->v); free(d); return jv_oom(); }
        d->cap = cap;
    }
    jv v = {.t = JV_DICT};
    v.u.d = d;
    return v;
}

jv jv_ns_new(void) {
    jv v = jv_dict_new(4);
    if (v.t == JV_DICT) v.t = JV_NS;
    return v;
}

jv jv_func_new(jf_kind kind, const char *name, jv self) {
    jv_func *f = calloc(1, sizeof *f);
    if (!f) { jv_decref(self); return jv_oom(); }
    f->rc = 1;
    f->kind = kind;
    f->name = name;
    f->self = self;
    f->caller = jv_undef(NULL);
    jv v = {.t = JV_FUNC};
    v.u.fn = f;
    return v;
}

int jv_depth(jv v) {
    if (v.t == JV_LIST) return v.u.l->depth;
    if (v.t == JV_DICT || v.t == JV_NS) return v.u.d->depth;
    return 0;
}

bool jv_list_push(jv list, jv item) {
    jv_list *l = list.u.l;
    if (jv_depth(item) + 1 > l->depth) l->depth = jv_depth(item) + 1;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        jv *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) { jv_decref(item); return false; }
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = item;
    return true;
}

static bool key_eq_cstr(jv k, const char *s, size_t len) {
    return k.t == JV_STR && k.u.s->len == len && memcmp(k.u.s->s, s, len) == 0;
}

const jv *jv_dict_get_cstr(jv dict, const char *key, size_t len) {
    jv_dict *d = dict.u.d;
    for (size_t i = 0; i < d->n; i++)
        if (key_eq_cstr(d->k[i], key, len)) return &d->v[i];
    return NULL;
}

const jv *jv_dict_get(jv dict, jv key) {
    if (key.t == JV_STR) return jv_dict_get_cstr(dict, key.u.s->s, key.u.s->len);
    jv_dict *d = dict.u.d;
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], key)) return &d->v[i];
    return NULL;
}

bool jv_dict_set(jv dict, jv key, jv val) {
    jv_dict *d = dict.u.d;
    if (val.u.d != d && jv_depth(val) + 1 > d->depth) d->depth = jv_depth(val) + 1;
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], key)) {
            jv_decref(d->v[i]);
            d->v[i] = val;
            jv_decref(key);
            return true;
        }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 4;
        jv *nk = realloc(d->k, nc * sizeof *nk);
        if (!nk) { jv_decref(key); jv_decref(val); return false; }
        d->k = nk;
        jv *nv = realloc(d->v, nc * sizeof *nv);
        if (!nv) { jv_decref(key); jv_decref(val); return false; }
        d->v = nv;
        d->cap = nc;
    }
    d->k[d->n] = key;
    d->v[d->n] = val;
    d->n++;
    return true;
}

bool jv_dict_set_cstr(jv dict, const char *key, jv val) {
    jv_dict *d = dict.u.d;
    size_t len = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (key_eq_cstr(d->k[i], key, len)) { /* replace without allocating a key */
            if (val.u.d != d && jv_depth(val) + 1 > d->depth) d->depth = jv_depth(val) + 1;
            jv_decref(d->v[i]);
            d->v[i] = val;
            return true;
        }
    jv k = jv_str_new(key, len);
    if (jv_is_oom(k)) { jv_decref(val); return false; }
    return jv_dict_set(dict, k, val);
}

bool jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_BIG: return true; /* never 0: 0 is a JV_INT */
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->len > 0;
    case JV_LIST: return v.u.l->n > 0;
    case JV_DICT: return v.u.d->n > 0;
    default: return true;
    }
}

bool jv_is_number(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL || v.t == JV_BIG; }

double jv_as_double(jv v) {
    switch (v.t) {
    case JV_INT: return (double)v.u.i;
    case JV_BIG: return v.u.big->text ? strtod(v.u.big->text, NULL) : (double)v.u.big->v;
    case JV_FLOAT: return v.u.f;
    case JV_BOOL: return v.u.b ? 1.0 : 0.0;
    default: return 0.0;
    }
}

bool jv_equal(jv a, jv b) {
    if (jv_is_number(a) && jv_is_number(b)) {
        jv_i128 x, y;
        if (jv_get_i128(a, &x) && jv_get_i128(b, &y)) return x == y;
        if (jv_is_huge(a) || jv_is_huge(b)) return jv_is_integer(a) && jv_is_integer(b) && jv_int_cmp(a, b) == 0;
        return jv_as_double(a) == jv_as_double(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return a.u.s->len == b.u.s->len && memcmp(a.u.s->s, b.u.s->s, a.u.s->len) == 0;
    case JV_LIST:
        if (a.u.l->n != b.u.l->n || a.u.l->tuple != b.u.l->tuple) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            const jv *o = jv_dict_get(b, a.u.d->k[i]);
            if (!o || !jv_equal(a.u.d->v[i], *o)) return false;
        }
        return true;
    case JV_NS: return a.u.d == b.u.d;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return false;
    }
}

const char *jv_type_name(jv v) {
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: case JV_BIG: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.u.l->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    default: return "function";
    }
}

/* ---------------------------------------------------------------- string builder */
void sb_init(sb *b, size_t max) {
    memset(b, 0, sizeof *b);
    b->max = max ? max : (size_t)1 << 30;
}

void sb_free(sb *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

bool sb_failed(const sb *b) { return b->oom || b->over; }

void sb_put(sb *b, const char *s, size_t n) {
    if (b->oom || b->over || n == 0) return;
    if (b->n + n > b->max) { b->over = true; return; }
    if (b->bud) {
        b->bud->bytes += n;
        if (b->bud->bytes > b->bud->max_bytes) {
            if (!b->bud->hit) b->bud->hit = JB_BYTES;
            b->over = true;
            return;
        }
    }
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = true; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void sb_putc(sb *b, char c) { sb_put(b, &c, 1); }

void sb_printf(sb *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof tmp) { sb_put(b, tmp, (size_t)k); return; }
    char *big = malloc((size_t)k + 1);
    if (!big) { b->oom = true; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)k + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)k);
    free(big);
}

jv sb_to_jv(sb *b) {
    jv v = jv_str_new(b->p ? b->p : "", b->n);
    sb_free(b);
    return v;
}

/* ---------------------------------------------------------------- UTF-8 */
size_t jv_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) { *cp = 0; return 1; }
    unsigned c = u[0];
    size_t k;
    uint32_t v;
    if (c < 0x80) { *cp = c; return 1; }
    else if ((c & 0xE0) == 0xC0) { k = 2; v = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { k = 3; v = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { k = 4; v = c & 0x07; }
    else { *cp = 0xFFFD; return 1; }
    if (k > n) { *cp = 0xFFFD; return 1; }
    for (size_t i = 1; i < k; i++) {
        if ((u[i] & 0xC0) != 0x80) { *cp = 0xFFFD; return 1; }
        v = (v << 6) | (u[i] & 0x3F);
    }
    *cp = v;
    return k;
}

size_t jv_utf8_len(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += jv_utf8_decode(s + i, n - i, &cp);
        c++;
    }
    return c;
}

void sb_put_cp(sb *b, uint32_t cp) {
    char t[4];
    if (cp < 0x80) { t[0] = (char)cp; sb_put(b, t, 1); }
    else if (cp < 0x800) { t[0] = (char)(0xC0 | (cp >> 6)); t[1] = (char)(0x80 | (cp & 0x3F)); sb_put(b, t, 2); }
    else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12)); t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F)); sb_put(b, t, 3);
    } else {
        t[0] = (char)(0xF0 | (cp >> 18)); t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[3] = (char)(0x80 | (cp & 0x3F)); sb_put(b, t, 4);
    }
}

bool jv_cp_isspace(uint32_t c) {
    return (c >= 9 && c <= 13) || c == ' ' || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---------------------------------------------------------------- printing */
void jv_fmt_float(sb *b, double d) {
    if (isnan(d)) { sb_puts(b, "nan"); return; }
    if (isinf(d)) { sb_puts(b, d < 0 ? "-inf" : "inf"); return; }
    if (d == 0) { sb_puts(b, signbit(d) ? "-0.0" : "0.0"); return; }
    char buf[64];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, d);
        if (strtod(buf, NULL) == d) break;
    }
    /* buf: [-]D[.DDD]e[+-]XX */
    char digits[32];
    int nd = 0, exp10;
    const char *q = buf;
    bool neg = false;
    if (*q == '-') { neg = true; q++; }
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    if (neg) sb_putc(b, '-');
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++) sb_putc(b, i < nd ? digits[i] : '0');
            sb_putc(b, '.');
            if (nd > exp10 + 1) sb_put(b, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
            else sb_putc(b, '0');
        } else {
            sb_puts(b, "0.");
            for (int i = 0; i < -exp10 - 1; i++) sb_putc(b, '0');
            sb_put(b, digits, (size_t)nd);
        }
    } else {
        sb_putc(b, digits[0]);
        if (nd > 1) { sb_putc(b, '.'); sb_put(b, digits + 1, (size_t)(nd - 1)); }
        sb_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
}

static bool cp_printable(uint32_t c) {
    if (c < 0x20 || c == 0x7F) return false;
    if (c >= 0x80 && c < 0xA0) return false;
    if (c == 0xAD) return false;
    if (jv_cp_isspace(c) && c != ' ') return false;
    if (c == 0x200B || c == 0x200C || c == 0x200D || c == 0x200E || c == 0x200F || c == 0xFEFF) return false;
    if ((c >= 0xD800 && c <= 0xDFFF) || (c >= 0xE000 && c <= 0xF8FF)) return false;
    return true;
}

static void repr_str(sb *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    sb_putc(b, q);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = jv_utf8_decode(s + i, n - i, &cp);
        if (cp == (uint32_t)q || cp == '\\') { sb_putc(b, '\\'); sb_putc(b, (char)cp); }
        else if (cp == '\n') sb_puts(b, "\\n");
        else if (cp == '\r') sb_puts(b, "\\r");
        else if (cp == '\t') sb_puts(b, "\\t");
        else if (!cp_printable(cp)) {
            if (cp < 0x100) sb_printf(b, "\\x%02x", cp);
            else if (cp < 0x10000) sb_printf(b, "\\u%04x", cp);
            else sb_printf(b, "\\U%08x", cp);
        } else sb_put(b, s + i, k);
        i += k;
    }
    sb_putc(b, q);
}

static void repr_r(sb *b, jv v, const void **stack, int depth);

void jv_repr(sb *b, jv v) {
    const void *stack[64];
    repr_r(b, v, stack, 0);
}

static void repr_r(sb *b, jv v, const void **stack, int depth) {
    if (v.t == JV_LIST || v.t == JV_DICT || v.t == JV_NS) {
        const void *id = v.t == JV_LIST ? (const void *)v.u.l : (const void *)v.u.d;
        bool seen = depth >= 64;
        for (int i = 0; i < depth && !seen; i++) seen = stack[i] == id;
        if (seen) {
            if (v.t == JV_NS) sb_puts(b, "<Namespace {...}>");
            else sb_puts(b, v.t == JV_LIST ? "[...]" : "{...}");
            return;
        }
        stack[depth++] = id;
    }
    switch (v.t) {
    case JV_STR: repr_str(b, v.u.s->s, v.u.s->len); break;
    case JV_LIST: {
        static const char *const views[] = {"", "dict_items(", "dict_keys(", "dict_values("};
        if (v.u.l->view && v.u.l->view < 4) sb_puts(b, views[v.u.l->view]);
        sb_putc(b, v.u.l->tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) sb_puts(b, ", ");
            repr_r(b, v.u.l->v[i], stack, depth);
        }
        if (v.u.l->tuple && v.u.l->n == 1) sb_putc(b, ',');
        sb_putc(b, v.u.l->tuple ? ')' : ']');
        if (v.u.l->view && v.u.l->view < 4) sb_putc(b, ')');
        break;
    }
    case JV_DICT: case JV_NS: {
        if (v.t == JV_NS) sb_puts(b, "<Namespace ");
        sb_putc(b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) sb_puts(b, ", ");
            repr_r(b, v.u.d->k[i], stack, depth);
            sb_puts(b, ": ");
            repr_r(b, v.u.d->v[i], stack, depth);
        }
        sb_putc(b, '}');
        if (v.t == JV_NS) sb_putc(b, '>');
        break;
    }
    case JV_UNDEF: sb_puts(b, "Undefined"); break;
    default: jv_print(b, v); break;
    }
}

void jv_print(sb *b, jv v) {
    switch (v.t) {
    case JV_UNDEF: break;
    case JV_NONE: sb_puts(b, "None"); break;
    case JV_BOOL: sb_puts(b, v.u.b ? "True" : "False"); break;
    case JV_INT: sb_printf(b, "%lld", (long long)v.u.i); break;
    case JV_BIG:
        if (v.u.big->text) sb_puts(b, v.u.big->text);
        else { char t[48]; sb_put(b, t, jv_i128_str(v.u.big->v, t)); }
        break;
    case JV_FLOAT: jv_fmt_float(b, v.u.f); break;
    case JV_STR: sb_put(b, v.u.s->s, v.u.s->len); break;
    case JV_FUNC: sb_printf(b, "<function %s>", v.u.fn->name ? v.u.fn->name : "?"); break;
    default: jv_repr(b, v); break;
    }
}
