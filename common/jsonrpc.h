/* jsonrpc — JSON-RPC 2.0 over '\n'-terminated lines: reading, checking,
 * building.  Shared by torrentd's control server and torrentctl.
 *
 * Thread: any (one reader per thread at a time).  No I/O, no libev, no
 * logging, no globals.  Uses json-c for the JSON values themselves.
 *
 * Reading.  struct jsonrpc_reader takes the bytes of a stream as they
 * arrive, in pieces of any size, and gives back one JSON value per line.
 * Every byte is looked at once, when it is fed: the UTF-8 check, the
 * control-character check, the nesting depth and value count (counted on
 * the raw bytes, outside strings, so json-c never sees input nested deeper
 * than the limit) and json-c's incremental tokenizer all run as the bytes
 * come, so the work per feed is proportional to the bytes fed, and a long
 * line is never copied into a line buffer.  Hard limits come from struct
 * jsonrpc_limits.  Numbers are checked against RFC 8259's grammar here
 * too, and json-c gets no byte the checks have not passed, so that the
 * result (error value and offset included) never depends on how the
 * stream was cut into pieces (tests/fuzz/fuzz_jsonrpc.c checks this).
 *
 * Memory: what json-c holds for the line in progress (at most about
 * max_line bytes of strings and max_values values), and the finished
 * value.
 *
 * What a line is: the bytes up to a '\n'.  A '\r' before the '\n' is
 * whitespace to JSON, so CR LF lines work.  A line holds exactly one JSON
 * value (RFC 8259, strict: no NaN, no trailing commas, no raw control
 * characters in strings, UTF-8 without overlongs, surrogates or code
 * points past U+10FFFF) and optional whitespace around it.  A line that
 * holds only whitespace gives JSONRPC_E_EMPTY, which servers ignore.
 *
 * A line longer than max_line is reported as soon as it passes the limit
 * (JSONRPC_E_LINE_TOO_LONG), without waiting for its end; the reader then
 * skips the rest of it, up to and including the next '\n', and goes on
 * with the line after.  (torrentd's control server disconnects such a
 * client instead: see daemon/control.h.)
 *
 * Checking.  jsonrpc_request_parse() checks one request object against
 * JSON-RPC 2.0 (section 4): "jsonrpc" is "2.0", "method" a string, "id" a
 * string, number or null, or absent for a notification, "params" an object
 * or an array, or absent.  torrentd takes named parameters only, so
 * callers that want that pass JSONRPC_NAMED_PARAMS and get
 * JSONRPC_E_PARAMS_BY_POSITION (code -32602) for an array.
 *
 * Building.  Responses, errors, notifications and requests are json-c
 * objects; jsonrpc_put_line() serialises one as a single line
 * (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) plus '\n'.
 * error.data is always an object ({} when there is nothing to say).
 */
#ifndef TD_COMMON_JSONRPC_H
#define TD_COMMON_JSONRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct json_object;
struct json_tokener;

/* JSON-RPC 2.0 error codes (section 5.1).  daemon/rpc.h has the same
 * values as RPC_PARSE_ERROR ... for the daemon's methods. */
#define JSONRPC_PARSE_ERROR -32700
#define JSONRPC_INVALID_REQUEST -32600
#define JSONRPC_METHOD_NOT_FOUND -32601
#define JSONRPC_INVALID_PARAMS -32602
#define JSONRPC_INTERNAL_ERROR -32603

/* Errors: negative, each with a message from jsonrpc_strerror() and a
 * JSON-RPC code from jsonrpc_error_code(). */
enum jsonrpc_error {
    JSONRPC_OK = 0,
    /* Reading a line (code -32700 unless noted). */
    JSONRPC_E_EMPTY = -1,           /* only whitespace on the line */
    JSONRPC_E_LINE_TOO_LONG = -2,   /* over max_line bytes (-32600) */
    JSONRPC_E_UTF8 = -3,            /* bad, overlong, surrogate, > 10FFFF */
    JSONRPC_E_CONTROL_CHAR = -4,    /* a raw byte < 0x20 where not allowed */
    JSONRPC_E_DEPTH = -5,           /* nested deeper than max_depth */
    JSONRPC_E_TOO_MANY_VALUES = -6, /* more than max_values on a line */
    JSONRPC_E_SYNTAX = -7,          /* not JSON */
    JSONRPC_E_TRUNCATED = -8,       /* the line ends inside a value */
    JSONRPC_E_TRAILING = -9,        /* more after the value on the line */
    /* Checking a request (code -32600 unless noted). */
    JSONRPC_E_NOT_OBJECT = -10,         /* a request that is not an object */
    JSONRPC_E_VERSION = -11,            /* "jsonrpc" missing or not "2.0" */
    JSONRPC_E_METHOD = -12,             /* "method" missing or not a string */
    JSONRPC_E_ID = -13,                 /* "id" neither string, number, null */
    JSONRPC_E_PARAMS = -14,             /* "params" neither object nor array */
    JSONRPC_E_PARAMS_BY_POSITION = -15, /* an array (named only) (-32602) */
    JSONRPC_E_EMPTY_BATCH = -16,        /* [] */
    JSONRPC_E_BATCH_TOO_LARGE = -17,    /* more than max_batch requests */
    /* Client side: a line that is neither response nor notification. */
    JSONRPC_E_NOT_RESPONSE = -18,
    JSONRPC_E_NOMEM = -19, /* (-32603) */
    JSONRPC_E_MIN = -20
};

