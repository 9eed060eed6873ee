/* cpu_collective.h — the collectives of CPU backends that are ranks of one group (backend.h
 * all_reduce_sum / all_gather, lmx_backend_group): the ranks' threads meet in host memory.
 *
 * A collective is two barriers: every rank posts where its data is and waits for the others; then
 * each rank works on its share (an all-reduce: its slice of the elements, summed over the ranks in
 * rank order and written into every rank's buffer; an all-gather: every rank's part copied into its
 * own destination) and waits again, so that no buffer changes while another rank reads it. The sum
 * of every element is ((x_0 + x_1) + x_2) + … on every rank: the same values everywhere, and the same
 * from run to run.
 *
 * Abort: a rank that failed before reaching a collective would leave the others at the barrier for
 * ever; lmx_cpu_coll_abort (from any thread) wakes them and fails every collective until
 * lmx_cpu_coll_reset, which the group calls once no rank is inside (between runs).
 * Ownership: create/destroy pair; destroy after every backend that joined it. Thread-safety: as
 * above (one collective at a time per group, each rank from its own thread). */
#ifndef LMX_BACKEND_CPU_COLLECTIVE_H
#define LMX_BACKEND_CPU_COLLECTIVE_H

#include "backend/backend.h"

typedef struct lmx_cpu_coll lmx_cpu_coll;

lmx_status lmx_cpu_coll_create(int n_ranks, lmx_cpu_coll **out);
void lmx_cpu_coll_destroy(lmx_cpu_coll *h); /* NULL-safe */
void lmx_cpu_coll_abort(lmx_cpu_coll *h);
void lmx_cpu_coll_reset(lmx_cpu_coll *h);
/* Makes CPU backend be rank `rank` of h (before its first collective). LMX_ERR_INVALID_ARGUMENT for
 * another backend or a rank outside h. */
lmx_status lmx_backend_cpu_join(lmx_backend *be, lmx_cpu_coll *h, int rank);

#endif
