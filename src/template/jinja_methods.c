/* jinja_methods.c — attribute and item lookup (Jinja's getattr/getitem order) and the Python
 * methods of str, dict and list that templates call. The sandbox is immutable: mutating dict
 * and list methods are refused. */
#include "jinja_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

#include "jinja_case_table.h"

/* ---------------------------------------------------------------- lookup */
static const char *const STR_METHODS[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
    "replace", "upper", "lower", "title", "capitalize", "find", "rfind", "index", "count", "join", "format",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "splitlines", "removeprefix", "removesuffix",
    "swapcase", "casefold", "center", "ljust", "rjust", "zfill", "partition", "rpartition", NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", "copy", "pop", "popitem", "update",
    "setdefault", "clear", NULL};
static const char *const LIST_METHODS[] = {"index", "count", "copy", "append", "extend", "insert", "pop", "remove",
    "sort", "reverse", "clear", NULL};


bool jinja_is_method(jv self, const char *name) {
    if (self.t == JV_STR) return jname_in(STR_METHODS, name);
    if (self.t == JV_DICT) return jname_in(DICT_METHODS, name);
    if (self.t == JV_LIST) return jname_in(LIST_METHODS, name);
    return false;
}

static bool bound_method(jctx *c, int line, jv obj, const char *name, jv *out) {
    /* name must outlive the value: use the static method table entry */
    const char *const *set = obj.t == JV_STR ? STR_METHODS : obj.t == JV_DICT ? DICT_METHODS : LIST_METHODS;
    for (int i = 0; set[i]; i++)
        if (!strcmp(set[i], name)) {
            *out = jv_func_new(JF_METHOD, set[i], jv_incref(obj));
            return !jv_is_oom(*out) || joom(c, line);
        }
    *out = jv_undef(NULL);
    return true;
}

bool jinja_getattr(jctx *c, int line, jv obj, const char *name, jv *out) {
    if (obj.t == JV_FUNC && obj.u.fn->kind == JF_LOOP) obj = obj.u.fn->self; /* recursive loop: its dict */
    if (obj.t == JV_FUNC && obj.u.fn->kind == JF_CYCLER) return jinja_object_attr(c, line, obj, name, out);
    if (obj.t == JV_LIST && obj.u.l->view == 4 && (!strcmp(name, "grouper") || !strcmp(name, "list"))) {
        *out = jv_incref(obj.u.l->v[name[0] == 'g' ? 0 : 1]);
        return true;
    }
    if (jinja_is_method(obj, name)) return bound_method(c, line, obj, name, out);
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        const jv *v = jv_dict_get_cstr(obj, name, strlen(name));
        *out = v ? jv_incref(*v) : jv_undef(NULL);
        return true;
    }
    *out = jv_undef(NULL);
    return true;
}

bool jinja_getitem(jctx *c, int line, jv obj, jv key, jv *out) {
    *out = jv_undef(NULL);
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        const jv *v = jv_dict_get(obj, key);
        if (v) { *out = jv_incref(*v); return true; }
        if (key.t == JV_STR && obj.t == JV_DICT && jinja_is_method(obj, key.u.s->s)) return bound_method(c, line, obj, key.u.s->s, out);
        return true;
    }
    if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.t == JV_BOOL ? key.u.b : key.u.i;
        if (obj.t == JV_LIST) {
            int64_t n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) *out = jv_incref(obj.u.l->v[i]);
            return true;
        }
        int64_t n = (int64_t)jv_utf8_len(obj.u.s->s, obj.u.s->len);
        if (i < 0) i += n;
        if (i < 0 || i >= n) return true;
        size_t off = 0;
        uint32_t cp;
        for (int64_t k = 0; k < i; k++) off += jv_utf8_decode(obj.u.s->s + off, obj.u.s->len - off, &cp);
        size_t l = jv_utf8_decode(obj.u.s->s + off, obj.u.s->len - off, &cp);
        return jstr_new(c, line, obj.u.s->s + off, l, out);
    }
    if (key.t == JV_STR && jinja_is_method(obj, key.u.s->s)) return bound_method(c, line, obj, key.u.s->s, out);
    return true;
}

