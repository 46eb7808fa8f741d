/* Unit tests for daemon/resolver on a real libev loop: a numeric name and
 * "localhost" (from /etc/hosts: no other name is ever looked up, so no
 * DNS traffic leaves the machine), bad arguments, cancel before the
 * thread answered and after it answered but before the callback,
 * timeouts, resolver_free() with lookups pending in a getaddrinfo() that
 * blocks (it must not wait), and many lookups at once, with callbacks
 * that start and cancel others.
 *
 * A blocking getaddrinfo() is a stand-in (resolver_set_gai) that waits
 * for the test to open a gate, then resolves numerically.  Every loop
 * run has a guard. */
#include <errno.h>
#include <ev.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/resolver.h"

#define GUARD 5.0 /* seconds: no loop run may take longer */
#define MANY 100

/* --- the stand-in getaddrinfo ------------------------------------------- */

static atomic_bool gate_open;
static atomic_int gai_entered, gai_returned;

static int
gated_gai(const char *host, const char *service, const struct addrinfo *hints,
          struct addrinfo **res)
{
    atomic_fetch_add(&gai_entered, 1);
    while (!atomic_load(&gate_open))
        usleep(1000);
    struct addrinfo h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    int r = getaddrinfo(host, service, &h, res);
    atomic_fetch_add(&gai_returned, 1);
    return r;
}

static void
gate_reset(void)
{
    atomic_store(&gate_open, false);
    atomic_store(&gai_entered, 0);
    atomic_store(&gai_returned, 0);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait (off the loop) until *v >= n, at most GUARD seconds. */
static void
wait_count(atomic_int *v, int n)
{
    double end = now_s() + GUARD;
    while (atomic_load(v) < n && now_s() < end)
        usleep(1000);
    assert_true(atomic_load(v) >= n);
}

/* --- answers ------------------------------------------------------------ */

struct answer {
    int calls;
    int gai;
    bool v4, v6;
    uint16_t port;
    bool loopback;
};

static void
answer_cb(void *arg, int gai, const struct addrinfo *res)
{
    struct answer *a = arg;
    a->calls++;
    a->gai = gai;
    if (gai == 0)
        assert_non_null(res);
    else
        assert_null(res);
    for (; res; res = res->ai_next) {
        if (res->ai_family == AF_INET) {
            const struct sockaddr_in *s =
                (const struct sockaddr_in *)res->ai_addr;
            a->v4 = true;
            a->port = ntohs(s->sin_port);
            if (ntohl(s->sin_addr.s_addr) == INADDR_LOOPBACK)
                a->loopback = true;
        } else if (res->ai_family == AF_INET6) {
            const struct sockaddr_in6 *s =
                (const struct sockaddr_in6 *)res->ai_addr;
            a->v6 = true;
            a->port = ntohs(s->sin6_port);
            if (IN6_IS_ADDR_LOOPBACK(&s->sin6_addr))
                a->loopback = true;
        }
    }
}

static void
wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Run the loop until *calls >= n or `seconds` passed. */
static void
run_until(struct ev_loop *loop, const int *calls, int n, double seconds)
{
    ev_timer wake;
    ev_timer_init(&wake, wake_cb, 0.005, 0.005);
    ev_timer_start(loop, &wake);
    double end = now_s() + seconds;
    while ((!calls || *calls < n) && now_s() < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &wake);
}

/* --- tests -------------------------------------------------------------- */

static void
test_numeric_and_localhost(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r;
    assert_int_equal(resolver_new(&r, loop, 2), 0);

    struct answer a = {0}, b = {0}, c = {0};
    struct resolver_lookup *l = NULL;
    assert_int_equal(resolver_lookup(r, "127.0.0.1", "6881", AF_UNSPEC,
                                     SOCK_STREAM, AI_NUMERICSERV, 0, answer_cb,
                                     &a, &l),
                     0);
    assert_non_null(l);
    /* Never from inside resolver_lookup(). */
    assert_int_equal(a.calls, 0);
    assert_int_equal(resolver_lookup(r, "localhost", "6882", AF_INET,
                                     SOCK_STREAM, AI_NUMERICSERV, 2.0,
                                     answer_cb, &b, NULL),
                     0);
    assert_int_equal(resolver_lookup(r, "::1", "80", AF_INET6, SOCK_STREAM,
                                     AI_NUMERICSERV, 0, answer_cb, &c, NULL),
                     0);
    assert_int_equal(resolver_pending(r), 3);
    int total = 0;
    double end = now_s() + GUARD;
    while (total < 3 && now_s() < end) {
        run_until(loop, NULL, 0, 0.01);
        total = a.calls + b.calls + c.calls;
    }
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.gai, 0);
    assert_true(a.v4 && a.loopback);
    assert_int_equal(a.port, 6881);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.gai, 0);
    assert_true(b.v4 && !b.v6 && b.loopback);
    assert_int_equal(b.port, 6882);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.gai, 0);
    assert_true(c.v6 && !c.v4 && c.loopback);
    assert_int_equal(resolver_pending(r), 0);

    /* A numeric host of the wrong family fails with a gai error. */
    struct answer d = {0};
    assert_int_equal(resolver_lookup(r, "127.0.0.1", "1", AF_INET6, SOCK_STREAM,
                                     AI_NUMERICSERV | AI_NUMERICHOST, 0,
                                     answer_cb, &d, NULL),
                     0);
    run_until(loop, &d.calls, 1, GUARD);
    assert_int_equal(d.calls, 1);
    assert_true(d.gai != 0);

    resolver_free(r);
    resolver_free(NULL);
    ev_loop_destroy(loop);
}

