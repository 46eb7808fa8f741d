/* Unit tests for common/wire: the handshake, every message type both ways,
 * every error value with its offset, truncation of a valid stream at every
 * length, feeding in fragments against feeding whole, a deterministic
 * bit-flip loop, the extension handshake with its limits, the BEP 6
 * allowed-fast vectors and the client-name table. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/wire.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- allocation failure injection ---
 * bencode.c grows its node array with reallocarray(); this definition,
 * linked into the test program, takes its place.  fail_allocs_in = n makes
 * the n-th call from now fail (0 = never). */
static int fail_allocs_in;

void *
reallocarray(void *p, size_t n, size_t size)
{
    if (fail_allocs_in > 0 && --fail_allocs_in == 0)
        return NULL;
    if (size && n > SIZE_MAX / size)
        return NULL;
    return realloc(p, n * size);
}

/* --- helpers --- */

/* Input as an exact-size heap copy, so ASan sees any read past the end. */
static uint8_t *
dup_exact(const void *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

/* The torrent of most tests: 37 pieces (3 spare bits in a 5-byte
 * bitfield), 32 KiB each, the last one 1000 bytes. */
static const struct wire_torrent tor37 = {
    .piece_count = 37,
    .piece_length = 32768,
    .last_piece_length = 1000,
};

static void
dec_init(struct wire_decoder *dec, const struct wire_limits *lim,
         const struct wire_torrent *tor)
{
    assert_int_equal(wire_decoder_init(dec, lim, tor), 0);
}

/* Decode one message from an exact-size copy of p[0..n). */
static int
decode1(struct wire_decoder *dec, struct wire_msg *m, const void *p, size_t n)
{
    uint8_t *in = dup_exact(p, n);
    int r = wire_decode(dec, m, in, n);
    if (r > 0 && m->data) {
        /* data must lie inside the message */
        assert_true(m->data >= in && m->data + m->data_len <= in + r);
        /* Let the caller compare data after the copy is gone. */
        m->data = (const uint8_t *)p + (m->data - in);
    }
    free(in);
    return r;
}

/* --- error strings --- */

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e > WIRE_E_MIN; e--) {
        const char *s = wire_strerror(e);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
    }
    assert_string_equal(wire_strerror(WIRE_E_MIN), "unknown error");
    assert_string_equal(wire_strerror(1), "unknown error");
    assert_string_equal(wire_strerror(-1000), "unknown error");
}

/* --- handshake --- */

static void
make_handshake(struct wire_handshake *h)
{
    memset(h, 0, sizeof(*h));
    wire_reserved_set(h->reserved, WIRE_F_EXTENDED | WIRE_F_FAST | WIRE_F_DHT);
    for (int i = 0; i < WIRE_HASH_LEN; i++)
        h->info_hash[i] = (uint8_t)(0xa0 + i);
    memcpy(h->peer_id, "-TD0100-abcdefghijkl", WIRE_PEER_ID_LEN);
    h->has_peer_id = true;
}

static void
test_reserved(void **state)
{
    (void)state;
    uint8_t r[8];
    wire_reserved_set(r, WIRE_F_EXTENDED);
    assert_memory_equal(r, "\0\0\0\0\0\x10\0\0", 8);
    wire_reserved_set(r, WIRE_F_FAST);
    assert_memory_equal(r, "\0\0\0\0\0\0\0\x04", 8);
    wire_reserved_set(r, WIRE_F_DHT);
    assert_memory_equal(r, "\0\0\0\0\0\0\0\x01", 8);
    for (unsigned f = 0; f < 8; f++) {
        wire_reserved_set(r, f);
        assert_int_equal(wire_reserved_features(r), f);
    }
    /* Bits we do not know are ignored. */
    memset(r, 0xff, sizeof(r));
    assert_int_equal(wire_reserved_features(r),
                     WIRE_F_EXTENDED | WIRE_F_FAST | WIRE_F_DHT);
    memset(r, 0, sizeof(r));
    r[0] = 0x80; /* Azureus messaging, libtorrent's v2 bit, ... */
    r[7] = 0x10;
    assert_int_equal(wire_reserved_features(r), 0);
}

static void
test_handshake(void **state)
{
    (void)state;
    struct wire_handshake h, got;
    uint8_t out[WIRE_HANDSHAKE_LEN + 10];
    make_handshake(&h);

    assert_int_equal(wire_put_handshake(out, WIRE_HANDSHAKE_LEN - 1, &h),
                     -EMSGSIZE);
    assert_int_equal(wire_put_handshake(out, sizeof(out), &h),
                     WIRE_HANDSHAKE_LEN);
    assert_int_equal(out[0], 19);
    assert_memory_equal(out + 1, "BitTorrent protocol", 19);
    assert_memory_equal(out + 20, h.reserved, 8);
    assert_memory_equal(out + 28, h.info_hash, 20);
    assert_memory_equal(out + 48, h.peer_id, 20);
    memcpy(out + WIRE_HANDSHAKE_LEN, "\0\0\0\x01\x01xxxxx", 10);

    /* At every length: need more, then the head, then all of it; bytes
     * after the handshake are not looked at. */
    for (size_t len = 0; len <= sizeof(out); len++) {
        uint8_t *in = dup_exact(out, len);
        memset(&got, 0x5a, sizeof(got));
        size_t off = 777;
        int r = wire_handshake_parse(&got, in, len, h.info_hash, &off);
        assert_int_equal(off, 777);
        if (len < WIRE_HANDSHAKE_HEAD_LEN) {
            assert_int_equal(r, 0);
            assert_int_equal(got.reserved[0], 0x5a); /* untouched */
        } else if (len < WIRE_HANDSHAKE_LEN) {
            assert_int_equal(r, WIRE_HANDSHAKE_HEAD_LEN);
            assert_memory_equal(got.reserved, h.reserved, 8);
            assert_memory_equal(got.info_hash, h.info_hash, 20);
            assert_false(got.has_peer_id);
        } else {
            assert_int_equal(r, WIRE_HANDSHAKE_LEN);
            assert_memory_equal(&got, &h, sizeof(h));
        }
        /* expect_hash NULL: the same */
        int r2 = wire_handshake_parse(&got, in, len, NULL, NULL);
        assert_int_equal(r2, r);
        free(in);
    }

    /* A wrong byte in the protocol string, found as soon as it arrives. */
    for (size_t pos = 0; pos < 20; pos++) {
        uint8_t bad[WIRE_HANDSHAKE_LEN];
        memcpy(bad, out, sizeof(bad));
        bad[pos] ^= 0x20;
        for (size_t len = 0; len <= sizeof(bad); len++) {
            size_t off = 777;
            int r = wire_handshake_parse(&got, bad, len, NULL, &off);
            if (len <= pos) {
                assert_int_equal(r, 0);
                assert_int_equal(off, 777);
            } else {
                assert_int_equal(r, WIRE_E_PROTOCOL);
                assert_int_equal(off, pos);
            }
        }
    }
    /* Other protocols. */
    static const char *const others[] = {
        "GET /announce HTTP/1.1\r\n",
        "\x13" "BitTorrent Protocol",
        "\x12" "BitTorrent protoco",
        "\0",
    };
    static const size_t others_off[] = {0, 12, 0, 0};
    for (size_t i = 0; i < ARRAY_SIZE(others); i++) {
        size_t off = 777;
        size_t len = strlen(others[i]) ? strlen(others[i]) : 1;
        assert_int_equal(wire_handshake_parse(&got, others[i], len, NULL, &off),
                         WIRE_E_PROTOCOL);
        assert_int_equal(off, others_off[i]);
    }

    /* Another info-hash. */
    uint8_t other_hash[20];
    memcpy(other_hash, h.info_hash, 20);
    other_hash[19] ^= 1;
    for (size_t len = WIRE_HANDSHAKE_HEAD_LEN; len <= WIRE_HANDSHAKE_LEN;
         len++) {
        size_t off = 777;
        assert_int_equal(wire_handshake_parse(&got, out, len, other_hash, &off),
                         WIRE_E_INFO_HASH);
        assert_int_equal(off, 28);
    }
    assert_int_equal(
        wire_handshake_parse(&got, out, WIRE_HANDSHAKE_HEAD_LEN - 1,
                             other_hash, NULL),
        0);
}

/* --- peer ids and client names --- */

