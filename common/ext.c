/* ext — ut_metadata (BEP 9) and ut_pex (BEP 11); see ext.h. */
#include "common/ext.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/wire.h"

/* Bencode limits of the small dictionaries: a few keys, maybe unknown
 * ones from newer clients. */
#define EXT_MAX_DEPTH 8
#define EXT_MAX_NODES 256

const char *
ext_strerror(int err)
{
    switch (err) {
    case EXT_OK:
        return "success";
    case EXT_E_TOO_LONG:
        return "extension message too long";
    case EXT_E_BENCODE:
        return "extension message is not valid bencode";
    case EXT_E_NOT_DICT:
        return "extension message is not a dictionary";
    case EXT_E_MSG_TYPE:
        return "ut_metadata msg_type missing or not an integer";
    case EXT_E_MSG_UNKNOWN:
        return "ut_metadata msg_type unknown";
    case EXT_E_PIECE:
        return "ut_metadata piece missing or out of range";
    case EXT_E_TOTAL_SIZE:
        return "ut_metadata total_size missing or out of range";
    case EXT_E_DATA_LENGTH:
        return "ut_metadata data has the wrong length";
    case EXT_E_PEX_FIELD:
        return "ut_pex peer list malformed";
    case EXT_E_NOMEM:
        return "out of memory";
    default:
        return "unknown error";
    }
}

/* ---- ut_metadata ----------------------------------------------------- */

uint32_t
ext_metadata_piece_count(uint32_t size)
{
    return (uint32_t)(((uint64_t)size + EXT_METADATA_PIECE - 1) /
                      EXT_METADATA_PIECE);
}

uint32_t
ext_metadata_piece_len(uint32_t size, uint32_t piece)
{
    uint32_t n = ext_metadata_piece_count(size);
    if (piece >= n)
        return 0;
    if (piece + 1 < n)
        return EXT_METADATA_PIECE;
    return size - piece * EXT_METADATA_PIECE;
}

/* An integer value of key in the top dictionary.  Returns 1 (found, an
 * integer), 0 (absent), -1 (not an integer; *ret_off its start). */
static int
dict_int(const struct benc_doc *doc, const char *key, int64_t *ret,
         size_t *ret_off)
{
    uint32_t idx = benc_dict_get(doc, 0, key);
    if (idx == BENC_NONE)
        return 0;
    *ret_off = doc->nodes[idx].start;
    if (!benc_is(doc, idx, BENC_INT))
        return -1;
    *ret = doc->nodes[idx].u.i;
    return 1;
}

int
ext_metadata_parse(struct ext_metadata_msg *ret, const void *buf, size_t len,
                   uint32_t size, size_t *reterr_offset)
{
    struct benc_doc doc = {0};
    struct ext_metadata_msg m = {0};
    size_t off = 0;
    int64_t v;
    int r, k;

    if (len > EXT_METADATA_MSG_MAX) {
        r = EXT_E_TOO_LONG;
        off = EXT_METADATA_MSG_MAX;
        goto fail;
    }
    const struct benc_limits bl = {
        .max_input = EXT_METADATA_MSG_MAX,
        .max_depth = EXT_MAX_DEPTH,
        .max_nodes = EXT_MAX_NODES,
    };
    r = benc_parse(&doc, buf, len, &bl, BENC_ALLOW_TRAILING, &off);
    if (r < 0) {
        r = r == BENC_E_NOMEM ? EXT_E_NOMEM : EXT_E_BENCODE;
        goto fail;
    }
    if (!benc_is(&doc, 0, BENC_DICT)) {
        r = EXT_E_NOT_DICT;
        off = 0;
        goto fail;
    }
    k = dict_int(&doc, "msg_type", &v, &off);
    if (k <= 0) {
        r = EXT_E_MSG_TYPE;
        off = k == 0 ? 0 : off;
        goto fail;
    }
    if (v < 0 || v >= EXT_MD_TYPE_MAX) {
        r = EXT_E_MSG_UNKNOWN;
        goto fail;
    }
    m.type = (uint8_t)v;
    k = dict_int(&doc, "piece", &v, &off);
    if (k <= 0 || v < 0 || v >= EXT_METADATA_PIECES_MAX) {
        r = EXT_E_PIECE;
        off = k == 0 ? 0 : off;
        goto fail;
    }
    m.piece = (uint32_t)v;
    size_t piece_off = off;
    if (m.type != EXT_MD_DATA) {
        uint32_t count =
            size ? ext_metadata_piece_count(size) : EXT_METADATA_PIECES_MAX;
        if (m.piece >= count) {
            r = EXT_E_PIECE;
            goto fail;
        }
        if (doc.len != len) {
            r = EXT_E_DATA_LENGTH;
            off = doc.len;
            goto fail;
        }
    } else {
        k = dict_int(&doc, "total_size", &v, &off);
        if (k <= 0 || v < 1 || v > EXT_METADATA_MAX || (size && v != size)) {
            r = EXT_E_TOTAL_SIZE;
            off = k == 0 ? 0 : off;
            goto fail;
        }
        m.total_size = (uint32_t)v;
        if (m.piece >= ext_metadata_piece_count(m.total_size)) {
            r = EXT_E_PIECE;
            off = piece_off;
            goto fail;
        }
        if (len - doc.len != ext_metadata_piece_len(m.total_size, m.piece)) {
            r = EXT_E_DATA_LENGTH;
            off = doc.len;
            goto fail;
        }
        m.data = (const uint8_t *)buf + doc.len;
        m.data_len = (uint32_t)(len - doc.len);
    }
    benc_doc_release(&doc);
    *ret = m;
    return 0;

fail:
    benc_doc_release(&doc);
    if (reterr_offset)
        *reterr_offset = off;
    return r;
}

