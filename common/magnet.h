/* magnet — magnet URIs: parse and print.
 *
 * Thread: any.  No I/O, no globals, no logging.
 *
 * Understood parameters: xt=urn:btih: (40 hex digits or 32 base32
 * characters), xt=urn:btmh: (a v2 multihash, 1220 + 64 hex digits), dn,
 * tr (several), ws (several), x.pe (several, host:port), so (BEP 53 file
 * indices and ranges).  Values are percent-decoded ('+' is a space in dn).
 * At least one of btih or btmh is required.  Unknown parameters are
 * ignored, as mature clients do; conflicting repeats of single-valued
 * parameters (two different dn, btih or btmh) are refused.
 *
 * The fine print of magnet_parse():
 * - The scheme "magnet:" is matched without regard to case and must be
 *   followed by '?'.  Parameters are separated by '&'; empty ones ("&&")
 *   are skipped; one without '=' or with an empty name is MAGNET_E_SYNTAX.
 *   A NUL byte anywhere in the URI is MAGNET_E_SYNTAX.
 * - Parameter names are case-sensitive.  "xt" may also be written "xt.1",
 *   "xt.2", ... and "tr" as "tr.1", ... (BEP 9, and what clients emit).
 * - Every value of a known parameter is percent-decoded: '%' must be
 *   followed by two hex digits (either case) and may not decode to NUL
 *   (MAGNET_E_ESCAPE).  Values of unknown parameters are not looked at.
 * - xt: the "urn:btih:"/"urn:btmh:" prefix and the hex digits are matched
 *   without regard to case; base32 is RFC 4648 (either case, no padding).
 *   An xt of another namespace (urn:sha1:, urn:ed2k:, ...) is ignored.  The
 *   same btih or btmh twice is fine; two different ones are
 *   MAGNET_E_DUPLICATE.
 * - dn: two different non-empty values are MAGNET_E_DUPLICATE; an empty
 *   dn is as if absent.  Empty tr and ws values are skipped.
 * - x.pe: "host:port", host a DNS name or dotted IPv4 ([A-Za-z0-9._-],
 *   at most 253 bytes) or a bracketed IPv6 address, port 1-65535.
 * - so: a comma-separated list of "N" and "N-M" (N <= M, decimal,
 *   uint32_t).  Several so parameters add up.  No sorting or merging.
 * - Limits: the whole URI is at most max_uri bytes, each decoded value at
 *   most max_value bytes (MAGNET_E_TOO_LONG); tr, ws, x.pe and so ranges at
 *   most max_list each (MAGNET_E_TOO_MANY).  Memory is allocated only for
 *   what is kept, so it stays within those limits.
 *
 * Error offsets (*reterr_offset) are byte offsets into the URI:
 *   SCHEME     the first byte that does not match "magnet:?"
 *   SYNTAX     the start of the parameter, or the NUL byte
 *   ESCAPE     the '%' of the bad escape
 *   BTIH BTMH PEER SELECT   the start of the (raw) value
 *   DUPLICATE  the start of the second parameter
 *   TOO_LONG   max_uri for the URI; for a value, the byte where the
 *              decoded value went over max_value
 *   TOO_MANY   the start of the parameter that went over max_list
 *   NO_HASH    len (the end)
 *   NOMEM      somewhere in the parameter being parsed
 */
#ifndef TD_COMMON_MAGNET_H
#define TD_COMMON_MAGNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

enum magnet_error {
    MAGNET_OK = 0,
    MAGNET_E_SCHEME = -1,       /* does not start with "magnet:?" */
    MAGNET_E_SYNTAX = -2,       /* a parameter without '=' ... */
    MAGNET_E_ESCAPE = -3,       /* a bad %XX escape */
    MAGNET_E_NO_HASH = -4,      /* neither btih nor btmh */
    MAGNET_E_BTIH = -5,         /* btih is not 40 hex / 32 base32 */
    MAGNET_E_BTMH = -6,         /* btmh is not a sha2-256 multihash */
    MAGNET_E_DUPLICATE = -7,    /* two different btih, two dn, ... */
    MAGNET_E_PEER = -8,         /* x.pe is not host:port */
    MAGNET_E_SELECT = -9,       /* so is not a list of indices/ranges */
    MAGNET_E_TOO_LONG = -10,    /* the URI or a value is over the limit */
    MAGNET_E_TOO_MANY = -11,    /* more tr/ws/x.pe/so than the limit */
    MAGNET_E_NOMEM = -12,
    MAGNET_E_MIN = -13
};

struct magnet_limits {
    size_t max_uri;        /* bytes of the whole URI */
    size_t max_value;      /* bytes of one decoded value */
    uint32_t max_list;     /* tr, ws, x.pe, so ranges: each */
};

/* Defaults: 64 KiB URI, 4 KiB values, 200 items per list. */
extern const struct magnet_limits magnet_limits_default;

struct magnet_range {
    uint32_t first, last;  /* inclusive file indices */
};

struct magnet {
    bool has_btih;
    uint8_t btih[20];
    bool has_btmh;
    uint8_t btmh[32];      /* the SHA-256 digest, without the 0x1220 */
    char *dn;              /* owned or NULL: display name, decoded */
    char **tr;             /* owned: tracker URLs, decoded */
    size_t n_tr;
    char **ws;             /* owned: web seed URLs */
    size_t n_ws;
    char **peers;          /* owned: x.pe "host:port" strings */
    size_t n_peers;
    struct magnet_range *so; /* owned: BEP 53 select-only ranges */
    size_t n_so;
};

/* Parse uri[0..len) into ret (uri need not be NUL-terminated).  lim may be
 * NULL for magnet_limits_default.  Returns 0 or a negative enum
 * magnet_error with *reterr_offset (if not NULL) the byte offset of the
 * problem (see above).  ret and *reterr_offset are written only on success
 * and failure respectively; ret then owns its strings and arrays: free them
 * with magnet_release().  Allocates nothing that outlives a failure. */
int magnet_parse(struct magnet *ret, const char *uri, size_t len,
                 const struct magnet_limits *lim, size_t *reterr_offset);

/* Free what magnet_parse() allocated and zero *m; accepts NULL and a
 * zeroed struct, so calling it twice is harmless. */
void magnet_release(struct magnet *m);

/* Append the canonical URI for m to out:
 *   magnet:?xt=urn:btih:<40 lowercase hex>[&xt=urn:btmh:1220<64 hex>]
 *   [&dn=..][&tr=..]...[&ws=..]...[&x.pe=..]...[&so=0,2,4-6]
 * (with only a btmh, that xt comes first).  dn, tr, ws and x.pe values
 * keep RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~) and encode
 * every other byte as %XX (upper-case hex; a space is %20, never '+').
 * For any struct that magnet_parse() made, magnet_parse() of the result
 * (with a max_uri that allows for the escapes) gives back an equal struct
 * and magnet_format() the same bytes.  A struct built by hand must hold
 * what the parser would accept (non-NULL, non-empty strings, valid x.pe)
 * for that to hold; it is printed as it is, without checks.
 * Returns 0, -EINVAL if m has neither btih nor btmh, or a negative errno
 * from buf (-EMSGSIZE past out's cap, -ENOMEM); on failure out is left as
 * it was. */
int magnet_format(const struct magnet *m, struct buf *out);

/* Do a and b hold the same hashes, dn, and lists (same items, same order)?
 * Used to check that magnet_format() and magnet_parse() round-trip. */
bool magnet_equal(const struct magnet *a, const struct magnet *b);

/* A static message for an error value; "unknown error" for any other. */
const char *magnet_strerror(int err);

#endif
