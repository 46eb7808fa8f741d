/* trk_udp — BEP 15 on the reactor.
 *
 * Name resolution is daemon/resolver's (its top comment says how a late
 * answer can never reach a freed request): a request that waits for a
 * name holds its lookup's handle and cancels it when it ends.  The
 * resolver is the caller's (trk_udp_config.resolver) or, without one,
 * trk_udp's own with TRK_UDP_RESOLVERS threads.
 */
#include "daemon/trk_udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/resolver.h"

#define TRK_UDP_RECV_MAX 65536
#define TRK_UDP_RESOLVERS 2     /* threads of trk_udp's own resolver */

enum req_kind { REQ_ANNOUNCE, REQ_SCRAPE };
enum req_state { RS_RESOLVING, RS_CONNECTING, RS_SENT };

struct trk_udp_req {
    struct trk_udp *u;          /* borrowed: the owner */
    struct trk_udp_req *prev, *next;
    enum req_kind kind;
    enum req_state state;
    struct tracker_announce_req ann;
    uint8_t (*hashes)[TRACKER_HASH_LEN]; /* owned (scrape) */
    size_t n_hashes;
    struct tracker_udp_url url;
    struct sockaddr_storage addr; /* the address in use */
    socklen_t addr_len;
    /* A name's next address to try when the first does not answer (the
     * first address of the other family, as resolved), or family 0. */
    struct sockaddr_storage alt;
    socklen_t alt_len;
    struct resolver_lookup *lk; /* while resolving, or NULL */
    uint32_t tid;
    unsigned tries, max_tries, connects;
    ev_timer timer;
    trk_udp_cb_t cb;
    void *arg;
};

struct conn_entry {
    struct sockaddr_storage addr;
    uint64_t conn_id;
    ev_tstamp expires;
};

struct trk_udp {
    struct ev_loop *loop;       /* borrowed */
    struct sockaddr_storage bind;
    socklen_t bind_len;         /* 0: any */
    double base, dns_timeout;
    unsigned max_tries;
    int fd4, fd6;               /* owned, -1 until first use */
    ev_io io4, io6;
    struct trk_udp_req *reqs;   /* owned */
    size_t n_reqs;
    struct resolver *res;       /* owned if own_res, else borrowed */
    bool own_res;
    struct conn_entry conns[TRK_UDP_CONN_CACHE];
    size_t n_conns;
    uint64_t dropped;
    uint8_t rbuf[TRK_UDP_RECV_MAX];
};

/* --- small helpers ------------------------------------------------------ */

static bool
addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static uint32_t
random_tid(void)
{
    uint32_t v;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1) {
        /* RAND_bytes does not fail on Linux once seeded; be safe. */
        static uint32_t fallback = 0x9e3779b9u;
        v = fallback += 0x6d2b79f5u;
    }
    return v ? v : 1; /* 0 means "nothing sent yet" */
}

/* --- requests ----------------------------------------------------------- */

static void
req_unlink_free(struct trk_udp_req *r)
{
    struct trk_udp *u = r->u;
    ev_timer_stop(u->loop, &r->timer);
    if (r->lk)
        resolver_cancel(u->res, r->lk);
    if (r->prev)
        r->prev->next = r->next;
    else
        u->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    u->n_reqs--;
    free(r->hashes);
    free(r);
}

static void
req_finish(struct trk_udp_req *r, int result,
           const struct tracker_udp_resp *resp, const char *error)
{
    trk_udp_cb_t cb = r->cb;
    void *arg = r->arg;
    req_unlink_free(r);
    cb(arg, result, resp, error);
}

static void
req_fail(struct trk_udp_req *r, int err, const char *what)
{
    char msg[160];
    if (what)
        (void)snprintf(msg, sizeof(msg), "%s", what);
    else
        (void)snprintf(msg, sizeof(msg), "cannot reach tracker: %s",
                       strerror(-err));
    req_finish(r, err, NULL, msg);
}

