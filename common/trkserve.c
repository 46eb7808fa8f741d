/* trkserve — tracker server codecs (HTTP and UDP).
 *
 * Everything reads its input through explicit lengths: the HTTP head is
 * searched for its end within max_request bytes before anything else, the
 * query is walked parameter by parameter, and every decoded value goes to
 * a fixed-size field (or is refused) so that nothing here allocates.
 */
#include "common/trkserve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/be.h"
#include "common/bencode.h"
#include "common/buf.h"
#include "common/hex.h"

const struct trkserve_limits trkserve_limits_default = {
    .max_request = 8192,
    .max_headers = 64,
    .max_params = 256,
    .max_scrape = 100,
};

#define COMPACT4_LEN 6
#define COMPACT6_LEN 18
#define UDP_ANNOUNCE_REQ_LEN 98
#define UDP_HEAD_LEN 16
#define NUMBER_DIGITS_MAX 20 /* digits of a uint64 */

static const char *const trkserve_errors[] = {
    [-TRKSERVE_OK] = "success",
    [-TRKSERVE_E_TRUNCATED] = "request incomplete",
    [-TRKSERVE_E_TOO_LARGE] = "request too large",
    [-TRKSERVE_E_REQUEST_LINE] = "malformed request line",
    [-TRKSERVE_E_METHOD] = "method not allowed (GET only)",
    [-TRKSERVE_E_VERSION] = "unsupported HTTP version",
    [-TRKSERVE_E_HEADER] = "malformed header line",
    [-TRKSERVE_E_BODY] = "requests with a body are not accepted",
    [-TRKSERVE_E_PATH] = "unknown path (/announce or /scrape)",
    [-TRKSERVE_E_ESCAPE] = "bad percent-encoding",
    [-TRKSERVE_E_DUPLICATE] = "parameter given twice",
    [-TRKSERVE_E_MISSING] = "required parameter missing",
    [-TRKSERVE_E_HASH] = "info_hash is not 20 bytes",
    [-TRKSERVE_E_PEER_ID] = "peer_id is not 20 bytes",
    [-TRKSERVE_E_PORT] = "invalid port",
    [-TRKSERVE_E_NUMBER] = "invalid number",
    [-TRKSERVE_E_EVENT] = "unknown event",
    [-TRKSERVE_E_VALUE] = "invalid parameter value",
    [-TRKSERVE_E_TOO_MANY] = "too many parameters or info-hashes",
    [-TRKSERVE_E_PROTOCOL] = "bad protocol id",
    [-TRKSERVE_E_ACTION] = "unknown action",
    [-TRKSERVE_E_NOMEM] = "out of memory",
};

const char *
trkserve_strerror(int err)
{
    if (err > 0 || err <= TRKSERVE_E_MIN)
        return "unknown error";
    return trkserve_errors[-err];
}

static int
fail(int err, size_t off, size_t *reterr_offset)
{
    if (reterr_offset)
        *reterr_offset = off;
    return err;
}

