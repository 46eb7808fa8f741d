/* Unit tests for daemon/choker: tit-for-tat picks the fastest, rechoke
 * every 10 s, optimistic rotation every 30 s (newcomers favoured),
 * snubbed peers, seeding on upload rates, interest changes, removal,
 * short output arrays. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/choker.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAXP 64

struct fix {
    struct choker *c;
    int h[MAXP];
    struct choker_peer_info info[MAXP];
    size_t n;
};

static void
fix_init(struct fix *f, const struct choker_params *params)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(choker_new(&f->c, params), 0);
}

/* Add n interested peers with down_rate = rates[i] (at time t). */
static void
fix_add(struct fix *f, const uint64_t *rates, size_t n, int64_t t)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = f->n++;
        f->h[k] = choker_peer_add(f->c, 1000 + (uint32_t)k, t);
        assert_true(f->h[k] >= 0);
        f->info[k] = (struct choker_peer_info){.interested = true,
                                               .down_rate = rates[i]};
        choker_peer_update(f->c, f->h[k], &f->info[k], t);
    }
}

static void
fix_update(struct fix *f, size_t k, int64_t t)
{
    choker_peer_update(f->c, f->h[k], &f->info[k], t);
}

/* Run and check the decisions are consistent with choker_peer_unchoked. */
static size_t
run(struct fix *f, int64_t t)
{
    struct choker_decision d[MAXP];
    size_t n = choker_run(f->c, t, d, ARRAY_SIZE(d));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(choker_peer_unchoked(f->c, d[i].peer), d[i].unchoke);
        assert_int_equal(d[i].tag, 1000 + (uint32_t)d[i].peer);
    }
    return n;
}

static size_t
count_unchoked(const struct fix *f)
{
    size_t n = 0;
    for (size_t k = 0; k < f->n; k++)
        n += choker_peer_unchoked(f->c, f->h[k]);
    return n;
}

/* The one unchoked peer not among `regular` (or -1). */
static int
optimistic_of(const struct fix *f, const bool *regular)
{
    int o = -1;
    for (size_t k = 0; k < f->n; k++)
        if (choker_peer_unchoked(f->c, f->h[k]) && !regular[k]) {
            assert_int_equal(o, -1);
            o = (int)k;
        }
    return o;
}

static void
test_tit_for_tat(void **state)
{
    (void)state;
    static const uint64_t rates[] = {500,  9000, 100,  7000, 0,
                                     8000, 300,  6000, 50,   10};
    struct fix f;
    fix_init(&f, &(struct choker_params){.seed = 1});
    fix_add(&f, rates, ARRAY_SIZE(rates), 0);
    assert_int_equal(choker_next_deadline(f.c, 0), 0);
    assert_int_equal(run(&f, 0), 5);
    /* The four fastest: peers 1, 5, 3, 7. */
    bool reg[MAXP] = {[1] = true, [5] = true, [3] = true, [7] = true};
    for (size_t k = 0; k < f.n; k++)
        if (reg[k])
            assert_true(choker_peer_unchoked(f.c, f.h[k]));
    assert_int_equal(count_unchoked(&f), 5);
    assert_true(optimistic_of(&f, reg) >= 0);
    assert_int_equal(choker_next_deadline(f.c, 0), CHOKER_RECHOKE_MS);
    choker_free(f.c);
}

