/* Unit tests for daemon/storage: the pure map (pieces across files,
 * zero-length and pad files), then real I/O in a temp directory under
 * /tmp: single- and multi-file torrents written out of order from several
 * threads and read back, pad files never on disk, zero-length files, fd
 * cache eviction, files deleted underneath, errors root can hit (ENOTDIR,
 * EISDIR), planted symlinks (with openat2 and with the openat walk),
 * delete_data, flush, sendfile spans, modes, preallocation and the
 * allocation ahead of the writes on ext4. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/metainfo.h"
#include "daemon/storage.h"

static char tmpdir[256];

/* ---- helpers --------------------------------------------------------- */

struct tfile {
    const char *path;
    uint64_t length;
    unsigned attr;
};

static struct meta_info *
make_info(uint32_t piece_length, const struct tfile *tf, size_t n)
{
    struct meta_info *info = calloc(1, sizeof(*info));
    assert_non_null(info);
    info->files = calloc(n, sizeof(*info->files));
    assert_non_null(info->files);
    info->n_files = n;
    info->name = strdup(tf[0].path);
    info->multi_file = strchr(tf[0].path, '/') != NULL;
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        info->files[i].path = strdup(tf[i].path);
        assert_non_null(info->files[i].path);
        info->files[i].length = tf[i].length;
        info->files[i].offset = off;
        info->files[i].attr = tf[i].attr;
        off += tf[i].length;
    }
    info->total_size = off;
    info->piece_length = piece_length;
    info->n_pieces = meta_piece_count(off, piece_length);
    return info;
}

static uint8_t
pattern(uint64_t off)
{
    return (uint8_t)((off * 2654435761u) >> 13);
}

/* What a read of [off, off + len) must give: the pattern, zeros in pad
 * files. */
static void
expected(const struct meta_info *info, uint64_t off, uint8_t *p, size_t len)
{
    for (size_t k = 0; k < len; k++) {
        uint64_t o = off + k;
        bool pad = false;
        for (size_t i = 0; i < info->n_files; i++) {
            const struct meta_file *f = &info->files[i];
            if (o >= f->offset && o < f->offset + f->length) {
                pad = (f->attr & META_ATTR_PAD) != 0;
                break;
            }
        }
        p[k] = pad ? 0 : pattern(o);
    }
}

static void
fill(uint64_t off, uint8_t *p, size_t len)
{
    for (size_t k = 0; k < len; k++)
        p[k] = pattern(off + k);
}

static void
make_dir(char *out, size_t n, const char *name)
{
    int k = snprintf(out, n, "%s/%s", tmpdir, name);
    assert_true(k > 0 && (size_t)k < n);
    assert_int_equal(mkdir(out, 0755), 0);
}

static bool
exists(const char *dir, const char *rel)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    struct stat sb;
    return lstat(p, &sb) == 0;
}

static int
file_stat(const char *dir, const char *rel, struct stat *sb)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    return lstat(p, sb) < 0 ? -errno : 0;
}

/* Bytes of disk a file holds. */
static uint64_t
disk_bytes(const char *dir, const char *rel)
{
    struct stat sb;
    assert_int_equal(file_stat(dir, rel, &sb), 0);
    return (uint64_t)sb.st_blocks * 512;
}

/* Where storage allocates ahead of the writes (storage.h). */
static bool
on_ext4(const char *dir)
{
    struct statfs sfs;
    assert_int_equal(statfs(dir, &sfs), 0);
    return sfs.f_type == EXT4_SUPER_MAGIC;
}

static void
write_file(const char *dir, const char *rel, const char *text)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void
check_file_text(const char *dir, const char *rel, const char *text)
{
    char p[1024], got[256];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t n = read(fd, got, sizeof(got) - 1);
    close(fd);
    assert_true(n >= 0);
    got[n] = '\0';
    assert_string_equal(got, text);
}

static size_t
count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static size_t
count_fds(void)
{
    return count_entries("/proc/self/fd");
}

/* ---- map ------------------------------------------------------------- */

struct span_log {
    struct storage_span s[16];
    size_t n;
    int stop_at; /* return 7 at this span, or -1 */
};

static int
log_span(void *arg, const struct storage_span *sp)
{
    struct span_log *l = arg;
    assert_true(l->n < 16);
    l->s[l->n] = *sp;
    if ((int)l->n++ == l->stop_at)
        return 7;
    return 0;
}

static const struct tfile map_files[] = {
    {"t/a", 100, 0},                  /* 0: [0, 100) */
    {"t/empty", 0, 0},                /* 1: no bytes */
    {"t/.pad/28", 28, META_ATTR_PAD}, /* 2: [100, 128) */
    {"t/b", 50, 0},                   /* 3: [128, 178) */
    {"t/empty2", 0, 0},               /* 4 */
    {"t/empty3", 0, 0},               /* 5 */
    {"t/c", 10, 0},                   /* 6: [178, 188) */
    {"t/end", 0, 0},                  /* 7: at the end */
};

