/* cmd_convert.c — `lmx convert SRC DST [--bits B] [--group-size G] [--mode affine|mxfp4|mxfp8|nvfp4]
 * [--recipe mixed_2_6|mixed_3_4|mixed_3_6|mixed_4_6] [--dtype bf16|f16|f32] [--force] [--threads N]
 * [--shard-size BYTES]`: a bf16/f16/f32 Hugging Face model directory → an MLX-quantized one
 * (src/convert/convert.h). A progress bar goes to stderr when it is a terminal. */
#include "cli.h"
#include "convert/convert.h"
#include "util/clock.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: lmx convert SRC DST [--bits 2|3|4|5|6|8] [--group-size 32|64|128]\n"
            "                   [--mode affine|mxfp4|mxfp8|nvfp4] [--recipe mixed_2_6|mixed_3_4|mixed_3_6|mixed_4_6]\n"
            "                   [--dtype bf16|f16|f32] [--force] [--threads N] [--shard-size BYTES]\n"
            "Quantizes the bf16/f16/f32 model directory SRC into DST in the MLX layout mlx_lm.convert writes\n"
            "(default affine, 4 bits, group size 64; mxfp4 and nvfp4 are 4-bit with groups of 32 / 16, mxfp8\n"
            "8-bit with groups of 32). A recipe (affine only) gives v_proj/down_proj of some layers and lm_head\n"
            "the high bit width, as mlx-lm's --quant-predicate. DST must not exist unless --force; it is\n"
            "written as DST.partial and renamed when complete.\n");
}

typedef struct bar {
    uint64_t t0;
    int last_pct;
} bar;

static void progress(void *ctx, uint64_t done, uint64_t total) {
    bar *b = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == b->last_pct) return;
    b->last_pct = pct;
    double el = (double)(lmx_now_ns() - b->t0) / 1e9;
    int w = pct * 30 / 100;
    fprintf(stderr, "\r[%.*s%*s] %3d%%  %.1f / %.1f MiB  %.1fs", w, "==============================", 30 - w, "",
            pct, (double)done / 1048576.0, (double)total / 1048576.0, el);
    fflush(stderr);
}

int lmx_cli_convert(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    lmx_convert_options o;
    lmx_convert_options_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--force")) {
            o.force = true;
            continue;
        } else if (a[0] == '-' && a[1]) {
            if (!v) {
                fprintf(stderr, "lmx convert: %s needs a value\n", a);
                usage(stderr);
                return 2;
            }
            i++;
            bool ok = true;
            if (!strcmp(a, "--bits")) ok = lmx_cli_parse_int(v, &n) && n > 0 && n < 64, o.bits = (int)n;
            else if (!strcmp(a, "--group-size")) ok = lmx_cli_parse_int(v, &n) && n > 0 && n < 1024, o.group_size = (int)n;
            else if (!strcmp(a, "--threads")) ok = lmx_cli_parse_int(v, &n) && n >= 0 && n <= 64, o.threads = (int)n;
            else if (!strcmp(a, "--shard-size")) ok = lmx_cli_parse_int(v, &n) && n > 0, o.max_shard_bytes = (uint64_t)n;
            else if (!strcmp(a, "--mode")) o.mode = v;
            else if (!strcmp(a, "--recipe")) o.recipe = v;
            else if (!strcmp(a, "--dtype")) {
                o.dtype_set = true;
                if (!strcmp(v, "bf16") || !strcmp(v, "bfloat16")) o.dtype = LMX_DTYPE_BF16;
                else if (!strcmp(v, "f16") || !strcmp(v, "float16")) o.dtype = LMX_DTYPE_F16;
                else if (!strcmp(v, "f32") || !strcmp(v, "float32")) o.dtype = LMX_DTYPE_F32;
                else ok = false;
            } else {
                fprintf(stderr, "lmx convert: unknown option %s\n", a);
                usage(stderr);
                return 2;
            }
            if (!ok) {
                fprintf(stderr, "lmx convert: bad value for %s: %s\n", a, v);
                return 2;
            }
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            fprintf(stderr, "lmx convert: unexpected argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (npos != 2) {
        usage(stderr);
        return 2;
    }
    bar b = {lmx_now_ns(), -1};
    bool tty = isatty(STDERR_FILENO);
    if (tty) {
        o.progress = progress;
        o.progress_ctx = &b;
    }
    lmx_status st = lmx_convert_model(pos[0], pos[1], &o);
    if (tty && b.last_pct >= 0) fputc('\n', stderr);
    if (st != LMX_OK) return lmx_cli_fail(st);
    printf("converted %s -> %s (%s%s%s)\n", pos[0], pos[1], o.mode ? o.mode : "affine", o.recipe ? ", recipe " : "",
           o.recipe ? o.recipe : "");
    return 0;
}
