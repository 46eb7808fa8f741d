/* trksrv — the built-in tracker: a swarm store, an HTTP server (announce,
 * scrape) and a UDP server (BEP 15) on config `tracker_listen`.
 *
 * Thread: reactor only.
 *
 * The store keeps, per info-hash, the peers that announced it (address,
 * port, peer id, seed or not, when last seen) and the number of completed
 * downloads.  A peer that has not announced for twice the interval is
 * dropped (a bounded sweep each second, and on every announce of its
 * swarm).  Memory is bounded: at most TRKSRV_MAX_PEERS_PER_HASH peers per
 * info-hash and tracker_max_peers in all; a peer that does not fit is
 * answered but not recorded.  A swarm with no peers is forgotten (and its
 * download count with it).  Answers hold a random sample of numwant peers
 * (default TRKSRV_NUMWANT_DEFAULT, at most TRKSRV_NUMWANT_MAX), never the
 * requester, and only leechers for a seed.  The "ip" parameter of an
 * announce is ignored: a peer is recorded at the address it announced
 * from.
 *
 * The HTTP server reads one request head of at most 8 KiB per connection,
 * answers and closes.  A connection has TRKSRV_HTTP_TIMEOUT_S from accept
 * to the end of its answer; at most TRKSRV_MAX_CONNS are open, at most
 * TRKSRV_MAX_CONNS_PER_ADDR from one address, and when all are taken the
 * oldest is closed for the newcomer, so that slow clients cannot lock
 * others out.  The UDP server reads at most TRKSRV_UDP_BATCH datagrams per
 * wake-up; connection ids carry no state (common/trkserve.h).
 *
 * Swarms the store has fewer peers for than an announce asks are filled
 * up from a source of peers (struct trksrv_source below: the DHT), whose
 * first lookup for an info-hash an answer may wait for.
 *
 * With tracker_allowlist set, only the info-hashes listed in that file are
 * served (others get a failure reason / UDP error); the file is read at
 * start, by trksrv_reload() (SIGHUP), and within TRKSRV_SWEEP_S after the
 * key changes at run time.
 */
#ifndef TD_DAEMON_TRKSRV_H
#define TD_DAEMON_TRKSRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/trkserve.h"

struct config;
struct ev_loop;
struct trksrv;
struct trksrv_store;

#define TRKSRV_MAX_PEERS_PER_HASH 2000
#define TRKSRV_NUMWANT_DEFAULT 50
#define TRKSRV_NUMWANT_MAX 200
#define TRKSRV_MAX_CONNS 256
#define TRKSRV_MAX_CONNS_PER_ADDR 32
#define TRKSRV_HTTP_TIMEOUT_S 10.0
#define TRKSRV_UDP_BATCH 64
#define TRKSRV_ALLOWLIST_MAX 200000   /* info-hashes in the allowlist */
#define TRKSRV_SWEEP_S 1.0            /* expiry sweep period */
#define TRKSRV_SWEEP_BUDGET 4096      /* peers looked at per sweep */
#define TRKSRV_SOURCE_WAIT_S 3.0      /* an answer held for the source */
#define TRKSRV_UDP_HELD 256           /* UDP answers held at once */

/* --- The swarm store: no I/O, no libev (tests/unit/test_trksrv.c). --- */

/* A new empty store; seed drives the sampling (0: a random seed).
 * Returns 0 or -ENOMEM. */
int trksrv_store_new(struct trksrv_store **ret, uint64_t seed);
void trksrv_store_free(struct trksrv_store *st);

/* Peers kept in all and per info-hash (clamped to
 * TRKSRV_MAX_PEERS_PER_HASH); applies to new peers only. */
void trksrv_store_set_limits(struct trksrv_store *st, size_t max_total,
                             size_t max_per_hash);

struct trksrv_answer {
    uint64_t complete, incomplete, downloaded;
    struct tracker_peer *peers; /* borrowed: valid until the next call */
    size_t n_peers;
};

