/* rpc — the contract between the control server and the methods it calls.
 *
 * Thread: reactor only.
 *
 * The control server (control.c) owns connections, framing and JSON-RPC
 * envelopes.  For each request it makes a struct rpc_call and calls the
 * method's handler.  A handler answers exactly once, with rpc_call_reply()
 * or rpc_call_fail(), either before it returns or later (after a worker has
 * made a write durable, say).  The control server keeps responses in
 * request order.  If the client goes away while a call is pending, the
 * call stays valid until it is answered; the answer is then dropped.
 */
#ifndef TD_DAEMON_RPC_H
#define TD_DAEMON_RPC_H

#include <stdbool.h>
#include <sys/types.h>

struct json_object;
struct session;
struct rpc_call;

/* JSON-RPC 2.0 standard codes. */
#define RPC_PARSE_ERROR -32700
#define RPC_INVALID_REQUEST -32600
#define RPC_METHOD_NOT_FOUND -32601
#define RPC_INVALID_PARAMS -32602
#define RPC_INTERNAL_ERROR -32603

/* Application codes, documented in torrentd-api(7). */
#define RPC_E_TORRENT_NOT_FOUND -32001 /* no torrent by that name */
#define RPC_E_INVALID_TORRENT -32002   /* metainfo or magnet refused */
#define RPC_E_PERMISSION_DENIED -32003 /* read-only socket, ... */
#define RPC_E_AMBIGUOUS -32004         /* a hash prefix names several */
#define RPC_E_TOO_OLD -32005           /* events.subscribe since too old */
#define RPC_E_BUSY -32006              /* a limit was reached, retry */
#define RPC_E_IO -32007                /* disk or state write failed */
#define RPC_E_SHUTTING_DOWN -32008
#define RPC_E_INVALID_STATE -32009     /* e.g. verify while checking */

/* Who is calling: from SO_PEERCRED at accept time. */
struct rpc_caller {
    uid_t uid;
    gid_t gid;
    pid_t pid;
    bool read_only; /* came in on the status socket */
};

/* A method.  params is a JSON object (named params) or NULL; borrowed for
 * the duration of the handler call only (take a reference to keep it). */
typedef void (*rpc_handler_t)(struct session *s, struct rpc_call *call,
                              struct json_object *params);

struct rpc_method {
    const char *name;
    rpc_handler_t handler;
    bool changes_state; /* refused on the status socket, logged with uid */
};

/* The session's methods (session.c); NULL when there is no such method.
 * events.subscribe and daemon.version are the control server's own. */
const struct rpc_method *session_rpc_find(const char *name);

/* Answer a call with a result (ownership of result is taken; NULL means
 * JSON null).  The call must not be used afterwards. */
void rpc_call_reply(struct rpc_call *call, struct json_object *result);

/* Answer a call with an error: code, a message that tells a person what to
 * do, and optional data (an object; ownership taken; NULL for none: the
 * server then sends {} ).  The call must not be used afterwards. */
void rpc_call_fail(struct rpc_call *call, int code, struct json_object *data,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The caller's identity; valid until the call is answered. */
const struct rpc_caller *rpc_call_caller(const struct rpc_call *call);

/* True while the client that made the call is still connected. */
bool rpc_call_connected(const struct rpc_call *call);

#endif
