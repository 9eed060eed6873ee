/* membw.c — read-bandwidth probe for the CPU decode comparison (bench/cpu_sbs.sh): N threads each
 * sum their own slice of one array (first touched by the thread that reads it), best of R passes.
 * The same measurement as ../shared/tools/peer_llamacpp/membw.c, with pthreads instead of OpenMP.
 *   lmx_membw [THREADS=2] [GIB=2] [REPS=5]   → one JSON line */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct slice {
    uint64_t *a;
    size_t n;
    uint64_t sum;
    pthread_barrier_t *bar;
    int reps;
    double *best; /* [reps] per thread: seconds of each pass (thread 0's are the pass times) */
} slice;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *run(void *arg) {
    slice *s = arg;
    for (size_t i = 0; i < s->n; i++) s->a[i] = i * 2654435761u; /* first touch: pages local to this thread */
    for (int r = 0; r < s->reps; r++) {
        pthread_barrier_wait(s->bar);
        double t0 = now();
        uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (size_t i = 0; i + 4 <= s->n; i += 4) {
            a0 += s->a[i];
            a1 += s->a[i + 1];
            a2 += s->a[i + 2];
            a3 += s->a[i + 3];
        }
        s->sum += a0 + a1 + a2 + a3;
        pthread_barrier_wait(s->bar);
        s->best[r] = now() - t0;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 2;
    double gib = argc > 2 ? atof(argv[2]) : 2.0;
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (nt < 1 || nt > 256 || !(gib > 0) || reps < 1) {
        fprintf(stderr, "usage: %s [THREADS] [GIB] [REPS]\n", argv[0]);
        return 2;
    }
    size_t n = (size_t)(gib * 1073741824.0) / 8 / (size_t)nt / 4 * 4;
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)nt);
    slice *s = calloc((size_t)nt, sizeof *s);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    double *times = calloc((size_t)nt * (size_t)reps, sizeof *times);
    if (!s || !th || !times) return 1;
    for (int i = 0; i < nt; i++) {
        s[i] = (slice){malloc(n * 8), n, 0, &bar, reps, times + (size_t)i * reps};
        if (!s[i].a) return 1;
    }
    for (int i = 0; i < nt; i++) pthread_create(&th[i], NULL, run, &s[i]);
    uint64_t check = 0;
    for (int i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
        check += s[i].sum;
    }
    double best = 1e30, worst = 0;
    for (int r = 0; r < reps; r++) {
        double t = 0;
        for (int i = 0; i < nt; i++) t = times[(size_t)i * reps + r] > t ? times[(size_t)i * reps + r] : t;
        best = t < best ? t : best;
        worst = t > worst ? t : worst;
    }
    double bytes = (double)n * 8 * nt;
    printf("{\"probe\": \"bench/membw.c\", \"threads\": %d, \"bytes\": %.0f, \"reps\": %d, \"best_GB_s\": %.2f, "
           "\"worst_GB_s\": %.2f, \"checksum\": %llu}\n",
           nt, bytes, reps, bytes / best / 1e9, bytes / worst / 1e9, (unsigned long long)check);
    return 0;
}
