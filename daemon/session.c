/* session — every torrent torrentd holds, its settings and its state on
 * disk.
 *
 * This file: the torrents' states, the io jobs, checking data, restoring
 * the state directory, start, stop and reload.  The control API's methods
 * are in session_rpc.c; what both share is in session_int.h.
 *
 * The reactor owns everything here.  Disk work goes to two worker pools:
 *   io   one thread: writes to the state directory, renames in the watch
 *        directory (watch.c), deleting data.  One thread keeps the writes
 *        in the order they were made, and a job's done() means every
 *        earlier write is durable; replies that promise durability wait
 *        for it.
 *   cpu  ("hash") checking data: long jobs for big torrents.
 *   parse one thread: decoding and parsing .torrent files, scanning the
 *        watch directory, quick looks at the data at start; kept apart so
 *        that adding a torrent never waits behind a long check.
 * A torrent that a job borrows is counted in t->jobs; a removed torrent
 * leaves the list at once and is freed when its last job is done.
 *
 * Event sequence numbers: the session record keeps the last one given.  A
 * clean stop writes it exactly; after a crash the next start skips
 * SESSION_SEQ_GAP numbers, so that no number is ever given twice.
 */
#include "daemon/session.h"
#include "daemon/session_int.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/magnet.h"
#include "common/metainfo.h"
#include "daemon/config.h"
#include "daemon/dhtsvc.h"
#include "daemon/engine.h"
#include "daemon/events.h"
#include "daemon/hook.h"
#include "daemon/lsd.h"
#include "daemon/rpc.h"
#include "daemon/state.h"
#include "daemon/torrent.h"
#include "daemon/verify.h"
#include "daemon/watch.h"
#include "daemon/worker.h"

/* --- the session ------------------------------------------------------- */

static void watch_start(struct session *s);
static void watch_stop(struct session *s);
static void progress_forget(struct session *s, struct torrent *t);
static void progress_state(struct session *s, struct torrent *t,
                           enum torrent_state old);

int64_t
session_now_s(void)
{
    return (int64_t)time(NULL);
}

struct events *
session_events(struct session *s)
{
    return s->events;
}

const struct config *
session_config(const struct session *s)
{
    return &s->cfg;
}

struct dhtsvc *
session_dht(struct session *s)
{
    return s->dht;
}

void
session_status_changed(struct session *s)
{
    if (s->hooks.status_changed)
        s->hooks.status_changed(s->hooks.arg);
}

/* --- the torrent list ---------------------------------------------------- */

struct torrent *
session_find_hash(struct session *s, const uint8_t *hash)
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->v[i]->info_hash, hash, 20) == 0)
            return s->v[i];
    return NULL;
}

/* BEP 14 (lsd.c): a torrent that runs and is not private. */
static bool
wanted_by_lsd(const struct torrent *t)
{
    return (t->state == TORRENT_DOWNLOADING || t->state == TORRENT_SEEDING ||
            t->state == TORRENT_METADATA) &&
           !(t->meta && t->meta->private_torrent);
}

size_t
session_lsd_hashes(struct session *s, size_t *cursor, size_t budget,
                   uint8_t (*ret)[20], size_t max, bool *ret_more)
{
    size_t n = 0, i = *cursor;
    for (; i < s->n && budget > 0 && n < max; i++, budget--)
        if (wanted_by_lsd(s->v[i]))
            memcpy(ret[n++], s->v[i]->info_hash, 20);
    *cursor = i;
    *ret_more = i < s->n;
    return n;
}

bool
session_lsd_wants(struct session *s, const uint8_t *hash)
{
    struct torrent *t = session_find_hash(s, hash);
    return t && wanted_by_lsd(t);
}

int
session_list_insert(struct session *s, struct torrent *t)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct torrent **v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    /* Keep the list sorted by id: new ids are the largest. */
    size_t i = s->n;
    while (i > 0 && s->v[i - 1]->id > t->id) {
        s->v[i] = s->v[i - 1];
        i--;
    }
    s->v[i] = t;
    s->n++;
    return 0;
}

/* Take t out of the list; it is freed when no job borrows it. */
void
session_list_remove(struct session *s, struct torrent *t)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i] == t) {
            memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
            s->n--;
            break;
        }
    }
    t->removed = true;
    progress_forget(s, t);
    engine_torrent_removed(s->engine, t);
    if (t->jobs == 0)
        torrent_free(t);
}

void
session_torrent_unref(struct torrent *t)
{
    if (t && --t->jobs == 0 && t->removed)
        torrent_free(t);
}

/* --- states ------------------------------------------------------------- */

size_t
session_count_state(const struct session *s, enum torrent_state st)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += s->v[i]->state == st;
    return k;
}

void
session_set_state(struct session *s, struct torrent *t, enum torrent_state st)
{
    enum torrent_state old = t->state;
    if (old == st)
        return;
    t->state = st;
    progress_state(s, t, old);
    if (s->restoring)
        return;
    log_field(LOG_LEVEL_DEBUG, "TORRENT", t->hex, "%s -> %s",
              torrent_state_name(old), torrent_state_name(st));
    struct json_object *x = json_object_new_object();
    if (x) {
        json_object_object_add(x, "old",
                               json_object_new_string(torrent_state_name(old)));
        json_object_object_add(x, "new",
                               json_object_new_string(torrent_state_name(st)));
    }
    session_publish_torrent(s, "torrent.state", t, x);
    if (st == TORRENT_ERROR) {
        x = json_object_new_object();
        if (x)
            json_object_object_add(
                x, "message",
                json_object_new_string(t->error ? t->error : "error"));
        session_publish_torrent(s, "torrent.error", t, x);
    }
    engine_torrent_state(s->engine, t);
    if (old == TORRENT_DOWNLOADING || old == TORRENT_QUEUED)
        session_queue_pass(s);
    session_status_changed(s);
}

#define set_error session_set_error

void
session_set_error(struct session *s, struct torrent *t, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *m = strdup(msg);
    if (m) {
        free(t->error);
        t->error = m;
    }
    log_field(LOG_LEVEL_WARN, "TORRENT", t->hex, "'%s': %s", torrent_name(t),
              msg);
    session_set_state(s, t, TORRENT_ERROR);
}

/* Start queued downloads while there is room (max_active_downloads). */
void
session_queue_pass(struct session *s)
{
    if (s->in_queue_pass)
        return;
    s->in_queue_pass = true;
    uint64_t limit = s->cfg.max_active_downloads;
    size_t active = session_count_state(s, TORRENT_DOWNLOADING);
    while (limit == 0 || active < limit) {
        struct torrent *next = NULL;
        for (size_t i = 0; i < s->n; i++)
            if (s->v[i]->state == TORRENT_QUEUED &&
                (!next || s->v[i]->queue_order < next->queue_order))
                next = s->v[i];
        if (!next)
            break;
        session_set_state(s, next, TORRENT_DOWNLOADING);
        active++;
    }
    s->in_queue_pass = false;
}

