/* lsd — BEP 14 messages: build and parse (see lsd.h for the rules).
 *
 * The parser walks the datagram line by line with explicit lengths: it
 * never assumes a NUL terminator and never copies more than a cookie.
 */
#include "common/lsd.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/hex.h"

#define REQUEST_LINE "BT-SEARCH * HTTP/1.1"

const struct lsd_limits lsd_limits_default = {
    .max_size = LSD_MAX_DATAGRAM,
    .max_hashes = LSD_MAX_HASHES,
    .max_line = LSD_LINE_MAX,
};

const char *
lsd_strerror(int err)
{
    switch (err) {
    case LSD_OK:
        return "success";
    case LSD_E_TOO_LARGE:
        return "datagram too large";
    case LSD_E_TRUNCATED:
        return "no empty line ends the headers";
    case LSD_E_REQUEST_LINE:
        return "not a BT-SEARCH * HTTP/1.1 request";
    case LSD_E_LINE_TOO_LONG:
        return "line too long";
    case LSD_E_CONTROL:
        return "control byte in a line";
    case LSD_E_HEADER:
        return "header line without a colon";
    case LSD_E_DUPLICATE:
        return "header given twice";
    case LSD_E_PORT:
        return "missing or bad Port";
    case LSD_E_HASH:
        return "Infohash is not 40 hex digits";
    case LSD_E_TOO_MANY:
        return "too many info-hashes";
    case LSD_E_NO_HASH:
        return "no Infohash";
    case LSD_E_COOKIE:
        return "bad cookie";
    default:
        return "unknown error";
    }
}

static bool
cookie_ok(const char *c, size_t n)
{
    if (n == 0 || n > LSD_COOKIE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)c[i] <= 0x20 || (unsigned char)c[i] >= 0x7f)
            return false;
    return true;
}

int
lsd_build(struct buf *out, bool ipv6, uint16_t port,
          const uint8_t (*hashes)[LSD_HASH_LEN], size_t n, const char *cookie)
{
    if (!out || port == 0 || !hashes || n == 0 || n > LSD_MAX_HASHES ||
        (cookie && !cookie_ok(cookie, strlen(cookie))))
        return -EINVAL;
    size_t old = out->len;
    int r = buf_printf(out,
                       REQUEST_LINE "\r\n"
                                    "Host: %s:%d\r\n"
                                    "Port: %u\r\n",
                       ipv6 ? "[" LSD_GROUP6 "]" : LSD_GROUP4, LSD_PORT,
                       (unsigned)port);
    for (size_t i = 0; r == 0 && i < n; i++) {
        char hex[2 * LSD_HASH_LEN + 1];
        hex_encode(hex, hashes[i], LSD_HASH_LEN);
        r = buf_printf(out, "Infohash: %s\r\n", hex);
    }
    if (r == 0 && cookie)
        r = buf_printf(out, "cookie: %s\r\n", cookie);
    if (r == 0)
        r = buf_puts(out, "\r\n\r\n");
    if (r < 0) {
        out->len = old;
        if (out->data)
            out->data[old] = '\0';
    }
    return r;
}

