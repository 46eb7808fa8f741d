/* create — `torrentctl create`: make a .torrent from a file or directory.
 *
 * The info dictionary is byte for byte what Debian's mktorrent 1.1 writes
 * for the same input, piece size and flags, so both give the same
 * info-hash:
 *   - a directory is walked recursively, following symbolic links (a
 *     dangling link is an error); hidden files and empty files are
 *     included; other file types (fifos, sockets, devices) are skipped;
 *   - files are ordered by strcmp() of their '/'-joined relative paths;
 *   - info keys: files|length, name, piece length, pieces, private (i1e,
 *     only with --private), source (only with --source).
 * The outer dictionary follows mktorrent too: announce is the first
 * tracker, announce-list is written when there is more than one URL, each
 * -t is a tier and commas separate URLs inside a tier; url-list is a
 * string for one web seed and a list for several.
 *
 * Hashing: N worker threads (one per online CPU, or -j N) each take the
 * next job — a run of whole pieces of about CREATE_CHUNK bytes, or one
 * piece read in CREATE_CHUNK slices when pieces are larger — read it with
 * pread() (pieces span file boundaries), hash it with OpenSSL's SHA-1 and
 * store the digest in its slot of the shared pieces array; slots are
 * disjoint, so no lock.  The main thread only draws the progress bar.
 *
 * The output is written to a temporary file next to OUT, synced, and
 * renamed over it (without --force, renameat2(RENAME_NOREPLACE), so an
 * existing file is never replaced).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/hex.h"
#include "common/metainfo.h"
#include "ctl/ctl.h"
#include "ctl/output.h"

#define CREATE_MIN_PIECE (16u * 1024)          /* accepted --piece-size */
#define CREATE_MAX_PIECE (256u * 1024 * 1024)
#define CREATE_AUTO_MAX_PIECE (16u * 1024 * 1024)
#define CREATE_CHUNK (1u * 1024 * 1024)        /* bytes per pread */
#define CREATE_MAX_THREADS 256
#define CREATE_MAX_DEPTH 128                   /* directory nesting */
#define CREATE_PROGRESS_NS 100000000L          /* redraw every 100 ms */

struct cr_file {
    char *path;        /* owned: what to open (PATH or PATH/rel) */
    const char *rel;   /* borrowed: inside path, the torrent path */
    uint64_t length;
    uint64_t offset;   /* in the torrent's data */
};

struct cr_files {
    struct cr_file *v; /* owned */
    size_t n, size;
    uint64_t total;
};

struct cr_opts {
    const char *path;
    const char *out;
    const char *name;
    const char *comment;
    const char *source;
    char **trackers;   /* borrowed from argv: each -t, commas inside */
    size_t n_trackers;
    char **seeds;      /* borrowed from argv: each -w */
    size_t n_seeds;
    uint32_t piece_size; /* 0: automatic */
    unsigned threads;    /* 0: online CPUs */
    bool private_flag;
    bool force;
    bool no_date;
};

/* ------------------------------------------------------------ listing */

static void
files_release(struct cr_files *fl)
{
    for (size_t i = 0; i < fl->n; i++)
        free(fl->v[i].path);
    free(fl->v);
    fl->v = NULL;
    fl->n = fl->size = 0;
}

static int
files_add(struct cr_files *fl, char *path, size_t rel_off, uint64_t length)
{
    if (fl->n == fl->size) {
        size_t n = fl->size ? fl->size * 2 : 64;
        struct cr_file *v = realloc(fl->v, n * sizeof(*v));

        if (!v)
            return -ENOMEM;
        fl->v = v;
        fl->size = n;
    }
    fl->v[fl->n].path = path;
    fl->v[fl->n].rel = path + rel_off;
    fl->v[fl->n].length = length;
    fl->v[fl->n].offset = 0;
    fl->n++;
    return 0;
}

struct walk_dir {
    dev_t dev;
    ino_t ino;
};

/* Add the files under the directory dirpath (open as fd, which this call
 * closes).  rel_off is where relative paths start in "dirpath/name".
 * stack holds the directories being walked, for loops through links.
 * Returns 0, or -1 after printing an error. */
static int
walk(struct cr_files *fl, int fd, const char *dirpath, size_t rel_off,
     struct walk_dir *stack, unsigned depth)
{
    const struct meta_limits *lim = &meta_limits_default;
    DIR *d;
    struct dirent *de;
    int r = 0;

