/* trksrv — the built-in tracker (contract in trksrv.h).
 *
 * The store is a chained hash table of swarms keyed by info-hash, with a
 * keyed mix of the hash so that chosen info-hashes cannot pile up in one
 * chain.  Each swarm holds its peers in an array (removal by swapping in
 * the last one); an announce scans its swarm once, which is bounded by
 * TRKSRV_MAX_PEERS_PER_HASH.  Samples are a partial Fisher-Yates shuffle
 * over the indices of the eligible peers.
 *
 * The servers follow daemon/control.c: a connection is never freed inside
 * its own callbacks but marked and freed in an ev_prepare pass.
 */
#include "daemon/trksrv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>

#include "common/be.h"
#include "common/buf.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/listen.h"

#define STORE_BUCKETS_MIN 1024
#define ALLOWLIST_FILE_MAX ((size_t)TRKSRV_ALLOWLIST_MAX * 48)
#define HTTP_OUT_MAX (64u << 10)
#define UDP_PACKET_MAX 2048
#define UDP_OUT_MAX (TRKSERVE_UDP_ANNOUNCE_HEAD_LEN + TRKSRV_NUMWANT_MAX * 18)
#define MIN_INTERVAL_DIVISOR 2
/* After an answer: how long, and how many bytes, we read and discard what
 * the client still sends before closing, so that closing with unread
 * input does not reset the connection under the answer (a "lingering
 * close"). */
#define STATS_S 300.0 /* at most one info line with the counters per */
#define LINGER_S 2.0
#define LINGER_MAX (64u << 10)

/* ---- the store ------------------------------------------------------------ */

struct swarm_peer {
    double last_seen;
    uint8_t family;
    bool seed;
    uint16_t port;
    uint8_t addr[16];
    uint8_t id[TRACKER_PEER_ID_LEN];
};

struct swarm {
    struct swarm *next; /* hash chain */
    uint8_t hash[TRACKER_HASH_LEN];
    struct swarm_peer *peers; /* owned */
    uint32_t n, cap;
    uint32_t seeds;
    uint64_t downloaded;
};

struct trksrv_store {
    struct swarm **buckets; /* owned */
    size_t n_buckets;       /* a power of two */
    size_t n_swarms, n_peers;
    size_t max_total, max_per_hash;
    uint64_t key[2];        /* for the bucket hash */
    uint64_t rng;           /* xorshift64* state */
    size_t sweep;           /* the next bucket the sweep looks at */
    struct tracker_peer sample[TRKSRV_NUMWANT_MAX];
    uint32_t idx[TRKSRV_MAX_PEERS_PER_HASH];
};

static uint64_t
rng_next(struct trksrv_store *st)
{
    uint64_t x = st->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    st->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t
random_u64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = (uint64_t)(uintptr_t)&v ^ (uint64_t)getpid() << 32;
    return v ? v : 0x9E3779B97F4A7C15ULL;
}

static uint64_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t
bucket_of(const struct trksrv_store *st, const uint8_t *hash)
{
    uint64_t a, b;
    memcpy(&a, hash, 8);
    memcpy(&b, hash + 8, 8);
    return (size_t)(mix64(mix64(a ^ st->key[0]) ^ b ^ st->key[1]) &
                    (st->n_buckets - 1));
}

int
trksrv_store_new(struct trksrv_store **ret, uint64_t seed)
{
    struct trksrv_store *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->n_buckets = STORE_BUCKETS_MIN;
    st->buckets = calloc(st->n_buckets, sizeof(*st->buckets));
    if (!st->buckets) {
        free(st);
        return -ENOMEM;
    }
    st->rng = seed ? seed : random_u64();
    st->key[0] = seed ? mix64(seed) : random_u64();
    st->key[1] = seed ? mix64(seed + 1) : random_u64();
    st->max_total = 100000;
    st->max_per_hash = TRKSRV_MAX_PEERS_PER_HASH;
    *ret = st;
    return 0;
}

void
trksrv_store_free(struct trksrv_store *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_buckets; i++) {
        struct swarm *s = st->buckets[i];
        while (s) {
            struct swarm *next = s->next;
            free(s->peers);
            free(s);
            s = next;
        }
    }
    free(st->buckets);
    free(st);
}

void
trksrv_store_set_limits(struct trksrv_store *st, size_t max_total,
                        size_t max_per_hash)
{
    st->max_total = max_total;
    st->max_per_hash = max_per_hash < TRKSRV_MAX_PEERS_PER_HASH
                           ? max_per_hash
                           : TRKSRV_MAX_PEERS_PER_HASH;
}

size_t
trksrv_store_peers(const struct trksrv_store *st)
{
    return st->n_peers;
}

size_t
trksrv_store_swarms(const struct trksrv_store *st)
{
    return st->n_swarms;
}

static struct swarm *
swarm_find(const struct trksrv_store *st, const uint8_t *hash,
           struct swarm ***ret_link)
{
    struct swarm **link = &st->buckets[bucket_of(st, hash)];
    for (; *link; link = &(*link)->next)
        if (memcmp((*link)->hash, hash, TRACKER_HASH_LEN) == 0)
            break;
    if (ret_link)
        *ret_link = link;
    return *link;
}

/* Double the table when swarms outnumber buckets (best effort). */
static void
store_grow(struct trksrv_store *st)
{
    if (st->n_swarms <= st->n_buckets || st->n_buckets > SIZE_MAX / 4)
        return;
    size_t nb = st->n_buckets * 2;
    struct swarm **b = calloc(nb, sizeof(*b));
    if (!b)
        return;
    struct swarm **old = st->buckets;
    size_t on = st->n_buckets;
    st->buckets = b;
    st->n_buckets = nb;
    for (size_t i = 0; i < on; i++) {
        struct swarm *s = old[i];
        while (s) {
            struct swarm *next = s->next;
            size_t k = bucket_of(st, s->hash);
            s->next = b[k];
            b[k] = s;
            s = next;
        }
    }
    free(old);
    st->sweep = 0;
}

static void
swarm_remove_peer(struct trksrv_store *st, struct swarm *s, uint32_t i)
{
    if (s->peers[i].seed)
        s->seeds--;
    s->peers[i] = s->peers[s->n - 1];
    s->n--;
    st->n_peers--;
}

