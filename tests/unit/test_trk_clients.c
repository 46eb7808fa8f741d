/* Unit tests for daemon/trk_http, daemon/trk_udp and daemon/tracker on a
 * real libev loop, against stub trackers that the test runs in threads on
 * loopback (127.0.0.1; 127.0.0.2 as a bound source address): the query an
 * announce carries, peers coming back, failure reasons, body caps,
 * timeouts and retransmission with a short base, cancellation, name
 * resolution off the reactor, BEP 12 tiers falling through and moving the
 * tracker that answered to the front, and "stopped" on stop; an announce
 * session: counters since "started", "completed" after a "started" that
 * was still unanswered when the download ended, "stopped" to a tracker
 * whose "started" is unanswered, a key stable per info-hash.
 *
 * Every stub serves loopback only and stops within 50 ms of being told;
 * every loop run has a guard timer. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/metainfo.h"
#include "common/tracker.h"
#include "daemon/tracker.h"
#include "daemon/trk_http.h"
#include "daemon/trk_udp.h"

#define STUB_POLL_MS 50
#define GUARD 5.0 /* seconds: no loop run in these tests may take longer */

/* --- an HTTP tracker stub ---------------------------------------------- */

enum http_mode { HTTP_REPLY, HTTP_HANG, HTTP_BIG };

struct http_stub {
    int fd;
    uint16_t port;
    pthread_t th;
    atomic_bool stop;
    enum http_mode mode;
    int status;
    const char *body;
    size_t body_len;
    const char *scrape_body; /* for "GET /scrape", or NULL */
    int delay_ms;           /* before each answer */
    pthread_mutex_t lock;   /* guards what follows */
    int n_reqs;
    char last_req[4096];
    char last_peer[INET_ADDRSTRLEN];
    char all_events[512];   /* "event=..." of each request, ';'-joined */
};

static int
listen_tcp(uint16_t *ret_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t l = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    *ret_port = ntohs(a.sin_port);
    return fd;
}

static void
write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        c += w;
        n -= (size_t)w;
    }
}

static void
http_serve(struct http_stub *s, int c, const struct sockaddr_in *peer)
{
    char req[4096];
    size_t got = 0;
    /* Read the request head, for at most 2 s. */
    for (int i = 0; i < 40 && got < sizeof(req) - 1; i++) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, STUB_POLL_MS) <= 0)
            continue;
        ssize_t n = recv(c, req + got, sizeof(req) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[got] = '\0';
    pthread_mutex_lock(&s->lock);
    s->n_reqs++;
    memcpy(s->last_req, req, got + 1);
    inet_ntop(AF_INET, &peer->sin_addr, s->last_peer, sizeof(s->last_peer));
    const char *ev = strstr(req, "event=");
    size_t el = ev ? strcspn(ev, "& ") : 4;
    size_t have = strlen(s->all_events);
    if (have + el + 2 < sizeof(s->all_events)) {
        memcpy(s->all_events + have, ev ? ev : "none", el);
        memcpy(s->all_events + have + el, ";", 2);
    }
    pthread_mutex_unlock(&s->lock);

    if (s->delay_ms > 0)
        (void)poll(NULL, 0, s->delay_ms);
    if (s->mode == HTTP_HANG) {
        while (!atomic_load(&s->stop)) {
            struct pollfd p = {.fd = c, .events = POLLIN};
            if (poll(&p, 1, STUB_POLL_MS) > 0) {
                char b[256];
                if (recv(c, b, sizeof(b), 0) <= 0)
                    break;
            }
        }
        return;
    }
    char head[256];
    size_t blen = s->mode == HTTP_BIG ? 100000 : s->body_len;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n"
                     "Content-Type: text/plain\r\nConnection: close\r\n\r\n",
                     s->status, blen);
    if (s->scrape_body && strncmp(req, "GET /scrape", 11) == 0) {
        n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", strlen(s->scrape_body));
        write_all(c, head, (size_t)n);
        write_all(c, s->scrape_body, strlen(s->scrape_body));
        return;
    }
    write_all(c, head, (size_t)n);
    if (s->mode == HTTP_BIG) {
        char *big = malloc(blen);
        memset(big, 'x', blen);
        write_all(c, big, blen);
        free(big);
    } else {
        write_all(c, s->body, blen);
    }
}

static void *
http_thread(void *arg)
{
    struct http_stub *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, STUB_POLL_MS) <= 0)
            continue;
        struct sockaddr_in peer;
        socklen_t pl = sizeof(peer);
        int c = accept4(s->fd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        http_serve(s, c, &peer);
        close(c);
    }
    return NULL;
}

static void
http_start(struct http_stub *s, enum http_mode mode, int status,
           const char *body)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->mode = mode;
    s->status = status;
    s->body = body;
    s->body_len = body ? strlen(body) : 0;
    s->fd = listen_tcp(&s->port);
    assert_int_equal(pthread_create(&s->th, NULL, http_thread, s), 0);
}

static void
http_stop(struct http_stub *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->lock);
}

/* --- a UDP tracker stub ------------------------------------------------- */

enum udp_mode { UDP_REPLY, UDP_SILENT, UDP_ERROR };

struct udp_stub {
    int fd;
    uint16_t port;
    pthread_t th;
    atomic_bool stop;
    enum udp_mode mode;
    int family;             /* AF_INET (127.0.0.1) or AF_INET6 (::1) */
    int drop_first;         /* ignore the first n datagrams */
    pthread_mutex_t lock;   /* guards what follows */
    int n_packets, n_connect, n_announce, n_scrape, n_bad_conn;
    uint8_t last_announce[TRACKER_UDP_ANNOUNCE_LEN];
    char last_src[INET6_ADDRSTRLEN];
};

#define STUB_CONN_ID 0x0123456789abcdefull

