/* peerconn — the peer thread: one TCP connection, the wire protocol
 * around it, and the records it exchanges with the reactor.
 *
 * Thread: pconn_spawn() and the pconn_torrent calls are for the reactor
 * (pconn_torrent_ref/unref: any thread); everything else in peerconn.c
 * runs on the peer thread it starts ("peer/N"), which calls nothing
 * reactor-side.  daemon/peer.h is the reactor's half and the API the
 * torrent engine uses; this header is the contract between the two
 * halves: the thread's start arguments, the shared torrent object, and
 * the event and command records (daemon/chan.h) with their payloads.
 *
 * The thread.  It owns its socket, receive buffer, write queue and codec
 * state.  It waits in one poll() on its socket and its command pipe; poll
 * times out only for protocol deadlines (connect, handshake, keep-alive,
 * inactivity) and for the next tokens of a rate limit.  Outgoing: a
 * non-blocking connect (bound first to cfg->bind_addr if set), then the
 * handshake.  Incoming: it reads the peer's handshake head and publishes
 * PCONN_EV_INFO_HASH; the reactor answers PCONN_CMD_ATTACH (the torrent)
 * or PCONN_CMD_CLOSE.  After the handshake it publishes PCONN_EV_HANDSHAKE
 * and sends nothing until PCONN_CMD_BITFIELD (which must be the first
 * command after that event: it becomes bitfield, have all or have none),
 * then its BEP 10 extension handshake if both sides support it, and a
 * port message if both have the DHT bit and cfg->dht_port is set.
 *
 * Download: blocks asked for with PCONN_CMD_REQUEST are tracked; a piece
 * message that answers one is written to disk by the thread (runs of
 * contiguous blocks in one storage_writev() straight from the receive
 * buffer) and reported in PCONN_EV_BLOCKS batches.  Each request ends in
 * exactly one of: PCONN_EV_BLOCKS, PCONN_EV_DROPPED (rejected; choked
 * without the fast extension; the queue is full), PCONN_CMD_CANCEL by the
 * reactor (a late block is then ignored, never written), or the end of
 * the connection.  A block of a sealed piece (see "Sealed pieces" below)
 * is never written: it is reported in PCONN_EV_DROPPED.  Upload: the
 * thread queues the peer's requests (at most
 * cfg->reqq) for pieces in the set the reactor announced (bitfield and
 * haves), serves them itself while unchoked, with sendfile() from the
 * storage spans, within the rate buckets, and reports bytes sent in
 * PCONN_EV_UPLOADED batches.  While choking, requests are rejected (fast
 * extension) or dropped, but for the allowed-fast set below.
 *
 * BEP 6 allowed fast.  With the fast extension, the thread computes the
 * peer's canonical set of PCONN_ALLOWED_FAST_K pieces (wire_allowed_fast()
 * for its IP) and sends ALLOWED_FAST for those of them we have (after the
 * bitfield, and as haves make more of them ours); it serves requests for
 * those even while choking the peer.  The peer's ALLOWED_FAST messages
 * (at most PCONN_ALLOWED_FAST_RX_MAX per connection) become
 * PCONN_EV_ALLOWED_FAST: the reactor may request those pieces while the
 * peer chokes us (PCONN_CMD_REQUEST is sent while choked when the fast
 * extension is on).  SUGGEST is ignored: a hint only, and the picker's
 * rarest-first order serves the swarm better than one peer's cache.
 * Bitfield first: a request that comes before our bitfield went out is
 * queued and judged (served or rejected) only once it did, so that no
 * REJECT ever goes out before the bitfield.
 *
 * Magnet links: a torrent object from pconn_torrent_new_magnet() has
 * only the info-hash (no metadata, no storage, piece_count 0): the thread
 * does the handshakes, sends "have none" (fast) or no bitfield, rejects or
 * ignores the peer's requests, drops ours (PCONN_EV_DROPPED) and exchanges
 * ut_metadata and ut_pex messages.
 *
 * ut_metadata (BEP 9): with metadata, our extension handshake tells
 * metadata_size and the thread serves the peer's requests itself from
 * info->info_raw (rate-capped: PCONN_MD_BURST); without it, it rejects
 * them.  PCONN_CMD_METADATA_REQUEST asks for a piece; each such command
 * ends in exactly one PCONN_EV_METADATA or PCONN_EV_METADATA_REJECT (a
 * reject is made up by the thread if the peer has no ut_metadata id), or
 * the end of the connection; data and rejects nobody asked for are
 * ignored.  When the metadata is in, PCONN_CMD_SET_TORRENT moves the
 * connection to a torrent object with metadata: the thread checks
 * indices against the real piece count from then on, forgets what it
 * announced (the reactor announces its pieces with PCONN_CMD_HAVE), and
 * sends its extension handshake again, now with metadata_size.
 *
 * ut_pex (BEP 11): PCONN_EV_PEX for each message taken (at most one per
 * PCONN_PEX_RX_MIN_MS), PCONN_CMD_PEX to send one (dropped if the peer
 * has no ut_pex id or the torrent is private).  ut_metadata and ut_pex
 * messages that come before our extension handshake went out are
 * ignored: the peer cannot know our ids yet.
 *
 * Writes: control messages (requests, haves, choke ...) gather in one
 * bounded write queue (PCONN_OUT_MAX) and go out in one send() per
 * wake-up, between blocks, never inside one; a partial write resumes at
 * the next POLLOUT.  Every send is MSG_NOSIGNAL.
 *
 * Why sendfile rather than pread + writev: the block goes from the page
 * cache to the socket with one copy in the kernel instead of two (page
 * cache to our buffer, buffer to the socket), and a thread that only
 * seeds needs no block buffer at all.  The 13-byte header is sent first
 * with MSG_MORE so it shares a segment with the block.  A sendfile cut
 * short by a full socket is resumed at the next POLLOUT by walking the
 * remaining range again (the fd cache hands out the same descriptor).
 *
 * Sealed pieces.  End-game asks two peers for one block; peer A's copy
 * completes the piece, the reactor queues its hash job and sends CANCEL
 * to peer B, but B's copy may reach B's thread first: without more, B's
 * thread would write it while the piece is being hashed or after it
 * passed (a liar would overwrite verified data; a snubbed peer whose
 * requests were given to others, never cancelled, too).  So each piece
 * has one atomic word in struct pconn_torrent, shared by the threads:
 * PCONN_PIECE_SEALED and a count of writers in flight
 * (PCONN_PIECE_WRITERS).  The protocol, all seq_cst on that one word:
 *   - a peer thread, before it writes blocks of a piece:
 *     pconn_piece_write_begin() (fetch_add 1); if the word was sealed it
 *     undoes the add and drops the blocks (PCONN_EV_DROPPED, never
 *     written), else it writes them and calls pconn_piece_write_end()
 *     (fetch_sub 1) once storage_writev() returned;
 *   - the reactor seals a piece (pconn_piece_seal(), fetch_or) before it
 *     queues the piece's hash job, unseals it (pconn_piece_unseal()) when
 *     the hash fails, and keeps it sealed once it passed (a verified
 *     piece is never written again); at start it seals the pieces it has;
 *   - the hash job, before it reads the piece, waits (bounded) until no
 *     writer is in flight (pconn_piece_wait_writers()).
 * A writer whose add comes after the seal in the word's modification
 * order sees the seal and drops; one whose add came before is counted,
 * and the hash job waits for its end (which publishes its pwrite).  A
 * thread holds at most one count per piece, and there are at most
 * 10000 peers (config max_peers), so 15 bits of count never overflow.
 * Memory: two bytes per piece.
 *
 * Encryption (MSE, common/mse.h), by cfg->encryption.  Outgoing, with
 * PCONN_ENC_PREFER or _REQUIRE: after the connect, the MSE handshake as
 * initiator (RC4 and plaintext offered, or RC4 only), our BitTorrent
 * handshake inside it as the initial payload; with PREFER, if the peer
 * drops it (end of file, reset, a failed or late MSE handshake), one
 * plaintext reconnect (PCONN_EV_HANDSHAKE then tells PCONN_CRYPTO_NONE,
 * and the reactor may dial that peer with pconn_args.plaintext next
 * time, so it skips the failed attempt).  Incoming, unless
 * PCONN_ENC_OFF: the first 20 bytes tell a plaintext handshake (0x13
 * "BitTorrent protocol"; refused
 * with REQUIRE) from an MSE one; as responder, the thread publishes
 * PCONN_EV_MSE_HASH with the peer's HASH('req2', info-hash), which the
 * reactor answers like PCONN_EV_INFO_HASH, and selects RC4 when the
 * peer offers only RC4 or encryption is REQUIRE; offered both with
 * PREFER, it selects plaintext (as libtorrent does by default): the
 * handshake is obfuscated, the data costs no cipher.  With OFF an MSE peer fails as a bad handshake.  The
 * MSE part is bounded by PCONN_MSE_TIMEOUT_MS within the handshake
 * timeout.  With RC4 selected, every byte in is decrypted in place in the
 * receive buffer as it arrives (the decoder and the zero-copy paths see
 * plaintext) and every byte out is encrypted just before its send: the
 * write queue at send time, and a piece message as one buffer (header
 * and block read from storage, then encrypted) instead of sendfile().
 * Plaintext connections, MSE ones that selected plaintext included, keep
 * sendfile() and touch no keystream.  PCONN_EV_HANDSHAKE tells which
 * (enum pconn_crypto).
 *
 * The end: the thread publishes PCONN_EV_CLOSED (reason, detail), closes
 * its socket and the write end of its event pipe (the reactor sees end of
 * file: the thread is finishing, join it) and returns.  It does not close
 * the read end of its command pipe: the reactor, after joining, closes
 * the write end and drains it (chan_drain() frees owned pointers still in
 * it), so nothing the reactor sent is ever lost or leaked.
 */