static uint32_t
clamp32(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* --- HTTP request head ----------------------------------------------------- */

static bool
is_tchar(unsigned char c)
{
    /* RFC 9110 token characters. */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool
is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Length of the line at p[0..n) without its LF (and CR before it). */
static size_t
line_content_len(const char *p, size_t n)
{
    if (n > 0 && p[n - 1] == '\r')
        n--;
    return n;
}

static bool
span_ieq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

static int
parse_request_line(struct trkserve_http_req *req, const char *s, size_t n,
                   bool *ret_http11, size_t *reterr_offset)
{
    for (size_t i = 0; i < n; i++)
        if (is_ctl((unsigned char)s[i]))
            return fail(TRKSERVE_E_REQUEST_LINE, i, reterr_offset);
    const char *sp1 = memchr(s, ' ', n);
    if (!sp1 || sp1 == s)
        return fail(TRKSERVE_E_REQUEST_LINE, 0, reterr_offset);
    for (const char *p = s; p < sp1; p++)
        if (!is_tchar((unsigned char)*p))
            return fail(TRKSERVE_E_REQUEST_LINE, (size_t)(p - s),
                        reterr_offset);
    if (sp1 - s != 3 || memcmp(s, "GET", 3) != 0)
        return fail(TRKSERVE_E_METHOD, 0, reterr_offset);
    const char *t = sp1 + 1;
    const char *end = s + n;
    const char *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (!sp2 || sp2 == t)
        return fail(TRKSERVE_E_REQUEST_LINE, (size_t)(t - s), reterr_offset);
    const char *v = sp2 + 1;
    size_t vl = (size_t)(end - v);
    if (vl == 8 && memcmp(v, "HTTP/1.1", 8) == 0)
        *ret_http11 = true;
    else if (vl == 8 && memcmp(v, "HTTP/1.0", 8) == 0)
        *ret_http11 = false;
    else
        return fail(TRKSERVE_E_VERSION, (size_t)(v - s), reterr_offset);

    /* The target: origin-form, or absolute-form http://authority/path. */
    const char *path = t;
    if ((size_t)(sp2 - t) >= 7 && strncasecmp(t, "http://", 7) == 0) {
        path = memchr(t + 7, '/', (size_t)(sp2 - t - 7));
        if (!path)
            return fail(TRKSERVE_E_PATH, (size_t)(t - s), reterr_offset);
    }
    const char *q = memchr(path, '?', (size_t)(sp2 - path));
    const char *pe = q ? q : sp2;
    size_t pl = (size_t)(pe - path);
    if (pl == 9 && memcmp(path, "/announce", 9) == 0)
        req->kind = TRKSERVE_ANNOUNCE;
    else if (pl == 7 && memcmp(path, "/scrape", 7) == 0)
        req->kind = TRKSERVE_SCRAPE;
    else
        return fail(TRKSERVE_E_PATH, (size_t)(path - s), reterr_offset);
    if (q) {
        req->query = q + 1;
        req->query_len = (size_t)(sp2 - q - 1);
        req->query_off = (size_t)(q + 1 - s);
    } else {
        req->query = sp2;
        req->query_len = 0;
        req->query_off = (size_t)(sp2 - s);
    }
    return 0;
}

/* One header line s[0..n) (without its line end) at offset off. */
static int
parse_header(const char *s, size_t n, size_t off, bool *keep_alive,
             size_t *reterr_offset)
{
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s)
        return fail(TRKSERVE_E_HEADER, off, reterr_offset);
    for (const char *p = s; p < colon; p++)
        if (!is_tchar((unsigned char)*p))
            return fail(TRKSERVE_E_HEADER, off + (size_t)(p - s),
                        reterr_offset);
    size_t nl = (size_t)(colon - s);
    const char *v = colon + 1;
    const char *ve = s + n;
    for (const char *p = v; p < ve; p++)
        if (is_ctl((unsigned char)*p) && *p != '\t')
            return fail(TRKSERVE_E_HEADER, off + (size_t)(p - s),
                        reterr_offset);
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    if (span_ieq(s, nl, "content-length")) {
        if (v == ve)
            return fail(TRKSERVE_E_HEADER, off + (size_t)(v - s),
                        reterr_offset);
        for (const char *p = v; p < ve; p++) {
            if (*p < '0' || *p > '9')
                return fail(TRKSERVE_E_HEADER, off + (size_t)(p - s),
                            reterr_offset);
            if (*p != '0')
                return fail(TRKSERVE_E_BODY, off, reterr_offset);
        }
    } else if (span_ieq(s, nl, "transfer-encoding")) {
        return fail(TRKSERVE_E_BODY, off, reterr_offset);
    } else if (span_ieq(s, nl, "connection")) {
        /* A comma-separated list of tokens. */
        const char *p = v;
        while (p < ve) {
            const char *c = memchr(p, ',', (size_t)(ve - p));
            const char *te = c ? c : ve;
            const char *ts = p;
            while (ts < te && (*ts == ' ' || *ts == '\t'))
                ts++;
            const char *tt = te;
            while (tt > ts && (tt[-1] == ' ' || tt[-1] == '\t'))
                tt--;
            if (span_ieq(ts, (size_t)(tt - ts), "close"))
                *keep_alive = false;
            else if (span_ieq(ts, (size_t)(tt - ts), "keep-alive"))
                *keep_alive = true;
            p = c ? c + 1 : ve;
        }
    }
    return 0;
}

int
trkserve_http_parse(struct trkserve_http_req *ret, const void *buf, size_t len,
                    const struct trkserve_limits *lim, size_t *reterr_offset)
{
    const char *s = buf;
    if (!lim)
        lim = &trkserve_limits_default;
    size_t n = len < lim->max_request ? len : lim->max_request;
    struct trkserve_http_req req;
    memset(&req, 0, sizeof(req));

    /* The request line as soon as it is whole, so that garbage is
     * refused without waiting for the rest. */
    const char *lf = memchr(s, '\n', n);
    if (!lf) {
        if (len >= lim->max_request)
            return fail(TRKSERVE_E_TOO_LARGE, lim->max_request,
                        reterr_offset);
        return fail(TRKSERVE_E_TRUNCATED, len, reterr_offset);
    }
    bool http11 = false;
    size_t l0 = (size_t)(lf - s);
    int r = parse_request_line(&req, s, line_content_len(s, l0), &http11,
                               reterr_offset);
    if (r < 0)
        return r;
    bool keep_alive = http11;

    /* Header lines up to the empty one. */
    size_t pos = l0 + 1;
    uint32_t headers = 0;
    for (;;) {
        if (pos >= n) {
            if (len >= lim->max_request)
                return fail(TRKSERVE_E_TOO_LARGE, lim->max_request,
                            reterr_offset);
            return fail(TRKSERVE_E_TRUNCATED, len, reterr_offset);
        }
        const char *ls = s + pos;
        const char *le = memchr(ls, '\n', n - pos);
        if (!le) {
            if (len >= lim->max_request)
                return fail(TRKSERVE_E_TOO_LARGE, lim->max_request,
                            reterr_offset);
            return fail(TRKSERVE_E_TRUNCATED, len, reterr_offset);
        }
        size_t ll = line_content_len(ls, (size_t)(le - ls));
        if (ll == 0) {
            pos = (size_t)(le - s) + 1;
            break;
        }
        if (++headers > lim->max_headers)
            return fail(TRKSERVE_E_TOO_MANY, pos, reterr_offset);
        /* No obsolete line folding. */
        if (ls[0] == ' ' || ls[0] == '\t')
            return fail(TRKSERVE_E_HEADER, pos, reterr_offset);
        r = parse_header(ls, ll, pos, &keep_alive, reterr_offset);
        if (r < 0)
            return r;
        pos = (size_t)(le - s) + 1;
    }
    req.head_len = pos;
    req.keep_alive = keep_alive;
    *ret = req;
    return 0;
}

int
trkserve_http_status(int err)
{
    return err == TRKSERVE_E_PATH ? 404 : 400;
}

/* --- query strings --------------------------------------------------------- */

/* Decode in[0..n) into out, writing at most max bytes but counting all.
 * Returns the decoded length or TRKSERVE_E_ESCAPE (offset relative to
 * in). */
static int
decode_bounded(uint8_t *out, size_t max, const char *in, size_t n,
               size_t *reterr_offset)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++, o++) {
        int c = (unsigned char)in[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_digit((unsigned char)in[i + 1]) : -1;
            int lo = i + 2 < n ? hex_digit((unsigned char)in[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return fail(TRKSERVE_E_ESCAPE, i, reterr_offset);
            c = hi << 4 | lo;
            i += 2;
        }
        if (o < max)
            out[o] = (uint8_t)c;
    }
    return o > INT32_MAX ? INT32_MAX : (int)o;
}

int
trkserve_url_decode(uint8_t *out, const char *in, size_t n,
                    size_t *reterr_offset)
{
    return decode_bounded(out, n, in, n, reterr_offset);
}

struct param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    size_t name_off, value_off;
};

