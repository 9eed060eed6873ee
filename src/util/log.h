/* log.h — leveled logging to stderr. Level from LMX_LOG (debug|info|warn|error|off), default warn. */
#ifndef LMX_UTIL_LOG_H
#define LMX_UTIL_LOG_H

#include "lmx.h"

void lmx_log(lmx_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True if messages of `level` are printed (to skip expensive formatting). */
bool lmx_log_enabled(lmx_log_level level);


#define LMX_LOG_D(...) lmx_log(LMX_LOG_DEBUG, __VA_ARGS__)
#define LMX_LOG_I(...) lmx_log(LMX_LOG_INFO, __VA_ARGS__)
#define LMX_LOG_W(...) lmx_log(LMX_LOG_WARN, __VA_ARGS__)
#define LMX_LOG_E(...) lmx_log(LMX_LOG_ERROR, __VA_ARGS__)

#endif