static int
put_int(struct buf *b, const char *key, int64_t v)
{
    int r = benc_put_cstr(b, key);
    return r < 0 ? r : benc_put_int(b, v);
}

/* Undo a partial append, or write the extended header over the 6 bytes
 * reserved at start. */
static int
ext_finish(struct buf *b, size_t start, uint8_t ext_id, int r)
{
    if (r < 0) {
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
        return r;
    }
    size_t n = b->len - start;
    (void)wire_put_extended_header(b->data + start, n, ext_id,
                                   (uint32_t)(n - WIRE_EXTENDED_HEADER_LEN));
    return (int)n;
}

int
ext_metadata_put(struct buf *b, uint8_t ext_id, enum ext_md_type type,
                 uint32_t piece, uint32_t total_size, const void *data,
                 uint32_t data_len)
{
    if ((unsigned)type >= EXT_MD_TYPE_MAX || piece >= EXT_METADATA_PIECES_MAX)
        return -EINVAL;
    if (type == EXT_MD_DATA &&
        (total_size == 0 || total_size > EXT_METADATA_MAX || !data ||
         data_len != ext_metadata_piece_len(total_size, piece)))
        return -EINVAL;
    size_t start = b->len;
    uint8_t head[WIRE_EXTENDED_HEADER_LEN] = {0};
    int r = buf_append(b, head, sizeof(head));
    /* Keys in sorted order: msg_type, piece, total_size. */
    if (r >= 0)
        r = benc_put_dict(b);
    if (r >= 0)
        r = put_int(b, "msg_type", type);
    if (r >= 0)
        r = put_int(b, "piece", piece);
    if (r >= 0 && type == EXT_MD_DATA)
        r = put_int(b, "total_size", total_size);
    if (r >= 0)
        r = benc_put_end(b);
    if (r >= 0 && type == EXT_MD_DATA)
        r = buf_append(b, data, data_len);
    return ext_finish(b, start, ext_id, r);
}

/* ---- the assembler --------------------------------------------------- */

int
ext_metadata_init(struct ext_metadata *md, uint32_t size)
{
    memset(md, 0, sizeof(*md));
    if (size == 0 || size > EXT_METADATA_MAX)
        return -EINVAL;
    uint32_t n = ext_metadata_piece_count(size);
    md->have = calloc((n + 7) / 8, 1);
    md->buf = malloc(size);
    if (!md->have || !md->buf) {
        ext_metadata_release(md);
        return -ENOMEM;
    }
    md->size = size;
    md->n_pieces = n;
    return 0;
}

void
ext_metadata_release(struct ext_metadata *md)
{
    if (!md)
        return;
    free(md->have);
    free(md->buf);
    memset(md, 0, sizeof(*md));
}

void
ext_metadata_reset(struct ext_metadata *md)
{
    if (md->have)
        memset(md->have, 0, (md->n_pieces + 7) / 8);
    md->n_have = 0;
}

bool
ext_metadata_has(const struct ext_metadata *md, uint32_t piece)
{
    return piece < md->n_pieces &&
           (md->have[piece / 8] & (0x80u >> (piece % 8)));
}

