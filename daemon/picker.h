/* picker — which blocks of a torrent to request from which peer.
 *
 * Thread: reactor only.  No I/O, no clock, no logging, no globals: the
 * caller feeds it what peers announce and what arrives, and asks it for
 * blocks to request (jech/dht style: the caller's loop drives it).  One
 * picker per torrent with metadata.
 *
 * What it keeps: per piece, whether we have it (verified), its
 * availability (how many connected peers have it), its priority (0 = do
 * not download, 1..PICKER_PRIO_MAX), and for each piece in progress the
 * state of every block (none, requested by up to PICKER_MAX_DUPS peers,
 * received, written) and which peer delivered it.  Per peer (a small
 * handle from picker_peer_add()): a copy of its bitfield, whether it is a
 * seed, whether it is "fast".
 *
 * How picker_pick() chooses, in order:
 * 1. Pieces in progress first (partial pieces), oldest first, so that
 *    pieces complete and can be shared instead of many pieces being half
 *    done.  A piece claimed by a fast peer is left to it.
 * 2. Then a new piece: the rarest among the highest priority (fewest
 *    peers have it), with ties broken at random (a seeded RNG: the caller
 *    passes the seed, so tests are deterministic); while we have fewer
 *    than PICKER_INITIAL_RANDOM verified pieces, a random wanted one (of
 *    any priority above 0; up to PICKER_RANDOM_PROBES draws, then rarest
 *    first), so that a first complete piece comes quickly and can be
 *    traded; in sequential mode, the lowest index (priorities 1..7 then
 *    do not reorder, 0 still skips).
 * 3. A peer marked fast (picker_peer_set_fast()) claims whole pieces for
 *    itself: it first continues its own pieces, then starts new ones,
 *    which no other peer joins while it stays fast and connected; only
 *    then does it help with other peers' partial pieces.  Slow peers then
 *    do not hold up pieces that a fast peer could finish.
 * 4. End-game (strict): when no wanted block is left unrequested, blocks
 *    already requested from other peers are requested again, each from
 *    at most endgame_dups peers, least-requested first.  When one copy
 *    arrives, picker_block_received() returns the other peers to send
 *    CANCEL to.
 *
 * Availability: peers that have every piece (HAVE_ALL, a full bitfield,
 * or the HAVE that completes one) are counted as seeds, apart from the
 * per-piece counts, so adding or removing a seed costs O(1); a seed does
 * not change which pieces are rarest.
 *
 * Data structures and costs.  Pieces not in progress, not had and wanted
 * sit in one array ordered by (priority, availability) with bucket
 * boundaries (libtorrent's piece_picker layout): a piece whose
 * availability changes by one swaps with the edge of its bucket, O(1);
 * tie-breaks are random because a piece entering a bucket swaps with a
 * random member.  Pieces in progress are on two lists: with and without
 * unrequested blocks.  Where B = buckets = PICKER_PRIO_MAX * (peer
 * capacity + 1), a few hundred for a few dozen peers:
 *   picker_new                        O(pieces + B)
 *   picker_peer_add                   O(1); O(pieces + B) when the peer
 *                                     capacity doubles
 *   picker_peer_bitfield, _have_all   O(pieces) (a full bitfield: O(1)
 *                                     after the O(pieces / 8) check)
 *   picker_peer_remove                O(pieces it had, 0 for a seed) +
 *                                     O(blocks in progress)
 *   picker_peer_have                  O(1) (O(pieces) once, when it
 *                                     makes the peer a seed)
 *   picker_peer_choked                O(blocks in progress)
 *   picker_pick                       O(partial pieces + blocks picked +
 *                                     pieces skipped because the peer
 *                                     lacks them + B per new piece); in
 *                                     end-game O(blocks in progress)
 *   picker_block_received, _written,  O(1) (+ O(B) when a piece leaves
 *   _lost, picker_peer_rejected,      or enters the ordered array)
 *   picker_request_timeout
 *   picker_hash_passed                O(peers + B)
 *   picker_hash_failed                O(blocks of the piece + B)
 *   picker_set_piece_priority         O(peers + B)
 *   picker_set_file_priorities        O(files + pieces * (1 + peers))
 *                                     worst case, when every piece changes
 *   picker_set_sequential             O(1)
 * So a pick on a 100k-piece torrent does not walk the pieces, except past
 * pieces that this peer lacks (a peer with few pieces in a swarm where
 * everyone has different ones), and memory is about 22 bytes per piece,
 * plus pieces / 8 per peer, plus 24 bytes per block in progress.
 *
 * Piece and block sizes: every piece has piece_length bytes except the
 * last (last_piece_length); blocks are block_size bytes except the last
 * block of a piece.  Bitfields are BitTorrent's: piece 0 is the high bit
 * of byte 0; spare bits are ignored.
 */
