/* wire — the Messenger: the BitTorrent peer wire codec.
 *
 * The decoder is one function of the bytes it is given.  Its checks run in
 * the order of the bytes they need (the length prefix, then the id, then
 * the fields, then the whole body), so a check that fails on a short
 * buffer fails the same way on a longer one: feeding a stream in pieces
 * gives exactly what feeding it whole gives.
 */
#include "common/wire.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/be.h"
#include "common/bencode.h"
#include "common/buf.h"

const struct wire_limits wire_limits_default = {
    .max_block = WIRE_BLOCK_SIZE,
    .max_extended = 1u << 20,
    .max_unknown = 1u << 20,
    .max_bitfield = 512u << 10,
    .max_ext_handshake = 64u << 10,
    .max_metadata_size = 16u << 20,
};

/* The extension handshake is a small flat dictionary: these bound what
 * bencode may allocate for one. */
#define WIRE_EXT_MAX_DEPTH 8
#define WIRE_EXT_MAX_NODES 4096

static const char *const wire_errors[] = {
    [-WIRE_OK] = "success",
    [-WIRE_E_PROTOCOL] = "not the BitTorrent protocol handshake",
    [-WIRE_E_INFO_HASH] = "handshake for another info-hash",
    [-WIRE_E_TOO_LONG] = "message too long",
    [-WIRE_E_LENGTH] = "message length wrong for its type",
    [-WIRE_E_UNKNOWN_ID] = "unknown message id",
    [-WIRE_E_INDEX] = "piece index out of range",
    [-WIRE_E_BLOCK_SIZE] = "block length zero or too large",
    [-WIRE_E_BLOCK_RANGE] = "block past the end of the piece",
    [-WIRE_E_BITFIELD_LENGTH] = "bitfield length does not match the torrent",
    [-WIRE_E_BITFIELD_SPARE] = "bitfield has spare bits set",
    [-WIRE_E_EXT_TOO_LONG] = "extension handshake too long",
    [-WIRE_E_EXT_BENCODE] = "extension handshake is not valid bencode",
    [-WIRE_E_EXT_NOT_DICT] = "extension handshake is not a dictionary",
    [-WIRE_E_NOMEM] = "out of memory",
};

const char *
wire_strerror(int err)
{
    if (err > 0 || err <= WIRE_E_MIN)
        return "unknown error";
    return wire_errors[-err];
}

/* --- handshake --- */

void
wire_reserved_set(uint8_t reserved[WIRE_RESERVED_LEN], unsigned features)
{
    memset(reserved, 0, WIRE_RESERVED_LEN);
    if (features & WIRE_F_EXTENDED)
        reserved[5] |= 0x10;
    if (features & WIRE_F_FAST)
        reserved[7] |= 0x04;
    if (features & WIRE_F_DHT)
        reserved[7] |= 0x01;
}

unsigned
wire_reserved_features(const uint8_t reserved[WIRE_RESERVED_LEN])
{
    unsigned f = 0;
    if (reserved[5] & 0x10)
        f |= WIRE_F_EXTENDED;
    if (reserved[7] & 0x04)
        f |= WIRE_F_FAST;
    if (reserved[7] & 0x01)
        f |= WIRE_F_DHT;
    return f;
}

int
wire_put_handshake(void *out, size_t size, const struct wire_handshake *h)
{
    if (size < WIRE_HANDSHAKE_LEN)
        return -EMSGSIZE;
    uint8_t *p = out;
    p[0] = WIRE_PROTOCOL_LEN;
    memcpy(p + 1, WIRE_PROTOCOL, WIRE_PROTOCOL_LEN);
    memcpy(p + 1 + WIRE_PROTOCOL_LEN, h->reserved, WIRE_RESERVED_LEN);
    memcpy(p + 1 + WIRE_PROTOCOL_LEN + WIRE_RESERVED_LEN, h->info_hash,
           WIRE_HASH_LEN);
    memcpy(p + WIRE_HANDSHAKE_HEAD_LEN, h->peer_id, WIRE_PEER_ID_LEN);
    return WIRE_HANDSHAKE_LEN;
}