static struct conn_entry *
conn_find(struct trk_udp *u, const struct sockaddr_storage *a)
{
    ev_tstamp now = ev_now(u->loop);
    for (size_t i = 0; i < u->n_conns; i++) {
        if (u->conns[i].expires <= now) {
            u->conns[i] = u->conns[--u->n_conns];
            i--;
            continue;
        }
        if (addr_eq(&u->conns[i].addr, a))
            return &u->conns[i];
    }
    return NULL;
}

static void
conn_store(struct trk_udp *u, const struct sockaddr_storage *a, uint64_t id)
{
    struct conn_entry *e = conn_find(u, a);
    if (!e) {
        if (u->n_conns == TRK_UDP_CONN_CACHE) {
            size_t oldest = 0;
            for (size_t i = 1; i < u->n_conns; i++)
                if (u->conns[i].expires < u->conns[oldest].expires)
                    oldest = i;
            e = &u->conns[oldest];
        } else {
            e = &u->conns[u->n_conns++];
        }
        e->addr = *a;
    }
    e->conn_id = id;
    e->expires = ev_now(u->loop) + TRACKER_UDP_CONN_TTL;
}

static void recv_cb(struct ev_loop *loop, ev_io *w, int revents);

static int
get_socket(struct trk_udp *u, int family)
{
    int *fdp = family == AF_INET ? &u->fd4 : &u->fd6;
    ev_io *io = family == AF_INET ? &u->io4 : &u->io6;
    if (*fdp >= 0)
        return *fdp;
    if (u->bind_len && u->bind.ss_family != family)
        return -EAFNOSUPPORT;
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (family == AF_INET6) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (u->bind_len &&
        bind(fd, (const struct sockaddr *)&u->bind, u->bind_len) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    *fdp = fd;
    ev_io_init(io, recv_cb, fd, EV_READ);
    io->data = u;
    ev_io_start(u->loop, io);
    return fd;
}

static void
arm_timer(struct trk_udp_req *r, double after)
{
    ev_timer_stop(r->u->loop, &r->timer);
    ev_timer_set(&r->timer, after, 0.);
    ev_timer_start(r->u->loop, &r->timer);
}

static void req_send(struct trk_udp_req *r);

/* The address in use failed: move to the other one if there is one, else
 * finish r with err. */
static void
req_give_up(struct trk_udp_req *r, int err, const char *what)
{
    if (r->alt.ss_family == 0) {
        req_fail(r, err, what);
        return;
    }
    r->addr = r->alt;
    r->addr_len = r->alt_len;
    r->alt.ss_family = 0;
    r->state = RS_CONNECTING;
    r->tid = 0;
    r->tries = r->connects = 0;
    req_send(r);
}

/* Send the datagram for the current state (a fresh transaction id each
 * time) and arm the retransmission timer.  May finish r. */
static void
req_send(struct trk_udp_req *r)
{
    struct trk_udp *u = r->u;
    uint8_t pkt[16 + TRACKER_UDP_SCRAPE_MAX * TRACKER_HASH_LEN];
    size_t len;

    struct conn_entry *c = conn_find(u, &r->addr);
    enum req_state next = c ? RS_SENT : RS_CONNECTING;
    if (r->state != next || r->tid == 0) {
        /* A new phase: its own count of sends. */
        r->tries = 0;
        r->state = next;
        if (next == RS_CONNECTING && ++r->connects > r->max_tries) {
            req_give_up(r, -ETIMEDOUT, "tracker did not answer");
            return;
        }
    }
    if (r->tries >= r->max_tries) {
        req_give_up(r, -ETIMEDOUT, "tracker did not answer");
        return;
    }
    r->tid = random_tid();
    if (!c) {
        len = tracker_udp_connect_req(pkt, r->tid);
    } else if (r->kind == REQ_ANNOUNCE) {
        len = tracker_udp_announce_req(pkt, c->conn_id, r->tid, &r->ann);
    } else {
        len = tracker_udp_scrape_req(pkt, sizeof(pkt), c->conn_id, r->tid,
                                     (const uint8_t (*)[TRACKER_HASH_LEN])
                                         r->hashes,
                                     r->n_hashes);
    }
    int fd = get_socket(u, r->addr.ss_family);
    if (fd < 0) {
        req_give_up(r, fd, NULL);
        return;
    }
    ssize_t n = sendto(fd, pkt, len, MSG_NOSIGNAL,
                       (const struct sockaddr *)&r->addr, r->addr_len);
    /* A send lost to a full buffer is like a lost datagram: the timer
     * sends again.  No route or no such address will not get better. */
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
        errno != ENOBUFS && errno != EINTR && errno != ECONNREFUSED) {
        req_give_up(r, -errno, NULL);
        return;
    }
    arm_timer(r, u->base * (double)(1u << r->tries));
    r->tries++;
}

