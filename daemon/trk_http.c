/* trk_http — libcurl multi-socket on libev.
 *
 * The pattern of curl's docs/examples/evhiperfifo.c: curl asks for
 * watchers through the socket and timer callbacks, our watchers hand
 * readiness back with curl_multi_socket_action(), and after each call the
 * finished transfers are collected with curl_multi_info_read().  The timer
 * callback only arms the ev_timer: curl must not be re-entered from it.
 */
#include "daemon/trk_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <ev.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"

#define TRK_HTTP_DEFAULT_TIMEOUT_MS 30000u
#define TRK_HTTP_CONNECT_TIMEOUT_MS 15000u
#define TRK_HTTP_MAX_REDIRS 5L
#define TRK_HTTP_IFACE_MAX 80 /* "host!" + a numeric address */

struct trk_http {
    struct ev_loop *loop;        /* borrowed: outlives h */
    CURLM *multi;                /* owned */
    ev_timer timer;
    struct trk_http_req *reqs;   /* owned: requests in flight */
    size_t n_reqs;
};

struct trk_http_req {
    struct trk_http *h;          /* borrowed: the owner */
    struct trk_http_req *prev, *next;
    CURL *easy;                  /* owned */
    struct buf body;
    bool too_large;
    trk_http_cb_t cb;
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
};

/* One per socket curl asked us to watch (curl_multi_assign() data). */
struct trk_http_sock {
    struct trk_http *h;
    ev_io io;
};

static void check_done(struct trk_http *h);

static void
req_unlink(struct trk_http_req *r)
{
    struct trk_http *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    h->n_reqs--;
}

static void
req_free(struct trk_http_req *r)
{
    if (!r)
        return;
    if (r->easy) {
        (void)curl_multi_remove_handle(r->h->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    buf_release(&r->body);
    free(r);
}

static void
action(struct trk_http *h, curl_socket_t s, int flags)
{
    int running = 0;
    (void)curl_multi_socket_action(h->multi, s, flags, &running);
    check_done(h);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct trk_http_sock *sk = w->data;
    int flags = 0;
    (void)loop;
    if (revents & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (revents & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    action(sk->h, w->fd, flags);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    action(w->data, CURL_SOCKET_TIMEOUT, 0);
}

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct trk_http *h = userp;
    struct trk_http_sock *sk = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (sk) {
            ev_io_stop(h->loop, &sk->io);
            free(sk);
            (void)curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) |
                 (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!sk) {
        sk = calloc(1, sizeof(*sk));
        if (!sk)
            return -1;
        sk->h = h;
        ev_io_init(&sk->io, io_cb, s, events);
        sk->io.data = sk;
        (void)curl_multi_assign(h->multi, s, sk);
    } else {
        ev_io_stop(h->loop, &sk->io);
        ev_io_set(&sk->io, s, events);
    }
    ev_io_start(h->loop, &sk->io);
    return 0;
}

static int
timerfunc_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct trk_http *h = userp;
    (void)multi;
    ev_timer_stop(h->loop, &h->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&h->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(h->loop, &h->timer);
    }
    return 0;
}

static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose,
              struct curl_sockaddr *address)
{
    (void)clientp;
    (void)purpose;
    return socket(address->family, address->socktype | SOCK_CLOEXEC,
                  address->protocol);
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct trk_http_req *r = userdata;
    size_t n = size * nmemb;
    if (buf_append(&r->body, ptr, n) < 0) {
        r->too_large = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return n;
}

static int
curl_to_errno(CURLcode c)
{
    switch (c) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static void
check_done(struct trk_http *h)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(h->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct trk_http_req *r = NULL;
        CURLcode code = msg->data.result;
        (void)curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &r);
        if (!r)
            continue;
        long status = 0;
        (void)curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        req_unlink(r);
        /* Out of curl before the callback, which may start requests. */
        (void)curl_multi_remove_handle(h->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;

        int result = 0;
        const char *err = "";
        if (r->too_large) {
            result = -EMSGSIZE;
            err = "response body too large";
        } else if (code != CURLE_OK) {
            result = curl_to_errno(code);
            err = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
        }
        static const uint8_t empty[1];
        const uint8_t *body = r->body.data ? (const uint8_t *)r->body.data
                                           : empty;
        r->cb(r->arg, result, result == 0 ? status : 0, body,
              result == 0 ? r->body.len : 0, err);
        req_free(r);
    }
}

int
trk_http_new(struct trk_http **ret, struct ev_loop *loop)
{
    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    if (!vi || !(vi->features & CURL_VERSION_ASYNCHDNS))
        return -ENOTSUP;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -ENOMEM;

    struct trk_http *h = calloc(1, sizeof(*h));
    if (!h)
        goto fail_global;
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi)
        goto fail_free;
    ev_timer_init(&h->timer, timer_cb, 0., 0.);
    h->timer.data = h;
    (void)curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    (void)curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    (void)curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timerfunc_cb);
    (void)curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    *ret = h;
    return 0;

fail_free:
    free(h);
fail_global:
    curl_global_cleanup();
    return -ENOMEM;
}