int
wire_handshake_parse(struct wire_handshake *ret, const void *buf, size_t len,
                     const uint8_t *expect_hash, size_t *reterr_offset)
{
    const uint8_t *p = buf;
    size_t hash_off = 1 + WIRE_PROTOCOL_LEN + WIRE_RESERVED_LEN;

    /* Byte by byte, so that an HTTP request or garbage is refused at its
     * first byte rather than after 68. */
    if (len > 0 && p[0] != WIRE_PROTOCOL_LEN)
        goto bad_protocol_0;
    for (size_t i = 1; i < len && i <= WIRE_PROTOCOL_LEN; i++)
        if (p[i] != (uint8_t)WIRE_PROTOCOL[i - 1]) {
            if (reterr_offset)
                *reterr_offset = i;
            return WIRE_E_PROTOCOL;
        }
    if (len < WIRE_HANDSHAKE_HEAD_LEN)
        return 0;
    if (expect_hash && memcmp(p + hash_off, expect_hash, WIRE_HASH_LEN) != 0) {
        if (reterr_offset)
            *reterr_offset = hash_off;
        return WIRE_E_INFO_HASH;
    }
    memcpy(ret->reserved, p + 1 + WIRE_PROTOCOL_LEN, WIRE_RESERVED_LEN);
    memcpy(ret->info_hash, p + hash_off, WIRE_HASH_LEN);
    if (len < WIRE_HANDSHAKE_LEN) {
        memset(ret->peer_id, 0, WIRE_PEER_ID_LEN);
        ret->has_peer_id = false;
        return WIRE_HANDSHAKE_HEAD_LEN;
    }
    memcpy(ret->peer_id, p + WIRE_HANDSHAKE_HEAD_LEN, WIRE_PEER_ID_LEN);
    ret->has_peer_id = true;
    return WIRE_HANDSHAKE_LEN;

bad_protocol_0:
    if (reterr_offset)
        *reterr_offset = 0;
    return WIRE_E_PROTOCOL;
}

/* --- peer ids --- */

void
wire_peer_id_make(uint8_t ret[WIRE_PEER_ID_LEN],
                  const uint8_t random[WIRE_PEER_ID_RANDOM])
{
    static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t plen = sizeof(WIRE_PEER_ID_PREFIX) - 1;
    _Static_assert(sizeof(WIRE_PEER_ID_PREFIX) - 1 + WIRE_PEER_ID_RANDOM ==
                       WIRE_PEER_ID_LEN,
                   "peer id prefix + random must be 20 bytes");
    memcpy(ret, WIRE_PEER_ID_PREFIX, plen);
    /* A slight bias towards the first characters (256 % 62 = 8) does not
     * matter for a peer id. */
    for (size_t i = 0; i < WIRE_PEER_ID_RANDOM; i++)
        ret[plen + i] = (uint8_t)alphabet[random[i] % (sizeof(alphabet) - 1)];
}

/* A version character of an Azureus-style id: 0-9, then A-Z for 10-35;
 * -1 for anything else. */
static int
version_digit(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'Z')
        return c - 'A' + 10;
    return -1;
}

static const struct {
    char code[3];
    const char *name;
    int parts; /* version components shown; 0: Transmission's own rule */
} wire_clients[] = {
    {"TD", "torrentd", 4},
    {"TR", "Transmission", 0},
    {"lt", "libtorrent", 3}, /* rakshasa's libtorrent (rTorrent) */
    {"LT", "libtorrent", 4}, /* libtorrent (Rasterbar) */
    {"qB", "qBittorrent", 3},
    {"DE", "Deluge", 3},
    {"UT", "\xc2\xb5Torrent", 3},
    {"UM", "\xc2\xb5Torrent Mac", 3},
    {"AZ", "Vuze", 4},
};

size_t
wire_client_name(char *out, size_t size,
                 const uint8_t peer_id[WIRE_PEER_ID_LEN])
{
    char tmp[WIRE_CLIENT_NAME_MAX * 2];
    const char *name = "unknown";
    int v[4];
    int n = -1;

    for (int i = 0; i < 4; i++)
        v[i] = version_digit(peer_id[3 + i]);
    if (peer_id[0] != '-' || peer_id[7] != '-')
        goto out;
    for (size_t k = 0; k < sizeof(wire_clients) / sizeof(wire_clients[0]);
         k++) {
        if (memcmp(peer_id + 1, wire_clients[k].code, 2) != 0)
            continue;
        const char *cl = wire_clients[k].name;
        switch (wire_clients[k].parts) {
        case 0:
            /* Transmission: from 4.0 "-TR4060-" is 4.0.6; before,
             * "-TR2940-" is 2.94 (the fourth character marks betas). */
            if (v[0] >= 4 && v[1] >= 0 && v[2] >= 0)
                n = snprintf(tmp, sizeof(tmp), "%s %d.%d.%d", cl, v[0], v[1],
                             v[2]);
            else if (v[0] >= 0 && v[1] >= 0 && v[1] <= 9 && v[2] >= 0 &&
                     v[2] <= 9)
                n = snprintf(tmp, sizeof(tmp), "%s %d.%d%d", cl, v[0], v[1],
                             v[2]);
            break;
        case 3:
            if (v[0] >= 0 && v[1] >= 0 && v[2] >= 0)
                n = snprintf(tmp, sizeof(tmp), "%s %d.%d.%d", cl, v[0], v[1],
                             v[2]);
            break;
        default:
            if (v[0] >= 0 && v[1] >= 0 && v[2] >= 0 && v[3] >= 0)
                n = snprintf(tmp, sizeof(tmp), "%s %d.%d.%d.%d", cl, v[0], v[1],
                             v[2], v[3]);
            break;
        }
        break;
    }
out:
    if (n < 0 || (size_t)n >= sizeof(tmp))
        n = snprintf(tmp, sizeof(tmp), "%s", name);
    if (size > 0) {
        size_t c = (size_t)n < size ? (size_t)n : size - 1;
        memcpy(out, tmp, c);
        out[c] = '\0';
    }
    return (size_t)n;
}

