/* hook — run the on_complete program, bounded in time. */
#include "daemon/hook.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"

extern char **environ;

struct run {
    struct hooks *owner; /* borrowed */
    struct run *next;
    pid_t pid;
    bool exited;
    ev_child child;
    ev_timer timeout;
    ev_timer poll; /* waitpid() polling when not the default loop */
    ev_io out;     /* writing input to the program */
    int fd;        /* our end of its stdin, or -1 */
    char *input;   /* owned */
    size_t len, off;
    char label[64];
    char path[256];
};

struct hooks {
    struct ev_loop *loop; /* borrowed */
    struct run *runs;     /* owned list */
    size_t n;
};

int
hooks_new(struct hooks **ret, struct ev_loop *loop)
{
    struct hooks *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->loop = loop;
    *ret = h;
    return 0;
}

static void
close_input(struct run *r)
{
    if (ev_is_active(&r->out))
        ev_io_stop(r->owner->loop, &r->out);
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->input);
    r->input = NULL;
}

static void
run_free(struct run *r)
{
    struct ev_loop *loop = r->owner->loop;
    close_input(r);
    if (ev_is_active(&r->child))
        ev_child_stop(loop, &r->child);
    if (ev_is_active(&r->timeout))
        ev_timer_stop(loop, &r->timeout);
    if (ev_is_active(&r->poll))
        ev_timer_stop(loop, &r->poll);
    free(r);
}

static void
run_unlink(struct run *r)
{
    struct hooks *h = r->owner;
    for (struct run **pp = &h->runs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            h->n--;
            break;
        }
    }
}

void
hooks_free(struct hooks *h)
{
    if (!h)
        return;
    while (h->runs) {
        struct run *r = h->runs;
        h->runs = r->next;
        log_notice("on_complete '%s' for %s (pid %d) still runs, no "
                   "longer watched",
                   r->path, r->label, (int)r->pid);
        run_free(r);
    }
    free(h);
}

size_t
hooks_running(const struct hooks *h)
{
    return h->n;
}

static void
ended(struct run *r, int status)
{
    if (WIFEXITED(status)) {
        int code = WEXITSTATUS(status);
        log_msg(code == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
                "on_complete '%s' for %s exited with status %d", r->path,
                r->label, code);
    } else if (WIFSIGNALED(status)) {
        log_warn("on_complete '%s' for %s was killed by signal %d%s", r->path,
                 r->label, WTERMSIG(status),
                 WTERMSIG(status) == SIGKILL && !ev_is_active(&r->timeout)
                     ? " (timed out)"
                     : "");
    }
    /* The group may hold children the program left behind: they keep
     * running; only the program itself is bounded. */
    run_unlink(r);
    run_free(r);
}

static void
on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)loop;
    (void)revents;
    struct run *r = w->data;
    ev_child_stop(r->owner->loop, w);
    ended(r, w->rstatus);
}

static void
on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct run *r = w->data;
    int status;
    pid_t p = waitpid(r->pid, &status, WNOHANG);
    if (p == r->pid || (p < 0 && errno == ECHILD)) {
        ev_timer_stop(r->owner->loop, w);
        ended(r, p == r->pid ? status : 0);
    }
}

static void
on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct run *r = w->data;
    ev_timer_stop(r->owner->loop, w);
    log_warn("on_complete '%s' for %s ran too long: killing it", r->path,
             r->label);
    (void)kill(-r->pid, SIGKILL);
    (void)kill(r->pid, SIGKILL);
    close_input(r);
}

/* Write what the program's stdin still lacks; never blocks. */
static void
write_input(struct run *r)
{
    while (r->off < r->len) {
        ssize_t n = send(r->fd, r->input + r->off, r->len - r->off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!ev_is_active(&r->out))
                ev_io_start(r->owner->loop, &r->out);
            return;
        }
        if (n < 0) {
            /* It does not read its input (EPIPE): its choice. */
            log_debug("on_complete for %s: input not read: %s", r->label,
                      strerror(errno));
            break;
        }
        r->off += (size_t)n;
    }
    close_input(r);
}

static void
on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    write_input(w->data);
}

static char **
make_env(const char *const *extra, size_t n_extra)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + n_extra + 1, sizeof(*env));
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        /* Ours replace any inherited TORRENTD_* of the same name. */
        bool replaced = false;
        for (size_t j = 0; j < n_extra && !replaced; j++) {
            const char *eq = strchr(extra[j], '=');
            size_t nl = eq ? (size_t)(eq - extra[j]) + 1 : 0;
            replaced = nl && strncmp(environ[i], extra[j], nl) == 0;
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        env[k++] = (char *)(uintptr_t)extra[j];
    env[k] = NULL;
    return env;
}

int
hooks_run(struct hooks *h, const char *path, const char *label,
          const char *const *env, size_t n_env, const char *input,
          size_t input_len, uint64_t timeout_s)
{
    if (h->n >= HOOK_MAX_RUNNING)
        return -EAGAIN;
    struct run *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->owner = h;
    r->fd = -1;
    snprintf(r->label, sizeof(r->label), "%s", label);
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->input = malloc(input_len + 1);
    if (!r->input) {
        free(r);
        return -ENOMEM;
    }
    memcpy(r->input, input, input_len);
    r->len = input_len;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        int e = -errno;
        free(r->input);
        free(r);
        return e;
    }
    (void)shutdown(sv[1], SHUT_WR); /* the program only reads */

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* dup2 onto 0 clears FD_CLOEXEC there; every other fd of ours is
     * CLOEXEC and does not reach the program. */
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    char **envp = make_env(env, n_env);
    char *argv[] = {r->path, NULL};
    int e = envp ? posix_spawn(&r->pid, path, &fa, &attr, argv, envp) : ENOMEM;
    free(envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(sv[1]);
    if (e != 0) {
        close(sv[0]);
        free(r->input);
        free(r);
        return -e;
    }
    r->fd = sv[0];

    struct ev_loop *loop = h->loop;
    if (ev_is_default_loop(loop)) {
        ev_child_init(&r->child, on_child, r->pid, 0);
        r->child.data = r;
        ev_child_start(loop, &r->child);
    } else {
        ev_timer_init(&r->poll, on_poll, HOOK_POLL, HOOK_POLL);
        r->poll.data = r;
        ev_timer_start(loop, &r->poll);
    }
    ev_timer_init(&r->timeout, on_timeout, (ev_tstamp)timeout_s, 0.);
    r->timeout.data = r;
    ev_timer_start(loop, &r->timeout);
    ev_io_init(&r->out, on_writable, r->fd, EV_WRITE);
    r->out.data = r;

    r->next = h->runs;
    h->runs = r;
    h->n++;
    log_info("on_complete '%s' for %s started (pid %d)", r->path, r->label,
             (int)r->pid);
    write_input(r);
    return 0;
}
