/* Unit tests for daemon/move: directory normalizing (table), which files
 * move, then real moves in a temp directory under /tmp: by rename, by
 * copy (forced, and across filesystems to /dev/shm when it is another
 * one), files not there yet skipped, empty source directories removed, a
 * file in the way refusing the whole move, a symlink planted at the
 * destination, a failure half way moved back, move_data false; a cancel
 * between files and inside a copy, only the directories the move made
 * removed, holes kept by a copy and a user's ".torrentd-move.*" file
 * left alone. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/metainfo.h"
#include "daemon/move.h"

static char tmpdir[256];

struct tfile {
    const char *path;
    uint64_t length;
    unsigned attr;
};

static const struct tfile files3[] = {
    {"t/a.bin", 1000, 0},
    {"t/.pad/24", 24, META_ATTR_PAD},
    {"t/sub/b.bin", 70000, 0},
    {"t/sub/deep/c.bin", 5, 0},
};

static struct meta_info *
make_info(const struct tfile *tf, size_t n)
{
    struct meta_info *info = calloc(1, sizeof(*info));
    assert_non_null(info);
    info->files = calloc(n, sizeof(*info->files));
    assert_non_null(info->files);
    info->n_files = n;
    info->name = strdup("t");
    info->multi_file = true;
    for (size_t i = 0; i < n; i++) {
        info->files[i].path = strdup(tf[i].path);
        info->files[i].length = tf[i].length;
        info->files[i].attr = tf[i].attr;
    }
    return info;
}

static void
free_info(struct meta_info *info)
{
    for (size_t i = 0; i < info->n_files; i++)
        free(info->files[i].path);
    free(info->files);
    free(info->name);
    free(info);
}

static void
path_of(char *out, size_t n, const char *dir, const char *rel)
{
    int k = snprintf(out, n, "%s/%s", dir, rel);
    assert_true(k > 0 && (size_t)k < n);
}

static void
mkdirs(const char *dir, const char *rel)
{
    char p[1024];
    path_of(p, sizeof(p), dir, rel);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        (void)mkdir(p, 0755);
        *s = '/';
    }
    (void)mkdir(p, 0755);
}

/* Write file rel (its parents made) with content byte (seed + k). */
static void
put(const char *dir, const char *rel, size_t len, unsigned seed)
{
    char p[1024];
    path_of(p, sizeof(p), dir, rel);
    char *s = strrchr(p, '/');
    *s = '\0';
    mkdirs(p, ".");
    *s = '/';
    FILE *f = fopen(p, "we");
    assert_non_null(f);
    for (size_t k = 0; k < len; k++)
        fputc((int)((seed + k * 7) & 0xff), f);
    assert_int_equal(fclose(f), 0);
}

static bool
holds(const char *dir, const char *rel, size_t len, unsigned seed)
{
    char p[1024];
    path_of(p, sizeof(p), dir, rel);
    FILE *f = fopen(p, "re");
    if (!f)
        return false;
    bool ok = true;
    for (size_t k = 0; k < len && ok; k++)
        ok = fgetc(f) == (int)((seed + k * 7) & 0xff);
    ok = ok && fgetc(f) == EOF;
    fclose(f);
    return ok;
}