/* ---------------------------------------------------------------- string helpers */
typedef struct { uint32_t *cp; size_t n; } cps;

static bool to_cps(const char *s, size_t n, cps *o) {
    o->cp = malloc((n + 1) * sizeof *o->cp);
    o->n = 0;
    if (!o->cp) return false;
    for (size_t i = 0; i < n;) i += jv_utf8_decode(s + i, n - i, &o->cp[o->n++]);
    return true;
}

static bool cp_in(uint32_t c, const cps *set) {
    if (!set) return jv_cp_isspace(c);
    for (size_t i = 0; i < set->n; i++) if (set->cp[i] == c) return true;
    return false;
}

/* Python str.strip/lstrip/rstrip(chars) */
static bool py_strip(jctx *c, int line, jv s, jv chars, bool left, bool right, jv *out) {
    cps set, *sp = NULL;
    if (chars.t == JV_STR) {
        if (!to_cps(chars.u.s->s, chars.u.s->len, &set)) return joom(c, line);
        sp = &set;
    } else if (chars.t != JV_NONE && chars.t != JV_UNDEF) return jerr(c, line, "strip arg must be None or str");
    const char *p = s.u.s->s;
    size_t a = 0, b = s.u.s->len;
    if (left)
        while (a < b) {
            uint32_t cp;
            size_t k = jv_utf8_decode(p + a, b - a, &cp);
            if (!cp_in(cp, sp)) break;
            a += k;
        }
    if (right)
        while (b > a) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
            uint32_t cp;
            jv_utf8_decode(p + st, b - st, &cp);
            if (!cp_in(cp, sp)) break;
            b = st;
        }
    if (sp) free(set.cp);
    return jstr_new(c, line, p + a, b - a, out);
}

static bool push_str(jctx *c, int line, jv l, const char *s, size_t n) {
    jv v = jv_str_new(s, n);
    if (jv_is_oom(v) || !jv_list_push(l, v)) return joom(c, line);
    return true;
}

static bool py_split(jctx *c, int line, jv s, jv sep, int64_t maxsplit, bool from_right, jv *out) {
    jv l = jv_list_new(0);
    if (jv_is_oom(l)) return joom(c, line);
    const char *p = s.u.s->s;
    size_t n = s.u.s->len;
    if (sep.t == JV_STR) {
        size_t sl = sep.u.s->len;
        if (sl == 0) { jv_decref(l); return jerr(c, line, "empty separator"); }
        if (!from_right) {
            size_t st = 0;
            int64_t done = 0;
            for (;;) {
                const char *f = (maxsplit < 0 || done < maxsplit) ? memmem(p + st, n - st, sep.u.s->s, sl) : NULL;
                if (!f) { if (!push_str(c, line, l, p + st, n - st)) { jv_decref(l); return false; } break; }
                if (!push_str(c, line, l, p + st, (size_t)(f - p) - st)) { jv_decref(l); return false; }
                st = (size_t)(f - p) + sl;
                done++;
            }
        } else {
            /* collect from the right then reverse */
            size_t end = n;
            int64_t done = 0;
            for (;;) {
                const char *f = NULL;
                if ((maxsplit < 0 || done < maxsplit) && end >= sl)
                    for (size_t i = end - sl + 1; i-- > 0;)
                        if (!memcmp(p + i, sep.u.s->s, sl)) { f = p + i; break; }
                if (!f) { if (!push_str(c, line, l, p, end)) { jv_decref(l); return false; } break; }
                if (!push_str(c, line, l, f + sl, end - (size_t)(f - p) - sl)) { jv_decref(l); return false; }
                end = (size_t)(f - p);
                done++;
            }
            for (size_t i = 0, j = l.u.l->n - 1; i < j; i++, j--) { jv t = l.u.l->v[i]; l.u.l->v[i] = l.u.l->v[j]; l.u.l->v[j] = t; }
        }
    } else {
        if (from_right && maxsplit >= 0) { jv_decref(l); return jerr(c, line, "rsplit with maxsplit and no separator is not supported"); }
        size_t i = 0;
        int64_t done = 0;
        for (;;) {
            uint32_t cp;
            while (i < n) { size_t k = jv_utf8_decode(p + i, n - i, &cp); if (!jv_cp_isspace(cp)) break; i += k; }
            if (i >= n) break;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = n;
                while (e > i) { size_t st = e - 1; while (st > i && ((unsigned char)p[st] & 0xC0) == 0x80) st--; jv_utf8_decode(p + st, e - st, &cp); if (!jv_cp_isspace(cp)) break; e = st; }
                if (!push_str(c, line, l, p + i, e - i)) { jv_decref(l); return false; }
                break;
            }
            size_t st = i;
            while (i < n) { size_t k = jv_utf8_decode(p + i, n - i, &cp); if (jv_cp_isspace(cp)) break; i += k; }
            if (!push_str(c, line, l, p + st, i - st)) { jv_decref(l); return false; }
            done++;
        }
    }
    *out = l;
    return true;
}