/* The next parameter of q[0..n) from *pos; false at the end.  Empty
 * segments ("a=1&&b=2") are skipped. */
static bool
next_param(const char *q, size_t n, size_t *pos, struct param *p)
{
    while (*pos < n && q[*pos] == '&')
        (*pos)++;
    if (*pos >= n)
        return false;
    size_t start = *pos;
    const char *amp = memchr(q + start, '&', n - start);
    size_t end = amp ? (size_t)(amp - q) : n;
    const char *eq = memchr(q + start, '=', end - start);
    p->name = q + start;
    p->name_off = start;
    if (eq) {
        p->name_len = (size_t)(eq - (q + start));
        p->value = eq + 1;
        p->value_off = (size_t)(eq + 1 - q);
        p->value_len = end - p->value_off;
    } else {
        p->name_len = end - start;
        p->value = q + end;
        p->value_off = end;
        p->value_len = 0;
    }
    *pos = end;
    return true;
}

static bool
name_is(const struct param *p, const char *s)
{
    return strlen(s) == p->name_len && memcmp(p->name, s, p->name_len) == 0;
}

/* A decoded value of exactly want bytes into out; err if another length. */
static int
value_fixed(uint8_t *out, size_t want, const struct param *p, int err,
            size_t *reterr_offset)
{
    size_t off;
    int r = decode_bounded(out, want, p->value, p->value_len, &off);
    if (r < 0)
        return fail(r, p->value_off + off, reterr_offset);
    if ((size_t)r != want)
        return fail(err, p->value_off, reterr_offset);
    return 0;
}

