/* metainfo — .torrent files (BEP 3, 12, 19, 27, 47; BEP 52 recognised).
 *
 * The input is decoded once by the tolerant bencode decoder (unsorted keys
 * are accepted: the info-hash is taken over the raw bytes, whatever their
 * order), then read with the benc_ accessors.  Nothing here recurses on
 * input except the BEP 52 file tree walk, whose depth the decoder already
 * bounds (META_MAX_DEPTH).
 */
#include "common/metainfo.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/path.h"

const struct meta_limits meta_limits_default = {
    .max_input = 32u << 20,
    .min_piece_length = 16u << 10,
    .max_piece_length = 256u << 20,
    .max_files = 1u << 20,
    .max_path_len = 4096,
    .max_total_size = (uint64_t)1 << 50,
    .max_urls = 1000,
};

/* Nesting: a v1 torrent needs 5 levels, a BEP 52 file tree 3 more than its
 * directory depth. */
#define META_MAX_DEPTH 64
/* Decoded values: each costs 24 bytes of node array, so this caps the
 * decoder at 192 MiB for the most hostile 32 MiB input; a torrent needs
 * about 6 per file. */
#define META_MAX_NODES (1u << 23)
/* Bytes of a name quoted in an error message. */
#define META_QUOTE_MAX 40

static const char *const meta_errors[] = {
    [-META_OK] = "success",
    [-META_E_BENCODE] = "not a valid bencoded file",
    [-META_E_NOT_DICT] = "not a torrent",
    [-META_E_NO_INFO] = "no info dictionary",
    [-META_E_NAME] = "bad name",
    [-META_E_PIECE_LENGTH] = "bad piece length",
    [-META_E_PIECES] = "bad piece hashes",
    [-META_E_PIECES_COUNT] = "piece count does not match the total size",
    [-META_E_LENGTH] = "bad file length",
    [-META_E_FILES] = "bad file list",
    [-META_E_BOTH_LENGTH_FILES] = "both single-file and multi-file",
    [-META_E_TOTAL_SIZE] = "bad total size",
    [-META_E_PATH] = "bad file path",
    [-META_E_PATH_UNSAFE] = "unsafe file path",
    [-META_E_PATH_DUPLICATE] = "duplicate file path",
    [-META_E_PATH_TOO_LONG] = "file path too long",
    [-META_E_TOO_MANY_FILES] = "too many files",
    [-META_E_DUPLICATE_KEY] = "duplicate key",
    [-META_E_V2_ONLY] = "v2-only torrent (BEP 52): not supported yet",
    [-META_E_ANNOUNCE] = "bad tracker list",
    [-META_E_URL_LIST] = "bad web seed list",
    [-META_E_TOO_LARGE] = "torrent file too large",
    [-META_E_NOMEM] = "out of memory",
    [-META_E_VERSION] = "unsupported meta version",
};

const char *
meta_strerror(int err)
{
    if (err > 0 || err <= META_E_MIN)
        return "unknown error";
    return meta_errors[-err];
}

