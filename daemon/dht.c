/* dht — a Mainline DHT node as a pure library (see dht.h).
 *
 * Layout of the state:
 * - buckets[i] (i < n_buckets, allocated on demand) holds the nodes whose
 *   id shares exactly i leading bits with ours; the last bucket holds all
 *   nodes sharing at least n_buckets - 1 bits, and is the only one that
 *   splits.
 * - pending[] are our queries in flight.  The transaction id is the slot
 *   (2 bytes) and a random nonce (2 bytes): an answer finds its query in
 *   O(1), and must come from the address the query went to.
 * - lookups[] (allocated on demand) each keep a shortlist sorted by XOR
 *   distance to the target.
 * - store[] holds announced peers per info-hash.
 * - rate[] is a small open-addressing table of token buckets per source IP.
 */
#include "daemon/dht.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/bencode.h"
#include "common/buf.h"

#define DHT_TID_LEN 4
#define DHT_STORE_SWEEP_MS 60000   /* full sweep of expired peers */
#define DHT_IP_VOTE_SLOTS 4        /* candidates for our external ip */
#define DHT_SEED_NODES (2 * DHT_K) /* table nodes seeding a lookup */

enum cand_state { C_NEW, C_SENT, C_DONE, C_FAILED };

enum purpose { P_PING, P_JOIN, P_LOOKUP, P_ANNOUNCE };

struct dht_node {
    struct krpc_node n;
    uint64_t last_reply; /* 0: never (replacement cache only) */
    uint64_t last_query; /* they queried us */
    uint64_t last_ping;  /* we last queried them */
    uint8_t fails;       /* unanswered queries in a row */
    bool compliant;      /* BEP 42 */
};

struct dht_bucket {
    uint8_t n, n_repl;
    uint64_t last_changed; /* a node was added or answered */
    uint64_t last_refresh; /* our last refresh lookup in it */
    struct dht_node nodes[DHT_K];
    struct dht_node repl[DHT_REPLACEMENTS];
};

struct dht_pending {
    bool used;
    uint8_t method;  /* enum krpc_method */
    uint8_t purpose; /* enum purpose */
    bool has_id;
    uint16_t nonce;
    int lookup; /* handle, or 0 */
    struct krpc_addr to;
    uint8_t id[DHT_ID_LEN];
    uint64_t sent;
};

struct dht_cand {
    struct krpc_node node;
    uint8_t state; /* enum cand_state */
    uint8_t token_len;
    uint8_t token[KRPC_TOKEN_MAX];
};

struct dht_lk {
    int handle;
    bool maint; /* a refresh or bootstrap of our own */
    struct dht_lookup_params p;
    unsigned n;
    struct dht_cand c[DHT_LOOKUP_NODES];
    unsigned inflight, queries, answers, peers;
    uint64_t started;
};

struct dht_peer {
    struct krpc_addr addr;
    uint64_t expires;
};

struct dht_store {
    uint8_t hash[DHT_ID_LEN];
    unsigned n, cap;
    struct dht_peer *peers; /* owned */
};

struct dht_rate {
    uint8_t family;
    uint8_t ip[16];
    uint32_t milli; /* tokens, in thousandths */
    uint64_t last;
};

struct dht_vote {
    struct krpc_addr ip;
    unsigned count;
};

struct dht {
    struct dht_config cfg;
    uint8_t id[DHT_ID_LEN];
    struct dht *sibling; /* borrowed */
    uint64_t rng[4];     /* xoshiro256** */

    unsigned n_buckets;
    struct dht_bucket *buckets[DHT_BUCKETS]; /* owned */

    struct dht_pending pending[DHT_MAX_PENDING];
    unsigned n_pending, pending_cursor, join_inflight;

    struct dht_lk *lookups[DHT_MAX_LOOKUPS]; /* owned */
    int next_handle;
    int refresh_handle; /* the running maintenance lookup, or 0 */

    uint8_t secret[20], prev_secret[20];
    uint64_t secret_counter, secret_next;

    struct dht_store *store; /* owned */
    unsigned n_store, cap_store, n_stored_peers;
    uint64_t last_sweep;

    struct dht_rate rate[DHT_RATE_SLOTS];
    uint64_t rate_salt;

    struct dht_vote votes[DHT_IP_VOTE_SLOTS];

    uint64_t maint_next;
    uint64_t durations[DHT_STATS_LOOKUPS];
    unsigned n_durations, durations_pos;
    struct dht_status st; /* counters */
};

/* --- randomness (xoshiro256**, seeded by splitmix64 over the seed) --- */

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
rng_next(struct dht *d)
{
    uint64_t *s = d->rng;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void
rng_seed(struct dht *d, const uint8_t seed[32])
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        for (int j = 0; j < 8; j++)
            z ^= (uint64_t)seed[i * 8 + j] << (8 * j);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        d->rng[i] = z ^ (z >> 31);
    }
    if (!(d->rng[0] | d->rng[1] | d->rng[2] | d->rng[3]))
        d->rng[0] = 1;
}

static void
rng_bytes(struct dht *d, uint8_t *p, size_t n)
{
    while (n > 0) {
        uint64_t v = rng_next(d);
        for (int i = 0; i < 8 && n > 0; i++, n--)
            *p++ = (uint8_t)(v >> (8 * i));
    }
}

/* A fresh token secret: SHA-1 of the seed and a counter, so that it is
 * as unpredictable as the seed and never repeats. */
static void
new_secret(struct dht *d, uint8_t out[20])
{
    uint8_t in[40];
    memcpy(in, d->cfg.seed, 32);
    for (int i = 0; i < 8; i++)
        in[32 + i] = (uint8_t)(d->secret_counter >> (8 * i));
    d->secret_counter++;
    unsigned int n = 20;
    if (EVP_Digest(in, sizeof(in), out, &n, EVP_sha1(), NULL) != 1)
        rng_bytes(d, out, 20);
}

/* --- ids and distances --- */

static unsigned
common_prefix(const uint8_t *a, const uint8_t *b)
{
    for (unsigned i = 0; i < DHT_ID_LEN; i++) {
        uint8_t x = a[i] ^ b[i];
        if (x) {
            unsigned j = 0;
            while (!(x & 0x80)) {
                x = (uint8_t)(x << 1);
                j++;
            }
            return i * 8 + j;
        }
    }
    return DHT_ID_LEN * 8;
}