/* A decimal uint64: plain digits (numbers are never percent-encoded). */
static int
value_u64(uint64_t *ret, const struct param *p, size_t *reterr_offset)
{
    uint64_t v = 0;
    if (p->value_len == 0 || p->value_len > NUMBER_DIGITS_MAX)
        return fail(TRKSERVE_E_NUMBER, p->value_off, reterr_offset);
    for (size_t i = 0; i < p->value_len; i++) {
        unsigned char c = (unsigned char)p->value[i];
        if (c < '0' || c > '9')
            return fail(TRKSERVE_E_NUMBER, p->value_off + i, reterr_offset);
        unsigned d = c - '0';
        if (v > (UINT64_MAX - d) / 10)
            return fail(TRKSERVE_E_NUMBER, p->value_off, reterr_offset);
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

enum {
    P_INFO_HASH = 1 << 0,
    P_PEER_ID = 1 << 1,
    P_PORT = 1 << 2,
    P_UPLOADED = 1 << 3,
    P_DOWNLOADED = 1 << 4,
    P_LEFT = 1 << 5,
    P_EVENT = 1 << 6,
    P_COMPACT = 1 << 7,
    P_NO_PEER_ID = 1 << 8,
    P_NUMWANT = 1 << 9,
    P_IP = 1 << 10,
    P_KEY = 1 << 11,
};

static const struct {
    const char *name;
    unsigned bit;
} known_params[] = {
    {"info_hash", P_INFO_HASH}, {"peer_id", P_PEER_ID},
    {"port", P_PORT},           {"uploaded", P_UPLOADED},
    {"downloaded", P_DOWNLOADED}, {"left", P_LEFT},
    {"event", P_EVENT},         {"compact", P_COMPACT},
    {"no_peer_id", P_NO_PEER_ID}, {"numwant", P_NUMWANT},
    {"ip", P_IP},               {"key", P_KEY},
};

static int
param_bool(bool *ret, const struct param *p, size_t *reterr_offset)
{
    if (p->value_len == 1 && (p->value[0] == '0' || p->value[0] == '1')) {
        *ret = p->value[0] == '1';
        return 0;
    }
    return fail(TRKSERVE_E_VALUE, p->value_off, reterr_offset);
}

static int
announce_param(struct trkserve_announce *a, unsigned bit,
               const struct param *p, size_t *reterr_offset)
{
    uint64_t v;
    size_t off;
    int r;
    switch (bit) {
    case P_INFO_HASH:
        return value_fixed(a->info_hash, TRACKER_HASH_LEN, p, TRKSERVE_E_HASH,
                           reterr_offset);
    case P_PEER_ID:
        return value_fixed(a->peer_id, TRACKER_PEER_ID_LEN, p,
                           TRKSERVE_E_PEER_ID, reterr_offset);
    case P_PORT:
        if (value_u64(&v, p, reterr_offset) < 0 || v == 0 || v > 65535)
            return fail(TRKSERVE_E_PORT, p->value_off, reterr_offset);
        a->port = (uint16_t)v;
        return 0;
    case P_UPLOADED:
        return value_u64(&a->uploaded, p, reterr_offset);
    case P_DOWNLOADED:
        return value_u64(&a->downloaded, p, reterr_offset);
    case P_LEFT:
        a->has_left = true;
        return value_u64(&a->left, p, reterr_offset);
    case P_EVENT:
        if (p->value_len == 0 || (p->value_len == 6 &&
                                  memcmp(p->value, "paused", 6) == 0))
            a->event = TRACKER_EVENT_NONE;
        else if (p->value_len == 7 && memcmp(p->value, "started", 7) == 0)
            a->event = TRACKER_EVENT_STARTED;
        else if (p->value_len == 7 && memcmp(p->value, "stopped", 7) == 0)
            a->event = TRACKER_EVENT_STOPPED;
        else if (p->value_len == 9 && memcmp(p->value, "completed", 9) == 0)
            a->event = TRACKER_EVENT_COMPLETED;
        else
            return fail(TRKSERVE_E_EVENT, p->value_off, reterr_offset);
        return 0;
    case P_COMPACT:
        return param_bool(&a->compact, p, reterr_offset);
    case P_NO_PEER_ID:
        return param_bool(&a->no_peer_id, p, reterr_offset);
    case P_NUMWANT: {
        bool neg = p->value_len > 0 && p->value[0] == '-';
        struct param q = *p;
        if (neg) {
            q.value++;
            q.value_len--;
            q.value_off++;
        }
        if (value_u64(&v, &q, reterr_offset) < 0)
            return TRKSERVE_E_NUMBER;
        a->numwant = neg ? -1 : (v > INT32_MAX ? INT32_MAX : (int32_t)v);
        return 0;
    }
    case P_IP: {
        uint8_t ip[TRKSERVE_IP_MAX];
        r = decode_bounded(ip, sizeof(ip), p->value, p->value_len, &off);
        if (r < 0)
            return fail(r, p->value_off + off, reterr_offset);
        if ((size_t)r > TRKSERVE_IP_MAX)
            return fail(TRKSERVE_E_VALUE, p->value_off, reterr_offset);
        for (int i = 0; i < r; i++)
            if (is_ctl(ip[i]) || ip[i] >= 0x80 || ip[i] == ' ')
                return fail(TRKSERVE_E_VALUE, p->value_off, reterr_offset);
        memcpy(a->ip, ip, (size_t)r);
        a->ip[r] = '\0';
        return 0;
    }
    case P_KEY:
        r = decode_bounded(a->key, sizeof(a->key), p->value, p->value_len,
                           &off);
        if (r < 0)
            return fail(r, p->value_off + off, reterr_offset);
        if ((size_t)r > TRKSERVE_KEY_MAX)
            return fail(TRKSERVE_E_VALUE, p->value_off, reterr_offset);
        a->key_len = (size_t)r;
        return 0;
    }
    return 0;
}

int
trkserve_parse_announce(struct trkserve_announce *ret, const char *query,
                        size_t len, const struct trkserve_limits *lim,
                        size_t *reterr_offset)
{
    struct trkserve_announce a;
    struct param p;
    size_t pos = 0;
    unsigned seen = 0;
    uint32_t count = 0;

    if (!lim)
        lim = &trkserve_limits_default;
    memset(&a, 0, sizeof(a));
    a.compact = true;
    a.numwant = -1;
    while (next_param(query, len, &pos, &p)) {
        if (++count > lim->max_params)
            return fail(TRKSERVE_E_TOO_MANY, p.name_off, reterr_offset);
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof(known_params) / sizeof(known_params[0]);
             i++)
            if (name_is(&p, known_params[i].name)) {
                bit = known_params[i].bit;
                break;
            }
        if (!bit)
            continue;
        if (seen & bit)
            return fail(TRKSERVE_E_DUPLICATE, p.name_off, reterr_offset);
        seen |= bit;
        int r = announce_param(&a, bit, &p, reterr_offset);
        if (r < 0)
            return r;
    }
    if (!(seen & P_INFO_HASH) || !(seen & P_PEER_ID) || !(seen & P_PORT))
        return fail(TRKSERVE_E_MISSING, len, reterr_offset);
    *ret = a;
    return 0;
}

int
trkserve_parse_scrape(uint8_t (*hashes)[TRACKER_HASH_LEN], size_t max,
                      size_t *ret_n, const char *query, size_t len,
                      const struct trkserve_limits *lim, size_t *reterr_offset)
{
    struct param p;
    size_t pos = 0, n = 0;
    uint32_t count = 0;

    if (!lim)
        lim = &trkserve_limits_default;
    while (next_param(query, len, &pos, &p)) {
        if (++count > lim->max_params)
            return fail(TRKSERVE_E_TOO_MANY, p.name_off, reterr_offset);
        if (!name_is(&p, "info_hash"))
            continue;
        if (n >= max || n >= lim->max_scrape)
            return fail(TRKSERVE_E_TOO_MANY, p.name_off, reterr_offset);
        uint8_t h[TRACKER_HASH_LEN];
        int r = value_fixed(h, TRACKER_HASH_LEN, &p, TRKSERVE_E_HASH,
                            reterr_offset);
        if (r < 0)
            return r;
        memcpy(hashes[n++], h, TRACKER_HASH_LEN);
    }
    *ret_n = n;
    return 0;
}

/* --- HTTP answers ---------------------------------------------------------- */

static int
put_compact(struct buf *out, const struct tracker_peer *peers, size_t n,
            int family)
{
    size_t count = 0, each = family == AF_INET ? COMPACT4_LEN : COMPACT6_LEN;
    size_t alen = family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < n; i++)
        count += peers[i].family == family;
    int r = buf_printf(out, "%zu:", count * each);
    for (size_t i = 0; i < n && r >= 0; i++) {
        if (peers[i].family != family)
            continue;
        uint8_t e[COMPACT6_LEN];
        memcpy(e, peers[i].addr, alen);
        be16_put(e + alen, peers[i].port);
        r = buf_append(out, e, each);
    }
    return r;
}

