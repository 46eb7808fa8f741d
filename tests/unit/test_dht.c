/* Unit tests for daemon/dht, deterministic, with no sockets: one node fed
 * hand-made datagrams (tokens, errors, storage, rate limits, the routing
 * table's splitting and replacement), and a simulated network of struct
 * dht nodes in one process, exchanging datagrams through an in-memory
 * queue on a simulated clock (bootstrap, tables filling, lookups finding
 * announced peers in a bounded number of messages, read-only nodes). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/krpc.h"
#include "daemon/dht.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t
splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
rand_bytes(uint64_t *s, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)splitmix(s);
}

static struct krpc_addr
addr4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port)
{
    struct krpc_addr x = {.family = 4, .port = port};
    x.addr[0] = a;
    x.addr[1] = b;
    x.addr[2] = c;
    x.addr[3] = d;
    return x;
}

/* ---------------------------------------------------------------------
 * One node and captured datagrams. */

#define CAP_MAX 4096

struct cap_pkt {
    struct krpc_addr to;
    size_t len;
    uint8_t data[KRPC_MAX_DATAGRAM];
};

struct cap {
    size_t n;
    size_t total;         /* ever sent */
    struct cap_pkt *pkts; /* CAP_MAX, a ring when full */
};

static void
cap_send(void *ud, const struct krpc_addr *to, const uint8_t *data, size_t len)
{
    struct cap *c = ud;
    assert_true(len <= KRPC_MAX_DATAGRAM);
    struct cap_pkt *p = &c->pkts[c->n % CAP_MAX];
    p->to = *to;
    p->len = len;
    memcpy(p->data, data, len);
    c->n++;
    c->total++;
}

static struct cap *
cap_new(void)
{
    struct cap *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->pkts = calloc(CAP_MAX, sizeof(*c->pkts));
    assert_non_null(c->pkts);
    return c;
}

static void
cap_free(struct cap *c)
{
    free(c->pkts);
    free(c);
}

static const uint8_t MY_ID[20] = {0x80, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
                                  0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                                  0xee, 0xff, 0x01, 0x02, 0x03, 0x04};

static struct dht *
one_node_family(struct cap *c, bool ro, uint8_t family, uint64_t now)
{
    struct dht_config cfg = {
        .family = family, .read_only = ro, .send = cap_send, .send_ud = c};
    memcpy(cfg.id, MY_ID, 20);
    memset(cfg.seed, 7, sizeof(cfg.seed));
    struct dht *d = dht_new(&cfg, now);
    assert_non_null(d);
    return d;
}

static struct dht *
one_node(struct cap *c, bool ro, uint64_t now)
{
    return one_node_family(c, ro, 4, now);
}

/* Parse captured packet i (from the end: 0 = last). */
static void
cap_msg(struct cap *c, size_t back, struct krpc_msg *m)
{
    assert_true(c->n > back);
    struct cap_pkt *p = &c->pkts[(c->n - 1 - back) % CAP_MAX];
    int r = krpc_parse(m, p->data, p->len, NULL);
    if (r != 0)
        fail_msg("captured datagram does not parse: %s", krpc_strerror(r));
}

/* Encode msg and feed it to d from addr. */
static int
feed(struct dht *d, const struct krpc_addr *from, const struct krpc_msg *m,
     uint64_t now)
{
    struct buf b;
    buf_init(&b, KRPC_MAX_DATAGRAM);
    assert_true(krpc_encode(&b, m) > 0);
    int r = dht_receive(d, from, (const uint8_t *)b.data, b.len, now);
    buf_release(&b);
    return r;
}

static struct krpc_msg *
new_msg(void)
{
    struct krpc_msg *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    return m;
}

/* A query from a client at addr with id. */
static void
make_query(struct krpc_msg *m, enum krpc_method meth, const uint8_t *id,
           const uint8_t *target)
{
    krpc_msg_init(m, KRPC_QUERY, (const uint8_t *)"qq", 2, id);
    m->method = (uint8_t)meth;
    if (target)
        memcpy(m->target, target, 20);
}

/* Answer d's last captured query (to addr) as node id, with no nodes. */
static void
answer_last(struct dht *d, struct cap *c, const uint8_t *id, uint64_t now)
{
    struct krpc_msg *q = new_msg(), *r = new_msg();
    cap_msg(c, 0, q);
    assert_int_equal(q->type, KRPC_QUERY);
    krpc_msg_init(r, KRPC_RESPONSE, q->tid, q->tid_len, id);
    if (q->method == KRPC_Q_FIND_NODE || q->method == KRPC_Q_GET_PEERS)
        r->has |= KRPC_HAS_NODES;
    struct krpc_addr to = c->pkts[(c->n - 1) % CAP_MAX].to;
    assert_int_equal(feed(d, &to, r, now), 0);
    free(q);
    free(r);
}

/* Make d know a node: ping it and answer as it. */
static void
learn(struct dht *d, struct cap *c, const uint8_t *id,
      const struct krpc_addr *addr, uint64_t now)
{
    assert_int_equal(dht_add_node(d, addr, now), 0);
    answer_last(d, c, id, now);
}

/* An id sharing exactly cpl leading bits with MY_ID, then the tag. */
static void
id_with_prefix(uint8_t out[20], unsigned cpl, uint8_t tag)
{
    memcpy(out, MY_ID, 20);
    out[cpl / 8] ^= (uint8_t)(0x80 >> (cpl % 8));
    /* vary the bits after the first difference */
    for (unsigned i = cpl / 8 + 1; i < 20; i++)
        out[i] = (uint8_t)(tag * 31 + i);
}

/* ---------------------------------------------------------------------
 * BEP 42. */

