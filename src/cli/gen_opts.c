/* gen_opts.c — the sampling and runtime options shared by `lmx generate` and `lmx run`. */
#include "gen_opts.h"

#include "cli.h"

#include <stdio.h>
#include <string.h>

const char lmx_cli_gen_help[] =
    "sampling (mlx-lm order: repetition penalty, temperature, top-k, top-p, min-p):\n"
    "  --temp T                  temperature, 0 = greedy (default 0.7)\n"
    "  --top-p P                 nucleus mass, 0 or 1 = off (default 0.9)\n"
    "  --top-k K                 keep the K most likely tokens, 0 = off (default 0)\n"
    "  --min-p P                 drop tokens below P x the top probability, 0 = off (default 0)\n"
    "  --max-tokens N            generate at most N tokens, -1 = until EOS/context end (default 512)\n"
    "  --repetition-penalty R    1 = off (default 1)\n"
    "  --repetition-context N    tokens the penalty looks back (default 20)\n"
    "  --seed S                  fixed seed: the same output on every run\n"
    "  --stop TEXT               stop string (repeatable); not included in the output\n"
    "runtime:\n"
    "  --threads N               CPU threads, 0 = all cores (default 0)\n"
    "  --device auto|cpu|gpu     where to run (default auto: the GPU when usable, else the CPU)\n"
    "  --tensor-parallel N       split the model over N ranks: GPUs 0..N-1 (NCCL), or N CPU backends\n"
    "  --ctx N                   context length (prompt + generated tokens; default 4096)\n"
    "  --no-mmap                 read weight files into memory instead of mapping them\n";

void lmx_cli_gen_init(lmx_cli_gen *g) {
    memset(g, 0, sizeof *g);
    g->opt = lmx_gen_options_default();
    g->opt.stop = g->stop;
    g->cfg = lmx_config_default();
}

int lmx_cli_gen_option(const char *cmd, const char *name, const char *val, lmx_cli_gen *g) {
    static const char *const takes_value[] = {"--temp", "--top-p", "--top-k", "--min-p", "--max-tokens",
                                              "--repetition-penalty", "--repetition-context", "--seed", "--stop",
                                              "--threads", "--device", "--ctx", "--tensor-parallel"};
    if (!strcmp(name, "--no-mmap")) {
        g->cfg.use_mmap = false;
        return 1; /* a switch: no value */
    }
    bool known = false;
    for (size_t i = 0; i < sizeof takes_value / sizeof takes_value[0]; i++)
        if (!strcmp(name, takes_value[i])) known = true;
    if (!known) return 0;
    if (!val) {
        fprintf(stderr, "lmx %s: option %s needs a value\n", cmd, name);
        return -1;
    }
    double d = 0;
    long l = 0;
    bool ok = true;
    if (!strcmp(name, "--temp")) {
        ok = lmx_cli_parse_float(val, &d) && d >= 0 && d <= 1e6;
        g->opt.sampling.temperature = (float)d;
    } else if (!strcmp(name, "--top-p")) {
        ok = lmx_cli_parse_float(val, &d) && d >= 0 && d <= 1;
        g->opt.sampling.top_p = (float)d;
    } else if (!strcmp(name, "--min-p")) {
        ok = lmx_cli_parse_float(val, &d) && d >= 0 && d <= 1;
        g->opt.sampling.min_p = (float)d;
    } else if (!strcmp(name, "--repetition-penalty")) {
        ok = lmx_cli_parse_float(val, &d) && d >= 0 && d <= 1e6;
        g->opt.sampling.repetition_penalty = (float)d;
    } else if (!strcmp(name, "--top-k")) {
        ok = lmx_cli_parse_int(val, &l) && l >= 0 && l <= 0x7fffffff;
        g->opt.sampling.top_k = (int)l;
    } else if (!strcmp(name, "--max-tokens")) {
        ok = lmx_cli_parse_int(val, &l) && l >= -1 && l <= 100000000;
        g->opt.max_tokens = (int)l;
    } else if (!strcmp(name, "--repetition-context")) {
        ok = lmx_cli_parse_int(val, &l) && l >= 0 && l <= 100000000;
        g->opt.sampling.repetition_context = (int)l;
    } else if (!strcmp(name, "--seed")) {
        ok = lmx_cli_parse_int(val, &l) && l >= 0;
        g->opt.seed = (uint64_t)l;
        g->opt.use_seed = true;
    } else if (!strcmp(name, "--stop")) {
        if (g->opt.n_stop >= LMX_CLI_MAX_STOP) {
            fprintf(stderr, "lmx %s: at most %d --stop strings\n", cmd, LMX_CLI_MAX_STOP);
            return -1;
        }
        ok = *val != '\0';
        g->stop[g->opt.n_stop++] = val;
    } else if (!strcmp(name, "--threads")) {
        ok = lmx_cli_parse_int(val, &l) && l >= 0 && l <= 1024;
        g->cfg.n_threads = (int)l;
    } else if (!strcmp(name, "--tensor-parallel")) {
        ok = lmx_cli_parse_int(val, &l) && l >= 1 && l <= 64;
        g->cfg.tensor_parallel = (int)l;
    } else if (!strcmp(name, "--ctx")) {
        ok = lmx_cli_parse_int(val, &l) && l >= 1 && l <= 0x7fffffff;
        g->cfg.max_context_length = (int)l;
        g->ctx_given = true;
    } else if (!strcmp(name, "--device")) {
        if (!strcmp(val, "cpu")) g->cfg.device = LMX_DEVICE_CPU;
        else if (!strcmp(val, "gpu") || !strcmp(val, "cuda")) g->cfg.device = LMX_DEVICE_GPU;
        else if (!strcmp(val, "auto")) g->cfg.device = LMX_DEVICE_AUTO;
        else ok = false;
    }
    if (!ok) {
        fprintf(stderr, "lmx %s: bad value '%s' for %s\n", cmd, val, name);
        return -1;
    }
    return 2;
}