static void
test_peer_id(void **state)
{
    (void)state;
    uint8_t rnd[WIRE_PEER_ID_RANDOM], id[WIRE_PEER_ID_LEN], id2[20];
    for (int round = 0; round < 256; round++) {
        for (int i = 0; i < WIRE_PEER_ID_RANDOM; i++)
            rnd[i] = (uint8_t)(round * 13 + i * 61);
        wire_peer_id_make(id, rnd);
        assert_memory_equal(id, "-TD0100-", 8);
        for (int i = 8; i < 20; i++)
            assert_true((id[i] >= '0' && id[i] <= '9') ||
                        (id[i] >= 'a' && id[i] <= 'z') ||
                        (id[i] >= 'A' && id[i] <= 'Z'));
        wire_peer_id_make(id2, rnd); /* deterministic */
        assert_memory_equal(id, id2, 20);
        char name[WIRE_CLIENT_NAME_MAX];
        wire_client_name(name, sizeof(name), id);
        assert_string_equal(name, "torrentd 0.1.0.0");
    }
    memset(rnd, 0, sizeof(rnd));
    wire_peer_id_make(id, rnd);
    assert_memory_equal(id, "-TD0100-000000000000", 20);
    memset(rnd, 0xff, sizeof(rnd));
    wire_peer_id_make(id, rnd); /* 255 % 62 = 7 */
    assert_memory_equal(id, "-TD0100-777777777777", 20);
}

static void
test_client_name(void **state)
{
    (void)state;
    static const struct {
        const char *id;
        const char *name;
    } cases[] = {
        {"-TD0100-abcdefghijkl", "torrentd 0.1.0.0"},
        {"-TR3000-abcdefghijkl", "Transmission 3.00"},
        {"-TR2940-abcdefghijkl", "Transmission 2.94"},
        {"-TR294Z-abcdefghijkl", "Transmission 2.94"},
        {"-TR4060-abcdefghijkl", "Transmission 4.0.6"},
        {"-TR2A40-abcdefghijkl", "unknown"},
        {"-lt0D80-abcdefghijkl", "libtorrent 0.13.8"},
        {"-LT2090-abcdefghijkl", "libtorrent 2.0.9.0"},
        {"-LT1J00-abcdefghijkl", "libtorrent 1.19.0.0"},
        {"-qB4630-abcdefghijkl", "qBittorrent 4.6.3"},
        {"-DE211s-abcdefghijkl", "Deluge 2.1.1"},
        {"-UT355W-abcdefghijkl", "\xc2\xb5Torrent 3.5.5"},
        {"-UM1870-abcdefghijkl", "\xc2\xb5Torrent Mac 1.8.7"},
        {"-AZ5770-abcdefghijkl", "Vuze 5.7.7.0"},
        {"-XX1234-abcdefghijkl", "unknown"},
        {"-td0100-abcdefghijkl", "unknown"},
        {"-TD01a0-abcdefghijkl", "unknown"},
        {"-AZ57 0-abcdefghijkl", "unknown"},
        {"-qB46 0-abcdefghijkl", "unknown"},
        {"-TD0100_abcdefghijkl", "unknown"},
        {"M7-10-2--abcdefghijk", "unknown"},
        {"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", "unknown"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char name[WIRE_CLIENT_NAME_MAX];
        size_t n = wire_client_name(name, sizeof(name),
                                    (const uint8_t *)cases[i].id);
        assert_string_equal(name, cases[i].name);
        assert_int_equal(n, strlen(cases[i].name));
    }
    /* snprintf-like truncation. */
    char small[5] = "xxxx";
    const uint8_t *td = (const uint8_t *)"-TD0100-abcdefghijkl";
    assert_int_equal(wire_client_name(small, sizeof(small), td), 16);
    assert_string_equal(small, "torr");
    assert_int_equal(wire_client_name(small, 1, td), 16);
    assert_string_equal(small, "");
    assert_int_equal(wire_client_name(NULL, 0, td), 16);
    /* The longest possible names fit WIRE_CLIENT_NAME_MAX. */
    static const char *const longest[] = {
        "-UMZZZZ-abcdefghijkl", "-TDZZZZ-abcdefghijkl",
        "-LTZZZZ-abcdefghijkl", "-TRZZZZ-abcdefghijkl",
    };
    for (size_t i = 0; i < ARRAY_SIZE(longest); i++)
        assert_true(wire_client_name(NULL, 0,
                                     (const uint8_t *)longest[i]) <
                    WIRE_CLIENT_NAME_MAX);
}

/* --- set-up --- */

static void
test_torrent_set(void **state)
{
    (void)state;
    struct wire_torrent t = {1, 2, 3};
    assert_int_equal(wire_torrent_set(&t, 0, 16384), -EINVAL);
    assert_int_equal(wire_torrent_set(&t, 100, 0), -EINVAL);
    assert_int_equal(wire_torrent_set(&t, (uint64_t)UINT32_MAX * 2 + 1, 1),
                     -EINVAL);
    assert_int_equal(t.piece_count, 1); /* untouched */
    assert_int_equal(wire_torrent_set(&t, 1, 16384), 0);
    assert_int_equal(t.piece_count, 1);
    assert_int_equal(t.last_piece_length, 1);
    assert_int_equal(wire_torrent_set(&t, 32768 * 36 + 1000, 32768), 0);
    assert_memory_equal(&t, &tor37, sizeof(t));
    assert_int_equal(wire_torrent_set(&t, 65536, 32768), 0);
    assert_int_equal(t.piece_count, 2);
    assert_int_equal(t.last_piece_length, 32768);
    assert_int_equal(wire_torrent_set(&t, UINT32_MAX, 1), 0);
    assert_int_equal(t.piece_count, UINT32_MAX);
}

static void
test_decoder_init(void **state)
{
    (void)state;
    struct wire_decoder dec;
    const struct wire_torrent bad[] = {
        {1, 0, 0}, {1, 100, 0}, {1, 100, 101},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        assert_int_equal(wire_decoder_init(&dec, NULL, &bad[i]), -EINVAL);
        dec_init(&dec, NULL, NULL);
        assert_int_equal(wire_decoder_set_torrent(&dec, &bad[i]), -EINVAL);
        assert_int_equal(dec.tor.piece_count, 0);
    }
    /* Defaults, and the caps. */
    struct wire_limits zero = {0};
    dec_init(&dec, &zero, NULL);
    assert_memory_equal(&dec.lim, &wire_limits_default, sizeof(dec.lim));
    struct wire_limits huge = {
        UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
    };
    dec_init(&dec, &huge, NULL);
    assert_int_equal(dec.lim.max_block, WIRE_BLOCK_MAX);
    assert_int_equal(dec.lim.max_extended, WIRE_LIMIT_CAP);
    assert_int_equal(dec.lim.max_unknown, WIRE_LIMIT_CAP);
    assert_int_equal(dec.lim.max_bitfield, WIRE_LIMIT_CAP);
    assert_int_equal(wire_decoder_max_message(&dec), 4 + 2 + WIRE_LIMIT_CAP);
    /* The largest message: 1 MiB extended or unknown by default. */
    dec_init(&dec, NULL, &tor37);
    assert_int_equal(wire_decoder_max_message(&dec), 4 + 2 + (1u << 20));
    struct wire_limits small = {.max_extended = 100, .max_unknown = 100};
    dec_init(&dec, &small, &tor37);
    assert_int_equal(wire_decoder_max_message(&dec), 4 + 9 + 16384);
    /* A big torrent's bitfield. */
    struct wire_torrent big = {UINT32_MAX, 1, 1};
    assert_int_equal(wire_decoder_set_torrent(&dec, &big), 0);
    assert_int_equal(wire_decoder_max_message(&dec),
                     4 + 1 + ((uint64_t)UINT32_MAX + 7) / 8);
    /* Back to unknown. */
    assert_int_equal(wire_decoder_set_torrent(&dec, NULL), 0);
    assert_int_equal(dec.tor.piece_count, 0);
}

/* --- every message type, both ways --- */

static const uint8_t block64[64] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38,
    39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56,
    57, 58, 59, 60, 61, 62, 63, 64,
};
/* 37 pieces: the last byte's three low bits are spare. */
static const uint8_t bits37[5] = {0xff, 0x00, 0xa5, 0x5a, 0xf8};
static const char ext_payload[] = "d1:md11:ut_metadatai2e6:ut_pexi1ee"
                                  "1:pi6881e4:reqqi250ee";

