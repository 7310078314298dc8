/* httptest.c - see httptest.h. */
#include "httptest.h"

#include <curl/curl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static size_t on_body(char *d, size_t sz, size_t n, void *arg) {
    sl_test_resp *r = arg;
    char *b = realloc(r->body, r->len + sz * n + 1);
    assert_non_null(b);
    memcpy(b + r->len, d, sz * n);
    r->len += sz * n;
    b[r->len] = '\0';
    r->body = b;
    return r->stop_at && strstr(b, r->stop_at) ? 0 : sz * n;
}

static size_t on_header(char *d, size_t sz, size_t n, void *arg) {
    sl_test_resp *r = arg;
    size_t k = sz * n;
    if (r->hlen + k < sizeof r->headers) {
        memcpy(r->headers + r->hlen, d, k);
        r->hlen += k;
        r->headers[r->hlen] = '\0';
    }
    return k;
}

sl_test_resp sl_test_http(int port, const char *method, const char *path,
                          const char *const *headers, const char *body,
                          const char *stop_at, long timeout_ms) {
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    sl_test_resp r = {.stop_at = stop_at};
    CURL *h = curl_easy_init();
    assert_non_null(h);
    struct curl_slist *hs = NULL;
    for (int i = 0; headers && headers[i]; i++)
        hs = curl_slist_append(hs, headers[i]);
    if (body) {
        hs = curl_slist_append(hs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.code);
    curl_easy_cleanup(h);
    curl_slist_free_all(hs);
    if (!r.body) r.body = calloc(1, 1);
    r.stop_at = NULL;
    return r;
}
