/* lsd — BEP 14 Local Service Discovery in the reactor (see lsd.h).
 *
 * Every table here is a fixed array searched linearly: they are small
 * (LSD_SOURCES, LSD_FOUND_HASHES, LSD_RECENT_MAX entries) and bounded, so
 * the work per tick and per datagram is bounded too.
 */
#include "daemon/lsd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/lsd.h"
#include "daemon/events.h"
#include "daemon/listen.h"
#include "daemon/rpc.h"
#include "daemon/session_int.h"

struct lsd_recent {
    uint8_t hash[LSD_HASH_LEN];
    ev_tstamp at; /* 0 = free */
};

struct lsd_source {
    struct in_addr addr;
    double tokens;
    ev_tstamp at; /* last seen; 0 = free */
};

struct lsd_found_peer {
    struct sockaddr_in addr;
    int64_t seen_at; /* seconds since the epoch */
};

struct lsd_found {
    uint8_t hash[LSD_HASH_LEN];
    ev_tstamp touched; /* 0 = free */
    size_t n;
    struct lsd_found_peer peers[LSD_PEERS_PER_HASH];
};

struct lsd {
    struct session *s;     /* borrowed: owns us */
    struct ev_loop *loop;  /* borrowed */
    int fd;
    ev_io io;
    ev_timer tick;
    struct events_sub *sub; /* torrent.added / torrent.state */
    struct sockaddr_in group;
    uint16_t port; /* announced; 0 = we do not announce */
    char cookie[17];
    lsd_peer_t on_peer;
    void *on_peer_arg;

    /* The schedule. */
    uint8_t soon[LSD_SOON_MAX][LSD_HASH_LEN];
    size_t n_soon;
    bool round_active;
    size_t cursor;
    ev_tstamp next_round;
    struct lsd_recent recent[LSD_RECENT_MAX];
    size_t recent_next;

    struct lsd_source src[LSD_SOURCES];
    struct lsd_source all; /* every source together (addr unused) */
    struct lsd_found found[LSD_FOUND_HASHES];

    uint64_t announces_sent, hashes_announced, send_errors;
    uint64_t messages_in, messages_own, messages_bad, messages_dropped;
};

/* --- sending ------------------------------------------------------------- */

static bool
recently_sent(const struct lsd *l, const uint8_t *hash, ev_tstamp now)
{
    for (size_t i = 0; i < LSD_RECENT_MAX; i++)
        if (l->recent[i].at > 0 && now - l->recent[i].at < LSD_INTERVAL_S &&
            memcmp(l->recent[i].hash, hash, LSD_HASH_LEN) == 0)
            return true;
    return false;
}

static void
remember_sent(struct lsd *l, const uint8_t *hash, ev_tstamp now)
{
    struct lsd_recent *r = &l->recent[l->recent_next];
    l->recent_next = (l->recent_next + 1) % LSD_RECENT_MAX;
    memcpy(r->hash, hash, LSD_HASH_LEN);
    r->at = now;
}

/* Send one message with hashes[0..n), n <= LSD_MAX_HASHES. */
static void
send_batch(struct lsd *l, const uint8_t (*hashes)[LSD_HASH_LEN], size_t n)
{
    ev_tstamp now = ev_now(l->loop);
    struct buf b;
    if (n == 0)
        return;
    buf_init(&b, LSD_MAX_DATAGRAM);
    int r = lsd_build(&b, false, l->port, hashes, n, l->cookie);
    if (r == 0 && sendto(l->fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL,
                         (const struct sockaddr *)&l->group,
                         sizeof(l->group)) < 0)
        r = -errno;
    buf_release(&b);
    if (r < 0) {
        /* Lossy by design: try again at the next round. */
        l->send_errors++;
        log_debug("lsd: cannot send an announce: %s", strerror(-r));
        return;
    }
    l->announces_sent++;
    l->hashes_announced += n;
    for (size_t i = 0; i < n; i++)
        remember_sent(l, hashes[i], now);
    log_debug("lsd: announced %zu info-hash(es) on port %u", n,
              (unsigned)l->port);
}

/* The torrents that were added or started since the last tick. */
static void
flush_soon(struct lsd *l, ev_tstamp now)
{
    uint8_t batch[LSD_MAX_HASHES][LSD_HASH_LEN];
    size_t n = 0;
    for (size_t i = 0; i < l->n_soon; i++) {
        if (!session_lsd_wants(l->s, l->soon[i]) ||
            recently_sent(l, l->soon[i], now))
            continue;
        memcpy(batch[n++], l->soon[i], LSD_HASH_LEN);
        if (n == LSD_MAX_HASHES) {
            send_batch(l, batch, n);
            n = 0;
        }
    }
    send_batch(l, batch, n);
    l->n_soon = 0;
}

