/* ext — the payloads of two BEP 10 extended messages: ut_metadata (BEP 9,
 * metadata exchange for magnet links) and ut_pex (BEP 11, peer exchange).
 *
 * Thread: any.  No I/O, no globals, no logging.  The parsers take the
 * payload of an extended message (wire_msg.data / data_len, after the
 * extended id) and never read outside it; the encoders append a whole
 * extended message (the 6-byte header of wire_put_extended_header() and
 * the payload) to a struct buf, so a peer thread can queue it as is.
 *
 * ut_metadata.  The info dictionary (the "metadata", metadata_size bytes
 * as told in the extension handshake) is cut into pieces of
 * EXT_METADATA_PIECE bytes, the last one shorter.  Messages are a
 * bencoded dictionary {msg_type, piece[, total_size]}; a data message is
 * followed, in the same extended message, by the raw bytes of the piece.
 * struct ext_metadata puts the pieces together (in any order) and checks
 * the whole against the info-hash; the caller then hands md->buf to
 * meta_parse_info().
 *
 * ut_pex.  A dictionary of compact peer lists: added (6 bytes per IPv4
 * peer: address, port, network order), added.f (one flag byte per added
 * peer), dropped, and the same for IPv6 (added6, added6.f, dropped6; 18
 * bytes each).  BEP 11 allows at most EXT_PEX_SEND_MAX added and as many
 * dropped peers in a message and one message a minute: the encoder
 * enforces the first, struct ext_pex_state the second (and computes what
 * to send).  What we accept is capped at EXT_PEX_ACCEPT_MAX per list.
 */
#ifndef TD_COMMON_EXT_H
#define TD_COMMON_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define EXT_HASH_LEN 20

/* --- ut_metadata (BEP 9) --- */

#define EXT_METADATA_PIECE (16u << 10) /* bytes of every piece but the last */
/* The largest metadata_size we take (wire_limits.max_metadata_size). */
#define EXT_METADATA_MAX (16u << 20)
#define EXT_METADATA_PIECES_MAX (EXT_METADATA_MAX / EXT_METADATA_PIECE)
/* The largest ut_metadata payload we send or accept: the dictionary
 * (bounded by this slack) and one piece. */
#define EXT_METADATA_DICT_MAX 512
#define EXT_METADATA_MSG_MAX (EXT_METADATA_DICT_MAX + EXT_METADATA_PIECE)

enum ext_md_type {
    EXT_MD_REQUEST = 0,
    EXT_MD_DATA = 1,
    EXT_MD_REJECT = 2,
    EXT_MD_TYPE_MAX
};

/* Errors: negative, each with a message from ext_strerror().  The comment
 * says what *reterr_offset is (an offset into the payload). */
enum ext_error {
    EXT_OK = 0,
    EXT_E_TOO_LONG = -1,    /* payload over its limit; the limit */
    EXT_E_BENCODE = -2,     /* not bencode (within limits); where it
                             * failed */
    EXT_E_NOT_DICT = -3,    /* not a dictionary; 0 */
    EXT_E_MSG_TYPE = -4,    /* msg_type missing or not an integer: 0 (the
                             * dictionary) or its value.  An unknown
                             * msg_type (BEP 9: ignore it) is
                             * EXT_E_MSG_UNKNOWN */
    EXT_E_MSG_UNKNOWN = -5, /* a msg_type we do not know; its value */
    EXT_E_PIECE = -6,       /* piece missing (0), not an integer or past
                             * the last piece (its value) */
    EXT_E_TOTAL_SIZE = -7,  /* data: total_size missing (0), not an
                             * integer, 0, over the limit or not the size
                             * expected (its value) */
    EXT_E_DATA_LENGTH = -8, /* data: the bytes after the dictionary are
                             * not the piece's length (request, reject:
                             * any byte after it); the end of the
                             * dictionary */
    EXT_E_PEX_FIELD = -9,   /* pex: added, added6, dropped or dropped6 not
                             * a string or not a multiple of 6 (18)
                             * bytes; its value */
    EXT_E_NOMEM = -10,
    EXT_E_MIN = -11
};

/* A static message for an error value ("unknown error" for others). */
const char *ext_strerror(int err);

/* The number of pieces of metadata of size bytes (0 for 0), and the length
 * of piece i (0 past the last). */
