/* jsonrpc — JSON-RPC 2.0 over '\n'-terminated lines. */
#include "common/jsonrpc.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "common/buf.h"

/* json-c takes int lengths: feed it at most this much at once. */
#define JSONRPC_TOKENER_CHUNK (1u << 20)
/* After a line longer than this, json-c's buffers are given back. */
#define JSONRPC_TOKENER_KEEP (64u << 10)

const struct jsonrpc_limits jsonrpc_limits_default = {
    .max_line = 64u << 20,
    .max_depth = 64,
    .max_values = 1u << 18,
    .max_batch = 1024,
};

static const char *const jsonrpc_messages[] = {
    [0] = "success",
    [-JSONRPC_E_EMPTY] = "empty line",
    [-JSONRPC_E_LINE_TOO_LONG] = "line too long",
    [-JSONRPC_E_UTF8] = "invalid UTF-8",
    [-JSONRPC_E_CONTROL_CHAR] = "raw control character",
    [-JSONRPC_E_DEPTH] = "JSON nested too deeply",
    [-JSONRPC_E_TOO_MANY_VALUES] = "too many JSON values on one line",
    [-JSONRPC_E_SYNTAX] = "invalid JSON",
    [-JSONRPC_E_TRUNCATED] = "the line ends inside a JSON value",
    [-JSONRPC_E_TRAILING] = "data after the JSON value",
    [-JSONRPC_E_NOT_OBJECT] = "a request must be a JSON object",
    [-JSONRPC_E_VERSION] = "\"jsonrpc\" must be \"2.0\"",
    [-JSONRPC_E_METHOD] = "\"method\" must be a string",
    [-JSONRPC_E_ID] = "\"id\" must be a string, a number or null",
    [-JSONRPC_E_PARAMS] = "\"params\" must be an object",
    [-JSONRPC_E_PARAMS_BY_POSITION] =
        "\"params\" must be an object: parameters are passed by name",
    [-JSONRPC_E_EMPTY_BATCH] = "empty batch",
    [-JSONRPC_E_BATCH_TOO_LARGE] = "batch too large",
    [-JSONRPC_E_NOT_RESPONSE] = "not a JSON-RPC 2.0 response or notification",
    [-JSONRPC_E_NOMEM] = "out of memory",
};

const char *
jsonrpc_strerror(int err)
{
    if (err > 0 || err <= JSONRPC_E_MIN)
        return "unknown error";
    return jsonrpc_messages[-err];
}

int
jsonrpc_error_code(int err)
{
    switch (err) {
    case JSONRPC_E_EMPTY:
    case JSONRPC_E_UTF8:
    case JSONRPC_E_CONTROL_CHAR:
    case JSONRPC_E_DEPTH:
    case JSONRPC_E_TOO_MANY_VALUES:
    case JSONRPC_E_SYNTAX:
    case JSONRPC_E_TRUNCATED:
    case JSONRPC_E_TRAILING:
        return JSONRPC_PARSE_ERROR;
    case JSONRPC_E_PARAMS_BY_POSITION:
        return JSONRPC_INVALID_PARAMS;
    case JSONRPC_E_NOMEM:
        return JSONRPC_INTERNAL_ERROR;
    case JSONRPC_E_LINE_TOO_LONG:
    case JSONRPC_E_NOT_OBJECT:
    case JSONRPC_E_VERSION:
    case JSONRPC_E_METHOD:
    case JSONRPC_E_ID:
    case JSONRPC_E_PARAMS:
    case JSONRPC_E_EMPTY_BATCH:
    case JSONRPC_E_BATCH_TOO_LARGE:
    case JSONRPC_E_NOT_RESPONSE:
    default:
        return JSONRPC_INVALID_REQUEST;
    }
}

/* --- UTF-8.  One decoder for jsonrpc_utf8_valid() and the reader. --- */
struct utf8_state {
    uint32_t cp, min;
    size_t start;
    uint8_t need;
};