/* A bounded step of the round over every torrent. */
static void
round_step(struct lsd *l, ev_tstamp now)
{
    if (!l->round_active) {
        if (now < l->next_round)
            return;
        l->round_active = true;
        l->cursor = 0;
    }
    for (int m = 0; m < LSD_ROUND_MSGS && l->round_active; m++) {
        uint8_t got[LSD_MAX_HASHES][LSD_HASH_LEN];
        uint8_t batch[LSD_MAX_HASHES][LSD_HASH_LEN];
        bool more = true;
        size_t k = session_lsd_hashes(l->s, &l->cursor, LSD_SCAN_BUDGET, got,
                                      LSD_MAX_HASHES, &more);
        size_t n = 0;
        for (size_t i = 0; i < k; i++)
            if (!recently_sent(l, got[i], now))
                memcpy(batch[n++], got[i], LSD_HASH_LEN);
        send_batch(l, batch, n);
        if (!more) {
            l->round_active = false;
            l->next_round = now + LSD_INTERVAL_S;
        }
    }
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct lsd *l = w->data;
    if (l->port == 0 || l->s->stopping)
        return;
    ev_tstamp now = ev_now(l->loop);
    flush_soon(l, now);
    round_step(l, now);
}

/* torrent.added and torrent.state: announce it at the next tick. */
static void
on_event(void *arg, struct json_object *ev)
{
    struct lsd *l = arg;
    struct json_object *v = NULL;
    uint8_t hash[LSD_HASH_LEN];
    if (!json_object_object_get_ex(ev, "info_hash", &v) ||
        !json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) != 2 * LSD_HASH_LEN ||
        hex_decode(hash, json_object_get_string(v), LSD_HASH_LEN) < 0)
        return;
    for (size_t i = 0; i < l->n_soon; i++)
        if (memcmp(l->soon[i], hash, LSD_HASH_LEN) == 0)
            return;
    /* Full: the next round announces it. */
    if (l->n_soon < LSD_SOON_MAX)
        memcpy(l->soon[l->n_soon++], hash, LSD_HASH_LEN);
}

/* --- receiving ----------------------------------------------------------- */

