/* audit.h - the audit trail of operator actions taken through the web API
 * (retry, cancel, delete, pause, resume): one row per action in sluice.audit (created by
 * `sluice migrate`, migrate.c), saying who acted, what they did, on which
 * filter (the request's ids) and how many jobs it changed.
 */
#ifndef SL_AUDIT_H
#define SL_AUDIT_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

/* Inserts one audit row: who (e.g. "admin@127.0.0.1"), what ("retry",
 * "cancel"), filter (a JSON value, borrowed) and count. Returns 0, or
 * -SL_ENOMEM / -SL_EDB with "audit: server message" in err. */
int sl_audit_write(PGconn *c, const char *who, const char *what,
                   const json_t *filter, long count, char *err,
                   size_t errlen);

#endif