struct jsonrpc_limits {
    size_t max_line;     /* bytes before the '\n' (a '\r' counts), >= 1 */
    uint32_t max_depth;  /* nesting of arrays and objects, 1..1000 */
    uint32_t max_values; /* roughly the values on a line: '[', '{' and ','
                          * outside strings, plus one */
    uint32_t max_batch;  /* requests in one batch array */
};

/* 64 MiB lines (a big .torrent in base64), depth 64, 262144 values,
 * 1024 requests per batch. */
extern const struct jsonrpc_limits jsonrpc_limits_default;

/* A static message for an error value ("unknown error" for others). */
const char *jsonrpc_strerror(int err);

/* The JSON-RPC error code to answer an error value with. */
int jsonrpc_error_code(int err);

/* True when p[0..n) is valid UTF-8 (no overlong forms, no surrogates, no
 * code point past U+10FFFF).  On false, *reterr_offset (if not NULL) is the
 * offset of the first bad sequence. */
bool jsonrpc_utf8_valid(const void *p, size_t n, size_t *reterr_offset);

/* --- Reading. --- */
struct jsonrpc_reader {
    struct jsonrpc_limits lim;
    struct json_tokener *tok; /* owned */
    struct json_object *doc;  /* owned: the line's value once complete */
    size_t line_len;          /* bytes of the current line so far */
    size_t err_offset;        /* where err was found, in the line */
    int err;                  /* first error on the current line, or 0 */
    uint32_t depth;           /* open '[' and '{' (outside strings) */
    uint32_t values;          /* values counted so far on the line */
    uint32_t utf8_cp;         /* the code point being decoded */
    uint32_t utf8_min;        /* its smallest non-overlong value */
    size_t utf8_start;        /* offset of its first byte */
    uint8_t utf8_need;        /* continuation bytes still expected */
    uint8_t num;              /* where in a number (RFC 8259 grammar) */
    uint8_t hold[3];          /* an unfinished UTF-8 sequence, not yet
                               * given to json-c */
    uint8_t hold_len;
    bool in_string;
    bool escape;   /* the byte before was a '\' in a string */
    bool nonblank; /* the line holds more than whitespace */
    bool discard;  /* skipping a too-long line up to '\n' */
    bool done;     /* the value is complete (doc, or NULL for
                    * JSON null) */
    bool tok_fed;  /* json-c has seen bytes of this line */
};

/* Start a reader with the given limits (NULL: jsonrpc_limits_default).
 * Returns 0 or JSONRPC_E_NOMEM. */
int jsonrpc_reader_init(struct jsonrpc_reader *r,
                        const struct jsonrpc_limits *lim);

/* Free what the reader holds; accepts a zeroed or released reader. */
void jsonrpc_reader_release(struct jsonrpc_reader *r);

/* Feed n bytes.  Stops at the end of the first line that finishes in
 * p[0..n) and sets *ret_used to the bytes consumed (through its '\n'), or
 * consumes everything.  Call again with the rest.  Returns:
 *   0  no line finished (*ret_used == n);
 *   1  a line finished with one JSON value: *ret_doc (the caller owns it;
 *      NULL for a JSON null);
 *  <0  a line finished with an error (enum jsonrpc_error), or passed
 *      max_line (JSONRPC_E_LINE_TOO_LONG: reported once, at once; the rest
 *      of that line is then skipped); *reterr_offset (if not NULL) is the
 *      offset in the line where the problem lies.
 * *ret_doc is written only when 1 is returned. */
int jsonrpc_reader_feed(struct jsonrpc_reader *r, const void *p, size_t n,
                        size_t *ret_used, struct json_object **ret_doc,
                        size_t *reterr_offset);

/* End of stream: finish a line that has no '\n' yet as if it had one.
 * Returns what jsonrpc_reader_feed() would, or JSONRPC_E_EMPTY when no
 * bytes of a line are pending. */
int jsonrpc_reader_finish(struct jsonrpc_reader *r,
                          struct json_object **ret_doc, size_t *reterr_offset);

