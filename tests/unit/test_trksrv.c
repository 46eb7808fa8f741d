/* Unit tests for the swarm store of daemon/trksrv: recording and
 * updating peers, counts (seeders, leechers, completed downloads),
 * stopped peers, expiry on announce and by the sweep, the limits per
 * info-hash and in total, and the sample (size, no repeats, never the
 * requester, leechers only for a seed, family filter, randomness); and
 * the server on a private loop: UDP connect/announce and an HTTP announce
 * through real sockets on 127.0.0.1, with a source of extra peers
 * (trksrv_source) filling up answers, and holding them while it looks:
 * released when it is ready, after TRKSRV_SOURCE_WAIT_S, or when it is
 * cleared. */
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
#include <ev.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>

#include "common/trkserve.h"
#include "daemon/config.h"
#include "daemon/trksrv.h"

static struct trkserve_addr
addr4(uint32_t n)
{
    struct trkserve_addr a;
    memset(&a, 0, sizeof(a));
    a.family = AF_INET;
    a.addr[0] = 10;
    a.addr[1] = (uint8_t)(n >> 16);
    a.addr[2] = (uint8_t)(n >> 8);
    a.addr[3] = (uint8_t)n;
    return a;
}

static struct trkserve_announce
ann(uint8_t hash, uint16_t port, uint64_t left, enum tracker_event ev)
{
    struct trkserve_announce a;
    memset(&a, 0, sizeof(a));
    memset(a.info_hash, hash, sizeof(a.info_hash));
    memset(a.peer_id, 'p', sizeof(a.peer_id));
    a.peer_id[0] = (uint8_t)port;
    a.port = port;
    a.left = left;
    a.has_left = true;
    a.event = ev;
    a.numwant = -1;
    a.compact = true;
    return a;
}

static int
announce(struct trksrv_store *st, uint32_t who, uint8_t hash, uint64_t left,
         enum tracker_event ev, double now, struct trksrv_answer *ret)
{
    struct trkserve_addr a = addr4(who);
    struct trkserve_announce x = ann(hash, (uint16_t)(1000 + who % 60000),
                                     left, ev);
    return trksrv_store_announce(st, &a, &x, now, 100.0, AF_UNSPEC, ret);
}

static void
scrape(struct trksrv_store *st, uint8_t hash, struct trkserve_scrape_file *f)
{
    uint8_t h[20];
    memset(h, hash, sizeof(h));
    trksrv_store_scrape(st, h, f);
}