static void
test_map(void **state)
{
    (void)state;
    struct meta_info *info = make_info(64, map_files, 8);
    assert_int_equal(info->total_size, 188);
    static const struct {
        uint64_t off, len;
        size_t n;
        struct storage_span s[4];
    } cases[] = {
        {0, 10, 1, {{0, 0, 10, 0}}},
        {90,
         100 - 90 + 28 + 50 + 10,
         4,
         {{0, 90, 10, 0}, {2, 0, 28, 10}, {3, 0, 50, 38}, {6, 0, 10, 88}}},
        {100, 28, 1, {{2, 0, 28, 0}}}, /* a pad range alone */
        {127, 2, 2, {{2, 27, 1, 0}, {3, 0, 1, 1}}},
        {128, 64, 0, {{0}}}, /* past the end: -EINVAL */
        {170, 18, 2, {{3, 42, 8, 0}, {6, 0, 10, 8}}},
        {187, 1, 1, {{6, 9, 1, 0}}},
        {0,
         188,
         4,
         {{0, 0, 100, 0}, {2, 0, 28, 100}, {3, 0, 50, 128}, {6, 0, 10, 178}}},
        /* piece 2 of 64-byte pieces: [128, 188) */
        {128, 60, 2, {{3, 0, 50, 0}, {6, 0, 10, 50}}},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct span_log l = {.stop_at = -1};
        int r = storage_map(info, cases[c].off, cases[c].len, log_span, &l);
        if (cases[c].n == 0) {
            assert_int_equal(r, -EINVAL);
            assert_int_equal(l.n, 0);
            continue;
        }
        assert_int_equal(r, 0);
        assert_int_equal(l.n, cases[c].n);
        for (size_t k = 0; k < l.n; k++) {
            assert_int_equal(l.s[k].file, cases[c].s[k].file);
            assert_int_equal(l.s[k].file_offset, cases[c].s[k].file_offset);
            assert_int_equal(l.s[k].length, cases[c].s[k].length);
            assert_int_equal(l.s[k].data_offset, cases[c].s[k].data_offset);
        }
    }
    /* Empty ranges, ranges outside, overflow, a callback that stops. */
    struct span_log l = {.stop_at = -1};
    assert_int_equal(storage_map(info, 0, 0, log_span, &l), 0);
    assert_int_equal(storage_map(info, 188, 0, log_span, &l), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(storage_map(info, 189, 0, log_span, &l), -EINVAL);
    assert_int_equal(storage_map(info, 1, UINT64_MAX, log_span, &l), -EINVAL);
    assert_int_equal(storage_map(info, UINT64_MAX, 2, log_span, &l), -EINVAL);
    l.stop_at = 1;
    assert_int_equal(storage_map(info, 0, 188, log_span, &l), 7);
    assert_int_equal(l.n, 2);
    meta_free(info);

    /* Single file. */
    static const struct tfile one[] = {{"one.bin", 1000, 0}};
    info = make_info(256, one, 1);
    l = (struct span_log){.stop_at = -1};
    assert_int_equal(storage_map(info, 768, 232, log_span, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.s[0].file, 0);
    assert_int_equal(l.s[0].file_offset, 768);
    assert_int_equal(l.s[0].length, 232);
    assert_int_equal(storage_map(info, 768, 233, log_span, &l), -EINVAL);
    meta_free(info);
}

/* ---- single file ----------------------------------------------------- */

static void
test_single_file(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "single");
    static const struct tfile one[] = {{"one.bin", 16384 * 10 + 5000, 0}};
    struct meta_info *info = make_info(16384, one, 1);
    assert_int_equal(info->n_pieces, 11);
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    assert_false(storage_have_file(st, 0));
    uint64_t size;
    assert_int_equal(storage_file_size(st, 0, &size), -ENOENT);

    /* A read before anything exists: -ENOENT, nothing created. */
    uint8_t buf[16384], want[16384];
    assert_int_equal(storage_read(st, 0, buf, 10), -ENOENT);
    assert_false(exists(dir, "one.bin"));
    struct storage_error e;
    assert_int_equal(storage_get_error(st, &e), -ENOENT);
    assert_int_equal(e.file, 0);
    assert_string_equal(e.path, "one.bin");
    storage_clear_error(st);
    assert_int_equal(storage_get_error(st, &e), 0);

    /* Pieces backwards. */
    for (uint32_t i = info->n_pieces; i-- > 0;) {
        uint32_t len = meta_piece_size(info, i);
        fill((uint64_t)i * 16384, buf, len);
        assert_int_equal(storage_write(st, (uint64_t)i * 16384, buf, len), 0);
    }
    assert_int_equal(storage_flush(st), 0);
    assert_int_equal(storage_file_size(st, 0, &size), 0);
    assert_int_equal(size, info->total_size);
    assert_true(storage_have_file(st, 0));
    for (uint32_t i = 0; i < info->n_pieces; i++) {
        int len = storage_read_piece(st, i, buf);
        assert_int_equal(len, meta_piece_size(info, i));
        fill((uint64_t)i * 16384, want, (size_t)len);
        assert_memory_equal(buf, want, (size_t)len);
    }
    assert_int_equal(storage_read_piece(st, 11, buf), -EINVAL);
    /* Outside the torrent: -EINVAL, not recorded. */
    assert_int_equal(storage_write(st, info->total_size - 1, buf, 2), -EINVAL);
    assert_int_equal(storage_read(st, info->total_size, buf, 1), -EINVAL);
    assert_int_equal(storage_get_error(st, &e), 0);
    storage_close(st);
    assert_int_equal(storage_open_fds(), 0);
    storage_close(NULL);
    assert_int_equal(storage_open(&st, info, "", 0), -EINVAL);
    meta_free(info);
}

/* ---- many threads, multi-file ---------------------------------------- */

#define N_MANY 20
#define N_THREADS 4
#define BLOCK 16384

static struct meta_info *
make_multi(void)
{
    static char names[N_MANY][32];
    struct tfile tf[8 + N_MANY];
    size_t n = 0;
    tf[n++] = (struct tfile){"t/a.bin", 50000, 0};
    tf[n++] = (struct tfile){"t/.pad/15536", 15536, META_ATTR_PAD};
    tf[n++] = (struct tfile){"t/empty", 0, 0};
    tf[n++] = (struct tfile){"t/sub/b.bin", 100000, META_ATTR_EXEC};
    tf[n++] = (struct tfile){"t/sub/deep/c.bin", 7, 0};
    for (int i = 0; i < N_MANY; i++) {
        snprintf(names[i], sizeof(names[i]), "t/many/f%02d", i);
        tf[n++] = (struct tfile){names[i], 3000u + 101u * (unsigned)i, 0};
    }
    tf[n++] = (struct tfile){"t/.pad/x", 1000, META_ATTR_PAD};
    tf[n++] = (struct tfile){"t/z.bin", 70001, 0};
    tf[n++] = (struct tfile){"t/end-empty", 0, 0};
    return make_info(32768, tf, n);
}

struct worker_arg {
    struct storage *st;
    const struct meta_info *info;
    const uint32_t *order;
    int t;
    int result;
};

/* Write this thread's pieces, each as blocks in reverse order, each block
 * with writev from two buffers. */
static void *
writer(void *p)
{
    struct worker_arg *a = p;
    uint8_t *blk = malloc(BLOCK);
    a->result = 0;
    for (uint32_t k = (uint32_t)a->t; k < a->info->n_pieces && a->result == 0;
         k += N_THREADS) {
        uint32_t piece = a->order[k];
        uint64_t base = (uint64_t)piece * a->info->piece_length;
        uint32_t plen = meta_piece_size(a->info, piece);
        uint32_t nblk = (plen + BLOCK - 1) / BLOCK;
        for (uint32_t b = nblk; b-- > 0 && a->result == 0;) {
            uint64_t off = base + (uint64_t)b * BLOCK;
            size_t len = plen - b * BLOCK < BLOCK ? plen - b * BLOCK : BLOCK;
            fill(off, blk, len);
            size_t cut = len > 1000 ? 1000 : len / 2;
            struct iovec iov[2] = {{blk, cut}, {blk + cut, len - cut}};
            a->result = storage_writev(a->st, off, iov, 2);
        }
    }
    free(blk);
    return NULL;
}

static void *
reader(void *p)
{
    struct worker_arg *a = p;
    uint8_t *buf = malloc(a->info->piece_length);
    uint8_t *want = malloc(a->info->piece_length);
    a->result = 0;
    for (uint32_t k = (uint32_t)a->t; k < a->info->n_pieces && a->result == 0;
         k += N_THREADS) {
        uint32_t piece = a->order[k];
        int len = storage_read_piece(a->st, piece, buf);
        if (len < 0) {
            a->result = len;
            break;
        }
        expected(a->info, (uint64_t)piece * a->info->piece_length, want,
                 (size_t)len);
        if (memcmp(buf, want, (size_t)len) != 0)
            a->result = -EBADMSG;
    }
    free(buf);
    free(want);
    return NULL;
}

static void
run_threads(void *(*fn)(void *), struct storage *st,
            const struct meta_info *info, const uint32_t *order)
{
    pthread_t th[N_THREADS];
    struct worker_arg a[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        a[t] = (struct worker_arg){st, info, order, t, -1};
        assert_int_equal(pthread_create(&th[t], NULL, fn, &a[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(a[t].result, 0);
    }
}

static void
test_threads_multi_file(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "multi");
    struct meta_info *info = make_multi();
    uint32_t *order = malloc(info->n_pieces * sizeof(*order));
    for (uint32_t i = 0; i < info->n_pieces; i++)
        order[i] = i;
    srand(42);
    for (uint32_t i = info->n_pieces; i > 1; i--) { /* shuffle */
        uint32_t j = (uint32_t)rand() % i;
        uint32_t x = order[i - 1];
        order[i - 1] = order[j];
        order[j] = x;
    }
    storage_set_max_open(4); /* fewer than the files: evictions race */
    mode_t old = umask(022);
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    run_threads(writer, st, info, order);
    assert_true(storage_open_fds() <= 4);
    assert_int_equal(storage_flush(st), 0);
    assert_int_equal(storage_flush(st), 0); /* nothing left to sync */
    run_threads(reader, st, info, order);

    /* Pad files never on disk; zero-length files only on request. */
    assert_false(exists(dir, "t/.pad"));
    assert_false(exists(dir, "t/empty"));
    assert_false(exists(dir, "t/end-empty"));
    assert_false(storage_have_file(st, 2));
    assert_int_equal(storage_create_empty_files(st), 0);
    assert_int_equal(storage_create_empty_files(st), 0); /* again: fine */
    assert_int_equal(storage_flush(st), 0);
    struct stat sb;
    assert_int_equal(file_stat(dir, "t/empty", &sb), 0);
    assert_int_equal(sb.st_size, 0);
    assert_int_equal(file_stat(dir, "t/end-empty", &sb), 0);
    assert_false(exists(dir, "t/.pad"));
    for (size_t i = 0; i < info->n_files; i++)
        assert_true(storage_have_file(st, i));
    uint64_t size;
    assert_int_equal(storage_file_size(st, 1, &size), -ENOENT); /* pad */

    /* Modes: 0644, 'x' 0755, directories 0755 (umask 022). */
    assert_int_equal(file_stat(dir, "t/a.bin", &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0644);
    assert_int_equal(file_stat(dir, "t/sub/b.bin", &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0755);
    assert_int_equal(file_stat(dir, "t/sub/deep", &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0755);
    umask(old);

    /* The bytes on disk, file by file. */
    for (size_t i = 0; i < info->n_files; i++) {
        const struct meta_file *f = &info->files[i];
        if (f->attr & META_ATTR_PAD || f->length == 0)
            continue;
        char p[1024];
        snprintf(p, sizeof(p), "%s/%s", dir, f->path);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t *got = malloc(f->length), *want = malloc(f->length);
        assert_int_equal(read(fd, got, f->length), (ssize_t)f->length);
        close(fd);
        fill(f->offset, want, f->length);
        assert_memory_equal(got, want, f->length);
        free(got);
        free(want);
    }

    /* A fresh storage reads it all back too (read-only fds, then one
     * upgraded to writable by a write). */
    storage_close(st);
    assert_int_equal(storage_open_fds(), 0);
    assert_int_equal(storage_open(&st, info, dir, STORAGE_NO_OPENAT2), 0);
    run_threads(reader, st, info, order);
    uint8_t b[100];
    fill(10, b, sizeof(b));
    assert_int_equal(storage_write(st, 10, b, sizeof(b)), 0);
    uint8_t c[100];
    assert_int_equal(storage_read(st, 10, c, sizeof(c)), 0);
    assert_memory_equal(b, c, sizeof(b));
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);
    storage_set_max_open(STORAGE_MAX_OPEN);
    free(order);
    meta_free(info);
}

/* Mixed load on a cache of 2 fds: writers on the odd pieces, readers and
 * sendfile on the even ones (written before), a flusher, all at once:
 * read-only fds get replaced by writable ones while pinned, evictions
 * race with pins. */
struct mixed_arg {
    struct storage *st;
    const struct meta_info *info;
    int role; /* 0 writer, 1 reader, 2 flusher, 3 sendfile */
    int t;
    int result;
};

static int
discard_span(void *arg, int fd, uint64_t off, uint64_t len)
{
    uint8_t *want = arg;
    uint8_t got[256];
    if (fd < 0 || len > sizeof(got))
        return 0;
    if (pread(fd, got, (size_t)len, (off_t)off) != (ssize_t)len)
        return -EIO;
    return memcmp(got, want, (size_t)len) == 0 ? 0 : -EBADMSG;
}

static void *
mixed(void *p)
{
    struct mixed_arg *a = p;
    const struct meta_info *info = a->info;
    uint8_t *buf = malloc(info->piece_length);
    uint8_t *want = malloc(info->piece_length);
    a->result = 0;
    for (int round = 0; round < 3 && a->result == 0; round++) {
        for (uint32_t i = 0; i < info->n_pieces && a->result == 0; i++) {
            if ((i / 2) % 2 != (uint32_t)a->t) /* two threads per role */
                continue;
            uint64_t off = (uint64_t)i * info->piece_length;
            uint32_t len = meta_piece_size(info, i);
            if (a->role == 0 && i % 2 == 1) {
                fill(off, buf, len);
                a->result = storage_write(a->st, off, buf, len);
            } else if (a->role == 1 && i % 2 == 0) {
                int r = storage_read_piece(a->st, i, buf);
                expected(info, off, want, len);
                if (r < 0)
                    a->result = r;
                else if (memcmp(buf, want, len) != 0)
                    a->result = -EBADMSG;
            } else if (a->role == 2) {
                a->result = storage_flush(a->st);
            } else if (a->role == 3 && i % 2 == 0) {
                uint32_t n = len < 256 ? len : 256;
                expected(info, off, want, n);
                a->result =
                    storage_sendfile_span(a->st, off, n, discard_span, want);
            }
        }
    }
    free(buf);
    free(want);
    return NULL;
}

static void
test_mixed_load(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "mixed");
    struct meta_info *info = make_multi();
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    uint8_t *buf = malloc(info->piece_length);
    for (uint32_t i = 0; i < info->n_pieces; i += 2) {
        uint64_t off = (uint64_t)i * info->piece_length;
        fill(off, buf, meta_piece_size(info, i));
        assert_int_equal(storage_write(st, off, buf, meta_piece_size(info, i)),
                         0);
    }
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);
    assert_int_equal(storage_open(&st, info, dir, 0), 0); /* cold cache */
    storage_set_max_open(2);
    enum { N = 8 };
    pthread_t th[N];
    struct mixed_arg a[N];
    for (int k = 0; k < N; k++) {
        a[k] = (struct mixed_arg){st, info, k % 4, k / 4, -1};
        assert_int_equal(pthread_create(&th[k], NULL, mixed, &a[k]), 0);
    }
    for (int k = 0; k < N; k++) {
        assert_int_equal(pthread_join(th[k], NULL), 0);
        assert_int_equal(a[k].result, 0);
    }
    assert_int_equal(storage_flush(st), 0);
    assert_true(storage_open_fds() <= 2);
    /* Everything reads back. */
    uint8_t *want = malloc(info->piece_length);
    for (uint32_t i = 0; i < info->n_pieces; i++) {
        int len = storage_read_piece(st, i, buf);
        assert_true(len > 0);
        expected(info, (uint64_t)i * info->piece_length, want, (size_t)len);
        assert_memory_equal(buf, want, (size_t)len);
    }
    storage_close(st);
    storage_set_max_open(STORAGE_MAX_OPEN);
    free(buf);
    free(want);
    meta_free(info);
}

/* ---- fd cache -------------------------------------------------------- */

static void
test_fd_cache_eviction(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "cache");
    static char names[100][16];
    struct tfile tf[100];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof(names[i]), "c/f%03d", i);
        tf[i] = (struct tfile){names[i], 1000, 0};
    }
    struct meta_info *info = make_info(16384, tf, 100);
    storage_set_max_open(8);
    size_t fds0 = count_fds();
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    size_t len = (size_t)info->total_size;
    uint8_t *buf = malloc(len), *got = malloc(len);
    fill(0, buf, len);
    assert_int_equal(storage_write(st, 0, buf, len), 0); /* 100 files */
    assert_true(storage_open_fds() <= 8);
    assert_true(count_fds() <= fds0 + 8);
    assert_int_equal(storage_read(st, 0, got, len), 0);
    assert_memory_equal(buf, got, len);
    assert_true(storage_open_fds() <= 8);
    assert_int_equal(storage_flush(st), 0); /* reopens evicted files */
    assert_true(storage_open_fds() <= 8);

    /* A second torrent shares the same cache. */
    static const struct tfile one[] = {{"other.bin", 5000, 0}};
    struct meta_info *info2 = make_info(16384, one, 1);
    struct storage *st2;
    assert_int_equal(storage_open(&st2, info2, dir, 0), 0);
    assert_int_equal(storage_write(st2, 0, buf, 5000), 0);
    assert_true(storage_open_fds() <= 8);
    storage_close(st);
    assert_int_equal(storage_open_fds(), 1);
    storage_close(st2);
    assert_int_equal(storage_open_fds(), 0);
    assert_int_equal(count_fds(), fds0);
    storage_set_max_open(STORAGE_MAX_OPEN);
    free(buf);
    free(got);
    meta_free(info);
    meta_free(info2);
}