/* --- torrent and decoder set-up --- */

int
wire_torrent_set(struct wire_torrent *ret, uint64_t total_size,
                 uint32_t piece_length)
{
    if (piece_length == 0 || total_size == 0)
        return -EINVAL;
    uint64_t count = (total_size - 1) / piece_length + 1;
    if (count > UINT32_MAX)
        return -EINVAL;
    ret->piece_count = (uint32_t)count;
    ret->piece_length = piece_length;
    ret->last_piece_length =
        (uint32_t)(total_size - (count - 1) * (uint64_t)piece_length);
    return 0;
}

static bool
torrent_ok(const struct wire_torrent *t)
{
    return t->piece_count == 0 ||
           (t->piece_length > 0 && t->last_piece_length > 0 &&
            t->last_piece_length <= t->piece_length);
}

int
wire_decoder_set_torrent(struct wire_decoder *dec,
                         const struct wire_torrent *tor)
{
    static const struct wire_torrent unknown;
    if (!tor)
        tor = &unknown;
    if (!torrent_ok(tor))
        return -EINVAL;
    dec->tor = *tor;
    return 0;
}

int
wire_decoder_init(struct wire_decoder *dec, const struct wire_limits *lim,
                  const struct wire_torrent *tor)
{
    const struct wire_limits *d = &wire_limits_default;
    struct wire_limits l = lim ? *lim : *d;

    if (tor && !torrent_ok(tor))
        return -EINVAL;
    if (!l.max_block)
        l.max_block = d->max_block;
    if (l.max_block > WIRE_BLOCK_MAX)
        l.max_block = WIRE_BLOCK_MAX;
    if (!l.max_extended)
        l.max_extended = d->max_extended;
    if (l.max_extended > WIRE_LIMIT_CAP)
        l.max_extended = WIRE_LIMIT_CAP;
    if (!l.max_unknown)
        l.max_unknown = d->max_unknown;
    if (l.max_unknown > WIRE_LIMIT_CAP)
        l.max_unknown = WIRE_LIMIT_CAP;
    if (!l.max_bitfield)
        l.max_bitfield = d->max_bitfield;
    if (l.max_bitfield > WIRE_LIMIT_CAP)
        l.max_bitfield = WIRE_LIMIT_CAP;
    if (!l.max_ext_handshake)
        l.max_ext_handshake = d->max_ext_handshake;
    if (!l.max_metadata_size)
        l.max_metadata_size = d->max_metadata_size;
    memset(dec, 0, sizeof(*dec));
    dec->lim = l;
    return wire_decoder_set_torrent(dec, tor);
}

static uint64_t
bitfield_bytes(const struct wire_decoder *dec)
{
    return ((uint64_t)dec->tor.piece_count + 7) / 8;
}

/* The largest length prefix (id and body) of any message. */
static uint64_t
max_body(const struct wire_decoder *dec)
{
    uint64_t m = 13; /* request, cancel, reject */
    uint64_t piece = 9 + (uint64_t)dec->lim.max_block;
    uint64_t bits = 1 + (dec->tor.piece_count ? bitfield_bytes(dec)
                                              : dec->lim.max_bitfield);
    uint64_t ext = 2 + (uint64_t)dec->lim.max_extended;
    uint64_t unk = 1 + (uint64_t)dec->lim.max_unknown;
    if (piece > m)
        m = piece;
    if (bits > m)
        m = bits;
    if (ext > m)
        m = ext;
    if (unk > m)
        m = unk;
    return m;
}

size_t
wire_decoder_max_message(const struct wire_decoder *dec)
{
    return (size_t)(WIRE_PREFIX_LEN + max_body(dec));
}

static int
fail(struct wire_decoder *dec, int err, size_t off)
{
    dec->err_offset = off;
    return err;
}

/* The bytes of piece index (which exists). */
static uint32_t
piece_size(const struct wire_decoder *dec, uint32_t index)
{
    return index == dec->tor.piece_count - 1 ? dec->tor.last_piece_length
                                             : dec->tor.piece_length;
}

