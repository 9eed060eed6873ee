/* engine_lm.c — the engine seam (engine/engine.h) over src/model, src/tokenizer and the chat
 * template engine. See engine_lm.h for the documented choices. */
#include "engine/engine_lm.h"

#include "model/lm.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

struct lmx_engine_model {
    char *dir;
    lmx_lm *lm;
    lmx_backend *backend;          /* owned (destroyed after lm): lmx_backend_create's pick */
    lmx_backend_group *group;      /* tensor parallel (opts->tensor_parallel >= 1): owned, destroyed after lm;
                                      backend is then NULL */
    lmx_tokenizer *tok;            /* NULL: no tokenizer.json (id-level use only) */
    lmx_chat_template *tmpl;       /* NULL: no template, or it failed to parse (tmpl_error says) */
    char *tmpl_error;              /* why there is no usable template (malloc'd) */
    lmx_status tmpl_status;
    char *special_json;            /* {"bos_token": "...", ...} for the template context */
    const char *bos_text;          /* the BOS token's text (points into tok), NULL if none */
    size_t bos_len;
};

struct lmx_engine_kv {
    lmx_lm *lm;
    lmx_kv *kv;
};

struct lmx_engine_detok {
    lmx_detok_stream *s; /* NULL: the model has no tokenizer, nothing is ever emitted */
};

/* ---- probe / open / close ---- */

/* Whether tokenizer.json exists at all: one that is not a regular file (a FIFO, a directory, a
 * loop) counts, so the tokenizer load names what it is instead of the model silently losing text. */
static bool has_tokenizer_json(const char *dir) {
    char *tj = lmx_fs_join(dir, "tokenizer.json");
    bool has = tj && lmx_fs_exists(tj);
    free(tj);
    return has;
}

static lmx_status eng_probe(void *ctx, const char *dir, const lmx_engine_load_opts *opts, lmx_model_facts *facts) {
    (void)ctx;
    if (!dir || !facts) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "probe: NULL argument");
    lmx_status st = lmx_lm_probe_ranks(dir, opts ? opts->tensor_parallel : 0, facts);
    if (st != LMX_OK) return st;
    facts->info.device = opts && opts->device == LMX_DEVICE_GPU ? LMX_DEVICE_GPU : LMX_DEVICE_CPU;
    /* the CPU backend's AVX-512 level repacks 4/8-bit weights into 16-row tiles (cpu_qtile.h) of
     * the same bytes and hands the mapped source pages back (cpu_backend.c): weight_bytes covers it */
    facts->no_tokenizer = !has_tokenizer_json(dir);
    return LMX_OK;
}

static void eng_close(lmx_engine_model *m) {
    if (!m) return;
    lmx_lm_close(m->lm);
    lmx_backend_destroy(m->backend);
    lmx_backend_group_destroy(m->group);
    lmx_chat_template_destroy(m->tmpl);
    lmx_tokenizer_destroy(m->tok);
    free(m->tmpl_error);
    free(m->special_json);
    free(m->dir);
    free(m);
}

/* Loads tokenizer.json (when present), the chat template and the special-token variables. */
static lmx_status open_text(lmx_engine_model *m, const char *dir) {
    char *tj = lmx_fs_join(dir, "tokenizer.json");
    if (!tj) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "model %s: allocation failed", dir);
    bool has_tok = lmx_fs_exists(tj); /* a FIFO / directory / loop there: the load below says what it is */
    free(tj);
    if (!has_tok) {
        LMX_LOG_I("model %s has no tokenizer.json: token ids only (text generation and chat unavailable)", dir);
        return LMX_OK;
    }
    lmx_status st = lmx_tokenizer_load(dir, &m->tok);
    if (st != LMX_OK) return lmx_error_prefix(st, "%s/tokenizer.json", dir);
    const char *bos = lmx_tokenizer_special_token(m->tok, LMX_TOK_BOS);
    if (bos && *bos) {
        m->bos_text = bos;
        m->bos_len = strlen(bos);
    }
    char *src = NULL;
    st = lmx_chat_template_load_dir(dir, &src, &m->special_json);
    if (st == LMX_OK) st = lmx_chat_template_create(src, &m->tmpl);
    if (st == LMX_OK) st = lmx_chat_template_set_name(m->tmpl, dir);
    free(src);
    if (st == LMX_ERR_OUT_OF_MEMORY) return st;
    if (st != LMX_OK) {
        m->tmpl_status = st;
        m->tmpl_error = strdup(lmx_last_error_detail());
        if (!m->tmpl_error) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "model %s: allocation failed", dir);
        if (strstr(m->tmpl_error, "no chat template")) LMX_LOG_I("model %s: %s", dir, m->tmpl_error);
        else LMX_LOG_W("model %s: chat template unusable: %s", dir, m->tmpl_error);
    }
    return LMX_OK;
}

