/* Unit tests for common/trkserve: the HTTP request head parser and the
 * announce and scrape query parsers with every error value and its
 * offset, percent-decoding of every byte value, the bencoded answers
 * (read back with the client codecs of common/tracker), the UDP (BEP 15)
 * server codec byte for byte, stateless connection ids across time
 * buckets, the allowlist file, truncation at every length and a
 * deterministic bit-flip loop (OpenSSH regress/unittests FUZZ style). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/tracker.h"
#include "common/trkserve.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit) (lit), (sizeof(lit) - 1)

static const char HASH_Q[] = "%01%02%03%04%05%06%07%08%09%0a"
                             "%0b%0c%0d%0e%0f%10%11%12%13%14";
static const char PEER_Q[] = "-TD0100-abcdefghijkl";

/* --- percent-decoding -------------------------------------------------- */

static void
test_decode_all_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        char in[4];
        uint8_t out[4];
        size_t off = SIZE_MAX;
        /* Upper and lower case hex digits. */
        (void)snprintf(in, sizeof(in), "%%%02X", c);
        assert_int_equal(trkserve_url_decode(out, in, 3, &off), 1);
        assert_int_equal(out[0], c);
        (void)snprintf(in, sizeof(in), "%%%02x", c);
        assert_int_equal(trkserve_url_decode(out, in, 3, &off), 1);
        assert_int_equal(out[0], c);
        /* Raw, except '%' itself. */
        if (c != '%') {
            in[0] = (char)c;
            assert_int_equal(trkserve_url_decode(out, in, 1, &off), 1);
            assert_int_equal(out[0], c);
        }
    }
    /* All 256 values through the client's encoder and the announce
     * parser: info_hash windows of 20 bytes. */
    for (int start = 0; start + 20 <= 256; start++) {
        uint8_t h[20];
        struct buf q;
        for (int i = 0; i < 20; i++)
            h[i] = (uint8_t)(start + i);
        buf_init(&q, 4096);
        assert_int_equal(buf_puts(&q, "info_hash="), 0);
        assert_int_equal(tracker_url_escape(&q, h, 20), 0);
        assert_int_equal(buf_printf(&q, "&peer_id=%s&port=1", PEER_Q), 0);
        struct trkserve_announce a;
        assert_int_equal(trkserve_parse_announce(&a, q.data, q.len, NULL,
                                                 NULL),
                         0);
        assert_memory_equal(a.info_hash, h, 20);
        buf_release(&q);
    }
    /* Bad escapes, with their offsets. */
    static const struct {
        const char *in;
        size_t off;
    } bad[] = {{"%", 0}, {"%4", 0}, {"ab%zz", 2}, {"%4g", 0}, {"x%%41", 1},
               {"%41%", 3}};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint8_t out[16];
        size_t off = SIZE_MAX;
        assert_int_equal(trkserve_url_decode(out, bad[i].in,
                                             strlen(bad[i].in), &off),
                         TRKSERVE_E_ESCAPE);
        assert_int_equal(off, bad[i].off);
    }
}

/* --- the HTTP request head --------------------------------------------- */

static void
test_http_parse_valid(void **state)
{
    (void)state;
    struct trkserve_http_req r;
    static const char a[] = "GET /announce?info_hash=x&port=1 HTTP/1.1\r\n"
                            "Host: t\r\nUser-Agent: x/1\r\n\r\nEXTRA";
    assert_int_equal(trkserve_http_parse(&r, a, sizeof(a) - 1, NULL, NULL),
                     0);
    assert_int_equal(r.kind, TRKSERVE_ANNOUNCE);
    assert_int_equal(r.query_len, strlen("info_hash=x&port=1"));
    assert_memory_equal(r.query, "info_hash=x&port=1", r.query_len);
    assert_int_equal(r.query_off, 14);
    assert_int_equal(r.head_len, sizeof(a) - 1 - 5);
    assert_true(r.keep_alive);

    /* LF only, HTTP/1.0: no keep-alive unless asked. */
    static const char b[] = "GET /scrape HTTP/1.0\nHost: t\n\n";
    assert_int_equal(trkserve_http_parse(&r, S(b), NULL, NULL), 0);
    assert_int_equal(r.kind, TRKSERVE_SCRAPE);
    assert_int_equal(r.query_len, 0);
    assert_false(r.keep_alive);
    static const char c[] = "GET /scrape? HTTP/1.0\r\nConnection: Keep-Alive"
                            "\r\n\r\n";
    assert_int_equal(trkserve_http_parse(&r, S(c), NULL, NULL), 0);
    assert_true(r.keep_alive);
    static const char d[] = "GET /announce?a HTTP/1.1\r\nconnection: foo, "
                            "close\r\nContent-Length: 000\r\n\r\n";
    assert_int_equal(trkserve_http_parse(&r, S(d), NULL, NULL), 0);
    assert_false(r.keep_alive);
    /* Absolute form. */
    static const char e[] = "GET http://127.0.0.1:80/announce?q=1 HTTP/1.1"
                            "\r\n\r\n";
    assert_int_equal(trkserve_http_parse(&r, S(e), NULL, NULL), 0);
    assert_int_equal(r.kind, TRKSERVE_ANNOUNCE);
    assert_memory_equal(r.query, "q=1", 3);
    /* No headers at all. */
    static const char f[] = "GET /announce HTTP/1.1\r\n\r\n";
    assert_int_equal(trkserve_http_parse(&r, S(f), NULL, NULL), 0);
}