/* Take byte c at offset off.  Returns 0, or -1 with *bad = the offset of
 * the sequence that is wrong. */
static int
utf8_step(struct utf8_state *u, uint8_t c, size_t off, size_t *bad)
{
    if (u->need == 0) {
        if (c < 0x80)
            return 0;
        u->start = off;
        if (c >= 0xc2 && c <= 0xdf) {
            u->need = 1, u->cp = c & 0x1f, u->min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            u->need = 2, u->cp = c & 0x0f, u->min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            u->need = 3, u->cp = c & 0x07, u->min = 0x10000;
        } else {
            *bad = off; /* a stray continuation, C0, C1 or F5..FF */
            return -1;
        }
        return 0;
    }
    if ((c & 0xc0) != 0x80) {
        *bad = u->start; /* the sequence stops short */
        u->need = 0;
        return -1;
    }
    u->cp = u->cp << 6 | (c & 0x3f);
    if (--u->need > 0)
        return 0;
    if (u->cp < u->min || (u->cp >= 0xd800 && u->cp <= 0xdfff) ||
        u->cp > 0x10ffff) {
        *bad = u->start;
        return -1;
    }
    return 0;
}

bool
jsonrpc_utf8_valid(const void *p, size_t n, size_t *reterr_offset)
{
    const uint8_t *s = p;
    struct utf8_state u = {0};
    size_t bad;
    for (size_t i = 0; i < n; i++) {
        if (utf8_step(&u, s[i], i, &bad) < 0) {
            if (reterr_offset)
                *reterr_offset = bad;
            return false;
        }
    }
    if (u.need > 0) {
        if (reterr_offset)
            *reterr_offset = u.start;
        return false;
    }
    return true;
}

/* --- Reading. --- */

/* Numbers are checked here against RFC 8259's grammar, so that json-c
 * (which is looser, and reports number errors at places that depend on
 * how the input was split) only ever sees valid ones:
 *     -? (0 | [1-9][0-9]*) (\. [0-9]+)? ([eE] [+-]? [0-9]+)?      */
enum num_state {
    NUM_NONE = 0, /* not in a number */
    NUM_MINUS,    /* "-" */
    NUM_ZERO,     /* "0" (or "-0") */
    NUM_INT,      /* [1-9][0-9]* */
    NUM_DOT,      /* "." */
    NUM_FRAC,     /* "." [0-9]+ */
    NUM_E,        /* "e" */
    NUM_ESIGN,    /* "e+" */
    NUM_EXP,      /* "e" [0-9]+ */
};

static bool
num_can_end(uint8_t st)
{
    return st == NUM_NONE || st == NUM_ZERO || st == NUM_INT ||
           st == NUM_FRAC || st == NUM_EXP;
}

/* Take c in state *st (not NUM_NONE).  Returns 1 when c belongs to the
 * number, 0 when the number ended before c (c is to be looked at as
 * usual), -1 when c cannot follow what came before. */
static int
num_step(uint8_t *st, uint8_t c)
{
    bool digit = c >= '0' && c <= '9';
    switch (*st) {
    case NUM_MINUS:
        if (!digit)
            return -1;
        *st = c == '0' ? NUM_ZERO : NUM_INT;
        return 1;
    case NUM_ZERO:
    case NUM_INT:
        if (digit) {
            if (*st == NUM_ZERO)
                return -1; /* a leading zero */
            return 1;
        }
        if (c == '.') {
            *st = NUM_DOT;
            return 1;
        }
        if (c == 'e' || c == 'E') {
            *st = NUM_E;
            return 1;
        }
        break;
    case NUM_DOT:
        if (!digit)
            return -1;
        *st = NUM_FRAC;
        return 1;
    case NUM_FRAC:
        if (digit)
            return 1;
        if (c == 'e' || c == 'E') {
            *st = NUM_E;
            return 1;
        }
        break;
    case NUM_E:
        if (c == '+' || c == '-') {
            *st = NUM_ESIGN;
            return 1;
        }
        /* fall through */
    case NUM_ESIGN:
        if (!digit)
            return -1;
        *st = NUM_EXP;
        return 1;
    case NUM_EXP:
        if (digit)
            return 1;
        break;
    default:
        break;
    }
    /* The number is over; what follows must be able to follow a value
     * (json-c judges which). */
    if (c == '.' || c == '+' || c == '-' || c == 'e' || c == 'E' ||
        (c >= 'a' && c <= 'z'))
        return -1;
    *st = NUM_NONE;
    return 0;
}

