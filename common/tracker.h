/* tracker — the BitTorrent tracker protocols as pure codecs: HTTP announce
 * and scrape (BEP 3, 23, 7, 48) and UDP (BEP 15).
 *
 * Thread: any.  No I/O, no globals, no logging.
 *
 * HTTP: tracker_http_announce_url() and tracker_http_scrape_url() build the
 * request URLs; tracker_parse_announce() and tracker_parse_scrape() read
 * the bencoded answers.  UDP: tracker_udp_*_req() encode the requests into
 * a caller's buffer, tracker_udp_peek() reads action and transaction id of
 * a datagram (to find its request), tracker_udp_parse() decodes it.
 * tracker_udp_url_parse() splits "udp://host:port/...".
 *
 * The fine print of the parsers:
 * - A "failure reason" (HTTP) or an error datagram (UDP action 3) is a
 *   tracker's valid answer, not a parse error: the parse returns 0 with
 *   resp->failure set, and nothing else of the answer is read.
 * - Messages (failure reason, warning message, UDP error text) are copied
 *   with NUL and other control bytes, and bytes that are not valid UTF-8,
 *   replaced by '?', and cut to at most max_message bytes without
 *   splitting a character.
 * - HTTP: the body must be one bencoded dictionary; bytes after it are
 *   ignored and unsorted keys accepted (what mature clients do).  Integers
 *   that are absent are -1 in the result; present ones must be integers
 *   (interval, min interval >= 0; complete, incomplete, downloaded >= 0),
 *   else TRACKER_E_FIELD at the value.  "peers" is either a compact string
 *   (6 bytes a peer) or a list of dictionaries with "ip" (string) and
 *   "port" (integer 0..65535) and an optional 20-byte "peer id"; "peers6"
 *   is a compact string of 18 bytes a peer.  A dictionary peer whose ip is
 *   not a numeric IPv4 or IPv6 address (a host name) is skipped and counted
 *   in n_skipped, as is any peer with port 0.  Peers past max_peers:
 *   TRACKER_E_TOO_MANY.
 * - Scrape: "files" is a dictionary keyed by 20-byte info-hashes, each
 *   value a dictionary with optional complete, downloaded, incomplete.
 *   A missing "files" is an empty answer.
 * - UDP: responses are checked for length, action and transaction id.
 *   Peers are 6 bytes each on an IPv4 socket and 18 on an IPv6 socket
 *   (BEP 15 "IPv6"), chosen by the family argument.
 *
 * Error offsets (*reterr_offset) are byte offsets into the input: for
 * BENCODE the decoder's offset, for FIELD/PEERS/PEER/HASH the start of the
 * offending value, for TOO_MANY the start of the first peer or file past
 * the limit, for TOO_LARGE max_size, for TRUNCATED the length, for ACTION
 * and TRANSACTION the field (0 and 4).
 */
#ifndef TD_COMMON_TRACKER_H
#define TD_COMMON_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

enum tracker_error {
    TRACKER_OK = 0,
    TRACKER_E_BENCODE = -1,     /* the body is not valid bencode */
    TRACKER_E_NOT_DICT = -2,    /* the body is not a dictionary */
    TRACKER_E_FIELD = -3,       /* a known key with a wrong type or value */
    TRACKER_E_PEERS = -4,       /* compact peers not a multiple of 6/18 */
    TRACKER_E_PEER = -5,        /* a malformed peer dictionary */
    TRACKER_E_HASH = -6,        /* a scrape key that is not 20 bytes */
    TRACKER_E_TOO_MANY = -7,    /* more peers or files than the limit */
    TRACKER_E_TOO_LARGE = -8,   /* the body is larger than max_size */
    TRACKER_E_TRUNCATED = -9,   /* UDP: shorter than its fixed part */
    TRACKER_E_ACTION = -10,     /* UDP: not the action asked for */
    TRACKER_E_TRANSACTION = -11,/* UDP: another transaction id */
    TRACKER_E_URL = -12,        /* not a usable tracker URL */
    TRACKER_E_NOMEM = -13,
    TRACKER_E_MIN = -14
};

struct tracker_limits {
    size_t max_size;      /* bytes of an HTTP body or UDP datagram */
    uint32_t max_peers;   /* peers + peers6 of one answer */
    uint32_t max_files;   /* entries of a scrape answer */
    size_t max_message;   /* bytes kept of a failure/warning message */
};

