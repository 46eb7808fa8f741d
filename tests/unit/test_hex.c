/* Unit tests for common/hex: known vectors, round trip, bad digits. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/hex.h"

static void
test_encode(void **state)
{
    (void)state;
    char out[64];

    memset(out, 'X', sizeof(out));
    hex_encode(out, NULL, 0);
    assert_string_equal(out, "");

    static const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd,
                                 0xef, 0xff, 0x10, 0x09};
    memset(out, 'X', sizeof(out));
    hex_encode(out, in, sizeof(in));
    assert_string_equal(out, "00017f80abcdefff1009");
    assert_int_equal(out[2 * sizeof(in) + 1], 'X'); /* 2n+1 bytes only */

    /* A SHA-1 sized value, as for an info-hash. */
    uint8_t h[20];
    for (int i = 0; i < 20; i++)
        h[i] = (uint8_t)(i * 13);
    char *exact = malloc(41); /* ASan checks the 2n+1 bound */
    assert_non_null(exact);
    hex_encode(exact, h, 20);
    assert_string_equal(exact, "000d1a2734414e5b6875828f9ca9b6c3d0ddeaf7");
    free(exact);
}

static void
test_decode(void **state)
{
    (void)state;
    uint8_t out[16];

    memset(out, 0xaa, sizeof(out));
    assert_int_equal(hex_decode(out, "", 0), 0);
    assert_int_equal(out[0], 0xaa); /* nothing written */

    assert_int_equal(hex_decode(out, "00ff7F80aBcD", 6), 0);
    assert_memory_equal(out, "\x00\xff\x7f\x80\xab\xcd", 6);
    assert_int_equal(out[6], 0xaa);

    /* Only 2n digits are read: what follows does not matter. */
    assert_int_equal(hex_decode(out, "0102zz", 2), 0);
    assert_memory_equal(out, "\x01\x02", 2);

    static const struct {
        const char *in;
        uint8_t v;
    } all_cases[] = {
        {"09", 0x09}, {"a0", 0xa0}, {"A0", 0xa0}, {"fF", 0xff},
        {"Ff", 0xff}, {"9a", 0x9a}, {"00", 0x00},
    };
    for (size_t i = 0; i < sizeof(all_cases) / sizeof(all_cases[0]); i++) {
        assert_int_equal(hex_decode(out, all_cases[i].in, 1), 0);
        assert_int_equal(out[0], all_cases[i].v);
    }
}

static void
test_round_trip(void **state)
{
    (void)state;
    uint8_t in[256], back[256];
    char text[513];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)(255 - i);
    for (size_t n = 0; n <= sizeof(in); n += n < 8 ? 1 : 31) {
        hex_encode(text, in, n);
        assert_int_equal(strlen(text), 2 * n);
        memset(back, 0, sizeof(back));
        assert_int_equal(hex_decode(back, text, n), 0);
        assert_memory_equal(back, in, n);
    }
    hex_encode(text, in, sizeof(in));
    assert_int_equal(hex_decode(back, text, sizeof(in)), 0);
    assert_memory_equal(back, in, sizeof(in));

    /* Upper case decodes to the same bytes. */
    for (size_t i = 0; i < 512; i++)
        if (text[i] >= 'a' && text[i] <= 'f')
            text[i] = (char)(text[i] - 'a' + 'A');
    memset(back, 0, sizeof(back));
    assert_int_equal(hex_decode(back, text, sizeof(in)), 0);
    assert_memory_equal(back, in, sizeof(in));
}

static int
ref_digit(int c)
{
    static const char lower[] = "0123456789abcdef";
    static const char upper[] = "0123456789ABCDEF";
    for (int i = 0; i < 16; i++)
        if (c == lower[i] || c == upper[i])
            return i;
    return -1;
}

static void
test_digit(void **state)
{
    (void)state;
    for (int c = -300; c < 600; c++)
        assert_int_equal(hex_digit(c), ref_digit(c));
    assert_int_equal(hex_digit(-1), -1);
    assert_int_equal(hex_digit('0' + 256), -1);
    assert_int_equal(hex_digit('a' - 256), -1);
}

/* Every bad digit, in every position of the input (high and low nibble),
 * gives -EINVAL; a NUL stops reading (no read past it). */
static void
test_bad_digits(void **state)
{
    (void)state;
    static const char bad[] = {'g', 'G', 'x', ' ', '/', ':', '@', '`',
                               '-', '+', '\n', (char)0x80, (char)0xff,
                               (char)0xe0};
    const char good[] = "0123456789abcdef"; /* 8 bytes */
    uint8_t out[8];

    for (size_t pos = 0; pos < 16; pos++) {
        for (size_t k = 0; k < sizeof(bad); k++) {
            char in[17];
            memcpy(in, good, sizeof(in));
            in[pos] = bad[k];
            if (hex_decode(out, in, 8) != -EINVAL)
                fail_msg("byte 0x%02x at %zu accepted", (unsigned char)bad[k],
                         pos);
        }
        /* A string cut short: exact-size copy, so ASan catches an
         * over-read past the terminator. */
        char *cut = malloc(pos + 1);
        assert_non_null(cut);
        memcpy(cut, good, pos);
        cut[pos] = '\0';
        assert_int_equal(hex_decode(out, cut, 8), -EINVAL);
        free(cut);
    }
    assert_int_equal(hex_decode(out, good, 8), 0);
    assert_memory_equal(out, "\x01\x23\x45\x67\x89\xab\xcd\xef", 8);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_digit),
        cmocka_unit_test(test_bad_digits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