static void
test_bep42(void **state)
{
    (void)state;
    static const struct {
        uint8_t ip[4];
        uint8_t rnd;
        const char *id; /* the first 3 bytes matter (21 bits) */
    } v[] = {
        {{124, 31, 75, 21}, 1, "\x5f\xbf\xbf"},
        {{21, 75, 31, 124}, 86, "\x5a\x3c\xe9"},
        {{65, 23, 51, 170}, 22, "\xa5\xd4\x32"},
        {{84, 124, 73, 14}, 65, "\x1b\x03\x21"},
        {{43, 213, 53, 83}, 90, "\xe5\x6f\x6c"},
    };
    assert_int_equal(dht_crc32c((const uint8_t *)"123456789", 9), 0xe3069283u);
    for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
        struct krpc_addr a =
            addr4(v[i].ip[0], v[i].ip[1], v[i].ip[2], v[i].ip[3], 1);
        uint8_t rnd[20] = {0}, id[20];
        rnd[19] = v[i].rnd;
        dht_id_from_ip(id, &a, rnd);
        assert_int_equal(id[0], (uint8_t)v[i].id[0]);
        assert_int_equal(id[1], (uint8_t)v[i].id[1]);
        assert_int_equal(id[2] & 0xf8, (uint8_t)v[i].id[2] & 0xf8);
        assert_int_equal(id[19], v[i].rnd);
        assert_true(dht_id_check(id, &a));
        /* The BEP's own ids (their last 3 bits of byte 2 are random). */
        uint8_t bid[20] = {0};
        memcpy(bid, v[i].id, 3);
        bid[19] = v[i].rnd;
        assert_true(dht_id_check(bid, &a));
        bid[1] ^= 1;
        assert_false(dht_id_check(bid, &a));
        bid[1] ^= 1;
        bid[19] ^= 1; /* another r */
        assert_false(dht_id_check(bid, &a));
    }
    /* Local addresses are exempt. */
    uint8_t any[20] = {1, 2, 3};
    struct krpc_addr lo = addr4(127, 0, 0, 2, 1), pr = addr4(192, 168, 1, 1, 1);
    struct krpc_addr pub = addr4(8, 8, 8, 8, 1);
    assert_true(dht_id_check(any, &lo));
    assert_true(dht_id_check(any, &pr));
    assert_false(dht_id_check(any, &pub));
    /* IPv6 makes compliant ids too. */
    struct krpc_addr v6 = {.family = 6, .port = 1};
    memcpy(v6.addr,
           "\x20\x01\x0d\xb8\x12\x34\x56\x78\x9a\xbc\xde\xf0\x01\x02"
           "\x03\x04",
           16);
    uint8_t rnd[20], id[20];
    memset(rnd, 0x5a, 20);
    dht_id_from_ip(id, &v6, rnd);
    assert_true(dht_id_check(id, &v6));
}

/* ---------------------------------------------------------------------
 * Serving: ping, find_node, errors, tokens, storage. */

static void
test_serve_basic(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    struct krpc_msg *q = new_msg(), *r = new_msg();
    struct krpc_addr cli = addr4(5, 6, 7, 8, 4000);
    uint8_t cid[20];
    memset(cid, 0x42, 20);

    /* ping: answered with our id, "ip" and "v"; the unknown querier is
     * pinged back (it may join the table). */
    make_query(q, KRPC_Q_PING, cid, NULL);
    assert_int_equal(feed(d, &cli, q, now), 0);
    assert_int_equal(c->n, 2);
    cap_msg(c, 1, r); /* our ping to it */
    assert_int_equal(r->type, KRPC_QUERY);
    assert_int_equal(r->method, KRPC_Q_PING);
    assert_false(r->ro);
    cap_msg(c, 0, r);
    assert_int_equal(r->type, KRPC_RESPONSE);
    assert_memory_equal(r->id, MY_ID, 20);
    assert_memory_equal(r->tid, "qq", 2);
    assert_true(r->has & KRPC_HAS_IP);
    assert_true(krpc_addr_equal(&r->ip, &cli));
    assert_int_equal(r->v_len, 4);
    assert_memory_equal(r->v, "TD\0\1", 4);

    /* unknown method: 204 */
    c->n = 0;
    make_query(q, KRPC_Q_PING, cid, NULL);
    struct buf b;
    buf_init(&b, 2048);
    assert_int_equal(buf_puts(&b, "d1:ad2:id20:BBBBBBBBBBBBBBBBBBBBe"
                                  "1:q4:vote1:t2:xy1:y1:qe"),
                     0);
    assert_int_equal(dht_receive(d, &cli, (const uint8_t *)b.data, b.len, now),
                     0);
    cap_msg(c, 0, r);
    assert_int_equal(r->type, KRPC_ERROR_MSG);
    assert_int_equal(r->err_code, KRPC_ERR_METHOD);
    assert_memory_equal(r->tid, "xy", 2);

    /* malformed query with a usable t: 203 */
    c->n = 0;
    buf_reset(&b);
    assert_int_equal(buf_puts(&b, "d1:ad2:id3:abce1:q4:ping1:t2:zz1:y1:qe"), 0);
    assert_int_equal(dht_receive(d, &cli, (const uint8_t *)b.data, b.len, now),
                     KRPC_E_ID);
    assert_int_equal(c->n, 1);
    cap_msg(c, 0, r);
    assert_int_equal(r->type, KRPC_ERROR_MSG);
    assert_int_equal(r->err_code, KRPC_ERR_PROTOCOL);
    assert_memory_equal(r->tid, "zz", 2);

    /* garbage, malformed responses, unknown transactions: silence */
    c->n = 0;
    static const char *const silent[] = {
        "garbage",
        "d1:t2:aa1:y1:re",
        "d1:eli201ee1:t2:aa1:y1:ee",
        "d1:rd2:id20:BBBBBBBBBBBBBBBBBBBBe1:t4:\0\0\0\0001:y1:re",
    };
    for (size_t i = 0; i < ARRAY_SIZE(silent); i++)
        (void)dht_receive(d, &cli, (const uint8_t *)silent[i],
                          strlen(silent[i]), now);
    assert_int_equal(c->n, 0);

    /* find_node: nodes (BEP 32: nodes6 only on request, and we have no
     * v6 sibling, so an empty list is absent). */
    uint8_t nid[20];
    for (int i = 0; i < 5; i++) {
        id_with_prefix(nid, (unsigned)i, (uint8_t)i);
        struct krpc_addr a = addr4(10, 0, 0, (uint8_t)(i + 1), 6881);
        learn(d, c, nid, &a, now);
    }
    c->n = 0;
    make_query(q, KRPC_Q_FIND_NODE, cid, MY_ID);
    q->has |= KRPC_HAS_WANT;
    q->want = KRPC_WANT_N4 | KRPC_WANT_N6;
    assert_int_equal(feed(d, &cli, q, now), 0);
    cap_msg(c, 0, r);
    assert_int_equal(r->type, KRPC_RESPONSE);
    assert_int_equal(r->n_nodes, 5);
    assert_false(r->has & KRPC_HAS_NODES6);
    /* nearest first */
    id_with_prefix(nid, 4, 4);
    assert_memory_equal(r->nodes[0].id, nid, 20);

    struct dht_status st;
    dht_status(d, now, &st);
    assert_int_equal(st.good, 5);
    assert_true(st.queries_received >= 3);
    assert_true(st.malformed >= 2);

    buf_release(&b);
    free(q);
    free(r);
    dht_free(d);
    cap_free(c);
}

/* get_peers from cli; returns the token (8 bytes) in tok. */
static void
get_token(struct dht *d, struct cap *c, const struct krpc_addr *cli,
          const uint8_t *hash, uint8_t tok[8], struct krpc_msg *r, uint64_t now)
{
    struct krpc_msg *q = new_msg();
    uint8_t cid[20];
    memset(cid, cli->addr[3], 20);
    make_query(q, KRPC_Q_GET_PEERS, cid, hash);
    assert_int_equal(feed(d, cli, q, now), 0);
    cap_msg(c, 0, r);
    assert_int_equal(r->type, KRPC_RESPONSE);
    assert_true(r->has & KRPC_HAS_TOKEN);
    assert_int_equal(r->token_len, 8);
    memcpy(tok, r->token, 8);
    free(q);
}

