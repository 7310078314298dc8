/* http.c - the libcurl client: one easy handle per thread, outcomes
 * classified into error classes (http.h). */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "text.h"

#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_LOW_SPEED_MS 30000
#define DEFAULT_MAX_RESPONSE (16u << 20)
#define MAX_RETRY_AFTER_MS (3600 * 1000LL)

struct sl_http {
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
};

/* ---- process-wide initialisation ---------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void) {
    global_rc = curl_global_init(CURL_GLOBAL_ALL);
}

int sl_http_new(sl_http **out, char *err, size_t errlen) {
    *out = NULL;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        snprintf(err, errlen, "libcurl initialisation failed: %s",
                 curl_easy_strerror(global_rc));
        return -SL_EHTTP;
    }
    sl_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        snprintf(err, errlen, "curl_easy_init failed");
        return -SL_EHTTP;
    }
    *out = h;
    return 0;
}

void sl_http_free(sl_http *h) {
    if (!h) return;
    curl_easy_cleanup(h->curl);
    free(h);
}

void sl_http_resp_clear(sl_http_resp *resp) {
    if (!resp) return;
    free(resp->body);
    memset(resp, 0, sizeof *resp);
    resp->retry_after_ms = -1;
}

/* ---- one transfer -------------------------------------------------------- */

typedef struct xfer {
    const sl_http_req *req;
    sl_http_resp *resp;
    size_t cap, max;
    int too_big;
    int refused;             /* public_only refused an address */
    char refused_addr[64];
    FILE *fp;
    int64_t body_total;
    char retry_after[64], retry_after_ms[64];
    /* The low-speed check (on_progress): bytes moved since win_start must
     * reach low_bps per second over low_ms, except while the server has
     * the whole request and has not begun to answer. */
    int64_t low_ms, win_start, win_bytes;
    long low_bps;
    int answering, too_slow;
} xfer;

static size_t on_write(char *data, size_t size, size_t n, void *arg) {
    xfer *x = arg;
    sl_http_resp *r = x->resp;
    size_t len = size * n;
    if (r->body_len + len > x->max) {
        x->too_big = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (r->body_len + len + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb) return 0;
        r->body = nb;
        x->cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

/* Copies a header's value (trimmed) when its name matches. */
static int header_value(const char *line, size_t len, const char *name,
                        char *out, size_t outlen) {
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return 0;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    size_t vl = (size_t)(end - v);
    if (vl >= outlen) vl = outlen - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
    return 1;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg) {
    xfer *x = arg;
    size_t len = size * n;
    x->answering = 1;
    /* A new status line (after a redirect or a 100 Continue) starts a new
     * response: forget the headers of the previous one. */
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        x->retry_after[0] = x->retry_after_ms[0] = '\0';
        x->resp->content_type[0] = '\0';
        return len;
    }
    if (!header_value(data, len, "retry-after-ms", x->retry_after_ms,
                      sizeof x->retry_after_ms) &&
        !header_value(data, len, "retry-after", x->retry_after,
                      sizeof x->retry_after))
        header_value(data, len, "content-type", x->resp->content_type,
                     sizeof x->resp->content_type);
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg) {
    xfer *x = arg;
    size_t got = fread(buf, size, n, x->fp);
    if (got == 0 && ferror(x->fp)) return CURL_READFUNC_ABORT;
    return got;
}

static int on_seek(void *arg, curl_off_t off, int origin) {
    xfer *x = arg;
    return fseeko(x->fp, (off_t)off, origin) == 0 ? CURL_SEEKFUNC_OK
                                                  : CURL_SEEKFUNC_FAIL;
}

/* Also the low-speed check. libcurl's own (CURLOPT_LOW_SPEED_TIME)
 * counts the time a server takes to think as a stall, so a completion
 * that took longer than low_speed_time to start failed although
 * request_timeout allowed it: here the wait between the last request
 * byte and the first response byte is bounded by request_timeout alone. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow) {
    xfer *x = arg;
    (void)dltotal;
    int64_t t = sl_now_ms(), moved = (int64_t)dlnow + (int64_t)ulnow;
    int waiting =
        !x->answering && (ulnow == 0 || (int64_t)ulnow >= x->body_total);
    if (waiting) {
        x->win_start = t;
        x->win_bytes = moved;
    } else if (t - x->win_start >= x->low_ms) {
        if ((moved - x->win_bytes) * 1000 <
            (int64_t)x->low_bps * (t - x->win_start)) {
            x->too_slow = 1;
            return 1;
        }
        x->win_start = t;
        x->win_bytes = moved;
    }
    if (!x->req->progress) return 0;
    int64_t total = x->body_total > 0 ? x->body_total : (int64_t)ultotal;
    return x->req->progress(x->req->progress_arg, (int64_t)ulnow, total);
}

/* ---- classification ---------------------------------------------------- */

int sl_http_classify(long status, const char *body) {
    if (status >= 200 && status < 300) return -1;
    if (status == 429)
        return body && strstr(body, "insufficient_quota")
                   ? SL_EC_QUOTA_EXHAUSTED
                   : SL_EC_RATE_LIMITED;
    if (status >= 500 || status == 408 || status == 409) return SL_EC_HTTP_5XX;
    return SL_EC_HTTP_4XX;
}

int64_t sl_http_parse_retry_after(const char *value, int64_t now) {
    if (!value) return -1;
    while (*value == ' ')
        value++;
    if (!*value) return -1;
    if (isdigit((unsigned char)*value)) {
        char *end;
        errno = 0;
        double s = strtod(value, &end);
        while (*end == ' ')
            end++;
        if (errno || *end || !isfinite(s) || s < 0) return -1;
        if (s * 1000.0 > (double)MAX_RETRY_AFTER_MS) return MAX_RETRY_AFTER_MS;
        return (int64_t)(s * 1000.0);
    }
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1) return -1;
    int64_t ms = ((int64_t)t - now) * 1000;
    if (ms < 0) ms = 0;
    return ms > MAX_RETRY_AFTER_MS ? MAX_RETRY_AFTER_MS : ms;
}

