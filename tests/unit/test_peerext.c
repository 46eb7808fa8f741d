/* Unit tests for BEP 9 (ut_metadata) and BEP 11 (ut_pex) in
 * daemon/peerconn and daemon/peer: real peer threads, a real libev loop,
 * loopback TCP, no storage.  A magnet-mode leecher (info-hash only)
 * fetches the info dictionary from a seeder's thread, assembles it,
 * checks it against the info-hash and parses it; a seeder without
 * metadata rejects; pex messages go both ways and arrive with their
 * flags; a private torrent neither offers nor sends nor takes pex (also
 * from a raw client that sends one anyway).  Each test is bounded by an
 * ev_timer and by alarm(). */
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/ext.h"
#include "common/metainfo.h"
#include "common/wire.h"
#include "daemon/peer.h"
#include "daemon/peerconn.h"

#define TEST_TIMEOUT_S 20.0
#define PIECE_LEN (16u << 10)
#define N_PIECES 3001 /* 60020 bytes of piece hashes: 4 metadata pieces */

struct ctx;

struct side {
    struct ctx *c;
    bool seeder;
    struct meta_info *meta;    /* NULL: magnet */
    struct pconn_torrent *tor; /* our reference */
    struct peer_table *tab;
    struct pconn_config cfg;

    int handshakes, ext_handshakes, have_all, have_none, closed, ports;
    enum pconn_reason reason;
    struct wire_ext_handshake ext; /* the peer's */
    /* BEP 9 */
    bool fetch; /* ask for the metadata */
    struct ext_metadata md;
    int md_data, md_rejects, md_bad;
    int64_t reject_piece;
    struct meta_info *got;      /* parsed from what came */
    bool upgrade;               /* then peer_set_torrent() to it */
    struct pconn_torrent *tor2; /* our reference: the upgraded torrent */
    int haves;
    uint32_t have_v[4];
    /* BEP 11 */
    bool send_pex;
    int pex_msgs, pex_send_r;
    size_t pex_added, pex_dropped;
    struct ext_pex_peer pex[8]; /* added, then dropped */
};

struct ctx {
    struct ev_loop *loop;
    struct side seed, leech;
    int lfd;
    struct sockaddr_in laddr;
    ev_io accept_io;
    ev_timer deadline;
    bool timed_out;
    int want_closed, total_closed;
    bool priv; /* a private torrent: no DHT bit */
    pthread_t main;
};

static bool wrong_thread;

static void
check_thread(const struct side *s)
{
    if (!pthread_equal(pthread_self(), s->c->main))
        wrong_thread = true;
}

/* ---- a torrent ------------------------------------------------------- */

static struct meta_info *
make_meta(bool priv)
{
    uint64_t total = (uint64_t)PIECE_LEN * N_PIECES - 1000;
    struct buf b;
    buf_init(&b, 1u << 24);
    benc_put_dict(&b);
    benc_put_cstr(&b, "info");
    benc_put_dict(&b);
    benc_put_cstr(&b, "length");
    benc_put_int(&b, (int64_t)total);
    benc_put_cstr(&b, "name");
    benc_put_cstr(&b, "magnet-data");
    benc_put_cstr(&b, "piece length");
    benc_put_int(&b, PIECE_LEN);
    benc_put_cstr(&b, "pieces");
    uint8_t *h = malloc((size_t)N_PIECES * 20);
    assert_non_null(h);
    for (size_t i = 0; i < (size_t)N_PIECES * 20; i++)
        h[i] = (uint8_t)(i * 31 + 7);
    benc_put_str(&b, h, (size_t)N_PIECES * 20);
    free(h);
    if (priv) {
        benc_put_cstr(&b, "private");
        benc_put_int(&b, 1);
    }
    benc_put_end(&b);
    benc_put_end(&b);
    struct meta_info *info = NULL;
    struct meta_errinfo err;
    int r = meta_parse(&info, b.data, b.len, NULL, &err);
    if (r < 0)
        fail_msg("meta_parse: %s: %s", meta_strerror(r), err.detail);
    buf_release(&b);
    assert_int_equal(ext_metadata_piece_count((uint32_t)info->info_len), 4);
    return info;
}

