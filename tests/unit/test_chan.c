/* Unit tests for daemon/chan: record size, whole-record reads, generation
 * checks, the command credit and EAGAIN, draining frees owned pointers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/chan.h"

static int freed;

static void
count_free(void *p)
{
    freed++;
    free(p);
}

static struct chan_rec
rec_make(uint16_t type, uint32_t slot, uint32_t gen)
{
    struct chan_rec r;
    memset(&r, 0, sizeof(r));
    r.type = type;
    r.slot = slot;
    r.gen = gen;
    return r;
}

static void
test_record_size(void **state)
{
    (void)state;
    assert_int_equal(sizeof(struct chan_rec), CHAN_REC_SIZE);
    assert_true(CHAN_REC_SIZE <= PIPE_BUF);
    assert_true(CHAN_BATCH_MAX * CHAN_REC_SIZE <= PIPE_BUF);
    assert_int_equal(CHAN_PAYLOAD, sizeof(((struct chan_rec *)0)->p));
}

static void
test_pipe_flags(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(chan_pipe(fds, true, false), 0);
    assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(fds[1], F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(fds[0], F_GETFL) & O_NONBLOCK);
    assert_false(fcntl(fds[1], F_GETFL) & O_NONBLOCK);
    /* Empty: -EAGAIN; closed writer: 0. */
    struct chan_rec r;
    assert_int_equal(chan_read(fds[0], &r, 1), -EAGAIN);
    close(fds[1]);
    assert_int_equal(chan_read(fds[0], &r, 1), 0);
    close(fds[0]);
}

