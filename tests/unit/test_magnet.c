/* Unit tests for common/magnet: every parameter, every error value with
 * its offset, the limits, canonical printing and round trips, truncation
 * at every length and a deterministic bit-flip loop (OpenSSH
 * regress/unittests FUZZ style). */
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
#include "common/hex.h"
#include "common/magnet.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* One info-hash in three spellings, a second one, and a v2 digest. */
#define HEX "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
#define HEX_UPPER "C12FE1C06BBA254A9DC9F519B335AA7C1367A88A"
#define B32 "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"
#define B32_LOWER "yex6dqdlxisuvhoj6um3gnnkpqjwpkek"
#define HEX2 "0123456789abcdef0123456789abcdef01234567"
#define MH "fee8bbaef0938616be872b702b0fc2254c8eda49c834fbd8da2fb2f1076420d0"
#define MH2 "0000000000000000000000000000000000000000000000000000000000000001"

#define XT "magnet:?xt=urn:btih:" HEX
#define XT_MH "xt=urn:btmh:1220" MH

/* A URI with every parameter, for the truncation and bit-flip loops. */
static const char full_uri[] =
    "magnet:?xt=urn:btih:" HEX "&" XT_MH
    "&dn=Ubuntu+22.04%20LTS%C3%A9"
    "&tr=http%3A%2F%2Ftracker.example%3A6969%2Fannounce"
    "&tr=udp://t2.example:1337&tr.1=http://x/?a+b"
    "&ws=http://ws.example/f&x.pe=10.0.0.1:6881&x.pe=[::1]:51413"
    "&x.pe=peer.example:80&so=0,2,4-6&kt=foo+bar&xl=10826029";

/* A large enough output cap for formatting in tests. */
#define OUT_CAP (1u << 20)

/* Limits for re-parsing printed output: printing may triple the length. */
static const struct magnet_limits lim_reparse = {
    .max_uri = SIZE_MAX,
    .max_value = 4u << 10,
    .max_list = 200,
};

/* Print m, parse the result back, expect an equal struct, and expect a
 * second print to be the same bytes (the canonical form is a fixed
 * point).  Returns the printed URI; the caller frees it. */
static char *
round_trip(const struct magnet *m, const struct magnet_limits *lim)
{
    struct buf b;
    buf_init(&b, OUT_CAP);
    assert_int_equal(magnet_format(m, &b), 0);

    struct magnet back;
    size_t off = 0;
    int r = magnet_parse(&back, b.data, b.len, lim, &off);
    if (r != 0)
        fail_msg("re-parse of '%s': %s at %zu", b.data,
                 magnet_strerror(r), off);
    assert_true(magnet_equal(m, &back));
    assert_true(magnet_equal(&back, m));

    struct buf b2;
    buf_init(&b2, OUT_CAP);
    assert_int_equal(magnet_format(&back, &b2), 0);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    buf_release(&b2);
    magnet_release(&back);
    return buf_steal(&b, NULL);
}

static int
parse_str(struct magnet *m, const char *uri, size_t *off)
{
    return magnet_parse(m, uri, strlen(uri), NULL, off);
}

/* ------------------------------------------------------------------ */

struct valid_case {
    const char *uri;
    const char *btih;        /* hex, or NULL */
    const char *btmh;        /* hex digest, or NULL */
    const char *dn;
    const char *tr[4];       /* NULL-terminated */
    const char *ws[3];
    const char *peers[4];
    struct magnet_range so[4];
    size_t n_so;
    const char *canonical;   /* what magnet_format() prints */
};