static int64_t parse_retry_after_ms(const char *value) {
    char *end;
    if (!*value) return -1;
    errno = 0;
    double ms = strtod(value, &end);
    while (*end == ' ')
        end++;
    /* NaN and infinities are refused: converting them to an integer is
     * undefined. */
    if (errno || *end || !isfinite(ms) || ms < 0) return -1;
    return ms > (double)MAX_RETRY_AFTER_MS ? MAX_RETRY_AFTER_MS : (int64_t)ms;
}

/* Writes a printable copy of at most n bytes of s into buf: control
 * characters become spaces, runs of spaces one space; then made safe. */
static void printable(const char *s, size_t n, char *buf, size_t len) {
    char tmp[512];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < sizeof tmp; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) c = ' ';
        if (c == ' ' && (o == 0 || tmp[o - 1] == ' ')) continue;
        tmp[o++] = (char)c;
    }
    while (o > 0 && tmp[o - 1] == ' ')
        o--;
    sl_text_copy(buf, len, tmp, o);
}

/* The text of an HTML page's first <tag>...</tag> (NULL when absent); *n
 * is its length. */
static const char *html_element(const char *body, size_t len, const char *tag,
                                size_t *n) {
    char open[16], close[16];
    snprintf(open, sizeof open, "<%s", tag);
    snprintf(close, sizeof close, "</%s", tag);
    const char *p = memmem(body, len, open, strlen(open));
    if (!p) return NULL;
    const char *gt = memchr(p, '>', (size_t)(body + len - p));
    if (!gt) return NULL;
    gt++;
    const char *end =
        memmem(gt, (size_t)(body + len - gt), close, strlen(close));
    if (!end) return NULL;
    *n = (size_t)(end - gt);
    return gt;
}

/* The text of the start of an HTML page, without its tags. */
static void html_text(const char *body, size_t n, char *buf, size_t len) {
    char tmp[320];
    size_t o = 0;
    int in_tag = 0;
    for (size_t i = 0; i < n && o + 1 < sizeof tmp; i++) {
        if (body[i] == '<')
            in_tag = 1;
        else if (body[i] == '>')
            in_tag = 0;
        else if (!in_tag)
            tmp[o++] = body[i];
    }
    printable(tmp, o, buf, len);
}

static int looks_like_html(const char *body, size_t len) {
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' ||
                       body[i] == '\n'))
        i++;
    return i < len && body[i] == '<';
}

