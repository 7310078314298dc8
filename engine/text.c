/* text.c - the sanitiser and the secret redactor (text.h).
 *
 * One pass over the input writes whole pieces to the output: a
 * "[redacted]" for a secret, a valid character as it is, U+FFFD for an
 * ill-formed sequence or a NUL. A piece that does not fit ends the pass;
 * nothing is ever moved or cut afterwards except back to a piece
 * boundary, so no position or length can write past the buffer.
 */
#include "text.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define MAX_SECRETS 32
#define MIN_SECRET 6   /* shorter values would redact ordinary words */
#define LONG_SECRET 16 /* from this length a secret matches anywhere */

static const char REDACTED[] = "[redacted]";
static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */
static const char ELLIPSIS[] = "\xE2\x80\xA6";    /* U+2026 */

typedef struct secret {
    char *s;
    size_t len;
} secret;

static secret secrets[MAX_SECRETS];
static int nsecrets;
static unsigned char first_byte[256]; /* non-zero: some secret starts so */
static pthread_rwlock_t secrets_lock = PTHREAD_RWLOCK_INITIALIZER;

/* ---- the secrets ---------------------------------------------------------- */

static int is_secret_name(const char *name, size_t len) {
    static const char *const marks[] = {"API_KEY", "TOKEN", "SECRET",
                                        "PASSWORD"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        size_t ml = strlen(marks[i]);
        for (size_t j = 0; j + ml <= len; j++)
            if (memcmp(name + j, marks[i], ml) == 0) return 1;
    }
    return 0;
}

void sl_redact_reload(void) {
    pthread_rwlock_wrlock(&secrets_lock);
    for (int i = 0; i < nsecrets; i++) free(secrets[i].s);
    nsecrets = 0;
    memset(first_byte, 0, sizeof first_byte);
    for (char **e = environ; e && *e && nsecrets < MAX_SECRETS; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || strlen(eq + 1) < MIN_SECRET) continue;
        if (!is_secret_name(*e, (size_t)(eq - *e))) continue;
        char *s = strdup(eq + 1);
        if (!s) break;
        secrets[nsecrets].s = s;
        secrets[nsecrets].len = strlen(s);
        first_byte[(unsigned char)s[0]] = 1;
        nsecrets++;
    }
    pthread_rwlock_unlock(&secrets_lock);
}

/* ---- matching ------------------------------------------------------------- */

static int is_word(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c >= 'a' && c <= 'z') || c == '_';
}

static int secret_at(const secret *k, const char *src, size_t len, size_t i) {
    return k->len <= len - i && src[i] == k->s[0] &&
           memcmp(src + i, k->s, k->len) == 0;
}

/* Non-zero when a long secret starts at src[i] (it becomes "[redacted]",
 * which a short secret before it may end against). */
static int long_secret_at(const char *src, size_t len, size_t i) {
    if (i >= len || !first_byte[(unsigned char)src[i]]) return 0;
    for (int k = 0; k < nsecrets; k++)
        if (secrets[k].len >= LONG_SECRET && secret_at(&secrets[k], src, len, i))
            return 1;
    return 0;
}

/* The length of the longest secret to redact at src[i], 0 for none.
 * prev_word: the last byte written out is a word character. Called with
 * the lock held. */
static size_t match_at(const char *src, size_t len, size_t i, int prev_word) {
    size_t best = 0;
    if (!first_byte[(unsigned char)src[i]]) return 0;
    for (int k = 0; k < nsecrets; k++) {
        const secret *s = &secrets[k];
        if (s->len <= best || !secret_at(s, src, len, i)) continue;
        if (s->len < LONG_SECRET) {
            /* A short secret inside a longer word is that word. */
            if (prev_word && is_word((unsigned char)s->s[0])) continue;
            size_t end = i + s->len;
            if (end < len && is_word((unsigned char)s->s[s->len - 1]) &&
                is_word((unsigned char)src[end]) &&
                !long_secret_at(src, len, end))
                continue;
        }
        best = s->len;
    }
    return best;
}

/* ---- UTF-8 ---------------------------------------------------------------- */

/* The length (1..4) of the valid character at s (n bytes available), or
 * 0 when it is ill-formed or NUL; then *bad is the length of its maximal
 * ill-formed prefix (at least 1), which becomes one U+FFFD. */
static size_t utf8_char(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    *bad = 1;
    if (c >= 0x01 && c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c == 0xE0) {
        need = 3;
        lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
        need = 3;
    } else if (c == 0xED) { /* no UTF-16 surrogates */
        need = 3;
        hi = 0x9F;
    } else if (c == 0xF0) {
        need = 4;
        lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
        need = 4;
    } else if (c == 0xF4) { /* nothing past U+10FFFF */
        need = 4;
        hi = 0x8F;
    } else {
        return 0; /* NUL, a continuation byte, C0, C1, F5..FF */
    }
    size_t k = 1;
    while (k < need && k < n) {
        unsigned b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
        k++;
    }
    if (k == need) return need;
    *bad = k;
    return 0;
}

int sl_text_valid(const char *s, size_t len) {
    size_t i = 0, bad;
    while (i < len) {
        size_t cl = utf8_char((const unsigned char *)s + i, len - i, &bad);
        if (!cl) return 0;
        i += cl;
    }
    return 1;
}

/* ---- the sanitiser -------------------------------------------------------- */