/* ---- files deleted underneath, short files --------------------------- */

static void
test_deleted_and_short(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "deleted");
    static const struct tfile tf[] = {{"d/x.bin", 4000, 0},
                                      {"d/y.bin", 4000, 0}};
    struct meta_info *info = make_info(16384, tf, 2);
    uint8_t buf[8000], got[8000];
    fill(0, buf, sizeof(buf));
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    assert_int_equal(storage_write(st, 0, buf, 8000), 0);
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);

    /* A fresh storage: the file is gone, the read says so, with its
     * name; nothing is recreated. */
    char p[1024];
    snprintf(p, sizeof(p), "%s/d/x.bin", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    assert_int_equal(storage_read(st, 0, got, 8000), -ENOENT);
    assert_false(exists(dir, "d/x.bin"));
    struct storage_error e;
    assert_int_equal(storage_get_error(st, &e), -ENOENT);
    assert_int_equal(e.file, 0);
    char msg[256];
    storage_error_format(&e, msg, sizeof(msg));
    assert_string_equal(msg,
                        "cannot open 'd/x.bin': No such file or directory");
    /* The other file still reads. */
    assert_int_equal(storage_read(st, 4000, got, 4000), 0);
    assert_memory_equal(got, buf + 4000, 4000);
    storage_close(st);

    /* Deleted while its fd is cached: flush notices (the data written is
     * lost), keeps saying so, and a write does not recreate it. */
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    assert_int_equal(storage_write(st, 4000, buf + 4000, 4000), 0);
    snprintf(p, sizeof(p), "%s/d/y.bin", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(storage_flush(st), -ENOENT);
    assert_int_equal(storage_get_error(st, &e), -ENOENT);
    assert_int_equal(e.file, 1);
    assert_string_equal(e.path, "d/y.bin");
    assert_int_equal(storage_flush(st), -ENOENT);
    assert_int_equal(storage_write(st, 4000, buf + 4000, 10), -ENOENT);
    assert_false(exists(dir, "d/y.bin"));
    assert_int_equal(storage_read(st, 4000, got, 10), -ENOENT);
    storage_close(st);

    /* Deleted while its fd is cached, noticed by a read once
     * STORAGE_RECHECK_MS has passed. */
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    assert_int_equal(storage_write(st, 4000, buf + 4000, 4000), 0);
    assert_int_equal(storage_read(st, 4000, got, 4000), 0);
    assert_int_equal(unlink(p), 0);
    usleep((STORAGE_RECHECK_MS + 100) * 1000);
    assert_int_equal(storage_read(st, 4000, got, 10), -ENOENT);
    assert_int_equal(storage_get_error(st, &e), -ENOENT);
    assert_string_equal(e.path, "d/y.bin");
    assert_false(exists(dir, "d/y.bin"));
    storage_close(st);

    /* A file shorter than the range read: -ENODATA. */
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    assert_int_equal(storage_write(st, 0, buf, 4000), 0); /* x.bin again */
    storage_close(st);
    snprintf(p, sizeof(p), "%s/d/x.bin", dir);
    assert_int_equal(truncate(p, 1000), 0);
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    assert_int_equal(storage_read(st, 0, got, 1000), 0);
    assert_int_equal(storage_read(st, 0, got, 1001), -ENODATA);
    assert_false(storage_have_file(st, 0));
    /* A write extends it back to its length. */
    assert_int_equal(storage_write(st, 0, buf, 10), 0);
    struct stat sb;
    assert_int_equal(file_stat(dir, "d/x.bin", &sb), 0);
    assert_int_equal(sb.st_size, 4000);
    storage_close(st);
    meta_free(info);
}

/* ---- errors ---------------------------------------------------------- */

static void
test_errors(void **state)
{
    (void)state;
    char dir[512], msg[256];
    make_dir(dir, sizeof(dir), "errors");
    struct storage_error e;
    struct storage *st;
    uint8_t buf[100] = {1};

    for (int mode = 0; mode < 2; mode++) {
        unsigned fl = mode ? STORAGE_NO_OPENAT2 : 0;
        /* A regular file where the torrent's directory goes: ENOTDIR. */
        char sub[600];
        snprintf(sub, sizeof(sub), "%s/%d", dir, mode);
        assert_int_equal(mkdir(sub, 0755), 0);
        write_file(sub, "m", "not a dir");
        static const struct tfile tf[] = {{"m/x.bin", 100, 0}};
        struct meta_info *info = make_info(16384, tf, 1);
        assert_int_equal(storage_open(&st, info, sub, fl), 0);
        assert_int_equal(storage_write(st, 0, buf, 100), -ENOTDIR);
        assert_int_equal(storage_get_error(st, &e), -ENOTDIR);
        assert_int_equal(e.file, 0);
        storage_error_format(&e, msg, sizeof(msg));
        assert_string_equal(msg, "cannot open 'm/x.bin': Not a directory");
        assert_int_equal(storage_read(st, 0, buf, 100), -ENOTDIR);
        storage_close(st);
        meta_free(info);

        /* A directory where the file goes: EISDIR. */
        static const struct tfile one[] = {{"s.bin", 100, 0}};
        info = make_info(16384, one, 1);
        char p[700];
        snprintf(p, sizeof(p), "%s/s.bin", sub);
        assert_int_equal(mkdir(p, 0755), 0);
        assert_int_equal(storage_open(&st, info, sub, fl), 0);
        assert_int_equal(storage_write(st, 0, buf, 100), -EISDIR);
        assert_int_equal(storage_read(st, 0, buf, 100), -EISDIR);
        assert_int_equal(storage_get_error(st, &e), -EISDIR);
        storage_error_format(&e, msg, sizeof(msg));
        assert_string_equal(msg, "cannot open 's.bin': Is a directory");
        uint64_t size;
        assert_int_equal(storage_file_size(st, 0, &size), -EISDIR);
        assert_false(storage_have_file(st, 0));
        storage_close(st);

        /* A download directory that cannot be created: the error names
         * the directory. */
        snprintf(p, sizeof(p), "%s/m/dl", sub);
        assert_int_equal(storage_open(&st, info, p, fl), 0);
        assert_int_equal(storage_write(st, 0, buf, 100), -ENOTDIR);
        assert_int_equal(storage_get_error(st, &e), -ENOTDIR);
        assert_int_equal(e.file, -1);
        assert_string_equal(e.path, p);
        assert_string_equal(e.op, "create");
        /* A read of a missing download directory does not create it. */
        storage_close(st);
        snprintf(p, sizeof(p), "%s/nodir/dl", sub);
        assert_int_equal(storage_open(&st, info, p, fl), 0);
        assert_int_equal(storage_read(st, 0, buf, 100), -ENOENT);
        snprintf(p, sizeof(p), "%s/nodir", sub);
        struct stat sb;
        assert_int_equal(stat(p, &sb), -1);
        /* ... and a write does, with its parents. */
        assert_int_equal(storage_write(st, 0, buf, 100), 0);
        assert_int_equal(stat(p, &sb), 0);
        storage_close(st);

        /* Read-only, where permissions bind us (not as root). */
        if (geteuid() != 0) {
            snprintf(p, sizeof(p), "%s/ro", sub);
            assert_int_equal(mkdir(p, 0555), 0);
            assert_int_equal(storage_open(&st, info, p, fl), 0);
            assert_int_equal(storage_write(st, 0, buf, 100), -EACCES);
            storage_close(st);
            assert_int_equal(chmod(p, 0755), 0);
        }
        meta_free(info);
    }
}

/* ---- planted symlinks ------------------------------------------------ */

static void
test_symlinks(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "symlinks");
    uint8_t buf[200];
    fill(0, buf, sizeof(buf));
    static const struct tfile tf[] = {{"m/x.bin", 100, 0}, {"m/y.bin", 100, 0}};
    struct meta_info *info = make_info(16384, tf, 2);

    for (int mode = 0; mode < 2; mode++) {
        unsigned fl = mode ? STORAGE_NO_OPENAT2 : 0;
        char out[600], dl[600], p[700], q[800];
        snprintf(out, sizeof(out), "%s/outside%d", dir, mode);
        snprintf(dl, sizeof(dl), "%s/dl%d", dir, mode);
        assert_int_equal(mkdir(out, 0755), 0);
        assert_int_equal(mkdir(dl, 0755), 0);
        write_file(out, "x.bin", "keep me");

        /* The torrent's directory is a symlink to outside. */
        snprintf(p, sizeof(p), "%s/m", dl);
        assert_int_equal(symlink(out, p), 0);
        struct storage *st;
        assert_int_equal(storage_open(&st, info, dl, fl), 0);
        int r = storage_write(st, 0, buf, 200);
        assert_true(r == -ELOOP || r == -ENOTDIR);
        r = storage_read(st, 0, buf + 100, 10);
        assert_true(r == -ELOOP || r == -ENOTDIR);
        assert_int_equal(storage_create_empty_files(st), 0); /* none */
        assert_false(storage_have_file(st, 0));
        storage_close(st);
        check_file_text(out, "x.bin", "keep me");
        assert_false(exists(out, "y.bin"));
        /* delete_data does not follow it either. */
        struct storage_error e;
        r = storage_delete_data(info, dl, &e);
        assert_true(r == -ELOOP || r == -ENOTDIR);
        check_file_text(out, "x.bin", "keep me");
        assert_true(exists(dl, "m"));
        assert_int_equal(unlink(p), 0);

        /* The files themselves are symlinks (one dangling). */
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof(p), "%s/x.bin", out);
        snprintf(q, sizeof(q), "%s/m/x.bin", dl);
        assert_int_equal(symlink(p, q), 0);
        snprintf(p, sizeof(p), "%s/new.bin", out);
        snprintf(q, sizeof(q), "%s/m/y.bin", dl);
        assert_int_equal(symlink(p, q), 0);
        assert_int_equal(storage_open(&st, info, dl, fl), 0);
        assert_int_equal(storage_write(st, 0, buf, 100), -ELOOP);
        assert_int_equal(storage_write(st, 100, buf, 100), -ELOOP);
        assert_int_equal(storage_read(st, 0, buf + 100, 10), -ELOOP);
        uint64_t size;
        assert_int_equal(storage_file_size(st, 0, &size), -ELOOP);
        storage_close(st);
        check_file_text(out, "x.bin", "keep me");
        assert_false(exists(out, "new.bin"));
        /* delete_data removes the links (the torrent's paths), never what
         * they point to. */
        assert_int_equal(storage_delete_data(info, dl, NULL), 0);
        check_file_text(out, "x.bin", "keep me");
        assert_false(exists(dl, "m"));
        assert_int_equal(count_entries(dl), 0);
    }
    meta_free(info);
}

