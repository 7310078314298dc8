/* http.h - the HTTP client every cloud stage (and sluice.http in Lua) uses.
 *
 * One sl_http per worker thread wraps one libcurl easy handle, so
 * keep-alive connections (and TLS sessions) are reused across requests of
 * the same thread. It is not thread-safe: use it from one thread at a time.
 *
 * A request body comes from memory or is streamed from a file; the
 * response body is collected in memory up to a size cap. TLS peer and host
 * verification are always on; the proxy environment (https_proxy,
 * no_proxy, ...) is honoured as libcurl does by default.
 *
 * Every outcome is classified into the runtime's error classes
 * (errclass.h), and on failure an sl_result is filled that a handler can
 * return as it is:
 *   transfer timed out (connect, total, low speed)  -> timeout
 *   cannot resolve/connect, reset, short body, TLS  -> connection
 *   HTTP 5xx, 408, 409                              -> http_5xx, with
 *                                                      delay_ms from the
 *                                                      retry headers too
 *   HTTP 429                                        -> rate_limited, with
 *                                                      delay_ms from
 *                                                      retry-after-ms, else
 *                                                      Retry-After
 *   HTTP 429 whose body says insufficient_quota     -> quota_exhausted
 *   other HTTP 4xx (and unfollowed 3xx)             -> http_4xx
 *   body over the size cap, malformed/truncated JSON -> invalid_response
 *   aborted by the request's progress callback      -> retryable
 * Messages name the operation, the method and the URL without its query
 * string, the status and the provider's own error message; they never
 * contain request headers (so never an Authorization header or key) and
 * are made safe by the sanitiser (text.h). A JSON reply may hold "\u0000"
 * escapes (JSON_ALLOW_NUL). The low-speed limit applies while the request
 * is sent and the answer arrives, not while the server has the request
 * and has not begun to answer: that wait is bounded by timeout_ms alone.
 */
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "handler.h"
#include "with.h"

typedef struct sl_http sl_http; /* opaque; one per thread */

/* Called during a transfer with the bytes sent so far and the request
 * body's size; returning non-zero aborts the transfer (class retryable,
 * "aborted"). Handlers use it to report upload progress and to stop when
 * sl_ctx_should_stop() says so. */
typedef int (*sl_http_progress_fn)(void *arg, int64_t sent, int64_t total);

/* A progress callback for handlers: arg is the job's sl_ctx; aborts the
 * transfer once sl_ctx_should_stop() says so (cancelled, lease lost,
 * stage timeout, shutdown). */
int sl_http_stop_check(void *ctx, int64_t sent, int64_t total);

typedef struct sl_http_req {
    const char *what;   /* operation for messages ("AssemblyAI upload");
                           NULL = "HTTP request" */
    const char *provider; /* the metrics' provider label ("assemblyai",
                             "llm", "http", "lua", "sentry", "alerts");
                             NULL: "other" */
    const char *method; /* "GET" (default when NULL), "POST", "PUT", ... */
    const char *url;    /* http:// or https:// only */
    const char *const *headers; /* "Name: value" strings, NULL-terminated;
                                   may be NULL; never logged or echoed */
    /* The body: from memory (body, body_len; body_len 0 with body set
     * sends an empty body), or streamed from body_file (its size is sent
     * as Content-Length). At most one of them. */
    const char *body;
    size_t body_len;
    const char *body_file;
    int64_t connect_timeout_ms;   /* 0 = 10 s */
    int64_t timeout_ms;           /* whole request; 0 = 60 s */
    int64_t low_speed_ms;         /* abort when slower than low_speed_bps
                                     for this long while sending or
                                     receiving; 0 = 30 s */
    long low_speed_bps;           /* 0 = 1 byte per second */
    size_t max_response;          /* response body cap; 0 = 16 MiB */
    int follow_redirects;         /* follow up to 5 redirects (http/https) */
    int public_only;              /* refuse to connect to a loopback,
                                     private, link-local, shared, multicast
                                     or unspecified address (checked on the
                                     address connected to, redirects and
                                     every resolved address included; no
                                     proxy is used): class invalid_input */
    sl_http_progress_fn progress; /* optional */
    void *progress_arg;
} sl_http_req;

