/* json.c — serialised cJSON parsing (see json.h for why). */
#include "util/json.h"

#include <pthread.h>

static pthread_mutex_t g_parse_lock = PTHREAD_MUTEX_INITIALIZER;

cJSON *lmx_json_parse(const char *s, size_t len, const char **end) {
    pthread_mutex_lock(&g_parse_lock);
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &stop, 0);
    if (!root) stop = cJSON_GetErrorPtr();
    pthread_mutex_unlock(&g_parse_lock);
    if (end) *end = stop;
    return root;
}
