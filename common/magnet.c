/* magnet — magnet URIs: parse and print.
 *
 * The parser makes one pass over the parameters.  Each value that we keep
 * is percent-decoded in two steps: a first walk checks the escapes and
 * measures the result against max_value, a second writes it into an
 * allocation of exactly that size, so nothing is ever allocated past the
 * limits.  Everything is built in a local struct magnet and handed to the
 * caller only on success.
 */
#include "common/magnet.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "common/base32.h"
#include "common/buf.h"
#include "common/hex.h"

const struct magnet_limits magnet_limits_default = {
    .max_uri = 64u << 10,
    .max_value = 4u << 10,
    .max_list = 200,
};

#define MAGNET_SCHEME "magnet:?"
#define MAGNET_SCHEME_LEN (sizeof(MAGNET_SCHEME) - 1)
#define MAGNET_BTIH_PREFIX "urn:btih:"
#define MAGNET_BTMH_PREFIX "urn:btmh:"
#define MAGNET_URN_PREFIX_LEN 9
/* A sha2-256 multihash: code 0x12, length 0x20, then the digest. */
#define MAGNET_BTMH_HEAD "1220"
#define MAGNET_BTMH_HEAD_LEN 4
#define MAGNET_PORT_MAX 65535u
#define MAGNET_HOST_MAX 253 /* the longest DNS name */

static const char *const magnet_errors[] = {
    [-MAGNET_OK] = "success",
    [-MAGNET_E_SCHEME] = "not a magnet URI (no \"magnet:?\")",
    [-MAGNET_E_SYNTAX] = "malformed parameter",
    [-MAGNET_E_ESCAPE] = "bad percent-escape",
    [-MAGNET_E_NO_HASH] = "no btih or btmh info-hash",
    [-MAGNET_E_BTIH] = "btih is not 40 hex or 32 base32 characters",
    [-MAGNET_E_BTMH] = "btmh is not a sha2-256 multihash",
    [-MAGNET_E_DUPLICATE] = "conflicting repeated parameter",
    [-MAGNET_E_PEER] = "x.pe is not host:port",
    [-MAGNET_E_SELECT] = "so is not a list of file indices and ranges",
    [-MAGNET_E_TOO_LONG] = "URI or value too long",
    [-MAGNET_E_TOO_MANY] = "too many tr, ws, x.pe or so items",
    [-MAGNET_E_NOMEM] = "out of memory",
};

const char *
magnet_strerror(int err)
{
    if (err > 0 || err <= MAGNET_E_MIN)
        return "unknown error";
    return magnet_errors[-err];
}

struct parser {
    const char *uri;
    size_t len;
    const struct magnet_limits *lim;
    size_t err_off;
    /* Allocated slots of the lists in the struct magnet being built. */
    size_t cap_tr, cap_ws, cap_peers, cap_so;
};

static int
fail(struct parser *ps, int err, size_t off)
{
    ps->err_off = off;
    return err;
}

static int
ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Does s[0..n) start with lower (lowercase ASCII), ignoring case?  Not
 * strncasecmp(): that one follows the locale. */
static bool
prefix_eq_ci(const char *s, size_t n, const char *lower)
{
    size_t k = strlen(lower);
    if (n < k)
        return false;
    for (size_t i = 0; i < k; i++)
        if (ascii_lower((unsigned char)s[i]) != lower[i])
            return false;
    return true;
}

static bool
key_is(const char *k, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(k, name, n) == 0;
}

/* name, or name followed by '.' and one or more digits ("xt.1"). */
static bool
key_is_numbered(const char *k, size_t n, const char *name)
{
    size_t nl = strlen(name);
    if (n < nl || memcmp(k, name, nl) != 0)
        return false;
    if (n == nl)
        return true;
    if (k[nl] != '.' || n == nl + 1)
        return false;
    for (size_t i = nl + 1; i < n; i++)
        if (k[i] < '0' || k[i] > '9')
            return false;
    return true;
}

/* Percent-decode the value at uri[off..off+n) into a new NUL-terminated
 * string.  plus_space turns '+' into ' ' (HTML form encoding, used by
 * clients for dn).  Refuses bad escapes, escapes that decode to NUL, and
 * results longer than max_value. */
