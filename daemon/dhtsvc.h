/* dhtsvc — the Mainline DHT node of torrentd, wired into the reactor:
 * UDP sockets, the timer, the saved state, bootstrap, and the lookups
 * that torrents (and the control API) ask for.
 *
 * Thread: reactor only.  Names in dht_bootstrap are resolved on a worker
 * thread of its own (getaddrinfo); the state file is written on the
 * session's io worker (state_write_file: atomic and durable).
 *
 * The protocol is daemon/dht.h (a pure node library); this module is the
 * I/O around it:
 * - Sockets.  One UDP socket per address family, bound to the address
 *   and port of config `listen` (the peer port, as mature clients do:
 *   UDP on the TCP port's number).  A specific IPv4 address: IPv4 only; a
 *   specific IPv6 address: IPv6 only; a wildcard (0.0.0.0 or [::]): IPv4,
 *   plus IPv6 (IPV6_V6ONLY) when the host has it (a failure there is
 *   logged at info and the node goes on with IPv4).  Port 0 (tests): the
 *   kernel picks one for IPv4 and IPv6 tries the same number;
 *   dhtsvc_port() tells which.
 * - I/O.  At most DHTSVC_RECV_BATCH datagrams per socket per wake-up;
 *   sendto() is non-blocking and a datagram that cannot leave now
 *   (EAGAIN, ENOBUFS, ...) is dropped and counted (KRPC is lossy by
 *   design).  One ev_timer follows dht_periodic()'s deadline.
 * - Identity.  The node id comes from the state file "dht" (written at
 *   stop and every DHTSVC_SAVE_S); else from the external address others
 *   reported last time (BEP 42, dht_id_from_ip); else random (RAND_bytes).
 *   A saved id that is not BEP 42-compliant for a saved external address
 *   is replaced by one that is.
 * - Bootstrap.  The saved nodes, and config `dht_bootstrap`
 *   (comma-separated host:port): numeric addresses at once, names through
 *   getaddrinfo on the worker.  While the table holds fewer than DHT_K
 *   nodes (a bootstrap through routers that knew few nodes) the saved nodes
 *   and the routers are tried again, after 5 s and then at doubling
 *   intervals up to 2 minutes (at most DHTSVC_REBOOTSTRAP_MAX times in a
 *   row); a table that has nodes is looked at every DHTSVC_REBOOTSTRAP_S.
 *
 * Lookups (dhtsvc_get_peers): one per family, joined; peers come as
 * sockaddrs, possibly repeated across calls.  The handle is valid until
 * on_done has been called or dhtsvc_lookup_cancel(); dhtsvc_stop() and
 * dhtsvc_free() end lookups still running with on_done(aborted = true),
 * so a caller that is freed before the dhtsvc must cancel its lookups
 * first.  Callbacks must not call dhtsvc_stop() or dhtsvc_free().
 *
 * BEP 27: private torrents never use the DHT.  dhtsvc does not know about
 * torrents: the caller (the engine) must not call dhtsvc_get_peers() or
 * dhtsvc_announce_new() for a torrent whose info dictionary has
 * private=1, nor put peers from the DHT into such a torrent.
 */
#ifndef TD_DAEMON_DHTSVC_H
#define TD_DAEMON_DHTSVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct dhtsvc;
struct dhtsvc_announce;
struct dhtsvc_lookup;
struct ev_loop;
struct json_object;
struct worker;

#define DHTSVC_RECV_BATCH 64          /* datagrams per socket per wake-up */
#define DHTSVC_RCVBUF (1 << 20)       /* SO_RCVBUF asked for */
#define DHTSVC_SAVE_S 600.0           /* state file written this often */
#define DHTSVC_STATE_FILE "dht"       /* in the state directory */
#define DHTSVC_STATE_MAX (64u << 10)  /* bytes of the state file */
#define DHTSVC_ANNOUNCE_S (15 * 60)   /* a torrent's announce period */
#define DHTSVC_ANNOUNCE_RETRY_S 30    /* ... when a round reached nobody */
#define DHTSVC_REBOOTSTRAP_S 30.0     /* is the table empty? */
#define DHTSVC_REBOOTSTRAP_MAX 20
#define DHTSVC_ROUTERS_MAX 64         /* dht_bootstrap entries used */
#define DHTSVC_PEERS_MAX 256          /* peers handed per on_peers call */

