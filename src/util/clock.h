/* clock.h — the monotonic clock every timing in lmx uses (load, TTFT, tokens/s). Thread-safe. */
#ifndef LMX_UTIL_CLOCK_H
#define LMX_UTIL_CLOCK_H

#include <stdint.h>

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
uint64_t lmx_now_ns(void);

#endif
