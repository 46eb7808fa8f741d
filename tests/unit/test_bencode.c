/* Unit tests for common/bencode: every error value with its offset, the
 * limits, key quirks, accessors, the encoder, truncation at every length
 * and a deterministic bit-flip loop (OpenSSH test_helper FUZZ_*). */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/bencode.h"
#include "common/buf.h"

/* --- allocation failure injection ---
 * bencode.c grows its node array with reallocarray(); this definition,
 * linked into the test program, takes its place.  fail_allocs_in = n makes
 * the n-th call from now fail (0 = never). */
static int fail_allocs_in;
/* The largest node array asked for since the last reset. */
static size_t alloc_max_nodes;

void *
reallocarray(void *p, size_t n, size_t size)
{
    if (fail_allocs_in > 0 && --fail_allocs_in == 0)
        return NULL;
    if (size == sizeof(struct benc_node) && n > alloc_max_nodes)
        alloc_max_nodes = n;
    if (size && n > SIZE_MAX / size)
        return NULL;
    return realloc(p, n * size);
}

/* --- helpers --- */

/* Input as an exact-size heap copy, so ASan sees any read past the end. */
static uint8_t *
dup_exact(const void *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

static void check_doc(const struct benc_doc *doc, const uint8_t *in,
                      size_t len);

/* Parse and, on success, check the whole tree.  Returns the result.
 * Whatever the result, the node array stayed within what the input can
 * hold: (len + open containers) / 2 + 1 entries (bencode.c parse()). */
static int
parse_len(struct benc_doc *doc, const void *in, size_t len,
          const struct benc_limits *lim, unsigned flags, size_t *off)
{
    const struct benc_limits *l = lim ? lim : &benc_limits_default;
    size_t open = l->max_depth < len ? l->max_depth : len;
    alloc_max_nodes = 0;
    int r = benc_parse(doc, in, len, lim, flags, off);
    if (alloc_max_nodes > (len + open) / 2 + 1)
        fail_msg("%zu nodes allocated for %zu bytes", alloc_max_nodes, len);
    if (r == 0)
        check_doc(doc, in, len);
    return r;
}

static void
parse_ok(struct benc_doc *doc, const char *s, unsigned flags)
{
    size_t off = 12345;
    int r = parse_len(doc, s, strlen(s), NULL, flags, &off);
    if (r != 0)
        fail_msg("'%s': %s at %zu", s, benc_strerror(r), off);
    assert_int_equal(off, 12345); /* reterr_offset untouched on success */
}

/* Walk every node, check the invariants and re-encode the tree with the
 * encoder; the bytes must equal the value's input (as the fuzzer does). */
static void
walk(const struct benc_doc *doc, uint32_t idx, uint32_t lo, uint32_t hi,
     struct buf *out)
{
    const struct benc_node *nd = benc_node(doc, idx);
    assert_non_null(nd);
    assert_true(nd->type < BENC_TYPE_MAX);
    assert_true(lo <= nd->start && nd->start < nd->end && nd->end <= hi);
    assert_true(nd->next > idx && nd->next <= doc->n_nodes);
    size_t before = out->len;

    switch (nd->type) {
    case BENC_INT:
        assert_int_equal(nd->next, idx + 1);
        assert_int_equal(benc_put_int(out, nd->u.i), 0);
        break;
    case BENC_STR:
        assert_int_equal(nd->next, idx + 1);
        assert_int_equal(nd->u.s.off + nd->u.s.len, nd->end);
        assert_int_equal(benc_put_str(out, doc->buf + nd->u.s.off,
                                      nd->u.s.len),
                         0);
        break;
    default: {
        bool dict = nd->type == BENC_DICT;
        uint32_t items = 0, expect = idx + 1;
        assert_int_equal(dict ? benc_put_dict(out) : benc_put_list(out), 0);
        for (uint32_t c = benc_first(doc, idx); c != BENC_NONE;
             c = benc_next(doc, idx, c)) {
            assert_int_equal(c, expect);
            if (dict && items % 2 == 0)
                assert_true(benc_is(doc, c, BENC_STR));
            walk(doc, c, nd->start + 1, nd->end - 1, out);
            expect = doc->nodes[c].next;
            items++;
        }
        assert_int_equal(expect, nd->next);
        assert_int_equal(dict ? items / 2 : items, nd->u.count);
        if (dict)
            assert_int_equal(items % 2, 0);
        assert_int_equal(benc_put_end(out), 0);
        break;
    }
    }
    size_t rn;
    const uint8_t *raw = benc_raw(doc, idx, &rn);
    assert_ptr_equal(raw, doc->buf + nd->start);
    assert_int_equal(out->len - before, rn);
    assert_memory_equal(out->data + before, raw, rn);
}

static void
check_doc(const struct benc_doc *doc, const uint8_t *in, size_t len)
{
    assert_ptr_equal(doc->buf, in);
    assert_true(doc->len <= len && doc->n_nodes >= 1);
    assert_int_equal(doc->nodes[0].start, 0);
    assert_int_equal(doc->nodes[0].end, doc->len);
    assert_int_equal(doc->nodes[0].next, doc->n_nodes);
    struct buf out;
    buf_init(&out, SIZE_MAX);
    walk(doc, 0, 0, (uint32_t)doc->len, &out);
    assert_int_equal(out.len, doc->len);
    assert_memory_equal(out.data, in, doc->len);
    buf_release(&out);
}

/* --- one test per error value, with its offset --- */

static const struct benc_limits lim_depth2 = {
    .max_input = 1024, .max_depth = 2, .max_nodes = 100};
static const struct benc_limits lim_nodes2 = {
    .max_input = 1024, .max_depth = 8, .max_nodes = 2};
static const struct benc_limits lim_input3 = {
    .max_input = 3, .max_depth = 8, .max_nodes = 100};

struct err_case {
    const char *in;
    size_t len; /* 0: strlen(in) */
    const struct benc_limits *lim;
    unsigned flags;
    int err;
    size_t off;
};

static const struct err_case err_cases[] = {
    {"", 0, NULL, 0, BENC_E_EMPTY, 0},
    {"", 0, &lim_nodes2, BENC_STRICT_KEYS, BENC_E_EMPTY, 0},

    {"i", 0, NULL, 0, BENC_E_TRUNCATED, 1},
    {"i-", 0, NULL, 0, BENC_E_TRUNCATED, 2},
    {"i12", 0, NULL, 0, BENC_E_TRUNCATED, 3},
    {"i0", 0, NULL, 0, BENC_E_TRUNCATED, 2},
    {"5", 0, NULL, 0, BENC_E_TRUNCATED, 1},
    {"12", 0, NULL, 0, BENC_E_TRUNCATED, 2},
    {"l", 0, NULL, 0, BENC_E_TRUNCATED, 1},
    {"li1e", 0, NULL, 0, BENC_E_TRUNCATED, 4},
    {"d", 0, NULL, 0, BENC_E_TRUNCATED, 1},
    {"d1:a", 0, NULL, 0, BENC_E_TRUNCATED, 4},
    {"d1:ai1e", 0, NULL, BENC_ALLOW_TRAILING, BENC_E_TRUNCATED, 7},

    {"x", 0, NULL, 0, BENC_E_SYNTAX, 0},
    {"e", 0, NULL, 0, BENC_E_SYNTAX, 0},
    {"-1:a", 0, NULL, 0, BENC_E_SYNTAX, 0},
    {"li1ex", 0, NULL, 0, BENC_E_SYNTAX, 4},
    {"l:e", 0, NULL, 0, BENC_E_SYNTAX, 1},
    {"d1:ae", 0, NULL, 0, BENC_E_SYNTAX, 4}, /* key without a value */
    {"d1:ai1e1:be", 0, NULL, 0, BENC_E_SYNTAX, 10},
    {"\0", 1, NULL, 0, BENC_E_SYNTAX, 0},

    {"ie", 0, NULL, 0, BENC_E_INT_EMPTY, 1},
    {"i-e", 0, NULL, 0, BENC_E_INT_EMPTY, 2},
    {"li1eiee", 0, NULL, 0, BENC_E_INT_EMPTY, 5},

    {"i03e", 0, NULL, 0, BENC_E_INT_LEADING_ZERO, 1},
    {"i00e", 0, NULL, 0, BENC_E_INT_LEADING_ZERO, 1},
    {"i00", 0, NULL, 0, BENC_E_INT_LEADING_ZERO, 1},

    {"i-0e", 0, NULL, 0, BENC_E_INT_NEGATIVE_ZERO, 2},
    {"i-0", 0, NULL, 0, BENC_E_INT_NEGATIVE_ZERO, 2},
    {"i-01e", 0, NULL, 0, BENC_E_INT_NEGATIVE_ZERO, 2},

    {"i9223372036854775808e", 0, NULL, 0, BENC_E_INT_RANGE, 19},
    {"i-9223372036854775809e", 0, NULL, 0, BENC_E_INT_RANGE, 20},
    {"i10000000000000000000e", 0, NULL, 0, BENC_E_INT_RANGE, 20},
    {"i99999999999999999999999e", 0, NULL, 0, BENC_E_INT_RANGE, 19},

    {"i1x2e", 0, NULL, 0, BENC_E_INT_SYNTAX, 2},
    {"i+1e", 0, NULL, 0, BENC_E_INT_SYNTAX, 1},
    {"i 1e", 0, NULL, 0, BENC_E_INT_SYNTAX, 1},
    {"i--1e", 0, NULL, 0, BENC_E_INT_SYNTAX, 2},
    {"i1.5e", 0, NULL, 0, BENC_E_INT_SYNTAX, 2},
    {"i0xe", 0, NULL, 0, BENC_E_INT_SYNTAX, 2},
    {"i1-e", 0, NULL, 0, BENC_E_INT_SYNTAX, 2},

    {"03:abc", 0, NULL, 0, BENC_E_STR_LENGTH, 0},
    {"00:", 0, NULL, 0, BENC_E_STR_LENGTH, 0},
    {"1x:a", 0, NULL, 0, BENC_E_STR_LENGTH, 1},
    {"1-1:a", 0, NULL, 0, BENC_E_STR_LENGTH, 1},
    {"l2e", 0, NULL, 0, BENC_E_STR_LENGTH, 2},

    {"5:abc", 0, NULL, 0, BENC_E_STR_TOO_LONG, 2},
    {"1:", 0, NULL, 0, BENC_E_STR_TOO_LONG, 2},
    {"l10:abce", 0, NULL, 0, BENC_E_STR_TOO_LONG, 4},
    {"4294967295:", 0, NULL, 0, BENC_E_STR_TOO_LONG, 9},
    {"99999999999999999999:", 0, NULL, 0, BENC_E_STR_TOO_LONG, 9},

    {"di1ei2ee", 0, NULL, 0, BENC_E_KEY_NOT_STRING, 1},
    {"dlei1ee", 0, NULL, 0, BENC_E_KEY_NOT_STRING, 1},
    {"dde0:e", 0, NULL, 0, BENC_E_KEY_NOT_STRING, 1},
    {"d1:ai1ei2ei3ee", 0, NULL, 0, BENC_E_KEY_NOT_STRING, 7},

    {"d1:b0:1:a0:e", 0, NULL, BENC_STRICT_KEYS, BENC_E_KEY_ORDER, 6},
    {"d2:aa0:1:a0:e", 0, NULL, BENC_STRICT_KEYS, BENC_E_KEY_ORDER, 7},
    {"d1:a0:1:b0:1:a0:e", 0, NULL, BENC_STRICT_KEYS, BENC_E_KEY_ORDER, 11},
    {"d1:\x80" "0:1:a0:e", 0, NULL, BENC_STRICT_KEYS, BENC_E_KEY_ORDER, 6},

    {"d1:a0:1:a0:e", 0, NULL, BENC_STRICT_KEYS, BENC_E_KEY_DUPLICATE, 6},
    {"d0:i1e0:i2ee", 0, NULL, BENC_STRICT_KEYS, BENC_E_KEY_DUPLICATE, 6},
    {"ld1:xd1:a0:1:a0:eee", 0, NULL, BENC_STRICT_KEYS,
     BENC_E_KEY_DUPLICATE, 11},

    {"llleee", 0, &lim_depth2, 0, BENC_E_DEPTH, 2},
    {"ld1:adee", 0, &lim_depth2, 0, BENC_E_DEPTH, 5},
    {"lllll", 0, &lim_depth2, 0, BENC_E_DEPTH, 2},

    {"li1ei2ee", 0, &lim_nodes2, 0, BENC_E_TOO_MANY_NODES, 4},
    {"d1:ai1ee", 0, &lim_nodes2, 0, BENC_E_TOO_MANY_NODES, 4},

    {"i10e", 0, &lim_input3, 0, BENC_E_TOO_LARGE, 3},
    {"4:spam", 0, &lim_input3, BENC_ALLOW_TRAILING, BENC_E_TOO_LARGE, 3},

    {"i1ei2e", 0, NULL, 0, BENC_E_TRAILING, 3},
    {"0:x", 0, NULL, 0, BENC_E_TRAILING, 2},
    {"lee", 0, NULL, 0, BENC_E_TRAILING, 2},
    {"de\n", 0, NULL, BENC_STRICT_KEYS, BENC_E_TRAILING, 2},
    {"i1e\0", 4, NULL, 0, BENC_E_TRAILING, 3},
};

static void
test_errors(void **state)
{
    (void)state;
    bool seen[-BENC_E_MIN] = {false};

    for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
        const struct err_case *c = &err_cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        uint8_t *in = dup_exact(c->in, len);
        struct benc_doc doc, sentinel;
        memset(&doc, 0xa5, sizeof(doc));
        sentinel = doc;
        size_t off = SIZE_MAX;
        int r = benc_parse(&doc, in, len, c->lim, c->flags, &off);
        if (r != c->err || off != c->off)
            fail_msg("case %zu '%s': got %d (%s) at %zu, want %d at %zu", i,
                     c->in, r, benc_strerror(r), off, c->err, c->off);
        /* ret_doc is written only on success. */
        assert_memory_equal(&doc, &sentinel, sizeof(doc));
        /* reterr_offset may be NULL. */
        assert_int_equal(benc_parse(&doc, in, len, c->lim, c->flags, NULL),
                         c->err);
        seen[-r] = true;
        free(in);
    }
    /* Every error value but NOMEM (test_nomem) has a case above. */
    for (int e = BENC_E_EMPTY; e > BENC_E_MIN; e--)
        if (e != BENC_E_NOMEM && !seen[-e])
            fail_msg("no test case for %d (%s)", e, benc_strerror(e));
}