static bool
exists(const char *dir, const char *rel)
{
    char p[1024];
    struct stat sb;
    path_of(p, sizeof(p), dir, rel);
    return lstat(p, &sb) == 0;
}

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void
rm_rf(const char *dir)
{
    (void)nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- pure ------------------------------------------------------------ */

static void
test_normalize(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int r;
        const char *out;
    } cases[] = {
        {"/a/b", 4, "/a/b"},
        {"/a//b/", 4, "/a/b"},
        {"///", 1, "/"},
        {"/", 1, "/"},
        {"/a/.b/c..", 9, "/a/.b/c.."},
        {"a/b", -EINVAL, NULL},
        {"", -EINVAL, NULL},
        {"/a/./b/.", 4, "/a/b"},
        {"/.", 1, "/"},
        {"/a/../b", -EINVAL, NULL},
        {"/..", -EINVAL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        char out[64] = "";
        int r = move_dir_normalize(cases[i].in, out, sizeof(out));
        assert_int_equal(r, cases[i].r);
        if (r >= 0)
            assert_string_equal(out, cases[i].out);
    }
    assert_int_equal(move_dir_normalize(NULL, NULL, 0), -EINVAL);
    char small[4];
    assert_int_equal(move_dir_normalize("/abcd", small, sizeof(small)),
                     -ENAMETOOLONG);
    char *big = malloc(MOVE_DIR_MAX + 2);
    assert_non_null(big);
    memset(big, 'a', MOVE_DIR_MAX + 1);
    big[0] = '/';
    big[MOVE_DIR_MAX + 1] = '\0';
    char out[16];
    assert_int_equal(move_dir_normalize(big, out, sizeof(out)), -ENAMETOOLONG);
    free(big);

    struct tfile tf[] = {{"t/a", 1, 0},
                         {"t/p", 1, META_ATTR_PAD},
                         {"t/l", 0, META_ATTR_SYMLINK},
                         {"t/x", 1, META_ATTR_EXEC}};
    struct meta_info *m = make_info(tf, 4);
    assert_true(move_file_moves(m, 0));
    assert_false(move_file_moves(m, 1));
    assert_false(move_file_moves(m, 2));
    assert_true(move_file_moves(m, 3));
    free_info(m);
}

/* ---- moves ----------------------------------------------------------- */

static void
fill_src(const char *src)
{
    put(src, "t/a.bin", 1000, 1);
    put(src, "t/sub/b.bin", 70000, 2);
    put(src, "t/sub/deep/c.bin", 5, 3);
}

static void
assert_at(const char *dir)
{
    assert_true(holds(dir, "t/a.bin", 1000, 1));
    assert_true(holds(dir, "t/sub/b.bin", 70000, 2));
    assert_true(holds(dir, "t/sub/deep/c.bin", 5, 3));
    assert_false(exists(dir, "t/.pad"));
}

static void
run_move(const char *base, const char *dst_root, bool force_copy)
{
    char src[512], dst[512];
    snprintf(src, sizeof(src), "%s/src", base);
    snprintf(dst, sizeof(dst), "%s/new/dir", dst_root);
    rm_rf(src);
    rm_rf(dst);
    fill_src(src);
    mkdirs(src, "t/other");     /* not the torrent's: t is not empty then */
    put(src, "keep.txt", 3, 9); /* not the torrent's: stays */
    struct meta_info *m = make_info(files3, 4);
    struct move_job *j = move_job_new(m, src, dst, true);
    assert_non_null(j);
    j->force_copy = force_copy;
    assert_int_equal(move_run(j), 0);
    assert_false(j->same);
    assert_int_equal(j->renamed + j->copied, 3);
    if (force_copy) {
        assert_int_equal(j->copied, 3);
        assert_int_equal(j->copied_bytes, 71005);
    }
    assert_at(dst);
    assert_false(exists(src, "t/a.bin"));
    assert_false(exists(src, "t/sub"));
    assert_true(exists(src, "t/other")); /* t itself stays: not empty */
    assert_true(holds(src, "keep.txt", 3, 9));
    move_job_free(j);

    /* And back; then again to the same place: a no-op. */
    j = move_job_new(m, dst, src, true);
    assert_non_null(j);
    assert_int_equal(move_run(j), 0);
    assert_at(src);
    assert_false(exists(dst, "t"));
    move_job_free(j);
    j = move_job_new(m, src, src, true);
    assert_int_equal(move_run(j), 0);
    assert_true(j->same);
    assert_at(src);
    move_job_free(j);
    free_info(m);
    rm_rf(src);
}

static void
test_move_rename(void **state)
{
    (void)state;
    run_move(tmpdir, tmpdir, false);
}

static void
test_move_copy(void **state)
{
    (void)state;
    run_move(tmpdir, tmpdir, true);
    /* Another filesystem when /dev/shm is one: EXDEV, then copies. */
    struct stat a, b;
    if (stat("/dev/shm", &b) == 0 && stat(tmpdir, &a) == 0 &&
        a.st_dev != b.st_dev) {
        char shm[256];
        snprintf(shm, sizeof(shm), "/dev/shm/test_move.XXXXXX");
        assert_non_null(mkdtemp(shm));
        run_move(tmpdir, shm, false);
        rm_rf(shm);
    }
}

static void
test_partial_and_missing(void **state)
{
    (void)state;
    char src[512], dst[512];
    snprintf(src, sizeof(src), "%s/psrc", tmpdir);
    snprintf(dst, sizeof(dst), "%s/pdst", tmpdir);
    put(src, "t/sub/b.bin", 10, 2); /* the only file there */
    struct meta_info *m = make_info(files3, 4);
    struct move_job *j = move_job_new(m, src, dst, true);
    assert_int_equal(move_run(j), 0);
    assert_int_equal(j->renamed, 1);
    assert_true(holds(dst, "t/sub/b.bin", 10, 2));
    assert_false(exists(dst, "t/a.bin"));
    assert_false(exists(src, "t"));
    move_job_free(j);
    /* A source directory that does not exist: nothing to move. */
    j = move_job_new(m, "/nonexistent/torrentd-test", dst, true);
    assert_int_equal(move_run(j), 0);
    assert_int_equal(j->renamed + j->copied, 0);
    move_job_free(j);
    free_info(m);
    rm_rf(src);
    rm_rf(dst);
}

static void
test_refused(void **state)
{
    (void)state;
    char src[512], dst[512], p[1024];
    snprintf(src, sizeof(src), "%s/rsrc", tmpdir);
    snprintf(dst, sizeof(dst), "%s/rdst", tmpdir);
    fill_src(src);
    put(dst, "t/sub/deep/c.bin", 5, 77); /* a different file in the way */
    struct meta_info *m = make_info(files3, 4);
    struct move_job *j = move_job_new(m, src, dst, true);
    assert_int_equal(move_run(j), -EEXIST);
    assert_non_null(strstr(j->error, "t/sub/deep/c.bin"));
    assert_non_null(strstr(j->error, "not overwriting"));
    assert_at(src);
    assert_false(exists(dst, "t/a.bin"));
    assert_true(holds(dst, "t/sub/deep/c.bin", 5, 77));
    move_job_free(j);
    rm_rf(dst);

    /* A symlink planted as a directory of the torrent at the destination:
     * nothing is followed. */
    char outside[512];
    snprintf(outside, sizeof(outside), "%s/outside", tmpdir);
    mkdirs(outside, ".");
    mkdirs(dst, "t");
    path_of(p, sizeof(p), dst, "t/sub");
    assert_int_equal(symlink(outside, p), 0);
    j = move_job_new(m, src, dst, true);
    int r = move_run(j);
    assert_true(r == -ELOOP || r == -ENOTDIR);
    assert_at(src);
    assert_false(exists(outside, "b.bin"));
    move_job_free(j);
    rm_rf(dst);

    /* A symlink in place of a file at the source: not moved. */
    path_of(p, sizeof(p), src, "t/a.bin");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink("/etc/passwd", p), 0);
    j = move_job_new(m, src, dst, true);
    assert_int_equal(move_run(j), -EINVAL);
    assert_non_null(strstr(j->error, "not a regular file"));
    move_job_free(j);
    free_info(m);
    rm_rf(src);
    rm_rf(dst);
    rm_rf(outside);
}

