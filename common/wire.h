/* wire — the Messenger: the BitTorrent peer wire codec.
 *
 * Thread: any.  No I/O, no globals, no logging.  Every function is pure:
 * what it needs is in its arguments, what it makes is in its outputs.
 *
 * Covered: the handshake (BEP 3) with the reserved bits for the extension
 * protocol (BEP 10), the fast extension (BEP 6) and the DHT (BEP 5); every
 * message of BEP 3 (keep-alive, choke, unchoke, interested, not
 * interested, have, bitfield, request, piece, cancel), port (BEP 5), the
 * five messages of BEP 6 (suggest, have all, have none, reject request,
 * allowed fast) and the extended message of BEP 10 (id 20); the BEP 10
 * extension handshake dictionary; the BEP 6 allowed-fast set; our peer id
 * and a client-name decoder for display.
 *
 * The peer thread is the I/O loop around this codec:
 *
 *   struct wire_decoder dec;
 *   wire_decoder_init(&dec, NULL, &params);   // after the handshake
 *   for (;;) {
 *       int n = wire_decode(&dec, &msg, rbuf + off, have - off);
 *       if (n > 0) { handle(&msg); off += n; continue; }
 *       if (n == 0) break;                 // recv() more: dec.need bytes
 *       if (n == WIRE_E_UNKNOWN_ID) {      // ignore it: drop dec.skip bytes
 *           ...; continue;                 //  (they may not all be here yet)
 *       }
 *       fail the connection (wire_strerror(n), dec.err_offset);
 *   }
 *
 * Decoding is zero copy: a decoded message points into the caller's
 * buffer (msg.data: the block of a piece, the bits of a bitfield, the
 * payload of an extended message), so a receive buffer can hold many
 * 16 KiB blocks from one recv() and be parsed in place.  The decoder keeps
 * no state between calls: its result depends only on the bytes given, so
 * feeding a stream one byte at a time gives the same messages and the same
 * errors (at the same offsets) as feeding it whole.  It reports an error
 * as soon as the bytes it has prove one: a message longer than allowed is
 * refused from its 4-byte length prefix, a piece for a piece that does not
 * exist from its 13-byte header, before the block arrives.
 *
 * What the codec does not know is the connection's state: whether the fast
 * or extension protocol was negotiated, whether a piece was requested,
 * whether a bitfield comes first.  The peer thread checks those.
 */
#ifndef TD_COMMON_WIRE_H
#define TD_COMMON_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* --- constants of the protocol --- */
#define WIRE_PROTOCOL "BitTorrent protocol"
#define WIRE_PROTOCOL_LEN 19
#define WIRE_HASH_LEN 20
#define WIRE_PEER_ID_LEN 20
#define WIRE_RESERVED_LEN 8
/* pstrlen, pstr, reserved, info-hash: what a receiver checks first. */
#define WIRE_HANDSHAKE_HEAD_LEN                                                \
    (1 + WIRE_PROTOCOL_LEN + WIRE_RESERVED_LEN + WIRE_HASH_LEN)
#define WIRE_HANDSHAKE_LEN (WIRE_HANDSHAKE_HEAD_LEN + WIRE_PEER_ID_LEN)

#define WIRE_BLOCK_SIZE (16u << 10) /* the block size everyone uses */
#define WIRE_BLOCK_MAX (128u << 10) /* no limit may allow more */

/* Whole messages on the wire, length prefix included. */
#define WIRE_PREFIX_LEN 4 /* the big-endian length prefix */
#define WIRE_KEEPALIVE_LEN 4
#define WIRE_SIMPLE_LEN 5   /* choke ... not interested, have all/none */
#define WIRE_HAVE_LEN 9     /* have, suggest, allowed fast */
#define WIRE_REQUEST_LEN 17 /* request, cancel, reject */
#define WIRE_PORT_LEN 7
#define WIRE_PIECE_HEADER_LEN 13   /* prefix, id, index, begin; block follows */
#define WIRE_EXTENDED_HEADER_LEN 6 /* prefix, id 20, extended id */

/* Message ids on the wire (the byte after the length prefix), and
 * WIRE_KEEPALIVE, which has none. */