static lmx_status eng_open(void *ctx, const char *dir, const lmx_engine_load_opts *opts, lmx_engine_model **out,
                           lmx_model_facts *facts) {
    if (!dir || !out || !facts) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "open: NULL argument");
    *out = NULL;
    /* the probe's facts and parsed config; probed here when the caller did not */
    lmx_model_facts f = *facts;
    bool own_probe = !f.state;
    lmx_status st = own_probe ? eng_probe(ctx, dir, opts, &f) : LMX_OK;
    if (st != LMX_OK) return st;
    lmx_engine_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        m = NULL;
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "model %s: allocation failed", dir);
        goto fail;
    }
    lmx_device dev = LMX_DEVICE_CPU;
    const lmx_device want = opts ? opts->device : LMX_DEVICE_AUTO;
    const int threads = opts ? opts->n_threads : 0;
    if (opts && opts->tensor_parallel >= 1) /* the ranks: one thread and backend each (model/lm_shard.h) */
        st = lmx_backend_group_create(want, opts->tensor_parallel, threads, &m->group, &dev);
    else
        st = lmx_backend_create(want, threads, &m->backend, &dev);
    if (st != LMX_OK) goto fail;
    lmx_lm_options lo = {.no_mmap = opts ? !opts->use_mmap : false, .device = dev, .backend = m->backend,
                         .group = m->group};
    lmx_model_config *cfg = f.state;
    if ((st = lmx_lm_open_config(dir, &cfg, &lo, &m->lm)) != LMX_OK) goto fail;
    /* the model owns the config now (a later attempt after a failure below probes again) */
    f.state = NULL;
    f.state_free = NULL;
    if (!own_probe) facts->state = NULL, facts->state_free = NULL;
    if ((st = open_text(m, dir)) != LMX_OK) goto fail;

    /* what only an open model knows */
    f.info.vocab_size = lmx_lm_vocab_size(m->lm);
    f.info.weight_bytes = (int64_t)lmx_lm_weight_bytes(m->lm);
    f.info.device = dev;
    f.kv_bytes_per_token = (int64_t)lmx_lm_kv_bytes_per_position(m->lm);
    f.no_tokenizer = m->tok == NULL;
    f.has_chat_template = m->tmpl != NULL;
    /* EOS ids came with the config; neither file naming them → the tokenizer's eos_token */
    int32_t fallback = m->tok ? lmx_tokenizer_special_id(m->tok, LMX_TOK_EOS) : -1;
    if (!f.eos_named && f.n_eos == 0 && fallback >= 0) f.eos_ids[f.n_eos++] = fallback;
    if (m->tok && lmx_tokenizer_vocab_size(m->tok) > (size_t)f.info.vocab_size)
        LMX_LOG_W("model %s: the tokenizer knows %zu ids but the model only %d; prompts using the others fail", dir,
                  lmx_tokenizer_vocab_size(m->tok), f.info.vocab_size);
    *facts = f;
    *out = m;
    return LMX_OK;
fail:
    eng_close(m);
    if (own_probe) lmx_model_facts_release(&f);
    return st;
}

/* ---- text ---- */

static lmx_status no_tokenizer(const lmx_engine_model *m, const char *what) {
    return lmx_error(LMX_ERR_UNSUPPORTED, "%s: model %s has no tokenizer.json (only token-id generation works)", what,
                     m->dir);
}

static lmx_status eng_tokenize(lmx_engine_model *m, const char *text, size_t len, bool add_special, int32_t **ids,
                               size_t *n) {
    if (!m->tok) return no_tokenizer(m, "tokenize");
    /* mlx-lm: a prompt that already starts with the BOS text gets no second BOS */
    if (add_special && m->bos_text && len >= m->bos_len && !memcmp(text, m->bos_text, m->bos_len)) add_special = false;
    return lmx_tokenizer_encode(m->tok, text, len, add_special, ids, n);
}

