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
    int64_t weight_bytes;
};

struct lmx_engine_kv {
    fake_engine_ctx *ctx;
    int cap, pos;
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
    atomic_fetch_add(&m->ctx->live_kv, 1);
    *out = kv;
    return LMX_OK;
}

static void f_kv_destroy(lmx_engine_kv *kv) {
    if (!kv) return;
    atomic_fetch_sub(&kv->ctx->live_kv, 1);
    free(kv);
}

static void f_kv_reset(lmx_engine_kv *kv) { kv->pos = 0; }

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

static lmx_status f_forward(lmx_engine_model *m, lmx_engine_kv *kv, const int32_t *ids, size_t n, float *logits) {
    atomic_fetch_add(&m->ctx->forward_calls, 1);
    if (n == 0 || kv->pos + (int)n > kv->cap)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "fake forward: %zu tokens at position %d, capacity %d", n, kv->pos,
                         kv->cap);
    sleep_us(atomic_load(&m->ctx->forward_delay_us));
    kv->pos += (int)n;
    atomic_fetch_add(&m->ctx->tokens_processed, (int)n);
    int32_t tgt = target_of(m, ids[n - 1]);
    for (int i = 0; i < FAKE_VOCAB; i++) logits[i] = 0.0f;
    if (m->second >= 0) logits[m->second] = m->second_logit;
    logits[tgt] = m->peak;
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
    e->forward = f_forward;
    e->detok_create = f_detok_create;
    e->detok_destroy = f_detok_destroy;
    e->detok_push = f_detok_push;
    e->detok_flush = f_detok_flush;
    e->device_bytes = f_device_bytes;
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
