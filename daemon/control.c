/* control — the JSON-RPC 2.0 server on the control and status sockets.
 *
 * How a client is served (the contract is in control.h and rpc.h):
 *
 * - Input.  One read of at most CONTROL_READ_CHUNK bytes per wake-up, into
 *   a buffer shared by all clients; the bytes go straight through the
 *   client's jsonrpc_reader (common/jsonrpc.h), which checks UTF-8, depth
 *   and size as they come, so no line is ever copied whole.  Bytes left
 *   over when the client must wait (a call is pending, or its budget for
 *   this wake-up is spent) are kept in a small buffer of the client's own,
 *   and the socket is not read again until they are used: a client can
 *   never make us hold more than one read plus one line in progress.
 * - Order.  Requests run one after another: the next line (or the next
 *   entry of a batch) is taken only when the call before it has been
 *   answered, so responses leave in request order, and a batch runs its
 *   entries in order too.  A client gets at most CONTROL_REQUESTS_PER_WAKE
 *   requests per loop iteration; the rest waits for the next one (an
 *   ev_prepare, with an ev_idle so that the loop does not sleep meanwhile),
 *   so one busy client cannot starve the others.
 * - Output.  Responses and event notifications are appended to the
 *   client's output buffer (capped at CONTROL_MAX_OUTPUT) and sent with
 *   MSG_DONTWAIT; what the socket does not take waits for an ev_io write
 *   watcher.  A client whose queued output would pass the cap is
 *   disconnected.  Event notifications that come while a request is in
 *   progress are held and sent after its response.
 * - Errors.  A line that is not JSON, not UTF-8 or nested too deeply gets
 *   an error response with id null and the client goes on.  A line longer
 *   than CONTROL_MAX_LINE gets an error response and the client is
 *   disconnected once the response is written: the id of the request is
 *   lost, and what follows is most likely the rest of a broken stream.
 * - Limits.  At most CONTROL_MAX_CLIENTS clients per socket, and
 *   CONTROL_MAX_CLIENTS_PER_UID for each uid but root; a client past
 *   either gets one RPC_E_BUSY error line and is closed.  Unfinished lines
 *   of all clients of a socket together are bounded by CONTROL_MAX_PENDING
 *   (RPC_E_BUSY, then disconnected).  accept() failing for want of file
 *   descriptors pauses accepting for CONTROL_ACCEPT_BACKOFF instead of
 *   spinning.
 * - Lifetime.  A client is never freed inside its own callback chain: it
 *   is marked closing (its watchers stopped, its subscription ended) and
 *   freed in the ev_prepare pass.  A call that is pending when its client
 *   goes away stays valid; its answer is dropped.
 */
#include "daemon/control.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <ev.h>
#include <json-c/json.h>

#include "common/buf.h"
#include "common/jsonrpc.h"
#include "common/log.h"
#include "daemon/events.h"
#include "daemon/rpc.h"
#include "daemon/session.h"

#define CONTROL_READ_CHUNK (64u << 10)
#define CONTROL_REQUESTS_PER_WAKE 16
#define CONTROL_ACCEPT_PER_WAKE 64
#define CONTROL_ACCEPT_BACKOFF 0.1 /* s, after EMFILE and the like */
/* Clients one uid may have on one socket (root is not limited), so that
 * one local user cannot take every slot of the world-writable status
 * socket.  (OpenSMTPD control.c does the same.) */
#define CONTROL_MAX_CLIENTS_PER_UID 256
/* Bytes of unfinished lines held for all the clients of one socket: one
 * big line (a large .torrent) is fine, but a few hundred clients that
 * each start a 64 MiB line must not take gigabytes.  A client whose
 * unfinished line takes the total past this (and that holds more than one
 * read of it) is answered RPC_E_BUSY and disconnected. */
#define CONTROL_MAX_PENDING (4 * (size_t)CONTROL_MAX_LINE)
#define CONTROL_MAX_TYPES 64 /* events.subscribe "types" */
#define CONTROL_MAX_TYPE_LEN 64
/* Output and held-event buffers bigger than this are freed, not kept,
 * once empty. */
#define CONTROL_KEEP_BUFFER (64u << 10)
#define CONTROL_REFUSE_LOG_INTERVAL 10.0 /* s between "refused" info lines */

/* 1.1: torrent.progress, "*"; 1.2: seed limits, torrent.move, the
 * peers' "encryption". */
#define CONTROL_API_VERSION "1.2.0"
#define CONTROL_READ_ONLY_MESSAGE                                              \
    "permission denied: the status socket is read-only; use the control "      \
    "socket"