/* ---- delete_data ----------------------------------------------------- */

static void
test_delete_data(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "delete");
    static const struct tfile tf[] = {
        {"t/a/one", 100, 0},
        {"t/a/b/two", 100, 0},
        {"t/.pad/56", 56, META_ATTR_PAD},
        {"t/c/three", 100, 0},
        {"t/empty", 0, 0},
        {"t/keep/four", 100, 0},
    };
    struct meta_info *info = make_info(16384, tf, 6);
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    uint8_t buf[456];
    fill(0, buf, sizeof(buf));
    assert_int_equal(storage_write(st, 0, buf, sizeof(buf)), 0);
    assert_int_equal(storage_create_empty_files(st), 0);
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);
    /* Not the torrent's: a file next to its files, one in the download
     * directory, and a pad directory of someone else's. */
    write_file(dir, "t/keep/mine.txt", "mine");
    write_file(dir, "other.txt", "other");
    char p[700];
    snprintf(p, sizeof(p), "%s/t/.pad", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    write_file(dir, "t/.pad/56", "pad of another client");

    struct storage_error e = {0};
    assert_int_equal(storage_delete_data(info, dir, &e), 0);
    assert_int_equal(e.error, 0);
    assert_false(exists(dir, "t/a"));
    assert_false(exists(dir, "t/c"));
    assert_false(exists(dir, "t/empty"));
    assert_false(exists(dir, "t/keep/four"));
    check_file_text(dir, "t/keep/mine.txt", "mine");
    check_file_text(dir, "other.txt", "other");
    check_file_text(dir, "t/.pad/56", "pad of another client");
    /* Again: nothing left to do, fine.  A missing directory: fine. */
    assert_int_equal(storage_delete_data(info, dir, NULL), 0);
    snprintf(p, sizeof(p), "%s/missing", dir);
    assert_int_equal(storage_delete_data(info, p, NULL), 0);

    /* Single file: the download directory itself stays. */
    static const struct tfile one[] = {{"one.bin", 10, 0}};
    struct meta_info *info1 = make_info(16384, one, 1);
    snprintf(p, sizeof(p), "%s/single", dir);
    assert_int_equal(storage_open(&st, info1, p, 0), 0);
    assert_int_equal(storage_write(st, 0, buf, 10), 0);
    storage_close(st);
    assert_int_equal(storage_delete_data(info1, p, NULL), 0);
    assert_int_equal(count_entries(p), 0);
    meta_free(info1);
    meta_free(info);
}

