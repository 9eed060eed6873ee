/* fake_engine.c — the toy engine described in fake_engine.h. */
#include "fake_engine/fake_engine.h"
#include "util/error.h"
#include "util/fs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct lmx_engine_model {
    fake_engine_ctx *ctx;
    char script[256];
    size_t script_len;
    float peak;
    int32_t second;       /* -1 or a byte that always gets second_logit */
    float second_logit;
    bool has_template;
    int64_t weight_bytes, kv_bytes_per_token;
    float mix;            /* weight of the whole-sequence hash logit (0 = the last token alone decides) */
    int block, pool_blocks;
};

struct lmx_engine_kv {
    fake_engine_ctx *ctx;
    int cap, pos;
    int64_t ctx_kv_bytes_per_token; /* the model's, for kv_bytes */
    int32_t *ids;         /* [cap] the tokens at the positions filled */
};

struct lmx_engine_detok {
    char pending[8];
    size_t n;
    char out[16];
};

typedef struct fake_cfg {
    char script[256];
    int64_t weight_bytes, kv_bytes_per_token;
    float peak, second_logit;
    int32_t second;
    int max_position;
    bool has_template, invalid;
    float mix;
    int block, pool_blocks;
} fake_cfg;

static void sleep_us(int us) {
    if (us <= 0) return;
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static lmx_status read_cfg(const char *dir, fake_cfg *fc) {
    memset(fc, 0, sizeof *fc);
    char *p = lmx_fs_join(dir, "fake.json");
    char *text = NULL;
    lmx_status st = p ? lmx_fs_read_file(p, 1 << 16, &text, NULL) : LMX_ERR_OUT_OF_MEMORY;
    if (st != LMX_OK) {
        free(p);
        return st;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) {
        st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "%s: not JSON", p);
        free(p);
        return st;
    }
    cJSON *s = cJSON_GetObjectItem(j, "script");
    snprintf(fc->script, sizeof fc->script, "%s", cJSON_IsString(s) ? s->valuestring : "ab");
    cJSON *w = cJSON_GetObjectItem(j, "weight_bytes"), *k = cJSON_GetObjectItem(j, "kv_bytes_per_token");
    cJSON *pk = cJSON_GetObjectItem(j, "peak");
    fc->weight_bytes = cJSON_IsNumber(w) ? (int64_t)w->valuedouble : 1000;
    fc->kv_bytes_per_token = cJSON_IsNumber(k) ? (int64_t)k->valuedouble : 0;
    fc->peak = cJSON_IsNumber(pk) ? (float)pk->valuedouble : 10.0f;
    cJSON *sc = cJSON_GetObjectItem(j, "second"), *sl = cJSON_GetObjectItem(j, "second_logit");
    fc->second = cJSON_IsString(sc) && sc->valuestring[0] ? (unsigned char)sc->valuestring[0] : -1;
    fc->second_logit = cJSON_IsNumber(sl) ? (float)sl->valuedouble : 0.0f;
    cJSON *mp = cJSON_GetObjectItem(j, "max_position");
    fc->max_position = cJSON_IsNumber(mp) ? mp->valueint : 1 << 20;
    fc->has_template = !cJSON_IsFalse(cJSON_GetObjectItem(j, "template"));
    fc->invalid = cJSON_IsTrue(cJSON_GetObjectItem(j, "invalid"));
    cJSON *mx = cJSON_GetObjectItem(j, "mix"), *bl = cJSON_GetObjectItem(j, "block"),
          *pb = cJSON_GetObjectItem(j, "pool_blocks");
    fc->mix = cJSON_IsNumber(mx) ? (float)mx->valuedouble : 0.0f;
    fc->block = cJSON_IsNumber(bl) && bl->valueint > 0 ? bl->valueint : 16;
    fc->pool_blocks = cJSON_IsNumber(pb) && pb->valueint > 0 ? pb->valueint : 1 << 30;
    cJSON_Delete(j);
    free(p);
    return LMX_OK;
}