/* Put a torrent where it belongs now that nothing runs on it: paused,
 * waiting for metadata, seeding, downloading or queued.  Every way back
 * to running comes here (torrent.start, the end of a move or check), so
 * a completion that waited (t->completion_pending) is announced here. */
void
session_settle(struct session *s, struct torrent *t)
{
    if (t->check || t->move)
        return; /* the check's or the move's end settles it */
    if (t->paused) {
        session_set_state(s, t, TORRENT_PAUSED);
        return;
    }
    if (!t->meta) {
        session_set_state(s, t, TORRENT_METADATA);
        return;
    }
    if (torrent_complete(t)) {
        session_set_state(s, t, TORRENT_SEEDING);
        if (t->completion_pending) {
            /* Its last pieces were flushed while it was stopped or
             * moving (engine.c flush_after()): announced now, seeding. */
            t->completion_pending = false;
            session_completed(s, t);
        }
        return;
    }
    t->completion_pending = false; /* not complete after all (a check) */
    if (t->state == TORRENT_DOWNLOADING)
        return;
    uint64_t limit = s->cfg.max_active_downloads;
    t->queue_order = ++s->queue_counter;
    if (limit && session_count_state(s, TORRENT_DOWNLOADING) >= limit)
        session_set_state(s, t, TORRENT_QUEUED);
    else
        session_set_state(s, t, TORRENT_DOWNLOADING);
}

/* --- events ------------------------------------------------------------- */

/* The fields every torrent event starts with; NULL on out of memory. */
static struct json_object *
torrent_event_new(const char *type, const struct torrent *t)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "type", json_object_new_string(type));
    json_object_object_add(o, "info_hash", json_object_new_string(t->hex));
    json_object_object_add(o, "id", json_object_new_int64(t->id));
    json_object_object_add(o, "name", json_object_new_string(torrent_name(t)));
    return o;
}

void
session_publish_torrent(struct session *s, const char *type,
                        const struct torrent *t, struct json_object *extra)
{
    struct json_object *o = torrent_event_new(type, t);
    if (!o) {
        json_object_put(extra);
        return;
    }
    if (extra) {
        json_object_object_foreach(extra, k, val)
        {
            json_object_object_add(o, k, json_object_get(val));
        }
        json_object_put(extra);
    }
    events_publish(s->events, o);
}

struct json_object *
session_torrent_json(struct torrent *t)
{
    if (t->check)
        t->check_done = verify_progress(t->check);
    return torrent_to_json(t);
}

/* --- torrent.progress ----------------------------------------------------
 *
 * Live events (events.h): not numbered, not kept, only for subscribers
 * that name "torrent.progress".  The torrents that may report are kept in
 * s->prog (downloading or checking), so that a tick looks at those only,
 * and at most SESSION_PROGRESS_BUDGET of them, going round from where the
 * last tick stopped.  Each one reports at most once a second
 * (EVENTS_PROGRESS_INTERVAL) and only when its numbers changed; nothing is
 * built while nobody listens.
 */

static const char *const progress_fields[] = {
    "state",         "progress",    "have_bytes", "size_bytes",
    "download_rate", "upload_rate", "eta_s",      "peers_connected",
};

static bool
progress_tracked(enum torrent_state st)
{
    return st == TORRENT_DOWNLOADING || st == TORRENT_CHECKING;
}

static void
progress_forget_at(struct session *s, size_t i)
{
    s->prog[i] = s->prog[--s->n_prog];
    if (s->n_prog == 0 && ev_is_active(&s->prog_timer))
        ev_timer_stop(s->loop, &s->prog_timer);
}

/* Cost: O(tracked torrents), like the other per-state-change work
 * (session_queue_pass()). */
static void
progress_forget(struct session *s, struct torrent *t)
{
    for (size_t i = 0; i < s->n_prog;) {
        if (s->prog[i].t == t)
            progress_forget_at(s, i); /* a record never outlives t */
        else
            i++;
    }
}

/* Start tracking t; out of memory only costs its progress events.  At
 * start every torrent comes from paused once, so the look for t (O(n)
 * each, O(n^2) for a big session) is skipped then. */
static void
progress_track(struct session *s, struct torrent *t)
{
    for (size_t i = 0; !s->restoring && i < s->n_prog; i++)
        if (s->prog[i].t == t)
            return;
    if (s->n_prog == s->cap_prog) {
        size_t cap = s->cap_prog ? s->cap_prog * 2 : 16;
        struct session_progress *v = realloc(s->prog, cap * sizeof(*v));
        if (!v)
            return;
        s->prog = v;
        s->cap_prog = cap;
    }
    s->prog[s->n_prog++] = (struct session_progress){.t = t};
    if (!s->stopping && !ev_is_active(&s->prog_timer))
        ev_timer_again(s->loop, &s->prog_timer);
}

/* t went from old to its current state.  Between checking and
 * downloading its last report is kept, so that the limit holds across. */
static void
progress_state(struct session *s, struct torrent *t, enum torrent_state old)
{
    if (progress_tracked(t->state) && !progress_tracked(old))
        progress_track(s, t);
    else if (!progress_tracked(t->state) && progress_tracked(old))
        progress_forget(s, t);
}

static void
progress_publish(struct session *s, struct torrent *t)
{
    struct json_object *full = session_torrent_json(t);
    struct json_object *o =
        full ? torrent_event_new("torrent.progress", t) : NULL;
    if (!o) {
        json_object_put(full);
        return;
    }
    for (size_t i = 0; i < sizeof(progress_fields) / sizeof(*progress_fields);
         i++) {
        struct json_object *v = NULL;
        if (json_object_object_get_ex(full, progress_fields[i], &v))
            json_object_object_add(o, progress_fields[i], json_object_get(v));
    }
    json_object_put(full);
    events_publish_live(s->events, o);
}

static void
on_progress_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct session *s = w->data;
    (void)revents;
    if (s->n_prog == 0 || s->stopping) {
        ev_timer_stop(loop, w);
        return;
    }
    if (!events_wanted(s->events, "torrent.progress"))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    /* Each one once per tick at most, and no more than the budget. */
    size_t visits = s->n_prog < SESSION_PROGRESS_BUDGET
                        ? s->n_prog
                        : SESSION_PROGRESS_BUDGET;
    for (; visits > 0 && s->n_prog > 0; visits--) {
        if (s->prog_cursor >= s->n_prog)
            s->prog_cursor = 0;
        size_t i = s->prog_cursor;
        struct torrent *t = s->prog[i].t;
        if (t->removed || !progress_tracked(t->state)) {
            /* A state set without session_set_state(): drop it here. */
            progress_forget_at(s, i);
            continue;
        }
        s->prog_cursor++;
        if (t->check)
            t->check_done = verify_progress(t->check);
        struct events_progress now_p = {
            .done =
                t->state == TORRENT_CHECKING ? t->check_done : t->have_wanted,
            .down_rate = t->down_rate,
            .up_rate = t->up_rate,
            .peers = t->peers_connected,
            .state = (int)t->state,
        };
        if (!events_throttle_due(&s->prog[i].th, &now_p, now))
            continue;
        progress_publish(s, t);
        /* Subscribers only queue output, but look again all the same. */
        if (i < s->n_prog && s->prog[i].t == t)
            events_throttle_sent(&s->prog[i].th, &now_p, now);
    }
}

