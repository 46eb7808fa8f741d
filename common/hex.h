/* hex — hexadecimal text to bytes and back.
 *
 * Thread: any.  No I/O, no allocation.
 */
#ifndef TD_COMMON_HEX_H
#define TD_COMMON_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Write 2*n lowercase hex digits and a NUL to out (2*n+1 bytes). */
void hex_encode(char *out, const uint8_t *in, size_t n);

/* Decode exactly 2*n hex digits (either case) from in into out[n].
 * Returns 0, or -EINVAL on a non-hex digit (out is then undefined). */
int hex_decode(uint8_t *out, const char *in, size_t n);

/* The value of one hex digit, or -1. */
int hex_digit(int c);

#endif
