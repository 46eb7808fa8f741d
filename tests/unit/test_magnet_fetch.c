/* Unit tests for daemon/magnet_fetch: requests bounded per peer and only
 * to peers with ut_metadata and a sane metadata_size, rejects rest a peer
 * and strikes end it, the whole checked on a worker (right metadata ->
 * done with a parsed torrent carrying the trackers; wrong metadata -> the
 * liar is not asked again).  peer_send_metadata_request is stubbed here
 * (the linker takes this one before libdaemon's). */
#include <errno.h>
#include <ev.h>
#include <openssl/sha.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/ext.h"
#include "common/metainfo.h"
#include "daemon/magnet_fetch.h"
#include "daemon/peer.h"
#include "daemon/worker.h"

#define MAX_SENT 4096

/* Fake peers: only their addresses are used. */
static char fake_peers[8];
#define P(i) ((struct peer *)&fake_peers[(i)])

static struct {
    struct peer *p[MAX_SENT];
    uint32_t piece[MAX_SENT];
    size_t n;
} sent;

int
peer_send_metadata_request(struct peer *p, uint32_t piece)
{
    if (sent.n < MAX_SENT) {
        sent.p[sent.n] = p;
        sent.piece[sent.n] = piece;
        sent.n++;
    }
    return 0;
}

static size_t
sent_to(struct peer *p)
{
    size_t n = 0;
    for (size_t i = 0; i < sent.n; i++)
        n += sent.p[i] == p;
    return n;
}

struct result {
    struct ev_loop *loop;
    struct meta_info *meta;
    uint8_t *raw;
    size_t len;
    unsigned calls;
};

static void
on_done(void *arg, struct meta_info *meta, uint8_t *raw, size_t len)
{
    struct result *r = arg;
    r->calls++;
    meta_free(r->meta);
    free(r->raw);
    r->meta = meta;
    r->raw = raw;
    r->len = len;
    ev_break(r->loop, EVBREAK_ALL);
}

/* A valid info dictionary of about 40 KiB (3 metadata pieces). */
static char *
make_info(size_t *ret_len, uint8_t hash[20])
{
    size_t pad = 40000;
    char *b = malloc(pad + 256);
    assert_non_null(b);
    int n = snprintf(b, 256,
                     "d6:lengthi16384e4:name1:a12:piece lengthi16384e"
                     "6:pieces20:%020d4:zpad%zu:",
                     0, pad);
    memset(b + n, 'x', pad);
    b[n + pad] = 'e';
    *ret_len = (size_t)n + pad + 1;
    SHA1((const unsigned char *)b, *ret_len, hash);
    return b;
}

static uint8_t *
piece_copy(const char *info, size_t len, uint32_t piece, uint32_t *ret_len)
{
    uint32_t pl = ext_metadata_piece_len((uint32_t)len, piece);
    uint8_t *d = malloc(pl);
    assert_non_null(d);
    memcpy(d, info + (size_t)piece * EXT_METADATA_PIECE, pl);
    *ret_len = pl;
    return d;
}

static void
test_requests_bounded(void **state)
{
    (void)state;
    uint8_t hash[20] = {1};
    struct mfetch *mf = NULL;
    memset(&sent, 0, sizeof(sent));
    assert_int_equal(mfetch_new(&mf, hash, NULL, NULL, 0, on_done, NULL), 0);
    /* No ut_metadata, no size, too large: never asked. */
    mfetch_peer(mf, P(0), 0, 1000);
    mfetch_peer(mf, P(1), 2, 0);
    mfetch_peer(mf, P(2), 2, EXT_METADATA_MAX + 1);
    assert_int_equal(sent.n, 0);
    /* 100 pieces: at most MFETCH_INFLIGHT each, no piece twice. */
    uint32_t size = 100 * EXT_METADATA_PIECE;
    mfetch_peer(mf, P(3), 2, size);
    mfetch_peer(mf, P(4), 2, size);
    assert_int_equal(sent_to(P(3)), MFETCH_INFLIGHT);
    assert_int_equal(sent_to(P(4)), MFETCH_INFLIGHT);
    for (size_t i = 0; i < sent.n; i++)
        for (size_t k = i + 1; k < sent.n; k++)
            assert_int_not_equal(sent.piece[i], sent.piece[k]);
    /* Another size is not used while the first one is assembled. */
    mfetch_peer(mf, P(5), 2, size + 1);
    assert_int_equal(sent_to(P(5)), 0);
    assert_int_equal(mfetch_sources(mf), 3);
    /* Rejects rest the peer; MFETCH_STRIKES of them end it. */
    size_t before = sent_to(P(3));
    mfetch_reject(mf, P(3), sent.piece[0]);
    assert_int_equal(sent_to(P(3)), before); /* resting */
    /* Data of the wrong total size: that peer is done. */
    uint32_t piece = sent.piece[MFETCH_INFLIGHT];
    uint8_t *d = calloc(1, EXT_METADATA_PIECE);
    mfetch_data(mf, P(4), piece, size + 5, d, EXT_METADATA_PIECE);
    before = sent_to(P(4));
    mfetch_tick(mf, 0);
    assert_int_equal(sent_to(P(4)), before);
    /* Data nobody asked for is dropped (and freed). */
    d = calloc(1, EXT_METADATA_PIECE);
    mfetch_data(mf, P(6), 0, size, d, EXT_METADATA_PIECE);
    mfetch_peer_gone(mf, P(3));
    mfetch_peer_gone(mf, P(4));
    mfetch_free(mf);
    mfetch_free(NULL);
}