/* --- io jobs ------------------------------------------------------------ */

struct io_job *
session_io_job_new(struct session *s, struct torrent *t, struct rpc_call *call)
{
    struct io_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->dir = strdup(s->cfg.state_dir);
    if (!j->dir) {
        free(j);
        return NULL;
    }
    j->s = s;
    j->call = call;
    if (t) {
        j->t = t;
        t->jobs++;
    }
    return j;
}

void
session_io_job_free(struct io_job *j)
{
    for (size_t i = 0; i < j->n_ops; i++) {
        free(j->ops[i].data);
        if (j->ops[i].fn_free)
            j->ops[i].fn_free(j->ops[i].fn_arg);
    }
    free(j->dir);
    free(j->data_dir);
    json_object_put(j->result);
    free(j);
}

struct io_op *
session_io_add(struct io_job *j, enum io_op_type type, const char *name)
{
    if (j->n_ops == IO_MAX_OPS)
        return NULL;
    struct io_op *op = &j->ops[j->n_ops++];
    op->type = type;
    if (name)
        snprintf(op->name, sizeof(op->name), "%s", name);
    return op;
}

/* Queue writing data (ownership taken) to dir/name. */
int
session_io_add_write(struct io_job *j, const char *name, char *data, size_t len)
{
    struct io_op *op = session_io_add(j, IO_WRITE, name);
    if (!op) {
        free(data);
        return -E2BIG;
    }
    op->data = data;
    op->len = len;
    return 0;
}

int
session_io_add_resume(struct io_job *j, const struct torrent *t)
{
    struct state_resume r;
    torrent_to_resume(t, &r);
    struct buf b;
    buf_init(&b, STATE_MAX_RECORD);
    int e = state_resume_encode(&r, &b);
    if (e < 0) {
        buf_release(&b);
        return e;
    }
    char name[64];
    snprintf(name, sizeof(name), "%s.resume", t->hex);
    size_t len;
    char *data = buf_steal(&b, &len);
    return session_io_add_write(j, name, data, len);
}

static int
delete_data(const struct meta_info *meta, const char *dir)
{
    char path[4096];
    int first = 0;
    for (size_t i = 0; i < meta->n_files; i++) {
        if (meta->files[i].attr & META_ATTR_PAD)
            continue;
        int k = snprintf(path, sizeof(path), "%s/%s", dir, meta->files[i].path);
        if (k < 0 || (size_t)k >= sizeof(path))
            continue;
        if (unlink(path) < 0 && errno != ENOENT && !first)
            first = -errno;
    }
    if (!meta->multi_file)
        return first;
    /* Remove the directories that are now empty, deepest first. */
    for (size_t i = 0; i < meta->n_files; i++) {
        int k = snprintf(path, sizeof(path), "%s/%s", dir, meta->files[i].path);
        if (k < 0 || (size_t)k >= sizeof(path))
            continue;
        size_t base = strlen(dir) + 1;
        for (char *sl = strrchr(path, '/'); sl && (size_t)(sl - path) > base;
             sl = strrchr(path, '/')) {
            *sl = '\0';
            if (rmdir(path) < 0)
                break;
        }
    }
    return first;
}

static int
io_run(void *arg)
{
    struct io_job *j = arg;
    int r = 0;
    for (size_t i = 0; i < j->n_ops && r == 0; i++) {
        struct io_op *op = &j->ops[i];
        switch (op->type) {
        case IO_WRITE:
            r = state_write_file(j->dir, op->name, op->data, op->len);
            break;
        case IO_UNLINK:
            r = state_unlink(j->dir, op->name);
            break;
        case IO_DELETE_DATA:
            if (j->meta && j->data_dir) {
                int e = delete_data(j->meta, j->data_dir);
                if (e < 0)
                    log_warn("cannot delete all data of '%s' in '%s': %s",
                             j->meta->name, j->data_dir, strerror(-e));
            }
            break;
        case IO_CALL:
            r = op->fn(op->fn_arg);
            break;
        case IO_STAT:
            if (j->meta && j->data_dir) {
                struct verify_job *v =
                    verify_new(j->meta, j->data_dir, VERIFY_STAT);
                if (v) {
                    (void)verify_run(v);
                    j->any_data = v->any_data;
                    verify_free(v);
                }
            }
            break;
        }
        if (r < 0)
            snprintf(j->failed, sizeof(j->failed), "%s '%s'",
                     op->type == IO_WRITE  ? "write"
                     : op->type == IO_CALL ? "flush the data of"
                                           : "remove",
                     op->name);
    }
    return r;
}

static void
io_done(void *arg, int r)
{
    struct io_job *j = arg;
    struct session *s = j->s;
    if (r < 0)
        log_err("state directory '%s': cannot %s: %s", j->dir, j->failed,
                strerror(-r));
    if (j->after) {
        j->after(s, j, r);
    } else if (j->call) {
        if (r < 0)
            rpc_call_fail(j->call, RPC_E_IO, NULL,
                          "cannot save the state: %s: %s; check the state "
                          "directory '%s'",
                          j->failed, strerror(-r), j->dir);
        else
            rpc_call_reply(j->call, json_object_get(j->result));
        j->call = NULL;
    }
    if (j->watch_token)
        watch_added(j->watch_token, r == 0);
    session_torrent_unref(j->t);
    session_io_job_free(j);
}

void
session_io_submit(struct session *s, struct io_job *j)
{
    int r = worker_submit(s->io, io_run, io_done, j);
    if (r < 0) {
        snprintf(j->failed, sizeof(j->failed), "queue a job");
        io_done(j, r);
    }
}

/* Write t's resume record; nobody waits for it. */
void
session_save_resume(struct session *s, struct torrent *t)
{
    struct io_job *j = session_io_job_new(s, t, NULL);
    if (!j || session_io_add_resume(j, t) < 0) {
        log_err("cannot save the state of %s: out of memory", t->hex);
        if (j) {
            session_torrent_unref(j->t);
            session_io_job_free(j);
        }
        return;
    }
    session_io_submit(s, j);
}

/* Reply result (ownership taken) once everything queued so far is
 * durable. */