static bool
index_bad(const struct wire_decoder *dec, uint32_t index)
{
    return dec->tor.piece_count && index >= dec->tor.piece_count;
}

static bool
range_bad(const struct wire_decoder *dec, uint32_t index, uint32_t begin,
          uint32_t length)
{
    return dec->tor.piece_count &&
           (uint64_t)begin + length > piece_size(dec, index);
}

/* The length prefix (id included) that a fixed-size message must have;
 * 0 for the others. */
static uint32_t
fixed_body(uint8_t id)
{
    switch (id) {
    case WIRE_CHOKE:
    case WIRE_UNCHOKE:
    case WIRE_INTERESTED:
    case WIRE_NOT_INTERESTED:
    case WIRE_HAVE_ALL:
    case WIRE_HAVE_NONE:
        return 1;
    case WIRE_HAVE:
    case WIRE_SUGGEST:
    case WIRE_ALLOWED_FAST:
        return 5;
    case WIRE_REQUEST:
    case WIRE_CANCEL:
    case WIRE_REJECT:
        return 13;
    case WIRE_PORT:
        return 3;
    default:
        return 0;
    }
}

int
wire_decode(struct wire_decoder *dec, struct wire_msg *ret_msg, const void *buf,
            size_t len)
{
    const uint8_t *p = buf;
    struct wire_msg m = {0};

    dec->need = 0;
    dec->err_offset = 0;
    dec->skip = 0;

    /* 4 bytes: the length prefix. */
    if (len < WIRE_PREFIX_LEN) {
        dec->need = WIRE_PREFIX_LEN;
        return 0;
    }
    uint32_t n = be32_get(p);
    if (n == 0) {
        m.type = WIRE_KEEPALIVE;
        *ret_msg = m;
        return WIRE_KEEPALIVE_LEN;
    }
    if (n > max_body(dec))
        return fail(dec, WIRE_E_TOO_LONG, 0);

    /* 5 bytes: the id, and the length it allows. */
    if (len < WIRE_PREFIX_LEN + 1) {
        dec->need = WIRE_PREFIX_LEN + 1;
        return 0;
    }
    uint8_t id = p[4];
    uint32_t fixed = fixed_body(id);
    switch (id) {
    case WIRE_PIECE:
        if (n < 10)
            return fail(dec, WIRE_E_LENGTH, 0);
        if (n - 9 > dec->lim.max_block)
            return fail(dec, WIRE_E_TOO_LONG, 0);
        break;
    case WIRE_BITFIELD:
        if (dec->tor.piece_count && n - 1 != bitfield_bytes(dec))
            return fail(dec, WIRE_E_BITFIELD_LENGTH, 0);
        if (n - 1 > dec->lim.max_bitfield && !dec->tor.piece_count)
            return fail(dec, WIRE_E_TOO_LONG, 0);
        break;
    case WIRE_EXTENDED:
        if (n < 2)
            return fail(dec, WIRE_E_LENGTH, 0);
        if (n - 2 > dec->lim.max_extended)
            return fail(dec, WIRE_E_TOO_LONG, 0);
        break;
    default:
        if (fixed == 0) {
            if (n - 1 > dec->lim.max_unknown)
                return fail(dec, WIRE_E_TOO_LONG, 0);
            dec->skip = (size_t)WIRE_PREFIX_LEN + n;
            return fail(dec, WIRE_E_UNKNOWN_ID, 4);
        }
        if (n != fixed)
            return fail(dec, WIRE_E_LENGTH, 0);
        break;
    }

    /* A piece's header is checked before its block arrives. */
    if (id == WIRE_PIECE && len >= WIRE_PIECE_HEADER_LEN) {
        uint32_t index = be32_get(p + 5), begin = be32_get(p + 9);
        if (index_bad(dec, index))
            return fail(dec, WIRE_E_INDEX, 5);
        if (range_bad(dec, index, begin, n - 9))
            return fail(dec, WIRE_E_BLOCK_RANGE, 9);
    } else if (id == WIRE_PIECE && len >= 9) {
        if (index_bad(dec, be32_get(p + 5)))
            return fail(dec, WIRE_E_INDEX, 5);
    }

    /* The whole message. */
    size_t total = (size_t)WIRE_PREFIX_LEN + n;
    if (len < total) {
        dec->need = total;
        return 0;
    }
    m.type = id;
    switch (id) {
    case WIRE_HAVE:
    case WIRE_SUGGEST:
    case WIRE_ALLOWED_FAST:
        m.index = be32_get(p + 5);
        if (index_bad(dec, m.index))
            return fail(dec, WIRE_E_INDEX, 5);
        break;
    case WIRE_REQUEST:
    case WIRE_CANCEL:
    case WIRE_REJECT:
        m.index = be32_get(p + 5);
        m.begin = be32_get(p + 9);
        m.length = be32_get(p + 13);
        if (index_bad(dec, m.index))
            return fail(dec, WIRE_E_INDEX, 5);
        if (m.length == 0 || m.length > dec->lim.max_block)
            return fail(dec, WIRE_E_BLOCK_SIZE, 13);
        if (range_bad(dec, m.index, m.begin, m.length))
            return fail(dec, WIRE_E_BLOCK_RANGE, 9);
        break;
    case WIRE_PIECE:
        m.index = be32_get(p + 5);
        m.begin = be32_get(p + 9);
        m.length = n - 9;
        m.data = p + WIRE_PIECE_HEADER_LEN;
        m.data_len = n - 9;
        break;
    case WIRE_BITFIELD:
        m.data = p + 5;
        m.data_len = n - 1;
        if (dec->tor.piece_count && dec->tor.piece_count % 8) {
            unsigned spare = 8 - dec->tor.piece_count % 8;
            if (p[total - 1] & ((1u << spare) - 1))
                return fail(dec, WIRE_E_BITFIELD_SPARE, total - 1);
        }
        break;
    case WIRE_PORT:
        m.port = be16_get(p + 5);
        break;
    case WIRE_EXTENDED:
        m.ext_id = p[5];
        m.data = p + WIRE_EXTENDED_HEADER_LEN;
        m.data_len = n - 2;
        break;
    default:
        break;
    }
    if (m.data_len == 0)
        m.data = NULL;
    *ret_msg = m;
    return (int)total;
}

