/* storage — a torrent's data mapped onto files, positional I/O from many
 * threads, and a bounded cache of open file descriptors.
 *
 * The cache: every open fd is a struct sfd.  While it is cached it hangs
 * off its storage's per-file table (sfile.open) and sits in one LRU list
 * for the whole process ("attached").  An I/O call pins it (pins++) under
 * the cache mutex, unlocks, does its syscalls, and unpins.  An entry that
 * must go while pinned (evicted, replaced by a writable fd, or found
 * deleted) is detached from table and list and closed by whoever drops
 * its last pin.  close() and open() are always called without the mutex.
 *
 * Durability: a write marks its file dirty (a list threaded through the
 * per-file table) when it unpins, before it returns.  storage_flush()
 * takes the list and fdatasyncs each file through the cache (reopening
 * it if it was evicted: fdatasync works on the inode), then fsyncs the
 * directories of the files created since the last flush.
 *
 * Allocation ahead (storage.h): the write that sets a chunk's bit (an
 * atomic fetch_or, outside the mutex) calls fallocate() on the fd it has
 * pinned, then writes; a writer that finds the bit set just writes, even
 * while the first is still allocating (the kernel orders the two; the
 * chunk is then only partly allocated ahead, which costs speed, never
 * data).
 */
#include "daemon/storage.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/metainfo.h"

#define STORAGE_IOV_BATCH 64 /* iovecs per pwritev call */
#define STORAGE_DIR_MODE 0755
#define STORAGE_FILE_MODE 0644
#define STORAGE_EXEC_MODE 0755

struct sfd {
    int fd;             /* owned */
    unsigned pins;      /* I/O calls using fd now */
    bool writable;      /* O_RDWR, else O_RDONLY */
    bool alloc_ahead;   /* allocate chunks ahead of the writes (ext4) */
    bool attached;      /* in the table and the LRU list */
    struct storage *st; /* borrowed: a storage outlives its fds */
    size_t file;
    uint64_t checked_ms; /* last time fd was seen not deleted */
    struct sfd *prev;    /* LRU (head: most recent); victim list */
    struct sfd *next;
};

struct sfile {
    struct sfd *open;  /* the cached fd, or NULL */
    size_t next_dirty; /* dirty list: index + 1, 0 ends it */
    bool dirty;        /* written since the last flush */
    bool created;      /* created since the last flush */
    bool seen;         /* opened once: ENOENT now means deleted */
};

struct storage {
    const struct meta_info *info; /* borrowed: outlives the storage */
    char *dir;                    /* owned */
    unsigned flags;
    /* owned: a bit per chunk of each file (chunk_bit()), set by the write
     * that allocates it (whether fallocate() worked or not). */
    _Atomic uint32_t *chunks;
    /* Under cache.lock: */
    struct sfile *files; /* owned, info->n_files */
    size_t dirty_head;   /* index + 1, 0: none */
    size_t n_dirty;
    struct storage_error err;
};

/* The process's fd cache.  Its mutex guards the LRU list, the counters,
 * every sfd's pins/attached/checked_ms and every storage's files, dirty
 * list and err. */
static struct {
    pthread_mutex_t lock;
    struct sfd *head;
    struct sfd *tail;
    size_t n_open; /* attached and detached-but-pinned */
    size_t max_open;
} cache = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, STORAGE_MAX_OPEN};

/* Set once openat2() turned out to be missing (ENOSYS). */
static atomic_bool openat2_missing;

enum acquire_mode {
    ACQ_READ,  /* O_RDONLY is enough; never creates */
    ACQ_WRITE, /* O_RDWR; creates the file unless it was seen before */
    ACQ_SYNC,  /* as ACQ_READ, and check now that it is not deleted */
};

static void
cache_lock(void)
{
    int r = pthread_mutex_lock(&cache.lock);
    assert(r == 0);
    (void)r;
}

