/* storage — a torrent's data mapped onto files, positional I/O from many
 * threads, and a bounded cache of open file descriptors.
 *
 * Thread: any.  storage_map() is pure (no I/O, no locks).  storage_open()
 * and storage_close() do no blocking I/O (open allocates, close only
 * closes cached fds), so the reactor may call them.  Every other call
 * blocks on the disk: peer threads (blocks received and served), hash and
 * disk workers (pieces, checks, flush, delete), never the reactor.
 *
 * Layout.  A torrent's data is one byte stream; meta_info.files cut it
 * into files (offset, length), in order.  A range of the stream maps onto
 * spans (file, offset in the file, length): a piece or a block may span
 * several files.  Zero-length files hold no bytes and never appear in a
 * span.  BEP 47 pad files ('p') hold zeros: they are never created,
 * written or read (writes to a pad range are dropped, reads of one give
 * zeros, storage_sendfile_span() gives fd -1 for one).
 *
 * Files live under download_dir at their meta_file.path.  download_dir is
 * the user's (it is followed as it is, symlinks included, and created with
 * its parents on the first write if missing); below it nothing is
 * followed: every component is opened with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) where the kernel has it (Linux 5.6), else walked
 * one openat(O_NOFOLLOW | O_DIRECTORY) at a time.  A symlink planted in
 * the download directory (as a directory of the torrent or as one of its
 * files) therefore fails the I/O with -ELOOP (or -ENOTDIR): nothing is
 * ever written outside the download directory.
 *
 * Files are created on their first write, sparse (ftruncate to their
 * length) or allocated (fallocate) with STORAGE_PREALLOCATE; directories
 * as needed, mode 0755; files 0644, or 0755 for 'x' files (both less the
 * umask).  An existing file shorter than its length is extended when it
 * is first opened for writing; a longer one is left alone.  Zero-length
 * files are created by storage_create_empty_files(), which the session
 * calls when the torrent completes (so that adding a torrent does not
 * litter the download directory).  BEP 47 symlink entries ('l') are not
 * created by storage: that is a later step (at completion, symlinkat()
 * with meta_file.symlink); storage skips them (they have no bytes).
 *
 * Allocated ahead.  On ext4, without STORAGE_PREALLOCATE, the first write
 * into each STORAGE_ALLOC_CHUNK of a file (chunks aligned to the file's
 * start, the last one cut at its length) allocates that chunk first:
 * fallocate(FALLOC_FL_KEEP_SIZE), unwritten extents that read as zeros.
 * Why: ext4's delayed allocation costs CPU on every page written (a
 * reservation, an extent-status entry) and again when it is written back
 * (the allocation); with the blocks already there, a buffered write and
 * its fdatasync cost about a third less (0.24 -> 0.16 CPU-s/GiB in a
 * plain loop of 256 KiB pwrite()s), and a 1 GiB download on loopback
 * about 0.1 CPU-s/GiB less, all of it in the peer thread
 * (tests/bench/bench_transfer.py, BENCH_THREADS=1).  Why chunks and not
 * pieces: blocks allocated piece by piece in arrival order (rarest
 * first: random) lie on disk in that order, one extent per piece; 16 MiB
 * chunks keep the extents about as long as delayed allocation does.  The
 * cost: disk use may run ahead of the data by up to a chunk per chunk
 * being written (a file the torrent writes only at its edges, such as a
 * skipped file that shares a piece with a wanted one, may get two
 * chunks).  It never changes a file's size or data, a failure (ENOSPC,
 * EOPNOTSUPP for an ext4 file without extents) is ignored (the writes
 * report their own), and each chunk is tried once per storage.  Other
 * filesystems keep plain writes (XFS and btrfs allocate differently, NFS
 * would pay a round trip: not measured).
 *
 * Reads never create anything: a missing file is -ENOENT.  A file that
 * this storage has opened before and that has been deleted underneath is
 * -ENOENT for writes too (it is not silently recreated: the pieces it
 * held are gone, the torrent goes to error and is checked again).  A
 * cached descriptor of a deleted file is noticed at its next use once
 * STORAGE_RECHECK_MS has passed since it was last checked, and always by
 * storage_flush().  A file shorter than the range read is -ENODATA.
 *
 * The fd cache is per process: at most storage_set_max_open() descriptors
 * (default STORAGE_MAX_OPEN) for all torrents together, least recently
 * used closed first.  One mutex guards it and it is never held across a
 * read, write, open or close: an I/O call pins the descriptor (a
 * refcount), unlocks, does the syscall, and unpins.  Eviction closes only
 * unpinned descriptors; when every cached descriptor is pinned the cache
 * goes over its limit for a moment and shrinks back as pins are released.
 *
 * Errors: calls return -errno from the syscall that failed (-EINVAL for a
 * range outside the torrent, a programming error that is not recorded).
 * The first failure since storage_open() or storage_clear_error() is kept
 * with the operation and the file's path; storage_get_error() copies it
 * and storage_error_format() makes the user's message of it:
 * "cannot write 'dir/file': No space left on device".
 */
