/* main — torrentd: arguments, configuration, sockets, signals, sd_notify
 * and the reactor loop.
 *
 * Thread: main, which becomes the reactor.
 *
 * Start-up, in this order: arguments; the configuration (defaults < file <
 * --set; an error names the file, line and reason and exits 78); all
 * signals blocked before any thread exists; the control and status sockets
 * (passed by systemd, or bound here, refusing to take over a socket that
 * another torrentd still answers on); the session (which restores every
 * torrent from the state directory); the control servers; then READY=1
 * from inside the running loop, so systemd and scripts are told only when
 * the sockets answer.
 *
 * Signals come through libev: SIGTERM and SIGINT begin a clean stop
 * (session_stop, bounded by STOP_BOUND_S; a second signal exits at once),
 * SIGHUP re-reads the file and --set and hands them to session_reload().
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ev.h>
#include <systemd/sd-daemon.h>

#include "common/buf.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/notify.h"
#include "daemon/session.h"
#include "daemon/trkdht.h"
#include "daemon/trksrv.h"

#define DEFAULT_CONFIG "/etc/torrentd/torrentd.conf"

/* Exit statuses, documented in torrentd(8). */
#define EXIT_USAGE 2
#define EXIT_CONFIG 78 /* EX_CONFIG: systemd shows "78/CONFIG" */

/* A clean stop (state saved, trackers told) must end within this. */
#define STOP_BOUND_S 30.0
/* How much longer than the unit's timeouts start-up may take: restoring
 * many torrents from a slow disk. */
#define START_EXTEND_USEC (120ull * 1000000u)
/* STATUS= is refreshed this often (rates change without events) ... */
#define STATUS_INTERVAL_S 5.0
/* ... and this soon after the session says it changed (changes come in
 * bursts: one update per burst). */
#define STATUS_DEBOUNCE_S 0.25
#define STATUS_MAX 512

struct daemon {
    struct ev_loop *loop;    /* borrowed: the default loop */
    const char *config_path; /* borrowed from argv, or DEFAULT_CONFIG */
    bool config_explicit;    /* --config given: it must exist */
    bool check_only;         /* --check-config */
    char **sets;             /* borrowed from argv: --set arguments */
    size_t n_sets;
    struct session *session; /* owned */
    struct control *control; /* owned */
    struct control *status;  /* owned; NULL when there is none */
    struct trksrv *trksrv;   /* owned; NULL without tracker_listen */
    struct trkdht *trkdht;   /* owned; NULL without trksrv or DHT */
    char *unlink_control;    /* owned: socket files bound here, */
    char *unlink_status;     /*   removed at exit; NULL if systemd's */
    ev_signal sig_term, sig_int, sig_hup;
    ev_timer ready_timer;
    ev_timer status_timer;   /* STATUS_INTERVAL_S, repeating */
    ev_timer status_soon;    /* STATUS_DEBOUNCE_S after a change */
    ev_timer watchdog_timer; /* half of WATCHDOG_USEC, repeating */
    ev_timer stop_timer;     /* STOP_BOUND_S after a stop began */
    char last_status[STATUS_MAX];
    bool stopping;
    bool stop_done;
    bool stop_timed_out;
};

static void
usage(FILE *f)
{
    fprintf(f, "Usage: torrentd [--config FILE] [--set KEY=VALUE]... "
               "[--foreground]\n"
               "       torrentd [--config FILE] [--set KEY=VALUE]... "
               "--check-config\n"
               "       torrentd --help | --version\n");
}