#ifndef TD_DAEMON_PEERCONN_H
#define TD_DAEMON_PEERCONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/wire.h"
#include "daemon/chan.h"

struct meta_info;
struct rate_bucket;
struct storage;

/* The thread's stack.  Sanitizers need more (ASan's redzones and fake
 * frames, TSan's shadow bookkeeping). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PCONN_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PCONN_SANITIZED 1
#endif
#endif
#ifdef PCONN_SANITIZED
#define PCONN_STACK_SIZE (1024u << 10)
#else
#define PCONN_STACK_SIZE (128u << 10)
#endif

#define PCONN_RBUF_INIT (32u << 10)   /* receive buffer at first */
#define PCONN_RBUF_MAX (256u << 10)   /* grown while blocks stream in (a
                                       * longer message grows it to its
                                       * size, dec.need) */
#define PCONN_OUT_MAX (1u << 20)      /* queued control bytes */
#define PCONN_MAX_OUTSTANDING 2048    /* our requests in flight */
#define PCONN_REQQ_DEFAULT 500        /* peer's requests we queue; told in
                                       * the extension handshake */
#define PCONN_WRITE_RUN 32            /* blocks per storage_writev() */
#define PCONN_UPLOAD_FLUSH (1u << 20) /* report upload every 1 MiB ... */
#define PCONN_UPLOAD_FLUSH_MS 200     /* ... or after this long */
#define PCONN_RECV_ROUNDS 8           /* recv() calls per wake-up */
#define PCONN_ALLOWED_FAST_K 10       /* BEP 6: pieces we let a peer that
                                       * we choke fetch */