static void
test_nomem(void **state)
{
    (void)state;
    const char *s = "d1:ali1ei2ee1:bd1:ci3eee";
    struct benc_doc doc;
    size_t off;

    fail_allocs_in = 1;
    assert_int_equal(benc_parse(&doc, s, strlen(s), NULL, 0, &off),
                     BENC_E_NOMEM);
    assert_int_equal(fail_allocs_in, 0);
    assert_string_not_equal(benc_strerror(BENC_E_NOMEM), "unknown error");

    /* The node array grows past its first size: fail that growth. */
    struct buf b;
    buf_init(&b, SIZE_MAX);
    assert_int_equal(benc_put_list(&b), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(benc_put_int(&b, i), 0);
    assert_int_equal(benc_put_end(&b), 0);
    fail_allocs_in = 2;
    assert_int_equal(benc_parse(&doc, b.data, b.len, NULL, 0, &off),
                     BENC_E_NOMEM);
    fail_allocs_in = 0;
    parse_ok(&doc, b.data, 0);
    assert_int_equal(doc.n_nodes, 201);
    benc_doc_release(&doc);
    buf_release(&b);
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = BENC_OK; e > BENC_E_MIN; e--) {
        const char *m = benc_strerror(e);
        assert_non_null(m);
        assert_string_not_equal(m, "unknown error");
        for (int f = BENC_OK; f > e; f--)
            assert_string_not_equal(m, benc_strerror(f));
    }
    assert_string_equal(benc_strerror(BENC_OK), "success");
    static const int bad[] = {BENC_E_MIN, BENC_E_MIN - 1, 1, 17, -100,
                              INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_string_equal(benc_strerror(bad[i]), "unknown error");
}

/* --- valid input --- */

static void
test_ints(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t v;
    } cases[] = {
        {"i0e", 0},
        {"i1e", 1},
        {"i-1e", -1},
        {"i10e", 10},
        {"i-10e", -10},
        {"i4294967296e", 4294967296LL},
        {"i9223372036854775807e", INT64_MAX},
        {"i-9223372036854775808e", INT64_MIN},
        {"i9223372036854775806e", INT64_MAX - 1},
        {"i-9223372036854775807e", INT64_MIN + 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct benc_doc doc;
        parse_ok(&doc, cases[i].in, BENC_STRICT_KEYS);
        assert_int_equal(doc.n_nodes, 1);
        assert_true(benc_is(&doc, 0, BENC_INT));
        assert_true(doc.nodes[0].u.i == cases[i].v);
        assert_int_equal(doc.len, strlen(cases[i].in));
        benc_doc_release(&doc);
    }
}

static void
test_strings(void **state)
{
    (void)state;
    struct benc_doc doc;
    size_t n = 99;

    parse_ok(&doc, "0:", BENC_STRICT_KEYS);
    assert_non_null(benc_str(&doc, 0, &n));
    assert_int_equal(n, 0);
    assert_true(benc_str_eq(&doc, 0, ""));
    assert_false(benc_str_eq(&doc, 0, "a"));
    benc_doc_release(&doc);

    static const uint8_t bin[] = "7:\0\xff\x01" "e:\n\0";
    uint8_t *in = dup_exact(bin, 9);
    assert_int_equal(parse_len(&doc, in, 9, NULL, 0, NULL), 0);
    const uint8_t *p = benc_str(&doc, 0, &n);
    assert_ptr_equal(p, in + 2);
    assert_int_equal(n, 7);
    assert_memory_equal(p, "\0\xff\x01" "e:\n\0", 7);
    assert_false(benc_str_eq(&doc, 0, "")); /* not cut at the NUL */
    assert_ptr_equal(benc_str(&doc, 0, NULL), p);
    benc_doc_release(&doc);
    free(in);

    /* A long string, two-digit and more length prefixes. */
    char big[1100];
    memcpy(big, "1093:", 5);
    memset(big + 5, 'x', 1093);
    in = dup_exact(big, 1098);
    assert_int_equal(parse_len(&doc, in, 1098, NULL, 0, NULL), 0);
    assert_non_null(benc_str(&doc, 0, &n));
    assert_int_equal(n, 1093);
    benc_doc_release(&doc);
    free(in);
}

static void
test_nested(void **state)
{
    (void)state;
    struct benc_doc doc;
    /*           0  1  2    3 4  5      6    7  8 9 10 */
    parse_ok(&doc, "ld1:ald1:bleeeei7elee", BENC_STRICT_KEYS);
    /* 0 l, 1 d, 2 "a", 3 l, 4 d, 5 "b", 6 l, 7 i7, 8 l */
    assert_int_equal(doc.n_nodes, 9);
    static const uint8_t types[] = {BENC_LIST, BENC_DICT, BENC_STR,
                                    BENC_LIST, BENC_DICT, BENC_STR,
                                    BENC_LIST, BENC_INT,  BENC_LIST};
    static const uint32_t next[] = {9, 7, 3, 7, 7, 6, 7, 8, 9};
    static const uint32_t count[] = {3, 1, 0, 1, 1, 0, 0, 0, 0};
    for (uint32_t i = 0; i < 9; i++) {
        assert_int_equal(doc.nodes[i].type, types[i]);
        assert_int_equal(doc.nodes[i].next, next[i]);
        if (types[i] == BENC_LIST || types[i] == BENC_DICT)
            assert_int_equal(doc.nodes[i].u.count, count[i]);
    }
    assert_int_equal(benc_first(&doc, 0), 1);
    assert_int_equal(benc_next(&doc, 0, 1), 7);
    assert_int_equal(benc_next(&doc, 0, 7), 8);
    assert_int_equal(benc_next(&doc, 0, 8), BENC_NONE);
    assert_int_equal(benc_first(&doc, 6), BENC_NONE); /* empty list */
    assert_int_equal(benc_first(&doc, 8), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, 1, "a"), 3);
    assert_int_equal(benc_dict_get_type(&doc, 4, "b", BENC_LIST), 6);
    benc_doc_release(&doc);

    parse_ok(&doc, "de", BENC_STRICT_KEYS);
    assert_int_equal(doc.n_nodes, 1);
    assert_int_equal(benc_first(&doc, 0), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, 0, ""), BENC_NONE);
    benc_doc_release(&doc);
}

