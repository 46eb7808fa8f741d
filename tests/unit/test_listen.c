/* Unit tests for daemon/listen: parsing and formatting peer addresses
 * (table-driven), and a real listen socket on loopback with port 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/listen.h"

static const struct {
    const char *in;
    int r;
    const char *out; /* listen_format_addr() of the result */
} parse_cases[] = {
    {"127.0.0.2:6881", 0, "127.0.0.2:6881"},
    {"0.0.0.0:0", 0, "0.0.0.0:0"},
    {"[::1]:51413", 0, "[::1]:51413"},
    {"[fe80::1]:1", 0, "[fe80::1]:1"},
    {"127.0.0.1:65535", 0, "127.0.0.1:65535"},
    {"127.0.0.1:65536", -EINVAL, NULL},
    {"127.0.0.1:", -EINVAL, NULL},
    {"127.0.0.1", -EINVAL, NULL},
    {":80", -EINVAL, NULL},
    {"localhost:80", -EINVAL, NULL}, /* numeric only */
    {"::1:80", -EINVAL, NULL},       /* v6 needs brackets */
    {"[::1]80", -EINVAL, NULL},
    {"[::1:80", -EINVAL, NULL},
    {"1.2.3.4:8x", -EINVAL, NULL},
    {"1.2.3.4:-1", -EINVAL, NULL},
    {"1.2.3.4: 80", -EINVAL, NULL},
    {"1.2.3.4:+80", -EINVAL, NULL},
    {"", -EINVAL, NULL},
};

static void
test_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]);
         i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        int r = listen_parse_addr(parse_cases[i].in, &ss, &len);
        if (r != parse_cases[i].r)
            fail_msg("'%s': %d, expected %d", parse_cases[i].in, r,
                     parse_cases[i].r);
        if (r == 0) {
            char buf[80];
            listen_format_addr((struct sockaddr *)&ss, buf, sizeof(buf));
            assert_string_equal(buf, parse_cases[i].out);
            assert_int_equal(len, ss.ss_family == AF_INET
                                      ? sizeof(struct sockaddr_in)
                                      : sizeof(struct sockaddr_in6));
        }
    }
    assert_int_equal(listen_parse_addr(NULL, NULL, NULL), -EINVAL);
}

static int accepted;

static void
on_accept(void *arg, int fd, const struct sockaddr *addr, socklen_t len)
{
    (void)arg;
    (void)len;
    assert_int_equal(addr->sa_family, AF_INET);
    accepted++;
    close(fd);
}

static void
test_listen_accept(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct listen *l;
    assert_int_equal(listen_new(&l, loop, "nonsense", on_accept, NULL),
                     -EINVAL);
    assert_int_equal(listen_new(&l, loop, "127.0.0.1:0", on_accept, NULL), 0);
    uint16_t port = listen_port(l);
    assert_true(port != 0);
    /* The same port again: taken. */
    char again[32];
    snprintf(again, sizeof(again), "127.0.0.1:%u", port);
    struct listen *l2;
    assert_int_equal(listen_new(&l2, loop, again, on_accept, NULL),
                     -EADDRINUSE);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
    for (int i = 0; i < 100 && !accepted; i++)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(1000);
    assert_int_equal(accepted, 1);
    close(c);
    listen_free(l);
    listen_free(NULL);
    ev_loop_destroy(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_listen_accept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
