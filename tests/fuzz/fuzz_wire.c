/* fuzz_wire — libFuzzer target for common/wire.
 *
 * The first 6 bytes choose the limits and a plausible torrent (or none,
 * as for a magnet link); the rest is a peer's byte stream.  It is decoded
 * whole, and again in chunks as a peer thread would receive it: both must
 * give the same messages and end the same way.  Each decoded message must
 * re-encode to exactly its bytes, and one byte less of it must be "need
 * exactly this many".  Extension handshakes (and the whole input) go
 * through the extension-handshake parser, and what parses is rebuilt and
 * parsed again.  The input is also tried as a handshake and as a peer id.
 * Any broken invariant abort()s.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_HEAD 6

static void
fail(const char *what, size_t off)
{
    fprintf(stderr, "fuzz_wire: %s (at %zu)\n", what, off);
    abort();
}

#define CHECK(cond, off)                                                   \
    do {                                                                   \
        if (!(cond))                                                       \
            fail(#cond, (off));                                            \
    } while (0)

static void
check_ext(const uint8_t *p, size_t n, const struct wire_limits *lim)
{
    struct wire_ext_handshake h, h2;
    size_t off = SIZE_MAX;
    int r = wire_ext_handshake_parse(&h, p, n, lim, &off);
    if (r < 0) {
        CHECK(r > WIRE_E_MIN && off <= n, off);
        CHECK(r == WIRE_E_EXT_TOO_LONG || r == WIRE_E_EXT_BENCODE ||
                  r == WIRE_E_EXT_NOT_DICT || r == WIRE_E_NOMEM,
              off);
        return;
    }
    CHECK(r == 0 && off == SIZE_MAX, 0);
    CHECK((h.present & h.ignored) == 0, 0);
    CHECK(strlen(h.client) <= WIRE_EXT_CLIENT_MAX, 0);
    CHECK(h.yourip_len == 0 || h.yourip_len == 4 || h.yourip_len == 16, 0);
    for (const char *c = h.client; *c; c++)
        CHECK((unsigned char)*c >= 0x20 && *c != 0x7f, 0);

    /* Rebuild, decode the message, parse again: the same fields. */
    struct buf b;
    buf_init(&b, 1u << 16);
    int n2 = wire_put_ext_handshake(&b, &h);
    CHECK(n2 > WIRE_EXTENDED_HEADER_LEN && (size_t)n2 == b.len, 0);
    struct wire_decoder dec;
    struct wire_msg m;
    CHECK(wire_decoder_init(&dec, NULL, NULL) == 0, 0);
    CHECK(wire_decode(&dec, &m, b.data, b.len) == n2, 0);
    CHECK(m.type == WIRE_EXTENDED && m.ext_id == 0, 0);
    CHECK(wire_ext_handshake_parse(&h2, m.data, m.data_len, NULL, NULL) == 0,
          0);
    CHECK(h2.ignored == 0, 0);
    CHECK(h2.ut_metadata == h.ut_metadata && h2.ut_pex == h.ut_pex &&
              h2.port == h.port && h2.reqq == h.reqq &&
              h2.metadata_size == h.metadata_size &&
              h2.yourip_len == h.yourip_len &&
              memcmp(h2.yourip, h.yourip, h.yourip_len) == 0 &&
              strcmp(h2.client, h.client) == 0,
          0);
    buf_release(&b);
}

/* Decode buf[0..len) as a peer thread would.  Returns the last result;
 * *used is what was consumed (skips included, at most len). */
