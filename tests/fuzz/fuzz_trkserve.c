/* fuzz_trkserve — the tracker server codecs on anything.  The first byte
 * picks the parser (HTTP head + queries, UDP request, allowlist) and the
 * limits; the rest is the input.  What parses must satisfy the limits,
 * and answers built from it must read back with the client codecs. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "common/trkserve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct trkserve_limits fuzz_small = {
    .max_request = 300,
    .max_headers = 3,
    .max_params = 6,
    .max_scrape = 2,
};

static void
check_err(int r, size_t off, size_t size)
{
    if (r >= 0 || r <= TRKSERVE_E_MIN || off > size ||
        !trkserve_strerror(r))
        abort();
}

static void
http(const uint8_t *p, size_t n, const struct trkserve_limits *lim)
{
    struct trkserve_http_req req;
    size_t off = SIZE_MAX;
    int r = trkserve_http_parse(&req, p, n, lim, &off);
    if (r < 0) {
        check_err(r, off, n);
        int st = trkserve_http_status(r);
        if (st != 400 && st != 404)
            abort();
        return;
    }
    if (req.head_len > n || req.head_len > lim->max_request ||
        req.query_off + req.query_len > n)
        abort();
    struct trkserve_announce a;
    off = SIZE_MAX;
    r = trkserve_parse_announce(&a, req.query, req.query_len, lim, &off);
    if (r < 0) {
        check_err(r, off, req.query_len);
    } else {
        if (a.port == 0 || strlen(a.ip) > TRKSERVE_IP_MAX ||
            a.key_len > TRKSERVE_KEY_MAX || a.event >= TRACKER_EVENT_MAX)
            abort();
        /* An answer naming the announcer, read back by the client. */
        struct tracker_peer pe;
        memset(&pe, 0, sizeof(pe));
        pe.family = AF_INET;
        pe.port = a.port;
        pe.has_id = true;
        memcpy(pe.id, a.peer_id, sizeof(pe.id));
        struct trkserve_announce_resp resp = {
            .interval = 1800, .min_interval = 900, .complete = a.left,
            .peers = &pe, .n_peers = 1, .compact = a.compact,
            .no_peer_id = a.no_peer_id,
        };
        struct buf b;
        struct tracker_announce_resp back;
        buf_init(&b, 4096);
        if (trkserve_announce_body(&b, &resp) != 0 ||
            tracker_parse_announce(&back, b.data, b.len, NULL, NULL) != 0 ||
            back.n_peers != 1 || back.peers[0].port != a.port)
            abort();
        tracker_announce_resp_release(&back);
        buf_release(&b);
    }
    uint8_t hashes[4][TRACKER_HASH_LEN];
    size_t k = 0;
    off = SIZE_MAX;
    r = trkserve_parse_scrape(hashes, 4, &k, req.query, req.query_len, lim,
                              &off);
    if (r < 0)
        check_err(r, off, req.query_len);
    else if (k > 4 || k > lim->max_scrape)
        abort();
}

static void
udp(const uint8_t *p, size_t n)
{
    struct trkserve_udp_req q;
    size_t off = SIZE_MAX;
    int r = trkserve_udp_parse(&q, p, n, &off);
    if (r < 0) {
        check_err(r, off, n);
        return;
    }
    if (q.action >= TRACKER_UDP_ERROR ||
        q.n_hashes > TRACKER_UDP_SCRAPE_MAX ||
        (q.action == TRACKER_UDP_SCRAPE &&
         (q.n_hashes == 0 || q.hashes + 20 * q.n_hashes > p + n)))
        abort();
    uint8_t secret[TRKSERVE_SECRET_LEN] = {1};
    struct trkserve_addr a = {.family = AF_INET, .addr = {127, 0, 0, 1}};
    uint64_t id = trkserve_conn_id(secret, &a, q.transaction_id);
    if (!trkserve_conn_id_valid(secret, &a,
                                (uint64_t)q.transaction_id *
                                    TRKSERVE_CONN_BUCKET_S,
                                id))
        abort();
}

static void
allowlist(const uint8_t *p, size_t n)
{
    uint8_t h[8][TRACKER_HASH_LEN];
    size_t k = 0;
    unsigned line = 0;
    int r = trkserve_allowlist_parse(h, 8, &k, (const char *)p, n, &line);
    if (r == 0) {
        if (k > 8)
            abort();
        for (size_t i = 1; i < k; i++)
            if (memcmp(h[i - 1], h[i], TRACKER_HASH_LEN) >= 0)
                abort();
        for (size_t i = 0; i < k; i++)
            if (!trkserve_allowlist_has((const uint8_t(*)[20])h, k, h[i]))
                abort();
    } else if (r != -EINVAL && r != -E2BIG) {
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    const struct trkserve_limits *lim =
        sel & 0x80 ? &fuzz_small : &trkserve_limits_default;
    switch (sel % 3) {
    case 0:
        http(p, n, lim);
        break;
    case 1:
        udp(p, n);
        break;
    default:
        allowlist(p, n);
        break;
    }
    return 0;
}
