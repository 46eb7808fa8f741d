/* dht — a Mainline DHT node (BEP 5, 32, 42, 43) as a pure library.
 *
 * Thread: reactor only.  No sockets, no clock, no logging, no globals
 * (jech/dht's shape without its global state): the caller owns the UDP
 * socket and the timer.  It hands every datagram it receives to
 * dht_receive(), calls dht_periodic() when the deadline it returned comes,
 * and sends what the library asks through the send callback given to
 * dht_new().  Every time is "now" in milliseconds of a monotonic clock,
 * passed in by the caller; every random choice comes from the seed in
 * struct dht_config, so a simulated network is exactly reproducible.
 *
 * One struct dht serves one address family (4 or 6), as in libtorrent:
 * the daemon makes one per UDP socket.  dht_set_sibling() joins a v4 and a
 * v6 node so that each answers BEP 32 "want" for the other family.
 *
 * What it does:
 * - Routing table: k-buckets (DHT_K = 8) indexed by the length of the
 *   prefix shared with our id; only the last bucket (the one holding our
 *   id) splits.  A node enters the table only once it has answered one of
 *   our queries (so a spoofed source never gets in); a node that queries
 *   us and is not known is pinged (bounded) and added on its answer.
 *   Node states: good (answered in the last DHT_GOOD_MS, or answered ever
 *   and queried us in the last DHT_GOOD_MS), bad (DHT_MAX_FAILS queries in
 *   a row unanswered), questionable otherwise.  A full bucket replaces a
 *   bad node at once, keeps newcomers in a replacement cache and pings
 *   its questionable nodes, which are replaced when they fail.  Buckets
 *   quiet for DHT_REFRESH_MS, or not full for DHT_FILL_MS since their
 *   last refresh (and right after a bootstrap or a split), are refreshed
 *   by a find_node lookup of a random id in their range, one at a time.
 * - Lookups (find_node, get_peers, announce): DHT_ALPHA queries in flight,
 *   a shortlist of the DHT_LOOKUP_NODES closest candidates; done when the
 *   DHT_K closest live candidates have all answered (nothing closer is
 *   left to ask), or after DHT_LOOKUP_MAX_QUERIES queries or
 *   DHT_LOOKUP_MAX_MS.  Peers are delivered as they arrive; the done
 *   callback gets the closest nodes that answered, with their tokens.  An
 *   announce then sends announce_peer to those with a token.
 * - Serving: ping, find_node (nodes/nodes6 per "want"), get_peers (values
 *   from storage when there are some, nodes always, as libtorrent and
 *   jech/dht do, and a token), announce_peer (token
 *   checked: SHA-1 of a secret rotated every DHT_SECRET_MS and the
 *   sender's IP, current or previous secret), unknown methods answered
 *   204, malformed queries 203.
 * - Storage of announced peers per info-hash, expiring after
 *   DHT_PEER_TTL_MS, bounded per info-hash and in total.
 * - BEP 42: dht_id_from_ip() makes a compliant id; other nodes' ids are
 *   checked against their address, counted, and compliant nodes preferred
 *   in full buckets (never hard-rejected).  Responses carry "ip" (the
 *   querier's address as we see it); the "ip" others report of us is
 *   counted (dht_status().external_ip) for the daemon to choose an id.
 * - BEP 43 read-only mode: our queries carry ro=1 and we answer nothing;
 *   nodes that send ro=1 are answered but never enter our table.
 * - Abuse: a token bucket per source IP (an IPv6 source is its /64;
 *   DHT_RATE_SLOTS entries) drops floods before parsing, and a response to
 *   an address that has never answered us is trimmed to DHT_AMPLIFY_MAX
 *   times the query's size (nodes6, then nodes, then values are shed).
 *   Unknown queriers are pinged back at most once at a time each, and at
 *   most DHT_JOIN_PINGS at once.
 *
 * Callbacks (send, peers, done) must not call dht_free(); the lookup
 * callbacks may start or cancel lookups.
 *
 * Wiring it into the reactor (one struct dht per UDP socket):
 *   cfg.id from dht_saved_id() of the state file, else dht_id_from_ip()
 *   with the external address if known, else random bytes; cfg.seed from
 *   RAND_bytes(); cfg.send does a non-blocking sendto() (a datagram that
 *   cannot be sent now is dropped: KRPC is lossy by design).
 *   d = dht_new(&cfg, now_ms); dht_load() the saved nodes;
 *   dht_bootstrap() with the configured routers; arm a timer at
 *   dht_periodic(d, now_ms).  On each readable socket: recvfrom() in a
 *   bounded batch, convert the sockaddr to struct krpc_addr, and
 *   dht_receive().  When the timer fires: re-arm it at dht_periodic().
 *   Torrents call dht_lookup(DHT_LOOKUP_ANNOUNCE) every ~15 min with
 *   their peer port (implied_port if it is the DHT socket's port) and
 *   take peers from the on_peers callback.  At stop: dht_save() into
 *   the state directory, then dht_free().
 *
 * Costs: dht_receive and dht_periodic are O(table + lookups + pending
 * queries) at worst, all bounded by the constants below (a few thousand
 * entries); storage lookups are O(stored info-hashes).
 */