/* A document nested n deep: n 'l' then n 'e'. */
static char *
nest(uint32_t n)
{
    char *s = malloc(2 * (size_t)n + 1);
    assert_non_null(s);
    memset(s, 'l', n);
    memset(s + n, 'e', n);
    s[2 * n] = '\0';
    return s;
}

static void
test_depth(void **state)
{
    (void)state;
    struct benc_doc doc;
    size_t off;

    for (uint32_t max = 1; max <= 5; max++) {
        struct benc_limits lim = {.max_input = 100, .max_depth = max,
                                  .max_nodes = 100};
        char *s = nest(max);
        assert_int_equal(parse_len(&doc, s, strlen(s), &lim, 0, &off), 0);
        assert_int_equal(doc.n_nodes, max);
        benc_doc_release(&doc);
        free(s);
        s = nest(max + 1);
        assert_int_equal(benc_parse(&doc, s, strlen(s), &lim, 0, &off),
                         BENC_E_DEPTH);
        assert_int_equal(off, max);
        free(s);
    }

    /* Default limit: 64 deep is fine, 65 is not; same inside a dict. */
    char *s = nest(benc_limits_default.max_depth);
    parse_ok(&doc, s, 0);
    benc_doc_release(&doc);
    free(s);
    s = nest(benc_limits_default.max_depth + 1);
    assert_int_equal(benc_parse(&doc, s, strlen(s), NULL, 0, &off),
                     BENC_E_DEPTH);
    assert_int_equal(off, benc_limits_default.max_depth);
    free(s);

    struct benc_limits lim = {.max_input = 100, .max_depth = 2,
                              .max_nodes = 100};
    assert_int_equal(parse_len(&doc, "d1:ald1:bi1eee", 14, &lim, 0, &off),
                     BENC_E_DEPTH);
    assert_int_equal(off, 5);
    assert_int_equal(parse_len(&doc, "d1:alee", 7, &lim, 0, &off), 0);
    benc_doc_release(&doc);

    /* max_depth 0: scalars only. */
    lim.max_depth = 0;
    assert_int_equal(parse_len(&doc, "i5e", 3, &lim, 0, &off), 0);
    benc_doc_release(&doc);
    assert_int_equal(parse_len(&doc, "le", 2, &lim, 0, &off), BENC_E_DEPTH);
    assert_int_equal(off, 0);
}

