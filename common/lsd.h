/* lsd — BEP 14 Local Service Discovery messages as a pure codec.
 *
 * Thread: any.  No I/O, no globals, no logging, no allocation (a parsed
 * message lives in a fixed struct).
 *
 * A message is one UDP datagram sent to 239.192.152.143:6771 (IPv4) or
 * [ff15::efc0:988f]:6771 (IPv6):
 *
 *     BT-SEARCH * HTTP/1.1\r\n
 *     Host: 239.192.152.143:6771\r\n
 *     Port: 6881\r\n
 *     Infohash: <40 hex digits>\r\n      (one line per torrent)
 *     cookie: <opaque token>\r\n         (optional; filters our own)
 *     \r\n
 *     \r\n
 *
 * lsd_build() writes exactly that.  lsd_parse() is what mature clients
 * accept: lines end in CRLF or a bare LF; the request line must be
 * "BT-SEARCH * HTTP/1.1"; header names are case-insensitive, values are
 * trimmed of spaces and tabs; unknown headers are ignored; the header
 * block ends at the first empty line and anything after it is ignored
 * (BEP 14 itself ends messages with two).  Port is required (1..65535,
 * decimal, once); Infohash at least once and at most max_hashes times (a
 * repeated hash counts once); cookie at most once, 1..LSD_COOKIE_MAX
 * visible ASCII bytes; Host at most once (its value is not checked: it
 * only names the group).
 *
 * Error offsets (*reterr_offset) are byte offsets into the datagram: for
 * TOO_LARGE max_size; for TRUNCATED the length; for REQUEST_LINE 0; for
 * LINE_TOO_LONG, HEADER (no colon), DUPLICATE and TOO_MANY the start of
 * the line; for CONTROL the offending byte; for PORT, HASH and COOKIE the
 * start of the value (for a missing Port the end of the header block);
 * for NO_HASH the end of the header block.
 */
#ifndef TD_COMMON_LSD_H
#define TD_COMMON_LSD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define LSD_PORT 6771
#define LSD_GROUP4 "239.192.152.143"
#define LSD_GROUP6 "ff15::efc0:988f"
#define LSD_HASH_LEN 20
#define LSD_MAX_DATAGRAM 1400 /* bytes: fits any path MTU on a LAN */
#define LSD_MAX_HASHES 16     /* info-hashes in one message, both ways */
#define LSD_LINE_MAX 256      /* bytes of one line, without its end */
#define LSD_COOKIE_MAX 64     /* bytes of a cookie */

enum lsd_error {
    LSD_OK = 0,
    LSD_E_TOO_LARGE = -1,     /* the datagram is larger than max_size */
    LSD_E_TRUNCATED = -2,     /* no empty line ends the header block */
    LSD_E_REQUEST_LINE = -3,  /* not "BT-SEARCH * HTTP/1.1" */
    LSD_E_LINE_TOO_LONG = -4, /* a line longer than max_line */
    LSD_E_CONTROL = -5,       /* a NUL or control byte in a line */
    LSD_E_HEADER = -6,        /* a header line without a colon */
    LSD_E_DUPLICATE = -7,     /* Port, Host or cookie given twice */
    LSD_E_PORT = -8,          /* Port missing, not a number, 0 or > 65535 */
    LSD_E_HASH = -9,          /* an Infohash that is not 40 hex digits */
    LSD_E_TOO_MANY = -10,     /* more info-hashes than max_hashes */
    LSD_E_NO_HASH = -11,      /* no Infohash at all */
    LSD_E_COOKIE = -12,       /* an empty, long or non-visible cookie */
    LSD_E_MIN = -13
};

struct lsd_limits {
    size_t max_size;   /* bytes of a datagram, at most LSD_MAX_DATAGRAM */
    size_t max_hashes; /* at most LSD_MAX_HASHES */
    size_t max_line;   /* bytes of one line, at most LSD_LINE_MAX */
};

/* LSD_MAX_DATAGRAM, LSD_MAX_HASHES, LSD_LINE_MAX. */
extern const struct lsd_limits lsd_limits_default;

struct lsd_msg {
    uint16_t port; /* host order, >= 1 */
    size_t n_hashes;
    uint8_t hashes[LSD_MAX_HASHES][LSD_HASH_LEN];
    bool has_cookie;
    char cookie[LSD_COOKIE_MAX + 1]; /* NUL-terminated when has_cookie */
};

/* A static message for an error value; "unknown error" for any other. */
const char *lsd_strerror(int err);

/* Append one announce to out: the Host line names the IPv6 group when
 * ipv6, else the IPv4 one; port >= 1; hashes[0..n) with 1 <= n <=
 * LSD_MAX_HASHES; cookie may be NULL (no cookie line), else 1..
 * LSD_COOKIE_MAX visible ASCII bytes.  Returns 0, -EINVAL for bad
 * arguments, or a buf error (-EMSGSIZE, -ENOMEM); on failure out is left
 * as it was.  The message is at most LSD_MAX_DATAGRAM bytes. */
int lsd_build(struct buf *out, bool ipv6, uint16_t port,
              const uint8_t (*hashes)[LSD_HASH_LEN], size_t n,
              const char *cookie);

/* Parse one datagram.  lim may be NULL for the defaults (larger limits
 * are clamped to the defaults).  Returns 0 with *ret filled, or a
 * negative enum lsd_error with *reterr_offset set (reterr_offset may be
 * NULL); *ret is written only on success. */
int lsd_parse(struct lsd_msg *ret, const void *data, size_t len,
              const struct lsd_limits *lim, size_t *reterr_offset);

#endif