static void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static void
udp_handle(struct udp_stub *s, const uint8_t *p, size_t n,
           const struct sockaddr_storage *from, socklen_t from_len)
{
    uint8_t out[256];
    size_t len = 0;
    uint32_t action = n >= 12 ? get32(p + 8) : 99;

    pthread_mutex_lock(&s->lock);
    int k = ++s->n_packets;
    if (from->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)from)->sin_addr,
                  s->last_src, sizeof(s->last_src));
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)from)->sin6_addr,
                  s->last_src, sizeof(s->last_src));
    pthread_mutex_unlock(&s->lock);
    if (k <= s->drop_first || s->mode == UDP_SILENT || n < 16)
        return;
    memcpy(out + 4, p + 12, 4); /* transaction id */
    if (s->mode == UDP_ERROR) {
        put32(out, 3);
        memcpy(out + 8, "go away", 7);
        len = 15;
    } else if (action == 0 && get32(p) == 0x417 && get32(p + 4) == 0x27101980) {
        pthread_mutex_lock(&s->lock);
        s->n_connect++;
        pthread_mutex_unlock(&s->lock);
        put32(out, 0);
        put32(out + 8, (uint32_t)(STUB_CONN_ID >> 32));
        put32(out + 12, (uint32_t)STUB_CONN_ID);
        len = 16;
    } else if (get32(p) != (uint32_t)(STUB_CONN_ID >> 32) ||
               get32(p + 4) != (uint32_t)STUB_CONN_ID) {
        pthread_mutex_lock(&s->lock);
        s->n_bad_conn++;
        pthread_mutex_unlock(&s->lock);
        return;
    } else if (action == 1 && n == TRACKER_UDP_ANNOUNCE_LEN) {
        pthread_mutex_lock(&s->lock);
        s->n_announce++;
        memcpy(s->last_announce, p, n);
        pthread_mutex_unlock(&s->lock);
        put32(out, 1);
        put32(out + 8, 1800);
        put32(out + 12, 1);
        put32(out + 16, 2);
        if (s->family == AF_INET) {
            memcpy(out + 20, "\x7f\x00\x00\x09\x1a\xe1"
                             "\x7f\x00\x00\x0a\x1a\xe2", 12);
            len = 32;
        } else {
            /* BEP 15 on IPv6: 18 bytes a peer. */
            memset(out + 20, 0, 36);
            out[20 + 15] = 1;
            out[20 + 16] = 0x1a;
            out[20 + 17] = 0xe1;
            out[38 + 15] = 1;
            out[38 + 16] = 0x1a;
            out[38 + 17] = 0xe2;
            len = 56;
        }
    } else if (action == 2 && n == 36) {
        pthread_mutex_lock(&s->lock);
        s->n_scrape++;
        pthread_mutex_unlock(&s->lock);
        put32(out, 2);
        put32(out + 8, 11);
        put32(out + 12, 22);
        put32(out + 16, 33);
        len = 20;
    } else {
        return;
    }
    (void)sendto(s->fd, out, len, MSG_NOSIGNAL, (const struct sockaddr *)from,
                 from_len);
}

static void *
udp_thread(void *arg)
{
    struct udp_stub *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, STUB_POLL_MS) <= 0)
            continue;
        uint8_t buf[2048];
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(s->fd, buf, sizeof(buf), 0,
                             (struct sockaddr *)&from, &fl);
        if (n >= 0)
            udp_handle(s, buf, (size_t)n, &from, fl);
    }
    return NULL;
}

/* Start a stub on ::1 (family AF_INET6) or 127.0.0.1.  Returns false
 * (nothing started) when the address cannot be bound. */
static bool
udp_start_family(struct udp_stub *s, enum udp_mode mode, int drop_first,
                 int family)
{
    memset(s, 0, sizeof(*s));
    s->mode = mode;
    s->family = family;
    s->drop_first = drop_first;
    s->fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        return false;
    struct sockaddr_storage a;
    socklen_t l;
    memset(&a, 0, sizeof(a));
    if (family == AF_INET) {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&a;
        a4->sin_family = AF_INET;
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        l = sizeof(*a4);
    } else {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&a;
        a6->sin6_family = AF_INET6;
        a6->sin6_addr = in6addr_loopback;
        l = sizeof(*a6);
    }
    if (bind(s->fd, (struct sockaddr *)&a, l) < 0) {
        close(s->fd);
        return false;
    }
    l = sizeof(a);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &l), 0);
    s->port = ntohs(((struct sockaddr_in *)&a)->sin_port); /* same spot */
    pthread_mutex_init(&s->lock, NULL);
    assert_int_equal(pthread_create(&s->th, NULL, udp_thread, s), 0);
    return true;
}

static void
udp_start(struct udp_stub *s, enum udp_mode mode, int drop_first)
{
    assert_true(udp_start_family(s, mode, drop_first, AF_INET));
}

static void
udp_stop(struct udp_stub *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->lock);
}

static int
udp_count(struct udp_stub *s, int *field)
{
    pthread_mutex_lock(&s->lock);
    int v = *field;
    pthread_mutex_unlock(&s->lock);
    return v;
}

/* --- the loop ----------------------------------------------------------- */

static void
guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Run until a callback breaks, or for at most max seconds. */
static void
run(struct ev_loop *loop, double max)
{
    ev_timer guard;
    ev_timer_init(&guard, guard_cb, max, 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
}

static struct ev_loop *
new_loop(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(loop);
    return loop;
}

/* --- trk_http ----------------------------------------------------------- */

struct http_result {
    struct ev_loop *loop;
    int calls;
    int result;
    long status;
    char body[256];
    char error[256];
};

static void
http_cb(void *arg, int result, long status, const uint8_t *body, size_t len,
        const char *error)
{
    struct http_result *r = arg;
    r->calls++;
    r->result = result;
    r->status = status;
    (void)snprintf(r->body, sizeof(r->body), "%.*s", (int)len,
                   (const char *)body);
    (void)snprintf(r->error, sizeof(r->error), "%s", error);
    ev_break(r->loop, EVBREAK_ALL);
}

static void
test_http_get(void **state)
{
    (void)state;
    struct http_stub s;
    http_start(&s, HTTP_REPLY, 200, "d8:intervali60ee");
    struct ev_loop *loop = new_loop();
    struct trk_http *h;
    assert_int_equal(trk_http_new(&h, loop), 0);

    char url[128];
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%u/announce?x=1",
                   s.port);
    struct http_result r = {.loop = loop};
    struct trk_http_opts o = {.url = url, .timeout_ms = 3000};
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), 0);
    assert_int_equal(trk_http_pending(h), 1);
    run(loop, GUARD);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "d8:intervali60ee");
    assert_string_equal(r.error, "");
    assert_int_equal(trk_http_pending(h), 0);
    pthread_mutex_lock(&s.lock);
    assert_true(strncmp(s.last_req, "GET /announce?x=1 HTTP/1.1\r\n", 28)
                == 0);
    assert_non_null(strstr(s.last_req,
                           "User-Agent: torrentd/" TD_VERSION "\r\n"));
    assert_string_equal(s.last_peer, "127.0.0.1");
    pthread_mutex_unlock(&s.lock);

    /* Bound to 127.0.0.2: the tracker sees that address (TESTING.md). */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    o.bind_addr = "127.0.0.2";
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.result, 0);
    pthread_mutex_lock(&s.lock);
    assert_string_equal(s.last_peer, "127.0.0.2");
    pthread_mutex_unlock(&s.lock);

    /* A name, resolved by curl's threaded resolver. */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    o.bind_addr = NULL;
    (void)snprintf(url, sizeof(url), "http://localhost:%u/announce", s.port);
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), 0);
    run(loop, GUARD);
    /* localhost may be ::1 first; the stub is IPv4 only, curl falls
     * back (happy eyeballs).  Either way it ends. */
    assert_int_equal(r.calls, 1);
    if (r.result == 0)
        assert_int_equal(r.status, 200);

    assert_int_equal(trk_http_get(h, &(struct trk_http_opts){0}, http_cb,
                                  &r, NULL), -EINVAL);
    char longaddr[200];
    memset(longaddr, '1', sizeof(longaddr) - 1);
    longaddr[sizeof(longaddr) - 1] = '\0';
    o.bind_addr = longaddr;
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), -EINVAL);

    trk_http_free(h);
    trk_http_free(NULL);
    ev_loop_destroy(loop);
    http_stop(&s);
}

