/* choker — whom a torrent uploads to: tit-for-tat, optimistic unchoke,
 * snub detection (BEP 3, mainline and libtorrent behaviour).
 *
 * Thread: reactor only.  No I/O, no clock, no logging: the caller owns the
 * timer, passes "now" (monotonic milliseconds) and applies the decisions,
 * like jech/dht.  One choker per torrent.
 *
 * The rules:
 * - Every CHOKER_RECHOKE_MS (10 s) the regular slots are given again.
 *   While downloading, the upload_slots interested peers that sent us the
 *   most over the last 20 s (the caller's download_rate, a 20 s meter) are
 *   unchoked: tit-for-tat.  While seeding, those we upload to fastest
 *   (upload_rate) are unchoked: libtorrent's "fastest upload" seeding
 *   choker, chosen over round robin because it puts the upload capacity
 *   where it travels fastest; the optimistic slot still gives every other
 *   peer its turn.  Ties (all rates 0 at the start) go to peers already
 *   unchoked, so that slots do not flap, then to the longest connected.
 * - Every CHOKER_OPTIMISTIC_MS (30 s) the optimistic slot moves to another
 *   choked interested peer, chosen at random; peers connected for less
 *   than CHOKER_NEW_PEER_MS are three times as likely to be chosen, so
 *   that newcomers get their first pieces (mainline).  When the optimistic
 *   peer leaves or loses interest the slot is filled at the next run.
 * - A peer is snubbed when we are interested in it, it has unchoked us,
 *   and it has sent no block for CHOKER_SNUB_MS (60 s).  Snubbed peers get
 *   no regular slot (they may still be the optimistic one).
 * - Peers that are not interested in us are choked: they have nothing to
 *   ask for; when one becomes interested, the next choker_run() gives it a
 *   free regular slot at once, if there is one, without waiting for the
 *   rechoke.
 *
 * Usage: choker_peer_add() when a peer connects, choker_peer_update()
 * whenever its state or rates change (at least before each rechoke),
 * choker_run() when choker_next_deadline() is reached and after updates,
 * choker_peer_remove() when it goes.  choker_run() returns the changes
 * (choke or unchoke one peer) for the caller to send.
 *
 * Costs: add, remove, update, the queries and choker_next_deadline() are
 * O(1) (add amortised); choker_run() is O(peers), plus a sort, O(peers log
 * peers), when it rechokes or fills free slots.  It never allocates.
 */
#ifndef TD_DAEMON_CHOKER_H
#define TD_DAEMON_CHOKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHOKER_RECHOKE_MS 10000
#define CHOKER_OPTIMISTIC_MS 30000
#define CHOKER_SNUB_MS 60000
#define CHOKER_NEW_PEER_MS 60000
#define CHOKER_NEW_PEER_WEIGHT 3
#define CHOKER_SLOTS_DEFAULT 4
#define CHOKER_SLOTS_MAX 1000
#define CHOKER_PEERS_MAX 65535

struct choker;

struct choker_params {
    unsigned upload_slots; /* regular slots; 0 = CHOKER_SLOTS_DEFAULT */
    bool no_optimistic;    /* no optimistic slot (one by default) */
    uint64_t seed;         /* for the optimistic draw (deterministic) */
};

/* What the caller knows of a peer; passed whole to choker_peer_update(). */
struct choker_peer_info {
    bool interested;       /* it is interested in us */
    bool am_interested;    /* we are interested in it */
    bool choking_us;       /* it chokes us */
    uint64_t down_rate;    /* bytes/s it sends us (20 s meter) */
    uint64_t up_rate;      /* bytes/s we send it (20 s meter) */
    int64_t last_block_ms; /* when it last sent us a block; 0 = never */
};

struct choker_decision {
    int peer;     /* the handle from choker_peer_add() */
    uint32_t tag; /* the caller's tag of that peer */
    bool unchoke; /* true: send UNCHOKE, false: send CHOKE */
};

/* A new choker (params may be NULL: defaults).  Returns 0 or -ENOMEM. */
int choker_new(struct choker **ret, const struct choker_params *params);

/* Free it; accepts NULL. */
void choker_free(struct choker *c);

/* Switch between downloading (tit-for-tat on download rates) and seeding
 * (upload rates).  The next choker_run() rechokes at once. */
void choker_set_seeding(struct choker *c, bool seeding);

/* Change the number of regular upload slots (0 = the default); the next
 * choker_run() rechokes at once. */
void choker_set_slots(struct choker *c, unsigned upload_slots);

/* Add a peer, choked, not interested.  tag is the caller's own id of the
 * peer, returned in decisions.  Returns a handle >= 0 (small, reused after
 * remove), or -ENOMEM, or -ENOSPC past CHOKER_PEERS_MAX. */
int choker_peer_add(struct choker *c, uint32_t tag, int64_t now_ms);

/* Forget a peer.  If it held a slot, the next choker_run() fills it. */
void choker_peer_remove(struct choker *c, int peer);

/* New state and rates of a peer. */
void choker_peer_update(struct choker *c, int peer,
                        const struct choker_peer_info *info, int64_t now_ms);

/* Is the peer snubbed at now_ms (see above)? */
bool choker_peer_snubbed(const struct choker *c, int peer, int64_t now_ms);

/* Is the peer unchoked by us (after the decisions returned so far)? */
bool choker_peer_unchoked(const struct choker *c, int peer);

/* Rechoke if a rechoke is due (every CHOKER_RECHOKE_MS, or after a mode or
 * slot change), rotate the optimistic slot if that is due, and in any case
 * fill free slots and choke peers that lost interest.  Writes at most max
 * decisions to out (max >= the number of peers is always enough; with
 * less, the remaining changes are returned by the next calls).  Returns
 * the number written. */
size_t choker_run(struct choker *c, int64_t now_ms, struct choker_decision *out,
                  size_t max);

/* When choker_run() must be called next at the latest (monotonic ms). */
int64_t choker_next_deadline(const struct choker *c, int64_t now_ms);

#endif
