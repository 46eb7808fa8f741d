/* watch — the watch directory: .torrent files dropped there are added.
 *
 * Thread: reactor only (the scans and renames run on worker threads).
 *
 * A scan lists the directory, reads and parses up to WATCH_BATCH files
 * named *.torrent (not hidden, regular files) on a worker thread.  Each
 * usable one is handed to the owner's add callback; once the owner says the
 * add is durable (watch_added()), the file is renamed to <name>.added.  A
 * file that is not a usable .torrent is renamed to <name>.invalid and the
 * reason logged, unless it changed in the last WATCH_SETTLE seconds (it may
 * still be being written: it is looked at again then).  A file whose add
 * failed stays for the next scan.
 *
 * Scans run when inotify reports a change in the directory and, always,
 * every interval seconds: the polling fallback for file systems whose
 * changes inotify does not see (NFS, FUSE, ...) and for systems without
 * inotify.  $TORRENTD_WATCH_POLL=1 turns inotify off (for tests).  One scan
 * runs at a time, including the renames of its files.
 */
#ifndef TD_DAEMON_WATCH_H
#define TD_DAEMON_WATCH_H

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct meta_info;
struct watch;
struct worker;

#define WATCH_BATCH 32 /* files per scan */
#define WATCH_SETTLE 2 /* seconds a file must be unchanged to be refused */

/* Called for each usable file: ownership of meta and raw (the file's
 * bytes, len of them) is taken.  The owner must call watch_added(token)
 * exactly once, later or from inside the callback.  path is the file's
 * (for log lines). */
typedef void (*watch_add_t)(void *arg, struct meta_info *meta, uint8_t *raw,
                            size_t len, const char *path, void *token);

/* Watch dir, scanning on cpu and renaming on io (both borrowed: they
 * outlive the watch).  Returns 0 or a negative errno. */
int watch_new(struct watch **ret, struct ev_loop *loop, const char *dir,
              uint64_t interval_s, struct worker *cpu, struct worker *io,
              watch_add_t add, void *arg);

/* The add of token's file is durable (ok) or failed (!ok). */
void watch_added(void *token, int ok);

/* Stop watching and free; accepts NULL.  A scan under way still
 * completes: its jobs keep what they need, and its files are neither
 * added nor renamed any more (tokens handed out stay valid until
 * watch_added()). */
void watch_free(struct watch *w);

#endif