/* --- encoders --- */

int
wire_put_keepalive(void *out, size_t size)
{
    if (size < WIRE_KEEPALIVE_LEN)
        return -EMSGSIZE;
    be32_put(out, 0);
    return WIRE_KEEPALIVE_LEN;
}

/* Write the length prefix and id of a message whose total size is total. */
static void
put_head(uint8_t *p, size_t total, uint8_t id)
{
    be32_put(p, (uint32_t)(total - WIRE_PREFIX_LEN));
    p[4] = id;
}

int
wire_put_simple(void *out, size_t size, enum wire_type type)
{
    if (type > 0xff || fixed_body((uint8_t)type) != 1)
        return -EINVAL;
    if (size < WIRE_SIMPLE_LEN)
        return -EMSGSIZE;
    put_head(out, WIRE_SIMPLE_LEN, (uint8_t)type);
    return WIRE_SIMPLE_LEN;
}

int
wire_put_have(void *out, size_t size, enum wire_type type, uint32_t index)
{
    if (type != WIRE_HAVE && type != WIRE_SUGGEST && type != WIRE_ALLOWED_FAST)
        return -EINVAL;
    if (size < WIRE_HAVE_LEN)
        return -EMSGSIZE;
    uint8_t *p = out;
    put_head(p, WIRE_HAVE_LEN, (uint8_t)type);
    be32_put(p + 5, index);
    return WIRE_HAVE_LEN;
}

static bool
is_block_type(enum wire_type type)
{
    return type == WIRE_REQUEST || type == WIRE_CANCEL || type == WIRE_REJECT;
}

static void
put_block(uint8_t *p, enum wire_type type, const struct wire_block *b)
{
    put_head(p, WIRE_REQUEST_LEN, (uint8_t)type);
    be32_put(p + 5, b->index);
    be32_put(p + 9, b->begin);
    be32_put(p + 13, b->length);
}

int
wire_put_block(void *out, size_t size, enum wire_type type,
               const struct wire_block *b)
{
    if (!is_block_type(type))
        return -EINVAL;
    if (size < WIRE_REQUEST_LEN)
        return -EMSGSIZE;
    put_block(out, type, b);
    return WIRE_REQUEST_LEN;
}

int
wire_put_blocks(void *out, size_t size, enum wire_type type,
                const struct wire_block *blocks, size_t n)
{
    if (!is_block_type(type))
        return -EINVAL;
    if (n > size / WIRE_REQUEST_LEN || n > INT32_MAX / WIRE_REQUEST_LEN)
        return -EMSGSIZE;
    uint8_t *p = out;
    for (size_t i = 0; i < n; i++, p += WIRE_REQUEST_LEN)
        put_block(p, type, &blocks[i]);
    return (int)(n * WIRE_REQUEST_LEN);
}

int
wire_put_port(void *out, size_t size, uint16_t port)
{
    if (size < WIRE_PORT_LEN)
        return -EMSGSIZE;
    uint8_t *p = out;
    put_head(p, WIRE_PORT_LEN, WIRE_PORT);
    p[5] = (uint8_t)(port >> 8);
    p[6] = (uint8_t)port;
    return WIRE_PORT_LEN;
}

