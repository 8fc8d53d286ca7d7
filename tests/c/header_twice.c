/* The header compiles on its own and when included twice; its status type has a fixed width
 * whatever the compiler does with enums (CMake also builds this with -fshort-enums), and the
 * version macros come with it. */
#include "edgemoe.h"
#include "edgemoe.h"

_Static_assert(sizeof(emoe_status) == 4, "emoe_status must be 32 bits wide");
_Static_assert(sizeof(EMOE_STATUS_INTERNAL) <= 4, "status constants fit in emoe_status");
#if !defined(EMOE_VERSION_MAJOR) || !defined(EMOE_VERSION_MINOR) || !defined(EMOE_VERSION_PATCH)
#error "edgemoe.h must define EMOE_VERSION_MAJOR, _MINOR and _PATCH"
#endif

int edgemoe_header_compiles_as_c(void) { return EMOE_STATUS_OK + EMOE_VERSION_MAJOR * 0; }