    d = fdopendir(fd);
    if (!d) {
        ctl_err("cannot read directory '%s': %s", dirpath, strerror(errno));
        close(fd);
        return -1;
    }
    for (;;) {
        struct stat st;
        char *p;

        errno = 0;
        de = readdir(d);
        if (!de) {
            if (errno) {
                ctl_err("cannot read directory '%s': %s", dirpath,
                        strerror(errno));
                r = -1;
            }
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (asprintf(&p, "%s/%s", dirpath, de->d_name) < 0) {
            ctl_err("out of memory");
            r = -1;
            break;
        }
        /* Follow symbolic links, as mktorrent does. */
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
            ctl_err("cannot stat '%s': %s", p, strerror(errno));
            free(p);
            r = -1;
            break;
        }
        if (S_ISREG(st.st_mode)) {
            if (strlen(p + rel_off) > lim->max_path_len) {
                ctl_err("path too long for a torrent: '%s'", p);
                free(p);
                r = -1;
                break;
            }
            if (fl->n >= lim->max_files) {
                ctl_err("too many files (more than %" PRIu32 ")",
                        lim->max_files);
                free(p);
                r = -1;
                break;
            }
            if (files_add(fl, p, rel_off, (uint64_t)st.st_size) < 0) {
                ctl_err("out of memory");
                free(p);
                r = -1;
                break;
            }
        } else if (S_ISDIR(st.st_mode)) {
            int sub;
            unsigned i;

            for (i = 0; i <= depth; i++)
                if (stack[i].dev == st.st_dev && stack[i].ino == st.st_ino)
                    break;
            if (i <= depth) {
                ctl_err("'%s' leads back to a directory above it "
                        "(a symbolic link loop)", p);
                free(p);
                r = -1;
                break;
            }
            if (depth + 1 >= CREATE_MAX_DEPTH) {
                ctl_err("directories nested too deep at '%s'", p);
                free(p);
                r = -1;
                break;
            }
            sub = openat(dirfd(d), de->d_name,
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub < 0) {
                ctl_err("cannot open directory '%s': %s", p,
                        strerror(errno));
                free(p);
                r = -1;
                break;
            }
            stack[depth + 1].dev = st.st_dev;
            stack[depth + 1].ino = st.st_ino;
            r = walk(fl, sub, p, rel_off, stack, depth + 1);
            free(p);
            if (r < 0)
                break;
        } else {
            free(p); /* fifo, socket, device: skipped, like mktorrent */
        }
    }
    closedir(d);
    return r;
}

static int
file_cmp(const void *a, const void *b)
{
    const struct cr_file *x = a, *y = b;

    return strcmp(x->rel, y->rel);
}

/* List the files of opts->path into fl, sorted, with offsets.  Sets
 * *ret_multi.  Returns 0 or -1 after printing an error. */
static int
list_files(struct cr_files *fl, const char *path, bool *ret_multi)
{
    struct walk_dir stack[CREATE_MAX_DEPTH];
    struct stat st;
    uint64_t off = 0;
    char *p;
    size_t len;
    int fd;

    if (stat(path, &st) < 0) {
        ctl_err("cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode)) {
        p = strdup(path);
        if (!p || files_add(fl, p, strlen(p), (uint64_t)st.st_size) < 0) {
            free(p);
            ctl_err("out of memory");
            return -1;
        }
        fl->v[0].offset = 0;
        fl->total = (uint64_t)st.st_size;
        *ret_multi = false;
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        ctl_err("'%s' is neither a regular file nor a directory", path);
        return -1;
    }
    /* Walk "path" without its trailing slashes; relative paths start
     * after "path/". */
    len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    p = strndup(path, len);
    if (!p) {
        ctl_err("out of memory");
        return -1;
    }
    fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ctl_err("cannot open directory '%s': %s", p, strerror(errno));
        free(p);
        return -1;
    }
    stack[0].dev = st.st_dev;
    stack[0].ino = st.st_ino;
    if (walk(fl, fd, p, len + 1, stack, 0) < 0) {
        free(p);
        return -1;
    }
    free(p);
    if (fl->n == 0) {
        ctl_err("'%s' contains no files", path);
        return -1;
    }
    qsort(fl->v, fl->n, sizeof(fl->v[0]), file_cmp);
    for (size_t i = 0; i < fl->n; i++) {
        fl->v[i].offset = off;
        off += fl->v[i].length;
    }
    fl->total = off;
    *ret_multi = true;
    return 0;
}

/* ---------------------------------------------------------- piece size */

/* libtorrent's rule (create_torrent.cpp): the smallest power of two p from
 * 16 KiB such that total <= (p / 10)^2, that is, about 10 * sqrt(total),
 * at most 16 MiB; a 1 GiB file gets 512 KiB pieces (2048 of them).  The
 * table holds round((2 * p / 20)^2) for p = 16 KiB .. 8 MiB. */
static uint32_t
auto_piece_size(uint64_t total)
{
    static const uint64_t table[] = {
        2684355ULL, 10737418ULL, 42949673ULL, 171798692ULL, 687194767ULL,
        2748779069ULL, 10995116278ULL, 43980465111ULL, 175921860444ULL,
        703687441777ULL,
    };
    unsigned i = 0;
    uint32_t p;

    while (i < sizeof(table) / sizeof(table[0]) && table[i] < total)
        i++;
    p = CREATE_MIN_PIECE << i; /* at most 16 MiB */
    /* Keep the pieces string within what a .torrent may hold. */
    while (p < CREATE_MAX_PIECE &&
           (uint64_t)meta_piece_count(total, p) * META_HASH_LEN >
               meta_limits_default.max_input / 2)
        p <<= 1;
    return p;
}

