/* Unit tests for common/ext: ut_metadata (BEP 9) messages both ways with
 * every error value and its offset, truncation at every length and a
 * deterministic bit-flip loop; the metadata assembler (pieces out of
 * order, duplicates, a bad hash, then meta_parse_info on the result);
 * ut_pex (BEP 11) messages both ways with flags, IPv6, limits and errors;
 * the PEX state: diffs, the 50-peer limit and the one-a-minute rule. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/ext.h"
#include "common/metainfo.h"
#include "common/wire.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- allocation failure injection (bencode's node array) --- */
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

/* An exact-size heap copy, so ASan sees any read past the end. */
static uint8_t *
dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    assert_non_null(d);
    if (n)
        memcpy(d, p, n);
    return d;
}

static int
md_parse(const char *s, size_t len, uint32_t size, struct ext_metadata_msg *m,
         size_t *off)
{
    uint8_t *d = dup_bytes(s, len);
    int r = ext_metadata_parse(m, d, len, size, off);
    free(d);
    return r;
}

/* The payload of the extended message at the start of b, checked with the
 * wire decoder: id and length. */
static const uint8_t *
payload(const struct buf *b, uint8_t want_id, size_t *len)
{
    struct wire_decoder dec;
    struct wire_msg m;
    assert_int_equal(wire_decoder_init(&dec, NULL, NULL), 0);
    assert_int_equal(wire_decode(&dec, &m, b->data, b->len), (int)b->len);
    assert_int_equal(m.type, WIRE_EXTENDED);
    assert_int_equal(m.ext_id, want_id);
    *len = m.data_len;
    return m.data;
}

/* --- ut_metadata --- */

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e > EXT_E_MIN; e--)
        assert_string_not_equal(ext_strerror(e), "unknown error");
    assert_string_equal(ext_strerror(EXT_E_MIN), "unknown error");
    assert_string_equal(ext_strerror(1), "unknown error");
}

static void
test_piece_math(void **state)
{
    (void)state;
    assert_int_equal(ext_metadata_piece_count(0), 0);
    assert_int_equal(ext_metadata_piece_count(1), 1);
    assert_int_equal(ext_metadata_piece_count(16384), 1);
    assert_int_equal(ext_metadata_piece_count(16385), 2);
    assert_int_equal(ext_metadata_piece_count(EXT_METADATA_MAX),
                     EXT_METADATA_PIECES_MAX);
    assert_int_equal(ext_metadata_piece_len(16385, 0), 16384);
    assert_int_equal(ext_metadata_piece_len(16385, 1), 1);
    assert_int_equal(ext_metadata_piece_len(16385, 2), 0);
    assert_int_equal(ext_metadata_piece_len(32768, 1), 16384);
    assert_int_equal(ext_metadata_piece_len(0, 0), 0);
}

static void
test_md_valid(void **state)
{
    (void)state;
    struct ext_metadata_msg m;
    size_t off = 77;
    const char *req = "d8:msg_typei0e5:piecei3ee";
    assert_int_equal(md_parse(req, strlen(req), 0, &m, &off), 0);
    assert_int_equal(off, 77);
    assert_int_equal(m.type, EXT_MD_REQUEST);
    assert_int_equal(m.piece, 3);
    assert_null(m.data);
    const char *rej = "d8:msg_typei2e5:piecei0e3:zzz3:fooe"; /* unknown key */
    assert_int_equal(md_parse(rej, strlen(rej), 100, &m, NULL), 0);
    assert_int_equal(m.type, EXT_MD_REJECT);
    assert_int_equal(m.piece, 0);
    /* Data: the last piece of 16387 bytes is 3 bytes. */
    const char *dat = "d8:msg_typei1e5:piecei1e10:total_sizei16387eexyz";
    assert_int_equal(md_parse(dat, strlen(dat), 0, &m, NULL), 0);
    assert_int_equal(m.type, EXT_MD_DATA);
    assert_int_equal(m.piece, 1);
    assert_int_equal(m.total_size, 16387);
    assert_int_equal(m.data_len, 3);
    /* With the size expected. */
    assert_int_equal(md_parse(dat, strlen(dat), 16387, &m, NULL), 0);
}

struct md_err_case {
    const char *in;
    uint32_t size;
    int err;
    size_t off;
};

