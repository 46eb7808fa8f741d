/* tracker — HTTP and UDP tracker codecs.
 *
 * The HTTP parsers decode with common/bencode under limits derived from
 * struct tracker_limits (size, and a node budget proportional to the
 * number of peers or files allowed), then read the few keys they know.
 * Everything is built in a local struct and handed over only on success.
 */
#include "common/tracker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/be.h"
#include "common/bencode.h"
#include "common/buf.h"

const struct tracker_limits tracker_limits_default = {
    .max_size = 2u << 20,
    .max_peers = 10000,
    .max_files = 1000,
    .max_message = 1024,
};

#define COMPACT4_LEN 6
#define COMPACT6_LEN 18
#define BENC_DEPTH 8
/* Bencode nodes allowed: a fixed part plus this many per peer or file. */
#define NODES_FIXED 256u
#define NODES_PER_ITEM 16u
#define UDP_HEADER_LEN 8
#define UDP_CONNECT_RESP_LEN 16
#define UDP_ANNOUNCE_RESP_LEN 20
#define UDP_SCRAPE_ENTRY_LEN 12
#define PORT_MAX 65535

static const char *const tracker_errors[] = {
    [-TRACKER_OK] = "success",
    [-TRACKER_E_BENCODE] = "malformed bencode",
    [-TRACKER_E_NOT_DICT] = "response is not a dictionary",
    [-TRACKER_E_FIELD] = "a field has the wrong type or value",
    [-TRACKER_E_PEERS] = "compact peer list of a wrong length",
    [-TRACKER_E_PEER] = "malformed peer entry",
    [-TRACKER_E_HASH] = "scrape entry key is not a 20-byte info-hash",
    [-TRACKER_E_TOO_MANY] = "too many peers or files",
    [-TRACKER_E_TOO_LARGE] = "response too large",
    [-TRACKER_E_TRUNCATED] = "response truncated",
    [-TRACKER_E_ACTION] = "unexpected action",
    [-TRACKER_E_TRANSACTION] = "transaction id mismatch",
    [-TRACKER_E_URL] = "not a usable tracker URL",
    [-TRACKER_E_NOMEM] = "out of memory",
};

const char *
tracker_strerror(int err)
{
    if (err > 0 || err <= TRACKER_E_MIN)
        return "unknown error";
    return tracker_errors[-err];
}

const char *
tracker_event_name(enum tracker_event ev)
{
    switch (ev) {
    case TRACKER_EVENT_COMPLETED:
        return "completed";
    case TRACKER_EVENT_STARTED:
        return "started";
    case TRACKER_EVENT_STOPPED:
        return "stopped";
    default:
        return "";
    }
}

void
tracker_announce_resp_release(struct tracker_announce_resp *r)
{
    if (!r)
        return;
    free(r->failure);
    free(r->warning);
    free(r->tracker_id);
    free(r->peers);
    memset(r, 0, sizeof(*r));
}

void
tracker_scrape_resp_release(struct tracker_scrape_resp *r)
{
    if (!r)
        return;
    free(r->failure);
    free(r->files);
    memset(r, 0, sizeof(*r));
}

void
tracker_udp_resp_release(struct tracker_udp_resp *r)
{
    if (!r)
        return;
    tracker_announce_resp_release(&r->announce);
    tracker_scrape_resp_release(&r->scrape);
    memset(r, 0, sizeof(*r));
}

static void
announce_init(struct tracker_announce_resp *r)
{
    memset(r, 0, sizeof(*r));
    r->interval = r->min_interval = -1;
    r->complete = r->incomplete = r->downloaded = -1;
}

/* --- URLs --------------------------------------------------------------- */

static bool
is_unreserved(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

int
tracker_url_escape(struct buf *out, const void *p, size_t n)
{
    static const char hexd[] = "0123456789ABCDEF";
    const uint8_t *s = p;

    for (size_t i = 0; i < n; i++) {
        int r;
        if (is_unreserved(s[i])) {
            r = buf_putc(out, (char)s[i]);
        } else {
            char e[3] = {'%', hexd[s[i] >> 4], hexd[s[i] & 15]};
            r = buf_append(out, e, sizeof(e));
        }
        if (r < 0)
            return r;
    }
    return 0;
}

static bool
starts_with_ci(const char *s, const char *lower)
{
    for (; *lower; s++, lower++) {
        int c = (unsigned char)*s;
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != *lower)
            return false;
    }
    return true;
}

