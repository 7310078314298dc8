#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sl_buf_init(sl_buf *b) {
    b->s = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

void sl_buf_free(sl_buf *b) {
    free(b->s);
    sl_buf_init(b);
}

static int grow(sl_buf *b, size_t extra) {
    if (b->failed) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->failed = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void sl_buf_putn(sl_buf *b, const char *s, size_t n) {
    if (grow(b, n) != 0) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void sl_buf_puts(sl_buf *b, const char *s) { sl_buf_putn(b, s, strlen(s)); }

void sl_buf_printf(sl_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || grow(b, (size_t)n) != 0) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void quoted(sl_buf *b, const char *s, char q) {
    sl_buf_putn(b, &q, 1);
    for (const char *p = s; *p; p++) {
        if (*p == q) sl_buf_putn(b, &q, 1);
        sl_buf_putn(b, p, 1);
    }
    sl_buf_putn(b, &q, 1);
}

void sl_buf_ident(sl_buf *b, const char *ident) { quoted(b, ident, '"'); }
void sl_buf_literal(sl_buf *b, const char *s) { quoted(b, s, '\''); }

int sl_buf_failed(const sl_buf *b) { return b->failed; }

const char *sl_buf_str(const sl_buf *b) { return b->s ? b->s : ""; }

char *sl_buf_steal(sl_buf *b) {
    char *s = b->failed ? NULL : b->s;
    if (!s && !b->failed) s = calloc(1, 1);
    if (b->failed) free(b->s);
    sl_buf_init(b);
    return s;
}
