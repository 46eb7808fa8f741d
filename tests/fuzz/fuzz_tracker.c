/* fuzz_tracker — the tracker parsers on anything.  The first byte picks
 * the parser (and, for UDP, the expected action and the socket family);
 * the rest is the input.  Whatever parses must satisfy the limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/tracker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small limits too, so that the limit paths are fuzzed as well. */
static const struct tracker_limits fuzz_small = {
    .max_size = 512,
    .max_peers = 3,
    .max_files = 2,
    .max_message = 8,
};

static void
check_err(int r, size_t off, size_t size)
{
    if (r >= 0 || r <= TRACKER_E_MIN || off > size || !tracker_strerror(r))
        abort();
}

static void
http_announce(const uint8_t *p, size_t n, const struct tracker_limits *lim)
{
    struct tracker_announce_resp a;
    size_t off = SIZE_MAX;
    int r = tracker_parse_announce(&a, p, n, lim, &off);
    if (r < 0) {
        check_err(r, off, n);
        return;
    }
    if (a.n_peers + a.n_skipped > 2 * (size_t)lim->max_peers + n ||
        a.n_peers > lim->max_peers ||
        (a.failure && strlen(a.failure) > lim->max_message) ||
        (a.warning && strlen(a.warning) > lim->max_message))
        abort();
    for (size_t i = 0; i < a.n_peers; i++)
        if (a.peers[i].port == 0 || (a.peers[i].family != AF_INET &&
                                     a.peers[i].family != AF_INET6))
            abort();
    tracker_announce_resp_release(&a);
}

static void
http_scrape(const uint8_t *p, size_t n, const struct tracker_limits *lim)
{
    struct tracker_scrape_resp s;
    size_t off = SIZE_MAX;
    int r = tracker_parse_scrape(&s, p, n, lim, &off);
    if (r < 0) {
        check_err(r, off, n);
        return;
    }
    if (s.n_files > lim->max_files)
        abort();
    tracker_scrape_resp_release(&s);
}

static void
udp(const uint8_t *p, size_t n, uint8_t sel, const struct tracker_limits *lim)
{
    static const uint8_t hashes[3][TRACKER_HASH_LEN] = {{1}, {2}, {3}};
    struct tracker_udp_resp u;
    uint32_t action, tid = 0;
    size_t off = SIZE_MAX;
    uint32_t expect = (sel >> 2) % 3;
    int family = sel & 2 ? AF_INET6 : AF_INET;
    if (tracker_udp_peek(p, n, &action, &tid) < 0 && n >= 8)
        abort();
    if (sel & 0x20)
        tid ^= 1; /* the transaction check too */
    int r = tracker_udp_parse(&u, p, n, expect, tid, family, hashes, 3, lim,
                              &off);
    if (r < 0) {
        check_err(r, off, n);
        return;
    }
    if (u.action != expect && u.action != TRACKER_UDP_ERROR)
        abort();
    if (u.announce.n_peers > lim->max_peers || u.scrape.n_files > 3)
        abort();
    tracker_udp_resp_release(&u);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    const struct tracker_limits *lim =
        sel & 0x80 ? &fuzz_small : &tracker_limits_default;

    switch (sel & 1 ? 2 : (sel >> 1) & 1) {
    case 0:
        http_announce(p, n, lim);
        break;
    case 1:
        http_scrape(p, n, lim);
        break;
    default:
        udp(p, n, sel, lim);
        break;
    }
    /* The URL parser on the same bytes, as a C string. */
    char url[300];
    size_t k = n < sizeof(url) - 1 ? n : sizeof(url) - 1;
    memcpy(url, p, k);
    url[k] = '\0';
    struct tracker_udp_url uu;
    if (tracker_udp_url_parse(&uu, url) == 0 &&
        (uu.port == 0 || strlen(uu.host) > TRACKER_UDP_HOST_MAX))
        abort();
    return 0;
}