/* Length of the scheme and authority ("http://host:port"), or 0 when url
 * is not http(s). */
static size_t
http_prefix_len(const char *url)
{
    size_t k;
    if (starts_with_ci(url, "http://"))
        k = 7;
    else if (starts_with_ci(url, "https://"))
        k = 8;
    else
        return 0;
    size_t host = k;
    while (url[k] && url[k] != '/' && url[k] != '?' && url[k] != '#')
        k++;
    return k > host ? k : 0;
}

/* Append url without its fragment, then '?' or '&' as needed. */
static int
put_base(struct buf *out, const char *url, size_t len)
{
    const char *q = memchr(url, '?', len);
    int r = buf_append(out, url, len);
    if (r < 0)
        return r;
    if (!q)
        return buf_putc(out, '?');
    if (url[len - 1] != '?' && url[len - 1] != '&')
        return buf_putc(out, '&');
    return 0;
}

int
tracker_http_announce_url(struct buf *out, const char *announce_url,
                          const struct tracker_announce_req *req)
{
    if (http_prefix_len(announce_url) == 0)
        return -EINVAL;
    size_t old = out->len;
    size_t len = strcspn(announce_url, "#");
    int r = put_base(out, announce_url, len);

    if (r >= 0)
        r = buf_puts(out, "info_hash=");
    if (r >= 0)
        r = tracker_url_escape(out, req->info_hash, TRACKER_HASH_LEN);
    if (r >= 0)
        r = buf_puts(out, "&peer_id=");
    if (r >= 0)
        r = tracker_url_escape(out, req->peer_id, TRACKER_PEER_ID_LEN);
    if (r >= 0)
        r = buf_printf(out,
                       "&port=%u&uploaded=%" PRIu64 "&downloaded=%" PRIu64
                       "&left=%" PRIu64 "&compact=1",
                       (unsigned)req->port, req->uploaded, req->downloaded,
                       req->left);
    if (r >= 0 && req->event != TRACKER_EVENT_NONE)
        r = buf_printf(out, "&event=%s", tracker_event_name(req->event));
    if (r >= 0 && req->numwant >= 0)
        r = buf_printf(out, "&numwant=%" PRId32, req->numwant);
    if (r >= 0)
        r = buf_printf(out, "&key=%08" PRIX32, req->key);
    if (r >= 0 && req->tracker_id && req->tracker_id_len > 0) {
        r = buf_puts(out, "&trackerid=");
        if (r >= 0)
            r = tracker_url_escape(out, req->tracker_id, req->tracker_id_len);
    }
    if (r < 0) {
        out->len = old;
        if (out->data)
            out->data[old] = '\0';
    }
    return r;
}

int
tracker_http_scrape_url(struct buf *out, const char *announce_url,
                        const uint8_t (*hashes)[TRACKER_HASH_LEN], size_t n)
{
    static const char ann[] = "announce";
    size_t pre = http_prefix_len(announce_url);
    if (pre == 0)
        return -EINVAL;
    size_t len = strcspn(announce_url, "#");
    size_t path_end = pre + strcspn(announce_url + pre, "?#");
    /* The last '/' of the path. */
    size_t slash = path_end;
    while (slash > pre && announce_url[slash - 1] != '/')
        slash--;
    if (slash == pre || path_end - slash < sizeof(ann) - 1 ||
        memcmp(announce_url + slash, ann, sizeof(ann) - 1) != 0)
        return -ENOENT;

    size_t old = out->len;
    const char *rest = announce_url + slash + sizeof(ann) - 1;
    int r = buf_append(out, announce_url, slash);
    if (r >= 0)
        r = buf_puts(out, "scrape");
    if (r >= 0 && n > 0)
        r = put_base(out, rest, len - (size_t)(rest - announce_url));
    else if (r >= 0)
        r = buf_append(out, rest, len - (size_t)(rest - announce_url));
    for (size_t i = 0; r >= 0 && i < n; i++) {
        r = buf_puts(out, i ? "&info_hash=" : "info_hash=");
        if (r >= 0)
            r = tracker_url_escape(out, hashes[i], TRACKER_HASH_LEN);
    }
    if (r < 0) {
        out->len = old;
        if (out->data)
            out->data[old] = '\0';
    }
    return r;
}

