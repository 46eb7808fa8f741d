/* Unit tests for common/tracker: URL building (every byte value through
 * the percent-encoder), BEP 48 scrape URLs, the HTTP announce and scrape
 * parsers with every error value and its offset, the UDP codec (BEP 15)
 * byte for byte, truncation at every length and a deterministic bit-flip
 * loop (OpenSSH regress/unittests FUZZ style). */
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

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit) (lit), (sizeof(lit) - 1)

/* --- percent-encoding and URLs ----------------------------------------- */

static void
test_escape_all_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        struct buf b;
        uint8_t byte = (uint8_t)c;
        char want[4];
        bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                    c == '_' || c == '~';
        if (keep)
            (void)snprintf(want, sizeof(want), "%c", c);
        else
            (void)snprintf(want, sizeof(want), "%%%02X", c);
        buf_init(&b, 16);
        assert_int_equal(tracker_url_escape(&b, &byte, 1), 0);
        assert_string_equal(b.data, want);
        buf_release(&b);
    }
    /* All 256 at once, and back. */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(tracker_url_escape(&b, all, sizeof(all)), 0);
    size_t o = 0;
    for (size_t i = 0; i < b.len; o++) {
        int v;
        if (b.data[i] == '%') {
            v = hex_digit((unsigned char)b.data[i + 1]) << 4 |
                hex_digit((unsigned char)b.data[i + 2]);
            i += 3;
        } else {
            v = (unsigned char)b.data[i++];
        }
        assert_int_equal(v, all[o]);
    }
    assert_int_equal(o, 256);
    buf_release(&b);
}

static void
fill_req(struct tracker_announce_req *req)
{
    memset(req, 0, sizeof(*req));
    for (int i = 0; i < 20; i++) {
        req->info_hash[i] = (uint8_t)(i * 13);
        req->peer_id[i] = (uint8_t)("-TD0100-abcdefghijkl"[i]);
    }
    req->port = 6881;
    req->uploaded = 1;
    req->downloaded = 2;
    req->left = 18446744073709551615ull;
    req->event = TRACKER_EVENT_STARTED;
    req->numwant = 50;
    req->key = 0xdeadbeef;
}

#define IH "%00%0D%1A%274AN%5Bhu%82%8F%9C%A9%B6%C3%D0%DD%EA%F7"
#define QUERY "info_hash=" IH "&peer_id=-TD0100-abcdefghijkl&port=6881" \
    "&uploaded=1&downloaded=2&left=18446744073709551615&compact=1"

static void
test_announce_url(void **state)
{
    (void)state;
    struct tracker_announce_req req;
    static const struct {
        const char *base, *want;
    } cases[] = {
        {"http://t.example/announce",
         "http://t.example/announce?" QUERY
         "&event=started&numwant=50&key=DEADBEEF"},
        {"https://t.example:8443/a/announce.php?passkey=x%20y",
         "https://t.example:8443/a/announce.php?passkey=x%20y&" QUERY
         "&event=started&numwant=50&key=DEADBEEF"},
        {"http://t.example/announce?",
         "http://t.example/announce?" QUERY
         "&event=started&numwant=50&key=DEADBEEF"},
        {"http://t.example/announce?a=1&",
         "http://t.example/announce?a=1&" QUERY
         "&event=started&numwant=50&key=DEADBEEF"},
        {"HTTP://t.example/announce#frag",
         "HTTP://t.example/announce?" QUERY
         "&event=started&numwant=50&key=DEADBEEF"},
    };
    fill_req(&req);
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct buf b;
        buf_init(&b, 4096);
        assert_int_equal(tracker_http_announce_url(&b, cases[i].base, &req),
                         0);
        assert_string_equal(b.data, cases[i].want);
        buf_release(&b);
    }

    /* No event, no numwant, a binary tracker id, other events. */
    struct buf b;
    buf_init(&b, 4096);
    req.event = TRACKER_EVENT_NONE;
    req.numwant = -1;
    req.key = 1;
    req.tracker_id = (const uint8_t *)"a b\x01";
    req.tracker_id_len = 4;
    assert_int_equal(tracker_http_announce_url(&b, "http://h/announce",
                                               &req), 0);
    assert_string_equal(b.data, "http://h/announce?" QUERY
                                "&key=00000001&trackerid=a%20b%01");
    buf_reset(&b);
    req.tracker_id = NULL;
    req.event = TRACKER_EVENT_STOPPED;
    assert_int_equal(tracker_http_announce_url(&b, "http://h/a", &req), 0);
    assert_non_null(strstr(b.data, "&event=stopped&"));
    buf_reset(&b);
    req.event = TRACKER_EVENT_COMPLETED;
    assert_int_equal(tracker_http_announce_url(&b, "http://h/a", &req), 0);
    assert_non_null(strstr(b.data, "&event=completed&"));
    buf_release(&b);

    /* Not http(s). */
    static const char *const bad[] = {
        "udp://h:1/announce", "ftp://h/announce", "http://", "https:///x",
        "", "http:/h/announce",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        buf_init(&b, 4096);
        assert_int_equal(tracker_http_announce_url(&b, bad[i], &req),
                         -EINVAL);
        assert_int_equal(b.len, 0);
        buf_release(&b);
    }

    /* Over the cap: the buffer is left as it was. */
    buf_init(&b, 60);
    assert_int_equal(buf_puts(&b, "keep"), 0);
    assert_int_equal(tracker_http_announce_url(&b, "http://h/announce",
                                               &req), -EMSGSIZE);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    buf_release(&b);

    assert_string_equal(tracker_event_name(TRACKER_EVENT_NONE), "");
    assert_string_equal(tracker_event_name(TRACKER_EVENT_MAX), "");
}

