/* verify — check a torrent's data on disk against its piece hashes. */
#include "daemon/verify.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/metainfo.h"
#include "daemon/storage.h"
#include "daemon/torrent.h"

struct verify_job *
verify_new(const struct meta_info *meta, const char *dir, enum verify_mode mode)
{
    struct verify_job *job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->dir = strdup(dir);
    if (!job->dir) {
        free(job);
        return NULL;
    }
    job->meta = meta;
    job->mode = mode;
    atomic_init(&job->cancel, false);
    atomic_init(&job->done, 0);
    return job;
}

void
verify_free(struct verify_job *job)
{
    if (!job)
        return;
    free(job->dir);
    free(job->have);
    free(job->file_have);
    free(job->expect);
    free(job);
}

void
verify_cancel(struct verify_job *job)
{
    atomic_store(&job->cancel, true);
}

uint32_t
verify_progress(const struct verify_job *job)
{
    return atomic_load(&job->done);
}

/* One open file at a time: pieces are read in order. */
struct reader {
    struct verify_job *job;
    size_t file;   /* index of the open file, or SIZE_MAX */
    int fd;        /* -1: none; -2: the file is missing */
    uint64_t size; /* of the open file */
};

static void
note_error(struct verify_job *job, int err, const char *path)
{
    if (job->error == 0) {
        job->error = err;
        /* Cut long paths (not an error). */
        size_t n = strnlen(path, sizeof(job->error_path) - 1);
        memcpy(job->error_path, path, n);
        job->error_path[n] = '\0';
    }
}

static int
file_path(struct verify_job *job, size_t i, char *out, size_t n)
{
    int k = snprintf(out, n, "%s/%s", job->dir, job->meta->files[i].path);
    return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

static void
reader_open(struct reader *rd, size_t i)
{
    if (rd->file == i)
        return;
    if (rd->fd >= 0)
        close(rd->fd);
    rd->file = i;
    rd->fd = -2;
    rd->size = 0;
    char path[4096];
    if (file_path(rd->job, i, path, sizeof(path)) < 0) {
        note_error(rd->job, -ENAMETOOLONG, rd->job->meta->files[i].path);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            note_error(rd->job, -errno, path);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        note_error(rd->job, -errno, path);
        close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        note_error(rd->job, S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL, path);
        close(fd);
        return;
    }
    rd->fd = fd;
    rd->size = (uint64_t)st.st_size;
    rd->job->any_data = true;
}

int
verify_run(void *arg)
{
    struct verify_job *job = arg;
    const struct meta_info *meta = job->meta;
    job->n_pieces = meta->n_pieces;
    job->have = calloc((meta->n_pieces + 7u) / 8u + 1, 1);
    job->file_have = calloc(meta->n_files + 1, sizeof(*job->file_have));
    if (!job->have || !job->file_have)
        return -ENOMEM;
    struct reader rd = {.job = job, .file = SIZE_MAX, .fd = -1};

    if (job->mode == VERIFY_STAT) {
        for (size_t i = 0; i < meta->n_files && !job->any_data; i++)
            if (!(meta->files[i].attr & META_ATTR_PAD))
                reader_open(&rd, i);
        if (rd.fd >= 0)
            close(rd.fd);
        return 0;
    }
    if (job->mode == VERIFY_QUICK) {
        for (size_t i = 0; i < meta->n_files && !job->mismatch; i++) {
            if ((meta->files[i].attr & META_ATTR_PAD) || !job->expect ||
                job->expect[i] == 0)
                continue;
            reader_open(&rd, i);
            if (rd.fd < 0 || rd.size < meta->files[i].length)
                job->mismatch = true;
        }
        if (rd.fd >= 0)
            close(rd.fd);
        return 0;
    }

    /* Pieces are read through storage (daemon/storage.h): the same path
     * walk as the engine's writes (nothing followed below the download
     * directory), pad files as zeros. */
    struct storage *st = NULL;
    int r = storage_open(&st, meta, job->dir, 0);
    if (r < 0)
        return r;
    uint8_t *buf = malloc(meta->piece_length ? meta->piece_length : 1);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!buf || !ctx) {
        free(buf);
        EVP_MD_CTX_free(ctx);
        storage_close(st);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < meta->n_pieces; i++) {
        if (atomic_load_explicit(&job->cancel, memory_order_relaxed)) {
            job->cancelled = true;
            r = -ECANCELED;
            break;
        }
        int k = storage_read_piece(st, i, buf);
        if (k >= 0) {
            uint8_t md[EVP_MAX_MD_SIZE];
            unsigned mdlen = 0;
            job->any_data = true;
            if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
                EVP_DigestUpdate(ctx, buf, (size_t)k) == 1 &&
                EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20 &&
                memcmp(md, meta->pieces + (size_t)i * 20, 20) == 0)
                job->have[i / 8] |= (uint8_t)(0x80u >> (i % 8));
        } else if (k != -ENOENT && k != -ENOTDIR && k != -ENODATA &&
                   k != -ELOOP) {
            /* Missing data fails the piece; anything else is an error
             * that the user must see (permission, I/O). */
            struct storage_error se;
            char path[4096];
            if (storage_get_error(st, &se) != 0) {
                snprintf(path, sizeof(path), "%s/%s", job->dir, se.path);
                note_error(job, k, path);
            } else {
                note_error(job, k, job->dir);
            }
        }
        atomic_store_explicit(&job->done, i + 1, memory_order_relaxed);
    }
    storage_close(st);
    free(buf);
    EVP_MD_CTX_free(ctx);
    if (r == 0)
        torrent_file_have(meta, job->have, meta->n_pieces, job->file_have);
    return r;
}
