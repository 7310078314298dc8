/* db.c - connecting, error text and the SQLSTATE rule, in one place. */
#include "db.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* systemd's LoadCredential=database_url:FILE: the URL read once from
 * $CREDENTIALS_DIRECTORY/database_url, trailing newlines dropped. */
static char credential[4096];
static pthread_once_t credential_once = PTHREAD_ONCE_INIT;

static void read_credential(void) {
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    char path[1024];
    if (!dir || snprintf(path, sizeof path, "%s/database_url", dir) >=
                    (int)sizeof path)
        return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(credential, 1, sizeof credential - 1, f);
    fclose(f);
    credential[n] = '\0';
    while (n > 0 && (credential[n - 1] == '\n' || credential[n - 1] == '\r'))
        credential[--n] = '\0';
}

sl_dbsource sl_db_source(const char *flag) {
    sl_dbsource s;
    const char *env = getenv("DATABASE_URL");
    pthread_once(&credential_once, read_credential);
    if (flag) {
        s.conninfo = flag;
        s.origin = "--database";
    } else if (env && *env) {
        s.conninfo = env;
        s.origin = "DATABASE_URL";
    } else if (credential[0]) {
        s.conninfo = credential;
        s.origin = "the systemd credential database_url";
    } else {
        s.conninfo = "";
        s.origin = "the PG* environment";
    }
    return s;
}

static void quiet_notice(void *arg, const char *msg) {
    (void)arg;
    (void)msg;
}

/* Replaces every occurrence of pw (at least 3 bytes) in msg. */
static void redact_password(char *msg, size_t cap, const char *pw) {
    static const char mark[] = "[redacted]";
    size_t pl = strlen(pw), ml = sizeof mark - 1;
    char *p;
    if (pl < 3) return;
    while ((p = strstr(msg, pw)) != NULL) {
        size_t tail = strlen(p + pl);
        if (ml > pl && (size_t)(p - msg) + ml + tail + 1 > cap)
            tail = cap - 1 - (size_t)(p - msg) - ml;
        memmove(p + ml, p + pl, tail);
        memcpy(p, mark, ml);
        p[ml + tail] = '\0';
    }
}

static void trim(char *s) {
    size_t l = strlen(s);
    while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == ' ')) s[--l] = '\0';
}

/* TCP settings every connection gets unless its connection string (or,
 * for connect_timeout, $PGCONNECT_TIMEOUT) says otherwise: a peer that
 * silently stops answering is noticed in seconds instead of the kernel's
 * ~15 minutes of retransmissions. Idle connections probe after 5 s, every
 * 2 s, and give up after 3 unanswered probes; unacknowledged data gives up
 * after 10 s; a connection attempt after 10 s. libpq ignores the TCP ones
 * on Unix sockets. docs/operations.md#network-faults lists them. */
static const struct {
    const char *key, *value, *env;
} tcp_defaults[] = {
    {"keepalives", "1", NULL},
    {"keepalives_idle", "5", NULL},
    {"keepalives_interval", "2", NULL},
    {"keepalives_count", "3", NULL},
    {"tcp_user_timeout", "10000", NULL},
    {"connect_timeout", "10", "PGCONNECT_TIMEOUT"},
};
#define N_TCP_DEFAULTS (sizeof tcp_defaults / sizeof tcp_defaults[0])

/* Connects with the defaults above placed before the connection string:
 * libpq lets the keywords of an expanded dbname override what came
 * before, so whatever conninfo sets wins. */
static PGconn *connect_with_defaults(const char *conninfo) {
    const char *keys[N_TCP_DEFAULTS + 2], *vals[N_TCP_DEFAULTS + 2];
    size_t k = 0;
    for (size_t i = 0; i < N_TCP_DEFAULTS; i++) {
        const char *env = tcp_defaults[i].env ? getenv(tcp_defaults[i].env)
                                              : NULL;
        if (env && *env) continue;
        keys[k] = tcp_defaults[i].key;
        vals[k++] = tcp_defaults[i].value;
    }
    keys[k] = "dbname";
    vals[k++] = conninfo;
    keys[k] = NULL;
    vals[k] = NULL;
    return PQconnectdbParams(keys, vals, 1);
}

