/* cmd_bench.c — `lmx bench MODEL [--device auto|cpu|gpu] [--prompt 512] [--gen 128] [--reps 3]
 * [--threads N] [--tensor-parallel N] [--seed 1] [--json]`: load time, prefill and decode speed (batch 1), peak memory and
 * effective decode bandwidth of one model, measured through the public API (include/lmx.h).
 *
 * Method (docs/BENCHMARKS.md has the full description and the JSON schema "lmx-bench/1"):
 *   - load_s: lmx_model_load wall time, from nothing loaded to the model ready on its device.
 *   - the prompt is exactly --prompt token ids drawn uniformly from [0, vocab) by splitmix64(--seed):
 *     deterministic, no tokenizer involved.
 *   - one warm-up generation, then --reps timed generations; each is lmx_generate_ids with greedy
 *     sampling, max_tokens = --gen and ignore_eos (EOS never cuts a run short; a run producing
 *     fewer than --gen tokens is an error).
 *   - prefill tok/s = prompt / prefill_ms (the prompt's forward pass alone); decode tok/s =
 *     (gen - 1) / decode_ms (first token sampled → last token done), batch 1. Medians are reported.
 *   - load_to_first_token_s = load_s + the warm-up run's time to first token.
 *   - effective decode GB/s = active weight bytes × decode tok/s / 1e9 (all weights as loaded,
 *     embedding table included, KV-cache reads excluded: the convention of issue 5's bandwidth bound;
 *     a mixture-of-experts model's expert tensors counted at top-k / n_experts: the bytes one token
 *     reads, lmx_model_info.active_weight_bytes; = weight_bytes for a dense model).
 *   - peak memory: GPU — the highest NVML device-memory use sampled every 5 ms by a background
 *     thread from before the load to the end (whole device, CUDA context included; the baseline
 *     before the load is reported too); always — the process's peak RSS (VmHWM).
 *   - commit: $LMX_COMMIT, else "unknown".
 * Results go to stdout (a table, or one JSON object with --json); logs to stderr. */
#include "internal.h"

#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: lmx bench MODEL [options]\n"
            "  --device auto|cpu|gpu   where the model runs (default auto)\n"
            "  --prompt N              prompt length in tokens (default 512)\n"
            "  --gen N                 tokens generated per run, >= 2 (default 128; EOS ignored)\n"
            "  --reps N                timed runs after one warm-up run (default 3)\n"
            "  --threads N             CPU threads (default 0 = all cores)\n"
            "  --tensor-parallel N     split the model over N ranks (GPUs 0..N-1 over NCCL, or N CPU\n"
            "                          backends); peak device memory is then GPU 0's (default 0: one device)\n"
            "  --seed N                seed of the random prompt ids (default 1)\n"
            "  --json                  print one JSON object (schema lmx-bench/1, docs/BENCHMARKS.md)\n"
            "MODEL is a registered name or a model directory. LMX_COMMIT in the environment is\n"
            "recorded as the commit.\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of v[0..n) (sorts a copy). */