static void
test_rechoke_every_10s(void **state)
{
    (void)state;
    static const uint64_t rates[] = {400, 300, 200, 100, 50, 40, 30, 20};
    struct fix f;
    fix_init(&f, &(struct choker_params){.seed = 7, .no_optimistic = true});
    fix_add(&f, rates, ARRAY_SIZE(rates), 0);
    run(&f, 0);
    for (size_t k = 0; k < 8; k++)
        assert_int_equal(choker_peer_unchoked(f.c, f.h[k]), k < 4);
    /* The slow ones speed up at 5 s: nothing moves before the rechoke. */
    for (size_t k = 4; k < 8; k++) {
        f.info[k].down_rate = 10000 + k;
        fix_update(&f, k, 5000);
    }
    assert_int_equal(run(&f, 5000), 0);
    assert_int_equal(run(&f, 9999), 0);
    assert_int_equal(choker_next_deadline(f.c, 9999), 10000);
    /* At 10 s the four that gave most now take the slots. */
    assert_int_equal(run(&f, 10000), 8);
    for (size_t k = 0; k < 8; k++)
        assert_int_equal(choker_peer_unchoked(f.c, f.h[k]), k >= 4);
    assert_int_equal(choker_next_deadline(f.c, 10000), 20000);
    /* Equal rates: the unchoked keep their slots (no flapping). */
    for (size_t k = 0; k < 8; k++) {
        f.info[k].down_rate = 0;
        fix_update(&f, k, 15000);
    }
    assert_int_equal(run(&f, 20000), 0);
    for (size_t k = 0; k < 8; k++)
        assert_int_equal(choker_peer_unchoked(f.c, f.h[k]), k >= 4);
    choker_free(f.c);
}

static void
test_optimistic_every_30s(void **state)
{
    (void)state;
    static const uint64_t rates[] = {900, 800, 700, 600, 5, 4, 3, 2, 1};
    struct fix f;
    fix_init(&f, &(struct choker_params){.seed = 3});
    fix_add(&f, rates, ARRAY_SIZE(rates), 0);
    bool reg[MAXP] = {[0] = true, [1] = true, [2] = true, [3] = true};
    run(&f, 0);
    int opt = optimistic_of(&f, reg);
    assert_true(opt >= 4);
    int64_t t = 0;
    int changes = 0;
    for (int round = 1; round <= 12; round++) {
        /* Rechokes at 10 and 20 s keep the optimistic peer. */
        for (int k = 1; k <= 2; k++) {
            t += CHOKER_RECHOKE_MS;
            run(&f, t);
            assert_int_equal(optimistic_of(&f, reg), opt);
            assert_int_equal(count_unchoked(&f), 5);
        }
        t += CHOKER_RECHOKE_MS;
        assert_int_equal(choker_next_deadline(f.c, t - 1), t);
        run(&f, t);
        int o = optimistic_of(&f, reg);
        assert_true(o >= 4);
        /* Always another peer when another can have it. */
        assert_int_not_equal(o, opt);
        changes++;
        opt = o;
    }
    assert_int_equal(changes, 12);

    /* The optimistic peer loses interest: replaced at the next run. */
    f.info[opt].interested = false;
    fix_update(&f, (size_t)opt, t + 1);
    run(&f, t + 1);
    assert_false(choker_peer_unchoked(f.c, f.h[opt]));
    int o = optimistic_of(&f, reg);
    assert_true(o >= 4 && o != opt);
    choker_free(f.c);
}

static void
test_newcomers_favoured(void **state)
{
    (void)state;
    /* One regular slot held by a fast peer; three old choked peers and
     * one newcomer: the newcomer has weight 3 of 6. */
    int newcomer_wins = 0;
    const int trials = 2000;
    for (int s = 0; s < trials; s++) {
        struct fix f;
        fix_init(&f, &(struct choker_params){.upload_slots = 1,
                                             .seed = (uint64_t)s * 31 + 5});
        static const uint64_t fast[] = {1000};
        static const uint64_t slow[] = {1, 1, 1};
        fix_add(&f, fast, 1, 0);
        fix_add(&f, slow, 3, 0);
        static const uint64_t nw[] = {1};
        fix_add(&f, nw, 1, 100000);
        run(&f, 100000);
        assert_true(choker_peer_unchoked(f.c, f.h[0]));
        assert_int_equal(count_unchoked(&f), 2);
        newcomer_wins += choker_peer_unchoked(f.c, f.h[4]);
        choker_free(f.c);
    }
    /* Expected 1000 of 2000; old peers alone would get 1/4 = 500. */
    assert_true(newcomer_wins > 880 && newcomer_wins < 1120);
}

