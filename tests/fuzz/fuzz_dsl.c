/* fuzz_dsl.c - libFuzzer target for the pipeline loader.
 *
 * Feeds arbitrary bytes to sl_dsl_load_string() as one pipeline file. The
 * loader must return (valid model or diagnostics) without crashing,
 * hanging, leaking or tripping ASan/UBSan. Build and run: scripts/fuzz
 * (docs/dsl.md, "Fuzzing"). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "dsl.h"
#include "error.h"
#include "stages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_stages_register_builtin();
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load_string("fuzz.yaml", (const char *)data, size, &m, &d);
    /* The contract: a model exactly when there are no diagnostics. */
    if ((rc == 0) != (m != NULL) || (rc == 0 && d.n != 0) ||
        (rc != 0 && d.n == 0))
        abort();
    char *text = sl_diags_format(&d);
    free(text);
    sl_model_free(m);
    sl_diags_free(&d);
    return 0;
}