#ifndef TD_DAEMON_STORAGE_H
#define TD_DAEMON_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct meta_info;
struct storage;

#define STORAGE_MAX_OPEN 64       /* default fd cache size, per process */
#define STORAGE_RECHECK_MS 1000   /* a cached fd is re-checked after this */
#define STORAGE_ERR_PATH_MAX 1024 /* bytes of a path kept for an error */
#define STORAGE_ALLOC_CHUNK (16u << 20) /* allocated ahead at a time (ext4) */

enum storage_flags {
    STORAGE_PREALLOCATE = 1 << 0, /* fallocate files when created */
    STORAGE_NO_OPENAT2 = 1 << 1,  /* walk with openat even if openat2 is
                                   * there (tests use it for the fallback) */
};

/* A failure, for the message a user sees. */
struct storage_error {
    int error;      /* -errno; 0: no error */
    long file;      /* index in meta_info.files, or -1: the download dir */
    const char *op; /* static: "open" "create" "allocate" "read" "write"
                     * "sync" "stat" "remove" */
    char path[STORAGE_ERR_PATH_MAX]; /* relative to the download dir (or
                                      * the download dir), may be cut */
};

/* One piece of a range of the torrent's data that lies in one file. */
struct storage_span {
    size_t file;          /* index in meta_info.files */
    uint64_t file_offset; /* where the span starts in that file */
    uint64_t length;      /* > 0 */
    uint64_t data_offset; /* where it starts in the range asked for */
};

/* Called for each span in order; a non-zero return stops storage_map(),
 * which returns it. */
typedef int (*storage_map_cb)(void *arg, const struct storage_span *span);

/* Called by storage_sendfile_span() for each span: fd is pinned until the
 * callback returns (do not close it, do not keep it), or -1 for a pad
 * file's range (send len zero bytes).  file_offset is the position in the
 * file (pass a copy to sendfile(): fd is shared, its file position is
 * meaningless).  A non-zero return stops the walk and is returned. */
typedef int (*storage_sendfile_cb)(void *arg, int fd, uint64_t file_offset,
                                   uint64_t len);

/* Pure: call cb for each span of [offset, offset + len) of info's data, in
 * order, pad files included (check info->files[span->file].attr),
 * zero-length files never.  Returns 0, -EINVAL if the range is not inside
 * the torrent (len 0 at offset <= total_size is fine and calls nothing),
 * or cb's non-zero return. */
int storage_map(const struct meta_info *info, uint64_t offset, uint64_t len,
                storage_map_cb cb, void *arg);

/* Set the most fds the cache keeps open, for all torrents (at least 1).
 * Takes effect at the next open; call at start-up.  Thread: any. */
void storage_set_max_open(size_t n);

/* Fds the cache holds open now (statistics, tests). */
size_t storage_open_fds(void);

/* A storage for info's data under download_dir (copied).  info is
 * borrowed: immutable, it outlives the storage.  flags: enum
 * storage_flags.  No I/O.  Returns 0 and *ret_st, or -ENOMEM, or -EINVAL
 * for an empty download_dir. */
