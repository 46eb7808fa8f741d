/* watch — the watch directory: .torrent files dropped there are added.
 *
 * Lifetime: the watch counts the scan job, the tokens handed to the owner
 * and the rename jobs that refer to it (refs); watch_free() marks it dead
 * and drops the owner's reference, and the last one out frees it.
 */
#include "daemon/watch.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metainfo.h"
#include "daemon/state.h"
#include "daemon/worker.h"

struct watch {
    struct ev_loop *loop; /* borrowed */
    struct worker *cpu;   /* borrowed */
    struct worker *io;    /* borrowed */
    watch_add_t add;
    void *arg;
    char *dir; /* owned */
    int ino_fd;
    ev_io ino_io;
    ev_timer timer; /* polling, every interval */
    ev_timer retry; /* files that may still be being written */
    unsigned refs;  /* the owner's, jobs', tokens' */
    size_t busy;    /* the scan and its tokens and renames */
    bool again;     /* scan again when this one is finished */
    bool failing;   /* the last scan failed (logged once) */
    bool dead;      /* watch_free() was called */
};

struct watch_file {
    char name[256];
    uint8_t *raw; /* owned */
    size_t len;
    struct meta_info *meta; /* owned, or NULL with reason */
    char reason[200];
    bool recent; /* changed in the last WATCH_SETTLE s */
};

struct scan {
    struct watch *w;
    char *dir;                /* owned: the worker reads it */
    struct watch_file *files; /* owned */
    size_t n;
    bool more; /* more files than WATCH_BATCH */
    int err;
};

/* A file being added, and then renamed: the owner's token. */
struct item {
    struct watch *w;
    char *from, *to; /* owned */
};

static void scan_start(struct watch *w);

static void
unref(struct watch *w)
{
    if (--w->refs > 0)
        return;
    free(w->dir);
    free(w);
}

/* One part of the current scan (the scan itself, an add, a rename) is
 * finished. */
static void
part_done(struct watch *w)
{
    if (--w->busy > 0 || w->dead)
        return;
    if (w->again) {
        w->again = false;
        scan_start(w);
    }
}

static void
item_free(struct item *it)
{
    free(it->from);
    free(it->to);
    free(it);
}

static int
rename_run(void *arg)
{
    struct item *it = arg;
    if (rename(it->from, it->to) < 0)
        return -errno;
    return 0;
}

static void
rename_done(void *arg, int r)
{
    struct item *it = arg;
    struct watch *w = it->w;
    if (r < 0)
        log_warn("watch directory: cannot rename '%s' to '%s': %s", it->from,
                 it->to, strerror(-r));
    item_free(it);
    part_done(w);
    unref(w);
}

/* Rename it on the io worker (ownership of it taken). */
static void
rename_later(struct watch *w, struct item *it)
{
    w->refs++;
    w->busy++;
    if (worker_submit(w->io, rename_run, rename_done, it) < 0)
        rename_done(it, -ENOMEM);
}

static struct item *
item_new(struct watch *w, const char *name, const char *suffix)
{
    struct item *it = calloc(1, sizeof(*it));
    if (!it)
        return NULL;
    it->w = w;
    if (asprintf(&it->from, "%s/%s", w->dir, name) < 0) {
        it->from = NULL;
        goto fail;
    }
    if (asprintf(&it->to, "%s/%s%s", w->dir, name, suffix) < 0) {
        it->to = NULL;
        goto fail;
    }
    return it;
fail:
    item_free(it);
    return NULL;
}

void
watch_added(void *token, int ok)
{
    struct item *it = token;
    struct watch *w = it->w;
    if (ok && !w->dead) {
        rename_later(w, it);
    } else {
        /* Failed: the file stays and is tried again by a later scan. */
        item_free(it);
    }
    part_done(w);
    unref(w);
}

static bool
has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n > k && strcmp(s + n - k, suf) == 0;
}

/* On a worker thread: list, read and parse. */
static int
scan_run(void *arg)
{
    struct scan *sc = arg;
    int fd = open(sc->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return sc->err = -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        sc->err = -errno;
        close(fd);
        return sc->err;
    }
    sc->files = calloc(WATCH_BATCH, sizeof(*sc->files));
    if (!sc->files) {
        closedir(d);
        return sc->err = -ENOMEM;
    }
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !has_suffix(de->d_name, ".torrent") ||
            strlen(de->d_name) >= sizeof(sc->files[0].name))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (sc->n == WATCH_BATCH) {
            sc->more = true;
            break;
        }
        struct watch_file *f = &sc->files[sc->n++];
        memcpy(f->name, de->d_name, strlen(de->d_name) + 1);
        f->recent = st.st_mtime + WATCH_SETTLE > now;
        char *data;
        size_t len;
        int r =
            state_read_file(sc->dir, f->name, STATE_MAX_TORRENT, &data, &len);
        if (r < 0) {
            snprintf(f->reason, sizeof(f->reason), "cannot read it: %s",
                     strerror(-r));
            continue;
        }
        struct meta_errinfo ei = {0};
        r = meta_parse(&f->meta, data, len, NULL, &ei);
        if (r < 0) {
            snprintf(f->reason, sizeof(f->reason), "%s (%s)", meta_strerror(r),
                     ei.detail);
            free(data);
            continue;
        }
        f->raw = (uint8_t *)data;
        f->len = len;
    }
    closedir(d);
    return 0;
}

