/* notify — telling the service manager how torrentd is doing (sd_notify).
 *
 * Thread: reactor only (main before the reactor starts).
 *
 * A thin layer over sd_notify(3) so that main.c reads as a list of states.
 * Every call is a no-op returning 0 when $NOTIFY_SOCKET is not set (not run
 * by systemd, or run by a test without a notify socket).  Failures to send
 * are returned as a negative errno and are never fatal: the caller logs
 * them at debug at most.  The environment is left as it is, so that later
 * calls still find $NOTIFY_SOCKET.
 */
#ifndef TD_DAEMON_NOTIFY_H
#define TD_DAEMON_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* True when $NOTIFY_SOCKET is set. */
bool notify_enabled(void);

/* READY=1 with STATUS=status (status may be NULL). */
int notify_ready(const char *status);

/* RELOADING=1 with MONOTONIC_USEC= (systemd 253 Type=notify-reload wants
 * it; older versions ignore it).  Follow with notify_ready(). */
int notify_reloading(void);

/* STOPPING=1 with STATUS=status (may be NULL). */
int notify_stopping(const char *status);

/* STATUS=line. */
int notify_status(const char *line);

/* WATCHDOG=1. */
int notify_watchdog(void);

/* EXTEND_TIMEOUT_USEC=usec: the current start-up, reload or stop may take
 * usec longer from now. */
int notify_extend_timeout(uint64_t usec);

/* The watchdog interval systemd asked for, in microseconds (honouring
 * $WATCHDOG_PID), or 0 when no watchdog is enabled. */
uint64_t notify_watchdog_usec(void);

#endif