static void
test_snubbed(void **state)
{
    (void)state;
    static const uint64_t rates[] = {100000, 500, 400, 300, 200, 100};
    struct fix f;
    fix_init(&f, &(struct choker_params){.seed = 9, .no_optimistic = true});
    fix_add(&f, rates, ARRAY_SIZE(rates), 0);
    /* Peer 0: we are interested, it unchoked us at 1 s, last block at
     * 2 s. */
    f.info[0].am_interested = true;
    f.info[0].last_block_ms = 2000;
    fix_update(&f, 0, 1000);
    assert_false(choker_peer_snubbed(f.c, f.h[0], 61999));
    assert_true(choker_peer_snubbed(f.c, f.h[0], 62000));
    run(&f, 60000);
    assert_true(choker_peer_unchoked(f.c, f.h[0]));
    /* At 70 s it is snubbed: no regular slot, the next best gets it. */
    run(&f, 70000);
    assert_false(choker_peer_unchoked(f.c, f.h[0]));
    for (size_t k = 1; k <= 4; k++)
        assert_true(choker_peer_unchoked(f.c, f.h[k]));
    /* Not snubbed while it chokes us, nor when we are not interested. */
    f.info[0].choking_us = true;
    fix_update(&f, 0, 71000);
    assert_false(choker_peer_snubbed(f.c, f.h[0], 200000));
    /* Unchoked again at 80 s: the 60 s count starts over. */
    f.info[0].choking_us = false;
    fix_update(&f, 0, 80000);
    assert_false(choker_peer_snubbed(f.c, f.h[0], 139999));
    assert_true(choker_peer_snubbed(f.c, f.h[0], 140000));
    /* A block at 130 s clears it. */
    f.info[0].last_block_ms = 130000;
    fix_update(&f, 0, 130000);
    assert_false(choker_peer_snubbed(f.c, f.h[0], 140000));
    run(&f, 140000);
    assert_true(choker_peer_unchoked(f.c, f.h[0]));
    f.info[0].am_interested = false;
    fix_update(&f, 0, 140000);
    assert_false(choker_peer_snubbed(f.c, f.h[0], 900000));
    choker_free(f.c);

    /* A snubbed peer may still be the optimistic one. */
    fix_init(&f, &(struct choker_params){.seed = 9, .upload_slots = 1});
    static const uint64_t two[] = {5, 1000};
    fix_add(&f, two, 2, 0);
    f.info[1].am_interested = true;
    fix_update(&f, 1, 0);
    run(&f, CHOKER_SNUB_MS);
    assert_true(choker_peer_unchoked(f.c, f.h[0]));
    assert_true(choker_peer_unchoked(f.c, f.h[1]));
    assert_true(choker_peer_snubbed(f.c, f.h[1], CHOKER_SNUB_MS));
    choker_free(f.c);
}

static void
test_seeding(void **state)
{
    (void)state;
    static const uint64_t rates[] = {900, 800, 700, 600, 0, 0, 0, 0};
    struct fix f;
    fix_init(&f, &(struct choker_params){.seed = 2, .no_optimistic = true});
    fix_add(&f, rates, ARRAY_SIZE(rates), 0);
    for (size_t k = 0; k < 8; k++) {
        f.info[k].up_rate = 100 * k;
        fix_update(&f, k, 0);
    }
    run(&f, 0);
    for (size_t k = 0; k < 8; k++)
        assert_int_equal(choker_peer_unchoked(f.c, f.h[k]), k < 4);
    /* Seeding: rank by upload rate, at once. */
    choker_set_seeding(f.c, true);
    assert_int_equal(choker_next_deadline(f.c, 1000), 1000);
    assert_int_equal(run(&f, 1000), 8);
    for (size_t k = 0; k < 8; k++)
        assert_int_equal(choker_peer_unchoked(f.c, f.h[k]), k >= 4);
    /* Snubbing does not apply while seeding (we are not interested). */
    assert_false(choker_peer_snubbed(f.c, f.h[7], 10000000));
    /* More slots: at once as well. */
    choker_set_slots(f.c, 6);
    run(&f, 2000);
    assert_int_equal(count_unchoked(&f), 6);
    for (size_t k = 2; k < 8; k++)
        assert_true(choker_peer_unchoked(f.c, f.h[k]));
    choker_set_slots(f.c, 0); /* default 4 */
    run(&f, 3000);
    assert_int_equal(count_unchoked(&f), CHOKER_SLOTS_DEFAULT);
    choker_free(f.c);
}