static void
test_http_errors(void **state)
{
    (void)state;
    struct ev_loop *loop = new_loop();
    struct trk_http *h;
    assert_int_equal(trk_http_new(&h, loop), 0);
    char url[128];
    struct http_result r = {.loop = loop};
    struct trk_http_opts o = {.url = url, .timeout_ms = 3000};

    /* A body over the cap. */
    struct http_stub big;
    http_start(&big, HTTP_BIG, 200, NULL);
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%u/announce",
                   big.port);
    o.max_body = 1000;
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, -EMSGSIZE);
    assert_int_equal(r.status, 0);
    http_stop(&big);

    /* No answer: the timeout. */
    struct http_stub hang;
    http_start(&hang, HTTP_HANG, 200, NULL);
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%u/announce",
                   hang.port);
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    o.max_body = 0;
    o.timeout_ms = 300;
    ev_now_update(loop);
    double t0 = ev_now(loop);
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_true(r.error[0] != '\0');
    ev_now_update(loop);
    assert_true(ev_now(loop) - t0 < 2.0);

    /* Cancelled: no callback. */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    struct trk_http_req *req = NULL;
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, &req), 0);
    run(loop, 0.1);
    trk_http_cancel(req);
    trk_http_cancel(NULL);
    run(loop, 0.5);
    assert_int_equal(r.calls, 0);
    assert_int_equal(trk_http_pending(h), 0);
    http_stop(&hang);

    /* Nobody listens. */
    uint16_t port;
    int fd = listen_tcp(&port);
    close(fd);
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%u/announce", port);
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    o.timeout_ms = 3000;
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, -ECONNREFUSED);

    /* Freed with a request in flight: no callback, no leak. */
    struct http_stub hang2;
    http_start(&hang2, HTTP_HANG, 200, NULL);
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%u/announce",
                   hang2.port);
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    assert_int_equal(trk_http_get(h, &o, http_cb, &r, NULL), 0);
    run(loop, 0.1);
    trk_http_free(h);
    assert_int_equal(r.calls, 0);
    http_stop(&hang2);
    ev_loop_destroy(loop);
}

/* --- trk_udp ------------------------------------------------------------ */

struct udp_result {
    struct ev_loop *loop;
    int calls;
    int result;
    char error[256];
    char failure[64];
    size_t n_peers;
    uint16_t port0;
    int64_t interval, seeders, leechers;
    size_t n_files;
    int64_t scrape_complete;
};

static void
udp_cb(void *arg, int result, const struct tracker_udp_resp *resp,
       const char *error)
{
    struct udp_result *r = arg;
    r->calls++;
    r->result = result;
    (void)snprintf(r->error, sizeof(r->error), "%s", error);
    if (resp) {
        const char *f = resp->announce.failure ? resp->announce.failure
                                               : resp->scrape.failure;
        (void)snprintf(r->failure, sizeof(r->failure), "%s", f ? f : "");
        r->n_peers = resp->announce.n_peers;
        r->port0 = r->n_peers ? resp->announce.peers[0].port : 0;
        r->interval = resp->announce.interval;
        r->seeders = resp->announce.complete;
        r->leechers = resp->announce.incomplete;
        r->n_files = resp->scrape.n_files;
        r->scrape_complete = r->n_files ? resp->scrape.files[0].complete : -1;
    }
    ev_break(r->loop, EVBREAK_ALL);
}

static void
make_req(struct tracker_announce_req *req)
{
    memset(req, 0, sizeof(*req));
    memset(req->info_hash, 0xab, 20);
    memcpy(req->peer_id, "-TD0100-000000000000", 20);
    req->port = 51413;
    req->left = 1000;
    req->event = TRACKER_EVENT_STARTED;
    req->numwant = 50;
    req->key = 0x11223344;
}