/* seeder: with metadata (meta) or magnet; leecher: magnet for hash. */
static void
side_init(struct ctx *c, struct side *s, bool seeder, struct meta_info *meta,
          const uint8_t *hash)
{
    memset(s, 0, sizeof(*s));
    s->c = c;
    s->seeder = seeder;
    s->meta = meta;
    s->reject_piece = -1;
    if (meta)
        assert_int_equal(
            pconn_torrent_new(&s->tor, meta, NULL, NULL, NULL, NULL, NULL), 0);
    else
        assert_int_equal(
            pconn_torrent_new_magnet(&s->tor, hash, NULL, NULL, NULL, NULL), 0);
    memset(s->cfg.peer_id, seeder ? 'S' : 'L', WIRE_PEER_ID_LEN);
    s->cfg.listen_port = seeder ? 6881 : 6882;
    s->cfg.features = WIRE_F_EXTENDED | WIRE_F_FAST | WIRE_F_DHT;
    s->cfg.dht_port = seeder ? 7001 : 7002;
    s->cfg.handshake_timeout_ms = 5000;
    s->cfg.connect_timeout_ms = 5000;
}

static void
side_release(struct side *s)
{
    pconn_torrent_unref(s->tor);
    pconn_torrent_unref(s->tor2);
    ext_metadata_release(&s->md);
    meta_free(s->got);
}

/* ---- callbacks ------------------------------------------------------- */

static struct pconn_torrent *
cb_info_hash(void *ud, struct peer *p, const uint8_t *hash)
{
    struct side *s = ud;
    (void)p;
    check_thread(s);
    if (memcmp(hash, s->tor->info_hash, WIRE_HASH_LEN))
        return NULL;
    return pconn_torrent_ref(s->tor);
}

static void
cb_handshake(void *ud, struct peer *p, const uint8_t *peer_id,
             unsigned features)
{
    struct side *s = ud;
    (void)peer_id;
    check_thread(s);
    s->handshakes++;
    /* BEP 27: no DHT for a private torrent (so no port message). */
    assert_int_equal(features, WIRE_F_EXTENDED | WIRE_F_FAST |
                                   (s->c->priv ? 0 : WIRE_F_DHT));
    if (s->meta) {
        uint32_t nb = (s->meta->n_pieces + 7) / 8;
        uint8_t *bits = malloc(nb);
        memset(bits, 0xff, nb);
        if (s->meta->n_pieces % 8)
            bits[nb - 1] = (uint8_t)(0xffu << (8 - s->meta->n_pieces % 8));
        assert_int_equal(peer_send_bitfield(p, bits, nb), 0);
        free(bits);
    } else {
        /* A magnet: nothing to announce (the thread says have none). */
        assert_int_equal(peer_send_bitfield(p, NULL, 0), 0);
    }
    /* Before the extension handshake: the peer's ids are not known. */
    assert_int_equal(peer_send_pex(p, NULL, EXT_PEX_SEND_MAX + 1, NULL, 0),
                     -EINVAL);
}

static void
request_all(struct side *s, struct peer *p)
{
    for (uint32_t i = 0; i < s->md.n_pieces; i++)
        assert_int_equal(peer_send_metadata_request(p, i), 0);
}