void
trk_http_free(struct trk_http *h)
{
    if (!h)
        return;
    while (h->reqs) {
        struct trk_http_req *r = h->reqs;
        req_unlink(r);
        req_free(r);
    }
    (void)curl_multi_cleanup(h->multi);
    ev_timer_stop(h->loop, &h->timer);
    free(h);
    curl_global_cleanup();
}

size_t
trk_http_pending(const struct trk_http *h)
{
    return h->n_reqs;
}

#define SETOPT(e, opt, val)                                  \
    do {                                                     \
        if (curl_easy_setopt((e), (opt), (val)) != CURLE_OK) \
            goto fail;                                       \
    } while (0)

int
trk_http_get(struct trk_http *h, const struct trk_http_opts *o,
             trk_http_cb_t cb, void *arg, struct trk_http_req **ret_req)
{
    char iface[TRK_HTTP_IFACE_MAX];
    if (!o->url || !cb)
        return -EINVAL;
    if (o->bind_addr) {
        int n = snprintf(iface, sizeof(iface), "host!%s", o->bind_addr);
        if (n < 0 || (size_t)n >= sizeof(iface))
            return -EINVAL;
    }

    struct trk_http_req *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->h = h;
    r->cb = cb;
    r->arg = arg;
    buf_init(&r->body, o->max_body ? o->max_body : TRK_HTTP_MAX_BODY);
    r->easy = curl_easy_init();
    if (!r->easy)
        goto fail;
    CURL *e = r->easy;
    unsigned timeout = o->timeout_ms ? o->timeout_ms
                                     : TRK_HTTP_DEFAULT_TIMEOUT_MS;
    SETOPT(e, CURLOPT_URL, o->url);
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_FOLLOWLOCATION, 1L);
    SETOPT(e, CURLOPT_MAXREDIRS, TRK_HTTP_MAX_REDIRS);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_TIMEOUT_MS, (long)timeout);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS,
           (long)(timeout < TRK_HTTP_CONNECT_TIMEOUT_MS
                      ? timeout : TRK_HTTP_CONNECT_TIMEOUT_MS));
    SETOPT(e, CURLOPT_USERAGENT, TRK_HTTP_USER_AGENT);
    SETOPT(e, CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(e, CURLOPT_WRITEFUNCTION, write_cb);
    SETOPT(e, CURLOPT_WRITEDATA, r);
    SETOPT(e, CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(e, CURLOPT_PRIVATE, r);
    SETOPT(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
    if (o->bind_addr)
        SETOPT(e, CURLOPT_INTERFACE, iface);
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
        goto fail;

    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    h->n_reqs++;
    if (ret_req)
        *ret_req = r;
    return 0;

fail:
    if (r->easy)
        curl_easy_cleanup(r->easy);
    buf_release(&r->body);
    free(r);
    return -ENOMEM;
}

void
trk_http_cancel(struct trk_http_req *r)
{
    if (!r)
        return;
    req_unlink(r);
    req_free(r);
}