static void fill_info(const fake_cfg *fc, lmx_model_facts *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->info.model_type, sizeof info->info.model_type, "fake");
    info->info.n_params = fc->weight_bytes / 2;
    info->info.n_layers = 2;
    info->info.hidden_size = 8;
    info->info.vocab_size = FAKE_VOCAB;
    info->info.weight_bytes = fc->weight_bytes;
    info->kv_bytes_per_token = fc->kv_bytes_per_token;
    info->max_position = fc->max_position;
    info->info.device = LMX_DEVICE_CPU;
    info->eos_ids[0] = FAKE_EOS;
    info->n_eos = 1;
    info->has_chat_template = fc->has_template;
}

static lmx_status f_probe(void *ctx, const char *dir, const lmx_engine_load_opts *o, lmx_model_facts *info) {
    fake_engine_ctx *c = ctx;
    atomic_fetch_add(&c->probe_calls, 1);
    fake_cfg fc;
    lmx_status st = read_cfg(dir, &fc);
    if (st != LMX_OK) return st;
    fill_info(&fc, info);
    return LMX_OK;
}

static lmx_status f_open(void *ctx, const char *dir, const lmx_engine_load_opts *o, lmx_engine_model **out,
                         lmx_model_facts *info) {
    fake_engine_ctx *c = ctx;
    *out = NULL;
    atomic_fetch_add(&c->open_calls, 1);
    sleep_us(atomic_load(&c->open_delay_ms) * 1000);
    int f = atomic_load(&c->fail_open_oom);
    while (f > 0 && !atomic_compare_exchange_weak(&c->fail_open_oom, &f, f - 1)) {
    }
    if (f > 0) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: injected allocation failure", dir);
    fake_cfg fc;
    lmx_status st = read_cfg(dir, &fc);
    if (st != LMX_OK) return st;
    if (fc.invalid) return lmx_error(LMX_ERR_MODEL_VALIDATION_FAILED, "%s: tensor lm_head.weight is missing", dir);
    lmx_engine_model *m = calloc(1, sizeof *m);
    if (!m) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake: allocation failed");
    m->ctx = c;
    memcpy(m->script, fc.script, sizeof m->script);
    m->script_len = strlen(m->script);
    m->peak = fc.peak;
    m->second = fc.second;
    m->second_logit = fc.second_logit;
    m->has_template = fc.has_template;
    m->weight_bytes = fc.weight_bytes;
    m->kv_bytes_per_token = fc.kv_bytes_per_token;
    m->mix = fc.mix;
    m->block = fc.block;
    m->pool_blocks = fc.pool_blocks;
    fill_info(&fc, info);
    atomic_fetch_add(&c->live_models, 1);
    atomic_fetch_add(&c->device_bytes, fc.weight_bytes);
    *out = m;
    return LMX_OK;
}

static void f_close(lmx_engine_model *m) {
    if (!m) return;
    atomic_fetch_add(&m->ctx->close_calls, 1);
    atomic_fetch_sub(&m->ctx->live_models, 1);
    atomic_fetch_sub(&m->ctx->device_bytes, m->weight_bytes);
    free(m);
}

static lmx_status f_tokenize(lmx_engine_model *m, const char *text, size_t len, bool add_special, int32_t **ids,
                             size_t *n) {
    *ids = malloc((len ? len : 1) * sizeof **ids);
    if (!*ids) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake tokenize");
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    *n = len;
    return LMX_OK;
}

static lmx_status f_chat(lmx_engine_model *m, const lmx_message *msgs, int n, char **out) {
    if (!m->has_template) return lmx_error(LMX_ERR_TEMPLATE, "fake model has no chat template");
    size_t len = 16;
    for (int i = 0; i < n; i++) len += strlen(msgs[i].role) + strlen(msgs[i].content) + 8;
    char *s = malloc(len), *p = s;
    if (!s) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake chat");
    for (int i = 0; i < n; i++) p += sprintf(p, "<|%s|>%s\n", msgs[i].role, msgs[i].content);
    sprintf(p, "<|assistant|>");
    *out = s;
    return LMX_OK;
}