PGconn *sl_db_connect(sl_dbsource src, char *err, size_t errlen) {
    assert(src.conninfo && src.origin && err && errlen > 0);
    PGconn *c = connect_with_defaults(src.conninfo);
    if (c && PQstatus(c) == CONNECTION_OK) {
        PQsetNoticeProcessor(c, quiet_notice, NULL);
        return c;
    }
    char msg[2048];
    snprintf(msg, sizeof msg, "%s",
             c ? PQerrorMessage(c) : "out of memory");
    trim(msg);
    /* The password may sit in a URL that libpq echoes back. */
    PQconninfoOption *opts = PQconninfoParse(src.conninfo, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val)
            redact_password(msg, sizeof msg, o->val);
    PQconninfoFree(opts);
    if (!opts && *src.conninfo)
        snprintf(msg, sizeof msg, "%s is not a valid connection string",
                 src.origin);
    sl_redact(msg, sizeof msg);
    snprintf(err, errlen, "cannot connect to the database (from %s): %s",
             src.origin, msg);
    PQfinish(c);
    return NULL;
}

PGconn *sl_db_connect_like(const PGconn *like, char *err, size_t errlen) {
    assert(like && err && errlen > 0);
    PQconninfoOption *opts = PQconninfo((PGconn *)like);
    if (!opts) {
        snprintf(err, errlen, "cannot read the connection's parameters");
        return NULL;
    }
    size_t n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) n++;
    const char **keys = calloc(n + 1, sizeof *keys);
    const char **vals = calloc(n + 1, sizeof *vals);
    PGconn *c = NULL;
    if (keys && vals) {
        size_t k = 0;
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (!o->val || !*o->val) continue;
            keys[k] = o->keyword;
            vals[k++] = o->val;
        }
        c = PQconnectdbParams(keys, vals, 0);
    }
    free(keys);
    free(vals);
    PQconninfoFree(opts);
    if (c && PQstatus(c) == CONNECTION_OK) {
        PQsetNoticeProcessor(c, quiet_notice, NULL);
        return c;
    }
    /* libpq names host and port, never the password, in this message. */
    snprintf(err, errlen, "cannot open a second database connection: %s",
             c ? PQerrorMessage(c) : "out of memory");
    trim(err);
    if (c) PQfinish(c);
    return NULL;
}

const char *sl_db_error(const PGconn *c, const PGresult *r, char *buf,
                        size_t len) {
    assert(buf && len > 0);
    const char *m = r ? PQresultErrorMessage(r) : NULL;
    if ((!m || !*m) && c) m = PQerrorMessage(c);
    snprintf(buf, len, "%s", m && *m ? m : "unknown database error");
    trim(buf);
    /* A server message may echo what the session sent; the connection's
     * password stays out of it, as it does in sl_db_connect's message. */
    const char *pw = c ? PQpass(c) : NULL;
    if (pw) redact_password(buf, len, pw);
    return buf;
}

const char *sl_db_sqlstate(const PGresult *r) {
    return r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
}

sl_errclass sl_db_errclass(const PGconn *c, const PGresult *r,
                           sl_errclass permanent) {
    const char *st = sl_db_sqlstate(r);
    if (!c || PQstatus(c) != CONNECTION_OK || !st) return SL_EC_CONNECTION;
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0)
        return SL_EC_CONNECTION;
    if (strcmp(st, "57014") == 0) return SL_EC_TIMEOUT;
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 ||
        strcmp(st, "55P03") == 0 || strncmp(st, "53", 2) == 0)
        return SL_EC_RETRYABLE;
    return permanent;
}

int sl_db_data_error(const PGresult *r) {
    const char *st = sl_db_sqlstate(r);
    return st && (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 ||
                  strncmp(st, "54", 2) == 0);
}

int sl_db_bound_statements(PGconn *c, int64_t ms, char *err, size_t errlen) {
    assert(c && ms > 0 && err && errlen > 0);
    char v[32];
    snprintf(v, sizeof v, "%lldms", (long long)ms);
    const char *vals[1] = {v};
    /* A value from the role, the database, or options in the connection
     * string is the operator's: only an unbounded session gets ours. */
    PGresult *r = PQexecParams(
        c,
        "SELECT CASE WHEN current_setting('statement_timeout') = '0'"
        " THEN set_config('statement_timeout', $1, false) END",
        1, NULL, vals, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[512];
        snprintf(err, errlen, "setting statement_timeout: %s",
                 sl_db_error(c, r, m, sizeof m));
        rc = -1;
    }
    PQclear(r);
    return rc;
}

int sl_db_elect(PGconn *c, long long key) {
    char k[32];
    snprintf(k, sizeof k, "%lld", key);
    const char *params[1] = {k};
    PGresult *r = PQexecParams(
        c,
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
        " AND pid = pg_backend_pid() AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = $1::bigint)"
        " OR pg_try_advisory_lock($1::bigint)",
        1, NULL, params, NULL, NULL, 0);
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                 ? strcmp(PQgetvalue(r, 0, 0), "t") == 0
                 : -1;
    PQclear(r);
    return rc;
}