static void
test_counts(void **state)
{
    (void)state;
    struct trksrv_store *st;
    struct trksrv_answer ans;
    struct trkserve_scrape_file f;
    assert_int_equal(trksrv_store_new(&st, 1), 0);

    assert_int_equal(announce(st, 1, 7, 100, TRACKER_EVENT_STARTED, 0, &ans),
                     TRKSRV_STORED);
    assert_int_equal(ans.incomplete, 1);
    assert_int_equal(ans.complete, 0);
    assert_int_equal(ans.n_peers, 0); /* never the requester */
    assert_int_equal(announce(st, 2, 7, 0, TRACKER_EVENT_STARTED, 1, &ans), 0);
    assert_int_equal(ans.complete, 1);
    assert_int_equal(ans.incomplete, 1);
    assert_int_equal(ans.n_peers, 1);
    assert_int_equal(ans.peers[0].port, 1001);
    assert_int_equal(ans.peers[0].family, AF_INET);
    assert_memory_equal(ans.peers[0].addr, "\x0a\0\0\x01", 4);
    assert_true(ans.peers[0].has_id);
    assert_int_equal(ans.peers[0].id[0], (uint8_t)1001);
    assert_int_equal(trksrv_store_peers(st), 2);
    assert_int_equal(trksrv_store_swarms(st), 1);

    /* Re-announcing does not add a peer. */
    assert_int_equal(announce(st, 1, 7, 50, TRACKER_EVENT_NONE, 2, &ans), 0);
    assert_int_equal(trksrv_store_peers(st), 2);

    /* completed: counted once, the leecher becomes a seed. */
    assert_int_equal(announce(st, 1, 7, 0, TRACKER_EVENT_COMPLETED, 3, &ans),
                     0);
    assert_int_equal(ans.complete, 2);
    assert_int_equal(ans.incomplete, 0);
    assert_int_equal(ans.downloaded, 1);
    assert_int_equal(announce(st, 1, 7, 0, TRACKER_EVENT_COMPLETED, 4, &ans),
                     0);
    assert_int_equal(ans.downloaded, 1);
    /* A new peer that says completed counts too. */
    assert_int_equal(announce(st, 3, 7, 0, TRACKER_EVENT_COMPLETED, 4, &ans),
                     0);
    assert_int_equal(ans.downloaded, 2);
    assert_int_equal(ans.complete, 3);
    scrape(st, 7, &f);
    assert_int_equal(f.complete, 3);
    assert_int_equal(f.incomplete, 0);
    assert_int_equal(f.downloaded, 2);
    assert_int_equal(f.info_hash[0], 7);
    /* A seed that goes back to leeching (new data, rechecked). */
    assert_int_equal(announce(st, 3, 7, 10, TRACKER_EVENT_NONE, 5, &ans), 0);
    assert_int_equal(ans.complete, 2);
    assert_int_equal(ans.incomplete, 1);

    /* stopped removes; an unknown peer stopping changes nothing. */
    assert_int_equal(announce(st, 1, 7, 0, TRACKER_EVENT_STOPPED, 6, &ans), 0);
    assert_int_equal(ans.n_peers, 0);
    assert_int_equal(ans.complete, 1);
    assert_int_equal(announce(st, 9, 7, 0, TRACKER_EVENT_STOPPED, 6, &ans), 0);
    assert_int_equal(trksrv_store_peers(st), 2);
    assert_int_equal(announce(st, 9, 8, 0, TRACKER_EVENT_STOPPED, 6, &ans), 0);
    assert_int_equal(trksrv_store_swarms(st), 1);
    /* The last peer gone: the swarm is forgotten. */
    assert_int_equal(announce(st, 2, 7, 0, TRACKER_EVENT_STOPPED, 7, &ans), 0);
    assert_int_equal(announce(st, 3, 7, 0, TRACKER_EVENT_STOPPED, 7, &ans), 0);
    assert_int_equal(trksrv_store_peers(st), 0);
    assert_int_equal(trksrv_store_swarms(st), 0);
    scrape(st, 7, &f);
    assert_int_equal(f.complete + f.incomplete + f.downloaded, 0);

    /* The same address on another port is another peer; left unknown is
     * a leecher. */
    struct trkserve_addr a = addr4(1);
    struct trkserve_announce x = ann(9, 1, 0, TRACKER_EVENT_NONE);
    x.has_left = false;
    assert_int_equal(trksrv_store_announce(st, &a, &x, 0, 100, AF_UNSPEC,
                                           &ans),
                     0);
    x.port = 2;
    assert_int_equal(trksrv_store_announce(st, &a, &x, 0, 100, AF_UNSPEC,
                                           &ans),
                     0);
    assert_int_equal(ans.incomplete, 2);
    assert_int_equal(ans.n_peers, 1);
    assert_int_equal(ans.peers[0].port, 1);
    trksrv_store_free(st);
    trksrv_store_free(NULL);
}

