/* path — safe relative paths built from names that come from outside. */
#include "common/path.h"

#include <errno.h>
#include <string.h>

#include "common/buf.h"

static const char *const path_errors[] = {
    [-PATH_OK] = "success",
    [-PATH_E_EMPTY] = "empty path component",
    [-PATH_E_DOT] = "path component '.' or '..'",
    [-PATH_E_NUL] = "NUL byte in a path component",
    [-PATH_E_ABSOLUTE] = "absolute path",
    [-PATH_E_SEPARATOR] = "path separator inside a path component",
    [-PATH_E_UNCLEAN] = "path component that is not sanitised",
    [-PATH_E_TOO_LONG] = "path too long",
    [-PATH_E_NOMEM] = "out of memory",
};

const char *
path_strerror(int err)
{
    if (err > 0 || err <= PATH_E_MIN)
        return "unknown error";
    return path_errors[-err];
}

size_t
path_utf8_decode(const uint8_t *p, size_t n, uint32_t *ret_cp)
{
    size_t len;
    uint32_t cp, min;

    if (n == 0)
        return 0;
    uint8_t c = p[0];
    if (c < 0x80) {
        *ret_cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        cp = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *ret_cp = cp;
    return len;
}

bool
path_utf8_valid(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint32_t cp;

    for (size_t i = 0; i < n;) {
        size_t k = path_utf8_decode(s + i, n - i, &cp);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

int
path_component_check(const void *p, size_t n)
{
    const uint8_t *s = p;

    if (n == 0)
        return PATH_E_EMPTY;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return PATH_E_DOT;
    if (memchr(s, '\0', n))
        return PATH_E_NUL;
    if (s[0] == '/')
        return PATH_E_ABSOLUTE;
    if (memchr(s, '/', n) || memchr(s, '\\', n))
        return PATH_E_SEPARATOR;
    return 0;
}

/* Characters that are replaced by '_' although they are valid UTF-8. */
static bool
is_replaced(uint32_t cp)
{
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
        return true; /* C0, DEL, C1 */
    /* Direction marks, embeddings, overrides and isolates. */
    return cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

/* Write the sanitised form of p[0..n) to out, whole characters only, and
 * stop before the first character that would not fit in out_max bytes.
 * With out == NULL nothing is written and nothing stops: the result is the
 * sanitised length.  Returns the bytes written (or counted). */
static size_t
sanitise(char *out, size_t out_max, const uint8_t *p, size_t n,
         bool *changed)
{
    size_t o = 0;
    uint32_t cp;

    for (size_t i = 0; i < n;) {
        size_t k = path_utf8_decode(p + i, n - i, &cp);
        const uint8_t *src = p + i;
        size_t w = k;
        if (k == 0 || is_replaced(cp)) {
            src = (const uint8_t *)"_";
            w = 1;
            *changed = true;
        }
        i += k ? k : 1;
        if (out) {
            if (w > out_max - o)
                break;
            memcpy(out + o, src, w);
        }
        o += w;
    }
    return o;
}

/* Sanitise one checked component into out[PATH_NAME_MAX]; returns its
 * length (1..PATH_NAME_MAX). */
static size_t
sanitise_component(char out[PATH_NAME_MAX], const uint8_t *p, size_t n,
                   bool *changed)
{
    bool dummy = false;
    size_t full = sanitise(NULL, 0, p, n, &dummy);

    if (full <= PATH_NAME_MAX)
        return sanitise(out, PATH_NAME_MAX, p, n, changed);

    /* Too long: keep a short extension and cut the stem.  A '.' is ASCII,
     * so the last one in the raw bytes is the last one after sanitising. */
    *changed = true;
    char ext[PATH_EXT_MAX];
    size_t ext_len = 0;
    const uint8_t *dot = memrchr(p, '.', n);
    if (dot && dot != p) {
        size_t raw = n - (size_t)(dot - p);
        if (sanitise(NULL, 0, dot, raw, &dummy) <= PATH_EXT_MAX)
            ext_len = sanitise(ext, sizeof(ext), dot, raw, &dummy);
    }
    size_t stem = sanitise(out, PATH_NAME_MAX - ext_len, p, n, &dummy);
    memcpy(out + stem, ext, ext_len);
    return stem + ext_len;
}

bool
path_component_is_clean(const void *p, size_t n)
{
    char tmp[PATH_NAME_MAX];
    bool changed = false;

    if (path_component_check(p, n) < 0)
        return false;
    (void)sanitise_component(tmp, p, n, &changed);
    return !changed;
}

static int
map_buf_error(int r)
{
    return r == -EMSGSIZE ? PATH_E_TOO_LONG : PATH_E_NOMEM;
}

int
path_append_component(struct buf *b, const void *p, size_t n,
                      bool *changed)
{
    char tmp[PATH_NAME_MAX];
    bool ch = false;
    size_t save = b->len;
    int r;

    r = path_component_check(p, n);
    if (r < 0)
        return r;
    size_t len = sanitise_component(tmp, p, n, &ch);
    if (b->len > 0) {
        r = buf_putc(b, '/');
        if (r < 0)
            return map_buf_error(r);
    }
    r = buf_append(b, tmp, len);
    if (r < 0) {
        b->len = save;
        if (b->data)
            b->data[save] = '\0';
        return map_buf_error(r);
    }
    if (ch && changed)
        *changed = true;
    return 0;
}

int
path_check_relative(const char *rel)
{
    const char *s = rel;

    if (*s == '/')
        return PATH_E_ABSOLUTE;
    for (;;) {
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : strlen(s);
        int r = path_component_check(s, n);
        if (r < 0)
            return r;
        if (!path_component_is_clean(s, n))
            return PATH_E_UNCLEAN;
        if (!slash)
            return 0;
        s = slash + 1;
    }
}

int
path_join(struct buf *b, const char *base, const char *rel)
{
    size_t save = b->len;
    int r;

    r = path_check_relative(rel);
    if (r < 0)
        return r;
    size_t bl = strlen(base);
    r = buf_append(b, base, bl);
    if (r == 0 && bl > 0 && base[bl - 1] != '/')
        r = buf_putc(b, '/');
    if (r == 0)
        r = buf_append(b, rel, strlen(rel));
    if (r < 0) {
        b->len = save;
        if (b->data)
            b->data[save] = '\0';
        return map_buf_error(r);
    }
    return 0;
}