/* Unlink and free a swarm with no peers. */
static void
swarm_drop(struct trksrv_store *st, struct swarm **link)
{
    struct swarm *s = *link;
    *link = s->next;
    free(s->peers);
    free(s);
    st->n_swarms--;
}

static bool
peer_is(const struct swarm_peer *p, const struct trkserve_addr *a,
        uint16_t port)
{
    size_t alen = a->family == AF_INET6 ? 16 : 4;
    return p->family == a->family && p->port == port &&
           memcmp(p->addr, a->addr, alen) == 0;
}

static size_t
clamp_numwant(int32_t nw)
{
    if (nw < 0)
        return TRKSRV_NUMWANT_DEFAULT;
    return nw > TRKSRV_NUMWANT_MAX ? TRKSRV_NUMWANT_MAX : (size_t)nw;
}

/* The counts of s and a sample of its peers for the announce a from
 * `from` (self: its index in s, or -1 to look by address) into ret,
 * whose peers point to st->sample.  Peers not seen for expire_after
 * seconds are left out. */
static void
swarm_answer(struct trksrv_store *st, const struct swarm *s, long self,
             const struct trkserve_addr *from,
             const struct trkserve_announce *a, double now,
             double expire_after, int family, struct trksrv_answer *ret)
{
    bool seed = a->has_left && a->left == 0;
    size_t want = a->event == TRACKER_EVENT_STOPPED
                      ? 0
                      : clamp_numwant(a->numwant);
    ret->complete = s->seeds;
    ret->incomplete = s->n - s->seeds;
    ret->downloaded = s->downloaded;
    uint32_t m = 0;
    for (uint32_t i = 0; i < s->n && want > 0; i++) {
        const struct swarm_peer *p = &s->peers[i];
        if ((long)i == self || (seed && p->seed) ||
            (family != AF_UNSPEC && p->family != family) ||
            now - p->last_seen > expire_after ||
            (self < 0 && peer_is(p, from, a->port)))
            continue;
        st->idx[m++] = i;
    }
    /* Partial Fisher-Yates: the first want indices are the sample. */
    for (uint32_t k = 0; k < m && k < want; k++) {
        uint32_t j = k + (uint32_t)(rng_next(st) % (m - k));
        uint32_t tmp = st->idx[k];
        st->idx[k] = st->idx[j];
        st->idx[j] = tmp;
        const struct swarm_peer *p = &s->peers[st->idx[k]];
        struct tracker_peer *o = &st->sample[ret->n_peers++];
        memset(o, 0, sizeof(*o));
        o->family = p->family;
        o->port = p->port;
        memcpy(o->addr, p->addr, 16);
        memcpy(o->id, p->id, TRACKER_PEER_ID_LEN);
        o->has_id = true;
    }
}

int
trksrv_store_announce(struct trksrv_store *st, const struct trkserve_addr *from,
                      const struct trkserve_announce *a, double now,
                      double expire_after, int family,
                      struct trksrv_answer *ret)
{
    struct swarm **link;
    struct swarm *s = swarm_find(st, a->info_hash, &link);
    bool seed = a->has_left && a->left == 0;
    bool stopped = a->event == TRACKER_EVENT_STOPPED;
    int result = TRKSRV_STORED;
    long self = -1;

    if (!s && !stopped) {
        if (st->n_peers < st->max_total && st->max_per_hash > 0) {
            s = calloc(1, sizeof(*s));
            if (s) {
                memcpy(s->hash, a->info_hash, TRACKER_HASH_LEN);
                s->next = NULL;
                *link = s;
                st->n_swarms++;
            }
        }
    }
    if (s) {
        /* Expire, and find the requester, in one pass. */
        for (uint32_t i = 0; i < s->n;) {
            if (now - s->peers[i].last_seen > expire_after) {
                swarm_remove_peer(st, s, i);
                continue;
            }
            if (self < 0 && peer_is(&s->peers[i], from, a->port))
                self = i;
            i++;
        }
        if (stopped) {
            if (self >= 0)
                swarm_remove_peer(st, s, (uint32_t)self);
            self = -1;
        } else if (self >= 0) {
            struct swarm_peer *p = &s->peers[self];
            if (seed && !p->seed &&
                a->event == TRACKER_EVENT_COMPLETED)
                s->downloaded++;
            if (seed != p->seed)
                s->seeds += seed ? 1u : (uint32_t)-1;
            p->seed = seed;
            p->last_seen = now;
            memcpy(p->id, a->peer_id, TRACKER_PEER_ID_LEN);
        } else if (st->n_peers < st->max_total && s->n < st->max_per_hash) {
            if (s->n == s->cap) {
                uint32_t nc = s->cap ? s->cap * 2 : 4;
                if (nc > st->max_per_hash)
                    nc = (uint32_t)st->max_per_hash;
                struct swarm_peer *np = realloc(s->peers, nc * sizeof(*np));
                if (np) {
                    s->peers = np;
                    s->cap = nc;
                }
            }
            if (s->n < s->cap) {
                struct swarm_peer *p = &s->peers[s->n];
                memset(p, 0, sizeof(*p));
                p->family = from->family;
                memcpy(p->addr, from->addr,
                       from->family == AF_INET6 ? 16 : 4);
                p->port = a->port;
                memcpy(p->id, a->peer_id, TRACKER_PEER_ID_LEN);
                p->seed = seed;
                p->last_seen = now;
                self = s->n;
                s->n++;
                st->n_peers++;
                if (seed)
                    s->seeds++;
                if (a->event == TRACKER_EVENT_COMPLETED)
                    s->downloaded++;
            } else {
                result = TRKSRV_NOT_STORED;
            }
        } else {
            result = TRKSRV_NOT_STORED;
        }
    } else if (!stopped) {
        result = TRKSRV_NOT_STORED;
    }

    memset(ret, 0, sizeof(*ret));
    ret->peers = st->sample;
    if (s) {
        swarm_answer(st, s, self, from, a, now, expire_after, family, ret);
        if (s->n == 0)
            swarm_drop(st, link);
        else
            store_grow(st);
    }
    return result;
}

