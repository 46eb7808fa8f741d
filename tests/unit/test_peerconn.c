/* Unit tests for daemon/peerconn and daemon/peer: real peer threads, a
 * real libev loop, loopback TCP.  One side seeds a small two-file torrent
 * (blocks span the files) from a temporary directory, the other requests
 * every block through the reactor-side API; the data must arrive byte
 * for byte.  Also: a wrong info-hash is refused (both directions),
 * garbage closes the connection with a reason, peer_close() in the middle
 * of a transfer (inside the peer's own callback), and peer_table_free()
 * with transfers in flight.  Sealed pieces: blocks of a sealed piece are
 * dropped, never written, and the writer count makes the hash side wait
 * for writes begun before the seal.  BEP 6: allowed-fast pieces served
 * while choked, and a request before our bitfield answered after it.
 * Each test is bounded by an ev_timer and by alarm(), so a hang fails
 * instead of blocking CI.
 *
 * TD_PEERCONN_MB=N makes the transfer test move N MiB and print MB/s. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/metainfo.h"
#include "common/wire.h"
#include "daemon/peer.h"
#include "daemon/peerconn.h"
#include "daemon/rate.h"
#include "daemon/storage.h"

#define TEST_TIMEOUT_S 60.0
#define PIPELINE 128 /* requests in flight */
#define PIECE_LEN (64u << 10)

struct ctx;

struct side {
    struct ctx *c;
    const char *name;
    bool seeder;
    char dir[64];
    struct meta_info *meta;
    struct storage *st;
    struct pconn_torrent *tor;   /* our reference */
    struct peer_table *tab;
    struct pconn_config cfg;

    /* what happened */
    int handshakes, ext_handshakes, bitfields, have_all, have_none;
    int unchokes, interested, closed;
    enum pconn_reason reason;
    int detail;
    char client[WIRE_EXT_CLIENT_MAX + 1];
    uint32_t reqq;
    uint16_t dht_port;
    uint64_t blocks_done, bytes_done, uploaded;
    int late_callbacks;          /* callbacks after peer_close(): a bug */
    struct peer *closed_peer;

    /* leecher's scheduling */
    struct wire_block *todo;     /* owned */
    size_t n_todo;
    size_t inflight;
    uint8_t *got;                /* a flag per block */
    struct wire_block *all;
    size_t n_all;
    uint64_t close_after;        /* peer_close() after this many blocks */
    bool hide_piece0;            /* seeder: piece 0 announced late */
    bool sent_have0;
    bool seen_piece0;            /* leecher: piece 0 announced */
    struct wire_block *parked;   /* leecher: dropped, not announced */
    size_t n_parked;
    int haves, dropped;
    bool idle;                   /* leecher: not interested, no transfer */
    bool flood;                  /* leecher: too many commands at once */
    int flood_ok, flood_reset, flood_shut;
    uint64_t break_after;        /* ev_break after this many blocks */
    bool no_unchoke;             /* seeder: never unchokes */
    bool af_test;                /* leecher: fetch the allowed-fast set */
    uint32_t af[PCONN_ALLOWED_FAST_RX_MAX];
    size_t n_af, af_blocks, af_dropped;
    bool af_asked;
    bool seal_test;              /* leecher: pieces 0 and 5 sealed */
    size_t sealed_dropped;       /* blocks of sealed pieces dropped */
    bool unsealed;
};

struct ctx {
    struct ev_loop *loop;
    struct side seed, leech;
    int lfd;                     /* seeder's listening socket */
    struct sockaddr_in laddr;
    ev_io accept_io;
    ev_timer deadline;
    bool timed_out;
    int want_closed;             /* ev_break when this many have closed */
    int total_closed;
    bool accept_raw;             /* leave accepted sockets to the test */
    pthread_t main;
};

static bool wrong_thread;

static void
check_thread(struct side *s)
{
    if (!pthread_equal(pthread_self(), s->c->main))
        wrong_thread = true;
}

/* ---- a torrent ------------------------------------------------------- */

/* Two files, a and b, of total bytes in pieces of PIECE_LEN. */
static struct meta_info *
make_meta(const char *name, uint64_t total)
{
    uint64_t la = total / 3 + 1000; /* a block spans a and b */
    uint64_t lb = total - la;
    uint32_t n = meta_piece_count(total, PIECE_LEN);
    struct buf b;
    buf_init(&b, 1u << 24);
    benc_put_dict(&b);
    benc_put_cstr(&b, "info");
    benc_put_dict(&b);
    benc_put_cstr(&b, "files");
    benc_put_list(&b);
    benc_put_dict(&b);
    benc_put_cstr(&b, "length");
    benc_put_int(&b, (int64_t)la);
    benc_put_cstr(&b, "path");
    benc_put_list(&b);
    benc_put_cstr(&b, "a");
    benc_put_end(&b);
    benc_put_end(&b);
    benc_put_dict(&b);
    benc_put_cstr(&b, "length");
    benc_put_int(&b, (int64_t)lb);
    benc_put_cstr(&b, "path");
    benc_put_list(&b);
    benc_put_cstr(&b, "b");
    benc_put_end(&b);
    benc_put_end(&b);
    benc_put_end(&b);
    benc_put_cstr(&b, "name");
    benc_put_cstr(&b, name);
    benc_put_cstr(&b, "piece length");
    benc_put_int(&b, PIECE_LEN);
    benc_put_cstr(&b, "pieces");
    uint8_t *hashes = calloc(n, 20); /* not checked at this layer */
    assert_non_null(hashes);
    benc_put_str(&b, hashes, (size_t)n * 20);
    free(hashes);
    benc_put_end(&b);
    benc_put_end(&b);
    struct meta_info *info = NULL;
    struct meta_errinfo err;
    int r = meta_parse(&info, b.data, b.len, NULL, &err);
    if (r < 0)
        fail_msg("meta_parse: %s: %s", meta_strerror(r), err.detail);
    buf_release(&b);
    return info;
}

static uint64_t
test_total(void)
{
    const char *mb = getenv("TD_PEERCONN_MB");
    if (mb && *mb) {
        unsigned long v = strtoul(mb, NULL, 10);
        if (v > 0 && v < 1u << 16)
            return (uint64_t)v << 20;
    }
    return (1u << 20) + 12345; /* 17 pieces, a short last block */
}

