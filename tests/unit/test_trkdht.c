/* Unit tests for the cache of daemon/trkdht (the built-in tracker's DHT
 * source): when a lookup is due (first ask, after TRKDHT_FRESH_S, sooner
 * after a lookup that reached no node), "wait" while the first lookup
 * runs, peers added without repeats and filtered by family, answers from
 * a rotating start, peers not found again dropped by a lookup that found
 * others, the bounds (peers per info-hash, info-hashes, and which one
 * makes room), and forgetting entries nobody asks for. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <netinet/in.h>

#include "common/tracker.h"
#include "daemon/trkdht.h"

static struct sockaddr_storage
v4(uint32_t host, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    s4->sin_addr.s_addr = htonl(host);
    return ss;
}

static struct sockaddr_storage
v6(uint8_t last, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    s6->sin6_addr.s6_addr[0] = 0x20;
    s6->sin6_addr.s6_addr[15] = last;
    return ss;
}

static const uint8_t H1[20] = {1}, H2[20] = {2}, H3[20] = {3};

static void
test_rounds(void **state)
{
    (void)state;
    struct trkdht_cache *c;
    struct tracker_peer out[TRKDHT_PEERS_MAX];
    size_t n = 99;
    assert_int_equal(trkdht_cache_new(&c, 16), 0);

    /* First ask: a lookup is due, nothing cached. */
    assert_int_equal(trkdht_cache_ask(c, H1, 100, AF_UNSPEC, out, 50, &n),
                     TRKDHT_LOOKUP);
    assert_int_equal(n, 0);
    assert_int_equal(trkdht_cache_entries(c), 1);
    trkdht_cache_started(c, H1, 100);
    /* While the first lookup runs with nothing found: wait. */
    assert_int_equal(trkdht_cache_ask(c, H1, 100.5, AF_UNSPEC, out, 50, &n),
                     TRKDHT_WAIT);

    /* Peers arrive: repeats, port 0 and other families are not added. */
    struct sockaddr_storage got[6] = {
        v4(0x0a000001, 6881), v4(0x0a000002, 6881), v6(1, 7000),
        v4(0x0a000001, 6881), v4(0x0a000003, 0),
    };
    got[5].ss_family = AF_UNIX;
    assert_int_equal(trkdht_cache_add(c, H1, 101, got, 6), 3);
    assert_int_equal(trkdht_cache_peers(c), 3);
    assert_int_equal(trkdht_cache_add(c, H2, 101, got, 6), 0); /* unknown */
    /* Something found: answers no longer wait. */
    assert_int_equal(trkdht_cache_ask(c, H1, 101, AF_INET, out, 50, &n),
                     TRKDHT_HAVE);
    assert_int_equal(n, 2);
    assert_int_equal(out[0].family, AF_INET);
    assert_int_equal(out[1].family, AF_INET);
    assert_int_not_equal(out[0].port == 6881 &&
                             memcmp(out[0].addr, out[1].addr, 4) == 0,
                         1);
    assert_int_equal(trkdht_cache_ask(c, H1, 101, AF_INET6, out, 50, &n),
                     TRKDHT_HAVE);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].port, 7000);
    trkdht_cache_ended(c, H1, 102, true);

    /* Fresh: no lookup until TRKDHT_FRESH_S later. */
    assert_int_equal(trkdht_cache_ask(c, H1, 102 + TRKDHT_FRESH_S - 1,
                                      AF_UNSPEC, out, 50, &n),
                     TRKDHT_HAVE);
    assert_int_equal(n, 3);
    /* A rotating start: one peer at a time, three different ones. */
    uint16_t ports[3];
    uint8_t firsts[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(trkdht_cache_ask(c, H1, 200, AF_UNSPEC, out, 1, &n),
                         TRKDHT_HAVE);
        assert_int_equal(n, 1);
        ports[i] = out[0].port;
        firsts[i] = out[0].family == AF_INET ? out[0].addr[3] : 0xff;
    }
    assert_false(ports[0] == ports[1] && firsts[0] == firsts[1]);
    assert_false(ports[1] == ports[2] && firsts[1] == firsts[2]);

    double t = 102 + TRKDHT_FRESH_S;
    assert_int_equal(trkdht_cache_ask(c, H1, t, AF_UNSPEC, out, 50, &n),
                     TRKDHT_LOOKUP);
    assert_int_equal(n, 3); /* the older round's, meanwhile */
    trkdht_cache_started(c, H1, t);
    /* A renewal does not hold answers. */
    assert_int_equal(trkdht_cache_ask(c, H1, t, AF_UNSPEC, out, 50, &n),
                     TRKDHT_HAVE);
    /* It finds one old peer and one new: the other two are dropped. */
    struct sockaddr_storage again[2] = {v4(0x0a000002, 6881),
                                        v4(0x0a000009, 1)};
    assert_int_equal(trkdht_cache_add(c, H1, t + 1, again, 2), 1);
    trkdht_cache_ended(c, H1, t + 2, true);
    assert_int_equal(trkdht_cache_peers(c), 2);
    assert_int_equal(trkdht_cache_ask(c, H1, t + 3, AF_UNSPEC, out, 50, &n),
                     TRKDHT_HAVE);
    assert_int_equal(n, 2);

    /* A round that found nobody keeps what there was. */
    t += 2 + TRKDHT_FRESH_S;
    assert_int_equal(trkdht_cache_ask(c, H1, t, AF_UNSPEC, out, 50, &n),
                     TRKDHT_LOOKUP);
    trkdht_cache_started(c, H1, t);
    trkdht_cache_ended(c, H1, t + 1, true);
    assert_int_equal(trkdht_cache_peers(c), 2);

    /* A round that reached no node: due again much sooner, kept too. */
    t += 1 + TRKDHT_FRESH_S;
    assert_int_equal(trkdht_cache_ask(c, H1, t, AF_UNSPEC, out, 50, &n),
                     TRKDHT_LOOKUP);
    trkdht_cache_started(c, H1, t);
    trkdht_cache_ended(c, H1, t, false);
    assert_int_equal(trkdht_cache_peers(c), 2);
    assert_int_equal(trkdht_cache_ask(c, H1, t + 1, AF_UNSPEC, out, 50, &n),
                     TRKDHT_HAVE);
    assert_int_equal(trkdht_cache_ask(c, H1, t + 60, AF_UNSPEC, out, 50, &n),
                     TRKDHT_LOOKUP);

    /* A first lookup that reached nobody: the next one does not hold. */
    assert_int_equal(trkdht_cache_ask(c, H2, 10, AF_UNSPEC, out, 50, &n),
                     TRKDHT_LOOKUP);
    trkdht_cache_started(c, H2, 10);
    trkdht_cache_ended(c, H2, 10, false);
    assert_int_equal(trkdht_cache_ask(c, H2, 100, AF_UNSPEC, out, 50, &n),
                     TRKDHT_LOOKUP);
    trkdht_cache_started(c, H2, 100);
    assert_int_equal(trkdht_cache_ask(c, H2, 100, AF_UNSPEC, out, 50, &n),
                     TRKDHT_WAIT);
    trkdht_cache_ended(c, H2, 101, true);
    trkdht_cache_started(c, H2, 1000);
    assert_int_equal(trkdht_cache_ask(c, H2, 1000, AF_UNSPEC, out, 50, &n),
                     TRKDHT_HAVE);
    assert_int_equal(n, 0);

    /* Unknown entries: started/ended do nothing. */
    trkdht_cache_started(c, H3, 1);
    trkdht_cache_ended(c, H3, 1, true);
    assert_int_equal(trkdht_cache_entries(c), 2);
    trkdht_cache_free(c);
    trkdht_cache_free(NULL);
}

