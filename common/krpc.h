/* krpc — the KRPC message codec of the Mainline DHT (BEP 5, 32, 42, 43).
 *
 * Thread: any.  No I/O, no globals, no logging.
 *
 * krpc_parse() turns one UDP datagram (a bencoded dictionary) into a
 * struct krpc_msg; krpc_encode() does the reverse.  The message struct is
 * flat and self-contained: every field is copied out of the datagram
 * (bounded by the KRPC_* constants below), so nothing points into the
 * caller's buffer after the call.
 *
 * What is checked, and how strictly:
 * - The datagram is at most KRPC_MAX_DATAGRAM bytes of valid bencode
 *   (unsorted or repeated keys are tolerated, as mature clients do; the
 *   first of repeated keys wins), nested at most KRPC_MAX_DEPTH deep.
 * - "t" is a string of 1..KRPC_TID_MAX bytes, "y" is "q", "r" or "e".
 * - Queries: "q" a string, "a" a dictionary with "id" of exactly 20 bytes;
 *   find_node needs "target", get_peers and announce_peer "info_hash"
 *   (20 bytes); announce_peer needs "token" (1..KRPC_TOKEN_MAX bytes) and
 *   "port" (1..65535) unless "implied_port" is 1.  A method name we do not
 *   know parses as KRPC_Q_UNKNOWN (the DHT answers it with 204), with
 *   "target" or "info_hash" kept when they are well formed.
 * - Responses: "r" a dictionary with "id" of 20 bytes; "nodes" a string of
 *   26-byte entries, "nodes6" of 38-byte entries (BEP 32), "values" a list
 *   of 6- or 18-byte strings, "token" a string of 1..KRPC_TOKEN_MAX bytes.
 * - Errors: "e" a list whose first item is an integer code; a second item,
 *   when a string, is the message (kept up to KRPC_ERRMSG_MAX bytes).
 * - Informational fields are lenient: "v" (kept when a string of at most
 *   KRPC_VERSION_MAX bytes), "ip" (BEP 42; kept when 6 or 18 bytes), "ro"
 *   (BEP 43; true only for the integer 1) and "want" (BEP 32; "n4" and "n6"
 *   in a list; anything else ignored).  A wrong one is ignored, never an
 *   error: it costs nothing to answer anyway.
 * - Unknown keys are ignored everywhere.
 */
#ifndef TD_COMMON_KRPC_H
#define TD_COMMON_KRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define KRPC_ID_LEN 20          /* node ids, targets, info-hashes */
#define KRPC_MAX_DATAGRAM 2048  /* bytes of one message, either way */
#define KRPC_MAX_DEPTH 8        /* nesting of lists and dictionaries */
#define KRPC_MAX_BENC_NODES 600 /* bencode values in one message */
#define KRPC_TID_MAX 16         /* transaction id bytes */
#define KRPC_TOKEN_MAX 64       /* token bytes */
#define KRPC_VERSION_MAX 16     /* "v" bytes kept */
#define KRPC_ERRMSG_MAX 128     /* error message bytes kept */
#define KRPC_MAX_NODES 64       /* entries of "nodes" */
#define KRPC_MAX_NODES6 40      /* entries of "nodes6" */
#define KRPC_MAX_VALUES 256     /* entries of "values" */
#define KRPC_NODE4_LEN 26       /* compact node: id, IPv4, port */
#define KRPC_NODE6_LEN 38       /* compact node: id, IPv6, port */
#define KRPC_PEER4_LEN 6        /* compact peer: IPv4, port */
#define KRPC_PEER6_LEN 18       /* compact peer: IPv6, port */

/* Error codes of BEP 5. */
#define KRPC_ERR_GENERIC 201
#define KRPC_ERR_SERVER 202
#define KRPC_ERR_PROTOCOL 203
#define KRPC_ERR_METHOD 204