static bool py_replace(jctx *c, int line, jv s, jv old, jv new_, int64_t count, jv *out) {
    if (old.t != JV_STR || new_.t != JV_STR) return jerr(c, line, "replace() arguments must be str");
    sb b;
    jsb_init(c, &b);
    const char *p = s.u.s->s;
    size_t n = s.u.s->len, ol = old.u.s->len;
    int64_t done = 0;
    if (ol == 0) {
        size_t i = 0;
        for (;;) {
            if (count < 0 || done < count) { sb_put(&b, new_.u.s->s, new_.u.s->len); done++; }
            if (i >= n) break;
            uint32_t cp;
            size_t k = jv_utf8_decode(p + i, n - i, &cp);
            sb_put(&b, p + i, k);
            i += k;
        }
        return jsb_take(c, line, &b, out);
    }
    size_t st = 0;
    for (;;) {
        const char *f = (count < 0 || done < count) ? memmem(p + st, n - st, old.u.s->s, ol) : NULL;
        if (!f) { sb_put(&b, p + st, n - st); break; }
        sb_put(&b, p + st, (size_t)(f - p) - st);
        sb_put(&b, new_.u.s->s, new_.u.s->len);
        st = (size_t)(f - p) + ol;
        done++;
    }
    return jsb_take(c, line, &b, out);
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAP, CASE_JTITLE, CASE_SWAP, CASE_FOLD };
enum { TO_UPPER, TO_LOWER, TO_TITLE, TO_FOLD }; /* columns of JCASE_SPECIAL */

static bool is_cased_letter(uint32_t cp) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

static int special_cmp(const void *key, const void *e) {
    uint32_t a = *(const uint32_t *)key, b = ((const jcase_special *)e)->cp;
    return a < b ? -1 : a > b;
}

/* Python's full case mapping: the several-code-point cases from the generated table ('ß' → "SS"),
 * the others from utf8proc's simple mappings. */
static void put_case(sb *b, uint32_t cp, int to) {
    const jcase_special *sp = bsearch(&cp, JCASE_SPECIAL, sizeof JCASE_SPECIAL / sizeof *JCASE_SPECIAL,
                                      sizeof *JCASE_SPECIAL, special_cmp);
    if (sp) {
        for (int k = 0; k < JCASE_MAX && sp->map[to][k]; k++) sb_put_cp(b, sp->map[to][k]);
        return;
    }
    utf8proc_int32_t x = (utf8proc_int32_t)cp;
    switch (to) {
    case TO_UPPER: x = utf8proc_toupper(x); break;
    case TO_TITLE: x = utf8proc_totitle(x); break;
    default: x = utf8proc_tolower(x); break;
    }
    sb_put_cp(b, (uint32_t)x);
}