static int
put_dict_peers(struct buf *out, const struct trkserve_announce_resp *a)
{
    int r = benc_put_list(out);
    for (size_t i = 0; i < a->n_peers && r >= 0; i++) {
        const struct tracker_peer *pe = &a->peers[i];
        char ip[INET6_ADDRSTRLEN];
        if (pe->family != AF_INET && pe->family != AF_INET6)
            continue;
        if (!inet_ntop(pe->family, pe->addr, ip, sizeof(ip)))
            continue;
        if ((r = benc_put_dict(out)) < 0 || (r = benc_put_cstr(out, "ip")) < 0 ||
            (r = benc_put_cstr(out, ip)) < 0)
            break;
        if (pe->has_id && !a->no_peer_id &&
            ((r = benc_put_cstr(out, "peer id")) < 0 ||
             (r = benc_put_str(out, pe->id, TRACKER_PEER_ID_LEN)) < 0))
            break;
        if ((r = benc_put_cstr(out, "port")) < 0 ||
            (r = benc_put_int(out, pe->port)) < 0 ||
            (r = benc_put_end(out)) < 0)
            break;
    }
    if (r >= 0)
        r = benc_put_end(out);
    return r;
}

int
trkserve_announce_body(struct buf *out, const struct trkserve_announce_resp *a)
{
    size_t old = out->len;
    int r;
    /* Keys in sorted order (BEP 3). */
    if ((r = benc_put_dict(out)) < 0 ||
        (r = benc_put_cstr(out, "complete")) < 0 ||
        (r = benc_put_int(out, (int64_t)(a->complete & INT64_MAX))) < 0 ||
        (r = benc_put_cstr(out, "downloaded")) < 0 ||
        (r = benc_put_int(out, (int64_t)(a->downloaded & INT64_MAX))) < 0 ||
        (r = benc_put_cstr(out, "incomplete")) < 0 ||
        (r = benc_put_int(out, (int64_t)(a->incomplete & INT64_MAX))) < 0 ||
        (r = benc_put_cstr(out, "interval")) < 0 ||
        (r = benc_put_int(out, a->interval)) < 0 ||
        (r = benc_put_cstr(out, "min interval")) < 0 ||
        (r = benc_put_int(out, a->min_interval)) < 0 ||
        (r = benc_put_cstr(out, "peers")) < 0)
        goto fail;
    if (a->compact) {
        if ((r = put_compact(out, a->peers, a->n_peers, AF_INET)) < 0 ||
            (r = benc_put_cstr(out, "peers6")) < 0 ||
            (r = put_compact(out, a->peers, a->n_peers, AF_INET6)) < 0)
            goto fail;
    } else if ((r = put_dict_peers(out, a)) < 0) {
        goto fail;
    }
    if ((r = benc_put_end(out)) < 0)
        goto fail;
    return 0;
fail:
    out->len = old;
    if (out->data)
        out->data[old] = '\0';
    return r;
}

