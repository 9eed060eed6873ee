/* jinja_internal.h — shared internals of the Jinja2 engine behind chat_template.h: values,
 * tokens, AST nodes and the per-render evaluation state.
 *
 * Ownership: jv values are refcounted; jv_incref/jv_decref on copies. Values owned by the AST
 * (literals, names) are immortal (rc < 0): incref/decref never touch them, so a parsed template
 * is shared read-only between threads. Everything else belongs to one render (one thread).
 *
 * Layers (each file calls only the ones before it): jinja_value.c, jinja_json.c, jinja_ctx.c
 * (render errors, work budget, argument binding) → jinja_lexer.c → jinja_parser.c +
 * jinja_parse_stmt.c → jinja_ops.c → jinja_methods.c → jinja_globals.c (globals, tests) →
 * jinja_filters.c + jinja_filters_text.c → jinja_check.c → jinja_eval.c → chat_template.c.
 */
#ifndef LMX_JINJA_INTERNAL_H
#define LMX_JINJA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lmx.h"

/* ---------------------------------------------------------------- values */
/* Integers: JV_INT while they fit int64, JV_BIG beyond: exact 128-bit arithmetic; larger literals
 * and JSON numbers are kept as decimal text (printed, compared, negated exactly), and arithmetic
 * that needs more than 128 bits is an error — never a silently wrapped or rounded value. */
typedef enum jv_type {
    JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_FUNC, JV_BIG
} jv_type;

__extension__ typedef __int128 jv_i128;
typedef struct jv_big { int rc; jv_i128 v; char *text; } jv_big; /* text: beyond 128 bits (v unused) */
#define JV_I128_MAX ((jv_i128)(~(unsigned __int128)0 >> 1))
#define JV_I128_MIN (-JV_I128_MAX - 1)

typedef struct jv_str { int rc; size_t len; char s[]; } jv_str;       /* s[len] == '\0' */
typedef struct jv_list { int rc; bool tuple; uint8_t view; int depth; size_t n, cap; struct jv *v; } jv_list; /* view: 1 dict_items, 2 dict_keys, 3 dict_values, 4 a groupby (grouper, list) tuple */
typedef struct jv_dict { int rc; int depth; size_t n, cap; struct jv *k, *v; } jv_dict; /* insertion order; depth: nesting below */
typedef struct jv_func jv_func;

typedef struct jv {
    uint8_t t;
    union {
        bool b;
        int64_t i;
        double f;
        jv_str *s;
        jv_list *l;
        jv_dict *d; /* JV_DICT and JV_NS */
        jv_func *fn;
        jv_big *big;
        const char *hint; /* JV_UNDEF: the missing name (AST-owned) or NULL */
    } u;
} jv;

/* Callables: builtin globals, bound methods (self + method name), macros, loop.cycle. */
/* JF_CHANGED: loop.changed (self: [last args]); JF_LOOP: the `loop` of a recursive for (self: the
 * loop dict, macro: the for node); JF_CYCLER / JF_JOINER: cycler() / joiner() objects (self:
 * [items, position] / [separator, used]). */
typedef enum { JF_GLOBAL, JF_METHOD, JF_MACRO, JF_CYCLE, JF_CHANGED, JF_LOOP, JF_CYCLER, JF_JOINER } jf_kind;
struct jv_func {
    int rc;
    jf_kind kind;
    const char *name;             /* global / method name (static or AST-owned) */
    jv self;                      /* method receiver; JF_CYCLE: index0 */
    const struct jnode *macro;       /* JF_MACRO */
    struct jv caller;             /* JF_MACRO bound through {% call %}: the caller macro, else UNDEF */
};

static inline jv jv_undef(const char *hint) { jv v = {.t = JV_UNDEF}; v.u.hint = hint; return v; }
static inline jv jv_none(void) { jv v = {.t = JV_NONE}; return v; }
static inline jv jv_bool(bool b) { jv v = {.t = JV_BOOL}; v.u.b = b; return v; }
static inline jv jv_int(int64_t i) { jv v = {.t = JV_INT}; v.u.i = i; return v; }
static inline jv jv_float(double f) { jv v = {.t = JV_FLOAT}; v.u.f = f; return v; }