static bool change_case(jctx *c, int line, jv s, int mode, jv *out) {
    sb b;
    jsb_init(c, &b);
    const char *p = s.u.s->s;
    size_t n = s.u.s->len;
    bool prev_cased = false, first = true, word_start = true;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += jv_utf8_decode(p + i, n - i, &cp);
        int to = TO_LOWER;
        switch (mode) {
        case CASE_UPPER: to = TO_UPPER; break;
        case CASE_LOWER: to = TO_LOWER; break;
        case CASE_FOLD: to = TO_FOLD; break;
        case CASE_TITLE:
            to = prev_cased ? TO_LOWER : TO_TITLE;
            prev_cased = is_cased_letter(cp);
            break;
        case CASE_CAP: to = first ? TO_TITLE : TO_LOWER; break;
        case CASE_JTITLE: /* Jinja's title filter: word[0].upper() + word[1:].lower() */
            if (jv_cp_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<') {
                word_start = true;
                first = false;
                sb_put_cp(&b, cp);
                continue;
            }
            to = word_start ? TO_UPPER : TO_LOWER;
            word_start = false;
            break;
        case CASE_SWAP: {
            utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
            if (k == UTF8PROC_CATEGORY_LL) to = TO_UPPER;
            else if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LT) to = TO_LOWER;
            else { sb_put_cp(&b, cp); first = false; continue; }
            break;
        }
        }
        first = false;
        put_case(&b, cp, to);
    }
    return jsb_take(c, line, &b, out);
}

bool jinja_title_filter(jctx *c, int line, jv s, jv *out) { return change_case(c, line, s, CASE_JTITLE, out); }

static bool py_find(jv s, jv sub, bool rev, int64_t *pos) {
    const char *p = s.u.s->s;
    size_t n = s.u.s->len, sl = sub.u.s->len;
    const char *f = NULL;
    if (!rev) f = sl ? memmem(p, n, sub.u.s->s, sl) : p;
    else if (sl <= n)
        for (size_t i = n - sl + 1; i-- > 0;) if (!memcmp(p + i, sub.u.s->s, sl)) { f = p + i; break; }
    if (!f) { *pos = -1; return true; }
    *pos = (int64_t)jv_utf8_len(p, (size_t)(f - p));
    return true;
}

static bool starts_ends(jv s, jv x, bool ends) {
    if (x.t != JV_STR || x.u.s->len > s.u.s->len) return false;
    size_t off = ends ? s.u.s->len - x.u.s->len : 0;
    return !memcmp(s.u.s->s + off, x.u.s->s, x.u.s->len);
}

/* ---------------------------------------------------------------- methods */
static bool str_method_build(jctx *c, int line, jv s, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out);

/* strip, split, splitlines, startswith/endswith, replace, case changes, find/index */
static bool str_method(jctx *c, int line, jv s, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        JBIND(name, {"chars", jv_none()});
        return py_strip(c, line, s, a_[0], name[0] != 'r', name[0] != 'l', out);
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        JBIND(name, {"sep", jv_none()}, {"maxsplit", jv_int(-1)});
        int64_t ms = -1;
        if (a_[0].t != JV_NONE && !jneed_str(c, line, a_[0], "sep")) return false;
        if (!jneed_int(c, line, a_[1], &ms, "maxsplit")) return false;
        return py_split(c, line, s, a_[0], ms, name[0] == 'r', out);
    }
    if (!strcmp(name, "splitlines")) {
        JBIND(name, {"keepends", jv_bool(false)});
        jv l = jv_list_new(0);
        if (jv_is_oom(l)) return joom(c, line);
        const char *p = s.u.s->s;
        size_t n = s.u.s->len, st = 0;
        bool keep = jv_truthy(a_[0]);
        for (size_t i = 0; i < n;) {
            size_t k = 0;
            if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') k = 2;
            else if (p[i] == '\n' || p[i] == '\r' || p[i] == '\v' || p[i] == '\f' || (p[i] >= 0x1c && p[i] <= 0x1e)) k = 1;
            if (k) {
                if (!push_str(c, line, l, p + st, i - st + (keep ? k : 0))) { jv_decref(l); return false; }
                i += k;
                st = i;
            } else i++;
        }
        if (st < n && !push_str(c, line, l, p + st, n - st)) { jv_decref(l); return false; }
        *out = l;
        return true;
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        JBIND(name, {"prefix", U});
        bool ends = name[0] == 'e', r = false;
        if (a_[0].t == JV_LIST && a_[0].u.l->tuple) {
            for (size_t i = 0; i < a_[0].u.l->n; i++) {
                if (a_[0].u.l->v[i].t != JV_STR) return jerr(c, line, "tuple for %s must only contain str", name);
                r |= starts_ends(s, a_[0].u.l->v[i], ends);
            }
        } else if (a_[0].t == JV_STR) r = starts_ends(s, a_[0], ends);
        else return jerr(c, line, "%s first arg must be str or a tuple of str, not %s", name, jv_type_name(a_[0]));
        *out = jv_bool(r);
        return true;
    }
    if (!strcmp(name, "replace")) {
        JBIND(name, {"old", U}, {"new", U}, {"count", jv_int(-1)});
        int64_t cnt = -1;
        if (!jneed_int(c, line, a_[2], &cnt, "count")) return false;
        return py_replace(c, line, s, a_[0], a_[1], cnt, out);
    }
    if (!strcmp(name, "upper")) return change_case(c, line, s, CASE_UPPER, out);
    if (!strcmp(name, "lower")) return change_case(c, line, s, CASE_LOWER, out);
    if (!strcmp(name, "casefold")) return change_case(c, line, s, CASE_FOLD, out);
    if (!strcmp(name, "title")) return change_case(c, line, s, CASE_TITLE, out);
    if (!strcmp(name, "capitalize")) return change_case(c, line, s, CASE_CAP, out);
    if (!strcmp(name, "swapcase")) return change_case(c, line, s, CASE_SWAP, out);
    if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "index")) {
        JBIND(name, {"sub", U});
        if (!jneed_str(c, line, a_[0], "sub")) return false;
        int64_t pos;
        py_find(s, a_[0], name[0] == 'r', &pos);
        if (pos < 0 && name[0] == 'i') return jerr(c, line, "substring not found");
        *out = jv_int(pos);
        return true;
    }
    return str_method_build(c, line, s, name, args, nargs, kwn, kwv, nkw, out);
}

