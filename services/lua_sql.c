/* lua_sql.c - sluice.sql.query (docs/lua.md).
 *
 * Hook SQL never runs on the worker's connection: a statement could change
 * that session for good (SET search_path, default_transaction_read_only,
 * DEALLOCATE or PREPARE over the queue's prepared statements, advisory
 * locks, LISTEN). Each Lua state opens its own connection on first use,
 * with the worker connection's parameters, runs every statement in its own
 * transaction (READ ONLY unless the stage has sql_writes), and after every
 * statement resets the session with DISCARD ALL (which also releases
 * advisory locks, closes cursors, drops prepared statements and temporary
 * tables, and UNLISTENs). A connection left in any other state (an error
 * in the middle of reading rows, COPY, a broken session) is closed and
 * reopened on the next call.
 *
 * Rows are read one at a time (single-row mode) and become Lua values as
 * they arrive, so the hook's memory limit counts them: a result larger
 * than the limit fails the call with "memory limit exceeded" after at most
 * one row past it has been buffered by libpq.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "error.h"
#include "lua_priv.h"

/* A connection that read more than this is reopened, so that libpq's
 * input buffer (as large as the largest row) does not stay allocated. */
#define REOPEN_AFTER_BYTES ((size_t)8 << 20)

/* Type OIDs from pg_type.h (stable across PostgreSQL versions). */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700,
    OID_JSONB = 3802
};

static void push_field(lua_State *L, sl_lua__box *b, const char *v, int len,
                       Oid type) {
    switch (type) {
    case OID_BOOL: lua_pushboolean(L, v[0] == 't'); return;
    case OID_INT8:
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
        if (lua_stringtonumber(L, v) == 0) lua_pushlstring(L, v, (size_t)len);
        return;
    case OID_JSON:
    case OID_JSONB: {
        json_error_t je;
        b->json = json_loadb(v, (size_t)len, JSON_DECODE_ANY, &je);
        if (!b->json) {
            lua_pushlstring(L, v, (size_t)len);
            return;
        }
        sl_lua__push_json(L, b->json);
        json_decref(b->json);
        b->json = NULL;
        return;
    }
    default: lua_pushlstring(L, v, (size_t)len);
    }
}

void sl_lua__sql_close(sl_lua *h) {
    if (h->sqlconn) PQfinish(h->sqlconn);
    h->sqlconn = NULL;
}

void sl_lua__sql_end_call(sl_lua *h) {
    if (h->sqlconn && (PQstatus(h->sqlconn) != CONNECTION_OK ||
                       PQtransactionStatus(h->sqlconn) != PQTRANS_IDLE))
        sl_lua__sql_close(h);
}

/* Runs a statement that must succeed; on failure leaves the error in
 * errbuf and returns -1. Uses b->res for the result. */
static int exec_plain(PGconn *conn, sl_lua__box *b, const char *sql,
                      char *errbuf, size_t errlen) {
    b->res = PQexec(conn, sql);
    int ok = PQresultStatus(b->res) == PGRES_COMMAND_OK;
    if (!ok) sl_db_error(conn, b->res, errbuf, errlen);
    PQclear(b->res);
    b->res = NULL;
    return ok ? 0 : -1;
}

/* The class of a failed statement (db.h), the script's own mistakes being
 * `script`; without a result (BEGIN, SET or COMMIT failed) only a lost
 * connection is worth a retry. */
static sl_errclass classify_sql(PGconn *conn, const PGresult *r) {
    if (!r && PQstatus(conn) == CONNECTION_OK) return SL_EC_SCRIPT;
    return sl_db_errclass(conn, r, SL_EC_SCRIPT);
}

/* The hook's own connection, opened from the parameters of `like` when
 * there is none (or it is not usable). Raises with class `connection`. */
static PGconn *hook_conn(lua_State *L, sl_lua *h, PGconn *like) {
    sl_lua__sql_end_call(h);
    if (h->sqlconn) return h->sqlconn;
    char err[512];
    h->sqlconn = sl_db_connect_like(like, err, sizeof err);
    if (!h->sqlconn)
        sl_lua__raise(L, SL_EC_CONNECTION, 0, "sluice.sql.query: %s", err);
    h->sql_bytes = 0;
    return h->sqlconn;
}