static int
decode_value(struct parser *ps, size_t off, size_t n, bool plus_space,
             char **ret, size_t *ret_len)
{
    const char *v = ps->uri + off;
    size_t out_len = 0;

    for (size_t i = 0; i < n; out_len++) {
        if (out_len >= ps->lim->max_value)
            return fail(ps, MAGNET_E_TOO_LONG, off + i);
        if (v[i] != '%') {
            i++;
            continue;
        }
        int hi = i + 1 < n ? hex_digit((unsigned char)v[i + 1]) : -1;
        int lo = hi >= 0 && i + 2 < n ? hex_digit((unsigned char)v[i + 2])
                                      : -1;
        if (lo < 0 || (hi == 0 && lo == 0))
            return fail(ps, MAGNET_E_ESCAPE, off + i);
        i += 3;
    }

    char *s = malloc(out_len + 1);
    if (!s)
        return fail(ps, MAGNET_E_NOMEM, off);
    size_t o = 0;
    for (size_t i = 0; i < n; o++) {
        if (v[i] == '%') {
            s[o] = (char)(hex_digit((unsigned char)v[i + 1]) << 4 |
                          hex_digit((unsigned char)v[i + 2]));
            i += 3;
        } else {
            s[o] = plus_space && v[i] == '+' ? ' ' : v[i];
            i++;
        }
    }
    s[o] = '\0';
    *ret = s;
    if (ret_len)
        *ret_len = o;
    return 0;
}

/* Make room for one more item in a list of n items and *cap slots. */
static int
list_grow(struct parser *ps, void **list, size_t n, size_t *cap,
          size_t item_size, size_t off)
{
    if (n >= ps->lim->max_list)
        return fail(ps, MAGNET_E_TOO_MANY, off);
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 4;
    if (c > ps->lim->max_list)
        c = ps->lim->max_list;
    void *p = reallocarray(*list, c, item_size);
    if (!p)
        return fail(ps, MAGNET_E_NOMEM, off);
    *list = p;
    *cap = c;
    return 0;
}

/* Append s to a string list; takes ownership of s in every case. */
static int
list_push(struct parser *ps, char ***list, size_t *n, size_t *cap, char *s,
          size_t off)
{
    void *l = *list;
    int r = list_grow(ps, &l, *n, cap, sizeof(**list), off);
    *list = l;
    if (r < 0) {
        free(s);
        return r;
    }
    (*list)[(*n)++] = s;
    return 0;
}

static int
parse_xt(struct parser *ps, struct magnet *m, size_t pos, size_t off,
         size_t n)
{
    char *v;
    size_t vl;
    int r = decode_value(ps, off, n, false, &v, &vl);
    if (r < 0)
        return r;

    /* Only read once a prefix matched: vl >= MAGNET_URN_PREFIX_LEN. */
    const char *h = v;
    size_t hl = 0;
    if (prefix_eq_ci(v, vl, MAGNET_BTIH_PREFIX) ||
        prefix_eq_ci(v, vl, MAGNET_BTMH_PREFIX)) {
        h = v + MAGNET_URN_PREFIX_LEN;
        hl = vl - MAGNET_URN_PREFIX_LEN;
    }
    if (prefix_eq_ci(v, vl, MAGNET_BTIH_PREFIX)) {
        uint8_t d[20];
        if (hl == 40)
            r = hex_decode(d, h, sizeof(d));
        else if (hl == BASE32_ENCODED_LEN(sizeof(d)))
            r = base32_decode(d, sizeof(d), h, hl) == (int)sizeof(d)
                    ? 0 : -EINVAL;
        else
            r = -EINVAL;
        if (r < 0)
            r = fail(ps, MAGNET_E_BTIH, off);
        else if (m->has_btih && memcmp(m->btih, d, sizeof(d)) != 0)
            r = fail(ps, MAGNET_E_DUPLICATE, pos);
        else {
            memcpy(m->btih, d, sizeof(d));
            m->has_btih = true;
        }
    } else if (prefix_eq_ci(v, vl, MAGNET_BTMH_PREFIX)) {
        uint8_t d[32];
        if (hl != MAGNET_BTMH_HEAD_LEN + 2 * sizeof(d) ||
            memcmp(h, MAGNET_BTMH_HEAD, MAGNET_BTMH_HEAD_LEN) != 0 ||
            hex_decode(d, h + MAGNET_BTMH_HEAD_LEN, sizeof(d)) < 0)
            r = fail(ps, MAGNET_E_BTMH, off);
        else if (m->has_btmh && memcmp(m->btmh, d, sizeof(d)) != 0)
            r = fail(ps, MAGNET_E_DUPLICATE, pos);
        else {
            memcpy(m->btmh, d, sizeof(d));
            m->has_btmh = true;
        }
    }
    /* Any other xt (urn:sha1:, urn:ed2k:, ...) belongs to other networks. */
    free(v);
    return r;
}

