/* log.c — leveled logging to stderr; one fprintf per message so lines from threads don't interleave. */
#include "util/log.h"

#include "util/env.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

static atomic_int g_level = -1; /* -1: not read from the environment yet */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void read_env(void) {
    const char *e = lmx_env_str(LMX_ENV_LOG);
    int lvl = LMX_LOG_WARN;
    if (e) {
        if (!strcmp(e, "debug")) lvl = LMX_LOG_DEBUG;
        else if (!strcmp(e, "info")) lvl = LMX_LOG_INFO;
        else if (!strcmp(e, "warn") || !strcmp(e, "warning")) lvl = LMX_LOG_WARN;
        else if (!strcmp(e, "error")) lvl = LMX_LOG_ERROR;
        else if (!strcmp(e, "off") || !strcmp(e, "none")) lvl = LMX_LOG_OFF;
    }
    int expected = -1;
    atomic_compare_exchange_strong(&g_level, &expected, lvl);
}

LMX_API void lmx_log_set_level(lmx_log_level level) {
    pthread_once(&g_once, read_env);
    atomic_store(&g_level, (int)level);
}

bool lmx_log_enabled(lmx_log_level level) {
    pthread_once(&g_once, read_env);
    return (int)level >= atomic_load(&g_level) && level != LMX_LOG_OFF;
}

void lmx_log(lmx_log_level level, const char *fmt, ...) {
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (!lmx_log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "lmx %s: %s\n", names[level], msg);
}