static void
test_node_limit(void **state)
{
    (void)state;
    struct benc_doc doc;
    size_t off;
    struct benc_limits lim = {.max_input = 100, .max_depth = 8,
                              .max_nodes = 3};

    assert_int_equal(parse_len(&doc, "li1ei2ee", 8, &lim, 0, &off), 0);
    assert_int_equal(doc.n_nodes, 3);
    benc_doc_release(&doc);
    assert_int_equal(parse_len(&doc, "li1ei2ei3ee", 11, &lim, 0, &off),
                     BENC_E_TOO_MANY_NODES);
    assert_int_equal(off, 7);
    assert_int_equal(parse_len(&doc, "d1:ad1:bi1eee", 13, &lim, 0, &off),
                     BENC_E_TOO_MANY_NODES);
    assert_int_equal(off, 5);

    lim.max_nodes = 1;
    assert_int_equal(parse_len(&doc, "4:spam", 6, &lim, 0, &off), 0);
    benc_doc_release(&doc);
    assert_int_equal(parse_len(&doc, "le", 2, &lim, 0, &off), 0);
    benc_doc_release(&doc);
    assert_int_equal(parse_len(&doc, "l0:e", 4, &lim, 0, &off),
                     BENC_E_TOO_MANY_NODES);
    assert_int_equal(off, 1);

    lim.max_nodes = 0;
    assert_int_equal(parse_len(&doc, "i1e", 3, &lim, 0, &off),
                     BENC_E_TOO_MANY_NODES);
    assert_int_equal(off, 0);

    /* More nodes than the array's first size (growth), exactly at the
     * limit and one past it. */
    struct buf b;
    buf_init(&b, SIZE_MAX);
    assert_int_equal(benc_put_list(&b), 0);
    for (int i = 0; i < 999; i++)
        assert_int_equal(benc_put_str(&b, "", 0), 0);
    assert_int_equal(benc_put_end(&b), 0);
    lim = (struct benc_limits){.max_input = 1u << 20, .max_depth = 2,
                               .max_nodes = 1000};
    assert_int_equal(parse_len(&doc, b.data, b.len, &lim, 0, &off), 0);
    assert_int_equal(doc.n_nodes, 1000);
    benc_doc_release(&doc);
    lim.max_nodes = 999;
    assert_int_equal(parse_len(&doc, b.data, b.len, &lim, 0, &off),
                     BENC_E_TOO_MANY_NODES);
    assert_int_equal(off, 1 + 2 * 998);
    buf_release(&b);
}