/* announce_peer from cli with tok; returns the answer's type/code. */
static int
announce(struct dht *d, struct cap *c, const struct krpc_addr *cli,
         const uint8_t *hash, const uint8_t tok[8], uint16_t port, bool implied,
         uint64_t now)
{
    struct krpc_msg *q = new_msg(), *r = new_msg();
    uint8_t cid[20];
    memset(cid, cli->addr[3], 20);
    make_query(q, KRPC_Q_ANNOUNCE_PEER, cid, hash);
    memcpy(q->token, tok, 8);
    q->token_len = 8;
    q->port = port;
    q->implied_port = implied;
    size_t before = c->total;
    assert_int_equal(feed(d, cli, q, now), 0);
    assert_true(c->total > before);
    cap_msg(c, 0, r);
    int ret = r->type == KRPC_RESPONSE ? 0 : (int)r->err_code;
    free(q);
    free(r);
    return ret;
}

static void
test_tokens_and_storage(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    (void)dht_periodic(d, now);
    struct krpc_msg *r = new_msg();
    struct krpc_addr x = addr4(5, 6, 7, 8, 4000), y = addr4(5, 6, 7, 9, 4000);
    uint8_t hash[20], tok[8], tok2[8];
    memset(hash, 0xab, 20);

    /* A fresh hash: no values, nodes instead, and a token. */
    get_token(d, c, &x, hash, tok, r, now);
    assert_int_equal(r->n_values, 0);
    assert_false(r->has & KRPC_HAS_VALUES);
    /* The token is for x's IP: y gets another, x's is refused from y. */
    get_token(d, c, &y, hash, tok2, r, now);
    assert_memory_not_equal(tok, tok2, 8);
    assert_int_equal(announce(d, c, &y, hash, tok, 7000, false, now),
                     KRPC_ERR_PROTOCOL);
    static const uint8_t stale[8] = "12345678";
    assert_int_equal(announce(d, c, &x, hash, stale, 7000, false, now),
                     KRPC_ERR_PROTOCOL);
    /* The right token: stored, with the port given, then implied. */
    assert_int_equal(announce(d, c, &x, hash, tok, 7000, false, now), 0);
    assert_int_equal(announce(d, c, &y, hash, tok2, 1, true, now), 0);
    get_token(d, c, &x, hash, tok, r, now);
    assert_int_equal(r->n_values, 2);
    assert_true(r->has & KRPC_HAS_NODES);
    bool seen_x = false, seen_y = false;
    for (int i = 0; i < r->n_values; i++) {
        if (krpc_addr_same_ip(&r->values[i], &x)) {
            assert_int_equal(r->values[i].port, 7000);
            seen_x = true;
        }
        if (krpc_addr_same_ip(&r->values[i], &y)) {
            assert_int_equal(r->values[i].port, 4000); /* implied */
            seen_y = true;
        }
    }
    assert_true(seen_x && seen_y);
    /* Port port changes replace, not add. */
    assert_int_equal(announce(d, c, &x, hash, tok, 7001, false, now), 0);
    struct dht_status st;
    dht_status(d, now, &st);
    assert_int_equal(st.stored_hashes, 1);
    assert_int_equal(st.stored_peers, 2);
    assert_int_equal(st.announces_stored, 3);
    assert_int_equal(st.announces_refused, 2);

    /* Rotation: after one period the token still works (previous
     * secret), after two it does not. */
    uint64_t t1 = now + DHT_SECRET_MS + 10;
    for (uint64_t t = now; t <= t1; t += 1000)
        (void)dht_periodic(d, t);
    assert_int_equal(announce(d, c, &x, hash, tok, 7000, false, t1), 0);
    uint64_t t2 = t1 + DHT_SECRET_MS + 10;
    for (uint64_t t = t1; t <= t2; t += 1000)
        (void)dht_periodic(d, t);
    assert_int_equal(announce(d, c, &x, hash, tok, 7000, false, t2),
                     KRPC_ERR_PROTOCOL);

    /* Expiry: 30 minutes after the last announce, nothing is left. */
    uint64_t t3 = t2 + DHT_PEER_TTL_MS + 60000 + 10;
    for (uint64_t t = t2; t <= t3; t += 1000)
        (void)dht_periodic(d, t);
    dht_status(d, t3, &st);
    assert_int_equal(st.stored_peers, 0);
    assert_int_equal(st.stored_hashes, 0);
    get_token(d, c, &x, hash, tok, r, t3);
    assert_int_equal(r->n_values, 0);

    free(r);
    dht_free(d);
    cap_free(c);
}

static void
test_storage_bounds(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    struct krpc_msg *r = new_msg();
    uint8_t hash[20], tok[8];
    unsigned ip = 0;

    /* Many peers on one hash: at most DHT_STORE_MAX_PER_HASH. */
    memset(hash, 1, 20);
    for (int i = 0; i < DHT_STORE_MAX_PER_HASH + 50; i++, ip++) {
        struct krpc_addr a = addr4(20, (uint8_t)(ip >> 16), (uint8_t)(ip >> 8),
                                   (uint8_t)ip, 1000);
        get_token(d, c, &a, hash, tok, r, now);
        assert_int_equal(announce(d, c, &a, hash, tok, 1, false, now), 0);
    }
    struct dht_status st;
    dht_status(d, now, &st);
    assert_int_equal(st.stored_peers, DHT_STORE_MAX_PER_HASH);
    /* An answer carries a bounded sample, and to an unverified querier at
     * most DHT_AMPLIFY_MAX times its query. */
    struct krpc_addr a = addr4(21, 0, 0, 1, 1000);
    get_token(d, c, &a, hash, tok, r, now);
    assert_true(r->n_values > 0 && r->n_values <= DHT_MAX_VALUES_REPLY);
    assert_true(c->pkts[(c->n - 1) % CAP_MAX].len <= DHT_AMPLIFY_MAX * 120);

    /* Many hashes and peers: bounded in count and in total. */
    for (unsigned i = 0; i < DHT_STORE_MAX_PEERS + 200; i++, ip++) {
        memset(hash, 0, 20);
        hash[0] = (uint8_t)(i % (DHT_STORE_MAX_HASHES + 100));
        hash[1] = (uint8_t)((i % (DHT_STORE_MAX_HASHES + 100)) >> 8);
        hash[2] = 9;
        struct krpc_addr b = addr4(30, (uint8_t)(ip >> 16), (uint8_t)(ip >> 8),
                                   (uint8_t)ip, 1000);
        get_token(d, c, &b, hash, tok, r, now);
        assert_int_equal(announce(d, c, &b, hash, tok, 1, false, now), 0);
    }
    dht_status(d, now, &st);
    assert_true(st.stored_hashes <= DHT_STORE_MAX_HASHES);
    assert_true(st.stored_peers <= DHT_STORE_MAX_PEERS);
    assert_true(st.stored_peers > DHT_STORE_MAX_PEERS / 2);
    assert_true(st.announces_refused > 0);
    free(r);
    dht_free(d);
    cap_free(c);
}

