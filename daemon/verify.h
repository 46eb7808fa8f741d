/* verify — check a torrent's data on disk against its piece hashes.
 *
 * Thread: verify_new/verify_free on the reactor; verify_run on a worker
 * thread (it is a worker_run_t); verify_cancel and verify_progress from
 * the reactor while verify_run is running (atomics).
 *
 * The job reads each piece from the files under dir (pad files are zeros,
 * missing or short files fail the pieces they hold), takes its SHA-1 and
 * compares it with the metadata.  Results: a bitfield of the pieces that
 * passed, the verified bytes per file, whether any file existed at all, and
 * the first read error that is not "missing" (permission denied, I/O
 * error), which the session reports as the torrent's error.
 */
#ifndef TD_DAEMON_VERIFY_H
#define TD_DAEMON_VERIFY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct meta_info;

enum verify_mode {
    VERIFY_FULL,  /* hash every piece */
    VERIFY_STAT,  /* only: does any file exist? (any_data) */
    VERIFY_QUICK, /* only: is every file with verified bytes (expect[i] >
                   * 0) still there at its full length? (mismatch) */
    VERIFY_MODE_MAX
};

struct verify_job {
    /* In: set by verify_new. */
    const struct meta_info *meta; /* borrowed: immutable, outlives the job */
    char *dir;                    /* owned */
    enum verify_mode mode;
    uint64_t *expect; /* owned: VERIFY_QUICK, bytes per file */
    atomic_bool cancel;
    atomic_uint done; /* pieces checked so far */

    /* Out: written by verify_run, read by the reactor after done(). */
    uint8_t *have;       /* owned (n_pieces bits) */
    uint64_t *file_have; /* owned, a count per file */
    uint32_t n_pieces;
    bool any_data; /* some file of the torrent exists */
    bool mismatch; /* VERIFY_QUICK: a file changed */
    bool cancelled;
    int error; /* 0 or -errno of error_path */
    char error_path[512];
    void *owner; /* for the caller */
    void *ctx;   /* for the caller */
};

/* A job for meta's data under dir.  NULL on out of memory. */
struct verify_job *verify_new(const struct meta_info *meta, const char *dir,
                              enum verify_mode mode);
void verify_free(struct verify_job *job);

/* The worker function: returns 0, or -ECANCELED, or -ENOMEM. */
int verify_run(void *job);

void verify_cancel(struct verify_job *job);
uint32_t verify_progress(const struct verify_job *job);

#endif
