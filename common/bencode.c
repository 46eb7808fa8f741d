/* bencode — strict BEP 3 decoder and a small encoder.
 *
 * The decoder is iterative: an explicit stack bounded by max_depth holds the
 * open containers, so hostile nesting can never overflow the C stack.
 */
#include "common/bencode.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

const struct benc_limits benc_limits_default = {
    .max_input = 16u << 20,
    .max_depth = 64,
    .max_nodes = 1u << 20,
};

/* Offsets are uint32_t; the input may never reach that far. */
#define BENC_INPUT_HARD_MAX ((size_t)UINT32_MAX - 1)

struct frame {
    uint32_t node;     /* the open container */
    uint32_t last_key; /* previous key in a dictionary, or BENC_NONE */
    bool want_key;     /* a dictionary expects a key next */
    bool unsorted;     /* some key was out of order */
};

struct parser {
    const uint8_t *p;
    size_t len;
    size_t pos;
    const struct benc_limits *lim;
    unsigned flags;
    struct benc_node *nodes;
    uint32_t n, size;
    uint32_t most;   /* the most nodes the input can make (see parse()) */
    unsigned quirks;
};

static const char *const benc_errors[] = {
    [-BENC_OK] = "success",
    [-BENC_E_EMPTY] = "empty input",
    [-BENC_E_TRUNCATED] = "input ends inside a value",
    [-BENC_E_SYNTAX] = "unexpected byte where a value should start",
    [-BENC_E_INT_EMPTY] = "integer without digits",
    [-BENC_E_INT_LEADING_ZERO] = "integer with a leading zero",
    [-BENC_E_INT_NEGATIVE_ZERO] = "integer \"-0\"",
    [-BENC_E_INT_RANGE] = "integer out of the 64-bit range",
    [-BENC_E_INT_SYNTAX] = "non-digit inside an integer",
    [-BENC_E_STR_LENGTH] = "malformed string length",
    [-BENC_E_STR_TOO_LONG] = "string runs past the end of the input",
    [-BENC_E_KEY_NOT_STRING] = "dictionary key is not a string",
    [-BENC_E_KEY_ORDER] = "dictionary keys are not sorted",
    [-BENC_E_KEY_DUPLICATE] = "dictionary key appears twice",
    [-BENC_E_DEPTH] = "values nested too deeply",
    [-BENC_E_TOO_MANY_NODES] = "too many values",
    [-BENC_E_TOO_LARGE] = "input too large",
    [-BENC_E_TRAILING] = "data after the end of the value",
    [-BENC_E_NOMEM] = "out of memory",
};

const char *
benc_strerror(int err)
{
    if (err > 0 || err <= BENC_E_MIN)
        return "unknown error";
    return benc_errors[-err];
}

static int
new_node(struct parser *ps, uint8_t type, uint32_t *ret_idx)
{
    if (ps->n >= ps->lim->max_nodes)
        return BENC_E_TOO_MANY_NODES;
    if (ps->n == ps->size) {
        uint32_t size = ps->size ? ps->size * 2 : 64;
        if (size < ps->size)
            size = UINT32_MAX;
        if (size > ps->most)
            size = ps->most;
        if (size > ps->lim->max_nodes)
            size = ps->lim->max_nodes;
        assert(size > ps->n); /* ps->most is a true bound */
        if (size <= ps->n)
            return BENC_E_TOO_MANY_NODES;
        struct benc_node *nodes = reallocarray(ps->nodes, size,
                                               sizeof(*nodes));
        if (!nodes)
            return BENC_E_NOMEM;
        ps->nodes = nodes;
        ps->size = size;
    }
    struct benc_node *nd = &ps->nodes[ps->n];
    memset(nd, 0, sizeof(*nd));
    nd->type = type;
    nd->start = (uint32_t)ps->pos;
    *ret_idx = ps->n++;
    return 0;
}