static void
side_init(struct ctx *c, struct side *s, const char *name, bool seeder,
          const char *torrent_name, uint64_t total)
{
    memset(s, 0, sizeof(*s));
    s->c = c;
    s->name = name;
    s->seeder = seeder;
    snprintf(s->dir, sizeof(s->dir), "/tmp/td-peerconn-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    s->meta = make_meta(torrent_name, total);
    assert_int_equal(storage_open(&s->st, s->meta, s->dir, 0), 0);
    assert_int_equal(pconn_torrent_new(&s->tor, s->meta, s->st, NULL, NULL,
                                       NULL, NULL),
                     0);
    if (seeder) {
        /* Data: a pattern no two blocks share. */
        size_t chunk = 1u << 20;
        uint8_t *buf = malloc(chunk);
        assert_non_null(buf);
        for (uint64_t off = 0; off < s->meta->total_size; off += chunk) {
            size_t n = s->meta->total_size - off < chunk
                           ? (size_t)(s->meta->total_size - off)
                           : chunk;
            for (size_t i = 0; i < n; i++) {
                uint64_t x = off + i;
                buf[i] = (uint8_t)(x * 2654435761u >> 13 ^ x >> 16);
            }
            assert_int_equal(storage_write(s->st, off, buf, n), 0);
        }
        free(buf);
    }
    /* Every block, for the leecher. */
    uint32_t np = s->meta->n_pieces;
    s->n_all = 0;
    size_t cap = (size_t)np * (PIECE_LEN / WIRE_BLOCK_SIZE);
    s->all = calloc(cap, sizeof(*s->all));
    s->todo = calloc(cap, sizeof(*s->todo));
    s->got = calloc(cap, 1);
    s->parked = calloc(cap, sizeof(*s->parked));
    assert_non_null(s->parked);
    assert_non_null(s->all);
    assert_non_null(s->todo);
    assert_non_null(s->got);
    for (uint32_t i = 0; i < np; i++) {
        uint32_t len = meta_piece_size(s->meta, i);
        for (uint32_t b = 0; b < len; b += WIRE_BLOCK_SIZE) {
            uint32_t bl = len - b < WIRE_BLOCK_SIZE ? len - b
                                                    : WIRE_BLOCK_SIZE;
            s->all[s->n_all++] = (struct wire_block){i, b, bl};
        }
    }
    /* todo is a stack: reversed, so the first block goes first. */
    for (size_t i = 0; i < s->n_all; i++)
        s->todo[i] = s->all[s->n_all - 1 - i];
    s->n_todo = s->n_all;

    memset(&s->cfg, 0, sizeof(s->cfg));
    memset(s->cfg.peer_id, seeder ? 'S' : 'L', WIRE_PEER_ID_LEN);
    s->cfg.listen_port = seeder ? 6881 : 6882;
    s->cfg.features = WIRE_F_EXTENDED | WIRE_F_FAST | WIRE_F_DHT;
    s->cfg.dht_port = seeder ? 7001 : 7002;
    s->cfg.handshake_timeout_ms = 5000;
    s->cfg.connect_timeout_ms = 5000;
}

static void
rm_tree(struct side *s)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s/a", s->dir, s->meta->name);
    (void)unlink(p);
    snprintf(p, sizeof(p), "%s/%s/b", s->dir, s->meta->name);
    (void)unlink(p);
    snprintf(p, sizeof(p), "%s/%s", s->dir, s->meta->name);
    (void)rmdir(p);
    (void)rmdir(s->dir);
}

static void
side_release(struct side *s)
{
    pconn_torrent_unref(s->tor);
    storage_close(s->st);
    rm_tree(s);
    meta_free(s->meta);
    free(s->all);
    free(s->todo);
    free(s->got);
    free(s->parked);
}

/* ---- callbacks ------------------------------------------------------- */

static void
late(struct side *s, struct peer *p)
{
    check_thread(s);
    if (peer_closing(p))
        s->late_callbacks++;
}

static struct pconn_torrent *
cb_info_hash(void *ud, struct peer *p, const uint8_t *hash)
{
    struct side *s = ud;
    late(s, p);
    if (memcmp(hash, s->tor->info_hash, WIRE_HASH_LEN))
        return NULL;
    return pconn_torrent_ref(s->tor);
}

static void
cb_handshake(void *ud, struct peer *p, const uint8_t *peer_id,
             unsigned features)
{
    struct side *s = ud;
    late(s, p);
    s->handshakes++;
    assert_int_equal(features, WIRE_F_EXTENDED | WIRE_F_FAST | WIRE_F_DHT);
    if (!s->seeder)
        assert_int_equal(peer_id[0], 'S');
    if (s->seeder) {
        uint32_t nb = (s->meta->n_pieces + 7) / 8;
        uint8_t *bits = calloc(nb, 1);
        for (uint32_t i = s->hide_piece0 ? 1 : 0; i < s->meta->n_pieces; i++)
            bits[i / 8] |= (uint8_t)(0x80u >> (i % 8));
        assert_int_equal(peer_send_bitfield(p, bits, nb), 0);
        free(bits);
    } else {
        assert_int_equal(peer_send_bitfield(p, NULL, 0), 0);
        if (!s->idle && !s->flood)
            assert_int_equal(peer_interested(p), 0);
        if (s->af_test)
            return; /* requests once the allowed-fast set came */
        for (int i = 0; s->flood && i < 2 * CHAN_CREDIT; i++) {
            int r = i % 2 ? peer_not_interested(p) : peer_interested(p);
            if (r == 0)
                s->flood_ok++;
            else if (r == -ECONNRESET)
                s->flood_reset++;
            else if (r == -ESHUTDOWN)
                s->flood_shut++;
        }
    }
}

static void
cb_ext_handshake(void *ud, struct peer *p, const struct wire_ext_handshake *h)
{
    struct side *s = ud;
    late(s, p);
    s->ext_handshakes++;
    snprintf(s->client, sizeof(s->client), "%s", h->client);
    s->reqq = h->reqq;
}

static void
cb_bitfield(void *ud, struct peer *p, uint8_t *bits, uint32_t nbytes)
{
    struct side *s = ud;
    late(s, p);
    (void)nbytes;
    s->bitfields++;
    s->seen_piece0 = bits[0] & 0x80;
    free(bits);
}

static void
cb_have_all(void *ud, struct peer *p)
{
    struct side *s = ud;
    late(s, p);
    s->have_all++;
    s->seen_piece0 = true;
}