void
session_reply_when_durable(struct session *s, struct rpc_call *call,
                           struct json_object *result)
{
    struct io_job *j = session_io_job_new(s, NULL, call);
    if (!j) {
        json_object_put(result);
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    j->result = result;
    session_io_submit(s, j);
}

/* Save t's resume record and then reply result (ownership taken). */
void
session_save_and_reply(struct session *s, struct torrent *t,
                       struct rpc_call *call, struct json_object *result)
{
    struct io_job *j = session_io_job_new(s, t, call);
    if (!j || session_io_add_resume(j, t) < 0) {
        json_object_put(result);
        if (j) {
            j->call = NULL;
            session_torrent_unref(j->t);
            session_io_job_free(j);
        }
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    j->result = result;
    session_io_submit(s, j);
}

/* --- checking data ------------------------------------------------------- */

static void
run_on_complete(struct session *s, struct torrent *t)
{
    const char *prog = s->cfg.on_complete;
    if (!prog || !*prog)
        return;
    struct json_object *o = session_torrent_json(t);
    if (!o)
        return;
    size_t len;
    const char *text =
        json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    char *env[4] = {NULL, NULL, NULL, NULL};
    int k = 0;
    k += asprintf(&env[0], "TORRENTD_INFO_HASH=%s", t->hex) < 0;
    k += asprintf(&env[1], "TORRENTD_NAME=%s", torrent_name(t)) < 0;
    k += asprintf(&env[2], "TORRENTD_DIR=%s", t->download_dir) < 0;
    k += asprintf(&env[3], "TORRENTD_ID=%" PRIu32, t->id) < 0;
    if (k != 0)
        log_err("cannot run on_complete: out of memory");
    if (k == 0) {
        /* The text gets a final newline: one JSON document per line. */
        struct buf in;
        buf_init(&in, SIZE_MAX);
        if (buf_append(&in, text, len) == 0 && buf_putc(&in, '\n') == 0) {
            int r = hooks_run(s->progs, prog, t->hex, (const char *const *)env,
                              4, in.data, in.len, s->cfg.on_complete_timeout);
            if (r < 0)
                log_field(LOG_LEVEL_ERR, "TORRENT", t->hex,
                          "cannot run on_complete '%s': %s", prog,
                          strerror(-r));
        }
        buf_release(&in);
    }
    /* asprintf() leaves a failed pointer undefined: free only when all
     * succeeded, else leak at most three short strings on OOM. */
    for (int i = 0; i < 4 && k == 0; i++)
        free(env[i]);
    json_object_put(o);
}

void
session_completed(struct session *s, struct torrent *t)
{
    t->completed_at = session_now_s();
    log_field(LOG_LEVEL_INFO, "TORRENT", t->hex, "'%s' is complete",
              torrent_name(t));
    struct json_object *x = json_object_new_object();
    if (x)
        json_object_object_add(x, "size_bytes",
                               json_object_new_uint64(t->size_wanted));
    session_publish_torrent(s, "torrent.completed", t, x);
    run_on_complete(s, t);
}

/* --- seed limits (seedlimit.h) ---------------------------------------- */

void
session_seed_input(const struct session *s, const struct torrent *t,
                   int64_t idle_ms, struct seedlimit_in *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->uploaded = t->uploaded;
    ret->downloaded = t->downloaded;
    ret->size_wanted = t->size_wanted;
    ret->ratio_limit = t->ratio_limit;
    ret->idle_limit = t->idle_limit;
    ret->session_ratio_limit = s->cfg.seed_ratio_limit;
    ret->session_idle_limit = s->cfg.seed_idle_limit;
    ret->idle_ms = idle_ms;
}

bool
session_seed_ratio_reached(const struct session *s, const struct torrent *t)
{
    struct seedlimit_in in;
    if (!torrent_complete(t))
        return false;
    session_seed_input(s, t, 0, &in);
    return seedlimit_check(&in) == SEEDLIMIT_RATIO;
}

void
session_seed_limit_reached(struct session *s, struct torrent *t,
                           enum seedlimit_reason why)
{
    if (t->paused || t->removed || s->stopping || why == SEEDLIMIT_NONE)
        return;
    uint64_t base =
        t->downloaded > t->size_wanted ? t->downloaded : t->size_wanted;
    double ratio = base ? (double)t->uploaded / (double)base : 0.0;
    uint64_t limit =
        why == SEEDLIMIT_RATIO
            ? seedlimit_effective(t->ratio_limit, s->cfg.seed_ratio_limit)
            : seedlimit_effective(t->idle_limit, s->cfg.seed_idle_limit);
    const char *name = seedlimit_reason_name(why);
    log_field(LOG_LEVEL_INFO, "TORRENT", t->hex,
              "'%s' reached its seed %s limit (ratio %.2f), stopping",
              torrent_name(t), name, ratio);
    t->paused = true;
    t->stop_reason = why;
    struct json_object *x = json_object_new_object();
    if (x) {
        json_object_object_add(x, "reason", json_object_new_string(name));
        json_object_object_add(x, "ratio", json_object_new_double(ratio));
        /* A ratio, or minutes for idle. */
        json_object_object_add(x, "limit",
                               json_object_new_double((double)limit / 1000.0));
        json_object_object_add(x, "uploaded_bytes",
                               json_object_new_uint64(t->uploaded));
    }
    session_publish_torrent(s, "torrent.seed_limit", t, x);
    session_settle(s, t); /* paused: the engine stops, trackers "stopped" */
    session_save_resume(s, t);
}

void
session_seed_rearm(struct session *s, struct torrent *t)
{
    (void)s;
    t->seed_override = false;
    t->stop_reason = SEEDLIMIT_NONE;
}

static void
check_done(void *arg, int r)
{
    struct verify_job *job = arg;
    struct torrent *t = job->owner;
    struct session *s;
    bool current = t->check == job;
    if (current)
        t->check = NULL;
    s = job->ctx;
    if (t->removed || !current || r == -ECANCELED || job->cancelled ||
        s->stopping) {
        verify_free(job);
        session_torrent_unref(t);
        return;
    }
    if (r < 0) {
        verify_free(job);
        set_error(s, t, "cannot check the data: %s", strerror(-r));
        session_save_resume(s, t);
        session_torrent_unref(t);
        return;
    }
    bool was = t->have && torrent_complete(t);
    torrent_set_have(t, job->have, job->n_pieces, job->file_have);
    job->have = NULL;
    job->file_have = NULL;
    log_field(LOG_LEVEL_INFO, "TORRENT", t->hex,
              "checked '%s': %" PRIu64 " of %" PRIu64 " bytes verified",
              torrent_name(t), t->have_wanted, t->size_wanted);
    if (job->error) {
        set_error(s, t, "cannot read '%s': %s", job->error_path,
                  strerror(-job->error));
    } else {
        if (t->state == TORRENT_ERROR) {
            free(t->error);
            t->error = NULL;
        }
        /* Settle first, so that the hook sees the torrent seeding. */
        session_settle(s, t);
        if (torrent_complete(t) && !was)
            session_completed(s, t);
    }
    verify_free(job);
    session_save_resume(s, t);
    session_torrent_unref(t);
}

static struct verify_job *
check_new(struct session *s, struct torrent *t, enum verify_mode mode)
{
    struct verify_job *v = verify_new(t->meta, t->download_dir, mode);
    if (!v)
        return NULL;
    v->owner = t;
    v->ctx = s;
    return v;
}

void
session_start_check(struct session *s, struct torrent *t)
{
    if (!t->meta || t->check)
        return;
    if (t->move) {
        t->check_wanted = true; /* once the files are in place */
        return;
    }
    struct verify_job *job = check_new(s, t, VERIFY_FULL);
    if (!job) {
        set_error(s, t, "cannot check the data: out of memory");
        return;
    }
    t->jobs++;
    t->check = job;
    t->check_done = 0;
    session_set_state(s, t, TORRENT_CHECKING);
    int r = worker_submit(s->cpu, verify_run, check_done, job);
    if (r < 0) {
        t->check = NULL;
        t->jobs--;
        verify_free(job);
        set_error(s, t, "cannot check the data: %s", strerror(-r));
    }
}

/* At start: are the files behind the saved bitfield still there?  If any
 * is missing or short, check everything; with no bitfield, check when some
 * file exists. */
static void
quick_done(void *arg, int r)
{
    struct verify_job *job = arg;
    struct torrent *t = job->owner;
    struct session *s = job->ctx;
    bool recheck = r == 0 && !t->removed && !s->stopping &&
                   (job->mode == VERIFY_QUICK ? job->mismatch : job->any_data);
    verify_free(job);
    if (recheck) {
        log_field(LOG_LEVEL_INFO, "TORRENT", t->hex,
                  "data of '%s' changed while stopped: checking",
                  torrent_name(t));
        session_start_check(s, t);
    }
    session_torrent_unref(t);
}

void
session_quick_check(struct session *s, struct torrent *t)
{
    if (!t->meta)
        return;
    bool have = t->have != NULL;
    struct verify_job *job = check_new(s, t, have ? VERIFY_QUICK : VERIFY_STAT);
    if (!job)
        return;
    if (have) {
        size_t nf = t->meta->n_files;
        job->expect = malloc((nf ? nf : 1) * sizeof(*job->expect));
        if (!job->expect) {
            verify_free(job);
            return;
        }
        memcpy(job->expect, t->file_have, nf * sizeof(*job->expect));
    }
    t->jobs++;
    if (worker_submit(s->parse, verify_run, quick_done, job) < 0) {
        t->jobs--;
        verify_free(job);
    }
}

/* --- restoring the state directory --------------------------------------- */

static bool
is_hex_name(const char *name, const char *suffix, uint8_t *ret_hash)
{
    size_t n = strlen(name), sl = strlen(suffix);
    if (n != 40 + sl || strcmp(name + 40, suffix) != 0)
        return false;
    return hex_decode(ret_hash, name, 20) == 0;
}

static void
set_aside(const char *dir, const char *name, const char *why)
{
    char newname[1024];
    int r = state_set_aside(dir, name, newname, sizeof(newname));
    if (r < 0)
        log_err("state file '%s/%s' is unusable (%s) and cannot be set "
                "aside: %s",
                dir, name, why, strerror(-r));
    else
        log_err("state file '%s/%s' is unusable (%s): moved to '%s'", dir, name,
                why, newname);
}

static struct torrent *
restore_one(struct session *s, const char *name, bool magnet)
{
    const char *dir = s->cfg.state_dir;
    uint8_t hash[20];
    (void)is_hex_name(name, magnet ? ".magnet" : ".torrent", hash);
    char *data;
    size_t len;
    int r = state_read_file(
        dir, name, magnet ? STATE_MAX_MAGNET : STATE_MAX_TORRENT, &data, &len);
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot read: %s", strerror(-r));
        set_aside(dir, name, why);
        return NULL;
    }
    struct torrent *t = NULL;
    if (magnet) {
        struct magnet m;
        size_t off;
        while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
            len--;
        r = magnet_parse(&m, data, len, NULL, &off);
        if (r < 0 || !m.has_btih || memcmp(m.btih, hash, 20) != 0) {
            char why[160];
            snprintf(why, sizeof(why), "%s",
                     r < 0 ? magnet_strerror(r)
                           : "its info-hash is not its name");
            if (r == 0)
                magnet_release(&m);
            set_aside(dir, name, why);
        } else if (torrent_new_magnet(&t, &m, 0, s->cfg.download_dir,
                                      session_now_s()) < 0) {
            log_err("cannot restore '%s': out of memory", name);
        }
    } else {
        struct meta_info *meta;
        struct meta_errinfo ei = {0};
        r = meta_parse(&meta, data, len, NULL, &ei);
        if (r < 0 || memcmp(meta->info_hash, hash, 20) != 0) {
            char why[256];
            if (r < 0)
                snprintf(why, sizeof(why), "%s: %s", meta_strerror(r),
                         ei.detail);
            else
                snprintf(why, sizeof(why), "its info-hash is not its name");
            if (r == 0)
                meta_free(meta);
            set_aside(dir, name, why);
        } else if (torrent_new_meta(&t, meta, 0, s->cfg.download_dir,
                                    session_now_s()) < 0) {
            log_err("cannot restore '%s': out of memory", name);
        }
    }
    free(data);
    if (!t)
        return NULL;