static void
test_rate_limit(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    struct krpc_msg *q = new_msg();
    struct krpc_addr flood = addr4(66, 6, 6, 6, 53);
    struct krpc_addr other = addr4(7, 7, 7, 7, 1);
    uint8_t cid[20];
    memset(cid, 0x66, 20);
    make_query(q, KRPC_Q_PING, cid, NULL);
    int dropped = 0;
    for (int i = 0; i < 1000; i++)
        dropped += feed(d, &flood, q, now) == 1;
    assert_int_equal(dropped, 1000 - DHT_RATE_BURST);
    /* Answers to the flood: at most the burst, plus one ping back. */
    assert_true(c->total <= DHT_RATE_BURST + 1);
    /* Another source is served. */
    size_t before = c->total;
    assert_int_equal(feed(d, &other, q, now), 0);
    assert_true(c->total > before);
    /* One second later, DHT_RATE_PER_SEC more. */
    now += 1000;
    dropped = 0;
    for (int i = 0; i < 100; i++)
        dropped += feed(d, &flood, q, now) == 1;
    assert_int_equal(dropped, 100 - DHT_RATE_PER_SEC);
    struct dht_status st;
    dht_status(d, now, &st);
    assert_int_equal(st.rate_limited,
                     1000 - DHT_RATE_BURST + 100 - DHT_RATE_PER_SEC);
    /* Many sources: the table stays bounded and new ones are served. */
    for (int i = 0; i < 3 * DHT_RATE_SLOTS; i++) {
        struct krpc_addr a = addr4(8, 0, (uint8_t)(i >> 8), (uint8_t)i, 1);
        assert_int_equal(feed(d, &a, q, now), 0);
    }
    free(q);
    dht_free(d);
    cap_free(c);
}