#define PCONN_ALLOWED_FAST_RX_MAX 32  /* the peer's ALLOWED_FAST taken */

/* BEP 9 / BEP 11 (common/ext.h).  Our ids for the extended messages, told
 * in our extension handshake "m" (the values libtorrent uses); the peer's
 * ids come from its handshake.  ut_pex is neither offered nor sent, and
 * what a peer sends is ignored, for a private torrent (BEP 27); nor is
 * the DHT bit set in its handshake (so no port message either). */
#define PCONN_EXT_UT_PEX 1
#define PCONN_EXT_UT_METADATA 3
/* Metadata requests the thread serves itself (from info_raw), per peer:
 * a burst of PCONN_MD_BURST pieces, then PCONN_MD_PER_S a second (and
 * only while the write queue is less than half full); more are
 * rejected.  At most PCONN_MD_ASKED of our requests in flight. */
#define PCONN_MD_BURST 16
#define PCONN_MD_PER_S 32
#define PCONN_MD_ASKED 256
/* A ut_pex message that comes sooner than this after the last one taken
 * is ignored (BEP 11: one a minute; some slack for timer skew). */
#define PCONN_PEX_RX_MIN_MS 20000

/* The MSE handshake's own bound (inside the handshake timeout), so that
 * a PCONN_ENC_PREFER connection to a peer that ignores it in silence
 * still has time for its plaintext reconnect. */