static bool
is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* At 'i'.  On success pos is past the 'e'. */
static int
parse_int(struct parser *ps, int64_t *ret)
{
    size_t pos = ps->pos + 1;
    bool neg = false;

    if (pos < ps->len && ps->p[pos] == '-') {
        neg = true;
        pos++;
    }
    if (pos >= ps->len)
        goto truncated;
    if (ps->p[pos] == 'e') {
        ps->pos = pos;
        return BENC_E_INT_EMPTY;
    }
    if (!is_digit(ps->p[pos])) {
        ps->pos = pos;
        return BENC_E_INT_SYNTAX;
    }
    /* "-0..." can never become valid, whatever follows or if nothing
     * does; "0" may only be followed by 'e' (a non-digit other than 'e'
     * is left to the loop, which reports it as a syntax error). */
    if (ps->p[pos] == '0' && neg) {
        ps->pos = pos;
        return BENC_E_INT_NEGATIVE_ZERO;
    }
    if (ps->p[pos] == '0' && pos + 1 < ps->len && is_digit(ps->p[pos + 1])) {
        ps->pos = pos;
        return BENC_E_INT_LEADING_ZERO;
    }

    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; pos < ps->len && ps->p[pos] != 'e'; pos++) {
        uint8_t c = ps->p[pos];
        if (!is_digit(c)) {
            ps->pos = pos;
            return BENC_E_INT_SYNTAX;
        }
        unsigned d = (unsigned)(c - '0');
        if (v > (limit - d) / 10) {
            ps->pos = pos;
            return BENC_E_INT_RANGE;
        }
        v = v * 10 + d;
    }
    if (pos >= ps->len)
        goto truncated;
    ps->pos = pos + 1;
    if (neg)
        *ret = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *ret = (int64_t)v;
    return 0;

truncated:
    ps->pos = ps->len;
    return BENC_E_TRUNCATED;
}

/* At a digit.  On success pos is past the string's bytes. */
static int
parse_str(struct parser *ps, uint32_t *ret_off, uint32_t *ret_len)
{
    size_t pos = ps->pos;
    uint64_t n = 0;

    if (ps->p[pos] == '0' && pos + 1 < ps->len && ps->p[pos + 1] != ':') {
        ps->pos = pos;
        return BENC_E_STR_LENGTH;
    }
    for (; pos < ps->len && ps->p[pos] != ':'; pos++) {
        if (!is_digit(ps->p[pos])) {
            ps->pos = pos;
            return BENC_E_STR_LENGTH;
        }
        n = n * 10 + (unsigned)(ps->p[pos] - '0');
        if (n > BENC_INPUT_HARD_MAX) {
            ps->pos = pos;
            return BENC_E_STR_TOO_LONG;
        }
    }
    if (pos >= ps->len) {
        ps->pos = ps->len;
        return BENC_E_TRUNCATED;
    }
    pos++; /* ':' */
    if (n > ps->len - pos) {
        ps->pos = pos;
        return BENC_E_STR_TOO_LONG;
    }
    *ret_off = (uint32_t)pos;
    *ret_len = (uint32_t)n;
    ps->pos = pos + (size_t)n;
    return 0;
}

static int
key_cmp(const struct parser *ps, uint32_t a, uint32_t b)
{
    const struct benc_node *x = &ps->nodes[a], *y = &ps->nodes[b];
    size_t n = x->u.s.len < y->u.s.len ? x->u.s.len : y->u.s.len;
    int c = memcmp(ps->p + x->u.s.off, ps->p + y->u.s.off, n);
    if (c)
        return c;
    return x->u.s.len < y->u.s.len ? -1 : x->u.s.len > y->u.s.len;
}

/* qsort() has no context argument; the parser rides in a thread-local. */
static __thread const struct parser *tl_sort_ps;

static int
key_cmp_qsort(const void *a, const void *b)
{
    return key_cmp(tl_sort_ps, *(const uint32_t *)a, *(const uint32_t *)b);
}

/* A dictionary whose keys were out of order: look for repeats by sorting
 * its key indices.  Runs once per such dictionary, O(k log k). */
static int
find_duplicate_key(struct parser *ps, uint32_t dict)
{
    const struct benc_node *d = &ps->nodes[dict];
    uint32_t *keys = calloc(d->u.count, sizeof(*keys));
    if (!keys)
        return BENC_E_NOMEM;
    uint32_t k = 0;
    for (uint32_t c = dict + 1; c < d->next && k < d->u.count; k++) {
        keys[k] = c;
        c = ps->nodes[c].next;        /* the value */
        c = ps->nodes[c].next;        /* the next key */
    }
    tl_sort_ps = ps;
    qsort(keys, k, sizeof(*keys), key_cmp_qsort);
    tl_sort_ps = NULL;
    bool dup = false;
    for (uint32_t i = 1; i < k && !dup; i++)
        dup = key_cmp(ps, keys[i - 1], keys[i]) == 0;
    free(keys);
    return dup;
}

