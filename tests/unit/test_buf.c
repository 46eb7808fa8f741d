/* Unit tests for common/buf: growth, the cap, printf, steal, reset. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"

/* The invariants every successful or failed call keeps. */
static void
check_buf(const struct buf *b)
{
    assert_true(b->len <= b->cap);
    if (b->data) {
        assert_true(b->len < b->size);
        assert_true(b->cap == SIZE_MAX || b->size <= b->cap + 1);
        assert_int_equal(b->data[b->len], '\0');
    } else {
        assert_int_equal(b->len, 0);
        assert_int_equal(b->size, 0);
    }
}

static void
test_init_empty(void **state)
{
    (void)state;
    struct buf b;
    memset(&b, 0x5a, sizeof(b));
    buf_init(&b, 100);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.size, 0);
    assert_int_equal(b.cap, 100);
    check_buf(&b);

    /* Never used: steal gives NULL, release and reset are no-ops. */
    size_t n = 7;
    assert_null(buf_steal(&b, &n));
    assert_int_equal(n, 0);
    buf_reset(&b);
    buf_release(&b);
    buf_release(&b);
    buf_release(NULL);
    check_buf(&b);
    assert_int_equal(b.cap, 100);

    /* An empty append allocates the terminator only. */
    assert_int_equal(buf_append(&b, NULL, 0), 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    check_buf(&b);
    buf_release(&b);
}

static void
test_append_growth(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, SIZE_MAX);
    char expect[5000];
    size_t n = 0;

    for (int i = 0; n + 7 < sizeof(expect); i++) {
        char piece[8];
        size_t k = (size_t)(i % 7) + 1;
        for (size_t j = 0; j < k; j++)
            piece[j] = (char)('a' + (i + (int)j) % 26);
        if (i % 3 == 0) {
            assert_int_equal(buf_append(&b, piece, k), 0);
        } else if (i % 3 == 1) {
            for (size_t j = 0; j < k; j++)
                assert_int_equal(buf_putc(&b, piece[j]), 0);
        } else {
            piece[k] = '\0';
            assert_int_equal(buf_puts(&b, piece), 0);
        }
        memcpy(expect + n, piece, k);
        n += k;
        assert_int_equal(b.len, n);
        check_buf(&b);
    }
    assert_memory_equal(b.data, expect, n);

    /* Binary data with NULs. */
    buf_reset(&b);
    assert_int_equal(buf_append(&b, "\0\xff\0", 3), 0);
    assert_int_equal(buf_putc(&b, '\0'), 0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "\0\xff\0\0", 5);
    check_buf(&b);
    buf_release(&b);
}

static void
test_reserve(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1000);
    assert_int_equal(buf_puts(&b, "abc"), 0);
    assert_int_equal(buf_reserve(&b, 500), 0);
    assert_int_equal(b.len, 3);
    assert_true(b.size >= 504);
    assert_string_equal(b.data, "abc");
    char *before = b.data;
    for (int i = 0; i < 500; i++)
        assert_int_equal(buf_putc(&b, 'x'), 0);
    assert_ptr_equal(b.data, before); /* no move after the reserve */
    assert_int_equal(buf_reserve(&b, 497), 0);
    assert_int_equal(buf_reserve(&b, 498), -EMSGSIZE);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -EMSGSIZE);
    assert_int_equal(b.len, 503);
    check_buf(&b);
    buf_release(&b);

    /* No cap at all: a request that leaves no room for the NUL fails
     * before any allocation. */
    buf_init(&b, SIZE_MAX);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -ENOMEM);
    assert_int_equal(buf_puts(&b, "ab"), 0);
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 2), -ENOMEM);
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 1), -EMSGSIZE);
    assert_string_equal(b.data, "ab");
    check_buf(&b);
    buf_release(&b);
}

static void
test_cap(void **state)
{
    (void)state;
    struct buf b;

    for (size_t cap = 0; cap < 300; cap += cap < 20 ? 1 : 37) {
        buf_init(&b, cap);
        for (size_t i = 0; i < cap; i++)
            assert_int_equal(buf_putc(&b, 'x'), 0);
        assert_int_equal(b.len, cap);
        check_buf(&b);
        /* Exactly full: one more byte fails, nothing changes. */
        assert_int_equal(buf_putc(&b, 'y'), -EMSGSIZE);
        assert_int_equal(buf_puts(&b, "y"), -EMSGSIZE);
        assert_int_equal(buf_append(&b, "yy", 2), -EMSGSIZE);
        assert_int_equal(buf_printf(&b, "%d", 1), -EMSGSIZE);
        assert_int_equal(buf_reserve(&b, 1), -EMSGSIZE);
        assert_int_equal(buf_append(&b, "", 0), 0);
        assert_int_equal(buf_printf(&b, "%s", ""), 0);
        assert_int_equal(buf_reserve(&b, 0), 0);
        assert_int_equal(b.len, cap);
        check_buf(&b);
        buf_release(&b);

        /* One append of exactly cap bytes, and of cap + 1. */
        char *blob = malloc(cap + 1);
        assert_non_null(blob);
        memset(blob, 'z', cap + 1);
        buf_init(&b, cap);
        assert_int_equal(buf_append(&b, blob, cap + 1), -EMSGSIZE);
        assert_int_equal(b.len, 0);
        assert_int_equal(buf_append(&b, blob, cap), 0);
        assert_int_equal(b.len, cap);
        check_buf(&b);
        buf_release(&b);
        free(blob);
    }

    /* A failing append in the middle keeps what was there. */
    buf_init(&b, 10);
    assert_int_equal(buf_puts(&b, "hello"), 0);
    assert_int_equal(buf_puts(&b, "world!"), -EMSGSIZE);
    assert_string_equal(b.data, "hello");
    assert_int_equal(buf_puts(&b, "world"), 0);
    assert_string_equal(b.data, "helloworld");
    /* Huge n must not wrap around the cap check. */
    assert_int_equal(buf_append(&b, "", SIZE_MAX), -EMSGSIZE);
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 5), -EMSGSIZE);
    check_buf(&b);
    buf_release(&b);
}

