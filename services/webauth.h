/* webauth.h - who may use the web API and the event streams.
 *
 * Operators authenticate with `Authorization: Bearer TOKEN`, where TOKEN
 * is SLUICE_ADMIN_TOKEN (everything) or SLUICE_READ_TOKEN (reads only),
 * both from the environment; an unset or empty variable matches nothing,
 * so a server without tokens refuses every API request. Tokens are
 * compared in constant time.
 *
 * The progress widget authenticates one subject's event stream with a
 * short-lived subject token minted by the application (or `sluice token`):
 *     token = EXPIRY "." hex(HMAC-SHA256(SLUICE_TOKEN_SECRET,
 *                                        SUBJECT "|" EXPIRY))
 * where EXPIRY is the expiry in Unix seconds (decimal) and SUBJECT the
 * subject's key in its canonical text form, prefixed with "PIPELINE/"
 * unless the key is a uuid (sl_webauth_subject_text). docs/web.md shows
 * it in TypeScript.
 */
#ifndef SL_WEBAUTH_H
#define SL_WEBAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* What a request may do. */
typedef enum sl_web_role {
    SL_WEB_NONE = 0, /* nothing (no or unknown token) */
    SL_WEB_READ,     /* the GET routes */
    SL_WEB_ADMIN     /* everything */
} sl_web_role;

/* The role of the value of an Authorization header (NULL: none). */
sl_web_role sl_webauth_role(const char *authorization);

/* 1 when a state-changing request with these headers (each may be NULL)
 * comes from another site and must be refused: Sec-Fetch-Site other than
 * same-origin or none, or else an Origin whose host[:port] differs from
 * Host. Requests without either header (curl, servers) pass. */
int sl_webauth_cross_site(const char *sec_fetch_site, const char *origin,
                          const char *host);

/* The longest text a subject token signs, with its NUL. */
#define SL_WEBAUTH_SUBJECT_MAX (SL_IDENT_MAX + 1 + SL_KEY_MAX)

/* The text a subject token signs for subject `key` (canonical,
 * sl_key_canon) of pipeline p, into out (n bytes): the key itself for a
 * uuid key, which no other subject shares; "PIPELINE/KEY" for a bigint,
 * integer or text key, so that a token for orders/42 does not open
 * invoices/42. Returns 0, or -SL_EINVAL when it does not fit. */
int sl_webauth_subject_text(const sl_pipeline *p, const char *key, char *out,
                            size_t n);

/* The longest subject token, with its NUL. */
#define SL_WEBAUTH_TOKEN_MAX 96

/* Writes the subject token for subject, valid until expiry (Unix seconds),
 * signed with secret, into out (SL_WEBAUTH_TOKEN_MAX bytes). Returns 0, or
 * -SL_EINVAL when secret is empty or subject is empty. */
int sl_webauth_mint(const char *secret, const char *subject, int64_t expiry,
                    char *out);

/* Checks a subject token for subject at time now (Unix seconds) with
 * secret. Returns 0 when valid; -SL_EINVAL when malformed, signed for
 * another subject or with another secret, or secret is empty;
 * -SL_EREFUSED when it has expired. */
int sl_webauth_check(const char *secret, const char *subject,
                     const char *token, int64_t now);

#endif
