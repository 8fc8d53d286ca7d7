/* Prints the library version: proof that the installed package links. */
#include <stdio.h>

#include "edgemoe.h"

int main(void) {
    printf("edgemoe %s, ABI %u\n", emoe_version(), emoe_abi_version());
    return emoe_abi_version() == EMOE_ABI_VERSION ? 0 : 1;
}