_Static_assert(RPC_PARSE_ERROR == JSONRPC_PARSE_ERROR &&
                   RPC_INVALID_REQUEST == JSONRPC_INVALID_REQUEST &&
                   RPC_METHOD_NOT_FOUND == JSONRPC_METHOD_NOT_FOUND &&
                   RPC_INVALID_PARAMS == JSONRPC_INVALID_PARAMS &&
                   RPC_INTERNAL_ERROR == JSONRPC_INTERNAL_ERROR,
               "rpc.h and jsonrpc.h disagree on the JSON-RPC codes");

struct control_client;

/* One line's worth of work: a single request or a batch. */
struct control_slot {
    struct control_client *client; /* borrowed; NULL once it is gone */
    struct json_object *doc;       /* owned: the request or batch array */
    struct json_object **answers;  /* owned: n entries, NULL = none */
    struct rpc_call *current;      /* the call dispatched, not answered */
    size_t n;                      /* requests (1 unless a batch) */
    size_t next;                   /* the next one to dispatch */
    bool batch;
};

struct rpc_call {
    struct control_slot *slot; /* borrowed: lives until we answer */
    size_t index;              /* in the slot */
    struct json_object *id;    /* owned reference; NULL for null */
    bool notification;
    struct rpc_caller caller;
};

struct control_client {
    struct control *ctl;                /* borrowed: owns this client */
    struct control_client *prev, *next; /* ctl->clients */
    struct control_client *next_queued; /* ctl->queue */
    unsigned id;                        /* for logs */
    int fd;                             /* owned */
    ev_io read_w, write_w;
    struct rpc_caller caller;
    struct jsonrpc_reader reader;
    char *in; /* input not yet fed to the reader */
    size_t in_off, in_len;
    bool in_owned;             /* in is ours (else ctl->rbuf) */
    size_t pending;            /* counted in ctl->pending */
    struct buf out;            /* owned: queued output */
    size_t out_off;            /* bytes of out already sent */
    struct buf held;           /* owned: events held during a call */
    struct control_slot *slot; /* owned: the line in progress */
    struct events_sub *sub;    /* events.subscribe, or NULL */
    bool queued;               /* on ctl->queue */
    bool running;              /* inside client_run() */
    bool eof;                  /* the client shut its side */
    bool closing;              /* to be freed at the safe point */
    bool close_when_sent;      /* disconnect once out is written */
};

struct control {
    struct ev_loop *loop; /* borrowed */
    struct session *s;    /* borrowed: outlives the server */
    int fd;               /* owned: the listening socket */
    bool read_only;
    ev_io accept_w;
    ev_timer backoff_w;             /* accept paused after EMFILE */
    ev_prepare prepare_w;           /* the safe point: run and free */
    ev_idle idle_w;                 /* no sleeping while work is queued */
    struct control_client *clients; /* owned list */
    struct control_client *queue, **queue_tail;
    unsigned n_clients;
    unsigned next_id;
    size_t pending; /* bytes of unfinished lines */
    double last_refuse_log;
    char rbuf[CONTROL_READ_CHUNK]; /* shared by every client's reads */
};

static void client_run(struct control_client *c, unsigned budget);
static void client_write(struct control_client *c);

static const char *
control_name(const struct control *ctl)
{
    return ctl->read_only ? "status" : "control";
}

/* --- The safe point. --- */
static void
control_queue(struct control_client *c)
{
    struct control *ctl = c->ctl;
    if (c->queued)
        return;
    c->queued = true;
    c->next_queued = NULL;
    *ctl->queue_tail = c;
    ctl->queue_tail = &c->next_queued;
    if (!ev_is_active(&ctl->prepare_w)) {
        ev_prepare_start(ctl->loop, &ctl->prepare_w);
        ev_idle_start(ctl->loop, &ctl->idle_w);
    }
}

static void
slot_free(struct control_slot *slot)
{
    if (!slot)
        return;
    if (slot->answers) {
        for (size_t i = 0; i < slot->n; i++)
            json_object_put(slot->answers[i]);
        free(slot->answers);
    }
    json_object_put(slot->doc);
    free(slot);
}

/* Free a client now.  Only from the prepare pass or control_free(). */
static void
client_free(struct control_client *c)
{
    struct control *ctl = c->ctl;
    ev_io_stop(ctl->loop, &c->read_w);
    ev_io_stop(ctl->loop, &c->write_w);
    events_unsubscribe(c->sub);
    c->sub = NULL;
    if (c->slot) {
        if (c->slot->current) {
            /* A call is pending: it frees the slot when answered. */
            c->slot->client = NULL;
        } else {
            slot_free(c->slot);
        }
        c->slot = NULL;
    }
    jsonrpc_reader_release(&c->reader);
    if (c->in_owned)
        free(c->in);
    buf_release(&c->out);
    buf_release(&c->held);
    if (c->fd >= 0)
        (void)close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        ctl->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ctl->n_clients--;
    ctl->pending -= c->pending;
    log_debug("%s: client %u (uid %u) disconnected", control_name(ctl), c->id,
              (unsigned)c->caller.uid);
    free(c);
}