static void
req_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct trk_udp_req *r = w->data;
    (void)loop;
    (void)revents;
    if (r->state == RS_RESOLVING) {
        req_fail(r, -ETIMEDOUT, "name resolution timed out");
        return;
    }
    req_send(r);
}

/* Take the first usable address of the lookup, then start. */
static void
req_resolved(struct trk_udp_req *r, int gai, const struct addrinfo *ai)
{
    char msg[TRACKER_UDP_HOST_MAX + 128];
    if (gai != 0) {
        (void)snprintf(msg, sizeof(msg), "cannot resolve '%s': %s",
                       r->url.host, gai_strerror(gai));
        req_finish(r, -EHOSTUNREACH, NULL, msg);
        return;
    }
    /* The first address, and the first of the other family as a second
     * chance ("localhost" is often ::1 first, with nobody there). */
    r->addr_len = 0;
    r->alt.ss_family = 0;
    for (; ai; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(r->addr))
            continue;
        if (r->u->bind_len && r->u->bind.ss_family != ai->ai_family)
            continue;
        if (r->addr_len == 0) {
            memcpy(&r->addr, ai->ai_addr, ai->ai_addrlen);
            r->addr_len = ai->ai_addrlen;
        } else if (ai->ai_family != r->addr.ss_family) {
            memcpy(&r->alt, ai->ai_addr, ai->ai_addrlen);
            r->alt_len = ai->ai_addrlen;
            break;
        }
    }
    if (r->addr_len == 0) {
        (void)snprintf(msg, sizeof(msg), "'%s' has no usable address",
                       r->url.host);
        req_finish(r, -EHOSTUNREACH, NULL, msg);
        return;
    }
    r->state = RS_CONNECTING;
    r->tid = 0;
    r->tries = 0;
    req_send(r);
}

static void
resolved_cb(void *arg, int gai, const struct addrinfo *res)
{
    struct trk_udp_req *r = arg;
    r->lk = NULL;
    req_resolved(r, gai, res);
}

static int
start_resolve(struct trk_udp *u, struct trk_udp_req *r)
{
    char service[8];
    (void)snprintf(service, sizeof(service), "%u", (unsigned)r->url.port);
    return resolver_lookup(u->res, r->url.host, service,
                           u->bind_len ? u->bind.ss_family : AF_UNSPEC,
                           SOCK_DGRAM, AI_NUMERICSERV, 0., resolved_cb, r,
                           &r->lk);
}