static int
parse_dn(struct parser *ps, struct magnet *m, size_t pos, size_t off,
         size_t n)
{
    char *v;
    size_t vl;
    int r = decode_value(ps, off, n, true, &v, &vl);
    if (r < 0)
        return r;
    if (vl == 0 || (m->dn && strcmp(m->dn, v) == 0)) {
        free(v);
        return 0;
    }
    if (m->dn) {
        free(v);
        return fail(ps, MAGNET_E_DUPLICATE, pos);
    }
    m->dn = v;
    return 0;
}

/* "host:port": a DNS name or dotted IPv4 address, or a bracketed IPv6
 * address; a port from 1 to 65535. */
static bool
peer_valid(const char *s, size_t n)
{
    const char *colon = memrchr(s, ':', n);
    if (!colon)
        return false;
    size_t hl = (size_t)(colon - s);
    size_t pl = n - hl - 1;
    if (hl == 0 || pl == 0 || pl > 5)
        return false;
    uint32_t port = 0;
    for (size_t i = hl + 1; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        port = port * 10 + (uint32_t)(s[i] - '0');
    }
    if (port == 0 || port > MAGNET_PORT_MAX)
        return false;

    if (s[0] == '[') {
        char a[INET6_ADDRSTRLEN];
        struct in6_addr in6;
        if (hl < 3 || s[hl - 1] != ']' || hl - 2 >= sizeof(a))
            return false;
        memcpy(a, s + 1, hl - 2);
        a[hl - 2] = '\0';
        return inet_pton(AF_INET6, a, &in6) == 1;
    }
    if (hl > MAGNET_HOST_MAX)
        return false;
    for (size_t i = 0; i < hl; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

/* A decimal uint32_t at s[*i..n); moves *i past it. */
static bool
parse_index(const char *s, size_t n, size_t *i, uint32_t *ret)
{
    uint64_t v = 0;
    size_t start = *i;
    for (; *i < n && s[*i] >= '0' && s[*i] <= '9'; (*i)++) {
        v = v * 10 + (uint64_t)(s[*i] - '0');
        if (v > UINT32_MAX)
            return false;
    }
    if (*i == start)
        return false;
    *ret = (uint32_t)v;
    return true;
}

/* BEP 53: "0,2,4-6". */
static int
parse_so(struct parser *ps, struct magnet *m, size_t pos, size_t off,
         size_t n)
{
    char *v;
    size_t vl;
    int r = decode_value(ps, off, n, false, &v, &vl);
    if (r < 0)
        return r;
    size_t i = 0;
    for (;;) {
        struct magnet_range rg;
        if (!parse_index(v, vl, &i, &rg.first)) {
            r = fail(ps, MAGNET_E_SELECT, off);
            break;
        }
        rg.last = rg.first;
        if (i < vl && v[i] == '-') {
            i++;
            if (!parse_index(v, vl, &i, &rg.last) || rg.last < rg.first) {
                r = fail(ps, MAGNET_E_SELECT, off);
                break;
            }
        }
        void *l = m->so;
        r = list_grow(ps, &l, m->n_so, &ps->cap_so, sizeof(*m->so), pos);
        m->so = l;
        if (r < 0)
            break;
        m->so[m->n_so++] = rg;
        if (i == vl)
            break;
        if (v[i] != ',') {
            r = fail(ps, MAGNET_E_SELECT, off);
            break;
        }
        i++;
    }
    free(v);
    return r;
}

/* A parameter that we keep: key uri[pos..eq), value uri[eq+1..end). */
static int
parse_param(struct parser *ps, struct magnet *m, size_t pos, size_t eq,
            size_t end)
{
    const char *k = ps->uri + pos;
    size_t kl = eq - pos;
    size_t off = eq + 1, n = end - eq - 1;
    char **list;
    char *v;
    size_t vl;
    int r;

    if (key_is_numbered(k, kl, "xt"))
        return parse_xt(ps, m, pos, off, n);
    if (key_is(k, kl, "dn"))
        return parse_dn(ps, m, pos, off, n);
    if (key_is(k, kl, "so"))
        return parse_so(ps, m, pos, off, n);

    bool tr = key_is_numbered(k, kl, "tr");
    bool ws = key_is(k, kl, "ws");
    bool pe = key_is(k, kl, "x.pe");
    if (!tr && !ws && !pe)
        return 0; /* unknown: ignored, not even decoded */

    r = decode_value(ps, off, n, false, &v, &vl);
    if (r < 0)
        return r;
    if (pe && !peer_valid(v, vl)) {
        free(v);
        return fail(ps, MAGNET_E_PEER, off);
    }
    if (vl == 0) { /* an empty tr= or ws= names nothing */
        free(v);
        return 0;
    }
    if (tr) {
        list = m->tr;
        r = list_push(ps, &list, &m->n_tr, &ps->cap_tr, v, pos);
        m->tr = list;
    } else if (ws) {
        list = m->ws;
        r = list_push(ps, &list, &m->n_ws, &ps->cap_ws, v, pos);
        m->ws = list;
    } else {
        list = m->peers;
        r = list_push(ps, &list, &m->n_peers, &ps->cap_peers, v, pos);
        m->peers = list;
    }
    return r;
}

static int
parse(struct parser *ps, struct magnet *m)
{
    const char *u = ps->uri;
    size_t len = ps->len;

    if (len > ps->lim->max_uri)
        return fail(ps, MAGNET_E_TOO_LONG, ps->lim->max_uri);
    for (size_t i = 0; i < MAGNET_SCHEME_LEN; i++)
        if (i >= len || ascii_lower((unsigned char)u[i]) != MAGNET_SCHEME[i])
            return fail(ps, MAGNET_E_SCHEME, i);
    const char *nul = memchr(u, '\0', len);
    if (nul)
        return fail(ps, MAGNET_E_SYNTAX, (size_t)(nul - u));

    for (size_t pos = MAGNET_SCHEME_LEN; pos < len;) {
        const char *amp = memchr(u + pos, '&', len - pos);
        size_t end = amp ? (size_t)(amp - u) : len;
        if (end > pos) { /* "&&" is tolerated */
            const char *eq = memchr(u + pos, '=', end - pos);
            if (!eq || eq == u + pos)
                return fail(ps, MAGNET_E_SYNTAX, pos);
            int r = parse_param(ps, m, pos, (size_t)(eq - u), end);
            if (r < 0)
                return r;
        }
        pos = end + 1;
    }
    if (!m->has_btih && !m->has_btmh)
        return fail(ps, MAGNET_E_NO_HASH, len);
    return 0;
}

int
magnet_parse(struct magnet *ret, const char *uri, size_t len,
             const struct magnet_limits *lim, size_t *reterr_offset)
{
    struct parser ps = {
        .uri = uri,
        .len = len,
        .lim = lim ? lim : &magnet_limits_default,
    };
    struct magnet m = {0};

    int r = parse(&ps, &m);
    if (r < 0) {
        magnet_release(&m);
        if (reterr_offset)
            *reterr_offset = ps.err_off;
        return r;
    }
    *ret = m;
    return 0;
}

static void
free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void
magnet_release(struct magnet *m)
{
    if (!m)
        return;
    free(m->dn);
    free_list(m->tr, m->n_tr);
    free_list(m->ws, m->n_ws);
    free_list(m->peers, m->n_peers);
    free(m->so);
    memset(m, 0, sizeof(*m));
}

static bool
str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool
list_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return false;
    return true;
}

bool
magnet_equal(const struct magnet *a, const struct magnet *b)
{
    if (a->has_btih != b->has_btih || a->has_btmh != b->has_btmh)
        return false;
    if (a->has_btih && memcmp(a->btih, b->btih, sizeof(a->btih)) != 0)
        return false;
    if (a->has_btmh && memcmp(a->btmh, b->btmh, sizeof(a->btmh)) != 0)
        return false;
    if (!str_eq(a->dn, b->dn) || !list_eq(a->tr, a->n_tr, b->tr, b->n_tr) ||
        !list_eq(a->ws, a->n_ws, b->ws, b->n_ws) ||
        !list_eq(a->peers, a->n_peers, b->peers, b->n_peers))
        return false;
    if (a->n_so != b->n_so)
        return false;
    for (size_t i = 0; i < a->n_so; i++)
        if (a->so[i].first != b->so[i].first ||
            a->so[i].last != b->so[i].last)
            return false;
    return true;
}

/* RFC 3986 unreserved: ALPHA DIGIT - . _ ~ */
static bool
is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

/* "&key=" and s, percent-encoded (never first: xt always comes first). */
static int
put_param(struct buf *b, const char *key, const char *s)
{
    static const char digits[] = "0123456789ABCDEF";
    int r = buf_printf(b, "&%s=", key);
    for (const char *run = s; r == 0; s++) {
        unsigned char c = (unsigned char)*s;
        if (c && is_unreserved(c))
            continue;
        r = buf_append(b, run, (size_t)(s - run));
        if (c == '\0' || r < 0)
            break;
        char esc[3] = {'%', digits[c >> 4], digits[c & 15]};
        r = buf_append(b, esc, sizeof(esc));
        run = s + 1;
    }
    return r;
}

static int
put_list(struct buf *b, const char *key, char *const *list, size_t n)
{
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++)
        r = put_param(b, key, list[i]);
    return r;
}

