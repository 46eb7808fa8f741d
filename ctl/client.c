/* client — torrentctl's connection to the daemon (see client.h). */
#include "ctl/client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/buf.h"
#include "ctl/ctl.h"
#include "ctl/output.h"

/* The API's application error codes that set an exit status, as
 * torrentd-api(7) documents them (daemon/rpc.h has the daemon's names;
 * ctl does not include daemon headers: ctl -> common <- daemon). */
#define CLIENT_E_TORRENT_NOT_FOUND (-32001)
#define CLIENT_E_PERMISSION_DENIED (-32003)

/* What we accept from the daemon: its own limits, but more values per
 * line (torrent.files of a torrent with many files). */
static const struct jsonrpc_limits client_limits = {
    .max_line = CTL_CLIENT_MAX_LINE,
    .max_depth = 64,
    .max_values = 1u << 26,
    .max_batch = 1,
};
/* Retry interval while the daemon's accept backlog is full. */
#define CLIENT_CONNECT_RETRY_MS 20

int64_t
ctl_now_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline for poll(): -1 for none, 0 when past. */
static int
poll_timeout(int64_t deadline_ms)
{
    int64_t left;

    if (deadline_ms < 0)
        return -1;
    left = deadline_ms - ctl_now_ms();
    if (left <= 0)
        return 0;
    return left > 1000000 ? 1000000 : (int)left;
}

/* --- Finding the socket --- */

/* True if something is at path, or we may not look (EACCES: a directory
 * we cannot search is still where the daemon lives). */
static bool
path_present(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 || errno == EACCES;
}