/* An integer value: JV_INT when it fits int64, else JV_BIG (an allocation: may be oom). */
jv jv_int128(jv_i128 x);
/* int, bool or big int as a 128-bit integer; false for other values and integers beyond 128 bits. */
bool jv_get_i128(jv v, jv_i128 *out);
/* A decimal integer literal of any size (optional sign, `_` skipped). */
jv jv_int_text(const char *s, size_t n);
static inline bool jv_is_huge(jv v) { return v.t == JV_BIG && v.u.big->text; }
/* Three-way comparison of two integers of any size. */
int jv_int_cmp(jv a, jv b);
/* -v, or |v| when abs_only, of an integer of any size (oom: the oom undefined). */
jv jv_int_neg(jv v, bool abs_only);
static inline bool jv_is_integer(jv v) { return v.t == JV_INT || v.t == JV_BOOL || v.t == JV_BIG; }
/* Decimal text of a 128-bit integer into buf (>= 41 bytes); returns its length. */
size_t jv_i128_str(jv_i128 x, char *buf);
/* Parses an optionally signed decimal integer (digits only, `_` skipped) that fits 128 bits. */
bool jv_i128_parse(const char *s, size_t n, jv_i128 *out);

jv jv_incref(jv v);
void jv_decref(jv v);
void jv_make_immortal(jv v); /* AST literals: recursively marks containers immortal */

/* Constructors return JV_UNDEF with t == JV_UNDEF and u.hint == jv_oom_hint on allocation failure. */
extern const char jv_oom_hint[];
jv jv_str_new(const char *s, size_t len);
jv jv_str_cstr(const char *s);
jv jv_list_new(size_t cap);
jv jv_dict_new(size_t cap);
jv jv_ns_new(void);
jv jv_func_new(jf_kind kind, const char *name, jv self /* consumed */);
static inline bool jv_is_oom(jv v) { return v.t == JV_UNDEF && v.u.hint == jv_oom_hint; }

bool jv_list_push(jv list, jv item /* consumed */);
/* Dict: keys compared with jv_equal; set replaces the value in place (keeps position). */
bool jv_dict_set(jv dict, jv key /* consumed */, jv val /* consumed */);
bool jv_dict_set_cstr(jv dict, const char *key, jv val /* consumed */);
const jv *jv_dict_get(jv dict, jv key);             /* borrowed or NULL */
const jv *jv_dict_get_cstr(jv dict, const char *key, size_t len);

bool jv_truthy(jv v);
int jv_depth(jv v); /* container nesting (0 for scalars) */
#define JV_MAX_DEPTH 256
bool jv_equal(jv a, jv b);
bool jv_is_number(jv v); /* int, float, bool */
double jv_as_double(jv v);
const char *jv_type_name(jv v); /* python-ish type name for messages */

/* ---------------------------------------------------------------- work budget */
/* What one render may spend (issue: a template must not hang a server): `bytes` counts every byte
 * a string builder appends, every list element copied and every byte compared or searched;
 * `steps` counts loop iterations and calls. `hit` says which limit stopped the render. */
typedef enum { JB_NONE = 0, JB_BYTES, JB_STEPS, JB_OUTPUT } jb_limit;
typedef struct jbudget { uint64_t bytes, max_bytes, steps, max_steps; jb_limit hit; } jbudget;

/* ---------------------------------------------------------------- string builder */
/* bud (optional): every appended byte is charged to it; past its maximum the builder fails. */
typedef struct sb { char *p; size_t n, cap; size_t max; bool oom, over; jbudget *bud; } sb;
void sb_init(sb *b, size_t max);
void sb_free(sb *b);
void sb_put(sb *b, const char *s, size_t n);
static inline void sb_puts(sb *b, const char *s) { sb_put(b, s, strlen(s)); }
void sb_putc(sb *b, char c);
void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool sb_failed(const sb *b);
jv sb_to_jv(sb *b); /* moves the text into a new string value; frees the buffer */