static void
test_fail_half_way(void **state)
{
    (void)state;
    char src[512], dst[512];
    snprintf(src, sizeof(src), "%s/fsrc", tmpdir);
    snprintf(dst, sizeof(dst), "%s/fdst", tmpdir);
    for (int copy = 0; copy < 2; copy++) {
        fill_src(src);
        struct meta_info *m = make_info(files3, 4);
        struct move_job *j = move_job_new(m, src, dst, true);
        j->force_copy = copy;
        j->fail_after = 2; /* the third file: ENOSPC */
        assert_int_equal(move_run(j), -ENOSPC);
        assert_non_null(strstr(j->error, "t/sub/deep/c.bin"));
        assert_non_null(strstr(j->error, strerror(ENOSPC)));
        assert_null(strstr(j->error, "back"));
        assert_at(src);
        assert_false(exists(dst, "t")); /* its directories went too */
        assert_true(exists(dst, "."));
        move_job_free(j);
        free_info(m);
        rm_rf(src);
        rm_rf(dst);
    }
}

/* A cancel (torrentd stopping): between files, and in the middle of a
 * copy (small copy steps); what moved goes back, the copy half made goes,
 * the directories the move made go too. */
static void
test_cancel(void **state)
{
    (void)state;
    char src[512], dst[512];
    snprintf(src, sizeof(src), "%s/csrc", tmpdir);
    snprintf(dst, sizeof(dst), "%s/cdst", tmpdir);
    for (int k = 0; k < 4; k++) {
        fill_src(src);
        struct meta_info *m = make_info(files3, 4);
        struct move_job *j = move_job_new(m, src, dst, true);
        j->force_copy = k & 1;
        if (k < 2) {
            j->cancel_after = 2; /* before the third file */
        } else if (k == 2) {
            j->force_copy = true;
            j->copy_chunk = 4096;
            j->cancel_after_bytes = 20000; /* inside t/sub/b.bin */
        } else {
            move_job_cancel(j); /* before it runs: nothing moves */
        }
        assert_int_equal(move_run(j), -ECANCELED);
        assert_non_null(strstr(j->error, "cancelled"));
        assert_false(j->split);
        if (k < 2)
            assert_int_equal(j->renamed + j->copied, 2);
        if (k == 2) {
            assert_int_equal(j->copied, 1);
            assert_int_equal(j->copied_bytes, 1000);
        }
        assert_at(src);
        assert_false(exists(dst, "t"));
        assert_true(exists(dst, "."));
        move_job_free(j);
        free_info(m);
        rm_rf(src);
        rm_rf(dst);
    }
}