static const struct {
    const char *in;
    int err;
    size_t off; /* SIZE_MAX: the input's length */
} http_errors[] = {
    {"", TRKSERVE_E_TRUNCATED, SIZE_MAX},
    {"GET /announce HTTP/1.1", TRKSERVE_E_TRUNCATED, SIZE_MAX},
    {"GET /announce HTTP/1.1\r\nHost: x\r\n", TRKSERVE_E_TRUNCATED, SIZE_MAX},
    {"GET /announce HTTP/1.1\r\nHost: x", TRKSERVE_E_TRUNCATED, SIZE_MAX},
    {"GET /announce HTTP/1.1\r\n\r", TRKSERVE_E_TRUNCATED, SIZE_MAX},
    {"\r\n", TRKSERVE_E_REQUEST_LINE, 0},
    {"GET\r\n", TRKSERVE_E_REQUEST_LINE, 0},
    {"GET /announce\r\n", TRKSERVE_E_REQUEST_LINE, 4},
    {"GET  /announce HTTP/1.1\r\n", TRKSERVE_E_REQUEST_LINE, 4},
    {"GET /a\x01 HTTP/1.1\r\n", TRKSERVE_E_REQUEST_LINE, 6},
    {"G(T / HTTP/1.1\r\n", TRKSERVE_E_REQUEST_LINE, 1},
    {"POST /announce HTTP/1.1\r\n", TRKSERVE_E_METHOD, 0},
    {"get /announce HTTP/1.1\r\n", TRKSERVE_E_METHOD, 0},
    {"GET /announce HTTP/2.0\r\n", TRKSERVE_E_VERSION, 14},
    {"GET /announce HTTP/1.1 \r\n", TRKSERVE_E_VERSION, 14},
    {"GET /announce http/1.1\r\n", TRKSERVE_E_VERSION, 14},
    {"GET /announce HTTP/1.1\r\nNoColon\r\n\r\n", TRKSERVE_E_HEADER, 24},
    {"GET /announce HTTP/1.1\r\n: v\r\n\r\n", TRKSERVE_E_HEADER, 24},
    {"GET /announce HTTP/1.1\r\nA b: v\r\n\r\n", TRKSERVE_E_HEADER, 25},
    {"GET /announce HTTP/1.1\r\nA: \x01\r\n\r\n", TRKSERVE_E_HEADER, 27},
    {"GET /announce HTTP/1.1\r\nA: v\r\n folded\r\n\r\n", TRKSERVE_E_HEADER,
     30},
    {"GET /announce HTTP/1.1\r\nContent-Length: x\r\n\r\n",
     TRKSERVE_E_HEADER, 40},
    {"GET /announce HTTP/1.1\r\nContent-Length:\r\n\r\n", TRKSERVE_E_HEADER,
     39},
    {"GET /announce HTTP/1.1\r\nContent-Length: 5\r\n\r\n", TRKSERVE_E_BODY,
     24},
    {"GET /announce HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
     TRKSERVE_E_BODY, 24},
    {"GET / HTTP/1.1\r\n\r\n", TRKSERVE_E_PATH, 4},
    {"GET /announce/ HTTP/1.1\r\n\r\n", TRKSERVE_E_PATH, 4},
    {"GET /Announce HTTP/1.1\r\n\r\n", TRKSERVE_E_PATH, 4},
    {"GET /scrapes?x HTTP/1.1\r\n\r\n", TRKSERVE_E_PATH, 4},
    {"GET http://host HTTP/1.1\r\n\r\n", TRKSERVE_E_PATH, 4},
    {"GET ../announce HTTP/1.1\r\n\r\n", TRKSERVE_E_PATH, 4},
};

static void
test_http_parse_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(http_errors); i++) {
        struct trkserve_http_req r;
        size_t n = strlen(http_errors[i].in);
        size_t off = 12345;
        int e = trkserve_http_parse(&r, http_errors[i].in, n, NULL, &off);
        if (e != http_errors[i].err)
            fail_msg("case %zu '%s': %d, want %d", i, http_errors[i].in, e,
                     http_errors[i].err);
        size_t want = http_errors[i].off == SIZE_MAX ? n : http_errors[i].off;
        if (off != want)
            fail_msg("case %zu: offset %zu, want %zu", i, off, want);
        assert_int_equal(trkserve_http_status(e),
                         e == TRKSERVE_E_PATH ? 404 : 400);
    }
    /* Too large: a line that never ends, a head that never ends, too many
     * header lines. */
    size_t max = trkserve_limits_default.max_request;
    char *big = malloc(max + 10);
    assert_non_null(big);
    memset(big, 'a', max + 10);
    memcpy(big, "GET /announce?", 14);
    struct trkserve_http_req r;
    size_t off = 0;
    assert_int_equal(trkserve_http_parse(&r, big, max - 1, NULL, &off),
                     TRKSERVE_E_TRUNCATED);
    assert_int_equal(off, max - 1);
    assert_int_equal(trkserve_http_parse(&r, big, max, NULL, &off),
                     TRKSERVE_E_TOO_LARGE);
    assert_int_equal(off, max);
    assert_int_equal(trkserve_http_parse(&r, big, max + 10, NULL, &off),
                     TRKSERVE_E_TOO_LARGE);
    memcpy(big, "GET /announce HTTP/1.1\r\n", 24);
    for (size_t i = 24; i + 5 < max + 10; i += 5)
        memcpy(big + i, "A: b\n", 5);
    assert_int_equal(trkserve_http_parse(&r, big, max + 10, NULL, &off),
                     TRKSERVE_E_TOO_MANY);
    assert_int_equal(off, 24 + 5 * trkserve_limits_default.max_headers);
    struct trkserve_limits lim = trkserve_limits_default;
    lim.max_headers = 10000;
    assert_int_equal(trkserve_http_parse(&r, big, max + 10, &lim, &off),
                     TRKSERVE_E_TOO_LARGE);
    assert_int_equal(off, max);
    free(big);
}

/* --- announce and scrape queries --------------------------------------- */

