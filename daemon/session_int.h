/* session_int — what session.c and session_rpc.c share: the session's
 * record, the io jobs and the state machine's steps.  Not a contract for
 * anyone else: include daemon/session.h.
 *
 * Thread: reactor only.
 */
#ifndef TD_DAEMON_SESSION_INT_H
#define TD_DAEMON_SESSION_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"
#include "daemon/events.h"
#include "daemon/seedlimit.h"
#include "daemon/session.h"
#include "daemon/state.h"
#include "daemon/torrent.h"

struct dhtsvc;
struct engine_ctx;
struct json_object;
struct lsd;
struct meta_info;
struct rpc_call;

#define SESSION_SEQ_GAP 100000u   /* event numbers skipped after a crash */
#define SESSION_STOP_TIMEOUT 15.0 /* seconds session_stop() may take */
#define SESSION_CPU_THREADS 2
#define SESSION_MAX_TORRENTS 100000
#define SESSION_MAX_B64 ((size_t)STATE_MAX_TORRENT / 3 * 4 + 8)
#define IO_MAX_OPS 6
/* torrent.progress (events.h): the timer's period, and how many tracked
 * torrents one tick looks at (more than that: each is looked at less
 * often than once a second, never more often). */
#define SESSION_PROGRESS_TICK 0.25
#define SESSION_PROGRESS_BUDGET 256

/* A torrent that may report progress (downloading or checking), and its
 * last report. */
struct session_progress {
    struct torrent *t; /* borrowed: in the session's list */
    struct events_throttle th;
};

struct session {
    struct ev_loop *loop;          /* borrowed */
    struct config base;            /* owned: file + --set */
    struct config cfg;             /* owned: effective (base + runtime) */
    struct state_settings runtime; /* owned: session.set values */
    struct session_hooks hooks;
    struct events *events; /* owned */
    struct worker *io;     /* owned: one thread, ordered */
    struct worker *cpu;    /* owned: checking data */
    struct worker *parse;  /* owned: .torrent files, one thread */
    struct worker *mover;  /* owned: torrent.move, one thread (long copies
                            * wait neither state writes nor checks) */
    struct hooks *progs;   /* owned: running on_complete */
    struct torrent **v;    /* owned torrents, by id */
    size_t n, cap;
    uint32_t next_id;
    int64_t started_at;
    ev_tstamp started_mono;
    uint64_t queue_counter;
    bool in_queue_pass;
    bool restoring; /* no events for the initial states */

    bool stopping;
    void (*stop_done)(void *arg);
    void *stop_arg;
    ev_timer stop_timer;
    unsigned stop_waiting; /* the final io job, the trackers' "stopped" */

    struct watch *watch; /* owned, or NULL */
    struct engine_ctx *engine; /* owned: peers, trackers, hashing */
    struct dhtsvc *dht; /* owned; NULL when dht = off or not started */

    /* torrent.move (session_rpc.c): every move not ended yet, and the
     * safe point that submits those whose storages closed. */
    struct move_ctx *moves; /* owned list */
    ev_prepare move_prep;
    struct lsd *lsd;    /* owned; NULL when lsd = off or not started */

    /* torrent.progress: only the torrents downloading or checking, so
     * that a tick never walks the whole list; the timer runs while there
     * are some.  Kept in step by session_set_state() and
     * session_list_remove(); a tick drops what no longer belongs. */
    struct session_progress *prog; /* owned array */
    size_t n_prog, cap_prog;
    size_t prog_cursor; /* where the next tick starts */
    ev_timer prog_timer;
};

enum io_op_type {
    IO_WRITE,       /* state dir: name <- data */
    IO_UNLINK,      /* state dir: name */
    IO_DELETE_DATA, /* the torrent's files under data_dir */
    IO_STAT,        /* any_data: does some file of meta exist? */
    IO_CALL,        /* fn(fn_arg) on the worker (the engine's flush) */
};

struct io_op {
    enum io_op_type type;
    char name[96];
    char *data; /* owned */
    size_t len;
    int (*fn)(void *arg);       /* IO_CALL: returns 0 or -errno */
    void *fn_arg;               /* owned: freed by fn_free with the job */
    void (*fn_free)(void *arg); /* may be NULL */
};

struct io_job;
/* Called on the reactor when an io job is done, before the default reply
 * (which it replaces: it answers j->call itself and sets it to NULL). */
typedef void (*io_after_t)(struct session *s, struct io_job *j, int r);

/* A list of state directory operations run in order on the io worker,
 * stopping at the first failure; then after() or the default: reply result
 * to call, or an RPC_E_IO error. */
struct io_job {
    struct session *s;
    char *dir; /* owned: the state directory */
    struct io_op ops[IO_MAX_OPS];
    size_t n_ops;
    struct torrent *t;            /* borrowed, counted in t->jobs */
    const struct meta_info *meta; /* borrowed through t */
    char *data_dir;               /* owned */
    struct rpc_call *call;        /* answered in done */
    struct json_object *result;   /* owned: the reply on success */
    io_after_t after;
    void *watch_token; /* watch_added() when done */
    bool any_data;     /* IO_STAT */
    char failed[128];  /* the op that failed */
};

/* --- session.c ---
 * io jobs: session_io_job_new() borrows t (counted in t->jobs) and takes
 * nothing else; session_io_add_write() takes data; session_io_submit()
 * runs it (on failure to queue, done runs at once with the error).
 * States: session_set_state() publishes torrent.state (and torrent.error);
 * session_settle() puts a torrent where it belongs when nothing runs on
 * it; session_start_check() verifies its data on the cpu worker.
 * session_save_resume() writes its resume record (nobody waits);
 * session_save_and_reply() writes it, then replies result (taken);
 * session_reply_when_durable() replies once every earlier write is done.
 */

