/* engine_default.c — the engine lmx_runtime_create uses: the real one over src/model and
 * src/tokenizer (runtime/engine_lm.c). Tests that need a deterministic model use
 * lmx_runtime_create_with_engine with tests/fake_engine instead. */
#include "runtime/engine.h"
#include "runtime/engine_lm.h"

const lmx_engine *lmx_engine_default(void) { return lmx_engine_lm(); }
