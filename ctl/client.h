/* client — torrentctl's connection to the daemon: finding the socket,
 * JSON-RPC 2.0 requests and responses, event notifications, and the
 * mapping of every failure to an exit status (ctl.h).
 *
 * Thread: main only.
 *
 * The socket is the first of these that exists (ctl_socket_find):
 *     --socket PATH, $TORRENTD_SOCKET,
 *     /run/torrentd/control.sock, $XDG_RUNTIME_DIR/torrentd/control.sock
 * A command that only reads (CTL_ACCESS_READ) falls back to the read-only
 * status socket next to it, "status.sock", when the control socket refuses
 * us (EACCES: we are not in its group).
 *
 * Framing is the daemon's (daemon/control.h): one JSON object per '\n'
 * terminated line both ways.  Every wait for the daemon is bounded: a
 * request that gets no answer within the timeout fails with
 * CTL_EXIT_TIMEOUT; a response line longer than CTL_CLIENT_MAX_LINE fails.
 * Notifications that arrive while a response is awaited (after
 * events.subscribe) are queued, in order, for ctl_client_next_event().
 *
 * Errors: the functions that return an enum ctl_exit have already printed
 * what went wrong on stderr (ctl_err) when they return anything but
 * CTL_EXIT_OK, except where said otherwise.
 */
#ifndef TD_CTL_CLIENT_H
#define TD_CTL_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/jsonrpc.h"

struct ctl_ctx;
struct json_object;

/* The longest line the daemon may send us: its own output cap. */
#define CTL_CLIENT_MAX_LINE (64u << 20)
/* Bytes asked of recv() at a time. */
#define CTL_CLIENT_READ_CHUNK 65536
/* How long a request may wait for its response, in milliseconds, unless
 * $TORRENTCTL_TIMEOUT gives other seconds (up to CTL_CLIENT_TIMEOUT_MAX_S). */
#define CTL_CLIENT_TIMEOUT_MS 60000
#define CTL_CLIENT_TIMEOUT_MAX_S 86400
/* The read-only socket, in the directory of the control socket. */
#define CTL_STATUS_SOCKET_NAME "status.sock"
/* Where a user's own daemon puts its socket, under $XDG_RUNTIME_DIR. */
#define CTL_XDG_SOCKET "torrentd/control.sock"
/* The most notifications kept while a response is awaited; a client that
 * falls further behind has its subscription's events dropped and fails. */
#define CTL_CLIENT_MAX_QUEUED 65536

enum ctl_access {
    CTL_ACCESS_READ,  /* queries and events: the status socket will do */
    CTL_ACCESS_WRITE, /* changes: the control socket only */
    CTL_ACCESS_MAX
};

struct ctl_client {
    int fd;                       /* owned; -1 when closed */
    char *path;                   /* owned: the socket we are connected to */
    bool read_only;               /* connected to the status socket */
    int timeout_ms;               /* per request */
    int64_t next_id;              /* of the next request */
    struct jsonrpc_reader reader; /* lines from the daemon */
    char *rbuf;                   /* owned: CTL_CLIENT_READ_CHUNK bytes read */
    size_t rpos, rlen;            /* rbuf[rpos..rlen) not yet fed */
    struct json_object *queue;    /* owned: array of notification params */
    size_t queue_pos;             /* next one to hand out */
};

/* Decide which socket to use: explicit (--socket, may be NULL), then
 * $TORRENTD_SOCKET, then the first of the two well-known paths that
 * exists (the first one when neither does).  Returns a new string for the
 * caller to free(), or NULL on ENOMEM. */
char *ctl_socket_find(const char *explicit_path);

/* Connect to the daemon named by ctx (see ctl_socket_find; ctx->socket_path
 * is the explicit choice, NULL for none).  A bad $TORRENTCTL_TIMEOUT is a
 * usage error (CTL_EXIT_USAGE).  With CTL_ACCESS_READ, falls
 * back to the status socket when the control socket says EACCES.
 * Returns CTL_EXIT_OK and a connected client, or CTL_EXIT_CONNECT /
 * CTL_EXIT_PERMISSION / CTL_EXIT_TIMEOUT / CTL_EXIT_FAILURE (printed; the
 * client is then closed, and ctl_client_close() is still safe). */
int ctl_client_open(struct ctl_client *c, const struct ctl_ctx *ctx,
                    enum ctl_access access);

/* Close and free everything; accepts a closed or never-opened client
 * (zeroed with fd = -1 by ctl_client_open even when it fails). */
void ctl_client_close(struct ctl_client *c);

/* Send one request and wait for its response.  Ownership of params (a
 * JSON object, or NULL for none) is taken.
 * Returns:
 *   0 with *ret_result (the caller puts it; may be JSON null = NULL),
 *   1 with *ret_error, the daemon's error object (the caller puts it),
 *     nothing printed,
 *   a negative -(enum ctl_exit) for a transport failure (printed). */
int ctl_client_rpc(struct ctl_client *c, const char *method,
                   struct json_object *params, struct json_object **ret_result,
                   struct json_object **ret_error);

/* The same, but a daemon error is printed and mapped (ctl_rpc_error_exit).
 * Returns CTL_EXIT_OK with *ret_result set, or an exit status. */
int ctl_client_call(struct ctl_client *c, const char *method,
                    struct json_object *params,
                    struct json_object **ret_result);

/* Print the daemon's error message (and, for an ambiguous prefix, the
 * torrents it matches) and return its exit status: permission denied
 * (-32003) -> CTL_EXIT_PERMISSION, torrent not found (-32001) ->
 * CTL_EXIT_NOT_FOUND, anything else -> CTL_EXIT_FAILURE. */
int ctl_rpc_error_exit(const struct json_object *error);

/* The same mapping, printing nothing. */
int ctl_rpc_error_status(const struct json_object *error);

/* The "code" of an error object, or 0. */
int ctl_rpc_error_code(const struct json_object *error);

/* The next event (the params of a notification "event"), from the queue
 * or the socket, waiting until deadline_ms (CLOCK_MONOTONIC milliseconds,
 * see ctl_now_ms; -1 waits for ever).
 * Returns 1 with *ret_event (the caller puts it), 0 when the daemon closed
 * the connection (nothing printed), -CTL_EXIT_TIMEOUT when the deadline
 * passed (nothing printed), or another -(enum ctl_exit) (printed). */
int ctl_client_next_event(struct ctl_client *c, int64_t deadline_ms,
                          struct json_object **ret_event);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t ctl_now_ms(void);

/* Add the torrent named on the command line (an id, an info-hash or a
 * prefix of one) to params as "torrent": "text"; the daemon tells them
 * apart.  Returns 0 or -ENOMEM. */
int ctl_torrent_ref(struct json_object *params, const char *arg);

#endif
