/* trkserve — the server side of the tracker protocols as pure codecs:
 * HTTP announce and scrape requests in, bencoded answers out (BEP 3, 23,
 * 7, 48), and UDP (BEP 15) requests in, datagrams out.
 *
 * Thread: any.  No I/O, no globals, no logging.
 *
 * The client side (common/tracker.h) shares its peer type (struct
 * tracker_peer), events and UDP constants with this module.
 *
 * HTTP, the fine print:
 * - trkserve_http_parse() reads one request head: "GET target HTTP/1.x",
 *   header lines, an empty line.  Lines end in CRLF or LF.  The head must
 *   fit in lim->max_request bytes (8 KiB by default); until its end is
 *   seen the parse says TRKSERVE_E_TRUNCATED (read more), past the limit
 *   TRKSERVE_E_TOO_LARGE.  Control bytes in the request line, a method
 *   other than GET, a body (Content-Length other than 0, any
 *   Transfer-Encoding) and malformed header lines are errors; header
 *   values are otherwise ignored except "Connection".  The path must be
 *   exactly /announce or /scrape (an absolute-form target
 *   "http://host/announce" is accepted), else TRKSERVE_E_PATH.
 *   trkserve_http_status() maps an error to the status to answer with:
 *   404 for TRKSERVE_E_PATH, 400 for the others.
 * - Query strings are split on '&', each parameter on its first '='.
 *   Values are percent-decoded (%XX, either case; '+' is a plain byte, as
 *   trackers treat it); a '%' without two hex digits is TRKSERVE_E_ESCAPE.
 *   Unknown parameters are ignored; a known one given twice is
 *   TRKSERVE_E_DUPLICATE (except info_hash in a scrape).
 * - Announce: info_hash and peer_id (20 bytes each once decoded) and port
 *   (1..65535) are required; uploaded, downloaded, left are decimal
 *   uint64 in plain digits (absent: 0, and left absent means "unknown":
 *   not a seed);
 *   event is "", started, completed, stopped or paused (BEP 21, taken as
 *   none); compact, no_peer_id are 0 or 1; numwant a decimal int (a
 *   negative one means "the default"); ip (at most TRKSERVE_IP_MAX bytes)
 *   and key (at most TRKSERVE_KEY_MAX bytes) are kept for the caller, who
 *   decides whether to trust ip.
 * - Scrape: 0..lim->max_scrape info_hash parameters of 20 bytes each.
 *
 * UDP (BEP 15): trkserve_udp_parse() reads connect (16 bytes, with the
 * protocol id checked), announce (98 bytes; BEP 41 options after it are
 * ignored) and scrape (16 + 20 n bytes, n = 1..TRACKER_UDP_SCRAPE_MAX)
 * requests.  Connection ids need no state: an id is the first 8 bytes of
 * HMAC-SHA1(secret, time bucket || family || address), so the server
 * recomputes it and accepts the current bucket and the one before (an id
 * lives TRKSERVE_CONN_BUCKET_S to twice that).
 *
 * Errors are negative enum trkserve_error values with trkserve_strerror()
 * and *reterr_offset: the byte offset in the input (the request head, the
 * query string or the datagram) of the offending line, parameter name,
 * value or field; the input's length for TRUNCATED and TOO_LARGE.
 */
#ifndef TD_COMMON_TRKSERVE_H
#define TD_COMMON_TRKSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tracker.h"

struct buf;

enum trkserve_error {
    TRKSERVE_OK = 0,
    TRKSERVE_E_TRUNCATED = -1,    /* incomplete: the head's end, a field */
    TRKSERVE_E_TOO_LARGE = -2,    /* the head passes max_request */
    TRKSERVE_E_REQUEST_LINE = -3, /* not "METHOD target HTTP/x.y" */
    TRKSERVE_E_METHOD = -4,       /* a method other than GET */
    TRKSERVE_E_VERSION = -5,      /* not HTTP/1.0 or HTTP/1.1 */
    TRKSERVE_E_HEADER = -6,       /* a malformed header line */
    TRKSERVE_E_BODY = -7,         /* the request has a body */
    TRKSERVE_E_PATH = -8,         /* neither /announce nor /scrape */
    TRKSERVE_E_ESCAPE = -9,       /* a bad %XX */
    TRKSERVE_E_DUPLICATE = -10,   /* a parameter given twice */
    TRKSERVE_E_MISSING = -11,     /* a required parameter is absent */
    TRKSERVE_E_HASH = -12,        /* an info_hash that is not 20 bytes */
    TRKSERVE_E_PEER_ID = -13,     /* a peer_id that is not 20 bytes */
    TRKSERVE_E_PORT = -14,        /* a port not in 1..65535 */
    TRKSERVE_E_NUMBER = -15,      /* a bad number (uploaded, numwant, ...) */
    TRKSERVE_E_EVENT = -16,       /* an unknown event */
    TRKSERVE_E_VALUE = -17,       /* another bad value (compact, ip, key) */
    TRKSERVE_E_TOO_MANY = -18,    /* more parameters or hashes than allowed */
    TRKSERVE_E_PROTOCOL = -19,    /* UDP connect without the protocol id */
    TRKSERVE_E_ACTION = -20,      /* UDP: an unknown action */
    TRKSERVE_E_NOMEM = -21,
    TRKSERVE_E_MIN = -22
};