/* ------------------------------------------------------------- hashing */

struct cr_hash {
    const struct cr_files *fl;   /* borrowed */
    uint32_t plen;
    uint32_t n_pieces;
    uint32_t pieces_per_job;     /* when plen <= CREATE_CHUNK */
    uint32_t n_jobs;
    uint8_t *pieces;             /* owned: n_pieces * 20 */
    const EVP_MD *md;            /* borrowed */

    atomic_uint next_job;
    atomic_uint_fast64_t done;   /* bytes hashed, for the progress bar */
    atomic_bool failed;

    pthread_mutex_t lock;        /* guards what follows */
    pthread_cond_t cond;
    unsigned n_finished;
    char err[512];               /* the first error */
};

struct cr_worker {
    struct cr_hash *h;           /* borrowed */
    pthread_t tid;
    uint8_t *chunk;              /* owned: CREATE_CHUNK bytes */
    EVP_MD_CTX *ctx;             /* owned */
    size_t fd_index;             /* the file fd belongs to */
    int fd;                      /* owned, or -1 */
};

static void
hash_fail(struct cr_hash *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
hash_fail(struct cr_hash *h, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&h->lock);
    if (!atomic_load(&h->failed)) {
        va_start(ap, fmt);
        vsnprintf(h->err, sizeof(h->err), fmt, ap);
        va_end(ap);
        atomic_store(&h->failed, true);
    }
    pthread_mutex_unlock(&h->lock);
}

/* The index of the file holding byte off of the torrent's data (skipping
 * empty files). */
static size_t
file_at(const struct cr_files *fl, uint64_t off)
{
    size_t lo = 0, hi = fl->n;

    /* the last file whose offset <= off */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (fl->v[mid].offset <= off)
            lo = mid;
        else
            hi = mid;
    }
    while (lo < fl->n && fl->v[lo].offset + fl->v[lo].length <= off)
        lo++;
    return lo;
}