static int
req_start(struct trk_udp *u, struct trk_udp_req *r, const char *url)
{
    int err = tracker_udp_url_parse(&r->url, url);
    if (err < 0)
        return err;
    if (r->max_tries == 0)
        r->max_tries = u->max_tries;
    if (r->max_tries > TRK_UDP_TRIES_LIMIT)
        r->max_tries = TRK_UDP_TRIES_LIMIT;
    ev_timer_init(&r->timer, req_timeout_cb, 0., 0.);
    r->timer.data = r;

    /* Numeric hosts need no lookup. */
    struct sockaddr_in *s4 = (struct sockaddr_in *)&r->addr;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&r->addr;
    bool numeric = true;
    if (!r->url.ipv6_literal &&
        inet_pton(AF_INET, r->url.host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(r->url.port);
        r->addr_len = sizeof(*s4);
    } else if (inet_pton(AF_INET6, r->url.host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(r->url.port);
        r->addr_len = sizeof(*s6);
    } else {
        numeric = false;
    }
    if (numeric && u->bind_len && u->bind.ss_family != r->addr.ss_family)
        return -EAFNOSUPPORT;
    if (numeric) {
        int fd = get_socket(u, r->addr.ss_family);
        if (fd < 0)
            return fd;
    } else {
        int e = start_resolve(u, r);
        if (e < 0)
            return e;
    }

    r->u = u;
    r->next = u->reqs;
    if (u->reqs)
        u->reqs->prev = r;
    u->reqs = r;
    u->n_reqs++;
    if (numeric) {
        /* Send from the loop, not from here: a failure would call the
         * callback, and the contract is "never called on failure". */
        r->state = RS_CONNECTING;
        arm_timer(r, 0.);
    } else {
        r->state = RS_RESOLVING;
        arm_timer(r, u->dns_timeout);
    }
    return 0;
}

int
trk_udp_announce(struct trk_udp *u, const char *url,
                 const struct tracker_announce_req *req, unsigned max_tries,
                 trk_udp_cb_t cb, void *arg, struct trk_udp_req **ret_req)
{
    struct trk_udp_req *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->kind = REQ_ANNOUNCE;
    r->ann = *req;
    r->ann.tracker_id = NULL;
    r->ann.tracker_id_len = 0;
    r->max_tries = max_tries;
    r->cb = cb;
    r->arg = arg;
    r->u = u;
    int e = req_start(u, r, url);
    if (e < 0) {
        free(r);
        return e;
    }
    if (ret_req)
        *ret_req = r;
    return 0;
}

int
trk_udp_scrape(struct trk_udp *u, const char *url,
               const uint8_t (*hashes)[TRACKER_HASH_LEN], size_t n,
               unsigned max_tries, trk_udp_cb_t cb, void *arg,
               struct trk_udp_req **ret_req)
{
    if (n == 0 || n > TRACKER_UDP_SCRAPE_MAX)
        return -EINVAL;
    struct trk_udp_req *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->hashes = malloc(n * TRACKER_HASH_LEN);
    if (!r->hashes) {
        free(r);
        return -ENOMEM;
    }
    memcpy(r->hashes, hashes, n * TRACKER_HASH_LEN);
    r->n_hashes = n;
    r->kind = REQ_SCRAPE;
    r->max_tries = max_tries;
    r->cb = cb;
    r->arg = arg;
    r->u = u;
    int e = req_start(u, r, url);
    if (e < 0) {
        free(r->hashes);
        free(r);
        return e;
    }
    if (ret_req)
        *ret_req = r;
    return 0;
}

void
trk_udp_cancel(struct trk_udp_req *r)
{
    if (r)
        req_unlink_free(r);
}

size_t
trk_udp_pending(const struct trk_udp *u)
{
    return u->n_reqs;
}

uint64_t
trk_udp_dropped(const struct trk_udp *u)
{
    return u->dropped;
}

/* --- receiving ---------------------------------------------------------- */

static void
handle_datagram(struct trk_udp *u, int family, const uint8_t *p, size_t n,
                const struct sockaddr_storage *from)
{
    uint32_t action, tid;
    if (tracker_udp_peek(p, n, &action, &tid) < 0) {
        u->dropped++;
        return;
    }
    struct trk_udp_req *r = u->reqs;
    while (r && !(r->state != RS_RESOLVING && r->tid == tid &&
                  r->tries > 0 && addr_eq(&r->addr, from)))
        r = r->next;
    if (!r) {
        u->dropped++;
        return;
    }
    uint32_t expect = r->state == RS_CONNECTING ? TRACKER_UDP_CONNECT
                      : r->kind == REQ_ANNOUNCE ? TRACKER_UDP_ANNOUNCE
                                                : TRACKER_UDP_SCRAPE;
    struct tracker_udp_resp resp;
    size_t off = 0;
    int e = tracker_udp_parse(&resp, p, n, expect, tid, family,
                              (const uint8_t (*)[TRACKER_HASH_LEN])r->hashes,
                              r->n_hashes, NULL, &off);
    if (e < 0) {
        char msg[160];
        u->dropped++;
        (void)snprintf(msg, sizeof(msg), "bad response from tracker: %s "
                       "at byte %zu", tracker_strerror(e), off);
        req_finish(r, -EBADMSG, NULL, msg);
        return;
    }
    if (resp.action == TRACKER_UDP_CONNECT) {
        conn_store(u, &r->addr, resp.connection_id);
        tracker_udp_resp_release(&resp);
        req_send(r);
        return;
    }
    if (resp.action == TRACKER_UDP_ERROR && r->kind == REQ_SCRAPE) {
        resp.scrape.failure = resp.announce.failure;
        resp.announce.failure = NULL;
    }
    req_finish(r, 0, &resp, "");
    tracker_udp_resp_release(&resp);
}

static void
recv_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct trk_udp *u = w->data;
    int family = w == &u->io4 ? AF_INET : AF_INET6;
    (void)loop;
    (void)revents;
    for (int i = 0; i < TRK_UDP_RECV_BATCH; i++) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        memset(&from, 0, sizeof(from));
        ssize_t n = recvfrom(w->fd, u->rbuf, sizeof(u->rbuf), MSG_DONTWAIT,
                             (struct sockaddr *)&from, &fl);
        if (n < 0)
            return; /* EAGAIN, or an ICMP error: the timer sends again */
        handle_datagram(u, family, u->rbuf, (size_t)n, &from);
    }
}

