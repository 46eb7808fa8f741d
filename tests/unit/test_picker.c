/* Unit tests for daemon/picker: sizes and parameters, rarest first on
 * crafted availability, random tie-breaks among the rarest, random first
 * pieces, partial pieces first, priorities (per piece and from files),
 * sequential mode, picking among a given set (allowed fast), whole
 * pieces for fast peers, strict end-game with
 * cancels, hash failure, peers leaving, choking and rejecting,
 * availability bookkeeping, pipeline sizing, a random-operation loop that
 * checks every invariant, and a 100k-piece run as a speed sanity check. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "daemon/picker.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define BS PICKER_BLOCK_SIZE

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static struct picker *
mk(uint32_t n, uint32_t plen, uint32_t last, bool random_start, uint64_t seed)
{
    struct picker *p;
    struct picker_params pp = {.n_pieces = n,
                               .piece_length = plen,
                               .last_piece_length = last,
                               .no_initial_random = !random_start,
                               .seed = seed};
    assert_int_equal(picker_new(&p, &pp), 0);
    return p;
}

/* A bitfield for n pieces with the pieces in list[] (terminated by -1). */
static uint8_t *
bits_of(uint32_t n, const int *list)
{
    uint8_t *b = calloc((n + 7) / 8, 1);
    assert_non_null(b);
    for (; *list >= 0; list++)
        b[*list >> 3] |= (uint8_t)(0x80 >> (*list & 7));
    return b;
}

/* A peer with the given pieces. */
static int
peer_with(struct picker *p, uint32_t tag, const int *list)
{
    int h = picker_peer_add(p, tag);
    assert_true(h >= 0);
    uint8_t *b = bits_of(picker_n_pieces(p), list);
    picker_peer_bitfield(p, h, b);
    free(b);
    return h;
}

static int
seed_peer(struct picker *p, uint32_t tag)
{
    int h = picker_peer_add(p, tag);
    assert_true(h >= 0);
    picker_peer_have_all(p, h);
    return h;
}

/* Deliver (written) every block of out[0..n) from peer; hash-pass pieces
 * that complete.  Returns pieces completed. */
static int
deliver(struct picker *p, int peer, const struct picker_block *out, int n)
{
    int done = 0;
    for (int i = 0; i < n; i++) {
        int cancel[PICKER_MAX_DUPS];
        size_t nc = 99;
        int r = picker_block_received(p, peer, out[i].piece, out[i].begin,
                                      PICKER_WRITTEN, cancel, &nc);
        if (r == -EALREADY || r == -ENOENT)
            continue;
        assert_true(r >= 0);
        assert_true(nc <= PICKER_MAX_DUPS);
        if (r == PICKER_PIECE_COMPLETE) {
            assert_int_equal(picker_hash_passed(p, out[i].piece), 0);
            done++;
        }
    }
    return done;
}

/* ------------------------------------------------------------------ */

static void
test_params(void **state)
{
    (void)state;
    struct picker *p;
    static const struct picker_params bad[] = {
        {.n_pieces = 0, .piece_length = BS},
        {.n_pieces = PICKER_PIECES_MAX + 1, .piece_length = BS},
        {.n_pieces = 1, .piece_length = 0},
        {.n_pieces = 1, .piece_length = PICKER_PIECE_LENGTH_MAX + 1},
        {.n_pieces = 2, .piece_length = BS, .last_piece_length = BS + 1},
        {.n_pieces = 2, .piece_length = BS, .block_size = 512},
        {.n_pieces = 2, .piece_length = BS, .block_size = 1u << 18},
        {.n_pieces = 2, .piece_length = BS, .endgame_dups = 1},
        {.n_pieces = 2,
         .piece_length = BS,
         .endgame_dups = PICKER_MAX_DUPS + 1},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_int_equal(picker_new(&p, &bad[i]), -EINVAL);
    assert_int_equal(picker_new(&p, NULL), -EINVAL);
    picker_free(NULL);

    /* 3 pieces of 40000 bytes, the last 20000: blocks 16384 16384 7232. */
    p = mk(3, 40000, 20000, false, 1);
    assert_int_equal(picker_n_pieces(p), 3);
    assert_int_equal(picker_piece_size(p, 0), 40000);
    assert_int_equal(picker_piece_size(p, 2), 20000);
    assert_int_equal(picker_piece_size(p, 3), 0);
    assert_int_equal(picker_piece_blocks(p, 0), 3);
    assert_int_equal(picker_piece_blocks(p, 2), 2);
    int s = seed_peer(p, 1);
    struct picker_block out[16];
    int n = picker_pick(p, s, out, ARRAY_SIZE(out));
    assert_int_equal(n, 8);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        assert_true(out[i].begin % BS == 0);
        assert_true(out[i].length > 0 && out[i].length <= BS);
        total += out[i].length;
        if (out[i].piece == 0 && out[i].begin == 2 * BS)
            assert_int_equal(out[i].length, 40000 - 2 * BS);
        if (out[i].piece == 2 && out[i].begin == BS)
            assert_int_equal(out[i].length, 20000 - BS);
    }
    assert_int_equal(total, 100000);
    assert_true(picker_check(p));
    /* Bad offsets. */
    int cancel[PICKER_MAX_DUPS];
    size_t nc;
    assert_int_equal(picker_block_received(p, s, 0, 1, 0, cancel, &nc),
                     -EINVAL);
    assert_int_equal(picker_block_received(p, s, 2, 2 * BS, 0, cancel, &nc),
                     -EINVAL);
    assert_int_equal(picker_block_received(p, s, 3, 0, 0, cancel, &nc),
                     -EINVAL);
    assert_int_equal(picker_block_received(p, 77, 0, 0, 0, cancel, &nc),
                     -EINVAL);
    assert_int_equal(picker_peer_have(p, s, 3), -EINVAL);
    assert_int_equal(picker_peer_have(p, 99, 0), -EINVAL);
    picker_free(p);

    /* The have bitfield and priorities given at creation. */
    static const uint8_t prio[4] = {0, 7, 9, 1};
    uint8_t have = 0x80; /* piece 0 */
    struct picker_params pp = {
        .n_pieces = 4, .piece_length = BS, .have = &have, .priority = prio};
    assert_int_equal(picker_new(&p, &pp), 0);
    assert_true(picker_have(p, 0));
    assert_false(picker_have(p, 1));
    assert_int_equal(picker_n_have(p), 1);
    assert_int_equal(picker_piece_priority(p, 2), PICKER_PRIO_MAX);
    assert_int_equal(picker_piece_priority(p, 9), 0);
    assert_true(picker_check(p));
    picker_free(p);
}