/* Defaults: 2 MiB, 10000 peers, 1000 scrape files, 1 KiB messages. */
extern const struct tracker_limits tracker_limits_default;

/* Announce events, numbered as in BEP 15. */
enum tracker_event {
    TRACKER_EVENT_NONE = 0,
    TRACKER_EVENT_COMPLETED = 1,
    TRACKER_EVENT_STARTED = 2,
    TRACKER_EVENT_STOPPED = 3,
    TRACKER_EVENT_MAX
};

/* "started", "completed", "stopped", or "" for NONE. */
const char *tracker_event_name(enum tracker_event ev);

#define TRACKER_HASH_LEN 20
#define TRACKER_PEER_ID_LEN 20
#define TRACKER_TRACKER_ID_MAX 256  /* longest tracker id we keep */

struct tracker_announce_req {
    uint8_t info_hash[TRACKER_HASH_LEN];
    uint8_t peer_id[TRACKER_PEER_ID_LEN];
    uint16_t port;
    uint64_t uploaded, downloaded, left;
    enum tracker_event event;
    int32_t numwant;        /* < 0: leave it to the tracker */
    uint32_t key;
    const uint8_t *tracker_id; /* borrowed, or NULL */
    size_t tracker_id_len;
};

struct tracker_peer {
    uint8_t family;         /* AF_INET or AF_INET6 */
    bool has_id;
    uint16_t port;          /* host order */
    uint8_t addr[16];       /* network order; 4 bytes for AF_INET */
    uint8_t id[TRACKER_PEER_ID_LEN]; /* when has_id */
};

struct tracker_announce_resp {
    char *failure;          /* owned or NULL: the tracker refused */
    char *warning;          /* owned or NULL */
    uint8_t *tracker_id;    /* owned or NULL (binary) */
    size_t tracker_id_len;
    int64_t interval;       /* seconds; -1 when absent */
    int64_t min_interval;   /* seconds; -1 when absent */
    int64_t complete;       /* seeders; -1 when absent */
    int64_t incomplete;     /* leechers; -1 when absent */
    int64_t downloaded;     /* -1 when absent */
    struct tracker_peer *peers; /* owned */
    size_t n_peers;
    size_t n_skipped;       /* peers that were not usable */
};

struct tracker_scrape_file {
    uint8_t info_hash[TRACKER_HASH_LEN];
    int64_t complete, downloaded, incomplete; /* -1 when absent */
};

struct tracker_scrape_resp {
    char *failure;          /* owned or NULL */
    struct tracker_scrape_file *files; /* owned */
    size_t n_files;
};

/* Free what a parse allocated and zero the struct; accept NULL and zeroed
 * structs. */
void tracker_announce_resp_release(struct tracker_announce_resp *r);
void tracker_scrape_resp_release(struct tracker_scrape_resp *r);

/* A static message for an error value; "unknown error" for any other. */
const char *tracker_strerror(int err);

/* --- HTTP --- */

/* Append to out the announce URL: announce_url with the query
 * info_hash, peer_id, port, uploaded, downloaded, left, compact=1,
 * [event], [numwant], key (8 hex digits), [trackerid].  Binary values are
 * percent-encoded byte by byte (RFC 3986 unreserved bytes stay, all others
 * become %XX, upper-case).  The query is joined with '?' or, when the URL
 * already has a query, with '&'; a fragment ("#...") is dropped.  Returns 0,
 * -EINVAL for an URL that is not http:// or https://, or a buf error
 * (-EMSGSIZE, -ENOMEM); on failure out is left as it was. */
int tracker_http_announce_url(struct buf *out, const char *announce_url,
                              const struct tracker_announce_req *req);

/* Append to out the scrape URL of announce_url (BEP 48: the last path
 * component must begin with "announce", which becomes "scrape"; the rest
 * and the query are kept) with one info_hash parameter per hash (n may be
 * 0: scrape everything).  Returns 0, -ENOENT when the tracker has no scrape
 * URL, -EINVAL for an URL that is not http(s), or a buf error; on failure
 * out is left as it was. */
int tracker_http_scrape_url(struct buf *out, const char *announce_url,
                            const uint8_t (*hashes)[TRACKER_HASH_LEN],
                            size_t n);

/* Percent-encode p[0..n) onto out as above.  Returns 0 or a buf error. */
int tracker_url_escape(struct buf *out, const void *p, size_t n);

