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
 */
#ifndef TD_DAEMON_EVENTS_H
#define TD_DAEMON_EVENTS_H

#include <stdint.h>

struct json_object;
struct events;
struct events_sub;

#define EVENTS_KEEP 4096

/* Called for each event a subscriber gets; ev is borrowed (take a
 * reference to keep it). */
typedef void (*events_cb_t)(void *arg, struct json_object *ev);

int events_new(struct events **ret, uint64_t first_seq);
void events_free(struct events *e);

/* Publish: adds "seq" and "time" to obj, keeps it, and calls every
 * subscriber.  Ownership of obj is taken. */
void events_publish(struct events *e, struct json_object *obj);

/* Subscribe to future events of the given types (a NULL-terminated array
 * of type names, or NULL for all).  If since > 0, first replays the kept
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

#endif