#define PCONN_MSE_TIMEOUT_MS 10000

/* cfg->encryption (the config key "encryption"). */
enum pconn_encryption {
    PCONN_ENC_OFF = 0, /* plaintext only; MSE refused (a zeroed config) */
    PCONN_ENC_PREFER,  /* MSE out (RC4 or plaintext, the peer picks),
                        * plaintext fallback; in: both, plaintext
                        * picked where offered */
    PCONN_ENC_REQUIRE, /* MSE with RC4 only, both ways */
    PCONN_ENC_MAX
};

/* What a connection is, as PCONN_EV_HANDSHAKE tells (the values are
 * common/mse.h's MSE_CRYPTO_*). */
enum pconn_crypto {
    PCONN_CRYPTO_NONE = 0,      /* a plaintext BitTorrent handshake */
    PCONN_CRYPTO_MSE_PLAIN = 1, /* MSE handshake, then plaintext */
    PCONN_CRYPTO_RC4 = 2,       /* MSE handshake, then RC4 both ways */
};

/* Defaults of the timeouts in struct pconn_config (0 takes these). */
#define PCONN_CONNECT_TIMEOUT_MS 10000
#define PCONN_HANDSHAKE_TIMEOUT_MS 20000
#define PCONN_KEEPALIVE_MS 120000
#define PCONN_INACTIVITY_MS 300000

/* Settings every peer thread reads.  Immutable while any peer runs; owned
 * by the peer table, which outlives its threads. */
struct pconn_config {
    uint8_t peer_id[WIRE_PEER_ID_LEN]; /* ours */
    uint16_t listen_port;              /* told in the extension handshake;
                                        * 0: not told */
    uint16_t dht_port;                 /* sent in a port message (BEP 5) to
                                        * peers with the DHT bit; 0: not */
    struct sockaddr_storage bind_addr; /* outgoing source address */
    socklen_t bind_len;                /* 0: let the kernel choose */
    unsigned features;                 /* enum wire_features we offer */
    uint32_t reqq;                     /* 0: PCONN_REQQ_DEFAULT */
    struct rate_bucket *up_global;     /* borrowed, NULL: unlimited */
    struct rate_bucket *down_global;
    unsigned connect_timeout_ms;       /* 0: the defaults above */
    unsigned handshake_timeout_ms;
    unsigned keepalive_ms;
    unsigned inactivity_ms;
    enum pconn_encryption encryption;
};

/* What a peer thread knows of its torrent: immutable after
 * pconn_torrent_new() but for the reference count.  Made by the engine
 * (reactor) for each torrent with metadata; each peer record holds a
 * reference for its thread, which borrows it (the record outlives the
 * thread).  The last unref calls release(t, arg), which frees what info,
 * storage and the buckets belong to (on the reactor in practice, as the
 * references are dropped there), then t is freed. */
