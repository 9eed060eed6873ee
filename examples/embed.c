/* embed.c — a program written against lmx.h alone (no internal headers) that uses every public
 * function: it registers a model directory, loads it, generates (whole text, streamed, chat, from
 * token ids), tokenizes, reads info and metrics, and unloads. The install test builds it with
 *   cc embed.c $(pkg-config --cflags --libs lmx)
 * and runs it on a tiny model; it exits 0 only when every step behaved as documented.
 *
 * usage: embed MODEL_DIR   (a directory with config.json, *.safetensors, tokenizer.json)
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <lmx.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "embed.c:%d: failed: %s (last error: %s)\n", __LINE__, #cond,          \
                    lmx_last_error_detail());                                                      \
        }                                                                                          \
    } while (0)

/* Streams generated text to stdout; stops the generation after `limit` pieces when limit > 0. */
typedef struct sink {
    int pieces, limit;
    size_t bytes;
} sink;

static int on_text(const char *text, size_t len, void *user) {
    sink *s = user;
    fwrite(text, 1, len, stdout);
    s->pieces++;
    s->bytes += len;
    return s->limit > 0 && s->pieces >= s->limit; /* nonzero = stop */
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: embed MODEL_DIR\n");
        return 2;
    }
    const char *model_dir = argv[1];
    printf("lmx %s\n", lmx_version());
    lmx_log_set_level(LMX_LOG_ERROR);
    EXPECT(strcmp(lmx_status_str(LMX_ERR_OUT_OF_MEMORY), "") != 0);

    /* a private models directory with a registry */
    char home[] = "/tmp/lmx-embed-XXXXXX";
    if (!mkdtemp(home)) return 1;
    char models[256];
    snprintf(models, sizeof models, "%s/models", home);
    EXPECT(lmx_registry_add(models, model_dir, "demo/tiny") == LMX_OK);
    lmx_registry_entry *entries = NULL;
    int n_entries = 0;
    EXPECT(lmx_registry_list(models, &entries, &n_entries) == LMX_OK && n_entries == 1);
    if (n_entries == 1) printf("registered %s (%d files)\n", entries[0].id, entries[0].n_files);
    lmx_registry_entries_free(entries, n_entries);
    char *report = NULL;
    EXPECT(lmx_registry_verify(models, "demo/tiny", &report) == LMX_OK);
    lmx_free(report);
    char *resolved = NULL;
    EXPECT(lmx_registry_resolve(models, "demo/tiny", &resolved) == LMX_OK);
    lmx_free(resolved);

    /* the runtime */
    lmx_config cfg = lmx_config_default();
    cfg.models_dir = models;
    cfg.device = LMX_DEVICE_CPU;
    cfg.max_context_length = 512;
    lmx_runtime *rt = NULL;
    EXPECT(lmx_runtime_create(&cfg, &rt) == LMX_OK);
    if (!rt) return 1;
    lmx_config got;
    EXPECT(lmx_config_get(rt, &got) == LMX_OK && got.max_context_length == 512);
    got.max_cached_models = 2;
    EXPECT(lmx_config_update(rt, &got) == LMX_OK);
    EXPECT(lmx_runtime_create(&(lmx_config){.max_cached_models = 0}, &(lmx_runtime *){NULL}) ==
           LMX_ERR_INVALID_ARGUMENT);

    EXPECT(lmx_model_load(rt, "demo/tiny", "tiny") == LMX_OK);
    EXPECT(lmx_model_is_loaded(rt, "tiny"));
    lmx_model_info info;
    EXPECT(lmx_model_get_info(rt, "tiny", &info) == LMX_OK);
    printf("%s: %s, %d layers, vocab %d, %lld parameters\n", info.model_id, info.model_type, info.n_layers,
           info.vocab_size, (long long)info.n_params);

    lmx_gen_options opt = lmx_gen_options_default();
    opt.max_tokens = 16;
    opt.seed = 42;
    opt.use_seed = true;
    lmx_gen_result res;
    char *text = NULL;
    EXPECT(lmx_generate(rt, "tiny", "Once upon a time", &opt, &text, &res) == LMX_OK);
    EXPECT(text != NULL && res.n_generated_tokens > 0);
    printf("generate: %s\n", text ? text : "");

    sink s = {0, 0, 0};
    printf("stream:   ");
    EXPECT(lmx_generate_stream(rt, "tiny", "Once upon a time", &opt, on_text, &s, &res) == LMX_OK);
    printf("\n");
    EXPECT(text && s.bytes == strlen(text)); /* same seed, same text */
    lmx_free(text);

    lmx_message chat[2] = {{"system", "You are brief."}, {"user", "Say hello."}};
    s = (sink){0, 3, 0};
    printf("chat:     ");
    EXPECT(lmx_chat_stream(rt, "tiny", chat, 2, &opt, on_text, &s, &res) == LMX_ERR_CANCELLED);
    printf("\n");
    EXPECT(res.finish_reason == LMX_FINISH_CANCELLED && s.pieces == 3);

    int32_t *ids = NULL, *out = NULL;
    size_t n_ids = 0, n_out = 0;
    EXPECT(lmx_tokenize(rt, "tiny", "Hello world", true, &ids, &n_ids) == LMX_OK && n_ids > 0);
    opt.sampling.temperature = 0;
    EXPECT(lmx_generate_ids(rt, "tiny", ids, n_ids, &opt, NULL, NULL, &out, &n_out, &res) == LMX_OK);
    char *decoded = NULL;
    EXPECT(lmx_detokenize(rt, "tiny", out, n_out, &decoded) == LMX_OK);
    printf("ids:      %zu prompt ids -> %zu ids: %s\n", n_ids, n_out, decoded ? decoded : "");
    lmx_free(decoded);
    lmx_free(ids);
    lmx_free(out);

    lmx_metrics m;
    EXPECT(lmx_metrics_get(rt, NULL, &m) == LMX_OK);
    printf("metrics:  %llu inferences, %.1f tokens/s, hit rate %.2f, memory %lld bytes\n",
           (unsigned long long)m.n_inferences, m.avg_tokens_per_second, m.cache_hit_rate,
           (long long)m.current_memory_bytes);
    EXPECT(m.n_inferences == 4 && m.cache_misses == 1);
    lmx_metrics_reset(rt, NULL);
    EXPECT(lmx_metrics_get(rt, "tiny", &m) == LMX_OK && m.n_inferences == 0);

    EXPECT(lmx_model_unload(rt, "tiny") == LMX_OK);
    EXPECT(!lmx_model_is_loaded(rt, "tiny"));
    EXPECT(lmx_model_unload(rt, "tiny") == LMX_ERR_MODEL_NOT_FOUND);
    lmx_runtime_destroy(rt);

    EXPECT(lmx_registry_remove(models, "demo/tiny", false) == LMX_OK);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", home);
    printf("%s\n", failures ? "FAILED" : "all lmx.h functions behaved");
    return failures ? 1 : 0;
}