void
trksrv_store_sample(struct trksrv_store *st, const struct trkserve_addr *from,
                    const struct trkserve_announce *a, double now,
                    double expire_after, int family,
                    struct trksrv_answer *ret)
{
    const struct swarm *s = swarm_find(st, a->info_hash, NULL);
    memset(ret, 0, sizeof(*ret));
    ret->peers = st->sample;
    if (s)
        swarm_answer(st, s, -1, from, a, now, expire_after, family, ret);
}

void
trksrv_store_scrape(const struct trksrv_store *st, const uint8_t *hash,
                    struct trkserve_scrape_file *ret)
{
    const struct swarm *s = swarm_find(st, hash, NULL);
    memset(ret, 0, sizeof(*ret));
    memcpy(ret->info_hash, hash, TRACKER_HASH_LEN);
    if (s) {
        ret->complete = s->seeds;
        ret->incomplete = s->n - s->seeds;
        ret->downloaded = s->downloaded;
    }
}

size_t
trksrv_store_expire(struct trksrv_store *st, double now, double expire_after,
                    size_t budget)
{
    size_t seen = 0, dropped = 0;
    for (size_t b = 0; b < st->n_buckets && seen < budget; b++) {
        size_t k = st->sweep;
        st->sweep = (st->sweep + 1) & (st->n_buckets - 1);
        struct swarm **link = &st->buckets[k];
        while (*link) {
            struct swarm *s = *link;
            seen += s->n + 1;
            for (uint32_t i = 0; i < s->n;) {
                if (now - s->peers[i].last_seen > expire_after) {
                    swarm_remove_peer(st, s, i);
                    dropped++;
                } else {
                    i++;
                }
            }
            if (s->n == 0)
                swarm_drop(st, link);
            else
                link = &s->next;
        }
    }
    return dropped;
}

/* ---- the server ----------------------------------------------------------- */

struct trksrv_conn {
    struct trksrv *t;                /* borrowed: owns this connection */
    struct trksrv_conn *prev, *next; /* t->conns, oldest first */
    struct trksrv_conn *next_dead;   /* t->dead */
    int fd;                          /* owned */
    ev_io read_w, write_w;
    ev_timer timer_w;
    struct trkserve_addr from;
    struct buf out;                  /* owned: the answer */
    size_t out_off;
    size_t in_len;
    size_t drained;                  /* bytes discarded after the answer */
    bool draining;                   /* answered, waiting for EOF */
    bool closing;
    bool held;                       /* waiting for the source (a) */
    struct trkserve_announce a;      /* the announce held */
    char in[];                       /* max_request bytes */
};

struct trksrv_udp_held {
    bool live;                 /* false: answered early (ready) */
    double due;
    uint32_t tid;
    socklen_t sa_len;
    struct sockaddr_storage sa;
    struct trkserve_addr from;
    struct trkserve_announce a;
};

struct trksrv {
    struct ev_loop *loop;       /* borrowed */
    const struct config *cfg;   /* borrowed: the session's, outlives us */
    struct trksrv_store *store; /* owned */
    struct listen *listen;      /* owned: the TCP socket */
    int udp_fd;                 /* owned */
    uint16_t port;
    ev_io udp_w;
    ev_timer sweep_w;
    ev_prepare prepare_w;       /* frees closed connections */
    struct trksrv_conn *conns, *conns_tail; /* owned */
    struct trksrv_conn *dead;   /* closed, to be freed */
    unsigned n_conns;
    uint8_t (*allow)[TRACKER_HASH_LEN]; /* owned, sorted; NULL = all */
    size_t n_allow;
    char *allow_path;           /* owned: the path last (re)read, or NULL */
    struct trksrv_source src;   /* fill NULL: none */
    /* UDP answers held for the source: a ring, oldest first (all wait
     * the same time, so the oldest is due first). */
    struct trksrv_udp_held *held;   /* owned: TRKSRV_UDP_HELD entries */
    size_t held_head, held_n;
    ev_timer held_w;
    uint8_t secret[TRKSERVE_SECRET_LEN];
    struct tracker_peer extra[TRKSRV_NUMWANT_MAX];
    struct tracker_peer more[TRKSRV_NUMWANT_MAX];
    struct trkserve_scrape_file files[TRACKER_UDP_SCRAPE_MAX + 100];
    uint8_t udp_in[UDP_PACKET_MAX];
    uint8_t udp_out[UDP_OUT_MAX];
    /* Counters: one info line per STATS_S when they moved. */
    uint64_t n_announces, n_scrapes, n_refused, n_bad, n_held;
    uint64_t logged[4]; /* the counters at the last info line */
    double last_stats;
};

static void
addr_from_sockaddr(struct trkserve_addr *a, const struct sockaddr *sa)
{
    memset(a, 0, sizeof(*a));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        a->family = AF_INET;
        memcpy(a->addr, &s4->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            a->family = AF_INET;
            memcpy(a->addr, s6->sin6_addr.s6_addr + 12, 4);
        } else {
            a->family = AF_INET6;
            memcpy(a->addr, &s6->sin6_addr, 16);
        }
    }
}

static bool
addr_eq(const struct trkserve_addr *a, const struct trkserve_addr *b)
{
    return a->family == b->family && memcmp(a->addr, b->addr, 16) == 0;
}

static double
expire_after(const struct trksrv *t)
{
    return 2.0 * (double)t->cfg->tracker_interval;
}

static void
apply_limits(struct trksrv *t)
{
    trksrv_store_set_limits(t->store, (size_t)t->cfg->tracker_max_peers,
                            TRKSRV_MAX_PEERS_PER_HASH);
}

static bool
allowed(const struct trksrv *t, const uint8_t *hash)
{
    return !t->allow ||
           trkserve_allowlist_has((const uint8_t(*)[TRACKER_HASH_LEN])t->allow,
                                  t->n_allow, hash);
}

static bool
same_peer(const struct tracker_peer *p, int family, const uint8_t *addr,
          uint16_t port)
{
    return p->family == family && p->port == port &&
           memcmp(p->addr, addr, family == AF_INET6 ? 16 : 4) == 0;
}

/* Fill ans up to numwant from the source, without repeating a peer nor
 * giving the requester itself; ans->peers then points to t->extra.
 * Returns true when the source has nothing yet but is looking. */