static struct json_tokener *
reader_new_tok(const struct jsonrpc_limits *lim)
{
    /* json-c counts the top level as depth 1, as we do; one more so that
     * our own check is always the one that fires. */
    struct json_tokener *tok = json_tokener_new_ex((int)lim->max_depth + 1);
    /* Trailing bytes are ours to judge (JSONRPC_E_TRAILING), so that the
     * answer does not depend on how the bytes were split. */
    if (tok)
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
                                        JSON_TOKENER_ALLOW_TRAILING_CHARS);
    return tok;
}

static void
reader_reset_line(struct jsonrpc_reader *r)
{
    if (r->tok && r->tok_fed &&
        (!r->done || r->line_len > JSONRPC_TOKENER_KEEP)) {
        /* json_tokener_reset() keeps some state of a line cut short (a
         * pending UTF-16 high surrogate, for one), which would change how
         * the next line reads, and keeps the memory a long line took:
         * start afresh.  On failure, the next line says
         * JSONRPC_E_NOMEM. */
        json_tokener_free(r->tok);
        r->tok = reader_new_tok(&r->lim);
    } else if (r->tok) {
        json_tokener_reset(r->tok);
    }
    r->tok_fed = false;
    json_object_put(r->doc);
    r->doc = NULL;
    r->done = false;
    r->line_len = 0;
    r->err_offset = 0;
    r->err = 0;
    r->depth = 0;
    r->values = 0;
    r->utf8_cp = 0;
    r->utf8_min = 0;
    r->utf8_start = 0;
    r->utf8_need = 0;
    r->num = NUM_NONE;
    r->hold_len = 0;
    r->in_string = false;
    r->escape = false;
    r->nonblank = false;
}

int
jsonrpc_reader_init(struct jsonrpc_reader *r, const struct jsonrpc_limits *lim)
{
    memset(r, 0, sizeof(*r));
    r->lim = lim ? *lim : jsonrpc_limits_default;
    if (r->lim.max_depth < 1)
        r->lim.max_depth = 1;
    if (r->lim.max_depth > 1000)
        r->lim.max_depth = 1000;
    r->tok = reader_new_tok(&r->lim);
    return r->tok ? 0 : JSONRPC_E_NOMEM;
}

void
jsonrpc_reader_release(struct jsonrpc_reader *r)
{
    if (!r)
        return;
    json_object_put(r->doc);
    r->doc = NULL;
    if (r->tok)
        json_tokener_free(r->tok);
    r->tok = NULL;
}

bool
jsonrpc_reader_pending(const struct jsonrpc_reader *r)
{
    return r->discard || r->line_len > 0;
}

static void
reader_fail(struct jsonrpc_reader *r, int err, size_t offset)
{
    if (r->err == 0) {
        r->err = err;
        r->err_offset = offset;
    }
}

static bool
is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Bytes that may appear outside strings and numbers: structure and the
 * letters of true, false and null.  This refuses the NaN and
 * Infinity that json-c takes even when strict. */
static bool
is_bare(uint8_t c)
{
    /* Numbers are handled before. */
    return c != 0 && strchr("[]{}:,truefalsn", c) != NULL;
}

/* Look at the bytes s[0..n) of the current line, which start at line
 * offset base: UTF-8, control characters, depth, value count. */