static int
decode_all(struct wire_decoder *dec, const uint8_t *buf, size_t len,
           size_t *used, struct buf *log, bool deep)
{
    size_t off = *used;
    int r;
    for (;;) {
        struct wire_msg m;
        size_t rest = len - off;
        r = wire_decode(dec, &m, buf + off, rest);
        if (r == 0) {
            CHECK(dec->need > rest, off);
            CHECK(dec->need <= wire_decoder_max_message(dec), off);
            break;
        }
        if (r == WIRE_E_UNKNOWN_ID) {
            CHECK(dec->skip >= 5 && dec->err_offset == 4, off);
            CHECK(dec->skip <= wire_decoder_max_message(dec), off);
            if (dec->skip > rest)
                break;
            off += dec->skip;
            continue;
        }
        if (r < 0) {
            CHECK(r > WIRE_E_MIN && dec->err_offset < rest, off);
            CHECK(strcmp(wire_strerror(r), "unknown error") != 0, off);
            CHECK(r <= WIRE_E_TOO_LONG && r >= WIRE_E_BITFIELD_SPARE, off);
            break;
        }
        CHECK((size_t)r <= rest, off);
        CHECK((size_t)r <= wire_decoder_max_message(dec), off);
        CHECK(m.type < WIRE_TYPE_MAX, off);
        if (m.data)
            CHECK(m.data > buf + off && m.data + m.data_len == buf + off + r,
                  off);
        else
            CHECK(m.data_len == 0, off);
        /* Re-encode: the same bytes. */
        size_t before = log->len;
        CHECK(wire_encode_buf(log, &m) == r, off);
        CHECK(memcmp(log->data + before, buf + off, (size_t)r) == 0, off);
        if (deep) {
            /* One byte short: exactly this message is needed. */
            struct wire_msg m2;
            CHECK(wire_decode(dec, &m2, buf + off, (size_t)r - 1) == 0, off);
            CHECK(dec->need == (size_t)r, off);
            if (m.type == WIRE_EXTENDED && m.ext_id == 0)
                check_ext(m.data, m.data_len, &dec->lim);
        }
        off += (size_t)r;
    }
    *used = off;
    return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct wire_limits small = {
        .max_block = 64,
        .max_extended = 200,
        .max_unknown = 16,
        .max_bitfield = 8,
        .max_ext_handshake = 100,
        .max_metadata_size = 1000,
    };

    /* As a handshake. */
    struct wire_handshake hs;
    int r = wire_handshake_parse(&hs, data, size, NULL, NULL);
    CHECK(r == 0 || r == WIRE_E_PROTOCOL || r == WIRE_HANDSHAKE_HEAD_LEN ||
              r == WIRE_HANDSHAKE_LEN,
          0);
    if (r == WIRE_HANDSHAKE_LEN) {
        uint8_t out[WIRE_HANDSHAKE_LEN];
        CHECK(wire_put_handshake(out, sizeof(out), &hs) == WIRE_HANDSHAKE_LEN,
              0);
        CHECK(memcmp(out, data, sizeof(out)) == 0, 0);
    }
    if (size >= WIRE_PEER_ID_LEN) {
        char name[WIRE_CLIENT_NAME_MAX];
        size_t n = wire_client_name(name, sizeof(name), data);
        CHECK(n < WIRE_CLIENT_NAME_MAX && strlen(name) == n, 0);
    }
    if (size < FUZZ_HEAD)
        return 0;

    /* The torrent and limits. */
    const uint8_t *h = data;
    const struct wire_limits *lim = h[0] & 1 ? &small : NULL;
    struct wire_torrent tor = {0};
    if (!(h[0] & 2)) {
        tor.piece_count = 1 + ((uint32_t)h[1] << 8 | h[2]) % 4096;
        tor.piece_length = h[3] & 0x80 ? 1 + (uint32_t)(h[3] & 0x7f) * 100
                                       : 16384u << (h[3] % 5);
        tor.last_piece_length =
            1 + ((uint32_t)h[4] << 8 | h[5]) % tor.piece_length;
    }
    size_t chunk = 1 + (h[0] >> 2) % 64;
    const uint8_t *s = data + FUZZ_HEAD;
    size_t n = size - FUZZ_HEAD;

    struct wire_decoder dec;
    CHECK(wire_decoder_init(&dec, lim, &tor) == 0, 0);
    struct buf whole, chunked;
    buf_init(&whole, SIZE_MAX);
    buf_init(&chunked, SIZE_MAX);

    /* Whole. */
    size_t used = 0;
    int rw = decode_all(&dec, s, n, &used, &whole, true);
    size_t err_at = used + dec.err_offset;

    /* In chunks; each call sees an exact-size copy of what has arrived. */
    size_t used2 = 0;
    int rc = 0;
    for (size_t fed = 0; fed < n;) {
        fed += chunk < n - fed ? chunk : n - fed;
        uint8_t *copy = malloc(fed ? fed : 1);
        if (!copy)
            abort();
        memcpy(copy, s, fed);
        rc = decode_all(&dec, copy, fed, &used2, &chunked, false);
        free(copy);
        if (rc < 0 && (rc != WIRE_E_UNKNOWN_ID || fed == n))
            break;
        if (rc == WIRE_E_UNKNOWN_ID)
            rc = 0; /* its end has not arrived yet: go on */
    }
    CHECK(rc == rw, used2);
    CHECK(chunked.len == whole.len &&
              (whole.len == 0 ||
               memcmp(chunked.data, whole.data, whole.len) == 0),
          used2);
    if (rw < 0 && rw != WIRE_E_UNKNOWN_ID)
        CHECK(used2 + dec.err_offset == err_at && used2 == used, used2);
    buf_release(&whole);
    buf_release(&chunked);

    /* The stream as an extension handshake. */
    check_ext(s, n, lim);
    return 0;
}
