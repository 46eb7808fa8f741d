/* chan — fixed-size records on pipes between the reactor and its threads.
 *
 * Thread: any, per function as said below.  No libev, no logging.
 *
 * A record is CHAN_REC_SIZE bytes (<= PIPE_BUF, checked at compile time),
 * so every write of up to CHAN_BATCH_MAX records is atomic: a reader never
 * sees part of a record, and every read of a multiple of CHAN_REC_SIZE
 * bytes returns whole records.  A record carries its type (the user's
 * enum), the slot id and generation of the connection it is about (so a
 * record about a connection whose slot was reused is recognised and
 * dropped: chan_rec_current()), a cumulative acknowledgement of commands
 * (see credit below), a small inline payload and at most one owned
 * pointer with the function that frees it.
 *
 * Ownership: a record's ptr belongs to whoever holds the record.  The
 * writer forgets it once the write succeeded (on failure it still owns
 * it); the reader frees it with chan_rec_release() or takes it (sets
 * rec.ptr to NULL).  When a pipe closes, whoever reads it last drains it
 * with chan_drain(), which frees what the records own.
 *
 * Two directions, two disciplines:
 *
 * Events (thread -> reactor).  The thread writes with chan_write(), which
 * blocks while the pipe is full.  That cannot deadlock: the reactor is the
 * only reader, it never waits for any thread (its own writes are
 * non-blocking and bounded by credit, below), so it always comes back to
 * drain the pipe.  A deadlock needs a cycle of waits and the reactor never
 * waits.  While a thread is blocked here it does not read its commands;
 * that is what the credit absorbs.
 *
 * Commands (reactor -> thread).  The write end is O_NONBLOCK and each
 * command pipe has a credit of CHAN_CREDIT records: the reactor counts the
 * records it wrote (tx->sent), the thread counts those it read and reports
 * that count in the ack field of its event records (at the latest every
 * CHAN_ACK_EVERY commands, with a record of its own if it has nothing
 * else to say); chan_tx_ack() takes it.  sent - acked is what may sit in
 * the pipe.  CHAN_CREDIT * CHAN_REC_SIZE = 4 KiB fits any pipe, even one
 * that the kernel shrank to one page because the user passed
 * /proc/sys/fs/pipe-user-pages-soft, so an honest reader never makes the
 * reactor see EAGAIN.  Out of credit (-ENOBUFS) or EAGAIN (-EAGAIN) means
 * the thread stopped reading its commands: the caller drops that thread's
 * connection, it never waits.
 */
#ifndef TD_DAEMON_CHAN_H
#define TD_DAEMON_CHAN_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CHAN_REC_SIZE 64
#define CHAN_PAYLOAD 32          /* inline payload bytes */
#define CHAN_BATCH_MAX (PIPE_BUF / CHAN_REC_SIZE) /* records per write */
#define CHAN_CREDIT 64           /* command records in flight per pipe */
#define CHAN_ACK_EVERY 8         /* a reader acknowledges at least this often */
#define CHAN_PIPE_SIZE (16u << 10) /* pipe capacity asked for (F_SETPIPE_SZ) */

/* Frees a record's owned pointer. */
typedef void chan_free_fn(void *p);

struct chan_rec {
    uint16_t type;         /* the user's enum; 0 is never used */
    uint16_t count;        /* items in the payload or behind ptr */
    uint32_t slot;         /* connection slot id */
    uint32_t gen;          /* generation of that slot */
    uint32_t ack;          /* events: commands read so far (cumulative) */
    void *ptr;             /* owned by the record's holder, or NULL */
    chan_free_fn *ptr_free; /* frees ptr; NULL: ptr is borrowed */
    union {
        uint8_t b[CHAN_PAYLOAD];
        uint16_t u16[CHAN_PAYLOAD / 2];
        uint32_t u32[CHAN_PAYLOAD / 4];
        uint64_t u64[CHAN_PAYLOAD / 8];
    } p;
};
_Static_assert(sizeof(struct chan_rec) == CHAN_REC_SIZE,
               "chan_rec has no padding and a fixed size");
_Static_assert(CHAN_REC_SIZE <= PIPE_BUF, "pipe records are written whole");
_Static_assert(CHAN_CREDIT * CHAN_REC_SIZE <= 4096,
               "the credit fits a one-page pipe");
_Static_assert(CHAN_ACK_EVERY < CHAN_CREDIT, "acks come before credit ends");

/* The reactor's end of a command pipe and its credit.  Thread: the one
 * that writes (the reactor). */
struct chan_tx {
    int fd;         /* write end, O_NONBLOCK; borrowed (the caller closes) */
    uint32_t sent;  /* records written, wrapping */
    uint32_t acked; /* records the reader said it read, wrapping */
};

/* Make a pipe: ret_fds[0] the read end, ret_fds[1] the write end, both
 * O_CLOEXEC; nonblock_rd / nonblock_wr make that end O_NONBLOCK.  Asks for
 * a capacity of CHAN_PIPE_SIZE (smaller than the default 64 KiB, so that a
 * thousand peers stay within the per-user pipe page budget; ignored if the
 * kernel refuses).  Returns 0 or -errno (nothing is left open). */
int chan_pipe(int ret_fds[2], bool nonblock_rd, bool nonblock_wr);

/* Write n (1..CHAN_BATCH_MAX) records in one atomic write, blocking while
 * the pipe is full (the thread's side; see above).  EINTR is retried.
 * Returns 0 (the owned pointers now belong to the reader), or -errno
 * (-EPIPE: the reader is gone; the records are still the caller's). */
int chan_write(int fd, const struct chan_rec *recs, size_t n);

/* Start tx on fd (sent = acked = 0). */
void chan_tx_init(struct chan_tx *tx, int fd);

/* Records written and not yet acknowledged. */
uint32_t chan_tx_inflight(const struct chan_tx *tx);

/* Send one record without blocking, within credit.  Returns 0 (ownership
 * of rec->ptr passed to the reader), -ENOBUFS when the credit is used up,
 * -EAGAIN when the pipe is full, or another -errno; on failure rec->ptr is
 * still the caller's.  A failure means the reader is stuck or gone: drop
 * it.  Thread: the writer's. */
int chan_send(struct chan_tx *tx, const struct chan_rec *rec);

/* Take the ack of a record read from the other direction.  Returns 0, or
 * -EPROTO if it acknowledges more than was sent (a bug in the reader;
 * tx is unchanged). */
int chan_tx_ack(struct chan_tx *tx, uint32_t ack);

/* Read up to max whole records from fd (which should be O_NONBLOCK for a
 * reactor).  Returns the count (> 0), 0 at end of file (every writer
 * closed and nothing left), -EAGAIN if nothing is there now, -EPROTO for
 * a read that is not a whole number of records (a bug: records were
 * written whole), or -errno.  The records read belong to the caller. */
ssize_t chan_read(int fd, struct chan_rec *recs, size_t max);

/* True if rec is about this slot's current generation; false means the
 * record is stale (its connection is gone) and must be released. */
bool chan_rec_current(const struct chan_rec *rec, uint32_t slot,
                      uint32_t gen);

/* Free what rec owns (ptr_free(ptr) if both set) and clear ptr. */
void chan_rec_release(struct chan_rec *rec);

/* Read fd until it is empty (EAGAIN) or at its end, releasing every
 * record; fd should be O_NONBLOCK or have no writer left, or this waits.
 * Returns the records released.  Call on a pipe's read end before closing
 * it. */
size_t chan_drain(int fd);

/* Close fd if >= 0; returns -1 for "fd = chan_close(fd);". */
int chan_close(int fd);

#endif