/* Printing like Jinja's str(): strings raw, undefined "", None "None", floats as Python repr. */
void jv_print(sb *b, jv v);
/* Python repr() (used inside containers). */
void jv_repr(sb *b, jv v);
void jv_fmt_float(sb *b, double d); /* Python float repr */
/* json.dumps(v, ensure_ascii=False, indent, separators, sort_keys). Returns false (with *why set
 * to a static message) for values JSON cannot hold. indent < 0 = None; indent_str overrides. */
typedef struct { int indent; const char *indent_str; const char *item_sep, *key_sep; bool sort_keys; } jv_json_opts;
bool jv_to_json(sb *b, jv v, const jv_json_opts *o, const char **why);
/* Parses JSON text into a value (ints stay ints, "1.0" stays float, object order kept). */
bool jv_from_json(const char *text, size_t len, jv *out, char *err, size_t errlen);

/* UTF-8 helpers */
size_t jv_utf8_len(const char *s, size_t n);                 /* code points */
size_t jv_utf8_decode(const char *s, size_t n, uint32_t *cp); /* bytes consumed, >= 1 */
void sb_put_cp(sb *b, uint32_t cp);
bool jv_cp_isspace(uint32_t cp);

/* ---------------------------------------------------------------- tokens */
typedef enum {
    TK_EOF, TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP
} tk_kind;

typedef enum {
    OP_ADD = 1, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE,
    OP_LBRACKET, OP_RBRACKET, OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE,
    OP_EQ, OP_NE, OP_GT, OP_GTEQ, OP_LT, OP_LTEQ, OP_ASSIGN, OP_DOT, OP_COLON,
    OP_PIPE, OP_COMMA, OP_SEMICOLON
} tk_op;

typedef struct tk {
    tk_kind kind;
    int op;           /* TK_OP */
    int line;
    char *text;       /* TK_TEXT / NAME / STRING (decoded, malloc'd) */
    size_t len;
    jv_i128 i;        /* TK_INT */
    double f;         /* TK_FLOAT */
} tk;

typedef struct tk_vec { tk *v; size_t n, cap; } tk_vec;
lmx_status jinja_lex(const char *src, size_t len, tk_vec *out);
void jinja_tokens_free(tk_vec *t);

/* ---------------------------------------------------------------- AST */
typedef enum {
    /* expressions */
    JN_LIT, JN_NAME, JN_ATTR, JN_ITEM, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_NEG, JN_POS,
    JN_NOT, JN_AND, JN_OR, JN_BIN, JN_CONCAT, JN_COMPARE, JN_COND, JN_LIST, JN_TUPLE, JN_DICT,
    /* statements */
    JN_TEXT, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SETBLOCK, JN_MACRO, JN_CALLBLOCK,
    JN_FILTERBLOCK, JN_BREAK, JN_CONTINUE, JN_BODY, JN_WITH
} jn_kind;

typedef struct jn_vec { struct jnode **v; int n, cap; } jn_vec;

typedef struct jnode {
    jn_kind kind;
    int op;          /* JN_BIN: tk_op; JN_TEST: negated; JN_FOR: recursive */
    int line;
    jv lit;          /* JN_LIT / JN_TEXT value (immortal) */
    char *name;      /* NAME / ATTR / FILTER / TEST / MACRO name */
    struct jnode *a, *b, *c;
    jn_vec args;     /* call args, list items, dict keys, compare operands, bodies */
    jn_vec args2;    /* kwarg values, dict values, else-bodies, macro defaults */
    char **names;    /* kwarg names (args2.n), for/set targets, macro params, compare ops */
    int nnames;
    int *ops;        /* JN_COMPARE: op per operand (OP_* or 100=in, 101=not in) */
    bool uses_loop;  /* JN_FOR: the body names `loop` (else the loop variable is not built) */
} jnode;