/* Make w->fd the open file i.  Returns 0, or -1 with errno. */
static int
open_file(struct cr_worker *w, size_t i)
{
    if (w->fd >= 0 && w->fd_index == i)
        return 0;
    if (w->fd >= 0)
        close(w->fd);
    w->fd = open(w->h->fl->v[i].path, O_RDONLY | O_CLOEXEC);
    if (w->fd < 0)
        return -1;
    w->fd_index = i;
    (void)posix_fadvise(w->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return 0;
}

/* Read len bytes of the torrent's data at off into dst.  Returns 0 or -1
 * after hash_fail(). */
static int
read_span(struct cr_worker *w, uint64_t off, size_t len, uint8_t *dst)
{
    const struct cr_files *fl = w->h->fl;
    size_t i = file_at(fl, off);

    while (len > 0) {
        const struct cr_file *f;
        uint64_t foff;
        size_t want;
        ssize_t n;

        if (i >= fl->n) {
            hash_fail(w->h, "internal error: read past the last file");
            return -1;
        }
        f = &fl->v[i];
        if (f->length == 0 || off >= f->offset + f->length) {
            i++;
            continue;
        }
        if (open_file(w, i) < 0) {
            hash_fail(w->h, "cannot open '%s': %s", f->path,
                      strerror(errno));
            return -1;
        }
        foff = off - f->offset;
        want = len;
        if (want > f->length - foff)
            want = (size_t)(f->length - foff);
        n = pread(w->fd, dst, want, (off_t)foff);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            hash_fail(w->h, "cannot read '%s': %s", f->path,
                      strerror(errno));
            return -1;
        }
        if (n == 0) {
            hash_fail(w->h, "'%s' became shorter while it was being "
                      "hashed", f->path);
            return -1;
        }
        dst += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static int
digest(struct cr_worker *w, const uint8_t *p, size_t n, uint8_t *out)
{
    return EVP_DigestInit_ex(w->ctx, w->h->md, NULL) == 1 &&
                   EVP_DigestUpdate(w->ctx, p, n) == 1 &&
                   EVP_DigestFinal_ex(w->ctx, out, NULL) == 1
               ? 0
               : -1;
}

static uint64_t
piece_bytes(const struct cr_hash *h, uint32_t piece)
{
    uint64_t start = (uint64_t)piece * h->plen;
    uint64_t end = start + h->plen;

    return end > h->fl->total ? h->fl->total - start : h->plen;
}

static int
hash_job(struct cr_worker *w, uint32_t job)
{
    struct cr_hash *h = w->h;

    if (h->plen <= CREATE_CHUNK) {
        uint32_t first = job * h->pieces_per_job;
        uint32_t last = first + h->pieces_per_job;
        uint64_t off = (uint64_t)first * h->plen;
        uint64_t end;

        if (last > h->n_pieces)
            last = h->n_pieces;
        end = (uint64_t)last * h->plen;
        if (end > h->fl->total)
            end = h->fl->total;
        if (read_span(w, off, (size_t)(end - off), w->chunk) < 0)
            return -1;
        for (uint32_t p = first; p < last; p++) {
            size_t at = (size_t)(p - first) * h->plen;

            if (digest(w, w->chunk + at, (size_t)piece_bytes(h, p),
                       h->pieces + (size_t)p * META_HASH_LEN) < 0)
                goto fail_digest;
        }
        atomic_fetch_add_explicit(&h->done, end - off,
                                  memory_order_relaxed);
        return 0;
    }

    /* One big piece, in slices. */
    {
        uint64_t off = (uint64_t)job * h->plen;
        uint64_t left = piece_bytes(h, job);

        if (EVP_DigestInit_ex(w->ctx, h->md, NULL) != 1)
            goto fail_digest;
        while (left > 0) {
            size_t n = left > CREATE_CHUNK ? CREATE_CHUNK : (size_t)left;

            if (read_span(w, off, n, w->chunk) < 0)
                return -1;
            if (EVP_DigestUpdate(w->ctx, w->chunk, n) != 1)
                goto fail_digest;
            off += n;
            left -= n;
            atomic_fetch_add_explicit(&h->done, n, memory_order_relaxed);
        }
        if (EVP_DigestFinal_ex(w->ctx, h->pieces +
                               (size_t)job * META_HASH_LEN, NULL) != 1)
            goto fail_digest;
        return 0;
    }

fail_digest:
    hash_fail(h, "SHA-1 failed (OpenSSL)");
    return -1;
}

static void *
hash_worker(void *arg)
{
    struct cr_worker *w = arg;
    struct cr_hash *h = w->h;

    while (!atomic_load_explicit(&h->failed, memory_order_relaxed)) {
        unsigned job = atomic_fetch_add(&h->next_job, 1);

        if (job >= h->n_jobs || hash_job(w, job) < 0)
            break;
    }
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    pthread_mutex_lock(&h->lock);
    h->n_finished++;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static unsigned
online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > CREATE_MAX_THREADS ? CREATE_MAX_THREADS : (unsigned)n;
}

/* Hash every piece into *ret_pieces (n_pieces * 20 bytes, for free()).
 * Returns 0 or -1 after printing an error. */
static int
hash_all(const struct cr_files *fl, uint32_t plen, uint32_t n_pieces,
         unsigned threads, const char *label, uint8_t **ret_pieces)
{
    struct cr_hash h = {
        .fl = fl,
        .plen = plen,
        .n_pieces = n_pieces,
        .n_finished = 0,
    };
    struct cr_worker *w = NULL;
    struct ctl_progress bar;
    pthread_condattr_t ca;
    EVP_MD *md;
    unsigned started = 0;
    int rc = -1;

    md = EVP_MD_fetch(NULL, "SHA1", NULL);
    if (!md) {
        ctl_err("OpenSSL has no SHA-1");
        return -1;
    }
    h.md = md;
    if (plen <= CREATE_CHUNK) {
        h.pieces_per_job = CREATE_CHUNK / plen;
        h.n_jobs = (n_pieces + h.pieces_per_job - 1) / h.pieces_per_job;
    } else {
        h.pieces_per_job = 1;
        h.n_jobs = n_pieces;
    }
    if (threads > h.n_jobs)
        threads = h.n_jobs;
    atomic_init(&h.next_job, 0);
    atomic_init(&h.done, 0);
    atomic_init(&h.failed, false);
    pthread_mutex_init(&h.lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h.cond, &ca);
    pthread_condattr_destroy(&ca);

    h.pieces = malloc((size_t)n_pieces * META_HASH_LEN);
    w = calloc(threads, sizeof(*w));
    if (!h.pieces || !w) {
        ctl_err("out of memory");
        goto out;
    }
    for (unsigned i = 0; i < threads; i++) {
        w[i].h = &h;
        w[i].fd = -1;
        w[i].chunk = malloc(CREATE_CHUNK);
        w[i].ctx = EVP_MD_CTX_new();
        if (!w[i].chunk || !w[i].ctx) {
            ctl_err("out of memory");
            goto out;
        }
    }

    ctl_progress_start(&bar, label, fl->total);
    for (unsigned i = 0; i < threads; i++) {
        int e = pthread_create(&w[i].tid, NULL, hash_worker, &w[i]);

        if (e != 0) {
            hash_fail(&h, "cannot start a hashing thread: %s", strerror(e));
            break;
        }
        started++;
    }
    if (bar.on) {
        pthread_mutex_lock(&h.lock);
        while (h.n_finished < started) {
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += CREATE_PROGRESS_NS;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            (void)pthread_cond_timedwait(&h.cond, &h.lock, &ts);
            pthread_mutex_unlock(&h.lock);
            ctl_progress_update(&bar, atomic_load(&h.done));
            pthread_mutex_lock(&h.lock);
        }
        pthread_mutex_unlock(&h.lock);
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(w[i].tid, NULL);
    ctl_progress_end(&bar);

    if (atomic_load(&h.failed)) {
        ctl_err("%s", h.err);
        goto out;
    }
    *ret_pieces = h.pieces;
    h.pieces = NULL;
    rc = 0;
out:
    if (w)
        for (unsigned i = 0; i < threads; i++) {
            free(w[i].chunk);
            EVP_MD_CTX_free(w[i].ctx);
        }
    free(w);
    free(h.pieces);
    pthread_cond_destroy(&h.cond);
    pthread_mutex_destroy(&h.lock);
    EVP_MD_free(md);
    return rc;
}

/* ------------------------------------------------------------ encoding */

/* Append the path list of rel ("a/b/c") as l1:a1:b1:ce. */
static int
put_path(struct buf *b, const char *rel)
{
    int r = benc_put_list(b);

    while (r == 0) {
        const char *slash = strchr(rel, '/');
        size_t n = slash ? (size_t)(slash - rel) : strlen(rel);

        r = benc_put_str(b, rel, n);
        if (!slash)
            break;
        rel = slash + 1;
    }
    return r ? r : benc_put_end(b);
}

static int
put_info(struct buf *b, const struct cr_opts *o, const struct cr_files *fl,
         bool multi, const char *name, uint32_t plen, const uint8_t *pieces,
         uint32_t n_pieces)
{
    int r = benc_put_dict(b);

    if (multi) {
        r = r ? r : benc_put_cstr(b, "files");
        r = r ? r : benc_put_list(b);
        for (size_t i = 0; i < fl->n && r == 0; i++) {
            r = benc_put_dict(b);
            r = r ? r : benc_put_cstr(b, "length");
            r = r ? r : benc_put_int(b, (int64_t)fl->v[i].length);
            r = r ? r : benc_put_cstr(b, "path");
            r = r ? r : put_path(b, fl->v[i].rel);
            r = r ? r : benc_put_end(b);
        }
        r = r ? r : benc_put_end(b);
    } else {
        r = r ? r : benc_put_cstr(b, "length");
        r = r ? r : benc_put_int(b, (int64_t)fl->total);
    }
    r = r ? r : benc_put_cstr(b, "name");
    r = r ? r : benc_put_cstr(b, name);
    r = r ? r : benc_put_cstr(b, "piece length");
    r = r ? r : benc_put_int(b, plen);
    r = r ? r : benc_put_cstr(b, "pieces");
    r = r ? r : benc_put_str(b, pieces, (size_t)n_pieces * META_HASH_LEN);
    if (o->private_flag) {
        r = r ? r : benc_put_cstr(b, "private");
        r = r ? r : benc_put_int(b, 1);
    }
    if (o->source) {
        r = r ? r : benc_put_cstr(b, "source");
        r = r ? r : benc_put_cstr(b, o->source);
    }
    return r ? r : benc_put_end(b);
}

/* Append the URLs of a comma-separated list as strings. */
static int
put_url_list(struct buf *b, const char *s)
{
    int r = 0;

    while (r == 0) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);

        if (n > 0)
            r = benc_put_str(b, s, n);
        if (!comma)
            break;
        s = comma + 1;
    }
    return r;
}

/* The number of URLs in comma lists, and the first one. */
static size_t
count_urls(char *const *lists, size_t n, const char **ret_first,
           size_t *ret_first_len)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++) {
        const char *s = lists[i];

        for (;;) {
            const char *comma = strchr(s, ',');
            size_t len = comma ? (size_t)(comma - s) : strlen(s);

            if (len > 0) {
                if (count == 0 && ret_first) {
                    *ret_first = s;
                    *ret_first_len = len;
                }
                count++;
            }
            if (!comma)
                break;
            s = comma + 1;
        }
    }
    return count;
}

