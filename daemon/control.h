/* control — the JSON-RPC 2.0 server on the control and status sockets.
 *
 * Thread: reactor only.
 *
 * One JSON object (or batch array) per '\n'-terminated line, both ways.
 * Each listening socket is either full-rights (control) or read-only
 * (status: queries and events only; every method that changes state gets
 * "permission denied").  Each client has bounded input and output buffers;
 * a client that sends a line over CONTROL_MAX_LINE, invalid UTF-8 or JSON
 * nested too deeply gets an error (and is disconnected where the stream can
 * not be resynchronised); a client that does not read its responses is
 * disconnected when its output passes CONTROL_MAX_OUTPUT.  Nothing here
 * blocks the reactor.
 */
#ifndef TD_DAEMON_CONTROL_H
#define TD_DAEMON_CONTROL_H

#include <stdbool.h>

struct ev_loop;
struct session;
struct control;

#define CONTROL_MAX_LINE (64u << 20)    /* big .torrent files, base64 */
#define CONTROL_MAX_OUTPUT (64u << 20)
#define CONTROL_MAX_CLIENTS 1024

/* Serve on listen_fd (a bound, listening AF_UNIX stream socket; ownership
 * taken).  read_only makes it a status socket. */
int control_new(struct control **ret, struct ev_loop *loop,
                struct session *s, int listen_fd, bool read_only);

/* Close the listener and every client; accepts NULL.  Pending calls are
 * answered into the void. */
void control_free(struct control *c);

#endif
