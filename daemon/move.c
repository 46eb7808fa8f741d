/* move — a torrent's files from one download directory to another.  See
 * move.h for the contract; this file: safe opening below a root, moving
 * one file (rename, or copy then unlink), the look before, the way back.
 */
#include "daemon/move.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
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
    free(j->from);
    free(j->to);
    free(j);
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
 * create what is missing.  *ret_base points at rel's last component.
 * Returns an fd (O_RDONLY | O_DIRECTORY, a dup of rootfd when rel has no
 * directory) or -errno. */
static int
open_parent(int rootfd, const char *rel, bool mkdirs, const char **ret_base)
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
            if (mkdirat(dfd, comp, MOVE_DIR_MODE) < 0 && errno != EEXIST) {
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
    int dfd = open_parent(rootfd, rel, false, &base);
    if (dfd < 0)
        return dfd;
    int r = fstatat(dfd, base, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    (void)close(dfd);
    return r;
}

/* Remove rel's directories below rootfd, deepest first, while empty. */
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
        int dfd = open_parent(rootfd, p, false, &base);
        if (dfd < 0)
            return;
        int r = unlinkat(dfd, base, AT_REMOVEDIR);
        (void)close(dfd);
        if (r < 0)
            return;
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

/* Give tmp (in dfd) the name base, never replacing one. */
static int
rename_noreplace(int sfd, const char *sname, int dfd, const char *dname)
{
    if (renameat2(sfd, sname, dfd, dname, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL)
        return -errno;
    /* A filesystem without RENAME_NOREPLACE: a hard link refuses an
     * existing name too. */
    if (linkat(sfd, sname, dfd, dname, 0) < 0)
        return -errno;
    (void)unlinkat(sfd, sname, 0);
    return 0;
}

static int
copy_data(int in, int out, uint64_t *ret_bytes)
{
    bool plain = false;
    char *buf = NULL;
    uint64_t total = 0;
    int r = 0;
    for (;;) {
        ssize_t k;
        if (!plain) {
            k = copy_file_range(in, NULL, out, NULL, 1u << 30, 0);
            if (k < 0 && total == 0 &&
                (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
                 errno == EINVAL)) {
                plain = true;
                continue;
            }
        } else {
            if (!buf && !(buf = malloc(MOVE_COPY_BUF))) {
                r = -ENOMEM;
                break;
            }
            k = read(in, buf, MOVE_COPY_BUF);
            for (ssize_t w = 0, o = 0; k > 0 && o < k; o += w) {
                w = write(out, buf + o, (size_t)(k - o));
                if (w < 0) {
                    if (errno == EINTR) {
                        w = 0;
                        continue;
                    }
                    k = -1;
                    break;
                }
            }
        }
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        if (k == 0)
            break;
        total += (uint64_t)k;
    }
    free(buf);
    *ret_bytes = total;
    return r;
}

/* Move rel from fromfd to tofd.  *ret_how: MOVE_RENAMED or MOVE_COPIED.
 * On failure rel is still whole at its source and nothing of it is at the
 * destination; *ret_op names what failed. */
static int
move_one(struct move_job *j, int fromfd, int tofd, const char *rel,
         size_t index, bool copy, enum move_how *ret_how, const char **ret_op)
{
    const char *sbase, *dbase;
    int in = -1, out = -1, r;
    char tmp[64];
    *ret_op = "open the source directory of";
    int sfd = open_parent(fromfd, rel, false, &sbase);
    if (sfd < 0)
        return sfd;
    *ret_op = "create the directory of";
    int dfd = open_parent(tofd, rel, true, &dbase);
    if (dfd < 0) {
        r = dfd;
        goto out;
    }
    if (!copy) {
        *ret_op = "rename";
        r = renameat2(sfd, sbase, dfd, dbase, RENAME_NOREPLACE) < 0 ? -errno
                                                                    : 0;
        if (r == -EINVAL || r == -EXDEV) {
            copy = true;
        } else {
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
    snprintf(tmp, sizeof(tmp), ".torrentd-move.%zu", index);
    (void)unlinkat(dfd, tmp, 0); /* left by a crash in an earlier move */
    *ret_op = "create a copy of";
    out = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                 st.st_mode & 07777);
    if (out < 0) {
        r = -errno;
        goto out;
    }
    uint64_t bytes = 0;
    *ret_op = "copy";
    if (j->fail_after && j->renamed + j->copied >= j->fail_after)
        r = -ENOSPC;
    else
        r = copy_data(in, out, &bytes);
    if (r == 0 && fdatasync(out) < 0)
        r = -errno;
    if (r == 0) {
        (void)fchmod(out, st.st_mode & 07777); /* less the umask at create */
        *ret_op = "give its name to the copy of";
        r = rename_noreplace(dfd, tmp, dfd, dbase);
    }
    if (r < 0) {
        (void)unlinkat(dfd, tmp, 0);
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

/* Put back what moved (files [0, upto) of how), the way it came. */
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
        size_t keep = j->fail_after;
        j->fail_after = 0;
        int r = move_one(j, tofd, fromfd, path, i, how[i] == MOVE_COPIED, &back,
                         &op);
        j->fail_after = keep;
        if (r < 0) {
            size_t len = strlen(j->error);
            (void)snprintf(j->error + len, sizeof(j->error) - len,
                           "; and cannot move '%s' back (it stays in '%s'): "
                           "cannot %s it: %s",
                           path, j->to, op, strerror(-r));
            j->split = true;
            continue;
        }
        remove_empty_parents(tofd, path);
    }
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
        const char *op;
        enum move_how done = MOVE_PENDING;
        bool copy = j->force_copy ||
                    (j->fail_after && j->renamed + j->copied >= j->fail_after);
        r = move_one(j, fromfd, tofd, m->files[i].path, i, copy, &done, &op);
        if (r < 0) {
            (void)fail(j, r, "cannot move '%s' to '%s': cannot %s it: %s",
                       m->files[i].path, j->to, op, strerror(-r));
            remove_empty_parents(tofd, m->files[i].path);
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