static bool
fill_from_source(struct trksrv *t, const struct trkserve_addr *from,
                 const struct trkserve_announce *a, int family,
                 struct trksrv_answer *ans)
{
    size_t want = a->event == TRACKER_EVENT_STOPPED
                      ? 0
                      : clamp_numwant(a->numwant);
    if (!t->src.fill || ans->n_peers >= want)
        return false;
    bool pending = false;
    size_t got = t->src.fill(t->src.arg, a->info_hash, family, t->more,
                             want - ans->n_peers, &pending);
    if (got > want - ans->n_peers)
        got = want - ans->n_peers;
    size_t n = ans->n_peers;
    memcpy(t->extra, ans->peers, n * sizeof(*t->extra));
    for (size_t i = 0; i < got; i++) {
        const struct tracker_peer *p = &t->more[i];
        bool skip = p->port == 0 ||
                    (p->family != AF_INET && p->family != AF_INET6) ||
                    (family != AF_UNSPEC && p->family != family) ||
                    same_peer(p, from->family, from->addr, a->port);
        for (size_t k = 0; k < n && !skip; k++)
            skip = same_peer(&t->extra[k], p->family, p->addr, p->port);
        if (!skip) {
            t->extra[n] = *p;
            t->extra[n].has_id = false;
            n++;
        }
    }
    ans->peers = t->extra;
    ans->n_peers = n;
    return got == 0 && pending;
}

/* Record the announce and answer it from the store and the source.
 * Returns true when the answer should wait for the source (ans is then
 * what the store had). */
static bool
do_announce(struct trksrv *t, const struct trkserve_addr *from,
            const struct trkserve_announce *a, int family,
            struct trksrv_answer *ans)
{
    apply_limits(t);
    t->n_announces++;
    int r = trksrv_store_announce(t->store, from, a, ev_now(t->loop),
                                  expire_after(t), family, ans);
    if (r == TRKSRV_NOT_STORED)
        log_debug("tracker: peer not recorded (limits reached: %zu peers)",
                  trksrv_store_peers(t->store));
    return fill_from_source(t, from, a, family, ans);
}

/* The answer to an announce held for the source: the store's sample now,
 * and what the source has now. */
static void
held_answer(struct trksrv *t, const struct trkserve_addr *from,
            const struct trkserve_announce *a, int family,
            struct trksrv_answer *ans)
{
    trksrv_store_sample(t->store, from, a, ev_now(t->loop), expire_after(t),
                        family, ans);
    (void)fill_from_source(t, from, a, family, ans);
}

/* ---- HTTP ----------------------------------------------------------------- */

static void conn_write(struct trksrv_conn *c);

static void
conn_close(struct trksrv_conn *c, const char *why)
{
    struct trksrv *t = c->t;
    if (c->closing)
        return;
    c->closing = true;
    ev_io_stop(t->loop, &c->read_w);
    ev_io_stop(t->loop, &c->write_w);
    ev_timer_stop(t->loop, &c->timer_w);
    if (why)
        log_debug("tracker: http client: %s, closing", why);
    c->next_dead = t->dead;
    t->dead = c;
    if (!ev_is_active(&t->prepare_w))
        ev_prepare_start(t->loop, &t->prepare_w);
}

static void
conn_free(struct trksrv_conn *c)
{
    struct trksrv *t = c->t;
    ev_io_stop(t->loop, &c->read_w);
    ev_io_stop(t->loop, &c->write_w);
    ev_timer_stop(t->loop, &c->timer_w);
    if (c->fd >= 0)
        (void)close(c->fd);
    buf_release(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        t->conns_tail = c->prev;
    t->n_conns--;
    free(c);
}

static void
prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct trksrv *t = w->data;
    (void)revents;
    struct trksrv_conn *c = t->dead;
    t->dead = NULL;
    while (c) {
        struct trksrv_conn *next = c->next_dead;
        conn_free(c);
        c = next;
    }
    ev_prepare_stop(loop, w);
}

/* Queue a whole response and start sending it. */
static void
conn_respond(struct trksrv_conn *c, int status, const struct buf *body)
{
    ev_io_stop(c->t->loop, &c->read_w);
    buf_reset(&c->out);
    int r = trkserve_http_response(&c->out, status, body->data, body->len,
                                   false);
    if (r < 0) {
        conn_close(c, "cannot build the response");
        return;
    }
    c->out_off = 0;
    conn_write(c);
}

static void
conn_respond_text(struct trksrv_conn *c, int status, const char *text)
{
    struct buf body;
    buf_init(&body, 256);
    (void)buf_puts(&body, text);
    (void)buf_putc(&body, '\n');
    conn_respond(c, status, &body);
    buf_release(&body);
}

/* The bencoded answer to the announce a into body. */
static void
http_announce_body(struct trksrv *t, const struct trkserve_announce *a,
                   const struct trksrv_answer *ans, struct buf *body)
{
    uint64_t iv = t->cfg->tracker_interval;
    struct trkserve_announce_resp resp = {
        .interval = (uint32_t)iv,
        .min_interval = (uint32_t)(iv / MIN_INTERVAL_DIVISOR
                                       ? iv / MIN_INTERVAL_DIVISOR
                                       : 1),
        .complete = ans->complete,
        .incomplete = ans->incomplete,
        .downloaded = ans->downloaded,
        .peers = ans->peers,
        .n_peers = ans->n_peers,
        .compact = a->compact,
        .no_peer_id = a->no_peer_id,
    };
    if (trkserve_announce_body(body, &resp) < 0)
        (void)trkserve_failure_body(body, "internal error");
}

/* Answer the request of c (a whole body, or a close when it is empty). */
static void
conn_respond_body(struct trksrv_conn *c, const struct buf *body)
{
    if (body->len == 0)
        conn_close(c, "out of memory");
    else
        conn_respond(c, 200, body);
}

/* An announce over HTTP: its answer into body, or false when the answer
 * is held for the source (c->held; body untouched). */