static void
cache_unlock(void)
{
    int r = pthread_mutex_unlock(&cache.lock);
    assert(r == 0);
    (void)r;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Chunk k of file i (file offsets [k * CHUNK, (k + 1) * CHUNK), CHUNK =
 * STORAGE_ALLOC_CHUNK) is bit files[i].offset / CHUNK + i + k of
 * storage.chunks: file i has at most ceil(length / CHUNK) chunks, and
 * files[i + 1].offset / CHUNK >= files[i].offset / CHUNK +
 * floor(length / CHUNK), so the bits of two files never meet and no
 * per-file table is needed. */
static uint64_t
chunk_bit(const struct meta_info *info, size_t i, uint64_t k)
{
    return info->files[i].offset / STORAGE_ALLOC_CHUNK + i + k;
}

/* Bits in storage.chunks. */
static uint64_t
chunk_bits(const struct meta_info *info)
{
    return info->total_size / STORAGE_ALLOC_CHUNK + info->n_files + 1;
}

/* ---- map ------------------------------------------------------------- */

int
storage_map(const struct meta_info *info, uint64_t offset, uint64_t len,
            storage_map_cb cb, void *arg)
{
    if (offset > info->total_size || len > info->total_size - offset)
        return -EINVAL;
    if (len == 0)
        return 0;
    /* The last file that starts at or before offset: files are in order
     * and a zero-length file shares its offset with the next one, so this
     * is the file holding offset (or a zero-length one just before it). */
    size_t lo = 0, hi = info->n_files;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (info->files[mid].offset <= offset)
            lo = mid;
        else
            hi = mid;
    }
    uint64_t done = 0;
    for (size_t i = lo; i < info->n_files && done < len; i++) {
        const struct meta_file *mf = &info->files[i];
        uint64_t pos = offset + done;
        if (mf->length == 0 || mf->offset + mf->length <= pos)
            continue;
        uint64_t in = pos - mf->offset;
        uint64_t n = mf->length - in;
        if (n > len - done)
            n = len - done;
        struct storage_span sp = {
            .file = i, .file_offset = in, .length = n, .data_offset = done};
        int r = cb(arg, &sp);
        if (r != 0)
            return r;
        done += n;
    }
    /* Files cover the whole stream; anything else is a broken info. */
    return done == len ? 0 : -EINVAL;
}

/* ---- errors ---------------------------------------------------------- */