static void
test_udp_announce(void **state)
{
    (void)state;
    struct udp_stub s;
    udp_start(&s, UDP_REPLY, 0);
    struct ev_loop *loop = new_loop();
    struct trk_udp *u;
    struct trk_udp_config cfg = {.retrans_base = 0.2, .max_tries = 3};
    assert_int_equal(trk_udp_new(&u, loop, &cfg), 0);

    char url[128];
    (void)snprintf(url, sizeof(url), "udp://127.0.0.1:%u/announce", s.port);
    struct tracker_announce_req req;
    make_req(&req);
    struct udp_result r = {.loop = loop};
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    assert_int_equal(trk_udp_pending(u), 1);
    run(loop, GUARD);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.failure, "");
    assert_int_equal(r.n_peers, 2);
    assert_int_equal(r.port0, 6881);
    assert_int_equal(r.interval, 1800);
    assert_int_equal(r.leechers, 1);
    assert_int_equal(r.seeders, 2);
    assert_int_equal(trk_udp_pending(u), 0);
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.n_connect, 1);
    assert_int_equal(s.n_announce, 1);
    uint8_t want[TRACKER_UDP_ANNOUNCE_LEN];
    tracker_udp_announce_req(want, STUB_CONN_ID, 0, &req);
    /* Everything but the transaction id. */
    assert_memory_equal(s.last_announce, want, 12);
    assert_memory_equal(s.last_announce + 16, want + 16, 98 - 16);
    assert_string_equal(s.last_src, "127.0.0.1");
    pthread_mutex_unlock(&s.lock);

    /* Again: the connection id is cached (BEP 15: one minute). */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    req.event = TRACKER_EVENT_NONE;
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.result, 0);
    assert_int_equal(udp_count(&s, &s.n_connect), 1);
    assert_int_equal(udp_count(&s, &s.n_announce), 2);

    /* Scrape. */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    uint8_t h[1][20];
    memset(h[0], 0xab, 20);
    assert_int_equal(trk_udp_scrape(u, url, h, 1, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n_files, 1);
    assert_int_equal(r.scrape_complete, 11);
    assert_int_equal(trk_udp_scrape(u, url, h, 0, 0, udp_cb, &r, NULL),
                     -EINVAL);

    /* A name, resolved off the reactor (daemon/resolver). */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    (void)snprintf(url, sizeof(url), "udp://localhost:%u", s.port);
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.calls, 1);
    /* localhost may resolve to ::1 first, where nobody answers: then
     * 127.0.0.1 gets its chance. */
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n_peers, 2);

    /* Bad URLs. */
    assert_int_equal(trk_udp_announce(u, "udp://x", &req, 0, udp_cb, &r,
                                      NULL), TRACKER_E_URL);
    assert_int_equal(trk_udp_announce(u, "http://x:1/", &req, 0, udp_cb, &r,
                                      NULL), TRACKER_E_URL);
    assert_true(trk_udp_dropped(u) == 0);

    trk_udp_free(u);
    trk_udp_free(NULL);

    /* Bound to 127.0.0.2: the tracker sees that address. */
    cfg.bind_addr = "127.0.0.2";
    assert_int_equal(trk_udp_new(&u, loop, &cfg), 0);
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    (void)snprintf(url, sizeof(url), "udp://127.0.0.1:%u", s.port);
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.result, 0);
    pthread_mutex_lock(&s.lock);
    assert_string_equal(s.last_src, "127.0.0.2");
    pthread_mutex_unlock(&s.lock);
    /* An IPv6 tracker from an IPv4-bound client: refused at once. */
    assert_int_equal(trk_udp_announce(u, "udp://[::1]:1", &req, 0, udp_cb,
                                      &r, NULL), -EAFNOSUPPORT);
    trk_udp_free(u);
    cfg.bind_addr = "not-an-address";
    assert_int_equal(trk_udp_new(&u, loop, &cfg), -EINVAL);

    ev_loop_destroy(loop);
    udp_stop(&s);
}

static void
test_udp_ipv6(void **state)
{
    (void)state;
    struct udp_stub s;
    if (!udp_start_family(&s, UDP_REPLY, 0, AF_INET6))
        skip(); /* no ::1 here */
    struct ev_loop *loop = new_loop();
    struct trk_udp *u;
    struct trk_udp_config cfg = {.retrans_base = 0.2, .max_tries = 3};
    assert_int_equal(trk_udp_new(&u, loop, &cfg), 0);
    char url[128];
    (void)snprintf(url, sizeof(url), "udp://[::1]:%u/announce", s.port);
    struct tracker_announce_req req;
    make_req(&req);
    struct udp_result r = {.loop = loop};
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, 0);
    /* 36 bytes of peers on an IPv6 socket: two peers of 18 bytes. */
    assert_int_equal(r.n_peers, 2);
    assert_int_equal(r.port0, 6881);
    pthread_mutex_lock(&s.lock);
    assert_string_equal(s.last_src, "::1");
    assert_int_equal(s.n_announce, 1);
    pthread_mutex_unlock(&s.lock);
    trk_udp_free(u);

    /* Bound to ::1, an IPv4 tracker is refused at once. */
    cfg.bind_addr = "::1";
    assert_int_equal(trk_udp_new(&u, loop, &cfg), 0);
    assert_int_equal(trk_udp_announce(u, "udp://127.0.0.1:1", &req, 0,
                                      udp_cb, &r, NULL), -EAFNOSUPPORT);
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.result, 0);
    trk_udp_free(u);
    ev_loop_destroy(loop);
    udp_stop(&s);
}

static void
test_udp_retransmit(void **state)
{
    (void)state;
    struct ev_loop *loop = new_loop();
    struct trk_udp *u;
    struct trk_udp_config cfg = {.retrans_base = 0.05, .max_tries = 4};
    assert_int_equal(trk_udp_new(&u, loop, &cfg), 0);
    struct tracker_announce_req req;
    make_req(&req);
    char url[128];

    /* Two datagrams lost: the third connect gets through. */
    struct udp_stub s;
    udp_start(&s, UDP_REPLY, 2);
    (void)snprintf(url, sizeof(url), "udp://127.0.0.1:%u", s.port);
    struct udp_result r = {.loop = loop};
    ev_now_update(loop);
    double t0 = ev_now(loop);
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    ev_now_update(loop);
    double took = ev_now(loop) - t0;
    assert_int_equal(r.result, 0);
    assert_int_equal(udp_count(&s, &s.n_packets), 4); /* 3 connect + 1 */
    assert_int_equal(udp_count(&s, &s.n_connect), 1);
    /* 0.05 + 0.1 of back-off before the third send. */
    assert_true(took >= 0.14 && took < 2.0);
    udp_stop(&s);

    /* Never an answer: -ETIMEDOUT after max_tries sends. */
    udp_start(&s, UDP_SILENT, 0);
    (void)snprintf(url, sizeof(url), "udp://127.0.0.1:%u", s.port);
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    ev_now_update(loop);
    t0 = ev_now(loop);
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    ev_now_update(loop);
    took = ev_now(loop) - t0;
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_int_equal(udp_count(&s, &s.n_packets), 4);
    /* 0.05 + 0.1 + 0.2 + 0.4 */
    assert_true(took >= 0.7 && took < 3.0);

    /* One try only (what "stopped" at shutdown uses). */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    assert_int_equal(trk_udp_announce(u, url, &req, 1, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_int_equal(udp_count(&s, &s.n_packets), 5);

    /* Cancelled: no callback; also while a name is being resolved. */
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    struct trk_udp_req *q = NULL;
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, &q), 0);
    run(loop, 0.02);
    trk_udp_cancel(q);
    trk_udp_cancel(NULL);
    (void)snprintf(url, sizeof(url), "udp://localhost:%u", s.port);
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, &q), 0);
    trk_udp_cancel(q);
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, &q), 0);
    run(loop, 0.3);
    assert_int_equal(r.calls, 0);
    trk_udp_cancel(q);
    /* And freed with a lookup perhaps still running. */
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    trk_udp_free(u);
    assert_int_equal(r.calls, 0);
    udp_stop(&s);

    /* The tracker's error message. */
    assert_int_equal(trk_udp_new(&u, loop, &cfg), 0);
    udp_start(&s, UDP_ERROR, 0);
    (void)snprintf(url, sizeof(url), "udp://127.0.0.1:%u", s.port);
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    assert_int_equal(trk_udp_announce(u, url, &req, 0, udp_cb, &r, NULL), 0);
    run(loop, GUARD);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.failure, "go away");
    trk_udp_free(u);
    udp_stop(&s);
    /* Give abandoned lookups time to end, so LeakSanitizer sees none. */
    usleep(200000);
    ev_loop_destroy(loop);
}

