/* cpu_qtile_avx2.c — the tile kernels at the AVX2 level (cpu_qtile.h): the ymm template
 * (cpu_qtile_ymm.h) with VPMADDWD + VPADDD for the pairwise int16 dot products. */
#include "backend/cpu/cpu_qtile.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QT_Y_TARGET __attribute__((target("avx2,fma,f16c")))
#define QT_Y_DP(acc, a, b) _mm256_add_epi32((acc), _mm256_madd_epi16((a), (b)))
#define QT_Y_KERNELS lmx_qtile_avx2
#include "backend/cpu/cpu_qtile_ymm.h"
#endif