static void
reader_scan(struct jsonrpc_reader *r, const uint8_t *s, size_t n, size_t base)
{
    struct utf8_state u = {r->utf8_cp, r->utf8_min, r->utf8_start,
                           r->utf8_need};
    for (size_t i = 0; i < n && r->err == 0; i++) {
        uint8_t c = s[i];
        size_t off = base + i;
        size_t bad;
        if (c >= 0x80 || u.need > 0) {
            if (utf8_step(&u, c, off, &bad) < 0) {
                reader_fail(r, JSONRPC_E_UTF8, bad);
                break;
            }
            if (!r->in_string && c >= 0x80) {
                /* Non-ASCII outside a string is never JSON. */
                reader_fail(r, JSONRPC_E_SYNTAX, off);
                break;
            }
            continue;
        }
        if (r->in_string) {
            if (c < 0x20) {
                reader_fail(r, JSONRPC_E_CONTROL_CHAR, off);
            } else if (r->escape) {
                r->escape = false;
            } else if (c == '\\') {
                r->escape = true;
            } else if (c == '"') {
                r->in_string = false;
            }
            continue;
        }
        if (r->num != NUM_NONE) {
            int k = num_step(&r->num, c);
            if (k < 0) {
                reader_fail(r, JSONRPC_E_SYNTAX, off);
                break;
            }
            if (k > 0)
                continue;
        }
        if (is_ws(c))
            continue;
        if (c < 0x20) {
            reader_fail(r, JSONRPC_E_CONTROL_CHAR, off);
            break;
        }
        if (!r->nonblank) {
            r->nonblank = true;
            r->values = 1;
        }
        if (c == '"') {
            r->in_string = true;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            r->num = c == '-' ? NUM_MINUS : c == '0' ? NUM_ZERO : NUM_INT;
        } else if (c == '[' || c == '{') {
            if (++r->depth > r->lim.max_depth)
                reader_fail(r, JSONRPC_E_DEPTH, off);
            else if (r->values++ >= r->lim.max_values)
                reader_fail(r, JSONRPC_E_TOO_MANY_VALUES, off);
        } else if (c == ']' || c == '}') {
            if (r->depth > 0)
                r->depth--;
        } else if (c == ',') {
            if (r->values++ >= r->lim.max_values)
                reader_fail(r, JSONRPC_E_TOO_MANY_VALUES, off);
        } else if (!is_bare(c)) {
            reader_fail(r, JSONRPC_E_SYNTAX, off);
        }
    }
    r->utf8_cp = u.cp;
    r->utf8_min = u.min;
    r->utf8_start = u.start;
    r->utf8_need = u.need;
}

/* Hand s[0..n) of the current line (at line offset base) to json-c. */
static void
reader_tokenize(struct jsonrpc_reader *r, const char *s, size_t n, size_t base)
{
    while (n > 0 && r->err == 0) {
        if (r->done) {
            /* The value is complete: only whitespace may follow. */
            for (size_t i = 0; i < n; i++) {
                if (!is_ws((uint8_t)s[i])) {
                    reader_fail(r, JSONRPC_E_TRAILING, base + i);
                    return;
                }
            }
            return;
        }
        if (!r->tok && !(r->tok = reader_new_tok(&r->lim))) {
            reader_fail(r, JSONRPC_E_NOMEM, base);
            return;
        }
        r->tok_fed = true;
        size_t chunk = n < JSONRPC_TOKENER_CHUNK ? n : JSONRPC_TOKENER_CHUNK;
        struct json_object *o = json_tokener_parse_ex(r->tok, s, (int)chunk);
        size_t used = json_tokener_get_parse_end(r->tok);
        enum json_tokener_error e = json_tokener_get_error(r->tok);
        if (used > chunk)
            used = chunk;
        if (o || e == json_tokener_success) {
            r->doc = o; /* NULL for a JSON null */
            r->done = true;
        } else if (e != json_tokener_continue) {
            reader_fail(r,
                        e == json_tokener_error_depth ? JSONRPC_E_DEPTH
                                                      : JSONRPC_E_SYNTAX,
                        base + used);
            return;
        } else {
            used = chunk;
        }
        s += used;
        n -= used;
        base += used;
    }
}

