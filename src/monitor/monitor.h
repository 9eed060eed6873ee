/* monitor.h — performance counters per model id and for the whole runtime (lmx_metrics).
 *
 * Per-model counters survive eviction (they are keyed by id, not by the loaded object). Overall
 * memory is the process resident set (/proc/self/statm) plus the bytes the engine reports on the
 * device; the peak is the highest value sampled (at every load, generation and metrics read).
 * GPU utilisation: the mean of the values the engine reported, -1 while none is known.
 *
 * Thread-safety: one internal mutex; every function may be called from any thread. The monitor
 * never calls out while holding it (lock order: cache → monitor).
 */
#ifndef LMX_MONITOR_MONITOR_H
#define LMX_MONITOR_MONITOR_H

#include <stdint.h>
#include "lmx.h"

typedef struct lmx_monitor lmx_monitor;

lmx_status lmx_monitor_create(lmx_monitor **out);
void lmx_monitor_destroy(lmx_monitor *m); /* NULL-safe */

void lmx_monitor_record_hit(lmx_monitor *m, const char *id);
void lmx_monitor_record_miss(lmx_monitor *m, const char *id);
void lmx_monitor_record_eviction(lmx_monitor *m, const char *id);
/* A finished load of `bytes` (the cache's estimate; the model's current memory until unloaded). */
void lmx_monitor_record_load(lmx_monitor *m, const char *id, double load_ms, int64_t bytes);
/* The model left the cache (evicted or unloaded): its current memory drops to 0. */
void lmx_monitor_record_unload(lmx_monitor *m, const char *id);
/* A generation ended; ok=false counts an error (res may be NULL then). */
void lmx_monitor_record_inference(lmx_monitor *m, const char *id, const lmx_gen_result *res, bool ok);
/* A GPU utilisation sample in percent (ignored when < 0). */
void lmx_monitor_record_gpu_utilization(lmx_monitor *m, double percent);
/* A memory sample: process RSS + device_bytes; updates the peak. */
void lmx_monitor_sample_memory(lmx_monitor *m, int64_t device_bytes);

/* id NULL = overall (memory sampled now: RSS + device_bytes).
 * Unknown id → LMX_ERR_MODEL_NOT_FOUND. n_models_loaded is left for the caller to fill. */
lmx_status lmx_monitor_get(lmx_monitor *m, const char *id, int64_t device_bytes, lmx_metrics *out);
/* id NULL = everything (peak restarts at the current sample). Unknown id: no effect. */
void lmx_monitor_reset(lmx_monitor *m, const char *id);

/* Resident set size of this process in bytes, 0 if /proc is unreadable. */
int64_t lmx_process_rss_bytes(void);

#endif
