/* move — a torrent's files from one download directory to another.  See
 * move.h for the contract; this file: safe opening below a root, moving
 * one file (rename, or copy then unlink), the look before, the way back.
 */
#include "daemon/move.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/metainfo.h"

#define MOVE_DIR_MODE 0755

enum move_how { MOVE_NOT_THERE, MOVE_PENDING, MOVE_RENAMED, MOVE_COPIED };

/* ---- pure helpers ---------------------------------------------------- */

int
move_dir_normalize(const char *dir, char *ret, size_t n)
{
    if (!dir || dir[0] != '/')
        return -EINVAL;
    size_t len = strlen(dir);
    if (len >= MOVE_DIR_MAX)
        return -ENAMETOOLONG;
    char out[MOVE_DIR_MAX];
    size_t k = 0;
    const char *p = dir;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t c = e ? (size_t)(e - p) : strlen(p);
        if (c == 2 && p[0] == '.' && p[1] == '.')
            return -EINVAL;
        if (c == 1 && p[0] == '.') {
            p++;
            continue;
        }
        out[k++] = '/';
        memcpy(out + k, p, c);
        k += c;
        p += c;
    }
    if (k == 0)
        out[k++] = '/';
    out[k] = '\0';
    if (k + 1 > n)
        return -ENAMETOOLONG;
    memcpy(ret, out, k + 1);
    return (int)k;
}

bool
move_file_moves(const struct meta_info *meta, size_t i)
{
    return !(meta->files[i].attr & (META_ATTR_PAD | META_ATTR_SYMLINK));
}

struct move_job *
move_job_new(const struct meta_info *meta, const char *from, const char *to,
             bool move_data)
{
    struct move_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->meta = meta;
    j->move_data = move_data;
    j->from = strdup(from);
    j->to = strdup(to);
    if (!j->from || !j->to) {
        move_job_free(j);
        return NULL;
    }
    return j;
}

void
move_job_free(struct move_job *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n_made; i++)
        free(j->made[i]);
    free(j->made);
    free(j->from);
    free(j->to);
    free(j);
}

void
move_job_cancel(struct move_job *j)
{
    atomic_store(&j->cancel, true);
}

/* Is the job cancelled (the test hooks set it first when their point is
 * reached)?  copying: bytes of the current file copied so far. */
static bool
cancelled(struct move_job *j, uint64_t copying)
{
    if ((j->cancel_after && j->renamed + j->copied >= j->cancel_after) ||
        (j->cancel_after_bytes &&
         j->copied_bytes + copying >= j->cancel_after_bytes))
        atomic_store(&j->cancel, true);
    return atomic_load(&j->cancel);
}

/* Remember dir (a path below `to`, n bytes of it) as made by this move;
 * out of memory only leaves it behind after a failure. */
static void
made_dir(struct move_job *j, const char *dir, size_t n)
{
    char **v = realloc(j->made, (j->n_made + 1) * sizeof(*v));
    if (!v)
        return;
    j->made = v;
    if ((v[j->n_made] = strndup(dir, n)) != NULL)
        j->n_made++;
}

