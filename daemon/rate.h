/* rate — token buckets for rate limits, and rate meters for reporting.
 *
 * Thread: any for struct rate_bucket (C11 atomics; peer threads take tokens
 * concurrently, the reactor changes limits).  struct rate_meter is not
 * atomic: one thread at a time uses a given meter (the reactor, which adds
 * the byte counts that peer threads report in batches).
 *
 * No I/O, no clock: the caller passes "now" as a monotonic time in
 * microseconds (CLOCK_MONOTONIC), like jech/dht.  Callers on different
 * threads may pass slightly different "now" values; a time that goes
 * backwards is treated as no time passing.
 *
 * Token bucket.  A bucket holds at most burst bytes of tokens and gains
 * limit bytes per second.  Tokens are kept in micro-bytes (bytes * 10^6),
 * so a refill of limit * dt_us micro-bytes is exact and no rounding ever
 * loses or creates tokens, however often the bucket is refilled.  Refill is
 * lazy: the first taker after time passed claims the interval [last, now]
 * with a compare-and-swap on the refill time, so every interval is counted
 * exactly once and no reactor timer is needed.  Over any window of T
 * seconds a bucket grants at most limit * T + burst bytes.  A new bucket
 * starts full.
 *
 * The default burst is a tenth of a second of the limit (at least
 * RATE_BURST_MIN), so a 10 s measurement overshoots by at most about 1 %.
 * A limit of 0 means unlimited: every take is granted in full.
 *
 * Costs: every call is O(1); rate_bucket_take() is a few atomic operations
 * and retries its compare-and-swap only when another thread raced it.
 */
#ifndef TD_DAEMON_RATE_H
#define TD_DAEMON_RATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RATE_MICRO 1000000 /* micro-bytes per byte, us per s */
#define RATE_BURST_MIN                                                         \
    1024u                                  /* bytes; small, so that low limits \
                                            * are honoured over 10 s too */
#define RATE_LIMIT_MAX (UINT64_C(1) << 40) /* 1 TiB/s; larger is clamped */
#define RATE_BURST_MAX (UINT64_C(1) << 40)

struct rate_bucket {
    _Atomic uint64_t limit;  /* bytes/s, 0 = unlimited */
    _Atomic uint64_t burst;  /* micro-bytes */
    _Atomic uint64_t level;  /* micro-bytes of tokens */
    _Atomic int64_t last_us; /* time up to which refills were counted */
};

/* Set up a bucket: limit bytes/s (0 = unlimited), burst bytes (0 = the
 * default: limit / 10, at least RATE_BURST_MIN).  Not thread-safe: call
 * before the bucket is shared.  The bucket starts full (its first take
 * refills it to burst). */
void rate_bucket_init(struct rate_bucket *b, uint64_t limit, uint64_t burst);

/* Change the limit and burst (same meaning as in init).  Tokens above the
 * new burst are dropped.  Any thread. */
void rate_bucket_set_limit(struct rate_bucket *b, uint64_t limit,
                           uint64_t burst);

/* The limit in bytes/s (0 = unlimited).  Any thread. */
uint64_t rate_bucket_limit(const struct rate_bucket *b);

/* Refill by the time passed up to now_us, then take up to want bytes.
 * Returns the bytes granted, 0..want (want when unlimited).  b may be NULL
 * (unlimited).  Any thread. */
uint64_t rate_bucket_take(struct rate_bucket *b, uint64_t want, int64_t now_us);

/* Microseconds until n bytes (at most the burst) will be in the bucket if
 * nobody else takes any: what a peer thread that was granted too little
 * may wait in poll().  0 when they are there now or the bucket is
 * unlimited.  Any thread. */
int64_t rate_bucket_delay_us(struct rate_bucket *b, uint64_t n, int64_t now_us);

/* Give back n bytes taken earlier and not used (never above burst).  b may
 * be NULL.  Any thread. */
void rate_bucket_give(struct rate_bucket *b, uint64_t n);

/* Take from a torrent's bucket, then from the global one: returns the
 * bytes both granted, 0..want; tokens the torrent bucket granted beyond
 * what the global one did are given back.  Either bucket may be NULL
 * (unlimited).  Any thread. */
uint64_t rate_take2(struct rate_bucket *torrent, struct rate_bucket *global,
                    uint64_t want, int64_t now_us);

/* Rate meter: bytes over a sliding window of whole seconds, for the
 * download_rate/upload_rate that users see and for the choker (20 s). */
#define RATE_METER_SLOTS_MAX 60
#define RATE_METER_SLOT_US 1000000 /* one slot per second */

struct rate_meter {
    uint64_t slot[RATE_METER_SLOTS_MAX]; /* bytes per second, a ring */
    unsigned n_slots;                    /* window length in seconds */
    int64_t cur;      /* index (in seconds since start) of current slot */
    int64_t start_us; /* time of the first add or get, -1 = not yet */
    uint64_t total;   /* bytes ever added */
};

/* A meter over window_s seconds (clamped to 1..RATE_METER_SLOTS_MAX). */
void rate_meter_init(struct rate_meter *m, unsigned window_s);

/* Count n bytes at now_us.  O(1) amortised (O(window) after a long idle
 * time, bounded by the window). */
void rate_meter_add(struct rate_meter *m, uint64_t n, int64_t now_us);

/* Bytes/s over the window that ends at now_us: the bytes of the full
 * seconds in the window plus those of the current second, divided by the
 * time they span (by the meter's age while it is younger than the
 * window).  0 for a meter that saw nothing.  O(window). */
uint64_t rate_meter_get(struct rate_meter *m, int64_t now_us);

#endif