static void fill_pipeline(struct side *s, struct peer *p);
static void seal_check(struct side *s, struct peer *p);
static void af_check(struct side *s, struct peer *p);

static void
cb_have(void *ud, struct peer *p, const uint32_t *pieces, size_t n)
{
    struct side *s = ud;
    late(s, p);
    for (size_t i = 0; i < n; i++) {
        s->haves++;
        if (pieces[i] == 0)
            s->seen_piece0 = true;
    }
    if (s->seen_piece0 && s->n_parked) {
        while (s->n_parked)
            s->todo[s->n_todo++] = s->parked[--s->n_parked];
        fill_pipeline(s, p);
    }
}

static void
cb_have_none(void *ud, struct peer *p)
{
    struct side *s = ud;
    late(s, p);
    s->have_none++;
}

static void
fill_pipeline(struct side *s, struct peer *p)
{
    struct wire_block batch[PIPELINE];
    size_t n = 0;
    while (s->inflight + n < PIPELINE && s->n_todo > 0)
        batch[n++] = s->todo[--s->n_todo];
    if (n == 0)
        return;
    int r = peer_request(p, batch, n);
    if (r < 0) {
        for (size_t i = n; i > 0; i--) /* back on the stack */
            s->todo[s->n_todo++] = batch[i - 1];
        return;
    }
    s->inflight += n;
}

static void
cb_unchoke(void *ud, struct peer *p)
{
    struct side *s = ud;
    late(s, p);
    s->unchokes++;
    if (!s->seeder)
        fill_pipeline(s, p);
}

static void
cb_interested(void *ud, struct peer *p)
{
    struct side *s = ud;
    late(s, p);
    s->interested++;
    if (s->seeder && !s->no_unchoke)
        assert_int_equal(peer_unchoke(p), 0);
}

static void
cb_blocks_done(void *ud, struct peer *p, const struct wire_block *b,
               size_t n)
{
    struct side *s = ud;
    late(s, p);
    for (size_t i = 0; i < n; i++) {
        /* Blocks are 16 KiB aligned: their index in all[] is direct. */
        size_t k = (size_t)b[i].index * (PIECE_LEN / WIRE_BLOCK_SIZE) +
                   b[i].begin / WIRE_BLOCK_SIZE;
        assert_true(k < s->n_all);
        assert_int_equal(s->all[k].length, b[i].length);
        assert_false(s->got[k]);
        s->got[k] = 1;
        s->blocks_done++;
        s->bytes_done += b[i].length;
    }
    s->inflight -= n;
    if (s->close_after && s->blocks_done >= s->close_after) {
        peer_close(p);
        peer_close(p); /* twice is harmless */
        assert_int_equal(peer_request(p, s->all, 1), -ESHUTDOWN);
        s->closed_peer = p;
        return;
    }
    if (s->break_after && s->blocks_done >= s->break_after) {
        ev_break(s->c->loop, EVBREAK_ONE);
        return;
    }
    if (s->blocks_done == s->n_all) {
        peer_close(p); /* done: the seeder sees the end */
        return;
    }
    fill_pipeline(s, p);
    seal_check(s, p);
    af_check(s, p);
}

/* The seal test: once every block not of a sealed piece is written and
 * every block of one dropped, nothing of the sealed pieces was written
 * (they still hold the leecher's own pattern); then unseal them and
 * fetch them. */
static void
seal_check(struct side *s, struct peer *p)
{
    if (!s->seal_test || s->unsealed || s->inflight ||
        s->blocks_done + s->sealed_dropped < s->n_all)
        return;
    static const uint32_t sealed[] = {0, 5};
    uint8_t *buf = malloc(PIECE_LEN);
    assert_non_null(buf);
    for (size_t k = 0; k < 2; k++) {
        uint32_t len = meta_piece_size(s->meta, sealed[k]);
        assert_int_equal(storage_read(s->st, (uint64_t)sealed[k] * PIECE_LEN,
                                      buf, len),
                         0);
        for (uint32_t i = 0; i < len; i++)
            if (buf[i] != 0xEE)
                fail_msg("sealed piece %u written at %u", sealed[k], i);
        pconn_piece_unseal(s->tor, sealed[k]);
    }
    free(buf);
    s->unsealed = true;
    while (s->n_parked)
        s->todo[s->n_todo++] = s->parked[--s->n_parked];
    fill_pipeline(s, p);
}

/* The allowed-fast test: every block of the set came while choked, and
 * the one request outside it was rejected. */
static void
af_check(struct side *s, struct peer *p)
{
    if (s->af_test && s->af_asked && s->inflight == 0 &&
        s->blocks_done == s->af_blocks && s->af_dropped == 1)
        peer_close(p);
}

static void
cb_allowed_fast(void *ud, struct peer *p, const uint32_t *pieces, size_t n)
{
    struct side *s = ud;
    late(s, p);
    for (size_t i = 0; i < n; i++) {
        assert_true(s->n_af < PCONN_ALLOWED_FAST_RX_MAX);
        s->af[s->n_af++] = pieces[i];
    }
    if (!s->af_test || s->af_asked || s->n_af < PCONN_ALLOWED_FAST_K)
        return;
    /* Every block of the set, and one of a piece outside it. */
    s->af_asked = true;
    s->n_todo = 0;
    uint32_t outside = UINT32_MAX;
    for (size_t i = s->n_all; i > 0; i--) {
        const struct wire_block *b = &s->all[i - 1];
        bool in = false;
        for (size_t k = 0; k < s->n_af; k++)
            in |= s->af[k] == b->index;
        if (in) {
            s->todo[s->n_todo++] = *b;
            s->af_blocks++;
        } else if (outside == UINT32_MAX) {
            outside = b->index;
            s->todo[s->n_todo++] = *b;
        }
    }
    assert_true(outside != UINT32_MAX);
    fill_pipeline(s, p);
}

static void
cb_dropped(void *ud, struct peer *p, const struct wire_block *b, size_t n)
{
    struct side *s = ud;
    late(s, p);
    if (s->af_test) {
        s->af_dropped += n;
        s->inflight -= n;
        af_check(s, p);
        return;
    }
    if (s->seal_test) {
        for (size_t i = 0; i < n; i++) {
            assert_true(pconn_piece_sealed(s->tor, b[i].index));
            s->sealed_dropped++;
            s->parked[s->n_parked++] = b[i];
        }
        s->inflight -= n;
        fill_pipeline(s, p);
        seal_check(s, p);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        s->dropped++;
        if (b[i].index == 0 && !s->seen_piece0)
            s->parked[s->n_parked++] = b[i]; /* until it has it */
        else
            s->todo[s->n_todo++] = b[i];
    }
    s->inflight -= n;
    fill_pipeline(s, p);
}