static void
copy_cut(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void
error_fill(struct storage_error *e, int err, long file, const char *op,
           const char *path)
{
    e->error = err;
    e->file = file;
    e->op = op;
    copy_cut(e->path, sizeof(e->path), path);
}

/* Keep the first failure.  Takes the cache lock. */
static int
record_error(struct storage *st, int err, long file, const char *op)
{
    if (err >= 0)
        return err;
    cache_lock();
    if (st->err.error == 0)
        error_fill(&st->err, err, file, op,
                   file >= 0 ? st->info->files[file].path : st->dir);
    cache_unlock();
    return err;
}

int
storage_get_error(struct storage *st, struct storage_error *ret)
{
    cache_lock();
    int r = st->err.error;
    if (r != 0)
        *ret = st->err;
    cache_unlock();
    return r;
}

void
storage_clear_error(struct storage *st)
{
    cache_lock();
    memset(&st->err, 0, sizeof(st->err));
    cache_unlock();
}

int
storage_error_format(const struct storage_error *e, char *buf, size_t n)
{
    char ebuf[128];
    const char *es = strerror_r(-e->error, ebuf, sizeof(ebuf)); /* GNU */
    return snprintf(buf, n, "cannot %s '%s': %s", e->op ? e->op : "use",
                    e->path, es);
}

/* ---- safe opening ---------------------------------------------------- */

static bool
bad_component(const char *p, size_t n)
{
    return n == 0 || n > NAME_MAX || (n == 1 && p[0] == '.') ||
           (n == 2 && p[0] == '.' && p[1] == '.');
}

/* Open rel below rootfd one component at a time, never following a
 * symlink; with mkdirs, create missing directories.  flags are the final
 * component's.  Returns an fd or -errno. */
static int
walk_open(int rootfd, const char *rel, int flags, mode_t mode, bool mkdirs)
{
    char comp[NAME_MAX + 1];
    int dfd = rootfd;
    int r;
    const char *p = rel;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (bad_component(p, n)) {
            r = -EINVAL;
            break;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        if (!slash) {
            r = openat(dfd, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
            if (r < 0)
                r = -errno;
            break;
        }
        int nfd =
            openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT && mkdirs) {
            if (mkdirat(dfd, comp, STORAGE_DIR_MODE) < 0 && errno != EEXIST) {
                r = -errno;
                break;
            }
            nfd = openat(dfd, comp,
                         O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (nfd < 0) {
            r = -errno;
            break;
        }
        if (dfd != rootfd)
            (void)close(dfd);
        dfd = nfd;
        p = slash + 1;
    }
    if (dfd != rootfd)
        (void)close(dfd);
    return r;
}

/* Open rel below rootfd without following any symlink: openat2() with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS when the kernel has it, else (or
 * when directories must be created) walk_open().  Returns an fd or
 * -errno. */
static int
open_beneath(int rootfd, const char *rel, int flags, mode_t mode, bool mkdirs,
             bool try_openat2)
{
    flags |= O_NOFOLLOW | O_CLOEXEC;
    if (try_openat2 &&
        !atomic_load_explicit(&openat2_missing, memory_order_relaxed)) {
        struct open_how how = {
            .flags = (uint64_t)flags,
            .mode = (flags & O_CREAT) ? mode : 0,
            .resolve =
                RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        for (int tries = 0;; tries++) {
            long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
            if (fd >= 0)
                return (int)fd;
            int e = errno;
            /* EAGAIN: a rename raced with the lookup; try again. */
            if ((e == EAGAIN || e == EINTR) && tries < 4)
                continue;
            if (e == ENOSYS || e == E2BIG) {
                atomic_store(&openat2_missing, true);
                break;
            }
            /* A missing directory is created by the walk; EPERM may be a
             * seccomp filter that does not know openat2: walk (it is as
             * safe, and reports a real EPERM again). */
            if ((e == ENOENT && mkdirs) || e == EPERM || e == EAGAIN)
                break;
            return -e;
        }
    }
    return walk_open(rootfd, rel, flags, mode, mkdirs);
}

/* mkdir -p, following symlinks: the download directory is the user's. */
static int
mkdir_parents(const char *dir)
{
    char *p = strdup(dir);
    if (!p)
        return -ENOMEM;
    int r = 0;
    size_t n = strlen(p);
    for (size_t i = 1; i <= n && r == 0; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, STORAGE_DIR_MODE) < 0 && errno != EEXIST)
            r = -errno;
        p[i] = c;
    }
    free(p);
    return r;
}

/* An O_PATH fd of the download directory; create it (and its parents)
 * when missing and create is set. */
static int
open_root(const char *dir, bool create)
{
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        int r = mkdir_parents(dir);
        if (r < 0)
            return r;
        fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    return fd < 0 ? -errno : fd;
}

static mode_t
file_mode(const struct meta_file *mf)
{
    return (mf->attr & META_ATTR_EXEC) ? STORAGE_EXEC_MODE : STORAGE_FILE_MODE;
}

/* What went wrong in file_open(). */
struct open_fail {
    long file; /* -1: the download directory */
    const char *op;
};

/* Open file i for reading or writing.  may_create: create it (and its
 * directories) if missing, and give it its length.  Returns an fd, with
 * *ret_created and *ret_ahead (allocate ahead of the writes), or -errno
 * and *fail. */
static int
file_open(struct storage *st, size_t i, bool write, bool may_create,
          bool *ret_created, bool *ret_ahead, struct open_fail *fail)
{
    const struct meta_file *mf = &st->info->files[i];
    bool try2 = !(st->flags & STORAGE_NO_OPENAT2);
    bool created = false;
    int fd, r;

    fail->file = (long)i;
    fail->op = "open";
    int rootfd = open_root(st->dir, may_create);
    if (rootfd < 0) {
        fail->file = -1;
        fail->op = may_create ? "create" : "open";
        return rootfd;
    }
    int flags = (write ? O_RDWR : O_RDONLY) | O_NONBLOCK;
    fd = open_beneath(rootfd, mf->path, flags, 0, false, try2);
    if (fd == -ENOENT && may_create) {
        fail->op = "create";
        fd = open_beneath(rootfd, mf->path, flags | O_CREAT | O_EXCL,
                          file_mode(mf), true, try2);
        if (fd >= 0)
            created = true;
        else if (fd == -EEXIST) /* another thread was first */
            fd = open_beneath(rootfd, mf->path, flags, 0, false, try2);
    }
    (void)close(rootfd);
    if (fd < 0)
        return fd;

    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        r = -errno;
        goto close_fd;
    }
    if (!S_ISREG(sb.st_mode)) {
        r = S_ISDIR(sb.st_mode) ? -EISDIR : -EINVAL;
        goto close_fd;
    }
    if (write && (uint64_t)sb.st_size < mf->length) {
        fail->op = "allocate";
        r = -EOPNOTSUPP;
        if (st->flags & STORAGE_PREALLOCATE)
            r = fallocate(fd, 0, 0, (off_t)mf->length) < 0 ? -errno : 0;
        if (r == -EOPNOTSUPP || r == -ENOSYS)
            r = ftruncate(fd, (off_t)mf->length) < 0 ? -errno : 0;
        if (r < 0)
            goto close_fd;
    }
    /* Allocation ahead is measured on ext4 only (storage.h). */
    struct statfs sfs;
    *ret_ahead = write && !(st->flags & STORAGE_PREALLOCATE) &&
                 fstatfs(fd, &sfs) == 0 && sfs.f_type == EXT4_SUPER_MAGIC;
    *ret_created = created;
    return fd;

close_fd:
    (void)close(fd);
    return r;
}

/* ---- the cache ------------------------------------------------------- */

static void
lru_unlink(struct sfd *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        cache.head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        cache.tail = e->prev;
    e->prev = e->next = NULL;
}

static void
lru_push(struct sfd *e)
{
    e->prev = NULL;
    e->next = cache.head;
    if (cache.head)
        cache.head->prev = e;
    else
        cache.tail = e;
    cache.head = e;
}

/* Lock held.  Take e out of its table and the LRU list; if nobody pins it
 * it goes on *victims to be closed after unlocking, else the last unpin
 * closes it. */
static void
detach(struct sfd *e, struct sfd **victims)
{
    assert(e->attached);
    lru_unlink(e);
    e->attached = false;
    e->st->files[e->file].open = NULL;
    if (e->pins == 0) {
        cache.n_open--;
        e->next = *victims;
        *victims = e;
    }
}

/* Lock held.  Close least recently used unpinned fds while over the
 * limit. */
static void
evict(struct sfd **victims)
{
    struct sfd *e = cache.tail;
    while (cache.n_open > cache.max_open && e) {
        struct sfd *prev = e->prev;
        if (e->pins == 0)
            detach(e, victims);
        e = prev;
    }
}

static void
close_victims(struct sfd *v)
{
    while (v) {
        struct sfd *next = v->next;
        (void)close(v->fd);
        free(v);
        v = next;
    }
}

/* Lock held. */
static void
mark_dirty(struct storage *st, size_t i, bool created)
{
    struct sfile *sf = &st->files[i];
    if (created)
        sf->created = true;
    if (!sf->dirty) {
        sf->dirty = true;
        sf->next_dirty = st->dirty_head;
        st->dirty_head = i + 1;
        st->n_dirty++;
    }
}

/* Unpin e; wrote: mark its file dirty. */
static void
fd_release(struct sfd *e, bool wrote)
{
    struct sfd *victims = NULL;
    cache_lock();
    assert(e->pins > 0);
    e->pins--;
    if (wrote)
        mark_dirty(e->st, e->file, false);
    if (e->pins == 0) {
        if (!e->attached) {
            cache.n_open--;
            e->next = victims;
            victims = e;
        } else {
            evict(&victims);
        }
    }
    cache_unlock();
    close_victims(victims);
}

/* Pin an fd of file i, opening it if the cache has none fit for mode.
 * Returns 0 and *ret, or -errno (recorded). */
static int
fd_acquire(struct storage *st, size_t i, enum acquire_mode mode,
           struct sfd **ret)
{
    struct sfile *sf = &st->files[i];
    bool write = mode == ACQ_WRITE;
    struct sfd *e, *victims = NULL;
    bool check;

    cache_lock();
    e = sf->open;
    if (e && (e->writable || !write)) {
        e->pins++;
        lru_unlink(e);
        lru_push(e);
        uint64_t now = now_ms();
        check = mode == ACQ_SYNC || now - e->checked_ms >= STORAGE_RECHECK_MS;
        if (check)
            e->checked_ms = now;
        cache_unlock();
        if (check) {
            struct stat sb;
            if (fstat(e->fd, &sb) == 0 && sb.st_nlink == 0) {
                /* Deleted underneath: forget this fd. */
                cache_lock();
                if (e->attached)
                    detach(e, &victims);
                cache_unlock();
                fd_release(e, false);
                return record_error(st, -ENOENT, (long)i,
                                    mode == ACQ_SYNC ? "sync"
                                    : write          ? "write"
                                                     : "read");
            }
        }
        *ret = e;
        return 0;
    }
    bool seen = sf->seen;
    cache_unlock();

    bool created = false, ahead = false;
    struct open_fail fail;
    int fd = file_open(st, i, write, write && !seen, &created, &ahead, &fail);
    if (fd < 0)
        return record_error(st, fd, fail.file, fail.op);
    struct sfd *fresh = calloc(1, sizeof(*fresh));
    if (!fresh) {
        (void)close(fd);
        return record_error(st, -ENOMEM, (long)i, "open");
    }
    fresh->fd = fd;
    fresh->writable = write;
    fresh->alloc_ahead = ahead;
    fresh->st = st;
    fresh->file = i;
    fresh->checked_ms = now_ms();
    fresh->pins = 1;

    cache_lock();
    e = sf->open;
    if (e && (e->writable || !write)) {
        /* Another thread opened it meanwhile: use theirs. */
        e->pins++;
        lru_unlink(e);
        lru_push(e);
        if (created)
            mark_dirty(st, i, true);
        cache_unlock();
        (void)close(fd);
        free(fresh);
        *ret = e;
        return 0;
    }
    if (e) /* read-only: replaced by the writable one */
        detach(e, &victims);
    fresh->attached = true;
    lru_push(fresh);
    sf->open = fresh;
    sf->seen = true;
    cache.n_open++;
    if (created)
        mark_dirty(st, i, true);
    evict(&victims);
    cache_unlock();
    close_victims(victims);
    *ret = fresh;
    return 0;
}

void
storage_set_max_open(size_t n)
{
    cache_lock();
    cache.max_open = n > 0 ? n : 1;
    cache_unlock();
}

size_t
storage_open_fds(void)
{
    cache_lock();
    size_t n = cache.n_open;
    cache_unlock();
    return n;
}

/* ---- open and close -------------------------------------------------- */

int
storage_open(struct storage **ret_st, const struct meta_info *info,
             const char *download_dir, unsigned flags)
{
    if (!download_dir || !*download_dir)
        return -EINVAL;
    struct storage *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->info = info;
    st->flags = flags;
    st->dir = strdup(download_dir);
    /* calloc of a large table is mmap'd zero pages: no O(n) work here. */
    st->files = calloc(info->n_files ? info->n_files : 1, sizeof(*st->files));
    st->chunks = calloc(chunk_bits(info) / 32 + 1, sizeof(*st->chunks));
    if (!st->dir || !st->files || !st->chunks) {
        free(st->chunks);
        free(st->dir);
        free(st->files);
        free(st);
        return -ENOMEM;
    }
    *ret_st = st;
    return 0;
}

void
storage_close(struct storage *st)
{
    if (!st)
        return;
    struct sfd *victims = NULL;
    cache_lock();
    /* The cache holds at most a few max_open entries: walk them all. */
    struct sfd *e = cache.head;
    while (e) {
        struct sfd *next = e->next;
        if (e->st == st) {
            assert(e->pins == 0); /* the caller said: no I/O in flight */
            detach(e, &victims);
        }
        e = next;
    }
    cache_unlock();
    close_victims(victims);
    free(st->chunks);
    free(st->files);
    free(st->dir);
    free(st);
}

/* ---- I/O ------------------------------------------------------------- */

struct io_ctx {
    struct storage *st;
    uint8_t *rbuf;           /* read: destination */
    const struct iovec *iov; /* write: source, consumed in order */
    int iovcnt;
    int iov_i;      /* cursor: buffer index */
    size_t iov_off; /* cursor: offset in it */
    storage_sendfile_cb cb;
    void *arg;
};

static void
iov_advance(struct io_ctx *c, uint64_t n)
{
    while (n > 0 && c->iov_i < c->iovcnt) {
        size_t left = c->iov[c->iov_i].iov_len - c->iov_off;
        if (n < left) {
            c->iov_off += (size_t)n;
            return;
        }
        n -= left;
        c->iov_i++;
        c->iov_off = 0;
    }
}

/* Up to STORAGE_IOV_BATCH iovecs for the next limit bytes from the
 * cursor (not moved). */
static int
iov_fill(const struct io_ctx *c, struct iovec *v, uint64_t limit)
{
    int n = 0;
    int i = c->iov_i;
    size_t off = c->iov_off;
    while (limit > 0 && i < c->iovcnt && n < STORAGE_IOV_BATCH) {
        size_t len = c->iov[i].iov_len - off;
        if (len > limit)
            len = (size_t)limit;
        if (len > 0) {
            v[n].iov_base = (uint8_t *)c->iov[i].iov_base + off;
            v[n].iov_len = len;
            n++;
            limit -= len;
        }
        i++;
        off = 0;
    }
    return n;
}

/* Allocate the chunks of e's file that span sp touches, those that no
 * write allocated yet (storage.h, "allocated ahead").  Errors are
 * ignored: the writes report theirs. */
static void
alloc_ahead(struct storage *st, struct sfd *e, const struct storage_span *sp)
{
    const struct meta_file *mf = &st->info->files[sp->file];
    uint64_t k0 = sp->file_offset / STORAGE_ALLOC_CHUNK;
    uint64_t k1 = (sp->file_offset + sp->length - 1) / STORAGE_ALLOC_CHUNK;
    for (uint64_t k = k0; k <= k1; k++) {
        uint64_t b = chunk_bit(st->info, sp->file, k);
        _Atomic uint32_t *w = &st->chunks[b / 32];
        uint32_t bit = 1u << (b % 32);
        if ((atomic_load_explicit(w, memory_order_relaxed) & bit) ||
            (atomic_fetch_or_explicit(w, bit, memory_order_relaxed) & bit))
            continue;
        uint64_t lo = k * STORAGE_ALLOC_CHUNK;
        uint64_t n = mf->length - lo < STORAGE_ALLOC_CHUNK
                         ? mf->length - lo
                         : STORAGE_ALLOC_CHUNK;
        (void)fallocate(e->fd, FALLOC_FL_KEEP_SIZE, (off_t)lo, (off_t)n);
    }
}

static int
span_write(void *arg, const struct storage_span *sp)
{
    struct io_ctx *c = arg;
    if (c->st->info->files[sp->file].attr & META_ATTR_PAD) {
        iov_advance(c, sp->length); /* pad: zeros, never written */
        return 0;
    }
    struct sfd *e;
    int r = fd_acquire(c->st, sp->file, ACQ_WRITE, &e);
    if (r < 0)
        return r;
    if (e->alloc_ahead)
        alloc_ahead(c->st, e, sp);
    uint64_t done = 0;
    while (done < sp->length) {
        struct iovec v[STORAGE_IOV_BATCH];
        int n = iov_fill(c, v, sp->length - done);
        if (n == 0) { /* the iovecs hold fewer bytes than promised */
            r = -EINVAL;
            break;
        }
        ssize_t k = pwritev(e->fd, v, n, (off_t)(sp->file_offset + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            r = k < 0 ? -errno : -EIO;
            break;
        }
        iov_advance(c, (uint64_t)k);
        done += (uint64_t)k;
    }
    fd_release(e, true);
    if (r < 0 && r != -EINVAL)
        record_error(c->st, r, (long)sp->file, "write");
    return r;
}

static int
span_read(void *arg, const struct storage_span *sp)
{
    struct io_ctx *c = arg;
    uint8_t *p = c->rbuf + sp->data_offset;
    if (c->st->info->files[sp->file].attr & META_ATTR_PAD) {
        memset(p, 0, (size_t)sp->length);
        return 0;
    }
    struct sfd *e;
    int r = fd_acquire(c->st, sp->file, ACQ_READ, &e);
    if (r < 0)
        return r;
    uint64_t done = 0;
    while (done < sp->length) {
        ssize_t k = pread(e->fd, p + done, (size_t)(sp->length - done),
                          (off_t)(sp->file_offset + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            r = k < 0 ? -errno : -ENODATA; /* 0: the file is too short */
            break;
        }
        done += (uint64_t)k;
    }
    fd_release(e, false);
    if (r < 0)
        record_error(c->st, r, (long)sp->file, "read");
    return r;
}

static int
span_sendfile(void *arg, const struct storage_span *sp)
{
    struct io_ctx *c = arg;
    if (c->st->info->files[sp->file].attr & META_ATTR_PAD)
        return c->cb(c->arg, -1, 0, sp->length);
    struct sfd *e;
    int r = fd_acquire(c->st, sp->file, ACQ_READ, &e);
    if (r < 0)
        return r;
    r = c->cb(c->arg, e->fd, sp->file_offset, sp->length);
    fd_release(e, false);
    return r;
}

int
storage_writev(struct storage *st, uint64_t offset, const struct iovec *iov,
               int iovcnt)
{
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    struct io_ctx c = {.st = st, .iov = iov, .iovcnt = iovcnt};
    return storage_map(st->info, offset, len, span_write, &c);
}

int
storage_write(struct storage *st, uint64_t offset, const void *p, size_t len)
{
    struct iovec v = {.iov_base = (void *)(uintptr_t)p, .iov_len = len};
    return storage_writev(st, offset, &v, 1);
}

int
storage_read(struct storage *st, uint64_t offset, void *p, size_t len)
{
    struct io_ctx c = {.st = st, .rbuf = p};
    return storage_map(st->info, offset, len, span_read, &c);
}

int
storage_read_piece(struct storage *st, uint32_t piece, void *p)
{
    const struct meta_info *info = st->info;
    if (piece >= info->n_pieces)
        return -EINVAL;
    uint32_t len = meta_piece_size(info, piece);
    if (len > INT_MAX)
        return -EINVAL;
    int r = storage_read(st, (uint64_t)piece * info->piece_length, p, len);
    return r < 0 ? r : (int)len;
}

int
storage_sendfile_span(struct storage *st, uint64_t offset, uint64_t len,
                      storage_sendfile_cb cb, void *arg)
{
    struct io_ctx c = {.st = st, .cb = cb, .arg = arg};
    return storage_map(st->info, offset, len, span_sendfile, &c);
}

/* ---- flush ----------------------------------------------------------- */

struct flush_item {
    size_t file;
    bool created;
};

/* Length of the directory part of rel ("a/b/c" -> 3), 0 for none. */
static size_t
dir_len(const char *rel)
{
    const char *s = strrchr(rel, '/');
    return s ? (size_t)(s - rel) : 0;
}

/* fsync the download directory and every directory on rel's way to its
 * file, so that a new file's (and new directories') entries are durable. */
static int
sync_dirs(struct storage *st, const char *rel)
{
    bool try2 = !(st->flags & STORAGE_NO_OPENAT2);
    int rootfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return -errno;
    int r = fsync(rootfd) < 0 ? -errno : 0;
    size_t n = dir_len(rel);
    char *p = n ? strndup(rel, n) : NULL;
    if (n && !p)
        r = -ENOMEM;
    for (size_t i = 1; p && i <= n && r == 0; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        int fd =
            open_beneath(rootfd, p, O_RDONLY | O_DIRECTORY, 0, false, try2);
        p[i] = c;
        if (fd < 0) {
            r = fd;
            break;
        }
        if (fsync(fd) < 0)
            r = -errno;
        (void)close(fd);
    }
    free(p);
    (void)close(rootfd);
    return r;
}

int
storage_flush(struct storage *st)
{
    struct flush_item *items = NULL;
    size_t n = 0, cap = 0;

    /* Take the dirty list; allocate outside the lock. */
    for (;;) {
        cache_lock();
        if (st->n_dirty <= cap)
            break;
        size_t want = st->n_dirty;
        cache_unlock();
        free(items);
        items = malloc(want * sizeof(*items));
        if (!items)
            return -ENOMEM;
        cap = want;
    }
    for (size_t h = st->dirty_head; h != 0;) {
        struct sfile *sf = &st->files[h - 1];
        items[n].file = h - 1;
        items[n].created = sf->created;
        n++;
        sf->dirty = false;
        sf->created = false;
        h = sf->next_dirty;
    }
    st->dirty_head = 0;
    st->n_dirty = 0;
    cache_unlock();

    int r = 0;
    for (size_t k = 0; k < n && r == 0; k++) {
        struct sfd *e;
        r = fd_acquire(st, items[k].file, ACQ_SYNC, &e);
        if (r < 0)
            break;
        if (fdatasync(e->fd) < 0)
            r = record_error(st, -errno, (long)items[k].file, "sync");
        fd_release(e, false);
    }
    /* Directories of new files; one sync per run of files in the same
     * directory (the list is mostly in creation order). */
    const char *last = NULL;
    size_t last_n = 0;
    for (size_t k = 0; k < n && r == 0; k++) {
        if (!items[k].created)
            continue;
        const char *path = st->info->files[items[k].file].path;
        size_t dn = dir_len(path);
        if (last && dn == last_n && memcmp(path, last, dn) == 0)
            continue;
        r = sync_dirs(st, path);
        if (r < 0)
            record_error(st, r, (long)items[k].file, "sync");
        last = path;
        last_n = dn;
    }
    if (r < 0) {
        /* All of it stays to be synced by the next flush: syncing again
         * what is clean is cheap, and this is the rare path. */
        cache_lock();
        for (size_t k = 0; k < n; k++)
            mark_dirty(st, items[k].file, items[k].created);
        cache_unlock();
    }
    free(items);
    return r;
}

/* ---- files on disk --------------------------------------------------- */

int
storage_create_empty_files(struct storage *st)
{
    const struct meta_info *info = st->info;
    bool try2 = !(st->flags & STORAGE_NO_OPENAT2);
    int rootfd = -1;
    int first = 0;
    for (size_t i = 0; i < info->n_files; i++) {
        const struct meta_file *mf = &info->files[i];
        if (mf->length != 0 || (mf->attr & (META_ATTR_PAD | META_ATTR_SYMLINK)))
            continue;
        if (rootfd < 0) {
            rootfd = open_root(st->dir, true);
            if (rootfd < 0)
                return record_error(st, rootfd, -1, "create");
        }
        int fd = open_beneath(rootfd, mf->path,
                              O_WRONLY | O_CREAT | O_EXCL | O_NONBLOCK,
                              file_mode(mf), true, try2);
        if (fd >= 0) {
            (void)close(fd);
            cache_lock();
            st->files[i].seen = true;
            mark_dirty(st, i, true);
            cache_unlock();
        } else if (fd == -EEXIST) {
            /* There already: fine if it is a regular file. */
            uint64_t size;
            fd = storage_file_size(st, i, &size);
            if (fd < 0 && first == 0)
                first = record_error(st, fd, (long)i, "create");
        } else if (first == 0) {
            first = record_error(st, fd, (long)i, "create");
        }
    }
    if (rootfd >= 0)
        (void)close(rootfd);
    return first;
}

int
storage_file_size(struct storage *st, size_t i, uint64_t *ret_size)
{
    const struct meta_file *mf = &st->info->files[i];
    if (mf->attr & META_ATTR_PAD)
        return -ENOENT;
    int rootfd = open_root(st->dir, false);
    if (rootfd < 0)
        return rootfd;
    int fd = open_beneath(rootfd, mf->path, O_PATH, 0, false,
                          !(st->flags & STORAGE_NO_OPENAT2));
    (void)close(rootfd);
    if (fd < 0)
        return fd;
    struct stat sb;
    int r = 0;
    if (fstat(fd, &sb) < 0)
        r = -errno;
    else if (S_ISLNK(sb.st_mode))
        r = -ELOOP;
    else if (S_ISDIR(sb.st_mode))
        r = -EISDIR;
    else if (!S_ISREG(sb.st_mode))
        r = -EINVAL;
    (void)close(fd);
    if (r == 0)
        *ret_size = (uint64_t)sb.st_size;
    return r;
}

bool
storage_have_file(struct storage *st, size_t i)
{
    const struct meta_file *mf = &st->info->files[i];
    if (mf->attr & (META_ATTR_PAD | META_ATTR_SYMLINK))
        return true;
    uint64_t size;
    return storage_file_size(st, i, &size) == 0 && size == mf->length;
}

/* ---- delete ---------------------------------------------------------- */

/* Remove the last component of p[0..n) (a NUL-terminated copy the caller
 * may cut) below rootfd: unlinkat(flags) in its parent, opened without
 * following symlinks.  Returns 0 or -errno. */
static int
remove_beneath(int rootfd, char *p, int flags)
{
    char *slash = strrchr(p, '/');
    int dfd = rootfd;
    const char *base = p;
    if (slash) {
        *slash = '\0';
        dfd = open_beneath(rootfd, p, O_PATH | O_DIRECTORY, 0, false, true);
        *slash = '/';
        if (dfd < 0)
            return dfd;
        base = slash + 1;
    }
    int r = unlinkat(dfd, base, flags) < 0 ? -errno : 0;
    if (dfd != rootfd)
        (void)close(dfd);
    return r;
}

int
storage_delete_data(const struct meta_info *info, const char *download_dir,
                    struct storage_error *reterr)
{
    int rootfd = open(download_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        if (errno == ENOENT)
            return 0;
        int r = -errno;
        if (reterr)
            error_fill(reterr, r, -1, "remove", download_dir);
        return r;
    }
    int first = 0;
    for (size_t i = 0; i < info->n_files; i++) {
        const struct meta_file *mf = &info->files[i];
        if (mf->attr & META_ATTR_PAD)
            continue;
        char *p = strdup(mf->path);
        if (!p) {
            if (first == 0 && reterr)
                error_fill(reterr, -ENOMEM, (long)i, "remove", mf->path);
            first = first ? first : -ENOMEM;
            continue;
        }
        int r = remove_beneath(rootfd, p, 0);
        if (r < 0 && r != -ENOENT && first == 0) {
            first = r;
            if (reterr)
                error_fill(reterr, r, (long)i, "remove", mf->path);
        }
        /* Then its directories, deepest first, while they are empty: the
         * last file of a directory removes it. */
        char *s;
        while ((s = strrchr(p, '/')) != NULL) {
            *s = '\0';
            if (remove_beneath(rootfd, p, AT_REMOVEDIR) < 0)
                break;
        }
        free(p);
    }
    (void)close(rootfd);
    return first;
}