static int
encode_torrent(struct buf *b, const struct cr_opts *o,
               const struct cr_files *fl, bool multi, const char *name,
               uint32_t plen, const uint8_t *pieces, uint32_t n_pieces,
               int64_t date, size_t *ret_info_start, size_t *ret_info_len)
{
    const char *first = NULL;
    size_t first_len = 0, start;
    size_t n_tr = count_urls(o->trackers, o->n_trackers, &first, &first_len);
    size_t n_ws = count_urls(o->seeds, o->n_seeds, NULL, NULL);
    int r = benc_put_dict(b);

    if (n_tr > 0) {
        r = r ? r : benc_put_cstr(b, "announce");
        r = r ? r : benc_put_str(b, first, first_len);
    }
    if (n_tr > 1) {
        r = r ? r : benc_put_cstr(b, "announce-list");
        r = r ? r : benc_put_list(b);
        for (size_t i = 0; i < o->n_trackers && r == 0; i++) {
            if (count_urls(&o->trackers[i], 1, NULL, NULL) == 0)
                continue;
            r = benc_put_list(b);
            r = r ? r : put_url_list(b, o->trackers[i]);
            r = r ? r : benc_put_end(b);
        }
        r = r ? r : benc_put_end(b);
    }
    if (o->comment) {
        r = r ? r : benc_put_cstr(b, "comment");
        r = r ? r : benc_put_cstr(b, o->comment);
    }
    r = r ? r : benc_put_cstr(b, "created by");
    r = r ? r : benc_put_cstr(b, "torrentd/" TD_VERSION);
    if (date >= 0) {
        r = r ? r : benc_put_cstr(b, "creation date");
        r = r ? r : benc_put_int(b, date);
    }
    r = r ? r : benc_put_cstr(b, "info");
    start = b->len;
    r = r ? r : put_info(b, o, fl, multi, name, plen, pieces, n_pieces);
    *ret_info_start = start;
    *ret_info_len = b->len - start;
    if (n_ws == 1) {
        const char *ws = NULL;
        size_t ws_len = 0;

        (void)count_urls(o->seeds, o->n_seeds, &ws, &ws_len);
        r = r ? r : benc_put_cstr(b, "url-list");
        r = r ? r : benc_put_str(b, ws, ws_len);
    } else if (n_ws > 1) {
        r = r ? r : benc_put_cstr(b, "url-list");
        r = r ? r : benc_put_list(b);
        for (size_t i = 0; i < o->n_seeds && r == 0; i++)
            r = put_url_list(b, o->seeds[i]);
        r = r ? r : benc_put_end(b);
    }
    return r ? r : benc_put_end(b);
}

