/* generate.c — the prefill/decode loop (see generate.h). */
#include "generate/generate.h"
#include "generate/sampler.h"
#include "generate/stop.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

lmx_status lmx_gen_options_validate(const lmx_gen_options *opt) {
    if (!opt) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "generation options: NULL");
    lmx_status st = lmx_sampling_validate(&opt->sampling);
    if (st != LMX_OK) return st;
    if (opt->max_tokens < -1)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "max_tokens %d: must be >= -1", opt->max_tokens);
    if (opt->n_stop < 0 || (opt->n_stop > 0 && !opt->stop))
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "stop: n_stop %d with list %p", opt->n_stop,
                         (const void *)opt->stop);
    for (int i = 0; i < opt->n_stop; i++)
        if (!opt->stop[i]) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "stop string %d is NULL", i);
    if (opt->top_logprobs < 0 || opt->top_logprobs > LMX_MAX_TOP_LOGPROBS)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "top_logprobs %d: must be in [0, %d]", opt->top_logprobs,
                         LMX_MAX_TOP_LOGPROBS);
    if (opt->logits_fn)
        return lmx_error(LMX_ERR_UNSUPPORTED, "logits_fn: the per-sequence logits hook is not implemented yet");
    return LMX_OK;
}

/* The forward pass of one step and, where the engine can (forward_sample: GPU sampling), the choice
 * of the next token on its device. The uniform of the draw is taken from the sampler's generator
 * before the forward, exactly when the host sampler would take one (temperature > 0), so the
 * sequence of uniforms, hence the tokens for a seed, is the same on both paths. */
typedef struct gen_fwd {
    const lmx_generate_request *req;
    lmx_engine_kv *kv;
    lmx_sampler *sampler;
    const lmx_sampling *sp;
    float *logits;      /* [vocab_size] */
    bool dev;           /* use forward_sample */
    int32_t next;       /* the token the device chose, -1 = sample `logits` on the host */
    double u;           /* the uniform drawn for that host sample */
    long n_dev, n_host; /* tokens chosen on the device / on the host after forward_sample */
} gen_fwd;

static lmx_status gen_forward(gen_fwd *g, const int32_t *ids, size_t n, const int32_t *hist, size_t n_hist) {
    const lmx_engine *e = g->req->engine;
    g->next = -1;
    if (!g->dev) return e->forward(g->req->model, g->kv, ids, n, g->logits);
    g->u = g->sp->temperature > 0 ? lmx_sampler_uniform(g->sampler) : 0.0;
    lmx_engine_sample s = {.sampling = *g->sp,
                           .history = hist,
                           .n_history = n_hist,
                           .u = g->u};
    int32_t tok = -1;
    lmx_status st = e->forward_sample(g->req->model, g->kv, ids, n, &s, g->logits, &tok);
    if (st == LMX_OK) g->next = tok;
    return st;
}

/* The token after gen_forward: the device's choice, or the host sampler over the logits. */
static lmx_status gen_next(gen_fwd *g, const int32_t *hist, size_t n_hist, int32_t *tok) {
    if (g->dev && g->next >= 0) {
        g->n_dev++;
        *tok = g->next;
        return LMX_OK;
    }
    if (!g->dev) return lmx_sampler_sample(g->sampler, g->sp, g->logits, hist, n_hist, tok);
    g->n_host++;
    return lmx_sampler_sample_u(g->sampler, g->sp, g->logits, hist, n_hist, g->u, tok);
}

static double ms_between(uint64_t a, uint64_t b) { return b > a ? (double)(b - a) / 1e6 : 0.0; }

static bool is_eos(const lmx_model_facts *facts, int32_t tok) {
    for (int i = 0; i < facts->n_eos; i++)
        if (facts->eos_ids[i] == tok) return true;
    return false;
}

/* Sends a piece to the callback; true when the caller asked to stop. */
static bool emit(const lmx_generate_request *req, const char *text, size_t len) {
    if (len == 0 || !req->fn) return false;
    return req->fn(text, len, req->user) != 0;
}

/* The request's checks; a failure leaves the handed-in KV cache to the caller. */
static lmx_status check_request(const lmx_generate_request *req) {
    const int vocab = req->facts->info.vocab_size;
    lmx_status st = lmx_gen_options_validate(req->opt);
    if (st != LMX_OK) return st;
    if (req->n_prompt == 0) return lmx_error(LMX_ERR_INVALID_ARGUMENT, "the prompt is empty (0 tokens)");
    if (req->max_context <= 0)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT, "max_context %d: must be >= 1", req->max_context);
    if (req->n_prompt > (size_t)req->max_context)
        return lmx_error(LMX_ERR_INVALID_ARGUMENT,
                         "the prompt has %zu tokens, more than the context length %d", req->n_prompt,
                         req->max_context);
    if (vocab <= 0)
        return lmx_error(LMX_ERR_INFERENCE_FAILURE, "model reports vocab size %d", vocab);
    for (size_t i = 0; i < req->n_prompt; i++)
        if (req->prompt[i] < 0 || req->prompt[i] >= vocab)
            return lmx_error(LMX_ERR_INVALID_ARGUMENT, "prompt token %zu is %d, outside the vocabulary [0, %d)", i,
                             req->prompt[i], vocab);
    return LMX_OK;
}