static void
cb_uploaded(void *ud, struct peer *p, uint64_t bytes, uint32_t blocks)
{
    struct side *s = ud;
    late(s, p);
    (void)blocks;
    s->uploaded += bytes;
    if (s->hide_piece0 && !s->sent_have0) {
        uint32_t zero = 0;
        s->sent_have0 = true;
        /* Twice in one iteration: one record, the thread sends one. */
        assert_int_equal(peer_send_have(p, &zero, 1), 0);
        assert_int_equal(peer_send_have(p, &zero, 1), 0);
    }
}

static void
cb_closed(void *ud, struct peer *p, enum pconn_reason reason, int detail)
{
    struct side *s = ud;
    check_thread(s);
    (void)p;
    s->closed++;
    s->reason = reason;
    s->detail = detail;
    struct ctx *c = s->c;
    if (++c->total_closed >= c->want_closed)
        ev_break(c->loop, EVBREAK_ONE);
}

static void
cb_port(void *ud, struct peer *p, uint16_t port)
{
    struct side *s = ud;
    late(s, p);
    s->dht_port = port;
}

static const struct peer_callbacks callbacks = {
    .on_port = cb_port,
    .on_info_hash = cb_info_hash,
    .on_handshake = cb_handshake,
    .on_ext_handshake = cb_ext_handshake,
    .on_bitfield = cb_bitfield,
    .on_have_all = cb_have_all,
    .on_have = cb_have,
    .on_have_none = cb_have_none,
    .on_unchoke = cb_unchoke,
    .on_interested = cb_interested,
    .on_blocks_done = cb_blocks_done,
    .on_dropped = cb_dropped,
    .on_uploaded = cb_uploaded,
    .on_closed = cb_closed,
    .on_allowed_fast = cb_allowed_fast,
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
    assert_int_equal(peer_accept(c->seed.tab, fd, (struct sockaddr *)&ss,
                                 len, NULL),
                     0);
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct ctx *c = w->data;
    c->timed_out = true;
    ev_break(loop, EVBREAK_ALL);
}

static void
ctx_init(struct ctx *c, const char *seed_name, const char *leech_name,
         uint64_t total)
{
    memset(c, 0, sizeof(*c));
    wrong_thread = false;
    alarm((unsigned)TEST_TIMEOUT_S + 30);
    c->main = pthread_self();
    c->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(c->loop);
    side_init(c, &c->seed, "seed", true, seed_name, total);
    side_init(c, &c->leech, "leech", false, leech_name, total);
    assert_int_equal(peer_table_new(&c->seed.tab, c->loop, &c->seed.cfg,
                                    &callbacks, &c->seed, 16),
                     0);
    assert_int_equal(peer_table_new(&c->leech.tab, c->loop, &c->leech.cfg,
                                    &callbacks, &c->leech, 16),
                     0);
    c->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(c->lfd >= 0);
    c->laddr.sin_family = AF_INET;
    c->laddr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(c->lfd, (struct sockaddr *)&c->laddr,
                          sizeof(c->laddr)),
                     0);
    socklen_t len = sizeof(c->laddr);
    assert_int_equal(getsockname(c->lfd, (struct sockaddr *)&c->laddr, &len),
                     0);
    assert_int_equal(listen(c->lfd, 16), 0);
    ev_io_init(&c->accept_io, accept_cb, c->lfd, EV_READ);
    c->accept_io.data = c;
    ev_io_start(c->loop, &c->accept_io);
    ev_timer_init(&c->deadline, deadline_cb, TEST_TIMEOUT_S, 0);
    c->deadline.data = c;
    ev_timer_start(c->loop, &c->deadline);
}

static void
run(struct ctx *c, int want_closed)
{
    c->want_closed = want_closed;
    if (c->total_closed < want_closed)
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

static double
cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- tests ----------------------------------------------------------- */

static void
test_transfer(void **state)
{
    (void)state;
    struct ctx c;
    uint64_t total = test_total();
    ctx_init(&c, "data", "data", total);
    double t0 = now_s(), c0 = cpu_s();
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    double dt = now_s() - t0, dc = cpu_s() - c0;
    if (getenv("TD_PEERCONN_MB"))
        print_message("transfer: %llu bytes in %.3f s: %.1f MB/s, "
                      "%.2f CPU-s/GiB (both ends)\n",
                      (unsigned long long)total, dt, (double)total / dt / 1e6,
                      dc / ((double)total / (1u << 30)));

    assert_int_equal(c.leech.handshakes, 1);
    assert_int_equal(c.seed.handshakes, 1);
    assert_int_equal(c.leech.have_all, 1);     /* fast: have all */
    assert_int_equal(c.seed.have_none, 1);     /* fast: have none */
    assert_int_equal(c.leech.ext_handshakes, 1);
    assert_int_equal(c.seed.ext_handshakes, 1);
    assert_string_equal(c.leech.client, "torrentd " TD_VERSION);
    assert_int_equal(c.leech.reqq, PCONN_REQQ_DEFAULT);
    assert_int_equal(c.leech.dht_port, 7001);
    assert_int_equal(c.seed.dht_port, 7002);
    assert_int_equal(c.seed.interested, 1);
    assert_int_equal(c.leech.unchokes, 1);
    assert_int_equal(c.leech.blocks_done, c.leech.n_all);
    assert_int_equal(c.leech.bytes_done, total);
    assert_int_equal(c.seed.uploaded, total);
    assert_int_equal(c.leech.reason, PCONN_R_CLOSED);
    assert_int_equal(c.seed.reason, PCONN_R_EOF);
    assert_int_equal(c.leech.late_callbacks + c.seed.late_callbacks, 0);
    assert_int_equal(peer_table_count(c.leech.tab), 0);
    assert_int_equal(peer_table_count(c.seed.tab), 0);

    /* Byte for byte. */
    size_t chunk = 1u << 20;
    uint8_t *a = malloc(chunk), *b = malloc(chunk);
    for (uint64_t off = 0; off < total; off += chunk) {
        size_t n = total - off < chunk ? (size_t)(total - off) : chunk;
        assert_int_equal(storage_read(c.seed.st, off, a, n), 0);
        assert_int_equal(storage_read(c.leech.st, off, b, n), 0);
        assert_memory_equal(a, b, n);
    }
    free(a);
    free(b);
    ctx_release(&c);
}

/* The seeder lacks piece 0 at first: a bitfield (not have all), requests
 * for piece 0 rejected (fast) and reported dropped, then a have for it,
 * and the leecher gets everything. */
static void
test_partial_seeder(void **state)
{
    (void)state;
    struct ctx c;
    uint64_t total = (1u << 20) + 777;
    ctx_init(&c, "data", "data", total);
    c.seed.hide_piece0 = true;
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    assert_int_equal(c.leech.bitfields, 1);
    assert_int_equal(c.leech.have_all, 0);
    assert_int_equal(c.leech.haves, 1);
    assert_true(c.leech.dropped >= 4); /* the 4 blocks of piece 0 */
    assert_int_equal(c.leech.blocks_done, c.leech.n_all);
    assert_int_equal(c.seed.uploaded, total);
    uint8_t *a = malloc(total), *b = malloc(total);
    assert_int_equal(storage_read(c.seed.st, 0, a, total), 0);
    assert_int_equal(storage_read(c.leech.st, 0, b, total), 0);
    assert_memory_equal(a, b, total);
    free(a);
    free(b);
    ctx_release(&c);
}

static void
test_wrong_info_hash_incoming(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "other", 100000);
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    assert_int_equal(c.seed.reason, PCONN_R_UNKNOWN_TORRENT);
    assert_int_equal(c.leech.reason, PCONN_R_EOF);
    assert_int_equal(c.seed.handshakes + c.leech.handshakes, 0);
    ctx_release(&c);
}