static lmx_status f_kv_create(lmx_engine_model *m, int max_context, lmx_engine_kv **out) {
    lmx_engine_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake kv");
    kv->ctx = m->ctx;
    kv->cap = max_context;
    kv->ctx_kv_bytes_per_token = m->kv_bytes_per_token;
    if (!(kv->ids = malloc((size_t)(max_context > 0 ? max_context : 1) * sizeof *kv->ids))) {
        free(kv);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake kv");
    }
    atomic_fetch_add(&m->ctx->live_kv, 1);
    *out = kv;
    return LMX_OK;
}

static void f_kv_destroy(lmx_engine_kv *kv) {
    if (!kv) return;
    atomic_fetch_sub(&kv->ctx->live_kv, 1);
    free(kv->ids);
    free(kv);
}

static void f_kv_reset(lmx_engine_kv *kv) { kv->pos = 0; }
static lmx_status f_kv_truncate(lmx_engine_kv *kv, int n) {
    if (n < 0 || n > kv->pos)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake kv_truncate: %d of %d positions", n, kv->pos);
    kv->pos = n;
    return LMX_OK;
}
static int64_t f_kv_bytes(const lmx_engine_kv *kv) { return kv->ctx_kv_bytes_per_token * kv->cap; }

static int32_t target_of(const lmx_engine_model *m, int32_t t) {
    size_t L = m->script_len;
    if (L == 0) return FAKE_EOS;
    int32_t next = (unsigned char)m->script[0];
    for (size_t i = 0; i < L; i++)
        if ((unsigned char)m->script[i] == t) {
            next = (unsigned char)m->script[(i + 1) % L];
            break;
        }
    return next == '#' ? FAKE_EOS : next;
}

/* The logits after the sequence ids[0..n) (n >= 1): the script's target of the last token, the
 * optional second byte, and with "mix" a logit on a byte chosen by a hash of the whole sequence (so
 * a KV holding the wrong tokens changes sampled output). */
static void fake_logits(const lmx_engine_model *m, const int32_t *ids, int n, float *logits) {
    int32_t tgt = target_of(m, ids[n - 1]);
    for (int i = 0; i < FAKE_VOCAB; i++) logits[i] = 0.0f;
    if (m->second >= 0) logits[m->second] = m->second_logit;
    if (m->mix != 0.0f) {
        uint64_t h = 1469598103934665603ull; /* FNV-1a over the ids */
        for (int i = 0; i < n; i++) h = (h ^ (uint32_t)ids[i]) * 1099511628211ull;
        logits[h % 256] += m->mix;
        logits[(h >> 20) % 256] += m->mix * 0.5f;
    }
    logits[tgt] = m->peak;
}

static lmx_status f_forward(lmx_engine_model *m, lmx_engine_kv *kv, const int32_t *ids, size_t n, float *logits) {
    atomic_fetch_add(&m->ctx->forward_calls, 1);
    if (n == 0 || kv->pos + (int)n > kv->cap)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake forward: %zu tokens at position %d, capacity %d", n, kv->pos,
                         kv->cap);
    sleep_us(atomic_load(&m->ctx->forward_delay_us));
    memcpy(kv->ids + kv->pos, ids, n * sizeof *ids);
    kv->pos += (int)n;
    atomic_fetch_add(&m->ctx->tokens_processed, (int)n);
    fake_logits(m, kv->ids, kv->pos, logits);
    return LMX_OK;
}

/* ---- batched steps over a paged pool: blocks of m->block positions with reference counts;
 * a sequence keeps its tokens (the "K/V") and the blocks that hold them ---- */
struct lmx_engine_pool {
    lmx_engine_model *m;
    int block, n_blocks, n_free, max_rows;
    int64_t block_bytes;
    int *ref;             /* [n_blocks] holders of each block (0 = free) */
};