static void
test_expiry(void **state)
{
    (void)state;
    struct trksrv_store *st;
    struct trksrv_answer ans;
    assert_int_equal(trksrv_store_new(&st, 2), 0);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(announce(st, i, 1, 5, TRACKER_EVENT_NONE, i, &ans),
                         0);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(announce(st, 100 + i, 2, 5, TRACKER_EVENT_NONE, 0,
                                  &ans),
                         0);
    assert_int_equal(trksrv_store_peers(st), 15);
    /* On announce: at t=104.5, peers last seen before 4.5 (0..4) go. */
    assert_int_equal(announce(st, 50, 1, 5, TRACKER_EVENT_NONE, 104.5, &ans),
                     0);
    assert_int_equal(ans.incomplete, 6);
    assert_int_equal(trksrv_store_peers(st), 11);
    /* Refreshing keeps a peer; 6..9 go on this announce. */
    assert_int_equal(announce(st, 5, 1, 5, TRACKER_EVENT_NONE, 150, &ans), 0);
    assert_int_equal(ans.incomplete, 2);
    assert_int_equal(trksrv_store_peers(st), 7);
    /* The sweep: swarm 2 entirely (and forgotten), not 5 and 50. */
    size_t dropped = 0;
    for (int i = 0; i < 2000 && trksrv_store_peers(st) > 2; i++)
        dropped += trksrv_store_expire(st, 201, 100, 16);
    assert_int_equal(dropped, 5);
    assert_int_equal(trksrv_store_peers(st), 2);
    assert_int_equal(trksrv_store_swarms(st), 1);
    /* Everything, eventually. */
    for (int i = 0; i < 2000 && trksrv_store_peers(st) > 0; i++)
        (void)trksrv_store_expire(st, 1000, 100, 16);
    assert_int_equal(trksrv_store_peers(st), 0);
    assert_int_equal(trksrv_store_swarms(st), 0);
    trksrv_store_free(st);
}

static void
test_limits(void **state)
{
    (void)state;
    struct trksrv_store *st;
    struct trksrv_answer ans;
    assert_int_equal(trksrv_store_new(&st, 3), 0);
    trksrv_store_set_limits(st, 25, 10);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(announce(st, i, 1, 5, TRACKER_EVENT_NONE, 0, &ans),
                         TRKSRV_STORED);
    /* The swarm is full: answered, not recorded. */
    assert_int_equal(announce(st, 10, 1, 5, TRACKER_EVENT_NONE, 0, &ans),
                     TRKSRV_NOT_STORED);
    assert_int_equal(ans.incomplete, 10);
    assert_int_equal(ans.n_peers, 10);
    for (uint32_t i = 0; i < 15; i++)
        (void)announce(st, 100 + i, (uint8_t)(2 + i % 2), 5,
                       TRACKER_EVENT_NONE, 0, &ans);
    assert_int_equal(trksrv_store_peers(st), 25);
    /* The store is full: no new swarm, no new peer. */
    assert_int_equal(announce(st, 200, 9, 5, TRACKER_EVENT_NONE, 0, &ans),
                     TRKSRV_NOT_STORED);
    assert_int_equal(ans.n_peers, 0);
    assert_int_equal(trksrv_store_swarms(st), 3);
    assert_int_equal(announce(st, 201, 2, 5, TRACKER_EVENT_NONE, 0, &ans),
                     TRKSRV_NOT_STORED);
    /* Known peers still update. */
    assert_int_equal(announce(st, 3, 1, 0, TRACKER_EVENT_COMPLETED, 1, &ans),
                     TRKSRV_STORED);
    assert_int_equal(ans.complete, 1);
    /* A stop makes room. */
    assert_int_equal(announce(st, 3, 1, 0, TRACKER_EVENT_STOPPED, 1, &ans), 0);
    assert_int_equal(announce(st, 200, 9, 5, TRACKER_EVENT_NONE, 0, &ans),
                     TRKSRV_STORED);
    /* The per-hash limit never passes the constant. */
    trksrv_store_set_limits(st, 1000000, 1000000);
    for (uint32_t i = 0; i < TRKSRV_MAX_PEERS_PER_HASH + 10; i++)
        (void)announce(st, 1000 + i, 50, 5, TRACKER_EVENT_NONE, 0, &ans);
    struct trkserve_scrape_file f;
    scrape(st, 50, &f);
    assert_int_equal(f.incomplete, TRKSRV_MAX_PEERS_PER_HASH);
    trksrv_store_free(st);
}

