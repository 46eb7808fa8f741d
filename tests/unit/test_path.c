/* Unit tests for common/path: every refusal, every sanitising rule, UTF-8
 * decoding, long names, joining, and a byte-mutation loop whose output
 * must always be a clean path. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/path.h"

#define S(lit) lit, sizeof(lit) - 1

static const struct {
    const char *in;
    size_t n;
    int err;
} refusals[] = {
    {S(""), PATH_E_EMPTY},
    {S("."), PATH_E_DOT},
    {S(".."), PATH_E_DOT},
    {S("a\0b"), PATH_E_NUL},
    {S("\0"), PATH_E_NUL},
    {S("/etc"), PATH_E_ABSOLUTE},
    {S("/"), PATH_E_ABSOLUTE},
    {S("a/b"), PATH_E_SEPARATOR},
    {S("a/"), PATH_E_SEPARATOR},
    {S("..\\..\\windows"), PATH_E_SEPARATOR},
    {S("\\"), PATH_E_SEPARATOR},
};

static void
test_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        struct buf b;
        bool changed = false;
        buf_init(&b, 4096);
        assert_int_equal(path_component_check(refusals[i].in, refusals[i].n),
                         refusals[i].err);
        assert_false(path_component_is_clean(refusals[i].in, refusals[i].n));
        assert_int_equal(path_append_component(&b, refusals[i].in,
                                               refusals[i].n, &changed),
                         refusals[i].err);
        assert_int_equal(b.len, 0);
        assert_false(changed);
        buf_release(&b);
    }
}

static const struct {
    const char *in;
    size_t n;
    const char *out;
    bool changed;
} sanitised[] = {
    {S("file.txt"), "file.txt", false},
    {S("..."), "...", false},
    {S(".hidden"), ".hidden", false},
    {S("a..b"), "a..b", false},
    {S(" spaced "), " spaced ", false},
    {S("colon: ok?*<>|\""), "colon: ok?*<>|\"", false},
    {S("caf\xc3\xa9"), "caf\xc3\xa9", false},                 /* é */
    {S("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80", false},       /* U+1F600 */
    {S("\xef\xbb\xbf"), "\xef\xbb\xbf", false},               /* BOM: kept */
    {S("tab\there"), "tab_here", true},
    {S("new\nline"), "new_line", true},
    {S("esc\x1b[31m"), "esc_[31m", true},
    {S("del\x7f"), "del_", true},
    {S("c1\xc2\x85"), "c1_", true},                           /* U+0085 */
    {S("bad\xff"), "bad_", true},
    {S("\xc3"), "_", true},                                   /* truncated */
    {S("\xc0\xaf"), "__", true},                              /* overlong */
    {S("\xe0\x80\xaf"), "___", true},                         /* overlong */
    {S("\xed\xa0\x80"), "___", true},                         /* surrogate */
    {S("\xf4\x90\x80\x80"), "____", true},                    /* > 10FFFF */
    {S("\xf5\x80\x80\x80"), "____", true},
    {S("exe\xe2\x80\xaegpj.scr"), "exe_gpj.scr", true},       /* U+202E */
    {S("\xe2\x80\x8e"), "_", true},                           /* U+200E */
    {S("\xe2\x81\xa6x"), "_x", true},                         /* U+2066 */
    {S(".\x01"), "._", true},
};

static void
test_sanitise(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(sanitised) / sizeof(sanitised[0]); i++) {
        struct buf b;
        bool changed = false;
        buf_init(&b, 4096);
        assert_int_equal(path_component_check(sanitised[i].in,
                                              sanitised[i].n), 0);
        assert_int_equal(path_append_component(&b, sanitised[i].in,
                                               sanitised[i].n, &changed), 0);
        assert_string_equal(b.data, sanitised[i].out);
        assert_int_equal(changed, sanitised[i].changed);
        assert_int_equal(path_component_is_clean(sanitised[i].in,
                                                 sanitised[i].n),
                         !sanitised[i].changed);
        assert_true(path_utf8_valid(b.data, b.len));
        assert_int_equal(path_check_relative(b.data), 0);
        buf_release(&b);
    }
}