    /* Its resume record. */
    char rname[64];
    snprintf(rname, sizeof(rname), "%s.resume", t->hex);
    r = state_read_file(dir, rname, STATE_MAX_RECORD, &data, &len);
    if (r == -ENOENT) {
        log_notice("'%s' has no resume record: it starts afresh", name);
        return t;
    }
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot read: %s", strerror(-r));
        set_aside(dir, rname, why);
        return t;
    }
    struct state_resume rec;
    struct state_errinfo ei = {0};
    r = state_resume_decode(&rec, data, len, &ei);
    free(data);
    if (r < 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s: %s at byte %zu", state_strerror(r),
                 ei.detail, ei.offset);
        set_aside(dir, rname, why);
        return t;
    }
    if (torrent_apply_resume(t, &rec) < 0)
        log_err("cannot restore the resume record of '%s': out of memory",
                name);
    state_resume_release(&rec);
    return t;
}

static int
cmp_hash(const void *a, const void *b)
{
    const struct torrent *x = *(struct torrent *const *)a;
    const struct torrent *y = *(struct torrent *const *)b;
    return memcmp(x->info_hash, y->info_hash, sizeof(x->info_hash));
}

static int
cmp_id(const void *a, const void *b)
{
    const struct torrent *x = *(struct torrent *const *)a;
    const struct torrent *y = *(struct torrent *const *)b;
    /* Ids 0 (to be given) last, in the order they came. */
    uint64_t ix = x->id ? x->id : UINT64_MAX, iy = y->id ? y->id : UINT64_MAX;
    return ix < iy ? -1 : ix > iy;
}

