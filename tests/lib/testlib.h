/* testlib.h - helpers shared by the cmocka tests.
 *
 * Database tests run against the real PostgreSQL cluster that scripts/test
 * starts (PGHOST/PGPORT/PGUSER in the environment). Each test binary makes
 * its own fresh database so tests can run in parallel.
 */
#ifndef SL_TESTLIB_H
#define SL_TESTLIB_H

#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

/* Drops and creates database `name`; returns its conninfo ("dbname=name"),
 * a static string valid until the next call. Fails the test when no
 * server is reachable. */
const char *sl_test_db(const char *name);

/* Connects (fails the test on error). Caller PQfinish()es. */
PGconn *sl_test_connect(const char *conninfo);

/* Executes SQL that must succeed (fails the test otherwise). */
void sl_test_exec(PGconn *c, const char *sql);

/* First column of the first row as a malloc'd string (caller frees), or
 * NULL for SQL NULL / no rows. Fails the test on an SQL error. */
char *sl_test_scalar(PGconn *c, const char *sql);

/* The scalar as a long (0 for NULL). */
long sl_test_long(PGconn *c, const char *sql);

/* Writes content to a new file under this process's temp directory and
 * returns its path (static storage for the process lifetime). */
const char *sl_test_file(const char *name, const char *content);

/* The process's temp directory (created on first use, removed at exit). */
const char *sl_test_tmpdir(void);

/* Runs a shell command (printf-style); returns its exit code, or -1. The
 * command's stdout+stderr go to *out (malloc'd, caller frees) when out is
 * not NULL. */
int sl_test_sh(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Runs `sluice ARGS 2>&1` (ARGS printf-style); returns the exit code,
 * the output in *out (malloc'd) when out is not NULL. */
int sl_test_sluice(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Fails the test, showing out, unless out contains what. */
void sl_test_expect_in(const char *out, const char *what);

/* The path of the built sluice binary. */
const char *sl_test_bin(void);

/* Milliseconds on the monotonic clock. */
int64_t sl_test_now_ms(void);

/* A loopback TCP port that was free a moment ago. */
int sl_test_free_port(void);

/* Starts `sh -c cmd` (a fake server that prints "PORT n" on its first
 * line of stdout) and returns its pid with the port in *port; fails the
 * test, naming `what`, when it does not report a port. */
pid_t sl_test_spawn_server(const char *cmd, const char *what, int *port);

/* A standalone generation pipeline (a generation_jobs queue inheriting RLS
 * from projects), shared by the schema and migration tests. */
extern const char *const sl_test_generation_yaml;

#endif