#define JN_OP_IN 100
#define JN_OP_NOTIN 101

void jinja_node_free(jnode *n);
lmx_status jinja_parse(const tk_vec *toks, jnode **root);
/* Unknown filter and test names outside {% if %} / inline-if → LMX_ERR_TEMPLATE (jinja_check.c). */
lmx_status jinja_check(const jnode *root);

/* ---------------------------------------------------------------- evaluation */
typedef struct jframe { jv vars; bool barrier; } jframe;

typedef struct jctx {
    sb *out;
    jframe *frames; int nframes, capframes;
    int depth;               /* nesting of macro calls / expression recursion */
    jbudget bud;
    size_t max_out;          /* largest string (and rendered text) */
    int flow;                /* 0 normal, 1 break, 2 continue */
    bool failed;
    int err_line;
    char err[512];
    bool fixed_time;         /* strftime_now uses `now` instead of the clock */
    int64_t now;
    jv namespaces;           /* every namespace created (cycles are broken after the render) */
} jctx;

/* Sets the render error (first one wins) and returns false. */
bool jerr(jctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A string builder for this render: limited to max_out, charged to the work budget. */
void jsb_init(jctx *c, sb *b);
/* Binds positional + keyword arguments to parameters (values borrowed) into vals[]; false with
 * Python's TypeError text on a mismatch. `kind` prefixes the callee in messages ("filter " or ""). */
typedef struct { const char *name; jv def; } jparam;
bool jbind(jctx *c, int line, const char *kind, const char *fname, const jparam *ps, int np, const jv *args,
           int nargs, char **kwn, const jv *kwv, int nkw, jv *vals);
/* In a function with (c, line, args, nargs, kwn, kwv, nkw): declares jv a_[] bound to the
 * parameters {name, default}…, returning false from the function on a mismatch. */
#define JBIND_KIND(kind, fname, ...)                                                         \
    jparam ps_[] = {__VA_ARGS__};                                                          \
    enum { NP_ = sizeof ps_ / sizeof ps_[0] };                                             \
    jv a_[NP_];                                                                            \
    if (!jbind(c, line, kind, fname, ps_, NP_, args, nargs, kwn, kwv, nkw, a_)) return false
#define JBIND(fname, ...) JBIND_KIND("", fname, __VA_ARGS__)
#define U jv_undef(NULL) /* a required parameter */
bool jneed_str(jctx *c, int line, jv v, const char *what);
bool jneed_int(jctx *c, int line, jv v, int64_t *out, const char *what);
static inline bool jv_int_like(jv v) { return v.t == JV_INT || v.t == JV_BOOL; }
static inline int64_t jv_as_int(jv v) { return v.t == JV_BOOL ? v.u.b : v.u.i; }
static inline bool jname_in(const char *const *set, const char *name) {
    for (int i = 0; set[i]; i++) if (!strcmp(set[i], name)) return true;
    return false;
}
#define JINJA_MAX_RANGE 100000 /* range() length, as Jinja's sandbox */

/* Charges `bytes` of work (copies, comparisons) / one step (iteration, call); false = over budget. */
bool jwork(jctx *c, int line, uint64_t bytes);
bool jstep(jctx *c, int line);
bool joom(jctx *c, int line); /* the "out of memory" render error */
/* A builder that failed: past max_out (a limit) or out of memory → the render error, false. */
bool jsb_check(jctx *c, int line, const sb *b);
/* Moves the builder's text into *out (a new string), or fails like jsb_check (freeing it). */
bool jsb_take(jctx *c, int line, sb *b, jv *out);
bool jstr_new(jctx *c, int line, const char *s, size_t n, jv *out); /* a new string value or oom */

bool jinja_eval(jctx *c, const jnode *n, jv *out);
bool jinja_exec_body(jctx *c, const jn_vec *body);
/* Calls a callable value. args: [nargs] positional, kwn/kwv: [nkw]. Values are borrowed. */
bool jinja_call(jctx *c, int line, jv fn, const jv *args, int nargs, char **kwn, const jv *kwv, int nkw, jv *out);

/* A filter: `in | name(args, kw=…)`; the value goes to *out (new reference). */
#define FILTER_PARAMS jctx *c, int line, const char *name, jv in, const jv *args, int nargs, char **kwn, \
                      const jv *kwv, int nkw, jv *out
typedef bool (*jfilter_fn)(FILTER_PARAMS);
typedef struct { const char *name; jfilter_fn fn; } jfilter_entry;
/* the text filters of jinja_filters_text.c */
bool jf_safe(FILTER_PARAMS); /* also e, escape, forceescape */
bool jf_indent(FILTER_PARAMS);
bool jf_wordcount(FILTER_PARAMS);
bool jf_truncate(FILTER_PARAMS);
bool jf_wordwrap(FILTER_PARAMS);
bool jf_striptags(FILTER_PARAMS);
bool jf_urlencode(FILTER_PARAMS);
bool jf_filesizeformat(FILTER_PARAMS);
bool jf_xmlattr(FILTER_PARAMS);
bool jf_pprint(FILTER_PARAMS);
bool jf_urlize(FILTER_PARAMS);

/* filters (jinja_filters*.c): above the tests, globals, methods and operators */
bool jinja_filter(jctx *c, int line, const char *name, jv in, const jv *args, int nargs,
                  char **kwn, const jv *kwv, int nkw, jv *out);
bool jinja_has_filter(const char *name); /* every Jinja2 builtin filter name (+ tojson) */
/* jinja_test plus the tests that need the filter table (`is filter`). */
bool jinja_env_test(jctx *c, int line, const char *name, jv in, const jv *args, int nargs, bool *res);

/* tests and globals (jinja_globals.c) */
bool jinja_test(jctx *c, int line, const char *name, jv in, const jv *args, int nargs, bool *res);
bool jinja_has_test(const char *name);   /* every Jinja2 test name (filter/test included) */
bool jinja_global(const char *name, jv *out);    /* range, namespace, … as JF_GLOBAL */
/* cycler(*items) / joiner(sep) objects; calls of loop.changed, a joiner, a cycler's next/reset
 * (jinja_methods.c). */
bool jinja_make_object(jctx *c, int line, const char *name, const jv *args, int nargs, char **kwn, const jv *kwv,
                       int nkw, jv *out);
bool jinja_call_object(jctx *c, int line, jv fn, const char *method, const jv *args, int nargs, jv *out);
/* cycler.current / .next / .reset; false with *out undefined for other names. */
bool jinja_object_attr(jctx *c, int line, jv fn, const char *name, jv *out);
bool jinja_call_global(jctx *c, int line, const char *name, const jv *args, int nargs,
                       char **kwn, const jv *kwv, int nkw, jv *out);
bool jinja_call_method(jctx *c, int line, jv self, const char *name, const jv *args, int nargs,
                       char **kwn, const jv *kwv, int nkw, jv *out);
bool jinja_is_method(jv self, const char *name);
bool jinja_title_filter(jctx *c, int line, jv s, jv *out); /* Jinja's `title`: each word capitalised */
/* methods and lookups (jinja_methods.c): obj.name / obj[key] in Jinja's getattr/getitem order */
bool jinja_getattr(jctx *c, int line, jv obj, const char *name, jv *out);
bool jinja_getitem(jctx *c, int line, jv obj, jv key, jv *out);
/* operators (jinja_ops.c): Python-like binary ops and comparisons */
bool jinja_binop(jctx *c, int line, int op, jv a, jv b, jv *out);
bool jinja_compare(jctx *c, int line, int op, jv a, jv b, bool *res);
bool jinja_contains(jctx *c, int line, jv container, jv item, bool *res);
/* Turns an iterable into a list (strings → characters, dict → keys, undefined → empty). */
bool jinja_to_list(jctx *c, int line, jv v, jv *out);
bool jinja_str(jctx *c, jv v, jv *out); /* str(v) as a new string value */

#endif
