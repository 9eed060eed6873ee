/* hub_auth.c — endpoint and token the way huggingface_hub finds them: HF_ENDPOINT; HF_TOKEN, else
 * $HF_HOME/token (HF_HOME default ~/.cache/huggingface), first line, whitespace trimmed. */
#include "hub/hub.h"
#include "util/fs.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

char *lmx_hub_endpoint(const char *given) {
    const char *e = given && *given ? given : getenv("HF_ENDPOINT");
    char *s = strdup(e && *e ? e : "https://huggingface.co");
    if (s)
        for (size_t n = strlen(s); n > 0 && s[n - 1] == '/'; n--) s[n - 1] = 0;
    return s;
}

static char *trimmed(const char *t) {
    while (*t && isspace((unsigned char)*t)) t++;
    size_t n = strcspn(t, "\r\n");
    while (n > 0 && isspace((unsigned char)t[n - 1])) n--;
    if (n == 0) return NULL;
    char *s = malloc(n + 1);
    if (s) memcpy(s, t, n), s[n] = 0;
    return s;
}

char *lmx_hub_token(const char *given) {
    if (given) return *given ? strdup(given) : NULL;
    const char *env = getenv("HF_TOKEN");
    if (env && *env) return trimmed(env);
    char *path = NULL;
    const char *hf_home = getenv("HF_HOME"), *home = getenv("HOME");
    if (hf_home && *hf_home) path = lmx_fs_join(hf_home, "token");
    else if (home && *home) path = lmx_fs_join(home, ".cache/huggingface/token");
    if (!path) return NULL;
    char *text = NULL, *tok = NULL;
    size_t len;
    if (lmx_fs_is_file(path) && lmx_fs_read_file(path, 1 << 16, &text, &len) == LMX_OK) tok = trimmed(text);
    free(text);
    free(path);
    return tok;
}
