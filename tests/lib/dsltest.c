#include "dsltest.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "testlib.h"

char *sl_test_diags(const sl_diags *d) {
    char *s = sl_diags_format(d);
    return s ? s : strdup("(none)");
}

void sl_test_expect_diag(const char *const *paths, size_t npaths,
                         const char *yaml, const char *file, int line,
                         int col, const char *msg) {
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = paths ? sl_dsl_load(paths, npaths, &m, &d)
                   : sl_dsl_load_string(file, yaml, strlen(yaml), &m, &d);
    char *all = sl_test_diags(&d);
    if (rc != -SL_EINVAL)
        fail_msg("expected -SL_EINVAL, got %d; diagnostics:\n%s", rc, all);
    assert_null(m);
    int found = 0;
    for (size_t i = 0; i < d.n; i++)
        if (d.items[i].line == line && d.items[i].col == col &&
            strstr(d.items[i].message, msg) &&
            strcmp(d.items[i].file, file) == 0)
            found = 1;
    if (!found)
        fail_msg("no diagnostic %s:%d:%d containing \"%s\"; got:\n%s", file,
                 line, col, msg, all);
    free(all);
    sl_diags_free(&d);
}