/* Mark a client for freeing at the safe point. */
static void
client_close(struct control_client *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    ev_io_stop(c->ctl->loop, &c->read_w);
    ev_io_stop(c->ctl->loop, &c->write_w);
    events_unsubscribe(c->sub);
    c->sub = NULL;
    if (why)
        log_debug("%s: client %u (uid %u): %s, disconnecting",
                  control_name(c->ctl), c->id, (unsigned)c->caller.uid, why);
    control_queue(c);
}

static void
prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct control *ctl = w->data;
    (void)revents;
    struct control_client *c = ctl->queue;
    ctl->queue = NULL;
    ctl->queue_tail = &ctl->queue;
    while (c) {
        struct control_client *next = c->next_queued;
        c->queued = false;
        if (c->closing)
            client_free(c);
        else
            client_run(c, CONTROL_REQUESTS_PER_WAKE);
        c = next;
    }
    if (!ctl->queue) {
        ev_prepare_stop(loop, &ctl->prepare_w);
        ev_idle_stop(loop, &ctl->idle_w);
    }
}

static void
idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    /* Only here so that the loop polls without sleeping while clients are
     * queued; the work is done in prepare_cb. */
    (void)loop;
    (void)w;
    (void)revents;
}

/* --- Output. --- */

/* Append one message as a line to b (the client's output or its held
 * events), making room by dropping what was sent.  Returns 0, -EMSGSIZE
 * when the cap would be passed, or -ENOMEM. */
static int
client_put(struct control_client *c, struct buf *b, struct json_object *msg)
{
    if (b == &c->out && c->out_off > 0 && c->out_off >= c->out.len / 2) {
        memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
    int r = jsonrpc_put_line(b, msg);
    if (r == -EMSGSIZE && b == &c->out && c->out_off > 0) {
        memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
        c->out.len -= c->out_off;
        c->out_off = 0;
        r = jsonrpc_put_line(b, msg);
    }
    return r;
}

/* Queue a message for the client (msg borrowed); disconnect on overflow. */
static void
client_send(struct control_client *c, struct json_object *msg)
{
    if (c->closing)
        return;
    if (!msg) {
        client_close(c, "out of memory building a response");
        return;
    }
    int r = client_put(c, &c->out, msg);
    if (r == -EMSGSIZE && c->out.len - c->out_off == 0) {
        /* One response bigger than the cap on its own. */
        struct json_object *id = NULL;
        (void)json_object_object_get_ex(msg, "id", &id);
        struct json_object *data = json_object_new_object();
        if (data)
            (void)json_object_object_add(
                data, "max_output",
                json_object_new_int64((int64_t)CONTROL_MAX_OUTPUT));
        struct json_object *e = jsonrpc_error_new(
            id, RPC_INTERNAL_ERROR,
            "the response is too large to send; ask for less (fields, one "
            "torrent at a time)",
            data);
        r = e ? client_put(c, &c->out, e) : -ENOMEM;
        json_object_put(e);
    }
    if (r == -EMSGSIZE) {
        client_close(c, "it does not read its responses (output over the "
                        "limit)");
        return;
    }
    if (r < 0) {
        client_close(c, "out of memory queueing a response");
        return;
    }
    client_write(c);
}

static void
client_write(struct control_client *c)
{
    struct ev_loop *loop = c->ctl->loop;
    while (!c->closing && c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off,
                         c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(loop, &c->write_w);
            return;
        }
        client_close(c, n < 0 ? strerror(errno) : "send returned 0");
        return;
    }
    if (c->closing)
        return;
    if (c->out.size > CONTROL_KEEP_BUFFER)
        buf_release(&c->out);
    else
        buf_reset(&c->out);
    c->out_off = 0;
    ev_io_stop(loop, &c->write_w);
    if (c->close_when_sent)
        client_close(c, NULL);
}

static void
write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct control_client *c = w->data;
    (void)loop;
    (void)revents;
    client_write(c);
}

/* An error answer for an enum jsonrpc_error value. */
static void
client_send_error(struct control_client *c, struct json_object *id, int err,
                  size_t offset)
{
    struct json_object *e = jsonrpc_error_from(id, err, &c->reader.lim, offset);
    client_send(c, e);
    json_object_put(e);
}

/* --- Events. --- */
static void
on_event(void *arg, struct json_object *ev)
{
    struct control_client *c = arg;
    if (c->closing)
        return;
    struct json_object *n =
        jsonrpc_notification_new("event", json_object_get(ev));
    if (!n) {
        client_close(c, "out of memory building an event");
        return;
    }
    if (c->slot) {
        /* After the response of the request in progress. */
        int r = client_put(c, &c->held, n);
        if (r < 0)
            client_close(c, r == -EMSGSIZE ? "it does not read its events"
                                           : "out of memory queueing an event");
    } else {
        client_send(c, n);
    }
    json_object_put(n);
}