typedef struct sl_http_resp {
    long status; /* HTTP status; 0 when no response arrived */
    char *body;  /* NUL-terminated (owned; sl_http_resp_clear frees);
                    may be NULL when there was no response */
    size_t body_len;
    int64_t retry_after_ms; /* retry-after-ms, else Retry-After (seconds or
                               an HTTP-date) of the final response,
                               capped at one hour; -1 when absent or not
                               a finite, non-negative number */
    char content_type[128]; /* "" when absent */
} sl_http_resp;

/* Initialises libcurl once per process (thread-safe) and creates a
 * client. Returns 0 and *out (free with sl_http_free), or -SL_ENOMEM /
 * -SL_EHTTP with a message in err. */
int sl_http_new(sl_http **out, char *err, size_t errlen);

/* Frees the client and its connections. NULL is fine. */
void sl_http_free(sl_http *h);

/* Performs req and fills resp (which the caller clears with
 * sl_http_resp_clear, on success and on failure alike). Returns 0 when a
 * complete 2xx response arrived within the limits. Otherwise returns a
 * negative SL_E code (-SL_EHTTP for a transfer or HTTP failure, -SL_EIO
 * when body_file cannot be read, -SL_EINVAL for a bad request, -SL_ENOMEM)
 * and fills res: outcome SL_OUT_FAIL, the class above, delay_ms from the
 * response's retry headers (0 when none) and the message. resp keeps the
 * status and body of an error response for callers that look closer. */
int sl_http_do(sl_http *h, const sl_http_req *req, sl_http_resp *resp,
               sl_result *res);

/* Non-zero when the socket address sa is one a public_only request
 * refuses (see sl_http_req.public_only). Exposed for tests. */
struct sockaddr;
int sl_http_addr_private(const struct sockaddr *sa);

/* Frees resp's body and resets it. */
void sl_http_resp_clear(sl_http_resp *resp);

/* Classifies a completed response by status and body (what sl_http_do
 * uses): returns -1 for 2xx, else the class. Exposed for tests. */
int sl_http_classify(long status, const char *body);

/* Parses an HTTP date or delta-seconds value of Retry-After at time `now`
 * (seconds since the epoch); returns milliseconds, or -1 when unparseable.
 * Exposed for tests. */
int64_t sl_http_parse_retry_after(const char *value, int64_t now);

/* Parses resp's body as a JSON object. Returns 0 and *out (a new
 * reference), or -SL_EHTTP with res filled: class invalid_response, the
 * message saying whether the JSON was truncated or malformed and where. */
int sl_http_json(const sl_http_req *req, const sl_http_resp *resp, json_t **out,
                 sl_result *res);

/* The provider's error message in an error body: {"error": "text"},
 * {"error": {"message": "text"}}, {"message": "text"}; for an HTML page
 * its <title> (else its first <h1>); for other text its first line; as
 * safe, printable text. Writes at most len bytes into buf (always
 * NUL-terminated); "" when there is nothing. */
void sl_http_error_text(const char *body, size_t body_len, char *buf,
                        size_t len);

/* ---- a handler's `with:` ------------------------------------------------ */

/* Handler init()/fini() for handlers whose per-thread state is just an
 * sl_http client (stage.h). */
int sl_http_state_init(const sl_stage *stage, void **state, char *err,
                       size_t errlen);
void sl_http_state_fini(void *state);

/* Sets req's limits from `with`: connect_timeout (default 10s),
 * request_timeout (default dflt_timeout_ms), low_speed_time (default 30s)
 * and max_response (bytes, default 16 MiB). Returns 0 or -SL_EINVAL. */
int sl_http_with_limits(const json_t *with, int64_t dflt_timeout_ms,
                        sl_http_req *req, char *err, size_t errlen);

#endif
