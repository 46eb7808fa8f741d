/* fuzz_magnet — magnet_parse() on anything; what parses must print and
 * parse back to an equal struct, and print the same bytes again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/magnet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small limits too, so that the limit paths are fuzzed as well. */
static const struct magnet_limits fuzz_small = {
    .max_uri = 512,
    .max_value = 80,
    .max_list = 3,
};

/* Printing may triple a value's length; the re-parse must not trip on it. */
static const struct magnet_limits fuzz_reparse = {
    .max_uri = SIZE_MAX,
    .max_value = 4u << 10,
    .max_list = 200,
};

static void
round_trip(const struct magnet *m)
{
    struct buf a, b;
    struct magnet back;

    buf_init(&a, SIZE_MAX);
    buf_init(&b, SIZE_MAX);
    if (magnet_format(m, &a) != 0)
        abort();
    if (magnet_parse(&back, a.data, a.len, &fuzz_reparse, NULL) != 0)
        abort();
    if (!magnet_equal(m, &back))
        abort();
    if (magnet_format(&back, &b) != 0 || a.len != b.len ||
        memcmp(a.data, b.data, a.len) != 0)
        abort();
    magnet_release(&back);
    buf_release(&a);
    buf_release(&b);
}

static void
check(const uint8_t *data, size_t size, const struct magnet_limits *lim)
{
    struct magnet m;
    size_t off = SIZE_MAX;
    int r = magnet_parse(&m, (const char *)data, size, lim, &off);
    if (r < 0) {
        if (r <= MAGNET_E_MIN || off > size || !magnet_strerror(r))
            abort();
        return;
    }
    if (r != 0 || (!m.has_btih && !m.has_btmh) ||
        m.n_tr > lim->max_list || m.n_ws > lim->max_list ||
        m.n_peers > lim->max_list || m.n_so > lim->max_list)
        abort();
    round_trip(&m);
    magnet_release(&m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size, &magnet_limits_default);
    check(data, size, &fuzz_small);
    return 0;
}