/* count, join, removeprefix/suffix, is*(), format, padding, partition */
static bool str_method_build(jctx *c, int line, jv s, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    if (!strcmp(name, "count")) {
        JBIND(name, {"sub", U});
        if (!jneed_str(c, line, a_[0], "sub")) return false;
        size_t sl = a_[0].u.s->len, n = s.u.s->len;
        int64_t cnt = 0;
        if (sl == 0) cnt = (int64_t)jv_utf8_len(s.u.s->s, n) + 1;
        else for (size_t i = 0; i + sl <= n;) {
            const char *f = memmem(s.u.s->s + i, n - i, a_[0].u.s->s, sl);
            if (!f) break;
            cnt++;
            i = (size_t)(f - s.u.s->s) + sl;
        }
        *out = jv_int(cnt);
        return true;
    }
    if (!strcmp(name, "join")) {
        JBIND(name, {"iterable", U});
        jv l;
        if (!jinja_to_list(c, line, a_[0], &l)) return false;
        sb b;
        jsb_init(c, &b);
        for (size_t i = 0; i < l.u.l->n; i++) {
            if (l.u.l->v[i].t != JV_STR) { sb_free(&b); jv_decref(l); return jerr(c, line, "sequence item %zu: expected str instance, %s found", i, jv_type_name(l.u.l->v[i])); }
            if (i) sb_put(&b, s.u.s->s, s.u.s->len);
            sb_put(&b, l.u.l->v[i].u.s->s, l.u.l->v[i].u.s->len);
        }
        jv_decref(l);
        return jsb_take(c, line, &b, out);
    }
    if (!strcmp(name, "removeprefix") || !strcmp(name, "removesuffix")) {
        JBIND(name, {"x", U});
        if (!jneed_str(c, line, a_[0], name)) return false;
        bool suf = name[6] == 's';
        if (starts_ends(s, a_[0], suf)) {
            size_t k = a_[0].u.s->len;
            return jstr_new(c, line, s.u.s->s + (suf ? 0 : k), s.u.s->len - k, out);
        }
        *out = jv_incref(s);
        return true;
    }
    if (!strncmp(name, "is", 2)) {
        if (nargs || nkw) return jerr(c, line, "%s() takes no arguments", name);
        bool r = s.u.s->len > 0, any_cased = false;
        for (size_t i = 0; i < s.u.s->len;) {
            uint32_t cp;
            i += jv_utf8_decode(s.u.s->s + i, s.u.s->len - i, &cp);
            utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
            bool alpha = k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
            bool digit = k == UTF8PROC_CATEGORY_ND;
            if (!strcmp(name, "isdigit")) r &= digit;
            else if (!strcmp(name, "isalpha")) r &= alpha;
            else if (!strcmp(name, "isalnum")) r &= alpha || digit || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
            else if (!strcmp(name, "isspace")) r &= jv_cp_isspace(cp);
            else if (!strcmp(name, "islower")) { if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LT) r = false; if (k == UTF8PROC_CATEGORY_LL) any_cased = true; }
            else if (!strcmp(name, "isupper")) { if (k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT) r = false; if (k == UTF8PROC_CATEGORY_LU) any_cased = true; }
        }
        if (!strcmp(name, "islower") || !strcmp(name, "isupper")) r = r && any_cased;
        *out = jv_bool(r);
        return true;
    }
    if (!strcmp(name, "format")) {
        /* "{}"/"{0}"/"{name}" replacement fields without format specs */
        sb b;
        jsb_init(c, &b);
        const char *p = s.u.s->s;
        size_t n = s.u.s->len;
        int auto_idx = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '{' && i + 1 < n && p[i + 1] == '{') { sb_putc(&b, '{'); i++; continue; }
            if (p[i] == '}' && i + 1 < n && p[i + 1] == '}') { sb_putc(&b, '}'); i++; continue; }
            if (p[i] != '{') { sb_putc(&b, p[i]); continue; }
            size_t e = i + 1;
            while (e < n && p[e] != '}') e++;
            if (e >= n) { sb_free(&b); return jerr(c, line, "Single '{' encountered in format string"); }
            const char *f = p + i + 1;
            size_t fl = e - i - 1;
            jv v = jv_undef(NULL);
            bool found = false;
            if (fl == 0) { if (auto_idx < nargs) { v = args[auto_idx++]; found = true; } }
            else if (f[0] >= '0' && f[0] <= '9') { int k = atoi(f); if (k < nargs) { v = args[k]; found = true; } }
            else for (int k = 0; k < nkw; k++) if (strlen(kwn[k]) == fl && !memcmp(kwn[k], f, fl)) { v = kwv[k]; found = true; }
            if (!found) { sb_free(&b); return jerr(c, line, "format: replacement field out of range"); }
            jv_print(&b, v);
            i = e;
        }
        return jsb_take(c, line, &b, out);
    }
    if (!strcmp(name, "center") || !strcmp(name, "ljust") || !strcmp(name, "rjust") || !strcmp(name, "zfill")) {
        JBIND(name, {"width", U}, {"fillchar", U});
        int64_t w = 0;
        if (!jneed_int(c, line, a_[0], &w, "width")) return false;
        const char *fc = " ";
        size_t fcl = 1;
        if (!strcmp(name, "zfill")) fc = "0";
        if (a_[1].t == JV_STR) { fc = a_[1].u.s->s; fcl = a_[1].u.s->len; }
        int64_t len = (int64_t)jv_utf8_len(s.u.s->s, s.u.s->len);
        if (w > (int64_t)(c->max_out)) return jerr(c, line, "string too large");
        int64_t pad = w > len ? w - len : 0, left = 0;
        if (!strcmp(name, "center")) left = pad / 2 + (pad & w & 1);
        else if (!strcmp(name, "rjust") || !strcmp(name, "zfill")) left = pad;
        sb b;
        jsb_init(c, &b);
        for (int64_t i = 0; i < left; i++) sb_put(&b, fc, fcl);
        sb_put(&b, s.u.s->s, s.u.s->len);
        for (int64_t i = left; i < pad; i++) sb_put(&b, fc, fcl);
        return jsb_take(c, line, &b, out);
    }
    if (!strcmp(name, "partition") || !strcmp(name, "rpartition")) {
        JBIND(name, {"sep", U});
        if (!jneed_str(c, line, a_[0], "sep") || a_[0].u.s->len == 0) return jerr(c, line, "empty separator");
        int64_t pos;
        bool rev = name[0] == 'r';
        const char *p = s.u.s->s, *f = NULL;
        size_t n = s.u.s->len, sl = a_[0].u.s->len;
        (void)pos;
        if (!rev) f = memmem(p, n, a_[0].u.s->s, sl);
        else if (sl <= n) for (size_t i = n - sl + 1; i-- > 0;) if (!memcmp(p + i, a_[0].u.s->s, sl)) { f = p + i; break; }
        jv l = jv_list_new(3);
        if (jv_is_oom(l)) return joom(c, line);
        l.u.l->tuple = true;
        bool ok;
        if (f) ok = push_str(c, line, l, p, (size_t)(f - p)) && push_str(c, line, l, f, sl) && push_str(c, line, l, f + sl, n - (size_t)(f - p) - sl);
        else if (!rev) ok = push_str(c, line, l, p, n) && push_str(c, line, l, "", 0) && push_str(c, line, l, "", 0);
        else ok = push_str(c, line, l, "", 0) && push_str(c, line, l, "", 0) && push_str(c, line, l, p, n);
        if (!ok) { jv_decref(l); return false; }
        *out = l;
        return true;
    }
    return jerr(c, line, "str has no method '%s'", name);
}

