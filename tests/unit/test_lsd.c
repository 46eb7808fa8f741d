/* Unit tests for common/lsd: the BEP 14 message byte for byte, round trips
 * with one and several info-hashes, every error value with its offset,
 * limits, case-insensitive header names and bare LF line ends, truncation
 * at every length, and a deterministic bit-flip loop. */
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
#include "common/lsd.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define H1 "0123456789abcdef0123456789abcdef01234567"
#define H2 "fedcba9876543210fedcba9876543210fedcba98"
#define HEAD "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n"

/* Parse an exact-size heap copy, so ASan sees any read past the end. */
static int
parse(struct lsd_msg *m, const void *p, size_t n, const struct lsd_limits *l,
      size_t *off)
{
    char *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    int r = lsd_parse(m, q, n, l, off);
    free(q);
    return r;
}

static int
parse_s(struct lsd_msg *m, const char *s, size_t *off)
{
    return parse(m, s, strlen(s), NULL, off);
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e > LSD_E_MIN; e--)
        assert_string_not_equal(lsd_strerror(e), "unknown error");
    assert_string_equal(lsd_strerror(LSD_E_MIN), "unknown error");
    assert_string_equal(lsd_strerror(1), "unknown error");
}

static void
test_build_exact(void **state)
{
    (void)state;
    uint8_t h[2][LSD_HASH_LEN];
    for (int i = 0; i < LSD_HASH_LEN; i++) {
        h[0][i] = (uint8_t)(i == 0 ? 0x01 : i);
        h[1][i] = (uint8_t)(0xff - i);
    }
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(lsd_build(&b, false, 6881, h, 1, "c0ffee"), 0);
    assert_non_null(b.data);
    assert_string_equal(b.data,
                        "BT-SEARCH * HTTP/1.1\r\n"
                        "Host: 239.192.152.143:6771\r\n"
                        "Port: 6881\r\n"
                        "Infohash: 01010203040506070809"
                        "0a0b0c0d0e0f10111213"
                        "\r\n"
                        "cookie: c0ffee\r\n"
                        "\r\n\r\n");
    buf_reset(&b);
    assert_int_equal(lsd_build(&b, true, 1, h, 2, NULL), 0);
    assert_non_null(strstr(b.data, "Host: [ff15::efc0:988f]:6771\r\n"));
    assert_null(strstr(b.data, "cookie"));
    struct lsd_msg m;
    size_t off = 99;
    assert_int_equal(parse(&m, b.data, b.len, NULL, &off), 0);
    assert_int_equal(m.port, 1);
    assert_int_equal(m.n_hashes, 2);
    assert_memory_equal(m.hashes, h, sizeof(h));
    assert_false(m.has_cookie);
    assert_int_equal(off, 99); /* untouched on success */
    buf_release(&b);
}

static void
test_build_errors(void **state)
{
    (void)state;
    uint8_t h[LSD_MAX_HASHES + 1][LSD_HASH_LEN];
    memset(h, 0xab, sizeof(h));
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(buf_puts(&b, "keep"), 0);
    assert_int_equal(lsd_build(&b, false, 0, h, 1, NULL), -EINVAL);
    assert_int_equal(lsd_build(&b, false, 1, h, 0, NULL), -EINVAL);
    assert_int_equal(lsd_build(&b, false, 1, NULL, 1, NULL), -EINVAL);
    assert_int_equal(lsd_build(&b, false, 1, h, LSD_MAX_HASHES + 1, NULL),
                     -EINVAL);
    assert_int_equal(lsd_build(&b, false, 1, h, 1, ""), -EINVAL);
    assert_int_equal(lsd_build(&b, false, 1, h, 1, "a b"), -EINVAL);
    char longc[LSD_COOKIE_MAX + 2];
    memset(longc, 'x', sizeof(longc) - 1);
    longc[sizeof(longc) - 1] = '\0';
    assert_int_equal(lsd_build(&b, false, 1, h, 1, longc), -EINVAL);
    longc[LSD_COOKIE_MAX] = '\0';
    assert_string_equal(b.data, "keep");
    /* The largest message fits a datagram and parses back. */
    buf_reset(&b);
    assert_int_equal(
        lsd_build(&b, true, 65535, h, LSD_MAX_HASHES, longc), 0);
    assert_true(b.len <= LSD_MAX_DATAGRAM);
    struct lsd_msg m;
    size_t off;
    assert_int_equal(parse(&m, b.data, b.len, NULL, &off), 0);
    assert_int_equal(m.n_hashes, 1); /* all the same hash: counted once */
    assert_string_equal(m.cookie, longc);
    /* A cap too small: -EMSGSIZE and the buffer as it was. */
    struct buf small;
    buf_init(&small, 40);
    assert_int_equal(buf_puts(&small, "x"), 0);
    assert_int_equal(lsd_build(&small, false, 1, h, 1, NULL), -EMSGSIZE);
    assert_int_equal(small.len, 1);
    assert_string_equal(small.data, "x");
    buf_release(&small);
    buf_release(&b);
}

