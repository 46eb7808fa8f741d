/* chan — fixed-size records on pipes; see chan.h for the disciplines. */
#include "daemon/chan.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static int
set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int
chan_pipe(int ret_fds[2], bool nonblock_rd, bool nonblock_wr)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    int r = 0;
    if (nonblock_rd)
        r = set_nonblock(fds[0]);
    if (r == 0 && nonblock_wr)
        r = set_nonblock(fds[1]);
    if (r < 0) {
        (void)close(fds[0]);
        (void)close(fds[1]);
        return r;
    }
    /* Smaller than the default: the kernel accounts pipe pages per user
     * and shrinks pipes past the soft limit; the credit fits anyway. */
    (void)fcntl(fds[1], F_SETPIPE_SZ, (int)CHAN_PIPE_SIZE);
    ret_fds[0] = fds[0];
    ret_fds[1] = fds[1];
    return 0;
}

int
chan_write(int fd, const struct chan_rec *recs, size_t n)
{
    if (n == 0 || n > CHAN_BATCH_MAX)
        return -EINVAL;
    size_t len = n * sizeof(*recs);
    for (;;) {
        ssize_t w = write(fd, recs, len);
        if (w == (ssize_t)len)
            return 0;
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        /* A write of at most PIPE_BUF bytes to a pipe is all or nothing. */
        return -EIO;
    }
}

void
chan_tx_init(struct chan_tx *tx, int fd)
{
    tx->fd = fd;
    tx->sent = 0;
    tx->acked = 0;
}

uint32_t
chan_tx_inflight(const struct chan_tx *tx)
{
    return tx->sent - tx->acked;
}

int
chan_send(struct chan_tx *tx, const struct chan_rec *rec)
{
    if (tx->fd < 0)
        return -EBADF;
    if (chan_tx_inflight(tx) >= CHAN_CREDIT)
        return -ENOBUFS;
    for (;;) {
        ssize_t w = write(tx->fd, rec, sizeof(*rec));
        if (w == (ssize_t)sizeof(*rec)) {
            tx->sent++;
            return 0;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        return -EIO;
    }
}

int
chan_tx_ack(struct chan_tx *tx, uint32_t ack)
{
    /* Wrap-safe: ack must lie in [acked, sent]. */
    if (ack - tx->acked > tx->sent - tx->acked)
        return -EPROTO;
    tx->acked = ack;
    return 0;
}

ssize_t
chan_read(int fd, struct chan_rec *recs, size_t max)
{
    if (max == 0)
        return -EINVAL;
    for (;;) {
        ssize_t n = read(fd, recs, max * sizeof(*recs));
        if (n > 0) {
            if (n % (ssize_t)sizeof(*recs) != 0)
                return -EPROTO;
            return n / (ssize_t)sizeof(*recs);
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

bool
chan_rec_current(const struct chan_rec *rec, uint32_t slot, uint32_t gen)
{
    return rec->slot == slot && rec->gen == gen;
}

void
chan_rec_release(struct chan_rec *rec)
{
    if (rec->ptr && rec->ptr_free)
        rec->ptr_free(rec->ptr);
    rec->ptr = NULL;
    rec->ptr_free = NULL;
}

size_t
chan_drain(int fd)
{
    size_t total = 0;
    struct chan_rec recs[CHAN_BATCH_MAX];
    for (;;) {
        ssize_t n = chan_read(fd, recs, CHAN_BATCH_MAX);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            chan_rec_release(&recs[i]);
        total += (size_t)n;
    }
    return total;
}

int
chan_close(int fd)
{
    if (fd >= 0)
        (void)close(fd);
    return -1;
}
