/* httptest.h - one HTTP request to the server under test, through libcurl
 * to a real socket on 127.0.0.1, for the web tests (test_web_api,
 * test_web_actions, test_web_dashboard). */
#ifndef SL_HTTPTEST_H
#define SL_HTTPTEST_H

#include <stddef.h>

typedef struct sl_test_resp {
    long code;         /* 0 when no answer came */
    char *body;        /* always allocated, NUL-terminated; caller frees */
    size_t len;
    char headers[4096]; /* the header lines as received (cut when longer) */
    size_t hlen;
    const char *stop_at; /* internal: see sl_test_http */
} sl_test_resp;

/* Sends method (HEAD: no body is read) path to 127.0.0.1:port with the
 * header lines `headers` (NULL-terminated; NULL: none) and JSON `body`
 * (NULL: none; it adds Content-Type: application/json). Reading stops
 * once the body contains stop_at (NULL: at the end; for event streams)
 * or after timeout_ms. */
sl_test_resp sl_test_http(int port, const char *method, const char *path,
                          const char *const *headers, const char *body,
                          const char *stop_at, long timeout_ms);

#endif