static bool
http_announce(struct trksrv_conn *c, const struct trkserve_http_req *req,
              struct buf *body)
{
    struct trksrv *t = c->t;
    struct trkserve_announce a;
    size_t off = 0;
    int r = trkserve_parse_announce(&a, req->query, req->query_len, NULL,
                                    &off);
    if (r < 0) {
        char why[128];
        t->n_bad++;
        snprintf(why, sizeof(why), "invalid announce: %s",
                 trkserve_strerror(r));
        log_debug("tracker: %s at offset %zu of the query", why, off);
        (void)trkserve_failure_body(body, why);
        return true;
    }
    if (!allowed(t, a.info_hash)) {
        t->n_refused++;
        (void)trkserve_failure_body(body, "info_hash not allowed");
        return true;
    }
    struct trksrv_answer ans;
    if (do_announce(t, &c->from, &a, AF_UNSPEC, &ans)) {
        /* Held: no more reading; the timer gives the answer at the
         * latest. */
        t->n_held++;
        c->held = true;
        c->a = a;
        ev_io_stop(t->loop, &c->read_w);
        ev_timer_stop(t->loop, &c->timer_w);
        ev_timer_set(&c->timer_w, TRKSRV_SOURCE_WAIT_S, 0.);
        ev_timer_start(t->loop, &c->timer_w);
        return false;
    }
    http_announce_body(t, &a, &ans, body);
    return true;
}

/* Give the answer held by c. */
static void
conn_release(struct trksrv_conn *c)
{
    struct trksrv_answer ans;
    struct buf body;
    c->held = false;
    /* The whole answer gets the usual time to leave. */
    ev_timer_stop(c->t->loop, &c->timer_w);
    ev_timer_set(&c->timer_w, TRKSRV_HTTP_TIMEOUT_S, 0.);
    ev_timer_start(c->t->loop, &c->timer_w);
    held_answer(c->t, &c->from, &c->a, AF_UNSPEC, &ans);
    buf_init(&body, HTTP_OUT_MAX - 256);
    http_announce_body(c->t, &c->a, &ans, &body);
    conn_respond_body(c, &body);
    buf_release(&body);
}

static void
http_scrape(struct trksrv_conn *c, const struct trkserve_http_req *req,
            struct buf *body)
{
    struct trksrv *t = c->t;
    uint8_t hashes[100][TRACKER_HASH_LEN];
    size_t n = 0, off = 0, k = 0;
    int r = trkserve_parse_scrape(hashes, 100, &n, req->query, req->query_len,
                                  NULL, &off);
    if (r < 0) {
        char why[128];
        t->n_bad++;
        snprintf(why, sizeof(why), "invalid scrape: %s", trkserve_strerror(r));
        (void)trkserve_failure_body(body, why);
        return;
    }
    if (n == 0) {
        (void)trkserve_failure_body(body, "scrape needs an info_hash");
        return;
    }
    t->n_scrapes++;
    for (size_t i = 0; i < n; i++) {
        if (!allowed(t, hashes[i]))
            continue;
        trksrv_store_scrape(t->store, hashes[i], &t->files[k++]);
    }
    if (k == 0) {
        t->n_refused++;
        (void)trkserve_failure_body(body, "info_hash not allowed");
        return;
    }
    if (trkserve_scrape_body(body, t->files, k) < 0)
        (void)trkserve_failure_body(body, "internal error");
}

static void
conn_handle(struct trksrv_conn *c)
{
    struct trkserve_http_req req;
    size_t off = 0;
    int r = trkserve_http_parse(&req, c->in, c->in_len, NULL, &off);
    if (r == TRKSERVE_E_TRUNCATED)
        return;
    if (r < 0) {
        c->t->n_bad++;
        log_debug("tracker: bad http request: %s at offset %zu",
                  trkserve_strerror(r), off);
        conn_respond_text(c, trkserve_http_status(r), trkserve_strerror(r));
        return;
    }
    struct buf body;
    buf_init(&body, HTTP_OUT_MAX - 256);
    bool now = true;
    if (req.kind == TRKSERVE_ANNOUNCE)
        now = http_announce(c, &req, &body);
    else
        http_scrape(c, &req, &body);
    if (now)
        conn_respond_body(c, &body);
    buf_release(&body);
}

static void
conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct trksrv_conn *c = w->data;
    (void)loop;
    (void)revents;
    if (c->draining) {
        char sink[4096];
        ssize_t d = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (d < 0 &&
            (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (d > 0 && (c->drained += (size_t)d) <= LINGER_MAX)
            return;
        conn_close(c, NULL);
        return;
    }
    size_t max = trkserve_limits_default.max_request;
    ssize_t n = recv(c->fd, c->in + c->in_len, max - c->in_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c, n < 0 ? strerror(errno) : "closed before a request");
        return;
    }
    c->in_len += (size_t)n;
    conn_handle(c);
}

static void
conn_write(struct trksrv_conn *c)
{
    struct ev_loop *loop = c->t->loop;
    while (!c->closing && c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off,
                         c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(loop, &c->write_w);
            return;
        }
        conn_close(c, n < 0 ? strerror(errno) : "send returned 0");
        return;
    }
    if (c->closing)
        return;
    /* Done: half-close, then read until the client closes too. */
    (void)shutdown(c->fd, SHUT_WR);
    ev_io_stop(loop, &c->write_w);
    c->draining = true;
    ev_timer_stop(loop, &c->timer_w);
    ev_timer_set(&c->timer_w, LINGER_S, 0.);
    ev_timer_start(loop, &c->timer_w);
    ev_io_start(loop, &c->read_w);
}

static void
conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_write(w->data);
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct trksrv_conn *c = w->data;
    (void)loop;
    (void)revents;
    if (c->held)
        conn_release(c);
    else
        conn_close(c, c->draining ? NULL : "timed out");
}

static void
accept_cb(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
    struct trksrv *t = arg;
    struct trkserve_addr from;
    (void)len;
    addr_from_sockaddr(&from, sa);

    unsigned same = 0;
    for (struct trksrv_conn *o = t->conns; o; o = o->next)
        if (!o->closing && addr_eq(&o->from, &from))
            same++;
    if (same >= TRKSRV_MAX_CONNS_PER_ADDR) {
        t->n_refused++;
        log_debug("tracker: too many http connections from one address, "
                  "refusing");
        (void)close(fd);
        return;
    }
    /* All taken: the oldest that is still open makes room. */
    if (t->n_conns >= TRKSRV_MAX_CONNS) {
        struct trksrv_conn *o = t->conns;
        while (o && o->closing)
            o = o->next;
        if (!o) {
            (void)close(fd);
            return;
        }
        conn_close(o, "the oldest connection, making room");
    }
    size_t max = trkserve_limits_default.max_request;
    struct trksrv_conn *c = calloc(1, sizeof(*c) + max);
    if (!c) {
        (void)close(fd);
        return;
    }
    c->t = t;
    c->fd = fd;
    c->from = from;
    buf_init(&c->out, HTTP_OUT_MAX);
    ev_io_init(&c->read_w, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->write_w, conn_write_cb, fd, EV_WRITE);
    ev_timer_init(&c->timer_w, conn_timer_cb, TRKSRV_HTTP_TIMEOUT_S, 0.);
    c->read_w.data = c->write_w.data = c->timer_w.data = c;
    c->prev = t->conns_tail;
    if (t->conns_tail)
        t->conns_tail->next = c;
    else
        t->conns = c;
    t->conns_tail = c;
    t->n_conns++;
    ev_io_start(t->loop, &c->read_w);
    ev_timer_start(t->loop, &c->timer_w);
}