static double median(const double *v, int n) {
    double tmp[64];
    if (n <= 0) return NAN;
    if (n > 64) n = 64;
    memcpy(tmp, v, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

/* ---- peak device memory: a sampling thread over NVML ---- */

typedef struct mem_sampler {
    pthread_t th;
    atomic_bool stop;
    atomic_llong peak;   /* bytes, -1 = never sampled */
    bool running;
} mem_sampler;

static long long device_used(void) {
    lmx_gpu_usage u;
    return lmx_gpu_usage_get(&u) == LMX_OK ? (long long)u.mem_used : -1;
}

static void *sampler_main(void *arg) {
    mem_sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        long long v = device_used();
        long long p = atomic_load(&s->peak);
        while (v > p && !atomic_compare_exchange_weak(&s->peak, &p, v)) {
        }
        struct timespec d = {0, 5 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

/* Peak RSS of this process (VmHWM), -1 when unknown. */
static long long peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtoll(line + 6, NULL, 10);
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* "model name" of the first CPU in /proc/cpuinfo, or "unknown". */
static void cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        c[strcspn(c, "\n")] = '\0';
        snprintf(out, cap, "%s", c);
        break;
    }
    fclose(f);
}

/* "lmx bench a b 'c d'" — the exact command line (arguments with spaces or quotes single-quoted). */
static char *command_line(int argc, char **argv) {
    size_t cap = 16;
    for (int i = 0; i < argc; i++) cap += strlen(argv[i]) * 4 + 3;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t n = (size_t)snprintf(s, cap, "lmx");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool q = !*a || strpbrk(a, " \t\n'\"$\\`*?;&|<>()") != NULL;
        s[n++] = ' ';
        if (q) s[n++] = '\'';
        for (const char *p = a; *p; p++) {
            if (*p == '\'') {
                memcpy(s + n, "'\\''", 4);
                n += 4;
            } else {
                s[n++] = *p;
            }
        }
        if (q) s[n++] = '\'';
    }
    s[n] = '\0';
    return s;
}

static const char *device_str(lmx_device d) { return d == LMX_DEVICE_GPU ? "gpu" : d == LMX_DEVICE_CPU ? "cpu" : "auto"; }

typedef struct rep {
    double prefill_ms, decode_ms, ttft_ms, total_ms, prefill_tps, decode_tps;
    int n_prompt, n_gen;
} rep;

static lmx_status run_once(lmx_runtime *rt, const char *id, const int32_t *ids, int P, int G, rep *r) {
    lmx_gen_options o = lmx_gen_options_default();
    o.sampling.temperature = 0.0f;
    o.sampling.top_p = 1.0f;
    o.max_tokens = G;
    o.ignore_eos = true;
    o.use_seed = true;
    o.seed = 1;
    lmx_gen_result res;
    lmx_status st = lmx_generate_ids(rt, id, ids, (size_t)P, &o, NULL, NULL, NULL, NULL, &res);
    if (st != LMX_OK) return st;
    if (res.n_generated_tokens != G || res.n_prompt_tokens != P)
        return lmx_error(LMX_ERR_INFERENCE_FAILURE, "bench run: %d prompt / %d generated tokens, expected %d / %d",
                         res.n_prompt_tokens, res.n_generated_tokens, P, G);
    r->prefill_ms = res.prefill_ms;
    r->decode_ms = res.decode_ms;
    r->ttft_ms = res.ttft_ms;
    r->total_ms = res.total_ms;
    r->prefill_tps = res.prefill_ms > 0 ? P / (res.prefill_ms / 1e3) : 0;
    r->decode_tps = res.decode_ms > 0 ? (G - 1) / (res.decode_ms / 1e3) : 0;
    r->n_prompt = res.n_prompt_tokens;
    r->n_gen = res.n_generated_tokens;
    return LMX_OK;
}

/* A new object with selected config.json values of the model (its shape; empty when unreadable, NULL
 * when out of memory), and config.json's torch_dtype into dtype (unchanged when absent). */
static cJSON *config_shape(const char *dir, char *dtype, size_t dtype_cap) {
    cJSON *model = cJSON_CreateObject();
    char *path = lmx_fs_join(dir, "config.json"), *txt = NULL;
    size_t len = 0;
    if (model && path && lmx_fs_read_file(path, 64u << 20 /* config.c's limit */, &txt, &len) == LMX_OK) {
        cJSON *c = lmx_json_parse(txt, len, NULL);
        static const char *const keys[] = {"num_attention_heads", "num_key_value_heads", "head_dim",
                                           "intermediate_size", "max_position_embeddings", "tie_word_embeddings"};
        for (size_t i = 0; c && i < sizeof keys / sizeof keys[0]; i++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(c, keys[i]);
            if (cJSON_IsNumber(v)) cJSON_AddNumberToObject(model, keys[i], v->valuedouble);
            else if (cJSON_IsBool(v)) cJSON_AddBoolToObject(model, keys[i], cJSON_IsTrue(v));
        }
        cJSON *d = c ? cJSON_GetObjectItemCaseSensitive(c, "torch_dtype") : NULL;
        if (!cJSON_IsString(d) && c) d = cJSON_GetObjectItemCaseSensitive(c, "dtype");
        if (cJSON_IsString(d)) {
            const char *v = d->valuestring;
            snprintf(dtype, dtype_cap, "%s",
                     !strcmp(v, "bfloat16") ? "bf16" : !strcmp(v, "float16") ? "f16" : !strcmp(v, "float32") ? "f32" : v);
        }
        cJSON_Delete(c);
    }
    free(txt);
    free(path);
    return model;
}

/* the command line's choices */
typedef struct bench_args {
    const char *model;
    lmx_device dev;
    long P, G, reps, threads, seed, tp;
    bool json;
} bench_args;

/* Parses argv into *a; -1 to go on, else the exit code (0: --help, 2: usage error). */
static int parse_args(int argc, char **argv, bench_args *a) {
    const char *device = "auto";
    *a = (bench_args){.P = 512, .G = 128, .reps = 3, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        long *dst = !strcmp(s, "--prompt") ? &a->P : !strcmp(s, "--gen") ? &a->G : !strcmp(s, "--reps") ? &a->reps
                  : !strcmp(s, "--threads") ? &a->threads : !strcmp(s, "--seed") ? &a->seed
                  : !strcmp(s, "--tensor-parallel") ? &a->tp : NULL;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(s, "--json")) {
            a->json = true;
        } else if (!strcmp(s, "--device")) {
            if (++i >= argc) goto bad;
            device = argv[i];
        } else if (dst) {
            if (++i >= argc || !lmx_cli_parse_int(argv[i], dst)) goto bad;
        } else if (s[0] == '-' || a->model) {
            fprintf(stderr, "lmx bench: unexpected argument '%s'\n", s);
            goto bad;
        } else {
            a->model = s;
        }
    }
    if (!strcmp(device, "auto")) a->dev = LMX_DEVICE_AUTO;
    else if (!strcmp(device, "cpu")) a->dev = LMX_DEVICE_CPU;
    else if (!strcmp(device, "gpu")) a->dev = LMX_DEVICE_GPU;
    else {
        fprintf(stderr, "lmx bench: --device must be auto, cpu or gpu (got '%s')\n", device);
        goto bad;
    }
    if (!a->model || a->P < 1 || a->P > 1000000 || a->G < 2 || a->G > 1000000 || a->reps < 1 || a->reps > 64 ||
        a->threads < 0 || a->threads > 4096 || a->seed < 0 || a->tp < 0 || a->tp > 64) {
        fprintf(stderr, "lmx bench: need MODEL, 1 <= --prompt <= 1000000, 2 <= --gen <= 1000000, 1 <= --reps <= 64, "
                        "0 <= --threads <= 4096, 0 <= --tensor-parallel <= 64, --seed >= 0\n");
        goto bad;
    }
    return -1;
bad:
    usage(stderr);
    return 2;
}