static void
client_release_held(struct control_client *c)
{
    if (c->held.len == 0)
        return;
    if (!c->closing) {
        if (c->out_off > 0 && c->out_off >= c->out.len / 2) {
            memmove(c->out.data, c->out.data + c->out_off,
                    c->out.len - c->out_off);
            c->out.len -= c->out_off;
            c->out_off = 0;
        }
        int r = buf_append(&c->out, c->held.data, c->held.len);
        if (r < 0)
            client_close(c, r == -EMSGSIZE ? "it does not read its events"
                                           : "out of memory queueing events");
        else
            client_write(c);
    }
    if (c->held.size > CONTROL_KEEP_BUFFER)
        buf_release(&c->held);
    else
        buf_reset(&c->held);
}

/* --- Calls. --- */

/* The slot's current call has its answer (NULL: none). */
static void
call_done(struct rpc_call *call, struct json_object *answer)
{
    struct control_slot *slot = call->slot;
    assert(slot->current == call);
    slot->answers[call->index] = answer;
    slot->current = NULL;
    json_object_put(call->id);
    free(call);
    if (!slot->client) {
        slot_free(slot); /* the client went away */
        return;
    }
    /* An answer that comes later (from a worker, say): the rest of the
     * line runs at the safe point, never from here, where the handler
     * that answered may still be on the stack.  An answer given during
     * client_run() is seen there. */
    if (!slot->client->running)
        control_queue(slot->client);
}

void
rpc_call_reply(struct rpc_call *call, struct json_object *result)
{
    assert(call && call->slot->current == call);
    struct json_object *answer = NULL;
    if (call->notification || !call->slot->client) {
        json_object_put(result);
    } else {
        answer = jsonrpc_response_new(call->id, result);
        if (!answer)
            answer = jsonrpc_error_new(call->id, RPC_INTERNAL_ERROR,
                                       "out of memory", NULL);
        if (!answer)
            client_close(call->slot->client, "out of memory");
    }
    call_done(call, answer);
}

void
rpc_call_fail(struct rpc_call *call, int code, struct json_object *data,
              const char *fmt, ...)
{
    assert(call && call->slot->current == call);
    struct json_object *answer = NULL;
    if (call->notification || !call->slot->client) {
        json_object_put(data);
    } else {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        answer = jsonrpc_error_new(call->id, code, msg, data);
        if (!answer)
            client_close(call->slot->client, "out of memory");
    }
    call_done(call, answer);
}

const struct rpc_caller *
rpc_call_caller(const struct rpc_call *call)
{
    return &call->caller;
}

bool
rpc_call_connected(const struct rpc_call *call)
{
    const struct control_client *c = call->slot->client;
    return c && !c->closing;
}

/* --- The control server's own methods. --- */

/* Refuse params other than the given names; answers and returns false. */
static bool
params_only(struct rpc_call *call, struct json_object *params,
            const char *const *names)
{
    if (!params)
        return true;
    json_object_object_foreach(params, key, val)
    {
        (void)val;
        bool known = false;
        for (size_t i = 0; names[i]; i++)
            known = known || strcmp(key, names[i]) == 0;
        if (!known) {
            struct json_object *data = json_object_new_object();
            if (data)
                (void)json_object_object_add(data, "param",
                                             json_object_new_string(key));
            rpc_call_fail(call, RPC_INVALID_PARAMS, data,
                          "unknown parameter '%.64s'", key);
            return false;
        }
    }
    return true;
}

static void
method_version(struct control_client *c, struct rpc_call *call,
               struct json_object *params)
{
    static const char *const none[] = {NULL};
    (void)c;
    if (!params_only(call, params, none))
        return;
    struct json_object *r = json_object_new_object();
    if (r) {
        (void)json_object_object_add(r, "version",
                                     json_object_new_string(TD_VERSION));
        (void)json_object_object_add(
            r, "api", json_object_new_string(CONTROL_API_VERSION));
    }
    rpc_call_reply(call, r);
}

static void
fail_param(struct rpc_call *call, const char *param, const char *msg)
{
    struct json_object *data = json_object_new_object();
    if (data)
        (void)json_object_object_add(data, "param",
                                     json_object_new_string(param));
    rpc_call_fail(call, RPC_INVALID_PARAMS, data, "%s", msg);
}

static void
method_subscribe(struct control_client *c, struct rpc_call *call,
                 struct json_object *params)
{
    static const char *const names[] = {"types", "since", NULL};
    const char *types[CONTROL_MAX_TYPES + 1];
    bool have_types = false;
    uint64_t since = 0;
    struct json_object *v;