static void
test_batch_roundtrip(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(chan_pipe(fds, true, true), 0);
    struct chan_rec out[CHAN_BATCH_MAX];
    for (size_t i = 0; i < CHAN_BATCH_MAX; i++) {
        out[i] = rec_make((uint16_t)(i + 1), 7, 3);
        out[i].p.u32[0] = (uint32_t)i * 11;
    }
    assert_int_equal(chan_write(fds[1], out, CHAN_BATCH_MAX), 0);
    assert_int_equal(chan_write(fds[1], out, 0), -EINVAL);
    assert_int_equal(chan_write(fds[1], out, CHAN_BATCH_MAX + 1), -EINVAL);
    /* Bounded batches: 5, then the rest. */
    struct chan_rec in[CHAN_BATCH_MAX];
    assert_int_equal(chan_read(fds[0], in, 5), 5);
    assert_int_equal(in[4].type, 5);
    assert_int_equal(chan_read(fds[0], in, CHAN_BATCH_MAX),
                     CHAN_BATCH_MAX - 5);
    assert_int_equal(in[0].p.u32[0], 5 * 11);
    assert_int_equal(chan_read(fds[0], in, 1), -EAGAIN);
    /* A torn record is a bug the reader reports. */
    char junk[10] = {0};
    assert_int_equal(write(fds[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
    assert_int_equal(chan_read(fds[0], in, 1), -EPROTO);
    close(fds[0]);
    close(fds[1]);
}

static void
test_generation(void **state)
{
    (void)state;
    struct chan_rec r = rec_make(1, 4, 9);
    assert_true(chan_rec_current(&r, 4, 9));
    assert_false(chan_rec_current(&r, 4, 10)); /* slot reused */
    assert_false(chan_rec_current(&r, 5, 9));
    /* A stale record is released: its pointer freed. */
    freed = 0;
    r.ptr = malloc(16);
    r.ptr_free = count_free;
    if (!chan_rec_current(&r, 4, 10))
        chan_rec_release(&r);
    assert_int_equal(freed, 1);
    assert_null(r.ptr);
    chan_rec_release(&r); /* twice is harmless */
    assert_int_equal(freed, 1);
    /* A borrowed pointer (no free function) is not freed. */
    int x;
    r.ptr = &x;
    chan_rec_release(&r);
    assert_int_equal(freed, 1);
}

static void
test_credit(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(chan_pipe(fds, true, true), 0);
    struct chan_tx tx;
    chan_tx_init(&tx, fds[1]);
    struct chan_rec r = rec_make(1, 1, 1);
    for (int i = 0; i < CHAN_CREDIT; i++)
        assert_int_equal(chan_send(&tx, &r), 0);
    assert_int_equal(chan_tx_inflight(&tx), CHAN_CREDIT);
    /* Out of credit: the reader is stuck, drop it. */
    assert_int_equal(chan_send(&tx, &r), -ENOBUFS);
    /* The reader reads 10 and says so: 10 more fit. */
    struct chan_rec in[CHAN_BATCH_MAX];
    assert_int_equal(chan_read(fds[0], in, 10), 10);
    assert_int_equal(chan_tx_ack(&tx, 10), 0);
    assert_int_equal(chan_tx_inflight(&tx), CHAN_CREDIT - 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(chan_send(&tx, &r), 0);
    assert_int_equal(chan_send(&tx, &r), -ENOBUFS);
    /* Acknowledging more than was sent is refused. */
    assert_int_equal(chan_tx_ack(&tx, CHAN_CREDIT + 11), -EPROTO);
    assert_int_equal(chan_tx_inflight(&tx), CHAN_CREDIT - 10 + 10);
    /* Wrapping counters. */
    struct chan_tx w = {.fd = fds[1], .sent = UINT32_MAX - 1,
                        .acked = UINT32_MAX - 1};
    assert_int_equal(chan_drain(fds[0]), CHAN_CREDIT);
    assert_int_equal(chan_send(&w, &r), 0);
    assert_int_equal(chan_send(&w, &r), 0);
    assert_int_equal(w.sent, 0);
    assert_int_equal(chan_tx_inflight(&w), 2);
    assert_int_equal(chan_tx_ack(&w, 0), 0);
    assert_int_equal(chan_tx_inflight(&w), 0);
    close(fds[0]);
    close(fds[1]);
}

static void
test_eagain(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(chan_pipe(fds, true, true), 0);
    /* Fill the pipe behind the credit's back. */
    char page[4096];
    memset(page, 0, sizeof(page));
    while (write(fds[1], page, sizeof(page)) > 0)
        ;
    assert_int_equal(errno, EAGAIN);
    struct chan_tx tx;
    chan_tx_init(&tx, fds[1]);
    struct chan_rec r = rec_make(1, 1, 1);
    freed = 0;
    r.ptr = malloc(8);
    r.ptr_free = count_free;
    assert_int_equal(chan_send(&tx, &r), -EAGAIN);
    assert_int_equal(tx.sent, 0);
    /* On failure the pointer is still the caller's. */
    chan_rec_release(&r);
    assert_int_equal(freed, 1);
    close(fds[0]);
    /* No reader at all: -EPIPE (SIGPIPE ignored as the daemon does). */
    signal(SIGPIPE, SIG_IGN);
    r = rec_make(1, 1, 1);
    assert_int_equal(chan_send(&tx, &r), -EPIPE);
    assert_int_equal(chan_write(fds[1], &r, 1), -EPIPE);
    close(fds[1]);
}

static void
test_drain_frees(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(chan_pipe(fds, true, false), 0);
    freed = 0;
    struct chan_rec recs[CHAN_BATCH_MAX];
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < CHAN_BATCH_MAX; i++) {
            recs[i] = rec_make(2, 1, 1);
            if (i % 2 == 0) {
                recs[i].ptr = malloc(32);
                assert_non_null(recs[i].ptr);
                recs[i].ptr_free = count_free;
            }
        }
        assert_int_equal(chan_write(fds[1], recs, CHAN_BATCH_MAX), 0);
    }
    close(fds[1]);
    assert_int_equal(chan_drain(fds[0]), 3 * CHAN_BATCH_MAX);
    assert_int_equal(freed, 3 * CHAN_BATCH_MAX / 2);
    assert_int_equal(chan_drain(fds[0]), 0);
    assert_int_equal(chan_close(fds[0]), -1);
    assert_int_equal(chan_close(-1), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_size),
        cmocka_unit_test(test_pipe_flags),
        cmocka_unit_test(test_batch_roundtrip),
        cmocka_unit_test(test_generation),
        cmocka_unit_test(test_credit),
        cmocka_unit_test(test_eagain),
        cmocka_unit_test(test_drain_frees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