static void
test_announce_valid(void **state)
{
    (void)state;
    char q[512];
    struct trkserve_announce a;
    (void)snprintf(q, sizeof(q),
                   "info_hash=%s&peer_id=%s&port=6881&uploaded=1&"
                   "downloaded=2&left=0&event=completed&compact=0&"
                   "no_peer_id=1&numwant=500&ip=1.2.3.4&key=%%00abc&"
                   "unknown=%%zz&supportcrypto=1&&",
                   HASH_Q, PEER_Q);
    assert_int_equal(trkserve_parse_announce(&a, q, strlen(q), NULL, NULL), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(a.info_hash[i], i + 1);
    assert_memory_equal(a.peer_id, PEER_Q, 20);
    assert_int_equal(a.port, 6881);
    assert_int_equal(a.uploaded, 1);
    assert_int_equal(a.downloaded, 2);
    assert_int_equal(a.left, 0);
    assert_true(a.has_left);
    assert_int_equal(a.event, TRACKER_EVENT_COMPLETED);
    assert_false(a.compact);
    assert_true(a.no_peer_id);
    assert_int_equal(a.numwant, 500);
    assert_string_equal(a.ip, "1.2.3.4");
    assert_int_equal(a.key_len, 4);
    assert_memory_equal(a.key, "\0abc", 4);

    /* Defaults. */
    (void)snprintf(q, sizeof(q), "port=1&peer_id=%s&info_hash=%s", PEER_Q,
                   HASH_Q);
    assert_int_equal(trkserve_parse_announce(&a, q, strlen(q), NULL, NULL), 0);
    assert_true(a.compact);
    assert_false(a.has_left);
    assert_int_equal(a.numwant, -1);
    assert_int_equal(a.event, TRACKER_EVENT_NONE);
    assert_string_equal(a.ip, "");
    static const struct {
        const char *ev;
        enum tracker_event want;
    } evs[] = {{"started", TRACKER_EVENT_STARTED},
               {"stopped", TRACKER_EVENT_STOPPED},
               {"completed", TRACKER_EVENT_COMPLETED},
               {"paused", TRACKER_EVENT_NONE},
               {"", TRACKER_EVENT_NONE}};
    for (size_t i = 0; i < ARRAY_SIZE(evs); i++) {
        (void)snprintf(q, sizeof(q),
                       "info_hash=%s&peer_id=%s&port=1&event=%s&numwant=-5",
                       HASH_Q, PEER_Q, evs[i].ev);
        assert_int_equal(trkserve_parse_announce(&a, q, strlen(q), NULL,
                                                 NULL),
                         0);
        assert_int_equal(a.event, evs[i].want);
        assert_int_equal(a.numwant, -1);
    }

    /* What the client codec of common/tracker sends, parsed back. */
    struct tracker_announce_req req;
    memset(&req, 0, sizeof(req));
    for (int i = 0; i < 20; i++) {
        req.info_hash[i] = (uint8_t)(255 - i * 7);
        req.peer_id[i] = (uint8_t)(i * 13);
    }
    req.port = 51413;
    req.uploaded = 1ull << 40;
    req.downloaded = 7;
    req.left = 99;
    req.event = TRACKER_EVENT_STARTED;
    req.numwant = 80;
    req.key = 0xdeadbeef;
    struct buf url;
    buf_init(&url, 4096);
    assert_int_equal(tracker_http_announce_url(&url, "http://t:1/announce",
                                               &req),
                     0);
    const char *qs = strchr(url.data, '?') + 1;
    assert_int_equal(trkserve_parse_announce(&a, qs, strlen(qs), NULL, NULL),
                     0);
    assert_memory_equal(a.info_hash, req.info_hash, 20);
    assert_memory_equal(a.peer_id, req.peer_id, 20);
    assert_int_equal(a.port, 51413);
    assert_int_equal(a.uploaded, 1ull << 40);
    assert_int_equal(a.left, 99);
    assert_int_equal(a.event, TRACKER_EVENT_STARTED);
    assert_int_equal(a.numwant, 80);
    assert_true(a.compact);
    buf_release(&url);
}

#define H "info_hash=%01%02%03%04%05%06%07%08%09%0a%0b%0c%0d%0e%0f%10%11%12%13%14"
#define P "peer_id=-TD0100-abcdefghijkl"
#define HP H "&" P

static const struct {
    const char *q;
    int err;
    size_t off; /* SIZE_MAX: the query's length */
} announce_errors[] = {
    {"", TRKSERVE_E_MISSING, SIZE_MAX},
    {P "&port=1", TRKSERVE_E_MISSING, SIZE_MAX},
    {H "&port=1", TRKSERVE_E_MISSING, SIZE_MAX},
    {HP, TRKSERVE_E_MISSING, SIZE_MAX},
    {"info_hash=%0", TRKSERVE_E_ESCAPE, 10},
    {"a=1&info_hash=ab%g1", TRKSERVE_E_ESCAPE, 16},
    {"info_hash=abc", TRKSERVE_E_HASH, 10},
    {"info_hash=123456789012345678901", TRKSERVE_E_HASH, 10},
    {"info_hash", TRKSERVE_E_HASH, 9},
    {H "&peer_id=abc", TRKSERVE_E_PEER_ID, 79},
    {HP "&" H, TRKSERVE_E_DUPLICATE, 100},
    {HP "&port=1&port=2", TRKSERVE_E_DUPLICATE, 107},
    {HP "&port=0", TRKSERVE_E_PORT, 105},
    {HP "&port=65536", TRKSERVE_E_PORT, 105},
    {HP "&port=", TRKSERVE_E_PORT, 105},
    {HP "&port=-1", TRKSERVE_E_PORT, 105},
    {HP "&port=1&left=-1", TRKSERVE_E_NUMBER, 112},
    {HP "&port=1&left=12x", TRKSERVE_E_NUMBER, 114},
    {HP "&port=1&uploaded=18446744073709551616", TRKSERVE_E_NUMBER, 116},
    {HP "&port=1&downloaded=", TRKSERVE_E_NUMBER, 118},
    {HP "&port=1&numwant=--1", TRKSERVE_E_NUMBER, 116},
    {HP "&port=1&numwant=1%30", TRKSERVE_E_NUMBER, 116},
    {HP "&port=1&event=start", TRKSERVE_E_EVENT, 113},
    {HP "&port=1&event=STARTED", TRKSERVE_E_EVENT, 113},
    {HP "&port=1&compact=2", TRKSERVE_E_VALUE, 115},
    {HP "&port=1&no_peer_id=", TRKSERVE_E_VALUE, 118},
    {HP "&port=1&ip=a%20b", TRKSERVE_E_VALUE, 110},
    {HP "&port=1&ip=%0a", TRKSERVE_E_VALUE, 110},
    {HP "&port=1&ip=%", TRKSERVE_E_ESCAPE, 110},
    {HP "&port=1&key=0123456789012345678901234567890123456789012345678901"
        "234567890123456789",
     TRKSERVE_E_VALUE, 111},
    {HP "&port=1&key=%x", TRKSERVE_E_ESCAPE, 111},
};

static void
test_announce_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(announce_errors); i++) {
        struct trkserve_announce a;
        size_t n = strlen(announce_errors[i].q);
        size_t off = 12345;
        int e = trkserve_parse_announce(&a, announce_errors[i].q, n, NULL,
                                        &off);
        if (e != announce_errors[i].err)
            fail_msg("case %zu '%s': %d, want %d", i, announce_errors[i].q, e,
                     announce_errors[i].err);
        size_t want =
            announce_errors[i].off == SIZE_MAX ? n : announce_errors[i].off;
        if (off != want)
            fail_msg("case %zu '%s': offset %zu, want %zu", i,
                     announce_errors[i].q, off, want);
    }
    /* Too many parameters. */
    struct trkserve_limits lim = trkserve_limits_default;
    lim.max_params = 3;
    struct trkserve_announce a;
    size_t off = 0;
    static const char q[] = "a=1&b=2&c=3&d=4";
    assert_int_equal(trkserve_parse_announce(&a, S(q), &lim, &off),
                     TRKSERVE_E_TOO_MANY);
    assert_int_equal(off, 12);
}