static void
cb_ext_handshake(void *ud, struct peer *p, const struct wire_ext_handshake *h)
{
    struct side *s = ud;
    check_thread(s);
    s->ext_handshakes++;
    s->ext = *h;
    if (s->fetch) {
        assert_int_equal(h->ut_metadata, PCONN_EXT_UT_METADATA);
        if (h->present & WIRE_EXT_METADATA_SIZE) {
            assert_int_equal(ext_metadata_init(&s->md, h->metadata_size), 0);
            request_all(s, p);
        } else {
            /* No metadata there: ask anyway, expect a reject. */
            assert_int_equal(peer_send_metadata_request(p, 0), 0);
        }
    }
    if (s->send_pex) {
        struct ext_pex_peer added[3], dropped[1];
        memset(added, 0, sizeof(added));
        memset(dropped, 0, sizeof(dropped));
        uint8_t tag = s->seeder ? 1 : 2;
        added[0] = (struct ext_pex_peer){.addr = {192, 0, 2, tag},
                                         .addr_len = 4,
                                         .port = 6881,
                                         .flags = EXT_PEX_F_SEED |
                                                  EXT_PEX_F_CONNECTABLE};
        added[1] =
            (struct ext_pex_peer){.addr = {198, 51, 100, tag},
                                  .addr_len = 4,
                                  .port = 51413,
                                  .flags = EXT_PEX_F_ENCRYPT | EXT_PEX_F_UTP};
        added[2] =
            (struct ext_pex_peer){.addr = {0x20, 0x01, 0x0d, 0xb8, [15] = tag},
                                  .addr_len = 16,
                                  .port = 443,
                                  .flags = EXT_PEX_F_HOLEPUNCH};
        dropped[0] = (struct ext_pex_peer){
            .addr = {203, 0, 113, tag}, .addr_len = 4, .port = 7};
        s->pex_send_r = peer_send_pex(p, added, 3, dropped, 1);
    }
}

static void
cb_have_all(void *ud, struct peer *p)
{
    struct side *s = ud;
    (void)p;
    s->have_all++;
}

static void
cb_have_none(void *ud, struct peer *p)
{
    struct side *s = ud;
    (void)p;
    s->have_none++;
}

static void
cb_bitfield(void *ud, struct peer *p, uint8_t *bits, uint32_t nbytes)
{
    (void)ud;
    (void)p;
    (void)nbytes;
    free(bits);
}