/* Availability of piece i is avail[i]: peer k has piece i when
 * k < avail[i].  A seed picks one block at a time (pieces are one block):
 * the pieces must come in order of availability. */
static void
test_rarest_first(void **state)
{
    (void)state;
    static const int avail[] = {3, 5, 1, 4, 2, 6, 1, 3, 2, 5, 4, 6};
    const uint32_t n = ARRAY_SIZE(avail);
    for (uint64_t seed = 0; seed < 20; seed++) {
        struct picker *p = mk(n, BS, 0, false, seed);
        for (int k = 0; k < 6; k++) {
            int list[ARRAY_SIZE(avail) + 1], m = 0;
            for (uint32_t i = 0; i < n; i++)
                if (k < avail[i])
                    list[m++] = (int)i;
            list[m] = -1;
            peer_with(p, (uint32_t)k, list);
        }
        for (uint32_t i = 0; i < n; i++)
            assert_int_equal(picker_availability(p, i), avail[i]);
        int s = seed_peer(p, 100);
        for (uint32_t i = 0; i < n; i++)
            assert_int_equal(picker_availability(p, i), avail[i] + 1);
        int last = 0;
        bool seen[ARRAY_SIZE(avail)] = {0};
        for (uint32_t k = 0; k < n; k++) {
            struct picker_block b;
            assert_int_equal(picker_pick(p, s, &b, 1), 1);
            assert_false(seen[b.piece]);
            seen[b.piece] = true;
            assert_true(avail[b.piece] >= last);
            last = avail[b.piece];
        }
        struct picker_block b;
        assert_int_equal(picker_pick(p, s, &b, 1), 0);
        assert_true(picker_check(p));
        picker_free(p);
    }

    /* A non-seed peer gets the rarest of the pieces it has. */
    struct picker *p = mk(6, BS, 0, false, 3);
    peer_with(p, 1, (const int[]){0, 1, 2, 3, 4, -1});
    peer_with(p, 2, (const int[]){0, 1, 2, 3, -1});
    peer_with(p, 3, (const int[]){0, 1, -1});
    int h = peer_with(p, 4, (const int[]){0, 2, 5, -1});
    struct picker_block b[8];
    /* Availability: 0:4 1:3 2:3 3:2 4:1 5:1.  Peer 4 has 0, 2, 5. */
    assert_int_equal(picker_pick(p, h, b, 1), 1);
    assert_int_equal(b[0].piece, 5);
    assert_int_equal(picker_pick(p, h, b, 1), 1);
    assert_int_equal(b[0].piece, 2);
    assert_int_equal(picker_pick(p, h, b, 8), 1);
    assert_int_equal(b[0].piece, 0);
    assert_int_equal(picker_pick(p, h, b, 8), 0);
    picker_free(p);
}

/* Equal rarity: the choice varies with the seed but stays among the
 * rarest; the same seed gives the same choice. */
static void
test_random_ties(void **state)
{
    (void)state;
    const uint32_t n = 100;
    bool chosen[100] = {0};
    unsigned distinct = 0;
    for (uint64_t seed = 0; seed < 40; seed++) {
        uint32_t first[2];
        for (int rep = 0; rep < 2; rep++) {
            struct picker *p = mk(n, BS, 0, false, seed);
            /* Pieces 0..59 have availability 1, 60..99 have 2. */
            int all[101], hi[41];
            for (int i = 0; i < 100; i++)
                all[i] = i;
            all[100] = -1;
            for (int i = 0; i < 40; i++)
                hi[i] = 60 + i;
            hi[40] = -1;
            peer_with(p, 1, all);
            peer_with(p, 2, hi);
            int s = seed_peer(p, 3);
            struct picker_block b;
            assert_int_equal(picker_pick(p, s, &b, 1), 1);
            assert_true(b.piece < 60);
            first[rep] = b.piece;
            picker_free(p);
        }
        assert_int_equal(first[0], first[1]);
        if (!chosen[first[0]])
            distinct++;
        chosen[first[0]] = true;
    }
    assert_true(distinct >= 15);
}

static void
test_initial_random(void **state)
{
    (void)state;
    const uint32_t n = 64;
    unsigned not_rarest = 0;
    for (uint64_t seed = 0; seed < 30; seed++) {
        struct picker *p = mk(n, BS, 0, true, seed);
        /* Piece 0 is the rarest by far. */
        int most[64];
        for (int i = 0; i < 63; i++)
            most[i] = i + 1;
        most[63] = -1;
        for (uint32_t k = 0; k < 5; k++)
            peer_with(p, k, most);
        int s = seed_peer(p, 9);
        /* The first four pieces are random. */
        for (int k = 0; k < 4; k++) {
            struct picker_block b;
            assert_int_equal(picker_pick(p, s, &b, 1), 1);
            not_rarest += b.piece != 0;
            assert_int_equal(deliver(p, s, &b, 1), 1);
        }
        /* With four pieces, rarest first: piece 0, unless already had. */
        struct picker_block b;
        assert_int_equal(picker_pick(p, s, &b, 1), 1);
        if (!picker_have(p, 0))
            assert_int_equal(b.piece, 0);
        else
            assert_int_equal(picker_availability(p, b.piece), 6);
        assert_true(picker_check(p));
        picker_free(p);
    }
    /* Rarest first would always pick piece 0 first. */
    assert_true(not_rarest > 100);
}