static void
test_md_errors(void **state)
{
    (void)state;
    static const struct md_err_case cases[] = {
        {"", 0, EXT_E_BENCODE, 0},
        {"d8:msg_typei0e", 0, EXT_E_BENCODE, 14},
        {"x", 0, EXT_E_BENCODE, 0},
        {"i0e", 0, EXT_E_NOT_DICT, 0},
        {"le", 0, EXT_E_NOT_DICT, 0},
        {"d5:piecei0ee", 0, EXT_E_MSG_TYPE, 0},
        {"d8:msg_type1:05:piecei0ee", 0, EXT_E_MSG_TYPE, 11},
        {"d8:msg_typei3e5:piecei0ee", 0, EXT_E_MSG_UNKNOWN, 11},
        {"d8:msg_typei-1e5:piecei0ee", 0, EXT_E_MSG_UNKNOWN, 11},
        {"d8:msg_typei0ee", 0, EXT_E_PIECE, 0},
        {"d8:msg_typei0e5:piece1:0e", 0, EXT_E_PIECE, 21},
        {"d8:msg_typei0e5:piecei-1ee", 0, EXT_E_PIECE, 21},
        {"d8:msg_typei0e5:piecei1024ee", 0, EXT_E_PIECE, 21},
        {"d8:msg_typei2e5:piecei1ee", 16384, EXT_E_PIECE, 21},
        {"d8:msg_typei0e5:piecei0eexx", 0, EXT_E_DATA_LENGTH, 25},
        {"d8:msg_typei1e5:piecei0ee", 0, EXT_E_TOTAL_SIZE, 0},
        {"d8:msg_typei1e5:piecei0e10:total_size1:1e", 0, EXT_E_TOTAL_SIZE, 37},
        {"d8:msg_typei1e5:piecei0e10:total_sizei0ee", 0, EXT_E_TOTAL_SIZE, 37},
        {"d8:msg_typei1e5:piecei0e10:total_sizei16777217ee", 0,
         EXT_E_TOTAL_SIZE, 37},
        {"d8:msg_typei1e5:piecei0e10:total_sizei2eexx", 3, EXT_E_TOTAL_SIZE,
         37},
        {"d8:msg_typei1e5:piecei1e10:total_sizei2eexx", 0, EXT_E_PIECE, 21},
        {"d8:msg_typei1e5:piecei0e10:total_sizei2eex", 0, EXT_E_DATA_LENGTH,
         41},
        {"d8:msg_typei1e5:piecei0e10:total_sizei2eexyz", 0, EXT_E_DATA_LENGTH,
         41},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct ext_metadata_msg m;
        size_t off = 999;
        int r =
            md_parse(cases[i].in, strlen(cases[i].in), cases[i].size, &m, &off);
        if (r != cases[i].err || off != cases[i].off)
            fail_msg("case %zu '%s': %d (%s) at %zu, want %d at %zu", i,
                     cases[i].in, r, ext_strerror(r), off, cases[i].err,
                     cases[i].off);
    }
    /* Too long: the limit is the offset. */
    size_t n = EXT_METADATA_MSG_MAX + 1;
    char *big = calloc(n, 1);
    assert_non_null(big);
    struct ext_metadata_msg m;
    size_t off = 0;
    assert_int_equal(md_parse(big, n, 0, &m, &off), EXT_E_TOO_LONG);
    assert_int_equal(off, EXT_METADATA_MSG_MAX);
    free(big);
    /* Out of memory in the bencode decoder. */
    const char *req = "d8:msg_typei0e5:piecei3ee";
    fail_allocs_in = 1;
    assert_int_equal(md_parse(req, strlen(req), 0, &m, &off), EXT_E_NOMEM);
    fail_allocs_in = 0;
}