/* Errors of krpc_parse(): negative, each with krpc_strerror(). */
enum krpc_error {
    KRPC_OK = 0,
    KRPC_E_TOO_LARGE = -1, /* longer than KRPC_MAX_DATAGRAM */
    KRPC_E_BENCODE = -2,   /* not valid bencode (or too deep, too big) */
    KRPC_E_NOT_DICT = -3,  /* the message is not a dictionary */
    KRPC_E_TID = -4,       /* "t" missing, not a string, or bad length */
    KRPC_E_TYPE = -5,      /* "y" missing or not "q", "r" or "e" */
    KRPC_E_METHOD = -6,    /* query without a string "q" */
    KRPC_E_ARGS = -7,      /* query without an "a" dictionary */
    KRPC_E_ID = -8,        /* "id" missing or not 20 bytes */
    KRPC_E_TARGET = -9,    /* "target"/"info_hash" missing or bad */
    KRPC_E_PORT = -10,     /* announce "port" missing or out of range */
    KRPC_E_TOKEN = -11,    /* "token" missing (announce) or bad length */
    KRPC_E_RESPONSE = -12, /* response without an "r" dictionary */
    KRPC_E_NODES = -13,    /* "nodes"/"nodes6" bad length or too many */
    KRPC_E_VALUES = -14,   /* "values" malformed or too many */
    KRPC_E_ERROR = -15,    /* error without an [int, ...] "e" list */
    KRPC_E_NOMEM = -16,
    KRPC_E_MIN = -17
};

enum krpc_type { KRPC_QUERY, KRPC_RESPONSE, KRPC_ERROR_MSG, KRPC_TYPE_MAX };

enum krpc_method {
    KRPC_Q_PING,
    KRPC_Q_FIND_NODE,
    KRPC_Q_GET_PEERS,
    KRPC_Q_ANNOUNCE_PEER,
    KRPC_Q_UNKNOWN,
    KRPC_METHOD_MAX
};

/* "want" (BEP 32). */
enum krpc_want {
    KRPC_WANT_N4 = 1 << 0,
    KRPC_WANT_N6 = 1 << 1,
};

/* Which optional fields a message has (msg->has). */
enum krpc_has {
    KRPC_HAS_V = 1 << 0,      /* "v" */
    KRPC_HAS_IP = 1 << 1,     /* "ip" */
    KRPC_HAS_TARGET = 1 << 2, /* target / info_hash */
    KRPC_HAS_PORT = 1 << 3,   /* "port" */
    KRPC_HAS_TOKEN = 1 << 4,  /* "token" */
    KRPC_HAS_NODES = 1 << 5,  /* "nodes" (possibly empty) */
    KRPC_HAS_NODES6 = 1 << 6, /* "nodes6" (possibly empty) */
    KRPC_HAS_VALUES = 1 << 7, /* "values" (possibly empty) */
    KRPC_HAS_WANT = 1 << 8,   /* "want" */
};

/* A UDP endpoint.  family is 4 or 6; addr is in network order (4 or 16
 * bytes used), port in host order. */
struct krpc_addr {
    uint8_t family;
    uint8_t addr[16];
    uint16_t port;
};

struct krpc_node {
    uint8_t id[KRPC_ID_LEN];
    struct krpc_addr addr;
};

struct krpc_msg {
    uint8_t type;   /* enum krpc_type */
    uint8_t method; /* enum krpc_method (queries) */
    unsigned has;   /* enum krpc_has */
    uint8_t tid[KRPC_TID_MAX];
    uint8_t tid_len; /* 1..KRPC_TID_MAX */
    uint8_t v[KRPC_VERSION_MAX];
    uint8_t v_len;
    bool ro;                 /* BEP 43 read-only sender */
    struct krpc_addr ip;     /* BEP 42: the recipient, as seen */
    uint8_t id[KRPC_ID_LEN]; /* the sender (queries, responses) */
    /* Query arguments. */
    uint8_t target[KRPC_ID_LEN]; /* target or info_hash */
    uint16_t port;
    bool implied_port;
    unsigned want; /* enum krpc_want */
    /* Query (announce_peer) and response. */
    uint8_t token[KRPC_TOKEN_MAX];
    uint8_t token_len;
    /* Response. */
    uint16_t n_nodes, n_nodes6, n_values;
    struct krpc_node nodes[KRPC_MAX_NODES];
    struct krpc_node nodes6[KRPC_MAX_NODES6];
    struct krpc_addr values[KRPC_MAX_VALUES];
    /* Error. */
    int64_t err_code;
    uint8_t err_msg_len;
    char err_msg[KRPC_ERRMSG_MAX + 1]; /* NUL-terminated, may hold NULs */
};

