/* cmd_serve.c — `lmx serve`: the OpenAI-compatible HTTP server (src/server/, docs/SERVER.md).
 * Parses the options, creates the runtime, starts the server and waits for SIGINT/SIGTERM; then
 * stops accepting, gives running streams --grace seconds to finish, cancels the rest and exits 0.
 * A second signal cancels at once. */
#include "cli.h"
#include "server/server.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: lmx serve [options]\n"
            "An OpenAI-compatible HTTP server: POST /v1/chat/completions, POST /v1/completions,\n"
            "GET /v1/models, GET /health, GET /metrics (see docs/SERVER.md). A request's \"model\" is a\n"
            "registered name or a model directory under --models-dir, loaded on first use.\n"
            "  --host ADDR           address to listen on (default 127.0.0.1: loopback only)\n"
            "  --port N              TCP port (default 8080; 0 = any free port, printed at start)\n"
            "  --models-dir DIR      models directory (default $LMX_HOME/models, ~/.cache/lmx/models)\n"
            "  --max-models N        models kept loaded at once; idle ones are evicted LRU (default 3)\n"
            "  --max-memory BYTES    memory budget of the loaded models, 0 = none (default 0)\n"
            "  --parallel N          generations running at once per model: the batch size of\n"
            "                        engines with batched steps (default 4)\n"
            "  --prompt-cache BYTES  KV bytes of finished prompts + replies kept for reuse, 0 = off\n"
            "                        (default -1: 25%% of --max-memory, 1 GiB without one)\n"
            "  --prefill-chunk N     prompt tokens per batched step and sequence (default 256)\n"
            "  --queue N             requests waiting per model beyond those; then 503 (default 64)\n"
            "  --timeout SECONDS     per request, queue wait included (default 600)\n"
            "  --grace SECONDS       on SIGINT/SIGTERM, time running streams get to finish (default 10)\n"
            "  --api-key KEY         require 'Authorization: Bearer KEY' (default: $LMX_API_KEY, else none)\n"
            "  --device auto|cpu|gpu where models run (default auto)\n"
            "  --threads N           CPU threads, 0 = all cores (default 0)\n"
            "  --tensor-parallel N   split each model over N ranks: GPUs 0..N-1 (NCCL) or N CPU backends;\n"
            "                        --max-memory then counts one device, batching is off (default 0)\n"
            "  --ctx N               context length per generation (default 4096)\n"
            "  --no-mmap             read weights instead of mapping them\n");
}

static volatile sig_atomic_t g_signals;

static void on_signal(int sig) {
    (void)sig;
    if (++g_signals > 1) atomic_store(&g_srv.hurry, 1);
}

static bool parse_num(const char *v, double lo, double hi, double *out) {
    return v && lmx_cli_parse_float(v, out) && *out >= lo && *out <= hi;
}