static void
cb_metadata_data(void *ud, struct peer *p, uint32_t piece, uint32_t total_size,
                 uint8_t *data, uint32_t len)
{
    struct side *s = ud;
    check_thread(s);
    s->md_data++;
    if (total_size != s->md.size ||
        ext_metadata_add(&s->md, piece, data, len) != 1)
        s->md_bad++;
    free(data);
    if (!ext_metadata_complete(&s->md))
        return;
    assert_int_equal(ext_metadata_verify(&s->md, s->tor->info_hash), 0);
    struct meta_errinfo err;
    int r = meta_parse_info(&s->got, s->md.buf, s->md.size, NULL, &err);
    if (r < 0)
        fail_msg("meta_parse_info: %s: %s", meta_strerror(r), err.detail);
    if (!s->upgrade) {
        peer_close(p);
        return;
    }
    /* Go on with the metadata: the same connection, now with pieces. */
    assert_int_equal(
        pconn_torrent_new(&s->tor2, s->got, NULL, NULL, NULL, NULL, NULL), 0);
    struct pconn_torrent *other = NULL;
    uint8_t h2[20];
    memset(h2, 1, sizeof(h2));
    assert_int_equal(
        pconn_torrent_new_magnet(&other, h2, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(peer_set_torrent(p, other), -EINVAL); /* no metadata */
    pconn_torrent_unref(other);
    assert_int_equal(peer_set_torrent(p, s->tor2), 0);
    assert_ptr_equal(peer_torrent(p), s->tor2);
    assert_int_equal(peer_set_torrent(p, s->tor2), -EINVAL); /* done */
    /* Announce pieces (as if verified): the seeder checks the indices. */
    uint32_t last = s->got->n_pieces - 1;
    uint32_t pieces[2] = {0, last};
    assert_int_equal(peer_send_have(p, pieces, 2), 0);
}

static void
cb_have(void *ud, struct peer *p, const uint32_t *pieces, size_t n)
{
    struct side *s = ud;
    check_thread(s);
    for (size_t i = 0; i < n; i++)
        if (s->haves < 4)
            s->have_v[s->haves++] = pieces[i];
    if (s->haves >= 2)
        peer_close(p);
}

static void
cb_metadata_reject(void *ud, struct peer *p, uint32_t piece)
{
    struct side *s = ud;
    check_thread(s);
    s->md_rejects++;
    s->reject_piece = piece;
    peer_close(p);
}

static void
cb_pex(void *ud, struct peer *p, const struct ext_pex_peer *added,
       size_t n_added, const struct ext_pex_peer *dropped, size_t n_dropped)
{
    struct side *s = ud;
    check_thread(s);
    s->pex_msgs++;
    s->pex_added = n_added;
    s->pex_dropped = n_dropped;
    for (size_t i = 0; i < n_added && i < 8; i++)
        s->pex[i] = added[i];
    for (size_t i = 0; i < n_dropped && n_added + i < 8; i++)
        s->pex[n_added + i] = dropped[i];
    struct side *o = s->seeder ? &s->c->leech : &s->c->seed;
    if (o->pex_msgs > 0)
        peer_close(p); /* both heard: done */
}

static void
cb_port(void *ud, struct peer *p, uint16_t port)
{
    struct side *s = ud;
    (void)p;
    (void)port;
    s->ports++;
}

static void
cb_closed(void *ud, struct peer *p, enum pconn_reason reason, int detail)
{
    struct side *s = ud;
    (void)p;
    (void)detail;
    check_thread(s);
    s->closed++;
    s->reason = reason;
    struct ctx *c = s->c;
    if (++c->total_closed >= c->want_closed)
        ev_break(c->loop, EVBREAK_ONE);
}

static const struct peer_callbacks callbacks = {
    .on_info_hash = cb_info_hash,
    .on_handshake = cb_handshake,
    .on_ext_handshake = cb_ext_handshake,
    .on_bitfield = cb_bitfield,
    .on_have_all = cb_have_all,
    .on_have = cb_have,
    .on_have_none = cb_have_none,
    .on_closed = cb_closed,
    .on_port = cb_port,
    .on_metadata_data = cb_metadata_data,
    .on_metadata_reject = cb_metadata_reject,
    .on_pex = cb_pex,
};

/* ---- the loop -------------------------------------------------------- */

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct ctx *c = w->data;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = accept4(c->lfd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    assert_int_equal(
        peer_accept(c->seed.tab, fd, (struct sockaddr *)&ss, len, NULL), 0);
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct ctx *c = w->data;
    c->timed_out = true;
    ev_break(loop, EVBREAK_ALL);
}

/* seed_meta: the seeder's metadata (NULL: it is a magnet too); the
 * leecher is a magnet for hash, or has leech_meta. */
static void
ctx_init(struct ctx *c, struct meta_info *seed_meta,
         struct meta_info *leech_meta, const uint8_t *hash)
{
    memset(c, 0, sizeof(*c));
    wrong_thread = false;
    alarm((unsigned)TEST_TIMEOUT_S + 30);
    c->main = pthread_self();
    c->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(c->loop);
    side_init(c, &c->seed, true, seed_meta, hash);
    side_init(c, &c->leech, false, leech_meta, hash);
    assert_int_equal(peer_table_new(&c->seed.tab, c->loop, &c->seed.cfg,
                                    &callbacks, &c->seed, 4),
                     0);
    assert_int_equal(peer_table_new(&c->leech.tab, c->loop, &c->leech.cfg,
                                    &callbacks, &c->leech, 4),
                     0);
    c->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(c->lfd >= 0);
    c->laddr.sin_family = AF_INET;
    c->laddr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(
        bind(c->lfd, (struct sockaddr *)&c->laddr, sizeof(c->laddr)), 0);
    socklen_t len = sizeof(c->laddr);
    assert_int_equal(getsockname(c->lfd, (struct sockaddr *)&c->laddr, &len),
                     0);
    assert_int_equal(listen(c->lfd, 4), 0);
    ev_io_init(&c->accept_io, accept_cb, c->lfd, EV_READ);
    c->accept_io.data = c;
    ev_io_start(c->loop, &c->accept_io);
    ev_timer_init(&c->deadline, deadline_cb, TEST_TIMEOUT_S, 0);
    c->deadline.data = c;
    ev_timer_start(c->loop, &c->deadline);
}

static void
connect_and_run(struct ctx *c, int want_closed)
{
    assert_int_equal(peer_connect(c->leech.tab, c->leech.tor,
                                  (struct sockaddr *)&c->laddr,
                                  sizeof(c->laddr), NULL),
                     0);
    c->want_closed = want_closed;
    ev_run(c->loop, 0);
    assert_false(c->timed_out);
}

static void
ctx_release(struct ctx *c)
{
    peer_table_free(c->leech.tab);
    peer_table_free(c->seed.tab);
    ev_io_stop(c->loop, &c->accept_io);
    ev_timer_stop(c->loop, &c->deadline);
    close(c->lfd);
    side_release(&c->seed);
    side_release(&c->leech);
    ev_loop_destroy(c->loop);
    alarm(0);
    assert_false(wrong_thread);
}

/* ---- tests ----------------------------------------------------------- */

/* A magnet leecher fetches the info dictionary from a seeder's thread. */
static void
test_fetch_metadata(void **state)
{
    (void)state;
    struct meta_info *meta = make_meta(false);
    struct ctx c;
    ctx_init(&c, meta, NULL, meta->info_hash);
    assert_null(c.leech.tor->info);
    assert_int_equal(c.leech.tor->wt.piece_count, 0);
    c.leech.fetch = true;
    connect_and_run(&c, 2);

    assert_int_equal(c.leech.handshakes, 1);
    assert_int_equal(c.seed.handshakes, 1);
    assert_int_equal(c.leech.have_all, 1); /* the seeder has it all */
    assert_int_equal(c.seed.have_none, 1); /* a magnet: have none */
    assert_int_equal(c.seed.have_all, 0);
    /* What each side told: ids, metadata_size only where there is one. */
    assert_int_equal(c.leech.ext.ut_metadata, PCONN_EXT_UT_METADATA);
    assert_int_equal(c.leech.ext.ut_pex, PCONN_EXT_UT_PEX);
    assert_int_equal(c.leech.ext.metadata_size, meta->info_len);
    assert_int_equal(c.seed.ext.ut_metadata, PCONN_EXT_UT_METADATA);
    assert_false(c.seed.ext.present & WIRE_EXT_METADATA_SIZE);

    assert_int_equal(c.leech.md_data, 4);
    assert_int_equal(c.leech.md_bad, 0);
    assert_int_equal(c.leech.md_rejects, 0);
    assert_non_null(c.leech.got);
    assert_memory_equal(c.leech.got->info_hash, meta->info_hash, 20);
    assert_int_equal(c.leech.got->total_size, meta->total_size);
    assert_int_equal(c.leech.got->n_pieces, N_PIECES);
    assert_string_equal(c.leech.got->name, "magnet-data");
    assert_int_equal(c.leech.got->info_len, meta->info_len);
    assert_memory_equal(c.leech.got->info_raw, meta->info_raw, meta->info_len);
    assert_int_equal(c.leech.reason, PCONN_R_CLOSED);
    assert_int_equal(c.seed.reason, PCONN_R_EOF);
    ctx_release(&c);
    meta_free(meta);
}

/* The same, and the leecher's connection goes on with the metadata: its
 * thread sends a new extension handshake (metadata_size now) and haves
 * that the seeder's thread checks against the real piece count. */
static void
test_fetch_then_upgrade(void **state)
{
    (void)state;
    struct meta_info *meta = make_meta(false);
    struct ctx c;
    ctx_init(&c, meta, NULL, meta->info_hash);
    c.leech.fetch = true;
    c.leech.upgrade = true;
    connect_and_run(&c, 2);
    assert_int_equal(c.leech.md_data, 4);
    assert_non_null(c.leech.tor2);
    assert_int_equal(c.seed.ext_handshakes, 2);
    assert_true(c.seed.ext.present & WIRE_EXT_METADATA_SIZE);
    assert_int_equal(c.seed.ext.metadata_size, meta->info_len);
    assert_int_equal(c.seed.ext.ut_metadata, PCONN_EXT_UT_METADATA);
    assert_int_equal(c.seed.haves, 2);
    assert_int_equal(c.seed.have_v[0], 0);
    assert_int_equal(c.seed.have_v[1], N_PIECES - 1);
    assert_int_equal(c.seed.reason, PCONN_R_CLOSED);
    assert_int_equal(c.leech.reason, PCONN_R_EOF);
    ctx_release(&c);
    meta_free(meta);
}

/* Both are magnets: the seeder's thread rejects. */
static void
test_reject(void **state)
{
    (void)state;
    uint8_t hash[20];
    memset(hash, 0x5a, sizeof(hash));
    struct ctx c;
    ctx_init(&c, NULL, NULL, hash);
    c.leech.fetch = true;
    connect_and_run(&c, 2);
    assert_int_equal(c.leech.ext.ut_metadata, PCONN_EXT_UT_METADATA);
    assert_false(c.leech.ext.present & WIRE_EXT_METADATA_SIZE);
    assert_int_equal(c.leech.md_rejects, 1);
    assert_int_equal(c.leech.reject_piece, 0);
    assert_int_equal(c.leech.md_data, 0);
    assert_int_equal(c.leech.have_none, 1);
    assert_int_equal(c.seed.have_none, 1);
    assert_int_equal(c.leech.have_all + c.seed.have_all, 0);
    ctx_release(&c);
}

static void
check_pex_got(const struct side *s, uint8_t tag)
{
    assert_int_equal(s->pex_msgs, 1);
    assert_int_equal(s->pex_added, 3);
    assert_int_equal(s->pex_dropped, 1);
    const struct ext_pex_peer *v = s->pex;
    assert_int_equal(v[0].addr_len, 4);
    assert_memory_equal(v[0].addr, ((uint8_t[]){192, 0, 2, tag}), 4);
    assert_int_equal(v[0].port, 6881);
    assert_int_equal(v[0].flags, EXT_PEX_F_SEED | EXT_PEX_F_CONNECTABLE);
    assert_memory_equal(v[1].addr, ((uint8_t[]){198, 51, 100, tag}), 4);
    assert_int_equal(v[1].port, 51413);
    assert_int_equal(v[1].flags, EXT_PEX_F_ENCRYPT | EXT_PEX_F_UTP);
    assert_int_equal(v[2].addr_len, 16);
    assert_int_equal(v[2].addr[0], 0x20);
    assert_int_equal(v[2].addr[15], tag);
    assert_int_equal(v[2].port, 443);
    assert_int_equal(v[2].flags, EXT_PEX_F_HOLEPUNCH);
    assert_memory_equal(v[3].addr, ((uint8_t[]){203, 0, 113, tag}), 4);
    assert_int_equal(v[3].port, 7);
    assert_int_equal(v[3].flags, 0);
}

/* Pex both ways between a seeder and a magnet leecher. */
static void
test_pex(void **state)
{
    (void)state;
    struct meta_info *meta = make_meta(false);
    struct ctx c;
    ctx_init(&c, meta, NULL, meta->info_hash);
    c.seed.send_pex = true;
    c.leech.send_pex = true;
    connect_and_run(&c, 2);
    assert_int_equal(c.seed.pex_send_r, 0);
    assert_int_equal(c.leech.pex_send_r, 0);
    check_pex_got(&c.leech, 1); /* what the seeder sent */
    check_pex_got(&c.seed, 2);
    assert_int_equal(c.seed.ports, 1); /* public: the DHT port */
    assert_int_equal(c.leech.ports, 1);
    ctx_release(&c);
    meta_free(meta);
}

/* BEP 27: a private torrent offers no ut_pex and sends none; metadata is
 * still served. */
static void
test_private_no_pex(void **state)
{
    (void)state;
    struct meta_info *meta = make_meta(true);
    struct meta_info *meta2 = make_meta(true);
    assert_true(meta->private_torrent);
    struct ctx c;
    ctx_init(&c, meta, meta2, meta->info_hash);
    c.priv = true;
    c.seed.send_pex = true; /* the threads must drop these */
    c.leech.send_pex = true;
    c.leech.fetch = true; /* the end: all metadata came */
    connect_and_run(&c, 2);
    assert_int_equal(c.seed.ext.ut_pex, 0);
    assert_int_equal(c.leech.ext.ut_pex, 0);
    assert_int_equal(c.leech.ext.ut_metadata, PCONN_EXT_UT_METADATA);
    assert_int_equal(c.seed.pex_send_r, 0);
    assert_int_equal(c.leech.pex_send_r, 0);
    assert_int_equal(c.seed.pex_msgs, 0);
    assert_int_equal(c.leech.pex_msgs, 0);
    assert_int_equal(c.leech.md_data, 4);
    assert_non_null(c.leech.got);
    assert_true(c.leech.got->private_torrent);
    assert_int_equal(c.seed.ports + c.leech.ports, 0);
    ctx_release(&c);
    meta_free(meta);
    meta_free(meta2);
}

/* ---- a raw client ---------------------------------------------------- */

/* The raw client runs on its own thread: no cmocka asserts there (they
 * longjmp); failures end it with a->ok false. */
static bool
raw_send(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        b += k;
        n -= (size_t)k;
    }
    return true;
}

struct raw {
    int fd;
    uint8_t buf[1u << 16];
    size_t len;
    struct wire_decoder dec;
};

/* The next message from the peer (waits up to 10 s). */
static bool
raw_next(struct raw *r, struct wire_msg *m, uint8_t *copy, size_t *copy_len)
{
    for (;;) {
        int n = wire_decode(&r->dec, m, r->buf, r->len);
        if (n > 0) {
            *copy_len = m->data_len;
            if (m->data_len)
                memcpy(copy, m->data, m->data_len);
            memmove(r->buf, r->buf + n, r->len - (size_t)n);
            r->len -= (size_t)n;
            return true;
        }
        if (n < 0)
            return false;
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        if (poll(&pfd, 1, 10000) != 1)
            return false;
        ssize_t k = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
        if (k <= 0)
            return false;
        r->len += (size_t)k;
    }
}

struct raw_args {
    struct sockaddr_in addr;
    uint8_t hash[20];
    uint32_t md_size;
    int served, rejected;
    bool saw_pex_id;
    bool ok;
};

/* Acts as a peer that says it speaks ut_pex and, once the seeder's
 * extension handshake came, sends a pex message anyway and then 80
 * metadata requests in one go (past the thread's burst), reads the
 * answers and hangs up. */
static void *
raw_main(void *arg)
{
    struct raw_args *a = arg;
    static struct raw r;
    static uint8_t copy[1u << 16];
    struct buf b;
    buf_init(&b, 1u << 20);
    memset(&r, 0, sizeof(r));
    r.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r.fd < 0 ||
        connect(r.fd, (struct sockaddr *)&a->addr, sizeof(a->addr)) < 0)
        goto out;
    struct wire_handshake h;
    memset(&h, 0, sizeof(h));
    wire_reserved_set(h.reserved, WIRE_F_EXTENDED | WIRE_F_FAST);
    memcpy(h.info_hash, a->hash, 20);
    memset(h.peer_id, 'R', 20);
    uint8_t hs[WIRE_HANDSHAKE_LEN];
    (void)wire_put_handshake(hs, sizeof(hs), &h);
    if (!raw_send(r.fd, hs, sizeof(hs)))
        goto out;
    struct wire_ext_handshake eh;
    memset(&eh, 0, sizeof(eh));
    eh.ut_metadata = 9;
    eh.ut_pex = 8;
    (void)wire_put_ext_handshake(&b, &eh);
    bool sent = raw_send(r.fd, b.data, b.len);
    buf_reset(&b);
    if (!sent)
        goto out;

    /* Its handshake, then messages until its extension handshake. */
    size_t got = 0;
    while (got < WIRE_HANDSHAKE_LEN) {
        ssize_t k = recv(r.fd, r.buf + got, WIRE_HANDSHAKE_LEN - got, 0);
        if (k <= 0)
            goto out;
        got += (size_t)k;
    }
    (void)wire_decoder_init(&r.dec, NULL, NULL);
    for (;;) {
        struct wire_msg m;
        size_t cl;
        if (!raw_next(&r, &m, copy, &cl))
            goto out;
        if (m.type != WIRE_EXTENDED || m.ext_id != 0)
            continue;
        struct wire_ext_handshake ph;
        if (wire_ext_handshake_parse(&ph, copy, cl, NULL, NULL) < 0)
            goto out;
        a->saw_pex_id = ph.ut_pex != 0;
        a->md_size = ph.metadata_size;
        break;
    }
    struct ext_pex_peer pp = {.addr = {1, 2, 3, 4}, .addr_len = 4, .port = 5};
    (void)ext_pex_put(&b, PCONN_EXT_UT_PEX, &pp, 1, NULL, 0);
    for (uint32_t i = 0; i < 80; i++)
        (void)ext_metadata_put(&b, PCONN_EXT_UT_METADATA, EXT_MD_REQUEST, i % 4,
                               0, NULL, 0);
    sent = raw_send(r.fd, b.data, b.len);
    buf_release(&b);
    if (!sent)
        goto out;

    int answers = 0;
    while (answers < 80) {
        struct wire_msg m;
        size_t cl;
        if (!raw_next(&r, &m, copy, &cl))
            goto out;
        if (m.type != WIRE_EXTENDED || m.ext_id != 9)
            continue;
        struct ext_metadata_msg mm;
        if (ext_metadata_parse(&mm, copy, cl, a->md_size, NULL) < 0)
            continue;
        answers++;
        if (mm.type == EXT_MD_DATA)
            a->served++;
        else if (mm.type == EXT_MD_REJECT)
            a->rejected++;
    }
    a->ok = true;
out:
    buf_release(&b);
    if (r.fd >= 0)
        close(r.fd);
    return NULL;
}