static void
test_input_limit(void **state)
{
    (void)state;
    struct benc_doc doc;
    size_t off;
    struct benc_limits lim = {.max_input = 6, .max_depth = 8,
                              .max_nodes = 10};

    assert_int_equal(parse_len(&doc, "4:spam", 6, &lim, 0, &off), 0);
    benc_doc_release(&doc);
    assert_int_equal(parse_len(&doc, "5:spams", 7, &lim, 0, &off),
                     BENC_E_TOO_LARGE);
    assert_int_equal(off, 6);
    /* The limit is on the input, also when trailing bytes are allowed. */
    assert_int_equal(parse_len(&doc, "i1e....", 7, &lim, BENC_ALLOW_TRAILING,
                               &off),
                     BENC_E_TOO_LARGE);
    assert_int_equal(off, 6);
    lim.max_input = 0;
    assert_int_equal(parse_len(&doc, "", 0, &lim, 0, &off), BENC_E_EMPTY);
    assert_int_equal(parse_len(&doc, "0:", 2, &lim, 0, &off),
                     BENC_E_TOO_LARGE);
    assert_int_equal(off, 0);

    /* Huge limits must not make the parser allocate by the limit. */
    lim = (struct benc_limits){.max_input = SIZE_MAX,
                               .max_depth = UINT32_MAX,
                               .max_nodes = UINT32_MAX};
    assert_int_equal(parse_len(&doc, "lli1eee", 7, &lim, 0, &off), 0);
    benc_doc_release(&doc);
}

/* The node array never outgrows what the input can hold (parse_len()
 * checks the bound), for the inputs that make the most nodes per byte. */
static void
test_node_memory(void **state)
{
    (void)state;
    struct benc_doc doc;
    size_t off;
    struct buf b;
    buf_init(&b, SIZE_MAX);

    /* a list of 1024 empty lists: 2 bytes per node, and one node past a
     * power of two (a doubling array would take twice the room) */
    assert_int_equal(benc_put_list(&b), 0);
    for (int i = 0; i < 1024; i++) {
        assert_int_equal(benc_put_list(&b), 0);
        assert_int_equal(benc_put_end(&b), 0);
    }
    assert_int_equal(benc_put_end(&b), 0);
    assert_int_equal(parse_len(&doc, b.data, b.len, NULL, 0, &off), 0);
    assert_int_equal(doc.n_nodes, 1025);
    benc_doc_release(&doc);

    /* 64 open lists, then empty strings, cut short */
    buf_reset(&b);
    for (int i = 0; i < 64; i++)
        assert_int_equal(benc_put_list(&b), 0);
    for (int i = 0; i < 500; i++)
        assert_int_equal(benc_put_str(&b, "", 0), 0);
    assert_int_equal(parse_len(&doc, b.data, b.len, NULL, 0, &off),
                     BENC_E_TRUNCATED);

    /* only open lists, with no depth limit to speak of: 1 byte per node */
    buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(benc_put_list(&b), 0);
    struct benc_limits lim = {.max_input = SIZE_MAX,
                              .max_depth = UINT32_MAX,
                              .max_nodes = UINT32_MAX};
    assert_int_equal(parse_len(&doc, b.data, b.len, &lim, 0, &off),
                     BENC_E_TRUNCATED);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(benc_put_end(&b), 0);
    assert_int_equal(parse_len(&doc, b.data, b.len, &lim, 0, &off), 0);
    assert_int_equal(doc.n_nodes, 1000);
    benc_doc_release(&doc);
    buf_release(&b);
}

static void
test_trailing(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        uint32_t nodes;
    } cases[] = {
        {"i1ei2e", 3, 1},
        {"i1e", 3, 1},
        {"4:spamxyz", 6, 1},
        {"lei", 2, 1},
        {"d1:ai1eeeeee", 8, 3},
        {"0:0:", 2, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct benc_doc doc;
        size_t len = strlen(cases[i].in);
        uint8_t *in = dup_exact(cases[i].in, len);
        assert_int_equal(parse_len(&doc, in, len, NULL, BENC_ALLOW_TRAILING,
                                   NULL),
                         0);
        assert_int_equal(doc.len, cases[i].len);
        assert_int_equal(doc.n_nodes, cases[i].nodes);
        size_t rn;
        assert_ptr_equal(benc_raw(&doc, 0, &rn), in);
        assert_int_equal(rn, cases[i].len);
        benc_doc_release(&doc);
        size_t off;
        int want = len == cases[i].len ? 0 : BENC_E_TRAILING;
        assert_int_equal(benc_parse(&doc, in, len, NULL, 0, &off), want);
        if (want)
            assert_int_equal(off, cases[i].len);
        else
            benc_doc_release(&doc);
        free(in);
    }
}

