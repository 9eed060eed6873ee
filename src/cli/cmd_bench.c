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

/* Selected config.json values of the model (shape), added to `model`. */
static void add_shape(cJSON *model, const char *dir, char *dtype, size_t dtype_cap) {
    char *path = lmx_fs_join(dir, "config.json"), *txt = NULL;
    size_t len = 0;
    if (path && lmx_fs_read_file(path, 64u << 20 /* config.c's limit */, &txt, &len) == LMX_OK) {
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
}

static double ms_to_s(double ms) { return ms / 1e3; }

int lmx_cli_bench(int argc, char **argv) {
    const char *model = NULL, *device = "auto";
    long P = 512, G = 128, reps = 3, threads = 0, seed = 1, tp = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long *dst = !strcmp(a, "--prompt") ? &P : !strcmp(a, "--gen") ? &G : !strcmp(a, "--reps") ? &reps
                  : !strcmp(a, "--threads") ? &threads : !strcmp(a, "--seed") ? &seed
                  : !strcmp(a, "--tensor-parallel") ? &tp : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--device")) {
            if (++i >= argc) goto bad;
            device = argv[i];
        } else if (dst) {
            if (++i >= argc || !lmx_cli_parse_int(argv[i], dst)) goto bad;
        } else if (a[0] == '-' || model) {
            fprintf(stderr, "lmx bench: unexpected argument '%s'\n", a);
            goto bad;
        } else {
            model = a;
        }
    }
    lmx_device dev;
    if (!strcmp(device, "auto")) dev = LMX_DEVICE_AUTO;
    else if (!strcmp(device, "cpu")) dev = LMX_DEVICE_CPU;
    else if (!strcmp(device, "gpu")) dev = LMX_DEVICE_GPU;
    else {
        fprintf(stderr, "lmx bench: --device must be auto, cpu or gpu (got '%s')\n", device);
        goto bad;
    }
    if (!model || P < 1 || P > 1000000 || G < 2 || G > 1000000 || reps < 1 || reps > 64 || threads < 0 ||
        threads > 4096 || seed < 0 || tp < 0 || tp > 64) {
        fprintf(stderr, "lmx bench: need MODEL, 1 <= --prompt <= 1000000, 2 <= --gen <= 1000000, 1 <= --reps <= 64, "
                        "0 <= --threads <= 4096, 0 <= --tensor-parallel <= 64, --seed >= 0\n");
        goto bad;
    }

    int rc = 1;
    lmx_status st;
    lmx_runtime *rt = NULL;
    int32_t *ids = NULL;
    cJSON *root = NULL;
    char *cmd = command_line(argc, argv);
    mem_sampler ms = {.peak = -1};
    rep warm = {0}, r[64];
    memset(r, 0, sizeof r);

    lmx_config cfg = lmx_config_default();
    cfg.device = dev;
    cfg.n_threads = (int)threads;
    cfg.tensor_parallel = (int)tp;
    cfg.max_context_length = (int)(P + G + 1);
    cfg.max_cached_models = 1;
    cfg.prompt_cache_bytes = 0; /* every rep prefills its whole prompt (the cache would serve the warm-up's) */
    if ((st = lmx_runtime_create(&cfg, &rt)) != LMX_OK) {
        rc = lmx_cli_fail(st);
        goto out;
    }
    bool gpu_possible = dev != LMX_DEVICE_CPU && lmx_gpu_available();
    long long dev_base = gpu_possible ? device_used() : -1;
    if (gpu_possible && dev_base >= 0) {
        atomic_store(&ms.peak, dev_base);
        ms.running = pthread_create(&ms.th, NULL, sampler_main, &ms) == 0;
    }

    double t0 = now_s();
    st = lmx_model_load(rt, model, "bench");
    double load_s = now_s() - t0;
    if (st != LMX_OK) {
        rc = lmx_cli_fail(st);
        goto out;
    }
    lmx_model_info info;
    if ((st = lmx_model_get_info(rt, "bench", &info)) != LMX_OK) {
        rc = lmx_cli_fail(st);
        goto out;
    }
    if (info.vocab_size <= 0) {
        fprintf(stderr, "lmx bench: model reports vocab size %d\n", info.vocab_size);
        goto out;
    }
    ids = malloc((size_t)P * sizeof *ids); /* [P] */
    if (!ids) {
        fprintf(stderr, "lmx bench: out of memory\n");
        goto out;
    }
    uint64_t s = (uint64_t)seed;
    for (long i = 0; i < P; i++) ids[i] = (int32_t)(splitmix64(&s) % (uint64_t)info.vocab_size);

    LMX_LOG_I("bench: warm-up run (%ld prompt + %ld generated tokens)", P, G);
    if ((st = run_once(rt, "bench", ids, (int)P, (int)G, &warm)) != LMX_OK) {
        rc = lmx_cli_fail(st);
        goto out;
    }
    double pf[64], dc[64], tt[64], pft[64], dct[64];
    for (long k = 0; k < reps; k++) {
        if ((st = run_once(rt, "bench", ids, (int)P, (int)G, &r[k])) != LMX_OK) {
            rc = lmx_cli_fail(st);
            goto out;
        }
        pf[k] = r[k].prefill_ms;
        dc[k] = r[k].decode_ms;
        tt[k] = r[k].ttft_ms;
        pft[k] = r[k].prefill_tps;
        dct[k] = r[k].decode_tps;
    }
    if (ms.running) {
        atomic_store(&ms.stop, true);
        pthread_join(ms.th, NULL);
        ms.running = false;
    }
    long long dev_peak = atomic_load(&ms.peak), rss_peak = peak_rss();

    /* hardware */
    char cpu[256], gpu[256] = "", dtype[32] = "unknown";
    cpu_model(cpu, sizeof cpu);
    lmx_gpu_info di;
    bool have_gpu = info.device == LMX_DEVICE_GPU && lmx_gpu_info_get(&di) == LMX_OK;
    if (have_gpu) snprintf(gpu, sizeof gpu, "%s", di.name);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const char *commit = getenv("LMX_COMMIT");
    if (!commit || !*commit) commit = "unknown";
    char date[32];
    time_t tnow = time(NULL);
    struct tm tmv;
    gmtime_r(&tnow, &tmv);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tmv);

    double pf_med = median(pf, (int)reps), dc_med = median(dc, (int)reps);
    double pft_med = median(pft, (int)reps), dct_med = median(dct, (int)reps), tt_med = median(tt, (int)reps);
    double gbps = (double)info.active_weight_bytes * dct_med / 1e9;
    double l2ft = load_s + ms_to_s(warm.ttft_ms);

    root = cJSON_CreateObject();
    cJSON *hw = cJSON_CreateObject(), *mo = cJSON_CreateObject(), *pa = cJSON_CreateObject(),
          *re = cJSON_CreateObject(), *ra = cJSON_CreateArray();
    if (!root || !hw || !mo || !pa || !re || !ra) {
        cJSON_Delete(hw), cJSON_Delete(mo), cJSON_Delete(pa), cJSON_Delete(re), cJSON_Delete(ra);
        fprintf(stderr, "lmx bench: out of memory\n");
        goto out;
    }
    add_shape(mo, info.path, dtype, sizeof dtype); /* dtype from config.json's torch_dtype */
    if (info.quant_bits > 0) snprintf(dtype, sizeof dtype, "q%d", info.quant_bits);
    cJSON_AddStringToObject(root, "schema", "lmx-bench/1");
    cJSON_AddStringToObject(root, "command", cmd ? cmd : "");
    cJSON_AddStringToObject(root, "lmx_version", lmx_version());
    cJSON_AddStringToObject(root, "commit", commit);
    cJSON_AddStringToObject(root, "date", date);
    cJSON_AddStringToObject(hw, "device", device_str(info.device));
    if (have_gpu) {
        cJSON_AddStringToObject(hw, "gpu_name", gpu);
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", di.cc_major, di.cc_minor);
        cJSON_AddStringToObject(hw, "gpu_compute_capability", cc);
        cJSON_AddNumberToObject(hw, "gpu_sm_count", di.sm_count);
        cJSON_AddNumberToObject(hw, "gpu_memory_bytes", (double)di.total_mem);
    } else {
        cJSON_AddNullToObject(hw, "gpu_name");
    }
    cJSON_AddStringToObject(hw, "cpu_model", cpu);
    cJSON_AddNumberToObject(hw, "cpu_cores", (double)cores);
    cJSON_AddNumberToObject(hw, "threads", (double)(threads ? threads : cores));
    cJSON_AddItemToObject(root, "hardware", hw);

    cJSON_AddStringToObject(mo, "path", info.path);
    cJSON_AddStringToObject(mo, "model_type", info.model_type);
    cJSON_AddStringToObject(mo, "dtype", dtype);
    cJSON_AddNumberToObject(mo, "quant_bits", info.quant_bits);
    cJSON_AddNumberToObject(mo, "group_size", info.group_size);
    cJSON_AddNumberToObject(mo, "n_params", (double)info.n_params);
    cJSON_AddNumberToObject(mo, "n_active_params", (double)info.n_active_params);
    cJSON_AddNumberToObject(mo, "n_layers", info.n_layers);
    cJSON_AddNumberToObject(mo, "hidden_size", info.hidden_size);
    cJSON_AddNumberToObject(mo, "vocab_size", info.vocab_size);
    cJSON_AddNumberToObject(mo, "weight_bytes", (double)info.weight_bytes);
    cJSON_AddNumberToObject(mo, "active_weight_bytes", (double)info.active_weight_bytes);
    cJSON_AddItemToObject(root, "model", mo);

    cJSON_AddNumberToObject(pa, "prompt_tokens", (double)P);
    cJSON_AddNumberToObject(pa, "gen_tokens", (double)G);
    cJSON_AddNumberToObject(pa, "reps", (double)reps);
    cJSON_AddNumberToObject(pa, "warmup_reps", 1);
    cJSON_AddNumberToObject(pa, "seed", (double)seed);
    cJSON_AddNumberToObject(pa, "batch", 1);
    cJSON_AddNumberToObject(pa, "tensor_parallel", (double)tp);
    cJSON_AddNumberToObject(pa, "max_context", (double)cfg.max_context_length);
    cJSON_AddStringToObject(pa, "sampling", "greedy, ignore_eos");
    cJSON_AddItemToObject(root, "params", pa);

    cJSON_AddNumberToObject(re, "load_s", load_s);
    cJSON_AddNumberToObject(re, "load_to_first_token_s", l2ft);
    cJSON_AddNumberToObject(re, "prefill_tok_s", pft_med);
    cJSON_AddNumberToObject(re, "decode_tok_s", dct_med);
    cJSON_AddNumberToObject(re, "prefill_ms", pf_med);
    cJSON_AddNumberToObject(re, "decode_ms", dc_med);
    cJSON_AddNumberToObject(re, "ttft_ms", tt_med);
    cJSON_AddNumberToObject(re, "effective_decode_gb_s", gbps);
    cJSON_AddNumberToObject(re, "bytes_per_decode_token", (double)info.active_weight_bytes);
    if (dev_peak >= 0 && have_gpu) {
        cJSON_AddNumberToObject(re, "peak_device_bytes", (double)dev_peak);
        cJSON_AddNumberToObject(re, "device_bytes_before_load", (double)dev_base);
    } else {
        cJSON_AddNullToObject(re, "peak_device_bytes");
        cJSON_AddNullToObject(re, "device_bytes_before_load");
    }
    if (rss_peak >= 0) cJSON_AddNumberToObject(re, "peak_rss_bytes", (double)rss_peak);
    else cJSON_AddNullToObject(re, "peak_rss_bytes");
    cJSON_AddItemToObject(root, "results", re);

    for (long k = -1; k < reps; k++) {
        const rep *x = k < 0 ? &warm : &r[k];
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
    cJSON_AddItemToObject(root, "runs", ra);

    if (json) {
        char *txt = cJSON_Print(root);
        if (!txt) {
            fprintf(stderr, "lmx bench: out of memory\n");
            goto out;
        }
        printf("%s\n", txt);
        free(txt);
    } else {
        printf("lmx bench  %s  (lmx %s, commit %s, %s)\n", info.path, lmx_version(), commit, date);
        printf("model      %s, %d layers, hidden %d, vocab %d, %.2fB params, %s", info.model_type, info.n_layers,
               info.hidden_size, info.vocab_size, (double)info.n_params / 1e9, dtype);
        if (info.quant_bits > 0) printf(" g%d", info.group_size);
        printf(", %.2f GB weights\n", (double)info.weight_bytes / 1e9);
        if (info.n_active_params != info.n_params)
            printf("active     %.2fB params, %.2f GB of weights a token (mixture of experts)\n",
                   (double)info.n_active_params / 1e9, (double)info.active_weight_bytes / 1e9);
        printf("hardware   %s%s%s, %ld threads\n", have_gpu ? gpu : "", have_gpu ? " / " : "", cpu,
               threads ? threads : cores);
        printf("run        device %s", device_str(info.device));
        if (tp > 0) printf(" x %ld ranks (tensor parallel)", tp);
        printf(", prompt %ld, gen %ld, batch 1, greedy, %ld reps (+1 warm-up), medians\n\n", P, G, reps);
        printf("  %-28s %14s\n", "metric", "value");
        printf("  %-28s %14.3f\n", "load (s)", load_s);
        printf("  %-28s %14.3f\n", "load to first token (s)", l2ft);
        printf("  %-28s %14.1f\n", "prefill (tok/s)", pft_med);
        printf("  %-28s %14.1f\n", "decode (tok/s)", dct_med);
        printf("  %-28s %14.1f\n", "time to first token (ms)", tt_med);
        printf("  %-28s %14.1f\n", "effective decode (GB/s)", gbps);
        if (dev_peak >= 0 && have_gpu) printf("  %-28s %14.2f\n", "peak device memory (GB)", (double)dev_peak / 1e9);
        if (rss_peak >= 0) printf("  %-28s %14.2f\n", "peak RSS (GB)", (double)rss_peak / 1e9);
    }
    rc = 0;
out:
    if (ms.running) {
        atomic_store(&ms.stop, true);
        pthread_join(ms.th, NULL);
    }
    cJSON_Delete(root);
    free(ids);
    free(cmd);
    lmx_runtime_destroy(rt);
    return rc;
bad:
    usage(stderr);
    return 2;
}