int
wire_put_bitfield(void *out, size_t size, const uint8_t *bits, uint32_t nbytes)
{
    if (nbytes > INT32_MAX - 5)
        return -EINVAL;
    if (size < 5 || size - 5 < nbytes)
        return -EMSGSIZE;
    uint8_t *p = out;
    put_head(p, (size_t)5 + nbytes, WIRE_BITFIELD);
    if (nbytes)
        memcpy(p + 5, bits, nbytes);
    return (int)(5 + nbytes);
}

int
wire_put_piece_header(void *out, size_t size, uint32_t index, uint32_t begin,
                      uint32_t block_len)
{
    if (block_len > UINT32_MAX - 9)
        return -EINVAL;
    if (size < WIRE_PIECE_HEADER_LEN)
        return -EMSGSIZE;
    uint8_t *p = out;
    be32_put(p, 9 + block_len);
    p[4] = WIRE_PIECE;
    be32_put(p + 5, index);
    be32_put(p + 9, begin);
    return WIRE_PIECE_HEADER_LEN;
}

int
wire_put_extended_header(void *out, size_t size, uint8_t ext_id,
                         uint32_t payload_len)
{
    if (payload_len > UINT32_MAX - 2)
        return -EINVAL;
    if (size < WIRE_EXTENDED_HEADER_LEN)
        return -EMSGSIZE;
    uint8_t *p = out;
    be32_put(p, 2 + payload_len);
    p[4] = WIRE_EXTENDED;
    p[5] = ext_id;
    return WIRE_EXTENDED_HEADER_LEN;
}

/* The size of m on the wire, or -EINVAL. */
static int64_t
encoded_size(const struct wire_msg *m)
{
    if (m->data_len && !m->data)
        return -EINVAL;
    if (m->data_len > INT32_MAX - WIRE_PIECE_HEADER_LEN)
        return -EINVAL;
    switch (m->type) {
    case WIRE_KEEPALIVE:
        return WIRE_KEEPALIVE_LEN;
    case WIRE_BITFIELD:
        return 5 + (int64_t)m->data_len;
    case WIRE_PIECE:
        return WIRE_PIECE_HEADER_LEN + (int64_t)m->data_len;
    case WIRE_EXTENDED:
        return WIRE_EXTENDED_HEADER_LEN + (int64_t)m->data_len;
    default:
        if (m->type > 0xff || fixed_body((uint8_t)m->type) == 0)
            return -EINVAL;
        return WIRE_PREFIX_LEN + fixed_body((uint8_t)m->type);
    }
}

int
wire_encode(void *out, size_t size, const struct wire_msg *m)
{
    int64_t total = encoded_size(m);
    if (total < 0)
        return (int)total;
    if (size < (uint64_t)total)
        return -EMSGSIZE;
    uint8_t *p = out;
    const struct wire_block b = {m->index, m->begin, m->length};
    switch (m->type) {
    case WIRE_KEEPALIVE:
        return wire_put_keepalive(out, size);
    case WIRE_HAVE:
    case WIRE_SUGGEST:
    case WIRE_ALLOWED_FAST:
        return wire_put_have(out, size, m->type, m->index);
    case WIRE_REQUEST:
    case WIRE_CANCEL:
    case WIRE_REJECT:
        return wire_put_block(out, size, m->type, &b);
    case WIRE_PORT:
        return wire_put_port(out, size, m->port);
    case WIRE_BITFIELD:
        return wire_put_bitfield(out, size, m->data, m->data_len);
    case WIRE_PIECE:
        (void)wire_put_piece_header(p, size, m->index, m->begin, m->data_len);
        break;
    case WIRE_EXTENDED:
        (void)wire_put_extended_header(p, size, m->ext_id, m->data_len);
        break;
    default:
        return wire_put_simple(out, size, m->type);
    }
    /* piece and extended: the data after the header */
    if (m->data_len)
        memcpy(p + (size_t)total - m->data_len, m->data, m->data_len);
    return (int)total;
}

int
wire_encode_buf(struct buf *b, const struct wire_msg *m)
{
    int64_t total = encoded_size(m);
    if (total < 0)
        return (int)total;
    int r = buf_reserve(b, (size_t)total);
    if (r < 0)
        return r;
    r = wire_encode(b->data + b->len, (size_t)total, m);
    if (r < 0)
        return r;
    b->len += (size_t)r;
    b->data[b->len] = '\0';
    return r;
}

/* --- BEP 10 extension handshake --- */