static void
test_scrape_url(void **state)
{
    (void)state;
    /* BEP 48's table, and a few more. */
    static const struct {
        const char *announce, *scrape; /* NULL: none */
    } cases[] = {
        {"http://example.com/announce", "http://example.com/scrape"},
        {"http://example.com/x/announce", "http://example.com/x/scrape"},
        {"http://example.com/announce.php", "http://example.com/scrape.php"},
        {"http://example.com/a", NULL},
        {"http://example.com/announce?x2%0644",
         "http://example.com/scrape?x2%0644"},
        {"http://example.com/announce?x=2/4",
         "http://example.com/scrape?x=2/4"},
        {"http://example.com/x%064announce", NULL},
        {"http://example.com", NULL},
        {"http://example.com/", NULL},
        {"http://example.com/announce/", NULL},
        {"https://e.com:1/p/announce#f", "https://e.com:1/p/scrape"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct buf b;
        buf_init(&b, 4096);
        int r = tracker_http_scrape_url(&b, cases[i].announce, NULL, 0);
        if (!cases[i].scrape) {
            assert_int_equal(r, -ENOENT);
            assert_int_equal(b.len, 0);
        } else {
            assert_int_equal(r, 0);
            assert_string_equal(b.data, cases[i].scrape);
        }
        buf_release(&b);
    }

    uint8_t h[2][20];
    memset(h[0], 0xff, 20);
    memset(h[1], 'a', 20);
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(tracker_http_scrape_url(&b, "http://e/announce?k=1", h,
                                             2), 0);
    assert_string_equal(b.data,
                        "http://e/scrape?k=1&info_hash="
                        "%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF"
                        "%FF%FF%FF%FF&info_hash=aaaaaaaaaaaaaaaaaaaa");
    buf_reset(&b);
    assert_int_equal(tracker_http_scrape_url(&b, "http://e/announce", h, 1),
                     0);
    assert_true(strncmp(b.data, "http://e/scrape?info_hash=%FF", 29) == 0);
    buf_release(&b);
    buf_init(&b, 20);
    assert_int_equal(tracker_http_scrape_url(&b, "http://e/announce", h, 1),
                     -EMSGSIZE);
    assert_int_equal(b.len, 0);
    buf_release(&b);
    buf_init(&b, 100);
    assert_int_equal(tracker_http_scrape_url(&b, "udp://e:1/announce", h, 1),
                     -EINVAL);
    buf_release(&b);
}

/* --- HTTP announce ------------------------------------------------------ */

static const char ann_compact[] =
    "d8:completei5e10:downloadedi7e10:incompletei3e8:intervali1800e"
    "12:min intervali60e5:peers18:"
    "\x7f\x00\x00\x01\x1a\xe1"
    "\x0a\x00\x00\x02\x00\x50"
    "\x0a\x00\x00\x03\x00\x00"
    "6:peers618:"
    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
    "\x1f\x90"
    "10:tracker id3:abc15:warning message4:slowe";

static const char ann_dict[] =
    "d8:intervali900e5:peersl"
    "d2:ip9:127.0.0.27:peer id20:ABCDEFGHIJKLMNOPQRST4:porti6881ee"
    "d2:ip3:::14:porti80ee"
    "d2:ip11:example.com4:porti80ee"
    "d2:ip8:10.0.0.14:porti0ee"
    "ee";

static void
test_announce_valid(void **state)
{
    (void)state;
    struct tracker_announce_resp a;
    size_t off = 99;

    assert_int_equal(tracker_parse_announce(&a, S(ann_compact), NULL, &off),
                     0);
    assert_int_equal(off, 99);
    assert_null(a.failure);
    assert_string_equal(a.warning, "slow");
    assert_int_equal(a.tracker_id_len, 3);
    assert_memory_equal(a.tracker_id, "abc", 3);
    assert_int_equal(a.interval, 1800);
    assert_int_equal(a.min_interval, 60);
    assert_int_equal(a.complete, 5);
    assert_int_equal(a.incomplete, 3);
    assert_int_equal(a.downloaded, 7);
    assert_int_equal(a.n_peers, 3);
    assert_int_equal(a.n_skipped, 1);
    assert_int_equal(a.peers[0].family, AF_INET);
    assert_memory_equal(a.peers[0].addr, "\x7f\x00\x00\x01", 4);
    assert_int_equal(a.peers[0].port, 6881);
    assert_false(a.peers[0].has_id);
    assert_int_equal(a.peers[1].port, 80);
    assert_int_equal(a.peers[2].family, AF_INET6);
    assert_int_equal(a.peers[2].port, 8080);
    assert_int_equal(a.peers[2].addr[0], 0x20);
    assert_int_equal(a.peers[2].addr[15], 0x01);
    tracker_announce_resp_release(&a);
    assert_null(a.peers);
    tracker_announce_resp_release(&a);
    tracker_announce_resp_release(NULL);

    assert_int_equal(tracker_parse_announce(&a, S(ann_dict), NULL, NULL), 0);
    assert_int_equal(a.interval, 900);
    assert_int_equal(a.min_interval, -1);
    assert_int_equal(a.complete, -1);
    assert_int_equal(a.n_peers, 2);
    assert_int_equal(a.n_skipped, 2); /* a host name, port 0 */
    assert_true(a.peers[0].has_id);
    assert_memory_equal(a.peers[0].id, "ABCDEFGHIJKLMNOPQRST", 20);
    assert_int_equal(a.peers[0].port, 6881);
    assert_int_equal(a.peers[1].family, AF_INET6);
    assert_int_equal(a.peers[1].addr[15], 1);
    tracker_announce_resp_release(&a);

    /* Failure reason: nothing else is read (the bad interval too). */
    static const char fail_body[] =
        "d14:failure reason10:bad\x00pass\nx8:interval3:abce";
    assert_int_equal(tracker_parse_announce(&a, S(fail_body), NULL, NULL),
                     0);
    assert_string_equal(a.failure, "bad?pass?x");
    assert_int_equal(a.n_peers, 0);
    tracker_announce_resp_release(&a);

    /* Messages are cut at max_message; trailing bytes are ignored; no
     * peers at all is fine; unsorted keys are fine. */
    struct tracker_limits lim = tracker_limits_default;
    lim.max_message = 3;
    static const char warn[] = "d15:warning message6:abcdef8:intervali1ee\n";
    assert_int_equal(tracker_parse_announce(&a, S(warn), &lim, NULL), 0);
    assert_string_equal(a.warning, "abc");
    assert_int_equal(a.n_peers, 0);
    tracker_announce_resp_release(&a);
    /* Valid UTF-8 is kept, the rest becomes '?'; the cut does not split
     * a character. */
    static const struct {
        const char *in, *out;
        size_t max;
    } msgs[] = {
        {"caf\xc3\xa9", "caf\xc3\xa9", 100},
        {"caf\xc3\xa9", "caf", 4},
        {"caf\xc3\xa9", "caf\xc3\xa9", 5},
        {"\xe2\x82\xac\xf0\x9f\x98\x80", "\xe2\x82\xac\xf0\x9f\x98\x80",
         100},
        {"\xe9t\xe9", "?t?", 100},               /* Latin-1 */
        {"\xc0\xaf", "??", 100},                  /* overlong */
        {"\xed\xa0\x80", "???", 100},             /* a surrogate */
        {"\xf4\x90\x80\x80", "????", 100},        /* past U+10FFFF */
        {"\xe2\x82", "??", 100},                  /* cut short */
        {"a\x7f\x1b", "a??", 100},
        {"", "", 100},
    };
    for (size_t i = 0; i < ARRAY_SIZE(msgs); i++) {
        char body[64];
        int n = snprintf(body, sizeof(body), "d14:failure reason%zu:%se",
                         strlen(msgs[i].in), msgs[i].in);
        lim.max_message = msgs[i].max;
        assert_int_equal(tracker_parse_announce(&a, body, (size_t)n, &lim,
                                                NULL), 0);
        assert_string_equal(a.failure, msgs[i].out);
        tracker_announce_resp_release(&a);
    }
    static const char unsorted[] = "d8:intervali5e8:completei1ee";
    assert_int_equal(tracker_parse_announce(&a, S(unsorted), NULL, NULL), 0);
    assert_int_equal(a.complete, 1);
    tracker_announce_resp_release(&a);
    static const char empty_peers[] = "d5:peers0:6:peers60:e";
    assert_int_equal(tracker_parse_announce(&a, S(empty_peers), NULL, NULL),
                     0);
    assert_int_equal(a.n_peers, 0);
    tracker_announce_resp_release(&a);
}

struct err_case {
    const char *body;
    size_t len;
    int err;
    size_t off;
};

#define EC(lit, e, o) {(lit), sizeof(lit) - 1, (e), (o)}

static void
test_announce_errors(void **state)
{
    (void)state;
    static const struct err_case cases[] = {
        EC("", TRACKER_E_BENCODE, 0),
        EC("d8:interval", TRACKER_E_BENCODE, 11),
        EC("x", TRACKER_E_BENCODE, 0),
        EC("le", TRACKER_E_NOT_DICT, 0),
        EC("i5e", TRACKER_E_NOT_DICT, 0),
        EC("d8:interval3:abce", TRACKER_E_FIELD, 11),
        EC("d8:intervali-1ee", TRACKER_E_FIELD, 11),
        EC("d12:min intervallee", TRACKER_E_FIELD, 16),
        EC("d8:completei-5ee", TRACKER_E_FIELD, 11),
        EC("d10:incomplete1:xe", TRACKER_E_FIELD, 14),
        EC("d10:downloadeddee", TRACKER_E_FIELD, 14),
        EC("d14:failure reasoni1ee", TRACKER_E_FIELD, 18),
        EC("d15:warning messagelee", TRACKER_E_FIELD, 19),
        EC("d10:tracker idi1ee", TRACKER_E_FIELD, 14),
        EC("d5:peersi1ee", TRACKER_E_FIELD, 8),
        EC("d6:peers6lee", TRACKER_E_FIELD, 9),
        EC("d5:peers7:1234567e", TRACKER_E_PEERS, 8),
        EC("d6:peers66:123456e", TRACKER_E_PEERS, 9),
        EC("d5:peersli1eee", TRACKER_E_PEER, 9),
        EC("d5:peersld4:porti1eeee", TRACKER_E_PEER, 9),
        EC("d5:peersld2:ip1:1eee", TRACKER_E_PEER, 9),
        EC("d5:peersld2:ipi1e4:porti1eeee", TRACKER_E_PEER, 9),
        EC("d5:peersld2:ip1:14:port1:1eee", TRACKER_E_PEER, 9),
        EC("d5:peersld2:ip1:14:porti70000eeee", TRACKER_E_PEER, 23),
        EC("d5:peersld2:ip1:14:porti-1eeee", TRACKER_E_PEER, 23),
        EC("d5:peersld2:ip1:17:peer id2:ab4:porti1eeee", TRACKER_E_PEER,
           26),
        EC("d5:peersld2:ip1:17:peer idi1e4:porti1eeee", TRACKER_E_PEER, 26),
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct tracker_announce_resp a;
        memset(&a, 0x5a, sizeof(a));
        size_t off = 12345;
        int r = tracker_parse_announce(&a, cases[i].body, cases[i].len, NULL,
                                       &off);
        if (r != cases[i].err || off != cases[i].off)
            fail_msg("case %zu '%s': got %d (%s) at %zu, want %d at %zu", i,
                     cases[i].body, r, tracker_strerror(r), off,
                     cases[i].err, cases[i].off);
        /* ret untouched on failure */
        assert_int_equal(a.n_peers, (size_t)0x5a5a5a5a5a5a5a5aull);
    }

    /* A tracker id over the limit. */
    char big[400];
    int n = snprintf(big, sizeof(big), "d10:tracker id%d:",
                     TRACKER_TRACKER_ID_MAX + 1);
    memset(big + n, 'x', TRACKER_TRACKER_ID_MAX + 1);
    n += TRACKER_TRACKER_ID_MAX + 1;
    big[n++] = 'e';
    struct tracker_announce_resp a;
    size_t off = 0;
    assert_int_equal(tracker_parse_announce(&a, big, (size_t)n, NULL, &off),
                     TRACKER_E_FIELD);
    assert_int_equal(off, 14);

    /* Limits. */
    struct tracker_limits lim = tracker_limits_default;
    lim.max_peers = 2;
    assert_int_equal(tracker_parse_announce(&a, S(ann_compact), &lim, &off),
                     TRACKER_E_TOO_MANY);
    /* The third compact peer: after "5:peers18:" */
    const char *p = strstr(ann_compact, "5:peers18:");
    assert_int_equal(off, (size_t)(p - ann_compact) + 10 + 12);
    /* Two IPv4 and one IPv6 peer, two allowed: the IPv6 one is over. */
    static const char two_one[] =
        "d5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe1"
        "6:peers618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00"
        "\x00\x00\x00\x00\x01\x1f\x90"
        "e";
    assert_int_equal(tracker_parse_announce(&a, S(two_one), &lim, &off),
                     TRACKER_E_TOO_MANY);
    assert_int_equal(off, 11 + 12 + 11);
    lim.max_peers = 1;
    assert_int_equal(tracker_parse_announce(&a, S(ann_dict), &lim, &off),
                     TRACKER_E_TOO_MANY);
    p = strstr(ann_dict, "d2:ip3:::1");
    assert_int_equal(off, (size_t)(p - ann_dict));
    lim = tracker_limits_default;
    lim.max_size = 10;
    assert_int_equal(tracker_parse_announce(&a, S(ann_compact), &lim, &off),
                     TRACKER_E_TOO_LARGE);
    assert_int_equal(off, 10);
    /* Too many bencode nodes for the peers allowed. */
    lim = tracker_limits_default;
    lim.max_peers = 0;
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(buf_puts(&b, "d1:xl"), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_puts(&b, "i1e"), 0);
    assert_int_equal(buf_puts(&b, "ee"), 0);
    assert_int_equal(tracker_parse_announce(&a, b.data, b.len, &lim, &off),
                     TRACKER_E_TOO_LARGE);
    buf_release(&b);
}

/* --- HTTP scrape -------------------------------------------------------- */

static const char scrape_body[] =
    "d5:filesd20:AAAAAAAAAAAAAAAAAAAA"
    "d8:completei5e10:downloadedi50e10:incompletei10ee"
    "20:BBBBBBBBBBBBBBBBBBBBdee"
    "5:flagsd20:min_request_intervali60eee";

static void
test_scrape(void **state)
{
    (void)state;
    struct tracker_scrape_resp s;
    assert_int_equal(tracker_parse_scrape(&s, S(scrape_body), NULL, NULL),
                     0);
    assert_null(s.failure);
    assert_int_equal(s.n_files, 2);
    assert_memory_equal(s.files[0].info_hash, "AAAAAAAAAAAAAAAAAAAA", 20);
    assert_int_equal(s.files[0].complete, 5);
    assert_int_equal(s.files[0].downloaded, 50);
    assert_int_equal(s.files[0].incomplete, 10);
    assert_int_equal(s.files[1].complete, -1);
    assert_int_equal(s.files[1].downloaded, -1);
    assert_int_equal(s.files[1].incomplete, -1);
    tracker_scrape_resp_release(&s);
    tracker_scrape_resp_release(&s);
    tracker_scrape_resp_release(NULL);

    assert_int_equal(tracker_parse_scrape(&s, S("de"), NULL, NULL), 0);
    assert_int_equal(s.n_files, 0);
    tracker_scrape_resp_release(&s);
    assert_int_equal(tracker_parse_scrape(&s, S("d5:filesdee"), NULL, NULL),
                     0);
    assert_int_equal(s.n_files, 0);
    tracker_scrape_resp_release(&s);
    assert_int_equal(tracker_parse_scrape(&s, S("d14:failure reason2:noe"),
                                          NULL, NULL), 0);
    assert_string_equal(s.failure, "no");
    tracker_scrape_resp_release(&s);

    static const struct err_case cases[] = {
        EC("", TRACKER_E_BENCODE, 0),
        EC("d5:files", TRACKER_E_BENCODE, 8),
        EC("l1:xe", TRACKER_E_NOT_DICT, 0),
        EC("d5:filesi1ee", TRACKER_E_FIELD, 8),
        EC("d14:failure reasondee", TRACKER_E_FIELD, 18),
        EC("d5:filesd3:abcdeee", TRACKER_E_HASH, 9),
        EC("d5:filesd20:AAAAAAAAAAAAAAAAAAAAi1eee", TRACKER_E_FIELD, 32),
        EC("d5:filesd20:AAAAAAAAAAAAAAAAAAAAd8:complete1:xeee",
           TRACKER_E_FIELD, 43),
        EC("d5:filesd20:AAAAAAAAAAAAAAAAAAAAd10:downloadedi-1eeee",
           TRACKER_E_FIELD, 46),
        EC("d5:filesd20:AAAAAAAAAAAAAAAAAAAAd10:incompletedeeee",
           TRACKER_E_FIELD, 46),
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        size_t off = 12345;
        int r = tracker_parse_scrape(&s, cases[i].body, cases[i].len, NULL,
                                     &off);
        if (r != cases[i].err || off != cases[i].off)
            fail_msg("case %zu '%s': got %d (%s) at %zu, want %d at %zu", i,
                     cases[i].body, r, tracker_strerror(r), off,
                     cases[i].err, cases[i].off);
    }
    struct tracker_limits lim = tracker_limits_default;
    size_t off;
    lim.max_files = 1;
    assert_int_equal(tracker_parse_scrape(&s, S(scrape_body), &lim, &off),
                     TRACKER_E_TOO_MANY);
    assert_int_equal(off, (size_t)(strstr(scrape_body, "20:BBB") -
                                   scrape_body));
    lim = tracker_limits_default;
    lim.max_size = 5;
    assert_int_equal(tracker_parse_scrape(&s, S(scrape_body), &lim, &off),
                     TRACKER_E_TOO_LARGE);
    assert_int_equal(off, 5);
}

/* --- UDP ---------------------------------------------------------------- */

static void
test_udp_encode(void **state)
{
    (void)state;
    uint8_t c[TRACKER_UDP_CONNECT_LEN];
    assert_int_equal(tracker_udp_connect_req(c, 0x01020304), 16);
    assert_memory_equal(c, "\x00\x00\x04\x17\x27\x10\x19\x80"
                           "\x00\x00\x00\x00\x01\x02\x03\x04", 16);

    struct tracker_announce_req req;
    fill_req(&req);
    uint8_t a[TRACKER_UDP_ANNOUNCE_LEN];
    assert_int_equal(tracker_udp_announce_req(a, 0x1122334455667788ull,
                                              0xa0b0c0d0, &req), 98);
    assert_memory_equal(a, "\x11\x22\x33\x44\x55\x66\x77\x88"
                           "\x00\x00\x00\x01\xa0\xb0\xc0\xd0", 16);
    assert_memory_equal(a + 16, req.info_hash, 20);
    assert_memory_equal(a + 36, req.peer_id, 20);
    assert_memory_equal(a + 56, "\0\0\0\0\0\0\0\x02", 8);       /* down */
    assert_memory_equal(a + 64, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
    assert_memory_equal(a + 72, "\0\0\0\0\0\0\0\x01", 8);       /* up */
    assert_memory_equal(a + 80, "\0\0\0\x02", 4);                /* started */
    assert_memory_equal(a + 84, "\0\0\0\0", 4);
    assert_memory_equal(a + 88, "\xde\xad\xbe\xef", 4);
    assert_memory_equal(a + 92, "\0\0\0\x32", 4);
    assert_memory_equal(a + 96, "\x1a\xe1", 2);
    req.numwant = -1;
    tracker_udp_announce_req(a, 1, 2, &req);
    assert_memory_equal(a + 92, "\xff\xff\xff\xff", 4);

    uint8_t h[2][20];
    memset(h[0], 1, 20);
    memset(h[1], 2, 20);
    uint8_t s[16 + 40];
    assert_int_equal(tracker_udp_scrape_req(s, sizeof(s), 7, 9, h, 2), 56);
    assert_memory_equal(s + 8, "\0\0\0\x02\0\0\0\x09", 8);
    assert_memory_equal(s + 16, h[0], 20);
    assert_memory_equal(s + 36, h[1], 20);
    assert_int_equal(tracker_udp_scrape_req(s, sizeof(s) - 1, 7, 9, h, 2), 0);
    assert_int_equal(tracker_udp_scrape_req(s, sizeof(s), 7, 9, h, 0), 0);
    assert_int_equal(tracker_udp_scrape_req(s, 100000, 7, 9, h,
                                            TRACKER_UDP_SCRAPE_MAX + 1), 0);
}

/* A connect answer, an IPv4 announce answer with 2 peers, an IPv6 one
 * with 1, a scrape answer with 2 entries, an error. */
static const uint8_t udp_connect[] = {
    0, 0, 0, 0, 0xa0, 0xb0, 0xc0, 0xd0,
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
static const uint8_t udp_ann4[] = {
    0, 0, 0, 1, 0xa0, 0xb0, 0xc0, 0xd0,
    0, 0, 0x07, 0x08, 0, 0, 0, 3, 0, 0, 0, 4,
    127, 0, 0, 1, 0x1a, 0xe1,
    10, 1, 2, 3, 0, 0};
static const uint8_t udp_ann6[] = {
    0, 0, 0, 1, 0xa0, 0xb0, 0xc0, 0xd0,
    0, 0, 0, 60, 0, 0, 0, 0, 0, 0, 0, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90};
static const uint8_t udp_scrape[] = {
    0, 0, 0, 2, 0xa0, 0xb0, 0xc0, 0xd0,
    0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
    0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6};
static const uint8_t udp_error[] = {
    0, 0, 0, 3, 0xa0, 0xb0, 0xc0, 0xd0, 'n', 'o', '\0', 'p', 'e'};

#define TID 0xa0b0c0d0u

static void
test_udp_parse(void **state)
{
    (void)state;
    struct tracker_udp_resp u;
    uint8_t h[2][20];
    memset(h[0], 1, 20);
    memset(h[1], 2, 20);
    uint32_t action, tid;

    assert_int_equal(tracker_udp_peek(udp_ann4, 8, &action, &tid), 0);
    assert_int_equal(action, 1);
    assert_int_equal(tid, TID);
    assert_int_equal(tracker_udp_peek(udp_ann4, 7, &action, &tid),
                     TRACKER_E_TRUNCATED);

    assert_int_equal(tracker_udp_parse(&u, udp_connect, sizeof(udp_connect),
                                       TRACKER_UDP_CONNECT, TID, AF_INET,
                                       NULL, 0, NULL, NULL), 0);
    assert_int_equal(u.action, TRACKER_UDP_CONNECT);
    assert_true(u.connection_id == 0x1122334455667788ull);
    tracker_udp_resp_release(&u);

    assert_int_equal(tracker_udp_parse(&u, udp_ann4, sizeof(udp_ann4),
                                       TRACKER_UDP_ANNOUNCE, TID, AF_INET,
                                       NULL, 0, NULL, NULL), 0);
    assert_int_equal(u.announce.interval, 0x708);
    assert_int_equal(u.announce.incomplete, 3);
    assert_int_equal(u.announce.complete, 4);
    assert_int_equal(u.announce.n_peers, 1);
    assert_int_equal(u.announce.n_skipped, 1);
    assert_int_equal(u.announce.peers[0].port, 6881);
    assert_memory_equal(u.announce.peers[0].addr, "\x7f\0\0\x01", 4);
    tracker_udp_resp_release(&u);
    tracker_udp_resp_release(&u);
    tracker_udp_resp_release(NULL);

    assert_int_equal(tracker_udp_parse(&u, udp_ann6, sizeof(udp_ann6),
                                       TRACKER_UDP_ANNOUNCE, TID, AF_INET6,
                                       NULL, 0, NULL, NULL), 0);
    assert_int_equal(u.announce.n_peers, 1);
    assert_int_equal(u.announce.peers[0].family, AF_INET6);
    assert_int_equal(u.announce.peers[0].port, 8080);
    tracker_udp_resp_release(&u);
    /* The same 18 peer bytes on an IPv4 socket: 3 peers. */
    assert_int_equal(tracker_udp_parse(&u, udp_ann6, sizeof(udp_ann6),
                                       TRACKER_UDP_ANNOUNCE, TID, AF_INET,
                                       NULL, 0, NULL, NULL), 0);
    assert_int_equal(u.announce.n_peers + u.announce.n_skipped, 3);
    tracker_udp_resp_release(&u);

    assert_int_equal(tracker_udp_parse(&u, udp_scrape, sizeof(udp_scrape),
                                       TRACKER_UDP_SCRAPE, TID, AF_INET, h, 2,
                                       NULL, NULL), 0);
    assert_int_equal(u.scrape.n_files, 2);
    assert_memory_equal(u.scrape.files[1].info_hash, h[1], 20);
    assert_int_equal(u.scrape.files[0].complete, 1);
    assert_int_equal(u.scrape.files[0].downloaded, 2);
    assert_int_equal(u.scrape.files[0].incomplete, 3);
    assert_int_equal(u.scrape.files[1].incomplete, 6);
    tracker_udp_resp_release(&u);
    /* Fewer entries than asked: fine. */
    assert_int_equal(tracker_udp_parse(&u, udp_scrape, 8, TRACKER_UDP_SCRAPE,
                                       TID, AF_INET, h, 2, NULL, NULL), 0);
    assert_int_equal(u.scrape.n_files, 0);
    tracker_udp_resp_release(&u);

    /* An error answers any request. */
    for (uint32_t ex = 0; ex < 3; ex++) {
        assert_int_equal(tracker_udp_parse(&u, udp_error, sizeof(udp_error),
                                           ex, TID, AF_INET, h, 2, NULL,
                                           NULL), 0);
        assert_int_equal(u.action, TRACKER_UDP_ERROR);
        assert_string_equal(u.announce.failure, "no?pe");
        tracker_udp_resp_release(&u);
    }

    static const struct {
        const uint8_t *p;
        size_t len;
        uint32_t expect, tid;
        int family;
        size_t n;
        int err;
        size_t off;
    } cases[] = {
        {udp_connect, 0, 0, TID, AF_INET, 0, TRACKER_E_TRUNCATED, 0},
        {udp_connect, 7, 0, TID, AF_INET, 0, TRACKER_E_TRUNCATED, 7},
        {udp_connect, 15, 0, TID, AF_INET, 0, TRACKER_E_TRUNCATED, 15},
        {udp_ann4, 19, 1, TID, AF_INET, 0, TRACKER_E_TRUNCATED, 19},
        {udp_ann4, 21, 1, TID, AF_INET, 0, TRACKER_E_PEERS, 20},
        {udp_ann4, sizeof(udp_ann4), 1, TID, AF_INET6, 0, TRACKER_E_PEERS,
         20},
        {udp_scrape, 9, 2, TID, AF_INET, 2, TRACKER_E_TRUNCATED, 9},
        {udp_scrape, sizeof(udp_scrape), 2, TID, AF_INET, 1,
         TRACKER_E_TOO_MANY, 20},
        {udp_connect, sizeof(udp_connect), 1, TID, AF_INET, 0,
         TRACKER_E_ACTION, 0},
        {udp_ann4, sizeof(udp_ann4), 0, TID, AF_INET, 0, TRACKER_E_ACTION, 0},
        {udp_connect, sizeof(udp_connect), 0, TID + 1, AF_INET, 0,
         TRACKER_E_TRANSACTION, 4},
        {udp_error, sizeof(udp_error), 0, 1, AF_INET, 0,
         TRACKER_E_TRANSACTION, 4},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        size_t off = 12345;
        int r = tracker_udp_parse(&u, cases[i].p, cases[i].len,
                                  cases[i].expect, cases[i].tid,
                                  cases[i].family, h, cases[i].n, NULL, &off);
        if (r != cases[i].err || off != cases[i].off)
            fail_msg("udp case %zu: got %d (%s) at %zu, want %d at %zu", i,
                     r, tracker_strerror(r), off, cases[i].err, cases[i].off);
    }
    /* An unknown action. */
    uint8_t odd[16];
    memcpy(odd, udp_connect, 16);
    odd[3] = 9;
    size_t off;
    assert_int_equal(tracker_udp_parse(&u, odd, 16, 0, TID, AF_INET, NULL, 0,
                                       NULL, &off), TRACKER_E_ACTION);
    /* Limits. */
    struct tracker_limits lim = tracker_limits_default;
    lim.max_peers = 1;
    assert_int_equal(tracker_udp_parse(&u, udp_ann4, sizeof(udp_ann4), 1, TID,
                                       AF_INET, NULL, 0, &lim, &off),
                     TRACKER_E_TOO_MANY);
    assert_int_equal(off, 26);
    lim.max_size = 16;
    assert_int_equal(tracker_udp_parse(&u, udp_ann4, sizeof(udp_ann4), 1, TID,
                                       AF_INET, NULL, 0, &lim, &off),
                     TRACKER_E_TOO_LARGE);
    assert_int_equal(off, 16);
    lim = tracker_limits_default;
    lim.max_files = 1;
    assert_int_equal(tracker_udp_parse(&u, udp_scrape, sizeof(udp_scrape), 2,
                                       TID, AF_INET, h, 2, &lim, &off),
                     TRACKER_E_TOO_MANY);
    assert_int_equal(off, 20);
}

static void
test_udp_url(void **state)
{
    (void)state;
    static const struct {
        const char *url, *host;
        unsigned port;
        bool v6;
    } ok[] = {
        {"udp://tracker.example:6969", "tracker.example", 6969, false},
        {"udp://tracker.example:6969/announce", "tracker.example", 6969,
         false},
        {"UDP://127.0.0.1:1/announce?passkey=x", "127.0.0.1", 1, false},
        {"udp://[::1]:65535/", "::1", 65535, true},
        {"udp://[2001:db8::1]:80?x", "2001:db8::1", 80, true},
        {"udp://a_b-c.d:80#f", "a_b-c.d", 80, false},
    };
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        struct tracker_udp_url u;
        assert_int_equal(tracker_udp_url_parse(&u, ok[i].url), 0);
        assert_string_equal(u.host, ok[i].host);
        assert_int_equal(u.port, ok[i].port);
        assert_int_equal(u.ipv6_literal, ok[i].v6);
    }
    static const char *const bad[] = {
        "", "udp://", "udp://host", "udp://host:", "udp://host:0",
        "udp://host:65536", "udp://host:1234567", "udp://:80",
        "udp://ho st:80", "udp://host:80x", "http://host:80",
        "udp://[::1:80", "udp://[zz]:80", "udp://[::1]80", "udp://h%41:1",
        "udp://user@host:80",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct tracker_udp_url u;
        memset(&u, 0x41, sizeof(u));
        if (tracker_udp_url_parse(&u, bad[i]) != TRACKER_E_URL)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(u.port, 0x4141);
    }
    /* The longest host name, and one byte more. */
    char url[400];
    char host[TRACKER_UDP_HOST_MAX + 2];
    memset(host, 'a', sizeof(host) - 1);
    host[TRACKER_UDP_HOST_MAX] = '\0';
    struct tracker_udp_url u;
    (void)snprintf(url, sizeof(url), "udp://%s:1", host);
    assert_int_equal(tracker_udp_url_parse(&u, url), 0);
    host[TRACKER_UDP_HOST_MAX] = 'a';
    host[TRACKER_UDP_HOST_MAX + 1] = '\0';
    (void)snprintf(url, sizeof(url), "udp://%s:1", host);
    assert_int_equal(tracker_udp_url_parse(&u, url), TRACKER_E_URL);
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e > TRACKER_E_MIN; e--) {
        const char *s = tracker_strerror(e);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
    }
    assert_string_equal(tracker_strerror(TRACKER_E_MIN), "unknown error");
    assert_string_equal(tracker_strerror(1), "unknown error");
    assert_string_equal(tracker_strerror(-1000), "unknown error");
}

/* --- truncation and bit flips ------------------------------------------ */

/* Run every parser on p[0..n); check that results are sane. */
static int
run_all(const uint8_t *p, size_t n)
{
    struct tracker_announce_resp a;
    struct tracker_scrape_resp s;
    struct tracker_udp_resp u;
    uint8_t h[2][20];
    size_t off;
    int ok = 0;
    memset(h, 1, sizeof(h));

    off = SIZE_MAX;
    int r = tracker_parse_announce(&a, p, n, NULL, &off);
    if (r == 0) {
        ok++;
        assert_true(a.n_peers <= tracker_limits_default.max_peers);
        tracker_announce_resp_release(&a);
    } else {
        assert_true(r < 0 && r > TRACKER_E_MIN && off <= n);
    }
    off = SIZE_MAX;
    r = tracker_parse_scrape(&s, p, n, NULL, &off);
    if (r == 0) {
        ok++;
        tracker_scrape_resp_release(&s);
    } else {
        assert_true(r < 0 && r > TRACKER_E_MIN && off <= n);
    }
    for (uint32_t ex = 0; ex < 3; ex++) {
        for (int fam = 0; fam < 2; fam++) {
            off = SIZE_MAX;
            r = tracker_udp_parse(&u, p, n, ex, TID,
                                  fam ? AF_INET6 : AF_INET, h, 2, NULL, &off);
            if (r == 0) {
                ok++;
                tracker_udp_resp_release(&u);
            } else {
                assert_true(r < 0 && r > TRACKER_E_MIN && off <= n);
            }
        }
    }
    return ok;
}

static const struct {
    const void *p;
    size_t len;
} samples[] = {
    {ann_compact, sizeof(ann_compact) - 1},
    {ann_dict, sizeof(ann_dict) - 1},
    {scrape_body, sizeof(scrape_body) - 1},
    {udp_connect, sizeof(udp_connect)},
    {udp_ann4, sizeof(udp_ann4)},
    {udp_ann6, sizeof(udp_ann6)},
    {udp_scrape, sizeof(udp_scrape)},
    {udp_error, sizeof(udp_error)},
};

static void
test_truncated(void **state)
{
    (void)state;
    for (size_t k = 0; k < ARRAY_SIZE(samples); k++) {
        for (size_t n = 0; n <= samples[k].len; n++) {
            /* An exact-size copy, so that ASan sees any over-read. */
            uint8_t *c = malloc(n ? n : 1);
            assert_non_null(c);
            memcpy(c, samples[k].p, n);
            int ok = run_all(c, n);
            if (k < 3 && n < samples[k].len) {
                /* A truncated bencoded body never parses. */
                struct tracker_announce_resp a;
                assert_int_not_equal(tracker_parse_announce(&a, c, n, NULL,
                                                            NULL), 0);
            }
            if (n == samples[k].len)
                assert_true(ok > 0);
            free(c);
        }
    }
}

static void
test_bit_flip(void **state)
{
    (void)state;
    for (size_t k = 0; k < ARRAY_SIZE(samples); k++) {
        size_t n = samples[k].len;
        uint8_t *c = malloc(n);
        assert_non_null(c);
        for (size_t bit = 0; bit < n * 8; bit++) {
            memcpy(c, samples[k].p, n);
            c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            (void)run_all(c, n);
        }
        free(c);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_all_bytes),
        cmocka_unit_test(test_announce_url),
        cmocka_unit_test(test_scrape_url),
        cmocka_unit_test(test_announce_valid),
        cmocka_unit_test(test_announce_errors),
        cmocka_unit_test(test_scrape),
        cmocka_unit_test(test_udp_encode),
        cmocka_unit_test(test_udp_parse),
        cmocka_unit_test(test_udp_url),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bit_flip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