static int fail(struct move_job *j, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(struct move_job *j, int r, const char *fmt, ...)
{
    if (j->error[0])
        return r; /* the first failure is the one to tell */
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(j->error, sizeof(j->error), fmt, ap);
    va_end(ap);
    return r;
}

/* ---- safe opening ---------------------------------------------------- */

/* Open the directory that holds rel (a torrent file's path) below rootfd,
 * one component at a time, never following a symlink; with mkdirs,
 * create what is missing (and, with made, note each one it created in
 * made->made).  *ret_base points at rel's last component.  Returns an fd
 * (O_RDONLY | O_DIRECTORY, a dup of rootfd when rel has no directory) or
 * -errno. */
static int
open_parent(int rootfd, const char *rel, bool mkdirs, struct move_job *made,
            const char **ret_base)
{
    char comp[NAME_MAX + 1];
    int dfd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return -errno;
    const char *p = rel;
    for (;;) {
        const char *slash = strchr(p, '/');
        if (!slash)
            break;
        size_t n = (size_t)(slash - p);
        if (n == 0 || n > NAME_MAX) {
            (void)close(dfd);
            return -EINVAL;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        int nfd =
            openat(dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT && mkdirs) {
            if (mkdirat(dfd, comp, MOVE_DIR_MODE) == 0) {
                if (made)
                    made_dir(made, rel, (size_t)(slash - rel));
            } else if (errno != EEXIST) {
                int r = -errno;
                (void)close(dfd);
                return r;
            }
            nfd = openat(dfd, comp,
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        int r = nfd < 0 ? -errno : 0;
        (void)close(dfd);
        if (r < 0)
            return r;
        dfd = nfd;
        p = slash + 1;
    }
    *ret_base = p;
    return dfd;
}

/* Stat rel below rootfd without following symlinks.  Returns 0, or -errno
 * (-ENOENT also when a directory on the way is missing). */
static int
stat_beneath(int rootfd, const char *rel, struct stat *st)
{
    const char *base;
    int dfd = open_parent(rootfd, rel, false, NULL, &base);
    if (dfd < 0)
        return dfd;
    int r = fstatat(dfd, base, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    (void)close(dfd);
    return r;
}

/* Remove rel's directories below rootfd, deepest first, while empty (the
 * source's, after the move: only the torrent's paths are looked at). */
static void
remove_empty_parents(int rootfd, const char *rel)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof(p), "%s", rel) >= (int)sizeof(p))
        return;
    char *s;
    while ((s = strrchr(p, '/')) != NULL) {
        *s = '\0';
        const char *base;
        int dfd = open_parent(rootfd, p, false, NULL, &base);
        if (dfd < 0)
            return;
        int r = unlinkat(dfd, base, AT_REMOVEDIR);
        (void)close(dfd);
        if (r < 0)
            return;
    }
}

/* After a failure: remove the directories below `to` that this move made
 * and that are empty again, deepest first (the reverse of their making);
 * one that holds something (a file that could not move back, or the
 * user's) stays. */
static void
remove_made(struct move_job *j, int tofd)
{
    for (size_t i = j->n_made; i-- > 0;) {
        const char *base;
        int dfd = open_parent(tofd, j->made[i], false, NULL, &base);
        if (dfd < 0)
            continue;
        (void)unlinkat(dfd, base, AT_REMOVEDIR);
        (void)close(dfd);
    }
}

/* mkdir -p, following symlinks: the download directory is the user's. */
static int
mkdir_parents(const char *dir)
{
    char p[MOVE_DIR_MAX];
    if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
        return -ENAMETOOLONG;
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, MOVE_DIR_MODE) < 0 && errno != EEXIST)
            return -errno;
        p[i] = c;
    }
    return 0;
}

/* ---- one file -------------------------------------------------------- */

/* Rename sname (in sfd) to dname (in dfd), never replacing a file there
 * (-EEXIST).  On a filesystem without RENAME_NOREPLACE (EINVAL) a hard
 * link, which refuses an existing name too, then the old name unlinked.
 * -EXDEV: not one filesystem (the caller copies). */