static void
test_ipv6_sibling(void **state)
{
    (void)state;
    struct cap *c4 = cap_new(), *c6 = cap_new();
    uint64_t now = 1000;
    struct dht *d4 = one_node(c4, false, now);
    struct dht *d6 = one_node_family(c6, false, 6, now);
    dht_set_sibling(d4, d6);
    uint8_t id[20];
    for (int i = 0; i < 3; i++) {
        struct krpc_addr a6 = {.family = 6, .port = 6881};
        memcpy(a6.addr, "\xfd\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 15);
        a6.addr[15] = (uint8_t)(i + 1);
        id_with_prefix(id, (unsigned)i, 60);
        learn(d6, c6, id, &a6, now);
        struct krpc_addr a4 = addr4(10, 4, 4, (uint8_t)(i + 1), 6881);
        id_with_prefix(id, (unsigned)i, 40);
        learn(d4, c4, id, &a4, now);
    }
    /* A v6 querier asking for both families gets both. */
    struct krpc_msg *q = new_msg(), *r = new_msg();
    struct krpc_addr cli6 = {.family = 6, .port = 1};
    memset(cli6.addr, 0x20, 16);
    uint8_t cid[20];
    memset(cid, 0x61, 20);
    make_query(q, KRPC_Q_FIND_NODE, cid, MY_ID);
    q->has |= KRPC_HAS_WANT;
    q->want = KRPC_WANT_N4 | KRPC_WANT_N6;
    c6->n = 0;
    assert_int_equal(feed(d6, &cli6, q, now), 0);
    cap_msg(c6, 0, r);
    assert_int_equal(r->type, KRPC_RESPONSE);
    assert_int_equal(r->n_nodes6, 3);
    assert_int_equal(r->n_nodes, 3);
    assert_int_equal(r->nodes6[0].addr.family, 6);
    assert_int_equal(r->ip.family, 6);
    /* Without want: its own family only. */
    q->has &= ~(unsigned)KRPC_HAS_WANT;
    q->want = 0;
    assert_int_equal(feed(d6, &cli6, q, now), 0);
    cap_msg(c6, 0, r);
    assert_int_equal(r->n_nodes6, 3);
    assert_false(r->has & KRPC_HAS_NODES);
    /* The other family's datagrams are not ours. */
    size_t before = c6->n;
    struct krpc_addr cli4 = addr4(8, 8, 4, 4, 1);
    assert_int_equal(feed(d6, &cli4, q, now), 0);
    assert_int_equal(c6->n, before);
    /* Unlinked by dht_free: the v4 node has no v6 nodes to give. */
    dht_free(d6);
    q->has |= KRPC_HAS_WANT;
    q->want = KRPC_WANT_N6;
    c4->n = 0;
    assert_int_equal(feed(d4, &cli4, q, now), 0);
    cap_msg(c4, 0, r);
    assert_int_equal(r->type, KRPC_RESPONSE);
    assert_int_equal(r->n_nodes6, 0);
    assert_int_equal(r->n_nodes, 0);
    /* An IPv6 flood from one /64 is one source. */
    struct cap *c66 = cap_new();
    d6 = one_node_family(c66, false, 6, now);
    make_query(q, KRPC_Q_PING, cid, NULL);
    int dropped = 0;
    for (int i = 0; i < 200; i++) {
        struct krpc_addr a = cli6;
        a.addr[15] = (uint8_t)i;
        a.addr[9] = (uint8_t)(i * 7);
        dropped += feed(d6, &a, q, now) == 1;
    }
    assert_int_equal(dropped, 200 - DHT_RATE_BURST);
    dht_free(d6);
    dht_free(d4);
    free(q);
    free(r);
    cap_free(c66);
    cap_free(c6);
    cap_free(c4);
}

static void
test_amplification(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    uint8_t id[20];
    /* A full table near a target, and many peers stored for it. */
    for (int i = 0; i < 40; i++) {
        id_with_prefix(id, (unsigned)(i % 5), (uint8_t)i);
        struct krpc_addr a = addr4(10, 9, 0, (uint8_t)(i + 1), 6881);
        learn(d, c, id, &a, now);
    }
    struct krpc_msg *r = new_msg();
    uint8_t hash[20], tok[8];
    memcpy(hash, MY_ID, 20);
    for (int i = 0; i < 60; i++) {
        struct krpc_addr a = addr4(22, 0, 0, (uint8_t)i, 1000);
        get_token(d, c, &a, hash, tok, r, now);
        assert_int_equal(announce(d, c, &a, hash, tok, 1, false, now), 0);
    }
    /* A stranger gets at most DHT_AMPLIFY_MAX times its query. */
    struct krpc_msg *q = new_msg();
    uint8_t cid[20];
    memset(cid, 0x77, 20);
    make_query(q, KRPC_Q_GET_PEERS, cid, hash);
    q->has |= KRPC_HAS_WANT;
    q->want = KRPC_WANT_N4;
    struct buf b;
    buf_init(&b, KRPC_MAX_DATAGRAM);
    int qlen = krpc_encode(&b, q);
    assert_true(qlen > 0);
    buf_release(&b);
    struct krpc_addr stranger = addr4(23, 1, 1, 1, 53);
    assert_int_equal(feed(d, &stranger, q, now), 0);
    struct cap_pkt *p = &c->pkts[(c->n - 1) % CAP_MAX];
    assert_true(krpc_addr_equal(&p->to, &stranger));
    assert_true(p->len <= (size_t)DHT_AMPLIFY_MAX * (size_t)qlen);
    cap_msg(c, 0, r);
    assert_true(r->n_values > 0);
    size_t stranger_len = p->len;
    unsigned stranger_values = r->n_values;
    /* A node that has answered us gets the whole answer. */
    struct krpc_addr known = addr4(10, 9, 0, 1, 6881);
    id_with_prefix(id, 0, 0);
    memcpy(q->id, id, 20);
    assert_int_equal(feed(d, &known, q, now), 0);
    p = &c->pkts[(c->n - 1) % CAP_MAX];
    assert_true(krpc_addr_equal(&p->to, &known));
    cap_msg(c, 0, r);
    assert_int_equal(r->n_values,
                     DHT_MAX_VALUES_REPLY < 60 ? DHT_MAX_VALUES_REPLY : 60);
    assert_int_equal(r->n_nodes, DHT_K);
    assert_true(p->len > stranger_len);
    assert_true(r->n_values >= stranger_values);
    free(q);
    free(r);
    dht_free(d);
    cap_free(c);
}

/* ---------------------------------------------------------------------
 * The routing table: splitting, replacement, refresh. */

static void
test_bucket_split(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    struct dht_status st;
    uint8_t id[20];
    uint8_t host = 1;

    /* 8 far nodes fill the only bucket. */
    for (int i = 0; i < DHT_K; i++) {
        id_with_prefix(id, 0, (uint8_t)i);
        struct krpc_addr a = addr4(10, 0, 0, host++, 6881);
        learn(d, c, id, &a, now);
    }
    dht_status(d, now, &st);
    assert_int_equal(st.n_buckets, 1);
    assert_int_equal(st.bucket_nodes[0], DHT_K);
    /* A 9th far one: the bucket (ours) splits, but the far half stays
     * full, so it waits in the replacement cache. */
    id_with_prefix(id, 0, 100);
    struct krpc_addr a9 = addr4(10, 0, 0, host++, 6881);
    learn(d, c, id, &a9, now);
    dht_status(d, now, &st);
    assert_int_equal(st.n_buckets, 2);
    assert_int_equal(st.bucket_nodes[0], DHT_K);
    assert_int_equal(st.bucket_nodes[1], 0);
    assert_int_equal(st.replacements, 1);
    /* Near nodes go to the new bucket, which splits in turn. */
    for (unsigned cpl = 1; cpl < 6; cpl++)
        for (int i = 0; i < 3; i++) {
            id_with_prefix(id, cpl, (uint8_t)i);
            struct krpc_addr a = addr4(10, 0, 1, host++, 6881);
            learn(d, c, id, &a, now);
        }
    dht_status(d, now, &st);
    assert_true(st.n_buckets >= 4);
    unsigned total = 0;
    for (unsigned i = 0; i < st.n_buckets; i++) {
        assert_true(st.bucket_nodes[i] <= DHT_K);
        total += st.bucket_nodes[i];
    }
    assert_int_equal(total, DHT_K + 15);
    assert_int_equal(st.good, total);
    /* The far bucket never split: only the last one does. */
    assert_int_equal(st.bucket_nodes[0], DHT_K);
    dht_free(d);
    cap_free(c);
}

static void
test_bad_replaced(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    uint8_t ids[DHT_K + 1][20];
    struct krpc_addr addrs[DHT_K + 1];
    for (int i = 0; i <= DHT_K; i++) {
        id_with_prefix(ids[i], 0, (uint8_t)i);
        addrs[i] = addr4(10, 0, 0, (uint8_t)(i + 1), 6881);
        learn(d, c, ids[i], &addrs[i], now);
    }
    /* ids[8] waits in the replacement cache.  Quiet for 15 minutes, the
     * nodes become questionable and are pinged: all answer but node 3. */
    struct dht_status st;
    dht_status(d, now, &st);
    assert_int_equal(st.replacements, 1);
    struct krpc_msg *q = new_msg(), *r = new_msg();
    uint64_t end = now + DHT_GOOD_MS + 10 * DHT_PING_INTERVAL_MS;
    for (uint64_t t = now + DHT_GOOD_MS; t < end; t += 500) {
        size_t from = c->n;
        (void)dht_periodic(d, t);
        for (size_t k = from; k < c->n; k++) {
            struct cap_pkt *p = &c->pkts[k % CAP_MAX];
            if (krpc_parse(q, p->data, p->len, NULL) != 0 ||
                q->type != KRPC_QUERY)
                continue;
            int who = p->to.addr[3] - 1;
            if (who == 3 || who < 0 || who > DHT_K)
                continue;
            krpc_msg_init(r, KRPC_RESPONSE, q->tid, q->tid_len, ids[who]);
            if (q->method == KRPC_Q_FIND_NODE)
                r->has |= KRPC_HAS_NODES; /* refresh lookups */
            assert_int_equal(feed(d, &p->to, r, t), 0);
        }
    }
    dht_status(d, end, &st);
    assert_int_equal(st.replacements, 0);
    assert_int_equal(st.bucket_nodes[0], DHT_K);
    assert_int_equal(st.bad, 0);
    struct krpc_node near[DHT_K];
    size_t n = dht_closest(d, ids[3], near, DHT_K, end);
    for (size_t i = 0; i < n; i++)
        assert_memory_not_equal(near[i].id, ids[3], 20);
    bool have8 = false;
    n = dht_closest(d, ids[8], near, DHT_K, end);
    for (size_t i = 0; i < n; i++)
        have8 |= memcmp(near[i].id, ids[8], 20) == 0;
    assert_true(have8);
    assert_true(st.timeouts >= DHT_MAX_FAILS);
    free(q);
    free(r);
    dht_free(d);
    cap_free(c);
}

static void
test_bep42_preference(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    /* Public addresses, non-compliant ids: counted, still accepted. */
    uint8_t id[20];
    for (int i = 0; i < DHT_K; i++) {
        id_with_prefix(id, 0, (uint8_t)i);
        id[0] = 0; /* keep the first bit different from ours (1) */
        struct krpc_addr a = addr4(50, 0, 0, (uint8_t)(i + 1), 6881);
        learn(d, c, id, &a, now);
    }
    struct dht_status st;
    dht_status(d, now, &st);
    assert_int_equal(st.non_compliant, DHT_K);
    assert_int_equal(st.good, DHT_K);
    /* Once they are questionable, a compliant newcomer takes a place
     * instead of waiting in the cache. */
    now += DHT_GOOD_MS + 1;
    struct krpc_addr ca = addr4(51, 1, 2, 3, 6881);
    uint8_t rnd[20];
    memset(rnd, 0, sizeof(rnd));
    rnd[19] = 3;
    dht_id_from_ip(id, &ca, rnd);
    id[0] &= 0x7f;
    if (!dht_id_check(id, &ca)) {
        /* the BEP 42 prefix sets our first bit: find an r that does not */
        for (int r = 0; r < 256; r++) {
            rnd[19] = (uint8_t)r;
            dht_id_from_ip(id, &ca, rnd);
            if (!(id[0] & 0x80))
                break;
        }
    }
    assert_true(dht_id_check(id, &ca));
    assert_false(id[0] & 0x80);
    learn(d, c, id, &ca, now);
    dht_status(d, now, &st);
    assert_int_equal(st.replacements, 0);
    assert_int_equal(st.bucket_nodes[0], DHT_K);
    assert_int_equal(st.good, 1);
    dht_free(d);
    cap_free(c);
}

static void
test_save_load(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    uint8_t id[20];
    for (int i = 0; i < 12; i++) {
        id_with_prefix(id, (unsigned)(i % 4), (uint8_t)i);
        struct krpc_addr a = addr4(10, 0, 2, (uint8_t)(i + 1), 6881);
        learn(d, c, id, &a, now);
    }
    struct buf b;
    buf_init(&b, 1 << 16);
    assert_int_equal(dht_save(d, &b), 0);
    uint8_t got[20];
    assert_int_equal(dht_saved_id(b.data, b.len, got), 0);
    assert_memory_equal(got, MY_ID, 20);
    assert_int_equal(dht_saved_id("de", 2, got), -EINVAL);
    assert_int_equal(dht_saved_id("d2:id1:xe", 9, got), -EINVAL);

    struct cap *c2 = cap_new();
    struct dht *d2 = one_node(c2, false, now);
    assert_int_equal(dht_load(d2, b.data, b.len, now), 12);
    assert_int_equal(c2->n, 12);
    struct krpc_msg *m = new_msg();
    cap_msg(c2, 0, m);
    assert_int_equal(m->method, KRPC_Q_FIND_NODE);
    assert_memory_equal(m->target, MY_ID, 20);
    free(m);
    assert_int_equal(dht_load(d2, "x", 1, now), -EINVAL);
    buf_release(&b);
    dht_free(d2);
    cap_free(c2);
    dht_free(d);
    cap_free(c);
}

/* ---------------------------------------------------------------------
 * A simulated network. */

#define SIM_LATENCY_MS 20
#define SIM_MAX_NODES 200

struct sim_pkt {
    uint64_t at, seq;
    struct krpc_addr from, to;
    size_t len;
    uint8_t *data;
};

struct sim;

struct sim_ep {
    struct sim *sim;
    unsigned idx;
};

struct sim {
    unsigned n;
    struct dht *nodes[SIM_MAX_NODES];
    struct krpc_addr addrs[SIM_MAX_NODES];
    struct sim_ep eps[SIM_MAX_NODES];
    uint64_t next[SIM_MAX_NODES];
    bool down[SIM_MAX_NODES];
    struct sim_pkt *q;
    size_t nq, capq;
    uint64_t seq, now;
    uint64_t sent, bytes;
    uint64_t sent_by[SIM_MAX_NODES];
};

static void
sim_send(void *ud, const struct krpc_addr *to, const uint8_t *data, size_t len)
{
    struct sim_ep *ep = ud;
    struct sim *s = ep->sim;
    if (s->nq == s->capq) {
        s->capq = s->capq ? s->capq * 2 : 256;
        s->q = realloc(s->q, s->capq * sizeof(*s->q));
        assert_non_null(s->q);
    }
    struct sim_pkt *p = &s->q[s->nq++];
    p->at = s->now + SIM_LATENCY_MS + (s->seq % 7);
    p->seq = s->seq++;
    p->from = s->addrs[ep->idx];
    p->to = *to;
    p->len = len;
    p->data = malloc(len);
    assert_non_null(p->data);
    memcpy(p->data, data, len);
    s->sent++;
    s->bytes += len;
    s->sent_by[ep->idx]++;
}

static int
sim_index(const struct sim *s, const struct krpc_addr *a)
{
    if (a->family != 4 || a->addr[0] != 11 || a->port != 6881)
        return -1;
    unsigned i = (unsigned)a->addr[2] << 8 | a->addr[3];
    return i < s->n ? (int)i : -1;
}

static struct sim *
sim_new(unsigned n, uint64_t seed, unsigned ro_every)
{
    struct sim *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_true(n <= SIM_MAX_NODES);
    s->n = n;
    s->now = 1000;
    for (unsigned i = 0; i < n; i++) {
        s->addrs[i] = addr4(11, 0, (uint8_t)(i >> 8), (uint8_t)i, 6881);
        s->eps[i] = (struct sim_ep){s, i};
        struct dht_config cfg = {
            .family = 4, .send = sim_send, .send_ud = &s->eps[i]};
        uint8_t rnd[20];
        rand_bytes(&seed, rnd, 20);
        dht_id_from_ip(cfg.id, &s->addrs[i], rnd);
        rand_bytes(&seed, cfg.seed, 32);
        cfg.read_only = ro_every && i % ro_every == ro_every - 1;
        s->nodes[i] = dht_new(&cfg, s->now);
        assert_non_null(s->nodes[i]);
        s->next[i] = s->now;
    }
    return s;
}

static void
sim_free(struct sim *s)
{
    for (unsigned i = 0; i < s->n; i++)
        dht_free(s->nodes[i]);
    for (size_t i = 0; i < s->nq; i++)
        free(s->q[i].data);
    free(s->q);
    free(s);
}

/* Run events until time end. */
static void
sim_run(struct sim *s, uint64_t end)
{
    for (;;) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < s->nq; i++)
            if (best == SIZE_MAX || s->q[i].at < s->q[best].at ||
                (s->q[i].at == s->q[best].at && s->q[i].seq < s->q[best].seq))
                best = i;
        unsigned pn = 0;
        for (unsigned i = 1; i < s->n; i++)
            if (s->next[i] < s->next[pn])
                pn = i;
        uint64_t tp = best == SIZE_MAX ? UINT64_MAX : s->q[best].at;
        uint64_t tn = s->next[pn];
        uint64_t t = tp < tn ? tp : tn;
        if (t > end) {
            s->now = end;
            return;
        }
        s->now = t;
        if (tp <= tn) {
            struct sim_pkt p = s->q[best];
            s->q[best] = s->q[--s->nq];
            int to = sim_index(s, &p.to);
            if (to >= 0 && !s->down[to])
                (void)dht_receive(s->nodes[to], &p.from, p.data, p.len, t);
            free(p.data);
        } else {
            s->next[pn] = dht_periodic(s->nodes[pn], t);
            assert_true(s->next[pn] > t);
            assert_true(s->next[pn] <= t + DHT_MAINT_MS);
        }
    }
}