static lmx_status eng_chat_render(lmx_engine_model *m, const lmx_message *msgs, int n_msgs, char **out) {
    *out = NULL;
    if (!m->tok) return no_tokenizer(m, "chat");
    if (!m->tmpl) {
        if (m->tmpl_status == LMX_ERR_TEMPLATE || m->tmpl_status == LMX_OK)
            return lmx_error(LMX_ERR_TEMPLATE, "model %s: %s", m->dir, m->tmpl_error ? m->tmpl_error : "no chat template");
        return lmx_error(m->tmpl_status, "model %s: chat template: %s", m->dir, m->tmpl_error);
    }
    cJSON *arr = cJSON_CreateArray();
    bool ok = arr != NULL;
    for (int i = 0; ok && i < n_msgs; i++) {
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(arr, o) && cJSON_AddStringToObject(o, "role", msgs[i].role) &&
             cJSON_AddStringToObject(o, "content", msgs[i].content);
    }
    char *messages = ok ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    if (!messages) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "chat: cannot build the messages");
    char *ctx = lmx_chat_template_context_json(m->special_json, messages, true, 0, NULL, NULL);
    cJSON_free(messages);
    if (!ctx) return lmx_error_prefix(LMX_ERR_OUT_OF_MEMORY, "chat: render context");
    lmx_status st = lmx_chat_template_render_json(m->tmpl, ctx, strlen(ctx), out, NULL);
    free(ctx);
    if (st != LMX_OK) lmx_error_prefix(st, "model %s: chat template", m->dir);
    return st;
}

/* ---- KV caches and the forward pass ---- */

static lmx_status eng_kv_create(lmx_engine_model *m, int max_context, lmx_engine_kv **out) {
    *out = NULL;
    lmx_engine_kv *k = calloc(1, sizeof *k);
    if (!k) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "kv cache: allocation failed");
    k->lm = m->lm;
    lmx_status st = lmx_kv_create(m->lm, max_context, &k->kv);
    if (st != LMX_OK) {
        free(k);
        return st;
    }
    *out = k;
    return LMX_OK;
}

static void eng_kv_destroy(lmx_engine_kv *k) {
    if (!k) return;
    lmx_kv_destroy(k->kv);
    free(k);
}

static void eng_kv_reset(lmx_engine_kv *k) { lmx_kv_reset(k->kv); }
static lmx_status eng_kv_truncate(lmx_engine_kv *k, int n) { return lmx_kv_truncate(k->kv, n); }
static int64_t eng_kv_bytes(const lmx_engine_kv *k) { return (int64_t)lmx_kv_bytes(k->kv); }
/* prefill chunks are [0, C), [C, 2C), …: resuming at a multiple of C keeps every row in the chunk it
 * has in one prefill (tests/model/test_prefix_exact.c) */
static int eng_kv_resume_point(const lmx_engine_kv *k, int n) {
    int c = lmx_kv_chunk(k->kv);
    return c > 0 ? n / c * c : 0;
}

static lmx_status eng_forward(lmx_engine_model *m, lmx_engine_kv *k, const int32_t *ids, size_t n, float *logits) {
    if (n == 0 || n > 0x7fffffff) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward: %zu tokens", n);
    if ((size_t)lmx_kv_pos(k->kv) + n > (size_t)lmx_kv_capacity(k->kv))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward: %zu tokens at position %d overflow the context of %d", n,
                         lmx_kv_pos(k->kv), lmx_kv_capacity(k->kv));
    return lmx_lm_forward(m->lm, k->kv, ids, (int)n, logits);
}

/* the device sampler's arguments for one row: the penalty sees the last repetition_context ids */
static lmx_sample_args sample_args(const lmx_engine_sample *s) {
    size_t ctx = s->sampling.repetition_context > 0 ? (size_t)s->sampling.repetition_context : 0;
    size_t nw = s->history ? (s->n_history < ctx ? s->n_history : ctx) : 0;
    return (lmx_sample_args){.sampling = s->sampling,
                             .window = nw ? s->history + (s->n_history - nw) : NULL,
                             .n_window = (int)nw,
                             .u = s->u};
}