uint32_t
meta_piece_count(uint64_t total_size, uint32_t piece_length)
{
    if (piece_length == 0)
        return 0;
    uint64_t n = total_size / piece_length + (total_size % piece_length != 0);
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

uint32_t
meta_piece_size(const struct meta_info *info, uint32_t piece)
{
    if (piece >= info->n_pieces)
        return 0;
    if (piece + 1 < info->n_pieces)
        return info->piece_length;
    uint64_t rest = info->total_size - (uint64_t)piece * info->piece_length;
    return rest < info->piece_length ? (uint32_t)rest : info->piece_length;
}

void
meta_free(struct meta_info *info)
{
    if (!info)
        return;
    for (size_t i = 0; i < info->n_files; i++) {
        free(info->files[i].path);
        free(info->files[i].symlink);
    }
    free(info->files);
    for (size_t i = 0; i < info->n_tiers; i++) {
        for (size_t k = 0; k < info->tiers[i].n_urls; k++)
            free(info->tiers[i].urls[k]);
        free(info->tiers[i].urls);
    }
    free(info->tiers);
    for (size_t i = 0; i < info->n_web_seeds; i++)
        free(info->web_seeds[i]);
    free(info->web_seeds);
    free(info->name);
    free(info->comment);
    free(info->created_by);
    free(info->info_raw);
    free(info);
}

/* --- parsing --- */

struct ctx {
    const struct meta_limits *lim;
    const struct benc_doc *doc;
    struct meta_info *info;
    struct meta_errinfo *err;
    uint32_t info_node;
    struct buf path; /* scratch: the path being joined */
};

static int fail(struct ctx *c, int code, uint32_t node, long file,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int
fail(struct ctx *c, int code, uint32_t node, long file, const char *fmt,
     ...)
{
    const struct benc_node *nd = benc_node(c->doc, node);
    va_list ap;

    c->err->offset = nd ? nd->start : 0;
    c->err->file_index = file;
    va_start(ap, fmt);
    (void)vsnprintf(c->err->detail, sizeof(c->err->detail), fmt, ap);
    va_end(ap);
    return code;
}

static int
fail_nomem(struct ctx *c)
{
    return fail(c, META_E_NOMEM, BENC_NONE, -1, "out of memory");
}

/* Printable ASCII as is, the rest as \xNN; at most max characters of
 * input, then "...".  Error messages go to terminals. */
static void
quote(char *out, size_t size, const uint8_t *p, size_t n, size_t max)
{
    size_t o = 0;

    for (size_t i = 0; i < n && i < max; i++) {
        char tmp[5];
        int k;
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            k = snprintf(tmp, sizeof(tmp), "%c", p[i]);
        else
            k = snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
        if ((size_t)k >= size - o)
            break;
        memcpy(out + o, tmp, (size_t)k);
        o += (size_t)k;
    }
    if (n > max && size - o > 3) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static const char *
type_name(const struct benc_doc *doc, uint32_t node)
{
    const struct benc_node *nd = benc_node(doc, node);
    static const char *const names[] = {
        [BENC_INT] = "an integer",
        [BENC_STR] = "a string",
        [BENC_LIST] = "a list",
        [BENC_DICT] = "a dictionary",
    };
    return nd && nd->type < BENC_TYPE_MAX ? names[nd->type] : "nothing";
}

/* The error for a path component that path_append_component() refused.
 * what: "name", "file 3: path component" ...; k: the component's index. */
static int
fail_component(struct ctx *c, int code, uint32_t node, long file, int perr,
               const char *what, size_t k)
{
    size_t n = 0;
    const uint8_t *s = benc_str(c->doc, node, &n);
    char q[4 * META_QUOTE_MAX + 4];

    quote(q, sizeof(q), s ? s : (const uint8_t *)"", n, META_QUOTE_MAX);
    switch (perr) {
    case PATH_E_EMPTY:
        if (code == META_E_NAME)
            return fail(c, code, node, file, "%s is empty", what);
        return fail(c, code, node, file, "%s %zu is empty", what, k);
    case PATH_E_DOT:
        return fail(c, code, node, file, "%s '%s' is not allowed", what, q);
    case PATH_E_NUL:
        return fail(c, code, node, file, "%s '%s' contains a NUL byte", what,
                    q);
    case PATH_E_ABSOLUTE:
        return fail(c, code, node, file, "%s '%s' makes an absolute path",
                    what, q);
    case PATH_E_SEPARATOR:
        return fail(c, code, node, file,
                    "%s '%s' contains a path separator ('/' or '\\')", what,
                    q);
    case PATH_E_TOO_LONG:
        if (file >= 0)
            return fail(c, META_E_PATH_TOO_LONG, node, file,
                        "file %ld: path is longer than %" PRIu32 " bytes",
                        file, c->lim->max_path_len);
        return fail(c, META_E_PATH_TOO_LONG, node, file,
                    "%s: path is longer than %" PRIu32 " bytes", what,
                    c->lim->max_path_len);
    case PATH_E_NOMEM:
        return fail_nomem(c);
    default:
        return fail(c, code, node, file, "%s: %s", what,
                    path_strerror(perr));
    }
}

/* Text for people (comment, created by): invalid UTF-8 and control
 * characters other than tab and newline become U+FFFD.  NULL on ENOMEM. */
static char *
dup_text(const uint8_t *p, size_t n)
{
    struct buf b;
    uint32_t cp;
    int r = 0;

    buf_init(&b, SIZE_MAX);
    r = buf_reserve(&b, n);
    for (size_t i = 0; i < n && r == 0;) {
        size_t k = path_utf8_decode(p + i, n - i, &cp);
        bool bad = k == 0 || (cp < 0x20 && cp != '\t' && cp != '\n') ||
                   (cp >= 0x7f && cp <= 0x9f);
        if (bad)
            r = buf_append(&b, "\xef\xbf\xbd", 3);
        else
            r = buf_append(&b, p + i, k);
        i += k ? k : 1;
    }
    if (r < 0) {
        buf_release(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

/* A tracker or web seed URL: surrounding blanks trimmed; NULL in *ret_url
 * if it is unusable (empty, control characters, not UTF-8), which mature
 * clients skip rather than refuse the torrent for. */
static int
dup_url(const uint8_t *p, size_t n, char **ret_url)
{
    while (n > 0 && (p[0] == ' ' || p[0] == '\t' || p[0] == '\r' ||
                     p[0] == '\n')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' ||
                     p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    *ret_url = NULL;
    if (n == 0 || !path_utf8_valid(p, n))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    *ret_url = buf_memdup0(p, n);
    return *ret_url ? 0 : -ENOMEM;
}

/* key.utf-8 when it is a non-empty string of valid UTF-8 (libtorrent
 * prefers it: it is more likely to be encoded right), else key. */
static uint32_t
get_utf8_str(const struct benc_doc *doc, uint32_t dict, const char *key,
             const char *key_utf8)
{
    uint32_t v = benc_dict_get_type(doc, dict, key_utf8, BENC_STR);
    size_t n;
    const uint8_t *s = benc_str(doc, v, &n);
    if (s && n > 0 && path_utf8_valid(s, n))
        return v;
    return benc_dict_get(doc, dict, key);
}

/* The same for a path list: path.utf-8 when it is a non-empty list of
 * valid UTF-8 strings. */
static uint32_t
get_utf8_path(const struct benc_doc *doc, uint32_t dict)
{
    uint32_t l = benc_dict_get_type(doc, dict, "path.utf-8", BENC_LIST);
    bool ok = l != BENC_NONE && benc_first(doc, l) != BENC_NONE;
    for (uint32_t e = benc_first(doc, l); ok && e != BENC_NONE;
         e = benc_next(doc, l, e)) {
        size_t n;
        const uint8_t *s = benc_str(doc, e, &n);
        ok = s && path_utf8_valid(s, n);
    }
    return ok ? l : benc_dict_get(doc, dict, "path");
}

static unsigned
parse_attr(const struct benc_doc *doc, uint32_t dict)
{
    size_t n;
    const uint8_t *s =
        benc_str(doc, benc_dict_get(doc, dict, "attr"), &n);
    unsigned attr = 0;

    for (size_t i = 0; s && i < n; i++) {
        switch (s[i]) {
        case 'p':
            attr |= META_ATTR_PAD;
            break;
        case 'x':
            attr |= META_ATTR_EXEC;
            break;
        case 'h':
            attr |= META_ATTR_HIDDEN;
            break;
        case 'l':
            attr |= META_ATTR_SYMLINK;
            break;
        default: /* BEP 47: unknown characters are ignored */
            break;
        }
    }
    return attr;
}

/* --- duplicate keys --- */

static int
key_cmp(const struct benc_doc *doc, uint32_t a, uint32_t b)
{
    size_t na, nb;
    const uint8_t *pa = benc_str(doc, a, &na);
    const uint8_t *pb = benc_str(doc, b, &nb);
    int r = memcmp(pa, pb, na < nb ? na : nb);
    if (r)
        return r;
    return na < nb ? -1 : na > nb;
}

struct key_sort {
    const struct benc_doc *doc;
};

static int
key_cmp_r(const void *a, const void *b, void *arg)
{
    const struct key_sort *ks = arg;
    return key_cmp(ks->doc, *(const uint32_t *)a, *(const uint32_t *)b);
}

/* A key that appears twice in dictionary d, or BENC_NONE. */
static int
find_duplicate_key(const struct benc_doc *doc, uint32_t d,
                   uint32_t *ret_key)
{
    const struct benc_node *nd = benc_node(doc, d);
    uint32_t *keys = calloc(nd->u.count, sizeof(*keys));
    uint32_t n = 0;
    bool sorted = true;

    if (!keys)
        return -ENOMEM;
    for (uint32_t k = benc_first(doc, d); k != BENC_NONE && n < nd->u.count;
         k = benc_next(doc, d, benc_next(doc, d, k))) {
        keys[n] = k;
        if (n > 0 && key_cmp(doc, keys[n - 1], k) >= 0)
            sorted = false;
        n++;
    }
    *ret_key = BENC_NONE;
    if (!sorted) {
        struct key_sort ks = {doc};
        qsort_r(keys, n, sizeof(*keys), key_cmp_r, &ks);
        for (uint32_t i = 1; i < n; i++) {
            if (key_cmp(doc, keys[i - 1], keys[i]) == 0) {
                /* Report the later occurrence. */
                *ret_key = keys[i - 1] > keys[i] ? keys[i - 1] : keys[i];
                break;
            }
        }
    }
    free(keys);
    return 0;
}

/* Refuse a key that appears twice in any dictionary of the info subtree:
 * two readers of such a torrent may see two different torrents behind one
 * info-hash. */
static int
check_duplicate_keys(struct ctx *c, uint32_t root)
{
    const struct benc_doc *doc = c->doc;
    uint32_t end = doc->nodes[root].next;

    if (!(doc->quirks & BENC_Q_DUPLICATE_KEYS))
        return 0;
    for (uint32_t i = root; i < end; i++) {
        const struct benc_node *nd = &doc->nodes[i];
        if (nd->type != BENC_DICT || nd->u.count < 2)
            continue;
        uint32_t key;
        if (find_duplicate_key(doc, i, &key) < 0)
            return fail_nomem(c);
        if (key != BENC_NONE) {
            size_t n;
            const uint8_t *s = benc_str(doc, key, &n);
            char q[4 * META_QUOTE_MAX + 4];
            quote(q, sizeof(q), s, n, META_QUOTE_MAX);
            return fail(c, META_E_DUPLICATE_KEY, key, -1,
                        "key '%s' appears twice in %s", q,
                        i == root ? "the info dictionary"
                                  : "a dictionary inside 'info'");
        }
    }
    return 0;
}

/* --- the info dictionary --- */

static int
parse_version(struct ctx *c, uint32_t node)
{
    const struct benc_doc *doc = c->doc;
    uint32_t mv = benc_dict_get(doc, node, "meta version");

    c->info->version = META_V1;
    if (mv == BENC_NONE)
        return 0;
    if (!benc_is(doc, mv, BENC_INT))
        return fail(c, META_E_VERSION, mv, -1,
                    "'meta version' is %s, not an integer",
                    type_name(doc, mv));
    int64_t v = benc_node(doc, mv)->u.i;
    if (v == 1)
        return 0;
    if (v != 2)
        return fail(c, META_E_VERSION, mv, -1,
                    "meta version %" PRId64 " is not supported", v);
    if (benc_dict_get(doc, node, "pieces") == BENC_NONE)
        return fail(c, META_E_V2_ONLY, mv, -1,
                    "v2-only torrents are not supported yet "
                    "(hybrid v1+v2 torrents are)");
    if (!benc_is(doc, benc_dict_get(doc, node, "file tree"), BENC_DICT))
        return fail(c, META_E_FILES, mv, -1,
                    "hybrid torrent (meta version 2) without a "
                    "'file tree' dictionary");
    c->info->version = META_HYBRID;
    return 0;
}

static int
parse_name(struct ctx *c, uint32_t node)
{
    const struct benc_doc *doc = c->doc;
    struct meta_info *info = c->info;
    uint32_t nn = get_utf8_str(doc, node, "name", "name.utf-8");
    size_t n;
    const uint8_t *s = benc_str(doc, nn, &n);

    if (nn == BENC_NONE)
        return fail(c, META_E_NAME, node, -1, "no 'name' in 'info'");
    if (!s)
        return fail(c, META_E_NAME, nn, -1, "'name' is %s, not a string",
                    type_name(doc, nn));
    buf_reset(&c->path);
    int r = path_append_component(&c->path, s, n, &info->sanitised);
    if (r < 0)
        return fail_component(c, META_E_NAME, nn, -1, r, "name", 0);
    info->name = buf_memdup0(c->path.data, c->path.len);
    return info->name ? 0 : fail_nomem(c);
}

static int
parse_piece_length(struct ctx *c, uint32_t node)
{
    const struct benc_doc *doc = c->doc;
    uint32_t pl = benc_dict_get(doc, node, "piece length");

    if (pl == BENC_NONE)
        return fail(c, META_E_PIECE_LENGTH, node, -1,
                    "no 'piece length' in 'info'");
    if (!benc_is(doc, pl, BENC_INT))
        return fail(c, META_E_PIECE_LENGTH, pl, -1,
                    "'piece length' is %s, not an integer",
                    type_name(doc, pl));
    int64_t v = benc_node(doc, pl)->u.i;
    if (v <= 0 || (v & (v - 1)) != 0)
        return fail(c, META_E_PIECE_LENGTH, pl, -1,
                    "piece length %" PRId64 " is not a power of two", v);
    if (v < c->lim->min_piece_length || v > c->lim->max_piece_length)
        return fail(c, META_E_PIECE_LENGTH, pl, -1,
                    "piece length %" PRId64 " is outside %" PRIu32
                    "..%" PRIu32,
                    v, c->lim->min_piece_length, c->lim->max_piece_length);
    c->info->piece_length = (uint32_t)v;
    return 0;
}

static int
parse_pieces(struct ctx *c, uint32_t node)
{
    const struct benc_doc *doc = c->doc;
    uint32_t p = benc_dict_get(doc, node, "pieces");
    size_t n;

    if (p == BENC_NONE)
        return fail(c, META_E_PIECES, node, -1, "no 'pieces' in 'info'");
    if (!benc_str(doc, p, &n))
        return fail(c, META_E_PIECES, p, -1, "'pieces' is %s, not a string",
                    type_name(doc, p));
    if (n % META_HASH_LEN != 0)
        return fail(c, META_E_PIECES, p, -1,
                    "'pieces' is %zu bytes, not a multiple of 20", n);
    const struct benc_node *pn = benc_node(doc, p);
    const struct benc_node *in = benc_node(doc, node);
    c->info->pieces = c->info->info_raw + (pn->u.s.off - in->start);
    c->info->n_pieces = (uint32_t)(n / META_HASH_LEN);
    return 0;
}

/* A file's length: an integer >= 0 that keeps the total within limits. */
static int
parse_length(struct ctx *c, uint32_t dict, long file, uint64_t *ret_len)
{
    const struct benc_doc *doc = c->doc;
    uint32_t ln = benc_dict_get(doc, dict, "length");
    char where[32] = "";

    if (file >= 0)
        (void)snprintf(where, sizeof(where), "file %ld: ", file);
    if (ln == BENC_NONE)
        return fail(c, META_E_LENGTH, dict, file, "%sno 'length'", where);
    if (!benc_is(doc, ln, BENC_INT))
        return fail(c, META_E_LENGTH, ln, file,
                    "%s'length' is %s, not an integer", where,
                    type_name(doc, ln));
    int64_t v = benc_node(doc, ln)->u.i;
    if (v < 0)
        return fail(c, META_E_LENGTH, ln, file,
                    "%slength %" PRId64 " is negative", where, v);
    uint64_t max = c->lim->max_total_size;
    if ((uint64_t)v > max || c->info->total_size > max - (uint64_t)v)
        return fail(c, META_E_TOTAL_SIZE, ln, file,
                    "%sthe file sizes add up to more than %" PRIu64
                    " bytes",
                    where, max);
    *ret_len = (uint64_t)v;
    return 0;
}

/* Join the components of list l under c->path (which holds the prefix). */
static int
append_components(struct ctx *c, uint32_t l, long file, const char *what,
                  bool *changed)
{
    const struct benc_doc *doc = c->doc;
    size_t k = 0;
    char w[64];

    for (uint32_t e = benc_first(doc, l); e != BENC_NONE;
         e = benc_next(doc, l, e), k++) {
        size_t n;
        const uint8_t *s = benc_str(doc, e, &n);
        if (!s)
            return fail(c, META_E_PATH, e, file,
                        "file %ld: %s element %zu is %s, not a string", file,
                        what, k, type_name(doc, e));
        int r = path_append_component(&c->path, s, n, changed);
        if (r < 0) {
            (void)snprintf(w, sizeof(w), "file %ld: %s component", file,
                           what);
            return fail_component(c, META_E_PATH_UNSAFE, e, file, r, w, k);
        }
    }
    return 0;
}

/* BitComet names its pad files "_____padding_file_N_...". */
static bool
is_bitcomet_pad(const char *path)
{
    const char *last = strrchr(path, '/');
    last = last ? last + 1 : path;
    return strncmp(last, "_____padding_file_", 18) == 0;
}

static int
parse_file(struct ctx *c, uint32_t fd, long i)
{
    const struct benc_doc *doc = c->doc;
    struct meta_info *info = c->info;
    struct meta_file *f = &info->files[i];
    int r;

    if (!benc_is(doc, fd, BENC_DICT))
        return fail(c, META_E_FILES, fd, i, "file %ld is %s, not a dictionary",
                    i, type_name(doc, fd));
    f->attr = parse_attr(doc, fd);
    if (f->attr & META_ATTR_SYMLINK) {
        /* A symlink holds no data (as libtorrent reads BEP 47). */
        f->length = 0;
    } else {
        r = parse_length(c, fd, i, &f->length);
        if (r < 0)
            return r;
    }

    buf_reset(&c->path);
    if (buf_append(&c->path, info->name, strlen(info->name)) < 0)
        return fail(c, META_E_PATH_TOO_LONG, fd, i,
                    "file %ld: path is longer than %" PRIu32 " bytes", i,
                    c->lim->max_path_len);
    uint32_t pl = get_utf8_path(doc, fd);
    bool empty = pl == BENC_NONE ||
                 (benc_is(doc, pl, BENC_LIST) &&
                  benc_first(doc, pl) == BENC_NONE);
    if (empty && (f->attr & META_ATTR_PAD)) {
        /* A pad file needs no name: call it what libtorrent does. */
        r = buf_printf(&c->path, "/.pad/%" PRIu64, f->length);
        if (r < 0)
            return fail_component(c, META_E_PATH_UNSAFE, fd, i,
                                  r == -EMSGSIZE ? PATH_E_TOO_LONG
                                                 : PATH_E_NOMEM,
                                  "", 0);
    } else if (pl == BENC_NONE) {
        return fail(c, META_E_PATH, fd, i, "file %ld: no 'path'", i);
    } else if (!benc_is(doc, pl, BENC_LIST)) {
        return fail(c, META_E_PATH, pl, i,
                    "file %ld: 'path' is %s, not a list", i,
                    type_name(doc, pl));
    } else if (empty) {
        return fail(c, META_E_PATH, pl, i, "file %ld: 'path' is empty", i);
    } else {
        r = append_components(c, pl, i, "path", &info->sanitised);
        if (r < 0)
            return r;
    }
    f->path = buf_memdup0(c->path.data, c->path.len);
    if (!f->path)
        return fail_nomem(c);
    if (is_bitcomet_pad(f->path))
        f->attr |= META_ATTR_PAD;

    if (f->attr & META_ATTR_SYMLINK) {
        uint32_t sl = benc_dict_get(doc, fd, "symlink path");
        if (sl == BENC_NONE) {
            /* Not a symlink after all (libtorrent does the same). */
            f->attr &= ~(unsigned)META_ATTR_SYMLINK;
            r = parse_length(c, fd, i, &f->length);
            if (r < 0)
                return r;
        } else if (!benc_is(doc, sl, BENC_LIST) ||
                   benc_first(doc, sl) == BENC_NONE) {
            return fail(c, META_E_PATH, sl, i,
                        "file %ld: 'symlink path' is not a non-empty list",
                        i);
        } else {
            /* BEP 47: relative to the torrent's root directory, which is
             * the name directory of a multi-file torrent. */
            buf_reset(&c->path);
            if (info->multi_file &&
                buf_append(&c->path, info->name, strlen(info->name)) < 0)
                return fail(c, META_E_PATH_TOO_LONG, sl, i,
                            "file %ld: symlink path is too long", i);
            r = append_components(c, sl, i, "symlink path",
                                  &info->sanitised);
            if (r < 0)
                return r;
            f->symlink = buf_memdup0(c->path.data, c->path.len);
            if (!f->symlink)
                return fail_nomem(c);
        }
    }
    f->offset = info->total_size;
    info->total_size += f->length;
    return 0;
}

static int
parse_files(struct ctx *c, uint32_t node)
{
    const struct benc_doc *doc = c->doc;
    struct meta_info *info = c->info;
    uint32_t fl = benc_dict_get(doc, node, "files");
    uint32_t ln = benc_dict_get(doc, node, "length");
    int r;

    if (fl != BENC_NONE && ln != BENC_NONE)
        return fail(c, META_E_BOTH_LENGTH_FILES, fl, -1,
                    "'info' has both 'length' (single file) and 'files' "
                    "(multi-file)");
    if (fl == BENC_NONE && ln == BENC_NONE)
        return fail(c, META_E_FILES, node, -1,
                    "'info' has neither 'length' nor 'files'");

    if (ln != BENC_NONE) {
        info->files = calloc(1, sizeof(*info->files));
        if (!info->files)
            return fail_nomem(c);
        info->n_files = 1;
        struct meta_file *f = &info->files[0];
        r = parse_length(c, node, -1, &f->length);
        if (r < 0)
            return r;
        /* Pad and symlink make no sense for the only file. */
        f->attr = parse_attr(doc, node) & (META_ATTR_EXEC | META_ATTR_HIDDEN);
        f->path = buf_memdup0(info->name, strlen(info->name));
        if (!f->path)
            return fail_nomem(c);
        info->total_size = f->length;
        return 0;
    }

    if (!benc_is(doc, fl, BENC_LIST))
        return fail(c, META_E_FILES, fl, -1, "'files' is %s, not a list",
                    type_name(doc, fl));
    uint32_t count = benc_node(doc, fl)->u.count;
    if (count == 0)
        return fail(c, META_E_FILES, fl, -1, "'files' is empty");
    if (count > c->lim->max_files)
        return fail(c, META_E_TOO_MANY_FILES, fl, -1,
                    "%" PRIu32 " files, the limit is %" PRIu32, count,
                    c->lim->max_files);
    info->multi_file = true;
    info->files = calloc(count, sizeof(*info->files));
    if (!info->files)
        return fail_nomem(c);
    info->n_files = count;
    long i = 0;
    for (uint32_t e = benc_first(doc, fl); e != BENC_NONE;
         e = benc_next(doc, fl, e), i++) {
        r = parse_file(c, e, i);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Sort order for paths in which '/' comes before every other byte, so that
 * the paths inside directory "a" ("a/...") come right after a file "a". */
static int
path_cmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned x = (unsigned char)*a, y = (unsigned char)*b;
        if (x != y || x == 0) {
            x = x == 0 ? 0 : x == '/' ? 1 : x + 2;
            y = y == 0 ? 0 : y == '/' ? 1 : y + 2;
            return (x > y) - (x < y);
        }
    }
}

static int
file_cmp_r(const void *a, const void *b, void *files)
{
    const struct meta_file *f = files;
    return path_cmp(f[*(const size_t *)a].path, f[*(const size_t *)b].path);
}

/* Two files with one path, or a file whose path is a directory of another
 * file: either would make one file overwrite (or write through) another.
 * Pad files are never written and are left out. */
static int
check_duplicate_paths(struct ctx *c)
{
    struct meta_info *info = c->info;
    size_t *idx, n = 0;
    int r = 0;

    if (info->n_files < 2)
        return 0;
    idx = calloc(info->n_files, sizeof(*idx));
    if (!idx)
        return fail_nomem(c);
    for (size_t i = 0; i < info->n_files; i++)
        if (!(info->files[i].attr & META_ATTR_PAD))
            idx[n++] = i;
    qsort_r(idx, n, sizeof(*idx), file_cmp_r, info->files);
    for (size_t k = 1; k < n && r == 0; k++) {
        const char *a = info->files[idx[k - 1]].path;
        const char *b = info->files[idx[k]].path;
        size_t la = strlen(a);
        size_t hi = idx[k - 1] > idx[k] ? idx[k - 1] : idx[k];
        size_t lo = idx[k - 1] > idx[k] ? idx[k] : idx[k - 1];
        char q[4 * META_QUOTE_MAX + 4];
        quote(q, sizeof(q), (const uint8_t *)a, la, META_QUOTE_MAX);
        if (strcmp(a, b) == 0)
            r = fail(c, META_E_PATH_DUPLICATE, BENC_NONE, (long)hi,
                     "file %zu: path '%s' is used twice (also by file %zu)",
                     hi, q, lo);
        else if (strncmp(a, b, la) == 0 && b[la] == '/')
            r = fail(c, META_E_PATH_DUPLICATE, BENC_NONE, (long)idx[k - 1],
                     "file %zu: path '%s' is also a directory of file %zu",
                     idx[k - 1], q, idx[k]);
    }
    free(idx);
    return r;
}

/* --- BEP 52 hybrid torrents: the v2 file tree must describe the same
 * files as the v1 list (less its pad files), in the same order. --- */

struct tree_walk {
    struct ctx *c;
    struct buf path;
    size_t next; /* the next v1 file to match */
};

static int
tree_match(struct tree_walk *w, uint32_t leaf, uint64_t length)
{
    struct ctx *c = w->c;
    struct meta_info *info = c->info;

    while (w->next < info->n_files &&
           (info->files[w->next].attr & META_ATTR_PAD))
        w->next++;
    if (w->next >= info->n_files)
        return fail(c, META_E_FILES, leaf, -1,
                    "hybrid torrent: the v2 file tree has more files than "
                    "the v1 file list");
    const struct meta_file *f = &info->files[w->next];
    if (f->length != length || strcmp(f->path, w->path.data) != 0)
        return fail(c, META_E_FILES, leaf, (long)w->next,
                    "hybrid torrent: file %zu differs between the v1 file "
                    "list and the v2 file tree",
                    w->next);
    w->next++;
    return 0;
}

/* Depth is bounded by the decoder's META_MAX_DEPTH. */
static int
tree_walk_dir(struct tree_walk *w, uint32_t dir)
{
    struct ctx *c = w->c;
    const struct benc_doc *doc = c->doc;
    bool dummy = false;
    int r;

    for (uint32_t k = benc_first(doc, dir); k != BENC_NONE;) {
        uint32_t v = benc_next(doc, dir, k);
        size_t n;
        const uint8_t *s = benc_str(doc, k, &n);
        if (!benc_is(doc, v, BENC_DICT))
            return fail(c, META_E_FILES, v, -1,
                        "file tree: an entry is %s, not a dictionary",
                        type_name(doc, v));
        size_t save = w->path.len;
        r = path_append_component(&w->path, s, n, &dummy);
        if (r < 0)
            return fail_component(c, META_E_PATH_UNSAFE, k, -1, r,
                                  "file tree: path component", 0);
        uint32_t meta = benc_dict_get(doc, v, "");
        if (meta != BENC_NONE) {
            if (benc_node(doc, v)->u.count != 1 ||
                !benc_is(doc, meta, BENC_DICT))
                return fail(c, META_E_FILES, v, -1,
                            "file tree: malformed file entry");
            uint64_t length = 0;
            uint32_t ln = benc_dict_get(doc, meta, "length");
            if (ln != BENC_NONE || !(parse_attr(doc, meta) &
                                     META_ATTR_SYMLINK)) {
                if (!benc_is(doc, ln, BENC_INT) ||
                    benc_node(doc, ln)->u.i < 0)
                    return fail(c, META_E_FILES, meta, -1,
                                "file tree: a file without a valid "
                                "'length'");
                length = (uint64_t)benc_node(doc, ln)->u.i;
            }
            r = tree_match(w, meta, length);
        } else {
            r = tree_walk_dir(w, v);
        }
        if (r < 0)
            return r;
        w->path.len = save;
        w->path.data[save] = '\0';
        k = benc_next(doc, dir, v);
    }
    return 0;
}

static int
check_hybrid(struct ctx *c, uint32_t node)
{
    struct meta_info *info = c->info;
    struct tree_walk w = {.c = c};
    int r = 0;

    /* v1 paths start with the name for a multi-file torrent; for a single
     * file the tree's only key is the name. */
    buf_init(&w.path, SIZE_MAX);
    if (info->multi_file && buf_puts(&w.path, info->name) < 0)
        r = fail_nomem(c);
    if (r == 0)
        r = tree_walk_dir(&w, benc_dict_get(c->doc, node, "file tree"));
    while (r == 0 && w.next < info->n_files &&
           (info->files[w.next].attr & META_ATTR_PAD))
        w.next++;
    if (r == 0 && w.next != info->n_files)
        r = fail(c, META_E_FILES, node, -1,
                 "hybrid torrent: the v1 file list has more files than "
                 "the v2 file tree");
    buf_release(&w.path);
    return r;
}

static int
parse_info_dict(struct ctx *c, uint32_t node)
{
    const struct benc_doc *doc = c->doc;
    struct meta_info *info = c->info;
    size_t n;
    const uint8_t *raw = benc_raw(doc, node, &n);
    int r;

    info->info_raw = malloc(n);
    if (!info->info_raw)
        return fail_nomem(c);
    memcpy(info->info_raw, raw, n);
    info->info_len = n;

    r = check_duplicate_keys(c, node);
    if (r == 0)
        r = parse_version(c, node);
    if (r == 0)
        r = parse_name(c, node);
    if (r == 0)
        r = parse_piece_length(c, node);
    if (r == 0)
        r = parse_pieces(c, node);
    if (r == 0)
        r = parse_files(c, node);
    if (r < 0)
        return r;

    if (info->total_size == 0)
        return fail(c, META_E_TOTAL_SIZE, node, -1,
                    "the files hold no data (total size 0)");
    uint64_t want = info->total_size / info->piece_length +
                    (info->total_size % info->piece_length != 0);
    if (want != info->n_pieces)
        return fail(c, META_E_PIECES_COUNT,
                    benc_dict_get(doc, node, "pieces"), -1,
                    "%" PRIu32 " piece hashes for %" PRIu64
                    " bytes in pieces of %" PRIu32 ": %" PRIu64 " expected",
                    info->n_pieces, info->total_size, info->piece_length,
                    want);
    r = check_duplicate_paths(c);
    if (r == 0 && info->version == META_HYBRID)
        r = check_hybrid(c, node);
    if (r < 0)
        return r;

    uint32_t pv = benc_dict_get_type(doc, node, "private", BENC_INT);
    info->private_torrent = pv != BENC_NONE && benc_node(doc, pv)->u.i == 1;

    if (EVP_Digest(info->info_raw, n, info->info_hash, NULL, EVP_sha1(),
                   NULL) != 1)
        return fail(c, META_E_NOMEM, node, -1, "SHA-1 failed");
    if (info->version == META_HYBRID &&
        EVP_Digest(info->info_raw, n, info->info_hash_v2, NULL,
                   EVP_sha256(), NULL) != 1)
        return fail(c, META_E_NOMEM, node, -1, "SHA-256 failed");
    return 0;
}

/* --- outside the info dictionary --- */

/* The "info" value of the top-level dictionary; refused twice. */
static int
find_info(struct ctx *c, uint32_t *ret_node)
{
    const struct benc_doc *doc = c->doc;
    uint32_t found = BENC_NONE;

    for (uint32_t k = benc_first(doc, 0); k != BENC_NONE;) {
        uint32_t v = benc_next(doc, 0, k);
        if (benc_str_eq(doc, k, "info")) {
            if (found != BENC_NONE)
                return fail(c, META_E_DUPLICATE_KEY, k, -1,
                            "key 'info' appears twice in the top-level "
                            "dictionary");
            found = v;
        }
        k = benc_next(doc, 0, v);
    }
    if (found == BENC_NONE)
        return fail(c, META_E_NO_INFO, 0, -1,
                    "no 'info' key in the top-level dictionary");
    if (!benc_is(doc, found, BENC_DICT))
        return fail(c, META_E_NO_INFO, found, -1,
                    "'info' is %s, not a dictionary", type_name(doc, found));
    *ret_node = found;
    return 0;
}

static int
parse_trackers(struct ctx *c)
{
    const struct benc_doc *doc = c->doc;
    struct meta_info *info = c->info;
    uint32_t al = benc_dict_get(doc, 0, "announce-list");
    uint32_t an = benc_dict_get(doc, 0, "announce");
    uint32_t total = 0;
    char *url;

    if (an != BENC_NONE && !benc_is(doc, an, BENC_STR))
        return fail(c, META_E_ANNOUNCE, an, -1,
                    "'announce' is %s, not a string", type_name(doc, an));
    if (al != BENC_NONE) {
        if (!benc_is(doc, al, BENC_LIST))
            return fail(c, META_E_ANNOUNCE, al, -1,
                        "'announce-list' is %s, not a list",
                        type_name(doc, al));
        uint32_t nt = benc_node(doc, al)->u.count;
        if (nt > c->lim->max_urls)
            return fail(c, META_E_ANNOUNCE, al, -1,
                        "more than %" PRIu32 " tracker URLs",
                        c->lim->max_urls);
        info->tiers = calloc(nt ? nt : 1, sizeof(*info->tiers));
        if (!info->tiers)
            return fail_nomem(c);
        size_t t = 0;
        for (uint32_t tl = benc_first(doc, al); tl != BENC_NONE;
             tl = benc_next(doc, al, tl), t++) {
            if (!benc_is(doc, tl, BENC_LIST))
                return fail(c, META_E_ANNOUNCE, tl, -1,
                            "announce-list tier %zu is %s, not a list", t,
                            type_name(doc, tl));
            uint32_t nu = benc_node(doc, tl)->u.count;
            if (nu == 0)
                continue;
            if (nu > c->lim->max_urls - total)
                return fail(c, META_E_ANNOUNCE, tl, -1,
                            "more than %" PRIu32 " tracker URLs",
                            c->lim->max_urls);
            total += nu;
            struct meta_tier *tier = &info->tiers[info->n_tiers++];
            tier->urls = calloc(nu, sizeof(*tier->urls));
            if (!tier->urls)
                return fail_nomem(c);
            size_t u = 0;
            for (uint32_t e = benc_first(doc, tl); e != BENC_NONE;
                 e = benc_next(doc, tl, e), u++) {
                size_t n;
                const uint8_t *s = benc_str(doc, e, &n);
                if (!s)
                    return fail(c, META_E_ANNOUNCE, e, -1,
                                "announce-list tier %zu, URL %zu is %s, "
                                "not a string",
                                t, u, type_name(doc, e));
                if (dup_url(s, n, &url) < 0)
                    return fail_nomem(c);
                if (url)
                    tier->urls[tier->n_urls++] = url;
            }
            if (tier->n_urls == 0) {
                free(tier->urls);
                tier->urls = NULL;
                info->n_tiers--;
            }
        }
    }
    /* BEP 12: with a usable announce-list, "announce" is ignored. */
    if (info->n_tiers == 0 && an != BENC_NONE) {
        size_t n;
        const uint8_t *s = benc_str(doc, an, &n);
        if (dup_url(s, n, &url) < 0)
            return fail_nomem(c);
        if (!url)
            return 0;
        if (!info->tiers)
            info->tiers = calloc(1, sizeof(*info->tiers));
        if (!info->tiers) {
            free(url);
            return fail_nomem(c);
        }
        info->tiers[0].urls = calloc(1, sizeof(char *));
        if (!info->tiers[0].urls) {
            free(url);
            return fail_nomem(c);
        }
        info->tiers[0].urls[0] = url;
        info->tiers[0].n_urls = 1;
        info->n_tiers = 1;
    }
    return 0;
}

static int
add_web_seed(struct ctx *c, uint32_t e)
{
    size_t n;
    const uint8_t *s = benc_str(c->doc, e, &n);
    char *url;

    if (dup_url(s, n, &url) < 0)
        return fail_nomem(c);
    if (url)
        c->info->web_seeds[c->info->n_web_seeds++] = url;
    return 0;
}

static int
parse_web_seeds(struct ctx *c)
{
    const struct benc_doc *doc = c->doc;
    struct meta_info *info = c->info;
    uint32_t ul = benc_dict_get(doc, 0, "url-list");
    int r = 0;

    if (ul == BENC_NONE)
        return 0;
    if (benc_is(doc, ul, BENC_STR)) {
        info->web_seeds = calloc(1, sizeof(char *));
        if (!info->web_seeds)
            return fail_nomem(c);
        return add_web_seed(c, ul);
    }
    if (!benc_is(doc, ul, BENC_LIST))
        return fail(c, META_E_URL_LIST, ul, -1,
                    "'url-list' is %s, not a string or a list",
                    type_name(doc, ul));
    uint32_t count = benc_node(doc, ul)->u.count;
    if (count > c->lim->max_urls)
        return fail(c, META_E_URL_LIST, ul, -1,
                    "more than %" PRIu32 " web seed URLs", c->lim->max_urls);
    info->web_seeds = calloc(count ? count : 1, sizeof(char *));
    if (!info->web_seeds)
        return fail_nomem(c);
    size_t i = 0;
    for (uint32_t e = benc_first(doc, ul); e != BENC_NONE && r == 0;
         e = benc_next(doc, ul, e), i++) {
        if (!benc_is(doc, e, BENC_STR))
            return fail(c, META_E_URL_LIST, e, -1,
                        "url-list item %zu is %s, not a string", i,
                        type_name(doc, e));
        r = add_web_seed(c, e);
    }
    return r;
}

static int
parse_extras(struct ctx *c)
{
    const struct benc_doc *doc = c->doc;
    struct meta_info *info = c->info;
    size_t n;
    const uint8_t *s;

    s = benc_str(doc, get_utf8_str(doc, 0, "comment", "comment.utf-8"), &n);
    if (s && !(info->comment = dup_text(s, n)))
        return fail_nomem(c);
    s = benc_str(doc, benc_dict_get(doc, 0, "created by"), &n);
    if (s && !(info->created_by = dup_text(s, n)))
        return fail_nomem(c);
    uint32_t cd = benc_dict_get_type(doc, 0, "creation date", BENC_INT);
    if (cd != BENC_NONE && benc_node(doc, cd)->u.i > 0)
        info->creation_date = benc_node(doc, cd)->u.i;
    return 0;
}

static int
parse(struct meta_info **ret_info, const void *buf, size_t len,
      const struct meta_limits *lim, struct meta_errinfo *reterr,
      bool whole)
{
    struct meta_errinfo err = {.file_index = -1};
    struct benc_doc doc = {0};
    struct ctx c = {
        .lim = lim ? lim : &meta_limits_default,
        .doc = &doc,
        .err = &err,
    };
    size_t off = 0;
    int r;

    buf_init(&c.path, c.lim->max_path_len);
    if (len > c.lim->max_input) {
        err.offset = c.lim->max_input;
        (void)snprintf(err.detail, sizeof(err.detail),
                       "%zu bytes, the limit is %zu", len, c.lim->max_input);
        r = META_E_TOO_LARGE;
        goto out;
    }
    struct benc_limits bl = {
        .max_input = c.lim->max_input,
        .max_depth = META_MAX_DEPTH,
        .max_nodes = len / 2 + 2 < META_MAX_NODES ? (uint32_t)(len / 2 + 2)
                                                  : META_MAX_NODES,
    };
    /* A .torrent may end in stray bytes (a newline from a web server): the
     * info-hash does not cover them.  BEP 9 metadata must be exact. */
    r = benc_parse(&doc, buf, len, &bl, whole ? BENC_ALLOW_TRAILING : 0,
                   &off);
    if (r < 0) {
        err.offset = off;
        (void)snprintf(err.detail, sizeof(err.detail), "%s at byte %zu",
                       benc_strerror(r), off);
        r = r == BENC_E_NOMEM ? META_E_NOMEM : META_E_BENCODE;
        goto out;
    }
    if (!benc_is(&doc, 0, BENC_DICT)) {
        r = fail(&c, META_E_NOT_DICT, 0, -1,
                 "the top level is %s, not a dictionary",
                 type_name(&doc, 0));
        goto out;
    }
    c.info = calloc(1, sizeof(*c.info));
    if (!c.info) {
        r = fail_nomem(&c);
        goto out;
    }
    c.info_node = 0;
    if (whole)
        r = find_info(&c, &c.info_node);
    if (r == 0)
        r = parse_info_dict(&c, c.info_node);
    if (r == 0 && whole)
        r = parse_trackers(&c);
    if (r == 0 && whole)
        r = parse_web_seeds(&c);
    if (r == 0 && whole)
        r = parse_extras(&c);
    if (r == 0) {
        *ret_info = c.info;
        c.info = NULL;
    }
out:
    meta_free(c.info);
    benc_doc_release(&doc);
    buf_release(&c.path);
    if (r < 0 && reterr)
        *reterr = err;
    return r;
}

int
meta_parse(struct meta_info **ret_info, const void *buf, size_t len,
           const struct meta_limits *lim, struct meta_errinfo *reterr)
{
    return parse(ret_info, buf, len, lim, reterr, true);
}

int
meta_parse_info(struct meta_info **ret_info, const void *buf, size_t len,
                const struct meta_limits *lim, struct meta_errinfo *reterr)
{
    return parse(ret_info, buf, len, lim, reterr, false);
}