struct lk_watch {
    bool done;
    struct dht_lookup_result res;
    struct krpc_addr peers[64];
    size_t n_peers;
};

static void
watch_peers(void *ud, int handle, const uint8_t *hash,
            const struct krpc_addr *peers, size_t n)
{
    (void)handle;
    (void)hash;
    struct lk_watch *w = ud;
    for (size_t i = 0; i < n && w->n_peers < ARRAY_SIZE(w->peers); i++)
        w->peers[w->n_peers++] = peers[i];
}

static void
watch_done(void *ud, const struct dht_lookup_result *res)
{
    struct lk_watch *w = ud;
    w->done = true;
    w->res = *res;
}

/* Bootstrap every node from node 0, staggered, and let the tables fill. */
static void
sim_join(struct sim *s)
{
    for (unsigned i = 1; i < s->n; i++) {
        s->now += 50;
        assert_true(dht_bootstrap(s->nodes[i], &s->addrs[0], 1, s->now) > 0);
        sim_run(s, s->now);
    }
    sim_run(s, s->now + 120000);
}

static void
test_network(void **state)
{
    (void)state;
    struct sim *s = sim_new(200, 42, 0);
    sim_join(s);

    /* Every table has filled: many good nodes, several buckets, and the
     * ids are all BEP 42-compliant. */
    unsigned min_good = UINT32_MAX, sum_good = 0;
    for (unsigned i = 0; i < s->n; i++) {
        struct dht_status st;
        dht_status(s->nodes[i], s->now, &st);
        if (st.good < min_good)
            min_good = st.good;
        sum_good += st.good;
        assert_int_equal(st.non_compliant, 0);
        if (getenv("DHT_DEBUG"))
            printf("node %u: buckets %u good %u q %u bad %u repl %u "
                   "lk %llu/%llu qs %llu rr %llu to %llu rl %llu qr %llu\n",
                   i, st.n_buckets, st.good, st.questionable, st.bad,
                   st.replacements, (unsigned long long)st.lookups_started,
                   (unsigned long long)st.lookups_finished,
                   (unsigned long long)st.queries_sent,
                   (unsigned long long)st.responses_received,
                   (unsigned long long)st.timeouts,
                   (unsigned long long)st.rate_limited,
                   (unsigned long long)st.queries_received);
        assert_true(st.n_buckets >= 3);
    }
    assert_true(min_good >= 2 * DHT_K);
    printf("network: %u nodes, good per table: min %u, mean %u; %llu "
           "datagrams to join\n",
           s->n, min_good, sum_good / s->n, (unsigned long long)s->sent);

    /* Node 5 announces an info-hash; node 77 finds it. */
    uint8_t hash[20];
    uint64_t seed = 99;
    rand_bytes(&seed, hash, 20);
    struct lk_watch *wa = calloc(1, sizeof(*wa)), *wg = calloc(1, sizeof(*wg));
    assert_non_null(wa);
    assert_non_null(wg);
    struct dht_lookup_params p = {.kind = DHT_LOOKUP_ANNOUNCE,
                                  .port = 7000,
                                  .on_peers = watch_peers,
                                  .on_done = watch_done,
                                  .ud = wa};
    memcpy(p.target, hash, 20);
    assert_true(dht_lookup(s->nodes[5], &p, s->now) > 0);
    sim_run(s, s->now + 10000);
    assert_true(wa->done);
    assert_false(wa->res.timed_out);
    assert_int_equal(wa->res.n_nodes, DHT_K);
    assert_true(wa->res.announced >= DHT_K - 1);
    for (size_t i = 0; i < wa->res.n_nodes; i++)
        assert_int_equal(wa->res.nodes[i].token_len, DHT_TOKEN_LEN);

    uint64_t sent0 = s->sent, t0 = s->now;
    p.kind = DHT_LOOKUP_GET_PEERS;
    p.ud = wg;
    assert_true(dht_lookup(s->nodes[77], &p, s->now) > 0);
    sim_run(s, s->now + 10000);
    assert_true(wg->done);
    assert_false(wg->res.timed_out);
    assert_true(wg->n_peers > 0);
    bool found = false;
    for (size_t i = 0; i < wg->n_peers; i++)
        found |= krpc_addr_same_ip(&wg->peers[i], &s->addrs[5]) &&
                 wg->peers[i].port == 7000;
    assert_true(found);
    /* Bounded: the lookup's own queries, and everything in the network
     * meanwhile (maintenance included). */
    assert_true(wg->res.queries <= DHT_LOOKUP_MAX_QUERIES);
    assert_true(wg->res.queries <= 40);
    assert_true(wg->res.ms < 5000);
    printf("get_peers: %u queries, %u answers, %llu ms, %u peers; %llu "
           "datagrams in the network meanwhile (%llu ms)\n",
           wg->res.queries, wg->res.answers, (unsigned long long)wg->res.ms,
           wg->res.peers, (unsigned long long)(s->sent - sent0),
           (unsigned long long)(s->now - t0));

    /* The closest nodes to the hash store the peer. */
    unsigned holders = 0;
    for (unsigned i = 0; i < s->n; i++) {
        struct dht_status st;
        dht_status(s->nodes[i], s->now, &st);
        holders += st.stored_peers;
    }
    assert_true(holders >= DHT_K - 1);

    /* Stats. */
    struct dht_status st;
    dht_status(s->nodes[77], s->now, &st);
    assert_true(st.lookups_finished >= 2);
    assert_true(st.lookup_median_ms > 0);
    assert_true(st.has_external_ip);
    assert_true(krpc_addr_same_ip(&st.external_ip, &s->addrs[77]));

    /* A node that dies is found bad by its neighbours, and lookups go on
     * without it. */
    for (unsigned i = 60; i < 90; i++)
        s->down[i] = true;
    memset(wg, 0, sizeof(*wg));
    assert_true(dht_lookup(s->nodes[7], &p, s->now) > 0);
    sim_run(s, s->now + 40000);
    assert_true(wg->done);
    assert_true(wg->n_peers > 0);

    free(wa);
    free(wg);
    sim_free(s);
}

