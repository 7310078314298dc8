/* dsl.h - loading and validating pipeline definitions (YAML -> sl_model).
 *
 * The loader parses each file with libyaml, interpolates ${VAR} and
 * ${VAR:-default} from the environment in values (never in identifiers),
 * builds the model and validates it as a whole (references, cycles,
 * reachability, identifiers, uniqueness of queues and channels across all
 * files, handler names, Lua hooks compiled). It collects every error
 * before giving up. docs/dsl.md is the reference for the format.
 */
#ifndef SL_DSL_H
#define SL_DSL_H

#include <stddef.h>

#include "model.h"

/* One error, printed as "file:line:col: message". */
typedef struct sl_diag {
    char *file;
    int line, col; /* 1-based; 0 when unknown */
    char *message;
} sl_diag;

/* Errors collected by a load. Owned by the caller: sl_diags_free(). */
typedef struct sl_diags {
    sl_diag *items;
    size_t n, cap;
} sl_diags;

void sl_diags_free(sl_diags *d);

/* Formats all diagnostics, one per line, into a malloc'd string
 * (caller frees). */
char *sl_diags_format(const sl_diags *d);

/* Loads the given files and directories (directories: every *.yaml and
 * *.yml in them, sorted by name; not recursive) into one model.
 * On success returns 0 and sets *out (caller frees with sl_model_free).
 * On invalid definitions returns -SL_EINVAL with every error in diags and
 * *out = NULL; on I/O errors -SL_EIO with a diag naming the file. */
int sl_dsl_load(const char *const *paths, size_t npaths, sl_model **out,
                sl_diags *diags);

/* Loads one document from memory (tests, fuzzing). `name` is the file name
 * used in diagnostics and for resolving relative Lua hook paths. */
int sl_dsl_load_string(const char *name, const char *text, size_t len,
                       sl_model **out, sl_diags *diags);

#endif