void sl_http_error_text(const char *body, size_t body_len, char *buf,
                        size_t len) {
    if (!len) return;
    buf[0] = '\0';
    if (!body || !body_len) return;
    json_t *j = json_loadb(body, body_len, JSON_ALLOW_NUL, NULL);
    const char *msg = NULL;
    if (json_is_object(j)) {
        json_t *e = json_object_get(j, "error");
        if (json_is_string(e))
            msg = json_string_value(e);
        else if (json_is_object(e) &&
                 json_is_string(json_object_get(e, "message")))
            msg = json_string_value(json_object_get(e, "message"));
        else if (json_is_string(json_object_get(j, "message")))
            msg = json_string_value(json_object_get(j, "message"));
    }
    size_t n = 0;
    const char *title;
    if (msg) {
        printable(msg, strlen(msg), buf, len);
    } else if (looks_like_html(body, body_len)) {
        /* An HTML error page (a proxy's 502): its title, or its first
         * heading; never the markup. */
        if ((title = html_element(body, body_len, "title", &n)) != NULL ||
            (title = html_element(body, body_len, "h1", &n)) != NULL)
            printable(title, n > 200 ? 200 : n, buf, len);
        else
            html_text(body, body_len > 300 ? 300 : body_len, buf, len);
    } else {
        /* Plain text: its first non-empty line. */
        const char *p = body, *end = body + body_len;
        while (p < end && (*p == '\n' || *p == '\r' || *p == ' '))
            p++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        n = (size_t)((nl ? nl : end) - p);
        printable(p, n > 300 ? 300 : n, buf, len);
    }
    json_decref(j);
}

/* The URL for messages: scheme://host[:port]/path, without user info,
 * query or fragment (either may carry a secret). */
static void url_for_message(const char *url, char *buf, size_t len) {
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = memchr(host, '@', (size_t)(end - host));
    size_t scheme = (size_t)(host - url);
    const char *h = at ? at + 1 : host;
    size_t path = strcspn(end, "?#");
    snprintf(buf, len, "%.*s%.*s%.*s", (int)scheme, url, (int)(end - h), h,
             (int)path, end);
}

/* Fills res with a failure of class c: "<what>: <METHOD> <url>: detail". */
static void fail_req(sl_result *res, const sl_http_req *req, sl_errclass c,
                     int64_t delay_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void fail_req(sl_result *res, const sl_http_req *req, sl_errclass c,
                     int64_t delay_ms, const char *fmt, ...) {
    char url[512], detail[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    url_for_message(req->url ? req->url : "", url, sizeof url);
    sl_fail(res, c, "%s: %s %s: %s", req->what ? req->what : "HTTP request",
            req->method ? req->method : "GET", url, detail);
    res->delay_ms = delay_ms > 0 ? delay_ms : 0;
    sl_redact(res->message, sizeof res->message);
}

/* ---- public addresses only ------------------------------------------------ */

static int v4_private(uint32_t a) {
    return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 ||
           (a >> 22) == (100u << 2 | 1) ||           /* 100.64/10 */
           (a >> 16) == (169u << 8 | 254) ||         /* 169.254/16 */
           (a >> 20) == (172u << 4 | 1) ||           /* 172.16/12 */
           (a >> 16) == (192u << 8 | 168) ||         /* 192.168/16 */
           (a >> 8) == (192u << 16 | 0 << 8 | 0) ||  /* 192.0.0/24 */
           (a >> 17) == (198u << 7 | 18 >> 1) ||     /* 198.18/15 */
           (a >> 28) >= 14;                          /* multicast, 240/4 */
}

int sl_http_addr_private(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return v4_private(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family != AF_INET6) return 1;
    const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const unsigned char zero[12] = {0};
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 ||
        memcmp(b, zero, 12) == 0) /* ::a.b.c.d, ::1 and :: included */
        return v4_private((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
                          (uint32_t)b[14] << 8 | b[15]);
    return (b[0] & 0xfe) == 0xfc ||                 /* fc00::/7 */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 */
           b[0] == 0xff;                             /* multicast */
}

/* CURLOPT_OPENSOCKETFUNCTION of public_only requests: the address curl is
 * about to connect to, after DNS, for every connection it opens. */
static curl_socket_t open_public(void *arg, curlsocktype purpose,
                                 struct curl_sockaddr *a) {
    xfer *x = arg;
    (void)purpose;
    if (sl_http_addr_private(&a->addr)) {
        x->refused = 1;
        if (a->family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&a->addr)->sin_addr,
                      x->refused_addr, sizeof x->refused_addr);
        else if (a->family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->addr)->sin6_addr,
                      x->refused_addr, sizeof x->refused_addr);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

static sl_errclass curl_class(CURLcode rc) {
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return SL_EC_TIMEOUT;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT: return SL_EC_INVALID_INPUT;
    case CURLE_TOO_MANY_REDIRECTS: return SL_EC_HTTP_4XX;
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_READ_ERROR: return SL_EC_RETRYABLE;
    default: return SL_EC_CONNECTION;
    }
}

/* ---- the request --------------------------------------------------------- */

static int setup(sl_http *h, const sl_http_req *req, xfer *x,
                 struct curl_slist **hdrs) {
    CURL *c = h->curl;
    const char *method = req->method ? req->method : "GET";
    curl_easy_reset(c);
    h->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sluice/1");
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(req->connect_timeout_ms > 0
                                ? req->connect_timeout_ms
                                : DEFAULT_CONNECT_MS));
    curl_easy_setopt(
        c, CURLOPT_TIMEOUT_MS,
        (long)(req->timeout_ms > 0 ? req->timeout_ms : DEFAULT_TIMEOUT_MS));
    x->low_ms =
        req->low_speed_ms > 0 ? req->low_speed_ms : DEFAULT_LOW_SPEED_MS;
    x->low_bps = req->low_speed_bps > 0 ? req->low_speed_bps : 1L;
    x->win_start = sl_now_ms();
    if (req->follow_redirects) {
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    }
    if (req->public_only) {
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_public);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, x);
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);

    int is_post = strcmp(method, "POST") == 0;
    if (x->fp) {
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, x);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, x);
        if (is_post) {
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                             (curl_off_t)x->body_total);
        } else {
            curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
                             (curl_off_t)x->body_total);
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        }
    } else if (req->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)req->body_len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        if (!is_post) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (is_post)
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }

    /* No "Expect: 100-continue" round trip before a body. */
    struct curl_slist *l = curl_slist_append(NULL, "Expect:");
    if (!l) return -SL_ENOMEM;
    for (const char *const *p = req->headers; p && *p; p++) {
        struct curl_slist *n = curl_slist_append(l, *p);
        if (!n) {
            curl_slist_free_all(l);
            return -SL_ENOMEM;
        }
        l = n;
    }
    *hdrs = l;
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, l);
    return 0;
}

