/* base32 — RFC 4648 base32 to bytes and back. */
#include "common/base32.h"

#include <errno.h>
#include <stdbool.h>

static const char base32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int
base32_digit(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}

void
base32_encode(char *out, const uint8_t *in, size_t n)
{
    uint32_t acc = 0;  /* never holds more than 12 bits */
    unsigned bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8 | in[i]) & 0xfff;
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = base32_alphabet[(acc >> bits) & 31];
        }
    }
    if (bits > 0)
        out[o++] = base32_alphabet[(acc << (5 - bits)) & 31];
    out[o] = '\0';
}

/* Lengths in characters modulo 8 that some byte count encodes to. */
static bool
valid_length(size_t len)
{
    switch (len % 8) {
    case 0: case 2: case 4: case 5: case 7:
        return true;
    default:
        return false;
    }
}

int
base32_decode(uint8_t *out, size_t out_size, const char *in, size_t len)
{
    if (!valid_length(len))
        return -EINVAL;
    size_t n = BASE32_DECODED_LEN(len);
    if (n > out_size)
        return -EMSGSIZE;
    if (n > (size_t)INT32_MAX)
        return -EMSGSIZE;

    uint32_t acc = 0;  /* never holds more than 12 bits */
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int d = base32_digit((unsigned char)in[i]);
        if (d < 0)
            return -EINVAL;
        acc = (acc << 5 | (uint32_t)d) & 0xfff;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* Left-over bits are padding and must be zero (RFC 4648 §3.5). */
    if (acc & ((1u << bits) - 1))
        return -EINVAL;
    return (int)o;
}