struct pconn_torrent {
    _Atomic unsigned refs;
    uint8_t info_hash[WIRE_HASH_LEN];
    const struct meta_info *info;  /* borrowed: see release */
    struct storage *storage;       /* borrowed: see release */
    struct rate_bucket *up;        /* borrowed, NULL: unlimited */
    struct rate_bucket *down;
    struct wire_torrent wt;        /* piece count and sizes */
    uint8_t mse_req2[WIRE_HASH_LEN]; /* HASH('req2', info_hash): how an
                                    * MSE initiator names the torrent */
    _Atomic uint16_t *pieces;      /* owned: per piece, PCONN_PIECE_SEALED
                                    * | writers in flight (see "Sealed
                                    * pieces"); NULL for a magnet */
    void (*release)(struct pconn_torrent *t, void *arg);
    void *release_arg;
};

/* A torrent object with one reference (the caller's).  info and storage
 * must stay valid until release is called (release may be NULL).
 * Returns 0 or -ENOMEM (also if libcrypto fails), -EINVAL (info's sizes
 * do not fit the wire). */
int pconn_torrent_new(struct pconn_torrent **ret, const struct meta_info *info,
                      struct storage *storage, struct rate_bucket *up,
                      struct rate_bucket *down,
                      void (*release)(struct pconn_torrent *, void *),
                      void *release_arg);
/* A torrent object for a magnet link: only the info-hash (info and
 * storage NULL, wt.piece_count 0); buckets and release as above.
 * Returns 0 or -ENOMEM. */
int pconn_torrent_new_magnet(struct pconn_torrent **ret,
                             const uint8_t info_hash[WIRE_HASH_LEN],
                             struct rate_bucket *up, struct rate_bucket *down,
                             void (*release)(struct pconn_torrent *, void *),
                             void *release_arg);
/* Take a reference; returns t.  Any thread. */
struct pconn_torrent *pconn_torrent_ref(struct pconn_torrent *t);
/* Drop a reference (NULL is fine).  Any thread; see above. */
void pconn_torrent_unref(struct pconn_torrent *t);

/* Sealed pieces (see the top of this file).  piece out of range (or a
 * magnet's torrent object) is ignored: seal and unseal do nothing, a
 * write may begin, the wait returns 0. */
#define PCONN_PIECE_SEALED 0x8000u
#define PCONN_PIECE_WRITERS 0x7fffu
#define PCONN_WAIT_WRITERS_MS 10000 /* the hash job's bound */

/* Seal / unseal a piece.  Thread: reactor (the torrent's owner). */
void pconn_piece_seal(struct pconn_torrent *t, uint32_t piece);
void pconn_piece_unseal(struct pconn_torrent *t, uint32_t piece);
/* Is the piece sealed?  Any thread. */
bool pconn_piece_sealed(const struct pconn_torrent *t, uint32_t piece);
/* A writer of blocks of piece begins: true (write, then call
 * pconn_piece_write_end()), or false: the piece is sealed, do not write
 * (and do not call _end).  Thread: peer (tests: any). */
bool pconn_piece_write_begin(struct pconn_torrent *t, uint32_t piece);
void pconn_piece_write_end(struct pconn_torrent *t, uint32_t piece);
/* Wait until no writer of piece is in flight: yields, then sleeps in
 * short steps, for at most timeout_ms.  Returns 0, or -ETIMEDOUT (a
 * write is stuck: do not trust the piece's data).  Call it after the
 * seal.  Thread: any but the reactor (it blocks): the hash workers. */
int pconn_piece_wait_writers(const struct pconn_torrent *t, uint32_t piece,
                             unsigned timeout_ms);

/* Why a connection ended: the reason of PCONN_EV_CLOSED and of
 * peer on_closed(); detail is -errno, an enum wire_error, or 0. */