static bool items_list(jctx *c, int line, jv d, jv *out) {
    jv l = jv_list_new(d.u.d->n);
    if (jv_is_oom(l)) return joom(c, line);
    for (size_t i = 0; i < d.u.d->n; i++) {
        jv t = jv_list_new(2);
        if (jv_is_oom(t)) { jv_decref(l); return joom(c, line); }
        t.u.l->tuple = true;
        jv_list_push(t, jv_incref(d.u.d->k[i]));
        jv_list_push(t, jv_incref(d.u.d->v[i]));
        if (!jv_list_push(l, t)) { jv_decref(l); return joom(c, line); }
    }
    *out = l;
    return true;
}

bool jinja_call_method(jctx *c, int line, jv self, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out) {
    if (self.t == JV_STR) return str_method(c, line, self, name, args, nargs, kwn, kwv, nkw, out);
    if (self.t == JV_FUNC && self.u.fn->kind == JF_CYCLER) return jinja_call_object(c, line, self, name, args, nargs, out);
    if (self.t == JV_DICT) {
        if (!strcmp(name, "get")) {
            JBIND(name, {"key", U}, {"default", jv_none()});
            const jv *v = jv_dict_get(self, a_[0]);
            *out = jv_incref(v ? *v : a_[1]);
            return true;
        }
        if (!strcmp(name, "items")) {
            JBIND(name, {"_", U});
            (void)a_;
            if (!items_list(c, line, self, out)) return false;
            out->u.l->view = 1;
            return true;
        }
        if (!strcmp(name, "keys") || !strcmp(name, "values")) {
            JBIND(name, {"_", U});
            (void)a_;
            jv l = jv_list_new(self.u.d->n);
            if (jv_is_oom(l)) return joom(c, line);
            for (size_t i = 0; i < self.u.d->n; i++) jv_list_push(l, jv_incref(name[0] == 'k' ? self.u.d->k[i] : self.u.d->v[i]));
            l.u.l->view = name[0] == 'k' ? 2 : 3;
            *out = l;
            return true;
        }
        if (!strcmp(name, "copy")) {
            jv d = jv_dict_new(self.u.d->n);
            if (jv_is_oom(d)) return joom(c, line);
            for (size_t i = 0; i < self.u.d->n; i++) jv_dict_set(d, jv_incref(self.u.d->k[i]), jv_incref(self.u.d->v[i]));
            *out = d;
            return true;
        }
        return jerr(c, line, "access to attribute '%s' of 'dict' object is unsafe.", name);
    }
    if (self.t == JV_LIST) {
        if (!strcmp(name, "index") || !strcmp(name, "count")) {
            JBIND(name, {"x", U});
            int64_t cnt = 0, idx = -1;
            for (size_t i = 0; i < self.u.l->n; i++)
                if (jv_equal(self.u.l->v[i], a_[0])) { cnt++; if (idx < 0) idx = (int64_t)i; }
            if (name[0] == 'i' && idx < 0) return jerr(c, line, "x not in list");
            *out = jv_int(name[0] == 'i' ? idx : cnt);
            return true;
        }
        if (!strcmp(name, "copy")) return jinja_to_list(c, line, self, out);
        return jerr(c, line, "access to attribute '%s' of '%s' object is unsafe.", name, jv_type_name(self));
    }
    return jerr(c, line, "'%s' object has no attribute '%s'", jv_type_name(self), name);
}

