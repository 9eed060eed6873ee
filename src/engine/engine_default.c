/* engine_default.c — the engine lmx_runtime_create uses: the real one over src/model and
 * src/tokenizer (engine/engine_lm.c). Tests that need a deterministic model use
 * lmx_runtime_create_with_engine with tests/fake_engine instead. */
#include "engine/engine.h"
#include "engine/engine_lm.h"

const lmx_engine *lmx_engine_default(void) { return lmx_engine_lm(); }