static void
test_round_trip_many(void **state)
{
    (void)state;
    uint8_t h[LSD_MAX_HASHES][LSD_HASH_LEN];
    for (size_t i = 0; i < LSD_MAX_HASHES; i++)
        for (size_t k = 0; k < LSD_HASH_LEN; k++)
            h[i][k] = (uint8_t)(i * 31 + k * 7);
    struct buf b;
    buf_init(&b, 4096);
    for (size_t n = 1; n <= LSD_MAX_HASHES; n++) {
        buf_reset(&b);
        assert_int_equal(lsd_build(&b, n & 1, (uint16_t)(1000 + n), h, n,
                                   "cookie-42"),
                         0);
        struct lsd_msg m;
        size_t off;
        assert_int_equal(parse(&m, b.data, b.len, NULL, &off), 0);
        assert_int_equal(m.port, 1000 + n);
        assert_int_equal(m.n_hashes, n);
        assert_memory_equal(m.hashes, h, n * LSD_HASH_LEN);
        assert_true(m.has_cookie);
        assert_string_equal(m.cookie, "cookie-42");
    }
    buf_release(&b);
}

static void
test_lenient(void **state)
{
    (void)state;
    struct lsd_msg m;
    size_t off;
    /* Bare LF, mixed case names, spaces around values, unknown headers,
     * upper-case hex, a repeated hash, one blank line and junk after. */
    const char *s = "BT-SEARCH * HTTP/1.1\n"
                    "hOsT:239.192.152.143:6771\r\n"
                    "X-Other: whatever: it is\n"
                    "PORT:\t  7000 \r\n"
                    "INFOHASH: " "0123456789ABCDEF0123456789ABCDEF01234567" "\n"
                    "infohash:" H1 "\n"
                    "infoHash: " H2 "  \n"
                    "COOKIE: Zz\n"
                    "\n"
                    "anything \x01 at all";
    assert_int_equal(parse_s(&m, s, &off), 0);
    assert_int_equal(m.port, 7000);
    assert_int_equal(m.n_hashes, 2);
    assert_int_equal(m.hashes[0][0], 0x01);
    assert_int_equal(m.hashes[1][0], 0xfe);
    assert_string_equal(m.cookie, "Zz");
    /* Without Host and cookie: fine. */
    assert_int_equal(parse_s(&m, "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n"
                                 "Infohash: " H1 "\r\n\r\n",
                             &off),
                     0);
    assert_false(m.has_cookie);
}

struct err_case {
    const char *name;
    const char *in;
    int err;
    size_t off; /* SIZE_MAX: the length of the input */
};

