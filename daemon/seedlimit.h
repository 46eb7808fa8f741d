/* seedlimit — when a seeding torrent has seeded enough: the share ratio
 * and idle limits (Transmission's "stop seeding at ratio" and "stop seeding
 * if idle").
 *
 * Thread: any.  Pure functions: no clock, no I/O, no state; the engine
 * feeds them its counters on its per-torrent tick (engine.c) and the
 * session acts on the answer (it stops the torrent as torrent.stop would).
 *
 * Units, as everywhere in torrentd's settings and resume records:
 *   ratio limits are thousandths of a ratio (2000 = 2.0);
 *   idle limits are thousandths of a minute (60000 = an hour; 50 = 3 s).
 * A torrent's own value is -1 for "the session's" (config seed_ratio_limit,
 * seed_idle_limit) or >= 0, where 0 means "no limit for this torrent"
 * whatever the session says.  The session's value is 0 for "no limit".
 *
 * The ratio is the one torrent.get shows: uploaded bytes over the larger
 * of downloaded bytes and the wanted size (the bytes of wanted files), as
 * Transmission measures it.  With nothing wanted (a base of 0) no ratio is
 * ever reached.
 */
#ifndef TD_DAEMON_SEEDLIMIT_H
#define TD_DAEMON_SEEDLIMIT_H

#include <stdint.h>

/* Why a torrent was stopped by the session rather than by its user. */
enum seedlimit_reason {
    SEEDLIMIT_NONE = 0,  /* not stopped by a limit */
    SEEDLIMIT_RATIO = 1, /* the share ratio reached its limit */
    SEEDLIMIT_IDLE = 2,  /* nothing uploaded for the idle limit */
    SEEDLIMIT_REASON_MAX
};

#define SEEDLIMIT_RATIO_MAX 1000000000LL /* 1e6 as thousandths */
#define SEEDLIMIT_IDLE_MAX 525600000LL   /* a year, thousandths of a minute */

struct seedlimit_in {
    uint64_t uploaded;    /* payload bytes, all time */
    uint64_t downloaded;  /* payload bytes, all time */
    uint64_t size_wanted; /* bytes of the wanted files */
    int64_t ratio_limit;  /* the torrent's: -1 session's, 0 none */
    int64_t idle_limit;   /* the torrent's: -1 session's, 0 none */
    uint64_t session_ratio_limit; /* 0 none */
    uint64_t session_idle_limit;  /* 0 none */
    int64_t idle_ms; /* time seeding without uploading a byte */
};

/* The limit that applies: own if >= 0, else the session's.  0 = none. */
uint64_t seedlimit_effective(int64_t own, uint64_t session);

/* Is a limit reached?  The ratio is looked at first: a torrent past both
 * reports SEEDLIMIT_RATIO.  The caller asks only while the torrent seeds. */
enum seedlimit_reason seedlimit_check(const struct seedlimit_in *in);

/* "ratio", "idle", or NULL for SEEDLIMIT_NONE (and out-of-range values). */
const char *seedlimit_reason_name(enum seedlimit_reason r);

#endif