/* After a failure only the directories the move made go: the user's
 * (empty) ones at the destination stay. */
static void
test_made_dirs_only(void **state)
{
    (void)state;
    char src[512], dst[512];
    snprintf(src, sizeof(src), "%s/msrc", tmpdir);
    snprintf(dst, sizeof(dst), "%s/mdst", tmpdir);
    fill_src(src);
    mkdirs(dst, "t/sub"); /* the user's, empty */
    struct meta_info *m = make_info(files3, 4);
    struct move_job *j = move_job_new(m, src, dst, true);
    j->fail_after = 2;
    assert_int_equal(move_run(j), -ENOSPC);
    assert_at(src);
    assert_true(exists(dst, "t/sub"));
    assert_false(exists(dst, "t/sub/deep"));
    assert_false(exists(dst, "t/a.bin"));
    move_job_free(j);
    free_info(m);
    rm_rf(src);
    rm_rf(dst);
}

/* A copy keeps holes (where the filesystem tells them) and never touches
 * a user's file with the old temporary name. */
static void
test_copy_sparse(void **state)
{
    (void)state;
    static const struct tfile one[] = {{"s/big.bin", 8u << 20, 0}};
    char src[512], dst[512], p[1024];
    snprintf(src, sizeof(src), "%s/ssrc", tmpdir);
    snprintf(dst, sizeof(dst), "%s/sdst", tmpdir);
    mkdirs(src, "s");
    path_of(p, sizeof(p), src, "s/big.bin");
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    char blk[4096];
    memset(blk, 0xa5, sizeof(blk));
    assert_int_equal(pwrite(fd, blk, sizeof(blk), 0), sizeof(blk));
    assert_int_equal(pwrite(fd, blk, sizeof(blk), 4 << 20), sizeof(blk));
    assert_int_equal(ftruncate(fd, 8 << 20), 0);
    assert_int_equal(close(fd), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    bool sparse_src = st.st_blocks * 512 < (1 << 20);
    put(dst, "s/.torrentd-move.0", 3, 5); /* a user's files */
    put(dst, "s/.torrentd-move.0.0", 3, 6);
    struct meta_info *m = make_info(one, 1);
    m->multi_file = false;
    struct move_job *j = move_job_new(m, src, dst, true);
    j->force_copy = true;
    j->copy_chunk = 1 << 20;
    assert_int_equal(move_run(j), 0);
    assert_int_equal(j->copied, 1);
    path_of(p, sizeof(p), dst, "s/big.bin");
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 8 << 20);
    if (sparse_src) {
        assert_true(st.st_blocks * 512 < (1 << 20));
        assert_int_equal(j->copied_bytes, 2 * 4096);
    }
    fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char got[4096];
    static const char zero[4096];
    assert_int_equal(pread(fd, got, sizeof(got), 0), sizeof(got));
    assert_memory_equal(got, blk, sizeof(got));
    assert_int_equal(pread(fd, got, sizeof(got), 4 << 20), sizeof(got));
    assert_memory_equal(got, blk, sizeof(got));
    assert_int_equal(pread(fd, got, sizeof(got), 2 << 20), sizeof(got));
    assert_memory_equal(got, zero, sizeof(got));
    assert_int_equal(close(fd), 0);
    assert_true(holds(dst, "s/.torrentd-move.0", 3, 5));
    assert_true(holds(dst, "s/.torrentd-move.0.0", 3, 6));
    assert_false(exists(src, "s"));
    move_job_free(j);
    free_info(m);
    rm_rf(src);
    rm_rf(dst);
}

static void
test_no_move(void **state)
{
    (void)state;
    char dst[512], f[512];
    struct meta_info *m = make_info(files3, 4);
    snprintf(dst, sizeof(dst), "%s/missing", tmpdir);
    struct move_job *j = move_job_new(m, tmpdir, dst, false);
    assert_int_equal(move_run(j), -ENOENT);
    assert_non_null(strstr(j->error, "missing"));
    assert_false(exists(dst, "."));
    move_job_free(j);
    snprintf(f, sizeof(f), "%s/afile", tmpdir);
    put(tmpdir, "afile", 1, 0);
    j = move_job_new(m, tmpdir, f, false);
    assert_int_equal(move_run(j), -ENOTDIR);
    move_job_free(j);
    j = move_job_new(m, "/nonexistent", tmpdir, false);
    assert_int_equal(move_run(j), 0);
    move_job_free(j);
    free_info(m);
}

static int
setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_move.XXXXXX");
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
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_move_rename),
        cmocka_unit_test(test_move_copy),
        cmocka_unit_test(test_partial_and_missing),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_fail_half_way),
        cmocka_unit_test(test_no_move),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_made_dirs_only),
        cmocka_unit_test(test_copy_sparse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
