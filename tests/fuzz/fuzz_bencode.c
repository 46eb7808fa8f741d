/* fuzz_bencode — libFuzzer target for common/bencode.
 *
 * Parses the input with the default limits, tolerant and with
 * BENC_STRICT_KEYS (and once with BENC_ALLOW_TRAILING, once with small
 * limits).  On success it walks every node with benc_first/benc_next/
 * benc_dict_get and checks the tree's invariants, then re-encodes the tree
 * with the benc_put_* encoder, keys in document order, and requires the
 * bytes to equal the input exactly.  Any broken invariant abort()s.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bencode.h"
#include "common/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Check dict lookups for at most this many keys per dictionary, so that a
 * huge flat dictionary does not make one input quadratic. */
#define FUZZ_DICT_GET_MAX 256

static void
fail(const char *what, uint32_t idx)
{
    fprintf(stderr, "fuzz_bencode: %s (node %" PRIu32 ")\n", what, idx);
    abort();
}

#define CHECK(cond, idx)                                                   \
    do {                                                                   \
        if (!(cond))                                                       \
            fail(#cond, (idx));                                            \
    } while (0)

static void
check_dict_get(const struct benc_doc *doc, uint32_t dict, uint32_t key,
               uint32_t val)
{
    size_t n;
    const uint8_t *k = benc_str(doc, key, &n);
    CHECK(k != NULL, key);
    if (memchr(k, '\0', n))
        return; /* benc_dict_get takes a C string */
    char *s = malloc(n + 1);
    if (!s)
        return;
    memcpy(s, k, n);
    s[n] = '\0';
    uint32_t got = benc_dict_get(doc, dict, s);
    /* The first occurrence wins: the key before it is equal, and it is
     * this value unless keys repeat. */
    CHECK(got != BENC_NONE && got <= val, val);
    CHECK(benc_str_eq(doc, got - 1, s), got);
    if (!(doc->quirks & BENC_Q_DUPLICATE_KEYS))
        CHECK(got == val, val);
    CHECK(benc_dict_get_type(doc, dict, s, doc->nodes[got].type) == got,
          got);
    free(s);
}

/* Check node idx, nested in [lo, hi), and append its encoding to out.
 * Recursion depth is bounded by the parse limits. */
static void
walk(const struct benc_doc *doc, uint32_t idx, uint32_t lo, uint32_t hi,
     struct buf *out)
{
    const struct benc_node *nd = benc_node(doc, idx);
    CHECK(nd != NULL, idx);
    CHECK(nd->type < BENC_TYPE_MAX, idx);
    CHECK(benc_is(doc, idx, (enum benc_type)nd->type), idx);
    CHECK(lo <= nd->start && nd->start < nd->end && nd->end <= hi, idx);
    CHECK(nd->next > idx && nd->next <= doc->n_nodes, idx);

    size_t rn;
    const uint8_t *raw = benc_raw(doc, idx, &rn);
    CHECK(raw == doc->buf + nd->start && rn == nd->end - nd->start, idx);

    size_t before = out->len;
    int r = 0;
    switch (nd->type) {
    case BENC_INT:
        CHECK(nd->next == idx + 1, idx);
        CHECK(benc_str(doc, idx, NULL) == NULL, idx);
        CHECK(benc_first(doc, idx) == BENC_NONE, idx);
        r = benc_put_int(out, nd->u.i);
        break;
    case BENC_STR: {
        CHECK(nd->next == idx + 1, idx);
        CHECK(benc_first(doc, idx) == BENC_NONE, idx);
        CHECK(nd->u.s.off > nd->start, idx);
        CHECK((uint64_t)nd->u.s.off + nd->u.s.len == nd->end, idx);
        size_t n;
        const uint8_t *p = benc_str(doc, idx, &n);
        CHECK(p == doc->buf + nd->u.s.off && n == nd->u.s.len, idx);
        r = benc_put_str(out, p, n);
        break;
    }
    case BENC_LIST:
    case BENC_DICT: {
        bool dict = nd->type == BENC_DICT;
        CHECK(benc_str(doc, idx, NULL) == NULL, idx);
        CHECK(dict || benc_dict_get(doc, idx, "") == BENC_NONE, idx);
        r = dict ? benc_put_dict(out) : benc_put_list(out);
        if (r < 0)
            break;
        uint32_t items = 0, expect = idx + 1, key = BENC_NONE;
        for (uint32_t c = benc_first(doc, idx); c != BENC_NONE;
             c = benc_next(doc, idx, c)) {
            CHECK(c == expect, c);
            walk(doc, c, nd->start + 1, nd->end - 1, out);
            if (dict && items % 2 == 0) {
                CHECK(benc_is(doc, c, BENC_STR), c);
                key = c;
            } else if (dict && items / 2 < FUZZ_DICT_GET_MAX) {
                check_dict_get(doc, idx, key, c);
            }
            expect = doc->nodes[c].next;
            items++;
        }
        CHECK(expect == nd->next, idx);
        CHECK(dict ? items % 2 == 0 && items / 2 == nd->u.count
                   : items == nd->u.count,
              idx);
        r = benc_put_end(out);
        break;
    }
    default:
        fail("bad type", idx);
    }
    if (r < 0)
        fail("encoder failed", idx);
    /* The encoding of this node is exactly its raw bytes. */
    CHECK(out->len - before == rn && memcmp(out->data + before, raw, rn) == 0,
          idx);
}

static void
check_doc(const struct benc_doc *doc, const uint8_t *data, size_t size)
{
    CHECK(doc->buf == data && doc->len <= size, 0);
    CHECK(doc->n_nodes >= 1 && doc->nodes != NULL, 0);
    const struct benc_node *root = benc_node(doc, 0);
    CHECK(root->start == 0 && root->end == doc->len, 0);
    CHECK(root->next == doc->n_nodes, 0);
    CHECK(benc_node(doc, doc->n_nodes) == NULL, doc->n_nodes);
    CHECK(benc_node(doc, BENC_NONE) == NULL, 0);

    struct buf out;
    buf_init(&out, SIZE_MAX);
    walk(doc, 0, 0, (uint32_t)doc->len, &out);
    CHECK(out.len == doc->len && memcmp(out.data, data, doc->len) == 0, 0);
    buf_release(&out);
}

static int
parse(struct benc_doc *doc, const uint8_t *data, size_t size,
      const struct benc_limits *lim, unsigned flags)
{
    size_t off = SIZE_MAX;
    int r = benc_parse(doc, data, size, lim, flags, &off);
    if (r < 0) {
        CHECK(r > BENC_E_MIN && off <= size, 0);
        CHECK(strcmp(benc_strerror(r), "unknown error") != 0, 0);
        return r;
    }
    CHECK(r == 0, 0);
    check_doc(doc, data, size);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct benc_limits small = {
        .max_input = 1u << 16,
        .max_depth = 4,
        .max_nodes = 32,
    };
    struct benc_doc tol = {0}, strict = {0}, trail = {0}, lim = {0};

    int rt = parse(&tol, data, size, NULL, 0);
    int rs = parse(&strict, data, size, NULL, BENC_STRICT_KEYS);
    int ra = parse(&trail, data, size, NULL, BENC_ALLOW_TRAILING);
    int rl = parse(&lim, data, size, &small, 0);

    if (rt == 0)
        CHECK(tol.len == size, 0);
    /* Strict accepts exactly the tolerant documents without quirks. */
    if (rs == 0)
        CHECK(rt == 0 && tol.quirks == 0 && strict.quirks == 0 &&
                  strict.n_nodes == tol.n_nodes,
              0);
    if (rt == 0 && tol.quirks == 0)
        CHECK(rs == 0, 0);
    /* Trailing data allowed: same result on a whole document, else an
     * error or a prefix. */
    if (rt == 0)
        CHECK(ra == 0 && trail.len == size && trail.n_nodes == tol.n_nodes,
              0);
    if (rt == BENC_E_TRAILING)
        CHECK(ra == 0 && trail.len < size, 0);
    if (ra == 0 && trail.len == size)
        CHECK(rt == 0, 0);
    /* Tighter limits only take documents away. */
    if (rl == 0)
        CHECK(rt == 0 && lim.n_nodes == tol.n_nodes &&
                  lim.n_nodes <= small.max_nodes,
              0);
    if (rt == 0 && rl < 0)
        CHECK(rl == BENC_E_DEPTH || rl == BENC_E_TOO_MANY_NODES ||
                  rl == BENC_E_TOO_LARGE || rl == BENC_E_NOMEM,
              0);

    benc_doc_release(&tol);
    benc_doc_release(&strict);
    benc_doc_release(&trail);
    benc_doc_release(&lim);
    return 0;
}
