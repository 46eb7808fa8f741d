/* Unit tests for common/base32: RFC 4648 vectors, every error, and a
 * round trip over many lengths. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/base32.h"

/* RFC 4648 §10, without the '=' padding. */
static const struct {
    const char *raw;
    const char *enc;
} vectors[] = {
    {"", ""},
    {"f", "MY"},
    {"fo", "MZXQ"},
    {"foo", "MZXW6"},
    {"foob", "MZXW6YQ"},
    {"fooba", "MZXW6YTB"},
    {"foobar", "MZXW6YTBOI"},
};

static void
test_encode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        size_t n = strlen(vectors[i].raw);
        char out[32];
        memset(out, 'x', sizeof(out));
        base32_encode(out, (const uint8_t *)vectors[i].raw, n);
        assert_string_equal(out, vectors[i].enc);
        assert_int_equal(strlen(out), BASE32_ENCODED_LEN(n));
    }
}

static void
test_decode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const char *enc = vectors[i].enc;
        size_t n = strlen(vectors[i].raw);
        uint8_t out[16];
        assert_int_equal(base32_decode(out, sizeof(out), enc, strlen(enc)),
                         (int)n);
        assert_memory_equal(out, vectors[i].raw, n);

        /* Lower case decodes the same. */
        char lower[16];
        for (size_t k = 0; k <= strlen(enc); k++)
            lower[k] = (char)(enc[k] >= 'A' && enc[k] <= 'Z'
                                  ? enc[k] - 'A' + 'a' : enc[k]);
        assert_int_equal(base32_decode(out, sizeof(out), lower,
                                       strlen(lower)), (int)n);
        assert_memory_equal(out, vectors[i].raw, n);
    }
}

/* A BitTorrent info-hash: 20 bytes are exactly 32 characters. */
static void
test_infohash(void **state)
{
    (void)state;
    static const uint8_t h[20] = {
        0xc1, 0x2f, 0xe1, 0xc0, 0x6b, 0xba, 0x25, 0x4a, 0x9d, 0xc9,
        0xf5, 0x19, 0xb3, 0x35, 0xaa, 0x7c, 0x13, 0x67, 0xa8, 0x8a,
    };
    static const char enc[] = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
    char out[BASE32_ENCODED_LEN(sizeof(h)) + 1];
    base32_encode(out, h, sizeof(h));
    assert_string_equal(out, enc);
    uint8_t back[20];
    assert_int_equal(base32_decode(back, sizeof(back), enc, 32), 20);
    assert_memory_equal(back, h, sizeof(h));
}

static void
test_decode_errors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int err;
    } cases[] = {
        {"MZXW6===", -EINVAL},   /* padding is not accepted */
        {"MZXW1", -EINVAL},      /* '1' is not in the alphabet */
        {"MZXW8", -EINVAL},      /* nor '8' */
        {"MZ@Q", -EINVAL},
        {"M", -EINVAL},          /* impossible lengths: 1, 3, 6 mod 8 */
        {"MZX", -EINVAL},
        {"MZXW6Y", -EINVAL},
        {"MZXW6YTBM", -EINVAL},
        {"MZ", -EINVAL},         /* 'Z' leaves non-zero unused bits */
        {"MZXR", -EINVAL},       /* 'R' likewise */
        {"MZXW7", -EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t out[16];
        assert_int_equal(base32_decode(out, sizeof(out), cases[i].in,
                                       strlen(cases[i].in)), cases[i].err);
    }
    uint8_t out[16];
    /* A NUL inside the counted length is just a bad character. */
    assert_int_equal(base32_decode(out, sizeof(out), "MZ\0Q", 4), -EINVAL);
    /* Too small an output buffer. */
    assert_int_equal(base32_decode(out, 5, "MZXW6YTBOI", 10), -EMSGSIZE);
    assert_int_equal(base32_decode(out, 6, "MZXW6YTBOI", 10), 6);
}

static void
test_digit(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        int want = -1;
        if (c >= 'A' && c <= 'Z')
            want = c - 'A';
        else if (c >= 'a' && c <= 'z')
            want = c - 'a';
        else if (c >= '2' && c <= '7')
            want = c - '2' + 26;
        assert_int_equal(base32_digit(c), want);
    }
}

/* Every length up to 64 bytes, deterministic contents, both ways. */
static void
test_round_trip(void **state)
{
    (void)state;
    uint8_t in[64], back[64];
    char enc[BASE32_ENCODED_LEN(sizeof(in)) + 1];
    uint32_t x = 2463534242u;
    for (size_t n = 0; n <= sizeof(in); n++) {
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            in[i] = (uint8_t)x;
        }
        base32_encode(enc, in, n);
        assert_int_equal(strlen(enc), BASE32_ENCODED_LEN(n));
        assert_int_equal(base32_decode(back, n, enc, strlen(enc)), (int)n);
        assert_memory_equal(back, in, n);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_vectors),
        cmocka_unit_test(test_decode_vectors),
        cmocka_unit_test(test_infohash),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_digit),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