/* A raw peer: accept the leecher's connection ourselves, read its
 * handshake, answer with another info-hash. */
static void
test_wrong_info_hash_outgoing(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 100000);
    ev_io_stop(c.loop, &c.accept_io);
    int fl = fcntl(c.lfd, F_GETFL);
    fcntl(c.lfd, F_SETFL, fl & ~O_NONBLOCK);
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    int fd = accept4(c.lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    uint8_t hs[WIRE_HANDSHAKE_LEN];
    size_t got = 0;
    while (got < sizeof(hs)) {
        ssize_t k = read(fd, hs + got, sizeof(hs) - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    struct wire_handshake h;
    assert_int_equal(wire_handshake_parse(&h, hs, sizeof(hs),
                                          c.leech.tor->info_hash, NULL),
                     WIRE_HANDSHAKE_LEN);
    h.info_hash[0] ^= 1;
    memset(h.peer_id, 'R', sizeof(h.peer_id));
    assert_int_equal(wire_put_handshake(hs, sizeof(hs), &h),
                     WIRE_HANDSHAKE_LEN);
    assert_int_equal(write(fd, hs, sizeof(hs)), (ssize_t)sizeof(hs));
    run(&c, 1);
    assert_int_equal(c.leech.reason, PCONN_R_INFO_HASH);
    assert_int_equal(c.leech.detail, WIRE_E_INFO_HASH);
    close(fd);
    ctx_release(&c);
}

/* A client that connects to the seeder and sends bytes. */
static int
raw_connect(struct ctx *c, const void *data, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&c->laddr,
                             sizeof(c->laddr)),
                     0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    return fd;
}

static void
test_garbage(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 100000);
    /* Not a handshake at all. */
    static const char http[] = "GET /announce HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = raw_connect(&c, http, sizeof(http) - 1);
    run(&c, 1);
    assert_int_equal(c.seed.reason, PCONN_R_HANDSHAKE);
    assert_int_equal(c.seed.detail, WIRE_E_PROTOCOL);
    close(fd);

    /* A good handshake, then a message longer than any limit. */
    uint8_t msg[WIRE_HANDSHAKE_LEN + 5];
    struct wire_handshake h;
    memset(&h, 0, sizeof(h));
    wire_reserved_set(h.reserved, WIRE_F_FAST | WIRE_F_EXTENDED | WIRE_F_DHT);
    memcpy(h.info_hash, c.seed.tor->info_hash, WIRE_HASH_LEN);
    memset(h.peer_id, 'G', sizeof(h.peer_id));
    assert_int_equal(wire_put_handshake(msg, sizeof(msg), &h),
                     WIRE_HANDSHAKE_LEN);
    memcpy(msg + WIRE_HANDSHAKE_LEN, "\x7f\xff\xff\xff\x07", 5);
    fd = raw_connect(&c, msg, sizeof(msg));
    run(&c, 2);
    assert_int_equal(c.seed.handshakes, 1);
    assert_int_equal(c.seed.reason, PCONN_R_PROTOCOL);
    assert_int_equal(c.seed.detail, WIRE_E_TOO_LONG);
    close(fd);

    /* A peer that goes away in the middle of its handshake. */
    fd = raw_connect(&c, "\x13", 1);
    close(fd);
    run(&c, 3);
    assert_int_equal(c.seed.reason, PCONN_R_EOF);
    ctx_release(&c);
}

static void
test_close_in_flight(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 4u << 20);
    c.leech.close_after = 40;
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    assert_int_equal(c.leech.reason, PCONN_R_CLOSED);
    assert_true(c.seed.reason == PCONN_R_EOF || c.seed.reason == PCONN_R_IO);
    assert_true(c.leech.blocks_done >= 40);
    assert_true(c.leech.blocks_done < c.leech.n_all);
    assert_int_equal(c.leech.late_callbacks + c.seed.late_callbacks, 0);
    ctx_release(&c);
}

static void
test_shutdown_in_flight(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 4u << 20);
    c.leech.break_after = 20;
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 100); /* until break_after */
    assert_true(c.leech.blocks_done >= 20);
    /* Both tables go away with the connection and transfers live. */
    peer_table_free(c.leech.tab);
    c.leech.tab = NULL;
    assert_int_equal(c.leech.closed, 1);
    assert_int_equal(c.leech.reason, PCONN_R_SHUTDOWN);
    peer_table_free(c.seed.tab);
    c.seed.tab = NULL;
    assert_int_equal(c.seed.closed, 1);
    ctx_release(&c);
}

