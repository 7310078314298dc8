/* fuzz_web.c - libFuzzer target for what the HTTP API and the CLI take from
 * strangers before any database sees it: subject keys of every key type
 * (model.h sl_key_canon), durations (sl_duration_parse), Authorization
 * headers (webauth.h sl_webauth_role), the cross-site check, and subject
 * tokens (sl_webauth_mint / sl_webauth_check).
 *
 * The input is split at its first two NUL bytes into three fields A, B, C.
 * Properties checked, beyond "no crash, no sanitizer report":
 * - a key accepted for a type has a canonical form that is accepted again
 *   and maps to itself, shorter than SL_KEY_MAX;
 * - a token minted for A verifies for A, not for A with a byte changed,
 *   not with another secret, not after its expiry; B as a token never
 *   verifies for a subject it was not minted for unless it is that token.
 * Run: scripts/fuzz web. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "webauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void keys(const char *a) {
    static const sl_key_type types[] = {SL_KEY_UUID, SL_KEY_BIGINT,
                                        SL_KEY_INTEGER, SL_KEY_TEXT};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char out[SL_KEY_MAX], again[SL_KEY_MAX];
        const char *why = NULL;
        if (sl_key_canon(types[i], a, out, &why) != 0) {
            if (!why || out[0] != '\0') abort();
            continue;
        }
        if (strlen(out) >= SL_KEY_MAX) abort();
        if (sl_key_canon(types[i], out, again, &why) != 0) abort();
        if (strcmp(out, again) != 0) abort();
    }
    int64_t ms = 0;
    if (sl_duration_parse(a, &ms) == 0 && ms < 0) abort();
}

static void tokens(const char *a, const char *b, const char *c) {
    const char *secret = c[0] ? c : "fuzz-secret";
    char tok[SL_WEBAUTH_TOKEN_MAX];
    int64_t now = 1800000000, expiry = now + 60;
    /* B, whatever it is, as a token for A: it may only verify when it is
     * exactly the token minted for A. */
    int rb = sl_webauth_check(secret, a, b, now);
    if (sl_webauth_mint(secret, a, expiry, tok) != 0) {
        if (rb == 0) abort();
        return;
    }
    if (sl_webauth_check(secret, a, tok, now) != 0) abort();
    if (rb == 0 && strcmp(b, tok) != 0) abort();
    if (sl_webauth_check(secret, a, tok, expiry + 1) == 0) abort();
    char other[64];
    memcpy(other, secret, strlen(secret) < 63 ? strlen(secret) : 63);
    other[strlen(secret) < 63 ? strlen(secret) : 63] = '\0';
    other[0] ^= 1;
    if (sl_webauth_check(other, a, tok, now) == 0) abort();
    size_t n = strlen(a);
    if (n > 0 && n < 1024) {
        char *changed = malloc(n + 1);
        if (!changed) return;
        memcpy(changed, a, n + 1);
        changed[n / 2] ^= 0x20;
        if (changed[n / 2] != '\0' &&
            sl_webauth_check(secret, changed, tok, now) == 0)
            abort();
        free(changed);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 3);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = '\0';
    const char *a = buf;
    const char *b = a + strlen(a) + 1;
    if (b > buf + size) b = buf + size + 1;
    const char *c = b + strlen(b) + 1;
    if (c > buf + size + 1) c = buf + size + 2;
    keys(a);
    (void)sl_webauth_role(a);
    (void)sl_webauth_cross_site(a, b, c);
    tokens(a, b, c);
    free(buf);
    return 0;
}