static void
help(void)
{
    usage(stdout);
    printf("\nThe torrentd BitTorrent daemon.  Drive it with torrentctl(1).\n"
           "\nOptions:\n"
           "  -c, --config FILE     settings file (default %s)\n"
           "  -s, --set KEY=VALUE   set one key, over the file; repeatable\n"
           "  -f, --foreground      stay in the foreground (torrentd "
           "never detaches)\n"
           "  -t, --check-config    check the configuration and exit\n"
           "  -h, --help            show this help and exit\n"
           "  -V, --version         show the version and exit\n"
           "\nKeys (torrentd.conf(5)), with their defaults here:\n",
           DEFAULT_CONFIG);

    struct config c;
    struct buf v;
    size_t n;
    const struct config_key *keys = config_keys(&n);
    buf_init(&v, 8192);
    bool have = config_init(&c) == 0;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&v);
        if (have)
            (void)config_get(&c, keys[i].name, &v);
        printf("  %-22s %s%s\n", keys[i].name,
               keys[i].apply == CONFIG_LIVE ? "" : "(restart) ", keys[i].help);
        printf("  %-22s default: %s\n", "",
               v.len ? v.data : (have ? "(empty)" : keys[i].def));
    }
    buf_release(&v);
    if (have)
        config_release(&c);
    printf("\nSignals: SIGTERM and SIGINT stop cleanly, SIGHUP reloads the "
           "configuration.\n");
}

/* Defaults, the file, --set; validated.  Logs what is wrong.  On success
 * *ret is a heap struct config for session_new()/session_reload(), which
 * take its contents and leave it zeroed; the caller frees the struct. */
static int
load_config(const struct daemon *d, struct config **ret)
{
    struct config_error err;
    struct config *c = calloc(1, sizeof(*c));
    int r;

    memset(&err, 0, sizeof(err));
    if (!c)
        return log_err_errno(-ENOMEM, "cannot load the configuration");
    r = config_init(c);
    if (r < 0) {
        free(c);
        return log_err_errno(r, "cannot load the configuration");
    }
    r = config_load_file(c, d->config_path, &err);
    if (r == -ENOENT && !d->config_explicit) {
        log_debug("no '%s', using the defaults", d->config_path);
        r = 0;
    } else if (r < 0 && err.line > 0) {
        log_err("%s:%u: %s", err.file, err.line, err.message);
        goto fail;
    } else if (r < 0) {
        log_err("cannot read '%s': %s", d->config_path, strerror(-r));
        goto fail;
    }
    for (size_t i = 0; i < d->n_sets; i++) {
        r = config_set_arg(c, d->sets[i], &err);
        if (r < 0) {
            log_err("--set '%s': %s", d->sets[i], err.message);
            goto fail;
        }
    }
    r = config_validate(c, &err);
    if (r < 0) {
        log_err("bad configuration: %s", err.message);
        goto fail;
    }
    *ret = c;
    return 0;
fail:
    config_release(c);
    free(c);
    return r < 0 ? r : -EINVAL;
}

/* ---- sockets ------------------------------------------------------------- */

/* mkdir -p the directory that holds path. */
static int
make_parent_dir(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *)NULL)->sun_path)];
    size_t n = strlen(path);
    if (n >= sizeof(dir))
        return -ENAMETOOLONG;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = saved;
        if (saved == '\0')
            break;
    }
    return 0;
}

/* A socket file is in the way.  Remove it only if it is a socket that
 * nobody answers on (left by a crash); -EADDRINUSE if someone answers,
 * -EEXIST if it is not a socket at all. */
static int
remove_stale_socket(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    (void)close(fd);
    /* EAGAIN: a full backlog, so someone listens. */
    if (r == 0 || e == EAGAIN || e == EINPROGRESS)
        return -EADDRINUSE;
    if (e != ECONNREFUSED)
        return -e;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    log_notice("removed stale socket '%s'", path);
    return 0;
}

/* Bind and listen on path with the given mode.  Returns the fd or a
 * negative errno after logging why. */