enum pconn_reason {
    PCONN_R_NONE = 0,
    PCONN_R_CLOSED,          /* the reactor asked (peer_close) */
    PCONN_R_STUCK,           /* the thread stopped reading commands */
    PCONN_R_CONNECT,         /* connect failed (detail -errno) */
    PCONN_R_CONNECT_TIMEOUT,
    PCONN_R_HANDSHAKE_TIMEOUT,
    PCONN_R_HANDSHAKE,       /* bad handshake (detail: wire error) */
    PCONN_R_INFO_HASH,       /* the peer's info-hash is not ours */
    PCONN_R_UNKNOWN_TORRENT, /* incoming: the reactor has no such torrent */
    PCONN_R_SELF,            /* we connected to ourselves */
    PCONN_R_PROTOCOL,        /* bad message (detail: wire error, or
                              * -EPROTO for a message not allowed now) */
    PCONN_R_EOF,             /* the peer closed the connection */
    PCONN_R_IO,              /* socket error (detail -errno) */
    PCONN_R_TIMEOUT,         /* nothing received for inactivity_ms */
    PCONN_R_STORAGE,         /* reading or writing data failed (-errno) */
    PCONN_R_NOMEM,
    PCONN_R_SHUTDOWN,        /* the peer table is going away */
    PCONN_R_ENCRYPTION,      /* the MSE handshake failed (detail: enum
                              * mse_error), or the peer's choice is not
                              * allowed: plaintext when encryption is
                              * required (detail -EPROTONOSUPPORT) */
    PCONN_R_MAX
};

/* A static name for a reason ("eof", "protocol", ...). */
const char *pconn_reason_str(enum pconn_reason r);

/* Events: thread -> reactor.  Payloads (rec.p) and pointers (rec.ptr): */
enum pconn_event {
    PCONN_EV_ACK = 1,         /* nothing but rec.ack */
    PCONN_EV_INFO_HASH,       /* incoming: p.b[0..20) the info-hash; answer
                               * PCONN_CMD_ATTACH or PCONN_CMD_CLOSE */
    PCONN_EV_HANDSHAKE,       /* p.b[0..20) peer id, p.u32[5] the features
                               * both sides have (enum wire_features),
                               * p.u32[6] enum pconn_crypto */
    PCONN_EV_EXT_HANDSHAKE,   /* ptr: struct wire_ext_handshake (owned) */
    PCONN_EV_BITFIELD,        /* ptr: bits (owned), p.u32[0] bytes */
    PCONN_EV_HAVE,            /* count piece indices in p.u32 (<= 8) */
    PCONN_EV_HAVE_ALL,
    PCONN_EV_HAVE_NONE,
    PCONN_EV_CHOKE,           /* the peer chokes us */
    PCONN_EV_UNCHOKE,
    PCONN_EV_INTERESTED,      /* the peer is interested in us */
    PCONN_EV_NOT_INTERESTED,
    PCONN_EV_BLOCKS,          /* count blocks written: see pconn_rec_blocks */
    PCONN_EV_DROPPED,         /* count requests that will not be served */
    PCONN_EV_UPLOADED,        /* p.u64[0] payload bytes, p.u32[2] blocks */
    PCONN_EV_PORT,            /* p.u16[0]: the peer's DHT port (BEP 5) */
    PCONN_EV_CLOSED,          /* p.u32[0] enum pconn_reason, (int32_t)
                               * p.u32[1] detail; the last record */
    PCONN_EV_METADATA,        /* ut_metadata data: ptr the piece's bytes
                               * (owned), p.u32[0] piece, p.u32[1]
                               * total_size, p.u32[2] bytes */
    PCONN_EV_METADATA_REJECT, /* p.u32[0] piece */
    PCONN_EV_PEX,             /* ptr: struct ext_pex_msg (owned; its
                               * ptr_free is ext_pex_msg_free) */
    PCONN_EV_ALLOWED_FAST,    /* count piece indices in p.u32 (<= 8) the
                               * peer lets us fetch while choked (BEP 6) */
    PCONN_EV_MSE_HASH,        /* incoming MSE: p.b[0..20) the peer's
                               * HASH('req2', info-hash) (see
                               * pconn_torrent.mse_req2); answer
                               * PCONN_CMD_ATTACH or PCONN_CMD_CLOSE */
    PCONN_EV_MAX
};

