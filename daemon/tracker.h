/* tracker — a torrent's trackers: BEP 12 tiers, announces and scrapes
 * through trk_http and trk_udp.
 *
 * Thread: reactor only.
 *
 * A struct tracker_set holds the trackers of one torrent in its tiers.
 * Each tier is shuffled once when the set is made.  An announce goes to
 * one tracker at a time: the trackers are tried in order, tier by tier;
 * the first that answers is moved to the front of its tier, its peers are
 * handed to on_peers, and the next announce is due after its interval
 * (never sooner than its min interval, nor than cfg->interval_floor).
 * A tracker that fails (no answer, failure reason, malformed answer) is
 * kept out of the rotation for a back-off that doubles with each failure
 * (retry_min .. retry_max); when every tracker failed, the next round
 * starts when the first back-off ends.
 *
 * Events: "started" goes to a tracker the first time it is announced to
 * after tracker_set_announce(ts, TRACKER_EVENT_STARTED) (again after a
 * failure: a tracker that refused never counted us); "completed" goes
 * with the next announce after tracker_set_announce(ts, COMPLETED),
 * unless that announce is the tracker's "started" made after the
 * download ended (left=0 says it); "stopped" goes to every tracker that
 * was told "started" (or has a "started" in flight), by
 * tracker_set_stop().
 *
 * Numbers: uploaded and downloaded are what get_stats() reports minus
 * what it reported at the STARTED that began this announce session
 * (what mature clients send: amounts since "started"); left is
 * get_stats()'s as it is.  The key is the same for an info-hash during
 * the whole run of the process (a new set of the same torrent keeps it),
 * derived from a per-process random secret.
 *
 * Failure and warning messages, counts and times are kept per tracker and
 * shown by tracker_set_to_json() (the result of torrent.trackers).
 */
#ifndef TD_DAEMON_TRACKER_H
#define TD_DAEMON_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/tracker.h"

struct ev_loop;
struct json_object;
struct meta_tier;
struct trk_http;
struct trk_udp;
struct tracker_set;

#define TRACKER_SET_MAX_TRACKERS 256    /* URLs kept of one torrent */
#define TRACKER_SET_URL_MAX 2048
#define TRACKER_SET_NUMWANT 200
#define TRACKER_SET_DEFAULT_INTERVAL 1800.0
#define TRACKER_SET_INTERVAL_FLOOR 60.0
#define TRACKER_SET_INTERVAL_MAX (6 * 3600.0)
#define TRACKER_SET_RETRY_MIN 60.0
#define TRACKER_SET_RETRY_MAX 3600.0
#define TRACKER_SET_HTTP_TIMEOUT_MS 30000u

/* What a set needs from its torrent. */
struct tracker_set_cbs {
    /* New peers from an announce: addrs[0..n) (AF_INET or AF_INET6),
     * borrowed for the call.  Must not free the set. */
    void (*on_peers)(void *arg, const struct sockaddr_storage *addrs,
                     size_t n);
    /* The torrent's counters for the next announce: payload bytes
     * (all-time totals are fine: the set reports the difference since
     * STARTED) and bytes missing of the whole torrent. */
    void (*get_stats)(void *arg, uint64_t *uploaded, uint64_t *downloaded,
                      uint64_t *left);
    void *arg;
};

/* Shared by the sets of a session; everything borrowed, and must outlive
 * the sets.  Zero times mean the defaults above. */
struct tracker_set_config {
    struct ev_loop *loop;
    struct trk_http *http;       /* NULL: http(s) trackers are skipped */
    struct trk_udp *udp;         /* NULL: udp trackers are skipped */
    const char *bind_addr;       /* numeric source address for HTTP, or NULL
                                    (trk_udp has its own) */
    uint8_t peer_id[TRACKER_PEER_ID_LEN];
    uint16_t port;               /* our listen port */
    int32_t numwant;             /* 0: TRACKER_SET_NUMWANT */
    unsigned http_timeout_ms;
    double interval_floor;       /* the shortest interval we accept */
    double default_interval;     /* when a tracker gives none */
    double retry_min, retry_max; /* back-off of a failing tracker */
};

/* Make the set for tiers[0..n_tiers) (URLs copied; empty tiers and URLs
 * beyond TRACKER_SET_MAX_TRACKERS are dropped).  cfg and cbs are copied
 * (the pointers in them stay borrowed).  Nothing is sent until
 * tracker_set_announce(ts, TRACKER_EVENT_STARTED).  Returns 0 or -ENOMEM. */
int tracker_set_new(struct tracker_set **ret,
                    const struct tracker_set_config *cfg,
                    const struct meta_tier *tiers, size_t n_tiers,
                    const uint8_t info_hash[TRACKER_HASH_LEN],
                    const struct tracker_set_cbs *cbs);

/* Cancel everything (no callbacks, no "stopped" sent: use
 * tracker_set_stop() first for that) and free.  Accepts NULL. */
void tracker_set_free(struct tracker_set *ts);

/* STARTED: begin announcing (again after a stop), now.  COMPLETED: tell
 * the trackers, now.  NONE: announce now, or when the min interval of the
 * current tracker allows.  STOPPED: tracker_set_stop() with a 5 s timeout
 * and no callback.  Returns 0, or -EINVAL for NONE/COMPLETED while
 * stopped. */
int tracker_set_announce(struct tracker_set *ts, enum tracker_event event);

typedef void (*tracker_set_done_t)(void *arg);

/* Stop announcing and send "stopped" to every tracker that was told
 * "started", each with one try, all at once.  done (may be NULL) is called
 * from the loop once all have answered or failed, or after timeout
 * seconds, whichever comes first; never from inside this call.  done may
 * free the set.  A second stop (or a STARTED) while one is in flight
 * replaces it: the earlier done is not called. */
void tracker_set_stop(struct tracker_set *ts, double timeout,
                      tracker_set_done_t done, void *arg);

/* Scrape one tracker: the first that works (answered its last announce),
 * else the first, in tier order, that has a scrape URL (HTTP, BEP 48) or
 * is UDP; the counts land in its entry.  Returns 0, -EBUSY if
 * a scrape is in flight, -ENOTSUP if no tracker can be scraped, or a
 * negative errno. */
int tracker_set_scrape(struct tracker_set *ts);

/* The trackers as a JSON array of objects, in tier order:
 *   {"url", "tier", "status": "not contacted" | "announcing" | "working" |
 *    "error" | "unsupported" | "stopped" (told so), "last_announce", "next_announce" (Unix
 *    seconds or null), "interval", "min_interval", "seeders", "leechers",
 *    "downloaded" (null when unknown), "peers" (peers of the last
 *    announce), "peers_total", "fails", "last_error", "warning",
 *    "message" (the error, else the warning, else null), "last_scrape"}
 * A new reference, or NULL without memory. */
struct json_object *tracker_set_to_json(const struct tracker_set *ts);

/* Number of trackers, and whether an announce is in flight (for tests). */
size_t tracker_set_count(const struct tracker_set *ts);
bool tracker_set_busy(const struct tracker_set *ts);

#endif