int sl_http_do(sl_http *h, const sl_http_req *req, sl_http_resp *resp,
               sl_result *res) {
    struct curl_slist *hdrs = NULL;
    xfer x;
    int rc = 0;
    memset(&x, 0, sizeof x);
    memset(resp, 0, sizeof *resp);
    resp->retry_after_ms = -1;
    x.req = req;
    x.resp = resp;
    x.max = req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE;

    if (!req->url || (strncmp(req->url, "http://", 7) != 0 &&
                      strncmp(req->url, "https://", 8) != 0)) {
        fail_req(res, req, SL_EC_INVALID_INPUT, 0,
                 "the URL must start with http:// or https://");
        return -SL_EINVAL;
    }
    if (req->body && req->body_file) {
        fail_req(res, req, SL_EC_INTERNAL, 0,
                 "a request body from memory and from a file at once");
        return -SL_EINVAL;
    }
    if (req->body_file) {
        struct stat st;
        x.fp = fopen(req->body_file, "rb");
        if (!x.fp || fstat(fileno(x.fp), &st) != 0 || !S_ISREG(st.st_mode)) {
            int e = x.fp ? EINVAL : errno;
            fail_req(res, req, SL_EC_INVALID_INPUT, 0,
                     "cannot read the request body from %s: %s", req->body_file,
                     strerror(e));
            rc = -SL_EIO;
            goto out;
        }
        x.body_total = (int64_t)st.st_size;
    } else if (req->body) {
        x.body_total = (int64_t)req->body_len;
    }

    rc = setup(h, req, &x, &hdrs);
    if (rc != 0) {
        fail_req(res, req, SL_EC_INTERNAL, 0, "out of memory");
        goto out;
    }
    int64_t t0 = sl_now_ms();
    CURLcode cc = curl_easy_perform(h->curl);
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    sl_metrics_external(req->provider, sl_now_ms() - t0, resp->status);
    /* Forget the header list: it may hold a key, and the handle outlives
     * this call. */
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);

    int64_t ra = parse_retry_after_ms(x.retry_after_ms);
    if (ra < 0)
        ra = sl_http_parse_retry_after(x.retry_after, (int64_t)time(NULL));
    resp->retry_after_ms = ra;

    if (cc != CURLE_OK) {
        rc = -SL_EHTTP;
        if (x.refused) {
            fail_req(res, req, SL_EC_INVALID_INPUT, 0,
                     "refused to connect to %s: a loopback, private, "
                     "link-local or otherwise non-public address",
                     x.refused_addr[0] ? x.refused_addr : "?");
        } else if (x.too_big) {
            fail_req(res, req, SL_EC_INVALID_RESPONSE, 0,
                     "response body larger than %zu bytes", x.max);
        } else if (x.too_slow) {
            fail_req(res, req, SL_EC_TIMEOUT, 0,
                     "transfer stalled: under %ld bytes/s for %lld ms",
                     x.low_bps, (long long)x.low_ms);
        } else if (cc == CURLE_ABORTED_BY_CALLBACK) {
            fail_req(res, req, SL_EC_RETRYABLE, 0, "aborted");
        } else if (cc == CURLE_READ_ERROR && x.fp) {
            fail_req(res, req, SL_EC_RETRYABLE, 0,
                     "reading the request body from %s failed", req->body_file);
        } else {
            fail_req(res, req, curl_class(cc), 0, "%s",
                     h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
        }
        goto out;
    }
    int cls = sl_http_classify(resp->status, resp->body);
    if (cls >= 0) {
        char text[400];
        sl_http_error_text(resp->body, resp->body_len, text, sizeof text);
        int64_t delay =
            ra > 0 && (cls == SL_EC_RATE_LIMITED || cls == SL_EC_HTTP_5XX) ? ra
                                                                           : 0;
        if (delay > 0)
            fail_req(res, req, (sl_errclass)cls, delay,
                     "HTTP %ld (retry after %lld ms)%s%s", resp->status,
                     (long long)delay, text[0] ? ": " : "", text);
        else
            fail_req(res, req, (sl_errclass)cls, 0, "HTTP %ld%s%s",
                     resp->status, text[0] ? ": " : "", text);
        rc = -SL_EHTTP;
    }
out:
    curl_slist_free_all(hdrs);
    if (x.fp) fclose(x.fp);
    return rc;
}

