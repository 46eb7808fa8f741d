/* fuzz_lsd — the BEP 14 parser on anything.  The first byte picks the
 * limits (the defaults, or small ones so that the limit paths are fuzzed
 * too); the rest is the datagram.  What parses must satisfy the limits and
 * survive a build/parse round trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/lsd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct lsd_limits fuzz_small = {
    .max_size = 300,
    .max_hashes = 2,
    .max_line = 60,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const struct lsd_limits *lim =
        data[0] & 1 ? &fuzz_small : &lsd_limits_default;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    struct lsd_msg m;
    size_t off = SIZE_MAX;
    int r = lsd_parse(&m, p, n, lim, &off);
    if (r < 0) {
        if (r <= LSD_E_MIN || off > n ||
            strcmp(lsd_strerror(r), "unknown error") == 0)
            abort();
        return 0;
    }
    if (r != 0 || m.port == 0 || m.n_hashes == 0 ||
        m.n_hashes > lim->max_hashes ||
        (m.has_cookie && strlen(m.cookie) > LSD_COOKIE_MAX))
        abort();
    /* Round trip: what we parsed we can say again, and read back. */
    struct buf b;
    buf_init(&b, LSD_MAX_DATAGRAM);
    if (lsd_build(&b, data[0] & 2, m.port, m.hashes, m.n_hashes,
                  m.has_cookie ? m.cookie : NULL) != 0)
        abort();
    struct lsd_msg m2;
    if (lsd_parse(&m2, b.data, b.len, NULL, &off) != 0 ||
        m2.port != m.port || m2.n_hashes != m.n_hashes ||
        memcmp(m2.hashes, m.hashes, m.n_hashes * LSD_HASH_LEN) != 0 ||
        m2.has_cookie != m.has_cookie ||
        (m.has_cookie && strcmp(m.cookie, m2.cookie) != 0))
        abort();
    buf_release(&b);
    return 0;
}