/* Parse an HTTP announce body.  lim may be NULL for the defaults.  Returns
 * 0 (ret filled: release it) or a negative enum tracker_error with
 * *reterr_offset set; ret is written only on success. */
int tracker_parse_announce(struct tracker_announce_resp *ret,
                           const void *body, size_t len,
                           const struct tracker_limits *lim,
                           size_t *reterr_offset);

/* Parse an HTTP scrape body; the same contract. */
int tracker_parse_scrape(struct tracker_scrape_resp *ret, const void *body,
                         size_t len, const struct tracker_limits *lim,
                         size_t *reterr_offset);

/* --- UDP (BEP 15) --- */

#define TRACKER_UDP_PROTOCOL_ID 0x41727101980ULL
#define TRACKER_UDP_CONNECT_LEN 16
#define TRACKER_UDP_ANNOUNCE_LEN 98
#define TRACKER_UDP_SCRAPE_MAX 74     /* info-hashes in one scrape */
#define TRACKER_UDP_HOST_MAX 253
#define TRACKER_UDP_CONN_TTL 60       /* seconds a connection id is valid */

enum tracker_udp_action {
    TRACKER_UDP_CONNECT = 0,
    TRACKER_UDP_ANNOUNCE = 1,
    TRACKER_UDP_SCRAPE = 2,
    TRACKER_UDP_ERROR = 3,
    TRACKER_UDP_ACTION_MAX
};

struct tracker_udp_url {
    char host[TRACKER_UDP_HOST_MAX + 1]; /* NUL-terminated, no brackets */
    uint16_t port;
    bool ipv6_literal;      /* the host was "[...]" */
};

/* Split "udp://host:port[/anything]" (host a name, IPv4, or [IPv6]; port
 * 1..65535; the scheme without regard to case).  What follows the port
 * (BEP 41 URL data) is ignored.  Returns 0 or TRACKER_E_URL. */
int tracker_udp_url_parse(struct tracker_udp_url *ret, const char *url);

/* Encoders: write the request into out and return its length. */
size_t tracker_udp_connect_req(uint8_t out[TRACKER_UDP_CONNECT_LEN],
                               uint32_t transaction_id);
size_t tracker_udp_announce_req(uint8_t out[TRACKER_UDP_ANNOUNCE_LEN],
                                uint64_t connection_id,
                                uint32_t transaction_id,
                                const struct tracker_announce_req *req);
/* n must be 1..TRACKER_UDP_SCRAPE_MAX and out hold 16 + 20 n bytes;
 * returns 0 otherwise. */
size_t tracker_udp_scrape_req(uint8_t *out, size_t out_size,
                              uint64_t connection_id,
                              uint32_t transaction_id,
                              const uint8_t (*hashes)[TRACKER_HASH_LEN],
                              size_t n);

/* Action and transaction id of a datagram.  Returns 0 or
 * TRACKER_E_TRUNCATED (fewer than 8 bytes). */
int tracker_udp_peek(const void *buf, size_t len, uint32_t *ret_action,
                     uint32_t *ret_transaction_id);

struct tracker_udp_resp {
    uint32_t action;        /* the expected action, or TRACKER_UDP_ERROR */
    uint64_t connection_id; /* CONNECT */
    /* ANNOUNCE: interval, incomplete, complete and peers; ERROR: failure
     * (the message).  min_interval, warning, tracker id: never. */
    struct tracker_announce_resp announce;
    /* SCRAPE: one file per entry, labelled with the request's hashes. */
    struct tracker_scrape_resp scrape;
};

/* Decode the answer to a request of action expect (CONNECT, ANNOUNCE or
 * SCRAPE) sent with transaction_id.  family (AF_INET or AF_INET6) is the
 * socket's; hashes and n are the scrape request's (else NULL, 0).
 * Returns 0 (release ret with tracker_udp_resp_release) or a negative
 * enum tracker_error with *reterr_offset; ret written only on success. */
int tracker_udp_parse(struct tracker_udp_resp *ret, const void *buf,
                      size_t len, uint32_t expect, uint32_t transaction_id,
                      int family, const uint8_t (*hashes)[TRACKER_HASH_LEN],
                      size_t n, const struct tracker_limits *lim,
                      size_t *reterr_offset);

void tracker_udp_resp_release(struct tracker_udp_resp *r);

#endif