static void
test_sample(void **state)
{
    (void)state;
    struct trksrv_store *st;
    struct trksrv_answer ans;
    assert_int_equal(trksrv_store_new(&st, 4), 0);
    /* 300 leechers and 100 seeds. */
    for (uint32_t i = 0; i < 400; i++)
        assert_int_equal(announce(st, i, 1, i < 300 ? 5 : 0,
                                  TRACKER_EVENT_NONE, 0, &ans),
                         0);
    unsigned hits[400];
    memset(hits, 0, sizeof(hits));
    struct trkserve_addr me = addr4(7);
    for (int round = 0; round < 200; round++) {
        struct trkserve_announce x = ann(1, 1007, 5, TRACKER_EVENT_NONE);
        assert_int_equal(trksrv_store_announce(st, &me, &x, 0, 100, AF_UNSPEC,
                                               &ans),
                         0);
        assert_int_equal(ans.n_peers, TRKSRV_NUMWANT_DEFAULT);
        for (size_t i = 0; i < ans.n_peers; i++) {
            uint32_t who = (uint32_t)ans.peers[i].addr[2] << 8 |
                           ans.peers[i].addr[3];
            assert_true(who < 400);
            assert_int_not_equal(who, 7);
            for (size_t k = 0; k < i; k++)
                assert_false(ans.peers[k].port == ans.peers[i].port &&
                             memcmp(ans.peers[k].addr, ans.peers[i].addr,
                                    4) == 0);
            hits[who]++;
        }
    }
    /* Random: every other peer shows up, none far too often
     * (expected 200 * 50 / 399 = 25 each). */
    for (uint32_t i = 0; i < 400; i++) {
        if (i == 7)
            continue;
        assert_true(hits[i] > 0);
        assert_true(hits[i] < 80);
    }
    /* numwant: 0, small, past the maximum. */
    struct trkserve_announce x = ann(1, 1007, 5, TRACKER_EVENT_NONE);
    x.numwant = 0;
    (void)trksrv_store_announce(st, &me, &x, 0, 100, AF_UNSPEC, &ans);
    assert_int_equal(ans.n_peers, 0);
    x.numwant = 3;
    (void)trksrv_store_announce(st, &me, &x, 0, 100, AF_UNSPEC, &ans);
    assert_int_equal(ans.n_peers, 3);
    x.numwant = 100000;
    (void)trksrv_store_announce(st, &me, &x, 0, 100, AF_UNSPEC, &ans);
    assert_int_equal(ans.n_peers, TRKSRV_NUMWANT_MAX);
    /* A seed gets leechers only. */
    x = ann(1, 1350, 0, TRACKER_EVENT_NONE);
    x.numwant = 1000;
    struct trkserve_addr seed = addr4(350);
    (void)trksrv_store_announce(st, &seed, &x, 0, 100, AF_UNSPEC, &ans);
    assert_int_equal(ans.n_peers, TRKSRV_NUMWANT_MAX);
    for (size_t i = 0; i < ans.n_peers; i++)
        assert_true(ans.peers[i].addr[3] + 256u * ans.peers[i].addr[2] < 300);
    /* The family filter, and IPv6 peers. */
    struct trkserve_addr v6;
    memset(&v6, 0, sizeof(v6));
    v6.family = AF_INET6;
    v6.addr[15] = 1;
    x = ann(1, 4444, 5, TRACKER_EVENT_NONE);
    (void)trksrv_store_announce(st, &v6, &x, 0, 100, AF_INET6, &ans);
    assert_int_equal(ans.n_peers, 0);
    x.numwant = 1000;
    (void)trksrv_store_announce(st, &me, &x, 0, 100, AF_INET6, &ans);
    assert_int_equal(ans.n_peers, 1);
    assert_int_equal(ans.peers[0].family, AF_INET6);
    assert_int_equal(ans.peers[0].port, 4444);
    (void)trksrv_store_announce(st, &me, &x, 0, 100, AF_INET, &ans);
    for (size_t i = 0; i < ans.n_peers; i++)
        assert_int_equal(ans.peers[i].family, AF_INET);
    trksrv_store_free(st);
}

static void
test_many_swarms(void **state)
{
    (void)state;
    struct trksrv_store *st;
    struct trksrv_answer ans;
    assert_int_equal(trksrv_store_new(&st, 0), 0);
    /* Enough swarms to grow the table a few times. */
    for (uint32_t i = 0; i < 5000; i++) {
        struct trkserve_addr a = addr4(i);
        struct trkserve_announce x = ann(0, 1, 5, TRACKER_EVENT_STARTED);
        memcpy(x.info_hash, &i, sizeof(i));
        assert_int_equal(trksrv_store_announce(st, &a, &x, 0, 100, AF_UNSPEC,
                                               &ans),
                         0);
    }
    assert_int_equal(trksrv_store_swarms(st), 5000);
    for (uint32_t i = 0; i < 5000; i += 97) {
        uint8_t h[20];
        struct trkserve_scrape_file f;
        memset(h, 0, sizeof(h));
        memcpy(h, &i, sizeof(i));
        trksrv_store_scrape(st, h, &f);
        assert_int_equal(f.incomplete, 1);
    }
    trksrv_store_free(st);
}

