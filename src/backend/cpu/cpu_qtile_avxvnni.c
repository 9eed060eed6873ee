/* cpu_qtile_avxvnni.c — the tile kernels at the AVX-VNNI level (cpu_qtile.h; Intel client cores
 * without AVX-512, Zen 4 and later): the ymm template (cpu_qtile_ymm.h) with VPDPWSSD ymm. */
#include "backend/cpu/cpu_qtile.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QT_Y_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
#define QT_Y_DP(acc, a, b) _mm256_dpwssd_avx_epi32((acc), (a), (b))
#define QT_Y_KERNELS lmx_qtile_avxvnni
#include "backend/cpu/cpu_qtile_ymm.h"
#endif