int
trkserve_failure_body(struct buf *out, const char *reason)
{
    size_t old = out->len;
    int r;
    if ((r = benc_put_dict(out)) < 0 ||
        (r = benc_put_cstr(out, "failure reason")) < 0 ||
        (r = benc_put_cstr(out, reason)) < 0 || (r = benc_put_end(out)) < 0) {
        out->len = old;
        if (out->data)
            out->data[old] = '\0';
    }
    return r < 0 ? r : 0;
}

static int
cmp_file(const void *a, const void *b)
{
    return memcmp(((const struct trkserve_scrape_file *)a)->info_hash,
                  ((const struct trkserve_scrape_file *)b)->info_hash,
                  TRACKER_HASH_LEN);
}

int
trkserve_scrape_body(struct buf *out, struct trkserve_scrape_file *files,
                     size_t n)
{
    size_t old = out->len;
    int r;
    if (n > 1)
        qsort(files, n, sizeof(*files), cmp_file);
    if ((r = benc_put_dict(out)) < 0 ||
        (r = benc_put_cstr(out, "files")) < 0 || (r = benc_put_dict(out)) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const struct trkserve_scrape_file *f = &files[i];
        if (i > 0 && cmp_file(&files[i - 1], f) == 0)
            continue;
        if ((r = benc_put_str(out, f->info_hash, TRACKER_HASH_LEN)) < 0 ||
            (r = benc_put_dict(out)) < 0 ||
            (r = benc_put_cstr(out, "complete")) < 0 ||
            (r = benc_put_int(out, (int64_t)(f->complete & INT64_MAX))) < 0 ||
            (r = benc_put_cstr(out, "downloaded")) < 0 ||
            (r = benc_put_int(out, (int64_t)(f->downloaded & INT64_MAX))) < 0 ||
            (r = benc_put_cstr(out, "incomplete")) < 0 ||
            (r = benc_put_int(out, (int64_t)(f->incomplete & INT64_MAX))) < 0 ||
            (r = benc_put_end(out)) < 0)
            goto fail;
    }
    if ((r = benc_put_end(out)) < 0 || (r = benc_put_end(out)) < 0)
        goto fail;
    return 0;
fail:
    out->len = old;
    if (out->data)
        out->data[old] = '\0';
    return r;
}

static const char *
status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