#ifndef TD_DAEMON_PICKER_H
#define TD_DAEMON_PICKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PICKER_BLOCK_SIZE 16384
#define PICKER_PRIO_MAX 7
#define PICKER_PRIO_DEFAULT 4
#define PICKER_INITIAL_RANDOM 4 /* random pieces until we have this many */
#define PICKER_RANDOM_PROBES 64 /* random draws before rarest-first */
#define PICKER_MAX_DUPS 4       /* requesters of one block, at most */
#define PICKER_ENDGAME_DUPS 2   /* default requesters in end-game */
#define PICKER_PIECES_MAX (1u << 24)
#define PICKER_PIECE_LENGTH_MAX (1u << 28)
#define PICKER_PEERS_MAX 65535
#define PICKER_PEER_NONE (-1)

/* Pipeline sizing (picker_pipeline_depth). */
#define PICKER_REQQ_DEFAULT 250 /* when the peer did not say (BEP 10) */
#define PICKER_PIPELINE_MIN 4
#define PICKER_PIPELINE_MS 2000 /* keep this much data in flight */

struct picker;

struct picker_params {
    uint32_t n_pieces;          /* 1..PICKER_PIECES_MAX */
    uint32_t piece_length;      /* 1..PICKER_PIECE_LENGTH_MAX */
    uint32_t last_piece_length; /* 1..piece_length; 0 = piece_length */
    uint32_t block_size;        /* 0 = PICKER_BLOCK_SIZE */
    unsigned initial_random;    /* 0 = PICKER_INITIAL_RANDOM */
    bool no_initial_random;     /* rarest first from the first piece */
    unsigned endgame_dups;      /* 2..PICKER_MAX_DUPS; 0 = default */
    const uint8_t *have;        /* borrowed: verified pieces, or NULL */
    const uint8_t *priority;    /* borrowed: one per piece, or NULL (all
                                 * PICKER_PRIO_DEFAULT); clamped to 7 */
    uint64_t seed;              /* for the random choices */
};

/* One block to request: send REQUEST(piece, begin, length). */
struct picker_block {
    uint32_t piece;
    uint32_t begin;
    uint32_t length;
};

/* A file of the torrent, for picker_set_file_priorities(): bytes
 * [offset, offset + length) of the torrent's data. */
struct picker_file {
    uint64_t offset;
    uint64_t length;
    uint8_t priority; /* 0 = skip, 1..7 */
};

/* Return values of picker_block_received() and picker_block_written(). */
enum {
    PICKER_BLOCK_OK = 0,       /* taken; the piece is not complete */
    PICKER_PIECE_COMPLETE = 1, /* every block written: hash the piece */
};

/* A new picker.  Returns 0, -EINVAL (sizes out of range), -ENOMEM. */
int picker_new(struct picker **ret, const struct picker_params *params);

/* Free it; accepts NULL. */
void picker_free(struct picker *p);

/* --- peers -------------------------------------------------------- */

/* Add a peer that has no pieces yet.  tag is the caller's own id of it
 * (reported by picker_hash_failed(), so it should stay unique after the
 * peer is gone, e.g. a connection counter).  Returns a handle >= 0
 * (small, reused after picker_peer_remove()), -ENOMEM, or -ENOSPC past
 * PICKER_PEERS_MAX. */
int picker_peer_add(struct picker *p, uint32_t tag);

/* The peer leaves: its requests are released (its blocks can be picked
 * again), its pieces no longer count, pieces it claimed are free. */
void picker_peer_remove(struct picker *p, int peer);

/* The peer's bitfield (BITFIELD; NULL = HAVE_NONE), replacing what it had:
 * bits holds (n_pieces + 7) / 8 bytes, copied. */
void picker_peer_bitfield(struct picker *p, int peer, const uint8_t *bits);

/* HAVE_ALL: the peer is a seed. */
void picker_peer_have_all(struct picker *p, int peer);

/* HAVE piece.  Returns 0, or -EINVAL for a piece out of range. */
int picker_peer_have(struct picker *p, int peer, uint32_t piece);

/* Does the peer have the piece? */
bool picker_peer_has(const struct picker *p, int peer, uint32_t piece);

/* Does the peer have a piece we want and lack (should we be interested)? */
bool picker_peer_interesting(const struct picker *p, int peer);

/* Mark a peer fast (it claims whole pieces) or not. */
void picker_peer_set_fast(struct picker *p, int peer, bool fast);

/* The peer choked us (and, with the fast extension, its requests are
 * gone too): all its requested blocks go back to none. */
void picker_peer_choked(struct picker *p, int peer);

/* The peer rejected a request (BEP 6 REJECT), or the caller gave up on
 * it (picker_request_timeout: the block may be picked for another peer;
 * should the data still come, picker_block_received() takes it).  Returns
 * 0, or -ENOENT if the peer had not requested that block. */
int picker_peer_rejected(struct picker *p, int peer, uint32_t piece,
                         uint32_t begin);
int picker_request_timeout(struct picker *p, int peer, uint32_t piece,
                           uint32_t begin);

/* --- picking ------------------------------------------------------ */

/* Choose up to max blocks to request from the peer (see the order above)
 * and mark them requested by it.  The caller sends the requests.  Returns
 * the number written to out (0 when there is nothing this peer can give
 * us), or -ENOMEM if nothing could be picked for lack of memory. */