/* At start: add to the end (sorted once all are in). */
static int
list_append(struct session *s, struct torrent *t)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct torrent **v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = t;
    return 0;
}

static int
cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
read_names(const char *dir, char ***ret, size_t *ret_n)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = -errno;
        close(fd);
        return e;
    }
    char **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, cap * sizeof(*nv));
            if (!nv) {
                r = -ENOMEM;
                break;
            }
            v = nv;
        }
        if (!(v[n] = strdup(de->d_name))) {
            r = -ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
        return r;
    }
    if (n)
        qsort(v, n, sizeof(*v), cmp_name);
    *ret = v;
    *ret_n = n;
    return 0;
}

static void
restore_settings(struct session *s)
{
    const char *dir = s->cfg.state_dir;
    char *data;
    size_t len;
    int r = state_read_file(dir, "settings", STATE_MAX_SETTINGS, &data, &len);
    if (r == -ENOENT)
        return;
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot read: %s", strerror(-r));
        set_aside(dir, "settings", why);
        return;
    }
    struct state_settings set = {0};
    struct state_errinfo ei = {0};
    r = state_settings_decode(&set, data, len, &ei);
    free(data);
    if (r < 0) {
        char why[200];
        snprintf(why, sizeof(why), "%s: %s at byte %zu", state_strerror(r),
                 ei.detail, ei.offset);
        set_aside(dir, "settings", why);
        return;
    }
    for (size_t i = 0; i < set.n; i++) {
        const char *k = set.items[i].key, *val = set.items[i].value;
        const struct config_key *key = config_key_find(k);
        struct config_error ce = {0};
        if (!key || config_set(&s->cfg, k, val, &ce) < 0) {
            log_warn("%s/settings: '%s = %s': %s, ignoring", dir, k, val,
                     key ? ce.message : "unknown key");
            continue;
        }
        if (state_settings_put(&s->runtime, k, val) < 0)
            log_err("cannot keep run-time setting '%s': out of memory", k);
    }
    state_settings_release(&set);
}

static int
restore(struct session *s, struct state_session *rec)
{
    const char *dir = s->cfg.state_dir;
    int r = state_mkdir(dir);
    if (r < 0)
        return log_err_errno(r, "cannot create the state directory '%s'", dir);
    restore_settings(s);

    char *data;
    size_t len;
    rec->next_id = 1;
    rec->event_seq = 0;
    rec->clean = true;
    r = state_read_file(dir, "session", STATE_MAX_RECORD, &data, &len);
    if (r == 0) {
        struct state_errinfo ei = {0};
        r = state_session_decode(rec, data, len, &ei);
        free(data);
        if (r < 0) {
            char why[200];
            snprintf(why, sizeof(why), "%s: %s", state_strerror(r), ei.detail);
            set_aside(dir, "session", why);
            rec->next_id = 1;
            rec->clean = false; /* the event numbers are unknown */
        }
    } else if (r != -ENOENT) {
        char why[128];
        snprintf(why, sizeof(why), "cannot read: %s", strerror(-r));
        set_aside(dir, "session", why);
        rec->clean = false;
    }

    char **names = NULL;
    size_t n = 0;
    r = read_names(dir, &names, &n);
    if (r < 0)
        return log_err_errno(r, "cannot read the state directory '%s'", dir);
    uint8_t hash[20];
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        size_t nl = strlen(name);
        if (nl > 4 && strcmp(name + nl - 4, ".tmp") == 0) {
            log_info("removing '%s/%s', left by an interrupted write", dir,
                     name);
            (void)state_unlink(dir, name);
            continue;
        }
        bool is_torrent = is_hex_name(name, ".torrent", hash);
        bool is_magnet = !is_torrent && is_hex_name(name, ".magnet", hash);
        if (!is_torrent && !is_magnet)
            continue;
        if (is_magnet) {
            /* A .magnet next to a .torrent: metadata came, the .magnet was
             * not removed yet.  The .torrent wins. */
            char tname[64];
            snprintf(tname, sizeof(tname), "%.40s.torrent", name);
            if (bsearch(&(const char *){tname}, names, n, sizeof(*names),
                        cmp_name)) {
                (void)state_unlink(dir, name);
                continue;
            }
        }
        struct torrent *t = restore_one(s, name, is_magnet);
        if (!t)
            continue;
        if (list_append(s, t) < 0) {
            log_err("cannot restore '%s': out of memory", name);
            torrent_free(t);
        }
    }
    /* Resume records whose torrent is gone: a removal was interrupted (or
     * the torrent was set aside).  Looked up in a sorted copy: there may
     * be many. */
    struct torrent **by_hash = NULL;
    if (s->n) {
        by_hash = malloc(s->n * sizeof(*by_hash));
        if (!by_hash) {
            r = -ENOMEM;
            goto out_names;
        }
        memcpy(by_hash, s->v, s->n * sizeof(*by_hash));
        qsort(by_hash, s->n, sizeof(*by_hash), cmp_hash);
    }
    for (size_t i = 0; i < n; i++) {
        struct torrent key, *kp = &key;
        if (is_hex_name(names[i], ".resume", key.info_hash) &&
            !(by_hash &&
              bsearch(&kp, by_hash, s->n, sizeof(*by_hash), cmp_hash))) {
            log_info("removing '%s/%s': its torrent was removed", dir,
                     names[i]);
            (void)state_unlink(dir, names[i]);
        }
    }
    free(by_hash);
out_names:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (r < 0)
        return log_err_errno(r, "cannot restore the state directory '%s'", dir);

    /* Ids: keep the saved one unless another torrent has it (then all
     * but one of them get new ids). */
    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), cmp_id);
    uint32_t prev = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i]->id && s->v[i]->id == prev)
            s->v[i]->id = 0;
        else
            prev = s->v[i]->id;
    }

    uint32_t max_id = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i]->id > max_id)
            max_id = s->v[i]->id;
    s->next_id = rec->next_id > max_id ? rec->next_id : max_id + 1;
    /* Torrents that lost their id get new ones (at the end). */
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i]->id == 0) {
            s->v[i]->id = s->next_id++;
            log_notice("torrent %s gets the new id %" PRIu32, s->v[i]->hex,
                       s->v[i]->id);
        }
        k++;
    }
    /* In id order; qsort, not insertion: thousands of torrents come in
     * the order of their file names. */
    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), cmp_id);
    log_info("restored %zu torrents from '%s'", k, dir);
    return 0;
}