int
trkserve_http_response(struct buf *out, int status, const void *body,
                       size_t body_len, bool keep_alive)
{
    size_t old = out->len;
    int r = buf_printf(out,
                       "HTTP/1.1 %d %s\r\n"
                       "Content-Type: text/plain\r\n"
                       "Content-Length: %zu\r\n"
                       "%s\r\n",
                       status, status_text(status), body_len,
                       keep_alive ? "" : "Connection: close\r\n");
    if (r >= 0 && body_len)
        r = buf_append(out, body, body_len);
    if (r < 0) {
        out->len = old;
        if (out->data)
            out->data[old] = '\0';
        return r;
    }
    return 0;
}

/* --- UDP ------------------------------------------------------------------- */

int
trkserve_udp_parse(struct trkserve_udp_req *ret, const void *buf, size_t len,
                   size_t *reterr_offset)
{
    const uint8_t *p = buf;
    struct trkserve_udp_req q;

    if (len < UDP_HEAD_LEN)
        return fail(TRKSERVE_E_TRUNCATED, len, reterr_offset);
    memset(&q, 0, sizeof(q));
    q.action = be32_get(p + 8);
    q.transaction_id = be32_get(p + 12);
    switch (q.action) {
    case TRACKER_UDP_CONNECT:
        if (be64_get(p) != TRACKER_UDP_PROTOCOL_ID)
            return fail(TRKSERVE_E_PROTOCOL, 0, reterr_offset);
        break;
    case TRACKER_UDP_ANNOUNCE: {
        struct trkserve_announce *a = &q.announce;
        if (len < UDP_ANNOUNCE_REQ_LEN)
            return fail(TRKSERVE_E_TRUNCATED, len, reterr_offset);
        q.connection_id = be64_get(p);
        memcpy(a->info_hash, p + 16, TRACKER_HASH_LEN);
        memcpy(a->peer_id, p + 36, TRACKER_PEER_ID_LEN);
        a->downloaded = be64_get(p + 56);
        a->left = be64_get(p + 64);
        a->has_left = true;
        a->uploaded = be64_get(p + 72);
        uint32_t ev = be32_get(p + 80);
        if (ev >= TRACKER_EVENT_MAX)
            return fail(TRKSERVE_E_EVENT, 80, reterr_offset);
        a->event = (enum tracker_event)ev;
        memcpy(&q.ip, p + 84, 4);
        memcpy(a->key, p + 88, 4);
        a->key_len = 4;
        int32_t nw = (int32_t)be32_get(p + 92);
        a->numwant = nw < 0 ? -1 : nw;
        a->port = (uint16_t)(p[96] << 8 | p[97]);
        if (a->port == 0)
            return fail(TRKSERVE_E_PORT, 96, reterr_offset);
        a->compact = true;
        break;
    }
    case TRACKER_UDP_SCRAPE: {
        q.connection_id = be64_get(p);
        size_t n = (len - UDP_HEAD_LEN) / TRACKER_HASH_LEN;
        if (n == 0 || UDP_HEAD_LEN + n * TRACKER_HASH_LEN != len)
            return fail(TRKSERVE_E_TRUNCATED, len, reterr_offset);
        if (n > TRACKER_UDP_SCRAPE_MAX)
            return fail(TRKSERVE_E_TOO_MANY,
                        UDP_HEAD_LEN +
                            TRACKER_UDP_SCRAPE_MAX * TRACKER_HASH_LEN,
                        reterr_offset);
        q.hashes = p + UDP_HEAD_LEN;
        q.n_hashes = n;
        break;
    }
    default:
        return fail(TRKSERVE_E_ACTION, 8, reterr_offset);
    }
    *ret = q;
    return 0;
}

uint64_t
trkserve_conn_id(const uint8_t secret[TRKSERVE_SECRET_LEN],
                 const struct trkserve_addr *addr, uint64_t bucket)
{
    uint8_t msg[8 + 1 + 16];
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    size_t alen = addr->family == AF_INET6 ? 16 : 4;
    be64_put(msg, bucket);
    msg[8] = addr->family;
    memcpy(msg + 9, addr->addr, alen);
    if (!HMAC(EVP_sha1(), secret, TRKSERVE_SECRET_LEN, msg, 9 + alen, md,
              &md_len) ||
        md_len < 8)
        return 0; /* never valid: see trkserve_conn_id_valid() */
    return be64_get(md);
}

bool
trkserve_conn_id_valid(const uint8_t secret[TRKSERVE_SECRET_LEN],
                       const struct trkserve_addr *addr, uint64_t now_s,
                       uint64_t id)
{
    uint64_t b = now_s / TRKSERVE_CONN_BUCKET_S;
    if (id == 0)
        return false;
    if (trkserve_conn_id(secret, addr, b) == id)
        return true;
    return b > 0 && trkserve_conn_id(secret, addr, b - 1) == id;
}