/* What a failed parse leaves for an answer (krpc_parse's reterr). */
struct krpc_parse_error {
    size_t offset;             /* byte offset of the problem */
    bool can_reply;            /* a query with a usable "t" */
    uint8_t tid[KRPC_TID_MAX]; /* when can_reply */
    uint8_t tid_len;
    int code; /* KRPC_ERR_* to answer with */
};

/* Parse one datagram into ret_msg (written only on success).  Returns 0
 * or a negative enum krpc_error; on error *reterr (if not NULL) says where,
 * whether an error reply is possible (only to a query whose "t" is good:
 * never answer a response or an error, so that two nodes cannot loop)
 * and with which code.  Allocates only temporarily (bounded by the
 * KRPC_* limits); KRPC_E_NOMEM when that fails. */
int krpc_parse(struct krpc_msg *ret_msg, const void *data, size_t len,
               struct krpc_parse_error *reterr);

/* A static message for an error value ("unknown error" for others). */
const char *krpc_strerror(int err);

/* The KRPC error code to answer a parse error with: 203 for all of them
 * (malformed packet).  Unknown methods parse fine (KRPC_Q_UNKNOWN) and are
 * answered 204 by the caller: BEP 5 says so, although libtorrent sends 203
 * for them. */
int krpc_error_code(int err);

/* The method's name ("ping", ...), or NULL for KRPC_Q_UNKNOWN. */
const char *krpc_method_name(enum krpc_method m);

/* Append msg, bencoded, to b.  Returns the bytes appended, or -EINVAL for
 * a message that cannot be encoded (KRPC_Q_UNKNOWN, tid_len 0, counts
 * beyond the limits, family not 4/6), -EMSGSIZE past b's cap or -ENOMEM
 * (b is then left as it was).  Fields are written when they apply to the
 * message's type and method and (for optional ones) msg->has says so:
 * queries write "a" (id; target or info_hash; port (unless 0 with
 * implied_port), implied_port, token for announce_peer; want), responses
 * "r" (id, nodes, nodes6, token, values), errors "e"; "ip", "ro" (when
 * true), "t", "v" and "y" for all. */
int krpc_encode(struct buf *b, const struct krpc_msg *msg);

/* Start msg as a query/response/error with the given transaction id (at
 * most KRPC_TID_MAX bytes are used) and, for queries and responses, the
 * sender id (may be NULL for errors).  The rest is zeroed. */
void krpc_msg_init(struct krpc_msg *msg, enum krpc_type type,
                   const uint8_t *tid, size_t tid_len,
                   const uint8_t id[KRPC_ID_LEN]);

/* Compact forms: 6/18 bytes for a peer, 26/38 for a node.  The put
 * functions write addr->family's size and return it (0 for a bad family);
 * the get functions read len bytes (6 or 18; 26 or 38) and return false
 * for any other length. */
size_t krpc_put_compact_addr(uint8_t *out, const struct krpc_addr *addr);
bool krpc_get_compact_addr(struct krpc_addr *ret, const uint8_t *p, size_t len);
size_t krpc_put_compact_node(uint8_t *out, const struct krpc_node *node);
bool krpc_get_compact_node(struct krpc_node *ret, const uint8_t *p, size_t len);

/* True if both addresses have the same family, address and port
 * (krpc_addr_same_ip: family and address only). */
bool krpc_addr_equal(const struct krpc_addr *a, const struct krpc_addr *b);
bool krpc_addr_same_ip(const struct krpc_addr *a, const struct krpc_addr *b);

#endif