static int
parse(struct parser *ps)
{
    struct frame *stack = NULL;
    uint32_t depth = 0;
    int r;

    /* Each open container took one input byte, so the stack never needs
     * more frames than the input has bytes, whatever max_depth says. */
    size_t frames = ps->lim->max_depth < ps->len ? ps->lim->max_depth
                                                 : ps->len;
    stack = calloc(frames ? frames : 1, sizeof(*stack));
    if (!stack)
        return BENC_E_NOMEM;
    /* A finished value owns at least two bytes of its own ("0:", "le";
     * a container's 'l' and 'e' are not its children's), an open container
     * at least one, and at most 'frames' are open: so the node array never
     * needs more than (len + frames) / 2 + 1 entries, about 12 bytes per
     * input byte, however the array grows. */
    ps->most = (uint32_t)((ps->len + frames) / 2 + 1);

    for (;;) {
        struct frame *top = depth ? &stack[depth - 1] : NULL;

        if (ps->pos >= ps->len) {
            r = ps->pos == 0 ? BENC_E_EMPTY : BENC_E_TRUNCATED;
            goto out;
        }
        uint8_t c = ps->p[ps->pos];

        if (top && c == 'e') {
            struct benc_node *nd = &ps->nodes[top->node];
            if (nd->type == BENC_DICT && !top->want_key) {
                r = BENC_E_SYNTAX; /* a key without its value */
                goto out;
            }
            nd->next = ps->n;
            if (top->unsorted) {
                r = find_duplicate_key(ps, top->node);
                if (r < 0)
                    goto out;
                if (r > 0) {
                    if (ps->flags & BENC_STRICT_KEYS) {
                        r = BENC_E_KEY_DUPLICATE;
                        goto out;
                    }
                    ps->quirks |= BENC_Q_DUPLICATE_KEYS;
                }
            }
            ps->pos++;
            nd->end = (uint32_t)ps->pos;
            depth--;
            if (depth == 0)
                break;
            continue;
        }

        bool is_key = top && ps->nodes[top->node].type == BENC_DICT &&
                      top->want_key;
        if (is_key && !is_digit(c)) {
            r = BENC_E_KEY_NOT_STRING;
            goto out;
        }

        uint32_t idx;
        bool opened = false;
        switch (c) {
        case 'i':
            r = new_node(ps, BENC_INT, &idx);
            if (r < 0)
                goto out;
            r = parse_int(ps, &ps->nodes[idx].u.i);
            if (r < 0)
                goto out;
            break;
        case 'l':
        case 'd':
            if (depth >= ps->lim->max_depth) {
                r = BENC_E_DEPTH;
                goto out;
            }
            r = new_node(ps, c == 'l' ? BENC_LIST : BENC_DICT, &idx);
            if (r < 0)
                goto out;
            ps->pos++;
            opened = true;
            break;
        default:
            if (!is_digit(c)) {
                r = BENC_E_SYNTAX;
                goto out;
            }
            r = new_node(ps, BENC_STR, &idx);
            if (r < 0)
                goto out;
            r = parse_str(ps, &ps->nodes[idx].u.s.off,
                          &ps->nodes[idx].u.s.len);
            if (r < 0)
                goto out;
            break;
        }

        if (top) {
            struct benc_node *parent = &ps->nodes[top->node];
            if (parent->type == BENC_LIST) {
                parent->u.count++;
            } else if (is_key) {
                if (top->last_key != BENC_NONE) {
                    int cmp = key_cmp(ps, top->last_key, idx);
                    if (cmp == 0) {
                        if (ps->flags & BENC_STRICT_KEYS) {
                            ps->pos = ps->nodes[idx].start;
                            r = BENC_E_KEY_DUPLICATE;
                            goto out;
                        }
                        ps->quirks |= BENC_Q_DUPLICATE_KEYS;
                    } else if (cmp > 0) {
                        if (ps->flags & BENC_STRICT_KEYS) {
                            ps->pos = ps->nodes[idx].start;
                            r = BENC_E_KEY_ORDER;
                            goto out;
                        }
                        ps->quirks |= BENC_Q_UNSORTED_KEYS;
                        top->unsorted = true;
                    }
                }
                top->last_key = idx;
                top->want_key = false;
            } else {
                parent->u.count++;
                top->want_key = true;
            }
        }

        if (opened) {
            stack[depth++] = (struct frame){
                .node = idx,
                .last_key = BENC_NONE,
                .want_key = c == 'd',
            };
            continue;
        }
        ps->nodes[idx].end = (uint32_t)ps->pos;
        ps->nodes[idx].next = ps->n;
        if (depth == 0)
            break;
    }

    if (ps->pos != ps->len && !(ps->flags & BENC_ALLOW_TRAILING))
        r = BENC_E_TRAILING;
    else
        r = 0;
out:
    free(stack);
    return r;
}