static const struct valid_case valid_cases[] = {
    {.uri = XT, .btih = HEX, .canonical = XT},
    {.uri = "MAGNET:?xt=URN:BTIH:" HEX_UPPER, .btih = HEX, .canonical = XT},
    {.uri = "MaGnEt:?xt=urn:btih:" B32, .btih = HEX, .canonical = XT},
    {.uri = "magnet:?xt=urn:btih:" B32_LOWER, .btih = HEX, .canonical = XT},
    {.uri = "magnet:?xt=urn%3Abtih%3A" HEX, .btih = HEX, .canonical = XT},
    {.uri = "magnet:?" XT_MH, .btmh = MH, .canonical = "magnet:?" XT_MH},
    {.uri = "magnet:?xt.1=urn:btmh:1220" MH "&xt.2=urn:btih:" B32,
     .btih = HEX, .btmh = MH, .canonical = XT "&" XT_MH},
    /* The same hash twice, in hex and base32; the same btmh twice. */
    {.uri = XT "&xt.1=urn:btih:" B32 "&" XT_MH "&" XT_MH,
     .btih = HEX, .btmh = MH, .canonical = XT "&" XT_MH},
    {.uri = full_uri, .btih = HEX, .btmh = MH,
     .dn = "Ubuntu 22.04 LTS\xc3\xa9",
     .tr = {"http://tracker.example:6969/announce",
            "udp://t2.example:1337", "http://x/?a+b"},
     .ws = {"http://ws.example/f"},
     .peers = {"10.0.0.1:6881", "[::1]:51413", "peer.example:80"},
     .so = {{0, 0}, {2, 2}, {4, 6}}, .n_so = 3,
     .canonical = XT "&" XT_MH "&dn=Ubuntu%2022.04%20LTS%C3%A9"
         "&tr=http%3A%2F%2Ftracker.example%3A6969%2Fannounce"
         "&tr=udp%3A%2F%2Ft2.example%3A1337&tr=http%3A%2F%2Fx%2F%3Fa%2Bb"
         "&ws=http%3A%2F%2Fws.example%2Ff&x.pe=10.0.0.1%3A6881"
         "&x.pe=%5B%3A%3A1%5D%3A51413&x.pe=peer.example%3A80"
         "&so=0,2,4-6"},
    /* Reserved characters in dn; '+' is a space in dn only. */
    {.uri = XT "&dn=a+b%2Bc%26d%3De%25f%7e~._-!*'()",
     .btih = HEX, .dn = "a b+c&d=e%f~~._-!*'()",
     .canonical = XT "&dn=a%20b%2Bc%26d%3De%25f~~._-%21%2A%27%28%29"},
    {.uri = XT "&tr=http://t/a?b=c+d", .btih = HEX,
     .tr = {"http://t/a?b=c+d"},
     .canonical = XT "&tr=http%3A%2F%2Ft%2Fa%3Fb%3Dc%2Bd"},
    /* Unknown parameters, empty parameters and empty values are
     * skipped; unknown parameters are not even decoded. */
    {.uri = "magnet:?&&xs=http://x/%zz&kt=a+b&x.foo=%00&as=&xt=urn:btih:"
            HEX,
     .btih = HEX, .canonical = XT},
    {.uri = XT "&&dn=&tr=&ws=&xt=urn:sha1:ABCDEF&xt=urn:ed2k:1&xt=foo&",
     .btih = HEX, .canonical = XT},
    {.uri = XT "&dn=same&dn=same", .btih = HEX, .dn = "same",
     .canonical = XT "&dn=same"},
    {.uri = XT "&tr.1=udp://a:1&tr.2=udp://b:2&tr=udp://c:3", .btih = HEX,
     .tr = {"udp://a:1", "udp://b:2", "udp://c:3"},
     .canonical = XT "&tr=udp%3A%2F%2Fa%3A1&tr=udp%3A%2F%2Fb%3A2"
         "&tr=udp%3A%2F%2Fc%3A3"},
    /* Several so parameters add up; numbers are printed canonically. */
    {.uri = XT "&so=1&so=007,3-4&so=0-4294967295&so=4294967295%2C5",
     .btih = HEX,
     .so = {{1, 1}, {7, 7}, {3, 4}, {0, UINT32_MAX}}, .n_so = 6,
     .canonical = XT "&so=1,7,3-4,0-4294967295,4294967295,5"},
    {.uri = XT "&x.pe=[2001:db8::1]:65535&x.pe=a-b_c.d:1", .btih = HEX,
     .peers = {"[2001:db8::1]:65535", "a-b_c.d:1"},
     .canonical = XT "&x.pe=%5B2001%3Adb8%3A%3A1%5D%3A65535"
         "&x.pe=a-b_c.d%3A1"},
};

