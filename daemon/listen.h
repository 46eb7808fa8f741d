/* listen — the peer listen socket: bind to config `listen`, accept.
 *
 * Thread: reactor only.
 *
 * One non-blocking TCP socket bound to the configured address (port 0:
 * the kernel picks one; listen_port() tells which).  Each accepted
 * connection (SOCK_CLOEXEC | SOCK_NONBLOCK) goes to the callback, which
 * takes ownership of the fd.  At most LISTEN_ACCEPT_BATCH connections are
 * accepted per wake-up, so a flood cannot hold the reactor.  The limits
 * (max_peers, per torrent, bans) are the callback's business: it knows
 * the torrents.
 */
#ifndef TD_DAEMON_LISTEN_H
#define TD_DAEMON_LISTEN_H

#include <stdint.h>
#include <sys/socket.h>

struct ev_loop;
struct listen;

#define LISTEN_BACKLOG 128
#define LISTEN_ACCEPT_BATCH 32

/* An accepted connection: fd is owned by the callee (close it to refuse). */
typedef void (*listen_accept_t)(void *arg, int fd, const struct sockaddr *addr,
                                socklen_t addr_len);

/* Parse a numeric "a.b.c.d:port" or "[v6]:port" into *ret (port may be
 * 0).  Returns 0 and *ret, *ret_len, or -EINVAL. */
int listen_parse_addr(const char *text, struct sockaddr_storage *ret,
                      socklen_t *ret_len);

/* Format addr as "ip:port" / "[v6]:port" into buf (always terminated). */
void listen_format_addr(const struct sockaddr *addr, char *buf, size_t n);

/* Bind and listen on text (see listen_parse_addr) and accept on loop.
 * Returns 0 or -errno (-EINVAL for a bad address, -EADDRINUSE ...). */
int listen_new(struct listen **ret, struct ev_loop *loop, const char *text,
               listen_accept_t cb, void *arg);

/* Stop accepting, close and free; accepts NULL. */
void listen_free(struct listen *l);

/* The bound port (useful when the configuration said 0). */
uint16_t listen_port(const struct listen *l);

#endif