#ifndef TD_DAEMON_DHT_H
#define TD_DAEMON_DHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/krpc.h"

struct buf;

#define DHT_ID_LEN KRPC_ID_LEN
#define DHT_K 8                         /* bucket size */
#define DHT_BUCKETS 160                 /* one per shared-prefix length */
#define DHT_REPLACEMENTS 8              /* replacement cache per bucket */
#define DHT_ALPHA 3                     /* lookup queries in flight */
#define DHT_LOOKUP_NODES 32             /* lookup shortlist */
#define DHT_LOOKUP_MAX_QUERIES 64       /* queries sent by one lookup */
#define DHT_LOOKUP_MAX_MS 30000         /* a lookup's whole life */
#define DHT_MAX_LOOKUPS 64              /* lookups at once */
#define DHT_MAX_PENDING 512             /* our queries awaiting an answer */
#define DHT_RPC_TIMEOUT_MS 3000         /* a query unanswered: failed */
#define DHT_GOOD_MS (15 * 60 * 1000)    /* "good" window (BEP 5) */
#define DHT_REFRESH_MS (15 * 60 * 1000) /* refresh a bucket this quiet */
#define DHT_FILL_MS 60000               /* refresh a bucket not full */
#define DHT_MAX_FAILS 3                 /* failures in a row: bad */
#define DHT_PING_INTERVAL_MS 60000      /* re-ping a questionable node */
#define DHT_MAINT_MS 1000               /* maintenance tick */
#define DHT_MAINT_PINGS 4               /* maintenance pings per tick */
#define DHT_JOIN_PINGS 16             /* pings to unknown queriers in flight */
#define DHT_BOOTSTRAP_MAX 64          /* addresses per dht_bootstrap */
#define DHT_SECRET_MS (5 * 60 * 1000) /* token secret rotation */
#define DHT_TOKEN_LEN 8               /* bytes of our tokens */
#define DHT_PEER_TTL_MS (30 * 60 * 1000) /* stored peer lifetime */
#define DHT_STORE_MAX_HASHES 1024        /* info-hashes stored */
#define DHT_STORE_MAX_PER_HASH 128       /* peers stored per info-hash */
#define DHT_STORE_MAX_PEERS 16384        /* peers stored in total */
#define DHT_MAX_VALUES_REPLY 64          /* peers in one get_peers answer */
#define DHT_RATE_SLOTS 256               /* per-IP buckets (hash table) */
#define DHT_RATE_PROBE 8                 /* slots probed per IP */
#define DHT_RATE_PER_SEC 20              /* datagrams per IP per second */
#define DHT_RATE_BURST 40                /* bucket depth */
#define DHT_AMPLIFY_MAX 4    /* unverified: answer <= 4x the query */
#define DHT_SAVE_NODES 64    /* nodes kept by dht_save */
#define DHT_STATS_LOOKUPS 64 /* lookup times kept for the median */

struct dht;

/* Send one datagram (len <= KRPC_MAX_DATAGRAM) to addr.  The bytes are
 * borrowed for the call.  The callback must not call back into the dht. */
