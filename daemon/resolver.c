/* resolver — getaddrinfo() on threads of our own; see resolver.h.
 *
 * A lookup must never be answered into freed memory or a closed (and
 * perhaps reused) descriptor, so:
 * - each lookup is a struct resolver_lookup of its own with an atomic
 *   state PENDING -> DONE (the thread wins: the reactor owns it from then
 *   on) or PENDING -> ABANDONED (the reactor gave up: the thread frees
 *   it);
 * - a thread sends back only the lookup's id (never a pointer); the
 *   reactor looks the id up in its own list, so an id that arrives after
 *   a cancel (or a timeout) is just ignored;
 * - the descriptors the threads use live in a small refcounted struct
 *   that each thread holds, so they stay open until the last thread is
 *   gone.  resolver_free() closes the job socket's write end and does not
 *   wait: the threads drain the queue (freeing abandoned lookups without
 *   resolving them) and exit when they read end-of-file.
 * Atomics, no locks (STYLE.md §6).  The pointer a job record carries
 * moves the lookup's host, service and hints to the thread (the socket
 * orders those writes before the thread's reads); gai and res are
 * written by the thread before PENDING -> DONE and read by the reactor
 * only after it saw DONE.  The reactor-only fields (list links, timer,
 * callback) are never touched by a thread.
 */
#include "daemon/resolver.h"

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RESOLVER_BATCH 32 /* answers read per wake-up */
#define RESOLVER_STACK (512u << 10)

enum lookup_state { LK_PENDING, LK_DONE, LK_ABANDONED };

/* Shared with the threads; freed with the last reference. */
struct resolver_chan {
    atomic_uint refs;
    int jobs_r;            /* owned: lookups to do (pointers) */
    int res_w;             /* owned: lookups done (ids) */
    resolver_gai_fn_t gai; /* set before the first job is sent */
};

struct resolver_lookup {
    atomic_int state; /* enum lookup_state */
    uint64_t id;
    /* The thread's: written before DONE. */
    int gai;
    struct addrinfo *res; /* owned */
    /* Read by the thread, written before the job is sent. */
    struct addrinfo hints;
    char host[RESOLVER_HOST_MAX + 1];
    char service[RESOLVER_SERVICE_MAX + 1];
    bool has_service;
    /* The reactor's only. */
    struct resolver_lookup *prev, *next;
    ev_timer timer;
    resolver_cb_t cb;
    void *arg;
    struct resolver *r; /* borrowed: the owner */
};

struct resolver {
    struct ev_loop *loop;            /* borrowed */
    struct resolver_lookup *lookups; /* owned (DONE) or shared (PENDING) */
    size_t n_lookups;
    uint64_t next_id;
    struct resolver_chan *chan; /* a reference */
    int jobs_w;                 /* owned: to the threads */
    int res_r;                  /* owned: from the threads */
    ev_io io;
};

/* --- shared ------------------------------------------------------------- */

static void
chan_unref(struct resolver_chan *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        if (c->jobs_r >= 0)
            close(c->jobs_r);
        if (c->res_w >= 0)
            close(c->res_w);
        free(c);
    }
}

static void
lookup_free(struct resolver_lookup *l)
{
    if (l->res)
        freeaddrinfo(l->res);
    free(l);
}

/* A thread: lookups until the reactor closes the job socket. */
static void *
resolver_main(void *arg)
{
    struct resolver_chan *c = arg;
    for (;;) {
        struct resolver_lookup *l;
        ssize_t n = recv(c->jobs_r, &l, sizeof(l), 0);
        if (n == 0)
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(l))
            break;
        if (atomic_load(&l->state) == LK_ABANDONED) {
            lookup_free(l);
            continue;
        }
        l->gai = c->gai(l->host, l->has_service ? l->service : NULL, &l->hints,
                        &l->res);
        if (l->gai != 0)
            l->res = NULL;
        uint64_t id = l->id;
        int expect = LK_PENDING;
        if (atomic_compare_exchange_strong(&l->state, &expect, LK_DONE)) {
            /* l is the reactor's now: do not touch it again.  If this
             * send fails (the reactor is gone or far behind), the
             * lookup's timeout (or its owner's) ends it. */
            (void)send(c->res_w, &id, sizeof(id), MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            lookup_free(l);
        }
    }
    chan_unref(c);
    return NULL;
}

/* --- the reactor's side ------------------------------------------------- */

static void
lookup_unlink(struct resolver *r, struct resolver_lookup *l)
{
    ev_timer_stop(r->loop, &l->timer);
    if (l->prev)
        l->prev->next = l->next;
    else
        r->lookups = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
    r->n_lookups--;
}

/* Give a lookup up.  Unlinked first: once ABANDONED, its thread may free
 * it at any moment.  If the thread already finished it (DONE), it is ours
 * to free; its id, when it arrives, matches nothing. */
static void
lookup_abandon(struct resolver *r, struct resolver_lookup *l)
{
    int expect = LK_PENDING;
    lookup_unlink(r, l);
    if (!atomic_compare_exchange_strong(&l->state, &expect, LK_ABANDONED))
        lookup_free(l);
}

static void
timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct resolver_lookup *l = w->data;
    struct resolver *r = l->r;
    resolver_cb_t cb = l->cb;
    void *arg = l->arg;
    (void)loop;
    (void)revents;
    lookup_abandon(r, l);
    cb(arg, EAI_AGAIN, NULL);
}