static void
check_valid(const struct valid_case *c, const struct magnet *m)
{
    uint8_t h[32];
    assert_int_equal(m->has_btih, c->btih != NULL);
    if (c->btih) {
        assert_int_equal(hex_decode(h, c->btih, 20), 0);
        assert_memory_equal(m->btih, h, 20);
    }
    assert_int_equal(m->has_btmh, c->btmh != NULL);
    if (c->btmh) {
        assert_int_equal(hex_decode(h, c->btmh, 32), 0);
        assert_memory_equal(m->btmh, h, 32);
    }
    if (c->dn)
        assert_string_equal(m->dn, c->dn);
    else
        assert_null(m->dn);

    size_t n;
    for (n = 0; n < ARRAY_SIZE(c->tr) && c->tr[n]; n++)
        assert_string_equal(m->tr[n], c->tr[n]);
    assert_int_equal(m->n_tr, n);
    for (n = 0; n < ARRAY_SIZE(c->ws) && c->ws[n]; n++)
        assert_string_equal(m->ws[n], c->ws[n]);
    assert_int_equal(m->n_ws, n);
    for (n = 0; n < ARRAY_SIZE(c->peers) && c->peers[n]; n++)
        assert_string_equal(m->peers[n], c->peers[n]);
    assert_int_equal(m->n_peers, n);
    assert_int_equal(m->n_so, c->n_so);
    for (size_t i = 0; i < c->n_so && i < ARRAY_SIZE(c->so); i++) {
        assert_int_equal(m->so[i].first, c->so[i].first);
        assert_int_equal(m->so[i].last, c->so[i].last);
    }
}

static void
test_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(valid_cases); i++) {
        const struct valid_case *c = &valid_cases[i];
        struct magnet m;
        size_t off = 12345;
        int r = parse_str(&m, c->uri, &off);
        if (r != 0)
            fail_msg("case %zu '%s': %s at %zu", i, c->uri,
                     magnet_strerror(r), off);
        assert_int_equal(off, 12345); /* reterr_ only on failure */
        check_valid(c, &m);
        char *s = round_trip(&m, &lim_reparse);
        assert_string_equal(s, c->canonical);
        free(s);
        magnet_release(&m);
    }
}

/* ------------------------------------------------------------------ */

struct error_case {
    const char *uri;
    int err;
    const char *at;  /* the offset is where this last occurs ("": 0,
                        NULL: the end) */
};