struct trkserve_limits {
    size_t max_request;   /* bytes of an HTTP request head */
    uint32_t max_headers; /* header lines */
    uint32_t max_params;  /* query parameters */
    uint32_t max_scrape;  /* info-hashes in one HTTP scrape */
};

/* 8 KiB, 64 headers, 256 parameters, 100 info-hashes. */
extern const struct trkserve_limits trkserve_limits_default;

/* A static message for an error value ("unknown error" for others). */
const char *trkserve_strerror(int err);

#define TRKSERVE_IP_MAX 64
#define TRKSERVE_KEY_MAX 64
#define TRKSERVE_CONN_BUCKET_S 60
#define TRKSERVE_SECRET_LEN 32

/* --- HTTP requests ----------------------------------------------------- */

enum trkserve_kind {
    TRKSERVE_ANNOUNCE,
    TRKSERVE_SCRAPE,
    TRKSERVE_KIND_MAX
};

struct trkserve_http_req {
    enum trkserve_kind kind;
    const char *query;  /* borrowed: into the input, not terminated */
    size_t query_len;   /* 0 when there is none */
    size_t query_off;   /* offset of the query in the input */
    size_t head_len;    /* bytes of the head, with its empty line */
    bool keep_alive;    /* HTTP/1.1 without "Connection: close", or
                           HTTP/1.0 with "Connection: keep-alive" */
};

/* Parse the request head at buf[0..len).  Returns 0 (ret filled, its
 * pointers into buf), or a negative enum trkserve_error with
 * *reterr_offset; TRKSERVE_E_TRUNCATED means "read more". */
int trkserve_http_parse(struct trkserve_http_req *ret, const void *buf,
                        size_t len, const struct trkserve_limits *lim,
                        size_t *reterr_offset);

/* The HTTP status for a refused request: 404 for TRKSERVE_E_PATH, else
 * 400. */
int trkserve_http_status(int err);

struct trkserve_announce {
    uint8_t info_hash[TRACKER_HASH_LEN];
    uint8_t peer_id[TRACKER_PEER_ID_LEN];
    uint16_t port;
    uint64_t uploaded, downloaded, left;
    bool has_left;
    enum tracker_event event;
    bool compact;         /* default true (BEP 23) */
    bool no_peer_id;
    int32_t numwant;      /* -1: not given or negative */
    char ip[TRKSERVE_IP_MAX + 1]; /* as sent, "" when absent */
    uint8_t key[TRKSERVE_KEY_MAX];
    size_t key_len;
};

/* Decode an announce query (the part after '?').  Returns 0 or a
 * negative enum trkserve_error with *reterr_offset into query; ret is
 * written only on success. */
int trkserve_parse_announce(struct trkserve_announce *ret, const char *query,
                            size_t len, const struct trkserve_limits *lim,
                            size_t *reterr_offset);

/* Decode a scrape query: the info-hashes go to hashes (room for max),
 * their count to *ret_n (0: the client asked for everything). */
int trkserve_parse_scrape(uint8_t (*hashes)[TRACKER_HASH_LEN], size_t max,
                          size_t *ret_n, const char *query, size_t len,
                          const struct trkserve_limits *lim,
                          size_t *reterr_offset);

/* Percent-decode in[0..n) into out (room for n bytes).  Returns the
 * decoded length, or TRKSERVE_E_ESCAPE with *reterr_offset. */
int trkserve_url_decode(uint8_t *out, const char *in, size_t n,
                        size_t *reterr_offset);

/* --- HTTP answers ------------------------------------------------------ */

struct trkserve_announce_resp {
    uint32_t interval, min_interval; /* seconds */
    uint64_t complete, incomplete, downloaded;
    const struct tracker_peer *peers; /* borrowed; both families */
    size_t n_peers;
    bool compact;     /* peers (6 bytes each) and peers6 (18, BEP 7) */
    bool no_peer_id;  /* dictionary model without "peer id" */
};

/* Append the bencoded announce answer to out.  Returns 0 or a buf error
 * (-EMSGSIZE, -ENOMEM); out is left as it was on failure. */