/* An integer value of doc at idx within [lo, hi]. */
static bool
ext_int(const struct benc_doc *doc, uint32_t idx, int64_t lo, int64_t hi,
        int64_t *ret)
{
    const struct benc_node *nd = benc_node(doc, idx);
    if (!nd || nd->type != BENC_INT || nd->u.i < lo || nd->u.i > hi)
        return false;
    *ret = nd->u.i;
    return true;
}

static void
ext_int_field(const struct benc_doc *doc, uint32_t dict, const char *key,
              int64_t lo, int64_t hi, struct wire_ext_handshake *h,
              unsigned field, int64_t *ret)
{
    uint32_t idx = benc_dict_get(doc, dict, key);
    if (idx == BENC_NONE)
        return;
    if (ext_int(doc, idx, lo, hi, ret))
        h->present |= field;
    else
        h->ignored |= field;
}

/* Copy v into h->client: cut at WIRE_EXT_CLIENT_MAX bytes on a UTF-8
 * boundary, control characters as '?'. */
static void
ext_client(struct wire_ext_handshake *h, const uint8_t *s, size_t n)
{
    if (n > WIRE_EXT_CLIENT_MAX) {
        n = WIRE_EXT_CLIENT_MAX;
        /* s[n] continues a character (10xxxxxx): drop that character's
         * continuation bytes before s[n] and its lead byte. */
        if ((s[n] & 0xc0) == 0x80) {
            while (n > 0 && (s[n - 1] & 0xc0) == 0x80)
                n--;
            if (n > 0)
                n--;
        }
    }
    for (size_t i = 0; i < n; i++)
        h->client[i] = s[i] < 0x20 || s[i] == 0x7f ? '?' : (char)s[i];
    h->client[n] = '\0';
}

int
wire_ext_handshake_parse(struct wire_ext_handshake *ret, const void *buf,
                         size_t len, const struct wire_limits *lim,
                         size_t *reterr_offset)
{
    const struct wire_limits *d = &wire_limits_default;
    size_t max_len = lim && lim->max_ext_handshake ? lim->max_ext_handshake
                                                   : d->max_ext_handshake;
    uint32_t max_meta = lim && lim->max_metadata_size ? lim->max_metadata_size
                                                      : d->max_metadata_size;
    struct wire_ext_handshake h = {0};
    struct benc_doc doc = {0};
    size_t off = 0;
    int r;

    if (len > max_len) {
        r = WIRE_E_EXT_TOO_LONG;
        off = max_len;
        goto fail;
    }
    const struct benc_limits bl = {
        .max_input = max_len,
        .max_depth = WIRE_EXT_MAX_DEPTH,
        .max_nodes = WIRE_EXT_MAX_NODES,
    };
    r = benc_parse(&doc, buf, len, &bl, 0, &off);
    if (r < 0) {
        r = r == BENC_E_NOMEM ? WIRE_E_NOMEM : WIRE_E_EXT_BENCODE;
        goto fail;
    }
    if (!benc_is(&doc, 0, BENC_DICT)) {
        r = WIRE_E_EXT_NOT_DICT;
        off = 0;
        goto fail;
    }

    uint32_t mi = benc_dict_get(&doc, 0, "m");
    if (mi != BENC_NONE && !benc_is(&doc, mi, BENC_DICT)) {
        r = WIRE_E_EXT_NOT_DICT;
        off = doc.nodes[mi].start;
        goto fail;
    }
    int64_t v;
    if (mi != BENC_NONE) {
        ext_int_field(&doc, mi, "ut_metadata", 0, 255, &h, WIRE_EXT_M_METADATA,
                      &v);
        if (h.present & WIRE_EXT_M_METADATA)
            h.ut_metadata = (uint8_t)v;
        ext_int_field(&doc, mi, "ut_pex", 0, 255, &h, WIRE_EXT_M_PEX, &v);
        if (h.present & WIRE_EXT_M_PEX)
            h.ut_pex = (uint8_t)v;
    }
    ext_int_field(&doc, 0, "p", 1, UINT16_MAX, &h, WIRE_EXT_PORT, &v);
    if (h.present & WIRE_EXT_PORT)
        h.port = (uint16_t)v;
    ext_int_field(&doc, 0, "reqq", 1, UINT32_MAX, &h, WIRE_EXT_REQQ, &v);
    if (h.present & WIRE_EXT_REQQ)
        h.reqq = (uint32_t)v;
    ext_int_field(&doc, 0, "metadata_size", 1, max_meta, &h,
                  WIRE_EXT_METADATA_SIZE, &v);
    if (h.present & WIRE_EXT_METADATA_SIZE)
        h.metadata_size = (uint32_t)v;

    uint32_t idx;
    size_t sl;
    const uint8_t *s;
    if ((idx = benc_dict_get(&doc, 0, "v")) != BENC_NONE) {
        if ((s = benc_str(&doc, idx, &sl)) != NULL) {
            ext_client(&h, s, sl);
            h.present |= WIRE_EXT_CLIENT;
        } else {
            h.ignored |= WIRE_EXT_CLIENT;
        }
    }
    if ((idx = benc_dict_get(&doc, 0, "yourip")) != BENC_NONE) {
        s = benc_str(&doc, idx, &sl);
        if (s && (sl == 4 || sl == 16)) {
            memcpy(h.yourip, s, sl);
            h.yourip_len = (uint8_t)sl;
            h.present |= WIRE_EXT_YOURIP;
        } else {
            h.ignored |= WIRE_EXT_YOURIP;
        }
    }
    benc_doc_release(&doc);
    *ret = h;
    return 0;

fail:
    benc_doc_release(&doc);
    if (reterr_offset)
        *reterr_offset = off;
    return r;
}