/* ---- UDP ------------------------------------------------------------------ */

static void
udp_send(struct trksrv *t, const void *p, size_t n, const struct sockaddr *to,
         socklen_t to_len)
{
    if (n == 0)
        return;
    if (sendto(t->udp_fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL, to, to_len) < 0)
        log_debug("tracker: udp send: %s", strerror(errno));
}

static void
udp_error(struct trksrv *t, uint32_t tid, const char *msg,
          const struct sockaddr *to, socklen_t to_len)
{
    size_t n = trkserve_udp_error(t->udp_out, sizeof(t->udp_out), tid, msg);
    udp_send(t, t->udp_out, n, to, to_len);
}

static void
udp_announce_answer(struct trksrv *t, uint32_t tid,
                    const struct trkserve_addr *from,
                    const struct trksrv_answer *ans,
                    const struct sockaddr *sa, socklen_t sa_len)
{
    size_t n = trkserve_udp_announce_resp(
        t->udp_out, sizeof(t->udp_out), tid,
        (uint32_t)t->cfg->tracker_interval,
        ans->incomplete > UINT32_MAX ? UINT32_MAX
                                     : (uint32_t)ans->incomplete,
        ans->complete > UINT32_MAX ? UINT32_MAX : (uint32_t)ans->complete,
        ans->peers, ans->n_peers, from->family);
    udp_send(t, t->udp_out, n, sa, sa_len);
}

/* Hold the answer to the announce q for the source.  Returns false when
 * the ring is full (answer now). */
static bool
udp_hold(struct trksrv *t, const struct trkserve_udp_req *q,
         const struct trkserve_addr *from, const struct sockaddr *sa,
         socklen_t sa_len)
{
    if (t->held_n == TRKSRV_UDP_HELD ||
        (size_t)sa_len > sizeof(struct sockaddr_storage))
        return false;
    struct trksrv_udp_held *h =
        &t->held[(t->held_head + t->held_n) % TRKSRV_UDP_HELD];
    memset(h, 0, sizeof(*h));
    h->live = true;
    h->due = ev_now(t->loop) + TRKSRV_SOURCE_WAIT_S;
    h->tid = q->transaction_id;
    memcpy(&h->sa, sa, (size_t)sa_len);
    h->sa_len = sa_len;
    h->from = *from;
    h->a = q->announce;
    t->held_n++;
    t->n_held++;
    if (!ev_is_active(&t->held_w)) {
        ev_timer_set(&t->held_w, TRKSRV_SOURCE_WAIT_S, 0.);
        ev_timer_start(t->loop, &t->held_w);
    }
    return true;
}

static void
udp_release(struct trksrv *t, struct trksrv_udp_held *h)
{
    struct trksrv_answer ans;
    h->live = false;
    held_answer(t, &h->from, &h->a, h->from.family, &ans);
    udp_announce_answer(t, h->tid, &h->from, &ans,
                        (const struct sockaddr *)&h->sa, h->sa_len);
}

/* Drop answered entries from the head of the ring, give those due, and
 * set the timer for the next. */
static void
udp_held_advance(struct trksrv *t)
{
    double now = ev_now(t->loop);
    while (t->held_n > 0) {
        struct trksrv_udp_held *h = &t->held[t->held_head];
        if (h->live && h->due > now)
            break;
        if (h->live)
            udp_release(t, h);
        t->held_head = (t->held_head + 1) % TRKSRV_UDP_HELD;
        t->held_n--;
    }
    ev_timer_stop(t->loop, &t->held_w);
    if (t->held_n > 0) {
        ev_timer_set(&t->held_w, t->held[t->held_head].due - now, 0.);
        ev_timer_start(t->loop, &t->held_w);
    }
}

static void
held_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    udp_held_advance(w->data);
}

static void
udp_packet(struct trksrv *t, size_t len, const struct sockaddr *sa,
           socklen_t sa_len)
{
    struct trkserve_udp_req q;
    struct trkserve_addr from;
    size_t off = 0;
    addr_from_sockaddr(&from, sa);
    int r = trkserve_udp_parse(&q, t->udp_in, len, &off);
    if (r < 0) {
        t->n_bad++;
        log_debug("tracker: bad udp request: %s at offset %zu",
                  trkserve_strerror(r), off);
        /* Answer only what looks like a request of ours: never garbage
         * (no reflection), never a bad connect. */
        if (len >= 16 && (r == TRKSERVE_E_TRUNCATED ||
                          r == TRKSERVE_E_EVENT || r == TRKSERVE_E_PORT ||
                          r == TRKSERVE_E_TOO_MANY)) {
            uint32_t tid = be32_get(t->udp_in + 12);
            udp_error(t, tid, trkserve_strerror(r), sa, sa_len);
        }
        return;
    }
    uint64_t now = (uint64_t)ev_now(t->loop);
    if (q.action == TRACKER_UDP_CONNECT) {
        uint64_t id = trkserve_conn_id(t->secret, &from,
                                       now / TRKSERVE_CONN_BUCKET_S);
        size_t n = trkserve_udp_connect_resp(t->udp_out, sizeof(t->udp_out),
                                             q.transaction_id, id);
        udp_send(t, t->udp_out, n, sa, sa_len);
        return;
    }
    if (!trkserve_conn_id_valid(t->secret, &from, now, q.connection_id)) {
        t->n_bad++;
        udp_error(t, q.transaction_id, "invalid connection id", sa, sa_len);
        return;
    }
    if (q.action == TRACKER_UDP_ANNOUNCE) {
        if (!allowed(t, q.announce.info_hash)) {
            t->n_refused++;
            udp_error(t, q.transaction_id, "info_hash not allowed", sa,
                      sa_len);
            return;
        }
        struct trksrv_answer ans;
        if (do_announce(t, &from, &q.announce, from.family, &ans) &&
            udp_hold(t, &q, &from, sa, sa_len))
            return;
        udp_announce_answer(t, q.transaction_id, &from, &ans, sa, sa_len);
        return;
    }
    /* Scrape: an info-hash that is not allowed reads as unknown. */
    t->n_scrapes++;
    for (size_t i = 0; i < q.n_hashes; i++) {
        const uint8_t *h = q.hashes + i * TRACKER_HASH_LEN;
        if (allowed(t, h))
            trksrv_store_scrape(t->store, h, &t->files[i]);
        else
            memset(&t->files[i], 0, sizeof(t->files[i]));
    }
    size_t n = trkserve_udp_scrape_resp(t->udp_out, sizeof(t->udp_out),
                                        q.transaction_id, t->files,
                                        q.n_hashes);
    udp_send(t, t->udp_out, n, sa, sa_len);
}