/* ---- sendfile, flush, preallocation ---------------------------------- */

struct send_ctx {
    int out;
    int calls;
    int pads;
};

static int
send_span(void *arg, int fd, uint64_t off, uint64_t len)
{
    struct send_ctx *c = arg;
    c->calls++;
    if (fd < 0) {
        c->pads++;
        uint8_t z[4096] = {0};
        while (len > 0) {
            size_t n = len < sizeof(z) ? (size_t)len : sizeof(z);
            if (write(c->out, z, n) != (ssize_t)n)
                return -EIO;
            len -= n;
        }
        return 0;
    }
    off_t o = (off_t)off;
    while (len > 0) {
        ssize_t k = sendfile(c->out, fd, &o, (size_t)len);
        if (k <= 0)
            return k < 0 ? -errno : -EIO;
        len -= (uint64_t)k;
    }
    return 0;
}

static int
stop_span(void *arg, int fd, uint64_t off, uint64_t len)
{
    (void)arg;
    (void)fd;
    (void)off;
    (void)len;
    return -ECANCELED;
}

struct pin_ctx {
    struct storage *st;
    int result;
    size_t open_inside;
    uint8_t got[100];
};

/* While s/a is pinned, read s/b. */
static int
pinned_read(void *arg, int fd, uint64_t off, uint64_t len)
{
    struct pin_ctx *c = arg;
    (void)fd;
    (void)off;
    (void)len;
    c->result = storage_read(c->st, 4096, c->got, sizeof(c->got));
    c->open_inside = storage_open_fds();
    return 0;
}