bool
ext_metadata_complete(const struct ext_metadata *md)
{
    return md->n_pieces > 0 && md->n_have == md->n_pieces;
}

int
ext_metadata_add(struct ext_metadata *md, uint32_t piece, const void *data,
                 size_t len)
{
    if (piece >= md->n_pieces || len != ext_metadata_piece_len(md->size, piece))
        return -EINVAL;
    if (ext_metadata_has(md, piece))
        return 0;
    memcpy(md->buf + (size_t)piece * EXT_METADATA_PIECE, data, len);
    md->have[piece / 8] |= (uint8_t)(0x80u >> (piece % 8));
    md->n_have++;
    return 1;
}

uint32_t
ext_metadata_next_missing(const struct ext_metadata *md, uint32_t from)
{
    if (md->n_pieces == 0 || md->n_have == md->n_pieces)
        return UINT32_MAX;
    if (from >= md->n_pieces)
        from = 0;
    for (uint32_t k = 0; k < md->n_pieces; k++) {
        uint32_t i = (from + k) % md->n_pieces;
        if (!ext_metadata_has(md, i))
            return i;
    }
    return UINT32_MAX;
}

int
ext_metadata_verify(const struct ext_metadata *md,
                    const uint8_t info_hash[EXT_HASH_LEN])
{
    if (!ext_metadata_complete(md))
        return -EAGAIN;
    uint8_t h[EVP_MAX_MD_SIZE];
    unsigned hl = 0;
    if (EVP_Digest(md->buf, md->size, h, &hl, EVP_sha1(), NULL) != 1 ||
        hl != EXT_HASH_LEN)
        return -ENOMEM;
    return memcmp(h, info_hash, EXT_HASH_LEN) ? -EBADMSG : 0;
}

/* ---- ut_pex ---------------------------------------------------------- */

int
ext_pex_peer_cmp(const void *a, const void *b)
{
    const struct ext_pex_peer *x = a, *y = b;
    if (x->addr_len != y->addr_len)
        return x->addr_len < y->addr_len ? -1 : 1;
    int c = memcmp(x->addr, y->addr, x->addr_len <= 16 ? x->addr_len : 16);
    if (c)
        return c;
    return x->port < y->port ? -1 : x->port > y->port ? 1 : 0;
}

/* A compact list: key's string, a multiple of unit bytes.  Returns 1 and
 * the bytes, 0 if absent, EXT_E_PEX_FIELD with *ret_off. */
static int
pex_list(const struct benc_doc *doc, const char *key, size_t unit,
         const uint8_t **ret, size_t *ret_n, size_t *ret_off)
{
    uint32_t idx = benc_dict_get(doc, 0, key);
    if (idx == BENC_NONE)
        return 0;
    size_t n;
    const uint8_t *s = benc_str(doc, idx, &n);
    if (!s || n % unit) {
        *ret_off = doc->nodes[idx].start;
        return EXT_E_PEX_FIELD;
    }
    *ret = s;
    *ret_n = n / unit;
    return 1;
}

/* Flags for n added peers: used only if exactly n bytes. */
static const uint8_t *
pex_flags(const struct benc_doc *doc, const char *key, size_t n)
{
    uint32_t idx = benc_dict_get(doc, 0, key);
    size_t fl;
    const uint8_t *f = idx == BENC_NONE ? NULL : benc_str(doc, idx, &fl);
    return f && fl == n ? f : NULL;
}

/* Append up to *room peers of a compact list to out[*n...]. */
static void
pex_take(struct ext_pex_peer *out, size_t *n, size_t *room, bool *trunc,
         const uint8_t *s, size_t count, size_t alen, const uint8_t *flags)
{
    for (size_t i = 0; i < count; i++) {
        if (*room == 0) {
            *trunc = true;
            return;
        }
        const uint8_t *e = s + i * (alen + 2);
        uint16_t port = (uint16_t)(e[alen] << 8 | e[alen + 1]);
        if (port == 0)
            continue;
        struct ext_pex_peer *p = &out[(*n)++];
        memset(p, 0, sizeof(*p));
        memcpy(p->addr, e, alen);
        p->addr_len = (uint8_t)alen;
        p->port = port;
        p->flags = flags ? flags[i] : 0;
        (*room)--;
    }
}