static int
format(const struct magnet *m, struct buf *b)
{
    char hex[2 * sizeof(m->btmh) + 1];
    int r = buf_puts(b, "magnet:");
    if (r == 0 && m->has_btih) {
        hex_encode(hex, m->btih, sizeof(m->btih));
        r = buf_printf(b, "?xt=" MAGNET_BTIH_PREFIX "%s", hex);
    }
    if (r == 0 && m->has_btmh) {
        hex_encode(hex, m->btmh, sizeof(m->btmh));
        r = buf_printf(b, "%cxt=" MAGNET_BTMH_PREFIX MAGNET_BTMH_HEAD "%s",
                       m->has_btih ? '&' : '?', hex);
    }
    if (r == 0 && m->dn)
        r = put_param(b, "dn", m->dn);
    if (r == 0)
        r = put_list(b, "tr", m->tr, m->n_tr);
    if (r == 0)
        r = put_list(b, "ws", m->ws, m->n_ws);
    if (r == 0)
        r = put_list(b, "x.pe", m->peers, m->n_peers);
    for (size_t i = 0; i < m->n_so && r == 0; i++) {
        const struct magnet_range *rg = &m->so[i];
        r = buf_puts(b, i == 0 ? "&so=" : ",");
        if (r == 0 && rg->first == rg->last)
            r = buf_printf(b, "%" PRIu32, rg->first);
        else if (r == 0)
            r = buf_printf(b, "%" PRIu32 "-%" PRIu32, rg->first, rg->last);
    }
    return r;
}

int
magnet_format(const struct magnet *m, struct buf *out)
{
    if (!m->has_btih && !m->has_btmh)
        return -EINVAL;
    /* Build aside, so that a failure leaves out as it was. */
    struct buf b;
    buf_init(&b, out->cap - out->len);
    int r = format(m, &b);
    if (r == 0)
        r = buf_append(out, b.data, b.len);
    buf_release(&b);
    return r;
}
