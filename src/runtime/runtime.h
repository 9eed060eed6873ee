/* runtime.h — the facade's internal entry point (the public one is lmx_runtime_create in lmx.h):
 * a runtime over an explicit engine, for tests that plug in tests/fake_engine. */
#ifndef LMX_RUNTIME_RUNTIME_H
#define LMX_RUNTIME_RUNTIME_H

#include "engine/engine.h"
#include "lmx.h"

/* Like lmx_runtime_create but with an explicit engine. The engine must outlive the runtime. */
lmx_status lmx_runtime_create_with_engine(const lmx_config *cfg, const lmx_engine *engine,
                                          lmx_runtime **out);

#endif