/* Binds the arguments from index 2 on into values (nparams entries);
 * strings stay referenced on the stack. */
static void bind_params(lua_State *L, const char **values, int nparams) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_null);
    int null_idx = lua_gettop(L);
    for (int i = 0; i < nparams; i++) {
        int idx = i + 2;
        switch (lua_type(L, idx)) {
        case LUA_TNIL: values[i] = NULL; break;
        case LUA_TBOOLEAN:
            values[i] = lua_toboolean(L, idx) ? "true" : "false";
            break;
        case LUA_TNUMBER: values[i] = luaL_tolstring(L, idx, NULL); break;
        case LUA_TSTRING: values[i] = lua_tostring(L, idx); break;
        case LUA_TTABLE:
            values[i] = sl_lua__push_encoded(L, idx,
                                             JSON_COMPACT | JSON_SORT_KEYS,
                                             "sluice.sql.query");
            break;
        default:
            if (lua_rawequal(L, idx, null_idx)) {
                values[i] = NULL;
                break;
            }
            luaL_error(L,
                       "sluice.sql.query: parameter $%d: a %s value cannot "
                       "be bound",
                       i + 1, luaL_typename(L, idx));
        }
    }
}

/* Appends the one row of b->res to the rows table at `rows`. */
static void add_row(lua_State *L, sl_lua *h, sl_lua__box *b, int rows,
                    lua_Integer n) {
    PGresult *res = b->res;
    int ncols = PQnfields(res);
    lua_createtable(L, 0, ncols);
    for (int c = 0; c < ncols; c++) {
        if (PQgetisnull(res, 0, c)) continue;
        int len = PQgetlength(res, 0, c);
        h->sql_bytes += (size_t)len;
        push_field(L, b, PQgetvalue(res, 0, c), len, PQftype(res, c));
        lua_setfield(L, -2, PQfname(res, c));
    }
    lua_rawseti(L, rows, n);
}

/* Reads every result of the statement sent. Returns 0 with the rows
 * pushed and *affected set, or -1 with the failure in err and *cls. */
static int read_results(lua_State *L, sl_lua *h, PGconn *conn,
                        sl_lua__box *b, lua_Integer *affected,
                        sl_errclass *cls, char *err, size_t errlen) {
    lua_createtable(L, 0, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_array_mt);
    lua_setmetatable(L, -2);
    int rows = lua_gettop(L), failed = 0;
    lua_Integer n = 0;
    *affected = 0;
    while ((b->res = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(b->res);
        if (failed) {
            /* Only drain after a failure. */
        } else if (st == PGRES_SINGLE_TUPLE) {
            add_row(L, h, b, rows, ++n);
        } else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            const char *a = PQcmdTuples(b->res);
            *affected = a && *a ? strtoll(a, NULL, 10) : n;
        } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
                   st == PGRES_COPY_BOTH) {
            snprintf(err, errlen, "COPY is not available to hooks");
            *cls = SL_EC_SCRIPT;
            PQclear(b->res);
            b->res = NULL;
            sl_lua__sql_close(h); /* the only way out of a COPY */
            return -1;
        } else {
            const char *prim =
                PQresultErrorField(b->res, PG_DIAG_MESSAGE_PRIMARY);
            const char *state = sl_db_sqlstate(b->res);
            char whole[512];
            *cls = classify_sql(conn, b->res);
            snprintf(err, errlen, "%s (SQLSTATE %s)%s",
                     prim ? prim : sl_db_error(conn, b->res, whole,
                                               sizeof whole),
                     state ? state : "?",
                     state && strcmp(state, "25006") == 0
                         ? "; this stage may only read: set `sql_writes: "
                           "true` on the stage to allow writes"
                         : "");
            failed = 1;
        }
        PQclear(b->res);
        b->res = NULL;
    }
    if (failed) lua_pop(L, 1);
    return failed ? -1 : 0;
}

/* Ends the statement's transaction and resets the session (DISCARD ALL);
 * a session that cannot be reset is closed. Returns 0 when `commit`
 * succeeded (always 0 for a rollback), else -1 with err and *cls set. */