static int
rename_noreplace(int sfd, const char *sname, int dfd, const char *dname)
{
    if (renameat2(sfd, sname, dfd, dname, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL)
        return -errno;
    if (linkat(sfd, sname, dfd, dname, 0) < 0)
        return -errno;
    if (unlinkat(sfd, sname, 0) < 0) {
        int r = -errno;
        (void)unlinkat(dfd, dname, 0); /* the link just made: ours */
        return r;
    }
    return 0;
}

/* Write k bytes of buf to out at off. */
static int
pwrite_all(int out, const char *buf, size_t k, off_t off)
{
    for (size_t o = 0; o < k;) {
        ssize_t w = pwrite(out, buf + o, k - o, off + (off_t)o);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        o += (size_t)w;
    }
    return 0;
}

/* Copy in (size bytes) to out keeping its holes: only the data extents
 * (SEEK_DATA/SEEK_HOLE; all of it where the filesystem does not tell) are
 * copied, at their offsets, by copy_file_range (pread/pwrite where that
 * is refused) in steps of at most j->copy_chunk bytes; then out gets in's
 * size.  With cancellable, a cancelled job stops between steps
 * (-ECANCELED).  *ret_bytes: the data bytes copied. */
static int
copy_data(struct move_job *j, int in, int out, off_t size, bool cancellable,
          uint64_t *ret_bytes)
{
    size_t chunk = j->copy_chunk ? j->copy_chunk : MOVE_COPY_CHUNK;
    bool plain = false, sparse = true;
    char *buf = NULL;
    uint64_t total = 0;
    off_t pos = 0;
    int r = 0;
    while (pos < size && r == 0) {
        off_t data = pos, hole = size;
        if (sparse) {
            data = lseek(in, pos, SEEK_DATA);
            if (data < 0 && errno == ENXIO)
                break; /* a hole to the end */
            if (data < 0) {
                sparse = false; /* not supported: all of it is data */
                data = pos;
            } else if ((hole = lseek(in, data, SEEK_HOLE)) < 0) {
                r = -errno;
                break;
            }
            if (hole > size)
                hole = size;
        }
        while (data < hole) {
            if (cancellable && cancelled(j, total)) {
                r = -ECANCELED;
                break;
            }
            size_t want =
                (uint64_t)(hole - data) < chunk ? (size_t)(hole - data) : chunk;
            ssize_t k;
            if (!plain) {
                loff_t io = data, oo = data;
                k = copy_file_range(in, &io, out, &oo, want, 0);
                if (k < 0 && (errno == EXDEV || errno == ENOSYS ||
                              errno == EOPNOTSUPP || errno == EINVAL)) {
                    plain = true;
                    continue;
                }
            } else {
                if (!buf && !(buf = malloc(MOVE_COPY_BUF))) {
                    r = -ENOMEM;
                    break;
                }
                k = pread(in, buf, want < MOVE_COPY_BUF ? want : MOVE_COPY_BUF,
                          data);
                if (k > 0 && (r = pwrite_all(out, buf, (size_t)k, data)) < 0)
                    break;
            }
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                r = -errno;
                break;
            }
            if (k == 0) {
                r = -EIO; /* shorter than it was: nobody should write it */
                break;
            }
            data += k;
            total += (uint64_t)k;
        }
        pos = hole;
    }
    if (r == 0 && ftruncate(out, size) < 0)
        r = -errno;
    free(buf);
    *ret_bytes = total;
    return r;
}

/* The file to copy into, in dfd: unnamed (O_TMPFILE; tmp[0] = '\0'), or
 * where the filesystem has no such thing, a new name
 * ".torrentd-move.<index>.<k>" made with O_EXCL (never someone else's
 * file), written to tmp.  Returns the fd or -errno. */