enum wire_type {
    WIRE_CHOKE = 0,
    WIRE_UNCHOKE = 1,
    WIRE_INTERESTED = 2,
    WIRE_NOT_INTERESTED = 3,
    WIRE_HAVE = 4,
    WIRE_BITFIELD = 5,
    WIRE_REQUEST = 6,
    WIRE_PIECE = 7,
    WIRE_CANCEL = 8,
    WIRE_PORT = 9,       /* BEP 5 */
    WIRE_SUGGEST = 0x0d, /* BEP 6 ... */
    WIRE_HAVE_ALL = 0x0e,
    WIRE_HAVE_NONE = 0x0f,
    WIRE_REJECT = 0x10,
    WIRE_ALLOWED_FAST = 0x11, /* ... BEP 6 */
    WIRE_EXTENDED = 20,       /* BEP 10 */
    WIRE_KEEPALIVE = 0x100,   /* not a byte on the wire */
    WIRE_TYPE_MAX
};

/* Errors: negative, each with a message from wire_strerror().  The
 * offsets in the comments are what *reterr_offset / dec->err_offset say,
 * counted from the start of the handshake or of the message. */
enum wire_error {
    WIRE_OK = 0,
    WIRE_E_PROTOCOL = -1,        /* handshake: not 19 "BitTorrent protocol";
                                  * the first wrong byte */
    WIRE_E_INFO_HASH = -2,       /* handshake: not the expected info-hash; 28 */
    WIRE_E_TOO_LONG = -3,        /* length prefix over the limit; 0 */
    WIRE_E_LENGTH = -4,          /* length prefix wrong for the id; 0 */
    WIRE_E_UNKNOWN_ID = -5,      /* an id we do not know; 4.  Skippable:
                                  * dec->skip is the whole message */
    WIRE_E_INDEX = -6,           /* piece index >= piece count; 5 */
    WIRE_E_BLOCK_SIZE = -7,      /* request length 0 or over max_block; 13 */
    WIRE_E_BLOCK_RANGE = -8,     /* begin + length past the piece's end; 9 */
    WIRE_E_BITFIELD_LENGTH = -9, /* not ceil(piece count / 8) bytes; 0 */
    WIRE_E_BITFIELD_SPARE = -10, /* a bit set past the last piece; the
                                  * offset of the last byte */
    WIRE_E_EXT_TOO_LONG = -11,   /* extension handshake over its limit; the
                                  * limit */
    WIRE_E_EXT_BENCODE = -12,    /* extension handshake is not bencode
                                  * (within limits); where bencode failed */
    WIRE_E_EXT_NOT_DICT = -13,   /* not a dictionary, or "m" is not one;
                                  * the start of that value */
    WIRE_E_NOMEM = -14,
    WIRE_E_MIN = -15
};

/* A static message for an error value ("unknown error" for others). */
const char *wire_strerror(int err);

/* --- handshake (BEP 3) --- */

/* Reserved bits we understand. */
enum wire_features {
    WIRE_F_EXTENDED = 1 << 0, /* BEP 10: reserved[5] & 0x10 */
    WIRE_F_FAST = 1 << 1,     /* BEP 6:  reserved[7] & 0x04 */
    WIRE_F_DHT = 1 << 2,      /* BEP 5:  reserved[7] & 0x01 */
};

struct wire_handshake {
    uint8_t reserved[WIRE_RESERVED_LEN];
    uint8_t info_hash[WIRE_HASH_LEN];
    uint8_t peer_id[WIRE_PEER_ID_LEN]; /* valid if has_peer_id */
    bool has_peer_id;
};

/* Set the reserved bytes for features (enum wire_features); the other
 * bits are zero. */
void wire_reserved_set(uint8_t reserved[WIRE_RESERVED_LEN], unsigned features);

/* The enum wire_features bits set in reserved (unknown bits ignored). */
unsigned wire_reserved_features(const uint8_t reserved[WIRE_RESERVED_LEN]);

/* Write the 68-byte handshake for h (h->has_peer_id is ignored: the peer
 * id is always written).  Returns WIRE_HANDSHAKE_LEN, or -EMSGSIZE if size
 * is smaller (nothing written). */
int wire_put_handshake(void *out, size_t size, const struct wire_handshake *h);

/* Parse a handshake from the start of buf[0..len), incrementally: call it
 * again as bytes arrive.  Returns
 *   0                        need more bytes; what is there is fine so far
 *   WIRE_HANDSHAKE_HEAD_LEN  the protocol, reserved bytes and info-hash are
 *                            in *ret (has_peer_id false): look the torrent
 *                            up, then wait for the peer id
 *   WIRE_HANDSHAKE_LEN       the whole handshake is in *ret
 *   WIRE_E_PROTOCOL          the length byte or protocol string is wrong
 *                            (found as soon as the wrong byte arrives)
 *   WIRE_E_INFO_HASH         expect_hash is not NULL and differs
 * Bytes after the first WIRE_HANDSHAKE_LEN are not looked at (they are
 * messages).  ret is written only on a positive return, *reterr_offset (if
 * not NULL) only on an error. */