static void
test_interest_and_removal(void **state)
{
    (void)state;
    static const uint64_t rates[] = {900, 800, 700, 600, 500, 400};
    struct fix f;
    fix_init(&f, &(struct choker_params){.seed = 4, .no_optimistic = true});
    fix_add(&f, rates, ARRAY_SIZE(rates), 0);
    /* Peer 5 is not interested: never unchoked. */
    f.info[5].interested = false;
    fix_update(&f, 5, 0);
    run(&f, 0);
    assert_false(choker_peer_unchoked(f.c, f.h[5]));
    assert_false(choker_peer_unchoked(f.c, f.h[4]));
    /* Peer 1 loses interest at 3 s: choked at once, and peer 4 gets the
     * free slot at once, without waiting for the rechoke. */
    f.info[1].interested = false;
    fix_update(&f, 1, 3000);
    struct choker_decision d[8];
    size_t n = choker_run(f.c, 3000, d, ARRAY_SIZE(d));
    assert_int_equal(n, 2);
    assert_false(choker_peer_unchoked(f.c, f.h[1]));
    assert_true(choker_peer_unchoked(f.c, f.h[4]));
    /* Peer 0 leaves: peer 5 becomes interested and takes the slot. */
    choker_peer_remove(f.c, f.h[0]);
    choker_peer_remove(f.c, f.h[0]); /* twice: ignored */
    choker_peer_remove(f.c, -1);
    choker_peer_remove(f.c, 12345);
    f.info[5].interested = true;
    fix_update(&f, 5, 4000);
    n = choker_run(f.c, 4000, d, ARRAY_SIZE(d));
    assert_int_equal(n, 1);
    assert_int_equal(d[0].peer, f.h[5]);
    assert_true(d[0].unchoke);
    /* The handle is reused by the next peer, which starts choked. */
    int h = choker_peer_add(f.c, 77, 5000);
    assert_int_equal(h, f.h[0]);
    assert_false(choker_peer_unchoked(f.c, h));
    assert_false(choker_peer_snubbed(f.c, h, 1000000));
    /* Updates and queries of unknown handles are ignored. */
    choker_peer_update(f.c, 999, &f.info[0], 0);
    assert_false(choker_peer_unchoked(f.c, 999));
    choker_free(f.c);
    choker_free(NULL);
}

static void
test_short_output(void **state)
{
    (void)state;
    static const uint64_t rates[] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    struct fix f;
    fix_init(&f, NULL);
    fix_add(&f, rates, ARRAY_SIZE(rates), 0);
    struct choker_decision d[2];
    size_t total = 0, n;
    int64_t t = 0;
    while ((n = choker_run(f.c, t, d, ARRAY_SIZE(d))) > 0) {
        total += n;
        assert_true(n <= 2);
        if (total < 5)
            assert_int_equal(choker_next_deadline(f.c, t), t);
        t++;
    }
    assert_int_equal(total, 5);
    assert_int_equal(count_unchoked(&f), 5);
    assert_true(choker_next_deadline(f.c, t) > t);
    /* Zero room: nothing written, still pending.  (Seeding, peer 9 is now
     * the fastest: one peer to unchoke, one to choke.) */
    f.info[9].up_rate = 1000;
    fix_update(&f, 9, t);
    choker_set_seeding(f.c, true);
    assert_int_equal(choker_run(f.c, t, d, 0), 0);
    assert_int_equal(choker_next_deadline(f.c, t + 1), t + 1);
    assert_int_equal(choker_run(f.c, t + 1, d, ARRAY_SIZE(d)), 2);
    assert_true(choker_peer_unchoked(f.c, f.h[9]));
    assert_int_equal(count_unchoked(&f), 5);
    assert_true(choker_next_deadline(f.c, t + 1) > t + 1);
    choker_free(f.c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tit_for_tat),
        cmocka_unit_test(test_rechoke_every_10s),
        cmocka_unit_test(test_optimistic_every_30s),
        cmocka_unit_test(test_newcomers_favoured),
        cmocka_unit_test(test_snubbed),
        cmocka_unit_test(test_seeding),
        cmocka_unit_test(test_interest_and_removal),
        cmocka_unit_test(test_short_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
