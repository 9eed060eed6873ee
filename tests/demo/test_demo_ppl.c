/* test_demo_ppl.c — the demo model end to end: its held-out perplexity computed by lmx (tokenizer,
 * 4-bit weights, the forward pass, every position's logits) against the figure PyTorch measured for
 * the bf16 original when it was trained (models/demo/train.py → train_log.json "heldout").
 *
 *   test_demo_ppl MODEL_DIR [MAX_REL_EXCESS]
 *
 * The held-out text (heldout.txt beside the weights) is encoded as train.py does (with BOS), cut into
 * windows of `seq` tokens with no overlap, and each window's next-token NLL is summed — the same
 * protocol as train.py's held_loss. The quantized model may lose a little: its mean NLL must lie
 * within MAX_REL_EXCESS (default 0.05, i.e. 5 %) above the bf16 figure and never below it by more than
 * rounding, which random weights or a broken kernel cannot meet. */
#include "lmx_test.h"
#include "model/lm.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_text(const char *dir, const char *name, size_t *len) {
    char *p = lmx_fs_join(dir, name), *buf = NULL;
    if (p && lmx_fs_read_file(p, (size_t)64 << 20, &buf, len) != LMX_OK) buf = NULL;
    free(p);
    return buf;
}

static double log_softmax_at(const float *logits, int V, int target) {
    float mx = logits[0];
    for (int i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double z = 0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - mx);
    return (double)logits[target] - mx - log(z);
}

static const char *g_dir;
static double g_max_excess = 0.05;

static void test_heldout_perplexity(void) {
    const char *dir = g_dir;
    const double max_excess = g_max_excess;
    size_t log_len = 0, text_len = 0;
    char *log_json = read_text(dir, "train_log.json", &log_len), *text = read_text(dir, "heldout.txt", &text_len);
    CHECK_MSG(log_json && text, "%s: train_log.json / heldout.txt: %s", dir, lmx_last_error_detail());
    if (!log_json || !text) {
        free(log_json);
        free(text);
        return;
    }
    cJSON *log = lmx_json_parse(log_json, log_len, NULL);
    const cJSON *held = cJSON_GetObjectItemCaseSensitive(log, "heldout");
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(log, "settings");
    const double ref_nll = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(held, "nll"));
    const int seq = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(settings, "seq"));
    CHECK_MSG(isfinite(ref_nll) && ref_nll > 0 && seq > 0, "%s/train_log.json: no heldout.nll / settings.seq", dir);

    lmx_tokenizer *tok = NULL;
    lmx_lm *lm = NULL;
    lmx_kv *kv = NULL;
    lmx_lm_options opt = {.device = LMX_DEVICE_CPU};
    lmx_status st = lmx_tokenizer_load(dir, &tok);
    if (st == LMX_OK) st = lmx_lm_open(dir, &opt, &lm);
    if (st == LMX_OK) st = lmx_kv_create(lm, seq + 1, &kv);
    CHECK_MSG(st == LMX_OK, "%s: %s", dir, lmx_last_error_detail());
    int32_t *ids = NULL;
    size_t n = 0;
    if (st == LMX_OK) st = lmx_tokenizer_encode(tok, text, text_len, true, &ids, &n);
    CHECK_MSG(st == LMX_OK && n > 1000, "%s: held-out text: %zu tokens (%s)", dir, n, lmx_last_error_detail());
    const int V = st == LMX_OK ? lmx_lm_vocab_size(lm) : 1;
    float *logits = malloc(sizeof(float) * (size_t)V);
    double nll = 0;
    size_t count = 0;
    for (size_t s = 0; st == LMX_OK && logits && s + 1 < n; s += (size_t)seq) {
        size_t end = s + (size_t)seq < n - 1 ? s + (size_t)seq : n - 1; /* targets s+1 .. end */
        lmx_kv_reset(kv);
        for (size_t i = s; i < end && st == LMX_OK; i++) {
            st = lmx_lm_forward(lm, kv, &ids[i], 1, logits);
            if (st == LMX_OK) nll -= log_softmax_at(logits, V, ids[i + 1]);
            count++;
        }
    }
    CHECK_MSG(st == LMX_OK, "%s: forward: %s", dir, lmx_last_error_detail());
    if (st == LMX_OK && count) {
        nll /= (double)count;
        fprintf(stderr, "  %s: %zu held-out tokens, lmx nll %.5f (perplexity %.3f); bf16 original in PyTorch %.5f "
                        "(%.3f): %+.2f %%\n", dir, count, nll, exp(nll), ref_nll, exp(ref_nll),
                100.0 * (nll / ref_nll - 1));
        CHECK_MSG(nll <= ref_nll * (1 + max_excess), "nll %.5f exceeds the bf16 figure %.5f by more than %.0f %%", nll,
                  ref_nll, 100 * max_excess);
        CHECK_MSG(nll >= ref_nll * (1 - 2e-3), "nll %.5f is below the bf16 figure %.5f: not the same protocol", nll,
                  ref_nll);
    }
    free(logits);
    free(ids);
    lmx_kv_destroy(kv);
    lmx_lm_close(lm);
    lmx_tokenizer_destroy(tok);
    cJSON_Delete(log);
    free(log_json);
    free(text);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_demo_ppl MODEL_DIR [MAX_REL_EXCESS]\n");
        return 2;
    }
    g_dir = argv[1];
    if (argc > 2) g_max_excess = atof(argv[2]);
    RUN(test_heldout_perplexity);
    return lmx_test_summary();
}