static void
test_partial_first(void **state)
{
    (void)state;
    /* 6 pieces of 4 blocks. */
    struct picker *p = mk(6, 4 * BS, 0, false, 5);
    int a = seed_peer(p, 1);
    int b = seed_peer(p, 2);
    struct picker_block out[8];
    assert_int_equal(picker_pick(p, a, out, 2), 2);
    uint32_t x = out[0].piece;
    assert_int_equal(out[1].piece, x);
    assert_int_equal(out[0].begin, 0);
    assert_int_equal(out[1].begin, BS);
    /* b finishes x first, then starts one more piece. */
    assert_int_equal(picker_pick(p, b, out, 3), 3);
    assert_int_equal(out[0].piece, x);
    assert_int_equal(out[0].begin, 2 * BS);
    assert_int_equal(out[1].piece, x);
    assert_int_equal(out[1].begin, 3 * BS);
    uint32_t y = out[2].piece;
    assert_int_not_equal(y, x);
    /* a continues y rather than starting another. */
    assert_int_equal(picker_pick(p, a, out, 1), 1);
    assert_int_equal(out[0].piece, y);
    assert_int_equal(out[0].begin, BS);
    assert_int_equal(picker_block_requesters(p, x, 0), 1);
    assert_true(picker_check(p));
    picker_free(p);
}

/* BEP 6 allowed fast: picking only among a given set. */
static void
test_pick_from(void **state)
{
    (void)state;
    /* 8 pieces of 2 blocks; the peer lacks 6; we have 3 (passed). */
    struct picker *p = mk(8, 2 * BS, 0, false, 9);
    static const int has[] = {0, 1, 2, 3, 4, 5, 7, -1};
    int a = peer_with(p, 1, has);
    int b = seed_peer(p, 2);
    struct picker_block out[16];
    /* Get piece 3 and make it verified. */
    static const uint32_t three[] = {3};
    assert_int_equal(picker_pick_from(p, b, three, 1, out, 16), 2);
    assert_int_equal(deliver(p, b, out, 2), 1);
    assert_true(picker_have(p, 3));
    /* b starts piece 5 (one block): partial. */
    static const uint32_t five[] = {5};
    assert_int_equal(picker_pick_from(p, b, five, 1, out, 1), 1);
    assert_int_equal(out[0].piece, 5);
    picker_set_piece_priority(p, 1, 0);
    /* Allowed: 6 (a lacks it), 3 (had), 1 (not wanted), 99 (out of
     * range), 7, 5: the partial 5 first, then 7. */
    static const uint32_t set[] = {6, 3, 1, 99, 7, 5};
    int n = picker_pick_from(p, a, set, ARRAY_SIZE(set), out, 16);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].piece, 5);
    assert_int_equal(out[0].begin, BS);
    assert_int_equal(out[1].piece, 7);
    assert_int_equal(out[2].piece, 7);
    /* Nothing left in the set. */
    assert_int_equal(picker_pick_from(p, a, set, ARRAY_SIZE(set), out, 16),
                     0);
    assert_int_equal(picker_pick_from(p, a, NULL, 0, out, 16), 0);
    assert_true(picker_check(p));
    picker_free(p);
}

static void
test_priorities(void **state)
{
    (void)state;
    struct picker *p = mk(8, BS, 0, false, 11);
    int s = seed_peer(p, 1);
    /* Piece 6 is common but high priority; 0..3 skipped. */
    peer_with(p, 2, (const int[]){6, 7, -1});
    peer_with(p, 3, (const int[]){6, -1});
    for (uint32_t i = 0; i < 4; i++)
        picker_set_piece_priority(p, i, 0);
    picker_set_piece_priority(p, 6, 7);
    picker_set_piece_priority(p, 7, 200); /* clamped */
    assert_int_equal(picker_piece_priority(p, 7), PICKER_PRIO_MAX);
    picker_set_piece_priority(p, 7, 4);
    picker_set_piece_priority(p, 99, 4); /* ignored */
    assert_true(picker_check(p));
    struct picker_block b[8];
    assert_int_equal(picker_pick(p, s, b, 1), 1);
    assert_int_equal(b[0].piece, 6);
    assert_int_equal(picker_pick(p, s, b, 8), 3);
    for (int i = 0; i < 3; i++)
        assert_true(b[i].piece >= 4);
    assert_int_equal(picker_pick(p, s, b, 8), 0);
    picker_free(p);

    /* Interest follows priorities and completion. */
    p = mk(4, BS, 0, false, 1);
    int h = peer_with(p, 1, (const int[]){1, 2, -1});
    assert_true(picker_peer_interesting(p, h));
    picker_set_piece_priority(p, 1, 0);
    assert_true(picker_peer_interesting(p, h));
    picker_set_piece_priority(p, 2, 0);
    assert_false(picker_peer_interesting(p, h));
    assert_int_equal(picker_pick(p, h, b, 8), 0);
    picker_set_piece_priority(p, 2, 1);
    assert_true(picker_peer_interesting(p, h));
    assert_int_equal(picker_pick(p, h, b, 8), 1);
    assert_int_equal(deliver(p, h, b, 1), 1);
    assert_false(picker_peer_interesting(p, h));
    s = seed_peer(p, 2);
    assert_true(picker_peer_interesting(p, s));
    assert_true(picker_check(p));
    picker_free(p);
}

/* Files onto pieces: a piece takes the highest priority of the files it
 * overlaps; zero-length files overlap nothing. */
struct file_case {
    struct picker_file files[5];
    size_t n;
    uint8_t expect[5];
};