/* --- tracker_set -------------------------------------------------------- */

struct set_ctx {
    struct ev_loop *loop;
    int peer_calls;
    size_t n_peers, n_v6;
    uint16_t v6_port;
    uint16_t first_port;
    int done_calls;
    bool break_on_peers;
    uint64_t up, down, left; /* what get_stats reports */
};

static void
on_peers(void *arg, const struct sockaddr_storage *addrs, size_t n)
{
    struct set_ctx *c = arg;
    c->peer_calls++;
    c->n_peers += n;
    c->first_port = ntohs(((const struct sockaddr_in *)&addrs[0])->sin_port);
    assert_int_equal(addrs[0].ss_family, AF_INET);
    for (size_t i = 0; i < n; i++) {
        if (addrs[i].ss_family != AF_INET6)
            continue;
        const struct sockaddr_in6 *s6 =
            (const struct sockaddr_in6 *)&addrs[i];
        assert_true(IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr));
        c->n_v6++;
        c->v6_port = ntohs(s6->sin6_port);
    }
    if (c->break_on_peers)
        ev_break(c->loop, EVBREAK_ALL);
}

static void
get_stats(void *arg, uint64_t *up, uint64_t *down, uint64_t *left)
{
    const struct set_ctx *c = arg;
    *up = c->up;
    *down = c->down;
    *left = c->left;
}

static void
on_done(void *arg)
{
    struct set_ctx *c = arg;
    c->done_calls++;
    ev_break(c->loop, EVBREAK_ALL);
}

static const char *
jstr(struct json_object *arr, size_t i, const char *key)
{
    struct json_object *o = json_object_array_get_idx(arr, i);
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !v)
        return NULL;
    return json_object_get_string(v);
}

static int64_t
jint(struct json_object *arr, size_t i, const char *key)
{
    struct json_object *o = json_object_array_get_idx(arr, i);
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !v)
        return -1;
    return json_object_get_int64(v);
}

#define GOOD_BODY "d8:completei7e10:incompletei3e8:intervali1e" \
    "5:peers6:\x7f\x00\x00\x05\x1a\xe1" "15:warning message5:helloe"