    if (!params_only(call, params, names))
        return;
    if (params && json_object_object_get_ex(params, "types", &v)) {
        if (!json_object_is_type(v, json_type_array) ||
            json_object_array_length(v) > CONTROL_MAX_TYPES) {
            fail_param(call, "types",
                       "\"types\" must be an array of at most 64 event "
                       "type names, e.g. [\"torrent.added\"]");
            return;
        }
        size_t n = json_object_array_length(v);
        for (size_t i = 0; i < n; i++) {
            struct json_object *t = json_object_array_get_idx(v, i);
            if (!json_object_is_type(t, json_type_string) ||
                json_object_get_string_len(t) == 0 ||
                json_object_get_string_len(t) > CONTROL_MAX_TYPE_LEN ||
                strlen(json_object_get_string(t)) !=
                    (size_t)json_object_get_string_len(t)) {
                fail_param(call, "types",
                           "each of \"types\" must be an event type name, "
                           "e.g. \"torrent.state\"");
                return;
            }
            types[i] = json_object_get_string(t);
        }
        types[n] = NULL;
        have_types = true;
    }
    if (params && json_object_object_get_ex(params, "since", &v)) {
        if (!json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 0) {
            fail_param(call, "since",
                       "\"since\" must be a sequence number (an integer "
                       ">= 0)");
            return;
        }
        since = (uint64_t)json_object_get_int64(v);
    }

    struct events *e = session_events(c->ctl->s);
    struct events_sub *sub = NULL;
    int r = events_subscribe(e, have_types ? types : NULL, since, on_event, c,
                             &sub);
    if (r == -ESTALE) {
        struct json_object *data = json_object_new_object();
        if (data) {
            (void)json_object_object_add(
                data, "oldest_seq",
                json_object_new_int64((int64_t)events_oldest_seq(e)));
            (void)json_object_object_add(
                data, "last_seq",
                json_object_new_int64((int64_t)events_last_seq(e)));
        }
        rpc_call_fail(call, RPC_E_TOO_OLD, data,
                      "events after %" PRIu64 " are no longer kept (the "
                      "oldest kept is %" PRIu64 "); read the current state "
                      "with torrent.list and subscribe without \"since\"",
                      since, events_oldest_seq(e));
        return;
    }
    if (r == -E2BIG || r == -EINVAL) {
        fail_param(call, "types", "an event type name is too long");
        return;
    }
    if (r < 0) {
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "cannot subscribe: %s",
                      strerror(-r));
        return;
    }
    /* A second subscribe replaces the first. */
    events_unsubscribe(c->sub);
    c->sub = sub;
    struct json_object *res = json_object_new_object();
    if (res) {
        (void)json_object_object_add(res, "subscribed",
                                     json_object_new_boolean(1));
        (void)json_object_object_add(
            res, "last_seq",
            json_object_new_int64((int64_t)events_last_seq(e)));
    }
    rpc_call_reply(call, res);
}

/* --- Running a line. --- */

/* Run the slot's next request. */
static void
slot_dispatch_next(struct control_client *c, struct control_slot *slot)
{
    struct control *ctl = c->ctl;
    size_t i = slot->next++;
    struct json_object *msg =
        slot->batch ? json_object_array_get_idx(slot->doc, i) : slot->doc;
    struct jsonrpc_request q;
    int r = jsonrpc_request_parse(msg, JSONRPC_NAMED_PARAMS, &q);
    if (r < 0) {
        if (!q.notification)
            slot->answers[i] =
                jsonrpc_error_from(q.id, r, &c->reader.lim, SIZE_MAX);
        return;
    }

    struct rpc_call *call = calloc(1, sizeof(*call));
    if (!call) {
        client_close(c, "out of memory");
        return;
    }
    call->slot = slot;
    call->index = i;
    call->id = json_object_get(q.id);
    call->notification = q.notification;
    call->caller = c->caller;
    slot->current = call;

    if (strcmp(q.method, "daemon.version") == 0) {
        method_version(c, call, q.params);
        return;
    }
    if (strcmp(q.method, "events.subscribe") == 0) {
        method_subscribe(c, call, q.params);
        return;
    }
    const struct rpc_method *m = session_rpc_find(q.method);
    if (!m || !m->handler) {
        struct json_object *data = json_object_new_object();
        if (data)
            (void)json_object_object_add(data, "method",
                                         json_object_new_string(q.method));
        rpc_call_fail(call, RPC_METHOD_NOT_FOUND, data,
                      "unknown method '%.64s'; the methods are listed in "
                      "torrentd-api(7)",
                      q.method);
        return;
    }
    char uid[24];
    (void)snprintf(uid, sizeof(uid), "%u", (unsigned)c->caller.uid);
    if (m->changes_state && c->caller.read_only) {
        log_field(LOG_LEVEL_DEBUG, "CALLER_UID", uid,
                  "status: %s refused to uid %s (read-only socket)", m->name,
                  uid);
        struct json_object *data = json_object_new_object();
        if (data)
            (void)json_object_object_add(data, "method",
                                         json_object_new_string(m->name));
        rpc_call_fail(call, RPC_E_PERMISSION_DENIED, data, "%s",
                      CONTROL_READ_ONLY_MESSAGE);
        return;
    }
    if (m->changes_state)
        log_field(LOG_LEVEL_INFO, "CALLER_UID", uid,
                  "%s: %s called by uid %s (pid %ld)", control_name(ctl),
                  m->name, uid, (long)c->caller.pid);
    m->handler(ctl->s, call, q.params);
}