struct lmx_engine_seq {
    lmx_engine_pool *p;
    int cap, pos;
    int32_t *ids;         /* [cap] */
    int *blocks;          /* [cap / block + 1] block indices of positions 0.. */
    int n_blocks;
};

static int pool_take(lmx_engine_pool *p) {
    for (int i = 0; i < p->n_blocks; i++)
        if (p->ref[i] == 0) {
            p->ref[i] = 1;
            p->n_free--;
            return i;
        }
    return -1;
}

static void pool_drop(lmx_engine_pool *p, int b) {
    if (--p->ref[b] == 0) p->n_free++;
}

static lmx_status f_pool_create(lmx_engine_model *m, int64_t max_bytes, int max_rows, lmx_engine_pool **out) {
    *out = NULL;
    int64_t bb = (m->kv_bytes_per_token > 0 ? m->kv_bytes_per_token : 1) * m->block;
    int64_t nb = max_bytes / bb;
    if (nb > m->pool_blocks) nb = m->pool_blocks;
    if (nb < 1 || max_rows < 1)
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake pool: %lld bytes hold no %lld-byte block", (long long)max_bytes,
                         (long long)bb);
    lmx_engine_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->ref = calloc((size_t)nb, sizeof *p->ref))) {
        free(p);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake pool");
    }
    p->m = m;
    p->block = m->block;
    p->n_blocks = p->n_free = (int)nb;
    p->block_bytes = bb;
    p->max_rows = max_rows;
    atomic_fetch_add(&m->ctx->live_pools, 1);
    *out = p;
    return LMX_OK;
}

static void f_pool_destroy(lmx_engine_pool *p) {
    if (!p) return;
    atomic_fetch_sub(&p->m->ctx->live_pools, 1);
    free(p->ref);
    free(p);
}

static void f_pool_stats(const lmx_engine_pool *p, int64_t *bytes, int64_t *used, int64_t *free_blocks) {
    *bytes = p->block_bytes * p->n_blocks;
    *used = p->block_bytes * (p->n_blocks - p->n_free);
    *free_blocks = p->n_free;
}

static lmx_status f_seq_create(lmx_engine_pool *p, int max_context, lmx_engine_seq **out) {
    *out = NULL;
    lmx_engine_seq *q = calloc(1, sizeof *q);
    if (q) {
        q->ids = malloc((size_t)(max_context > 0 ? max_context : 1) * sizeof *q->ids);
        q->blocks = malloc(((size_t)max_context / (size_t)p->block + 1) * sizeof *q->blocks);
    }
    if (!q || !q->ids || !q->blocks) {
        if (q) free(q->ids), free(q->blocks);
        free(q);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake seq");
    }
    q->p = p;
    q->cap = max_context;
    atomic_fetch_add(&p->m->ctx->live_seqs, 1);
    *out = q;
    return LMX_OK;
}

static void f_seq_destroy(lmx_engine_seq *q) {
    if (!q) return;
    for (int i = 0; i < q->n_blocks; i++) pool_drop(q->p, q->blocks[i]);
    atomic_fetch_sub(&q->p->m->ctx->live_seqs, 1);
    free(q->ids);
    free(q->blocks);
    free(q);
}

static int f_seq_pos(const lmx_engine_seq *q) { return q->pos; }

static lmx_status f_seq_truncate(lmx_engine_seq *q, int n) {
    if (n < 0 || n > q->pos) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake seq_truncate: %d of %d", n, q->pos);
    int keep = (n + q->p->block - 1) / q->p->block;
    while (q->n_blocks > keep) pool_drop(q->p, q->blocks[--q->n_blocks]);
    q->pos = n;
    return LMX_OK;
}