static void
test_sendfile_flush_prealloc(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "sendfile");
    static const struct tfile tf[] = {
        {"s/a", 3000, 0},
        {"s/.pad/1096", 1096, META_ATTR_PAD},
        {"s/b", 1 << 20, 0},
    };
    struct meta_info *info = make_info(16384, tf, 3);
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    uint8_t *buf = malloc(8192), *want = malloc(8192), *got = malloc(8192);
    fill(0, buf, 8192);
    assert_int_equal(storage_write(st, 0, buf, 8192), 0);
    assert_int_equal(storage_flush(st), 0);

    /* Sparse: the 1 MiB file holds only what was written; on ext4 its
     * one chunk is allocated ahead (test_alloc_ahead). */
    struct stat sb;
    assert_int_equal(file_stat(dir, "s/b", &sb), 0);
    assert_int_equal(sb.st_size, 1 << 20);
    if (on_ext4(dir))
        assert_true((uint64_t)sb.st_blocks * 512 >= (1u << 20));
    else
        assert_true((uint64_t)sb.st_blocks * 512 < (1u << 20));

    char p[700];
    snprintf(p, sizeof(p), "%s/out", dir);
    struct send_ctx c = {
        .out = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    assert_true(c.out >= 0);
    assert_int_equal(storage_sendfile_span(st, 1000, 7000, send_span, &c), 0);
    assert_int_equal(c.calls, 3);
    assert_int_equal(c.pads, 1);
    assert_int_equal(pread(c.out, got, 7000, 0), 7000);
    expected(info, 1000, want, 7000);
    assert_memory_equal(got, want, 7000);
    close(c.out);
    assert_int_equal(storage_sendfile_span(st, 0, 10, stop_span, NULL),
                     -ECANCELED);

    /* A cache of one fd with every fd pinned goes over its limit for a
     * moment and shrinks back when the pins go. */
    storage_close(st);
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    storage_set_max_open(1);
    struct pin_ctx pc = {.st = st};
    assert_int_equal(storage_sendfile_span(st, 0, 10, pinned_read, &pc), 0);
    assert_int_equal(pc.result, 0);
    assert_int_equal(pc.open_inside, 1); /* b.bin evicted after its read */
    assert_int_equal(storage_open_fds(), 1);
    assert_memory_equal(pc.got, buf + 4096, 100);
    storage_set_max_open(STORAGE_MAX_OPEN);
    assert_int_equal(
        storage_sendfile_span(st, info->total_size, 1, send_span, &c), -EINVAL);
    storage_close(st);

    /* Preallocated: all blocks there after the first write. */
    char d2[600];
    snprintf(d2, sizeof(d2), "%s/pre", dir);
    assert_int_equal(storage_open(&st, info, d2, STORAGE_PREALLOCATE), 0);
    assert_int_equal(storage_write(st, 4096, buf, 100), 0);
    assert_int_equal(file_stat(d2, "s/b", &sb), 0);
    assert_int_equal(sb.st_size, 1 << 20);
    assert_true((uint64_t)sb.st_blocks * 512 >= (1u << 20));
    assert_false(exists(d2, "s/a")); /* never written: not created */
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);

    free(buf);
    free(want);
    free(got);
    meta_free(info);
}