/* --- HTTP responses ---------------------------------------------------- */

struct parse {
    const struct benc_doc *doc;
    const struct tracker_limits *lim;
    size_t err_off;
};

static int
fail(struct parse *ps, int err, size_t off)
{
    ps->err_off = off;
    return err;
}

static int
fail_node(struct parse *ps, int err, uint32_t idx)
{
    return fail(ps, err, ps->doc->nodes[idx].start);
}

/* Length of the valid UTF-8 sequence at p[0..n), or 0 if there is none
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t
utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t k;
    uint8_t lo = 0x80, hi = 0xbf; /* the range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < k || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return k;
}

/* A printable copy of a message, at most max bytes: control bytes and
 * bytes that are not valid UTF-8 become '?', and the cut never splits a
 * character (messages end up in JSON, which must be UTF-8). */
static char *
message_copy(const uint8_t *p, size_t n, size_t max)
{
    size_t cap = n < max ? n : max;
    char *s = malloc(cap + 1);
    if (!s)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(p + i, n - i);
        if (o + (k ? k : 1) > cap)
            break;
        if (k == 0 || (k == 1 && (p[i] < 0x20 || p[i] == 0x7f))) {
            s[o++] = '?';
            i++;
            continue;
        }
        memcpy(s + o, p + i, k);
        o += k;
        i += k;
    }
    s[o] = '\0';
    return s;
}

/* An optional string key copied as a message; 0 if absent. */
static int
get_message(struct parse *ps, uint32_t dict, const char *key, char **ret)
{
    uint32_t v = benc_dict_get(ps->doc, dict, key);
    if (v == BENC_NONE)
        return 0;
    size_t n;
    const uint8_t *p = benc_str(ps->doc, v, &n);
    if (!p)
        return fail_node(ps, TRACKER_E_FIELD, v);
    *ret = message_copy(p, n, ps->lim->max_message);
    if (!*ret)
        return fail_node(ps, TRACKER_E_NOMEM, v);
    return 0;
}

/* An optional non-negative integer key; *ret is left as it was if absent. */
static int
get_count(struct parse *ps, uint32_t dict, const char *key, int64_t *ret)
{
    uint32_t v = benc_dict_get(ps->doc, dict, key);
    if (v == BENC_NONE)
        return 0;
    if (!benc_is(ps->doc, v, BENC_INT) || ps->doc->nodes[v].u.i < 0)
        return fail_node(ps, TRACKER_E_FIELD, v);
    *ret = ps->doc->nodes[v].u.i;
    return 0;
}

static int
decode(struct benc_doc *doc, const void *body, size_t len,
       const struct tracker_limits *lim, uint32_t items, size_t *ret_off)
{
    if (len > lim->max_size) {
        *ret_off = lim->max_size;
        return TRACKER_E_TOO_LARGE;
    }
    uint64_t nodes = NODES_FIXED + (uint64_t)NODES_PER_ITEM * items;
    struct benc_limits bl = {
        .max_input = lim->max_size,
        .max_depth = BENC_DEPTH,
        .max_nodes = nodes > UINT32_MAX ? UINT32_MAX : (uint32_t)nodes,
    };
    size_t off = 0;
    int r = benc_parse(doc, body, len, &bl, BENC_ALLOW_TRAILING, &off);
    if (r == BENC_E_NOMEM)
        r = TRACKER_E_NOMEM;
    else if (r == BENC_E_TOO_MANY_NODES)
        r = TRACKER_E_TOO_LARGE;
    else if (r < 0)
        r = TRACKER_E_BENCODE;
    else if (!benc_is(doc, 0, BENC_DICT)) {
        benc_doc_release(doc);
        off = 0;
        r = TRACKER_E_NOT_DICT;
    }
    if (r < 0)
        *ret_off = off;
    return r;
}

