/* engine_default.c — the engine lmx_runtime_create uses. Not wired yet: the adapter over
 * src/model + src/tokenizer replaces this file; until then loads report LMX_ERR_UNSUPPORTED. */
#include "runtime/engine.h"

const lmx_engine *lmx_engine_default(void) { return NULL; }
