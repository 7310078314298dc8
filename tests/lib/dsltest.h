/* dsltest.h - assertions shared by the pipeline-loader tests. */
#ifndef SL_DSLTEST_H
#define SL_DSLTEST_H

#include <stddef.h>

#include "dsl.h"

/* Every diagnostic of d formatted, one per line (malloc'd, caller frees;
 * "(none)" when there is none). */
char *sl_test_diags(const sl_diags *d);

/* Loading must fail (-SL_EINVAL, no model) with a diagnostic at
 * file:line:col whose message contains msg. Loads the files in
 * paths[0..npaths) when paths is not NULL, else the text yaml under the
 * name `file`. */
void sl_test_expect_diag(const char *const *paths, size_t npaths,
                         const char *yaml, const char *file, int line,
                         int col, const char *msg);

#endif
