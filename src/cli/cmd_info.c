/* cmd_info.c — `lmx info MODEL [--json]`: loads MODEL (registered name or directory) through the
 * runtime and prints what lmx_model_get_info reports. */
#include "cli.h"

#include <stdio.h>

static const char *device_name(lmx_device d) {
    return d == LMX_DEVICE_GPU ? "gpu" : d == LMX_DEVICE_CPU ? "cpu" : "auto";
}

static void usage(FILE *f) {
    fprintf(f, "usage: lmx info MODEL [--json]\n");
}

int lmx_cli_info(int argc, char **argv) {
    const char *model = NULL;
    bool json = false;
    const lmx_cli_flag flags[] = {{"--json", &json, NULL}, {NULL, NULL, NULL}};
    int rc = lmx_cli_parse_flags(argc, argv, "info", flags, &model, false, usage);
    if (rc >= 0) return rc;
    lmx_runtime *rt = NULL;
    lmx_status st = lmx_runtime_create(NULL, &rt);
    if (st != LMX_OK) return lmx_cli_fail(st);
    lmx_model_info info;
    if ((st = lmx_model_load(rt, model, NULL)) != LMX_OK || (st = lmx_model_get_info(rt, model, &info)) != LMX_OK) {
        lmx_runtime_destroy(rt);
        return lmx_cli_fail(st);
    }
    lmx_metrics m;
    lmx_metrics_get(rt, model, &m);
    if (json) {
        printf("{\"model_id\":");
        lmx_cli_print_json_str(info.model_id);
        printf(",\"path\":");
        lmx_cli_print_json_str(info.path);
        printf(",\"model_type\":");
        lmx_cli_print_json_str(info.model_type);
        printf(",\"n_params\":%lld,\"n_active_params\":%lld,\"n_layers\":%d,\"hidden_size\":%d,\"vocab_size\":%d,"
               "\"quant_bits\":%d,\"group_size\":%d,\"quantization\":",
               (long long)info.n_params, (long long)info.n_active_params, info.n_layers, info.hidden_size,
               info.vocab_size, info.quant_bits, info.group_size);
        lmx_cli_print_json_str(info.quantization);
        printf(",\"weight_bytes\":%lld,\"active_weight_bytes\":%lld,\"estimated_bytes\":%lld,\"device\":\"%s\","
               "\"max_context\":%d,\"load_ms\":%.3f}\n",
               (long long)info.weight_bytes, (long long)info.active_weight_bytes, (long long)info.estimated_bytes,
               device_name(info.device), info.max_context, m.load_ms);
    } else {
        printf("model        %s\npath         %s\ntype         %s\nparameters   %lld", info.model_id, info.path,
               info.model_type, (long long)info.n_params);
        if (info.n_active_params != info.n_params) /* mixture of experts: what one token uses */
            printf(" (%lld active a token, %.1f MB of weights)", (long long)info.n_active_params,
                   (double)info.active_weight_bytes / 1e6);
        printf("\nlayers       %d\nhidden size  %d\nvocabulary   %d\nquantization %s", info.n_layers, info.hidden_size,
               info.vocab_size, info.quantization);
        printf("\nweights      %.1f MB\nestimate     %.1f MB (weights + KV cache for %d tokens)\n"
               "device       %s\nload time    %.1f ms\n",
               (double)info.weight_bytes / 1e6, (double)info.estimated_bytes / 1e6, info.max_context,
               device_name(info.device), m.load_ms);
    }
    lmx_runtime_destroy(rt);
    return 0;
}