size_t sl_text_copy(char *dst, size_t cap, const char *src, size_t len) {
    if (cap == 0) return 0;
    const size_t hard = cap - 1;
    const size_t mark = sizeof ELLIPSIS - 1;
    /* Room for "…" when the text must be cut (not in tiny buffers). */
    const size_t soft = hard > mark ? hard - mark : 0;
    size_t o = 0, i = 0, keep = SIZE_MAX;
    int cut = 0;

    pthread_rwlock_rdlock(&secrets_lock);
    while (i < len) {
        const char *piece;
        size_t pl, adv, bad;
        size_t m = nsecrets ? match_at(src, len, i,
                                       o > 0 && is_word((unsigned char)dst[o - 1]))
                            : 0;
        if (m) {
            piece = REDACTED;
            pl = sizeof REDACTED - 1;
            adv = m;
        } else if ((pl = utf8_char((const unsigned char *)src + i, len - i,
                                   &bad)) != 0) {
            piece = src + i;
            adv = pl;
        } else {
            piece = REPLACEMENT;
            pl = sizeof REPLACEMENT - 1;
            adv = bad;
        }
        if (keep == SIZE_MAX && o + pl > soft) keep = o;
        if (o + pl > hard) {
            cut = 1;
            break;
        }
        memcpy(dst + o, piece, pl);
        o += pl;
        i += adv;
    }
    pthread_rwlock_unlock(&secrets_lock);

    if (cut && soft > 0) {
        /* keep <= soft: the pieces up to keep and the mark fit. */
        o = keep;
        memcpy(dst + o, ELLIPSIS, mark);
        o += mark;
    }
    dst[o] = '\0';
    return o;
}

char *sl_text_dup(const char *src, size_t len, size_t max) {
    /* Each input byte yields at most 3 output bytes (U+FFFD); a secret
     * (>= 6 bytes) yields 10. */
    if (len > (SIZE_MAX - 1) / 3) return NULL;
    size_t cap = len * 3;
    if (max && max < cap) cap = max;
    cap += 1;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t n = sl_text_copy(out, cap, src, len);
    if (n + 1 < cap) {
        char *shrunk = realloc(out, n + 1);
        if (shrunk) out = shrunk;
    }
    return out;
}

size_t sl_text_vformat(char *dst, size_t cap, const char *fmt, va_list ap) {
    char small[1024];
    va_list aq;
    if (cap == 0) return 0;
    va_copy(aq, ap);
    int n = vsnprintf(small, sizeof small, fmt, aq);
    va_end(aq);
    if (n < 0) {
        dst[0] = '\0';
        return 0;
    }
    if ((size_t)n < sizeof small) return sl_text_copy(dst, cap, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) /* shortened, but still made safe */
        return sl_text_copy(dst, cap, small, sizeof small - 1);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    size_t w = sl_text_copy(dst, cap, big, (size_t)n);
    free(big);
    return w;
}

size_t sl_text_format(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t n = sl_text_vformat(dst, cap, fmt, ap);
    va_end(ap);
    return n;
}

void sl_redact(char *buf, size_t cap) {
    char small[2048];
    if (cap == 0) return;
    size_t len = strnlen(buf, cap);
    char *tmp = len <= sizeof small ? small : malloc(len);
    if (!tmp) {
        /* Never let a secret through for want of memory. */
        snprintf(buf, cap, "[text withheld: out of memory]");
        return;
    }
    memcpy(tmp, buf, len);
    sl_text_copy(buf, cap, tmp, len);
    if (tmp != small) free(tmp);
}

char *sl_redact_dup(const char *s) { return sl_text_dup(s, strlen(s), 0); }

/* ---- JSON ------------------------------------------------------------------ */

/* Non-zero when the real x does not read back from 15 digits. */
static int needs_17_digits(double x) {
    char b[40];
    snprintf(b, sizeof b, "%.15g", x);
    return strtod(b, NULL) != x;
}

static json_t *safe_string(const char *s, size_t len) {
    char *c = sl_text_dup(s, len, 0);
    if (!c) return NULL;
    json_t *j = json_stringn_nocheck(c, strlen(c));
    free(c);
    return j;
}

/* The safe deep copy; sets *wide when a real needs 17 digits. */
static json_t *safe_json(const json_t *v, int *wide) {
    switch (json_typeof(v)) {
    case JSON_STRING:
        return safe_string(json_string_value(v), json_string_length(v));
    case JSON_REAL:
        if (needs_17_digits(json_real_value(v))) *wide = 1;
        return json_real(json_real_value(v));
    case JSON_OBJECT: {
        json_t *o = json_object();
        const char *k;
        size_t kl;
        json_t *e;
        if (!o) return NULL;
        json_object_keylen_foreach((json_t *)v, k, kl, e) {
            char *ck = sl_text_dup(k, kl, 0);
            json_t *ce = safe_json(e, wide);
            if (!ck || !ce || json_object_set_new_nocheck(o, ck, ce) != 0) {
                if (!ck) json_decref(ce);
                free(ck);
                json_decref(o);
                return NULL;
            }
            free(ck);
        }
        return o;
    }
    case JSON_ARRAY: {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        if (!a) return NULL;
        json_array_foreach(v, i, e) {
            if (json_array_append_new(a, safe_json(e, wide)) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    default: return json_copy((json_t *)v);
    }
}

json_t *sl_text_json(const json_t *v) {
    int wide = 0;
    return v ? safe_json(v, &wide) : NULL;
}

char *sl_text_json_dumps(const json_t *v, size_t flags) {
    int wide = 0;
    if (!v) return NULL;
    json_t *c = safe_json(v, &wide);
    if (!c) return NULL;
    char *s = json_dumps(c, (flags & ~(size_t)JSON_REAL_PRECISION(31)) |
                                JSON_REAL_PRECISION(wide ? 17 : 15));
    json_decref(c);
    return s;
}