size_t
trkserve_udp_connect_resp(uint8_t *out, size_t out_size,
                          uint32_t transaction_id, uint64_t connection_id)
{
    if (out_size < TRKSERVE_UDP_CONNECT_RESP_LEN)
        return 0;
    be32_put(out, TRACKER_UDP_CONNECT);
    be32_put(out + 4, transaction_id);
    be64_put(out + 8, connection_id);
    return TRKSERVE_UDP_CONNECT_RESP_LEN;
}

size_t
trkserve_udp_announce_resp(uint8_t *out, size_t out_size,
                           uint32_t transaction_id, uint32_t interval,
                           uint32_t leechers, uint32_t seeders,
                           const struct tracker_peer *peers, size_t n,
                           int family)
{
    size_t each = family == AF_INET6 ? COMPACT6_LEN : COMPACT4_LEN;
    size_t alen = family == AF_INET6 ? 16 : 4;
    if (out_size < TRKSERVE_UDP_ANNOUNCE_HEAD_LEN)
        return 0;
    be32_put(out, TRACKER_UDP_ANNOUNCE);
    be32_put(out + 4, transaction_id);
    be32_put(out + 8, interval);
    be32_put(out + 12, leechers);
    be32_put(out + 16, seeders);
    size_t o = TRKSERVE_UDP_ANNOUNCE_HEAD_LEN;
    for (size_t i = 0; i < n; i++) {
        if (peers[i].family != family)
            continue;
        if (out_size - o < each)
            break;
        memcpy(out + o, peers[i].addr, alen);
        be16_put(out + o + alen, peers[i].port);
        o += each;
    }
    return o;
}

size_t
trkserve_udp_scrape_resp(uint8_t *out, size_t out_size,
                         uint32_t transaction_id,
                         const struct trkserve_scrape_file *files, size_t n)
{
    size_t need = 8 + n * TRKSERVE_UDP_SCRAPE_ENTRY_LEN;
    if (n > TRACKER_UDP_SCRAPE_MAX || out_size < need)
        return 0;
    be32_put(out, TRACKER_UDP_SCRAPE);
    be32_put(out + 4, transaction_id);
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = out + 8 + i * TRKSERVE_UDP_SCRAPE_ENTRY_LEN;
        be32_put(e, clamp32(files[i].complete));
        be32_put(e + 4, clamp32(files[i].downloaded));
        be32_put(e + 8, clamp32(files[i].incomplete));
    }
    return need;
}

size_t
trkserve_udp_error(uint8_t *out, size_t out_size, uint32_t transaction_id,
                   const char *message)
{
    size_t ml = strlen(message);
    if (ml > TRKSERVE_UDP_ERROR_MAX)
        ml = TRKSERVE_UDP_ERROR_MAX;
    if (out_size < 8 + ml)
        return 0;
    be32_put(out, TRACKER_UDP_ERROR);
    be32_put(out + 4, transaction_id);
    memcpy(out + 8, message, ml);
    return 8 + ml;
}

/* --- allowlist ------------------------------------------------------------- */

static int
cmp_hash(const void *a, const void *b)
{
    return memcmp(a, b, TRACKER_HASH_LEN);
}

int
trkserve_allowlist_parse(uint8_t (*hashes)[TRACKER_HASH_LEN], size_t max,
                         size_t *ret_n, const char *text, size_t len,
                         unsigned *reterr_line)
{
    size_t pos = 0, n = 0;
    unsigned line = 0;
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - s) : len - pos;
        pos += ll + (nl ? 1 : 0);
        line++;
        const char *e = s + ll;
        while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        /* A comment: the whole line, or after whitespace. */
        const char *c = s;
        while (c < e && *c != '#')
            c++;
        if (c > s && c < e && c[-1] != ' ' && c[-1] != '\t')
            goto bad;
        e = c;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (s == e)
            continue;
        if ((size_t)(e - s) != 2 * TRACKER_HASH_LEN)
            goto bad;
        if (n >= max)
            return -E2BIG;
        if (hex_decode(hashes[n], s, TRACKER_HASH_LEN) < 0)
            goto bad;
        n++;
    }
    if (n > 1)
        qsort(hashes, n, TRACKER_HASH_LEN, cmp_hash);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || memcmp(hashes[k - 1], hashes[i], TRACKER_HASH_LEN) != 0)
            memmove(hashes[k++], hashes[i], TRACKER_HASH_LEN);
    *ret_n = k;
    return 0;
bad:
    if (reterr_line)
        *reterr_line = line;
    return -EINVAL;
}

bool
trkserve_allowlist_has(const uint8_t (*hashes)[TRACKER_HASH_LEN], size_t n,
                       const uint8_t *hash)
{
    return n > 0 &&
           bsearch(hash, hashes, n, TRACKER_HASH_LEN, cmp_hash) != NULL;
}