int lmx_cli_serve(int argc, char **argv) {
    srv_options o = {
        .host = "127.0.0.1",
        .port = 8080,
        .parallel = 4,
        .queue = 64,
        .timeout_s = 600,
        .grace_s = 10,
        .cfg = lmx_config_default(),
    };
    o.api_key = getenv("LMX_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d = 0;
        bool ok = true, takes = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-mmap")) {
            o.cfg.use_mmap = false;
            takes = false;
        } else if (!v) {
            ok = false;
        } else if (!strcmp(a, "--host")) {
            o.host = v;
        } else if (!strcmp(a, "--port")) {
            ok = parse_num(v, 0, 65535, &d), o.port = (int)d;
        } else if (!strcmp(a, "--models-dir")) {
            o.models_dir = v;
        } else if (!strcmp(a, "--max-models")) {
            ok = parse_num(v, 1, 1e6, &d), o.cfg.max_cached_models = (int)d;
        } else if (!strcmp(a, "--prompt-cache")) {
            ok = parse_num(v, -1, 9e18, &d), o.cfg.prompt_cache_bytes = (int64_t)d;
        } else if (!strcmp(a, "--prefill-chunk")) {
            ok = parse_num(v, 1, 65536, &d), o.cfg.prefill_chunk = (int)d;
        } else if (!strcmp(a, "--max-memory")) {
            ok = parse_num(v, 0, 9e18, &d), o.cfg.max_memory_bytes = (int64_t)d;
        } else if (!strcmp(a, "--parallel")) {
            ok = parse_num(v, 1, 256, &d), o.parallel = (int)d;
        } else if (!strcmp(a, "--queue")) {
            ok = parse_num(v, 0, 100000, &d), o.queue = (int)d;
        } else if (!strcmp(a, "--timeout")) {
            ok = parse_num(v, 0.001, 1e7, &d), o.timeout_s = d;
        } else if (!strcmp(a, "--grace")) {
            ok = parse_num(v, 0, 1e6, &d), o.grace_s = d;
        } else if (!strcmp(a, "--api-key")) {
            o.api_key = v;
        } else if (!strcmp(a, "--threads")) {
            ok = parse_num(v, 0, 1024, &d), o.cfg.n_threads = (int)d;
        } else if (!strcmp(a, "--ctx")) {
            ok = parse_num(v, 1, 2147483647.0, &d), o.cfg.max_context_length = (int)d;
        } else if (!strcmp(a, "--tensor-parallel")) {
            ok = parse_num(v, 1, 64, &d) && d == (int)d, o.cfg.tensor_parallel = (int)d;
        } else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "cpu")) o.cfg.device = LMX_DEVICE_CPU;
            else if (!strcmp(v, "gpu") || !strcmp(v, "cuda")) o.cfg.device = LMX_DEVICE_GPU;
            else if (!strcmp(v, "auto")) o.cfg.device = LMX_DEVICE_AUTO;
            else ok = false;
        } else {
            fprintf(stderr, "lmx serve: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "lmx serve: bad or missing value for %s\n", a);
            return 2;
        }
        if (takes) i++;
    }
    char *default_dir = NULL;
    if (!o.models_dir) {
        const char *home = getenv("LMX_HOME"), *h = getenv("HOME");
        size_t n = (home ? strlen(home) : (h ? strlen(h) : 0)) + 32;
        default_dir = malloc(n);
        if (!default_dir) return 1;
        if (home) snprintf(default_dir, n, "%s/models", home);
        else snprintf(default_dir, n, "%s/.cache/lmx/models", h ? h : ".");
        o.models_dir = default_dir;
    }
    o.cfg.models_dir = o.models_dir;
    o.cfg.max_batch = o.parallel; /* the workers of a model are the sequences of its batch */

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* the threads created from here on (runtime, workers, connections) inherit a mask without
     * SIGINT/SIGTERM, so the signals reach this thread alone */
    sigset_t stop_sigs, old_mask;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, &old_mask);

    lmx_runtime *rt = NULL;
    lmx_status st = lmx_runtime_create(&o.cfg, &rt);
    if (st != LMX_OK) {
        pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
        free(default_dir);
        return lmx_cli_fail(st);
    }
    srv_server *srv = NULL;
    int port = 0;
    if ((st = srv_server_start(&o, rt, &srv, &port)) != LMX_OK) {
        pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
        lmx_runtime_destroy(rt);
        free(default_dir);
        return 1;
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    printf("lmx serve: listening on http://%s:%d (models: %s, %d parallel + %d queued per model%s)\n", o.host, port,
           o.models_dir, o.parallel, o.queue, o.api_key && *o.api_key ? ", API key required" : "");
    fflush(stdout);
    if (strcmp(o.host, "127.0.0.1") && strcmp(o.host, "::1") && strcmp(o.host, "localhost") &&
        !(o.api_key && *o.api_key))
        fprintf(stderr, "lmx serve: warning: listening on %s without --api-key: anyone who can reach it may use it\n",
                o.host);
    while (!g_signals) usleep(50000);
    fprintf(stderr, "lmx serve: stopping (running streams get %g s; a second signal cancels them)\n", o.grace_s);
    srv_server_stop(srv, o.grace_s); /* a second signal while stopping: no grace (g_srv.hurry) */
    lmx_runtime_destroy(rt);
    free(default_dir);
    fprintf(stderr, "lmx serve: stopped\n");
    return 0;
}