static int
socket_bind(const char *path, mode_t mode)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    int fd = -1, r;

    if (n >= sizeof(sa.sun_path))
        return log_err_errno(-ENAMETOOLONG, "cannot bind '%s'", path);
    memcpy(sa.sun_path, path, n + 1);
    r = make_parent_dir(path);
    if (r < 0)
        return log_err_errno(r, "cannot create the directory of '%s'", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return log_err_errno(-errno, "cannot create a socket");
    for (int attempt = 0;; attempt++) {
        /* The umask gives the socket file its mode from birth: no window
         * in which it is more open than it should be.  Only the main
         * thread runs yet, so changing the umask is safe. */
        mode_t old = umask(~mode & 0777);
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        int e = errno;
        umask(old);
        if (r == 0)
            break;
        if (e != EADDRINUSE || attempt > 0) {
            r = -e;
            log_err_errno(r, "cannot bind '%s'", path);
            goto fail;
        }
        r = remove_stale_socket(path);
        if (r == -EADDRINUSE) {
            log_err("'%s' is in use: is another torrentd running?", path);
            goto fail;
        }
        if (r == -EEXIST) {
            log_err("'%s' exists and is not a socket, not removing it", path);
            goto fail;
        }
        if (r < 0) {
            log_err_errno(r, "cannot check the old socket '%s'", path);
            goto fail;
        }
    }
    if (listen(fd, SOMAXCONN) < 0) {
        r = log_err_errno(-errno, "cannot listen on '%s'", path);
        (void)unlink(path);
        goto fail;
    }
    return fd;
fail:
    (void)close(fd);
    return r < 0 ? r : -EINVAL;
}

static int
set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* Sockets passed by systemd (socket activation), by FileDescriptorName=:
 * "control" and "status".  One unnamed socket counts as the control
 * socket (systemd-socket-activate without --fdname).  Others are closed
 * with a warning. */
static void
take_passed_sockets(int *ret_control, int *ret_status)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        log_warn_errno(n, "cannot read the sockets passed by systemd, "
                          "ignoring them");
        return;
    }
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        const char *name = names && names[i] ? names[i] : "unknown";
        int *slot = NULL;
        if (strcmp(name, "control") == 0 ||
            (n == 1 && strcmp(name, "unknown") == 0))
            slot = ret_control;
        else if (strcmp(name, "status") == 0)
            slot = ret_status;
        if (!slot || *slot >= 0) {
            log_warn("socket %d named '%s' from systemd is not one torrentd "
                     "uses (control, status), ignoring",
                     fd, name);
            (void)close(fd);
        } else if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
            log_warn("socket '%s' from systemd is not a listening unix "
                     "stream socket, ignoring",
                     name);
            (void)close(fd);
        } else if (set_nonblock(fd) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
            log_warn("cannot set up socket '%s' from systemd, ignoring", name);
            (void)close(fd);
        } else {
            log_info("using the '%s' socket passed by systemd", name);
            *slot = fd;
        }
    }
    if (names) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
    }
}

static int
open_sockets(struct daemon *d, const struct config *c, int *ret_control,
             int *ret_status)
{
    int control = -1, status = -1;

    take_passed_sockets(&control, &status);
    if (control < 0) {
        control = socket_bind(c->control_socket, 0660);
        if (control < 0)
            goto fail;
        d->unlink_control = strdup(c->control_socket);
    }
    if (status < 0 && c->status_socket && *c->status_socket) {
        status = socket_bind(c->status_socket, 0666);
        if (status < 0)
            goto fail;
        d->unlink_status = strdup(c->status_socket);
    }
    *ret_control = control;
    *ret_status = status;
    return 0;
fail:
    if (control >= 0)
        (void)close(control);
    if (status >= 0)
        (void)close(status);
    if (d->unlink_control)
        (void)unlink(d->unlink_control);
    free(d->unlink_control);
    d->unlink_control = NULL;
    return -EADDRNOTAVAIL;
}

/* ---- status and watchdog ------------------------------------------------- */

/* The session's one-line summary into d->last_status. */
static void
status_fetch(struct daemon *d)
{
    struct buf line;
    buf_init(&line, STATUS_MAX - 1);
    session_status_line(d->session, &line);
    snprintf(d->last_status, sizeof(d->last_status), "%s",
             line.data ? line.data : "");
    buf_release(&line);
}

static void
status_update(struct daemon *d)
{
    if (!notify_enabled() || !d->session || d->stopping)
        return;
    char old[STATUS_MAX];
    memcpy(old, d->last_status, sizeof(old));
    status_fetch(d);
    if (strcmp(old, d->last_status) == 0)
        return;
    int r = notify_status(d->last_status);
    if (r < 0)
        log_debug("cannot send STATUS= to systemd: %s", strerror(-r));
}