/* Start the DHT of the daemon: sockets on cfg->listen, the saved state
 * of cfg->state_dir (read now: call before the reactor runs), bootstrap
 * from it and cfg->dht_bootstrap.  io is the session's one-thread io
 * worker (borrowed: outlives the dhtsvc).  cfg is borrowed for the call.
 * Returns 0, or a negative errno after logging why (no socket could be
 * bound, out of memory). */
int dhtsvc_new(struct dhtsvc **ret, struct ev_loop *loop,
               const struct config *cfg, struct worker *io);

/* A clean stop begins: queue the state file's last write on the io
 * worker (so that the session's final barrier covers it), stop reading
 * and sending, and end the running lookups (on_done with aborted = true,
 * so that waiting API calls are answered before the daemon exits).  New
 * lookups are refused (-ESHUTDOWN); announce schedules stay allocated
 * until dhtsvc_announce_free().  Accepts NULL. */
void dhtsvc_stop(struct dhtsvc *svc);

/* Close the sockets, end the lookups (on_done with aborted = true),
 * free.  Blocks while a name is being resolved.  Accepts NULL. */
void dhtsvc_free(struct dhtsvc *svc);

/* The UDP port (the IPv4 socket's, else the IPv6 one's). */
uint16_t dhtsvc_port(const struct dhtsvc *svc);

/* --- lookups --- */

/* Peers for info_hash from one answer: addrs (AF_INET or AF_INET6
 * sockaddrs) are borrowed for the call. */
typedef void (*dhtsvc_peers_t)(void *arg, const uint8_t info_hash[20],
                               const struct sockaddr_storage *addrs,
                               size_t n);

struct dhtsvc_result {
    bool aborted;       /* ended by dhtsvc_free(), not by the network */
    unsigned queries;   /* KRPC queries sent, both families */
    unsigned answers;   /* answers received */
    unsigned peers;     /* peers received (with repeats) */
    unsigned announced; /* announce_peer sent */
    unsigned nodes;     /* closest nodes that answered */
    uint64_t ms;        /* duration of the longer family's lookup */
};

/* The end of a lookup; res borrowed for the call.  The handle is invalid
 * afterwards.  May start lookups. */
typedef void (*dhtsvc_done_t)(void *arg, const uint8_t info_hash[20],
                              const struct dhtsvc_result *res);

/* Look up peers for info_hash (get_peers); with announce_port > 0 also
 * announce us on that TCP port to the closest nodes (implied_port when
 * it is the DHT's own port).  on_peers and on_done may be NULL; arg is
 * borrowed (outlives the lookup).  Returns a handle, or NULL with *reterr
 * (if not NULL) set: -ESHUTDOWN (stopping), -ENOSPC (too many lookups
 * running), -ENOMEM. */
struct dhtsvc_lookup *dhtsvc_get_peers(struct dhtsvc *svc,
                                       const uint8_t info_hash[20],
                                       uint16_t announce_port,
                                       dhtsvc_peers_t on_peers,
                                       dhtsvc_done_t on_done, void *arg,
                                       int *reterr);

/* Stop a running lookup without calling its callbacks.  Accepts NULL. */
void dhtsvc_lookup_cancel(struct dhtsvc *svc, struct dhtsvc_lookup *lk);

/* --- the announce schedule of a torrent --- */

/* "Announce me every DHTSVC_ANNOUNCE_S": a lookup with announce now,
 * then every DHTSVC_ANNOUNCE_S (DHTSVC_ANNOUNCE_RETRY_S after a round
 * that reached no node, or could not start), each delivering peers to
 * on_peers (may be NULL).  arg is borrowed until dhtsvc_announce_free().
 * Returns NULL on -ENOMEM.  The port may change with
 * dhtsvc_announce_set_port(). */
struct dhtsvc_announce *dhtsvc_announce_new(struct dhtsvc *svc,
                                            const uint8_t info_hash[20],
                                            uint16_t port,
                                            dhtsvc_peers_t on_peers,
                                            void *arg);
void dhtsvc_announce_set_port(struct dhtsvc_announce *a, uint16_t port);

/* Stop the schedule (and its running lookup); no callback after this.
 * Accepts NULL. */
void dhtsvc_announce_free(struct dhtsvc_announce *a);

/* --- status --- */

/* dht.status's result (torrentd-api(7)): a new JSON object, or NULL on
 * ENOMEM.  svc may be NULL (the DHT is off): {"enabled": false}. */
struct json_object *dhtsvc_status_json(struct dhtsvc *svc);

/* Good nodes in the table (all families): for the status line. */
unsigned dhtsvc_good_nodes(struct dhtsvc *svc);

#endif