static void
test_utf8_decode(void **state)
{
    (void)state;
    uint32_t cp = 0;
    assert_int_equal(path_utf8_decode((const uint8_t *)"", 0, &cp), 0);
    assert_int_equal(path_utf8_decode((const uint8_t *)"A", 1, &cp), 1);
    assert_int_equal(cp, 'A');
    assert_int_equal(path_utf8_decode((const uint8_t *)"\xc2\x80", 2, &cp),
                     2);
    assert_int_equal(cp, 0x80);
    assert_int_equal(
        path_utf8_decode((const uint8_t *)"\xef\xbf\xbf", 3, &cp), 3);
    assert_int_equal(cp, 0xffff);
    assert_int_equal(
        path_utf8_decode((const uint8_t *)"\xf4\x8f\xbf\xbf", 4, &cp), 4);
    assert_int_equal(cp, 0x10ffff);
    /* Truncated by n, even though more bytes follow in memory. */
    assert_int_equal(
        path_utf8_decode((const uint8_t *)"\xe2\x82\xac", 2, &cp), 0);
    assert_int_equal(path_utf8_decode((const uint8_t *)"\x80", 1, &cp), 0);
    assert_int_equal(path_utf8_decode((const uint8_t *)"\xc1\xbf", 2, &cp),
                     0);
    assert_int_equal(
        path_utf8_decode((const uint8_t *)"\xe2\x28\xa1", 3, &cp), 0);
    assert_true(path_utf8_valid("", 0));
    assert_true(path_utf8_valid(S("h\xc3\xa9llo")));
    assert_false(path_utf8_valid(S("h\xc3llo")));
}

/* An over-long name is cut to PATH_NAME_MAX bytes at a character boundary
 * and keeps its extension. */
static void
test_long_names(void **state)
{
    (void)state;
    char in[1200];
    struct buf b;
    bool changed = false;

    buf_init(&b, 4096);
    memset(in, 'a', 600);
    memcpy(in + 600, ".mkv", 4);
    assert_int_equal(path_append_component(&b, in, 604, &changed), 0);
    assert_true(changed);
    assert_int_equal(b.len, PATH_NAME_MAX);
    assert_string_equal(b.data + PATH_NAME_MAX - 4, ".mkv");

    /* Exactly PATH_NAME_MAX: untouched. */
    buf_reset(&b);
    changed = false;
    assert_int_equal(path_append_component(&b, in, PATH_NAME_MAX, &changed),
                     0);
    assert_false(changed);
    assert_int_equal(b.len, PATH_NAME_MAX);
    assert_true(path_component_is_clean(in, PATH_NAME_MAX));
    assert_false(path_component_is_clean(in, PATH_NAME_MAX + 1));

    /* Multi-byte characters: never cut in the middle of one. */
    for (size_t i = 0; i < 400; i++)
        memcpy(in + 3 * i, "\xe2\x82\xac", 3); /* € */
    buf_reset(&b);
    assert_int_equal(path_append_component(&b, in, 1200, &changed), 0);
    assert_int_equal(b.len, 255);
    assert_true(path_utf8_valid(b.data, b.len));
    /* With ".x" kept, 253 bytes are left for the stem: 84 x € (252). */
    memcpy(in + 1197, ".x", 2);
    buf_reset(&b);
    assert_int_equal(path_append_component(&b, in, 1199, &changed), 0);
    assert_int_equal(b.len, 252 + 2);
    assert_string_equal(b.data + 252, ".x");
    assert_true(path_utf8_valid(b.data, b.len));

    /* An extension that is too long is not kept; the dot at 0 is no
     * extension. */
    memset(in, 'b', 600);
    in[100] = '.';
    buf_reset(&b);
    assert_int_equal(path_append_component(&b, in, 600, &changed), 0);
    assert_int_equal(b.len, PATH_NAME_MAX);
    assert_int_equal(b.data[100], '.');
    in[0] = '.';
    in[100] = 'b';
    buf_reset(&b);
    assert_int_equal(path_append_component(&b, in, 600, &changed), 0);
    assert_int_equal(b.len, PATH_NAME_MAX);
    assert_int_equal(path_check_relative(b.data), 0);
    buf_release(&b);
}