static void
test_scrape_parse(void **state)
{
    (void)state;
    uint8_t h[4][20];
    size_t n = 99, off = 0;
    static const char q[] = H "&x=%zz&" H "&info_hash=aaaaaaaaaaaaaaaaaaaa";
    assert_int_equal(trkserve_parse_scrape(h, 4, &n, S(q), NULL, &off), 0);
    assert_int_equal(n, 3);
    assert_int_equal(h[0][0], 1);
    assert_int_equal(h[1][19], 20);
    assert_memory_equal(h[2], "aaaaaaaaaaaaaaaaaaaa", 20);
    assert_int_equal(trkserve_parse_scrape(h, 4, &n, "", 0, NULL, &off), 0);
    assert_int_equal(n, 0);

    assert_int_equal(trkserve_parse_scrape(h, 2, &n, S(q), NULL, &off),
                     TRKSERVE_E_TOO_MANY);
    assert_int_equal(off, 148);
    struct trkserve_limits lim = trkserve_limits_default;
    lim.max_scrape = 1;
    assert_int_equal(trkserve_parse_scrape(h, 4, &n, S(q), &lim, &off),
                     TRKSERVE_E_TOO_MANY);
    assert_int_equal(off, 77);
    lim = trkserve_limits_default;
    lim.max_params = 1;
    assert_int_equal(trkserve_parse_scrape(h, 4, &n, S(q), &lim, &off),
                     TRKSERVE_E_TOO_MANY);
    assert_int_equal(off, 71);
    assert_int_equal(trkserve_parse_scrape(h, 4, &n, S("info_hash=abc"), NULL,
                                           &off),
                     TRKSERVE_E_HASH);
    assert_int_equal(off, 10);
    assert_int_equal(trkserve_parse_scrape(h, 4, &n, S("info_hash=%1"), NULL,
                                           &off),
                     TRKSERVE_E_ESCAPE);
    assert_int_equal(off, 10);

    /* The client's scrape URL, parsed back. */
    static const uint8_t hs[2][20] = {{1, 2, 3}, {0xff, 0x25, 0x26}};
    struct buf url;
    buf_init(&url, 4096);
    assert_int_equal(tracker_http_scrape_url(&url, "http://t/announce", hs, 2),
                     0);
    const char *qs = strchr(url.data, '?') + 1;
    assert_int_equal(trkserve_parse_scrape(h, 4, &n, qs, strlen(qs), NULL,
                                           &off),
                     0);
    assert_int_equal(n, 2);
    assert_memory_equal(h, hs, 40);
    buf_release(&url);
}

/* --- answers ----------------------------------------------------------- */

static void
make_peers(struct tracker_peer *p)
{
    memset(p, 0, 3 * sizeof(*p));
    p[0].family = AF_INET;
    p[0].port = 6881;
    memcpy(p[0].addr, "\x7f\x00\x00\x02", 4);
    p[0].has_id = true;
    memcpy(p[0].id, "AAAAAAAAAAAAAAAAAAAA", 20);
    p[1].family = AF_INET6;
    p[1].port = 1;
    p[1].addr[15] = 1;
    p[1].has_id = true;
    memcpy(p[1].id, "BBBBBBBBBBBBBBBBBBBB", 20);
    p[2].family = AF_INET;
    p[2].port = 65535;
    memcpy(p[2].addr, "\x0a\x00\x00\x01", 4);
}