/* The local token source: one kv, forward (or forward_sample) per step on the calling thread. The
 * forward of the previous token runs at the start of next(), so the consumer's loop is the same for
 * this source and the batcher's. */
typedef struct local_src {
    lmx_gen_source base;
    gen_fwd g;
    const int32_t *hist; /* the consumer's history [max_context + 1] */
    size_t n_fwd;        /* positions whose K/V are in kv; 0 after a failed forward */
    size_t n_cached;
    bool started;
    lmx_token_logprob top[LMX_MAX_TOP_LOGPROBS];
} local_src;

static lmx_status local_next(lmx_gen_source *base, size_t n_pos, int32_t *tok, lmx_token_info *info) {
    local_src *ls = (local_src *)base;
    gen_fwd *g = &ls->g;
    const lmx_generate_request *req = g->req;
    lmx_status st;
    if (!ls->started) {
        ls->started = true;
        base->t_prefill0 = lmx_now_ns();
        size_t n = req->n_prompt - ls->n_cached;
        if ((st = gen_forward(g, req->prompt + ls->n_cached, n, ls->hist, n_pos)) != LMX_OK)
            return lmx_error_prefix(st, "prefill of %zu tokens", n);
        ls->n_fwd = req->n_prompt;
        base->t_prefill = lmx_now_ns();
    } else {
        if (req->no_kv_cache) { /* reference mode: the whole sequence again from position 0 */
            req->engine->kv_reset(g->kv);
            st = gen_forward(g, ls->hist, n_pos, ls->hist, n_pos);
        } else {
            st = gen_forward(g, ls->hist + n_pos - 1, 1, ls->hist, n_pos);
        }
        if (st != LMX_OK) {
            ls->n_fwd = 0;
            return lmx_error_prefix(st, "decode step at position %zu", n_pos - 1);
        }
        ls->n_fwd = n_pos;
    }
    if ((st = gen_next(g, ls->hist, n_pos, tok)) != LMX_OK) return st;
    if (info && *tok >= 0 && *tok < req->facts->info.vocab_size) {
        info->id = *tok;
        info->n_top = req->opt->top_logprobs;
        info->top = ls->top;
        st = lmx_sampler_logprobs(g->sampler, g->logits, *tok, info->n_top, &info->logprob, ls->top);
    }
    return st;
}

#define TOKEN_TEXT_CAP 256 /* bytes of one token's text in logprobs (longer ones are cut) */

/* The bytes of id after the token prev, by the scratch detokenizer d (push prev and drop its text,
 * push id, flush: d is empty again) into dst [TOKEN_TEXT_CAP]. Decoding after prev keeps what a
 * token is in context (a tokenizer's decoder drops the leading space of a text's first token). */
static lmx_status token_text(const lmx_engine *e, lmx_engine_detok *d, int32_t prev, int32_t id, char *dst,
                             size_t *len) {
    const char *t;
    size_t n, w = 0;
    lmx_status st = prev >= 0 ? e->detok_push(d, prev, &t, &n) : LMX_OK;
    if (st == LMX_OK) st = e->detok_push(d, id, &t, &n);
    for (int pass = 0; st == LMX_OK && pass < 2; pass++) {
        size_t k = n < TOKEN_TEXT_CAP - w ? n : TOKEN_TEXT_CAP - w;
        memcpy(dst + w, t, k);
        w += k;
        if (pass == 0) st = e->detok_flush(d, &t, &n);
    }
    *len = w;
    return st;
}

/* Fills the texts of info (the token and its alternatives after prev, copied into top [n_top]) in buf
 * [(1 + LMX_MAX_TOP_LOGPROBS) * TOKEN_TEXT_CAP]. */
static lmx_status info_texts(const lmx_engine *e, lmx_engine_detok *d, int32_t prev, lmx_token_info *info,
                             lmx_token_logprob *top, char *buf) {
    lmx_status st = token_text(e, d, prev, info->id, buf, &info->len);
    info->text = buf;
    for (int i = 0; st == LMX_OK && i < info->n_top; i++) {
        top[i] = info->top[i];
        char *dst = buf + (size_t)(i + 1) * TOKEN_TEXT_CAP;
        st = token_text(e, d, prev, top[i].id, dst, &top[i].len);
        top[i].text = dst;
    }
    info->top = top;
    return st;
}