static int
open_copy(int dfd, size_t index, mode_t mode, char *tmp, size_t n)
{
    tmp[0] = '\0';
    int fd = openat(dfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
    if (fd >= 0)
        return fd;
    if (errno != EOPNOTSUPP && errno != EISDIR)
        return -errno;
    for (unsigned k = 0; k < 1000; k++) {
        (void)snprintf(tmp, n, ".torrentd-move.%zu.%u", index, k);
        fd = openat(dfd, tmp,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            break;
    }
    int r = -errno;
    tmp[0] = '\0';
    return r;
}

/* Give the copy (fd out; named tmp in dfd, or unnamed) the name dname in
 * dfd, never replacing one. */
static int
name_copy(int out, int dfd, const char *tmp, const char *dname)
{
    if (tmp[0])
        return rename_noreplace(dfd, tmp, dfd, dname);
    if (linkat(out, "", dfd, dname, AT_EMPTY_PATH) == 0)
        return 0;
    if (errno != ENOENT && errno != EPERM)
        return -errno;
    /* Without CAP_DAC_READ_SEARCH: the way open(2) gives. */
    char p[64];
    (void)snprintf(p, sizeof(p), "/proc/self/fd/%d", out);
    return linkat(AT_FDCWD, p, dfd, dname, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
}

/* Move rel from fromfd to tofd.  back: the way back after a failure
 * (neither the test failure nor a cancel stops it; directories made are
 * not noted).  *ret_how: MOVE_RENAMED or MOVE_COPIED.  On failure rel is
 * still whole at its source and nothing of it is at the destination;
 * *ret_op names what failed. */
static int
move_one(struct move_job *j, int fromfd, int tofd, const char *rel,
         size_t index, bool copy, bool back, enum move_how *ret_how,
         const char **ret_op)
{
    const char *sbase, *dbase;
    int in = -1, out = -1, r;
    char tmp[64] = "";
    *ret_op = "open the source directory of";
    int sfd = open_parent(fromfd, rel, false, NULL, &sbase);
    if (sfd < 0)
        return sfd;
    *ret_op = "create the directory of";
    int dfd = open_parent(tofd, rel, true, back ? NULL : j, &dbase);
    if (dfd < 0) {
        r = dfd;
        goto out;
    }
    if (!copy) {
        *ret_op = "rename";
        r = rename_noreplace(sfd, sbase, dfd, dbase);
        if (r != -EXDEV) {
            if (r == 0) {
                (void)fsync(dfd);
                (void)fsync(sfd);
                *ret_how = MOVE_RENAMED;
            }
            goto out;
        }
    }
    struct stat st;
    *ret_op = "open";
    in = openat(sfd, sbase, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) < 0) {
        r = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = -EINVAL;
        goto out;
    }
    *ret_op = "create a copy of";
    out = open_copy(dfd, index, st.st_mode & 07777, tmp, sizeof(tmp));
    if (out < 0) {
        r = out;
        goto out;
    }
    uint64_t bytes = 0;
    *ret_op = "copy";
    if (!back && j->fail_after && j->renamed + j->copied >= j->fail_after)
        r = -ENOSPC;
    else
        r = copy_data(j, in, out, st.st_size, !back, &bytes);
    if (r == 0 && fdatasync(out) < 0)
        r = -errno;
    if (r == 0) {
        (void)fchmod(out, st.st_mode & 07777); /* less the umask at create */
        *ret_op = "give its name to the copy of";
        r = name_copy(out, dfd, tmp, dbase);
    }
    if (r < 0) {
        if (tmp[0])
            (void)unlinkat(dfd, tmp, 0); /* made with O_EXCL: ours */
        goto out;
    }
    (void)fsync(dfd);
    *ret_op = "remove the source of";
    if (unlinkat(sfd, sbase, 0) < 0) {
        /* The copy goes, the source stays: whole at its old place. */
        r = -errno;
        (void)unlinkat(dfd, dbase, 0);
        goto out;
    }
    (void)fsync(sfd);
    if (!back)
        j->copied_bytes += bytes;
    *ret_how = MOVE_COPIED;
out:
    if (in >= 0)
        (void)close(in);
    if (out >= 0)
        (void)close(out);
    if (dfd >= 0)
        (void)close(dfd);
    (void)close(sfd);
    return r;
}

/* ---- the job --------------------------------------------------------- */

/* Every file that is there may move, and nothing is in its way. */
static int
look(struct move_job *j, int fromfd, int tofd, enum move_how *how)
{
    const struct meta_info *m = j->meta;
    for (size_t i = 0; i < m->n_files; i++) {
        how[i] = MOVE_NOT_THERE;
        if (!move_file_moves(m, i))
            continue;
        const char *path = m->files[i].path;
        struct stat st;
        int r = stat_beneath(fromfd, path, &st);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            return fail(j, r, "cannot move '%s' from '%s': %s", path, j->from,
                        strerror(-r));
        if (!S_ISREG(st.st_mode))
            return fail(j, -EINVAL,
                        "cannot move '%s' from '%s': not a regular file", path,
                        j->from);
        r = stat_beneath(tofd, path, &st);
        if (r == 0)
            return fail(j, -EEXIST,
                        "'%s' exists in '%s' already: not overwriting it "
                        "(remove it, or use move=false if the data is there)",
                        path, j->to);
        if (r != -ENOENT)
            return fail(j, r, "cannot move '%s' to '%s': %s", path, j->to,
                        strerror(-r));
        how[i] = MOVE_PENDING;
    }
    return 0;
}

/* Put back what moved (files [0, upto) of how), the way it came, then
 * remove the directories below `to` the move made (empty again). */
static void
move_back(struct move_job *j, int fromfd, int tofd, enum move_how *how,
          size_t upto)
{
    const struct meta_info *m = j->meta;
    for (size_t i = upto; i-- > 0;) {
        if (how[i] != MOVE_RENAMED && how[i] != MOVE_COPIED)
            continue;
        const char *path = m->files[i].path, *op;
        enum move_how back;
        int r = move_one(j, tofd, fromfd, path, i, how[i] == MOVE_COPIED, true,
                         &back, &op);
        if (r < 0) {
            size_t len = strlen(j->error);
            (void)snprintf(j->error + len, sizeof(j->error) - len,
                           "; and cannot move '%s' back (it stays in '%s'): "
                           "cannot %s it: %s",
                           path, j->to, op, strerror(-r));
            j->split = true;
        }
    }
    remove_made(j, tofd);
}

int
move_run(void *arg)
{
    struct move_job *j = arg;
    const struct meta_info *m = j->meta;
    int fromfd = -1, tofd = -1, r;
    enum move_how *how = NULL;
    struct stat fs, ts;

    if (!j->move_data) {
        if (stat(j->to, &ts) < 0)
            return fail(j, -errno, "cannot use '%s': %s", j->to,
                        strerror(errno));
        if (!S_ISDIR(ts.st_mode))
            return fail(j, -ENOTDIR, "cannot use '%s': %s", j->to,
                        strerror(ENOTDIR));
        return 0;
    }
    if ((r = mkdir_parents(j->to)) < 0)
        return fail(j, r, "cannot create '%s': %s", j->to, strerror(-r));
    tofd = open(j->to, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tofd < 0 || fstat(tofd, &ts) < 0) {
        r = -errno;
        (void)fail(j, r, "cannot open '%s': %s", j->to, strerror(-r));
        goto out;
    }
    fromfd = open(j->from, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fromfd < 0 && errno == ENOENT) {
        r = 0; /* no data yet: nothing to move */
        goto out;
    }
    if (fromfd < 0 || fstat(fromfd, &fs) < 0) {
        r = -errno;
        (void)fail(j, r, "cannot open '%s': %s", j->from, strerror(-r));
        goto out;
    }
    if (fs.st_dev == ts.st_dev && fs.st_ino == ts.st_ino) {
        j->same = true;
        r = 0;
        goto out;
    }
    how = calloc(m->n_files ? m->n_files : 1, sizeof(*how));
    if (!how) {
        r = fail(j, -ENOMEM, "cannot move: out of memory");
        goto out;
    }
    if ((r = look(j, fromfd, tofd, how)) < 0)
        goto out;
    for (size_t i = 0; i < m->n_files; i++) {
        if (how[i] != MOVE_PENDING)
            continue;
        const char *op = NULL;
        enum move_how done = MOVE_PENDING;
        bool copy = j->force_copy ||
                    (j->fail_after && j->renamed + j->copied >= j->fail_after);
        if (cancelled(j, 0))
            r = -ECANCELED;
        else
            r = move_one(j, fromfd, tofd, m->files[i].path, i, copy, false,
                         &done, &op);
        if (r == -ECANCELED)
            (void)fail(j, r, "the move to '%s' was cancelled", j->to);
        if (r < 0) {
            (void)fail(j, r, "cannot move '%s' to '%s': cannot %s it: %s",
                       m->files[i].path, j->to, op, strerror(-r));
            move_back(j, fromfd, tofd, how, i);
            goto out;
        }
        how[i] = done;
        if (done == MOVE_RENAMED)
            j->renamed++;
        else
            j->copied++;
    }
    for (size_t i = 0; i < m->n_files; i++)
        if (how[i] == MOVE_RENAMED || how[i] == MOVE_COPIED)
            remove_empty_parents(fromfd, m->files[i].path);
    (void)fsync(fromfd);
    (void)fsync(tofd);
    r = 0;
out:
    free(how);
    if (fromfd >= 0)
        (void)close(fromfd);
    if (tofd >= 0)
        (void)close(tofd);
    return r;
}