/* Every request of the slot is answered: send what it says. */
static void
slot_finish(struct control_client *c)
{
    struct control_slot *slot = c->slot;
    struct json_object *out = NULL;
    c->slot = NULL;
    if (slot->batch) {
        for (size_t i = 0; i < slot->n; i++) {
            if (!slot->answers[i])
                continue;
            if (!out && !(out = json_object_new_array()))
                break;
            if (json_object_array_add(out, slot->answers[i]) < 0)
                break;
            slot->answers[i] = NULL;
        }
        /* All notifications: nothing to send at all (section 6). */
    } else {
        out = slot->answers[0];
        slot->answers[0] = NULL;
    }
    slot_free(slot);
    if (out)
        client_send(c, out);
    json_object_put(out);
    client_release_held(c);
}

/* A line was read: start it. */
static void
client_start_line(struct control_client *c, struct json_object *doc)
{
    size_t n = 0;
    int r = jsonrpc_batch_check(doc, &c->reader.lim, &n);
    if (r < 0) {
        client_send_error(c, NULL, r, SIZE_MAX);
        json_object_put(doc);
        return;
    }
    bool batch = r == 1;
    struct control_slot *slot = calloc(1, sizeof(*slot));
    if (slot)
        slot->answers = calloc(n, sizeof(*slot->answers));
    if (!slot || !slot->answers) {
        free(slot);
        json_object_put(doc);
        client_close(c, "out of memory");
        return;
    }
    slot->client = c;
    slot->doc = doc;
    slot->n = n;
    slot->batch = batch;
    c->slot = slot;
}

/* Keep the bytes not yet fed so that the shared read buffer can be
 * reused. */
static void
client_keep_input(struct control_client *c)
{
    if (c->in_owned || c->in_off == c->in_len) {
        if (c->in_off == c->in_len) {
            if (c->in_owned)
                free(c->in);
            c->in = NULL;
            c->in_off = c->in_len = 0;
            c->in_owned = false;
        }
        return;
    }
    size_t n = c->in_len - c->in_off;
    char *p = malloc(n);
    if (!p) {
        c->in = NULL;
        c->in_off = c->in_len = 0;
        client_close(c, "out of memory");
        return;
    }
    memcpy(p, c->in + c->in_off, n);
    c->in = p;
    c->in_off = 0;
    c->in_len = n;
    c->in_owned = true;
}

/* Read the socket only when everything read before has been used. */
static void
client_update_reading(struct control_client *c)
{
    struct ev_loop *loop = c->ctl->loop;
    bool want = !c->closing && !c->eof && !c->close_when_sent && !c->slot &&
                c->in_off == c->in_len;
    if (want && !ev_is_active(&c->read_w))
        ev_io_start(loop, &c->read_w);
    else if (!want && ev_is_active(&c->read_w))
        ev_io_stop(loop, &c->read_w);
}

/* A line came out of the reader (rc from jsonrpc_reader_feed/finish). */
static void
client_take_line(struct control_client *c, int rc, struct json_object *doc,
                 size_t off)
{
    if (rc == 1) {
        client_start_line(c, doc);
    } else if (rc == JSONRPC_E_LINE_TOO_LONG) {
        client_send_error(c, NULL, rc, SIZE_MAX);
        log_debug("%s: client %u sent a line over %zu bytes",
                  control_name(c->ctl), c->id, c->reader.lim.max_line);
        c->close_when_sent = true;
        c->in_off = c->in_len; /* what follows is not looked at */
        if (c->out_off == c->out.len)
            client_close(c, NULL);
    } else if (rc != JSONRPC_E_EMPTY) {
        client_send_error(c, NULL, rc, off);
    }
}

/* Count the client's unfinished line; refuse it when the socket holds
 * too much. */
