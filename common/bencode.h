/* bencode — strict BEP 3 decoder and a small encoder.
 *
 * Thread: any.  No I/O, no globals, no logging.
 *
 * The decoder turns an input buffer into a flat array of nodes (a
 * pre-order walk of the value tree, like jsmn).  Nothing is copied: string
 * nodes point into the caller's buffer, and every node records the exact
 * byte range of its value, so that the info-hash (SHA-1 over the raw bytes
 * of the info dictionary) is taken from the input as it came.  The caller's
 * buffer must outlive the document.
 *
 * Strictness (BEP 3): no leading zeros in integers or string lengths, no
 * "-0", integers within int64_t, string lengths within the input, keys are
 * strings.  Dictionary keys that are out of order or repeated are either
 * refused (BENC_STRICT_KEYS) or accepted and reported in doc->quirks, so that
 * a caller can follow what mature clients do.
 *
 * Hard limits come from struct benc_limits: input size, nesting depth and
 * node count.  The decoder allocates one node array, bounded by the limits.
 */
#ifndef TD_COMMON_BENCODE_H
#define TD_COMMON_BENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

enum benc_type {
    BENC_INT,
    BENC_STR,
    BENC_LIST,
    BENC_DICT,
    BENC_TYPE_MAX
};

/* Errors: negative, each with a message from benc_strerror(). */
enum benc_error {
    BENC_OK = 0,
    BENC_E_EMPTY = -1,            /* no input at all */
    BENC_E_TRUNCATED = -2,        /* input ends inside a value */
    BENC_E_SYNTAX = -3,           /* a byte that starts no value */
    BENC_E_INT_EMPTY = -4,        /* "ie" or "i-e" */
    BENC_E_INT_LEADING_ZERO = -5, /* "i03e" */
    BENC_E_INT_NEGATIVE_ZERO = -6,/* "i-0e" */
    BENC_E_INT_RANGE = -7,        /* outside int64_t */
    BENC_E_INT_SYNTAX = -8,       /* a non-digit inside an integer */
    BENC_E_STR_LENGTH = -9,       /* bad length prefix (leading zero, ...) */
    BENC_E_STR_TOO_LONG = -10,    /* length beyond the end of the input */
    BENC_E_KEY_NOT_STRING = -11,  /* a dictionary key that is not a string */
    BENC_E_KEY_ORDER = -12,       /* keys not sorted (BENC_STRICT_KEYS) */
    BENC_E_KEY_DUPLICATE = -13,   /* a key twice (BENC_STRICT_KEYS) */
    BENC_E_DEPTH = -14,           /* nested deeper than max_depth */
    BENC_E_TOO_MANY_NODES = -15,  /* more values than max_nodes */
    BENC_E_TOO_LARGE = -16,       /* input longer than max_input */
    BENC_E_TRAILING = -17,        /* bytes after the top-level value */
    BENC_E_NOMEM = -18,
    BENC_E_MIN = -19
};

/* Options for benc_parse(). */
enum benc_flags {
    BENC_STRICT_KEYS = 1 << 0,    /* refuse unsorted or repeated keys */
    BENC_ALLOW_TRAILING = 1 << 1, /* stop after the first value */
};

/* What a tolerant parse saw (doc->quirks). */
enum benc_quirks {
    BENC_Q_UNSORTED_KEYS = 1 << 0,
    BENC_Q_DUPLICATE_KEYS = 1 << 1,
};

struct benc_limits {
    size_t max_input;   /* bytes */
    uint32_t max_depth; /* nesting of lists and dictionaries (0: scalars) */
    uint32_t max_nodes; /* values of any type, in total */
};

/* Sensible defaults for .torrent files: 16 MiB, depth 64, 1 M nodes. */
extern const struct benc_limits benc_limits_default;

struct benc_node {
    uint8_t type;     /* enum benc_type */
    uint32_t start;   /* byte range [start, end) of the whole value */
    uint32_t end;
    uint32_t next;    /* index of the first node after this subtree */
    union {
        int64_t i;    /* BENC_INT */
        struct {
            uint32_t off, len; /* BENC_STR: the bytes, without the prefix */
        } s;
        uint32_t count; /* BENC_LIST: items; BENC_DICT: key/value pairs */
    } u;
};