static lmx_status f_seq_fork(const lmx_engine_seq *src, int n, lmx_engine_seq **out) {
    if (n < 0 || n > src->pos) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake seq_fork: %d of %d", n, src->pos);
    lmx_engine_pool *p = src->p;
    int full = n / p->block, part = n % p->block != 0;
    if (part && p->n_free < 1) return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake seq_fork: no free block");
    lmx_status st = f_seq_create(p, src->cap, out);
    if (st != LMX_OK) return st;
    lmx_engine_seq *q = *out;
    for (int i = 0; i < full; i++) p->ref[q->blocks[i] = src->blocks[i]]++; /* shared by reference */
    q->n_blocks = full;
    if (part) q->blocks[q->n_blocks++] = pool_take(p); /* the partial last block is copied */
    memcpy(q->ids, src->ids, (size_t)n * sizeof *q->ids);
    q->pos = n;
    return LMX_OK;
}

/* Blocks a row of n tokens needs: new ones past the last, and a copy of a shared partial block. */
static int row_blocks(const lmx_engine_seq *q, size_t n) {
    int B = q->p->block, need = (q->pos + (int)n + B - 1) / B - q->n_blocks;
    if (q->pos % B != 0 && q->p->ref[q->blocks[q->n_blocks - 1]] > 1) need++;
    return need;
}

static void row_write(lmx_engine_seq *q, const int32_t *ids, size_t n) {
    lmx_engine_pool *p = q->p;
    int B = p->block;
    if (q->pos % B != 0 && p->ref[q->blocks[q->n_blocks - 1]] > 1) { /* copy on write */
        pool_drop(p, q->blocks[q->n_blocks - 1]);
        q->blocks[q->n_blocks - 1] = pool_take(p);
    }
    memcpy(q->ids + q->pos, ids, n * sizeof *ids);
    q->pos += (int)n;
    while (q->n_blocks * B < q->pos) q->blocks[q->n_blocks++] = pool_take(p);
}

static void log_step(fake_engine_ctx *c, const lmx_engine_step_row *rows, int n_rows, size_t n_tok) {
    int i = atomic_fetch_add(&c->step_calls, 1);
    atomic_fetch_add(&c->step_rows, n_rows);
    if (i < FAKE_STEP_LOG) {
        c->step_log_rows[i] = n_rows;
        c->step_log_tokens[i] = (int)n_tok;
    }
    (void)rows;
}

static lmx_status f_step(lmx_engine_pool *p, lmx_engine_step_row *rows, int n_rows) {
    fake_engine_ctx *c = p->m->ctx;
    size_t n_tok = 0;
    int need = 0;
    for (int r = 0; r < n_rows; r++) {
        lmx_engine_seq *q = rows[r].seq;
        if (!q || q->p != p || rows[r].n == 0 || !rows[r].ids)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake step: row %d is malformed", r);
        for (int o = 0; o < r; o++)
            if (rows[o].seq == q) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake step: rows %d and %d share a sequence", o, r);
        if (q->pos + (int)rows[r].n > q->cap)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake step: row %d: %zu tokens at position %d, capacity %d", r,
                             rows[r].n, q->pos, q->cap);
        n_tok += rows[r].n;
        need += row_blocks(q, rows[r].n);
    }
    if ((int)n_tok > p->max_rows)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake step: %zu tokens, at most %d", n_tok, p->max_rows);
    if (need > p->n_free)
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake step: %d blocks needed, %d free", need, p->n_free);
    sleep_us(atomic_load(&c->step_delay_us));
    log_step(c, rows, n_rows, n_tok);
    atomic_fetch_add(&c->tokens_processed, (int)n_tok);
    for (int r = 0; r < n_rows; r++) {
        lmx_engine_step_row *w = &rows[r];
        row_write(w->seq, w->ids, w->n);
        if (!w->logits) continue;
        fake_logits(p->m, w->seq->ids, w->seq->pos, w->logits);
        if (!w->sample) continue;
        /* "device sampling": decided exactly only for plain greedy; else the host samples */
        const lmx_sampling *sp = &w->sample->sampling;
        bool plain = sp->temperature == 0 && (sp->repetition_penalty == 0 || sp->repetition_penalty == 1) &&
                     sp->frequency_penalty == 0 && sp->presence_penalty == 0;
        *w->token = -1;
        if (plain) {
            int32_t best = 0;
            for (int i = 1; i < FAKE_VOCAB; i++)
                if (w->logits[i] > w->logits[best]) best = i;
            *w->token = best;
            atomic_fetch_add(&c->device_sampled, 1);
        }
    }
    return LMX_OK;
}

