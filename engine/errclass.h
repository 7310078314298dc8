/* errclass.h - the classes a failed job's error falls into.
 *
 * A handler classifies every failure; the stage's retry policy decides per
 * class whether it retries or fails at once. Names are the DSL's spelling
 * (retry.on / retry.fail_on in docs/dsl.md).
 */
#ifndef SL_ERRCLASS_H
#define SL_ERRCLASS_H

#define SL_ERRCLASS_MAP(X)                                                   \
    X(TIMEOUT, "timeout", 1)                                                 \
    X(CONNECTION, "connection", 1)                                           \
    X(HTTP_5XX, "http_5xx", 1)                                               \
    X(RATE_LIMITED, "rate_limited", 1)                                       \
    X(INVALID_RESPONSE, "invalid_response", 1)                               \
    X(LEASE_EXPIRED, "lease_expired", 1)                                     \
    X(RETRYABLE, "retryable", 1)                                             \
    X(HTTP_4XX, "http_4xx", 0)                                               \
    X(QUOTA_EXHAUSTED, "quota_exhausted", 0)                                 \
    X(INVALID_INPUT, "invalid_input", 0)                                     \
    X(SCRIPT, "script", 0)                                                   \
    X(PROVIDER, "provider", 0)                                               \
    X(INTERNAL, "internal", 0)

typedef enum {
#define SL_EC_ENUM(sym, name, dflt) SL_EC_##sym,
    SL_ERRCLASS_MAP(SL_EC_ENUM)
#undef SL_EC_ENUM
        SL_EC__COUNT
} sl_errclass;

/* The DSL name of a class ("http_5xx"); never NULL. */
const char *sl_errclass_name(sl_errclass c);

/* Parses a DSL name; returns the class or -1 when unknown. */
int sl_errclass_parse(const char *name);

/* The default retry mask: every class whose third X() column is 1. */
unsigned sl_errclass_default_mask(void);

#endif