static void
udp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct trksrv *t = w->data;
    (void)loop;
    (void)revents;
    for (int i = 0; i < TRKSRV_UDP_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t n = recvfrom(t->udp_fd, t->udp_in, sizeof(t->udp_in),
                             MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_debug("tracker: udp receive: %s", strerror(errno));
            return;
        }
        udp_packet(t, (size_t)n, (struct sockaddr *)&ss, sl);
    }
}

/* ---- life ----------------------------------------------------------------- */

static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct trksrv *t = w->data;
    (void)revents;
    /* tracker_allowlist changed at run time (torrentctl config set). */
    const char *path = t->cfg->tracker_allowlist ? t->cfg->tracker_allowlist
                                                 : "";
    if (strcmp(path, t->allow_path ? t->allow_path : "") != 0)
        (void)trksrv_reload(t);
    size_t n = trksrv_store_expire(t->store, ev_now(loop), expire_after(t),
                                   TRKSRV_SWEEP_BUDGET);
    if (n)
        log_debug("tracker: %zu peers expired; %zu peers in %zu swarms", n,
                  trksrv_store_peers(t->store), trksrv_store_swarms(t->store));
    uint64_t now_c[4] = {t->n_announces, t->n_scrapes, t->n_refused,
                         t->n_bad};
    if (ev_now(loop) - t->last_stats >= STATS_S &&
        memcmp(now_c, t->logged, sizeof(now_c)) != 0) {
        log_info("tracker: %zu peers in %zu swarms; since the last report "
                 "%llu announces, %llu scrapes, %llu refused, %llu bad "
                 "requests",
                 trksrv_store_peers(t->store), trksrv_store_swarms(t->store),
                 (unsigned long long)(now_c[0] - t->logged[0]),
                 (unsigned long long)(now_c[1] - t->logged[1]),
                 (unsigned long long)(now_c[2] - t->logged[2]),
                 (unsigned long long)(now_c[3] - t->logged[3]));
        memcpy(t->logged, now_c, sizeof(now_c));
        t->last_stats = ev_now(loop);
    }
}

/* Read the allowlist file at path into a new sorted array. */
static int
allowlist_load(const char *path, uint8_t (**ret)[TRACKER_HASH_LEN],
               size_t *ret_n)
{
    struct buf text;
    int r;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return log_err_errno(-errno, "tracker: cannot open the allowlist "
                                     "'%s'", path);
    buf_init(&text, ALLOWLIST_FILE_MAX + 1);
    for (;;) {
        if (text.len >= ALLOWLIST_FILE_MAX) {
            r = -EFBIG;
            log_err("tracker: allowlist '%s' is too large", path);
            goto out;
        }
        r = buf_reserve(&text, 65536);
        if (r < 0) {
            log_err_errno(r, "tracker: cannot read the allowlist '%s'", path);
            goto out;
        }
        ssize_t got = read(fd, text.data + text.len, 65536);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = log_err_errno(-errno, "tracker: cannot read the allowlist "
                                      "'%s'", path);
            goto out;
        }
        if (got == 0)
            break;
        text.len += (size_t)got;
    }
    size_t max = text.len / (2 * TRACKER_HASH_LEN) + 1;
    if (max > TRKSRV_ALLOWLIST_MAX)
        max = TRKSRV_ALLOWLIST_MAX;
    uint8_t(*h)[TRACKER_HASH_LEN] = malloc(max * TRACKER_HASH_LEN);
    if (!h) {
        r = log_err_errno(-ENOMEM, "tracker: cannot load the allowlist");
        goto out;
    }
    size_t n = 0;
    unsigned line = 0;
    r = trkserve_allowlist_parse(h, max, &n, text.data ? text.data : "",
                                 text.len, &line);
    if (r < 0) {
        if (r == -EINVAL)
            log_err("tracker: %s:%u: expected a 40-digit hex info-hash",
                    path, line);
        else
            log_err("tracker: allowlist '%s' lists more than %u info-hashes",
                    path, (unsigned)TRKSRV_ALLOWLIST_MAX);
        free(h);
        goto out;
    }
    *ret = h;
    *ret_n = n;
    r = 0;
out:
    buf_release(&text);
    (void)close(fd);
    return r;
}

int
trksrv_reload(struct trksrv *t)
{
    if (!t)
        return 0;
    apply_limits(t);
    const char *path = t->cfg->tracker_allowlist;
    /* Remember what was asked for, also when it fails: the sweep retries
     * only after another change. */
    free(t->allow_path);
    t->allow_path = path && *path ? strdup(path) : NULL;
    if (!path || !*path) {
        if (t->allow)
            log_info("tracker: allowlist off, serving every info-hash");
        free(t->allow);
        t->allow = NULL;
        t->n_allow = 0;
        return 0;
    }
    uint8_t(*h)[TRACKER_HASH_LEN] = NULL;
    size_t n = 0;
    int r = allowlist_load(path, &h, &n);
    if (r < 0) {
        if (t->allow)
            log_warn("tracker: keeping the previous allowlist (%zu "
                     "info-hashes)",
                     t->n_allow);
        return r;
    }
    free(t->allow);
    t->allow = h;
    t->n_allow = n;
    log_info("tracker: allowlist '%s': %zu info-hashes", path, n);
    return 0;
}