static const struct file_case file_cases[] = {
    /* Five pieces of 100 bytes (last 50): files 0-150, 150-150 (empty),
     * 150-350, 350-450. */
    {.files = {{0, 150, 1}, {150, 0, 7}, {150, 200, 0}, {350, 100, 5}},
     .n = 4,
     .expect = {1, 1, 0, 5, 5}},
    {.files = {{0, 150, 0}, {150, 200, 3}, {350, 100, 0}},
     .n = 3,
     .expect = {0, 3, 3, 3, 0}},
    /* Overlong and overflowing files are cut at the end. */
    {.files = {{420, UINT64_MAX, 2}, {5000, 10, 7}},
     .n = 2,
     .expect = {0, 0, 0, 0, 2}},
    /* Pieces no file covers get 0. */
    {.files = {{100, 100, 6}}, .n = 1, .expect = {0, 6, 0, 0, 0}},
    {.n = 0, .expect = {0, 0, 0, 0, 0}},
};

static void
test_file_priorities(void **state)
{
    (void)state;
    for (size_t c = 0; c < ARRAY_SIZE(file_cases); c++) {
        struct picker_params pp = {.n_pieces = 5,
                                   .piece_length = 100,
                                   .last_piece_length = 50,
                                   .block_size = 1024,
                                   .no_initial_random = true};
        struct picker *p;
        assert_int_equal(picker_new(&p, &pp), 0);
        int h = peer_with(p, 1, (const int[]){0, 1, 2, 3, -1});
        assert_int_equal(
            picker_set_file_priorities(p, file_cases[c].files, file_cases[c].n),
            0);
        for (uint32_t i = 0; i < 5; i++)
            assert_int_equal(picker_piece_priority(p, i),
                             file_cases[c].expect[i]);
        assert_true(picker_check(p));
        /* Picks only wanted pieces. */
        struct picker_block b[8];
        int n = picker_pick(p, h, b, 8);
        for (int i = 0; i < n; i++)
            assert_true(file_cases[c].expect[b[i].piece] > 0);
        assert_true(picker_check(p));
        picker_free(p);
    }
}

static void
test_sequential(void **state)
{
    (void)state;
    struct picker *p = mk(10, BS, 0, true, 2);
    /* Availability would say otherwise. */
    peer_with(p, 1, (const int[]){0, 1, 2, 3, -1});
    int h = peer_with(p, 2, (const int[]){0, 1, 2, 3, 5, 6, 7, 8, 9, -1});
    picker_set_piece_priority(p, 6, 0);
    picker_set_sequential(p, true);
    assert_int_equal(picker_hash_passed(p, 2), 0);
    struct picker_block b[16];
    /* 0 1 3 5 7 8 9: 2 had, 4 missing at the peer, 6 skipped. */
    static const uint32_t expect[] = {0, 1, 3, 5, 7, 8, 9};
    for (size_t i = 0; i < ARRAY_SIZE(expect); i++) {
        assert_int_equal(picker_pick(p, h, b, 1), 1);
        assert_int_equal(b[0].piece, expect[i]);
        if (i == 1) {
            /* Piece 0 fails its hash: back to the front. */
            struct picker_block b0 = {.piece = 0, .begin = 0, .length = BS};
            int cancel[PICKER_MAX_DUPS];
            size_t nc;
            assert_int_equal(
                picker_block_received(p, h, 0, 0, PICKER_WRITTEN, cancel, &nc),
                PICKER_PIECE_COMPLETE);
            uint32_t tags[4];
            assert_int_equal(picker_hash_failed(p, 0, tags, 4), 1);
            assert_int_equal(tags[0], 2);
            assert_int_equal(picker_pick(p, h, b, 1), 1);
            assert_int_equal(b[0].piece, 0);
            (void)b0;
        }
    }
    assert_int_equal(picker_pick(p, h, b, 1), 0);
    /* 4 arrives: picked next. */
    assert_int_equal(picker_peer_have(p, h, 4), 0);
    assert_int_equal(picker_pick(p, h, b, 16), 1);
    assert_int_equal(b[0].piece, 4);
    /* Several pieces in one call come in order. */
    picker_free(p);
    p = mk(20, 2 * BS, 0, false, 2);
    h = seed_peer(p, 1);
    picker_set_sequential(p, true);
    assert_int_equal(picker_pick(p, h, b, 16), 16);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(b[i].piece, (uint32_t)i / 2);
        assert_int_equal(b[i].begin, (uint32_t)(i % 2) * BS);
    }
    assert_true(picker_check(p));
    picker_free(p);
}

static void
test_fast_whole_pieces(void **state)
{
    (void)state;
    struct picker *p = mk(4, 4 * BS, 0, false, 8);
    int f = seed_peer(p, 1);
    int s = seed_peer(p, 2);
    picker_peer_set_fast(p, f, true);
    struct picker_block b[8];
    assert_int_equal(picker_pick(p, f, b, 2), 2);
    uint32_t x = b[0].piece;
    /* The slow peer does not join x. */
    assert_int_equal(picker_pick(p, s, b, 2), 2);
    assert_int_not_equal(b[0].piece, x);
    uint32_t y = b[0].piece;
    /* The fast peer continues x, then starts a new piece of its own, not
     * the slow peer's y. */
    assert_int_equal(picker_pick(p, f, b, 4), 4);
    assert_int_equal(b[0].piece, x);
    assert_int_equal(b[1].piece, x);
    assert_int_not_equal(b[2].piece, y);
    assert_int_equal(b[2].piece, b[3].piece);
    uint32_t z = b[2].piece;
    /* The slow peer finishes y, takes the last fresh piece, and does not
     * join z (claimed, with free blocks: not end-game). */
    assert_int_equal(picker_pick(p, s, b, 8), 6);
    assert_int_equal(b[0].piece, y);
    assert_int_equal(picker_pick(p, s, b, 8), 0);
    assert_false(picker_endgame(p));
    /* No longer fast: its piece is open to others. */
    picker_peer_set_fast(p, f, false);
    assert_int_equal(picker_pick(p, s, b, 2), 2);
    assert_int_equal(b[0].piece, z);
    assert_true(picker_endgame(p));
    assert_true(picker_check(p));
    picker_free(p);

    /* With no fresh piece left, a fast peer helps with others' pieces. */
    p = mk(1, 4 * BS, 0, false, 8);
    f = seed_peer(p, 1);
    s = seed_peer(p, 2);
    picker_peer_set_fast(p, f, true);
    assert_int_equal(picker_pick(p, s, b, 1), 1);
    assert_int_equal(picker_pick(p, f, b, 3), 3);
    assert_int_equal(b[0].begin, BS);
    assert_true(picker_check(p));
    picker_free(p);

    /* A fast peer that leaves frees its claim. */
    p = mk(2, 4 * BS, 0, false, 8);
    f = seed_peer(p, 1);
    s = seed_peer(p, 2);
    picker_peer_set_fast(p, f, true);
    assert_int_equal(picker_pick(p, f, b, 1), 1);
    x = b[0].piece;
    assert_int_equal(picker_pick(p, s, b, 8), 4);
    assert_int_not_equal(b[0].piece, x);
    assert_int_equal(picker_pick(p, s, b, 8), 0);
    picker_peer_remove(p, f);
    assert_int_equal(picker_pick(p, s, b, 8), 4);
    assert_int_equal(b[0].piece, x);
    assert_true(picker_check(p));
    picker_free(p);
}