/* what the runs measured */
typedef struct bench_result {
    lmx_model_info info;
    int max_context;
    double load_s;
    rep warm, r[64];                 /* the warm-up and the timed runs [reps] */
    long long dev_base, dev_peak, rss_peak; /* bytes, -1 = unknown */
    /* medians over the timed runs, and what follows from them */
    double pf, dc, tt, pft, dct, gbps, l2ft;
} bench_result;

static void take_medians(bench_result *b, int reps) {
    double pf[64], dc[64], tt[64], pft[64], dct[64];
    for (int k = 0; k < reps; k++) {
        pf[k] = b->r[k].prefill_ms;
        dc[k] = b->r[k].decode_ms;
        tt[k] = b->r[k].ttft_ms;
        pft[k] = b->r[k].prefill_tps;
        dct[k] = b->r[k].decode_tps;
    }
    b->pf = median(pf, reps), b->dc = median(dc, reps), b->tt = median(tt, reps);
    b->pft = median(pft, reps), b->dct = median(dct, reps);
    b->gbps = (double)b->info.active_weight_bytes * b->dct / 1e9;
    b->l2ft = b->load_s + b->warm.ttft_ms / 1e3;
}

/* Loads a->model into rt as "bench" and runs the warm-up and the timed runs over a random prompt. */
static lmx_status measure(lmx_runtime *rt, const bench_args *a, bench_result *b) {
    mem_sampler ms = {.peak = -1};
    bool gpu_possible = a->dev != LMX_DEVICE_CPU && lmx_gpu_available();
    b->dev_base = gpu_possible ? device_used() : -1;
    if (gpu_possible && b->dev_base >= 0) {
        atomic_store(&ms.peak, b->dev_base);
        ms.running = pthread_create(&ms.th, NULL, sampler_main, &ms) == 0;
    }
    int32_t *ids = NULL;
    double t0 = now_s();
    lmx_status st = lmx_model_load(rt, a->model, "bench");
    b->load_s = now_s() - t0;
    if (st == LMX_OK) st = lmx_model_get_info(rt, "bench", &b->info);
    if (st == LMX_OK && b->info.vocab_size <= 0)
        st = lmx_error(LMX_ERR_INVALID_MODEL_FORMAT, "lmx bench: model reports vocab size %d", b->info.vocab_size);
    if (st == LMX_OK && !(ids = malloc((size_t)a->P * sizeof *ids))) /* [P] */
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "lmx bench: out of memory");
    if (st == LMX_OK) {
        uint64_t s = (uint64_t)a->seed;
        for (long i = 0; i < a->P; i++) ids[i] = (int32_t)(splitmix64(&s) % (uint64_t)b->info.vocab_size);
        LMX_LOG_I("bench: warm-up run (%ld prompt + %ld generated tokens)", a->P, a->G);
        st = run_once(rt, "bench", ids, (int)a->P, (int)a->G, &b->warm);
    }
    for (long k = 0; st == LMX_OK && k < a->reps; k++) st = run_once(rt, "bench", ids, (int)a->P, (int)a->G, &b->r[k]);
    if (ms.running) {
        atomic_store(&ms.stop, true);
        pthread_join(ms.th, NULL);
    }
    free(ids);
    b->dev_peak = atomic_load(&ms.peak);
    b->rss_peak = peak_rss();
    if (st == LMX_OK) take_medians(b, (int)a->reps);
    return st;
}