/* Room for n more peers in a list of *cap slots (the caller has checked
 * max_peers). */
static int
peers_reserve(struct parse *ps, struct tracker_announce_resp *a, size_t n,
              size_t *cap, size_t off)
{
    size_t need = a->n_peers + n;
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    if (c < need)
        c = need;
    if (c > ps->lim->max_peers)
        c = need;
    void *p = reallocarray(a->peers, c, sizeof(*a->peers));
    if (!p)
        return fail(ps, TRACKER_E_NOMEM, off);
    a->peers = p;
    *cap = c;
    return 0;
}

/* Add compact peers from p[0..n) (elem bytes each: address, port). */
static int
add_compact(struct tracker_announce_resp *a, const uint8_t *p, size_t n,
            size_t elem)
{
    size_t alen = elem - 2;
    for (size_t i = 0; i + elem <= n; i += elem) {
        uint16_t port = (uint16_t)(p[i + alen] << 8 | p[i + alen + 1]);
        if (port == 0) {
            a->n_skipped++;
            continue;
        }
        struct tracker_peer *pe = &a->peers[a->n_peers++];
        memset(pe, 0, sizeof(*pe));
        pe->family = alen == 4 ? AF_INET : AF_INET6;
        pe->port = port;
        memcpy(pe->addr, p + i, alen);
    }
    return 0;
}

static int
parse_compact(struct parse *ps, struct tracker_announce_resp *a,
              uint32_t v, size_t elem, size_t *cap)
{
    size_t n;
    const uint8_t *p = benc_str(ps->doc, v, &n);
    const struct benc_node *node = &ps->doc->nodes[v];
    if (n % elem != 0)
        return fail_node(ps, TRACKER_E_PEERS, v);
    size_t count = n / elem;
    if (count > ps->lim->max_peers ||
        a->n_peers > ps->lim->max_peers - count) {
        size_t room = ps->lim->max_peers - a->n_peers;
        return fail(ps, TRACKER_E_TOO_MANY, node->u.s.off + room * elem);
    }
    int r = peers_reserve(ps, a, count, cap, node->start);
    if (r < 0)
        return r;
    return add_compact(a, p, n, elem);
}

static int
parse_peer_dict(struct parse *ps, struct tracker_announce_resp *a,
                uint32_t d)
{
    const struct benc_doc *doc = ps->doc;
    uint32_t ip = benc_dict_get(doc, d, "ip");
    uint32_t port = benc_dict_get(doc, d, "port");
    uint32_t id = benc_dict_get(doc, d, "peer id");
    size_t ip_len, id_len = 0;
    const uint8_t *ip_p = benc_str(doc, ip, &ip_len);

    if (!benc_is(doc, d, BENC_DICT) || !ip_p || !benc_is(doc, port, BENC_INT))
        return fail_node(ps, TRACKER_E_PEER, d);
    if (doc->nodes[port].u.i < 0 || doc->nodes[port].u.i > PORT_MAX)
        return fail_node(ps, TRACKER_E_PEER, port);
    if (id != BENC_NONE &&
        (!benc_str(doc, id, &id_len) || id_len != TRACKER_PEER_ID_LEN))
        return fail_node(ps, TRACKER_E_PEER, id);

    struct tracker_peer pe;
    memset(&pe, 0, sizeof(pe));
    char text[INET6_ADDRSTRLEN];
    bool ok = ip_len > 0 && ip_len < sizeof(text) &&
              !memchr(ip_p, '\0', ip_len);
    if (ok) {
        memcpy(text, ip_p, ip_len);
        text[ip_len] = '\0';
        if (inet_pton(AF_INET, text, pe.addr) == 1)
            pe.family = AF_INET;
        else if (inet_pton(AF_INET6, text, pe.addr) == 1)
            pe.family = AF_INET6;
        else
            ok = false;
    }
    if (!ok || doc->nodes[port].u.i == 0) {
        a->n_skipped++;
        return 0;
    }
    pe.port = (uint16_t)doc->nodes[port].u.i;
    if (id != BENC_NONE) {
        pe.has_id = true;
        memcpy(pe.id, benc_str(doc, id, &id_len), TRACKER_PEER_ID_LEN);
    }
    a->peers[a->n_peers++] = pe;
    return 0;
}