static void
test_bounds(void **state)
{
    (void)state;
    struct trkdht_cache *c;
    struct tracker_peer out[TRKDHT_PEERS_MAX];
    size_t n;
    assert_int_equal(trkdht_cache_new(&c, 2), 0);

    /* Peers per info-hash: at most TRKDHT_PEERS_MAX; when full, a newer
     * one replaces the one seen longest ago. */
    assert_int_equal(trkdht_cache_ask(c, H1, 1, AF_UNSPEC, out, 1, &n),
                     TRKDHT_LOOKUP);
    trkdht_cache_started(c, H1, 1);
    struct sockaddr_storage many[TRKDHT_PEERS_MAX + 50];
    for (size_t i = 0; i < TRKDHT_PEERS_MAX + 50; i++)
        many[i] = v4(0x0a000000 + (uint32_t)i, 1000);
    assert_int_equal(trkdht_cache_add(c, H1, 2, many, TRKDHT_PEERS_MAX),
                     TRKDHT_PEERS_MAX);
    assert_int_equal(trkdht_cache_add(c, H1, 2, many + TRKDHT_PEERS_MAX, 50),
                     0); /* as old as the others: not replaced */
    assert_int_equal(trkdht_cache_add(c, H1, 3, many + TRKDHT_PEERS_MAX, 50),
                     50);
    assert_int_equal(trkdht_cache_peers(c), TRKDHT_PEERS_MAX);
    assert_int_equal(trkdht_cache_ask(c, H1, 3, AF_UNSPEC, out,
                                      TRKDHT_PEERS_MAX, &n),
                     TRKDHT_HAVE);
    assert_int_equal(n, TRKDHT_PEERS_MAX);
    size_t newer = 0;
    for (size_t i = 0; i < n; i++)
        newer += ntohl(*(const uint32_t *)(const void *)out[i].addr) >=
                 0x0a000000 + TRKDHT_PEERS_MAX;
    assert_int_equal(newer, 50);

    /* Info-hashes: H1 is looking and H2 was asked for last, so when both
     * are looking nobody makes room; once H2 is done it does. */
    assert_int_equal(trkdht_cache_ask(c, H2, 4, AF_UNSPEC, out, 1, &n),
                     TRKDHT_LOOKUP);
    trkdht_cache_started(c, H2, 4);
    assert_int_equal(trkdht_cache_ask(c, H3, 5, AF_UNSPEC, out, 1, &n),
                     TRKDHT_FULL);
    assert_int_equal(n, 0);
    trkdht_cache_ended(c, H2, 6, true);
    assert_int_equal(trkdht_cache_ask(c, H3, 7, AF_UNSPEC, out, 1, &n),
                     TRKDHT_LOOKUP);
    trkdht_cache_started(c, H3, 7);
    assert_int_equal(trkdht_cache_entries(c), 2);
    assert_int_equal(trkdht_cache_ask(c, H2, 8, AF_UNSPEC, out, 1, &n),
                     TRKDHT_FULL); /* H2 went; H1 and H3 look */
    trkdht_cache_ended(c, H3, 8, true);

    /* Forgetting: none that looks; the others after TRKDHT_FORGET_S. */
    assert_int_equal(trkdht_cache_forget(c, 7 + TRKDHT_FORGET_S), 0);
    assert_int_equal(trkdht_cache_forget(c, 8 + TRKDHT_FORGET_S), 1);
    assert_int_equal(trkdht_cache_entries(c), 1);
    trkdht_cache_ended(c, H1, 9, true);
    assert_int_equal(trkdht_cache_forget(c, 9 + TRKDHT_FORGET_S), 1);
    assert_int_equal(trkdht_cache_entries(c), 0);
    assert_int_equal(trkdht_cache_peers(c), 0);
    trkdht_cache_free(c);

    /* The entry bound is clamped. */
    assert_int_equal(trkdht_cache_new(&c, 0), 0);
    assert_int_equal(trkdht_cache_ask(c, H1, 1, AF_UNSPEC, out, 1, &n),
                     TRKDHT_LOOKUP);
    assert_int_equal(trkdht_cache_ask(c, H2, 2, AF_UNSPEC, out, 1, &n),
                     TRKDHT_LOOKUP);
    assert_int_equal(trkdht_cache_entries(c), 1);
    trkdht_cache_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounds),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