static void
test_announce_body(void **state)
{
    (void)state;
    struct tracker_peer p[3];
    make_peers(p);
    struct trkserve_announce_resp r = {
        .interval = 1800,
        .min_interval = 900,
        .complete = 2,
        .incomplete = 3,
        .downloaded = 4,
        .peers = p,
        .n_peers = 3,
        .compact = true,
    };
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(trkserve_announce_body(&b, &r), 0);
    static const char want[] =
        "d8:completei2e10:downloadedi4e10:incompletei3e8:intervali1800e"
        "12:min intervali900e5:peers12:\x7f\x00\x00\x02\x1a\xe1"
        "\x0a\x00\x00\x01\xff\xff"
        "6:peers618:\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x00\x01"
        "e";
    assert_int_equal(b.len, sizeof(want) - 1);
    assert_memory_equal(b.data, want, b.len);

    struct tracker_announce_resp a;
    assert_int_equal(tracker_parse_announce(&a, b.data, b.len, NULL, NULL), 0);
    assert_int_equal(a.interval, 1800);
    assert_int_equal(a.min_interval, 900);
    assert_int_equal(a.complete, 2);
    assert_int_equal(a.incomplete, 3);
    assert_int_equal(a.n_peers, 3);
    tracker_announce_resp_release(&a);

    /* The dictionary model, with and without peer ids. */
    buf_reset(&b);
    r.compact = false;
    assert_int_equal(trkserve_announce_body(&b, &r), 0);
    assert_non_null(strstr(b.data, "2:ip9:127.0.0.27:peer id20:AAAA"));
    assert_non_null(strstr(b.data, "2:ip3:::17:peer id20:BBBB"));
    assert_non_null(strstr(b.data, "2:ip8:10.0.0.14:porti65535ee"));
    assert_int_equal(tracker_parse_announce(&a, b.data, b.len, NULL, NULL), 0);
    assert_int_equal(a.n_peers, 3);
    assert_true(a.peers[0].has_id);
    assert_memory_equal(a.peers[0].id, "AAAAAAAAAAAAAAAAAAAA", 20);
    assert_int_equal(a.peers[2].port, 65535);
    tracker_announce_resp_release(&a);
    buf_reset(&b);
    r.no_peer_id = true;
    assert_int_equal(trkserve_announce_body(&b, &r), 0);
    assert_null(strstr(b.data, "peer id"));

    /* No peers at all. */
    buf_reset(&b);
    r.n_peers = 0;
    r.compact = true;
    assert_int_equal(trkserve_announce_body(&b, &r), 0);
    assert_non_null(strstr(b.data, "5:peers0:6:peers60:e"));

    /* A cap that is too small leaves the buffer as it was. */
    struct buf small;
    buf_init(&small, 30);
    assert_int_equal(buf_puts(&small, "xy"), 0);
    r.n_peers = 3;
    assert_int_equal(trkserve_announce_body(&small, &r), -EMSGSIZE);
    assert_int_equal(small.len, 2);
    assert_int_equal(trkserve_failure_body(&small, "a very long reason that "
                                                   "does not fit"),
                     -EMSGSIZE);
    assert_int_equal(small.len, 2);
    buf_release(&small);

    buf_reset(&b);
    assert_int_equal(trkserve_failure_body(&b, "info_hash not allowed"), 0);
    assert_string_equal(b.data, "d14:failure reason21:info_hash not allowede");
    assert_int_equal(tracker_parse_announce(&a, b.data, b.len, NULL, NULL), 0);
    assert_string_equal(a.failure, "info_hash not allowed");
    tracker_announce_resp_release(&a);
    buf_release(&b);
}

static void
test_scrape_body(void **state)
{
    (void)state;
    struct trkserve_scrape_file f[3];
    memset(f, 0, sizeof(f));
    memset(f[0].info_hash, 'b', 20);
    f[0].complete = 1;
    f[0].downloaded = 2;
    f[0].incomplete = 3;
    memset(f[1].info_hash, 'a', 20);
    f[1].complete = 4;
    f[2] = f[0];
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(trkserve_scrape_body(&b, f, 3), 0);
    static const char want[] =
        "d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei4e10:downloadedi0e"
        "10:incompletei0ee20:bbbbbbbbbbbbbbbbbbbbd8:completei1e"
        "10:downloadedi2e10:incompletei3eeee";
    assert_string_equal(b.data, want);
    struct tracker_scrape_resp s;
    assert_int_equal(tracker_parse_scrape(&s, b.data, b.len, NULL, NULL), 0);
    assert_int_equal(s.n_files, 2);
    tracker_scrape_resp_release(&s);
    buf_reset(&b);
    assert_int_equal(trkserve_scrape_body(&b, f, 0), 0);
    assert_string_equal(b.data, "d5:filesdee");
    buf_release(&b);
}

static void
test_http_response(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(trkserve_http_response(&b, 200, "d1:ai1ee", 8, false), 0);
    assert_string_equal(b.data, "HTTP/1.1 200 OK\r\n"
                                "Content-Type: text/plain\r\n"
                                "Content-Length: 8\r\n"
                                "Connection: close\r\n\r\nd1:ai1ee");
    buf_reset(&b);
    assert_int_equal(trkserve_http_response(&b, 404, NULL, 0, true), 0);
    assert_string_equal(b.data, "HTTP/1.1 404 Not Found\r\n"
                                "Content-Type: text/plain\r\n"
                                "Content-Length: 0\r\n\r\n");
    buf_reset(&b);
    assert_int_equal(trkserve_http_response(&b, 400, "x", 1, false), 0);
    assert_non_null(strstr(b.data, "400 Bad Request"));
    buf_release(&b);
}

/* --- UDP --------------------------------------------------------------- */

#define TID 0x11223344u