/* --- the server, driven by hand ----------------------------------------- */

static unsigned lookup_calls;
static bool fake_has;     /* false: nothing yet, looking (pending) */

static size_t
fake_fill(void *arg, const uint8_t *info_hash, int family,
          struct tracker_peer *out, size_t max, bool *pending)
{
    (void)arg;
    (void)info_hash;
    lookup_calls++;
    assert_true(max >= 2);
    assert_true(family == AF_INET || family == AF_UNSPEC);
    if (!fake_has) {
        *pending = true;
        return 0;
    }
    memset(out, 0, 4 * sizeof(*out));
    for (int i = 0; i < 3; i++) {
        out[i].family = AF_INET;
        memcpy(out[i].addr, "\xc0\xa8\x01\x01", 4);
        out[i].port = (uint16_t)(5000 + (i == 2 ? 0 : i)); /* one repeat */
    }
    /* The requester itself (UDP from 127.0.0.1 port 6000): left out. */
    out[3].family = AF_INET;
    memcpy(out[3].addr, "\x7f\x00\x00\x01", 4);
    out[3].port = 6000;
    return 4;
}

/* Run the loop until fd is readable (bounded: about 5 s). */
static void
pump_until_readable(struct ev_loop *loop, int fd)
{
    for (int i = 0; i < 500; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) > 0)
            return;
    }
    fail_msg("no answer from the tracker");
}

/* Nothing readable on fd while the loop runs for about ms. */
static void
pump_quiet(struct ev_loop *loop, int fd, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 10), 0);
    }
}

/* Read an HTTP answer to its end and decode its announce body. */
static void
http_read_announce(struct ev_loop *loop, int h, struct tracker_announce_resp *a)
{
    char in[4096];
    size_t have = 0;
    for (int i = 0; i < 50; i++) {
        pump_until_readable(loop, h);
        ssize_t got = recv(h, in + have, sizeof(in) - 1 - have, 0);
        if (got <= 0)
            break;
        have += (size_t)got;
    }
    in[have] = '\0';
    assert_non_null(strstr(in, "HTTP/1.1 200 OK"));
    char *body = strstr(in, "\r\n\r\n");
    assert_non_null(body);
    body += 4;
    assert_int_equal(tracker_parse_announce(a, body,
                                            have - (size_t)(body - in), NULL,
                                            NULL),
                     0);
}

static int
http_send(const struct sockaddr_in *to, const char *req)
{
    int h = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(h >= 0);
    assert_int_equal(connect(h, (const struct sockaddr *)to, sizeof(*to)), 0);
    assert_int_equal(send(h, req, strlen(req), 0), (ssize_t)strlen(req));
    return h;
}

/* A UDP connect from u; returns the connection id. */
static uint64_t
udp_connect(struct ev_loop *loop, int u, const struct sockaddr_in *to,
            uint32_t tid)
{
    uint8_t pkt[64], in[64];
    size_t n = tracker_udp_connect_req(pkt, tid);
    assert_int_equal(sendto(u, pkt, n, 0, (const struct sockaddr *)to,
                            sizeof(*to)),
                     (ssize_t)n);
    pump_until_readable(loop, u);
    ssize_t got = recv(u, in, sizeof(in), 0);
    struct tracker_udp_resp r;
    assert_int_equal(tracker_udp_parse(&r, in, (size_t)got,
                                       TRACKER_UDP_CONNECT, tid, AF_INET,
                                       NULL, 0, NULL, NULL),
                     0);
    uint64_t cid = r.connection_id;
    tracker_udp_resp_release(&r);
    return cid;
}

/* A UDP announce of info-hash hash20 (all bytes `fill`) for port, as a
 * leecher; the answer waits for udp_read_announce(). */