static void
test_keys(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        unsigned quirks;
        int strict_err;
        size_t strict_off;
    } cases[] = {
        {"d1:ai1e1:bi2ee", 0, 0, 0},
        {"d1:ai1e2:aai2e1:bi3ee", 0, 0, 0},     /* prefix sorts first */
        {"d2:abi1e1:bi2ee", 0, 0, 0},
        {"d0:i1e1:\x7fi2e1:\x80i3e1:\xffi4ee", 0, 0, 0}, /* unsigned */
        {"d1:bi1e1:ai2ee", BENC_Q_UNSORTED_KEYS, BENC_E_KEY_ORDER, 7},
        {"d1:ai1e1:ai2ee", BENC_Q_DUPLICATE_KEYS, BENC_E_KEY_DUPLICATE, 7},
        /* a non-adjacent duplicate in an unsorted dict */
        {"d1:ai1e1:ci2e1:bi3e1:ai4ee",
         BENC_Q_UNSORTED_KEYS | BENC_Q_DUPLICATE_KEYS, BENC_E_KEY_ORDER, 13},
        {"d1:bi1e1:ai2e1:bi3ee", BENC_Q_UNSORTED_KEYS | BENC_Q_DUPLICATE_KEYS,
         BENC_E_KEY_ORDER, 7},
        /* unsorted, but no key twice */
        {"d1:ci1e1:ai2e1:bi3ee", BENC_Q_UNSORTED_KEYS, BENC_E_KEY_ORDER, 7},
        /* quirks of an inner dict reach the document */
        {"ld1:bi1e1:ai2eed1:ai1eee", BENC_Q_UNSORTED_KEYS, BENC_E_KEY_ORDER,
         8},
        /* equal keys in different dicts are no duplicates */
        {"d1:ad1:ai1ee1:bd1:ai1eee", 0, 0, 0},
        {"ld1:ai1eed1:ai1eee", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct benc_doc doc;
        size_t off = SIZE_MAX;
        const char *s = cases[i].in;
        parse_ok(&doc, s, 0);
        if (doc.quirks != cases[i].quirks)
            fail_msg("case %zu: quirks %u, want %u", i, doc.quirks,
                     cases[i].quirks);
        benc_doc_release(&doc);
        int r = parse_len(&doc, s, strlen(s), NULL, BENC_STRICT_KEYS, &off);
        if (r != cases[i].strict_err ||
            (r && off != cases[i].strict_off))
            fail_msg("case %zu strict: %d at %zu, want %d at %zu", i, r, off,
                     cases[i].strict_err, cases[i].strict_off);
        if (r == 0) {
            assert_int_equal(doc.quirks, 0);
            benc_doc_release(&doc);
        }
    }

    /* The first of repeated keys wins, also non-adjacent. */
    struct benc_doc doc;
    parse_ok(&doc, "d1:ai1e1:ci2e1:bi3e1:ai4e1:ci5ee", 0);
    uint32_t v = benc_dict_get(&doc, 0, "a");
    assert_true(benc_is(&doc, v, BENC_INT) && doc.nodes[v].u.i == 1);
    v = benc_dict_get(&doc, 0, "c");
    assert_true(benc_is(&doc, v, BENC_INT) && doc.nodes[v].u.i == 2);
    v = benc_dict_get(&doc, 0, "b");
    assert_true(benc_is(&doc, v, BENC_INT) && doc.nodes[v].u.i == 3);
    assert_int_equal(benc_dict_get(&doc, 0, "d"), BENC_NONE);
    benc_doc_release(&doc);

    /* A value equal to a key is not found as a key. */
    parse_ok(&doc, "d1:a1:b1:ci1ee", BENC_STRICT_KEYS);
    assert_int_equal(benc_dict_get(&doc, 0, "b"), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, 0, "c"), 4);
    benc_doc_release(&doc);

    /* Many keys in reverse order, one repeated far apart. */
    struct buf b;
    buf_init(&b, SIZE_MAX);
    assert_int_equal(benc_put_dict(&b), 0);
    for (int k = 300; k > 0; k--) {
        char key[8];
        int n = snprintf(key, sizeof(key), "%03d", k == 7 ? 250 : k);
        assert_int_equal(benc_put_str(&b, key, (size_t)n), 0);
        assert_int_equal(benc_put_int(&b, k), 0);
    }
    assert_int_equal(benc_put_end(&b), 0);
    assert_int_equal(parse_len(&doc, b.data, b.len, NULL, 0, NULL), 0);
    assert_int_equal(doc.quirks,
                     BENC_Q_UNSORTED_KEYS | BENC_Q_DUPLICATE_KEYS);
    v = benc_dict_get(&doc, 0, "250");
    assert_true(benc_is(&doc, v, BENC_INT) && doc.nodes[v].u.i == 250);
    benc_doc_release(&doc);
    buf_release(&b);
}

static void
test_raw_info(void **state)
{
    (void)state;
    static const char info[] =
        "d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:"
        "aaaaaaaaaabbbbbbbbbbe";
    static const char pre[] = "d8:announce9:127.0.0.14:info";
    static const char post[] = "e";
    char s[256];
    int n = snprintf(s, sizeof(s), "%s%s%s", pre, info, post);
    assert_true(n > 0 && (size_t)n < sizeof(s));

    struct benc_doc doc;
    parse_ok(&doc, s, BENC_STRICT_KEYS);
    uint32_t i = benc_dict_get_type(&doc, 0, "info", BENC_DICT);
    assert_int_not_equal(i, BENC_NONE);
    size_t rn;
    const uint8_t *raw = benc_raw(&doc, i, &rn);
    assert_ptr_equal(raw, (const uint8_t *)s + strlen(pre));
    assert_int_equal(rn, strlen(info));
    assert_memory_equal(raw, info, rn);
    assert_int_equal(doc.nodes[i].start, strlen(pre));
    assert_int_equal(doc.nodes[i].end, strlen(pre) + strlen(info));

    uint32_t p = benc_dict_get_type(&doc, i, "pieces", BENC_STR);
    raw = benc_raw(&doc, p, &rn);
    assert_int_equal(rn, 23);
    assert_memory_equal(raw, "20:aaaaaaaaaabbbbbbbbbb", 23);
    size_t sn;
    assert_ptr_equal(benc_str(&doc, p, &sn), raw + 3);
    assert_int_equal(sn, 20);
    uint32_t l = benc_dict_get_type(&doc, i, "piece length", BENC_INT);
    raw = benc_raw(&doc, l, &rn);
    assert_int_equal(rn, 7);
    assert_memory_equal(raw, "i16384e", 7);
    /* The root's raw bytes are the whole input. */
    raw = benc_raw(&doc, 0, &rn);
    assert_ptr_equal(raw, s);
    assert_int_equal(rn, (size_t)n);

    /* benc_put_raw copies a node verbatim. */
    struct buf b;
    buf_init(&b, 1024);
    assert_int_equal(benc_put_raw(&b, &doc, i), 0);
    assert_int_equal(b.len, strlen(info));
    assert_memory_equal(b.data, info, b.len);
    assert_int_equal(benc_put_raw(&b, &doc, doc.n_nodes), -EINVAL);
    assert_int_equal(benc_put_raw(&b, &doc, BENC_NONE), -EINVAL);
    assert_int_equal(b.len, strlen(info));
    buf_release(&b);
    buf_init(&b, 10);
    assert_int_equal(benc_put_raw(&b, &doc, i), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    buf_release(&b);
    benc_doc_release(&doc);
}

static void
test_wrong_types(void **state)
{
    (void)state;
    struct benc_doc doc;
    /* 0 d, 1 "i", 2 i1, 3 "l", 4 l, 5 "s", 6 "x" */
    parse_ok(&doc, "d1:ii1e1:lle1:s1:xe", BENC_STRICT_KEYS);
    uint32_t iv = benc_dict_get(&doc, 0, "i");
    uint32_t lv = benc_dict_get(&doc, 0, "l");
    uint32_t sv = benc_dict_get(&doc, 0, "s");
    assert_int_equal(iv, 2);
    assert_int_equal(lv, 4);
    assert_int_equal(sv, 6);
    size_t n = 77;

    /* benc_str on non-strings and out of range, ret_len untouched */
    assert_null(benc_str(&doc, iv, &n));
    assert_null(benc_str(&doc, lv, &n));
    assert_null(benc_str(&doc, 0, &n));
    assert_null(benc_str(&doc, doc.n_nodes, &n));
    assert_null(benc_str(&doc, BENC_NONE, &n));
    assert_int_equal(n, 77);
    assert_false(benc_str_eq(&doc, iv, "i1e"));
    assert_false(benc_str_eq(&doc, BENC_NONE, ""));
    assert_true(benc_str_eq(&doc, sv, "x"));

    /* dict lookups on non-dicts */
    assert_int_equal(benc_dict_get(&doc, iv, "i"), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, lv, "i"), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, sv, "x"), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, BENC_NONE, "i"), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, 0, "x"), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, 0, ""), BENC_NONE);
    assert_int_equal(benc_dict_get(&doc, 0, "ii"), BENC_NONE);
    assert_int_equal(benc_dict_get_type(&doc, 0, "i", BENC_STR), BENC_NONE);
    assert_int_equal(benc_dict_get_type(&doc, 0, "i", BENC_INT), iv);
    assert_int_equal(benc_dict_get_type(&doc, 0, "l", BENC_DICT),
                     BENC_NONE);
    assert_int_equal(benc_dict_get_type(&doc, 0, "s", BENC_STR), sv);
    assert_int_equal(benc_dict_get_type(&doc, 0, "z", BENC_STR), BENC_NONE);

    /* iteration on scalars and out of range */
    assert_int_equal(benc_first(&doc, iv), BENC_NONE);
    assert_int_equal(benc_first(&doc, sv), BENC_NONE);
    assert_int_equal(benc_first(&doc, lv), BENC_NONE); /* empty */
    assert_int_equal(benc_first(&doc, BENC_NONE), BENC_NONE);
    assert_int_equal(benc_next(&doc, iv, iv), BENC_NONE);
    assert_int_equal(benc_next(&doc, 0, 0), BENC_NONE);
    assert_int_equal(benc_next(&doc, 0, doc.n_nodes), BENC_NONE);
    assert_int_equal(benc_next(&doc, 0, BENC_NONE), BENC_NONE);
    assert_int_equal(benc_next(&doc, BENC_NONE, 1), BENC_NONE);
    assert_int_equal(benc_next(&doc, 0, 6), BENC_NONE); /* last child */
    assert_int_equal(benc_next(&doc, lv, 5), BENC_NONE); /* not inside */

    /* type predicates */
    assert_true(benc_is(&doc, 0, BENC_DICT));
    assert_false(benc_is(&doc, 0, BENC_LIST));
    assert_false(benc_is(&doc, doc.n_nodes, BENC_INT));
    assert_false(benc_is(&doc, BENC_NONE, BENC_DICT));
    assert_null(benc_node(&doc, doc.n_nodes));
    assert_null(benc_node(&doc, BENC_NONE));
    assert_null(benc_raw(&doc, doc.n_nodes, &n));
    assert_null(benc_raw(&doc, BENC_NONE, NULL));
    assert_int_equal(n, 77);

    benc_doc_release(&doc);
    /* A released or zeroed doc: every accessor says "none". */
    assert_null(doc.nodes);
    assert_int_equal(doc.n_nodes, 0);
    assert_false(benc_is(&doc, 0, BENC_DICT));
    assert_int_equal(benc_dict_get(&doc, 0, "i"), BENC_NONE);
    assert_int_equal(benc_first(&doc, 0), BENC_NONE);
    assert_null(benc_raw(&doc, 0, NULL));
    benc_doc_release(&doc);
    benc_doc_release(NULL);
}