static void
test_printf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, SIZE_MAX);

    assert_int_equal(buf_printf(&b, "%d-%s-%c", 42, "x", 'y'), 0);
    assert_string_equal(b.data, "42-x-y");
    assert_int_equal(buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 6);
    assert_int_equal(buf_printf(&b, "%05u|%lld", 7u, LLONG_MIN), 0);
    assert_string_equal(b.data, "42-x-y00007|-9223372036854775808");
    check_buf(&b);

    /* Around the 256-byte stack buffer, and far past it. */
    static const size_t sizes[] = {254, 255, 256, 257, 1000, 70000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        char *s = malloc(n + 1);
        assert_non_null(s);
        for (size_t j = 0; j < n; j++)
            s[j] = (char)('A' + j % 26);
        s[n] = '\0';
        buf_reset(&b);
        assert_int_equal(buf_puts(&b, "<"), 0);
        assert_int_equal(buf_printf(&b, "%s>", s), 0);
        assert_int_equal(b.len, n + 2);
        assert_int_equal(b.data[0], '<');
        assert_memory_equal(b.data + 1, s, n);
        assert_int_equal(b.data[n + 1], '>');
        check_buf(&b);

        /* The same under a cap: exactly fits, one short fails clean. */
        struct buf c;
        buf_init(&c, n + 2);
        assert_int_equal(buf_puts(&c, "<"), 0);
        assert_int_equal(buf_printf(&c, "%s>>", s), -EMSGSIZE);
        assert_int_equal(c.len, 1);
        assert_string_equal(c.data, "<");
        check_buf(&c);
        assert_int_equal(buf_printf(&c, "%s>", s), 0);
        assert_int_equal(c.len, n + 2);
        assert_memory_equal(c.data, b.data, n + 2);
        check_buf(&c);
        buf_release(&c);
        free(s);
    }
    buf_release(&b);
}

static int
call_vprintf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
call_vprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

static void
test_vprintf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4096);
    char big[600];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(call_vprintf(&b, "%s|%d", "ab", 5), 0);
    assert_int_equal(call_vprintf(&b, "%s|%s", big, big), 0);
    assert_int_equal(b.len, 4 + 599 * 2 + 1);
    assert_memory_equal(b.data, "ab|5qqq", 7);
    assert_int_equal(b.data[4 + 599], '|');
    check_buf(&b);
    buf_release(&b);
}

static void
test_steal(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 64);
    assert_int_equal(buf_puts(&b, "owned"), 0);
    size_t n = 0;
    char *p = buf_steal(&b, &n);
    assert_non_null(p);
    assert_int_equal(n, 5);
    assert_string_equal(p, "owned"); /* still NUL-terminated */
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.size, 0);
    assert_int_equal(b.cap, 64);
    check_buf(&b);

    /* The buffer works again after a steal, and steal without ret_len. */
    assert_int_equal(buf_puts(&b, "again"), 0);
    char *q = buf_steal(&b, NULL);
    assert_string_equal(q, "again");
    assert_null(buf_steal(&b, &n));
    assert_int_equal(n, 0);
    free(p);
    free(q);
    buf_release(&b);
}

static void
test_memdup0(void **state)
{
    (void)state;
    /* The source has no terminator: an exact-size heap copy, so that ASan
     * would catch a read past the n bytes. */
    char *src = malloc(3);
    assert_non_null(src);
    memcpy(src, "abc", 3);
    char *s = buf_memdup0(src, 2);
    assert_non_null(s);
    assert_string_equal(s, "ab");
    free(s);
    s = buf_memdup0(src, 3);
    assert_string_equal(s, "abc");
    free(s);
    s = buf_memdup0(src, 0);
    assert_string_equal(s, "");
    free(s);
    s = buf_memdup0("a\0b", 3); /* inner NULs are copied too */
    assert_memory_equal(s, "a\0b\0", 4);
    free(s);
    free(src);
}

static void
test_reset_release(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 128);
    assert_int_equal(buf_puts(&b, "some text"), 0);
    char *data = b.data;
    size_t size = b.size;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data); /* memory kept */
    assert_int_equal(b.size, size);
    assert_string_equal(b.data, "");
    check_buf(&b);
    assert_int_equal(buf_puts(&b, "new"), 0);
    assert_string_equal(b.data, "new");

    /* After a reset the whole cap is available again. */
    buf_reset(&b);
    for (int i = 0; i < 128; i++)
        assert_int_equal(buf_putc(&b, '.'), 0);
    assert_int_equal(buf_putc(&b, '.'), -EMSGSIZE);

    buf_release(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 128);
    check_buf(&b);
    assert_int_equal(buf_puts(&b, "reuse"), 0);
    assert_string_equal(b.data, "reuse");
    buf_release(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_empty),
        cmocka_unit_test(test_append_growth),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_vprintf),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_memdup0),
        cmocka_unit_test(test_reset_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