static void
udp_send_announce(int u, const struct sockaddr_in *to, uint64_t cid,
                  uint32_t tid, int fill, uint16_t port)
{
    uint8_t pkt[256];
    struct tracker_announce_req req;
    memset(&req, 0, sizeof(req));
    memset(req.info_hash, fill, 20);
    memset(req.peer_id, 'u', 20);
    req.port = port;
    req.left = 1;
    req.numwant = -1;
    size_t n = tracker_udp_announce_req(pkt, cid, tid, &req);
    assert_int_equal(sendto(u, pkt, n, 0, (const struct sockaddr *)to,
                            sizeof(*to)),
                     (ssize_t)n);
}

static void
udp_read_announce(struct ev_loop *loop, int u, uint32_t tid,
                  struct tracker_udp_resp *r)
{
    uint8_t in[2048];
    pump_until_readable(loop, u);
    ssize_t got = recv(u, in, sizeof(in), 0);
    assert_int_equal(tracker_udp_parse(r, in, (size_t)got,
                                       TRACKER_UDP_ANNOUNCE, tid, AF_INET,
                                       NULL, 0, NULL, NULL),
                     0);
}

static void
test_server(void **state)
{
    (void)state;
    struct config c;
    struct config_error err;
    assert_int_equal(config_init(&c), 0);
    assert_int_equal(config_set(&c, "tracker_listen", "127.0.0.1:0", &err), 0);
    assert_int_equal(config_set(&c, "tracker_interval", "77", &err), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(loop);
    struct trksrv *t = NULL;
    assert_int_equal(trksrv_new(&t, loop, &c), 0);
    assert_non_null(t);
    uint16_t port = trksrv_port(t);
    assert_int_not_equal(port, 0);
    fake_has = true;
    lookup_calls = 0;
    trksrv_set_source(t, &(struct trksrv_source){.fill = fake_fill});
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    /* UDP: connect, then announce; the source fills up the answer. */
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(u >= 0);
    uint64_t cid = udp_connect(loop, u, &to, 9);
    udp_send_announce(u, &to, cid, 10, 0x42, 6000);
    struct tracker_udp_resp r;
    udp_read_announce(loop, u, 10, &r);
    assert_int_equal(r.announce.interval, 77);
    assert_int_equal(r.announce.incomplete, 1);
    assert_int_equal(r.announce.n_peers, 2); /* the repeat dropped */
    assert_int_equal(r.announce.peers[0].port, 5000);
    assert_int_equal(r.announce.peers[1].port, 5001);
    tracker_udp_resp_release(&r);
    assert_int_equal(lookup_calls, 1);

    /* HTTP: the UDP peer from the store, then the source's. */
    int h = http_send(&to, "GET /announce?info_hash=BBBBBBBBBBBBBBBBBBBB"
                           "&peer_id=hhhhhhhhhhhhhhhhhhhh&port=6001&left=0 "
                           "HTTP/1.1\r\nHost: x\r\n\r\n");
    struct tracker_announce_resp a;
    http_read_announce(loop, h, &a);
    assert_int_equal(a.interval, 77);
    assert_int_equal(a.complete, 1);
    assert_int_equal(a.incomplete, 1);
    assert_int_equal(a.n_peers, 3);
    assert_int_equal(a.peers[0].port, 6000);
    tracker_announce_resp_release(&a);
    assert_int_equal(lookup_calls, 2);

    close(h);
    close(u);
    trksrv_set_source(t, NULL);
    trksrv_free(t);
    trksrv_free(NULL);
    ev_loop_destroy(loop);
    /* Off when tracker_listen is empty. */
    assert_int_equal(config_set(&c, "tracker_listen", "", &err), 0);
    loop = ev_loop_new(EVFLAG_AUTO);
    t = (struct trksrv *)&c;
    assert_int_equal(trksrv_new(&t, loop, &c), 0);
    assert_null(t);
    assert_int_equal(trksrv_reload(NULL), 0);
    ev_loop_destroy(loop);
    config_release(&c);
}

/* A source that is still looking: the answers wait for
 * trksrv_source_ready(), or give what there is after
 * TRKSRV_SOURCE_WAIT_S. */
static void
test_held(void **state)
{
    (void)state;
    struct config c;
    struct config_error err;
    assert_int_equal(config_init(&c), 0);
    assert_int_equal(config_set(&c, "tracker_listen", "127.0.0.1:0", &err), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct trksrv *t = NULL;
    assert_int_equal(trksrv_new(&t, loop, &c), 0);
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons(trksrv_port(t))};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fake_has = false;
    lookup_calls = 0;
    trksrv_set_source(t, &(struct trksrv_source){.fill = fake_fill});

    /* HTTP: held while the source looks, answered on ready. */
    static const char get[] =
        "GET /announce?info_hash=CCCCCCCCCCCCCCCCCCCC&peer_id=hhhhhhhhhhhhhhhh"
        "hhhh&port=6001&left=5 HTTP/1.1\r\nHost: x\r\n\r\n";
    int h = http_send(&to, get);
    pump_quiet(loop, h, 200);
    assert_int_equal(lookup_calls, 1);

    /* UDP: the same. */
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(u >= 0);
    uint64_t cid = udp_connect(loop, u, &to, 1);
    udp_send_announce(u, &to, cid, 2, 'C', 6000);
    pump_quiet(loop, u, 200);
    assert_int_equal(lookup_calls, 2);

    /* Another info-hash's readiness releases nothing. */
    uint8_t other[20];
    memset(other, 'D', sizeof(other));
    trksrv_source_ready(t, other);
    pump_quiet(loop, u, 50);

    fake_has = true;
    uint8_t hash[20];
    memset(hash, 'C', sizeof(hash));
    trksrv_source_ready(t, hash);
    struct tracker_udp_resp r;
    udp_read_announce(loop, u, 2, &r);
    /* The HTTP peer from the store, then 192.168.1.1:5000 and :5001; not
     * the requester, no repeats. */
    assert_int_equal(r.announce.n_peers, 3);
    assert_int_equal(r.announce.incomplete, 2);
    assert_int_equal(r.announce.peers[0].port, 6001);
    assert_int_equal(r.announce.peers[1].port, 5000);
    assert_int_equal(r.announce.peers[2].port, 5001);
    tracker_udp_resp_release(&r);
    struct tracker_announce_resp a;
    http_read_announce(loop, h, &a);
    /* For the HTTP announce, made before UDP's, the store had no one
     * else at the time, but the answer is made now: the UDP peer too. */
    assert_int_equal(a.n_peers, 3);
    assert_int_equal(a.incomplete, 2);
    tracker_announce_resp_release(&a);
    close(h);

    /* Nothing comes: the answer is given after the wait, with what the
     * store has. */
    fake_has = false;
    static const char get2[] =
        "GET /announce?info_hash=EEEEEEEEEEEEEEEEEEEE&peer_id=hhhhhhhhhhhhhhhh"
        "hhhh&port=6001&left=5 HTTP/1.1\r\nHost: x\r\n\r\n";
    h = http_send(&to, get2);
    double t0 = ev_time();
    pump_quiet(loop, h, 1000);
    for (int i = 0; i < 10; i++) {
        struct pollfd p = {.fd = h, .events = POLLIN};
        if (poll(&p, 1, 0) > 0)
            break;
        ev_run(loop, EVRUN_ONCE);
    }
    http_read_announce(loop, h, &a);
    assert_true(ev_time() - t0 >= TRKSRV_SOURCE_WAIT_S - 0.1);
    assert_int_equal(a.n_peers, 0);
    assert_int_equal(a.incomplete, 1);
    tracker_announce_resp_release(&a);
    close(h);

    /* Clearing the source gives what is held at once. */
    h = http_send(&to, get2);
    pump_quiet(loop, h, 100);
    trksrv_set_source(t, NULL);
    http_read_announce(loop, h, &a);
    tracker_announce_resp_release(&a);
    close(h);

    close(u);
    trksrv_free(t);
    ev_loop_destroy(loop);
    config_release(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),  cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_limits),  cmocka_unit_test(test_sample),
        cmocka_unit_test(test_many_swarms), cmocka_unit_test(test_server),
        cmocka_unit_test(test_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