static const struct err_case err_cases[] = {
    {"empty", "", LSD_E_TRUNCATED, 0},
    {"prefix of the request line", "BT-SEARCH *", LSD_E_TRUNCATED, SIZE_MAX},
    {"no blank line", HEAD "Port: 1\r\nInfohash: " H1 "\r\n", LSD_E_TRUNCATED,
     SIZE_MAX},
    {"partial last line", HEAD "Port: 1\r\nInfohash: " H1, LSD_E_TRUNCATED,
     SIZE_MAX},
    {"other method", "M-SEARCH * HTTP/1.1\r\n\r\n", LSD_E_REQUEST_LINE, 0},
    {"other version", "BT-SEARCH * HTTP/1.0\r\n\r\n", LSD_E_REQUEST_LINE, 0},
    {"request line, no end", "GET / HTTP/1.1", LSD_E_REQUEST_LINE, 0},
    {"request line, control", "BT-SEARCH\x01* HTTP/1.1\r\n\r\n",
     LSD_E_REQUEST_LINE, 0},
    {"header without colon", HEAD "Port 1\r\n\r\n", LSD_E_HEADER, 50},
    {"control byte", HEAD "Port: 1\x02\r\n\r\n", LSD_E_CONTROL, 57},
    {"NUL byte", HEAD "X: a\0b\r\n\r\n", LSD_E_CONTROL, 54},
    {"port twice", HEAD "Port: 1\r\nPort: 2\r\nInfohash: " H1 "\r\n\r\n",
     LSD_E_DUPLICATE, 59},
    {"host twice", HEAD "Host: x\r\nPort: 1\r\n\r\n", LSD_E_DUPLICATE, 50},
    {"cookie twice", HEAD "cookie: a\r\nCookie: b\r\n\r\n", LSD_E_DUPLICATE,
     61},
    {"port missing", HEAD "Infohash: " H1 "\r\n\r\n", LSD_E_PORT, 102},
    {"port empty", HEAD "Port:\r\n\r\n", LSD_E_PORT, 55},
    {"port zero", HEAD "Port: 0\r\n\r\n", LSD_E_PORT, 56},
    {"port too big", HEAD "Port: 65536\r\n\r\n", LSD_E_PORT, 56},
    {"port not a number", HEAD "Port: 12a\r\n\r\n", LSD_E_PORT, 56},
    {"port too long", HEAD "Port: 000001\r\n\r\n", LSD_E_PORT, 56},
    {"hash short", HEAD "Infohash: 0123\r\n\r\n", LSD_E_HASH, 60},
    {"hash not hex", HEAD "Infohash: 0123456789abcdef0123456789abcdef0123456g"
                          "\r\n\r\n",
     LSD_E_HASH, 60},
    {"no hash", HEAD "Port: 6881\r\n\r\n", LSD_E_NO_HASH, 62},
    {"cookie empty", HEAD "cookie:  \r\n\r\n", LSD_E_COOKIE, 59},
    {"cookie with space", HEAD "cookie: a b\r\n\r\n", LSD_E_COOKIE, 58},
    {"cookie high byte", HEAD "cookie: a\x80\r\n\r\n", LSD_E_COOKIE, 58},
    {"cookie too long",
     HEAD "cookie: 0123456789012345678901234567890123456789"
          "0123456789012345678901234\r\n\r\n",
     LSD_E_COOKIE, 58},
};

static void
test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(err_cases); i++) {
        const struct err_case *c = &err_cases[i];
        struct lsd_msg m;
        memset(&m, 0x5a, sizeof(m));
        size_t off = SIZE_MAX - 1;
        size_t n = strlen(c->in);
        if (strcmp(c->name, "NUL byte") == 0)
            n = strlen(HEAD) + 10;
        int r = parse(&m, c->in, n, NULL, &off);
        if (r != c->err || off != (c->off == SIZE_MAX ? n : c->off))
            fail_msg("%s: got %d (%s) at %zu, want %d at %zu", c->name, r,
                     lsd_strerror(r), off, c->err,
                     c->off == SIZE_MAX ? n : c->off);
        /* ret untouched on failure */
        assert_int_equal(m.port, 0x5a5a);
    }
}

