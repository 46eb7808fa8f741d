/* trkdht — the DHT as a source of peers for the built-in tracker: for an
 * info-hash that the tracker's store has fewer peers for than an announce
 * asks, a get_peers lookup (without announce_peer) through the daemon's
 * DHT node, whose peers are kept for the announces that follow.  So a
 * tracker answers for swarms it was never told of, and several torrentd
 * trackers see the same swarm: every peer of it that is on the DHT.
 *
 * Thread: reactor only.
 *
 * The cache (pure: no I/O, no clock of its own; tests/unit/test_trkdht.c)
 * keeps, per info-hash, at most TRKDHT_PEERS_MAX peers and when each was
 * last found, for at most TRKDHT_ENTRIES_MAX info-hashes (the one asked
 * for least recently, with no lookup running, makes room).  A lookup for
 * an info-hash is due when it is asked for and no lookup ended within
 * TRKDHT_FRESH_S; at most TRKDHT_LOOKUPS_MAX run at once and at most
 * TRKDHT_LOOKUPS_PER_MIN start in a minute, so that announces of made-up
 * info-hashes cannot turn the tracker into a source of DHT traffic
 * (beyond either bound an answer uses what is cached).  While a lookup
 * runs for an info-hash that has no peers cached and no lookup that
 * reached nodes has ended yet, the source reports "pending", so the
 * tracker holds the answer (TRKSRV_SOURCE_WAIT_S at most) and gives it
 * when the lookup ends; renewals never hold answers.  A
 * lookup that found peers drops those it did not find again.  Entries not
 * asked for within TRKDHT_FORGET_S are dropped.  Work per announce is a
 * scan of at most TRKDHT_ENTRIES_MAX info-hashes and TRKDHT_PEERS_MAX
 * peers.
 *
 * config `tracker_dht` (live) switches it off: the source then gives
 * nothing and starts no lookup.  BEP 27: the tracker cannot tell a
 * private torrent from its info-hash, so a tracker of private swarms
 * should run with tracker_dht off (a lookup tells the DHT the
 * info-hash), or with an allowlist of public ones.
 */
#ifndef TD_DAEMON_TRKDHT_H
#define TD_DAEMON_TRKDHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct dhtsvc;
struct ev_loop;
struct tracker_peer;
struct trkdht;
struct trkdht_cache;
struct trksrv;

#define TRKDHT_ENTRIES_MAX 1024
#define TRKDHT_PEERS_MAX 200
#define TRKDHT_LOOKUPS_MAX 8
#define TRKDHT_LOOKUPS_PER_MIN 120
#define TRKDHT_FRESH_S 300.0
#define TRKDHT_FORGET_S 1800.0

/* --- The cache. --- */

enum trkdht_ask {
    TRKDHT_HAVE,    /* what is cached is fresh enough, or being renewed */
    TRKDHT_WAIT,    /* the first lookup runs: nothing yet */
    TRKDHT_LOOKUP,  /* a lookup is due (*n peers from an older one) */
    TRKDHT_FULL,    /* no room for another info-hash: nothing */
};

/* A new cache of at most max_entries info-hashes (clamped to
 * 1..TRKDHT_ENTRIES_MAX).  Returns 0 or -ENOMEM. */
int trkdht_cache_new(struct trkdht_cache **ret, size_t max_entries);
void trkdht_cache_free(struct trkdht_cache *c);

/* An announce for hash at now wants at most max peers of family
 * (AF_INET, AF_INET6, AF_UNSPEC for both): copy them to out (from a
 * rotating start, so that successive answers differ), set *n, and say
 * whether a lookup is due.  Creates the entry when there is room. */
enum trkdht_ask trkdht_cache_ask(struct trkdht_cache *c, const uint8_t *hash,
                                 double now, int family,
                                 struct tracker_peer *out, size_t max,
                                 size_t *n);

/* A lookup for hash started at now.  No-op when the entry is gone. */
void trkdht_cache_started(struct trkdht_cache *c, const uint8_t *hash,
                          double now);

/* The lookup for hash ended at now; reached: some node answered (else it
 * is due again sooner, and what was cached stays).  A lookup that reached
 * nodes and found peers drops the peers it did not find again.  No-op
 * when the entry is gone. */
void trkdht_cache_ended(struct trkdht_cache *c, const uint8_t *hash,
                        double now, bool reached);

/* Peers found for hash (sockaddr_in / sockaddr_in6; others ignored), at
 * now.  Returns the peers that were new. */
size_t trkdht_cache_add(struct trkdht_cache *c, const uint8_t *hash,
                        double now, const struct sockaddr_storage *addrs,
                        size_t n);

/* Drop entries not asked for since now - TRKDHT_FORGET_S (none with a
 * lookup running).  Returns how many. */
size_t trkdht_cache_forget(struct trkdht_cache *c, double now);

/* Entries and peers cached. */
size_t trkdht_cache_entries(const struct trkdht_cache *c);
size_t trkdht_cache_peers(const struct trkdht_cache *c);

/* --- The source. --- */

/* Become t's source of peers, looking up through dht (both borrowed:
 * they outlive the trkdht; cfg is the session's, read when used).
 * Returns 0 or -ENOMEM. */
int trkdht_new(struct trkdht **ret, struct ev_loop *loop,
               const struct config *cfg, struct dhtsvc *dht,
               struct trksrv *t);

/* Stop being t's source (answers held are given), cancel the lookups,
 * free.  Accepts NULL. */
void trkdht_free(struct trkdht *d);

#endif