static lmx_status f_detok_create(lmx_engine_model *m, lmx_engine_detok **out) {
    *out = calloc(1, sizeof **out);
    return *out ? LMX_OK : lmx_error(LMX_ERR_OUT_OF_MEMORY, "fake detok");
}

static void f_detok_destroy(lmx_engine_detok *d) { free(d); }

static size_t utf8_need(unsigned char c) {
    return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

static lmx_status f_detok_push(lmx_engine_detok *d, int32_t id, const char **text, size_t *len) {
    *text = d->out;
    *len = 0;
    if (id < 0 || id > 255) return LMX_OK;
    d->pending[d->n++] = (char)id;
    if (d->n < utf8_need((unsigned char)d->pending[0]) && d->n < sizeof d->pending) return LMX_OK;
    memcpy(d->out, d->pending, d->n);
    *len = d->n;
    d->n = 0;
    return LMX_OK;
}

static lmx_status f_detok_flush(lmx_engine_detok *d, const char **text, size_t *len) {
    memcpy(d->out, d->pending, d->n);
    *text = d->out;
    *len = d->n;
    d->n = 0;
    return LMX_OK;
}

static int64_t f_device_bytes(void *ctx) { return atomic_load(&((fake_engine_ctx *)ctx)->device_bytes); }

void fake_engine_init(lmx_engine *e, fake_engine_ctx *c) {
    memset(c, 0, sizeof *c);
    memset(e, 0, sizeof *e);
    e->ctx = c;
    e->probe = f_probe;
    e->open = f_open;
    e->close = f_close;
    e->tokenize = f_tokenize;
    e->chat_render = f_chat;
    e->kv_create = f_kv_create;
    e->kv_destroy = f_kv_destroy;
    e->kv_reset = f_kv_reset;
    e->kv_truncate = f_kv_truncate;
    e->kv_bytes = f_kv_bytes;
    e->forward = f_forward;
    e->detok_create = f_detok_create;
    e->detok_destroy = f_detok_destroy;
    e->detok_push = f_detok_push;
    e->detok_flush = f_detok_flush;
    e->device_bytes = f_device_bytes;
}

void fake_engine_enable_batching(lmx_engine *e) {
    e->pool_create = f_pool_create;
    e->pool_destroy = f_pool_destroy;
    e->pool_stats = f_pool_stats;
    e->seq_create = f_seq_create;
    e->seq_destroy = f_seq_destroy;
    e->seq_pos = f_seq_pos;
    e->seq_fork = f_seq_fork;
    e->seq_truncate = f_seq_truncate;
    e->step = f_step;
}

int fake_model_write(const char *dir, const char *json) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s", dir);
    for (char *s = cmd + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(cmd, 0755);
            *s = '/';
        }
    if (mkdir(cmd, 0755) != 0 && errno != EEXIST) return -1;
    /* a model directory has a config.json (lmx add requires one); kept when the test wrote its own */
    char *c = lmx_fs_join(dir, "config.json");
    if (c && !lmx_fs_is_file(c)) {
        FILE *cf = fopen(c, "w");
        if (cf) {
            fputs("{}", cf);
            fclose(cf);
        }
    }
    free(c);
    char *p = lmx_fs_join(dir, "fake.json");
    FILE *f = p ? fopen(p, "w") : NULL;
    free(p);
    if (!f) return -1;
    fputs(json, f);
    return fclose(f) == 0 ? 0 : -1;
}

char *fake_tmpdir(const char *tag) {
    const char *base = getenv("TMPDIR");
    char tmpl[1024];
    snprintf(tmpl, sizeof tmpl, "%s/lmx-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void fake_rmtree(const char *dir) {
    if (dir) nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}
