/* torrent — the reactor-side record of one torrent.
 *
 * Thread: reactor only, except torrent_file_have() (any thread: it reads
 * immutable metadata and the caller's arrays only).
 *
 * A torrent is either complete metadata (meta, from a .torrent or, later,
 * from peers) or a magnet link waiting for metadata (magnet).  Its id is a
 * small integer given once and kept across restarts.  The session owns the
 * torrents; this module knows the record, its state names, its JSON object
 * and how a client names a torrent.
 *
 * Sizes: size_bytes counts the wanted files (pad files never count),
 * have_bytes the verified bytes inside them.  A torrent is complete when
 * every wanted byte is verified (and it has metadata).
 */
#ifndef TD_DAEMON_TORRENT_H
#define TD_DAEMON_TORRENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/magnet.h"

struct json_object;
struct meta_info;
struct state_resume;

enum torrent_state {
    TORRENT_CHECKING,
    TORRENT_QUEUED,
    TORRENT_METADATA,
    TORRENT_DOWNLOADING,
    TORRENT_SEEDING,
    TORRENT_PAUSED,
    TORRENT_ERROR,
    TORRENT_MOVING, /* torrent.move: its files go elsewhere, it waits */
    TORRENT_STATE_MAX
};

struct torrent {
    uint32_t id; /* >= 1, stable across restarts */
    uint8_t info_hash[20];
    char hex[41];           /* info_hash, lowercase hex */
    struct meta_info *meta; /* owned, immutable; NULL for a magnet */
    struct magnet magnet;   /* owned when meta is NULL, else zeroed */

    enum torrent_state state;
    bool paused;          /* the user stopped it */
    char *download_dir;   /* owned, absolute */
    char *error;          /* owned: the message of TORRENT_ERROR */
    int64_t added_at;     /* seconds since the epoch */
    int64_t completed_at; /* 0 = not yet */

    uint64_t downloaded; /* payload bytes, all time */
    uint64_t uploaded;
    uint64_t download_limit; /* bytes/s, 0 = none */
    uint64_t upload_limit;
    int64_t ratio_limit; /* thousandths, -1 = the session's, 0 = none */
    int64_t idle_limit;  /* thousandths of a minute, -1 = the session's,
                          * 0 = none (daemon/seedlimit.h) */
    int stop_reason;     /* enum seedlimit_reason: why the session paused
                          * it (SEEDLIMIT_NONE: it did not) */
    bool seed_override;  /* started by hand past a limit: no seed limit
                          * stops it until one of its limits changes */

    uint8_t *have;        /* owned bitfield of verified pieces */
    uint32_t n_pieces;    /* bits in have (0 = none verified) */
    uint8_t *priority;    /* owned: enum state_prio per file, or
                           * NULL (every file normal) */
    uint64_t *file_have;  /* owned: verified bytes per file, or NULL */
    uint64_t size_wanted; /* cached by torrent_recount() */
    uint64_t have_wanted;
    uint64_t size_total;  /* every non-pad file, wanted or not: cached */
    uint64_t have_total;  /* by torrent_recount() too */

    /* The session's bookkeeping. */
    unsigned jobs;        /* worker jobs that borrow this record */
    bool removed;         /* out of the session; freed at jobs == 0 */
    bool check_wanted;    /* verify once the running check ends */
    bool completion_pending; /* completed by a flush while stopped or
                              * moving: session_settle() makes it
                              * seeding and announces it then */
    void *check;          /* the running check (session-owned) */
    uint32_t check_done;  /* pieces checked so far (for progress) */
    void *move;           /* the running torrent.move (session-owned) */
    uint64_t queue_order; /* order of start, for the queue */

    /* The engine's (daemon/engine.h). */
    void *engine;             /* struct engine, or NULL */
    bool sequential;          /* pieces in order (streaming) */
    uint64_t down_rate;       /* payload bytes/s, updated every second */
    uint64_t up_rate;
    uint32_t peers_connected;
    unsigned storages; /* its storages still open (peer threads, hash and
                        * flush jobs may hold one after a stop) */
};

/* Make a torrent from metadata (ownership of meta taken, also on failure)
 * or from a magnet (its contents moved into the torrent; *m is zeroed, also
 * on failure).  download_dir is copied.  The state is TORRENT_PAUSED until
 * the session decides.  Returns 0 or -ENOMEM. */
int torrent_new_meta(struct torrent **ret, struct meta_info *meta, uint32_t id,
                     const char *download_dir, int64_t now);
int torrent_new_magnet(struct torrent **ret, struct magnet *m, uint32_t id,
                       const char *download_dir, int64_t now);
void torrent_free(struct torrent *t);

const char *torrent_state_name(enum torrent_state s);

/* The name people see: the metadata's, the magnet's dn, or the hex hash. */
const char *torrent_name(const struct torrent *t);

/* Files in the metadata (0 for a magnet). */
size_t torrent_n_files(const struct torrent *t);

/* Is file i wanted (priority not skip)? */
bool torrent_file_wanted(const struct torrent *t, size_t i);

/* Recompute size_wanted and have_wanted from file_have and priority, and
 * size_total and have_total (the same over every non-pad file, wanted or
 * not) from file_have.  Call it after every change to file_have, priority
 * or meta.  Cost: O(files). */
void torrent_recount(struct torrent *t);

/* Bytes of the whole torrent (pad files aside), wanted or not, that are
 * not verified yet: what trackers call "left".  0 for a magnet (the
 * caller decides what a missing size means).  Cost: O(1). */
uint64_t torrent_bytes_missing(const struct torrent *t);

/* Complete: has metadata and every wanted byte verified. */
bool torrent_complete(const struct torrent *t);

/* Take a new bitfield (ownership of have and file_have taken; either may be
 * NULL for "nothing verified"). */
void torrent_set_have(struct torrent *t, uint8_t *have, uint32_t n_pieces,
                      uint64_t *file_have);

/* Compute per-file verified bytes from a bitfield: ret[i] for each file of
 * meta (n_files entries, written).  Cost: O(pieces + files).  Any thread. */
void torrent_file_have(const struct meta_info *meta, const uint8_t *have,
                       uint32_t n_pieces, uint64_t *ret);

/* Apply a resume record (copies what it needs).  Bitfields and priority
 * lists that do not fit the metadata are dropped (the caller may then
 * verify).  Returns 0 or -ENOMEM. */
int torrent_apply_resume(struct torrent *t, const struct state_resume *r);

/* Fill r from t (borrowing t's arrays and strings: r is valid while t is
 * unchanged; do not release it). */
void torrent_to_resume(const struct torrent *t, struct state_resume *r);

/* The torrent's JSON object (see torrentd-api(7), "THE TORRENT OBJECT").
 * NULL on out of memory. */
struct json_object *torrent_to_json(const struct torrent *t);

/* Find the torrent a client names in v[0..n): spec is a JSON integer (the
 * id), or a string: decimal digits (the id), 40 hex digits (the
 * info-hash), or 6 to 39 hex digits (a unique prefix of it).  Returns 0
 * and *ret, -ENOENT (no such torrent), -ENOTUNIQ (the prefix names
 * several), -EINVAL (spec has none of these forms).  Removed torrents are
 * skipped.  Cost: O(n). */
int torrent_find(struct torrent *const *v, size_t n, struct json_object *spec,
                 struct torrent **ret);

#endif
