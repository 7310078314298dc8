/* db.h - the one way the engine reaches PostgreSQL: where the connection
 * string comes from, connecting (with the password kept out of messages),
 * the text of an error, and the error class of a failed statement.
 *
 * Every module that connects or judges a database error calls these; no
 * other file calls PQconnectdb, PQerrorMessage or reads an SQLSTATE
 * (scripts/check-tree enforces it).
 */
#ifndef SL_DB_H
#define SL_DB_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "errclass.h"

/* Where a connection string came from, named in connection errors. */
typedef struct sl_dbsource {
    const char *conninfo; /* borrowed; "" means libpq's PG* environment */
    const char *origin;   /* "--database", "DATABASE_URL", "the systemd
                             credential database_url", "the PG* environment" */
} sl_dbsource;

/* The connection string to use: flag (a --database value) when not NULL,
 * else $DATABASE_URL when set and not empty, else the systemd credential
 * $CREDENTIALS_DIRECTORY/database_url when there is one, else "" (libpq
 * reads PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ...). */
sl_dbsource sl_db_source(const char *flag);

/* Connects to src with TCP keepalives, tcp_user_timeout and
 * connect_timeout defaults (db.c) that src's own keywords override.
 * Returns the connection (notices silenced; free with
 * PQfinish), or NULL with "cannot connect to the database (from ORIGIN):
 * REASON" in err, the password of the connection string replaced by
 * [redacted]. */
PGconn *sl_db_connect(sl_dbsource src, char *err, size_t errlen);

/* Bounds every later statement of c's session to ms (statement_timeout)
 * unless the session already has a bound (set for the role or database,
 * or by options=-c statement_timeout=... in the connection string).
 * Returns 0, or -1 with the reason in err. */
int sl_db_bound_statements(PGconn *c, int64_t ms, char *err, size_t errlen);

/* Opens a second connection with the parameters of the open connection
 * `like` (same server, database, role and password): for work that must
 * not share `like`'s session, such as a Lua hook's SQL. Returns the
 * connection (notices silenced; free with PQfinish), or NULL with the
 * reason in err (no password in it). */
PGconn *sl_db_connect_like(const PGconn *like, char *err, size_t errlen);

/* The error text of a failed statement: r's message, else the
 * connection's, trailing newlines and spaces removed and the connection's
 * password replaced by [redacted], written into buf (always
 * NUL-terminated). Returns buf. r and c may be NULL. */
const char *sl_db_error(const PGconn *c, const PGresult *r, char *buf,
                        size_t len);

/* r's SQLSTATE ("42P01"), or NULL for a client-side error or no result.
 * Lives in r: compare it before PQclear(r). */
const char *sl_db_sqlstate(const PGresult *r);

/* The one rule for what a failed statement means to a job:
 *   connection gone, a client-side error (no SQLSTATE), class 08
 *   (connection exception) or 57P01..57P05 (shutdown, cannot connect now)
 *                                                    -> connection
 *   57014 (statement timeout, query cancelled)       -> timeout
 *   40001, 40P01 (serialization, deadlock), 55P03 (lock not available),
 *   class 53 (insufficient resources)                -> retryable
 *   anything else (a missing table, a constraint, bad data: for a person
 *   to fix)                                          -> `permanent`
 * `permanent` is the caller's class for its own mistakes (script for Lua,
 * internal for the engine's statements). */
sl_errclass sl_db_errclass(const PGconn *c, const PGresult *r,
                           sl_errclass permanent);

/* Non-zero when r failed because of the values bound to it rather than the
 * statement or the server: class 22 (data exception), 23 (integrity
 * violation) or 54 (program limit exceeded, e.g. a value too large). */
int sl_db_data_error(const PGresult *r);

/* Tries to become (or stay) the one process doing a job that needs one:
 * holds, or takes without waiting, the session-level advisory lock `key`
 * on c. Returns 1 when c holds it, 0 when another session does, -1 on a
 * database error. */
int sl_db_elect(PGconn *c, long long key);

#endif
