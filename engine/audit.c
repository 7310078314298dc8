/* audit.c - the audit trail (audit.h). */
#include "audit.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "error.h"

int sl_audit_write(PGconn *c, const char *who, const char *what,
                   const json_t *filter, long count, char *err, size_t errlen) {
    assert(c && who && what && filter && err && errlen > 0);
    char *f = json_dumps(filter, JSON_COMPACT);
    if (!f) {
        snprintf(err, errlen, "audit: out of memory");
        return -SL_ENOMEM;
    }
    char n[24];
    snprintf(n, sizeof n, "%ld", count);
    const char *vals[4] = {who, what, f, n};
    PGresult *r =
        PQexecParams(c,
                     "INSERT INTO sluice.audit (who, what, filter, count)"
                     " VALUES ($1, $2, $3::jsonb, $4::bigint)",
                     4, NULL, vals, NULL, NULL, 0);
    free(f);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char m[1024];
        snprintf(err, errlen, "audit: %s", sl_db_error(c, r, m, sizeof m));
        rc = -SL_EDB;
    }
    PQclear(r);
    return rc;
}
