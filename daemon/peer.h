/* peer — the reactor's half of the peer connections: a table of peer
 * slots, one thread per connection (daemon/peerconn.h), the pipes to
 * them, and the API the torrent engine uses.
 *
 * Thread: reactor only (the thread that runs the libev loop given to
 * peer_table_new()); asserted in debug builds.
 *
 * Model.  A peer is a connection in a slot of the table.  Each slot has a
 * generation number, bumped at every reuse; every record from or to a
 * thread carries (slot, generation), so a record about a connection that
 * is gone is recognised and dropped.  Each peer has its own thread, event
 * pipe (watched with ev_io, read non-blocking in bounded batches of
 * PEER_BATCH records per wake-up) and command pipe (written non-blocking
 * within a credit, daemon/chan.h).
 *
 * Callbacks.  The engine gives a struct peer_callbacks and a user pointer
 * (ud) at peer_table_new(); each callback gets ud and the peer.  Any
 * callback may be NULL (the event is ignored).  Callbacks run on the
 * reactor, from the event pipe's ev_io (never from inside a peer_* call),
 * and may call any peer_* function, on this peer or others, including
 * peer_close().  After peer_close() (or after a command failed and the
 * peer was dropped) the peer gets no callback but on_closed.
 *
 * Lifetime.  peer_connect()/peer_accept() return a peer that stays valid
 * until its on_closed callback returns; on_closed is called exactly once
 * for every peer, at a safe point of the loop (an ev_prepare, never inside
 * another callback of the peer), after the thread has ended and been
 * joined (or from peer_table_free()); the record is freed right after
 * on_closed returns.  Requests in flight to a closed peer are lost: each
 * request ends in exactly one of on_blocks_done, on_dropped, a
 * peer_cancel by the engine (a block that arrives later is ignored, never
 * written), or on_closed.
 *
 * Order: callbacks come in the order the thread saw the events on the
 * wire (blocks, haves and drops are batched, one kind at a time, so the
 * batching keeps that order).  on_blocks_done means the block is written
 * (not yet durable: storage_flush() before recording a piece verified).
 *
 * Order of the conversation.  on_info_hash (incoming only: return the
 * torrent or NULL) or, for an incoming MSE connection (peerconn.h,
 * "Encryption"), on_mse_hash first and no on_info_hash, then
 * on_handshake, which the engine answers with
 * peer_send_bitfield() (if it does not, an empty one is sent for it when
 * on_handshake returns: "have none").  The other commands are accepted
 * once on_handshake has been called; before that they fail with -EAGAIN.
 *
 * Costs: every call is O(1) or O(n) in its arguments, plus one write() to
 * a pipe per command.
 */
#ifndef TD_DAEMON_PEER_H
#define TD_DAEMON_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/ext.h"
#include "common/wire.h"
#include "daemon/peerconn.h"

struct ev_loop;
struct peer;
struct peer_table;

#define PEER_BATCH CHAN_BATCH_MAX /* event records read per wake-up */

struct peer_callbacks {
    /* Incoming: the peer's handshake names info_hash.  Return a torrent
     * (with a reference for the peer: pconn_torrent_ref(t)) to go on, or
     * NULL to refuse (the peer closes with PCONN_R_UNKNOWN_TORRENT). */
    struct pconn_torrent *(*on_info_hash)(void *ud, struct peer *p,
                                          const uint8_t *info_hash);
    /* Incoming MSE: the peer names its torrent by HASH('req2', info-hash)
     * (compare pconn_torrent.mse_req2).  Answer as on_info_hash: the
     * torrent with a reference for the peer, or NULL (the peer closes
     * with PCONN_R_UNKNOWN_TORRENT).  Without it, every incoming MSE
     * connection is refused so. */
    struct pconn_torrent *(*on_mse_hash)(void *ud, struct peer *p,
                                         const uint8_t *req2);
    /* The handshake is complete: the peer's id and the features both
     * sides have (enum wire_features).  Answer with peer_send_bitfield.
     * peer_crypto() tells whether the connection is encrypted. */
    void (*on_handshake)(void *ud, struct peer *p, const uint8_t *peer_id,
                         unsigned features);
    /* BEP 10 extension handshake (borrowed for the call). */
    void (*on_ext_handshake)(void *ud, struct peer *p,
                             const struct wire_ext_handshake *h);
    /* The peer's bitfield: bits is owned by the callee (free()), nbytes =
     * ceil(pieces / 8), spare bits zero (the codec checked). */
    void (*on_bitfield)(void *ud, struct peer *p, uint8_t *bits,
                        uint32_t nbytes);
    void (*on_have)(void *ud, struct peer *p, const uint32_t *pieces,
                    size_t n);
    void (*on_have_all)(void *ud, struct peer *p);
    void (*on_have_none)(void *ud, struct peer *p);
    /* It chokes us.  Without the fast extension every request in flight
     * is gone (on_dropped came just before); with it, the peer rejects
     * them (on_dropped) or still serves them. */
    void (*on_choke)(void *ud, struct peer *p);
    void (*on_unchoke)(void *ud, struct peer *p);
    void (*on_interested)(void *ud, struct peer *p); /* in our pieces */
    void (*on_not_interested)(void *ud, struct peer *p);
    /* Blocks we requested arrived and were written to disk. */
    void (*on_blocks_done)(void *ud, struct peer *p,
                           const struct wire_block *b, size_t n);
    /* Requests that will not be served (rejected, choked without the
     * fast extension, too many in flight), or whose block came for a
     * sealed piece and was not written (peerconn.h): ask someone else. */
    void (*on_dropped)(void *ud, struct peer *p, const struct wire_block *b,
                       size_t n);
    /* Payload bytes we sent (in batches). */
    void (*on_uploaded)(void *ud, struct peer *p, uint64_t bytes,
                        uint32_t blocks);
    void (*on_port)(void *ud, struct peer *p, uint16_t dht_port);
    /* The end; see Lifetime.  detail: -errno, an enum wire_error, or 0. */
    void (*on_closed)(void *ud, struct peer *p, enum pconn_reason reason,
                      int detail);