/* -------------------------------------------------------------- output */

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write data to out atomically.  Returns 0 or -1 after printing an error. */
static int
write_output(const char *out, const struct buf *data, bool force)
{
    char *tmp = NULL;
    mode_t mask;
    int fd, r;

    if (strcmp(out, "-") == 0) {
        r = write_all(STDOUT_FILENO, data->data, data->len);
        if (r < 0) {
            ctl_err("cannot write to standard output: %s", strerror(-r));
            return -1;
        }
        return 0;
    }
    if (asprintf(&tmp, "%s.tmpXXXXXX", out) < 0) {
        ctl_err("out of memory");
        return -1;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        ctl_err("cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    mask = umask(0);
    umask(mask);
    r = write_all(fd, data->data, data->len);
    if (r == 0 && fchmod(fd, 0666 & ~mask) < 0)
        r = -errno;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r < 0) {
        ctl_err("cannot write '%s': %s", tmp, strerror(-r));
        goto fail;
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out,
                  force ? 0 : RENAME_NOREPLACE) < 0) {
        if (!force && errno == EINVAL) {
            /* A file system without RENAME_NOREPLACE: link() does not
             * replace either. */
            if (link(tmp, out) == 0) {
                (void)unlink(tmp);
                free(tmp);
                return 0;
            }
        }
        if (errno == EEXIST)
            ctl_err("'%s' already exists (use --force to replace it)", out);
        else
            ctl_err("cannot write '%s': %s", out, strerror(errno));
        goto fail;
    }
    free(tmp);
    return 0;
fail:
    (void)unlink(tmp);
    free(tmp);
    return -1;
}

/* ------------------------------------------------------------- command */

static const char create_help[] =
    "Options:\n"
    "  -o, --output OUT       where to write (default NAME.torrent; '-' is\n"
    "                         standard output)\n"
    "  -t, --tracker URL      a tracker; each -t is a tier, commas separate\n"
    "                         URLs of one tier\n"
    "  -w, --web-seed URL     a web seed (BEP 19); commas separate URLs\n"
    "  -p, --private          set the private flag (BEP 27)\n"
    "  -c, --comment TEXT     a comment\n"
    "  -l, --piece-size N     piece size in bytes, K or M suffix, a power\n"
    "                         of two from 16K to 256M (default: automatic)\n"
    "  -n, --name NAME        the torrent's name (default: PATH's last part)\n"
    "  -s, --source TEXT      a source tag in the info dictionary\n"
    "  -d, --no-date          write no creation date\n"
    "  -j, --threads N        hashing threads (default: online CPUs)\n"
    "  -f, --force            replace OUT if it exists\n"
    CTL_COMMON_OPTS_HELP;

/* Split argv lists: -t and -w may repeat; keep pointers into argv. */
static int
push_arg(char ***v, size_t *n, char *s)
{
    char **nv = realloc(*v, (*n + 1) * sizeof(char *));

    if (!nv)
        return -ENOMEM;
    nv[(*n)++] = s;
    *v = nv;
    return 0;
}

static bool
valid_url_list(char *s)
{
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    return count_urls(&s, 1, NULL, NULL) > 0;
}

