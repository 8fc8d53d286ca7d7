// The C header and the C++ wrapper compile as C++17, each included twice.
#include "edgemoe.h"
#include "edgemoe.h"
#include "edgemoe.hpp"
#include "edgemoe.hpp"

static_assert(sizeof(emoe_status) == 4, "emoe_status must be 32 bits wide");

int edgemoe_header_compiles_as_cxx() { return EMOE_STATUS_OK; }