void session_apply_live(struct session *s, const struct config *old);
void session_completed(struct session *s, struct torrent *t);
size_t session_count_state(const struct session *s, enum torrent_state st);
struct torrent *session_find_hash(struct session *s, const uint8_t *hash);
struct io_op *session_io_add(struct io_job *j, enum io_op_type type,
                             const char *name);
int session_io_add_resume(struct io_job *j, const struct torrent *t);
int session_io_add_write(struct io_job *j, const char *name, char *data,
                         size_t len);
void session_io_job_free(struct io_job *j);
struct io_job *session_io_job_new(struct session *s, struct torrent *t,
                                  struct rpc_call *call);
void session_io_submit(struct session *s, struct io_job *j);
int session_list_insert(struct session *s, struct torrent *t);
void session_list_remove(struct session *s, struct torrent *t);
int64_t session_now_s(void);
void session_publish_torrent(struct session *s, const char *type,
                             const struct torrent *t,
                             struct json_object *extra);
void session_queue_pass(struct session *s);
void session_quick_check(struct session *s, struct torrent *t);
void session_reply_when_durable(struct session *s, struct rpc_call *call,
                                struct json_object *result);
void session_save_and_reply(struct session *s, struct torrent *t,
                            struct rpc_call *call, struct json_object *result);
void session_save_resume(struct session *s, struct torrent *t);
void session_set_state(struct session *s, struct torrent *t,
                       enum torrent_state st);
/* Put t in state error with the message (logged once). */
void session_set_error(struct session *s, struct torrent *t, const char *fmt,
                       ...) __attribute__((format(printf, 3, 4)));
void session_settle(struct session *s, struct torrent *t);
void session_start_check(struct session *s, struct torrent *t);
void session_status_changed(struct session *s);
struct json_object *session_torrent_json(struct torrent *t);
void session_torrent_unref(struct torrent *t);

/* Seed limits (seedlimit.h).  session_seed_input() fills ret from t and
 * the session's settings (idle_ms: the engine's measure of idleness).
 * session_seed_ratio_reached(): is t complete and at its ratio limit now?
 * session_seed_limit_reached(): the engine's tick of t found a limit
 * reached: t is paused as torrent.stop would (its engine stops inside
 * this call, its trackers get "stopped"), t->stop_reason says why,
 * torrent.seed_limit is published and the resume record written.
 * session_seed_rearm(): one of t's limits changed: forget a start by
 * hand past a limit (seed_override) and the last stop's reason. */
void session_seed_input(const struct session *s, const struct torrent *t,
                        int64_t idle_ms, struct seedlimit_in *ret);
bool session_seed_ratio_reached(const struct session *s,
                                const struct torrent *t);
void session_seed_limit_reached(struct session *s, struct torrent *t,
                                enum seedlimit_reason why);
void session_seed_rearm(struct session *s, struct torrent *t);

/* --- session_rpc.c --- */

/* The engine closed t's last storage (engine.c): no peer thread or job
 * does I/O on its files any more; a torrent.move waiting for that
 * begins. */
void session_storage_closed(struct session *s, struct torrent *t);

/* Stopping (session_stop(), session_free() before the workers go): every
 * move not submitted yet ends now (cancelled: its call fails, its resume
 * record is written while the io worker is there), the running one is
 * asked to stop (move_job_cancel(): it moves back, its move_done() comes
 * from the move worker); the safe-point watcher stops. */
void session_moves_cancel(struct session *s);

/* watch_add_t for the watch directory (watch.h). */
void session_watch_add(void *arg, struct meta_info *meta, uint8_t *raw,
                       size_t len, const char *path, void *token);

/* BEP 9: the engine fetched and checked the metadata of magnet t: meta and
 * raw[0..len) (a .torrent: the info dictionary and the magnet's trackers)
 * are taken.  t becomes a full torrent as if its .torrent had been added
 * (saved in the state directory through the io worker, the .magnet
 * removed, state metadata -> downloading or a check). */
void session_metadata_received(struct session *s, struct torrent *t,
                               struct meta_info *meta, uint8_t *raw,
                               size_t len);

/* --- dht_rpc.c: dht.status, dht.get_peers, dht.announce --- */
void session_m_dht_status(struct session *s, struct rpc_call *call,
                          struct json_object *params);
void session_m_dht_get_peers(struct session *s, struct rpc_call *call,
                             struct json_object *params);
void session_m_dht_announce(struct session *s, struct rpc_call *call,
                            struct json_object *params);

/* --- session.c, for lsd.c (BEP 14) ---
 * session_lsd_hashes(): from torrent index *cursor on, look at up to
 * budget torrents and write to ret (at most max) the info-hashes of those
 * that run (downloading, seeding, fetching metadata) and are not private
 * (BEP 27); advances *cursor and sets *ret_more to false at the end of
 * the list.  Returns how many it wrote.  (The list may change between
 * calls: a torrent may then be skipped or seen twice in a round.)
 * session_lsd_wants(): is hash such a torrent? */
size_t session_lsd_hashes(struct session *s, size_t *cursor, size_t budget,
                          uint8_t (*ret)[20], size_t max, bool *ret_more);
bool session_lsd_wants(struct session *s, const uint8_t *hash);

#endif