    /* --- BEP 9 (ut_metadata) and BEP 11 (ut_pex); see peerconn.h --- */
    /* A piece of metadata we asked for (peer_send_metadata_request):
     * data[0..len) is owned by the callee (free()).  The codec checked
     * len against piece and total_size; the callee checks total_size
     * against its assembler's (the peer's handshake metadata_size) and
     * the whole against the info-hash (struct ext_metadata). */
    void (*on_metadata_data)(void *ud, struct peer *p, uint32_t piece,
                             uint32_t total_size, uint8_t *data,
                             uint32_t len);
    /* The peer refused a piece we asked for (or cannot be asked: no
     * ut_metadata id in its handshake, too many in flight). */
    void (*on_metadata_reject)(void *ud, struct peer *p, uint32_t piece);
    /* A ut_pex message (never for a private torrent): peers added (with
     * their enum ext_pex_flags) and dropped, borrowed for the call, at
     * most EXT_PEX_ACCEPT_MAX each, ports never 0.  The thread takes at
     * most one message per PCONN_PEX_RX_MIN_MS. */
    void (*on_pex)(void *ud, struct peer *p, const struct ext_pex_peer *added,
                   size_t n_added, const struct ext_pex_peer *dropped,
                   size_t n_dropped);

    /* --- BEP 6 --- */
    /* ALLOWED_FAST: pieces (checked against the piece count) the peer
     * lets us fetch while it chokes us; at most PCONN_ALLOWED_FAST_RX_MAX
     * per connection.  Requests for them may be sent while choked. */
    void (*on_allowed_fast)(void *ud, struct peer *p, const uint32_t *pieces,
                            size_t n);
};

/* A table of at most max_peers connections on loop.  cfg is copied
 * (buckets in it are borrowed: they outlive the table); cbs is copied.
 * Returns 0 or -ENOMEM, -EINVAL. */
int peer_table_new(struct peer_table **ret, struct ev_loop *loop,
                   const struct pconn_config *cfg,
                   const struct peer_callbacks *cbs, void *ud,
                   size_t max_peers);

/* Close every peer, wait for their threads (this blocks: call it at
 * exit, not from a callback), call on_closed for each (reason
 * PCONN_R_SHUTDOWN for those not closing yet) and free the table.
 * Accepts NULL. */
void peer_table_free(struct peer_table *t);

/* Peers in the table (closing ones included). */
size_t peer_table_count(const struct peer_table *t);

/* Connect to addr for torrent t (the peer takes its own reference).
 * Returns 0 and *ret (may be NULL), or -EMFILE (table full), -ENOMEM,
 * -errno. */
int peer_connect(struct peer_table *t, struct pconn_torrent *tor,
                 const struct sockaddr *addr, socklen_t addr_len,
                 struct peer **ret);

enum peer_connect_flags {
    /* With encryption PCONN_ENC_PREFER: no MSE, a plaintext handshake
     * right away (pconn_args.plaintext); for a peer that dropped MSE
     * before (its last outgoing connection came up with
     * PCONN_CRYPTO_NONE).  Ignored with OFF (plaintext anyway) and
     * REQUIRE (never plaintext). */
    PEER_CONNECT_PLAINTEXT = 1 << 0,
};

/* peer_connect() with enum peer_connect_flags.  Returns as it. */
int peer_connect_with_flags(struct peer_table *t, struct pconn_torrent *tor,
                            const struct sockaddr *addr, socklen_t addr_len,
                            unsigned flags, struct peer **ret);

