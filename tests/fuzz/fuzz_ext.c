/* fuzz_ext — libFuzzer target for common/ext (BEP 9 and BEP 11).
 *
 * The first byte chooses the metadata size the parser expects (0: none;
 * else a size near a piece boundary); the rest is an extended message's
 * payload.  It goes through the ut_metadata parser (what parses is built
 * again and must parse to the same fields; a data piece goes into an
 * assembler) and the ut_pex parser (what parses is built again, at most
 * 50 a list, and must parse to the same peers; the peers go through a
 * PEX state).  Any broken invariant abort()s.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/ext.h"
#include "common/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *what)
{
    fprintf(stderr, "fuzz_ext: %s\n", what);
    abort();
}

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            fail(#cond);                                                       \
    } while (0)

/* The payload of the one extended message in b. */
static const uint8_t *
payload(const struct buf *b, size_t *len)
{
    struct wire_decoder dec;
    struct wire_msg m;
    CHECK(wire_decoder_init(&dec, NULL, NULL) == 0);
    CHECK(wire_decode(&dec, &m, b->data, b->len) == (int)b->len);
    CHECK(m.type == WIRE_EXTENDED && m.ext_id == 9);
    *len = m.data_len;
    return m.data;
}

static void
check_metadata(const uint8_t *p, size_t n, uint32_t expect)
{
    struct ext_metadata_msg m, m2;
    size_t off = SIZE_MAX;
    int r = ext_metadata_parse(&m, p, n, expect, &off);
    if (r < 0) {
        CHECK(r > EXT_E_MIN && off <= n);
        return;
    }
    CHECK(off == SIZE_MAX && m.type < EXT_MD_TYPE_MAX);
    CHECK(m.piece < EXT_METADATA_PIECES_MAX);
    struct buf b;
    buf_init(&b, 1u << 20);
    CHECK(ext_metadata_put(&b, 9, (enum ext_md_type)m.type, m.piece,
                           m.total_size, m.data, m.data_len) > 0);
    size_t len;
    const uint8_t *q = payload(&b, &len);
    CHECK(ext_metadata_parse(&m2, q, len, expect, NULL) == 0);
    CHECK(m2.type == m.type && m2.piece == m.piece &&
          m2.total_size == m.total_size && m2.data_len == m.data_len);
    if (m.type == EXT_MD_DATA) {
        CHECK(m.data_len == ext_metadata_piece_len(m.total_size, m.piece));
        CHECK(memcmp(m2.data, m.data, m.data_len) == 0);
        struct ext_metadata md;
        CHECK(ext_metadata_init(&md, m.total_size) == 0);
        CHECK(ext_metadata_add(&md, m.piece, m.data, m.data_len) == 1);
        CHECK(ext_metadata_add(&md, m.piece, m.data, m.data_len) == 0);
        CHECK(ext_metadata_has(&md, m.piece));
        CHECK(ext_metadata_complete(&md) == (md.n_pieces == 1));
        ext_metadata_release(&md);
    }
    buf_release(&b);
}

static void
check_pex(const uint8_t *p, size_t n)
{
    struct ext_pex_msg m, m2;
    size_t off = SIZE_MAX;
    int r = ext_pex_parse(&m, p, n, &off);
    if (r < 0) {
        CHECK(r > EXT_E_MIN && off <= n);
        return;
    }
    CHECK(m.n_added <= EXT_PEX_ACCEPT_MAX && m.n_dropped <= EXT_PEX_ACCEPT_MAX);
    for (size_t i = 0; i < m.n_added + m.n_dropped; i++)
        CHECK((m.peers[i].addr_len == 4 || m.peers[i].addr_len == 16) &&
              m.peers[i].port != 0);
    size_t na = m.n_added < EXT_PEX_SEND_MAX ? m.n_added : EXT_PEX_SEND_MAX;
    size_t nd = m.n_dropped < EXT_PEX_SEND_MAX ? m.n_dropped : EXT_PEX_SEND_MAX;
    struct buf b;
    buf_init(&b, 1u << 16);
    CHECK(ext_pex_put(&b, 9, m.peers, na, m.peers + m.n_added, nd) > 0);
    size_t len;
    const uint8_t *q = payload(&b, &len);
    CHECK(ext_pex_parse(&m2, q, len, NULL) == 0);
    CHECK(m2.n_added == na && m2.n_dropped == nd && !m2.truncated);
    /* Same multiset of peers (order: IPv4 first), same flags. */
    for (size_t i = 0; i < na; i++) {
        bool found = false;
        for (size_t k = 0; k < na && !found; k++)
            found = ext_pex_peer_cmp(&m.peers[i], &m2.peers[k]) == 0 &&
                    m.peers[i].flags == m2.peers[k].flags;
        CHECK(found);
    }
    buf_release(&b);

    /* Through a PEX state: limits hold, everything comes out in time. */
    struct ext_pex_state s;
    ext_pex_state_init(&s);
    int64_t t = 0;
    size_t got = 0;
    for (int round = 0; round < 6; round++) {
        struct ext_pex_msg x;
        r = ext_pex_state_next(&s, m.peers, m.n_added, t, &x);
        CHECK(r == 0 || r == 1);
        CHECK(x.n_added <= EXT_PEX_SEND_MAX && x.n_dropped == 0);
        got += x.n_added;
        ext_pex_msg_release(&x);
        if (r == 0)
            break;
        /* The minute rule. */
        CHECK(ext_pex_state_next(&s, m.peers, m.n_added, t + 1, &x) == -EAGAIN);
        t += EXT_PEX_INTERVAL_MS;
    }
    CHECK(got == s.n_sent && s.n_sent <= m.n_added);
    ext_pex_state_release(&s);
    ext_pex_msg_release(&m);
    ext_pex_msg_release(&m2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const uint32_t sizes[8] = {
        0,
        1,
        EXT_METADATA_PIECE - 1,
        EXT_METADATA_PIECE,
        EXT_METADATA_PIECE + 1,
        3 * EXT_METADATA_PIECE + 5,
        EXT_METADATA_MAX,
        100,
    };
    uint32_t expect = sizes[data[0] & 7];
    check_metadata(data + 1, size - 1, expect);
    check_pex(data + 1, size - 1);
    return 0;
}