int
ext_pex_parse(struct ext_pex_msg *ret, const void *buf, size_t len,
              size_t *reterr_offset)
{
    struct benc_doc doc = {0};
    size_t off = 0;
    int r;

    if (len > EXT_PEX_MSG_MAX) {
        r = EXT_E_TOO_LONG;
        off = EXT_PEX_MSG_MAX;
        goto fail;
    }
    const struct benc_limits bl = {
        .max_input = EXT_PEX_MSG_MAX,
        .max_depth = EXT_MAX_DEPTH,
        .max_nodes = EXT_MAX_NODES,
    };
    r = benc_parse(&doc, buf, len, &bl, 0, &off);
    if (r < 0) {
        r = r == BENC_E_NOMEM ? EXT_E_NOMEM : EXT_E_BENCODE;
        goto fail;
    }
    if (!benc_is(&doc, 0, BENC_DICT)) {
        r = EXT_E_NOT_DICT;
        off = 0;
        goto fail;
    }
    static const char *const keys[4] = {"added", "added6", "dropped",
                                        "dropped6"};
    const uint8_t *lists[4] = {NULL, NULL, NULL, NULL};
    size_t counts[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        size_t unit = i % 2 ? 18 : 6;
        r = pex_list(&doc, keys[i], unit, &lists[i], &counts[i], &off);
        if (r < 0)
            goto fail;
    }
    size_t na = counts[0] + counts[1], nd = counts[2] + counts[3];
    if (na > EXT_PEX_ACCEPT_MAX)
        na = EXT_PEX_ACCEPT_MAX;
    if (nd > EXT_PEX_ACCEPT_MAX)
        nd = EXT_PEX_ACCEPT_MAX;
    struct ext_pex_msg m = {0};
    m.peers = calloc(na + nd ? na + nd : 1, sizeof(*m.peers));
    if (!m.peers) {
        r = EXT_E_NOMEM;
        off = 0;
        goto fail;
    }
    size_t room = na;
    pex_take(m.peers, &m.n_added, &room, &m.truncated, lists[0], counts[0], 4,
             pex_flags(&doc, "added.f", counts[0]));
    pex_take(m.peers, &m.n_added, &room, &m.truncated, lists[1], counts[1], 16,
             pex_flags(&doc, "added6.f", counts[1]));
    room = nd;
    struct ext_pex_peer *dp = m.peers + m.n_added;
    pex_take(dp, &m.n_dropped, &room, &m.truncated, lists[2], counts[2], 4,
             NULL);
    pex_take(dp, &m.n_dropped, &room, &m.truncated, lists[3], counts[3], 16,
             NULL);
    benc_doc_release(&doc);
    *ret = m;
    return 0;

fail:
    benc_doc_release(&doc);
    if (reterr_offset)
        *reterr_offset = off;
    return r;
}

void
ext_pex_msg_release(struct ext_pex_msg *m)
{
    if (!m)
        return;
    free(m->peers);
    memset(m, 0, sizeof(*m));
}

void
ext_pex_msg_free(void *m)
{
    ext_pex_msg_release(m);
    free(m);
}

/* Append the compact list (and, if fkey, the flags) of the peers of one
 * address length. */
static int
pex_put_list(struct buf *b, const char *key, const char *fkey,
             const struct ext_pex_peer *v, size_t n, uint8_t alen)
{
    uint8_t s[EXT_PEX_SEND_MAX * 18];
    uint8_t f[EXT_PEX_SEND_MAX];
    size_t k = 0, sl = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].addr_len != alen)
            continue;
        memcpy(s + sl, v[i].addr, alen);
        s[sl + alen] = (uint8_t)(v[i].port >> 8);
        s[sl + alen + 1] = (uint8_t)v[i].port;
        sl += (size_t)alen + 2;
        f[k++] = v[i].flags;
    }
    if (alen == 16 && k == 0)
        return 0; /* IPv6 lists only when there is one */
    int r = benc_put_cstr(b, key);
    if (r >= 0)
        r = benc_put_str(b, s, sl);
    if (r >= 0 && fkey) {
        r = benc_put_cstr(b, fkey);
        if (r >= 0)
            r = benc_put_str(b, f, k);
    }
    return r;
}