static char *
join_path(const char *dir, const char *name)
{
    char *p;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

char *
ctl_socket_find(const char *explicit_path)
{
    const char *env;
    char *xdg_path;

    if (explicit_path && *explicit_path)
        return strdup(explicit_path);
    env = getenv("TORRENTD_SOCKET");
    if (env && *env)
        return strdup(env);
    if (path_present(CTL_DEFAULT_SOCKET))
        return strdup(CTL_DEFAULT_SOCKET);
    env = getenv("XDG_RUNTIME_DIR");
    if (env && *env) {
        xdg_path = join_path(env, CTL_XDG_SOCKET);
        if (!xdg_path || path_present(xdg_path))
            return xdg_path;
        free(xdg_path);
    }
    return strdup(CTL_DEFAULT_SOCKET);
}

/* The status socket in the same directory as the control socket. */
static char *
status_socket_of(const char *control_path)
{
    const char *slash = strrchr(control_path, '/');
    char *p;

    if (!slash)
        return strdup(CTL_STATUS_SOCKET_NAME);
    if (asprintf(&p, "%.*s/%s", (int)(slash - control_path), control_path,
                 CTL_STATUS_SOCKET_NAME) < 0)
        return NULL;
    return p;
}

/* --- Connecting --- */

/* Connect a new non-blocking socket to path.  Returns 0 with *ret_fd, or
 * -errno (-ETIMEDOUT when the backlog stayed full until deadline). */
static int
connect_path(const char *path, int64_t deadline_ms, int *ret_fd)
{
    struct sockaddr_un sa;
    size_t n = strlen(path);
    int fd, r;

    if (n == 0)
        return -ENOENT;
    if (n >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, n + 1);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    for (;;) {
        if (connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        r = -errno;
        if (r == -EINTR)
            continue;
        if (r == -EAGAIN && ctl_now_ms() < deadline_ms) {
            /* The daemon's accept queue is full: it is busy, not gone. */
            (void)poll(NULL, 0, CLIENT_CONNECT_RETRY_MS);
            continue;
        }
        (void)close(fd);
        return r == -EAGAIN ? -ETIMEDOUT : r;
    }
    *ret_fd = fd;
    return 0;
}

static void
hint_start(void)
{
    ctl_err("is torrentd running?  Start it with 'systemctl start torrentd', "
            "or name its socket with --socket PATH or $TORRENTD_SOCKET");
}

/* Print why connecting to path failed (r = -errno) and return the exit
 * status for it. */
static int
connect_error(const char *path, int r, enum ctl_access access)
{
    switch (r) {
    case -EACCES:
    case -EPERM:
        if (access == CTL_ACCESS_READ)
            ctl_err("permission denied on '%s', and no status socket "
                    "beside it answers: ask to join the daemon's group "
                    "(torrentd)",
                    path);
        else
            ctl_err("permission denied on '%s': changes need the daemon's "
                    "group (torrentd) or root",
                    path);
        return CTL_EXIT_PERMISSION;
    case -ETIMEDOUT:
        ctl_err("cannot connect to torrentd at '%s': it does not accept "
                "connections (busy?)",
                path);
        return CTL_EXIT_TIMEOUT;
    default:
        ctl_err("cannot connect to torrentd at '%s': %s", path, strerror(-r));
        hint_start();
        return CTL_EXIT_CONNECT;
    }
}

/* The request timeout from $TORRENTCTL_TIMEOUT (seconds, a decimal
 * number), or the default.  Returns 0, or -EINVAL for a bad value. */
static int
timeout_from_env(int *ret_ms)
{
    const char *env = getenv("TORRENTCTL_TIMEOUT");
    char *end;
    double s;

    if (!env || !*env) {
        *ret_ms = CTL_CLIENT_TIMEOUT_MS;
        return 0;
    }
    errno = 0;
    s = strtod(env, &end);
    if (errno || end == env || *end || !(s > 0) || s > CTL_CLIENT_TIMEOUT_MAX_S)
        return -EINVAL;
    *ret_ms = s * 1000 < 1 ? 1 : (int)(s * 1000);
    return 0;
}

static void
client_reset(struct ctl_client *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->timeout_ms = CTL_CLIENT_TIMEOUT_MS;
    c->next_id = 1;
}

int
ctl_client_open(struct ctl_client *c, const struct ctl_ctx *ctx,
                enum ctl_access access)
{
    const char *explicit_path = ctx ? ctx->socket_path : NULL;
    int64_t deadline;
    char *path, *status;
    int fd = -1, r, r2;

    client_reset(c);
    if (timeout_from_env(&c->timeout_ms) < 0) {
        ctl_err("TORRENTCTL_TIMEOUT must be seconds from 0 to %d, not '%s'",
                CTL_CLIENT_TIMEOUT_MAX_S, getenv("TORRENTCTL_TIMEOUT"));
        return CTL_EXIT_USAGE;
    }
    path = ctl_socket_find(explicit_path);
    if (!path) {
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    deadline = ctl_now_ms() + c->timeout_ms;
    r = connect_path(path, deadline, &fd);
    if ((r == -EACCES || r == -EPERM) && access == CTL_ACCESS_READ) {
        /* Not in the daemon's group: a query may use the status socket. */
        status = status_socket_of(path);
        if (!status) {
            free(path);
            ctl_err("out of memory");
            return CTL_EXIT_FAILURE;
        }
        r2 = connect_path(status, deadline, &fd);
        if (r2 == 0) {
            free(path);
            path = status;
            c->read_only = true;
            r = 0;
        } else {
            free(status);
        }
    }
    if (r < 0) {
        r = connect_error(path, r, access);
        free(path);
        return r;
    }
    c->fd = fd;
    c->path = path;
    c->rbuf = malloc(CTL_CLIENT_READ_CHUNK);
    if (!c->rbuf || jsonrpc_reader_init(&c->reader, &client_limits) < 0) {
        ctl_client_close(c);
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    return CTL_EXIT_OK;
}

void
ctl_client_close(struct ctl_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        (void)close(c->fd);
    c->fd = -1;
    free(c->path);
    c->path = NULL;
    jsonrpc_reader_release(&c->reader);
    memset(&c->reader, 0, sizeof(c->reader));
    free(c->rbuf);
    c->rbuf = NULL;
    c->rpos = c->rlen = 0;
    json_object_put(c->queue);
    c->queue = NULL;
    c->queue_pos = 0;
}

/* --- Lines --- */

static int
send_all(struct ctl_client *c, const char *p, size_t n, int64_t deadline_ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
    ssize_t k;
    int r;

    while (n > 0) {
        k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno != EAGAIN) {
            ctl_err("cannot send to torrentd at '%s': %s", c->path,
                    strerror(errno));
            return -CTL_EXIT_FAILURE;
        }
        r = poll(&pfd, 1, poll_timeout(deadline_ms));
        if (r < 0 && errno != EINTR) {
            ctl_err("poll: %s", strerror(errno));
            return -CTL_EXIT_FAILURE;
        }
        if (r == 0) {
            ctl_err("torrentd at '%s' does not read our request (timed "
                    "out)",
                    c->path);
            return -CTL_EXIT_TIMEOUT;
        }
    }
    return 0;
}

/* Read the next JSON message from the daemon, waiting until deadline.
 * Returns 1 with *ret (an object, the caller puts it), 0 on a clean close,
 * -CTL_EXIT_TIMEOUT (not printed), or another -(enum ctl_exit) (printed). */
static int
read_message(struct ctl_client *c, int64_t deadline_ms,
             struct json_object **ret)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    struct json_object *doc = NULL;
    size_t used, off;
    ssize_t k;
    int r;

    if (c->fd < 0)
        return 0;
    for (;;) {
        while (c->rpos < c->rlen) {
            r = jsonrpc_reader_feed(&c->reader, c->rbuf + c->rpos,
                                    c->rlen - c->rpos, &used, &doc, &off);
            c->rpos += used;
            if (r == JSONRPC_E_EMPTY)
                continue;
            if (r < 0) {
                ctl_err("torrentd at '%s' sent a bad line: %s", c->path,
                        jsonrpc_strerror(r));
                return -CTL_EXIT_FAILURE;
            }
            if (r > 0) {
                if (!json_object_is_type(doc, json_type_object)) {
                    json_object_put(doc);
                    ctl_err("torrentd at '%s' sent something that is not "
                            "a JSON-RPC message",
                            c->path);
                    return -CTL_EXIT_FAILURE;
                }
                *ret = doc;
                return 1;
            }
        }
        c->rpos = c->rlen = 0;
        k = recv(c->fd, c->rbuf, CTL_CLIENT_READ_CHUNK, 0);
        if (k > 0) {
            c->rlen = (size_t)k;
            continue;
        }
        if (k == 0 || (k < 0 && errno == ECONNRESET)) {
            if (jsonrpc_reader_pending(&c->reader)) {
                ctl_err("torrentd closed the connection in the middle of "
                        "a message");
                return -CTL_EXIT_FAILURE;
            }
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            ctl_err("cannot read from torrentd at '%s': %s", c->path,
                    strerror(errno));
            return -CTL_EXIT_FAILURE;
        }
        r = poll(&pfd, 1, poll_timeout(deadline_ms));
        if (r < 0 && errno != EINTR) {
            ctl_err("poll: %s", strerror(errno));
            return -CTL_EXIT_FAILURE;
        }
        if (r == 0)
            return -CTL_EXIT_TIMEOUT;
    }
}

/* Sort out one message: an "event" notification is queued (1), other
 * notifications are dropped (1), a response fills *reply (0), and
 * anything else fails (-EBADMSG).  -ENOMEM, -ENOBUFS when too many events
 * are queued. */
static int
classify(struct ctl_client *c, struct json_object *msg,
         struct jsonrpc_reply *reply)
{
    struct jsonrpc_reply rep;

    if (jsonrpc_reply_parse(msg, &rep) < 0)
        return -EBADMSG;
    if (!rep.notification) {
        *reply = rep;
        return 0;
    }
    if (strcmp(rep.method, "event") != 0 || !rep.params ||
        !json_object_is_type(rep.params, json_type_object))
        return 1;
    if (!c->queue) {
        c->queue = json_object_new_array();
        c->queue_pos = 0;
        if (!c->queue)
            return -ENOMEM;
    }
    if (json_object_array_length(c->queue) - c->queue_pos >=
        CTL_CLIENT_MAX_QUEUED)
        return -ENOBUFS;
    if (json_object_array_add(c->queue, json_object_get(rep.params)) < 0) {
        json_object_put(rep.params);
        return -ENOMEM;
    }
    return 1;
}

static int
classify_error(int r)
{
    if (r == -EBADMSG)
        ctl_err("torrentd sent a message that is neither a JSON-RPC "
                "response nor a notification");
    else
        ctl_err("cannot keep the daemon's events: %s", strerror(-r));
    return -CTL_EXIT_FAILURE;
}

int
ctl_client_rpc(struct ctl_client *c, const char *method,
               struct json_object *params, struct json_object **ret_result,
               struct json_object **ret_error)
{
    struct json_object *req, *msg = NULL, *err;
    struct jsonrpc_reply reply;
    struct buf out;
    int64_t id, deadline;
    int r;

    if (c->fd < 0) {
        json_object_put(params);
        ctl_err("not connected to torrentd");
        return -CTL_EXIT_FAILURE;
    }
    id = c->next_id++;
    req = jsonrpc_request_new(id, method, params);
    params = NULL;
    buf_init(&out, CTL_CLIENT_MAX_LINE);
    r = req ? jsonrpc_put_line(&out, req) : -ENOMEM;
    json_object_put(req);
    if (r < 0) {
        buf_release(&out);
        ctl_err("cannot send %s: %s", method,
                r == -EMSGSIZE ? "the request is too large" : "out of memory");
        return -CTL_EXIT_FAILURE;
    }

    deadline = ctl_now_ms() + c->timeout_ms;
    r = send_all(c, out.data, out.len, deadline);
    buf_release(&out);
    if (r < 0)
        return r;

    for (;;) {
        r = read_message(c, deadline, &msg);
        if (r == -CTL_EXIT_TIMEOUT) {
            ctl_err("torrentd at '%s' did not answer %s within %g s", c->path,
                    method, c->timeout_ms / 1000.0);
            return r;
        }
        if (r < 0)
            return r;
        if (r == 0) {
            ctl_err("torrentd at '%s' closed the connection before "
                    "answering %s",
                    c->path, method);
            return -CTL_EXIT_FAILURE;
        }
        r = classify(c, msg, &reply);
        if (r < 0) {
            json_object_put(msg);
            return classify_error(r);
        }
        /* Ours, or {"id": null} for a line the daemon could not read. */
        if (r == 0 && (!reply.id || jsonrpc_reply_is_for(&reply, id)))
            break;
        json_object_put(msg); /* an event (queued), or an old response */
    }

    if (reply.is_error) {
        (void)json_object_object_get_ex(msg, "error", &err);
        *ret_error = json_object_get(err);
        json_object_put(msg);
        return 1;
    }
    *ret_result = json_object_get(reply.result);
    json_object_put(msg);
    return 0;
}

int
ctl_rpc_error_code(const struct json_object *error)
{
    struct json_object *code;

    if (!json_object_object_get_ex(error, "code", &code))
        return 0;
    return json_object_get_int(code);
}

int
ctl_rpc_error_status(const struct json_object *error)
{
    switch (ctl_rpc_error_code(error)) {
    case CLIENT_E_PERMISSION_DENIED:
        return CTL_EXIT_PERMISSION;
    case CLIENT_E_TORRENT_NOT_FOUND:
        return CTL_EXIT_NOT_FOUND;
    default:
        return CTL_EXIT_FAILURE;
    }
}

int
ctl_rpc_error_exit(const struct json_object *error)
{
    struct json_object *msg, *data, *matches;
    const char *text = NULL;
    char *safe;

    if (json_object_object_get_ex(error, "message", &msg))
        text = json_object_get_string(msg);
    if (!text || !*text)
        text = "the daemon reported an error";
    safe = ctl_safe_strdup(text);
    ctl_err("%s", safe ? safe : text);
    free(safe);
    /* An ambiguous prefix: the torrents it names. */
    if (json_object_object_get_ex(error, "data", &data) &&
        json_object_object_get_ex(data, "matches", &matches) &&
        json_object_is_type(matches, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(matches); i++) {
            fprintf(stderr, "  ");
            ctl_fputs_safe(
                json_object_get_string(json_object_array_get_idx(matches, i)),
                stderr);
            fputc('\n', stderr);
        }
    }
    return ctl_rpc_error_status(error);
}

int
ctl_client_call(struct ctl_client *c, const char *method,
                struct json_object *params, struct json_object **ret_result)
{
    struct json_object *result = NULL, *error = NULL;
    int r;

    r = ctl_client_rpc(c, method, params, &result, &error);
    if (r < 0)
        return -r;
    if (r > 0) {
        r = ctl_rpc_error_exit(error);
        json_object_put(error);
        return r;
    }
    *ret_result = result;
    return CTL_EXIT_OK;
}

int
ctl_client_next_event(struct ctl_client *c, int64_t deadline_ms,
                      struct json_object **ret_event)
{
    struct json_object *msg, *ev;
    struct jsonrpc_reply reply;
    int r;

    for (;;) {
        if (c->queue && c->queue_pos < json_object_array_length(c->queue)) {
            ev = json_object_array_get_idx(c->queue, c->queue_pos++);
            *ret_event = json_object_get(ev);
            if (c->queue_pos == json_object_array_length(c->queue)) {
                json_object_put(c->queue);
                c->queue = NULL;
                c->queue_pos = 0;
            }
            return 1;
        }
        r = read_message(c, deadline_ms, &msg);
        if (r <= 0)
            return r;
        r = classify(c, msg, &reply);
        json_object_put(msg);
        if (r < 0)
            return classify_error(r);
        /* A stray response (r == 0) is dropped. */
    }
}

int
ctl_torrent_ref(struct json_object *params, const char *arg)
{
    struct json_object *v;

    /* As typed: the daemon reads a string of digits as an id when a
     * torrent has that id, else as an info-hash prefix (torrentd-api(7)). */
    v = json_object_new_string(arg);
    if (!v)
        return -ENOMEM;
    if (json_object_object_add(params, "torrent", v) < 0) {
        json_object_put(v);
        return -ENOMEM;
    }
    return 0;
}