static int
parse_peers(struct parse *ps, struct tracker_announce_resp *a, size_t *cap)
{
    const struct benc_doc *doc = ps->doc;
    uint32_t v = benc_dict_get(doc, 0, "peers");
    int r;

    if (v == BENC_NONE)
        return 0;
    if (benc_is(doc, v, BENC_STR))
        return parse_compact(ps, a, v, COMPACT4_LEN, cap);
    if (!benc_is(doc, v, BENC_LIST))
        return fail_node(ps, TRACKER_E_FIELD, v);
    for (uint32_t c = benc_first(doc, v); c != BENC_NONE;
         c = benc_next(doc, v, c)) {
        if (a->n_peers >= ps->lim->max_peers)
            return fail_node(ps, TRACKER_E_TOO_MANY, c);
        r = peers_reserve(ps, a, 1, cap, doc->nodes[c].start);
        if (r < 0)
            return r;
        r = parse_peer_dict(ps, a, c);
        if (r < 0)
            return r;
    }
    return 0;
}

int
tracker_parse_announce(struct tracker_announce_resp *ret, const void *body,
                       size_t len, const struct tracker_limits *lim,
                       size_t *reterr_offset)
{
    struct benc_doc doc;
    struct tracker_announce_resp a;
    size_t off = 0;
    if (!lim)
        lim = &tracker_limits_default;
    int r = decode(&doc, body, len, lim, lim->max_peers, &off);
    if (r < 0) {
        if (reterr_offset)
            *reterr_offset = off;
        return r;
    }

    struct parse ps = {.doc = &doc, .lim = lim};
    size_t cap = 0;
    announce_init(&a);
    r = get_message(&ps, 0, "failure reason", &a.failure);
    if (r < 0 || a.failure)
        goto out;
    r = get_message(&ps, 0, "warning message", &a.warning);
    if (r >= 0)
        r = get_count(&ps, 0, "interval", &a.interval);
    if (r >= 0)
        r = get_count(&ps, 0, "min interval", &a.min_interval);
    if (r >= 0)
        r = get_count(&ps, 0, "complete", &a.complete);
    if (r >= 0)
        r = get_count(&ps, 0, "incomplete", &a.incomplete);
    if (r >= 0)
        r = get_count(&ps, 0, "downloaded", &a.downloaded);
    if (r >= 0) {
        uint32_t v = benc_dict_get(&doc, 0, "tracker id");
        size_t n;
        const uint8_t *p = benc_str(&doc, v, &n);
        if (v != BENC_NONE && (!p || n > TRACKER_TRACKER_ID_MAX))
            r = fail_node(&ps, TRACKER_E_FIELD, v);
        else if (p && n > 0) {
            a.tracker_id = malloc(n);
            if (!a.tracker_id)
                r = fail_node(&ps, TRACKER_E_NOMEM, v);
            else {
                memcpy(a.tracker_id, p, n);
                a.tracker_id_len = n;
            }
        }
    }
    if (r >= 0)
        r = parse_peers(&ps, &a, &cap);
    if (r >= 0) {
        uint32_t v = benc_dict_get(&doc, 0, "peers6");
        if (v != BENC_NONE && !benc_is(&doc, v, BENC_STR))
            r = fail_node(&ps, TRACKER_E_FIELD, v);
        else if (v != BENC_NONE)
            r = parse_compact(&ps, &a, v, COMPACT6_LEN, &cap);
    }
out:
    benc_doc_release(&doc);
    if (r < 0) {
        tracker_announce_resp_release(&a);
        if (reterr_offset)
            *reterr_offset = ps.err_off;
        return r;
    }
    *ret = a;
    return 0;
}