static const struct error_case error_cases[] = {
    {"", MAGNET_E_SCHEME, ""},
    {"magnet", MAGNET_E_SCHEME, NULL},
    {"magnet:", MAGNET_E_SCHEME, NULL},
    {"magnet:xt=urn:btih:" HEX, MAGNET_E_SCHEME, "xt"},
    {"magnat:?xt=urn:btih:" HEX, MAGNET_E_SCHEME, "at:"},
    {"http://example/?xt=urn:btih:" HEX, MAGNET_E_SCHEME, ""},
    {" magnet:?xt=urn:btih:" HEX, MAGNET_E_SCHEME, ""},

    {XT "&foo", MAGNET_E_SYNTAX, "foo"},
    {XT "&=x", MAGNET_E_SYNTAX, "=x"},
    {"magnet:?dn", MAGNET_E_SYNTAX, "dn"},

    {XT "&dn=%4", MAGNET_E_ESCAPE, "%4"},
    {XT "&dn=%", MAGNET_E_ESCAPE, "%"},
    {XT "&dn=a%zzb", MAGNET_E_ESCAPE, "%zz"},
    {XT "&dn=a%g0", MAGNET_E_ESCAPE, "%g0"},
    {XT "&dn=a%0g", MAGNET_E_ESCAPE, "%0g"},
    {XT "&dn=a%00b", MAGNET_E_ESCAPE, "%00"},
    {XT "&tr=http://x/%2", MAGNET_E_ESCAPE, "%2"},
    {XT "&ws=%%41", MAGNET_E_ESCAPE, "%%"},
    {XT "&x.pe=%", MAGNET_E_ESCAPE, "%"},
    {XT "&so=1%2", MAGNET_E_ESCAPE, "%2"},
    {"magnet:?xt=urn:btih:%x" HEX, MAGNET_E_ESCAPE, "%"},
    {XT "&dn=%4&dn=x", MAGNET_E_ESCAPE, "%4"},

    {"magnet:?", MAGNET_E_NO_HASH, NULL},
    {"magnet:?dn=x&tr=udp://t:1", MAGNET_E_NO_HASH, NULL},
    {"magnet:?xt=urn:sha1:" HEX, MAGNET_E_NO_HASH, NULL},
    {"magnet:?XT=urn:btih:" HEX, MAGNET_E_NO_HASH, NULL},
    {"magnet:?xt.=urn:btih:" HEX, MAGNET_E_NO_HASH, NULL},
    {"magnet:?xt.1a=urn:btih:" HEX, MAGNET_E_NO_HASH, NULL},

    {"magnet:?xt=urn:btih:", MAGNET_E_BTIH, "urn"},
    {"magnet:?xt=urn:btih:" HEX "0", MAGNET_E_BTIH, "urn"},
    {"magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88",
     MAGNET_E_BTIH, "urn"},
    {"magnet:?xt=urn:btih:g12fe1c06bba254a9dc9f519b335aa7c1367a88a",
     MAGNET_E_BTIH, "urn"},
    {"magnet:?xt=urn:btih:1EX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK",
     MAGNET_E_BTIH, "urn"},
    {"magnet:?xt=urn:btih:" B32 "=", MAGNET_E_BTIH, "urn"},
    {"magnet:?dn=x&xt=urn:btih:" HEX "+", MAGNET_E_BTIH, "urn"},

    {"magnet:?xt=urn:btmh:", MAGNET_E_BTMH, "urn"},
    {"magnet:?xt=urn:btmh:1220", MAGNET_E_BTMH, "urn"},
    {"magnet:?xt=urn:btmh:1120" MH, MAGNET_E_BTMH, "urn"},
    {"magnet:?xt=urn:btmh:1220" MH "0", MAGNET_E_BTMH, "urn"},
    {"magnet:?xt=urn:btmh:" MH, MAGNET_E_BTMH, "urn"},
    {"magnet:?xt=urn:btmh:1220x"
     "ee8bbaef0938616be872b702b0fc2254c8eda49c834fbd8da2fb2f1076420d0",
     MAGNET_E_BTMH, "urn"},
    {XT "&xt=urn:btmh:1220" HEX, MAGNET_E_BTMH, "urn:btmh"},

    {XT "&xt.2=urn:btih:" HEX2, MAGNET_E_DUPLICATE, "xt.2"},
    {"magnet:?xt.1=urn:btih:" HEX2 "&xt.2=urn:btih:" B32,
     MAGNET_E_DUPLICATE, "xt.2"},
    {"magnet:?" XT_MH "&xt.9=urn:btmh:1220" MH2, MAGNET_E_DUPLICATE,
     "xt.9"},
    {XT "&dn=a&dn=b", MAGNET_E_DUPLICATE, "dn=b"},
    {XT "&dn=a+b&dn=a%2Bb", MAGNET_E_DUPLICATE, "dn=a%"},

    {XT "&x.pe=", MAGNET_E_PEER, NULL},
    {XT "&x.pe=10.0.0.1", MAGNET_E_PEER, "10."},
    {XT "&x.pe=10.0.0.1:", MAGNET_E_PEER, "10."},
    {XT "&x.pe=10.0.0.1:0", MAGNET_E_PEER, "10."},
    {XT "&x.pe=10.0.0.1:65536", MAGNET_E_PEER, "10."},
    {XT "&x.pe=10.0.0.1:123456", MAGNET_E_PEER, "10."},
    {XT "&x.pe=10.0.0.1:+80", MAGNET_E_PEER, "10."},
    {XT "&x.pe=:6881", MAGNET_E_PEER, ":68"},
    {XT "&x.pe=host%20name:1", MAGNET_E_PEER, "host"},
    {XT "&x.pe=::1:6881", MAGNET_E_PEER, "::1"},
    {XT "&x.pe=[::1:6881", MAGNET_E_PEER, "[::"},
    {XT "&x.pe=[zz]:6881", MAGNET_E_PEER, "[zz"},
    {XT "&x.pe=[]:6881", MAGNET_E_PEER, "[]"},
    {XT "&x.pe=[::1]x:6881", MAGNET_E_PEER, "[::"},

    {XT "&so=", MAGNET_E_SELECT, NULL},
    {XT "&so=a", MAGNET_E_SELECT, "a"},
    {XT "&so=1,", MAGNET_E_SELECT, "1,"},
    {XT "&so=,1", MAGNET_E_SELECT, ",1"},
    {XT "&so=3-1", MAGNET_E_SELECT, "3-1"},
    {XT "&so=1-", MAGNET_E_SELECT, "1-"},
    {XT "&so=-1", MAGNET_E_SELECT, "-1"},
    {XT "&so=1--2", MAGNET_E_SELECT, "1--"},
    {XT "&so=1;2", MAGNET_E_SELECT, "1;"},
    {XT "&so=1+2", MAGNET_E_SELECT, "1+"},
    {XT "&so=4294967296", MAGNET_E_SELECT, "429"},
    {XT "&so=0-99999999999999999999", MAGNET_E_SELECT, "0-9"},
};

