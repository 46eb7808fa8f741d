/* trk_udp — the UDP tracker client (BEP 15) in the reactor.
 *
 * Thread: reactor only (the resolver's notification threads are internal).
 *
 * One struct trk_udp serves every torrent: one UDP socket per address
 * family (made on first use, SOCK_CLOEXEC, bound to the configured address
 * so that trackers record the address we listen on), matched to requests
 * by transaction id (RAND_bytes) and source address.
 *
 * A request goes: resolve the host (numeric hosts at once; names with
 * daemon/resolver: the caller's, or two threads of trk_udp's own, so the
 * reactor never waits on DNS),
 * connect (a connection id is cached per tracker address for
 * TRACKER_UDP_CONN_TTL seconds, BEP 15), then announce or scrape.  Each
 * datagram is sent again after base * 2^n seconds (BEP 15: base 15 s);
 * after max_tries sends without an answer the request fails with
 * -ETIMEDOUT, unless the name also resolved to an address of the other
 * family: then that one gets the same chance.  Name resolution is bounded
 * by TRK_UDP_DNS_TIMEOUT.
 */
#ifndef TD_DAEMON_TRK_UDP_H
#define TD_DAEMON_TRK_UDP_H

#include <stddef.h>
#include <stdint.h>

#include "common/tracker.h"

struct ev_loop;
struct resolver;
struct trk_udp;
struct trk_udp_req;

#define TRK_UDP_RETRANS_BASE 15.0  /* seconds, BEP 15 */
#define TRK_UDP_MAX_TRIES 4        /* sends of one datagram; BEP 15 allows 9 */
#define TRK_UDP_TRIES_LIMIT 9
#define TRK_UDP_DNS_TIMEOUT 30.0   /* seconds */
#define TRK_UDP_CONN_CACHE 256     /* trackers whose connection id we keep */
#define TRK_UDP_RECV_BATCH 32      /* datagrams read per wake-up */

struct trk_udp_config {
    const char *bind_addr;  /* numeric IPv4 or IPv6, or NULL for any (then
                               both families are usable) */
    double retrans_base;    /* seconds; 0: TRK_UDP_RETRANS_BASE */
    unsigned max_tries;     /* 0: TRK_UDP_MAX_TRIES; at most
                               TRK_UDP_TRIES_LIMIT */
    double dns_timeout;     /* seconds; 0: TRK_UDP_DNS_TIMEOUT */
    struct resolver *resolver; /* borrowed: outlives the trk_udp; or
                                  NULL: trk_udp starts its own */
};

/* The end of a request.  result is 0 when the tracker answered: resp (borrowed,
 * valid during the call) then holds the announce answer (resp->announce)
 * or the scrape answer (resp->scrape); a tracker's error message is in
 * resp->announce.failure or resp->scrape.failure.  Otherwise result is
 * a negative errno (-ETIMEDOUT, -EHOSTUNREACH when the name does not
 * resolve to a usable address, -EBADMSG for a malformed answer, or a
 * socket error), resp is NULL and error says what happened.  The request
 * is freed after the call; the callback may start and cancel others. */
typedef void (*trk_udp_cb_t)(void *arg, int result,
                             const struct tracker_udp_resp *resp,
                             const char *error);

/* Returns 0, -EINVAL (bind_addr not numeric), -ENOMEM, or another
 * negative errno (resolver_new()).  Without cfg->resolver it starts a
 * resolver of its own; the UDP sockets are made on first use. */
int trk_udp_new(struct trk_udp **ret, struct ev_loop *loop,
                const struct trk_udp_config *cfg);

/* Cancel every request (no callbacks) and its lookup, close the
 * sockets, free (and resolver_free() its own resolver, which does not
 * wait for a lookup in progress).  Accepts NULL.  Not from inside a
 * callback. */
void trk_udp_free(struct trk_udp *u);

/* Announce to a "udp://host:port" URL.  req is copied (its tracker id is
 * not used by BEP 15).  max_tries: 0 for the configured number (stop
 * events at shutdown use 1).  On success *ret_req (if not NULL) is for
 * trk_udp_cancel(), valid until the callback.  Returns 0,
 * TRACKER_E_URL for a bad URL, or a negative errno; the callback is never
 * called on failure. */
int trk_udp_announce(struct trk_udp *u, const char *url,
                     const struct tracker_announce_req *req,
                     unsigned max_tries, trk_udp_cb_t cb, void *arg,
                     struct trk_udp_req **ret_req);

/* Scrape 1..TRACKER_UDP_SCRAPE_MAX info-hashes (copied).  The same
 * contract. */
int trk_udp_scrape(struct trk_udp *u, const char *url,
                   const uint8_t (*hashes)[TRACKER_HASH_LEN], size_t n,
                   unsigned max_tries, trk_udp_cb_t cb, void *arg,
                   struct trk_udp_req **ret_req);

/* Abort a request; its callback is not called.  Accepts NULL.  Not for
 * the request whose callback is running. */
void trk_udp_cancel(struct trk_udp_req *r);

/* Requests in flight. */
size_t trk_udp_pending(const struct trk_udp *u);

/* Datagrams received that matched no request or did not parse. */
uint64_t trk_udp_dropped(const struct trk_udp *u);

#endif
