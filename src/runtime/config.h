/* config.h — validation of lmx_config (the defaults are lmx_config_default() in lmx.h).
 * Pure functions; thread-safe. */
#ifndef LMX_RUNTIME_CONFIG_H
#define LMX_RUNTIME_CONFIG_H

#include "lmx.h"

/* LMX_ERR_INVALID_ARGUMENT naming the first bad field. */
lmx_status lmx_config_validate(const lmx_config *cfg);

#endif