/* --- encoder --- */

static void
test_encoder(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4096);

    static const struct {
        int64_t v;
        const char *out;
    } ints[] = {
        {0, "i0e"},
        {-1, "i-1e"},
        {42, "i42e"},
        {INT64_MAX, "i9223372036854775807e"},
        {INT64_MIN, "i-9223372036854775808e"},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        buf_reset(&b);
        assert_int_equal(benc_put_int(&b, ints[i].v), 0);
        assert_string_equal(b.data, ints[i].out);
    }

    buf_reset(&b);
    assert_int_equal(benc_put_str(&b, "", 0), 0);
    assert_int_equal(benc_put_str(&b, NULL, 0), 0);
    assert_int_equal(benc_put_str(&b, "a\0b", 3), 0);
    assert_int_equal(benc_put_cstr(&b, "spam"), 0);
    assert_int_equal(benc_put_cstr(&b, ""), 0);
    assert_int_equal(b.len, 2 + 2 + 5 + 6 + 2);
    assert_memory_equal(b.data, "0:0:3:a\0b4:spam0:", b.len);
    assert_int_equal(b.data[b.len], '\0');

    char big[1000];
    memset(big, 'z', sizeof(big));
    buf_reset(&b);
    assert_int_equal(benc_put_str(&b, big, sizeof(big)), 0);
    assert_int_equal(b.len, 1005);
    assert_memory_equal(b.data, "1000:zz", 7);

    buf_reset(&b);
    assert_int_equal(benc_put_dict(&b), 0);
    assert_int_equal(benc_put_cstr(&b, "a"), 0);
    assert_int_equal(benc_put_list(&b), 0);
    assert_int_equal(benc_put_int(&b, 1), 0);
    assert_int_equal(benc_put_end(&b), 0);
    assert_int_equal(benc_put_cstr(&b, "b"), 0);
    assert_int_equal(benc_put_dict(&b), 0);
    assert_int_equal(benc_put_end(&b), 0);
    assert_int_equal(benc_put_end(&b), 0);
    assert_string_equal(b.data, "d1:ali1ee1:bdee");
    struct benc_doc doc;
    parse_ok(&doc, b.data, BENC_STRICT_KEYS);
    benc_doc_release(&doc);
    buf_release(&b);
}

/* Every put function at a cap: exactly filling it works; one byte short
 * fails with -EMSGSIZE and leaves the buffer as it was, NUL-terminated. */