uint32_t ext_metadata_piece_count(uint32_t size);
uint32_t ext_metadata_piece_len(uint32_t size, uint32_t piece);

/* A parsed ut_metadata message. */
struct ext_metadata_msg {
    uint8_t type; /* enum ext_md_type */
    uint32_t piece;
    uint32_t total_size; /* data only */
    const uint8_t *data; /* data only: borrowed from the input, the
                          * piece's bytes */
    uint32_t data_len;
};

/* Parse a ut_metadata payload.  size is the metadata size the caller
 * knows (its own metadata, or what the peer's handshake said), or 0 if
 * none: then piece indices are checked against EXT_METADATA_PIECES_MAX
 * (request, reject) or against total_size (data), and total_size against
 * EXT_METADATA_MAX.  A data message's bytes must be exactly the piece's
 * length; a request or reject has nothing after its dictionary.  Unknown
 * keys are ignored.  Returns 0 and *ret (data points into buf), or an
 * enum ext_error with *reterr_offset (if not NULL); ret is written only
 * on success. */
int ext_metadata_parse(struct ext_metadata_msg *ret, const void *buf,
                       size_t len, uint32_t size, size_t *reterr_offset);

/* Append a whole extended message with ext_id (the peer's id for
 * ut_metadata) to b: a request or reject for piece (total_size, data,
 * data_len ignored), or data: piece of metadata of total_size bytes, whose
 * bytes data[0..data_len) must be exactly that piece.  Returns the bytes
 * appended, -EINVAL (a bad type, piece, size or length: nothing
 * appended), -EMSGSIZE past b's cap or -ENOMEM (b as before). */
int ext_metadata_put(struct buf *b, uint8_t ext_id, enum ext_md_type type,
                     uint32_t piece, uint32_t total_size, const void *data,
                     uint32_t data_len);

/* The assembler: pieces in any order, each once. */
struct ext_metadata {
    uint32_t size; /* metadata_size */
    uint32_t n_pieces;
    uint32_t n_have; /* pieces in */
    uint8_t *have;   /* owned: a bit per piece, MSB first */
    uint8_t *buf;    /* owned: size bytes; valid where have says */
};

/* Start an assembler for size bytes (1..EXT_METADATA_MAX).  Returns 0,
 * -EINVAL or -ENOMEM (md zeroed, safe to release). */
int ext_metadata_init(struct ext_metadata *md, uint32_t size);

/* Free what md holds; md is zeroed.  Accepts a zeroed md. */
void ext_metadata_release(struct ext_metadata *md);

/* Forget every piece (after a failed check), keep the size. */
void ext_metadata_reset(struct ext_metadata *md);

/* Take piece (len bytes, exactly its length).  Returns 1 if new, 0 if it
 * was there already (kept as it was), -EINVAL for a bad index or
 * length. */
int ext_metadata_add(struct ext_metadata *md, uint32_t piece, const void *data,
                     size_t len);

bool ext_metadata_has(const struct ext_metadata *md, uint32_t piece);
bool ext_metadata_complete(const struct ext_metadata *md);

/* The first missing piece at or after from (wrapping to 0), or UINT32_MAX
 * if every piece is in. */
uint32_t ext_metadata_next_missing(const struct ext_metadata *md,
                                   uint32_t from);

/* Check the complete metadata: SHA-1 of buf == info_hash.  Returns 0,
 * -EAGAIN if pieces are missing, -EBADMSG on a mismatch (the caller
 * usually resets and fetches again from other peers), -ENOMEM if
 * libcrypto fails. */
int ext_metadata_verify(const struct ext_metadata *md,
                        const uint8_t info_hash[EXT_HASH_LEN]);

/* --- ut_pex (BEP 11) --- */

#define EXT_PEX_SEND_MAX 50 /* added, and dropped, per message sent */
/* Per list taken from a message; the rest is ignored. */
#define EXT_PEX_ACCEPT_MAX 200
#define EXT_PEX_INTERVAL_MS 60000   /* one message per peer per minute */
#define EXT_PEX_MSG_MAX (64u << 10) /* payload we accept */

