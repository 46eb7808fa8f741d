/* fuzz_krpc — the KRPC codec and a DHT node on anything.
 *
 * 1. The input is parsed as one datagram.  An error must be in range with
 *    its offset inside the input; a message must re-encode (unknown
 *    methods aside) to bytes that parse to the same message and encode to
 *    the same bytes again.
 * 2. A fresh struct dht (fixed id and seed) with two bootstrap queries in
 *    flight receives the input whole from a stranger, then the input cut
 *    into records [ctl][len hi][len lo][bytes]: ctl picks the source (a
 *    bootstrap node, a stranger), whether a response gets the transaction
 *    id of our last query (and comes from its address), or an
 *    announce_peer the token the node gave the stranger, so that the
 *    answer and storage paths are reached, and how far the clock moves
 *    (dht_periodic runs).  Every
 *    datagram the node sends must parse, and what it sends to a stranger
 *    in answer to one datagram must stay within DHT_AMPLIFY_MAX times that
 *    datagram (plus one small error or ping).
 * 3. The input is also tried as saved state (dht_saved_id, dht_load).
 * Any broken invariant abort()s.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/krpc.h"
#include "daemon/dht.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SMALL_REPLY 200 /* an error or a ping back, at most */
#define FUZZ_MAX_RECORDS 64

static void
fail(const char *what)
{
    fprintf(stderr, "fuzz_krpc: %s\n", what);
    abort();
}

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            fail(#cond);                                                       \
    } while (0)

struct out {
    struct krpc_addr watch; /* count bytes sent here */
    size_t watched;
    size_t total;
    bool have_tid;
    uint8_t tid[KRPC_TID_MAX]; /* of the last query we sent */
    uint8_t tid_len;
    struct krpc_addr tid_to;
    uint8_t token[KRPC_TOKEN_MAX]; /* the last token given to us */
    uint8_t token_len;
    struct krpc_msg m; /* scratch */
};

static void
on_send(void *ud, const struct krpc_addr *to, const uint8_t *p, size_t n)
{
    struct out *o = ud;
    CHECK(n <= KRPC_MAX_DATAGRAM);
    CHECK(krpc_parse(&o->m, p, n, NULL) == 0);
    if (o->m.type == KRPC_QUERY) {
        memcpy(o->tid, o->m.tid, o->m.tid_len);
        o->tid_len = o->m.tid_len;
        o->tid_to = *to;
        o->have_tid = true;
    }
    if (o->m.type == KRPC_RESPONSE && o->m.token_len) {
        memcpy(o->token, o->m.token, o->m.token_len);
        o->token_len = o->m.token_len;
    }
    if (krpc_addr_equal(to, &o->watch))
        o->watched += n;
    o->total += n;
}

static void
check_codec(const uint8_t *data, size_t size)
{
    struct krpc_msg *m = malloc(sizeof(*m)), *m2 = malloc(sizeof(*m2));
    if (!m || !m2)
        abort();
    struct krpc_parse_error e;
    int r = krpc_parse(m, data, size, &e);
    if (r < 0) {
        CHECK(r > KRPC_E_MIN &&
              e.offset <=
                  (size > KRPC_MAX_DATAGRAM ? KRPC_MAX_DATAGRAM : size));
        CHECK(!e.can_reply || (e.tid_len > 0 && e.tid_len <= KRPC_TID_MAX));
        CHECK(krpc_error_code(r) == KRPC_ERR_PROTOCOL);
        goto out;
    }
    CHECK(m->tid_len > 0 && m->tid_len <= KRPC_TID_MAX);
    CHECK(m->n_nodes <= KRPC_MAX_NODES && m->n_nodes6 <= KRPC_MAX_NODES6 &&
          m->n_values <= KRPC_MAX_VALUES && m->token_len <= KRPC_TOKEN_MAX);
    struct buf b, b2;
    buf_init(&b, KRPC_MAX_DATAGRAM);
    buf_init(&b2, KRPC_MAX_DATAGRAM);
    int n = krpc_encode(&b, m);
    if (m->type == KRPC_QUERY && m->method == KRPC_Q_UNKNOWN) {
        CHECK(n == -EINVAL);
    } else if (n != -EMSGSIZE) {
        CHECK(n > 0);
        CHECK(krpc_parse(m2, b.data, b.len, NULL) == 0);
        CHECK(m2->type == m->type && m2->method == m->method &&
              m2->tid_len == m->tid_len && m2->n_nodes == m->n_nodes &&
              m2->n_nodes6 == m->n_nodes6 && m2->n_values == m->n_values &&
              m2->token_len == m->token_len && m2->err_code == m->err_code);
        CHECK(krpc_encode(&b2, m2) == n);
        CHECK(memcmp(b.data, b2.data, b.len) == 0);
    }
    buf_release(&b);
    buf_release(&b2);
out:
    free(m);
    free(m2);
}

/* Rewrite a response/error datagram with the tid of our last query, or
 * an announce_peer with the token the node gave us.  Returns the new
 * length (0: left alone); *ret_query says which. */