struct benc_doc {
    const uint8_t *buf;      /* borrowed: the caller's input */
    size_t len;              /* bytes consumed by the top-level value */
    struct benc_node *nodes; /* owned; nodes[0] is the top-level value */
    uint32_t n_nodes;
    unsigned quirks;         /* enum benc_quirks */
};

/* Parse buf[0..len) into ret_doc.  Returns 0, or a negative enum
 * benc_error with *reterr_offset (if not NULL) set to the byte offset where
 * the problem lies.  ret_doc is written only on success and must be
 * released with benc_doc_release().  Without BENC_ALLOW_TRAILING the value
 * must fill the input exactly; with it, ret_doc->len tells how much of the
 * input the value took. */
int benc_parse(struct benc_doc *ret_doc, const void *buf, size_t len,
               const struct benc_limits *lim, unsigned flags,
               size_t *reterr_offset);

/* Free what benc_parse() allocated.  Accepts a zeroed or released doc. */
void benc_doc_release(struct benc_doc *doc);

/* A static message for an error value ("unknown error" for others). */
const char *benc_strerror(int err);

/* --- Reading a document.  Node indices are uint32_t; BENC_NONE is "no
 * such node".  The functions below never read outside the document. --- */
#define BENC_NONE UINT32_MAX

static inline const struct benc_node *
benc_node(const struct benc_doc *doc, uint32_t idx)
{
    return idx < doc->n_nodes ? &doc->nodes[idx] : NULL;
}

/* True if node idx exists and has the given type. */
bool benc_is(const struct benc_doc *doc, uint32_t idx, enum benc_type type);

/* The value for key in the dictionary at idx, or BENC_NONE (also when idx
 * is not a dictionary).  With repeated keys, the first one wins. */
uint32_t benc_dict_get(const struct benc_doc *doc, uint32_t idx,
                       const char *key);

/* The same, with the key's type checked: BENC_NONE if absent or of
 * another type. */
uint32_t benc_dict_get_type(const struct benc_doc *doc, uint32_t idx,
                            const char *key, enum benc_type type);

/* Iterate over a list's items or a dictionary's keys and values:
 *   for (uint32_t c = benc_first(doc, l); c != BENC_NONE;
 *        c = benc_next(doc, l, c)) ...
 * In a dictionary the children alternate key, value, key, value. */
uint32_t benc_first(const struct benc_doc *doc, uint32_t container);
uint32_t benc_next(const struct benc_doc *doc, uint32_t container,
                   uint32_t child);

/* A string node's bytes and length (not NUL-terminated); NULL if idx is not
 * a string. */
const uint8_t *benc_str(const struct benc_doc *doc, uint32_t idx,
                        size_t *ret_len);

/* True if idx is a string equal to the NUL-terminated s. */
bool benc_str_eq(const struct benc_doc *doc, uint32_t idx, const char *s);

/* The raw bytes of node idx as they appear in the input (for hashing). */
const uint8_t *benc_raw(const struct benc_doc *doc, uint32_t idx,
                        size_t *ret_len);

/* --- Encoder.  Each call appends to b and returns 0 or a negative errno
 * (-ENOMEM, or -EMSGSIZE past the buffer's cap).  The caller writes
 * dictionary keys in sorted order, as BEP 3 requires. --- */
int benc_put_int(struct buf *b, int64_t v);
int benc_put_str(struct buf *b, const void *p, size_t n);
int benc_put_cstr(struct buf *b, const char *s);
int benc_put_list(struct buf *b);  /* 'l' */
int benc_put_dict(struct buf *b);  /* 'd' */
int benc_put_end(struct buf *b);   /* 'e' */
/* Copy node idx of doc verbatim. */
int benc_put_raw(struct buf *b, const struct benc_doc *doc, uint32_t idx);

#endif