static void
test_endgame(void **state)
{
    (void)state;
    /* 2 pieces of 2 blocks, end-game duplicates up to 3. */
    struct picker_params pp = {.n_pieces = 2,
                               .piece_length = 2 * BS,
                               .no_initial_random = true,
                               .endgame_dups = 3,
                               .seed = 4};
    struct picker *p;
    assert_int_equal(picker_new(&p, &pp), 0);
    int a = seed_peer(p, 10);
    int b = seed_peer(p, 20);
    int c = seed_peer(p, 30);
    int d = seed_peer(p, 40);
    struct picker_block out[8];
    assert_false(picker_endgame(p));
    assert_int_equal(picker_pick(p, a, out, 3), 3);
    assert_false(picker_endgame(p));
    assert_int_equal(picker_pick(p, b, out, 1), 1); /* the last free one */
    assert_true(picker_endgame(p));
    /* Now b asks for the blocks a has, c for all four, d for what has
     * fewer than 3 requesters. */
    assert_int_equal(picker_pick(p, b, out, 8), 3);
    assert_int_equal(picker_pick(p, a, out, 8), 1);
    assert_int_equal(picker_pick(p, c, out, 8), 4);
    for (uint32_t pc = 0; pc < 2; pc++)
        for (uint32_t o = 0; o < 2 * BS; o += BS)
            assert_int_equal(picker_block_requesters(p, pc, o), 3);
    assert_int_equal(picker_pick(p, d, out, 8), 0);
    assert_int_equal(picker_pick(p, c, out, 8), 0);
    assert_true(picker_check(p));
    /* A block arrives from b: cancel a and c. */
    int cancel[PICKER_MAX_DUPS];
    size_t nc = 0;
    assert_int_equal(
        picker_block_received(p, b, 0, 0, PICKER_WRITTEN, cancel, &nc),
        PICKER_BLOCK_OK);
    assert_int_equal(nc, 2);
    assert_true((cancel[0] == a && cancel[1] == c) ||
                (cancel[0] == c && cancel[1] == a));
    /* a's copy still comes: a duplicate. */
    assert_int_equal(
        picker_block_received(p, a, 0, 0, PICKER_WRITTEN, cancel, &nc),
        -EALREADY);
    assert_int_equal(picker_block_requesters(p, 0, 0), 0);
    /* c rejects a block: 2 requesters left, d can join. */
    assert_int_equal(picker_peer_rejected(p, c, 1, BS), 0);
    assert_int_equal(picker_peer_rejected(p, c, 1, BS), -ENOENT);
    assert_int_equal(picker_pick(p, d, out, 8), 1);
    assert_int_equal(out[0].piece, 1);
    assert_int_equal(out[0].begin, BS);
    /* Everything else from a. */
    assert_int_equal(
        picker_block_received(p, a, 0, BS, PICKER_WRITTEN, cancel, &nc),
        PICKER_PIECE_COMPLETE);
    assert_int_equal(nc, 2);
    assert_int_equal(picker_hash_passed(p, 0), 0);
    assert_int_equal(picker_block_received(p, a, 0, BS, 0, cancel, &nc),
                     -ENOENT);
    assert_int_equal(
        picker_block_received(p, a, 1, 0, PICKER_WRITTEN, cancel, &nc),
        PICKER_BLOCK_OK);
    assert_int_equal(
        picker_block_received(p, d, 1, BS, PICKER_WRITTEN, cancel, &nc),
        PICKER_PIECE_COMPLETE);
    assert_int_equal(nc, 2); /* a and b */
    assert_int_equal(picker_hash_passed(p, 1), 0);
    assert_true(picker_complete(p));
    assert_false(picker_endgame(p));
    assert_int_equal(picker_pick(p, d, out, 8), 0);
    assert_false(picker_peer_interesting(p, d));
    assert_true(picker_check(p));
    picker_free(p);
}