static size_t
retarget(struct out *o, const uint8_t *p, size_t n, uint8_t *outbuf,
         bool *ret_query)
{
    struct krpc_msg *m = malloc(sizeof(*m));
    if (!m)
        abort();
    size_t len = 0;
    int r = krpc_parse(m, p, n, NULL);
    *ret_query = r == 0 && m->type == KRPC_QUERY;
    if (r == 0 && ((o->have_tid && m->type != KRPC_QUERY) ||
                   (o->token_len && m->method == KRPC_Q_ANNOUNCE_PEER &&
                    m->type == KRPC_QUERY))) {
        if (m->type == KRPC_QUERY) {
            memcpy(m->token, o->token, o->token_len);
            m->token_len = o->token_len;
        } else {
            memcpy(m->tid, o->tid, o->tid_len);
            m->tid_len = o->tid_len;
        }
        struct buf b;
        buf_init(&b, KRPC_MAX_DATAGRAM);
        if (krpc_encode(&b, m) > 0) {
            memcpy(outbuf, b.data, b.len);
            len = b.len;
        }
        buf_release(&b);
    }
    free(m);
    return len;
}

static void
check_node(const uint8_t *data, size_t size)
{
    struct out *o = calloc(1, sizeof(*o));
    uint8_t *tmp = malloc(KRPC_MAX_DATAGRAM);
    if (!o || !tmp)
        abort();
    struct krpc_addr boot[2] = {
        {.family = 4, .addr = {10, 0, 0, 1}, .port = 6881},
        {.family = 4, .addr = {10, 0, 0, 2}, .port = 6881},
    };
    struct krpc_addr stranger = {.family = 4, .addr = {9, 9, 9, 9}, .port = 53};
    struct dht_config cfg = {.family = 4, .send = on_send, .send_ud = o};
    memset(cfg.id, 0x5a, sizeof(cfg.id));
    memset(cfg.seed, 1, sizeof(cfg.seed));
    uint64_t now = 1000;
    struct dht *d = dht_new(&cfg, now);
    if (!d)
        abort();
    CHECK(dht_bootstrap(d, boot, 2, now) > 0);
    o->watch = stranger;
    /* A token for the stranger, for announces. */
    static const char gp[] = "d1:ad2:id20:abcdefghij01234567899:info_hash"
                             "20:mnopqrstuvwxyz123456e1:q9:get_peers"
                             "1:t2:aa1:y1:qe";
    CHECK(dht_receive(d, &stranger, (const uint8_t *)gp, sizeof(gp) - 1, now) ==
          0);
    CHECK(o->token_len > 0);

    /* Whole, from a stranger. */
    o->watched = 0;
    (void)dht_receive(d, &stranger, data, size, now);
    CHECK(o->watched <= DHT_AMPLIFY_MAX * size + FUZZ_SMALL_REPLY);

    /* As records. */
    size_t off = 0;
    for (int rec = 0; rec < FUZZ_MAX_RECORDS && off + 3 <= size; rec++) {
        uint8_t ctl = data[off];
        size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
        off += 3;
        if (len > size - off)
            len = size - off;
        const uint8_t *p = data + off;
        off += len;
        const struct krpc_addr *from =
            (ctl & 3) == 3 ? &stranger : &boot[(ctl & 1)];
        if (ctl & 4) {
            bool query;
            size_t n = retarget(o, p, len, tmp, &query);
            if (n) {
                p = tmp;
                len = n;
                from = query ? &stranger : &o->tid_to;
            }
        }
        o->watched = 0;
        (void)dht_receive(d, from, p, len, now);
        if (from == &stranger)
            CHECK(o->watched <= DHT_AMPLIFY_MAX * len + FUZZ_SMALL_REPLY);
        unsigned steps = (ctl >> 3) & 7;
        for (unsigned s = 0; s < steps; s++) {
            now += (uint64_t)1000 << (ctl >> 6);
            uint64_t next = dht_periodic(d, now);
            CHECK(next > now && next <= now + DHT_MAINT_MS);
        }
    }
    struct dht_status st;
    dht_status(d, now, &st);
    CHECK(st.stored_peers <= DHT_STORE_MAX_PEERS);
    CHECK(st.good + st.questionable + st.bad <= DHT_BUCKETS * DHT_K);
    /* Nothing runs away: a generous bound on all we sent. */
    CHECK(o->total <=
          (size_t)(FUZZ_MAX_RECORDS + 2) * 8 * 16 * KRPC_MAX_DATAGRAM);

    /* Saved state. */
    uint8_t id[DHT_ID_LEN];
    if (dht_saved_id(data, size, id) == 0)
        CHECK(dht_load(d, data, size, now) >= 0);
    else
        CHECK(dht_load(d, data, size, now) < 0);
    struct buf b;
    buf_init(&b, 1u << 16);
    CHECK(dht_save(d, &b) == 0);
    CHECK(dht_saved_id(b.data, b.len, id) == 0);
    CHECK(memcmp(id, cfg.id, DHT_ID_LEN) == 0);
    buf_release(&b);

    dht_free(d);
    free(tmp);
    free(o);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_codec(data, size);
    check_node(data, size);
    return 0;
}
