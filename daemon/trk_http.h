/* trk_http — HTTP(S) GETs for tracker announces and scrapes, through
 * libcurl's multi-socket interface driven by the reactor.
 *
 * Thread: reactor only.
 *
 * One struct trk_http holds one curl multi handle.  curl tells us which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION: one ev_io per socket) and
 * when to wake it (CURLMOPT_TIMERFUNCTION: one ev_timer); our watchers call
 * curl_multi_socket_action().  Nothing blocks: names are resolved by
 * curl's threaded resolver (Debian's libcurl has it; trk_http_new() refuses
 * a libcurl without asynchronous DNS), connections are non-blocking, and
 * each request has a total timeout.  Sockets are made with SOCK_CLOEXEC.
 *
 * A response body is kept in memory up to max_body bytes; a longer one
 * fails the request with -EMSGSIZE.  Redirects are followed (at most 5,
 * http and https only).  The callback runs on the reactor, once per
 * request that was not cancelled, after the request is gone from curl.
 */
#ifndef TD_DAEMON_TRK_HTTP_H
#define TD_DAEMON_TRK_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct trk_http;
struct trk_http_req;

#define TRK_HTTP_MAX_BODY (2u << 20)
#define TRK_HTTP_USER_AGENT "torrentd/" TD_VERSION

/* The end of a request.  result: 0 when an HTTP answer came (status is its
 * code, body and len its body: borrowed, valid during the call, and
 * NUL-terminated for convenience), or a negative errno (-ETIMEDOUT,
 * -ECONNREFUSED, -EHOSTUNREACH for DNS and connection failures, -EMSGSIZE
 * for a body over the cap, -EIO for the rest) with error a human message
 * from curl.  error is "" on success.  The request is freed after the
 * call returns; the callback may start new requests and cancel others. */
typedef void (*trk_http_cb_t)(void *arg, int result, long status,
                              const uint8_t *body, size_t len,
                              const char *error);

struct trk_http_opts {
    const char *url;          /* http:// or https:// */
    unsigned timeout_ms;      /* whole request; 0: 30 s */
    const char *bind_addr;    /* numeric local address, or NULL */
    size_t max_body;          /* 0: TRK_HTTP_MAX_BODY */
};

/* Make the multi handle.  Returns 0, -ENOTSUP without async DNS in
 * libcurl, or -ENOMEM. */
int trk_http_new(struct trk_http **ret, struct ev_loop *loop);

/* Cancel every request (no callbacks), stop the watchers, free.  Accepts
 * NULL.  Not from inside a callback of h. */
void trk_http_free(struct trk_http *h);

/* Start a GET.  The strings in o are copied.  On success *ret_req (if not
 * NULL) is a handle for trk_http_cancel(), valid until the callback
 * returns.  Returns 0, -EINVAL (bad options) or -ENOMEM; the callback is
 * never called on failure. */
int trk_http_get(struct trk_http *h, const struct trk_http_opts *o,
                 trk_http_cb_t cb, void *arg, struct trk_http_req **ret_req);

/* Abort a request; its callback is not called.  Accepts NULL.  Not for
 * the request whose callback is running (it is already finished). */
void trk_http_cancel(struct trk_http_req *r);

/* Requests in flight. */
size_t trk_http_pending(const struct trk_http *h);

#endif