static void
test_set_tiers(void **state)
{
    (void)state;
    struct ev_loop *loop = new_loop();
    struct trk_http *h;
    struct trk_udp *u;
    struct trk_udp_config ucfg = {.retrans_base = 0.05, .max_tries = 2};
    assert_int_equal(trk_http_new(&h, loop), 0);
    assert_int_equal(trk_udp_new(&u, loop, &ucfg), 0);

    struct udp_stub silent;
    udp_start(&silent, UDP_SILENT, 0);
    struct http_stub refusing, good;
    http_start(&refusing, HTTP_REPLY, 200,
               "d14:failure reason17:torrent not founde");
    http_start(&good, HTTP_REPLY, 200, GOOD_BODY);
    good.body_len = sizeof(GOOD_BODY) - 1; /* it holds NUL bytes */

    char u_silent[64], u_refusing[64], u_good[64];
    (void)snprintf(u_silent, sizeof(u_silent), "udp://127.0.0.1:%u",
                   silent.port);
    (void)snprintf(u_refusing, sizeof(u_refusing),
                   "http://127.0.0.1:%u/announce", refusing.port);
    (void)snprintf(u_good, sizeof(u_good), "http://127.0.0.1:%u/announce",
                   good.port);
    /* Tier 0: silent; tier 1: refusing, an unsupported scheme; tier 2:
     * good. */
    char *t0[] = {u_silent};
    char wss[] = "wss://x/announce";
    char *t1[] = {u_refusing, wss};
    char *t2[] = {u_good};
    struct meta_tier tiers[] = {{t0, 1}, {t1, 2}, {NULL, 0}, {t2, 1}};

    /* All-time counters of a torrent that ran before. */
    struct set_ctx ctx = {.loop = loop, .break_on_peers = true,
                          .up = 10, .down = 20, .left = 30};
    struct tracker_set_config cfg = {
        .loop = loop, .http = h, .udp = u, .port = 51413,
        .interval_floor = 0.2, .retry_min = 10, .http_timeout_ms = 2000,
    };
    memcpy(cfg.peer_id, "-TD0100-xxxxxxxxxxxx", 20);
    struct tracker_set_cbs cbs = {on_peers, get_stats, &ctx};
    uint8_t ih[20];
    memset(ih, 0x42, sizeof(ih));
    struct tracker_set *ts;
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 4, ih, &cbs), 0);
    assert_int_equal(tracker_set_count(ts), 4);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_NONE), -EINVAL);

    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    assert_true(tracker_set_busy(ts));
    run(loop, GUARD);
    assert_int_equal(ctx.peer_calls, 1);
    assert_int_equal(ctx.n_peers, 1);
    assert_int_equal(ctx.first_port, 6881);
    /* The silent one was tried twice (max_tries), the refusing one once. */
    assert_int_equal(udp_count(&silent, &silent.n_packets), 2);
    pthread_mutex_lock(&refusing.lock);
    assert_int_equal(refusing.n_reqs, 1);
    pthread_mutex_unlock(&refusing.lock);
    pthread_mutex_lock(&good.lock);
    assert_int_equal(good.n_reqs, 1);
    const char *q = good.last_req;
    assert_non_null(strstr(q, "info_hash=BBBBBBBBBBBBBBBBBBBB&"));
    assert_non_null(strstr(q, "&peer_id=-TD0100-xxxxxxxxxxxx&"));
    /* Counters since "started": none yet. */
    assert_non_null(strstr(q, "&port=51413&uploaded=0&downloaded=0"
                              "&left=30&compact=1&event=started"
                              "&numwant=200&key="));
    pthread_mutex_unlock(&good.lock);

    struct json_object *j = tracker_set_to_json(ts);
    assert_non_null(j);
    assert_int_equal(json_object_array_length(j), 4);
    assert_string_equal(jstr(j, 0, "url"), u_silent);
    assert_string_equal(jstr(j, 0, "status"), "error");
    assert_string_equal(jstr(j, 0, "last_error"), "tracker did not answer");
    assert_int_equal(jint(j, 0, "fails"), 1);
    /* Tier 1 is shuffled: find each. */
    size_t ir = strcmp(jstr(j, 1, "url"), u_refusing) == 0 ? 1 : 2;
    assert_string_equal(jstr(j, ir, "status"), "error");
    assert_string_equal(jstr(j, ir, "message"), "torrent not found");
    assert_string_equal(jstr(j, 3 - ir, "status"), "unsupported");
    assert_int_equal(jint(j, 1, "tier"), 1);
    assert_string_equal(jstr(j, 3, "url"), u_good);
    assert_int_equal(jint(j, 3, "tier"), 2);
    assert_string_equal(jstr(j, 3, "status"), "working");
    assert_int_equal(jint(j, 3, "seeders"), 7);
    assert_int_equal(jint(j, 3, "leechers"), 3);
    assert_int_equal(jint(j, 3, "downloaded"), -1);
    assert_int_equal(jint(j, 3, "peers"), 1);
    assert_int_equal(jint(j, 3, "interval"), 1);
    assert_string_equal(jstr(j, 3, "warning"), "hello");
    assert_null(jstr(j, 3, "last_error"));
    assert_true(jint(j, 3, "last_announce") > 1000000000);
    assert_true(jint(j, 3, "next_announce") >= jint(j, 3, "last_announce"));
    json_object_put(j);

    /* The interval (1 s) is honoured: the next announce comes by itself,
     * without an event; failed trackers wait out their back-off. */
    ctx.break_on_peers = true;
    run(loop, GUARD);
    assert_int_equal(ctx.peer_calls, 2);
    pthread_mutex_lock(&good.lock);
    assert_int_equal(good.n_reqs, 2);
    assert_null(strstr(good.last_req, "event="));
    pthread_mutex_unlock(&good.lock);
    assert_int_equal(udp_count(&silent, &silent.n_packets), 2);

    /* completed, with what moved since "started". */
    ctx.up = 110;
    ctx.down = 230;
    ctx.left = 0;
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_COMPLETED), 0);
    run(loop, GUARD);
    assert_int_equal(ctx.peer_calls, 3);
    pthread_mutex_lock(&good.lock);
    assert_non_null(strstr(good.last_req, "&uploaded=100&downloaded=210"
                                          "&left=0&compact=1"
                                          "&event=completed&"));
    pthread_mutex_unlock(&good.lock);

    /* Scrape (BEP 48 URL): the good tracker's stub answers its canned
     * announce body, which is no scrape: fine, the counts stay. */
    assert_int_equal(tracker_set_scrape(ts), 0);
    assert_int_equal(tracker_set_scrape(ts), -EBUSY);
    run(loop, 0.3);
    j = tracker_set_to_json(ts);
    assert_true(jint(j, 3, "last_scrape") > 0);
    assert_int_equal(jint(j, 3, "seeders"), 7);
    json_object_put(j);

    /* Stop: "stopped" to the trackers told "started" (the good one). */
    tracker_set_stop(ts, 2.0, on_done, &ctx);
    run(loop, GUARD);
    assert_int_equal(ctx.done_calls, 1);
    pthread_mutex_lock(&good.lock);
    assert_non_null(strstr(good.last_req, "&event=stopped&"));
    assert_non_null(strstr(good.last_req, "&numwant=0&"));
    assert_string_equal(good.all_events,
                        "event=started;none;event=completed;none;"
                        "event=stopped;");
    pthread_mutex_unlock(&good.lock);
    pthread_mutex_lock(&refusing.lock);
    assert_int_equal(refusing.n_reqs, 1);
    pthread_mutex_unlock(&refusing.lock);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_COMPLETED),
                     -EINVAL);

    tracker_set_free(ts);
    tracker_set_free(NULL);
    trk_udp_free(u);
    trk_http_free(h);
    ev_loop_destroy(loop);
    udp_stop(&silent);
    http_stop(&refusing);
    http_stop(&good);
}