static void
test_hash_failed(void **state)
{
    (void)state;
    struct picker *p = mk(2, 3 * BS, 0, false, 1);
    int a = seed_peer(p, 100);
    int b = seed_peer(p, 200);
    struct picker_block out[8];
    assert_int_equal(picker_pick(p, a, out, 2), 2);
    uint32_t x = out[0].piece;
    assert_int_equal(picker_pick(p, b, out, 1), 1);
    assert_int_equal(out[0].piece, x);
    int cancel[PICKER_MAX_DUPS];
    size_t nc;
    uint32_t tags[8];
    assert_int_equal(picker_hash_failed(p, x, tags, 8), -EBUSY);
    assert_int_equal(picker_hash_failed(p, 1 - x, tags, 8), -ENOENT);
    assert_int_equal(picker_hash_failed(p, 5, tags, 8), -EINVAL);
    assert_int_equal(picker_hash_passed(p, x), -EBUSY);
    assert_int_equal(
        picker_block_received(p, a, x, 0, PICKER_WRITTEN, cancel, &nc),
        PICKER_BLOCK_OK);
    /* Received, not yet written. */
    assert_int_equal(picker_block_received(p, b, x, 2 * BS, 0, cancel, &nc),
                     PICKER_BLOCK_OK);
    assert_int_equal(picker_block_written(p, x, 2 * BS), PICKER_BLOCK_OK);
    assert_int_equal(picker_block_written(p, x, 2 * BS), -ENOENT);
    assert_int_equal(
        picker_block_received(p, a, x, BS, PICKER_WRITTEN, cancel, &nc),
        PICKER_PIECE_COMPLETE);
    assert_int_equal(picker_hash_failed(p, x, tags, 8), 2);
    assert_true((tags[0] == 100 && tags[1] == 200) ||
                (tags[0] == 200 && tags[1] == 100));
    assert_false(picker_have(p, x));
    assert_int_equal(picker_block_requesters(p, x, 0), 0);
    assert_true(picker_check(p));
    /* All three blocks can be picked again; as a partial piece?  No: it
     * is idle again, so rarest first picks among both pieces. */
    assert_int_equal(picker_pick(p, a, out, 8), 6);
    /* Only one tag slot: one tag. */
    for (int i = 0; i < 6; i++) {
        int r =
            picker_block_received(p, i % 2 ? a : b, out[i].piece, out[i].begin,
                                  PICKER_WRITTEN, cancel, &nc);
        assert_true(r >= 0);
    }
    assert_int_equal(picker_hash_failed(p, 0, tags, 1), 1);
    assert_int_equal(picker_hash_passed(p, 1), 0);
    assert_int_equal(picker_hash_passed(p, 1), -EALREADY);
    assert_int_equal(picker_hash_passed(p, 2), -EINVAL);
    assert_true(picker_check(p));
    picker_free(p);
}

static void
test_written_and_lost(void **state)
{
    (void)state;
    struct picker *p = mk(1, 2 * BS, 0, false, 1);
    int a = seed_peer(p, 1);
    struct picker_block out[2];
    assert_int_equal(picker_pick(p, a, out, 2), 2);
    int cancel[PICKER_MAX_DUPS];
    size_t nc;
    assert_int_equal(picker_block_received(p, a, 0, 0, 0, cancel, &nc), 0);
    assert_int_equal(picker_block_received(p, a, 0, BS, 0, cancel, &nc), 0);
    assert_int_equal(picker_block_received(p, a, 0, BS, 0, cancel, &nc),
                     -EALREADY);
    assert_int_equal(picker_block_written(p, 0, 0), PICKER_BLOCK_OK);
    /* The write of the second fails: picked again. */
    assert_int_equal(picker_block_lost(p, 0, BS), 0);
    assert_int_equal(picker_block_lost(p, 0, BS), -ENOENT);
    assert_int_equal(picker_block_written(p, 0, BS), -ENOENT);
    assert_true(picker_check(p));
    assert_int_equal(picker_pick(p, a, out, 2), 1);
    assert_int_equal(out[0].begin, BS);
    assert_int_equal(
        picker_block_received(p, a, 0, BS, PICKER_WRITTEN, cancel, &nc),
        PICKER_PIECE_COMPLETE);
    /* Losing every block: the piece is idle again. */
    assert_int_equal(picker_block_lost(p, 0, 0), 0);
    assert_int_equal(picker_block_lost(p, 0, BS), 0);
    assert_int_equal(picker_block_lost(p, 0, BS), -ENOENT);
    assert_int_equal(picker_block_written(p, 1, 0), -EINVAL);
    assert_true(picker_check(p));
    assert_int_equal(picker_pick(p, a, out, 2), 2);
    picker_free(p);
}

static void
test_peer_leaves_and_chokes(void **state)
{
    (void)state;
    /* Piece 3 nobody has: never end-game here. */
    struct picker *p = mk(4, 4 * BS, 0, false, 6);
    int a = peer_with(p, 1, (const int[]){0, 1, 2, -1});
    int b = peer_with(p, 2, (const int[]){0, 1, 2, -1});
    assert_int_equal(picker_availability(p, 1), 2);
    struct picker_block out[16];
    assert_int_equal(picker_pick(p, a, out, 6), 6);
    uint32_t x = out[0].piece, y = out[4].piece;
    int cancel[PICKER_MAX_DUPS];
    size_t nc;
    /* One block of x arrives, so x stays in progress. */
    assert_int_equal(
        picker_block_received(p, a, x, 0, PICKER_WRITTEN, cancel, &nc), 0);
    picker_peer_remove(p, a);
    picker_peer_remove(p, a); /* ignored */
    assert_int_equal(picker_availability(p, 1), 1);
    assert_int_equal(picker_block_requesters(p, x, BS), 0);
    assert_true(picker_check(p));
    /* b gets x's three missing blocks first, then the rest. */
    assert_int_equal(picker_pick(p, b, out, 16), 11);
    assert_int_equal(out[0].piece, x);
    assert_int_equal(out[0].begin, BS);
    assert_int_equal(out[2].begin, 3 * BS);
    (void)y;
    /* b chokes us: everything back. */
    picker_peer_choked(p, b);
    assert_true(picker_check(p));
    assert_int_equal(picker_pick(p, b, out, 16), 11);
    /* Timeout of one request: another peer may take it. */
    int c = peer_with(p, 3, (const int[]){0, 1, 2, -1});
    assert_int_equal(picker_pick(p, c, out, 16), 0);
    assert_int_equal(picker_request_timeout(p, b, x, 2 * BS), 0);
    assert_int_equal(picker_request_timeout(p, b, x, 2 * BS), -ENOENT);
    assert_int_equal(picker_request_timeout(p, b, x, 3), -EINVAL);
    assert_int_equal(picker_request_timeout(p, 55, x, 0), -EINVAL);
    assert_int_equal(picker_pick(p, c, out, 16), 1);
    assert_int_equal(out[0].piece, x);
    assert_int_equal(out[0].begin, 2 * BS);
    /* The late block from b is still taken. */
    assert_int_equal(
        picker_block_received(p, b, x, 2 * BS, PICKER_WRITTEN, cancel, &nc), 0);
    assert_int_equal(nc, 1);
    assert_int_equal(cancel[0], c);
    /* Handles are reused: c took a's. */
    assert_int_equal(c, a);
    int d = picker_peer_add(p, 4);
    assert_false(picker_peer_interesting(p, d));
    assert_true(picker_check(p));
    picker_free(p);
}