int
ext_pex_put(struct buf *b, uint8_t ext_id, const struct ext_pex_peer *added,
            size_t n_added, const struct ext_pex_peer *dropped,
            size_t n_dropped)
{
    if (n_added > EXT_PEX_SEND_MAX || n_dropped > EXT_PEX_SEND_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n_added; i++)
        if (added[i].addr_len != 4 && added[i].addr_len != 16)
            return -EINVAL;
    for (size_t i = 0; i < n_dropped; i++)
        if (dropped[i].addr_len != 4 && dropped[i].addr_len != 16)
            return -EINVAL;
    size_t start = b->len;
    uint8_t head[WIRE_EXTENDED_HEADER_LEN] = {0};
    int r = buf_append(b, head, sizeof(head));
    /* Sorted keys: added, added.f, added6, added6.f, dropped, dropped6. */
    if (r >= 0)
        r = benc_put_dict(b);
    if (r >= 0)
        r = pex_put_list(b, "added", "added.f", added, n_added, 4);
    if (r >= 0)
        r = pex_put_list(b, "added6", "added6.f", added, n_added, 16);
    if (r >= 0)
        r = pex_put_list(b, "dropped", NULL, dropped, n_dropped, 4);
    if (r >= 0)
        r = pex_put_list(b, "dropped6", NULL, dropped, n_dropped, 16);
    if (r >= 0)
        r = benc_put_end(b);
    return ext_finish(b, start, ext_id, r);
}

/* ---- what we told a peer --------------------------------------------- */

void
ext_pex_state_init(struct ext_pex_state *s)
{
    memset(s, 0, sizeof(*s));
}

void
ext_pex_state_release(struct ext_pex_state *s)
{
    if (!s)
        return;
    free(s->sent);
    memset(s, 0, sizeof(*s));
}

bool
ext_pex_state_due(const struct ext_pex_state *s, int64_t now_ms)
{
    return !s->any || now_ms - s->last_ms >= EXT_PEX_INTERVAL_MS;
}

int
ext_pex_state_next(struct ext_pex_state *s, const struct ext_pex_peer *cur,
                   size_t n_cur, int64_t now_ms, struct ext_pex_msg *ret)
{
    if (!ext_pex_state_due(s, now_ms))
        return -EAGAIN;
    struct ext_pex_peer *c = NULL, *out = NULL, *next = NULL;
    /* cur, sorted and without duplicates (flags of the first kept). */
    if (n_cur) {
        c = malloc(n_cur * sizeof(*c));
        if (!c)
            return -ENOMEM;
        memcpy(c, cur, n_cur * sizeof(*c));
        qsort(c, n_cur, sizeof(*c), ext_pex_peer_cmp);
    }
    size_t nc = 0;
    for (size_t i = 0; i < n_cur; i++)
        if (nc == 0 || ext_pex_peer_cmp(&c[nc - 1], &c[i]) != 0)
            c[nc++] = c[i];
    out = calloc(2 * EXT_PEX_SEND_MAX, sizeof(*out));
    next = malloc((s->n_sent + EXT_PEX_SEND_MAX + 1) * sizeof(*next));
    if (!out || !next) {
        free(c);
        free(out);
        free(next);
        return -ENOMEM;
    }
    /* Merge walk: added = c - sent, dropped = sent - c; the new sent set
     * = what stays, plus what is announced, minus what is dropped. */
    struct ext_pex_peer *dropped = out + EXT_PEX_SEND_MAX;
    size_t na = 0, nd = 0, nn = 0, i = 0, j = 0;
    while (i < nc || j < s->n_sent) {
        int cmp = i == nc          ? 1
                  : j == s->n_sent ? -1
                                   : ext_pex_peer_cmp(&c[i], &s->sent[j]);
        if (cmp == 0) {
            next[nn++] = s->sent[j];
            i++;
            j++;
        } else if (cmp < 0) { /* new */
            if (na < EXT_PEX_SEND_MAX) {
                out[na++] = c[i];
                next[nn++] = c[i];
            }
            i++;
        } else { /* gone */
            if (nd < EXT_PEX_SEND_MAX) {
                dropped[nd] = s->sent[j];
                dropped[nd++].flags = 0;
            } else {
                next[nn++] = s->sent[j];
            }
            j++;
        }
    }
    free(c);
    /* next is sorted: both inputs were, and the walk kept the order. */
    memset(ret, 0, sizeof(*ret));
    if (na == 0 && nd == 0) {
        free(out);
        free(next);
        return 0;
    }
    memmove(out + na, dropped, nd * sizeof(*out));
    free(s->sent);
    s->sent = next;
    s->n_sent = nn;
    s->last_ms = now_ms;
    s->any = true;
    ret->peers = out;
    ret->n_added = na;
    ret->n_dropped = nd;
    return 1;
}
