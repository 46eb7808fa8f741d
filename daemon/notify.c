/* notify — telling the service manager how torrentd is doing (sd_notify). */
#include "daemon/notify.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <systemd/sd-daemon.h>

/* A STATUS= line longer than this is cut: systemctl shows one line. */
#define NOTIFY_STATUS_MAX 512

bool
notify_enabled(void)
{
    const char *e = getenv("NOTIFY_SOCKET");
    return e && *e;
}

static int
send_state(const char *state)
{
    if (!notify_enabled())
        return 0;
    return sd_notify(0, state);
}

static int
send_with_status(const char *what, const char *status)
{
    char msg[NOTIFY_STATUS_MAX + 64];
    if (status)
        snprintf(msg, sizeof(msg), "%s\nSTATUS=%.*s", what, NOTIFY_STATUS_MAX,
                 status);
    else
        snprintf(msg, sizeof(msg), "%s", what);
    return send_state(msg);
}

int
notify_ready(const char *status)
{
    return send_with_status("READY=1", status);
}

int
notify_reloading(void)
{
    struct timespec ts;
    char msg[96];
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        return send_state("RELOADING=1");
    uint64_t usec =
        (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
    return send_state(msg);
}

int
notify_stopping(const char *status)
{
    return send_with_status("STOPPING=1", status);
}

int
notify_status(const char *line)
{
    char msg[NOTIFY_STATUS_MAX + 16];
    snprintf(msg, sizeof(msg), "STATUS=%.*s", NOTIFY_STATUS_MAX,
             line ? line : "");
    return send_state(msg);
}

int
notify_watchdog(void)
{
    return send_state("WATCHDOG=1");
}

int
notify_extend_timeout(uint64_t usec)
{
    char msg[64];
    snprintf(msg, sizeof(msg), "EXTEND_TIMEOUT_USEC=%" PRIu64, usec);
    return send_state(msg);
}

uint64_t
notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}