static void
test_errors(void **state)
{
    (void)state;
    bool seen[-MAGNET_E_MIN] = {false};
    for (size_t i = 0; i < ARRAY_SIZE(error_cases); i++) {
        const struct error_case *c = &error_cases[i];
        size_t len = strlen(c->uri);
        size_t want = len;
        if (c->at && c->at[0] == '\0') {
            want = 0;
        } else if (c->at) {
            const char *p = NULL;
            for (const char *q = c->uri; (q = strstr(q, c->at)); q++)
                p = q;
            assert_non_null(p);
            want = (size_t)(p - c->uri);
        }
        struct magnet m;
        memset(&m, 0xa5, sizeof(m));
        size_t off = SIZE_MAX;
        int r = magnet_parse(&m, c->uri, len, NULL, &off);
        if (r != c->err || off != want)
            fail_msg("case %zu '%s': got %d (%s) at %zu, want %d at %zu",
                     i, c->uri, r, magnet_strerror(r), off, c->err, want);
        /* ret is written only on success. */
        for (size_t k = 0; k < sizeof(m); k++)
            assert_int_equal(((const uint8_t *)&m)[k], 0xa5);
        seen[-r] = true;
        /* reterr_offset may be NULL. */
        assert_int_equal(magnet_parse(&m, c->uri, len, NULL, NULL), c->err);
    }
    /* Every error but those that test_limits and nobody (NOMEM) cover. */
    for (int e = MAGNET_E_SCHEME; e > MAGNET_E_MIN; e--)
        if (e != MAGNET_E_TOO_LONG && e != MAGNET_E_TOO_MANY &&
            e != MAGNET_E_NOMEM)
            assert_true(seen[-e]);
}

/* A NUL byte is refused wherever it is, even in an unknown parameter. */
static void
test_nul_byte(void **state)
{
    (void)state;
    static const char uri[] = XT "&dn=a\0b";
    static const char uri2[] = XT "&kt=\0";
    struct magnet m;
    size_t off = 0;
    assert_int_equal(magnet_parse(&m, uri, sizeof(uri) - 1, NULL, &off),
                     MAGNET_E_SYNTAX);
    assert_int_equal(off, strlen(XT "&dn=a"));
    assert_int_equal(magnet_parse(&m, uri2, sizeof(uri2) - 1, NULL, &off),
                     MAGNET_E_SYNTAX);
    assert_int_equal(off, strlen(XT "&kt="));
    /* But the URI need not be NUL-terminated: len rules. */
    assert_int_equal(magnet_parse(&m, uri, strlen(XT), NULL, &off), 0);
    magnet_release(&m);
}

/* ------------------------------------------------------------------ */