static void
test_availability(void **state)
{
    (void)state;
    struct picker *p = mk(10, BS, 5000, false, 9);
    int a = peer_with(p, 1, (const int[]){0, 9, -1});
    int b = picker_peer_add(p, 2);
    assert_false(picker_peer_interesting(p, b));
    assert_int_equal(picker_peer_have(p, b, 9), 0);
    assert_int_equal(picker_peer_have(p, b, 9), 0); /* twice: once */
    assert_int_equal(picker_availability(p, 9), 2);
    assert_true(picker_peer_has(p, b, 9));
    assert_false(picker_peer_has(p, b, 0));
    assert_false(picker_peer_has(p, b, 10));
    assert_true(picker_peer_interesting(p, b));
    /* HAVE_ALL: a seed. */
    int c = picker_peer_add(p, 3);
    picker_peer_have_all(p, c);
    assert_int_equal(picker_availability(p, 0), 2);
    assert_int_equal(picker_availability(p, 5), 1);
    assert_true(picker_peer_has(p, c, 5));
    assert_true(picker_check(p));
    /* A full bitfield is a seed too; spare bits are ignored. */
    uint8_t full[2] = {0xff, 0xff};
    picker_peer_bitfield(p, a, full);
    assert_int_equal(picker_availability(p, 5), 2);
    assert_true(picker_check(p));
    /* HAVE_NONE. */
    picker_peer_bitfield(p, a, NULL);
    assert_int_equal(picker_availability(p, 5), 1);
    assert_false(picker_peer_interesting(p, a));
    /* HAVE by HAVE to a seed. */
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(picker_peer_have(p, b, i), 0);
        assert_true(picker_check(p));
    }
    assert_int_equal(picker_availability(p, 3), 2);
    assert_int_equal(picker_availability(p, 9), 2);
    picker_peer_remove(p, c);
    picker_peer_remove(p, b);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(picker_availability(p, i), 0);
    assert_int_equal(picker_availability(p, 10), 0);
    assert_true(picker_check(p));
    /* Many peers: the capacity grows. */
    int h[200];
    for (int i = 0; i < 200; i++)
        h[i] = peer_with(p, 100 + (uint32_t)i, (const int[]){4, 7, -1});
    assert_int_equal(picker_availability(p, 4), 200);
    assert_true(picker_check(p));
    struct picker_block out[4];
    assert_int_equal(picker_pick(p, h[5], out, 4), 2);
    for (int i = 0; i < 200; i += 2)
        picker_peer_remove(p, h[i]);
    assert_int_equal(picker_availability(p, 7), 100);
    assert_true(picker_check(p));
    picker_free(p);
}

static void
test_pipeline_depth(void **state)
{
    (void)state;
    static const struct {
        uint64_t rate;
        unsigned reqq, rtt, expect;
    } cases[] = {
        {0, 0, 0, PICKER_PIPELINE_MIN},
        {10000, 0, 50, PICKER_PIPELINE_MIN},
        /* 1 MB/s for 2.1 s: 2.1 MB = 129 blocks. */
        {1000000, 0, 100, 129},
        {1000000, 500, 0, 123},
        {1000000, 64, 0, 64},
        /* 1 GB/s on loopback: all the peer allows. */
        {1000000000, 0, 0, PICKER_REQQ_DEFAULT},
        {1000000000, 2000, 0, 2000},
        {UINT64_MAX, 0, UINT32_MAX, PICKER_REQQ_DEFAULT},
        /* A peer allowing fewer than the minimum wins. */
        {1000000, 2, 0, 2},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
        assert_int_equal(
            picker_pipeline_depth(cases[i].rate, cases[i].reqq, cases[i].rtt),
            cases[i].expect);
}

/* Random operations, every invariant checked after each. */
static void
test_random_ops(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        uint64_t r = seed * 1000003;
        uint32_t n = 1 + (uint32_t)(rng_next(&r) % 40);
        uint32_t plen = BS * (1 + (uint32_t)(rng_next(&r) % 4));
        uint32_t last = 1 + (uint32_t)(rng_next(&r) % plen);
        struct picker_params pp = {.n_pieces = n,
                                   .piece_length = plen,
                                   .last_piece_length = last,
                                   .endgame_dups = 2 + seed % 3,
                                   .seed = seed};
        struct picker *p;
        assert_int_equal(picker_new(&p, &pp), 0);
        int peers[24];
        int np = 0;
        uint32_t tag = 1;
        struct picker_block out[64];
        int nout = 0, out_peer = -1;
        for (int step = 0; step < 3000 && !picker_complete(p); step++) {
            unsigned op = (unsigned)(rng_next(&r) % 16);
            int who = np ? peers[rng_next(&r) % (uint64_t)np] : -1;
            uint32_t pc = (uint32_t)(rng_next(&r) % n);
            if (op == 0 && np < 24) {
                peers[np++] = picker_peer_add(p, tag++);
            } else if (op == 1 && np > 0) {
                int k = (int)(rng_next(&r) % (uint64_t)np);
                picker_peer_remove(p, peers[k]);
                if (out_peer == peers[k])
                    nout = 0;
                peers[k] = peers[--np];
            } else if (op == 2 && who >= 0) {
                uint8_t bits[8];
                for (int i = 0; i < 8; i++)
                    bits[i] = (uint8_t)rng_next(&r);
                picker_peer_bitfield(p, who, bits);
            } else if (op == 3 && who >= 0) {
                if (rng_next(&r) % 4 == 0)
                    picker_peer_have_all(p, who);
                else
                    picker_peer_have(p, who, pc);
            } else if (op == 4 && who >= 0) {
                picker_peer_set_fast(p, who, rng_next(&r) % 2);
            } else if (op == 5 && who >= 0) {
                picker_peer_choked(p, who);
            } else if (op == 6) {
                picker_set_piece_priority(p, pc, (uint8_t)(rng_next(&r) % 9));
            } else if (op == 7) {
                picker_set_sequential(p, rng_next(&r) % 2);
            } else if (op <= 11 && who >= 0) {
                int k = picker_pick(p, who, out,
                                    1 + rng_next(&r) % ARRAY_SIZE(out));
                assert_true(k >= 0);
                for (int i = 0; i < k; i++)
                    assert_true(picker_peer_has(p, who, out[i].piece));
                nout = k;
                out_peer = who;
            } else if (op <= 14 && nout > 0) {
                /* Some of the last picked blocks arrive, or are
                 * rejected. */
                int i = (int)(rng_next(&r) % (uint64_t)nout);
                struct picker_block bl = out[i];
                out[i] = out[--nout];
                if (op == 14) {
                    (void)picker_peer_rejected(p, out_peer, bl.piece, bl.begin);
                    continue;
                }
                int cancel[PICKER_MAX_DUPS];
                size_t nc;
                int rr = picker_block_received(p, out_peer, bl.piece, bl.begin,
                                               PICKER_WRITTEN, cancel, &nc);
                if (rr == PICKER_PIECE_COMPLETE) {
                    if (rng_next(&r) % 5 == 0) {
                        uint32_t tags[8];
                        assert_true(picker_hash_failed(p, bl.piece, tags, 8) >=
                                    1);
                    } else {
                        assert_int_equal(picker_hash_passed(p, bl.piece), 0);
                    }
                }
            } else if (op == 15) {
                uint32_t nf = 1 + (uint32_t)(rng_next(&r) % 4);
                struct picker_file f[4];
                uint64_t total = (uint64_t)plen * (n - 1) + last, off = 0;
                for (uint32_t i = 0; i < nf; i++) {
                    uint64_t len = rng_next(&r) % (total / nf + 1);
                    f[i] = (struct picker_file){off, len,
                                                (uint8_t)(rng_next(&r) % 8)};
                    off += len;
                }
                assert_int_equal(picker_set_file_priorities(p, f, nf), 0);
            }
            if (!picker_check(p))
                fail_msg("seed %llu step %d op %u: inconsistent",
                         (unsigned long long)seed, step, op);
        }
        picker_free(p);
    }
}