enum trksrv_announce_result {
    TRKSRV_STORED = 0,   /* recorded, updated or (stopped) removed */
    TRKSRV_NOT_STORED = 1, /* a limit was reached: answered only */
};

/* Record the announce a of the peer at from (family and address; the
 * port is a->port) at time now (seconds), dropping peers of the swarm not
 * seen for expire_after seconds, and fill ret with the counts and a
 * sample of peers of family (AF_UNSPEC: both).  Returns an enum
 * trksrv_announce_result. */
int trksrv_store_announce(struct trksrv_store *st,
                          const struct trkserve_addr *from,
                          const struct trkserve_announce *a, double now,
                          double expire_after, int family,
                          struct trksrv_answer *ret);

/* The answer trksrv_store_announce() would give to a from `from` at now,
 * without recording anything nor dropping peers (those not seen for
 * expire_after seconds are left out of the sample). */
void trksrv_store_sample(struct trksrv_store *st,
                         const struct trkserve_addr *from,
                         const struct trkserve_announce *a, double now,
                         double expire_after, int family,
                         struct trksrv_answer *ret);

/* The counts of one info-hash (zeros when unknown) into ret. */
void trksrv_store_scrape(const struct trksrv_store *st, const uint8_t *hash,
                         struct trkserve_scrape_file *ret);

/* Drop peers not seen for expire_after seconds, looking at about budget
 * peers from where the last call stopped.  Returns the peers dropped. */
size_t trksrv_store_expire(struct trksrv_store *st, double now,
                           double expire_after, size_t budget);

size_t trksrv_store_peers(const struct trksrv_store *st);
size_t trksrv_store_swarms(const struct trksrv_store *st);

/* --- The server. --- */

/* A source of peers for swarms the store has fewer than numwant of (the
 * DHT: daemon/trkdht.h).  fill() writes at most max peers of family
 * (AF_INET, AF_INET6, or AF_UNSPEC for both) that it has now for
 * info_hash and returns how many; when it has none yet but has started
 * to look, it sets *pending.  The tracker then holds that announce's
 * answer (the HTTP connection, or the UDP reply) until
 * trksrv_source_ready() for the info-hash or TRKSRV_SOURCE_WAIT_S,
 * whichever comes first, and answers with what the store and the source
 * have by then.  At most TRKSRV_UDP_HELD UDP answers are held (beyond
 * that they are given at once); held HTTP answers are bounded by the
 * connections.  Peers from the source are never the requester itself nor
 * repeats of the store's.  fill() is called from the reactor: it must not
 * block nor call into the tracker. */
struct trksrv_source {
    size_t (*fill)(void *arg, const uint8_t *info_hash, int family,
                   struct tracker_peer *out, size_t max, bool *pending);
    void *arg;
};

/* Start the tracker on cfg->tracker_listen (TCP and UDP on the same
 * address and port).  cfg is borrowed and must outlive the tracker (the
 * session's configuration): tracker_interval and tracker_max_peers are
 * read from it when used, so changes apply live.  *ret is NULL (and 0
 * returned) when tracker_listen is empty.  Returns 0 or a negative errno
 * after logging why. */
int trksrv_new(struct trksrv **ret, struct ev_loop *loop,
               const struct config *cfg);

/* Close every socket and free; accepts NULL. */
void trksrv_free(struct trksrv *t);

/* Re-read the allowlist named by the configuration (SIGHUP).  On error
 * the old list is kept.  Accepts NULL.  Returns 0 or a negative errno. */
int trksrv_reload(struct trksrv *t);

/* Set the source of extra peers (copied), or clear it (src NULL: the
 * answers held for it are given now).  Accepts t NULL. */
void trksrv_set_source(struct trksrv *t, const struct trksrv_source *src);

/* The source has more for info_hash (or gave up looking): give the
 * answers held for it now.  Accepts t NULL. */
void trksrv_source_ready(struct trksrv *t, const uint8_t *info_hash);

/* The port both sockets are bound to. */
uint16_t trksrv_port(const struct trksrv *t);

#endif