static lmx_status eng_forward_sample(lmx_engine_model *m, lmx_engine_kv *k, const int32_t *ids, size_t n,
                                     const lmx_engine_sample *s, float *logits, int32_t *token) {
    *token = -1;
    if (!s) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward_sample: NULL sampling arguments");
    if (n == 0 || n > 0x7fffffff) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward: %zu tokens", n);
    if ((size_t)lmx_kv_pos(k->kv) + n > (size_t)lmx_kv_capacity(k->kv))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "forward: %zu tokens at position %d overflow the context of %d", n,
                         lmx_kv_pos(k->kv), lmx_kv_capacity(k->kv));
    if (!lmx_lm_can_sample(m->lm)) return lmx_lm_forward(m->lm, k->kv, ids, (int)n, logits);
    /* the penalty sees the last repetition_context ids of the history */
    lmx_sample_args a = sample_args(s);
    return lmx_lm_forward_sample(m->lm, k->kv, ids, (int)n, &a, logits, token);
}

/* ---- batched steps over a paged KV pool (model/lm.h lmx_pool, lmx_seq, lmx_lm_step) ---- */

struct lmx_engine_pool {
    lmx_pool *p;
    lmx_step_row *rows;     /* [max_rows] the step's rows in the model's terms */
    lmx_sample_args *args;  /* [max_rows] their sampling arguments */
    int max_rows;
};

struct lmx_engine_seq {
    lmx_engine_pool *pool;
    lmx_seq *s;
};

static lmx_status eng_pool_create(lmx_engine_model *m, int64_t max_bytes, int max_rows, lmx_engine_pool **out) {
    *out = NULL;
    if (max_rows < 1) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "pool: %d rows per step", max_rows);
    lmx_engine_pool *ep = calloc(1, sizeof *ep);
    if (ep) ep->rows = calloc((size_t)max_rows, sizeof *ep->rows);
    if (ep) ep->args = calloc((size_t)max_rows, sizeof *ep->args);
    if (!ep || !ep->rows || !ep->args) {
        if (ep) free(ep->rows);
        free(ep);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "pool: allocation failed");
    }
    ep->max_rows = max_rows;
    lmx_status st = lmx_pool_create(m->lm, max_bytes, max_rows, &ep->p);
    if (st != LMX_OK) {
        free(ep->rows);
        free(ep->args);
        free(ep);
        return st;
    }
    *out = ep;
    return LMX_OK;
}

static void eng_pool_destroy(lmx_engine_pool *ep) {
    if (!ep) return;
    lmx_pool_destroy(ep->p);
    free(ep->rows);
    free(ep->args);
    free(ep);
}

static void eng_pool_stats(const lmx_engine_pool *ep, int64_t *bytes, int64_t *used_bytes, int64_t *free_blocks) {
    lmx_pool_stats(ep->p, bytes, used_bytes, free_blocks);
}

static lmx_status seq_wrap(lmx_engine_pool *ep, lmx_seq *s, lmx_engine_seq **out) {
    lmx_engine_seq *es = calloc(1, sizeof *es);
    if (!es) {
        lmx_seq_destroy(s);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "sequence: allocation failed");
    }
    es->pool = ep;
    es->s = s;
    *out = es;
    return LMX_OK;
}

static lmx_status eng_seq_create(lmx_engine_pool *ep, int max_context, lmx_engine_seq **out) {
    *out = NULL;
    lmx_seq *s = NULL;
    lmx_status st = lmx_seq_create(ep->p, max_context, &s);
    return st == LMX_OK ? seq_wrap(ep, s, out) : st;
}

static void eng_seq_destroy(lmx_engine_seq *es) {
    if (!es) return;
    lmx_seq_destroy(es->s);
    free(es);
}

static int eng_seq_pos(const lmx_engine_seq *es) { return lmx_seq_pos(es->s); }

static lmx_status eng_seq_fork(const lmx_engine_seq *src, int n, lmx_engine_seq **out) {
    *out = NULL;
    lmx_seq *s = NULL;
    lmx_status st = lmx_seq_fork(src->s, n, &s);
    return st == LMX_OK ? seq_wrap(src->pool, s, out) : st;
}

static lmx_status eng_seq_truncate(lmx_engine_seq *es, int n) { return lmx_seq_truncate(es->s, n); }