/* Commands: reactor -> thread. */
enum pconn_command {
    PCONN_CMD_ATTACH = 1,     /* ptr: struct pconn_torrent, borrowed (the
                               * peer record holds the reference) */
    PCONN_CMD_CLOSE,
    PCONN_CMD_BITFIELD,       /* ptr: our bits (owned) or NULL (none),
                               * p.u32[0] bytes */
    PCONN_CMD_HAVE,           /* count indices: p.u32 (<= 8) or ptr array */
    PCONN_CMD_CHOKE,
    PCONN_CMD_UNCHOKE,
    PCONN_CMD_INTERESTED,
    PCONN_CMD_NOT_INTERESTED,
    PCONN_CMD_REQUEST,        /* count blocks: see pconn_rec_blocks */
    PCONN_CMD_CANCEL,
    PCONN_CMD_REJECT,         /* the peer's requests we will not serve */
    PCONN_CMD_METADATA_REQUEST, /* p.u32[0]: a piece of the metadata */
    PCONN_CMD_PEX,            /* ptr: struct ext_pex_msg (owned) to send */
    PCONN_CMD_SET_TORRENT,    /* ptr: struct pconn_torrent with metadata,
                               * borrowed (the peer record holds the
                               * reference, and the old one's until it is
                               * freed): a magnet's metadata came */
    PCONN_CMD_MAX
};

/* Blocks in a record: up to PCONN_INLINE_BLOCKS inline, more behind ptr
 * (an owned array of count struct wire_block). */
#define PCONN_INLINE_BLOCKS (CHAN_PAYLOAD / sizeof(struct wire_block))
#define PCONN_INLINE_U32 (CHAN_PAYLOAD / sizeof(uint32_t))

/* The blocks of a PCONN_EV_BLOCKS / _DROPPED / PCONN_CMD_REQUEST /
 * _CANCEL / _REJECT record (borrowed from rec). */
const struct wire_block *pconn_rec_blocks(const struct chan_rec *rec);

/* The piece indices of a PCONN_EV_HAVE / PCONN_CMD_HAVE record. */
const uint32_t *pconn_rec_u32(const struct chan_rec *rec);

/* Fill rec with n blocks / indices: inline if they fit, else in a new
 * owned array.  Returns 0 or -ENOMEM (rec untouched).  n <= UINT16_MAX. */
int pconn_rec_set_blocks(struct chan_rec *rec, const struct wire_block *b,
                         size_t n);
int pconn_rec_set_u32(struct chan_rec *rec, const uint32_t *v, size_t n);

/* What a thread starts with. */
struct pconn_args {
    uint32_t slot, gen;       /* stamped on every event record */
    int sock;                 /* accepted socket (owned: the thread closes
                               * it), or -1: connect to addr */
    struct sockaddr_storage addr; /* the peer */
    socklen_t addr_len;
    struct pconn_torrent *tor; /* outgoing: borrowed (see ATTACH); NULL
                                * for incoming */
    bool plaintext;           /* outgoing with PCONN_ENC_PREFER: dial in
                               * plaintext, no MSE (a peer seen to drop
                               * it); ignored otherwise (never with
                               * REQUIRE) */
    const struct pconn_config *cfg; /* borrowed: outlives the thread */
    int cmd_rd;               /* command pipe, read end (borrowed) */
    int evt_wr;               /* event pipe, write end (owned: closed at
                               * the end) */
};

/* Start a peer thread named "peer/<slot>" with a PCONN_STACK_SIZE stack,
 * with every signal blocked.  args is copied.  On success the thread owns
 * args->sock and args->evt_wr, and *ret is to be joined once the event
 * pipe reaches end of file.  On failure (-errno) nothing was taken.
 * Thread: reactor. */
int pconn_spawn(pthread_t *ret, const struct pconn_args *args);

#endif
