/* buf — a growable byte buffer with a built-in size cap.
 *
 * Thread: any (one buffer per thread at a time).  No I/O, no logging.
 *
 * Every append checks the cap first, so a buffer fed from outside input can
 * never grow past what its owner allowed (curl's dynbuf, OpenSSH's sshbuf).
 * The data is kept NUL-terminated for convenience; the terminator is not
 * counted in len.
 */
#ifndef TD_COMMON_BUF_H
#define TD_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;  /* owned; NULL until the first append */
    size_t len;  /* bytes in use */
    size_t size; /* bytes allocated */
    size_t cap;  /* the most len may ever be */
};

/* Start an empty buffer that may hold at most cap bytes. */
void buf_init(struct buf *b, size_t cap);

/* Free the data; the buffer is empty (same cap) and may be used again. */
void buf_release(struct buf *b);

/* Forget the contents, keep the memory. */
void buf_reset(struct buf *b);

/* Append n bytes.  Returns 0, -EMSGSIZE past the cap (nothing appended),
 * or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);

/* Append one byte / a C string / formatted text (same errors). */
int buf_putc(struct buf *b, char c);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Make room for n more bytes without changing len (same errors). */
int buf_reserve(struct buf *b, size_t n);

/* A NUL-terminated copy of n bytes that need not be NUL-terminated
 * themselves (strndup() may read past them looking for one).  For free();
 * NULL when out of memory. */
char *buf_memdup0(const void *p, size_t n);

/* Hand the data to the caller (who frees it) and leave b empty.  Returns
 * NULL for a buffer that never held anything. */
char *buf_steal(struct buf *b, size_t *ret_len);

#endif
