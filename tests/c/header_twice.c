/* The header compiles on its own and when included twice. */
#include "edgemoe.h"
#include "edgemoe.h"

int edgemoe_header_compiles_as_c(void) { return EMOE_STATUS_OK; }