static void
test_udp_parse(void **state)
{
    (void)state;
    struct trkserve_udp_req q;
    uint8_t pkt[1600];
    size_t off = 0;

    /* connect */
    size_t n = tracker_udp_connect_req(pkt, TID);
    assert_int_equal(trkserve_udp_parse(&q, pkt, n, &off), 0);
    assert_int_equal(q.action, TRACKER_UDP_CONNECT);
    assert_int_equal(q.transaction_id, TID);
    pkt[7] ^= 1;
    assert_int_equal(trkserve_udp_parse(&q, pkt, n, &off),
                     TRKSERVE_E_PROTOCOL);
    assert_int_equal(off, 0);
    for (size_t k = 0; k < 16; k++) {
        assert_int_equal(trkserve_udp_parse(&q, pkt, k, &off),
                         TRKSERVE_E_TRUNCATED);
        assert_int_equal(off, k);
    }

    /* announce */
    struct tracker_announce_req req;
    memset(&req, 0, sizeof(req));
    memset(req.info_hash, 0xab, 20);
    memset(req.peer_id, 'p', 20);
    req.port = 6881;
    req.uploaded = 5;
    req.downloaded = 6;
    req.left = 7;
    req.event = TRACKER_EVENT_STOPPED;
    req.numwant = -1;
    req.key = 0x01020304;
    n = tracker_udp_announce_req(pkt, 0x0102030405060708ull, TID, &req);
    assert_int_equal(n, 98);
    assert_int_equal(trkserve_udp_parse(&q, pkt, n, &off), 0);
    assert_int_equal(q.action, TRACKER_UDP_ANNOUNCE);
    assert_int_equal(q.connection_id, 0x0102030405060708ull);
    assert_memory_equal(q.announce.info_hash, req.info_hash, 20);
    assert_memory_equal(q.announce.peer_id, req.peer_id, 20);
    assert_int_equal(q.announce.port, 6881);
    assert_int_equal(q.announce.uploaded, 5);
    assert_int_equal(q.announce.downloaded, 6);
    assert_int_equal(q.announce.left, 7);
    assert_true(q.announce.has_left);
    assert_int_equal(q.announce.event, TRACKER_EVENT_STOPPED);
    assert_int_equal(q.announce.numwant, -1);
    assert_int_equal(q.announce.key_len, 4);
    assert_true(q.announce.compact);
    /* BEP 41 options after the fixed part are ignored. */
    memcpy(pkt + 98, "\x02\x05/annc", 7);
    assert_int_equal(trkserve_udp_parse(&q, pkt, 105, &off), 0);
    assert_int_equal(trkserve_udp_parse(&q, pkt, 97, &off),
                     TRKSERVE_E_TRUNCATED);
    assert_int_equal(off, 97);
    pkt[83] = 4;
    assert_int_equal(trkserve_udp_parse(&q, pkt, 98, &off), TRKSERVE_E_EVENT);
    assert_int_equal(off, 80);
    pkt[83] = 0;
    pkt[96] = pkt[97] = 0;
    assert_int_equal(trkserve_udp_parse(&q, pkt, 98, &off), TRKSERVE_E_PORT);
    assert_int_equal(off, 96);
    pkt[97] = 1;
    pkt[92] = 0;
    pkt[93] = pkt[94] = 0;
    pkt[95] = 30;
    assert_int_equal(trkserve_udp_parse(&q, pkt, 98, &off), 0);
    assert_int_equal(q.announce.numwant, 30);

    /* scrape */
    uint8_t hs[TRACKER_UDP_SCRAPE_MAX + 1][20];
    for (size_t i = 0; i < ARRAY_SIZE(hs); i++)
        memset(hs[i], (int)i, 20);
    n = tracker_udp_scrape_req(pkt, sizeof(pkt), 42, TID, hs, 3);
    assert_int_equal(trkserve_udp_parse(&q, pkt, n, &off), 0);
    assert_int_equal(q.action, TRACKER_UDP_SCRAPE);
    assert_int_equal(q.connection_id, 42);
    assert_int_equal(q.n_hashes, 3);
    assert_memory_equal(q.hashes, hs, 60);
    assert_int_equal(trkserve_udp_parse(&q, pkt, n - 1, &off),
                     TRKSERVE_E_TRUNCATED);
    assert_int_equal(off, n - 1);
    assert_int_equal(trkserve_udp_parse(&q, pkt, 16, &off),
                     TRKSERVE_E_TRUNCATED);
    assert_int_equal(off, 16);
    n = tracker_udp_scrape_req(pkt, sizeof(pkt), 42, TID, hs,
                               TRACKER_UDP_SCRAPE_MAX);
    assert_int_equal(trkserve_udp_parse(&q, pkt, n, &off), 0);
    assert_int_equal(q.n_hashes, TRACKER_UDP_SCRAPE_MAX);
    memcpy(pkt + n, hs[TRACKER_UDP_SCRAPE_MAX], 20);
    assert_int_equal(trkserve_udp_parse(&q, pkt, n + 20, &off),
                     TRKSERVE_E_TOO_MANY);
    assert_int_equal(off, n);

    /* Unknown actions, an error packet from a client. */
    for (uint32_t act = 3; act < 6; act++) {
        pkt[8] = pkt[9] = pkt[10] = 0;
        pkt[11] = (uint8_t)act;
        assert_int_equal(trkserve_udp_parse(&q, pkt, 98, &off),
                         TRKSERVE_E_ACTION);
        assert_int_equal(off, 8);
    }
}

