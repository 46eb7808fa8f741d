/* engine — what makes torrents move data: per torrent, its storage, piece
 * picker, choker, peers, trackers and rate meters; per session, the peer
 * table, the listen socket, the tracker clients, the global rate buckets
 * and the hash workers.
 *
 * Thread: reactor only.  Hash jobs run on the engine's "verify" workers;
 * flushes (storage_flush, then the resume record) on the session's io
 * worker, so that a piece is recorded as verified only once its data is
 * durable (DESIGN.md §5).
 *
 * The session drives it: a torrent runs while its state is downloading or
 * seeding (engine_torrent_state() after every state change) and stops
 * otherwise.  Errors of the data (disk full, read-only directory, files
 * deleted) put the torrent in state error with storage's message; other
 * torrents go on; torrent.start checks again and restarts it.
 *
 * Lifetimes: an engine record belongs to its torrent (t->engine) and holds
 * a job reference on it (t->jobs) until engine_torrent_removed() and the
 * last peer and job of the record are gone.  Peer threads and hash jobs
 * hold references on the torrent's pconn_torrent, whose release closes
 * the storage.
 */
#ifndef TD_DAEMON_ENGINE_H
#define TD_DAEMON_ENGINE_H

#include <stdint.h>
#include <sys/socket.h>

struct engine_ctx;
struct json_object;
struct session;
struct torrent;

#define ENGINE_TICK_S 1.0       /* the per-torrent timer */
#define ENGINE_PIPELINE_MIN 64  /* requests in flight at least ... */
#define ENGINE_PICK_MAX 512     /* ... and picked per call at most */
#define ENGINE_FLUSH_PIECES 256 /* flush at once past this many */
#define ENGINE_CONNECTS_PER_TICK 16
#define ENGINE_MAX_CANDIDATES 2000 /* known peer addresses per torrent */
#define ENGINE_BAN_STRIKES 4       /* bad-data strikes before a ban */
#define ENGINE_BACKOFF_MIN_MS 5000 /* a peer that failed, first retry */
#define ENGINE_BACKOFF_MAX_MS 600000
#define ENGINE_HASH_THREADS 3
/* Peer sources (BEP 5, 9, 11, 14), never for private torrents (BEP 27). */
#define ENGINE_DHT_LOOKUP_MS 300000 /* get_peers while few peers ... */
#define ENGINE_DHT_MAGNET_MS 15000  /* ... and while fetching metadata */
#define ENGINE_DHT_WANT_PEERS 30    /* "few peers": fewer than this */
#define ENGINE_PEX_CUR_MAX 200      /* our peers offered in PEX */
#define ENGINE_PEX_ADD_MAX 100      /* peers taken from one PEX message */
#define ENGINE_XPE_MAX 64           /* x.pe peers of a magnet */
#define ENGINE_XPE_DNS_TIMEOUT_S 30.0 /* an x.pe name's lookup */
#define ENGINE_XPE_ADDRS 8          /* addresses taken per x.pe name */
#define ENGINE_RESOLVER_THREADS 2   /* x.pe and UDP tracker names */
#define ENGINE_MAGNET_HAVES_MAX 65536 /* haves kept per peer before then */
#define ENGINE_REQUEST_TIMEOUT_MS                                              \
    30000 /* no block for this long: the                                       \
           * peer's requests go to others */

/* Start the engine of session s: peer table (config max_peers), listen
 * socket on config `listen` (a failure to bind is logged and the daemon
 * goes on without incoming connections), tracker clients, hash workers.
 * Returns 0 or -errno. */
int engine_ctx_new(struct engine_ctx **ret, struct session *s);

/* At exit, before the session's workers are freed: finish the hash jobs
 * (their results are dropped).  Blocks. */
void engine_ctx_quiesce(struct engine_ctx *x);

/* Close every peer (blocks until their threads end), free the trackers
 * and the engines.  Call after the session's workers are freed and
 * before its torrents are.  Accepts NULL. */
void engine_ctx_free(struct engine_ctx *x);

/* A clean stop begins: flush and record verified pieces (the io jobs come
 * before the session's own final writes), tell trackers "stopped".  done
 * (not NULL) is called once every tracker has answered "stopped" or
 * given up (each within 5 s): from the loop, or from this call when no
 * tracker has anything to send. */
void engine_ctx_stop(struct engine_ctx *x, void (*done)(void *arg),
                     void *arg);

/* Live settings changed (global rate limits). */
void engine_ctx_config_changed(struct engine_ctx *x);

/* Total payload rates (bytes/s) of every torrent, for the status line. */
void engine_ctx_rates(struct engine_ctx *x, uint64_t *ret_down,
                      uint64_t *ret_up);

/* t's state changed: start or stop its engine, or switch its choker
 * between downloading and seeding. */
void engine_torrent_state(struct engine_ctx *x, struct torrent *t);

/* t left the session: stop and forget it. */
void engine_torrent_removed(struct engine_ctx *x, struct torrent *t);

/* t's rate limits, file priorities or sequential flag changed. */
void engine_torrent_settings(struct engine_ctx *x, struct torrent *t);

/* A peer address for t (torrent.add_peer, LSD): connected to at once if
 * t runs (with metadata, or fetching it: state metadata), else kept for
 * when it does.  Returns 0, -EEXIST (known already and connected),
 * -ENOMEM. */
int engine_add_peer(struct engine_ctx *x, struct torrent *t,
                    const struct sockaddr *addr, socklen_t len);

/* torrent.peers: the connected peers as a JSON array (new reference). */
struct json_object *engine_peers_json(struct engine_ctx *x, struct torrent *t);

/* torrent.trackers of a running torrent (tracker_set_to_json()), or NULL
 * when t does not run. */
struct json_object *engine_trackers_json(struct engine_ctx *x,
                                         struct torrent *t);

#endif
