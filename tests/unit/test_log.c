/* Unit tests for common/log: levels, the "<N>" and terminal formats, one
 * line per message, fields, *_errno, and the choice between stderr and
 * journald.  stderr is redirected to a file (or a pseudo-terminal) around
 * each call; journald itself is tested by tests/integration/test_service.py
 * with a fake journal socket. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"

static int saved_stderr = -1;
static char capture_path[64];

/* Send fd 2 to a fresh file until captured() returns what was written. */
static void
capture(void)
{
    snprintf(capture_path, sizeof(capture_path), "/tmp/test_log.XXXXXX");
    int fd = mkostemp(capture_path, O_CLOEXEC);
    assert_true(fd >= 0);
    saved_stderr = fcntl(2, F_DUPFD_CLOEXEC, 10);
    assert_true(saved_stderr >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    close(fd);
    unsetenv("JOURNAL_STREAM");
    log_open();
}

static char *
captured(void)
{
    static char text[16384];
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    int fd = open(capture_path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t n = read(fd, text, sizeof(text) - 1);
    assert_true(n >= 0);
    text[n] = '\0';
    close(fd);
    unlink(capture_path);
    log_open();
    return text;
}

static void
test_levels(void **state)
{
    (void)state;
    capture();
    log_set_level(LOG_LEVEL_INFO);
    assert_int_equal(log_get_level(), LOG_LEVEL_INFO);
    log_err("e %d", 1);
    log_warn("w");
    log_notice("n");
    log_info("i");
    log_debug("d");
    assert_string_equal(captured(), "<3>e 1\n<4>w\n<5>n\n<6>i\n");

    capture();
    log_set_level(LOG_LEVEL_DEBUG);
    log_debug("d");
    log_set_level(LOG_LEVEL_ERR);
    log_warn("w");
    log_err("e");
    assert_string_equal(captured(), "<7>d\n<3>e\n");

    /* Out-of-range levels are clamped. */
    log_set_level((enum log_level)0);
    assert_int_equal(log_get_level(), LOG_LEVEL_ERR);
    log_set_level((enum log_level)42);
    assert_int_equal(log_get_level(), LOG_LEVEL_DEBUG);
    log_set_level(LOG_LEVEL_INFO);
}

static void
test_level_names(void **state)
{
    (void)state;
    static const char *const names[] = {"err", "warn", "notice", "info",
                                        "debug"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(log_level_from_string(names[i]), LOG_LEVEL_ERR + i);
        assert_string_equal(
            log_level_to_string((enum log_level)(LOG_LEVEL_ERR + i)), names[i]);
    }
    assert_int_equal(log_level_from_string("error"), LOG_LEVEL_ERR);
    assert_int_equal(log_level_from_string("warning"), LOG_LEVEL_WARN);
    assert_int_equal(log_level_from_string("INFO"), -EINVAL);
    assert_int_equal(log_level_from_string(""), -EINVAL);
    assert_int_equal(log_level_from_string(NULL), -EINVAL);
}

static void
test_errno(void **state)
{
    (void)state;
    capture();
    log_set_level(LOG_LEVEL_INFO);
    assert_int_equal(log_err_errno(-ENOENT, "cannot open '%s'", "x"), -ENOENT);
    assert_int_equal(log_warn_errno(-EACCES, "no"), -EACCES);
    /* Below the level: nothing written, r still returned. */
    assert_int_equal(log_errno(LOG_LEVEL_DEBUG, -EIO, "quiet"), -EIO);
    assert_string_equal(captured(),
                        "<3>cannot open 'x': No such file or directory\n"
                        "<4>no: Permission denied\n");
}

static void
test_field(void **state)
{
    (void)state;
    capture();
    log_field(LOG_LEVEL_INFO, "TORRENT", "0123abcd", "added '%s'", "n");
    log_field(LOG_LEVEL_DEBUG, "TORRENT", "0123abcd", "hidden");
    /* A field name journald would refuse is dropped, the message kept. */
    log_field(LOG_LEVEL_NOTICE, "bad name", "v", "kept");
    assert_string_equal(captured(), "<6>[0123abcd] added 'n'\n<5>kept\n");
}

/* A message is one line: newlines inside become spaces, a long one is cut
 * with "..." and still ends in a newline. */
static void
test_one_line(void **state)
{
    (void)state;
    capture();
    log_info("two\nlines\r");
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = '\0';
    log_info("%s", big);
    free(big);
    char *text = captured();
    assert_memory_equal(text, "<6>two lines \n", 14);
    char *second = text + 14;
    assert_memory_equal(second, "<6>xxx", 6);
    char *nl = strchr(second, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    assert_memory_equal(nl - 3, "...", 3);
    assert_true(nl - second < 2100);
}

/* A JOURNAL_STREAM that names another file: stderr lines. */
static void
test_journal_stream_mismatch(void **state)
{
    (void)state;
    capture();
    setenv("JOURNAL_STREAM", "1:2", 1);
    log_open();
    log_notice("plain");
    setenv("JOURNAL_STREAM", "garbage", 1);
    log_open();
    log_notice("plain2");
    unsetenv("JOURNAL_STREAM");
    assert_string_equal(captured(), "<5>plain\n<5>plain2\n");
}

/* On a terminal: "ident: level: message". */
static void
test_tty(void **state)
{
    (void)state;
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) {
        /* No pseudo-terminals in this environment: say so. */
        print_message("no pseudo-terminal (%s): tty format not tested\n",
                      strerror(errno));
        return;
    }
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(slave >= 0);
    int saved = fcntl(2, F_DUPFD_CLOEXEC, 10);
    dup2(slave, 2);
    log_set_ident("tdtest");
    log_open();
    log_warn("careful");
    dup2(saved, 2);
    close(saved);
    close(slave);
    char buf[256];
    ssize_t n = read(master, buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    close(master);
    /* The terminal turns "\n" into "\r\n". */
    assert_non_null(strstr(buf, "tdtest: warn: careful"));
    log_set_ident("torrentd");
    log_open();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_errno),
        cmocka_unit_test(test_field),
        cmocka_unit_test(test_one_line),
        cmocka_unit_test(test_journal_stream_mismatch),
        cmocka_unit_test(test_tty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