static void
test_append_join(void **state)
{
    (void)state;
    struct buf b;
    bool changed = false;

    buf_init(&b, 12);
    assert_int_equal(path_append_component(&b, S("dir"), &changed), 0);
    assert_int_equal(path_append_component(&b, S("sub"), &changed), 0);
    assert_string_equal(b.data, "dir/sub");
    /* Past the cap: refused, buffer unchanged. */
    assert_int_equal(path_append_component(&b, S("toolong"), &changed),
                     PATH_E_TOO_LONG);
    assert_string_equal(b.data, "dir/sub");
    assert_int_equal(b.len, 7);
    assert_int_equal(path_append_component(&b, S("x\x01"), NULL), 0);
    assert_string_equal(b.data, "dir/sub/x_");
    assert_false(changed);
    buf_release(&b);

    buf_init(&b, 64);
    assert_int_equal(path_join(&b, "/srv/dl", "t/a.txt"), 0);
    assert_string_equal(b.data, "/srv/dl/t/a.txt");
    buf_reset(&b);
    assert_int_equal(path_join(&b, "/srv/dl/", "a"), 0);
    assert_string_equal(b.data, "/srv/dl/a");
    buf_reset(&b);
    assert_int_equal(path_join(&b, "", "a"), 0);
    assert_string_equal(b.data, "a");
    buf_reset(&b);
    assert_int_equal(path_join(&b, "/srv", "../etc/passwd"), PATH_E_DOT);
    assert_int_equal(b.len, 0);
    buf_release(&b);

    buf_init(&b, 10);
    assert_int_equal(path_join(&b, "/srv/dl", "abc"), PATH_E_TOO_LONG);
    assert_int_equal(b.len, 0);
    buf_release(&b);
}

static const struct {
    const char *rel;
    int err;
} relatives[] = {
    {"a", 0},
    {"a/b/c.txt", 0},
    {"caf\xc3\xa9/x", 0},
    {"", PATH_E_EMPTY},
    {"/a", PATH_E_ABSOLUTE},
    {"a//b", PATH_E_EMPTY},
    {"a/", PATH_E_EMPTY},
    {"a/./b", PATH_E_DOT},
    {"a/..", PATH_E_DOT},
    {"..", PATH_E_DOT},
    {"a\\b", PATH_E_SEPARATOR},
    {"a/b\x01", PATH_E_UNCLEAN},
    {"\xff", PATH_E_UNCLEAN},
};

static void
test_check_relative(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(relatives) / sizeof(relatives[0]); i++)
        assert_int_equal(path_check_relative(relatives[i].rel),
                         relatives[i].err);
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = PATH_OK; e > PATH_E_MIN; e--) {
        assert_non_null(path_strerror(e));
        assert_string_not_equal(path_strerror(e), "unknown error");
    }
    assert_string_equal(path_strerror(PATH_E_MIN), "unknown error");
    assert_string_equal(path_strerror(1), "unknown error");
}

/* Every single-byte change of a few names either is refused or yields a
 * component that path_check_relative() accepts. */
static void
test_mutations(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "file.txt", "caf\xc3\xa9", "\xe2\x80\xae.exe", "..x", "a b",
    };
    static const uint8_t bytes[] = {
        0x00, 0x01, 0x1f, '.', '/', '\\', 0x7f, 0x80, 0xbf, 0xc0, 0xc2,
        0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 'a',
    };
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        size_t n = strlen(seeds[s]);
        for (size_t pos = 0; pos < n; pos++) {
            for (size_t k = 0; k < sizeof(bytes); k++) {
                char in[16];
                struct buf b;
                memcpy(in, seeds[s], n);
                in[pos] = (char)bytes[k];
                buf_init(&b, 4096);
                int r = path_append_component(&b, in, n, NULL);
                if (r == 0) {
                    assert_int_equal(path_check_relative(b.data), 0);
                    assert_true(path_utf8_valid(b.data, b.len));
                } else {
                    assert_int_equal(r, path_component_check(in, n));
                }
                buf_release(&b);
            }
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_sanitise),
        cmocka_unit_test(test_utf8_decode),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_append_join),
        cmocka_unit_test(test_check_relative),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