int storage_open(struct storage **ret_st, const struct meta_info *info,
                 const char *download_dir, unsigned flags);

/* Close the storage's cached fds and free it; accepts NULL.  The caller
 * guarantees that no I/O on it is in flight or will come (asserted in
 * debug builds).  It does not sync: call storage_flush() first where
 * durability matters.  No blocking I/O beyond close(). */
void storage_close(struct storage *st);

/* Write len bytes at offset of the torrent's data (a block; it may span
 * files), creating files and directories as needed.  Returns 0 or -errno;
 * -EINVAL if the range is not inside the torrent.  Data is durable only
 * after storage_flush(). */
int storage_write(struct storage *st, uint64_t offset, const void *p,
                  size_t len);

/* The same, gathering from iovcnt buffers (pwritev per file). */
int storage_writev(struct storage *st, uint64_t offset, const struct iovec *iov,
                   int iovcnt);

/* Read len bytes at offset into p.  Returns 0 or -errno: -ENOENT for a
 * missing file (nothing is created), -ENODATA for a file too short. */
int storage_read(struct storage *st, uint64_t offset, void *p, size_t len);

/* Read piece (meta_piece_size() bytes) into p.  Returns the piece's size,
 * -EINVAL past the last piece, or an error of storage_read(). */
int storage_read_piece(struct storage *st, uint32_t piece, void *p);

/* Walk [offset, offset + len) for sendfile(): cb gets each span's pinned
 * fd.  Returns 0, -EINVAL for a range outside the torrent, -errno when a
 * file cannot be opened (-ENOENT ...), or cb's non-zero return. */
int storage_sendfile_span(struct storage *st, uint64_t offset, uint64_t len,
                          storage_sendfile_cb cb, void *arg);

/* Make every write that returned before this call durable: fdatasync each
 * file written since the last flush (also those whose fd the cache has
 * closed meanwhile), and fsync the directories of files created since.
 * Call before recording a piece as verified (DESIGN.md §5).  Returns 0, or
 * -errno (-ENOENT: a written file was deleted underneath); on failure
 * all the files of this call stay to be synced by the next one. */
int storage_flush(struct storage *st);

/* Create the zero-length files (and their directories) that do not exist
 * yet.  Call when the torrent completes.  Returns 0 or -errno. */
int storage_create_empty_files(struct storage *st);

/* Stat file i on disk (no symlink followed, no fd cached).  Returns 0 and
 * *ret_size for a regular file; -ENOENT if it is missing, -EISDIR,
 * -ELOOP ... if something else is there.  A pad file is -ENOENT (it is
 * never on disk).  Errors are not recorded. */
int storage_file_size(struct storage *st, size_t i, uint64_t *ret_size);

/* True if file i is on disk at its full length (a zero-length file: it
 * exists; a pad file or a symlink entry: always true, storage does not
 * keep them).  For "is the data already there" checks, on a worker. */
bool storage_have_file(struct storage *st, size_t i);

/* The first failure recorded since storage_open() or the last
 * storage_clear_error(): copies it to *ret and returns its error, or
 * returns 0 (and leaves *ret alone) when there is none. */
int storage_get_error(struct storage *st, struct storage_error *ret);
void storage_clear_error(struct storage *st);

/* "cannot <op> '<path>': <strerror>" into buf (always NUL-terminated,
 * cut to n).  Returns the length it wanted, like snprintf. */
int storage_error_format(const struct storage_error *e, char *buf, size_t n);

/* Remove info's files under download_dir (pad files aside; a symlink
 * entry's link itself, never its target), then the directories that held
 * them once they are empty.  Never anything else: no symlink is followed
 * below download_dir, a directory that is not empty stays, download_dir
 * itself stays.  Missing files are fine.  Blocks: run on a worker.
 * Returns 0 or the first -errno (it goes on after one); if reterr is not
 * NULL it gets the first failure. */
int storage_delete_data(const struct meta_info *info, const char *download_dir,
                        struct storage_error *reterr);

#endif