int
benc_parse(struct benc_doc *ret_doc, const void *buf, size_t len,
           const struct benc_limits *lim, unsigned flags,
           size_t *reterr_offset)
{
    struct parser ps = {
        .p = buf,
        .len = len,
        .lim = lim ? lim : &benc_limits_default,
        .flags = flags,
    };
    int r;

    if (len > ps.lim->max_input || len > BENC_INPUT_HARD_MAX) {
        r = BENC_E_TOO_LARGE;
        ps.pos = ps.lim->max_input < len ? ps.lim->max_input : len;
    } else {
        r = parse(&ps);
    }
    if (r < 0) {
        free(ps.nodes);
        if (reterr_offset)
            *reterr_offset = ps.pos;
        return r;
    }
    *ret_doc = (struct benc_doc){
        .buf = buf,
        .len = ps.pos,
        .nodes = ps.nodes,
        .n_nodes = ps.n,
        .quirks = ps.quirks,
    };
    return 0;
}

void
benc_doc_release(struct benc_doc *doc)
{
    if (!doc)
        return;
    free(doc->nodes);
    memset(doc, 0, sizeof(*doc));
}

bool
benc_is(const struct benc_doc *doc, uint32_t idx, enum benc_type type)
{
    const struct benc_node *nd = benc_node(doc, idx);
    return nd && nd->type == type;
}

uint32_t
benc_first(const struct benc_doc *doc, uint32_t container)
{
    const struct benc_node *nd = benc_node(doc, container);
    if (!nd || (nd->type != BENC_LIST && nd->type != BENC_DICT))
        return BENC_NONE;
    return container + 1 < nd->next ? container + 1 : BENC_NONE;
}

uint32_t
benc_next(const struct benc_doc *doc, uint32_t container, uint32_t child)
{
    const struct benc_node *nd = benc_node(doc, container);
    const struct benc_node *ch = benc_node(doc, child);
    if (!nd || !ch || child <= container || child >= nd->next)
        return BENC_NONE;
    return ch->next < nd->next ? ch->next : BENC_NONE;
}

const uint8_t *
benc_str(const struct benc_doc *doc, uint32_t idx, size_t *ret_len)
{
    const struct benc_node *nd = benc_node(doc, idx);
    if (!nd || nd->type != BENC_STR)
        return NULL;
    if (ret_len)
        *ret_len = nd->u.s.len;
    return doc->buf + nd->u.s.off;
}

bool
benc_str_eq(const struct benc_doc *doc, uint32_t idx, const char *s)
{
    size_t n;
    const uint8_t *p = benc_str(doc, idx, &n);
    return p && n == strlen(s) && memcmp(p, s, n) == 0;
}

uint32_t
benc_dict_get(const struct benc_doc *doc, uint32_t idx, const char *key)
{
    if (!benc_is(doc, idx, BENC_DICT))
        return BENC_NONE;
    for (uint32_t k = benc_first(doc, idx); k != BENC_NONE;) {
        uint32_t v = benc_next(doc, idx, k);
        if (v == BENC_NONE)
            break;
        if (benc_str_eq(doc, k, key))
            return v;
        k = benc_next(doc, idx, v);
    }
    return BENC_NONE;
}

uint32_t
benc_dict_get_type(const struct benc_doc *doc, uint32_t idx,
                   const char *key, enum benc_type type)
{
    uint32_t v = benc_dict_get(doc, idx, key);
    return benc_is(doc, v, type) ? v : BENC_NONE;
}

const uint8_t *
benc_raw(const struct benc_doc *doc, uint32_t idx, size_t *ret_len)
{
    const struct benc_node *nd = benc_node(doc, idx);
    if (!nd)
        return NULL;
    if (ret_len)
        *ret_len = nd->end - nd->start;
    return doc->buf + nd->start;
}

/* --- encoder --- */

int
benc_put_int(struct buf *b, int64_t v)
{
    return buf_printf(b, "i%" PRId64 "e", v);
}

int
benc_put_str(struct buf *b, const void *p, size_t n)
{
    char len[24];
    int k = snprintf(len, sizeof(len), "%zu:", n);

    /* Room for prefix and bytes at once: all or nothing, and the buffer
     * stays NUL-terminated on failure. */
    if (n > SIZE_MAX - (size_t)k)
        return -EMSGSIZE;
    int r = buf_reserve(b, (size_t)k + n);
    if (r < 0)
        return r;
    r = buf_append(b, len, (size_t)k);
    if (r == 0)
        r = buf_append(b, p, n);
    return r;
}

int
benc_put_cstr(struct buf *b, const char *s)
{
    return benc_put_str(b, s, strlen(s));
}

int
benc_put_list(struct buf *b)
{
    return buf_putc(b, 'l');
}

int
benc_put_dict(struct buf *b)
{
    return buf_putc(b, 'd');
}

int
benc_put_end(struct buf *b)
{
    return buf_putc(b, 'e');
}

int
benc_put_raw(struct buf *b, const struct benc_doc *doc, uint32_t idx)
{
    size_t n;
    const uint8_t *p = benc_raw(doc, idx, &n);
    if (!p)
        return -EINVAL;
    return buf_append(b, p, n);
}