static void
status_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    status_update(w->data);
}

static void
on_status_changed(void *arg)
{
    struct daemon *d = arg;
    if (!ev_is_active(&d->status_soon))
        ev_timer_start(d->loop, &d->status_soon);
}

static void
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    (void)w;
    int r = notify_watchdog();
    if (r < 0)
        log_debug("cannot send WATCHDOG=1 to systemd: %s", strerror(-r));
}

static void
ready_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct daemon *d = w->data;
    (void)loop;
    (void)revents;
    /* A signal that came during the start is handled first. */
    if (d->stopping)
        return;
    status_fetch(d);
    int r = notify_ready(d->last_status);
    if (r < 0)
        log_warn_errno(r, "cannot send READY=1 to systemd");
    log_notice("ready: %s", d->last_status);
}

/* ---- stop and reload ----------------------------------------------------- */

static void
stop_done_cb(void *arg)
{
    struct daemon *d = arg;
    d->stop_done = true;
    ev_break(d->loop, EVBREAK_ALL);
}

static void
stop_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct daemon *d = w->data;
    (void)revents;
    log_err("the clean stop did not finish within %.0f s, exiting anyway",
            STOP_BOUND_S);
    d->stop_timed_out = true;
    ev_break(loop, EVBREAK_ALL);
}

static void
begin_stop(struct daemon *d, const char *why)
{
    if (d->stopping)
        return;
    d->stopping = true;
    log_notice("%s, stopping", why);
    (void)notify_stopping("stopping: saving state");
    (void)notify_extend_timeout((uint64_t)(STOP_BOUND_S + 5) * 1000000u);
    ev_timer_stop(d->loop, &d->status_timer);
    ev_timer_stop(d->loop, &d->status_soon);
    ev_timer_start(d->loop, &d->stop_timer);
    session_stop(d->session, stop_done_cb, d);
}

static void
on_shutdown_requested(void *arg)
{
    begin_stop(arg, "shutdown requested over the control socket");
}

static void
stop_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    (void)revents;
    const char *name = w->signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (d->stopping) {
        log_notice("received %s again, exiting without waiting", name);
        d->stop_timed_out = true;
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    char why[64];
    snprintf(why, sizeof(why), "received %s", name);
    begin_stop(d, why);
}

static void
reload(struct daemon *d)
{
    struct config *c = NULL;
    struct buf report;
    int r;

    (void)notify_reloading();
    log_notice("received SIGHUP, reloading the configuration");
    r = load_config(d, &c);
    if (r < 0) {
        log_err("reload failed, keeping the running configuration");
        goto done;
    }
    buf_init(&report, 4096);
    r = session_reload(d->session, c, &report);
    /* The session took the contents; the struct is ours (see above). */
    config_release(c);
    free(c);
    c = NULL;
    if (r < 0)
        log_err_errno(r, "reload failed");
    else
        log_notice("configuration reloaded: %s",
                   report.data ? report.data : "no changes");
    buf_release(&report);
    /* The effective level: the file's, unless a run-time setting wins. */
    log_set_level((enum log_level)session_config(d->session)->log_level);
    /* The built-in tracker re-reads its allowlist. */
    (void)trksrv_reload(d->trksrv);
done:
    status_fetch(d);
    (void)notify_ready(d->last_status);
}

static void
hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    (void)loop;
    (void)revents;
    if (d->stopping) {
        log_info("received SIGHUP while stopping, ignoring");
        return;
    }
    reload(d);
}

/* ---- start --------------------------------------------------------------- */

/* Block every asynchronous signal in this thread, so that every thread
 * created later inherits the mask and only libev (signalfd) sees them.
 * Faults stay deliverable (a crash must still be a crash, with the
 * sanitizer's report). */