/* --- session life ----------------------------------------------------------
 */

static void
write_session_record(struct session *s, bool clean)
{
    struct state_session rec = {
        .next_id = s->next_id,
        .event_seq = events_last_seq(s->events),
        .clean = clean,
    };
    struct buf b;
    buf_init(&b, 4096);
    struct io_job *j = session_io_job_new(s, NULL, NULL);
    if (!j || state_session_encode(&rec, &b) < 0) {
        buf_release(&b);
        if (j)
            session_io_job_free(j);
        log_err("cannot save the session record: out of memory");
        return;
    }
    size_t len;
    char *data = buf_steal(&b, &len);
    (void)session_io_add_write(j, "session", data, len);
    session_io_submit(s, j);
}

int
session_new(struct session **ret, struct ev_loop *loop, struct config *cfg,
            const struct session_hooks *hooks)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        config_release(cfg);
        return log_err_errno(-ENOMEM, "cannot start the session");
    }
    s->loop = loop;
    ev_timer_init(&s->prog_timer, on_progress_tick, SESSION_PROGRESS_TICK,
                  SESSION_PROGRESS_TICK);
    s->prog_timer.data = s;
    s->base = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    if (hooks)
        s->hooks = *hooks;
    s->started_at = session_now_s();
    s->started_mono = ev_now(loop);
    int r = config_copy(&s->cfg, &s->base);
    if (r < 0) {
        log_err_errno(r, "cannot start the session");
        goto fail;
    }

    struct state_session rec;
    if ((r = restore(s, &rec)) < 0)
        goto fail;
    uint64_t first = rec.event_seq + 1;
    if (!rec.clean) {
        first += SESSION_SEQ_GAP;
        log_notice("torrentd did not stop cleanly: event numbers continue "
                   "at %" PRIu64,
                   first);
    }
    if ((r = events_new(&s->events, first)) < 0 ||
        (r = hooks_new(&s->progs, loop)) < 0) {
        log_err_errno(r, "cannot start the session");
        goto fail;
    }
    if ((r = worker_new(&s->io, loop, "state", 1)) < 0 ||
        (r = worker_new(&s->cpu, loop, "hash", SESSION_CPU_THREADS)) < 0 ||
        (r = worker_new(&s->parse, loop, "parse", 1)) < 0 ||
        (r = worker_new(&s->mover, loop, "move", 1)) < 0) {
        log_err_errno(r, "cannot start worker threads");
        goto fail;
    }
    /* The DHT before the engine, so that torrents find it; a DHT that
     * cannot start (its port taken) does not stop the daemon. */
    if (s->cfg.dht && dhtsvc_new(&s->dht, loop, &s->cfg, s->io) < 0)
        log_warn("going on without the DHT");
    /* Local service discovery (BEP 14), off by default; like the DHT, a
     * failure to start does not stop the daemon. */
    if (s->cfg.lsd && lsd_new(&s->lsd, s) < 0)
        log_warn("going on without local service discovery");
    if ((r = engine_ctx_new(&s->engine, s)) < 0) {
        log_err_errno(r, "cannot start the engine");
        goto fail;
    }
    write_session_record(s, false);

    s->restoring = true;
    for (size_t i = 0; i < s->n; i++) {
        struct torrent *t = s->v[i];
        if (t->error && !t->paused) {
            session_set_state(s, t, TORRENT_ERROR);
        } else {
            session_settle(s, t);
            if (!t->paused)
                session_quick_check(s, t);
        }
        /* Torrents restored without a resume record get one. */
        session_save_resume(s, t);
    }
    s->restoring = false;
    for (size_t i = 0; i < s->n; i++)
        engine_torrent_state(s->engine, s->v[i]);
    session_queue_pass(s);
    watch_start(s);
    *ret = s;
    return 0;
fail:
    session_free(s);
    return r;
}

static void
stop_finished(struct session *s)
{
    if (!s->stop_done)
        return;
    if (ev_is_active(&s->stop_timer))
        ev_timer_stop(s->loop, &s->stop_timer);
    void (*done)(void *) = s->stop_done;
    s->stop_done = NULL;
    done(s->stop_arg);
}

/* One of the two things a stop waits for is done. */
static void
stop_part_done(void *arg)
{
    struct session *s = arg;
    if (s->stop_waiting > 0 && --s->stop_waiting == 0)
        stop_finished(s);
}

static void
stop_saved(struct session *s, struct io_job *j, int r)
{
    (void)j;
    if (r < 0)
        log_err("the state could not all be saved at exit");
    else
        log_info("state saved");
    stop_part_done(s);
}

static void
on_stop_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct session *s = w->data;
    log_warn("saving the state takes longer than %.0f s: stopping anyway",
             SESSION_STOP_TIMEOUT);
    stop_finished(s);
}

void
session_stop(struct session *s, void (*done)(void *arg), void *arg)
{
    if (s->stopping) {
        /* A second stop: the first one's done() still comes. */
        return;
    }
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    watch_stop(s);
    if (ev_is_active(&s->prog_timer))
        ev_timer_stop(s->loop, &s->prog_timer);
    struct json_object *o = json_object_new_object();
    if (o) {
        json_object_object_add(o, "type",
                               json_object_new_string("session.shutdown"));
        events_publish(s->events, o);
    }
    /* Verified pieces first: flushed, then recorded, before the final
     * resume records below (the io worker keeps the order).  The stop
     * ends when the state is saved and the trackers were told
     * "stopped" (bounded by the tracker sets' own timeout). */
    s->stop_waiting = 2;
    session_moves_cancel(s); /* a long copy does not hold the exit */
    engine_ctx_stop(s->engine, stop_part_done, s);
    for (size_t i = 0; i < s->n; i++) {
        struct torrent *t = s->v[i];
        if (t->check)
            verify_cancel(t->check);
        session_save_resume(s, t);
    }
    dhtsvc_stop(s->dht); /* its state file, before the final barrier */
    write_session_record(s, true);
    struct io_job *j = session_io_job_new(s, NULL, NULL);
    if (!j) {
        stop_finished(s);
        return;
    }
    j->after = stop_saved;
    ev_timer_init(&s->stop_timer, on_stop_timeout, SESSION_STOP_TIMEOUT, 0.);
    s->stop_timer.data = s;
    ev_timer_start(s->loop, &s->stop_timer);
    session_io_submit(s, j);
}