static void
test_md_put(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1u << 20);
    size_t len;
    struct ext_metadata_msg m;

    int n = ext_metadata_put(&b, 7, EXT_MD_REQUEST, 5, 0, NULL, 0);
    assert_true(n > 0 && (size_t)n == b.len);
    const uint8_t *p = payload(&b, 7, &len);
    assert_int_equal(len, strlen("d8:msg_typei0e5:piecei5ee"));
    assert_memory_equal(p, "d8:msg_typei0e5:piecei5ee", len);
    buf_reset(&b);

    assert_true(ext_metadata_put(&b, 2, EXT_MD_REJECT, 9, 0, NULL, 0) > 0);
    p = payload(&b, 2, &len);
    assert_int_equal(ext_metadata_parse(&m, p, len, 0, NULL), 0);
    assert_int_equal(m.type, EXT_MD_REJECT);
    assert_int_equal(m.piece, 9);
    buf_reset(&b);

    /* Data: full piece and last piece. */
    uint32_t size = 2 * EXT_METADATA_PIECE + 10;
    uint8_t *md = malloc(size);
    assert_non_null(md);
    for (uint32_t i = 0; i < size; i++)
        md[i] = (uint8_t)(i * 7);
    for (uint32_t piece = 0; piece < 3; piece++) {
        uint32_t pl = ext_metadata_piece_len(size, piece);
        n = ext_metadata_put(&b, 3, EXT_MD_DATA, piece, size,
                             md + piece * EXT_METADATA_PIECE, pl);
        assert_true(n > 0);
        p = payload(&b, 3, &len);
        assert_true(len <= EXT_METADATA_MSG_MAX);
        assert_int_equal(ext_metadata_parse(&m, p, len, size, NULL), 0);
        assert_int_equal(m.type, EXT_MD_DATA);
        assert_int_equal(m.piece, piece);
        assert_int_equal(m.total_size, size);
        assert_int_equal(m.data_len, pl);
        assert_memory_equal(m.data, md + piece * EXT_METADATA_PIECE, pl);
        buf_reset(&b);
    }
    /* Refused, nothing appended. */
    assert_int_equal(ext_metadata_put(&b, 3, EXT_MD_TYPE_MAX, 0, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(ext_metadata_put(&b, 3, EXT_MD_REQUEST,
                                      EXT_METADATA_PIECES_MAX, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(ext_metadata_put(&b, 3, EXT_MD_DATA, 0, size, md, 10),
                     -EINVAL);
    assert_int_equal(ext_metadata_put(&b, 3, EXT_MD_DATA, 3, size, md, 10),
                     -EINVAL);
    assert_int_equal(ext_metadata_put(&b, 3, EXT_MD_DATA, 0, 0, md, 0),
                     -EINVAL);
    assert_int_equal(ext_metadata_put(&b, 3, EXT_MD_DATA, 0,
                                      EXT_METADATA_MAX + 1, md, 16384),
                     -EINVAL);
    assert_int_equal(ext_metadata_put(&b, 3, EXT_MD_DATA, 2, size, NULL, 10),
                     -EINVAL);
    assert_int_equal(b.len, 0);
    /* Past the cap: b as before. */
    struct buf small;
    buf_init(&small, 100);
    assert_int_equal(buf_append(&small, "abc", 3), 0);
    assert_int_equal(ext_metadata_put(&small, 3, EXT_MD_DATA, 0, size, md,
                                      EXT_METADATA_PIECE),
                     -EMSGSIZE);
    assert_int_equal(small.len, 3);
    assert_string_equal(small.data, "abc");
    buf_release(&small);
    free(md);
    buf_release(&b);
}

/* Every prefix of a valid data message fails, within the input. */
static void
test_md_truncation(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1u << 20);
    uint8_t d[100];
    memset(d, 'q', sizeof(d));
    assert_true(ext_metadata_put(&b, 1, EXT_MD_DATA, 0, 100, d, 100) > 0);
    size_t len;
    const uint8_t *p = payload(&b, 1, &len);
    size_t dict_len = len - 100;
    for (size_t k = 0; k < len; k++) {
        struct ext_metadata_msg m;
        size_t off = SIZE_MAX;
        uint8_t *c = dup_bytes(p, k);
        int r = ext_metadata_parse(&m, c, k, 0, &off);
        free(c);
        assert_int_equal(r, k < dict_len ? EXT_E_BENCODE : EXT_E_DATA_LENGTH);
        assert_true(off <= k);
    }
    buf_reset(&b);
    assert_true(ext_metadata_put(&b, 1, EXT_MD_REQUEST, 12, 0, NULL, 0) > 0);
    p = payload(&b, 1, &len);
    for (size_t k = 0; k < len; k++) {
        struct ext_metadata_msg m;
        size_t off = SIZE_MAX;
        uint8_t *c = dup_bytes(p, k);
        assert_int_equal(ext_metadata_parse(&m, c, k, 0, &off), EXT_E_BENCODE);
        free(c);
        assert_true(off <= k);
    }
    buf_release(&b);
}

/* Flip each bit of valid messages: any result is fine, but an error is
 * one of ours within the input, and a success is consistent. */
static void
test_bitflip(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1u << 20);
    uint8_t d[40];
    memset(d, 'z', sizeof(d));
    assert_true(ext_metadata_put(&b, 1, EXT_MD_DATA, 1, EXT_METADATA_PIECE + 40,
                                 d, 40) > 0);
    size_t len;
    const uint8_t *p = payload(&b, 1, &len);
    uint8_t *c = dup_bytes(p, len);
    int ok = 0;
    for (size_t i = 0; i < len * 8; i++) {
        c[i / 8] ^= (uint8_t)(1u << (i % 8));
        struct ext_metadata_msg m;
        size_t off = SIZE_MAX;
        int r = ext_metadata_parse(&m, c, len, 0, &off);
        if (r == 0) {
            ok++;
            assert_true(m.type < EXT_MD_TYPE_MAX);
            if (m.type == EXT_MD_DATA)
                assert_int_equal(m.data_len,
                                 ext_metadata_piece_len(m.total_size, m.piece));
        } else {
            assert_true(r < 0 && r > EXT_E_MIN);
            assert_true(off <= len);
        }
        c[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    assert_true(ok >= 40 * 8); /* flips inside the data are harmless */
    free(c);

    /* And a pex message. */
    buf_reset(&b);
    struct ext_pex_peer peers[3] = {
        {.addr = {127, 0, 0, 1}, .addr_len = 4, .port = 6881, .flags = 2},
        {.addr = {10, 1, 2, 3}, .addr_len = 4, .port = 1},
        {.addr = {0x20, 0x01, [15] = 1}, .addr_len = 16, .port = 443},
    };
    assert_true(ext_pex_put(&b, 1, peers, 3, peers + 1, 2) > 0);
    p = payload(&b, 1, &len);
    c = dup_bytes(p, len);
    for (size_t i = 0; i < len * 8; i++) {
        c[i / 8] ^= (uint8_t)(1u << (i % 8));
        struct ext_pex_msg m;
        size_t off = SIZE_MAX;
        int r = ext_pex_parse(&m, c, len, &off);
        if (r == 0) {
            assert_true(m.n_added <= EXT_PEX_ACCEPT_MAX);
            for (size_t k = 0; k < m.n_added + m.n_dropped; k++) {
                assert_true(m.peers[k].addr_len == 4 ||
                            m.peers[k].addr_len == 16);
                assert_int_not_equal(m.peers[k].port, 0);
            }
            ext_pex_msg_release(&m);
        } else {
            assert_true(r < 0 && r > EXT_E_MIN);
            assert_true(off <= len);
        }
        c[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    free(c);
    buf_release(&b);
}

/* --- the assembler --- */

/* A small valid info dictionary of about size bytes. */
static uint8_t *
make_info(size_t *ret_len, size_t name_len)
{
    struct buf b;
    buf_init(&b, 1u << 24);
    char *name = malloc(name_len + 1);
    assert_non_null(name);
    memset(name, 'n', name_len);
    name[name_len] = '\0';
    benc_put_dict(&b);
    benc_put_cstr(&b, "length");
    benc_put_int(&b, 100000);
    benc_put_cstr(&b, "name");
    benc_put_cstr(&b, name);
    benc_put_cstr(&b, "piece length");
    benc_put_int(&b, 16384);
    benc_put_cstr(&b, "pieces");
    uint8_t h[7 * 20];
    memset(h, 0xab, sizeof(h));
    benc_put_str(&b, h, sizeof(h));
    benc_put_end(&b);
    free(name);
    size_t len;
    uint8_t *d = (uint8_t *)buf_steal(&b, &len);
    *ret_len = len;
    return d;
}

static void
test_assembler(void **state)
{
    (void)state;
    struct ext_metadata md;
    assert_int_equal(ext_metadata_init(&md, 0), -EINVAL);
    assert_int_equal(ext_metadata_init(&md, EXT_METADATA_MAX + 1), -EINVAL);
    ext_metadata_release(&md); /* zeroed: fine */
    ext_metadata_release(NULL);

    /* Three pieces of metadata: a long name. */
    size_t len;
    uint8_t *info = make_info(&len, 2 * EXT_METADATA_PIECE + 100);
    assert_int_equal(ext_metadata_piece_count((uint32_t)len), 3);
    uint8_t hash[20];
    assert_int_equal(EVP_Digest(info, len, hash, NULL, EVP_sha1(), NULL), 1);

    assert_int_equal(ext_metadata_init(&md, (uint32_t)len), 0);
    assert_int_equal(md.n_pieces, 3);
    assert_false(ext_metadata_complete(&md));
    assert_int_equal(ext_metadata_verify(&md, hash), -EAGAIN);
    assert_int_equal(ext_metadata_next_missing(&md, 0), 0);
    uint32_t last = (uint32_t)len - 2 * EXT_METADATA_PIECE;
    /* Out of order: 2, 0, then 1. */
    assert_int_equal(
        ext_metadata_add(&md, 2, info + 2 * EXT_METADATA_PIECE, last), 1);
    assert_int_equal(ext_metadata_add(&md, 2, info, last), 0); /* kept */
    assert_int_equal(ext_metadata_add(&md, 3, info, 1), -EINVAL);
    assert_int_equal(ext_metadata_add(&md, 0, info, last), -EINVAL);
    assert_int_equal(ext_metadata_add(&md, 1, info, EXT_METADATA_PIECE + 1),
                     -EINVAL);
    assert_true(ext_metadata_has(&md, 2));
    assert_false(ext_metadata_has(&md, 0));
    assert_false(ext_metadata_has(&md, 3));
    assert_int_equal(ext_metadata_next_missing(&md, 2), 0); /* wraps */
    assert_int_equal(ext_metadata_add(&md, 0, info, EXT_METADATA_PIECE), 1);
    assert_int_equal(ext_metadata_next_missing(&md, 0), 1);
    assert_int_equal(ext_metadata_next_missing(&md, 99), 1);
    assert_int_equal(ext_metadata_verify(&md, hash), -EAGAIN);
    assert_int_equal(
        ext_metadata_add(&md, 1, info + EXT_METADATA_PIECE, EXT_METADATA_PIECE),
        1);
    assert_true(ext_metadata_complete(&md));
    assert_int_equal(ext_metadata_next_missing(&md, 0), UINT32_MAX);
    assert_int_equal(ext_metadata_verify(&md, hash), 0);
    struct meta_info *mi = NULL;
    struct meta_errinfo err;
    int r = meta_parse_info(&mi, md.buf, md.size, NULL, &err);
    if (r < 0)
        fail_msg("meta_parse_info: %s: %s", meta_strerror(r), err.detail);
    assert_memory_equal(mi->info_hash, hash, 20);
    meta_free(mi);

    /* A bad hash: a piece with one byte changed. */
    ext_metadata_reset(&md);
    assert_int_equal(md.n_have, 0);
    assert_false(ext_metadata_has(&md, 2));
    info[5] ^= 1;
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(
            ext_metadata_add(&md, i, info + i * EXT_METADATA_PIECE,
                             ext_metadata_piece_len((uint32_t)len, i)),
            1);
    assert_int_equal(ext_metadata_verify(&md, hash), -EBADMSG);
    ext_metadata_release(&md);
    assert_null(md.buf);
    free(info);

    /* One piece exactly. */
    assert_int_equal(ext_metadata_init(&md, EXT_METADATA_PIECE), 0);
    assert_int_equal(md.n_pieces, 1);
    uint8_t *one = calloc(EXT_METADATA_PIECE, 1);
    assert_int_equal(ext_metadata_add(&md, 0, one, EXT_METADATA_PIECE), 1);
    assert_true(ext_metadata_complete(&md));
    free(one);
    ext_metadata_release(&md);
}

/* --- ut_pex --- */

static void
test_pex_parse(void **state)
{
    (void)state;
    /* added: 127.0.0.1:6881 and 10.0.0.2:0 (skipped) and 1.2.3.4:80;
     * added.f matches (3 bytes); dropped: 5.6.7.8:1; added6: ::1 port
     * 51413 with added6.f of the wrong length (ignored). */
    struct buf b;
    buf_init(&b, 1u << 16);
    benc_put_dict(&b);
    benc_put_cstr(&b, "added");
    benc_put_str(&b,
                 "\x7f\x00\x00\x01\x1a\xe1"
                 "\x0a\x00\x00\x02\x00\x00"
                 "\x01\x02\x03\x04\x00\x50",
                 18);
    benc_put_cstr(&b, "added.f");
    benc_put_str(&b, "\x12\x01\x02", 3);
    benc_put_cstr(&b, "added6");
    benc_put_str(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\xc8\xd5", 18);
    benc_put_cstr(&b, "added6.f");
    benc_put_str(&b, "\x01\x01", 2);
    benc_put_cstr(&b, "dropped");
    benc_put_str(&b, "\x05\x06\x07\x08\x00\x01", 6);
    benc_put_end(&b);
    struct ext_pex_msg m;
    uint8_t *d = dup_bytes(b.data, b.len);
    assert_int_equal(ext_pex_parse(&m, d, b.len, NULL), 0);
    free(d);
    assert_int_equal(m.n_added, 3);
    assert_int_equal(m.n_dropped, 1);
    assert_false(m.truncated);
    assert_int_equal(m.peers[0].addr_len, 4);
    assert_memory_equal(m.peers[0].addr, "\x7f\x00\x00\x01", 4);
    assert_int_equal(m.peers[0].port, 6881);
    assert_int_equal(m.peers[0].flags, 0x12);
    assert_memory_equal(m.peers[1].addr, "\x01\x02\x03\x04", 4);
    assert_int_equal(m.peers[1].port, 80);
    assert_int_equal(m.peers[1].flags, 0x02);
    assert_int_equal(m.peers[2].addr_len, 16);
    assert_int_equal(m.peers[2].addr[15], 1);
    assert_int_equal(m.peers[2].port, 51413);
    assert_int_equal(m.peers[2].flags, 0);
    assert_memory_equal(m.peers[3].addr, "\x05\x06\x07\x08", 4);
    assert_int_equal(m.peers[3].port, 1);
    ext_pex_msg_release(&m);
    ext_pex_msg_release(NULL);
    ext_pex_msg_free(NULL);

    /* Empty dictionary: nothing. */
    assert_int_equal(ext_pex_parse(&m, "de", 2, NULL), 0);
    assert_int_equal(m.n_added + m.n_dropped, 0);
    ext_pex_msg_release(&m);

    /* Over the cap: 250 added, 210 dropped6; 200 each kept. */
    buf_reset(&b);
    uint8_t *list = calloc(250, 18);
    for (size_t i = 0; i < 250; i++) {
        list[i * 6] = 10;
        list[i * 6 + 3] = (uint8_t)i;
        list[i * 6 + 5] = 1;
    }
    benc_put_dict(&b);
    benc_put_cstr(&b, "added");
    benc_put_str(&b, list, 250 * 6);
    memset(list, 0, 250 * 18);
    for (size_t i = 0; i < 210; i++)
        list[i * 18 + 17] = 9;
    benc_put_cstr(&b, "dropped6");
    benc_put_str(&b, list, 210 * 18);
    benc_put_end(&b);
    free(list);
    d = dup_bytes(b.data, b.len);
    assert_int_equal(ext_pex_parse(&m, d, b.len, NULL), 0);
    free(d);
    assert_int_equal(m.n_added, EXT_PEX_ACCEPT_MAX);
    assert_int_equal(m.n_dropped, EXT_PEX_ACCEPT_MAX);
    assert_true(m.truncated);
    assert_int_equal(m.peers[199].addr[3], 199);
    assert_int_equal(m.peers[200].addr_len, 16);
    assert_int_equal(m.peers[200].port, 9);
    ext_pex_msg_release(&m);
    buf_release(&b);
}

static void
test_pex_errors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int err;
        size_t off;
    } cases[] = {
        {"", EXT_E_BENCODE, 0},
        {"d5:added", EXT_E_BENCODE, 8},
        {"d5:added0:", EXT_E_BENCODE, 10},
        {"de ", EXT_E_BENCODE, 2},
        {"i1e", EXT_E_NOT_DICT, 0},
        {"d5:addedi1ee", EXT_E_PEX_FIELD, 8},
        {"d5:added5:abcdee", EXT_E_PEX_FIELD, 8},
        {"d6:added66:abcdefe", EXT_E_PEX_FIELD, 9},
        {"d7:droppedle8:dropped60:e", EXT_E_PEX_FIELD, 10},
        {"d8:dropped66:abcdefe", EXT_E_PEX_FIELD, 11},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct ext_pex_msg m;
        size_t off = 999;
        size_t n = strlen(cases[i].in);
        uint8_t *d = dup_bytes(cases[i].in, n);
        int r = ext_pex_parse(&m, d, n, &off);
        free(d);
        if (r != cases[i].err || off != cases[i].off)
            fail_msg("case %zu '%s': %d at %zu, want %d at %zu", i, cases[i].in,
                     r, off, cases[i].err, cases[i].off);
    }
    size_t n = EXT_PEX_MSG_MAX + 1;
    char *big = calloc(n, 1);
    struct ext_pex_msg m;
    size_t off = 0;
    assert_int_equal(ext_pex_parse(&m, big, n, &off), EXT_E_TOO_LONG);
    assert_int_equal(off, EXT_PEX_MSG_MAX);
    free(big);
    fail_allocs_in = 1;
    assert_int_equal(ext_pex_parse(&m, "de", 2, &off), EXT_E_NOMEM);
    fail_allocs_in = 0;

    /* Truncation of a valid message at every length. */
    struct ext_pex_peer pp[2] = {
        {.addr = {1, 2, 3, 4}, .addr_len = 4, .port = 80, .flags = 1},
        {.addr = {0xfe, 0x80, [15] = 2}, .addr_len = 16, .port = 81},
    };
    struct buf b;
    buf_init(&b, 1u << 16);
    assert_true(ext_pex_put(&b, 1, pp, 2, pp, 2) > 0);
    size_t len;
    const uint8_t *p = payload(&b, 1, &len);
    for (size_t k = 0; k < len; k++) {
        uint8_t *d = dup_bytes(p, k);
        off = SIZE_MAX;
        assert_int_equal(ext_pex_parse(&m, d, k, &off), EXT_E_BENCODE);
        assert_true(off <= k);
        free(d);
    }
    uint8_t *d = dup_bytes(p, len);
    assert_int_equal(ext_pex_parse(&m, d, len, NULL), 0);
    assert_int_equal(m.n_added, 2);
    assert_int_equal(m.n_dropped, 2);
    ext_pex_msg_release(&m);
    free(d);
    buf_release(&b);
}

static void
test_pex_put(void **state)
{
    (void)state;
    struct ext_pex_peer added[EXT_PEX_SEND_MAX + 1], dropped[3];
    memset(added, 0, sizeof(added));
    for (int i = 0; i <= EXT_PEX_SEND_MAX; i++) {
        bool v6 = i % 5 == 0;
        added[i].addr_len = v6 ? 16 : 4;
        added[i].addr[0] = (uint8_t)(i + 1);
        added[i].port = (uint16_t)(1000 + i);
        added[i].flags = (uint8_t)(i & 0x1f);
    }
    memset(dropped, 0, sizeof(dropped));
    dropped[0] =
        (struct ext_pex_peer){.addr = {9, 9, 9, 9}, .addr_len = 4, .port = 9};
    dropped[1] =
        (struct ext_pex_peer){.addr = {0xfe, 0x80}, .addr_len = 16, .port = 10};
    struct buf b;
    buf_init(&b, 1u << 16);
    assert_int_equal(ext_pex_put(&b, 4, added, EXT_PEX_SEND_MAX + 1, NULL, 0),
                     -EINVAL);
    assert_int_equal(ext_pex_put(&b, 4, NULL, 0, added, EXT_PEX_SEND_MAX + 1),
                     -EINVAL);
    dropped[2] = dropped[0];
    dropped[2].addr_len = 6;
    assert_int_equal(ext_pex_put(&b, 4, NULL, 0, dropped, 3), -EINVAL);
    assert_int_equal(ext_pex_put(&b, 4, dropped + 2, 1, NULL, 0), -EINVAL);
    assert_int_equal(b.len, 0);

    int n = ext_pex_put(&b, 4, added, EXT_PEX_SEND_MAX, dropped, 2);
    assert_true(n > 0 && (size_t)n == b.len);
    size_t len;
    const uint8_t *p = payload(&b, 4, &len);
    struct ext_pex_msg m;
    assert_int_equal(ext_pex_parse(&m, p, len, NULL), 0);
    assert_int_equal(m.n_added, EXT_PEX_SEND_MAX);
    assert_int_equal(m.n_dropped, 2);
    /* IPv4 first, then IPv6, each in the order given. */
    size_t k = 0;
    for (int v6 = 0; v6 < 2; v6++)
        for (int i = 0; i < EXT_PEX_SEND_MAX; i++) {
            if ((i % 5 == 0) != v6)
                continue;
            assert_int_equal(ext_pex_peer_cmp(&m.peers[k], &added[i]), 0);
            assert_int_equal(m.peers[k].flags, added[i].flags);
            k++;
        }
    assert_int_equal(ext_pex_peer_cmp(&m.peers[k], &dropped[0]), 0);
    assert_int_equal(ext_pex_peer_cmp(&m.peers[k + 1], &dropped[1]), 0);
    ext_pex_msg_release(&m);

    /* Empty: added, added.f, dropped are there (as libtorrent sends). */
    buf_reset(&b);
    assert_true(ext_pex_put(&b, 1, NULL, 0, NULL, 0) > 0);
    p = payload(&b, 1, &len);
    const char *want = "d5:added0:7:added.f0:7:dropped0:e";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(p, want, len);

    /* Past the cap: as before. */
    struct buf small;
    buf_init(&small, 40);
    assert_int_equal(ext_pex_put(&small, 1, added, 10, NULL, 0), -EMSGSIZE);
    assert_int_equal(small.len, 0);
    buf_release(&small);
    buf_release(&b);
}

static struct ext_pex_peer
v4(uint8_t a, uint16_t port)
{
    struct ext_pex_peer p;
    memset(&p, 0, sizeof(p));
    p.addr[0] = 10;
    p.addr[3] = a;
    p.addr_len = 4;
    p.port = port;
    return p;
}

static bool
in_list(const struct ext_pex_peer *v, size_t n, const struct ext_pex_peer *x)
{
    for (size_t i = 0; i < n; i++)
        if (ext_pex_peer_cmp(&v[i], x) == 0)
            return true;
    return false;
}

static void
test_pex_state(void **state)
{
    (void)state;
    struct ext_pex_state s;
    struct ext_pex_msg m;
    ext_pex_state_init(&s);
    int64_t t = 5000;
    assert_true(ext_pex_state_due(&s, t));

    /* Nothing to say: 0, and the clock does not start. */
    assert_int_equal(ext_pex_state_next(&s, NULL, 0, t, &m), 0);
    assert_int_equal(m.n_added + m.n_dropped, 0);
    assert_null(m.peers);
    assert_true(ext_pex_state_due(&s, t));

    /* Three peers, one twice, one with flags. */
    struct ext_pex_peer cur[4] = {v4(1, 1), v4(2, 2), v4(1, 1), v4(3, 3)};
    cur[1].flags = EXT_PEX_F_SEED;
    assert_int_equal(ext_pex_state_next(&s, cur, 4, t, &m), 1);
    assert_int_equal(m.n_added, 3);
    assert_int_equal(m.n_dropped, 0);
    assert_true(in_list(m.peers, 3, &cur[1]));
    for (size_t i = 0; i < 3; i++)
        if (ext_pex_peer_cmp(&m.peers[i], &cur[1]) == 0)
            assert_int_equal(m.peers[i].flags, EXT_PEX_F_SEED);
    ext_pex_msg_release(&m);

    /* Within the minute: not due. */
    assert_false(ext_pex_state_due(&s, t + EXT_PEX_INTERVAL_MS - 1));
    assert_int_equal(
        ext_pex_state_next(&s, cur, 4, t + EXT_PEX_INTERVAL_MS - 1, &m),
        -EAGAIN);
    t += EXT_PEX_INTERVAL_MS;
    assert_true(ext_pex_state_due(&s, t));
    /* Same set: nothing. */
    assert_int_equal(ext_pex_state_next(&s, cur, 4, t, &m), 0);
    /* 2 gone, 4 new. */
    struct ext_pex_peer cur2[3] = {v4(3, 3), v4(4, 4), v4(1, 1)};
    assert_int_equal(ext_pex_state_next(&s, cur2, 3, t, &m), 1);
    assert_int_equal(m.n_added, 1);
    assert_int_equal(m.n_dropped, 1);
    assert_int_equal(ext_pex_peer_cmp(&m.peers[0], &cur2[1]), 0);
    struct ext_pex_peer two = v4(2, 2);
    assert_int_equal(ext_pex_peer_cmp(&m.peers[1], &two), 0);
    assert_int_equal(m.peers[1].flags, 0);
    ext_pex_msg_release(&m);
    assert_int_equal(s.n_sent, 3);

    /* 120 new peers: 50 a message; everyone gone: 50 dropped a message. */
    struct ext_pex_peer many[120];
    for (int i = 0; i < 120; i++)
        many[i] = v4((uint8_t)(100 + i), 7);
    size_t total_added = 0;
    for (int round = 0; round < 3; round++) {
        t += EXT_PEX_INTERVAL_MS;
        assert_int_equal(ext_pex_state_next(&s, many, 120, t, &m), 1);
        assert_true(m.n_added <= EXT_PEX_SEND_MAX);
        assert_true(m.n_dropped <= EXT_PEX_SEND_MAX);
        for (size_t i = 0; i < m.n_added; i++)
            assert_true(in_list(many, 120, &m.peers[i]));
        total_added += m.n_added;
        if (round == 0)
            assert_int_equal(m.n_dropped, 3);
        ext_pex_msg_release(&m);
    }
    assert_int_equal(total_added, 120);
    assert_int_equal(s.n_sent, 120);
    t += EXT_PEX_INTERVAL_MS;
    assert_int_equal(ext_pex_state_next(&s, many, 120, t, &m), 0);
    size_t total_dropped = 0;
    for (int round = 0; round < 3; round++) {
        t += EXT_PEX_INTERVAL_MS;
        assert_int_equal(ext_pex_state_next(&s, NULL, 0, t, &m), 1);
        assert_int_equal(m.n_added, 0);
        assert_true(m.n_dropped <= EXT_PEX_SEND_MAX);
        total_dropped += m.n_dropped;
        ext_pex_msg_release(&m);
    }
    assert_int_equal(total_dropped, 120);
    assert_int_equal(s.n_sent, 0);
    ext_pex_state_release(&s);
    ext_pex_state_release(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),  cmocka_unit_test(test_piece_math),
        cmocka_unit_test(test_md_valid),  cmocka_unit_test(test_md_errors),
        cmocka_unit_test(test_md_put),    cmocka_unit_test(test_md_truncation),
        cmocka_unit_test(test_bitflip),   cmocka_unit_test(test_assembler),
        cmocka_unit_test(test_pex_parse), cmocka_unit_test(test_pex_errors),
        cmocka_unit_test(test_pex_put),   cmocka_unit_test(test_pex_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