/* ---------------------------------------------------------------- loop.changed, cycler, joiner */
/* cycler(*items) / joiner(sep=", "): objects whose state is a private two-element list */
bool jinja_make_object(jctx *c, int line, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv,
                       int nkw, jv *out) {
    jv state = jv_list_new(2);
    if (jv_is_oom(state)) return joom(c, line);
    bool ok;
    if (name[0] == 'c') {
        if (nkw) { jv_decref(state); return jerr(c, line, "cycler() takes no keyword arguments"); }
        if (nargs == 0) { jv_decref(state); return jerr(c, line, "at least one item has to be provided"); }
        jv items = jv_list_new((size_t)nargs);
        ok = !jv_is_oom(items);
        for (int i = 0; ok && i < nargs; i++) ok = jv_list_push(items, jv_incref(args[i]));
        ok = ok && jv_list_push(state, items) && jv_list_push(state, jv_int(0));
    } else {
        JBIND(name, {"sep", U});
        jv sep = a_[0].t == JV_UNDEF ? jv_str_cstr(", ") : jv_incref(a_[0]);
        ok = !jv_is_oom(sep) && jv_list_push(state, sep) && jv_list_push(state, jv_bool(false));
    }
    if (!ok) { jv_decref(state); return joom(c, line); }
    *out = jv_func_new(name[0] == 'c' ? JF_CYCLER : JF_JOINER, name[0] == 'c' ? "cycler" : "joiner", state);
    return !jv_is_oom(*out) || joom(c, line);
}