static lmx_status eng_step(lmx_engine_pool *ep, lmx_engine_step_row *rows, int n_rows) {
    if (!rows || n_rows < 1 || n_rows > ep->max_rows)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step: %d rows (at most %d)", n_rows, ep->max_rows);
    for (int i = 0; i < n_rows; i++) {
        const lmx_engine_step_row *r = &rows[i];
        if (!r->seq || r->seq->pool != ep || r->n == 0 || r->n > 0x7fffffff)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "step row %d: no sequence of this pool, or %zu ids", i, r->n);
        if (r->sample) ep->args[i] = sample_args(r->sample);
        ep->rows[i] = (lmx_step_row){.seq = r->seq->s,
                                     .ids = r->ids,
                                     .n = (int)r->n,
                                     .sample = r->sample ? &ep->args[i] : NULL,
                                     .logits = r->logits,
                                     .token = r->token};
    }
    return lmx_lm_step(ep->p, ep->rows, n_rows);
}

/* ---- streaming detokenizer ---- */

static lmx_status eng_detok_create(lmx_engine_model *m, lmx_engine_detok **out) {
    *out = NULL;
    lmx_engine_detok *d = calloc(1, sizeof *d);
    if (!d) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "detokenizer: allocation failed");
    /* generated text keeps special tokens (mlx-lm's detokenizer decodes without skipping) */
    if (m->tok) {
        lmx_status st = lmx_detok_stream_create(m->tok, false, &d->s);
        if (st != LMX_OK) {
            free(d);
            return st;
        }
    }
    *out = d;
    return LMX_OK;
}

static void eng_detok_destroy(lmx_engine_detok *d) {
    if (!d) return;
    lmx_detok_stream_destroy(d->s);
    free(d);
}

static lmx_status eng_detok_push(lmx_engine_detok *d, int32_t id, const char **text, size_t *len) {
    if (!d->s) {
        *text = "";
        *len = 0;
        return LMX_OK;
    }
    return lmx_detok_stream_feed(d->s, id, text, len);
}

static lmx_status eng_detok_flush(lmx_engine_detok *d, const char **text, size_t *len) {
    if (!d->s) {
        *text = "";
        *len = 0;
        return LMX_OK;
    }
    return lmx_detok_stream_flush(d->s, text, len);
}

/* ---- device counters (checked for a GPU first: a failing probe would replace this thread's error
 * detail, and the monitor reads these right after a generation failed) ---- */

static int64_t eng_device_bytes(void *ctx) {
    (void)ctx;
    lmx_gpu_usage u;
    return lmx_gpu_available() && lmx_gpu_usage_get(&u) == LMX_OK ? u.mem_used : 0;
}

static double eng_gpu_utilization(void *ctx) {
    (void)ctx;
    lmx_gpu_usage u;
    return lmx_gpu_available() && lmx_gpu_usage_get(&u) == LMX_OK ? u.percent : -1;
}

static const lmx_engine g_engine = {
    .ctx = NULL,
    .probe = eng_probe,
    .open = eng_open,
    .close = eng_close,
    .tokenize = eng_tokenize,
    .chat_render = eng_chat_render,
    .kv_create = eng_kv_create,
    .kv_destroy = eng_kv_destroy,
    .kv_reset = eng_kv_reset,
    .kv_truncate = eng_kv_truncate,
    .kv_bytes = eng_kv_bytes,
    .kv_resume_point = eng_kv_resume_point,
    .forward = eng_forward,
    .detok_create = eng_detok_create,
    .detok_destroy = eng_detok_destroy,
    .detok_push = eng_detok_push,
    .detok_flush = eng_detok_flush,
    .device_bytes = eng_device_bytes,
    .gpu_utilization = eng_gpu_utilization,
    .forward_sample = eng_forward_sample,
    .pool_create = eng_pool_create,
    .pool_destroy = eng_pool_destroy,
    .pool_stats = eng_pool_stats,
    .seq_create = eng_seq_create,
    .seq_destroy = eng_seq_destroy,
    .seq_pos = eng_seq_pos,
    .seq_fork = eng_seq_fork,
    .seq_truncate = eng_seq_truncate,
    .step = eng_step,
};

const lmx_engine *lmx_engine_lm(void) { return &g_engine; }