static void
test_network_read_only(void **state)
{
    (void)state;
    /* Every 4th node is read-only. */
    struct sim *s = sim_new(40, 7, 4);
    sim_join(s);
    for (unsigned i = 0; i < s->n; i++) {
        for (unsigned j = 0; j < s->n; j++) {
            if (j % 4 != 3)
                continue;
            /* Nobody has a read-only node in its table. */
            uint8_t target[20];
            struct dht_status sj;
            dht_status(s->nodes[j], s->now, &sj);
            memcpy(target, sj.id, 20);
            struct krpc_node near[1];
            if (dht_closest(s->nodes[i], target, near, 1, s->now) == 1)
                assert_memory_not_equal(near[0].id, sj.id, 20);
        }
        struct dht_status st;
        dht_status(s->nodes[i], s->now, &st);
        if (i % 4 == 3) {
            /* A read-only node answers nothing but has a table. */
            assert_true(st.read_only);
            assert_true(st.good > 0);
        }
    }
    /* And it can still find peers. */
    struct lk_watch *wa = calloc(1, sizeof(*wa)), *wg = calloc(1, sizeof(*wg));
    assert_non_null(wa);
    assert_non_null(wg);
    struct dht_lookup_params p = {.kind = DHT_LOOKUP_ANNOUNCE,
                                  .port = 9,
                                  .on_peers = watch_peers,
                                  .on_done = watch_done,
                                  .ud = wa};
    memset(p.target, 0x33, 20);
    assert_true(dht_lookup(s->nodes[1], &p, s->now) > 0);
    sim_run(s, s->now + 10000);
    assert_true(wa->done);
    p.kind = DHT_LOOKUP_GET_PEERS;
    p.ud = wg;
    assert_true(dht_lookup(s->nodes[3], &p, s->now) > 0);
    sim_run(s, s->now + 10000);
    assert_true(wg->done);
    assert_true(wg->n_peers > 0);
    free(wa);
    free(wg);
    sim_free(s);
}