static void
client_account(struct control_client *c)
{
    struct control *ctl = c->ctl;
    size_t now = jsonrpc_reader_pending(&c->reader) && !c->reader.discard
                     ? c->reader.line_len
                     : 0;
    ctl->pending = ctl->pending - c->pending + now;
    c->pending = now;
    if (ctl->pending <= CONTROL_MAX_PENDING || now <= CONTROL_READ_CHUNK ||
        c->close_when_sent || c->closing)
        return;
    struct json_object *data = json_object_new_object();
    if (data)
        (void)json_object_object_add(
            data, "max_pending",
            json_object_new_int64((int64_t)CONTROL_MAX_PENDING));
    struct json_object *e = jsonrpc_error_new(
        NULL, RPC_E_BUSY,
        "the daemon is reading too many large requests at once; try again "
        "later",
        data);
    client_send(c, e);
    json_object_put(e);
    log_info("%s: client %u (uid %u): too many large requests at once, "
             "disconnecting",
             control_name(ctl), c->id, (unsigned)c->caller.uid);
    c->close_when_sent = true;
    c->in_off = c->in_len;
    if (c->out_off == c->out.len)
        client_close(c, NULL);
}

/* Do up to budget requests of the client's work. */
static void
client_run(struct control_client *c, unsigned budget)
{
    c->running = true;
    while (!c->closing && !c->close_when_sent) {
        if (c->slot) {
            if (c->slot->current)
                break; /* waiting for an answer */
            if (c->slot->next < c->slot->n) {
                if (budget == 0)
                    break;
                budget--;
                slot_dispatch_next(c, c->slot);
                continue;
            }
            slot_finish(c);
            continue;
        }
        if (budget == 0)
            break;
        if (c->in_off < c->in_len) {
            size_t used = 0, off = 0;
            struct json_object *doc = NULL;
            int rc =
                jsonrpc_reader_feed(&c->reader, c->in + c->in_off,
                                    c->in_len - c->in_off, &used, &doc, &off);
            c->in_off += used;
            if (rc != 0) {
                if (rc != JSONRPC_E_EMPTY)
                    budget--;
                client_take_line(c, rc, doc, off);
            }
            continue;
        }
        if (c->eof) {
            if (jsonrpc_reader_pending(&c->reader)) {
                size_t off = 0;
                struct json_object *doc = NULL;
                int rc = jsonrpc_reader_finish(&c->reader, &doc, &off);
                client_take_line(c, rc, doc, off);
                continue;
            }
            /* Everything answered.  A subscriber that only shut its
             * sending side keeps getting events; others are closed once
             * their answers are sent. */
            if (!c->sub) {
                c->close_when_sent = true;
                if (c->out_off == c->out.len)
                    client_close(c, NULL);
            }
            break;
        }
        break; /* needs more input */
    }
    c->running = false;
    if (c->closing)
        return;
    client_account(c);
    if (c->closing)
        return;
    client_keep_input(c);
    if (c->closing)
        return;
    /* More to do that does not wait on anyone: next iteration. */
    bool more = c->slot ? !c->slot->current
                        : c->in_off < c->in_len && !c->close_when_sent;
    if (more)
        control_queue(c);
    client_update_reading(c);
}

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct control_client *c = w->data;
    struct control *ctl = c->ctl;
    (void)loop;
    (void)revents;
    if (c->closing || c->in_off < c->in_len)
        return;
    ssize_t n = recv(c->fd, ctl->rbuf, sizeof(ctl->rbuf), MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        client_close(c, strerror(errno));
        return;
    }
    if (n == 0) {
        c->eof = true;
    } else {
        c->in = ctl->rbuf;
        c->in_off = 0;
        c->in_len = (size_t)n;
        c->in_owned = false;
    }
    client_run(c, CONTROL_REQUESTS_PER_WAKE);
}

/* --- Accepting clients. --- */

/* Say why, in one line, and close (best effort, never waits). */
static void
refuse(struct control *ctl, int fd, const struct rpc_caller *who,
       const char *what, unsigned limit)
{
    char line[512];
    int n = snprintf(line, sizeof(line),
                     "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":%d,\"message\":"
                     "\"too many clients %s (the limit is %u); try again "
                     "later\",\"data\":{\"limit\":%u}},\"id\":null}\n",
                     RPC_E_BUSY, what, limit, limit);
    if (n > 0 && (size_t)n < sizeof(line))
        (void)send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)close(fd);
    double now = ev_now(ctl->loop);
    if (now - ctl->last_refuse_log >= CONTROL_REFUSE_LOG_INTERVAL) {
        ctl->last_refuse_log = now;
        log_info("%s: refused a client of uid %u: too many clients %s "
                 "(limit %u)",
                 control_name(ctl), (unsigned)who->uid, what, limit);
    }
}