/* Refill a bucket; take a token when it has one. */
static bool
bucket_take(struct lsd_source *b, double burst, double rate, ev_tstamp now)
{
    b->tokens += (now - b->at) * rate;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at = now;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

/* Take a token from addr's bucket and from the one of all sources; false
 * when either has none. */
static bool
source_allow(struct lsd *l, struct in_addr addr, ev_tstamp now)
{
    struct lsd_source *slot = NULL, *oldest = &l->src[0];
    for (size_t i = 0; i < LSD_SOURCES; i++) {
        struct lsd_source *x = &l->src[i];
        if (x->at > 0 && x->addr.s_addr == addr.s_addr) {
            slot = x;
            break;
        }
        if (x->at < oldest->at)
            oldest = x;
    }
    if (!slot) {
        slot = oldest;
        slot->addr = addr;
        slot->tokens = LSD_SRC_BURST;
        slot->at = now;
    }
    return bucket_take(slot, LSD_SRC_BURST, LSD_SRC_RATE, now) &&
           bucket_take(&l->all, LSD_ALL_BURST, LSD_ALL_RATE, now);
}

static void
remember_peer(struct lsd *l, const uint8_t *hash,
              const struct sockaddr_in *addr, ev_tstamp now)
{
    struct lsd_found *f = NULL, *oldest = &l->found[0];
    for (size_t i = 0; i < LSD_FOUND_HASHES; i++) {
        struct lsd_found *x = &l->found[i];
        if (x->touched > 0 && memcmp(x->hash, hash, LSD_HASH_LEN) == 0) {
            f = x;
            break;
        }
        if (x->touched < oldest->touched)
            oldest = x;
    }
    if (!f) {
        f = oldest;
        memset(f, 0, sizeof(*f));
        memcpy(f->hash, hash, LSD_HASH_LEN);
    }
    f->touched = now;
    int64_t wall = session_now_s();
    size_t i;
    for (i = 0; i < f->n; i++)
        if (f->peers[i].addr.sin_addr.s_addr == addr->sin_addr.s_addr &&
            f->peers[i].addr.sin_port == addr->sin_port)
            break;
    if (i == f->n) {
        if (f->n == LSD_PEERS_PER_HASH) {
            /* Forget the one seen longest ago. */
            i = 0;
            for (size_t k = 1; k < f->n; k++)
                if (f->peers[k].seen_at < f->peers[i].seen_at)
                    i = k;
        } else {
            f->n++;
        }
        f->peers[i].addr = *addr;
    }
    f->peers[i].seen_at = wall;
}

static void
handle(struct lsd *l, const uint8_t *p, size_t n,
       const struct sockaddr_in *from, ev_tstamp now)
{
    struct lsd_msg m;
    size_t off = 0;
    char a[INET_ADDRSTRLEN];
    int r = lsd_parse(&m, p, n, NULL, &off);
    if (r < 0) {
        l->messages_bad++;
        inet_ntop(AF_INET, &from->sin_addr, a, sizeof(a));
        log_debug("lsd: bad message from %s: %s at byte %zu", a,
                  lsd_strerror(r), off);
        return;
    }
    if (m.has_cookie && strcmp(m.cookie, l->cookie) == 0) {
        l->messages_own++;
        return;
    }
    l->messages_in++;
    struct sockaddr_in peer = *from;
    peer.sin_port = htons(m.port);
    for (size_t i = 0; i < m.n_hashes; i++) {
        if (!session_lsd_wants(l->s, m.hashes[i]))
            continue;
        remember_peer(l, m.hashes[i], &peer, now);
        if (l->on_peer)
            l->on_peer(l->on_peer_arg, m.hashes[i],
                       (const struct sockaddr *)&peer, sizeof(peer));
    }
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct lsd *l = w->data;
    uint8_t dgram[LSD_MAX_DATAGRAM + 1];
    ev_tstamp now = ev_now(l->loop);
    for (int i = 0; i < LSD_RECV_BATCH; i++) {
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(l->fd, dgram, sizeof(dgram), MSG_DONTWAIT,
                             (struct sockaddr *)&from, &flen);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_debug("lsd: cannot receive: %s", strerror(errno));
            return;
        }
        if (flen < sizeof(from) || from.sin_family != AF_INET)
            continue;
        if (!source_allow(l, from.sin_addr, now)) {
            l->messages_dropped++;
            continue;
        }
        /* A datagram longer than the limit arrives cut at limit + 1
         * bytes: the parser refuses it as too large. */
        handle(l, dgram, (size_t)n, &from, now);
    }
}

/* --- life ---------------------------------------------------------------- */

static int
open_socket(struct lsd *l, struct in_addr ifaddr)
{
    int one = 1, zero = 0, ttl = 1;
    unsigned char loop_on = 1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct ip_mreqn mr;
    memset(&mr, 0, sizeof(mr));
    mr.imr_multiaddr = l->group.sin_addr;
    mr.imr_address = ifaddr;
    const char *what = "SO_REUSEADDR";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    what = "SO_REUSEPORT";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    /* Bound to the group: only datagrams sent to it arrive here. */
    what = "bind";
    if (bind(fd, (const struct sockaddr *)&l->group, sizeof(l->group)) < 0)
        goto fail;
    what = "IP_ADD_MEMBERSHIP";
    if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
        goto fail;
    what = "IP_MULTICAST_ALL";
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof(zero)) < 0)
        goto fail;
    what = "IP_MULTICAST_IF";
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof(mr)) < 0)
        goto fail;
    what = "IP_MULTICAST_TTL";
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)) < 0)
        goto fail;
    what = "IP_MULTICAST_LOOP";
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop_on,
                   sizeof(loop_on)) < 0)
        goto fail;
    l->fd = fd;
    return 0;
fail:;
    int r = -errno;
    log_warn_errno(r, "lsd: %s", what);
    (void)close(fd);
    return r;
}