static void
test_limits(void **state)
{
    (void)state;
    struct lsd_msg m;
    size_t off;
    /* Too large: LSD_MAX_DATAGRAM + 1 bytes, even with bigger limits. */
    char *big = malloc(LSD_MAX_DATAGRAM + 1);
    assert_non_null(big);
    memset(big, 'a', LSD_MAX_DATAGRAM + 1);
    struct lsd_limits huge = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    assert_int_equal(parse(&m, big, LSD_MAX_DATAGRAM + 1, &huge, &off),
                     LSD_E_TOO_LARGE);
    assert_int_equal(off, LSD_MAX_DATAGRAM);
    free(big);
    struct lsd_limits small = {100, 2, 40};
    const char *msg = HEAD "Port: 1\r\nInfohash: " H1 "\r\n\r\n";
    assert_int_equal(parse(&m, msg, strlen(msg), &small, &off),
                     LSD_E_TOO_LARGE);
    assert_int_equal(off, 100);
    /* Too many hashes: the line of the third distinct one. */
    small.max_size = 1400;
    small.max_line = 80;
    const char *three = HEAD "Port: 1\r\nInfohash: " H1 "\r\nInfohash: " H1
                             "\r\nInfohash: " H2 "\r\nInfohash: " H2
                             "\r\nInfohash: 1111111111111111111111111111111111"
                             "111111\r\n\r\n";
    assert_int_equal(parse(&m, three, strlen(three), &small, &off),
                     LSD_E_TOO_MANY);
    assert_int_equal(off, strlen(HEAD "Port: 1\r\n") + 4 * 52);
    assert_int_equal(parse(&m, three, strlen(three), NULL, &off), 0);
    assert_int_equal(m.n_hashes, 3);
    /* Seventeen distinct hashes with the default limit. */
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(buf_puts(&b, HEAD "Port: 9\r\n"), 0);
    for (int i = 0; i <= LSD_MAX_HASHES; i++)
        assert_int_equal(buf_printf(&b, "Infohash: %040x\r\n", i), 0);
    assert_int_equal(buf_puts(&b, "\r\n"), 0);
    assert_int_equal(parse(&m, b.data, b.len, NULL, &off), LSD_E_TOO_MANY);
    assert_int_equal(off, strlen(HEAD "Port: 9\r\n") + LSD_MAX_HASHES * 52);
    buf_release(&b);
    /* A long line: max_line counts bytes without the line end. */
    small.max_line = 30;
    const char *l30 = HEAD "X: 345678901234567890123456789\r\n"
                           "X: 3456789012345678901234567890\r\n\r\n";
    assert_int_equal(parse(&m, l30, strlen(l30), &small, &off),
                     LSD_E_LINE_TOO_LONG);
    assert_int_equal(off, strlen(HEAD) + 32);
    /* ... also when the line has no end yet. */
    const char *open = HEAD "X: 3456789012345678901234567890";
    assert_int_equal(parse(&m, open, strlen(open), &small, &off),
                     LSD_E_LINE_TOO_LONG);
    assert_int_equal(off, strlen(HEAD));
    /* The request line longer than max_line: REQUEST_LINE. */
    small.max_line = 10;
    assert_int_equal(parse(&m, msg, strlen(msg), &small, &off),
                     LSD_E_REQUEST_LINE);
    assert_int_equal(off, 0);
}

static const char valid[] = HEAD "Port: 6881\r\nInfohash: " H1
                                 "\r\nInfohash: " H2
                                 "\r\ncookie: abc123\r\n\r\n\r\n";

static void
test_truncation(void **state)
{
    (void)state;
    size_t n = strlen(valid);
    /* The header block ends with the first empty line's LF. */
    size_t end = strstr(valid, "\r\n\r\n") - valid + 4;
    for (size_t k = 0; k < n; k++) {
        struct lsd_msg m;
        size_t off = SIZE_MAX;
        int r = parse(&m, valid, k, NULL, &off);
        if (k >= end) {
            assert_int_equal(r, 0);
            assert_int_equal(m.n_hashes, 2);
        } else {
            assert_true(r < 0 && r > LSD_E_MIN);
            assert_true(off <= k);
        }
    }
}

static void
test_bitflip(void **state)
{
    (void)state;
    size_t n = strlen(valid);
    char *p = malloc(n);
    assert_non_null(p);
    unsigned ok = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(p, valid, n);
            p[i] = (char)(p[i] ^ (1 << bit));
            struct lsd_msg m;
            size_t off = SIZE_MAX;
            int r = parse(&m, p, n, NULL, &off);
            if (r == 0) {
                ok++;
                assert_true(m.port >= 1);
                assert_true(m.n_hashes >= 1 && m.n_hashes <= LSD_MAX_HASHES);
                assert_true(!m.has_cookie ||
                            strlen(m.cookie) <= LSD_COOKIE_MAX);
            } else {
                bad++;
                assert_true(r > LSD_E_MIN);
                assert_true(off <= n);
                assert_string_not_equal(lsd_strerror(r), "unknown error");
            }
        }
    }
    free(p);
    /* Both outcomes happen: flips in the hex digits' case or in unknown
     * bytes pass, flips in the structure fail. */
    assert_true(ok > 0 && bad > 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_build_exact),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_round_trip_many),
        cmocka_unit_test(test_lenient),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bitflip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