int picker_pick(struct picker *p, int peer, struct picker_block *out,
                size_t max);

/* As picker_pick(), but only among pieces[0..n) (BEP 6 allowed fast:
 * the pieces a peer that chokes us lets us fetch): the peer's partial
 * pieces of the set first, then new ones, in the order given; pieces we
 * have, do not want, the peer lacks, or a fast peer claimed are skipped;
 * no end-game.  O(n + blocks picked).  Returns as picker_pick(). */
int picker_pick_from(struct picker *p, int peer, const uint32_t *pieces,
                     size_t n, struct picker_block *out, size_t max);

/* How many requests to keep outstanding to a peer that sends us
 * rate_bytes_per_s, advertises reqq (0 = PICKER_REQQ_DEFAULT) and answers
 * in rtt_ms: enough blocks for PICKER_PIPELINE_MS plus one round trip of
 * data, at least PICKER_PIPELINE_MIN, at most reqq (the peer's limit
 * wins).  1 GB/s on loopback asks for reqq (hundreds).  O(1). */
unsigned picker_pipeline_depth(uint64_t rate_bytes_per_s, unsigned reqq,
                               unsigned rtt_ms);

/* --- data --------------------------------------------------------- */

#define PICKER_WRITTEN (1u << 0) /* the block is already on disk */

/* A block arrived from peer (flags: PICKER_WRITTEN when the peer thread
 * wrote it before reporting it).  The handles of the other peers that had
 * requested it (end-game) are written to cancel[] (room for
 * PICKER_MAX_DUPS) and counted in *ret_n_cancel (written on success
 * only): send them CANCEL; their requests are forgotten.  A block
 * whose request was released (choke, timeout) is still taken.  Returns
 * PICKER_BLOCK_OK, PICKER_PIECE_COMPLETE (queue the hash job), -EALREADY
 * (a duplicate: drop the data), -ENOENT (not a piece in progress: we
 * have it or never asked; drop the data), -EINVAL (bad piece, offset or
 * peer). */
int picker_block_received(struct picker *p, int peer, uint32_t piece,
                          uint32_t begin, unsigned flags, int *cancel,
                          size_t *ret_n_cancel);

/* A received block is now on disk.  Returns PICKER_BLOCK_OK,
 * PICKER_PIECE_COMPLETE, -ENOENT (not a received block), -EINVAL. */
int picker_block_written(struct picker *p, uint32_t piece, uint32_t begin);

/* A received block could not be written: it goes back to none.  Returns
 * 0, -ENOENT (not a received block), -EINVAL. */
int picker_block_lost(struct picker *p, uint32_t piece, uint32_t begin);

/* The piece passed its hash check (or was found on disk): we have it.
 * Returns 0, -EALREADY (had it), -EBUSY (in progress and not complete),
 * -EINVAL (out of range). */
int picker_hash_passed(struct picker *p, uint32_t piece);

/* The piece failed its hash check: all its blocks go back to none.  The
 * tags of the peers that sent its blocks are written to tags (at most
 * max, each once) so the caller can count against them.  Returns the
 * number of tags written, -EBUSY (not complete), -ENOENT (not in
 * progress), -EINVAL. */
int picker_hash_failed(struct picker *p, uint32_t piece, uint32_t *tags,
                       size_t max);

/* --- priorities and modes ----------------------------------------- */

/* Set one piece's priority (0..7, clamped).  A piece in progress set to
 * 0 is not picked further; its outstanding requests stay. */
void picker_set_piece_priority(struct picker *p, uint32_t piece, uint8_t prio);

/* Map file priorities onto pieces: a piece gets the highest priority of
 * the files (of non-zero length) it overlaps; pieces no file covers get
 * 0.  Returns 0 or -ENOMEM (nothing changed). */
int picker_set_file_priorities(struct picker *p,
                               const struct picker_file *files, size_t n);

/* Sequential mode: new pieces in index order (for streaming). */
void picker_set_sequential(struct picker *p, bool on);

/* --- queries ------------------------------------------------------ */

uint32_t picker_n_pieces(const struct picker *p);
uint32_t picker_n_have(const struct picker *p);
bool picker_have(const struct picker *p, uint32_t piece);
uint8_t picker_piece_priority(const struct picker *p, uint32_t piece);
/* Peers that have the piece (seeds included). */
uint32_t picker_availability(const struct picker *p, uint32_t piece);
uint32_t picker_piece_size(const struct picker *p, uint32_t piece);
uint32_t picker_piece_blocks(const struct picker *p, uint32_t piece);
/* Peers currently requesting the block (0 when none, or received). */
unsigned picker_block_requesters(const struct picker *p, uint32_t piece,
                                 uint32_t begin);
/* Is every wanted piece we lack in progress, with no block left
 * unrequested?  O(partial pieces). */
bool picker_endgame(const struct picker *p);
/* Every wanted piece verified. */
bool picker_complete(const struct picker *p);

/* Check every internal invariant (for tests; O(pieces + blocks in
 * progress + peers * pieces)).  Returns true when consistent. */
bool picker_check(const struct picker *p);

#endif
