/* main.c — `lmx <command> …`: dispatches to one function per command (see cli.h). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    lmx_cli_fn fn;
    const char *summary;
} commands[] = {
    {"run", lmx_cli_run, "chat with a model (streaming; interactive without a prompt)"},
    {"generate", lmx_cli_generate, "complete a text prompt or token ids (sampling, --stop, --json with metrics)"},
    {"chat-template", lmx_cli_chat_template, "render a model's chat template for messages on stdin"},
    {"tokenize", lmx_cli_tokenize, "text (stdin) -> JSON array of token ids"},
    {"detokenize", lmx_cli_detokenize, "JSON arrays of token ids (stdin) -> text"},
    {"logits", lmx_cli_logits, "last-position logits of a prompt as JSON"},
    {"info", lmx_cli_info, "load a model and describe it"},
    {"list", lmx_cli_list, "list registered models"},
    {"add", lmx_cli_add, "register an existing model directory"},
    {"rm", lmx_cli_rm, "remove a registered model"},
    {"verify", lmx_cli_verify, "check a model's files against their recorded SHA-256"},
    {"serve", lmx_cli_serve, "an OpenAI-compatible HTTP server (chat, completions, streaming, metrics)"},
    {"bench", lmx_cli_bench, "benchmark a model: load, prefill and decode tok/s, peak memory (--json)"},
    {"dev", lmx_cli_dev, "developer tools (random-model: benchmark models with real shapes)"},
    {"version", lmx_cli_version, "print the version"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: lmx <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-16s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun `lmx <command> --help` for a command's options. Logs: LMX_LOG=debug|info|warn|error.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) return lmx_cli_version(1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "lmx: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
