/* Unit tests for daemon/rate: token buckets on a simulated clock (limits
 * honoured within 2 % over 10 s, bursts, limit changes, the two-level
 * take), a real multi-threaded hammer that checks no tokens are created,
 * and the sliding-window meter. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "daemon/rate.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SEC 1000000LL

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void
test_unlimited(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_bucket_init(&b, 0, 0);
    assert_int_equal(rate_bucket_limit(&b), 0);
    assert_int_equal(rate_bucket_take(&b, 123456789, 0), 123456789);
    assert_int_equal(rate_bucket_take(&b, 1, 1), 1);
    assert_int_equal(rate_bucket_take(NULL, 77, 5), 77);
    assert_int_equal(rate_take2(NULL, NULL, 99, 5), 99);
    rate_bucket_give(&b, 100); /* no effect, no crash */
    rate_bucket_give(NULL, 100);
}

static void
test_burst_and_refill(void **state)
{
    (void)state;
    struct rate_bucket b;
    /* 100 kB/s, default burst: 10 kB. */
    rate_bucket_init(&b, 100000, 0);
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 5 * SEC), 10000);
    assert_int_equal(rate_bucket_take(&b, 1, 5 * SEC), 0);
    /* 10 ms later: exactly 1000 bytes. */
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 5 * SEC + 10000), 1000);
    /* Time going backwards credits nothing. */
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 5 * SEC), 0);
    /* Waiting for 1500 bytes: 15 ms. */
    assert_int_equal(rate_bucket_delay_us(&b, 1500, 5 * SEC + 10000), 15000);
    assert_int_equal(rate_bucket_delay_us(&b, 1500, 5 * SEC + 25000), 0);
    assert_int_equal(rate_bucket_take(&b, 1500, 5 * SEC + 25000), 1500);
    /* Asking more than the burst waits for a full bucket only. */
    assert_int_equal(rate_bucket_delay_us(&b, 1 << 30, 5 * SEC + 25000),
                     100000);
    assert_int_equal(rate_bucket_delay_us(NULL, 1, 0), 0);
    /* A long idle time fills only to burst. */
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 500 * SEC), 10000);
    /* The minimum burst. */
    struct rate_bucket s;
    rate_bucket_init(&s, 100, 0);
    assert_int_equal(rate_bucket_take(&s, 1 << 20, 0), RATE_BURST_MIN);
    /* Partial grant. */
    assert_int_equal(rate_bucket_take(&b, 300, 500 * SEC + 5000), 300);
    assert_int_equal(rate_bucket_take(&b, 1000, 500 * SEC + 5000), 200);

    /* An explicit burst; a new bucket starts full even at time 0. */
    rate_bucket_init(&b, 1000000, 50000);
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 0), 50000);
    /* 1 us at 1 MB/s is exactly one byte, never lost to rounding. */
    for (int i = 1; i <= 1000; i++)
        assert_int_equal(rate_bucket_take(&b, 10, i), 1);
    /* Giving back never exceeds the burst. */
    rate_bucket_give(&b, 1 << 30);
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 1000), 50000);
}

static void
test_fractional_rates(void **state)
{
    (void)state;
    /* 3 bytes/s, polled every millisecond for 100 s: exactly 300 bytes
     * plus the burst, even though each millisecond earns 0.003 bytes. */
    struct rate_bucket b;
    rate_bucket_init(&b, 3, 16384);
    uint64_t got = rate_bucket_take(&b, 1 << 20, 0);
    assert_int_equal(got, 16384);
    got = 0;
    for (int64_t t = 1000; t <= 100 * SEC; t += 1000)
        got += rate_bucket_take(&b, 1 << 20, t);
    assert_int_equal(got, 300);
}

static void
test_set_limit(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_bucket_init(&b, 1000000, 100000);
    assert_int_equal(rate_bucket_take(&b, 1000, 0), 1000);
    /* Lower burst: the tokens above it are dropped. */
    rate_bucket_set_limit(&b, 10000, 20000);
    assert_int_equal(rate_bucket_limit(&b), 10000);
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 0), 20000);
    assert_int_equal(rate_bucket_take(&b, 1 << 20, SEC), 10000);
    /* Unlimited, then limited again. */
    rate_bucket_set_limit(&b, 0, 0);
    assert_int_equal(rate_bucket_take(&b, 1 << 30, 2 * SEC), 1 << 30);
    rate_bucket_set_limit(&b, 10000, 20000);
    assert_int_equal(rate_bucket_take(&b, 1 << 20, 10 * SEC), 20000);
    /* Huge limits are clamped, not overflowed. */
    rate_bucket_set_limit(&b, UINT64_MAX, UINT64_MAX);
    assert_int_equal(rate_bucket_limit(&b), RATE_LIMIT_MAX);
    assert_int_equal(rate_bucket_take(&b, UINT64_MAX, 1000 * SEC),
                     RATE_BURST_MAX);
}

