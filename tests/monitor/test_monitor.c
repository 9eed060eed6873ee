/* test_monitor.c — counters per model and overall, averages, memory probe and peak, reset. */
#include "lmx_test.h"
#include "monitor/monitor.h"

#include <stdlib.h>

static void test_counters(void) {
    lmx_monitor *m;
    CHECK(lmx_monitor_create(&m) == LMX_OK);
    lmx_metrics x;
    CHECK(lmx_monitor_get(m, "a", 0, &x) == LMX_ERR_MODEL_NOT_FOUND);
    lmx_monitor_record_miss(m, "a");
    lmx_monitor_record_load(m, "a", 12.5, 1000);
    lmx_monitor_record_hit(m, "a");
    lmx_monitor_record_hit(m, "a");
    lmx_monitor_record_hit(m, "a");
    lmx_monitor_record_miss(m, "b");
    lmx_monitor_record_load(m, "b", 7.5, 500);
    lmx_gen_result r1 = {.n_prompt_tokens = 4, .n_generated_tokens = 10, .ttft_ms = 5, .total_ms = 50,
                         .tokens_per_second = 200};
    lmx_gen_result r2 = {.n_prompt_tokens = 6, .n_generated_tokens = 30, .ttft_ms = 15, .total_ms = 150,
                         .tokens_per_second = 100};
    lmx_monitor_record_inference(m, "a", &r1, true);
    lmx_monitor_record_inference(m, "a", &r2, true);
    lmx_monitor_record_inference(m, "b", NULL, false);
    CHECK(lmx_monitor_get(m, "a", 0, &x) == LMX_OK);
    CHECK_EQ_INT(x.n_inferences, 2);
    CHECK_EQ_INT(x.total_tokens, 40);
    CHECK_EQ_INT(x.total_prompt_tokens, 10);
    CHECK_NEAR(x.total_inference_ms, 200, 1e-9);
    CHECK_NEAR(x.avg_tokens_per_second, 150, 1e-9);
    CHECK_NEAR(x.avg_ttft_ms, 10, 1e-9);
    CHECK_NEAR(x.load_ms, 12.5, 1e-9);
    CHECK_EQ_INT(x.cache_hits, 3);
    CHECK_EQ_INT(x.cache_misses, 1);
    CHECK_NEAR(x.cache_hit_rate, 0.75, 1e-9);
    CHECK_EQ_INT(x.current_memory_bytes, 1000);
    CHECK(x.avg_gpu_utilization == -1);
    CHECK(lmx_monitor_get(m, "b", 0, &x) == LMX_OK);
    CHECK_EQ_INT(x.n_errors, 1);
    CHECK_EQ_INT(x.n_inferences, 0);
    CHECK(lmx_monitor_get(m, NULL, 4096, &x) == LMX_OK);
    CHECK_EQ_INT(x.n_inferences, 2);
    CHECK_EQ_INT(x.n_errors, 1);
    CHECK_EQ_INT(x.n_loads, 2);
    CHECK_NEAR(x.load_ms, 20, 1e-9);
    CHECK_EQ_INT(x.cache_hits, 3);
    CHECK_EQ_INT(x.cache_misses, 2);
    int64_t rss = lmx_process_rss_bytes();
    CHECK(rss > 0);
    CHECK(x.current_memory_bytes >= 4096 && x.current_memory_bytes > rss / 2);
    CHECK(x.peak_memory_bytes >= x.current_memory_bytes);
    /* eviction: memory of the model drops, counted per model and overall */
    lmx_monitor_record_eviction(m, "a");
    CHECK(lmx_monitor_get(m, "a", 0, &x) == LMX_OK && x.current_memory_bytes == 0 && x.cache_evictions == 1);
    /* GPU utilisation: mean of the samples, negatives ignored */
    lmx_monitor_record_gpu_utilization(m, 50);
    lmx_monitor_record_gpu_utilization(m, -1);
    lmx_monitor_record_gpu_utilization(m, 70);
    CHECK(lmx_monitor_get(m, NULL, 0, &x) == LMX_OK);
    CHECK_NEAR(x.avg_gpu_utilization, 60, 1e-9);
    CHECK_EQ_INT(x.cache_evictions, 1);
    /* peak: a big device sample raises it; later smaller samples do not lower it */
    lmx_monitor_sample_memory(m, (int64_t)1 << 40);
    CHECK(lmx_monitor_get(m, NULL, 0, &x) == LMX_OK);
    CHECK(x.peak_memory_bytes >= ((int64_t)1 << 40) && x.current_memory_bytes < ((int64_t)1 << 40));
    /* reset one model, then everything */
    lmx_monitor_reset(m, "a");
    CHECK(lmx_monitor_get(m, "a", 0, &x) == LMX_OK && x.n_inferences == 0 && x.cache_hits == 0);
    CHECK(lmx_monitor_get(m, NULL, 0, &x) == LMX_OK && x.n_inferences == 2);
    lmx_monitor_reset(m, NULL);
    CHECK(lmx_monitor_get(m, NULL, 0, &x) == LMX_OK);
    CHECK(x.n_inferences == 0 && x.n_loads == 0 && x.cache_misses == 0 && x.avg_gpu_utilization == -1);
    CHECK(x.peak_memory_bytes < ((int64_t)1 << 40));
    CHECK(lmx_monitor_get(m, "b", 0, &x) == LMX_OK && x.n_errors == 0 && x.current_memory_bytes == 500);
    lmx_monitor_reset(m, "unknown"); /* no effect, no crash */
    lmx_monitor_destroy(m);
    lmx_monitor_destroy(NULL);
}

int main(void) {
    RUN(test_counters);
    return lmx_test_summary();
}