lmx_status lmx_generate_consume(const lmx_generate_request *req, lmx_gen_source *src, int32_t *hist,
                                lmx_gen_result *res) {
    uint64_t t0 = req->t_start_ns ? req->t_start_ns : lmx_now_ns();
    const lmx_engine *e = req->engine;
    const lmx_model_facts *facts = req->facts;
    const lmx_gen_options *opt = req->opt;
    const int vocab = facts->info.vocab_size;
    lmx_engine_detok *detok = NULL, *tdetok = NULL; /* tdetok: the logprobs' token texts */
    char *tbuf = NULL;                               /* [(1 + LMX_MAX_TOP_LOGPROBS) * TOKEN_TEXT_CAP] */
    lmx_token_logprob tops[LMX_MAX_TOP_LOGPROBS];
    lmx_stop *stop = NULL;
    bool cancelled = false, matched = false;
    res->finish_reason = LMX_FINISH_LENGTH;
    lmx_status st;
    if ((st = e->detok_create(req->model, &detok)) != LMX_OK) goto done;
    if (opt->logprob_fn) {
        if ((st = e->detok_create(req->model, &tdetok)) != LMX_OK) goto done;
        if (!(tbuf = malloc((1 + LMX_MAX_TOP_LOGPROBS) * TOKEN_TEXT_CAP))) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "generate: cannot allocate the logprobs' texts");
            goto done;
        }
    }
    if ((st = lmx_stop_create(opt->stop, opt->n_stop, &stop)) != LMX_OK) goto done;
    memcpy(hist, req->prompt, req->n_prompt * sizeof *hist);
    size_t n_pos = req->n_prompt;
    long limit = opt->max_tokens < 0 ? LONG_MAX : opt->max_tokens;
    uint64_t t_first = 0;
    long gen = 0;
    const char *piece, *out;
    size_t piece_len, out_len;
    lmx_token_info info;
    if (limit == 0) { /* max_tokens 0: the prompt is still prefilled (and can be cached); nothing sampled is kept */
        int32_t tok;
        if ((st = src->next(src, n_pos, &tok, NULL)) != LMX_OK) goto done;
        res->prefill_ms = ms_between(src->t_prefill0, src->t_prefill);
        res->cached_tokens = (int)src->n_cached;
    }
    while (gen < limit) {
        int32_t tok;
        if ((st = src->next(src, n_pos, &tok, opt->logprob_fn ? &info : NULL)) != LMX_OK) goto done;
        if (!t_first) {
            t_first = lmx_now_ns();
            res->cached_tokens = (int)src->n_cached;
            res->prefill_ms = ms_between(src->t_prefill0, src->t_prefill);
            res->prompt_tokens_per_second = (double)(req->n_prompt - (size_t)res->cached_tokens) /
                                            (res->prefill_ms > 0 ? res->prefill_ms / 1e3 : 1e-9);
        }
        if (!opt->ignore_eos && is_eos(facts, tok)) {
            res->finish_reason = LMX_FINISH_STOP;
            break;
        }
        if (tok < 0 || tok >= vocab) {
            st = lmx_error(LMX_ERR_INFERENCE_FAILURE, "sampled id %d outside the vocabulary", tok);
            goto done;
        }
        hist[n_pos++] = tok;
        gen++;
        if (opt->logprob_fn) {
            if ((st = info_texts(e, tdetok, hist[n_pos - 2], &info, tops, tbuf)) != LMX_OK) goto done;
            if (opt->logprob_fn(&info, opt->logprob_user) != 0) {
                cancelled = true;
                break;
            }
        }
        if ((st = e->detok_push(detok, tok, &piece, &piece_len)) != LMX_OK) goto done;
        if ((st = lmx_stop_push(stop, piece, piece_len, &out, &out_len, &matched)) != LMX_OK) goto done;
        if (emit(req, out, out_len)) {
            cancelled = true;
            break;
        }
        if (matched) {
            res->finish_reason = LMX_FINISH_STOP;
            break;
        }
        if (gen >= limit || n_pos > (size_t)req->max_context) {
            res->finish_reason = LMX_FINISH_LENGTH;
            break;
        }
    }
    if (!cancelled && !matched) { /* release what the detokenizer and the matcher still hold */
        if ((st = e->detok_flush(detok, &piece, &piece_len)) != LMX_OK) goto done;
        if ((st = lmx_stop_push(stop, piece, piece_len, &out, &out_len, &matched)) != LMX_OK) goto done;
        cancelled = emit(req, out, out_len);
        if (matched) res->finish_reason = LMX_FINISH_STOP;
        if (!cancelled && !matched) {
            lmx_stop_flush(stop, &out, &out_len);
            cancelled = emit(req, out, out_len);
        }
    }
    uint64_t t_end = lmx_now_ns();
    res->n_generated_tokens = (int)gen;
    res->ttft_ms = ms_between(t0, t_first ? t_first : t_end);
    res->total_ms = ms_between(t0, t_end);
    res->decode_ms = t_first ? ms_between(t_first, t_end) : 0.0;
    if (gen >= 2 && t_end > t_first)
        res->tokens_per_second = (double)(gen - 1) / (ms_between(t_first, t_end) / 1e3);
    else if (gen > 0)
        res->tokens_per_second = (double)gen / (res->total_ms > 0 ? res->total_ms / 1e3 : 1e-9);
    if (cancelled) {
        res->finish_reason = LMX_FINISH_CANCELLED;
        st = lmx_error(LMX_ERR_CANCELLED, "the token callback asked to stop after %ld tokens", gen);
    }
    if (req->out_ids) { /* the generated ids, once, at the end */
        size_t n = n_pos - req->n_prompt;
        *req->out_ids = malloc((n ? n : 1) * sizeof **req->out_ids);
        if (!*req->out_ids) {
            st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "generate: cannot allocate %zu output ids", n);
            goto done;
        }
        memcpy(*req->out_ids, hist + req->n_prompt, n * sizeof *hist);
        if (req->n_out) *req->n_out = n;
    }
