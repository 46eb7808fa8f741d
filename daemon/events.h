/* events — the numbered event log that clients subscribe to.
 *
 * Thread: reactor only.
 *
 * Every event gets the next sequence number (starting at 1, never reused
 * while the daemon runs; the counter is restored from the state directory
 * at start, so numbers keep growing across restarts) and is kept in a ring
 * of the most recent EVENTS_KEEP events, so that a client that reconnects
 * with "since" misses nothing, or is told that what it asks for is gone.
 *
 * An event is the JSON object sent as the params of a notification:
 * {"seq":N,"type":"torrent.state","time":T,"info_hash":"...",...}.
 *
 * Live events (events_publish_live(), torrent.progress) are the other
 * kind: frequent reports that are stale a second later.  They get no
 * sequence number, are not kept (so they never push a numbered event out
 * of the ring, and a replay with "since" never holds one) and reach only
 * the subscribers that named their type.  A subscription to all types
 * (types NULL), or with the type "*" (every kept type), gets none of
 * them; existing clients see the same stream as before.
 *
 * The rate of live events is the publisher's business; the throttle
 * below is the pure rule the session uses for torrent.progress.
 */
#ifndef TD_DAEMON_EVENTS_H
#define TD_DAEMON_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

struct json_object;
struct events;
struct events_sub;

#define EVENTS_KEEP 4096
/* The type that stands for every kept type in a subscription's list. */
#define EVENTS_ALL_KEPT "*"

/* Called for each event a subscriber gets; ev is borrowed (take a
 * reference to keep it). */
typedef void (*events_cb_t)(void *arg, struct json_object *ev);

int events_new(struct events **ret, uint64_t first_seq);
void events_free(struct events *e);

/* Publish: adds "seq" and "time" to obj, keeps it, and calls every
 * subscriber.  Ownership of obj is taken. */
void events_publish(struct events *e, struct json_object *obj);

/* Publish a live event: adds "time" (no "seq"), calls every subscriber
 * that named obj's type, and drops it; nothing is kept and the sequence
 * numbers do not move.  Ownership of obj is taken.  Cost: O(subscribers
 * x their types). */
void events_publish_live(struct events *e, struct json_object *obj);

/* Does some subscriber name this type in its list?  The publisher of a
 * live type asks first, so that it builds nothing when nobody listens.
 * Cost: O(subscribers x their types). */
bool events_wanted(const struct events *e, const char *type);

/* Subscribe to future events of the given types (a NULL-terminated array
 * of type names, or NULL for every kept type; EVENTS_ALL_KEPT in the
 * array also means every kept type, so that {"*", "torrent.progress",
 * NULL} is everything).  If since > 0, first replays the kept
 * events with seq > since; returns -ESTALE (nothing subscribed) when
 * events after since are no longer kept.  *ret_sub (for
 * events_unsubscribe()) is set before the replay starts, so that a
 * callback may unsubscribe during the replay. */
int events_subscribe(struct events *e, const char *const *types,
                     uint64_t since, events_cb_t cb, void *arg,
                     struct events_sub **ret_sub);

/* Stop a subscription; safe from inside its own callback. */
void events_unsubscribe(struct events_sub *sub);

/* The last sequence number given out (0 if none). */
uint64_t events_last_seq(const struct events *e);
/* The oldest sequence number still kept (0 if none). */
uint64_t events_oldest_seq(const struct events *e);

/* --- Throttling a live report (torrent.progress) ---
 *
 * One report per key (a torrent) at most every EVENTS_PROGRESS_INTERVAL
 * seconds, and only when what it reports changed since the last one: a
 * stalled download stays quiet.  Pure functions; times are the caller's
 * monotonic clock in seconds. */
#define EVENTS_PROGRESS_INTERVAL 1.0

/* What a report says, as far as "changed" goes. */
struct events_progress {
    uint64_t done;      /* verified bytes, or pieces checked */
    uint64_t down_rate; /* bytes/s */
    uint64_t up_rate;
    uint32_t peers;
    int state; /* the publisher's state code */
};

/* The last report sent for one key; zero it for "none yet". */
struct events_throttle {
    struct events_progress last;
    double at; /* when it was sent */
    bool sent;
};

/* Is a report of now due at time now_s?  True for the first one, else
 * when at least EVENTS_PROGRESS_INTERVAL passed since the last one (or
 * the clock went back) and something in now differs from it. */
bool events_throttle_due(const struct events_throttle *th,
                         const struct events_progress *now, double now_s);

/* Record that the report p was sent at now_s. */
void events_throttle_sent(struct events_throttle *th,
                          const struct events_progress *p, double now_s);

#endif