typedef void (*dht_send_t)(void *ud, const struct krpc_addr *to,
                           const uint8_t *data, size_t len);

struct dht_config {
    uint8_t id[DHT_ID_LEN]; /* our node id (dht_id_from_ip, or saved) */
    uint8_t family;         /* 4 or 6 */
    bool read_only;         /* BEP 43 */
    uint8_t version[4];     /* "v"; all zero: "TD" 0 1 */
    uint8_t seed[32];       /* randomness: tids, secrets, refresh ids */
    unsigned rate_per_sec;  /* 0: DHT_RATE_PER_SEC */
    unsigned rate_burst;    /* 0: DHT_RATE_BURST */
    dht_send_t send;
    void *send_ud; /* borrowed: outlives the dht */
};

/* Create a node.  Returns NULL on allocation failure or a bad config
 * (family not 4/6, no send).  Free with dht_free(). */
struct dht *dht_new(const struct dht_config *cfg, uint64_t now);

/* Free everything; ends running lookups without calling their callbacks.
 * Accepts NULL. */
void dht_free(struct dht *d);

/* Let v4 and v6 nodes answer "want" for each other (either may be NULL to
 * unlink).  Both must outlive the link. */
void dht_set_sibling(struct dht *d4, struct dht *d6);

/* One datagram from addr (any bytes, any length).  Returns 0 when it was
 * handled (answered, matched, or ignored on purpose: another family, port
 * 0, an unknown transaction, a query to a read-only node), a negative
 * enum krpc_error when it was malformed (already answered 203 when that
 * was possible), or 1 when it was dropped by the rate limit.  May send
 * (through the callback) and call lookup callbacks. */
int dht_receive(struct dht *d, const struct krpc_addr *from,
                const uint8_t *data, size_t len, uint64_t now);

/* Timeouts, lookups, refreshes, pings, secret rotation, expiry.  Returns
 * the time at which to call it again (never later than now + DHT_MAINT_MS).
 * Queries sent by dht_receive or new lookups never need an earlier call. */
uint64_t dht_periodic(struct dht *d, uint64_t now);

/* Ping addr; it enters the table if it answers.  Returns 0, -ENOSPC
 * (too many queries pending), -EINVAL (wrong family, port 0) or
 * -ENOMEM. */
int dht_add_node(struct dht *d, const struct krpc_addr *addr, uint64_t now);

/* Join the network: a find_node lookup of our own id seeded with these
 * addresses (at most DHT_BOOTSTRAP_MAX used; those of another family or
 * with port 0 are skipped) and the table's nodes.  Returns the lookup
 * handle (> 0) or a negative errno. */
int dht_bootstrap(struct dht *d, const struct krpc_addr *addrs, size_t n,
                  uint64_t now);

/* --- lookups --- */

enum dht_lookup_kind {
    DHT_LOOKUP_FIND_NODE,
    DHT_LOOKUP_GET_PEERS,
    DHT_LOOKUP_ANNOUNCE, /* get_peers, then announce_peer */
    DHT_LOOKUP_KIND_MAX
};

/* Peers (values) from one answer; they may repeat across calls. */
typedef void (*dht_peers_t)(void *ud, int handle,
                            const uint8_t info_hash[DHT_ID_LEN],
                            const struct krpc_addr *peers, size_t n);

struct dht_result_node {
    struct krpc_node node;
    uint8_t token[KRPC_TOKEN_MAX];
    uint8_t token_len; /* 0: none (find_node, or not given) */
};

struct dht_lookup_result {
    int handle;
    uint8_t kind; /* enum dht_lookup_kind */
    uint8_t target[DHT_ID_LEN];
    bool timed_out;   /* ended by time or query bounds */
    unsigned queries; /* queries sent */
    unsigned answers;
    unsigned peers;     /* values received (with repeats) */
    unsigned announced; /* announce_peer sent */
    uint64_t ms;        /* duration */
    size_t n_nodes;     /* closest that answered, nearest first */
    struct dht_result_node nodes[DHT_K];
};

/* The end of a lookup: res is borrowed for the call.  The callback may
 * start new lookups. */