/* Trim spaces and tabs from both ends of [*p, *p + *n). */
static void
trim(const char **p, size_t *n)
{
    while (*n > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

static bool
name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

static int
parse_port(const char *v, size_t n, uint16_t *ret)
{
    unsigned long port = 0;
    if (n == 0 || n > 5)
        return LSD_E_PORT;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return LSD_E_PORT;
        port = port * 10 + (unsigned long)(v[i] - '0');
    }
    if (port == 0 || port > 65535)
        return LSD_E_PORT;
    *ret = (uint16_t)port;
    return 0;
}

int
lsd_parse(struct lsd_msg *ret, const void *data, size_t len,
          const struct lsd_limits *lim, size_t *reterr_offset)
{
    const char *s = data;
    struct lsd_limits l = lim ? *lim : lsd_limits_default;
    struct lsd_msg m;
    size_t off = 0, err_off = 0;
    bool have_port = false, have_host = false;
    int r;

    if (l.max_size > LSD_MAX_DATAGRAM)
        l.max_size = LSD_MAX_DATAGRAM;
    if (l.max_hashes > LSD_MAX_HASHES)
        l.max_hashes = LSD_MAX_HASHES;
    if (l.max_line > LSD_LINE_MAX)
        l.max_line = LSD_LINE_MAX;
    memset(&m, 0, sizeof(m));
    if (len > l.max_size) {
        err_off = l.max_size;
        r = LSD_E_TOO_LARGE;
        goto fail;
    }
    if (len > 0 && !s) {
        r = LSD_E_TRUNCATED;
        goto fail;
    }

    for (size_t line_no = 0;; line_no++) {
        /* One line: [off, off + n), then its end (LF or CRLF). */
        const char *nl = len > off ? memchr(s + off, '\n', len - off) : NULL;
        if (!nl) {
            /* No line end: a request line that is wrong already says
             * more than "truncated". */
            size_t k = len - off;
            if (line_no == 0 && (k > strlen(REQUEST_LINE) ||
                                 memcmp(s, REQUEST_LINE, k) != 0)) {
                err_off = 0;
                r = LSD_E_REQUEST_LINE;
            } else if (k > l.max_line) {
                err_off = off;
                r = LSD_E_LINE_TOO_LONG;
            } else {
                err_off = len;
                r = LSD_E_TRUNCATED;
            }
            goto fail;
        }
        size_t n = (size_t)(nl - (s + off));
        size_t next = off + n + 1;
        if (n > 0 && s[off + n - 1] == '\r')
            n--;
        if (n > l.max_line) {
            err_off = off;
            r = line_no == 0 ? LSD_E_REQUEST_LINE : LSD_E_LINE_TOO_LONG;
            if (line_no == 0)
                err_off = 0;
            goto fail;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)s[off + i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
                err_off = off + i;
                r = line_no == 0 ? LSD_E_REQUEST_LINE : LSD_E_CONTROL;
                if (line_no == 0)
                    err_off = 0;
                goto fail;
            }
        }
        const char *line = s + off;
        if (line_no == 0) {
            if (n != strlen(REQUEST_LINE) || memcmp(line, REQUEST_LINE, n)) {
                err_off = 0;
                r = LSD_E_REQUEST_LINE;
                goto fail;
            }
            off = next;
            continue;
        }
        if (n == 0) {
            break; /* the empty line at off: done; the rest is ignored */
        }
        const char *colon = memchr(line, ':', n);
        if (!colon) {
            err_off = off;
            r = LSD_E_HEADER;
            goto fail;
        }
        const char *name = line;
        size_t name_n = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vn = n - name_n - 1;
        trim(&name, &name_n);
        trim(&v, &vn);
        size_t v_off = (size_t)(v - s);
        if (name_is(name, name_n, "Port")) {
            if (have_port) {
                err_off = off;
                r = LSD_E_DUPLICATE;
                goto fail;
            }
            if ((r = parse_port(v, vn, &m.port)) < 0) {
                err_off = v_off;
                goto fail;
            }
            have_port = true;
        } else if (name_is(name, name_n, "Infohash")) {
            uint8_t h[LSD_HASH_LEN];
            if (vn != 2 * LSD_HASH_LEN ||
                hex_decode(h, v, LSD_HASH_LEN) < 0) {
                err_off = v_off;
                r = LSD_E_HASH;
                goto fail;
            }
            bool dup = false;
            for (size_t i = 0; i < m.n_hashes && !dup; i++)
                dup = memcmp(m.hashes[i], h, LSD_HASH_LEN) == 0;
            if (!dup) {
                if (m.n_hashes >= l.max_hashes) {
                    err_off = off;
                    r = LSD_E_TOO_MANY;
                    goto fail;
                }
                memcpy(m.hashes[m.n_hashes++], h, LSD_HASH_LEN);
            }
        } else if (name_is(name, name_n, "cookie")) {
            if (m.has_cookie) {
                err_off = off;
                r = LSD_E_DUPLICATE;
                goto fail;
            }
            if (!cookie_ok(v, vn)) {
                err_off = v_off;
                r = LSD_E_COOKIE;
                goto fail;
            }
            memcpy(m.cookie, v, vn);
            m.cookie[vn] = '\0';
            m.has_cookie = true;
        } else if (name_is(name, name_n, "Host")) {
            if (have_host) {
                err_off = off;
                r = LSD_E_DUPLICATE;
                goto fail;
            }
            have_host = true;
        }
        off = next;
    }
    if (!have_port) {
        err_off = off;
        r = LSD_E_PORT;
        goto fail;
    }
    if (m.n_hashes == 0) {
        err_off = off;
        r = LSD_E_NO_HASH;
        goto fail;
    }
    *ret = m;
    return 0;
fail:
    if (reterr_offset)
        *reterr_offset = err_off;
    return r;
}