done:
    if (st != LMX_OK && st != LMX_ERR_CANCELLED) res->total_ms = ms_between(t0, lmx_now_ns());
    lmx_stop_destroy(stop);
    if (detok) e->detok_destroy(detok);
    if (tdetok) e->detok_destroy(tdetok);
    free(tbuf);
    return st;
}

lmx_status lmx_generate_check(const lmx_generate_request *req) { return check_request(req); }

lmx_status lmx_generate_run(const lmx_generate_request *req, lmx_gen_result *res) {
    memset(res, 0, sizeof *res);
    if (req->out_ids) *req->out_ids = NULL;
    if (req->n_out) *req->n_out = 0;
    const lmx_engine *e = req->engine;
    const int vocab = req->facts->info.vocab_size;
    res->n_prompt_tokens = (int)req->n_prompt;
    lmx_status st = check_request(req);
    if (st != LMX_OK) {
        if (req->kv) e->kv_destroy(req->kv); /* owned by this call */
        return st;
    }
    const lmx_gen_options *opt = req->opt;
    lmx_engine_kv *kv = req->kv; /* owned from here on */
    size_t n_cached = kv && !req->no_kv_cache && req->n_cached < req->n_prompt ? req->n_cached : 0;
    if (kv && n_cached == 0) e->kv_reset(kv);
    lmx_sampler *sampler = NULL;
    float *logits = NULL;   /* [vocab_size] */
    int32_t *hist = NULL;   /* [max_context + 1]: prompt, then generated tokens */
    local_src ls = {.base = {.next = local_next, .n_cached = n_cached}, .n_cached = n_cached};
    if (!kv && (st = e->kv_create(req->model, req->max_context, &kv)) != LMX_OK) goto done;
    if ((st = lmx_sampler_create(vocab, &sampler)) != LMX_OK) goto done;
    logits = malloc((size_t)vocab * sizeof *logits);
    hist = malloc(((size_t)req->max_context + 1) * sizeof *hist);
    if (!logits || !hist) {
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "generate: cannot allocate logits/history");
        goto done;
    }
    if (opt->use_seed) lmx_sampler_seed(sampler, opt->seed);
    else lmx_sampler_seed_entropy(sampler);
    lmx_sampler_set_prompt_len(sampler, req->n_prompt);
    ls.g = (gen_fwd){.req = req, .kv = kv, .sampler = sampler, .sp = &opt->sampling, .logits = logits, .next = -1,
                     .dev = e->forward_sample != NULL && !opt->logprob_fn};
    ls.hist = hist;
    res->cached_tokens = (int)n_cached;
    st = lmx_generate_consume(req, &ls.base, hist, res);
    if (ls.g.n_host > 0)
        LMX_LOG_D("generate: %ld of %ld tokens sampled on the host (the device could not decide)", ls.g.n_host,
                  ls.g.n_host + ls.g.n_dev);
done:
    free(logits);
    lmx_sampler_destroy(sampler);
    if (kv && req->kv_keep && !req->no_kv_cache && ls.n_fwd > 0 && (st == LMX_OK || st == LMX_ERR_CANCELLED))
        req->kv_keep(req->keep_user, kv, hist, ls.n_fwd, req->n_prompt);
    else if (kv)
        e->kv_destroy(kv);
    free(hist);
    return st;
}