int trkserve_announce_body(struct buf *out,
                           const struct trkserve_announce_resp *r);

/* Append d14:failure reason...e.  Same returns. */
int trkserve_failure_body(struct buf *out, const char *reason);

struct trkserve_scrape_file {
    uint8_t info_hash[TRACKER_HASH_LEN];
    uint64_t complete, downloaded, incomplete;
};

/* Append d5:filesd...ee with files sorted by info-hash (files is sorted
 * in place; repeated hashes appear once).  Same returns. */
int trkserve_scrape_body(struct buf *out, struct trkserve_scrape_file *files,
                         size_t n);

/* Append a whole HTTP/1.1 response: status line, Content-Type text/plain,
 * Content-Length, "Connection: close" unless keep_alive, then body.
 * Same returns. */
int trkserve_http_response(struct buf *out, int status, const void *body,
                           size_t body_len, bool keep_alive);

/* --- UDP (BEP 15) ------------------------------------------------------ */

/* An address as the connection id binds it: family and bytes. */
struct trkserve_addr {
    uint8_t family;   /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order; 4 bytes for AF_INET */
};

struct trkserve_udp_req {
    uint32_t action;          /* TRACKER_UDP_CONNECT, _ANNOUNCE, _SCRAPE */
    uint32_t transaction_id;
    uint64_t connection_id;   /* ANNOUNCE, SCRAPE */
    struct trkserve_announce announce; /* ANNOUNCE (ip, key_len: 0) */
    uint32_t ip;              /* ANNOUNCE: the ip field, network order */
    const uint8_t *hashes;    /* SCRAPE: borrowed, n_hashes * 20 bytes */
    size_t n_hashes;
};

/* Parse a request datagram.  Returns 0 or a negative enum trkserve_error
 * with *reterr_offset; ret written only on success.  The connection id is
 * not checked here (trkserve_conn_id_valid()). */
int trkserve_udp_parse(struct trkserve_udp_req *ret, const void *buf,
                       size_t len, size_t *reterr_offset);

/* The connection id for addr in time bucket (seconds /
 * TRKSERVE_CONN_BUCKET_S). */
uint64_t trkserve_conn_id(const uint8_t secret[TRKSERVE_SECRET_LEN],
                          const struct trkserve_addr *addr, uint64_t bucket);

/* True if id was made for addr in the bucket of now_s or the one before. */
bool trkserve_conn_id_valid(const uint8_t secret[TRKSERVE_SECRET_LEN],
                            const struct trkserve_addr *addr, uint64_t now_s,
                            uint64_t id);

#define TRKSERVE_UDP_CONNECT_RESP_LEN 16
#define TRKSERVE_UDP_ANNOUNCE_HEAD_LEN 20
#define TRKSERVE_UDP_SCRAPE_ENTRY_LEN 12
#define TRKSERVE_UDP_ERROR_MAX 200 /* bytes of an error message */

/* Encoders: write into out (out_size bytes) and return the length, or 0
 * when out is too small. */
size_t trkserve_udp_connect_resp(uint8_t *out, size_t out_size,
                                 uint32_t transaction_id,
                                 uint64_t connection_id);
/* Only the peers of family (AF_INET: 6 bytes each, AF_INET6: 18) are
 * written, as many as fit. */
size_t trkserve_udp_announce_resp(uint8_t *out, size_t out_size,
                                  uint32_t transaction_id, uint32_t interval,
                                  uint32_t leechers, uint32_t seeders,
                                  const struct tracker_peer *peers, size_t n,
                                  int family);
size_t trkserve_udp_scrape_resp(uint8_t *out, size_t out_size,
                                uint32_t transaction_id,
                                const struct trkserve_scrape_file *files,
                                size_t n);
/* The message is cut to TRKSERVE_UDP_ERROR_MAX bytes. */
size_t trkserve_udp_error(uint8_t *out, size_t out_size,
                          uint32_t transaction_id, const char *message);

/* --- The allowlist file ------------------------------------------------ */

/* Parse text: one 40-digit hex info-hash per line (either case), blank
 * lines and '#' comments (whole line, or after whitespace) ignored.
 * Hashes go to hashes (room for max), sorted, without repeats; their count
 * to *ret_n.  Returns 0, -EINVAL with *reterr_line (1-based) for a bad
 * line, -E2BIG past max. */
int trkserve_allowlist_parse(uint8_t (*hashes)[TRACKER_HASH_LEN], size_t max,
                             size_t *ret_n, const char *text, size_t len,
                             unsigned *reterr_line);

/* True if hash is in the sorted array (bsearch). */
bool trkserve_allowlist_has(const uint8_t (*hashes)[TRACKER_HASH_LEN],
                            size_t n, const uint8_t *hash);

#endif