static void
test_bad_arguments(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r;
    assert_int_equal(resolver_new(&r, loop, 0), 0);
    struct answer a = {0};
    char longname[RESOLVER_HOST_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    struct resolver_lookup *l = (struct resolver_lookup *)&a;
    assert_int_equal(
        resolver_lookup(r, "", "1", AF_UNSPEC, 0, 0, 0, answer_cb, &a, &l),
        -EINVAL);
    assert_int_equal(
        resolver_lookup(r, NULL, "1", AF_UNSPEC, 0, 0, 0, answer_cb, &a, &l),
        -EINVAL);
    assert_int_equal(resolver_lookup(r, longname, "1", AF_UNSPEC, 0, 0, 0,
                                     answer_cb, &a, &l),
                     -EINVAL);
    assert_int_equal(resolver_lookup(r, "localhost", "", AF_UNSPEC, 0, 0, 0,
                                     answer_cb, &a, &l),
                     -EINVAL);
    assert_int_equal(
        resolver_lookup(r, "localhost", "1", AF_UNSPEC, 0, 0, 0, NULL, &a, &l),
        -EINVAL);
    /* ret_ is written only on success. */
    assert_ptr_equal(l, (struct resolver_lookup *)&a);
    assert_int_equal(resolver_pending(r), 0);
    resolver_cancel(r, NULL);
    run_until(loop, NULL, 0, 0.05);
    assert_int_equal(a.calls, 0);
    resolver_free(r);
    ev_loop_destroy(loop);
}

static void
test_cancel(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r;
    assert_int_equal(resolver_new(&r, loop, 1), 0);
    gate_reset();
    resolver_set_gai(r, gated_gai);

    /* Cancelled while its thread is in getaddrinfo(). */
    struct answer a = {0}, b = {0};
    struct resolver_lookup *la, *lb;
    assert_int_equal(resolver_lookup(r, "127.0.0.1", "1", AF_INET, 0,
                                     AI_NUMERICSERV, 0, answer_cb, &a, &la),
                     0);
    wait_count(&gai_entered, 1);
    resolver_cancel(r, la);
    assert_int_equal(resolver_pending(r), 0);
    /* Cancelled while still queued behind it (one thread). */
    assert_int_equal(resolver_lookup(r, "127.0.0.2", "1", AF_INET, 0,
                                     AI_NUMERICSERV, 0, answer_cb, &b, &lb),
                     0);
    resolver_cancel(r, lb);
    atomic_store(&gate_open, true);
    wait_count(&gai_returned, 1);
    run_until(loop, NULL, 0, 0.2);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 0);
    /* The queued one was dropped unresolved. */
    assert_int_equal(atomic_load(&gai_entered), 1);

    /* Answered by the thread, cancelled before the loop saw it. */
    struct answer c = {0};
    struct resolver_lookup *lc;
    assert_int_equal(resolver_lookup(r, "127.0.0.1", "2", AF_INET, 0,
                                     AI_NUMERICSERV, 0, answer_cb, &c, &lc),
                     0);
    wait_count(&gai_returned, 2);
    usleep(20000);
    resolver_cancel(r, lc);
    run_until(loop, NULL, 0, 0.2);
    assert_int_equal(c.calls, 0);

    /* The resolver still works after all that. */
    struct answer d = {0};
    assert_int_equal(resolver_lookup(r, "127.0.0.1", "3", AF_INET, 0,
                                     AI_NUMERICSERV, 0, answer_cb, &d, NULL),
                     0);
    run_until(loop, &d.calls, 1, GUARD);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.gai, 0);
    assert_int_equal(d.port, 3);
    resolver_free(r);
    ev_loop_destroy(loop);
}