/* <0 if a is closer to t than b, >0 if farther, 0 if equal. */
static int
xor_cmp(const uint8_t *t, const uint8_t *a, const uint8_t *b)
{
    for (unsigned i = 0; i < DHT_ID_LEN; i++) {
        uint8_t x = a[i] ^ t[i], y = b[i] ^ t[i];
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* --- BEP 42 --- */

uint32_t
dht_crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static uint32_t
bep42_crc(const struct krpc_addr *ip, uint8_t r)
{
    static const uint8_t m4[] = {0x03, 0x0f, 0x3f, 0xff};
    static const uint8_t m6[] = {0x01, 0x03, 0x07, 0x0f,
                                 0x1f, 0x3f, 0x7f, 0xff};
    uint8_t b[8];
    size_t n = ip->family == 4 ? 4 : 8;
    const uint8_t *m = ip->family == 4 ? m4 : m6;
    for (size_t i = 0; i < n; i++)
        b[i] = ip->addr[i] & m[i];
    b[0] |= (uint8_t)((r & 7) << 5);
    return dht_crc32c(b, n);
}

void
dht_id_from_ip(uint8_t ret_id[DHT_ID_LEN], const struct krpc_addr *ip,
               const uint8_t rnd[DHT_ID_LEN])
{
    uint32_t crc = bep42_crc(ip, rnd[19]);
    memcpy(ret_id, rnd, DHT_ID_LEN);
    ret_id[0] = (uint8_t)(crc >> 24);
    ret_id[1] = (uint8_t)(crc >> 16);
    ret_id[2] = (uint8_t)(((crc >> 8) & 0xf8) | (rnd[2] & 0x07));
}

static bool
ip_is_local(const struct krpc_addr *ip)
{
    const uint8_t *a = ip->addr;
    if (ip->family == 4)
        return a[0] == 10 || a[0] == 127 ||
               (a[0] == 172 && (a[1] & 0xf0) == 16) ||
               (a[0] == 192 && a[1] == 168) || (a[0] == 169 && a[1] == 254);
    static const uint8_t lo6[16] = {[15] = 1};
    return (a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) ||
           memcmp(a, lo6, 16) == 0;
}

bool
dht_id_check(const uint8_t id[DHT_ID_LEN], const struct krpc_addr *ip)
{
    if (ip->family != 4 && ip->family != 6)
        return false;
    if (ip_is_local(ip))
        return true;
    uint32_t crc = bep42_crc(ip, id[19]);
    return id[0] == (uint8_t)(crc >> 24) && id[1] == (uint8_t)(crc >> 16) &&
           (id[2] & 0xf8) == ((crc >> 8) & 0xf8);
}

/* --- sending --- */

static int
send_msg(struct dht *d, const struct krpc_addr *to, struct krpc_msg *m)
{
    struct buf b;
    buf_init(&b, KRPC_MAX_DATAGRAM);
    memcpy(m->v, d->cfg.version, 4);
    m->v_len = 4;
    m->has |= KRPC_HAS_V;
    int r = krpc_encode(&b, m);
    if (r > 0) {
        d->cfg.send(d->cfg.send_ud, to, (const uint8_t *)b.data, b.len);
        d->st.bytes_sent += b.len;
    }
    buf_release(&b);
    return r < 0 ? r : 0;
}

static void
send_error(struct dht *d, const struct krpc_addr *to, const uint8_t *tid,
           size_t tid_len, int code, const char *text)
{
    struct krpc_msg *m = malloc(sizeof(*m));
    if (!m)
        return;
    krpc_msg_init(m, KRPC_ERROR_MSG, tid, tid_len, NULL);
    m->err_code = code;
    size_t n = strlen(text);
    if (n > KRPC_ERRMSG_MAX)
        n = KRPC_ERRMSG_MAX;
    memcpy(m->err_msg, text, n);
    m->err_msg_len = (uint8_t)n;
    (void)send_msg(d, to, m);
    free(m);
}

/* Send a query; returns 0, -EINVAL (an address we cannot use), -ENOSPC
 * (no pending slot free) or -ENOMEM. */
static int
send_query(struct dht *d, const struct krpc_addr *to, const uint8_t *id,
           enum krpc_method method, const uint8_t *target, int purpose,
           int lookup, const uint8_t *token, size_t token_len, uint16_t port,
           bool implied_port, uint64_t now)
{
    if (to->family != d->cfg.family || to->port == 0)
        return -EINVAL;
    if (d->n_pending >= DHT_MAX_PENDING)
        return -ENOSPC;
    unsigned slot = d->pending_cursor;
    while (d->pending[slot].used)
        slot = (slot + 1) % DHT_MAX_PENDING;
    d->pending_cursor = (slot + 1) % DHT_MAX_PENDING;
    struct dht_pending *p = &d->pending[slot];
    memset(p, 0, sizeof(*p));
    p->used = true;
    p->method = (uint8_t)method;
    p->purpose = (uint8_t)purpose;
    p->lookup = lookup;
    p->to = *to;
    p->sent = now;
    p->nonce = (uint16_t)rng_next(d);
    if (id) {
        p->has_id = true;
        memcpy(p->id, id, DHT_ID_LEN);
    }
    d->n_pending++;
    if (purpose == P_JOIN)
        d->join_inflight++;

    uint8_t tid[DHT_TID_LEN] = {(uint8_t)(slot >> 8), (uint8_t)slot,
                                (uint8_t)(p->nonce >> 8), (uint8_t)p->nonce};
    struct krpc_msg *m = malloc(sizeof(*m));
    if (!m)
        goto fail;
    krpc_msg_init(m, KRPC_QUERY, tid, sizeof(tid), d->id);
    m->method = (uint8_t)method;
    m->ro = d->cfg.read_only;
    if (target)
        memcpy(m->target, target, DHT_ID_LEN);
    if (method == KRPC_Q_ANNOUNCE_PEER) {
        memcpy(m->token, token, token_len);
        m->token_len = (uint8_t)token_len;
        m->port = port;
        m->implied_port = implied_port;
    }
    int r = send_msg(d, to, m);
    free(m);
    if (r < 0)
        goto fail;
    d->st.queries_sent++;
    return 0;

fail:
    p->used = false;
    d->n_pending--;
    if (purpose == P_JOIN)
        d->join_inflight--;
    return -ENOMEM;
}

/* Is one of our queries to addr awaiting an answer? */
static bool
pending_to(const struct dht *d, const struct krpc_addr *addr)
{
    for (unsigned i = 0; i < DHT_MAX_PENDING; i++)
        if (d->pending[i].used && krpc_addr_equal(&d->pending[i].to, addr))
            return true;
    return false;
}

/* --- routing table --- */

static unsigned
bucket_index(const struct dht *d, const uint8_t *id)
{
    unsigned cpl = common_prefix(d->id, id);
    return cpl < d->n_buckets ? cpl : d->n_buckets - 1;
}

static bool
node_good(const struct dht_node *n, uint64_t now)
{
    if (n->fails >= DHT_MAX_FAILS || n->last_reply == 0)
        return false;
    return now - n->last_reply < DHT_GOOD_MS ||
           (n->last_query && now - n->last_query < DHT_GOOD_MS);
}

static bool
node_bad(const struct dht_node *n)
{
    return n->fails >= DHT_MAX_FAILS;
}

static struct dht_node *
table_find(struct dht *d, const uint8_t *id, bool *ret_repl)
{
    struct dht_bucket *b = d->buckets[bucket_index(d, id)];
    for (unsigned i = 0; i < b->n; i++)
        if (memcmp(b->nodes[i].n.id, id, DHT_ID_LEN) == 0) {
            if (ret_repl)
                *ret_repl = false;
            return &b->nodes[i];
        }
    for (unsigned i = 0; i < b->n_repl; i++)
        if (memcmp(b->repl[i].n.id, id, DHT_ID_LEN) == 0) {
            if (ret_repl)
                *ret_repl = true;
            return &b->repl[i];
        }
    return NULL;
}

/* Split the last bucket; false if it cannot be split. */
static bool
bucket_split(struct dht *d)
{
    if (d->n_buckets >= DHT_BUCKETS)
        return false;
    struct dht_bucket *nb = calloc(1, sizeof(*nb));
    if (!nb)
        return false;
    unsigned old = d->n_buckets - 1;
    struct dht_bucket *ob = d->buckets[old];
    d->buckets[d->n_buckets++] = nb;
    nb->last_changed = ob->last_changed;
    nb->last_refresh = 0;
    unsigned k = 0;
    for (unsigned i = 0; i < ob->n; i++) {
        if (common_prefix(d->id, ob->nodes[i].n.id) > old)
            nb->nodes[nb->n++] = ob->nodes[i];
        else
            ob->nodes[k++] = ob->nodes[i];
    }
    ob->n = (uint8_t)k;
    k = 0;
    for (unsigned i = 0; i < ob->n_repl; i++) {
        if (common_prefix(d->id, ob->repl[i].n.id) > old)
            nb->repl[nb->n_repl++] = ob->repl[i];
        else
            ob->repl[k++] = ob->repl[i];
    }
    ob->n_repl = (uint8_t)k;
    return true;
}

/* Put a node into the replacement cache of b, evicting the least useful
 * entry (non-compliant first, then the oldest answer) when full. */
static void
repl_add(struct dht_bucket *b, const struct dht_node *n)
{
    if (b->n_repl < DHT_REPLACEMENTS) {
        b->repl[b->n_repl++] = *n;
        return;
    }
    unsigned worst = 0;
    for (unsigned i = 1; i < b->n_repl; i++) {
        const struct dht_node *w = &b->repl[worst], *c = &b->repl[i];
        if ((w->compliant && !c->compliant) ||
            (w->compliant == c->compliant && c->last_reply < w->last_reply))
            worst = i;
    }
    struct dht_node *w = &b->repl[worst];
    if (n->compliant || !w->compliant)
        *w = *n;
}

/* Take the best replacement out of b's cache into *ret. */
static bool
repl_take(struct dht_bucket *b, struct dht_node *ret)
{
    if (b->n_repl == 0)
        return false;
    unsigned best = 0;
    for (unsigned i = 1; i < b->n_repl; i++) {
        const struct dht_node *w = &b->repl[best], *c = &b->repl[i];
        if ((!w->compliant && c->compliant) ||
            (w->compliant == c->compliant && c->last_reply > w->last_reply))
            best = i;
    }
    *ret = b->repl[best];
    b->repl[best] = b->repl[--b->n_repl];
    return true;
}

/* A node answered one of our queries: update or insert it. */
static void
table_heard(struct dht *d, const uint8_t *id, const struct krpc_addr *addr,
            uint64_t now)
{
    if (memcmp(id, d->id, DHT_ID_LEN) == 0 || addr->family != d->cfg.family)
        return;
    struct dht_node *n = table_find(d, id, NULL);
    if (n) {
        if (!krpc_addr_equal(&n->n.addr, addr))
            return; /* same id elsewhere: keep the one we know */
        n->last_reply = now;
        n->fails = 0;
        d->buckets[bucket_index(d, id)]->last_changed = now;
        return;
    }
    struct dht_node nn = {.last_reply = now};
    memcpy(nn.n.id, id, DHT_ID_LEN);
    nn.n.addr = *addr;
    nn.compliant = dht_id_check(id, addr);
    if (!nn.compliant)
        d->st.non_compliant++;
    for (;;) {
        unsigned idx = bucket_index(d, id);
        struct dht_bucket *b = d->buckets[idx];
        if (b->n < DHT_K) {
            b->nodes[b->n++] = nn;
            b->last_changed = now;
            return;
        }
        if (idx == d->n_buckets - 1 && bucket_split(d))
            continue;
        for (unsigned i = 0; i < b->n; i++)
            if (node_bad(&b->nodes[i])) {
                b->nodes[i] = nn;
                b->last_changed = now;
                return;
            }
        if (nn.compliant)
            for (unsigned i = 0; i < b->n; i++)
                if (!b->nodes[i].compliant && !node_good(&b->nodes[i], now)) {
                    b->nodes[i] = nn;
                    b->last_changed = now;
                    return;
                }
        repl_add(b, &nn);
        return;
    }
}

/* A query to a table node went unanswered. */
static void
table_failed(struct dht *d, const uint8_t *id, const struct krpc_addr *addr)
{
    bool in_repl;
    struct dht_node *n = table_find(d, id, &in_repl);
    if (!n || !krpc_addr_equal(&n->n.addr, addr))
        return;
    if (n->fails < UINT8_MAX)
        n->fails++;
    struct dht_bucket *b = d->buckets[bucket_index(d, id)];
    if (in_repl) {
        if (node_bad(n))
            *n = b->repl[--b->n_repl];
        return;
    }
    struct dht_node r;
    if (node_bad(n) && repl_take(b, &r))
        *n = r;
}

/* Would a new node with this id get into the table? */
static bool
table_has_room(const struct dht *d, const uint8_t *id)
{
    unsigned idx = bucket_index(d, id);
    const struct dht_bucket *b = d->buckets[idx];
    if (b->n < DHT_K || (idx == d->n_buckets - 1 && d->n_buckets < DHT_BUCKETS))
        return true;
    for (unsigned i = 0; i < b->n; i++)
        if (node_bad(&b->nodes[i]))
            return true;
    return false;
}

/* Up to max non-bad table nodes (only good ones if only_good) of the
 * given family, closest to target first. */
static size_t
table_closest(const struct dht *d, const uint8_t *target, struct krpc_node *ret,
              size_t max, bool only_good, uint64_t now)
{
    size_t n = 0;
    if (max == 0)
        return 0;
    for (unsigned bi = 0; bi < d->n_buckets; bi++) {
        const struct dht_bucket *b = d->buckets[bi];
        for (unsigned i = 0; i < b->n; i++) {
            const struct dht_node *x = &b->nodes[i];
            if (node_bad(x) || (only_good && !node_good(x, now)))
                continue;
            /* insertion into the sorted result */
            size_t pos = n;
            while (pos > 0 && xor_cmp(target, x->n.id, ret[pos - 1].id) < 0)
                pos--;
            if (pos >= max)
                continue;
            size_t last = n < max ? n : max - 1;
            memmove(&ret[pos + 1], &ret[pos], (last - pos) * sizeof(*ret));
            ret[pos] = x->n;
            if (n < max)
                n++;
        }
    }
    return n;
}

size_t
dht_closest(const struct dht *d, const uint8_t target[DHT_ID_LEN],
            struct krpc_node *ret, size_t n, uint64_t now)
{
    return table_closest(d, target, ret, n, true, now);
}

/* Has addr answered us (is it a node of our table or its caches)? */
static bool
verified(struct dht *d, const uint8_t *id, const struct krpc_addr *addr)
{
    struct dht_node *n = table_find(d, id, NULL);
    return n && n->last_reply && krpc_addr_equal(&n->n.addr, addr);
}

/* --- rate limit --- */

static uint64_t
rate_hash(const struct dht *d, const struct krpc_addr *a)
{
    uint64_t h = d->rate_salt;
    size_t n = a->family == 4 ? 4 : 8;
    for (size_t i = 0; i < n; i++)
        h = (h ^ a->addr[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

/* True if a datagram from addr may be handled now. */
static bool
rate_allow(struct dht *d, const struct krpc_addr *a, uint64_t now)
{
    uint64_t rate =
        d->cfg.rate_per_sec ? d->cfg.rate_per_sec : DHT_RATE_PER_SEC;
    uint64_t burst =
        (d->cfg.rate_burst ? d->cfg.rate_burst : DHT_RATE_BURST) * 1000ull;
    /* An IPv6 source is its /64: whoever has one has all of it. */
    size_t alen = a->family == 4 ? 4 : 8;
    unsigned h = (unsigned)(rate_hash(d, a) % DHT_RATE_SLOTS);
    struct dht_rate *victim = NULL;
    for (unsigned k = 0; k < DHT_RATE_PROBE; k++) {
        struct dht_rate *s = &d->rate[(h + k) % DHT_RATE_SLOTS];
        if (s->family == a->family && memcmp(s->ip, a->addr, alen) == 0) {
            uint64_t el = now - s->last;
            uint64_t t = s->milli + (el > 100000 ? 100000 : el) * rate;
            s->milli = (uint32_t)(t > burst ? burst : t);
            s->last = now;
            if (s->milli < 1000)
                return false;
            s->milli -= 1000;
            return true;
        }
        if (!victim || s->family == 0 ||
            (victim->family != 0 && s->last < victim->last))
            victim = s;
    }
    /* A new source, or one forgotten: start with a full bucket. */
    memset(victim, 0, sizeof(*victim));
    victim->family = a->family;
    memcpy(victim->ip, a->addr, alen);
    victim->milli = (uint32_t)(burst - 1000);
    victim->last = now;
    return true;
}

/* --- tokens --- */

static void
make_token(const uint8_t secret[20], const struct krpc_addr *ip,
           uint8_t out[DHT_TOKEN_LEN])
{
    uint8_t in[20 + 16], md[EVP_MAX_MD_SIZE];
    size_t n = ip->family == 4 ? 4 : 16;
    memcpy(in, secret, 20);
    memcpy(in + 20, ip->addr, n);
    unsigned int mdlen = 0;
    if (EVP_Digest(in, 20 + n, md, &mdlen, EVP_sha1(), NULL) != 1)
        memset(md, 0, sizeof(md)); /* no token matches a zero digest */
    memcpy(out, md, DHT_TOKEN_LEN);
}

static bool
token_ok(const struct dht *d, const struct krpc_addr *ip, const uint8_t *tok,
         size_t len)
{
    uint8_t t[DHT_TOKEN_LEN];
    if (len != DHT_TOKEN_LEN)
        return false;
    make_token(d->secret, ip, t);
    if (memcmp(t, tok, DHT_TOKEN_LEN) == 0)
        return true;
    make_token(d->prev_secret, ip, t);
    return memcmp(t, tok, DHT_TOKEN_LEN) == 0;
}

/* --- storage --- */

static struct dht_store *
store_find(struct dht *d, const uint8_t *hash)
{
    for (unsigned i = 0; i < d->n_store; i++)
        if (memcmp(d->store[i].hash, hash, DHT_ID_LEN) == 0)
            return &d->store[i];
    return NULL;
}

static void
store_sweep(struct dht *d, uint64_t now)
{
    d->last_sweep = now;
    for (unsigned i = 0; i < d->n_store;) {
        struct dht_store *s = &d->store[i];
        for (unsigned j = 0; j < s->n;) {
            if (s->peers[j].expires <= now) {
                s->peers[j] = s->peers[--s->n];
                d->n_stored_peers--;
            } else {
                j++;
            }
        }
        if (s->n == 0) {
            free(s->peers);
            d->store[i] = d->store[--d->n_store];
        } else {
            i++;
        }
    }
}

/* Store a peer.  Returns 0, 1 if refused (full), -ENOMEM. */
static int
store_add(struct dht *d, const uint8_t *hash, const struct krpc_addr *peer,
          uint64_t now)
{
    struct dht_store *s = store_find(d, hash);
    if (!s || s->n >= s->cap) {
        if ((d->n_stored_peers >= DHT_STORE_MAX_PEERS ||
             (!s && d->n_store >= DHT_STORE_MAX_HASHES)) &&
            now - d->last_sweep >= DHT_MAINT_MS) {
            store_sweep(d, now);
            s = store_find(d, hash);
        }
    }
    if (!s) {
        if (d->n_store >= DHT_STORE_MAX_HASHES ||
            d->n_stored_peers >= DHT_STORE_MAX_PEERS)
            return 1;
        if (d->n_store == d->cap_store) {
            unsigned nc = d->cap_store ? d->cap_store * 2 : 16;
            struct dht_store *ns = reallocarray(d->store, nc, sizeof(*ns));
            if (!ns)
                return -ENOMEM;
            d->store = ns;
            d->cap_store = nc;
        }
        s = &d->store[d->n_store];
        memset(s, 0, sizeof(*s));
        memcpy(s->hash, hash, DHT_ID_LEN);
        d->n_store++;
    }
    for (unsigned i = 0; i < s->n; i++)
        if (krpc_addr_same_ip(&s->peers[i].addr, peer)) {
            s->peers[i].addr.port = peer->port;
            s->peers[i].expires = now + DHT_PEER_TTL_MS;
            return 0;
        }
    if (s->n >= DHT_STORE_MAX_PER_HASH) {
        /* Full: the peer closest to expiry makes room. */
        unsigned o = 0;
        for (unsigned i = 1; i < s->n; i++)
            if (s->peers[i].expires < s->peers[o].expires)
                o = i;
        s->peers[o].addr = *peer;
        s->peers[o].expires = now + DHT_PEER_TTL_MS;
        return 0;
    }
    if (d->n_stored_peers >= DHT_STORE_MAX_PEERS)
        return 1;
    if (s->n == s->cap) {
        unsigned nc = s->cap ? s->cap * 2 : 4;
        if (nc > DHT_STORE_MAX_PER_HASH)
            nc = DHT_STORE_MAX_PER_HASH;
        struct dht_peer *np = reallocarray(s->peers, nc, sizeof(*np));
        if (!np) {
            if (s->n == 0) { /* do not leave an empty entry behind */
                free(s->peers);
                *s = d->store[--d->n_store];
            }
            return -ENOMEM;
        }
        s->peers = np;
        s->cap = nc;
    }
    s->peers[s->n].addr = *peer;
    s->peers[s->n].expires = now + DHT_PEER_TTL_MS;
    s->n++;
    d->n_stored_peers++;
    return 0;
}

/* --- answering queries --- */

/* Fill nodes/nodes6 of a response for target, per want. */
static void
fill_nodes(struct dht *d, struct krpc_msg *r, const struct krpc_msg *q,
           uint64_t now)
{
    unsigned want = q->has & KRPC_HAS_WANT ? q->want : 0;
    if (!want)
        want = d->cfg.family == 4 ? KRPC_WANT_N4 : KRPC_WANT_N6;
    struct dht *d4 = d->cfg.family == 4 ? d : d->sibling;
    struct dht *d6 = d->cfg.family == 6 ? d : d->sibling;
    if ((want & KRPC_WANT_N4) && d4) {
        r->n_nodes =
            (uint16_t)table_closest(d4, q->target, r->nodes, DHT_K, false, now);
        r->has |= KRPC_HAS_NODES;
    }
    if ((want & KRPC_WANT_N6) && d6) {
        r->n_nodes6 = (uint16_t)table_closest(d6, q->target, r->nodes6, DHT_K,
                                              false, now);
        r->has |= KRPC_HAS_NODES6;
    }
}

/* Encode and send r, trimmed to the amplification budget when the
 * querier is unverified. */
static void
send_response(struct dht *d, const struct krpc_addr *to, struct krpc_msg *r,
              size_t budget)
{
    memcpy(r->v, d->cfg.version, 4);
    r->v_len = 4;
    r->has |= KRPC_HAS_V;
    struct buf b;
    buf_init(&b, KRPC_MAX_DATAGRAM);
    for (;;) {
        buf_reset(&b);
        int n = krpc_encode(&b, r);
        if (n < 0 && n != -EMSGSIZE)
            break;
        if (n > 0 && (size_t)n <= budget) {
            d->cfg.send(d->cfg.send_ud, to, (const uint8_t *)b.data, b.len);
            d->st.bytes_sent += b.len;
            break;
        }
        /* Too big: shed nodes6, then nodes, then values (what a
         * get_peers is for). */
        if (r->n_nodes6 > 0)
            r->n_nodes6 = r->n_nodes6 > 1 ? r->n_nodes6 / 2 : 0;
        else if (r->n_nodes > 0)
            r->n_nodes = r->n_nodes > 1 ? r->n_nodes / 2 : 0;
        else if (r->n_values > 0)
            r->n_values = r->n_values > 1 ? r->n_values / 2 : 0;
        else
            break; /* even the bare answer is too big: stay silent */
    }
    buf_release(&b);
}

static void
handle_query(struct dht *d, const struct krpc_addr *from,
             const struct krpc_msg *q, size_t qlen, uint64_t now)
{
    d->st.queries_received++;
    if (memcmp(q->id, d->id, DHT_ID_LEN) == 0)
        return;

    /* The table: a known node is seen; an unknown one is pinged when it
     * could get in, unless it is read-only (BEP 43). */
    struct dht_node *n = table_find(d, q->id, NULL);
    if (n && krpc_addr_equal(&n->n.addr, from))
        n->last_query = now;
    else if (!n && !q->ro && d->join_inflight < DHT_JOIN_PINGS &&
             table_has_room(d, q->id) && !pending_to(d, from))
        (void)send_query(d, from, q->id, KRPC_Q_PING, NULL, P_JOIN, 0, NULL, 0,
                         0, false, now);

    if (q->method == KRPC_Q_UNKNOWN) {
        send_error(d, from, q->tid, q->tid_len, KRPC_ERR_METHOD,
                   "Method Unknown");
        return;
    }
    struct krpc_msg *r = malloc(sizeof(*r));
    if (!r)
        return;
    krpc_msg_init(r, KRPC_RESPONSE, q->tid, q->tid_len, d->id);
    r->ip = *from;
    r->has |= KRPC_HAS_IP;
    switch (q->method) {
    case KRPC_Q_PING:
        break;
    case KRPC_Q_FIND_NODE:
        fill_nodes(d, r, q, now);
        break;
    case KRPC_Q_GET_PEERS: {
        make_token(d->secret, from, r->token);
        r->token_len = DHT_TOKEN_LEN;
        r->has |= KRPC_HAS_TOKEN;
        struct dht_store *s = store_find(d, q->target);
        if (s) {
            unsigned start = s->n ? (unsigned)(rng_next(d) % s->n) : 0;
            for (unsigned i = 0; i < s->n && r->n_values < DHT_MAX_VALUES_REPLY;
                 i++) {
                const struct dht_peer *p = &s->peers[(start + i) % s->n];
                if (p->expires > now)
                    r->values[r->n_values++] = p->addr;
            }
        }
        /* Values and nodes both, as libtorrent and jech/dht do: a lookup
         * passing through a node that stores peers still converges. */
        if (r->n_values > 0)
            r->has |= KRPC_HAS_VALUES;
        fill_nodes(d, r, q, now);
        break;
    }
    case KRPC_Q_ANNOUNCE_PEER: {
        if (!token_ok(d, from, q->token, q->token_len)) {
            d->st.announces_refused++;
            free(r);
            send_error(d, from, q->tid, q->tid_len, KRPC_ERR_PROTOCOL,
                       "bad token");
            return;
        }
        struct krpc_addr peer = *from;
        if (!q->implied_port)
            peer.port = q->port;
        int e = store_add(d, q->target, &peer, now);
        if (e < 0) {
            free(r);
            send_error(d, from, q->tid, q->tid_len, KRPC_ERR_SERVER,
                       "out of memory");
            return;
        }
        if (e == 0)
            d->st.announces_stored++;
        else
            d->st.announces_refused++; /* full: answer anyway */
        break;
    }
    default:
        break;
    }
    size_t budget = KRPC_MAX_DATAGRAM;
    if (!verified(d, q->id, from))
        budget = DHT_AMPLIFY_MAX * qlen;
    send_response(d, from, r, budget);
    free(r);
}

/* --- lookups --- */

static struct dht_lk *
lookup_get(struct dht *d, int handle)
{
    if (handle <= 0)
        return NULL;
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
        if (d->lookups[i] && d->lookups[i]->handle == handle)
            return d->lookups[i];
    return NULL;
}

/* Insert a candidate (sorted); returns it or NULL if it did not fit or
 * is known already. */
static struct dht_cand *
lk_add(struct dht *d, struct dht_lk *lk, const struct krpc_node *node,
       uint8_t state)
{
    if (node->addr.family != d->cfg.family || node->addr.port == 0 ||
        memcmp(node->id, d->id, DHT_ID_LEN) == 0)
        return NULL;
    unsigned pos = lk->n;
    for (unsigned i = 0; i < lk->n; i++) {
        int c = xor_cmp(lk->p.target, node->id, lk->c[i].node.id);
        if (c == 0)
            return NULL;
        if (c < 0 && pos == lk->n)
            pos = i;
    }
    if (pos >= DHT_LOOKUP_NODES)
        return NULL;
    unsigned last = lk->n < DHT_LOOKUP_NODES ? lk->n : DHT_LOOKUP_NODES - 1;
    memmove(&lk->c[pos + 1], &lk->c[pos], (last - pos) * sizeof(lk->c[0]));
    if (lk->n < DHT_LOOKUP_NODES)
        lk->n++;
    struct dht_cand *c = &lk->c[pos];
    memset(c, 0, sizeof(*c));
    c->node = *node;
    c->state = state;
    return c;
}

static struct dht_cand *
lk_find(struct dht_lk *lk, const uint8_t *id)
{
    for (unsigned i = 0; i < lk->n; i++)
        if (memcmp(lk->c[i].node.id, id, DHT_ID_LEN) == 0)
            return &lk->c[i];
    return NULL;
}

static void
lk_finish(struct dht *d, struct dht_lk *lk, bool timed_out, uint64_t now)
{
    struct dht_lookup_result *res = calloc(1, sizeof(*res));
    if (res) {
        res->handle = lk->handle;
        res->kind = lk->p.kind;
        memcpy(res->target, lk->p.target, DHT_ID_LEN);
        res->timed_out = timed_out;
        res->queries = lk->queries;
        res->answers = lk->answers;
        res->peers = lk->peers;
        res->ms = now - lk->started;
        for (unsigned i = 0; i < lk->n && res->n_nodes < DHT_K; i++) {
            const struct dht_cand *c = &lk->c[i];
            if (c->state != C_DONE)
                continue;
            struct dht_result_node *rn = &res->nodes[res->n_nodes++];
            rn->node = c->node;
            rn->token_len = c->token_len;
            memcpy(rn->token, c->token, c->token_len);
            if (lk->p.kind == DHT_LOOKUP_ANNOUNCE && c->token_len &&
                send_query(d, &c->node.addr, c->node.id, KRPC_Q_ANNOUNCE_PEER,
                           lk->p.target, P_ANNOUNCE, 0, c->token, c->token_len,
                           lk->p.port, lk->p.implied_port, now) == 0)
                res->announced++;
        }
    }
    d->st.lookups_finished++;
    if (!lk->maint) {
        d->durations[d->durations_pos] = now - lk->started;
        d->durations_pos = (d->durations_pos + 1) % DHT_STATS_LOOKUPS;
        if (d->n_durations < DHT_STATS_LOOKUPS)
            d->n_durations++;
    }
    if (lk->handle == d->refresh_handle)
        d->refresh_handle = 0;
    struct dht_lookup_params p = lk->p;
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
        if (d->lookups[i] == lk) {
            d->lookups[i] = NULL;
            break;
        }
    free(lk);
    if (res && p.on_done)
        p.on_done(p.ud, res);
    free(res);
}

/* Send what may be sent; finish when done.  Returns false if finished. */
static bool
lk_step(struct dht *d, struct dht_lk *lk, uint64_t now)
{
    if (now - lk->started >= DHT_LOOKUP_MAX_MS) {
        lk_finish(d, lk, true, now);
        return false;
    }
    bool busy = false; /* one of the K closest live is not done */
    unsigned live = 0;
    for (unsigned i = 0; i < lk->n && live < DHT_K; i++) {
        struct dht_cand *c = &lk->c[i];
        if (c->state == C_FAILED)
            continue;
        live++;
        if (c->state == C_NEW && lk->inflight < DHT_ALPHA &&
            lk->queries < DHT_LOOKUP_MAX_QUERIES) {
            enum krpc_method m = lk->p.kind == DHT_LOOKUP_FIND_NODE
                                     ? KRPC_Q_FIND_NODE
                                     : KRPC_Q_GET_PEERS;
            if (send_query(d, &c->node.addr, c->node.id, m, lk->p.target,
                           P_LOOKUP, lk->handle, NULL, 0, 0, false, now) == 0) {
                c->state = C_SENT;
                lk->inflight++;
                lk->queries++;
                d->st.lookup_queries++;
            }
        }
        if (c->state != C_DONE)
            busy = true;
    }
    /* Done when the K closest live candidates have all answered (queries
     * still out to farther ones cannot change that), or when fewer are
     * known and nothing is out that could bring more. */
    if (!busy && live < DHT_K && lk->inflight > 0)
        busy = true;
    if (!busy || (lk->queries >= DHT_LOOKUP_MAX_QUERIES && lk->inflight == 0)) {
        lk_finish(d, lk, busy, now);
        return false;
    }
    return true;
}

int
dht_lookup(struct dht *d, const struct dht_lookup_params *p, uint64_t now)
{
    if (p->kind >= DHT_LOOKUP_KIND_MAX)
        return -EINVAL;
    unsigned slot = DHT_MAX_LOOKUPS;
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
        if (!d->lookups[i]) {
            slot = i;
            break;
        }
    if (slot == DHT_MAX_LOOKUPS)
        return -ENOSPC;
    struct dht_lk *lk = calloc(1, sizeof(*lk));
    if (!lk)
        return -ENOMEM;
    lk->p = *p;
    lk->started = now;
    if (d->next_handle <= 0 || d->next_handle == INT32_MAX)
        d->next_handle = 1;
    lk->handle = d->next_handle++;
    d->lookups[slot] = lk;
    d->st.lookups_started++;
    struct krpc_node seeds[DHT_SEED_NODES];
    size_t n = table_closest(d, p->target, seeds, DHT_SEED_NODES, false, now);
    for (size_t i = 0; i < n; i++)
        (void)lk_add(d, lk, &seeds[i], C_NEW);
    int h = lk->handle;
    /* With nothing to ask, it ends at the next dht_periodic. */
    if (lk->n > 0)
        (void)lk_step(d, lk, now);
    return h;
}

int
dht_lookup_cancel(struct dht *d, int handle)
{
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
        if (d->lookups[i] && d->lookups[i]->handle == handle) {
            if (handle == d->refresh_handle)
                d->refresh_handle = 0;
            free(d->lookups[i]);
            d->lookups[i] = NULL;
            return 0;
        }
    return -ENOENT;
}

int
dht_bootstrap(struct dht *d, const struct krpc_addr *addrs, size_t n,
              uint64_t now)
{
    struct dht_lookup_params p = {.kind = DHT_LOOKUP_FIND_NODE};
    memcpy(p.target, d->id, DHT_ID_LEN);
    int h = dht_lookup(d, &p, now);
    if (h < 0)
        return h;
    struct dht_lk *lk = lookup_get(d, h);
    if (!lk)
        return h; /* already finished */
    lk->maint = true;
    for (size_t i = 0; i < n && i < DHT_BOOTSTRAP_MAX; i++) {
        if (send_query(d, &addrs[i], NULL, KRPC_Q_FIND_NODE, d->id, P_LOOKUP, h,
                       NULL, 0, 0, false, now) == 0) {
            lk->inflight++;
            lk->queries++;
            d->st.lookup_queries++;
        }
    }
    /* Buckets that are not full are refreshed soon after. */
    for (unsigned i = 0; i < d->n_buckets; i++)
        d->buckets[i]->last_refresh = 0;
    return h;
}

static void
lk_response(struct dht *d, struct dht_lk *lk, const struct dht_pending *pd,
            const struct krpc_addr *from, const struct krpc_msg *m,
            uint64_t now)
{
    if (lk->inflight > 0)
        lk->inflight--;
    struct dht_cand *asked = pd->has_id ? lk_find(lk, pd->id) : NULL;
    if (m->type == KRPC_ERROR_MSG) {
        if (asked && asked->state == C_SENT)
            asked->state = C_FAILED;
        (void)lk_step(d, lk, now);
        return;
    }
    if (asked && memcmp(asked->node.id, m->id, DHT_ID_LEN) != 0) {
        /* Someone else answers at that address: the one we asked is
         * gone. */
        if (asked->state == C_SENT)
            asked->state = C_FAILED;
        asked = NULL;
    }
    struct dht_cand *c = asked ? asked : lk_find(lk, m->id);
    if (c && !krpc_addr_equal(&c->node.addr, from))
        c = NULL;
    else if (!c) {
        /* A bootstrap address, or a candidate dropped from the list. */
        struct krpc_node self = {.addr = *from};
        memcpy(self.id, m->id, DHT_ID_LEN);
        c = lk_add(d, lk, &self, C_DONE);
    }
    lk->answers++;
    if (c) {
        c->state = C_DONE;
        if (m->has & KRPC_HAS_TOKEN) {
            memcpy(c->token, m->token, m->token_len);
            c->token_len = m->token_len;
        }
    }
    const struct krpc_node *nodes = d->cfg.family == 4 ? m->nodes : m->nodes6;
    size_t nn = d->cfg.family == 4 ? m->n_nodes : m->n_nodes6;
    for (size_t i = 0; i < nn; i++)
        (void)lk_add(d, lk, &nodes[i], C_NEW);
    if (m->n_values > 0 && lk->p.kind != DHT_LOOKUP_FIND_NODE) {
        lk->peers += m->n_values;
        if (lk->p.on_peers) {
            int h = lk->handle;
            lk->p.on_peers(lk->p.ud, h, lk->p.target, m->values, m->n_values);
            lk = lookup_get(d, h); /* the callback may have cancelled it */
            if (!lk)
                return;
        }
    }
    (void)lk_step(d, lk, now);
}

/* --- responses --- */

static void
vote_ip(struct dht *d, const struct krpc_addr *ip)
{
    struct dht_vote *free_slot = NULL;
    for (unsigned i = 0; i < DHT_IP_VOTE_SLOTS; i++) {
        struct dht_vote *v = &d->votes[i];
        if (v->count && krpc_addr_same_ip(&v->ip, ip)) {
            v->count++;
            return;
        }
        if (!v->count && !free_slot)
            free_slot = v;
    }
    if (free_slot) {
        free_slot->ip = *ip;
        free_slot->ip.port = 0;
        free_slot->count = 1;
        return;
    }
    /* Misra-Gries: all full, everyone loses one. */
    for (unsigned i = 0; i < DHT_IP_VOTE_SLOTS; i++)
        d->votes[i].count--;
}

static void
handle_reply(struct dht *d, const struct krpc_addr *from,
             const struct krpc_msg *m, uint64_t now)
{
    if (m->tid_len != DHT_TID_LEN)
        return;
    unsigned slot = (unsigned)m->tid[0] << 8 | m->tid[1];
    uint16_t nonce = (uint16_t)(m->tid[2] << 8 | m->tid[3]);
    if (slot >= DHT_MAX_PENDING)
        return;
    struct dht_pending *p = &d->pending[slot];
    if (!p->used || p->nonce != nonce || !krpc_addr_equal(&p->to, from))
        return;
    struct dht_pending pd = *p;
    p->used = false;
    d->n_pending--;
    if (pd.purpose == P_JOIN)
        d->join_inflight--;

    if (m->type == KRPC_ERROR_MSG) {
        d->st.errors_received++;
    } else {
        d->st.responses_received++;
        if (pd.has_id && memcmp(pd.id, m->id, DHT_ID_LEN) != 0) {
            /* Another node at that address now: the old one is gone. */
            table_failed(d, pd.id, from);
        }
        if (m->has & KRPC_HAS_IP)
            vote_ip(d, &m->ip);
        if (!m->ro)
            table_heard(d, m->id, from, now);
    }
    if (pd.purpose == P_LOOKUP) {
        struct dht_lk *lk = lookup_get(d, pd.lookup);
        if (lk)
            lk_response(d, lk, &pd, from, m, now);
    }
}

int
dht_receive(struct dht *d, const struct krpc_addr *from, const uint8_t *data,
            size_t len, uint64_t now)
{
    if (from->family != d->cfg.family || from->port == 0)
        return 0;
    if (!rate_allow(d, from, now)) {
        d->st.rate_limited++;
        return 1;
    }
    d->st.bytes_received += len;
    struct krpc_msg *m = malloc(sizeof(*m));
    if (!m)
        return KRPC_E_NOMEM;
    struct krpc_parse_error pe;
    int r = krpc_parse(m, data, len, &pe);
    if (r < 0) {
        d->st.malformed++;
        if (pe.can_reply && !d->cfg.read_only && r != KRPC_E_NOMEM)
            send_error(d, from, pe.tid, pe.tid_len, pe.code, krpc_strerror(r));
        free(m);
        return r;
    }
    if (m->type == KRPC_QUERY) {
        if (!d->cfg.read_only)
            handle_query(d, from, m, len, now);
    } else {
        handle_reply(d, from, m, now);
    }
    free(m);
    return 0;
}

/* --- periodic work --- */

static void
expire_pending(struct dht *d, uint64_t now)
{
    for (unsigned i = 0; i < DHT_MAX_PENDING && d->n_pending > 0; i++) {
        struct dht_pending *p = &d->pending[i];
        if (!p->used || now - p->sent < DHT_RPC_TIMEOUT_MS)
            continue;
        struct dht_pending pd = *p;
        p->used = false;
        d->n_pending--;
        d->st.timeouts++;
        if (pd.purpose == P_JOIN)
            d->join_inflight--;
        if (pd.has_id)
            table_failed(d, pd.id, &pd.to);
        if (pd.purpose == P_LOOKUP) {
            struct dht_lk *lk = lookup_get(d, pd.lookup);
            if (!lk)
                continue;
            if (lk->inflight > 0)
                lk->inflight--;
            struct dht_cand *c = pd.has_id ? lk_find(lk, pd.id) : NULL;
            if (c && c->state == C_SENT)
                c->state = C_FAILED;
            (void)lk_step(d, lk, now);
        }
    }
}

static void
random_id_in_bucket(struct dht *d, unsigned idx, uint8_t out[DHT_ID_LEN])
{
    rng_bytes(d, out, DHT_ID_LEN);
    unsigned bits = idx + 1 < d->n_buckets ? idx + 1 : idx;
    for (unsigned i = 0; i < bits; i++) {
        uint8_t mask = (uint8_t)(0x80 >> (i % 8));
        uint8_t want = d->id[i / 8] & mask;
        if (i == idx && idx + 1 < d->n_buckets)
            want ^= mask; /* the first bit that differs */
        out[i / 8] = (uint8_t)((out[i / 8] & ~mask) | want);
    }
}

static void
maintenance(struct dht *d, uint64_t now)
{
    if (now >= d->secret_next) {
        memcpy(d->prev_secret, d->secret, 20);
        new_secret(d, d->secret);
        d->secret_next = now + DHT_SECRET_MS;
    }
    if (now - d->last_sweep >= DHT_STORE_SWEEP_MS)
        store_sweep(d, now);

    unsigned pings = 0;
    int refresh = -1;
    for (unsigned bi = 0; bi < d->n_buckets; bi++) {
        struct dht_bucket *b = d->buckets[bi];
        for (unsigned i = 0; i < b->n; i++) {
            struct dht_node *n = &b->nodes[i];
            struct dht_node r;
            if (node_bad(n) && repl_take(b, &r)) {
                *n = r;
                continue;
            }
            if (node_good(n, now) || node_bad(n) || pings >= DHT_MAINT_PINGS ||
                now - n->last_ping < DHT_PING_INTERVAL_MS)
                continue;
            /* Questionable: ask whether it is still there. */
            if (send_query(d, &n->n.addr, n->n.id, KRPC_Q_PING, NULL, P_PING, 0,
                           NULL, 0, 0, false, now) == 0) {
                n->last_ping = now;
                pings++;
            }
        }
        if (refresh < 0 &&
            (now - b->last_changed >= DHT_REFRESH_MS ||
             (b->n < DHT_K &&
              (b->last_refresh == 0 || now - b->last_refresh >= DHT_FILL_MS))))
            refresh = (int)bi;
    }
    if (refresh >= 0 && d->refresh_handle == 0) {
        struct dht_lookup_params p = {.kind = DHT_LOOKUP_FIND_NODE};
        random_id_in_bucket(d, (unsigned)refresh, p.target);
        /* once per period */
        d->buckets[refresh]->last_changed = now;
        d->buckets[refresh]->last_refresh = now;
        int h = dht_lookup(d, &p, now);
        struct dht_lk *lk = lookup_get(d, h);
        if (lk) {
            lk->maint = true;
            d->refresh_handle = h;
        }
    }
}

uint64_t
dht_periodic(struct dht *d, uint64_t now)
{
    expire_pending(d, now);
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++) {
        struct dht_lk *lk = d->lookups[i];
        if (lk)
            (void)lk_step(d, lk, now);
    }
    if (now >= d->maint_next) {
        maintenance(d, now);
        d->maint_next = now + DHT_MAINT_MS;
    }
    uint64_t next = d->maint_next;
    for (unsigned i = 0; i < DHT_MAX_PENDING; i++)
        if (d->pending[i].used &&
            d->pending[i].sent + DHT_RPC_TIMEOUT_MS < next)
            next = d->pending[i].sent + DHT_RPC_TIMEOUT_MS;
    return next > now ? next : now + 1;
}

int
dht_add_node(struct dht *d, const struct krpc_addr *addr, uint64_t now)
{
    if (addr->family != d->cfg.family || addr->port == 0)
        return -EINVAL;
    return send_query(d, addr, NULL, KRPC_Q_PING, NULL, P_PING, 0, NULL, 0, 0,
                      false, now);
}

/* --- life cycle --- */

struct dht *
dht_new(const struct dht_config *cfg, uint64_t now)
{
    if (!cfg->send || (cfg->family != 4 && cfg->family != 6))
        return NULL;
    struct dht *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->cfg = *cfg;
    static const uint8_t zero[4];
    if (memcmp(d->cfg.version, zero, 4) == 0)
        memcpy(d->cfg.version, "TD\0\1", 4);
    memcpy(d->id, cfg->id, DHT_ID_LEN);
    rng_seed(d, cfg->seed);
    d->rate_salt = rng_next(d);
    d->buckets[0] = calloc(1, sizeof(*d->buckets[0]));
    if (!d->buckets[0]) {
        free(d);
        return NULL;
    }
    d->buckets[0]->last_changed = now;
    d->n_buckets = 1;
    new_secret(d, d->secret);
    new_secret(d, d->prev_secret);
    d->secret_next = now + DHT_SECRET_MS;
    d->last_sweep = now;
    d->maint_next = now;
    d->next_handle = 1;
    return d;
}

void
dht_free(struct dht *d)
{
    if (!d)
        return;
    if (d->sibling && d->sibling->sibling == d)
        d->sibling->sibling = NULL;
    for (unsigned i = 0; i < d->n_buckets; i++)
        free(d->buckets[i]);
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
        free(d->lookups[i]);
    for (unsigned i = 0; i < d->n_store; i++)
        free(d->store[i].peers);
    free(d->store);
    free(d);
}

void
dht_set_sibling(struct dht *d4, struct dht *d6)
{
    if (d4)
        d4->sibling = d6;
    if (d6)
        d6->sibling = d4;
}

/* --- save / load --- */

int
dht_save(const struct dht *d, struct buf *b)
{
    uint8_t tmp[DHT_SAVE_NODES * KRPC_NODE6_LEN];
    size_t len = 0, n = 0;
    for (unsigned bi = 0; bi < d->n_buckets && n < DHT_SAVE_NODES; bi++) {
        const struct dht_bucket *bk = d->buckets[bi];
        for (unsigned i = 0; i < bk->n && n < DHT_SAVE_NODES; i++) {
            const struct dht_node *x = &bk->nodes[i];
            if (x->last_reply == 0 || node_bad(x) || x->fails > 0)
                continue;
            len += krpc_put_compact_node(tmp + len, &x->n);
            n++;
        }
    }
    int r = benc_put_dict(b);
    if (r == 0)
        r = benc_put_cstr(b, "id");
    if (r == 0)
        r = benc_put_str(b, d->id, DHT_ID_LEN);
    if (r == 0)
        r = benc_put_cstr(b, d->cfg.family == 4 ? "nodes" : "nodes6");
    if (r == 0)
        r = benc_put_str(b, tmp, len);
    if (r == 0)
        r = benc_put_end(b);
    return r;
}

static int
saved_parse(struct benc_doc *doc, const void *data, size_t len)
{
    static const struct benc_limits lim = {
        .max_input = 64u << 10, .max_depth = 4, .max_nodes = 64};
    if (benc_parse(doc, data, len, &lim, 0, NULL) < 0)
        return -EINVAL;
    size_t n;
    const uint8_t *id = benc_str(doc, benc_dict_get(doc, 0, "id"), &n);
    if (!id || n != DHT_ID_LEN) {
        benc_doc_release(doc);
        return -EINVAL;
    }
    return 0;
}

int
dht_saved_id(const void *data, size_t len, uint8_t ret_id[DHT_ID_LEN])
{
    struct benc_doc doc;
    if (saved_parse(&doc, data, len) < 0)
        return -EINVAL;
    memcpy(ret_id, benc_str(&doc, benc_dict_get(&doc, 0, "id"), NULL),
           DHT_ID_LEN);
    benc_doc_release(&doc);
    return 0;
}

int
dht_load(struct dht *d, const void *data, size_t len, uint64_t now)
{
    struct benc_doc doc;
    if (saved_parse(&doc, data, len) < 0)
        return -EINVAL;
    size_t n, entry = d->cfg.family == 4 ? KRPC_NODE4_LEN : KRPC_NODE6_LEN;
    const uint8_t *s = benc_str(
        &doc, benc_dict_get(&doc, 0, d->cfg.family == 4 ? "nodes" : "nodes6"),
        &n);
    struct krpc_addr addrs[DHT_BOOTSTRAP_MAX];
    size_t na = 0;
    for (size_t off = 0; s && off + entry <= n && na < DHT_BOOTSTRAP_MAX;
         off += entry) {
        struct krpc_node node;
        if (krpc_get_compact_node(&node, s + off, entry) && node.addr.port != 0)
            addrs[na++] = node.addr;
    }
    benc_doc_release(&doc);
    if (na == 0)
        return 0;
    int r = dht_bootstrap(d, addrs, na, now);
    return r < 0 ? r : (int)na;
}

/* --- status --- */

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void
dht_status(const struct dht *d, uint64_t now, struct dht_status *ret)
{
    *ret = d->st;
    memcpy(ret->id, d->id, DHT_ID_LEN);
    ret->family = d->cfg.family;
    ret->read_only = d->cfg.read_only;
    ret->n_buckets = d->n_buckets;
    memset(ret->bucket_nodes, 0, sizeof(ret->bucket_nodes));
    memset(ret->bucket_good, 0, sizeof(ret->bucket_good));
    ret->good = ret->questionable = ret->bad = ret->replacements = 0;
    for (unsigned bi = 0; bi < d->n_buckets; bi++) {
        const struct dht_bucket *b = d->buckets[bi];
        ret->bucket_nodes[bi] = b->n;
        ret->replacements += b->n_repl;
        for (unsigned i = 0; i < b->n; i++) {
            if (node_good(&b->nodes[i], now)) {
                ret->bucket_good[bi]++;
                ret->good++;
            } else if (node_bad(&b->nodes[i])) {
                ret->bad++;
            } else {
                ret->questionable++;
            }
        }
    }
    ret->stored_hashes = d->n_store;
    ret->stored_peers = d->n_stored_peers;
    ret->lookups_running = 0;
    for (unsigned i = 0; i < DHT_MAX_LOOKUPS; i++)
        if (d->lookups[i])
            ret->lookups_running++;
    ret->lookup_median_ms = 0;
    if (d->n_durations) {
        uint64_t t[DHT_STATS_LOOKUPS];
        memcpy(t, d->durations, d->n_durations * sizeof(t[0]));
        qsort(t, d->n_durations, sizeof(t[0]), cmp_u64);
        ret->lookup_median_ms = t[d->n_durations / 2];
    }
    ret->has_external_ip = false;
    ret->external_ip_votes = 0;
    for (unsigned i = 0; i < DHT_IP_VOTE_SLOTS; i++)
        if (d->votes[i].count > ret->external_ip_votes) {
            ret->external_ip_votes = d->votes[i].count;
            ret->external_ip = d->votes[i].ip;
            ret->has_external_ip = true;
        }
}
