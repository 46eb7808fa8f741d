/* magnet_fetch — BEP 9 for one magnet link: which peer to ask for which
 * piece of the info dictionary, putting the pieces together, and checking
 * the whole on a worker thread.
 *
 * Thread: reactor only; the check (SHA-1 against the info-hash, building
 * the .torrent and parsing it) runs on the worker given to mfetch_new().
 *
 * The engine feeds it what the peers of a torrent in state metadata say:
 * mfetch_peer() after each extension handshake (the peer's ut_metadata id
 * and metadata_size), mfetch_data()/mfetch_reject() for the answers,
 * mfetch_peer_gone() when a peer closes, mfetch_tick() once a second.
 * It sends the requests itself (peer_send_metadata_request), at most
 * MFETCH_INFLIGHT per peer, never past EXT_METADATA_MAX, and only to
 * peers whose metadata_size is the one being assembled (the first one
 * seen; another size is tried only when nobody with the first is left
 * and nothing has been assembled).  A peer that rejects or lets a request
 * time out is rested for MFETCH_REST_MS (others are asked), and after
 * MFETCH_STRIKES such strikes is not asked again; one that sends a piece
 * of the wrong size is not asked again either.  A dictionary that does
 * not hash to the info-hash: if one peer sent all of it, that peer is not
 * asked again; if several did, each gets a strike and from then on the
 * pieces come from one peer at a time (so that the next failure names
 * the liar).
 *
 * When every piece is in, the dictionary moves to a worker job that
 * checks it, builds a .torrent (the info dictionary, with the magnet's
 * trackers as announce/announce-list) and parses it with meta_parse();
 * on success done(arg, meta, raw, len) is called on the reactor with
 * ownership of meta and raw; on failure the fetch starts over.  done may
 * free the fetch (mfetch_free) from inside the call.
 */
#ifndef TD_DAEMON_MAGNET_FETCH_H
#define TD_DAEMON_MAGNET_FETCH_H

#include <stddef.h>
#include <stdint.h>

struct meta_info;
struct mfetch;
struct peer;
struct worker;

#define MFETCH_SOURCES_MAX 64   /* peers remembered as metadata sources */
#define MFETCH_INFLIGHT 4       /* requests in flight per peer */
#define MFETCH_TIMEOUT_MS 15000 /* a request unanswered this long */
#define MFETCH_REST_MS 10000    /* a peer that rejected rests this long */
#define MFETCH_STRIKES 3        /* rejects and timeouts before giving up */
#define MFETCH_TRACKERS_MAX 32  /* trackers copied into the .torrent */

/* The metadata arrived and checked: meta and raw[0..len) (the .torrent
 * file) are owned by the callee. */
typedef void (*mfetch_done_t)(void *arg, struct meta_info *meta,
                              uint8_t *raw, size_t len);

/* A fetch for info_hash.  tr[0..n_tr) are tracker URLs for the .torrent
 * (copied, at most MFETCH_TRACKERS_MAX); w is borrowed (it outlives the
 * fetch, or its jobs end before the fetch is freed); arg is borrowed.
 * Returns 0 or -ENOMEM. */
int mfetch_new(struct mfetch **ret, const uint8_t info_hash[20],
               struct worker *w, char *const *tr, size_t n_tr,
               mfetch_done_t done, void *arg);

/* Forget every peer and free; a check still running is dropped when it
 * ends.  Accepts NULL. */
void mfetch_free(struct mfetch *mf);

/* p's extension handshake: ut_metadata id (0: none) and metadata_size (0:
 * unknown).  p is borrowed until mfetch_peer_gone(). */
void mfetch_peer(struct mfetch *mf, struct peer *p, uint8_t ut_metadata,
                 uint32_t metadata_size);
void mfetch_peer_gone(struct mfetch *mf, struct peer *p);

/* Answers from p: data[0..len) is taken (freed here). */
void mfetch_data(struct mfetch *mf, struct peer *p, uint32_t piece,
                 uint32_t total_size, uint8_t *data, uint32_t len);
void mfetch_reject(struct mfetch *mf, struct peer *p, uint32_t piece);

/* Timeouts and new requests; now_ms on a monotonic clock. */
void mfetch_tick(struct mfetch *mf, int64_t now_ms);

/* Sources usable now (for the engine: connect to more peers while few). */
size_t mfetch_sources(const struct mfetch *mf);

#endif
