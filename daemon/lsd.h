/* lsd — BEP 14 Local Service Discovery: announce our torrents on the
 * local network by multicast and learn of peers that announce theirs.
 *
 * Thread: reactor only.
 *
 * Off by default (config `lsd`, restart).  The messages are common/lsd.h;
 * this module is the I/O and the schedule around them:
 * - Socket.  One UDP socket bound to 239.192.152.143:6771 with
 *   SO_REUSEADDR and SO_REUSEPORT (several processes on one host share
 *   the port), IP_ADD_MEMBERSHIP on the interface of the IPv4 address of
 *   config `listen` (the kernel's choice for 0.0.0.0), IP_MULTICAST_IF on
 *   that address (so it is also the source), IP_MULTICAST_TTL 1 (never
 *   routed off the link), IP_MULTICAST_LOOP on (other torrentd on this
 *   host see us: our own messages come back too and are recognised by a
 *   random per-process cookie) and IP_MULTICAST_ALL off.  IPv4 only for
 *   now: an IPv6 `listen` address leaves LSD off (with a warning).
 * - Announces.  Every torrent that runs (downloading, seeding, fetching
 *   metadata) and is not private (BEP 27) is announced at most once per
 *   LSD_INTERVAL_S, in messages of up to LSD_MAX_HASHES info-hashes: a
 *   round over all torrents starts LSD_FIRST_ROUND_S after start and then
 *   every LSD_INTERVAL_S, sending at most LSD_ROUND_MSGS per tick; a
 *   torrent that is added or starts (torrent.added, torrent.state events)
 *   is announced at the next tick (LSD_TICK_S), unless it was announced
 *   within LSD_INTERVAL_S.  The port announced is the port of `listen`;
 *   with port 0 (the kernel's pick, tests) nothing is announced.
 * - Receiving.  At most LSD_RECV_BATCH datagrams per wake-up; each source
 *   address has a token bucket (LSD_SRC_BURST, refilled at LSD_SRC_RATE
 *   per second; LSD_SOURCES of them, least recently seen replaced); bad
 *   messages are counted and logged at debug.  For each info-hash of a
 *   torrent we run (and is not private), the peer (source address, Port)
 *   is remembered (the last LSD_PEERS_PER_HASH per info-hash, for at most
 *   LSD_FOUND_HASHES info-hashes) and passed to the peer callback.
 */
#ifndef TD_DAEMON_LSD_H
#define TD_DAEMON_LSD_H

#include <stdint.h>
#include <sys/socket.h>

struct json_object;
struct lsd;
struct rpc_call;
struct session;

#define LSD_INTERVAL_S 300.0     /* an info-hash at most this often */
#define LSD_FIRST_ROUND_S 2.0    /* the first round, after start */
#define LSD_TICK_S 1.0           /* the schedule's timer */
#define LSD_ROUND_MSGS 4         /* messages a round sends per tick */
#define LSD_SCAN_BUDGET 2048     /* torrents a round looks at per message */
#define LSD_SOON_MAX 256         /* new torrents queued for the next tick */
#define LSD_RECENT_MAX 1024      /* info-hashes remembered as announced */
#define LSD_RECV_BATCH 32        /* datagrams per wake-up */
#define LSD_SOURCES 64           /* sources with a rate limit */
#define LSD_SRC_BURST 16.0       /* messages a source may send at once */
#define LSD_SRC_RATE 1.0         /* ... and then per second */
#define LSD_ALL_BURST 64.0       /* messages from all sources at once */
#define LSD_ALL_RATE 32.0        /* ... and then per second */
#define LSD_PEERS_PER_HASH 8     /* peers remembered per info-hash */
#define LSD_FOUND_HASHES 256     /* info-hashes with peers remembered */

/* A peer announced hash (a torrent of ours, not private) from addr (its
 * source address with the announced Port). */
typedef void (*lsd_peer_t)(void *arg, const uint8_t *info_hash,
                           const struct sockaddr *addr, socklen_t len);

/* Start LSD for session s (which owns the result and outlives it): the
 * socket, the timer, the event subscription.  Returns 0, or -errno after
 * logging why (the caller goes on without LSD). */
int lsd_new(struct lsd **ret, struct session *s);

/* Stop and free; accepts NULL. */
void lsd_free(struct lsd *l);

/* Where discovered peers go (NULL: only remembered for lsd.status). */
void lsd_set_peer_cb(struct lsd *l, lsd_peer_t cb, void *arg);

/* lsd.status: {enabled, port, announces_sent, hashes_announced,
 * messages_in, messages_own, messages_bad, messages_dropped, send_errors,
 * peers: [{info_hash, address, seen_at}]}.  l may be NULL (LSD off).
 * Returns a new object, or NULL without memory. */
struct json_object *lsd_status_json(const struct lsd *l);

/* The control method lsd.status (read-only; see rpc.h). */
void lsd_m_status(struct session *s, struct rpc_call *call,
                  struct json_object *params);

#endif
