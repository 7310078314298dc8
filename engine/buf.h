/* buf.h - a growable string buffer for building SQL and text.
 *
 * Allocation failure is sticky: after one, every append is a no-op and
 * sl_buf_failed() is true, so callers check once at the end. The buffer
 * owns its memory (sl_buf_free); sl_buf_steal hands it to the caller.
 */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stddef.h>

typedef struct sl_buf {
    char *s;
    size_t len, cap;
    int failed;
} sl_buf;

void sl_buf_init(sl_buf *b);
void sl_buf_free(sl_buf *b);
void sl_buf_puts(sl_buf *b, const char *s);
void sl_buf_putn(sl_buf *b, const char *s, size_t n);
void sl_buf_printf(sl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends an SQL identifier, double-quoted with embedded quotes doubled. */
void sl_buf_ident(sl_buf *b, const char *ident);
/* Appends an SQL string literal, single-quoted with quotes doubled (only
 * for DDL constants such as NOTIFY channel names; values are parameters). */
void sl_buf_literal(sl_buf *b, const char *s);
int sl_buf_failed(const sl_buf *b);
/* The string (never NULL after init; "" when empty). */
const char *sl_buf_str(const sl_buf *b);
/* Hands the malloc'd string to the caller (NULL on failure); resets b. */
char *sl_buf_steal(sl_buf *b);

#endif