static void
scan_free(struct scan *sc)
{
    for (size_t i = 0; sc->files && i < sc->n; i++) {
        free(sc->files[i].raw);
        meta_free(sc->files[i].meta);
    }
    free(sc->files);
    free(sc->dir);
    free(sc);
}

static void
scan_done(void *arg, int r)
{
    struct scan *sc = arg;
    struct watch *w = sc->w;
    bool retry = false;
    if (r < 0 || sc->err < 0) {
        /* Once per failure streak, not every interval. */
        log_msg(w->failing ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN,
                "cannot scan the watch directory '%s': %s", sc->dir,
                strerror(-(sc->err ? sc->err : r)));
        w->failing = true;
    } else if (w->failing) {
        log_info("the watch directory '%s' can be scanned again", sc->dir);
        w->failing = false;
    }
    for (size_t i = 0; i < sc->n && !w->dead; i++) {
        struct watch_file *f = &sc->files[i];
        if (!f->meta && f->recent) {
            retry = true; /* it may still be being written */
            continue;
        }
        struct item *it = item_new(w, f->name, f->meta ? ".added" : ".invalid");
        if (!it) {
            log_err("watch directory: out of memory");
            continue;
        }
        if (!f->meta) {
            log_warn("watch directory: '%s' is not a usable .torrent: %s; "
                     "renamed to '%s.invalid'",
                     it->from, f->reason, f->name);
            rename_later(w, it);
            continue;
        }
        log_info("watch directory: adding '%s'", it->from);
        w->refs++;
        w->busy++;
        struct meta_info *meta = f->meta;
        uint8_t *raw = f->raw;
        f->meta = NULL;
        f->raw = NULL;
        w->add(w->arg, meta, raw, f->len, it->from, it);
    }
    if (sc->more)
        w->again = true;
    if (retry && !w->dead && !ev_is_active(&w->retry)) {
        ev_timer_set(&w->retry, WATCH_SETTLE, 0.);
        ev_timer_start(w->loop, &w->retry);
    }
    scan_free(sc);
    part_done(w);
    unref(w);
}

static void
scan_start(struct watch *w)
{
    if (w->dead)
        return;
    if (w->busy) {
        w->again = true;
        return;
    }
    struct scan *sc = calloc(1, sizeof(*sc));
    if (!sc || !(sc->dir = strdup(w->dir))) {
        free(sc);
        return;
    }
    sc->w = w;
    w->refs++;
    w->busy++;
    if (worker_submit(w->cpu, scan_run, scan_done, sc) < 0) {
        w->refs--;
        w->busy--;
        scan_free(sc);
    }
}

static void
on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct watch *w = io->data;
    /* What changed does not matter: a scan looks at everything.  Drain in
     * bounded reads. */
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (int i = 0; i < 16; i++)
        if (read(w->ino_fd, buf, sizeof(buf)) <= 0)
            break;
    scan_start(w);
}

static void
on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    scan_start(t->data);
}

int
watch_new(struct watch **ret, struct ev_loop *loop, const char *dir,
          uint64_t interval_s, struct worker *cpu, struct worker *io,
          watch_add_t add, void *arg)
{
    struct watch *w = calloc(1, sizeof(*w));
    if (!w || !(w->dir = strdup(dir))) {
        free(w);
        return -ENOMEM;
    }
    w->loop = loop;
    w->cpu = cpu;
    w->io = io;
    w->add = add;
    w->arg = arg;
    w->refs = 1;
    w->ino_fd = -1;
    ev_timer_init(&w->retry, on_timer, WATCH_SETTLE, 0.);
    w->retry.data = w;
    const char *poll_only = getenv("TORRENTD_WATCH_POLL");
    if (!poll_only || strcmp(poll_only, "1") != 0) {
        w->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->ino_fd < 0) {
            log_notice("cannot use inotify: %s; polling '%s'", strerror(errno),
                       dir);
        } else if (inotify_add_watch(w->ino_fd, dir,
                                     IN_CLOSE_WRITE | IN_MOVED_TO |
                                         IN_ONLYDIR) < 0) {
            log_notice("cannot watch '%s' with inotify: %s; polling it", dir,
                       strerror(errno));
            close(w->ino_fd);
            w->ino_fd = -1;
        }
    }
    if (w->ino_fd >= 0) {
        ev_io_init(&w->ino_io, on_inotify, w->ino_fd, EV_READ);
        w->ino_io.data = w;
        ev_io_start(loop, &w->ino_io);
    }
    double iv = (double)(interval_s ? interval_s : 1);
    ev_timer_init(&w->timer, on_timer, iv, iv);
    w->timer.data = w;
    ev_timer_start(loop, &w->timer);
    log_info("watching '%s' for .torrent files (%s, every %.0f s)", dir,
             w->ino_fd >= 0 ? "inotify and polling" : "polling", iv);
    scan_start(w);
    *ret = w;
    return 0;
}

void
watch_free(struct watch *w)
{
    if (!w)
        return;
    if (w->ino_fd >= 0) {
        ev_io_stop(w->loop, &w->ino_io);
        close(w->ino_fd);
        w->ino_fd = -1;
    }
    ev_timer_stop(w->loop, &w->timer);
    ev_timer_stop(w->loop, &w->retry);
    w->dead = true;
    unref(w);
}
