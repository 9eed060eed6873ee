/* hub_select.c — which files of a hub repo a model needs: config, generation config, tokenizer
 * files, chat templates, *.safetensors and their index; plus --include patterns. Only top-level
 * names that lmx_fs_safe_relative accepts: a name from the hub never escapes the model directory. */
#include "hub/hub.h"
#include "util/fs.h"

#include <fnmatch.h>
#include <string.h>

static const char *const needed[] = {"config.json",        "generation_config.json", "tokenizer.json",
                                     "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                     "vocab.json",         "merges.txt",             "added_tokens.json",
                                     "chat_template.jinja", "chat_template.json",    "*.safetensors",
                                     "*.safetensors.index.json", NULL};

bool lmx_hub_wanted(const char *name, const char *const *include) {
    if (!name || !lmx_fs_safe_relative(name) || strchr(name, '/') || name[0] == '.') return false;
    size_t n = strlen(name);
    if (n > 8 && !strcmp(name + n - 8, ".partial")) return false;
    for (int i = 0; needed[i]; i++)
        if (fnmatch(needed[i], name, 0) == 0) return true;
    for (int i = 0; include && include[i]; i++)
        if (fnmatch(include[i], name, 0) == 0) return true;
    return false;
}