int
tracker_parse_scrape(struct tracker_scrape_resp *ret, const void *body,
                     size_t len, const struct tracker_limits *lim,
                     size_t *reterr_offset)
{
    struct benc_doc doc;
    struct tracker_scrape_resp s;
    size_t off = 0;
    if (!lim)
        lim = &tracker_limits_default;
    int r = decode(&doc, body, len, lim, lim->max_files, &off);
    if (r < 0) {
        if (reterr_offset)
            *reterr_offset = off;
        return r;
    }

    struct parse ps = {.doc = &doc, .lim = lim};
    memset(&s, 0, sizeof(s));
    r = get_message(&ps, 0, "failure reason", &s.failure);
    if (r < 0 || s.failure)
        goto out;
    uint32_t files = benc_dict_get(&doc, 0, "files");
    if (files == BENC_NONE)
        goto out;
    if (!benc_is(&doc, files, BENC_DICT)) {
        r = fail_node(&ps, TRACKER_E_FIELD, files);
        goto out;
    }
    uint32_t count = doc.nodes[files].u.count;
    if (count > lim->max_files) {
        /* The key of the first file past the limit. */
        uint32_t c = benc_first(&doc, files);
        for (uint32_t i = 0; i < 2 * lim->max_files; i++)
            c = benc_next(&doc, files, c);
        r = fail_node(&ps, TRACKER_E_TOO_MANY, c);
        goto out;
    }
    if (count > 0) {
        s.files = calloc(count, sizeof(*s.files));
        if (!s.files) {
            r = fail_node(&ps, TRACKER_E_NOMEM, files);
            goto out;
        }
    }
    for (uint32_t k = benc_first(&doc, files); k != BENC_NONE;) {
        uint32_t v = benc_next(&doc, files, k);
        size_t n;
        const uint8_t *h = benc_str(&doc, k, &n);
        if (n != TRACKER_HASH_LEN) {
            r = fail_node(&ps, TRACKER_E_HASH, k);
            goto out;
        }
        if (!benc_is(&doc, v, BENC_DICT)) {
            r = fail_node(&ps, TRACKER_E_FIELD, v);
            goto out;
        }
        struct tracker_scrape_file *f = &s.files[s.n_files];
        memcpy(f->info_hash, h, TRACKER_HASH_LEN);
        f->complete = f->downloaded = f->incomplete = -1;
        r = get_count(&ps, v, "complete", &f->complete);
        if (r >= 0)
            r = get_count(&ps, v, "downloaded", &f->downloaded);
        if (r >= 0)
            r = get_count(&ps, v, "incomplete", &f->incomplete);
        if (r < 0)
            goto out;
        s.n_files++;
        k = benc_next(&doc, files, v);
    }
out:
    benc_doc_release(&doc);
    if (r < 0) {
        tracker_scrape_resp_release(&s);
        if (reterr_offset)
            *reterr_offset = ps.err_off;
        return r;
    }
    *ret = s;
    return 0;
}

/* --- UDP ---------------------------------------------------------------- */

size_t
tracker_udp_connect_req(uint8_t out[TRACKER_UDP_CONNECT_LEN],
                        uint32_t transaction_id)
{
    be64_put(out, TRACKER_UDP_PROTOCOL_ID);
    be32_put(out + 8, TRACKER_UDP_CONNECT);
    be32_put(out + 12, transaction_id);
    return TRACKER_UDP_CONNECT_LEN;
}

size_t
tracker_udp_announce_req(uint8_t out[TRACKER_UDP_ANNOUNCE_LEN],
                         uint64_t connection_id, uint32_t transaction_id,
                         const struct tracker_announce_req *req)
{
    be64_put(out, connection_id);
    be32_put(out + 8, TRACKER_UDP_ANNOUNCE);
    be32_put(out + 12, transaction_id);
    memcpy(out + 16, req->info_hash, TRACKER_HASH_LEN);
    memcpy(out + 36, req->peer_id, TRACKER_PEER_ID_LEN);
    be64_put(out + 56, req->downloaded);
    be64_put(out + 64, req->left);
    be64_put(out + 72, req->uploaded);
    be32_put(out + 80, (uint32_t)req->event);
    be32_put(out + 84, 0); /* IP address: the sender's */
    be32_put(out + 88, req->key);
    be32_put(out + 92, (uint32_t)(req->numwant < 0 ? -1 : req->numwant));
    out[96] = (uint8_t)(req->port >> 8);
    out[97] = (uint8_t)req->port;
    return TRACKER_UDP_ANNOUNCE_LEN;
}