static void
accept_one(struct control *ctl, int fd)
{
    struct rpc_caller who = {
        .uid = (uid_t)-1, .gid = (gid_t)-1, .read_only = ctl->read_only};
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
        len != sizeof(cred)) {
        log_debug("%s: SO_PEERCRED failed: %s, closing", control_name(ctl),
                  strerror(errno));
        (void)close(fd);
        return;
    }
    who.uid = cred.uid;
    who.gid = cred.gid;
    who.pid = cred.pid;

    if (ctl->n_clients >= CONTROL_MAX_CLIENTS) {
        refuse(ctl, fd, &who, "on this socket", CONTROL_MAX_CLIENTS);
        return;
    }
    if (who.uid != 0) {
        unsigned same = 0;
        for (struct control_client *o = ctl->clients; o; o = o->next)
            same += o->caller.uid == who.uid;
        if (same >= CONTROL_MAX_CLIENTS_PER_UID) {
            refuse(ctl, fd, &who, "for this user", CONTROL_MAX_CLIENTS_PER_UID);
            return;
        }
    }

    struct jsonrpc_limits lim = jsonrpc_limits_default;
    lim.max_line = CONTROL_MAX_LINE;
    struct control_client *c = calloc(1, sizeof(*c));
    if (!c || jsonrpc_reader_init(&c->reader, &lim) < 0) {
        if (c)
            jsonrpc_reader_release(&c->reader);
        free(c);
        (void)close(fd);
        log_warn("%s: out of memory accepting a client", control_name(ctl));
        return;
    }
    c->ctl = ctl;
    c->fd = fd;
    c->id = ++ctl->next_id;
    c->caller = who;
    buf_init(&c->out, CONTROL_MAX_OUTPUT);
    buf_init(&c->held, CONTROL_MAX_OUTPUT);
    ev_io_init(&c->read_w, read_cb, fd, EV_READ);
    ev_io_init(&c->write_w, write_cb, fd, EV_WRITE);
    c->read_w.data = c->write_w.data = c;
    c->next = ctl->clients;
    if (ctl->clients)
        ctl->clients->prev = c;
    ctl->clients = c;
    ctl->n_clients++;
    ev_io_start(ctl->loop, &c->read_w);
    log_debug("%s: client %u connected (uid %u, gid %u, pid %ld)",
              control_name(ctl), c->id, (unsigned)who.uid, (unsigned)who.gid,
              (long)who.pid);
}

static void
backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct control *ctl = w->data;
    (void)revents;
    ev_io_start(loop, &ctl->accept_w);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct control *ctl = w->data;
    (void)revents;
    for (unsigned i = 0; i < CONTROL_ACCEPT_PER_WAKE; i++) {
        int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accept_one(ctl, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
            errno == ENOMEM) {
            /* The listener stays readable: pause instead of spinning. */
            double now = ev_now(loop);
            if (now - ctl->last_refuse_log >= CONTROL_REFUSE_LOG_INTERVAL) {
                ctl->last_refuse_log = now;
                log_warn("%s: cannot accept a client: %s; pausing",
                         control_name(ctl), strerror(errno));
            }
            ev_io_stop(loop, &ctl->accept_w);
            ev_timer_set(&ctl->backoff_w, CONTROL_ACCEPT_BACKOFF, 0.);
            ev_timer_start(loop, &ctl->backoff_w);
            return;
        }
        log_warn("%s: accept failed: %s, ignoring", control_name(ctl),
                 strerror(errno));
        return;
    }
}

int
control_new(struct control **ret, struct ev_loop *loop, struct session *s,
            int listen_fd, bool read_only)
{
    /* Whoever made the socket: it must not block us, nor leak to
     * children. */
    int fl = fcntl(listen_fd, F_GETFL);
    if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(listen_fd, F_SETFD, FD_CLOEXEC) < 0) {
        int r = -errno;
        (void)close(listen_fd);
        return r;
    }
    struct control *ctl = calloc(1, sizeof(*ctl));
    if (!ctl) {
        (void)close(listen_fd);
        return -ENOMEM;
    }
    ctl->loop = loop;
    ctl->s = s;
    ctl->fd = listen_fd;
    ctl->read_only = read_only;
    ctl->queue_tail = &ctl->queue;
    ctl->last_refuse_log = -CONTROL_REFUSE_LOG_INTERVAL;
    ev_io_init(&ctl->accept_w, accept_cb, listen_fd, EV_READ);
    ev_timer_init(&ctl->backoff_w, backoff_cb, CONTROL_ACCEPT_BACKOFF, 0.);
    ev_prepare_init(&ctl->prepare_w, prepare_cb);
    ev_idle_init(&ctl->idle_w, idle_cb);
    ctl->accept_w.data = ctl->backoff_w.data = ctl;
    ctl->prepare_w.data = ctl->idle_w.data = ctl;
    ev_io_start(loop, &ctl->accept_w);
    *ret = ctl;
    return 0;
}

void
control_free(struct control *ctl)
{
    if (!ctl)
        return;
    ev_io_stop(ctl->loop, &ctl->accept_w);
    ev_timer_stop(ctl->loop, &ctl->backoff_w);
    ev_prepare_stop(ctl->loop, &ctl->prepare_w);
    ev_idle_stop(ctl->loop, &ctl->idle_w);
    while (ctl->clients)
        client_free(ctl->clients);
    if (ctl->fd >= 0)
        (void)close(ctl->fd);
    free(ctl);
}