static void
test_take2(void **state)
{
    (void)state;
    struct rate_bucket t, g;
    rate_bucket_init(&t, 100000, 50000);
    rate_bucket_init(&g, 100000, 20000);
    /* The global bucket limits; the torrent keeps the rest. */
    assert_int_equal(rate_take2(&t, &g, 40000, 0), 20000);
    assert_int_equal(rate_bucket_take(&t, 1 << 20, 0), 30000);
    /* The torrent bucket limits; the global one is not charged more. */
    rate_bucket_init(&t, 100000, 20000);
    rate_bucket_init(&g, 100000, 50000);
    assert_int_equal(rate_take2(&t, &g, 40000, 0), 20000);
    assert_int_equal(rate_bucket_take(&g, 1 << 20, 0), 30000);
    /* Nothing from the torrent: nothing taken from the global one. */
    assert_int_equal(rate_take2(&t, &g, 1, 0), 0);
    assert_int_equal(rate_bucket_take(&g, 1, 0), 0);
    /* NULL torrent bucket: global only. */
    assert_int_equal(rate_take2(NULL, &g, 5000, SEC / 10), 5000);
}

/* Simulated threads take tokens on a simulated clock for 10 s: the bytes
 * granted must be within 2 % of limit * 10 s. */
struct sim_case {
    uint64_t limit;
    uint64_t burst; /* 0 = default */
    unsigned n_takers;
    uint64_t want_max; /* each take asks 1..want_max bytes */
    int64_t tick_us;   /* a taker acts every tick (jittered) */
};

static const struct sim_case sim_cases[] = {
    {.limit = 10000, .n_takers = 4, .want_max = 16384, .tick_us = 1000},
    {.limit = 100000, .n_takers = 1, .want_max = 16384, .tick_us = 50},
    {.limit = 1000000, .n_takers = 8, .want_max = 65536, .tick_us = 200},
    {.limit = 50u << 20, .n_takers = 16, .want_max = 262144, .tick_us = 500},
    {.limit = 1u << 30, .n_takers = 32, .want_max = 1u << 24, .tick_us = 1000},
    {.limit = 777777,
     .burst = 16384,
     .n_takers = 3,
     .want_max = 1500,
     .tick_us = 700},
};

static void
test_simulated_accuracy(void **state)
{
    (void)state;
    for (size_t c = 0; c < ARRAY_SIZE(sim_cases); c++) {
        const struct sim_case *sc = &sim_cases[c];
        struct rate_bucket global, torrent;
        rate_bucket_init(&global, sc->limit, sc->burst);
        /* A torrent bucket with a higher limit must not change the
         * outcome: the global one binds. */
        rate_bucket_init(&torrent, sc->limit * 2, 0);
        uint64_t seed = 42 + c;
        int64_t *next = calloc(sc->n_takers, sizeof(*next));
        assert_non_null(next);
        uint64_t granted = 0;
        const int64_t start = 1000 * SEC, end = start + 10 * SEC;
        /* Each round the taker with the earliest next time acts. */
        for (;;) {
            unsigned who = 0;
            for (unsigned i = 1; i < sc->n_takers; i++)
                if (next[i] < next[who])
                    who = i;
            int64_t now = start + next[who];
            if (now >= end)
                break;
            uint64_t want = 1 + rng_next(&seed) % sc->want_max;
            granted += rate_take2(&torrent, &global, want, now);
            next[who] += sc->tick_us / 2 +
                         (int64_t)(rng_next(&seed) % (uint64_t)sc->tick_us);
        }
        free(next);
        double expect = (double)sc->limit * 10;
        double err = ((double)granted - expect) / expect;
        print_message("case %zu: %+.3f %%\n", c, err * 100);
        if (err > 0.02 || err < -0.02)
            fail_msg("case %zu: granted %llu, expected %.0f (%.2f %%)", c,
                     (unsigned long long)granted, expect, err * 100);
    }
}

/* Real threads hammer one bucket: the sum granted never exceeds
 * limit * elapsed + burst. */
#define HAMMER_THREADS 8

struct hammer {
    struct rate_bucket *b;
    struct rate_bucket *t;
    int64_t stop_us;
    uint64_t granted;
    uint64_t seed;
};

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec / 1000;
}

static void *
hammer_run(void *arg)
{
    struct hammer *h = arg;
    for (;;) {
        int64_t now = mono_us();
        if (now >= h->stop_us)
            break;
        uint64_t want = 1 + rng_next(&h->seed) % 40000;
        h->granted += rate_take2(h->t, h->b, want, now);
    }
    return NULL;
}