static void
test_udp_responses(void **state)
{
    (void)state;
    uint8_t out[2048];
    struct tracker_udp_resp u;
    size_t n = trkserve_udp_connect_resp(out, sizeof(out), TID, 0x55ull);
    assert_int_equal(n, 16);
    assert_memory_equal(out, "\0\0\0\0\x11\x22\x33\x44\0\0\0\0\0\0\0\x55", 16);
    assert_int_equal(tracker_udp_parse(&u, out, n, TRACKER_UDP_CONNECT, TID,
                                       AF_INET, NULL, 0, NULL, NULL),
                     0);
    assert_int_equal(u.connection_id, 0x55);
    tracker_udp_resp_release(&u);
    assert_int_equal(trkserve_udp_connect_resp(out, 15, TID, 1), 0);

    struct tracker_peer p[3];
    make_peers(p);
    n = trkserve_udp_announce_resp(out, sizeof(out), TID, 1800, 3, 2, p, 3,
                                   AF_INET);
    assert_int_equal(n, 20 + 12);
    assert_memory_equal(out,
                        "\0\0\0\x01\x11\x22\x33\x44\0\0\x07\x08\0\0\0\x03"
                        "\0\0\0\x02\x7f\0\0\x02\x1a\xe1\x0a\0\0\x01\xff\xff",
                        32);
    assert_int_equal(tracker_udp_parse(&u, out, n, TRACKER_UDP_ANNOUNCE, TID,
                                       AF_INET, NULL, 0, NULL, NULL),
                     0);
    assert_int_equal(u.announce.interval, 1800);
    assert_int_equal(u.announce.incomplete, 3);
    assert_int_equal(u.announce.complete, 2);
    assert_int_equal(u.announce.n_peers, 2);
    tracker_udp_resp_release(&u);
    n = trkserve_udp_announce_resp(out, sizeof(out), TID, 1, 0, 0, p, 3,
                                   AF_INET6);
    assert_int_equal(n, 20 + 18);
    assert_int_equal(tracker_udp_parse(&u, out, n, TRACKER_UDP_ANNOUNCE, TID,
                                       AF_INET6, NULL, 0, NULL, NULL),
                     0);
    assert_int_equal(u.announce.n_peers, 1);
    assert_int_equal(u.announce.peers[0].port, 1);
    tracker_udp_resp_release(&u);
    /* As many peers as fit. */
    assert_int_equal(trkserve_udp_announce_resp(out, 27, TID, 1, 0, 0, p, 3,
                                                AF_INET),
                     26);
    assert_int_equal(trkserve_udp_announce_resp(out, 19, TID, 1, 0, 0, p, 3,
                                                AF_INET),
                     0);

    struct trkserve_scrape_file f[2];
    memset(f, 0, sizeof(f));
    f[0].complete = 1;
    f[0].downloaded = 2;
    f[0].incomplete = 3;
    f[1].complete = 1ull << 40; /* clamped */
    n = trkserve_udp_scrape_resp(out, sizeof(out), TID, f, 2);
    assert_int_equal(n, 8 + 24);
    assert_memory_equal(out + 8, "\0\0\0\x01\0\0\0\x02\0\0\0\x03\xff\xff\xff"
                                 "\xff",
                        16);
    static const uint8_t hs[2][20] = {{1}, {2}};
    assert_int_equal(tracker_udp_parse(&u, out, n, TRACKER_UDP_SCRAPE, TID,
                                       AF_INET, hs, 2, NULL, NULL),
                     0);
    assert_int_equal(u.scrape.n_files, 2);
    assert_int_equal(u.scrape.files[0].incomplete, 3);
    tracker_udp_resp_release(&u);
    assert_int_equal(trkserve_udp_scrape_resp(out, 31, TID, f, 2), 0);

    n = trkserve_udp_error(out, sizeof(out), TID, "info_hash not allowed");
    assert_int_equal(n, 8 + 21);
    assert_int_equal(tracker_udp_parse(&u, out, n, TRACKER_UDP_ANNOUNCE, TID,
                                       AF_INET, NULL, 0, NULL, NULL),
                     0);
    assert_int_equal(u.action, TRACKER_UDP_ERROR);
    assert_string_equal(u.announce.failure, "info_hash not allowed");
    tracker_udp_resp_release(&u);
    char longmsg[400];
    memset(longmsg, 'x', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    assert_int_equal(trkserve_udp_error(out, sizeof(out), TID, longmsg),
                     8 + TRKSERVE_UDP_ERROR_MAX);
    assert_int_equal(trkserve_udp_error(out, 8, TID, "x"), 0);
}

static void
test_conn_id(void **state)
{
    (void)state;
    uint8_t secret[TRKSERVE_SECRET_LEN], other[TRKSERVE_SECRET_LEN];
    for (size_t i = 0; i < sizeof(secret); i++) {
        secret[i] = (uint8_t)i;
        other[i] = (uint8_t)(i + 1);
    }
    struct trkserve_addr a = {.family = AF_INET, .addr = {127, 0, 0, 2}};
    struct trkserve_addr b = {.family = AF_INET, .addr = {127, 0, 0, 3}};
    struct trkserve_addr a6 = {.family = AF_INET6, .addr = {127, 0, 0, 2}};
    const uint64_t B = TRKSERVE_CONN_BUCKET_S;
    for (uint64_t bucket = 0; bucket < 50; bucket++) {
        uint64_t id = trkserve_conn_id(secret, &a, bucket);
        assert_int_equal(id, trkserve_conn_id(secret, &a, bucket));
        assert_int_not_equal(id, trkserve_conn_id(secret, &b, bucket));
        assert_int_not_equal(id, trkserve_conn_id(secret, &a6, bucket));
        assert_int_not_equal(id, trkserve_conn_id(other, &a, bucket));
        assert_int_not_equal(id, trkserve_conn_id(secret, &a, bucket + 1));
        /* Valid during its bucket and the next one, not before or after. */
        for (uint64_t s = bucket * B; s < (bucket + 2) * B; s += 7)
            assert_true(trkserve_conn_id_valid(secret, &a, s, id));
        assert_true(trkserve_conn_id_valid(secret, &a, (bucket + 2) * B - 1,
                                           id));
        assert_false(trkserve_conn_id_valid(secret, &a, (bucket + 2) * B, id));
        if (bucket > 0)
            assert_false(trkserve_conn_id_valid(secret, &a, bucket * B - 1,
                                                id));
        assert_false(trkserve_conn_id_valid(secret, &b, bucket * B, id));
        assert_false(trkserve_conn_id_valid(other, &a, bucket * B, id));
        assert_false(trkserve_conn_id_valid(secret, &a, bucket * B, id ^ 1));
    }
    assert_false(trkserve_conn_id_valid(secret, &a, 0, 0));
}

/* --- the allowlist ----------------------------------------------------- */

static void
test_allowlist(void **state)
{
    (void)state;
    uint8_t h[4][20];
    size_t n = 0;
    unsigned line = 0;
    static const char ok[] =
        "# allowed\n"
        "\n"
        "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\r\n"
        "  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa # one\n"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\t\n"
        "0123456789abcdef0123456789abcdef01234567";
    assert_int_equal(trkserve_allowlist_parse(h, 4, &n, S(ok), &line), 0);
    assert_int_equal(n, 3);
    uint8_t x[20];
    memset(x, 0xaa, 20);
    assert_memory_equal(h[1], x, 20);
    assert_true(trkserve_allowlist_has((const uint8_t(*)[20])h, n, x));
    memset(x, 0xbb, 20);
    assert_memory_equal(h[2], x, 20);
    assert_true(trkserve_allowlist_has((const uint8_t(*)[20])h, n, x));
    assert_int_equal(h[0][0], 0x01);
    memset(x, 0xcc, 20);
    assert_false(trkserve_allowlist_has((const uint8_t(*)[20])h, n, x));
    assert_false(trkserve_allowlist_has((const uint8_t(*)[20])h, 0, x));
    assert_int_equal(trkserve_allowlist_parse(h, 4, &n, "", 0, &line), 0);
    assert_int_equal(n, 0);

    static const struct {
        const char *text;
        unsigned line;
    } bad[] = {
        {"abc\n", 1},
        {"\n\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 3},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaag\n", 1},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa#x\n", 1},
        {"aaaaaaaaaaaaaaaaaaaa aaaaaaaaaaaaaaaaaaaa\n", 1},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        line = 0;
        assert_int_equal(trkserve_allowlist_parse(h, 4, &n, bad[i].text,
                                                  strlen(bad[i].text), &line),
                         -EINVAL);
        assert_int_equal(line, bad[i].line);
    }
    assert_int_equal(trkserve_allowlist_parse(h, 2, &n, S(ok), &line), -E2BIG);
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e > TRKSERVE_E_MIN; e--) {
        const char *m = trkserve_strerror(e);
        assert_non_null(m);
        assert_string_not_equal(m, "unknown error");
        for (int f = e + 1; f <= 0; f++)
            assert_string_not_equal(m, trkserve_strerror(f));
    }
    assert_string_equal(trkserve_strerror(TRKSERVE_E_MIN), "unknown error");
    assert_string_equal(trkserve_strerror(1), "unknown error");
    assert_string_equal(trkserve_strerror(-1000), "unknown error");
}