static int
ext_put_int(struct buf *b, const char *key, int64_t v)
{
    int r = benc_put_cstr(b, key);
    return r < 0 ? r : benc_put_int(b, v);
}

int
wire_put_ext_handshake(struct buf *b, const struct wire_ext_handshake *h)
{
    size_t start = b->len;
    uint8_t head[WIRE_EXTENDED_HEADER_LEN] = {0};
    int r = buf_append(b, head, sizeof(head));

    /* Keys in sorted order (BEP 3): m, metadata_size, p, reqq, v, yourip;
     * in m: ut_metadata, ut_pex. */
    if (r >= 0)
        r = benc_put_dict(b);
    if (r >= 0)
        r = benc_put_cstr(b, "m");
    if (r >= 0)
        r = benc_put_dict(b);
    if (r >= 0 && h->ut_metadata)
        r = ext_put_int(b, "ut_metadata", h->ut_metadata);
    if (r >= 0 && h->ut_pex)
        r = ext_put_int(b, "ut_pex", h->ut_pex);
    if (r >= 0)
        r = benc_put_end(b);
    if (r >= 0 && h->metadata_size)
        r = ext_put_int(b, "metadata_size", h->metadata_size);
    if (r >= 0 && h->port)
        r = ext_put_int(b, "p", h->port);
    if (r >= 0 && h->reqq)
        r = ext_put_int(b, "reqq", h->reqq);
    if (r >= 0 && h->client[0]) {
        r = benc_put_cstr(b, "v");
        if (r >= 0)
            r = benc_put_str(b, h->client,
                             strnlen(h->client, sizeof(h->client)));
    }
    if (r >= 0 && (h->yourip_len == 4 || h->yourip_len == 16)) {
        r = benc_put_cstr(b, "yourip");
        if (r >= 0)
            r = benc_put_str(b, h->yourip, h->yourip_len);
    }
    if (r >= 0)
        r = benc_put_end(b);
    if (r < 0) {
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
        return r;
    }
    size_t n = b->len - start;
    (void)wire_put_extended_header(b->data + start, n, 0,
                                   (uint32_t)(n - WIRE_EXTENDED_HEADER_LEN));
    return (int)n;
}

/* --- BEP 6 allowed-fast set --- */

int
wire_allowed_fast(uint32_t *ret, size_t k,
                  const uint8_t info_hash[WIRE_HASH_LEN], const uint8_t *addr,
                  size_t addr_len, uint32_t piece_count)
{
    uint8_t x[16 + WIRE_HASH_LEN];
    uint8_t md[EVP_MAX_MD_SIZE];
    size_t xl;

    if ((addr_len != 4 && addr_len != 16) || k > WIRE_ALLOWED_FAST_MAX)
        return -EINVAL;
    if (k > piece_count)
        k = piece_count;
    if (k == 0)
        return 0;
    /* x = (ip & 0xffffff00) + info-hash; IPv6 keeps its /48. */
    memcpy(x, addr, addr_len);
    if (addr_len == 4)
        x[3] = 0;
    else
        memset(x + 6, 0, 10);
    memcpy(x + addr_len, info_hash, WIRE_HASH_LEN);
    xl = addr_len + WIRE_HASH_LEN;

    size_t n = 0;
    while (n < k) {
        if (EVP_Digest(x, xl, md, NULL, EVP_sha1(), NULL) != 1)
            return -ENOMEM;
        memcpy(x, md, WIRE_HASH_LEN);
        xl = WIRE_HASH_LEN;
        for (size_t i = 0; i < 5 && n < k; i++) {
            uint32_t index = be32_get(x + 4 * i) % piece_count;
            size_t j = 0;
            while (j < n && ret[j] != index)
                j++;
            if (j == n)
                ret[n++] = index;
        }
    }
    return (int)n;
}