/* The upload limit holds: 1 MiB at 2 MB/s takes about half a second. */
static void
test_upload_rate(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 1u << 20);
    struct rate_bucket up;
    rate_bucket_init(&up, 2000000, 0);
    /* The seeder's table was made with no bucket: make another. */
    peer_table_free(c.seed.tab);
    c.seed.cfg.up_global = &up;
    assert_int_equal(peer_table_new(&c.seed.tab, c.loop, &c.seed.cfg,
                                    &callbacks, &c.seed, 4),
                     0);
    double t0 = now_s();
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    double dt = now_s() - t0;
    assert_int_equal(c.leech.blocks_done, c.leech.n_all);
    /* (1 MiB - burst) / 2 MB/s = 0.42 s at least. */
    assert_true(dt > 0.35);
    assert_true(dt < 5.0);
    ctx_release(&c);
}

/* Make side's table again with cfg as it is now. */
static void
remake_table(struct side *s)
{
    peer_table_free(s->tab);
    assert_int_equal(peer_table_new(&s->tab, s->c->loop, &s->cfg, &callbacks,
                                    s, 4),
                     0);
}

static void
break_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* Handshake timeout; keep-alives keep an idle connection up; without
 * them the inactivity timeout closes it. */
static void
test_timeouts(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 100000);
    c.seed.cfg.handshake_timeout_ms = 200;
    remake_table(&c.seed);
    int fd = raw_connect(&c, "\x13", 1); /* and then nothing */
    run(&c, 1);
    assert_int_equal(c.seed.reason, PCONN_R_HANDSHAKE_TIMEOUT);
    close(fd);

    /* Keep-alives every 50 ms, inactivity after 300 ms: up for 1 s. */
    c.seed.cfg.keepalive_ms = c.leech.cfg.keepalive_ms = 50;
    c.seed.cfg.inactivity_ms = c.leech.cfg.inactivity_ms = 300;
    remake_table(&c.seed);
    remake_table(&c.leech);
    c.leech.idle = true;
    struct peer *p;
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), &p),
                     0);
    assert_int_equal(peer_incoming(p), false);
    assert_ptr_equal(peer_torrent(p), c.leech.tor);
    ev_timer t;
    ev_timer_init(&t, break_cb, 1.0, 0);
    ev_timer_start(c.loop, &t);
    run(&c, 100);
    ev_timer_stop(c.loop, &t);
    assert_int_equal(c.total_closed, 1);
    assert_int_equal(c.leech.handshakes, 1);
    assert_int_equal(peer_table_count(c.leech.tab), 1);
    assert_int_equal(peer_table_count(c.seed.tab), 1);

    /* Keep-alives every 10 s: the 300 ms inactivity ends it. */
    c.seed.cfg.keepalive_ms = c.leech.cfg.keepalive_ms = 10000;
    remake_table(&c.seed);  /* (closes the idle pair: shutdown) */
    remake_table(&c.leech);
    assert_int_equal(c.total_closed, 3);
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 5);
    assert_int_equal(c.leech.handshakes, 2);
    assert_true(c.seed.reason == PCONN_R_TIMEOUT ||
                c.seed.reason == PCONN_R_EOF);
    assert_true(c.leech.reason == PCONN_R_TIMEOUT ||
                c.leech.reason == PCONN_R_EOF);
    assert_true(c.seed.reason == PCONN_R_TIMEOUT ||
                c.leech.reason == PCONN_R_TIMEOUT);
    ctx_release(&c);
}

/* An engine that writes more commands to one peer within one callback
 * than the credit allows: the peer is dropped as stuck, the reactor never
 * blocks. */
static void
test_stuck(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 100000);
    c.leech.flood = true;
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    /* The bitfield took one record of the credit. */
    assert_int_equal(c.leech.flood_ok, CHAN_CREDIT - 1);
    assert_int_equal(c.leech.flood_reset, 1);
    assert_int_equal(c.leech.flood_shut, CHAN_CREDIT);
    assert_int_equal(c.leech.reason, PCONN_R_STUCK);
    assert_int_equal(c.leech.detail, -ENOBUFS);
    ctx_release(&c);
}

/* Two ends with one peer id: a connection to ourselves. */
static void
test_self(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 100000);
    memcpy(c.seed.cfg.peer_id, c.leech.cfg.peer_id, WIRE_PEER_ID_LEN);
    remake_table(&c.seed);
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    assert_true(c.leech.reason == PCONN_R_SELF ||
                c.seed.reason == PCONN_R_SELF);
    assert_int_equal(c.seed.handshakes + c.leech.handshakes, 0);
    ctx_release(&c);
}

/* Sealed pieces (peerconn.h): the leecher's pieces 0 and 5 are sealed
 * (as if being hashed, or verified) and hold its own data; it asks for
 * every block.  The blocks of 0 and 5 must come back dropped and leave
 * the data alone; once unsealed they are written like the others.
 * Without the seal the peer thread would overwrite "verified" data. */