/* A full download with 40 peers: every wanted piece arrives, end-game
 * included, and the state stays consistent. */
static void
test_download_to_completion(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 4; seed++) {
        uint64_t r = seed;
        const uint32_t n = 300;
        struct picker *p = mk(n, 3 * BS, 1000, true, seed);
        int peers[40];
        for (int i = 0; i < 40; i++) {
            peers[i] = picker_peer_add(p, (uint32_t)i);
            if (i % 10 == 0) {
                picker_peer_have_all(p, peers[i]);
                continue;
            }
            uint8_t bits[(300 + 7) / 8];
            for (size_t k = 0; k < sizeof(bits); k++)
                bits[k] = (uint8_t)rng_next(&r);
            picker_peer_bitfield(p, peers[i], bits);
            picker_peer_set_fast(p, peers[i], i % 7 == 0);
        }
        int steps = 0;
        while (!picker_complete(p)) {
            assert_true(++steps < 100000);
            int who = peers[rng_next(&r) % 40];
            struct picker_block out[32];
            int k = picker_pick(p, who, out, 1 + rng_next(&r) % 32);
            assert_true(k >= 0);
            deliver(p, who, out, k);
        }
        assert_int_equal(picker_n_have(p), n);
        assert_true(picker_check(p));
        picker_free(p);
    }
}

/* 100k pieces, 50 peers: 10^5 picks must be cheap.  A sanity bound, not a
 * benchmark: 10 s even under ASan. */
static void
test_large_torrent(void **state)
{
    (void)state;
    const uint32_t n = 100000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct picker *p = mk(n, 4 * BS, 0, true, 77);
    uint64_t r = 99;
    int peers[50];
    uint8_t *bits = malloc((n + 7) / 8);
    assert_non_null(bits);
    for (int i = 0; i < 50; i++) {
        for (uint32_t k = 0; k < (n + 7) / 8; k++)
            bits[k] = (uint8_t)(rng_next(&r) & rng_next(&r));
        peers[i] = picker_peer_add(p, (uint32_t)i);
        assert_true(peers[i] >= 0);
        picker_peer_bitfield(p, peers[i], bits);
    }
    free(bits);
    uint64_t blocks = 0;
    for (int i = 0; i < 100000; i++) {
        int who = peers[rng_next(&r) % 50];
        struct picker_block out[8];
        int k = picker_pick(p, who, out, 8);
        assert_true(k >= 0);
        blocks += (uint64_t)k;
        deliver(p, who, out, k);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("100k pieces: 1e5 picks, %llu blocks, %u pieces in "
                  "%.2f s\n",
                  (unsigned long long)blocks, picker_n_have(p), s);
    assert_true(blocks > 100000);
    assert_true(s < 10.0);
    picker_free(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_rarest_first),
        cmocka_unit_test(test_random_ties),
        cmocka_unit_test(test_initial_random),
        cmocka_unit_test(test_partial_first),
        cmocka_unit_test(test_pick_from),
        cmocka_unit_test(test_priorities),
        cmocka_unit_test(test_file_priorities),
        cmocka_unit_test(test_sequential),
        cmocka_unit_test(test_fast_whole_pieces),
        cmocka_unit_test(test_endgame),
        cmocka_unit_test(test_hash_failed),
        cmocka_unit_test(test_written_and_lost),
        cmocka_unit_test(test_peer_leaves_and_chokes),
        cmocka_unit_test(test_availability),
        cmocka_unit_test(test_pipeline_depth),
        cmocka_unit_test(test_random_ops),
        cmocka_unit_test(test_download_to_completion),
        cmocka_unit_test(test_large_torrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
