/* session — every torrent torrentd holds, its settings and its state on
 * disk.
 *
 * Thread: reactor only.
 *
 * The session owns the torrents, the run-time settings (session.set,
 * persisted in the state directory), the event log, the watch directory
 * and the completion hook.  It answers the control API's methods (rpc.h).
 * Writes to the state directory happen on a worker thread and are durable
 * (temp file, fsync, rename, fsync of the directory) before a change is
 * acknowledged.
 */
#ifndef TD_DAEMON_SESSION_H
#define TD_DAEMON_SESSION_H

#include <stdbool.h>

struct buf;
struct config;
struct dhtsvc;
struct events;
struct ev_loop;
struct session;

struct session_hooks {
    void (*shutdown_requested)(void *arg); /* daemon.shutdown was called */
    void (*status_changed)(void *arg);     /* STATUS= line may differ */
    void *arg;
};

/* Create the session: restore every torrent from cfg->state_dir (corrupt
 * files are reported and set aside), apply the run-time settings kept
 * there, start the watch directory.  Ownership of cfg (the file and --set
 * layers, see config.h) is taken.  Returns 0 or a negative errno after
 * logging why. */
int session_new(struct session **ret, struct ev_loop *loop,
                struct config *cfg, const struct session_hooks *hooks);

/* Stop everything and free; accepts NULL.  Call session_stop() first for a
 * clean shutdown. */
void session_free(struct session *s);

/* Begin a clean stop: save state, tell trackers, with a bounded time;
 * done(arg) is called (from the reactor) when finished. */
void session_stop(struct session *s, void (*done)(void *arg), void *arg);

/* SIGHUP: new_cfg is the re-read file plus --set (its contents are taken
 * and *new_cfg left zeroed, as with session_new()).  Keys
 * that can change live are applied unless a run-time setting overrides
 * them.  Appends a one-line report to report: "applied: a, b; needs
 * restart: c; overridden by run-time settings: d" (each part only when
 * not empty; "no changes" when nothing changed). */
int session_reload(struct session *s, struct config *new_cfg,
                   struct buf *report);

/* One line for systemd's STATUS=, e.g. "3 torrents: 1 downloading,
 * 2 seeding; down 1.2 MB/s, up 300 kB/s". */
void session_status_line(struct session *s, struct buf *out);

/* The session's event log (owned by the session). */
struct events *session_events(struct session *s);

/* The effective configuration (owned by the session). */
const struct config *session_config(const struct session *s);

/* The session's DHT node (owned by the session), or NULL when config
 * `dht` is off or it could not start.  Valid until session_free(). */
struct dhtsvc *session_dht(struct session *s);

#endif