/* ---- allocation ahead ------------------------------------------------ */

static void
write_at(struct storage *st, uint64_t off, size_t len)
{
    uint8_t *b = malloc(len);
    assert_non_null(b);
    fill(off, b, len);
    assert_int_equal(storage_write(st, off, b, len), 0);
    free(b);
}

/* [off, off + len) reads as written (or zeros where nothing was). */
static void
check_at(struct storage *st, const struct meta_info *info, uint64_t off,
         size_t len, bool written)
{
    uint8_t *got = malloc(len), *want = calloc(1, len);
    assert_true(got && want);
    if (written)
        expected(info, off, want, len);
    assert_int_equal(storage_read(st, off, got, len), 0);
    assert_memory_equal(got, want, len);
    free(got);
    free(want);
}

static void
test_alloc_ahead(void **state)
{
    (void)state;
    char dir[512];
    make_dir(dir, sizeof(dir), "ahead");
    const uint64_t C = STORAGE_ALLOC_CHUNK;
    const uint64_t big = 2 * C + C / 2 + 5000; /* chunks 0, 1, and a cut 2 */
    const struct tfile tf[] = {
        {"t/big", big, 0},
        {"t/.pad/0", 16384 - 5000, META_ATTR_PAD},
        {"t/small", 100000, 0},
        {"t/skipped", 3 * C, 0},
    };
    struct meta_info *info = make_info(1u << 20, tf, 4);
    struct storage *st;
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    bool ahead = on_ext4(dir);
    const uint64_t slack = 1u << 20; /* extent blocks, rounding */

    /* A block in chunk 1 of big: that chunk, and only it. */
    write_at(st, C + C / 4, 16384);
    assert_int_equal(storage_flush(st), 0);
    struct stat sb;
    assert_int_equal(file_stat(dir, "t/big", &sb), 0);
    assert_int_equal((uint64_t)sb.st_size, big); /* the size stays */
    uint64_t d = disk_bytes(dir, "t/big");
    if (ahead)
        assert_true(d >= C && d < C + slack);
    else
        assert_true(d < slack);
    check_at(st, info, C + C / 4, 16384, true);
    check_at(st, info, C, 65536, false);     /* allocated: zeros */
    check_at(st, info, C / 2, 65536, false); /* a hole: zeros */

    /* More writes in that chunk allocate nothing more. */
    write_at(st, C + 16384, 16384);
    write_at(st, 2 * C - 16384, 16384);
    assert_int_equal(disk_bytes(dir, "t/big"), d);

    /* One write across big's cut last chunk, the pad file and small:
     * both chunks, each cut at its file's end; the pad never exists. */
    uint64_t tail = 2 * C + C / 2;
    write_at(st, tail, 5000 + (16384 - 5000) + 4096);
    d = disk_bytes(dir, "t/big");
    if (ahead) {
        assert_true(d >= C + (big - 2 * C) && d < C + (big - 2 * C) + slack);
        assert_true(disk_bytes(dir, "t/small") >= 100000);
    } else {
        assert_true(d < slack);
    }
    assert_false(exists(dir, "t/.pad/0"));
    check_at(st, info, tail - 100, 100, false);
    check_at(st, info, tail, 5000 + 16384 - 5000 + 4096, true);
    assert_int_equal(file_stat(dir, "t/small", &sb), 0);
    assert_int_equal(sb.st_size, 100000);

    /* A file written only at its edge (a skipped file sharing a piece):
     * at most the chunk it touches. */
    uint64_t sk = info->files[3].offset;
    write_at(st, sk, 16384);
    d = disk_bytes(dir, "t/skipped");
    if (ahead)
        assert_true(d >= C && d < C + slack);
    else
        assert_true(d < slack);

    /* A new storage (a restart) tries each chunk again: allocated
     * chunks stay as they are, written data too. */
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);
    assert_int_equal(storage_open(&st, info, dir, 0), 0);
    write_at(st, C + C / 4, 16384);
    assert_int_equal(disk_bytes(dir, "t/skipped"), d);
    check_at(st, info, C + 16384, 16384, true);
    check_at(st, info, 2 * C - 16384, 16384, true);
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);

    /* STORAGE_PREALLOCATE: whole files, nothing more ahead. */
    char d2[600];
    snprintf(d2, sizeof(d2), "%s/pre", dir);
    assert_int_equal(storage_open(&st, info, d2, STORAGE_PREALLOCATE), 0);
    write_at(st, 0, 16384);
    assert_true(disk_bytes(d2, "t/big") >= big);
    check_at(st, info, 0, 16384, true);
    check_at(st, info, 16384, 16384, false);
    assert_int_equal(storage_flush(st), 0);
    storage_close(st);
    meta_free(info);
}

/* ---- main ------------------------------------------------------------ */

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_storage.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_single_file),
        cmocka_unit_test(test_threads_multi_file),
        cmocka_unit_test(test_mixed_load),
        cmocka_unit_test(test_fd_cache_eviction),
        cmocka_unit_test(test_deleted_and_short),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_symlinks),
        cmocka_unit_test(test_delete_data),
        cmocka_unit_test(test_sendfile_flush_prealloc),
        cmocka_unit_test(test_alloc_ahead),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