int wire_handshake_parse(struct wire_handshake *ret, const void *buf,
                         size_t len, const uint8_t *expect_hash,
                         size_t *reterr_offset);

/* --- peer ids --- */

/* Our peer id: Azureus style, "-TD" + version + "-" + 12 characters from
 * [0-9A-Za-z] made from the caller's 12 random bytes. */
#define WIRE_PEER_ID_PREFIX "-TD0100-"
#define WIRE_PEER_ID_RANDOM 12
void wire_peer_id_make(uint8_t ret[WIRE_PEER_ID_LEN],
                       const uint8_t random[WIRE_PEER_ID_RANDOM]);

/* A client name for display from an Azureus-style peer id ("-XXvvvv-"):
 * "torrentd 0.1.0.0", "Transmission 3.00", "Transmission 4.0.6",
 * "libtorrent 0.13.8" (rakshasa's, "lt"), "libtorrent 1.2.19.0" ("LT"),
 * "qBittorrent 4.6.3", "Deluge 2.1.1", "uTorrent 3.5.5" ("UT"), "uTorrent
 * Mac 1.8.7" ("UM"; both spelt with U+00B5 MICRO SIGN in UTF-8), "Vuze
 * 5.7.7.0" ("AZ"); a version character is a
 * digit, or A-Z for 10-35.  Anything else is "unknown".  Writes at most
 * size bytes with a NUL (truncating); returns the length of the full name
 * (like snprintf).  size may be 0. */
#define WIRE_CLIENT_NAME_MAX 32 /* enough for every name above, with NUL */
size_t wire_client_name(char *out, size_t size,
                        const uint8_t peer_id[WIRE_PEER_ID_LEN]);

/* --- messages --- */

/* What the decoder checks against.  A field that is 0 takes the default;
 * max_extended, max_unknown and max_bitfield are capped at WIRE_LIMIT_CAP,
 * so that every message's size fits an int. */
#define WIRE_LIMIT_CAP (256u << 20)
struct wire_limits {
    uint32_t max_block;         /* block length of request, cancel, reject and
                                 * of a piece's block: 16 KiB; capped at
                                 * WIRE_BLOCK_MAX */
    uint32_t max_extended;      /* payload of an extended message: 1 MiB */
    uint32_t max_unknown;       /* body of a message with an unknown id that a
                                 * caller may skip: 1 MiB */
    uint32_t max_bitfield;      /* bitfield bytes while the piece count is
                                 * unknown (magnet links): 512 KiB */
    uint32_t max_ext_handshake; /* extension handshake payload: 64 KiB */
    uint32_t max_metadata_size; /* metadata_size we accept: 16 MiB */
};

/* The defaults above. */
extern const struct wire_limits wire_limits_default;

/* The torrent a connection is about.  piece_count 0 means "not known yet"
 * (a magnet link before the metadata): then have and request indices and
 * block ranges are not checked, and a bitfield may be up to max_bitfield
 * bytes with any spare bits. */
struct wire_torrent {
    uint32_t piece_count;
    uint32_t piece_length;      /* bytes of every piece but the last */
    uint32_t last_piece_length; /* 1 .. piece_length */
};

/* Fill ret for a torrent of total_size bytes in pieces of piece_length.
 * Returns 0, or -EINVAL if piece_length is 0, total_size is 0, or there
 * would be more than UINT32_MAX pieces (ret untouched). */
int wire_torrent_set(struct wire_torrent *ret, uint64_t total_size,
                     uint32_t piece_length);

/* One block: request, cancel and reject carry this. */
struct wire_block {
    uint32_t index;
    uint32_t begin;
    uint32_t length;
};

/* A decoded message.  Fields that a type does not use are zero. */
struct wire_msg {
    uint16_t type;       /* enum wire_type */
    uint8_t ext_id;      /* WIRE_EXTENDED: 0 = extension handshake */
    uint16_t port;       /* WIRE_PORT */
    uint32_t index;      /* have, suggest, allowed fast, request, cancel,
                          * reject, piece */
    uint32_t begin;      /* request, cancel, reject, piece */
    uint32_t length;     /* request, cancel, reject; piece: = data_len */
    const uint8_t *data; /* borrowed from the input buffer: bitfield bits,
                          * piece block, extended payload; else NULL */
    uint32_t data_len;
};

