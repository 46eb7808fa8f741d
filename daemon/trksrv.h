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
 * With tracker_allowlist set, only the info-hashes listed in that file are
 * served (others get a failure reason / UDP error); the file is read at
 * start, by trksrv_reload() (SIGHUP), and within TRKSRV_SWEEP_S after the
 * key changes at run time.
 */
#ifndef TD_DAEMON_TRKSRV_H
#define TD_DAEMON_TRKSRV_H

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

/* Extra peers for an info-hash the store has too few for (the DHT, once
 * it is wired): write at most max peers of family (AF_INET, AF_INET6 or
 * AF_UNSPEC for both) to out and return how many.  Called synchronously
 * from the reactor; must not block. */
typedef size_t (*trksrv_lookup_t)(void *arg, const uint8_t *info_hash,
                                  int family, struct tracker_peer *out,
                                  size_t max);

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

/* Set (or clear, fn NULL) the lookup hook. */
void trksrv_set_lookup(struct trksrv *t, trksrv_lookup_t fn, void *arg);

/* The port both sockets are bound to. */
uint16_t trksrv_port(const struct trksrv *t);

#endif
