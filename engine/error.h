/* error.h - the engine's return codes.
 *
 * Functions that can fail return 0 on success or a negative SL_E* code and
 * put human detail in a buffer the caller owns. sl_strerror() names a code.
 */
#ifndef SL_ERROR_H
#define SL_ERROR_H

#define SL_ERROR_MAP(X)                                   \
    X(NOMEM, 1, "out of memory")                          \
    X(INVAL, 2, "invalid argument or definition")         \
    X(IO, 3, "input/output error")                        \
    X(DB, 4, "database error")                            \
    X(LEASE, 5, "lease lost (job fenced off)")            \
    X(NOTFOUND, 6, "not found")                           \
    X(REFUSED, 7, "refused")                              \
    X(HTTP, 8, "HTTP error")                              \
    X(LUA, 9, "Lua error")                                \
    X(STOP, 10, "stopped")                                \
    X(CONN, 11, "database connection lost")

enum {
#define SL_E_ENUM(sym, num, msg) SL_E##sym = num,
    SL_ERROR_MAP(SL_E_ENUM)
#undef SL_E_ENUM
};

/* A static description of code (negative or positive). */
const char *sl_strerror(int code);

/* Exit codes of the sluice binary, the same for every command
 * (docs/cli.md#exit-codes). 3..6 are outcomes of the jobs a command
 * waited for (`watch`, `run --exit-when-idle`), not failures of sluice. */
enum {
    SL_EXIT_OK = 0,
    SL_EXIT_FAILURE = 1,     /* runtime failure (database, I/O), refused */
    SL_EXIT_INVALID = 2,     /* invalid pipeline definitions */
    SL_EXIT_JOB_FAILED = 3,  /* the subject (watch) or a job that ran
                                (run --exit-when-idle) failed for good */
    SL_EXIT_CANCELLED = 4,   /* watch: the subject's jobs were cancelled */
    SL_EXIT_TIMEOUT = 5,     /* watch: --timeout passed */
    SL_EXIT_GONE = 6,        /* watch: the subject row was deleted */
    SL_EXIT_USAGE = 64       /* bad command line: options, values, ids, names */
};

#endif