/* Flags of added.f / added6.f. */
enum ext_pex_flags {
    EXT_PEX_F_ENCRYPT = 0x01,     /* prefers encryption */
    EXT_PEX_F_SEED = 0x02,        /* seed or upload only */
    EXT_PEX_F_UTP = 0x04,         /* supports uTP */
    EXT_PEX_F_HOLEPUNCH = 0x08,   /* supports ut_holepunch */
    EXT_PEX_F_CONNECTABLE = 0x10, /* outgoing connection: reachable */
};

struct ext_pex_peer {
    uint8_t addr[16]; /* network order; IPv4 in addr[0..4) */
    uint8_t addr_len; /* 4 or 16 */
    uint8_t flags;    /* enum ext_pex_flags (added only; 0 if none) */
    uint16_t port;    /* host order, never 0 */
};

/* A parsed ut_pex message, or one to send. */
struct ext_pex_msg {
    struct ext_pex_peer *peers; /* owned: added first, then dropped */
    size_t n_added;
    size_t n_dropped;
    bool truncated; /* a list was cut at EXT_PEX_ACCEPT_MAX */
};

/* Parse a ut_pex payload into *ret (free with ext_pex_msg_free() or
 * ext_pex_msg_release()).  IPv4 and IPv6 lists are merged (IPv4 first);
 * entries with port 0 are skipped; an added.f whose length is not the
 * count of added is ignored (flags 0), as mature clients do; at most
 * EXT_PEX_ACCEPT_MAX added and dropped are kept.  Returns 0, or an enum
 * ext_error with *reterr_offset; ret is written only on success. */
int ext_pex_parse(struct ext_pex_msg *ret, const void *buf, size_t len,
                  size_t *reterr_offset);

/* Free m's peers (m itself is the caller's) / free a heap m and its
 * peers.  Both accept NULL. */
void ext_pex_msg_release(struct ext_pex_msg *m);
void ext_pex_msg_free(void *m);

/* Append a whole extended message with ext_id (the peer's id for ut_pex)
 * announcing added[0..n_added) and dropped[0..n_dropped) to b.  Returns
 * the bytes appended, -EINVAL if a list is over EXT_PEX_SEND_MAX or an
 * entry has an addr_len other than 4 or 16 (nothing appended),
 * -EMSGSIZE or -ENOMEM (b as before). */
int ext_pex_put(struct buf *b, uint8_t ext_id, const struct ext_pex_peer *added,
                size_t n_added, const struct ext_pex_peer *dropped,
                size_t n_dropped);

/* What we told one peer: the set of peers last announced to it and when.
 * The caller (the reactor) keeps one per connection with ut_pex. */
struct ext_pex_state {
    struct ext_pex_peer *sent; /* owned: sorted by address and port */
    size_t n_sent;
    int64_t last_ms; /* when the last message was made */
    bool any;        /* a message was made */
};

void ext_pex_state_init(struct ext_pex_state *s);
void ext_pex_state_release(struct ext_pex_state *s);

/* True if a message may be made now: never made, or EXT_PEX_INTERVAL_MS
 * since the last one.  now_ms: any monotonic clock in ms. */
bool ext_pex_state_due(const struct ext_pex_state *s, int64_t now_ms);

/* The next message for a peer: cur[0..n_cur) is the set of peers to
 * announce now (duplicates ignored; the caller leaves out the peer the
 * message goes to).  Writes to *ret (a new message; ext_pex_msg_release)
 * the peers of cur not in the sent set (at most EXT_PEX_SEND_MAX, with
 * their flags) and those of the sent set not in cur (at most
 * EXT_PEX_SEND_MAX); what did not fit comes in a later message.  The
 * sent set is updated as if the message were sent, and last_ms = now_ms,
 * but only when the message is not empty.  Returns 1 (a message in
 * *ret), 0 (nothing changed: *ret is empty), -EAGAIN (not due: see
 * ext_pex_state_due), or -ENOMEM (s unchanged).  Cost: O(n log n) in
 * n_cur + n_sent. */
int ext_pex_state_next(struct ext_pex_state *s, const struct ext_pex_peer *cur,
                       size_t n_cur, int64_t now_ms, struct ext_pex_msg *ret);

/* Order of peers by (addr_len, addr, port): for sorting and lookups. */
int ext_pex_peer_cmp(const void *a, const void *b);

#endif