/* Look at the bytes s[0..n) of the current line, at line offset base.
 *
 * The scan comes first; json-c then gets the bytes before the scan's
 * error, if any, and the earlier error wins.  The bytes of a UTF-8
 * sequence that is not complete yet are held back (in r->hold) until it
 * is, so that json-c never sees a byte the scan may still refuse.  That
 * way the answer never depends on how the bytes were split. */
static void
reader_take(struct jsonrpc_reader *r, const uint8_t *s, size_t n, size_t base)
{
    size_t end = base + n;
    size_t held_at = base - r->hold_len; /* line offset of r->hold[0] */

    reader_scan(r, s, n, base);
    int serr = r->err;
    size_t soff = r->err_offset, limit = end;
    if (serr) {
        r->err = 0;
        limit = soff < end ? soff : end;
    } else if (r->utf8_need > 0) {
        limit = r->utf8_start;
    }

    /* json-c gets [held_at, limit): first what was held, then s. */
    if (limit > held_at) {
        size_t from_hold = limit - held_at;
        if (from_hold > r->hold_len)
            from_hold = r->hold_len;
        reader_tokenize(r, (const char *)r->hold, from_hold, held_at);
        if (r->err == 0 && limit > base)
            reader_tokenize(r, (const char *)s, limit - base, base);
    }
    if (serr) {
        if (r->err == 0 || r->err_offset >= soff) {
            r->err = serr;
            r->err_offset = soff;
        }
        r->hold_len = 0;
        return;
    }
    /* Hold [limit, end) for next time: at most 3 bytes. */
    uint8_t hold[sizeof(r->hold)];
    size_t k = 0;
    for (size_t off = limit; off < end && r->err == 0; off++) {
        assert(k < sizeof(hold));
        hold[k++] = off < base ? r->hold[off - held_at] : s[off - base];
    }
    memcpy(r->hold, hold, k);
    r->hold_len = (uint8_t)k;
}

/* The '\n' came: say what the line was and start the next one. */
static int
reader_end_line(struct jsonrpc_reader *r, struct json_object **ret_doc,
                size_t *reterr_offset)
{
    int err = r->err;
    size_t off = r->err_offset;
    if (err == 0 && r->utf8_need > 0) {
        err = JSONRPC_E_UTF8;
        off = r->utf8_start;
    }
    if (err == 0 && !num_can_end(r->num))
        err = JSONRPC_E_SYNTAX, off = r->line_len;
    if (err == 0 && !r->nonblank)
        err = JSONRPC_E_EMPTY, off = 0;
    if (err == 0 && !r->done && !r->tok)
        err = JSONRPC_E_NOMEM, off = 0;
    if (err == 0 && !r->done) {
        /* A number or literal at the very end needs a terminator. */
        struct json_object *o = json_tokener_parse_ex(r->tok, " ", 1);
        if (o || json_tokener_get_error(r->tok) == json_tokener_success)
            r->doc = o;
        else if (json_tokener_get_error(r->tok) == json_tokener_continue)
            err = JSONRPC_E_TRUNCATED, off = r->line_len;
        else
            err = JSONRPC_E_SYNTAX, off = r->line_len;
    }
    if (err == 0) {
        *ret_doc = r->doc;
        r->doc = NULL;
    } else if (reterr_offset) {
        *reterr_offset = off;
    }
    reader_reset_line(r);
    return err == 0 ? 1 : err;
}