typedef void (*dht_done_t)(void *ud, const struct dht_lookup_result *res);

struct dht_lookup_params {
    uint8_t kind;               /* enum dht_lookup_kind */
    uint8_t target[DHT_ID_LEN]; /* node id or info-hash */
    uint16_t port;              /* announce: our peer port */
    bool implied_port;          /* announce: let them use our UDP port */
    dht_peers_t on_peers;       /* may be NULL */
    dht_done_t on_done;         /* may be NULL */
    void *ud;                   /* borrowed: outlives the lookup */
};

/* Start a lookup.  Returns a handle > 0, or -ENOSPC (DHT_MAX_LOOKUPS
 * running), -EINVAL.  With an empty table the lookup ends (done callback)
 * at the next dht_periodic. */
int dht_lookup(struct dht *d, const struct dht_lookup_params *p, uint64_t now);

/* Stop a lookup without calling its callbacks.  Returns 0 or -ENOENT. */
int dht_lookup_cancel(struct dht *d, int handle);

/* --- BEP 42 --- */

/* CRC-32C (Castagnoli) of p[0..n). */
uint32_t dht_crc32c(const uint8_t *p, size_t n);

/* A node id for our external address ip (family 4 or 6): the top 21 bits
 * from crc32c of the masked address with r = rnd[19] & 7, byte 19 = rnd[19],
 * the rest from rnd. */
void dht_id_from_ip(uint8_t ret_id[DHT_ID_LEN], const struct krpc_addr *ip,
                    const uint8_t rnd[DHT_ID_LEN]);

/* True if id is BEP 42-compliant for ip, or ip is local (private, loopback,
 * link-local: exempt). */
bool dht_id_check(const uint8_t id[DHT_ID_LEN], const struct krpc_addr *ip);

/* --- saving state --- */

/* Append our id and up to DHT_SAVE_NODES good nodes (bencoded: "id",
 * "nodes" or "nodes6") to b.  Returns 0 or a negative errno from buf. */
int dht_save(const struct dht *d, struct buf *b);

/* The id from saved state, to pass in struct dht_config.  Returns 0 or
 * -EINVAL. */
int dht_saved_id(const void *data, size_t len, uint8_t ret_id[DHT_ID_LEN]);

/* Join the network again through the nodes of saved state (those of our
 * family): dht_bootstrap() with them.  Returns how many were used (0:
 * none, no lookup started), -EINVAL for data that is not saved state, or
 * dht_bootstrap's error. */
int dht_load(struct dht *d, const void *data, size_t len, uint64_t now);

/* --- status --- */

struct dht_status {
    uint8_t id[DHT_ID_LEN];
    uint8_t family;
    bool read_only;
    unsigned n_buckets;
    uint8_t bucket_nodes[DHT_BUCKETS]; /* per bucket: nodes */
    uint8_t bucket_good[DHT_BUCKETS];  /* per bucket: good nodes */
    unsigned good, questionable, bad;  /* in the table */
    unsigned replacements;             /* in replacement caches */
    unsigned stored_hashes, stored_peers;
    unsigned lookups_running;
    uint64_t lookups_started, lookups_finished;
    uint64_t lookup_queries;   /* queries sent by lookups */
    uint64_t lookup_median_ms; /* of the last DHT_STATS_LOOKUPS
                                * lookups started by the caller */
    uint64_t queries_sent, queries_received, responses_received;
    uint64_t errors_received, timeouts, malformed, rate_limited;
    uint64_t non_compliant; /* BEP 42 ids that did not match */
    uint64_t bytes_sent, bytes_received;
    uint64_t announces_stored, announces_refused;
    bool has_external_ip;
    struct krpc_addr external_ip; /* most reported "ip" */
    unsigned external_ip_votes;
};

/* Fill ret with the state at time now (which nodes are good). */
void dht_status(const struct dht *d, uint64_t now, struct dht_status *ret);

/* Good nodes of the table closest to target, nearest first (at most n).
 * Returns how many were written. */
size_t dht_closest(const struct dht *d, const uint8_t target[DHT_ID_LEN],
                   struct krpc_node *ret, size_t n, uint64_t now);

#endif