static void
test_encoder_cap(void **state)
{
    (void)state;
    enum { P_INT, P_STR, P_CSTR, P_LIST, P_DICT, P_END };
    static const struct {
        int op;
        int64_t v;
        const char *s;
        size_t n;
        const char *out;
    } cases[] = {
        {P_INT, INT64_MIN, NULL, 0, "i-9223372036854775808e"},
        {P_INT, 7, NULL, 0, "i7e"},
        {P_STR, 0, "abc", 3, "3:abc"},
        {P_STR, 0, "", 0, "0:"},
        {P_STR, 0, "0123456789", 10, "10:0123456789"},
        {P_CSTR, 0, "spam", 0, "4:spam"},
        {P_LIST, 0, NULL, 0, "l"},
        {P_DICT, 0, NULL, 0, "d"},
        {P_END, 0, NULL, 0, "e"},
    };
    static const char prefix[] = "xyz";

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t want = strlen(cases[i].out);
        for (size_t cap = 3; cap <= 3 + want; cap++) {
            struct buf b;
            buf_init(&b, cap);
            assert_int_equal(buf_puts(&b, prefix), 0);
            int r = -1;
            switch (cases[i].op) {
            case P_INT:
                r = benc_put_int(&b, cases[i].v);
                break;
            case P_STR:
                r = benc_put_str(&b, cases[i].s, cases[i].n);
                break;
            case P_CSTR:
                r = benc_put_cstr(&b, cases[i].s);
                break;
            case P_LIST:
                r = benc_put_list(&b);
                break;
            case P_DICT:
                r = benc_put_dict(&b);
                break;
            case P_END:
                r = benc_put_end(&b);
                break;
            }
            if (cap == 3 + want) {
                assert_int_equal(r, 0);
                assert_int_equal(b.len, cap);
                assert_memory_equal(b.data + 3, cases[i].out, want);
            } else {
                if (r != -EMSGSIZE)
                    fail_msg("case %zu cap %zu: %d", i, cap, r);
                assert_int_equal(b.len, 3);
                assert_string_equal(b.data, prefix);
            }
            assert_true(b.size <= cap + 1);
            buf_release(&b);
        }
    }
}

/* --- truncation and bit flips over valid documents --- */

#define DOC(s) {s, sizeof(s) - 1}
static const struct {
    const char *in;
    size_t len;
} valid_docs[] = {
    DOC("d8:announce21:http://127.0.0.1:80/a7:comment3:hey13:creation date"
        "i1700000000e4:infod5:filesld6:lengthi1024e4:pathl1:a5:b.bineed"
        "6:lengthi0e4:pathl1:ceee4:name4:demo12:piece lengthi16384e"
        "6:pieces20:\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c"
        "\x0d\x0e\x0f\x10\x11\x12\x13\x14" "ee"),
    DOC("d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e"
        "1:q9:find_node1:t2:aa1:y1:qe"),
    DOC("li0ei-1ei9223372036854775807ei-9223372036854775808ei42ee"),
    DOC("l0:1:\0" "3:\xff\xfe\xfd" "4:spamlelledeedee"),
    DOC("ld1:ald1:bllleeeeeei-12e10:0123456789e"),
    DOC("i-9223372036854775808e"),
    DOC("12:hello world!"),
    DOC("de"),
};

static size_t
valid_len(size_t i)
{
    return valid_docs[i].len;
}

static void
test_valid_docs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        size_t len = valid_len(i);
        uint8_t *in = dup_exact(valid_docs[i].in, len);
        struct benc_doc doc;
        size_t off = 0;
        int r = parse_len(&doc, in, len, NULL, BENC_STRICT_KEYS, &off);
        if (r)
            fail_msg("doc %zu: %s at %zu", i, benc_strerror(r), off);
        assert_int_equal(doc.len, len);
        assert_int_equal(doc.quirks, 0);
        benc_doc_release(&doc);
        free(in);
    }
}

static void
test_truncation(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        size_t full = valid_len(i);
        for (size_t len = 0; len < full; len++) {
            for (unsigned f = 0; f < 4; f++) {
                unsigned flags = (f & 1 ? BENC_STRICT_KEYS : 0) |
                                 (f & 2 ? BENC_ALLOW_TRAILING : 0);
                uint8_t *in = dup_exact(valid_docs[i].in, len);
                struct benc_doc doc;
                size_t off = SIZE_MAX;
                int r = parse_len(&doc, in, len, NULL, flags, &off);
                /* A cut document can only be short of bytes. */
                if (len == 0 ? r != BENC_E_EMPTY
                             : r != BENC_E_TRUNCATED &&
                                   r != BENC_E_STR_TOO_LONG)
                    fail_msg("doc %zu cut at %zu flags %u: %d (%s) at %zu",
                             i, len, flags, r, benc_strerror(r), off);
                if (r == BENC_E_TRUNCATED)
                    assert_int_equal(off, len);
                assert_true(off <= len);
                free(in);
            }
        }
    }
}

/* Flip each bit of each valid document, and set each byte to each byte
 * that means something to the parser: never a crash, never an error
 * outside the enum; whatever parses passes check_doc(). */
static void
try_mutant(const uint8_t *m, size_t len)
{
    static const unsigned flagsets[] = {0, BENC_STRICT_KEYS,
                                        BENC_ALLOW_TRAILING};
    for (size_t f = 0; f < 3; f++) {
        uint8_t *in = dup_exact(m, len);
        struct benc_doc doc;
        size_t off = SIZE_MAX;
        int r = parse_len(&doc, in, len, NULL, flagsets[f], &off);
        if (r == 0) {
            if (flagsets[f] == BENC_STRICT_KEYS)
                assert_int_equal(doc.quirks, 0);
            benc_doc_release(&doc);
        } else {
            assert_true(r < 0 && r > BENC_E_MIN && r != BENC_E_NOMEM);
            assert_true(off <= len);
        }
        free(in);
    }
}

static void
test_bitflip(void **state)
{
    (void)state;
    static const uint8_t special[] = {'i', 'l', 'd', 'e', ':', '-', '0',
                                      '1', '9', 'x', 0x00, 0xff};
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        size_t len = valid_len(i);
        uint8_t *m = dup_exact(valid_docs[i].in, len);
        for (size_t pos = 0; pos < len; pos++) {
            uint8_t orig = m[pos];
            for (int bit = 0; bit < 8; bit++) {
                m[pos] = (uint8_t)(orig ^ (1u << bit));
                try_mutant(m, len);
            }
            for (size_t k = 0; k < sizeof(special); k++) {
                m[pos] = special[k];
                try_mutant(m, len);
            }
            m[pos] = orig;
            /* and with the byte removed */
            uint8_t *cut = dup_exact(m, len);
            memmove(cut + pos, cut + pos + 1, len - pos - 1);
            try_mutant(cut, len - 1);
            free(cut);
        }
        free(m);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_nomem),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_ints),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_node_limit),
        cmocka_unit_test(test_input_limit),
        cmocka_unit_test(test_node_memory),
        cmocka_unit_test(test_trailing),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_raw_info),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_encoder_cap),
        cmocka_unit_test(test_valid_docs),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bitflip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
