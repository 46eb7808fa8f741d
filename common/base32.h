/* base32 — RFC 4648 base32 (the "A-Z2-7" alphabet) to bytes and back.
 *
 * Thread: any.  No I/O, no allocation, no globals.
 *
 * Used for the 32-character form of a BitTorrent info-hash in magnet URIs
 * (20 bytes = 160 bits = exactly 32 characters, so no '=' padding).  The
 * encoder never writes padding and the decoder never accepts it: callers
 * that meet padded input strip it themselves.
 */
#ifndef TD_COMMON_BASE32_H
#define TD_COMMON_BASE32_H

#include <stddef.h>
#include <stdint.h>

/* Characters needed for n bytes (without padding or NUL). */
#define BASE32_ENCODED_LEN(n) (((n) * 8 + 4) / 5)
/* Bytes that len characters decode to (for a valid length). */
#define BASE32_DECODED_LEN(len) ((len) * 5 / 8)

/* Write BASE32_ENCODED_LEN(n) upper-case characters and a NUL to out,
 * which must hold BASE32_ENCODED_LEN(n) + 1 bytes. */
void base32_encode(char *out, const uint8_t *in, size_t n);

/* Decode len characters (either case, no padding) into out, which holds
 * out_size bytes.  Returns the number of bytes written,
 * BASE32_DECODED_LEN(len), or
 *   -EINVAL    a character outside the alphabet, a length that no byte
 *              count encodes to (len % 8 is 1, 3 or 6), or non-zero bits
 *              in the last character's unused low bits (not canonical);
 *   -EMSGSIZE  out_size is too small.
 * On failure out is undefined. */
int base32_decode(uint8_t *out, size_t out_size, const char *in, size_t len);

/* The 5-bit value of one base32 character (either case), or -1. */
int base32_digit(int c);

#endif
