/* move — a torrent's files from one download directory to another
 * (torrent.move).
 *
 * Thread: move_dir_normalize() and move_job_new()/move_job_free() any
 * (no I/O); move_run() blocks on the disk: a worker only (the session's
 * "move" worker), never the reactor; move_job_cancel() any, also while
 * move_run() runs.
 *
 * What move_run() does, file by file (pad files and BEP 47 symlink
 * entries aside: storage never creates them):
 *   1. Looks first: every file of the torrent that exists under `from`
 *      must be a regular file, and nothing may exist at its place under
 *      `to` (no overwriting: a different file there refuses the whole
 *      move before anything moves).  Files not there yet (a download that
 *      has not reached them) are skipped.
 *   2. Moves each file: renameat2(RENAME_NOREPLACE) when both are on one
 *      filesystem (a filesystem without RENAME_NOREPLACE: link, then
 *      unlink); else (EXDEV) copies it into an unnamed file (O_TMPFILE)
 *      in its destination directory (where the filesystem has none: a new
 *      name ".torrentd-move.<i>.<k>" made with O_EXCL), fdatasync()s it,
 *      gives it its final name (never replacing one), fsync()s the
 *      directory and only then unlinks the source.  A file is therefore
 *      always whole at one of its two places.  A copy keeps the holes of
 *      a sparse file (SEEK_DATA/SEEK_HOLE: a half-downloaded file is not
 *      written in full) and goes by steps of MOVE_COPY_CHUNK bytes
 *      (copy_file_range; pread/pwrite where that is refused).
 *   3. Removes the source directories that are empty now (deepest first;
 *      `from` itself stays).
 * A failure half way moves back, the same way, what was moved (and
 * removes the directories below `to` that it made and that are empty
 * again; `to` itself stays), so that every file is where it was; the
 * message says what failed.
 *
 * Cancel (move_job_cancel(), torrentd stopping): move_run() looks between
 * files and between the steps of a copy; a cancelled move moves back
 * what it moved (renames are instant; a file being copied keeps its
 * source, its copy goes) and returns -ECANCELED.
 *
 * Below `from` and `to` no symlink is followed: every directory is opened
 * one component at a time with O_NOFOLLOW | O_DIRECTORY, files with
 * O_NOFOLLOW (a symlink planted at the destination fails with ELOOP or
 * ENOTDIR; one at the source is "not a regular file").  `to` itself is
 * the user's: followed as it is, created with its parents (mode 0755)
 * when missing.
 *
 * With move_data false nothing moves: move_run() only checks that `to` is
 * an existing directory (the data is supposed to be there already).
 */
#ifndef TD_DAEMON_MOVE_H
#define TD_DAEMON_MOVE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct meta_info;

#define MOVE_DIR_MAX 4000        /* bytes of a download directory */
#define MOVE_ERR_MAX 1024        /* bytes of the message of a failure */
#define MOVE_COPY_BUF (1u << 20) /* pread/pwrite copy buffer */
/* Bytes per copy step: a cancel waits for at most one. */
#define MOVE_COPY_CHUNK ((size_t)64 << 20)

struct move_job {
    const struct meta_info *meta; /* borrowed: outlives the job */
    char *from;                   /* owned: the current download dir */
    char *to;                     /* owned: the new one */
    bool move_data;               /* false: only check `to` */
    bool force_copy;              /* tests: copy even on one filesystem */
    size_t fail_after;            /* tests: after this many files moved,
                                   * fail the next with -ENOSPC (0: never) */
    size_t cancel_after;          /* tests: cancel once this many files
                                   * moved (0: never) */
    uint64_t cancel_after_bytes;  /* tests: cancel once this many bytes
                                   * copied (0: never) */
    size_t copy_chunk;            /* tests: bytes per copy step
                                   * (0: MOVE_COPY_CHUNK) */
    atomic_bool cancel;           /* move_job_cancel() */
    /* move_run()'s own: the directories below `to` it made (owned
     * paths relative to `to`, in the order made). */
    char **made;
    size_t n_made;
    /* Results, written by move_run() (read them after it returned). */
    bool same;      /* `from` and `to` are one directory: no-op */
    bool split;     /* failed, and some file could not be moved
                     * back: it stays at `to` (error says which) */
    size_t renamed; /* files moved by rename */
    size_t copied;  /* files moved by copying */
    uint64_t copied_bytes;
    char error[MOVE_ERR_MAX]; /* the user's message on failure */
    /* The caller's (the session's bookkeeping). */
    void *owner;
    void *ctx;
};

/* Check and normalize a download directory: absolute, no ".." component
 * (it would mean another place once a symlink is on the way), shorter
 * than MOVE_DIR_MAX; "." components, repeated and trailing slashes are
 * dropped ("/" stays "/").  Writes it to ret (size n, NUL-terminated).
 * Pure.  Returns its length, -EINVAL (relative, empty, ".."), or
 * -ENAMETOOLONG. */
int move_dir_normalize(const char *dir, char *ret, size_t n);

/* Does move_run() move file i of meta (not a pad file nor a symlink
 * entry)? Pure. */
bool move_file_moves(const struct meta_info *meta, size_t i);

/* A job for meta's files from `from` to `to` (both copied; give them
 * normalized).  Returns NULL on out of memory. */
struct move_job *move_job_new(const struct meta_info *meta, const char *from,
                              const char *to, bool move_data);

/* Accepts NULL. */
void move_job_free(struct move_job *j);

/* Ask a running (or not yet run) move_run() of j to stop: see above.  Any
 * thread; the job must not be freed meanwhile. */
void move_job_cancel(struct move_job *j);

/* worker_run_t: do the job (see above).  Returns 0 (j->same tells a
 * no-op) or -errno with j->error set (-ECANCELED: cancelled, moved
 * back).  Blocks. */
int move_run(void *arg);

#endif