/* ---- JSON --------------------------------------------------------------- */

int sl_http_json(const sl_http_req *req, const sl_http_resp *resp, json_t **out,
                 sl_result *res) {
    json_error_t je;
    *out = NULL;
    if (!resp->body || resp->body_len == 0) {
        fail_req(res, req, SL_EC_INVALID_RESPONSE, 0,
                 "empty response body where JSON was expected");
        return -SL_EHTTP;
    }
    /* "\u0000" is valid JSON: accept it; the sanitiser turns NUL into
     * U+FFFD wherever the text is written. */
    json_t *j = json_loadb(resp->body, resp->body_len, JSON_ALLOW_NUL, &je);
    if (!j) {
        /* jansson reports a premature end when the text stops inside a
         * value: the body was cut short. */
        int truncated = (size_t)je.position >= resp->body_len ||
                        strstr(je.text, "premature end") != NULL;
        fail_req(res, req, SL_EC_INVALID_RESPONSE, 0,
                 "%s JSON in the response (%zu bytes): %s at line %d "
                 "column %d",
                 truncated ? "truncated" : "malformed", resp->body_len, je.text,
                 je.line, je.column);
        return -SL_EHTTP;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        fail_req(res, req, SL_EC_INVALID_RESPONSE, 0,
                 "the response is JSON but not an object");
        return -SL_EHTTP;
    }
    *out = j;
    return 0;
}

/* ---- a handler's `with:` ------------------------------------------------ */

int sl_http_state_init(const sl_stage *stage, void **state, char *err,
                       size_t errlen) {
    (void)stage;
    sl_http *h = NULL;
    if (sl_http_new(&h, err, errlen) != 0) return -1;
    *state = h;
    return 0;
}

void sl_http_state_fini(void *state) {
    sl_http_free(state);
}

int sl_http_with_limits(const json_t *with, int64_t dflt_timeout_ms,
                        sl_http_req *req, char *err, size_t errlen) {
    int rc;
    if ((rc = sl_with_duration(with, "connect_timeout", DEFAULT_CONNECT_MS,
                               &req->connect_timeout_ms, err, errlen)) ||
        (rc = sl_with_duration(with, "request_timeout", dflt_timeout_ms,
                               &req->timeout_ms, err, errlen)) ||
        (rc = sl_with_duration(with, "low_speed_time", DEFAULT_LOW_SPEED_MS,
                               &req->low_speed_ms, err, errlen)))
        return rc;
    json_t *v = json_object_get(with, "max_response");
    req->max_response = DEFAULT_MAX_RESPONSE;
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1024) {
            snprintf(err, errlen,
                     "with.max_response: expected a number of bytes >= 1024");
            return -SL_EINVAL;
        }
        req->max_response = (size_t)json_integer_value(v);
    }
    return 0;
}

int sl_http_stop_check(void *ctx, int64_t sent, int64_t total) {
    (void)sent;
    (void)total;
    return sl_ctx_should_stop(ctx);
}