static void
answer_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct resolver *r = w->data;
    (void)loop;
    (void)revents;
    for (int i = 0; i < RESOLVER_BATCH; i++) {
        uint64_t id;
        ssize_t n = recv(r->res_r, &id, sizeof(id), MSG_DONTWAIT);
        if (n != (ssize_t)sizeof(id))
            return;
        /* Looked up again for each answer: a callback may have
         * cancelled others. */
        struct resolver_lookup *l = r->lookups;
        while (l && l->id != id)
            l = l->next;
        if (!l || atomic_load(&l->state) != LK_DONE)
            continue;
        lookup_unlink(r, l);
        l->cb(l->arg, l->gai, l->gai == 0 ? l->res : NULL);
        lookup_free(l);
    }
}

int
resolver_lookup(struct resolver *r, const char *host, const char *service,
                int family, int socktype, int flags, double timeout,
                resolver_cb_t cb, void *arg,
                struct resolver_lookup **ret_lookup)
{
    size_t hl = host ? strlen(host) : 0;
    size_t sl = service ? strlen(service) : 0;
    if (hl == 0 || hl > RESOLVER_HOST_MAX || (service && sl == 0) ||
        sl > RESOLVER_SERVICE_MAX || !cb)
        return -EINVAL;
    struct resolver_lookup *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    atomic_init(&l->state, LK_PENDING);
    l->id = ++r->next_id;
    memcpy(l->host, host, hl + 1);
    if (service) {
        memcpy(l->service, service, sl + 1);
        l->has_service = true;
    }
    l->hints.ai_family = family;
    l->hints.ai_socktype = socktype;
    l->hints.ai_flags = flags;
    l->cb = cb;
    l->arg = arg;
    l->r = r;
    ev_timer_init(&l->timer, timeout_cb, timeout > 0 ? timeout : 0., 0.);
    l->timer.data = l;
    /* Listed first: the thread may answer before send() returns. */
    l->next = r->lookups;
    if (r->lookups)
        r->lookups->prev = l;
    r->lookups = l;
    r->n_lookups++;
    if (send(r->jobs_w, &l, sizeof(l), MSG_NOSIGNAL | MSG_DONTWAIT) !=
        (ssize_t)sizeof(l)) {
        int e = errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        /* Never reached a thread: ours alone. */
        lookup_unlink(r, l);
        free(l);
        return e < 0 ? e : -EIO;
    }
    if (timeout > 0)
        ev_timer_start(r->loop, &l->timer);
    if (ret_lookup)
        *ret_lookup = l;
    return 0;
}

void
resolver_cancel(struct resolver *r, struct resolver_lookup *l)
{
    if (r && l)
        lookup_abandon(r, l);
}

size_t
resolver_pending(const struct resolver *r)
{
    return r ? r->n_lookups : 0;
}

void
resolver_set_gai(struct resolver *r, resolver_gai_fn_t fn)
{
    r->chan->gai = fn ? fn : getaddrinfo;
}

/* The sockets and the threads (all signals blocked in them). */
static int
start_threads(struct resolver *r, unsigned threads)
{
    int jobs[2], res[2], ret = 0;
    struct resolver_chan *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->jobs_r = c->res_w = -1;
    c->gai = getaddrinfo;
    atomic_init(&c->refs, 1);
    r->chan = c;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, jobs) < 0)
        return -errno;
    r->jobs_w = jobs[0];
    c->jobs_r = jobs[1];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   res) < 0)
        return -errno;
    r->res_r = res[0];
    c->res_w = res[1];

    pthread_attr_t attr;
    sigset_t all, old;
    if (pthread_attr_init(&attr) != 0)
        return -ENOMEM;
    (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    (void)pthread_attr_setstacksize(&attr, RESOLVER_STACK);
    sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < threads; i++) {
        pthread_t th;
        atomic_fetch_add(&c->refs, 1);
        int e = pthread_create(&th, &attr, resolver_main, c);
        if (e != 0) {
            atomic_fetch_sub(&c->refs, 1);
            if (i == 0)
                ret = -e;
            break;
        }
        char name[16];
        (void)snprintf(name, sizeof(name), "resolver/%u", i % 100u);
        (void)pthread_setname_np(th, name);
    }
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    (void)pthread_attr_destroy(&attr);
    return ret;
}

int
resolver_new(struct resolver **ret, struct ev_loop *loop, unsigned threads)
{
    struct resolver *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->loop = loop;
    r->jobs_w = r->res_r = -1;
    if (threads == 0)
        threads = 1;
    if (threads > RESOLVER_THREADS_MAX)
        threads = RESOLVER_THREADS_MAX;
    int e = start_threads(r, threads);
    if (e < 0) {
        resolver_free(r);
        return e;
    }
    ev_io_init(&r->io, answer_cb, r->res_r, EV_READ);
    r->io.data = r;
    ev_io_start(loop, &r->io);
    *ret = r;
    return 0;
}

void
resolver_free(struct resolver *r)
{
    if (!r)
        return;
    while (r->lookups)
        lookup_abandon(r, r->lookups);
    ev_io_stop(r->loop, &r->io);
    /* End of file for the threads, once they have drained the queue. */
    if (r->jobs_w >= 0)
        close(r->jobs_w);
    if (r->res_r >= 0)
        close(r->res_r);
    if (r->chan)
        chan_unref(r->chan);
    free(r);
}
