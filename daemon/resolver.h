/* resolver — host names to addresses off the reactor.
 *
 * Thread: reactor only (the resolver threads are internal).
 *
 * A small pool of threads of our own calls the blocking getaddrinfo();
 * the answer comes back to the reactor through a socket watched by libev
 * and is handed to the lookup's callback there.  (Not getaddrinfo_a():
 * glibc's notification threads crash under ThreadSanitizer.)
 *
 * Guarantees:
 * - a callback runs on the reactor, from the loop, never from inside
 *   resolver_lookup();
 * - after resolver_cancel() or resolver_free() no callback of that lookup
 *   (or of any lookup, for free) is ever called, even when its
 *   getaddrinfo() has already returned;
 * - resolver_free() never waits for a getaddrinfo() that is blocked: the
 *   threads finish it, drop the answer and exit on their own;
 * - a lookup with a timeout answers EAI_AGAIN once it expires (and its
 *   late answer is dropped).
 *
 * Cost: one small job record per lookup (a few hundred bytes), two
 * descriptors and `threads` threads per resolver (512 KiB stacks:
 * NSS modules need more than a peer thread).  The
 * job queue is a socket buffer: when it is full, resolver_lookup() fails
 * with -EAGAIN rather than block the reactor.
 */
#ifndef TD_DAEMON_RESOLVER_H
#define TD_DAEMON_RESOLVER_H

#include <stddef.h>

struct addrinfo;
struct ev_loop;
struct resolver;
struct resolver_lookup;

#define RESOLVER_THREADS_MAX 16
#define RESOLVER_HOST_MAX 253   /* bytes of a host name (RFC 1035) */
#define RESOLVER_SERVICE_MAX 31 /* bytes of a port or service name */

/* The answer.  gai_error is 0 and res (borrowed, valid during the call
 * only, never NULL) the addresses; or gai_error is a getaddrinfo() error
 * (EAI_NONAME, ..., EAI_AGAIN also for a timeout; gai_strerror() says
 * what) and res is NULL.  The lookup is freed before the call: its handle
 * is no longer valid.  The callback may start and cancel other lookups,
 * not free the resolver. */
typedef void (*resolver_cb_t)(void *arg, int gai_error,
                              const struct addrinfo *res);

/* The function the threads call, getaddrinfo() unless tests set another
 * (what it returns is freed with freeaddrinfo()). */
typedef int (*resolver_gai_fn_t)(const char *host, const char *service,
                                 const struct addrinfo *hints,
                                 struct addrinfo **res);

/* Start a resolver with `threads` threads (0: 1; at most
 * RESOLVER_THREADS_MAX) on loop.  Returns 0, -ENOMEM, or another negative
 * errno (socketpair, pthread_create; when at least one thread started the
 * resolver works with fewer). */
int resolver_new(struct resolver **ret, struct ev_loop *loop, unsigned threads);

/* Cancel every lookup (no callbacks), stop the watcher, close the
 * reactor's ends of the sockets and free.  Does not wait: threads in
 * getaddrinfo() finish it, free the lookup, drain the queue (freeing
 * the lookups there without resolving them) and exit.  Accepts NULL.
 * Not from inside a callback. */
void resolver_free(struct resolver *r);

/* Tests only, before the first lookup: what the threads call instead of
 * getaddrinfo(). */
void resolver_set_gai(struct resolver *r, resolver_gai_fn_t fn);

/* Resolve host (a name or a numeric address, at most RESOLVER_HOST_MAX
 * bytes) and service (a port number or a service name, at most
 * RESOLVER_SERVICE_MAX bytes, or NULL) with hints ai_family = family
 * (AF_UNSPEC, AF_INET or AF_INET6), ai_socktype = socktype (0 for any)
 * and ai_flags = flags (AI_NUMERICSERV, ...).  timeout: seconds after
 * which cb gets EAI_AGAIN, or 0 for none.  Strings are copied.
 *
 * Returns 0 and (if ret_lookup is not NULL) the lookup's handle, valid
 * until its callback runs or it is cancelled; or -EINVAL (empty or too
 * long host or service), -ENOMEM, -EAGAIN (the queue is full), or
 * another negative errno: then cb is never called. */
int resolver_lookup(struct resolver *r, const char *host, const char *service,
                    int family, int socktype, int flags, double timeout,
                    resolver_cb_t cb, void *arg,
                    struct resolver_lookup **ret_lookup);

/* Give the lookup up: its callback is never called, whatever its thread
 * is doing.  Accepts NULL.  Not for a lookup whose callback ran (or is
 * running). */
void resolver_cancel(struct resolver *r, struct resolver_lookup *l);

/* Lookups whose callback is still to come. */
size_t resolver_pending(const struct resolver *r);

#endif
