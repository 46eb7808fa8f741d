/* Unit tests for daemon/worker: jobs run on other threads and come back
 * on the loop's thread, in order for a one-thread pool, past the in-flight
 * credit; barriers; worker_free() drains what is left. */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/worker.h"

#define N_JOBS (3 * WORKER_MAX_INFLIGHT + 7)

struct ctx {
    struct ev_loop *loop;
    struct worker *w;
    pthread_t main;
    unsigned done;
    unsigned next_expected;
    bool in_order;
    bool wrong_thread;
    unsigned chained;
};

struct job {
    struct ctx *c;
    unsigned n;
    pthread_t ran_on;
    int ret;
};

static int
run(void *arg)
{
    struct job *j = arg;
    j->ran_on = pthread_self();
    return j->ret;
}

static void
done(void *arg, int r)
{
    struct job *j = arg;
    struct ctx *c = j->c;
    if (!pthread_equal(pthread_self(), c->main) ||
        pthread_equal(j->ran_on, c->main))
        c->wrong_thread = true;
    if (j->n != c->next_expected || r != j->ret)
        c->in_order = false;
    c->next_expected++;
    c->done++;
    free(j);
    if (c->done == N_JOBS)
        ev_break(c->loop, EVBREAK_ALL);
}

static struct job *
job_new(struct ctx *c, unsigned n)
{
    struct job *j = calloc(1, sizeof(*j));
    assert_non_null(j);
    j->c = c;
    j->n = n;
    j->ret = n % 3 == 0 ? -EIO : (int)n;
    return j;
}

static void
test_order_and_threads(void **state)
{
    (void)state;
    struct ctx c = {.loop = ev_loop_new(EVFLAG_AUTO),
                    .in_order = true,
                    .main = pthread_self()};
    assert_non_null(c.loop);
    assert_int_equal(worker_new(&c.w, c.loop, "test", 1), 0);
    for (unsigned i = 0; i < N_JOBS; i++)
        assert_int_equal(worker_submit(c.w, run, done, job_new(&c, i)), 0);
    assert_int_equal(worker_pending(c.w), N_JOBS);
    ev_run(c.loop, 0);
    assert_int_equal(c.done, N_JOBS);
    assert_true(c.in_order);
    assert_false(c.wrong_thread);
    assert_int_equal(worker_pending(c.w), 0);
    worker_free(c.w);
    ev_loop_destroy(c.loop);
}

static void
count_done(void *arg, int r)
{
    struct ctx *c = arg;
    assert_int_equal(r, 0);
    c->done++;
}

static void
barrier_done(void *arg, int r)
{
    struct ctx *c = arg;
    assert_int_equal(r, 0);
    /* Every job before the barrier is done. */
    assert_int_equal(c->done, 100);
    ev_break(c->loop, EVBREAK_ALL);
}

static int
nop(void *arg)
{
    (void)arg;
    return 0;
}

static void
test_barrier_many_threads(void **state)
{
    (void)state;
    struct ctx c = {.loop = ev_loop_new(EVFLAG_AUTO)};
    assert_int_equal(worker_new(&c.w, c.loop, "test", 1), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(worker_submit(c.w, nop, count_done, &c), 0);
    assert_int_equal(worker_submit(c.w, NULL, barrier_done, &c), 0);
    ev_run(c.loop, 0);
    worker_free(c.w);

    /* Several threads: every job runs exactly once. */
    c.done = 0;
    assert_int_equal(worker_new(&c.w, c.loop, "multi", 4), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(worker_submit(c.w, nop, count_done, &c), 0);
    while (c.done < 1000)
        ev_run(c.loop, EVRUN_ONCE);
    assert_int_equal(worker_pending(c.w), 0);
    worker_free(c.w);
    ev_loop_destroy(c.loop);

    assert_int_equal(worker_new(&c.w, NULL, "bad", 0), -EINVAL);
    assert_int_equal(worker_new(&c.w, NULL, "bad", WORKER_MAX_THREADS + 1),
                     -EINVAL);
}

/* A done() that submits another job, also while worker_free() drains. */
static void chain_done(void *arg, int r);

static void
chain_done(void *arg, int r)
{
    struct ctx *c = arg;
    assert_int_equal(r, 0);
    c->chained++;
    if (c->chained < 5)
        assert_int_equal(worker_submit(c->w, nop, chain_done, c), 0);
}

static void
test_free_drains(void **state)
{
    (void)state;
    struct ctx c = {.loop = ev_loop_new(EVFLAG_AUTO)};
    assert_int_equal(worker_new(&c.w, c.loop, "drain", 2), 0);
    for (int i = 0; i < 2 * WORKER_MAX_INFLIGHT; i++)
        assert_int_equal(worker_submit(c.w, nop, count_done, &c), 0);
    assert_int_equal(worker_submit(c.w, nop, chain_done, &c), 0);
    /* Without running the loop: free runs everything and calls done. */
    worker_free(c.w);
    assert_int_equal(c.done, 2 * WORKER_MAX_INFLIGHT);
    assert_int_equal(c.chained, 5);
    worker_free(NULL);
    ev_loop_destroy(c.loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_threads),
        cmocka_unit_test(test_barrier_many_threads),
        cmocka_unit_test(test_free_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