int
lsd_new(struct lsd **ret, struct session *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct in_addr ifaddr = {.s_addr = htonl(INADDR_ANY)};
    uint8_t rnd[8];
    int r;

    if (listen_parse_addr(s->cfg.listen, &ss, &len) < 0 ||
        ss.ss_family != AF_INET) {
        log_warn("local service discovery needs a numeric IPv4 listen "
                 "address, not '%s'",
                 s->cfg.listen);
        return -EAFNOSUPPORT;
    }
    struct lsd *l = calloc(1, sizeof(*l));
    if (!l)
        return log_warn_errno(-ENOMEM, "cannot start local service discovery");
    l->s = s;
    l->loop = s->loop;
    l->fd = -1;
    l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    ifaddr = ((struct sockaddr_in *)&ss)->sin_addr;
    l->group.sin_family = AF_INET;
    l->group.sin_port = htons(LSD_PORT);
    (void)inet_pton(AF_INET, LSD_GROUP4, &l->group.sin_addr);
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        r = log_warn_errno(-errno, "cannot start local service discovery");
        goto fail;
    }
    hex_encode(l->cookie, rnd, sizeof(rnd));

    r = open_socket(l, ifaddr);
    if (r < 0) {
        log_warn_errno(r, "cannot join %s:%d for local service discovery",
                       LSD_GROUP4, LSD_PORT);
        goto fail;
    }
    static const char *const types[] = {"torrent.added", "torrent.state",
                                        NULL};
    r = events_subscribe(session_events(s), types, 0, on_event, l, &l->sub);
    if (r < 0) {
        log_warn_errno(r, "cannot start local service discovery");
        goto fail;
    }
    ev_io_init(&l->io, io_cb, l->fd, EV_READ);
    l->io.data = l;
    ev_io_start(l->loop, &l->io);
    ev_timer_init(&l->tick, tick_cb, LSD_TICK_S, LSD_TICK_S);
    l->tick.data = l;
    ev_timer_start(l->loop, &l->tick);
    l->next_round = ev_now(l->loop) + LSD_FIRST_ROUND_S;
    l->all.tokens = LSD_ALL_BURST;
    l->all.at = ev_now(l->loop);
    if (l->port == 0)
        log_notice("local service discovery: listening only; the peer "
                   "port is the kernel's pick (listen port 0), so nothing "
                   "is announced");
    else
        log_info("local service discovery on %s:%d, announcing port %u",
                 LSD_GROUP4, LSD_PORT, (unsigned)l->port);
    *ret = l;
    return 0;
fail:
    lsd_free(l);
    return r;
}

void
lsd_free(struct lsd *l)
{
    if (!l)
        return;
    if (l->sub)
        events_unsubscribe(l->sub);
    if (l->fd >= 0) {
        ev_io_stop(l->loop, &l->io);
        (void)close(l->fd);
    }
    ev_timer_stop(l->loop, &l->tick);
    free(l);
}

void
lsd_set_peer_cb(struct lsd *l, lsd_peer_t cb, void *arg)
{
    if (!l)
        return;
    l->on_peer = cb;
    l->on_peer_arg = arg;
}

/* --- lsd.status ---------------------------------------------------------- */

static void
add_u64(struct json_object *o, const char *k, uint64_t v)
{
    json_object_object_add(o, k, json_object_new_uint64(v));
}

struct json_object *
lsd_status_json(const struct lsd *l)
{
    struct json_object *o = json_object_new_object();
    struct json_object *peers = json_object_new_array();
    if (!o || !peers) {
        json_object_put(o);
        json_object_put(peers);
        return NULL;
    }
    json_object_object_add(o, "enabled", json_object_new_boolean(l != NULL));
    add_u64(o, "port", l ? l->port : 0);
    add_u64(o, "announces_sent", l ? l->announces_sent : 0);
    add_u64(o, "hashes_announced", l ? l->hashes_announced : 0);
    add_u64(o, "messages_in", l ? l->messages_in : 0);
    add_u64(o, "messages_own", l ? l->messages_own : 0);
    add_u64(o, "messages_bad", l ? l->messages_bad : 0);
    add_u64(o, "messages_dropped", l ? l->messages_dropped : 0);
    add_u64(o, "send_errors", l ? l->send_errors : 0);
    for (size_t i = 0; l && i < LSD_FOUND_HASHES; i++) {
        const struct lsd_found *f = &l->found[i];
        if (f->touched <= 0)
            continue;
        char hex[2 * LSD_HASH_LEN + 1];
        hex_encode(hex, f->hash, LSD_HASH_LEN);
        for (size_t k = 0; k < f->n; k++) {
            char a[64];
            listen_format_addr((const struct sockaddr *)&f->peers[k].addr, a,
                               sizeof(a));
            struct json_object *p = json_object_new_object();
            if (!p)
                continue;
            json_object_object_add(p, "info_hash", json_object_new_string(hex));
            json_object_object_add(p, "address", json_object_new_string(a));
            json_object_object_add(p, "seen_at",
                                   json_object_new_int64(f->peers[k].seen_at));
            json_object_array_add(peers, p);
        }
    }
    json_object_object_add(o, "peers", peers);
    return o;
}

void
lsd_m_status(struct session *s, struct rpc_call *call,
             struct json_object *params)
{
    (void)params;
    struct json_object *o = lsd_status_json(s->lsd);
    if (!o) {
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    rpc_call_reply(call, o);
}