int
jsonrpc_reader_feed(struct jsonrpc_reader *r, const void *p, size_t n,
                    size_t *ret_used, struct json_object **ret_doc,
                    size_t *reterr_offset)
{
    const char *s = p;
    size_t used = 0;
    while (used < n) {
        const char *nl = memchr(s + used, '\n', n - used);
        size_t seg = nl ? (size_t)(nl - (s + used)) : n - used;
        if (r->discard) {
            used += nl ? seg + 1 : seg;
            if (nl)
                r->discard = false;
            continue;
        }
        if (seg > r->lim.max_line - r->line_len) {
            /* Over the limit: say so now, skip the rest of the line. */
            reader_reset_line(r);
            used += nl ? seg + 1 : seg;
            r->discard = nl == NULL;
            *ret_used = used;
            if (reterr_offset)
                *reterr_offset = r->lim.max_line;
            return JSONRPC_E_LINE_TOO_LONG;
        }
        const char *seg_start = s + used;
        size_t base = r->line_len;
        if (r->err == 0)
            reader_take(r, (const uint8_t *)seg_start, seg, base);
        r->line_len += seg;
        used += seg;
        if (nl) {
            used++; /* the '\n' */
            *ret_used = used;
            return reader_end_line(r, ret_doc, reterr_offset);
        }
    }
    *ret_used = used;
    return 0;
}

int
jsonrpc_reader_finish(struct jsonrpc_reader *r, struct json_object **ret_doc,
                      size_t *reterr_offset)
{
    if (r->discard) {
        r->discard = false;
        return JSONRPC_E_EMPTY;
    }
    if (r->line_len == 0) {
        reader_reset_line(r);
        return JSONRPC_E_EMPTY;
    }
    return reader_end_line(r, ret_doc, reterr_offset);
}

/* --- Checking requests. --- */
int
jsonrpc_request_parse(struct json_object *msg, unsigned flags,
                      struct jsonrpc_request *req)
{
    struct json_object *v, *id = NULL;
    bool has_id;

    memset(req, 0, sizeof(*req));
    if (!json_object_is_type(msg, json_type_object))
        return JSONRPC_E_NOT_OBJECT;

    /* The id first, so that errors can be answered with it. */
    has_id = json_object_object_get_ex(msg, "id", &id);
    if (has_id && id && !json_object_is_type(id, json_type_string) &&
        !json_object_is_type(id, json_type_int) &&
        !json_object_is_type(id, json_type_double))
        return JSONRPC_E_ID;
    req->id = has_id ? id : NULL;

    if (!json_object_object_get_ex(msg, "jsonrpc", &v) ||
        !json_object_is_type(v, json_type_string) ||
        strcmp(json_object_get_string(v), "2.0") != 0 ||
        json_object_get_string_len(v) != 3)
        return JSONRPC_E_VERSION;

    if (!json_object_object_get_ex(msg, "method", &v) ||
        !json_object_is_type(v, json_type_string) ||
        strlen(json_object_get_string(v)) !=
            (size_t)json_object_get_string_len(v))
        return JSONRPC_E_METHOD;
    const char *method = json_object_get_string(v);

    struct json_object *params = NULL;
    if (json_object_object_get_ex(msg, "params", &params)) {
        if (!json_object_is_type(params, json_type_object) &&
            !json_object_is_type(params, json_type_array))
            return JSONRPC_E_PARAMS;
        if ((flags & JSONRPC_NAMED_PARAMS) &&
            json_object_is_type(params, json_type_array)) {
            req->notification = !has_id;
            return JSONRPC_E_PARAMS_BY_POSITION;
        }
    }
    req->method = method;
    req->params = params;
    req->notification = !has_id;
    return 0;
}

int
jsonrpc_batch_check(struct json_object *doc, const struct jsonrpc_limits *lim,
                    size_t *ret_n)
{
    if (!lim)
        lim = &jsonrpc_limits_default;
    if (!json_object_is_type(doc, json_type_array)) {
        *ret_n = 1;
        return 0;
    }
    size_t n = json_object_array_length(doc);
    if (n == 0)
        return JSONRPC_E_EMPTY_BATCH;
    if (n > lim->max_batch)
        return JSONRPC_E_BATCH_TOO_LARGE;
    *ret_n = n;
    return 1;
}