/* --- lifecycle ---------------------------------------------------------- */

int
trk_udp_new(struct trk_udp **ret, struct ev_loop *loop,
            const struct trk_udp_config *cfg)
{
    struct trk_udp *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->loop = loop;
    u->fd4 = u->fd6 = -1;
    u->base = cfg && cfg->retrans_base > 0 ? cfg->retrans_base
                                           : TRK_UDP_RETRANS_BASE;
    u->dns_timeout = cfg && cfg->dns_timeout > 0 ? cfg->dns_timeout
                                                 : TRK_UDP_DNS_TIMEOUT;
    u->max_tries = cfg && cfg->max_tries ? cfg->max_tries
                                         : TRK_UDP_MAX_TRIES;
    if (u->max_tries > TRK_UDP_TRIES_LIMIT)
        u->max_tries = TRK_UDP_TRIES_LIMIT;
    if (cfg && cfg->bind_addr) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&u->bind;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&u->bind;
        if (inet_pton(AF_INET, cfg->bind_addr, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            u->bind_len = sizeof(*s4);
        } else if (inet_pton(AF_INET6, cfg->bind_addr, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            u->bind_len = sizeof(*s6);
        } else {
            free(u);
            return -EINVAL;
        }
    }
    if (cfg && cfg->resolver) {
        u->res = cfg->resolver;
    } else {
        int r = resolver_new(&u->res, loop, TRK_UDP_RESOLVERS);
        if (r < 0) {
            free(u);
            return r;
        }
        u->own_res = true;
    }
    *ret = u;
    return 0;
}

void
trk_udp_free(struct trk_udp *u)
{
    if (!u)
        return;
    while (u->reqs)
        req_unlink_free(u->reqs);
    /* Every lookup went with its request; the resolver's threads finish
     * theirs on their own. */
    if (u->own_res)
        resolver_free(u->res);
    if (u->fd4 >= 0) {
        ev_io_stop(u->loop, &u->io4);
        close(u->fd4);
    }
    if (u->fd6 >= 0) {
        ev_io_stop(u->loop, &u->io6);
        close(u->fd6);
    }
    free(u);
}