/* where and when it ran */
typedef struct bench_env {
    char cpu[256], gpu[256], date[32];
    const char *commit;
    lmx_gpu_info di;
    bool have_gpu;
    long cores;
} bench_env;

static void describe_env(const bench_result *b, bench_env *e) {
    memset(e, 0, sizeof *e);
    cpu_model(e->cpu, sizeof e->cpu);
    e->have_gpu = b->info.device == LMX_DEVICE_GPU && lmx_gpu_info_get(&e->di) == LMX_OK;
    if (e->have_gpu) snprintf(e->gpu, sizeof e->gpu, "%s", e->di.name);
    e->cores = sysconf(_SC_NPROCESSORS_ONLN);
    e->commit = getenv("LMX_COMMIT");
    if (!e->commit || !*e->commit) e->commit = "unknown";
    time_t tnow = time(NULL);
    struct tm tmv;
    gmtime_r(&tnow, &tmv);
    strftime(e->date, sizeof e->date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
}

static void json_hardware(cJSON *hw, const bench_args *a, const bench_result *b, const bench_env *e) {
    cJSON_AddStringToObject(hw, "device", device_str(b->info.device));
    if (e->have_gpu) {
        cJSON_AddStringToObject(hw, "gpu_name", e->gpu);
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", e->di.cc_major, e->di.cc_minor);
        cJSON_AddStringToObject(hw, "gpu_compute_capability", cc);
        cJSON_AddNumberToObject(hw, "gpu_sm_count", e->di.sm_count);
        cJSON_AddNumberToObject(hw, "gpu_memory_bytes", (double)e->di.total_mem);
    } else {
        cJSON_AddNullToObject(hw, "gpu_name");
    }
    cJSON_AddStringToObject(hw, "cpu_model", e->cpu);
    cJSON_AddNumberToObject(hw, "cpu_cores", (double)e->cores);
    cJSON_AddNumberToObject(hw, "threads", (double)(a->threads ? a->threads : e->cores));
}

static void json_model(cJSON *mo, const lmx_model_info *info, const char *dtype) {
    cJSON_AddStringToObject(mo, "path", info->path);
    cJSON_AddStringToObject(mo, "model_type", info->model_type);
    cJSON_AddStringToObject(mo, "dtype", dtype);
    cJSON_AddNumberToObject(mo, "quant_bits", info->quant_bits);
    cJSON_AddStringToObject(mo, "quantization", info->quantization);
    cJSON_AddNumberToObject(mo, "group_size", info->group_size);
    cJSON_AddNumberToObject(mo, "n_params", (double)info->n_params);
    cJSON_AddNumberToObject(mo, "n_active_params", (double)info->n_active_params);
    cJSON_AddNumberToObject(mo, "n_layers", info->n_layers);
    cJSON_AddNumberToObject(mo, "hidden_size", info->hidden_size);
    cJSON_AddNumberToObject(mo, "vocab_size", info->vocab_size);
    cJSON_AddNumberToObject(mo, "weight_bytes", (double)info->weight_bytes);
    cJSON_AddNumberToObject(mo, "active_weight_bytes", (double)info->active_weight_bytes);
}

static void json_params(cJSON *pa, const bench_args *a, int max_context) {
    cJSON_AddNumberToObject(pa, "prompt_tokens", (double)a->P);
    cJSON_AddNumberToObject(pa, "gen_tokens", (double)a->G);
    cJSON_AddNumberToObject(pa, "reps", (double)a->reps);
    cJSON_AddNumberToObject(pa, "warmup_reps", 1);
    cJSON_AddNumberToObject(pa, "seed", (double)a->seed);
    cJSON_AddNumberToObject(pa, "batch", 1);
    cJSON_AddNumberToObject(pa, "tensor_parallel", (double)a->tp);
    cJSON_AddNumberToObject(pa, "max_context", (double)max_context);
    cJSON_AddStringToObject(pa, "sampling", "greedy, ignore_eos");
}

static void json_results(cJSON *re, const bench_result *b, bool have_gpu) {
    cJSON_AddNumberToObject(re, "load_s", b->load_s);
    cJSON_AddNumberToObject(re, "load_to_first_token_s", b->l2ft);
    cJSON_AddNumberToObject(re, "prefill_tok_s", b->pft);
    cJSON_AddNumberToObject(re, "decode_tok_s", b->dct);
    cJSON_AddNumberToObject(re, "prefill_ms", b->pf);
    cJSON_AddNumberToObject(re, "decode_ms", b->dc);
    cJSON_AddNumberToObject(re, "ttft_ms", b->tt);
    cJSON_AddNumberToObject(re, "effective_decode_gb_s", b->gbps);
    cJSON_AddNumberToObject(re, "bytes_per_decode_token", (double)b->info.active_weight_bytes);
    if (b->dev_peak >= 0 && have_gpu) {
        cJSON_AddNumberToObject(re, "peak_device_bytes", (double)b->dev_peak);
        cJSON_AddNumberToObject(re, "device_bytes_before_load", (double)b->dev_base);
    } else {
        cJSON_AddNullToObject(re, "peak_device_bytes");
        cJSON_AddNullToObject(re, "device_bytes_before_load");
    }
    if (b->rss_peak >= 0) cJSON_AddNumberToObject(re, "peak_rss_bytes", (double)b->rss_peak);
    else cJSON_AddNullToObject(re, "peak_rss_bytes");
}

static void json_runs(cJSON *ra, const bench_result *b, long reps) {
    for (long k = -1; k < reps; k++) {
        const rep *x = k < 0 ? &b->warm : &b->r[k];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddBoolToObject(o, "warmup", k < 0);
        cJSON_AddNumberToObject(o, "n_prompt_tokens", x->n_prompt);
        cJSON_AddNumberToObject(o, "n_generated_tokens", x->n_gen);
        cJSON_AddNumberToObject(o, "prefill_ms", x->prefill_ms);
        cJSON_AddNumberToObject(o, "decode_ms", x->decode_ms);
        cJSON_AddNumberToObject(o, "ttft_ms", x->ttft_ms);
        cJSON_AddNumberToObject(o, "total_ms", x->total_ms);
        cJSON_AddNumberToObject(o, "prefill_tok_s", x->prefill_tps);
        cJSON_AddNumberToObject(o, "decode_tok_s", x->decode_tps);
        cJSON_AddItemToArray(ra, o);
    }
}

/* The lmx-bench/1 object (docs/BENCHMARKS.md), or NULL when out of memory. */
static cJSON *result_json(const bench_args *a, const bench_result *b, const bench_env *e, const char *cmd,
                          const char *dtype, cJSON *mo /* config_shape's, consumed */) {
    cJSON *root = cJSON_CreateObject(), *hw = cJSON_CreateObject(), *pa = cJSON_CreateObject(),
          *re = cJSON_CreateObject(), *ra = cJSON_CreateArray();
    if (!root || !hw || !mo || !pa || !re || !ra) {
        cJSON_Delete(root), cJSON_Delete(hw), cJSON_Delete(mo), cJSON_Delete(pa), cJSON_Delete(re), cJSON_Delete(ra);
        return NULL;
    }
    cJSON_AddStringToObject(root, "schema", "lmx-bench/1");
    cJSON_AddStringToObject(root, "command", cmd ? cmd : "");
    cJSON_AddStringToObject(root, "lmx_version", lmx_version());
    cJSON_AddStringToObject(root, "commit", e->commit);
    cJSON_AddStringToObject(root, "date", e->date);
    json_hardware(hw, a, b, e);
    cJSON_AddItemToObject(root, "hardware", hw);
    json_model(mo, &b->info, dtype);
    cJSON_AddItemToObject(root, "model", mo);
    json_params(pa, a, b->max_context);
    cJSON_AddItemToObject(root, "params", pa);
    json_results(re, b, e->have_gpu);
    cJSON_AddItemToObject(root, "results", re);
    json_runs(ra, b, a->reps);
    cJSON_AddItemToObject(root, "runs", ra);
    return root;
}

static void print_table(const bench_args *a, const bench_result *b, const bench_env *e, const char *dtype) {
    const lmx_model_info *info = &b->info;
    printf("lmx bench  %s  (lmx %s, commit %s, %s)\n", info->path, lmx_version(), e->commit, e->date);
    printf("model      %s, %d layers, hidden %d, vocab %d, %.2fB params, %s", info->model_type, info->n_layers,
           info->hidden_size, info->vocab_size, (double)info->n_params / 1e9,
           info->quant_bits > 0 ? info->quantization : dtype);
    printf(", %.2f GB weights\n", (double)info->weight_bytes / 1e9);
    if (info->n_active_params != info->n_params)
        printf("active     %.2fB params, %.2f GB of weights a token (mixture of experts)\n",
               (double)info->n_active_params / 1e9, (double)info->active_weight_bytes / 1e9);
    printf("hardware   %s%s%s, %ld threads\n", e->have_gpu ? e->gpu : "", e->have_gpu ? " / " : "", e->cpu,
           a->threads ? a->threads : e->cores);
    printf("run        device %s", device_str(info->device));
    if (a->tp > 0) printf(" x %ld ranks (tensor parallel)", a->tp);
    printf(", prompt %ld, gen %ld, batch 1, greedy, %ld reps (+1 warm-up), medians\n\n", a->P, a->G, a->reps);
    printf("  %-28s %14s\n", "metric", "value");
    printf("  %-28s %14.3f\n", "load (s)", b->load_s);
    printf("  %-28s %14.3f\n", "load to first token (s)", b->l2ft);
    printf("  %-28s %14.1f\n", "prefill (tok/s)", b->pft);
    printf("  %-28s %14.1f\n", "decode (tok/s)", b->dct);
    printf("  %-28s %14.1f\n", "time to first token (ms)", b->tt);
    printf("  %-28s %14.1f\n", "effective decode (GB/s)", b->gbps);
    if (b->dev_peak >= 0 && e->have_gpu) printf("  %-28s %14.2f\n", "peak device memory (GB)", (double)b->dev_peak / 1e9);
    if (b->rss_peak >= 0) printf("  %-28s %14.2f\n", "peak RSS (GB)", (double)b->rss_peak / 1e9);
}

int lmx_cli_bench(int argc, char **argv) {
    bench_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    lmx_config cfg = lmx_config_default();
    cfg.device = a.dev;
    cfg.n_threads = (int)a.threads;
    cfg.tensor_parallel = (int)a.tp;
    cfg.max_context_length = (int)(a.P + a.G + 1);
    cfg.max_cached_models = 1;
    cfg.prompt_cache_bytes = 0; /* every rep prefills its whole prompt (the cache would serve the warm-up's) */
    lmx_runtime *rt = NULL;
    lmx_status st = lmx_runtime_create(&cfg, &rt);
    if (st != LMX_OK) return lmx_cli_fail(st);
    bench_result *b = calloc(1, sizeof *b);
    if (!b) {
        lmx_runtime_destroy(rt);
        fprintf(stderr, "lmx bench: out of memory\n");
        return 1;
    }
    b->max_context = cfg.max_context_length;
    st = measure(rt, &a, b);
    lmx_runtime_destroy(rt);
    if (st != LMX_OK) {
        free(b);
        return lmx_cli_fail(st);
    }
    bench_env e;
    describe_env(b, &e);
    char dtype[32] = "unknown";
    cJSON *shape = config_shape(b->info.path, dtype, sizeof dtype);
    if (b->info.quant_bits > 0) /* the format holding the most parameters: the label's first word */
        snprintf(dtype, sizeof dtype, "%.*s", (int)strcspn(b->info.quantization, " "), b->info.quantization);
    rc = 1;
    if (a.json) {
        char *cmd = command_line(argc, argv);
        cJSON *root = result_json(&a, b, &e, cmd, dtype, shape);
        char *txt = root ? cJSON_Print(root) : NULL;
        if (txt) printf("%s\n", txt), rc = 0;
        else fprintf(stderr, "lmx bench: out of memory\n");
        free(txt);
        cJSON_Delete(root);
        free(cmd);
    } else {
        cJSON_Delete(shape);
        print_table(&a, b, &e, dtype);
        rc = 0;
    }
    free(b);
    return rc;
}