size_t
tracker_udp_scrape_req(uint8_t *out, size_t out_size, uint64_t connection_id,
                       uint32_t transaction_id,
                       const uint8_t (*hashes)[TRACKER_HASH_LEN], size_t n)
{
    if (n == 0 || n > TRACKER_UDP_SCRAPE_MAX ||
        out_size < 16 + n * TRACKER_HASH_LEN)
        return 0;
    be64_put(out, connection_id);
    be32_put(out + 8, TRACKER_UDP_SCRAPE);
    be32_put(out + 12, transaction_id);
    for (size_t i = 0; i < n; i++)
        memcpy(out + 16 + i * TRACKER_HASH_LEN, hashes[i], TRACKER_HASH_LEN);
    return 16 + n * TRACKER_HASH_LEN;
}

int
tracker_udp_peek(const void *buf, size_t len, uint32_t *ret_action,
                 uint32_t *ret_transaction_id)
{
    const uint8_t *p = buf;
    if (len < UDP_HEADER_LEN)
        return TRACKER_E_TRUNCATED;
    *ret_action = be32_get(p);
    *ret_transaction_id = be32_get(p + 4);
    return 0;
}

static int
udp_fail(size_t *reterr_offset, int err, size_t off)
{
    if (reterr_offset)
        *reterr_offset = off;
    return err;
}