static void
test_read_only_direct(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, true, now);
    struct krpc_addr a = addr4(9, 9, 9, 9, 1);
    /* Our queries say ro=1. */
    assert_int_equal(dht_add_node(d, &a, now), 0);
    struct krpc_msg *m = new_msg();
    cap_msg(c, 0, m);
    assert_true(m->ro);
    /* We answer no query. */
    c->n = 0;
    uint8_t cid[20];
    memset(cid, 9, 20);
    make_query(m, KRPC_Q_PING, cid, NULL);
    assert_int_equal(feed(d, &a, m, now), 0);
    assert_int_equal(c->n, 0);
    /* A normal node answers ro queries but does not try to add them. */
    struct cap *c2 = cap_new();
    struct dht *n = one_node(c2, false, now);
    m->ro = true;
    assert_int_equal(feed(n, &a, m, now), 0);
    assert_int_equal(c2->n, 1);
    cap_msg(c2, 0, m);
    assert_int_equal(m->type, KRPC_RESPONSE);
    free(m);
    dht_free(n);
    cap_free(c2);
    dht_free(d);
    cap_free(c);
}

static void
test_lookup_api(void **state)
{
    (void)state;
    struct cap *c = cap_new();
    uint64_t now = 1000;
    struct dht *d = one_node(c, false, now);
    struct lk_watch *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    struct dht_lookup_params p = {
        .kind = DHT_LOOKUP_FIND_NODE, .on_done = watch_done, .ud = w};
    /* Empty table: done at the next periodic, with nothing. */
    int h = dht_lookup(d, &p, now);
    assert_true(h > 0);
    assert_false(w->done);
    (void)dht_periodic(d, now);
    assert_true(w->done);
    assert_int_equal(w->res.n_nodes, 0);
    assert_int_equal(w->res.handle, h);
    /* Cancel: no callback. */
    memset(w, 0, sizeof(*w));
    h = dht_lookup(d, &p, now);
    assert_int_equal(dht_lookup_cancel(d, h), 0);
    assert_int_equal(dht_lookup_cancel(d, h), -ENOENT);
    (void)dht_periodic(d, now);
    assert_false(w->done);
    p.kind = DHT_LOOKUP_KIND_MAX;
    assert_int_equal(dht_lookup(d, &p, now), -EINVAL);
    /* Bounded number of lookups. */
    p.kind = DHT_LOOKUP_FIND_NODE;
    p.on_done = NULL;
    int ok = 0;
    for (int i = 0; i < DHT_MAX_LOOKUPS + 5; i++)
        ok += dht_lookup(d, &p, now) > 0;
    assert_int_equal(ok, DHT_MAX_LOOKUPS);
    /* Unanswered queries time out, and a lookup ends within its bound. */
    uint8_t id[20];
    for (int i = 0; i < 4; i++) {
        id_with_prefix(id, (unsigned)i, 1);
        struct krpc_addr a = addr4(10, 1, 1, (uint8_t)(i + 1), 1);
        learn(d, c, id, &a, now);
    }
    dht_free(d);
    c->n = 0;
    d = one_node(c, false, now);
    for (int i = 0; i < 4; i++) {
        id_with_prefix(id, (unsigned)i, 1);
        struct krpc_addr a = addr4(10, 1, 1, (uint8_t)(i + 1), 1);
        learn(d, c, id, &a, now);
    }
    memset(w, 0, sizeof(*w));
    p.on_done = watch_done;
    assert_true(dht_lookup(d, &p, now) > 0);
    uint64_t t = now;
    while (!w->done && t < now + DHT_LOOKUP_MAX_MS + 2000)
        t = dht_periodic(d, t);
    assert_true(w->done);
    assert_int_equal(w->res.n_nodes, 0);
    assert_int_equal(w->res.queries, 4);
    assert_true(t - now <= 2 * DHT_RPC_TIMEOUT_MS + DHT_MAINT_MS);
    struct dht_status st;
    dht_status(d, t, &st);
    assert_true(st.timeouts >= 4);
    free(w);
    dht_free(d);
    cap_free(c);
    dht_free(NULL);
    struct dht_config bad = {.family = 5, .send = cap_send};
    assert_null(dht_new(&bad, 0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bep42),
        cmocka_unit_test(test_serve_basic),
        cmocka_unit_test(test_tokens_and_storage),
        cmocka_unit_test(test_storage_bounds),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_ipv6_sibling),
        cmocka_unit_test(test_amplification),
        cmocka_unit_test(test_bucket_split),
        cmocka_unit_test(test_bad_replaced),
        cmocka_unit_test(test_bep42_preference),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_read_only_direct),
        cmocka_unit_test(test_lookup_api),
        cmocka_unit_test(test_network),
        cmocka_unit_test(test_network_read_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
