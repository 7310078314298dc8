/* builtin.c - linked into every test program: registers the built-in
 * stage handlers before main(), as the CLI does at start-up. */
#include "stages.h"

__attribute__((constructor)) static void register_builtin(void) {
    sl_stages_register_builtin();
}