static void
test_sealed_piece_not_written(void **state)
{
    (void)state;
    struct ctx c;
    uint64_t total = (1u << 20) + 12345;
    ctx_init(&c, "data", "data", total);
    struct side *l = &c.leech;
    l->seal_test = true;
    static const uint32_t sealed[] = {0, 5};
    uint8_t *buf = malloc(PIECE_LEN);
    assert_non_null(buf);
    memset(buf, 0xEE, PIECE_LEN);
    for (size_t k = 0; k < 2; k++) {
        assert_int_equal(storage_write(l->st, (uint64_t)sealed[k] * PIECE_LEN,
                                       buf, PIECE_LEN),
                         0);
        pconn_piece_seal(l->tor, sealed[k]);
        assert_true(pconn_piece_sealed(l->tor, sealed[k]));
    }
    free(buf);
    assert_false(pconn_piece_sealed(l->tor, 1));
    assert_int_equal(peer_connect(l->tab, l->tor, (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    assert_true(l->unsealed);
    assert_int_equal(l->sealed_dropped, 2 * (PIECE_LEN / WIRE_BLOCK_SIZE));
    assert_int_equal(l->blocks_done, l->n_all);
    uint8_t *a = malloc(total), *b = malloc(total);
    assert_int_equal(storage_read(c.seed.st, 0, a, total), 0);
    assert_int_equal(storage_read(l->st, 0, b, total), 0);
    assert_memory_equal(a, b, total);
    free(a);
    free(b);
    ctx_release(&c);
}

/* The writer count: a write that began before the seal is waited for;
 * one that begins after it is refused. */
struct writer_arg {
    struct pconn_torrent *tor;
    atomic_int phase; /* 1: began; 2: may end */
};

static void *
writer_main(void *arg)
{
    struct writer_arg *w = arg;
    assert_true(pconn_piece_write_begin(w->tor, 3));
    atomic_store(&w->phase, 1);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL); /* a slow write */
    pconn_piece_write_end(w->tor, 3);
    return NULL;
}

static void
test_seal_waits_for_writers(void **state)
{
    (void)state;
    struct meta_info *m = make_meta("w", 1u << 20);
    struct pconn_torrent *t = NULL;
    assert_int_equal(pconn_torrent_new(&t, m, NULL, NULL, NULL, NULL, NULL),
                     0);
    /* Out of range: ignored. */
    pconn_piece_seal(t, m->n_pieces);
    assert_false(pconn_piece_sealed(t, m->n_pieces));
    assert_true(pconn_piece_write_begin(t, m->n_pieces));
    assert_int_equal(pconn_piece_wait_writers(t, m->n_pieces, 0), 0);

    /* Two writers, then the seal: a third is refused; the wait times out
     * while they write and returns once they are done. */
    assert_true(pconn_piece_write_begin(t, 2));
    assert_true(pconn_piece_write_begin(t, 2));
    pconn_piece_seal(t, 2);
    assert_false(pconn_piece_write_begin(t, 2));
    assert_int_equal(pconn_piece_wait_writers(t, 2, 20), -ETIMEDOUT);
    pconn_piece_write_end(t, 2);
    assert_int_equal(pconn_piece_wait_writers(t, 2, 20), -ETIMEDOUT);
    pconn_piece_write_end(t, 2);
    assert_int_equal(pconn_piece_wait_writers(t, 2, 20), 0);
    assert_false(pconn_piece_write_begin(t, 2));
    pconn_piece_unseal(t, 2);
    assert_true(pconn_piece_write_begin(t, 2));
    pconn_piece_write_end(t, 2);
    assert_false(pconn_piece_sealed(t, 2));

    /* Another thread's write in flight when the seal comes. */
    struct writer_arg w = {.tor = t};
    atomic_init(&w.phase, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
    while (atomic_load(&w.phase) == 0)
        sched_yield();
    pconn_piece_seal(t, 3);
    double t0 = now_s();
    assert_int_equal(pconn_piece_wait_writers(t, 3, 5000), 0);
    assert_true(now_s() - t0 > 0.02);
    assert_false(pconn_piece_write_begin(t, 3));
    pthread_join(th, NULL);
    pconn_torrent_unref(t);
    meta_free(m);
}

/* BEP 6: a seeder that never unchokes us sends ALLOWED_FAST for the
 * canonical set of our address (it has every piece) and serves requests
 * for those pieces while choking; a request outside the set is
 * rejected. */
static void
test_allowed_fast_while_choked(void **state)
{
    (void)state;
    struct ctx c;
    uint64_t total = (1u << 20) + 12345; /* 17 pieces */
    ctx_init(&c, "data", "data", total);
    c.seed.no_unchoke = true;
    c.leech.af_test = true;
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&c.laddr,
                                  sizeof(c.laddr), NULL),
                     0);
    run(&c, 2);
    assert_int_equal(c.leech.unchokes, 0);
    assert_int_equal(c.seed.interested, 1);
    /* The set is BEP 6's for 127.0.0.1, in its order. */
    uint32_t want[PCONN_ALLOWED_FAST_K];
    uint8_t ip[4] = {127, 0, 0, 1};
    assert_int_equal(wire_allowed_fast(want, PCONN_ALLOWED_FAST_K,
                                       c.seed.tor->info_hash, ip, 4,
                                       c.seed.meta->n_pieces),
                     PCONN_ALLOWED_FAST_K);
    assert_int_equal(c.leech.n_af, PCONN_ALLOWED_FAST_K);
    assert_memory_equal(c.leech.af, want, sizeof(want));
    assert_true(c.leech.af_blocks >= 4 * (PCONN_ALLOWED_FAST_K - 1));
    assert_int_equal(c.leech.blocks_done, c.leech.af_blocks);
    assert_int_equal(c.leech.af_dropped, 1);
    /* What came is the seeder's data. */
    for (size_t k = 0; k < PCONN_ALLOWED_FAST_K; k++) {
        uint32_t len = meta_piece_size(c.seed.meta, want[k]);
        uint64_t off = (uint64_t)want[k] * PIECE_LEN;
        uint8_t *a = malloc(len), *b = malloc(len);
        assert_int_equal(storage_read(c.seed.st, off, a, len), 0);
        assert_int_equal(storage_read(c.leech.st, off, b, len), 0);
        assert_memory_equal(a, b, len);
        free(a);
        free(b);
    }
    assert_int_equal(c.seed.uploaded, c.leech.bytes_done);
    ctx_release(&c);
}

/* Read one message (length prefix and body) from a blocking socket;
 * returns its id (-1: keep-alive), the body in buf. */
static int
raw_msg(int fd, uint8_t *buf, size_t cap, uint32_t *ret_len)
{
    uint8_t h[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t k = read(fd, h + got, 4 - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 |
                 (uint32_t)h[2] << 8 | h[3];
    assert_true(n <= cap);
    got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    *ret_len = n;
    return n ? buf[0] : -1;
}

/* Bitfield first: a request that comes with the handshake, before our
 * bitfield command, gets its REJECT after the bitfield (have all), not
 * ahead of it; one for an allowed-fast piece is served, though we
 * choke. */
static void
test_request_before_bitfield(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 100000 * 4); /* 7 pieces */
    uint32_t af[PCONN_ALLOWED_FAST_K];
    uint8_t ip[4] = {127, 0, 0, 1};
    int n_af = wire_allowed_fast(af, PCONN_ALLOWED_FAST_K,
                                 c.seed.tor->info_hash, ip, 4,
                                 c.seed.meta->n_pieces);
    assert_int_equal(n_af, 7); /* k > piece count: every piece */
    uint8_t msg[WIRE_HANDSHAKE_LEN + WIRE_REQUEST_LEN];
    struct wire_handshake h;
    memset(&h, 0, sizeof(h));
    wire_reserved_set(h.reserved, WIRE_F_FAST | WIRE_F_EXTENDED | WIRE_F_DHT);
    memcpy(h.info_hash, c.seed.tor->info_hash, WIRE_HASH_LEN);
    memset(h.peer_id, 'R', sizeof(h.peer_id));
    assert_int_equal(wire_put_handshake(msg, sizeof(msg), &h),
                     WIRE_HANDSHAKE_LEN);
    /* A block of piece 3: allowed fast (every piece is). */
    struct wire_block b = {3, 0, WIRE_BLOCK_SIZE};
    assert_int_equal(wire_put_block(msg + WIRE_HANDSHAKE_LEN,
                                    WIRE_REQUEST_LEN, WIRE_REQUEST, &b),
                     WIRE_REQUEST_LEN);
    int fd = raw_connect(&c, msg, sizeof(msg));
    /* Run the loop until the seeder's thread has answered. */
    ev_timer t;
    ev_timer_init(&t, break_cb, 0.5, 0);
    ev_timer_start(c.loop, &t);
    run(&c, 100);
    ev_timer_stop(c.loop, &t);
    uint8_t hs[WIRE_HANDSHAKE_LEN];
    size_t got = 0;
    while (got < sizeof(hs)) {
        ssize_t k = read(fd, hs + got, sizeof(hs) - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    static uint8_t buf[WIRE_BLOCK_SIZE + 64];
    uint32_t n;
    /* First: have all. */
    assert_int_equal(raw_msg(fd, buf, sizeof(buf), &n), WIRE_HAVE_ALL);
    int allowed = 0, pieces = 0;
    while (pieces == 0) {
        int id = raw_msg(fd, buf, sizeof(buf), &n);
        assert_int_not_equal(id, WIRE_REJECT);
        assert_int_not_equal(id, WIRE_UNCHOKE);
        if (id == WIRE_ALLOWED_FAST)
            allowed++;
        if (id == WIRE_PIECE) {
            pieces++;
            assert_int_equal(n, 9 + WIRE_BLOCK_SIZE);
            assert_int_equal(buf[4], 3); /* index 3 */
        }
    }
    assert_int_equal(allowed, 7);
    close(fd);
    run(&c, 1);
    ctx_release(&c);
}

/* Rejected, not served: a request before the bitfield for a piece out of
 * the allowed-fast set (k = 10 of 64 pieces) while choking. */
static void
test_reject_after_bitfield(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 64u * PIECE_LEN);
    uint32_t af[PCONN_ALLOWED_FAST_K];
    uint8_t ip[4] = {127, 0, 0, 1};
    assert_int_equal(wire_allowed_fast(af, PCONN_ALLOWED_FAST_K,
                                       c.seed.tor->info_hash, ip, 4, 64),
                     PCONN_ALLOWED_FAST_K);
    uint32_t outside = 0;
    for (bool in = true; in; outside += in) {
        in = false;
        for (size_t k = 0; k < PCONN_ALLOWED_FAST_K; k++)
            in |= af[k] == outside;
    }
    uint8_t msg[WIRE_HANDSHAKE_LEN + WIRE_REQUEST_LEN];
    struct wire_handshake h;
    memset(&h, 0, sizeof(h));
    wire_reserved_set(h.reserved, WIRE_F_FAST | WIRE_F_EXTENDED | WIRE_F_DHT);
    memcpy(h.info_hash, c.seed.tor->info_hash, WIRE_HASH_LEN);
    memset(h.peer_id, 'R', sizeof(h.peer_id));
    assert_int_equal(wire_put_handshake(msg, sizeof(msg), &h),
                     WIRE_HANDSHAKE_LEN);
    struct wire_block b = {outside, 0, WIRE_BLOCK_SIZE};
    assert_int_equal(wire_put_block(msg + WIRE_HANDSHAKE_LEN,
                                    WIRE_REQUEST_LEN, WIRE_REQUEST, &b),
                     WIRE_REQUEST_LEN);
    int fd = raw_connect(&c, msg, sizeof(msg));
    ev_timer t;
    ev_timer_init(&t, break_cb, 0.5, 0);
    ev_timer_start(c.loop, &t);
    run(&c, 100);
    ev_timer_stop(c.loop, &t);
    uint8_t hs[WIRE_HANDSHAKE_LEN];
    size_t got = 0;
    while (got < sizeof(hs)) {
        ssize_t k = read(fd, hs + got, sizeof(hs) - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    static uint8_t buf[WIRE_BLOCK_SIZE + 64];
    uint32_t n;
    assert_int_equal(raw_msg(fd, buf, sizeof(buf), &n), WIRE_HAVE_ALL);
    int allowed = 0;
    for (;;) {
        int id = raw_msg(fd, buf, sizeof(buf), &n);
        assert_int_not_equal(id, WIRE_PIECE);
        if (id == WIRE_ALLOWED_FAST)
            allowed++;
        if (id == WIRE_REJECT)
            break;
    }
    assert_int_equal(allowed, PCONN_ALLOWED_FAST_K); /* all before it */
    close(fd);
    run(&c, 1);
    ctx_release(&c);
}

/* A connection nobody answers: connect fails with a reason. */
static void
test_connect_refused(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c, "data", "data", 100000);
    struct sockaddr_in a = c.laddr;
    int tmp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in any = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(tmp, (struct sockaddr *)&any, sizeof(any)), 0);
    socklen_t len = sizeof(a);
    getsockname(tmp, (struct sockaddr *)&a, &len);
    close(tmp); /* a port where nobody listens */
    /* Bound to the configured local address first. */
    struct sockaddr_in *b = (struct sockaddr_in *)&c.leech.cfg.bind_addr;
    b->sin_family = AF_INET;
    b->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c.leech.cfg.bind_len = sizeof(*b);
    remake_table(&c.leech);
    assert_int_equal(peer_connect(c.leech.tab, c.leech.tor,
                                  (struct sockaddr *)&a, sizeof(a), NULL),
                     0);
    run(&c, 1);
    assert_int_equal(c.leech.reason, PCONN_R_CONNECT);
    assert_int_equal(c.leech.detail, -ECONNREFUSED);
    ctx_release(&c);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_partial_seeder),
        cmocka_unit_test(test_wrong_info_hash_incoming),
        cmocka_unit_test(test_wrong_info_hash_outgoing),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_close_in_flight),
        cmocka_unit_test(test_shutdown_in_flight),
        cmocka_unit_test(test_upload_rate),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_self),
        cmocka_unit_test(test_stuck),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_sealed_piece_not_written),
        cmocka_unit_test(test_seal_waits_for_writers),
        cmocka_unit_test(test_allowed_fast_while_choked),
        cmocka_unit_test(test_request_before_bitfield),
        cmocka_unit_test(test_reject_after_bitfield),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