static int
block_signals(void)
{
    static const int sync_signals[] = {SIGSEGV, SIGBUS,  SIGFPE, SIGILL,
                                       SIGTRAP, SIGABRT, SIGSYS};
    sigset_t set;
    struct sigaction sa;

    sigfillset(&set);
    for (size_t i = 0; i < sizeof(sync_signals) / sizeof(sync_signals[0]); i++)
        sigdelset(&set, sync_signals[i]);
    int r = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (r != 0)
        return -r;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) < 0)
        return -errno;
    return 0;
}

static int
parse_args(struct daemon *d, int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"foreground", no_argument, NULL, 'f'},
        {"check-config", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int o;

    d->config_path = DEFAULT_CONFIG;
    d->sets = calloc((size_t)argc + 1, sizeof(*d->sets));
    if (!d->sets)
        return -ENOMEM;
    while ((o = getopt_long(argc, argv, "c:s:fthV", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            d->config_path = optarg;
            d->config_explicit = true;
            break;
        case 's':
            d->sets[d->n_sets++] = optarg;
            break;
        case 'f':
            /* torrentd always stays in the foreground: systemd (or the
             * shell) supervises it.  Accepted for scripts written for
             * daemons that detach. */
            break;
        case 't':
            d->check_only = true;
            break;
        case 'h':
            help();
            return 1;
        case 'V':
            printf("torrentd %s\n", TD_VERSION);
            return 1;
        default:
            fprintf(stderr, "Try 'torrentd --help'.\n");
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "torrentd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -EINVAL;
    }
    return 0;
}

static void
daemon_cleanup(struct daemon *d)
{
    /* Stopping a signal watcher unblocks its signal (libev): a late
     * SIGTERM must not kill us halfway through the cleanup. */
    struct sigaction ign;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    (void)sigaction(SIGTERM, &ign, NULL);
    (void)sigaction(SIGINT, &ign, NULL);
    (void)sigaction(SIGHUP, &ign, NULL);
    if (d->loop) {
        ev_signal_stop(d->loop, &d->sig_term);
        ev_signal_stop(d->loop, &d->sig_int);
        ev_signal_stop(d->loop, &d->sig_hup);
        ev_timer_stop(d->loop, &d->ready_timer);
        ev_timer_stop(d->loop, &d->status_timer);
        ev_timer_stop(d->loop, &d->status_soon);
        ev_timer_stop(d->loop, &d->watchdog_timer);
        ev_timer_stop(d->loop, &d->stop_timer);
    }
    /* The tracker and the control servers first: they use the session
     * (the tracker's DHT source its lookups). */
    trkdht_free(d->trkdht);
    d->trkdht = NULL;
    trksrv_free(d->trksrv);
    d->trksrv = NULL;
    control_free(d->status);
    d->status = NULL;
    control_free(d->control);
    d->control = NULL;
    session_free(d->session);
    d->session = NULL;
    if (d->unlink_control)
        (void)unlink(d->unlink_control);
    if (d->unlink_status)
        (void)unlink(d->unlink_status);
    free(d->unlink_control);
    free(d->unlink_status);
    d->unlink_control = d->unlink_status = NULL;
    free(d->sets);
    d->sets = NULL;
    if (d->loop)
        ev_loop_destroy(d->loop);
    d->loop = NULL;
}

int
main(int argc, char **argv)
{
    struct daemon d;
    struct config *cfg = NULL;
    int control_fd = -1, status_fd = -1;
    int ret = EXIT_FAILURE, r;

    memset(&d, 0, sizeof(d));
    log_set_ident("torrentd");
    log_open();

    r = parse_args(&d, argc, argv);
    if (r != 0) {
        free(d.sets);
        return r > 0 ? EXIT_SUCCESS : EXIT_USAGE;
    }
    if (load_config(&d, &cfg) < 0) {
        free(d.sets);
        return EXIT_CONFIG;
    }
    if (d.check_only) {
        printf("configuration ok\n");
        config_release(cfg);
        free(cfg);
        free(d.sets);
        return EXIT_SUCCESS;
    }
    log_set_level((enum log_level)cfg->log_level);
    log_info("torrentd %s starting%s%s", TD_VERSION,
             d.config_explicit ? ", configuration " : "",
             d.config_explicit ? d.config_path : "");

    r = block_signals();
    if (r < 0) {
        log_err_errno(r, "cannot block signals");
        goto out;
    }
    d.loop = ev_default_loop(EVFLAG_SIGNALFD);
    if (!d.loop) {
        log_err("cannot start the event loop");
        goto out;
    }

    if (open_sockets(&d, cfg, &control_fd, &status_fd) < 0)
        goto out;

    (void)notify_extend_timeout(START_EXTEND_USEC);
    struct session_hooks hooks = {
        .shutdown_requested = on_shutdown_requested,
        .status_changed = on_status_changed,
        .arg = &d,
    };
    r = session_new(&d.session, d.loop, cfg, &hooks);
    /* The session took the contents (also on failure) and left the struct
     * zeroed: releasing it again is a no-op, the struct is ours. */
    config_release(cfg);
    free(cfg);
    cfg = NULL;
    if (r < 0)
        goto out;

    r = control_new(&d.control, d.loop, d.session, control_fd, false);
    control_fd = -1; /* taken */
    if (r < 0) {
        log_err_errno(r, "cannot serve the control socket");
        goto out;
    }
    if (status_fd >= 0) {
        r = control_new(&d.status, d.loop, d.session, status_fd, true);
        status_fd = -1;
        if (r < 0) {
            log_err_errno(r, "cannot serve the status socket");
            goto out;
        }
    }

    /* The built-in tracker (tracker_listen), on the session's settings. */
    r = trksrv_new(&d.trksrv, d.loop, session_config(d.session));
    if (r < 0)
        goto out;
    /* ... answering for swarms it has too few peers for from the DHT. */
    if (d.trksrv && session_dht(d.session)) {
        r = trkdht_new(&d.trkdht, d.loop, session_config(d.session),
                       session_dht(d.session), d.trksrv);
        if (r < 0) {
            log_err_errno(r, "cannot start the tracker's dht source");
            goto out;
        }
    }

    ev_signal_init(&d.sig_term, stop_signal_cb, SIGTERM);
    ev_signal_init(&d.sig_int, stop_signal_cb, SIGINT);
    ev_signal_init(&d.sig_hup, hup_cb, SIGHUP);
    d.sig_term.data = d.sig_int.data = d.sig_hup.data = &d;
    ev_signal_start(d.loop, &d.sig_term);
    ev_signal_start(d.loop, &d.sig_int);
    ev_signal_start(d.loop, &d.sig_hup);

    ev_timer_init(&d.ready_timer, ready_cb, 0., 0.);
    ev_timer_init(&d.status_timer, status_timer_cb, STATUS_INTERVAL_S,
                  STATUS_INTERVAL_S);
    ev_timer_init(&d.status_soon, status_timer_cb, STATUS_DEBOUNCE_S, 0.);
    ev_timer_init(&d.stop_timer, stop_timeout_cb, STOP_BOUND_S, 0.);
    d.ready_timer.data = d.status_timer.data = d.status_soon.data = &d;
    d.stop_timer.data = &d;
    ev_timer_start(d.loop, &d.ready_timer);
    ev_timer_start(d.loop, &d.status_timer);

    uint64_t wd = notify_watchdog_usec();
    if (wd > 0) {
        double every = (double)wd / 2e6;
        ev_timer_init(&d.watchdog_timer, watchdog_cb, 0., every);
        d.watchdog_timer.data = &d;
        ev_timer_start(d.loop, &d.watchdog_timer);
        log_info("watchdog: telling systemd every %.3f s", every);
    }

    ev_run(d.loop, 0);

    if (d.stop_done && !d.stop_timed_out) {
        log_notice("stopped");
        ret = EXIT_SUCCESS;
    } else {
        log_warn("stopped before the session finished saving");
    }
out:
    if (control_fd >= 0)
        (void)close(control_fd);
    if (status_fd >= 0)
        (void)close(status_fd);
    if (cfg) {
        config_release(cfg);
        free(cfg);
    }
    daemon_cleanup(&d);
    return ret;
}