/* "magnet:?xt=...&<key>=<value>" repeated n times. */
static char *
repeat_param(const char *param, size_t n)
{
    struct buf b;
    buf_init(&b, OUT_CAP);
    assert_int_equal(buf_puts(&b, XT), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(buf_printf(&b, "&%s%zu", param, i), 0);
    return buf_steal(&b, NULL);
}

/* "magnet:?xt=...&<key>=" and n times unit. */
static char *
long_value(const char *key, const char *unit, size_t n)
{
    struct buf b;
    buf_init(&b, OUT_CAP);
    assert_int_equal(buf_printf(&b, "%s&%s=", XT, key), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(buf_puts(&b, unit), 0);
    return buf_steal(&b, NULL);
}

static void
test_limits(void **state)
{
    (void)state;
    /* A btih xt value is 49 bytes: the smallest useful max_value. */
    const struct magnet_limits lim = {
        .max_uri = 1000,
        .max_value = 49,
        .max_list = 2,
    };
    struct magnet m;
    size_t off;
    char *s;
    const char *u;

    /* max_list, per list. */
    static const char *const lists[] = {
        "tr=udp://t:", "ws=http://w/", "x.pe=h:1",
    };
    for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
        s = repeat_param(lists[i], 2);
        assert_int_equal(magnet_parse(&m, s, strlen(s), &lim, &off), 0);
        magnet_release(&m);
        free(s);
        s = repeat_param(lists[i], 3);
        assert_int_equal(magnet_parse(&m, s, strlen(s), &lim, &off),
                         MAGNET_E_TOO_MANY);
        assert_int_equal(off, strrchr(s, '&') + 1 - s);
        free(s);
    }
    /* The lists count separately. */
    u = XT "&tr=a&tr=b&ws=a&ws=b&x.pe=a:1&x.pe=b:2&so=1,2";
    assert_int_equal(magnet_parse(&m, u, strlen(u), &lim, &off), 0);
    assert_int_equal(m.n_tr + m.n_ws + m.n_peers + m.n_so, 8);
    magnet_release(&m);
    /* so ranges count across parameters. */
    u = XT "&so=1-3&so=5,7";
    assert_int_equal(magnet_parse(&m, u, strlen(u), &lim, &off),
                     MAGNET_E_TOO_MANY);
    assert_int_equal(off, strlen(XT "&so=1-3&"));
    u = XT "&so=1,2,3";
    assert_int_equal(magnet_parse(&m, u, strlen(u), &lim, &off),
                     MAGNET_E_TOO_MANY);
    assert_int_equal(off, strlen(XT "&"));

    /* max_value counts decoded bytes. */
    s = long_value("dn", "a", 49);
    assert_int_equal(magnet_parse(&m, s, strlen(s), &lim, &off), 0);
    assert_int_equal(strlen(m.dn), 49);
    magnet_release(&m);
    free(s);
    s = long_value("dn", "a", 50);
    assert_int_equal(magnet_parse(&m, s, strlen(s), &lim, &off),
                     MAGNET_E_TOO_LONG);
    assert_int_equal(off, strlen(s) - 1);
    free(s);
    s = long_value("tr", "%41", 49);
    assert_int_equal(magnet_parse(&m, s, strlen(s), &lim, &off), 0);
    assert_int_equal(strlen(m.tr[0]), 49);
    magnet_release(&m);
    free(s);
    s = long_value("tr", "%41", 50);
    assert_int_equal(magnet_parse(&m, s, strlen(s), &lim, &off),
                     MAGNET_E_TOO_LONG);
    assert_int_equal(off, strlen(s) - 3);
    free(s);
    /* Unknown parameters are not measured. */
    s = long_value("kt", "a", 100);
    assert_int_equal(magnet_parse(&m, s, strlen(s), &lim, &off), 0);
    magnet_release(&m);
    free(s);
    /* An xt is a value like the others. */
    struct magnet_limits small = lim;
    small.max_value = 48;
    assert_int_equal(magnet_parse(&m, XT, strlen(XT), &small, &off),
                     MAGNET_E_TOO_LONG);
    assert_int_equal(off, strlen(XT) - 1);

    /* max_uri: exactly at the limit passes, one more byte does not. */
    struct magnet_limits ul = magnet_limits_default;
    ul.max_uri = strlen(XT);
    assert_int_equal(magnet_parse(&m, XT, strlen(XT), &ul, &off), 0);
    magnet_release(&m);
    assert_int_equal(magnet_parse(&m, XT "&", strlen(XT) + 1, &ul, &off),
                     MAGNET_E_TOO_LONG);
    assert_int_equal(off, strlen(XT));
}

/* The defaults: 200 items per list, 4 KiB per value, 64 KiB in all. */
static void
test_default_limits(void **state)
{
    (void)state;
    struct magnet m;
    size_t off;
    char *s = repeat_param("tr=udp://t:", 200);
    assert_int_equal(parse_str(&m, s, &off), 0);
    assert_int_equal(m.n_tr, 200);
    assert_string_equal(m.tr[199], "udp://t:199");
    free(round_trip(&m, &lim_reparse));
    magnet_release(&m);
    free(s);
    s = repeat_param("tr=udp://t:", 201);
    assert_int_equal(parse_str(&m, s, &off), MAGNET_E_TOO_MANY);
    free(s);

    struct buf b;
    buf_init(&b, OUT_CAP);
    assert_int_equal(buf_puts(&b, XT "&dn="), 0);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(buf_putc(&b, 'a'), 0);
    assert_int_equal(magnet_parse(&m, b.data, b.len, NULL, &off), 0);
    assert_int_equal(strlen(m.dn), 4096);
    magnet_release(&m);
    assert_int_equal(buf_putc(&b, 'a'), 0);
    assert_int_equal(magnet_parse(&m, b.data, b.len, NULL, &off),
                     MAGNET_E_TOO_LONG);
    assert_int_equal(off, b.len - 1);

    buf_reset(&b);
    assert_int_equal(buf_puts(&b, XT "&"), 0);
    while (b.len < (64u << 10) + 1)
        assert_int_equal(buf_putc(&b, '&'), 0);
    assert_int_equal(magnet_parse(&m, b.data, b.len, NULL, &off),
                     MAGNET_E_TOO_LONG);
    assert_int_equal(off, 64u << 10);
    assert_int_equal(magnet_parse(&m, b.data, b.len - 1, NULL, &off), 0);
    magnet_release(&m);
    buf_release(&b);
}

/* ------------------------------------------------------------------ */

static void
test_format(void **state)
{
    (void)state;
    struct magnet m = {0};
    struct buf b;
    buf_init(&b, OUT_CAP);

    /* Nothing to print without a hash. */
    assert_int_equal(magnet_format(&m, &b), -EINVAL);
    assert_int_equal(b.len, 0);

    /* A struct built by hand: values with every byte but NUL. */
    char dn[256];
    for (int i = 1; i < 256; i++)
        dn[i - 1] = (char)i;
    dn[255] = '\0';
    char *tr[] = {dn};
    struct magnet_range so[] = {{5, 5}, {UINT32_MAX, UINT32_MAX}, {0, 9}};
    m.has_btmh = true;
    memset(m.btmh, 0xab, sizeof(m.btmh));
    m.dn = dn;
    m.tr = tr;
    m.n_tr = 1;
    m.so = so;
    m.n_so = 3;
    char *s = round_trip(&m, &lim_reparse);
    assert_string_equal(strstr(s, "&so="), "&so=5,4294967295,0-9");
    assert_memory_equal(s, "magnet:?xt=urn:btmh:1220abab", 28);
    assert_non_null(strstr(s, "&dn=%01%02"));
    assert_non_null(strstr(s, "%2B%2C-.%2F0"));
    assert_non_null(strstr(s, "%7D~%7F%80"));
    assert_non_null(strstr(s, "%FE%FF&tr="));
    free(s);

    /* Appends to what out holds; on failure leaves it as it was. */
    assert_int_equal(buf_puts(&b, "x"), 0);
    m.dn = NULL;
    m.n_tr = 0;
    m.n_so = 0;
    assert_int_equal(magnet_format(&m, &b), 0);
    assert_string_equal(b.data, "xmagnet:?xt=urn:btmh:1220"
                        "abababababababababababababababab"
                        "abababababababababababababababab");
    buf_release(&b);
    size_t need = strlen("magnet:?xt=urn:btmh:1220") + 64;
    buf_init(&b, need);
    assert_int_equal(magnet_format(&m, &b), 0);
    assert_int_equal(b.len, need);
    assert_int_equal(magnet_format(&m, &b), -EMSGSIZE);
    assert_int_equal(b.len, need);
    buf_release(&b);
    buf_init(&b, need + 1);
    assert_int_equal(buf_puts(&b, "xy"), 0);
    assert_int_equal(magnet_format(&m, &b), -EMSGSIZE);
    assert_string_equal(b.data, "xy");
    buf_release(&b);
}

static void
test_equal(void **state)
{
    (void)state;
    struct magnet a, b;
    assert_int_equal(parse_str(&a, full_uri, NULL), 0);
    assert_int_equal(parse_str(&b, full_uri, NULL), 0);
    assert_true(magnet_equal(&a, &b));
    b.so[2].last++;
    assert_false(magnet_equal(&a, &b));
    b.so[2].last--;
    b.peers[1][1] = 'x';
    assert_false(magnet_equal(&a, &b));
    b.peers[1][1] = ':';
    b.n_ws = 0;
    assert_false(magnet_equal(&a, &b));
    b.n_ws = 1;
    b.btmh[31] ^= 1;
    assert_false(magnet_equal(&a, &b));
    b.btmh[31] ^= 1;
    assert_true(magnet_equal(&a, &b));
    magnet_release(&b);
    assert_int_equal(parse_str(&b, XT, NULL), 0);
    assert_false(magnet_equal(&a, &b));
    magnet_release(&a);
    magnet_release(&b);
}

static void
test_release(void **state)
{
    (void)state;
    struct magnet m = {0};
    magnet_release(NULL);
    magnet_release(&m);
    assert_int_equal(parse_str(&m, full_uri, NULL), 0);
    magnet_release(&m);
    assert_null(m.dn);
    assert_null(m.tr);
    assert_int_equal(m.n_tr, 0);
    magnet_release(&m);
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = MAGNET_OK; e > MAGNET_E_MIN; e--) {
        const char *s = magnet_strerror(e);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
        for (int f = MAGNET_OK; f > e; f--)
            assert_string_not_equal(s, magnet_strerror(f));
    }
    assert_string_equal(magnet_strerror(MAGNET_E_MIN), "unknown error");
    assert_string_equal(magnet_strerror(1), "unknown error");
    assert_string_equal(magnet_strerror(-1000), "unknown error");
}