/* True while bytes of an unfinished line are held (or being skipped). */
bool jsonrpc_reader_pending(const struct jsonrpc_reader *r);

/* --- Checking requests. --- */
enum jsonrpc_request_flags {
    JSONRPC_NAMED_PARAMS = 1 << 0, /* refuse params given as an array */
};

/* The parts of a request.  Everything is borrowed from the message. */
struct jsonrpc_request {
    const char *method;         /* NUL-free */
    struct json_object *params; /* object (or array); NULL when absent */
    struct json_object *id;     /* NULL for a null id, or a notification */
    bool notification;          /* no "id" member: answer nothing */
};

/* Check one request (an element of a batch, or the whole line).  Returns 0
 * and fills *req, or a negative enum jsonrpc_error.  On error, req->id and
 * req->notification are still filled in as well as they could be read, so
 * that the caller can answer: req->id is NULL (answer with id null) unless
 * a valid id was found, and req->notification is true only for a request
 * that is otherwise valid (JSONRPC_E_PARAMS_BY_POSITION), which, like any
 * notification, gets no answer. */
int jsonrpc_request_parse(struct json_object *msg, unsigned flags,
                          struct jsonrpc_request *req);

/* A line's value is a single request or a batch (an array).  Returns 0
 * for a single request (*ret_n = 1), 1 for a batch (*ret_n = its entries),
 * or JSONRPC_E_EMPTY_BATCH or JSONRPC_E_BATCH_TOO_LARGE (past
 * lim->max_batch; NULL: the defaults). */
int jsonrpc_batch_check(struct json_object *doc,
                        const struct jsonrpc_limits *lim, size_t *ret_n);

/* --- Building messages.  Each returns a new object (the caller owns it)
 * or NULL when out of memory.  Arguments marked "taken" are owned by the
 * message afterwards, or freed on failure. --- */

/* {"jsonrpc":"2.0","result":result,"id":id}; result taken (NULL: null);
 * id borrowed (a reference is taken; NULL: null). */
struct json_object *jsonrpc_response_new(struct json_object *id,
                                         struct json_object *result);

/* {"jsonrpc":"2.0","error":{"code":..,"message":..,"data":{..}},"id":id};
 * data taken: an object, or NULL for {} (anything else is wrapped as
 * {"value": data}); id borrowed. */
struct json_object *jsonrpc_error_new(struct json_object *id, int code,
                                      const char *message,
                                      struct json_object *data);

/* The error response for an enum jsonrpc_error value met while reading or
 * checking: its code, a message from jsonrpc_strerror() and the limit it
 * hit, and data {"reason": ..., "offset": offset} (offset left out when it
 * is SIZE_MAX).  id borrowed. */
struct json_object *jsonrpc_error_from(struct json_object *id, int err,
                                       const struct jsonrpc_limits *lim,
                                       size_t offset);

/* {"jsonrpc":"2.0","method":method,"params":params}; params taken (an
 * object, or NULL to leave params out). */
struct json_object *jsonrpc_notification_new(const char *method,
                                             struct json_object *params);

/* {"jsonrpc":"2.0","method":method,"params":params,"id":id}; params taken
 * (NULL to leave them out). */
struct json_object *jsonrpc_request_new(int64_t id, const char *method,
                                        struct json_object *params);

/* Append msg as one line plus '\n' to out.  Returns 0, -EMSGSIZE past the
 * buffer's cap (nothing appended) or -ENOMEM.  msg is borrowed. */
int jsonrpc_put_line(struct buf *out, struct json_object *msg);

/* --- Client side: what came back. --- */
struct jsonrpc_reply {
    bool notification; /* a notification, not a response */
    /* Response: */
    struct json_object *id;     /* NULL for id null */
    struct json_object *result; /* NULL for JSON null, or on error */
    bool is_error;
    int code;                 /* is_error: error.code */
    const char *message;      /* is_error: error.message ("" if none) */
    struct json_object *data; /* is_error: error.data, or NULL */
    /* Notification: */
    const char *method;
    struct json_object *params; /* NULL when absent */
};

/* Read one message a server sent.  Fills *ret (everything borrowed from
 * msg) and returns 0, or JSONRPC_E_NOT_RESPONSE. */
int jsonrpc_reply_parse(struct json_object *msg, struct jsonrpc_reply *ret);

/* True when reply is the response to the request made with id. */
bool jsonrpc_reply_is_for(const struct jsonrpc_reply *reply, int64_t id);

/* --- Versions. --- */

/* True when api, a control API version as daemon.version gives it
 * ("MAJOR.MINOR" or "MAJOR.MINOR.PATCH", decimal), is at least
 * major.minor.  NULL, an empty string or anything else that is not such a
 * version is false: the caller then assumes the oldest API. */
bool jsonrpc_api_at_least(const char *api, unsigned major, unsigned minor);

#endif
