/* trkdht — the DHT as the built-in tracker's source of peers (contract in
 * trkdht.h).
 *
 * The cache is an array of at most TRKDHT_ENTRIES_MAX entries searched
 * linearly: small and bounded, and an info-hash chosen by a client cannot
 * make one search longer than another.  Each entry keeps its peers in an
 * array grown on demand up to TRKDHT_PEERS_MAX.
 *
 * The running lookups live in a fixed table of TRKDHT_LOOKUPS_MAX slots;
 * a slot is the arg of its dhtsvc callbacks.
 */
#include "daemon/trkdht.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "common/hex.h"
#include "common/log.h"
#include "common/tracker.h"
#include "daemon/config.h"
#include "daemon/dhtsvc.h"
#include "daemon/trksrv.h"

#define FORGET_EVERY_S 60.0
/* A lookup that reached no node (a DHT still bootstrapping) is tried
 * again this much sooner than TRKDHT_FRESH_S. */
#define RETRY_S 15.0

/* ---- the cache ------------------------------------------------------------ */

struct cached_peer {
    double seen;
    uint8_t family;
    uint16_t port;
    uint8_t addr[16];
};

struct entry {
    uint8_t hash[TRACKER_HASH_LEN];
    bool looking;
    bool answered;      /* a lookup that reached nodes has ended */
    double used;        /* last asked for */
    double due;         /* the next lookup may start (0: at once) */
    double round_start; /* the running or last lookup began */
    size_t found_round; /* peers found by it */
    size_t cursor;      /* rotating start of answers */
    size_t n, cap;
    struct cached_peer *peers;
};

struct trkdht_cache {
    size_t max, n;
    size_t n_peers;
    struct entry **e;
};