bool jinja_object_attr(jctx *c, int line, jv fn, const char *name, jv *out) {
    jv *st = fn.u.fn->self.u.l->v; /* [items, position] */
    if (!strcmp(name, "current")) { *out = jv_incref(st[0].u.l->v[st[1].u.i]); return true; }
    if (!strcmp(name, "next") || !strcmp(name, "reset")) {
        *out = jv_func_new(JF_METHOD, name[0] == 'n' ? "next" : "reset", jv_incref(fn));
        return !jv_is_oom(*out) || joom(c, line);
    }
    *out = jv_undef(NULL);
    return true;
}

bool jinja_call_object(jctx *c, int line, jv fn, const char *method, const jv *args, int nargs, jv *out) {
    jv_func *f = fn.u.fn;
    jv *st = f->self.u.l->v;
    switch (f->kind) {
    case JF_CHANGED: { /* loop.changed(*values): true when the values differ from the last call's */
        jv tup = jv_list_new((size_t)nargs);
        if (jv_is_oom(tup)) return joom(c, line);
        tup.u.l->tuple = true;
        for (int i = 0; i < nargs; i++) jv_list_push(tup, jv_incref(args[i]));
        jv_list *last = f->self.u.l;
        bool changed = last->n == 0 || !jv_equal(last->v[0], tup);
        if (last->n == 0) jv_list_push(f->self, tup);
        else { jv_decref(last->v[0]); last->v[0] = tup; }
        *out = jv_bool(changed);
        return true;
    }
    case JF_JOINER: /* "" the first time, the separator after */
        if (nargs) return jerr(c, line, "joiner() takes no arguments");
        if (!st[1].u.b) { st[1] = jv_bool(true); return jstr_new(c, line, "", 0, out); }
        *out = jv_incref(st[0]);
        return true;
    case JF_CYCLER: {
        if (nargs) return jerr(c, line, "%s() takes no arguments", method ? method : "cycler");
        jv_list *items = st[0].u.l;
        if (method && !strcmp(method, "reset")) { st[1] = jv_int(0); *out = jv_none(); return true; }
        if (!method || strcmp(method, "next")) return jerr(c, line, "'cycler' object is not callable");
        *out = jv_incref(items->v[st[1].u.i]);
        st[1] = jv_int((st[1].u.i + 1) % (int64_t)items->n);
        return true;
    }
    default: return jerr(c, line, "not callable");
    }
}