void
session_free(struct session *s)
{
    if (!s)
        return;
    watch_stop(s);
    if (ev_is_active(&s->stop_timer))
        ev_timer_stop(s->loop, &s->stop_timer);
    if (ev_is_active(&s->prog_timer))
        ev_timer_stop(s->loop, &s->prog_timer);
    s->stop_done = NULL;
    s->stopping = true;
    /* Cancel running checks, then finish every job (their done()
     * functions still see the session and its torrents). */
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i]->check)
            verify_cancel(s->v[i]->check);
    dhtsvc_free(s->dht); /* before the engine: its lookups end here */
    s->dht = NULL;
    lsd_free(s->lsd); /* before the events it subscribes to */
    s->lsd = NULL;
    engine_ctx_quiesce(s->engine); /* hash jobs end before the io worker */
    /* Moves not submitted end now, while io is there (later only the
     * engine's last storage would end them: after io is gone); the
     * running one stops at its next step and moves back. */
    session_moves_cancel(s);
    worker_free(s->mover); /* a move ends (its record goes to io) */
    s->mover = NULL;
    worker_free(s->cpu);
    s->cpu = NULL;
    worker_free(s->parse);
    s->parse = NULL;
    worker_free(s->io);
    s->io = NULL;
    engine_ctx_free(s->engine); /* peers end before their torrents */
    s->engine = NULL;
    hooks_free(s->progs);
    for (size_t i = 0; i < s->n; i++)
        torrent_free(s->v[i]);
    free(s->v);
    free(s->prog);
    events_free(s->events);
    state_settings_release(&s->runtime);
    config_release(&s->cfg);
    config_release(&s->base);
    free(s);
}

/* --- reload and status -------------------------------------------------- */

static void
report_part(struct buf *out, bool *first, const char *label,
            const struct buf *keys)
{
    if (!keys->len)
        return;
    (void)buf_printf(out, "%s%s: %s", *first ? "" : "; ", label, keys->data);
    *first = false;
}

static void
add_key(struct buf *b, const char *k)
{
    (void)buf_printf(b, "%s%s", b->len ? ", " : "", k);
}

/* After live keys changed: act on them. */
void
session_apply_live(struct session *s, const struct config *old)
{
    size_t n;
    const struct config_key *keys = config_keys(&n);
    bool watch = false, seed_ratio = false, seed_idle = false;
    for (size_t i = 0; i < n; i++) {
        const struct config_key *k = &keys[i];
        if (config_key_equal(old, &s->cfg, k))
            continue;
        if (strcmp(k->name, "log_level") == 0)
            log_set_level((enum log_level)s->cfg.log_level);
        if (strcmp(k->name, "watch_dir") == 0 ||
            strcmp(k->name, "watch_interval") == 0)
            watch = true;
        if (strcmp(k->name, "max_active_downloads") == 0)
            session_queue_pass(s);
        if (strcmp(k->name, "seed_ratio_limit") == 0)
            seed_ratio = true;
        if (strcmp(k->name, "seed_idle_limit") == 0)
            seed_idle = true;
        if (strcmp(k->name, "download_rate_limit") == 0 ||
            strcmp(k->name, "upload_rate_limit") == 0)
            engine_ctx_config_changed(s->engine);
    }
    if (watch && !s->stopping) {
        watch_stop(s);
        watch_start(s);
    }
    /* A session limit that a torrent follows changed: it applies again to
     * the torrents started by hand past it (an admin's change, so one
     * walk of the list; only the changed records are written). */
    for (size_t i = 0; (seed_ratio || seed_idle) && i < s->n; i++) {
        struct torrent *t = s->v[i];
        if (!t->seed_override && t->stop_reason == SEEDLIMIT_NONE)
            continue;
        if ((seed_ratio && t->ratio_limit < 0) ||
            (seed_idle && t->idle_limit < 0)) {
            session_seed_rearm(s, t);
            session_save_resume(s, t);
        }
    }
}

int
session_reload(struct session *s, struct config *new_cfg, struct buf *report)
{
    struct config nc = *new_cfg;
    memset(new_cfg, 0, sizeof(*new_cfg));
    struct config old;
    int r = config_copy(&old, &s->cfg);
    if (r < 0) {
        config_release(&nc);
        return r;
    }
    struct buf applied, restart, overridden;
    buf_init(&applied, 4096);
    buf_init(&restart, 4096);
    buf_init(&overridden, 4096);
    size_t n;
    const struct config_key *keys = config_keys(&n);
    for (size_t i = 0; i < n && r == 0; i++) {
        const struct config_key *k = &keys[i];
        if (config_key_equal(&s->base, &nc, k))
            continue;
        if (state_settings_get(&s->runtime, k->name)) {
            add_key(&overridden, k->name);
        } else if (k->apply == CONFIG_LIVE) {
            r = config_copy_key(&s->cfg, &nc, k);
            add_key(&applied, k->name);
        } else {
            add_key(&restart, k->name);
        }
    }
    if (r == 0) {
        config_release(&s->base);
        s->base = nc;
        memset(&nc, 0, sizeof(nc));
        bool first = true;
        report_part(report, &first, "applied", &applied);
        report_part(report, &first, "needs restart", &restart);
        report_part(report, &first, "overridden by run-time settings",
                    &overridden);
        if (first)
            (void)buf_puts(report, "no changes");
        session_apply_live(s, &old);
        if (applied.len) {
            struct json_object *o = json_object_new_object();
            if (o) {
                json_object_object_add(
                    o, "type", json_object_new_string("session.settings"));
                json_object_object_add(o, "source",
                                       json_object_new_string("reload"));
                json_object_object_add(o, "applied",
                                       json_object_new_string(applied.data));
                events_publish(s->events, o);
            }
        }
        session_status_changed(s);
    }
    config_release(&nc);
    config_release(&old);
    buf_release(&applied);
    buf_release(&restart);
    buf_release(&overridden);
    return r;
}

void
session_status_line(struct session *s, struct buf *out)
{
    (void)buf_printf(out, "%zu torrent%s", s->n, s->n == 1 ? "" : "s");
    bool first = true;
    for (int st = 0; st < TORRENT_STATE_MAX; st++) {
        size_t k = session_count_state(s, (enum torrent_state)st);
        if (!k)
            continue;
        (void)buf_printf(out, "%s%zu %s", first ? ": " : ", ", k,
                         torrent_state_name((enum torrent_state)st));
        first = false;
    }
    uint64_t down = 0, up = 0;
    engine_ctx_rates(s->engine, &down, &up);
    (void)buf_printf(out, "; down %" PRIu64 " B/s, up %" PRIu64 " B/s", down,
                     up);
}

static void
watch_start(struct session *s)
{
    const char *dir = s->cfg.watch_dir;
    if (!dir || !*dir || s->watch || s->stopping)
        return;
    int r = watch_new(&s->watch, s->loop, dir, s->cfg.watch_interval, s->parse,
                      s->io, session_watch_add, s);
    if (r < 0)
        log_err("cannot watch '%s': %s", dir, strerror(-r));
}

static void
watch_stop(struct session *s)
{
    watch_free(s->watch);
    s->watch = NULL;
}