int
tracker_udp_parse(struct tracker_udp_resp *ret, const void *buf, size_t len,
                  uint32_t expect, uint32_t transaction_id, int family,
                  const uint8_t (*hashes)[TRACKER_HASH_LEN], size_t n,
                  const struct tracker_limits *lim, size_t *reterr_offset)
{
    const uint8_t *p = buf;
    struct tracker_udp_resp u;
    uint32_t action, tid;

    if (!lim)
        lim = &tracker_limits_default;
    if (len > lim->max_size)
        return udp_fail(reterr_offset, TRACKER_E_TOO_LARGE, lim->max_size);
    if (tracker_udp_peek(buf, len, &action, &tid) < 0)
        return udp_fail(reterr_offset, TRACKER_E_TRUNCATED, len);
    if (tid != transaction_id)
        return udp_fail(reterr_offset, TRACKER_E_TRANSACTION, 4);
    if (action != expect && action != TRACKER_UDP_ERROR)
        return udp_fail(reterr_offset, TRACKER_E_ACTION, 0);

    memset(&u, 0, sizeof(u));
    announce_init(&u.announce);
    u.action = action;
    switch (action) {
    case TRACKER_UDP_ERROR:
        u.announce.failure = message_copy(p + UDP_HEADER_LEN,
                                          len - UDP_HEADER_LEN,
                                          lim->max_message);
        if (!u.announce.failure)
            return udp_fail(reterr_offset, TRACKER_E_NOMEM, UDP_HEADER_LEN);
        break;
    case TRACKER_UDP_CONNECT:
        if (len < UDP_CONNECT_RESP_LEN)
            return udp_fail(reterr_offset, TRACKER_E_TRUNCATED, len);
        u.connection_id = be64_get(p + 8);
        break;
    case TRACKER_UDP_ANNOUNCE: {
        if (len < UDP_ANNOUNCE_RESP_LEN)
            return udp_fail(reterr_offset, TRACKER_E_TRUNCATED, len);
        size_t elem = family == AF_INET6 ? COMPACT6_LEN : COMPACT4_LEN;
        size_t plen = len - UDP_ANNOUNCE_RESP_LEN;
        if (plen % elem != 0)
            return udp_fail(reterr_offset, TRACKER_E_PEERS,
                            UDP_ANNOUNCE_RESP_LEN);
        size_t count = plen / elem;
        if (count > lim->max_peers)
            return udp_fail(reterr_offset, TRACKER_E_TOO_MANY,
                            UDP_ANNOUNCE_RESP_LEN + lim->max_peers * elem);
        u.announce.interval = be32_get(p + 8);
        u.announce.incomplete = be32_get(p + 12);
        u.announce.complete = be32_get(p + 16);
        if (count > 0) {
            u.announce.peers = calloc(count, sizeof(*u.announce.peers));
            if (!u.announce.peers)
                return udp_fail(reterr_offset, TRACKER_E_NOMEM,
                                UDP_ANNOUNCE_RESP_LEN);
        }
        add_compact(&u.announce, p + UDP_ANNOUNCE_RESP_LEN, plen, elem);
        break;
    }
    case TRACKER_UDP_SCRAPE: {
        size_t plen = len - UDP_HEADER_LEN;
        if (plen % UDP_SCRAPE_ENTRY_LEN != 0)
            return udp_fail(reterr_offset, TRACKER_E_TRUNCATED, len);
        size_t count = plen / UDP_SCRAPE_ENTRY_LEN;
        if (count > n || count > lim->max_files)
            return udp_fail(reterr_offset, TRACKER_E_TOO_MANY,
                            UDP_HEADER_LEN +
                                (n < lim->max_files ? n : lim->max_files) *
                                    UDP_SCRAPE_ENTRY_LEN);
        if (count > 0) {
            u.scrape.files = calloc(count, sizeof(*u.scrape.files));
            if (!u.scrape.files)
                return udp_fail(reterr_offset, TRACKER_E_NOMEM,
                                UDP_HEADER_LEN);
        }
        for (size_t i = 0; i < count; i++) {
            const uint8_t *e = p + UDP_HEADER_LEN + i * UDP_SCRAPE_ENTRY_LEN;
            struct tracker_scrape_file *f = &u.scrape.files[i];
            memcpy(f->info_hash, hashes[i], TRACKER_HASH_LEN);
            f->complete = be32_get(e);
            f->downloaded = be32_get(e + 4);
            f->incomplete = be32_get(e + 8);
        }
        u.scrape.n_files = count;
        break;
    }
    default:
        return udp_fail(reterr_offset, TRACKER_E_ACTION, 0);
    }
    *ret = u;
    return 0;
}

int
tracker_udp_url_parse(struct tracker_udp_url *ret, const char *url)
{
    struct tracker_udp_url u;
    const char *h, *e;
    size_t hl;

    if (!starts_with_ci(url, "udp://"))
        return TRACKER_E_URL;
    memset(&u, 0, sizeof(u));
    h = url + 6;
    if (*h == '[') {
        e = strchr(h, ']');
        if (!e)
            return TRACKER_E_URL;
        h++;
        hl = (size_t)(e - h);
        e++;
        u.ipv6_literal = true;
    } else {
        hl = strcspn(h, ":/?#");
        e = h + hl;
    }
    if (hl == 0 || hl > TRACKER_UDP_HOST_MAX || *e != ':')
        return TRACKER_E_URL;
    for (size_t i = 0; i < hl; i++) {
        char c = h[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                  c == '_' || (u.ipv6_literal && c == ':');
        if (!ok)
            return TRACKER_E_URL;
    }
    memcpy(u.host, h, hl);
    if (u.ipv6_literal) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, u.host, &a6) != 1)
            return TRACKER_E_URL;
    }
    e++;
    unsigned long port = 0;
    size_t digits = 0;
    for (; *e >= '0' && *e <= '9' && digits < 6; e++, digits++)
        port = port * 10 + (unsigned long)(*e - '0');
    if (digits == 0 || port == 0 || port > PORT_MAX ||
        (*e != '\0' && *e != '/' && *e != '?' && *e != '#'))
        return TRACKER_E_URL;
    u.port = (uint16_t)port;
    *ret = u;
    return 0;
}