/* The decoder: its limits and torrent, and the details of the last
 * result.  Holds no pointer and no buffered bytes. */
struct wire_decoder {
    struct wire_limits lim;  /* copied, defaults filled in */
    struct wire_torrent tor; /* copied */
    /* After wire_decode() returned 0: the buffer must hold at least this
     * many bytes for the next call to make progress.  Once the message's
     * 5-byte header has been checked, it is the whole message (so the
     * caller can grow its buffer once), and never more than
     * wire_decoder_max_message(). */
    size_t need;
    /* After an error: its offset from the start of the message. */
    size_t err_offset;
    /* After WIRE_E_UNKNOWN_ID: the bytes of the whole message, which the
     * caller may drop to go on (it may not all be in the buffer yet).  0
     * after any other result. */
    size_t skip;
};

/* Start a decoder.  lim NULL means wire_limits_default; tor NULL means the
 * torrent is not known yet.  Returns 0, or -EINVAL if tor is inconsistent
 * (piece_length 0 or last_piece_length outside 1..piece_length while
 * piece_count > 0). */
int wire_decoder_init(struct wire_decoder *dec, const struct wire_limits *lim,
                      const struct wire_torrent *tor);

/* Set the torrent once the metadata is known (same checks). */
int wire_decoder_set_torrent(struct wire_decoder *dec,
                             const struct wire_torrent *tor);

/* The longest message (length prefix included) this decoder accepts: a
 * receive buffer of this size can always hold the next message. */
size_t wire_decoder_max_message(const struct wire_decoder *dec);

/* Decode the message at the start of buf[0..len).  Returns
 *   > 0   the message's size on the wire; *ret_msg holds it
 *   0     need more bytes: dec->need
 *   < 0   an enum wire_error, with dec->err_offset (and dec->skip for
 *         WIRE_E_UNKNOWN_ID)
 * ret_msg is written only on success; its data points into buf.  Checks:
 * the length prefix against the id (WIRE_E_LENGTH) and the limits
 * (WIRE_E_TOO_LONG), indices against the piece count, block ranges against
 * the piece's size, request lengths against max_block, bitfields exactly
 * (length and spare bits).  Port 0 and the extended id are not judged. */
int wire_decode(struct wire_decoder *dec, struct wire_msg *ret_msg,
                const void *buf, size_t len);

/* --- encoders ---
 * Each writes one message into out[0..size) and returns the bytes written
 * (a WIRE_*_LEN above), or -EMSGSIZE if size is too small; then nothing is
 * written.  They do not check values against a torrent: that is the
 * caller's business (it sends what it decided). */
int wire_put_keepalive(void *out, size_t size);
/* choke, unchoke, interested, not interested, have all, have none */
int wire_put_simple(void *out, size_t size, enum wire_type type);
/* have, suggest, allowed fast */
int wire_put_have(void *out, size_t size, enum wire_type type, uint32_t index);
/* request, cancel, reject */
int wire_put_block(void *out, size_t size, enum wire_type type,
                   const struct wire_block *b);
int wire_put_port(void *out, size_t size, uint16_t port);
/* The bitfield message for bits[0..nbytes) (the caller keeps spare bits
 * zero).  Returns 5 + nbytes. */
int wire_put_bitfield(void *out, size_t size, const uint8_t *bits,
                      uint32_t nbytes);
/* The 13-byte header of a piece message whose block of block_len bytes
 * the caller sends next (writev, sendfile): no copy of the block. */
int wire_put_piece_header(void *out, size_t size, uint32_t index,
                          uint32_t begin, uint32_t block_len);
/* The 6-byte header of an extended message whose payload of payload_len
 * bytes follows. */
int wire_put_extended_header(void *out, size_t size, uint8_t ext_id,
                             uint32_t payload_len);

/* The hot path: n request (or cancel, or reject) messages for blocks[0..n)
 * back to back, 17 * n bytes, for one write.  Returns the bytes written or
 * -EMSGSIZE (nothing written); -EINVAL for another type. */
int wire_put_blocks(void *out, size_t size, enum wire_type type,
                    const struct wire_block *blocks, size_t n);

/* Any message as wire_decode() returns it, data copied (the fuzzer's
 * round trip; also handy for tests).  Returns the bytes written,
 * -EMSGSIZE, or -EINVAL for an unknown type or a data_len that does not
 * fit the length prefix. */
int wire_encode(void *out, size_t size, const struct wire_msg *m);