/* One of each message, valid for tor37, and the bytes each must be. */
static const struct {
    struct wire_msg m;
    const char *bytes;
    size_t len;
} msgs[] = {
#define M(...) {__VA_ARGS__}
#define B(s) s, sizeof(s) - 1
    {M(.type = WIRE_KEEPALIVE), B("\0\0\0\0")},
    {M(.type = WIRE_CHOKE), B("\0\0\0\x01\x00")},
    {M(.type = WIRE_UNCHOKE), B("\0\0\0\x01\x01")},
    {M(.type = WIRE_INTERESTED), B("\0\0\0\x01\x02")},
    {M(.type = WIRE_NOT_INTERESTED), B("\0\0\0\x01\x03")},
    {M(.type = WIRE_HAVE, .index = 36), B("\0\0\0\x05\x04\0\0\0\x24")},
    {M(.type = WIRE_BITFIELD, .data = bits37, .data_len = 5),
     B("\0\0\0\x06\x05\xff\x00\xa5\x5a\xf8")},
    {M(.type = WIRE_REQUEST, .index = 1, .begin = 16384, .length = 16384),
     B("\0\0\0\x0d\x06\0\0\0\x01\0\0\x40\0\0\0\x40\0")},
    {M(.type = WIRE_PIECE, .index = 36, .begin = 936, .length = 64,
       .data = block64, .data_len = 64),
     NULL, 13 + 64},
    {M(.type = WIRE_CANCEL, .index = 36, .begin = 0, .length = 1000),
     B("\0\0\0\x0d\x08\0\0\0\x24\0\0\0\0\0\0\x03\xe8")},
    {M(.type = WIRE_PORT, .port = 6881), B("\0\0\0\x03\x09\x1a\xe1")},
    {M(.type = WIRE_SUGGEST, .index = 0), B("\0\0\0\x05\x0d\0\0\0\0")},
    {M(.type = WIRE_HAVE_ALL), B("\0\0\0\x01\x0e")},
    {M(.type = WIRE_HAVE_NONE), B("\0\0\0\x01\x0f")},
    {M(.type = WIRE_REJECT, .index = 2, .begin = 32768 - 16384,
       .length = 16384),
     B("\0\0\0\x0d\x10\0\0\0\x02\0\0\x40\0\0\0\x40\0")},
    {M(.type = WIRE_ALLOWED_FAST, .index = 35), B("\0\0\0\x05\x11\0\0\0\x23")},
    {M(.type = WIRE_EXTENDED, .ext_id = 0, .data = (const uint8_t *)ext_payload,
       .data_len = sizeof(ext_payload) - 1),
     NULL, 6 + sizeof(ext_payload) - 1},
    {M(.type = WIRE_EXTENDED, .ext_id = 3), B("\0\0\0\x02\x14\x03")},
#undef M
#undef B
};

static bool
msg_equal(const struct wire_msg *a, const struct wire_msg *b)
{
    return a->type == b->type && a->ext_id == b->ext_id &&
           a->port == b->port && a->index == b->index &&
           a->begin == b->begin && a->length == b->length &&
           a->data_len == b->data_len &&
           (a->data_len == 0 ? a->data == NULL && b->data == NULL
                             : memcmp(a->data, b->data, a->data_len) == 0);
}

/* The bytes of the whole stream of msgs[], by wire_encode_buf. */
static void
build_stream(struct buf *b)
{
    buf_init(b, 1u << 20);
    for (size_t i = 0; i < ARRAY_SIZE(msgs); i++)
        assert_int_equal(wire_encode_buf(b, &msgs[i].m), (int)msgs[i].len);
}

static void
test_roundtrip(void **state)
{
    (void)state;
    struct wire_decoder dec;
    dec_init(&dec, NULL, &tor37);
    for (size_t i = 0; i < ARRAY_SIZE(msgs); i++) {
        const struct wire_msg *want = &msgs[i].m;
        uint8_t out[128];
        size_t len = msgs[i].len;
        int n = wire_encode(out, sizeof(out), want);
        assert_int_equal(n, (int)len);
        if (msgs[i].bytes)
            assert_memory_equal(out, msgs[i].bytes, len);
        /* One byte short: -EMSGSIZE and nothing written. */
        uint8_t guard[128];
        memset(guard, 0xee, sizeof(guard));
        assert_int_equal(wire_encode(guard, len - 1, want), -EMSGSIZE);
        for (size_t k = 0; k < sizeof(guard); k++)
            assert_int_equal(guard[k], 0xee);

        struct wire_msg got;
        memset(&got, 0x5a, sizeof(got));
        assert_int_equal(decode1(&dec, &got, out, len), (int)len);
        if (!msg_equal(&got, want))
            fail_msg("message %zu (type %u) does not round-trip", i,
                     want->type);
        /* The piece's length is its block's. */
        if (want->type == WIRE_PIECE)
            assert_int_equal(got.length, got.data_len);

        /* The specific encoders write the same bytes. */
        uint8_t spec[128];
        int s = -1;
        struct wire_block blk = {want->index, want->begin, want->length};
        switch (want->type) {
        case WIRE_KEEPALIVE:
            s = wire_put_keepalive(spec, sizeof(spec));
            break;
        case WIRE_HAVE:
        case WIRE_SUGGEST:
        case WIRE_ALLOWED_FAST:
            s = wire_put_have(spec, sizeof(spec), want->type, want->index);
            break;
        case WIRE_REQUEST:
        case WIRE_CANCEL:
        case WIRE_REJECT:
            s = wire_put_block(spec, sizeof(spec), want->type, &blk);
            break;
        case WIRE_PORT:
            s = wire_put_port(spec, sizeof(spec), want->port);
            break;
        case WIRE_BITFIELD:
            s = wire_put_bitfield(spec, sizeof(spec), want->data,
                                  want->data_len);
            break;
        case WIRE_PIECE:
            s = wire_put_piece_header(spec, sizeof(spec), want->index,
                                      want->begin, want->data_len);
            assert_int_equal(s, WIRE_PIECE_HEADER_LEN);
            memcpy(spec + s, want->data, want->data_len);
            s += (int)want->data_len;
            break;
        case WIRE_EXTENDED:
            s = wire_put_extended_header(spec, sizeof(spec), want->ext_id,
                                         want->data_len);
            assert_int_equal(s, WIRE_EXTENDED_HEADER_LEN);
            if (want->data_len)
                memcpy(spec + s, want->data, want->data_len);
            s += (int)want->data_len;
            break;
        default:
            s = wire_put_simple(spec, sizeof(spec), want->type);
            break;
        }
        assert_int_equal(s, (int)len);
        assert_memory_equal(spec, out, len);
    }
}