static void
run_until_done(struct result *r, struct worker *w)
{
    while (!r->calls && worker_pending(w))
        ev_run(r->loop, EVRUN_ONCE);
}

static void
test_assemble_and_check(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct worker *w = NULL;
    assert_int_equal(worker_new(&w, loop, "mf", 1), 0);
    size_t len = 0;
    uint8_t hash[20];
    char *info = make_info(&len, hash);
    char tr0[] = "http://127.0.0.1:1/announce", tr1[] = "udp://127.0.0.1:2";
    char *tr[] = {tr0, tr1};
    struct result res = {.loop = loop};
    struct mfetch *mf = NULL;
    memset(&sent, 0, sizeof(sent));
    assert_int_equal(mfetch_new(&mf, hash, w, tr, 2, on_done, &res), 0);

    /* A liar: right size, wrong bytes.  It alone sends everything. */
    mfetch_peer(mf, P(0), 3, (uint32_t)len);
    uint32_t n = ext_metadata_piece_count((uint32_t)len);
    assert_int_equal(n, 3);
    assert_int_equal(sent_to(P(0)), n);
    for (size_t i = 0; i < sent.n; i++) {
        uint32_t pl;
        uint8_t *d = piece_copy(info, len, sent.piece[i], &pl);
        d[0] ^= 1;
        mfetch_data(mf, P(0), sent.piece[i], (uint32_t)len, d, pl);
    }
    /* The check fails on the worker; no done, nothing more asked of it. */
    while (worker_pending(w))
        ev_run(loop, EVRUN_ONCE);
    assert_int_equal(res.calls, 0);
    size_t before = sent.n;
    mfetch_tick(mf, 0);
    assert_int_equal(sent.n, before);

    /* An honest peer gives the metadata. */
    mfetch_peer(mf, P(1), 7, (uint32_t)len);
    for (int round = 0; round < 10 && !res.calls; round++) {
        size_t from = before;
        before = sent.n;
        for (size_t i = from; i < before; i++) {
            assert_ptr_equal(sent.p[i], P(1));
            uint32_t pl;
            uint8_t *d = piece_copy(info, len, sent.piece[i], &pl);
            mfetch_data(mf, P(1), sent.piece[i], (uint32_t)len, d, pl);
        }
        run_until_done(&res, w);
    }
    assert_int_equal(res.calls, 1);
    assert_non_null(res.meta);
    assert_memory_equal(res.meta->info_hash, hash, 20);
    assert_int_equal(res.meta->n_tiers, 2);
    assert_int_equal(res.meta->info_len, len);
    assert_non_null(memmem(res.raw, res.len, "13:announce-list", 16));
    mfetch_free(mf);
    worker_free(w);
    ev_loop_destroy(loop);
    meta_free(res.meta);
    free(res.raw);
    free(info);
}

/* Freed while the check runs: the job's end is dropped quietly. */
static void
test_free_during_check(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct worker *w = NULL;
    assert_int_equal(worker_new(&w, loop, "mf", 1), 0);
    size_t len = 0;
    uint8_t hash[20];
    char *info = make_info(&len, hash);
    struct result res = {.loop = loop};
    struct mfetch *mf = NULL;
    memset(&sent, 0, sizeof(sent));
    assert_int_equal(mfetch_new(&mf, hash, w, NULL, 0, on_done, &res), 0);
    mfetch_peer(mf, P(0), 3, (uint32_t)len);
    for (size_t i = 0; i < sent.n; i++) {
        uint32_t pl;
        uint8_t *d = piece_copy(info, len, sent.piece[i], &pl);
        mfetch_data(mf, P(0), sent.piece[i], (uint32_t)len, d, pl);
    }
    mfetch_free(mf);
    worker_free(w); /* runs the job's done: nothing to call */
    assert_int_equal(res.calls, 0);
    ev_loop_destroy(loop);
    free(info);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_bounded),
        cmocka_unit_test(test_assemble_and_check),
        cmocka_unit_test(test_free_during_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