static void
test_threads_no_free_tokens(void **state)
{
    (void)state;
    static const uint64_t limits[] = {200000, 10u << 20, 500u << 20};
    for (size_t c = 0; c < ARRAY_SIZE(limits); c++) {
        struct rate_bucket b, t;
        uint64_t burst = 65536;
        rate_bucket_init(&b, limits[c], burst);
        rate_bucket_init(&t, limits[c] * 3, burst * 4);
        struct hammer h[HAMMER_THREADS];
        pthread_t th[HAMMER_THREADS];
        int64_t t0 = mono_us();
        for (int i = 0; i < HAMMER_THREADS; i++) {
            h[i] = (struct hammer){.b = &b,
                                   .t = &t,
                                   .stop_us = t0 + 200000,
                                   .seed = (uint64_t)i * 7919 + c};
            assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h[i]),
                             0);
        }
        uint64_t sum = 0;
        for (int i = 0; i < HAMMER_THREADS; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            sum += h[i].granted;
        }
        int64_t t1 = mono_us();
        /* Every "now" a thread passed lies in [t0, t1]. */
        double bound =
            (double)limits[c] * (double)(t1 - t0) / SEC + (double)burst;
        if ((double)sum > bound)
            fail_msg("limit %llu: granted %llu > bound %.0f",
                     (unsigned long long)limits[c], (unsigned long long)sum,
                     bound);
        /* And the bucket was not starved either (a loose lower bound: the
         * threads asked far more than the limit). */
        assert_true(sum > 0);
    }
}

/* ------------------------------------------------------------------ */

static void
test_meter_steady(void **state)
{
    (void)state;
    struct rate_meter m;
    rate_meter_init(&m, 20);
    assert_int_equal(rate_meter_get(&m, 0), 0);
    /* 1 MB/s in 16 KiB chunks for 30 s. */
    int64_t t = 5 * SEC;
    uint64_t per_s = 1000000;
    int64_t step = (int64_t)(16384.0 * SEC / (double)per_s);
    int64_t end = t + 30 * SEC;
    for (; t < end; t += step)
        rate_meter_add(&m, 16384, t);
    uint64_t r = rate_meter_get(&m, end);
    assert_true(r > per_s * 97 / 100 && r < per_s * 103 / 100);
    assert_true(m.total > 29 * per_s);
    /* While young (1.5 s old) the rate is over the age. */
    struct rate_meter y;
    rate_meter_init(&y, 20);
    rate_meter_add(&y, 0, 0);
    rate_meter_add(&y, 3000, SEC + SEC / 2);
    assert_int_equal(rate_meter_get(&y, SEC + SEC / 2), 2000);
    /* Younger than a second: over one second, no spike. */
    rate_meter_init(&y, 20);
    rate_meter_add(&y, 500, 10);
    assert_int_equal(rate_meter_get(&y, 20), 500);
}

static void
test_meter_decay(void **state)
{
    (void)state;
    struct rate_meter m;
    rate_meter_init(&m, 10);
    for (int s = 0; s < 10; s++)
        rate_meter_add(&m, 10000, s * SEC);
    /* Half way through second 10: slots 1..9 full, slot 10 empty. */
    uint64_t r = rate_meter_get(&m, 10 * SEC + SEC / 2);
    assert_int_equal(r, 90000 * 10 / 95);
    /* Silence: the window empties and stays empty (long idle gap). */
    assert_int_equal(rate_meter_get(&m, 21 * SEC), 0);
    assert_int_equal(rate_meter_get(&m, 10000 * SEC), 0);
    rate_meter_add(&m, 5000, 10000 * SEC + 1);
    assert_true(rate_meter_get(&m, 10000 * SEC + SEC / 2) > 0);
    /* Window clamps. */
    rate_meter_init(&m, 0);
    assert_int_equal(m.n_slots, 1);
    rate_meter_init(&m, 1000);
    assert_int_equal(m.n_slots, RATE_METER_SLOTS_MAX);
    /* Time before the start is ignored rather than crashing. */
    rate_meter_add(&m, 10, 100 * SEC);
    rate_meter_add(&m, 10, 50 * SEC);
    assert_int_equal(m.total, 20);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_burst_and_refill),
        cmocka_unit_test(test_fractional_rates),
        cmocka_unit_test(test_set_limit),
        cmocka_unit_test(test_take2),
        cmocka_unit_test(test_simulated_accuracy),
        cmocka_unit_test(test_threads_no_free_tokens),
        cmocka_unit_test(test_meter_steady),
        cmocka_unit_test(test_meter_decay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