/* The same, appended to b (-EMSGSIZE past its cap, -ENOMEM). */
int wire_encode_buf(struct buf *b, const struct wire_msg *m);

/* --- BEP 10 extension handshake (the payload of extended id 0) --- */

#define WIRE_EXT_CLIENT_MAX 64 /* bytes of "v" kept; more are cut off */

/* The fields of an extension handshake, as bits of ret->present (found
 * and usable) and ret->ignored (found but of the wrong type or out of
 * range, and ignored as mature clients do). */
enum wire_ext_field {
    WIRE_EXT_M_METADATA = 1 << 0,   /* m.ut_metadata: 0..255 */
    WIRE_EXT_M_PEX = 1 << 1,        /* m.ut_pex: 0..255 */
    WIRE_EXT_PORT = 1 << 2,         /* p: 1..65535 */
    WIRE_EXT_CLIENT = 1 << 3,       /* v: a string */
    WIRE_EXT_REQQ = 1 << 4,         /* reqq: 1..UINT32_MAX */
    WIRE_EXT_YOURIP = 1 << 5,       /* yourip: 4 or 16 bytes */
    WIRE_EXT_METADATA_SIZE = 1 << 6 /* metadata_size: 1..max_metadata_size */
};

/* A field absent from a later extension handshake keeps its old value
 * (BEP 10); an id of 0 in m disables that extension.  Hence "present". */
struct wire_ext_handshake {
    uint8_t ut_metadata;    /* the peer's id for ut_metadata (BEP 9); 0 =
                             * not supported (or disabled) */
    uint8_t ut_pex;         /* the peer's id for ut_pex (BEP 11); 0 = no */
    uint16_t port;          /* p: its listen port */
    uint32_t reqq;          /* its request queue depth */
    uint32_t metadata_size; /* BEP 9: bytes of the info dictionary */
    uint8_t yourip[16];     /* our address as the peer sees it */
    uint8_t yourip_len;     /* 0, 4 or 16 */
    /* v: the client's name, NUL-terminated, at most WIRE_EXT_CLIENT_MAX
     * bytes (a longer one is cut at a UTF-8 character boundary); control
     * characters and NUL are replaced by '?'.  "" if absent. */
    char client[WIRE_EXT_CLIENT_MAX + 1];
    unsigned present; /* enum wire_ext_field */
    unsigned ignored; /* enum wire_ext_field */
};

/* Parse an extension handshake payload (msg.data of an extended message
 * with ext_id 0).  lim NULL means wire_limits_default.  Unknown keys and
 * unknown names in m are skipped; unusable values are ignored (see
 * ret->present and ret->ignored); with a repeated key the first counts.
 * Returns 0, or WIRE_E_EXT_TOO_LONG, WIRE_E_EXT_BENCODE,
 * WIRE_E_EXT_NOT_DICT or WIRE_E_NOMEM with *reterr_offset (if not NULL)
 * an offset into buf.  ret is written only on success. */
int wire_ext_handshake_parse(struct wire_ext_handshake *ret, const void *buf,
                             size_t len, const struct wire_limits *lim,
                             size_t *reterr_offset);

/* Append the whole extended message (header and bencoded payload) for h to
 * b: "m" with the non-zero ids (always there, maybe empty), then each
 * non-zero field (v if client is not "").  present and ignored are not
 * read.  Returns the bytes appended, or -EMSGSIZE past b's cap or -ENOMEM
 * (b is then as before). */
int wire_put_ext_handshake(struct buf *b, const struct wire_ext_handshake *h);

/* --- BEP 6 allowed-fast set --- */

#define WIRE_ALLOWED_FAST_MAX 256 /* the most pieces one call computes */

/* The canonical allowed-fast set of BEP 6 for a peer at addr (4 bytes of
 * IPv4 in network order, masked to /24 as the BEP says; or 16 bytes of
 * IPv6, masked to /48 as libtorrent does: the BEP has no IPv6 rule).
 * Writes min(k, piece_count) distinct piece indices to ret in the
 * algorithm's order and returns that count; -EINVAL for another addr_len
 * or k > WIRE_ALLOWED_FAST_MAX; -ENOMEM if libcrypto fails.  Its cost is
 * about k SHA-1 blocks (more when k is close to piece_count). */
int wire_allowed_fast(uint32_t *ret, size_t k,
                      const uint8_t info_hash[WIRE_HASH_LEN],
                      const uint8_t *addr, size_t addr_len,
                      uint32_t piece_count);

#endif