/* ------------------------------------------------------------------ */

/* Whatever the input, a parse either succeeds and round-trips, or fails
 * with a known error at an offset within the input. */
static void
check_any(const char *p, size_t len)
{
    struct magnet m;
    size_t off = SIZE_MAX;
    int r = magnet_parse(&m, p, len, NULL, &off);
    if (r == 0) {
        assert_true(m.has_btih || m.has_btmh);
        free(round_trip(&m, &lim_reparse));
        magnet_release(&m);
        return;
    }
    assert_true(r < 0 && r > MAGNET_E_MIN);
    assert_true(off <= len);
}

static void
test_truncated(void **state)
{
    (void)state;
    size_t n = strlen(full_uri);
    int ok = 0;
    for (size_t len = 0; len <= n; len++) {
        /* An exact-size copy, so that ASan sees any read past len. */
        char *p = malloc(len ? len : 1);
        assert_non_null(p);
        memcpy(p, full_uri, len);
        struct magnet m;
        size_t off;
        if (magnet_parse(&m, p, len, NULL, &off) == 0) {
            ok++;
            magnet_release(&m);
        }
        check_any(p, len);
        free(p);
    }
    /* Some prefixes end cleanly between parameters. */
    assert_true(ok > 10);
}

/* OpenSSH test_helper FUZZ_1_BIT_FLIP and FUZZ_1_BYTE_FLIP, plus every
 * byte set to each of the characters that the grammar cares about. */
static void
test_bit_flip(void **state)
{
    (void)state;
    static const char special[] = "%&=+,-:[]?.\0 0aAzZ9";
    size_t n = strlen(full_uri);
    char *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        memcpy(p, full_uri, n);
        for (int bit = 0; bit < 8; bit++) {
            p[i] = (char)(full_uri[i] ^ (1 << bit));
            check_any(p, n);
        }
        p[i] = (char)~full_uri[i];
        check_any(p, n);
        for (size_t k = 0; k < sizeof(special) - 1; k++) {
            p[i] = special[k];
            check_any(p, n);
        }
    }
    free(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_default_limits),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bit_flip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