static void
test_set_front_of_tier(void **state)
{
    (void)state;
    struct ev_loop *loop = new_loop();
    struct trk_http *h;
    struct trk_udp *u;
    struct trk_udp_config ucfg = {.retrans_base = 0.05, .max_tries = 1};
    assert_int_equal(trk_http_new(&h, loop), 0);
    assert_int_equal(trk_udp_new(&u, loop, &ucfg), 0);
    struct udp_stub silent, good;
    udp_start(&silent, UDP_SILENT, 0);
    udp_start(&good, UDP_REPLY, 0);
    char a[64], b[64];
    (void)snprintf(a, sizeof(a), "udp://127.0.0.1:%u", silent.port);
    (void)snprintf(b, sizeof(b), "udp://127.0.0.1:%u/announce", good.port);
    char *t0[] = {a, b};
    struct meta_tier tiers[] = {{t0, 2}};
    struct set_ctx ctx = {.loop = loop, .break_on_peers = true};
    struct tracker_set_config cfg = {.loop = loop, .http = h, .udp = u,
                                     .port = 1, .interval_floor = 0.2};
    struct tracker_set_cbs cbs = {on_peers, NULL, &ctx};
    uint8_t ih[20] = {0};
    struct tracker_set *ts;

    /* Whatever order the shuffle gave, the one that answers ends first. */
    for (int round = 0; round < 4; round++) {
        assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih, &cbs), 0);
        assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
        run(loop, GUARD);
        assert_int_equal(ctx.peer_calls, round + 1);
        assert_int_equal(ctx.n_peers, 2u * (size_t)(round + 1));
        struct json_object *j = tracker_set_to_json(ts);
        assert_string_equal(jstr(j, 0, "url"), b);
        assert_string_equal(jstr(j, 0, "status"), "working");
        assert_int_equal(jint(j, 0, "seeders"), 2);
        assert_int_equal(jint(j, 0, "leechers"), 1);
        json_object_put(j);
        /* UDP scrape of the front tracker. */
        assert_int_equal(tracker_set_scrape(ts), 0);
        run(loop, 0.3);
        j = tracker_set_to_json(ts);
        assert_int_equal(jint(j, 0, "seeders"), 11);
        assert_int_equal(jint(j, 0, "downloaded"), 22);
        assert_true(jint(j, 0, "last_scrape") > 0);
        json_object_put(j);
        /* Stop then free at once from done. */
        tracker_set_stop(ts, 1.0, on_done, &ctx);
        run(loop, GUARD);
        assert_int_equal(ctx.done_calls, round + 1);
        tracker_set_free(ts);
    }
    assert_int_equal(udp_count(&good, &good.n_announce), 8);

    /* Nothing to stop: done still comes, from the loop. */
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih, &cbs), 0);
    tracker_set_stop(ts, 1.0, on_done, &ctx);
    assert_int_equal(ctx.done_calls, 4);
    run(loop, GUARD);
    assert_int_equal(ctx.done_calls, 5);
    tracker_set_free(ts);

    /* Freed while announcing: nothing is called. */
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih, &cbs), 0);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    tracker_set_free(ts);
    run(loop, 0.2);
    assert_int_equal(ctx.peer_calls, 4);

    trk_udp_free(u);
    trk_http_free(h);
    ev_loop_destroy(loop);
    udp_stop(&silent);
    udp_stop(&good);
}

#define MIN_BODY "d8:intervali5e12:min intervali1e" \
    "5:peers6:\x7f\x00\x00\x05\x1a\xe1" \
    "6:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" \
    "\x00\x00\x00\x01\x1a\xe2" "e"
#define SCRAPE_BODY "d5:filesd20:BBBBBBBBBBBBBBBBBBBB" \
    "d8:completei9e10:downloadedi99e10:incompletei4eeee"

static void
test_set_min_interval(void **state)
{
    (void)state;
    struct ev_loop *loop = new_loop();
    struct trk_http *h;
    assert_int_equal(trk_http_new(&h, loop), 0);
    struct http_stub s;
    http_start(&s, HTTP_REPLY, 200, MIN_BODY);
    s.body_len = sizeof(MIN_BODY) - 1;
    s.scrape_body = SCRAPE_BODY;
    char a[64];
    (void)snprintf(a, sizeof(a), "http://127.0.0.1:%u/announce", s.port);
    char *t0[] = {a};
    struct meta_tier tiers[] = {{t0, 1}};
    struct set_ctx ctx = {.loop = loop, .break_on_peers = true};
    struct tracker_set_config cfg = {.loop = loop, .http = h, .port = 1,
                                     .interval_floor = 0.1};
    struct tracker_set_cbs cbs = {on_peers, NULL, &ctx};
    uint8_t ih[20];
    memset(ih, 'B', sizeof(ih));
    struct tracker_set *ts;
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih, &cbs), 0);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    run(loop, GUARD);
    assert_int_equal(ctx.peer_calls, 1);
    /* IPv4 and IPv6 (BEP 7) peers reach the torrent. */
    assert_int_equal(ctx.n_peers, 2);
    assert_int_equal(ctx.n_v6, 1);
    assert_int_equal(ctx.v6_port, 6882);

    /* Asked again at once: the min interval (1 s) holds it back. */
    ev_now_update(loop);
    double t0_ = ev_now(loop);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_NONE), 0);
    run(loop, GUARD);
    ev_now_update(loop);
    assert_int_equal(ctx.peer_calls, 2);
    assert_true(ev_now(loop) - t0_ >= 0.8);
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.n_reqs, 2);
    assert_null(strstr(s.last_req, "event="));
    pthread_mutex_unlock(&s.lock);

    /* Scrape: BEP 48 URL, the counts of our info-hash. */
    assert_int_equal(tracker_set_scrape(ts), 0);
    run(loop, 0.3);
    pthread_mutex_lock(&s.lock);
    assert_true(strncmp(s.last_req,
                        "GET /scrape?info_hash=BBBBBBBBBBBBBBBBBBBB ",
                        43) == 0);
    pthread_mutex_unlock(&s.lock);
    struct json_object *j = tracker_set_to_json(ts);
    assert_int_equal(jint(j, 0, "seeders"), 9);
    assert_int_equal(jint(j, 0, "leechers"), 4);
    assert_int_equal(jint(j, 0, "downloaded"), 99);
    assert_int_equal(jint(j, 0, "min_interval"), 1);
    assert_int_equal(jint(j, 0, "interval"), 5);
    json_object_put(j);

    /* Stopped: the status says so. */
    tracker_set_stop(ts, 1.0, on_done, &ctx);
    run(loop, GUARD);
    assert_int_equal(ctx.done_calls, 1);
    j = tracker_set_to_json(ts);
    assert_string_equal(jstr(j, 0, "status"), "stopped");
    assert_null(jstr(j, 0, "next_announce"));
    json_object_put(j);

    tracker_set_free(ts);
    trk_http_free(h);
    ev_loop_destroy(loop);
    http_stop(&s);
}

