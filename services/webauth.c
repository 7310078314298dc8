/* webauth.c - tokens and the cross-site rule (webauth.h). */
#include "webauth.h"

#include <assert.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

/* Compares a and b without leaking where they differ (the lengths are not
 * secret). */
static int same(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la && i < lb; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static int matches_env(const char *token, const char *var) {
    const char *want = getenv(var);
    return want && want[0] && same(token, want);
}

sl_web_role sl_webauth_role(const char *authorization) {
    static const char bearer[] = "Bearer ";
    if (!authorization ||
        strncasecmp(authorization, bearer, sizeof bearer - 1) != 0)
        return SL_WEB_NONE;
    const char *t = authorization + sizeof bearer - 1;
    while (*t == ' ')
        t++;
    if (!*t) return SL_WEB_NONE;
    if (matches_env(t, "SLUICE_ADMIN_TOKEN")) return SL_WEB_ADMIN;
    if (matches_env(t, "SLUICE_READ_TOKEN")) return SL_WEB_READ;
    return SL_WEB_NONE;
}

int sl_webauth_cross_site(const char *sec_fetch_site, const char *origin,
                          const char *host) {
    if (sec_fetch_site)
        return strcmp(sec_fetch_site, "same-origin") != 0 &&
               strcmp(sec_fetch_site, "none") != 0;
    if (!origin) return 0;
    /* "null" (sandboxed frames, file:) is never this server. */
    const char *p = strstr(origin, "://");
    if (!p || !host) return 1;
    return strcmp(p + 3, host) != 0;
}

/* hex(HMAC-SHA256(secret, subject "|" expiry)) into hex (65 bytes). */
static int sign(const char *secret, const char *subject, const char *expiry,
                char hex[65]) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s|%s", subject, expiry);
    if (n < 0 || (size_t)n >= sizeof msg) return -SL_EINVAL;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret),
              (const unsigned char *)msg, (size_t)n, mac, &maclen) ||
        maclen != 32)
        return -SL_EINVAL;
    for (unsigned i = 0; i < maclen; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    return 0;
}

int sl_webauth_subject_text(const sl_pipeline *p, const char *key, char *out,
                            size_t n) {
    assert(p && p->has_subject && key && out && n > 0);
    int w = p->subject.key_type == SL_KEY_UUID
                ? snprintf(out, n, "%s", key)
                : snprintf(out, n, "%s/%s", p->name, key);
    if (w < 0 || (size_t)w >= n) {
        out[0] = '\0';
        return -SL_EINVAL;
    }
    return 0;
}

int sl_webauth_mint(const char *secret, const char *subject, int64_t expiry,
                    char *out) {
    assert(out);
    if (!secret || !secret[0] || !subject || !subject[0]) return -SL_EINVAL;
    char exp[24], hex[65];
    snprintf(exp, sizeof exp, "%" PRId64, expiry);
    int rc = sign(secret, subject, exp, hex);
    if (rc != 0) return rc;
    snprintf(out, SL_WEBAUTH_TOKEN_MAX, "%s.%s", exp, hex);
    return 0;
}

int sl_webauth_check(const char *secret, const char *subject, const char *token,
                     int64_t now) {
    if (!secret || !secret[0] || !subject || !token) return -SL_EINVAL;
    const char *dot = strchr(token, '.');
    if (!dot || dot == token || dot - token > 20) return -SL_EINVAL;
    char exp[24], hex[65];
    memcpy(exp, token, (size_t)(dot - token));
    exp[dot - token] = '\0';
    char *end;
    long long e = strtoll(exp, &end, 10);
    if (*end || exp[0] == '-') return -SL_EINVAL;
    if (sign(secret, subject, exp, hex) != 0) return -SL_EINVAL;
    if (!same(dot + 1, hex)) return -SL_EINVAL;
    return e <= now ? -SL_EREFUSED : 0;
}