static void
test_encoder_errors(void **state)
{
    (void)state;
    uint8_t out[64];
    struct wire_block blk = {1, 2, 3};
    assert_int_equal(wire_put_simple(out, sizeof(out), WIRE_HAVE), -EINVAL);
    assert_int_equal(wire_put_simple(out, sizeof(out), WIRE_KEEPALIVE),
                     -EINVAL);
    assert_int_equal(wire_put_simple(out, 4, WIRE_CHOKE), -EMSGSIZE);
    assert_int_equal(wire_put_have(out, sizeof(out), WIRE_CHOKE, 1), -EINVAL);
    assert_int_equal(wire_put_have(out, 8, WIRE_HAVE, 1), -EMSGSIZE);
    assert_int_equal(wire_put_block(out, sizeof(out), WIRE_PIECE, &blk),
                     -EINVAL);
    assert_int_equal(wire_put_block(out, 16, WIRE_REQUEST, &blk), -EMSGSIZE);
    assert_int_equal(wire_put_port(out, 6, 1), -EMSGSIZE);
    assert_int_equal(wire_put_keepalive(out, 3), -EMSGSIZE);
    assert_int_equal(wire_put_bitfield(out, 9, bits37, 5), -EMSGSIZE);
    assert_int_equal(wire_put_bitfield(out, 4, bits37, 0), -EMSGSIZE);
    assert_int_equal(wire_put_bitfield(out, 5, NULL, 0), 5);
    assert_memory_equal(out, "\0\0\0\x01\x05", 5);
    assert_int_equal(wire_put_piece_header(out, 12, 0, 0, 1), -EMSGSIZE);
    assert_int_equal(wire_put_piece_header(out, 13, 0, 0, UINT32_MAX - 8),
                     -EINVAL);
    assert_int_equal(wire_put_piece_header(out, 13, 7, 8, UINT32_MAX - 9),
                     13);
    assert_memory_equal(out, "\xff\xff\xff\xff\x07\0\0\0\x07\0\0\0\x08", 13);
    assert_int_equal(wire_put_extended_header(out, 5, 1, 0), -EMSGSIZE);
    assert_int_equal(wire_put_extended_header(out, 6, 1, UINT32_MAX - 1),
                     -EINVAL);
    /* wire_encode: unknown types, data without a pointer. */
    struct wire_msg m = {.type = 99};
    assert_int_equal(wire_encode(out, sizeof(out), &m), -EINVAL);
    m.type = WIRE_TYPE_MAX;
    assert_int_equal(wire_encode(out, sizeof(out), &m), -EINVAL);
    m.type = WIRE_PIECE;
    m.data_len = 1;
    assert_int_equal(wire_encode(out, sizeof(out), &m), -EINVAL);
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(wire_encode_buf(&b, &m), -EINVAL);
    m = msgs[7].m; /* a request: 17 bytes, over the cap */
    assert_int_equal(wire_encode_buf(&b, &m), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    m.type = WIRE_HAVE;
    assert_int_equal(wire_encode_buf(&b, &m), 9);
    assert_int_equal(b.len, 9);
    buf_release(&b);
}

/* The hot path: many requests in one buffer. */
static void
test_put_blocks(void **state)
{
    (void)state;
    struct wire_block blocks[64];
    for (uint32_t i = 0; i < 64; i++)
        blocks[i] = (struct wire_block){i / 2, (i % 2) * 16384, 16384};
    uint8_t out[64 * WIRE_REQUEST_LEN];
    static const enum wire_type types[] = {WIRE_REQUEST, WIRE_CANCEL,
                                           WIRE_REJECT};
    for (size_t t = 0; t < ARRAY_SIZE(types); t++) {
        assert_int_equal(wire_put_blocks(out, sizeof(out), types[t], blocks,
                                         64),
                         (int)sizeof(out));
        struct wire_decoder dec;
        struct wire_torrent tor = {32, 32768, 32768};
        dec_init(&dec, NULL, &tor);
        size_t off = 0;
        for (size_t i = 0; i < 64; i++) {
            struct wire_msg m;
            assert_int_equal(wire_decode(&dec, &m, out + off,
                                         sizeof(out) - off),
                             WIRE_REQUEST_LEN);
            assert_int_equal(m.type, types[t]);
            assert_int_equal(m.index, blocks[i].index);
            assert_int_equal(m.begin, blocks[i].begin);
            assert_int_equal(m.length, blocks[i].length);
            off += WIRE_REQUEST_LEN;
        }
        assert_int_equal(wire_decode(&dec, NULL, out + off, 0), 0);
    }
    memset(out, 0xee, sizeof(out));
    assert_int_equal(wire_put_blocks(out, sizeof(out) - 1, WIRE_REQUEST,
                                     blocks, 64),
                     -EMSGSIZE);
    assert_int_equal(out[0], 0xee);
    assert_int_equal(wire_put_blocks(out, sizeof(out), WIRE_HAVE, blocks, 1),
                     -EINVAL);
    assert_int_equal(wire_put_blocks(out, 0, WIRE_REQUEST, blocks, 0), 0);
    assert_int_equal(wire_put_blocks(out, 17, WIRE_CANCEL, blocks + 3, 1), 17);
    assert_memory_equal(out, "\0\0\0\x0d\x08\0\0\0\x01\0\0\x40\0\0\0\x40\0",
                        17);
    assert_int_equal(wire_put_blocks(out, SIZE_MAX, WIRE_REQUEST, blocks,
                                     SIZE_MAX / 17 + 1),
                     -EMSGSIZE);
}

/* A full 16 KiB block, parsed in place. */
static void
test_piece_zero_copy(void **state)
{
    (void)state;
    size_t total = WIRE_PIECE_HEADER_LEN + WIRE_BLOCK_SIZE;
    uint8_t *buf = malloc(2 * total);
    assert_non_null(buf);
    for (int k = 0; k < 2; k++) {
        uint8_t *p = buf + k * total;
        assert_int_equal(wire_put_piece_header(p, total, (uint32_t)k, 16384,
                                               WIRE_BLOCK_SIZE),
                         13);
        memset(p + 13, 'a' + k, WIRE_BLOCK_SIZE);
    }
    struct wire_decoder dec;
    dec_init(&dec, NULL, &tor37);
    struct wire_msg m;
    /* Header only: checked, then the whole message is asked for. */
    assert_int_equal(wire_decode(&dec, &m, buf, 13), 0);
    assert_int_equal(dec.need, total);
    assert_int_equal(wire_decode(&dec, &m, buf, 2 * total - 1), (int)total);
    assert_ptr_equal(m.data, buf + 13);
    assert_int_equal(m.data_len, WIRE_BLOCK_SIZE);
    assert_int_equal(m.index, 0);
    assert_int_equal(m.begin, 16384);
    assert_int_equal(wire_decode(&dec, &m, buf + total, total - 1), 0);
    assert_int_equal(dec.need, total);
    assert_int_equal(wire_decode(&dec, &m, buf + total, total), (int)total);
    assert_ptr_equal(m.data, buf + total + 13);
    assert_int_equal(m.data[0], 'b');
    free(buf);
}

/* --- every error, with its offset --- */

static const struct wire_limits lim_small = {
    .max_block = 16384,
    .max_extended = 100,
    .max_unknown = 10,
    .max_bitfield = 4,
};

static const struct wire_torrent tor_unknown = {0, 0, 0};

static const struct {
    const char *what;
    const char *in;
    size_t len;
    const struct wire_limits *lim;
    const struct wire_torrent *tor;
    int err;
    size_t off;
    size_t skip;
} errors[] = {
#define E(what, s, lim, tor, err, off, skip)                                 \
    {what, s, sizeof(s) - 1, lim, tor, err, off, skip}
    /* TOO_LONG: over every limit, from the prefix alone */
    E("over any limit", "\x00\x10\x00\x03", NULL, &tor37, WIRE_E_TOO_LONG, 0,
      0),
    E("4 GiB", "\xff\xff\xff\xff", NULL, &tor37, WIRE_E_TOO_LONG, 0, 0),
    E("piece over max_block", "\x00\x00\x40\x0a\x07", NULL, &tor37,
      WIRE_E_TOO_LONG, 0, 0),
    E("extended over max_extended", "\x00\x00\x00\x67\x14", &lim_small,
      &tor37, WIRE_E_TOO_LONG, 0, 0),
    E("unknown over max_unknown", "\x00\x00\x00\x0c\x63", &lim_small, &tor37,
      WIRE_E_TOO_LONG, 0, 0),
    E("bitfield over max_bitfield", "\x00\x00\x00\x06\x05", &lim_small,
      &tor_unknown, WIRE_E_TOO_LONG, 0, 0),
    /* LENGTH: the prefix does not fit the id */
    E("choke with a body", "\0\0\0\x02\x00\x00", NULL, &tor37, WIRE_E_LENGTH,
      0, 0),
    E("have all with a body", "\0\0\0\x02\x0e\x00", NULL, &tor37,
      WIRE_E_LENGTH, 0, 0),
    E("short have", "\0\0\0\x04\x04", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("long have", "\0\0\0\x06\x04", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("short suggest", "\0\0\0\x04\x0d", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("long allowed fast", "\0\0\0\x06\x11", NULL, &tor37, WIRE_E_LENGTH, 0,
      0),
    E("short request", "\0\0\0\x0c\x06", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("long cancel", "\0\0\0\x0e\x08", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("short reject", "\0\0\0\x09\x10", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("long port", "\0\0\0\x04\x09", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("piece without a block", "\0\0\0\x09\x07", NULL, &tor37, WIRE_E_LENGTH,
      0, 0),
    E("piece, id only", "\0\0\0\x01\x07", NULL, &tor37, WIRE_E_LENGTH, 0, 0),
    E("extended without its id", "\0\0\0\x01\x14", NULL, &tor37,
      WIRE_E_LENGTH, 0, 0),
    /* UNKNOWN_ID: skippable */
    E("id 10", "\0\0\0\x03\x0a", NULL, &tor37, WIRE_E_UNKNOWN_ID, 4, 7),
    E("id 21, empty", "\0\0\0\x01\x15", NULL, &tor37, WIRE_E_UNKNOWN_ID, 4,
      5),
    E("id 255", "\0\0\x01\x00\xff", NULL, &tor37, WIRE_E_UNKNOWN_ID, 4, 260),
    E("id 12 (was BEP 6 draft)", "\0\0\0\x01\x0c", NULL, &tor37,
      WIRE_E_UNKNOWN_ID, 4, 5),
    /* INDEX */
    E("have 37", "\0\0\0\x05\x04\0\0\0\x25", NULL, &tor37, WIRE_E_INDEX, 5,
      0),
    E("suggest huge", "\0\0\0\x05\x0d\xff\xff\xff\xff", NULL, &tor37,
      WIRE_E_INDEX, 5, 0),
    E("allowed fast 37", "\0\0\0\x05\x11\0\0\0\x25", NULL, &tor37,
      WIRE_E_INDEX, 5, 0),
    E("request 37", "\0\0\0\x0d\x06\0\0\0\x25\0\0\0\0\0\0\x40\0", NULL,
      &tor37, WIRE_E_INDEX, 5, 0),
    E("cancel 37", "\0\0\0\x0d\x08\0\0\0\x25\0\0\0\0\0\0\x40\0", NULL,
      &tor37, WIRE_E_INDEX, 5, 0),
    E("reject 37", "\0\0\0\x0d\x10\0\0\0\x25\0\0\0\0\0\0\x40\0", NULL,
      &tor37, WIRE_E_INDEX, 5, 0),
    E("piece 37, before its block", "\0\0\0\x0a\x07\0\0\0\x25", NULL, &tor37,
      WIRE_E_INDEX, 5, 0),
    /* BLOCK_SIZE */
    E("request of 0 bytes", "\0\0\0\x0d\x06\0\0\0\x01\0\0\0\0\0\0\0\0", NULL,
      &tor37, WIRE_E_BLOCK_SIZE, 13, 0),
    E("request over max_block",
      "\0\0\0\x0d\x06\0\0\0\x01\0\0\0\0\0\0\x40\x01", NULL, &tor37,
      WIRE_E_BLOCK_SIZE, 13, 0),
    E("cancel of 4 GiB", "\0\0\0\x0d\x08\0\0\0\x01\0\0\0\0\xff\xff\xff\xff",
      NULL, &tor37, WIRE_E_BLOCK_SIZE, 13, 0),
    E("reject of 0 bytes", "\0\0\0\x0d\x10\0\0\0\x01\0\0\0\0\0\0\0\0", NULL,
      &tor37, WIRE_E_BLOCK_SIZE, 13, 0),
    E("request of 0 bytes, torrent unknown",
      "\0\0\0\x0d\x06\0\0\0\x01\0\0\0\0\0\0\0\0", NULL, &tor_unknown,
      WIRE_E_BLOCK_SIZE, 13, 0),
    /* BLOCK_RANGE */
    E("request past a piece", "\0\0\0\x0d\x06\0\0\0\x01\0\0\x40\x01\0\0\x40\0",
      NULL, &tor37, WIRE_E_BLOCK_RANGE, 9, 0),
    E("request past the last piece",
      "\0\0\0\x0d\x06\0\0\0\x24\0\0\0\0\0\0\x03\xe9", NULL, &tor37,
      WIRE_E_BLOCK_RANGE, 9, 0),
    E("request wrapping around",
      "\0\0\0\x0d\x06\0\0\0\x01\xff\xff\xff\xff\0\0\0\x02", NULL, &tor37,
      WIRE_E_BLOCK_RANGE, 9, 0),
    E("cancel past a piece", "\0\0\0\x0d\x08\0\0\0\x00\0\0\x80\0\0\0\0\x01",
      NULL, &tor37, WIRE_E_BLOCK_RANGE, 9, 0),
    E("reject past the last piece",
      "\0\0\0\x0d\x10\0\0\0\x24\0\0\x03\xe8\0\0\0\x01", NULL, &tor37,
      WIRE_E_BLOCK_RANGE, 9, 0),
    E("piece past the last piece, before its block",
      "\0\0\0\x0a\x07\0\0\0\x24\0\0\x03\xe8", NULL, &tor37,
      WIRE_E_BLOCK_RANGE, 9, 0),
    E("piece wrapping around", "\0\0\0\x0b\x07\0\0\0\x00\xff\xff\xff\xff",
      NULL, &tor37, WIRE_E_BLOCK_RANGE, 9, 0),
    /* BITFIELD */
    E("bitfield too short", "\0\0\0\x05\x05", NULL, &tor37,
      WIRE_E_BITFIELD_LENGTH, 0, 0),
    E("bitfield too long", "\0\0\0\x07\x05", NULL, &tor37,
      WIRE_E_BITFIELD_LENGTH, 0, 0),
    E("bitfield empty", "\0\0\0\x01\x05", NULL, &tor37,
      WIRE_E_BITFIELD_LENGTH, 0, 0),
    E("bitfield spare bit", "\0\0\0\x06\x05\xff\xff\xff\xff\xf9", NULL,
      &tor37, WIRE_E_BITFIELD_SPARE, 9, 0),
    E("bitfield all spare bits", "\0\0\0\x06\x05\0\0\0\0\x07", NULL, &tor37,
      WIRE_E_BITFIELD_SPARE, 9, 0),
#undef E
};

static void
test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(errors); i++) {
        struct wire_decoder dec;
        dec_init(&dec, errors[i].lim, errors[i].tor);
        /* Every prefix: need more, or already this error; the whole
         * input: this error. */
        for (size_t len = 0; len <= errors[i].len; len++) {
            struct wire_msg m;
            memset(&m, 0x5a, sizeof(m));
            int r = decode1(&dec, &m, errors[i].in, len);
            if (r == 0 && len < errors[i].len) {
                assert_true(dec.need > len);
                continue;
            }
            if (r != errors[i].err || dec.err_offset != errors[i].off ||
                dec.skip != errors[i].skip)
                fail_msg("%s, %zu bytes: %d (%s) at %zu skip %zu",
                         errors[i].what, len, r, wire_strerror(r),
                         dec.err_offset, dec.skip);
            assert_int_equal(m.type, 0x5a5a); /* untouched */
            assert_int_equal(dec.need, 0);
        }
    }
}

/* An unknown message is skipped and the stream goes on. */
static void
test_unknown_skip(void **state)
{
    (void)state;
    static const uint8_t in[] = "\0\0\0\x04\x42xyz\0\0\0\x01\x02";
    struct wire_decoder dec;
    struct wire_msg m;
    dec_init(&dec, NULL, &tor37);
    assert_int_equal(decode1(&dec, &m, in, 5), WIRE_E_UNKNOWN_ID);
    assert_int_equal(dec.skip, 8);
    assert_int_equal(decode1(&dec, &m, in + 8, 5), 5);
    assert_int_equal(m.type, WIRE_INTERESTED);
    /* The skip is cleared by the next call. */
    assert_int_equal(dec.skip, 0);
}

/* While the torrent is unknown (magnet links): no index or range checks,
 * a bitfield of any length up to max_bitfield with any spare bits. */
static void
test_torrent_unknown(void **state)
{
    (void)state;
    struct wire_decoder dec;
    struct wire_msg m;
    dec_init(&dec, NULL, NULL);
    static const char bf[] = "\0\0\0\x04\x05\xff\xff\xff";
    assert_int_equal(decode1(&dec, &m, bf, 8), 8);
    assert_int_equal(m.data_len, 3);
    static const char bf0[] = "\0\0\0\x01\x05";
    assert_int_equal(decode1(&dec, &m, bf0, 5), 5);
    assert_int_equal(m.type, WIRE_BITFIELD);
    assert_int_equal(m.data_len, 0);
    assert_null(m.data);
    static const char have[] = "\0\0\0\x05\x04\xff\xff\xff\xff";
    assert_int_equal(decode1(&dec, &m, have, 9), 9);
    assert_int_equal(m.index, UINT32_MAX);
    static const char req[] = "\0\0\0\x0d\x06\0\0\0\x25\xff\xff\xff\xff"
                              "\0\0\x40\0";
    assert_int_equal(decode1(&dec, &m, req, 17), 17);
    /* Then the torrent is known: the same bytes are refused. */
    assert_int_equal(wire_decoder_set_torrent(&dec, &tor37), 0);
    assert_int_equal(decode1(&dec, &m, bf, 8), WIRE_E_BITFIELD_LENGTH);
    assert_int_equal(decode1(&dec, &m, have, 9), WIRE_E_INDEX);
    assert_int_equal(decode1(&dec, &m, req, 17), WIRE_E_INDEX);
    /* Bitfields of a torrent whose piece count is a multiple of 8 have no
     * spare bits. */
    struct wire_torrent t16 = {16, 16384, 16384};
    assert_int_equal(wire_decoder_set_torrent(&dec, &t16), 0);
    static const char bf16[] = "\0\0\0\x03\x05\xff\xff";
    assert_int_equal(decode1(&dec, &m, bf16, 7), 7);
}

/* --- streams: truncation, fragments, bit flips --- */

/* Decode a whole buffer: append each message, re-encoded, to log; stop at
 * need-more or an error (skipping unknown ids).  Returns the last result
 * and sets *ret_used to the bytes consumed. */
static int
decode_all(struct wire_decoder *dec, const uint8_t *in, size_t len,
           struct buf *log, size_t *ret_used)
{
    size_t off = 0;
    int r;
    for (;;) {
        struct wire_msg m;
        r = wire_decode(dec, &m, in + off, len - off);
        if (r == WIRE_E_UNKNOWN_ID) {
            assert_true(dec->skip >= 5);
            if (dec->skip > len - off)
                break;
            off += dec->skip;
            continue;
        }
        if (r <= 0)
            break;
        assert_true((size_t)r <= len - off);
        assert_true((size_t)r <= wire_decoder_max_message(dec));
        /* Re-encoding gives the same bytes. */
        size_t before = log ? log->len : 0;
        if (log) {
            assert_int_equal(wire_encode_buf(log, &m), r);
            assert_memory_equal(log->data + before, in + off, (size_t)r);
        }
        off += (size_t)r;
    }
    if (r == 0) {
        assert_true(dec->need > len - off);
        assert_true(dec->need <= wire_decoder_max_message(dec));
    } else {
        assert_true(r > WIRE_E_MIN);
        assert_true(off + dec->err_offset < len);
    }
    *ret_used = off;
    return r;
}

static void
test_stream_whole(void **state)
{
    (void)state;
    struct buf s, log;
    build_stream(&s);
    buf_init(&log, 1u << 20);
    struct wire_decoder dec;
    dec_init(&dec, NULL, &tor37);
    size_t used;
    uint8_t *in = dup_exact(s.data, s.len);
    assert_int_equal(decode_all(&dec, in, s.len, &log, &used), 0);
    assert_int_equal(used, s.len);
    assert_int_equal(log.len, s.len);
    assert_memory_equal(log.data, s.data, s.len);
    assert_int_equal(dec.need, 4);
    free(in);
    buf_release(&s);
    buf_release(&log);
}

static void
test_truncation(void **state)
{
    (void)state;
    struct buf s;
    build_stream(&s);
    struct wire_decoder dec;
    dec_init(&dec, NULL, &tor37);
    /* Where each message ends. */
    size_t ends[ARRAY_SIZE(msgs)], e = 0;
    for (size_t i = 0; i < ARRAY_SIZE(msgs); i++)
        ends[i] = e += msgs[i].len;
    for (size_t len = 0; len <= s.len; len++) {
        uint8_t *in = dup_exact(s.data, len);
        size_t used;
        int r = decode_all(&dec, in, len, NULL, &used);
        if (r != 0)
            fail_msg("cut at %zu: %s", len, wire_strerror(r));
        /* Every whole message was decoded. */
        size_t want = 0;
        for (size_t i = 0; i < ARRAY_SIZE(msgs) && ends[i] <= len; i++)
            want = ends[i];
        assert_int_equal(used, want);
        free(in);
    }
    buf_release(&s);
}

/* Feed in chunks of the sizes the sequence gives, as a peer thread would:
 * append to a buffer, decode what is whole, keep the rest.  The log and
 * the final result must be those of feeding whole. */
static int
feed_chunks(struct wire_decoder *dec, const uint8_t *in, size_t len,
            unsigned seed, struct buf *log, size_t *ret_err_at)
{
    uint8_t *acc = malloc(len ? len : 1);
    size_t have = 0, fed = 0, base = 0;
    int r = 0;
    assert_non_null(acc);
    unsigned x = seed;
    while (fed < len) {
        size_t chunk = 1;
        if (seed) {
            x = x * 1103515245u + 12345u;
            chunk = 1 + (x >> 16) % 23;
        }
        if (chunk > len - fed)
            chunk = len - fed;
        memcpy(acc + have, in + fed, chunk);
        have += chunk;
        fed += chunk;
        for (;;) {
            /* An exact-size window: reads past it are caught. */
            uint8_t *w = dup_exact(acc, have);
            struct wire_msg m;
            r = wire_decode(dec, &m, w, have);
            if (r > 0) {
                assert_int_equal(wire_encode_buf(log, &m), r);
                memmove(acc, acc + r, have - (size_t)r);
                have -= (size_t)r;
                base += (size_t)r;
            }
            free(w);
            if (r <= 0)
                break;
        }
        if (r < 0)
            break;
    }
    if (r < 0)
        *ret_err_at = base + dec->err_offset;
    free(acc);
    return r;
}

static void
test_fragments(void **state)
{
    (void)state;
    struct buf s;
    build_stream(&s);
    /* A valid stream, then a broken one: each error at every position. */
    for (unsigned seed = 0; seed < 8; seed++) {
        struct wire_decoder dec;
        dec_init(&dec, NULL, &tor37);
        struct buf log;
        buf_init(&log, 1u << 20);
        size_t at = 0;
        assert_int_equal(feed_chunks(&dec, (uint8_t *)s.data, s.len, seed,
                                     &log, &at),
                         0);
        assert_int_equal(log.len, s.len);
        assert_memory_equal(log.data, s.data, s.len);
        buf_release(&log);
    }
    for (size_t i = 0; i < ARRAY_SIZE(errors); i++) {
        if (errors[i].err == WIRE_E_UNKNOWN_ID)
            continue;
        /* The valid stream, then the bad message. */
        struct buf in;
        buf_init(&in, 1u << 20);
        assert_int_equal(buf_append(&in, s.data, s.len), 0);
        assert_int_equal(buf_append(&in, errors[i].in, errors[i].len), 0);
        for (unsigned seed = 0; seed < 4; seed++) {
            struct wire_decoder dec;
            dec_init(&dec, errors[i].lim, errors[i].tor);
            if (errors[i].tor == &tor_unknown)
                continue; /* the stream needs the torrent */
            struct buf log;
            buf_init(&log, 1u << 20);
            size_t at = 0;
            int r = feed_chunks(&dec, (uint8_t *)in.data, in.len, seed, &log,
                                &at);
            if (r != errors[i].err || at != s.len + errors[i].off)
                fail_msg("%s, seed %u: %d at %zu", errors[i].what, seed, r,
                         at);
            assert_int_equal(log.len, s.len);
            buf_release(&log);
        }
        buf_release(&in);
    }
    buf_release(&s);
}

static void
try_mutant(const uint8_t *p, size_t len)
{
    static const struct wire_limits *const lims[] = {NULL, &lim_small};
    for (size_t l = 0; l < ARRAY_SIZE(lims); l++) {
        for (int t = 0; t < 2; t++) {
            struct wire_decoder dec;
            dec_init(&dec, lims[l], t ? &tor37 : NULL);
            struct buf log;
            buf_init(&log, 1u << 20);
            uint8_t *in = dup_exact(p, len);
            size_t used;
            (void)decode_all(&dec, in, len, &log, &used);
            free(in);
            buf_release(&log);
        }
    }
}

static void
test_bitflip(void **state)
{
    (void)state;
    struct buf s;
    build_stream(&s);
    uint8_t *m = dup_exact(s.data, s.len);
    static const uint8_t special[] = {0x00, 0x01, 0x05, 0x07, 0x0d,
                                      0x14, 0x7f, 0x80, 0xff};
    for (size_t pos = 0; pos < s.len; pos++) {
        uint8_t orig = m[pos];
        for (int bit = 0; bit < 8; bit++) {
            m[pos] = (uint8_t)(orig ^ (1u << bit));
            try_mutant(m, s.len);
        }
        for (size_t k = 0; k < sizeof(special); k++) {
            m[pos] = special[k];
            try_mutant(m, s.len);
        }
        m[pos] = orig;
    }
    free(m);
    buf_release(&s);
}

/* --- BEP 10 extension handshake --- */

static void
ext_roundtrip(const struct wire_ext_handshake *h, unsigned want_present)
{
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(buf_append(&b, "xy", 2), 0);
    int n = wire_put_ext_handshake(&b, h);
    assert_true(n > WIRE_EXTENDED_HEADER_LEN);
    assert_int_equal(b.len, 2 + (size_t)n);
    /* A whole extended message with id 0. */
    struct wire_decoder dec;
    struct wire_msg m;
    dec_init(&dec, NULL, NULL);
    assert_int_equal(decode1(&dec, &m, b.data + 2, (size_t)n), n);
    assert_int_equal(m.type, WIRE_EXTENDED);
    assert_int_equal(m.ext_id, 0);
    struct wire_ext_handshake got;
    size_t off = 777;
    assert_int_equal(wire_ext_handshake_parse(&got, m.data, m.data_len, NULL,
                                              &off),
                     0);
    assert_int_equal(off, 777);
    assert_int_equal(got.present, want_present);
    assert_int_equal(got.ignored, 0);
    assert_int_equal(got.ut_metadata, h->ut_metadata);
    assert_int_equal(got.ut_pex, h->ut_pex);
    assert_int_equal(got.port, h->port);
    assert_int_equal(got.reqq, h->reqq);
    assert_int_equal(got.metadata_size, h->metadata_size);
    assert_int_equal(got.yourip_len, h->yourip_len);
    assert_memory_equal(got.yourip, h->yourip, h->yourip_len);
    assert_string_equal(got.client, h->client);
    buf_release(&b);
}

static void
test_ext_build(void **state)
{
    (void)state;
    struct wire_ext_handshake h = {0};
    ext_roundtrip(&h, 0);
    h.ut_metadata = 1;
    h.ut_pex = 2;
    h.port = 51413;
    h.reqq = 500;
    h.metadata_size = 31235;
    memcpy(h.yourip, "\x7f\0\0\x01", 4);
    h.yourip_len = 4;
    snprintf(h.client, sizeof(h.client), "torrentd 0.1.0");
    ext_roundtrip(&h, WIRE_EXT_M_METADATA | WIRE_EXT_M_PEX | WIRE_EXT_PORT |
                          WIRE_EXT_CLIENT | WIRE_EXT_REQQ | WIRE_EXT_YOURIP |
                          WIRE_EXT_METADATA_SIZE);
    /* The exact bytes, keys sorted. */
    struct buf b;
    buf_init(&b, 4096);
    int n = wire_put_ext_handshake(&b, &h);
    static const char want[] =
        "d1:md11:ut_metadatai1e6:ut_pexi2ee13:metadata_sizei31235e"
        "1:pi51413e4:reqqi500e1:v14:torrentd 0.1.0"
        "6:yourip4:\x7f\0\0\x01" "e";
    assert_int_equal(n, 6 + sizeof(want) - 1);
    assert_memory_equal(b.data, "\0\0\0", 3);
    assert_int_equal((uint8_t)b.data[3], 2 + sizeof(want) - 1);
    assert_memory_equal(b.data + 4, "\x14\x00", 2);
    assert_memory_equal(b.data + 6, want, sizeof(want) - 1);
    buf_release(&b);
    /* IPv6 yourip, only some fields. */
    struct wire_ext_handshake h6 = {0};
    memcpy(h6.yourip, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    h6.yourip_len = 16;
    h6.ut_pex = 255;
    ext_roundtrip(&h6, WIRE_EXT_M_PEX | WIRE_EXT_YOURIP);
    /* A full buffer: -EMSGSIZE, and the buffer is as before. */
    for (size_t cap = 0; cap < 6 + sizeof(want) - 1; cap++) {
        buf_init(&b, cap);
        assert_int_equal(wire_put_ext_handshake(&b, &h), -EMSGSIZE);
        assert_int_equal(b.len, 0);
        buf_release(&b);
    }
}

static void
test_ext_parse(void **state)
{
    (void)state;
    struct wire_ext_handshake h;
    size_t off;
    /* What libtorrent sends, more or less. */
    static const char lt[] =
        "d12:complete_agoi-1e1:md11:lt_donthavei7e10:share_modei8e"
        "11:upload_onlyi3e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee"
        "13:metadata_sizei31235e4:reqqi500e11:upload_onlyi0e"
        "1:v18:Transmission 4.0.6" "6:yourip4:\x0a\0\0\x02" "e";
    assert_int_equal(wire_ext_handshake_parse(&h, lt, sizeof(lt) - 1, NULL,
                                              NULL),
                     0);
    assert_int_equal(h.ut_metadata, 2);
    assert_int_equal(h.ut_pex, 1);
    assert_int_equal(h.metadata_size, 31235);
    assert_int_equal(h.reqq, 500);
    assert_int_equal(h.port, 0);
    assert_string_equal(h.client, "Transmission 4.0.6");
    assert_int_equal(h.yourip_len, 4);
    assert_int_equal(h.ignored, 0);
    assert_int_equal(h.present,
                     WIRE_EXT_M_METADATA | WIRE_EXT_M_PEX | WIRE_EXT_REQQ |
                         WIRE_EXT_CLIENT | WIRE_EXT_YOURIP |
                         WIRE_EXT_METADATA_SIZE);

    /* Each field unusable: ignored, the rest kept. */
    static const struct {
        const char *in;
        unsigned ignored;
    } bad[] = {
        {"d1:md11:ut_metadatai256eee", WIRE_EXT_M_METADATA},
        {"d1:md11:ut_metadata1:xee", WIRE_EXT_M_METADATA},
        {"d1:md6:ut_pexi-1eee", WIRE_EXT_M_PEX},
        {"d1:pi0ee", WIRE_EXT_PORT},
        {"d1:pi65536ee", WIRE_EXT_PORT},
        {"d1:p4:6881e", WIRE_EXT_PORT},
        {"d1:vi1ee", WIRE_EXT_CLIENT},
        {"d4:reqqi0ee", WIRE_EXT_REQQ},
        {"d4:reqqi4294967296ee", WIRE_EXT_REQQ},
        {"d6:yourip5:abcdee", WIRE_EXT_YOURIP},
        {"d6:youripi1ee", WIRE_EXT_YOURIP},
        {"d13:metadata_sizei0ee", WIRE_EXT_METADATA_SIZE},
        {"d13:metadata_sizei16777217ee", WIRE_EXT_METADATA_SIZE},
        {"d13:metadata_sizei-5ee", WIRE_EXT_METADATA_SIZE},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        memset(&h, 0x5a, sizeof(h));
        int r = wire_ext_handshake_parse(&h, bad[i].in, strlen(bad[i].in),
                                         NULL, NULL);
        if (r != 0 || h.ignored != bad[i].ignored || h.present != 0)
            fail_msg("'%s': %d, ignored %#x present %#x", bad[i].in, r,
                     h.ignored, h.present);
        assert_int_equal(h.ut_metadata, 0);
        assert_int_equal(h.port, 0);
        assert_int_equal(h.metadata_size, 0);
        assert_string_equal(h.client, "");
    }
    /* The limits: metadata_size exactly at the limit, and over a smaller
     * one. */
    assert_int_equal(wire_ext_handshake_parse(&h,
                                              "d13:metadata_sizei16777216ee",
                                              28, NULL, NULL),
                     0);
    assert_int_equal(h.metadata_size, 16777216);
    struct wire_limits lim = {.max_metadata_size = 1000,
                              .max_ext_handshake = 40};
    assert_int_equal(wire_ext_handshake_parse(&h, "d13:metadata_sizei1001ee",
                                              24, &lim, NULL),
                     0);
    assert_int_equal(h.ignored, WIRE_EXT_METADATA_SIZE);
    assert_int_equal(h.metadata_size, 0);
    /* Ids of 0: present (they disable an extension). */
    assert_int_equal(wire_ext_handshake_parse(&h,
                                              "d1:md6:ut_pexi0eee", 18,
                                              NULL, NULL),
                     0);
    assert_int_equal(h.present, WIRE_EXT_M_PEX);
    /* No m at all, an empty m. */
    assert_int_equal(wire_ext_handshake_parse(&h, "de", 2, NULL, NULL), 0);
    assert_int_equal(h.present, 0);
    assert_int_equal(wire_ext_handshake_parse(&h, "d1:mdee", 7, NULL, NULL),
                     0);
    /* Repeated keys: the first counts. */
    assert_int_equal(wire_ext_handshake_parse(&h, "d1:pi1e1:pi2ee", 14, NULL,
                                              NULL),
                     0);
    assert_int_equal(h.port, 1);

    /* Errors, with offsets. */
    const struct {
        const char *in;
        size_t len;
        const struct wire_limits *lim;
        int err;
        size_t off;
    } errs[] = {
        {"d1:pi1ee", 8, NULL, 0, 0},
        {"", 0, NULL, WIRE_E_EXT_BENCODE, 0},
        {"d1:pi1e", 7, NULL, WIRE_E_EXT_BENCODE, 7},
        {"d1:pi1eex", 9, NULL, WIRE_E_EXT_BENCODE, 8},
        {"d1:pi01ee", 9, NULL, WIRE_E_EXT_BENCODE, 5},
        {"le", 2, NULL, WIRE_E_EXT_NOT_DICT, 0},
        {"i1e", 3, NULL, WIRE_E_EXT_NOT_DICT, 0},
        {"d1:mli1eee", 10, NULL, WIRE_E_EXT_NOT_DICT, 4},
        {"d1:a0:1:mi1ee", 13, NULL, WIRE_E_EXT_NOT_DICT, 9},
        {"d1:v40:0123456789012345678901234567890123456789e", 48, &lim,
         WIRE_E_EXT_TOO_LONG, 40},
    };
    for (size_t i = 0; i < ARRAY_SIZE(errs); i++) {
        off = 777;
        memset(&h, 0x5a, sizeof(h));
        int r = wire_ext_handshake_parse(&h, errs[i].in, errs[i].len,
                                         errs[i].lim, &off);
        if (r != errs[i].err || (r && off != errs[i].off))
            fail_msg("'%s': %d (%s) at %zu", errs[i].in, r, wire_strerror(r),
                     off);
        if (r)
            assert_int_equal((uint8_t)h.client[0], 0x5a); /* untouched */
        else
            assert_int_equal(off, 777);
    }
    /* Too deep: the depth limit bites at its opening bracket. */
    char deep[64];
    snprintf(deep, sizeof(deep), "d1:v%se", "lllllllllleeeeeeeeee");
    off = 0;
    assert_int_equal(wire_ext_handshake_parse(&h, deep, strlen(deep), NULL,
                                              &off),
                     WIRE_E_EXT_BENCODE);
    /* Too many values: the node limit. */
    struct buf many;
    buf_init(&many, 1u << 16);
    assert_int_equal(buf_puts(&many, "d1:vl"), 0);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(buf_puts(&many, "i1e"), 0);
    assert_int_equal(buf_puts(&many, "ee"), 0);
    assert_int_equal(wire_ext_handshake_parse(&h, many.data, many.len, NULL,
                                              &off),
                     WIRE_E_EXT_BENCODE);
    buf_release(&many);
    /* Out of memory. */
    fail_allocs_in = 1;
    off = 777;
    assert_int_equal(wire_ext_handshake_parse(&h, lt, sizeof(lt) - 1, NULL,
                                              &off),
                     WIRE_E_NOMEM);
    assert_true(off < sizeof(lt));
    fail_allocs_in = 0;
}

static void
test_ext_client(void **state)
{
    (void)state;
    struct wire_ext_handshake h;
    struct buf b;
    char s[200];
    /* Control characters. */
    static const char ctl[] = "d1:v7:a\0b\nc\x7f" "de";
    assert_int_equal(wire_ext_handshake_parse(&h, ctl, sizeof(ctl) - 1, NULL,
                                              NULL),
                     0);
    assert_string_equal(h.client, "a?b?c?d");
    /* Cut at 64 bytes, on a character boundary: "é" is 2 bytes, "€" 3. */
    static const struct {
        size_t ascii;
        const char *tail;
        size_t kept;
    } cuts[] = {
        {64, "", 64},
        {70, "", 64},
        {63, "\xc3\xa9", 63},      /* é across the cut: dropped */
        {62, "\xc3\xa9", 64},      /* é fits */
        {62, "\xe2\x82\xac", 62},  /* € across */
        {61, "\xe2\x82\xac", 64},  /* € fits */
        {63, "\xe2\x82\xac", 63},
        {0, "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
            "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
            "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
            "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
            "\xe2\x82\xac\xe2\x82\xac",
         63},
        /* Continuation bytes without a lead: cut to nothing. */
        {0, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"
            "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"
            "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"
            "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"
            "\x80\x80\x80\x80\x80\x80",
         0},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
        memset(s, 'a', cuts[i].ascii);
        snprintf(s + cuts[i].ascii, sizeof(s) - cuts[i].ascii, "%s",
                 cuts[i].tail);
        buf_init(&b, 4096);
        assert_int_equal(buf_printf(&b, "d1:v%zu:%se", strlen(s), s), 0);
        assert_int_equal(wire_ext_handshake_parse(&h, b.data, b.len, NULL,
                                                  NULL),
                         0);
        if (strlen(h.client) != cuts[i].kept)
            fail_msg("cut %zu: kept %zu", i, strlen(h.client));
        assert_memory_equal(h.client, s, cuts[i].kept);
        buf_release(&b);
    }
}

/* --- BEP 6 allowed fast --- */

static void
test_allowed_fast(void **state)
{
    (void)state;
    uint8_t hash[20];
    memset(hash, 0xaa, sizeof(hash));
    static const uint8_t ip[4] = {80, 4, 4, 200};
    /* The BEP's example. */
    static const uint32_t want9[] = {1059, 431, 808, 1217, 287,
                                     376,  1188, 353, 508};
    uint32_t got[WIRE_ALLOWED_FAST_MAX];
    assert_int_equal(wire_allowed_fast(got, 7, hash, ip, 4, 1313), 7);
    assert_memory_equal(got, want9, 7 * sizeof(uint32_t));
    assert_int_equal(wire_allowed_fast(got, 9, hash, ip, 4, 1313), 9);
    assert_memory_equal(got, want9, sizeof(want9));
    /* The last byte of the address does not count. */
    static const uint8_t ip2[4] = {80, 4, 4, 1};
    assert_int_equal(wire_allowed_fast(got, 9, hash, ip2, 4, 1313), 9);
    assert_memory_equal(got, want9, sizeof(want9));
    /* Few pieces: all of them, each once. */
    assert_int_equal(wire_allowed_fast(got, 10, hash, ip, 4, 3), 3);
    assert_true(got[0] != got[1] && got[1] != got[2] && got[0] != got[2]);
    assert_true(got[0] < 3 && got[1] < 3 && got[2] < 3);
    assert_int_equal(wire_allowed_fast(got, 10, hash, ip, 4, 1), 1);
    assert_int_equal(got[0], 0);
    assert_int_equal(wire_allowed_fast(got, 10, hash, ip, 4, 0), 0);
    assert_int_equal(wire_allowed_fast(got, 0, hash, ip, 4, 100), 0);
    /* The most, distinct. */
    assert_int_equal(wire_allowed_fast(got, WIRE_ALLOWED_FAST_MAX, hash, ip,
                                       4, WIRE_ALLOWED_FAST_MAX),
                     WIRE_ALLOWED_FAST_MAX);
    uint8_t seen[WIRE_ALLOWED_FAST_MAX] = {0};
    for (size_t i = 0; i < WIRE_ALLOWED_FAST_MAX; i++) {
        assert_true(got[i] < WIRE_ALLOWED_FAST_MAX);
        assert_int_equal(seen[got[i]]++, 0);
    }
    /* IPv6: masked to /48. */
    uint8_t ip6[16] = {0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78};
    uint32_t a[10], b6[10];
    assert_int_equal(wire_allowed_fast(a, 10, hash, ip6, 16, 100000), 10);
    ip6[15] = 1;
    ip6[6] = 9;
    assert_int_equal(wire_allowed_fast(b6, 10, hash, ip6, 16, 100000), 10);
    assert_memory_equal(a, b6, sizeof(a));
    ip6[5] = 0;
    assert_int_equal(wire_allowed_fast(b6, 10, hash, ip6, 16, 100000), 10);
    assert_memory_not_equal(a, b6, sizeof(a));
    /* Bad arguments. */
    assert_int_equal(wire_allowed_fast(got, 7, hash, ip, 5, 1313), -EINVAL);
    assert_int_equal(wire_allowed_fast(got, 7, hash, ip, 0, 1313), -EINVAL);
    assert_int_equal(wire_allowed_fast(got, WIRE_ALLOWED_FAST_MAX + 1, hash,
                                       ip, 4, 1313),
                     -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_reserved),
        cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_peer_id),
        cmocka_unit_test(test_client_name),
        cmocka_unit_test(test_torrent_set),
        cmocka_unit_test(test_decoder_init),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_encoder_errors),
        cmocka_unit_test(test_put_blocks),
        cmocka_unit_test(test_piece_zero_copy),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_unknown_skip),
        cmocka_unit_test(test_torrent_unknown),
        cmocka_unit_test(test_stream_whole),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_fragments),
        cmocka_unit_test(test_bitflip),
        cmocka_unit_test(test_ext_build),
        cmocka_unit_test(test_ext_parse),
        cmocka_unit_test(test_ext_client),
        cmocka_unit_test(test_allowed_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