static void
test_set_all_fail(void **state)
{
    (void)state;
    struct ev_loop *loop = new_loop();
    struct trk_http *h;
    assert_int_equal(trk_http_new(&h, loop), 0);
    struct http_stub refusing;
    http_start(&refusing, HTTP_REPLY, 400, "d14:failure reason3:no!e");
    char a[64];
    (void)snprintf(a, sizeof(a), "http://127.0.0.1:%u/announce",
                   refusing.port);
    char b[] = "udp://127.0.0.1:9";
    char *t0[] = {a, b};
    struct meta_tier tiers[] = {{t0, 2}};
    struct set_ctx ctx = {.loop = loop};
    /* No UDP client: that tracker is "unsupported". */
    struct tracker_set_config cfg = {.loop = loop, .http = h, .port = 1,
                                     .retry_min = 0.3, .retry_max = 0.6};
    struct tracker_set_cbs cbs = {on_peers, NULL, &ctx};
    uint8_t ih[20] = {0};
    struct tracker_set *ts;
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih, &cbs), 0);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    /* Back-off 0.3, then 0.6: three tries in about 1 s. */
    run(loop, 1.1);
    assert_int_equal(ctx.peer_calls, 0);
    pthread_mutex_lock(&refusing.lock);
    assert_int_equal(refusing.n_reqs, 3);
    /* Every try is still "started": it never got through. */
    assert_string_equal(refusing.all_events,
                        "event=started;event=started;event=started;");
    pthread_mutex_unlock(&refusing.lock);
    struct json_object *j = tracker_set_to_json(ts);
    size_t i = strcmp(jstr(j, 0, "url"), a) == 0 ? 0 : 1;
    assert_string_equal(jstr(j, i, "status"), "error");
    /* The failure reason wins over the HTTP status. */
    assert_string_equal(jstr(j, i, "last_error"), "no!");
    assert_int_equal(jint(j, i, "fails"), 3);
    assert_true(jint(j, i, "next_announce") > 0);
    assert_string_equal(jstr(j, 1 - i, "status"), "unsupported");
    assert_string_equal(jstr(j, 1 - i, "last_error"),
                        "UDP trackers are disabled");
    json_object_put(j);
    /* Stop: nobody was told "started", so nothing is sent. */
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STOPPED), 0);
    run(loop, 0.2);
    pthread_mutex_lock(&refusing.lock);
    assert_int_equal(refusing.n_reqs, 3);
    pthread_mutex_unlock(&refusing.lock);
    tracker_set_free(ts);
    trk_http_free(h);
    ev_loop_destroy(loop);
    http_stop(&refusing);
}

/* The key of the last request (8 hex digits) into out[9]. */
static void
last_key(struct http_stub *s, char out[9])
{
    pthread_mutex_lock(&s->lock);
    const char *k = strstr(s->last_req, "&key=");
    assert_non_null(k);
    memcpy(out, k + 5, 8);
    out[8] = '\0';
    pthread_mutex_unlock(&s->lock);
}

static void
test_set_session(void **state)
{
    (void)state;
    struct ev_loop *loop = new_loop();
    struct trk_http *h;
    assert_int_equal(trk_http_new(&h, loop), 0);
    struct http_stub s;
    http_start(&s, HTTP_REPLY, 200, GOOD_BODY);
    s.body_len = sizeof(GOOD_BODY) - 1;
    s.delay_ms = 300;
    char a[64];
    (void)snprintf(a, sizeof(a), "http://127.0.0.1:%u/announce", s.port);
    char *t0[] = {a};
    struct meta_tier tiers[] = {{t0, 1}};
    struct set_ctx ctx = {.loop = loop, .break_on_peers = true,
                          .up = 1000, .down = 2000, .left = 500};
    struct tracker_set_config cfg = {.loop = loop, .http = h, .port = 1,
                                     .interval_floor = 30};
    struct tracker_set_cbs cbs = {on_peers, get_stats, &ctx};
    uint8_t ih[20], ih2[20];
    memset(ih, 'B', sizeof(ih));
    memset(ih2, 'C', sizeof(ih2));
    struct tracker_set *ts;
    char key1[9], key2[9], key3[9];

    /* The download ends while "started" (left=500) is unanswered:
     * "completed" follows it. */
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih, &cbs), 0);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    run(loop, 0.1);
    ctx.down = 2500;
    ctx.left = 0;
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_COMPLETED), 0);
    run(loop, GUARD);
    run(loop, GUARD);
    assert_int_equal(ctx.peer_calls, 2);
    pthread_mutex_lock(&s.lock);
    assert_string_equal(s.all_events, "event=started;event=completed;");
    assert_non_null(strstr(s.last_req, "&uploaded=0&downloaded=500"
                                       "&left=0&"));
    pthread_mutex_unlock(&s.lock);
    last_key(&s, key1);

    /* Stopped while a "started" is in flight (stopped, then started
     * again at once): the tracker may have counted it, so it is told
     * "stopped" too. */
    tracker_set_stop(ts, 2.0, on_done, &ctx);
    run(loop, GUARD);
    assert_int_equal(ctx.done_calls, 1);
    ctx.up = 1100;
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    run(loop, 0.1);
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.n_reqs, 4);
    /* A new announce session: counters from zero again. */
    assert_non_null(strstr(s.last_req, "&uploaded=0&downloaded=0&left=0&"));
    pthread_mutex_unlock(&s.lock);
    last_key(&s, key2);
    tracker_set_stop(ts, 2.0, on_done, &ctx);
    run(loop, GUARD);
    assert_int_equal(ctx.done_calls, 2);
    pthread_mutex_lock(&s.lock);
    assert_string_equal(s.all_events,
                        "event=started;event=completed;event=stopped;"
                        "event=started;event=stopped;");
    pthread_mutex_unlock(&s.lock);
    tracker_set_free(ts);

    /* The key: the same for the torrent through the process (a new set
     * too), another for another torrent. */
    assert_string_equal(key1, key2);
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih, &cbs), 0);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    run(loop, GUARD);
    last_key(&s, key3);
    assert_string_equal(key1, key3);
    tracker_set_free(ts);
    assert_int_equal(tracker_set_new(&ts, &cfg, tiers, 1, ih2, &cbs), 0);
    assert_int_equal(tracker_set_announce(ts, TRACKER_EVENT_STARTED), 0);
    run(loop, GUARD);
    last_key(&s, key3);
    assert_string_not_equal(key1, key3);
    tracker_set_free(ts);

    trk_http_free(h);
    ev_loop_destroy(loop);
    http_stop(&s);
}

int
main(void)
{
    /* Loopback only: never through a proxy from the environment. */
    static const char *const proxies[] = {
        "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
        "all_proxy", "ALL_PROXY",
    };
    for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++)
        unsetenv(proxies[i]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_get),
        cmocka_unit_test(test_http_errors),
        cmocka_unit_test(test_udp_announce),
        cmocka_unit_test(test_udp_ipv6),
        cmocka_unit_test(test_udp_retransmit),
        cmocka_unit_test(test_set_tiers),
        cmocka_unit_test(test_set_front_of_tier),
        cmocka_unit_test(test_set_min_interval),
        cmocka_unit_test(test_set_all_fail),
        cmocka_unit_test(test_set_session),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
