/* magnet — magnet URIs: parse and print.
 *
 * Thread: any.  No I/O, no globals, no logging.
 *
 * Understood parameters: xt=urn:btih: (40 hex digits or 32 base32
 * characters), xt=urn:btmh: (a v2 multihash, 1220 + 64 hex digits), dn,
 * tr (several), ws (several), x.pe (several, host:port), so (BEP 53 file
 * indices and ranges).  Values are percent-decoded ('+' is a space in dn).
 * At least one of btih or btmh is required.  Unknown parameters are
 * ignored, as mature clients do; repeated single-valued parameters (dn, a
 * second btih) are refused.
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

/* Parse uri[0..len) into ret.  Returns 0 or a negative enum magnet_error
 * with *reterr_offset (if not NULL) the byte offset of the problem.  ret is
 * written only on success; free it with magnet_release(). */
int magnet_parse(struct magnet *ret, const char *uri, size_t len,
                 const struct magnet_limits *lim, size_t *reterr_offset);

/* Free what magnet_parse() allocated; accepts a zeroed struct. */
void magnet_release(struct magnet *m);

/* Append the canonical URI for m to out: xt (btih as hex, then btmh), dn,
 * tr, ws, x.pe, so, each percent-encoded where needed.  Returns 0 or a
 * negative errno from buf. */
int magnet_format(const struct magnet *m, struct buf *out);

/* A static message for an error value. */
const char *magnet_strerror(int err);

#endif