/* --- Building messages. --- */
static struct json_object *
envelope(void)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    struct json_object *v = json_object_new_string("2.0");
    if (!v || json_object_object_add(o, "jsonrpc", v) < 0) {
        json_object_put(v);
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* Add key: v to o, v taken.  Returns 0 or -1 (v freed). */
static int
add(struct json_object *o, const char *key, struct json_object *v)
{
    if (json_object_object_add(o, key, v) < 0) {
        json_object_put(v);
        return -1;
    }
    return 0;
}

static int
add_id(struct json_object *o, struct json_object *id)
{
    return add(o, "id", json_object_get(id));
}

struct json_object *
jsonrpc_response_new(struct json_object *id, struct json_object *result)
{
    struct json_object *o = envelope();
    if (!o) {
        json_object_put(result);
        return NULL;
    }
    if (add(o, "result", result) < 0 || add_id(o, id) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

struct json_object *
jsonrpc_error_new(struct json_object *id, int code, const char *message,
                  struct json_object *data)
{
    struct json_object *o = envelope(), *e = json_object_new_object();
    if (data && !json_object_is_type(data, json_type_object)) {
        struct json_object *w = json_object_new_object();
        if (!w || add(w, "value", data) < 0) {
            json_object_put(w);
            data = NULL;
            goto fail;
        }
        data = w;
    }
    if (!data)
        data = json_object_new_object();
    if (!o || !e || !data)
        goto fail;
    if (add(e, "code", json_object_new_int(code)) < 0 ||
        add(e, "message", json_object_new_string(message ? message : "")) < 0 ||
        add(e, "data", data) < 0) {
        data = NULL; /* freed by add() or owned by e */
        goto fail;
    }
    data = NULL;
    if (add(o, "error", e) < 0) {
        e = NULL;
        goto fail;
    }
    e = NULL;
    if (add_id(o, id) < 0)
        goto fail;
    return o;
fail:
    json_object_put(data);
    json_object_put(e);
    json_object_put(o);
    return NULL;
}

struct json_object *
jsonrpc_error_from(struct json_object *id, int err,
                   const struct jsonrpc_limits *lim, size_t offset)
{
    char msg[160];
    if (!lim)
        lim = &jsonrpc_limits_default;
    const char *what = jsonrpc_strerror(err);
    switch (err) {
    case JSONRPC_E_LINE_TOO_LONG:
        snprintf(msg, sizeof(msg), "%s: the limit is %zu bytes", what,
                 lim->max_line);
        break;
    case JSONRPC_E_DEPTH:
        snprintf(msg, sizeof(msg), "%s: the limit is %" PRIu32 " levels", what,
                 lim->max_depth);
        break;
    case JSONRPC_E_TOO_MANY_VALUES:
        snprintf(msg, sizeof(msg), "%s: the limit is %" PRIu32, what,
                 lim->max_values);
        break;
    case JSONRPC_E_BATCH_TOO_LARGE:
        snprintf(msg, sizeof(msg), "%s: the limit is %" PRIu32 " requests",
                 what, lim->max_batch);
        break;
    default:
        if (offset != SIZE_MAX)
            snprintf(msg, sizeof(msg), "%s at byte %zu", what, offset);
        else
            snprintf(msg, sizeof(msg), "%s", what);
        break;
    }
    struct json_object *data = json_object_new_object();
    if (!data)
        return NULL;
    if (add(data, "reason", json_object_new_string(what)) < 0 ||
        (offset != SIZE_MAX &&
         add(data, "offset", json_object_new_int64((int64_t)offset)) < 0)) {
        json_object_put(data);
        return NULL;
    }
    return jsonrpc_error_new(id, jsonrpc_error_code(err), msg, data);
}

struct json_object *
jsonrpc_notification_new(const char *method, struct json_object *params)
{
    struct json_object *o = envelope();
    if (!o || add(o, "method", json_object_new_string(method)) < 0) {
        json_object_put(params);
        json_object_put(o);
        return NULL;
    }
    if (params && add(o, "params", params) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

struct json_object *
jsonrpc_request_new(int64_t id, const char *method, struct json_object *params)
{
    struct json_object *o = jsonrpc_notification_new(method, params);
    if (!o)
        return NULL;
    if (add(o, "id", json_object_new_int64(id)) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

int
jsonrpc_put_line(struct buf *out, struct json_object *msg)
{
    size_t n;
    const char *s = json_object_to_json_string_length(
        msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    if (!s)
        return -ENOMEM;
    if (n == SIZE_MAX)
        return -EMSGSIZE;
    int r = buf_reserve(out, n + 1);
    if (r < 0)
        return r;
    r = buf_append(out, s, n);
    if (r == 0)
        r = buf_putc(out, '\n');
    return r;
}

/* --- Client side. --- */
int
jsonrpc_reply_parse(struct json_object *msg, struct jsonrpc_reply *ret)
{
    struct jsonrpc_reply r = {0};
    struct json_object *v, *id = NULL;

    if (!json_object_is_type(msg, json_type_object) ||
        !json_object_object_get_ex(msg, "jsonrpc", &v) ||
        !json_object_is_type(v, json_type_string) ||
        strcmp(json_object_get_string(v), "2.0") != 0)
        return JSONRPC_E_NOT_RESPONSE;

    if (json_object_object_get_ex(msg, "method", &v)) {
        if (!json_object_is_type(v, json_type_string) ||
            json_object_object_get_ex(msg, "id", NULL))
            return JSONRPC_E_NOT_RESPONSE;
        r.notification = true;
        r.method = json_object_get_string(v);
        (void)json_object_object_get_ex(msg, "params", &r.params);
        *ret = r;
        return 0;
    }

    if (!json_object_object_get_ex(msg, "id", &id))
        return JSONRPC_E_NOT_RESPONSE;
    r.id = id;
    bool has_result = json_object_object_get_ex(msg, "result", &r.result);
    struct json_object *e = NULL;
    bool has_error = json_object_object_get_ex(msg, "error", &e);
    if (has_result == has_error)
        return JSONRPC_E_NOT_RESPONSE;
    if (has_error) {
        if (!json_object_is_type(e, json_type_object) ||
            !json_object_object_get_ex(e, "code", &v) ||
            !json_object_is_type(v, json_type_int))
            return JSONRPC_E_NOT_RESPONSE;
        int64_t code = json_object_get_int64(v);
        if (code < INT_MIN || code > INT_MAX)
            return JSONRPC_E_NOT_RESPONSE;
        r.is_error = true;
        r.result = NULL;
        r.code = (int)code;
        r.message = "";
        if (json_object_object_get_ex(e, "message", &v) &&
            json_object_is_type(v, json_type_string))
            r.message = json_object_get_string(v);
        (void)json_object_object_get_ex(e, "data", &r.data);
    }
    *ret = r;
    return 0;
}

bool
jsonrpc_reply_is_for(const struct jsonrpc_reply *reply, int64_t id)
{
    return !reply->notification && reply->id &&
           json_object_is_type(reply->id, json_type_int) &&
           json_object_get_int64(reply->id) == id;
}

/* One decimal number of a version; *p moves past it.  -1 when there is
 * none or it is implausibly long. */
static long
api_number(const char **p)
{
    long v = 0;
    int digits = 0;
    while (**p >= '0' && **p <= '9') {
        if (++digits > 9)
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    return digits ? v : -1;
}

bool
jsonrpc_api_at_least(const char *api, unsigned major, unsigned minor)
{
    if (!api)
        return false;
    const char *p = api;
    long maj = api_number(&p);
    if (maj < 0 || *p++ != '.')
        return false;
    long min = api_number(&p);
    if (min < 0)
        return false;
    if (*p == '.') {
        p++;
        if (api_number(&p) < 0)
            return false;
    }
    if (*p)
        return false;
    if ((unsigned long)maj != major)
        return (unsigned long)maj > major;
    return (unsigned long)min >= minor;
}