/* Take over an accepted socket (ownership of fd moves, also on failure:
 * it is closed).  addr is the remote address.  Returns as peer_connect. */
int peer_accept(struct peer_table *t, int fd, const struct sockaddr *addr,
                socklen_t addr_len, struct peer **ret);

/* Commands.  Each returns 0, -ESHUTDOWN if the peer is closing, -EAGAIN
 * before on_handshake, -ENOMEM, or -ECONNRESET when the thread did not
 * take the command (stuck: the peer is then closed with PCONN_R_STUCK and
 * will get on_closed).
 *
 * Credit: a command is one pipe record, and at most CHAN_CREDIT (64)
 * records may wait for a peer's thread; the thread acknowledges as it
 * reads, so a healthy thread never comes near it, unless the engine
 * writes dozens of records to one peer within one callback.  So batch:
 * peer_request/_cancel/_reject take arrays (one record each call), and
 * peer_send_have() only queues: the haves of one loop iteration go to
 * each peer as one record, at the ev_prepare (a batch of hash results
 * then costs one record per peer, not one per piece). */
/* Our pieces: bits of nbytes (copied); NULL or 0 bytes: none.  The thread
 * sends bitfield, have all or have none (fast extension) accordingly,
 * and serves requests for these pieces (and those of peer_send_have). */
int peer_send_bitfield(struct peer *p, const uint8_t *bits, uint32_t nbytes);
/* Queue haves (sent at this iteration's ev_prepare, see Credit; a
 * failure then drops the peer like any command).  -EINVAL past 65535
 * queued. */
int peer_send_have(struct peer *p, const uint32_t *pieces, size_t n);
int peer_choke(struct peer *p);
int peer_unchoke(struct peer *p);
int peer_interested(struct peer *p);
int peer_not_interested(struct peer *p);
/* Ask for blocks (one record for the batch). */
int peer_request(struct peer *p, const struct wire_block *b, size_t n);
int peer_cancel(struct peer *p, const struct wire_block *b, size_t n);
/* Refuse requests of the peer that are queued (a reject if fast). */
int peer_reject(struct peer *p, const struct wire_block *b, size_t n);

/* BEP 9: ask for one piece of the metadata.  Send it only to a peer whose
 * extension handshake had a ut_metadata id (on_ext_handshake); it ends in
 * exactly one on_metadata_data or on_metadata_reject, or on_closed.  The
 * thread answers the peer's requests itself (peerconn.h). */
int peer_send_metadata_request(struct peer *p, uint32_t piece);
/* BEP 11: announce peers (copied; at most EXT_PEX_SEND_MAX each, addr_len
 * 4 or 16, else -EINVAL).  The caller keeps the rate (one message a
 * minute: struct ext_pex_state makes the lists); dropped by the thread if
 * the peer has no ut_pex id or the torrent is private. */
int peer_send_pex(struct peer *p, const struct ext_pex_peer *added,
                  size_t n_added, const struct ext_pex_peer *dropped,
                  size_t n_dropped);

/* A magnet's metadata came (on_metadata_data, verified): move p to tor,
 * a torrent object with metadata and the same info-hash (the peer takes
 * its own reference and keeps the old one until it is freed: its thread
 * may still read it).  The thread then checks the peer's haves and our
 * requests against the real piece count, re-sends its extension
 * handshake with metadata_size (so the peer may fetch from us too) and
 * has announced nothing: announce pieces with peer_send_have() (sent as
 * haves), not peer_send_bitfield().  The peer's bitfield, taken while
 * the piece count was unknown, is the engine's to check (length, spare
 * bits).  Returns 0, -EINVAL (p's torrent has metadata, tor has none or
 * another info-hash), or as the other commands. */
int peer_set_torrent(struct peer *p, struct pconn_torrent *tor);

/* Close the connection.  No callback but on_closed comes after this (at a
 * later safe point).  Calling it again, or for a peer already closing, is
 * harmless. */
void peer_close(struct peer *p);

/* Accessors. */
void *peer_data(const struct peer *p);
void peer_set_data(struct peer *p, void *data);
uint32_t peer_slot(const struct peer *p);
bool peer_incoming(const struct peer *p);
bool peer_closing(const struct peer *p);
/* The torrent (borrowed; NULL for an incoming peer before on_info_hash
 * accepted it). */
struct pconn_torrent *peer_torrent(const struct peer *p);
const struct sockaddr *peer_addr(const struct peer *p, socklen_t *ret_len);
/* Commands written and not yet read by the thread (tests, statistics). */
uint32_t peer_inflight(const struct peer *p);
/* enum pconn_crypto of the connection: known from on_handshake on
 * (PCONN_CRYPTO_NONE before). */
unsigned peer_crypto(const struct peer *p);

#endif