/* A private seeder ignores a pex message that comes anyway, serves
 * metadata to a raw client within its burst and rejects past it. */
static void
test_private_raw(void **state)
{
    (void)state;
    struct meta_info *meta = make_meta(true);
    struct ctx c;
    ctx_init(&c, meta, NULL, meta->info_hash);
    c.priv = true;
    struct raw_args a;
    memset(&a, 0, sizeof(a));
    a.addr = c.laddr;
    memcpy(a.hash, meta->info_hash, 20);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, raw_main, &a), 0);
    c.want_closed = 1; /* the seeder's side ends when the client hangs up */
    ev_run(c.loop, 0);
    assert_false(c.timed_out);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(a.ok);
    assert_false(a.saw_pex_id);
    assert_int_equal(a.md_size, meta->info_len);
    assert_int_equal(a.served + a.rejected, 80);
    assert_true(a.served >= PCONN_MD_BURST);
    assert_true(a.rejected > 0); /* 80 at once: past the burst */
    assert_int_equal(c.seed.pex_msgs, 0);
    assert_int_equal(c.seed.ext.ut_pex, 8); /* it said so */
    ctx_release(&c);
    meta_free(meta);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fetch_metadata),
        cmocka_unit_test(test_fetch_then_upgrade),
        cmocka_unit_test(test_reject),
        cmocka_unit_test(test_pex),
        cmocka_unit_test(test_private_no_pex),
        cmocka_unit_test(test_private_raw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