static void
test_timeout(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r;
    assert_int_equal(resolver_new(&r, loop, 1), 0);
    gate_reset();
    resolver_set_gai(r, gated_gai);
    struct answer a = {0};
    assert_int_equal(resolver_lookup(r, "127.0.0.1", "1", AF_INET, 0,
                                     AI_NUMERICSERV, 0.05, answer_cb, &a, NULL),
                     0);
    run_until(loop, &a.calls, 1, GUARD);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.gai, EAI_AGAIN);
    assert_int_equal(resolver_pending(r), 0);
    /* The late answer is dropped. */
    atomic_store(&gate_open, true);
    wait_count(&gai_returned, 1);
    run_until(loop, NULL, 0, 0.1);
    assert_int_equal(a.calls, 1);
    resolver_free(r);
    ev_loop_destroy(loop);
}

static void
test_free_pending(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r;
    assert_int_equal(resolver_new(&r, loop, 2), 0);
    gate_reset();
    resolver_set_gai(r, gated_gai);
    struct answer a[6];
    memset(a, 0, sizeof(a));
    for (int i = 0; i < 6; i++)
        assert_int_equal(resolver_lookup(r, "127.0.0.1", "1", AF_INET, 0,
                                         AI_NUMERICSERV, i % 2 ? 0.01 : 0,
                                         answer_cb, &a[i], NULL),
                         0);
    wait_count(&gai_entered, 2);
    /* Both threads are blocked: free must not wait for them. */
    double t0 = now_s();
    resolver_free(r);
    assert_true(now_s() - t0 < 0.5);
    run_until(loop, NULL, 0, 0.05);
    atomic_store(&gate_open, true);
    /* The two blocked lookups finish; the queued ones are dropped. */
    wait_count(&gai_returned, 2);
    usleep(50000);
    assert_int_equal(atomic_load(&gai_entered), 2);
    for (int i = 0; i < 6; i++)
        assert_int_equal(a[i].calls, 0);
    ev_loop_destroy(loop);
}

/* Many lookups on four threads; every tenth callback starts one more and
 * cancels the last lookup still pending from the first round. */
struct many {
    struct resolver *r;
    struct resolver_lookup *lk[MANY];
    struct answer ans[MANY];
    int calls, extra, cancelled, errors;
    struct answer more[MANY / 10];
};

struct many_arg {
    struct many *m;
    int i;
};

static struct many_arg margs[MANY];

static void
many_cb(void *arg, int gai, const struct addrinfo *res)
{
    struct many_arg *ma = arg;
    struct many *m = ma->m;
    m->lk[ma->i] = NULL;
    answer_cb(&m->ans[ma->i], gai, res);
    if (gai != 0 || !m->ans[ma->i].loopback)
        m->errors++;
    m->calls++;
    if (m->calls % 10 == 0 && m->extra < MANY / 10) {
        assert_int_equal(resolver_lookup(m->r, "localhost", "7", AF_INET,
                                         SOCK_STREAM, AI_NUMERICSERV, 0,
                                         answer_cb, &m->more[m->extra], NULL),
                         0);
        m->extra++;
        for (int j = MANY - 1; j >= 0; j--) {
            if (m->lk[j]) {
                resolver_cancel(m->r, m->lk[j]);
                m->lk[j] = NULL;
                m->cancelled++;
                break;
            }
        }
    }
}

static void
test_many(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    static struct many m;
    memset(&m, 0, sizeof(m));
    assert_int_equal(resolver_new(&m.r, loop, 4), 0);
    for (int i = 0; i < MANY; i++) {
        char port[16];
        (void)snprintf(port, sizeof(port), "%d", 1000 + i);
        margs[i].m = &m;
        margs[i].i = i;
        assert_int_equal(resolver_lookup(m.r, i % 2 ? "localhost" : "127.0.0.1",
                                         port, AF_INET, SOCK_STREAM,
                                         AI_NUMERICSERV, 0, many_cb, &margs[i],
                                         &m.lk[i]),
                         0);
    }
    double end = now_s() + GUARD;
    while (resolver_pending(m.r) > 0 && now_s() < end)
        run_until(loop, NULL, 0, 0.01);
    assert_int_equal(resolver_pending(m.r), 0);
    assert_int_equal(m.errors, 0);
    assert_int_equal(m.calls + m.cancelled, MANY);
    for (int i = 0; i < MANY; i++) {
        assert_true(m.ans[i].calls <= 1);
        if (m.ans[i].calls)
            assert_int_equal(m.ans[i].port, 1000 + i);
    }
    for (int i = 0; i < m.extra; i++) {
        assert_int_equal(m.more[i].calls, 1);
        assert_int_equal(m.more[i].gai, 0);
        assert_true(m.more[i].loopback);
    }
    resolver_free(m.r);
    ev_loop_destroy(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numeric_and_localhost),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_free_pending),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