int
trkdht_cache_new(struct trkdht_cache **ret, size_t max_entries)
{
    struct trkdht_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    if (max_entries == 0)
        max_entries = 1;
    c->max = max_entries < TRKDHT_ENTRIES_MAX ? max_entries
                                               : TRKDHT_ENTRIES_MAX;
    c->e = calloc(c->max, sizeof(*c->e));
    if (!c->e) {
        free(c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

static void
entry_free(struct entry *e)
{
    if (e)
        free(e->peers);
    free(e);
}

void
trkdht_cache_free(struct trkdht_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        entry_free(c->e[i]);
    free(c->e);
    free(c);
}

static struct entry *
entry_find(const struct trkdht_cache *c, const uint8_t *hash)
{
    for (size_t i = 0; i < c->n; i++)
        if (memcmp(c->e[i]->hash, hash, TRACKER_HASH_LEN) == 0)
            return c->e[i];
    return NULL;
}

static void
entry_remove(struct trkdht_cache *c, size_t i)
{
    c->n_peers -= c->e[i]->n;
    entry_free(c->e[i]);
    c->e[i] = c->e[--c->n];
}

/* A new entry for hash; when full, the least recently asked for without
 * a lookup running makes room.  NULL when none can. */
static struct entry *
entry_new(struct trkdht_cache *c, const uint8_t *hash)
{
    if (c->n == c->max) {
        size_t victim = c->n;
        for (size_t i = 0; i < c->n; i++)
            if (!c->e[i]->looking &&
                (victim == c->n || c->e[i]->used < c->e[victim]->used))
                victim = i;
        if (victim == c->n)
            return NULL;
        entry_remove(c, victim);
    }
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    memcpy(e->hash, hash, TRACKER_HASH_LEN);
    c->e[c->n++] = e;
    return e;
}

enum trkdht_ask
trkdht_cache_ask(struct trkdht_cache *c, const uint8_t *hash, double now,
                 int family, struct tracker_peer *out, size_t max, size_t *n)
{
    *n = 0;
    struct entry *e = entry_find(c, hash);
    if (!e) {
        e = entry_new(c, hash);
        if (!e)
            return TRKDHT_FULL;
    }
    e->used = now;
    for (size_t k = 0; k < e->n && *n < max; k++) {
        const struct cached_peer *p = &e->peers[(e->cursor + k) % e->n];
        if (family != AF_UNSPEC && p->family != family)
            continue;
        struct tracker_peer *o = &out[(*n)++];
        memset(o, 0, sizeof(*o));
        o->family = p->family;
        o->port = p->port;
        memcpy(o->addr, p->addr, sizeof(o->addr));
    }
    if (e->n)
        e->cursor = (e->cursor + *n) % e->n;
    if (e->looking)
        return *n > 0 || e->answered ? TRKDHT_HAVE : TRKDHT_WAIT;
    return now >= e->due ? TRKDHT_LOOKUP : TRKDHT_HAVE;
}

void
trkdht_cache_started(struct trkdht_cache *c, const uint8_t *hash, double now)
{
    struct entry *e = entry_find(c, hash);
    if (!e)
        return;
    e->looking = true;
    e->round_start = now;
    e->found_round = 0;
}

void
trkdht_cache_ended(struct trkdht_cache *c, const uint8_t *hash, double now,
                   bool reached)
{
    struct entry *e = entry_find(c, hash);
    if (!e)
        return;
    e->looking = false;
    e->due = now + (reached ? TRKDHT_FRESH_S : RETRY_S);
    e->answered = e->answered || reached;
    if (!reached || e->found_round == 0)
        return; /* nothing to compare with: keep what was found before */
    for (size_t i = 0; i < e->n;) {
        if (e->peers[i].seen < e->round_start) {
            e->peers[i] = e->peers[--e->n];
            c->n_peers--;
        } else {
            i++;
        }
    }
    e->cursor = 0;
}

/* The peer at sa as a cached_peer; false for other families and port 0. */
static bool
peer_from(struct cached_peer *p, const struct sockaddr_storage *sa)
{
    memset(p, 0, sizeof(*p));
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        p->family = AF_INET;
        p->port = ntohs(s4->sin_port);
        memcpy(p->addr, &s4->sin_addr, 4);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        p->family = AF_INET6;
        p->port = ntohs(s6->sin6_port);
        memcpy(p->addr, &s6->sin6_addr, 16);
    } else {
        return false;
    }
    return p->port != 0;
}

size_t
trkdht_cache_add(struct trkdht_cache *c, const uint8_t *hash, double now,
                 const struct sockaddr_storage *addrs, size_t n)
{
    struct entry *e = entry_find(c, hash);
    size_t added = 0;
    if (!e)
        return 0;
    for (size_t i = 0; i < n; i++) {
        struct cached_peer p;
        if (!peer_from(&p, &addrs[i]))
            continue;
        p.seen = now;
        size_t k = 0, oldest = 0;
        for (; k < e->n; k++) {
            const struct cached_peer *q = &e->peers[k];
            if (q->family == p.family && q->port == p.port &&
                memcmp(q->addr, p.addr, sizeof(p.addr)) == 0)
                break;
            if (q->seen < e->peers[oldest].seen)
                oldest = k;
        }
        if (k < e->n) { /* known: found again */
            if (e->peers[k].seen < e->round_start)
                e->found_round++;
            e->peers[k].seen = now;
            continue;
        }
        if (e->n == e->cap && e->cap < TRKDHT_PEERS_MAX) {
            size_t nc = e->cap ? e->cap * 2 : 8;
            if (nc > TRKDHT_PEERS_MAX)
                nc = TRKDHT_PEERS_MAX;
            struct cached_peer *np = realloc(e->peers, nc * sizeof(*np));
            if (np) {
                e->peers = np;
                e->cap = nc;
            }
        }
        if (e->n < e->cap) {
            e->peers[e->n++] = p;
            c->n_peers++;
        } else if (e->n > 0 && e->peers[oldest].seen < now) {
            e->peers[oldest] = p; /* full: the longest unseen goes */
        } else {
            continue;
        }
        e->found_round++;
        added++;
    }
    return added;
}

size_t
trkdht_cache_forget(struct trkdht_cache *c, double now)
{
    size_t dropped = 0;
    for (size_t i = 0; i < c->n;) {
        if (!c->e[i]->looking && now - c->e[i]->used > TRKDHT_FORGET_S) {
            entry_remove(c, i);
            dropped++;
        } else {
            i++;
        }
    }
    return dropped;
}

size_t
trkdht_cache_entries(const struct trkdht_cache *c)
{
    return c->n;
}

size_t
trkdht_cache_peers(const struct trkdht_cache *c)
{
    return c->n_peers;
}

/* ---- the source ----------------------------------------------------------- */

struct slot {
    struct trkdht *d;             /* borrowed: owns the slot */
    struct dhtsvc_lookup *lk;     /* NULL: free */
    uint8_t hash[TRACKER_HASH_LEN];
};

struct trkdht {
    struct ev_loop *loop;         /* borrowed */
    const struct config *cfg;     /* borrowed */
    struct dhtsvc *dht;           /* borrowed */
    struct trksrv *t;             /* borrowed */
    struct trkdht_cache *cache;   /* owned */
    struct slot slots[TRKDHT_LOOKUPS_MAX];
    ev_timer forget_w;
    double minute;              /* the current minute began */
    unsigned minute_lookups;    /* lookups started in it */
    uint64_t n_lookups, n_peers_found, n_over_rate;
};

static void
on_peers(void *arg, const uint8_t info_hash[20],
         const struct sockaddr_storage *addrs, size_t n)
{
    struct slot *s = arg;
    struct trkdht *d = s->d;
    size_t added = trkdht_cache_add(d->cache, info_hash, ev_now(d->loop),
                                    addrs, n);
    d->n_peers_found += added;
}

static void
on_done(void *arg, const uint8_t info_hash[20],
        const struct dhtsvc_result *res)
{
    struct slot *s = arg;
    struct trkdht *d = s->d;
    uint8_t hash[TRACKER_HASH_LEN];
    memcpy(hash, info_hash, sizeof(hash));
    s->lk = NULL;
    trkdht_cache_ended(d->cache, hash, ev_now(d->loop),
                       !res->aborted && res->answers > 0);
    char hex[2 * TRACKER_HASH_LEN + 1];
    hex_encode(hex, hash, TRACKER_HASH_LEN);
    log_debug("tracker: dht lookup for %s: %u peers from %u answers in "
              "%llu ms%s",
              hex, res->peers, res->answers, (unsigned long long)res->ms,
              res->aborted ? " (aborted)" : "");
    /* May start lookups (fill): the slot is free by now. */
    trksrv_source_ready(d->t, hash);
}

static struct slot *
slot_free(struct trkdht *d)
{
    for (size_t i = 0; i < TRKDHT_LOOKUPS_MAX; i++)
        if (!d->slots[i].lk)
            return &d->slots[i];
    return NULL;
}

/* trksrv_source.fill */
static size_t
fill(void *arg, const uint8_t *info_hash, int family,
     struct tracker_peer *out, size_t max, bool *pending)
{
    struct trkdht *d = arg;
    size_t n = 0;
    *pending = false;
    if (!d->cfg->tracker_dht)
        return 0;
    enum trkdht_ask a = trkdht_cache_ask(d->cache, info_hash,
                                         ev_now(d->loop), family, out, max,
                                         &n);
    if (a == TRKDHT_WAIT)
        *pending = true;
    if (a != TRKDHT_LOOKUP)
        return n;
    double now = ev_now(d->loop);
    if (now - d->minute >= 60.0) {
        d->minute = now;
        d->minute_lookups = 0;
    }
    struct slot *s = slot_free(d);
    if (!s || d->minute_lookups >= TRKDHT_LOOKUPS_PER_MIN) {
        d->n_over_rate += s != NULL;
        return n; /* busy: answer from the cache */
    }
    int err = 0;
    s->lk = dhtsvc_get_peers(d->dht, info_hash, 0, on_peers, on_done, s,
                             &err);
    if (!s->lk) {
        if (err != -ENOSPC && err != -ESHUTDOWN)
            log_debug("tracker: cannot start a dht lookup: %s",
                      strerror(-err));
        return n;
    }
    memcpy(s->hash, info_hash, TRACKER_HASH_LEN);
    d->n_lookups++;
    d->minute_lookups++;
    trkdht_cache_started(d->cache, info_hash, now);
    *pending = n == 0;
    return n;
}

static void
forget_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct trkdht *d = w->data;
    (void)revents;
    size_t n = trkdht_cache_forget(d->cache, ev_now(loop));
    if (n)
        log_debug("tracker: forgot %zu dht swarms; %zu cached with %zu "
                  "peers",
                  n, trkdht_cache_entries(d->cache),
                  trkdht_cache_peers(d->cache));
}

int
trkdht_new(struct trkdht **ret, struct ev_loop *loop,
           const struct config *cfg, struct dhtsvc *dht, struct trksrv *t)
{
    struct trkdht *d = calloc(1, sizeof(*d));
    *ret = NULL;
    if (!d)
        return -ENOMEM;
    int r = trkdht_cache_new(&d->cache, TRKDHT_ENTRIES_MAX);
    if (r < 0) {
        free(d);
        return r;
    }
    d->loop = loop;
    d->cfg = cfg;
    d->dht = dht;
    d->t = t;
    for (size_t i = 0; i < TRKDHT_LOOKUPS_MAX; i++)
        d->slots[i].d = d;
    ev_timer_init(&d->forget_w, forget_cb, FORGET_EVERY_S, FORGET_EVERY_S);
    d->forget_w.data = d;
    ev_timer_start(loop, &d->forget_w);
    struct trksrv_source src = {.fill = fill, .arg = d};
    trksrv_set_source(t, &src);
    *ret = d;
    return 0;
}

void
trkdht_free(struct trkdht *d)
{
    if (!d)
        return;
    /* Give what is held first (asks the cache, which is still here);
     * lookups that this starts are cancelled below. */
    trksrv_set_source(d->t, NULL);
    for (size_t i = 0; i < TRKDHT_LOOKUPS_MAX; i++) {
        dhtsvc_lookup_cancel(d->dht, d->slots[i].lk);
        d->slots[i].lk = NULL;
    }
    ev_timer_stop(d->loop, &d->forget_w);
    log_debug("tracker: dht source stopped after %llu lookups (%llu more "
              "refused by the rate limit), %llu peers found",
              (unsigned long long)d->n_lookups,
              (unsigned long long)d->n_over_rate,
              (unsigned long long)d->n_peers_found);
    trkdht_cache_free(d->cache);
    free(d);
}