/* --- truncation and bit flips ------------------------------------------ */

static int
run_all(const uint8_t *p, size_t n)
{
    struct trkserve_http_req r;
    struct trkserve_announce a;
    struct trkserve_udp_req u;
    uint8_t h[8][20];
    size_t off, k;
    int ok = 0;

    off = SIZE_MAX;
    int e = trkserve_http_parse(&r, p, n, NULL, &off);
    if (e == 0) {
        ok++;
        assert_true(r.head_len <= n && r.query_off + r.query_len <= n);
        assert_true(r.kind == TRKSERVE_ANNOUNCE || r.kind == TRKSERVE_SCRAPE);
        off = SIZE_MAX;
        e = trkserve_parse_announce(&a, r.query, r.query_len, NULL, &off);
        assert_true(e == 0 || (e < 0 && e > TRKSERVE_E_MIN &&
                               off <= r.query_len));
        off = SIZE_MAX;
        e = trkserve_parse_scrape(h, 8, &k, r.query, r.query_len, NULL, &off);
        assert_true(e == 0 || (e < 0 && e > TRKSERVE_E_MIN &&
                               off <= r.query_len));
        if (e == 0)
            assert_true(k <= 8);
    } else {
        assert_true(e < 0 && e > TRKSERVE_E_MIN);
        assert_true(off <= n);
    }
    off = SIZE_MAX;
    e = trkserve_udp_parse(&u, p, n, &off);
    if (e == 0) {
        ok++;
        assert_true(u.n_hashes <= TRACKER_UDP_SCRAPE_MAX);
    } else {
        assert_true(e < 0 && e > TRKSERVE_E_MIN && off <= n);
    }
    return ok;
}

static uint8_t udp_samples[3][1600];
static size_t udp_lens[3];

static const char http_sample[] =
    "GET /announce?info_hash=%01%02%03%04%05%06%07%08%09%0a%0b%0c%0d%0e%0f"
    "%10%11%12%13%14&peer_id=-TD0100-abcdefghijkl&port=6881&left=0&"
    "event=started&numwant=5&key=ab HTTP/1.1\r\nHost: x\r\n"
    "Connection: close\r\n\r\n";
static const char http_scrape_sample[] =
    "GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=%61%61%61%61%61"
    "aaaaaaaaaaaaaaa HTTP/1.0\r\n\r\n";

static void
make_udp_samples(void)
{
    struct tracker_announce_req req;
    static const uint8_t hs[2][20] = {{1}, {2}};
    memset(&req, 0, sizeof(req));
    req.port = 1;
    udp_lens[0] = tracker_udp_connect_req(udp_samples[0], TID);
    udp_lens[1] = tracker_udp_announce_req(udp_samples[1], 7, TID, &req);
    udp_lens[2] = tracker_udp_scrape_req(udp_samples[2], 1600, 7, TID, hs, 2);
}

static void
test_truncated(void **state)
{
    (void)state;
    make_udp_samples();
    const void *p[5] = {http_sample, http_scrape_sample, udp_samples[0],
                        udp_samples[1], udp_samples[2]};
    size_t len[5] = {sizeof(http_sample) - 1, sizeof(http_scrape_sample) - 1,
                     udp_lens[0], udp_lens[1], udp_lens[2]};
    for (size_t s = 0; s < 5; s++) {
        for (size_t n = 0; n <= len[s]; n++) {
            uint8_t *c = malloc(n ? n : 1);
            assert_non_null(c);
            memcpy(c, p[s], n);
            int ok = run_all(c, n);
            if (s < 2 && n < len[s]) {
                struct trkserve_http_req r;
                assert_int_equal(trkserve_http_parse(&r, c, n, NULL, NULL),
                                 TRKSERVE_E_TRUNCATED);
            }
            /* A shorter scrape with whole hashes is a valid scrape. */
            if (s >= 2 && n < len[s] &&
                !(s == 4 && n > 16 && (n - 16) % 20 == 0)) {
                struct trkserve_udp_req u;
                assert_int_equal(trkserve_udp_parse(&u, c, n, NULL),
                                 TRKSERVE_E_TRUNCATED);
            }
            if (n == len[s])
                assert_true(ok > 0);
            free(c);
        }
    }
}

static void
test_bit_flip(void **state)
{
    (void)state;
    make_udp_samples();
    const void *p[5] = {http_sample, http_scrape_sample, udp_samples[0],
                        udp_samples[1], udp_samples[2]};
    size_t len[5] = {sizeof(http_sample) - 1, sizeof(http_scrape_sample) - 1,
                     udp_lens[0], udp_lens[1], udp_lens[2]};
    for (size_t s = 0; s < 5; s++) {
        uint8_t *c = malloc(len[s]);
        assert_non_null(c);
        for (size_t bit = 0; bit < len[s] * 8; bit++) {
            memcpy(c, p[s], len[s]);
            c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            (void)run_all(c, len[s]);
        }
        free(c);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_all_bytes),
        cmocka_unit_test(test_http_parse_valid),
        cmocka_unit_test(test_http_parse_errors),
        cmocka_unit_test(test_announce_valid),
        cmocka_unit_test(test_announce_errors),
        cmocka_unit_test(test_scrape_parse),
        cmocka_unit_test(test_announce_body),
        cmocka_unit_test(test_scrape_body),
        cmocka_unit_test(test_http_response),
        cmocka_unit_test(test_udp_parse),
        cmocka_unit_test(test_udp_responses),
        cmocka_unit_test(test_conn_id),
        cmocka_unit_test(test_allowlist),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bit_flip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
