/* rate — token buckets (C11 atomics) and sliding-window rate meters.
 *
 * The bucket is two independent atomics that never need to change
 * together: the refill time, claimed by compare-and-swap so that each
 * stretch of time is credited once, and the token level, changed by
 * compare-and-swap loops that never let it go below zero.  Whatever the
 * interleaving, the tokens ever added are at most burst (the first refill)
 * plus limit times the time claimed, and a take only removes tokens that
 * are there, so no thread can be granted tokens that were not earned.
 */
#include "daemon/rate.h"

#include <stddef.h>
#include <string.h>

/* The refill time of a bucket that was never refilled: its first refill
 * fills it to burst whatever "now" is. */
#define RATE_NEVER INT64_MIN

static uint64_t
clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static uint64_t
burst_for(uint64_t limit, uint64_t burst)
{
    if (burst == 0)
        burst = limit / 10;
    return clamp_u64(burst, RATE_BURST_MIN, RATE_BURST_MAX) * RATE_MICRO;
}

void
rate_bucket_init(struct rate_bucket *b, uint64_t limit, uint64_t burst)
{
    limit = limit > RATE_LIMIT_MAX ? RATE_LIMIT_MAX : limit;
    atomic_init(&b->limit, limit);
    atomic_init(&b->burst, burst_for(limit, burst));
    atomic_init(&b->level, 0);
    atomic_init(&b->last_us, RATE_NEVER);
}

void
rate_bucket_set_limit(struct rate_bucket *b, uint64_t limit, uint64_t burst)
{
    limit = limit > RATE_LIMIT_MAX ? RATE_LIMIT_MAX : limit;
    uint64_t bu = burst_for(limit, burst);
    atomic_store(&b->burst, bu);
    atomic_store(&b->limit, limit);
    uint64_t lv = atomic_load(&b->level);
    while (lv > bu && !atomic_compare_exchange_weak(&b->level, &lv, bu))
        ;
}

uint64_t
rate_bucket_limit(const struct rate_bucket *b)
{
    return atomic_load(&b->limit);
}

/* Credit the time since the last refill, once, to whoever claims it. */
static void
refill(struct rate_bucket *b, uint64_t limit, int64_t now_us)
{
    int64_t last = atomic_load(&b->last_us);
    for (;;) {
        if (last != RATE_NEVER && now_us <= last)
            return;
        if (atomic_compare_exchange_weak(&b->last_us, &last, now_us))
            break;
    }
    uint64_t burst = atomic_load(&b->burst);
    /* Past burst / limit seconds the bucket is full anyway: capping the
     * interval keeps limit * dt far from overflowing. */
    uint64_t cap = burst / limit + 1;
    uint64_t dt = last == RATE_NEVER ? cap : (uint64_t)now_us - (uint64_t)last;
    if (dt > cap)
        dt = cap;
    uint64_t add = dt * limit;
    uint64_t lv = atomic_load(&b->level);
    uint64_t nv;
    do {
        if (lv >= burst)
            return;
        nv = lv + add > burst ? burst : lv + add;
    } while (!atomic_compare_exchange_weak(&b->level, &lv, nv));
}

uint64_t
rate_bucket_take(struct rate_bucket *b, uint64_t want, int64_t now_us)
{
    if (!b || want == 0)
        return want;
    uint64_t limit = atomic_load(&b->limit);
    if (limit == 0)
        return want;
    refill(b, limit, now_us);
    uint64_t lv = atomic_load(&b->level);
    uint64_t got, nv;
    do {
        got = lv / RATE_MICRO;
        if (got > want)
            got = want;
        if (got == 0)
            return 0;
        nv = lv - got * RATE_MICRO;
    } while (!atomic_compare_exchange_weak(&b->level, &lv, nv));
    return got;
}

int64_t
rate_bucket_delay_us(struct rate_bucket *b, uint64_t n, int64_t now_us)
{
    if (!b)
        return 0;
    uint64_t limit = atomic_load(&b->limit);
    if (limit == 0)
        return 0;
    refill(b, limit, now_us);
    uint64_t burst = atomic_load(&b->burst);
    uint64_t need = n > burst / RATE_MICRO ? burst : n * RATE_MICRO;
    uint64_t lv = atomic_load(&b->level);
    if (lv >= need)
        return 0;
    return (int64_t)((need - lv + limit - 1) / limit);
}

void
rate_bucket_give(struct rate_bucket *b, uint64_t n)
{
    if (!b || n == 0 || atomic_load(&b->limit) == 0)
        return;
    uint64_t burst = atomic_load(&b->burst);
    if (n > burst / RATE_MICRO)
        n = burst / RATE_MICRO;
    uint64_t add = n * RATE_MICRO;
    uint64_t lv = atomic_load(&b->level);
    uint64_t nv;
    do {
        if (lv >= burst)
            return;
        nv = lv + add > burst ? burst : lv + add;
    } while (!atomic_compare_exchange_weak(&b->level, &lv, nv));
}

uint64_t
rate_take2(struct rate_bucket *torrent, struct rate_bucket *global,
           uint64_t want, int64_t now_us)
{
    uint64_t t = rate_bucket_take(torrent, want, now_us);
    if (t == 0)
        return 0;
    uint64_t g = rate_bucket_take(global, t, now_us);
    if (g < t)
        rate_bucket_give(torrent, t - g);
    return g;
}

/* ------------------------------------------------------------------ */

void
rate_meter_init(struct rate_meter *m, unsigned window_s)
{
    memset(m, 0, sizeof(*m));
    m->n_slots = window_s < 1                      ? 1
                 : window_s > RATE_METER_SLOTS_MAX ? RATE_METER_SLOTS_MAX
                                                   : window_s;
    m->start_us = -1;
}

/* Move the current slot to now_us, zeroing the seconds that passed. */
static void
meter_advance(struct rate_meter *m, int64_t now_us)
{
    if (m->start_us < 0) {
        m->start_us = now_us;
        m->cur = 0;
        return;
    }
    if (now_us < m->start_us)
        return;
    int64_t idx = (now_us - m->start_us) / RATE_METER_SLOT_US;
    if (idx <= m->cur)
        return;
    int64_t from = m->cur + 1;
    if (idx - from >= (int64_t)m->n_slots)
        from = idx - m->n_slots + 1;
    for (int64_t i = from; i <= idx; i++)
        m->slot[i % m->n_slots] = 0;
    m->cur = idx;
}

void
rate_meter_add(struct rate_meter *m, uint64_t n, int64_t now_us)
{
    meter_advance(m, now_us);
    m->slot[m->cur % m->n_slots] += n;
    m->total += n;
}

uint64_t
rate_meter_get(struct rate_meter *m, int64_t now_us)
{
    if (m->start_us < 0)
        return 0;
    meter_advance(m, now_us);
    uint64_t sum = 0;
    for (unsigned i = 0; i < m->n_slots; i++)
        sum += m->slot[i];
    int64_t age = now_us - m->start_us;
    int64_t in_cur = age - m->cur * RATE_METER_SLOT_US;
    if (in_cur < 0)
        in_cur = 0;
    int64_t span = (int64_t)(m->n_slots - 1) * RATE_METER_SLOT_US + in_cur;
    if (span > age)
        span = age;
    /* A meter younger than a second reports over one second rather than
     * a spike from a tiny denominator. */
    if (span < RATE_METER_SLOT_US)
        span = RATE_METER_SLOT_US;
    return (uint64_t)((double)sum * RATE_MICRO / (double)span);
}