static int finish(sl_lua *h, PGconn *conn, sl_lua__box *b, int commit,
                  sl_errclass *cls, char *err, size_t errlen) {
    char ignore[256];
    int rc = 0;
    if (commit) {
        rc = exec_plain(conn, b, "COMMIT", err, errlen);
        if (rc != 0) *cls = classify_sql(conn, NULL);
    } else {
        exec_plain(conn, b, "ROLLBACK", ignore, sizeof ignore);
    }
    if (PQtransactionStatus(conn) != PQTRANS_IDLE ||
        exec_plain(conn, b, "DISCARD ALL", ignore, sizeof ignore) != 0 ||
        h->sql_bytes > REOPEN_AFTER_BYTES)
        sl_lua__sql_close(h);
    return rc;
}

/* sluice.sql.query(sql, params...) -> rows, affected
 *
 * One statement, parameters bound as $1..$n (nil and sluice.json.null are
 * SQL NULL, tables are JSON text). It runs in its own transaction on the
 * hook's own connection: READ ONLY unless the stage has sql_writes: true,
 * so PostgreSQL itself refuses writes. Rows come back as an array of
 * tables keyed by column name (SQL NULL columns are absent); `affected` is
 * the row count of the command. */
int sl_lua__sql_query(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    const char *sql = luaL_checkstring(L, 1);
    int nparams = lua_gettop(L) - 1;
    if (nparams > 1000)
        return luaL_error(L, "sluice.sql.query: too many parameters (%d)",
                          nparams);
    PGconn *like = h->ctx ? sl_ctx_conn(h->ctx) : h->conn;
    if (!like)
        return luaL_error(L, "sluice.sql.query: not inside a job (no "
                             "database connection in this call)");
    luaL_checkstack(L, nparams + 16, "sluice.sql.query");
    const char **values =
        lua_newuserdatauv(L, sizeof(char *) * (size_t)(nparams + 1), 0);
    bind_params(L, values, nparams);

    PGconn *conn = hook_conn(L, h, like);
    sl_lua__box *b = sl_lua__box_new(L);
    char err[640];
    int writes = h->stage && h->stage->sql_writes;
    if (exec_plain(conn, b, writes ? "BEGIN" : "BEGIN READ ONLY", err,
                   sizeof err) != 0) {
        sl_errclass cls = classify_sql(conn, NULL);
        sl_lua__sql_close(h);
        return sl_lua__raise(L, cls, 0, "sluice.sql.query: %s", err);
    }
    /* A job an application user asked for reads and writes only what
     * that user may: the report of a project is built from the rows the
     * requester can see, whatever project id the job names. */
    if (h->ctx) {
        int rc = sl_ctx_act_for_requester(h->ctx, conn, err, sizeof err);
        if (rc < 0) {
            finish(h, conn, b, 0, NULL, NULL, 0);
            return sl_lua__raise(
                L, rc == -SL_ECONN ? SL_EC_CONNECTION : SL_EC_INTERNAL, 0,
                "sluice.sql.query: %s", err);
        }
    }
    if (h->stage && h->stage->timeout_ms > 0) {
        char set[96];
        snprintf(set, sizeof set, "SET LOCAL statement_timeout = %lld",
                 (long long)h->stage->timeout_ms);
        if (exec_plain(conn, b, set, err, sizeof err) != 0) {
            sl_errclass cls = classify_sql(conn, NULL);
            finish(h, conn, b, 0, NULL, NULL, 0);
            return sl_lua__raise(L, cls, 0, "sluice.sql.query: %s", err);
        }
    }
    if (!PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0)) {
        sl_db_error(conn, NULL, err, sizeof err);
        sl_errclass cls = classify_sql(conn, NULL);
        sl_lua__sql_close(h);
        return sl_lua__raise(L, cls, 0, "sluice.sql.query: %s", err);
    }
    PQsetSingleRowMode(conn);
    lua_Integer affected = 0;
    sl_errclass cls = SL_EC_SCRIPT;
    if (read_results(L, h, conn, b, &affected, &cls, err, sizeof err) != 0) {
        if (h->sqlconn) finish(h, conn, b, 0, NULL, NULL, 0);
        return sl_lua__raise(L, cls, 0, "sluice.sql.query: %s", err);
    }
    if (finish(h, conn, b, 1, &cls, err, sizeof err) != 0)
        return sl_lua__raise(L, cls, 0, "sluice.sql.query: commit failed: %s",
                             err);
    lua_pushinteger(L, affected);
    return 2;
}