int
trksrv_new(struct trksrv **ret, struct ev_loop *loop, const struct config *cfg)
{
    struct trksrv *t = NULL;
    struct sockaddr_storage ss;
    socklen_t sl;
    int r;

    *ret = NULL;
    if (!cfg->tracker_listen || !*cfg->tracker_listen)
        return 0;
    if (listen_parse_addr(cfg->tracker_listen, &ss, &sl) < 0) {
        log_err("tracker_listen '%s': expected a numeric address:port "
                "(IPv6 in brackets)",
                cfg->tracker_listen);
        return -EINVAL;
    }
    t = calloc(1, sizeof(*t));
    if (!t)
        return log_err_errno(-ENOMEM, "cannot start the tracker");
    t->loop = loop;
    t->cfg = cfg;
    t->udp_fd = -1;
    t->last_stats = ev_now(loop);
    ev_prepare_init(&t->prepare_w, prepare_cb);
    t->prepare_w.data = t;
    ev_timer_init(&t->held_w, held_cb, TRKSRV_SOURCE_WAIT_S, 0.);
    t->held_w.data = t;
    t->held = calloc(TRKSRV_UDP_HELD, sizeof(*t->held));
    if (!t->held) {
        r = log_err_errno(-ENOMEM, "cannot start the tracker");
        goto fail;
    }
    if (getrandom(t->secret, sizeof(t->secret), 0) !=
        (ssize_t)sizeof(t->secret)) {
        r = log_err_errno(-errno, "tracker: cannot get random bytes");
        goto fail;
    }
    r = trksrv_store_new(&t->store, 0);
    if (r < 0) {
        log_err_errno(r, "cannot start the tracker");
        goto fail;
    }
    apply_limits(t);
    r = listen_new(&t->listen, loop, cfg->tracker_listen, accept_cb, t);
    if (r < 0) {
        log_err_errno(r, "tracker: cannot listen on '%s' (tcp)",
                      cfg->tracker_listen);
        goto fail;
    }
    t->port = listen_port(t->listen);
    /* UDP on the same address and port as TCP. */
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons(t->port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(t->port);
    t->udp_fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                       0);
    if (t->udp_fd < 0) {
        r = log_err_errno(-errno, "tracker: cannot create the udp socket");
        goto fail;
    }
    if (ss.ss_family == AF_INET6) {
        int one = 1;
        (void)setsockopt(t->udp_fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
                         sizeof(one));
    }
    if (bind(t->udp_fd, (struct sockaddr *)&ss, sl) < 0) {
        r = log_err_errno(-errno, "tracker: cannot bind '%s' (udp)",
                          cfg->tracker_listen);
        goto fail;
    }
    r = trksrv_reload(t);
    if (r < 0)
        goto fail;
    ev_io_init(&t->udp_w, udp_cb, t->udp_fd, EV_READ);
    t->udp_w.data = t;
    ev_io_start(loop, &t->udp_w);
    ev_timer_init(&t->sweep_w, sweep_cb, TRKSRV_SWEEP_S, TRKSRV_SWEEP_S);
    t->sweep_w.data = t;
    ev_timer_start(loop, &t->sweep_w);
    char where[INET6_ADDRSTRLEN + 16];
    listen_format_addr((struct sockaddr *)&ss, where, sizeof(where));
    log_info("tracker: serving http and udp on %s (interval %llu s)", where,
             (unsigned long long)cfg->tracker_interval);
    *ret = t;
    return 0;
fail:
    trksrv_free(t);
    return r < 0 ? r : -EINVAL;
}

void
trksrv_free(struct trksrv *t)
{
    if (!t)
        return;
    while (t->conns)
        conn_free(t->conns);
    t->dead = NULL;
    ev_prepare_stop(t->loop, &t->prepare_w);
    ev_io_stop(t->loop, &t->udp_w);
    ev_timer_stop(t->loop, &t->sweep_w);
    ev_timer_stop(t->loop, &t->held_w);
    free(t->held);
    listen_free(t->listen);
    if (t->udp_fd >= 0)
        (void)close(t->udp_fd);
    trksrv_store_free(t->store);
    free(t->allow);
    free(t->allow_path);
    log_debug("tracker: stopped after %llu announces (%llu held for the "
              "dht), %llu scrapes, %llu refused, %llu bad requests",
              (unsigned long long)t->n_announces,
              (unsigned long long)t->n_held,
              (unsigned long long)t->n_scrapes,
              (unsigned long long)t->n_refused, (unsigned long long)t->n_bad);
    free(t);
}

void
trksrv_source_ready(struct trksrv *t, const uint8_t *info_hash)
{
    if (!t)
        return;
    for (struct trksrv_conn *c = t->conns; c; c = c->next)
        if (c->held && !c->closing &&
            memcmp(c->a.info_hash, info_hash, TRACKER_HASH_LEN) == 0)
            conn_release(c);
    for (size_t i = 0; i < t->held_n; i++) {
        struct trksrv_udp_held *h =
            &t->held[(t->held_head + i) % TRKSRV_UDP_HELD];
        if (h->live &&
            memcmp(h->a.info_hash, info_hash, TRACKER_HASH_LEN) == 0)
            udp_release(t, h);
    }
    udp_held_advance(t);
}

/* Give every held answer now (the source goes away). */
static void
release_all(struct trksrv *t)
{
    for (struct trksrv_conn *c = t->conns; c; c = c->next)
        if (c->held && !c->closing)
            conn_release(c);
    for (size_t i = 0; i < t->held_n; i++) {
        struct trksrv_udp_held *h =
            &t->held[(t->held_head + i) % TRKSRV_UDP_HELD];
        if (h->live)
            udp_release(t, h);
    }
    udp_held_advance(t);
}

void
trksrv_set_source(struct trksrv *t, const struct trksrv_source *src)
{
    if (!t)
        return;
    if (!src) {
        release_all(t); /* asks the old source one last time */
        memset(&t->src, 0, sizeof(t->src));
        return;
    }
    t->src = *src;
}

uint16_t
trksrv_port(const struct trksrv *t)
{
    return t ? t->port : 0;
}