static int
parse_args(struct ctl_ctx *ctx, int argc, char **argv, struct cr_opts *o)
{
    static const struct option opts[] = {
        { "output", required_argument, NULL, 'o' },
        { "tracker", required_argument, NULL, 't' },
        { "announce", required_argument, NULL, 'a' },
        { "web-seed", required_argument, NULL, 'w' },
        { "private", no_argument, NULL, 'p' },
        { "comment", required_argument, NULL, 'c' },
        { "piece-size", required_argument, NULL, 'l' },
        { "name", required_argument, NULL, 'n' },
        { "source", required_argument, NULL, 's' },
        { "no-date", no_argument, NULL, 'd' },
        { "threads", required_argument, NULL, 'j' },
        { "force", no_argument, NULL, 'f' },
        { "json", no_argument, NULL, 'J' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    uint64_t v;
    char *end;
    long n;
    int c;

    while ((c = getopt_long(argc, argv, ":o:t:a:w:pc:l:n:s:dj:fh", opts,
                            NULL)) != -1) {
        switch (c) {
        case 'o':
            o->out = optarg;
            break;
        case 't':
        case 'a':
            if (!valid_url_list(optarg))
                return ctl_usage_error(ctx, "invalid tracker URL '%s'",
                                       optarg);
            if (push_arg(&o->trackers, &o->n_trackers, optarg) < 0)
                goto nomem;
            break;
        case 'w':
            if (!valid_url_list(optarg))
                return ctl_usage_error(ctx, "invalid web seed URL '%s'",
                                       optarg);
            if (push_arg(&o->seeds, &o->n_seeds, optarg) < 0)
                goto nomem;
            break;
        case 'p':
            o->private_flag = true;
            break;
        case 'c':
            o->comment = optarg;
            break;
        case 'l':
            if (ctl_parse_size(optarg, &v) < 0 || v < CREATE_MIN_PIECE ||
                v > CREATE_MAX_PIECE || (v & (v - 1)) != 0)
                return ctl_usage_error(
                    ctx, "invalid piece size '%s': it must be a power of "
                    "two from 16 KiB to 256 MiB (e.g. 256K, 1M)", optarg);
            o->piece_size = (uint32_t)v;
            break;
        case 'n':
            if (!*optarg || strchr(optarg, '/') ||
                strcmp(optarg, ".") == 0 || strcmp(optarg, "..") == 0)
                return ctl_usage_error(ctx, "invalid name '%s'", optarg);
            o->name = optarg;
            break;
        case 's':
            o->source = optarg;
            break;
        case 'd':
            o->no_date = true;
            break;
        case 'j':
            errno = 0;
            n = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || n < 1 ||
                n > CREATE_MAX_THREADS)
                return ctl_usage_error(ctx, "invalid thread count '%s' "
                                       "(1 to %d)", optarg,
                                       CREATE_MAX_THREADS);
            o->threads = (unsigned)n;
            break;
        case 'f':
            o->force = true;
            break;
        case 'J':
            ctx->json = true;
            break;
        case 'h':
            ctl_cmd_help(ctx);
            fputs(create_help, stdout);
            return -1;
        default:
            return ctl_option_error(ctx, c, argv);
        }
    }
    if (optind >= argc)
        return ctl_usage_error(ctx, "missing PATH");
    if (optind + 1 < argc)
        return ctl_usage_error(ctx, "unexpected argument '%s'",
                               argv[optind + 1]);
    o->path = argv[optind];
    if (!*o->path)
        return ctl_usage_error(ctx, "empty PATH");
    return 0;
nomem:
    ctl_err("out of memory");
    return CTL_EXIT_FAILURE;
}

/* The torrent name for PATH: its last component ("dir/" is "dir"); "." and
 * ".." and "/" become the real directory's name.  NULL on error. */
static char *
default_name(const char *path)
{
    size_t len = strlen(path);
    const char *s;
    char *copy, *real, *name;

    while (len > 1 && path[len - 1] == '/')
        len--;
    copy = strndup(path, len);
    if (!copy)
        return NULL;
    s = strrchr(copy, '/');
    s = s ? s + 1 : copy;
    if (*s && strcmp(s, ".") != 0 && strcmp(s, "..") != 0) {
        name = strdup(s);
        free(copy);
        return name;
    }
    free(copy);
    real = realpath(path, NULL);
    if (!real)
        return NULL;
    s = strrchr(real, '/');
    name = s && s[1] ? strdup(s + 1) : NULL;
    free(real);
    return name;
}

/* The creation date: now, or $SOURCE_DATE_EPOCH (reproducible builds);
 * -1 for none. */
static int64_t
creation_date(const struct cr_opts *o)
{
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    char *end;
    long long v;

    if (o->no_date)
        return -1;
    if (sde && *sde) {
        errno = 0;
        v = strtoll(sde, &end, 10);
        if (!errno && !*end && v >= 0)
            return v;
    }
    return (int64_t)time(NULL);
}

int
ctl_cmd_create(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct cr_opts o = { 0 };
    struct cr_files fl = { 0 };
    struct meta_errinfo ei;
    struct meta_info *mi = NULL;
    struct buf b;
    uint8_t *pieces = NULL, ih[META_HASH_LEN];
    char hexih[2 * META_HASH_LEN + 1], *name = NULL, *out_alloc = NULL;
    const char *out;
    size_t info_start = 0, info_len = 0;
    uint32_t plen, n_pieces;
    bool multi = false;
    int rc = CTL_EXIT_FAILURE, r;

    buf_init(&b, meta_limits_default.max_input);
    r = parse_args(ctx, argc, argv, &o);
    if (r != 0) {
        rc = r < 0 ? CTL_EXIT_OK : r;
        goto out;
    }

    name = o.name ? strdup(o.name) : default_name(o.path);
    if (!name) {
        ctl_err("cannot name a torrent for '%s': %s", o.path,
                strerror(errno ? errno : EINVAL));
        goto out;
    }
    out = o.out;
    if (!out) {
        if (asprintf(&out_alloc, "%s.torrent", name) < 0) {
            ctl_err("out of memory");
            goto out;
        }
        out = out_alloc;
    }
    if (!o.force && strcmp(out, "-") != 0 && access(out, F_OK) == 0) {
        ctl_err("'%s' already exists (use --force to replace it)", out);
        goto out;
    }

    if (list_files(&fl, o.path, &multi) < 0)
        goto out;
    if (fl.total == 0) {
        ctl_err("'%s' holds no data: every file is empty", o.path);
        goto out;
    }
    plen = o.piece_size ? o.piece_size : auto_piece_size(fl.total);
    if ((fl.total + plen - 1) / plen > UINT32_MAX) {
        ctl_err("too many pieces: use a larger --piece-size");
        goto out;
    }
    n_pieces = meta_piece_count(fl.total, plen);
    if ((uint64_t)n_pieces * META_HASH_LEN >= meta_limits_default.max_input) {
        ctl_err("the torrent would be too large (%" PRIu32 " pieces): use a "
                "larger --piece-size", n_pieces);
        goto out;
    }

    if (hash_all(&fl, plen, n_pieces, o.threads ? o.threads : online_cpus(),
                 "hashing", &pieces) < 0)
        goto out;

    r = encode_torrent(&b, &o, &fl, multi, name, plen, pieces, n_pieces,
                       creation_date(&o), &info_start, &info_len);
    if (r < 0) {
        ctl_err("cannot encode the torrent: %s", r == -EMSGSIZE
                ? "it would be larger than the limit of a .torrent file"
                : strerror(-r));
        goto out;
    }
    /* Check what we made with the parser the daemon uses: a torrent that
     * torrentd would refuse is not written. */
    memset(&ei, 0, sizeof(ei));
    r = meta_parse(&mi, b.data, b.len, NULL, &ei);
    if (r < 0) {
        ctl_err("cannot make a valid torrent of '%s': %s%s%s", o.path,
                meta_strerror(r), ei.detail[0] ? ": " : "", ei.detail);
        goto out;
    }
    if (EVP_Digest(b.data + info_start, info_len, ih, NULL, EVP_sha1(),
                   NULL) != 1) {
        ctl_err("SHA-1 failed (OpenSSL)");
        goto out;
    }
    hex_encode(hexih, ih, sizeof(ih));

    if (write_output(out, &b, o.force) < 0)
        goto out;

    if (ctx->json) {
        struct json_object *j = json_object_new_object();

        if (!j) {
            ctl_err("out of memory");
            goto out;
        }
        json_object_object_add(j, "path", ctl_json_string(out));
        json_object_object_add(j, "name", ctl_json_string(name));
        json_object_object_add(j, "info_hash", json_object_new_string(hexih));
        json_object_object_add(j, "size_bytes",
                               json_object_new_int64((int64_t)fl.total));
        json_object_object_add(j, "piece_size", json_object_new_int64(plen));
        json_object_object_add(j, "piece_count",
                               json_object_new_int64(n_pieces));
        json_object_object_add(j, "file_count",
                               json_object_new_int64((int64_t)fl.n));
        json_object_object_add(j, "private",
                               json_object_new_boolean(o.private_flag));
        /* With -o - the torrent itself is on stdout. */
        if (strcmp(out, "-") != 0 && ctl_json_print(j) < 0) {
            json_object_put(j);
            goto out;
        }
        json_object_put(j);
    } else if (strcmp(out, "-") != 0) {
        char sz[CTL_SIZE_LEN], ps[CTL_SIZE_LEN];

        ctl_human_size(sz, fl.total);
        ctl_human_size(ps, plen);
        fputs("created ", stdout);
        ctl_fputs_safe(out, stdout);
        printf("\n  name       ");
        ctl_fputs_safe(name, stdout);
        printf("\n  info-hash  %s\n  size       %s in %zu file%s\n"
               "  pieces     %" PRIu32 " x %s\n",
               hexih, sz, fl.n, fl.n == 1 ? "" : "s", n_pieces, ps);
    }
    rc = CTL_EXIT_OK;
out:
    meta_free(mi);
    free(pieces);
    free(name);
    free(out_alloc);
    free(o.trackers);
    free(o.seeds);
    files_release(&fl);
    buf_release(&b);
    return rc;
}
